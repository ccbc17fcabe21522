"""LocalStack on the repository's template.yaml: the resources it creates follow the template's contract,
the event files route as the template says, and an emulated import is verified end to end by the real
handlers. Skipped, saying why, while the template lacks the application's resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_emulator import ImportFaults
from ahi_verify.dynamo_ledger import DynamoLedger
from ahi_verify.ledger import entry_of
from ahi_verify.report import JobReport, Verdict
from local.stack import DEFAULT_TEMPLATE, LocalStack
from local.template import load_template
from tests.local.test_template import CONTRACT_ENV
from tests.support import REPO

pytestmark = pytest.mark.integration

EVENTS = REPO / "events"
REQUIRED = ("JobTriggerFunction", "ImageSetWorkerFunction", "WorkQueue", "WorkDeadLetterQueue", "ProgressTable")


def event(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def real_template() -> Path:
    resources = load_template(DEFAULT_TEMPLATE)["Resources"]
    missing = [name for name in REQUIRED if name not in resources]
    if missing:
        pytest.skip(f"template.yaml does not have {', '.join(missing)} yet")
    return DEFAULT_TEMPLATE


def datastore_of_events() -> str:
    return str(event("eventbridge-import-job-completed.json")["detail"]["datastoreId"])


def test_resources_follow_the_template(real_template: Path) -> None:
    # GIVEN the real template with the events' data store
    with LocalStack(real_template, parameters={"DatastoreId": datastore_of_events()}) as stack:
        # WHEN the stack has created its resources
        attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url("WorkQueue"), AttributeNames=["All"])
        work = attributes["Attributes"]
        dlq_arn = stack.queues["WorkDeadLetterQueue"].arn
        progress = stack.dynamodb.describe_table(TableName=stack.tables["ProgressTable"])["Table"]
        ttl = stack.dynamodb.describe_time_to_live(TableName=stack.tables["ProgressTable"])
        by_queue = {m.queue.logical_id: m for m in stack.sqs_mappings}
        mapping, dead_letters, audit = by_queue["WorkQueue"], by_queue["WorkDeadLetterQueue"], by_queue["AuditQueue"]
        assert set(by_queue) == {"WorkQueue", "WorkDeadLetterQueue", "AuditQueue"}
        # THEN the work queue keeps the template's timeout and redrives to the DLQ after 3 receives
        assert work["VisibilityTimeout"] == "5400"
        assert json.loads(work["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
        # and the tables have the template's keys and TTL
        assert {k["AttributeName"]: k["KeyType"] for k in progress["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
        # and the worker consumes the queue one message at a time, with partial batch responses
        assert (mapping.function, mapping.queue.logical_id, mapping.batch_size, mapping.report_failures) == (
            "ImageSetWorkerFunction",
            "WorkQueue",
            1,
            True,
        )
        # and audit work is consumed by the same worker, one message at a time, at a concurrency of 2
        assert (audit.function, audit.batch_size, audit.report_failures) == ("ImageSetWorkerFunction", 1, True)
        assert audit.maximum_concurrency == 2
        audit_queue = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url("AuditQueue"), AttributeNames=["All"])
        assert json.loads(audit_queue["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn
        # and the dead letters are consumed by their recorder, also with partial batch responses
        assert (dead_letters.function, dead_letters.queue.logical_id, dead_letters.report_failures) == (
            "DeadLetterRecorderFunction",
            "WorkDeadLetterQueue",
            True,
        )
        # and the reports bucket is created, versioned, apart from the output bucket
        reports = stack.buckets["ReportsBucket"]
        assert stack.s3.get_bucket_versioning(Bucket=reports)["Status"] == "Enabled"
        # and the trigger's failure destination is a queue of its own, kept 14 days
        failures = stack.sqs.get_queue_attributes(
            QueueUrl=stack.queue_url("TriggerFailureQueue"), AttributeNames=["MessageRetentionPeriod"]
        )
        assert failures["Attributes"]["MessageRetentionPeriod"] == "1209600"
        # and both functions get the whole environment contract, resolved
        for name in ("JobTriggerFunction", "ImageSetWorkerFunction", "DeadLetterRecorderFunction"):
            env = stack.function(name).environment
            assert set(env) >= CONTRACT_ENV | {"REPORTS_BUCKET", "OPS_TOPIC_ARN"}, CONTRACT_ENV - set(env)
            assert env["WORK_QUEUE_URL"] == stack.queue_url("WorkQueue")
            assert env["OUTPUT_BUCKET"] in stack.buckets.values()
            assert env["REPORTS_BUCKET"] == reports != env["OUTPUT_BUCKET"]
            assert env["OPS_TOPIC_ARN"] == stack.topics["OpsTopic"] != env["ALERT_TOPIC_ARN"]


def test_a_failed_trigger_invocation_is_recorded_in_the_failure_queue(real_template: Path) -> None:
    # GIVEN an import-job event for a job HealthImaging does not know (and no output folder to read instead)
    datastore = datastore_of_events()
    unknown = dict(event("eventbridge-import-job-completed.json"))
    unknown["detail"] = {**unknown["detail"], "jobId": "f" * 32}
    with LocalStack(real_template, parameters={"DatastoreId": datastore}) as stack:
        stack.emulator.create_datastore(datastore)
        # WHEN the trigger fails on it through Lambda's retries
        stack.put_events(unknown)
        summary = stack.run_until_idle(timeout=60)
        attempts = [r for r in summary.records if r.function == "JobTriggerFunction"]
        assert [r.ok for r in attempts] == [False, False, False]
        # THEN the invocation record went to TriggerFailureQueue, and no topic heard of it
        url = stack.queue_url("TriggerFailureQueue")
        (message,) = stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        record = json.loads(message["Body"])
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert record["requestPayload"]["detail"]["jobId"] == "f" * 32
        assert record["responsePayload"]["errorType"] == "ImportJobError"
        assert stack.alerts() == []


def test_event_files_route_as_the_template_says(real_template: Path) -> None:
    # GIVEN the real template in both trigger modes, for the events' data store and bucket
    datastore = datastore_of_events()
    existing = event("eventbridge-s3-object-created.json")["detail"]["bucket"]["name"]
    params = {"DatastoreId": datastore, "TriggerMode": "ExistingBucket", "ExistingOutputBucketName": existing}
    with LocalStack(real_template, parameters={"DatastoreId": datastore}) as created:
        rules = [r for r in created.rules.values() if r.pattern]
        # WHEN the import-job events are matched against the rules (by moto's matcher, as the stack routes them)
        # THEN each is selected by a rule that targets the trigger
        for name in ("eventbridge-import-job-completed.json", "eventbridge-import-job-failed.json"):
            selected = [r for r in rules if r.matches(event(name))]
            assert [f for r in selected for f in r.targets] == ["JobTriggerFunction"], name
        assert created.schedule_rules()
        (route,) = created.s3_routes.values()
        key = event("s3-put-manifest.json")["Records"][0]["s3"]["object"]["key"]
        assert key.startswith(route.prefix)
        assert key.endswith(route.suffix)
    with LocalStack(real_template, parameters=params) as existing_mode:
        created_event = event("eventbridge-s3-object-created.json")
        selected = [r for r in existing_mode.rules.values() if r.matches(created_event)]
        assert [f for r in selected for f in r.targets] == ["JobTriggerFunction"]


def test_an_emulated_import_is_verified_end_to_end(real_template: Path) -> None:
    # GIVEN the real application, and two DICOM files imported twice: clean, then with a corrupted frame
    datastore = datastore_of_events()
    with LocalStack(real_template, parameters={"DatastoreId": datastore}) as stack:
        stack.emulator.create_datastore(datastore)
        stack.s3.create_bucket(Bucket="e2e-input")
        for name in ("CT_small.dcm", "MR_small.dcm"):
            body = Path(str(get_testdata_file(name, download=False))).read_bytes()
            stack.s3.put_object(Bucket="e2e-input", Key=f"dicom/{name}", Body=body)
        env = stack.function("JobTriggerFunction").environment
        output = f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}"
        # WHEN each job completes and the stack runs until idle
        clean = stack.emulator.start_import_job(datastore, "s3://e2e-input/dicom/", output)
        first = stack.run_until_idle(timeout=120)
        corrupt = stack.emulator.start_import_job(
            datastore, "s3://e2e-input/dicom/", output, faults=ImportFaults(corrupt_frames=1)
        )
        second = stack.run_until_idle(timeout=120)
        # THEN every invocation succeeded, nothing is dead-lettered, both jobs have reports
        for summary in (first, second):
            assert summary.failures == {}, [r.error for r in summary.records if not r.ok]
            assert summary.dlq_depth == {"WorkDeadLetterQueue": 0}
            assert summary.invocations.get("ImageSetWorkerFunction", 0) >= 2
        listing = stack.s3.list_objects_v2(Bucket=env["REPORTS_BUCKET"], Prefix=env["REPORTS_PREFIX"])
        keys = [item["Key"] for item in listing.get("Contents", [])]
        assert any(clean in key for key in keys)
        assert any(corrupt in key for key in keys)
        # and only the corrupted job raised an alert (clean jobs are not notified by default)
        alerts = stack.alerts()
        assert len(alerts) == 1, [a.subject for a in alerts]
        assert corrupt in (alerts[0].subject or "")
        assert "MISMATCH" in (alerts[0].subject or "")


def test_a_job_through_the_stack_writes_one_ledger_row_per_image_set_and_a_rewrite_adds_none(
    real_template: Path,
) -> None:
    # GIVEN the real application and a clean import of two DICOM files
    datastore = datastore_of_events()
    with LocalStack(real_template, parameters={"DatastoreId": datastore}) as stack:
        stack.emulator.create_datastore(datastore)
        stack.s3.create_bucket(Bucket="ledger-input")
        for name in ("CT_small.dcm", "MR_small.dcm"):
            body = Path(str(get_testdata_file(name, download=False))).read_bytes()
            stack.s3.put_object(Bucket="ledger-input", Key=f"dicom/{name}", Body=body)
        env = stack.function("JobTriggerFunction").environment
        output = f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}"
        # WHEN the job completes and the stack runs until idle
        job = stack.emulator.start_import_job(datastore, "s3://ledger-input/dicom/", output)
        assert stack.run_until_idle(timeout=120).failures == {}
        # THEN the ledger (the template's table, named in every function's environment) has a CLEAN row per
        # image set of the report, naming the job and the report
        table = stack.tables["LedgerTable"]
        assert {stack.function(f).environment["LEDGER_TABLE"] for f in ("JobTriggerFunction",
                "ImageSetWorkerFunction", "DeadLetterRecorderFunction")} == {table}  # fmt: skip
        key = f"{env['REPORTS_PREFIX']}{job}/report.json"
        report = JobReport.from_json(
            json.loads(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read())
        )
        ledger = DynamoLedger(stack.dynamodb, table)
        rows = list(ledger.entries(datastore))
        assert sorted(r.image_set_id for r in rows) == sorted(s.image_set_id for s in report.image_sets)
        assert {(r.by, r.verdict, r.report_uri) for r in rows} == {
            (job, Verdict.CLEAN, f"s3://{env['REPORTS_BUCKET']}/{key}")
        }
        # WHEN a finaliser taken over writes the same report's rows again
        finished = report.timings.finished_at if report.timings else ""
        again = [entry_of(report.job, s, verified_at=finished, report_uri=None, kind=None) for s in report.image_sets]
        ledger.record(again)
        # THEN no row is added: the keys are the same
        assert stack.dynamodb.scan(TableName=table, Select="COUNT")["Count"] == len(report.image_sets)
