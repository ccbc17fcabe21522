"""Metadata body faults: GetImageSetMetadata answers 200 with a damaged document, and the verifier's decoder
rejects each one with a MetadataError (never an empty frame list that would look like success)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest

from ahi_emulator import Emulator, Fault, ImageSetInfo, InstanceSpec
from ahi_verify.metadata import MetadataError, decode_metadata_blob, parse_image_set_metadata

pytestmark = pytest.mark.integration

FRAME = np.arange(64, dtype=np.uint16).reshape(8, 8)


@pytest.fixture
def info(emulator: Emulator, datastore_id: str) -> ImageSetInfo:
    return emulator.add_image_set(datastore_id, [InstanceSpec(frames=[FRAME])])


def get_metadata(client: Any, info: ImageSetInfo) -> bytes:
    response = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id)
    data: bytes = response["imageSetMetadataBlob"].read()
    return data


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        pytest.param("corrupt_gzip", "not valid gzip", id="corrupt-gzip"),
        pytest.param("invalid_json", "not valid JSON", id="invalid-json"),
        pytest.param("missing_fields", "no Study.Series", id="missing-fields"),
    ],
)
def test_metadata_body_fault_serves_a_damaged_document_once(
    client: Any, emulator: Emulator, info: ImageSetInfo, kind: str, problem: str
) -> None:
    """GIVEN a one-shot metadata body fault WHEN the metadata is fetched twice
    THEN the first answer is 200 but undecodable (for the stated reason), the second is intact."""
    emulator.add_fault(Fault(kind, operation="GetImageSetMetadata", count=1))  # type: ignore[arg-type]

    damaged = get_metadata(client, info)
    intact = get_metadata(client, info)

    assert damaged[:2] == b"\x1f\x8b"  # still announced and framed as gzip
    with pytest.raises(MetadataError, match=problem):
        parse_image_set_metadata(decode_metadata_blob(damaged))
    assert json.loads(gzip.decompress(intact))["ImageSetID"] == info.image_set_id
    stats = emulator.stats()
    assert stats["faults_fired_by_kind"][kind] == 1
    assert stats["responses"]["200"] == 2


def test_metadata_body_fault_leaves_frames_alone(client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN a metadata body fault on any operation WHEN a frame is fetched THEN the frame is served intact."""
    emulator.add_fault(Fault("invalid_json"))
    response = client.get_image_frame(
        datastoreId=info.datastore_id,
        imageSetId=info.image_set_id,
        imageFrameInformation={"imageFrameId": info.frame_ids[0]},
    )
    assert len(response["imageFrameBlob"].read()) > 0


def test_metadata_body_fault_kinds_are_validated() -> None:
    assert Fault.from_json({"kind": "missing_fields", "operation": "GetImageSetMetadata"}).kind == "missing_fields"
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_json({"kind": "half_json"})


def test_omit_stored_syntax_serves_the_document_without_the_syntax(
    client: Any, emulator: Emulator, datastore_id: str
) -> None:
    """GIVEN an instance stored as .90 and an omit_stored_syntax fault WHEN the metadata is read twice THEN the
    first document lists the frames with no StoredTransferSyntaxUID (the verifier then asks the data store), the
    second is intact."""
    spec = InstanceSpec(frames=[FRAME], stored_transfer_syntax_uid="1.2.840.10008.1.2.4.90")
    info = emulator.add_image_set(datastore_id, [spec])
    emulator.add_fault(Fault("omit_stored_syntax", operation="GetImageSetMetadata", count=1))

    omitted = parse_image_set_metadata(decode_metadata_blob(get_metadata(client, info)))
    intact = parse_image_set_metadata(decode_metadata_blob(get_metadata(client, info)))

    assert [(f.image_frame_id, f.syntax_stated) for f in omitted.frames] == [(info.frame_ids[0], False)]
    assert [(f.stored_transfer_syntax_uid, f.syntax_stated) for f in intact.frames] == [
        ("1.2.840.10008.1.2.4.90", True)
    ]
    assert omitted.frames[0].full_resolution == intact.frames[0].full_resolution
