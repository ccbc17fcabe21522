"""The three-way check of lossy sources, through the emulator's import and ``ahi-verify job --source``.

Issue 12, part 2: a lossy source (JPEG Extended ``.51``) is decoded by the import before it is transcoded, so
what is stored depends on the import's decoder. Real decoders differ from pydicom's plugin by 1 on some
samples; that must not be a MISMATCH, while a different image, or any difference from a lossless source, must.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from ahi_emulator import Emulator, LossyJpegDecoding
from ahi_verify.cli import main

pytestmark = pytest.mark.integration

JPEG_EXTENDED = "JPGExtended.dcm"  # real 12-bit JPEG Extended greyscale, bundled with pydicom


def import_one(emulator: Emulator, s3: Any, tag: str, name: str, **kw: Any) -> str:
    """Import one pydicom test file; return the job's output folder."""
    datastore = emulator.create_datastore()
    s3.create_bucket(Bucket=f"in-{tag}")
    s3.create_bucket(Bucket=f"out-{tag}")
    s3.put_object(Bucket=f"in-{tag}", Key="dicom/one.dcm", Body=Path(get_testdata_file(name)).read_bytes())
    job = emulator.start_import_job(datastore, f"s3://in-{tag}/dicom/", f"s3://out-{tag}/results/", **kw)
    emulator.wait_for_job(datastore, job)
    return f"s3://out-{tag}/results/{datastore}-DicomImport-{job}/"


def verify(capsys: pytest.CaptureFixture[str], folder: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``ahi-verify job <folder> --source``: the exit code, the report and its one frame."""
    code = main(["job", folder, "--source", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    (frame,) = [f for image_set in doc["imageSets"] for f in image_set["frames"]]
    return code, doc, frame


def replace_pixels(name: str, change: Any) -> bytes:
    """The test file with ``change(dataset)`` applied (same SOP instance, other pixels)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    change(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.usefixtures("aws_env")
def test_an_import_decoding_one_off_is_decoder_dependent_and_clean(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a JPEG Extended file imported by a decoder that rounds some samples 1 away from every decoder we have
    folder = import_one(emulator, s3, "perturb1", JPEG_EXTENDED, lossy_jpeg_decoding=LossyJpegDecoding(perturb=1))
    # WHEN the job is verified with the three-way check
    code, doc, frame = verify(capsys, folder)
    # THEN the frame matched, its source differs only within the tolerance, and the job is CLEAN (exit 0)
    assert frame["status"] == "MATCH"
    assert frame["source"]["relation"] == "lossy-decoder-differs"
    assert frame["source"]["maxDifference"] == 1
    assert frame["source"]["differingSamples"] > 0
    assert frame["source"]["decoder"] == "pydicom-pylibjpeg"
    assert doc["summary"]["lossyDecoderDiffers"] == 1
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_an_import_decoding_like_libjpeg_turbo_is_consistent(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a JPEG Extended file imported by libjpeg-turbo, which rounds otherwise than pydicom's plugin
    decoding = LossyJpegDecoding(decoder="libjpeg-turbo")
    folder = import_one(emulator, s3, "turbo", JPEG_EXTENDED, lossy_jpeg_decoding=decoding)
    # WHEN it is verified
    code, doc, frame = verify(capsys, folder)
    # THEN libjpeg-turbo reproduces the stored checksum exactly, and the report names it
    assert frame["source"]["relation"] == "consistent"
    assert frame["source"]["decoder"] == "libjpeg-turbo"
    assert doc["summary"]["lossyDecoderDiffers"] == 0
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_a_different_lossy_image_of_the_same_shape_is_a_mismatch(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a JPEG Extended file imported as it is, whose source is then replaced by another image (the same
    # one upside down, JPEG Extended 12-bit, same SOP instance and shape)
    folder = import_one(emulator, s3, "other", JPEG_EXTENDED)

    def upside_down(ds: pydicom.Dataset) -> None:
        flipped = np.ascontiguousarray(ds.pixel_array[::-1]).astype(np.uint16)
        ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(flipped, level=90, bitspersample=12)])

    s3.put_object(Bucket="in-other", Key="dicom/one.dcm", Body=replace_pixels(JPEG_EXTENDED, upside_down))
    # WHEN it is verified
    code, doc, frame = verify(capsys, folder)
    # THEN the import changed the pixels beyond any decoder's rounding: MISMATCH (exit 1)
    assert frame["status"] == "MISMATCH"
    assert frame["source"]["relation"] == "import-changed-pixels"
    assert frame["source"]["maxDifference"] > 1
    assert (code, doc["verdict"]) == (1, "MISMATCH")


@pytest.mark.usefixtures("aws_env")
def test_a_lossless_source_one_off_is_a_mismatch(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a native (lossless) file imported, whose source then differs by 1 in one sample
    folder = import_one(emulator, s3, "lossless", "CT_small.dcm")

    def one_off(ds: pydicom.Dataset) -> None:
        pixels = ds.pixel_array.copy()
        pixels[10, 10] += 1
        ds.PixelData = pixels.tobytes()

    s3.put_object(Bucket="in-lossless", Key="dicom/one.dcm", Body=replace_pixels("CT_small.dcm", one_off))
    # WHEN it is verified
    code, doc, frame = verify(capsys, folder)
    # THEN no decoder tolerance applies to lossless data: MISMATCH (exit 1)
    assert frame["source"]["relation"] == "import-changed-pixels"
    assert "maxDifference" not in frame["source"]
    assert (code, doc["verdict"]) == (1, "MISMATCH")
