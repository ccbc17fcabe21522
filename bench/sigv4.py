"""SigV4 verification's cost: GetImageFrame requests per second through the emulator without and with it.

Two emulator processes serve the same saved store (600 frames of 64x64, quotas lifted), one with
``--verify-signatures`` and one without; the same boto3 client settings as the verifier (16 threads, one pooled
connection each) fetch every frame from each in turn, alternating for five rounds so that a busy machine slows
both alike. The figure is the ratio of the medians (verified / unverified frames/s): what proving each
request's signature costs the emulator, which does it once per request in the serving process.

    python -m bench.sigv4
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from ahi_emulator import NO_QUOTAS, Emulator, InstanceSpec
from ahi_verify.healthimaging import make_client
from bench.common import ct_like_frame
from bench.served import point_boto3_at, served

FRAMES = 600
THREADS = 16
ROUNDS = 5


def _frames_per_second(endpoint: str, datastore_id: str, image_set_id: str, frame_ids: list[str]) -> float:
    point_boto3_at(endpoint)
    client = make_client(max_pool_connections=THREADS)

    def fetch(frame_id: str) -> int:
        response = client.get_image_frame(
            datastoreId=datastore_id, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": frame_id}
        )
        return len(response["imageFrameBlob"].read())

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(fetch, frame_ids[:THREADS]))  # warm the pool: connections are not what is measured
        start = time.perf_counter()
        total = sum(pool.map(fetch, frame_ids))
        elapsed = time.perf_counter() - start
    client.close()
    assert total > 0
    return len(frame_ids) / elapsed


def main() -> None:
    emulator = Emulator(quotas=NO_QUOTAS, verify_signatures=False)
    datastore_id = emulator.create_datastore()
    frames = [ct_like_frame(64, 64, seed) for seed in range(FRAMES)]
    info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=frames)])
    rates: dict[bool, list[float]] = {False: [], True: []}
    with served(emulator, verify_signatures=False) as plain, served(emulator, verify_signatures=True) as verified:
        for _ in range(ROUNDS):
            for verify, endpoint in ((False, plain), (True, verified)):
                rate = _frames_per_second(endpoint, datastore_id, info.image_set_id, info.frame_ids)
                rates[verify].append(rate)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"GetImageFrame, {FRAMES} frames x {ROUNDS} rounds, {THREADS} threads")
    print(f"  unverified: {off:8.0f} frames/s  (rounds: {', '.join(f'{r:.0f}' for r in rates[False])})")
    print(f"  verified:   {on:8.0f} frames/s  (rounds: {', '.join(f'{r:.0f}' for r in rates[True])})")
    print(f"  ratio verified/unverified: {on / off:.3f}")


if __name__ == "__main__":
    main()
