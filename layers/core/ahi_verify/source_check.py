"""The third opinion: the IFRC of each frame computed from the original P10 file that was imported.

Comparing it with the stored checksum and with the decoded frame tells *where* a difference arose
(:class:`ahi_verify.outcomes.ThreeWay` names the relations).

How source pixels are normalised into the IFRC layout (the same layout HealthImaging hashes):

* Frames come from pydicom's pixel backends with ``raw=True``: no colour-space conversion, so YBR data
  is hashed as YBR (HealthImaging does not document a conversion, and its HTJ2K stores what it decoded).
  Natively encoded YBR_FULL_422 is upsampled by pydicom to full resolution.
* PlanarConfiguration 1 is returned by pydicom as interleaved ``(rows, cols, samples)``, which is the
  IFRC order.
* Only BitsStored bits are significant: bits above them are cleared for unsigned data and replaced by the
  sign bit for signed data (PixelRepresentation 1), in the BitsAllocated container. pydicom does this for
  native data; it is applied here to every syntax, which is idempotent.
* Samples are little-endian, 1, 2 or 4 bytes as BitsAllocated says.
* Syntaxes HealthImaging keeps as the original (JPEG baseline ``.50``, JPEG 2000 lossy ``.91``, HTJ2K
  ``.203``) are compared on the raw encapsulated frame bytes, never decoded: decoded lossy values depend
  on the decoder.
* 1-bit data (binary segmentation, kept as raw pixel data) is compared on each frame's bits, cut from the
  bit-packed PixelData and re-packed from a byte boundary, least significant bit first (DICOM's packing
  order). AWS does not document how it splits frames whose bit count is not a multiple of 8.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .syntax import HTJ2K_RETAINED, JPEG2000_RETAINED, JPEG_BASELINE, Rule

RETAINED_SOURCE_SYNTAXES = frozenset({JPEG_BASELINE, JPEG2000_RETAINED, HTJ2K_RETAINED})


class SourceError(Exception):
    """A source file cannot be read or its pixels decoded.

    The message says what went wrong, never the file's content nor its key (keys may embed names); the key
    is kept apart in ``input_file`` for the report's ``inputFile`` field.
    """

    def __init__(self, message: str, input_file: str) -> None:
        super().__init__(message)
        self.input_file = input_file


@dataclass(frozen=True)
class SourceFrame:
    """The IFRC of one frame of a source file."""

    frame_number: int
    crc: int
    rule: str
    """``decoded-pixels`` (normalised as above) or ``raw-bytes`` (retained syntaxes)."""


@dataclass(frozen=True)
class SourceFile:
    """What a source P10 file contributes to the three-way check."""

    input_file: str
    sop_instance_uid: str
    frames: tuple[SourceFrame, ...]


def read_source_file(data: bytes, input_file: str) -> SourceFile:
    """Compute the IFRC of every frame of an original P10 file.

    Parameters
    ----------
    data : bytes
        The P10 file as stored in the input bucket.
    input_file : str
        Its key, used in error messages only.

    Raises
    ------
    SourceError
        Not DICOM, no SOP Instance UID, or pixel data that cannot be decoded.
    """
    import pydicom  # noqa: PLC0415 - only the three-way check needs pydicom and its pixel backends
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        sop_uid = str(ds.SOPInstanceUID)
        syntax = str(ds.file_meta.TransferSyntaxUID)
    except Exception as exc:
        raise SourceError(f"not a readable DICOM P10 file ({type(exc).__name__})", input_file) from exc
    if "PixelData" not in ds:
        return SourceFile(input_file, sop_uid, ())
    number_of_frames = int(ds.get("NumberOfFrames") or 1)
    try:
        if int(ds.get("BitsAllocated") or 0) == 1:
            frames = tuple(
                SourceFrame(i, zlib.crc32(f), Rule.RAW_BYTES.value)
                for i, f in enumerate(_bit_packed_frames(ds, number_of_frames), start=1)
            )
        elif syntax in RETAINED_SOURCE_SYNTAXES:
            raw = generate_frames(ds.PixelData, number_of_frames=number_of_frames)
            frames = tuple(SourceFrame(i, zlib.crc32(f), Rule.RAW_BYTES.value) for i, f in enumerate(raw, start=1))
        else:
            frames = tuple(
                SourceFrame(i, _ifrc(arr, ds), "decoded-pixels") for i, arr in enumerate(_iter_frames(ds), start=1)
            )
    except Exception as exc:
        raise SourceError(f"pixel data cannot be decoded ({type(exc).__name__})", input_file) from exc
    return SourceFile(input_file, sop_uid, frames)


def _bit_packed_frames(ds: Any, number_of_frames: int) -> list[bytes]:
    bits_per_frame = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), bitorder="little")
    if bits.size < bits_per_frame * number_of_frames:
        raise ValueError(
            f"PixelData holds {bits.size} bits, {number_of_frames} frames need {bits_per_frame * number_of_frames}"
        )
    return [
        np.packbits(bits[i * bits_per_frame : (i + 1) * bits_per_frame], bitorder="little").tobytes()
        for i in range(number_of_frames)
    ]


def _iter_frames(ds: Any) -> Any:
    from pydicom.pixels.utils import iter_pixels  # noqa: PLC0415

    return iter_pixels(ds, raw=True)


def _ifrc(arr: npt.NDArray[Any], ds: Any) -> int:
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    size = {1: 1, 8: 1, 16: 2, 32: 4}.get(bits_allocated)
    if size is None:
        raise ValueError(f"BitsAllocated {bits_allocated} has no IFRC layout")
    container = np.dtype(f"<{'i' if signed else 'u'}{size}")
    values = np.array(arr, dtype=container, order="C")  # a private, writable, contiguous copy
    shift = size * 8 - bits_stored
    if 0 < shift < size * 8:
        np.left_shift(values, shift, out=values)
        np.right_shift(values, shift, out=values)
    return zlib.crc32(values.data)
