"""Trigger events -> the import jobs they announce.

Three sources announce a job: an S3 notification for the manifest (the template created the bucket), an
EventBridge "Object Created" event for it (an existing bucket), and HealthImaging's own "Import Job
Completed/Failed" event. A schedule asks for reconciliation instead; an ``ahi-verify`` "Audit Requested"
event (on demand, the AuditSchedule rule, or a walk continuing itself) for an audit run of the data store; an
image set event (Created, Updated, Copied, Copy Failed, Update Failed) for the verification of its new version.
Everything else is an error that names what was received, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

from ..ids import audit_run_id, is_int, is_job_id, is_service_id, parse_job_folder
from ..locations import MANIFEST_NAME


class EventError(ValueError):
    """An event the trigger cannot act on; says which and why."""


@dataclass(frozen=True)
class JobRef:
    """An import job to verify."""

    datastore_id: str
    job_id: str
    folder_uri: str | None
    """The job output folder, when the event names it; otherwise GetDICOMImportJob is asked."""
    origin: str
    failed: bool = False
    manifest_etag: str | None = None
    """The manifest object's ETag, when the event names it: part of the idempotency key, so a manifest
    rewritten with other content is looked at again instead of answered from the first run's cache."""


@dataclass(frozen=True)
class Reconcile:
    """The scheduled sweep for completed jobs that were never verified."""


AUDIT_SOURCE = "ahi-verify"
AUDIT_REQUESTED = "Audit Requested"
"""The on-demand audit event (``source`` and ``detail-type``), also what the AuditSchedule rule sends and what a
walk that ran out of time sends to continue itself. ``detail.runId`` (optional) names the run to start or resume;
without it the run is named by the event's ``time``, so a redelivered event resumes the same run."""

AUDIT_SCHEDULE_SUFFIX = "-audit-schedule"
"""How the AuditSchedule rule's name ends (its ARN is the scheduled event's resource)."""

IMAGE_SET_VERIFIED = ("Image Set Created", "Image Set Updated", "Image Set Copied")
"""Image set events announcing a new version to verify."""
IMAGE_SET_FAILED = {"Image Set Copy Failed": "CopyImageSet", "Image Set Update Failed": "UpdateImageSetMetadata"}
"""Image set events announcing a failed change: reported (UNVERIFIED), never verified."""


@dataclass(frozen=True)
class AuditRequest:
    """Start (or resume) the audit run ``run_id`` of the deployment's data store."""

    run_id: str
    origin: str


@dataclass(frozen=True)
class ImageSetChange:
    """An image set event: a new version to verify, or a change that failed (``failed_operation``)."""

    datastore_id: str
    image_set_id: str
    detail_type: str
    version: int | None = None
    """The event's version, when it names one; else GetImageSet is asked."""
    failed_operation: str | None = None


def parse_trigger_event(event: Mapping[str, Any]) -> list[JobRef] | Reconcile | AuditRequest | ImageSetChange:
    """Return the jobs an event announces (possibly none), :class:`Reconcile`, an :class:`AuditRequest` or an
    :class:`ImageSetChange`.

    Raises
    ------
    EventError
        Not a supported event, or a record whose key is not a manifest in a job folder.
    """
    if event.get("Event") == "s3:TestEvent":
        return []  # sent once when a notification configuration is saved
    if "Records" in event:
        return _s3_records(event)
    source, detail_type = event.get("source"), event.get("detail-type")
    if source == "aws.events" and detail_type == "Scheduled Event":
        return _scheduled(event)
    if source in ("aws.s3", "aws.medical-imaging") and not isinstance(event.get("detail"), Mapping):
        raise EventError(f"{detail_type} event has no detail object")
    if source == "aws.s3" and detail_type == "Object Created":
        detail = EventBridgeEvent(dict(event)).detail
        bucket, key = _text(detail, "bucket", "name"), _text(detail, "object", "key")
        if bucket is None or key is None:
            raise EventError("Object Created event has no detail.bucket.name or detail.object.key")
        return [_from_key(bucket, key, "eventbridge-s3", _text(detail, "object", "etag"))]
    if source == AUDIT_SOURCE and detail_type == AUDIT_REQUESTED:
        return _audit_request(event)
    if source == "aws.medical-imaging":
        return _medical_imaging(event, str(detail_type))
    raise EventError(f"unsupported event: source={source!r} detail-type={detail_type!r}")


def _scheduled(event: Mapping[str, Any]) -> Reconcile | AuditRequest:
    """The AuditSchedule rule is named ``<stack>-audit-schedule`` (template.yaml); every other schedule reconciles."""
    resources = event.get("resources")
    named = resources if isinstance(resources, list) else []
    if any(isinstance(r, str) and r.endswith(AUDIT_SCHEDULE_SUFFIX) for r in named):
        return _audit_request(event, origin="audit-schedule")
    return Reconcile()


def _medical_imaging(event: Mapping[str, Any], detail_type: str) -> list[JobRef] | ImageSetChange:
    """An ``aws.medical-imaging`` event: an import job's end, an image set's change, or nothing to do."""
    if detail_type in IMAGE_SET_VERIFIED or detail_type in IMAGE_SET_FAILED:
        return _image_set_change(event, detail_type)
    if detail_type in ("Import Job Completed", "Import Job Failed"):
        detail = EventBridgeEvent(dict(event)).detail
        datastore_id, job_id = _text(detail, "datastoreId"), _text(detail, "jobId")
        for name, value in (("datastoreId", datastore_id), ("jobId", job_id)):
            if value is None:
                raise EventError(f"{detail_type} event has no {name}")
        assert datastore_id is not None and job_id is not None  # noqa: PT018 - narrowing for the type checker
        if not is_service_id(datastore_id) or not is_job_id(job_id):
            raise EventError(f"{detail_type} event has a malformed datastoreId or jobId")
        return [JobRef(datastore_id, job_id, None, "import-job-event", failed=detail.get("jobStatus") == "FAILED")]
    # Import Job Submitted / In Progress, Image Set Copying / Updating / Deleting / Deleted: nothing new to
    # verify (a deletion's image set is gone; a work item already queued for it reports it deleted).
    return []


def _audit_request(event: Mapping[str, Any], origin: str = "audit-request") -> AuditRequest:
    detail = event.get("detail")
    run_id = detail.get("runId") if isinstance(detail, Mapping) else None
    if run_id is not None:
        if not is_job_id(run_id) or not str(run_id).startswith("audit"):
            raise EventError("Audit Requested event has a malformed detail.runId")
        return AuditRequest(str(run_id), "audit-continue")
    when = event.get("time")
    try:
        started = datetime.strptime(str(when), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise EventError("Audit Requested event has no detail.runId and no time (YYYY-MM-DDThh:mm:ssZ)") from exc
    return AuditRequest(audit_run_id(started), origin)


def _image_set_change(event: Mapping[str, Any], detail_type: str) -> ImageSetChange:
    detail = EventBridgeEvent(dict(event)).detail
    datastore_id, image_set_id = _text(detail, "datastoreId"), _text(detail, "imageSetId")
    if not is_service_id(datastore_id) or not is_service_id(image_set_id):
        raise EventError(f"{detail_type} event has a missing or malformed datastoreId or imageSetId")
    raw = detail.get("imageSetVersion", detail.get("versionId"))
    version = int(raw) if isinstance(raw, str) and raw.isdigit() else raw if is_int(raw) and raw > 0 else None
    return ImageSetChange(
        str(datastore_id), str(image_set_id), detail_type, version, failed_operation=IMAGE_SET_FAILED.get(detail_type)
    )


def _s3_records(event: Mapping[str, Any]) -> list[JobRef]:
    raw_records = event.get("Records")
    if not isinstance(raw_records, list) or not raw_records:
        raise EventError("S3 event has no Records list")
    refs, problems = [], []
    for i, raw in enumerate(raw_records):
        if not isinstance(raw, Mapping):
            problems.append(f"record {i} is not an object")
            continue
        source, name = raw.get("eventSource", raw.get("EventSource")), str(raw.get("eventName", ""))
        if source != "aws:s3" or not name.startswith("ObjectCreated"):
            problems.append(f"record {i}: {source} {name or '(no eventName)'} is not an S3 ObjectCreated event")
            continue
        if _text(raw, "s3", "bucket", "name") is None or _text(raw, "s3", "object", "key") is None:
            problems.append(f"record {i} has no s3.bucket.name or s3.object.key")
            continue
        record = S3EventRecord(dict(raw))
        # Keys arrive URL-encoded (space -> '+'); the per-record accessor does not decode them.
        key = unquote_plus(record.s3.get_object.key)
        try:
            refs.append(_from_key(record.s3.bucket.name, key, "s3", _text(raw, "s3", "object", "eTag")))
        except EventError as exc:
            problems.append(f"record {i}: {exc}")
    if problems:
        raise EventError("; ".join(problems))
    return refs


def _text(obj: Mapping[str, Any], *path: str) -> str | None:
    """The string at ``path`` in nested objects, or None when any step is missing or of another type."""
    value: Any = obj
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value if isinstance(value, str) and value else None


def _from_key(bucket: str, key: str, origin: str, etag: str | None) -> JobRef:
    if key.rsplit("/", 1)[-1] != MANIFEST_NAME:
        raise EventError(f"s3://{bucket}/{key} is not a {MANIFEST_NAME}")
    folder = key[: -len(MANIFEST_NAME)]
    ids = parse_job_folder(folder)
    if ids is None:
        raise EventError(f"s3://{bucket}/{folder} is not a <datastoreId>-DicomImport-<jobId>/ job folder")
    return JobRef(ids[0], ids[1], f"s3://{bucket}/{folder}", origin, manifest_etag=etag.strip('"') if etag else None)
