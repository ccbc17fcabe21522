"""One frame's verdict: which rules apply to which stored syntax, and what no match means."""

from __future__ import annotations

import zlib
from dataclasses import replace

import imagecodecs
import numpy as np
import pytest

from ahi_verify.frame_check import check_frame, precheck_frame
from ahi_verify.metadata import FrameRef, ResolutionChecksum
from ahi_verify.outcomes import Reason, Status
from ahi_verify.ports import FetchedFrame
from ahi_verify.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_RETAINED,
    JPEG2000_LOSSLESS,
    JPEG2000_RETAINED,
    JPEG_BASELINE,
    Rule,
)

PIXELS = (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) * 37 % 4096 - 2048).astype(np.int16)
HT = bytes(imagecodecs.htj2k_encode(PIXELS, reversible=True))
IFRC = zlib.crc32(PIXELS.tobytes())


def frame(checksum: int | None = IFRC, syntax: str = HTJ2K_LOSSLESS_RPCL, **kw: object) -> FrameRef:
    full = ResolutionChecksum(32, 32, checksum) if checksum is not None else None
    return FrameRef(
        index=0,
        image_frame_id="f" * 32,
        series_instance_uid="1.2",
        sop_instance_uid="1.2.3",
        frame_number=1,
        stored_transfer_syntax_uid=syntax,
        checksum_type=None,
        full_resolution=full,
        **kw,  # type: ignore[arg-type]
    )


def test_htj2k_frame_with_the_right_checksum_matches() -> None:
    result = check_frame(frame(), FetchedFrame(HT, "image/jph"))
    assert (result.status, result.rule, result.actual, result.reason) == (Status.MATCH, Rule.DECODED_HTJ2K, IFRC, None)


def test_htj2k_frame_with_other_pixels_is_a_mismatch() -> None:
    result = check_frame(frame(checksum=IFRC ^ 1), FetchedFrame(HT, "image/jph"))
    assert (result.status, result.reason, result.expected, result.actual) == (
        Status.MISMATCH,
        Reason.CHECKSUM_DIFFERS,
        IFRC ^ 1,
        IFRC,
    )


def test_raw_bytes_never_match_an_htj2k_frame() -> None:
    # GIVEN metadata whose checksum is the CRC of the encoded bytes, not the pixels
    result = check_frame(frame(checksum=zlib.crc32(HT)), FetchedFrame(HT, "image/jph"))
    # THEN HealthImaging's own HTJ2K is judged only by the decoded rule
    assert result.status is Status.MISMATCH


def test_truncated_htj2k_is_an_error_with_its_own_reason() -> None:
    result = check_frame(frame(), FetchedFrame(HT[: len(HT) // 2], "image/jph"))
    assert (result.status, result.reason) == (Status.ERROR, Reason.TRUNCATED)


def test_undecodable_htj2k_is_a_decode_error() -> None:
    result = check_frame(frame(), FetchedFrame(b"\xff\x4f\xff\x51" + b"\x00" * 60, "image/jph"))
    assert result.status is Status.ERROR
    assert result.reason in (Reason.DECODE_FAILED, Reason.TRUNCATED)


@pytest.mark.parametrize(
    ("syntax", "content_type", "blob", "checksum", "status", "rule"),
    [
        pytest.param(JPEG_BASELINE, "image/jpeg", b"\xff\xd8jpeg", zlib.crc32(b"\xff\xd8jpeg"), Status.MATCH,
                     Rule.RAW_BYTES, id="jpeg-raw-match"),
        pytest.param(EXPLICIT_VR_LITTLE_ENDIAN, "application/octet-stream", b"\x01\x00" * 8,
                     zlib.crc32(b"\x01\x00" * 8), Status.MATCH, Rule.RAW_BYTES, id="binary-seg-raw-match"),
        pytest.param(HTJ2K_RETAINED, "image/jphc", HT, zlib.crc32(HT), Status.MATCH, Rule.RAW_BYTES,
                     id="retained-htj2k-raw-match"),
        pytest.param(HTJ2K_RETAINED, "image/jphc", HT, IFRC, Status.MATCH, Rule.DECODED_HTJ2K,
                     id="retained-htj2k-decoded-match"),
        pytest.param(JPEG2000_RETAINED, "image/j2c", HT, IFRC, Status.MATCH, Rule.DECODED_J2K,
                     id="retained-j2k-decoded-match"),
        pytest.param(HTJ2K_RETAINED, "image/jphc", HT, 12345, Status.ERROR, Rule.DECODED_HTJ2K,
                     id="retained-htj2k-no-rule"),
        pytest.param(JPEG_BASELINE, "image/jpeg", b"\xff\xd8jpeg", 12345, Status.ERROR, Rule.RAW_BYTES,
                     id="jpeg-no-rule"),
    ],
)  # fmt: skip
def test_retained_syntaxes_try_raw_then_decoded_and_are_never_mismatch(
    syntax: str, content_type: str, blob: bytes, checksum: int, status: Status, rule: Rule
) -> None:
    result = check_frame(frame(checksum=checksum, syntax=syntax), FetchedFrame(blob, content_type))
    assert (result.status, result.rule) == (status, rule)
    if status is Status.ERROR:
        assert result.reason is Reason.NO_RULE_MATCHED
        assert "does not document" in (result.detail or "")


def test_no_checksum_is_an_error_decided_before_any_fetch() -> None:
    result = precheck_frame(frame(checksum=None))
    assert result is not None
    assert (result.status, result.reason) == (Status.ERROR, Reason.NO_CHECKSUM)


def test_malformed_entry_is_an_error_decided_before_any_fetch() -> None:
    result = precheck_frame(frame(problem="ImageFrames[0].ID is missing"))
    assert result is not None
    assert (result.status, result.reason) == (Status.ERROR, Reason.METADATA_INVALID)


def test_unknown_stored_syntax_is_unsupported() -> None:
    result = precheck_frame(frame(syntax="1.2.3.4.5"))
    assert result is not None
    assert result.reason is Reason.UNSUPPORTED_SYNTAX


def test_htj2k_served_with_a_foreign_content_type_is_unsupported() -> None:
    result = check_frame(frame(), FetchedFrame(HT, "text/html; charset=utf-8"))
    assert (result.status, result.reason) == (Status.ERROR, Reason.UNSUPPORTED_CONTENT_TYPE)


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert check_frame(frame(), FetchedFrame(HT, "Image/JPH; foo=bar")).status is Status.MATCH


def test_unknown_checksum_type_is_unverified_unless_a_rule_matches() -> None:
    odd = replace(frame(checksum=IFRC ^ 1), checksum_type="SOMETHING_NEW")
    result = check_frame(odd, FetchedFrame(HT, "image/jph"))
    assert (result.status, result.reason) == (Status.ERROR, Reason.UNKNOWN_CHECKSUM_TYPE)
    matched = check_frame(replace(odd, full_resolution=ResolutionChecksum(32, 32, IFRC)), FetchedFrame(HT, "image/jph"))
    assert matched.status is Status.MATCH
    assert "undocumented" in (matched.detail or "")


def test_dimension_disagreement_is_noted_without_changing_the_verdict() -> None:
    result = check_frame(frame(rows=64, columns=64), FetchedFrame(HT, "image/jph"))
    assert result.status is Status.MATCH
    assert "Columns x Rows 64x64" in (result.detail or "")


def test_json_shape_is_the_cli_contract() -> None:
    doc = check_frame(frame(), FetchedFrame(HT, "image/jph")).to_json()
    assert set(doc) >= {"imageFrameId", "seriesInstanceUID", "sopInstanceUID", "frameNumber", "status", "expected",
                        "actual", "rule", "reason"}  # fmt: skip
    assert doc["status"] == "MATCH"
    assert doc["rule"] == "decoded-htj2k"


@pytest.mark.parametrize(
    "syntax",
    [EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2"],
    ids=["explicit-le-blob", "implicit-le-blob"],
)
def test_float_pixel_data_kept_as_original_is_unverified_with_its_own_reason(syntax: str) -> None:
    # GIVEN a float frame kept as a blob whose published checksum is the CRC of the bytes served
    blob = np.linspace(-1, 1, 16, dtype="<f4").tobytes()
    float_frame = frame(checksum=zlib.crc32(blob), syntax=syntax, float_pixel_data=True)
    # WHEN checked THEN it is ERROR float-pixel-data: neither MATCH on bytes nor a generic failure
    result = check_frame(float_frame, FetchedFrame(blob, "application/octet-stream"))
    assert (result.status, result.reason, result.expected) == (Status.ERROR, Reason.FLOAT_PIXEL_DATA, zlib.crc32(blob))
    assert precheck_frame(float_frame) == result


def test_float_flag_does_not_stop_checking_htj2k_that_healthimaging_made() -> None:
    # GIVEN a frame flagged float but stored as HealthImaging's own HTJ2K (the checksum rule is documented)
    result = check_frame(frame(float_pixel_data=True), FetchedFrame(HT, "image/jph"))
    # THEN it is verified as any HTJ2K frame
    assert (result.status, result.reason) == (Status.MATCH, None)


J2K = bytes(imagecodecs.jpeg2k_encode(PIXELS, level=0, codecformat="j2k"))


@pytest.mark.parametrize(
    ("syntax", "content_type", "blob", "status", "reason"),
    [
        pytest.param(JPEG2000_LOSSLESS, "image/j2c", J2K, Status.MATCH, None, id="90-classic-j2k"),
        pytest.param(HTJ2K_LOSSLESS_RPCL, "image/jph", HT, Status.MATCH, None, id="202-htj2k"),
        pytest.param(
            JPEG2000_LOSSLESS, "image/j2c", HT, Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES, id="90-holding-htj2k"
        ),
        pytest.param(
            HTJ2K_LOSSLESS_RPCL, "image/jph", J2K, Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES, id="202-holding-j2k"
        ),
        pytest.param(
            JPEG2000_LOSSLESS, "image/jph", J2K, Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES, id="90-served-as-jph"
        ),
        pytest.param(
            HTJ2K_LOSSLESS_RPCL, "image/j2c", HT, Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES, id="202-served-as-j2c"
        ),
    ],
)
def test_a_transcoded_frame_must_be_of_the_kind_its_syntax_names(
    syntax: str, content_type: str, blob: bytes, status: Status, reason: Reason | None
) -> None:
    # GIVEN a frame of HealthImaging's own transcode whose pixels have the published checksum
    # WHEN its content type or codestream kind is not the syntax's
    result = check_frame(frame(syntax=syntax), FetchedFrame(blob, content_type))
    # THEN it is an ERROR with a reason, never a MATCH through the other decoder
    assert (result.status, result.reason) == (status, reason)


def test_a_disagreement_says_the_syntax_came_from_the_data_store() -> None:
    result = check_frame(replace(frame(syntax=JPEG2000_LOSSLESS), syntax_stated=False), FetchedFrame(HT, "image/j2c"))
    assert result.reason is Reason.STORAGE_FORMAT_DISAGREES
    assert result.detail is not None
    assert "HTJ2K" in result.detail
    assert "resolved from the data store's lossless storage format" in result.detail


def test_a_truncated_stream_keeps_its_own_reason_under_the_format_check() -> None:
    result = check_frame(frame(syntax=JPEG2000_LOSSLESS), FetchedFrame(J2K[: len(J2K) // 2], "image/j2c"))
    assert (result.status, result.reason) == (Status.ERROR, Reason.TRUNCATED)
