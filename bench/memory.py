"""Memory benchmark: peak RSS of a process verifying an image set of 3328x4096 frames (target <= 300 MB).

The verifier runs in a child process so that its peak RSS is its own; the emulator is served from
another. The child also reports its RSS after imports, before any frame, as the baseline.

    python -m bench.memory [--frames 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from ahi_emulator import Emulator, InstanceSpec
from bench.served import point_boto3_at, served

TARGET_MB = 300


def mammo_like(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:3328, 0:4096].astype(np.float32)
    breast = (xx / 4096) ** 2 + ((yy - 1664) / 1664) ** 2 < 0.9
    image = np.where(breast, 1800 + 600 * np.cos(xx / 300 + seed) * np.sin(yy / 410), 60)
    return np.clip(image + rng.normal(0, 25, image.shape), 0, 4095).astype(np.uint16)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child started by a big parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(datastore_id: str, image_set_id: str) -> None:
    from ahi_verify.healthimaging import HealthImagingSource, make_client  # noqa: PLC0415 - measured process
    from ahi_verify.image_set import VerifyOptions, prefer_io_threads, verify_image_set  # noqa: PLC0415

    prefer_io_threads()  # as the CLI and the Lambda handlers do

    options = VerifyOptions()
    source = HealthImagingSource(make_client(max_pool_connections=options.fetch_concurrency))
    before = peak_rss_mb()
    start = time.perf_counter()
    result = verify_image_set(source, datastore_id, image_set_id, options=options)
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb()
    assert result.all_match
    print(json.dumps({"frames": len(result.results), "baseline_mb": before, "peak_mb": peak, "seconds": elapsed}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--child", nargs=2, metavar=("DATASTORE_ID", "IMAGE_SET_ID"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    emulator = Emulator()
    datastore = emulator.create_datastore()
    frames = [mammo_like(seed) for seed in range(args.frames)]
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=frames)], resolution_levels=False)
    del frames
    with served(emulator) as endpoint:
        point_boto3_at(endpoint)
        done = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", datastore, info.image_set_id],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    ok = figures["peak_mb"] <= TARGET_MB
    decoded_mb = 3328 * 4096 * 2 / 1e6
    print(f"memory: {figures['frames']} frames 3328x4096 uint16 ({decoded_mb:.1f} MB decoded each)")
    print(f"  verifier process RSS after imports : {figures['baseline_mb']:7.1f} MB")
    rate = figures["frames"] / figures["seconds"]
    print(f"  verify time                        : {figures['seconds']:7.2f} s ({rate:.1f} frames/s)")
    print(f"  verifier process peak RSS          : {figures['peak_mb']:7.1f} MB (target <= {TARGET_MB} MB) "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
