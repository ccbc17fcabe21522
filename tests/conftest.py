"""Shared test configuration: fake AWS credentials for every test, and the shared fixtures' location."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from local.python312 import find_python312
from tests.support import SHARED_FIXTURES

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
