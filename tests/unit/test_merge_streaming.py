"""The streaming finalisation: the same report as the in-memory merge, one verdict rule, parts fetched in a
bounded window, report.json uploaded in parts (aborted on failure), a page with a bounded problem list, and
memory that does not grow with the job."""

from __future__ import annotations

import json
import threading
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonschema
import pytest
from botocore.exceptions import ClientError

from ahi_verify.app.storage import ReportStore, StreamedUpload
from ahi_verify.documents import ReportFormatError
from ahi_verify.merge import StreamingMerge, group_in_plan_order, merge_parts
from ahi_verify.outcomes import Reason, Status
from ahi_verify.plan import JobPlan, PlannedImageSet
from ahi_verify.report import PROBLEMS_KEPT, FrameResult, JobReport, Part, SourceFileProblem, Verdict
from ahi_verify.report_html import PAGE_PROBLEM_ROWS, render_html
from tests.conftest import REPORT_SCHEMA
from tests.fakes.s3 import FakeS3
from tests.unit.test_report import JOB, STARTED, failure, frame, header, manifest, source_of, warned

BUCKET, PREFIX = "bkt", "reports/"
FINISHED = "2026-12-01T01:00:00+00:00"
SCHEMA = jsonschema.Draft202012Validator(REPORT_SCHEMA)


def set_id(n: int) -> str:
    return f"{n:032x}"


class FakeReportBucket(FakeS3):
    """FakeS3 that also takes writes: PutObject and multipart uploads, with a log of the calls made.

    ``discard`` keeps only the size of what is written under it (a memory test must not count the bucket).
    """

    def __init__(self, *, discard: str | None = None, fail_part: int | None = None) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.uploads: dict[str, list[bytes]] = {}
        self.part_sizes: list[int] = []
        self.sizes: dict[str, int] = {}
        self._discard, self._fail_part = discard, fail_part
        self._lock = threading.Lock()

    def _store(self, key: str, body: bytes) -> None:
        self.sizes[key] = len(body)
        if self._discard is None or not key.startswith(self._discard):
            self.objects[(BUCKET, key)] = body

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:  # noqa: N803
        self.calls.append(f"put {Key}")
        self._store(Key, Body)
        return {}

    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        self.calls.append(f"create {Key}")
        upload_id = f"upload-{len(self.uploads)}"
        self.uploads[upload_id] = []
        return {"UploadId": upload_id}

    def upload_part(
        self,
        Bucket: str,  # noqa: N803
        Key: str,  # noqa: N803
        UploadId: str,  # noqa: N803
        PartNumber: int,  # noqa: N803
        Body: bytes,  # noqa: N803
        **_: Any,
    ) -> dict[str, Any]:
        self.calls.append(f"part {PartNumber}")
        if PartNumber == self._fail_part:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "try again"}}, "UploadPart")
        self.part_sizes.append(len(Body))
        keep = self._discard is None or not Key.startswith(self._discard)
        self.uploads[UploadId].append(Body if keep else b"")
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(
        self,
        Bucket: str,  # noqa: N803
        Key: str,  # noqa: N803
        UploadId: str,  # noqa: N803
        MultipartUpload: dict[str, Any],  # noqa: N803
    ) -> dict[str, Any]:
        self.calls.append(f"complete {Key}")
        assert [p["PartNumber"] for p in MultipartUpload["Parts"]] == list(range(1, len(self.uploads[UploadId]) + 1))
        body = b"".join(self.uploads.pop(UploadId))
        self.objects[(BUCKET, Key)] = body
        self.sizes[Key] = sum(self.part_sizes)
        return {}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:  # noqa: N803
        self.calls.append(f"abort {Key}")
        self.uploads.pop(UploadId)
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        with self._lock:  # called from the fetch pool
            return super().get_object(Bucket, Key)

    def text(self, key: str) -> str:
        return self.objects[(BUCKET, key)].decode()


def plan_of(image_sets: list[PlannedImageSet], head: Any = None) -> JobPlan:
    head = head if head is not None else header()
    return JobPlan(head.job, head.findings, head.notes, tuple(image_sets), STARTED)


def planned(n: int, *, matched: int | None = None, files: int = 0) -> PlannedImageSet:
    return PlannedImageSet(set_id(n), 1, True, imported_files=files, matched_sop_instances=matched)


def part(
    n: int,
    frames: list[FrameResult],
    *,
    total: int | None = None,
    span: tuple[int, int] | None = None,
    error: str | None = None,
    instances: int | None = None,
    **extra: Any,
) -> Part:
    item = set_id(n) if span is None else f"{set_id(n)}-{span[0]}-{span[1]}"
    return Part(
        item_id=item,
        image_set_id=set_id(n),
        range=span,
        total_frames=len(frames) if total is None else total,
        seconds=0.125,
        error=error,
        instances=instances,
        frames=tuple(frames),
        **extra,
    )


def numbered(first: int, count: int, status: Status = Status.MATCH) -> list[FrameResult]:
    """Frames ``first .. first+count-1`` (1-based numbers, so indexes from ``first - 1``)."""
    reason = {Status.MISMATCH: None, Status.ERROR: Reason.FETCH_FAILED, Status.MATCH: None}[status]
    return [frame(n, status, reason=reason) for n in range(first, first + count)]


# --- the cases the merge must agree on -------------------------------------------------------------------


def case_clean() -> tuple[JobPlan, list[Part]]:
    return plan_of([planned(1), planned(2)]), [part(2, numbered(1, 2)), part(1, numbered(1, 3))]


def case_duplicates() -> tuple[JobPlan, list[Part]]:
    # a redelivered item's part, and two ranges that overlap: each frame once
    return plan_of([planned(1)]), [
        part(1, numbered(1, 2), total=3, span=(0, 2)),
        part(1, numbered(2, 2), total=3, span=(1, 3)),
        part(1, numbered(1, 2), total=3, span=(0, 2)),
    ]


def case_missing() -> tuple[JobPlan, list[Part]]:
    # image set 2 has no part at all; image set 3 lacks one of its ranges
    return plan_of([planned(1), planned(2), planned(3)]), [
        part(1, numbered(1, 1)),
        part(3, numbered(1, 2), total=4, span=(0, 2)),
    ]


def case_split() -> tuple[JobPlan, list[Part]]:
    ranges = [(6, 7), (0, 3), (3, 6)]
    return plan_of([planned(1), planned(2)]), [
        *(part(1, numbered(a + 1, b - a), total=7, span=(a, b)) for a, b in ranges),
        part(2, numbered(1, 1)),
    ]


def case_errors() -> tuple[JobPlan, list[Part]]:
    return plan_of([planned(1), planned(2), planned(3)]), [
        part(1, [*numbered(1, 2), *numbered(3, 1, Status.MISMATCH), *numbered(4, 2, Status.ERROR)]),
        part(2, [], total=0, error="GetImageSetMetadata failed: AccessDeniedException"),
        part(3, numbered(1, 1, Status.ERROR), total=2, span=(0, 1), error="fetch failed"),
        part(3, numbered(2, 1), total=2, span=(1, 2)),
    ]


def case_sources() -> tuple[JobPlan, list[Part]]:
    return plan_of([planned(1), planned(2)]), [
        part(
            1, [frame(1, source=source_of("consistent", 3014344982)), frame(2, source=source_of("storage-corrupted"))]
        ),
        part(
            2,
            [frame(1, source=source_of("no-source-frame", None, None))],
            source_errors=(SourceFileProblem("dicom/1.dcm", "not a DICOM file"),),
            orphan_source_frames=("dicom/1.dcm: frame 2",),
        ),
    ]


def case_discrepancies() -> tuple[JobPlan, list[Part]]:
    # the import put 3 instances in image set 1, its metadata holds 1; a part of an image set never planned
    plan = replace(plan_of([planned(1, matched=3, files=3)]), discrepancies=("the manifest names another job",))
    return plan, [part(1, numbered(1, 1), instances=1), part(9, numbered(1, 1))]


CASES = {
    "clean": case_clean,
    "duplicates": case_duplicates,
    "missing-parts": case_missing,
    "split-image-sets": case_split,
    "errors": case_errors,
    "source-comparisons": case_sources,
    "discrepancies-and-an-unplanned-part": case_discrepancies,
}


def store_parts(s3: FakeReportBucket, plan: JobPlan, parts: list[Part]) -> None:
    s3.put(BUCKET, f"{PREFIX}{JOB}/job.json", json.dumps(plan.to_json()).encode())
    for p in parts:
        s3.put(BUCKET, f"{PREFIX}{JOB}/parts/{p.item_id}.json", json.dumps(p.to_json()).encode())


def streamed(plan: JobPlan, parts: list[Part], **store: Any) -> tuple[FakeReportBucket, ReportStore]:
    s3 = FakeReportBucket()
    store_parts(s3, plan, parts)
    return s3, ReportStore(s3, BUCKET, PREFIX, **store)


def assert_schema_valid(doc: Any) -> None:
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in SCHEMA.iter_errors(doc)]
    assert problems == []


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_the_streamed_report_is_the_in_memory_report(case: Callable[[], tuple[JobPlan, list[Part]]]) -> None:
    # GIVEN a planned job and its parts (redelivered, missing, split, failed, with source comparisons)
    plan, parts = case()
    s3, store = streamed(plan, parts, fetches=2, look_ahead=2)
    # (a redelivered item's part overwrites its own key: the in-memory merge gets the parts as S3 holds them)
    whole = merge_parts(plan, {p.item_id: p for p in parts}.values(), finished_at=FINISHED)
    # WHEN the finaliser's streaming path merges them from S3
    uri, outcome = store.write_merged_report(store.get_plan(JOB), finished_at=FINISHED)
    # THEN report.json follows the schema and is the in-memory merge's document, member for member
    doc = json.loads(s3.text(f"{PREFIX}{JOB}/report.json"))
    assert_schema_valid(doc)
    assert doc == whole.to_json()
    # AND reading it back (which re-checks its summary and verdict) gives the in-memory report
    assert store.get_report(JOB) == whole == JobReport.from_json(doc)
    assert uri == f"s3://{BUCKET}/{PREFIX}{JOB}/report.json"
    # AND the outcome the alert is made from has the whole report's totals, verdict and problem list
    assert outcome == whole.outcome()
    assert (outcome.summary, outcome.verdict) == (whole.summary, whole.verdict)
    assert list(outcome.totals.problems) == whole.problem_frames()[:PROBLEMS_KEPT]
    # AND the page is the whole report's page
    assert s3.text(f"{PREFIX}{JOB}/report.html") == render_html(whole)


VERDICT_CASES = {
    "clean": (lambda: (header(), [part(1, numbered(1, 3))]), Verdict.CLEAN),
    "mismatch": (lambda: (header(), [part(1, [*numbered(1, 1), *numbered(2, 1, Status.MISMATCH)])]), Verdict.MISMATCH),
    "error": (lambda: (header(), [part(1, numbered(1, 1, Status.ERROR))]), Verdict.UNVERIFIED),
    "mismatch-outranks-failed-import": (
        lambda: (header(failure_message="failed"), [part(1, numbered(1, 1, Status.MISMATCH))]),
        Verdict.MISMATCH,
    ),
    "failed-import": (lambda: (header(failure_message="failed"), []), Verdict.IMPORT_FAILED),
    "no-part": (lambda: (header(), []), Verdict.UNVERIFIED),
    "zero-frames": (lambda: (header(), [part(1, [])]), Verdict.UNVERIFIED),
    "failed-file": (
        lambda: (header(failures=[failure()], job_manifest=manifest(customer_errors=1)), [part(1, numbered(1, 1))]),
        Verdict.UNVERIFIED,
    ),
    "manifest-server-error": (
        lambda: (header(job_manifest=manifest(server_errors=1)), [part(1, numbered(1, 1))]),
        Verdict.UNVERIFIED,
    ),
    "frame-affecting-warning": (
        lambda: (header(warnings=[warned(45330)]), [part(1, numbered(1, 1))]),
        Verdict.UNVERIFIED,
    ),
    "harmless-warning": (lambda: (header(warnings=[warned(45331)]), [part(1, numbered(1, 1))]), Verdict.CLEAN),
    "source-unchecked": (
        lambda: (header(), [part(1, [frame(1, source=source_of("source-unreadable", None, None))])]),
        Verdict.UNVERIFIED,
    ),
    "source-changed": (
        lambda: (header(), [part(1, [frame(1, source=source_of("import-changed-pixels"))])]),
        Verdict.MISMATCH,
    ),
    "orphan-source-frame": (
        lambda: (header(), [part(1, numbered(1, 1), orphan_source_frames=("dicom/1.dcm: frame 2",))]),
        Verdict.UNVERIFIED,
    ),
    "instances-lost": (lambda: (header(), [part(1, numbered(1, 1), instances=0)]), Verdict.UNVERIFIED),
}


@pytest.mark.parametrize(("case", "expected"), list(VERDICT_CASES.values()), ids=list(VERDICT_CASES))
def test_the_verdict_from_streamed_totals_is_decide_on_the_whole_report(
    case: Callable[[], tuple[Any, list[Part]]], expected: Verdict
) -> None:
    # GIVEN a job of one planned image set (one instance imported) and its parts
    head, parts = case()
    plan = plan_of([planned(1, matched=1, files=1)], head)
    # WHEN it is merged streaming, keeping no image set, and merged whole
    merge = StreamingMerge(plan, finished_at=FINISHED)
    for _ in merge.image_sets(group_in_plan_order(plan, {set_id(1): parts})):
        pass
    whole = merge_parts(plan, parts, finished_at=FINISHED)
    # THEN both come to the same verdict: the one rule, from totals both compute
    assert merge.outcome().verdict is whole.verdict is expected
    assert merge.outcome().summary == whole.summary


def test_image_sets_must_arrive_in_plan_order() -> None:
    plan = plan_of([planned(1), planned(2)])
    merge = StreamingMerge(plan, finished_at=FINISHED)
    with pytest.raises(ValueError, match="out of plan order"):
        list(merge.image_sets([(set_id(2), []), (set_id(1), [])]))
    with pytest.raises(ValueError, match=f"planned image set {set_id(2)}"):
        list(StreamingMerge(plan, finished_at=FINISHED).image_sets([(set_id(1), [])]))


# --- reading the parts -----------------------------------------------------------------------------------


def test_parts_are_listed_once_grouped_by_image_set_and_fetched_a_bounded_window_ahead() -> None:
    # GIVEN 40 image sets, every third split into three parts, stored in key order unlike plan order
    plan = plan_of([planned(n) for n in reversed(range(40))])
    parts = [
        p
        for n in range(40)
        for p in (
            [part(n, numbered(k + 1, 1), total=3, span=(k, k + 1)) for k in range(3)]
            if n % 3 == 0
            else [part(n, numbered(1, 1))]
        )
    ]
    s3, store = streamed(plan, parts, fetches=4, look_ahead=6)
    # WHEN the parts are read in plan order
    consumed, ahead = 0, []
    order = []
    for image_set_id, group in store.parts_in_plan_order(plan):
        consumed += len(group)
        ahead.append(len(s3.get_calls) - consumed)
        order.append(image_set_id)
        assert {p.image_set_id for p in group} <= {image_set_id}
    # THEN every planned image set comes once, in plan order, with all of its parts and no other's
    assert order == [s.image_set_id for s in plan.image_sets]
    assert consumed == len(parts) == len(set(s3.get_calls))
    # AND no more than the look-ahead was fetched beyond what had been merged
    assert max(ahead) <= 6


def test_a_part_naming_another_image_set_than_its_key_is_rejected() -> None:
    plan = plan_of([planned(1), planned(2)])
    s3, store = streamed(plan, [part(1, numbered(1, 1))])
    forged = part(2, numbered(1, 1))
    s3.put(BUCKET, f"{PREFIX}{JOB}/parts/{set_id(1)}-0-1.json", json.dumps(forged.to_json()).encode())
    with pytest.raises(ReportFormatError, match="the part is of image set"):
        list(store.parts_in_plan_order(plan))


# --- writing the documents -------------------------------------------------------------------------------


def big_job(image_sets: int, frames_each: int, mismatches_every: int = 0) -> tuple[JobPlan, list[Part]]:
    plan = plan_of([planned(n, matched=1, files=1) for n in range(image_sets)])
    parts = []
    for n in range(image_sets):
        frames = numbered(1, frames_each)
        if mismatches_every and n % mismatches_every == 0:
            frames[0] = frame(1, Status.MISMATCH)
        parts.append(part(n, frames, instances=1))
    return plan, parts


def test_a_large_report_is_uploaded_in_parts_and_a_small_one_in_one_put() -> None:
    # GIVEN a job whose report.json is ~50 KB and a part size of 4 KiB
    plan, parts = big_job(30, 5)
    s3, store = streamed(plan, parts, part_bytes=4096)
    # WHEN it is finalised
    store.write_merged_report(plan, finished_at=FINISHED)
    # THEN report.json went up in 4 KiB parts (the last one smaller) and was completed
    key = f"{PREFIX}{JOB}/report.json"
    assert s3.calls[0] == f"create {key}"
    assert f"complete {key}" in s3.calls
    *full, last = s3.part_sizes[: s3.calls.index(f"complete {key}") - 1]
    assert len(full) >= 10
    assert set(full) == {4096}
    assert 0 < last <= 4096
    # AND the document read back is whole and valid
    doc = json.loads(s3.text(key))
    assert_schema_valid(doc)
    assert JobReport.from_json(doc) == merge_parts(plan, parts, finished_at=FINISHED)
    # AND a report smaller than a part is one PutObject (the page, whose style sheet alone is over 4 KiB, is not)
    plan, parts = big_job(1, 1)
    s3, store = streamed(plan, parts, part_bytes=4096)
    store.write_merged_report(plan, finished_at=FINISHED)
    assert s3.calls[0] == f"put {key}"
    assert (s3.calls[1], s3.calls[-1]) == (f"create {PREFIX}{JOB}/report.html", f"complete {PREFIX}{JOB}/report.html")
    assert all(call.startswith("part ") for call in s3.calls[2:-1])
    # AND a page smaller than a part is one PutObject too
    s3, store = streamed(plan, parts, part_bytes=1024 * 1024)
    store.write_merged_report(plan, finished_at=FINISHED)
    assert s3.calls == [f"put {key}", f"put {PREFIX}{JOB}/report.html"]


def test_a_failed_upload_is_aborted_and_leaves_no_report() -> None:
    # GIVEN S3 failing the third part of report.json
    plan, parts = big_job(30, 5)
    s3 = FakeReportBucket(fail_part=3)
    store_parts(s3, plan, parts)
    store = ReportStore(s3, BUCKET, PREFIX, part_bytes=4096)
    # WHEN it is finalised THEN the error is raised, the upload aborted, and no report exists
    with pytest.raises(ClientError):
        store.write_merged_report(plan, finished_at=FINISHED)
    assert s3.calls[-1] == f"abort {PREFIX}{JOB}/report.json"
    assert s3.uploads == {}
    assert (BUCKET, f"{PREFIX}{JOB}/report.json") not in s3.objects


def test_a_malformed_part_mid_merge_aborts_the_upload() -> None:
    # GIVEN the 25th image set's part is not a part document
    plan, parts = big_job(30, 5)
    s3 = FakeReportBucket()
    store_parts(s3, plan, parts)
    s3.put(BUCKET, f"{PREFIX}{JOB}/parts/{set_id(24)}.json", b'{"itemId": 7}')
    store = ReportStore(s3, BUCKET, PREFIX, part_bytes=4096)
    # WHEN it is finalised THEN the merge stops with the part's key, and the started upload is aborted
    with pytest.raises(ReportFormatError, match=f"parts/{set_id(24)}.json"):
        store.write_merged_report(plan, finished_at=FINISHED)
    assert s3.calls[0] == f"create {PREFIX}{JOB}/report.json"
    assert s3.calls[-1] == f"abort {PREFIX}{JOB}/report.json"
    assert s3.uploads == {}


def write_then_fail(upload: StreamedUpload) -> None:
    with upload:
        upload.write("0123456789")
        raise RuntimeError


def test_streamed_upload_completes_only_when_left_normally() -> None:
    # GIVEN an upload of 4-byte parts left by an exception after 10 bytes THEN the two parts sent are aborted
    s3 = FakeReportBucket()
    with pytest.raises(RuntimeError):
        write_then_fail(StreamedUpload(s3, BUCKET, "k", "text/plain", part_bytes=4))
    assert s3.calls == ["create k", "part 1", "part 2", "abort k"]
    # AND the same upload left normally is completed, its last part smaller
    with StreamedUpload(s3, BUCKET, "k", "text/plain", part_bytes=4) as upload:
        upload.write("0123456789")
    assert s3.text("k") == "0123456789"
    assert s3.part_sizes[-3:] == [4, 4, 2]


def test_the_page_lists_at_most_page_problem_rows_and_says_how_many_more() -> None:
    # GIVEN a job with 7 more problem frames than the page lists, in 3 image sets
    extra = 7
    total = PAGE_PROBLEM_ROWS + extra
    plan = plan_of([planned(0), planned(1), planned(2)])
    parts = [
        part(0, numbered(1, 1)),
        part(1, numbered(1, total - 1, Status.ERROR)),
        part(2, numbered(1, 1, Status.MISMATCH)),
    ]
    s3, store = streamed(plan, parts)
    # WHEN it is finalised
    store.write_merged_report(plan, finished_at=FINISHED)
    page = s3.text(f"{PREFIX}{JOB}/report.html")
    # THEN the page lists PAGE_PROBLEM_ROWS frames, the mismatch first, and points at report.json for the rest
    problems = page[page.index('<h2 id="problems">') : page.index('<h2 id="image-sets">')]
    assert problems.count("<tr class=") == PAGE_PROBLEM_ROWS
    assert problems.index('<tr class="mismatch"') < problems.index('<tr class="error"')
    assert f"<p>and {extra} more problem frames &mdash; see report.json</p>" in problems
    # AND every image set has its entry holding all its frames, and the whole report's page is the same page
    assert all(f'<details id="set-{set_id(n)}"' in page for n in range(3))
    assert page.count('<span class="error">') == total - 1
    assert page == render_html(merge_parts(plan, parts, finished_at=FINISHED))
    # AND report.json holds every problem frame
    doc = json.loads(s3.text(f"{PREFIX}{JOB}/report.json"))
    assert sum(f["status"] != "MATCH" for s in doc["imageSets"] for f in s["frames"]) == total


def peak_of_finalising(image_sets: int) -> int:
    """tracemalloc peak of one streaming finalisation, the bucket's stored bytes not counted."""
    plan, parts = big_job(image_sets, 20, mismatches_every=50)
    s3 = FakeReportBucket(discard=f"{PREFIX}{JOB}/report")
    store_parts(s3, plan, parts)
    del parts
    store = ReportStore(s3, BUCKET, PREFIX, part_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        _, outcome = store.write_merged_report(plan, finished_at=FINISHED)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.summary.frames.total == image_sets * 20
    return peak


def test_memory_does_not_grow_with_the_job() -> None:
    # GIVEN jobs of 250 and 1,000 image sets (5,000 and 20,000 frames; held whole, 20,000 frames take ~30 MB)
    # WHEN each is finalised THEN four times the job takes less than twice the memory
    small, large = peak_of_finalising(250), peak_of_finalising(1_000)
    assert large < 2 * small, (small, large)


def test_the_finalisation_benchmark_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the benchmark at its quick size (in this process) WHEN it runs THEN both paths agree and it reports
    from bench import finalise  # noqa: PLC0415 - moto and the benchmark load only for this test

    assert finalise.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "in-memory" in out
    assert "traced peak" in out
