"""Parsing GetImageSetMetadata into frames: real service documents, reduced documents, broken input."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from ahi_verify.metadata import MetadataError, decode_metadata_blob, parse_image_set_metadata, resolve_omitted_syntax
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL, JPEG2000_LOSSLESS


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_usdoppler_lists_22_frames_with_one_14_frame_instance(shared_fixtures: Path) -> None:
    # GIVEN real GetImageSetMetadata output of an ultrasound image set
    doc = _load(shared_fixtures / "usdoppler-metadata.json")
    # WHEN it is parsed
    listed = parse_image_set_metadata(doc)
    # THEN every frame is listed once, numbered from 1 per instance, with the full-resolution checksum
    assert len(listed.frames) == 22
    per_instance: dict[str, list[int]] = {}
    for frame in listed.frames:
        per_instance.setdefault(frame.sop_instance_uid, []).append(frame.frame_number)
    assert sorted(len(v) for v in per_instance.values()) == [1] * 8 + [14]
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in per_instance.values())
    assert len({f.image_frame_id for f in listed.frames}) == 22
    assert all(f.stored_transfer_syntax_uid == HTJ2K_LOSSLESS_RPCL for f in listed.frames)
    by_id = {f.image_frame_id: f for f in listed.frames}
    example = by_id["63d59c5dd8c8a68821e50031c8e82c3b"]
    assert example.full_resolution is not None
    assert (example.full_resolution.width, example.full_resolution.height) == (320, 240)
    assert example.full_resolution.checksum == 3014344982
    assert max(f.full_resolution.checksum for f in listed.frames if f.full_resolution) >= 2**31
    assert [f.index for f in listed.frames] == list(range(22))


def test_full_resolution_is_the_widest_entry_whatever_the_order(shared_fixtures: Path) -> None:
    # GIVEN a document whose checksum lists are reversed (largest first)
    doc = _load(shared_fixtures / "usdoppler-metadata.json")
    reference = {f.image_frame_id: f.full_resolution for f in parse_image_set_metadata(doc).frames}
    for series in doc["Study"]["Series"].values():
        for instance in series["Instances"].values():
            for frame in instance["ImageFrames"]:
                frame["PixelDataChecksumFromBaseToFullResolution"].reverse()
    # WHEN parsed THEN the same full-resolution entries are chosen
    assert {f.image_frame_id: f.full_resolution for f in parse_image_set_metadata(doc).frames} == reference


def test_reduced_document_lists_every_frame_without_checksums(shared_fixtures: Path) -> None:
    # GIVEN the reduced CT document: 2,464 frames with only ID and FrameSizeInBytes
    doc = _load(shared_fixtures / "ct2465-reduced-metadata.json")
    # WHEN parsed THEN all frames are listed, none with a checksum or a problem
    frames = parse_image_set_metadata(doc).frames
    assert len(frames) == 2464
    assert all(f.full_resolution is None and f.problem is None for f in frames)
    assert {f.frame_size_in_bytes for f in frames} == {524288}


def test_gzip_and_plain_blobs_decode_to_the_same_document(shared_fixtures: Path) -> None:
    raw = (shared_fixtures / "usdoppler-metadata.json").read_bytes()
    assert decode_metadata_blob(gzip.compress(raw)) == decode_metadata_blob(raw) == json.loads(raw)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(gzip.compress(b'{"Study": {}}')[:-9], "not valid gzip", id="truncated-gzip"),
        pytest.param(b"\x1f\x8b" + b"\x00" * 30, "not valid gzip", id="corrupt-gzip"),
        pytest.param(gzip.compress(b'{"Study": '), "not valid JSON", id="invalid-json"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "JSON list, not an object", id="json-array"),
    ],
)
def test_unreadable_metadata_is_a_clear_error(blob: bytes, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        decode_metadata_blob(blob)


def test_document_without_series_is_an_error_not_zero_frames() -> None:
    with pytest.raises(MetadataError, match=r"no Study\.Series"):
        parse_image_set_metadata({"DatastoreID": "x", "Study": {"DICOM": {}}})


def _one_frame_doc(frame: Any) -> dict[str, Any]:
    return {"Study": {"Series": {"1.2.3": {"Instances": {"1.2.3.4": {"ImageFrames": [frame]}}}}}}


GOOD_FRAME = {
    "ID": "a" * 32,
    "PixelDataChecksumFromBaseToFullResolution": [
        {"Width": 8, "Height": 8, "Checksum": 1},
        {"Width": 16, "Height": 16, "Checksum": 4294967295},
    ],
}


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        pytest.param(lambda f: f.pop("ID"), "ID is missing", id="no-id"),
        pytest.param(lambda f: f.update(ID=7), "ID is missing", id="id-not-string"),
        pytest.param(
            lambda f: f["PixelDataChecksumFromBaseToFullResolution"][1].update(Checksum="4294967295"),
            "must be integers",
            id="checksum-as-string",
        ),
        pytest.param(
            lambda f: f["PixelDataChecksumFromBaseToFullResolution"][1].update(Checksum=2**32),
            "unsigned 32-bit",
            id="checksum-too-large",
        ),
        pytest.param(
            lambda f: f["PixelDataChecksumFromBaseToFullResolution"][0].update(Checksum=-1),
            "unsigned 32-bit",
            id="checksum-negative",
        ),
        pytest.param(
            lambda f: f["PixelDataChecksumFromBaseToFullResolution"][0].pop("Width"),
            "must be integers",
            id="no-width",
        ),
        pytest.param(
            lambda f: f.update(PixelDataChecksumFromBaseToFullResolution={"Width": 1}), "not a list", id="not-a-list"
        ),
    ],
)
def test_malformed_frame_entry_is_listed_with_its_problem(mutate: Any, problem: str) -> None:
    # GIVEN one frame entry broken in one way
    frame = copy.deepcopy(GOOD_FRAME)
    mutate(frame)
    # WHEN parsed THEN the frame is still listed, carrying a problem that names where it is
    (listed,) = parse_image_set_metadata(_one_frame_doc(frame)).frames
    assert listed.problem is not None
    assert problem in listed.problem
    assert "Instances[1.2.3.4].ImageFrames[0]" in listed.problem


def test_non_object_frame_entry_is_still_listed() -> None:
    (listed,) = parse_image_set_metadata(_one_frame_doc("oops")).frames
    assert listed.problem is not None
    assert "is not an object" in listed.problem


def test_unsigned_checksum_above_2_31_is_kept_exact() -> None:
    (listed,) = parse_image_set_metadata(_one_frame_doc(GOOD_FRAME)).frames
    assert listed.problem is None
    assert listed.full_resolution is not None
    assert listed.full_resolution.checksum == 4294967295


def test_null_stored_syntax_means_htj2k() -> None:
    doc = _one_frame_doc(GOOD_FRAME)
    doc["Study"]["Series"]["1.2.3"]["Instances"]["1.2.3.4"]["StoredTransferSyntaxUID"] = None
    (listed,) = parse_image_set_metadata(doc).frames
    assert listed.stored_transfer_syntax_uid == HTJ2K_LOSSLESS_RPCL


@pytest.mark.parametrize(
    ("dicom", "flagged"),
    [
        pytest.param({"BitsAllocated": 32}, True, id="float-32-no-bits-stored"),
        pytest.param({"BitsAllocated": 64}, True, id="double-float-64"),
        pytest.param({"BitsAllocated": 32, "BitsStored": 32}, False, id="integer-32"),
        pytest.param({"BitsAllocated": 16}, False, id="integer-16"),
        pytest.param({}, False, id="no-dicom-attributes"),
    ],
)
def test_float_pixel_data_is_flagged_from_the_instance_dicom(dicom: dict[str, Any], flagged: bool) -> None:
    # GIVEN an instance whose DICOM has (or lacks) the marks of Float / Double Float Pixel Data
    doc = _one_frame_doc(GOOD_FRAME)
    doc["Study"]["Series"]["1.2.3"]["Instances"]["1.2.3.4"]["DICOM"] = dicom
    # WHEN parsed THEN its frame carries the flag exactly when DICOM says float
    (listed,) = parse_image_set_metadata(doc).frames
    assert listed.float_pixel_data is flagged

    assert not listed.syntax_stated  # HTJ2K until the data store's format resolves it


def test_omitted_syntax_is_kept_as_a_flag_and_resolved_only_where_omitted() -> None:
    # GIVEN two instances, one stating .202 and one omitting its syntax
    doc = _one_frame_doc(GOOD_FRAME)
    instances = doc["Study"]["Series"]["1.2.3"]["Instances"]
    instances["1.2.3.4"]["StoredTransferSyntaxUID"] = HTJ2K_LOSSLESS_RPCL
    instances["1.2.3.5"] = {"ImageFrames": [GOOD_FRAME]}
    listed = parse_image_set_metadata(doc)
    assert [f.syntax_stated for f in listed.frames] == [True, False]
    # WHEN resolved to the syntax of a JPEG 2000 Lossless data store
    resolved = resolve_omitted_syntax(listed, JPEG2000_LOSSLESS, note="assumed")
    # THEN only the omitting instance's frame changes, and it carries the note
    stated, omitted = resolved.frames
    assert (stated.stored_transfer_syntax_uid, stated.syntax_note) == (HTJ2K_LOSSLESS_RPCL, None)
    assert (omitted.stored_transfer_syntax_uid, omitted.syntax_note) == (JPEG2000_LOSSLESS, "assumed")
