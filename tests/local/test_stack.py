"""LocalStack on the test application: event sources, the SQS event source mapping's batch semantics, the
function environment and context, alerts, crashes and timeouts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from ahi_emulator import Emulator
from local.stack import Invocation, LocalStack
from tests.local.conftest import DATASTORE_ID, StackFactory

pytestmark = pytest.mark.integration

MANIFEST = "job-output-manifest.json"


def batch_size(size: int) -> Any:
    return lambda text: text.replace("BatchSize: 1", f"BatchSize: {size}")


def send(stack: LocalStack, *bodies: dict[str, Any]) -> list[str]:
    url = stack.queue_url("WorkQueue")
    return [stack.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(b))["MessageId"] for b in bodies]


def worker_runs(records: list[Invocation]) -> list[Invocation]:
    return [r for r in records if r.function == "ImageSetWorkerFunction"]


def receive_counts(invocation: Invocation) -> dict[str, str]:
    return {r["messageId"]: r["attributes"]["ApproximateReceiveCount"] for r in invocation.event["Records"]}


def test_s3_notification_invokes_the_trigger_once_per_manifest(make_stack: StackFactory) -> None:
    # GIVEN the stack, and a manifest key with a space under the watched prefix
    stack = make_stack()
    bucket = stack.bucket_name("OutputBucket")
    key = f"import-output/batch one/{DATASTORE_ID}-DicomImport-j1/{MANIFEST}"
    # WHEN the import writes its files: the manifest, an ndjson file, and a manifest outside the prefix
    stack.s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    stack.s3.put_object(Bucket=bucket, Key=key.replace(MANIFEST, "SUCCESS/success.ndjson"), Body=b"")
    stack.s3.put_object(Bucket=bucket, Key=f"ahi-verify-reports/{MANIFEST}", Body=b"{}")
    summary = stack.run_until_idle(timeout=20)
    # THEN the trigger ran once (not for the other objects, not for S3's test event), with the key encoded
    assert summary.invocations == {"JobTriggerFunction": 1}
    (run,) = summary.records
    record = run.event["Records"][0]
    assert run.source == "s3"
    assert run.ok, run.error
    assert record["s3"]["object"]["key"] != key
    assert "+" in record["s3"]["object"]["key"]
    assert unquote_plus(record["s3"]["object"]["key"]) == key
    assert run.result["keys"] == [key]
    # and in AWS's full record shape
    assert record["eventName"] == "ObjectCreated:Put"
    assert {"userIdentity", "requestParameters", "responseElements"} <= set(record)
    assert {"ownerIdentity", "arn", "name"} <= set(record["s3"]["bucket"])
    assert {"key", "size", "eTag", "sequencer"} <= set(record["s3"]["object"])


def test_function_environment_and_context_come_from_the_template(make_stack: StackFactory) -> None:
    # GIVEN the stack
    stack = make_stack()
    before = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    # WHEN the trigger is invoked directly (its first invocation: the cold start)
    run = stack.invoke("JobTriggerFunction", {"source": "local.test", "detail": {}})
    # THEN its environment is the template's, resolved to this stack's resources, set before the import too
    assert run.ok, run.error
    env, context = run.result["env"], run.result["context"]
    expected = stack.function("JobTriggerFunction").environment
    assert {k: env[k] for k in expected} == dict(expected)
    assert env["WORK_QUEUE_URL"] == stack.queue_url("WorkQueue")
    assert env["PROGRESS_TABLE"] == stack.tables["ProgressTable"]
    assert env["ALERT_TOPIC_ARN"] == stack.topics["AlertTopic"]
    assert env["TRIGGER_ONLY"] == "yes"
    assert run.result["env_at_import"] == {
        "WORK_QUEUE_URL": stack.queue_url("WorkQueue"),
        "AWS_LAMBDA_FUNCTION_NAME": "ahi-verify-local-JobTriggerFunction",
    }
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert run.result["layer"] == "core-layer-on-sys-path"
    # and the context is the one Lambda's Python runtime passes
    assert context["function_name"] == "ahi-verify-local-JobTriggerFunction"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == (
        "arn:aws:lambda:us-east-1:123456789012:function:ahi-verify-local-JobTriggerFunction"
    )
    assert context["memory_limit_in_mb"] == "512"
    assert context["aws_request_id"] == run.request_id
    assert context["log_group_name"] == "/aws/lambda/ahi-verify-local-JobTriggerFunction"
    assert "[$LATEST]" in context["log_stream_name"]
    assert 290_000 < context["remaining_ms"] <= 300_000
    # and the function's variables are gone again after the invocation
    assert os.environ.get("AWS_LAMBDA_FUNCTION_NAME") == before
    assert stack.function("ImageSetWorkerFunction").memory_mb == 1769


def test_partial_batch_failure_redelivers_only_the_failed_message(make_stack: StackFactory) -> None:
    # GIVEN a batch size of 3 and three messages, the second failing on its first delivery
    stack = make_stack(edit=batch_size(3))
    first, flaky, third = send(stack, {"mode": "ok"}, {"mode": "fail-once"}, {"mode": "ok"})
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=20)
    # THEN one batch of three reported one failure, only that message came back (second receive), nothing is left
    batch, retry = worker_runs(summary.records)
    assert set(receive_counts(batch)) == {first, flaky, third}
    assert batch.failed_item_ids == [flaky]
    assert receive_counts(retry) == {flaky: "2"}
    assert retry.failed_item_ids == []
    assert stack.queue_depth("WorkQueue") == 0
    assert summary.dlq_depth == {"WorkDeadLetterQueue": 0}


def test_a_message_that_always_fails_ends_in_the_dead_letter_queue(make_stack: StackFactory) -> None:
    # GIVEN a message the worker reports as failed every time (template: maxReceiveCount 3)
    stack = make_stack()
    (message_id,) = send(stack, {"mode": "fail"})
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=20)
    # THEN it was delivered exactly maxReceiveCount times, then moved (by moto's redrive) to the DLQ
    runs = worker_runs(summary.records)
    assert [receive_counts(r)[message_id] for r in runs] == ["1", "2", "3"]
    assert summary.failed_items == {"ImageSetWorkerFunction": 3}
    assert stack.queue_depth("WorkQueue") == 0
    assert summary.dlq_depth == {"WorkDeadLetterQueue": 1}
    dead = stack.sqs.receive_message(QueueUrl=stack.queue_url("WorkDeadLetterQueue"))["Messages"]
    assert json.loads(dead[0]["Body"]) == {"mode": "fail"}


def test_an_exception_fails_the_whole_batch(make_stack: StackFactory) -> None:
    # GIVEN a batch of two where processing raises on the first delivery
    stack = make_stack(edit=batch_size(2))
    ids = set(send(stack, {"mode": "ok"}, {"mode": "raise-once"}))
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=20)
    # THEN the raising invocation failed and both messages (not only the bad one) were delivered again
    failed, retry = worker_runs(summary.records)
    assert failed.error == "ValueError: instructed to raise"
    assert set(failed.failed_item_ids) == ids
    assert receive_counts(retry) == dict.fromkeys(ids, "2")
    assert retry.ok
    assert summary.failures == {"ImageSetWorkerFunction": 1}
    assert summary.dlq_depth == {"WorkDeadLetterQueue": 0}


def test_a_failed_message_waits_out_the_retry_visibility_timeout(make_stack: StackFactory) -> None:
    # GIVEN a 2-second retry visibility timeout and a message failing once
    stack = make_stack(retry_visibility_timeout=2)
    send(stack, {"mode": "fail-once"})
    # WHEN the event source mapping runs
    first, second = worker_runs(stack.run_until_idle(timeout=20).records)
    # THEN the redelivery came only after the timeout
    assert second.started_at - first.started_at >= 1.8


def test_alerts_are_read_back_through_the_subscribed_queue(make_stack: StackFactory) -> None:
    # GIVEN the stack
    stack = make_stack()
    alert = {
        "subject": "ahi-verify: 1 frame MISMATCH",
        "message": "see the report",
        "attributes": {"verdict": "MISMATCH"},
    }
    # WHEN the trigger publishes an alert to ALERT_TOPIC_ARN
    run = stack.invoke("JobTriggerFunction", {"source": "local.test", "detail": {"alert": alert}})
    assert run.ok, run.error
    alerts = stack.alerts()
    # THEN the SNS envelope is visible: subject, message, attributes, topic; reading again gives the same
    assert len(alerts) == 1
    assert alerts[0].topic == "AlertTopic"
    assert alerts[0].subject == alert["subject"]
    assert alerts[0].message == "see the report"
    assert alerts[0].attributes == {"verdict": "MISMATCH"}
    assert alerts[0].envelope["TopicArn"] == stack.topics["AlertTopic"]
    assert alerts[0].envelope["Type"] == "Notification"
    assert stack.alerts() == alerts


def test_an_emulated_import_reaches_the_trigger_by_notification_and_by_event(make_stack: StackFactory) -> None:
    # GIVEN the stack's data store and another one, and an (empty) input folder
    stack = make_stack()
    emulator: Emulator = stack.emulator
    emulator.create_datastore(DATASTORE_ID)
    other = emulator.create_datastore()
    stack.s3.create_bucket(Bucket="local-input")
    output = f"s3://{stack.bucket_name('OutputBucket')}"
    # WHEN a job of each data store runs; the other one writes outside the watched prefix
    job = emulator.start_import_job(DATASTORE_ID, "s3://local-input/dicom/", f"{output}/import-output/")
    emulator.start_import_job(other, "s3://local-input/dicom/", f"{output}/elsewhere/")
    summary = stack.run_until_idle(timeout=30)
    # THEN the trigger ran twice for the stack's job: the manifest's S3 event and the import-job event
    runs = sorted(summary.records, key=lambda r: r.source)
    assert [r.source for r in runs] == ["eventbridge", "s3"]
    assert runs[0].event["detail-type"] == "Import Job Completed"
    assert runs[0].event["detail"]["jobId"] == job
    assert runs[1].result["keys"] == [f"import-output/{DATASTORE_ID}-DicomImport-{job}/{MANIFEST}"]


def test_the_schedule_invokes_the_trigger_with_a_scheduled_event(make_stack: StackFactory) -> None:
    # GIVEN the stack (ReconcileSchedule is a Schedule event of the trigger)
    stack = make_stack()
    # WHEN the schedule fires
    (run,) = stack.run_schedule()
    # THEN the trigger got EventBridge's scheduled event naming the rule
    assert run.ok, run.error
    assert run.source == "schedule"
    assert run.event["source"] == "aws.events"
    assert run.event["detail-type"] == "Scheduled Event"
    assert run.event["detail"] == {}
    assert run.event["resources"] == [
        "arn:aws:events:us-east-1:123456789012:rule/ahi-verify-local-JobTriggerFunctionReconcile"
    ]
    with pytest.raises(KeyError, match="no schedule rule"):
        stack.run_schedule("Nope")


def test_existing_bucket_mode_routes_object_created_events_through_the_rule(make_stack: StackFactory) -> None:
    # GIVEN ExistingBucket mode on a bucket outside the stack
    stack = make_stack(parameters={"TriggerMode": "ExistingBucket", "ExistingOutputBucketName": "imaging-existing-out"})
    key = f"import-output/{DATASTORE_ID}-DicomImport-j2/{MANIFEST}"
    # WHEN the import writes the manifest and another object there
    stack.s3.put_object(Bucket="imaging-existing-out", Key=key, Body=b"{}")
    stack.s3.put_object(Bucket="imaging-existing-out", Key=key.replace(MANIFEST, "SUCCESS/success.ndjson"), Body=b"")
    summary = stack.run_until_idle(timeout=20)
    # THEN only the manifest's "Object Created" event matched ExistingBucketManifestRule; its key is not encoded
    (run,) = summary.records
    assert run.source == "eventbridge"
    assert run.event["detail-type"] == "Object Created"
    assert run.event["detail"]["object"]["key"] == key
    assert run.event["detail"]["bucket"]["name"] == "imaging-existing-out"
    assert "OutputBucket" not in stack.buckets
    assert stack.function("JobTriggerFunction").environment["OUTPUT_BUCKET"] == "imaging-existing-out"


def test_put_events_routes_only_matching_events(make_stack: StackFactory) -> None:
    # GIVEN the stack and import-job events for its data store, another data store, and an unrelated source
    stack = make_stack()
    detail = {"datastoreId": DATASTORE_ID, "jobId": "j3", "jobStatus": "FAILED"}
    # WHEN they are put on the bus (full events and PutEvents entries)
    stack.put_events(
        {"source": "aws.medical-imaging", "detail-type": "Import Job Failed", "detail": detail},
        {"Source": "aws.medical-imaging", "DetailType": "Import Job Completed", "Detail": json.dumps(detail)},
        {
            "source": "aws.medical-imaging",
            "detail-type": "Import Job Failed",
            "detail": {**detail, "datastoreId": "f" * 32},
        },
        {"source": "local.test", "detail-type": "Import Job Failed", "detail": detail},
    )
    summary = stack.run_until_idle(timeout=20)
    # THEN the two for the data store reached the trigger, with the EventBridge envelope filled in
    assert summary.invocations == {"JobTriggerFunction": 2}
    assert {r.event["detail-type"] for r in summary.records} == {"Import Job Failed", "Import Job Completed"}
    assert all(r.event["account"] == "123456789012" and r.event["id"] for r in summary.records)


@pytest.mark.parametrize("retries", [2, 0])
def test_a_failing_asynchronous_invocation_is_retried_then_sent_to_its_destination(
    make_stack: StackFactory, retries: int
) -> None:
    # GIVEN a trigger that fails on this manifest (EventInvokeConfig: MaximumRetryAttempts, OnFailure -> AlertTopic)
    stack = make_stack(edit=lambda text: text.replace("MaximumRetryAttempts: 2", f"MaximumRetryAttempts: {retries}"))
    key = f"import-output/fail-me/{DATASTORE_ID}-DicomImport-j4/{MANIFEST}"
    # WHEN S3 delivers the notification
    stack.s3.put_object(Bucket=stack.bucket_name("OutputBucket"), Key=key, Body=b"{}")
    summary = stack.run_until_idle(timeout=20)
    # THEN Lambda's asynchronous invocation tried it 1 + MaximumRetryAttempts times
    assert [(r.attempt, r.ok) for r in summary.records] == [(n, False) for n in range(1, retries + 2)]
    assert summary.records[0].error == "RuntimeError: instructed to fail by the key"
    # and then published its invocation record to the OnFailure destination
    (alert,) = stack.alerts()
    record = json.loads(alert.message)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == retries + 1
    assert record["requestPayload"] == summary.records[0].event
    assert record["responsePayload"] == {"errorType": "RuntimeError", "errorMessage": "instructed to fail by the key"}


def test_a_worker_killed_mid_batch_is_redelivered(make_stack: StackFactory, tmp_path: Path) -> None:
    # GIVEN a worker that will be killed once it has started processing (it creates the marker, then hangs)
    stack = make_stack()
    marker = tmp_path / "started"
    stack.arm_crash("ImageSetWorkerFunction", when=marker.exists)
    (message_id,) = send(stack, {"mode": "hang-once", "marker": str(marker)})
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=30)
    # THEN the killed invocation failed as a whole and the message was processed on its redelivery
    killed, retry = worker_runs(summary.records)
    assert marker.exists()
    assert killed.error is not None
    assert killed.error.startswith("Runtime.ExitError: killed (SIGKILL)")
    assert killed.duration_s < 10
    assert receive_counts(retry) == {message_id: "2"}
    assert retry.ok
    assert summary.dlq_depth == {"WorkDeadLetterQueue": 0}


def test_subprocess_isolation_enforces_the_timeout(make_stack: StackFactory, tmp_path: Path) -> None:
    # GIVEN the worker in its own process with a 1-second Timeout
    stack = make_stack(
        edit=lambda text: text.replace("Timeout: 900", "Timeout: 1"), isolation={"ImageSetWorkerFunction": "subprocess"}
    )
    send(stack, {"mode": "hang-once", "marker": str(tmp_path / "m")})
    # WHEN the event source mapping runs
    timed_out, retry = worker_runs(stack.run_until_idle(timeout=30).records)
    # THEN the hanging invocation was stopped at the timeout, and the redelivery succeeded in a new process
    assert timed_out.error == "Sandbox.Timedout: Task timed out after 1.00 seconds"
    assert retry.ok, retry.error
    assert retry.result["batchItemFailures"] == []


def test_stopping_restores_the_process(app_dir: Path) -> None:
    # GIVEN the process before a stack runs
    endpoint, modules, path = os.environ.get("AWS_ENDPOINT_URL"), set(sys.modules), list(sys.path)
    # WHEN a stack starts, runs a handler, and stops
    with LocalStack(app_dir / "template.yaml", parameters={"DatastoreId": DATASTORE_ID}) as stack:
        assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url
        assert stack.invoke("JobTriggerFunction", {"source": "local.test"}).ok
        assert "job_trigger" in sys.modules
    # THEN the environment, sys.path and the imported handler modules are as before
    assert os.environ.get("AWS_ENDPOINT_URL") == endpoint
    assert "job_trigger" not in sys.modules
    assert "local_test_layer" not in sys.modules
    assert not [m for m in set(sys.modules) - modules if m.startswith(("job_trigger", "local_test"))]
    assert sys.path == path
