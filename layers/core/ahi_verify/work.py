"""Image-set work: one work item (an image set, or a frame range of it) -> its :class:`~ahi_verify.report.Part`.

The metadata is listed once; the item's frames are fetched and checked by the concurrent engine
(``image_set``); with the three-way check, the image set's source files are read and every checked frame
compared with its original (``source_check``). The result is final per frame: a frame whose original
differs from what was stored is a MISMATCH here, before anything counts or renders it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from .ifrc import FrameDecodeError, crc32, decoded_pixels
from .image_set import Stop, VerifyOptions, fetch_frame_again, iter_frame_results, load_image_set_frames
from .locations import S3Location
from .metadata import FrameRef
from .outcomes import MISMATCH_RELATIONS, Reason, Status, ThreeWay, three_way
from .plan import JobPlan
from .ports import FrameSource, ImageSetError, JobOutputError, JobOutputStore
from .report import FrameResult, Part, SourceComparison, SourceFileProblem
from .source_check import (
    LOSSY_DECODER_TOLERANCE,
    PixelDifference,
    SourceError,
    SourceFile,
    SourceFrame,
    closest_decoding,
    read_sop_instance_uid,
    read_source_file,
)
from .syntax import content_type_of
from .work_items import WorkItem

OnResult = Callable[[FrameResult, int], None]
StoredPixels = Callable[[FrameRef], Any]
"""The stored frame's pixels in the IFRC layout (fetched again through the budget), or None when unavailable."""
"""Called with each frame's result and the number of frames being checked (progress reporting)."""


@dataclass(frozen=True)
class SourceInputs:
    """Where an image set's original files are, for the three-way check."""

    store: JobOutputStore
    input_s3_uri: str
    input_files: tuple[str, ...]
    readable_bucket: str | None = None
    """The one input bucket the deployment may read (None: any); other buckets are reported, not read."""
    warned_files: frozenset[str] = frozenset()
    """Input files whose WARNING line has a code that affects frames: their frames are not compared."""


def source_inputs(
    plan: JobPlan, image_set_id: str, store: JobOutputStore, readable_bucket: str | None = None
) -> SourceInputs | None:
    """The item's source files when the plan asks for the three-way check, else None."""
    if not plan.with_sources or plan.job.input_s3_uri is None:
        return None  # asked before the lookup: the CLI calls this for every image set of every job
    planned = plan.image_set(image_set_id)
    if planned is None:
        return None
    # A file the import stored as a blob (0xB100, 0xB120) or whose frames it could not extract or count
    # (0xB110-0xB112) has stored frames that no documented rule relates to the file's: comparing them would
    # give a false MISMATCH (the blob against frame 1) and report the file's other frames as lost.
    warned = frozenset(
        line.input_file
        for line in plan.findings.warnings
        if line.input_file in planned.input_files and any(w.affects_frames for w in line.warnings)
    )
    return SourceInputs(store, plan.job.input_s3_uri, planned.input_files, readable_bucket, warned)


@dataclass(frozen=True)
class Listing:
    """What the image set's metadata lists: its frames and SOP instances, or why it could not be read."""

    frames: tuple[FrameRef, ...]
    instances: int | None
    error: str | None = None


def list_frames(source: FrameSource, item: WorkItem) -> Listing:
    """The image set's frames and instances from its metadata, or no frames and why."""
    version = str(item.version) if item.version is not None else None
    try:
        listed = load_image_set_frames(source, item.datastore_id, item.image_set_id, version)
    except ImageSetError as exc:
        return Listing((), None, str(exc))
    return Listing(listed.frames, listed.instances)


def verify_frames(
    source: FrameSource,
    item: WorkItem,
    listing: Listing,
    options: VerifyOptions | None = None,
    *,
    sources: SourceInputs | None = None,
    on_result: OnResult | None = None,
    stop: Stop | None = None,
    upto: int | None = None,
) -> Part:
    """Check the item's frames (all of ``listed``, or the item's range of it) and build its part.

    With ``stop`` (a deadline), the check may end early: the part then covers a prefix of the item's
    frames and its ``range`` says which (:func:`unreached` gives the rest, to be handed on).

    Parameters
    ----------
    source : FrameSource
    item : WorkItem
    listing : Listing
        Every frame the image set's metadata lists, in metadata order (none, and why, when it could not
        be read).
    options : VerifyOptions, optional
    sources : SourceInputs, optional
        Run the three-way check against these files.
    on_result : callable, optional
        Progress callback.
    stop : callable, optional
        The deadline (:data:`ahi_verify.image_set.Stop`): asked before each fetch starts; True ends the check
        after the frames already started.
    upto : int, optional
        Check only the item's frames before this one (an item that handed the rest on before).
    """
    started = time.perf_counter()
    listed = listing.frames
    start, end = item.frames or (0, len(listed))
    whole = end
    if upto is not None:
        end = min(end, upto)
    chosen = listed[start:end]
    by_position: dict[int, FrameResult] = {}
    positions = {frame.index: position for position, frame in enumerate(chosen)}
    for result in iter_frame_results(source, item.datastore_id, item.image_set_id, chosen, options, stop):
        by_position[positions[result.index]] = result
        if on_result is not None:
            on_result(result, len(chosen))
    # The engine's results form a prefix of the range when it stopped early (frames answered without a
    # fetch may lie beyond it); the part keeps the prefix, so the frames handed on are checked once.
    reached = next((p for p in range(len(chosen)) if p not in by_position), len(chosen))
    results = [by_position[p] for p in range(reached)]
    covered = item.frames if reached == len(chosen) and end == whole else (start, start + reached)
    comparisons: dict[int, SourceComparison] = {}
    problems: tuple[SourceFileProblem, ...] = ()
    orphans: tuple[str, ...] = ()
    if sources is not None:
        comparisons, problems, orphans = _compare_sources(
            sources,
            results,
            listed,
            listing_failed=listing.error is not None,
            stored_pixels=lambda frame: _stored_pixels(source, item, frame, options),
        )
    return Part(
        item_id=item.item_id,
        image_set_id=item.image_set_id,
        range=covered,
        total_frames=len(listed),
        error=listing.error,
        instances=listing.instances,
        frames=tuple(with_source(r, comparisons[r.index]) if r.index in comparisons else r for r in results),
        seconds=round(time.perf_counter() - started, 3),
        source_errors=problems,
        orphan_source_frames=orphans,
    )


def unreached(item: WorkItem, part: Part) -> WorkItem | None:
    """The frames of ``item`` its part did not reach (the check stopped at a deadline), as the work item
    that checks them; None when the part covers the whole item."""
    if part.range is None or part.range == item.frames:
        return None
    end = item.frames[1] if item.frames is not None else part.total_frames
    return item.with_frames(part.range[1], end) if part.range[1] < end else None


def verify_work_item(
    source: FrameSource,
    item: WorkItem,
    options: VerifyOptions | None = None,
    *,
    sources: SourceInputs | None = None,
    on_result: OnResult | None = None,
) -> Part:
    """List the image set's frames and verify the item in one step (no splitting)."""
    return verify_frames(source, item, list_frames(source, item), options, sources=sources, on_result=on_result)


def with_source(result: FrameResult, comparison: SourceComparison) -> FrameResult:
    """The frame's result with its source comparison, and its final status: a relation that says the stored
    pixels are not the original's makes it a MISMATCH with the reason ``differs-from-source``."""
    status, reason, detail = result.status, result.reason, result.detail
    if comparison.relation in MISMATCH_RELATIONS and status is not Status.MISMATCH:
        status, reason = Status.MISMATCH, Reason.DIFFERS_FROM_SOURCE
        why = (
            f"{comparison.relation}: the original file's pixels give IFRC {comparison.ifrc}, "
            f"the stored checksum is {result.expected}"
        )
        detail = f"{why}; {detail}" if detail else why
    return replace(result, status=status, reason=reason, detail=detail, source=comparison)


def _compare_sources(
    sources: SourceInputs,
    results: list[FrameResult],
    listed: tuple[FrameRef, ...],
    *,
    listing_failed: bool,
    stored_pixels: StoredPixels | None = None,
) -> tuple[dict[int, SourceComparison], tuple[SourceFileProblem, ...], tuple[str, ...]]:
    """Read the source files and relate each checked frame to its original.

    Returns the comparison per frame index, the files that could not be used, and the source frames that no
    frame of the image set (the whole listing, not only this item's range) corresponds to.
    """
    input_bucket = S3Location.parse(sources.input_s3_uri).bucket
    problems: list[SourceFileProblem] = []
    by_frame: dict[tuple[str, int], tuple[int, str]] = {}
    lossy: dict[tuple[str, int], SourceFrame] = {}
    warned: dict[str, str] = {}  # SOP Instance UID -> input file, for files the import warned about
    for input_file in sources.input_files:
        if sources.readable_bucket is not None and input_bucket != sources.readable_bucket:
            why = "the input bucket is not the source bucket this deployment reads"
            problems.append(SourceFileProblem(input_file, why))
            continue
        try:
            # inputFile is the key relative to the input bucket (it already carries the input prefix).
            data = sources.store.read_object(S3Location(input_bucket, input_file))
            if input_file in sources.warned_files:
                warned[read_sop_instance_uid(data, input_file)] = input_file
                continue
            parsed = read_source_file(data, input_file)
        except JobOutputError as exc:
            # The store's message carries the object's URI; the report keeps the key in inputFile only.
            why = f"cannot be read from the input bucket ({exc.code or type(exc).__name__})"
            problems.append(SourceFileProblem(input_file, why))
            continue
        except SourceError as exc:
            problems.append(SourceFileProblem(input_file, str(exc)))
            continue
        for frame in parsed.frames:
            by_frame[(parsed.sop_instance_uid, frame.frame_number)] = (frame.crc, input_file)
        lossy.update(_lossy_frames(parsed))
    comparisons = {}
    for r in results:
        if r.sop_instance_uid in warned:
            comparisons[r.index] = SourceComparison(None, ThreeWay.IMPORT_WARNED, warned[r.sop_instance_uid])
            continue
        found = by_frame.get((r.sop_instance_uid, r.frame_number))
        decoded = r.actual if r.status in (Status.MATCH, Status.MISMATCH) else None
        relation = (
            ThreeWay.SOURCE_UNREADABLE
            if found is None and problems
            else three_way(found[0] if found else None, r.expected, decoded)
        )
        comparisons[r.index] = SourceComparison(found[0] if found else None, relation, found[1] if found else None)
        lossy_frame = lossy.get((r.sop_instance_uid, r.frame_number))
        if found is not None and lossy_frame is not None:
            frame_ref = next((f for f in listed if f.index == r.index), None)
            pixels = None if stored_pixels is None or frame_ref is None else partial(stored_pixels, frame_ref)
            comparisons[r.index] = _lossy_comparison(lossy_frame, found[1], r, decoded, pixels, sources)
    if listing_failed:
        return comparisons, tuple(problems), ()
    stored = {(f.sop_instance_uid, f.frame_number) for f in listed}
    orphans = tuple(
        f"{file}: frame {number}"
        for (sop, number), (_, file) in sorted(by_frame.items())
        if (sop, number) not in stored
    )
    return comparisons, tuple(problems), orphans


def _lossy_frames(parsed: SourceFile) -> dict[tuple[str, int], SourceFrame]:
    return {(parsed.sop_instance_uid, f.frame_number): f for f in parsed.frames if f.candidates}


_AGREEING = frozenset(
    {ThreeWay.CONSISTENT, ThreeWay.SOURCE_AGREES, ThreeWay.STORAGE_CORRUPTED, ThreeWay.STORED_CHECKSUM_WRONG}
)
"""Relations in which the source's checksum (by some decoder) equals the stored or the decoded one."""


def _lossy_comparison(
    frame: SourceFrame,
    input_file: str,
    result: FrameResult,
    decoded: int | None,
    stored_pixels: Callable[[], Any] | None,
    sources: SourceInputs,
) -> SourceComparison:
    """Relate a frame to its lossy source, whose pixels depend on the decoder (``source_check``).

    The relation of the first decoder whose checksum equals the stored or the decoded one. When none does
    and the stored frame decodes to its stored checksum (what would be ``import-changed-pixels``), the stored
    pixels are compared with the source's by each decoder: within ``LOSSY_DECODER_TOLERANCE`` everywhere it is
    ``lossy-decoder-differs``; beyond it, or in another shape, ``import-changed-pixels``; stored pixels that
    cannot be had leave it ``lossy-source-unresolved``.
    """
    for decoder, crc in frame.candidates:
        relation = three_way(crc, result.expected, decoded)
        if relation in _AGREEING:
            return SourceComparison(crc, relation, input_file, decoder)
    first_decoder, first_crc = frame.candidates[0]
    if decoded is not None and decoded != result.expected:
        return SourceComparison(first_crc, ThreeWay.ALL_DIFFER, input_file, first_decoder)
    closest = None if decoded is None else _closest(frame, input_file, result, stored_pixels, sources)
    if closest is None:
        return SourceComparison(first_crc, ThreeWay.LOSSY_SOURCE_UNRESOLVED, input_file, first_decoder)
    if isinstance(closest, str):  # no decoding has the stored frame's shape: a change, not a rounding
        return SourceComparison(first_crc, ThreeWay.IMPORT_CHANGED_PIXELS, input_file, first_decoder)
    within = closest.max_difference <= LOSSY_DECODER_TOLERANCE
    return SourceComparison(
        closest.crc,
        ThreeWay.LOSSY_DECODER_DIFFERS if within else ThreeWay.IMPORT_CHANGED_PIXELS,
        input_file,
        closest.decoder,
        closest.max_difference,
        closest.differing_samples,
    )


def _closest(
    frame: SourceFrame,
    input_file: str,
    result: FrameResult,
    stored_pixels: Callable[[], Any] | None,
    sources: SourceInputs,
) -> PixelDifference | str | None:
    """The source's decoding closest to the stored pixels; ``other-shape`` when none has their shape; None when
    the stored pixels (those the frame check hashed) or the source file cannot be had again."""
    stored = None if stored_pixels is None else stored_pixels()
    if stored is None or crc32(stored) != result.expected:
        return None  # not the pixels the frame check hashed: nothing to compare with
    try:
        data = sources.store.read_object(S3Location(S3Location.parse(sources.input_s3_uri).bucket, input_file))
    except JobOutputError:
        return None
    return closest_decoding(data, frame.frame_number, stored) or "other-shape"


def _stored_pixels(source: FrameSource, item: WorkItem, frame: FrameRef, options: VerifyOptions | None) -> Any:
    """The stored frame fetched again (through the budget) and decoded, or None when it cannot be."""
    fetched = fetch_frame_again(source, item.datastore_id, item.image_set_id, frame, options)
    if fetched is None:
        return None
    try:
        return decoded_pixels(fetched.blob, content_type_of(fetched.content_type))
    except FrameDecodeError:
        return None
