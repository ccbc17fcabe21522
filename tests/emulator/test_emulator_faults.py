"""Request-time faults (through boto3) and stored-data faults."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import imagecodecs
import numpy as np
import pytest
from botocore.exceptions import IncompleteReadError, ResponseStreamingError

from ahi_emulator import Emulator, EmulatorServer, Fault, ImageSetInfo, InstanceSpec, NotFoundError
from ahi_emulator.faults import FaultBook
from tests.support import admin_call

FRAME = np.random.default_rng(3).integers(0, 4096, size=(48, 40)).astype(np.uint16)


@pytest.fixture
def info(emulator: Emulator, datastore_id: str) -> ImageSetInfo:
    return emulator.add_image_set(datastore_id, [InstanceSpec(frames=[FRAME, FRAME[::-1].copy()])])


def get_frame(client: Any, info: ImageSetInfo, index: int = 0) -> bytes:
    response = client.get_image_frame(
        datastoreId=info.datastore_id,
        imageSetId=info.image_set_id,
        imageFrameInformation={"imageFrameId": info.frame_ids[index]},
    )
    data: bytes = response["imageFrameBlob"].read()
    return data


def get_metadata(client: Any, info: ImageSetInfo) -> bytes:
    data: bytes = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id)[
        "imageSetMetadataBlob"
    ].read()
    return data


def get_image_set(client: Any, info: ImageSetInfo) -> dict[str, Any]:
    result: dict[str, Any] = client.get_image_set(datastoreId=info.datastore_id, imageSetId=info.image_set_id)
    return result


CALLS = {"GetImageFrame": get_frame, "GetImageSetMetadata": get_metadata, "GetImageSet": get_image_set}


# ------------------------------------------------------------------------------------- request-time faults

integration = pytest.mark.integration


@integration
@pytest.mark.parametrize("operation", list(CALLS))
@pytest.mark.parametrize(
    ("kind", "exception", "status"),
    [
        pytest.param("throttle", "ThrottlingException", 429, id="throttle"),
        pytest.param("server_error", "InternalServerException", 500, id="server-error"),
        pytest.param("access_denied", "AccessDeniedException", 403, id="access-denied"),
        pytest.param("not_found", "ResourceNotFoundException", 404, id="not-found"),
    ],
)
def test_error_fault_raises_modelled_exception(
    client: Any, emulator: Emulator, info: ImageSetInfo, operation: str, kind: str, exception: str, status: int
) -> None:
    """GIVEN a one-shot error fault on an operation WHEN boto3 calls it (no retries)
    THEN the modelled exception class is raised once, the next call succeeds, and the counters show it."""
    emulator.add_fault(Fault(kind, operation=operation, count=1))

    with pytest.raises(getattr(client.exceptions, exception)) as caught:
        CALLS[operation](client, info)
    CALLS[operation](client, info)

    assert caught.value.response["Error"]["Code"] == exception
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    stats = emulator.stats()
    assert stats["requests"][operation] == 2
    assert stats["faults_fired_by_kind"][kind] == 1
    assert stats["faults_fired"] == 1
    assert stats["responses"] == {str(status): 1, "200": 1}


@integration
def test_throttling_is_retried_by_default_config(make_client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN two throttles WHEN a client with botocore's default retries calls THEN it succeeds after 3 tries."""
    client = make_client(retries=True)
    emulator.add_fault(Fault("throttle", operation="GetImageFrame", count=2))

    data = get_frame(client, info)

    assert np.array_equal(imagecodecs.htj2k_decode(data), FRAME)
    assert emulator.stats()["requests"]["GetImageFrame"] == 3


@integration
def test_fault_scoped_to_frame_leaves_others_alone(client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN a not_found fault on frame 2 only WHEN both frames are fetched THEN only frame 2 fails."""
    emulator.add_fault(Fault("not_found", frame_id=info.frame_ids[1]))

    get_frame(client, info, 0)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        get_frame(client, info, 1)

    assert emulator.stats()["faults_fired_by_kind"]["not_found"] == 1


@integration
@pytest.mark.parametrize(
    ("every", "count", "expected_failures"),
    [
        pytest.param(1, None, [1, 2, 3, 4, 5, 6, 7, 8], id="every-request-forever"),
        pytest.param(1, 3, [1, 2, 3], id="first-three"),
        pytest.param(3, None, [3, 6], id="every-third"),
        pytest.param(2, 2, [2, 4], id="every-second-twice"),
    ],
)
def test_count_and_every_select_which_requests_fail(
    client: Any,
    emulator: Emulator,
    info: ImageSetInfo,
    every: int,
    count: int | None,
    expected_failures: list[int],
) -> None:
    """GIVEN a throttle fault with every/count WHEN 8 requests are made
    THEN exactly the n-th, 2n-th... matching requests fail, at most `count` of them."""
    emulator.add_fault(Fault("throttle", operation="GetImageFrame", every=every, count=count))
    failures = []

    for attempt in range(1, 9):
        try:
            get_frame(client, info)
        except client.exceptions.ThrottlingException:
            failures.append(attempt)

    assert failures == expected_failures
    assert emulator.stats()["faults_fired_by_kind"]["throttle"] == len(expected_failures)


@integration
@pytest.mark.parametrize(
    "operation", [pytest.param("GetImageFrame", id="frame"), pytest.param("GetImageSetMetadata", id="metadata")]
)
def test_truncate_body_gives_client_read_error(
    client: Any, emulator: Emulator, info: ImageSetInfo, operation: str
) -> None:
    """GIVEN a one-shot truncate_body fault WHEN the streaming body is read
    THEN botocore raises a read error (short body), and the next call on the same client works."""
    emulator.add_fault(Fault("truncate_body", operation=operation, count=1))

    with pytest.raises((IncompleteReadError, ResponseStreamingError)):
        CALLS[operation](client, info)
    complete = CALLS[operation](client, info)

    if operation == "GetImageFrame":
        np.testing.assert_array_equal(imagecodecs.htj2k_decode(complete), FRAME)
    else:
        assert json.loads(gzip.decompress(complete))["ImageSetID"] == info.image_set_id
    assert emulator.stats()["faults_fired_by_kind"]["truncate_body"] == 1


@integration
def test_latency_fault_delays_then_answers(client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN a 300 ms latency fault WHEN a frame is fetched THEN it arrives intact after >= 300 ms."""
    get_frame(client, info)  # connect first so the timing measures only the fault
    emulator.add_fault(Fault("latency", operation="GetImageFrame", latency_ms=300, count=1))

    started = time.perf_counter()
    data = get_frame(client, info)
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.3
    np.testing.assert_array_equal(imagecodecs.htj2k_decode(data), FRAME)
    assert emulator.stats()["faults_fired_by_kind"]["latency"] == 1


@integration
def test_concurrent_requests_fire_count_exactly(make_client: Any, emulator: Emulator, info: ImageSetInfo) -> None:
    """GIVEN 40 threads sharing one client and a throttle with count=25
    WHEN 400 frame requests run concurrently THEN exactly 25 are throttled and 400 counted."""
    client = make_client(max_pool_connections=40)
    emulator.add_fault(Fault("throttle", operation="GetImageFrame", count=25))

    def fetch(_: int) -> bool:
        try:
            get_frame(client, info)
        except client.exceptions.ThrottlingException:
            return False
        return True

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(fetch, range(400)))

    assert results.count(False) == 25
    stats = emulator.stats()
    assert stats["requests"]["GetImageFrame"] == 400
    assert stats["responses"] == {"200": 375, "429": 25}


@integration
def test_admin_api_configures_a_served_emulator(
    client: Any, emulator: Emulator, server: EmulatorServer, info: ImageSetInfo
) -> None:
    """GIVEN only HTTP access WHEN faults are posted, stats read, faults deleted and state reset
    THEN the emulator behaves as configured at each step."""

    def admin(method: str, path: str, body: Any = None) -> Any:
        status, payload = admin_call(server.port, method, path, body)
        assert status == 200, payload
        return payload

    admin("POST", "/_emulator/faults", [{"kind": "access_denied", "operation": "GetImageSet"}])
    with pytest.raises(client.exceptions.AccessDeniedException):
        get_image_set(client, info)
    assert admin("GET", "/_emulator/stats")["faults_fired_by_kind"]["access_denied"] == 1

    admin("DELETE", "/_emulator/faults")
    get_image_set(client, info)
    admin(
        "POST",
        "/_emulator/mutate",
        {
            "action": "remove_frame",
            "datastoreId": info.datastore_id,
            "imageSetId": info.image_set_id,
            "imageFrameId": info.frame_ids[1],
        },
    )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        get_frame(client, info, 1)
    listed = admin("GET", "/_emulator/image-sets")
    assert listed == [
        {
            "datastoreId": info.datastore_id,
            "imageSetId": info.image_set_id,
            "versionId": "1",
            "imageFrameIds": info.frame_ids,
        }
    ]

    admin("POST", "/_emulator/reset")
    assert admin("GET", "/_emulator/stats")["requests_total"] == 0
    assert emulator.faults() == []


@integration
def test_admin_rejects_invalid_fault(server: EmulatorServer, emulator: Emulator) -> None:
    """GIVEN a fault of unknown kind WHEN posted THEN 400 and no fault is added."""
    status, payload = admin_call(server.port, "POST", "/_emulator/faults", [{"kind": "throttle"}, {"kind": "explode"}])

    assert status == 400
    assert "explode" in payload["message"]
    assert emulator.faults() == []


# ------------------------------------------------------------------------------------ fault unit rules


def test_later_error_fault_is_not_consulted_once_one_fired() -> None:
    """GIVEN a throttle and then a server_error, both forever WHEN a request is checked
    THEN the throttle decides and the server_error neither matches nor fires."""
    book = FaultBook()
    book.add(Fault("latency", latency_ms=5))
    book.add(Fault("throttle"))
    book.add(Fault("server_error"))

    decision = book.check("GetImageFrame", None, None)

    assert decision.fault is not None
    assert decision.fault.kind == "throttle"
    assert decision.latency_s == pytest.approx(0.005)
    fired = {f["kind"]: (f["matched"], f["fired"]) for f in book.stats()["faults"]}
    assert fired == {"latency": (1, 1), "throttle": (1, 1), "server_error": (0, 0)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"kind": "explode"}, "unknown fault kind", id="unknown-kind"),
        pytest.param({"kind": "throttle", "operation": "PutImage"}, "unknown operation", id="unknown-operation"),
        pytest.param({"kind": "throttle", "every": 0}, "every", id="every-zero"),
        pytest.param({"kind": "throttle", "count": 0}, "count", id="count-zero"),
        pytest.param({"kind": "latency", "latency_ms": -1}, "latency_ms", id="negative-latency"),
        pytest.param({"kind": "throttle", "colour": "red"}, "unknown fault fields", id="unknown-field"),
    ],
)
def test_invalid_faults_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    """GIVEN invalid fault parameters WHEN a Fault is built from JSON THEN ValueError says why."""
    with pytest.raises(ValueError, match=message):
        Fault.from_json(kwargs)


# -------------------------------------------------------------------------------------- stored-data faults


def test_corrupt_frame_still_decodes_to_different_pixels(
    emulator: Emulator, datastore_id: str, info: ImageSetInfo
) -> None:
    """GIVEN a stored frame WHEN corrupted THEN it decodes, differs in exactly one sample,
    and no longer matches the listed checksum."""
    emulator.corrupt_frame(datastore_id, info.image_set_id, info.frame_ids[0])

    data, _ = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    decoded = imagecodecs.htj2k_decode(data)
    assert decoded.shape == FRAME.shape
    assert np.count_nonzero(decoded != FRAME) == 1
    assert zlib.crc32(np.ascontiguousarray(decoded)) != info.checksums[0]


def test_corrupt_boxed_frame_stays_boxed(emulator: Emulator, datastore_id: str) -> None:
    """GIVEN a JPH-boxed frame WHEN corrupted THEN it is still a JPH file that decodes to changed pixels."""
    rgb = np.random.default_rng(1).integers(0, 256, size=(16, 12, 3)).astype(np.uint8)
    boxed = emulator.add_image_set(datastore_id, [InstanceSpec(frames=[rgb], boxed=True)])

    emulator.corrupt_frame(datastore_id, boxed.image_set_id, boxed.frame_ids[0])

    data, _ = emulator.frame(datastore_id, boxed.image_set_id, boxed.frame_ids[0])
    assert data.startswith(b"\x00\x00\x00\x0cjP  ")
    assert np.count_nonzero(imagecodecs.htj2k_decode(data, planar=False) != rgb) == 1


@pytest.mark.parametrize(
    ("keep_bytes", "expected"),
    [pytest.param(None, "half", id="default-half"), pytest.param(10, 10, id="keep-10")],
)
def test_truncate_frame_shortens_stored_bytes(
    emulator: Emulator, datastore_id: str, info: ImageSetInfo, keep_bytes: int | None, expected: Any
) -> None:
    """GIVEN a stored frame WHEN truncated THEN the stored bytes are the original's prefix of that length."""
    original, _ = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])

    emulator.truncate_frame(datastore_id, info.image_set_id, info.frame_ids[0], keep_bytes=keep_bytes)

    data, _ = emulator.frame(datastore_id, info.image_set_id, info.frame_ids[0])
    assert data == original[: len(original) // 2 if expected == "half" else expected]


def test_truncate_frame_rejects_growing(emulator: Emulator, datastore_id: str, info: ImageSetInfo) -> None:
    """GIVEN keep_bytes beyond the frame WHEN truncating THEN ValueError."""
    with pytest.raises(ValueError, match="keep_bytes"):
        emulator.truncate_frame(datastore_id, info.image_set_id, info.frame_ids[0], keep_bytes=10**9)


def test_set_checksum_changes_only_full_resolution(emulator: Emulator, datastore_id: str, info: ImageSetInfo) -> None:
    """GIVEN a frame WHEN set_checksum is applied THEN its last entry changes and the others stay."""
    before = emulator.metadata(datastore_id, info.image_set_id)

    emulator.set_checksum(datastore_id, info.image_set_id, info.frame_ids[1], 4294967295)

    after = emulator.metadata(datastore_id, info.image_set_id)
    frames_before = next(iter(next(iter(before["Study"]["Series"].values()))["Instances"].values()))["ImageFrames"]
    frames_after = next(iter(next(iter(after["Study"]["Series"].values()))["Instances"].values()))["ImageFrames"]
    levels_before = frames_before[1]["PixelDataChecksumFromBaseToFullResolution"]
    levels_after = frames_after[1]["PixelDataChecksumFromBaseToFullResolution"]
    assert levels_after[-1]["Checksum"] == 4294967295
    assert levels_after[:-1] == levels_before[:-1]
    assert frames_after[0] == frames_before[0]
    assert emulator.image_sets()[0].checksums == [info.checksums[0], 4294967295]


def test_set_checksum_unknown_frame(emulator: Emulator, datastore_id: str, info: ImageSetInfo) -> None:
    """GIVEN a frame ID not in the metadata WHEN set_checksum is applied THEN NotFoundError."""
    with pytest.raises(NotFoundError):
        emulator.set_checksum(datastore_id, info.image_set_id, "f" * 32, 1)


@integration
def test_removed_frame_is_listed_but_not_served(
    client: Any, emulator: Emulator, datastore_id: str, info: ImageSetInfo
) -> None:
    """GIVEN a removed frame WHEN fetched over HTTP THEN 404 ResourceNotFoundException,
    while the metadata still lists it."""
    emulator.remove_frame(datastore_id, info.image_set_id, info.frame_ids[0])

    with pytest.raises(client.exceptions.ResourceNotFoundException):
        get_frame(client, info, 0)
    assert emulator.image_sets()[0].frame_ids == info.frame_ids
    assert json.loads(gzip.decompress(get_metadata(client, info)))["ImageSetID"] == info.image_set_id
