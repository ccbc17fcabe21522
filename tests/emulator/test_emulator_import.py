"""DICOM import jobs against a moto S3: output folder, ndjson and manifest, stored frames, events, faults.

The S3 client of each job comes from the environment (``AWS_ENDPOINT_URL_S3`` points at the moto server),
exactly as in ``ahi-emulator serve``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import boto3
import imagecodecs
import numpy as np
import pydicom
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from ahi_emulator import Emulator, EmulatorServer, ImportFaults, StoredFrameRef
from tests.emulator.conftest import ClientFactory
from tests.emulator.p10_factory import (
    RETAINED,
    SEGMENTATION,
    bundled,
    crc,
    encapsulated_frames,
    expected_frames,
    instances_by_sop,
    make_p10,
    packed_segmentation_frames,
    read,
)
from tests.support import CT1_UNC_CRC, SHARED_FIXTURES

pytestmark = pytest.mark.integration

IN_BUCKET = "dicom-input-bucket"
OUT_BUCKET = "import-output-bucket"
MANIFEST = "job-output-manifest.json"
NOTIFY_QUEUE = "manifest-events"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _reset_moto(url: str) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("POST", "/moto-api/reset")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


@dataclass
class Aws:
    url: str
    s3: Any
    sqs: Any


def _aws(url: str, mp: pytest.MonkeyPatch) -> Aws:
    _reset_moto(url)
    mp.setenv("AWS_ENDPOINT_URL_S3", url)
    mp.setenv("AWS_ENDPOINT_URL_SQS", url)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=IN_BUCKET)
    s3.create_bucket(Bucket=OUT_BUCKET)
    return Aws(url, s3, boto3.client("sqs"))


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """A clean moto with the input and output buckets; jobs' S3 clients reach it through the environment."""
    handle = _aws(moto_url, monkeypatch)
    yield handle
    handle.s3.close()
    handle.sqs.close()


def upload(s3: Any, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=IN_BUCKET, Key=key, Body=body)


def outputs(s3: Any, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` of the output bucket, keyed relative to it."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=OUT_BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) :]] = s3.get_object(Bucket=OUT_BUCKET, Key=item["Key"])["Body"].read()
    return found


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines()]


def job_prefix(datastore_id: str, job_id: str, base: str = "job_output/") -> str:
    return f"{base}{datastore_id}-DicomImport-{job_id}/"


# ------------------------------------------------------------------------------- the mixed-folder job


def _video() -> bytes:
    return make_p10(
        "1.2.840.10008.1.2.4.100",
        rows=4,
        cols=4,
        bits_allocated=8,
        samples=3,
        photometric="YBR_PARTIAL_420",
        frames=[b"\x00\x00\x01\xb3" + bytes(range(40))],
    )


def _broken_jpeg_lossless() -> bytes:
    return make_p10("1.2.840.10008.1.2.4.70", frames=[b"\xff\xd8" + bytes(30)], bits_allocated=8)


def _mixed_sources() -> dict[str, bytes]:
    def file(name: str) -> bytes:
        return bundled(name).read_bytes()

    return {
        "dicom_input/ct/CT_small.dcm": file("CT_small.dcm"),
        "dicom_input/mr/MR_small_RLE.dcm": file("MR_small_RLE.dcm"),
        "dicom_input/j2k/JPEG2000.dcm": file("JPEG2000.dcm"),
        "dicom_input/rgb/SC_rgb_jpeg_dcmtk.dcm": file("SC_rgb_jpeg_dcmtk.dcm"),
        "dicom_input/rgb/SC_rgb_rle_2frame.dcm": file("SC_rgb_rle_2frame.dcm"),
        "dicom_input/seg/liver_1frame.dcm": file("liver_1frame.dcm"),
        "dicom_input/rt/rtplan.dcm": file("rtplan.dcm"),
        "dicom_input/deep/a/b/CT1_UNC": (SHARED_FIXTURES / "CT1_UNC").read_bytes(),
        "dicom_input/video.dcm": _video(),
        "dicom_input/broken_jpeg_lossless.dcm": _broken_jpeg_lossless(),
        "dicom_input/notes/readme.txt": b"not a DICOM file\n",
        "dicom_input/meta_missing_tsyntax.dcm": file("meta_missing_tsyntax.dcm"),
    }


SUCCESS_KEYS = {
    "dicom_input/ct/CT_small.dcm",
    "dicom_input/mr/MR_small_RLE.dcm",
    "dicom_input/j2k/JPEG2000.dcm",
    "dicom_input/rgb/SC_rgb_jpeg_dcmtk.dcm",
    "dicom_input/rgb/SC_rgb_rle_2frame.dcm",
    "dicom_input/seg/liver_1frame.dcm",
    "dicom_input/rt/rtplan.dcm",
    "dicom_input/deep/a/b/CT1_UNC",
}
WARNING_CODES = {"dicom_input/video.dcm": 45344, "dicom_input/broken_jpeg_lossless.dcm": 45312}
FAILURE_KEYS = {"dicom_input/notes/readme.txt", "dicom_input/meta_missing_tsyntax.dcm"}


@dataclass
class MixedImport:
    emulator: Emulator
    datastore_id: str
    job_id: str
    properties: dict[str, Any]
    sources: dict[str, bytes]
    outputs: dict[str, bytes]
    events: list[dict[str, Any]]
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def lines(self, name: str) -> list[dict[str, Any]]:
        return lines(self.outputs[name]) if name in self.outputs else []

    def image_set_of(self, key: str) -> str:
        for line in self.lines("SUCCESS/success.ndjson") + self.lines("WARNING/warning.ndjson"):
            if line["inputFile"] == key:
                return str(line["importResponse"]["imageSetId"])
        raise KeyError(key)

    def instance(self, key: str) -> dict[str, Any]:
        sop = str(read(self.sources[key]).SOPInstanceUID)
        doc = self.emulator.metadata(self.datastore_id, self.image_set_of(key))
        return instances_by_sop(doc)[sop]

    def frame(self, key: str, index: int) -> tuple[bytes, str]:
        frame_id = self.instance(key)["ImageFrames"][index]["ID"]
        return self.emulator.frame(self.datastore_id, self.image_set_of(key), frame_id)


def _receive_records(sqs: Any, queue_url: str, want: int, timeout: float = 15) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))  # the s3:TestEvent has no Records
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if len(records) >= want:
            break
    return records


@pytest.fixture(scope="module")
def mixed(moto_url: str) -> Iterator[MixedImport]:
    """One job over a mixed folder, its whole S3 output and the manifest's S3 notification, captured once."""
    with pytest.MonkeyPatch.context() as mp:
        aws = _aws(moto_url, mp)
        queue_url = aws.sqs.create_queue(QueueName=NOTIFY_QUEUE)["QueueUrl"]
        queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        aws.s3.put_bucket_notification_configuration(
            Bucket=OUT_BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": queue_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": MANIFEST}]}},
                    }
                ]
            },
        )
        sources = _mixed_sources()
        upload(aws.s3, sources)
        upload(
            aws.s3,
            {"dicom_input/empty-folder/": b"", "dicom_input2/CT_small.dcm": sources["dicom_input/ct/CT_small.dcm"]},
        )
        events: list[dict[str, Any]] = []
        emulator = Emulator(on_event=events.append)
        datastore_id = emulator.create_datastore()

        # Neither URI ends in "/": the input is still a folder and the job folder is still joined with one.
        job_id = emulator.start_import_job(
            datastore_id, f"s3://{IN_BUCKET}/dicom_input", f"s3://{OUT_BUCKET}/job_output", job_name="mixed-folder"
        )
        properties = emulator.wait_for_job(datastore_id, job_id, wait_for_outputs=True)
        result = MixedImport(
            emulator=emulator,
            datastore_id=datastore_id,
            job_id=job_id,
            properties=properties,
            sources=sources,
            outputs=outputs(aws.s3, job_prefix(datastore_id, job_id)),
            events=events,
        )
        result.notifications = _receive_records(aws.sqs, queue_url, want=1)
        aws.s3.close()
        aws.sqs.close()
        yield result


def test_mixed_folder_writes_the_documented_layout(mixed: MixedImport) -> None:
    """GIVEN a mixed input folder WHEN the job completes THEN the job folder holds exactly the manifest and
    one ndjson per outcome, and GetDICOMImportJob reports outputS3Uri with that folder appended."""
    folder = f"s3://{OUT_BUCKET}/{job_prefix(mixed.datastore_id, mixed.job_id)}"

    assert mixed.properties["jobStatus"] == "COMPLETED"
    assert mixed.properties["outputS3Uri"] == folder
    assert mixed.properties["inputS3Uri"] == f"s3://{IN_BUCKET}/dicom_input"
    assert mixed.properties["jobName"] == "mixed-folder"
    assert mixed.properties["endedAt"] >= mixed.properties["submittedAt"]
    assert set(mixed.outputs) == {
        MANIFEST,
        "SUCCESS/success.ndjson",
        "FAILURE/failure.ndjson",
        "WARNING/warning.ndjson",
    }
    for name in ("SUCCESS/success.ndjson", "FAILURE/failure.ndjson", "WARNING/warning.ndjson"):
        text = mixed.outputs[name].decode()
        assert text.endswith("\n")
        assert '": ' not in text  # compact JSON
        assert "True" not in text  # JSON true, not Python's


def test_mixed_folder_manifest_counts_match_the_ndjson(mixed: MixedImport) -> None:
    """GIVEN the job's output WHEN the manifest is compared with the lines THEN every counter and image set agrees."""
    summary = json.loads(mixed.outputs[MANIFEST])["jobSummary"]
    folder = mixed.properties["outputS3Uri"]
    success = mixed.lines("SUCCESS/success.ndjson")
    warning = mixed.lines("WARNING/warning.ndjson")
    failure = mixed.lines("FAILURE/failure.ndjson")

    assert set(summary) == {
        "jobId",
        "datastoreId",
        "inputS3Uri",
        "outputS3Uri",
        "successOutputS3Uri",
        "failureOutputS3Uri",
        "warningsOutputS3Uri",
        "numberOfScannedFiles",
        "numberOfImportedFiles",
        "numberOfFilesWithCustomerError",
        "numberOfFilesWithServerError",
        "numberOfGeneratedImageSets",
        "imageSetsSummary",
    }
    assert (summary["jobId"], summary["datastoreId"]) == (mixed.job_id, mixed.datastore_id)
    assert summary["outputS3Uri"] == folder
    assert summary["successOutputS3Uri"] == folder + "SUCCESS/"
    assert summary["failureOutputS3Uri"] == folder + "FAILURE/"
    assert summary["warningsOutputS3Uri"] == folder + "WARNING/"
    # The folder marker and the sibling prefix "dicom_input2/" are not scanned.
    assert summary["numberOfScannedFiles"] == len(mixed.sources) == 12
    assert summary["numberOfImportedFiles"] == len(success) + len(warning) == 10
    assert summary["numberOfFilesWithCustomerError"] == len(failure) == 2
    assert summary["numberOfFilesWithServerError"] == 0
    assert {line["inputFile"] for line in success} == SUCCESS_KEYS
    assert {line["inputFile"] for line in warning} == set(WARNING_CODES)
    assert {line["inputFile"] for line in failure} == FAILURE_KEYS

    per_set = Counter(line["importResponse"]["imageSetId"] for line in success + warning)
    series = {
        (
            str(read(mixed.sources[line["inputFile"]]).StudyInstanceUID),
            str(read(mixed.sources[line["inputFile"]]).SeriesInstanceUID),
        )
        for line in success + warning
    }
    assert summary["numberOfGeneratedImageSets"] == len(summary["imageSetsSummary"]) == len(series) == len(per_set)
    assert summary["imageSetsSummary"] == [
        {
            "imageSetId": item["imageSetId"],
            "imageSetVersion": 1,
            "isPrimary": True,
            "numberOfMatchedSOPInstances": per_set[item["imageSetId"]],
        }
        for item in summary["imageSetsSummary"]
    ]
    assert {item["imageSetId"] for item in summary["imageSetsSummary"]} == set(per_set)
    # The two SC_rgb files share their study and series, so they share one image set.
    assert mixed.image_set_of("dicom_input/rgb/SC_rgb_jpeg_dcmtk.dcm") == mixed.image_set_of(
        "dicom_input/rgb/SC_rgb_rle_2frame.dcm"
    )
    for line in success:
        assert line["importResponse"]["isPrimary"] is True


def test_failure_lines_explain_without_patient_data(mixed: MixedImport) -> None:
    """GIVEN a text file and a file without TransferSyntaxUID WHEN imported THEN ValidationException lines
    name the problem and carry no patient name or ID of any input."""
    failure = {line["inputFile"]: line["exception"] for line in mixed.lines("FAILURE/failure.ndjson")}
    patient_values = set()
    for body in mixed.sources.values():
        try:
            ds = read(body)
        except pydicom.errors.InvalidDicomError:
            continue
        patient_values |= {str(ds.get(k)) for k in ("PatientName", "PatientID") if ds.get(k)}

    assert failure["dicom_input/notes/readme.txt"]["exceptionType"] == "ValidationException"
    assert "not a DICOM P10 file" in failure["dicom_input/notes/readme.txt"]["message"]
    assert failure["dicom_input/meta_missing_tsyntax.dcm"] == {
        "exceptionType": "ValidationException",
        "message": "DICOM attribute TransferSyntaxUID does not exist",
    }
    for exception in failure.values():
        assert not any(value in exception["message"] for value in patient_values)


def test_warning_files_are_stored_as_blobs(mixed: MixedImport) -> None:
    """GIVEN a video file and an undecodable JPEG lossless file WHEN imported THEN WARNING lines with codes
    45344 / 45312, and one blob frame each in the source syntax with the CRC-32 of its bytes."""
    for line in mixed.lines("WARNING/warning.ndjson"):
        key = line["inputFile"]
        response = line["importResponse"]
        (warning,) = response["warnings"]
        assert warning["warning_reason_code"] == WARNING_CODES[key]
        assert response["isPrimary"] is True
        assert response["imageSetVersion"] == 1
        instance = mixed.instance(key)
        ds = read(mixed.sources[key])
        assert instance["StoredTransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID
        (frame,) = instance["ImageFrames"]
        blob, _ = mixed.frame(key, 0)
        assert blob == b"".join(encapsulated_frames(ds))
        assert frame["PixelDataChecksumFromBaseToFullResolution"] == [
            {"Width": ds.Columns, "Height": ds.Rows, "Checksum": zlib.crc32(blob)}
        ]
    _, content_type = mixed.frame("dicom_input/video.dcm", 0)
    assert content_type == "video/mpeg"


def test_ct1_unc_lists_the_known_ifrc(mixed: MixedImport) -> None:
    """GIVEN the shared CT1_UNC fixture in a nested folder WHEN imported THEN its frame's full-resolution
    checksum is 1052635650 and the HTJ2K frame decodes to the original PixelData."""
    instance = mixed.instance("dicom_input/deep/a/b/CT1_UNC")
    (frame,) = instance["ImageFrames"]
    data, content_type = mixed.frame("dicom_input/deep/a/b/CT1_UNC", 0)

    assert frame["PixelDataChecksumFromBaseToFullResolution"][-1] == {
        "Width": 512,
        "Height": 512,
        "Checksum": CT1_UNC_CRC,
    }
    assert content_type == "image/jph"
    decoded = imagecodecs.htj2k_decode(data, planar=False)
    assert decoded.tobytes() == read(mixed.sources["dicom_input/deep/a/b/CT1_UNC"]).PixelData
    assert frame["FrameSizeInBytes"] == 524288


@pytest.mark.parametrize(
    "key",
    [
        "dicom_input/ct/CT_small.dcm",
        "dicom_input/mr/MR_small_RLE.dcm",
        "dicom_input/rgb/SC_rgb_rle_2frame.dcm",
        "dicom_input/deep/a/b/CT1_UNC",
    ],
)
def test_transcoded_frames_decode_to_the_normalised_source(mixed: MixedImport, key: str) -> None:
    """GIVEN a transcoded instance WHEN each stored frame is decoded THEN it equals the normalised source
    frame exactly, and the listed checksum, min/max and size are those of that array."""
    ds = read(mixed.sources[key])
    instance = mixed.instance(key)
    expected = expected_frames(ds)

    assert "StoredTransferSyntaxUID" not in instance
    assert instance["ChecksumType"] == "DECOMPRESSED"
    assert instance["DICOM"]["TransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID
    assert len(instance["ImageFrames"]) == len(expected)
    for index, (entry, source) in enumerate(zip(instance["ImageFrames"], expected, strict=True)):
        data, content_type = mixed.frame(key, index)
        decoded = imagecodecs.htj2k_decode(data, planar=False)
        assert content_type == "image/jph"
        assert decoded.dtype == source.dtype
        assert np.array_equal(decoded, source)
        full = entry["PixelDataChecksumFromBaseToFullResolution"][-1]
        assert full == {"Width": ds.Columns, "Height": ds.Rows, "Checksum": crc(source)}
        assert (entry["MinPixelValue"], entry["MaxPixelValue"]) == (int(source.min()), int(source.max()))
        assert entry["FrameSizeInBytes"] == source.nbytes


@pytest.mark.parametrize(
    ("key", "content_type"),
    [("dicom_input/j2k/JPEG2000.dcm", "image/j2c"), ("dicom_input/rgb/SC_rgb_jpeg_dcmtk.dcm", "image/jpeg")],
)
def test_retained_frames_keep_the_original_bytes(mixed: MixedImport, key: str, content_type: str) -> None:
    """GIVEN JPEG 2000 (.91) and JPEG baseline (.50) files WHEN imported THEN the frames are the original
    frame bytes, StoredTransferSyntaxUID is the source syntax, the checksum is CRC-32 of those bytes and
    Min/Max are null."""
    ds = read(mixed.sources[key])
    instance = mixed.instance(key)

    assert ds.file_meta.TransferSyntaxUID in RETAINED
    assert instance["StoredTransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID
    assert "ChecksumType" not in instance
    for index, (entry, original) in enumerate(zip(instance["ImageFrames"], encapsulated_frames(ds), strict=True)):
        assert mixed.frame(key, index) == (original, content_type)
        assert entry["PixelDataChecksumFromBaseToFullResolution"] == [
            {"Width": ds.Columns, "Height": ds.Rows, "Checksum": zlib.crc32(original)}
        ]
        assert entry["MinPixelValue"] is None
        assert entry["MaxPixelValue"] is None
        assert entry["FrameSizeInBytes"] == len(original)


def test_binary_segmentation_is_retained_as_packed_bits(mixed: MixedImport) -> None:
    """GIVEN liver_1frame.dcm (Segmentation Storage, BitsAllocated 1) WHEN imported THEN one explicit-LE
    frame holding the packed bits, checksum CRC-32 of them."""
    key = "dicom_input/seg/liver_1frame.dcm"
    ds = read(mixed.sources[key])
    instance = mixed.instance(key)
    (expected,) = packed_segmentation_frames(ds)

    assert ds.SOPClassUID == SEGMENTATION
    assert instance["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert mixed.frame(key, 0) == (expected, "application/octet-stream")
    assert expected == ds.PixelData  # 512 x 512 is a multiple of 8: the native frame bytes
    assert instance["ImageFrames"][0]["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == zlib.crc32(
        expected
    )


def test_instance_without_pixel_data_has_no_frames(mixed: MixedImport) -> None:
    """GIVEN an RT plan WHEN imported THEN it is a SUCCESS line and its instance has DICOM but no ImageFrames."""
    instance = mixed.instance("dicom_input/rt/rtplan.dcm")

    assert "ImageFrames" not in instance
    assert instance["DICOM"]["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.481.5"


def test_metadata_keeps_dicom_attributes_by_level(mixed: MixedImport) -> None:
    """GIVEN CT_small.dcm WHEN imported THEN Patient/Study/Series/Instance DICOM hold the file's values."""
    key = "dicom_input/ct/CT_small.dcm"
    ds = read(mixed.sources[key])
    doc = mixed.emulator.metadata(mixed.datastore_id, mixed.image_set_of(key))
    (series,) = doc["Study"]["Series"].values()
    instance = mixed.instance(key)

    assert doc["Patient"]["DICOM"]["PatientName"] == str(ds.PatientName)
    assert doc["Patient"]["DICOM"]["PatientID"] == ds.PatientID
    assert doc["Study"]["DICOM"]["StudyInstanceUID"] == ds.StudyInstanceUID
    assert series["DICOM"]["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert series["DICOM"]["Modality"] == ds.Modality
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
    ):
        assert instance["DICOM"][keyword] == ds[keyword].value
    assert instance["DICOM"]["PhotometricInterpretation"] == ds.PhotometricInterpretation
    assert instance["DICOM"]["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    rgb = mixed.instance("dicom_input/rgb/SC_rgb_rle_2frame.dcm")["DICOM"]
    assert (rgb["NumberOfFrames"], rgb["PlanarConfiguration"], rgb["SamplesPerPixel"]) == ("2", 0, 3)


def test_completed_event_has_the_eventbridge_shape(mixed: MixedImport) -> None:
    """GIVEN an event sink WHEN the job completes THEN it receives one 'Import Job Completed' event in the
    documented shape, with the caller's bare output prefix (the job's image sets send their own 'Image Set
    Created' events, one per image set)."""
    (event,) = [e for e in mixed.events if e["detail-type"].startswith("Import Job")]
    created = [e["detail"]["imageSetId"] for e in mixed.events if e["detail-type"] == "Image Set Created"]
    manifest = json.loads(mixed.outputs["job-output-manifest.json"])
    assert sorted(created) == sorted({i["imageSetId"] for i in manifest["jobSummary"]["imageSetsSummary"]})

    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}
    assert event["version"] == "0"
    assert len(event["id"]) == 36
    assert event["detail-type"] == "Import Job Completed"
    assert event["source"] == "aws.medical-imaging"
    assert event["account"] == "123456789012"
    assert time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    assert event["region"] == "us-east-1"
    assert event["resources"] == [f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{mixed.datastore_id}"]
    assert event["detail"] == {
        "imagingVersion": "1.0",
        "datastoreId": mixed.datastore_id,
        "jobId": mixed.job_id,
        "jobName": "mixed-folder",
        "jobStatus": "COMPLETED",
        "inputS3Uri": f"s3://{IN_BUCKET}/dicom_input",
        "outputS3Uri": f"s3://{OUT_BUCKET}/job_output",
    }


def test_manifest_fires_the_bucket_notification(mixed: MixedImport) -> None:
    """GIVEN an SQS notification on the output bucket for the manifest suffix WHEN the job writes it
    THEN one ObjectCreated record arrives whose key, once unquote_plus-decoded, is the manifest
    (moto encodes '/' as %2F)."""
    manifest_records = [r for r in mixed.notifications if unquote_plus(r["s3"]["object"]["key"]).endswith(MANIFEST)]

    (record,) = manifest_records
    assert record["eventName"].startswith("ObjectCreated")
    assert record["s3"]["bucket"]["name"] == OUT_BUCKET
    assert unquote_plus(record["s3"]["object"]["key"]) == job_prefix(mixed.datastore_id, mixed.job_id) + MANIFEST
    assert "%2F" in record["s3"]["object"]["key"]


# ------------------------------------------------------------------------------------- codec matrix


def _matrix_sources() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    twelve = rng.integers(0, 4096, (8, 10)).astype(np.uint16)  # make_p10 default size
    sources = {
        name: bundled(name).read_bytes()
        for name in (
            "MR_small_bigendian.dcm",  # Explicit VR Big Endian
            "MR_small_implicit.dcm",  # Implicit VR Little Endian
            "image_dfl.dcm",  # Deflated
            "ExplVR_BigEnd.dcm",  # big endian RGB, PlanarConfiguration 1
            "SC_ybr_full_422_uncompressed.dcm",  # YBR_FULL_422 stays YBR
            "MR_small_jpeg_ls_lossless.dcm",  # .80
            "MR_small_jp2klossless.dcm",  # .90
            "GDCMJ2K_TextGBR.dcm",  # .90 YBR_RCT colour
            "J2K_pixelrep_mismatch.dcm",  # .90, 13-bit signed
            "JPGExtended.dcm",  # .51, 12-bit
            "SC_rgb_jpeg_gdcm.dcm",  # .70 RGB
            "SC_rgb_rle_16bit.dcm",  # RLE 16-bit RGB
            "SC_rgb_rle_32bit_2frame.dcm",  # RLE 32-bit RGB, 2 frames
            "rtdose.dcm",  # implicit, 32-bit, 15 frames
        )
    }
    sources["htj2k_201.dcm"] = make_p10(
        "1.2.840.10008.1.2.4.201", frames=[bytes(imagecodecs.htj2k_encode(twelve, reversible=True))], bits_stored=12
    )
    sources["ljpeg_57.dcm"] = make_p10(
        "1.2.840.10008.1.2.4.57",
        frames=[bytes(imagecodecs.ljpeg_encode(twelve, bitspersample=12))],
        bits_stored=12,
    )
    sources["jpeg_ls_near_lossless_81.dcm"] = make_p10(
        "1.2.840.10008.1.2.4.81", frames=[bytes(imagecodecs.jpegls_encode(twelve, level=2))], bits_stored=12
    )
    dirty = twelve | 0x5000
    sources["j2k_dirty_high_bits.dcm"] = make_p10(
        "1.2.840.10008.1.2.4.90",
        frames=[bytes(imagecodecs.jpeg2k_encode(dirty, level=0, codecformat="j2k", reversible=True))],
        bits_stored=12,
    )
    return sources


def test_every_transcoded_source_syntax_round_trips(aws: Aws) -> None:
    """GIVEN one file per transcoded syntax and pixel layout, each in its own concurrent job
    WHEN the jobs complete THEN every stored HTJ2K frame decodes to the normalised source frame and lists its
    CRC-32, and the Instance DICOM keeps the source TransferSyntaxUID."""
    sources = _matrix_sources()
    upload(aws.s3, {f"matrix/{name}/{name}": body for name, body in sources.items()})
    emulator = Emulator()
    datastore_id = emulator.create_datastore()
    jobs = {
        name: emulator.start_import_job(datastore_id, f"s3://{IN_BUCKET}/matrix/{name}/", f"s3://{OUT_BUCKET}/matrix/")
        for name in sources
    }

    for name, job_id in jobs.items():
        assert emulator.wait_for_job(datastore_id, job_id)["jobStatus"] == "COMPLETED", name
        found = outputs(aws.s3, job_prefix(datastore_id, job_id, "matrix/"))
        success = lines(found["SUCCESS/success.ndjson"])
        assert len(success) == 1, (name, found)
        ds = read(sources[name])
        image_set_id = success[0]["importResponse"]["imageSetId"]
        instance = instances_by_sop(emulator.metadata(datastore_id, image_set_id))[ds.SOPInstanceUID]
        assert "StoredTransferSyntaxUID" not in instance, name
        assert instance["DICOM"]["TransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID, name
        expected = expected_frames(ds)
        assert len(instance["ImageFrames"]) == len(expected), name
        for entry, source in zip(instance["ImageFrames"], expected, strict=True):
            data, _ = emulator.frame(datastore_id, image_set_id, entry["ID"])
            decoded = imagecodecs.htj2k_decode(data, planar=False)
            assert decoded.dtype == source.dtype, name
            assert np.array_equal(decoded, source), name
            assert entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == crc(source), name
    # The dirty-high-bits J2K file lists the checksum of the masked values.
    assert int(expected_frames(read(sources["j2k_dirty_high_bits.dcm"]))[0].max()) < 4096


# -------------------------------------------------------------------------------- control plane (boto3)


@pytest.fixture
def http_client(aws: Aws, make_client: ClientFactory, emulator: Emulator) -> Any:
    """boto3 medical-imaging at the EmulatorServer; the emulator's jobs reach moto through the environment.

    These tests start several jobs a second with retries off, which the service's 1 TPS (burst 2)
    StartDICOMImportJob quota would throttle; quotas have tests of their own, so this one is lifted.
    """
    emulator.set_quota("StartDICOMImportJob", None)
    return make_client()


def test_boto3_start_get_list_and_idempotency(
    aws: Aws, http_client: Any, server: EmulatorServer, datastore_id: str
) -> None:
    """GIVEN an emulator behind HTTP WHEN plain boto3 starts, gets and lists import jobs THEN the responses
    have the model's shapes, the same clientToken returns the same job, and the paginator pages by maxResults."""
    upload(aws.s3, {"small/CT_small.dcm": bundled("CT_small.dcm").read_bytes()})
    common = {
        "datastoreId": datastore_id,
        "dataAccessRoleArn": "arn:aws:iam::123456789012:role/ImportRole",
        "inputS3Uri": f"s3://{IN_BUCKET}/small/",
        "outputS3Uri": f"s3://{OUT_BUCKET}/job_output/",
    }

    started = http_client.start_dicom_import_job(jobName="first", clientToken="token-1", **common)
    again = http_client.start_dicom_import_job(jobName="first", clientToken="token-1", **common)
    others = [http_client.start_dicom_import_job(clientToken=f"token-{n}", **common)["jobId"] for n in (2, 3)]

    assert started["jobStatus"] == "SUBMITTED"
    assert started["datastoreId"] == datastore_id
    assert again["jobId"] == started["jobId"]
    job_ids = [started["jobId"], *others]
    assert len(set(job_ids)) == 3
    for job_id in job_ids:
        server.emulator.wait_for_job(datastore_id, job_id)

    properties = http_client.get_dicom_import_job(datastoreId=datastore_id, jobId=started["jobId"])["jobProperties"]
    assert properties["jobStatus"] == "COMPLETED"
    assert properties["jobName"] == "first"
    assert properties["dataAccessRoleArn"] == common["dataAccessRoleArn"]
    assert properties["inputS3Uri"] == common["inputS3Uri"]
    assert properties["outputS3Uri"] == f"s3://{OUT_BUCKET}/{job_prefix(datastore_id, started['jobId'])}"
    assert properties["endedAt"] >= properties["submittedAt"] == started["submittedAt"]
    assert "message" not in properties

    pages = list(
        http_client.get_paginator("list_dicom_import_jobs").paginate(
            datastoreId=datastore_id, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["jobSummaries"]) for page in pages] == [2, 1]
    summaries = [item for page in pages for item in page["jobSummaries"]]
    assert [item["jobId"] for item in summaries] == job_ids
    assert set(summaries[0]) == {
        "jobId",
        "jobName",
        "jobStatus",
        "datastoreId",
        "dataAccessRoleArn",
        "endedAt",
        "submittedAt",
    }
    assert http_client.list_dicom_import_jobs(datastoreId=datastore_id, jobStatus="FAILED")["jobSummaries"] == []
    completed = http_client.list_dicom_import_jobs(datastoreId=datastore_id, jobStatus="COMPLETED")
    assert len(completed["jobSummaries"]) == 3
    assert "nextToken" not in completed

    # The runtime plane serves what the job imported.
    image_set_id = lines(outputs(aws.s3, job_prefix(datastore_id, started["jobId"]))["SUCCESS/success.ndjson"])[0][
        "importResponse"
    ]["imageSetId"]
    doc = server.emulator.metadata(datastore_id, image_set_id)
    (instance,) = instances_by_sop(doc).values()
    (entry,) = instance["ImageFrames"]
    blob = http_client.get_image_frame(
        datastoreId=datastore_id, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": entry["ID"]}
    )["imageFrameBlob"].read()
    checksum = entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"]
    assert zlib.crc32(np.ascontiguousarray(imagecodecs.htj2k_decode(blob, planar=False))) == checksum


def test_boto3_errors(aws: Aws, http_client: Any, datastore_id: str) -> None:
    """GIVEN the control plane WHEN asked for unknown jobs or data stores, or given invalid input
    THEN ResourceNotFoundException (404) or ValidationException (400)."""
    valid = {
        "datastoreId": datastore_id,
        "dataAccessRoleArn": "arn:aws:iam::123456789012:role/ImportRole",
        "clientToken": "t",
        "inputS3Uri": f"s3://{IN_BUCKET}/in/",
        "outputS3Uri": f"s3://{OUT_BUCKET}/out/",
    }
    cases: list[tuple[str, dict[str, Any], str, int]] = [
        ("get_dicom_import_job", {"datastoreId": datastore_id, "jobId": "0" * 32}, "ResourceNotFoundException", 404),
        ("get_dicom_import_job", {"datastoreId": "1" * 32, "jobId": "abc"}, "ResourceNotFoundException", 404),
        ("list_dicom_import_jobs", {"datastoreId": "1" * 32}, "ResourceNotFoundException", 404),
        ("start_dicom_import_job", {**valid, "datastoreId": "1" * 32}, "ResourceNotFoundException", 404),
        ("start_dicom_import_job", {**valid, "inputS3Uri": "https://bucket/in/"}, "ValidationException", 400),
        ("start_dicom_import_job", {**valid, "outputS3Uri": "s3://Bad_Bucket/out/"}, "ValidationException", 400),
        (
            "start_dicom_import_job",
            {**valid, "dataAccessRoleArn": "arn:aws:iam::1:user/someone-x"},
            "ValidationException",
            400,
        ),
        ("start_dicom_import_job", {**valid, "clientToken": "spaces are invalid"}, "ValidationException", 400),
        ("get_dicom_import_job", {"datastoreId": "NOT-A-DATASTORE", "jobId": "abc"}, "ValidationException", 400),
        ("list_dicom_import_jobs", {"datastoreId": datastore_id, "nextToken": "garbage"}, "ValidationException", 400),
    ]
    for operation, params, code, status in cases:
        with pytest.raises(http_client.exceptions.ClientError) as caught:
            getattr(http_client, operation)(**params)
        error = caught.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status), (
            operation,
            params,
        )
    assert http_client.list_dicom_import_jobs(datastoreId=datastore_id)["jobSummaries"] == []


# ------------------------------------------------------------------------------------- failed jobs


def test_missing_input_bucket_fails_the_job_without_a_manifest(aws: Aws, tmp_path: Path) -> None:
    """GIVEN an input bucket that does not exist WHEN the job runs THEN it is FAILED with a message, writes
    nothing, sends 'Import Job Failed', and save/load keeps the job record."""
    events: list[dict[str, Any]] = []
    emulator = Emulator()
    emulator.on_event = events.append
    datastore_id = emulator.create_datastore()

    job_id = emulator.start_import_job(datastore_id, "s3://no-such-input-bucket/in/", f"s3://{OUT_BUCKET}/out/")
    properties = emulator.wait_for_job(datastore_id, job_id, wait_for_outputs=True)

    assert properties["jobStatus"] == "FAILED"
    assert "NoSuchBucket" in properties["message"]
    assert "endedAt" in properties
    assert outputs(aws.s3, "out/") == {}
    (event,) = events
    assert event["detail-type"] == "Import Job Failed"
    assert event["detail"]["jobStatus"] == "FAILED"
    assert (
        emulator.list_import_jobs(datastore_id, job_status="FAILED")["jobSummaries"][0]["message"]
        == properties["message"]
    )

    loaded = Emulator.load(emulator.save(tmp_path / "state"))
    assert loaded.import_jobs(datastore_id) == emulator.import_jobs(datastore_id)
    # Client tokens survive save/load, so a repeated start stays idempotent.
    token = "keep-this-token"  # noqa: S105
    token_job = emulator.start_import_job(
        datastore_id, "s3://no-such-input-bucket/in/", f"s3://{OUT_BUCKET}/o/", client_token=token
    )
    emulator.wait_for_job(datastore_id, token_job, wait_for_outputs=True)
    reloaded = Emulator.load(emulator.save(tmp_path / "state2"))
    assert (
        reloaded.start_import_job(datastore_id, "s3://x-bucket/a/", "s3://x-bucket/b/", client_token=token) == token_job
    )


def test_missing_output_bucket_fails_the_job(aws: Aws) -> None:
    """GIVEN an output bucket that does not exist WHEN the job runs THEN FAILED with a message naming it."""
    upload(aws.s3, {"one/CT_small.dcm": bundled("CT_small.dcm").read_bytes()})
    emulator = Emulator()
    datastore_id = emulator.create_datastore()

    job_id = emulator.start_import_job(datastore_id, f"s3://{IN_BUCKET}/one/", "s3://no-such-output-bucket/out/")
    properties = emulator.wait_for_job(datastore_id, job_id)

    assert properties["jobStatus"] == "FAILED"
    assert "cannot be written" in properties["message"]


# ------------------------------------------------------------------------------------------- faults

FAULT_INPUT = {
    "a/CT_small.dcm": "CT_small.dcm",  # HTJ2K, 1 frame
    "b/SC_rgb_jpeg_dcmtk.dcm": "SC_rgb_jpeg_dcmtk.dcm",  # retained JPEG, 1 frame
    "c/MR_small_RLE.dcm": "MR_small_RLE.dcm",  # HTJ2K, 1 frame
}


def _fault_job(aws: Aws, faults: ImportFaults, emulator: Emulator | None = None) -> tuple[Emulator, str, str]:
    upload(aws.s3, {f"faults/{key}": bundled(name).read_bytes() for key, name in FAULT_INPUT.items()})
    emulator = emulator or Emulator()
    datastore_id = emulator.create_datastore()
    job_id = emulator.start_import_job(
        datastore_id, f"s3://{IN_BUCKET}/faults/", f"s3://{OUT_BUCKET}/out/", faults=faults
    )
    return emulator, datastore_id, job_id


def _frames_in_manifest_order(
    emulator: Emulator, datastore_id: str, manifest: dict[str, Any]
) -> list[tuple[StoredFrameRef, dict[str, Any]]]:
    result = []
    for item in manifest["jobSummary"]["imageSetsSummary"]:
        doc = emulator.metadata(datastore_id, item["imageSetId"])
        for instance in instances_by_sop(doc).values():
            for entry in instance.get("ImageFrames", []):
                result.append((StoredFrameRef(item["imageSetId"], entry["ID"]), entry))
    return result


def test_corrupt_frames_and_wrong_checksums_are_recorded(aws: Aws) -> None:
    """GIVEN corrupt_frames=2 and wrong_checksums=1 WHEN the job completes THEN the first two frames are
    corrupted after their checksums were taken, the last frame lists a wrong checksum, and job_faults names them."""
    emulator, datastore_id, job_id = _fault_job(aws, ImportFaults(corrupt_frames=2, wrong_checksums=1))
    emulator.wait_for_job(datastore_id, job_id)
    manifest = json.loads(outputs(aws.s3, job_prefix(datastore_id, job_id, "out/"))[MANIFEST])
    frames = _frames_in_manifest_order(emulator, datastore_id, manifest)

    injected = emulator.job_faults(job_id)

    assert injected.corrupted_frames == [ref for ref, _ in frames[:2]]
    assert list(injected.wrong_checksums) == [frames[2][0]]
    # Frame 1 is HTJ2K: it still decodes, to pixels whose CRC no longer matches the listed one.
    ref, entry = frames[0]
    data, _ = emulator.frame(datastore_id, ref.image_set_id, ref.frame_id)
    listed = entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"]
    assert zlib.crc32(np.ascontiguousarray(imagecodecs.htj2k_decode(data, planar=False))) != listed
    # Frame 2 is the retained JPEG: its bytes no longer match the CRC of the original frame.
    ref, entry = frames[1]
    data, content_type = emulator.frame(datastore_id, ref.image_set_id, ref.frame_id)
    assert content_type == "image/jpeg"
    assert zlib.crc32(data) != entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"]
    # Frame 3's pixels are intact, but the metadata lists the complement of the right checksum.
    ref, entry = frames[2]
    listed_wrong, correct = injected.wrong_checksums[ref]
    data, _ = emulator.frame(datastore_id, ref.image_set_id, ref.frame_id)
    assert zlib.crc32(np.ascontiguousarray(imagecodecs.htj2k_decode(data, planar=False))) == correct
    assert entry["PixelDataChecksumFromBaseToFullResolution"][-1]["Checksum"] == listed_wrong == correct ^ 0xFFFFFFFF


def test_fail_files_count_as_customer_and_server_errors(aws: Aws) -> None:
    """GIVEN fail_files by basename and server_error_files by key WHEN the job completes THEN FAILURE lines
    with ValidationException / InternalServerException and the matching manifest counters."""
    faults = ImportFaults(fail_files=["CT_small.dcm"], server_error_files=["faults/c/MR_small_RLE.dcm"])
    emulator, datastore_id, job_id = _fault_job(aws, faults)

    assert emulator.wait_for_job(datastore_id, job_id)["jobStatus"] == "COMPLETED"

    found = outputs(aws.s3, job_prefix(datastore_id, job_id, "out/"))
    summary = json.loads(found[MANIFEST])["jobSummary"]
    failure = {line["inputFile"]: line["exception"]["exceptionType"] for line in lines(found["FAILURE/failure.ndjson"])}
    assert failure == {
        "faults/a/CT_small.dcm": "ValidationException",
        "faults/c/MR_small_RLE.dcm": "InternalServerException",
    }
    assert (summary["numberOfScannedFiles"], summary["numberOfImportedFiles"]) == (3, 1)
    assert (summary["numberOfFilesWithCustomerError"], summary["numberOfFilesWithServerError"]) == (1, 1)
    assert "WARNING/warning.ndjson" not in found
    assert emulator.job_faults(job_id).failed_files == ["faults/a/CT_small.dcm", "faults/c/MR_small_RLE.dcm"]


def test_manifest_delay_completes_before_the_manifest_exists(aws: Aws) -> None:
    """GIVEN manifest_delay_s WHEN the job reports COMPLETED (and sends its event) THEN the ndjson files exist
    but the manifest appears only after the delay."""
    events: list[dict[str, Any]] = []
    emulator, datastore_id, job_id = _fault_job(
        aws, ImportFaults(manifest_delay_s=1.0), Emulator(on_event=events.append)
    )
    prefix = job_prefix(datastore_id, job_id, "out/")

    assert emulator.wait_for_job(datastore_id, job_id)["jobStatus"] == "COMPLETED"
    assert [event["detail-type"] for event in events if event["detail-type"] != "Image Set Created"] == [
        "Import Job Completed"
    ]
    assert set(outputs(aws.s3, prefix)) == {"SUCCESS/success.ndjson"}

    emulator.wait_for_job(datastore_id, job_id, wait_for_outputs=True)
    assert MANIFEST in outputs(aws.s3, prefix)


def test_write_manifest_false_completes_without_one(aws: Aws) -> None:
    """GIVEN write_manifest=False WHEN the job ends THEN it is COMPLETED with ndjson files and no manifest."""
    emulator, datastore_id, job_id = _fault_job(aws, ImportFaults(write_manifest=False))

    assert emulator.wait_for_job(datastore_id, job_id, wait_for_outputs=True)["jobStatus"] == "COMPLETED"
    assert set(outputs(aws.s3, job_prefix(datastore_id, job_id, "out/"))) == {"SUCCESS/success.ndjson"}


def test_import_faults_set_over_the_admin_api(
    aws: Aws, http_client: Any, server: EmulatorServer, datastore_id: str
) -> None:
    """GIVEN import faults POSTed to /_emulator/import-faults WHEN boto3 starts a job THEN the job applies
    them and /_emulator/import-jobs/<id>/faults reports what changed."""
    upload(aws.s3, {f"faults/{key}": bundled(name).read_bytes() for key, name in FAULT_INPUT.items()})

    def admin(method: str, path: str, body: Any = None) -> Any:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            return json.loads(response.read())
        finally:
            connection.close()

    assert (
        admin("POST", "/_emulator/import-faults", {"corrupt_frames": 1, "fail_files": ["MR_small_RLE.dcm"]})[
            "corrupt_frames"
        ]
        == 1
    )
    job_id = http_client.start_dicom_import_job(
        datastoreId=datastore_id,
        dataAccessRoleArn="arn:aws:iam::123456789012:role/ImportRole",
        clientToken="admin-faults",
        inputS3Uri=f"s3://{IN_BUCKET}/faults/",
        outputS3Uri=f"s3://{OUT_BUCKET}/out/",
    )["jobId"]
    server.emulator.wait_for_job(datastore_id, job_id)

    record = admin("GET", f"/_emulator/import-jobs/{job_id}/faults")
    assert len(record["corruptedFrames"]) == 1
    assert record["failedFiles"] == ["faults/c/MR_small_RLE.dcm"]
    assert admin("DELETE", "/_emulator/import-faults") is None


# ---------------------------------------------------------------------------------------------- CLI


def test_serve_runs_import_jobs_against_s3_from_the_environment(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN 'ahi-emulator serve --datastore-id' started with AWS_ENDPOINT_URL_S3 at moto WHEN boto3 starts a
    job THEN it completes and its manifest is in moto."""
    upload(aws.s3, {"cli/CT_small.dcm": bundled("CT_small.dcm").read_bytes()})
    datastore_id = "c" * 32
    url_file = tmp_path / "url.txt"
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": aws.url}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ahi_emulator",
            "serve",
            "--data",
            str(tmp_path / "empty"),
            "--datastore-id",
            datastore_id,
            "--port",
            "0",
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no URL file after 30 s"
            time.sleep(0.05)
        monkeypatch.setenv("AWS_ENDPOINT_URL_MEDICAL_IMAGING", url_file.read_text().strip())
        monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")
        client = boto3.client("medical-imaging", config=Config(retries={"total_max_attempts": 1}))
        job_id = client.start_dicom_import_job(
            datastoreId=datastore_id,
            dataAccessRoleArn="arn:aws:iam::123456789012:role/ImportRole",
            inputS3Uri=f"s3://{IN_BUCKET}/cli/",
            outputS3Uri=f"s3://{OUT_BUCKET}/cli-out/",
        )["jobId"]
        while (
            status := client.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)["jobProperties"]["jobStatus"]
        ) not in ("COMPLETED", "FAILED"):
            assert time.monotonic() < deadline, "job still running after 30 s"
            time.sleep(0.1)
        client.close()
        assert status == "COMPLETED"
        assert MANIFEST in outputs(aws.s3, job_prefix(datastore_id, job_id, "cli-out/"))
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert datastore_id in out
