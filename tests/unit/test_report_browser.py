"""report.html in a real browser: headless Chromium from the system packages (``make browser`` installs it).

GIVEN the demo-like job of ``bench/report_html.py`` (120 image sets, a mismatched frame, a frame without a
checksum, the 101st image set unreadable, a rejected and a warned file, the other frames matching) WHEN
Chromium loads its page THEN the problem rows are in the DOM where they belong, the page fits 500 px without
scrolling sideways, sorting puts the problems first, and screenshots at 1400 and 500 px are written to
``build/report-1400.png`` and ``build/report-500.png`` for a person to look at.

Skipped, saying why, where Chromium is not installed (a developer machine without root); CI installs it.
"""

from __future__ import annotations

import html
import json
import re
import struct
import subprocess
from pathlib import Path

import pytest

from ahi_verify.report import JobReport
from ahi_verify.report_html import render_html
from bench.report_html import UNREADABLE, chromium, chromium_command, demo_like_report, image_set_id
from tests.unit.test_report_html import tables

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build"
FRAMES = 1_200
BROWSER = chromium()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="headless Chromium is not installed: `make browser` installs it (apt-get, needs root); CI runs this test",
)

BLANK_PNG_BYTES = 40_000
"""A white screenshot compresses to a few kilobytes; one of this page's text is well over 100 KB."""

PROBE = """<script>
/* Test only: what the page looks like to the browser, written where --dump-dom shows it. */
var root = document.documentElement, verdict = document.getElementById("verdict");
var box = verdict.getBoundingClientRect(), cell = document.querySelector("#mismatched td");
var probe = {width: root.clientWidth, scrollWidth: root.scrollWidth, verdictRight: box.right,
  verdictColour: getComputedStyle(verdict).backgroundColor, cellDisplay: getComputedStyle(cell).display};
var first = document.querySelector("#sets > details"), frames = first.querySelector("pre");
probe.framesHiddenClosed = !frames.checkVisibility();
first.open = true;
probe.framesShownOpen = frames.checkVisibility() && frames.getBoundingClientRect().height > 0;
probe.scrollWidthOpen = root.scrollWidth;
document.querySelector('#sort button[data-key="rank"]').click();
probe.problemsFirst = Array.prototype.slice.call(document.querySelectorAll("#sets > details"), 0, 2)
  .map(function (d) { return d.id; });
document.body.setAttribute("data-probe", JSON.stringify(probe));
</script>
</body>"""


def _run(*args: str) -> str:
    assert BROWSER is not None
    proc = subprocess.run(chromium_command(BROWSER, *args), capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _probe(page: str, folder: Path, width: int) -> dict[str, object]:
    probed = folder / f"probe-{width}.html"
    probed.write_text(page.replace("</body>", PROBE, 1), encoding="utf-8")
    dom = _run(f"--window-size={width},900", "--dump-dom", probed.as_uri())
    (found,) = re.findall(r'data-probe="([^"]*)"', dom)
    return dict(json.loads(html.unescape(found)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobReport, Path]:
    """The demo-like job's page, with its report.json beside it (the page links to it)."""
    rep = demo_like_report(FRAMES)
    folder = tmp_path_factory.mktemp("report")
    (folder / "report.json").write_text(json.dumps(rep.to_json()), encoding="utf-8")
    (folder / "report.html").write_text(render_html(rep), encoding="utf-8")
    return rep, folder / "report.html"


@pytest.mark.parametrize("width", [1400, 500])
def test_screenshot_of_the_demo_report(demo: tuple[JobReport, Path], width: int) -> None:
    # WHEN Chromium takes a screenshot of the page at this width
    _, page = demo
    SHOTS.mkdir(exist_ok=True)
    shot = SHOTS / f"report-{width}.png"
    shot.unlink(missing_ok=True)
    _run(f"--screenshot={shot}", f"--window-size={width},2000", page.as_uri())
    # THEN it is written at that width (build/, for a person to look at)
    assert _png_size(shot) == (width, 2000)
    assert shot.stat().st_size > BLANK_PNG_BYTES


def test_screenshot_of_an_opened_image_set(demo: tuple[JobReport, Path]) -> None:
    # GIVEN the page with its first image set (the one with the mismatch) opened, scrolled to it
    rep, page = demo
    first = f'<details id="set-{rep.image_sets[0].image_set_id}"'
    opened = page.with_name("opened.html")
    text = page.read_text(encoding="utf-8")
    assert first in text
    opened.write_text(text.replace(first, f"{first} open", 1), encoding="utf-8")
    # WHEN Chromium takes a screenshot at 1400 px
    shot = SHOTS / "report-1400-open.png"
    shot.unlink(missing_ok=True)
    SHOTS.mkdir(exist_ok=True)
    _run(f"--screenshot={shot}", "--window-size=1400,2000", opened.as_uri())
    # THEN it is written (build/report-1400-open.png: the frame list, the mismatch and the error marked)
    assert _png_size(shot) == (1400, 2000)
    assert shot.stat().st_size > BLANK_PNG_BYTES


def test_the_page_prints_to_pdf(demo: tuple[JobReport, Path]) -> None:
    # WHEN Chromium prints the page (its own header and footer off: the page's @page header is the one)
    _, page = demo
    pdf = SHOTS / "report.pdf"
    pdf.unlink(missing_ok=True)
    SHOTS.mkdir(exist_ok=True)
    _run("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    # THEN it is a PDF of several pages (the image set list runs over the first)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) > 1


def test_the_dom_holds_the_problem_rows_where_they_belong(demo: tuple[JobReport, Path]) -> None:
    # WHEN Chromium loads the page and serialises its DOM
    rep, page = demo
    found = tables(_run("--dump-dom", page.as_uri()))
    # THEN every mismatched frame is a row of the mismatched table, every unverifiable one of the next
    problems = rep.problem_frames()
    mismatched = {f.image_frame_id for _, f in problems if f.status.value == "MISMATCH"}
    assert mismatched
    assert {row[6].split()[5] for row in found["mismatched"][1:]} == mismatched
    others = {f.image_frame_id for _, f in problems if f.status.value != "MISMATCH"}
    assert {row[6].split()[5] for row in found["unverifiable"][1:]} == others
    # AND the 101st image set, which could not be read, is in the problems with its error
    assert found["unreadable"][1:] == [[image_set_id(UNREADABLE), "GetImageSetMetadata: AccessDeniedException"]]


def test_the_page_fits_500_px_and_sorts_problems_first(demo: tuple[JobReport, Path]) -> None:
    # GIVEN the page with a probe appended that reports the browser's layout
    _, page = demo
    text = page.read_text(encoding="utf-8")
    narrow = _probe(text, page.parent, 500)
    # THEN at 500 px nothing scrolls sideways, the verdict box is inside the window, in the mismatch colour
    assert narrow["scrollWidth"] == narrow["width"]
    assert isinstance(narrow["verdictRight"], float | int)
    assert narrow["verdictRight"] <= narrow["width"]
    assert narrow["verdictColour"] == "rgb(253, 232, 230)"
    # AND an image set's frame list is hidden until it is opened, and scrolls inside its box at 500 px
    assert narrow["framesHiddenClosed"] is True
    assert narrow["framesShownOpen"] is True
    assert narrow["scrollWidthOpen"] == narrow["width"]
    # AND the problem tables are one card a frame there, a table at 1400 px
    assert narrow["cellDisplay"] == "block"
    assert _probe(text, page.parent, 1400)["cellDisplay"] == "table-cell"
    # AND "problems first" puts the mismatched image set, then the unreadable one, at the top
    assert narrow["problemsFirst"] == [f"set-{image_set_id(0)}", f"set-{image_set_id(UNREADABLE)}"]
