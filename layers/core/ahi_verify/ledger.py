"""The verification ledger: one row per image set version per verification, for an auditor's questions.

Which image sets were verified when (and by which import job, audit run or event), which were never
verified, which are not clean. A row holds IDs, a verdict, frame counts and the report's URI: never a DICOM
attribute, so the ledger holds no patient data.

Rows are keyed deterministically: ``(datastoreId#imageSetId, version#by)``, where ``by`` is the job's or
audit run's ID. A verification retried (a finaliser that died and is taken over, a batch sent twice)
writes the same keys again, so it overwrites its own rows instead of adding any: no conditional write is
needed, and BatchWriteItem (which has none) can be used. History is kept because the key holds ``by``: an
image set verified clean at import and later found mismatched by an audit has both rows.

The table (``LedgerTable``) is reached through the :class:`~ahi_verify.ports.Ledger` port; its adapter is
:mod:`ahi_verify.dynamo_ledger`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from .report import FrameCounts, ImageSetReport, JobHeader, Verdict, decide_image_set

T = TypeVar("T")

AUDIT_FOLDER_SCHEME = "healthimaging://"
"""An audit run's report names the data store as its folder (:func:`ahi_verify.audit.audit_header`)."""


class VerifiedBy(enum.StrEnum):
    """What kind of verification wrote the row."""

    JOB = "job"
    """The verification of an import job (the application's, at import)."""
    AUDIT = "audit"
    """A data store audit run (the CLI's ``ahi-verify datastore`` or the application's scheduled audit)."""
    EVENT = "event"
    """A verification triggered by an image set event (an update or copy)."""


#: The verdicts an image set's row can have (an image set never has IMPORT_FAILED: that is a job's).
ROW_VERDICTS = (Verdict.MISMATCH, Verdict.UNVERIFIED, Verdict.CLEAN)


@dataclass(frozen=True)
class LedgerEntry:
    """One image set version's verification."""

    datastore_id: str
    image_set_id: str
    version: int | None
    """The version verified; None when the report does not know it (the image set could not be read)."""
    verified_at: str
    """ISO 8601 UTC, when the verification finished (the report's ``finishedAt``)."""
    by: str
    """The import job's or audit run's ID."""
    kind: VerifiedBy
    verdict: Verdict
    frames: FrameCounts
    report_uri: str | None
    """Where the report is (``s3://...``); None for a CLI audit that wrote no report file."""

    @property
    def key(self) -> tuple[str, str]:
        """The row's (partition, sort) key: deterministic, so a retried write replaces its own row."""
        return row_key(self.datastore_id, self.image_set_id, self.version, self.by)

    def to_json(self) -> dict[str, object]:
        """The row as the CLI prints it (``--output json``)."""
        return {
            "datastoreId": self.datastore_id,
            "imageSetId": self.image_set_id,
            "version": self.version,
            "verifiedAt": self.verified_at,
            "verifiedBy": self.by,
            "kind": self.kind.value,
            "verdict": self.verdict.value,
            "frames": self.frames.to_json(),
            "reportUri": self.report_uri,
        }


CSV_COLUMNS = (
    "datastoreId",
    "imageSetId",
    "version",
    "verifiedAt",
    "verifiedBy",
    "kind",
    "verdict",
    "framesTotal",
    "framesMatch",
    "framesMismatch",
    "framesError",
    "reportUri",
)


def csv_row(entry: LedgerEntry) -> list[str]:
    """The entry's cells, in :data:`CSV_COLUMNS` order."""
    f = entry.frames
    version = "" if entry.version is None else str(entry.version)
    return [
        entry.datastore_id,
        entry.image_set_id,
        version,
        entry.verified_at,
        entry.by,
        entry.kind.value,
        entry.verdict.value,
        *(str(n) for n in (f.total, f.match, f.mismatch, f.error)),
        entry.report_uri or "",
    ]


def row_key(datastore_id: str, image_set_id: str, version: int | None, by: str) -> tuple[str, str]:
    """``(datastoreId#imageSetId, <version, 10 digits or "-">#by)``: an image set's rows sort by version."""
    shown = "-" if version is None else f"{version:010d}"
    return f"{datastore_id}#{image_set_id}", f"{shown}#{by}"


def kind_of(job: JobHeader) -> VerifiedBy:
    """Whether a report is an import job's, an audit run's or an image set event's.

    Audit runs and event jobs both name the data store as their folder (they have no job output); an audit
    run's ID starts with ``audit`` (``ids.audit_run_id``), an event job's does not (``v`` and a digest). Import
    job IDs are HealthImaging's hexadecimal IDs, so neither prefix can be one.
    """
    if not job.folder.startswith(AUDIT_FOLDER_SCHEME):
        return VerifiedBy.JOB
    return VerifiedBy.AUDIT if job.job_id.startswith("audit") else VerifiedBy.EVENT


def entry_of(
    job: JobHeader, image_set: ImageSetReport, *, verified_at: str, report_uri: str | None, kind: VerifiedBy | None
) -> LedgerEntry:
    """The ledger row of one image set of a report (its verdict by :func:`~ahi_verify.report.decide_image_set`)."""
    return LedgerEntry(
        datastore_id=job.datastore_id,
        image_set_id=image_set.image_set_id,
        version=image_set.version,
        verified_at=verified_at,
        by=job.job_id,
        kind=kind or kind_of(job),
        verdict=decide_image_set(image_set),
        frames=image_set.counts,
        report_uri=report_uri,
    )


class LedgerRecorder:
    """Collects a report's rows as its image sets stream past and writes them a batch at a time.

    Memory stays bounded whatever the report's size: at most ``batch`` rows are held. Rows are written
    as soon as a batch is full, so a verification that fails after some batches has written some rows; the
    retry writes the same keys again (with the same verdicts: the same parts are merged), so nothing is
    doubled and nothing stale remains.
    """

    def __init__(
        self,
        write: Callable[[Iterable[LedgerEntry]], int],
        job: JobHeader,
        *,
        verified_at: str,
        report_uri: str | None,
        kind: VerifiedBy | None = None,
        batch: int = 25,
    ) -> None:
        self._write, self._job, self._batch = write, job, batch
        self._verified_at, self._report_uri, self._kind = verified_at, report_uri, kind
        self._pending: list[LedgerEntry] = []
        self.written = 0

    def add(self, image_set: ImageSetReport) -> None:
        """Keep the image set's row; write the batch once it is full."""
        self._pending.append(
            entry_of(self._job, image_set, verified_at=self._verified_at, report_uri=self._report_uri, kind=self._kind)
        )
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> int:
        """Write the rows kept so far; return how many rows have been written in all."""
        if self._pending:
            self.written += self._write(self._pending)
            self._pending = []
        return self.written


def never_verified(listed: Iterable[T], has_row: Callable[[T], bool], *, workers: int = 8) -> Iterator[T]:
    """The listed image sets without a ledger row, in listing order, asking ``workers`` at a time.

    A data store may list millions: the listing streams and at most ``4 * workers`` questions are in flight,
    so memory stays bounded and the answer starts before the walk ends.
    """
    window: deque[tuple[T, Future[bool]]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in listed:
            window.append((item, pool.submit(has_row, item)))
            while len(window) >= 4 * workers:
                first, answer = window.popleft()
                if not answer.result():
                    yield first
        while window:
            first, answer = window.popleft()
            if not answer.result():
                yield first
