"""The job report as one self-contained HTML page (no scripts, no external resources), problems first.

Rendered from :class:`ahi_verify.report.JobReport`, so the page shows exactly the statuses, counts and
verdict of ``report.json``.
"""

from __future__ import annotations

import html

from .report import FrameResult, JobReport

_COLUMNS = ("status", "image set", "frame", "#", "expected", "actual", "source", "reason")


def render_html(report: JobReport) -> str:
    """The report page: verdict, totals, the frames that are not a clean match, rejected and warned files,
    notes, and every image set's counts."""
    e = html.escape
    job, summary = report.job, report.summary
    frames = summary.frames
    rows = "".join(_problem_row(image_set_id, f) for image_set_id, f in report.problem_frames())
    failures = "".join(
        f"<li>{e(x.input_file)}: {e(str(x.exception_type))}: {e(str(x.message))}</li>" for x in report.findings.failures
    )
    warnings = "".join(
        f"<li>{e(x.input_file)}: codes {e(', '.join(str(w.code) for w in x.warnings))}</li>"
        for x in report.findings.warnings
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    disagreements = "".join(f"<li>{e(d)}</li>" for d in report.discrepancies)
    sets = "".join(
        f"<tr><td>{e(s.image_set_id)}</td><td>{e(str(s.version))}</td><td>{s.counts.total}</td>"
        f"<td>{s.counts.match}</td><td>{s.counts.mismatch}</td><td>{s.counts.error}</td>"
        f"<td>{e(s.error or '')}</td></tr>"
        for s in report.image_sets
    )

    def section(title: str, body: str) -> str:
        return f"<h2>{title}</h2>{body}" if body else ""

    table_head = "<tr>" + "".join(f"<th>{c}</th>" for c in _COLUMNS) + "</tr>"
    failed = f"&middot; job failed: {e(job.message)}" if job.message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ahi-verify report {e(job.job_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .5em;font-family:monospace}}.mismatch{{background:#fdd}}
.error{{background:#ffd}}.verdict{{font-size:1.4em;font-weight:bold}}</style></head><body>
<h1>Import job {e(job.job_id)}</h1>
<p class="verdict">{e(report.verdict.value)}</p>
<p>Data store {e(job.datastore_id)} &middot; output {e(job.folder)}
{failed}</p>
<p>{summary.image_sets} image sets, {frames.total} frames: {frames.match} match, {frames.mismatch}
mismatch, {frames.error} error; {summary.import_failures} failed files, {summary.import_warnings} files with
warnings, {summary.unreadable_lines} unreadable ndjson lines.</p>
{section("Counts and identities that disagree", f"<ul>{disagreements}</ul>" if disagreements else "")}
{section("Frames that did not match", f"<table>{table_head}{rows}</table>" if rows else "")}
{section("Files the import rejected", f"<ul>{failures}</ul>" if failures else "")}
{section("Files imported with warnings", f"<ul>{warnings}</ul>" if warnings else "")}
{section("Notes", f"<ul>{notes}</ul>" if notes else "")}
<h2>Image sets</h2><table><tr><th>image set</th><th>version</th><th>frames</th><th>match</th><th>mismatch</th>
<th>error</th><th>image set error</th></tr>{sets}</table>
</body></html>
"""


def _problem_row(image_set_id: str, f: FrameResult) -> str:
    e = html.escape
    expected = "-" if f.expected is None else f.expected
    actual = "-" if f.actual is None else f.actual
    source = "-" if f.source is None else f"{'-' if f.source.ifrc is None else f.source.ifrc} ({f.source.relation})"
    why = " ".join(str(x) for x in (f.reason, f.detail) if x)
    return (
        f"<tr class='{e(f.status.lower())}'><td>{e(f.status)}</td><td>{e(image_set_id)}</td>"
        f"<td>{e(f.image_frame_id)}</td><td>{f.frame_number}</td><td>{expected}</td><td>{actual}</td>"
        f"<td>{e(source)}</td><td>{e(why)}</td></tr>"
    )
