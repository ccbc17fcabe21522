"""Audit runs and image set events in the application: the walk, its checkpoint and resume, exactly one work
item per image set per run, and one job per new version, against moto (DynamoDB, S3, SQS, SNS) and a fake
``medical-imaging`` client behind the real ``HealthImagingListing`` (raising real botocore errors)."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ahi_verify.alert import SUBJECT_LIMIT
from ahi_verify.app.audit_run import change_job_id, change_plan, walk_audit
from ahi_verify.app.events import AuditRequest, EventError, ImageSetChange, Reconcile, parse_trigger_event
from ahi_verify.app.trigger import PLANNING_STALE_S, handle_trigger, reconcile
from ahi_verify.healthimaging import HealthImagingListing
from ahi_verify.ports import ImageSetListError
from ahi_verify.work_items import WorkItem
from tests.fakes.frames import FakeSource, make_frames
from tests.unit.test_application_flow import (
    DS,
    alerts,
    aws,
    drain,
    image_set_id,
    ops_messages,
    process,
    report,
    services,
)

__all__ = ["aws"]  # the fixture, imported for the tests below

RUN = "audit20260101t000000z"
BASE = 1_700_000_000.0


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)  # type: ignore[arg-type]


class FakeSearch:
    """SearchImageSets (createdAt ascending, the BETWEEN createdAt filter, pages of ``page``) and GetImageSet
    over declared image sets; ``fail_after_pages`` raises a real ThrottlingException on that page."""

    def __init__(self, created: dict[str, float], page: int = 50) -> None:
        self.created = created
        self.versions: dict[str, int] = dict.fromkeys(created, 1)
        self.page = page
        self.fail_after_pages: int | None = None
        self.searches: list[Any] = []

    def get_paginator(self, name: str) -> FakeSearch:
        assert name == "search_image_sets"
        return self

    def paginate(self, datastoreId: str, searchCriteria: dict[str, Any], **_: Any) -> Iterator[dict[str, Any]]:  # noqa: N803
        assert datastoreId == DS
        assert searchCriteria["sort"] == {"sortField": "createdAt", "sortOrder": "ASC"}
        self.searches.append(searchCriteria.get("filters"))
        low = None
        for f in searchCriteria.get("filters", []):
            assert f["operator"] == "BETWEEN"
            low = f["values"][0]["createdAt"].timestamp()
        listed = sorted((t, i) for i, t in self.created.items() if low is None or t >= low)
        for n, start in enumerate(range(0, len(listed), self.page)):
            if self.fail_after_pages is not None and n >= self.fail_after_pages:
                self.fail_after_pages = None
                raise _throttled("SearchImageSets")
            yield {
                "imageSetsMetadataSummaries": [
                    {
                        "imageSetId": i,
                        "version": self.versions[i],
                        "createdAt": datetime.fromtimestamp(t, UTC),
                        "DICOMTags": {"DICOMPatientName": "SENTINEL^NEVER"},
                    }
                    for t, i in listed[start : start + self.page]
                ]
            }

    def get_image_set(self, datastoreId: str, imageSetId: str) -> dict[str, Any]:  # noqa: N803
        if imageSetId not in self.versions:
            error = {"Error": {"Code": "ResourceNotFoundException", "Message": "no such image set"}}
            raise ClientError(error, "GetImageSet")  # type: ignore[arg-type]
        return {"imageSetId": imageSetId, "versionId": str(self.versions[imageSetId]), "imageSetState": "ACTIVE"}


def _store(count: int, same_instant: int = 0) -> tuple[FakeSource, FakeSearch]:
    """``count`` image sets of two frames; the first ``same_instant`` of them created at one instant."""
    source = FakeSource()
    created = {}
    for n in range(count):
        source.add_image_set(image_set_id(n), make_frames(2, seed=n % 60))
        created[image_set_id(n)] = BASE + max(0, n - same_instant + 1)
    return source, FakeSearch(created)


def _walk_all(svc: Any, search: FakeSearch, chunk: int) -> list[str]:
    """Walk the run chunk by chunk (each chunk asks for the next); return the chunk outcomes."""
    asked: list[str] = []
    outcomes = []
    listing = HealthImagingListing(search)
    while True:
        result = walk_audit(AuditRequest(RUN, "test"), svc, listing, continue_run=asked.append, chunk_image_sets=chunk)
        outcomes.append(result["outcome"])
        if result["outcome"] != "walking":
            return outcomes


def test_audit_request_events_are_classified_with_a_run_named_by_their_time() -> None:
    # GIVEN an on-demand request, a continuation naming its run, and a malformed run ID
    request = {"source": "ahi-verify", "detail-type": "Audit Requested", "time": "2026-01-01T00:00:00Z", "detail": {}}
    again = {**request, "detail": {"runId": RUN}}
    bad = {**request, "detail": {"runId": "Audit-1"}}
    # WHEN they are parsed THEN the run is named by the event's time (a redelivery resumes the same run)
    assert parse_trigger_event(request) == AuditRequest(RUN, "audit-request")
    assert parse_trigger_event(again) == AuditRequest(RUN, "audit-continue")
    scheduled = {
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "time": "2026-01-01T00:00:00Z",
        "resources": ["arn:aws:events:us-east-1:111122223333:rule/stack-audit-schedule"],
    }
    assert parse_trigger_event(scheduled) == AuditRequest(RUN, "audit-schedule")
    assert (
        parse_trigger_event({**scheduled, "resources": ["arn:aws:events:us-east-1:1:rule/stack-Reconcile"]})
        == Reconcile()
    )
    with pytest.raises(EventError, match="runId"):
        parse_trigger_event(bad)


def test_image_set_events_are_classified_by_detail_type() -> None:
    # GIVEN image set events as the emulator and EventBridge send them
    def event(detail_type: str) -> dict[str, Any]:
        detail = {"datastoreId": DS, "imageSetId": image_set_id(1), "imageSetState": "ACTIVE"}
        return {"source": "aws.medical-imaging", "detail-type": detail_type, "detail": detail}

    # WHEN they are parsed THEN new versions and failed changes are told apart, and in-between steps ignored
    assert parse_trigger_event(event("Image Set Copied")) == ImageSetChange(DS, image_set_id(1), "Image Set Copied")
    failed = parse_trigger_event(event("Image Set Copy Failed"))
    assert isinstance(failed, ImageSetChange)
    assert failed.failed_operation == "CopyImageSet"
    assert parse_trigger_event(event("Image Set Copying")) == []
    assert parse_trigger_event(event("Image Set Deleted")) == []
    with pytest.raises(EventError, match="imageSetId"):
        parse_trigger_event({**event("Image Set Updated"), "detail": {"datastoreId": DS}})


def test_an_audit_walked_in_chunks_queues_each_image_set_once_and_ends_in_one_report(aws: dict[str, Any]) -> None:
    # GIVEN 130 image sets (20 created at the same instant), one with a damaged frame, walked 50 at a time
    source, search = _store(130, same_instant=20)
    frames = make_frames(2, seed=7)
    bad = next(iter(frames))
    frames[bad] = (frames[bad][0], frames[bad][1] ^ 0xFFFF)
    source.add_image_set(image_set_id(7), frames)
    svc = services(aws, source)
    # WHEN the run is walked chunk by chunk, then its work items processed
    outcomes = _walk_all(svc, search, chunk=50)
    items = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    for item in items:
        process(item, svc)
    # THEN three chunks queued every image set exactly once, each resuming from the checkpointed createdAt
    assert outcomes == ["walking", "walking", "walked"]
    assert collections.Counter(i.image_set_id for i in items) == dict.fromkeys(search.created, 1)
    assert all(i.job_id == RUN and i.version == 1 for i in items)
    assert search.searches[0] is None
    assert search.searches[1] is not None
    # AND one report lists the 130 image sets, and one alert names the damaged frame
    doc = report(aws, RUN)
    assert doc["job"] == {**doc["job"], "jobId": RUN, "folder": f"healthimaging://{DS}/"}
    assert len(doc["imageSets"]) == 130
    assert doc["timings"]["startedAt"] == "2026-01-01T00:00:00+00:00"  # the time the run ID names, on every resume
    assert doc["verdict"] == "MISMATCH"
    (alert,) = alerts(aws)
    assert bad in alert["Message"]
    assert "SENTINEL" not in str(doc) + str(alert)
    # AND the request delivered again is a duplicate: nothing more is queued
    assert _walk_all(svc, search, chunk=50) == ["duplicate"]
    assert drain(aws) == []


def test_a_walk_that_fails_mid_listing_resumes_and_queues_each_image_set_once(aws: dict[str, Any]) -> None:
    # GIVEN 120 image sets and a SearchImageSets that is throttled on its third page (the invocation fails)
    source, search = _store(120, same_instant=60)
    search.fail_after_pages = 2
    svc = services(aws, source)
    listing = HealthImagingListing(search)
    with pytest.raises(ImageSetListError, match="ThrottlingException"):
        walk_audit(AuditRequest(RUN, "test"), svc, listing, continue_run=lambda _: None)
    sent_before = len(drain(aws))
    # WHEN the retried invocation resumes the walk
    result = walk_audit(AuditRequest(RUN, "test"), svc, listing, continue_run=lambda _: None)
    resumed = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    # THEN the first 100 were queued before the failure and the rest after it, none twice
    assert (sent_before, result) == (100, {"outcome": "walked", "queued": 20})
    counted = svc.progress.get(RUN)
    assert counted is not None
    assert counted["pending"] == 120
    in_order = [i for _, i in sorted((t, i) for i, t in search.created.items())]
    assert [i.image_set_id for i in resumed] == in_order[100:]


def test_a_new_version_is_one_job_and_a_redelivered_event_queues_nothing(aws: dict[str, Any]) -> None:
    # GIVEN an image set at version 3 and its "Image Set Updated" event (without a version, as the emulator sends)
    source, search = _store(1)
    search.versions[image_set_id(0)] = 3
    svc = services(aws, source)
    svc.listing = HealthImagingListing(search)
    detail = {"datastoreId": DS, "imageSetId": image_set_id(0), "imageSetState": "ACTIVE"}
    event = {"id": "e1", "source": "aws.medical-imaging", "detail-type": "Image Set Updated", "detail": detail}
    # WHEN it is delivered twice
    first = handle_trigger(event, svc, lambda job: {})
    second = handle_trigger({**event, "id": "e2"}, svc, lambda job: {})
    items = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    # THEN one work item verifies version 3 (GetImageSet asked), the second delivery is a duplicate
    assert first == {"imageSet": {"outcome": "queued", "imageSets": 1}}
    assert second["imageSet"]["outcome"] == "duplicate"
    assert [(i.job_id, i.image_set_id, i.version) for i in items] == [
        (change_job_id(image_set_id(0), "3"), image_set_id(0), 3)
    ]


def test_a_failed_copy_is_reported_unverified_and_a_deleted_image_set_as_deleted(aws: dict[str, Any]) -> None:
    # GIVEN a "Copy Failed" event, and an "Image Set Copied" event for an image set deleted since
    source, search = _store(1)
    svc = services(aws, source)
    svc.listing = HealthImagingListing(search)

    def event(detail_type: str, image_set: str, event_id: str) -> dict[str, Any]:
        detail = {"datastoreId": DS, "imageSetId": image_set, "imageSetState": "ACTIVE"}
        return {"id": event_id, "source": "aws.medical-imaging", "detail-type": detail_type, "detail": detail}

    # WHEN both are handled
    handle_trigger(event("Image Set Copy Failed", image_set_id(0), "f1"), svc, lambda job: {})
    handle_trigger(event("Image Set Copied", image_set_id(99), "c1"), svc, lambda job: {})
    # THEN the failed copy is one UNVERIFIED report and alert naming the image set, never a MISMATCH
    failed = report(aws, change_job_id(image_set_id(0), "failed-f1"))
    assert failed["verdict"] == "UNVERIFIED"
    assert any("CopyImageSet failed" in d for d in failed["discrepancies"])
    by_job = collections.Counter(a["MessageAttributes"]["jobId"]["Value"] for a in alerts(aws))
    assert by_job[failed["job"]["jobId"]] == 1
    # AND the deleted one is reported deleted: nothing verified (UNVERIFIED, as the CLI audit says), no MISMATCH
    deleted = report(aws, change_job_id(image_set_id(99), "deleted-c1"))
    assert deleted["verdict"] == "UNVERIFIED"
    assert deleted["summary"]["frames"]["mismatch"] == 0
    assert any(f"image set {image_set_id(99)} was deleted before its verification ran" in n for n in deleted["notes"])
    assert drain(aws) == []


def test_an_image_set_deleted_after_it_was_queued_is_reported_deleted_not_damaged(aws: dict[str, Any]) -> None:
    # GIVEN an audit of 3 image sets whose work items are queued, then one image set deleted
    source, search = _store(3)
    svc = services(aws, source)
    svc.listing = HealthImagingListing(search)
    _walk_all(svc, search, chunk=50)
    gone = image_set_id(1)
    del source.image_sets[gone]
    del search.versions[gone]
    # WHEN the workers run
    for message in drain(aws):
        process(WorkItem.from_json(message["Body"]), svc)
    # THEN the report says it was deleted after it was listed: UNVERIFIED, never MISMATCH
    doc = report(aws, RUN)
    (deleted,) = [s for s in doc["imageSets"] if s["imageSetId"] == gone]
    assert "deleted after it was listed" in deleted["error"]
    assert doc["verdict"] == "UNVERIFIED"
    assert doc["summary"]["frames"]["mismatch"] == 0


# ------------------------------------------------------------------- the sweep looks after runs left behind


def _sweep(svc: Any) -> list[str]:
    """The reconciliation, with an import-job planner that must not be asked (no import jobs are listed)."""

    def no_import_job(job: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"an import job was planned: {job}")

    return reconcile(svc, no_import_job)


def test_an_audit_walk_that_died_on_every_attempt_is_asked_for_again_by_the_sweep(aws: dict[str, Any]) -> None:
    # GIVEN an audit run whose walk failed on its first page on every attempt (the run stays planning)
    now = [BASE]
    source, search = _store(3)
    asked: list[str] = []
    svc = services(aws, source, clock=lambda: now[0])
    svc.audit_requests = asked.append
    listing = HealthImagingListing(search)
    search.fail_after_pages = 0
    with pytest.raises(ImageSetListError):
        walk_audit(AuditRequest(RUN, "test"), svc, listing, continue_run=asked.append)
    # WHEN the sweep runs before the planning is stale THEN the run is left alone
    now[0] += PLANNING_STALE_S
    _sweep(svc)
    assert asked == []
    # WHEN it runs once the planning is stale THEN the walk is asked for again, naming the run
    now[0] += 1
    _sweep(svc)
    assert asked == [RUN]
    # AND the walk it asks for resumes the run to one report, and the run leaves the open-run index
    assert walk_audit(AuditRequest(RUN, "test"), svc, listing, continue_run=asked.append)["outcome"] == "walked"
    for message in drain(aws):
        process(WorkItem.from_json(message["Body"]), svc)
    assert report(aws, RUN)["verdict"] == "CLEAN"
    assert svc.progress.open_runs() == [RUN]  # done: closed by the next sweep
    _sweep(svc)
    assert svc.progress.open_runs() == []


def test_an_audit_run_past_its_deadline_is_abandoned_and_reported_unverified_with_one_alert(
    aws: dict[str, Any],
) -> None:
    # GIVEN an audit run of 3 image sets walked, 2 verified and the third's work item lost
    now = [BASE]
    source, search = _store(3)
    svc = services(aws, source, clock=lambda: now[0], job_deadline_s=3600)
    _walk_all(svc, search, chunk=50)
    lost, *done = sorted((WorkItem.from_json(m["Body"]) for m in drain(aws)), key=lambda i: i.image_set_id)
    for item in done:
        process(item, svc)
    # WHEN the sweep runs after half the deadline THEN the run is still open, and one ops message names the run
    now[0] += 1801
    _sweep(svc)
    record = svc.progress.get(RUN)
    assert record is not None
    assert (record["state"], record["pending"]) == ("running", 1)
    (overdue,) = ops_messages(aws)
    assert overdue["Subject"] == f"[ahi-verify] OPS: audit run {RUN} overdue"
    # WHEN it runs past the deadline
    now[0] += 1800
    _sweep(svc)
    # THEN the run has its UNVERIFIED report (a listed run's report holds the image sets its parts name: the
    # lost one is counted as not completed, not named), and one alert naming the run
    doc = report(aws, RUN)
    assert doc["verdict"] == "UNVERIFIED"
    assert sorted(s["imageSetId"] for s in doc["imageSets"]) == sorted(i.image_set_id for i in done)
    assert lost.image_set_id not in {s["imageSetId"] for s in doc["imageSets"]}
    assert any("1 work item(s) had not completed" in d for d in doc["discrepancies"])
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] UNVERIFIED: audit run {RUN} is not fully verified"
    assert f"Audit run: {RUN}" in alert["Message"]
    (finished,) = ops_messages(aws)
    assert finished["Subject"] == f"[ahi-verify] OPS: audit run {RUN} finished past its deadline"
    # AND the done run is left alone by later sweeps: no second report, alert or ops message, and not indexed
    now[0] += 3600
    _sweep(svc)
    assert (alerts(aws), ops_messages(aws), svc.progress.open_runs()) == ([], [], [])
    assert report(aws, RUN)["verdict"] == "UNVERIFIED"


def test_a_new_version_job_left_in_planning_is_queued_again_or_reported_unverified(aws: dict[str, Any]) -> None:
    # GIVEN a new-version job whose plan was stored but whose work item was never sent, and one whose trigger
    # died before it stored the plan
    now = [BASE]
    source, search = _store(1)
    search.versions[image_set_id(0)] = 3
    svc = services(aws, source, clock=lambda: now[0])
    svc.listing = HealthImagingListing(search)
    change = ImageSetChange(DS, image_set_id(0), "Image Set Updated")
    plan = change_plan(change, svc.listing, "e1", "2026-01-01T00:00:00+00:00")
    queued = plan.job.job_id
    assert svc.progress.create(queued, DS, plan.job.folder, pending=1, indexed=True)
    svc.reports.put_plan(plan)
    unplanned = change_job_id(image_set_id(0), "4")
    assert svc.progress.create(unplanned, DS, f"healthimaging://{DS}/", pending=1, indexed=True)
    # WHEN the sweep runs once their planning is stale
    now[0] += PLANNING_STALE_S + 1
    _sweep(svc)
    for message in drain(aws):
        process(WorkItem.from_json(message["Body"]), svc)
    # THEN the first is verified from its stored plan, its alert (if any) naming the image set and version
    assert report(aws, queued)["verdict"] == "CLEAN"
    # AND the second ends in an UNVERIFIED report saying why, with one alert
    doc = report(aws, unplanned)
    assert doc["verdict"] == "UNVERIFIED"
    assert any("died before it was planned" in d for d in doc["discrepancies"])
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] UNVERIFIED: image set job {unplanned} is not fully verified"


def test_an_alert_of_a_new_version_names_the_image_set_and_its_version(aws: dict[str, Any]) -> None:
    # GIVEN a new version 3 whose frame differs
    source, search = _store(1)
    frames = make_frames(2, seed=0)
    first = next(iter(frames))
    frames[first] = (frames[first][0], frames[first][1] ^ 1)
    source.add_image_set(image_set_id(0), frames)
    search.versions[image_set_id(0)] = 3
    svc = services(aws, source)
    svc.listing = HealthImagingListing(search)
    detail = {"datastoreId": DS, "imageSetId": image_set_id(0), "imageSetState": "ACTIVE"}
    handle_trigger(
        {"id": "e1", "source": "aws.medical-imaging", "detail-type": "Image Set Updated", "detail": detail},
        svc,
        lambda job: {},
    )
    # WHEN it is verified
    (item,) = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process(item, svc)
    # THEN the alert's subject names the image set and version, within SNS's limit
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] MISMATCH: 1 frame(s) differ in image set {image_set_id(0)} version 3"
    assert len(alert["Subject"]) <= SUBJECT_LIMIT


def test_an_audit_walk_that_never_gets_planned_ends_at_its_deadline_in_an_unverified_report(
    aws: dict[str, Any],
) -> None:
    # GIVEN an audit run whose walk dies on its first page every time it is asked for
    now = [BASE]
    source, search = _store(3)
    asked: list[str] = []
    svc = services(aws, source, clock=lambda: now[0], job_deadline_s=3600)
    svc.audit_requests = asked.append
    search.fail_after_pages = 0
    with pytest.raises(ImageSetListError):
        walk_audit(AuditRequest(RUN, "test"), svc, HealthImagingListing(search), continue_run=asked.append)
    # WHEN the sweep runs past the run's deadline
    now[0] += 3601
    _sweep(svc)
    # THEN the run ends in an UNVERIFIED report saying why, with one alert naming the run, and is not walked again
    doc = report(aws, RUN)
    assert doc["verdict"] == "UNVERIFIED"
    assert any("work item(s) had not completed" in d for d in doc["discrepancies"])
    (alert,) = alerts(aws)
    assert alert["Subject"] == f"[ahi-verify] UNVERIFIED: audit run {RUN} is not fully verified"
    assert asked == []
    assert (
        walk_audit(AuditRequest(RUN, "test"), svc, HealthImagingListing(search), continue_run=asked.append)["outcome"]
        == "duplicate"
    )
