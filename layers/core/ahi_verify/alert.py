"""The one alert per job: composed from the report, IDs, codes and counts only.

A person on call reads it in ten seconds and can act on it: what happened and why in words, how many
frames, which deployment (region, account, stack), data store, job, image sets and frames, what to do next,
and the report as a link to the S3 console as well as its S3 URI. It is composed from the job's
:class:`~ahi_verify.report.JobOutcome` (totals and the first problems), which a streaming merge gives
without the frames. No patient data can reach it: the outcome comes from the report, which holds none;
file keys (which may embed names) are counted, never listed; and of an error's text only its code is
published (:func:`~ahi_verify.report.image_set_error_cause`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .report import PROBLEMS_KEPT, JobOutcome, Verdict, unverified_causes

SUBJECT_LIMIT = 99  # SNS: "less than 100 characters"
MAX_LISTED_FRAMES = 50
MAX_LISTED_IMAGE_SETS = 10
"""Image sets named, with why each could not be read; the rest are counted ("and 12 more in the report")."""
MESSAGE_LIMIT = 200_000  # well under SNS's 256 KB
assert MAX_LISTED_FRAMES <= PROBLEMS_KEPT  # an outcome keeps enough problem frames and image sets to list

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
# The console's domain per partition, by region prefix. The isolated partitions (us-iso-*, us-isob-*, ...)
# have consoles on private networks only: no link is given there.
_CONSOLES = (("cn-", "console.amazonaws.cn"), ("us-gov-", "console.amazonaws-us-gov.com"))
_NO_PUBLIC_CONSOLE = ("us-iso", "eu-iso")
# Two of the causes report.unverified_causes words, which the alert names the members of.
_UNREADABLE_SETS = re.compile(r"[0-9]+ image sets? could not be read")
_FAILED_FILES = re.compile(r"[0-9]+ files? failed import")


@dataclass(frozen=True)
class Deployment:
    """Where an alert comes from: the stack's region, account and name (None: not known, not printed)."""

    region: str | None = None
    account_id: str | None = None
    stack_name: str | None = None

    def lines(self) -> list[str]:
        """``Region``, ``Account`` and ``Stack`` lines for what is known."""
        named = (("Region", self.region), ("Account", self.account_id), ("Stack", self.stack_name))
        return [f"{label}: {value}" for label, value in named if value]


def console_url(s3_uri: str, region: str | None) -> str | None:
    """The S3 console's page of the object ``s3://bucket/key``, in the console of the region's partition
    (``https://<region>.console.aws.amazon.com``, ``.amazonaws.cn``, ``.amazonaws-us-gov.com``); None without
    a region, in a partition without a public console, or for a URI that names no object."""
    if region is None or not _REGION.fullmatch(region) or region.startswith(_NO_PUBLIC_CONSOLE):
        return None
    bucket, _, key = s3_uri.removeprefix("s3://").partition("/")
    if not s3_uri.startswith("s3://") or not bucket or not key:
        return None
    host = next((host for prefix, host in _CONSOLES if region.startswith(prefix)), "console.aws.amazon.com")
    return f"https://{region}.{host}/s3/object/{quote(bucket)}?region={region}&prefix={quote(key, safe='/')}"


def _report_lines(report_uri: str, region: str | None) -> list[str]:
    """The report and the page beside it: console links (clickable in e-mail) first, then the S3 URIs."""
    page_uri = f"{report_uri.removesuffix('.json')}.html"
    lines = []
    for label, uri in (("Readable report", page_uri), ("Full report", report_uri)):
        link = console_url(uri, region)
        if link is not None:
            lines.append(f"{label} in the S3 console: {link}")
    return [*lines, f"Full report: {report_uri}", f"Readable report: {page_uri}"]


@dataclass(frozen=True)
class Alert:
    """An SNS message: subject, body and attributes for subscription filter policies."""

    subject: str
    message: str
    attributes: Mapping[str, str]

    def to_json(self) -> dict[str, object]:
        """The alert as stored beside the report, to be sent again if its first publish failed."""
        return {"subject": self.subject, "message": self.message, "attributes": dict(self.attributes)}

    @classmethod
    def from_json(cls, doc: object) -> Alert:
        """Read a stored alert.

        Raises
        ------
        ValueError
            The document is not one :meth:`to_json` wrote.
        """
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("subject", "message")):
            raise ValueError("stored alert needs text subject and message")
        attributes = doc.get("attributes")
        if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
        ):
            raise ValueError("stored alert attributes must map text to text")
        return cls(doc["subject"], doc["message"], attributes)


_VERSION_JOB = re.compile(r"v[0-9a-f]{31}")
"""A new-version job's ID (``app.audit_run.change_job_id``): import job IDs are hexadecimal, never ``v``."""


def is_version_job(job_id: str) -> bool:
    """Whether the job verifies one new image set version (an image set event), not an import."""
    return _VERSION_JOB.fullmatch(job_id) is not None


def job_label(job_id: str, image_set: tuple[str, int | None] | None = None) -> tuple[str, str]:
    """What a job is, for alert subjects and bodies: ``(label, field)``, e.g. ``("audit run audit2026...",
    "Audit run")``; ``image_set`` is a new-version job's image set and version, when its plan names them."""
    if job_id.startswith("audit"):
        return f"audit run {job_id}", "Audit run"
    if image_set is not None:
        image_set_id, version = image_set
        of = f" version {version}" if version is not None else ""
        return f"image set {image_set_id}{of}", "Image set job"
    if is_version_job(job_id):
        return f"image set job {job_id}", "Image set job"
    return f"import job {job_id}", "Import job"


def compose_alert(
    outcome: JobOutcome,
    report_uri: str,
    *,
    notify_clean: bool,
    deployment: Deployment | None = None,
    image_set: tuple[str, int | None] | None = None,
) -> Alert | None:
    """Return the job's alert, or None for a clean job unless ``notify_clean``.

    Parameters
    ----------
    outcome : JobOutcome
        The merged job (:meth:`StreamingMerge.outcome <ahi_verify.merge.StreamingMerge.outcome>`, or
        :meth:`JobReport.outcome <ahi_verify.report.JobReport.outcome>`).
    report_uri : str
        Where ``report.json`` is; the page is beside it.
    notify_clean : bool
        Alert a CLEAN job too.
    deployment : Deployment, optional
        The stack's region (for the console links), account and name.
    image_set : tuple, optional
        A new-version job's image set ID and version, named in the subject instead of the job ID.
    """
    verdict = outcome.verdict
    if verdict is Verdict.CLEAN and not notify_clean:
        return None
    job, summary, totals = outcome.job, outcome.summary, outcome.totals
    frames = summary.frames
    job_id = job.job_id
    label, field = job_label(job_id, image_set)
    subject = {
        Verdict.MISMATCH: f"MISMATCH: {frames.mismatch} frame(s) differ in {label}",
        Verdict.IMPORT_FAILED: f"{label[0].upper()}{label[1:]} failed",
        Verdict.UNVERIFIED: f"UNVERIFIED: {label} is not fully verified",
        Verdict.CLEAN: f"OK: {label} verified, {frames.match} frames match",
    }[verdict]
    if image_set is not None and len(f"[ahi-verify] {subject}") > SUBJECT_LIMIT:
        # An image set and its version are longer than a job ID: the short form keeps the whole label.
        subject = {
            Verdict.MISMATCH: f"MISMATCH in {label}",
            Verdict.IMPORT_FAILED: f"{label[0].upper()}{label[1:]} failed",
            Verdict.UNVERIFIED: f"UNVERIFIED: {label}",
            Verdict.CLEAN: f"OK: {label} verified",
        }[verdict]
    where = deployment or Deployment()
    causes = [] if verdict is Verdict.IMPORT_FAILED else _causes(outcome)
    lines = [_headline(verdict, frames.mismatch), ""]
    if causes:
        lines += ["Why it is not verified:" if verdict is Verdict.UNVERIFIED else "Also not verified:", *causes, ""]
    lines += [
        f"Data store: {job.datastore_id}",
        f"{field}: {job_id}",
        *where.lines(),
        *_timing_lines(outcome),
        f"Frames: {frames.total} total, {frames.match} match, {frames.mismatch} mismatch, "
        f"{frames.error} could not be verified",
        f"Image sets: {summary.image_sets} ({summary.image_set_errors} could not be read)",
        f"Files the import rejected: {summary.import_failures}; imported with warnings: {summary.import_warnings}",
    ]
    if summary.lossy_decoder_differs:
        lines.append(
            f"Frames whose lossy source no decoder reproduced exactly: {summary.lossy_decoder_differs} "
            "(within the decoder tolerance, not mismatches; the result depends on the decoder)"
        )
    if job.message:
        lines.append("The import job reported a failure (see the report for its message).")
    if outcome.discrepancies:
        # IDs and counts only (plan.py and merge.py write them so): safe to list, and the cause of UNVERIFIED.
        lines += ["", "Counts and identities that disagree:"]
        lines += [f"  {d}" for d in outcome.discrepancies[:MAX_LISTED_FRAMES]]
    if totals.problem_count:
        lines += ["", "Frames (status, image set, frame ID, frame number, reason):"]
        lines += [
            f"  {f.status} {image_set_id} {f.image_frame_id} #{f.frame_number} {f.reason or ''}".rstrip()
            for image_set_id, f in totals.problems[:MAX_LISTED_FRAMES]
        ]
        if totals.problem_count > MAX_LISTED_FRAMES:
            lines.append(f"  ... and {totals.problem_count - MAX_LISTED_FRAMES} more in the report")
    lines += ["", "What to do next:", *_next_steps(outcome, where), ""]
    lines += _report_lines(report_uri, where.region)
    message = "\n".join(lines)[:MESSAGE_LIMIT]
    return Alert(
        subject=_one_line(f"[ahi-verify] {subject}")[:SUBJECT_LIMIT],
        message=message,
        attributes={"severity": verdict.value, "jobId": job_id, "datastoreId": job.datastore_id},
    )


def compose_manifest_changed(
    job_id: str,
    datastore_id: str,
    planned_sha256: str,
    new_sha256: str,
    report_uri: str,
    *,
    deployment: Deployment | None = None,
) -> Alert:
    """The alert for a manifest rewritten after its job was planned: the report describes the first one.

    A genuine import writes its manifest once; a second content for the same job is a forgery, a replay
    or a tool writing where it should not, and the verification of the job must be looked at again.
    """
    lines = [
        "The manifest of an import job changed after the job was verified against it.",
        "",
        f"Data store: {datastore_id}",
        f"Import job: {job_id}",
        *(deployment or Deployment()).lines(),
        f"SHA-256 of the manifest verified: {planned_sha256}",
        f"SHA-256 of the manifest now: {new_sha256}",
        "",
        "The report stands for the first manifest (its evidence lists the SHA-256); verify the job again, for",
        "example with ahi-verify job, and find out who wrote the second one (the bucket's CloudTrail data",
        "events or server access logs name the writer).",
        "",
        *_report_lines(report_uri, (deployment or Deployment()).region),
    ]
    return Alert(
        subject=_one_line(f"[ahi-verify] MANIFEST CHANGED: import job {job_id}")[:SUBJECT_LIMIT],
        message="\n".join(lines),
        attributes={"severity": "MANIFEST_CHANGED", "jobId": job_id, "datastoreId": datastore_id},
    )


def compose_unreadable(
    job_id: str, datastore_id: str, error_type: str, *, deployment: Deployment | None = None
) -> Alert:
    """The alert for a job the reconciliation found but cannot verify: its output cannot be read."""
    lines = [
        "An import job of the data store cannot be verified: its output (manifest or ndjson files) cannot be",
        f"read ({error_type}). It is recorded and not swept again; nothing of it has been verified.",
        "",
        f"Data store: {datastore_id}",
        f"Import job: {job_id}",
        *(deployment or Deployment()).lines(),
        "",
        "Look at the job's output folder (GetDICOMImportJob gives it) and verify the job with ahi-verify job.",
    ]
    return Alert(
        subject=_one_line(f"[ahi-verify] UNVERIFIED: import job {job_id} output unreadable")[:SUBJECT_LIMIT],
        message="\n".join(lines),
        attributes={"severity": "UNVERIFIED", "jobId": job_id, "datastoreId": datastore_id},
    )


def compose_open_job(
    job_id: str,
    datastore_id: str,
    *,
    open_s: float,
    pending: int,
    deadline_s: float,
    deployment: Deployment | None = None,
) -> Alert:
    """The operational message naming the oldest job still open when it is overdue (the alarm on the
    ``OldestOpenJobAge`` metric carries no job ID; this message does)."""
    finished = open_s > deadline_s
    label, field = job_label(job_id)
    state = (
        "It was past its deadline: the reconciliation finished it, and its report lists the unfinished work as "
        "not verified (verdict UNVERIFIED)."
        if finished
        else f"If it is still open {deadline_s / 3600:g} h after it was planned, the reconciliation finishes it "
        "and its report lists the unfinished work as not verified."
    )
    lines = [
        f"The oldest open verification has been open {open_s / 3600:.1f} h with {pending} work item(s) pending.",
        state,
        "",
        f"Data store: {datastore_id}",
        f"{field}: {job_id}",
        *(deployment or Deployment()).lines(),
        "",
        "Look at the work queue's dead-letter queue, the worker's errors and throttles (dashboard), and the",
        "job's record in the progress table.",
    ]
    return Alert(
        subject=_one_line(f"[ahi-verify] OPS: {label} {'finished past its deadline' if finished else 'overdue'}")[
            :SUBJECT_LIMIT
        ],
        message="\n".join(lines),
        attributes={"severity": "OPS", "jobId": job_id, "datastoreId": datastore_id},
    )


def _causes(outcome: JobOutcome) -> list[str]:
    """What keeps the job from CLEAN (:func:`~ahi_verify.report.unverified_causes`, the rule the verdict was
    decided on), each with what names it safely: the image sets that could not be read and why (their error
    codes), and the exception types of the files the import rejected (their keys may embed names)."""
    lines = []
    totals = outcome.totals
    for cause in unverified_causes(outcome):
        lines.append(f"  - {cause}")
        if _UNREADABLE_SETS.fullmatch(cause):
            named = list(zip(totals.unreadable_image_sets, totals.unreadable_causes, strict=False))
            lines += [f"    image set {i} could not be read: {why}" for i, why in named[:MAX_LISTED_IMAGE_SETS]]
            more = outcome.summary.image_set_errors - min(len(named), MAX_LISTED_IMAGE_SETS)
            if more > 0:
                lines.append(f"    ... and {more} more in the report")
        elif _FAILED_FILES.fullmatch(cause):
            types = Counter(_identifier(f.exception_type) for f in outcome.findings.failures)
            lines += [f"    {n} with {kind}" for kind, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines


def _identifier(text: str | None) -> str:
    """An exception type as the import wrote it, when it is one (``ValidationException``); else a phrase:
    the field is the import's free text, and only a name of its own shape is published."""
    return text if text and _IDENTIFIER.fullmatch(text) else "an exception type not shown here"


def _timing_lines(outcome: JobOutcome) -> list[str]:
    timings = outcome.timings
    if timings is None:
        return []
    started = f"started {timings.started_at}, " if timings.started_at else ""
    return [f"Verification: {started}finished {timings.finished_at} (UTC)"]


def _next_steps(outcome: JobOutcome, where: Deployment) -> list[str]:
    """What the person reading the alert does now, per verdict."""
    job = outcome.job
    region = f" --region {where.region}" if where.region else ""
    again = f"ahi-verify job --datastore-id {job.datastore_id} --job-id {job.job_id}{region}"
    verdict = outcome.verdict
    if verdict is Verdict.MISMATCH:
        return [
            "  1. Open the readable report (link below): it names the image set, frame ID and number of every",
            "     frame that differs, and the source file of each where the three-way check ran.",
            "  2. Treat those image sets as suspect; re-import the affected source files (a new import job,",
            "     which this stack verifies).",
            "  3. If the new import differs again, contact AWS Support with the data store, image set and frame",
            "     IDs from the report (no patient data is needed).",
        ]
    if verdict is Verdict.UNVERIFIED:
        return [
            "  1. Fix the cause above:",
            *_fixes(outcome),
            "  2. Verify this job again (the stack does not re-check a finished job on its own):",
            f"     {again}",
            "     (with --source for the three-way check).",
        ]
    if verdict is Verdict.IMPORT_FAILED:
        return [
            "  1. Read the import job's message in the report (or GetDICOMImportJob), fix its cause (the input",
            "     location, the data access role), and start the import again: the new job is verified.",
        ]
    return ["  Nothing: every frame matched. The report is the evidence."]


def _fixes(outcome: JobOutcome) -> list[str]:
    """What fixes each kind of cause present (:func:`~ahi_verify.report.unverified_causes`)."""
    summary, job = outcome.summary, outcome.job
    rejected = summary.import_failures or job.files_with_customer_error or job.files_with_server_error
    fixes = [
        (
            rejected or outcome.findings.frame_warnings,
            "re-import the files that failed import or were imported with frame-affecting warnings (the report "
            "lists them) as a new import job, which this stack verifies",
        ),
        (
            summary.image_set_errors or summary.frames.error,
            "an image set or frame that could not be read gives its code: AccessDenied* is the verifier's role or "
            "the data store's KMS key policy; throttling, a timeout or a dead-lettered work item passes with time",
        ),
        (outcome.discrepancies, "find out why the counts and identities above disagree (a stray or forged manifest?)"),
        (outcome.totals.source_incomplete, "the report says for each frame why it was not compared with its source"),
        (summary.frames.total == 0, "a job with no frame has nothing to verify: check the import's input"),
    ]
    return [f"     - {words}" for present, words in fixes if present]


def _headline(verdict: Verdict, mismatched: int) -> str:
    if verdict is Verdict.MISMATCH:
        return f"{mismatched} frame(s) differ from their published or source checksum."
    if verdict is Verdict.IMPORT_FAILED:
        return "The import job failed; nothing from it can be verified."
    if verdict is Verdict.UNVERIFIED:
        return "No frame mismatched, but not everything of this import could be verified."
    return "Every frame of this import matched its published checksum."


def _one_line(text: str) -> str:
    """SNS subjects allow no line breaks or control characters."""
    return "".join(ch if ch.isprintable() else " " for ch in text)
