"""Finalisation benchmark: a synthetic job of 50,000 parts and 1,000,000 frames merged and reported in moto S3.

The job (a few mismatches and errors sprinkled, some image sets split into several parts) is put in an
in-process ``moto.mock_aws`` S3; then the finaliser's work runs: read the plan, merge the parts into
``report.json`` and ``report.html`` (:meth:`ReportStore.write_merged_report`), compose the alert. The progress
table and SNS calls of :func:`~ahi_verify.app.finaliser.finalise_job` are left out: a handful of requests
whatever the job's size.

The baseline, in the same run: the in-memory path finalisation used before (every part read one after the
other, the whole :class:`JobReport` built by ``merge_parts``, ``report.json`` and the page each serialised in
one piece and written with one PutObject) at a tenth of the size, and the streaming path at that size too,
so the figures are ratios: streaming memory stays flat as the job grows, the in-memory path's grows with it.

Each figure comes from a child process, so its peak RSS (VmHWM) is its own: one child times the finalisation
and measures its RSS growth, another measures its tracemalloc peak (Python allocations made while finalising,
moto's included), because tracing slows every allocation (about 2.5x here) and would distort the time.
``--latency-ms`` adds a delay to every part GET, to show the fetch pool hiding S3's latency.

    python -m bench.finalise [--parts 50000] [--frames-per-part 20] [--baseline-parts 5000] [--latency-ms 0]
    python -m bench.finalise --quick   # 20 and 80 parts, in this process (what the test runs)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

DS, JOB = "d" * 32, "e" * 32
BUCKET, REPORTS = "bench-output", "ahi-verify-reports/"
STARTED = "2026-12-01T00:00:00+00:00"
SPLIT_EVERY = 10
"""Every 10th image set is split into SPLIT_PARTS parts (as a worker splits a large one); the rest have one."""
SPLIT_PARTS = 5
MISMATCH_EVERY = 9_973
ERROR_EVERY = 7_919
PATHS = ("in-memory", "streaming")


@dataclass(frozen=True)
class Figures:
    """One measured finalisation."""

    path: str
    parts: int
    frames: int
    seconds: float
    traced_peak_mb: float
    rss_growth_mb: float
    rss_growth_before_completion_mb: float
    """RSS growth up to moto's first CompleteMultipartUpload (which holds the whole object in memory)."""
    report_mb: float
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def image_set_id(n: int) -> str:
    return f"{n:032x}"


def layout(parts: int) -> list[int]:
    """Parts per image set, in plan order, adding up to ``parts``."""
    sizes: list[int] = []
    left = parts
    while left:
        size = min(SPLIT_PARTS if len(sizes) % SPLIT_EVERY == SPLIT_EVERY - 1 else 1, left)
        sizes.append(size)
        left -= size
    return sizes


def build_job(s3: Any, parts: int, frames_per_part: int) -> int:
    """Put the plan and every part of the synthetic job in S3; return its frame count.

    Parts go straight into moto's S3 backend: putting 50,000 objects through boto3 would take longer than
    the finalisation measured, and only the finalisation's reads need the client.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: PLC0415 - only the benchmark touches moto's internals
    from moto.s3.models import s3_backends  # noqa: PLC0415

    from ahi_verify.app.storage import ReportStore  # noqa: PLC0415
    from ahi_verify.outcomes import Reason, Status  # noqa: PLC0415
    from ahi_verify.plan import JobPlan, PlannedImageSet  # noqa: PLC0415
    from ahi_verify.report import FrameResult, ImportFindings, JobHeader, Part  # noqa: PLC0415
    from ahi_verify.syntax import Rule  # noqa: PLC0415

    s3.create_bucket(Bucket=BUCKET)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    sizes = layout(parts)
    planned = []
    frame_number = 0
    for n, size in enumerate(sizes):
        set_id = image_set_id(n)
        planned.append(PlannedImageSet(set_id, 1, True, imported_files=size, matched_sop_instances=size))
        total = size * frames_per_part
        for k in range(size):
            first = k * frames_per_part
            frames = []
            for index in range(first, first + frames_per_part):
                frame_number += 1
                status: Status = Status.MATCH
                reason: Reason | None = None
                actual: int | None = 123456789
                if frame_number % MISMATCH_EVERY == 0:
                    status, reason, actual = Status.MISMATCH, Reason.CHECKSUM_DIFFERS, 987654321
                elif frame_number % ERROR_EVERY == 0:
                    status, reason, actual = Status.ERROR, Reason.FETCH_FAILED, None
                frames.append(
                    FrameResult(
                        index,
                        f"{frame_number:032x}",
                        f"1.2.826.0.1.3680043.8.498.{n}",
                        f"1.2.826.0.1.3680043.8.498.{n}.{index}",
                        1,
                        status,
                        expected=123456789,
                        actual=actual,
                        rule=Rule.DECODED_HTJ2K if actual is not None else None,
                        reason=reason,
                    )
                )
            item = set_id if size == 1 else f"{set_id}-{first}-{first + frames_per_part}"
            part = Part(
                item_id=item,
                image_set_id=set_id,
                range=None if size == 1 else (first, first + frames_per_part),
                total_frames=total,
                seconds=0.25,
                instances=size,
                frames=tuple(frames),
            )
            body = json.dumps(part.to_json(), separators=(",", ":")).encode()
            backend.put_object(BUCKET, f"{REPORTS}{JOB}/parts/{item}.json", body)
    header = JobHeader(JOB, DS, f"s3://in/out/{DS}-DicomImport-{JOB}/", imported_files=len(sizes))
    plan = JobPlan(header, ImportFindings(), (), tuple(planned), STARTED)
    ReportStore(s3, BUCKET, REPORTS).put_plan(plan)
    return frame_number


class BenchS3:
    """The moto client as the finaliser sees it, with two corrections for what moto does that S3 does not.

    GetObject waits ``latency_s`` first (S3 answers in ~20-30 ms, moto at once). And moto's
    CompleteMultipartUpload joins every part of the object in this process's memory (S3 does that on its own
    side), so the traced peak is taken without it: the peak before each completion is kept and the peak
    reset once it is done (:attr:`peak_outside_completion`).
    """

    def __init__(self, s3: Any, latency_s: float) -> None:
        self._s3, self._latency_s = s3, latency_s
        self._peak = 0
        self.peak_rss_before_completion: float | None = None
        """VmHWM (MB) when moto was first asked to complete a multipart upload."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def get_object(self, **kwargs: Any) -> Any:
        if self._latency_s:
            time.sleep(self._latency_s)
        return self._s3.get_object(**kwargs)

    def complete_multipart_upload(self, **kwargs: Any) -> Any:
        if self.peak_rss_before_completion is None:
            self.peak_rss_before_completion = rss_mb("VmHWM")
        if tracemalloc.is_tracing():
            self._peak = max(self._peak, tracemalloc.get_traced_memory()[1])
        done = self._s3.complete_multipart_upload(**kwargs)
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        return done

    @property
    def peak_outside_completion(self) -> int:
        """The traced peak so far, moto's multipart completions left out."""
        return max(self._peak, tracemalloc.get_traced_memory()[1])


def finalise_streaming(s3: Any) -> tuple[str, str]:
    """What the finaliser does now; returns (verdict, report URI)."""
    from ahi_verify.alert import compose_alert  # noqa: PLC0415
    from ahi_verify.app.storage import ReportStore  # noqa: PLC0415

    store = ReportStore(s3, BUCKET, REPORTS)
    plan = store.get_plan(JOB)
    uri, outcome = store.write_merged_report(plan, finished_at=STARTED)
    compose_alert(outcome, uri, notify_clean=True)
    return outcome.verdict.value, uri


def finalise_in_memory(s3: Any) -> tuple[str, str]:
    """What the finaliser did before: every part in order, the whole report, each document in one piece."""
    from ahi_verify.app.storage import ReportStore  # noqa: PLC0415
    from ahi_verify.merge import merge_parts  # noqa: PLC0415
    from ahi_verify.report import Part  # noqa: PLC0415
    from ahi_verify.report_html import render_html  # noqa: PLC0415

    plan = ReportStore(s3, BUCKET, REPORTS).get_plan(JOB)
    prefix = f"{REPORTS}{JOB}/parts/"

    def parts() -> Any:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for entry in page.get("Contents", []):
                body = s3.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read()
                yield Part.from_json(json.loads(body), where=entry["Key"])

    report = merge_parts(plan, parts(), finished_at=STARTED)
    key = f"{REPORTS}{JOB}/report.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(report.to_json(), separators=(",", ":")).encode())
    s3.put_object(Bucket=BUCKET, Key=f"{REPORTS}{JOB}/report.html", Body=render_html(report).encode())
    return report.verdict.value, f"s3://{BUCKET}/{key}"


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(path: str, parts: int, frames_per_part: int, latency_ms: float = 0.0, *, trace: bool = True) -> Figures:
    """Build the job in a fresh moto and finalise it by ``path``: wall time, RSS growth, and (``trace``) the
    tracemalloc peak."""
    import boto3  # noqa: PLC0415 - children import what they measure
    from moto import mock_aws  # noqa: PLC0415

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        frames = build_job(s3, parts, frames_per_part)
        client = BenchS3(s3, latency_ms / 1000)
        run = finalise_streaming if path == "streaming" else finalise_in_memory
        before = rss_mb("VmRSS")
        traced_peak = 0
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        verdict, _ = run(client)
        seconds = time.perf_counter() - start
        if trace:
            traced_peak = client.peak_outside_completion
            tracemalloc.stop()
        peak_rss = rss_mb("VmHWM")
        growth = peak_rss - before
        growth_before_completion = (client.peak_rss_before_completion or peak_rss) - before
        size = s3.head_object(Bucket=BUCKET, Key=f"{REPORTS}{JOB}/report.json")["ContentLength"]
    mb = 1024 * 1024
    return Figures(path, parts, frames, seconds, traced_peak / mb, growth, growth_before_completion, size / mb, verdict)


def in_child(path: str, parts: int, frames_per_part: int, latency_ms: float, *, trace: bool) -> Figures:
    """:func:`measure` in a fresh interpreter, so its peak RSS is its own."""
    command = [sys.executable, "-m", "bench.finalise", "--child", path, "--parts", str(parts)]
    command += ["--frames-per-part", str(frames_per_part), "--latency-ms", str(latency_ms)]
    done = subprocess.run([*command, *(["--trace"] if trace else [])], capture_output=True, text=True, check=True)
    return Figures(**json.loads(done.stdout.strip().splitlines()[-1]))


def timed_and_traced(path: str, parts: int, frames_per_part: int, latency_ms: float) -> Figures:
    """Wall time and RSS growth from an untraced child, the tracemalloc peak from a traced one."""
    timed = in_child(path, parts, frames_per_part, latency_ms, trace=False)
    traced = in_child(path, parts, frames_per_part, latency_ms, trace=True)
    return replace(timed, traced_peak_mb=traced.traced_peak_mb)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", type=int, default=50_000)
    parser.add_argument("--frames-per-part", type=int, default=20)
    parser.add_argument("--baseline-parts", type=int, default=5_000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every part GET")
    parser.add_argument("--quick", action="store_true", help="20 and 80 parts, in this process")
    parser.add_argument("--child", choices=PATHS)
    parser.add_argument("--trace", action="store_true", help="(child) trace allocations")
    args = parser.parse_args(argv)
    if args.child:
        figures = measure(args.child, args.parts, args.frames_per_part, args.latency_ms, trace=args.trace)
        print(json.dumps(figures.to_json()))
        return 0
    if args.quick:
        args.parts, args.baseline_parts = 80, 20
    runs = [("in-memory", args.baseline_parts), ("streaming", args.baseline_parts), ("streaming", args.parts)]
    run = measure if args.quick else timed_and_traced
    results = [run(path, parts, args.frames_per_part, args.latency_ms) for path, parts in runs]
    old, small, large = results
    print(f"finalise: {args.frames_per_part} frames a part, moto S3 in process, {args.latency_ms:g} ms added per GET")
    print("  path       parts    frames   wall s  traced peak MB  RSS growth MB (before completion)  report.json MB")
    for f in results:
        print(
            f"  {f.path:<9} {f.parts:>6} {f.frames:>9} {f.seconds:>8.1f} {f.traced_peak_mb:>15.1f}"
            f" {f.rss_growth_mb:>14.1f} {f'({f.rss_growth_before_completion_mb:.1f})':>20}"
            f" {f.report_mb:>15.1f}  {f.verdict}"
        )
    print("  (traced peak leaves out, and RSS before completion precedes, moto joining a multipart object in memory)")
    growth = large.frames / small.frames
    print(
        f"  streaming: {large.frames:,} frames ({growth:.0f}x) take {large.seconds / small.seconds:.1f}x the time and "
        f"{large.traced_peak_mb / small.traced_peak_mb:.2f}x the traced peak of {small.frames:,} frames"
    )
    print(
        f"  at {small.frames:,} frames the in-memory path traced {old.traced_peak_mb / small.traced_peak_mb:.1f}x the "
        f"streaming peak ({old.traced_peak_mb * 1000 / old.frames:.2f} MB per 1,000 frames, growing with the job)"
    )
    same = old.verdict == small.verdict and abs(old.report_mb - small.report_mb) < 0.01 * old.report_mb
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
