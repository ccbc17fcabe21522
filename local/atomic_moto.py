"""Makes moto's DynamoDB, SQS and S3 backends atomic per request, as the real services are.

moto's backends are plain Python objects that the :class:`moto.server.ThreadedMotoServer` calls from one
thread per request, without a lock: a conditional ``PutItem`` reads the item, evaluates the condition and
writes, so two concurrent writers can both see "absent" and both succeed; ``TransactWriteItems`` checks every
condition and then writes, with the same gap; SQS's ``ReceiveMessage`` walks a queue's message list and
pending set while another request deletes from them ("Set changed size during iteration") and can hand one
message to two receivers. On AWS each of these is atomic, and the application relies on it (one claim of a
job's finalisation, one counting of a work item).

While the local stack runs with concurrent workers, :func:`atomic_moto` wraps the backend operations the
application and the stack use with one process-wide re-entrant lock (the server runs in this process, so
patching the backend classes reaches every request). One lock for every service keeps it simple and free of
lock-ordering problems: S3 notifications, SNS deliveries and EventBridge targets call the SQS backend from
inside another backend's operation, and the lock is re-entrant. moto's operations take microseconds to
milliseconds, so serialising them costs the local run nothing it could measure; what runs concurrently is
the functions' own work (fetching and checking frames).

A long poll (``WaitTimeSeconds`` > 0) must not hold the lock while it waits, so it is re-issued as short polls,
each atomic, until a message arrives or the wait is over.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler
from moto.s3.models import S3Backend
from moto.sqs.models import SQSBackend

__all__ = ["MOTO_LOCK", "PATCHED", "atomic_moto", "installed"]

MOTO_LOCK = threading.RLock()
"""Held for the duration of every patched backend operation."""

# Per class, the operations that read-check-write or iterate shared state. Reads are included so that a read
# never sees half of a transaction (TransactGetItems is a response-level loop over GetItem, hence the handler).
PATCHED: dict[type, tuple[str, ...]] = {
    DynamoDBBackend: (
        "put_item",
        "get_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "query",
        "scan",
        "execute_statement",
        "execute_transaction",
        "batch_execute_statement",
    ),
    DynamoHandler: ("transact_get_items",),
    SQSBackend: (
        "send_message",
        "send_message_batch",
        "delete_message",
        "delete_message_batch",
        "change_message_visibility",
        "change_message_visibility_batch",
        "get_queue_attributes",
        "purge_queue",
    ),
    S3Backend: (
        "put_object",
        "get_object",
        "head_object",
        "list_objects",
        "list_objects_v2",
        "list_object_versions",
        "delete_object",
        "delete_objects",
        "copy_object",
    ),
}

_SHORT_POLL_S = 0.02  # pause between the short polls that stand in for a long poll

_state_lock = threading.Lock()
_users = 0
_originals: list[tuple[type, str, Any]] = []


def _locked(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def operation(*args: Any, **kwargs: Any) -> Any:
        with MOTO_LOCK:
            return original(*args, **kwargs)

    return operation


def _receive(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with MOTO_LOCK:
                messages = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(_SHORT_POLL_S)

    return receive_message


def _install() -> None:
    for cls, names in PATCHED.items():
        for name in names:
            original = cls.__dict__[name]
            _originals.append((cls, name, original))
            setattr(cls, name, _locked(original))
    original = SQSBackend.__dict__["receive_message"]
    _originals.append((SQSBackend, "receive_message", original))
    SQSBackend.receive_message = _receive(original)  # type: ignore[method-assign]


def _remove() -> None:
    while _originals:
        cls, name, original = _originals.pop()
        setattr(cls, name, original)


def installed() -> bool:
    """Whether the backends are patched now."""
    return bool(_originals)


@contextlib.contextmanager
def atomic_moto() -> Iterator[None]:
    """Patch moto's backends so that each operation of :data:`PATCHED` runs under :data:`MOTO_LOCK`.

    Nested and concurrent uses (two stacks in one process) share one installation; the last to leave removes
    it, restoring moto's own methods.

    Yields
    ------
    None
    """
    global _users  # noqa: PLW0603 - one installation per process, counted
    with _state_lock:
        if _users == 0:
            _install()
        _users += 1
    try:
        yield
    finally:
        with _state_lock:
            _users -= 1
            if _users == 0:
                _remove()
