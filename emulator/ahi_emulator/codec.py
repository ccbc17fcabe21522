"""Frame encoding, JPH boxing and the image frame resolution checksum (IFRC).

The full-resolution checksum is computed from the *source* array, never from a decoded stream: a verifier
that is tested against this emulator must not pass merely because both sides share one decoder's bugs.
"""

from __future__ import annotations

import inspect
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
"""What a data store created with ``losslessStorageFormat = JPEG_2000_LOSSLESS`` stores frames as."""
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
OPENJPEG_LOSSLESS_BITS = 24
"""The widest samples OpenJPEG (imagecodecs 2026.10.10) encodes losslessly; measured, see encode_j2k_lossless."""

_CONTENT_TYPES: dict[str, str] = {
    HTJ2K_LOSSLESS_RPCL: "image/jph",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.91": "image/j2c",
    # Not in the model's list of content types; classic JPEG 2000 is the closest documented one.
    JPEG2000_LOSSLESS: "image/j2c",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    EXPLICIT_VR_LITTLE_ENDIAN: "application/octet-stream",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.100.1": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.101.1": "video/mpeg",
    **{f"1.2.840.10008.1.2.4.{n}{suffix}": "video/mp4" for n in range(102, 107) for suffix in ("", ".1")},
    # "video/H256" is the service's own spelling (botocore model); clients match on it verbatim.
    "1.2.840.10008.1.2.4.107": "video/H256",
    "1.2.840.10008.1.2.4.108": "video/H256",
    "1.2.840.10008.1.2.4.112": "image/jxl",
}

ALLOWED_DTYPES: frozenset[np.dtype[Any]] = frozenset(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)
)

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOC, _SIZ, _COD, _SOT = 0xFF4F, 0xFF51, 0xFF52, 0xFF90


def content_type_for(transfer_syntax_uid: str | None) -> str:
    """Return the ``GetImageFrame`` content type for a stored transfer syntax.

    Parameters
    ----------
    transfer_syntax_uid
        ``StoredTransferSyntaxUID``; ``None`` means HTJ2K lossless RPCL, as on the service.

    Returns
    -------
    str
        The content type; ``application/octet-stream`` (the service default) for unknown syntaxes.
    """
    return _CONTENT_TYPES.get(transfer_syntax_uid or HTJ2K_LOSSLESS_RPCL, "application/octet-stream")


def is_htj2k_lossless(transfer_syntax_uid: str | None) -> bool:
    """Return True when frames of this stored syntax are HTJ2K made by HealthImaging (checksum on pixels)."""
    return transfer_syntax_uid in (None, HTJ2K_LOSSLESS_RPCL)


def is_transcoded_lossless(transfer_syntax_uid: str | None) -> bool:
    """Return True when HealthImaging made the stored frames itself, losslessly, so the checksum is on the
    pixels: HTJ2K lossless RPCL, or JPEG 2000 lossless in a JPEG 2000 Lossless data store."""
    return is_htj2k_lossless(transfer_syntax_uid) or transfer_syntax_uid == JPEG2000_LOSSLESS


@dataclass(frozen=True)
class Resolution:
    """One entry of ``PixelDataChecksumFromBaseToFullResolution``."""

    width: int
    height: int
    checksum: int


@dataclass(frozen=True)
class PreparedFrame:
    """A frame ready to store: its bytes and the metadata entries derived from its source."""

    data: bytes
    resolutions: tuple[Resolution, ...]
    min_value: int | None
    max_value: int | None
    size_in_bytes: int


def little_endian(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Return ``arr`` as a C-contiguous little-endian array (the IFRC byte layout)."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


def crc32_of_array(arr: npt.NDArray[Any]) -> int:
    """CRC-32 (zlib) of the array's little-endian, C-ordered, unpadded bytes."""
    return zlib.crc32(little_endian(arr).data)


def normalize_frame(arr: npt.NDArray[Any], bits_stored: int | None = None) -> npt.NDArray[Any]:
    """Validate a source frame and return it as ``(rows, cols)`` or ``(rows, cols, 3)``.

    Parameters
    ----------
    arr
        ``(rows, cols)``, ``(rows, cols, 1)`` or ``(rows, cols, 3)`` integer array.
    bits_stored
        Significant bits; every value must fit in that many bits (two's complement when signed).

    Returns
    -------
    numpy.ndarray
        The frame with a single-sample axis dropped.

    Raises
    ------
    ValueError
        For unsupported shapes, dtypes or values that do not fit ``bits_stored``.
    """
    arr = np.asarray(arr)
    if arr.dtype.newbyteorder("=") not in ALLOWED_DTYPES:
        raise ValueError(f"unsupported frame dtype {arr.dtype}; use one of (u)int8, (u)int16, (u)int32")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"frame shape {arr.shape} is not (rows, cols) or (rows, cols, 3)")
    if arr.size == 0:
        raise ValueError("frame is empty")
    container = arr.dtype.itemsize * 8
    if bits_stored is not None:
        if not 1 <= bits_stored <= container:
            raise ValueError(f"bits_stored={bits_stored} does not fit a {arr.dtype} container")
        signed = arr.dtype.kind == "i"
        low = -(1 << (bits_stored - 1)) if signed else 0
        high = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
        if int(arr.min()) < low or int(arr.max()) > high:
            raise ValueError(f"frame values exceed bits_stored={bits_stored} ({low}..{high})")
    return arr


@cache
def _codec_accepts(function: str, parameter: str) -> bool:
    """Whether the installed imagecodecs' ``function`` takes ``parameter`` (it varies between releases)."""
    try:
        return parameter in inspect.signature(getattr(imagecodecs, function)).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def encode_htj2k(arr: npt.NDArray[Any], bits_stored: int | None = None) -> bytes:
    """Encode a normalised frame as a bare reversible (lossless) HTJ2K codestream.

    Parameters
    ----------
    arr
        Output of :func:`normalize_frame`.
    bits_stored
        Passed to the encoder as ``bitspersample`` when the installed imagecodecs supports it; otherwise
        the codestream precision is the container size, which decodes to identical bytes.

    Returns
    -------
    bytes
        The codestream, starting with SOC/SIZ (``FF 4F FF 51``).
    """
    kwargs: dict[str, Any] = {"reversible": True}
    if bits_stored is not None and _codec_accepts("htj2k_encode", "bitspersample"):
        kwargs["bitspersample"] = bits_stored
    return bytes(imagecodecs.htj2k_encode(little_endian(arr), **kwargs))


def encode_j2k_lossless(arr: npt.NDArray[Any], bits_stored: int | None = None) -> bytes:
    """Encode a normalised frame as a bare reversible (lossless) classic JPEG 2000 codestream (OpenJPEG), as a
    JPEG 2000 Lossless data store stores it.

    Raises ``ValueError`` above 24 bits: OpenJPEG 2.5.4 does not round-trip them (it writes 25 and 26 bits
    lossily and caps the SIZ precision at 26), so the import keeps such pixel data as a blob instead."""
    precision = bits_stored if bits_stored is not None else arr.dtype.itemsize * 8
    if precision > OPENJPEG_LOSSLESS_BITS:
        raise ValueError(f"OpenJPEG cannot encode {precision}-bit samples losslessly")
    kwargs: dict[str, Any] = {"reversible": True, "codecformat": "J2K"}
    if bits_stored is not None:
        kwargs["bitspersample"] = bits_stored
    return bytes(imagecodecs.jpeg2k_encode(little_endian(arr), **kwargs))


def _main_header_segments(codestream: bytes) -> dict[int, bytes]:
    """Return the first occurrence of each main-header marker segment's payload (after Lxxx)."""
    if len(codestream) < 4 or struct.unpack_from(">H", codestream, 0)[0] != _SOC:
        raise ValueError("not a JPEG 2000 codestream (no SOC marker)")
    segments: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(codestream):
        marker, length = struct.unpack_from(">HH", codestream, pos)
        if marker == _SOT or length < 2:
            break
        segments.setdefault(marker, codestream[pos + 4 : pos + 2 + length])
        pos += 2 + length
    return segments


def read_siz(codestream: bytes) -> tuple[int, int, list[int]]:
    """Return ``(width, height, ssiz_per_component)`` from a bare codestream's SIZ segment."""
    siz = _main_header_segments(codestream).get(_SIZ)
    if siz is None or len(siz) < 36:
        raise ValueError("codestream has no valid SIZ segment")
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", siz, 2)
    (csiz,) = struct.unpack_from(">H", siz, 34)
    ssiz = [siz[36 + 3 * i] for i in range(csiz)]
    return xsiz - xosiz, ysiz - yosiz, ssiz


def decomposition_levels(codestream: bytes) -> int:
    """Number of wavelet decomposition levels in the codestream's COD segment (0 when absent)."""
    cod = _main_header_segments(codestream).get(_COD)
    # COD payload: Scod(1) progression(1) layers(2) MCT(1) decompositions(1) ...
    return cod[5] if cod is not None and len(cod) > 5 else 0


def _box(box_type: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + box_type + payload


def box_jph(codestream: bytes) -> bytes:
    """Wrap a bare HTJ2K codestream in a JPH file (ISO/IEC 15444-15 boxes).

    Parameters
    ----------
    codestream
        A bare codestream (``FF 4F FF 51 ...``).

    Returns
    -------
    bytes
        Signature box, ``ftyp`` (brand ``jph ``), ``jp2h`` (``ihdr``, optional ``bpcc``, ``colr``), ``jp2c``.
    """
    width, height, ssiz = read_siz(codestream)
    uniform = len(set(ssiz)) == 1
    # ihdr: HEIGHT, WIDTH, NC, BPC (0xFF = see bpcc), C=7 (JPEG 2000), UnkC=0, IPR=0
    ihdr = struct.pack(">IIHBBBB", height, width, len(ssiz), ssiz[0] if uniform else 0xFF, 7, 0, 0)
    enum_cs = 16 if len(ssiz) >= 3 else 17  # sRGB, greyscale
    colr = struct.pack(">BBBI", 1, 0, 0, enum_cs)
    header = _box(b"ihdr", ihdr) + (b"" if uniform else _box(b"bpcc", bytes(ssiz))) + _box(b"colr", colr)
    ftyp = _box(b"ftyp", b"jph " + struct.pack(">I", 0) + b"jph ")
    return JP2_SIGNATURE + ftyp + _box(b"jp2h", header) + _box(b"jp2c", codestream)


def reduced_resolutions(codestream: bytes) -> list[Resolution]:
    """Checksums of the reduced-resolution images, one per distinct size, smallest first, full resolution excluded.

    These come from the decoder (``skipres``): HealthImaging's definition for sub-resolutions is undocumented
    and verification only needs full resolution, so only that one is computed independently.
    """
    levels = decomposition_levels(codestream)
    entries: list[Resolution] = []
    for k in range(levels, 0, -1):
        reduced = imagecodecs.htj2k_decode(codestream, skipres=k, planar=False)
        entry = Resolution(int(reduced.shape[1]), int(reduced.shape[0]), crc32_of_array(reduced))
        # Tiny images bottom out at 1 pixel before the last level; list each size once.
        if entries and (entries[-1].width, entries[-1].height) == (entry.width, entry.height):
            entries[-1] = entry
        else:
            entries.append(entry)
    return entries


def prepare_htj2k_frame(
    arr: npt.NDArray[Any],
    *,
    bits_stored: int | None = None,
    boxed: bool = False,
    resolution_levels: bool = True,
    encoded: bytes | None = None,
) -> PreparedFrame:
    """Encode (or take) an HTJ2K frame and derive its metadata from the source array.

    Parameters
    ----------
    arr
        Output of :func:`normalize_frame`; the full-resolution checksum is taken from it.
    bits_stored
        See :func:`encode_htj2k`.
    boxed
        Store a JPH file instead of a bare codestream.
    resolution_levels
        Also list one checksum per decomposition level (needs ``htj2k_decode(skipres=...)``).
    encoded
        Bytes to store as-is instead of encoding ``arr`` (e.g. a hand-made codestream).

    Returns
    -------
    PreparedFrame
    """
    codestream = encoded if encoded is not None else encode_htj2k(arr, bits_stored)
    rows, cols = int(arr.shape[0]), int(arr.shape[1])
    full = Resolution(cols, rows, crc32_of_array(arr))
    entries: list[Resolution] = []
    if resolution_levels and encoded is None and _codec_accepts("htj2k_decode", "skipres"):
        entries = [r for r in reduced_resolutions(codestream) if (r.width, r.height) != (cols, rows)]
    data = box_jph(codestream) if boxed and encoded is None else codestream
    return PreparedFrame(
        data=data,
        resolutions=(*entries, full),
        min_value=int(arr.min()),
        max_value=int(arr.max()),
        size_in_bytes=int(arr.nbytes),
    )


def prepare_retained_frame(arr: npt.NDArray[Any] | None, data: bytes) -> PreparedFrame:
    """Metadata for a frame kept in its original syntax: checksum over the raw bytes, no min/max.

    Parameters
    ----------
    arr
        The decoded frame, used only for Width/Height; ``None`` gives 0 x 0.
    data
        The original frame bytes, stored and served unchanged.
    """
    rows, cols = (int(arr.shape[0]), int(arr.shape[1])) if arr is not None else (0, 0)
    return PreparedFrame(
        data=bytes(data),
        resolutions=(Resolution(cols, rows, zlib.crc32(data)),),
        min_value=None,
        max_value=None,
        size_in_bytes=len(data),
    )


def flip_one_pixel(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Return a copy with the lowest bit of the centre sample flipped (stays within any bit depth)."""
    changed = np.array(arr, copy=True)
    flat = changed.reshape(-1)
    flat[flat.size // 2] ^= 1
    return changed
