"""Integration tests talk to the HealthImaging emulator on loopback through plain boto3."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ahi_emulator import Emulator, EmulatorServer


@pytest.fixture(scope="module")
def emulator() -> Emulator:
    return Emulator()


@pytest.fixture(scope="module")
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator) as running:
        yield running


@pytest.fixture
def emulator_env(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every boto3 client created in the test at the emulator, exactly as a user would."""
    env = server.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 (and SQS/SNS) on loopback; reset between modules."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(emulator_env: dict[str, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HealthImaging -> the emulator, S3 -> moto: the two endpoint variables a user would set."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    return {**emulator_env, "AWS_ENDPOINT_URL_S3": moto_endpoint}


@pytest.fixture
def s3(aws_env: dict[str, str]) -> object:
    return boto3.client("s3")


@pytest.fixture(scope="module")
def aws_env_module(server: EmulatorServer, moto_endpoint: str) -> Iterator[dict[str, str]]:
    """Module-wide form of ``aws_env`` for modules that share one verifier across many tests."""
    env = {**server.client_env(), "AWS_ENDPOINT_URL_S3": moto_endpoint}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture(scope="module")
def s3_module(aws_env_module: dict[str, str]) -> object:
    client = boto3.client("s3")
    client.create_bucket(Bucket="real-in")
    client.create_bucket(Bucket="real-out")
    return client
