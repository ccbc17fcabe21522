"""Trigger: an announced import job -> its plan stored and one work item per image set queued.

Announcements come from the S3 manifest notification, EventBridge (Object Created, Import Job
Completed/Failed) and the reconciliation schedule (``events``). A job is planned once: a conditional job
record in the progress table, plus Powertools idempotency in the handler. Decodes nothing, so the trigger
function ships without the codecs layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..alert import compose_manifest_changed, compose_open_job, compose_unreadable
from ..job_output import ManifestError
from ..locations import job_folder
from ..plan import JobPlan, failed_job_plan, plan_job
from ..ports import ImportJob, ImportJobError, JobOutputError
from ..report import ImportFindings, JobHeader, iso_time
from .audit_run import audit_plan, change_plan, started_of, walk_audit
from .events import AuditRequest, ImageSetChange, JobRef, Reconcile, parse_trigger_event
from .finaliser import finalise_job, send_kept_alert
from .observability import logger, metrics
from .progress import JobState
from .wiring import Services

VerifyOnce = Callable[[dict[str, Any]], dict[str, Any]]
""":func:`start_job` behind the handler's idempotency, taking a :class:`JobRef` as a dict."""


def handle_trigger(
    event: Mapping[str, Any],
    svc: Services,
    verify_once: VerifyOnce,
    remaining_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Turn a trigger event into verification runs.

    Audit requests and image set events are not behind the handler's idempotency: a killed walk must resume
    when Lambda retries the same event, and both are idempotent through the progress table (the run's or the
    version's job record, and the markers of what was queued).
    """
    parsed = parse_trigger_event(event)
    if isinstance(parsed, Reconcile):
        return {"reconciled": reconcile(svc, verify_once)}
    if isinstance(parsed, AuditRequest):
        logger.set_correlation_id(parsed.run_id)
        logger.append_keys(job_id=parsed.run_id, origin=parsed.origin)
        listing, again = svc.listing, svc.audit_requests
        if listing is None or again is None:
            raise RuntimeError("this deployment has no data store listing wired for audits")
        return {"audit": {parsed.run_id: walk_audit(parsed, svc, listing, continue_run=again, remaining_s=remaining_s)}}
    if isinstance(parsed, ImageSetChange):
        return {"imageSet": start_image_set_change(parsed, str(event.get("id", "")), svc)}
    outcomes = {}
    for ref in parsed:
        logger.set_correlation_id(ref.job_id)
        logger.append_keys(job_id=ref.job_id, datastore_id=ref.datastore_id, origin=ref.origin)
        outcomes[ref.job_id] = verify_once(asdict(ref))
    return {"jobs": outcomes}


def start_job(ref: JobRef, svc: Services) -> dict[str, Any]:
    """Plan an announced job and queue its work items."""
    settings = svc.settings
    if ref.datastore_id != settings.datastore_id:
        logger.warning("job belongs to another data store; not verified by this deployment")
        return {"outcome": "skipped", "reason": "other data store"}
    folder, failure = ref.folder_uri, None
    described = _described(ref, svc)
    if described is not None:
        if described.status == "FAILED":
            failure = described.message or "the import job failed without a message"
        elif described.status != "COMPLETED":
            # A manifest of a job still running is read again when its Completed event or the reconciliation
            # comes: verifying it now would let a manifest written before the genuine one stand for the job.
            logger.warning("job is not COMPLETED yet; verified when it is", extra={"job_status": described.status})
            return {"outcome": "skipped", "reason": f"job is {described.status}"}
        folder = folder or described.output_folder_uri
    assert folder is not None  # _described raises when neither the event nor the service names a folder
    location = job_folder(folder)
    started_at = iso_time(svc.clock())
    if failure is not None:
        plan = failed_job_plan(ref.datastore_id, ref.job_id, location, failure, started_at)
    else:
        plan = plan_job(
            svc.reader,
            location,
            started_at=started_at,
            manifest_wait_s=settings.manifest_wait_s,
            with_sources=settings.source_bucket is not None,
            expected_ids=(ref.datastore_id, ref.job_id),
            jobs=svc.jobs,
        )
    return _queue(plan, svc)


def start_image_set_change(change: ImageSetChange, event_id: str, svc: Services) -> dict[str, Any]:
    """Verify the new version an image set event announces, as a job of one image set (idempotent on the image
    set and version); report a failed copy or update; say so for an image set already deleted."""
    if change.datastore_id != svc.settings.datastore_id:
        logger.warning("image set event of another data store; not verified by this deployment")
        return {"outcome": "skipped", "reason": "other data store"}
    if change.detail_type == "Image Set Created":
        # Image sets are created by imports, and the import job's verification covers their first version;
        # one created another way is covered by the next audit run.
        return {"outcome": "skipped", "reason": "created by an import: verified with its job"}
    if svc.listing is None:
        raise RuntimeError("this deployment has no GetImageSet wired for image set events")
    plan = change_plan(change, svc.listing, event_id, iso_time(svc.clock()))
    logger.set_correlation_id(plan.job.job_id)
    logger.append_keys(job_id=plan.job.job_id, image_set_id=change.image_set_id, origin="image-set-event")
    return _queue(plan, svc, indexed=True)


def _described(ref: JobRef, svc: Services) -> ImportJob | None:
    """GetDICOMImportJob for every announced job; None when the service does not know it (the plan then
    records that as a discrepancy). An unknown job without a folder to read cannot be verified at all."""
    try:
        return svc.jobs.describe(ref.datastore_id, ref.job_id)
    except ImportJobError as exc:
        if not exc.not_found or ref.folder_uri is None:
            raise
        return None


def _queue(plan: JobPlan, svc: Services, *, indexed: bool = False) -> dict[str, Any]:
    """Record the job, store its plan and send its work items (resuming a queueing that was interrupted);
    ``indexed`` for a job the reconciliation cannot list through ListDICOMImportJobs (a new image set version)."""
    job = plan.job
    items = plan.work_items()
    manifest = plan.evidence[0].sha256 if plan.evidence else None
    created = svc.progress.create(
        job.job_id, job.datastore_id, job.folder, pending=len(items), manifest_sha256=manifest, indexed=indexed
    )
    if not created:
        existing = svc.progress.get(job.job_id) or {}
        planned = existing.get("manifest_sha256")
        if manifest and planned and manifest != planned:
            return _manifest_changed(plan, str(planned), manifest, svc)
        if existing.get("state") != JobState.PLANNING:
            return {"outcome": "duplicate", "state": existing.get("state")}
        logger.info("resuming a job whose queueing was interrupted")
    svc.reports.put_plan(plan)
    svc.queue.send(items)
    svc.progress.advance(job.job_id, JobState.PLANNING, JobState.RUNNING)
    metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ImageSetsQueued", unit=MetricUnit.Count, value=len(items))
    if not items:
        finalise_job(job.job_id, svc, claimer="trigger")
    return {"outcome": "queued", "imageSets": len(items)}


def _manifest_changed(plan: JobPlan, planned: str, now: str, svc: Services) -> dict[str, Any]:
    """A known job whose manifest now has other content: one alert per new content, nothing re-planned."""
    job = plan.job
    logger.warning("the manifest of a planned job changed", extra={"planned": planned, "now": now})
    if svc.progress.record_changed_manifest(job.job_id, now):
        uri = svc.reports.uri(job.job_id, "report.json")
        where = svc.settings.deployment
        svc.alerts.publish(compose_manifest_changed(job.job_id, job.datastore_id, planned, now, uri, deployment=where))
        metrics.add_metric(name="ManifestsChanged", unit=MetricUnit.Count, value=1)
    return {"outcome": "manifest-changed", "plannedSha256": planned, "sha256": now}


def reconcile(svc: Services, verify_once: VerifyOnce, limit: int = 100) -> list[str]:
    """Sweep the data store's completed and failed import jobs: start those never verified (at most
    ``limit``), and finish those the application left unfinished.

    Each job is handled on its own, so one bad job cannot stop the sweep: a job whose output cannot be read
    (a malformed or missing manifest, an unreadable ndjson file) is recorded as unreadable and alerted once,
    and later sweeps pass it by; any other failure (throttling, say) is logged and the job tried again on
    the next sweep. A known job is looked after (:func:`look_after`). The age of the oldest job still open
    is published as the metric ``OldestOpenJobAge``. Returns the jobs started.
    """
    started: list[str] = []
    datastore_id = svc.settings.datastore_id
    now = svc.clock()
    # age, job, pending of the oldest job found open; the oldest still open after the sweep, if overdue
    oldest: tuple[float, str, int]
    overdue: tuple[float, str, int] | None
    oldest, overdue = _sweep_open_runs(svc, now)
    for status in ("COMPLETED", "FAILED"):
        for job_id in svc.jobs.job_ids(datastore_id, status):
            record = svc.progress.get(job_id)
            try:
                if record is not None:
                    opened = (now - int(record.get("created_at", now)), job_id, int(record.get("pending", 0)))
                    was_open = record.get("state") in OPEN_STATES
                    oldest = max(oldest, opened) if was_open else oldest
                    still_open = look_after(job_id, record, svc, verify_once) in OPEN_STATES
                    if still_open and opened[0] > svc.settings.job_deadline_s / 2:
                        overdue = max(overdue or opened, opened)
                    continue
                if len(started) >= limit:
                    continue  # started on a later sweep; the known jobs are still looked after
                verify_once(asdict(JobRef(datastore_id, job_id, None, "reconcile", failed=status == "FAILED")))
            except (JobOutputError, ManifestError) as exc:
                if record is None:
                    _record_unreadable(datastore_id, job_id, exc, svc)
                continue
            except Exception:  # the next job must still be swept; this one is tried again next time
                logger.exception("reconciliation could not handle a job; it is tried again on the next sweep")
                continue
            started.append(job_id)
    # Measured before the sweep acted: a job finished at its deadline drives the alarm once, by this value.
    metrics.add_metric(name="OldestOpenJobAge", unit=MetricUnit.Seconds, value=round(oldest[0]))
    if overdue is not None:
        age, job_id, pending = overdue
        deadline, where = svc.settings.job_deadline_s, svc.settings.deployment
        svc.ops.publish(
            compose_open_job(job_id, datastore_id, open_s=age, pending=pending, deadline_s=deadline, deployment=where)
        )
    return started


OPEN_STATES = (JobState.PLANNING, JobState.RUNNING, JobState.FINALISING)
PLANNING_STALE_S = 900
"""A job still ``planning`` this long after it was recorded lost its trigger (the function's timeout):
the sweep plans it again, which resumes the queueing where it stopped."""


def _sweep_open_runs(svc: Services, now: float) -> tuple[tuple[float, str, int], tuple[float, str, int] | None]:
    """Look after the indexed runs (audit runs, new-version jobs), which ListDICOMImportJobs does not list;
    return the oldest found open and the oldest still open and overdue, as :func:`reconcile` counts them."""
    oldest: tuple[float, str, int] = (0.0, "", 0)
    overdue: tuple[float, str, int] | None = None
    for run_id in svc.progress.open_runs():
        try:
            found = _look_after_run(run_id, svc, now)
        except Exception:  # the next run and the import jobs must still be swept; this one is tried again
            logger.exception("reconciliation could not handle an open run; it is tried again on the next sweep")
            continue
        if found is not None:
            opened, still_open = found
            oldest = max(oldest, opened)
            if still_open and opened[0] > svc.settings.job_deadline_s / 2:
                overdue = max(overdue or opened, opened)
    return oldest, overdue


def _look_after_run(run_id: str, svc: Services, now: float) -> tuple[tuple[float, str, int], bool] | None:
    """Look after one indexed run (an audit run or a new-version job) like an import job; return its
    ``(age, id, pending)`` and whether it is still open, or None when it was not open.

    A run done with no alert due leaves the index. A run indexed without a record cannot happen (both are
    written in one transaction) but is dropped from the index rather than looked at on every sweep.
    """
    record = svc.progress.get(run_id) or {}
    if record.get("state") not in OPEN_STATES:
        if _alert_due(record):
            look_after(run_id, record, svc, _never_planned)  # done, its alert kept: sent again
            record = svc.progress.get(run_id) or {}
        if not _alert_due(record):
            svc.progress.close_run(run_id)
        return None
    age = now - int(record.get("created_at", now))
    opened = (age, run_id, int(record.get("pending", 0)))
    if record.get("state") == JobState.PLANNING:
        if age <= svc.settings.job_deadline_s:
            # A walk of a large data store plans for hours, checkpointing every page: only a walk silent
            # for longer than any invocation runs has died (its created_at says nothing about that).
            last = svc.progress.walk_saved_at(run_id) or int(record.get("created_at", now))
            if now - last > PLANNING_STALE_S:
                logger.warning("run stayed in planning; planned again", extra={"job_id": run_id})
                _plan_run_again(run_id, svc)
            after = svc.progress.get(run_id) or {}
            return opened, after.get("state") in OPEN_STATES
        # Asked for again sweep after sweep and still not planned by its deadline: finished as a job running
        # past it (nothing pending any more, the report says why), so the run ends in a report all the same.
        svc.progress.advance(run_id, JobState.PLANNING, JobState.RUNNING)
        record = svc.progress.get(run_id) or record
    _ensure_plan(run_id, record, svc)
    state = look_after(run_id, record, svc, _never_planned)
    if state == JobState.DONE and not _alert_due(svc.progress.get(run_id) or {}):
        svc.progress.close_run(run_id)
    return opened, state in OPEN_STATES


def _alert_due(record: dict[str, Any]) -> bool:
    """A done job whose kept alert was not published yet."""
    return bool(record.get("alert_due") and not record.get("alert_message_id"))


def _never_planned(job: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - a planning run never reaches it
    raise AssertionError("an indexed run is planned again by its own rule, never as an import job")


def _ensure_plan(run_id: str, record: dict[str, Any], svc: Services) -> str | None:
    """Store the plan of a run whose function died before it stored one, so it can be finalised; return why
    it was missing, or None when the plan was there.

    An audit run's plan follows from its ID (the same on every resume). A new-version job's image set and
    version are known only to its event: its plan names no image set and says why (UNVERIFIED)."""
    if svc.reports.find_plan(run_id) is not None:
        return None
    datastore_id = str(record.get("datastore_id", svc.settings.datastore_id))
    if run_id.startswith("audit"):
        svc.reports.put_plan(audit_plan(datastore_id, run_id, iso_time(started_of(run_id, svc.clock()))))
        return "the audit walk died before its plan was stored"
    header = JobHeader(run_id, datastore_id, str(record.get("folder", f"healthimaging://{datastore_id}/")))
    why = "the image set event's verification died before it was planned: the new version is not verified"
    svc.reports.put_plan(JobPlan(header, ImportFindings(), (), (), iso_time(svc.clock()), discrepancies=(why,)))
    return why


def _plan_run_again(run_id: str, svc: Services) -> None:
    """A run still ``planning`` past :data:`PLANNING_STALE_S`: its walk or queueing died on every attempt.

    An audit run's walk is asked for again (the ``Audit Requested`` event with its run ID): it resumes from its
    checkpoint. A new-version job's stored plan is queued again (the worker counts each work item once); one
    whose plan was never stored gets the plan of what is known, no image set, and is finished as UNVERIFIED.
    """
    if run_id.startswith("audit"):
        if svc.audit_requests is None:
            raise RuntimeError("this deployment has no audit requests wired to resume an audit walk")
        svc.audit_requests(run_id)
        return
    plan = svc.reports.find_plan(run_id)
    if plan is None:  # the trigger died between the job record and its plan, on every attempt
        record = svc.progress.get(run_id) or {}
        why = _ensure_plan(run_id, record, svc)
        svc.progress.abandon(run_id, why or "the new version is not verified")
        svc.progress.advance(run_id, JobState.PLANNING, JobState.RUNNING)
        finalise_job(run_id, svc, claimer="reconcile")
        return
    svc.queue.send(plan.work_items())
    svc.progress.advance(run_id, JobState.PLANNING, JobState.RUNNING)
    if not plan.work_items():
        finalise_job(run_id, svc, claimer="reconcile")


def look_after(job_id: str, record: dict[str, Any], svc: Services, verify_once: VerifyOnce) -> str:
    """Move a known job on if the application left it behind; return its state afterwards.

    - ``done`` with its alert still due (SNS refused it): the kept alert is sent again.
    - ``planning`` for longer than :data:`PLANNING_STALE_S`: planned again (its queueing resumes).
    - ``finalising``: finalised again, which takes over only a claim older than any function can run.
    - ``running`` past the job deadline: abandoned (nothing pending any more; the work items that never
      completed are reported as not verified, and the report says why), then finalised.
    """
    state = str(record.get("state"))
    age = svc.clock() - int(record.get("created_at", svc.clock()))
    if state not in (JobState.DONE, *OPEN_STATES):
        return state  # unreadable: recorded and alerted once
    if state == JobState.DONE and record.get("alert_due") and not record.get("alert_message_id"):
        send_kept_alert(job_id, svc)
    elif state == JobState.PLANNING and age > PLANNING_STALE_S:
        logger.warning("job stayed in planning; planned again", extra={"job_id": job_id})
        verify_once(asdict(JobRef(svc.settings.datastore_id, job_id, None, "reconcile")))
    elif state == JobState.FINALISING:
        finalise_job(job_id, svc, claimer="reconcile")
    elif state == JobState.RUNNING and age > svc.settings.job_deadline_s:
        why = (
            f"the job was still open {age / 3600:.1f} h after it was planned (deadline "
            f"{svc.settings.job_deadline_s / 3600:g} h): {record.get('pending')} work item(s) had not completed; "
            "the reconciliation finished the job and reports their frames as not verified"
        )
        abandoned = svc.progress.abandon(job_id, why)
        finalise_job(job_id, svc, claimer="reconcile")
        if abandoned is not None:
            logger.warning("job past its deadline abandoned", extra={"job_id": job_id, "work_items": abandoned})
            metrics.add_metric(name="JobsAbandoned", unit=MetricUnit.Count, value=1)
            settings = svc.settings
            svc.ops.publish(
                compose_open_job(
                    job_id,
                    settings.datastore_id,
                    open_s=age,
                    pending=abandoned,
                    deadline_s=settings.job_deadline_s,
                    deployment=settings.deployment,
                )
            )
    else:
        return state
    after = svc.progress.get(job_id) or {}
    return str(after.get("state", state))


def _record_unreadable(datastore_id: str, job_id: str, exc: Exception, svc: Services) -> None:
    error_type = type(exc).__name__  # the message names objects of the output folder: kept out of the alert
    logger.warning("import job output unreadable; recorded", extra={"job_id": job_id, "error_type": error_type})
    if svc.progress.record_unreadable(job_id, datastore_id, error_type):
        svc.alerts.publish(compose_unreadable(job_id, datastore_id, error_type, deployment=svc.settings.deployment))
        metrics.add_metric(name="JobsUnreadable", unit=MetricUnit.Count, value=1)
