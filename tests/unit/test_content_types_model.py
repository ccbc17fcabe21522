"""The stored syntaxes and content types the verifier and the emulator know, against the list the botocore
model documents for GetImageFrame's ``contentType``: a syntax the service adds or a type it renames shows up
here, not as an UNVERIFIED job in production."""

from __future__ import annotations

import re

import botocore.session
import pytest

from ahi_emulator.codec import content_type_for
from ahi_verify.syntax import JPEG2000_LOSSLESS, content_type_of, stored_syntax


def documented_content_types() -> dict[str, str]:
    """``{StoredTransferSyntaxUID: contentType}`` parsed from the model's documentation of the field."""
    model = botocore.session.get_session().get_service_model("medical-imaging")
    doc = model.operation_model("GetImageFrame").output_shape.members["contentType"].documentation
    table: dict[str, str] = {}
    for item in re.findall(r"<li>(.*?)</li>", doc, flags=re.S):
        # The model writes both "<code>contentType</code> is" and a bare "contentType is".
        content_type = re.search(r"contentType(?:</code>)? is <code>([^<]+)</code>", item)
        uids = re.findall(r"<code>(1\.2\.840\.10008\.[0-9.]+)</code>", item)
        if content_type and uids:
            table.update(dict.fromkeys(uids, content_type.group(1)))
    return table


DOCUMENTED = documented_content_types()


def test_the_model_documents_the_list_we_parse() -> None:
    # GIVEN the installed botocore model WHEN its contentType documentation is parsed
    # THEN it yields the retained, transcoded and video syntaxes (a parse that found nothing would pass below)
    assert len(DOCUMENTED) >= 20
    assert DOCUMENTED["1.2.840.10008.1.2.4.202"] == "image/jph"


@pytest.mark.parametrize(("uid", "content_type"), sorted(DOCUMENTED.items()), ids=sorted(DOCUMENTED))
def test_verifier_and_emulator_agree_with_the_model(uid: str, content_type: str) -> None:
    # GIVEN a stored syntax the model documents WHEN the verifier and the emulator look it up
    known = stored_syntax(uid)
    # THEN both know it, with the documented content type (compared as the verifier normalises headers)
    assert known is not None, f"{uid} is documented but unknown to the verifier"
    assert content_type_of(known.content_type) == content_type_of(content_type)
    assert content_type_of(content_type_for(uid)) == content_type_of(content_type)


def test_a_missing_stored_syntax_is_htj2k_as_documented() -> None:
    # GIVEN metadata without StoredTransferSyntaxUID THEN both sides serve image/jph, as the model says
    known = stored_syntax(None)
    assert known is not None
    assert known.content_type == "image/jph" == content_type_for(None)


def test_jpeg2000_lossless_is_not_in_the_model_list_and_both_sides_expect_j2c() -> None:
    # GIVEN the syntax a JPEG 2000 Lossless data store stores, which the model's list leaves out
    # THEN verifier and emulator agree on classic JPEG 2000's type; if the model ever lists it, the
    # parametrized test above takes over
    known = stored_syntax(JPEG2000_LOSSLESS)
    assert known is not None
    assert JPEG2000_LOSSLESS not in DOCUMENTED or DOCUMENTED[JPEG2000_LOSSLESS] == known.content_type
    assert known.content_type == content_type_for(JPEG2000_LOSSLESS) == "image/j2c"
