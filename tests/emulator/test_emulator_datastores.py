"""CreateDatastore / GetDatastore / ListDatastores with ``losslessStorageFormat``, over HTTP with boto3, as the
botocore model defines them (issue 12, part 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from ahi_emulator import Emulator, EmulatorServer


@pytest.fixture
def client_and_emulator(monkeypatch: pytest.MonkeyPatch) -> Any:
    emulator = Emulator()
    with EmulatorServer(emulator) as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        client = boto3.client("medical-imaging", config=Config(retries={"total_max_attempts": 1}))
        yield client, emulator


@pytest.mark.parametrize(
    ("requested", "stored"),
    [
        pytest.param({}, "HTJ2K", id="default-htj2k"),
        pytest.param({"losslessStorageFormat": "HTJ2K"}, "HTJ2K", id="htj2k"),
        pytest.param({"losslessStorageFormat": "JPEG_2000_LOSSLESS"}, "JPEG_2000_LOSSLESS", id="jpeg2000-lossless"),
    ],
)
def test_a_created_data_store_reports_its_storage_format(
    client_and_emulator: Any, requested: dict[str, str], stored: str
) -> None:
    client, _ = client_and_emulator
    # WHEN a data store is created with (or without) a lossless storage format
    created = client.create_datastore(datastoreName="imports", clientToken="t1", **requested)
    # THEN GetDatastore returns it, with the model's properties
    props = client.get_datastore(datastoreId=created["datastoreId"])["datastoreProperties"]
    assert props["losslessStorageFormat"] == stored
    assert (props["datastoreName"], props["datastoreStatus"]) == ("imports", "ACTIVE")
    assert props["datastoreArn"].endswith(f":datastore/{created['datastoreId']}")
    # AND ListDatastores lists it
    listed = client.list_datastores()["datastoreSummaries"]
    assert [s["datastoreId"] for s in listed] == [created["datastoreId"]]


def test_an_unknown_storage_format_is_refused_and_nothing_is_created(client_and_emulator: Any) -> None:
    client, emulator = client_and_emulator
    with pytest.raises(client.exceptions.ValidationException, match="losslessStorageFormat"):
        client.create_datastore(clientToken="t2", losslessStorageFormat="JPEG_XL")
    assert emulator.datastore_ids() == []


def test_an_unknown_data_store_is_not_found(client_and_emulator: Any) -> None:
    client, _ = client_and_emulator
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_datastore(datastoreId="0" * 32)


def test_the_storage_format_survives_save_and_load(tmp_path: Path) -> None:
    emulator = Emulator()
    store = emulator.create_datastore(lossless_storage_format="JPEG_2000_LOSSLESS", name="j2k")
    emulator.save(tmp_path / "data")
    loaded = Emulator.load(tmp_path / "data")
    props = loaded.datastore_properties(store, "us-east-1")
    assert (props["losslessStorageFormat"], props["datastoreName"]) == ("JPEG_2000_LOSSLESS", "j2k")
