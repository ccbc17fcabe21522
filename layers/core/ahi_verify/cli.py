"""``ahi-verify``: verify HealthImaging frames from the command line.

Exit codes: 0 every frame matched; 1 at least one frame mismatched; 3 nothing mismatched but something
could not be verified (a frame ERROR, or the image set itself); 2 usage errors.
Output never contains patient data: only data store, image set and frame IDs, DICOM UIDs and checksums.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import boto3

from .budget import DEFAULT_BUDGET, MAX_FETCH_THREADS, Rates, sole_budget
from .healthimaging import DEFAULT_MAX_ATTEMPTS, HealthImagingJobs, HealthImagingSource, make_client
from .ids import is_job_id, is_service_id
from .image_set import VerifyOptions, prefer_io_threads, verify_image_set
from .job import verify_job
from .job_output import ManifestError
from .locations import LocationError, job_folder
from .outcomes import Status
from .ports import ImageSetError, ImportJobError, JobOutputError
from .report import FrameCounts, FrameResult, JobReport, Verdict
from .s3_output import JobOutputReader

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_UNVERIFIED = 0, 1, 2, 3


def _service_id(value: str) -> str:
    if not is_service_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a HealthImaging ID (32 characters, 0-9 and a-z)")
    return value


def _version(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not an image set version (a positive integer)")
    return value


def _job_id(value: str) -> str:
    if not is_job_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an import job ID (1-32 characters, 0-9 and a-z)")
    return value


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ahi-verify",
        description="Verify AWS HealthImaging pixel data checksums (IFRC) frame by frame.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    image_set = commands.add_parser("image-set", help="verify every frame of one image set")
    image_set.add_argument("datastore_id", type=_service_id, metavar="DATASTORE_ID")
    image_set.add_argument("image_set_id", type=_service_id, metavar="IMAGE_SET_ID")
    image_set.add_argument("--version", type=_version, help="image set version to verify (default: latest)")
    _add_common(image_set)
    job = commands.add_parser("job", help="verify every image set of an import job, and report its failed files")
    job.add_argument(
        "job",
        nargs="?",
        metavar="JOB",
        help="the job output folder or its manifest: s3://bucket/prefix/<datastoreId>-DicomImport-<jobId>/",
    )
    job.add_argument("--datastore-id", type=_service_id, help="with --job-id: find the folder with GetDICOMImportJob")
    job.add_argument("--job-id", type=_job_id)
    job.add_argument(
        "--source", action="store_true", help="also check every frame against the original P10 file in the input bucket"
    )
    job.add_argument(
        "--manifest-wait", type=float, default=10.0, metavar="SECONDS", help="how long to wait for a late manifest"
    )
    _add_common(job)
    return parser


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--format", choices=("table", "json"), default="table")
    command.add_argument(
        "--frame-rate",
        type=_positive,
        default=int(DEFAULT_BUDGET.frames),
        metavar="PER_SECOND",
        help=f"GetImageFrame requests per second, retries included (default {DEFAULT_BUDGET.frames:.0f}; the "
        "account's quota, shared with its viewers, is 1000)",
    )
    command.add_argument(
        "--metadata-rate",
        type=_positive,
        default=int(DEFAULT_BUDGET.metadata),
        metavar="PER_SECOND",
        help=f"GetImageSetMetadata requests per second (default {DEFAULT_BUDGET.metadata:.0f}; quota 50)",
    )
    command.add_argument(
        "--max-attempts", type=_positive, default=None, help="attempts per request, the first included (default 10)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "job" and bool(args.job) == bool(args.datastore_id and args.job_id):
        parser.error("job: give either JOB (an s3:// URI) or both --datastore-id and --job-id")
    prefer_io_threads()
    budget = sole_budget(Rates(args.frame_rate, args.metadata_rate))
    attempts = args.max_attempts or DEFAULT_MAX_ATTEMPTS
    client = make_client(max_pool_connections=MAX_FETCH_THREADS, max_attempts=attempts, budget=budget)
    args.options = VerifyOptions.budgeted(budget)
    progress = _Progress(sys.stderr)
    try:
        with budget.running():
            if args.command == "job":
                return _run_job(args, client, progress)
            return _run_image_set(args, client, progress)
    finally:
        progress.finish()


def _run_image_set(args: argparse.Namespace, client: object, progress: _Progress) -> int:
    try:
        result = verify_image_set(
            HealthImagingSource(client),
            args.datastore_id,
            args.image_set_id,
            version_id=args.version,
            options=args.options,
            on_result=progress.update,
        )
    except ImageSetError as exc:
        progress.finish()  # end the progress line before the message
        document = image_set_document(args.datastore_id, args.image_set_id, args.version, (), error=str(exc))
        return _unverifiable("image set", exc, document, args)
    finally:
        progress.finish()
    frames = result.results
    document = image_set_document(result.datastore_id, result.image_set_id, result.version_id, frames)
    _emit(args, document, lambda: print_table(result.datastore_id, result.image_set_id, frames, sys.stdout))
    return exit_code(FrameCounts.of(frames))


def _run_job(args: argparse.Namespace, client: object, progress: _Progress) -> int:
    jobs = HealthImagingJobs(client)
    try:
        uri = args.job
        if uri is None:
            described = jobs.describe(args.datastore_id, args.job_id)
            if described.status != "COMPLETED":
                why = f": {described.message}" if described.message else ""
                raise ImportJobError(f"import job {args.job_id} is {described.status}{why}")
            uri = described.output_folder_uri
        report = verify_job(
            JobOutputReader(boto3.client("s3")),
            HealthImagingSource(client),
            job_folder(uri),
            options=args.options,
            manifest_wait_s=args.manifest_wait,
            with_sources=args.source,
            on_result=progress.update,
            clock=time.time,
            jobs=jobs,
        )
    except (JobOutputError, ManifestError, ImageSetError, ImportJobError, LocationError) as exc:
        progress.finish()  # end the progress line before the message
        return _unverifiable("job", exc, {"error": str(exc)}, args)
    finally:
        progress.finish()
    _emit(args, report.to_json(), lambda: print_job_table(report, sys.stdout))
    return job_exit_code(report.verdict)


def _unverifiable(what: str, exc: Exception, document: dict[str, object], args: argparse.Namespace) -> int:
    print(f"ahi-verify: {what} could not be verified: {exc}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(document, indent=2))
    return EXIT_UNVERIFIED


def _emit(args: argparse.Namespace, document: dict[str, object], table: Callable[[], None]) -> None:
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        table()


def exit_code(counts: FrameCounts) -> int:
    """``image-set``: 0 all MATCH, 1 any MISMATCH, 3 otherwise (errors, or no frames at all)."""
    if counts.mismatch:
        return EXIT_MISMATCH
    return EXIT_OK if counts.all_match else EXIT_UNVERIFIED


def image_set_document(
    datastore_id: str,
    image_set_id: str,
    version_id: str | None,
    frames: tuple[FrameResult, ...],
    *,
    error: str | None = None,
) -> dict[str, object]:
    """The ``image-set --format json`` document."""
    document: dict[str, object] = {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "versionId": version_id,
        "frames": [f.to_json() for f in frames],
        "summary": FrameCounts.of(frames).to_json(),
    }
    if error is not None:
        document["error"] = error
    return document


def print_table(datastore_id: str, image_set_id: str, frames: Sequence[FrameResult], out: TextIO) -> None:
    """Human-readable image set: the frames that did not match first, then the counts."""
    problems = [f for f in frames if f.status is not Status.MATCH]
    print(f"Image set {image_set_id} (data store {datastore_id})", file=out)
    if problems:
        print(f"{'status':<9} {'frame id':<32} {'#':>4} {'expected':>10} {'actual':>10}  reason", file=out)
        for f in problems:
            print(_row(f), file=out)
    counts = FrameCounts.of(frames)
    print(f"{counts.total} frames: {counts.match} match, {counts.mismatch} mismatch, {counts.error} error", file=out)


def _row(f: FrameResult) -> str:
    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    why = f.reason.value if f.reason else ""
    if f.detail:
        why = f"{why}: {f.detail}"
    frame_id = f.image_frame_id or "(no id)"
    return f"{f.status.value:<9} {frame_id:<32} {f.frame_number:>4} {num(f.expected):>10} {num(f.actual):>10}  {why}"


def job_exit_code(verdict: Verdict) -> int:
    """``job``: from the report's verdict: 1 any mismatch (published or source checksum), 0 clean, 3 otherwise."""
    if verdict is Verdict.MISMATCH:
        return EXIT_MISMATCH
    return EXIT_OK if verdict is Verdict.CLEAN else EXIT_UNVERIFIED


def print_job_table(report: JobReport, out: TextIO) -> None:
    """Human-readable job report: problems first, then the counts."""
    job = report.job
    print(f"Import job {job.job_id} (data store {job.datastore_id})", file=out)
    print(f"  output: {job.folder}", file=out)
    for image_set in report.image_sets:
        if image_set.error:
            print(f"ERROR     image set {image_set.image_set_id}: {image_set.error}", file=out)
        elif any(f.status is not Status.MATCH for f in image_set.frames):
            print_table(job.datastore_id, image_set.image_set_id, image_set.frames, out)
        for problem in image_set.source_errors:
            print(f"SOURCE    {problem.input_file}: {problem.error}", file=out)
        for orphan in image_set.orphan_source_frames:
            print(f"LOST      {orphan} (in the source, not in image set {image_set.image_set_id})", file=out)
        for f in image_set.frames:
            if f.source_unchecked and f.source is not None:
                print(f"THREE-WAY {f.image_frame_id} (frame {f.frame_number}): {f.source.relation}", file=out)
    for failed in report.findings.failures:
        print(f"FAILED    {failed.input_file}: {failed.exception_type}: {failed.message}", file=out)
    for warned in report.findings.warnings:
        codes = ", ".join(str(x.code) for x in warned.warnings)
        print(f"WARNING   {warned.input_file}: codes {codes}", file=out)
    for line in report.findings.unreadable_lines:
        print(f"UNREADABLE {line.file} line {line.line}: {line.problem}", file=out)
    for note in report.notes:
        print(f"NOTE      {note}", file=out)
    for discrepancy in report.discrepancies:
        print(f"DISAGREES {discrepancy}", file=out)
    summary = report.summary
    counts = summary.frames
    print(
        f"{summary.image_sets} image sets, {counts.total} frames: {counts.match} match, "
        f"{counts.mismatch} mismatch, {counts.error} error; {summary.import_failures} failed files, "
        f"{summary.import_warnings} files with warnings",
        file=out,
    )


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._done = 0

    def update(self, result: FrameResult, total: int) -> None:
        self._done += 1
        if not self._enabled or (self._done % 16 and self._done != total):
            return
        width = 30
        filled = width * self._done // max(total, 1)
        self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self._done}/{total} frames")
        self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._done:
            self._stream.write("\n")
            self._stream.flush()
            self._done = 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
