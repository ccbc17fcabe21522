"""Audit runs and new image set versions: the data store walked in chunks, and each image set event's version.

An audit run is a job of the progress table whose ID names the run (``audit<UTC time>``, from the request's
``time`` or its ``detail.runId``), with a plan of no image sets (:attr:`~ahi_verify.plan.JobPlan.listed`: the
report's image sets are those its parts name) so the walk keeps constant memory whatever the data store holds.

The walk lists SearchImageSets sorted by ``createdAt`` ascending (``healthimaging.HealthImagingListing``) and,
for each image set, counts it pending once per run (``QUEUED#<imageSetId>``, conditional) before its work item is
sent, then marks it sent. After every page it checkpoints the cursor (``CURSOR``): the last ``createdAt`` queued
and the image sets queued at exactly that instant. A walk that resumes (a killed invocation retried by Lambda, a
chunk that ran out of time, a redelivered request) lists again from that ``createdAt`` (a BETWEEN filter, which
does not depend on a ``nextToken`` that may have expired) and skips the image sets of that instant already
queued; the markers catch anything else, so every image set gets one work item per run. The run's record holds
one pending count for the walk itself until the listing ends, so the run cannot be finalised while it walks.

A chunk stops after :data:`CHUNK_IMAGE_SETS` image sets or when less than :data:`CHUNK_RESERVE_S` of the
invocation is left, whichever comes first, and asks for the next chunk with the same ``Audit Requested`` event
(``detail.runId``): each chunk ends well inside the 15 minutes of a Lambda invocation.

Audit work items go to the audit queue, which the worker consumes with a lower MaximumConcurrency than the work
queue: the budget board shares the deployment's request rate among the workers running, so audit workers hold
at most that many shares and import verification the rest (see the README, "Audits and new versions").
"""

from __future__ import annotations

import calendar
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from ..ids import is_job_id
from ..plan import JobPlan, PlannedImageSet
from ..ports import ImageSetListing, ListedImageSet
from ..report import ImportFindings, JobHeader, iso_time
from ..work_items import WorkItem
from .events import AuditRequest, ImageSetChange
from .finaliser import finalise_if_done
from .observability import logger, metrics
from .progress import JobState
from .wiring import Services

CHUNK_IMAGE_SETS = 20_000
"""Image sets one invocation queues at most (about three DynamoDB writes and a tenth of an SQS batch each:
a few minutes), so a chunk ends well inside the 15-minute Lambda timeout even when the clock check is late."""
CHUNK_RESERVE_S = 300.0
"""A chunk stops when less than this is left of the invocation (a share of it for short local timeouts)."""
CHUNK_RESERVE_SHARE = 0.3
PAGE = 50
"""Image sets queued and checkpointed together (SearchImageSets' page size)."""
SQS_BATCH = 10
"""SendMessageBatch's limit: work items sent, then marked sent, together."""

RemainingSeconds = Callable[[], float]


class VersionListing(ImageSetListing, Protocol):
    """The listing, and GetImageSet's current version (``healthimaging.HealthImagingListing``)."""

    def latest_version(self, datastore_id: str, image_set_id: str) -> int | None:
        """The current version, or None when the image set is gone."""
        ...


def audit_plan(datastore_id: str, run_id: str, started_at: str) -> JobPlan:
    """The plan of an audit run: the job header of the audit report model, and no image sets (listed)."""
    header = JobHeader(job_id=run_id, datastore_id=datastore_id, folder=f"healthimaging://{datastore_id}/")
    note = (
        f"data store audit of {datastore_id}: every image set that SearchImageSets lists, each at its version "
        "when listed"
    )
    return JobPlan(header, ImportFindings(), (note,), (), started_at, listed=True)


def started_of(run_id: str, fallback: float) -> float:
    """The start time a run ID names (``audit%Y%m%dt%H%M%Sz``), for a plan that is the same on every resume."""
    try:
        return float(calendar.timegm(time.strptime(run_id.removeprefix("audit"), "%Y%m%dt%H%M%Sz")))
    except ValueError:
        return fallback


def walk_audit(
    request: AuditRequest,
    svc: Services,
    listing: ImageSetListing,
    *,
    continue_run: Callable[[str], None],
    remaining_s: RemainingSeconds | None = None,
    chunk_image_sets: int = CHUNK_IMAGE_SETS,
) -> dict[str, Any]:
    """Walk (or resume walking) one audit run's listing for at most one chunk.

    Parameters
    ----------
    request : AuditRequest
    svc : Services
    listing : ImageSetListing
        SearchImageSets, sorted by ``createdAt`` ascending, with ``created_at`` on each image set.
    continue_run : callable
        Asks for the next chunk of the run (puts the ``Audit Requested`` event with ``detail.runId``).
    remaining_s : callable, optional
        Seconds left in the invocation; without it only ``chunk_image_sets`` bounds a chunk.
    chunk_image_sets : int
        Image sets queued at most by this chunk.

    Returns
    -------
    dict
        ``outcome`` (``walking``: another chunk was asked for; ``walked``: the listing ended; ``duplicate``: the
        run had already been walked) and ``queued``, the work items this chunk sent.

    Raises
    ------
    ImageSetListError
        A page cannot be read: the invocation fails, and its retry resumes from the checkpoint.
    """
    settings = svc.settings
    run_id, datastore_id = request.run_id, settings.datastore_id
    plan = audit_plan(datastore_id, run_id, iso_time(started_of(run_id, svc.clock())))
    if not svc.progress.create(run_id, datastore_id, plan.job.folder, pending=1, indexed=True):
        record = svc.progress.get(run_id) or {}
        if record.get("state") != JobState.PLANNING:
            return {"outcome": "duplicate", "state": record.get("state"), "queued": 0}
        logger.info("resuming an audit walk", extra={"run_id": run_id})
    svc.reports.put_plan(plan)
    at, ids_at, walked = svc.progress.cursor(run_id)
    if walked:
        return _walked(run_id, svc, queued=0)
    reserve = None
    if remaining_s is not None:
        reserve = min(CHUNK_RESERVE_S, remaining_s() * CHUNK_RESERVE_SHARE)
    seen_at = set(ids_at)
    queued = 0
    page: list[ListedImageSet] = []
    queue = svc.audit_queue or svc.queue
    # From a millisecond before the cursor: the filter's datetime rounds to microseconds, and what lies before
    # the cursor is skipped below.
    for listed in listing.image_sets(datastore_id, created_after=None if at is None else at - 0.001):
        created = listed.created_at
        if (
            at is not None
            and created is not None
            and (created < at or (created == at and listed.image_set_id in seen_at))
        ):
            continue  # queued before the checkpoint
        page.append(listed)
        if len(page) < PAGE:
            continue
        queued += _queue_page(run_id, page, svc, queue)
        at, seen_at = _advance(at, seen_at, page)
        if at is not None:  # a listing without createdAt cannot be checkpointed: the markers alone dedupe
            svc.progress.checkpoint(run_id, at, sorted(seen_at))
        page = []
        out_of_time = reserve is not None and remaining_s is not None and remaining_s() < reserve
        if queued >= chunk_image_sets or out_of_time:
            continue_run(run_id)
            logger.info("audit chunk done; the next one is asked for", extra={"run_id": run_id, "queued": queued})
            metrics.add_metric(name="AuditImageSetsQueued", unit=MetricUnit.Count, value=queued)
            return {"outcome": "walking", "queued": queued}
    if page:
        queued += _queue_page(run_id, page, svc, queue)
        at, seen_at = _advance(at, seen_at, page)
        if at is not None:
            svc.progress.checkpoint(run_id, at, sorted(seen_at))
    metrics.add_metric(name="AuditImageSetsQueued", unit=MetricUnit.Count, value=queued)
    return _walked(run_id, svc, queued)


def _advance(at: float | None, seen_at: set[str], page: list[ListedImageSet]) -> tuple[float | None, set[str]]:
    """The cursor after a page: the latest ``createdAt`` and the image sets queued at exactly that instant."""
    for listed in page:
        created = listed.created_at
        if created is None:
            continue
        if at is None or created > at:
            at, seen_at = created, {listed.image_set_id}
        elif created == at:
            seen_at.add(listed.image_set_id)
    return at, seen_at


def _queue_page(run_id: str, page: list[ListedImageSet], svc: Services, queue: Any) -> int:
    """Count and send the page's image sets not sent yet in this run; return how many were sent."""
    datastore_id = svc.settings.datastore_id
    items = []
    for listed in page:
        counted = svc.progress.record_queued(run_id, listed.image_set_id)
        if not counted and svc.progress.was_sent(run_id, listed.image_set_id):
            continue  # an earlier chunk or delivery sent it
        items.append(WorkItem(run_id, datastore_id, listed.image_set_id, listed.version))
    # Marked sent after each SQS batch: a walk killed between a batch and its marks sends at most that batch's
    # 10 again when it resumes (the worker counts each image set once: its ITEM# marker and conditional part).
    for start in range(0, len(items), SQS_BATCH):
        batch = items[start : start + SQS_BATCH]
        queue.send(batch)
        for item in batch:
            svc.progress.mark_queued(run_id, f"QUEUED#{item.image_set_id}")
    return len(items)


def _walked(run_id: str, svc: Services, queued: int) -> dict[str, Any]:
    """The listing ended: the walk's own pending count goes, the run runs, and ends if nothing is pending."""
    svc.progress.end_walk(run_id)
    svc.progress.advance(run_id, JobState.PLANNING, JobState.RUNNING)
    finalise_if_done(run_id, svc, claimer="audit-walk")
    logger.info("audit walk done", extra={"run_id": run_id, "queued": queued})
    return {"outcome": "walked", "queued": queued}


# ------------------------------------------------------------------------------------ new image set versions

DELETED_BEFORE = (
    "image set {id} was deleted before its verification ran (GetImageSet: not found): nothing left to verify"
)


def change_job_id(image_set_id: str, key: str) -> str:
    """A deterministic job ID (``[0-9a-z]{1,32}``) for one image set event: ``v`` and a digest of the image
    set and ``key`` (its version, or the event's ID for a failure), so a redelivered event is the same job."""
    job_id = "v" + hashlib.sha256(f"{image_set_id}/{key}".encode()).hexdigest()[:31]
    assert is_job_id(job_id)
    return job_id


def change_plan(change: ImageSetChange, listing: VersionListing, event_id: str, started_at: str) -> JobPlan:
    """The one-image-set job an image set event announces: its new version (the event's, else GetImageSet's),
    a failed copy or update (UNVERIFIED, nothing verified), or an image set already deleted (nothing to verify,
    said so: not an error)."""
    datastore_id, image_set_id = change.datastore_id, change.image_set_id
    folder = f"healthimaging://{datastore_id}/"
    if change.failed_operation is not None:
        header = JobHeader(change_job_id(image_set_id, f"failed-{event_id}"), datastore_id, folder)
        why = (
            f"{change.failed_operation} failed for image set {image_set_id} ({change.detail_type} event): "
            "the change it made, if any, is not verified"
        )
        return JobPlan(header, ImportFindings(), (), (), started_at, discrepancies=(why,))
    version = change.version or listing.latest_version(datastore_id, image_set_id)
    if version is None:
        header = JobHeader(change_job_id(image_set_id, f"deleted-{event_id}"), datastore_id, folder)
        return JobPlan(header, ImportFindings(), (DELETED_BEFORE.format(id=image_set_id),), (), started_at)
    header = JobHeader(change_job_id(image_set_id, str(version)), datastore_id, folder)
    note = f"version {version} of image set {image_set_id}, announced by an {change.detail_type} event"
    return JobPlan(header, ImportFindings(), (note,), (PlannedImageSet(image_set_id, version, None),), started_at)
