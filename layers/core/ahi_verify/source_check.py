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
* Samples are little-endian in ``ceil(BitsStored / 8)`` bytes (3 widened to 4), the container rule of the
  frame IFRC (``ifrc.py``): HealthImaging's HTJ2K carries the real precision, so a BitsAllocated 16 /
  BitsStored 8 file is hashed as 1-byte samples, BitsAllocated 32 / BitsStored 16 as 2-byte samples.
* Syntaxes HealthImaging keeps as the original (JPEG baseline ``.50``, JPEG 2000 lossy ``.91``, HTJ2K
  ``.203``) are compared on the raw encapsulated frame bytes, never decoded: decoded lossy values depend
  on the decoder.
* 1-bit data (binary segmentation, kept as raw pixel data) is compared on each frame's bits, cut from the
  bit-packed PixelData and re-packed from a byte boundary, least significant bit first (DICOM's packing
  order). AWS does not document how it splits frames whose bit count is not a multiple of 8. Compressed
  segmentations (RLE, JPEG 2000, HTJ2K, ...) are decoded first and each frame's pixels packed the same
  way; deflated files are inflated by pydicom and read as native.
* Float and Double Float Pixel Data (7FE0,0008)/(7FE0,0009) have no documented IFRC: such a file is a
  :class:`SourceError` naming the element, so its frames are never compared (neither MATCH nor MISMATCH).
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
        _refuse_float_pixel_data(ds, input_file)
        return SourceFile(input_file, sop_uid, ())
    number_of_frames = int(ds.get("NumberOfFrames") or 1)
    try:
        if int(ds.get("BitsAllocated") or 0) == 1:
            packed = (
                _decoded_segmentation_frames(ds, number_of_frames)
                if ds.file_meta.TransferSyntaxUID.is_encapsulated
                else _bit_packed_frames(ds, number_of_frames)
            )
            frames = tuple(SourceFrame(i, zlib.crc32(f), Rule.RAW_BYTES.value) for i, f in enumerate(packed, start=1))
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


RLE_LOSSLESS = "1.2.840.10008.1.2.5"
FLOAT_PIXEL_ELEMENTS = (("FloatPixelData", "(7FE0,0008)"), ("DoubleFloatPixelData", "(7FE0,0009)"))


def _refuse_float_pixel_data(ds: Any, input_file: str) -> None:
    """Raise for float pixel data: AWS documents no IFRC for it, so any comparison would be a guess."""
    for keyword, tag in FLOAT_PIXEL_ELEMENTS:
        if keyword in ds:
            raise SourceError(
                f"{keyword} {tag} holds floating point pixel data, for which AWS documents no checksum; "
                "its frames are not compared",
                input_file,
            )


def _decoded_segmentation_frames(ds: Any, number_of_frames: int) -> list[bytes]:
    """The frames of a compressed 1-bit segmentation, decoded, each packed LSB-first from a byte boundary.

    The compressed bytes are never unpacked as bits: they are not the pixels.
    """
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
    if str(ds.file_meta.TransferSyntaxUID) == RLE_LOSSLESS:
        # pydicom 3.0 refuses 1-bit RLE; decode the segments here.
        raw = generate_frames(ds.PixelData, number_of_frames=number_of_frames)
        bits = [_rle_frame_bits(frame, pixels) for frame in raw]
    else:
        bits = [np.asarray(frame).reshape(-1) & 1 for frame in _iter_frames(ds)]
    if len(bits) != number_of_frames:
        raise ValueError(f"PixelData decodes to {len(bits)} frames, NumberOfFrames says {number_of_frames}")
    return [np.packbits(b.astype(np.uint8), bitorder="little").tobytes() for b in bits]


def _rle_frame_bits(frame: bytes, pixels: int) -> npt.NDArray[Any]:
    """One RLE frame's pixels (0/1) from its single segment.

    Encoders write 1-bit frames either as the frame's packed bits or as one byte a pixel; the decoded
    length tells which (the two lengths differ for every frame of more than one pixel).
    """
    import imagecodecs  # noqa: PLC0415 - the codec layer, as ifrc.py

    header = np.frombuffer(frame[:64], dtype="<u4")
    if header.size != 16 or int(header[0]) != 1:
        raise ValueError("a 1-bit RLE frame must hold exactly one segment")
    decoded = np.frombuffer(imagecodecs.packbits_decode(frame[int(header[1]) :]), dtype=np.uint8)
    if decoded.size >= pixels:
        return decoded[:pixels] & 1
    if decoded.size >= (pixels + 7) // 8:
        return np.unpackbits(decoded, bitorder="little")[:pixels]
    raise ValueError(f"RLE segment decodes to {decoded.size} bytes, {pixels} pixels need more")


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
    if not 1 <= bits_stored <= bits_allocated:
        raise ValueError(f"BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})")
    container = np.dtype(f"<{'i' if signed else 'u'}{size}")
    values = np.array(arr, dtype=container, order="C")  # a private, writable, contiguous copy
    shift = size * 8 - bits_stored
    if 0 < shift < size * 8:
        np.left_shift(values, shift, out=values)
        np.right_shift(values, shift, out=values)
    return zlib.crc32(_ifrc_container(values, bits_stored, signed).data)


def _ifrc_container(values: npt.NDArray[Any], bits_stored: int, signed: bool) -> npt.NDArray[Any]:
    """Narrow the BitsAllocated container to the frame IFRC's: ``ceil(BitsStored / 8)`` bytes, 3 widened to 4.

    The values already fit BitsStored bits (cleared or sign-extended above), so narrowing is exact.
    """
    size = (bits_stored + 7) // 8
    size = 4 if size == 3 else size
    if size == values.dtype.itemsize:
        return values
    return np.ascontiguousarray(values.astype(np.dtype(f"<{'i' if signed else 'u'}{size}")))
