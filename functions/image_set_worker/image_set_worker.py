"""Image-set worker: one SQS work item -> every frame of an image set (or a frame range) verified, the
job's report and alert written by whichever item completes last. Failed items are reported individually
(partial batch response), so only they are retried; after the redrive limit they land in the DLQ."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ahi_verify.app.delivery import record_not_verified
from ahi_verify.app.observability import logger, metrics, tracer
from ahi_verify.app.settings import Settings
from ahi_verify.app.wiring import build_services
from ahi_verify.app.worker import budget_claimed, process_work_item, verify_options
from ahi_verify.image_set import prefer_io_threads
from ahi_verify.work_items import WorkItem

SETTINGS = Settings.from_env(os.environ)  # fails the cold start with every configuration problem named
SERVICES = build_services(SETTINGS)
OPTIONS = verify_options(SERVICES)
PROCESSOR = BatchProcessor(event_type=EventType.SQS)
prefer_io_threads()


@tracer.capture_method
def verify_record(record: SQSRecord, lambda_context: LambdaContext) -> dict[str, Any]:
    item = WorkItem.from_json(record.body)  # an unreadable body fails every delivery and lands in the DLQ
    logger.set_correlation_id(item.job_id)
    logger.append_keys(job_id=item.job_id, image_set_id=item.image_set_id, item_id=item.item_id)
    try:
        # Batch size 1: the invocation's remaining time is this item's; near it, the rest is handed on.
        return process_work_item(
            item, SERVICES, OPTIONS, remaining_s=lambda: lambda_context.get_remaining_time_in_millis() / 1000
        )
    except Exception as exc:
        attempts = int(record.attributes.approximate_receive_count)
        if attempts >= SETTINGS.work_max_receive_count:
            logger.exception("work item failed on its last delivery; recorded as not verified")
            why = f"work item failed on all {attempts} deliveries and was moved to the dead-letter queue"
            record_not_verified(item, f"{why}: {type(exc).__name__}: {exc}", SERVICES)
        raise


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    with budget_claimed(SERVICES):  # the deployment's request rate, shared by the workers running
        return process_partial_response(event=event, record_handler=verify_record, processor=PROCESSOR, context=context)
