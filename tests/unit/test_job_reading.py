"""Reading a job folder: late manifest, split/absent ndjson files, malformed lines, count disagreements."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ahi_verify.job_output import LineKind
from ahi_verify.locations import LocationError, S3Location, job_folder
from ahi_verify.plan import read_job
from ahi_verify.ports import JobOutputError
from ahi_verify.s3_output import JobOutputReader, split_lines
from tests.fakes.s3 import FakeS3

DS, JOB = "a" * 32, "b" * 32
FOLDER = f"out/{DS}-DicomImport-{JOB}/"
ISET_1, ISET_2 = "1" * 32, "2" * 32


def manifest(imported: int = 3, failed: int = 1, image_sets: tuple[str, ...] = (ISET_1, ISET_2)) -> bytes:
    return json.dumps(
        {
            "jobSummary": {
                "jobId": JOB,
                "datastoreId": DS,
                "inputS3Uri": "s3://in/dicom/",
                "outputS3Uri": f"s3://bkt/{FOLDER}",
                "successOutputS3Uri": f"s3://bkt/{FOLDER}SUCCESS/",
                "failureOutputS3Uri": f"s3://bkt/{FOLDER}FAILURE/",
                "numberOfScannedFiles": imported + failed,
                "numberOfImportedFiles": imported,
                "numberOfFilesWithCustomerError": failed,
                "numberOfFilesWithServerError": 0,
                "numberOfGeneratedImageSets": len(image_sets),
                "imageSetsSummary": [{"imageSetId": i, "numberOfMatchedSOPInstances": 1} for i in image_sets],
            }
        }
    ).encode()


def success(name: str, iset: str) -> str:
    return json.dumps({"inputFile": f"dicom/{name}", "importResponse": {"imageSetId": iset, "isPrimary": True}})


def failure(name: str) -> str:
    return json.dumps(
        {"inputFile": f"dicom/{name}", "exception": {"exceptionType": "ValidationException", "message": "m"}}
    )


class NoSleep:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def folder_with(**files: str) -> tuple[FakeS3, S3Location]:
    s3 = FakeS3(page_size=2)
    s3.put("bkt", FOLDER + "job-output-manifest.json", manifest())
    for name, body in files.items():
        s3.put("bkt", FOLDER + name.replace("__", "/"), body.encode())
    return s3, job_folder(f"s3://bkt/{FOLDER}")


def test_split_success_files_and_absent_warning_prefix_are_all_read() -> None:
    # GIVEN SUCCESS split over two files (listed over several pages), one FAILURE line, no WARNING folder
    s3, folder = folder_with(
        SUCCESS__part1_ndjson="",
        **{
            "SUCCESS__success-1.ndjson": success("a.dcm", ISET_1) + "\n" + success("b.dcm", ISET_1) + "\n",
            "SUCCESS__success-2.ndjson": success("c.dcm", ISET_2),
            "FAILURE__failure.ndjson": failure("bad.dcm") + "\n",
        },
    )
    # WHEN read
    manifest_, findings, notes = read_job(JobOutputReader(s3, sleep=NoSleep()), folder, manifest_wait_s=0)
    # THEN every line is accounted for and counts agree with the manifest
    assert findings.lines == {LineKind.SUCCESS: 3, LineKind.FAILURE: 1}
    assert findings.files_per_image_set == {ISET_1: 2, ISET_2: 1}
    assert [f.input_file for f in findings.failures] == ["dicom/bad.dcm"]
    assert notes == []
    assert manifest_.failed_files == 1


def test_malformed_blank_and_huge_lines() -> None:
    huge = json.dumps({"inputFile": "dicom/" + "x" * 3_000_000, "importResponse": {"imageSetId": ISET_1}})
    body = "\n".join(
        [success("a.dcm", ISET_1), "", "   ", "{not json", huge, '{"inputFile": "z"}', success("b.dcm", ISET_2)]
    )
    s3, folder = folder_with(**{"SUCCESS__success.ndjson": body, "FAILURE__f.ndjson": failure("bad.dcm")})
    _, findings, notes = read_job(JobOutputReader(s3, sleep=NoSleep()), folder, manifest_wait_s=0)
    assert findings.lines[LineKind.SUCCESS] == 3
    assert [(p.key.rsplit("/", 1)[-1], p.line_number) for p in findings.problems] == [
        ("success.ndjson", 4),
        ("success.ndjson", 6),
    ]
    assert notes == []


def test_line_count_disagreements_are_notes_not_errors() -> None:
    # GIVEN fewer ndjson lines than the manifest's file totals (a relationship AWS does not document)
    s3, folder = folder_with(**{"SUCCESS__s.ndjson": success("a.dcm", "9" * 32)})
    _, _, notes = read_job(JobOutputReader(s3, sleep=NoSleep()), folder, manifest_wait_s=0)
    # THEN they are notes (an image set missing from the manifest is a discrepancy of the plan: test_plan.py)
    assert any("list 1 imported files; the manifest says 3" in n for n in notes)
    assert any("FAILURE files list 0 files" in n for n in notes)
    assert not any("missing from the manifest" in n for n in notes)


def test_late_manifest_is_retried_until_it_appears() -> None:
    # GIVEN a manifest that appears on the third read
    s3, folder = folder_with()
    body = s3.objects.pop(("bkt", FOLDER + "job-output-manifest.json"))
    sleeps = NoSleep()

    class Appearing(FakeS3):
        def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
            if Key.endswith("manifest.json") and len(sleeps.slept) == 2:
                self.put(Bucket, Key, body)
            return s3_get(Bucket, Key)

    late = Appearing()
    late.objects = s3.objects
    s3_get = FakeS3.get_object.__get__(late)
    # WHEN read with a wait THEN it is found after two retries
    manifest_, _, _ = read_job(JobOutputReader(late, sleep=sleeps), folder, manifest_wait_s=30)
    assert manifest_.job_id == JOB
    assert len(sleeps.slept) == 2


def test_missing_manifest_is_a_clear_error_after_waiting() -> None:
    s3, folder = folder_with()
    s3.objects.clear()
    with pytest.raises(JobOutputError, match=r"job-output-manifest\.json after waiting 0\.2 s: NoSuchKey"):
        read_job(JobOutputReader(s3, sleep=lambda _: None), folder, manifest_wait_s=0.2)


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        pytest.param(f"s3://bkt/{FOLDER}job-output-manifest.json", FOLDER, id="manifest"),
        pytest.param(f"s3://bkt/{FOLDER}", FOLDER, id="folder"),
        pytest.param(f"s3://bkt/{FOLDER[:-1]}", FOLDER, id="folder-without-slash"),
    ],
)
def test_job_folder_from_uri(uri: str, key: str) -> None:
    assert job_folder(uri) == S3Location("bkt", key)


def test_bad_uri_is_named() -> None:
    with pytest.raises(LocationError, match="not an s3://bucket/key URI"):
        job_folder("https://example.com/x")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1024])
def test_split_lines_is_independent_of_chunking(size: int) -> None:
    data = b"alpha\nbeta\n\ngamma-delta\nlast-without-newline"
    chunks = iter([data[i : i + size] for i in range(0, len(data), size)])
    assert list(split_lines(chunks)) == data.split(b"\n")
