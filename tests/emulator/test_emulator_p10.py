"""P10 -> instance decisions and pixel normalisation (no S3, no server)."""

from __future__ import annotations

import io
import zlib

import imagecodecs
import numpy as np
import pytest
from pydicom.pixels.utils import iter_pixels

from ahi_emulator.metadata import prepare_import_instance
from ahi_emulator.p10 import (
    TRANSCODING_EXCEPTION,
    UNSUPPORTED_TRANSFER_SYNTAX,
    P10Error,
    normalise_pixels,
    read_p10,
)
from tests.emulator.p10_factory import (
    DEFLATED_LE,
    EXPLICIT_LE,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    RLE_LOSSLESS,
    SEGMENTATION,
    bundled,
    expected_frames,
    float_p10,
    make_p10,
    packed_segmentation_frames,
    read,
    segmentation_bits,
    segmentation_p10,
    stored_segmentation,
)

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------ normalisation


def test_normalise_masks_unsigned_bits_above_bits_stored() -> None:
    """GIVEN uint16 values with garbage above 12 bits WHEN normalised THEN only the low 12 bits remain."""
    arr = np.array([[0xF123, 0x0FFF, 0x1000]], dtype=np.uint16)

    out = normalise_pixels(arr, bits_allocated=16, bits_stored=12, pixel_representation=0)

    assert out.dtype == np.uint16
    assert out.tolist() == [[0x123, 0xFFF, 0]]


def test_normalise_sign_extends_from_bit_stored_minus_one() -> None:
    """GIVEN raw 12-bit two's complement patterns (no sign in the high bits) WHEN normalised as signed
    THEN values are sign-extended into int16; an unsigned container of signed data is reinterpreted."""
    raw = np.array([[0x0FFB, 0x07FF, 0x0800, 0]], dtype=np.uint16)

    out = normalise_pixels(raw, bits_allocated=16, bits_stored=12, pixel_representation=1)

    assert out.dtype == np.int16
    assert out.tolist() == [[-5, 2047, -2048, 0]]


def test_normalise_big_endian_and_idempotent() -> None:
    """GIVEN a big-endian int16 frame WHEN normalised (twice) THEN a native int16 array with equal values."""
    arr = np.array([[-300, 5, 32767]], dtype=">i2")

    once = normalise_pixels(arr, bits_allocated=16, bits_stored=16, pixel_representation=1)
    twice = normalise_pixels(once, bits_allocated=16, bits_stored=16, pixel_representation=1)

    assert once.dtype == np.dtype("int16")
    assert once.dtype.isnative
    assert once.tolist() == [[-300, 5, 32767]]
    assert np.array_equal(once, twice)


def test_normalise_rejects_float() -> None:
    """GIVEN float pixels WHEN normalised THEN P10Error."""
    with pytest.raises(P10Error, match="not integers"):
        normalise_pixels(np.zeros((2, 2), np.float32), bits_allocated=32, bits_stored=32, pixel_representation=0)


def test_jpeg2000_precision_above_bits_stored_is_masked_where_pydicom_is_not() -> None:
    """GIVEN a JPEG 2000 lossless frame of precision 16 holding bits above BitsStored 12
    WHEN read THEN pydicom's raw array keeps them but the import's frame has them masked off."""
    clean = RNG.integers(0, 4096, (8, 10)).astype(np.uint16)
    dirty = clean | 0xA000
    codestream = bytes(imagecodecs.jpeg2k_encode(dirty, level=0, codecformat="j2k", reversible=True))
    data = make_p10("1.2.840.10008.1.2.4.90", frames=[codestream], bits_stored=12)

    pydicom_raw = next(iter_pixels(read(data), raw=True))
    imported = read_p10(data)

    assert np.array_equal(pydicom_raw, dirty)  # pydicom 3.0 leaves them (documented in ahi_emulator.p10)
    assert imported.spec is not None
    assert np.array_equal(imported.spec.frames[0], clean)


def test_jpeg_ls_signed_is_sign_extended_where_pydicom_is_not() -> None:
    """GIVEN a JPEG-LS frame of raw 12-bit two's complement patterns in a 16-bit codestream
    WHEN read as PixelRepresentation 1 THEN the import sign-extends (pydicom's correction uses the
    codestream precision and leaves 4091 for -5)."""
    values = np.array([[-5, 2047, -2048, 0]], dtype=np.int16)
    raw = values.view(np.uint16) & 0x0FFF
    data = make_p10(
        "1.2.840.10008.1.2.4.80",
        rows=1,
        cols=4,
        bits_stored=12,
        pixel_representation=1,
        frames=[bytes(imagecodecs.jpegls_encode(raw))],
    )

    imported = read_p10(data)

    assert next(iter_pixels(read(data), raw=True)).tolist() == [[4091, 2047, 2048, 0]]
    assert imported.spec is not None
    assert imported.spec.frames[0].tolist() == values.tolist()


# ------------------------------------------------------------------------------------------ decisions


def test_htj2k_lossless_source_is_transcoded_and_htj2k_203_is_retained() -> None:
    """GIVEN one HTJ2K codestream labelled .201 and .203 WHEN read
    THEN .201 is decoded (no stored syntax) and .203 keeps the codestream bytes as its frame."""
    arr = RNG.integers(0, 4096, (8, 10)).astype(np.uint16)
    codestream = bytes(imagecodecs.htj2k_encode(arr, reversible=True))

    transcoded = read_p10(make_p10("1.2.840.10008.1.2.4.201", frames=[codestream], bits_stored=12))
    retained = read_p10(make_p10("1.2.840.10008.1.2.4.203", frames=[codestream], bits_stored=12))

    assert transcoded.spec is not None
    assert transcoded.spec.stored_transfer_syntax_uid is None
    assert np.array_equal(transcoded.spec.frames[0], arr)
    assert retained.spec is not None
    assert retained.spec.stored_transfer_syntax_uid == "1.2.840.10008.1.2.4.203"
    assert list(retained.spec.encoded_frames or []) == [codestream]


def test_jpeg_lossless_57_is_transcoded() -> None:
    """GIVEN a JPEG lossless (.57) 12-bit frame WHEN read THEN transcoded with the decoded values."""
    arr = RNG.integers(0, 4096, (8, 10)).astype(np.uint16)
    data = make_p10(
        "1.2.840.10008.1.2.4.57", frames=[bytes(imagecodecs.ljpeg_encode(arr, bitspersample=12))], bits_stored=12
    )

    imported = read_p10(data)

    assert imported.spec is not None
    assert imported.spec.stored_transfer_syntax_uid is None
    assert np.array_equal(imported.spec.frames[0], arr)


def test_video_syntax_is_a_blob_with_warning_45344() -> None:
    """GIVEN an MPEG2 (.4.100) file WHEN read THEN imported with warning 45344 and the fragments as one blob."""
    stream = b"\x00\x00\x01\xb3" + bytes(range(60))
    data = make_p10(
        "1.2.840.10008.1.2.4.100",
        rows=4,
        cols=4,
        bits_allocated=8,
        samples=3,
        photometric="YBR_PARTIAL_420",
        frames=[stream],
    )

    imported = read_p10(data)

    assert imported.warning is not None
    assert imported.warning.code == UNSUPPORTED_TRANSFER_SYNTAX == 45344
    assert imported.spec is not None
    assert imported.spec.stored_transfer_syntax_uid == "1.2.840.10008.1.2.4.100"
    assert list(imported.spec.encoded_frames or []) == [stream]


def test_undecodable_transcoded_syntax_is_a_blob_with_warning_45312() -> None:
    """GIVEN a JPEG lossless (.70) file whose frame is garbage WHEN read THEN warning 45312 and a blob."""
    garbage = b"\xff\xd8" + bytes(40)
    imported = read_p10(make_p10("1.2.840.10008.1.2.4.70", frames=[garbage], bits_allocated=8))

    assert imported.warning is not None
    assert imported.warning.code == TRANSCODING_EXCEPTION == 45312
    assert imported.warning.to_json()["warning_reason_code"] == 45312
    assert imported.spec is not None
    assert list(imported.spec.encoded_frames or []) == [garbage]


def test_binary_segmentation_frames_are_packed_from_byte_boundaries() -> None:
    """GIVEN a native 2-frame 5x5 binary segmentation (frame 2 starts mid-byte) WHEN read
    THEN stored syntax is explicit LE and each frame is its own 25 bits packed LSB-first."""
    bits = RNG.integers(0, 2, 50).astype(np.uint8)
    native = np.packbits(bits, bitorder="little").tobytes()
    data = make_p10(
        EXPLICIT_LE,
        rows=5,
        cols=5,
        bits_allocated=1,
        native=native,
        number_of_frames=2,
        sop_class=SEGMENTATION,
    )

    imported = read_p10(data)

    assert imported.spec is not None
    assert imported.spec.stored_transfer_syntax_uid == EXPLICIT_LE
    assert list(imported.spec.encoded_frames or []) == packed_segmentation_frames(read(data))
    assert len(imported.spec.encoded_frames or []) == 2
    assert imported.spec.encoded_frames is not None
    assert len(imported.spec.encoded_frames[0]) == 4


def test_instance_without_pixel_data_is_metadata_only() -> None:
    """GIVEN an RT plan (no PixelData) WHEN read THEN no frames, and the Instance DICOM keeps its source syntax."""
    imported = read_p10(bundled("rtplan.dcm").read_bytes())

    assert imported.spec is None
    assert imported.instance["TransferSyntaxUID"] == "1.2.840.10008.1.2"


def test_patient_name_is_a_string_and_levels_are_split() -> None:
    """GIVEN CT_small.dcm WHEN read THEN Patient/Study/Series/Instance attributes land at their levels."""
    ds = read(bundled("CT_small.dcm"))

    imported = read_p10(bundled("CT_small.dcm").read_bytes())

    assert imported.patient["PatientName"] == str(ds.PatientName)
    assert imported.study["StudyInstanceUID"] == ds.StudyInstanceUID
    assert imported.series["SeriesInstanceUID"] == ds.SeriesInstanceUID
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        assert imported.instance[keyword] == ds[keyword].value
    assert imported.spec is not None
    assert np.array_equal(imported.spec.frames[0], expected_frames(ds)[0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(lambda: b"plain text, not DICOM", "not a DICOM P10 file", id="not-dicom"),
        pytest.param(
            lambda: bundled("meta_missing_tsyntax.dcm").read_bytes(),
            "DICOM attribute TransferSyntaxUID does not exist",
            id="no-transfer-syntax",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, native=bytes(160), drop=("SOPInstanceUID",)),
            "DICOM attribute SOPInstanceUID does not exist",
            id="no-sop-uid",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, drop=("StudyInstanceUID",)),
            "DICOM attribute StudyInstanceUID does not exist",
            id="no-study-uid",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, drop=("SeriesInstanceUID",)),
            "DICOM attribute SeriesInstanceUID does not exist",
            id="no-series-uid",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, native=bytes(160), drop=("Rows",)),
            "DICOM attribute Rows does not exist",
            id="no-rows",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, native=bytes(10), bits_allocated=1),
            "BitsAllocated 1 is supported only for binary Segmentation",
            id="1-bit-not-segmentation",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, native=bytes(120), bits_allocated=12),
            "BitsAllocated 12 is not supported",
            id="12-bit-container",
        ),
        pytest.param(
            lambda: make_p10(EXPLICIT_LE, native=bytes(160), samples=2, photometric="RGB"),
            "SamplesPerPixel 2 is not supported",
            id="two-samples",
        ),
    ],
)
def test_failures_name_the_problem_without_patient_data(data: object, message: str) -> None:
    """GIVEN a file in a FAILURE row of the decision table WHEN read THEN P10Error with a fixed message
    that names the attribute and never the patient."""
    assert callable(data)
    with pytest.raises(P10Error) as caught:
        read_p10(data())

    assert message in str(caught.value)
    assert "Synthetic" not in str(caught.value)
    assert "SYN-1" not in str(caught.value)


# ------------------------------------------------------- binary segmentation in any syntax, BA > BS, float


@pytest.mark.parametrize(
    ("syntax", "rle_layout"),
    [
        pytest.param(EXPLICIT_LE, "packed", id="native"),
        pytest.param(DEFLATED_LE, "packed", id="deflated"),
        pytest.param(RLE_LOSSLESS, "packed", id="rle-packed-bits"),
        pytest.param(RLE_LOSSLESS, "bytes", id="rle-byte-a-pixel"),
        pytest.param(J2K_LOSSLESS, "packed", id="j2k"),
        pytest.param(HTJ2K_LOSSLESS, "packed", id="htj2k"),
    ],
)
def test_binary_segmentation_in_any_syntax_is_stored_as_packed_frames(syntax: str, rle_layout: str) -> None:
    """GIVEN a 3-frame 37x41 binary segmentation (frames 2 and 3 start mid-byte) in `syntax` WHEN read
    THEN no warning, stored as .1.2.1 and each frame is its own pixels packed LSB-first (not a blob)."""
    bits = segmentation_bits()

    imported = read_p10(segmentation_p10(bits, syntax, rle_layout=rle_layout))

    assert imported.warning is None
    assert imported.spec is not None
    assert imported.spec.stored_transfer_syntax_uid == EXPLICIT_LE
    assert list(imported.spec.encoded_frames or []) == stored_segmentation(bits)


def test_binary_segmentation_rle_that_does_not_decode_is_a_blob_with_warning_45312() -> None:
    """GIVEN an RLE segmentation whose segments hold fewer bits than a frame WHEN read THEN 45312, a blob."""
    short = segmentation_bits(rows=4, cols=4)
    data = segmentation_p10(short, RLE_LOSSLESS)
    ds = read(data)
    ds.Rows, ds.Columns = 37, 41
    buffer = io.BytesIO()
    ds.save_as(buffer)

    imported = read_p10(buffer.getvalue())

    assert imported.warning is not None
    assert imported.warning.code == TRANSCODING_EXCEPTION


@pytest.mark.parametrize(
    ("dtype", "bits_stored", "signed", "narrow"),
    [
        pytest.param(np.uint16, 8, 0, np.uint8, id="ba16-bs8"),
        pytest.param(np.uint32, 16, 0, np.uint16, id="ba32-bs16"),
        pytest.param(np.uint16, 12, 1, np.int16, id="ba16-bs12-signed"),
        pytest.param(np.uint32, 24, 1, np.int32, id="ba32-bs24-signed-3-widened-to-4"),
    ],
)
def test_bits_allocated_wider_than_bits_stored_is_imported_at_bits_stored_precision(
    dtype: type, bits_stored: int, signed: int, narrow: type
) -> None:
    """GIVEN a native file whose BitsAllocated container is wider than BitsStored needs, with garbage above
    BitsStored WHEN imported THEN no warning; the HTJ2K precision is BitsStored, the frame decodes to the
    values in ceil(BitsStored/8) bytes and the checksum is theirs."""
    rng = np.random.default_rng(bits_stored)
    low = -(1 << (bits_stored - 1)) if signed else 0
    high = (1 << (bits_stored - 1)) if signed else (1 << bits_stored)
    values = rng.integers(low, high, size=(6, 5)).astype(np.int64)
    container = np.dtype(dtype).itemsize * 8
    garbage = np.int64(0x5A) << bits_stored
    raw = ((values & ((1 << bits_stored) - 1)) | garbage).astype(np.uint64) & ((1 << container) - 1)
    data = make_p10(
        EXPLICIT_LE,
        rows=6,
        cols=5,
        bits_allocated=container,
        bits_stored=bits_stored,
        pixel_representation=signed,
        native=raw.astype(np.dtype(dtype).newbyteorder("<")).tobytes(),
    )

    imported = read_p10(data)
    prepared = prepare_import_instance(imported)

    assert imported.warning is None
    (stored,) = prepared.frames.values()
    decoded = imagecodecs.htj2k_decode(stored.data)
    expected = values.astype(narrow)
    assert decoded.dtype.itemsize == np.dtype(narrow).itemsize
    assert np.array_equal(decoded.astype(np.int64), values)
    (frame,) = prepared.instance["ImageFrames"]
    checksum = frame["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"]
    assert checksum == zlib.crc32(expected.astype(expected.dtype.newbyteorder("<")).tobytes())
    assert prepared.instance["DICOM"]["BitsAllocated"] == container  # the source's attributes, unchanged


@pytest.mark.parametrize("double", [False, True], ids=["float", "double-float"])
def test_float_pixel_data_is_a_blob_with_warning_45312(double: bool) -> None:
    """GIVEN Float / Double Float Pixel Data WHEN read THEN imported with warning 45312 naming the element,
    the element's value stored as one blob in the source syntax, and the Instance DICOM has no BitsStored."""
    values = np.linspace(-2.0, 3.0, 12).reshape(3, 4)
    data = float_p10(values, double=double)
    keyword = "DoubleFloatPixelData" if double else "FloatPixelData"

    imported = read_p10(data)
    prepared = prepare_import_instance(imported)

    assert imported.warning is not None
    assert imported.warning.code == TRANSCODING_EXCEPTION
    assert keyword in imported.warning.message
    assert imported.spec is not None
    assert imported.spec.stored_transfer_syntax_uid == EXPLICIT_LE
    assert list(imported.spec.encoded_frames or []) == [values.astype("<f8" if double else "<f4").tobytes()]
    dicom = prepared.instance["DICOM"]
    assert dicom["BitsAllocated"] == (64 if double else 32)
    assert "BitsStored" not in dicom
    assert "PixelRepresentation" not in dicom


def test_openjpeg_store_refuses_samples_it_cannot_round_trip() -> None:
    """GIVEN 24- and 25-bit samples WHEN encoded for a JPEG 2000 Lossless data store THEN 24 bits round-trip
    and 25 bits are refused (OpenJPEG would store them lossily; the import then keeps a blob)."""
    from ahi_emulator.codec import encode_j2k_lossless  # noqa: PLC0415

    rng = np.random.default_rng(25)
    ok = rng.integers(0, 1 << 24, size=(8, 8)).astype(np.uint32)
    assert np.array_equal(imagecodecs.jpeg2k_decode(encode_j2k_lossless(ok, 24)), ok)
    with pytest.raises(ValueError, match="25-bit"):
        encode_j2k_lossless(rng.integers(0, 1 << 25, size=(8, 8)).astype(np.uint32), 25)
