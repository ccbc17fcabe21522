"""Request quotas: the token arithmetic (fake clock), 429s over HTTP, the admin routes, the CLI flags, the viewer."""

from __future__ import annotations

import pytest

from ahi_emulator.quotas import DEFAULT_QUOTAS, NO_QUOTAS, Quota, QuotaBook, parse_quota, quotas_from_json


class FakeClock:
    """A clock that moves only when told to, so token arithmetic is exact and no test waits."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def admitted(book: QuotaBook, operation: str, times: int) -> list[bool]:
    return [book.admit(operation) for _ in range(times)]


# ---------------------------------------------------------------------------------------- token arithmetic


def test_default_quotas_are_the_documented_ones() -> None:
    """GIVEN the module's defaults THEN they are the service's documented rates and bursts, for every operation."""
    assert {op: (q.rate, q.burst) for op, q in DEFAULT_QUOTAS.items() if q is not None} == {
        "GetImageFrame": (1000, 2000),
        "GetImageSetMetadata": (50, 100),
        "GetImageSet": (25, 50),
        "GetDICOMImportJob": (25, 50),
        "ListDICOMImportJobs": (10, 20),
        "StartDICOMImportJob": (1, 2),
    }


@pytest.mark.parametrize(
    ("quota", "expected"),
    [
        pytest.param(Quota(1, 3), [True] * 3 + [False] * 2, id="burst-3-then-throttled"),
        pytest.param(Quota(1000, 1), [True, False], id="burst-1-at-high-rate"),
        pytest.param(Quota(0.001, 2), [True, True, False], id="tiny-rate"),
    ],
)
def test_full_bucket_admits_its_burst_then_throttles(quota: Quota, expected: list[bool]) -> None:
    """GIVEN a fresh bucket and a stopped clock WHEN requests arrive THEN exactly `burst` are admitted."""
    book = QuotaBook({"GetImageFrame": quota}, clock=FakeClock())

    assert admitted(book, "GetImageFrame", len(expected)) == expected


@pytest.mark.parametrize(
    ("elapsed", "tokens"),
    [
        pytest.param(0.05, 0, id="half-a-token"),
        pytest.param(0.1, 1, id="one-token"),
        pytest.param(0.35, 3, id="three-and-a-half-tokens"),
        pytest.param(60.0, 5, id="refill-stops-at-burst"),
    ],
)
def test_bucket_refills_at_its_rate_up_to_its_burst(elapsed: float, tokens: int) -> None:
    """GIVEN an emptied bucket of rate 10/s, burst 5 WHEN the clock moves on THEN rate x elapsed whole tokens
    (never more than the burst) are admitted."""
    clock = FakeClock()
    book = QuotaBook({"GetImageFrame": Quota(10, 5)}, clock=clock)
    assert admitted(book, "GetImageFrame", 6) == [True] * 5 + [False]

    clock.advance(elapsed)

    assert admitted(book, "GetImageFrame", tokens + 1) == [True] * tokens + [False]


def test_explicit_time_argument_drives_the_bucket() -> None:
    """GIVEN a bucket of rate 2/s, burst 1 WHEN admit is given times THEN the clock is not read and a token
    comes back every half second."""

    def clock() -> float:
        raise AssertionError("the clock must not be read when now= is given")

    book = QuotaBook({"GetImageSet": Quota(2, 1)}, clock=clock)

    assert [book.admit("GetImageSet", now=t) for t in (0.0, 0.1, 0.5, 0.6, 1.0)] == [True, False, True, False, True]


def test_clock_that_steps_back_adds_no_tokens() -> None:
    """GIVEN an emptied bucket WHEN a request carries an earlier time than the last THEN nothing is refilled."""
    book = QuotaBook({"GetImageSet": Quota(10, 1)})
    assert book.admit("GetImageSet", now=50.0)

    assert not book.admit("GetImageSet", now=10.0)
    assert not book.admit("GetImageSet", now=50.05)
    assert book.admit("GetImageSet", now=50.1)


def test_operations_have_separate_buckets() -> None:
    """GIVEN GetImageFrame's bucket emptied WHEN GetImageSetMetadata is asked for THEN it is still admitted."""
    book = QuotaBook({"GetImageFrame": Quota(1, 1), "GetImageSetMetadata": Quota(1, 1)}, clock=FakeClock())
    assert admitted(book, "GetImageFrame", 2) == [True, False]

    assert book.admit("GetImageSetMetadata")


def test_unlimited_operation_is_always_admitted() -> None:
    """GIVEN GetImageFrame set unlimited WHEN far more than any burst arrives at one instant THEN all admitted."""
    book = QuotaBook({"GetImageFrame": None}, clock=FakeClock())

    assert all(admitted(book, "GetImageFrame", 5000))
    assert book.counts()["GetImageFrame"] == {"admitted": 5000, "throttled": 0}


def test_no_quotas_makes_every_operation_unlimited() -> None:
    """GIVEN NO_QUOTAS WHEN quotas are listed THEN every operation is unlimited."""
    book = QuotaBook(NO_QUOTAS)

    assert set(book.quotas()) == set(DEFAULT_QUOTAS)
    assert set(book.quotas().values()) == {None}


def test_set_replaces_a_quota_with_a_full_bucket_and_reset_restores_the_starting_ones() -> None:
    """GIVEN a book started with one override WHEN a quota is set, then the book reset
    THEN set takes effect with a full bucket and reset returns to the starting quotas, buckets full."""
    clock = FakeClock()
    book = QuotaBook({"GetImageFrame": Quota(1, 2)}, clock=clock)
    assert admitted(book, "GetImageFrame", 3) == [True, True, False]

    book.set("GetImageFrame", Quota(1, 4))
    after_set = admitted(book, "GetImageFrame", 5)
    book.set("GetImageSet", None)
    book.reset()
    after_reset = admitted(book, "GetImageFrame", 3)

    assert after_set == [True] * 4 + [False]
    assert after_reset == [True, True, False]
    assert book.quotas() == {**DEFAULT_QUOTAS, "GetImageFrame": Quota(1, 2)}


def test_clear_makes_everything_unlimited_until_reset() -> None:
    """GIVEN the defaults WHEN cleared THEN all are unlimited, and reset brings the defaults back."""
    book = QuotaBook()

    book.clear()
    cleared = book.quotas()
    book.reset()

    assert set(cleared.values()) == {None}
    assert book.quotas() == dict(DEFAULT_QUOTAS)


def test_counters_count_admitted_and_throttled_per_operation() -> None:
    """GIVEN a burst of 2 WHEN 5 requests arrive THEN 2 admitted and 3 throttled are counted, other operations 0,
    and reset_counts zeroes them (the quotas stay)."""
    book = QuotaBook({"GetImageFrame": Quota(1, 2)}, clock=FakeClock())
    admitted(book, "GetImageFrame", 5)

    counts = book.counts()
    book.reset_counts()

    assert counts["GetImageFrame"] == {"admitted": 2, "throttled": 3}
    assert counts["GetImageSet"] == {"admitted": 0, "throttled": 0}
    assert set(counts) == set(DEFAULT_QUOTAS)
    assert book.counts()["GetImageFrame"] == {"admitted": 0, "throttled": 0}
    assert book.quotas()["GetImageFrame"] == Quota(1, 2)


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        pytest.param(0, 1, id="zero-rate"),
        pytest.param(-1, 1, id="negative-rate"),
        pytest.param(float("inf"), 1, id="infinite-rate"),
        pytest.param(float("nan"), 1, id="nan-rate"),
        pytest.param(True, 1, id="bool-rate"),
        pytest.param(1, 0, id="zero-burst"),
        pytest.param(1, 1.5, id="fractional-burst"),
    ],
)
def test_quota_rejects_invalid_values(rate: float, burst: int) -> None:
    """GIVEN a rate <= 0 (or not a finite number) or a burst < 1 (or not an integer) THEN ValueError."""
    with pytest.raises(ValueError, match=r"rate|burst"):
        Quota(rate, burst)


def test_unknown_operation_is_rejected() -> None:
    """GIVEN a misspelt operation WHEN it is given a quota or asks for a token THEN ValueError, nothing changed."""
    book = QuotaBook()

    with pytest.raises(ValueError, match="unknown operation"):
        book.update({"GetImageFrame": None, "GetImageFrames": Quota(1, 1)})
    with pytest.raises(ValueError, match="unknown operation"):
        book.admit("GetImageFrames")
    with pytest.raises(ValueError, match="unknown operation"):
        QuotaBook({"Nope": None})
    assert book.quotas() == dict(DEFAULT_QUOTAS)


# ------------------------------------------------------------------------------------------- wire forms


def test_quota_json_round_trip_and_default_burst() -> None:
    """GIVEN quota objects WHEN written and read THEN they round-trip; a missing burst is twice the rate."""
    assert Quota(1000, 2000).to_json() == {"rate": 1000, "burst": 2000}
    assert Quota(0.5, 1).to_json() == {"rate": 0.5, "burst": 1}
    assert Quota.from_json({"rate": 0.5, "burst": 1}) == Quota(0.5, 1)
    assert Quota.from_json({"rate": 7}) == Quota(7, 14)
    assert Quota.from_json(None) is None
    assert quotas_from_json({"GetImageFrame": {"rate": 3, "burst": 4}, "GetImageSet": None}) == {
        "GetImageFrame": Quota(3, 4),
        "GetImageSet": None,
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({"GetImageFrames": None}, id="unknown-operation"),
        pytest.param({"GetImageFrame": 5}, id="bare-number"),
        pytest.param({"GetImageFrame": {"burst": 5}}, id="no-rate"),
        pytest.param({"GetImageFrame": {"rate": 5, "burst": 5, "extra": 1}}, id="unknown-field"),
        pytest.param({"GetImageFrame": {"rate": "5", "burst": 5}}, id="rate-as-string"),
        pytest.param({"GetImageFrame": {"rate": 5, "burst": 0}}, id="zero-burst"),
    ],
)
def test_quotas_from_json_rejects_bad_bodies(body: object) -> None:
    """GIVEN a malformed admin body THEN ValueError."""
    with pytest.raises(ValueError, match=r"quota|operation|rate|burst"):
        quotas_from_json(body)


@pytest.mark.parametrize(
    ("text", "operation", "quota"),
    [
        pytest.param("GetImageFrame=100:150", "GetImageFrame", Quota(100, 150), id="rate-and-burst"),
        pytest.param("GetImageSet=5", "GetImageSet", Quota(5, 10), id="burst-defaults-to-twice-rate"),
        pytest.param("StartDICOMImportJob=0.2", "StartDICOMImportJob", Quota(0.2, 1), id="fractional-rate"),
        pytest.param(" GetImageFrame =2.5:3", "GetImageFrame", Quota(2.5, 3), id="spaces-around-name"),
    ],
)
def test_parse_quota_accepts(text: str, operation: str, quota: Quota) -> None:
    """GIVEN OPERATION=RATE[:BURST] THEN the operation and its quota."""
    assert parse_quota(text) == (operation, quota)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("GetImageFrame", id="no-equals"),
        pytest.param("GetImageFrame=", id="no-rate"),
        pytest.param("=5", id="no-operation"),
        pytest.param("GetImageFrames=5", id="unknown-operation"),
        pytest.param("GetImageFrame=fast", id="rate-not-a-number"),
        pytest.param("GetImageFrame=0", id="zero-rate"),
        pytest.param("GetImageFrame=-3:5", id="negative-rate"),
        pytest.param("GetImageFrame=5:1.5", id="fractional-burst"),
        pytest.param("GetImageFrame=5:0", id="zero-burst"),
        pytest.param("GetImageFrame=nan", id="nan-rate"),
    ],
)
def test_parse_quota_rejects(text: str) -> None:
    """GIVEN a malformed --quota value THEN ValueError."""
    with pytest.raises(ValueError, match=r"OPERATION|operation|RATE|rate|burst"):
        parse_quota(text)
