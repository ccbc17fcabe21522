"""Image-set benchmark: 1,000 512x512 16-bit frames from the emulator with 20 ms added per GetImageFrame.

Runs in one command, same emulator process, same frames, repeated in interleaved rounds (default 3):
  sequential  fetch -> file -> OpenJPEG decode -> CRC one frame after another, as the AWS SDK for Python
              example does (with latency); also the same loop decoding in memory with OpenJPH, for reference
  latency     ahi-verify's engine with 20 ms added to every GetImageFrame
  no-latency  ahi-verify's engine with no added latency
Targets, on the median round: latency >= 10x sequential throughput; latency >= 0.8x no-latency throughput.

    python -m bench.image_set [--frames 1000] [--sequential-frames 250] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import imagecodecs
import numpy as np

from ahi_emulator import Emulator, InstanceSpec
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.image_set import VerifyOptions, prefer_io_threads, verify_image_set
from bench.common import ct_like_frame
from bench.served import point_boto3_at, served, set_faults

LATENCY_MS = 20


def sequential(
    client: object, datastore_id: str, image_set_id: str, limit: int, *, aws_example_style: bool
) -> tuple[float, int]:
    """The straightforward loop: metadata, then each frame fetched, decoded and hashed in turn.

    ``aws_example_style`` follows the AWS SDK for Python scenario (awsdocs, medical-imaging "image sets and
    frames"): each frame is written to a file and decoded with pylibjpeg-openjpeg (``openjpeg.decode``).
    Without it, the loop decodes in memory with OpenJPH, the fastest sequential form.
    """
    import openjpeg  # noqa: PLC0415 - the AWS example's decoder, only for this baseline

    start = time.perf_counter()
    blob = client.get_image_set_metadata(datastoreId=datastore_id, imageSetId=image_set_id)  # type: ignore[attr-defined]
    doc = json.loads(gzip.decompress(blob["imageSetMetadataBlob"].read()))
    checked = 0
    with tempfile.TemporaryDirectory(prefix="ahi-bench-frames-") as tmp:
        for series in doc["Study"]["Series"].values():
            for instance in series["Instances"].values():
                for frame in instance["ImageFrames"]:
                    if checked == limit:
                        return time.perf_counter() - start, checked
                    data = client.get_image_frame(  # type: ignore[attr-defined]
                        datastoreId=datastore_id,
                        imageSetId=image_set_id,
                        imageFrameInformation={"imageFrameId": frame["ID"]},
                    )["imageFrameBlob"].read()
                    if aws_example_style:
                        path = Path(tmp) / f"{frame['ID']}.jph"
                        path.write_bytes(data)
                        pixels = openjpeg.decode(path)
                    else:
                        pixels = imagecodecs.htj2k_decode(data, planar=False)
                    crc = zlib.crc32(np.ascontiguousarray(pixels))
                    expected = max(frame["PixelDataChecksumFromBaseToFullResolution"], key=lambda c: c["Width"])
                    assert crc == expected["Checksum"]
                    checked += 1
    return time.perf_counter() - start, checked


def cpu_probe(blobs: list[bytes]) -> float:
    """Milliseconds per single-threaded HTJ2K decode of the bench's frames: how fast this shared machine is now.

    The sequential baseline waits on latency most of the time, the engine is CPU-bound, so a slow spell
    of the machine lowers the engine/sequential ratio; the probe, printed per round, shows when that happens.
    """
    start = time.perf_counter()
    for blob in blobs * 4:
        imagecodecs.htj2k_decode(blob)
    return (time.perf_counter() - start) * 1000 / (len(blobs) * 4)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--sequential-frames", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1 or args.frames < 1 or args.sequential_frames < 1:
        parser.error("--frames, --sequential-frames and --rounds must be at least 1")

    prefer_io_threads()  # as the CLI and the Lambda handlers do
    emulator = Emulator()
    datastore = emulator.create_datastore()
    distinct = [ct_like_frame(512, 512, seed) for seed in range(25)]
    per_instance = 100
    instances = [
        InstanceSpec(frames=[distinct[(i + j) % len(distinct)] for j in range(min(per_instance, args.frames - i))])
        for i in range(0, args.frames, per_instance)
    ]
    info = emulator.add_image_set(datastore, instances, resolution_levels=False)
    options = VerifyOptions()
    print(f"image set: {len(info.frame_ids)} frames 512x512 int16 HTJ2K; engine: {options}")
    print(f"python {sys.version.split()[0]}, imagecodecs {imagecodecs.__version__}, {os.cpu_count()} CPUs")

    n = len(info.frame_ids)
    rounds: list[dict[str, float]] = []
    with served(emulator) as endpoint:
        point_boto3_at(endpoint)
        client = make_client(max_pool_connections=options.fetch_concurrency)
        source = HealthImagingSource(client)

        def engine() -> float:
            start = time.perf_counter()
            result = verify_image_set(source, datastore, info.image_set_id, options=options)
            elapsed = time.perf_counter() - start
            assert result.all_match
            assert len(result.results) == len(info.frame_ids)
            return n / elapsed

        def sequential_fps(aws_example_style: bool) -> float:
            seconds, frames = sequential(
                client, datastore, info.image_set_id, args.sequential_frames, aws_example_style=aws_example_style
            )
            return frames / seconds

        engine()  # warm the connection pool and the codecs
        probe_blobs = [bytes(imagecodecs.htj2k_encode(p, reversible=True)) for p in distinct]
        # Rounds interleave every run, so a burst of noise on this shared machine lands in one round's ratios
        # instead of skewing one side of every ratio; the verdict is on the median round.
        for _ in range(args.rounds):
            fps = {"probe-ms": cpu_probe(probe_blobs)}
            fps["no-latency"] = engine()
            set_faults(endpoint, [{"kind": "latency", "operation": "GetImageFrame", "latency_ms": LATENCY_MS}])
            fps["latency"] = engine()
            fps["sequential"] = sequential_fps(aws_example_style=True)
            fps["sequential-openjph"] = sequential_fps(aws_example_style=False)
            set_faults(endpoint, [])
            rounds.append(fps)
            print(
                f"  round {len(rounds)}: sequential {fps['sequential']:6.1f}, sequential OpenJPH "
                f"{fps['sequential-openjph']:6.1f}, engine {fps['latency']:6.1f} with {LATENCY_MS} ms latency, "
                f"{fps['no-latency']:6.1f} without (frames/s); CPU probe {fps['probe-ms']:.2f} ms/decode"
            )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratios(num: str, den: str) -> tuple[float, float, float]:
        values = [r[num] / r[den] for r in rounds]
        return statistics.median(values), min(values), max(values)

    print(f"medians of {len(rounds)} rounds:")
    print(f"  sequential, {LATENCY_MS} ms latency : {median('sequential'):8.1f} frames/s  ({args.sequential_frames} "
          "frames; AWS SDK example style: file + pylibjpeg-openjpeg)")  # fmt: skip
    print(f"  sequential, OpenJPH       : {median('sequential-openjph'):8.1f} frames/s  ({args.sequential_frames} "
          "frames; in memory, for reference)")  # fmt: skip
    print(f"  engine, {LATENCY_MS} ms latency     : {median('latency'):8.1f} frames/s  ({n} frames)")
    print(f"  engine, no added latency  : {median('no-latency'):8.1f} frames/s  ({n} frames)")
    # Lambda compute per 1,000 frames, from this run: the per-core rate scaled to the worker's vCPUs
    # (1 vCPU per 1,769 MB) at the default 3,008 MB, priced at the public x86 rate per GB-second.
    cores = os.cpu_count() or 1
    vcpus, memory_gb, usd_per_gb_s = 3008 / 1769, 3008 / 1024, 0.0000166667
    seconds = 1000 / (median("latency") / cores * vcpus)
    print(f"  Lambda per 1,000 frames   : {seconds:6.2f} s at 3,008 MB = {seconds * memory_gb:.1f} GB-s "
          f"= ${seconds * memory_gb * usd_per_gb_s:.5f} (x86, $0.0000166667/GB-s; requests not included)")  # fmt: skip
    vs_sequential = ratios("latency", "sequential")
    vs_fast = ratios("latency", "sequential-openjph")
    vs_no_latency = ratios("latency", "no-latency")
    ok1, ok2 = vs_sequential[0] >= 10, vs_no_latency[0] >= 0.8
    print(f"  ratio engine/sequential   : {_spread(vs_sequential)} (target >= 10x)  {'PASS' if ok1 else 'FAIL'}")
    print(f"  ratio engine/seq. OpenJPH : {_spread(vs_fast)} (reference, no target)")
    print(f"  ratio latency/no-latency  : {_spread(vs_no_latency)} (target >= 0.8x) {'PASS' if ok2 else 'FAIL'}")
    return 0 if ok1 and ok2 else 1


def _spread(values: tuple[float, float, float]) -> str:
    middle, low, high = values
    return f"{middle:6.2f}x (rounds {low:.2f}-{high:.2f}x)"


if __name__ == "__main__":
    raise SystemExit(main())
