"""Test worker: each message body says how its record should go (``{"mode": ...}``).

``ok`` succeeds; ``fail`` is reported in batchItemFailures every time; ``fail-once`` only on its first
delivery; ``raise-once`` raises (failing the whole batch) on its first delivery; ``hang-once`` creates the file
``marker`` names and sleeps on its first delivery (for the crash test), then succeeds; ``gather`` waits (up to
20 s) until ``count`` records have arrived in the directory ``dir`` names, and reports whether they did, the
most records it saw running at once, and its process ID (for the concurrency tests).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def gather(record: dict[str, Any], body: dict[str, Any]) -> tuple[bool, int]:
    """Wait for ``count`` arrivals in ``dir``; return whether they came, and the most records seen running."""
    directory = Path(body["dir"])
    running = directory / f"running-{record['messageId']}"
    running.touch()  # before arriving: whoever counts the arrival counts this record as running
    (directory / f"arrived-{record['messageId']}").touch()
    most = 0
    deadline = time.monotonic() + 20
    try:
        while True:
            # Counted after the arrivals: the first record to see them all sees every one of them still running.
            met = len(list(directory.glob("arrived-*"))) >= body["count"]
            most = max(most, len(list(directory.glob("running-*"))))
            if met or time.monotonic() > deadline:
                return met, most
            time.sleep(0.01)
    finally:
        running.unlink()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    seen, met = 0, True
    for record in event["Records"]:
        body = json.loads(record["body"])
        first = record["attributes"]["ApproximateReceiveCount"] == "1"
        mode = body.get("mode", "ok")
        if mode == "raise-once" and first:
            raise ValueError("instructed to raise")
        if mode == "hang-once" and first:
            Path(body["marker"]).touch()
            time.sleep(30)
        if mode == "gather":
            gathered, running = gather(record, body)
            seen, met = max(seen, running), met and gathered
        if mode == "fail" or (mode == "fail-once" and first):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures, "met": met, "running": seen, "pid": os.getpid()}
