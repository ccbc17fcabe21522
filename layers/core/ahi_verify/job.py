"""Verify a whole import job: manifest -> ndjson findings -> every image set -> (optionally) the sources.

A job is clean only when every frame of every image set matched and the import reported no failed file.
Failures and warnings from the ndjson files are reported even when every checksum matches: a COMPLETED
job can still have rejected files.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from .frame_check import FrameResult, Status
from .image_set import FrameSource, ImageSetError, ImageSetResult, VerifyOptions, verify_image_set
from .job_output import (
    ImageSetSummary,
    ImportLine,
    JobManifest,
    LineKind,
    LineProblem,
    parse_line,
    parse_manifest,
)
from .s3_output import JobOutputError, JobOutputReader, S3Location
from .source_check import SourceError, SourceFile, ThreeWay, read_source_file, three_way


@dataclass
class ImportFindings:
    """What the ndjson files say, kept small: counts for successes, full entries for problems."""

    lines: collections.Counter[LineKind] = field(default_factory=collections.Counter)
    failures: list[ImportLine] = field(default_factory=list)
    warnings: list[ImportLine] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    files_per_image_set: collections.Counter[str] = field(default_factory=collections.Counter)
    sources: dict[str, list[str]] | None = None
    """Image set ID -> input files, only when the three-way check needs them."""

    def add(self, parsed: ImportLine | LineProblem | None) -> None:
        """Account for one parsed line."""
        if parsed is None:
            return
        if isinstance(parsed, LineProblem):
            self.problems.append(parsed)
            return
        self.lines[parsed.kind] += 1
        if parsed.kind is LineKind.FAILURE:
            self.failures.append(parsed)
            return
        if parsed.kind is LineKind.WARNING:
            self.warnings.append(parsed)
        assert parsed.image_set_id is not None  # parse_line guarantees it for SUCCESS and WARNING lines
        self.files_per_image_set[parsed.image_set_id] += 1
        if self.sources is not None:
            self.sources.setdefault(parsed.image_set_id, []).append(parsed.input_file)


@dataclass(frozen=True)
class SourceComparison:
    """The three-way result for one frame."""

    source: int | None
    relation: ThreeWay
    input_file: str | None


@dataclass
class ImageSetOutcome:
    """One image set of the job: its frames' results, or why it could not be verified."""

    summary: ImageSetSummary
    result: ImageSetResult | None = None
    error: str | None = None
    sources: dict[int, SourceComparison] | None = None
    """Frame index -> three-way comparison (``--source`` only)."""
    source_errors: list[dict[str, str]] = field(default_factory=list)
    """``{"inputFile", "error"}`` for each source file that could not be read or decoded."""
    orphan_source_frames: list[str] = field(default_factory=list)
    """Source frames (file, SOP instance, frame number) that no stored frame corresponds to."""


@dataclass
class JobResult:
    """Everything known about one job after verification."""

    folder: S3Location
    manifest: JobManifest
    findings: ImportFindings
    image_sets: list[ImageSetOutcome]
    notes: list[str]

    def frames(self) -> Iterable[FrameResult]:
        """Every frame result of the job."""
        for outcome in self.image_sets:
            if outcome.result is not None:
                yield from outcome.result.results

    def frame_counts(self) -> dict[str, int]:
        """Frame totals by status."""
        counts = collections.Counter(r.status for r in self.frames())
        return {
            "total": sum(counts.values()),
            "match": counts[Status.MATCH],
            "mismatch": counts[Status.MISMATCH],
            "error": counts[Status.ERROR],
        }


def job_folder(uri: str) -> S3Location:
    """The job folder from a folder URI or the manifest's URI."""
    location = S3Location.parse(uri)
    key = location.key
    if key.endswith("job-output-manifest.json"):
        key = key[: -len("job-output-manifest.json")]
    elif not key.endswith("/"):
        key += "/"
    return S3Location(location.bucket, key)


def read_job(
    reader: JobOutputReader, folder: S3Location, *, manifest_wait_s: float, with_sources: bool = False
) -> tuple[JobManifest, ImportFindings, list[str]]:
    """Read the manifest and stream every ndjson line.

    Returns
    -------
    manifest, findings, notes
        ``notes`` lists disagreements between line counts and the manifest totals; AWS does not document
        that relationship, so they are reported, not failed on.
    """
    raw = reader.read_manifest(folder, wait_s=manifest_wait_s)
    manifest = parse_manifest(raw, f"{folder.uri}job-output-manifest.json")
    findings = ImportFindings(sources={} if with_sources else None)
    for kind in LineKind:
        prefix = S3Location(folder.bucket, f"{folder.key}{kind.value}/")
        for key, number, line in reader.lines(kind, prefix):
            findings.add(parse_line(kind, line, key, number))
    notes = []
    imported = findings.lines[LineKind.SUCCESS] + findings.lines[LineKind.WARNING]
    if imported != manifest.imported_files:
        notes.append(
            f"SUCCESS+WARNING files list {imported} imported files; the manifest says {manifest.imported_files}"
        )
    if findings.lines[LineKind.FAILURE] != manifest.failed_files:
        notes.append(
            f"FAILURE files list {findings.lines[LineKind.FAILURE]} files; the manifest counts "
            f"{manifest.failed_files} files with errors"
        )
    listed = {s.image_set_id for s in manifest.image_sets}
    unknown = sorted(set(findings.files_per_image_set) - listed)
    if unknown:
        notes.append(f"{len(unknown)} image set(s) named in ndjson lines are missing from the manifest: {unknown[:10]}")
    if manifest.duplicate_image_set_entries:
        notes.append(f"the manifest lists {manifest.duplicate_image_set_entries} image set(s) more than once")
    return manifest, findings, notes


def verify_job(
    reader: JobOutputReader,
    source: FrameSource,
    folder: S3Location,
    *,
    options: VerifyOptions | None = None,
    manifest_wait_s: float = 10.0,
    with_sources: bool = False,
    on_result: Callable[[FrameResult, int], None] | None = None,
) -> JobResult:
    """Verify every image set of one import job.

    Raises
    ------
    JobOutputError, ManifestError
        The manifest cannot be read or parsed: nothing can be verified.
    """
    manifest, findings, notes = read_job(reader, folder, manifest_wait_s=manifest_wait_s, with_sources=with_sources)
    outcomes = []
    for summary in manifest.image_sets:
        outcome = ImageSetOutcome(summary)
        version = str(summary.version) if summary.version is not None else None
        try:
            outcome.result = verify_image_set(
                source, manifest.datastore_id, summary.image_set_id, version, options, on_result
            )
        except ImageSetError as exc:
            outcome.error = str(exc)
        if with_sources and findings.sources is not None:
            _compare_sources(reader, manifest, outcome, findings.sources.get(summary.image_set_id, []))
        outcomes.append(outcome)
    return JobResult(folder, manifest, findings, outcomes, notes)


def _compare_sources(
    reader: JobOutputReader, manifest: JobManifest, outcome: ImageSetOutcome, inputs: list[str]
) -> None:
    """Fill the outcome's three-way comparison from the image set's source files."""
    input_root = S3Location.parse(manifest.input_s3_uri)
    by_frame: dict[tuple[str, int], tuple[int, str]] = {}
    for input_file in inputs:
        try:
            # inputFile is the key relative to the input bucket (it already carries the input prefix).
            data = reader.read_object(S3Location(input_root.bucket, input_file))
            parsed: SourceFile = read_source_file(data, input_file)
        except JobOutputError as exc:
            # The reader's message carries the object's URI; the report keeps the key in inputFile only.
            cause = exc.__cause__
            code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
            error = f"cannot be read from the input bucket ({code or type(cause).__name__})"
            outcome.source_errors.append({"inputFile": input_file, "error": error})
            continue
        except SourceError as exc:
            outcome.source_errors.append({"inputFile": input_file, "error": str(exc)})
            continue
        for frame in parsed.frames:
            by_frame[(parsed.sop_instance_uid, frame.frame_number)] = (frame.crc, input_file)
    results = outcome.result.results if outcome.result else ()
    outcome.sources = {}
    for r in results:
        found = by_frame.pop((r.frame.sop_instance_uid, r.frame.frame_number), None)
        decoded = r.actual if r.status in (Status.MATCH, Status.MISMATCH) else None
        relation = (
            ThreeWay.SOURCE_UNREADABLE
            if found is None and outcome.source_errors
            else three_way(found[0] if found else None, r.expected, decoded)
        )
        outcome.sources[r.frame.index] = SourceComparison(
            found[0] if found else None, relation, found[1] if found else None
        )
    if outcome.result is not None:
        outcome.orphan_source_frames = [
            f"{file}: frame {number}" for (_, number), (_, file) in sorted(by_frame.items())
        ]
