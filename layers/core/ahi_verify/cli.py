"""``ahi-verify``: verify HealthImaging frames from the command line.

Exit codes: 0 every frame matched; 1 at least one frame mismatched; 3 nothing mismatched but something
could not be verified (a frame ERROR, or the image set itself); 2 usage errors.
Output never contains patient data: only data store, image set and frame IDs, DICOM UIDs and checksums.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

import boto3

from .frame_check import FrameResult, Status
from .healthimaging import DEFAULT_MAX_ATTEMPTS, HealthImagingSource, describe_import_job, make_client
from .image_set import ImageSetError, ImageSetResult, VerifyOptions, prefer_io_threads, verify_image_set
from .job import JobResult, job_folder, verify_job
from .job_output import ManifestError
from .report import Verdict, job_report
from .s3_output import JobOutputError, JobOutputReader

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_UNVERIFIED = 0, 1, 2, 3
_ID = re.compile(r"^[0-9a-z]{32}$")


def _service_id(value: str) -> str:
    if not _ID.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a HealthImaging ID (32 characters, 0-9 and a-z)")
    return value


def _version(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not an image set version (a positive integer)")
    return value


def _job_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-z]{1,32}", value):
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
        "--concurrency", type=_positive, default=VerifyOptions().fetch_concurrency, help="frames fetched at once"
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
    client = make_client(max_pool_connections=args.concurrency, max_attempts=args.max_attempts or DEFAULT_MAX_ATTEMPTS)
    progress = _Progress(sys.stderr)
    try:
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
            options=VerifyOptions(fetch_concurrency=args.concurrency),
            on_result=progress.update,
        )
    except ImageSetError as exc:
        progress.finish()  # end the progress line before the message
        return _unverifiable("image set", exc, _error_document(args.datastore_id, args.image_set_id, str(exc)), args)
    finally:
        progress.finish()
    _emit(args, image_set_document(result), lambda: print_table(result, sys.stdout))
    return exit_code(result)


def _run_job(args: argparse.Namespace, client: object, progress: _Progress) -> int:
    try:
        uri = args.job
        if uri is None:
            described = describe_import_job(client, args.datastore_id, args.job_id)
            if described.status != "COMPLETED":
                why = f": {described.message}" if described.message else ""
                raise JobOutputError(f"import job {args.job_id} is {described.status}{why}")
            uri = described.output_folder_uri
        reader = JobOutputReader(boto3.client("s3"))
        result = verify_job(
            reader,
            HealthImagingSource(client),
            job_folder(uri),
            options=VerifyOptions(fetch_concurrency=args.concurrency),
            manifest_wait_s=args.manifest_wait,
            with_sources=args.source,
            on_result=progress.update,
        )
    except (JobOutputError, ManifestError, ImageSetError) as exc:
        progress.finish()  # end the progress line before the message
        return _unverifiable("job", exc, {"error": str(exc)}, args)
    finally:
        progress.finish()
    document = job_report(result)
    _emit(args, document, lambda: print_job_table(result, sys.stdout))
    return job_exit_code(document)


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


def exit_code(result: ImageSetResult) -> int:
    """0 all MATCH, 1 any MISMATCH, 3 otherwise (errors, or no frames at all)."""
    if result.count(Status.MISMATCH):
        return EXIT_MISMATCH
    return EXIT_OK if result.all_match else EXIT_UNVERIFIED


def summary(result: ImageSetResult) -> dict[str, int]:
    """Frame counts by status."""
    return {
        "total": len(result.results),
        "match": result.count(Status.MATCH),
        "mismatch": result.count(Status.MISMATCH),
        "error": result.count(Status.ERROR),
    }


def image_set_document(result: ImageSetResult) -> dict[str, object]:
    """The ``--format json`` document."""
    return {
        "datastoreId": result.datastore_id,
        "imageSetId": result.image_set_id,
        "versionId": result.version_id,
        "frames": [r.to_json() for r in result.results],
        "summary": summary(result),
    }


def _error_document(datastore_id: str, image_set_id: str, message: str) -> dict[str, object]:
    return {
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "error": message,
        "frames": [],
        "summary": {"total": 0, "match": 0, "mismatch": 0, "error": 0},
    }


def print_table(result: ImageSetResult, out: TextIO) -> None:
    """Human-readable report: the frames that did not match first, then the counts."""
    problems = [r for r in result.results if r.status is not Status.MATCH]
    print(f"Image set {result.image_set_id} (data store {result.datastore_id})", file=out)
    if problems:
        print(f"{'status':<9} {'frame id':<32} {'#':>4} {'expected':>10} {'actual':>10}  reason", file=out)
        for r in problems:
            print(_row(r), file=out)
    counts = summary(result)
    print(
        f"{counts['total']} frames: {counts['match']} match, {counts['mismatch']} mismatch, {counts['error']} error",
        file=out,
    )


def _row(r: FrameResult) -> str:
    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    why = r.reason.value if r.reason else ""
    if r.detail:
        why = f"{why}: {r.detail}"
    frame_id = r.frame.image_frame_id or "(no id)"
    return (
        f"{r.status.value:<9} {frame_id:<32} {r.frame.frame_number:>4} {num(r.expected):>10} {num(r.actual):>10}  {why}"
    )


def job_exit_code(document: Mapping[str, object]) -> int:
    """From the report's verdict: 1 any mismatch (published or source checksum), 0 clean, 3 otherwise."""
    decided = Verdict(str(document["verdict"]))
    if decided is Verdict.MISMATCH:
        return EXIT_MISMATCH
    return EXIT_OK if decided is Verdict.CLEAN else EXIT_UNVERIFIED


def print_job_table(result: JobResult, out: TextIO) -> None:
    """Human-readable job report: problems first, then the counts."""
    manifest = result.manifest
    print(f"Import job {manifest.job_id} (data store {manifest.datastore_id})", file=out)
    print(f"  output: {result.folder.uri}", file=out)
    for outcome in result.image_sets:
        if outcome.error:
            print(f"ERROR     image set {outcome.summary.image_set_id}: {outcome.error}", file=out)
        elif outcome.result is not None and not outcome.result.all_match:
            print_table(outcome.result, out)
        for problem in outcome.source_errors:
            print(f"SOURCE    {problem['inputFile']}: {problem['error']}", file=out)
        for orphan in outcome.orphan_source_frames:
            print(f"LOST      {orphan} (in the source, not in image set {outcome.summary.image_set_id})", file=out)
        for index, c in sorted((outcome.sources or {}).items()):
            if c.relation.value != "consistent":
                frame = outcome.result.results[index].frame if outcome.result else None
                where = f"{frame.image_frame_id} (frame {frame.frame_number})" if frame else str(index)
                print(f"THREE-WAY {where}: {c.relation.value}", file=out)
    for f in result.findings.failures:
        print(f"FAILED    {f.input_file}: {f.exception_type}: {f.message}", file=out)
    for w in result.findings.warnings:
        codes = ", ".join(str(x.code) for x in w.warnings)
        print(f"WARNING   {w.input_file}: codes {codes}", file=out)
    for p in result.findings.problems:
        print(f"UNREADABLE {p.key} line {p.line_number}: {p.problem}", file=out)
    for note in result.notes:
        print(f"NOTE      {note}", file=out)
    counts = result.frame_counts()
    print(
        f"{len(result.image_sets)} image sets, {counts['total']} frames: {counts['match']} match, "
        f"{counts['mismatch']} mismatch, {counts['error']} error; {len(result.findings.failures)} failed files, "
        f"{len(result.findings.warnings)} files with warnings",
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
