"""Request quotas: the token arithmetic (fake clock), 429s over HTTP, the admin routes, the CLI flags, the viewer."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config

from ahi_emulator import Emulator, EmulatorServer, Fault, ImageSetInfo, InstanceSpec
from ahi_emulator.cli import main
from ahi_emulator.quotas import DEFAULT_QUOTAS, NO_QUOTAS, Quota, QuotaBook, parse_quota, quotas_from_json
from ahi_emulator.viewer import Viewer, ViewerFrame, ViewerReport, frames_from_emulator
from tests.support import admin_call

integration = pytest.mark.integration

# A rate so small that no token comes back during a test: a bucket of burst n admits exactly n requests.
NEVER_REFILLS = 0.001


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
        "SearchImageSets": (25, 50),
        "ListImageSetVersions": (25, 50),
        "UpdateImageSetMetadata": (0.25, 1),
        "CopyImageSet": (0.25, 1),
        "DeleteImageSet": (0.25, 1),
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


# ----------------------------------------------------------------------------------------------- over HTTP


@pytest.fixture
def info(emulator: Emulator, datastore_id: str) -> ImageSetInfo:
    frame = np.arange(16 * 12, dtype=np.uint16).reshape(16, 12)
    return emulator.add_image_set(datastore_id, [InstanceSpec(frames=[frame, frame + 1])])


def get_frame(client: Any, info: ImageSetInfo) -> bytes:
    response = client.get_image_frame(
        datastoreId=info.datastore_id,
        imageSetId=info.image_set_id,
        imageFrameInformation={"imageFrameId": info.frame_ids[0]},
    )
    data: bytes = response["imageFrameBlob"].read()
    return data


def get_metadata(client: Any, info: ImageSetInfo) -> bytes:
    response = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id)
    data: bytes = response["imageSetMetadataBlob"].read()
    return data


def outcomes(client: Any, call: Any, info: ImageSetInfo, times: int) -> list[str]:
    """Make `times` calls; each is "ok" or the error code it raised."""
    results = []
    for _ in range(times):
        try:
            call(client, info)
            results.append("ok")
        except client.exceptions.ClientError as exc:
            results.append(exc.response["Error"]["Code"])
    return results


@integration
def test_request_beyond_the_burst_is_throttled_like_the_service(
    client: Any, emulator: Emulator, info: ImageSetInfo
) -> None:
    """GIVEN GetImageFrame with a burst of 3 and a tiny rate WHEN boto3 (retries off) asks for a frame 4 times
    THEN the 4th raises ThrottlingException (429, "Rate exceeded") and the stats count it as throttled by the
    quota, not as a fault."""
    emulator.set_quota("GetImageFrame", Quota(NEVER_REFILLS, 3))
    for _ in range(3):
        get_frame(client, info)

    with pytest.raises(client.exceptions.ThrottlingException) as caught:
        get_frame(client, info)

    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Error"]["Message"] == "Rate exceeded"
    stats = emulator.stats()
    assert stats["throttled_by_quota"]["GetImageFrame"] == 1
    assert stats["requests"]["GetImageFrame"] == 4
    assert stats["responses"] == {"200": 3, "429": 1}
    assert stats["faults_fired"] == 0


@integration
def test_metadata_has_its_own_bucket(client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN GetImageFrame's bucket (burst 1) spent WHEN metadata is asked for THEN its own bucket (burst 2)
    answers it, until that one is spent too; each operation's throttles are counted apart."""
    emulator.set_quotas({"GetImageFrame": Quota(NEVER_REFILLS, 1), "GetImageSetMetadata": Quota(NEVER_REFILLS, 2)})

    frames = outcomes(client, get_frame, info, 2)
    metadata = outcomes(client, get_metadata, info, 3)

    assert frames == ["ok", "ThrottlingException"]
    assert metadata == ["ok", "ok", "ThrottlingException"]
    throttled = emulator.stats()["throttled_by_quota"]
    assert (throttled["GetImageFrame"], throttled["GetImageSetMetadata"], throttled["GetImageSet"]) == (1, 1, 0)


@integration
def test_quota_is_checked_before_faults_but_latency_still_applies(
    client: Any, emulator: Emulator, info: ImageSetInfo
) -> None:
    """GIVEN a spent bucket, a one-shot server_error fault and a latency fault WHEN a frame is asked for
    THEN the quota answers (429): the error fault does not fire and stays armed, the latency fault fires;
    once the quota is lifted, the error fault answers the next request."""
    emulator.set_quota("GetImageFrame", Quota(NEVER_REFILLS, 1))
    get_frame(client, info)
    emulator.add_fault(Fault("latency", operation="GetImageFrame", latency_ms=1))
    emulator.add_fault(Fault("server_error", operation="GetImageFrame", count=1))

    throttled = outcomes(client, get_frame, info, 1)
    armed = [fault.kind for fault in emulator.faults()]
    emulator.set_quota("GetImageFrame", None)
    after = outcomes(client, get_frame, info, 2)

    assert throttled == ["ThrottlingException"]
    assert armed == ["latency", "server_error"]
    assert after == ["InternalServerException", "ok"]
    stats = emulator.stats()
    assert stats["faults_fired_by_kind"]["latency"] == 3
    assert stats["faults_fired_by_kind"]["server_error"] == 1
    assert stats["throttled_by_quota"]["GetImageFrame"] == 1


@integration
def test_injected_throttle_is_not_counted_as_a_quota_throttle(
    client: Any, emulator: Emulator, info: ImageSetInfo
) -> None:
    """GIVEN the default quotas and a one-shot throttle fault WHEN a frame is asked for THEN the 429 is the
    fault's (faults_fired 1, throttled_by_quota 0)."""
    emulator.add_fault(Fault("throttle", operation="GetImageFrame", count=1))

    assert outcomes(client, get_frame, info, 1) == ["ThrottlingException"]

    stats = emulator.stats()
    assert stats["faults_fired_by_kind"]["throttle"] == 1
    assert stats["throttled_by_quota"]["GetImageFrame"] == 0


def test_quotas_are_on_by_default_with_the_documented_values() -> None:
    """GIVEN an emulator built without quotas= THEN it enforces the service's defaults."""
    assert Emulator().quotas() == dict(DEFAULT_QUOTAS)
    assert Emulator(quotas=NO_QUOTAS).quotas() == dict(NO_QUOTAS)
    assert Emulator(quotas={"GetImageFrame": Quota(5, 5)}).quotas()["GetImageFrame"] == Quota(5, 5)


@integration
def test_request_log_records_answers_only_while_started(client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN a burst of 2 WHEN 1 request is made before the log starts and 2 after (plus a stats read)
    THEN the log holds the 2 later answers in order (200, then 429) with non-decreasing times; stopping
    returns it and empties the log."""
    emulator.set_quota("GetImageFrame", Quota(NEVER_REFILLS, 2))
    get_frame(client, info)
    before = emulator.request_log()

    emulator.start_request_log()
    outcomes(client, get_frame, info, 2)
    emulator.stats()  # not an API request
    log = emulator.request_log()
    stopped = emulator.stop_request_log()

    assert before == []
    assert [(entry.operation, entry.status) for entry in log] == [("GetImageFrame", 200), ("GetImageFrame", 429)]
    assert [entry.time for entry in log] == sorted(entry.time for entry in log)
    assert stopped == log
    assert emulator.request_log() == []


# ------------------------------------------------------------------------------------------------ admin API

DEFAULTS_JSON = {
    "GetImageFrame": {"rate": 1000, "burst": 2000},
    "GetImageSetMetadata": {"rate": 50, "burst": 100},
    "GetImageSet": {"rate": 25, "burst": 50},
    "SearchImageSets": {"rate": 25, "burst": 50},
    "ListImageSetVersions": {"rate": 25, "burst": 50},
    "UpdateImageSetMetadata": {"rate": 0.25, "burst": 1},
    "CopyImageSet": {"rate": 0.25, "burst": 1},
    "DeleteImageSet": {"rate": 0.25, "burst": 1},
    "StartDICOMImportJob": {"rate": 1, "burst": 2},
    "GetDICOMImportJob": {"rate": 25, "burst": 50},
    "ListDICOMImportJobs": {"rate": 10, "burst": 20},
    "CreateDatastore": None,
    "GetDatastore": None,
    "ListDatastores": None,
}


@integration
def test_admin_quotas_round_trip(server: EmulatorServer, emulator: Emulator) -> None:
    """GIVEN a server with the default quotas WHEN the quotas are read, partly changed, cleared and reset
    over the admin API THEN each answer shows the quotas then in force."""
    status, initial = admin_call(server.port, "GET", "/_emulator/quotas")
    _, changed = admin_call(
        server.port, "POST", "/_emulator/quotas", {"GetImageFrame": {"rate": 2.5, "burst": 5}, "GetImageSet": None}
    )
    in_force = emulator.quotas()
    _, cleared = admin_call(server.port, "DELETE", "/_emulator/quotas")
    admin_call(server.port, "POST", "/_emulator/reset")
    _, after_reset = admin_call(server.port, "GET", "/_emulator/quotas")

    assert status == 200
    assert initial == DEFAULTS_JSON
    assert changed == {**DEFAULTS_JSON, "GetImageFrame": {"rate": 2.5, "burst": 5}, "GetImageSet": None}
    assert in_force["GetImageFrame"] == Quota(2.5, 5)
    assert cleared == dict.fromkeys(DEFAULTS_JSON)
    assert after_reset == DEFAULTS_JSON


@integration
@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"GetImageFrame": {"rate": 1, "burst": 1}, "GetImageFrames": None}, id="unknown-operation"),
        pytest.param({"GetImageFrame": {"rate": 1, "burst": 1}, "GetImageSet": {"rate": 0}}, id="zero-rate"),
        pytest.param({"GetImageFrame": {"rate": 1, "burst": 1}, "GetImageSet": 3}, id="not-an-object"),
        pytest.param([{"GetImageFrame": None}], id="a-list"),
    ],
)
def test_admin_rejects_a_bad_quota_body_and_applies_nothing(
    server: EmulatorServer, emulator: Emulator, body: Any
) -> None:
    """GIVEN a POST whose first entry is valid and a later one is not THEN 400 ValidationException, and not even
    the valid entry is applied."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("POST", "/_emulator/quotas", body=json.dumps(body))
        response = connection.getresponse()
        status, error_type, answer = response.status, response.getheader("x-amzn-ErrorType"), response.read()
    finally:
        connection.close()

    assert (status, error_type) == (400, "ValidationException")
    assert "message" in json.loads(answer)
    assert emulator.quotas() == dict(DEFAULT_QUOTAS)


@integration
def test_reset_restores_the_starting_quotas_with_full_buckets() -> None:
    """GIVEN an emulator built with a GetImageFrame burst of 1, its bucket spent and GetImageSet made unlimited
    WHEN POST /_emulator/reset THEN the starting quotas are back and the next frame is admitted."""
    emulator = Emulator(quotas={"GetImageFrame": Quota(NEVER_REFILLS, 1)})
    image_set = emulator.add_image_set(emulator.create_datastore(), [InstanceSpec(frames=[np.zeros((4, 4), np.uint8)])])
    with EmulatorServer(emulator) as server, closing(direct_client(server)) as client:
        spent = outcomes(client, get_frame, image_set, 2)
        emulator.set_quota("GetImageSet", None)

        status, _ = admin_call(server.port, "POST", "/_emulator/reset")
        after = outcomes(client, get_frame, image_set, 2)

    assert spent == ["ok", "ThrottlingException"]
    assert status == 200
    assert after == ["ok", "ThrottlingException"]
    assert emulator.quotas() == {**DEFAULT_QUOTAS, "GetImageFrame": Quota(NEVER_REFILLS, 1)}


def direct_client(server: EmulatorServer) -> Any:
    """A medical-imaging client aimed at one server by argument (credentials and region from the environment)."""
    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, inject_host_prefix=False)
    return boto3.client("medical-imaging", endpoint_url=server.endpoint_url, config=config)


# ------------------------------------------------------------------------------------------------- the CLI


@contextmanager
def served(tmp_path: Path, *options: str) -> Iterator[str]:
    """Run ``python -m ahi_emulator serve`` with these options on an empty data store; yield its URL."""
    url_file = tmp_path / "url.txt"
    command = [sys.executable, "-m", "ahi_emulator", "serve", "--data", str(tmp_path / "data")]
    command += ["--datastore-id", "d" * 32, "--port", "0", "--url-file", str(url_file), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no URL file after 30 s"
            time.sleep(0.05)
        yield url_file.read_text().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err


def get_quotas(url: str) -> Any:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/_emulator/quotas")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


@integration
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param((), DEFAULTS_JSON, id="defaults"),
        pytest.param(
            ("--quota", "GetImageFrame=5:7", "--quota", "GetImageSet=3", "--quota", "GetImageSet=4"),
            {**DEFAULTS_JSON, "GetImageFrame": {"rate": 5, "burst": 7}, "GetImageSet": {"rate": 4, "burst": 8}},
            id="quota-flags-over-defaults-last-wins",
        ),
        pytest.param(("--no-quotas",), dict.fromkeys(DEFAULTS_JSON), id="no-quotas"),
        pytest.param(
            ("--no-quotas", "--quota", "GetImageFrame=0.5:1"),
            {**dict.fromkeys(DEFAULTS_JSON), "GetImageFrame": {"rate": 0.5, "burst": 1}},
            id="no-quotas-then-one",
        ),
    ],
)
def test_serve_quota_flags(tmp_path: Path, options: tuple[str, ...], expected: dict[str, Any]) -> None:
    """GIVEN 'serve' with quota flags WHEN its quotas are read over the admin API THEN they are the flags'."""
    with served(tmp_path, *options) as url:
        quotas = get_quotas(url)

    assert quotas == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("GetImageFrame", id="no-rate"),
        pytest.param("GetFrame=10", id="unknown-operation"),
        pytest.param("GetImageFrame=0:5", id="zero-rate"),
        pytest.param("GetImageFrame=10:x", id="burst-not-an-integer"),
    ],
)
def test_serve_rejects_a_bad_quota_flag(tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN 'serve --quota' with a malformed value THEN argparse exits 2 naming the option, before serving."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(tmp_path), "--quota", value])

    assert exited.value.code == 2
    assert "--quota" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the viewer


def viewer_frames(info: ImageSetInfo) -> list[ViewerFrame]:
    return [ViewerFrame(info.datastore_id, info.image_set_id, frame_id) for frame_id in info.frame_ids]


def assert_accounted(report: ViewerReport) -> None:
    assert report.requested > 0
    assert report.requested == report.ok + report.throttled + report.other_errors


@integration
def test_viewer_over_a_small_quota_is_throttled(server: EmulatorServer, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN GetImageFrame limited to 5/s (burst 5) WHEN a viewer asks for 100 frames/s for 1 s
    THEN some of its requests are throttled, every request is accounted for, and the server counted the same
    throttles."""
    emulator.set_quota("GetImageFrame", Quota(5, 5))

    with Viewer(viewer_frames(info), rate=100, threads=4, endpoint_url=server.endpoint_url) as viewer:
        report = viewer.run(duration_s=1.0)

    assert_accounted(report)
    assert report.throttled > 0
    assert report.ok > 0
    assert 0 < report.throttled_share < 1
    assert emulator.stats()["throttled_by_quota"]["GetImageFrame"] == report.throttled


@integration
def test_viewer_without_a_quota_is_never_throttled(
    server: EmulatorServer, emulator: Emulator, info: ImageSetInfo
) -> None:
    """GIVEN GetImageFrame unlimited WHEN a viewer asks for 50 frames/s for 0.5 s THEN none is throttled and
    every one is a frame."""
    emulator.set_quota("GetImageFrame", None)

    with Viewer(viewer_frames(info), rate=50, threads=4, endpoint_url=server.endpoint_url) as viewer:
        report = viewer.run(duration_s=0.5)

    assert_accounted(report)
    assert (report.throttled, report.other_errors) == (0, 0)
    assert report.throttled_share == 0.0
    assert emulator.stats()["requests"]["GetImageFrame"] == report.requested


@integration
def test_viewer_stops_when_its_event_is_set(server: EmulatorServer, info: ImageSetInfo) -> None:
    """GIVEN a viewer with no duration WHEN its stop event is set, before the run or during it
    THEN the run returns, with nothing sent or with every request accounted for."""
    with Viewer(viewer_frames(info), rate=50, endpoint_url=server.endpoint_url) as viewer:
        already = threading.Event()
        already.set()
        nothing = viewer.run(stop=already)

        stop = threading.Event()
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        try:
            stopped = viewer.run(stop=stop)
        finally:
            timer.cancel()

    assert (nothing.requested, nothing.ok, nothing.throttled, nothing.other_errors) == (0, 0, 0, 0)
    assert_accounted(stopped)


@integration
def test_viewer_says_when_it_falls_behind(
    server: EmulatorServer, emulator: Emulator, info: ImageSetInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN every frame answered after at least 50 ms and a viewer with one thread WHEN it is asked for 40/s
    THEN requests queue behind each other (the 10th cannot start before 450 ms, 225 ms after it was due), and
    the report and the log say it fell behind."""
    emulator.add_fault(Fault("latency", operation="GetImageFrame", latency_ms=50))

    with (
        caplog.at_level(logging.WARNING, logger="ahi_emulator.viewer"),
        Viewer(viewer_frames(info), rate=40, threads=1, endpoint_url=server.endpoint_url) as viewer,
    ):
        report = viewer.run(duration_s=0.25)

    assert_accounted(report)
    assert report.fell_behind
    assert report.late > 0
    assert "fell behind" in caplog.text


@pytest.mark.parametrize(
    ("frames", "rate", "threads"),
    [
        pytest.param([], 10.0, 1, id="no-frames"),
        pytest.param([("d" * 32, "i" * 32, "f" * 32)], 0.0, 1, id="zero-rate"),
        pytest.param([("d" * 32, "i" * 32, "f" * 32)], float("inf"), 1, id="infinite-rate"),
        pytest.param([("d" * 32, "i" * 32, "f" * 32)], 10.0, 0, id="no-threads"),
    ],
)
def test_viewer_rejects_bad_settings(frames: list[tuple[str, str, str]], rate: float, threads: int) -> None:
    """GIVEN no frames, a rate that is not > 0 and finite, or no threads THEN ValueError."""
    with pytest.raises(ValueError, match=r"frame|rate|threads"):
        Viewer(frames, rate=rate, threads=threads, endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    "duration_s",
    [pytest.param(None, id="neither-duration-nor-stop"), pytest.param(0.0, id="zero-duration")],
)
def test_viewer_run_needs_an_end(duration_s: float | None) -> None:
    """GIVEN a run with no way to end, or an empty one THEN ValueError before anything is sent."""
    with (
        Viewer([("d" * 32, "i" * 32, "f" * 32)], rate=1, endpoint_url="http://127.0.0.1:9") as viewer,
        pytest.raises(ValueError, match="duration_s"),
    ):
        viewer.run(duration_s=duration_s)


def test_viewer_report_json() -> None:
    """GIVEN a report THEN its JSON has every field, the throttled share and whether it fell behind."""
    report = ViewerReport(
        requested=8,
        ok=6,
        throttled=2,
        other_errors=0,
        duration_s=2.0,
        achieved_rate=4.0,
        target_rate=4.0,
        late=0,
        max_lag_s=0.01,
    )
    empty = ViewerReport(0, 0, 0, 0, 0.0, 0.0, 4.0, 0, 0.0)

    document = json.loads(json.dumps(report.to_json()))

    assert document["throttled_share"] == 0.25
    assert document["fell_behind"] is False
    assert {"requested", "ok", "throttled", "other_errors", "duration_s", "achieved_rate"} <= set(document)
    assert empty.throttled_share == 0.0


@integration
def test_frames_from_emulator_lists_one_data_store(
    server: EmulatorServer, emulator: Emulator, info: ImageSetInfo
) -> None:
    """GIVEN two data stores WHEN frames are listed for one THEN only its frames, in order."""
    other = emulator.create_datastore()
    emulator.add_image_set(other, [InstanceSpec(frames=[np.zeros((4, 4), np.uint8)])])

    assert frames_from_emulator(server.endpoint_url, info.datastore_id) == viewer_frames(info)
    assert frames_from_emulator(server.endpoint_url, info.datastore_id, "0" * 32) == []


@integration
def test_viewer_command_prints_a_json_report(
    server: EmulatorServer, emulator: Emulator, info: ImageSetInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a server whose GetImageFrame burst is 3 WHEN 'viewer' runs at 40/s for 0.5 s
    THEN it exits 0 and prints a JSON report in which every request is accounted for and some were throttled."""
    emulator.set_quota("GetImageFrame", Quota(NEVER_REFILLS, 3))
    argv = ["viewer", "--endpoint", server.endpoint_url, "--datastore-id", info.datastore_id]

    status = main([*argv, "--rate", "40", "--duration", "0.5", "--threads", "2"])

    document = json.loads(capsys.readouterr().out)
    assert status == 0
    assert document["requested"] == document["ok"] + document["throttled"] + document["other_errors"]
    assert document["ok"] == 3
    assert document["throttled"] > 0


@integration
def test_viewer_command_without_frames_fails_cleanly(
    server: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a server with no image sets WHEN 'viewer' is pointed at it THEN exit status 2 and an error."""
    status = main(["viewer", "--endpoint", server.endpoint_url, "--datastore-id", "a" * 32, "--duration", "0.1"])

    assert status == 2
    assert "no frames" in capsys.readouterr().err
