"""Lambda's asynchronous invocation (what S3 notifications, EventBridge rules and schedules use): a failed
invocation is retried (``EventInvokeConfig.MaximumRetryAttempts``, default 2) without Lambda's delays, then
its invocation record goes to the ``OnFailure`` destination, an SQS queue or an SNS topic of the stack
(the record is the message body, as Lambda sends it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .functions import FunctionRunner, Invocation, LocalFunction
from .resources import LocalQueue
from .template import Template

__all__ = ["AsyncInvoker"]

logger = logging.getLogger(__name__)

ASYNC_RETRIES_DEFAULT = 2  # Lambda's MaximumRetryAttempts for asynchronous invocation


class AsyncInvoker:
    """Invokes functions asynchronously (``Event`` invocation type), as Lambda's event queue would.

    Parameters
    ----------
    runner
        Runs each attempt.
    template
        Resolves the functions' ``EventInvokeConfig``.
    sns
        boto3 SNS client on moto, for the failure destination.
    topics
        The stack's topics: logical ID to ARN.
    retries
        Overrides every function's ``MaximumRetryAttempts`` (None: the template's, else 2).
    sqs, queues
        boto3 SQS client on moto and the stack's queues by logical ID, for a queue as the failure destination.
    """

    def __init__(
        self,
        runner: FunctionRunner,
        template: Template,
        sns: Any,
        topics: Mapping[str, str],
        retries: int | None,
        *,
        sqs: Any = None,
        queues: Mapping[str, LocalQueue] | None = None,
    ) -> None:
        self.runner, self.template, self.sns, self.topics, self.retries = runner, template, sns, topics, retries
        self.sqs = sqs
        self._queue_urls = {q.arn: q.url for q in (queues or {}).values()}

    def invoke(self, function: str, event: Any, source: str) -> list[Invocation]:
        """Invoke until an attempt succeeds or the retries run out; then notify the failure destination.

        Parameters
        ----------
        function, event
            As :meth:`local.functions.FunctionRunner.invoke` takes them.
        source
            Recorded on the invocations (``"s3"``, ``"eventbridge"``, ``"schedule"``).

        Returns
        -------
        list of Invocation
            Every attempt, in order.
        """
        fn = self.runner.function(function)
        retries = self.retries
        config = self.template.resolve(
            fn.properties.get("EventInvokeConfig") or {}, where=f"{function}.EventInvokeConfig"
        )
        if retries is None:
            retries = int(config.get("MaximumRetryAttempts", ASYNC_RETRIES_DEFAULT))
        attempts: list[Invocation] = []
        for attempt in range(1, retries + 2):
            invocation = self.runner.invoke(function, event, source=source, attempt=attempt)
            attempts.append(invocation)
            if invocation.ok:
                return attempts
        self._send_to_failure_destination(fn, config, event, attempts[-1])
        return attempts

    def _send_to_failure_destination(
        self, fn: LocalFunction, config: Mapping[str, Any], event: Any, last: Invocation
    ) -> None:
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if not destination:
            return
        queue_url = self._queue_urls.get(str(destination))
        if destination not in self.topics.values() and (queue_url is None or self.sqs is None):
            logger.warning(
                "%s: OnFailure destination %s is not a queue or topic of the stack; not sent",
                fn.logical_id,
                destination,
            )
            return
        error_type, _, error_message = (last.error or "").partition(": ")
        record = {
            "version": "1.0",
            "timestamp": _now_iso_ms(),
            "requestContext": {
                "requestId": last.request_id,
                "functionArn": f"{fn.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": last.attempt,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": error_type, "errorMessage": error_message},
        }
        if queue_url is not None:
            self.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
        else:
            self.sns.publish(TopicArn=destination, Message=json.dumps(record))


def _now_iso_ms() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
