"""The application flow (trigger -> workers -> finaliser) against moto's DynamoDB, S3, SQS and SNS (in
process): a job is queued once, every work item counted once, the job finalised once, with one report and
at most one alert."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ahi_verify.app.dead_letters import record_dead_letter
from ahi_verify.app.delivery import record_not_verified
from ahi_verify.app.events import JobRef
from ahi_verify.app.finaliser import finalise_job
from ahi_verify.app.messaging import AlertPublisher, WorkQueue
from ahi_verify.app.progress import STALE_CLAIM_S, JobProgress, JobState
from ahi_verify.app.settings import Settings
from ahi_verify.app.storage import ReportStore
from ahi_verify.app.trigger import reconcile, start_job
from ahi_verify.app.wiring import Services
from ahi_verify.app.worker import process_work_item
from ahi_verify.healthimaging import HealthImagingJobs
from ahi_verify.image_set import VerifyOptions
from ahi_verify.report import FrameCounts, JobReport, Part
from ahi_verify.s3_output import JobOutputReader
from ahi_verify.work import verify_work_item
from ahi_verify.work_items import WorkItem, WorkItemError
from tests.fakes.frames import FakeSource, make_frames
from tests.support import create_progress_table

DS = "d" * 32
BUCKET = "ahi-output"
OUTPUT_PREFIX = "import-output/"


def job_id(n: int) -> str:
    return f"{n:032x}"


def image_set_id(n: int) -> str:
    return f"{n:031x}a"


OPTIONS = VerifyOptions(fetch_concurrency=4, decode_workers=2)


class FakeMedicalImaging:
    """A ``medical-imaging`` client answering GetDICOMImportJob / ListDICOMImportJobs for jobs the test declares
    (behind the real HealthImagingJobs adapter)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def get_dicom_import_job(self, datastoreId: str, jobId: str) -> dict[str, Any]:  # noqa: N803
        if jobId not in self.jobs:
            error = {"Error": {"Code": "ResourceNotFoundException", "Message": "no such job"}}
            raise ClientError(error, "GetDICOMImportJob")  # type: ignore[arg-type]
        return {"jobProperties": self.jobs[jobId]}

    def get_paginator(self, name: str) -> FakeMedicalImaging:
        assert name == "list_dicom_import_jobs"
        return self

    def paginate(self, datastoreId: str, jobStatus: str) -> Iterator[dict[str, Any]]:  # noqa: N803
        yield {"jobSummaries": [{"jobId": j} for j, p in self.jobs.items() if p["jobStatus"] == jobStatus]}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        s3, ddb, sqs, sns = (boto3.client(n) for n in ("s3", "dynamodb", "sqs", "sns"))
        s3.create_bucket(Bucket=BUCKET)
        create_progress_table(ddb)
        work = sqs.create_queue(QueueName="work")["QueueUrl"]
        alerts = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        topic = sns.create_topic(Name="alerts")["TopicArn"]
        alerts_arn = sqs.get_queue_attributes(QueueUrl=alerts, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=alerts_arn)
        ops = sqs.create_queue(QueueName="ops")["QueueUrl"]
        ops_topic = sns.create_topic(Name="ops")["TopicArn"]
        ops_arn = sqs.get_queue_attributes(QueueUrl=ops, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=ops_topic, Protocol="sqs", Endpoint=ops_arn)
        plane = FakeMedicalImaging()
        yield {
            **{"s3": s3, "ddb": ddb, "sqs": sqs, "work": work, "alerts": alerts, "topic": topic, "plane": plane},
            **{"ops": ops, "ops_topic": ops_topic},
        }


class Serialised:
    """A client whose calls are atomic, as each DynamoDB/S3/SQS request is in AWS (moto's in-process
    backends are not thread-safe, and their races are not the ones under test)."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name == "get_paginator":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def services(aws: dict[str, Any], source: FakeSource, clock: Any = None, **overrides: Any) -> Services:
    settings = Settings(
        datastore_id=DS,
        output_bucket=BUCKET,
        output_prefix=OUTPUT_PREFIX,
        reports_bucket=BUCKET,
        reports_prefix="ahi-verify-reports/",
        work_queue_url=aws["work"],
        progress_table="progress",
        idempotency_table="idempotency",
        alert_topic_arn=aws["topic"],
        ops_topic_arn=aws["ops_topic"],
        notify_on_clean_jobs=False,
        frames_per_work_item=1000,
        frame_rate_budget=300,
        metadata_rate_budget=10,
        worker_max_concurrency=5,
        manifest_wait_s=0,
        region="eu-central-1",
        account_id="111122223333",
        stack_name="ahi-verify-test",
    )
    return Services(
        settings=replace(settings, **overrides),
        progress=JobProgress(Serialised(aws["ddb"]), "progress", **({"clock": clock} if clock else {})),
        reports=ReportStore(Serialised(aws["s3"]), BUCKET, "ahi-verify-reports/"),
        reader=JobOutputReader(aws["s3"]),
        frames=source,
        jobs=HealthImagingJobs(aws["plane"]),
        queue=WorkQueue(Serialised(aws["sqs"]), aws["work"]),
        alerts=AlertPublisher(Serialised(boto3.client("sns")), aws["topic"]),
        ops=AlertPublisher(Serialised(boto3.client("sns")), aws["ops_topic"]),
        **({"clock": clock} if clock else {}),
    )


def process(item: WorkItem, svc: Services) -> dict[str, Any]:
    return process_work_item(item, svc, OPTIONS)


def write_job(aws: dict[str, Any], job: str, image_sets: list[str], failed_files: int = 0) -> str:
    folder = f"{OUTPUT_PREFIX}{DS}-DicomImport-{job}/"
    manifest = {
        "jobSummary": {
            "jobId": job,
            "datastoreId": DS,
            "inputS3Uri": "s3://in/dicom/",
            "outputS3Uri": f"s3://{BUCKET}/{folder}",
            "successOutputS3Uri": f"s3://{BUCKET}/{folder}SUCCESS/",
            "failureOutputS3Uri": f"s3://{BUCKET}/{folder}FAILURE/",
            "numberOfScannedFiles": len(image_sets) + failed_files,
            "numberOfImportedFiles": len(image_sets),
            "numberOfFilesWithCustomerError": failed_files,
            "numberOfFilesWithServerError": 0,
            "numberOfGeneratedImageSets": len(image_sets),
            "imageSetsSummary": [{"imageSetId": i, "numberOfMatchedSOPInstances": 1} for i in image_sets],
        }
    }
    lines = [json.dumps({"inputFile": f"dicom/{i}.dcm", "importResponse": {"imageSetId": i}}) for i in image_sets]
    aws["s3"].put_object(Bucket=BUCKET, Key=f"{folder}SUCCESS/success.ndjson", Body="\n".join(lines).encode())
    if failed_files:
        bad = [
            json.dumps(
                {
                    "inputFile": f"dicom/bad{n}.dcm",
                    "exception": {"exceptionType": "ValidationException", "message": "m"},
                }
            )
            for n in range(failed_files)
        ]
        aws["s3"].put_object(Bucket=BUCKET, Key=f"{folder}FAILURE/failure.ndjson", Body="\n".join(bad).encode())
    aws["s3"].put_object(Bucket=BUCKET, Key=f"{folder}job-output-manifest.json", Body=json.dumps(manifest).encode())
    # The import job exists, as GetDICOMImportJob will confirm.
    aws["plane"].jobs[job] = {"jobStatus": "COMPLETED", "outputS3Uri": f"s3://{BUCKET}/{folder}"}
    return f"s3://{BUCKET}/{folder}"


def drain(aws: dict[str, Any], queue: str = "work") -> list[dict[str, Any]]:
    messages = []
    while batch := aws["sqs"].receive_message(QueueUrl=aws[queue], MaxNumberOfMessages=10).get("Messages", []):
        for m in batch:
            aws["sqs"].delete_message(QueueUrl=aws[queue], ReceiptHandle=m["ReceiptHandle"])
        messages += batch
    return messages


def alerts(aws: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in drain(aws, "alerts")]


def ops_messages(aws: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in drain(aws, "ops")]


def report(aws: dict[str, Any], job: str) -> dict[str, Any]:
    body = aws["s3"].get_object(Bucket=BUCKET, Key=f"ahi-verify-reports/{job}/report.json")["Body"].read()
    doc = dict(json.loads(body))
    JobReport.from_json(doc)  # the streamed document: its summary and verdict re-checked, and the schema
    return doc


def test_job_is_queued_verified_and_reported_once_with_one_alert(aws: dict[str, Any]) -> None:
    # GIVEN a job of two image sets, one of them with a frame whose stored checksum is wrong
    source = FakeSource()
    good, bad = make_frames(3, seed=1), make_frames(4, seed=2)
    bad_id = next(iter(bad))
    bad[bad_id] = (bad[bad_id][0], bad[bad_id][1] ^ 0xFFFF)
    source.add_image_set(image_set_id(1), good)
    source.add_image_set(image_set_id(2), bad)
    svc = services(aws, source)
    folder = write_job(aws, job_id(1), [image_set_id(1), image_set_id(2)])
    # WHEN the manifest is announced twice and every queued item is processed (one of them twice)
    ref = JobRef(DS, job_id(1), folder, "s3")
    assert start_job(ref, svc) == {"outcome": "queued", "imageSets": 2}
    assert start_job(ref, svc)["outcome"] == "duplicate"
    items = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert len(items) == 2
    for item in [*items, items[0]]:
        process(item, svc)
    # THEN one report lists all 7 frames once, in order, and exactly one alert names the bad frame
    doc = report(aws, job_id(1))
    assert doc["verdict"] == "MISMATCH"
    assert doc["summary"]["frames"] == {"total": 7, "match": 6, "mismatch": 1, "error": 0}
    assert doc["timings"]["workItems"] == 2
    assert doc["timings"]["startedAt"] <= doc["timings"]["finishedAt"]
    assert doc["timings"]["verificationSeconds"] > 0
    assert [f["imageFrameId"] for s in doc["imageSets"] for f in s["frames"]] == [*good, *bad]
    (alert,) = alerts(aws)
    assert alert["Subject"].startswith("[ahi-verify] MISMATCH: 1 frame(s)")
    assert len(alert["Subject"]) <= 99
    assert bad_id in alert["Message"]
    assert alert["MessageAttributes"]["severity"]["Value"] == "MISMATCH"
    # AND it says which deployment sent it, and links the report in the region's S3 console
    lines = alert["Message"].splitlines()
    assert [line for line in lines if line.startswith(("Region: ", "Account: ", "Stack: "))] == [
        "Region: eu-central-1",
        "Account: 111122223333",
        "Stack: ahi-verify-test",
    ]
    key = f"ahi-verify-reports/{job_id(1)}/report.html"
    console = f"https://eu-central-1.console.aws.amazon.com/s3/object/{BUCKET}?region=eu-central-1&prefix={key}"
    assert f"Readable report in the S3 console: {console}" in lines
    record = svc.progress.get(job_id(1))
    assert record is not None
    assert (record["state"], record["pending"], record["frames_mismatch"]) == ("done", 0, 1)


def test_large_image_set_is_split_and_merged_into_one_report(aws: dict[str, Any]) -> None:
    # GIVEN an image set of 7 frames and work items of at most 3 frames
    source = FakeSource()
    frames = make_frames(7, seed=3)
    source.add_image_set(image_set_id(3), frames)
    svc = services(aws, source, frames_per_work_item=3)
    folder = write_job(aws, job_id(2), [image_set_id(3)])
    start_job(JobRef(DS, job_id(2), folder, "s3"), svc)
    # WHEN the item is processed, splits itself, and the split items are processed (in reverse order)
    (first,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process(first, svc)
    rest = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert sorted(i.frames for i in rest if i.frames) == [(3, 6), (6, 7)]
    process(first, svc)  # redelivered original: splits again, counted once
    for item in reversed(rest + [WorkItem.from_json(m["Body"]) for m in drain(aws)]):
        process(item, svc)
    # THEN the report holds each of the 7 frames exactly once, in metadata order
    doc = report(aws, job_id(2))
    assert [f["imageFrameId"] for f in doc["imageSets"][0]["frames"]] == list(frames)
    assert doc["imageSets"][0]["error"] is None
    assert doc["verdict"] == "CLEAN"
    assert alerts(aws) == []


def test_concurrent_last_items_finalise_once(aws: dict[str, Any]) -> None:
    source = FakeSource()
    ids = [image_set_id(10 + n) for n in range(6)]
    for n, iset in enumerate(ids):
        source.add_image_set(iset, make_frames(2, seed=10 + n))
    svc = services(aws, source, notify_on_clean_jobs=True)
    start_job(JobRef(DS, job_id(3), write_job(aws, job_id(3), ids), "s3"), svc)
    items = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    errors: list[BaseException] = []

    def run(item: WorkItem) -> None:
        try:
            process(item, svc)
        except BaseException as exc:  # surfaced below: a thread's exception must fail the test
            errors.append(exc)

    # WHEN every item is delivered twice, all twelve deliveries running at once
    threads = [threading.Thread(target=run, args=(i,)) for i in items + items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN nothing failed, exactly one delivery finalised, and nobody can claim again
    assert errors == []
    assert finalise_job(job_id(3), svc, claimer="late-caller") is None
    (alert,) = alerts(aws)
    assert alert["MessageAttributes"]["severity"]["Value"] == "CLEAN"
    assert report(aws, job_id(3))["summary"]["frames"]["total"] == 12


def test_job_without_image_sets_but_with_failed_files_is_finalised_by_the_trigger(aws: dict[str, Any]) -> None:
    svc = services(aws, FakeSource())
    folder = write_job(aws, job_id(4), [], failed_files=2)
    assert start_job(JobRef(DS, job_id(4), folder, "s3"), svc)["imageSets"] == 0
    doc = report(aws, job_id(4))
    assert (doc["verdict"], doc["summary"]["importFailures"]) == ("UNVERIFIED", 2)
    (alert,) = alerts(aws)
    assert "UNVERIFIED" in alert["Subject"]
    assert "bad0.dcm" not in alert["Message"]  # file keys are counted, never listed


def test_failed_import_job_event_reports_the_failure(aws: dict[str, Any]) -> None:
    plane = aws["plane"]
    svc = services(aws, FakeSource())
    plane.jobs[job_id(5)] = {
        "jobStatus": "FAILED",
        "message": "input bucket not accessible",
        "outputS3Uri": f"s3://{BUCKET}/{OUTPUT_PREFIX}",
    }
    start_job(JobRef(DS, job_id(5), None, "import-job-event", failed=True), svc)
    doc = report(aws, job_id(5))
    assert doc["verdict"] == "IMPORT_FAILED"
    assert doc["job"]["folder"] == f"s3://{BUCKET}/{OUTPUT_PREFIX}{DS}-DicomImport-{job_id(5)}/"
    assert "failed" in alerts(aws)[0]["Subject"]


def test_image_set_that_cannot_be_read_is_reported_not_lost(aws: dict[str, Any]) -> None:
    source = FakeSource()  # knows no image set: metadata fetch fails
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(6), write_job(aws, job_id(6), [image_set_id(6)]), "s3"), svc)
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    doc = report(aws, job_id(6))
    assert "ResourceNotFoundException" in doc["imageSets"][0]["error"]
    assert doc["verdict"] == "UNVERIFIED"


def test_poison_items_are_rejected(aws: dict[str, Any]) -> None:
    svc = services(aws, FakeSource())
    with pytest.raises(WorkItemError, match="never queued"):
        process(WorkItem(job_id(7), DS, image_set_id(7)), svc)
    with pytest.raises(WorkItemError, match="another data store"):
        process(WorkItem(job_id(7), "e" * 32, image_set_id(7)), svc)


def test_reconcile_starts_only_unknown_jobs(aws: dict[str, Any]) -> None:
    plane = aws["plane"]
    svc = services(aws, FakeSource())
    for n in (8, 9):
        folder = write_job(aws, job_id(n), [])
        plane.jobs[job_id(n)] = {"jobStatus": "COMPLETED", "outputS3Uri": folder}
    start_job(JobRef(DS, job_id(8), None, "s3"), svc)
    started = reconcile(svc, lambda job: start_job(JobRef(**job), svc))
    assert started == [job_id(9)]
    assert reconcile(svc, lambda job: start_job(JobRef(**job), svc)) == []


def test_other_data_store_is_skipped(aws: dict[str, Any]) -> None:
    svc = services(aws, FakeSource())
    assert start_job(JobRef("e" * 32, job_id(10), None, "s3"), svc)["outcome"] == "skipped"


def test_only_a_stale_finalisation_claim_can_be_taken_over(aws: dict[str, Any]) -> None:
    # GIVEN a job with nothing pending, claimed by a finaliser, and a clock the test moves
    now = [1_000_000.0]
    progress = JobProgress(aws["ddb"], "progress", clock=lambda: now[0])
    progress.create(job_id(11), DS, "s3://b/f/", pending=0)
    assert progress.claim_finalisation(job_id(11), "item-a")
    # WHEN another delivery tries at once THEN it is refused, even as the same claimer
    assert not progress.claim_finalisation(job_id(11), "item-b")
    assert not progress.claim_finalisation(job_id(11), "item-a")
    # WHEN the claim is as old as the longest a function can run THEN it is still not stale
    now[0] += STALE_CLAIM_S
    assert not progress.claim_finalisation(job_id(11), "item-b")
    # WHEN it is older THEN the next delivery takes it over
    now[0] += 1
    assert progress.claim_finalisation(job_id(11), "item-b")
    # and once finalised, nobody can claim, however much later
    progress.mark_finalised(job_id(11), "s3://b/r.json", "CLEAN")
    now[0] += 10 * STALE_CLAIM_S
    assert not progress.claim_finalisation(job_id(11), "item-c")
    record = progress.get(job_id(11))
    assert record is not None
    assert record["state"] == JobState.DONE


def test_pending_items_block_finalisation(aws: dict[str, Any]) -> None:
    progress = JobProgress(aws["ddb"], "progress")
    progress.create(job_id(12), DS, "s3://b/f/", pending=2)
    assert progress.complete_item(job_id(12), "x", FrameCounts(total=3, match=3))
    assert not progress.complete_item(job_id(12), "x", FrameCounts(total=3, match=3))  # redelivery counted once
    assert not progress.claim_finalisation(job_id(12), "x")
    assert progress.complete_item(job_id(12), "y", FrameCounts(total=1, error=1))
    record = progress.get(job_id(12))
    assert record is not None
    assert (record["pending"], record["frames_match"], record["frames_error"]) == (0, 3, 1)
    assert progress.claim_finalisation(job_id(12), "y")


def test_an_item_failing_on_its_last_delivery_is_reported_and_the_job_completes(aws: dict[str, Any]) -> None:
    # GIVEN a job of two image sets, one of which can never be processed
    source = FakeSource()
    source.add_image_set(image_set_id(20), make_frames(2, seed=20))
    source.add_image_set(image_set_id(21), make_frames(3, seed=21))
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(20), write_job(aws, job_id(20), [image_set_id(20), image_set_id(21)]), "s3"), svc)
    good, poison = sorted((WorkItem.from_json(m["Body"]) for m in drain(aws)), key=lambda i: i.image_set_id)
    process(good, svc)
    # WHEN the poison item's last delivery fails and the worker records it before it goes to the DLQ
    why = "work item failed on all 3 deliveries and was moved to the dead-letter queue: RuntimeError: boom"
    assert record_not_verified(poison, why, svc)
    assert not record_not_verified(poison, why, svc)  # a repeated last delivery counts once
    # THEN the job is finalised: the image set is in error, the good frames are there, one alert says so
    doc = report(aws, job_id(20))
    errors = {s["imageSetId"]: s["error"] for s in doc["imageSets"]}
    assert errors[image_set_id(20)] is None
    assert "failed on all 3 deliveries" in errors[image_set_id(21)]
    assert "RuntimeError: boom" in errors[image_set_id(21)]
    assert (doc["verdict"], doc["summary"]["frames"]["total"]) == ("UNVERIFIED", 2)
    (alert,) = alerts(aws)
    # AND the alert names the image set and why in words: the exception's type, not its text
    lines = alert["Message"].splitlines()
    assert "  - 1 image set could not be read" in lines
    assert (
        f"    image set {image_set_id(21)} could not be read: its work item failed on all 3 deliveries (RuntimeError)"
        in lines
    )
    assert "boom" not in alert["Message"]


def test_a_manifest_rewritten_after_planning_is_alerted_once_and_not_re_planned(aws: dict[str, Any]) -> None:
    # GIVEN a job verified against its manifest
    source = FakeSource()
    source.add_image_set(image_set_id(30), make_frames(2, seed=30))
    svc = services(aws, source)
    folder = write_job(aws, job_id(30), [image_set_id(30)])
    ref = JobRef(DS, job_id(30), folder, "s3", manifest_etag="first")
    assert start_job(ref, svc)["outcome"] == "queued"
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    verified = report(aws, job_id(30))
    planned_sha = verified["evidence"][0]["sha256"]
    # WHEN the manifest is rewritten with other content (another image set) and announced, twice
    write_job(aws, job_id(30), [image_set_id(31)])
    second = JobRef(DS, job_id(30), folder, "s3", manifest_etag="second")
    first_answer, again = start_job(second, svc), start_job(second, svc)
    # THEN one MANIFEST CHANGED alert names both contents; nothing is queued; the report still stands
    assert first_answer["outcome"] == again["outcome"] == "manifest-changed"
    assert first_answer["plannedSha256"] == planned_sha != first_answer["sha256"]
    assert drain(aws) == []
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] MANIFEST CHANGED: import job {job_id(30)}"
    assert planned_sha in alert["Message"]
    assert first_answer["sha256"] in alert["Message"]
    assert alert["MessageAttributes"]["severity"]["Value"] == "MANIFEST_CHANGED"
    assert report(aws, job_id(30)) == verified


def test_a_manifest_of_a_job_still_running_is_verified_only_once_the_job_completed(aws: dict[str, Any]) -> None:
    # GIVEN a manifest in a job folder while GetDICOMImportJob still says IN_PROGRESS
    source = FakeSource()
    source.add_image_set(image_set_id(32), make_frames(2, seed=32))
    svc = services(aws, source)
    folder = write_job(aws, job_id(32), [image_set_id(32)])
    aws["plane"].jobs[job_id(32)]["jobStatus"] = "IN_PROGRESS"
    # WHEN it is announced THEN nothing is recorded or queued (it could be written before the genuine one)
    assert start_job(JobRef(DS, job_id(32), folder, "s3"), svc) == {
        "outcome": "skipped",
        "reason": "job is IN_PROGRESS",
    }
    assert svc.progress.get(job_id(32)) is None
    assert drain(aws) == []
    # AND once the job completed, reconciliation verifies it
    aws["plane"].jobs[job_id(32)]["jobStatus"] = "COMPLETED"
    assert reconcile(svc, lambda job: start_job(JobRef(**job), svc)) == [job_id(32)]
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    assert report(aws, job_id(32))["verdict"] == "CLEAN"


def test_a_manifest_for_a_job_the_service_does_not_know_is_verified_but_never_clean(aws: dict[str, Any]) -> None:
    # GIVEN a well-formed manifest over real image sets, for a job GetDICOMImportJob has never heard of
    source = FakeSource()
    source.add_image_set(image_set_id(33), make_frames(2, seed=33))
    svc = services(aws, source)
    folder = write_job(aws, job_id(33), [image_set_id(33)])
    del aws["plane"].jobs[job_id(33)]
    start_job(JobRef(DS, job_id(33), folder, "s3"), svc)
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    # THEN every frame matched, and still the job is UNVERIFIED, saying why, with one alert
    doc = report(aws, job_id(33))
    assert doc["summary"]["frames"] == {"total": 2, "match": 2, "mismatch": 0, "error": 0}
    assert (doc["verdict"], doc["discrepancies"]) == (
        "UNVERIFIED",
        [f"GetDICOMImportJob does not know import job {job_id(33)} in data store {DS}"],
    )
    (alert,) = alerts(aws)
    assert "GetDICOMImportJob does not know" in alert["Message"]


class Conflicting:
    """A DynamoDB client whose first ``conflicts`` transactions are cancelled by another transaction."""

    def __init__(self, client: Any, conflicts: int) -> None:
        self._client, self.conflicts, self.attempts = client, conflicts, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.attempts <= self.conflicts:
            error = {
                "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
                "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
            }
            raise ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]
        return self._client.transact_write_items(**kwargs)


@pytest.mark.parametrize(("conflicts", "counted"), [(2, True), (5, False)], ids=["rides-out", "gives-up-after-5"])
def test_a_transaction_conflict_is_retried_not_taken_for_a_duplicate(
    aws: dict[str, Any], conflicts: int, counted: bool
) -> None:
    # GIVEN a job with one pending item, and transactions that conflict with another writer
    slept: list[float] = []
    db = Conflicting(aws["ddb"], conflicts)
    progress = JobProgress(db, "progress", sleep=slept.append)
    progress.create(job_id(34), DS, "s3://b/f/", pending=1)
    if counted:
        # WHEN the conflicts pass THEN the item is counted once, after backing off
        assert progress.complete_item(job_id(34), "x", FrameCounts(total=1, match=1))
        assert (db.attempts, len(slept)) == (3, 2)
        assert slept[1] > slept[0] > 0
        record = progress.get(job_id(34))
        assert record is not None
        assert record["pending"] == 0
    else:
        # WHEN they do not THEN the error is raised (the delivery is retried), never read as "already done"
        with pytest.raises(ClientError, match="TransactionCanceledException"):
            progress.complete_item(job_id(34), "x", FrameCounts(total=1, match=1))
        assert db.attempts == 5


def test_one_unreadable_job_does_not_stop_the_reconciliation_sweep(aws: dict[str, Any]) -> None:
    # GIVEN two completed jobs whose events were lost: the first listed has a manifest that is not JSON
    source = FakeSource()
    source.add_image_set(image_set_id(40), make_frames(2, seed=40))
    svc = services(aws, source)
    bad = write_job(aws, job_id(40), [])
    key = bad.removeprefix(f"s3://{BUCKET}/") + "job-output-manifest.json"
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"{not json")
    write_job(aws, job_id(41), [image_set_id(40)])

    def verify_once(job: dict[str, Any]) -> dict[str, Any]:
        return start_job(JobRef(**job), svc)

    # WHEN the schedule sweeps, twice
    first, second = reconcile(svc, verify_once), reconcile(svc, verify_once)
    # THEN the readable job was started, the unreadable one recorded once and alerted once, by type only
    assert (first, second) == ([job_id(41)], [])
    record = svc.progress.get(job_id(40))
    assert record is not None
    assert (record["state"], record["error_type"]) == (JobState.UNREADABLE, "ManifestError")
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] UNVERIFIED: import job {job_id(40)} output unreadable"
    assert "(ManifestError)" in alert["Message"]
    assert "Region: eu-central-1" in alert["Message"].splitlines()
    assert BUCKET not in alert["Message"]  # the error's text names objects: only its type is published
    # AND the readable job is verified to the end
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    assert report(aws, job_id(41))["verdict"] == "CLEAN"


def test_a_transient_failure_leaves_the_job_for_the_next_sweep(aws: dict[str, Any]) -> None:
    svc = services(aws, FakeSource())
    write_job(aws, job_id(42), [])

    def throttled(job: dict[str, Any]) -> dict[str, Any]:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        raise ClientError(error, "GetDICOMImportJob")  # type: ignore[arg-type]

    assert reconcile(svc, throttled) == []
    assert svc.progress.get(job_id(42)) is None  # not recorded: swept again next time
    assert reconcile(svc, lambda job: start_job(JobRef(**job), svc)) == [job_id(42)]


def running_out_after(source: FakeSource, fetches: int, seconds: float = 900.0) -> Any:
    """An invocation's remaining time that falls below the hand-back reserve once ``fetches`` frames have
    been fetched (the clock the worker reads is the source's progress, so the test is deterministic)."""
    return lambda: seconds if len(source.fetched) < fetches else 1.0


def test_a_worker_near_its_deadline_hands_the_rest_on_and_every_frame_is_checked_once(aws: dict[str, Any]) -> None:
    # GIVEN an image set of 12 frames and invocations that run out of time after 5 fetches each
    source = FakeSource()
    frames = make_frames(12, seed=40)
    source.add_image_set(image_set_id(40), frames)
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(40), write_job(aws, job_id(40), [image_set_id(40)]), "s3"), svc)
    # WHEN each queued item is processed with such a deadline until the queue is empty
    processed = []
    while messages := drain(aws):
        for m in messages:
            item = WorkItem.from_json(m["Body"])
            processed.append(item)
            done_before = len(source.fetched)
            process_work_item(item, svc, OPTIONS, remaining_s=running_out_after(source, done_before + 5))
    # THEN the work was handed on (more than one item), each frame fetched once, and the report is CLEAN
    assert len(processed) > 1
    assert sorted(source.fetched) == sorted(frames)
    doc = report(aws, job_id(40))
    assert [f["imageFrameId"] for f in doc["imageSets"][0]["frames"]] == list(frames)
    assert (doc["verdict"], doc["imageSets"][0]["error"]) == ("CLEAN", None)
    record = svc.progress.get(job_id(40))
    assert record is not None
    assert (record["pending"], record["frames_match"], record["state"]) == (0, 12, "done")


def test_a_redelivered_handed_back_item_checks_only_up_to_its_cut(aws: dict[str, Any]) -> None:
    # GIVEN a 10-frame image set whose item handed frames on after 4 fetches, but whose message came back
    # (the worker died after counting the hand-back, before deleting the message)
    source = FakeSource()
    frames = make_frames(10, seed=41)
    source.add_image_set(image_set_id(41), frames)
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(41), write_job(aws, job_id(41), [image_set_id(41)]), "s3"), svc)
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process_work_item(item, svc, OPTIONS, remaining_s=running_out_after(source, 4))
    (rest,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert rest.frames is not None
    assert rest.frames[1] == 10
    assert svc.progress.handed_back(job_id(41), item.item_id) == (*rest.frames, True)
    # WHEN the original message is delivered again with plenty of time, then the rest is processed twice
    fetched_before = len(source.fetched)
    assert process(item, svc)["outcome"] == "already-done"
    assert len(source.fetched) == fetched_before  # an item already counted is not fetched again
    for again in [WorkItem.from_json(m["Body"]) for m in drain(aws)] + [rest, rest]:
        process(again, svc)
    # THEN each frame is in the report once, and the ledger's counts equal the report's
    doc = report(aws, job_id(41))
    assert [f["imageFrameId"] for f in doc["imageSets"][0]["frames"]] == list(frames)
    record = svc.progress.get(job_id(41))
    assert record is not None
    assert (record["pending"], record["frames_match"]) == (0, doc["summary"]["frames"]["match"]) == (0, 10)


def test_a_redelivered_split_message_whose_metadata_fails_never_ends_the_job_early(aws: dict[str, Any]) -> None:
    # GIVEN a 7-frame image set split into items of 5 frames on its first delivery, the first range verified
    source = FakeSource()
    frames = make_frames(7, seed=42)
    source.add_image_set(image_set_id(42), frames)
    svc = services(aws, source, frames_per_work_item=5)
    start_job(JobRef(DS, job_id(42), write_job(aws, job_id(42), [image_set_id(42)]), "s3"), svc)
    (whole,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process(whole, svc)
    rest = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert [i.frames for i in rest] == [(5, 7)]
    # WHEN the whole-set message is delivered again while GetImageSetMetadata fails
    stored = source.image_sets.pop(image_set_id(42))
    assert process(whole, svc)["outcome"] == "already-done"
    record = svc.progress.get(job_id(42))
    assert record is not None
    assert record["pending"] == 1
    with pytest.raises(ClientError):
        report(aws, job_id(42))  # not finalised early
    source.image_sets[image_set_id(42)] = stored
    for item in rest + [WorkItem.from_json(m["Body"]) for m in drain(aws)]:
        process(item, svc)
    # THEN the report has all 7 frames, no metadata error, and the ledger counted what the report shows
    doc = report(aws, job_id(42))
    assert [f["imageFrameId"] for f in doc["imageSets"][0]["frames"]] == list(frames)
    assert (doc["verdict"], doc["imageSets"][0]["error"]) == ("CLEAN", None)
    record = svc.progress.get(job_id(42))
    assert record is not None
    assert (record["pending"], record["frames_match"]) == (0, 7)


def test_a_split_message_redelivered_before_its_first_range_completed_checks_that_range(
    aws: dict[str, Any],
) -> None:
    # GIVEN a split recorded (the first delivery died after queueing the other ranges)
    source = FakeSource()
    frames = make_frames(7, seed=43)
    source.add_image_set(image_set_id(43), frames)
    svc = services(aws, source, frames_per_work_item=5)
    start_job(JobRef(DS, job_id(43), write_job(aws, job_id(43), [image_set_id(43)]), "s3"), svc)
    (whole,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert svc.progress.record_split(job_id(43), image_set_id(43), 1, 7, 5)
    # WHEN the whole-set message comes back, and every queued item is processed
    process(whole, svc)
    for item in [WorkItem.from_json(m["Body"]) for m in drain(aws)]:
        process(item, svc)
    # THEN the first range was checked as its own item and the job is complete and CLEAN
    assert svc.progress.item_done(job_id(43), whole.with_frames(0, 5).item_id)
    assert not svc.progress.item_done(job_id(43), whole.item_id)
    doc = report(aws, job_id(43))
    assert (doc["verdict"], doc["summary"]["frames"]["total"]) == ("CLEAN", 7)


def test_a_dead_lettered_item_that_was_killed_on_every_delivery_is_reported_and_the_job_completes(
    aws: dict[str, Any],
) -> None:
    # GIVEN a job of two image sets; the second one's item was killed on every delivery (nothing recorded)
    source = FakeSource()
    source.add_image_set(image_set_id(50), make_frames(2, seed=50))
    source.add_image_set(image_set_id(51), make_frames(3, seed=51))
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(50), write_job(aws, job_id(50), [image_set_id(50), image_set_id(51)]), "s3"), svc)
    good, killed = sorted((WorkItem.from_json(m["Body"]) for m in drain(aws)), key=lambda i: i.image_set_id)
    process(good, svc)
    # WHEN the dead-letter recorder receives the killed item (twice: SQS delivers at least once)
    assert record_dead_letter(killed.to_json(), svc) == "recorded"
    assert record_dead_letter(killed.to_json(), svc) == "already-counted"
    # THEN the job has its report: the image set is named as not verified, and one alert says UNVERIFIED
    doc = report(aws, job_id(50))
    errors = {s["imageSetId"]: s["error"] for s in doc["imageSets"]}
    assert errors[image_set_id(50)] is None
    assert "dead-letter queue after 5 deliveries" in errors[image_set_id(51)]
    assert (doc["verdict"], doc["summary"]["frames"]["total"]) == ("UNVERIFIED", 2)
    (alert,) = alerts(aws)
    # AND the alert names the image set and why in words
    why = "its work item was dead-lettered after 5 deliveries that failed or ran out of time"
    assert f"    image set {image_set_id(51)} could not be read: {why}" in alert["Message"].splitlines()


def test_a_dead_letter_of_an_item_the_worker_already_recorded_changes_nothing(aws: dict[str, Any]) -> None:
    # GIVEN an item whose last delivery raised, recorded by the worker with its error
    source = FakeSource()
    source.add_image_set(image_set_id(52), make_frames(2, seed=52))
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(52), write_job(aws, job_id(52), [image_set_id(52)]), "s3"), svc)
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert record_not_verified(item, "work item failed on all 5 deliveries: RuntimeError: boom", svc)
    # WHEN its message then reaches the dead-letter recorder
    outcome = record_dead_letter(item.to_json(), svc)
    # THEN the worker's reason stands and the job was finalised once
    assert outcome == "already-counted"
    assert "RuntimeError: boom" in report(aws, job_id(52))["imageSets"][0]["error"]
    assert len(alerts(aws)) == 1


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        pytest.param("not json", "unattributable", id="not-json"),
        pytest.param('{"v": 1, "jobId": "x"}', "unattributable", id="malformed-job-id"),
        pytest.param(WorkItem(job_id(53), "e" * 32, image_set_id(53)).to_json(), "other-data-store", id="other-store"),
        pytest.param(WorkItem(job_id(53), DS, image_set_id(53)).to_json(), "unknown-job", id="unknown-job"),
    ],
)
def test_dead_letters_that_belong_to_no_job_of_this_deployment_are_not_recorded(
    aws: dict[str, Any], body: str, outcome: str
) -> None:
    # GIVEN a dead-lettered message that is not a work item of a job this deployment queued
    svc = services(aws, FakeSource())
    # WHEN it is recorded THEN nothing is written and no alert is sent
    assert record_dead_letter(body, svc) == outcome
    assert aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix="ahi-verify-reports/").get("KeyCount") == 0
    assert alerts(aws) == []


class RefusingPublisher:
    """SNS refusing every publish, as when the topic's KMS key is disabled."""

    def __init__(self) -> None:
        self.attempts = 0

    def publish(self, alert: Any) -> str:
        self.attempts += 1
        error = {"Error": {"Code": "KMSDisabledException", "Message": "key disabled"}}
        raise ClientError(error, "Publish")  # type: ignore[arg-type]


def test_an_alert_sns_refuses_leaves_the_job_done_and_is_sent_by_the_next_sweep(aws: dict[str, Any]) -> None:
    # GIVEN a job whose frame mismatches, and an alert topic that refuses to publish
    source = FakeSource()
    frames = make_frames(2, seed=60)
    first = next(iter(frames))
    frames[first] = (frames[first][0], frames[first][1] ^ 1)
    source.add_image_set(image_set_id(60), frames)
    svc = services(aws, source)
    working = svc.alerts
    svc.alerts = RefusingPublisher()  # type: ignore[assignment]
    start_job(JobRef(DS, job_id(60), write_job(aws, job_id(60), [image_set_id(60)]), "s3"), svc)
    # WHEN the last item completes (and finalising fails to publish)
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process(item, svc)  # does not raise: the item is verified whatever SNS says
    # THEN the job is done with its report, its alert due, and nothing sent
    record = svc.progress.get(job_id(60))
    assert record is not None
    assert (record["state"], record["alert_due"], record.get("alert_message_id")) == ("done", True, None)
    assert report(aws, job_id(60))["verdict"] == "MISMATCH"
    assert alerts(aws) == []
    # WHEN the sweep runs while SNS still refuses, then once it accepts, then again
    verify_once = lambda job: start_job(JobRef(**job), svc)  # noqa: E731
    reconcile(svc, verify_once)
    svc.alerts = working
    reconcile(svc, verify_once)
    reconcile(svc, verify_once)
    # THEN the alert went out exactly once, and the job no longer has one due
    (alert,) = alerts(aws)
    assert alert["Subject"].startswith("[ahi-verify] MISMATCH")
    record = svc.progress.get(job_id(60))
    assert record is not None
    assert "alert_due" not in record
    assert record["alert_message_id"]


def test_a_job_still_running_past_its_deadline_is_finished_by_the_sweep_as_unverified(aws: dict[str, Any]) -> None:
    # GIVEN a job of two image sets; one verified, the other's item lost (never completes), and a clock
    now = [1_000_000.0]
    source = FakeSource()
    source.add_image_set(image_set_id(61), make_frames(2, seed=61))
    source.add_image_set(image_set_id(62), make_frames(3, seed=62))
    svc = services(aws, source, clock=lambda: now[0], job_deadline_s=3600)
    start_job(JobRef(DS, job_id(61), write_job(aws, job_id(61), [image_set_id(61), image_set_id(62)]), "s3"), svc)
    done, lost = sorted((WorkItem.from_json(m["Body"]) for m in drain(aws)), key=lambda i: i.image_set_id)
    process(done, svc)
    verify_once = lambda job: start_job(JobRef(**job), svc)  # noqa: E731
    # WHEN the sweep runs before half the deadline THEN nothing happens
    now[0] += 1799
    reconcile(svc, verify_once)
    assert ops_messages(aws) == []
    # WHEN it runs before the deadline THEN the job is left running, and one operational message names it
    now[0] += 1800
    reconcile(svc, verify_once)
    record = svc.progress.get(job_id(61))
    assert record is not None
    assert (record["state"], record["pending"]) == ("running", 1)
    (overdue,) = ops_messages(aws)
    assert overdue["Subject"] == f"[ahi-verify] OPS: import job {job_id(61)} overdue"
    assert "1 work item(s) pending" in overdue["Message"]
    # WHEN it runs after the deadline
    now[0] += 2
    reconcile(svc, verify_once)
    # THEN the job has its report: UNVERIFIED, the lost image set named, the reason in words; one alert
    doc = report(aws, job_id(61))
    errors = {s["imageSetId"]: s["error"] for s in doc["imageSets"]}
    assert errors == {image_set_id(61): None, image_set_id(62): "no work item of this image set completed"}
    assert doc["verdict"] == "UNVERIFIED"
    assert any("1 work item(s) had not completed" in d for d in doc["discrepancies"])
    assert len(alerts(aws)) == 1
    (finished,) = ops_messages(aws)
    assert finished["Subject"] == f"[ahi-verify] OPS: import job {job_id(61)} finished past its deadline"
    # AND the lost item arriving late changes nothing: no second report or alert, no error
    process(lost, svc)
    reconcile(svc, verify_once)
    assert report(aws, job_id(61))["verdict"] == "UNVERIFIED"
    assert alerts(aws) == []


def test_a_finaliser_that_died_is_finished_by_the_sweep_once_its_claim_is_stale(aws: dict[str, Any]) -> None:
    # GIVEN a job whose last item completed and whose finaliser claimed the job, then died
    now = [1_000_000.0]
    source = FakeSource()
    source.add_image_set(image_set_id(63), make_frames(2, seed=63))
    svc = services(aws, source, clock=lambda: now[0])
    start_job(JobRef(DS, job_id(63), write_job(aws, job_id(63), [image_set_id(63)]), "s3"), svc)
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    part = verify_frames_for(item, svc)
    svc.reports.put_part(job_id(63), part)
    assert svc.progress.complete_item(job_id(63), item.item_id, part.counts)
    assert svc.progress.claim_finalisation(job_id(63), "dead-finaliser")
    verify_once = lambda job: start_job(JobRef(**job), svc)  # noqa: E731
    # WHEN the sweep runs while the claim is fresh THEN it leaves the job to its finaliser
    reconcile(svc, verify_once)
    record = svc.progress.get(job_id(63))
    assert record is not None
    assert record["state"] == "finalising"
    # WHEN it runs after the claim went stale THEN the job is finalised, once
    now[0] += STALE_CLAIM_S + 1
    reconcile(svc, verify_once)
    reconcile(svc, verify_once)
    assert report(aws, job_id(63))["verdict"] == "CLEAN"
    record = svc.progress.get(job_id(63))
    assert record is not None
    assert record["state"] == "done"


def verify_frames_for(item: WorkItem, svc: Services) -> Part:
    return verify_work_item(svc.frames, item, OPTIONS)


def test_a_job_whose_trigger_died_while_planning_is_planned_again_by_the_sweep(aws: dict[str, Any]) -> None:
    # GIVEN a job recorded as planning, whose trigger died before queueing anything
    now = [1_000_000.0]
    source = FakeSource()
    source.add_image_set(image_set_id(64), make_frames(2, seed=64))
    svc = services(aws, source, clock=lambda: now[0])
    folder = write_job(aws, job_id(64), [image_set_id(64)])
    assert svc.progress.create(job_id(64), DS, folder, pending=1)
    verify_once = lambda job: start_job(JobRef(**job), svc)  # noqa: E731
    # WHEN the sweep runs after the trigger's timeout, and the queued work is processed
    now[0] += 901
    reconcile(svc, verify_once)
    for m in drain(aws):
        process(WorkItem.from_json(m["Body"]), svc)
    # THEN the job is verified to the end
    assert report(aws, job_id(64))["verdict"] == "CLEAN"


def test_of_two_concurrent_deliveries_the_first_part_written_is_the_one_counted(aws: dict[str, Any]) -> None:
    # GIVEN an item whose first delivery verified its frames and wrote its part, but has not counted it yet
    source = FakeSource()
    frames = make_frames(3, seed=44)
    source.add_image_set(image_set_id(70), frames)
    svc = services(aws, source)
    start_job(JobRef(DS, job_id(70), write_job(aws, job_id(70), [image_set_id(70)]), "s3"), svc)
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    assert svc.reports.put_part(job_id(70), verify_frames_for(item, svc)).error is None
    # WHEN a second delivery of the same item runs while GetImageSetMetadata fails for it
    stored = source.image_sets.pop(image_set_id(70))
    process(item, svc)
    source.image_sets[image_set_id(70)] = stored
    # THEN the part that stands (and is counted) is the first one: the report and the ledger agree, CLEAN
    doc = report(aws, job_id(70))
    assert (doc["verdict"], doc["imageSets"][0]["error"], doc["summary"]["frames"]["match"]) == ("CLEAN", None, 3)
    record = svc.progress.get(job_id(70))
    assert record is not None
    assert (record["frames_match"], record["frames_error"]) == (3, 0)
