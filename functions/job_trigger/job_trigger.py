"""Job trigger: an import job announced (manifest written, import-job event, or the reconciliation
schedule) -> its image sets queued for verification. The flow lives in ``ahi_verify.app.trigger``; this
function ships without the codecs layer (nothing it imports loads numpy or imagecodecs)."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from ahi_verify.app.events import JobRef
from ahi_verify.app.observability import logger, metrics, tracer
from ahi_verify.app.settings import Settings
from ahi_verify.app.trigger import handle_trigger, start_job
from ahi_verify.app.wiring import build_services

SETTINGS = Settings.from_env(os.environ)  # fails the cold start with every configuration problem named
SERVICES = build_services(SETTINGS)
# The manifest's ETag is part of the key: a rewritten manifest is a new event to look at (trigger.start_job
# alerts on a manifest whose content changed after its job was planned), not a cached duplicate.
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="[datastore_id, job_id, manifest_etag]", expires_after_seconds=24 * 3600
)


@idempotent_function(  # type: ignore[untyped-decorator]  # Powertools' decorator is untyped
    data_keyword_argument="job",
    config=IDEMPOTENCY,
    persistence_store=DynamoDBPersistenceLayer(table_name=SETTINGS.idempotency_table),
)
def verify_once(job: dict[str, Any]) -> dict[str, Any]:
    """Start one job's verification; a duplicate delivery returns the first run's result."""
    return start_job(JobRef(**job), SERVICES)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    IDEMPOTENCY.register_lambda_context(context)
    return handle_trigger(
        event, SERVICES, lambda job: verify_once(job=job), lambda: context.get_remaining_time_in_millis() / 1000
    )
