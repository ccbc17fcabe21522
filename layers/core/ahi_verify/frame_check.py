"""One frame: its metadata entry and the bytes GetImageFrame served -> exactly one result.

A frame is MATCH only when a checksum computed by a rule that applies to its stored syntax equals the
published full-resolution checksum. MISMATCH is reserved for HealthImaging's own HTJ2K frames, whose
checksum definition AWS documents; everything else that cannot be confirmed is ERROR with a reason.
"""

from __future__ import annotations

from .codestream import CodestreamError, read_codestream_info
from .ifrc import FrameChecksum, FrameDecodeError, decoded_checksum, raw_checksum
from .metadata import FrameRef
from .outcomes import Reason, Status
from .ports import FetchedFrame
from .report import FrameResult
from .syntax import DECODABLE_CONTENT_TYPES, RuleSet, StoredSyntax, content_type_of, stored_syntax

KNOWN_CHECKSUM_TYPES = frozenset({"DECOMPRESSED"})


def precheck_frame(frame: FrameRef) -> FrameResult | None:
    """Return the result of a frame that needs no fetch because its metadata already decides it."""
    if frame.problem:
        return FrameResult.of(frame, Status.ERROR, reason=Reason.METADATA_INVALID, detail=frame.problem)
    float_result = _float_pixel_data(frame)
    if float_result is not None:
        return float_result
    if frame.full_resolution is None:
        return FrameResult.of(frame, Status.ERROR, reason=Reason.NO_CHECKSUM, detail="no checksum in metadata")
    if stored_syntax(frame.stored_transfer_syntax_uid) is None:
        return FrameResult.of(
            frame,
            Status.ERROR,
            expected=frame.full_resolution.checksum,
            reason=Reason.UNSUPPORTED_SYNTAX,
            detail=f"stored transfer syntax {frame.stored_transfer_syntax_uid} is not one HealthImaging documents",
        )
    return None


def check_frame(frame: FrameRef, fetched: FetchedFrame) -> FrameResult:
    """Verify one fetched frame against its metadata.

    Parameters
    ----------
    frame : FrameRef
        The metadata entry; :func:`precheck_frame` must have returned ``None`` for it.
    fetched : FetchedFrame
        The bytes and Content-Type GetImageFrame returned.

    Returns
    -------
    FrameResult
        MATCH when a rule that applies reproduces the checksum; MISMATCH when HealthImaging's own HTJ2K
        decodes to other pixels; ERROR with a reason otherwise.
    """
    early = precheck_frame(frame)
    if early is not None:
        return early
    syntax = stored_syntax(frame.stored_transfer_syntax_uid)
    # precheck_frame guarantees both
    assert frame.full_resolution is not None
    assert syntax is not None
    expected = frame.full_resolution.checksum
    content_type = content_type_of(fetched.content_type)
    decodable = content_type in DECODABLE_CONTENT_TYPES
    if syntax.rules is RuleSet.DECODED and not decodable:
        return FrameResult.of(
            frame,
            Status.ERROR,
            expected=expected,
            reason=Reason.UNSUPPORTED_CONTENT_TYPE,
            detail=f"content type {content_type} for stored syntax {syntax.uid} (expected {syntax.content_type})",
        )
    disagreement = _format_disagreement(frame, syntax, content_type, fetched.blob)
    if disagreement is not None:
        # Decoding anyway could MATCH through the OpenJPEG fallback and hide that the frame is not what the
        # stored syntax (or the data store's format) says was stored.
        return FrameResult.of(
            frame, Status.ERROR, expected=expected, reason=Reason.STORAGE_FORMAT_DISAGREES, detail=disagreement
        )

    computed: list[FrameChecksum] = []
    failure: FrameDecodeError | None = None
    if syntax.rules in (RuleSet.RAW, RuleSet.RAW_THEN_DECODED):
        computed.append(raw_checksum(fetched.blob))
    if syntax.rules in (RuleSet.DECODED, RuleSet.RAW_THEN_DECODED) and decodable and not _matched(computed, expected):
        try:
            computed.append(decoded_checksum(fetched.blob, content_type))
        except FrameDecodeError as exc:
            failure = exc

    for checksum in computed:
        if checksum.crc == expected:
            return _match(frame, expected, checksum)
    return _no_match(frame, expected, computed, failure, authoritative=syntax.authoritative)


def _float_pixel_data(frame: FrameRef) -> FrameResult | None:
    """Float pixel data kept as the original is not verifiable: AWS documents neither its storage nor its
    checksum. Frames HealthImaging transcoded itself (HTJ2K, JPEG 2000 lossless) are checked as usual."""
    syntax = stored_syntax(frame.stored_transfer_syntax_uid)
    if not frame.float_pixel_data or (syntax is not None and syntax.authoritative):
        return None
    return FrameResult.of(
        frame,
        Status.ERROR,
        expected=frame.full_resolution.checksum if frame.full_resolution else None,
        reason=Reason.FLOAT_PIXEL_DATA,
        detail=(
            f"Float or Double Float Pixel Data stored as {frame.stored_transfer_syntax_uid}: AWS documents no "
            "checksum for floating point pixels, so the frame is not verified"
        ),
    )


def _format_disagreement(frame: FrameRef, syntax: StoredSyntax, content_type: str, blob: bytes) -> str | None:
    """Why a frame of HealthImaging's own transcode is not of the kind its syntax names, or None when it is.

    Only syntaxes with a codestream kind in the table are checked; a stream too damaged to read is left to the
    decoder, which reports it with its own reason (truncated, decode failed).
    """
    if syntax.high_throughput is None:
        return None
    where = "" if frame.syntax_stated else " (resolved from the data store's lossless storage format)"
    if content_type != syntax.content_type:
        return f"content type {content_type} for stored syntax {syntax.uid}{where} (expected {syntax.content_type})"
    try:
        high_throughput = read_codestream_info(blob).high_throughput
    except CodestreamError:
        return None
    if high_throughput == syntax.high_throughput:
        return None
    found = "HTJ2K (CAP marker or Rsiz HT bit)" if high_throughput else "classic JPEG 2000 (no HT code-blocks)"
    return f"the codestream is {found}, not what stored syntax {syntax.uid}{where} holds"


def _matched(computed: list[FrameChecksum], expected: int) -> bool:
    return any(c.crc == expected for c in computed)


def _match(frame: FrameRef, expected: int, checksum: FrameChecksum) -> FrameResult:
    detail: str | None
    if frame.checksum_type is not None and frame.checksum_type not in KNOWN_CHECKSUM_TYPES:
        detail = f"matched although ChecksumType {frame.checksum_type!r} is undocumented"
    else:
        detail = _dimension_note(frame, checksum)
    return FrameResult.of(
        frame, Status.MATCH, expected=expected, actual=checksum.crc, rule=checksum.rule, detail=detail
    )


def _no_match(
    frame: FrameRef,
    expected: int,
    computed: list[FrameChecksum],
    failure: FrameDecodeError | None,
    *,
    authoritative: bool,
) -> FrameResult:
    last = computed[-1] if computed else None

    def with_last(status: Status, reason: Reason, detail: str | None) -> FrameResult:
        """The result, carrying the last checksum computed (the one the report shows as actual)."""
        actual, rule = (last.crc, last.rule) if last else (None, None)
        return FrameResult.of(frame, status, expected=expected, actual=actual, rule=rule, reason=reason, detail=detail)

    if frame.checksum_type is not None and frame.checksum_type not in KNOWN_CHECKSUM_TYPES:
        why = f"ChecksumType {frame.checksum_type!r} is undocumented and no known rule reproduced the checksum"
        return with_last(Status.ERROR, Reason.UNKNOWN_CHECKSUM_TYPE, why)
    if failure is not None and (authoritative or not computed):
        reason = Reason.TRUNCATED if failure.truncated else Reason.DECODE_FAILED
        return FrameResult.of(frame, Status.ERROR, expected=expected, reason=reason, detail=str(failure))
    if authoritative and last is not None:
        return with_last(Status.MISMATCH, Reason.CHECKSUM_DIFFERS, _dimension_note(frame, last))
    tried = ", ".join(c.rule.value for c in computed) or "none"
    note = f"; decoding failed: {failure}" if failure else ""
    why = (
        f"stored syntax {frame.stored_transfer_syntax_uid} keeps the original; AWS does not document its "
        f"checksum definition and no rule reproduced it (tried: {tried}){note}"
    )
    return with_last(Status.ERROR, Reason.NO_RULE_MATCHED, why)


def _dimension_note(frame: FrameRef, checksum: FrameChecksum) -> str | None:
    """Soft checks the auditor should see, which never change the verdict."""
    full = frame.full_resolution
    notes = []
    if full and checksum.width is not None and (checksum.width, checksum.height) != (full.width, full.height):
        notes.append(f"decoded {checksum.width}x{checksum.height}, metadata lists {full.width}x{full.height}")
    if full and frame.columns and frame.rows and (frame.columns, frame.rows) != (full.width, full.height):
        notes.append(
            f"DICOM Columns x Rows {frame.columns}x{frame.rows} differ from the checksum's {full.width}x{full.height}"
        )
    return "; ".join(notes) or None
