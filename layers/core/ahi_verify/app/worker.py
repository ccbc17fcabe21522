"""Worker: one work item -> its part stored and counted once; the job finalised if it was the last.

An image set larger than ``FRAMES_PER_WORK_ITEM`` frames is split on its first delivery: this worker keeps
the first range and queues the rest (the progress table counts the extra items once, whatever is
redelivered). A work item that fails on its last delivery is recorded as not verified, so its job still
ends in a report.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..image_set import VerifyOptions
from ..report import Part
from ..work import list_frames, source_inputs, verify_frames
from ..work_items import WorkItem, WorkItemError, frame_ranges
from .finaliser import finalise_if_done
from .observability import logger, metrics
from .wiring import Services


def verify_options(svc: Services) -> VerifyOptions:
    """How hard one worker drives the service and its CPUs."""
    settings = svc.settings
    return VerifyOptions(fetch_concurrency=settings.fetch_concurrency, memory_budget_bytes=settings.memory_budget_bytes)


def process_work_item(item: WorkItem, svc: Services, options: VerifyOptions) -> dict[str, Any]:
    """Verify one work item, record it, and finalise the job if it was the last.

    Raises
    ------
    WorkItemError
        The item names another data store or an unknown job: it can never succeed (DLQ).
    """
    settings = svc.settings
    if item.datastore_id != settings.datastore_id:
        raise WorkItemError("work item names another data store")
    if svc.progress.get(item.job_id) is None:
        raise WorkItemError("work item names a job this deployment never queued")
    started = time.perf_counter()
    listing = list_frames(svc.frames, item)
    current = item
    if item.frames is None and len(listing.frames) > settings.frames_per_work_item:
        first, *rest = frame_ranges(len(listing.frames), settings.frames_per_work_item)
        extra = [item.with_frames(start, end) for start, end in rest]
        svc.progress.record_split(item.job_id, item.image_set_id, len(extra))
        svc.queue.send(extra)  # re-sent on redelivery: duplicates are counted once by the ledger
        current = item.with_frames(*first)
        logger.info("image set split into work items", extra={"work_items": len(rest) + 1})
    sources = None
    if settings.source_bucket is not None:
        plan = svc.reports.get_plan(item.job_id)
        sources = source_inputs(plan, item.image_set_id, svc.reader, readable_bucket=settings.source_bucket)
    part = verify_frames(svc.frames, current, listing, options, sources=sources)
    svc.reports.put_part(item.job_id, part)
    counts = part.counts
    if svc.progress.complete_item(item.job_id, part.item_id, counts):
        metrics.add_metric(name="FramesVerified", unit=MetricUnit.Count, value=counts.total)
        metrics.add_metric(name="FramesMismatched", unit=MetricUnit.Count, value=counts.mismatch)
        metrics.add_metric(name="FramesErrored", unit=MetricUnit.Count, value=counts.error)
        metrics.add_metric(name="WorkItemsVerified", unit=MetricUnit.Count, value=1)
        elapsed_ms = (time.perf_counter() - started) * 1000
        metrics.add_metric(name="VerificationLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    finalise_if_done(item.job_id, svc, claimer=part.item_id)
    return {"itemId": part.item_id, **counts.to_json()}


def record_failed_item(item: WorkItem, error: str, attempts: int, svc: Services) -> None:
    """Record a work item that failed on its last delivery as not verified, so the job still completes.

    The message goes on to the DLQ (the caller re-raises); the report names the image set and the error.
    """
    if svc.progress.get(item.job_id) is None:
        return  # not a job of this deployment: nothing to report against
    part = Part(
        item_id=item.item_id,
        image_set_id=item.image_set_id,
        range=item.frames,
        total_frames=0,
        error=f"work item failed on all {attempts} deliveries and was moved to the dead-letter queue: {error}",
        frames=(),
    )
    svc.reports.put_part(item.job_id, part)
    if svc.progress.complete_item(item.job_id, item.item_id, part.counts):
        metrics.add_metric(name="WorkItemsDeadLettered", unit=MetricUnit.Count, value=1)
    finalise_if_done(item.job_id, svc, claimer=item.item_id)
