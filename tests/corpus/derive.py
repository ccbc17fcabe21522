"""Files derived in code from real ones, for the classes the data packages lack.

Each derived file keeps its real source's header and pixel values and changes one thing: the transfer syntax
(re-encoded losslessly with pydicom's or imagecodecs' encoders), the pixel layout (PlanarConfiguration 1,
signed 8/32-bit containers, bits above BitsStored) or the geometry (odd-sized binary segmentation frames, so
frames start mid-byte). The manifest names the source of each and what was changed; the real-data table marks
them "derived".
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
JPEG_XL = "1.2.840.10008.1.2.4.112"

_PLACEHOLDER = "1.2.840.10008.1.2.4.100"

Frames = list[npt.NDArray[Any]]


@dataclass(frozen=True)
class Derivation:
    name: str
    source: str
    """A pydicom test file name, or ``<package>/<file>`` in the corpus."""
    note: str
    make: Callable[[Dataset], Dataset]


def _frames(ds: Dataset) -> Frames:
    """The stored values, one array a frame: no colour conversion (YBR stays YBR), no LUTs."""
    return [np.array(f) for f in iter_pixels(ds, raw=True)]


def _fresh_uids(ds: Dataset) -> None:
    """A derived file is a new instance: new SOP Instance UID (so it never collides with its source)."""
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid


def _encapsulated(ds: Dataset, codestreams: list[bytes], syntax: str, **attrs: Any) -> Dataset:
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = UID(syntax)
    for key, value in attrs.items():
        setattr(out, key, value)
    out.PixelData = encapsulate(codestreams)
    out["PixelData"].VR = "OB"
    out["PixelData"].is_undefined_length = True
    _fresh_uids(out)
    return out


def _native(ds: Dataset, frames: Frames, syntax: str = ExplicitVRLittleEndian, **attrs: Any) -> Dataset:
    """Native pixel data from ``frames`` (already in the wanted dtype and, for planar 1, layout)."""
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = UID(syntax)
    for key, value in attrs.items():
        setattr(out, key, value)
    data = b"".join(f.tobytes() for f in frames)
    out.PixelData = data + b"\0" * (len(data) % 2)
    out["PixelData"].VR = "OB" if int(out.BitsAllocated) == 8 else "OW"
    _fresh_uids(out)
    return out


def _htj2k(ds: Dataset, syntax: str, prog_order: str | None = None) -> Dataset:
    kwargs: dict[str, Any] = {"reversible": True, "bitspersample": int(ds.BitsStored)}
    if prog_order:
        kwargs["prog_order"] = prog_order
    return _encapsulated(ds, [bytes(imagecodecs.htj2k_encode(f, **kwargs)) for f in _frames(ds)], syntax)


def _jpeg_lossless(ds: Dataset, predictor: int) -> Dataset:
    bits = int(ds.BitsStored)
    streams = [
        bytes(imagecodecs.jpeg8_encode(f, lossless=True, predictor=predictor, bitspersample=bits)) for f in _frames(ds)
    ]
    return _encapsulated(ds, streams, JPEG_LOSSLESS)


def _jpeg_ls(ds: Dataset, near: int = 0) -> Dataset:
    """JPEG-LS; ``near`` > 0 is near-lossless (.81): each value within ``near`` of the source."""
    streams = [bytes(imagecodecs.jpegls_encode(f, level=near)) for f in _frames(ds)]
    syntax = JPEG_LS_NEAR_LOSSLESS if near else JPEG_LS_LOSSLESS
    extra = {"PlanarConfiguration": 0} if ds.SamplesPerPixel == 3 else {}
    return _encapsulated(ds, streams, syntax, **extra)


def _j2k(ds: Dataset, *, reversible: bool, mct: bool) -> Dataset:
    streams = [
        bytes(
            imagecodecs.jpeg2k_encode(
                f, level=None if reversible else 30, reversible=reversible, mct=mct, codecformat="J2K"
            )
        )
        for f in _frames(ds)
    ]
    return _encapsulated(ds, streams, J2K_LOSSLESS if reversible else J2K)


def _jpeg_baseline(ds: Dataset, subsampling: str) -> Dataset:
    if ds.SamplesPerPixel == 1:
        streams = [bytes(imagecodecs.jpeg8_encode(f, level=90)) for f in _frames(ds)]
        return _encapsulated(ds, streams, JPEG_BASELINE)
    sub = {"444": (1, 1), "422": (2, 1)}[subsampling]
    streams = [
        bytes(imagecodecs.jpeg8_encode(f, level=90, colorspace="RGB", outcolorspace="YCBCR", subsampling=sub))
        for f in _frames(ds)
    ]
    photometric = "YBR_FULL_422" if subsampling == "422" else "YBR_FULL"
    return _encapsulated(ds, streams, JPEG_BASELINE, PhotometricInterpretation=photometric, PlanarConfiguration=0)


def _jpeg_xl(ds: Dataset) -> Dataset:
    # pydicom 3.0 cannot write JPEG XL's UID: the file is written under a placeholder UID of the same length
    # (MPEG2, also encapsulated explicit VR little endian) which derive_all replaces in the file meta.
    return _encapsulated(ds, [bytes(imagecodecs.jpegxl_encode(f, level=100)) for f in _frames(ds)], _PLACEHOLDER)


def _rle(ds: Dataset) -> Dataset:
    out = copy.deepcopy(ds)
    out.compress(RLELossless, encoding_plugin="pydicom")
    _fresh_uids(out)
    return out


def _deflated(ds: Dataset) -> Dataset:
    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    _fresh_uids(out)
    return out


def _planar1(ds: Dataset) -> Dataset:
    return _native(ds, [np.ascontiguousarray(f.transpose(2, 0, 1)) for f in _frames(ds)], PlanarConfiguration=1)


def _signed8(ds: Dataset) -> Dataset:
    frames = [(f.astype(np.int16) - 128).astype(np.int8) for f in _frames(ds)]
    return _native(ds, frames, PixelRepresentation=1)


def _signed32(ds: Dataset, bits_stored: int, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """16-bit signed values widened to a signed 32-bit container; scaled so the top stored bits are used."""
    scale = 1 << (bits_stored - 16)
    dtype = ">i4" if syntax == ExplicitVRBigEndian else "<i4"
    frames = [(f.astype(np.int32) * scale).astype(dtype) for f in _frames(ds)]
    return _native(ds, frames, syntax, BitsAllocated=32, BitsStored=bits_stored, HighBit=bits_stored - 1)


def _junk_above_bits_stored(ds: Dataset) -> Dataset:
    """12 bits stored in 16, with the 4 unused high bits set (as old modalities with overlays in them did)."""
    rng = np.random.default_rng(12)
    frames = [
        ((f.astype(np.int32) & 0x0FFF) | (rng.integers(0, 16, f.shape) << 12)).astype(np.uint16) for f in _frames(ds)
    ]
    return _native(ds, frames, BitsStored=12, HighBit=11, PixelRepresentation=0)


def _odd_seg(ds: Dataset) -> Dataset:
    """A binary SEG whose frames are 7 x 9 = 63 bits: every frame after the first starts mid-byte."""
    arr = ds.pixel_array  # (frames, rows, cols) of 0/1
    rows, cols = 7, 9
    cy, cx = arr.shape[1] // 2, arr.shape[2] // 2
    crops = arr[:, cy : cy + rows, cx : cx + cols].astype(np.uint8)
    crops[:, 0, 0] = 1  # a set bit at each frame's start, so a misaligned split changes the bytes
    bits = np.packbits(crops.reshape(-1), bitorder="little").tobytes()
    out = copy.deepcopy(ds)
    out.Rows, out.Columns = rows, cols
    out.PixelData = bits + b"\0" * (len(bits) % 2)
    out["PixelData"].VR = "OB"
    _fresh_uids(out)
    return out


DERIVATIONS: tuple[Derivation, ...] = (
    Derivation(
        "htj2k_201_MR_small.dcm",
        "MR_small.dcm",
        "re-encoded HTJ2K lossless (.201)",
        lambda d: _htj2k(d, HTJ2K_LOSSLESS),
    ),
    Derivation(
        "htj2k_201_SC_rgb_16bit.dcm",
        "pydicom-data/SC_rgb_16bit.dcm",
        "re-encoded HTJ2K lossless (.201)",
        lambda d: _htj2k(d, HTJ2K_LOSSLESS),
    ),
    Derivation(
        "htj2k_202_CT_small.dcm",
        "CT_small.dcm",
        "re-encoded HTJ2K lossless RPCL (.202)",
        lambda d: _htj2k(d, HTJ2K_RPCL, "RPCL"),
    ),
    Derivation(
        "htj2k_202_emri_small.dcm",
        "pydicom-data/emri_small.dcm",
        "re-encoded HTJ2K lossless RPCL (.202)",
        lambda d: _htj2k(d, HTJ2K_RPCL, "RPCL"),
    ),
    Derivation(
        "htj2k_203_SC_rgb_2frame.dcm",
        "pydicom-data/SC_rgb_2frame.dcm",
        "re-encoded HTJ2K (.203, retained)",
        lambda d: _htj2k(d, HTJ2K),
    ),
    Derivation(
        "htj2k_203_US1.dcm",
        "pydicom-data/US1_UNCR.dcm",
        "re-encoded HTJ2K (.203, retained)",
        lambda d: _htj2k(d, HTJ2K),
    ),
    Derivation(
        "jpeg_57_p6_vlut_04.dcm",
        "pydicom-data/vlut_04.dcm",
        "re-encoded JPEG lossless, predictor 6 (.57)",
        lambda d: _jpeg_lossless(d, 6),
    ),
    Derivation(
        "jpeg_57_p7_emri_small.dcm",
        "pydicom-data/emri_small.dcm",
        "re-encoded JPEG lossless, predictor 7 (.57)",
        lambda d: _jpeg_lossless(d, 7),
    ),
    Derivation("jpegls_80_SC_rgb.dcm", "pydicom-data/SC_rgb.dcm", "re-encoded JPEG-LS lossless (.80)", _jpeg_ls),
    Derivation("jpegls_80_vlut_04.dcm", "pydicom-data/vlut_04.dcm", "re-encoded JPEG-LS lossless (.80)", _jpeg_ls),
    Derivation(
        "jpegls_81_near2_vlut_04.dcm",
        "pydicom-data/vlut_04.dcm",
        "re-encoded JPEG-LS near-lossless, NEAR=2 (.81)",
        lambda d: _jpeg_ls(d, near=2),
    ),
    Derivation(
        "jpegls_81_near3_SC_rgb_2frame.dcm",
        "pydicom-data/SC_rgb_2frame.dcm",
        "re-encoded JPEG-LS near-lossless, NEAR=3 (.81)",
        lambda d: _jpeg_ls(d, near=3),
    ),
    Derivation(
        "j2k_90_rgb_nomct_SC_rgb.dcm",
        "pydicom-data/SC_rgb.dcm",
        "re-encoded JPEG 2000 lossless, no MCT (.90)",
        lambda d: _j2k(d, reversible=True, mct=False),
    ),
    Derivation(
        "j2k_90_CT_small.dcm",
        "CT_small.dcm",
        "re-encoded JPEG 2000 lossless (.90)",
        lambda d: _j2k(d, reversible=True, mct=False),
    ),
    Derivation(
        "j2k_91_emri_small.dcm",
        "pydicom-data/emri_small.dcm",
        "re-encoded JPEG 2000 lossy (.91, retained)",
        lambda d: _j2k(d, reversible=False, mct=False),
    ),
    Derivation(
        "jpeg_50_vlut_04.dcm",
        "pydicom-data/vlut_04.dcm",
        "re-encoded JPEG baseline (.50, retained)",
        lambda d: _jpeg_baseline(d, "444"),
    ),
    Derivation(
        "jpeg_50_422_SC_rgb_2frame.dcm",
        "pydicom-data/SC_rgb_2frame.dcm",
        "re-encoded JPEG baseline 4:2:2 (.50)",
        lambda d: _jpeg_baseline(d, "422"),
    ),
    Derivation(
        "jpegxl_112_SC_rgb.dcm",
        "pydicom-data/SC_rgb.dcm",
        "re-encoded JPEG XL (.112, not importable as frames)",
        _jpeg_xl,
    ),
    Derivation("rle_vlut_04.dcm", "pydicom-data/vlut_04.dcm", "re-encoded RLE lossless", _rle),
    Derivation("rle_ybr_full.dcm", "pydicom-data/SC_ybr_full_uncompressed.dcm", "re-encoded RLE lossless", _rle),
    Derivation("deflate_SC_rgb.dcm", "pydicom-data/SC_rgb.dcm", "rewritten deflated explicit VR LE", _deflated),
    Derivation("deflate_CT_small.dcm", "CT_small.dcm", "rewritten deflated explicit VR LE", _deflated),
    Derivation("deflate_emri_small.dcm", "pydicom-data/emri_small.dcm", "rewritten deflated explicit VR LE", _deflated),
    Derivation("planar1_SC_rgb_16bit.dcm", "pydicom-data/SC_rgb_16bit.dcm", "PlanarConfiguration 1", _planar1),
    Derivation(
        "planar1_SC_ybr_full.dcm", "pydicom-data/SC_ybr_full_uncompressed.dcm", "PlanarConfiguration 1", _planar1
    ),
    Derivation("planar1_SC_rgb_2frame.dcm", "pydicom-data/SC_rgb_2frame.dcm", "PlanarConfiguration 1", _planar1),
    Derivation("signed8_vlut_04.dcm", "pydicom-data/vlut_04.dcm", "values - 128 as signed 8-bit", _signed8),
    Derivation(
        "signed32_CT_small.dcm", "CT_small.dcm", "widened to signed 32-bit (x 65536)", lambda d: _signed32(d, 32)
    ),
    Derivation(
        "signed24in32_CT_small.dcm",
        "CT_small.dcm",
        "widened to signed 24-in-32-bit (x 256)",
        lambda d: _signed32(d, 24),
    ),
    Derivation(
        "signed32_big_endian_CT_small.dcm",
        "CT_small.dcm",
        "signed 32-bit, explicit VR big endian",
        lambda d: _signed32(d, 32, ExplicitVRBigEndian),
    ),
    Derivation(
        "junk_high_bits_MR_small.dcm",
        "MR_small.dcm",
        "12 of 16 bits stored, unused high bits set",
        _junk_above_bits_stored,
    ),
    Derivation(
        "seg_odd_7x9_liver.dcm", "pydicom-data/liver.dcm", "SEG cropped to 7 x 9: frames start mid-byte", _odd_seg
    ),
)


def _source_path(corpus: Path, source: str) -> Path:
    return corpus / source if "/" in source else PYDICOM_FILES / source


def derive_all(corpus: Path) -> list[dict[str, str]]:
    """Write every derived file into ``corpus/derived/`` and return their manifest entries."""
    out = corpus / "derived"
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for d in DERIVATIONS:
        ds = pydicom.dcmread(_source_path(corpus, d.source))
        derived = d.make(ds)
        pydicom.dcmwrite(out / d.name, derived, enforce_file_format=True)
        if d.make is _jpeg_xl:
            data = (out / d.name).read_bytes()
            meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length element
            head = data[:meta_end].replace(_PLACEHOLDER.encode() + b"\0", JPEG_XL.encode() + b"\0")
            (out / d.name).write_bytes(head + data[meta_end:])
        entries.append({"file": f"derived/{d.name}", "source": f"derived from {d.source}", "note": d.note})
    return entries
