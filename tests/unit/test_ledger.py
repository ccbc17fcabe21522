"""The verification ledger: the image set verdict rule, idempotent batched writes and the auditor's queries
(moto DynamoDB), and the rows the finaliser writes, once, however often it is retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ahi_verify.app.events import JobRef
from ahi_verify.app.progress import STALE_CLAIM_S
from ahi_verify.app.trigger import reconcile, start_job
from ahi_verify.dynamo_ledger import BATCH, DynamoLedger, create_table, from_item, to_item
from ahi_verify.ledger import LedgerEntry, LedgerRecorder, VerifiedBy, entry_of, kind_of, row_key
from ahi_verify.outcomes import Reason, Status
from ahi_verify.ports import LedgerError
from ahi_verify.report import FrameCounts, FrameResult, ImageSetReport, JobHeader, Verdict, decide_image_set
from ahi_verify.work_items import WorkItem
from tests.fakes.frames import FakeSource, make_frames
from tests.unit.test_application_flow import (  # noqa: F401  (aws is a fixture)
    DS,
    aws,
    drain,
    image_set_id,
    job_id,
    process,
    services,
    write_job,
)

TABLE = "ledger"
DATASTORE = "d" * 32


def frame(n: int, status: Status = Status.MATCH) -> FrameResult:
    reason = {Status.MATCH: None, Status.MISMATCH: Reason.CHECKSUM_DIFFERS, Status.ERROR: Reason.FRAME_NOT_FOUND}
    return FrameResult(n, f"{n:032x}", "1.2.3", "1.2.3.4", n, status, 1, 1, reason=reason[status])


def sets(*frames: FrameResult, **fields: Any) -> ImageSetReport:
    return ImageSetReport(image_set_id="a", frames=frames, **fields)


def entry(image_set: str, verdict: Verdict, at: str, by: str = "job1", version: int | None = 1) -> LedgerEntry:
    return LedgerEntry(
        datastore_id=DATASTORE,
        image_set_id=image_set,
        version=version,
        verified_at=at,
        by=by,
        kind=VerifiedBy.JOB,
        verdict=verdict,
        frames=FrameCounts(total=2, match=2),
        report_uri=f"s3://reports/{by}/report.json",
    )


@pytest.fixture
def ledger() -> Iterator[tuple[Any, DynamoLedger]]:
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE)
        yield client, DynamoLedger(client, TABLE, sleep=lambda _: None)


def rows(client: Any) -> list[dict[str, Any]]:
    return list(client.scan(TableName=TABLE)["Items"])


# --- the image set verdict -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_set", "verdict"),
    [
        (sets(frame(1), frame(2)), Verdict.CLEAN),
        (sets(frame(1), frame(2, Status.MISMATCH)), Verdict.MISMATCH),
        # a mismatch wins over an error: the worst is what the auditor must see
        (
            ImageSetReport(image_set_id="a", frames=(frame(1, Status.ERROR), frame(2, Status.MISMATCH))),
            Verdict.MISMATCH,
        ),
        (sets(frame(1), frame(2, Status.ERROR)), Verdict.UNVERIFIED),
        (sets(error="metadata: AccessDenied"), Verdict.UNVERIFIED),
        (sets(), Verdict.UNVERIFIED),  # no frame is never clean
        (
            ImageSetReport(image_set_id="a", frames=(frame(1),), orphan_source_frames=("x.dcm: frame 2",)),
            Verdict.UNVERIFIED,
        ),
    ],
)
def test_an_image_sets_verdict_follows_the_jobs_rule(image_set: ImageSetReport, verdict: Verdict) -> None:
    # GIVEN an image set's merged results WHEN decided THEN its row's verdict is the rule's
    assert decide_image_set(image_set) is verdict


def test_rows_are_keyed_by_image_set_version_and_verification() -> None:
    # GIVEN an import job's header and an audit run's
    job = JobHeader(job_id="j1", datastore_id=DATASTORE, folder="s3://out/x/")
    audit = JobHeader(job_id="audit20261202t000000z", datastore_id=DATASTORE, folder=f"healthimaging://{DATASTORE}/")
    event = JobHeader(job_id="v" + "0" * 31, datastore_id=DATASTORE, folder=f"healthimaging://{DATASTORE}/")
    # THEN the kind is told from the folder and the ID (an image set event's job is neither an import nor an
    # audit), and the key holds version and verifier (so history is kept)
    assert (kind_of(job), kind_of(audit), kind_of(event)) == (VerifiedBy.JOB, VerifiedBy.AUDIT, VerifiedBy.EVENT)
    assert row_key(DATASTORE, "i1", 3, "j1") == (f"{DATASTORE}#i1", "0000000003#j1")
    assert row_key(DATASTORE, "i1", None, "j1") == (f"{DATASTORE}#i1", "-#j1")
    made = entry_of(
        job,
        ImageSetReport(image_set_id="i1", version=3, frames=(frame(1),)),
        verified_at="t",
        report_uri=None,
        kind=None,
    )
    assert (made.verdict, made.frames, made.kind) == (Verdict.CLEAN, FrameCounts(1, 1, 0, 0), VerifiedBy.JOB)
    # and a row survives DynamoDB's item form unchanged
    assert from_item(to_item(made)) == made


# --- writes -----------------------------------------------------------------------------------------------------


def test_writing_the_same_rows_again_adds_none(ledger: tuple[Any, DynamoLedger]) -> None:
    client, table = ledger
    # GIVEN 60 rows (three BatchWriteItem calls) written once
    batch = [entry(f"i{n:02d}", Verdict.CLEAN, "2026-12-01T00:00:00Z") for n in range(60)]
    assert table.record(batch) == 60
    # WHEN the same verification writes them again (a finaliser retried), with a row twice in one call
    assert table.record([batch[0], *batch]) == 60
    # THEN the table still holds 60 rows, one per (image set, version, verification)
    assert len(rows(client)) == 60


class Throttling:
    """A dynamodb client that leaves the last item of each of its first ``times`` calls unprocessed."""

    def __init__(self, times: int) -> None:
        self.times, self.calls, self.written = times, 0, []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        (requests,) = RequestItems.values()
        assert len(requests) <= BATCH
        if self.calls <= self.times:
            self.written += requests[:-1]
            return {"UnprocessedItems": {TABLE: requests[-1:]}}
        self.written += requests
        return {"UnprocessedItems": {}}


def test_unprocessed_rows_are_sent_again_and_a_table_that_keeps_refusing_fails_loudly() -> None:
    # GIVEN a table that throttles twice THEN every row is written, in calls of at most 25
    client = Throttling(times=2)
    assert DynamoLedger(client, TABLE, sleep=lambda _: None).record([entry("a", Verdict.CLEAN, "t")]) == 1
    assert (client.calls, len(client.written)) == (3, 1)
    # GIVEN one that never stops THEN the write fails rather than losing rows silently
    with pytest.raises(LedgerError, match="unprocessed"):
        DynamoLedger(Throttling(times=100), TABLE, sleep=lambda _: None).record([entry("a", Verdict.CLEAN, "t")])


# --- queries ----------------------------------------------------------------------------------------------------


def test_queries_answer_by_verdict_and_time(ledger: tuple[Any, DynamoLedger]) -> None:
    _, table = ledger
    # GIVEN an image set verified clean at import and mismatched by a later audit, and two others
    table.record(
        [
            entry("i1", Verdict.CLEAN, "2026-11-01T00:00:00Z", by="job1"),
            entry("i2", Verdict.UNVERIFIED, "2026-11-02T00:00:00Z", by="job1"),
            entry("i1", Verdict.MISMATCH, "2026-12-01T00:00:00Z", by="audit1"),
            entry("i3", Verdict.CLEAN, "2026-12-02T00:00:00Z", by="job2"),
        ]
    )
    # WHEN asked THEN every row comes oldest first, history included
    every = [(e.image_set_id, e.by) for e in table.entries(DATASTORE)]
    assert every == [("i1", "job1"), ("i2", "job1"), ("i1", "audit1"), ("i3", "job2")]
    assert [e.image_set_id for e in table.entries(DATASTORE, verdict=Verdict.MISMATCH)] == ["i1"]
    since = [(e.image_set_id, e.verdict) for e in table.entries(DATASTORE, since="2026-12-01T00:00:00Z")]
    assert since == [("i1", Verdict.MISMATCH), ("i3", Verdict.CLEAN)]
    assert list(table.entries("e" * 32)) == []  # another data store's rows are never mixed in
    assert (table.has_row(DATASTORE, "i2"), table.has_row(DATASTORE, "i9")) == (True, False)


def test_the_recorder_holds_at_most_a_batch() -> None:
    # GIVEN a recorder over a writer that notes each call's size
    sizes: list[int] = []

    def write(entries: Any) -> int:
        sizes.append(len(list(entries)))
        return sizes[-1]

    job = JobHeader(job_id="j1", datastore_id=DATASTORE, folder="s3://out/x/")
    recorder = LedgerRecorder(write, job, verified_at="t", report_uri="s3://r/j1/report.json", batch=25)
    # WHEN 60 image sets stream past THEN rows are written 25 at a time, the rest on flush
    for n in range(60):
        recorder.add(ImageSetReport(image_set_id=f"i{n}", frames=(frame(1),)))
    assert sizes == [25, 25]
    assert recorder.flush() == 60
    assert sizes == [25, 25, 10]


# --- the finaliser ----------------------------------------------------------------------------------------------


def test_the_finaliser_writes_a_row_per_image_set_once_even_when_taken_over(aws: dict[str, Any]) -> None:  # noqa: F811
    # GIVEN a job of a clean and a corrupted image set, and a ledger, whose first finaliser dies after the rows
    create_table(aws["ddb"], TABLE)
    now = [1_000_000.0]
    source = FakeSource()
    good, bad = make_frames(2, seed=1), make_frames(3, seed=2)
    bad_id = next(iter(bad))
    bad[bad_id] = (bad[bad_id][0], bad[bad_id][1] ^ 0xFFFF)
    source.add_image_set(image_set_id(1), good)
    source.add_image_set(image_set_id(2), bad)
    svc = services(aws, source, clock=lambda: now[0])
    svc.ledger = DynamoLedger(aws["ddb"], TABLE)
    start_job(JobRef(DS, job_id(70), write_job(aws, job_id(70), [image_set_id(1), image_set_id(2)]), "s3"), svc)
    record_evidence = svc.reports.record_evidence

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the function timed out")

    svc.reports.record_evidence = dies  # type: ignore[method-assign]
    items = [WorkItem.from_json(m["Body"]) for m in drain(aws)]
    process(items[0], svc)
    with pytest.raises(RuntimeError):
        process(items[1], svc)
    assert len(aws["ddb"].scan(TableName=TABLE)["Items"]) == 2
    # WHEN the sweep takes the stale claim over and finalises again
    svc.reports.record_evidence = record_evidence  # type: ignore[method-assign]
    now[0] += STALE_CLAIM_S + 1
    reconcile(svc, lambda job: start_job(JobRef(**job), svc))
    # THEN there is still one row per image set, with its own verdict, naming the job and its report
    found = {e.image_set_id: e for e in svc.ledger.entries(DS)}
    assert len(aws["ddb"].scan(TableName=TABLE)["Items"]) == 2
    assert {i: e.verdict for i, e in found.items()} == {
        image_set_id(1): Verdict.CLEAN,
        image_set_id(2): Verdict.MISMATCH,
    }
    assert found[image_set_id(2)].frames == FrameCounts(total=3, match=2, mismatch=1, error=0)
    assert {e.by for e in found.values()} == {job_id(70)}
    assert found[image_set_id(1)].report_uri == f"s3://ahi-output/ahi-verify-reports/{job_id(70)}/report.json"
    assert svc.progress.get(job_id(70))["state"] == "done"  # type: ignore[index]
