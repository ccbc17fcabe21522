"""The job report as one self-contained HTML page (no scripts, no external resources), problems first.

Rendered from the same values as ``report.json`` (a :class:`~ahi_verify.report.JobOutcome` and the image
sets), so the page shows exactly its statuses, counts and verdict. The page comes in three pieces so that
a streaming merge can write it without holding the job: :func:`page_opening` (everything the totals decide,
down to the image set table's heading), one :func:`image_set_row` per image set, and :data:`PAGE_CLOSING`.
It lists at most :data:`PAGE_PROBLEM_ROWS` problem frames and says how many more ``report.json`` holds.
"""

from __future__ import annotations

import html

from .report import PROBLEMS_KEPT, FrameResult, ImageSetReport, JobOutcome, JobReport

_COLUMNS = ("status", "image set", "frame", "#", "expected", "actual", "source", "reason")

PAGE_PROBLEM_ROWS = PROBLEMS_KEPT
"""At most this many problem frames (1,000, mismatches first) are listed: ~400 bytes a row, so a page of a
job whose every frame failed stays well under a megabyte and opens at once; the rest are in report.json."""

PAGE_CLOSING = "</table>\n</body></html>\n"
"""What follows the last image set row."""


def render_html(report: JobReport) -> str:
    """The report page of a whole report (the three pieces joined)."""
    rows = "".join(image_set_row(s) for s in report.image_sets)
    return page_opening(report.outcome()) + rows + PAGE_CLOSING


def page_opening(outcome: JobOutcome) -> str:
    """The page down to the image set table's heading: verdict, totals, the frames that are not a clean match,
    rejected and warned files, notes."""
    e = html.escape
    job, summary, totals = outcome.job, outcome.summary, outcome.totals
    frames = summary.frames
    listed = totals.problems[:PAGE_PROBLEM_ROWS]
    rows = "".join(_problem_row(image_set_id, f) for image_set_id, f in listed)
    unlisted = totals.problem_count - len(listed)
    more = f"<p>and {unlisted} more &mdash; see report.json</p>" if unlisted > 0 else ""
    failures = "".join(
        f"<li>{e(x.input_file)}: {e(str(x.exception_type))}: {e(str(x.message))}</li>"
        for x in outcome.findings.failures
    )
    warnings = "".join(
        f"<li>{e(x.input_file)}: codes {e(', '.join(str(w.code) for w in x.warnings))}</li>"
        for x in outcome.findings.warnings
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in outcome.notes)
    disagreements = "".join(f"<li>{e(d)}</li>" for d in outcome.discrepancies)

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
<p class="verdict">{e(outcome.verdict.value)}</p>
<p>Data store {e(job.datastore_id)} &middot; output {e(job.folder)}
{failed}</p>
<p>{summary.image_sets} image sets, {frames.total} frames: {frames.match} match, {frames.mismatch}
mismatch, {frames.error} error; {summary.import_failures} failed files, {summary.import_warnings} files with
warnings, {summary.unreadable_lines} unreadable ndjson lines.</p>
{section("Counts and identities that disagree", f"<ul>{disagreements}</ul>" if disagreements else "")}
{section("Frames that did not match", f"<table>{table_head}{rows}</table>{more}" if rows else "")}
{section("Files the import rejected", f"<ul>{failures}</ul>" if failures else "")}
{section("Files imported with warnings", f"<ul>{warnings}</ul>" if warnings else "")}
{section("Notes", f"<ul>{notes}</ul>" if notes else "")}
<h2>Image sets</h2><table><tr><th>image set</th><th>version</th><th>frames</th><th>match</th><th>mismatch</th>
<th>error</th><th>image set error</th></tr>"""


def image_set_row(image_set: ImageSetReport) -> str:
    """One image set's row of the image set table: its counts and error."""
    e, counts = html.escape, image_set.counts
    return (
        f"<tr><td>{e(image_set.image_set_id)}</td><td>{e(str(image_set.version))}</td><td>{counts.total}</td>"
        f"<td>{counts.match}</td><td>{counts.mismatch}</td><td>{counts.error}</td>"
        f"<td>{e(image_set.error or '')}</td></tr>"
    )


def _problem_row(image_set_id: str, f: FrameResult) -> str:
    e = html.escape
    expected = "-" if f.expected is None else f.expected
    actual = "-" if f.actual is None else f.actual
    source = "-" if f.source is None else f"{'-' if f.source.ifrc is None else f.source.ifrc} ({f.source.relation})"
    if f.decoder_dependent and f.source is not None:
        source += (
            f"; depends on the decoder: {f.source.decoder} is within {f.source.max_difference} "
            f"on {f.source.differing_samples} samples"
        )
    why = " ".join(str(x) for x in (f.reason, f.detail) if x)
    return (
        f"<tr class='{e(f.status.lower())}'><td>{e(f.status)}</td><td>{e(image_set_id)}</td>"
        f"<td>{e(f.image_frame_id)}</td><td>{f.frame_number}</td><td>{expected}</td><td>{actual}</td>"
        f"<td>{e(source)}</td><td>{e(why)}</td></tr>"
    )
