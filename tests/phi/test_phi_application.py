"""The application through the local stack: the sentinel import driven by its S3 notification, a poison
work item, and NotifyOnCleanJobs=true. Captured: stdout/stderr (Powertools JSON logs and EMF metrics), every
log record, failed invocations' errors, every SNS alert (subject, message, attributes, envelope), every
object under the reports prefix (of the reports bucket) and the DynamoDB items."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ahi_emulator import ImportFaults
from local.stack import LocalStack
from tests.phi.conftest import Emitted
from tests.phi.sentinel import (
    NAME,
    PATIENT_ID,
    SDK_LOG,
    SENTINEL_KEY,
    allow_documented_keys_html,
    allow_documented_keys_json,
    assert_clean,
    documented_key_count,
    scrub_key,
    scrub_key_in_sdk_logs,
    sentinel_files,
)

pytestmark = pytest.mark.integration

DS = "c3" * 16


def run_import(stack: LocalStack, holds: str, **kw: Any) -> str:
    env = stack.function("JobTriggerFunction").environment
    stack.s3.create_bucket(Bucket="site-dicom")
    files = sentinel_files(sentinel_key_holds=holds)
    if holds == "good":  # a clean import: only files that import and verify
        files = {k: v for k, v in files.items() if k not in ("dicom/rejected.dcm", "dicom/truncated.dcm")}
    for key, body in files.items():
        stack.s3.put_object(Bucket="site-dicom", Key=key, Body=body)
    job: str = stack.emulator.start_import_job(
        DS, "s3://site-dicom/dicom/", f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}", **kw
    )
    return job


def capture_stack(stack: LocalStack, emitted: Emitted, label: str) -> dict[str, Any]:
    """Everything the application produced; returns the parsed report.json documents by job."""
    emitted.collect(label)
    for i, inv in enumerate(stack.invocations):
        emitted.add(f"{label}: invocation {i} {inv.function} error", inv.error)
        emitted.add(f"{label}: invocation {i} {inv.function} result", json.dumps(inv.result))
    for alert in stack.alerts():
        emitted.add(f"{label}: alert subject", alert.subject)
        emitted.add(f"{label}: alert message", alert.message)
        emitted.add(f"{label}: alert attributes", json.dumps(dict(alert.attributes)))
        emitted.add(f"{label}: alert envelope", json.dumps(alert.envelope))
    env = stack.function("JobTriggerFunction").environment
    bucket, prefix = env["REPORTS_BUCKET"], env["REPORTS_PREFIX"]
    reports: dict[str, Any] = {}
    for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = stack.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            emitted.add(f"s3://{bucket}/{obj['Key']}", body)
            if obj["Key"].endswith("/report.json"):
                reports[obj["Key"]] = json.loads(body)
    for table in stack.tables.values():
        for item in stack.dynamodb.scan(TableName=table).get("Items", []):
            emitted.add(f"dynamodb {table}", json.dumps(item))
    return reports


@pytest.fixture(scope="module")
def faulty_run() -> Any:
    """One stack: the sentinel import (key on the undecodable file, a rejected file, a corrupted frame and a
    wrong checksum) driven by its S3 notification, then two poison work items."""
    with LocalStack(parameters={"DatastoreId": DS}) as stack:
        stack.emulator.create_datastore(DS)
        yield stack


def test_application_never_emits_patient_data(faulty_run: LocalStack, emitted: Emitted) -> None:
    stack = faulty_run
    emitted.start()
    # GIVEN the sentinel import, driven by its S3 notification, and two poison work items
    job = run_import(stack, "undecodable", faults=ImportFaults(corrupt_frames=1, wrong_checksums=1))
    stack.run_until_idle(timeout=120)
    emitted.collect("application")
    queue = stack.function("ImageSetWorkerFunction").environment["WORK_QUEUE_URL"]
    stack.sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"v": 1, "jobId": PATIENT_ID, "patient": NAME}))
    stack.sqs.send_message(QueueUrl=queue, MessageBody=f"not json {NAME} {PATIENT_ID}")
    stack.run_until_idle(timeout=60)
    emitted.collect("poison")
    # The poison bodies are the test's input: the SDK's DEBUG records of sending and receiving them (test and
    # event source mapping) quote them by nature and are no output of the functions.
    for where in [w for w in emitted.texts if w.startswith("poison") and SDK_LOG.search(w)]:
        del emitted.texts[where]
    # Both reached the DLQ, and the dead-letter recorder took them off: no job to record them in.
    assert stack.dlq_depths() == {"WorkDeadLetterQueue": 0}
    recorder = [i for i in stack.invocations if i.function == "DeadLetterRecorderFunction" and i.source == "sqs"]
    assert recorder
    assert all(i.ok for i in recorder)
    reports = capture_stack(stack, emitted, "application")
    (report,) = reports.values()
    assert (report["job"]["jobId"], report["verdict"]) == (job, "MISMATCH")
    assert [w["inputFile"] for w in report["warnings"]] == [SENTINEL_KEY]
    (alert,) = stack.alerts()
    assert alert.attributes["severity"] == "MISMATCH"
    # THEN no attribute value appears anywhere (the key is judged by the next test)
    assert_clean({where: scrub_key(text) for where, text in emitted.texts.items()})
    faulty_run.captured = dict(emitted.texts)  # type: ignore[attr-defined]
    faulty_run.report = report  # type: ignore[attr-defined]


def _documented_only(texts: dict[str, str], report: dict[str, Any]) -> dict[str, str]:
    out = scrub_key_in_sdk_logs(texts)
    for where, text in texts.items():
        if where.endswith("/report.json"):
            out[where] = json.dumps(allow_documented_keys_json(json.loads(text)))
        elif where.endswith("/report.html"):
            out[where] = allow_documented_keys_html(text, documented_key_count(report))
    return out


def test_application_lists_the_named_key_only_in_the_report(faulty_run: LocalStack) -> None:
    # (uses what the previous test captured)
    texts, report = faulty_run.captured, faulty_run.report  # type: ignore[attr-defined]
    # THEN the key appears only as report.json's (and report.html's) failed/warned inputFile; never in the
    # alert, logs, metrics, parts; job.json, the plan the report is built from, is judged separately
    texts = {k: v for k, v in _documented_only(texts, report).items() if not k.endswith("/job.json")}
    assert_clean(texts)


def test_application_job_json_lists_the_named_key_only_in_documented_fields(faulty_run: LocalStack) -> None:
    # job.json is the job's plan, which the final report is built from: the key may appear only as the
    # inputFile of a failed or warned file, as in report.json (the three-way check is off: no inputFiles)
    texts = faulty_run.captured  # type: ignore[attr-defined]
    job_json = {k: v for k, v in texts.items() if k.endswith("/job.json")}
    assert job_json
    scrubbed = {}
    for where, text in job_json.items():
        doc = json.loads(text)
        assert documented_key_count(doc) >= 1  # the documented exception is exercised
        assert all(s["inputFiles"] == [] for s in doc["imageSets"])
        scrubbed[where] = json.dumps(allow_documented_keys_json(doc))
    assert_clean(scrubbed)
