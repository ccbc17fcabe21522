"""The job report: one JSON document (the CLI's ``job --format json`` and the application's
``report.json``) and a self-contained HTML rendering of it, problems first.

Reports carry data store, job, image set and frame IDs, DICOM series/instance UIDs, checksums and the
import's own file keys and messages; never patient or study attributes (the verifier does not read them).
"""

from __future__ import annotations

import enum
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .frame_check import FrameResult, Status
from .job import ImportFindings, JobResult
from .job_output import ImageSetSummary, JobManifest


class Verdict(enum.StrEnum):
    """The job's outcome, worst first."""

    MISMATCH = "MISMATCH"
    """At least one frame's pixels differ from the published (or the source) checksum."""
    IMPORT_FAILED = "IMPORT_FAILED"
    """The import job itself failed: nothing was imported."""
    UNVERIFIED = "UNVERIFIED"
    """No mismatch, but something could not be verified or was not imported."""
    CLEAN = "CLEAN"


def job_header(
    *,
    job_id: str,
    datastore_id: str,
    folder: str,
    manifest: JobManifest | None,
    findings: ImportFindings | None,
    notes: Sequence[str] = (),
    failure_message: str | None = None,
) -> dict[str, Any]:
    """Everything about a job except its frames: manifest totals, failed and warned files, notes."""
    findings = findings or ImportFindings()
    return {
        "job": {
            "jobId": job_id,
            "datastoreId": datastore_id,
            "folder": folder,
            "status": "FAILED" if failure_message else "COMPLETED",
            "message": failure_message,
            "inputS3Uri": manifest.input_s3_uri if manifest else None,
            "scannedFiles": manifest.scanned_files if manifest else None,
            "importedFiles": manifest.imported_files if manifest else None,
            "filesWithCustomerError": manifest.customer_error_files if manifest else None,
            "filesWithServerError": manifest.server_error_files if manifest else None,
            "generatedImageSets": manifest.generated_image_sets if manifest else None,
        },
        "failures": [
            {"inputFile": f.input_file, "exceptionType": f.exception_type, "message": f.message}
            for f in findings.failures
        ],
        "warnings": [
            {
                "inputFile": w.input_file,
                "imageSetId": w.image_set_id,
                "warnings": [{"code": x.code, "type": x.type, "affectsFrames": x.affects_frames} for x in w.warnings],
            }
            for w in findings.warnings
        ],
        "unreadableLines": [{"file": p.key, "line": p.line_number, "problem": p.problem} for p in findings.problems],
        "notes": list(notes),
    }


def image_set_entry(
    summary: ImageSetSummary,
    results: Iterable[FrameResult],
    *,
    error: str | None = None,
    extra_frame_fields: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One image set of the report; ``extra_frame_fields`` adds per-frame fields by frame index."""
    frames = []
    for r in results:
        entry = r.to_json()
        if extra_frame_fields and r.frame.index in extra_frame_fields:
            entry.update(extra_frame_fields[r.frame.index])
        frames.append(entry)
    return image_set_document(summary.image_set_id, summary.version, summary.is_primary, frames, error=error)


def image_set_document(
    image_set_id: str, version: int | None, is_primary: bool | None, frames: list[dict[str, Any]], *, error: str | None
) -> dict[str, Any]:
    """An image set entry from frame entries that are already JSON (the application merges parts)."""
    return {
        "imageSetId": image_set_id,
        "version": version,
        "isPrimary": is_primary,
        "error": error,
        "summary": frame_counts(frames),
        "frames": frames,
    }


def frame_counts(frames: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Totals by status over frame entries."""
    counts = {"total": 0, "match": 0, "mismatch": 0, "error": 0}
    for f in frames:
        counts["total"] += 1
        counts[str(f["status"]).lower()] += 1
    return counts


def report_document(header: Mapping[str, Any], image_sets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The full report: header, image sets with their frames, totals and the verdict."""
    totals = frame_counts(f for s in image_sets for f in s["frames"])
    summary = {
        "imageSets": len(image_sets),
        "imageSetErrors": sum(1 for s in image_sets if s.get("error")),
        "frames": totals,
        "importFailures": len(header["failures"]),
        "importWarnings": len(header["warnings"]),
        "unreadableLines": len(header["unreadableLines"]),
    }
    doc = {**header, "summary": summary, "imageSets": list(image_sets)}
    doc["verdict"] = verdict(doc).value
    return doc


def verdict(doc: Mapping[str, Any]) -> Verdict:
    """Decide the job's verdict from a report document."""
    summary = doc["summary"]
    frames = summary["frames"]
    if any(is_mismatch(f) for s in doc["imageSets"] for f in s["frames"]):
        return Verdict.MISMATCH
    if doc["job"]["status"] == "FAILED":
        return Verdict.IMPORT_FAILED
    frame_warnings = any(w["affectsFrames"] for line in doc["warnings"] for w in line["warnings"])
    job = doc["job"]
    unclean = (
        frames["error"]
        or summary["imageSetErrors"]
        or summary["importFailures"]
        or summary["unreadableLines"]
        or frame_warnings
        or (job["filesWithCustomerError"] or 0) + (job["filesWithServerError"] or 0)
        or frames["total"] == 0
        or any(_source_unchecked(f) for s in doc["imageSets"] for f in s["frames"])
        or any(s.get("sourceErrors") or s.get("orphanSourceFrames") for s in doc["imageSets"])
    )
    return Verdict.UNVERIFIED if unclean else Verdict.CLEAN


def _source_unchecked(frame: Mapping[str, Any]) -> bool:
    """The three-way check ran but could not compare this frame with its source."""
    source = frame.get("source")
    return source is not None and source.get("relation") != "consistent"


def job_report(result: JobResult) -> dict[str, Any]:
    """The report of a job verified by :func:`ahi_verify.job.verify_job` (the CLI's ``job --format json``).

    The same document shape the application writes as ``report.json``, plus, for the three-way check, each
    frame's ``source`` and each image set's ``sourceErrors`` and ``orphanSourceFrames``.
    """
    manifest = result.manifest
    header = job_header(
        job_id=manifest.job_id,
        datastore_id=manifest.datastore_id,
        folder=result.folder.uri,
        manifest=manifest,
        findings=result.findings,
        notes=result.notes,
    )
    image_sets = []
    for outcome in result.image_sets:
        sources = {
            index: {"source": {"ifrc": c.source, "relation": c.relation.value, "inputFile": c.input_file}}
            for index, c in (outcome.sources or {}).items()
        }
        entry = image_set_entry(
            outcome.summary,
            outcome.result.results if outcome.result else (),
            error=outcome.error,
            extra_frame_fields=sources,
        )
        entry["sourceErrors"] = outcome.source_errors
        entry["orphanSourceFrames"] = outcome.orphan_source_frames
        image_sets.append(entry)
    return report_document(header, image_sets)


def mismatch_count(doc: Mapping[str, Any]) -> int:
    """Frames whose pixels differ (published or source checksum)."""
    return sum(1 for s in doc["imageSets"] for f in s["frames"] if is_mismatch(f))


_SOURCE_MISMATCHES = {
    "import-changed-pixels",
    "storage-corrupted",
    "stored-checksum-wrong",
    "all-differ",
    "source-differs-from-stored",
}


def is_mismatch(frame: Mapping[str, Any]) -> bool:
    """The frame's pixels differ: from the published checksum, or (three-way check) from the source."""
    relation = (frame.get("source") or {}).get("relation")
    return frame["status"] == Status.MISMATCH.value or relation in _SOURCE_MISMATCHES


def problem_frames(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``(image set ID, frame entry)`` for every frame that did not match or disagrees with its source,
    mismatches first."""
    found = [
        (s["imageSetId"], f)
        for s in doc["imageSets"]
        for f in s["frames"]
        if f["status"] != Status.MATCH.value or is_mismatch(f)
    ]
    return sorted(found, key=lambda pair: not is_mismatch(pair[1]))


def render_html(doc: Mapping[str, Any]) -> str:
    """A self-contained HTML page (no scripts, no external resources): summary, problems, image sets."""
    e = html.escape
    job, summary, frames = doc["job"], doc["summary"], doc["summary"]["frames"]
    rows = []
    for image_set_id, f in problem_frames(doc):
        expected = "-" if f["expected"] is None else f["expected"]
        actual = "-" if f["actual"] is None else f["actual"]
        why = " ".join(str(x) for x in (f.get("reason"), f.get("detail")) if x)
        rows.append(
            f"<tr class='{e(f['status'].lower())}'><td>{e(f['status'])}</td><td>{e(image_set_id)}</td>"
            f"<td>{e(f['imageFrameId'])}</td><td>{f['frameNumber']}</td><td>{expected}</td><td>{actual}</td>"
            f"<td>{e(why)}</td></tr>"
        )
    failures = "".join(
        f"<li>{e(x['inputFile'])}: {e(str(x['exceptionType']))}: {e(str(x['message']))}</li>" for x in doc["failures"]
    )
    warnings = "".join(
        f"<li>{e(x['inputFile'])}: codes {e(', '.join(str(w['code']) for w in x['warnings']))}</li>"
        for x in doc["warnings"]
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in doc["notes"])
    sets = "".join(
        f"<tr><td>{e(s['imageSetId'])}</td><td>{e(str(s['version']))}</td><td>{s['summary']['total']}</td>"
        f"<td>{s['summary']['match']}</td><td>{s['summary']['mismatch']}</td><td>{s['summary']['error']}</td>"
        f"<td>{e(s['error'] or '')}</td></tr>"
        for s in doc["imageSets"]
    )

    def section(title: str, body: str) -> str:
        return f"<h2>{title}</h2>{body}" if body else ""

    columns = ("status", "image set", "frame", "#", "expected", "actual", "reason")
    table_head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ahi-verify report {e(job["jobId"])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .5em;font-family:monospace}}.mismatch{{background:#fdd}}
.error{{background:#ffd}}.verdict{{font-size:1.4em;font-weight:bold}}</style></head><body>
<h1>Import job {e(job["jobId"])}</h1>
<p class="verdict">{e(doc["verdict"])}</p>
<p>Data store {e(job["datastoreId"])} &middot; output {e(job["folder"])}
{f"&middot; job failed: {e(job['message'])}" if job["message"] else ""}</p>
<p>{summary["imageSets"]} image sets, {frames["total"]} frames: {frames["match"]} match, {frames["mismatch"]}
mismatch, {frames["error"]} error; {summary["importFailures"]} failed files, {summary["importWarnings"]} files with
warnings, {summary["unreadableLines"]} unreadable ndjson lines.</p>
{section("Frames that did not match", f"<table>{table_head}{''.join(rows)}</table>" if rows else "")}
{section("Files the import rejected", f"<ul>{failures}</ul>" if failures else "")}
{section("Files imported with warnings", f"<ul>{warnings}</ul>" if warnings else "")}
{section("Notes", f"<ul>{notes}</ul>" if notes else "")}
<h2>Image sets</h2><table><tr><th>image set</th><th>version</th><th>frames</th><th>match</th><th>mismatch</th>
<th>error</th><th>image set error</th></tr>{sets}</table>
</body></html>
"""
