"""Dead letters: a work item that reached the dead-letter queue -> recorded as not verified, so its job
still ends in a report.

The worker records an item that *raises* on its last delivery itself (with the error); an item whose
invocations were killed (timeout, out of memory, a crashed runtime) never gets that chance, and only this
consumer of the dead-letter queue sees it. Recording is idempotent with the worker's (the completion
ledger counts an item once), so whichever comes first wins and the other changes nothing.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from ..work_items import WorkItem, WorkItemError
from .delivery import record_not_verified
from .observability import logger, metrics
from .wiring import Services


def record_dead_letter(body: str, svc: Services) -> str:
    """Record one dead-lettered message; return what was done (``recorded``, ``already-counted``,
    ``other-data-store``, ``unknown-job``, ``unattributable``).

    Raises whatever the progress table, S3 or SNS raise, so the message stays in the dead-letter queue and
    is tried again.
    """
    try:
        item = WorkItem.from_json(body)
    except WorkItemError as exc:
        # Not a work item, so no job to report it in: counted and logged (the text names the field that is
        # wrong, never the body), and removed so the queue's alarm means "a job is missing work".
        logger.error("dead-lettered message is not a work item; it belongs to no job", extra={"problem": str(exc)})
        metrics.add_metric(name="DeadLettersUnattributable", unit=MetricUnit.Count, value=1)
        return "unattributable"
    logger.append_keys(job_id=item.job_id, image_set_id=item.image_set_id, item_id=item.item_id)
    if item.datastore_id != svc.settings.datastore_id:
        logger.warning("dead-lettered work item names another data store; not recorded")
        return "other-data-store"
    if svc.progress.get(item.job_id) is None:
        logger.warning("dead-lettered work item names a job this deployment never queued; not recorded")
        return "unknown-job"
    why = (
        f"work item was moved to the dead-letter queue after {svc.settings.work_max_receive_count} deliveries "
        "that failed or ran out of time; its frames were not verified"
    )
    if record_not_verified(item, why, svc):
        logger.warning("dead-lettered work item recorded as not verified")
        metrics.add_metric(name="DeadLettersRecorded", unit=MetricUnit.Count, value=1)
        return "recorded"
    return "already-counted"
