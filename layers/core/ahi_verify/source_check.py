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
  ``.203``, JPEG XL ``.112``) are compared on the raw encapsulated frame bytes, never decoded: decoded lossy
  values depend on the decoder.
* A lossy source that is decoded (JPEG extended ``.51``, JPEG-LS near-lossless ``.81``, and the syntaxes
  above if they are not retained) is decoded by every decoder of :data:`LOSSY_SOURCE_DECODERS`: the import
  decoded it with a decoder of its own, and decoders of a lossy syntax may round differently. Each
  decoder's output is normalised as above, with no colour conversion (the JPEG decoders are told to keep
  the components as coded, which is what pydicom's ``raw=True`` returns).
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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from .syntax import HTJ2K_RETAINED, JPEG2000_RETAINED, JPEG_BASELINE, JPEG_XL, Rule

RETAINED_SOURCE_SYNTAXES = frozenset({JPEG_BASELINE, JPEG2000_RETAINED, HTJ2K_RETAINED, JPEG_XL})


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
    candidates: tuple[tuple[str, int], ...] = ()
    """A lossy source: ``(decoder, IFRC)`` for every decoder that decoded the frame; ``crc`` is the first's."""


@dataclass(frozen=True)
class SourceFile:
    """What a source P10 file contributes to the three-way check."""

    input_file: str
    sop_instance_uid: str
    frames: tuple[SourceFrame, ...]


def read_sop_instance_uid(data: bytes, input_file: str) -> str:
    """The SOP Instance UID of a P10 file, read without its pixel data (for files whose frames are not compared).

    Raises
    ------
    SourceError
        Not DICOM, or no SOP Instance UID.
    """
    import pydicom  # noqa: PLC0415

    try:
        return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    except Exception as exc:
        raise SourceError(f"not a readable DICOM P10 file ({type(exc).__name__})", input_file) from exc


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
    try:
        number_of_frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:  # a malformed IS value ("1A"): named, never quoted
        raise SourceError("NumberOfFrames is not an integer", input_file) from exc
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
        elif syntax in LOSSY_SOURCE_DECODERS:
            frames = _lossy_source_frames(ds, syntax, number_of_frames)
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
    return zlib.crc32(_normalised(arr, ds).data)


def _normalised(arr: npt.NDArray[Any], ds: Any) -> npt.NDArray[Any]:
    """The frame's samples as the IFRC hashes them: container dtype, only BitsStored bits significant."""
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
    return _ifrc_container(values, bits_stored, signed)


def _ifrc_container(values: npt.NDArray[Any], bits_stored: int, signed: bool) -> npt.NDArray[Any]:
    """Narrow the BitsAllocated container to the frame IFRC's: ``ceil(BitsStored / 8)`` bytes, 3 widened to 4.

    The values already fit BitsStored bits (cleared or sign-extended above), so narrowing is exact.
    """
    size = (bits_stored + 7) // 8
    size = 4 if size == 3 else size
    if size == values.dtype.itemsize:
        return values
    return np.ascontiguousarray(values.astype(np.dtype(f"<{'i' if signed else 'u'}{size}")))


# --- lossy sources ------------------------------------------------------------------------------------------

JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"

LOSSY_SOURCE_DECODERS: dict[str, tuple[str, ...]] = {
    JPEG_BASELINE: ("pydicom", "libjpeg-turbo"),
    JPEG_EXTENDED: ("pydicom", "libjpeg-turbo"),  # libjpeg-turbo 3 decodes 12-bit lossy JPEG too
    JPEG_LS_NEAR_LOSSLESS: ("pydicom", "charls"),
    JPEG2000_RETAINED: ("pydicom", "openjpeg"),
    HTJ2K_RETAINED: ("pydicom", "openjph", "openjpeg"),
}
"""The decoders tried on a decoded lossy source, by its transfer syntax: ``pydicom`` is each of pydicom's
available plugins for the syntax (``pydicom-<plugin>``; the one the emulator's import uses comes first), the
others are imagecodecs' builds of libjpeg-turbo, CharLS, OpenJPEG and OpenJPH. HTJ2K lossless ``.201`` and
``.202``, JPEG 2000 lossless ``.90``, JPEG-LS lossless ``.80`` and the lossless JPEG processes are not here:
they decode to one exact result, and any difference from it is a mismatch."""

LOSSY_DECODER_TOLERANCE = 1
"""The largest per-sample difference between two decoders of the same lossy frame that is put down to the
decoders, not to the import. Measured with ``python -m bench.lossy_decoders`` on the real lossy files bundled
with pydicom: pylibjpeg-libjpeg against libjpeg-turbo differ by at most 1 (JPGExtended 12-bit: 3,612 of
262,144 samples; SC_rgb_jpeg_lossy_gdcm: 500 of 30,000; SC_rgb_dcmtk_+eb+cy+np: 2,600 of 30,000;
examples_ybr_color: 78,333 of 6,912,000); OpenJPH against OpenJPEG on a lossy HTJ2K frame by at most 1 (53 of
16,384); lossy JPEG 2000 and JPEG-LS near-lossless decoders not at all. The issue measured the same bound
(10,416 and 84,190 samples) between pydicom's plugin and libjpeg-turbo, IJG and GDCM on real ``.51`` files:
the inverse DCT's rounding differs by one least significant bit; a larger difference is a change."""


def _lossy_source_frames(ds: Any, syntax: str, number_of_frames: int) -> tuple[SourceFrame, ...]:
    """Every frame's IFRC by every decoder of the syntax that decodes it; a frame no decoder decodes fails."""
    frames = []
    for number in range(1, number_of_frames + 1):
        candidates = tuple((name, zlib.crc32(_normalised(arr, ds).data)) for name, arr in lossy_decodings(ds, number))
        if not candidates:
            raise ValueError(f"no decoder of {syntax} decodes frame {number}")
        frames.append(SourceFrame(number, candidates[0][1], "decoded-pixels", candidates))
    return tuple(frames)


def lossy_decodings(ds: Any, frame_number: int) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """Yield ``(decoder, pixels)`` for one frame of a lossy source, for every decoder that decodes it.

    Parameters
    ----------
    ds : pydicom.Dataset
        The source, with encapsulated pixel data in one of the syntaxes of :data:`LOSSY_SOURCE_DECODERS`.
    frame_number : int
        From 1.

    Yields
    ------
    tuple of (str, numpy.ndarray)
        The decoder's name and the frame as ``(rows, cols)`` or ``(rows, cols, samples)``, not yet normalised
        (see :func:`normalised_source_pixels`). A decoder that fails on the frame, or returns another shape
        than Rows x Columns x SamplesPerPixel, yields nothing.
    """
    from pydicom.encaps import generate_frames  # noqa: PLC0415
    from pydicom.pixels.decoders.base import get_decoder  # noqa: PLC0415
    from pydicom.pixels.utils import pixel_array  # noqa: PLC0415

    syntax = str(ds.file_meta.TransferSyntaxUID)
    samples = int(ds.get("SamplesPerPixel") or 1)
    shape: tuple[int, ...] = (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    number_of_frames = int(ds.get("NumberOfFrames") or 1)
    encoded: bytes | None = None
    for name in LOSSY_SOURCE_DECODERS[syntax]:
        if name == "pydicom":
            for plugin in get_decoder(syntax).available_plugins:
                yield from _shaped(
                    f"pydicom-{plugin}",
                    partial(pixel_array, ds, index=frame_number - 1, raw=True, decoding_plugin=plugin),
                    shape,
                )
            continue
        if encoded is None:
            encoded = _nth(generate_frames(ds.PixelData, number_of_frames=number_of_frames), frame_number - 1)
        yield from _shaped(name, partial(_imagecodecs_decode, name, encoded, samples), shape)


def _nth(frames: Iterator[bytes], index: int) -> bytes:
    for position, frame in enumerate(frames):
        if position == index:
            return frame
    raise ValueError(f"the pixel data holds {index} frame(s) or fewer")


def _shaped(name: str, decode: Any, shape: tuple[int, ...]) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    try:
        arr = np.asarray(decode())
    except Exception:  # a decoder that refuses the frame is one opinion fewer
        return
    if arr.shape == shape and arr.dtype.kind in "iu":
        yield name, arr


def _imagecodecs_decode(name: str, frame: bytes, samples: int) -> Any:
    import imagecodecs  # noqa: PLC0415

    if name == "libjpeg-turbo":
        # In and out colour space the same: the components come back as coded (YCbCr stays YCbCr), as
        # pydicom's raw decode returns them; upsampling of subsampled chroma is libjpeg-turbo's own.
        space = "RGB" if samples == 3 else None
        return imagecodecs.jpeg8_decode(frame, colorspace=space, outcolorspace=space)
    if name == "charls":
        return imagecodecs.jpegls_decode(frame)
    if name == "openjpeg":
        return imagecodecs.jpeg2k_decode(frame, planar=False)
    if name == "openjph":
        return imagecodecs.htj2k_decode(frame, planar=False)
    raise ValueError(f"unknown decoder {name}")


def normalised_source_pixels(arr: npt.NDArray[Any], ds: Any) -> npt.NDArray[Any]:
    """A decoded source frame's samples as the IFRC hashes them (the container of BitsAllocated, BitsStored
    bits significant): what the stored frame's decoded pixels are compared with."""
    return _normalised(arr, ds)


@dataclass(frozen=True)
class PixelDifference:
    """How a lossy source's pixels (by one decoder) differ from the stored frame's."""

    decoder: str
    crc: int
    max_difference: int
    differing_samples: int


def closest_decoding(data: bytes, frame_number: int, stored: npt.NDArray[Any]) -> PixelDifference | None:
    """The decoder of a lossy source whose pixels of one frame are closest to the stored frame's.

    Parameters
    ----------
    data : bytes
        The source P10 file.
    frame_number : int
        From 1.
    stored : numpy.ndarray
        The stored frame decoded, in the IFRC layout.

    Returns
    -------
    PixelDifference or None
        The smallest largest difference of a sample over the decoders; None when no decoder gives pixels of
        the stored frame's shape (or the file cannot be decoded), which is a change, not a rounding.
    """
    import pydicom  # noqa: PLC0415

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        decodings = list(lossy_decodings(ds, frame_number))
    except Exception:
        return None
    best: PixelDifference | None = None
    for name, arr in decodings:
        source = _normalised(arr, ds)
        if source.shape != stored.shape:
            continue
        delta = np.abs(source.astype(np.int64) - stored.astype(np.int64))
        found = PixelDifference(name, zlib.crc32(source.data), int(delta.max(initial=0)), int(np.count_nonzero(delta)))
        if best is None or found.max_difference < best.max_difference:
            best = found
    return best
