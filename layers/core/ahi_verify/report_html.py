"""The job report as one self-contained HTML page an auditor can file: verdict, job, problems, every frame.

Rendered from the same values as ``report.json`` (a :class:`~ahi_verify.report.JobOutcome` and the image
sets), so the page shows exactly its statuses, counts and verdict. The page is the Jinja2 template
``templates/report.html.j2`` (autoescaping on) and comes in three pieces so that a streaming merge can write
it without holding the job: :func:`page_opening` (everything the totals decide: the verdict and why, the job,
the problems, down to the image set list), one :func:`image_set_row` per image set (a collapsed ``<details>``
holding all its frames) and :data:`PAGE_CLOSING`; :func:`render_html` joins the same pieces.

The page loads nothing (no network): one inline style sheet, and one small inline script that only sorts the
image sets; its one link is the relative ``report.json`` beside it. It lists at most
:data:`PAGE_PROBLEM_ROWS` problem frames and says how many more ``report.json`` holds. It never shows a
frame's source file (only the failed and warned files the import itself names), nor any patient attribute.
"""

from __future__ import annotations

import re
from typing import Any

import jinja2

from . import __version__
from .outcomes import Status
from .report import PROBLEMS_KEPT, FrameResult, ImageSetReport, JobOutcome, JobReport, Verdict, unverified_causes
from .syntax import Rule

PAGE_PROBLEM_ROWS = PROBLEMS_KEPT
"""At most this many problem frames (1,000, mismatches first) are listed in the problem tables: the rest are in
report.json (every frame is still in its image set's collapsed frame table)."""

CHECKSUM_INTRO = (
    "Each frame's checksum is compared with the one HealthImaging stored for it (the image frame's IFRC in "
    "the image set metadata), computed with the first rule of the stored transfer syntax that applies:"
)
CHECKSUM_RULES: dict[Rule, str] = {
    Rule.DECODED_HTJ2K: (
        "CRC-32 (zlib) of the frame decoded by OpenJPH: pixels row-major, the samples of a pixel adjacent, "
        "little-endian, ceil(precision/8) bytes a sample (3 widened to 4), signed exactly when the codestream's "
        "SIZ marker says so"
    ),
    Rule.DECODED_J2K: "the same CRC-32 of the frame decoded by OpenJPEG (classic JPEG 2000)",
    Rule.RAW_BYTES: "CRC-32 (zlib) of the bytes GetImageFrame returned, undecoded",
}
"""The checksum definition the page states, one entry per :class:`~ahi_verify.syntax.Rule` (README, "The
decoded IFRC hashes the pixels row-major ...")."""

CHECKSUM_SHORT = (
    "CRC-32 (zlib) of each frame's decoded pixels (decoded-htj2k, decoded-j2k) or of its bytes as served "
    "(raw-bytes); every frame names its rule"
)
STATUS_WORDS = (
    "MATCH: the checksum computed equals the stored one. MISMATCH: it differs, or (with the three-way check) "
    "the original file's pixels differ from what was imported. ERROR: the frame could not be verified; its "
    "reason says why."
)

_VERDICT_WORDS = {
    Verdict.MISMATCH: "The pixels of {mismatch} differ from the checksum HealthImaging stored, or from the source.",
    Verdict.IMPORT_FAILED: "The import job failed: nothing was imported.",
    Verdict.UNVERIFIED: "No frame differs, but the import could not be verified in full:",
    Verdict.CLEAN: "Every frame of every image set matched its stored checksum; nothing failed or disagrees.",
}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("ahi_verify", "templates"),
    # Every value is escaped: IDs, file keys and messages come from the import's own output.
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _css_token(value: object) -> str:
    """A value for a CSS string of the print page header (``@page``): HTML escaping does not apply inside a
    style sheet, so only letters, digits, ``-`` and ``_`` are kept."""
    return re.sub(r"[^A-Za-z0-9_-]", "", str(value))


_FRAME_COLUMNS = "{:<8} {:>5} {:>10} {:>10} {:<13} {:<32} {}"


def _frame_line(f: FrameResult) -> str:
    """A frame as one line of text of its image set's frame list (escaped by the template, as every value):
    status, frame number, expected, actual, rule, image frame ID, SOP instance UID, then source and reason."""
    line = _FRAME_COLUMNS.format(
        f.status.value,
        f.frame_number,
        "-" if f.expected is None else f.expected,
        "-" if f.actual is None else f.actual,
        f.rule.value if f.rule else "-",
        f.image_frame_id,
        f.sop_instance_uid,
    )
    notes = []
    if f.source is not None:
        notes.append(f"source {'-' if f.source.ifrc is None else f.source.ifrc} ({f.source.relation.value})")
    notes += [str(x) for x in (f.reason, f.detail) if x]
    return f"{line}  {' '.join(notes)}" if notes else line


FRAME_HEADING = _FRAME_COLUMNS.format(
    "status", "frame", "expected", "actual", "rule", "image frame", "SOP instance UID  (source, reason)"
)
"""The first line of an image set's frame list: the column names of :func:`_frame_line`."""


def _count_of(n: int, noun: str) -> str:
    """``1 frame``, ``2 frames``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_ENVIRONMENT.filters["css_token"] = _css_token
_ENVIRONMENT.filters["count_of"] = _count_of
_ENVIRONMENT.filters["frame_line"] = _frame_line
_ENVIRONMENT.globals["frame_heading"] = FRAME_HEADING
_MACROS: Any = _ENVIRONMENT.get_template("report.html.j2").module
_METHOD = {
    "checksum_intro": CHECKSUM_INTRO,
    "checksum_short": CHECKSUM_SHORT,
    "checksum_rules": [(rule.value, CHECKSUM_RULES[rule]) for rule in Rule],
    "status_words": STATUS_WORDS,
}

PAGE_CLOSING: str = str(_MACROS.closing(_METHOD))
"""What follows the last image set: the checksum definition, and the sorting script."""


def render_html(report: JobReport) -> str:
    """The report page of a whole report: the pieces a streaming merge writes, joined.

    Parameters
    ----------
    report : JobReport
        The verified job.

    Returns
    -------
    str
        The HTML document.
    """
    rows = "".join(image_set_row(s, n) for n, s in enumerate(report.image_sets))
    return page_opening(report.outcome()) + rows + PAGE_CLOSING


def page_opening(outcome: JobOutcome) -> str:
    """The page down to the image set list: verdict and why, the job, the problems.

    Parameters
    ----------
    outcome : JobOutcome
        The merged job without its frames (its totals hold the problem frames the page lists).

    Returns
    -------
    str
        The first piece of the page.
    """
    job, totals = outcome.job, outcome.totals
    mismatch = totals.summary.frames.mismatch
    page = {
        "verdict_words": _VERDICT_WORDS[outcome.verdict].format(
            mismatch="1 frame" if mismatch == 1 else f"{mismatch} frames"
        ),
        # The UNVERIFIED causes are the verdict's own rule in words; with a mismatch they are what else is wrong.
        "causes": unverified_causes(outcome),
        "failed_files": (job.files_with_customer_error or 0) + (job.files_with_server_error or 0),
        "version": __version__,
        **_METHOD,
        "unlisted": totals.problem_count - len(totals.problems),
        "unreadable": list(zip(totals.unreadable_image_sets, totals.unreadable_errors, strict=True)),
    }
    return str(_MACROS.opening(outcome, page))


def image_set_row(image_set: ImageSetReport, order: int) -> str:
    """One image set of the list: its counts, collapsed, and inside it every frame.

    Parameters
    ----------
    image_set : ImageSetReport
        The image set with its frames.
    order : int
        Its position in the report (the list's "report order" sort key).

    Returns
    -------
    str
        Its ``<details>`` element.
    """
    return str(_MACROS.image_set(image_set, order, _image_set_status(image_set)))


def _image_set_status(image_set: ImageSetReport) -> tuple[str, int]:
    """The image set's tag and its rank for "problems first" (0 is the worst)."""
    counts = image_set.counts
    if counts.mismatch:
        return Status.MISMATCH.value, 0
    if image_set.error:
        return "UNREADABLE", 1
    if counts.error:
        return Status.ERROR.value, 2
    if counts.all_match:
        return Status.MATCH.value, 4
    return "EMPTY", 3
