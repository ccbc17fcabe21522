"""Shared test configuration: fake AWS credentials for every test, the shared fixtures' location, and the
report schema check: every job report any test produces (CLI, application, local stack, in process) is
validated against ``report.schema.json`` as it is written, and a test whose report breaks the schema fails."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ahi_verify.report import JobReport
from local.python312 import find_python312
from tests.support import REPO, SHARED_FIXTURES

REPORT_SCHEMA = json.loads((REPO / "layers/core/ahi_verify/report.schema.json").read_text())

# Set before any boto3 client exists: no test may reach AWS or probe the instance metadata service.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # Powertools outside Lambda: a metrics namespace is required, tracing has no daemon to send to.
    "POWERTOOLS_METRICS_NAMESPACE": "AhiVerifyTest",
    "POWERTOOLS_SERVICE_NAME": "ahi-verify",
    "POWERTOOLS_TRACE_DISABLED": "true",
}.items():
    os.environ[_key] = _value
os.environ.pop("AWS_PROFILE", None)
# Every emulator the suite starts (in process, ``ahi-emulator serve``, the local stack) verifies each request's
# SigV4 signature with botocore's signer, so every test that talks to it also proves its requests are signed
# right. ``AHI_EMULATOR_VERIFY_SIGV4=0`` in the environment turns it off for a run.
os.environ.setdefault("AHI_EMULATOR_VERIFY_SIGV4", "1")


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found beside the checkout: expected {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def clean_python312(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh Python 3.12 venv with no packages: the Lambda runtime's, without its SDK."""
    python = find_python312()
    if python is None:
        pytest.skip("no runnable Python 3.12 (python3.12 on PATH, pyenv 3.12.x, or AHI_PYTHON312)")
    venv = tmp_path_factory.mktemp("lambda-py312") / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


class _SchemaCheck:
    """Wraps :meth:`JobReport.to_json`, the writer of whole report documents, with schema validation; and
    :meth:`JobReport.from_json`, so that a document written in pieces (the finaliser streams report.json) is
    validated when a test reads it back: every document the parser accepts must follow the schema too."""

    def __init__(self) -> None:
        self.validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
        self.checked = 0
        self.violations: list[str] = []
        self._original = JobReport.to_json
        self._original_from_json = JobReport.__dict__["from_json"]

    def check(self, doc: Any) -> None:
        self.checked += 1
        self.violations += [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in self.validator.iter_errors(doc)
        ]

    def install(self) -> None:
        check = self
        parse = self._original_from_json.__func__

        def to_json(report: JobReport) -> dict[str, Any]:
            doc = check._original(report)
            check.check(doc)
            return doc

        def from_json(cls: type[JobReport], doc: Any) -> JobReport:
            report: JobReport = parse(cls, doc)
            check.check(doc)
            return report

        JobReport.to_json = to_json  # type: ignore[method-assign]
        JobReport.from_json = classmethod(from_json)  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        JobReport.to_json = self._original  # type: ignore[method-assign]
        JobReport.from_json = self._original_from_json  # type: ignore[method-assign]


SCHEMA_CHECK = _SchemaCheck()


@pytest.fixture(scope="session", autouse=True)
def _reports_follow_the_schema() -> Iterator[_SchemaCheck]:
    SCHEMA_CHECK.install()
    yield SCHEMA_CHECK
    SCHEMA_CHECK.uninstall()


@pytest.fixture(autouse=True)
def _no_schema_violation_in_this_test() -> Iterator[None]:
    before = len(SCHEMA_CHECK.violations)
    yield
    new = SCHEMA_CHECK.violations[before:]
    assert not new, f"a report this test produced breaks report.schema.json: {new[:5]}"
