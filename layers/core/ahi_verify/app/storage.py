"""S3: a job's plan, its per-work-item parts and its reports, under the reports prefix.

``<reports>/<jobId>/job.json``          the plan (:class:`ahi_verify.plan.JobPlan`)
``<reports>/<jobId>/parts/<item>.json`` one verified work item (:class:`ahi_verify.report.Part`)
``<reports>/<jobId>/report.json|.html`` the merged report
``<reports>/<jobId>/alert.json``        the job's alert, kept until it has been published
``<reports>/_evidence/...``             the evidence chain over the three above (:mod:`ahi_verify.evidence`)
The reports bucket is not the watched import-output bucket (and no key ends with the manifest name), so
writing reports can never trigger the function again.

A job may have 50,000 parts and a million frames: the finaliser never holds them all. It lists the part
keys once, fetches the parts of the next image sets on a small thread pool (S3 answers a GET in 20-30 ms;
sixteen at a time hide that), merges one image set at a time and writes ``report.json`` as it goes, with a
multipart upload (:class:`StreamedUpload`); the page's image set rows wait in a spooled temporary file
until the totals at its top are known.

Each upload hashes what it writes (SHA-256) and keeps the version S3 gave it; the finaliser then records the
job's documents in one digest of the evidence chain (:meth:`ReportStore.record_evidence`), so the documents
are never read back to be hashed. Every write carries ``Content-MD5``, which S3 requires in a bucket with
Object Lock default retention (:mod:`ahi_verify.s3_evidence`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from ..alert import Alert
from ..documents import ReportFormatError
from ..evidence import EvidenceChain, Fingerprint, Link
from ..merge import StreamingMerge
from ..plan import JobPlan
from ..report import (
    ImageSetReport,
    ImportFindings,
    JobHeader,
    JobOutcome,
    JobReport,
    ObjectEvidence,
    Part,
    ReportDocumentWriter,
)
from ..report_html import PAGE_CLOSING, image_set_row, page_opening
from ..s3_evidence import S3EvidenceStore, content_md5
from ..work_items import image_set_of

PLAN = "job.json"
REPORT = "report.json"
PAGE = "report.html"
ALERT = "alert.json"

MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest multipart part (every part but the last)."""
UPLOAD_PART_BYTES = 8 * 1024 * 1024
"""Parts of a streamed upload: above S3's minimum, and at most one part is buffered at a time."""
PART_FETCHES = 16
"""Parts fetched at once: 16 GETs of 20-30 ms each keep the merge (~1 ms a part) busy."""
PART_LOOK_AHEAD = 32
"""Parts fetched, or being fetched, beyond the image set being merged: the window held in memory."""
ROW_SPOOL_BYTES = 256 * 1024
"""The page's image set rows stay in memory up to this size, then go to a temporary file."""
_COPY_CHARS = 1024 * 1024


class StreamedUpload:
    """One S3 object written in pieces: a single PutObject when it stays smaller than a part, else a multipart
    upload of ``part_bytes`` parts, aborted if anything fails before it completes.

    Use as a context manager: leaving it normally completes the object, leaving it by an exception aborts.

    Parameters
    ----------
    s3 : S3 client
    bucket, key : str
    content_type : str
    part_bytes : int
        Size of every part but the last (at least 5 MiB in S3; tests inject less for moto-free fakes).
    """

    def __init__(
        self, s3: Any, bucket: str, key: str, content_type: str, *, part_bytes: int = UPLOAD_PART_BYTES
    ) -> None:
        self._s3, self._bucket, self._key, self._type = s3, bucket, key, content_type
        self._part_bytes = part_bytes
        self._pending = bytearray()
        self._upload_id: str | None = None
        self._etags: list[dict[str, Any]] = []
        self._sha256 = hashlib.sha256()
        self.size = 0
        """Bytes written so far."""
        self.version_id: str | None = None
        """The S3 version written, once complete (None in an unversioned bucket)."""

    def __enter__(self) -> StreamedUpload:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:
            self.abort()
            return
        try:
            self.complete()
        except BaseException:
            self.abort()
            raise

    def write(self, text: str) -> None:
        """Add text (UTF-8) to the object; uploads a part each time ``part_bytes`` have accumulated."""
        data = text.encode()
        self.size += len(data)
        self._sha256.update(data)
        self._pending += data
        while len(self._pending) >= self._part_bytes:
            body = bytes(self._pending[: self._part_bytes])
            del self._pending[: self._part_bytes]
            self._upload_part(body)

    def complete(self) -> None:
        """Finish the object: a PutObject if no part was uploaded, else the last part and CompleteMultipartUpload."""
        body = bytes(self._pending)
        self._pending.clear()
        if self._upload_id is None:
            done = self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=body, ContentType=self._type, ContentMD5=content_md5(body)
            )
            self.version_id = done.get("VersionId")
            return
        if body:
            self._upload_part(body)
        done = self._s3.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._etags}
        )
        self.version_id = done.get("VersionId")
        self._upload_id = None

    def fingerprint(self) -> Fingerprint:
        """The object as written: its key, SHA-256, size and version (call once complete)."""
        return Fingerprint(self._key, self._sha256.hexdigest(), self.size, self.version_id)

    def abort(self) -> None:
        """Discard what was uploaded (an unfinished multipart upload is otherwise stored, and billed, forever)."""
        self._pending.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)

    def _upload_part(self, body: bytes) -> None:
        if self._upload_id is None:
            started = self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key, ContentType=self._type)
            self._upload_id = started["UploadId"]
        number = len(self._etags) + 1
        done = self._s3.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
            ContentMD5=content_md5(body),
        )
        self._etags.append({"PartNumber": number, "ETag": done["ETag"]})


class ReportStore:
    """Reads and writes a job's documents in one bucket under the reports prefix.

    Parameters
    ----------
    s3 : S3 client
    bucket, prefix : str
        Where the reports live.
    fetches : int
        Parts fetched at once.
    look_ahead : int
        Parts fetched ahead of the image set being merged.
    part_bytes : int
        Part size of the streamed report uploads.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        prefix: str,
        *,
        fetches: int = PART_FETCHES,
        look_ahead: int = PART_LOOK_AHEAD,
        part_bytes: int = UPLOAD_PART_BYTES,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._fetches = fetches
        self._look_ahead = max(look_ahead, fetches)
        self._part_bytes = part_bytes
        self.evidence = EvidenceChain(S3EvidenceStore(s3, bucket), prefix)
        self._written: dict[str, dict[str, Fingerprint]] = {}
        """Per job, the documents written and not yet recorded in the chain (by name: a rewrite replaces)."""

    def uri(self, job_id: str, name: str) -> str:
        """The ``s3://`` URI of one of the job's documents."""
        return f"s3://{self._bucket}/{self._key(job_id, name)}"

    def _key(self, job_id: str, name: str) -> str:
        return f"{self._prefix}{job_id}/{name}"

    def put_plan(self, plan: JobPlan) -> str:
        """Write the job's plan."""
        return self._put_json(plan.job.job_id, PLAN, plan.to_json())

    def get_plan(self, job_id: str) -> JobPlan:
        """Read the job's plan."""
        return JobPlan.from_json(self._get_json(self._key(job_id, PLAN)))

    def find_plan(self, job_id: str) -> JobPlan | None:
        """The job's plan, or None when none was stored (a trigger that died before it stored the plan)."""
        try:
            return self.get_plan(job_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put_part(self, job_id: str, part: Part) -> Part:
        """Write one work item's part unless it has one already; return the part that stands.

        The first part written for an item is the item's result: two deliveries of one item can run at once
        (SQS delivers at least once; a redelivered whole-set message queues its ranges again) and see
        different things (one reads the metadata, the other meets a failure). The write is conditional
        (``If-None-Match: *``), so the later one reads the standing part back and counts that, and the
        ledger's counts and the report always describe the same part.
        """
        key = self._key(job_id, f"parts/{part.item_id}.json")
        body = json.dumps(part.to_json(), separators=(",", ":")).encode()
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                ContentMD5=content_md5(body),
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            return Part.from_json(self._get_json(key), where=key)
        return part

    def part_keys(self, job_id: str) -> dict[str, list[str]]:
        """The keys of the job's parts by image set (from the item ID in each key), in key order."""
        prefix = self._key(job_id, "parts/")
        by_set: dict[str, list[str]] = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                key: str = entry["Key"]
                item_id = key.removeprefix(prefix).removesuffix(".json")
                by_set.setdefault(image_set_of(item_id), []).append(key)
        return by_set

    def parts_in_plan_order(self, plan: JobPlan) -> Iterator[tuple[str, list[Part]]]:
        """``(image set ID, its parts)`` for every planned image set in plan order, then any other image set's
        (as :meth:`ahi_verify.merge.StreamingMerge.image_sets` takes them).

        The keys are listed once; the parts of the coming image sets are fetched ``fetches`` at a time, at
        most ``look_ahead`` beyond the image set being yielded, so memory holds a window of the job.

        Raises
        ------
        ReportFormatError
            A part is malformed, or names another image set than its key.
        """
        by_set = self.part_keys(plan.job.job_id)
        planned = [s.image_set_id for s in plan.image_sets]
        others = sorted(set(by_set) - set(planned))
        groups = [(image_set_id, by_set.get(image_set_id, [])) for image_set_id in [*planned, *others]]
        pool = ThreadPoolExecutor(max_workers=self._fetches, thread_name_prefix="part-fetch")
        window: deque[tuple[int, Future[Part]]] = deque()
        next_group, next_key = 0, 0  # the next key to fetch: groups[next_group][1][next_key]

        def fetch_next() -> None:
            nonlocal next_group, next_key
            while next_group < len(groups) and next_key == len(groups[next_group][1]):
                next_group, next_key = next_group + 1, 0
            if next_group < len(groups):
                image_set_id, keys = groups[next_group]
                window.append((next_group, pool.submit(self._get_part, keys[next_key], image_set_id)))
                next_key += 1

        try:
            for n, (image_set_id, keys) in enumerate(groups):
                # Every part of the image set about to be yielded, and the window kept full beyond it.
                while next_group <= n and not (next_group == n and next_key == len(keys)):
                    fetch_next()
                while len(window) < self._look_ahead and next_group < len(groups):
                    fetch_next()
                parts = []
                while window and window[0][0] == n:
                    parts.append(window.popleft()[1].result())
                yield image_set_id, parts
        finally:
            # A failed fetch or an abandoned merge: fetch nothing more (those in flight are at most the window).
            pool.shutdown(wait=True, cancel_futures=True)

    def write_merged_report(
        self, plan: JobPlan, *, finished_at: str, on_image_set: Callable[[ImageSetReport], None] | None = None
    ) -> tuple[str, JobOutcome]:
        """Merge the job's parts into ``report.json`` and ``report.html`` as they are read, in bounded memory.

        ``on_image_set`` receives each merged image set as it is written (the ledger's rows), and drops it.

        Returns
        -------
        (str, JobOutcome)
            The JSON's URI, and the merged job without its frames (for the alert and the progress record).
        """
        merge = StreamingMerge(plan, finished_at=finished_at)
        image_sets: Iterable[ImageSetReport] = merge.image_sets(self.parts_in_plan_order(plan))
        if on_image_set is not None:
            image_sets = _passing(image_sets, on_image_set)
        opening = (plan.job, plan.findings, plan.notes, plan.evidence)
        return self._write_documents(*opening, image_sets, merge.outcome)

    def put_report(self, report: JobReport) -> str:
        """Write a whole report's ``report.json`` and ``report.html``; return the JSON's URI."""
        opening = (report.job, report.findings, report.notes, report.evidence)
        uri, _ = self._write_documents(*opening, report.image_sets, report.outcome)
        return uri

    def put_alert(self, job_id: str, alert: Alert) -> str:
        """Keep the job's alert, so that one whose publish failed can be sent again later."""
        key = self._key(job_id, ALERT)
        body = json.dumps(alert.to_json(), separators=(",", ":")).encode()
        done = self._s3.put_object(
            Bucket=self._bucket, Key=key, Body=body, ContentType="application/json", ContentMD5=content_md5(body)
        )
        self._wrote(job_id, ALERT, Fingerprint(key, hashlib.sha256(body).hexdigest(), len(body), done.get("VersionId")))
        return self.uri(job_id, ALERT)

    def get_alert(self, job_id: str) -> Alert:
        """Read the job's kept alert."""
        return Alert.from_json(self._get_json(self._key(job_id, ALERT)))

    def record_evidence(self, job_id: str, *, created_at: str) -> Link | None:
        """Record the job's documents written since the last call in one digest of the evidence chain.

        Returns
        -------
        Link or None
            The digest written; None when nothing was written for the job.
        """
        written = self._written.pop(job_id, {})
        if not written:
            return None
        return self.evidence.append([written[name] for name in sorted(written)], created_at=created_at)

    def _wrote(self, job_id: str, name: str, fingerprint: Fingerprint) -> None:
        self._written.setdefault(job_id, {})[name] = fingerprint

    def get_report(self, job_id: str) -> JobReport:
        """Read the job's whole report."""
        return JobReport.from_json(self._get_json(self._key(job_id, REPORT)))

    def _write_documents(
        self,
        job: JobHeader,
        findings: ImportFindings,
        notes: tuple[str, ...],
        evidence: tuple[ObjectEvidence, ...],
        image_sets: Iterable[ImageSetReport],
        outcome_of: Callable[[], JobOutcome],
    ) -> tuple[str, JobOutcome]:
        job_id = job.job_id
        with tempfile.SpooledTemporaryFile(max_size=ROW_SPOOL_BYTES, mode="w+", encoding="utf-8") as rows:
            with self._upload(job_id, REPORT, "application/json") as document:
                writer = ReportDocumentWriter(document.write, job, findings, notes, evidence)
                for order, image_set in enumerate(image_sets):
                    writer.add(image_set)
                    rows.write(image_set_row(image_set, order))
                outcome = outcome_of()
                writer.finish(outcome)
            self._wrote(job_id, REPORT, document.fingerprint())
            rows.seek(0)
            with self._upload(job_id, PAGE, "text/html; charset=utf-8") as page:
                page.write(page_opening(outcome))
                while chunk := rows.read(_COPY_CHARS):
                    page.write(chunk)
                page.write(PAGE_CLOSING)
            self._wrote(job_id, PAGE, page.fingerprint())
        return self.uri(job_id, REPORT), outcome

    def _upload(self, job_id: str, name: str, content_type: str) -> StreamedUpload:
        return StreamedUpload(
            self._s3, self._bucket, self._key(job_id, name), content_type, part_bytes=self._part_bytes
        )

    def _get_part(self, key: str, image_set_id: str) -> Part:
        part = Part.from_json(self._get_json(key), where=key)
        if part.image_set_id != image_set_id:
            raise ReportFormatError(
                f"{key}: the part is of image set {part.image_set_id}, its key names {image_set_id}"
            )
        return part

    def _put_json(self, job_id: str, name: str, doc: Any) -> str:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(job_id, name),
            Body=body,
            ContentType="application/json",
            ContentMD5=content_md5(body),
        )
        return self.uri(job_id, name)

    def _get_json(self, key: str) -> Any:
        return json.loads(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())


def _passing(
    image_sets: Iterable[ImageSetReport], on_image_set: Callable[[ImageSetReport], None]
) -> Iterator[ImageSetReport]:
    for image_set in image_sets:
        on_image_set(image_set)
        yield image_set
