"""Worker: one work item -> its part stored and counted once; the job finalised if it was the last.

An image set larger than ``FRAMES_PER_WORK_ITEM`` frames is split on its first delivery: this worker keeps
the first range and queues the rest (the progress table counts the extra items once, whatever is
redelivered). A worker that nears its deadline stops fetching, keeps the frames it reached and hands the
rest on as a new work item, so throttling or a slow service make a job slower, never a dead letter. A work
item that fails on its last delivery is recorded as not verified, so its job still ends in a report.

Every delivery first finds the item it really stands for, from the progress table: a whole-set message
whose image set was split stands for the first range; an item that handed frames on stands for the frames
before the cut; an item already counted is not verified again. So a redelivered message, whatever failed
the second time, can never count a frame twice or end a job early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ..image_set import VerifyOptions
from ..report import Part
from ..work import list_frames, source_inputs, unreached, verify_frames
from ..work_items import WorkItem, WorkItemError, frame_ranges
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
    return VerifyOptions(fetch_concurrency=settings.fetch_concurrency, memory_budget_bytes=settings.memory_budget_bytes)


@dataclass(frozen=True)
class _Effective:
    """What a delivered message stands for, after what earlier deliveries recorded."""

    item: WorkItem
    upto: int | None = None
    """The item handed the frames from here on to another item before: check only those before."""


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
    effective = _resolve(item, svc)
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
        svc.queue.send(extra)  # re-sent on redelivery: duplicates are counted once by the ledger
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


def _resolve(item: WorkItem, svc: Services) -> _Effective:
    """The item a delivery stands for; queues again what an interrupted earlier delivery may not have."""
    current = item
    if item.frames is None:
        split = svc.progress.split_of(item.job_id, item.image_set_id)
        if split is not None:
            first, *rest = frame_ranges(*split)
            svc.queue.send([item.with_frames(start, end) for start, end in rest])
            current = item.with_frames(*first)
    at = svc.progress.handed_back_at(item.job_id, current.item_id)
    if at is None:
        return _Effective(current)
    end = current.frames[1] if current.frames is not None else None
    if end is not None and at < end:
        svc.queue.send([current.with_frames(at, end)])
    return _Effective(current, upto=at)


def _deadline(remaining_s: RemainingSeconds) -> Callable[[], bool]:
    reserve = min(HANDBACK_RESERVE_S, remaining_s() * HANDBACK_RESERVE_SHARE)
    return lambda: remaining_s() < reserve


def _hand_back(current: WorkItem, part: Part, rest: WorkItem, svc: Services) -> None:
    """Count and queue the frames the item did not reach, before its part is counted (so ``pending`` never
    reaches zero with frames unqueued)."""
    assert rest.frames is not None
    at = svc.progress.record_handback(current.job_id, current.item_id, rest.frames[0])
    if at != rest.frames[0]:
        # A concurrent delivery of the same message stopped elsewhere and was recorded first; this part
        # does not end where the new item starts, so it is not counted: the redelivery checks up to ``at``.
        raise RuntimeError(f"work item {current.item_id} was handed on at frame {at} by another delivery")
    svc.queue.send([rest])
    metrics.add_metric(name="WorkItemsHandedBack", unit=MetricUnit.Count, value=1)
    logger.info(
        "deadline near: frames handed on to a new work item",
        extra={"checked": len(part.frames), "handed_on": rest.frames[1] - rest.frames[0], "next_item": rest.item_id},
    )


def record_failed_item(item: WorkItem, error: str, svc: Services) -> bool:
    """Record a work item that will never be verified (failed on its last delivery, or dead-lettered) as not
    verified, so the job still completes; False when there was nothing to record (not a job of this
    deployment, or the item was already counted).

    The report names the image set and the error, and lists none of the item's frames as checked.
    """
    if svc.progress.get(item.job_id) is None:
        return False  # not a job of this deployment: nothing to report against
    current = _resolve(item, svc).item
    if svc.progress.item_done(item.job_id, current.item_id):
        finalise_if_done(item.job_id, svc, claimer=current.item_id)
        return False
    part = Part(
        item_id=current.item_id,
        image_set_id=current.image_set_id,
        range=current.frames,
        total_frames=0,
        error=error,
        frames=(),
    )
    svc.reports.put_part(item.job_id, part)
    recorded = svc.progress.complete_item(item.job_id, current.item_id, part.counts)
    if recorded:
        metrics.add_metric(name="WorkItemsNotVerified", unit=MetricUnit.Count, value=1)
    finalise_if_done(item.job_id, svc, claimer=current.item_id)
    return recorded
