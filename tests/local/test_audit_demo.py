"""`make audit-demo`: five steps, the audit catching a frame corrupted after a clean import, and the ledger
answering "never verified" (the image set added without an import) and "not clean" (the audit's MISMATCH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_audit_demo_finds_the_corrupted_frame_and_the_ledger_answers() -> None:
    # WHEN the audit demo runs as `make audit-demo` runs it
    done = run_demo("local.audit_demo")
    out = done.stdout
    # THEN it succeeds in five numbered steps
    assert done.returncode == 0, out + done.stderr
    steps = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split(" ", 2)[1] for s in steps] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    # AND the import wrote three CLEAN rows, the direct image set was never verified, the audit exited 1
    step2, step3, step4, step5 = (out.split(f"== {n}/5")[1].split("\n== ")[0] for n in (2, 3, 4, 5))
    assert step2.count(",job,CLEAN,") == 3
    assert "NEVER VERIFIED image set" in step3
    assert "1 image sets of data store" in step3
    assert "Verdict: MISMATCH" in step4
    assert "exit code 1" in step4
    # AND "not clean" lists exactly the corrupted image set, by the audit run
    mismatched = [line for line in step5.splitlines() if ",audit,MISMATCH," in line]
    assert len(mismatched) == 1
    assert "verified CLEAN at import" in step3
    assert mismatched[0].split(",")[1] in step3
    # AND no function output reached the terminal
    assert not [line for line in out.splitlines() if line.startswith("{")]
