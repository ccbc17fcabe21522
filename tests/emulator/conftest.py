"""Shared fixtures for the emulator tests: an emulator, a running server and boto3 clients aimed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ahi_emulator import Emulator, EmulatorServer


@pytest.fixture
def emulator() -> Emulator:
    return Emulator()


@pytest.fixture
def datastore_id(emulator: Emulator) -> str:
    return emulator.create_datastore()


@pytest.fixture
def server(emulator: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator) as running:
        yield running


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """Create plain ``boto3.client("medical-imaging")`` clients configured only through the environment.

    Retries are off unless asked for, so a single injected 429 or 500 surfaces as an exception.
    """
    for key, value in server.client_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clients: list[Any] = []

    def factory(*, retries: bool = False, **config: Any) -> Any:
        if not retries:
            config.setdefault("retries", {"total_max_attempts": 1})
        client = boto3.client("medical-imaging", config=Config(**config))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> Any:
    return make_client()
