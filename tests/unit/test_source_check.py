"""The three-way check: source IFRC from the original P10, and how three checksums are classified."""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ahi_verify.metadata import FrameRef, ResolutionChecksum
from ahi_verify.outcomes import MISMATCH_RELATIONS, Status, ThreeWay, three_way
from ahi_verify.report import FrameResult, SourceComparison
from ahi_verify.source_check import (
    LOSSY_DECODER_TOLERANCE,
    SourceError,
    lossy_decodings,
    normalised_source_pixels,
    read_source_file,
)
from ahi_verify.work import SourceInputs, _compare_sources, source_inputs, with_source
from tests.support import CT1_UNC_CRC


@pytest.mark.parametrize(
    ("source", "stored", "decoded", "relation"),
    [
        pytest.param(1, 1, 1, ThreeWay.CONSISTENT, id="all-agree"),
        pytest.param(1, 2, 2, ThreeWay.IMPORT_CHANGED_PIXELS, id="import-changed"),
        pytest.param(1, 1, 2, ThreeWay.STORAGE_CORRUPTED, id="storage"),
        pytest.param(1, 2, 1, ThreeWay.STORED_CHECKSUM_WRONG, id="wrong-checksum"),
        pytest.param(1, 2, 3, ThreeWay.ALL_DIFFER, id="all-differ"),
        pytest.param(None, 1, 1, ThreeWay.NO_SOURCE, id="no-source"),
        pytest.param(1, 1, None, ThreeWay.SOURCE_AGREES, id="undecoded-agrees"),
        pytest.param(1, 2, None, ThreeWay.SOURCE_DIFFERS, id="undecoded-differs"),
    ],
)
def test_three_way_classification(source: int | None, stored: int, decoded: int | None, relation: ThreeWay) -> None:
    assert three_way(source, stored, decoded) is relation


def test_ct1_unc_source_ifrc(shared_fixtures: Path) -> None:
    source = read_source_file((shared_fixtures / "CT1_UNC").read_bytes(), "CT1_UNC")
    assert [(f.frame_number, f.crc, f.rule) for f in source.frames] == [(1, CT1_UNC_CRC, "decoded-pixels")]


def test_lossless_encodings_of_the_same_pixels_agree() -> None:
    # GIVEN the same MR image stored natively, as RLE, JPEG-LS lossless and JPEG 2000 lossless
    names = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    crcs = {read_source_file(Path(get_testdata_file(n)).read_bytes(), n).frames[0].crc for n in names}
    # THEN every decoder yields the same source IFRC
    assert len(crcs) == 1


def test_big_endian_source_is_hashed_little_endian() -> None:
    little = read_source_file(Path(get_testdata_file("MR_small.dcm")).read_bytes(), "le").frames[0].crc
    big = read_source_file(Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes(), "be").frames[0].crc
    assert little == big


def test_retained_jpeg_baseline_is_compared_on_raw_frame_bytes() -> None:
    path = Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    ds = pydicom.dcmread(path)
    (frame,) = read_source_file(path.read_bytes(), "jpeg").frames
    fragment = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert (frame.rule, frame.crc) == ("raw-bytes", zlib.crc32(fragment))


def _p10(pixels: np.ndarray, bits_stored: int, signed: bool, **extra: object) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", uid
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    ds.PhotometricInterpretation = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_garbage_above_bits_stored_is_cleared_for_unsigned_data() -> None:
    # GIVEN 12-bit unsigned data whose unused high bits hold garbage
    clean = np.arange(64, dtype=np.uint16).reshape(8, 8) * 60
    dirty = clean | np.uint16(0xA000)
    # THEN the source IFRC is that of the clean 12-bit values
    (frame,) = read_source_file(_p10(dirty, 12, signed=False), "dirty").frames
    assert frame.crc == zlib.crc32(clean.tobytes())


def test_signed_values_are_sign_extended_from_bits_stored() -> None:
    # GIVEN 12-bit signed values stored with zeroed high bits (-5 stored as 0x0FFB)
    values = np.array([[-5, 7], [-2048, 2047]], dtype=np.int16)
    stored = (values.view(np.uint16) & np.uint16(0x0FFF)).view(np.int16)
    (frame,) = read_source_file(_p10(stored, 12, signed=True), "signed").frames
    # THEN the IFRC is over the sign-extended values (-5 -> FB FF)
    assert frame.crc == zlib.crc32(values.astype("<i2").tobytes())


def test_planar_configuration_1_is_hashed_interleaved() -> None:
    rgb = np.random.default_rng(1).integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    data = _p10(rgb, 8, signed=False, PlanarConfiguration=1)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = planar.tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    (frame,) = read_source_file(out.getvalue(), "planar").frames
    assert frame.crc == zlib.crc32(rgb.tobytes())


def test_ybr_full_is_hashed_as_stored_not_converted() -> None:
    path = Path(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    ds = pydicom.dcmread(path)
    from pydicom.pixels import pixel_array  # noqa: PLC0415

    raw = pixel_array(ds, raw=True)
    (frame,) = read_source_file(path.read_bytes(), "ybr").frames[:1]
    assert frame.crc == zlib.crc32(np.ascontiguousarray(raw if raw.ndim == 3 else raw[0]).tobytes())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"not dicom at all", "not a readable DICOM P10 file", id="not-dicom"),
        pytest.param(Path(get_testdata_file("MR_truncated.dcm")).read_bytes(), "cannot be decoded", id="truncated"),
    ],
)
def test_unreadable_sources_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=message) as caught:
        read_source_file(data, "dicom/file-7.dcm")
    assert caught.value.input_file == "dicom/file-7.dcm"
    assert "file-7" not in str(caught.value)  # keys may embed names: kept apart from the message


@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"], ids=["jpeg-ll-57", "jpeg-ll-70"]
)
def test_jpeg_lossless_sources_decode_to_their_pixels(syntax: str) -> None:
    # GIVEN a 12-bit JPEG lossless source (process 14; .70 is its selection-value-1 form)
    import imagecodecs  # noqa: PLC0415

    from tests.emulator.p10_factory import make_p10  # noqa: PLC0415

    pixels = np.random.default_rng(4).integers(0, 4095, size=(8, 10), dtype=np.uint16)
    data = make_p10(syntax, frames=[bytes(imagecodecs.ljpeg_encode(pixels, bitspersample=12))], bits_stored=12)
    # WHEN its source IFRC is computed THEN it is the CRC of the original pixels
    (frame,) = read_source_file(data, "ll.dcm").frames
    assert (frame.rule, frame.crc) == ("decoded-pixels", zlib.crc32(pixels.tobytes()))


# ---------------------------------------------------------------- binary segmentation in any syntax


@pytest.mark.parametrize(
    ("syntax", "rle_layout"),
    [
        pytest.param("1.2.840.10008.1.2.1", "packed", id="native"),
        pytest.param("1.2.840.10008.1.2.1.99", "packed", id="deflated"),
        pytest.param("1.2.840.10008.1.2.5", "packed", id="rle-packed-bits"),
        pytest.param("1.2.840.10008.1.2.5", "bytes", id="rle-byte-a-pixel"),
        pytest.param("1.2.840.10008.1.2.4.90", "packed", id="j2k"),
        pytest.param("1.2.840.10008.1.2.4.201", "packed", id="htj2k"),
    ],
)
def test_binary_segmentation_is_decoded_then_packed_per_frame(syntax: str, rle_layout: str) -> None:
    # GIVEN a 3-frame 37x41 binary segmentation (1517 bits a frame: frames 2 and 3 start mid-byte) in `syntax`
    from tests.emulator.p10_factory import segmentation_bits, segmentation_p10, stored_segmentation  # noqa: PLC0415

    bits = segmentation_bits()
    data = segmentation_p10(bits, syntax, rle_layout=rle_layout)
    # WHEN its source IFRC is computed
    frames = read_source_file(data, "seg.dcm").frames
    # THEN each frame's IFRC is that of its own pixels packed LSB-first from a byte boundary (the stored
    # .1.2.1 layout), never of the compressed bytes
    assert [(f.frame_number, f.rule, f.crc) for f in frames] == [
        (i, "raw-bytes", zlib.crc32(b)) for i, b in enumerate(stored_segmentation(bits), start=1)
    ]
    assert len({f.crc for f in frames}) == 3  # the frames really differ, so a mix-up would show


def test_compressed_segmentation_whose_frames_do_not_decode_is_an_error() -> None:
    # GIVEN an RLE segmentation whose first frame's segment is cut short
    from pydicom.encaps import encapsulate, generate_frames  # noqa: PLC0415

    from tests.emulator.p10_factory import segmentation_bits, segmentation_p10  # noqa: PLC0415

    ds = pydicom.dcmread(io.BytesIO(segmentation_p10(segmentation_bits(), "1.2.840.10008.1.2.5")))
    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    ds.PixelData = encapsulate([frames[0][:70], *frames[1:]])
    out = io.BytesIO()
    ds.save_as(out)
    # THEN the source is unreadable, not a checksum of whatever bytes were there
    with pytest.raises(SourceError, match="cannot be decoded"):
        read_source_file(out.getvalue(), "seg.dcm")


# ---------------------------------------------- BitsAllocated wider than BitsStored needs (container rule)


def test_bits_allocated_16_bits_stored_8_is_hashed_as_one_byte_samples() -> None:
    # GIVEN 8-bit values in a 16-bit container, with garbage in the high byte
    values = np.random.default_rng(2).integers(0, 256, size=(6, 7), dtype=np.uint16)
    (frame,) = read_source_file(_p10(values | np.uint16(0x5A00), 8, signed=False), "ba16bs8").frames
    # THEN the IFRC is over 1-byte samples, as HealthImaging's 8-bit HTJ2K decodes
    assert frame.crc == zlib.crc32(values.astype(np.uint8).tobytes())
    assert frame.crc != zlib.crc32(values.tobytes())


def test_bits_allocated_32_bits_stored_16_is_hashed_as_two_byte_samples() -> None:
    values = np.random.default_rng(3).integers(0, 65536, size=(5, 4), dtype=np.uint32)
    (frame,) = read_source_file(_p10(values | np.uint32(0x00770000), 16, signed=False), "ba32bs16").frames
    assert frame.crc == zlib.crc32(values.astype("<u2").tobytes())


def test_signed_bits_stored_12_in_16_keeps_two_byte_sign_extended_samples() -> None:
    # GIVEN signed 12-bit values with their high nibble zeroed (BitsAllocated 16)
    values = np.array([[-2048, -1, 0], [1, 2047, -5]], dtype=np.int16)
    stored = (values.view(np.uint16) & np.uint16(0x0FFF)).view(np.int16)
    (frame,) = read_source_file(_p10(stored, 12, signed=True), "ba16bs12").frames
    # THEN the container stays 2 bytes (ceil(12/8)) and values are sign-extended
    assert frame.crc == zlib.crc32(values.astype("<i2").tobytes())


def test_signed_bits_stored_8_in_16_is_one_signed_byte() -> None:
    values = np.array([[-128, -1], [0, 127]], dtype=np.int16)
    stored = (values.view(np.uint16) & np.uint16(0x00FF)).view(np.int16)
    (frame,) = read_source_file(_p10(stored, 8, signed=True), "ba16bs8s").frames
    assert frame.crc == zlib.crc32(values.astype(np.int8).tobytes())


# ------------------------------------------------------------------------------------ float pixel data


@pytest.mark.parametrize(
    ("double", "element"),
    [
        pytest.param(False, "FloatPixelData (7FE0,0008)", id="float"),
        pytest.param(True, "DoubleFloatPixelData (7FE0,0009)", id="double"),
    ],
)
def test_float_pixel_data_is_named_and_never_compared(double: bool, element: str) -> None:
    # GIVEN a file whose pixels are Float or Double Float Pixel Data (no PixelData element)
    from tests.emulator.p10_factory import float_p10  # noqa: PLC0415

    data = float_p10(np.linspace(-1.5, 2.5, 12).reshape(3, 4), double=double)
    # WHEN its source IFRC is asked for THEN it is an error naming the element: no frame to compare
    with pytest.raises(SourceError, match=re.escape(element)) as caught:
        read_source_file(data, "pm/file-3.dcm")
    assert "file-3" not in str(caught.value)


# --- lossy sources: the decoder may round differently ---------------------------------------------------------

JPEG_EXTENDED_FILE = "JPGExtended.dcm"  # real JPEG Extended (.51) 12-bit greyscale, decoded by the import


class _InputBucket:
    """The input bucket of a job: ``read_object`` over a dict of keys (the one call the three-way check makes)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def read_object(self, location: Any) -> bytes:
        return self.objects[location.key]


def _decodings(name: str) -> dict[str, npt.NDArray[Any]]:
    ds = pydicom.dcmread(get_testdata_file(name))
    return {decoder: normalised_source_pixels(arr, ds) for decoder, arr in lossy_decodings(ds, 1)}


def _compare_one(name: str, stored: npt.NDArray[Any] | None, crc: int) -> SourceComparison:
    """Relate one stored frame (its pixels, or None when they cannot be had, and its checksum) to the file."""
    data = Path(get_testdata_file(name)).read_bytes()
    sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    ref = FrameRef(0, "f0", "1.2.3", sop, 1, "1.2.840.10008.1.2.4.202", "DECOMPRESSED", ResolutionChecksum(1, 1, crc))
    result = FrameResult.of(ref, Status.MATCH, expected=crc, actual=crc)
    sources = SourceInputs(_InputBucket({name: data}), "s3://input/", (name,))  # type: ignore[arg-type]
    comparisons, problems, _ = _compare_sources(
        sources, [result], (ref,), listing_failed=False, stored_pixels=lambda _: stored
    )
    assert problems == ()
    return comparisons[0]


def test_every_decoder_of_a_lossy_jpeg_gives_a_candidate() -> None:
    # GIVEN a real JPEG Extended file, whose pixels pydicom's plugin and libjpeg-turbo round differently
    (frame,) = read_source_file(Path(get_testdata_file(JPEG_EXTENDED_FILE)).read_bytes(), "jpeg").frames
    # THEN both decoders' checksums are kept, and they differ
    assert [name for name, _ in frame.candidates] == ["pydicom-pylibjpeg", "libjpeg-turbo"]
    assert len({crc for _, crc in frame.candidates}) == 2
    assert frame.crc == frame.candidates[0][1]


def test_a_lossy_source_is_consistent_when_another_decoder_reproduces_the_stored_checksum() -> None:
    # GIVEN a stored frame holding libjpeg-turbo's pixels (an import decoding like IJG), not pydicom's
    turbo = _decodings(JPEG_EXTENDED_FILE)["libjpeg-turbo"]
    # WHEN it is related to its source
    comparison = _compare_one(JPEG_EXTENDED_FILE, turbo, zlib.crc32(turbo.data))
    # THEN it is consistent, and the report says which decoder reproduced it
    assert comparison.relation is ThreeWay.CONSISTENT
    assert comparison.decoder == "libjpeg-turbo"
    assert comparison.ifrc == zlib.crc32(turbo.data)


def test_a_lossy_source_within_the_tolerance_is_decoder_dependent_not_a_mismatch() -> None:
    # GIVEN stored pixels that no decoder gives, each within 1 of pydicom's (another decoder's rounding)
    stored = _decodings(JPEG_EXTENDED_FILE)["pydicom-pylibjpeg"].copy()
    stored.reshape(-1)[::97] += 1
    comparison = _compare_one(JPEG_EXTENDED_FILE, stored, zlib.crc32(stored.data))
    # THEN the relation says the decoders differ, with how much, and the frame stays a MATCH
    assert comparison.relation is ThreeWay.LOSSY_DECODER_DIFFERS
    assert (comparison.decoder, comparison.max_difference) == ("pydicom-pylibjpeg", 1)
    assert comparison.differing_samples == stored.reshape(-1)[::97].size
    assert comparison.to_json()["maxDifference"] == 1
    final = with_source(FrameResult(0, "f0", "1.2.3", "1.2.3.4", 1, Status.MATCH, 1, 1), comparison)
    assert final.status is Status.MATCH
    assert not final.source_unchecked
    assert final.decoder_dependent


def test_a_lossy_source_beyond_the_tolerance_is_a_mismatch() -> None:
    # GIVEN stored pixels 2 away from every decoder's in some samples
    stored = _decodings(JPEG_EXTENDED_FILE)["pydicom-pylibjpeg"].copy()
    stored.reshape(-1)[::97] += LOSSY_DECODER_TOLERANCE + 2
    comparison = _compare_one(JPEG_EXTENDED_FILE, stored, zlib.crc32(stored.data))
    # THEN the import changed the pixels, and the frame becomes a MISMATCH
    assert comparison.relation is ThreeWay.IMPORT_CHANGED_PIXELS
    assert comparison.max_difference is not None
    assert comparison.max_difference > LOSSY_DECODER_TOLERANCE
    ref = FrameResult(0, "f0", "1.2.3", "1.2.3.4", 1, Status.MATCH, 1, 1)
    assert with_source(ref, comparison).status is Status.MISMATCH


def test_a_lossy_source_of_another_shape_is_a_mismatch() -> None:
    # GIVEN stored pixels within 1 of the source's values but with a row fewer
    stored = np.ascontiguousarray(_decodings(JPEG_EXTENDED_FILE)["pydicom-pylibjpeg"][1:])
    comparison = _compare_one(JPEG_EXTENDED_FILE, stored, zlib.crc32(stored.data))
    # THEN that is a change, not a rounding
    assert comparison.relation is ThreeWay.IMPORT_CHANGED_PIXELS


def test_a_lossy_source_whose_stored_pixels_are_unavailable_is_unresolved() -> None:
    # GIVEN a stored checksum no decoder of the source reproduces, and the stored frame cannot be fetched again
    comparison = _compare_one(JPEG_EXTENDED_FILE, None, 12345)
    # THEN the frame is neither consistent nor a mismatch: the job cannot be CLEAN
    assert comparison.relation is ThreeWay.LOSSY_SOURCE_UNRESOLVED
    assert comparison.relation not in MISMATCH_RELATIONS
    ref = FrameResult(0, "f0", "1.2.3", "1.2.3.4", 1, Status.MATCH, 12345, 12345)
    final = with_source(ref, comparison)
    assert final.status is Status.MATCH
    assert final.source_unchecked


def test_a_lossless_source_stays_exact() -> None:
    # GIVEN a lossless (native) source and stored pixels that differ from it by 1 in a few samples
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    stored = normalised_source_pixels(ds.pixel_array, ds).copy()
    stored.reshape(-1)[::50] += 1
    comparison = _compare_one("MR_small.dcm", stored, zlib.crc32(stored.data))
    # THEN no tolerance applies: the import changed the pixels
    assert comparison.relation is ThreeWay.IMPORT_CHANGED_PIXELS
    assert comparison.decoder is None


@pytest.mark.parametrize("name", ["JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm"])
def test_jpeg_ls_near_lossless_decoders_agree(name: str) -> None:
    # GIVEN real JPEG-LS near-lossless files, decoded by pydicom's plugin and by CharLS
    decodings = _decodings(name)
    # THEN both decode, to the same samples
    assert list(decodings) == ["pydicom-pylibjpeg", "charls"]
    assert np.array_equal(decodings["pydicom-pylibjpeg"], decodings["charls"])


def test_lossy_ybr_jpeg_is_decoded_without_colour_conversion() -> None:
    # GIVEN a real YBR_FULL_422 JPEG, whose raw (YCbCr) samples pydicom returns
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    decodings = _decodings("SC_rgb_dcmtk_+eb+cy+np.dcm")
    raw = normalised_source_pixels(next(iter(iter_pixels(ds, raw=True))), ds)
    # THEN libjpeg-turbo's samples are also YCbCr: within the tolerance of pydicom's, not converted to RGB
    delta = np.abs(decodings["libjpeg-turbo"].astype(int) - raw.astype(int))
    assert 0 < int(delta.max()) <= LOSSY_DECODER_TOLERANCE


# --- files the import warned about: not compared ---------------------------------------------------------------


def _multi_frame_p10() -> tuple[bytes, str]:
    """A native 3-frame file, as a file the import stored as a blob might be."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 4000, size=(3, 8, 6)).astype(np.uint16)
    data = _p10(frames[0], 12, False, NumberOfFrames=3)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = frames.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    return data, str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def test_a_file_stored_as_a_blob_is_not_compared_and_loses_no_frames() -> None:
    # GIVEN a 3-frame file whose WARNING line says 0xB100 (stored as one blob frame, checksum of the bytes)
    data, sop = _multi_frame_p10()
    blob_crc = zlib.crc32(data)
    ref = FrameRef(0, "f0", "1.2.3", sop, 1, "1.2.840.10008.1.2.1", "DECOMPRESSED", ResolutionChecksum(8, 6, blob_crc))
    result = FrameResult.of(ref, Status.MATCH, expected=blob_crc, actual=blob_crc)
    bucket = _InputBucket({"in/blob.dcm": data})
    warned = SourceInputs(bucket, "s3://input/", ("in/blob.dcm",), warned_files=frozenset({"in/blob.dcm"}))  # type: ignore[arg-type]
    unwarned = SourceInputs(bucket, "s3://input/", ("in/blob.dcm",))  # type: ignore[arg-type]
    # WHEN it is related to its source with and without the warning known
    comparisons, problems, orphans = _compare_sources(warned, [result], (ref,), listing_failed=False)
    blind, _, blind_orphans = _compare_sources(unwarned, [result], (ref,), listing_failed=False)
    # THEN with the warning the frame is import-warned (not a mismatch) and no source frame is "lost"
    assert comparisons[0].relation is ThreeWay.IMPORT_WARNED
    assert comparisons[0].input_file == "in/blob.dcm"
    assert ThreeWay.IMPORT_WARNED not in MISMATCH_RELATIONS
    assert with_source(result, comparisons[0]).status is Status.MATCH
    assert (problems, orphans) == ((), ())
    # AND without it the same frame would be a false alarm: blob against frame 1, frames 2 and 3 lost
    assert blind[0].relation in MISMATCH_RELATIONS
    assert blind_orphans == ("in/blob.dcm: frame 2", "in/blob.dcm: frame 3")


def test_source_inputs_name_the_files_with_frame_affecting_warnings() -> None:
    # GIVEN a plan whose image set has three files: one warned 0xB100, one warned 0xB003 (no effect on frames)
    from ahi_verify.plan import JobPlan, PlannedImageSet  # noqa: PLC0415
    from ahi_verify.report import ImportFindings, JobHeader, WarnedFile, WarningCode  # noqa: PLC0415

    files = ("in/a.dcm", "in/b.dcm", "in/c.dcm")
    findings = ImportFindings(
        warnings=(
            WarnedFile("in/a.dcm", "1" * 32, (WarningCode(0xB100, "TRANSCODING_EXCEPTION", True),)),
            WarnedFile("in/b.dcm", "1" * 32, (WarningCode(0xB003, "OTHER", False),)),
        )
    )
    job = JobHeader("j", "0" * 32, "s3://out/f/", input_s3_uri="s3://input/in/")
    plan = JobPlan(job, findings, (), (PlannedImageSet("1" * 32, None, None, files),), "t", with_sources=True)
    # WHEN the image set's source inputs are made
    inputs = source_inputs(plan, "1" * 32, _InputBucket({}))  # type: ignore[arg-type]
    # THEN only the file whose warning affects frames is left uncompared
    assert inputs is not None
    assert inputs.warned_files == frozenset({"in/a.dcm"})
