"""The job report as typed values: frames, image sets, parts, the job, their counts and the one verdict.

Every "verify a job" path ends here: the CLI (one process) and the application (trigger, workers and the
finaliser) build the same :class:`JobReport` and write it with :meth:`JobReport.to_json`; the documented
schema is ``report.schema.json`` beside this module. Counts and the verdict are computed from the values,
never stored beside them, so a table, the HTML page, the alert and the exit code cannot disagree:
:meth:`JobReport.from_json` recomputes both and rejects a document whose stored ones differ.

Reports carry data store, job, image set and frame IDs, DICOM series/instance UIDs, checksums and the
import's own file keys and messages; never patient or study attributes (the verifier does not read them).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .documents import (
    ReportFormatError,
    boolean,
    integer,
    items,
    mapping,
    member,
    number,
    optional_bool,
    optional_integer,
    optional_text,
    same,
    text,
    texts,
)
from .ids import is_int
from .metadata import FrameRef
from .outcomes import MISMATCH_RELATIONS, SETTLED_RELATIONS, Reason, Status, ThreeWay
from .syntax import Rule

SCHEMA_VERSION = 1


class Verdict(enum.StrEnum):
    """The job's outcome, worst first."""

    MISMATCH = "MISMATCH"
    """At least one frame's pixels differ from the published (or the source) checksum."""
    IMPORT_FAILED = "IMPORT_FAILED"
    """The import job itself failed: nothing was imported."""
    UNVERIFIED = "UNVERIFIED"
    """No mismatch, but something could not be verified or was not imported."""
    CLEAN = "CLEAN"


class JobStatus(enum.StrEnum):
    """The import job's own status, as GetDICOMImportJob gives it for a finished job."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


# --- frames ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceComparison:
    """The three-way check of one frame: the original file's IFRC and how it relates."""

    ifrc: int | None
    relation: ThreeWay
    input_file: str | None
    decoder: str | None = None
    """A lossy source: the decoder whose pixels ``ifrc`` is of (the one that reproduced the stored checksum,
    or the closest one)."""
    max_difference: int | None = None
    """``lossy-decoder-differs``: the largest absolute difference of a sample, source against stored."""
    differing_samples: int | None = None
    """``lossy-decoder-differs``: how many samples differ."""

    def to_json(self) -> dict[str, Any]:
        """The frame's ``source`` object (``decoder`` and the differences only where they apply)."""
        doc: dict[str, Any] = {"ifrc": self.ifrc, "relation": self.relation.value, "inputFile": self.input_file}
        if self.decoder is not None:
            doc["decoder"] = self.decoder
        if self.max_difference is not None:
            doc["maxDifference"] = self.max_difference
        if self.differing_samples is not None:
            doc["differingSamples"] = self.differing_samples
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str) -> SourceComparison:
        """Parse a ``source`` object; raise :class:`ReportFormatError` naming ``where``."""
        obj = mapping(doc, where)
        return cls(
            ifrc=optional_integer(obj, "ifrc", where),
            relation=member(ThreeWay, obj, "relation", where),
            input_file=optional_text(obj, "inputFile", where),
            decoder=optional_text(obj, "decoder", where),
            max_difference=optional_integer(obj, "maxDifference", where),
            differing_samples=optional_integer(obj, "differingSamples", where),
        )


@dataclass(frozen=True)
class FrameResult:
    """The one result every frame listed in metadata ends in: the frame check's, then the report's.

    ``status`` and ``reason`` are final: a frame whose source comparison says its stored pixels are not the
    original's (:data:`ahi_verify.outcomes.MISMATCH_RELATIONS`) is a MISMATCH, whatever the stored-checksum
    check alone said (``work.with_source``); construction refuses any other combination.
    """

    index: int
    """Position in metadata order."""
    image_frame_id: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int
    status: Status
    expected: int | None = None
    actual: int | None = None
    rule: Rule | None = None
    reason: Reason | None = None
    detail: str | None = None
    source: SourceComparison | None = None

    def __post_init__(self) -> None:
        if (
            self.source is not None
            and self.source.relation in MISMATCH_RELATIONS
            and self.status is not Status.MISMATCH
        ):
            raise ValueError(f"frame {self.index}: relation {self.source.relation} is a mismatch, status {self.status}")

    @classmethod
    def of(
        cls,
        frame: FrameRef,
        status: Status,
        *,
        expected: int | None = None,
        actual: int | None = None,
        rule: Rule | None = None,
        reason: Reason | None = None,
        detail: str | None = None,
    ) -> FrameResult:
        """The result of a frame listed in metadata: its identity comes from the metadata entry, and the entry's
        ``syntax_note`` (an assumed stored syntax) is added to ``detail`` so that no verdict hides it."""
        detail = "; ".join(d for d in (detail, frame.syntax_note) if d) or None
        return cls(
            frame.index,
            frame.image_frame_id,
            frame.series_instance_uid,
            frame.sop_instance_uid,
            frame.frame_number,
            status,
            expected,
            actual,
            rule,
            reason,
            detail,
        )

    @property
    def source_unchecked(self) -> bool:
        """The three-way check ran but could not compare this frame with its source."""
        return self.source is not None and self.source.relation not in SETTLED_RELATIONS

    @property
    def decoder_dependent(self) -> bool:
        """The frame matched a lossy source only within the decoder tolerance (``lossy-decoder-differs``): not a
        problem, but listed with the problems so that a person sees the verification depends on the decoder."""
        return self.source is not None and self.source.relation is ThreeWay.LOSSY_DECODER_DIFFERS

    def to_json(self) -> dict[str, Any]:
        """A frame entry of the report."""
        return {
            "index": self.index,
            "imageFrameId": self.image_frame_id,
            "seriesInstanceUID": self.series_instance_uid,
            "sopInstanceUID": self.sop_instance_uid,
            "frameNumber": self.frame_number,
            "status": self.status.value,
            "expected": self.expected,
            "actual": self.actual,
            "rule": self.rule.value if self.rule else None,
            "reason": self.reason.value if self.reason else None,
            "detail": self.detail,
            "source": self.source.to_json() if self.source else None,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> FrameResult:
        """Parse a frame entry; raise :class:`ReportFormatError` naming ``where``."""
        obj = mapping(doc, where)
        rule, reason, source = obj.get("rule"), obj.get("reason"), obj.get("source")
        try:
            return cls(
                index=integer(obj, "index", where),
                image_frame_id=text(obj, "imageFrameId", where),
                series_instance_uid=text(obj, "seriesInstanceUID", where),
                sop_instance_uid=text(obj, "sopInstanceUID", where),
                frame_number=integer(obj, "frameNumber", where),
                status=member(Status, obj, "status", where),
                expected=optional_integer(obj, "expected", where),
                actual=optional_integer(obj, "actual", where),
                rule=None if rule is None else member(Rule, obj, "rule", where),
                reason=None if reason is None else member(Reason, obj, "reason", where),
                detail=optional_text(obj, "detail", where),
                source=None if source is None else SourceComparison.from_json(source, f"{where}.source"),
            )
        except ValueError as exc:
            if isinstance(exc, ReportFormatError):
                raise
            raise ReportFormatError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class FrameCounts:
    """Frames by status: the one count every table, page, alert, metric and ledger uses."""

    total: int = 0
    match: int = 0
    mismatch: int = 0
    error: int = 0

    @classmethod
    def of(cls, frames: Iterable[FrameResult]) -> FrameCounts:
        """Count frames by their (final) status."""
        by_status = dict.fromkeys(Status, 0)
        for frame in frames:
            by_status[frame.status] += 1
        return cls(
            total=sum(by_status.values()),
            match=by_status[Status.MATCH],
            mismatch=by_status[Status.MISMATCH],
            error=by_status[Status.ERROR],
        )

    def __add__(self, other: FrameCounts) -> FrameCounts:
        """Both counts together (an image set's added to a running total)."""
        return FrameCounts(
            total=self.total + other.total,
            match=self.match + other.match,
            mismatch=self.mismatch + other.mismatch,
            error=self.error + other.error,
        )

    @property
    def all_match(self) -> bool:
        """Every frame matched (no frames at all never counts as verified)."""
        return self.total > 0 and self.match == self.total

    def to_json(self) -> dict[str, int]:
        """``{"total", "match", "mismatch", "error"}``."""
        return {"total": self.total, "match": self.match, "mismatch": self.mismatch, "error": self.error}


# --- image sets and parts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFileProblem:
    """A source file the three-way check could not read or decode."""

    input_file: str
    error: str

    def to_json(self) -> dict[str, str]:
        """``{"inputFile", "error"}``."""
        return {"inputFile": self.input_file, "error": self.error}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> SourceFileProblem:
        """Parse a ``sourceErrors`` entry."""
        obj = mapping(doc, where)
        return cls(text(obj, "inputFile", where), text(obj, "error", where))


@dataclass(frozen=True, kw_only=True)
class FrameGroup:
    """Frames of one image set and what the three-way check found about its source files: the body a work
    item's part and an image set of the report share."""

    image_set_id: str
    error: str | None = None
    """Why the image set, or some of its frames, has no result."""
    frames: tuple[FrameResult, ...] = ()
    source_errors: tuple[SourceFileProblem, ...] = ()
    orphan_source_frames: tuple[str, ...] = ()
    """Source frames (``<file>: frame <n>``) that no frame of the image set corresponds to."""
    instances: int | None = None
    """SOP instances the image set's metadata lists (None when it could not be read)."""

    @property
    def counts(self) -> FrameCounts:
        """These frames by status."""
        return FrameCounts.of(self.frames)

    def _group_json(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "frames": [f.to_json() for f in self.frames],
            "sourceErrors": [p.to_json() for p in self.source_errors],
            "orphanSourceFrames": list(self.orphan_source_frames),
        }

    @staticmethod
    def _parse_group(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {
            "image_set_id": text(obj, "imageSetId", where),
            "error": optional_text(obj, "error", where),
            "instances": optional_integer(obj, "instances", where),
            "frames": items(obj, "frames", where, FrameResult.from_json),
            "source_errors": items(obj, "sourceErrors", where, SourceFileProblem.from_json),
            "orphan_source_frames": texts(obj, "orphanSourceFrames", where),
        }


@dataclass(frozen=True, kw_only=True)
class Part(FrameGroup):
    """One work item's results: the frames ``range`` of one image set (or all of them), or why none."""

    item_id: str
    range: tuple[int, int] | None = None
    total_frames: int = 0
    """Frames the image set's metadata lists (all of them, not only this range)."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The part document (``parts/<itemId>.json`` in the application)."""
        return {
            "itemId": self.item_id,
            "imageSetId": self.image_set_id,
            "range": list(self.range) if self.range else None,
            "totalFrames": self.total_frames,
            "error": self.error,
            "seconds": self.seconds,
            **self._group_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str = "part") -> Part:
        """Parse a part document; raise :class:`ReportFormatError` naming the field."""
        obj = mapping(doc, where)
        raw_range = obj.get("range")
        if raw_range is not None and not (
            isinstance(raw_range, list) and len(raw_range) == 2 and all(is_int(v) for v in raw_range)
        ):
            raise ReportFormatError(f"{where}.range is not [start, end] or null")
        return cls(
            item_id=text(obj, "itemId", where),
            range=(raw_range[0], raw_range[1]) if raw_range else None,
            total_frames=integer(obj, "totalFrames", where),
            seconds=number(obj, "seconds", where),
            **cls._parse_group(obj, where),
        )


@dataclass(frozen=True, kw_only=True)
class ImageSetReport(FrameGroup):
    """One image set of the job: every frame its metadata lists, in metadata order, each once."""

    version: int | None = None
    is_primary: bool | None = None
    in_manifest: bool = True
    """False for an image set only the SUCCESS/WARNING lines name (verified all the same)."""
    imported_files: int = 0
    """SUCCESS and WARNING lines that name this image set."""
    matched_sop_instances: int | None = None
    """The manifest's ``numberOfMatchedSOPInstances`` (None when it lists the image set without one)."""

    def to_json(self) -> dict[str, Any]:
        """An ``imageSets`` entry."""
        return {
            "imageSetId": self.image_set_id,
            "version": self.version,
            "isPrimary": self.is_primary,
            "inManifest": self.in_manifest,
            "importedFiles": self.imported_files,
            "matchedSOPInstances": self.matched_sop_instances,
            "error": self.error,
            "summary": self.counts.to_json(),
            **self._group_json(),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ImageSetReport:
        """Parse an ``imageSets`` entry, checking its stored summary against its frames."""
        obj = mapping(doc, where)
        report = cls(
            version=optional_integer(obj, "version", where),
            is_primary=optional_bool(obj, "isPrimary", where),
            in_manifest=boolean(obj, "inManifest", where),
            imported_files=integer(obj, "importedFiles", where),
            matched_sop_instances=optional_integer(obj, "matchedSOPInstances", where),
            **cls._parse_group(obj, where),
        )
        same(obj.get("summary"), report.counts.to_json(), f"{where}.summary")
        return report


# --- the job -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEvidence:
    """What an input of the report was, byte for byte: the manifest and every ndjson file read."""

    uri: str
    etag: str | None
    """S3's ETag as served (quotes removed); None where the store gave none."""
    sha256: str
    """Hex SHA-256 of the bytes read, computed while reading them."""
    size: int

    def to_json(self) -> dict[str, Any]:
        """An ``evidence`` entry."""
        return {"uri": self.uri, "etag": self.etag, "sha256": self.sha256, "bytes": self.size}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ObjectEvidence:
        """Parse an ``evidence`` entry."""
        obj = mapping(doc, where)
        return cls(
            text(obj, "uri", where),
            optional_text(obj, "etag", where),
            text(obj, "sha256", where),
            integer(obj, "bytes", where),
        )


@dataclass(frozen=True)
class JobHeader:
    """The import job: IDs, where its output is, its status and the manifest's totals (None without one)."""

    job_id: str
    datastore_id: str
    folder: str
    status: JobStatus = JobStatus.COMPLETED
    message: str | None = None
    input_s3_uri: str | None = None
    scanned_files: int | None = None
    imported_files: int | None = None
    files_with_customer_error: int | None = None
    files_with_server_error: int | None = None
    generated_image_sets: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The report's ``job`` object."""
        return {
            "jobId": self.job_id,
            "datastoreId": self.datastore_id,
            "folder": self.folder,
            "status": self.status.value,
            "message": self.message,
            "inputS3Uri": self.input_s3_uri,
            "scannedFiles": self.scanned_files,
            "importedFiles": self.imported_files,
            "filesWithCustomerError": self.files_with_customer_error,
            "filesWithServerError": self.files_with_server_error,
            "generatedImageSets": self.generated_image_sets,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str = "job") -> JobHeader:
        """Parse a ``job`` object."""
        obj = mapping(doc, where)
        return cls(
            job_id=text(obj, "jobId", where),
            datastore_id=text(obj, "datastoreId", where),
            folder=text(obj, "folder", where),
            status=member(JobStatus, obj, "status", where),
            message=optional_text(obj, "message", where),
            input_s3_uri=optional_text(obj, "inputS3Uri", where),
            scanned_files=optional_integer(obj, "scannedFiles", where),
            imported_files=optional_integer(obj, "importedFiles", where),
            files_with_customer_error=optional_integer(obj, "filesWithCustomerError", where),
            files_with_server_error=optional_integer(obj, "filesWithServerError", where),
            generated_image_sets=optional_integer(obj, "generatedImageSets", where),
        )


@dataclass(frozen=True)
class FailedFile:
    """A FAILURE line: a file the import rejected."""

    input_file: str
    exception_type: str | None
    message: str | None

    def to_json(self) -> dict[str, Any]:
        """A ``failures`` entry."""
        return {"inputFile": self.input_file, "exceptionType": self.exception_type, "message": self.message}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> FailedFile:
        """Parse a ``failures`` entry."""
        obj = mapping(doc, where)
        return cls(
            text(obj, "inputFile", where),
            optional_text(obj, "exceptionType", where),
            optional_text(obj, "message", where),
        )


@dataclass(frozen=True)
class WarningCode:
    """One warning of a WARNING line, by its numeric code."""

    code: int | None
    type: str | None
    affects_frames: bool

    def to_json(self) -> dict[str, Any]:
        """``{"code", "type", "affectsFrames"}``."""
        return {"code": self.code, "type": self.type, "affectsFrames": self.affects_frames}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> WarningCode:
        """Parse one warning."""
        obj = mapping(doc, where)
        return cls(
            optional_integer(obj, "code", where),
            optional_text(obj, "type", where),
            boolean(obj, "affectsFrames", where),
        )


@dataclass(frozen=True)
class WarnedFile:
    """A WARNING line: a file imported with warnings."""

    input_file: str
    image_set_id: str | None
    warnings: tuple[WarningCode, ...]

    def to_json(self) -> dict[str, Any]:
        """A ``warnings`` entry."""
        return {
            "inputFile": self.input_file,
            "imageSetId": self.image_set_id,
            "warnings": [w.to_json() for w in self.warnings],
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> WarnedFile:
        """Parse a ``warnings`` entry."""
        obj = mapping(doc, where)
        return cls(
            text(obj, "inputFile", where),
            optional_text(obj, "imageSetId", where),
            items(obj, "warnings", where, WarningCode.from_json),
        )


@dataclass(frozen=True)
class UnreadableLine:
    """An ndjson line that could not be parsed, and where it is."""

    file: str
    line: int
    problem: str

    def to_json(self) -> dict[str, Any]:
        """An ``unreadableLines`` entry."""
        return {"file": self.file, "line": self.line, "problem": self.problem}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> UnreadableLine:
        """Parse an ``unreadableLines`` entry."""
        obj = mapping(doc, where)
        return cls(text(obj, "file", where), integer(obj, "line", where), text(obj, "problem", where))


@dataclass(frozen=True)
class ImportFindings:
    """What the ndjson files say beyond the image sets: rejected files, warnings, unreadable lines."""

    failures: tuple[FailedFile, ...] = ()
    warnings: tuple[WarnedFile, ...] = ()
    unreadable_lines: tuple[UnreadableLine, ...] = ()

    @property
    def frame_warnings(self) -> bool:
        """A warning whose code predicts frames that fail verification."""
        return any(w.affects_frames for line in self.warnings for w in line.warnings)

    def to_json(self) -> dict[str, Any]:
        """The ``failures``, ``warnings`` and ``unreadableLines`` members of a report or plan."""
        return {
            "failures": [f.to_json() for f in self.failures],
            "warnings": [w.to_json() for w in self.warnings],
            "unreadableLines": [u.to_json() for u in self.unreadable_lines],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> ImportFindings:
        """Parse those members of a report or plan document."""
        return cls(
            failures=items(obj, "failures", where, FailedFile.from_json),
            warnings=items(obj, "warnings", where, WarnedFile.from_json),
            unreadable_lines=items(obj, "unreadableLines", where, UnreadableLine.from_json),
        )


def iso_time(epoch_seconds: float) -> str:
    """A report time: ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Timings:
    """When the job's verification started and finished, and the work it took."""

    started_at: str | None
    finished_at: str
    work_items: int
    verification_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The report's ``timings`` object."""
        return {
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "workItems": self.work_items,
            "verificationSeconds": self.verification_seconds,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str = "timings") -> Timings:
        """Parse a ``timings`` object."""
        obj = mapping(doc, where)
        return cls(
            optional_text(obj, "startedAt", where),
            text(obj, "finishedAt", where),
            integer(obj, "workItems", where),
            number(obj, "verificationSeconds", where),
        )


@dataclass(frozen=True)
class JobSummary:
    """The report's totals, computed from its values."""

    image_sets: int
    image_set_errors: int
    frames: FrameCounts
    import_failures: int
    import_warnings: int
    unreadable_lines: int
    lossy_decoder_differs: int = 0
    """Frames whose lossy source decodes, with every decoder tried, to pixels within the tolerance of the
    stored ones but not to them (``lossy-decoder-differs``): not mismatches, but what was verified depends on
    the decoder."""

    def to_json(self) -> dict[str, Any]:
        """The report's ``summary`` object."""
        return {
            "imageSets": self.image_sets,
            "imageSetErrors": self.image_set_errors,
            "frames": self.frames.to_json(),
            "importFailures": self.import_failures,
            "importWarnings": self.import_warnings,
            "unreadableLines": self.unreadable_lines,
            "lossyDecoderDiffers": self.lossy_decoder_differs,
        }


PROBLEMS_KEPT = 1_000
"""Problem frames a :class:`JobTally` keeps (mismatches first, then the rest, each in report order): the most
the HTML page lists (``report_html.PAGE_PROBLEM_ROWS``) and more than the alert's 50. A job of a million
frames may have a million problems; beyond this many, a person reads ``report.json``, not a page."""


@dataclass(frozen=True)
class JobTotals:
    """What a pass over a job's image sets adds up to, without holding its frames."""

    summary: JobSummary
    source_incomplete: bool
    """Some frame could not be compared with its source, or some image set lists a source file problem."""
    problems: tuple[tuple[str, FrameResult], ...]
    """``(image set ID, frame)``: the first :data:`PROBLEMS_KEPT` of :meth:`JobReport.problem_frames`."""
    problem_count: int
    """How many problem frames the job has in all."""
    unreadable_image_sets: tuple[str, ...]
    """The first :data:`PROBLEMS_KEPT` image sets (in report order) with an error."""
    unreadable_causes: tuple[str, ...] = ()
    """Why each of ``unreadable_image_sets`` could not be read, in words safe to publish
    (:func:`image_set_error_cause`): the error codes and counts of its error, never its free text."""
    unreadable_errors: tuple[str, ...] = ()
    """Their errors, one per ID of :attr:`unreadable_image_sets` (the HTML page lists them before the image
    sets, whose rows a streaming merge has written by then)."""


class JobTally:
    """Running totals over a job's image sets, added in report order: the one place the summary and the
    problem list are counted, for a whole :class:`JobReport` and for a merge that streams its image sets."""

    def __init__(self, findings: ImportFindings, *, kept: int = PROBLEMS_KEPT) -> None:
        self._findings = findings
        self._kept = kept
        self._image_sets = 0
        self._frames = FrameCounts()
        self._source_incomplete = False
        self._lossy_decoder_differs = 0
        # Mismatches are listed before every other problem, so each kind is kept (and counted) on its own.
        self._mismatches: list[tuple[str, FrameResult]] = []
        self._others: list[tuple[str, FrameResult]] = []
        self._mismatch_count = 0
        self._other_count = 0
        self._unreadable: list[str] = []
        self._unreadable_causes: list[str] = []
        self._unreadable_errors: list[str] = []
        self._unreadable_count = 0

    def add(self, image_set: ImageSetReport) -> None:
        """Count one image set (the next in report order)."""
        self._image_sets += 1
        self._frames = self._frames + image_set.counts
        if image_set.error:
            self._unreadable_count += 1
            if len(self._unreadable) < self._kept:
                self._unreadable.append(image_set.image_set_id)
                self._unreadable_causes.append(image_set_error_cause(image_set.error))
                self._unreadable_errors.append(image_set.error)
        if image_set.source_errors or image_set.orphan_source_frames:
            self._source_incomplete = True
        for frame in image_set.frames:
            unchecked = frame.source_unchecked
            self._source_incomplete = self._source_incomplete or unchecked
            self._lossy_decoder_differs += frame.decoder_dependent
            if frame.status is Status.MISMATCH:
                self._mismatch_count += 1
                if len(self._mismatches) < self._kept:
                    self._mismatches.append((image_set.image_set_id, frame))
            elif frame.status is not Status.MATCH or unchecked or frame.decoder_dependent:
                self._other_count += 1
                if len(self._others) < self._kept:
                    self._others.append((image_set.image_set_id, frame))

    def totals(self) -> JobTotals:
        """The totals of the image sets added so far."""
        findings = self._findings
        problems = (self._mismatches + self._others)[: self._kept]
        return JobTotals(
            summary=JobSummary(
                image_sets=self._image_sets,
                image_set_errors=self._unreadable_count,
                frames=self._frames,
                import_failures=len(findings.failures),
                import_warnings=len(findings.warnings),
                unreadable_lines=len(findings.unreadable_lines),
                lossy_decoder_differs=self._lossy_decoder_differs,
            ),
            source_incomplete=self._source_incomplete,
            problems=tuple(problems),
            problem_count=self._mismatch_count + self._other_count,
            unreadable_image_sets=tuple(self._unreadable),
            unreadable_causes=tuple(self._unreadable_causes),
            unreadable_errors=tuple(self._unreadable_errors),
        )


@dataclass(frozen=True)
class JobOutcome:
    """A verified job without its frames: header, findings, totals and the bounded problem lists. Enough for
    the verdict, the alert and the HTML page; a streaming merge returns it, :meth:`JobReport.outcome` too."""

    job: JobHeader
    findings: ImportFindings
    notes: tuple[str, ...]
    discrepancies: tuple[str, ...]
    totals: JobTotals
    timings: Timings | None = None

    @property
    def summary(self) -> JobSummary:
        """The report's ``summary``."""
        return self.totals.summary

    @property
    def verdict(self) -> Verdict:
        """The one decision (see :func:`decide`)."""
        return decide(self)


@dataclass(frozen=True)
class JobReport:
    """Everything known about one job after verification; the verdict follows from it."""

    job: JobHeader
    findings: ImportFindings = field(default_factory=ImportFindings)
    notes: tuple[str, ...] = ()
    discrepancies: tuple[str, ...] = ()
    """Counts or identities that disagree (manifest, ndjson lines, metadata, GetDICOMImportJob), in words:
    each one makes the job UNVERIFIED."""
    evidence: tuple[ObjectEvidence, ...] = ()
    """The manifest first, then every ndjson file read, with its ETag and SHA-256."""
    image_sets: tuple[ImageSetReport, ...] = ()
    timings: Timings | None = None

    def frames(self) -> Iterable[tuple[str, FrameResult]]:
        """``(image set ID, frame)`` for every frame of the job, in report order."""
        for image_set in self.image_sets:
            for frame in image_set.frames:
                yield image_set.image_set_id, frame

    def outcome(self) -> JobOutcome:
        """The report without its frames, tallied as a streaming merge tallies it."""
        tally = JobTally(self.findings)
        for image_set in self.image_sets:
            tally.add(image_set)
        return JobOutcome(self.job, self.findings, self.notes, self.discrepancies, tally.totals(), self.timings)

    @property
    def summary(self) -> JobSummary:
        """The totals."""
        return self.outcome().summary

    @property
    def verdict(self) -> Verdict:
        """The one decision: MISMATCH, IMPORT_FAILED, UNVERIFIED or CLEAN (see :func:`decide`)."""
        return self.outcome().verdict

    def problem_frames(self) -> list[tuple[str, FrameResult]]:
        """``(image set ID, frame)`` for every frame that is not a clean MATCH (or matched its lossy source only
        within the decoder tolerance), mismatches first."""
        found = [
            (i, f)
            for i, f in self.frames()
            if f.status is not Status.MATCH or f.source_unchecked or f.decoder_dependent
        ]
        return sorted(found, key=lambda pair: pair[1].status is not Status.MISMATCH)

    def to_json(self) -> dict[str, Any]:
        """The report document (``report.json``, and ``ahi-verify job --format json``).

        Members in the order :class:`ReportDocumentWriter` streams them: what the plan knows, the image sets,
        then what only the whole merge knows (discrepancies, summary, verdict, timings).
        """
        return {
            **report_opening(self.job, self.findings, self.notes, self.evidence),
            "imageSets": [s.to_json() for s in self.image_sets],
            **report_closing(self.outcome()),
        }

    @classmethod
    def from_json(cls, doc: Any) -> JobReport:
        """Parse a report document.

        Raises
        ------
        ReportFormatError
            A field is missing or of the wrong type, or the stored summary or verdict is not the one the
            document's own values give (an edited report).
        """
        obj = mapping(doc, "report")
        if obj.get("schemaVersion") != SCHEMA_VERSION:
            raise ReportFormatError(f"report.schemaVersion is not {SCHEMA_VERSION}")
        timings = obj.get("timings")
        report = cls(
            job=JobHeader.from_json(obj.get("job")),
            findings=ImportFindings.from_json(obj, "report"),
            notes=texts(obj, "notes", "report"),
            discrepancies=texts(obj, "discrepancies", "report"),
            evidence=items(obj, "evidence", "report", ObjectEvidence.from_json),
            image_sets=items(obj, "imageSets", "report", ImageSetReport.from_json),
            timings=None if timings is None else Timings.from_json(timings),
        )
        outcome = report.outcome()
        same(obj.get("summary"), outcome.summary.to_json(), "report.summary")
        same(obj.get("verdict"), outcome.verdict.value, "report.verdict")
        return report


def report_opening(
    job: JobHeader, findings: ImportFindings, notes: tuple[str, ...], evidence: tuple[ObjectEvidence, ...]
) -> dict[str, Any]:
    """The report document's members that come before ``imageSets``: all known once the job is planned."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "toolVersion": __version__,
        "job": job.to_json(),
        **findings.to_json(),
        "notes": list(notes),
        "evidence": [e.to_json() for e in evidence],
    }


def report_closing(outcome: JobOutcome) -> dict[str, Any]:
    """The report document's members after ``imageSets``: known only once every image set is merged."""
    doc: dict[str, Any] = {
        "discrepancies": list(outcome.discrepancies),
        "summary": outcome.summary.to_json(),
        "verdict": outcome.verdict.value,
    }
    if outcome.timings is not None:
        doc["timings"] = outcome.timings.to_json()
    return doc


def _compact(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


class ReportDocumentWriter:
    """``report.json`` written in pieces as a merge produces image sets: the document of
    :meth:`JobReport.to_json` for the same job, member for member, with one image set in memory at a time.

    Parameters
    ----------
    write : callable
        Takes each piece of text, in order (a file's or an upload's ``write``).
    job, findings, notes, evidence
        What the plan knows: the members before ``imageSets``.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        job: JobHeader,
        findings: ImportFindings,
        notes: tuple[str, ...],
        evidence: tuple[ObjectEvidence, ...],
    ) -> None:
        self._write = write
        self._written = 0
        opening = _compact(report_opening(job, findings, notes, evidence))
        # The opening object without its closing brace, so the image sets follow as its next member.
        write(opening[:-1] + ',"imageSets":[')

    def add(self, image_set: ImageSetReport) -> None:
        """Write the next image set's entry."""
        self._write(("," if self._written else "") + _compact(image_set.to_json()))
        self._written += 1

    def finish(self, outcome: JobOutcome) -> None:
        """Close ``imageSets`` and write the members only the whole merge knows."""
        self._write("]," + _compact(report_closing(outcome))[1:])


def decide(outcome: JobOutcome) -> Verdict:
    """The job's verdict, from its totals (a whole report's or a streaming merge's: one rule for both).

    MISMATCH when any frame's pixels differ (from the published checksum or, with the three-way check,
    from the source). IMPORT_FAILED when the import job failed. CLEAN only when there is at least one
    frame, every frame matched (and agreed with its source, when compared), every image set was read,
    the import reported no failed file, no unreadable line and no warning that affects frames, and no
    count or identity disagrees (``discrepancies``). Anything else is UNVERIFIED.
    """
    if outcome.summary.frames.mismatch:
        return Verdict.MISMATCH
    if outcome.job.status is JobStatus.FAILED:
        return Verdict.IMPORT_FAILED
    return Verdict.UNVERIFIED if unverified_causes(outcome) else Verdict.CLEAN


def decide_image_set(image_set: ImageSetReport) -> Verdict:
    """One image set's verdict (its ledger row's), by the rule of :func:`decide` applied to its own frames.

    MISMATCH when any of its frames' pixels differ (from the published checksum or the source). UNVERIFIED
    when it could not be read, lists no frame, has a frame that could not be verified, or, with the
    three-way check, a source file that could not be read, a source frame with no counterpart or a frame not
    compared with its source. CLEAN otherwise. (A job's own findings, such as a failed file, belong to the
    job, not to an image set: they decide the job's verdict, never an image set's row.)
    """
    counts = image_set.counts
    if counts.mismatch:
        return Verdict.MISMATCH
    incomplete = (
        image_set.error is not None
        or counts.error
        or counts.total == 0
        or image_set.source_errors
        or image_set.orphan_source_frames
        or any(frame.source_unchecked for frame in image_set.frames)
    )
    return Verdict.UNVERIFIED if incomplete else Verdict.CLEAN


def unverified_causes(outcome: JobOutcome) -> list[str]:
    """What keeps the job from CLEAN short of a mismatch, in words for people (empty: nothing does).

    The rule of :func:`decide` itself: the verdict is UNVERIFIED exactly when this list is not empty (and
    there is no mismatch and the import did not fail), so the words a CLI table or an alert prints are the
    reasons the verdict was decided on, not a second account of them.
    """
    summary, job, findings = outcome.summary, outcome.job, outcome.findings
    frames = summary.frames
    rejected = (job.files_with_customer_error or 0) + (job.files_with_server_error or 0)
    causes = [
        (frames.error, f"{_count(frames.error, 'frame')} could not be verified"),
        (summary.image_set_errors, f"{_count(summary.image_set_errors, 'image set')} could not be read"),
        (summary.import_failures, f"{_count(summary.import_failures, 'file')} failed import"),
        (rejected, f"the manifest counts {_count(rejected, 'file')} with errors"),
        (summary.unreadable_lines, f"{_count(summary.unreadable_lines, 'job output line')} could not be read"),
        (findings.frame_warnings, "files were imported with warnings that affect their frames"),
        (frames.total == 0, "no frame was verified"),
        (outcome.discrepancies, f"{_count(len(outcome.discrepancies), 'count')} or identities disagree"),
        (outcome.totals.source_incomplete, "frames were not compared with their source files"),
    ]
    return [words for present, words in causes if present]


# The texts an image set's error is made of (joined by "; " when its parts disagree), each written by this
# project: what may be published of each is a fixed phrase, an error code or a count, never the rest (the
# service's message or an exception's text may name objects of the import, whose keys may embed names).
_ERROR_CODE = r"([A-Za-z][A-Za-z0-9_.]{0,63})"
_CAUSES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    # healthimaging.HealthImagingSource: "<Code>: <message> (after N retries)" from the service.
    (re.compile(rf"GetImageSetMetadata for image set \S+ failed: {_ERROR_CODE}: "), lambda m: m[1]),
    (re.compile(r"GetImageSetMetadata for image set \S+ failed: "), lambda m: "GetImageSetMetadata failed"),
    # image_set.load_image_set_frames: the document could not be parsed.
    (re.compile(r"image set \S+: "), lambda m: "its metadata could not be parsed"),
    # merge: no part, or parts that do not cover the image set.
    (re.compile(r"no work item of this image set completed"), lambda m: m[0]),
    (re.compile(r"([0-9]+) of ([0-9]+) frames have no recorded result"), lambda m: m[0]),
    # The worker's last delivery and the dead-letter recorder.
    (
        re.compile(
            rf"work item failed on all ([0-9]+) deliveries and was moved to the dead-letter queue: {_ERROR_CODE}:"
        ),
        lambda m: f"its work item failed on all {m[1]} deliveries ({m[2]})",
    ),
    (
        re.compile(r"work item was moved to the dead-letter queue after ([0-9]+) deliveries"),
        lambda m: f"its work item was dead-lettered after {m[1]} deliveries that failed or ran out of time",
    ),
)


def image_set_error_cause(error: str | None) -> str:
    """Why an image set could not be read, in words safe to publish: the error code (``AccessDeniedException``)
    or the project's own phrase for each part of ``error``, none of its free text.

    An error none of the known forms matches is "see the report" (its text stays in ``report.json``).
    """
    causes: list[str] = []
    for part in (error or "").split("; "):
        for pattern, words in _CAUSES:
            found = pattern.match(part)
            if found:
                causes.append(words(found))
                break
    return ", ".join(dict.fromkeys(causes)) or "see the report"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
