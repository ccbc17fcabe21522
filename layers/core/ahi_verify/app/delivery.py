"""What a delivered work message stands for, after what earlier deliveries recorded in the progress table.

SQS delivers at least once, and a delivery may die anywhere. So before anything is checked or recorded, a
message is resolved against the ledger: a whole-set message whose image set was split stands for the
first range (the others were queued; they are queued here only if the split's delivery died before it
could); an item that handed frames on stands for the frames before the cut; an item already counted
is done. Whatever fails on the second delivery (the metadata, say), a frame is never counted twice and a
job never ends early. Nothing here decodes, so the dead-letter recorder uses it without the codecs layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_lambda_powertools.metrics import MetricUnit

from ..report import Part
from ..work_items import WorkItem, frame_ranges
from .finaliser import finalise_if_done
from .observability import metrics
from .wiring import Services


@dataclass(frozen=True)
class Delivery:
    """The work item a message stands for."""

    item: WorkItem
    upto: int | None = None
    """The item handed the frames from here on to another item before: check only those before."""


def resolve_delivery(item: WorkItem, svc: Services) -> Delivery:
    """The item a delivery stands for; queues again what an interrupted earlier delivery may not have."""
    current = item
    if item.frames is None:
        split = svc.progress.split_of(item.job_id, item.image_set_id)
        if split is not None:
            total, per_item, queued = split
            first, *others = frame_ranges(total, per_item)
            if not queued:  # the delivery that split it died before sending them
                svc.queue.send([item.with_frames(start, end) for start, end in others])
                svc.progress.mark_queued(item.job_id, f"SPLIT#{item.image_set_id}")
            current = item.with_frames(*first)
    handed_on = svc.progress.handed_back(item.job_id, current.item_id)
    if handed_on is None:
        return Delivery(current)
    at, end, queued = handed_on
    if not queued:
        svc.queue.send([current.with_frames(at, end)])
        svc.progress.mark_queued(item.job_id, f"HANDBACK#{current.item_id}")
    return Delivery(current, upto=at)


def record_not_verified(item: WorkItem, error: str, svc: Services) -> bool:
    """Record a work item that will never be verified (failed on its last delivery, or dead-lettered) as not
    verified, so the job still completes; False when there was nothing to record (not a job of this
    deployment, or the item was already counted).

    The report names the image set and the error, and lists none of the item's frames as checked.
    """
    if svc.progress.get(item.job_id) is None:
        return False  # not a job of this deployment: nothing to report against
    current = resolve_delivery(item, svc).item
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
    standing = svc.reports.put_part(item.job_id, part)  # a part already written (then not counted) stands
    recorded = svc.progress.complete_item(item.job_id, current.item_id, standing.counts)
    if recorded:
        metrics.add_metric(name="WorkItemsNotVerified", unit=MetricUnit.Count, value=1)
    finalise_if_done(item.job_id, svc, claimer=current.item_id)
    return recorded
