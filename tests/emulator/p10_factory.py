"""Test-side DICOM helpers: synthetic P10 files, pydicom's bundled test files, and an independent normaliser.

``expected_frames`` restates the emulator's pixel normalisation rules (``ahi_emulator.p10``) with different
arithmetic (int64 masking instead of in-container shifts), so a test comparing the two is not circular.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
TRANSCODED = {
    "1.2.840.10008.1.2",
    EXPLICIT_LE,
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
}
RETAINED = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}


def bundled(name: str) -> Path:
    """Path of a file bundled with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), f"{name} is not bundled with this pydicom"
    return Path(path)


def make_p10(
    syntax: str,
    *,
    rows: int = 8,
    cols: int = 10,
    bits_allocated: int = 16,
    bits_stored: int | None = None,
    pixel_representation: int = 0,
    samples: int = 1,
    photometric: str | None = None,
    frames: list[bytes] | None = None,
    native: bytes | None = None,
    number_of_frames: int | None = None,
    sop_class: str = SECONDARY_CAPTURE,
    drop: tuple[str, ...] = (),
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> bytes:
    """Build a P10 file: encapsulated ``frames`` or a ``native`` PixelData value (or neither)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYN-1"
    ds.Modality = "OT"
    if frames is not None or native is not None:
        stored = bits_stored if bits_stored is not None else bits_allocated
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, stored, stored - 1
        ds.PixelRepresentation = pixel_representation
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric or ("RGB" if samples == 3 else "MONOCHROME2")
        if samples > 1:
            ds.PlanarConfiguration = 0
        if number_of_frames is not None or (frames is not None and len(frames) > 1):
            ds.NumberOfFrames = number_of_frames or len(frames or [])
        if frames is not None:
            ds.PixelData = encapsulate(frames)
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = native
            ds["PixelData"].VR = "OB" if bits_allocated <= 8 else "OW"
    for keyword in drop:
        delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read(data: bytes | Path) -> Dataset:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return pydicom.dcmread(source)


def expected_frames(ds: Dataset) -> list[np.ndarray]:
    """The normalised frames, restated: low BitsStored bits, unsigned or two's complement, container dtype."""
    bits_allocated, bits_stored = int(ds.BitsAllocated), int(ds.BitsStored)
    signed = int(ds.PixelRepresentation) == 1
    dtype = np.dtype(f"{'<i' if signed else '<u'}{bits_allocated // 8}")
    out = []
    for arr in iter_pixels(ds, raw=True):
        values = np.asarray(arr).astype(np.int64) & ((1 << bits_stored) - 1)
        if signed:
            values = np.where(values >= 1 << (bits_stored - 1), values - (1 << bits_stored), values)
        out.append(values.astype(dtype))
    return out


def crc(arr: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def encapsulated_frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def packed_segmentation_frames(ds: Dataset) -> list[bytes]:
    """Each frame's bits packed LSB-first from a byte boundary, from the *native* packed PixelData."""
    pixels = int(ds.Rows) * int(ds.Columns)
    count = int(ds.get("NumberOfFrames") or 1)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    return [np.packbits(bits[k * pixels : (k + 1) * pixels], bitorder="little").tobytes() for k in range(count)]


def instances_by_sop(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every instance of a metadata document, keyed by SOPInstanceUID."""
    return {
        sop: instance for series in doc["Study"]["Series"].values() for sop, instance in series["Instances"].items()
    }


RLE_LOSSLESS = "1.2.840.10008.1.2.5"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"


def segmentation_bits(frames: int = 3, rows: int = 37, cols: int = 41, seed: int = 12) -> np.ndarray:
    """Random 0/1 pixels ``(frames, rows, cols)``; 37 x 41 = 1517 bits, so frames 2 and 3 start mid-byte."""
    return np.random.default_rng(seed).integers(0, 2, size=(frames, rows, cols), dtype=np.uint8)


def stored_segmentation(bits: np.ndarray) -> list[bytes]:
    """The stored ``.1.2.1`` frames of a binary segmentation: each frame's bits packed LSB-first, zero padded."""
    return [np.packbits(frame.reshape(-1), bitorder="little").tobytes() for frame in bits]


def _rle_one_segment(segment: bytes) -> bytes:
    """An RLE Lossless frame of one segment (64-byte header: count 1, offset 64), even length."""
    import imagecodecs  # noqa: PLC0415

    header = np.zeros(16, dtype="<u4")
    header[:2] = (1, 64)
    frame = header.tobytes() + bytes(imagecodecs.packbits_encode(segment))
    return frame + b"\0" * (len(frame) % 2)


def segmentation_p10(bits: np.ndarray, syntax: str, *, rle_layout: str = "packed", **extra: Any) -> bytes:
    """A binary Segmentation Storage file of ``bits`` in ``syntax``.

    Native and deflated files hold the continuous bit stream; RLE frames hold one segment of the frame's
    packed bits (``rle_layout="packed"``) or of one byte a pixel (``"bytes"``); JPEG 2000 and HTJ2K frames
    are 8-bit 0/1 images.
    """
    import imagecodecs  # noqa: PLC0415

    rows, cols = int(bits.shape[1]), int(bits.shape[2])
    common: dict[str, Any] = {
        "rows": rows,
        "cols": cols,
        "bits_allocated": 1,
        "number_of_frames": int(bits.shape[0]),
        "sop_class": SEGMENTATION,
        **extra,
    }
    if syntax in (EXPLICIT_LE, DEFLATED_LE):
        return make_p10(syntax, native=np.packbits(bits.reshape(-1), bitorder="little").tobytes(), **common)
    if syntax == RLE_LOSSLESS:
        segments = stored_segmentation(bits) if rle_layout == "packed" else [f.tobytes() for f in bits]
        return make_p10(syntax, frames=[_rle_one_segment(s) for s in segments], **common)
    if syntax in (J2K_LOSSLESS, "1.2.840.10008.1.2.4.91"):
        encoded = [bytes(imagecodecs.jpeg2k_encode(f, reversible=True, codecformat="J2K")) for f in bits]
    else:
        encoded = [bytes(imagecodecs.htj2k_encode(f, reversible=True)) for f in bits]
    return make_p10(syntax, frames=encoded, **common)


def float_p10(values: np.ndarray, *, double: bool = False, syntax: str = EXPLICIT_LE, **extra: Any) -> bytes:
    """A Parametric-Map-like file with Float (32-bit) or Double Float (64-bit) Pixel Data and no PixelData.

    As the Floating Point Image Pixel module says, it has no BitsStored, HighBit or PixelRepresentation.
    """
    ds = read(make_p10(syntax, sop_class="1.2.840.10008.5.1.4.1.1.30", **extra))
    ds.Rows, ds.Columns = int(values.shape[-2]), int(values.shape[-1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if values.ndim == 3:
        ds.NumberOfFrames = int(values.shape[0])
    if double:
        ds.BitsAllocated = 64
        ds.DoubleFloatPixelData = values.astype("<f8").tobytes()
    else:
        ds.BitsAllocated = 32
        ds.FloatPixelData = values.astype("<f4").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
