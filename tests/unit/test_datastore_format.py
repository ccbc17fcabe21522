"""The data store's lossless storage format: asked once, only for instances that omit their stored syntax, and
a failure to read it is said in every affected frame's detail."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import imagecodecs
import numpy as np
import pytest

from ahi_verify.healthimaging import HealthImagingSource
from ahi_verify.image_set import VerifyOptions, load_image_set_frames, verify_image_set
from ahi_verify.outcomes import Reason, Status
from ahi_verify.ports import DatastoreError
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL, JPEG2000_LOSSLESS
from tests.fakes.frames import FakeDatastoreClient, FakeSource, client_error, make_frames, metadata_for

DS, ISET = "d" * 32, "e" * 32
OPTIONS = VerifyOptions(fetch_concurrency=2, decode_workers=1)


def j2k_frames(count: int) -> dict[str, tuple[bytes, int]]:
    """``count`` classic JPEG 2000 lossless frames (what a JPEG 2000 Lossless data store serves) and their IFRC."""
    frames = {}
    for i in range(count):
        pixels = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 7 + i).astype(np.uint16)
        blob = bytes(imagecodecs.jpeg2k_encode(pixels, level=0, codecformat="j2k"))
        frames[f"{i:032x}"] = (blob, zlib.crc32(pixels.tobytes()))
    return frames


def with_syntax(doc: dict[str, Any], syntax: str) -> dict[str, Any]:
    doc["Study"]["Series"]["1.2"]["Instances"]["1.2.3"]["StoredTransferSyntaxUID"] = syntax
    return doc


def test_omitted_syntax_in_a_jpeg_2000_store_resolves_to_90_and_matches() -> None:
    # GIVEN a JPEG 2000 Lossless data store whose metadata omits StoredTransferSyntaxUID
    source = FakeSource(j2k_frames(3))
    source.content_type, source.storage_format = "image/j2c", "JPEG_2000_LOSSLESS"
    # WHEN the image set is listed and verified
    listed = load_image_set_frames(source, DS, ISET)
    result = verify_image_set(source, DS, ISET, options=OPTIONS)
    # THEN the frames are .90, decoded by OpenJPEG, and match, with nothing assumed
    assert {f.stored_transfer_syntax_uid for f in listed.frames} == {JPEG2000_LOSSLESS}
    assert result.counts.match == 3
    assert {(r.rule.value if r.rule else None, r.detail) for r in result.results} == {("decoded-j2k", None)}


def test_omitted_syntax_in_an_htj2k_store_resolves_to_202_and_matches() -> None:
    # GIVEN an HTJ2K data store whose metadata omits the syntax
    source = FakeSource(make_frames(3))
    # WHEN verified THEN .202, OpenJPH, MATCH; the format was asked once
    listed = load_image_set_frames(source, DS, ISET)
    assert {f.stored_transfer_syntax_uid for f in listed.frames} == {HTJ2K_LOSSLESS_RPCL}
    result = verify_image_set(source, DS, ISET, options=OPTIONS)
    assert result.counts.match == 3
    assert {r.rule.value if r.rule else None for r in result.results} == {"decoded-htj2k"}
    assert source.format_lookups == [DS, DS]  # one per listing here: the fake remembers nothing


def test_a_stated_syntax_costs_no_format_lookup() -> None:
    # GIVEN metadata that states .202 for its instance
    frames = make_frames(2)
    source = FakeSource(frames, metadata=with_syntax(metadata_for(frames), HTJ2K_LOSSLESS_RPCL))
    # WHEN verified THEN the data store is never asked
    assert verify_image_set(source, DS, ISET, options=OPTIONS).all_match
    assert source.format_lookups == []


def test_access_denied_falls_back_to_htj2k_and_says_so_in_every_detail() -> None:
    # GIVEN an HTJ2K store whose GetDatastore is denied (a real botocore ClientError)
    source = FakeSource(make_frames(2))
    source.datastore_failure = client_error("AccessDeniedException", "GetDatastore", status=403)
    # WHEN verified
    result = verify_image_set(source, DS, ISET, options=OPTIONS)
    # THEN the frames still match as .202, and each result says the syntax was assumed and why
    assert result.counts.match == 2
    for r in result.results:
        assert r.detail is not None
        assert "stored syntax assumed 1.2.840.10008.1.2.4.202" in r.detail
        assert "AccessDeniedException" in r.detail


def test_a_fallback_in_a_jpeg_2000_store_is_an_error_never_a_match() -> None:
    # GIVEN a JPEG 2000 Lossless store whose format cannot be read: the frames are assumed HTJ2K
    source = FakeSource(j2k_frames(2))
    source.content_type = "image/j2c"
    source.datastore_failure = client_error("ThrottlingException", "GetDatastore", status=400, retries=9)
    # WHEN verified
    result = verify_image_set(source, DS, ISET, options=OPTIONS)
    # THEN no frame matches through OpenJPEG: each disagrees with the assumed format, and says it was assumed
    assert {(r.status, r.reason) for r in result.results} == {(Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES)}
    assert all(r.detail and "ThrottlingException" in r.detail for r in result.results)


def test_an_unknown_format_falls_back_with_a_note() -> None:
    source = FakeSource(make_frames(1))
    source.storage_format = "SOMETHING_NEW"
    (frame,) = load_image_set_frames(source, DS, ISET).frames
    assert frame.stored_transfer_syntax_uid == HTJ2K_LOSSLESS_RPCL
    assert frame.syntax_note is not None
    assert "'SOMETHING_NEW'" in frame.syntax_note


class _Metadata:
    """GetImageSetMetadata of many image sets, each one frame without a stated syntax (the rest of a client)."""

    def __init__(self, datastore: FakeDatastoreClient) -> None:
        self.datastore = datastore
        self.frames = make_frames(1)

    def get_datastore(self, datastoreId: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter name
        return self.datastore.get_datastore(datastoreId=datastoreId)

    def get_image_set_metadata(self, datastoreId: str, imageSetId: str) -> dict[str, Any]:  # noqa: N803
        class Body:
            @staticmethod
            def read() -> bytes:
                return gzip.compress(json.dumps(metadata_for(self.frames)).encode())

        return {"imageSetMetadataBlob": Body()}


def test_one_get_datastore_for_many_image_sets() -> None:
    # GIVEN the HealthImaging adapter over a client of a JPEG 2000 Lossless data store
    datastore = FakeDatastoreClient({DS: "JPEG_2000_LOSSLESS"})
    source = HealthImagingSource(_Metadata(datastore))
    # WHEN 25 image sets are listed, each omitting the syntax
    listed = [load_image_set_frames(source, DS, f"{i:032x}") for i in range(25)]
    syntaxes = {f.stored_transfer_syntax_uid for image_set in listed for f in image_set.frames}
    # THEN every frame is .90, and GetDatastore was called once
    assert syntaxes == {JPEG2000_LOSSLESS}
    assert datastore.calls == [DS]


def test_access_denied_is_remembered_and_throttling_is_asked_again() -> None:
    # GIVEN GetDatastore denied
    denied = FakeDatastoreClient(failure=client_error("AccessDeniedException", "GetDatastore", status=403))
    source = HealthImagingSource(denied)
    # WHEN asked three times THEN each time it raises a lasting error, and the service was asked once
    for _ in range(3):
        with pytest.raises(DatastoreError, match="AccessDeniedException") as raised:
            source.lossless_storage_format(DS)
        assert raised.value.lasting
    assert denied.calls == [DS]
    # GIVEN throttling after retries, which then passes
    throttled = FakeDatastoreClient(
        {DS: "HTJ2K"}, failure=client_error("ThrottlingException", "GetDatastore", retries=9)
    )
    source = HealthImagingSource(throttled)
    with pytest.raises(DatastoreError, match="after 9 retries") as raised:
        source.lossless_storage_format(DS)
    assert not raised.value.lasting
    throttled.failure = None
    # WHEN asked again THEN the service is asked again, once, and its answer kept
    assert [source.lossless_storage_format(DS) for _ in range(3)] == ["HTJ2K"] * 3
    assert throttled.calls == [DS, DS]


def test_a_store_that_lists_no_format_is_a_lasting_failure() -> None:
    client = FakeDatastoreClient({})
    source = HealthImagingSource(client)
    for _ in range(2):
        with pytest.raises(DatastoreError, match="lists no losslessStorageFormat"):
            source.lossless_storage_format(DS)
    assert client.calls == [DS]
