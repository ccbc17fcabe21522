"""Crashes the fuzzers found, one minimal input each.

Each test asserts the contract and is a strict xfail limited to the exception the bug raises: when the bug is
fixed the test passes (XPASS fails the run), so drop its xfail and the bug's entry in ``targets.known_bug``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ahi_verify.app.events import EventError, parse_trigger_event
from ahi_verify.frame_check import check_frame
from ahi_verify.job_output import LineKind, LineProblem, ManifestError, parse_line, parse_manifest
from ahi_verify.metadata import MetadataError, decode_metadata_blob
from ahi_verify.ports import FetchedFrame
from ahi_verify.report import FrameResult
from ahi_verify.work_items import WorkItem, WorkItemError
from tests.fuzz.targets import encode_case

DEEP = b"[" * 100_000  # nesting deeper than the interpreter's recursion limit: RecursionError from json
BIG_INT = b'{"v": 1' + b"0" * 4300 + b"}"  # more digits than int() accepts (4300): plain ValueError from json
JSON_LIMITS = [pytest.param(DEEP, id="deep-nesting"), pytest.param(BIG_INT, id="int-over-4300-digits")]
JSON_ESCAPES = (RecursionError, ValueError)


@pytest.mark.parametrize("raw", JSON_LIMITS)
def test_manifest_json_limits_raise_manifest_error(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw, "s3://b/k")


@pytest.mark.parametrize("raw", JSON_LIMITS)
def test_ndjson_json_limits_give_line_problem(raw: bytes) -> None:
    assert isinstance(parse_line(LineKind.SUCCESS, raw, "k", 1), LineProblem)


@pytest.mark.parametrize("raw", JSON_LIMITS)
def test_metadata_json_limits_raise_metadata_error(raw: bytes) -> None:
    with pytest.raises(MetadataError):
        decode_metadata_blob(raw)


@pytest.mark.parametrize("raw", JSON_LIMITS)
def test_work_item_json_limits_raise_work_item_error(raw: bytes) -> None:
    with pytest.raises(WorkItemError):
        WorkItem.from_json(raw.decode())


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"source": "aws.s3", "detail-type": "Object Created"}, id="s3-object-created"),
        pytest.param({"source": "aws.medical-imaging", "detail-type": "Import Job Completed"}, id="import-job"),
    ],
)
def test_eventbridge_event_without_detail_raises_event_error(event: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        parse_trigger_event(event)


@pytest.mark.parametrize("detail", ["x", [], None, 1])
def test_import_job_event_with_non_object_detail_raises_event_error(detail: Any) -> None:
    with pytest.raises(EventError):
        parse_trigger_event({"source": "aws.medical-imaging", "detail-type": "Import Job Completed", "detail": detail})


@pytest.mark.parametrize(
    "records",
    [
        pytest.param({"a": 1}, id="records-object"),  # KeyError 0 at raw_records[i] (line 88)
        pytest.param("abc", id="records-string"),  # AttributeError 'str'.get (line 89)
        pytest.param([1], id="record-not-object"),  # AttributeError 'int'.get (line 89)
        pytest.param([{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}], id="record-without-s3"),
        pytest.param(
            [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}],
            id="record-without-object",
        ),
    ],
)
def test_s3_event_with_malformed_records_raises_event_error(records: Any) -> None:
    with pytest.raises(EventError):
        parse_trigger_event({"Records": records})


def test_short_siz_segment_gives_a_frame_result() -> None:
    # SOC, SIZ with Lsiz=0 passes "pos + 2 + lsiz > size" (4 <= 6); the 18-byte unpack then reads past the end.
    frame = encode_case(np.zeros((2, 2), np.uint8), "htj2k").ref()
    assert isinstance(check_frame(frame, FetchedFrame(b"\xff\x4f\xff\x51\x00\x00", "image/jph")), FrameResult)
