"""The application's flow: an announced job -> work items -> verified parts -> one report and one alert.

Every step is idempotent, because every AWS delivery is at-least-once: a job is queued once (conditional
job record, plus Powertools idempotency in the trigger), a work item is counted once (completion ledger),
and the job is finalised once (conditional claim once nothing is pending). Parts are written before an
item is counted, so a finalisation always finds every counted item's frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit

from ..alert import compose_alert
from ..healthimaging import HealthImagingSource, describe_import_job, make_client
from ..image_set import FrameSource, ImageSetError, VerifyOptions, iter_frame_results, load_image_set_frames
from ..job import job_folder, read_job
from ..report import frame_counts, image_set_document, job_header, render_html, report_document
from ..s3_output import JobOutputReader
from ..work_items import WorkItem, WorkItemError, frame_ranges
from .events import JobRef, Reconcile, parse_trigger_event
from .messaging import AlertPublisher, WorkQueue
from .observability import logger, metrics
from .progress import JobProgress
from .settings import Settings
from .storage import ReportStore


@dataclass
class Services:
    """Everything the flow talks to, created once per process (cold start)."""

    settings: Settings
    progress: JobProgress
    reports: ReportStore
    reader: JobOutputReader
    frames: FrameSource
    medical_imaging: Any
    queue: WorkQueue
    alerts: AlertPublisher
    options: VerifyOptions


def build_services(settings: Settings) -> Services:
    """Create the AWS clients and adapters (once, at cold start)."""
    medical_imaging = make_client(max_pool_connections=settings.fetch_concurrency)
    s3 = boto3.client("s3")
    return Services(
        settings=settings,
        progress=JobProgress(boto3.client("dynamodb"), settings.progress_table),
        reports=ReportStore(s3, settings.output_bucket, settings.reports_prefix),
        reader=JobOutputReader(s3),
        frames=HealthImagingSource(medical_imaging),
        medical_imaging=medical_imaging,
        queue=WorkQueue(boto3.client("sqs"), settings.work_queue_url),
        alerts=AlertPublisher(boto3.client("sns"), settings.alert_topic_arn),
        options=VerifyOptions(
            fetch_concurrency=settings.fetch_concurrency, memory_budget_bytes=settings.memory_budget_bytes
        ),
    )


def handle_trigger(
    event: Mapping[str, Any], svc: Services, verify_once: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Turn a trigger event into verification runs; ``verify_once`` is :func:`start_job` behind idempotency."""
    parsed = parse_trigger_event(event)
    if isinstance(parsed, Reconcile):
        return {"reconciled": reconcile(svc, verify_once)}
    outcomes = {}
    for ref in parsed:
        logger.set_correlation_id(ref.job_id)
        logger.append_keys(job_id=ref.job_id, datastore_id=ref.datastore_id, origin=ref.origin)
        outcomes[ref.job_id] = verify_once(asdict(ref))
    return {"jobs": outcomes}


def start_job(ref: JobRef, svc: Services) -> dict[str, Any]:
    """Read an announced job's output and queue one work item per image set."""
    settings = svc.settings
    if ref.datastore_id != settings.datastore_id:
        logger.warning("job belongs to another data store; not verified by this deployment")
        return {"outcome": "skipped", "reason": "other data store"}
    folder, failure = ref.folder_uri, None
    if folder is None or ref.failed:
        described = describe_import_job(svc.medical_imaging, ref.datastore_id, ref.job_id)
        if described.status == "FAILED":
            failure = described.message or "the import job failed without a message"
        elif described.status != "COMPLETED":
            return {"outcome": "skipped", "reason": f"job is {described.status}"}
        folder = folder or described.output_folder_uri
    location = job_folder(folder)
    manifest, findings = None, None
    notes: list[str] = []
    planned: list[dict[str, Any]] = []
    if failure is None:
        manifest, findings, notes = read_job(svc.reader, location, manifest_wait_s=settings.manifest_wait_s)
        if (manifest.datastore_id, manifest.job_id) != (ref.datastore_id, ref.job_id):
            notes.append("the manifest names another data store or job than its folder; the folder's IDs are used")
        planned = [
            {"imageSetId": s.image_set_id, "version": s.version, "isPrimary": s.is_primary} for s in manifest.image_sets
        ]
    header = job_header(
        job_id=ref.job_id,
        datastore_id=ref.datastore_id,
        folder=location.uri,
        manifest=manifest,
        findings=findings,
        notes=notes,
        failure_message=failure,
    )
    return _plan(ref, location.uri, header, planned, svc)


def _plan(
    ref: JobRef, folder: str, header: dict[str, Any], planned: list[dict[str, Any]], svc: Services
) -> dict[str, Any]:
    items = [WorkItem(ref.job_id, ref.datastore_id, p["imageSetId"], p["version"]) for p in planned]
    if not svc.progress.create(ref.job_id, ref.datastore_id, folder, pending=len(items)):
        existing = svc.progress.get(ref.job_id) or {}
        if existing.get("state") != "planning":
            return {"outcome": "duplicate", "state": existing.get("state")}
        logger.info("resuming a job whose queueing was interrupted")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    svc.reports.put_json(ref.job_id, "job.json", {"header": header, "imageSets": planned, "startedAt": started_at})
    svc.queue.send(items)
    svc.progress.advance(ref.job_id, "planning", "running")
    metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ImageSetsQueued", unit=MetricUnit.Count, value=len(items))
    if not items:
        finalise_job(ref.job_id, svc, claimer="trigger")
    return {"outcome": "queued", "imageSets": len(items)}


def process_work_item(item: WorkItem, svc: Services) -> dict[str, Any]:
    """Verify one work item, record it, and finalise the job if it was the last.

    Raises
    ------
    WorkItemError
        The item names another data store or an unknown job: it can never succeed (DLQ).
    """
    if item.datastore_id != svc.settings.datastore_id:
        raise WorkItemError("work item names another data store")
    if svc.progress.get(item.job_id) is None:
        raise WorkItemError("work item names a job this deployment never queued")
    started = time.perf_counter()
    version = str(item.version) if item.version is not None else None
    current, error, frames = item, None, []
    try:
        listed = load_image_set_frames(svc.frames, item.datastore_id, item.image_set_id, version).frames
    except ImageSetError as exc:
        error, listed = str(exc), ()
    per_item = svc.settings.frames_per_work_item
    if item.frames is None and len(listed) > per_item:
        first, *rest = frame_ranges(len(listed), per_item)
        extra = [item.with_frames(start, end) for start, end in rest]
        svc.progress.record_split(item.job_id, item.image_set_id, len(extra))
        svc.queue.send(extra)  # re-sent on redelivery: duplicates are counted once by the ledger
        current = item.with_frames(*first)
        logger.info("image set split into work items", extra={"work_items": len(rest) + 1})
    if listed:
        start, end = current.frames or (0, len(listed))
        results = iter_frame_results(svc.frames, item.datastore_id, item.image_set_id, listed[start:end], svc.options)
        frames = [{**r.to_json(), "index": r.frame.index} for r in results]
        frames.sort(key=lambda f: f["index"])
    part = {
        "itemId": current.item_id,
        "imageSetId": item.image_set_id,
        "range": list(current.frames) if current.frames else None,
        "totalFrames": len(listed),
        "error": error,
        "frames": frames,
        "seconds": round(time.perf_counter() - started, 3),
    }
    svc.reports.put_json(item.job_id, f"parts/{current.item_id}.json", part)
    counts = frame_counts(frames)
    if svc.progress.complete_item(item.job_id, current.item_id, counts):
        metrics.add_metric(name="FramesVerified", unit=MetricUnit.Count, value=counts["total"])
        metrics.add_metric(name="FramesMismatched", unit=MetricUnit.Count, value=counts["mismatch"])
        metrics.add_metric(name="FramesErrored", unit=MetricUnit.Count, value=counts["error"])
        metrics.add_metric(name="WorkItemsVerified", unit=MetricUnit.Count, value=1)
        elapsed_ms = (time.perf_counter() - started) * 1000
        metrics.add_metric(name="VerificationLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    job = svc.progress.get(item.job_id) or {}
    if job.get("pending") == 0:
        finalise_job(item.job_id, svc, claimer=current.item_id)
    return {"itemId": current.item_id, **counts}


def record_failed_item(item: WorkItem, error: str, attempts: int, svc: Services) -> None:
    """Record a work item that failed on its last delivery as not verified, so the job still completes.

    The message goes on to the DLQ (the caller re-raises); the report names the image set and the error.
    """
    if svc.progress.get(item.job_id) is None:
        return  # not a job of this deployment: nothing to report against
    part = {
        "itemId": item.item_id,
        "imageSetId": item.image_set_id,
        "range": list(item.frames) if item.frames else None,
        "totalFrames": 0,
        "error": f"work item failed on all {attempts} deliveries and was moved to the dead-letter queue: {error}",
        "frames": [],
        "seconds": 0.0,
    }
    svc.reports.put_json(item.job_id, f"parts/{item.item_id}.json", part)
    if svc.progress.complete_item(item.job_id, item.item_id, {}):
        metrics.add_metric(name="WorkItemsDeadLettered", unit=MetricUnit.Count, value=1)
    job = svc.progress.get(item.job_id) or {}
    if job.get("pending") == 0:
        finalise_job(item.job_id, svc, claimer=item.item_id)


def finalise_job(job_id: str, svc: Services, claimer: str) -> str | None:
    """Merge the parts into the report and send the alert, if this caller wins the claim."""
    if not svc.progress.claim_finalisation(job_id, claimer):
        return None
    planned_doc = svc.reports.get_json(job_id, "job.json")
    parts = list(svc.reports.parts(job_id))
    by_set: dict[str, list[Mapping[str, Any]]] = {}
    for part in parts:
        by_set.setdefault(part["imageSetId"], []).append(part)
    image_sets = [_merge(p, by_set.get(p["imageSetId"], [])) for p in planned_doc["imageSets"]]
    report = report_document(planned_doc["header"], image_sets)
    report["timings"] = {
        "startedAt": planned_doc.get("startedAt"),
        "finishedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "workItems": len(parts),
        "verificationSeconds": round(sum(float(p.get("seconds", 0)) for p in parts), 3),
    }
    uri = svc.reports.put_json(job_id, "report.json", report)
    svc.reports.put_html(job_id, "report.html", render_html(report))
    alert = compose_alert(report, uri, notify_clean=svc.settings.notify_on_clean_jobs)
    record = svc.progress.get(job_id) or {}
    if alert is not None and not record.get("alert_message_id"):
        svc.progress.mark_alert_sent(job_id, svc.alerts.publish(alert))
    svc.progress.mark_finalised(job_id, uri, report["verdict"])
    metrics.add_metric(name="JobsFinalised", unit=MetricUnit.Count, value=1)
    logger.info("job finalised", extra={"verdict": report["verdict"], "report": uri})
    return uri


def _merge(planned: Mapping[str, Any], parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One image set from its parts: frames in metadata order, each once; gaps are reported, not hidden."""
    frames: dict[int, dict[str, Any]] = {}
    errors = sorted({str(p["error"]) for p in parts if p.get("error")})
    total = max((int(p["totalFrames"]) for p in parts), default=0)
    for part in parts:
        for f in part["frames"]:
            frames.setdefault(int(f["index"]), {k: v for k, v in f.items() if k != "index"})
    if not parts:
        errors.append("no work item of this image set completed")
    elif len(frames) != total and not errors:
        errors.append(f"{total - len(frames)} of {total} frames have no recorded result")
    ordered = [frames[i] for i in sorted(frames)]
    return image_set_document(
        planned["imageSetId"],
        planned.get("version"),
        planned.get("isPrimary"),
        ordered,
        error="; ".join(errors) or None,
    )


def reconcile(svc: Services, verify_once: Callable[[dict[str, Any]], dict[str, Any]], limit: int = 100) -> list[str]:
    """Start verification for completed or failed jobs of the data store that were never verified."""
    started: list[str] = []
    paginator = svc.medical_imaging.get_paginator("list_dicom_import_jobs")
    for status in ("COMPLETED", "FAILED"):
        pages = paginator.paginate(datastoreId=svc.settings.datastore_id, jobStatus=status)
        for summary in (s for page in pages for s in page.get("jobSummaries", [])):
            if len(started) >= limit:
                return started
            if svc.progress.get(summary["jobId"]) is None:
                ref = JobRef(svc.settings.datastore_id, summary["jobId"], None, "reconcile", failed=status == "FAILED")
                verify_once(asdict(ref))
                started.append(summary["jobId"])
    return started
