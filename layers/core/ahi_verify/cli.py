"""``ahi-verify``: verify HealthImaging frames from the command line.

Exit codes (:data:`EXIT_CODES`): 0 clean; 1 at least one frame mismatched; 2 usage error; 3 nothing
mismatched but something could not be verified; 4 could not run (no region, credentials or profile, or an
endpoint that cannot be reached), with a one-line message naming what to set and no traceback unless
``--debug``. ``evidence validate`` has its own meanings of 0 (the chain is intact) and 1 (a report or digest
altered, missing, unlisted or out of order; :data:`EVIDENCE_EXIT_CODES`). Output never contains patient
data: only data store, image set and frame IDs, DICOM UIDs, checksums and S3 keys.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from tqdm import tqdm

from . import __version__
from .audit import AuditRun, audit_datastore, audit_header, audit_notes, audit_run_id
from .budget import DEFAULT_BUDGET, MAX_FETCH_THREADS, Rates, sole_budget
from .dynamo_ledger import DynamoLedger
from .evidence import EvidenceChain, EvidenceError, Validation
from .healthimaging import (
    DEFAULT_MAX_ATTEMPTS,
    HealthImagingJobs,
    HealthImagingListing,
    HealthImagingSource,
    make_client,
)
from .ids import is_job_id, is_service_id
from .image_set import VerifyOptions, prefer_io_threads, verify_image_set
from .job import verify_job
from .job_output import ManifestError
from .ledger import CSV_COLUMNS, ROW_VERDICTS, LedgerEntry, LedgerRecorder, csv_row, never_verified
from .locations import LocationError, S3Location, job_folder
from .outcomes import Status
from .ports import ImageSetError, ImageSetListError, ImportJobError, JobOutputError, LedgerError
from .report import (
    FrameCounts,
    FrameResult,
    ImageSetReport,
    ImportFindings,
    JobOutcome,
    JobReport,
    ReportDocumentWriter,
    Verdict,
    iso_time,
    unverified_causes,
)
from .s3_evidence import S3EvidenceStore
from .s3_output import JobOutputReader

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_UNVERIFIED, EXIT_CANNOT_RUN = 0, 1, 2, 3, 4
EXIT_CODES = {
    EXIT_OK: "clean: every frame matched (and, for a job, everything imported was verified)",
    EXIT_MISMATCH: "at least one frame's stored pixels differ from its checksum (or from the source file)",
    EXIT_USAGE: "usage error: a bad ID, URI or option",
    EXIT_UNVERIFIED: "no mismatch, but something could not be verified (the table says what)",
    EXIT_CANNOT_RUN: "could not run: no region, credentials or profile, or an endpoint out of reach",
}
EVIDENCE_INTACT, EVIDENCE_BROKEN = EXIT_OK, EXIT_MISMATCH
EVIDENCE_EXIT_CODES = {
    EVIDENCE_INTACT: "intact: every digest links to the one before and every listed report has its recorded hash",
    EVIDENCE_BROKEN: "a report altered, missing or unlisted, or a digest missing, altered or out of order",
    EXIT_USAGE: "usage error: a bad URI or option",
    EXIT_CANNOT_RUN: "could not run: no region or credentials, the bucket out of reach or access denied",
}

_EPILOG = """exit codes:
{codes}

examples:
  ahi-verify image-set 12345678901234567890123456789012 abcdefabcdefabcdefabcdefabcdefab
  ahi-verify job s3://bucket/out/<datastoreId>-DicomImport-<jobId>/ --source --output json
  ahi-verify job --datastore-id <datastoreId> --job-id <jobId> --region eu-west-1 --profile audit
  ahi-verify datastore <datastoreId> --updated-after 2024-06-01T00:00:00Z --output json
  ahi-verify ledger --datastore-id <datastoreId> --stack-name ahi-verify --verdict MISMATCH --output csv

environment (the ordinary AWS configuration; the options above win over it):
  AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
  AWS_ENDPOINT_URL_MEDICAL_IMAGING, AWS_ENDPOINT_URL_S3   endpoints (the local emulator, moto)
  AWS_DISABLE_HOST_PREFIX_INJECTION=true                  needed with an endpoint that is not AWS's
"""

# Raised by botocore when the command cannot run at all, whatever it verifies: exit 4, not "unverified".
_CANNOT_RUN = (
    NoRegionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    EndpointConnectionError,
    ConnectTimeoutError,
)


class CannotRunError(Exception):
    """The command cannot run: the message names what to set."""


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


def _instant(value: str) -> float:
    """An ISO 8601 time (``2024-06-01``, ``2024-06-01T12:00:00Z``; UTC when it names no offset), as epoch seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time (e.g. 2024-06-01T00:00:00Z)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _job_location(value: str) -> str:
    try:
        job_folder(value)
    except LocationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="ahi-verify",
        description="Verify AWS HealthImaging pixel data checksums (IFRC) frame by frame.",
        epilog=_EPILOG.format(codes="\n".join(f"  {code}  {words}" for code, words in EXIT_CODES.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    image_set = commands.add_parser(
        "image-set", help="verify every frame of one image set", parents=[_global_options(suppress=True)]
    )
    image_set.add_argument("datastore_id", type=_service_id, metavar="DATASTORE_ID")
    image_set.add_argument("image_set_id", type=_service_id, metavar="IMAGE_SET_ID")
    image_set.add_argument("--version", type=_version, help="image set version to verify (default: latest)")
    _add_common(image_set)
    job = commands.add_parser(
        "job",
        help="verify every image set of an import job, and report its failed files",
        parents=[_global_options(suppress=True)],
    )
    job.add_argument(
        "job",
        nargs="?",
        type=_job_location,
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
    datastore = commands.add_parser(
        "datastore",
        help="verify the current version of every image set of a data store (SearchImageSets)",
        parents=[_global_options(suppress=True)],
    )
    datastore.add_argument("datastore_id", type=_service_id, metavar="DATASTORE_ID")
    datastore.add_argument(
        "--ledger-table", metavar="TABLE", help="record each image set's verdict in this verification ledger"
    )
    datastore.add_argument(
        "--created-after", type=_instant, metavar="T", help="only image sets created at or after T (ISO 8601)"
    )
    datastore.add_argument(
        "--updated-after", type=_instant, metavar="T", help="only image sets updated at or after T (ISO 8601)"
    )
    _add_common(datastore)
    _add_ledger(commands)
    _add_evidence(commands)
    return parser


def _add_ledger(commands: Any) -> None:
    """``ledger``: the auditor's questions to the verification ledger."""
    ledger = commands.add_parser(
        "ledger",
        help="which image sets were verified when, which never were, which are not clean",
        description="Read the verification ledger (a row per image set version per verification). Without "
        "--never-verified: the rows, oldest first. With it: the data store's image sets (SearchImageSets) "
        "that have no row. Exit 0 when answered, 4 when the table or the data store cannot be read.",
        parents=[_global_options(suppress=True)],
    )
    ledger.add_argument("--datastore-id", type=_service_id, required=True)
    where = ledger.add_mutually_exclusive_group(required=True)
    where.add_argument("--table", help="the ledger table's name (the stack's LedgerTableName output)")
    where.add_argument("--stack-name", help="the stack whose LedgerTable to read (CloudFormation)")
    ledger.add_argument("--since", type=_instant, metavar="TIME", help="rows verified at or after TIME (ISO 8601)")
    ledger.add_argument("--verdict", choices=[v.value for v in ROW_VERDICTS], help="rows of this verdict only")
    ledger.add_argument("--never-verified", action="store_true", help="image sets of the data store with no row at all")


def _add_evidence(commands: Any) -> None:
    """``evidence validate``: check the evidence chain of a reports bucket (:mod:`ahi_verify.evidence`)."""
    evidence = commands.add_parser(
        "evidence", help="check the tamper-evident record of the reports", parents=[_global_options(suppress=True)]
    )
    actions = evidence.add_subparsers(dest="evidence_command", required=True)
    validate = actions.add_parser(
        "validate",
        help="check every digest's link and every report's SHA-256; name what is altered or missing",
        parents=[_global_options(suppress=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n"
        + "\n".join(f"  {code}  {words}" for code, words in EVIDENCE_EXIT_CODES.items())
        + "\n\nthe S3 endpoint: AWS_ENDPOINT_URL_S3 (moto, the local stack)",
    )
    validate.add_argument(
        "reports",
        type=_reports_location,
        metavar="REPORTS",
        help="the reports folder: s3://<ReportsBucket>/<ReportsPrefix> (the stack output ReportsLocation)",
    )
    validate.add_argument(
        "--workers", type=_positive, default=8, help="reports re-hashed at once (each is a GET; default 8)"
    )


def _reports_location(value: str) -> S3Location:
    try:
        location = S3Location.parse(value)
    except LocationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if location.key and not location.key.endswith("/"):
        location = S3Location(location.bucket, location.key + "/")  # a prefix is a folder
    return location


def run_evidence(args: argparse.Namespace, session: Any) -> int:
    """Validate the evidence chain under ``args.reports``; print what was found; exit 0 intact, 1 not."""
    location: S3Location = args.reports
    started = time.time()
    chain = EvidenceChain(S3EvidenceStore(session.client("s3"), location.bucket), location.key, workers=args.workers)
    try:
        found = chain.validate()
    except (ClientError, BotoCoreError, EvidenceError) as exc:
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        raise CannotRunError(f"the evidence under {location.uri} cannot be read: {exc}") from exc
    document = {"reports": location.uri, **found.to_json(), **_timings(started), "toolVersion": __version__}
    _emit(args, document, lambda: print_evidence(location, found, sys.stdout))
    return EVIDENCE_INTACT if found.intact else EVIDENCE_BROKEN


def _ledger_table(args: argparse.Namespace, session: Any) -> str:
    """The ledger table's name: ``--table``, or the stack's LedgerTable (DescribeStackResource)."""
    if args.table:
        return str(args.table)
    try:
        found = session.client("cloudformation").describe_stack_resource(
            StackName=args.stack_name, LogicalResourceId="LedgerTable"
        )
    except (ClientError, BotoCoreError) as exc:
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        raise CannotRunError(f"the stack {args.stack_name} has no LedgerTable that can be read: {exc}") from exc
    return str(found["StackResourceDetail"]["PhysicalResourceId"])


def run_ledger(args: argparse.Namespace, session: Any) -> int:
    """Answer from the ledger: its rows (filtered), or the data store's image sets that have none; exit 0."""
    ledger = DynamoLedger(session.client("dynamodb"), _ledger_table(args, session))
    out = sys.stdout
    try:
        if args.never_verified:
            _print_never_verified(args, session, ledger, out)
        else:
            since = iso_time(args.since) if args.since is not None else None
            verdict = Verdict(args.verdict) if args.verdict else None
            _print_ledger_rows(args, ledger.entries(args.datastore_id, since=since, verdict=verdict), out)
    except (LedgerError, ImageSetListError) as exc:
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        raise CannotRunError(str(exc)) from exc
    return EXIT_OK


def _print_ledger_rows(args: argparse.Namespace, entries: Iterable[LedgerEntry], out: TextIO) -> None:
    """The rows as csv (streamed), json (one document) or a table, oldest first."""
    if args.output == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for entry in entries:
            writer.writerow(csv_row(entry))
        return
    if args.output == "json":
        # Streamed: a data store's ledger may hold millions of rows.
        out.write(f'{{"datastoreId": {json.dumps(args.datastore_id)}, "rows": [')
        for n, entry in enumerate(entries):
            out.write(("," if n else "") + "\n  " + json.dumps(entry.to_json()))
        out.write("\n]}\n")
        return
    count = 0
    print(f"{'verdict':<10} {'image set':<32} {'version':>7} {'verified at':<25} {'frames':>7}  by", file=out)
    for entry in entries:
        count += 1
        version = "-" if entry.version is None else str(entry.version)
        print(
            f"{entry.verdict.value:<10} {entry.image_set_id:<32} {version:>7} {entry.verified_at:<25} "
            f"{entry.frames.total:>7}  {entry.kind.value} {entry.by}",
            file=out,
        )
    print(f"{count} rows", file=out)


def _print_never_verified(args: argparse.Namespace, session: Any, ledger: DynamoLedger, out: TextIO) -> None:
    """The data store's image sets (SearchImageSets, streamed) that have no ledger row."""
    client = make_client(MAX_FETCH_THREADS, session=session, endpoint_url=args.endpoint_url)
    listing = HealthImagingListing(client)
    datastore_id = args.datastore_id
    unverified = never_verified(
        listing.image_sets(datastore_id), lambda listed: ledger.has_row(datastore_id, listed.image_set_id)
    )
    if args.output == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("datastoreId", "imageSetId", "version"))
        for listed in unverified:
            writer.writerow((datastore_id, listed.image_set_id, "" if listed.version is None else listed.version))
        return
    found = [{"imageSetId": x.image_set_id, "version": x.version} for x in unverified]
    if args.output == "json":
        print(json.dumps({"datastoreId": datastore_id, "neverVerified": found}, indent=2), file=out)
        return
    for row in found:
        print(f"NEVER VERIFIED image set {row['imageSetId']} (version {row['version']})", file=out)
    print(f"{len(found)} image sets of data store {datastore_id} were never verified", file=out)


def print_evidence(location: S3Location, found: Validation, out: TextIO) -> None:
    """The human-readable outcome: one line of totals, then every finding under its heading."""
    state = "INTACT" if found.intact else "NOT INTACT"
    print(f"evidence {location.uri}: {state}: {found.digests} digests, {found.objects} reports checked", file=out)
    for heading, lines in (
        ("altered", found.altered),
        ("missing", found.missing),
        ("chain broken", found.chain),
        ("unlisted (no digest lists them)", found.unlisted),
    ):
        if lines:
            print(f"{heading} ({len(lines)}):", file=out)
            for line in lines:
                print(f"  {line}", file=out)


def _global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command, as the AWS CLI accepts its own. On a command they
    default to SUPPRESS, so that leaving them out there keeps what was given before the command."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--region", default=default(None), help="AWS region (default: the AWS configuration's)")
    options.add_argument("--profile", default=default(None), help="named profile of the AWS config files")
    options.add_argument(
        "--endpoint-url", default=default(None), metavar="URL", help="HealthImaging endpoint (e.g. the emulator)"
    )
    options.add_argument(
        "--output",
        "--format",
        dest="output",
        choices=("table", "json", "csv"),
        default=default("table"),
        help="table (default) or json (csv: ledger only)",
    )
    options.add_argument("--debug", action="store_true", default=default(False), help="tracebacks on errors")
    return options


def _add_common(command: argparse.ArgumentParser) -> None:
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
    if args.output == "csv" and args.command != "ledger":
        parser.error(f"{args.command}: --output csv is for ledger only")
    if args.command == "ledger" and args.never_verified and (args.since is not None or args.verdict):
        parser.error("ledger: --never-verified takes no --since or --verdict (an image set without a row has none)")
    try:
        return _run(args)
    except CannotRunError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ahi-verify: cannot run: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _run(args: argparse.Namespace) -> int:
    session = _session(args)
    if args.command == "evidence":
        return run_evidence(args, session)
    if args.command == "ledger":
        return run_ledger(args, session)
    prefer_io_threads()
    budget = sole_budget(Rates(args.frame_rate, args.metadata_rate))
    attempts = args.max_attempts or DEFAULT_MAX_ATTEMPTS
    try:
        client = make_client(
            max_pool_connections=MAX_FETCH_THREADS,
            max_attempts=attempts,
            budget=budget,
            session=session,
            endpoint_url=args.endpoint_url,
        )
    except ValueError as exc:  # botocore's "Invalid endpoint: ..."
        raise CannotRunError(f"{exc}: check --endpoint-url or AWS_ENDPOINT_URL_MEDICAL_IMAGING") from exc
    args.options = VerifyOptions.budgeted(budget)
    args.session = session
    started = time.time()
    with _Progress(sys.stderr) as progress, budget.running():
        if args.command == "job":
            return _run_job(args, session, client, progress)
        if args.command == "datastore":
            return _run_datastore(args, client, progress, started)
        return _run_image_set(args, client, progress, started)


def _session(args: argparse.Namespace) -> Any:
    """The boto3 session, checked for what every request needs before any is sent."""
    try:
        session = boto3.Session(profile_name=args.profile, region_name=args.region)
    except ProfileNotFound as exc:
        raise CannotRunError(f"{exc}: pass --profile with a profile that exists, or unset AWS_PROFILE") from exc
    if session.region_name is None:
        raise CannotRunError("no AWS region: pass --region, set AWS_DEFAULT_REGION, or give the profile a region")
    if session.get_credentials() is None:
        raise CannotRunError(
            "no AWS credentials: pass --profile, set AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return session


def _cannot_run(exc: BaseException) -> CannotRunError | None:
    """A :class:`CannotRunError` when ``exc`` was caused (anywhere down its chain) by one of botocore's
    could-not-run errors; None when it is about what was being verified."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (EndpointConnectionError, ConnectTimeoutError)):
            return CannotRunError(f"{seen}: check --endpoint-url, the AWS_ENDPOINT_URL_* variables and the network")
        if isinstance(seen, _CANNOT_RUN):
            return CannotRunError(str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _run_image_set(args: argparse.Namespace, client: object, progress: _Progress, started: float) -> int:
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
        progress.close()  # end the progress line before the message
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        timings = _timings(started)
        document = image_set_document(
            args.datastore_id, args.image_set_id, args.version, (), error=str(exc), timings=timings
        )
        return _unverifiable("image set", exc, document, args)
    progress.close()
    frames = result.results
    document = image_set_document(
        result.datastore_id, result.image_set_id, result.version_id, frames, timings=_timings(started)
    )
    _emit(args, document, lambda: print_table(result.datastore_id, result.image_set_id, frames, sys.stdout))
    return exit_code(FrameCounts.of(frames))


def _run_job(args: argparse.Namespace, session: Any, client: object, progress: _Progress) -> int:
    jobs = HealthImagingJobs(client)
    try:
        uri = args.job
        if uri is None:
            described = jobs.describe(args.datastore_id, args.job_id)
            if described.status != "COMPLETED":
                why = f": {described.message}" if described.message else ""
                raise ImportJobError(f"import job {args.job_id} is {described.status}{why}")
            uri = described.output_folder_uri
        else:
            _reachable(jobs, job_folder(uri))
        report = verify_job(
            JobOutputReader(session.client("s3")),
            HealthImagingSource(client),
            job_folder(uri),
            options=args.options,
            manifest_wait_s=args.manifest_wait,
            with_sources=args.source,
            on_result=progress.update,
            on_image_set=progress.next_image_set,
            clock=time.time,
            jobs=jobs,
        )
    except (JobOutputError, ManifestError, ImageSetError, ImportJobError, LocationError) as exc:
        progress.close()  # end the progress line before the message
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        return _unverifiable("job", exc, {"error": str(exc), "toolVersion": __version__}, args)
    progress.close()
    _emit(args, report.to_json(), lambda: print_job_table(report, sys.stdout))
    return job_exit_code(report.verdict)


class _LazyReport:
    """The audit's ``--output json`` document, streamed to stdout as image sets are verified, opened only when
    the first one is (so that a listing that fails at once leaves stdout for the error document)."""

    def __init__(self, args: argparse.Namespace, started: float, run_id: str) -> None:
        self._args = args
        self._run_id = run_id
        self._writer: ReportDocumentWriter | None = None
        self._started = started

    def _open(self) -> ReportDocumentWriter:
        if self._writer is None:
            args = self._args
            header = audit_header(args.datastore_id, self._run_id)
            notes = audit_notes(args.datastore_id, args.created_after, args.updated_after)
            self._writer = ReportDocumentWriter(sys.stdout.write, header, ImportFindings(), notes, ())
        return self._writer

    def add(self, report: ImageSetReport) -> None:
        if self._args.output == "json":
            self._open().add(report)

    def finish(self, outcome: JobOutcome) -> None:
        if self._args.output == "json":
            self._open().finish(outcome)
            sys.stdout.write("\n")


def _run_datastore(args: argparse.Namespace, client: object, progress: _Progress, started: float) -> int:
    run_id = audit_run_id(started)
    document = _LazyReport(args, started, run_id)
    recorder = None
    if args.ledger_table:
        # Each image set's row as it is verified, 25 a batch: the audit's verdicts answer "not clean" too.
        recorder = LedgerRecorder(
            DynamoLedger(args.session.client("dynamodb"), args.ledger_table).record,
            audit_header(args.datastore_id, run_id),
            verified_at=iso_time(started),
            report_uri=None,
        )

    def on_report(report: ImageSetReport) -> None:
        document.add(report)
        if recorder is not None:
            recorder.add(report)

    try:
        outcome, run = audit_datastore(
            HealthImagingListing(client),
            HealthImagingSource(client),
            args.datastore_id,
            run_id=run_id,
            started=started,
            created_after=args.created_after,
            updated_after=args.updated_after,
            options=args.options,
            on_result=progress.update,
            on_image_set=progress.next_listed,
            on_report=on_report,
        )
        if recorder is not None:
            recorder.flush()
    except (ImageSetListError, LedgerError) as exc:
        progress.close()
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc
        return _unverifiable("data store", exc, {"error": str(exc), "toolVersion": __version__}, args)
    progress.close()
    document.finish(outcome)
    if args.output != "json":
        print_audit_table(outcome, run, sys.stdout)
    return job_exit_code(outcome.verdict)


def print_audit_table(outcome: JobOutcome, run: AuditRun, out: TextIO) -> None:
    """Human-readable audit: image sets that could not be verified, problem frames, counts, the verdict."""
    job = outcome.job
    print(f"Data store audit {job.job_id} (data store {job.datastore_id})", file=out)
    for image_set_id, error in run.errors:
        print(f"ERROR     image set {image_set_id}: {error}", file=out)
    problems = outcome.totals.problems
    if problems:
        print(f"{'status':<9} {'frame id':<32} {'#':>4} {'expected':>10} {'actual':>10}  reason / image set", file=out)
        for image_set_id, frame in problems:
            print(f"{_row(frame)}  (image set {image_set_id})", file=out)
    if outcome.totals.problem_count > len(problems):
        print(
            f"... and {outcome.totals.problem_count - len(problems)} more problem frames (see --output json)", file=out
        )
    for note in outcome.notes:
        print(f"NOTE      {note}", file=out)
    for discrepancy in outcome.discrepancies:
        print(f"DISAGREES {discrepancy}", file=out)
    counts = outcome.summary.frames
    print(
        f"{outcome.summary.image_sets} image sets, {counts.total} frames: {counts.match} match, "
        f"{counts.mismatch} mismatch, {counts.error} error",
        file=out,
    )
    print(f"Verdict: {outcome.verdict.value}: {outcome_verdict_reason(outcome, audit=True)}", file=out)


def _reachable(jobs: HealthImagingJobs, folder: S3Location) -> None:
    """Ask GetDICOMImportJob about the folder's job before reading it, so that a HealthImaging endpoint out
    of reach stops the run with exit 4 instead of turning every image set into an error. Any other answer
    (not found, denied, another folder) is the plan's to report: it asks again and records what disagrees."""
    name = folder.key.rstrip("/").rsplit("/", 1)[-1]
    datastore_id, _, job_id = name.partition("-DicomImport-")
    if not (is_service_id(datastore_id) and is_job_id(job_id)):
        return  # not named like a job folder: nothing to ask (the plan notes what it can)
    try:
        jobs.describe(datastore_id, job_id)
    except ImportJobError as exc:
        if (cannot := _cannot_run(exc)) is not None:
            raise cannot from exc


def _unverifiable(what: str, exc: Exception, document: dict[str, object], args: argparse.Namespace) -> int:
    print(f"ahi-verify: {what} could not be verified: {exc}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(document, indent=2))
    return EXIT_UNVERIFIED


def _emit(args: argparse.Namespace, document: dict[str, object], table: Callable[[], None]) -> None:
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        table()


def _timings(started: float) -> dict[str, object]:
    finished = time.time()
    return {
        "startedAt": iso_time(started),
        "finishedAt": iso_time(finished),
        "verificationSeconds": round(finished - started, 3),
    }


def exit_code(counts: FrameCounts) -> int:
    """``image-set``: 0 all MATCH, 1 any MISMATCH, 3 otherwise (errors, or no frames at all)."""
    if counts.mismatch:
        return EXIT_MISMATCH
    return EXIT_OK if counts.all_match else EXIT_UNVERIFIED


def image_set_verdict(counts: FrameCounts, *, error: str | None = None) -> tuple[Verdict, str]:
    """The image set's verdict, with its reason in words (the rule of :func:`exit_code`)."""
    if counts.mismatch:
        return Verdict.MISMATCH, f"{_frames(counts.mismatch)} {_differ(counts.mismatch)} from the published checksum"
    if error is not None:
        return Verdict.UNVERIFIED, "the image set's metadata could not be read"
    if counts.total == 0:
        return Verdict.UNVERIFIED, "the image set lists no frame"
    if counts.error:
        return Verdict.UNVERIFIED, f"{_frames(counts.error)} could not be verified"
    return Verdict.CLEAN, f"all {_frames(counts.total)} match the published checksum"


def _frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


def _differ(n: int) -> str:
    return "differs" if n == 1 else "differ"


def image_set_document(
    datastore_id: str,
    image_set_id: str,
    version_id: str | None,
    frames: tuple[FrameResult, ...],
    *,
    error: str | None = None,
    timings: dict[str, object] | None = None,
) -> dict[str, object]:
    """The ``image-set --output json`` document."""
    counts = FrameCounts.of(frames)
    verdict, why = image_set_verdict(counts, error=error)
    document: dict[str, object] = {
        "toolVersion": __version__,
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "versionId": version_id,
        "frames": [f.to_json() for f in frames],
        "summary": counts.to_json(),
        "verdict": verdict.value,
        "verdictReason": why,
    }
    if error is not None:
        document["error"] = error
    if timings is not None:
        document["timings"] = timings
    return document


def print_table(
    datastore_id: str, image_set_id: str, frames: Sequence[FrameResult], out: TextIO, *, verdict: bool = True
) -> None:
    """Human-readable image set: the frames that did not match first, then the counts and the verdict."""
    problems = [f for f in frames if f.status is not Status.MATCH]
    print(f"Image set {image_set_id} (data store {datastore_id})", file=out)
    if problems:
        print(f"{'status':<9} {'frame id':<32} {'#':>4} {'expected':>10} {'actual':>10}  reason", file=out)
        for f in problems:
            print(_row(f), file=out)
    counts = FrameCounts.of(frames)
    print(f"{counts.total} frames: {counts.match} match, {counts.mismatch} mismatch, {counts.error} error", file=out)
    if verdict:
        decided, why = image_set_verdict(counts)
        print(f"Verdict: {decided.value}: {why}", file=out)


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


def job_verdict_reason(report: JobReport) -> str:
    """The job's verdict in words: what decided it (:func:`ahi_verify.report.unverified_causes`)."""
    return outcome_verdict_reason(report.outcome())


def outcome_verdict_reason(outcome: JobOutcome, *, audit: bool = False) -> str:
    """The verdict of a job (or, with ``audit``, of a data store audit run) in words, from its outcome."""
    counts = outcome.summary.frames
    verdict = outcome.verdict
    if verdict is Verdict.MISMATCH:
        return f"{_frames(counts.mismatch)} {_differ(counts.mismatch)} from the published or the source checksum"
    if verdict is Verdict.IMPORT_FAILED:
        message = f" ({outcome.job.message})" if outcome.job.message else ""
        return f"the import job failed{message}"
    if verdict is Verdict.UNVERIFIED:
        return "; ".join(unverified_causes(outcome))
    matched = f"all {_frames(counts.total)} of {outcome.summary.image_sets} image sets match"
    return matched if audit else f"{matched}, and every file imported"


def print_job_table(report: JobReport, out: TextIO) -> None:
    """Human-readable job report: problems first, then the counts and the verdict with its reason."""
    job = report.job
    print(f"Import job {job.job_id} (data store {job.datastore_id})", file=out)
    print(f"  output: {job.folder}", file=out)
    for image_set in report.image_sets:
        if image_set.error:
            print(f"ERROR     image set {image_set.image_set_id}: {image_set.error}", file=out)
        elif any(f.status is not Status.MATCH for f in image_set.frames):
            print_table(job.datastore_id, image_set.image_set_id, image_set.frames, out, verdict=False)
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
    print(f"Verdict: {report.verdict.value}: {job_verdict_reason(report)}", file=out)


class _Progress:
    """Frames checked so far, as a tqdm bar on stderr when it is a terminal (nothing otherwise).

    The total is the sum of the frame counts of the image sets begun so far: each image set's count becomes
    known with its first frame, and is added before that frame is counted, so the count never passes the
    total. For a job the bar also names the image set (``image set 3/20``).
    """

    def __init__(self, stream: TextIO) -> None:
        self._bar = tqdm(total=0, unit="frame", file=stream, disable=not stream.isatty(), dynamic_ncols=True)
        self._counted_total = False

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def next_image_set(self, index: int, count: int) -> None:
        """Image set ``index`` (from 1) of ``count`` begins."""
        self._counted_total = False
        self._bar.set_description(f"image set {index}/{count}", refresh=False)

    def next_listed(self, index: int) -> None:
        """Image set ``index`` (from 1) of a listing begins (how many there are is not known in advance)."""
        self._counted_total = False
        self._bar.set_description(f"image set {index}", refresh=False)

    def update(self, result: FrameResult, total: int) -> None:
        """One frame of an image set of ``total`` frames has its result."""
        if not self._counted_total:
            self._bar.total = (self._bar.total or 0) + total
            self._counted_total = True
        self._bar.update(1)

    def close(self) -> None:
        """End the bar's line (before a message or the table)."""
        self._bar.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
