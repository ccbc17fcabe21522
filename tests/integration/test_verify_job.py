"""`ahi-verify job` on jobs imported by the emulator into moto S3: statuses, failed files, three-way check,
injected faults, late and missing manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_emulator import Emulator, ImportFaults
from ahi_verify.cli import main
from tests.support import CT1_UNC_CRC

pytestmark = pytest.mark.integration

MIXED = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm"]


def upload_mixed(s3: Any, bucket: str, prefix: str, shared_fixtures: Path) -> None:
    s3.create_bucket(Bucket=bucket)
    for name in MIXED:
        s3.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=Path(get_testdata_file(name)).read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{prefix}nested/CT1_UNC", Body=(shared_fixtures / "CT1_UNC").read_bytes())
    s3.put_object(Bucket=bucket, Key=f"{prefix}notes.txt", Body=b"not a DICOM file")


def run_import(emulator: Emulator, s3: Any, tag: str, shared_fixtures: Path, **kw: Any) -> tuple[str, str, str]:
    datastore = emulator.create_datastore()
    upload_mixed(s3, f"in-{tag}", "dicom/", shared_fixtures)
    s3.create_bucket(Bucket=f"out-{tag}")
    job = emulator.start_import_job(datastore, f"s3://in-{tag}/dicom/", f"s3://out-{tag}/results/", **kw)
    return datastore, job, f"s3://out-{tag}/results/{datastore}-DicomImport-{job}/"


def run_job_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["job", *args, "--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def frames_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for image_set in doc["imageSets"] for f in image_set["frames"]]


@pytest.mark.usefixtures("aws_env")
def test_clean_import_verifies_every_frame_and_lists_the_failed_file(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a mixed folder imported by the emulator (one file is not DICOM)
    datastore, job, folder = run_import(emulator, s3, "clean", shared_fixtures)
    emulator.wait_for_job(datastore, job)
    # WHEN the job is verified with the three-way check
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    # THEN every frame matches and agrees with its source file, and the failed file is reported
    frames = frames_of(doc)
    assert len(frames) == 6  # CT_small, MR_small_RLE, the JPEG, 2 RLE frames, CT1_UNC
    assert {f["status"] for f in frames} == {"MATCH"}
    assert {f["source"]["relation"] for f in frames} == {"consistent"}
    assert CT1_UNC_CRC in {f["expected"] for f in frames}
    assert [f["inputFile"] for f in doc["failures"]] == ["dicom/notes.txt"]
    assert doc["summary"]["importFailures"] == 1
    assert all(not s["orphanSourceFrames"] and not s["sourceErrors"] for s in doc["imageSets"])
    # a failed file means not everything was verified, although nothing mismatched
    assert code == 3
    assert doc["verdict"] == "UNVERIFIED"


@pytest.mark.usefixtures("aws_env")
def test_source_file_gone_after_import_makes_the_job_unverified_not_clean(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a one-file import whose three-way check is clean
    datastore = emulator.create_datastore()
    s3.create_bucket(Bucket="in-gone")
    s3.create_bucket(Bucket="out-gone")
    s3.put_object(Bucket="in-gone", Key="dicom/CT1_UNC", Body=(shared_fixtures / "CT1_UNC").read_bytes())
    job = emulator.start_import_job(datastore, "s3://in-gone/dicom/", "s3://out-gone/results/")
    emulator.wait_for_job(datastore, job)
    folder = f"s3://out-gone/results/{datastore}-DicomImport-{job}/"
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    assert (code, doc["verdict"]) == (0, "CLEAN")
    # WHEN the source file is deleted and the job is verified again with the three-way check
    s3.delete_object(Bucket="in-gone", Key="dicom/CT1_UNC")
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    # THEN the stored frame still matches its checksum, but the job is UNVERIFIED (exit 3): the source
    # comparison did not happen, and the JSON verdict and the exit code say the same thing
    assert {f["status"] for f in frames_of(doc)} == {"MATCH"}
    assert {f["source"]["relation"] for f in frames_of(doc)} == {"source-unreadable"}
    assert [e["inputFile"] for s in doc["imageSets"] for e in s["sourceErrors"]] == ["dicom/CT1_UNC"]
    assert (code, doc["verdict"]) == (3, "UNVERIFIED")


@pytest.mark.usefixtures("aws_env")
def test_job_found_by_ids_through_get_dicom_import_job(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, job, folder = run_import(emulator, s3, "byid", shared_fixtures)
    emulator.wait_for_job(datastore, job)
    code, doc, _ = run_job_cli(capsys, "--datastore-id", datastore, "--job-id", job)
    assert doc["job"]["folder"] == folder
    assert doc["summary"]["frames"]["match"] == 6
    assert code == 3


@pytest.mark.usefixtures("aws_env")
def test_corrupted_frame_is_caught_as_storage_corruption(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, job, folder = run_import(emulator, s3, "corrupt", shared_fixtures, faults=ImportFaults(corrupt_frames=1))
    emulator.wait_for_job(datastore, job)
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    bad = [f for f in frames_of(doc) if f["status"] != "MATCH"]
    assert len(bad) == 1
    assert (bad[0]["status"], bad[0]["source"]["relation"]) == ("MISMATCH", "storage-corrupted")
    assert code == 1


@pytest.mark.usefixtures("aws_env")
def test_wrong_stored_checksum_is_caught_against_the_source(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, job, folder = run_import(
        emulator, s3, "wrongsum", shared_fixtures, faults=ImportFaults(wrong_checksums=1)
    )
    emulator.wait_for_job(datastore, job)
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    bad = [f for f in frames_of(doc) if f["status"] != "MATCH"]
    assert len(bad) == 1
    assert (bad[0]["status"], bad[0]["source"]["relation"]) == ("MISMATCH", "stored-checksum-wrong")
    assert code == 1


@pytest.mark.usefixtures("aws_env")
def test_late_manifest_is_waited_for(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a job that writes its manifest 3 s after the ndjson files
    datastore, job, folder = run_import(emulator, s3, "late", shared_fixtures, faults=ImportFaults(manifest_delay_s=3))
    # WHEN verified right away THEN the manifest is retried until it appears
    code, doc, _ = run_job_cli(capsys, folder, "--manifest-wait", "60")
    assert doc["summary"]["frames"]["match"] == 6
    assert code == 3
    emulator.wait_for_job(datastore, job)


@pytest.mark.usefixtures("aws_env")
def test_missing_manifest_is_a_clear_error_and_exit_3(
    emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datastore, job, folder = run_import(
        emulator, s3, "nomanifest", shared_fixtures, faults=ImportFaults(write_manifest=False)
    )
    emulator.wait_for_job(datastore, job)
    code, doc, err = run_job_cli(capsys, folder, "--manifest-wait", "1")
    assert code == 3
    assert "job-output-manifest.json after waiting 1 s: NoSuchKey" in doc["error"]
    assert "job could not be verified" in err


@pytest.mark.usefixtures("aws_env")
def test_table_report(emulator: Emulator, s3: Any, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datastore, job, folder = run_import(emulator, s3, "table", shared_fixtures, faults=ImportFaults(corrupt_frames=1))
    emulator.wait_for_job(datastore, job)
    code = main(["job", folder, "--source"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED    dicom/notes.txt" in out
    assert "THREE-WAY" in out
    assert "storage-corrupted" in out
    assert "6 frames: 5 match, 1 mismatch, 0 error; 1 failed files" in out


def test_job_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["job"], ["job", "s3://b/k/", "--datastore-id", "a" * 32, "--job-id", "b"], ["job", "--job-id", "B"]):
        with pytest.raises(SystemExit) as caught:
            main(args)
        assert caught.value.code == 2
