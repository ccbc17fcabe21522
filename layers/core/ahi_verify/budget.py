"""The request-rate budget: how many GetImageFrame and GetImageSetMetadata requests per second the whole
deployment may send, how one process keeps to its share, and how the workers agree on their shares.

Why a rate and not a concurrency: HealthImaging throttles per account and Region (GetImageFrame 1,000 TPS,
burst 2,000; GetImageSetMetadata 50 TPS), and that quota is shared with every viewer of the account. Requests in
flight are not a rate: by Little's law the rate is in-flight / latency, so 16 fetches in flight at 20 ms are
800 TPS from one worker and five workers offer 4,000. Only a rate limit bounds the rate, so every request the
client sends, retries included, first takes a token from this process's bucket (:class:`TokenBucket`), and the
fetches in flight follow from the rate and the latency observed (:class:`InFlightLimit`), not from a guess.

How the workers share it (:func:`allocate`, kept on a :class:`Board`): each worker running holds a *claim* on
a board, refreshed every :data:`REFRESH_S`. A worker takes ``ceiling / workers running``, but never more than the
ceiling minus what the others claim, so a worker that joins starts at nothing and grows as the others lower
their claims at their next refresh: the claims never add up to more than the ceiling. A claim not refreshed
for :data:`LEASE_S` (a worker that died) lapses. Measured against a shared token bucket (one conditional write
per batch of tokens), the board costs one read and one write per worker per second whatever the rate
(``python -m bench.budget``).

Throttling is a signal, not a storm: every worker adds the requests it sent and the 429s it got to the board,
and once per :data:`REFRESH_S` the deployment's ceiling becomes what the service admitted in that window plus
a tenth of the budget (``ceiling x (1 - throttled share) + RECOVERY_STEP x budget``, never above the budget).
A real quota converges on what it leaves free; throttles that do not depend on the rate (every 7th request
refused) settle the ceiling at ``RECOVERY_STEP / share`` of the budget (70 % at 1 in 7), not at a crawl; and
when the 429s stop the ceiling is back at the budget within ten windows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

FRAMES = "GetImageFrame"
METADATA = "GetImageSetMetadata"
OPERATIONS = (FRAMES, METADATA)

REFRESH_S = 1.0
"""How often a worker renews its claim and reads the others': a joining worker is at its fair share within
two refreshes, and the deployment reacts to 429s within one."""
LEASE_S = 3 * REFRESH_S
"""A claim lapses this long after its last renewal (a worker that died frees its share)."""
STALE_S = 2 * REFRESH_S
"""A worker that has not renewed for this long (the board unreachable) falls back to the static share, before
its claim lapses for the others."""
BURST_S = 0.02
"""A worker's bucket holds at most this many seconds of its rate (at least one token): the deployment's
bursts stay within 2 % of one second's budget plus a request per worker, leaving room in the 1.05x bound
of every 1-s window for the jitter of arrivals (``python -m bench.budget``: at 0.04, four workers reached
1.053x in their busiest second)."""
LOOKAHEAD_S = 0.05
"""How far ahead a request's slot may be reserved: after a rate change, at most this long at the old rate."""
LATE_S = 0.01
"""A thread that wakes this much later than its slot (the process was not scheduled) asks for a new one."""
_TICK_S = 1e-6
RECOVERY_STEP = 0.1
"""The share of the budget the ceiling regains per window: from a standstill to the budget in ten windows."""
IN_FLIGHT_HEADROOM = 2.0
"""Little's law gives the fetches in flight that just sustain the rate at the mean latency; twice that absorbs
latency spread (a slow fetch holds its slot) without going over the rate: the tokens do the pacing. Measured
with ``python -m bench.budget``: at 1.5 one worker reached 0.97x its budget in its busiest second."""
LATENCY_SAMPLES = 32
INITIAL_LATENCY_S = 0.1
"""Assumed until the first fetches finish; the mean of the last :data:`LATENCY_SAMPLES` replaces it."""
THROTTLE_RETRY_BASE_S = 0.1
THROTTLE_RETRY_CAP_S = 20.0
THROTTLE_ATTEMPTS_FACTOR = 2
"""A throttled attempt is retried after ``random() x min(20 s, 100 ms x 2^(attempt-1))``, up to twice the client's
attempts (20 by default: 4 min of patience at most, 2 on average). Twice: where the viewers use the whole quota,
the ceiling settles at what is admitted plus a tenth of the budget, so most attempts may be refused for a while,
and a frame should wait that out rather than end as an error. The first retry is soon because the budget
already paces every attempt deployment-wide: botocore's own back-off (up to 1 s for the first retry) only held
a fetch slot idle, and 600 frames with every 7th request refused took 3.3x the unthrottled time
(``python -m bench.budget``)."""
MAX_FETCH_THREADS = 64
"""Threads (and pooled connections) a worker may use for fetches: Little's law at 300 TPS needs 64 in flight
only once a fetch takes 140 ms (throttled retries sleep inside the fetch)."""


@dataclass(frozen=True)
class Rates:
    """Requests per second, per budgeted operation."""

    frames: float
    metadata: float

    def of(self, operation: str) -> float:
        """The rate of ``operation`` (``GetImageFrame`` or ``GetImageSetMetadata``)."""
        return self.frames if operation == FRAMES else self.metadata

    def divided(self, n: int) -> Rates:
        """Each of ``n`` equal shares."""
        return Rates(self.frames / n, self.metadata / n)


DEFAULT_BUDGET = Rates(frames=300.0, metadata=10.0)
"""30 % of the default GetImageFrame quota and 20 % of GetImageSetMetadata's: 700 TPS (burst 1,700) stay for the
viewers, enough for a radiologist's viewer to page through a 500-frame CT in well under a second."""


class TokenBucket:
    """A rate limit every thread of a process shares (a GCRA: each request is scheduled one interval after the
    last, and may run ahead of its schedule by the burst).

    ``rate`` 0 holds every request until a rate is set (a worker whose share is momentarily taken).
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._rate = 0.0
        self._due = clock()  # when the next request may go, on the schedule (the theoretical arrival time)
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        """Requests per second now allowed."""
        return self._rate

    @property
    def burst(self) -> float:
        """Requests that may go at once after a pause."""
        return max(1.0, self._rate * BURST_S)

    def set_rate(self, rate: float) -> None:
        """Change the rate; requests already scheduled keep their times (at most the fetches in flight)."""
        if rate < 0:
            raise ValueError("rate must be >= 0")
        with self._lock:
            self._rate = rate
            self._lock.notify_all()

    def poll(self) -> tuple[bool, float] | None:
        """Ask for the next request's slot.

        Returns ``(True, s)``: the slot is taken, send in ``s`` seconds; ``(False, s)``: no slot within
        :data:`LOOKAHEAD_S`, ask again in ``s`` seconds; None: the rate is 0. Slots are handed out at most
        :data:`LOOKAHEAD_S` ahead, so a lowered rate holds from then on: slots reserved further ahead at the old
        rate would still go, while another worker already uses what this one gave up.
        """
        with self._lock:
            if self._rate <= 0:
                return None
            now = self._clock()
            interval = 1.0 / self._rate
            start = max(now, self._due - (self.burst - 1.0) * interval)
            if start - now > LOOKAHEAD_S + _TICK_S:  # the tick: float error must not make a thread spin
                return False, start - now - LOOKAHEAD_S
            self._due = max(self._due, now) + interval
            return True, start - now

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Block until this request may be sent; return the seconds waited."""
        waited = 0.0
        while True:
            polled = self.poll()
            if polled is None:
                with self._lock:
                    started = self._clock()
                    self._lock.wait(timeout=REFRESH_S / 4)
                    waited += self._clock() - started
                continue
            taken, wait = polled
            due = self._clock() + wait
            if wait > 0:
                sleep(wait)
                waited += wait
            if taken and self._clock() - due <= LATE_S:
                return waited
            # Not taken, or woken too late (the process stalled): a slot missed is forfeited, so the threads of a
            # stalled process cannot send their missed slots in one bunch.


class InFlightLimit:
    """How many fetches may be in flight: Little's law, L = rate x latency, times :data:`IN_FLIGHT_HEADROOM`.

    The latency is the time a fetch holds its slot minus the time it waited for tokens (waiting is not
    service: counting it would raise the limit exactly when the rate is what limits).
    """

    def __init__(self, rate: Callable[[], float], cap: int = MAX_FETCH_THREADS) -> None:
        self._rate = rate
        self._cap = cap
        self._samples: deque[float] = deque([INITIAL_LATENCY_S], maxlen=LATENCY_SAMPLES)
        self._cond = threading.Condition()
        self._in_flight = 0

    def limit(self) -> int:
        """Fetches allowed in flight now."""
        latency = sum(self._samples) / len(self._samples)
        return little_law_in_flight(self._rate(), latency, self._cap)

    def enter(self, cancelled: threading.Event) -> bool:
        """Wait for a slot; False when ``cancelled`` was set first."""
        with self._cond:
            while self._in_flight >= self.limit():
                if cancelled.is_set():
                    return False
                self._cond.wait(timeout=0.25)
            self._in_flight += 1
            return True

    def exit(self, service_s: float) -> None:
        """Free a slot, recording how long the fetch was served for."""
        with self._cond:
            self._in_flight -= 1
            self._samples.append(max(0.0, service_s))
            self._cond.notify_all()


def little_law_in_flight(rate: float, latency_s: float, cap: int = MAX_FETCH_THREADS) -> int:
    """Fetches in flight that sustain ``rate`` requests/s at ``latency_s`` each, with headroom, in [1, cap].

    >>> little_law_in_flight(300, 0.020)  # 300 x 0.02 = 6 in flight, x 2 = 12, +1 for the one finishing
    13
    """
    return max(1, min(cap, math.ceil(rate * latency_s * IN_FLIGHT_HEADROOM) + 1))


def throttle_retry_delay(attempt: int, rand: float, max_attempts: int) -> float | None:
    """Seconds before retrying an attempt answered 429 (``attempt`` 1 for the first), or None: give up (after
    :data:`THROTTLE_ATTEMPTS_FACTOR` x ``max_attempts``, the client's attempts for other errors).

    >>> throttle_retry_delay(1, 1.0, 10), throttle_retry_delay(4, 0.5, 10), throttle_retry_delay(20, 0.5, 10)
    (0.1, 0.4, None)
    """
    if attempt >= THROTTLE_ATTEMPTS_FACTOR * max_attempts:
        return None
    return rand * min(THROTTLE_RETRY_CAP_S, THROTTLE_RETRY_BASE_S * 2.0 ** (attempt - 1))


# ------------------------------------------------------------------------------------------- the board


@dataclass(frozen=True)
class Observed:
    """Requests one worker sent and how many the service answered 429, per operation, since its last refresh."""

    sent: Mapping[str, int] = field(default_factory=dict)
    throttled: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """What one worker may use, until ``expires`` (epoch seconds)."""

    rates: Rates
    expires: float


@dataclass(frozen=True)
class BoardState:
    """The deployment's shared view: its ceiling, the window's traffic and every worker's claim."""

    ceiling: Rates
    window_started: float
    window_sent: Mapping[str, int]
    window_throttled: Mapping[str, int]
    claims: Mapping[str, Claim]

    @classmethod
    def empty(cls, budget: Rates, now: float) -> BoardState:
        """A board no worker has written yet: the ceiling at the budget."""
        return cls(budget, now, {}, {}, {})

    def to_json(self) -> dict[str, object]:
        """The board as stored."""
        return {
            "ceiling": [self.ceiling.frames, self.ceiling.metadata],
            "windowStarted": self.window_started,
            "windowSent": dict(self.window_sent),
            "windowThrottled": dict(self.window_throttled),
            "claims": {w: [c.rates.frames, c.rates.metadata, c.expires] for w, c in self.claims.items()},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BoardState:
        """Read a stored board (written by :meth:`to_json`)."""
        frames, metadata = obj["ceiling"]
        claims = {str(w): Claim(Rates(float(v[0]), float(v[1])), float(v[2])) for w, v in obj["claims"].items()}
        return cls(
            ceiling=Rates(float(frames), float(metadata)),
            window_started=float(obj["windowStarted"]),
            window_sent={str(k): int(v) for k, v in obj["windowSent"].items()},
            window_throttled={str(k): int(v) for k, v in obj["windowThrottled"].items()},
            claims=claims,
        )


def next_ceiling(ceiling: float, sent: int, throttled: int, budget: float) -> float:
    """The deployment's rate for the next window: what the service admitted in this one, plus a tenth of the
    budget, never above the budget.

    >>> round(next_ceiling(300, sent=700, throttled=100, budget=300), 1)  # 1 in 7 refused: 300 x 6/7 + 30
    287.1
    """
    share = throttled / sent if sent else 0.0
    return min(budget, ceiling * (1.0 - share) + RECOVERY_STEP * budget)


def allocate(state: BoardState, worker: str, observed: Observed, now: float, budget: Rates) -> tuple[BoardState, Rates]:
    """One worker's refresh: add what it observed, close the window if it is over, and renew its claim.

    Returns the new board and the rates this worker may use until its next refresh. The claims on the new
    board never add up to more than its ceiling (a worker lowers its claim at once and takes only what the
    others leave), so the deployment keeps to the ceiling whatever order the workers refresh in.
    """
    sent = {op: state.window_sent.get(op, 0) + observed.sent.get(op, 0) for op in OPERATIONS}
    throttled = {op: state.window_throttled.get(op, 0) + observed.throttled.get(op, 0) for op in OPERATIONS}
    ceiling, started = state.ceiling, state.window_started
    # The budget may have been changed since the board was written: the ceiling never exceeds it.
    ceiling = Rates(min(ceiling.frames, budget.frames), min(ceiling.metadata, budget.metadata))
    if now - started >= REFRESH_S:
        ceiling = Rates(
            next_ceiling(ceiling.frames, sent[FRAMES], throttled[FRAMES], budget.frames),
            next_ceiling(ceiling.metadata, sent[METADATA], throttled[METADATA], budget.metadata),
        )
        started, sent, throttled = now, {}, {}
    others = {w: c for w, c in state.claims.items() if w != worker and c.expires > now}
    fair = ceiling.divided(len(others) + 1)
    taken = Rates(sum(c.rates.frames for c in others.values()), sum(c.rates.metadata for c in others.values()))
    mine = Rates(
        max(0.0, min(fair.frames, ceiling.frames - taken.frames)),
        max(0.0, min(fair.metadata, ceiling.metadata - taken.metadata)),
    )
    claims = {**others, worker: Claim(mine, now + LEASE_S)}
    return BoardState(ceiling, started, sent, throttled, claims), mine


def release(state: BoardState, worker: str, now: float) -> BoardState:
    """The board without ``worker``'s claim (and without lapsed ones)."""
    claims = {w: c for w, c in state.claims.items() if w != worker and c.expires > now}
    return replace(state, claims=claims)


class Board(Protocol):
    """Where the workers of one deployment keep their claims (the progress table; memory for one process)."""

    def refresh(self, worker: str, observed: Observed, now: float) -> Rates:
        """Record ``observed``, renew ``worker``'s claim, and return the rates it may use."""
        ...

    def leave(self, worker: str, now: float) -> None:
        """Withdraw ``worker``'s claim, so the others may take its share at their next refresh."""
        ...


class MemoryBoard:
    """A board in this process's memory: for one process (the CLI) or the workers of one test."""

    def __init__(self, budget: Rates) -> None:
        self._budget = budget
        self._lock = threading.Lock()
        self.state: BoardState | None = None

    def refresh(self, worker: str, observed: Observed, now: float) -> Rates:
        with self._lock:
            state = self.state or BoardState.empty(self._budget, now)
            self.state, mine = allocate(state, worker, observed, now, self._budget)
            return mine

    def leave(self, worker: str, now: float) -> None:
        with self._lock:
            if self.state is not None:
                self.state = release(self.state, worker, now)


# -------------------------------------------------------------------------------------- one process


class RequestBudget:
    """One process's share of the deployment's budget, applied to every request its client sends.

    The HealthImaging adapter calls :meth:`before_request` before every attempt (retries included) and
    :meth:`after_response` after it; the frame fetches hold an :meth:`in_flight` slot. :meth:`running`
    keeps the claim on the board renewed while work is done.

    Parameters
    ----------
    budget : Rates
        What the whole deployment may use.
    board : Board
        Where the claims are kept.
    worker : str
        This process's name on the board (unique per running worker).
    static_share : Rates
        Used while the board cannot be reached (budget / most workers that can run): never more than the
        worker's fair share when all of them run.
    """

    def __init__(
        self,
        budget: Rates,
        board: Board,
        worker: str,
        static_share: Rates | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.budget = budget
        self._board = board
        self._worker = worker
        self._static = static_share or budget
        self._clock = clock
        self._wall = wall
        self._buckets = {op: TokenBucket(self._static.of(op), clock) for op in OPERATIONS}
        self._in_flight = InFlightLimit(lambda: self._buckets[FRAMES].rate)
        self._lock = threading.Lock()
        self._sent: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._throttled: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._reported: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._reported_throttled: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._last_refresh: float | None = None
        self._local = threading.local()
        self.refresh_failures = 0

    # -- the requests

    def before_request(self, operation: str) -> None:
        """Wait for this attempt's token (called by the client for every attempt of a budgeted operation)."""
        waited = self._buckets[operation].acquire()
        self._local.waited = getattr(self._local, "waited", 0.0) + waited
        with self._lock:
            self._sent[operation] += 1

    def after_response(self, operation: str, status: int | None) -> None:
        """Count a 429 (``status`` None: no HTTP answer, a transport error)."""
        if status == 429:
            with self._lock:
                self._throttled[operation] += 1

    @contextmanager
    def in_flight(self, cancelled: threading.Event) -> Iterator[bool]:
        """Hold a fetch slot (Little's law on the current frame rate); yields False if ``cancelled`` first."""
        if not self._in_flight.enter(cancelled):
            yield False
            return
        started, self._local.waited = self._clock(), 0.0
        try:
            yield True
        finally:
            self._in_flight.exit(self._clock() - started - self._local.waited)

    def rate(self, operation: str) -> float:
        """Requests per second this process may send now."""
        return self._buckets[operation].rate

    def in_flight_limit(self) -> int:
        """Fetches this process may have in flight now."""
        return self._in_flight.limit()

    def counters(self) -> tuple[int, int]:
        """GetImageFrame and GetImageSetMetadata attempts sent and answered 429, all operations together."""
        with self._lock:
            return sum(self._sent.values()), sum(self._throttled.values())

    # -- the claim

    def refresh(self) -> None:
        """Report this window's traffic, renew the claim and apply the rates it grants; on failure keep the
        rates for :data:`STALE_S`, then fall back to the static share."""
        with self._lock:
            observed = Observed(
                sent={op: self._sent[op] - self._reported[op] for op in OPERATIONS},
                throttled={op: self._throttled[op] - self._reported_throttled[op] for op in OPERATIONS},
            )
        try:
            rates = self._board.refresh(self._worker, observed, self._wall())
        except Exception:
            self.refresh_failures += 1
            if self._last_refresh is None or self._clock() - self._last_refresh >= STALE_S:
                self._apply(self._static)
            return
        with self._lock:
            for op in OPERATIONS:
                self._reported[op] += observed.sent[op]
                self._reported_throttled[op] += observed.throttled[op]
        self._last_refresh = self._clock()
        self._apply(rates)

    def _apply(self, rates: Rates) -> None:
        for op in OPERATIONS:
            self._buckets[op].set_rate(rates.of(op))

    @contextmanager
    def running(self) -> Iterator[RequestBudget]:
        """Hold a claim on the board while the block runs: the first refresh before it starts, one every
        :data:`REFRESH_S` in a background thread, and the claim withdrawn when it ends."""
        stop = threading.Event()
        self.refresh()

        def renew() -> None:
            while not stop.wait(REFRESH_S):
                self.refresh()

        thread = threading.Thread(target=renew, name="ahi-budget", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            try:
                self._board.leave(self._worker, self._wall())
            except Exception:
                self.refresh_failures += 1  # the claim lapses by itself after LEASE_S
            self._apply(self._static)


def sole_budget(budget: Rates) -> RequestBudget:
    """The budget of a process that runs alone (the CLI): the whole budget, throttling back-off included."""
    return RequestBudget(budget, MemoryBoard(budget), "sole")
