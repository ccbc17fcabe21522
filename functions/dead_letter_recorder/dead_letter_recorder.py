"""Dead-letter recorder: a work item in the work queue's dead-letter queue -> recorded in its job as not
verified, and the job finalised if it was the last item, so no job waits forever on an item that was
killed on every delivery. The flow lives in ``ahi_verify.app.dead_letters``; like the trigger, this function
ships without the codecs layer."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ahi_verify.app.dead_letters import record_dead_letter
from ahi_verify.app.observability import logger, metrics, tracer
from ahi_verify.app.settings import Settings
from ahi_verify.app.wiring import build_services

SETTINGS = Settings.from_env(os.environ)  # fails the cold start with every configuration problem named
SERVICES = build_services(SETTINGS)
PROCESSOR = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_message(record: SQSRecord) -> str:  # Powertools passes the record by this keyword
    return record_dead_letter(record.body, SERVICES)  # a failure keeps the message in the queue, to retry


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_message, processor=PROCESSOR, context=context)
