"""Read what a JPEG 2000 family frame says about itself, without decoding it.

The checksum byte layout depends on the codestream's own precision and signedness (SIZ marker), not on
DICOM attributes, so those are read here. The walk over tile-parts also catches truncation: OpenJPH
decodes a truncated HTJ2K stream into a partial image without raising, which must never pass as a frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOC, _SIZ, _CAP, _COD, _SOT, _SOD, _EOC = 0xFF4F, 0xFF51, 0xFF50, 0xFF52, 0xFF90, 0xFF93, 0xFFD9
# Markers that stand alone, without a length field (ITU-T T.800 Table A.1, plus the reserved range).
_NO_LENGTH = frozenset({_SOC, _SOD, _EOC, *range(0xFF30, 0xFF40)})
_RSIZ_HT = 0x4000


class CodestreamError(ValueError):
    """The bytes are not a complete, well-formed JPEG 2000 codestream."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class CodestreamInfo:
    """Image properties from the SIZ marker, and how the codestream was found."""

    width: int
    height: int
    components: int
    precision: int
    """Bits per sample of component 0; all components are required to agree."""
    signed: bool
    high_throughput: bool
    """Rsiz capability bit 14 or a CAP marker: the stream uses HT code-blocks."""
    boxed: bool
    """The codestream sat in a JP2-family file (JPH/JP2 boxes), not bare."""

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample in the checksummed buffer: ceil(precision / 8), with 3 widened to 4."""
        size = (self.precision + 7) // 8
        return 4 if size == 3 else size


def read_codestream_info(data: bytes | bytearray | memoryview) -> CodestreamInfo:
    """Parse a bare or boxed JPEG 2000 codestream's header and check that it is complete.

    Parameters
    ----------
    data : bytes-like
        What GetImageFrame returned.

    Returns
    -------
    CodestreamInfo

    Raises
    ------
    CodestreamError
        Unknown signature, malformed markers, or (``truncated=True``) a stream that ends early: a box or
        tile-part longer than the bytes, or no EOC marker where the last tile-part ends.
    """
    view = memoryview(data).cast("B")
    boxed = bytes(view[:12]) == JP2_SIGNATURE
    stream = _codestream_box(view) if boxed else view
    if bytes(stream[:2]) != b"\xff\x4f":
        raise CodestreamError("not a JPEG 2000 codestream: no SOC marker (expected FF4F or a JP2/JPH signature box)")
    return _read_main_header(stream, boxed)


def _codestream_box(view: memoryview) -> memoryview:
    """Return the contents of the first ``jp2c`` box of a JP2-family file."""
    pos = 0
    while pos + 8 <= len(view):
        length, box_type = struct.unpack_from(">I4s", view, pos)
        header = 8
        if length == 1:
            if pos + 16 > len(view):
                raise CodestreamError("JP2 box header cut short", truncated=True)
            (length,) = struct.unpack_from(">Q", view, pos + 8)
            header = 16
        elif length == 0:
            length = len(view) - pos
        if length < header:
            raise CodestreamError(f"JP2 box at byte {pos} has an invalid length {length}")
        if pos + length > len(view):
            raise CodestreamError(
                f"JP2 box '{box_type.decode('latin-1')}' at byte {pos} declares {length} bytes, "
                f"only {len(view) - pos} present",
                truncated=True,
            )
        if box_type == b"jp2c":
            return view[pos + header : pos + length]
        pos += length
    raise CodestreamError("JP2 file has no contiguous codestream (jp2c) box", truncated=pos < len(view))


def _u16(view: memoryview, pos: int) -> int:
    if pos + 2 > len(view):
        raise CodestreamError(f"codestream ends inside a marker at byte {pos}", truncated=True)
    return int.from_bytes(view[pos : pos + 2], "big")


def _read_main_header(view: memoryview, boxed: bool) -> CodestreamInfo:
    size = len(view)
    pos = 2
    if _u16(view, pos) != _SIZ:
        raise CodestreamError("SIZ marker does not follow SOC")
    lsiz = _u16(view, pos + 2)
    if lsiz < 41:  # the fixed fields plus one component
        raise CodestreamError(f"SIZ marker has an invalid length {lsiz}")
    if pos + 2 + lsiz > size:
        raise CodestreamError("SIZ marker segment cut short", truncated=True)
    rsiz, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz = struct.unpack_from(">HIIIIIIII", view, pos + 4)
    (csiz,) = struct.unpack_from(">H", view, pos + 38)
    _check_tile_grid((xosiz, yosiz), (xtsiz, ytsiz), (xtosiz, ytosiz))
    if csiz < 1 or lsiz != 38 + 3 * csiz:
        raise CodestreamError(f"SIZ marker has {csiz} components but length {lsiz}")
    ssiz = [view[pos + 40 + 3 * c] for c in range(csiz)]
    subsampling = [(view[pos + 41 + 3 * c], view[pos + 42 + 3 * c]) for c in range(csiz)]
    if len(set(ssiz)) != 1:
        raise CodestreamError("components differ in precision or signedness; the IFRC layout is undefined for that")
    if any(s != (1, 1) for s in subsampling):
        raise CodestreamError("subsampled components; the IFRC layout is undefined for that")
    precision = (ssiz[0] & 0x7F) + 1
    if precision > 32 or xsiz <= xosiz or ysiz <= yosiz:
        raise CodestreamError(f"SIZ marker describes no valid image (precision {precision})")
    has_cap = False
    pos += 2 + lsiz
    # Main header: marker segments up to the first tile-part.
    while True:
        marker = _u16(view, pos)
        if marker == _SOT:
            break
        if marker < 0xFF00 or marker in _NO_LENGTH:
            raise CodestreamError(f"unexpected marker {marker:04X} in the main header at byte {pos}")
        has_cap = has_cap or marker == _CAP
        length = _u16(view, pos + 2)
        if length < 2:
            raise CodestreamError(f"marker {marker:04X} at byte {pos} has an invalid length {length}")
        if marker == _COD:
            _check_cod(view, pos, length)
        pos += 2 + length
    _check_tile_parts(view, pos)
    return CodestreamInfo(
        width=xsiz - xosiz,
        height=ysiz - yosiz,
        components=csiz,
        precision=precision,
        signed=bool(ssiz[0] & 0x80),
        high_throughput=bool(rsiz & _RSIZ_HT) or has_cap,
        boxed=boxed,
    )


def _check_tile_grid(origin: tuple[int, int], tile: tuple[int, int], tile_origin: tuple[int, int]) -> None:
    """ITU-T T.800 A.5.1. OpenJPH divides by the tile size without checking it: a zero tile height killed the
    process with SIGFPE (found by bench.fuzz), so the header is checked before any decoder sees it."""
    for axis in (0, 1):
        if not tile[axis] or tile_origin[axis] > origin[axis] or tile[axis] + tile_origin[axis] <= origin[axis]:
            raise CodestreamError("SIZ marker has an invalid tile grid")


def _check_cod(view: memoryview, pos: int, length: int) -> None:
    """ITU-T T.800 A.6.1: at most 32 decomposition levels, code-blocks of 4 to 1024 samples a side and at most
    4096 samples, so a decoder never sizes buffers or loops from out-of-range values."""
    if length < 12 or pos + 2 + length > len(view):
        raise CodestreamError(f"COD marker at byte {pos} is too short", truncated=pos + 2 + length > len(view))
    levels, xcb, ycb = view[pos + 9], view[pos + 10] & 0x0F, view[pos + 11] & 0x0F
    if levels > 32 or xcb > 8 or ycb > 8 or xcb + ycb > 8:
        raise CodestreamError("COD marker has out-of-range decomposition levels or code-block size")


def _check_tile_parts(view: memoryview, pos: int) -> None:
    """Follow the SOT length chain to the EOC marker; anything short of it is truncation."""
    size = len(view)
    while True:
        marker = _u16(view, pos)
        if marker == _EOC:
            return
        if marker != _SOT:
            raise CodestreamError(f"expected a tile-part (SOT) or EOC marker at byte {pos}, found {marker:04X}")
        if pos + 12 > size:
            raise CodestreamError(f"tile-part header at byte {pos} cut short", truncated=True)
        (psot,) = struct.unpack_from(">I", view, pos + 6)
        if psot == 0:
            # The last tile-part runs to the EOC marker at the very end of the stream.
            if bytes(view[size - 2 : size]) != b"\xff\xd9":
                raise CodestreamError("codestream has no EOC marker: the stream is truncated", truncated=True)
            return
        if psot < 14:
            raise CodestreamError(f"tile-part at byte {pos} has an invalid length {psot}")
        if pos + psot > size:
            raise CodestreamError(
                f"tile-part at byte {pos} declares {psot} bytes, only {size - pos} present: the stream is truncated",
                truncated=True,
            )
        pos += psot
        if pos == size:
            raise CodestreamError("codestream has no EOC marker: the stream is truncated", truncated=True)
