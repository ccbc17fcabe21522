"""Kernel benchmark: the verifier's per-frame path against the bare decode + CRC loop on the same frames.

Both run in this process, alternating, and the figure is the ratio of their throughputs (machines are
noisy; a single absolute time proves nothing). Target: verifier >= 0.95x the bare loop.

    python -m bench.kernel
"""

from __future__ import annotations

import zlib

import imagecodecs
import numpy as np

from ahi_verify.frame_check import check_frame
from ahi_verify.metadata import FrameRef, ResolutionChecksum
from ahi_verify.outcomes import Status
from ahi_verify.ports import FetchedFrame
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL
from bench.common import best_of, ct_like_frame

FRAMES = 150
ROUNDS = 7
TARGET = 0.95


def main() -> int:
    pixels = [ct_like_frame(512, 512, seed) for seed in range(FRAMES)]
    blobs = [bytes(imagecodecs.htj2k_encode(p, reversible=True)) for p in pixels]
    refs = [
        FrameRef(
            index=i,
            image_frame_id=f"{i:032x}",
            series_instance_uid="1",
            sop_instance_uid=f"1.{i}",
            frame_number=1,
            stored_transfer_syntax_uid=HTJ2K_LOSSLESS_RPCL,
            checksum_type="DECOMPRESSED",
            full_resolution=ResolutionChecksum(512, 512, zlib.crc32(p.tobytes())),
        )
        for i, p in enumerate(pixels)
    ]
    fetched = [FetchedFrame(b, "image/jph") for b in blobs]

    def bare() -> None:
        for blob, ref in zip(blobs, refs, strict=True):
            assert ref.full_resolution is not None
            ok = zlib.crc32(np.ascontiguousarray(imagecodecs.htj2k_decode(blob, planar=False)))
            assert ok == ref.full_resolution.checksum

    def verifier() -> None:
        for ref, frame in zip(refs, fetched, strict=True):
            assert check_frame(ref, frame).status is Status.MATCH

    bare()
    verifier()  # warm both paths before timing
    bare_times, verifier_times = [], []
    for _ in range(ROUNDS):
        bare_times.append(best_of(1, bare))
        verifier_times.append(best_of(1, verifier))
    bare_s, verifier_s = sorted(bare_times)[ROUNDS // 2], sorted(verifier_times)[ROUNDS // 2]
    ratio = bare_s / verifier_s
    mb = sum(p.nbytes for p in pixels) / 1e6
    print(f"kernel: {FRAMES} frames 512x512 int16 HTJ2K, median of {ROUNDS} alternating rounds")
    print(f"  bare htj2k_decode + zlib.crc32: {bare_s * 1000:8.1f} ms  ({mb / bare_s:6.0f} MB/s decoded)")
    print(f"  verifier check_frame          : {verifier_s * 1000:8.1f} ms  ({mb / verifier_s:6.0f} MB/s decoded)")
    print(
        f"  ratio verifier/bare throughput: {ratio:.3f}x  (target >= {TARGET}x) {'PASS' if ratio >= TARGET else 'FAIL'}"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
