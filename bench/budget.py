"""Request-rate budget benchmark: does the deployment keep to its budget, use it, spare the viewers, and ride
out sustained throttling?

Workers are separate processes, as Lambda containers are, each with its own budgeted client and a claim on
the one board in a DynamoDB table (moto server); each work item is one claim, as each invocation is. The
emulator runs in this process with the service's quotas (GetImageFrame 1,000 TPS burst 2,000) and 20 ms added
to every GetImageFrame; it logs every request, so the rates below are what the service saw, retries and 429s
included. Frames are 64x64, so decoding never limits the rate on 2 cores.

1. N = 1, 2, 4 workers at a budget of 300/s: the busiest 1-s window (target <= 1.05x the budget) and the mean
   from the first request to the last (target >= 0.9x).
2. A viewer (``ahi_emulator.viewer``, its own process) at 200/s beside a job of two workers, the GetImageFrame
   quota scaled down to 500/s so the two together reach it: the viewer's throttled share with the budget off
   (16 fetches in flight per worker, no rate limit) and on (goal 0).
3. Every 7th GetImageFrame answered 429: one worker verifies 600 frames; time over the unthrottled time at
   the same budget (target <= 2x).
0. (First) what sharing costs, without frames: N = 1, 2, 4 threads, each with its own DynamoDB client, take
   tokens as fast as they are given for 5 s, either from the board (``budget.RequestBudget`` on
   ``DynamoBoard``, what the workers use) or from one token bucket item that all draw batches from with
   conditional writes (the alternative, bench-only: :class:`SharedBucket`); DynamoDB requests per second,
   conditional-write losses and the busiest 1-s window of tokens for each.

    python -m bench.budget [--runs N]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
from moto.server import ThreadedMotoServer

from ahi_emulator import Emulator, EmulatorServer, InstanceSpec
from ahi_emulator.faults import Fault
from ahi_emulator.quotas import Quota
from ahi_verify.app.budget_board import DynamoBoard
from ahi_verify.budget import MAX_FETCH_THREADS, Rates, RequestBudget
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.image_set import VerifyOptions, iter_frame_results, load_image_set_frames, prefer_io_threads
from bench.served import point_boto3_at

BUDGET = Rates(frames=300.0, metadata=10.0)
TABLE = "bench-progress"
FRAMES_PER_ITEM = 300
LATENCY = Fault("latency", operation="GetImageFrame", latency_ms=20)
EVERY_7TH = Fault("throttle", operation="GetImageFrame", every=7)
WINDOW_TARGET, MEAN_TARGET, VIEWER_TARGET, THROTTLED_TARGET = 1.05, 0.9, 0.0, 2.0


@dataclass(frozen=True)
class Setup:
    emulator_url: str
    dynamodb_url: str
    datastore_id: str
    image_set_id: str
    frames: int


def _worker(setup: Setup, items: Any, results: Any, budgeted: bool, workers: int, stop: Any = None) -> None:
    """One worker process: work items from ``items`` until None (or ``stop`` is set); per item, one claim on the
    board (as one Lambda invocation holds one), the metadata fetched and the item's frames verified."""
    point_boto3_at(setup.emulator_url)
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = setup.dynamodb_url
    prefer_io_threads()
    budget = None
    dynamodb, board_requests = boto3.client("dynamodb"), [0]
    dynamodb.meta.events.register(
        "before-send.dynamodb", lambda **_: board_requests.__setitem__(0, board_requests[0] + 1)
    )
    if budgeted:
        board = DynamoBoard(dynamodb, TABLE, BUDGET)
        budget = RequestBudget(BUDGET, board, uuid.uuid4().hex, static_share=BUDGET.divided(workers))
        client = make_client(max_pool_connections=MAX_FETCH_THREADS, budget=budget)
        options = VerifyOptions.budgeted(budget)
    else:
        options = VerifyOptions()  # the deployment without a budget: 16 fetches in flight per worker
        client = make_client(max_pool_connections=options.fetch_concurrency)
    source = HealthImagingSource(client)
    results.put(("ready", 0, 0.0, 0))
    while (stop is None or not stop.is_set()) and (item := items.get()) is not None:
        start, end = item
        began = time.monotonic()
        with budget.running() if budget is not None else nullcontext():
            frames = load_image_set_frames(source, setup.datastore_id, setup.image_set_id).frames
            statuses = Counter(
                r.status.value
                for r in iter_frame_results(source, setup.datastore_id, setup.image_set_id, frames[start:end], options)
            )
        results.put(("item", statuses.get("MATCH", 0), time.monotonic() - began, board_requests[0]))
        board_requests[0] = 0


def run_workers(setup: Setup, n: int, total_frames: int, budgeted: bool = True) -> tuple[int, int, float, float]:
    """Verify ``total_frames`` (items cycling over the image set) with ``n`` worker processes; return the frames
    checked, the frames matched, the longest item time and the board's DynamoDB requests per worker-second."""
    ctx = mp.get_context("spawn")
    items, results = ctx.Queue(), ctx.Queue()
    starts = [(s % setup.frames, s % setup.frames + FRAMES_PER_ITEM) for s in range(0, total_frames, FRAMES_PER_ITEM)]
    procs = [ctx.Process(target=_worker, args=(setup, items, results, budgeted, max(n, 4))) for _ in range(n)]
    for proc in procs:
        proc.start()
    for _ in procs:  # start the clock on the work once every worker has imported and built its client
        results.get(timeout=300)
    began = time.monotonic()
    for item in starts:
        items.put(item)
    for _ in procs:
        items.put(None)
    matched, longest, board = 0, 0.0, 0
    for _ in starts:
        _, ok, took, requests = results.get(timeout=600)
        matched, longest, board = matched + ok, max(longest, took), board + requests
    worker_seconds = n * (time.monotonic() - began)
    for proc in procs:
        proc.join(timeout=60)
    return total_frames, matched, longest, board / worker_seconds


def frame_rates(log: Sequence[tuple[float, str, int]]) -> tuple[int, float, float]:
    """GetImageFrame requests seen, the busiest 1-s window and the mean rate from the first to the last."""
    times = sorted(t for t, operation, _ in log if operation == "GetImageFrame")
    if len(times) < 2:
        return len(times), float(len(times)), 0.0
    busiest, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    return len(times), float(busiest), (len(times) - 1) / (times[-1] - times[0])


class SharedBucket:
    """The alternative to the board, for comparison only: one DynamoDB item holding a token bucket (tokens,
    stamp, version) that every worker draws batches of tokens from with a conditional write."""

    def __init__(self, client: Any, rate: float, burst: float, batch: int) -> None:
        self._client, self._rate, self._burst, self._batch = client, rate, burst, batch
        self.conflicts = 0

    def draw(self) -> float:
        """Take a batch: 0.0 when taken, else the seconds to wait before trying again."""
        item = self._client.get_item(TableName=TABLE, Key=BUCKET_KEY, ConsistentRead=True).get("Item")
        now = time.time()
        version = int(item["version"]["N"]) if item else 0
        tokens = float(item["tokens"]["N"]) if item else self._burst
        stamp = float(item["stamp"]["N"]) if item else now
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens < self._batch:
            return (self._batch - tokens) / self._rate
        new = {
            "tokens": {"N": repr(tokens - self._batch)},
            "stamp": {"N": repr(now)},
            "version": {"N": str(version + 1)},
        }
        condition = (
            {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}}
            if item
            else {"ConditionExpression": "attribute_not_exists(pk)"}
        )
        try:
            self._client.put_item(TableName=TABLE, Item={**BUCKET_KEY, **new}, **condition)
        except self._client.exceptions.ConditionalCheckFailedException:
            self.conflicts += 1
            return 0.001
        return 0.0


BUCKET_KEY = {"pk": {"S": "BUDGET"}, "sk": {"S": "BUCKET"}}
SHARING_S = 5.0


def _counted_client(url: str) -> tuple[Any, list[int]]:
    client, count = boto3.client("dynamodb", endpoint_url=url), [0]
    client.meta.events.register("before-send.dynamodb", lambda **_: count.__setitem__(0, count[0] + 1))
    return client, count


@dataclass
class Sharing:
    """One run of benchmark 0: what the threads share and what they counted."""

    url: str
    n: int
    end: float
    grants: list[float]
    counts: list[list[int]]
    conflicts: list[int]


def _board_worker(run: Sharing) -> None:
    client, count = _counted_client(run.url)
    run.counts.append(count)
    budget = RequestBudget(BUDGET, DynamoBoard(client, TABLE, BUDGET), uuid.uuid4().hex)
    with budget.running():
        while time.monotonic() < run.end:
            budget.before_request("GetImageFrame")
            run.grants.append(time.monotonic())


def _bucket_worker(run: Sharing) -> None:
    client, count = _counted_client(run.url)
    run.counts.append(count)
    # Bursts within 5 % of the budget: at most 15 tokens drawn and unspent across the workers.
    batch = max(1, 15 // run.n)
    bucket = SharedBucket(client, BUDGET.frames, burst=15.0, batch=batch)
    while time.monotonic() < run.end:
        wait = bucket.draw()
        if wait:
            time.sleep(wait)
            continue
        run.grants.extend([time.monotonic()] * batch)
    run.conflicts.append(bucket.conflicts)


def cost_of_sharing(setup: Setup) -> None:
    """Benchmark 0: DynamoDB requests and the busiest window of the board vs a shared token bucket."""
    for n in (1, 2, 4):
        for approach, worker in (("board", _board_worker), ("shared bucket", _bucket_worker)):
            reset_board(setup)
            boto3.client("dynamodb", endpoint_url=setup.dynamodb_url).delete_item(TableName=TABLE, Key=BUCKET_KEY)
            run = Sharing(setup.dynamodb_url, n, time.monotonic() + SHARING_S, [], [], [])
            threads = [threading.Thread(target=worker, args=(run,)) for _ in range(n)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            requests = sum(c[0] for c in run.counts)
            _, busiest, mean = frame_rates([(t, "GetImageFrame", 200) for t in run.grants])
            lost = f", {sum(run.conflicts) / SHARING_S:.1f} writes/s lost to another worker" if run.conflicts else ""
            print(
                f"  {n} worker(s), {approach:13}: {requests / SHARING_S:6.1f} DynamoDB requests/s{lost}; tokens: "
                f"busiest 1-s window {busiest / BUDGET.frames:.3f}x, mean {mean / BUDGET.frames:.3f}x the budget",
                flush=True,
            )


def reset_board(setup: Setup) -> None:
    """A new board at the budget for each run (the previous run's throttled ceiling must not carry over)."""
    ddb = boto3.client("dynamodb", endpoint_url=setup.dynamodb_url)
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "BUDGET"}, "sk": {"S": "BOARD"}})


@contextmanager
def environment(frames: int) -> Iterator[tuple[Setup, Emulator]]:
    """The emulator (service quotas on) and a moto DynamoDB, both served from this process."""
    emulator = Emulator()
    datastore = emulator.create_datastore()
    rng = np.random.default_rng(0)
    per_instance = 150
    instances = [
        InstanceSpec(frames=[rng.integers(-1024, 3072, size=(64, 64), dtype=np.int16) for _ in range(per_instance)])
        for _ in range(frames // per_instance)
    ]
    info = emulator.add_image_set(datastore, instances, resolution_levels=False)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    host, port = moto.get_host_and_port()
    dynamodb_url = f"http://{host}:{port}"
    try:
        with EmulatorServer(emulator) as server:
            point_boto3_at(server.endpoint_url)
            boto3.client("dynamodb", endpoint_url=dynamodb_url).create_table(
                TableName=TABLE,
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            yield Setup(server.endpoint_url, dynamodb_url, datastore, info.image_set_id, len(info.frame_ids)), emulator
    finally:
        moto.stop()


def workers_keep_to_the_budget(setup: Setup, emulator: Emulator) -> dict[int, tuple[float, float]]:
    """Benchmark 1: busiest window and mean rate over the budget, for 1, 2 and 4 workers."""
    rows = {}
    for n in (1, 2, 4):
        reset_board(setup)
        emulator.clear_faults()
        emulator.add_fault(LATENCY)
        emulator.start_request_log()
        checked, matched, _, board = run_workers(setup, n, total_frames=6000)
        requests, busiest, mean = frame_rates(emulator.request_log())
        assert matched == checked, f"{checked - matched} frames did not match"
        rows[n] = (busiest / BUDGET.frames, mean / BUDGET.frames)
        print(
            f"  {n} worker(s): {requests} GetImageFrame requests, busiest 1-s window {busiest:.0f}/s = "
            f"{busiest / BUDGET.frames:.3f}x the budget (target <= {WINDOW_TARGET}), mean {mean:.0f}/s = "
            f"{mean / BUDGET.frames:.3f}x (target >= {MEAN_TARGET}); board {board:.1f} DynamoDB "
            "requests per worker-second",
            flush=True,
        )
    return rows


def viewer_beside_a_job(setup: Setup, emulator: Emulator, duration_s: float = 15.0) -> dict[str, float]:
    """Benchmark 2: the viewer's throttled share beside a job of two workers, budget off and on."""
    shares = {}
    for label, budgeted in (("off", False), ("on", True)):
        reset_board(setup)
        emulator.clear_faults()
        emulator.add_fault(LATENCY)
        # The quota scaled down so that the viewer (200/s) and a job at the budget (300/s) together reach it,
        # with a burst of one second's worth (the service allows two: at this scale that would hide a 15-s run).
        emulator.set_quota("GetImageFrame", Quota(rate=500.0, burst=500))
        ctx = mp.get_context("spawn")
        items, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        jobs = [ctx.Process(target=_worker, args=(setup, items, results, budgeted, 4, stop)) for _ in range(2)]
        for job in jobs:
            job.start()
        for _ in jobs:
            results.get(timeout=300)
        for start in range(0, int((duration_s + 10) * BUDGET.frames * 2), FRAMES_PER_ITEM):  # more than it can do
            items.put((start % setup.frames, start % setup.frames + FRAMES_PER_ITEM))
        time.sleep(1.0)  # the job at its rate before the viewer opens
        emulator.start_request_log()
        command = [sys.executable, "-m", "ahi_emulator", "viewer", "--endpoint", setup.emulator_url]
        command += ["--datastore-id", setup.datastore_id, "--rate", "200", "--duration", str(duration_s)]
        viewer = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ.copy())
        logged = [t for t, operation, _ in emulator.request_log() if operation == "GetImageFrame"]
        stop.set()
        for job in jobs:
            job.join(timeout=60)
        items.cancel_join_thread()  # the items left are dropped with the queue
        report = json.loads(viewer.stdout)
        shares[label] = report["throttled"] / report["requested"]
        job_rate = (len(logged) - report["requested"]) / (logged[-1] - logged[0])
        print(
            f"  budget {label:3}: job {job_rate:.0f} GetImageFrame/s; viewer sent {report['requested']}, "
            f"{report['throttled']} throttled ({shares[label]:.1%})",
            flush=True,
        )
    emulator.reset_quotas()
    return shares


def sustained_throttling(setup: Setup, emulator: Emulator) -> float:
    """Benchmark 3: 600 frames with every 7th GetImageFrame throttled, over the same without."""
    times = {}
    for label, faults in (("unthrottled", [LATENCY]), ("every 7th throttled", [LATENCY, EVERY_7TH])):
        reset_board(setup)
        emulator.clear_faults()
        for fault in faults:
            emulator.add_fault(fault)
        ctx = mp.get_context("spawn")
        items, results = ctx.Queue(), ctx.Queue()
        job = ctx.Process(target=_worker, args=(setup, items, results, True, 4))
        job.start()
        results.get(timeout=300)
        items.put((0, 600))
        items.put(None)
        _, matched, took, _ = results.get(timeout=900)
        job.join(timeout=60)
        assert matched == 600, f"{600 - matched} of 600 frames did not match"
        times[label] = took
    ratio = times["every 7th throttled"] / times["unthrottled"]
    print(
        f"  600 frames: unthrottled {times['unthrottled']:.2f} s, every 7th throttled "
        f"{times['every 7th throttled']:.2f} s = {ratio:.2f}x (target <= {THROTTLED_TARGET})",
        flush=True,
    )
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat every benchmark (default 1)")
    args = parser.parse_args(argv)
    failed = []
    with environment(frames=1500) as (setup, emulator):
        for run in range(1, args.runs + 1):
            print(f"run {run}: budget {BUDGET.frames:.0f} GetImageFrame/s, 20 ms latency, service quotas on")
            print("  what sharing the budget costs (no frames, threads taking tokens for 5 s):")
            cost_of_sharing(setup)
            for n, (window, mean) in workers_keep_to_the_budget(setup, emulator).items():
                if window > WINDOW_TARGET or mean < MEAN_TARGET:
                    failed.append(f"{n} workers: window {window:.3f}x, mean {mean:.3f}x")
            print("  viewer at 200/s beside a job of 2 workers, GetImageFrame quota 500/s (burst 500):")
            shares = viewer_beside_a_job(setup, emulator)
            if shares["on"] > VIEWER_TARGET:
                failed.append(f"viewer throttled {shares['on']:.1%} with the budget on")
            ratio = sustained_throttling(setup, emulator)
            if ratio > THROTTLED_TARGET:
                failed.append(f"sustained throttling {ratio:.2f}x")
    for failure in failed:
        print(f"MISSED: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
