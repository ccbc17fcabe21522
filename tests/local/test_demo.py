"""`make demo` reads like a story: five steps, the alert as delivered, the verdict and where the report is; the
functions' JSON logs and metrics go to a file instead of between the lines a person reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_tells_its_story_and_keeps_the_function_output_in_a_file() -> None:
    # WHEN the demo runs as `make demo` runs it
    done = run_demo("local.demo")
    out = done.stdout
    # THEN it succeeds, in five numbered steps, ending with the verdict and the report's place
    assert done.returncode == 0, out + done.stderr
    steps = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split(" ", 2)[1] for s in steps] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert "Subject: [ahi-verify] MISMATCH" in out
    assert "Verdict: MISMATCH: the corrupted frame" in out
    assert "Report: build/demo/report.html" in out
    # AND no EMF metric, JSON log line or Powertools warning reaches the terminal
    assert not [line for line in out.splitlines() if line.startswith("{")]
    assert "UserWarning" not in done.stderr
    # AND the file it names holds them
    log = (ROOT / "build" / "demo" / "functions.log").read_text(encoding="utf-8")
    metrics = [json.loads(line) for line in log.splitlines() if line.startswith('{"_aws"')]
    assert metrics
    assert any(m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AhiVerify" for m in metrics)
