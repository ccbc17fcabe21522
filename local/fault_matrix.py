"""The fault matrix: every fault scenario of the reliability suite, and the harness they run on.

For every fault a job of at least 200 frames (default 8 image sets x 30 frames of 64x64 int16, three
multi-frame instances per image set) goes through the whole application on the local stack (real template,
real handlers, moto, the HealthImaging emulator), and the job's ``report.json`` is checked against what the
emulator's metadata lists:

- accounting: every listed frame has exactly one result (no duplicated frame ID, none lost, none extra), or
  belongs to an image set the report marks as an image-set error (metadata faults, a dead-lettered item);
- the verdict and the per-frame statuses/reasons expected for the fault;
- one report: ``report.json`` written exactly once (the template's reports bucket is versioned: the harness
  counts the versions), and valid against ``report.schema.json``;
- the alerts: exactly one for a job that needs attention, none for a clean one (never more than one).

The worker's SQS event source runs ``workers`` batches at once (default :data:`WORKERS`, each in a warm
execution environment of its own; 1 is the serial, in-process mode), so the scenarios exercise the
application's concurrency: concurrent conditional writes on the progress table, concurrent finalisation
claims, parts written while others list them.

``tests/reliability`` runs a subset of :data:`SCENARIOS`; ``python -m bench.reliability`` (the front end that
times, measures and prints the table) runs them all and a soak. Both go through :func:`run_scenario`.

What the harness changes in the running handlers (test-side only, nothing in the application):

- the trigger's manifest wait (30 s by default) is shortened to ``MANIFEST_WAIT_S`` so that a missing manifest
  fails in seconds, not minutes (three asynchronous attempts);
- the poison scenario wraps the worker's HealthImaging source so that one image set's work item raises on
  every delivery (an item that can never succeed), through an init hook (:mod:`local.fault_hooks`) that
  every worker execution environment runs after its cold start.
"""

from __future__ import annotations

import contextvars
import dataclasses
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import numpy as np
from moto.dynamodb.exceptions import TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ahi_emulator import Fault, ImportFaults, InstanceSpec

from .stack import LocalStack

DS = "c0ffee00" * 4
WORKER = "ImageSetWorkerFunction"
TRIGGER = "JobTriggerFunction"
RECORDER = "DeadLetterRecorderFunction"
ALERT_TOPIC, OPS_TOPIC = "AlertTopic", "OpsTopic"
MANIFEST_WAIT_S = 4.0
WORKERS = 4
"""Worker batches in flight at once, by default (the template's MaximumConcurrency is 5; 4 keeps a loaded
two-core machine responsive and is still concurrent enough to interleave every claim)."""
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
REPO = Path(__file__).resolve().parents[1]

for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
}.items():
    os.environ.setdefault(_key, _value)


# ------------------------------------------------------------------------------------------- job shapes


@dataclass(frozen=True)
class Shape:
    """How big a job is: image sets x instances x frames per instance, each frame rows x cols int16."""

    image_sets: int = 8
    instances: int = 3
    frames_per_instance: int = 10
    rows: int = 64
    cols: int = 64

    @property
    def frames(self) -> int:
        """Frames in the job."""
        return self.image_sets * self.instances * self.frames_per_instance


FULL = Shape()  # 240 frames
SOAK = Shape(image_sets=100, instances=1, frames_per_instance=200, rows=16, cols=16)  # 20,000 frames


def synthetic_frames(shape: Shape, count: int, seed: int) -> np.ndarray:
    """``count`` signed 16-bit frames (CT-like range), deterministic."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3072, size=(count, shape.rows, shape.cols), dtype=np.int16)


def multiframe_p10(pixels: np.ndarray, study_uid: str, series_uid: str, number: int) -> bytes:
    """An uncompressed (explicit VR little endian) multi-frame P10 file, MONOCHROME2 signed 16-bit."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.Modality = "Synthetic^Reliability", "SYN-REL", "OT"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = int(pixels.shape[0])
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds["PixelData"].VR = "OW"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """One row of the table."""

    name: str
    injected: str = ""
    listed: int = 0
    accounted: int = 0
    duplicates: int = 0
    lost: int = 0
    verdict: str = "-"
    alerts: int = 0
    reports: int = 0
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No problem was recorded."""
        return not self.problems

    def expect(self, condition: bool, message: str) -> None:
        """Record ``message`` as a problem unless ``condition`` holds."""
        if not condition:
            self.problems.append(message)


# ------------------------------------------------------------------------------------------- the harness


_workers: contextvars.ContextVar[int] = contextvars.ContextVar("workers", default=WORKERS)
_peak: contextvars.ContextVar[list[int]] = contextvars.ContextVar("peak")


def peak_in_flight(invocations: Sequence[Any], function: str = WORKER) -> int:
    """The most invocations of ``function`` that overlapped in time (a report of concurrency, not a check)."""
    edges = sorted(
        [(i.started_at, 1) for i in invocations if i.function == function]
        + [(i.started_at + i.duration_s, -1) for i in invocations if i.function == function]
    )
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


class Harness:
    """One LocalStack (fresh moto, fresh emulator) and the helpers every scenario uses.

    Parameters
    ----------
    parameters
        Template parameter overrides (``DatastoreId`` is the harness's).
    isolation
        Per function, as :class:`local.stack.LocalStack` takes it.
    workers
        Worker batches in flight at once; default the one :func:`run_scenario` was given (:data:`WORKERS`).
    """

    def __init__(
        self,
        parameters: dict[str, str] | None = None,
        isolation: dict[str, Any] | None = None,
        workers: int | None = None,
    ) -> None:
        self.workers = workers if workers is not None else _workers.get()
        self.stack = LocalStack(
            parameters={"DatastoreId": DS, **(parameters or {})},
            isolation=isolation,
            concurrency={WORKER: self.workers},
        )
        self._batches = 0

    def __enter__(self) -> Harness:
        self.stack.start()
        self.stack.emulator.create_datastore(DS)
        env = self.stack.function(TRIGGER).environment
        self.bucket, self.prefix, self.reports = env["OUTPUT_BUCKET"], env["OUTPUT_PREFIX"], env["REPORTS_PREFIX"]
        self.reports_bucket = env["REPORTS_BUCKET"]
        self.stack.s3.create_bucket(Bucket="site-dicom")
        self.shorten_manifest_wait()
        return self

    def __exit__(self, *exc: object) -> None:
        peaks = _peak.get(None)
        if peaks is not None:
            peaks.append(peak_in_flight(self.stack.invocations))
        self.stack.stop()

    # -- handler modules (loaded by the stack under their real names)

    def handler_module(self, function: str) -> Any:
        """The handler's module as the stack imported it in this process (cold-starting it first if needed).

        Only for functions that run in-process (the trigger): the worker's execution environments are processes
        of their own, changed through init hooks instead (:meth:`local.functions.FunctionRunner.add_init_hook`).
        """
        name = self.stack.function(function).module
        if name not in sys.modules:
            if function == TRIGGER:
                self.stack.run_schedule()  # a reconciliation sweep over no jobs: a harmless cold start
            else:
                self.stack.invoke(function, {"Records": []})
        if name not in sys.modules:
            raise LookupError(f"{function} does not run in this process; use an init hook")
        return sys.modules[name]

    def shorten_manifest_wait(self) -> None:
        """Shorten the trigger's manifest wait to ``MANIFEST_WAIT_S`` (see the module docstring)."""
        services = self.handler_module(TRIGGER).SERVICES
        services.settings = dataclasses.replace(services.settings, manifest_wait_s=MANIFEST_WAIT_S)

    # -- jobs

    @property
    def output_uri(self) -> str:
        """The ``outputS3Uri`` of the harness's import jobs: the trigger's watched prefix."""
        return f"s3://{self.bucket}/{self.prefix}"

    def upload(self, shape: Shape, seed: int = 0) -> str:
        """Put one multi-frame P10 file per instance (one series per image set) under a fresh input prefix."""
        self._batches += 1
        prefix = f"batch-{self._batches}/"
        study = generate_uid()
        for s in range(shape.image_sets):
            series = generate_uid()
            for i in range(shape.instances):
                pixels = synthetic_frames(shape, shape.frames_per_instance, seed * 100_003 + s * 101 + i)
                body = multiframe_p10(pixels, study, series, i + 1)
                self.stack.s3.put_object(Bucket="site-dicom", Key=f"{prefix}s{s:03d}/i{i:02d}.dcm", Body=body)
        return f"s3://site-dicom/{prefix}"

    def import_job(self, shape: Shape = FULL, faults: ImportFaults | None = None, seed: int = 0) -> str:
        """Upload a job of ``shape`` and start its emulated import; return the job ID."""
        job: str = self.stack.emulator.start_import_job(DS, self.upload(shape, seed), self.output_uri, faults=faults)
        return job

    def wait_imported(self, job: str) -> None:
        """Wait until the emulated import job has written all its output."""
        self.stack.emulator.wait_for_job(DS, job, timeout=300, wait_for_outputs=True)

    def folder_key(self, job: str) -> str:
        """The key prefix of the job's output folder."""
        return f"{self.prefix}{DS}-DicomImport-{job}/"

    def manifest_image_sets(self, job: str) -> list[str]:
        """Image set IDs the job's manifest lists."""
        raw = self.stack.s3.get_object(Bucket=self.bucket, Key=self.folder_key(job) + "job-output-manifest.json")
        summary = json.loads(raw["Body"].read())["jobSummary"]
        return [s["imageSetId"] for s in summary["imageSetsSummary"]]

    def listed(self, image_set_ids: Sequence[str]) -> dict[str, list[str]]:
        """Frame IDs each image set's metadata lists (the emulator's truth)."""
        infos = {i.image_set_id: i for i in self.stack.emulator.image_sets()}
        return {isid: list(infos[isid].frame_ids) for isid in image_set_ids}

    def report(self, job: str) -> dict[str, Any] | None:
        """The job's ``report.json``, or None while there is none."""
        try:
            raw = self.stack.s3.get_object(Bucket=self.reports_bucket, Key=f"{self.reports}{job}/report.json")
        except self.stack.s3.exceptions.NoSuchKey:
            return None
        doc: dict[str, Any] = json.loads(raw["Body"].read())
        return doc

    def report_versions(self, job: str) -> int:
        """How many times the job's ``report.json`` was written (versions of its key)."""
        key = f"{self.reports}{job}/report.json"
        listing = self.stack.s3.list_object_versions(Bucket=self.reports_bucket, Prefix=key)
        return sum(1 for v in listing.get("Versions", []) if v["Key"] == key)

    def shorten_timeout(self, function: str, seconds: int) -> None:
        """Give a function a shorter timeout than the template's 900 s, before its first invocation, so that a
        scenario about the deadline runs in seconds (the context's remaining time follows it)."""
        self.stack.runner.shorten_timeout(function, seconds)

    def job_record(self, job: str) -> dict[str, Any]:
        """The job's record in the progress table (attribute values as DynamoDB returns them)."""
        key = {"pk": {"S": f"JOB#{job}"}, "sk": {"S": "JOB"}}
        item = self.stack.dynamodb.get_item(TableName=self.stack.tables["ProgressTable"], Key=key).get("Item", {})
        return {k: next(iter(v.values())) for k, v in item.items()}

    def trigger_settings(self, **changes: Any) -> None:
        """Change the in-process trigger's settings (test-side, like the manifest wait)."""
        services = self.handler_module(TRIGGER).SERVICES
        services.settings = dataclasses.replace(services.settings, **changes)

    def parts(self, job: str) -> int:
        """How many partial reports the job has."""
        listing = self.stack.s3.list_objects_v2(Bucket=self.reports_bucket, Prefix=f"{self.reports}{job}/parts/")
        return int(listing.get("KeyCount", 0))

    def failure_records(self) -> list[dict[str, Any]]:
        """The trigger's OnFailure destination records (TriggerFailureQueue), taken off the queue."""
        url, records = self.stack.queue_url("TriggerFailureQueue"), []
        while messages := self.stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                records.append(json.loads(message["Body"]))
                self.stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return records

    def runs(self, function: str) -> list[Any]:
        """Invocations of a function by an event source (not the harness's own cold starts)."""
        return [
            i for i in self.stack.invocations if i.function == function and i.source in ("s3", "eventbridge", "sqs")
        ]

    def s3_event(self, key: str) -> dict[str, Any]:
        """An S3 ObjectCreated notification for ``key`` in the output bucket (AWS's shape)."""
        event: dict[str, Any] = json.loads((REPO / "events" / "s3-put-manifest.json").read_text(encoding="utf-8"))
        record = event["Records"][0]
        record["s3"]["bucket"]["name"] = self.bucket
        record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{self.bucket}"
        record["s3"]["object"]["key"] = key
        return event

    def job_completed_event(self, job: str) -> dict[str, Any]:
        """The "Import Job Completed" EventBridge event HealthImaging sends for the job."""
        props = self.stack.emulator.get_import_job(DS, job)
        return {
            "source": "aws.medical-imaging",
            "detail-type": "Import Job Completed",
            "resources": [f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}"],
            "detail": {
                "imagingVersion": "1.0",
                "datastoreId": DS,
                "jobId": job,
                "jobName": props.get("jobName"),
                "jobStatus": "COMPLETED",
                "inputS3Uri": props.get("inputS3Uri"),
                "outputS3Uri": props.get("outputS3Uri"),
            },
        }

    # -- checks

    def fired(self) -> str:
        """The faults the emulator injected, by kind (the table's ``injected`` column)."""
        stats = self.stack.emulator.stats()
        kinds = {k: v for k, v in stats["faults_fired_by_kind"].items() if v}
        return ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "0"

    def check(
        self,
        out: Outcome,
        job: str,
        image_sets: Sequence[str],
        *,
        verdict: str,
        alerts: int,
        expected: dict[str, tuple[str, set[str]]] | None = None,
        set_errors: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Fill the outcome's columns and check accounting, verdict, frame statuses and alerts.

        ``expected`` maps frame IDs to (status, acceptable reasons); every other listed frame must MATCH.
        ``set_errors`` maps image set IDs to a text their image-set error must contain; their frames are
        accounted for by that error.
        """
        expected, set_errors = expected or {}, set_errors or {}
        listed = self.listed(image_sets)
        out.listed = sum(len(v) for v in listed.values())
        out.alerts = len(self.stack.alerts(ALERT_TOPIC))  # job alerts; operational messages are counted apart
        out.expect(out.alerts == alerts, f"{out.alerts} alert(s), expected {alerts}")
        out.reports = self.report_versions(job)
        out.expect(out.reports == 1, f"report.json written {out.reports} time(s), expected once")
        doc = self.report(job)
        if doc is None:
            out.problems.append("no report.json")
            out.lost = out.listed
            return None
        out.problems.extend(f"report.json breaks the schema: {v}" for v in _schema_violations(doc)[:3])
        out.verdict = doc["verdict"]
        out.expect(doc["verdict"] == verdict, f"verdict {doc['verdict']}, expected {verdict}")
        by_set = {s["imageSetId"]: s for s in doc["imageSets"]}
        out.expect(set(by_set) == set(image_sets), "the report's image sets differ from the manifest's")
        ids = [f["imageFrameId"] for s in doc["imageSets"] for f in s["frames"]]
        counts = Counter(ids)
        out.duplicates = sum(n - 1 for n in counts.values() if n > 1)
        listed_ids = {f for frames in listed.values() for f in frames}
        covered = {f for isid, frames in listed.items() if by_set.get(isid, {}).get("error") for f in frames}
        lost = listed_ids - set(counts) - covered
        out.lost = len(lost)
        out.accounted = len(listed_ids & set(counts)) + len(covered - set(counts))
        extra = set(counts) - listed_ids
        out.expect(not out.duplicates, f"{out.duplicates} duplicated frame result(s)")
        out.expect(not lost, f"{len(lost)} listed frame(s) without a result")
        out.expect(not extra, f"{len(extra)} result(s) for frames the metadata does not list")
        frames = doc["summary"]["frames"]
        total = frames["match"] + frames["mismatch"] + frames["error"]
        out.expect(total == frames["total"] == len(ids), f"summary counts {frames} disagree with {len(ids)} results")
        for isid, frames_of_set in listed.items():
            entry = by_set.get(isid)
            if entry is None:
                continue
            if isid in set_errors:
                error = entry.get("error") or ""
                out.expect(
                    set_errors[isid] in error, f"image set {isid[:8]} error {error!r} lacks {set_errors[isid]!r}"
                )
                continue
            out.expect(not entry.get("error"), f"image set {isid[:8]} has an unexpected error: {entry.get('error')}")
            out.expect(len(entry["frames"]) == len(frames_of_set), f"image set {isid[:8]} is missing frame results")
        results = {f["imageFrameId"]: f for s in doc["imageSets"] for f in s["frames"]}
        for frame_id, result in results.items():
            status, reasons = expected.get(frame_id, ("MATCH", set()))
            if result["status"] != status or (reasons and result.get("reason") not in reasons):
                out.problems.append(
                    f"frame {frame_id[:8]}: {result['status']}/{result.get('reason')}, "
                    f"expected {status}/{reasons or '-'}"
                )
        missing_expected = set(expected) - set(results)
        out.expect(not missing_expected, f"{len(missing_expected)} faulted frame(s) have no result")
        return doc


def _schema_violations(doc: dict[str, Any]) -> list[str]:
    """What in a report breaks ``report.schema.json`` (the tests' in-process schema check cannot see reports
    written in the workers' own processes)."""
    schema = json.loads((REPO / "layers/core/ahi_verify/report.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# ------------------------------------------------------------------------------------------- scenarios

Scenario = Callable[[Outcome], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    """Register the decorated function in :data:`SCENARIOS` under ``name``."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn

    return register


def _request_faults(out: Outcome, faults: Sequence[Fault], shape: Shape = FULL) -> None:
    with Harness() as h:
        for fault in faults:
            h.stack.emulator.add_fault(fault)
        job = h.import_job(shape)
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = h.fired()
        out.expect(h.stack.emulator.stats()["faults_fired"] > 0, "no fault fired")
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        h.check(out, job, h.manifest_image_sets(job), verdict="CLEAN", alerts=0)


@scenario("clean")
def _clean(out: Outcome) -> None:
    with Harness() as h:
        job = h.import_job()
        h.stack.run_until_idle(timeout=300)
        out.injected = "0"
        h.check(out, job, h.manifest_image_sets(job), verdict="CLEAN", alerts=0)


@scenario("throttle-frames")
def _throttle_frames(out: Outcome) -> None:
    _request_faults(out, [Fault("throttle", operation="GetImageFrame", every=7, count=40)])


@scenario("throttle-frames-short")
def _throttle_frames_short(out: Outcome) -> None:
    """A shorter burst (the CI size)."""
    _request_faults(out, [Fault("throttle", operation="GetImageFrame", every=7, count=8)])


@scenario("throttle-metadata")
def _throttle_metadata(out: Outcome) -> None:
    _request_faults(out, [Fault("throttle", operation="GetImageSetMetadata", every=2, count=4)])


@scenario("server-error-bursts")
def _server_errors(out: Outcome) -> None:
    _request_faults(
        out,
        [
            Fault("server_error", operation="GetImageFrame", every=5, count=30),
            Fault("server_error", operation="GetImageSetMetadata", every=3, count=2),
        ],
    )


@scenario("latency-spikes")
def _latency(out: Outcome) -> None:
    _request_faults(out, [Fault("latency", operation="GetImageFrame", every=8, count=30, latency_ms=250)])


def _stored_faults(out: Outcome, mutate: str, status: str, reasons: set[str], verdict: str) -> None:
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)  # queued, not yet verified
        sets = h.manifest_image_sets(job)
        listed = h.listed(sets)
        targets = [(sets[0], listed[sets[0]][0]), (sets[3], listed[sets[3]][17]), (sets[-1], listed[sets[-1]][-1])]
        for isid, frame_id in targets:
            getattr(h.stack.emulator, mutate)(DS, isid, frame_id)
        h.stack.run_until_idle(timeout=300)
        out.injected = f"{len(targets)} {mutate}" + ("" if h.fired() == "0" else f", {h.fired()}")
        h.check(out, job, sets, verdict=verdict, alerts=1, expected={f: (status, reasons) for _, f in targets})


@scenario("corrupted-frames")
def _corrupted(out: Outcome) -> None:
    _stored_faults(out, "corrupt_frame", "MISMATCH", {"checksum-differs"}, "MISMATCH")


@scenario("truncated-frames")
def _truncated(out: Outcome) -> None:
    _stored_faults(out, "truncate_frame", "ERROR", {"truncated-codestream", "decode-failed"}, "UNVERIFIED")


@scenario("missing-frames-404")
def _missing(out: Outcome) -> None:
    _stored_faults(out, "remove_frame", "ERROR", {"frame-not-found"}, "UNVERIFIED")


def _metadata_fault(out: Outcome, kind: str, problem: str) -> None:
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        h.stack.emulator.add_fault(Fault(kind, operation="GetImageSetMetadata", image_set_id=sets[2]))  # type: ignore[arg-type]
        h.stack.run_until_idle(timeout=300)
        out.injected = h.fired()
        h.check(out, job, sets, verdict="UNVERIFIED", alerts=1, set_errors={sets[2]: problem})


@scenario("metadata-corrupt-gzip")
def _metadata_gzip(out: Outcome) -> None:
    _metadata_fault(out, "corrupt_gzip", "not valid gzip")


@scenario("metadata-invalid-json")
def _metadata_json(out: Outcome) -> None:
    _metadata_fault(out, "invalid_json", "not valid JSON")


@scenario("metadata-missing-fields")
def _metadata_fields(out: Outcome) -> None:
    _metadata_fault(out, "missing_fields", "no Study.Series")


@scenario("manifest-late")
def _manifest_late(out: Outcome) -> None:
    delay = MANIFEST_WAIT_S / 2
    with Harness() as h:
        job = h.import_job(faults=ImportFaults(manifest_delay_s=delay))
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = f"manifest {delay:g} s late"
        triggers = h.runs(TRIGGER)
        origins = [str(i.source) for i in triggers if i.ok]
        out.extra["triggers"] = origins
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        sets = h.manifest_image_sets(job)
        # Powertools idempotency answers a duplicate with the first run's result, so count the work instead.
        out.expect(len(h.runs(WORKER)) == len(sets), f"{len(h.runs(WORKER))} worker runs for {len(sets)} image sets")
        h.check(out, job, sets, verdict="CLEAN", alerts=0)


@scenario("manifest-missing")
def _manifest_missing(out: Outcome) -> None:
    with Harness() as h:
        job = h.import_job(faults=ImportFaults(write_manifest=False))
        h.stack.run_until_idle(timeout=300)
        out.injected = "no manifest"
        triggers = h.runs(TRIGGER)
        failed = [i for i in triggers if not i.ok]
        out.extra["trigger attempts"] = [i.attempt for i in triggers]
        out.expect(
            len(triggers) == 3 and len(failed) == 3,
            f"{len(failed)}/{len(triggers)} trigger attempts failed, expected 3/3",
        )
        out.expect(any("JobOutputError" in (i.error or "") for i in failed), "the failure does not name the manifest")
        out.alerts = len(h.stack.alerts())
        out.expect(out.alerts == 0, f"{out.alerts} alert(s), expected none (the failure goes to a queue)")
        records = h.failure_records()
        out.expect(len(records) == 1, f"{len(records)} failure destination record(s), expected 1")
        if records:
            record = records[0]
            condition = record.get("requestContext", {}).get("condition")
            out.expect(condition == "RetriesExhausted", f"failure destination record condition {condition}")
            out.extra["failure destination"] = f"{condition}, {record.get('responsePayload', {}).get('errorType')}"
        out.expect(h.report(job) is None, "a report exists for a job whose output could not be read")
        out.expect(not h.runs(WORKER), "workers ran for a job without a manifest")
        out.verdict = "no report"


def _direct_folder(h: Harness, shape: Shape = FULL) -> tuple[str, list[str]]:
    """Image sets put straight into the emulator (no import job); returns a fresh job ID and the image sets."""
    ids = []
    for s in range(shape.image_sets):
        instances = [
            InstanceSpec(frames=list(synthetic_frames(shape, shape.frames_per_instance, 7_000 + s * 10 + i)))
            for i in range(shape.instances)
        ]
        ids.append(h.stack.emulator.add_image_set(DS, instances).image_set_id)
    return f"{random.getrandbits(128):032x}", ids


def _manifest(job: str, folder: str, sets: Sequence[str], imported: int, customer_errors: int) -> bytes:
    return json.dumps(
        {
            "jobSummary": {
                "jobId": job,
                "datastoreId": DS,
                "inputS3Uri": "s3://site-dicom/direct/",
                "outputS3Uri": folder,
                "successOutputS3Uri": folder + "SUCCESS/",
                "failureOutputS3Uri": folder + "FAILURE/",
                "warningsOutputS3Uri": folder + "WARNING/",
                "numberOfScannedFiles": imported + customer_errors,
                "numberOfImportedFiles": imported,
                "numberOfFilesWithCustomerError": customer_errors,
                "numberOfFilesWithServerError": 0,
                "numberOfGeneratedImageSets": len(sets),
                "imageSetsSummary": [
                    {"imageSetId": s, "imageSetVersion": 1, "isPrimary": True, "numberOfMatchedSOPInstances": 3}
                    for s in sets
                ],
            }
        }
    ).encode()


@scenario("ndjson-malformed-split")
def _ndjson_malformed(out: Outcome) -> None:
    """Split SUCCESS files with malformed, blank and huge lines, and a FAILURE file, written straight to the
    output bucket; the manifest is written last, so its S3 notification starts the job."""
    with Harness() as h:
        job, sets = _direct_folder(h)
        key = h.folder_key(job)
        folder = f"s3://{h.bucket}/{key}"

        def ok_line(n: int, isid: str, pad: int = 0) -> bytes:
            response = {"imageSetId": isid, "imageSetVersion": 1, "isPrimary": True}
            return json.dumps(
                {"inputFile": f"s3://site-dicom/direct/f{n:04d}.dcm" + "x" * pad, "importResponse": response}
            ).encode()

        lines = [ok_line(n, sets[n % len(sets)]) for n in range(24)]
        huge_valid = ok_line(99, sets[0], pad=2_000_000)  # a 2 MB line that is valid
        bad = [b"{not json", b"[1, 2, 3]", b'{"inputFile": "s3://site-dicom/direct/x.dcm"}', b"\xff" * 1_500_000]
        part1 = b"\n".join([*lines[:12], b"", bad[0], b"   ", huge_valid, bad[1]]) + b"\n"
        part2 = b"\n\n".join([*lines[12:], bad[2], bad[3]])  # no final newline
        failure = (
            json.dumps(
                {
                    "inputFile": "s3://site-dicom/direct/rejected.dcm",
                    "exception": {"exceptionType": "ValidationException", "message": "not DICOM"},
                }
            ).encode()
            + b"\n"
        )
        s3 = h.stack.s3
        s3.put_object(Bucket=h.bucket, Key=key + "SUCCESS/success-00001.ndjson", Body=part1)
        s3.put_object(Bucket=h.bucket, Key=key + "SUCCESS/success-00002.ndjson", Body=part2)
        s3.put_object(Bucket=h.bucket, Key=key + "FAILURE/failure.ndjson", Body=failure)
        s3.put_object(Bucket=h.bucket, Key=key + "job-output-manifest.json", Body=_manifest(job, folder, sets, 25, 1))
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = f"{len(bad)} bad lines, 3 blank, 2 MB line, 2 split files"
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        doc = h.check(out, job, sets, verdict="UNVERIFIED", alerts=1)
        if doc is not None:
            unreadable = doc["unreadableLines"]
            out.extra["unreadable"] = [(u["file"].rsplit("/", 1)[-1], u["line"]) for u in unreadable]
            out.expect(len(unreadable) == len(bad), f"{len(unreadable)} unreadable lines reported, expected {len(bad)}")
            out.expect(len(doc["failures"]) == 1, f"{len(doc['failures'])} failed files reported, expected 1")
            out.expect(not doc["notes"], f"unexpected notes {doc['notes']}")
            out.expect(
                all("x" * 100 not in json.dumps(u) for u in unreadable), "a line's content leaked into the report"
            )


def _bad_manifest(out: Outcome, body: bytes, label: str) -> None:
    with Harness() as h:
        job, _ = _direct_folder(h, Shape(image_sets=1, instances=1, frames_per_instance=2))
        key = h.folder_key(job)
        h.stack.s3.put_object(Bucket=h.bucket, Key=key + "SUCCESS/success.ndjson", Body=b"")
        h.stack.s3.put_object(Bucket=h.bucket, Key=key + "job-output-manifest.json", Body=body)
        h.stack.run_until_idle(timeout=120)
        out.injected = label
        triggers = h.runs(TRIGGER)
        failed = [i for i in triggers if not i.ok]
        out.expect(
            len(failed) == len(triggers) == 3, f"{len(failed)}/{len(triggers)} trigger attempts failed, expected 3/3"
        )
        out.expect(any("ManifestError" in (i.error or "") for i in failed), f"errors {[i.error for i in failed][:1]}")
        out.alerts = len(h.stack.alerts())
        out.expect(out.alerts == 0, f"{out.alerts} alert(s), expected none (the failure goes to a queue)")
        records = len(h.failure_records())
        out.expect(records == 1, f"{records} failure destination record(s), expected 1")
        out.expect(h.report(job) is None, "a report claims a result for an unreadable manifest")
        out.verdict = "no report"


@scenario("manifest-malformed-json")
def _manifest_bad_json(out: Outcome) -> None:
    _bad_manifest(out, b'{"jobSummary": {"jobId": ', "manifest not JSON")


@scenario("manifest-missing-fields")
def _manifest_bad_fields(out: Outcome) -> None:
    _bad_manifest(
        out, json.dumps({"jobSummary": {"jobId": "x", "numberOfScannedFiles": 1}}).encode(), "manifest lacks fields"
    )


def _check_one_corrupt_frame(h: Harness, out: Outcome, job: str, sets: Sequence[str]) -> None:
    """Check a job imported with one corrupted frame: that frame MISMATCH, the rest MATCH, one alert."""
    (corrupted,) = h.stack.emulator.job_faults(job).corrupted_frames
    h.check(
        out, job, sets, verdict="MISMATCH", alerts=1, expected={corrupted.frame_id: ("MISMATCH", {"checksum-differs"})}
    )


@scenario("duplicate-events-sequential")
def _duplicates_sequential(out: Outcome) -> None:
    with Harness() as h:
        job = h.import_job(faults=ImportFaults(corrupt_frames=1))
        h.stack.run_until_idle(timeout=300)
        workers = len(h.runs(WORKER))
        event = h.s3_event(h.folder_key(job) + "job-output-manifest.json")
        for _ in range(2):
            h.stack.deliver_s3_event(event)
            h.stack.put_events(h.job_completed_event(job))
            h.stack.run_until_idle(timeout=120)
        out.injected = "1 corrupt frame, event x3 (S3 and EventBridge)"
        out.expect(len(h.runs(WORKER)) == workers, "a duplicate event queued work again")
        sets = h.manifest_image_sets(job)
        _check_one_corrupt_frame(h, out, job, sets)


@scenario("duplicate-events-concurrent")
def _duplicates_concurrent(out: Outcome) -> None:
    """Three S3 notifications and three import-job events for one job, delivered at once from six threads."""
    with Harness() as h:
        job = h.import_job(faults=ImportFaults(corrupt_frames=1))
        h.wait_imported(job)
        h.stack.discard_pending()  # the job's own notification and event: replaced by the six below
        s3_event = h.s3_event(h.folder_key(job) + "job-output-manifest.json")
        bus_event = h.job_completed_event(job)
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def deliver(kind: str) -> None:
            try:
                barrier.wait()
                if kind == "s3":
                    h.stack.deliver_s3_event(s3_event)
                else:
                    h.stack.put_events(bus_event)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(k,)) for k in ("s3", "bus") * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        h.stack.run_until_idle(timeout=300)
        out.injected = "1 corrupt frame, 6 concurrent deliveries"
        out.expect(not errors, f"delivery raised {errors[:1]}")
        triggers = h.runs(TRIGGER)
        out.expect(
            len(triggers) == 6 and all(i.ok for i in triggers),
            f"{len(triggers)} trigger runs, failures {[i.error for i in triggers if not i.ok]}",
        )
        outcomes = [next(iter(i.result["jobs"].values()))["outcome"] for i in triggers if i.ok]
        out.extra["trigger outcomes"] = dict(Counter(outcomes))
        sets = h.manifest_image_sets(job)
        worker_ok = [i for i in h.runs(WORKER) if i.ok]
        out.expect(
            len(h.runs(WORKER)) == len(worker_ok) == len(sets),
            f"{len(worker_ok)} worker runs for {len(sets)} image sets",
        )
        _check_one_corrupt_frame(h, out, job, sets)


def _crash(out: Outcome, label: str, arm: Callable[[Harness, str], None]) -> None:
    with Harness(parameters={"FramesPerWorkItem": "10"}) as h:
        job = h.import_job(faults=ImportFaults(corrupt_frames=1))
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        arm(h, job)
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = label
        killed = [i for i in h.runs(WORKER) if i.error and "SIGKILL" in i.error]
        out.expect(len(killed) == 1, f"{len(killed)} worker(s) killed, expected 1")
        out.extra["killed"] = killed[0].error.split(" as arranged")[0] if killed and killed[0].error else None
        out.expect(summary.dlq_depth.get("WorkDeadLetterQueue", 0) == 0, f"DLQ {summary.dlq_depth}")
        sets = h.manifest_image_sets(job)
        (corrupted,) = h.stack.emulator.job_faults(job).corrupted_frames
        doc = h.check(
            out,
            job,
            sets,
            verdict="MISMATCH",
            alerts=1,
            expected={corrupted.frame_id: ("MISMATCH", {"checksum-differs"})},
        )
        if doc is not None:
            out.extra["work items"] = doc["timings"]["workItems"]
            out.expect(
                doc["timings"]["workItems"] == FULL.frames // 10,
                f"{doc['timings']['workItems']} parts, expected {FULL.frames // 10}",
            )


@scenario("worker-killed-after-part")
def _crash_after_part(out: Outcome) -> None:
    def arm(h: Harness, job: str) -> None:
        h.stack.arm_crash(WORKER, when=lambda: h.parts(job) >= 1, after_s=60)

    _crash(out, "SIGKILL once a part exists", arm)


@scenario("worker-killed-mid-fetch")
def _crash_mid_fetch(out: Outcome) -> None:
    def arm(h: Harness, job: str) -> None:
        # Fetching starts once the child process has cold-started; kill it a little after that.
        h.stack.arm_crash(WORKER, when=lambda: h.stack.emulator.stats()["requests"]["GetImageFrame"] >= 3, after_s=60)

    _crash(out, "SIGKILL during GetImageFrame", arm)


@scenario("poison-item-dlq")
def _poison(out: Outcome) -> None:
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        h.stack.runner.add_init_hook(WORKER, "local.fault_hooks:poison_image_set", sets[5])
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = "1 item raising on every delivery"
        receives = int(h.stack.function(WORKER).environment["WORK_MAX_RECEIVE_COUNT"])  # the template's redrive
        failed = summary.failed_items.get(WORKER)
        out.expect(failed == receives, f"{failed} failed deliveries, expected {receives}")
        # The message reached the DLQ, and the recorder took it off (the worker had recorded the item already).
        depth = h.stack.dlq_depths().get("WorkDeadLetterQueue")
        recorded = [i for i in h.runs(RECORDER) if i.ok]
        out.extra["dead letters"] = len(recorded)
        out.expect(depth == 0, f"DLQ depth {depth}, expected 0 (the recorder consumes it)")
        out.expect(len(recorded) == 1, f"{len(recorded)} recorder invocation(s), expected 1")
        h.check(out, job, sets, verdict="UNVERIFIED", alerts=1, set_errors={sets[5]: "dead-letter queue"})


def _expect_discrepancy(out: Outcome, doc: dict[str, Any] | None, words: str) -> None:
    """The report names the disagreement in words, and it is the only one."""
    found = list(doc["discrepancies"]) if doc is not None else []
    out.extra["discrepancies"] = len(found)
    out.expect(len(found) == 1 and words in found[0], f"discrepancies {found}, expected one saying {words!r}")


def _tampered_manifest(out: Outcome, label: str, tamper: Callable[[dict[str, Any]], None], words: str) -> None:
    """A genuine import whose manifest is rewritten before the trigger reads it; every image set the SUCCESS
    lines name must still be verified, and the job must be UNVERIFIED with the disagreement in words."""
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        sets = h.manifest_image_sets(job)
        key = h.folder_key(job) + "job-output-manifest.json"
        doc = json.loads(h.stack.s3.get_object(Bucket=h.bucket, Key=key)["Body"].read())
        tamper(doc["jobSummary"])
        h.stack.s3.put_object(Bucket=h.bucket, Key=key, Body=json.dumps(doc).encode())
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = label
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        _expect_discrepancy(out, h.check(out, job, sets, verdict="UNVERIFIED", alerts=1), words)


@scenario("manifest-omits-image-set")
def _manifest_omits_image_set(out: Outcome) -> None:
    def omit_last(summary: dict[str, Any]) -> None:
        summary["imageSetsSummary"].pop()
        summary["numberOfGeneratedImageSets"] -= 1

    _tampered_manifest(out, "1 of 8 image sets left out", omit_last, "missing from the manifest (verified all")


@scenario("manifest-overcounts-image-sets")
def _manifest_overcounts(out: Outcome) -> None:
    def overcount(summary: dict[str, Any]) -> None:
        summary["numberOfGeneratedImageSets"] = 9

    _tampered_manifest(out, "9 generated, 8 listed", overcount, "9 image set(s) were generated and lists 8")


@scenario("manifest-instances-lost")
def _manifest_instances_lost(out: Outcome) -> None:
    def claim_more(summary: dict[str, Any]) -> None:
        summary["imageSetsSummary"][0]["numberOfMatchedSOPInstances"] += 3

    _tampered_manifest(out, "3 matched instances not in metadata", claim_more, "the import put 6 there")


@scenario("manifest-forged-unknown-job")
def _manifest_forged(out: Outcome) -> None:
    """A well-formed manifest for a job ID GetDICOMImportJob does not know, over real image sets."""
    with Harness() as h:
        job, sets = _direct_folder(h)
        key, folder = h.folder_key(job), f"s3://{h.bucket}/{h.folder_key(job)}"
        lines = [
            json.dumps({"inputFile": f"direct/{s}-{i}.dcm", "importResponse": {"imageSetId": s, "isPrimary": True}})
            for s in sets
            for i in range(FULL.instances)
        ]
        h.stack.s3.put_object(Bucket=h.bucket, Key=key + "SUCCESS/success.ndjson", Body="\n".join(lines).encode())
        manifest = json.loads(_manifest(job, folder, sets, len(lines), 0))
        h.stack.s3.put_object(Bucket=h.bucket, Key=key + "job-output-manifest.json", Body=json.dumps(manifest).encode())
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = "manifest of a job that never ran"
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        doc = h.check(out, job, sets, verdict="UNVERIFIED", alerts=1)
        _expect_discrepancy(out, doc, f"GetDICOMImportJob does not know import job {job}")


@scenario("manifest-rewritten-after-verification")
def _manifest_rewritten(out: Outcome) -> None:
    """A verified job whose manifest is then overwritten with a forged one (one image set of eight): the
    report stands, one MANIFEST CHANGED alert, nothing verified again."""
    with Harness() as h:
        job = h.import_job()
        h.stack.run_until_idle(timeout=300)
        sets = h.manifest_image_sets(job)
        key = h.folder_key(job) + "job-output-manifest.json"
        doc = json.loads(h.stack.s3.get_object(Bucket=h.bucket, Key=key)["Body"].read())
        doc["jobSummary"]["imageSetsSummary"] = doc["jobSummary"]["imageSetsSummary"][:1]
        workers_before = len(h.runs(WORKER))
        h.stack.s3.put_object(Bucket=h.bucket, Key=key, Body=json.dumps(doc).encode())
        summary = h.stack.run_until_idle(timeout=300)
        out.injected = "manifest overwritten after the report"
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        out.expect(len(h.runs(WORKER)) == workers_before, "the rewritten manifest was verified again")
        h.check(out, job, sets, verdict="CLEAN", alerts=1)
        subjects = [a.subject for a in h.stack.alerts()]
        out.expect(subjects == [f"[ahi-verify] MANIFEST CHANGED: import job {job}"], f"alerts {subjects}")


# ------------------------------------------------------------------------------------------- running


def run_scenario(name: str, workers: int = WORKERS) -> Outcome:
    """Run one scenario of the matrix by name; exceptions become problems of its outcome.

    Parameters
    ----------
    name
        A key of :data:`SCENARIOS`.
    workers
        Worker batches in flight at once (1: serial, in-process).

    Returns
    -------
    Outcome
        The row of the table. Whatever the scenario, more than one alert is a problem.
    """
    out = Outcome(name)
    started = time.monotonic()
    token, peaks = _workers.set(workers), _peak.set([])
    try:
        with redirect_stdout(io.StringIO()):  # Powertools prints its metrics (EMF) to stdout
            SCENARIOS[name](out)
    except Exception as exc:
        out.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        out.extra["peak workers"] = max(_peak.get(), default=0)
        _workers.reset(token)
        _peak.reset(peaks)
    out.expect(out.alerts <= 1, f"{out.alerts} alerts for one job")
    out.seconds = time.monotonic() - started
    return out


# ------------------------------------------------------------------------------- every job ends in a report


@scenario("worker-timeout-every-delivery")
def _timeout_every_delivery(out: Outcome) -> None:
    """One work item whose invocations are killed at the function's timeout on every delivery (a hang, not an
    exception: the worker never records it). The dead-letter recorder must record it, so the job gets its
    report and its one alert."""
    with Harness() as h:
        h.shorten_timeout(WORKER, 10)
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        h.stack.runner.add_init_hook(WORKER, "local.fault_hooks:hang_image_set", sets[5], 3600)
        h.stack.run_until_idle(timeout=600)
        out.injected = "1 item timing out on every delivery"
        receives = int(h.stack.function(WORKER).environment["WORK_MAX_RECEIVE_COUNT"])
        timed_out = [i for i in h.runs(WORKER) if i.error and "Timedout" in i.error]
        recorded = [i for i in h.runs(RECORDER) if i.ok]
        out.extra["timeouts"], out.extra["dead letters"] = len(timed_out), len(recorded)
        out.expect(len(timed_out) == receives, f"{len(timed_out)} timed-out deliveries, expected {receives}")
        out.expect(len(recorded) == 1, f"{len(recorded)} recorder invocation(s), expected 1")
        out.expect(h.stack.dlq_depths().get("WorkDeadLetterQueue") == 0, "the dead letter stayed in the DLQ")
        h.check(out, job, sets, verdict="UNVERIFIED", alerts=1, set_errors={sets[5]: "ran out of time"})


@scenario("throttling-sustained-handback")
def _throttling_sustained(out: Outcome) -> None:
    """Every 4th GetImageFrame throttled for the whole job, 20 ms latency, two image sets of 200 frames, a
    60-s function timeout and a budget of 20 GetImageFrame/s (the deployment's ceiling then settles near 8/s,
    so the ~530 requests outlast one invocation): the workers slow down and hand the frames they cannot reach
    on before their deadline; nothing times out, nothing is dead-lettered, and the job is CLEAN.

    Why 60 s and 200 frames a set: the reserve a worker keeps for draining and writing its part is a quarter of
    the timeout, and the drain takes the fetch pool's worth of requests at the budget's rate (about the same
    whatever the timeout). With 40 s (a 10-s reserve) and 120 frames one invocation in a full CI run overran by
    a few seconds while alone it ended 10 s early; 15 s leaves room for that run's overrun. A lower budget
    would not do: it slows the drain as much as it lengthens the job."""
    with Harness(parameters={"FrameRequestRateBudget": "20"}) as h:
        h.shorten_timeout(WORKER, 60)
        h.stack.emulator.add_fault(Fault("throttle", operation="GetImageFrame", every=4))
        h.stack.emulator.add_fault(Fault("latency", operation="GetImageFrame", latency_ms=20))
        job = h.import_job(Shape(image_sets=2, instances=4, frames_per_instance=50))
        h.stack.run_until_idle(timeout=1200)
        sets = h.manifest_image_sets(job)
        out.injected = h.fired()
        timed_out = [i for i in h.runs(WORKER) if i.error and "Timedout" in i.error]
        handed_on = h.parts(job) - len(sets)
        out.extra["hand-backs"] = handed_on
        out.expect(handed_on > 0, "no work item was handed on (the timeout was never near)")
        out.expect(not timed_out, f"{len(timed_out)} worker invocation(s) timed out")
        out.expect(not h.runs(RECORDER), "a work item was dead-lettered")
        h.check(out, job, sets, verdict="CLEAN", alerts=0)


@scenario("alert-publish-refused")
def _alert_refused(out: Outcome) -> None:
    """SNS refuses the finaliser's publish (the alert topic's KMS key disabled): the job must still be done,
    with its report, and the next reconciliation sweep sends the kept alert, once."""
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        frame = h.listed(sets)[sets[1]][4]
        h.stack.emulator.corrupt_frame(DS, sets[1], frame)
        for function in (WORKER, RECORDER):
            h.stack.runner.add_init_hook(function, "local.fault_hooks:refuse_alerts")
        h.stack.run_until_idle(timeout=300)
        out.injected = "SNS Publish refused at finalisation"
        record = h.job_record(job)
        out.extra["state"] = record.get("state")
        out.expect(record.get("state") == "done", f"job state {record.get('state')}, expected done")
        out.expect(record.get("alert_due") is True, "the job has no alert due")
        out.expect(not h.stack.alerts(ALERT_TOPIC), "an alert was published while SNS refused")
        h.stack.run_schedule()
        h.stack.run_schedule()  # a second sweep sends nothing more
        h.check(out, job, sets, verdict="MISMATCH", alerts=1, expected={frame: ("MISMATCH", {"checksum-differs"})})


@scenario("job-stuck-past-deadline")
def _job_stuck(out: Outcome) -> None:
    """One work item lost (its message gone from the queue): the job stays running. Past the job deadline,
    the reconciliation finishes it: UNVERIFIED, the image set named, one job alert, one operational message
    naming the job."""
    with Harness() as h:
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        url = h.stack.queue_url("WorkQueue")
        lost = 0
        while lost == 0:
            for message in h.stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                if json.loads(message["Body"])["imageSetId"] == sets[6]:
                    h.stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    lost += 1
                else:
                    h.stack.sqs.change_message_visibility(
                        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
        h.stack.run_until_idle(timeout=300)
        out.injected = "1 work item lost"
        out.expect(h.report(job) is None, "the job was finalised with a work item missing")
        h.trigger_settings(job_deadline_s=2)
        time.sleep(3)
        h.stack.run_schedule()
        ops = [a for a in h.stack.alerts(OPS_TOPIC) if job in (a.subject or "")]
        out.extra["ops messages"] = len(ops)
        out.expect(len(ops) == 1, f"{len(ops)} operational message(s) naming the job, expected 1")
        doc = h.check(
            out, job, sets, verdict="UNVERIFIED", alerts=1, set_errors={sets[6]: "no work item of this image set"}
        )
        if doc is not None:
            out.expect(any("had not completed" in d for d in doc["discrepancies"]), "the report does not say why")


@scenario("reconcile-unreadable-and-lost")
def _reconcile_unreadable(out: Outcome) -> None:
    """Two jobs whose events were lost; the first one's manifest is not JSON. One sweep must verify the
    second job and record (and alert) the first once; a second sweep changes nothing."""
    with Harness() as h:
        bad, good = h.import_job(seed=1), h.import_job(seed=2)
        h.wait_imported(bad)
        h.wait_imported(good)
        key = h.folder_key(bad) + "job-output-manifest.json"
        h.stack.s3.put_object(Bucket=h.bucket, Key=key, Body=b"{not json")
        dropped = h.stack.discard_pending()
        out.injected = f"{dropped} events lost, 1 manifest not JSON"
        h.stack.run_schedule()
        h.stack.run_until_idle(timeout=300)
        h.stack.run_schedule()
        h.stack.run_until_idle(timeout=60)
        unreadable = [a for a in h.stack.alerts(ALERT_TOPIC) if bad in (a.subject or "")]
        out.expect(len(unreadable) == 1, f"{len(unreadable)} alert(s) naming the unreadable job, expected 1")
        out.expect(h.job_record(bad).get("state") == "unreadable", "the unreadable job was not recorded")
        h.check(out, good, h.manifest_image_sets(good), verdict="CLEAN", alerts=1)


@scenario("dynamodb-transaction-conflicts")
def _transaction_conflicts(out: Outcome) -> None:
    """Every 2nd distinct TransactWriteItems of the progress table (item completions, splits) is cancelled by a
    conflicting transaction on its first attempt: the progress ledger retries it, so nothing waits a visibility
    timeout or dead-letters uncounted.

    Which attempt conflicts is decided per transaction, not by a global call count: with a global count, a
    worker whose retries interleave with other workers' calls could draw a conflict on all its attempts
    (CONFLICT_ATTEMPTS) by chance, and one CI run did; that is a test of luck, not of the retry."""
    original = DynamoDBBackend.transact_write_items
    seen: dict[str, int] = {}
    fired = [0]
    lock = threading.Lock()

    def conflicting(self: Any, transact_items: list[dict[str, Any]]) -> None:
        key = json.dumps(transact_items, sort_keys=True, default=str)
        with lock:
            first = key not in seen
            if first:
                seen[key] = len(seen) + 1
            conflict = first and seen[key] % 2 == 0
            fired[0] += conflict
        if conflict:
            reasons = [("TransactionConflict", "Transaction is ongoing", None)] * len(transact_items)
            raise TransactionCanceledException(reasons)
        original(self, transact_items)

    DynamoDBBackend.transact_write_items = conflicting  # type: ignore[method-assign]
    try:
        with Harness() as h:
            job = h.import_job()
            h.stack.run_until_idle(timeout=300)
            out.injected = f"{fired[0]} transaction conflicts"
            out.expect(fired[0] > 0, "no conflict fired")
            failed = [i for i in h.runs(WORKER) if not i.ok]
            out.expect(not failed, f"{len(failed)} worker invocation(s) failed")
            h.check(out, job, h.manifest_image_sets(job), verdict="CLEAN", alerts=0)
    finally:
        DynamoDBBackend.transact_write_items = original  # type: ignore[method-assign]


@scenario("split-message-redelivered")
def _split_redelivered(out: Outcome) -> None:
    """An image set split into three work items; after its first range is counted, and while the others are
    still running, its whole-set message is delivered again and GetImageSetMetadata fails on that delivery.
    The duplicate must count nothing: no early report, no "metadata failed" error, each frame once."""
    with Harness(parameters={"FramesPerWorkItem": "10"}) as h, tempfile.TemporaryDirectory() as gates:
        hold, fail = os.path.join(gates, "hold"), os.path.join(gates, "fail")
        job = h.import_job()
        h.wait_imported(job)
        h.stack.run_until_idle(timeout=120, include_mappings=False)
        sets = h.manifest_image_sets(job)
        target = sets[2]
        url = h.stack.queue_url("WorkQueue")
        body = None
        while body is None:
            for message in h.stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                if json.loads(message["Body"])["imageSetId"] == target:
                    body = message["Body"]
                h.stack.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
        open(hold, "w").close()
        held = h.listed([target])[target][10:]
        h.stack.runner.add_init_hook(WORKER, "local.fault_hooks:gate_image_set", target, held, hold, fail)
        runner = threading.Thread(target=lambda: h.stack.run_until_idle(timeout=600))
        runner.start()
        first_range = {"pk": {"S": f"JOB#{job}"}, "sk": {"S": f"ITEM#{target}-0-10"}}
        table = h.stack.tables["ProgressTable"]
        deadline = time.monotonic() + 120

        def waiting(frames: list[str]) -> bool:  # a work item of these frames has listed and is held
            return any(os.path.exists(f"{hold}.{f}") for f in frames)

        # The first range counted, and both other ranges past their metadata (held at their first fetch), so
        # that only the duplicate can meet the failing metadata.
        while time.monotonic() < deadline and not (
            "Item" in h.stack.dynamodb.get_item(TableName=table, Key=first_range)
            and waiting(held[:10])
            and waiting(held[10:])
        ):
            time.sleep(0.1)
        open(fail, "w").close()

        def delivered() -> int:  # finished worker invocations that carried the whole-set message
            return sum(any(r.get("body") == body for r in i.event.get("Records", [])) for i in h.runs(WORKER))

        deliveries = delivered()
        h.stack.sqs.send_message(QueueUrl=url, MessageBody=body)
        while delivered() <= deliveries:
            if time.monotonic() > deadline + 120:
                break
            time.sleep(0.1)
        out.expect(h.report(job) is None, "the job was finalised while two ranges were still running")
        os.remove(fail)
        os.remove(hold)
        runner.join()
        out.injected = "whole-set message again, metadata failing"
        out.extra["worker runs"] = len(h.runs(WORKER))
        h.check(out, job, sets, verdict="CLEAN", alerts=0)
