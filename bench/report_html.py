"""report.html at 100,000 frames: its size, the time to render it, and headless Chromium's time to load it.

A demo-like job (:func:`demo_like_report`: 120 image sets, one frame mismatched, one without a checksum, the
101st image set unreadable, a rejected and a warned file, every other frame matching) is rendered with
:func:`~ahi_verify.report_html.render_html` at 100,000 frames and, as the baseline in the same run, at 10.
Chromium loads each page with ``--dump-dom`` (parse, style, layout, script, then the DOM serialised): the
figures are the wall times and their ratio, not absolute times, since the machine and Chromium vary (the wall
time includes Chromium's start, ~1 s, and the DOM written back out). A probe appended to a copy of each page
also reports when the parser reached the end of the body, by the page's own clock.

    python -m bench.report_html [--frames 100000] [--baseline-frames 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ahi_verify.outcomes import Reason, Status
from ahi_verify.report import (
    FailedFile,
    FrameResult,
    ImageSetReport,
    ImportFindings,
    JobHeader,
    JobReport,
    Timings,
    WarnedFile,
    WarningCode,
)
from ahi_verify.syntax import Rule
from bench.common import best_of

DS, JOB = "de" * 16, "0f" * 16
IMAGE_SETS = 120
UNREADABLE = 100
"""The unreadable image set is the 101st of 120 (where the issue found it: last column, not highlighted)."""
CRC = 3014344982
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The headless browser on PATH (Debian's ``chromium`` first), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(browser: str, *args: str) -> list[str]:
    """A headless Chromium command line that needs no display, no sandbox (root in CI) and no network."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        # The page must load nothing: any request would go to this dead proxy and fail.
        "--proxy-server=127.0.0.1:9",
        *args,
    ]


def image_set_id(n: int) -> str:
    """The n-th image set's ID (32 hex digits, as HealthImaging's)."""
    return f"{n + 1:032x}"


def demo_like_report(frames: int) -> JobReport:
    """A job like the demo's, with ``frames`` frames over up to :data:`IMAGE_SETS` image sets.

    The first image set holds a mismatched frame and a frame without a checksum; image set
    :data:`UNREADABLE` (when there are that many) could not be read; one file was rejected and one imported
    with a warning; every other frame matches.
    """
    sets = min(IMAGE_SETS, max(frames, 1))
    # The unreadable image set lists no frames: the others share all of them.
    readable = sets - 1 if sets > UNREADABLE else sets
    per_set = [frames // readable + (1 if n < frames % readable else 0) for n in range(readable)]
    if sets > UNREADABLE:
        per_set.insert(UNREADABLE, 0)
    image_sets = []
    for n, count in enumerate(per_set):
        set_id = image_set_id(n)
        series = f"1.2.826.0.1.3680043.8.498.{n + 1}"
        if n == UNREADABLE:
            image_sets.append(ImageSetReport(image_set_id=set_id, error="GetImageSetMetadata: AccessDeniedException"))
            continue
        results = []
        for i in range(count):
            status, expected, actual, reason, detail = Status.MATCH, CRC, CRC, None, None
            if n == 0 and i == 1:
                status, actual, reason = Status.MISMATCH, CRC ^ 0x5A5A, Reason.CHECKSUM_DIFFERS
            elif n == 0 and i == 2:
                status, expected, actual, reason = Status.ERROR, None, None, Reason.NO_CHECKSUM
                detail = "no checksum in metadata"
            results.append(
                FrameResult(
                    index=i,
                    image_frame_id=f"{n:08x}{i:024x}",
                    series_instance_uid=series,
                    sop_instance_uid=f"{series}.{i + 1}",
                    frame_number=1,
                    status=status,
                    expected=expected,
                    actual=actual,
                    rule=Rule.DECODED_HTJ2K if status is not Status.ERROR else None,
                    reason=reason,
                    detail=detail,
                )
            )
        image_sets.append(
            ImageSetReport(
                image_set_id=set_id,
                version=1,
                is_primary=True,
                frames=tuple(results),
                instances=count,
                matched_sop_instances=count,
                imported_files=count,
            )
        )
    job = JobHeader(
        job_id=JOB,
        datastore_id=DS,
        folder=f"s3://demo-output/job-output/{DS}-DicomImport-{JOB}/",
        input_s3_uri="s3://hospital-dicom/study-1/",
        scanned_files=frames + 2,
        imported_files=frames + 1,
        files_with_customer_error=1,
        files_with_server_error=0,
        generated_image_sets=sets,
    )
    findings = ImportFindings(
        failures=(FailedFile("study-1/readme.txt", "ValidationException", "Not a DICOM file"),),
        warnings=(WarnedFile("study-1/w.dcm", image_set_id(1), (WarningCode(45330, "InvalidOffsetTable", True),)),),
    )
    timings = Timings("2026-12-01T10:00:00+00:00", "2026-12-01T10:03:12+00:00", sets, 190.4)
    return JobReport(job=job, findings=findings, image_sets=tuple(image_sets), timings=timings)


def write_page(report: JobReport, folder: Path, name: str) -> tuple[Path, float]:
    """Render ``report`` to ``folder/name``; return the file and the seconds rendering took."""
    from ahi_verify.report_html import render_html  # noqa: PLC0415

    start = time.perf_counter()
    page = render_html(report)
    seconds = time.perf_counter() - start
    path = folder / name
    path.write_text(page, encoding="utf-8")
    return path, seconds


PARSED_PROBE = '<script>document.body.setAttribute("data-parsed-ms", performance.now().toFixed(0))</script></body>'
"""Appended to a copy of the page: the browser's own clock when the parser reaches the end of the body."""


def parsed_ms(browser: str, page: Path) -> int:
    """Milliseconds from navigation start until Chromium has parsed the whole page (its own clock)."""
    probed = page.with_name(f"probe-{page.name}")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PARSED_PROBE, 1), encoding="utf-8")
    cmd = chromium_command(browser, "--dump-dom", probed.as_uri())
    dom = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    (found,) = re.findall(r'data-parsed-ms="([0-9]+)"', dom)
    return int(found)


def load_seconds(browser: str, page: Path, rounds: int) -> float:
    """Median wall time of Chromium loading ``page`` and dumping its DOM."""

    def load() -> None:
        cmd = chromium_command(browser, "--dump-dom", page.as_uri())
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)

    return best_of(rounds, load)


def main(argv: list[str] | None = None) -> int:
    """Print the page sizes, render times and load times (and their ratios)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--baseline-frames", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    browser = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        figures = []
        for frames in (args.baseline_frames, args.frames):
            path, render = write_page(demo_like_report(frames), folder, f"report-{frames}.html")
            load = load_seconds(browser, path, args.rounds) if browser else float("nan")
            parsed = parsed_ms(browser, path) if browser else -1
            figures.append((frames, path.stat().st_size, render, load))
            print(
                f"{frames:>8} frames: {path.stat().st_size / 1e6:8.2f} MB, rendered in {render:6.2f} s, "
                f"Chromium load (--dump-dom wall time, median of {args.rounds}) {load:6.2f} s, "
                f"parsed {parsed} ms after navigation start (in-page clock)"
            )
    (base_frames, base_size, base_render, base_load), (_, size, render, load) = figures
    print(f"ratio {args.frames} / {base_frames} frames: size x{size / base_size:.0f}, "
          f"render x{render / base_render:.0f}, load x{load / base_load:.1f}")  # fmt: skip
    if browser is None:
        print("chromium not found: load times not measured (make browser installs it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
