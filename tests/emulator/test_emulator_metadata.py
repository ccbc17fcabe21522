"""The metadata the emulator writes: layout, independent checksums and transfer-syntax handling."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pydicom.encaps
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ahi_emulator import Emulator, InstanceSpec, NotFoundError, PatientSpec
from ahi_emulator.codec import JP2_SIGNATURE, content_type_for
from tests.support import CT1_UNC_CRC

HTJ2K = "1.2.840.10008.1.2.4.202"


def le_crc(arr: np.ndarray) -> int:
    """The IFRC definition, written out here rather than imported, so the test checks the emulator."""
    return zlib.crc32(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


def only_instance(doc: dict[str, Any]) -> dict[str, Any]:
    (series,) = doc["Study"]["Series"].values()
    (instance,) = series["Instances"].values()
    return instance


def rng_frame(shape: tuple[int, ...], dtype: Any, low: int, high: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=shape, endpoint=True).astype(dtype)


def test_ct1_unc_from_dicom_yields_published_checksum(
    emulator: Emulator, datastore_id: str, shared_fixtures: Path
) -> None:
    """GIVEN the real CT1_UNC file (512x512 signed 16-bit)
    WHEN it is added from DICOM
    THEN the full-resolution checksum is the value HealthImaging reports for it, 1052635650."""
    info = emulator.add_image_set_from_dicom(datastore_id, [shared_fixtures / "CT1_UNC"])

    assert info.checksums == [CT1_UNC_CRC]
    instance = only_instance(emulator.metadata(datastore_id, info.image_set_id))
    frame = instance["ImageFrames"][0]
    assert frame["PixelDataChecksumFromBaseToFullResolution"][-1] == {
        "Width": 512,
        "Height": 512,
        "Checksum": CT1_UNC_CRC,
    }
    assert frame["FrameSizeInBytes"] == 524288
    assert instance["DICOM"]["PixelRepresentation"] == 1
    assert instance["DICOM"]["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"


def test_from_dicom_copies_patient_study_series(emulator: Emulator, datastore_id: str, shared_fixtures: Path) -> None:
    """GIVEN CT1_UNC WHEN added from DICOM THEN patient/study/series attributes come from the file."""
    ds = pydicom.dcmread(shared_fixtures / "CT1_UNC")

    info = emulator.add_image_set_from_dicom(datastore_id, [ds])

    doc = emulator.metadata(datastore_id, info.image_set_id)
    assert doc["Patient"]["DICOM"]["PatientID"] == ds.PatientID
    assert doc["Patient"]["DICOM"]["PatientName"] == str(ds.PatientName)
    assert doc["Study"]["DICOM"]["StudyInstanceUID"] == ds.StudyInstanceUID
    series_uid, series = next(iter(doc["Study"]["Series"].items()))
    assert series_uid == ds.SeriesInstanceUID
    assert series["DICOM"]["Modality"] == "CT"
    assert list(series["Instances"]) == [ds.SOPInstanceUID]


def test_from_dicom_rejects_compressed_file_naming_it(
    emulator: Emulator, datastore_id: str, shared_fixtures: Path, tmp_path: Path
) -> None:
    """GIVEN a file that claims a compressed transfer syntax WHEN added THEN a ValueError names the file."""
    ds = pydicom.dcmread(shared_fixtures / "CT1_UNC")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
    path = tmp_path / "compressed.dcm"
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(ValueError, match=r"compressed\.dcm.*not supported"):
        emulator.add_image_set_from_dicom(datastore_id, [path])


@pytest.mark.parametrize(
    ("shape", "dtype", "low", "high", "bits_stored"),
    [
        pytest.param((37, 53), np.uint8, 0, 255, None, id="uint8"),
        pytest.param((40, 31), np.uint16, 0, 65535, None, id="uint16"),
        pytest.param((64, 48), np.uint16, 0, 4095, 12, id="uint16-12bit"),
        pytest.param((32, 32), np.int16, -3000, 3000, None, id="int16-negative"),
        pytest.param((32, 32), np.int16, -2048, 2047, 12, id="int16-12bit-signed"),
        pytest.param((24, 40, 3), np.uint8, 0, 255, None, id="rgb-interleaved"),
        pytest.param((40, 36), np.int32, -70000, 70000, None, id="int32"),
    ],
)
def test_full_resolution_checksum_is_crc_of_little_endian_source(
    emulator: Emulator,
    datastore_id: str,
    shape: tuple[int, ...],
    dtype: Any,
    low: int,
    high: int,
    bits_stored: int | None,
) -> None:
    """GIVEN a source array WHEN stored as HTJ2K THEN the last checksum entry is crc32 of its LE bytes,
    the resolution list grows in Width up to Columns x Rows, and the stored frame decodes to the array."""
    arr = rng_frame(shape, dtype, low, high)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr], bits_stored=bits_stored)])

    instance = only_instance(emulator.metadata(datastore_id, info.image_set_id))
    frame = instance["ImageFrames"][0]
    levels = frame["PixelDataChecksumFromBaseToFullResolution"]
    assert levels[-1]["Checksum"] == le_crc(arr) == info.checksums[0]
    widths = [entry["Width"] for entry in levels]
    assert widths == sorted(widths)
    assert len(set(widths)) == len(widths)
    assert (
        (levels[-1]["Width"], levels[-1]["Height"])
        == (
            instance["DICOM"]["Columns"],
            instance["DICOM"]["Rows"],
        )
        == (shape[1], shape[0])
    )
    assert len(levels) > 1
    for k, entry in enumerate(reversed(levels)):
        assert (entry["Width"], entry["Height"]) == (math.ceil(shape[1] / 2**k), math.ceil(shape[0] / 2**k))
    assert frame["MinPixelValue"] == int(arr.min())
    assert frame["MaxPixelValue"] == int(arr.max())
    assert frame["FrameSizeInBytes"] == arr.nbytes
    data, content_type = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    assert content_type == "image/jph"
    decoded = imagecodecs.htj2k_decode(data, planar=False)
    assert decoded.dtype == arr.dtype
    np.testing.assert_array_equal(decoded, arr)


def test_big_endian_source_is_checksummed_as_little_endian(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN a big-endian uint16 array WHEN stored THEN the checksum covers little-endian bytes."""
    arr = rng_frame((20, 20), np.uint16, 0, 65535)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr.astype(">u2")])])

    assert info.checksums == [le_crc(arr)]
    assert info.checksums[0] != zlib.crc32(arr.astype(">u2").tobytes())


def test_reduced_resolution_checksums_match_reduced_decode(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN a stored frame WHEN the codestream is decoded at each reduced level
    THEN the listed lower-resolution checksums are the CRCs of those images."""
    arr = rng_frame((50, 70), np.uint16, 0, 4095)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr])])

    levels = only_instance(emulator.metadata(datastore_id, info.image_set_id))["ImageFrames"][0][
        "PixelDataChecksumFromBaseToFullResolution"
    ]
    data, _ = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    for k, entry in enumerate(reversed(levels[:-1]), start=1):
        assert entry["Checksum"] == le_crc(imagecodecs.htj2k_decode(data, skipres=k))


def test_tiny_frame_lists_each_size_once(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN a 3x5 frame (5 decomposition levels bottom out at 1x1 early)
    WHEN stored THEN sizes are listed once each, growing to the full resolution."""
    arr = rng_frame((3, 5), np.uint8, 0, 255)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr])])

    levels = only_instance(emulator.metadata(datastore_id, info.image_set_id))["ImageFrames"][0][
        "PixelDataChecksumFromBaseToFullResolution"
    ]
    sizes = [(entry["Width"], entry["Height"]) for entry in levels]
    assert sizes == sorted(set(sizes))
    assert sizes[-1] == (5, 3)
    assert levels[-1]["Checksum"] == le_crc(arr)


def test_resolution_levels_off_lists_only_full_resolution(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN resolution_levels=False WHEN stored THEN exactly one checksum entry exists."""
    arr = rng_frame((32, 32), np.uint8, 0, 255)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr])], resolution_levels=False)

    frame = only_instance(emulator.metadata(datastore_id, info.image_set_id))["ImageFrames"][0]
    assert frame["PixelDataChecksumFromBaseToFullResolution"] == [{"Width": 32, "Height": 32, "Checksum": le_crc(arr)}]


def test_metadata_layout_matches_the_service(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN two series, a 3-frame instance and a single-frame one WHEN stored
    THEN the document has the service's layout and frame IDs in metadata order."""
    frames = [rng_frame((16, 16), np.uint16, 0, 4095, seed=i) for i in range(3)]
    multi = InstanceSpec(frames=frames, series_instance_uid="1.2.3.1", sop_instance_uid="1.2.3.1.1")
    single = InstanceSpec(frames=frames[:1], series_instance_uid="1.2.3.2", sop_instance_uid="1.2.3.2.1")
    patient = PatientSpec(name="TEST^PATIENT", id="P-1", birth_date="19800101", sex="M")

    info = emulator.add_image_set(datastore_id, [multi, single], patient=patient, study_instance_uid="1.2.3")

    doc = emulator.metadata(datastore_id, info.image_set_id)
    assert doc["SchemaVersion"] == "1.1"
    assert doc["DatastoreID"] == datastore_id
    assert doc["ImageSetID"] == info.image_set_id
    assert doc["Patient"]["DICOM"] == {
        "PatientName": "TEST^PATIENT",
        "PatientID": "P-1",
        "PatientBirthDate": "19800101",
        "PatientSex": "M",
    }
    assert doc["Study"]["DICOM"]["StudyInstanceUID"] == "1.2.3"
    assert list(doc["Study"]["Series"]) == ["1.2.3.1", "1.2.3.2"]
    instance = doc["Study"]["Series"]["1.2.3.1"]["Instances"]["1.2.3.1.1"]
    assert list(instance) == ["DICOM", "DICOMVRs", "ChecksumType", "ImageFrames"]
    assert "StoredTransferSyntaxUID" not in instance
    assert instance["ChecksumType"] == "DECOMPRESSED"
    assert instance["DICOM"]["NumberOfFrames"] == "3"
    assert "NumberOfFrames" not in doc["Study"]["Series"]["1.2.3.2"]["Instances"]["1.2.3.2.1"]["DICOM"]
    listed = [
        f["ID"] for s in doc["Study"]["Series"].values() for i in s["Instances"].values() for f in i["ImageFrames"]
    ]
    assert listed == info.frame_ids
    assert len(set(listed)) == 4
    assert all(len(fid) == 32 and set(fid) <= set("0123456789abcdef") for fid in listed)
    assert info.checksums == [le_crc(f) for f in frames] + [le_crc(frames[0])]


def test_explicit_htj2k_syntax_is_written(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN stored_transfer_syntax_uid=.202 WHEN stored THEN the key is present and frames are still HTJ2K."""
    arr = rng_frame((16, 16), np.uint8, 0, 255)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr], stored_transfer_syntax_uid=HTJ2K)])

    instance = only_instance(emulator.metadata(datastore_id, info.image_set_id))
    assert instance["StoredTransferSyntaxUID"] == HTJ2K
    assert emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])[1] == "image/jph"


@pytest.mark.parametrize(
    ("syntax", "content_type"),
    [
        pytest.param("1.2.840.10008.1.2.4.203", "image/jphc", id="htj2k-retained"),
        pytest.param("1.2.840.10008.1.2.4.91", "image/j2c", id="jpeg2000"),
        pytest.param("1.2.840.10008.1.2.4.50", "image/jpeg", id="jpeg-baseline"),
        pytest.param("1.2.840.10008.1.2.1", "application/octet-stream", id="raw-segmentation"),
        pytest.param("1.2.840.10008.1.2.4.100", "video/mpeg", id="mpeg2"),
        pytest.param("1.2.840.10008.1.2.4.102.1", "video/mp4", id="h264"),
        pytest.param("1.2.840.10008.1.2.4.107", "video/H256", id="hevc"),
        pytest.param("1.2.840.10008.1.2.4.112", "image/jxl", id="jpeg-xl"),
    ],
)
def test_retained_syntax_stores_original_bytes(
    emulator: Emulator, datastore_id: str, syntax: str, content_type: str
) -> None:
    """GIVEN original frame bytes in a retained syntax WHEN stored
    THEN they are served unchanged, checksummed raw, with null min/max and their own size."""
    original = b"\xff\xd8 original frame bytes \x00\x01\x02" * 7
    arr = rng_frame((8, 12), np.uint8, 0, 255)

    info = emulator.add_image_set(
        datastore_id,
        [InstanceSpec(frames=[arr], stored_transfer_syntax_uid=syntax, encoded_frames=[original])],
    )

    instance = only_instance(emulator.metadata(datastore_id, info.image_set_id))
    assert instance["StoredTransferSyntaxUID"] == syntax
    assert "ChecksumType" not in instance
    frame = instance["ImageFrames"][0]
    assert frame["PixelDataChecksumFromBaseToFullResolution"] == [
        {"Width": 12, "Height": 8, "Checksum": zlib.crc32(original)}
    ]
    assert (frame["MinPixelValue"], frame["MaxPixelValue"], frame["FrameSizeInBytes"]) == (None, None, len(original))
    assert emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0]) == (original, content_type)
    assert content_type_for(syntax) == content_type


def test_boxed_frame_is_a_jph_file(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN boxed=True WHEN stored THEN the bytes are a JP2-family file with brand 'jph ' that decodes."""
    arr = rng_frame((30, 20, 3), np.uint8, 0, 255)

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr], boxed=True)])

    data, content_type = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    assert content_type == "image/jph"
    assert data.startswith(JP2_SIGNATURE)
    assert data[16:24] == b"ftypjph "
    assert b"jp2h" in data[:100]
    assert b"ihdr" in data[:100]
    assert b"colr" in data[:100]
    assert data[data.index(b"jp2c") + 4 :].startswith(b"\xff\x4f\xff\x51")
    np.testing.assert_array_equal(imagecodecs.htj2k_decode(data, planar=False), arr)
    assert info.checksums == [le_crc(arr)]


@pytest.mark.parametrize(
    ("spec_kwargs", "message"),
    [
        pytest.param({"frames": [np.zeros((4, 4), np.float32)]}, "dtype", id="float-dtype"),
        pytest.param({"frames": [np.zeros((4, 4, 2), np.uint8)]}, "shape", id="two-samples"),
        pytest.param({"frames": [np.full((4, 4), 5000, np.uint16)], "bits_stored": 12}, "bits_stored", id="bits"),
        pytest.param(
            {"frames": [np.zeros((4, 4), np.uint8)], "stored_transfer_syntax_uid": "1.2.840.10008.1.2.4.50"},
            "encoded_frames",
            id="retained-without-bytes",
        ),
        pytest.param({"frames": []}, "at least one frame", id="no-frames"),
    ],
)
def test_invalid_instances_are_rejected(
    emulator: Emulator, datastore_id: str, spec_kwargs: dict[str, Any], message: str
) -> None:
    """GIVEN an invalid instance WHEN added THEN ValueError explains it and nothing is stored."""
    with pytest.raises(ValueError, match=message):
        emulator.add_image_set(datastore_id, [InstanceSpec(**spec_kwargs)])
    assert emulator.image_sets() == []


def test_unknown_datastore_is_not_found(emulator: Emulator) -> None:
    """GIVEN no data store WHEN adding an image set THEN NotFoundError."""
    with pytest.raises(NotFoundError):
        emulator.add_image_set("0" * 32, [InstanceSpec(frames=[np.zeros((4, 4), np.uint8)])])


def test_new_version_is_independent(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN version 2 of an image set WHEN its checksum changes THEN version 1 keeps the original."""
    arr = rng_frame((8, 8), np.uint8, 0, 255)
    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr])])

    version = emulator.new_version(datastore_id, info.image_set_id)
    emulator.set_checksum(datastore_id, info.image_set_id, info.frame_ids[0], 7)

    assert version == "2"
    v1 = only_instance(emulator.metadata(datastore_id, info.image_set_id, "1"))["ImageFrames"][0]
    v2 = only_instance(emulator.metadata(datastore_id, info.image_set_id))["ImageFrames"][0]
    assert v1["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == le_crc(arr)
    assert v2["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == 7


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.int16]),
        shape=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    )
)
def test_any_integer_frame_round_trips_with_matching_checksum(arr: np.ndarray) -> None:
    """GIVEN any small 8/16-bit frame WHEN stored THEN it decodes back exactly and its checksum is the IFRC."""
    emulator = Emulator()
    datastore_id = emulator.create_datastore()

    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[arr])], resolution_levels=False)

    data, _ = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    np.testing.assert_array_equal(imagecodecs.htj2k_decode(data, planar=False).reshape(arr.shape), arr)
    assert info.checksums == [le_crc(arr)]
