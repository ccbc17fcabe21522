"""Audit runs and new image set versions through the local stack: real template, real handlers, moto and the
emulator (SearchImageSets, GetImageSet, CopyImageSet, DeleteImageSet and its image set events)."""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ahi_emulator import Emulator, InstanceSpec, PatientSpec
from local.stack import LocalStack

pytestmark = pytest.mark.integration

DS = "a2" * 16
SENTINEL = PatientSpec(name="SENTINEL^APPAUDIT^NEVER", id="SENTINEL-APP-0815", birth_date="19020101", sex="O")
RUN = "audit20260101t000000z"
# Named by detail.runId: put_events stamps the time of now, which would name the run otherwise.
REQUEST = {"source": "ahi-verify", "detail-type": "Audit Requested", "detail": {"runId": RUN}}


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(8, 8)).astype(np.uint16) for _ in range(2)]


def _image_sets(emulator: Emulator, count: int) -> list[str]:
    ids = []
    for n in range(count):
        info = emulator.add_image_set(DS, [InstanceSpec(frames=_frames(n))], patient=SENTINEL)
        emulator.set_image_set_times(DS, info.image_set_id, created_at=1_600_000_000.0 + n // 3)
        ids.append(info.image_set_id)
    return ids


def _first_frame(emulator: Emulator, image_set_id: str) -> str:
    return next(i.frame_ids[0] for i in emulator.image_sets() if i.image_set_id == image_set_id)


def _report(stack: LocalStack, job: str) -> dict[str, Any]:
    env = stack.function("JobTriggerFunction").environment
    key = f"{env['REPORTS_PREFIX']}{job}/report.json"
    return dict(json.loads(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read()))


def _verified_per_image_set(stack: LocalStack, job: str) -> collections.Counter[str]:
    """Work items counted per image set (the progress table's completion markers)."""
    table = stack.tables["ProgressTable"]
    pages = stack.dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :item)",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{job}"}, ":item": {"S": "ITEM#"}},
    )
    return collections.Counter(i["sk"]["S"].removeprefix("ITEM#") for p in pages for i in p["Items"])


def _alerts_of(stack: LocalStack, job: str) -> list[Any]:
    return [a for a in stack.alerts() if a.attributes.get("jobId") == job]


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    with LocalStack(parameters={"DatastoreId": DS}) as running:
        running.emulator.create_datastore(DS)
        yield running


def test_an_audit_on_demand_alerts_once_naming_the_corrupted_image_set(stack: LocalStack) -> None:
    # GIVEN 30 image sets, one with a corrupted frame
    ids = _image_sets(stack.emulator, 30)
    bad = ids[17]
    stack.emulator.corrupt_frame(DS, bad, _first_frame(stack.emulator, bad))
    # WHEN an audit is requested on demand and the stack runs until idle
    stack.put_events(REQUEST)
    summary = stack.run_until_idle(timeout=300)
    # THEN one report lists the 30 image sets with one mismatch, in the one alert that names the image set
    assert summary.failures == {}
    doc = _report(stack, RUN)
    assert doc["verdict"] == "MISMATCH"
    assert sorted(s["imageSetId"] for s in doc["imageSets"]) == sorted(ids)
    assert doc["summary"]["frames"] == {"total": 60, "match": 59, "mismatch": 1, "error": 0}
    (alert,) = stack.alerts()
    assert bad in alert.message
    assert SENTINEL.name not in alert.message + json.dumps(doc)
    assert _verified_per_image_set(stack, RUN) == dict.fromkeys(ids, 1)


def test_a_walk_killed_mid_way_resumes_and_verifies_each_image_set_once(stack: LocalStack) -> None:
    # GIVEN 120 image sets and a trigger killed once it has queued some of them
    ids = _image_sets(stack.emulator, 120)
    table = stack.tables["ProgressTable"]
    dynamodb = stack.dynamodb

    def walked_a_page() -> bool:
        cursor = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"JOB#{RUN}"}, "sk": {"S": "CURSOR"}})
        return "Item" in cursor

    stack.arm_crash("JobTriggerFunction", when=walked_a_page)
    # WHEN the audit is requested and Lambda retries the killed invocation
    stack.put_events(REQUEST)
    stack.run_until_idle(timeout=600)
    # THEN the walk was killed once and resumed, one report lists all 120, each verified exactly once
    triggers = [i for i in stack.invocations if i.function == "JobTriggerFunction"]
    assert len(triggers) >= 2
    assert any(i.error for i in triggers)
    doc = _report(stack, RUN)
    assert doc["verdict"] == "CLEAN"
    assert sorted(s["imageSetId"] for s in doc["imageSets"]) == sorted(ids)
    assert _verified_per_image_set(stack, RUN) == dict.fromkeys(ids, 1)


def test_a_copy_with_a_corrupted_frame_is_alerted_once_naming_the_copy(stack: LocalStack) -> None:
    # GIVEN an intact image set copied to a new one (the emulator sends "Image Set Copied" for the copy)
    (source,) = _image_sets(stack.emulator, 1)
    copied = stack.emulator.copy_image_set(DS, source, "1")
    copy_id = copied["destinationImageSetProperties"]["imageSetId"]
    # WHEN one frame of the copy is corrupted before the application verifies it
    stack.emulator.corrupt_frame(DS, copy_id, _first_frame(stack.emulator, copy_id))
    stack.run_until_idle(timeout=300)
    # THEN exactly one alert, naming the copy and not the source
    (alert,) = stack.alerts()
    assert copy_id in alert.message
    assert source not in alert.message
    assert alert.attributes["severity"] == "MISMATCH"


def _reports(stack: LocalStack) -> Iterator[dict[str, Any]]:
    env = stack.function("JobTriggerFunction").environment
    pages = stack.s3.get_paginator("list_objects_v2").paginate(
        Bucket=env["REPORTS_BUCKET"], Prefix=env["REPORTS_PREFIX"]
    )
    for page in pages:
        for entry in page.get("Contents", []):
            if entry["Key"].endswith("/report.json"):
                yield _report(stack, entry["Key"].removeprefix(env["REPORTS_PREFIX"]).removesuffix("/report.json"))


def test_an_image_set_deleted_before_its_verification_is_reported_deleted(stack: LocalStack) -> None:
    # GIVEN an image set copied (its "Image Set Copied" event waits on the bus) and the copy deleted at once
    (image_set,) = _image_sets(stack.emulator, 1)
    copied = stack.emulator.copy_image_set(DS, image_set, "1")
    copy_id = copied["destinationImageSetProperties"]["imageSetId"]
    stack.emulator.delete_image_set(DS, copy_id)
    # WHEN the events are delivered
    summary = stack.run_until_idle(timeout=300)
    # THEN the copy's report says it was deleted before its verification ran: no MISMATCH, no failure
    assert summary.failures == {}
    (deleted,) = [r for r in _reports(stack) if any(copy_id in n for n in r["notes"])]
    assert any("deleted before its verification ran" in n for n in deleted["notes"])
    assert deleted["verdict"] != "MISMATCH"
    assert deleted["summary"]["frames"]["mismatch"] == 0
    assert not [a for a in stack.alerts() if a.attributes.get("severity") == "MISMATCH"]


ATTEMPTS = 3
"""The trigger's asynchronous invocation: the first attempt and MaximumRetryAttempts 2 (template.yaml)."""


def test_an_audit_whose_walk_is_killed_on_every_attempt_ends_in_a_report_after_the_sweep(stack: LocalStack) -> None:
    # GIVEN 30 image sets, and a trigger killed, on the request and on every retry Lambda makes, once the run
    # has its record (so it stays planning with no report)
    _image_sets(stack.emulator, 30)
    table = stack.tables["ProgressTable"]
    dynamodb = stack.dynamodb

    def recorded() -> bool:
        return "Item" in dynamodb.get_item(TableName=table, Key={"pk": {"S": f"JOB#{RUN}"}, "sk": {"S": "JOB"}})

    stack.run_schedule()  # a sweep over nothing: cold-starts the trigger, whose settings the test shortens below
    stack.arm_crash("JobTriggerFunction", when=recorded, times=ATTEMPTS)
    stack.put_events(REQUEST)
    stack.run_until_idle(timeout=300)
    walks = [i for i in stack.invocations if i.function == "JobTriggerFunction" and i.error]
    assert len(walks) == ATTEMPTS  # the request and Lambda's retries, all killed
    record = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"JOB#{RUN}"}, "sk": {"S": "JOB"}})["Item"]
    assert record["state"]["S"] == "planning"
    assert _alerts_of(stack, RUN) == []
    # WHEN the reconciliation sweep runs past the run's deadline (shortened, as local/fault_matrix.py does)
    module = sys.modules[stack.function("JobTriggerFunction").module]
    module.SERVICES.settings = dataclasses.replace(module.SERVICES.settings, job_deadline_s=2)
    time.sleep(3)
    stack.run_schedule()
    stack.run_until_idle(timeout=300)
    # THEN the run has its UNVERIFIED report saying why, and exactly one alert naming the audit run
    doc = _report(stack, RUN)
    assert doc["verdict"] == "UNVERIFIED"
    assert any("had not completed" in d for d in doc["discrepancies"])
    (alert,) = [a for a in stack.alerts("AlertTopic") if a.attributes.get("jobId") == RUN]
    (ops,) = [a for a in stack.alerts("OpsTopic") if a.attributes.get("jobId") == RUN]
    assert ops.subject == f"[ahi-verify] OPS: audit run {RUN} finished past its deadline"
    assert alert.subject == f"[ahi-verify] UNVERIFIED: audit run {RUN} is not fully verified"
    assert SENTINEL.name not in alert.message + json.dumps(doc)
    # AND a later sweep leaves the done run alone
    stack.run_schedule()
    stack.run_until_idle(timeout=300)
    assert len(_alerts_of(stack, RUN)) == 2  # the alert and the operational message, nothing more
