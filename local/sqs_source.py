"""The SQS event source mapping, as Lambda runs it: poll a queue for batches, invoke the function with them,
delete what succeeded and leave the rest for redelivery by the rules of partial batch responses; moto's redrive
moves a message to the dead-letter queue after ``maxReceiveCount`` receives.

A failed message becomes visible again after ``retry_visibility_timeout`` seconds instead of the queue's full
visibility timeout, so that a run with retries takes seconds, not hours; the queue keeps the template's
attributes. Each batch is handed to a :class:`BatchExecutor`: :class:`SerialExecutor` runs it at once, on the
polling thread; a concurrent executor (several batches in flight, as ``ScalingConfig`` allows) plugs in there.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .functions import FunctionRunner, Invocation
from .resources import SqsMapping

__all__ = ["BatchExecutor", "SerialExecutor", "SqsPoller", "failed_message_ids"]

SQS_RECEIVE_MAX = 10  # the most messages one ReceiveMessage returns

SQS_SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)


class BatchExecutor(Protocol):
    """Runs the batches an SQS poller received.

    A message stays in flight (invisible, and counted by the queue's depth) until its batch deletes it or
    lets its visibility timeout run out, so :meth:`local.stack.LocalStack.run_until_idle` waits for batches
    still running without asking the executor.
    """

    def submit(self, batch: Callable[[], None]) -> None:
        """Run ``batch`` (now or later, on this thread or another)."""


class SerialExecutor:
    """One batch at a time, on the polling thread: the batch is done when :meth:`submit` returns."""

    def submit(self, batch: Callable[[], None]) -> None:
        """Run ``batch`` now."""
        batch()


class SqsPoller:
    """Polls the queues of SQS event source mappings and processes their batches.

    Parameters
    ----------
    sqs
        boto3 SQS client on moto.
    runner
        Invokes the functions.
    region
        ``awsRegion`` of the records.
    retry_visibility_timeout
        Seconds after which a failed message is visible again.
    executor
        Runs each batch (default :class:`SerialExecutor`).
    """

    def __init__(
        self,
        sqs: Any,
        runner: FunctionRunner,
        *,
        region: str,
        retry_visibility_timeout: int,
        executor: BatchExecutor | None = None,
    ) -> None:
        self.sqs, self.runner, self.region = sqs, runner, region
        self.retry_visibility_timeout = retry_visibility_timeout
        self.executor: BatchExecutor = executor if executor is not None else SerialExecutor()

    def poll(self, mapping: SqsMapping) -> bool:
        """Receive one batch (up to ``BatchSize`` messages) from the mapping's queue and submit it.

        Returns
        -------
        bool
            Whether there was anything to process.
        """
        messages: list[dict[str, Any]] = []
        while len(messages) < mapping.batch_size:
            response = self.sqs.receive_message(
                QueueUrl=mapping.queue.url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, mapping.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        if not messages:
            return False
        records = [self._sqs_record(mapping, m) for m in messages]
        self.executor.submit(lambda: self._process(mapping, records))
        return True

    def _process(self, mapping: SqsMapping, records: Sequence[Mapping[str, Any]]) -> None:
        invocation = self.runner.invoke(mapping.function, {"Records": records}, source="sqs")
        failed = failed_message_ids(records, invocation, report_failures=mapping.report_failures)
        invocation.failed_item_ids = sorted(failed)
        for record in records:
            if record["messageId"] in failed:
                # Left in the queue for redelivery; visible again sooner than the queue's timeout (see module doc).
                with contextlib.suppress(self.sqs.exceptions.ClientError):
                    self.sqs.change_message_visibility(
                        QueueUrl=mapping.queue.url,
                        ReceiptHandle=record["receiptHandle"],
                        VisibilityTimeout=self.retry_visibility_timeout,
                    )
            else:
                self.sqs.delete_message(QueueUrl=mapping.queue.url, ReceiptHandle=record["receiptHandle"])

    def _sqs_record(self, mapping: SqsMapping, message: Mapping[str, Any]) -> dict[str, Any]:
        attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items() if k in SQS_SYSTEM_ATTRIBUTES}
        message_attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            entry: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
            if "StringValue" in value:
                entry["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                entry["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
            message_attributes[name] = entry
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": mapping.queue.arn,
            "awsRegion": self.region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


def failed_message_ids(  # noqa: PLR0911 - one return per rule of the partial batch response contract
    records: Sequence[Mapping[str, Any]], invocation: Invocation, *, report_failures: bool
) -> set[str]:
    """Which messages of a batch Lambda leaves in the queue, by the rules for partial batch responses.

    An error fails the whole batch. Without ``ReportBatchItemFailures`` the return value is ignored. With it:
    no response, no ``batchItemFailures`` or an empty list is a complete success; a response that is not an
    object, or an item without a valid ``itemIdentifier`` of this batch, fails the whole batch.
    """
    ids = {str(r["messageId"]) for r in records}
    if invocation.error is not None:
        return ids
    if not report_failures or invocation.result is None:
        return set()
    response = invocation.result
    if not isinstance(response, dict):
        return ids
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return ids
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return ids
        failed.add(identifier)
    return failed
