"""The codec layer reproduces HealthImaging's IFRC bit-exactly, and never passes a damaged stream."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahi_verify.codestream import CodestreamError, read_codestream_info
from ahi_verify.ifrc import FrameDecodeError, crc32, decoded_checksum, raw_checksum
from ahi_verify.syntax import Rule
from tests.support import CT1_UNC_CRC


def reference_ifrc(pixels: npt.NDArray[Any]) -> int:
    """The IFRC computed the plain way, independent of the verifier: little-endian bytes through zlib."""
    return zlib.crc32(np.asarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes())


def ramp(shape: tuple[int, ...], dtype: Any, low: int, high: int, seed: int = 0) -> npt.NDArray[Any]:
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)


CASES = [
    pytest.param(ramp((64, 48), np.uint8, 0, 255), 8, False, id="uint8"),
    pytest.param(ramp((64, 48), np.int8, -128, 127), 8, True, id="int8-negative"),
    pytest.param(ramp((61, 37), np.uint16, 0, 4095), 16, False, id="12-bit-in-uint16"),
    pytest.param(ramp((64, 64), np.uint16, 0, 65535), 16, False, id="uint16-full-range"),
    pytest.param(ramp((64, 64), np.int16, -32768, 32767), 16, True, id="int16-negative"),
    pytest.param(ramp((33, 17, 3), np.uint8, 0, 255), 8, False, id="rgb-interleaved-odd-size"),
    pytest.param(ramp((1, 1), np.uint16, 0, 65535), 16, False, id="one-pixel"),
    pytest.param(ramp((3, 1021), np.int16, -2048, 2047), 16, True, id="wide-strip"),
]


@pytest.mark.parametrize(("pixels", "precision", "signed"), CASES)
def test_htj2k_frame_checksum_is_bit_exact(pixels: npt.NDArray[Any], precision: int, signed: bool) -> None:
    # GIVEN a lossless HTJ2K frame of known pixels
    blob = imagecodecs.htj2k_encode(pixels, reversible=True)
    # WHEN the verifier computes its IFRC
    result = decoded_checksum(bytes(blob), "image/jph")
    # THEN it equals the plain CRC-32 of the little-endian pixels, and the header facts are reported
    assert result.crc == reference_ifrc(pixels)
    assert result.rule is Rule.DECODED_HTJ2K
    assert (result.height, result.width) == pixels.shape[:2]
    assert result.components == (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert (result.precision, result.signed) == (precision, signed)


def test_rgb_is_hashed_interleaved_not_planar() -> None:
    # GIVEN an RGB frame whose planar and interleaved byte orders differ
    pixels = ramp((16, 16, 3), np.uint8, 0, 255, seed=3)
    blob = bytes(imagecodecs.htj2k_encode(pixels, reversible=True))
    planar = zlib.crc32(np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes())
    # WHEN verified THEN the interleaved layout is what is hashed
    assert decoded_checksum(blob, "image/jph").crc == reference_ifrc(pixels) != planar


@pytest.mark.parametrize("bits", [10, 12], ids=["10-bit", "12-bit"])
def test_classic_jpeg2000_with_its_own_precision(bits: int) -> None:
    # GIVEN a classic JPEG 2000 (JP2-boxed) frame whose SIZ precision is below its 16-bit container
    pixels = ramp((40, 24), np.uint16, 0, 2**bits - 1)
    blob = bytes(imagecodecs.jpeg2k_encode(pixels, level=0, reversible=True, bitspersample=bits))
    # WHEN verified as image/j2c THEN OpenJPEG decodes it and the checksum uses 2-byte samples
    result = decoded_checksum(blob, "image/j2c")
    assert result.rule is Rule.DECODED_J2K
    assert result.precision == bits
    assert result.crc == reference_ifrc(pixels)


def test_classic_jpeg2000_served_as_jph_falls_back_to_openjpeg() -> None:
    pixels = ramp((20, 20), np.uint8, 0, 255)
    blob = bytes(imagecodecs.jpeg2k_encode(pixels, level=0, reversible=True, codecformat="J2K"))
    result = decoded_checksum(blob, "image/jph")
    assert (result.rule, result.crc) == (Rule.DECODED_J2K, reference_ifrc(pixels))


def test_ct1_unc_reproduces_the_published_checksum(shared_fixtures: Path) -> None:
    # GIVEN the pixel data of CT1_UNC (signed 16-bit) encoded as HealthImaging stores it
    ds = pydicom.dcmread(shared_fixtures / "CT1_UNC")
    assert zlib.crc32(ds.PixelData) == CT1_UNC_CRC
    blob = bytes(imagecodecs.htj2k_encode(ds.pixel_array, reversible=True))
    # WHEN verified THEN the IFRC is the value HealthImaging reports for the file
    result = decoded_checksum(blob, "image/jph")
    assert result.crc == CT1_UNC_CRC
    assert result.signed is True


def test_large_frame_3328x4096() -> None:
    # GIVEN a mammography-sized 12-bit frame
    yy, xx = np.mgrid[0:3328, 0:4096]
    pixels = ((xx * 3 + yy * 5) % 4096).astype(np.uint16)
    blob = bytes(imagecodecs.htj2k_encode(pixels, reversible=True))
    # WHEN verified THEN the checksum is bit-exact
    assert decoded_checksum(blob, "image/jph").crc == reference_ifrc(pixels)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    samples=st.sampled_from([1, 3]),
    dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.int16]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_independent_reference(rows: int, cols: int, samples: int, dtype: Any, seed: int) -> None:
    # GIVEN random pixels of a random shape, dtype and signedness
    info = np.iinfo(dtype)
    shape = (rows, cols, samples) if samples > 1 else (rows, cols)
    pixels = ramp(shape, dtype, int(info.min), int(info.max), seed)
    # WHEN encoded losslessly and verified THEN the IFRC equals the numpy reference
    blob = bytes(imagecodecs.htj2k_encode(pixels, reversible=True))
    assert decoded_checksum(blob, "image/jph").crc == reference_ifrc(pixels)


def test_fast_crc32_equals_zlib() -> None:
    rng = np.random.default_rng(7)
    for size in (0, 1, 7, 4096, 1_000_003):
        data = rng.integers(0, 255, size=size, dtype=np.uint8)
        assert crc32(data) == zlib.crc32(data.tobytes())
    assert raw_checksum(b"abc").crc == zlib.crc32(b"abc")


def _ct_blob(shared_fixtures: Path) -> bytes:
    return bytes(imagecodecs.htj2k_encode(pydicom.dcmread(shared_fixtures / "CT1_UNC").pixel_array, reversible=True))


@pytest.mark.parametrize("keep", [0.99, 0.9, 0.5, 0.1], ids=lambda k: f"keep-{int(k * 100)}pct")
def test_truncated_stream_is_reported_truncated_never_checksummed(shared_fixtures: Path, keep: float) -> None:
    # GIVEN an HTJ2K stream cut short (OpenJPH alone would decode a partial image without complaint)
    blob = _ct_blob(shared_fixtures)
    cut = blob[: int(len(blob) * keep)]
    if keep >= 0.5:  # the hazard this guards against: a partial image, no exception
        assert imagecodecs.htj2k_decode(cut).shape == (512, 512)
    # WHEN verified THEN it is rejected as truncated
    with pytest.raises(FrameDecodeError) as caught:
        decoded_checksum(cut, "image/jph")
    assert caught.value.truncated


def test_stream_missing_only_its_eoc_marker_is_truncated(shared_fixtures: Path) -> None:
    with pytest.raises(FrameDecodeError, match="EOC") as caught:
        decoded_checksum(_ct_blob(shared_fixtures)[:-2], "image/jph")
    assert caught.value.truncated


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xd8\xff\xe0 jpeg", id="jpeg"),
        pytest.param(b"garbage" * 10, id="garbage"),
        pytest.param(b"\xff\x4f\xff\x51\x00", id="soc-siz-cut"),
    ],
)
def test_not_a_codestream_is_a_clear_error(blob: bytes) -> None:
    with pytest.raises(FrameDecodeError):
        decoded_checksum(blob, "image/jph")


def test_codestream_info_reads_siz(shared_fixtures: Path) -> None:
    info = read_codestream_info(_ct_blob(shared_fixtures))
    assert (info.width, info.height, info.components, info.precision, info.signed) == (512, 512, 1, 16, True)
    assert info.high_throughput
    assert not info.boxed


def test_boxed_codestream_is_found_and_checked() -> None:
    pixels = ramp((16, 16), np.uint8, 0, 255)
    blob = bytes(imagecodecs.jpeg2k_encode(pixels, level=0, reversible=True))  # JP2 file
    info = read_codestream_info(blob)
    assert info.boxed
    assert not info.high_throughput
    with pytest.raises(CodestreamError) as caught:
        read_codestream_info(blob[:-5])
    assert caught.value.truncated


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_flipped_bytes_never_match(data: st.DataObject) -> None:
    # GIVEN a valid frame and a copy with 1-4 bytes changed anywhere after the SIZ marker
    pixels = ramp((24, 24), np.int16, -300, 300, seed=11)
    blob = bytearray(imagecodecs.htj2k_encode(pixels, reversible=True))
    expected = reference_ifrc(pixels)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(4, len(blob) - 1))
        blob[pos] ^= data.draw(st.integers(1, 255))
    # WHEN verified THEN the result is an error or a different checksum, never the original one,
    # unless the change left the decoded pixels identical (bytes the decoder ignores)
    try:
        result = decoded_checksum(bytes(blob), "image/jph")
    except FrameDecodeError:
        return
    if result.crc == expected:
        decode = imagecodecs.htj2k_decode if result.rule is Rule.DECODED_HTJ2K else imagecodecs.jpeg2k_decode
        assert np.array_equal(decode(bytes(blob)), pixels)


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        pytest.param(8 + 20, 0, id="zero-tile-width"),  # XTsiz
        pytest.param(8 + 24, 0, id="zero-tile-height"),  # YTsiz: OpenJPH died with SIGFPE on this
        pytest.param(8 + 28, 1, id="tile-origin-after-image-origin"),  # XTOsiz > XOsiz
    ],
)
def test_invalid_tile_grid_is_rejected_before_any_decoder_runs(offset: int, value: int) -> None:
    # GIVEN a valid HTJ2K stream whose SIZ tile grid is made invalid (bench.fuzz found the zero tile height)
    blob = bytearray(imagecodecs.htj2k_encode(ramp((9, 6), np.uint8, 0, 255), reversible=True))
    blob[offset - 4 : offset] = value.to_bytes(4, "big")
    # WHEN verified in a child process (a regression would kill the process, not raise)
    script = (
        "import sys; from ahi_verify.ifrc import decoded_checksum, FrameDecodeError\n"
        "try:\n    decoded_checksum(sys.stdin.buffer.read(), 'image/jph')\n"
        "except FrameDecodeError as e:\n    print('rejected:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=bytes(blob), capture_output=True, timeout=60, check=False
    )
    # THEN the codestream reader rejects it cleanly
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert b"rejected: SIZ marker has an invalid tile grid" in done.stdout


def test_out_of_range_code_blocks_are_rejected() -> None:
    blob = bytearray(imagecodecs.htj2k_encode(ramp((9, 6), np.uint8, 0, 255), reversible=True))
    cod = blob.index(b"\xff\x52")
    blob[cod + 10] = 9  # code-block width exponent offset above 8
    with pytest.raises(FrameDecodeError, match="code-block"):
        decoded_checksum(bytes(blob), "image/jph")
