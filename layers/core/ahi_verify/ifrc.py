"""The native codec layer: frame bytes in, image frame resolution checksum (IFRC) out.

HealthImaging's IFRC of an HTJ2K frame is the CRC-32 (zlib polynomial) of the frame decoded at full
resolution, laid out row-major with the samples of a pixel adjacent, little-endian, in
``ceil(precision / 8)`` bytes a sample (3 widened to 4), signed exactly when the codestream says so.
OpenJPH decodes HTJ2K, OpenJPEG classic JPEG 2000; both come from ``imagecodecs`` and release the GIL.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .codestream import CodestreamError, CodestreamInfo, read_codestream_info
from .syntax import Rule

try:
    import imagecodecs
except ImportError as exc:  # pragma: no cover - the codec layer is a hard requirement at run time
    raise ImportError(
        "imagecodecs is required to decode HealthImaging frames; install the codecs layer or `pip install imagecodecs`"
    ) from exc


def _pick_crc32() -> Callable[[Any], int]:
    """Use libdeflate's CRC-32 when the codec build has it (about 4x zlib's), checked against zlib.

    ``deflate_crc32`` silently hashes the wrong bytes of a non-contiguous array, so callers always pass
    C-contiguous buffers.
    """
    probe = np.arange(1024, dtype=np.uint16)
    try:
        fast: Callable[[Any], int] = imagecodecs.deflate_crc32
        if fast(probe) == zlib.crc32(probe.tobytes()) and fast(b"") == 0:
            return fast
    except Exception:  # noqa: S110 - any failure means the optional fast path is unusable
        pass
    return zlib.crc32


crc32: Callable[[Any], int] = _pick_crc32()
"""Standard CRC-32 (ISO-HDLC, as ``zlib.crc32``) of a C-contiguous buffer, unsigned."""


class FrameDecodeError(Exception):
    """A frame's bytes could not be turned into a checksum.

    Attributes
    ----------
    truncated : bool
        The stream ends early; a partial decode is never trusted.
    """

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class FrameChecksum:
    """The checksum of one frame and how it was obtained."""

    crc: int
    rule: Rule
    width: int | None = None
    height: int | None = None
    components: int | None = None
    precision: int | None = None
    signed: bool | None = None


def raw_checksum(blob: bytes) -> FrameChecksum:
    """CRC-32 of the frame bytes exactly as served (the rule for retained originals)."""
    return FrameChecksum(crc=crc32(blob), rule=Rule.RAW_BYTES)


def decoded_checksum(blob: bytes, content_type: str) -> FrameChecksum:
    """Decode a JPEG 2000 family frame at full resolution and return the IFRC of its pixels.

    Parameters
    ----------
    blob : bytes-like
        A bare codestream or a JPH/JP2 file, as GetImageFrame returned it.
    content_type : str
        The normalised Content-Type. ``image/jph`` and ``image/jphc`` go to OpenJPH; ``image/j2c``, and
        any stream without HT code-blocks, go to OpenJPEG. OpenJPEG is also the fallback when OpenJPH
        refuses a stream.

    Returns
    -------
    FrameChecksum

    Raises
    ------
    FrameDecodeError
        Malformed or truncated stream, decoder failure, or decoded pixels that disagree with the
        codestream header.
    """
    try:
        info = read_codestream_info(blob)
    except CodestreamError as exc:
        raise FrameDecodeError(str(exc), truncated=exc.truncated) from exc
    pixels, rule = _decode(blob, content_type, info)
    hashed = _ifrc_buffer(pixels, info)
    return FrameChecksum(
        crc=crc32(hashed),
        rule=rule,
        width=info.width,
        height=info.height,
        components=info.components,
        precision=info.precision,
        signed=info.signed,
    )


def _decode(blob: bytes, content_type: str, info: CodestreamInfo) -> tuple[npt.NDArray[Any], Rule]:
    use_openjph = content_type in ("image/jph", "image/jphc") and info.high_throughput
    if use_openjph:
        try:
            return imagecodecs.htj2k_decode(blob, planar=False), Rule.DECODED_HTJ2K
        except (imagecodecs.Htj2kError, ValueError, RuntimeError):
            pass  # OpenJPH refuses some valid streams that OpenJPEG reads; fall through.
    try:
        return imagecodecs.jpeg2k_decode(blob, planar=False), Rule.DECODED_J2K
    except Exception as exc:
        raise FrameDecodeError(f"decoder failed: {type(exc).__name__}: {exc}") from exc


def _ifrc_buffer(pixels: npt.NDArray[Any], info: CodestreamInfo) -> npt.NDArray[Any]:
    """Lay the decoded pixels out exactly as the IFRC hashes them, copying only when needed."""
    expected_shape: tuple[int, ...] = (info.height, info.width)
    if info.components > 1:
        expected_shape += (info.components,)
    if pixels.shape != expected_shape:
        raise FrameDecodeError(f"decoded shape {pixels.shape} disagrees with the codestream header {expected_shape}")
    kind = "i" if info.signed else "u"
    layout = np.dtype(f"<{kind}{info.sample_bytes}")
    if pixels.dtype.kind not in "iu":
        raise FrameDecodeError(f"decoder returned {pixels.dtype} samples")
    if pixels.dtype != layout:
        # Values fit the codestream precision, so the conversion is exact; a decoder returning a wider
        # or differently signed container than the layout asks for must not change the checksum.
        pixels = pixels.astype(layout)
    return np.ascontiguousarray(pixels)


def decoded_pixels(blob: bytes, content_type: str) -> npt.NDArray[Any]:
    """Decode a JPEG 2000 family frame at full resolution into its pixels in the IFRC layout.

    What :func:`decoded_checksum` hashes: the three-way check compares these with a lossy source's pixels
    when no decoder of the source reproduces the checksum.

    Raises
    ------
    FrameDecodeError
        As :func:`decoded_checksum`.
    """
    try:
        info = read_codestream_info(blob)
    except CodestreamError as exc:
        raise FrameDecodeError(str(exc), truncated=exc.truncated) from exc
    pixels, _ = _decode(blob, content_type, info)
    return _ifrc_buffer(pixels, info)
