"""Constants and small helpers the test packages share."""

from __future__ import annotations

import json
import subprocess
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
