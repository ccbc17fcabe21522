"""Reliability front end: runs every scenario of :mod:`local.fault_matrix` and a soak, times and measures
them, and prints one table.

``python -m bench.reliability`` runs the full matrix and the soak (>= 20,000 frames, random throttling) and
prints the table; it exits non-zero on any failure. ``tests/reliability/`` runs a subset of the same
scenarios. Options: ``--only NAME`` (repeatable), ``--no-soak``, ``--soak-sets``, ``--soak-frames``,
``--workers N`` (worker batches in flight at once, default 4; 1 runs them serially, in-process).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from ahi_emulator import Fault
from local.fault_matrix import SCENARIOS, SOAK, WORKER, WORKERS, Harness, Outcome, Shape, run_scenario

# ------------------------------------------------------------------------------------------- soak


class _ChildPeak:
    """Polls ``VmHWM`` of this process's child processes (the isolated workers) while they run."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.children = 0
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ChildPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.05):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    text = status.read_text()
                except OSError:
                    continue
                fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
                if fields.get("PPid", "").strip() != me or "VmHWM" not in fields:
                    continue
                self._seen.add(int(fields["Pid"]))
                self.peak_kb = max(self.peak_kb, int(fields["VmHWM"].split()[0]))
            self.children = len(self._seen)


def soak(shape: Shape = SOAK, seed: int = 1, workers: int = WORKERS) -> Outcome:
    """Many image sets with random throttling; the worker runs isolated (one process per invocation, ``workers``
    at once) so its peak RSS is its own, not moto's or the emulator's."""
    out = Outcome(f"soak {shape.image_sets}x{shape.frames_per_instance * shape.instances}")
    rng = random.Random(seed)
    started = time.monotonic()
    with Harness(isolation={WORKER: "subprocess"}, workers=workers) as h:
        job = h.import_job(shape, seed=seed)
        h.wait_imported(job)
        sets = h.manifest_image_sets(job)
        # Random throttling, each burst on a random image set (bursts spread over every item would measure the
        # budget's back-off rather than the application).
        for isid in rng.sample(sets, k=max(1, len(sets) // 5)):
            h.stack.emulator.add_fault(
                Fault(
                    "throttle",
                    operation="GetImageFrame",
                    image_set_id=isid,
                    every=rng.randint(5, 30),
                    count=rng.randint(1, 3),
                )
            )
        for isid in rng.sample(sets, k=max(1, len(sets) // 20)):
            h.stack.emulator.add_fault(Fault("throttle", operation="GetImageSetMetadata", image_set_id=isid, count=1))
        with _ChildPeak() as peak:
            summary = h.stack.run_until_idle(timeout=3600)
        out.injected = h.fired()
        out.expect(not summary.failures, f"failed invocations: {summary.failures}")
        h.check(out, job, sets, verdict="CLEAN", alerts=0)
        out.extra["worker peak RSS MB"] = round(peak.peak_kb / 1024, 1)
        out.extra["worker processes"] = peak.children
        out.extra["children ru_maxrss MB"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        out.extra["verify s"] = round(summary.elapsed_s, 1)
    out.extra["this process VmHWM MB"] = round(_vmhwm_kb() / 1024, 1)
    out.seconds = time.monotonic() - started
    return out


def _vmhwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------- printing


def table(outcomes: Sequence[Outcome]) -> str:
    head = ("fault", "injected", "listed", "accounted", "dup", "lost", "verdict", "reports", "alerts", "s", "result")
    rows = [
        (
            o.name,
            o.injected,
            str(o.listed),
            str(o.accounted),
            str(o.duplicates),
            str(o.lost),
            o.verdict,
            str(o.reports),
            str(o.alerts),
            f"{o.seconds:.0f}",
            "pass" if o.ok else "FAIL",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@contextmanager
def _quiet() -> Iterator[None]:
    """The handlers log JSON at INFO; keep the table readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
    try:
        yield
    finally:
        root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--no-soak", action="store_true")
    parser.add_argument("--soak-only", action="store_true")
    parser.add_argument("--soak-sets", type=int, default=SOAK.image_sets)
    parser.add_argument("--soak-frames", type=int, default=SOAK.frames_per_instance, help="frames per image set")
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"worker batches in flight at once (default {WORKERS}; 1: serial, in-process)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    outcomes: list[Outcome] = []
    with _quiet():
        if not args.soak_only:
            for name in args.only or list(SCENARIOS):
                out = run_scenario(name, workers=args.workers)
                outcomes.append(out)
                status = "pass" if out.ok else "FAIL"
                print(f"{name}: {status} in {out.seconds:.1f} s {out.extra or ''}", file=sys.stderr, flush=True)
                for problem in out.problems:
                    print(f"    {problem}", file=sys.stderr, flush=True)
        soak_out = None
        if not args.no_soak:
            shape = dataclasses.replace(SOAK, image_sets=args.soak_sets, frames_per_instance=args.soak_frames)
            try:
                with redirect_stdout(io.StringIO()):
                    soak_out = soak(shape, workers=args.workers)
            except Exception as exc:
                soak_out = Outcome("soak", problems=[f"{type(exc).__name__}: {exc}"])
            outcomes.append(soak_out)
    print()
    print(f"{args.workers} concurrent worker(s)")
    print(table(outcomes))
    for o in outcomes:
        for problem in o.problems:
            print(f"FAIL {o.name}: {problem}")
    if soak_out is not None and soak_out.ok:
        x = soak_out.extra
        print(
            f"\nsoak: {soak_out.listed} frames in {args.soak_sets} image sets, all accounted for, "
            f"{soak_out.injected} injected; verification {x['verify s']} s (whole run {soak_out.seconds:.0f} s); "
            f"worker peak RSS {x['worker peak RSS MB']} MB (VmHWM of the isolated worker processes, "
            f"{x['worker processes']} seen; getrusage children max {x['children ru_maxrss MB']} MB); "
            f"harness process (moto + emulator + stack) VmHWM {x['this process VmHWM MB']} MB"
        )
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
