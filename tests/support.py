"""Constants and small helpers the test packages share."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout, on developer machines and in CI alike.
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "aws-samples"
#: CRC-32 of CT1_UNC's PixelData: the IFRC HealthImaging is expected to report for that file.
CT1_UNC_CRC = 1052635650


def run_json_script(
    python: Path, script: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, what: str
) -> dict[str, Any]:
    """Run ``python -c script args`` (a clean Lambda-like interpreter) and return its last stdout line as JSON."""
    proc = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(env),
        cwd=cwd,
    )
    assert proc.returncode == 0, (
        f"{what} failed in the clean Python 3.12:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def admin_call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call an emulator admin route the way a separate process would (plain HTTP, JSON)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def create_progress_table(client: Any, name: str = "progress") -> None:
    """The progress table's key schema (template ProgressTable), on demand billing."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def run_demo(module: str) -> subprocess.CompletedProcess[str]:
    """Run a demo (``local.demo``, ``local.audit_demo``) as its make target does, with dummy credentials."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.run(
        [sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
