"""The event files and `python -m local.replay`: consistent IDs, and each file replayed through the route
the (test application's) template gives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from local.replay import classify, event_ids, main
from tests.support import REPO

EVENTS = REPO / "events"
EXPECTED = {
    "s3-put-manifest.json": ("s3", "JobTriggerFunction <- s3: ok"),
    "eventbridge-s3-object-created.json": ("s3-eventbridge", "JobTriggerFunction <- eventbridge: ok"),
    "eventbridge-import-job-completed.json": ("import-job", "JobTriggerFunction <- eventbridge: ok"),
    "eventbridge-import-job-failed.json": ("import-job", "JobTriggerFunction <- eventbridge: ok"),
    "sqs-work-batch.json": ("sqs", "ImageSetWorkerFunction <- sqs: ok"),
    "schedule-reconcile.json": ("schedule", "JobTriggerFunction <- schedule: ok"),
}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return doc


def test_every_event_file_is_listed_and_classified() -> None:
    # GIVEN the files in events/ (env.json is sam local invoke's --env-vars file, not an event: test_sam_env)
    # WHEN each is classified / THEN it is the kind its name says
    assert {p.name for p in EVENTS.glob("*.json")} - {"env.json"} == set(EXPECTED)
    for name, (kind, _) in EXPECTED.items():
        assert classify(load(name)) == kind, name


def test_event_files_refer_to_one_job() -> None:
    # GIVEN the files that name a data store and a job / WHEN their IDs are read / THEN they are the same
    ids = {name: event_ids(kind, load(name)) for name, (kind, _) in EXPECTED.items() if kind != "schedule"}
    assert len(set(ids.values())) == 1, ids
    ((datastore, job),) = set(ids.values())
    assert datastore
    assert len(datastore) == 32
    assert job
    records = load("sqs-work-batch.json")["Records"]
    bodies = [json.loads(r["body"]) for r in records]
    assert len(records) == 2
    assert all(set(b) == {"v", "jobId", "datastoreId", "imageSetId", "version", "frames", "itemId"} for b in bodies)
    assert all(b["itemId"] == b["imageSetId"] for b in bodies)
    s3_record = load("s3-put-manifest.json")["Records"][0]
    created = load("eventbridge-s3-object-created.json")
    assert unquote_plus(s3_record["s3"]["object"]["key"]) == created["detail"]["object"]["key"]
    assert s3_record["eventVersion"] == "2.1"
    assert {"userIdentity", "requestParameters", "responseElements"} <= set(s3_record)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_replay_delivers_each_file_along_the_template_route(
    name: str, tmp_path: Path, app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an event file and the test application's template
    # WHEN it is replayed
    code = main([str(EVENTS / name), "--template", str(app_dir / "template.yaml"), "--timeout", "60"])
    out = capsys.readouterr().out
    # THEN the emulator was seeded, the function the template routes it to ran once, successfully
    assert code == 0, out
    assert "seeded import job" in out
    _, line = EXPECTED[name]
    invocations = out.split("invocations:")[1].split("reports:")[0].strip().splitlines()
    assert len(invocations) == (2 if name == "sqs-work-batch.json" else 1), out
    assert all(line in inv for inv in invocations), out


def test_replay_of_a_non_event_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a JSON file that is no Lambda event
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    # WHEN it is replayed / THEN the exit status is 2, with the reason
    assert main([str(path)]) == 2
    assert "not an S3, SQS or EventBridge event" in capsys.readouterr().err
