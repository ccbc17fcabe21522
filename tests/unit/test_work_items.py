"""Work items: the SQS message per image set (or frame range), and how image sets are cut into ranges."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ahi_verify.work_items import WorkItem, WorkItemError, frame_ranges

DS, JOB = "12345678901234567890123456789012", "09876543210987654321098765432109"
ISET = "12345612345612345678907890789012"

ids = st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=32, max_size=32)
job_ids = st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=32)


def body(**changes: Any) -> str:
    """A valid message body with some fields changed; a value of ... removes the field."""
    doc: dict[str, Any] = {
        "v": 1,
        "jobId": JOB,
        "datastoreId": DS,
        "imageSetId": ISET,
        "version": 3,
        "frames": [0, 500],
        "itemId": f"{ISET}-0-500",
    }
    for name, value in changes.items():
        if value is ...:
            doc.pop(name)
        else:
            doc[name] = value
    return json.dumps(doc)


# --- the message -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(WorkItem(JOB, DS, ISET), id="whole-image-set"),
        pytest.param(WorkItem(JOB, DS, ISET, version=1), id="pinned-version"),
        pytest.param(WorkItem(JOB, DS, ISET, version=7, frames=(2000, 4000)), id="frame-range"),
        pytest.param(WorkItem("7", DS, ISET, frames=(0, 1)), id="short-job-id-one-frame"),
    ],
)
def test_work_item_round_trips_through_json(item: WorkItem) -> None:
    # WHEN an item is sent and received
    received = WorkItem.from_json(item.to_json())
    # THEN it is the same item
    assert received == item
    assert received.item_id == item.item_id


def test_message_body_is_compact_and_complete() -> None:
    item = WorkItem(JOB, DS, ISET, version=2, frames=(10, 20))
    assert item.to_json() == (
        f'{{"v":1,"jobId":"{JOB}","datastoreId":"{DS}","imageSetId":"{ISET}",'
        f'"version":2,"frames":[10,20],"itemId":"{ISET}-10-20"}}'
    )


def test_whole_image_set_message_has_null_version_and_frames() -> None:
    doc = json.loads(WorkItem(JOB, DS, ISET).to_json())
    assert (doc["version"], doc["frames"], doc["itemId"]) == (None, None, ISET)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(WorkItem(JOB, DS, ISET), ISET, id="whole-image-set-is-its-id"),
        pytest.param(WorkItem(JOB, DS, ISET, frames=(0, 3)), f"{ISET}-0-3", id="range"),
        pytest.param(WorkItem(JOB, DS, ISET, version=9, frames=(0, 3)), f"{ISET}-0-3", id="version-not-part-of-id"),
    ],
)
def test_item_id(item: WorkItem, expected: str) -> None:
    assert item.item_id == expected


def test_item_id_is_deterministic_across_redelivery() -> None:
    # GIVEN the same item built twice (a re-sent split) and once parsed from a message
    first = WorkItem(JOB, DS, ISET, 1).with_frames(3, 6)
    again = WorkItem(JOB, DS, ISET, 1).with_frames(3, 6)
    parsed = WorkItem.from_json(first.to_json())
    # THEN all have the same ID, and other ranges have other IDs
    assert first.item_id == again.item_id == parsed.item_id == f"{ISET}-3-6"
    assert first.with_frames(6, 9).item_id != first.item_id


def test_with_frames_keeps_everything_but_the_range() -> None:
    item = WorkItem(JOB, DS, ISET, version=4)
    assert item.with_frames(5, 8) == WorkItem(JOB, DS, ISET, 4, (5, 8))
    assert item.frames is None  # the original is unchanged


def test_item_id_field_in_the_message_is_recomputed_not_trusted() -> None:
    item = WorkItem.from_json(body(itemId="something-else"))
    assert item.item_id == f"{ISET}-0-500"


@given(job_id=job_ids, datastore_id=ids, image_set_id=ids, version=st.none() | st.integers(1, 2**40), data=st.data())
def test_any_valid_item_round_trips(
    job_id: str, datastore_id: str, image_set_id: str, version: int | None, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, 10**6))
    frames = data.draw(st.none() | st.tuples(st.just(start), st.integers(start + 1, start + 10**6)))
    item = WorkItem(job_id, datastore_id, image_set_id, version, frames)
    assert WorkItem.from_json(item.to_json()) == item


# --- invalid messages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not json", "work item is not JSON", id="not-json"),
        pytest.param("", "work item is not JSON", id="empty-body"),
        pytest.param("[1]", "not a version-1 object", id="list"),
        pytest.param("null", "not a version-1 object", id="null"),
        pytest.param(body(v=...), "not a version-1 object", id="no-version-field"),
        pytest.param(body(v=2), "not a version-1 object", id="future-schema"),
        pytest.param(body(v="1"), "not a version-1 object", id="schema-as-string"),
    ],
)
def test_unreadable_message_is_rejected(text: str, message: str) -> None:
    with pytest.raises(WorkItemError, match=message):
        WorkItem.from_json(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"jobId": ...}, "jobId is missing or malformed", id="job-id-missing"),
        pytest.param({"jobId": ""}, "jobId is missing or malformed", id="job-id-empty"),
        pytest.param({"jobId": "J" + JOB[1:]}, "jobId is missing or malformed", id="job-id-upper-case"),
        pytest.param({"jobId": JOB + "0"}, "jobId is missing or malformed", id="job-id-33-chars"),
        pytest.param({"jobId": 123}, "jobId is missing or malformed", id="job-id-number"),
        pytest.param({"datastoreId": ...}, "datastoreId is missing or malformed", id="datastore-id-missing"),
        pytest.param({"datastoreId": DS[:31]}, "datastoreId is missing or malformed", id="datastore-id-short"),
        pytest.param({"imageSetId": None}, "imageSetId is missing or malformed", id="image-set-id-null"),
        pytest.param({"imageSetId": ISET + "0"}, "imageSetId is missing or malformed", id="image-set-id-long"),
        pytest.param({"imageSetId": "../" + ISET[3:]}, "imageSetId is missing or malformed", id="image-set-id-path"),
        pytest.param({"version": 0}, "version must be a positive integer", id="version-zero"),
        pytest.param({"version": -1}, "version must be a positive integer", id="version-negative"),
        pytest.param({"version": "3"}, "version must be a positive integer", id="version-string"),
        pytest.param({"version": 1.0}, "version must be a positive integer", id="version-float"),
        pytest.param({"version": True}, "version must be a positive integer", id="version-bool-as-int"),
        pytest.param({"frames": [True, 5]}, r"frames must be \[start, end\)", id="frames-bool-start"),
        pytest.param({"frames": [0, True]}, r"frames must be \[start, end\)", id="frames-bool-end"),
        pytest.param({"frames": [3, 3]}, r"frames must be \[start, end\)", id="frames-empty-range"),
        pytest.param({"frames": [0, 0]}, r"frames must be \[start, end\)", id="frames-zero-zero"),
        pytest.param({"frames": [5, 3]}, r"frames must be \[start, end\)", id="frames-reversed"),
        pytest.param({"frames": [-1, 3]}, r"frames must be \[start, end\)", id="frames-negative-start"),
        pytest.param({"frames": [0]}, r"frames must be \[start, end\)", id="frames-one-value"),
        pytest.param({"frames": [0, 1, 2]}, r"frames must be \[start, end\)", id="frames-three-values"),
        pytest.param({"frames": [0.0, 3]}, r"frames must be \[start, end\)", id="frames-float"),
        pytest.param({"frames": {"start": 0, "end": 3}}, r"frames must be \[start, end\)", id="frames-object"),
        pytest.param({"frames": "0-3"}, r"frames must be \[start, end\)", id="frames-string"),
    ],
)
def test_malformed_field_is_named(changes: dict[str, Any], message: str) -> None:
    # GIVEN a message with one bad field
    text = body(**changes)
    # WHEN it is parsed THEN the error names that field (the message belongs in the DLQ)
    with pytest.raises(WorkItemError, match=message):
        WorkItem.from_json(text)


@pytest.mark.parametrize("field", ["jobId", "datastoreId", "imageSetId"])
def test_id_with_a_trailing_newline_is_rejected(field: str) -> None:
    # GIVEN an otherwise valid ID followed by a newline
    value = {"jobId": JOB, "datastoreId": DS, "imageSetId": ISET}[field] + "\n"
    # WHEN it is parsed THEN the field is named as malformed
    with pytest.raises(WorkItemError, match=f"{field} is missing or malformed"):
        WorkItem.from_json(body(**{field: value}))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"version": None}, WorkItem(JOB, DS, ISET, None, (0, 500)), id="version-null"),
        pytest.param({"version": ...}, WorkItem(JOB, DS, ISET, None, (0, 500)), id="version-absent"),
        pytest.param({"frames": None}, WorkItem(JOB, DS, ISET, 3, None), id="frames-null"),
        pytest.param({"frames": ..., "itemId": ...}, WorkItem(JOB, DS, ISET, 3, None), id="frames-and-item-absent"),
        pytest.param({"extra": "ignored"}, WorkItem(JOB, DS, ISET, 3, (0, 500)), id="unknown-field-ignored"),
    ],
)
def test_optional_fields(changes: dict[str, Any], expected: WorkItem) -> None:
    assert WorkItem.from_json(body(**changes)) == expected


@pytest.mark.parametrize("schema", [pytest.param(True, id="bool"), pytest.param(1.0, id="float")])
def test_schema_version_must_be_the_integer_one(schema: object) -> None:
    with pytest.raises(WorkItemError, match="not a version-1 object"):
        WorkItem.from_json(body(v=schema))


# --- frame ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "per_item", "expected"),
    [
        pytest.param(7, 3, [(0, 3), (3, 6), (6, 7)], id="7-by-3"),
        pytest.param(6, 3, [(0, 3), (3, 6)], id="exact-multiple"),
        pytest.param(1, 3, [(0, 1)], id="one-frame"),
        pytest.param(3, 1, [(0, 1), (1, 2), (2, 3)], id="one-per-item"),
        pytest.param(2464, 2000, [(0, 2000), (2000, 2464)], id="ct-series"),
        pytest.param(5, 100, [(0, 5)], id="fits-in-one"),
    ],
)
def test_frame_ranges(total: int, per_item: int, expected: list[tuple[int, int]]) -> None:
    assert frame_ranges(total, per_item) == expected


@given(total=st.integers(0, 50), per_item=st.integers(1, 10))
@example(total=0, per_item=3)  # an image set with no frames
def test_every_range_can_be_carried_by_a_work_item(total: int, per_item: int) -> None:
    # GIVEN the ranges an image set is cut into
    # WHEN each is sent as a work item THEN each can be received again
    item = WorkItem(JOB, DS, ISET)
    for start, end in frame_ranges(total, per_item):
        ranged = item.with_frames(start, end)
        assert WorkItem.from_json(ranged.to_json()) == ranged


@pytest.mark.parametrize("per_item", [0, -1])
def test_per_item_below_one_is_rejected(per_item: int) -> None:
    with pytest.raises(ValueError, match="per_item must be at least 1"):
        frame_ranges(10, per_item)


@given(total=st.integers(1, 5000), per_item=st.integers(1, 600))
def test_ranges_cover_every_frame_exactly_once(total: int, per_item: int) -> None:
    # WHEN an image set is cut into ranges
    ranges = frame_ranges(total, per_item)
    # THEN the ranges are contiguous, non-empty, at most per_item long, and cover [0, total) exactly once
    covered = [i for start, end in ranges for i in range(start, end)]
    assert covered == list(range(total))
    assert all(0 < end - start <= per_item for start, end in ranges)
    assert len(ranges) == -(-total // per_item)
    # AND only the last range may be short
    assert all(end - start == per_item for start, end in ranges[:-1])
