"""`ahi-verify job --source` on what the source check used to read wrongly: compressed binary segmentations,
BitsAllocated wider than BitsStored needs, and float pixel data (emulator import -> moto S3 -> CLI)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pydicom
import pytest

from ahi_emulator import Emulator
from ahi_verify.cli import main
from tests.emulator.p10_factory import (
    DEFLATED_LE,
    EXPLICIT_LE,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    RLE_LOSSLESS,
    float_p10,
    make_p10,
    segmentation_bits,
    segmentation_p10,
)

pytestmark = pytest.mark.integration


def import_and_verify(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str], tag: str, files: dict[str, bytes]
) -> tuple[int, dict[str, Any], str, str]:
    """Import `files` into a new data store, then run `ahi-verify job --source`; return code, report, buckets."""
    datastore = emulator.create_datastore()
    source_bucket, output_bucket = f"in-{tag}", f"out-{tag}"
    s3.create_bucket(Bucket=source_bucket)
    s3.create_bucket(Bucket=output_bucket)
    for name, body in files.items():
        s3.put_object(Bucket=source_bucket, Key=f"dicom/{name}", Body=body)
    job = emulator.start_import_job(datastore, f"s3://{source_bucket}/dicom/", f"s3://{output_bucket}/results/")
    emulator.wait_for_job(datastore, job)
    folder = f"s3://{output_bucket}/results/{datastore}-DicomImport-{job}/"
    code, doc = verify(capsys, folder)
    return code, doc, source_bucket, folder


def verify(capsys: pytest.CaptureFixture[str], folder: str) -> tuple[int, dict[str, Any]]:
    code = main(["job", folder, "--source", "--format", "json"])
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def frames_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for image_set in doc["imageSets"] for f in image_set["frames"]]


SEGMENTATIONS = {
    "seg-native.dcm": (EXPLICIT_LE, "packed"),
    "seg-deflated.dcm": (DEFLATED_LE, "packed"),
    "seg-rle-bits.dcm": (RLE_LOSSLESS, "packed"),
    "seg-rle-bytes.dcm": (RLE_LOSSLESS, "bytes"),
    "seg-j2k.dcm": (J2K_LOSSLESS, "packed"),
    "seg-htj2k.dcm": (HTJ2K_LOSSLESS, "packed"),
}


@pytest.mark.usefixtures("aws_env")
def test_compressed_segmentations_are_consistent_with_their_sources(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 3-frame 37x41 binary segmentations (frames start mid-byte) native, deflated, RLE, J2K and HTJ2K
    bits = segmentation_bits()
    files = {
        name: segmentation_p10(bits, syntax, rle_layout=layout) for name, (syntax, layout) in SEGMENTATIONS.items()
    }
    # WHEN imported by the emulator and verified with the three-way check
    code, doc, _, _ = import_and_verify(emulator, s3, capsys, "segs", files)
    # THEN every frame is retained as .1.2.1, matches its checksum and agrees with its source: none is a MISMATCH
    frames = frames_of(doc)
    assert len(frames) == 3 * len(SEGMENTATIONS)
    assert {f["status"] for f in frames} == {"MATCH"}
    assert {f["source"]["relation"] for f in frames} == {"consistent"}
    assert all(not s["sourceErrors"] for s in doc["imageSets"])
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_replaced_segmentation_source_of_the_same_shape_is_still_a_mismatch(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an RLE segmentation imported cleanly
    data = segmentation_p10(segmentation_bits(seed=1), RLE_LOSSLESS)
    code, doc, bucket, folder = import_and_verify(emulator, s3, capsys, "segswap", {"seg.dcm": data})
    assert (code, doc["verdict"]) == (0, "CLEAN")
    # WHEN its source is replaced by other pixels of the same shape and SOP instance, and verified again
    other = pydicom.dcmread(io.BytesIO(segmentation_p10(segmentation_bits(seed=2), RLE_LOSSLESS)))
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    buffer = io.BytesIO()
    other.save_as(buffer)
    s3.put_object(Bucket=bucket, Key="dicom/seg.dcm", Body=buffer.getvalue())
    code, doc = verify(capsys, folder)
    # THEN each frame is a MISMATCH against its source: decoding first did not blind the comparison
    frames = frames_of(doc)
    assert {(f["status"], f["reason"], f["source"]["relation"]) for f in frames} == {
        ("MISMATCH", "differs-from-source", "import-changed-pixels")
    }
    assert code == 1


@pytest.mark.usefixtures("aws_env")
def test_bits_allocated_wider_than_bits_stored_matches_and_is_consistent(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN BA16/BS8 and BA32/BS16 unsigned and BA16/BS12 signed files, with garbage above BitsStored
    rng = np.random.default_rng(16)
    files = {
        "ba16bs8.dcm": make_p10(
            EXPLICIT_LE,
            bits_allocated=16,
            bits_stored=8,
            native=(rng.integers(0, 256, 80, dtype=np.uint16) | np.uint16(0x3300)).astype("<u2").tobytes(),
        ),
        "ba32bs16.dcm": make_p10(
            EXPLICIT_LE,
            bits_allocated=32,
            bits_stored=16,
            native=(rng.integers(0, 65536, 80, dtype=np.uint32) | np.uint32(0x00AB0000)).astype("<u4").tobytes(),
        ),
        "ba16bs12s.dcm": make_p10(
            EXPLICIT_LE,
            bits_allocated=16,
            bits_stored=12,
            pixel_representation=1,
            native=rng.integers(0, 4096, 80, dtype=np.uint16).astype("<u2").tobytes(),
        ),
    }
    # WHEN imported and verified with the three-way check
    code, doc, _, _ = import_and_verify(emulator, s3, capsys, "containers", files)
    # THEN they were imported (no 45312 blob), every frame matches and agrees with its source
    frames = frames_of(doc)
    assert len(frames) == 3
    assert {(f["status"], f["rule"], f["source"]["relation"]) for f in frames} == {
        ("MATCH", "decoded-htj2k", "consistent")
    }
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_float_pixel_data_is_unverified_with_its_reason(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a Float Pixel Data file and a Double Float Pixel Data file
    values = np.linspace(-3.0, 3.0, 80).reshape(8, 10)
    files = {"float.dcm": float_p10(values), "double.dcm": float_p10(values, double=True)}
    # WHEN imported (as blobs with warning 45312) and verified with the three-way check
    code, doc, _, _ = import_and_verify(emulator, s3, capsys, "floats", files)
    # THEN each frame is ERROR float-pixel-data, never a MATCH or MISMATCH; the source check compares nothing
    # (the import's 45312 warning says the frames are a blob: import-warned, and no source frame is "lost");
    # the job is UNVERIFIED
    frames = frames_of(doc)
    assert len(frames) == 2
    assert {(f["status"], f["reason"], f["source"]["relation"]) for f in frames} == {
        ("ERROR", "float-pixel-data", "import-warned")
    }
    assert doc["imageSets"]
    assert all(s["orphanSourceFrames"] == [] for s in doc["imageSets"])
    assert (code, doc["verdict"]) == (3, "UNVERIFIED")
