"""Drain benchmark: how long the fetches already in flight take to finish once a worker's deadline stops new
ones, without and with throttling, and what the engine estimated at the moment it stopped.

The worker's hand-back must leave room for this drain (``app/worker.py``): normally milliseconds, longer when
429s make fetches wait out their back-off. Both runs use the same emulator process (600 frames of 64x64, 20 ms
latency), the same client settings as the worker (a request-rate budget of 300 GetImageFrame/s), and a
deadline that passes once a fifth of the frames have been fetched; the figures are the ratio of the
throttled to the unthrottled drain, and of each estimate to its drain (>= 1: the estimate alone covered the
drain; the worker adds its reserve, 120 s on AWS, on top).

    python -m bench.drain
"""

from __future__ import annotations

import time

import numpy as np

from ahi_emulator import Emulator, InstanceSpec
from ahi_verify.budget import DEFAULT_BUDGET, MAX_FETCH_THREADS, sole_budget
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.image_set import VerifyOptions, iter_frame_results, load_image_set_frames, prefer_io_threads
from bench.served import point_boto3_at, served, set_faults

STOP_AFTER_SHARE = 0.2
LATENCY = {"kind": "latency", "operation": "GetImageFrame", "latency_ms": 20}
THROTTLE = {"kind": "throttle", "operation": "GetImageFrame", "every": 4}


def drain_run(
    source: HealthImagingSource, datastore: str, image_set_id: str, options: VerifyOptions
) -> tuple[int, float, float]:
    """Frames checked, seconds from the deadline to the last result, and the engine's estimate at the deadline."""
    frames = load_image_set_frames(source, datastore, image_set_id).frames
    stopped: list[tuple[float, float]] = []
    asked = 0

    def deadline(draining: float) -> bool:
        nonlocal asked
        asked += 1  # asked once per fetch started: the deadline passes after a share of the frames
        if asked < STOP_AFTER_SHARE * len(frames):
            return False
        if not stopped:
            stopped.append((time.monotonic(), draining))
        return True

    checked = sum(1 for _ in iter_frame_results(source, datastore, image_set_id, frames, options, deadline))
    ended = time.monotonic()
    at, estimate = stopped[0] if stopped else (ended, 0.0)
    return checked, ended - at, estimate


def main() -> int:
    prefer_io_threads()
    emulator = Emulator()
    datastore = emulator.create_datastore()
    rng = np.random.default_rng(0)
    instances = [
        InstanceSpec(frames=[rng.integers(-1024, 3072, size=(64, 64), dtype=np.int16) for _ in range(150)])
        for _ in range(4)
    ]
    info = emulator.add_image_set(datastore, instances, resolution_levels=False)
    rows = {}
    with served(emulator) as endpoint:
        point_boto3_at(endpoint)
        for label, faults in (("unthrottled", [LATENCY]), ("every 4th throttled", [LATENCY, THROTTLE])):
            set_faults(endpoint, faults)
            budget = sole_budget(DEFAULT_BUDGET)
            options = VerifyOptions.budgeted(budget)
            source = HealthImagingSource(make_client(max_pool_connections=MAX_FETCH_THREADS, budget=budget))
            with budget.running():
                rows[label] = drain_run(source, datastore, info.image_set_id, options)
    shape = f"{len(info.frame_ids)} frames, budget {DEFAULT_BUDGET.frames:.0f} GetImageFrame/s"
    print(f"{shape}, deadline after {STOP_AFTER_SHARE:.0%} of the frames started")
    print(f"  {'run':22} {'checked':>7} {'drain s':>8} {'estimate s':>10} {'estimate/drain':>14}")
    for label, (checked, drain, estimate) in rows.items():
        ratio = estimate / drain if drain else float("inf")
        print(f"  {label:22} {checked:7d} {drain:8.3f} {estimate:10.3f} {ratio:14.2f}")
    base, throttled = rows["unthrottled"][1], rows["every 4th throttled"][1]
    print(f"  throttled drain = {throttled / base if base else float('inf'):.1f}x the unthrottled drain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
