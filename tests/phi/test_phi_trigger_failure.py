"""A trigger failure on an import-job event, through the local stack. The event's free-text fields (``jobName``,
``inputS3Uri``, ``outputS3Uri``) are the importer's choice and may name a patient. Lambda's OnFailure record
carries the raw event, so the destination must be a queue (TriggerFailureQueue), never a topic: nothing with a
sentinel may reach the alert topic or the operations topic, whose subscribers include e-mail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from local.stack import LocalStack
from tests.phi.conftest import Emitted
from tests.phi.sentinel import NAME, PATIENT_ID, assert_clean, scan

pytestmark = pytest.mark.integration

DS = "c4" * 16
#: A job the emulator does not know: GetDICOMImportJob answers "not found", and an import-job event names no
#: output folder to read instead, so every attempt of the trigger fails.
JOB = "0f" * 16
TOPICS = {"AlertTopic", "OpsTopic"}


def failed_import_event() -> dict[str, Any]:
    return {
        "source": "aws.medical-imaging",
        "detail-type": "Import Job Failed",
        "detail": {
            "imagingVersion": "1.0",
            "datastoreId": DS,
            "jobId": JOB,
            "jobName": f"{NAME}-{PATIENT_ID}-CT",
            "jobStatus": "FAILED",
            "inputS3Uri": f"s3://site-dicom/{NAME}/{PATIENT_ID}/",
            "outputS3Uri": f"s3://site-output/import-output/{PATIENT_ID}/",
        },
    }


def drain(stack: LocalStack, queue: str) -> list[dict[str, Any]]:
    url, bodies = stack.queue_url(queue), []
    while messages := stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_a_failed_trigger_on_an_import_job_event_reaches_no_topic(emitted: Emitted) -> None:
    with LocalStack(parameters={"DatastoreId": DS}) as stack:
        stack.emulator.create_datastore(DS)
        # both topics are read back by the stack (a reader queue subscribed to each), so both are scanned
        assert set(stack.resources.alert_queues) == TOPICS
        emitted.start()
        # GIVEN an import-job event whose job name and input location carry the sentinel patient
        event = failed_import_event()
        stack.put_events(event)
        # WHEN the trigger fails on it through every retry of Lambda's asynchronous invocation
        summary = stack.run_until_idle(timeout=60)
        runs = [r for r in summary.records if r.function == "JobTriggerFunction"]
        assert runs
        assert not any(r.ok for r in runs), [r.error for r in runs]
        # THEN the invocation record, raw event included, waits in the failure queue (for an operator)
        (record,) = drain(stack, "TriggerFailureQueue")
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestPayload"]["detail"]["jobName"] == event["detail"]["jobName"]
        assert scan("failure record", json.dumps(record)), "the sentinel did not even reach the record"
        # AND nothing published to either topic carries a sentinel (alerts, alarms, operational messages)
        texts = {}
        for i, alert in enumerate(stack.alerts()):
            assert alert.topic in TOPICS
            texts[f"{alert.topic} #{i} subject"] = alert.subject
            texts[f"{alert.topic} #{i} message"] = alert.message
            texts[f"{alert.topic} #{i} attributes"] = json.dumps(dict(alert.attributes))
            texts[f"{alert.topic} #{i} envelope"] = json.dumps(alert.envelope)
        assert_clean(texts)
