"""Verify every frame of one image set: metadata once, then all frames fetched and checked concurrently.

Fetching is I/O-bound and runs on many threads; decoding and CRC are CPU-bound and run on one thread per
CPU (the codecs release the GIL). Frames in flight (fetched bytes plus the decoder's working memory) are
bounded by a byte budget, so an image set of large frames cannot exhaust the function's memory.
Results stream out as frames complete.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from .budget import MAX_FETCH_THREADS, RequestBudget
from .frame_check import check_frame, precheck_frame
from .metadata import (
    FrameRef,
    ImageSetFrames,
    MetadataError,
    decode_metadata_blob,
    parse_image_set_metadata,
    resolve_omitted_syntax,
)
from .outcomes import Reason, Status
from .ports import FetchedFrame, FrameFetchError, FrameSource, ImageSetError
from .report import FrameCounts, FrameResult
from .syntax import DEFAULT_LOSSLESS_STORAGE_FORMAT, LOSSLESS_STORAGE_FORMATS

# What one frame costs while in flight, as a multiple of its decoded size: the encoded bytes, twice while
# the HTTP client joins its reads, the decoded array, and OpenJPH's scratch space. Measured with
# `python -m bench.memory`: about 3.5x for a 3328x4096 12-bit frame (the peak RSS grew 104 MB per frame in
# flight), so the default budget lets two such frames be in flight and keeps the process under 300 MB.
IN_FLIGHT_FACTOR = 3.5
DEFAULT_FETCH_CONCURRENCY = 16
DEFAULT_MEMORY_BUDGET = 200 * 1024 * 1024
_T = TypeVar("_T")


def prefer_io_threads() -> None:
    """Shorten the GIL switch interval to 1 ms for a process that verifies frames.

    Call once at process start (the CLI and the Lambda handlers do). Fetch threads give up the GIL on
    every socket read and, with the default 5 ms interval, can wait that long to get it back while another
    thread runs Python code; that convoy, not the network, capped throughput. Measured with
    ``python -m bench.image_set``: 355-452 frames/s at 5 ms, 467-565 frames/s at 1 ms on 2 cores.
    """
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))


@dataclass(frozen=True)
class VerifyOptions:
    """How hard to drive the service and the CPUs.

    With a request-rate ``budget`` (the CLI and the functions always have one), the fetches in flight follow
    from its rate and the latency observed (Little's law, ``budget.InFlightLimit``) and ``fetch_concurrency``
    is only the most threads that may be used; without one (tests), it is the fetches in flight. It should
    match the client's connection pool (``max_pool_connections``).
    """

    fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY
    decode_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET
    budget: RequestBudget | None = None

    @classmethod
    def budgeted(cls, budget: RequestBudget, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> VerifyOptions:
        """Fetches paced by ``budget``, on up to :data:`~ahi_verify.budget.MAX_FETCH_THREADS` threads."""
        return cls(fetch_concurrency=MAX_FETCH_THREADS, memory_budget_bytes=memory_budget_bytes, budget=budget)

    def __post_init__(self) -> None:
        for name in ("fetch_concurrency", "decode_workers", "memory_budget_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class ImageSetResult:
    """Every frame's result for one image set, in metadata order."""

    datastore_id: str
    image_set_id: str
    version_id: str | None
    results: tuple[FrameResult, ...]

    @property
    def counts(self) -> FrameCounts:
        """The frames by status."""
        return FrameCounts.of(self.results)

    @property
    def all_match(self) -> bool:
        """True when every frame matched (an image set with no frames never counts as verified)."""
        return self.counts.all_match


class _ByteBudget:
    """A counting semaphore over bytes. A request larger than the whole budget waits until it runs alone."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._available = capacity
        self._cond = threading.Condition()

    def acquire(self, amount: int, cancelled: threading.Event) -> int:
        amount = min(amount, self._capacity)
        with self._cond:
            while self._available < amount and not cancelled.is_set():
                self._cond.wait(timeout=0.5)
            self._available -= amount
        return amount

    def release(self, amount: int) -> None:
        with self._cond:
            self._available += amount
            self._cond.notify_all()


Stop = Callable[[float], bool]
"""The caller's deadline, asked as each fetch starts with the seconds the fetches already started are expected
to take to finish (at the rate fetches have been finishing); True: start no more."""


class _StartGate:
    """Decides which fetches may start once the deadline has passed, so that the started frames stay a
    prefix: the pool takes frames in order, but a thread may ask later than one that took a later frame;
    the cut is set past every position already started, and everything from it on is held back.

    It also estimates how long the fetches in flight will take to drain, because that is what the deadline
    must leave room for: the fetches in flight take milliseconds normally and longer while 429s make them wait
    out their back-off (``python -m bench.drain``; before the request-rate budget, botocore's adaptive retry
    slowed a client to 1-2 requests a second and 16 fetches took 8-15 s to drain).
    """

    def __init__(self, stop: Stop | None) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._started_up_to = -1
        self._cut: int | None = None
        self._in_flight = 0
        self._oldest_start: deque[float] = deque()
        self._finishes: deque[float] = deque(maxlen=DRAIN_WINDOW)

    def may_start(self, position: int) -> bool:
        if self._stop is None:
            return True
        with self._lock:
            if self._cut is None and position > 0 and self._stop(self._drain_estimate()):
                self._cut = max(position, self._started_up_to + 1)
            if self._cut is not None and position >= self._cut:
                return False
            self._started_up_to = max(self._started_up_to, position)
            self._in_flight += 1
            self._oldest_start.append(time.monotonic())
            return True

    def finished(self) -> None:
        if self._stop is None:
            return
        with self._lock:
            self._in_flight -= 1
            self._oldest_start.popleft()  # the oldest start: fetches finish roughly in the order they began
            self._finishes.append(time.monotonic())

    def _drain_estimate(self) -> float:
        """Seconds the fetches in flight need, at the rate of the last :data:`DRAIN_WINDOW` finishes (the budget
        lowers the rate as throttling goes on, so the recent rate, not the average); with too few finishes to
        tell, the time the oldest fetch in flight has already taken, per fetch in flight."""
        if not self._in_flight:
            return 0.0
        now = time.monotonic()
        waited = now - self._oldest_start[0]
        if len(self._finishes) >= 2 and self._finishes[-1] > self._finishes[0]:
            rate = (len(self._finishes) - 1) / (now - self._finishes[0])
            return DRAIN_SAFETY * max(self._in_flight / rate, waited)
        return DRAIN_SAFETY * waited * self._in_flight


DRAIN_WINDOW = 16
"""Finishes the drain estimate looks back over: one fetch pool's worth."""
DRAIN_SAFETY = 1.5
"""The estimate is a rate measured while the client slows down: half again, to be early rather than killed."""


def load_image_set_frames(
    source: FrameSource, datastore_id: str, image_set_id: str, version_id: str | None = None
) -> ImageSetFrames:
    """Fetch and parse an image set's metadata.

    Instances that omit ``StoredTransferSyntaxUID`` get the syntax of the data store's lossless storage format
    (:func:`datastore_syntax`), asked of ``source`` only then: the common case costs no request.

    Raises
    ------
    ImageSetError
        The fetch failed, or the document is corrupt or lists no series.
    """
    blob = source.get_image_set_metadata(datastore_id, image_set_id, version_id)
    try:
        listed = parse_image_set_metadata(decode_metadata_blob(blob))
    except MetadataError as exc:
        raise ImageSetError(f"image set {image_set_id}: {exc}") from exc
    if all(frame.syntax_stated for frame in listed.frames):
        return listed
    return resolve_omitted_syntax(listed, *datastore_syntax(source, datastore_id))


def datastore_syntax(source: FrameSource, datastore_id: str) -> tuple[str, str | None]:
    """The stored syntax of frames whose instance does not state one, and why it is assumed, if it is.

    Parameters
    ----------
    source : FrameSource
    datastore_id : str

    Returns
    -------
    tuple of (str, str or None)
        The syntax of the data store's ``losslessStorageFormat``, and ``None``; or, when the format cannot be
        read or is unknown, HTJ2K's (the documented default) and a note saying so for each frame's detail.
    """
    default = LOSSLESS_STORAGE_FORMATS[DEFAULT_LOSSLESS_STORAGE_FORMAT]
    try:
        found = source.lossless_storage_format(datastore_id)
    except Exception as exc:  # any failure (DatastoreError, a source without the method) falls back, said aloud
        why = f"the data store's lossless storage format could not be read ({type(exc).__name__}: {exc})"
    else:
        syntax = LOSSLESS_STORAGE_FORMATS.get(found)
        if syntax is not None:
            return syntax, None
        why = f"the data store's lossless storage format {found!r} is not one the verifier knows"
    note = f"stored syntax assumed {default} ({DEFAULT_LOSSLESS_STORAGE_FORMAT}, the documented default): {why}"
    return default, note


def iter_frame_results(
    source: FrameSource,
    datastore_id: str,
    image_set_id: str,
    frames: tuple[FrameRef, ...],
    options: VerifyOptions | None = None,
    stop: Stop | None = None,
) -> Iterator[FrameResult]:
    """Yield one result per frame, in completion order.

    Every frame yields exactly one result: fetch and decode failures, and any unexpected exception,
    become ERROR results for that frame instead of ending the run. Closing the iterator early cancels
    the frames not yet started.

    ``stop`` (the caller's deadline, see :data:`Stop`) is asked as each fetch starts; once it says True, no
    further fetch starts, and every frame already started still yields its result. The frames that yield form
    a prefix of ``frames`` (frames answered without a fetch may yield beyond it): the first frame never
    stops, so a run always makes progress.
    """
    options = options or VerifyOptions()
    done: queue.SimpleQueue[FrameResult | None] = queue.SimpleQueue()
    budget = _ByteBudget(options.memory_budget_bytes)
    cancelled = threading.Event()
    gate = _StartGate(stop)
    fetch_pool = ThreadPoolExecutor(options.fetch_concurrency, thread_name_prefix="ahi-fetch")
    decode_pool = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="ahi-decode")

    def decode(frame: FrameRef, fetched: FetchedFrame, reserved: int) -> None:
        try:
            done.put(_guarded(frame, lambda: check_frame(frame, fetched)))
        finally:
            budget.release(reserved)

    def fetch(position: int, frame: FrameRef) -> None:
        started = _guarded(frame, partial(gate.may_start, position))
        if isinstance(started, FrameResult):  # the caller's deadline raised: this frame's result says so
            done.put(started)
            return
        if not started:
            done.put(None)  # not started: the caller hands this frame on
            return
        reserved = budget.acquire(int(frame.decoded_size_estimate() * IN_FLIGHT_FACTOR), cancelled)
        handed_over = False
        try:
            fetched = _paced_fetch(options.budget, cancelled, source, datastore_id, image_set_id, frame)
            if fetched is None:  # the run was closed
                return
            gate.finished()
            if isinstance(fetched, FrameResult):
                done.put(fetched)
                return
            decode_pool.submit(decode, frame, fetched, reserved)
            handed_over = True
        finally:
            if not handed_over:
                budget.release(reserved)

    pending = 0
    try:
        for position, frame in enumerate(frames):
            early = _guarded(frame, partial(precheck_frame, frame))
            if early is not None:
                yield early
            else:
                fetch_pool.submit(fetch, position, frame)
                pending += 1
        for _ in range(pending):
            result = done.get()
            if result is not None:
                yield result
    finally:
        cancelled.set()
        fetch_pool.shutdown(wait=True, cancel_futures=True)
        decode_pool.shutdown(wait=True, cancel_futures=True)


def _paced_fetch(
    budget: RequestBudget | None,
    cancelled: threading.Event,
    source: FrameSource,
    datastore_id: str,
    image_set_id: str,
    frame: FrameRef,
) -> FetchedFrame | FrameResult | None:
    """:func:`_fetch` in one of the budget's in-flight slots; None when the run was closed first."""
    if cancelled.is_set():
        return None
    with budget.in_flight(cancelled) if budget is not None else nullcontext(True) as admitted:
        return _fetch(source, datastore_id, image_set_id, frame) if admitted else None


def _fetch(source: FrameSource, datastore_id: str, image_set_id: str, frame: FrameRef) -> FetchedFrame | FrameResult:
    """The frame's stored bytes, or its ERROR result (one frame's failure never ends the run)."""
    try:
        return source.get_image_frame(datastore_id, image_set_id, frame.image_frame_id)
    except FrameFetchError as exc:
        return FrameResult.of(frame, Status.ERROR, expected=_expected(frame), reason=exc.reason, detail=str(exc))
    except Exception as exc:
        return _internal_error(frame, exc)


def verify_image_set(
    source: FrameSource,
    datastore_id: str,
    image_set_id: str,
    version_id: str | None = None,
    options: VerifyOptions | None = None,
    on_result: Callable[[FrameResult, int], None] | None = None,
) -> ImageSetResult:
    """Verify every frame of one image set.

    Parameters
    ----------
    source : FrameSource
        The HealthImaging adapter (or any object with the same two methods).
    datastore_id, image_set_id : str
    version_id : str, optional
        Pin the image set version, so a later update cannot change what is verified.
    options : VerifyOptions, optional
    on_result : callable, optional
        Called with each result and the total frame count as results complete (progress reporting).

    Returns
    -------
    ImageSetResult
        Results in metadata order.

    Raises
    ------
    ImageSetError
        The metadata could not be fetched or read.
    """
    listed = load_image_set_frames(source, datastore_id, image_set_id, version_id)
    total = len(listed.frames)
    collected: list[FrameResult] = []
    for result in iter_frame_results(source, datastore_id, image_set_id, listed.frames, options):
        collected.append(result)
        if on_result is not None:
            on_result(result, total)
    collected.sort(key=lambda r: r.index)
    return ImageSetResult(datastore_id, image_set_id, version_id, tuple(collected))


def _expected(frame: FrameRef) -> int | None:
    return frame.full_resolution.checksum if frame.full_resolution else None


def _internal_error(frame: FrameRef, exc: BaseException) -> FrameResult:
    return FrameResult.of(
        frame,
        Status.ERROR,
        expected=_expected(frame),
        reason=Reason.INTERNAL,
        detail=f"unexpected {type(exc).__name__}: {exc}",
    )


def _guarded(frame: FrameRef, step: Callable[[], _T]) -> _T | FrameResult:
    try:
        return step()
    except Exception as exc:  # turned into that frame's result
        return _internal_error(frame, exc)


def fetch_frame_again(
    source: FrameSource, datastore_id: str, image_set_id: str, frame: FrameRef, options: VerifyOptions | None = None
) -> FetchedFrame | None:
    """Fetch one frame a second time, in the request-rate budget of ``options`` like every other fetch.

    The three-way check needs the stored pixels of a frame whose lossy source no decoder reproduces; the
    frame check drops each frame's pixels once hashed (the memory budget holds only the frames in flight), so
    those few frames are fetched again. None when the fetch fails: the caller reports the frame unresolved.
    """
    budget = (options or VerifyOptions()).budget
    fetched = _paced_fetch(budget, threading.Event(), source, datastore_id, image_set_id, frame)
    return fetched if isinstance(fetched, FetchedFrame) else None
