"""Per-operation request quotas: token buckets, as HealthImaging throttles an account.

The service throttles per account and Region, and every caller of the account draws on the same quota: all
Lambda invocations, every script and every viewer of the account. The emulator serves one account, so one
:class:`QuotaBook` holds one bucket per operation and every request, from whichever client or connection,
takes its token from that bucket. A request that finds its bucket empty is answered the way the service
answers it (429 ``ThrottlingException``, ``Rate exceeded``; see :mod:`ahi_emulator.app`).

The arithmetic is the classic token bucket: a bucket holds at most ``burst`` tokens, starts full, gains
``rate`` tokens per second, and each admitted request takes one. The clock is injectable, so the arithmetic
is tested with a fake clock and never with the wall clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .faults import OPERATIONS

Clock = Callable[[], float]

# A bucket refilled by float arithmetic can land a hair below a whole token (0.1 s at 10/s gives
# 0.9999999999999998 after some sums); such a bucket holds a token as far as a caller can tell.
_WHOLE_TOKEN = 1.0 - 1e-9


def _valid_rate(rate: Any) -> bool:
    # bool is an int subclass; true/false in a JSON body is a mistake, not a rate of 1.
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return False
    return math.isfinite(rate) and rate > 0


@dataclass(frozen=True)
class Quota:
    """A request quota: a sustained ``rate`` in requests per second and a ``burst`` of requests.

    Parameters
    ----------
    rate
        Tokens added per second; finite and > 0.
    burst
        The bucket's capacity, and what it holds when it starts; an integer >= 1.

    Raises
    ------
    ValueError
        For a rate or burst outside those ranges, or of the wrong type.
    """

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not _valid_rate(self.rate):
            raise ValueError(f"rate must be a finite number > 0, not {self.rate!r}")
        if not isinstance(self.burst, int) or isinstance(self.burst, bool) or self.burst < 1:
            raise ValueError(f"burst must be an integer >= 1, not {self.burst!r}")

    @classmethod
    def of(cls, rate: float, burst: int | None = None) -> Quota:
        """Build a quota whose burst, when not given, is twice the rate (rounded up, at least 1).

        Twice the rate is the ratio of every default the service documents (1000/2000, 50/100, ...).
        """
        if burst is None:
            # An invalid rate gets a placeholder burst, so that the constructor reports the rate.
            burst = max(1, math.ceil(2 * rate)) if _valid_rate(rate) else 1
        return cls(rate, burst)

    def to_json(self) -> dict[str, Any]:
        """Return the admin API's wire form, ``{"rate": ..., "burst": ...}`` (a whole rate as an integer)."""
        rate = float(self.rate)
        return {"rate": int(rate) if rate.is_integer() else rate, "burst": self.burst}

    @classmethod
    def from_json(cls, obj: Any) -> Quota | None:
        """Build a quota from the admin API's wire form; JSON ``null`` is ``None`` (unlimited).

        ``burst`` may be left out (twice the rate, as for :meth:`of`).

        Raises
        ------
        ValueError
            When ``obj`` is neither null nor an object with a valid ``rate`` (and ``burst``) and nothing else.
        """
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise ValueError("a quota must be a JSON object {rate, burst} or null")
        unknown = set(obj) - {"rate", "burst"}
        if unknown:
            raise ValueError(f"unknown quota fields: {sorted(unknown)}")
        if "rate" not in obj:
            raise ValueError("a quota needs a rate")
        return cls.of(obj["rate"], obj.get("burst"))


#: The service's documented default quotas (requests per second and burst), per operation.
DEFAULT_QUOTAS: Mapping[str, Quota | None] = MappingProxyType(
    {
        "GetImageFrame": Quota(1000, 2000),
        "GetImageSetMetadata": Quota(50, 100),
        "GetImageSet": Quota(25, 50),
        "SearchImageSets": Quota(25, 50),
        "ListImageSetVersions": Quota(25, 50),
        # The guide's throttling table (HTML) gives these three 0.25 requests/s with a burst of 1; a newer
        # markdown copy of it gives UpdateImageSetMetadata 10/40. The emulator follows the HTML table.
        "UpdateImageSetMetadata": Quota(0.25, 1),
        "CopyImageSet": Quota(0.25, 1),
        "DeleteImageSet": Quota(0.25, 1),
        "StartDICOMImportJob": Quota(1, 2),
        "GetDICOMImportJob": Quota(25, 50),
        "ListDICOMImportJobs": Quota(10, 20),
        # The data store operations are not in the documented list the emulator follows: unlimited here.
        "CreateDatastore": None,
        "GetDatastore": None,
        "ListDatastores": None,
    }
)

#: Every operation unlimited: pass as ``quotas=`` to serve without throttling.
NO_QUOTAS: Mapping[str, Quota | None] = MappingProxyType(dict.fromkeys(OPERATIONS))


def check_quotas(quotas: Mapping[str, Any]) -> dict[str, Quota | None]:
    """Check a mapping of operation to quota (or ``None``) and return it as a plain dict.

    Raises
    ------
    ValueError
        For an unknown operation or a value that is neither a :class:`Quota` nor ``None``.
    """
    checked: dict[str, Quota | None] = {}
    for operation, quota in quotas.items():
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {OPERATIONS}")
        if quota is not None and not isinstance(quota, Quota):
            raise ValueError(f"the quota of {operation} must be a Quota or None, not {quota!r}")
        checked[operation] = quota
    return checked


def quotas_from_json(obj: Any) -> dict[str, Quota | None]:
    """Read the admin API's partial mapping ``{"<Operation>": {"rate", "burst"} | null, ...}``.

    Raises
    ------
    ValueError
        When ``obj`` is not an object, names an unknown operation or holds an invalid quota. Every entry is
        read before any is returned, so a caller that applies the result applies all of it or none.
    """
    if not isinstance(obj, dict):
        raise ValueError('quotas must be a JSON object {"<Operation>": {"rate": r, "burst": b} | null}')
    parsed: dict[str, Quota | None] = {}
    for operation, value in obj.items():
        try:
            parsed[operation] = Quota.from_json(value)
        except ValueError as exc:
            raise ValueError(f"{operation}: {exc}") from exc
    return check_quotas(parsed)


def parse_quota(text: str) -> tuple[str, Quota]:
    """Parse the command line's ``OPERATION=RATE[:BURST]`` (``GetImageFrame=100:150``, ``GetImageSet=5``).

    Returns
    -------
    tuple
        The operation and its quota; BURST left out is twice RATE (see :meth:`Quota.of`).

    Raises
    ------
    ValueError
        For another shape, an unknown operation or invalid numbers.
    """
    operation, sep, value = text.partition("=")
    operation = operation.strip()
    if not sep or not operation or not value.strip():
        raise ValueError(f"expected OPERATION=RATE[:BURST], not {text!r}")
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(OPERATIONS)}")
    rate_text, colon, burst_text = value.partition(":")
    try:
        rate = float(rate_text)
        burst = int(burst_text) if colon else None
    except ValueError as exc:
        raise ValueError(f"{text!r}: RATE must be a number and BURST an integer") from exc
    return operation, Quota.of(rate, burst)


@dataclass
class _Bucket:
    quota: Quota
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        # A clock read on another thread can arrive a little out of order; time never runs backwards here.
        if now > self.stamp:
            self.tokens = min(float(self.quota.burst), self.tokens + (now - self.stamp) * self.quota.rate)
            self.stamp = now
        if self.tokens >= _WHOLE_TOKEN:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False


class QuotaBook:
    """Thread-safe token buckets, one per operation, shared by every request to the emulator.

    Parameters
    ----------
    quotas
        The starting quotas, each over :data:`DEFAULT_QUOTAS` (``None`` for an operation: unlimited;
        :data:`NO_QUOTAS`: every operation unlimited). :meth:`reset` returns to them.
    clock
        Seconds from any fixed origin, never decreasing; :func:`time.monotonic` by default.

    Raises
    ------
    ValueError
        For an unknown operation or a value that is not a quota.
    """

    def __init__(self, quotas: Mapping[str, Quota | None] | None = None, *, clock: Clock = time.monotonic) -> None:
        self._defaults: dict[str, Quota | None] = {**DEFAULT_QUOTAS, **check_quotas(quotas or {})}
        self._clock = clock
        self._lock = threading.Lock()
        self._quotas: dict[str, Quota | None] = dict(self._defaults)
        # Buckets are made on an operation's first request, full, so that building a book reads no clock.
        self._buckets: dict[str, _Bucket] = {}
        self._admitted: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()

    def admit(self, operation: str, now: float | None = None) -> bool:
        """Take one token from the operation's bucket, if it has one.

        Parameters
        ----------
        operation
            One of :data:`~ahi_emulator.faults.OPERATIONS`.
        now
            The time of the request on the book's clock; read from the clock when ``None``.

        Returns
        -------
        bool
            True when the request is admitted (always, for an unlimited operation); False when it is to be
            throttled.

        Raises
        ------
        ValueError
            For an unknown operation.
        """
        with self._lock:
            if operation not in self._quotas:
                raise ValueError(f"unknown operation {operation!r}")
            quota = self._quotas[operation]
            if quota is None:
                admitted = True
            else:
                when = self._clock() if now is None else now
                bucket = self._buckets.get(operation)
                if bucket is None:
                    bucket = self._buckets[operation] = _Bucket(quota, float(quota.burst), when)
                admitted = bucket.take(when)
            (self._admitted if admitted else self._throttled)[operation] += 1
            return admitted

    def set(self, operation: str, quota: Quota | None) -> None:
        """Give one operation a new quota (``None``: unlimited); its bucket starts again, full.

        Raises
        ------
        ValueError
            For an unknown operation or a value that is not a quota.
        """
        self.update({operation: quota})

    def update(self, quotas: Mapping[str, Quota | None]) -> None:
        """Set several operations' quotas at once: all of them, or (on error) none; their buckets start full.

        Raises
        ------
        ValueError
            For an unknown operation or a value that is not a quota.
        """
        checked = check_quotas(quotas)
        with self._lock:
            for operation, quota in checked.items():
                self._quotas[operation] = quota
                self._buckets.pop(operation, None)

    def clear(self) -> None:
        """Make every operation unlimited."""
        self.update(NO_QUOTAS)

    def reset(self) -> None:
        """Return to the starting quotas with full buckets (the counters are kept; see :meth:`reset_counts`)."""
        with self._lock:
            self._quotas = dict(self._defaults)
            self._buckets.clear()

    def quotas(self) -> dict[str, Quota | None]:
        """Return the current quota of every operation (``None``: unlimited)."""
        with self._lock:
            return dict(self._quotas)

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{"<Operation>": {"admitted": n, "throttled": m}}`` for every operation."""
        with self._lock:
            return {
                op: {"admitted": self._admitted.get(op, 0), "throttled": self._throttled.get(op, 0)}
                for op in OPERATIONS
            }

    def reset_counts(self) -> None:
        """Zero the admitted and throttled counters."""
        with self._lock:
            self._admitted.clear()
            self._throttled.clear()
