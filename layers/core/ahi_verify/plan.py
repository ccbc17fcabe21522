"""The job's first step: its output folder (manifest + ndjson lines) -> a plan of image-set work.

The plan is everything the report needs that is not a frame: the job header, what the ndjson files say,
notes on counts that disagree, and the image sets to verify (with their source files when the three-way
check runs). The CLI keeps it in memory; the application stores it as the job's ``job.json`` so that the
workers and the finaliser build the report from the same values.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .documents import ReportFormatError, boolean, integer, items, mapping, optional_bool, optional_integer, text, texts
from .ids import is_job_id, is_service_id, parse_job_folder
from .job_output import ImportLine, JobManifest, LineKind, LineProblem, parse_line, parse_manifest
from .locations import MANIFEST_NAME, S3Location
from .ports import ImportJobError, ImportJobs, JobOutputStore
from .report import (
    SCHEMA_VERSION,
    FailedFile,
    ImportFindings,
    JobHeader,
    JobStatus,
    ObjectEvidence,
    UnreadableLine,
    WarnedFile,
    WarningCode,
)
from .work_items import WorkItem


@dataclass
class LineTally:
    """What the ndjson files say while they stream by: counts for successes, full entries for problems."""

    lines: collections.Counter[LineKind] = field(default_factory=collections.Counter)
    failures: list[ImportLine] = field(default_factory=list)
    warnings: list[ImportLine] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)
    files_per_image_set: collections.Counter[str] = field(default_factory=collections.Counter)
    versions: dict[str, tuple[int | None, bool | None]] = field(default_factory=dict)
    """Image set ID -> (imageSetVersion, isPrimary) of the first line naming it."""
    evidence: list[ObjectEvidence] = field(default_factory=list)
    """The manifest, then every ndjson file as it was read."""
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
        self.versions.setdefault(parsed.image_set_id, (parsed.image_set_version, parsed.is_primary))
        if self.sources is not None:
            self.sources.setdefault(parsed.image_set_id, []).append(parsed.input_file)

    def findings(self) -> ImportFindings:
        """The report's view: rejected files, warned files, unreadable lines."""
        return ImportFindings(
            failures=tuple(FailedFile(f.input_file, f.exception_type, f.message) for f in self.failures),
            warnings=tuple(
                WarnedFile(
                    w.input_file,
                    w.image_set_id,
                    tuple(WarningCode(x.code, x.type, x.affects_frames) for x in w.warnings),
                )
                for w in self.warnings
            ),
            unreadable_lines=tuple(UnreadableLine(p.key, p.line_number, p.problem) for p in self.problems),
        )


def read_job(
    reader: JobOutputStore, folder: S3Location, *, manifest_wait_s: float, with_sources: bool = False
) -> tuple[JobManifest, LineTally, list[str]]:
    """Read the manifest and stream every ndjson line.

    Returns
    -------
    manifest, tally, notes
        ``notes`` lists disagreements between line counts and the manifest totals; AWS does not document
        that relationship, so they are reported, not failed on.

    Raises
    ------
    JobOutputError, ManifestError
        The manifest cannot be read or parsed, or an ndjson file cannot be read.
    """
    stored = reader.read_manifest(folder, wait_s=manifest_wait_s)
    manifest = parse_manifest(stored.body, folder.child(MANIFEST_NAME).uri)
    tally = LineTally(sources={} if with_sources else None)
    tally.evidence.append(stored.evidence)
    for kind in LineKind:
        for key, number, line in reader.lines(kind, folder.child(f"{kind.value}/"), tally.evidence.append):
            tally.add(parse_line(kind, line, key, number))
    notes = []
    imported = tally.lines[LineKind.SUCCESS] + tally.lines[LineKind.WARNING]
    if imported != manifest.imported_files:
        notes.append(
            f"SUCCESS+WARNING files list {imported} imported files; the manifest says {manifest.imported_files}"
        )
    if tally.lines[LineKind.FAILURE] != manifest.failed_files:
        notes.append(
            f"FAILURE files list {tally.lines[LineKind.FAILURE]} files; the manifest counts "
            f"{manifest.failed_files} files with errors"
        )
    if manifest.duplicate_image_set_entries:
        notes.append(f"the manifest lists {manifest.duplicate_image_set_entries} image set(s) more than once")
    return manifest, tally, notes


@dataclass(frozen=True)
class PlannedImageSet:
    """An image set to verify, as the manifest lists it."""

    image_set_id: str
    version: int | None
    is_primary: bool | None
    input_files: tuple[str, ...] = ()
    """Its source P10 files (SUCCESS/WARNING lines), when the three-way check runs."""
    in_manifest: bool = True
    """False for an image set that only SUCCESS/WARNING lines name: verified, and a discrepancy."""
    imported_files: int = 0
    """SUCCESS and WARNING lines that name it."""
    matched_sop_instances: int | None = None
    """The manifest's ``numberOfMatchedSOPInstances``."""

    @classmethod
    def from_json(cls, doc: Any, where: str) -> PlannedImageSet:
        """Parse a plan's ``imageSets`` entry."""
        obj = mapping(doc, where)
        return cls(
            text(obj, "imageSetId", where),
            optional_integer(obj, "version", where),
            optional_bool(obj, "isPrimary", where),
            texts(obj, "inputFiles", where),
            boolean(obj, "inManifest", where),
            integer(obj, "importedFiles", where),
            optional_integer(obj, "matchedSOPInstances", where),
        )

    def to_json(self) -> dict[str, Any]:
        """A plan's ``imageSets`` entry."""
        return {
            "imageSetId": self.image_set_id,
            "version": self.version,
            "isPrimary": self.is_primary,
            "inputFiles": list(self.input_files),
            "inManifest": self.in_manifest,
            "importedFiles": self.imported_files,
            "matchedSOPInstances": self.matched_sop_instances,
        }


@dataclass(frozen=True)
class JobPlan:
    """A job ready to verify: the report's header values and the image sets to fan out."""

    job: JobHeader
    findings: ImportFindings
    notes: tuple[str, ...]
    image_sets: tuple[PlannedImageSet, ...]
    started_at: str
    with_sources: bool = False
    discrepancies: tuple[str, ...] = ()
    """What disagrees before any frame is fetched (IDs, GetDICOMImportJob, counts); each makes the job
    UNVERIFIED."""
    evidence: tuple[ObjectEvidence, ...] = ()
    """The manifest and every ndjson file read, with ETag and SHA-256."""
    listed: bool = False
    """The image sets are those the job's parts name, not ``image_sets`` (a data store audit: its listing can be
    millions long, so the plan stays small and the walk keeps constant memory); each is a verified image set of
    the report, in image set ID order, as if the plan listed it."""

    def work_items(self) -> list[WorkItem]:
        """One work item per image set (a worker may split a large one into frame ranges)."""
        return [WorkItem(self.job.job_id, self.job.datastore_id, s.image_set_id, s.version) for s in self.image_sets]

    def image_set(self, image_set_id: str) -> PlannedImageSet | None:
        """The planned image set with this ID."""
        return next((s for s in self.image_sets if s.image_set_id == image_set_id), None)

    def to_json(self) -> dict[str, Any]:
        """The plan document (the application's ``job.json``)."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "job": self.job.to_json(),
            **self.findings.to_json(),
            "notes": list(self.notes),
            "imageSets": [s.to_json() for s in self.image_sets],
            "startedAt": self.started_at,
            "withSources": self.with_sources,
            "discrepancies": list(self.discrepancies),
            "evidence": [e.to_json() for e in self.evidence],
            **({"listed": True} if self.listed else {}),
        }

    @classmethod
    def from_json(cls, doc: Any) -> JobPlan:
        """Parse a plan document.

        Raises
        ------
        ReportFormatError
            Naming the field that is missing or malformed.
        """
        obj = mapping(doc, "plan")
        if obj.get("schemaVersion") != SCHEMA_VERSION:
            raise ReportFormatError(f"plan.schemaVersion is not {SCHEMA_VERSION}")
        return cls(
            job=JobHeader.from_json(obj.get("job")),
            findings=ImportFindings.from_json(obj, "plan"),
            notes=texts(obj, "notes", "plan"),
            image_sets=items(obj, "imageSets", "plan", PlannedImageSet.from_json),
            started_at=text(obj, "startedAt", "plan"),
            with_sources=boolean(obj, "withSources", "plan"),
            discrepancies=texts(obj, "discrepancies", "plan"),
            evidence=items(obj, "evidence", "plan", ObjectEvidence.from_json),
            listed=obj.get("listed") is True,
        )


def plan_job(
    reader: JobOutputStore,
    folder: S3Location,
    *,
    started_at: str,
    manifest_wait_s: float,
    with_sources: bool = False,
    expected_ids: tuple[str, str] | None = None,
    jobs: ImportJobs | None = None,
) -> JobPlan:
    """Read a completed job's output and plan its verification.

    Every image set the manifest lists is planned, and so is every image set only SUCCESS/WARNING lines
    name (a discrepancy, but never left unverified). What disagrees is recorded as the plan's
    discrepancies: the folder's IDs against the manifest's, the generated against the listed image sets,
    and what GetDICOMImportJob says about the job (unknown, not COMPLETED, another output folder).

    Parameters
    ----------
    reader : JobOutputStore
    folder : S3Location
        The job output folder.
    started_at : str
        ISO 8601 time verification started (the caller's clock).
    manifest_wait_s : float
        How long to wait for a manifest that lags the job's completion.
    with_sources : bool
        Keep each image set's source files, for the three-way check.
    expected_ids : (datastore_id, job_id), optional
        The IDs the trigger announced; else the folder's name gives them, else the manifest.
    jobs : ImportJobs, optional
        Confirm the job with GetDICOMImportJob (the application and the CLI always do; None skips it).

    Raises
    ------
    JobOutputError, ManifestError
        The manifest cannot be read or parsed: nothing can be verified.
    ImportJobError
        GetDICOMImportJob failed for another reason than not knowing the job (worth retrying).
    """
    manifest, tally, notes = read_job(reader, folder, manifest_wait_s=manifest_wait_s, with_sources=with_sources)
    datastore_id, job_id = expected_ids or parse_job_folder(folder.key) or (manifest.datastore_id, manifest.job_id)
    discrepancies = []
    if (manifest.datastore_id, manifest.job_id) != (datastore_id, job_id):
        # The manifest's strings are shown only when they are IDs: a forged manifest must not carry text
        # into the report and the alert.
        named = (_shown(manifest.datastore_id, is_service_id), _shown(manifest.job_id, is_job_id))
        discrepancies.append(
            f"the manifest names data store {named[0]} job {named[1]}, its folder data store {datastore_id} "
            f"job {job_id}; the folder's IDs are used"
        )
    if manifest.generated_image_sets != len(manifest.image_sets):
        discrepancies.append(
            f"the manifest says {manifest.generated_image_sets} image set(s) were generated and lists "
            f"{len(manifest.image_sets)}"
        )
    listed = {s.image_set_id for s in manifest.image_sets}
    unlisted = sorted(set(tally.files_per_image_set) - listed)
    if unlisted:
        discrepancies.append(
            f"{len(unlisted)} image set(s) named by SUCCESS/WARNING lines are missing from the manifest (verified "
            f"all the same): {', '.join(unlisted[:10])}{' ...' if len(unlisted) > 10 else ''}"
        )
    if jobs is not None:
        discrepancies += _confirm(jobs, datastore_id, job_id, folder)
    sources = tally.sources or {}

    def planned(image_set_id: str, version: int | None, primary: bool | None, **extra: Any) -> PlannedImageSet:
        files = tuple(sources.get(image_set_id, ()))
        count = tally.files_per_image_set[image_set_id]
        return PlannedImageSet(image_set_id, version, primary, files, imported_files=count, **extra)

    image_sets = [
        planned(s.image_set_id, s.version, s.is_primary, matched_sop_instances=s.matched_sop_instances)
        for s in manifest.image_sets
    ]
    image_sets += [planned(i, *tally.versions[i], in_manifest=False) for i in unlisted]
    return JobPlan(
        job=_header(job_id, datastore_id, folder, manifest),
        findings=tally.findings(),
        notes=tuple(notes),
        image_sets=tuple(image_sets),
        started_at=started_at,
        with_sources=with_sources,
        discrepancies=tuple(discrepancies),
        evidence=tuple(tally.evidence),
    )


def _confirm(jobs: ImportJobs, datastore_id: str, job_id: str, folder: S3Location) -> list[str]:
    """What GetDICOMImportJob says against the manifest: a forged or stray manifest is never CLEAN."""
    try:
        described = jobs.describe(datastore_id, job_id)
    except ImportJobError as exc:
        if not exc.not_found:
            raise
        return [f"GetDICOMImportJob does not know import job {job_id} in data store {datastore_id}"]
    found = []
    if described.status != "COMPLETED":
        found.append(f"GetDICOMImportJob says import job {job_id} is {described.status}, not COMPLETED")
    if described.output_folder_uri != folder.uri:
        # No URIs in the text: output prefixes are chosen by whoever starts an import.
        found.append(f"GetDICOMImportJob says import job {job_id} writes to another folder than this manifest's")
    return found


def _shown(value: str, is_id: Callable[[Any], bool]) -> str:
    return value if is_id(value) else "(not an ID)"


def failed_job_plan(datastore_id: str, job_id: str, folder: S3Location, message: str, started_at: str) -> JobPlan:
    """The plan of a job whose import failed: nothing to verify, the report says why."""
    header = JobHeader(job_id, datastore_id, folder.uri, JobStatus.FAILED, message)
    return JobPlan(header, ImportFindings(), (), (), started_at)


def _header(job_id: str, datastore_id: str, folder: S3Location, manifest: JobManifest) -> JobHeader:
    return JobHeader(
        job_id=job_id,
        datastore_id=datastore_id,
        folder=folder.uri,
        input_s3_uri=manifest.input_s3_uri,
        scanned_files=manifest.scanned_files,
        imported_files=manifest.imported_files,
        files_with_customer_error=manifest.customer_error_files,
        files_with_server_error=manifest.server_error_files,
        generated_image_sets=manifest.generated_image_sets,
    )
