"""Data store audit benchmark: the SearchImageSets walk, and the whole audit, at two sizes in one run.

Goal: listing and queueing in constant memory. The emulator serves two data stores over HTTP from this
process; a child process (so that its memory is its own) walks each with the verifier's adapter
(:class:`ahi_verify.healthimaging.HealthImagingListing`, real boto3, 50 per page) and reports the time, the
tracemalloc peak of the walk itself (a second pass, after the timed one: tracemalloc slows Python down) and
the child's peak RSS (VmHWM: the parent holding 100,000 image sets would otherwise show in it). The
figures that matter are the ratios between the sizes: time should grow with the number of image sets,
memory should not. What the traced peak gains from the small walk to the large one is caches that fill
and stop: urllib's ``urlsplit`` cache (128 URLs, each page's URL distinct by its ``nextToken``) and
botocore's; traced memory during one 100,000 walk was measured flat from 20,000 image sets on (390 KB
current, 610 KB peak).

The listing walk has image sets without frames (``Series: {}``): it measures listing only. The audit part
(off with ``--no-audit``) verifies image sets of one 8x8 frame each through :func:`ahi_verify.audit.audit_datastore`
with the streaming JSON writer into a sink that counts bytes: metadata and frame requests dominate it.

The service's default quotas are lifted (``NO_QUOTAS``): at SearchImageSets' 25/s, 100,000 image sets are
2,000 pages and at least 80 s of throttle, which measures the quota, not the walk.

    python -m bench.datastore_walk [--small 1000] [--large 100000] [--audit-small 200] [--audit-large 2000]
                                   [--no-audit]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from ahi_emulator import Emulator, EmulatorServer, InstanceSpec
from ahi_emulator.metadata import synthetic_study
from ahi_emulator.quotas import NO_QUOTAS
from ahi_emulator.specs import PatientSpec
from ahi_verify.audit import audit_datastore, audit_header, audit_notes, audit_run_id
from ahi_verify.healthimaging import HealthImagingListing, HealthImagingSource, make_client
from ahi_verify.report import ImportFindings, ReportDocumentWriter
from bench.memory import peak_rss_mb


def _populate_listing(emulator: Emulator, count: int) -> str:
    """A data store of ``count`` image sets without frames (cheap to create: listing is what is measured)."""
    datastore_id = emulator.create_datastore()
    patient = PatientSpec().to_dicom()
    for n in range(count):
        emulator.publish_image_set(datastore_id, f"{n:032x}", patient, synthetic_study(None, None), [])
    return datastore_id


def _populate_audit(emulator: Emulator, count: int) -> str:
    """A data store of ``count`` image sets of one small frame each."""
    datastore_id = emulator.create_datastore()
    rng = np.random.default_rng(0)
    for _ in range(count):
        frame = rng.integers(0, 4000, size=(8, 8)).astype(np.uint16)
        emulator.add_image_set(datastore_id, [InstanceSpec(frames=[frame])], resolution_levels=False)
    return datastore_id


# ------------------------------------------------------------------------------------------- the child


def _client() -> Any:
    return make_client(max_pool_connections=16)


def _walk(datastore_id: str) -> int:
    return sum(1 for _ in HealthImagingListing(_client()).image_sets(datastore_id))


def _audit(datastore_id: str) -> int:
    client = _client()
    written = [0]

    def sink(piece: str) -> None:
        written[0] += len(piece)

    started = time.time()
    run_id = audit_run_id(started)
    writer = ReportDocumentWriter(
        sink, audit_header(datastore_id, run_id), ImportFindings(), audit_notes(datastore_id, None, None), ()
    )
    outcome, _ = audit_datastore(
        HealthImagingListing(client),
        HealthImagingSource(client),
        datastore_id,
        run_id=run_id,
        started=started,
        on_report=writer.add,
    )
    writer.finish(outcome)
    if outcome.summary.frames.match != outcome.summary.image_sets:
        raise SystemExit(f"the audit did not match every frame: {outcome.summary.to_json()}")
    return outcome.summary.image_sets


def child(kind: str, datastore_id: str) -> None:
    """Time one pass, then measure a second under tracemalloc; print one JSON line."""
    run = _walk if kind == "walk" else _audit
    _client()  # load botocore's models before anything is measured
    start = time.perf_counter()
    count = run(datastore_id)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    run(datastore_id)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"count": count, "seconds": seconds, "traced_peak_mb": peak / 2**20, "rss_mb": peak_rss_mb()}))


# ------------------------------------------------------------------------------------------ the parent


def _measure(server: EmulatorServer, kind: str, datastore_id: str) -> dict[str, float]:
    env = {**os.environ, **server.client_env()}
    out = subprocess.run(
        [sys.executable, "-m", "bench.datastore_walk", "--child", kind, datastore_id],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _compare(label: str, small: dict[str, float], large: dict[str, float]) -> None:
    for name, figures in (("small", small), ("large", large)):
        print(
            f"{label} {name}: {figures['count']:>7.0f} image sets in {figures['seconds']:7.2f} s "
            f"({figures['count'] / figures['seconds']:7.0f}/s); traced peak {figures['traced_peak_mb']:6.2f} MB; "
            f"child peak RSS {figures['rss_mb']:6.1f} MB"
        )
    print(
        f"{label} large/small: image sets x{large['count'] / small['count']:.0f}, "
        f"time x{large['seconds'] / small['seconds']:.1f}, "
        f"traced peak x{large['traced_peak_mb'] / small['traced_peak_mb']:.2f}, "
        f"peak RSS x{large['rss_mb'] / small['rss_mb']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one measured pass)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--audit-small", type=int, default=200)
    parser.add_argument("--audit-large", type=int, default=2_000)
    parser.add_argument("--no-audit", action="store_true", help="measure the listing walk only")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DATASTORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    emulator = Emulator(quotas=NO_QUOTAS)
    small, large = _populate_listing(emulator, args.small), _populate_listing(emulator, args.large)
    audits = None
    if not args.no_audit:
        audits = (_populate_audit(emulator, args.audit_small), _populate_audit(emulator, args.audit_large))
    with EmulatorServer(emulator) as server:
        _compare("walk ", _measure(server, "walk", small), _measure(server, "walk", large))
        if audits is not None:
            _compare("audit", _measure(server, "audit", audits[0]), _measure(server, "audit", audits[1]))


if __name__ == "__main__":
    main()
