"""report.html: the page an auditor files. Verdict with its reasons, the job, problems first, every frame.

The page is read as a document here (what it says and where); ``tests/unit/test_report_browser.py`` looks at
it in headless Chromium.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

import ahi_verify
from ahi_verify.outcomes import Reason, Status
from ahi_verify.report import JobReport, Timings, Verdict, unverified_causes
from ahi_verify.report_html import CHECKSUM_RULES, PAGE_CLOSING, image_set_row, page_opening, render_html
from ahi_verify.syntax import Rule
from tests.unit.test_report import (
    CRC,
    DS,
    FOLDER,
    ISET_A,
    ISET_B,
    JOB,
    failure,
    frame,
    header,
    image_set,
    matching,
    report,
    source_of,
    warned,
)

SCRIPT = "<script>alert(1)</script>"


class Cells(HTMLParser):
    """The text of every table row of a page section, by the id of its table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in {"td", "th"} and self._row is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(page: str) -> dict[str, list[list[str]]]:
    parser = Cells()
    parser.feed(page)
    return parser.tables


def text_of(page: str) -> str:
    """The page's words, tags removed and whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def hostile_report() -> JobReport:
    """A report whose every free-text field carries markup."""
    head = header(
        failures=[failure(input_file=f"dicom_input/{SCRIPT}.dcm", message=SCRIPT)],
        warnings=[warned(45330, input_file=f"dicom_input/{SCRIPT}w.dcm")],
        notes=[SCRIPT],
    )
    head = replace(head, job=replace(head.job, message=SCRIPT))
    return report(
        head,
        image_set(ISET_A, [frame(1), frame(2, Status.ERROR, reason=Reason.DECODE_FAILED, detail=SCRIPT)]),
        image_set(ISET_B, [], error=SCRIPT),
    )


def test_html_escapes_every_free_text_field() -> None:
    # GIVEN markup in a frame detail, a failure, a warning's file, a note, an image set error and the job message
    page = render_html(hostile_report())
    # THEN none of it comes out as markup: the one script is the page's own sorting script
    assert page.lower().count("<script") == 1
    assert "alert(1)</script>" not in page
    # AND each is shown escaped: the frame detail and the image set error twice (problems, and the image set)
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 9


def test_html_is_self_contained() -> None:
    # GIVEN a report with every section filled
    doc = report(
        header(failures=[failure()], warnings=[warned(45330)], notes=["a note"]),
        image_set(ISET_A, [frame(1), frame(2, Status.MISMATCH), frame(3, Status.ERROR, reason=Reason.NO_CHECKSUM)]),
    )
    page = render_html(doc)
    # THEN the page loads nothing: no URL, no external script or style; its links are in-page or report.json
    assert not re.search(r"https?://", page)
    assert not re.search(r"\bsrc\s*=|url\(|@import", page, re.IGNORECASE)
    links = set(re.findall(r'href="([^"]*)"', page))
    assert "report.json" in links
    assert all(link == "report.json" or link.startswith("#") for link in links), links
    assert re.findall(r"<script[^>]*>", page) == ["<script>"]
    assert page.startswith("<!doctype html>")
    assert page.rstrip().endswith("</html>")
    # AND it scales to a phone's width
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


@pytest.mark.parametrize(
    ("verdict", "doc"),
    [
        (Verdict.MISMATCH, lambda: report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)]))),
        (Verdict.IMPORT_FAILED, lambda: report(header(failure_message="bucket denied"))),
        (Verdict.UNVERIFIED, lambda: report(header(), image_set(ISET_A, [frame(1)]), image_set(ISET_B, [], error="x"))),
        (Verdict.CLEAN, lambda: report(header(), image_set(ISET_A, matching(2)))),
    ],
)
def test_the_verdict_is_a_word_in_its_colour(verdict: Verdict, doc: object) -> None:
    # GIVEN a job of each verdict
    rep = doc()  # type: ignore[operator]
    page = render_html(rep)
    # THEN the verdict stands as a word in a box of its colour class (the colour is never the only sign)
    assert f'<section class="verdict v-{verdict.value.lower()}" id="verdict">\n<p class="word">{verdict}</p>' in page
    assert f".v-{verdict.value.lower()}{{border-color:" in page
    # AND the box lists the verdict's UNVERIFIED causes, the rule's own words
    box = page[page.index('id="verdict"') : page.index("</section>")]
    for cause in unverified_causes(rep.outcome()):
        assert f"<li>{cause}</li>" in box


def test_an_unverified_verdict_says_why() -> None:
    page = render_html(report(header(), image_set(ISET_A, [frame(1)]), image_set(ISET_B, [], error="denied")))
    box = text_of(page[page.index('<p class="word">') : page.index("</section>")])
    assert box == (
        "UNVERIFIED No frame differs, but the import could not be verified in full: 1 image set could not be read"
    )


def test_the_header_is_what_an_auditor_files() -> None:
    # GIVEN a finished job with its manifest's counts and the verification's times
    timings = Timings("2026-12-01T10:00:00+00:00", "2026-12-01T10:03:12+00:00", 4, 190.44)
    rep = replace(report(header(failures=[failure()]), image_set(ISET_A, matching(2))), timings=timings)
    page = render_html(rep)
    words = text_of(page)
    # THEN it names the job, its status, the data store, input and output, the counts, times, tool and checksum
    assert "Import job status COMPLETED" in words
    assert f"Job ID {JOB}" in words
    assert f"Data store {DS}" in words
    assert "Input s3://medical-imaging-dicom-input/dicom_input/" in words
    assert f"Output {FOLDER}" in words
    assert "Files (manifest) 3 scanned, 3 imported, 0 with errors (0 customer, 0 server)" in words
    assert "started 2026-12-01T10:00:00+00:00, finished 2026-12-01T10:03:12+00:00; 4 work items, 190.4 s" in words
    assert f"Tool ahi-verify {ahi_verify.__version__}" in words
    assert "Checksum CRC-32 (zlib) of each frame's decoded pixels" in words
    assert "Full report report.json" in words
    # AND the checksum definition is stated in full, one entry per rule
    for rule in Rule:
        assert f"<li><b>{rule.value}</b>: {CHECKSUM_RULES[rule]}</li>" in html.unescape(page)


def test_a_failed_job_shows_its_status_and_escaped_message() -> None:
    page = render_html(report(header(failure_message="bucket <b>&</b> denied")))
    assert "FAILED &middot; job failed: bucket &lt;b&gt;&amp;&lt;/b&gt; denied" in page
    assert '<p class="word">IMPORT_FAILED</p>' in page


def test_problems_come_first_each_in_its_section() -> None:
    # GIVEN a mismatch, an unverifiable frame, an unreadable image set, a rejected and a warned file
    mismatch = frame(2, Status.MISMATCH)
    error = frame(3, Status.ERROR, reason=Reason.NO_CHECKSUM, detail="no checksum in metadata", expected=None)
    rep = report(
        header(failures=[failure()], warnings=[warned(45330)]),
        image_set(ISET_A, [frame(1), mismatch, error]),
        image_set(ISET_B, [], error="GetImageSetMetadata: AccessDeniedException"),
    )
    page = render_html(rep)
    found = tables(page)
    # THEN the mismatched frame is in its table with its expected and actual checksums, rule and identities
    (mismatched,) = found["mismatched"][1:]
    assert mismatched[:6] == ["MISMATCH", "checksum-differs", str(CRC), str(CRC ^ 1), "decoded-htj2k", "-"]
    assert f"image set {ISET_A} image frame {mismatch.image_frame_id} · frame 1" == mismatched[6]
    assert mismatched[7] == f"series {mismatch.series_instance_uid} SOP {mismatch.sop_instance_uid}"
    # AND the frame that could not be verified is in the next, with its reason
    assert [row[:4] for row in found["unverifiable"][1:]] == [
        ["ERROR", "no-checksum-in-metadata no checksum in metadata", "-", "-"]
    ]
    # AND the unreadable image set is listed with its error, and counted in the summary line
    assert found["unreadable"][1:] == [[ISET_B, "GetImageSetMetadata: AccessDeniedException"]]
    assert "2 image sets (1 could not be read), 3 frames: 1 match, 1 mismatch, 1 error" in text_of(page)
    # AND in that order, the rejected and warned files after them, all before the image sets
    order = [
        page.index(marker)
        for marker in ('id="mismatched"', 'id="unverifiable"', 'id="unreadable"', 'id="failed"', 'id="warned"')
    ]
    assert order == sorted(order)
    assert order[-1] < page.index('<h2 id="image-sets">')
    assert "<li>dicom_input/bad.dcm: ValidationException: DICOM attribute missing</li>" in page
    assert "<li>dicom_input/w.dcm: codes 45330 (affects frames)</li>" in page


def test_a_source_mismatch_row_says_why() -> None:
    # GIVEN a frame whose stored checksum matched but whose original file's pixels differ
    page = render_html(report(header(), image_set(ISET_A, [frame(1, source=source_of("import-changed-pixels"))])))
    (row,) = tables(page)["mismatched"][1:]
    # THEN it sits as a MISMATCH row with the source checksum and the reason, and never the source file's key
    assert row[0] == "MISMATCH"
    assert row[1].startswith("differs-from-source import-changed-pixels:")
    assert row[5] == f"{CRC ^ 7} (import-changed-pixels)"
    assert "dicom_input/1.dcm" not in page


def test_every_image_set_holds_all_its_frames() -> None:
    # GIVEN two image sets, one with a mismatch, one unreadable
    rep = report(
        header(), image_set(ISET_A, [*matching(3), frame(4, Status.MISMATCH)]), image_set(ISET_B, [], error="x")
    )
    page = render_html(rep)
    # THEN each is a collapsed entry with its counts and status, sortable by its data attributes
    assert (
        f'<details id="set-{ISET_A}" data-order="0" data-rank="0" data-id="{ISET_A}" data-frames="4" '
        'data-mismatch="1" data-error="0"><summary>'
    ) in page
    assert f'<details id="set-{ISET_B}" data-order="1" data-rank="1"' in page
    assert '<span class="tag t-unreadable">UNREADABLE</span>' in page
    # AND the first lists every frame, a line each under its series UID: status, frame number, checksums,
    # rule, frame ID and SOP UID; a frame that is not a clean match is marked, with its reason
    entry = page[page.index(f'<details id="set-{ISET_A}"') : page.index(f'<details id="set-{ISET_B}"')]
    lines = html.unescape(entry[entry.index('<pre class="frames">') : entry.index("</pre>")]).splitlines()
    first, mismatch = rep.image_sets[0].frames[0], rep.image_sets[0].frames[3]
    assert lines[1] == f"<b>series {first.series_instance_uid}</b>"
    assert lines[2].split() == [
        "MATCH", "1", str(CRC), str(CRC), "decoded-htj2k", first.image_frame_id, first.sop_instance_uid
    ]  # fmt: skip
    marked = re.sub("<[^>]+>", "", lines[5])
    assert lines[5] == f'<span class="mismatch">{marked}</span>'
    assert marked.split()[:7] == [
        "MISMATCH", "1", str(CRC), str(CRC ^ 1), "decoded-htj2k", mismatch.image_frame_id, mismatch.sop_instance_uid
    ]  # fmt: skip
    assert marked.endswith("  checksum-differs")
    assert len(lines) == 2 + 4


def test_a_clean_job_has_no_problem_sections() -> None:
    page = render_html(report(header(), image_set(ISET_A, matching(2))))
    assert '<p class="word">CLEAN</p>' in page
    assert "<p>None: every frame matched and every image set was read.</p>" in page
    assert not {"mismatched", "unverifiable", "unreadable"} & set(tables(page))
    for title in ("Files the import rejected", "Files imported with warnings", "Notes"):
        assert title not in page


def test_the_page_is_its_pieces_joined() -> None:
    # GIVEN a report of two image sets
    rep = report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)]), image_set(ISET_B, matching(2)))
    # THEN the page a streaming merge writes piece by piece is the whole report's page
    pieces = page_opening(rep.outcome()) + "".join(image_set_row(s, n) for n, s in enumerate(rep.image_sets))
    assert pieces + PAGE_CLOSING == render_html(rep)


def test_every_rule_has_its_checksum_definition() -> None:
    assert set(CHECKSUM_RULES) == set(Rule)


def test_the_print_page_header_carries_only_safe_characters() -> None:
    # GIVEN a job ID with characters a CSS string would end at (HTML escaping does not apply in a style sheet)
    head = header()
    head = replace(head, job=replace(head.job, job_id='j"}body{x:1'))
    page = render_html(report(head))
    # THEN the @page header keeps only its letters and digits
    assert 'content:"ahi-verify report \\2014  job jbodyx1 \\2014  UNVERIFIED"' in page
