"""Test worker: each message body says how its record should go (``{"mode": ...}``).

``ok`` succeeds; ``fail`` is reported in batchItemFailures every time; ``fail-once`` only on its first
delivery; ``raise-once`` raises (failing the whole batch) on its first delivery; ``hang-once`` creates the file
``marker`` names and sleeps on its first delivery (for the crash test), then succeeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        first = record["attributes"]["ApproximateReceiveCount"] == "1"
        mode = body.get("mode", "ok")
        if mode == "raise-once" and first:
            raise ValueError("instructed to raise")
        if mode == "hang-once" and first:
            Path(body["marker"]).touch()
            time.sleep(30)
        if mode == "fail" or (mode == "fail-once" and first):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
