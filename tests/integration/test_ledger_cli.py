"""`ahi-verify ledger` and `ahi-verify datastore --ledger-table` against the emulator (SearchImageSets over HTTP)
and moto's DynamoDB on loopback: the auditor's three questions, as csv and json."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import boto3
import numpy as np
import pytest

from ahi_emulator import Emulator, InstanceSpec
from ahi_verify.cli import main
from ahi_verify.dynamo_ledger import DynamoLedger, create_table
from ahi_verify.ledger import CSV_COLUMNS, LedgerEntry, VerifiedBy
from ahi_verify.report import FrameCounts, Verdict

pytestmark = pytest.mark.integration

TABLE = "ledger-cli"


@pytest.fixture
def ledger_env(emulator_env: dict[str, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator for HealthImaging, moto for DynamoDB, and an empty ledger table."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    client = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    if TABLE in client.list_tables()["TableNames"]:
        client.delete_table(TableName=TABLE)
    create_table(client, TABLE)
    return client


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(16, 12)).astype(np.uint16) for _ in range(2)]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_the_ledger_answers_which_were_verified_never_verified_and_not_clean(
    emulator: Emulator, ledger_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a data store of three image sets, one verified clean at import (a row), one corrupted since
    datastore_id = emulator.create_datastore()
    ids = [emulator.add_image_set(datastore_id, [InstanceSpec(frames=_frames(n))]).image_set_id for n in range(3)]
    imported, corrupted, never = ids
    at_import = LedgerEntry(
        datastore_id, imported, 1, "2026-01-01T00:00:00+00:00", "job1", VerifiedBy.JOB, Verdict.CLEAN,
        FrameCounts(2, 2, 0, 0), "s3://reports/job1/report.json",
    )  # fmt: skip
    DynamoLedger(ledger_env, TABLE).record([at_import])
    # WHEN the never-verified question is asked before any audit
    code, out = _run(capsys, "ledger", "--datastore-id", datastore_id, "--table", TABLE, "--never-verified",
                     "--output", "json")  # fmt: skip
    # THEN the two image sets without a row are listed, and the imported one is not
    assert code == 0
    assert sorted(r["imageSetId"] for r in json.loads(out)["neverVerified"]) == sorted([corrupted, never])
    # WHEN one frame is corrupted and the CLI audit records its verdicts in the ledger
    info = next(i for i in emulator.image_sets() if i.image_set_id == corrupted)
    emulator.corrupt_frame(datastore_id, corrupted, info.frame_ids[0])
    code, _ = _run(capsys, "datastore", datastore_id, "--ledger-table", TABLE)
    assert code == 1
    # THEN nothing is never-verified any more, as csv
    code, out = _run(capsys, "ledger", "--datastore-id", datastore_id, "--table", TABLE, "--never-verified",
                     "--output", "csv")  # fmt: skip
    assert (code, list(csv.reader(io.StringIO(out)))) == (0, [["datastoreId", "imageSetId", "version"]])
    # and "not clean" names the corrupted image set, by the audit run, with its counts
    code, out = _run(capsys, "ledger", "--datastore-id", datastore_id, "--table", TABLE, "--verdict", "MISMATCH",
                     "--output", "csv")  # fmt: skip
    header, *rows = list(csv.reader(io.StringIO(out)))
    assert (code, tuple(header)) == (0, CSV_COLUMNS)
    assert [(r[1], r[5], r[6], r[9]) for r in rows] == [(corrupted, "audit", "MISMATCH", "1")]
    # and the whole history keeps the import's clean row beside the audit's (four rows, oldest first)
    code, out = _run(capsys, "ledger", "--datastore-id", datastore_id, "--table", TABLE, "--output", "json")
    history = json.loads(out)["rows"]
    assert (history[0]["imageSetId"], history[0]["kind"]) == (imported, "job")
    assert len(history) == 4
    assert sum(r["verdict"] == "CLEAN" for r in history) == 3
    # and --since leaves the import's row out
    code, out = _run(capsys, "ledger", "--datastore-id", datastore_id, "--table", TABLE, "--since",
                     "2026-06-01T00:00:00Z", "--output", "json")  # fmt: skip
    assert imported not in [r["imageSetId"] for r in json.loads(out)["rows"] if r["kind"] == "job"]
    assert len(json.loads(out)["rows"]) == 3


def test_csv_is_for_the_ledger_only(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN --output csv on another command THEN it is a usage error (exit 2)
    with pytest.raises(SystemExit) as exited:
        main(["datastore", "0" * 32, "--output", "csv"])
    assert exited.value.code == 2
