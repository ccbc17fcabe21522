"""The one alert per job: composed from the report, IDs and counts only.

A person reads it in ten seconds: what happened, how many frames, which data store, job, image sets and
frames, and where the full report is. It is composed from the job's :class:`~ahi_verify.report.JobOutcome`
(totals and the first problems), which a streaming merge gives without the frames. No patient data can
reach it: the outcome comes from the report, which holds none, and file keys (which may embed names) are
counted, never listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .report import PROBLEMS_KEPT, JobOutcome, Verdict

SUBJECT_LIMIT = 99  # SNS: "less than 100 characters"
MAX_LISTED_FRAMES = 50
MESSAGE_LIMIT = 200_000  # well under SNS's 256 KB
assert MAX_LISTED_FRAMES <= PROBLEMS_KEPT  # an outcome keeps enough problem frames and image sets to list


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


def compose_alert(outcome: JobOutcome, report_uri: str, *, notify_clean: bool) -> Alert | None:
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
    """
    verdict = outcome.verdict
    if verdict is Verdict.CLEAN and not notify_clean:
        return None
    job, summary, totals = outcome.job, outcome.summary, outcome.totals
    frames = summary.frames
    job_id = job.job_id
    subject = {
        Verdict.MISMATCH: f"MISMATCH: {frames.mismatch} frame(s) differ in import job {job_id}",
        Verdict.IMPORT_FAILED: f"Import job {job_id} failed",
        Verdict.UNVERIFIED: f"UNVERIFIED: import job {job_id} is not fully verified",
        Verdict.CLEAN: f"OK: import job {job_id} verified, {frames.match} frames match",
    }[verdict]
    lines = [
        _headline(verdict, frames.mismatch),
        "",
        f"Data store: {job.datastore_id}",
        f"Import job: {job_id}",
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
    errored = summary.image_set_errors
    if errored:
        more = f" and {errored - MAX_LISTED_FRAMES} more" if errored > MAX_LISTED_FRAMES else ""
        listed = totals.unreadable_image_sets[:MAX_LISTED_FRAMES]
        lines += ["", "Image sets that could not be read: " + ", ".join(listed) + more]
    lines += ["", f"Full report: {report_uri}", f"Readable report: {report_uri.removesuffix('.json')}.html"]
    message = "\n".join(lines)[:MESSAGE_LIMIT]
    return Alert(
        subject=_one_line(f"[ahi-verify] {subject}")[:SUBJECT_LIMIT],
        message=message,
        attributes={"severity": verdict.value, "jobId": job_id, "datastoreId": job.datastore_id},
    )


def compose_manifest_changed(
    job_id: str, datastore_id: str, planned_sha256: str, new_sha256: str, report_uri: str
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
        f"SHA-256 of the manifest verified: {planned_sha256}",
        f"SHA-256 of the manifest now: {new_sha256}",
        "",
        "The report stands for the first manifest (its evidence lists the SHA-256); verify the job again, for",
        "example with ahi-verify job, and find out who wrote the second one.",
        "",
        f"Report: {report_uri}",
    ]
    return Alert(
        subject=_one_line(f"[ahi-verify] MANIFEST CHANGED: import job {job_id}")[:SUBJECT_LIMIT],
        message="\n".join(lines),
        attributes={"severity": "MANIFEST_CHANGED", "jobId": job_id, "datastoreId": datastore_id},
    )


def compose_unreadable(job_id: str, datastore_id: str, error_type: str) -> Alert:
    """The alert for a job the reconciliation found but cannot verify: its output cannot be read."""
    lines = [
        "An import job of the data store cannot be verified: its output (manifest or ndjson files) cannot be",
        f"read ({error_type}). It is recorded and not swept again; nothing of it has been verified.",
        "",
        f"Data store: {datastore_id}",
        f"Import job: {job_id}",
        "",
        "Look at the job's output folder (GetDICOMImportJob gives it) and verify the job with ahi-verify job.",
    ]
    return Alert(
        subject=_one_line(f"[ahi-verify] UNVERIFIED: import job {job_id} output unreadable")[:SUBJECT_LIMIT],
        message="\n".join(lines),
        attributes={"severity": "UNVERIFIED", "jobId": job_id, "datastoreId": datastore_id},
    )


def compose_open_job(job_id: str, datastore_id: str, *, open_s: float, pending: int, deadline_s: float) -> Alert:
    """The operational message naming the oldest job still open when it is overdue (the alarm on the
    ``OldestOpenJobAge`` metric carries no job ID; this message does)."""
    finished = open_s > deadline_s
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
        f"Import job: {job_id}",
        "",
        "Look at the work queue's dead-letter queue, the worker's errors and throttles (dashboard), and the",
        "job's record in the progress table.",
    ]
    return Alert(
        subject=_one_line(
            f"[ahi-verify] OPS: import job {job_id} {'finished past its deadline' if finished else 'overdue'}"
        )[:SUBJECT_LIMIT],
        message="\n".join(lines),
        attributes={"severity": "OPS", "jobId": job_id, "datastoreId": datastore_id},
    )


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
