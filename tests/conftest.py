"""Shared test configuration: fake AWS credentials for every test, and the shared fixtures' location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
