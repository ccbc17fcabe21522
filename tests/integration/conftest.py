"""Integration tests talk to the HealthImaging emulator on loopback through plain boto3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
