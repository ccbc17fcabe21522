"""The SAM application end to end through the Docker-free local stack: real template, real handlers,
moto for S3/SQS/SNS/DynamoDB, the emulator for HealthImaging and its import jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_emulator import ImportFaults
from ahi_verify.cli import EVIDENCE_BROKEN, EVIDENCE_INTACT, main
from local.stack import LocalStack

pytestmark = pytest.mark.integration

DS = "a1" * 16
FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm")


def start_stack(**parameters: str) -> LocalStack:
    return LocalStack(parameters={"DatastoreId": DS, **parameters})


def import_files(stack: LocalStack, output: str, files: tuple[str, ...] = FILES, **kw: Any) -> str:
    stack.s3.create_bucket(Bucket="site-dicom")
    prefix = f"batch-{len(stack.emulator.import_jobs(DS))}/"
    for name in files:
        body = Path(str(get_testdata_file(name, download=False))).read_bytes()
        stack.s3.put_object(Bucket="site-dicom", Key=f"{prefix}{name}", Body=body)
    job: str = stack.emulator.start_import_job(DS, f"s3://site-dicom/{prefix}", output, **kw)
    return job


def output_uri(stack: LocalStack) -> str:
    env = stack.function("JobTriggerFunction").environment
    return f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}"


def report(stack: LocalStack, job: str) -> dict[str, Any]:
    env = stack.function("JobTriggerFunction").environment
    key = f"{env['REPORTS_PREFIX']}{job}/report.json"
    return dict(json.loads(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read()))


def worker_runs(stack: LocalStack) -> int:
    return sum(1 for i in stack.invocations if i.function == "ImageSetWorkerFunction")


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with start_stack() as running:
        running.emulator.create_datastore(DS)
        yield running


def test_clean_job_sends_no_alert(stack: LocalStack) -> None:
    # GIVEN a clean import WHEN the S3 notification drives the application until idle
    job = import_files(stack, output_uri(stack))
    summary = stack.run_until_idle(timeout=120)
    # THEN all frames match, the report is CLEAN and nobody is e-mailed
    assert summary.failures == {}
    doc = report(stack, job)
    assert (doc["verdict"], doc["summary"]["frames"]["mismatch"]) == ("CLEAN", 0)
    assert doc["summary"]["frames"]["total"] == 4
    assert stack.alerts() == []


def test_clean_job_summary_when_enabled() -> None:
    with start_stack(NotifyOnCleanJobs="true") as stack:
        stack.emulator.create_datastore(DS)
        job = import_files(stack, output_uri(stack))
        stack.run_until_idle(timeout=120)
        (alert,) = stack.alerts()
        assert alert.subject == f"[ahi-verify] OK: import job {job} verified, 4 frames match"


def test_corrupted_frame_gives_exactly_one_alert_naming_it(stack: LocalStack) -> None:
    job = import_files(stack, output_uri(stack), faults=ImportFaults(corrupt_frames=1))
    stack.run_until_idle(timeout=120)
    (corrupted,) = stack.emulator.job_faults(job).corrupted_frames
    (alert,) = stack.alerts()
    assert alert.subject is not None
    assert alert.subject.startswith("[ahi-verify] MISMATCH: 1 frame(s) differ")
    assert corrupted.frame_id in alert.message
    assert alert.attributes["severity"] == "MISMATCH"
    assert report(stack, job)["verdict"] == "MISMATCH"


def test_the_same_s3_event_three_times_verifies_once_and_alerts_once(stack: LocalStack) -> None:
    import_files(stack, output_uri(stack), faults=ImportFaults(corrupt_frames=1))
    stack.run_until_idle(timeout=120)
    s3_event = next(i.event for i in stack.invocations if i.source == "s3")
    workers = worker_runs(stack)
    # WHEN the same notification arrives twice more
    stack.deliver_s3_event(s3_event)
    stack.deliver_s3_event(s3_event)
    summary = stack.run_until_idle(timeout=60)
    # THEN no image set is queued again and there is still one alert
    assert summary.failures == {}
    assert worker_runs(stack) == workers
    assert len(stack.alerts()) == 1


def test_a_killed_worker_is_redelivered_alone_and_the_job_completes(stack: LocalStack) -> None:
    # GIVEN the next worker invocation dies mid-flight (SIGKILL, not an exception)
    stack.arm_crash("ImageSetWorkerFunction", after_s=0.05)
    job = import_files(stack, output_uri(stack))
    summary = stack.run_until_idle(timeout=180)
    # THEN that message is redelivered, the job completes with every frame once, nothing is dead-lettered
    assert summary.failures.get("ImageSetWorkerFunction") == 1
    assert summary.dlq_depth == {"WorkDeadLetterQueue": 0}
    doc = report(stack, job)
    assert doc["summary"]["frames"] == {"total": 4, "match": 4, "mismatch": 0, "error": 0}
    frame_ids = [f["imageFrameId"] for s in doc["imageSets"] for f in s["frames"]]
    assert len(frame_ids) == len(set(frame_ids)) == 4


def test_poison_message_ends_in_the_dlq_and_its_recorder_takes_it_off(stack: LocalStack) -> None:
    # GIVEN a message on the work queue that is no work item
    env = stack.function("ImageSetWorkerFunction").environment
    stack.sqs.send_message(QueueUrl=env["WORK_QUEUE_URL"], MessageBody='{"v": 1, "jobId": "nope"}')
    summary = stack.run_until_idle(timeout=60)
    # THEN it was tried maxReceiveCount (5, the template's default) times, then moved to the DLQ, where the
    # dead-letter recorder found no job to record it in, counted it and removed it (nothing left to alarm on)
    assert summary.failures.get("ImageSetWorkerFunction") == 5
    recorder = [i for i in stack.invocations if i.function == "DeadLetterRecorderFunction" and i.source == "sqs"]
    assert [i.ok for i in recorder] == [True]
    assert stack.dlq_depths() == {"WorkDeadLetterQueue": 0}
    assert stack.alerts() == []


def test_large_image_set_is_split_and_merged_into_one_report() -> None:
    with start_stack(FramesPerWorkItem="4") as stack:
        stack.emulator.create_datastore(DS)
        job = import_files(stack, output_uri(stack), files=("rtdose.dcm",))
        stack.run_until_idle(timeout=120)
        (image_set,) = report(stack, job)["imageSets"]
        assert [f["frameNumber"] for f in image_set["frames"]] == list(range(1, 16))
        assert image_set["error"] is None
        assert worker_runs(stack) == 4  # 15 frames in items of at most 4


def test_existing_bucket_mode_both_eventbridge_triggers_verify_once() -> None:
    with start_stack(TriggerMode="ExistingBucket", ExistingOutputBucketName="site-imports") as stack:
        stack.emulator.create_datastore(DS)
        job = import_files(stack, "s3://site-imports/import-output/", faults=ImportFaults(corrupt_frames=1))
        stack.run_until_idle(timeout=120)
        origins = [i.event.get("source") for i in stack.invocations if i.function == "JobTriggerFunction" and i.ok]
        assert sorted(origins) == ["aws.medical-imaging", "aws.s3"]
        assert report(stack, job)["verdict"] == "MISMATCH"
        assert len(stack.alerts()) == 1


def test_reconciliation_finds_a_job_whose_events_were_lost(stack: LocalStack) -> None:
    # GIVEN an import whose S3 notification and EventBridge event were both lost
    job = import_files(stack, output_uri(stack))
    stack.emulator.wait_for_job(DS, job, wait_for_outputs=True)
    assert stack.discard_pending() >= 1
    stack.run_until_idle(timeout=30)
    assert worker_runs(stack) == 0
    # WHEN the reconciliation schedule fires THEN the job is verified
    stack.run_schedule()
    stack.run_until_idle(timeout=120)
    assert report(stack, job)["verdict"] == "CLEAN"
    stack.run_schedule()  # and a second sweep starts nothing new
    assert stack.run_until_idle(timeout=30).invocations.get("ImageSetWorkerFunction", 0) == 0


def test_every_finalisation_is_in_the_evidence_chain_and_an_edit_is_found(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two jobs run through the application, one with a corrupted frame (so it keeps an alert too)
    clean = import_files(stack, output_uri(stack))
    broken = import_files(stack, output_uri(stack), faults=ImportFaults(corrupt_frames=1))
    stack.run_until_idle(timeout=180)
    env = stack.function("JobTriggerFunction").environment
    reports = f"s3://{env['REPORTS_BUCKET']}/{env['REPORTS_PREFIX']}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stack.endpoint_url)

    def validate() -> tuple[int, dict[str, Any]]:
        capsys.readouterr()  # the functions' own log lines (EMF metrics) went to stdout too
        code = main(["evidence", "validate", reports, "--output", "json"])
        return code, dict(json.loads(capsys.readouterr().out))

    # WHEN the reports bucket is validated THEN the chain is intact: one digest per job, every document listed
    code, doc = validate()
    assert (code, doc["intact"], doc["digests"]) == (EVIDENCE_INTACT, True, 2), doc
    assert doc["objects"] == 5  # report.json and report.html of both jobs, the broken job's alert.json
    # WHEN the clean job's report is edited THEN exit 1 names exactly that report
    key = f"{env['REPORTS_PREFIX']}{clean}/report.json"
    stack.s3.put_object(Bucket=env["REPORTS_BUCKET"], Key=key, Body=b'{"verdict": "CLEAN"}')
    code, doc = validate()
    assert code == EVIDENCE_BROKEN
    assert [line.split(":")[0] for line in doc["altered"]] == [key]
    assert doc["missing"] == doc["chainBroken"] == doc["unlisted"] == []
    assert report(stack, broken)["verdict"] == "MISMATCH"
