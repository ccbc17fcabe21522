"""CLEAN means complete: the plan verifies every image set the job names anywhere, and every count or
identity that disagrees (manifest, ndjson lines, metadata, GetDICOMImportJob) makes the job UNVERIFIED with
the reason in words."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ahi_verify.locations import job_folder
from ahi_verify.merge import merge_parts
from ahi_verify.outcomes import Status
from ahi_verify.plan import JobPlan, plan_job
from ahi_verify.ports import ImportJob, ImportJobError
from ahi_verify.report import FrameResult, JobReport, Part, Verdict
from ahi_verify.s3_output import JobOutputReader
from tests.fakes.s3 import FakeS3

DS, JOB = "a" * 32, "b" * 32
FOLDER = f"out/{DS}-DicomImport-{JOB}/"
FOLDER_URI = f"s3://bkt/{FOLDER}"
LISTED, UNLISTED = "1" * 32, "2" * 32
STARTED = "2026-12-01T00:00:00+00:00"


def manifest(**summary: Any) -> bytes:
    doc = {
        "jobId": JOB,
        "datastoreId": DS,
        "inputS3Uri": "s3://in/dicom/",
        "outputS3Uri": FOLDER_URI,
        "successOutputS3Uri": f"{FOLDER_URI}SUCCESS/",
        "failureOutputS3Uri": f"{FOLDER_URI}FAILURE/",
        "numberOfScannedFiles": 2,
        "numberOfImportedFiles": 2,
        "numberOfFilesWithCustomerError": 0,
        "numberOfFilesWithServerError": 0,
        "numberOfGeneratedImageSets": 1,
        "imageSetsSummary": [{"imageSetId": LISTED, "numberOfMatchedSOPInstances": 2}],
    }
    return json.dumps({"jobSummary": {**doc, **summary}}).encode()


def line(name: str, image_set: str, version: int | None = None) -> str:
    response: dict[str, Any] = {"imageSetId": image_set, "isPrimary": True}
    if version is not None:
        response["imageSetVersion"] = version
    return json.dumps({"inputFile": f"dicom/{name}", "importResponse": response})


class Jobs:
    """GetDICOMImportJob as the ImportJobs port: the job as declared, or not known, or failing."""

    def __init__(self, job: ImportJob | None = None, error: ImportJobError | None = None) -> None:
        self.job, self.error = job, error

    def describe(self, datastore_id: str, job_id: str) -> ImportJob:
        if self.error is not None:
            raise self.error
        if self.job is None:
            raise ImportJobError("GetDICOMImportJob failed: ResourceNotFoundException", not_found=True)
        return self.job

    def job_ids(self, datastore_id: str, status: str) -> Iterator[str]:
        yield from ()


GENUINE = Jobs(ImportJob("COMPLETED", None, FOLDER_URI))


def plan_of(body: bytes, lines: list[str], jobs: Jobs | None = GENUINE) -> JobPlan:
    s3 = FakeS3()
    s3.put("bkt", FOLDER + "job-output-manifest.json", body)
    s3.put("bkt", FOLDER + "SUCCESS/success.ndjson", "\n".join(lines).encode())
    return plan_job(JobOutputReader(s3), job_folder(FOLDER_URI), started_at=STARTED, manifest_wait_s=0, jobs=jobs)


def report_of(plan: JobPlan, instances: dict[str, int]) -> JobReport:
    """Every planned image set verified clean, its metadata holding ``instances[id]`` SOP instances."""
    parts = [
        Part(
            item_id=s.image_set_id,
            image_set_id=s.image_set_id,
            total_frames=1,
            instances=instances[s.image_set_id],
            frames=(FrameResult(0, "f" * 32, "1.2", "1.2.3", 1, Status.MATCH, 7, 7),),
        )
        for s in plan.image_sets
    ]
    return merge_parts(plan, parts, finished_at=STARTED)


def test_a_consistent_job_has_no_discrepancy_and_is_clean() -> None:
    plan = plan_of(manifest(), [line("a.dcm", LISTED), line("b.dcm", LISTED)])
    assert plan.discrepancies == ()
    report = report_of(plan, {LISTED: 2})
    assert (report.discrepancies, report.verdict) == ((), Verdict.CLEAN)
    entry = report.to_json()["imageSets"][0]
    assert (entry["inManifest"], entry["importedFiles"], entry["matchedSOPInstances"], entry["instances"]) == (
        True,
        2,
        2,
        2,
    )


def test_an_image_set_only_the_ndjson_lines_name_is_verified_and_the_job_is_unverified() -> None:
    # GIVEN a SUCCESS line naming an image set the manifest omits
    plan = plan_of(manifest(), [line("a.dcm", LISTED), line("b.dcm", LISTED), line("c.dcm", UNLISTED, version=3)])
    # THEN it is planned (with the line's version), so its frames are verified
    (listed, unlisted) = plan.image_sets
    assert (listed.image_set_id, listed.in_manifest) == (LISTED, True)
    assert (unlisted.image_set_id, unlisted.in_manifest, unlisted.version, unlisted.imported_files) == (
        UNLISTED,
        False,
        3,
        1,
    )
    assert [w.image_set_id for w in plan.work_items()] == [LISTED, UNLISTED]
    # AND the job is UNVERIFIED, saying why, even when every frame of both matched
    (why,) = plan.discrepancies
    assert why.startswith("1 image set(s) named by SUCCESS/WARNING lines are missing from the manifest")
    assert why.endswith(f"(verified all the same): {UNLISTED}")
    assert report_of(plan, {LISTED: 2, UNLISTED: 1}).verdict is Verdict.UNVERIFIED


def test_more_generated_image_sets_than_listed_is_a_discrepancy() -> None:
    plan = plan_of(manifest(numberOfGeneratedImageSets=9), [line("a.dcm", LISTED), line("b.dcm", LISTED)])
    assert plan.discrepancies == ("the manifest says 9 image set(s) were generated and lists 1",)
    assert report_of(plan, {LISTED: 2}).verdict is Verdict.UNVERIFIED


@pytest.mark.parametrize(
    ("matched", "lines", "held", "expected"),
    [
        pytest.param(4, 4, 1, ["its metadata holds 1 SOP instance(s), the import put 4 there"], id="instances-lost"),
        pytest.param(2, 4, 4, ["4 SUCCESS/WARNING line(s) name it, the manifest matched 2"], id="matched-fewer"),
        pytest.param(2, 2, 5, [], id="metadata-holds-more-than-this-job-added"),
        pytest.param(5, 2, 5, [], id="matched-more-than-lines"),
    ],
)
def test_instances_in_metadata_are_compared_with_what_the_import_put_there(
    matched: int, lines: int, held: int, expected: list[str]
) -> None:
    # GIVEN the manifest's matched SOP instances, the lines naming the set, and the instances its metadata holds
    summary = [{"imageSetId": LISTED, "numberOfMatchedSOPInstances": matched}]
    plan = plan_of(
        manifest(imageSetsSummary=summary, numberOfImportedFiles=lines, numberOfScannedFiles=lines),
        [line(f"{n}.dcm", LISTED) for n in range(lines)],
    )
    report = report_of(plan, {LISTED: held})
    # THEN fewer instances than the import claims, or fewer matched than named, is a discrepancy
    assert [d.split(": ", 1)[1] for d in report.discrepancies] == expected
    assert report.verdict is (Verdict.UNVERIFIED if expected else Verdict.CLEAN)


def test_a_manifest_naming_another_job_than_its_folder_is_a_discrepancy_without_echoing_its_text() -> None:
    plan = plan_of(manifest(jobId="DOE^JOHN"), [line("a.dcm", LISTED), line("b.dcm", LISTED)])
    assert plan.job.job_id == JOB  # the folder's IDs are used
    (why,) = plan.discrepancies
    assert why == (
        f"the manifest names data store {DS} job (not an ID), its folder data store {DS} job {JOB}; "
        "the folder's IDs are used"
    )


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        pytest.param(Jobs(None), f"GetDICOMImportJob does not know import job {JOB} in data store {DS}", id="forged"),
        pytest.param(
            Jobs(ImportJob("IN_PROGRESS", None, FOLDER_URI)),
            f"GetDICOMImportJob says import job {JOB} is IN_PROGRESS, not COMPLETED",
            id="not-completed",
        ),
        pytest.param(
            Jobs(ImportJob("COMPLETED", None, f"s3://other/out/{DS}-DicomImport-{JOB}/")),
            f"GetDICOMImportJob says import job {JOB} writes to another folder than this manifest's",
            id="other-folder",
        ),
    ],
)
def test_getdicomimportjob_confirms_the_job(jobs: Jobs, expected: str) -> None:
    # GIVEN a manifest whose counts agree, but GetDICOMImportJob disagrees about the job
    plan = plan_of(manifest(), [line("a.dcm", LISTED), line("b.dcm", LISTED)], jobs)
    # THEN the job is UNVERIFIED with the reason, however well its frames match
    assert plan.discrepancies == (expected,)
    assert report_of(plan, {LISTED: 2}).verdict is Verdict.UNVERIFIED


def test_a_getdicomimportjob_failure_that_is_not_not_found_is_raised_for_a_retry() -> None:
    jobs = Jobs(error=ImportJobError("GetDICOMImportJob failed: ThrottlingException (after 9 retries)"))
    with pytest.raises(ImportJobError, match="ThrottlingException"):
        plan_of(manifest(), [line("a.dcm", LISTED)], jobs)


def test_discrepancies_survive_the_plan_and_the_report_round_trip() -> None:
    plan = plan_of(manifest(numberOfGeneratedImageSets=2), [line("a.dcm", LISTED), line("c.dcm", UNLISTED)], Jobs())
    assert JobPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    report = report_of(plan, {LISTED: 1, UNLISTED: 1})
    # generated 2 vs listed 1; the unlisted set; the unknown job; LISTED's metadata 1 < matched 2
    assert [d.split(" ", 3)[:3] for d in report.discrepancies] == [
        ["the", "manifest", "says"],
        ["1", "image", "set(s)"],
        ["GetDICOMImportJob", "does", "not"],
        ["image", "set", LISTED + ":"],
    ]
    assert JobReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_the_plan_and_the_report_record_what_they_were_built_from() -> None:
    # GIVEN a manifest and a SUCCESS file of known bytes
    body, lines = manifest(), [line("a.dcm", LISTED), line("b.dcm", LISTED)]
    plan = plan_of(body, lines)
    # THEN the evidence names each object read, its ETag as served (unquoted) and the SHA-256 of its bytes
    ndjson = "\n".join(lines).encode()
    assert [(e.uri, e.etag, e.sha256, e.size) for e in plan.evidence] == [
        (
            f"{FOLDER_URI}job-output-manifest.json",
            hashlib.md5(body, usedforsecurity=False).hexdigest(),
            sha256(body),
            len(body),
        ),
        (
            f"{FOLDER_URI}SUCCESS/success.ndjson",
            hashlib.md5(ndjson, usedforsecurity=False).hexdigest(),
            sha256(ndjson),
            len(ndjson),
        ),
    ]
    # AND the report carries it unchanged
    assert report_of(plan, {LISTED: 2}).to_json()["evidence"][0]["sha256"] == sha256(body)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
