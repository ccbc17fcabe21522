"""Audit a whole data store: verify the current version of every image set a SearchImageSets walk lists.

One audit run is one report in the job report model (:mod:`ahi_verify.report`), so the schema, the verdict
rule, the exit codes and the HTML page are the job's. The run is the "job": :class:`~ahi_verify.report.JobHeader`
``jobId`` names the audit run (``audit<UTC time>``), ``folder`` is ``healthimaging://<datastoreId>/`` (there
is no output folder), the manifest totals are null and there are no ndjson findings; the listing's filters are
in ``notes``. An image set of the listing is an image set of the report (``inManifest`` keeps its default: the
listing plays the manifest's part).

Memory stays bounded whatever the data store's size: image sets stream from the listing one page at a time,
each is verified and handed to ``on_report`` (the CLI's streaming JSON writer) and then dropped; what is kept
is a :class:`~ahi_verify.report.JobTally` (counts and at most :data:`~ahi_verify.report.PROBLEMS_KEPT`
problems) and at most as many image set errors.

An image set deleted between the listing and its verification cannot be verified, and is reported as such
(its error says it was deleted, confirmed with GetImageSet), never as a frame that failed verification for
another reason: the run is UNVERIFIED, not MISMATCH.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .ids import audit_run_id
from .image_set import VerifyOptions, verify_image_set
from .outcomes import Reason, Status
from .ports import FrameSource, ImageSetError, ImageSetListError, ImageSetListing, ListedImageSet
from .report import (
    PROBLEMS_KEPT,
    FrameResult,
    ImageSetReport,
    ImportFindings,
    JobHeader,
    JobOutcome,
    JobTally,
    Timings,
    iso_time,
)

OnResult = Callable[[FrameResult, int], None]

__all__ = ["DELETED", "AuditRun", "audit_datastore", "audit_header", "audit_notes", "audit_run_id", "verify_listed"]

DELETED = "deleted after it was listed (GetImageSet: not found): nothing left to verify"


def audit_header(datastore_id: str, run_id: str) -> JobHeader:
    """The report's ``job`` object for an audit run (no output folder, no manifest totals)."""
    return JobHeader(job_id=run_id, datastore_id=datastore_id, folder=f"healthimaging://{datastore_id}/")


def audit_notes(datastore_id: str, created_after: float | None, updated_after: float | None) -> tuple[str, ...]:
    """What the audit covered, in words (filters are times, never patient attributes)."""
    scope = [
        f"{label} at or after {iso_time(after)}"
        for label, after in (("created", created_after), ("updated", updated_after))
        if after is not None
    ]
    which = "every image set" + (f" {' and '.join(scope)}" if scope else "")
    return (f"data store audit of {datastore_id}: {which} that SearchImageSets lists, each at its version when listed",)


@dataclass
class AuditRun:
    """What an audit run keeps while it streams: the tally, the bounded list of image set errors, the count."""

    datastore_id: str
    findings: ImportFindings = field(default_factory=ImportFindings)
    tally: JobTally = field(init=False)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """``(image set ID, error)`` for the first :data:`PROBLEMS_KEPT` image sets with an error."""
    listed: int = 0
    listing_error: str | None = None

    def __post_init__(self) -> None:
        self.tally = JobTally(self.findings)

    def add(self, report: ImageSetReport) -> None:
        """Count one verified image set."""
        self.tally.add(report)
        if report.error and len(self.errors) < PROBLEMS_KEPT:
            self.errors.append((report.image_set_id, report.error))


def verify_listed(
    source: FrameSource,
    listing: ImageSetListing,
    datastore_id: str,
    listed: ListedImageSet,
    *,
    options: VerifyOptions | None = None,
    on_result: OnResult | None = None,
) -> ImageSetReport:
    """Verify one listed image set at its listed version; an image set that has gone is reported deleted."""
    version = str(listed.version) if listed.version is not None else None
    error: str | None = None
    frames: tuple[FrameResult, ...] = ()
    try:
        frames = verify_image_set(
            source, datastore_id, listed.image_set_id, version_id=version, options=options, on_result=on_result
        ).results
    except ImageSetError as exc:
        error = str(exc)
    # A frame or the metadata not found may mean the image set was deleted since it was listed: ask, so the
    # report says so instead of leaving a failure that could be read as damage.
    missing = error is not None or any(f.status is Status.ERROR and f.reason is Reason.FRAME_NOT_FOUND for f in frames)
    if missing:
        try:
            if not listing.exists(datastore_id, listed.image_set_id):
                error = DELETED
        except ImageSetListError as exc:
            error = f"{error or 'frames not found'}; whether it was deleted is unknown: {exc}"
    return ImageSetReport(
        image_set_id=listed.image_set_id,
        version=listed.version,
        is_primary=listed.is_primary,
        error=error,
        frames=frames,
    )


def audit_datastore(
    listing: ImageSetListing,
    source: FrameSource,
    datastore_id: str,
    *,
    run_id: str,
    started: float,
    created_after: float | None = None,
    updated_after: float | None = None,
    options: VerifyOptions | None = None,
    on_result: OnResult | None = None,
    on_image_set: Callable[[int], None] | None = None,
    on_report: Callable[[ImageSetReport], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[JobOutcome, AuditRun]:
    """Verify every listed image set, streaming: one image set in memory at a time.

    Parameters
    ----------
    listing, source
        SearchImageSets/GetImageSet, and the metadata and frames.
    datastore_id
        The data store.
    run_id, started
        The audit run's ID (:func:`audit_run_id`) and start (epoch seconds).
    created_after, updated_after
        The listing's filters (epoch seconds).
    on_result
        Progress: each frame's result and its image set's frame count.
    on_image_set
        Progress: the 1-based index of the image set that begins (the total is not known in advance).
    on_report
        Receives each image set's report as it is done, in listing order (e.g. a streaming JSON writer).
    clock
        Seconds since the epoch, for the timings.

    Returns
    -------
    tuple
        The run's :class:`~ahi_verify.report.JobOutcome` and the :class:`AuditRun` (errors kept for a table).

    Raises
    ------
    ImageSetListError
        The first page cannot be read (nothing was verified). A page after the first that cannot be read
        ends the walk with a discrepancy instead, so the report of what was verified is still written.
    """
    run = AuditRun(datastore_id)
    walk = listing.image_sets(datastore_id, created_after=created_after, updated_after=updated_after)
    listed = next(walk, None)  # a failure here means nothing was verified: the caller's to report
    try:
        while listed is not None:
            run.listed += 1
            if on_image_set is not None:
                on_image_set(run.listed)
            report = verify_listed(source, listing, datastore_id, listed, options=options, on_result=on_result)
            run.add(report)
            if on_report is not None:
                on_report(report)
            listed = next(walk, None)
    except ImageSetListError as exc:
        run.listing_error = f"the listing stopped after {run.listed} image sets: {exc}"
    finished = clock()
    discrepancies = (run.listing_error,) if run.listing_error else ()
    outcome = JobOutcome(
        job=audit_header(datastore_id, run_id),
        findings=run.findings,
        notes=audit_notes(datastore_id, created_after, updated_after),
        discrepancies=discrepancies,
        totals=run.tally.totals(),
        timings=Timings(iso_time(started), iso_time(finished), run.listed, round(finished - started, 3)),
    )
    return outcome, run
