"""The fuzz targets, their invariants and seed inputs, shared by the hypothesis tests and ``bench/fuzz.py``.

Each target takes one input and returns an outcome label (``"ok:<Result>"`` or ``"err:<CleanError>"``). It
raises :class:`InvariantError` when a result breaks the contract, and lets any other exception escape:
escaping is the crash the fuzzers look for. :func:`known_bug` recognises the crashes already reported (each
one is pinned by a regression test in ``test_known_bugs.py``), so the property tests stay green and keep
looking for new ones; when a bug is fixed, its xfail test turns XPASS and fails, and its entry here goes.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from ahi_emulator.codec import box_jph
from ahi_verify.app.events import EventError, JobRef, Reconcile, parse_trigger_event
from ahi_verify.frame_check import check_frame
from ahi_verify.job_output import (
    ImportLine,
    JobManifest,
    LineKind,
    LineProblem,
    ManifestError,
    parse_line,
    parse_manifest,
)
from ahi_verify.metadata import (
    FrameRef,
    ImageSetFrames,
    MetadataError,
    ResolutionChecksum,
    decode_metadata_blob,
    parse_image_set_metadata,
)
from ahi_verify.outcomes import Status
from ahi_verify.ports import FetchedFrame
from ahi_verify.report import FrameResult
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL, HTJ2K_RETAINED, JPEG2000_RETAINED, Rule
from ahi_verify.work_items import WorkItem, WorkItemError
from tests.support import REPO, SHARED_FIXTURES

#: Examples per hypothesis property. Unset: a small, derandomized budget (CI, `make test`); set: random search.
FUZZ_EXAMPLES = int(os.environ.get("AHI_FUZZ_EXAMPLES", "200"))
FUZZ_RANDOM = "AHI_FUZZ_EXAMPLES" in os.environ
#: Wall-clock bound for one example; decoders run in C, so this is checked after the call (pytest-timeout and
#: libFuzzer's -timeout catch a real hang).
EXAMPLE_SECONDS = 10.0


class InvariantError(AssertionError):
    """A target returned, but what it returned breaks its contract."""


# ------------------------------------------------------------------------------------------------ known bugs
# Bug IDs, described in test_known_bugs.py. Matching is by exception type and where it escaped, so a new
# crash of the same type elsewhere is still reported.
JSON_RECURSION = "json-recursion"
JSON_INT_DIGITS = "json-int-digits"
EVENT_MISSING_FIELD = "event-missing-field"
EVENT_DETAIL_NOT_OBJECT = "event-detail-not-object"
EVENT_RECORDS_SHAPE = "event-records-shape"
SIZ_STRUCT_ERROR = "siz-struct-error"


def known_bug(exc: BaseException) -> str | None:
    """The ID of an already-reported, still-open bug this escaped exception is, or None for a new crash.

    The six bugs the fuzzers found first (JSON recursion and huge integers, events without ``detail`` or with
    malformed ``Records``, a short SIZ segment) are fixed and pinned by ``test_known_bugs.py``; none is open.
    """
    del exc
    return None


def _err(exc: BaseException) -> str:
    return f"err:{type(exc).__name__}:{re.sub(r'[0-9]+', 'N', str(exc).split(':', 1)[-1])[:40]}"


# ----------------------------------------------------------------------------------------- parsing targets
def manifest_target(raw: bytes) -> str:
    """parse_manifest: a JobManifest or ManifestError, nothing else."""
    try:
        manifest = parse_manifest(raw, "s3://bucket/job/job-output-manifest.json")
    except ManifestError as exc:
        return _err(exc)
    if not isinstance(manifest, JobManifest):
        raise InvariantError(f"parse_manifest returned {type(manifest).__name__}")
    ids = [s.image_set_id for s in manifest.image_sets]
    if len(ids) != len(set(ids)):
        raise InvariantError("image set IDs are not de-duplicated")
    return "ok:JobManifest"


def line_target(kind: LineKind, line: bytes) -> str:
    """parse_line: ImportLine, LineProblem or None; never raises."""
    parsed = parse_line(kind, line, "prefix/SUCCESS/success.ndjson", 7)
    if parsed is None:
        if line.strip():
            raise InvariantError("a non-blank line gave None")
        return "ok:None"
    if isinstance(parsed, LineProblem):
        if (parsed.kind, parsed.line_number) != (kind, 7):
            raise InvariantError("LineProblem names another file kind or line")
        return f"ok:LineProblem:{re.sub(r'[0-9]+', 'N', parsed.problem)[:40]}"
    if not isinstance(parsed, ImportLine) or parsed.kind is not kind or not parsed.input_file:
        raise InvariantError(f"parse_line returned {parsed!r}")
    if kind is not LineKind.FAILURE and not parsed.image_set_id:
        raise InvariantError("SUCCESS/WARNING line without an image set ID")
    return f"ok:ImportLine:{kind.value}"


def line_bytes_target(data: bytes) -> str:
    """line_target with the kind chosen by the first byte."""
    kinds = list(LineKind)
    return line_target(kinds[data[0] % len(kinds)] if data else LineKind.SUCCESS, data[1:])


def expected_frame_count(doc: Mapping[str, Any]) -> int:
    """How many frames a document lists: every ImageFrames entry, and a non-list ImageFrames counts as one."""
    count = 0
    for series in doc["Study"]["Series"].values():
        instances = series.get("Instances") if isinstance(series, Mapping) else None
        if not isinstance(instances, Mapping):
            continue
        for instance in instances.values():
            if isinstance(instance, Mapping) and instance.get("ImageFrames") is not None:
                frames = instance["ImageFrames"]
                count += len(frames) if isinstance(frames, list) else 1
    return count


def metadata_doc_target(doc: Mapping[str, Any]) -> str:
    """parse_image_set_metadata: MetadataError or one FrameRef per listed frame, numbered consistently."""
    try:
        parsed = parse_image_set_metadata(doc)
    except MetadataError as exc:
        return _err(exc)
    if not isinstance(parsed, ImageSetFrames):
        raise InvariantError(f"parse_image_set_metadata returned {type(parsed).__name__}")
    expected = expected_frame_count(doc)
    if len(parsed.frames) != expected:
        raise InvariantError(f"{expected} frames listed, {len(parsed.frames)} FrameRefs")
    for i, frame in enumerate(parsed.frames):
        if frame.index != i or frame.frame_number < 1:
            raise InvariantError(f"frame {i}: index {frame.index}, frame number {frame.frame_number}")
        if frame.problem is None and not frame.image_frame_id:
            raise InvariantError(f"frame {i} has no ID and no problem")
        full = frame.full_resolution
        if full is not None and not 0 <= full.checksum <= 0xFFFFFFFF:
            raise InvariantError(f"frame {i}: checksum {full.checksum} outside uint32")
    problems = sum(f.problem is not None for f in parsed.frames)
    return f"ok:frames={min(expected, 3)}+:problems={min(problems, 3)}+"


def metadata_blob_target(blob: bytes) -> str:
    """decode_metadata_blob then parse_image_set_metadata."""
    try:
        doc = decode_metadata_blob(blob)
    except MetadataError as exc:
        return _err(exc)
    if not isinstance(doc, dict):
        raise InvariantError(f"decode_metadata_blob returned {type(doc).__name__}")
    return metadata_doc_target(doc)


def event_target(event: Mapping[str, Any]) -> str:
    """parse_trigger_event: list[JobRef] | Reconcile, or EventError."""
    try:
        parsed = parse_trigger_event(event)
    except EventError as exc:
        return _err(exc)
    if isinstance(parsed, Reconcile):
        return "ok:Reconcile"
    if not isinstance(parsed, list) or not all(isinstance(ref, JobRef) for ref in parsed):
        raise InvariantError(f"parse_trigger_event returned {parsed!r}")
    for ref in parsed:
        if not re.fullmatch(r"[0-9a-z]{32}", ref.datastore_id) or not re.fullmatch(r"[0-9a-z]{1,32}", ref.job_id):
            raise InvariantError(f"malformed IDs in {ref!r}")
    return f"ok:JobRefs={min(len(parsed), 2)}"


def event_bytes_target(data: bytes) -> str:
    """event_target on the JSON object the bytes hold; other inputs are skipped (not events)."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return "skip:not-json"
    return event_target(event) if isinstance(event, dict) else "skip:not-object"


def work_item_target(body: str) -> str:
    """WorkItem.from_json: a WorkItem that round-trips, or WorkItemError."""
    try:
        item = WorkItem.from_json(body)
    except WorkItemError as exc:
        return _err(exc)
    if not isinstance(item, WorkItem) or WorkItem.from_json(item.to_json()) != item:
        raise InvariantError(f"from_json returned {item!r}, which does not round-trip")
    return f"ok:WorkItem:frames={item.frames is not None}"


def work_item_bytes_target(data: bytes) -> str:
    return work_item_target(data.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------------------------- the codec
@dataclass(frozen=True)
class FrameCase:
    """A valid frame: its original pixels, encoded bytes, and how HealthImaging would serve it."""

    pixels: npt.NDArray[Any]
    blob: bytes
    syntax: str
    content_type: str

    def ref(self) -> FrameRef:
        rows, cols = self.pixels.shape[:2]
        return FrameRef(
            index=0,
            image_frame_id="0" * 32,
            series_instance_uid="1.2",
            sop_instance_uid="1.2.3",
            frame_number=1,
            stored_transfer_syntax_uid=self.syntax,
            checksum_type=None,
            full_resolution=ResolutionChecksum(cols, rows, zlib.crc32(np.ascontiguousarray(self.pixels).tobytes())),
        )


ENCODINGS = ("htj2k", "jph", "htj2k-retained", "j2k")


def encode_case(pixels: npt.NDArray[Any], encoding: str) -> FrameCase:
    """A lossless frame as HealthImaging serves it: bare or JPH-boxed HTJ2K (.202), retained HTJ2K, classic J2K."""
    if encoding == "j2k":
        return FrameCase(pixels, bytes(imagecodecs.jpeg2k_encode(pixels, level=0)), JPEG2000_RETAINED, "image/j2c")
    ht = bytes(imagecodecs.htj2k_encode(pixels, reversible=True))
    if encoding == "jph":
        return FrameCase(pixels, box_jph(ht), HTJ2K_LOSSLESS_RPCL, "image/jph")
    if encoding == "htj2k-retained":
        return FrameCase(pixels, ht, HTJ2K_RETAINED, "image/jphc")
    return FrameCase(pixels, ht, HTJ2K_LOSSLESS_RPCL, "image/jph")


def seed_cases() -> list[FrameCase]:
    """Every dtype x samples x encoding, small random pixels (fixed seed)."""
    rng = np.random.default_rng(20260314)
    cases = []
    for dtype in (np.uint8, np.int8, np.uint16, np.int16):
        for shape in ((6, 9), (5, 4, 3)):
            info = np.iinfo(dtype)
            pixels = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
            cases.extend(encode_case(pixels, encoding) for encoding in ENCODINGS)
    return cases


def redecode(blob: bytes, rule: Rule | None) -> npt.NDArray[Any] | None:
    """Decode with the decoder a result names; None when it refuses the stream."""
    try:
        if rule is Rule.DECODED_HTJ2K:
            return np.asarray(imagecodecs.htj2k_decode(blob, planar=False))
        if rule is Rule.DECODED_J2K:
            return np.asarray(imagecodecs.jpeg2k_decode(blob, planar=False))
    except Exception:
        return None
    return None


MATCH_ALTERED = "MATCH for a stream that does not decode to the original pixels"


def frame_target(case: FrameCase, blob: bytes) -> str:
    """check_frame on a (mutated) blob whose metadata checksum is the original pixels' CRC.

    MATCH although the stream decodes (with the decoder the result names) to other pixels, and any result
    that is not a FrameResult, raise InvariantError.
    """
    result = check_frame(case.ref(), FetchedFrame(blob, case.content_type))
    if not isinstance(result, FrameResult):
        raise InvariantError(f"check_frame returned {type(result).__name__}")
    if result.status is Status.MATCH:
        decoded = redecode(blob, result.rule)
        same = decoded is not None and decoded.shape == case.pixels.shape and np.array_equal(decoded, case.pixels)
        if not same:
            raise InvariantError(f"{MATCH_ALTERED} ({result.rule}): {blob.hex()}")
    label = result.reason.value if result.reason else (result.rule.value if result.rule else "")
    return f"ok:{result.status.value}:{label}"


def mutate(blob: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Apply (op, position, value) edits: 0 flip a bit, 1 insert a byte, 2 delete a run, 3 truncate, 4 set a byte."""
    data = bytearray(blob)
    for op, position, value in ops:
        pos = position % (len(data) + 1)
        if op == 0 and pos < len(data):
            data[pos] ^= 1 << (value % 8)
        elif op == 1:
            data[pos:pos] = bytes([value % 256])
        elif op == 2:
            del data[pos : pos + 1 + value % 8]
        elif op == 3:
            del data[pos:]
        elif op == 4 and pos < len(data):
            data[pos] = value % 256
    return bytes(data)


# ------------------------------------------------------------------------------------------- seed inputs
EVENTS_DIR = REPO / "events"
MANIFEST_SEED = {
    "jobSummary": {
        "jobId": "09876543210987654321098765432109",
        "datastoreId": "12345678901234567890123456789012",
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "outputS3Uri": "s3://medical-imaging-output/job_output/"
        "12345678901234567890123456789012-DicomImport-09876543210987654321098765432109/",
        "successOutputS3Uri": "s3://medical-imaging-output/job_output/x/SUCCESS/",
        "failureOutputS3Uri": "s3://medical-imaging-output/job_output/x/FAILURE/",
        "warningsOutputS3Uri": "s3://medical-imaging-output/job_output/x/WARNING/",
        "numberOfScannedFiles": 5,
        "numberOfImportedFiles": 3,
        "numberOfFilesWithCustomerError": 2,
        "numberOfFilesWithServerError": 0,
        "numberOfGeneratedImageSets": 2,
        "imageSetsSummary": [
            {
                "imageSetId": "12345612345612345678907890789012",
                "imageSetVersion": 1,
                "isPrimary": True,
                "numberOfMatchedSOPInstances": 2,
            },
            {"imageSetId": "12345612345612345678917891789012", "numberOfMatchedSOPInstances": 1},
            {"imageSetId": "12345612345612345678917891789012", "numberOfMatchedSOPInstances": 1},
        ],
    }
}
LINE_SEEDS: list[tuple[LineKind, bytes]] = [
    (
        LineKind.SUCCESS,
        b'{"inputFile":"dicom_input/1.3.51.5145.5142.20010109.1105620.1.0.1.dcm",'
        b'"importResponse":{"imageSetId":"12345612345612345678907890789012","isPrimary":true}}',
    ),
    (
        LineKind.FAILURE,
        b'{"inputFile":"dicom_input/invalidDicomFile1.dcm","exception":{"exceptionType":"ValidationException",'
        b'"message":"DICOM attribute TransferSyntaxUID does not exist"}}',
    ),
    (
        LineKind.WARNING,
        b'{"inputFile":"dicom_input/warningDicomFile1.dcm","importResponse":{"imageSetId":'
        b'"12345612345612345678907890789012","imageSetVersion":1,"isPrimary":true,"warnings":[{"warning_reason_code":'
        b'45330,"type":"InvalidOffsetTable","message":"The file was imported but contains an invalid offset table"}]}}',
    ),
]
WORK_ITEM_SEEDS = [
    WorkItem("e8b2c5f1a9d34b7c86f0e2d4a6b8c0d1", "4c1d7e9a2b3f4a5c8d6e0f1a2b3c4d5e", "a" * 32).to_json(),
    WorkItem("e8b2c5f1", "4c1d7e9a2b3f4a5c8d6e0f1a2b3c4d5e", "b" * 32, 3, (0, 64)).to_json(),
]


def event_seeds() -> list[dict[str, Any]]:
    """The sample events of ``events/``."""
    return [json.loads(p.read_text()) for p in sorted(EVENTS_DIR.glob("*.json"))]


def metadata_seeds(max_instances: int = 4) -> list[dict[str, Any]]:
    """The shared fixtures' documents, each cut to its first ``max_instances`` instances per series."""
    docs = []
    for path in sorted(SHARED_FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for series in doc["Study"]["Series"].values():
            series["Instances"] = dict(list(series["Instances"].items())[:max_instances])
        docs.append(doc)
    return docs


def metadata_blob_seeds() -> list[bytes]:
    docs = metadata_seeds()
    return [json.dumps(d).encode() for d in docs] + [gzip.compress(json.dumps(docs[-1]).encode())]


def shared_fixtures_present() -> bool:
    return Path(SHARED_FIXTURES).is_dir()


def guarded(target: Any, *args: Any) -> str:
    """Run a target; a known bug becomes its outcome label, any other escape propagates."""
    try:
        return str(target(*args))
    except InvariantError:
        raise
    except Exception as exc:
        bug = known_bug(exc)
        if bug is None:
            raise
        return f"known:{bug}"
