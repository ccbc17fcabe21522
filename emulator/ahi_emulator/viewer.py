"""A viewer's load on the account: GetImageFrame requests at a set rate, from a client of its own.

The service's quotas are per account, so a verifier shares GetImageFrame's bucket with every viewer reading
the same account. :class:`Viewer` stands in for such a viewer in benchmarks: it asks for frames at a fixed
rate, whatever the verifier does, and reports how many of its requests were throttled.

The load is open-loop: request ``i`` is due at ``t0 + i / rate`` and is handed to a thread pool at that time,
so a slow answer delays no other request and the rate does not sag when latency rises, as it would with a
fixed number of clients each waiting for its answer. A request that a thread picks up late (every thread busy,
or the process too slow to keep up) is counted as late; a report with late requests says the viewer fell
behind its rate and did not offer the load it was asked for.

Its client makes one attempt per request (a viewer's retries would only add load the report cannot
attribute), does not prefix the host with ``runtime-`` (a local endpoint has no such name) and pools as many
connections as it has threads. Credentials and region come from the environment, as for any boto3 client.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

#: A request picked up more than this long after it was due counts as late (scheduling jitter is less).
LATE_AFTER_S = 0.1

_Outcome = Literal["ok", "throttled", "other"]


class ViewerFrame(NamedTuple):
    """One frame a viewer asks for."""

    datastore_id: str
    image_set_id: str
    image_frame_id: str


@dataclass(frozen=True)
class ViewerReport:
    """What a viewer run did.

    Attributes
    ----------
    requested
        Requests sent; every one was answered or failed before the run returned, so ``requested == ok +
        throttled + other_errors``.
    ok
        Frames received.
    throttled
        Requests answered 429 ``ThrottlingException``.
    other_errors
        Any other error response, and requests that failed without one (connection or read errors).
    duration_s
        The sending window (``duration_s``, or until ``stop`` was seen), or to the last answer if that came
        later.
    achieved_rate
        ``requested / duration_s``.
    target_rate
        The rate asked for.
    late
        Requests picked up more than :data:`LATE_AFTER_S` after they were due.
    max_lag_s
        The latest any request was picked up after its due time.
    """

    requested: int
    ok: int
    throttled: int
    other_errors: int
    duration_s: float
    achieved_rate: float
    target_rate: float
    late: int
    max_lag_s: float

    @property
    def throttled_share(self) -> float:
        """The share of requests throttled, 0 to 1 (0 when nothing was requested)."""
        return self.throttled / self.requested if self.requested else 0.0

    @property
    def fell_behind(self) -> bool:
        """True when some requests went out late, so the load offered was less than asked for."""
        return self.late > 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict: the fields plus ``throttled_share`` and ``fell_behind``."""
        return {**asdict(self), "throttled_share": self.throttled_share, "fell_behind": self.fell_behind}


class _Tally:
    """Outcome counters shared by the pool's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[_Outcome, int] = {"ok": 0, "throttled": 0, "other": 0}
        self.late = 0
        self.max_lag_s = 0.0
        self.last_answer = 0.0

    def add(self, outcome: _Outcome, lag_s: float, answered: float) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if lag_s > LATE_AFTER_S:
                self.late += 1
            self.max_lag_s = max(self.max_lag_s, lag_s)
            self.last_answer = max(self.last_answer, answered)


class Viewer:
    """GetImageFrame at a set rate, cycling over a list of frames (see the module docstring).

    Parameters
    ----------
    frames
        ``(datastore_id, image_set_id, image_frame_id)`` triples, asked for in turn, over and over.
    rate
        Requests per second; finite and > 0.
    threads
        Requests that can be in flight at once (and connections pooled); at least 1. Enough threads for
        ``rate`` times the latency keeps the viewer on time.
    endpoint_url
        The medical-imaging endpoint; ``None`` takes it from the environment
        (``AWS_ENDPOINT_URL_MEDICAL_IMAGING``) or the region's AWS endpoint.

    Raises
    ------
    ValueError
        For no frames, a bad rate or fewer than one thread.
    """

    def __init__(
        self,
        frames: Sequence[tuple[str, str, str]],
        *,
        rate: float,
        threads: int = 16,
        endpoint_url: str | None = None,
    ) -> None:
        if not frames:
            raise ValueError("a viewer needs at least one frame to ask for")
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, not {rate!r}")
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.frames = [ViewerFrame(*frame) for frame in frames]
        self.rate = float(rate)
        self.threads = threads
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            inject_host_prefix=False,
            max_pool_connections=threads,
            # A stuck request would hold a short benchmark run open for botocore's default minute.
            connect_timeout=5,
            read_timeout=10,
        )
        # A session of its own: the viewer is a separate client of the account, sharing nothing with the
        # process's default session but the environment.
        self._client = boto3.session.Session().client("medical-imaging", endpoint_url=endpoint_url, config=config)

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None) -> ViewerReport:
        """Send requests until ``duration_s`` has passed or ``stop`` is set, then wait for those in flight.

        Parameters
        ----------
        duration_s
            How long to send for; ``None`` until ``stop`` is set.
        stop
            Set it (from another thread or a signal handler) to stop sending early.

        Returns
        -------
        ViewerReport

        Raises
        ------
        ValueError
            When neither ``duration_s`` nor ``stop`` is given (the run would never end), or ``duration_s``
            is not > 0.
        """
        if duration_s is None and stop is None:
            raise ValueError("give duration_s, stop, or both: a viewer without either never stops")
        if duration_s is not None and not duration_s > 0:
            raise ValueError("duration_s must be > 0")
        stop = stop if stop is not None else threading.Event()
        tally = _Tally()
        requested = 0
        # Leaving the with block waits for every request in flight, so the counts are complete.
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="ahi-viewer") as pool:
            t0 = time.monotonic()
            end = t0 + duration_s if duration_s is not None else math.inf
            window_end = end
            while True:
                due = t0 + requested / self.rate
                if due >= end:
                    break
                wait = due - time.monotonic()
                if (wait > 0 and stop.wait(wait)) or stop.is_set():
                    window_end = time.monotonic()
                    break
                pool.submit(self._fetch, self.frames[requested % len(self.frames)], due, tally)
                requested += 1
        duration = max(window_end, tally.last_answer) - t0
        report = ViewerReport(
            requested=requested,
            ok=tally.outcomes["ok"],
            throttled=tally.outcomes["throttled"],
            other_errors=tally.outcomes["other"],
            duration_s=duration,
            achieved_rate=requested / duration if duration > 0 else 0.0,
            target_rate=self.rate,
            late=tally.late,
            max_lag_s=tally.max_lag_s,
        )
        if report.fell_behind:
            logger.warning(
                "viewer fell behind its rate of %g/s: %d of %d requests went out more than %g s late "
                "(at most %.3f s); give it more threads",
                self.rate,
                report.late,
                requested,
                LATE_AFTER_S,
                report.max_lag_s,
            )
        return report

    def _fetch(self, frame: ViewerFrame, due: float, tally: _Tally) -> None:
        lag = time.monotonic() - due
        outcome: _Outcome
        try:
            response = self._client.get_image_frame(
                datastoreId=frame.datastore_id,
                imageSetId=frame.image_set_id,
                imageFrameInformation={"imageFrameId": frame.image_frame_id},
            )
            response["imageFrameBlob"].read()  # a viewer reads what it asked for; it also frees the connection
            outcome = "ok"
        except ClientError as exc:
            outcome = "throttled" if exc.response.get("Error", {}).get("Code") == "ThrottlingException" else "other"
        except Exception:
            # Connection and read failures are part of what the viewer saw; a lost exception in a pool
            # thread would instead drop the request from the counts.
            logger.debug("viewer request failed", exc_info=True)
            outcome = "other"
        tally.add(outcome, lag, time.monotonic())

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def frames_from_emulator(
    endpoint_url: str, datastore_id: str, image_set_id: str | None = None, *, timeout_s: float = 10.0
) -> list[ViewerFrame]:
    """List an emulator's frames through its admin route ``GET /_emulator/image-sets``.

    Parameters
    ----------
    endpoint_url
        ``http://host:port`` of an ahi-emulator server.
    datastore_id
        Only this data store's frames.
    image_set_id
        Only this image set's frames; all of the data store's when ``None``.
    timeout_s
        Socket timeout.

    Returns
    -------
    list of ViewerFrame
        In the order the emulator lists image sets and their frames.

    Raises
    ------
    ValueError
        For an endpoint that is not ``http://``, or an answer that is not the route's.
    OSError
        When the server cannot be reached.
    """
    parts = urlsplit(endpoint_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the emulator's endpoint is http://host:port, not {endpoint_url!r}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        connection.request("GET", "/_emulator/image-sets")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise ValueError(f"GET /_emulator/image-sets answered {response.status}: {body[:200]!r}")
    listed = json.loads(body)
    if not isinstance(listed, list):
        raise ValueError("GET /_emulator/image-sets did not answer a list")
    return [
        ViewerFrame(entry["datastoreId"], entry["imageSetId"], frame_id)
        for entry in listed
        if entry["datastoreId"] == datastore_id and image_set_id in (None, entry["imageSetId"])
        for frame_id in entry["imageFrameIds"]
    ]
