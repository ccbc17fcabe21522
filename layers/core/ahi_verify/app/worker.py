"""Worker: one work item -> its part stored and counted once; the job finalised if it was the last.

An image set larger than ``FRAMES_PER_WORK_ITEM`` frames is split on its first delivery: this worker keeps
the first range and queues the rest (the progress table counts the extra items once, whatever is
redelivered). A worker that nears its deadline stops fetching, keeps the frames it reached and hands the
rest on as a new work item, so throttling or a slow service make a job slower, never a dead letter. A work
item that fails on its last delivery is recorded as not verified (``delivery.record_not_verified``), so its
job still ends in a report. Every delivery first finds the item it stands for (``delivery``), so a
redelivered message can never count a frame twice or end a job early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..audit import DELETED
from ..image_set import Stop, VerifyOptions
from ..outcomes import Reason, Status
from ..ports import ImageSetListError
from ..report import Part
from ..work import list_frames, source_inputs, unreached, verify_frames
from ..work_items import WorkItem, WorkItemError, frame_ranges
from .delivery import resolve_delivery
from .finaliser import finalise_if_done
from .observability import logger, metrics
from .wiring import Services

HANDBACK_RESERVE_S = 120.0
"""Seconds kept back at the end of an invocation: the frames in flight finish (a throttled GetImageFrame
backs off for seconds), the source files are compared, the part is written and counted, and the job may
be finalised. A worker stops starting fetches when less than this remains."""
HANDBACK_RESERVE_SHARE = 0.25
"""For short timeouts (local runs), at most this share of the time the item started with is kept back."""

RemainingSeconds = Callable[[], float]


def verify_options(svc: Services) -> VerifyOptions:
    """How hard one worker drives the service and its CPUs."""
    settings = svc.settings
    if svc.budget is None:
        return VerifyOptions(memory_budget_bytes=settings.memory_budget_bytes)
    return VerifyOptions.budgeted(svc.budget, memory_budget_bytes=settings.memory_budget_bytes)


@contextmanager
def budget_claimed(svc: Services) -> Iterator[None]:
    """Hold this worker's share of the deployment's request-rate budget while an invocation runs (a claim on
    the board, renewed every second, withdrawn at the end), and publish the 429s it met: throttling is a
    signal (metric ``RequestsThrottled``, alarmed), not a failure."""
    budget = svc.budget
    if budget is None:
        yield
        return
    sent_before, throttled_before = budget.counters()
    failures_before = budget.refresh_failures
    try:
        with budget.running():
            yield
    finally:
        sent, throttled = budget.counters()
        metrics.add_metric(name="RequestsSent", unit=MetricUnit.Count, value=sent - sent_before)
        metrics.add_metric(name="RequestsThrottled", unit=MetricUnit.Count, value=throttled - throttled_before)
        failed = budget.refresh_failures - failures_before
        if failed:
            metrics.add_metric(name="BudgetBoardUnreachable", unit=MetricUnit.Count, value=failed)


def process_work_item(
    item: WorkItem, svc: Services, options: VerifyOptions, remaining_s: RemainingSeconds | None = None
) -> dict[str, Any]:
    """Verify one work item, record it, and finalise the job if it was the last.

    Parameters
    ----------
    item : WorkItem
    svc : Services
    options : VerifyOptions
    remaining_s : callable, optional
        Seconds left in this invocation (``context.get_remaining_time_in_millis() / 1000``); without it the
        item is checked to its end.

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
    effective = resolve_delivery(item, svc)
    current = effective.item
    if svc.progress.item_done(item.job_id, current.item_id):
        logger.info("work item already counted; not verified again")
        finalise_if_done(item.job_id, svc, claimer=current.item_id)
        return {"itemId": current.item_id, "outcome": "already-done"}
    listing = list_frames(svc.frames, current)
    if current.frames is None and len(listing.frames) > settings.frames_per_work_item:
        first, *rest = frame_ranges(len(listing.frames), settings.frames_per_work_item)
        extra = [current.with_frames(start, end) for start, end in rest]
        svc.progress.record_split(
            item.job_id, item.image_set_id, len(extra), len(listing.frames), settings.frames_per_work_item
        )
        svc.queue_for(item.job_id).send(extra)
        svc.progress.mark_queued(item.job_id, f"SPLIT#{item.image_set_id}")
        current = current.with_frames(*first)
        logger.info("image set split into work items", extra={"work_items": len(rest) + 1})
    sources = None
    if settings.source_bucket is not None:
        plan = svc.reports.get_plan(item.job_id)
        sources = source_inputs(plan, item.image_set_id, svc.reader, readable_bucket=settings.source_bucket)
    stop = None if effective.upto is not None or remaining_s is None else _deadline(remaining_s)
    part = verify_frames(svc.frames, current, listing, options, sources=sources, stop=stop, upto=effective.upto)
    rest_item = unreached(current, part)
    if rest_item is not None and effective.upto is None:
        _hand_back(current, part, rest_item, svc)
    part = _deleted_since_queued(part, svc)
    part = svc.reports.put_part(item.job_id, part)  # a concurrent delivery's part, if it was written first
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


def _deleted_since_queued(part: Part, svc: Services) -> Part:
    """A part whose metadata or frames were not found: when GetImageSet says the image set is gone, the part
    says it was deleted (not verified, and never read as damage); otherwise it stands as it is."""
    missing = part.error is not None or any(
        f.status is Status.ERROR and f.reason is Reason.FRAME_NOT_FOUND for f in part.frames
    )
    if not missing or svc.listing is None:
        return part
    try:
        gone = not svc.listing.exists(svc.settings.datastore_id, part.image_set_id)
    except ImageSetListError:
        return part  # the part's own error stands; whether it was deleted is not known
    if gone:
        logger.info("image set deleted since it was queued", extra={"image_set_id": part.image_set_id})
        return replace(part, error=DELETED)
    return part


def _deadline(remaining_s: RemainingSeconds) -> Stop:
    """Stop starting fetches when what is left of the invocation no longer covers the reserve plus the time
    the fetches in flight need to drain (long when throttling has slowed the client)."""
    reserve = min(HANDBACK_RESERVE_S, remaining_s() * HANDBACK_RESERVE_SHARE)
    return lambda draining_s: remaining_s() < reserve + draining_s


def _hand_back(current: WorkItem, part: Part, rest: WorkItem, svc: Services) -> None:
    """Count and queue the frames the item did not reach, before its part is counted (so ``pending`` never
    reaches zero with frames unqueued)."""
    assert rest.frames is not None
    recorded = svc.progress.record_handback(current.job_id, current.item_id, rest.frames)
    if recorded != rest.frames:
        # A concurrent delivery of the same message stopped elsewhere and was recorded first; this part
        # does not end where that item starts, so it is not counted: the redelivery checks up to that cut.
        raise RuntimeError(f"work item {current.item_id} was handed on at frame {recorded[0]} by another delivery")
    svc.queue_for(current.job_id).send([rest])
    svc.progress.mark_queued(current.job_id, f"HANDBACK#{current.item_id}")
    metrics.add_metric(name="WorkItemsHandedBack", unit=MetricUnit.Count, value=1)
    logger.info(
        "deadline near: frames handed on to a new work item",
        extra={"checked": len(part.frames), "handed_on": rest.frames[1] - rest.frames[0], "next_item": rest.item_id},
    )
