"""Ports and adapters, checked at import time: the verification core loads no AWS SDK and no Lambda tooling,
and the whole import chains of the job trigger and the dead-letter recorder load no codecs (their functions
ship without the codecs layer).

ruff's TID251 rule (pyproject.toml) rejects such an import in the source; this test also catches one that
arrives indirectly, through another module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

DOMAIN = [
    "ids", "locations", "outcomes", "ports", "documents", "job_output", "work_items", "metadata", "syntax",
    "codestream", "ifrc", "frame_check", "image_set", "source_check", "report", "report_html", "alert", "plan",
    "merge", "work", "job", "evidence", "ledger",
]  # fmt: skip
AWS = ("boto3", "botocore", "aws_lambda_powertools")
CODECS = ("numpy", "imagecodecs", "pydicom")
WITHOUT_CODECS = [
    *("ids", "locations", "outcomes", "ports", "documents", "job_output", "work_items", "report", "report_html"),
    "alert",
    *("plan", "merge", "healthimaging", "s3_output", "app.wiring", "app.trigger", "app.finaliser", "app.events"),
    *("app.delivery", "app.dead_letters", "evidence", "s3_evidence", "ledger", "dynamo_ledger"),
]


def loaded_by(module: str, watched: tuple[str, ...]) -> list[str]:
    """The watched top-level packages that importing ``ahi_verify.<module>`` loads, in a fresh interpreter."""
    script = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2:]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"ahi_verify.{module}", *watched],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    return list(json.loads(done.stdout))


@pytest.mark.parametrize("module", DOMAIN)
def test_the_domain_imports_no_aws_sdk_or_lambda_tooling(module: str) -> None:
    assert loaded_by(module, AWS) == []


@pytest.mark.parametrize("module", WITHOUT_CODECS)
def test_planning_reporting_and_the_trigger_load_no_codecs(module: str) -> None:
    assert loaded_by(module, CODECS) == []


def test_the_check_itself_sees_an_import() -> None:
    # GIVEN modules that do load what is watched THEN the probe reports them (it cannot pass vacuously)
    assert loaded_by("healthimaging", AWS) == ["boto3", "botocore"]
    assert "numpy" in loaded_by("work", CODECS)
