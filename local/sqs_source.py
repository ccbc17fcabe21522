"""The SQS event source mapping, as Lambda runs it: poll a queue for batches, invoke the function with them,
delete what succeeded and leave the rest for redelivery by the rules of partial batch responses; moto's redrive
moves a message to the dead-letter queue after ``maxReceiveCount`` receives.

A failed message becomes visible again after ``retry_visibility_timeout`` seconds instead of the queue's full
visibility timeout, so that a run with retries takes seconds, not hours; the queue keeps the template's
attributes. Each batch is handed to a :class:`BatchExecutor`: :class:`SerialExecutor` runs it at once, on the
polling thread; :class:`ConcurrentExecutor` keeps up to ``ScalingConfig.MaximumConcurrency`` batches in flight,
each on a thread of its own (the invocation itself runs in an execution environment of its own, see
:class:`local.functions.FunctionRunner`). The poller receives a batch only when its mapping's executor has a
free slot, as Lambda's pollers stop receiving at the maximum concurrency: a received message's visibility
timeout runs from the moment a batch can start.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .functions import FunctionRunner, Invocation
from .resources import SqsMapping

__all__ = ["BatchExecutor", "ConcurrentExecutor", "SerialExecutor", "SqsPoller", "failed_message_ids"]

logger = logging.getLogger(__name__)

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

    def has_capacity(self) -> bool:
        """Whether a batch submitted now would start at once (the poller receives only then)."""

    def submit(self, batch: Callable[[], None]) -> None:
        """Run ``batch`` (now or later, on this thread or another)."""

    def close(self) -> None:
        """Wait for the batches in flight."""


class SerialExecutor:
    """One batch at a time, on the polling thread: the batch is done when :meth:`submit` returns."""

    def has_capacity(self) -> bool:
        """Always: nothing is ever in flight between two calls."""
        return True

    def submit(self, batch: Callable[[], None]) -> None:
        """Run ``batch`` now."""
        batch()

    def close(self) -> None:
        """Nothing to wait for."""


class ConcurrentExecutor:
    """Up to ``max_concurrency`` batches at once, each on a thread of its own.

    A batch that raises (a bug of the local run, not a failed invocation: those are results) is logged, and
    the first such exception is raised again on the polling thread by the next :meth:`has_capacity`,
    :meth:`submit` or :meth:`close`, so that it fails the run instead of leaving its messages in flight.

    Parameters
    ----------
    max_concurrency
        Batches in flight at most (``ScalingConfig.MaximumConcurrency``).
    name
        Names the threads (the function's logical ID).
    """

    def __init__(self, max_concurrency: int, name: str = "batch") -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency, self.name = max_concurrency, name
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._error: BaseException | None = None
        self._count = 0

    @property
    def in_flight(self) -> int:
        """Batches running now."""
        with self._lock:
            return len(self._threads)

    def has_capacity(self) -> bool:
        """Whether fewer than ``max_concurrency`` batches run."""
        self._raise_error()
        return self.in_flight < self.max_concurrency

    def submit(self, batch: Callable[[], None]) -> None:
        """Start ``batch`` on a new thread.

        Raises
        ------
        RuntimeError
            When ``max_concurrency`` batches already run (the poller asks :meth:`has_capacity` first).
        """
        self._raise_error()
        with self._lock:
            if len(self._threads) >= self.max_concurrency:
                raise RuntimeError(f"{self.name}: {self.max_concurrency} batches already in flight")
            self._count += 1
            thread = threading.Thread(target=self._run, args=(batch,), name=f"{self.name}-{self._count}", daemon=True)
            self._threads.add(thread)
        thread.start()

    def _run(self, batch: Callable[[], None]) -> None:
        try:
            batch()
        except BaseException as exc:
            logger.exception("%s: a batch raised", self.name)
            with self._lock:
                self._error = self._error or exc
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _raise_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for the batches in flight, then raise the first exception a batch raised, if any."""
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                break
            for thread in threads:
                thread.join()
        self._raise_error()


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
        Runs the batches of every mapping (default: per mapping, what ``executor_for`` makes).
    executor_for
        Makes the executor of a mapping, on its first poll (default :class:`SerialExecutor` for each).
    """

    def __init__(
        self,
        sqs: Any,
        runner: FunctionRunner,
        *,
        region: str,
        retry_visibility_timeout: int,
        executor: BatchExecutor | None = None,
        executor_for: Callable[[SqsMapping], BatchExecutor] | None = None,
    ) -> None:
        self.sqs, self.runner, self.region = sqs, runner, region
        self.retry_visibility_timeout = retry_visibility_timeout
        self.executor = executor
        self._executor_for = executor_for or (lambda _mapping: SerialExecutor())
        self._executors: dict[tuple[str, str], BatchExecutor] = {}

    def executor_of(self, mapping: SqsMapping) -> BatchExecutor:
        """The executor that runs the mapping's batches."""
        if self.executor is not None:
            return self.executor
        key = (mapping.function, mapping.queue.url)
        if key not in self._executors:
            self._executors[key] = self._executor_for(mapping)
        return self._executors[key]

    def close(self) -> None:
        """Wait for every batch in flight (see :meth:`BatchExecutor.close`)."""
        executors = [self.executor] if self.executor is not None else list(self._executors.values())
        for executor in executors:
            executor.close()

    def poll(self, mapping: SqsMapping) -> bool:
        """Receive one batch (up to ``BatchSize`` messages) from the mapping's queue and submit it.

        Nothing is received while the mapping's executor has no free slot.

        Returns
        -------
        bool
            Whether there was anything to process.
        """
        executor = self.executor_of(mapping)
        if not executor.has_capacity():
            return False
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
        executor.submit(lambda: self._process(mapping, records))
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
