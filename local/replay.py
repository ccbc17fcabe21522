"""Replay one event file against the local stack: ``python -m local.replay events/<file>.json``.

The event goes to the function ``template.yaml`` routes it to, through the same path as on AWS (S3
notification configuration, EventBridge rule, schedule rule, or the SQS queue of the event source mapping),
and the stack then runs until idle. Before that, the local HealthImaging emulator is seeded so that the
event refers to something real: the event's data store is created, two DICOM files that ship with pydicom
are imported by an emulated import job into the stack's output bucket (for an "Import Job Failed" event the
job is made to fail), and the event is rewritten to that job. The emulator assigns job and image set IDs
itself, so those IDs (and the keys and bucket that contain them) change; every rewrite is printed.

For an SQS work batch, the triggers first process the seeded job (so that the job's progress records
exist), the work items they queued are purged, and the file's messages are sent to the work queue instead,
rewritten to the seeded job and image sets.

Exit status: 0 when every invocation succeeded and the dead-letter queues are empty, 1 otherwise, 2 for
an event or template that cannot be replayed.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from pydicom.data import get_testdata_file

from ahi_verify.ids import is_service_id, parse_job_folder

from .stack import DEFAULT_TEMPLATE, LocalStack, RunSummary, TemplateError

#: Two single-frame images of different series (two image sets), bundled with pydicom: nothing is downloaded.
SEED_FILES = ("CT_small.dcm", "MR_small.dcm")
MANIFEST = "job-output-manifest.json"


class ReplayError(Exception):
    """The event cannot be replayed; the message says why."""


def classify(event: Mapping[str, Any]) -> str:
    """Name the kind of an event file.

    Returns
    -------
    str
        ``"s3"``, ``"sqs"``, ``"schedule"``, ``"import-job"``, ``"s3-eventbridge"`` or ``"eventbridge"``.

    Raises
    ------
    ReplayError
        For a document that is none of these.
    """
    records = event.get("Records")
    if isinstance(records, list) and records:
        source = records[0].get("eventSource")
        if source == "aws:s3":
            return "s3"
        if source == "aws:sqs":
            return "sqs"
        raise ReplayError(f"unsupported record source {source!r}")
    source, detail_type = event.get("source"), event.get("detail-type")
    if source == "aws.events" and detail_type == "Scheduled Event":
        return "schedule"
    if source == "aws.medical-imaging":
        return "import-job"
    if source == "aws.s3":
        return "s3-eventbridge"
    if isinstance(source, str) and isinstance(detail_type, str):
        return "eventbridge"
    raise ReplayError("not an S3, SQS or EventBridge event")


def event_ids(kind: str, event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The ``(datastoreId, jobId)`` an event refers to (either may be None)."""
    ids: tuple[str, str] | None = None
    if kind == "s3":
        ids = parse_job_folder(unquote_plus(str(event["Records"][0]["s3"]["object"]["key"])))
    elif kind == "s3-eventbridge":
        ids = parse_job_folder(str(event["detail"]["object"]["key"]))
    elif kind == "import-job":
        detail = event.get("detail") or {}
        return detail.get("datastoreId"), detail.get("jobId")
    elif kind == "sqs":
        body = json.loads(event["Records"][0]["body"])
        return body.get("datastoreId"), body.get("jobId")
    return ids if ids else (None, None)


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ReplayError(f"--param takes NAME=VALUE, got {pair!r}")
        params[name] = value
    return params


class Replay:
    """One replay: the stack, the seeded job and the rewritten event."""

    def __init__(self, stack: LocalStack, kind: str, event: dict[str, Any], datastore_id: str) -> None:
        self.stack = stack
        self.kind = kind
        self.event = event
        self.datastore_id = datastore_id
        env = next((f.environment for f in stack.functions.values() if "OUTPUT_BUCKET" in f.environment), None)
        if env is None:
            raise ReplayError("no function of the template has OUTPUT_BUCKET in its environment")
        self.bucket = env["OUTPUT_BUCKET"]
        self.prefix = env.get("OUTPUT_PREFIX", "")
        # Reports have a bucket of their own in template.yaml; a template without one keeps them in the output bucket.
        self.reports_bucket = env.get("REPORTS_BUCKET", self.bucket)
        self.reports_prefix = env.get("REPORTS_PREFIX", "")
        self.job_id = ""
        self.image_sets: list[str] = []
        self.rewrites: list[str] = []

    # ------------------------------------------------------------------------------------------ seeding

    def seed(self, *, failed: bool) -> None:
        """Import the seed files into the data store; a failed job when ``failed``."""
        emulator, s3 = self.stack.emulator, self.stack.s3
        if self.datastore_id not in emulator.datastore_ids():
            emulator.create_datastore(self.datastore_id)
        input_bucket = f"{self.stack.stack_name}-seed-input"
        s3.create_bucket(Bucket=input_bucket)
        for name in SEED_FILES:
            path = get_testdata_file(name, download=False)
            if not isinstance(path, str):
                raise ReplayError(f"{name} is not bundled with this pydicom")
            s3.put_object(Bucket=input_bucket, Key=f"dicom/{name}", Body=Path(path).read_bytes())
        # A job whose input cannot be listed ends FAILED with a message and no manifest.
        input_uri = f"s3://{input_bucket}-missing/dicom/" if failed else f"s3://{input_bucket}/dicom/"
        self.input_uri = input_uri
        self.output_uri = f"s3://{self.bucket}/{self.prefix}"
        self.job_id = emulator.start_import_job(
            self.datastore_id, input_uri, self.output_uri, job_name="ahi-verify-replay"
        )
        props = emulator.wait_for_job(self.datastore_id, self.job_id, timeout=120, wait_for_outputs=True)
        summary = f"seeded import job {self.job_id} in data store {self.datastore_id}: {props['jobStatus']}"
        if not failed:
            manifest_key = f"{self.prefix}{self.datastore_id}-DicomImport-{self.job_id}/{MANIFEST}"
            manifest = json.loads(s3.get_object(Bucket=self.bucket, Key=manifest_key)["Body"].read())
            self.image_sets = [s["imageSetId"] for s in manifest["jobSummary"]["imageSetsSummary"]]
            summary += f", {len(self.image_sets)} image set(s), output {props['outputS3Uri']}"
        else:
            summary += f" ({props.get('message')})"
        print(summary)

    # ---------------------------------------------------------------------------------------- rewriting

    def _change(self, what: str, old: Any, new: Any) -> Any:
        line = f"{what}: {old} -> {new}"
        if old != new and line not in self.rewrites:
            self.rewrites.append(line)
        return new

    def _manifest_key(self) -> str:
        return f"{self.prefix}{self.datastore_id}-DicomImport-{self.job_id}/{MANIFEST}"

    def rewrite(self) -> None:
        """Point the event at the seeded job (and the local bucket), and say what changed."""
        self._rewrite()
        if self.rewrites:
            print("event rewritten to the seeded job:")
            for line in self.rewrites:
                print(f"  {line}")

    def _rewrite(self) -> None:
        event = self.event
        if self.kind == "s3":
            head = self.stack.s3.head_object(Bucket=self.bucket, Key=self._manifest_key())
            for record in event["Records"]:
                s3 = record["s3"]
                s3["bucket"]["name"] = self._change("bucket", s3["bucket"]["name"], self.bucket)
                s3["bucket"]["arn"] = f"arn:aws:s3:::{self.bucket}"
                old = str(s3["object"]["key"])
                # Keep the file's encoding style: AWS's (slashes kept) or moto's (slashes encoded too).
                safe = "" if "%2F" in old else "/"
                s3["object"]["key"] = self._change("key", old, quote_plus(self._manifest_key(), safe=safe))
                s3["object"]["size"] = head["ContentLength"]
                s3["object"]["eTag"] = str(head["ETag"]).strip('"')
        elif self.kind == "s3-eventbridge":
            head = self.stack.s3.head_object(Bucket=self.bucket, Key=self._manifest_key())
            detail = event["detail"]
            detail["bucket"]["name"] = self._change("bucket", detail["bucket"]["name"], self.bucket)
            event["resources"] = [f"arn:aws:s3:::{self.bucket}"]
            detail["object"]["key"] = self._change("key", detail["object"]["key"], self._manifest_key())
            detail["object"]["size"] = head["ContentLength"]
            detail["object"]["etag"] = str(head["ETag"]).strip('"')
        elif self.kind == "import-job":
            detail = event["detail"]
            detail["jobId"] = self._change("jobId", detail.get("jobId"), self.job_id)
            detail["jobName"] = "ahi-verify-replay"
            detail["inputS3Uri"] = self._change("inputS3Uri", detail.get("inputS3Uri"), self.input_uri)
            detail["outputS3Uri"] = self._change("outputS3Uri", detail.get("outputS3Uri"), self.output_uri)
            event["region"] = self.stack.region
        elif self.kind == "sqs":
            self._rewrite_work_items()

    def _rewrite_work_items(self) -> None:
        if not self.image_sets:
            raise ReplayError("the seeded job has no image sets to point the work items at")
        mapping: dict[str, str] = {}
        for record in self.event["Records"]:
            body = json.loads(record["body"])
            old_set = str(body.get("imageSetId"))
            new_set = mapping.setdefault(old_set, self.image_sets[len(mapping) % len(self.image_sets)])
            body["jobId"] = self._change("jobId", body.get("jobId"), self.job_id)
            body["datastoreId"] = self.datastore_id
            body["imageSetId"] = self._change("imageSetId", old_set, new_set)
            item = body.get("itemId")
            if isinstance(item, str) and item.startswith(old_set):
                body["itemId"] = new_set + item[len(old_set) :]
            record["body"] = json.dumps(body, separators=(",", ":"))

    # ------------------------------------------------------------------------------------------ delivery

    def deliver(self, timeout: float) -> RunSummary:
        """Deliver the event along the template's route and run until idle.

        Returns
        -------
        RunSummary
            Every invocation from the delivery on (those of the seeding excluded).
        """
        stack = self.stack
        if self.kind == "sqs":
            # The triggers process the seeded job first, so the job's records exist; their work items are
            # replaced by the file's.
            stack.run_until_idle(timeout=timeout, include_mappings=False)
            mapping = self._work_mapping()
            stack.sqs.purge_queue(QueueUrl=mapping.queue.url)
            start = len(stack.invocations)
            for record in self.event["Records"]:
                attributes = _api_attributes(record)
                stack.sqs.send_message(
                    QueueUrl=mapping.queue.url,
                    MessageBody=record["body"],
                    **({"MessageAttributes": attributes} if attributes else {}),
                )
            print(f"sent {len(self.event['Records'])} message(s) to {mapping.queue.logical_id} -> {mapping.function}")
        else:
            dropped = stack.discard_pending()
            if dropped:
                print(f"dropped {dropped} event(s) of the seeding itself; delivering the file's event only")
            start = len(stack.invocations)
            if self.kind == "s3":
                stack.deliver_s3_event(self.event)
            elif self.kind == "schedule":
                if not stack.schedule_rules():
                    raise ReplayError("the template has no schedule rule")
                stack.run_schedule(event=self.event)
            else:
                stack.put_events(self.event)
        run = stack.run_until_idle(timeout=timeout)
        return stack.summary(since=start, elapsed_s=run.elapsed_s)

    def _work_mapping(self) -> Any:
        mappings = self.stack.sqs_mappings
        if not mappings:
            raise ReplayError("the template has no SQS event source mapping")
        arn = str(self.event["Records"][0].get("eventSourceARN", ""))
        for mapping in mappings:
            if mapping.queue.logical_id in arn:
                return mapping
        return mappings[0]

    # ----------------------------------------------------------------------------------------- printing

    def report(self, summary: RunSummary) -> int:
        """Print what happened; return the exit status."""
        print("\ninvocations:")
        for inv in summary.records:
            status = "ok" if inv.ok else f"FAILED {inv.error}"
            if inv.ok and inv.failed_item_ids:
                status = f"ok, {len(inv.failed_item_ids)} item(s) left for redelivery"
            retry = f" (retry {inv.attempt - 1})" if inv.attempt > 1 else ""
            print(f"  {inv.function} <- {inv.source}{retry}: {status} [{inv.duration_s:.2f} s]")
        if not summary.records:
            print("  none: the template routes this event to no function")
        self._print_reports()
        self._print_alerts()
        dlq = {name: depth for name, depth in summary.dlq_depth.items() if depth}
        for name, depth in dlq.items():
            print(f"\ndead-letter queue {name}: {depth} message(s)")
        if self.stack.notes:
            print("\nnot emulated:")
            for note in self.stack.notes:
                print(f"  {note}")
        failed = any(not inv.ok for inv in summary.records) or bool(dlq)
        return 1 if failed else 0

    def _print_reports(self) -> None:
        listing = self.stack.s3.list_objects_v2(Bucket=self.reports_bucket, Prefix=self.reports_prefix)
        print("\nreports:")
        for item in listing.get("Contents", []):
            print(f"  s3://{self.reports_bucket}/{item['Key']} ({item['Size']} bytes)")
        if not listing.get("Contents"):
            print(f"  none under s3://{self.reports_bucket}/{self.reports_prefix}")

    def _print_alerts(self) -> None:
        alerts = self.stack.alerts()
        print("\nalerts:")
        for alert in alerts:
            attributes = ", ".join(f"{k}={v}" for k, v in sorted(alert.attributes.items()))
            print(f"  [{alert.topic}] {alert.subject}" + (f" ({attributes})" if attributes else ""))
            for line in alert.message.splitlines():
                print(f"    {line}")
        if not alerts:
            print("  none")


def _api_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in (record.get("messageAttributes") or {}).items():
        entry: dict[str, Any] = {"DataType": value["dataType"]}
        if value.get("stringValue") is not None:
            entry["StringValue"] = value["stringValue"]
        if value.get("binaryValue") is not None:
            entry["BinaryValue"] = base64.b64decode(value["binaryValue"])
        out[name] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run a replay from the command line.

    Parameters
    ----------
    argv
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (see the module docstring).
    """
    parser = argparse.ArgumentParser(prog="python -m local.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("event", type=Path, help="an event file, e.g. events/s3-put-manifest.json")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template (default: template.yaml)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter override")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the stack to go idle")
    parser.add_argument("--no-seed", action="store_true", help="deliver the event as it is, without an import job")
    args = parser.parse_args(argv)
    try:
        event = json.loads(args.event.read_text(encoding="utf-8"))
        kind = classify(event)
        datastore_id, _ = event_ids(kind, event)
        params = _parse_params(args.param)
        datastore_id = params.get("DatastoreId") or datastore_id or "0" * 32
        if not is_service_id(datastore_id):
            raise ReplayError(f"data store ID {datastore_id!r} is not 32 characters [0-9a-z]")
        params.setdefault("DatastoreId", datastore_id)
        if kind == "s3-eventbridge":
            # An EventBridge "Object Created" event comes from a bucket outside the stack.
            params.setdefault("TriggerMode", "ExistingBucket")
            params.setdefault("ExistingOutputBucketName", str(event["detail"]["bucket"]["name"]))
        print(f"replaying {args.event} ({kind}) with {args.template}")
        with LocalStack(args.template, parameters=params) as stack:
            replay = Replay(stack, kind, event, datastore_id)
            if not args.no_seed:
                failed = kind == "import-job" and (event.get("detail") or {}).get("jobStatus") == "FAILED"
                replay.seed(failed=failed)
                replay.rewrite()
            summary = replay.deliver(args.timeout)
            return replay.report(summary)
    except (ReplayError, TemplateError, LookupError, OSError, ValueError) as exc:
        print(f"cannot replay {args.event}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
