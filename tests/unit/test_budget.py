"""The request-rate budget: token arithmetic, Little's law, the shares on the board and the throttling back-off.

No test here waits on a clock: the buckets and boards take the time as an argument or from a fake clock.
"""

from __future__ import annotations

import io
import itertools
import random
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws

from ahi_verify.app.budget_board import BOARD_ATTEMPTS, BoardContendedError, DynamoBoard
from ahi_verify.app.observability import metrics
from ahi_verify.app.worker import budget_claimed
from ahi_verify.budget import (
    FRAMES,
    LEASE_S,
    LOOKAHEAD_S,
    METADATA,
    RECOVERY_STEP,
    REFRESH_S,
    STALE_S,
    BoardState,
    InFlightLimit,
    MemoryBoard,
    Observed,
    Rates,
    RequestBudget,
    TokenBucket,
    allocate,
    little_law_in_flight,
    next_ceiling,
    release,
    throttle_retry_delay,
)
from ahi_verify.healthimaging import HealthImagingSource, make_client
from tests.support import create_progress_table

BUDGET = Rates(frames=300.0, metadata=10.0)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------ the bucket


def starts_of(bucket: TokenBucket, clock: FakeClock, arrivals: list[float]) -> list[float]:
    """When each request, arriving at the given times (in order), may go; a request told to ask again later
    sleeps on the fake clock, as its thread would."""
    starts = []
    for at in arrivals:
        clock.now = max(clock.now, at)
        while True:
            polled = bucket.poll()
            assert polled is not None
            taken, wait = polled
            if taken:
                starts.append(clock.now + wait)
                break
            assert wait > 0
            clock.now += wait
    return starts


def busiest_window(starts: list[float], width: float = 1.0) -> int:
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("rate", [1.0, 10.0, 75.0, 300.0, 1000.0], ids=lambda r: f"{r:.0f}-per-s")
def test_a_flood_of_requests_keeps_every_window_within_rate_plus_burst(rate: float) -> None:
    # GIVEN a bucket, and four seconds' worth of requests arriving at once
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, clock)
    # WHEN each takes its slot
    starts = starts_of(bucket, clock, [0.0] * int(rate * 4))
    # THEN no 1-s window holds more than the rate plus the burst (2 % of the rate, at least one request),
    # and the requests go at the rate: the last one a bit under four seconds after the first
    assert busiest_window(starts) <= rate * 1.0 + bucket.burst
    assert busiest_window(starts) <= max(rate * 1.02, rate + 1)
    assert starts[-1] == pytest.approx(4.0 - bucket.burst / rate, abs=1e-9)


def test_requests_spread_out_go_without_waiting() -> None:
    # GIVEN requests arriving slower than the rate
    clock = FakeClock(0.0)
    bucket = TokenBucket(100.0, clock)
    arrivals = [i * 0.02 for i in range(50)]
    # THEN none waits
    assert starts_of(bucket, clock, arrivals) == arrivals


def test_a_pause_does_not_bank_more_than_the_burst() -> None:
    # GIVEN a bucket idle for a minute
    clock = FakeClock(0.0)
    bucket = TokenBucket(300.0, clock)
    # WHEN 100 requests arrive at once after it
    starts = starts_of(bucket, clock, [60.0] * 100)
    # THEN only the burst (6 requests) goes at once
    assert sum(1 for s in starts if s == 60.0) == 6


def test_rate_zero_holds_requests_until_a_rate_is_set() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(0.0, clock)
    assert bucket.poll() is None
    bucket.set_rate(50.0)
    assert bucket.poll() == (True, 0.0)


def test_lowering_the_rate_holds_within_the_lookahead() -> None:
    # GIVEN a bucket at 1,000/s with many requests queued
    clock = FakeClock(0.0)
    bucket = TokenBucket(1000.0, clock)
    starts = starts_of(bucket, clock, [0.0] * 500)
    # THEN slots were never reserved more than LOOKAHEAD_S ahead of the moment they were asked for
    assert max(starts) - clock.now <= LOOKAHEAD_S + 1e-9
    # WHEN the rate drops to 10/s THEN from the lookahead on, requests go 100 ms apart
    bucket.set_rate(10.0)
    later = starts_of(bucket, clock, [clock.now] * 5)
    assert later[0] <= max(starts) + 0.1 + 1e-9
    assert [b - a for a, b in itertools.pairwise(later)] == pytest.approx([0.1] * 4)


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(-1.0)


# ---------------------------------------------------------------------------------------- Little's law


@pytest.mark.parametrize(
    ("rate", "latency", "expected"),
    [
        pytest.param(300, 0.020, 13, id="300-per-s-at-20ms"),
        pytest.param(300, 0.050, 31, id="300-per-s-at-50ms"),
        pytest.param(60, 0.020, 4, id="a-fifth-at-20ms"),
        pytest.param(75, 0.100, 16, id="a-quarter-at-100ms"),
        pytest.param(1000, 1.0, 64, id="capped"),
        pytest.param(0, 0.1, 1, id="no-rate-still-one"),
    ],
)
def test_in_flight_follows_rate_times_latency(rate: float, latency: float, expected: int) -> None:
    assert little_law_in_flight(rate, latency) == expected


def test_the_in_flight_limit_learns_the_latency_and_holds_fetches_beyond_it() -> None:
    # GIVEN a limit at 100 requests/s whose fetches take 50 ms
    limit = InFlightLimit(lambda: 100.0)
    never = threading.Event()
    for _ in range(40):
        assert limit.enter(never)
        limit.exit(0.05)
    # THEN 100 x 0.05 x 2 + 1 = 11 fetches may be in flight
    assert limit.limit() == 11
    for _ in range(11):
        assert limit.enter(never)
    # AND a twelfth waits; cancelled, it gives up instead of waiting forever
    cancelled = threading.Event()
    cancelled.set()
    assert not limit.enter(cancelled)


# ------------------------------------------------------------------------------------------ the ceiling


def test_no_throttling_keeps_the_ceiling_at_the_budget() -> None:
    assert next_ceiling(300, sent=300, throttled=0, budget=300) == 300


def test_every_seventh_request_refused_settles_at_seventy_per_cent() -> None:
    # GIVEN throttles that do not depend on the rate (1 in 7, whatever is sent)
    ceiling = 300.0
    for _ in range(100):
        ceiling = next_ceiling(ceiling, sent=700, throttled=100, budget=300)
    # THEN the ceiling settles at RECOVERY_STEP / (1/7) = 70 % of the budget, not at a crawl
    assert ceiling == pytest.approx(0.7 * 300, rel=1e-6)


def test_a_real_quota_is_followed_and_probed_by_a_tenth() -> None:
    # GIVEN a service that admits 120 of our requests per second, whatever we send
    ceiling = 300.0
    for _ in range(50):
        sent = ceiling
        ceiling = next_ceiling(ceiling, sent=int(sent), throttled=int(max(0.0, sent - 120)), budget=300)
    # THEN the ceiling sits at what is admitted plus a tenth of the budget
    assert ceiling == pytest.approx(120 + RECOVERY_STEP * 300, abs=2)


def test_when_the_429s_stop_the_ceiling_is_back_in_ten_windows() -> None:
    ceiling = next_ceiling(300, sent=100, throttled=100, budget=300)
    assert ceiling == pytest.approx(30)
    windows = 0
    while ceiling < 300:
        ceiling = next_ceiling(ceiling, sent=100, throttled=0, budget=300)
        windows += 1
    assert windows == 9


# ------------------------------------------------------------------------------------------- the board


def live_claims(state: BoardState, now: float) -> list[Rates]:
    return [c.rates for c in state.claims.values() if c.expires > now]


def test_a_worker_alone_takes_the_whole_budget() -> None:
    _state, mine = allocate(BoardState.empty(BUDGET, 0.0), "a", Observed(), 0.0, BUDGET)
    assert mine == BUDGET


def test_a_joining_worker_waits_for_the_others_to_make_room() -> None:
    # GIVEN worker a holding the whole budget
    state, _ = allocate(BoardState.empty(BUDGET, 0.0), "a", Observed(), 0.0, BUDGET)
    # WHEN b joins THEN it gets nothing yet (a still holds it all)
    state, b = allocate(state, "b", Observed(), 0.1, BUDGET)
    assert b == Rates(0.0, 0.0)
    # WHEN a refreshes THEN it lowers to half; and b's next refresh takes the other half
    state, a = allocate(state, "a", Observed(), 0.5, BUDGET)
    state, b = allocate(state, "b", Observed(), 1.1, BUDGET)
    assert a == b == BUDGET.divided(2)


def test_claims_never_exceed_the_ceiling_whatever_the_order() -> None:
    # GIVEN up to five workers refreshing, joining and leaving in a random order, with throttling now and then
    rng = random.Random(11)
    state, now = BoardState.empty(BUDGET, 0.0), 0.0
    workers = [f"w{i}" for i in range(5)]
    for _ in range(2000):
        now += rng.uniform(0.0, 0.3)
        worker = rng.choice(workers)
        if rng.random() < 0.05:
            state = release(state, worker, now)
            continue
        throttled = rng.choice([0, 0, 0, 10])
        state, _ = allocate(state, worker, Observed({FRAMES: 100}, {FRAMES: throttled}), now, BUDGET)
        # THEN at every moment the live claims add up to no more than the ceiling (and the ceiling to no
        # more than the budget)
        claims = live_claims(state, now)
        assert sum(c.frames for c in claims) <= state.ceiling.frames + 1e-9
        assert sum(c.metadata for c in claims) <= state.ceiling.metadata + 1e-9
        assert state.ceiling.frames <= BUDGET.frames


def test_steady_workers_reach_equal_shares() -> None:
    state, now = BoardState.empty(BUDGET, 0.0), 0.0
    for _ in range(4):
        for worker in ("a", "b", "c", "d"):
            now += 0.2
            state, _mine = allocate(state, worker, Observed(), now, BUDGET)
    assert all(c == BUDGET.divided(4) for c in live_claims(state, now))


def test_a_lapsed_claim_frees_its_share() -> None:
    state, _ = allocate(BoardState.empty(BUDGET, 0.0), "dead", Observed(), 0.0, BUDGET)
    _, mine = allocate(state, "b", Observed(), LEASE_S + 0.01, BUDGET)
    assert mine == BUDGET


def test_the_window_adds_up_every_workers_traffic_before_it_moves_the_ceiling() -> None:
    # GIVEN a reporting 600 requests with 100 throttled, then b 100 unthrottled, inside one window
    state = BoardState.empty(BUDGET, 0.0)
    state, _ = allocate(state, "a", Observed({FRAMES: 600}, {FRAMES: 100}), 0.5, BUDGET)
    assert state.ceiling == BUDGET
    state, _ = allocate(state, "b", Observed({FRAMES: 100, METADATA: 5}), 0.9, BUDGET)
    # WHEN the window closes (a refresh at or after REFRESH_S)
    state, _ = allocate(state, "a", Observed(), REFRESH_S, BUDGET)
    # THEN the ceiling is what was admitted plus a tenth: 300 x 6/7 + 30; metadata had no 429s
    assert state.ceiling.frames == pytest.approx(300 * 6 / 7 + 30)
    assert state.ceiling.metadata == BUDGET.metadata
    assert dict(state.window_sent) == {}
    assert state.window_started == REFRESH_S


def test_a_lowered_budget_lowers_the_ceiling_at_once() -> None:
    state, _ = allocate(BoardState.empty(BUDGET, 0.0), "a", Observed(), 0.0, BUDGET)
    smaller = Rates(100.0, 5.0)
    _, mine = allocate(state, "a", Observed(), 0.1, smaller)
    assert mine == smaller


def test_the_board_survives_its_stored_form() -> None:
    state = BoardState.empty(BUDGET, 0.0)
    state, _ = allocate(state, "a", Observed({FRAMES: 7}, {FRAMES: 1}), 0.2, BUDGET)
    state, _ = allocate(state, "b", Observed(), 0.3, BUDGET)
    assert BoardState.from_json(state.to_json()) == state


# --------------------------------------------------------------------------------------- one process


class FailingBoard:
    def __init__(self, inner: MemoryBoard) -> None:
        self.inner = inner
        self.down = False

    def refresh(self, worker: str, observed: Observed, now: float) -> Rates:
        if self.down:
            raise ConnectionError("board unreachable")
        return self.inner.refresh(worker, observed, now)

    def leave(self, worker: str, now: float) -> None:
        self.inner.leave(worker, now)


def test_traffic_is_reported_once_and_a_lost_board_falls_back_to_the_static_share() -> None:
    # GIVEN a worker of a deployment of up to 5, whose board answers
    clock = FakeClock(0.0)
    board = FailingBoard(MemoryBoard(BUDGET))
    budget = RequestBudget(BUDGET, board, "a", static_share=BUDGET.divided(5), clock=clock, wall=clock)
    budget.refresh()
    assert budget.rate(FRAMES) == 300.0
    # WHEN it sends 3 requests, one throttled, and refreshes twice
    for _ in range(3):
        budget.before_request(FRAMES)
    budget.after_response(FRAMES, 429)
    budget.after_response(FRAMES, 200)
    budget.refresh()
    budget.refresh()
    # THEN the board counted them once
    assert board.inner.state is not None
    assert board.inner.state.window_sent[FRAMES] == 3
    assert board.inner.state.window_throttled[FRAMES] == 1
    assert budget.counters() == (3, 1)
    # WHEN the board becomes unreachable THEN the rates are kept for a while, then drop to the static share
    board.down = True
    clock.now += STALE_S / 2
    budget.refresh()
    assert budget.rate(FRAMES) == 300.0
    clock.now += STALE_S
    budget.refresh()
    assert budget.rate(FRAMES) == 60.0
    assert budget.refresh_failures == 2
    # AND once it answers again, the worker's share comes back: the whole ceiling, which the window's 429s
    # (1 of 3 requests) have set to 300 x 2/3 + 30
    board.down = False
    budget.refresh()
    assert budget.rate(FRAMES) == pytest.approx(300 * 2 / 3 + 30)


def test_running_holds_a_claim_and_withdraws_it() -> None:
    board = MemoryBoard(BUDGET)
    budget = RequestBudget(BUDGET, board, "a")
    with budget.running():
        assert board.state is not None
        assert "a" in board.state.claims
    assert "a" not in board.state.claims


# ---------------------------------------------------------------------------------- the DynamoDB board


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_progress_table(ddb)
        yield ddb


class Interleaving:
    """A client on which another worker's refresh lands between this one's read and its write, ``times`` times."""

    def __init__(self, client: Any, other: DynamoBoard, times: int) -> None:
        self._client = client
        self._other = other
        self.times = times

    def get_item(self, **kwargs: Any) -> Any:
        return self._client.get_item(**kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        if self.times:
            self.times -= 1
            self._other.refresh("b", Observed(), 5.0)
        return self._client.put_item(**kwargs)


def test_the_dynamodb_board_is_shared_by_workers(table: Any) -> None:
    a, b = DynamoBoard(table, "progress", BUDGET), DynamoBoard(table, "progress", BUDGET)
    assert a.refresh("a", Observed(), 0.0) == BUDGET
    assert b.refresh("b", Observed(), 0.2) == Rates(0.0, 0.0)
    assert a.refresh("a", Observed(), 0.4) == BUDGET.divided(2)
    assert b.refresh("b", Observed(), 0.6) == BUDGET.divided(2)
    a.leave("a", 0.7)
    assert b.refresh("b", Observed(), 0.8) == BUDGET
    stored = a.read()
    assert stored is not None
    assert set(stored.claims) == {"b"}


def test_a_write_that_loses_the_race_reads_again(table: Any) -> None:
    # GIVEN worker a holding the budget, and b's refresh landing between a's read and write once
    other = DynamoBoard(table, "progress", BUDGET)
    a = DynamoBoard(Interleaving(table, other, times=1), "progress", BUDGET, sleep=lambda s: None)
    assert DynamoBoard(table, "progress", BUDGET).refresh("a", Observed(), 4.9) == BUDGET
    # WHEN a refreshes THEN its first write is refused, and the second, made on b's board, halves its share
    assert a.refresh("a", Observed(), 5.1) == BUDGET.divided(2)
    stored = other.read()
    assert stored is not None
    assert set(stored.claims) == {"a", "b"}
    assert sum(c.rates.frames for c in stored.claims.values()) <= stored.ceiling.frames


def test_a_board_always_written_by_others_gives_up(table: Any) -> None:
    other = DynamoBoard(table, "progress", BUDGET)
    other.refresh("b", Observed(), 4.0)
    a = DynamoBoard(Interleaving(table, other, times=BOARD_ATTEMPTS), "progress", BUDGET, sleep=lambda s: None)
    with pytest.raises(BoardContendedError):
        a.refresh("a", Observed(), 5.1)


def test_other_board_errors_are_raised(table: Any) -> None:
    board = DynamoBoard(table, "no-such-table", BUDGET)
    with pytest.raises(ClientError):
        board.refresh("a", Observed(), 0.0)


# ---------------------------------------------------------------------------------- the client's hooks


class Responder:
    """Answers each GetImageFrame attempt from a script (statuses), without a network."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        status = self.statuses.pop(0)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": "4"}
        body = b"\x00\x01\x02\x03"
        if status == 429:
            body = b'{"message": "Rate exceeded"}'
            headers = {"x-amzn-ErrorType": "ThrottlingException", "Content-Type": "application/json"}
            headers["Content-Length"] = str(len(body))
        return AWSResponse(request.url, status, headers, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body.read()

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return self._body.read(*args)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region: the clients below never reach a network (a responder answers)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.usefixtures("credentials")
def test_every_attempt_takes_a_token_and_429s_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a budgeted client whose first two GetImageFrame attempts are throttled
    budget = RequestBudget(BUDGET, MemoryBoard(BUDGET), "a")
    client = make_client(max_pool_connections=4, budget=budget)
    responder = Responder([429, 429, 200])
    client.meta.events.register("before-send.medical-imaging.GetImageFrame", responder)
    monkeypatch.setattr("time.sleep", lambda s: None)  # botocore's back-off between the attempts
    # WHEN one frame is fetched
    fetched = HealthImagingSource(client).get_image_frame("a" * 32, "b" * 32, "c" * 32)
    # THEN it arrives, after three attempts that each went through the budget, two of them counted as 429s
    assert fetched.blob == b"\x00\x01\x02\x03"
    assert budget.counters() == (3, 2)
    assert responder.statuses == []


def test_an_invocation_holds_a_claim_and_publishes_its_429s() -> None:
    # GIVEN a worker's services with a budget on a board
    board = MemoryBoard(BUDGET)
    svc: Any = SimpleNamespace(budget=RequestBudget(BUDGET, board, "w"))
    metrics.clear_metrics()
    # WHEN an invocation sends 4 requests of which 1 is throttled
    with budget_claimed(svc):
        assert board.state is not None
        assert "w" in board.state.claims
        for status in (200, 429, 200, 200):
            svc.budget.before_request(FRAMES)
            svc.budget.after_response(FRAMES, status)
    # THEN its claim is withdrawn, and the metrics say 4 sent, 1 throttled (the alarm's inputs)
    assert "w" not in board.state.claims
    published = {name: sum(m["Value"]) for name, m in metrics.metric_set.items()}
    metrics.clear_metrics()
    assert published["RequestsSent"] == 4
    assert published["RequestsThrottled"] == 1


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        pytest.param(1, 1.0, 0.1, id="first-retry-at-most-100ms"),
        pytest.param(3, 0.5, 0.2, id="doubling"),
        pytest.param(12, 1.0, 20.0, id="capped-at-20s"),
        pytest.param(14, 0.0, 0.0, id="jitter-may-be-nothing"),
        pytest.param(29, 1.0, 20.0, id="patient-beyond-the-clients-attempts"),
        pytest.param(30, 1.0, None, id="gives-up-at-twice-the-clients-attempts"),
    ],
)
def test_a_throttled_attempt_is_retried_soon_and_not_forever(attempt: int, rand: float, expected: float | None) -> None:
    assert throttle_retry_delay(attempt, rand, max_attempts=15) == expected


@pytest.mark.usefixtures("credentials")
def test_a_429_is_retried_after_the_budgets_back_off_not_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a budgeted client of 8 attempts whose first 12 attempts are throttled (botocore alone: 8 at most)
    budget = RequestBudget(BUDGET, MemoryBoard(BUDGET), "a")
    client = make_client(max_pool_connections=4, max_attempts=8, budget=budget)
    client.meta.events.register("before-send.medical-imaging.GetImageFrame", Responder([429] * 12 + [200]))
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    # WHEN one frame is fetched
    HealthImagingSource(client).get_image_frame("a" * 32, "b" * 32, "c" * 32)
    # THEN it took 13 attempts, and each back-off was the budget's: at most 100 ms x 2^(n-1)
    assert budget.counters() == (13, 12)
    assert len(slept) == 12
    backoffs = [s for s in slept if s > 0]
    assert all(s <= 0.1 * 2**i for i, s in enumerate(backoffs))
