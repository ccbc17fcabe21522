"""The image-set engine: every listed frame ends in exactly one result, concurrency and memory stay bounded."""

from __future__ import annotations

import pytest

from ahi_verify.image_set import (
    IN_FLIGHT_FACTOR,
    VerifyOptions,
    iter_frame_results,
    load_image_set_frames,
    verify_image_set,
)
from ahi_verify.outcomes import Reason, Status
from ahi_verify.ports import FrameFetchError, ImageSetError
from tests.fakes.frames import FakeSource, make_frames, metadata_for

DS, ISET = "d" * 32, "e" * 32


def test_every_frame_ends_in_exactly_one_result_in_metadata_order() -> None:
    # GIVEN 50 frames, three of which fail in different ways
    frames = make_frames(50)
    source = FakeSource(frames)
    ids = list(frames)
    source.failures[ids[3]] = FrameFetchError(Reason.FRAME_NOT_FOUND, "ResourceNotFoundException")
    source.failures[ids[7]] = FrameFetchError(Reason.FETCH_FAILED, "ThrottlingException after 10 attempts")
    source.failures[ids[9]] = RuntimeError("socket exploded")
    # WHEN the image set is verified
    result = verify_image_set(source, DS, ISET, options=VerifyOptions(fetch_concurrency=8, decode_workers=2))
    # THEN each frame has one result, in metadata order, with the right reasons
    assert [r.image_frame_id for r in result.results] == ids
    assert (result.counts.match, result.counts.error) == (47, 3)
    reasons = {r.image_frame_id: r.reason for r in result.results if r.status is Status.ERROR}
    assert reasons == {ids[3]: Reason.FRAME_NOT_FOUND, ids[7]: Reason.FETCH_FAILED, ids[9]: Reason.INTERNAL}
    assert not result.all_match


def test_fetch_concurrency_is_bounded_and_used() -> None:
    source = FakeSource(make_frames(40), delay=0.01)
    verify_image_set(source, DS, ISET, options=VerifyOptions(fetch_concurrency=6, decode_workers=1))
    assert source.max_in_flight == 6


def test_memory_budget_limits_frames_in_flight() -> None:
    # GIVEN a budget that holds exactly two frames' in-flight cost
    source = FakeSource(make_frames(20), delay=0.02)
    one_frame = int(load_image_set_frames(source, DS, ISET).frames[0].decoded_size_estimate() * IN_FLIGHT_FACTOR)
    options = VerifyOptions(fetch_concurrency=16, decode_workers=2, memory_budget_bytes=2 * one_frame + 1)
    # WHEN verified THEN two frames are fetched at once, never more, and all still match
    result = verify_image_set(source, DS, ISET, options=options)
    assert source.max_in_flight == 2
    assert result.all_match


def test_frame_larger_than_the_whole_budget_still_runs_alone() -> None:
    source = FakeSource(make_frames(3))
    result = verify_image_set(source, DS, ISET, options=VerifyOptions(memory_budget_bytes=1))
    assert result.all_match
    assert source.max_in_flight == 1


def test_frames_decided_by_metadata_are_not_fetched() -> None:
    # GIVEN a reduced document: frames without checksums
    frames = make_frames(4)
    doc = metadata_for(frames)
    for entry in doc["Study"]["Series"]["1.2"]["Instances"]["1.2.3"]["ImageFrames"]:
        del entry["PixelDataChecksumFromBaseToFullResolution"]
    source = FakeSource(frames, metadata=doc)
    # WHEN verified THEN every frame is an ERROR "no checksum" and nothing was fetched
    result = verify_image_set(source, DS, ISET)
    assert {(r.status, r.reason) for r in result.results} == {(Status.ERROR, Reason.NO_CHECKSUM)}
    assert len(result.results) == 4
    assert source.fetched == []


def test_closing_the_stream_early_cancels_the_rest() -> None:
    source = FakeSource(make_frames(200), delay=0.005)
    listed = load_image_set_frames(source, DS, ISET)
    stream = iter_frame_results(source, DS, ISET, listed.frames, VerifyOptions(fetch_concurrency=2))
    next(stream)
    stream.close()
    assert len(source.fetched) < 200


def test_corrupt_metadata_is_an_image_set_error() -> None:
    source = FakeSource(make_frames(1))
    source.metadata = b"\x1f\x8b\x08\x00garbage"
    with pytest.raises(ImageSetError, match=f"image set {ISET}: .*not valid gzip"):
        verify_image_set(source, DS, ISET)


def test_empty_image_set_is_not_verified() -> None:
    source = FakeSource({}, metadata={"Study": {"Series": {}}})
    result = verify_image_set(source, DS, ISET)
    assert result.results == ()
    assert not result.all_match


def test_progress_callback_sees_every_result() -> None:
    seen: list[tuple[str, int]] = []
    source = FakeSource(make_frames(10))
    verify_image_set(source, DS, ISET, on_result=lambda r, total: seen.append((r.image_frame_id, total)))
    assert sorted(fid for fid, _ in seen) == sorted(source.frames)
    assert {total for _, total in seen} == {10}


@pytest.mark.parametrize("field", ["fetch_concurrency", "decode_workers", "memory_budget_bytes"])
def test_options_reject_zero(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        VerifyOptions(**{field: 0})


@pytest.mark.parametrize("stop_after", [1, 7, 30, 59])
def test_a_deadline_stops_new_fetches_and_the_checked_frames_are_a_prefix(stop_after: int) -> None:
    # GIVEN 60 frames fetched 8 at a time, and a deadline that passes once `stop_after` fetches have begun
    frames = make_frames(60)
    source = FakeSource(frames, delay=0.002)
    listed = load_image_set_frames(source, DS, ISET).frames
    # WHEN the engine runs with that deadline
    results = list(
        iter_frame_results(
            source,
            DS,
            ISET,
            listed,
            VerifyOptions(fetch_concurrency=8, decode_workers=2),
            stop=lambda _draining: len(source.fetched) >= stop_after,
        )
    )
    # THEN it stopped early, what it checked is the first frames in order, each once, all matching
    positions = sorted(listed.index(next(f for f in listed if f.index == r.index)) for r in results)
    assert positions == list(range(len(positions)))
    assert stop_after <= len(positions) < 60
    assert sorted(source.fetched) == sorted(frame.image_frame_id for frame in listed[: len(positions)])
    assert all(r.status is Status.MATCH for r in results)


def test_a_deadline_already_past_still_checks_the_first_frame() -> None:
    # GIVEN a deadline that has passed before the run starts
    source = FakeSource(make_frames(5))
    listed = load_image_set_frames(source, DS, ISET).frames
    # WHEN the engine runs
    results = list(iter_frame_results(source, DS, ISET, listed, stop=lambda _draining: True))
    # THEN the first frame is checked (every run makes progress) and nothing else
    assert [r.index for r in results] == [listed[0].index]


def test_a_deadline_that_raises_ends_in_results_not_a_hang() -> None:
    # GIVEN a deadline callback with a bug
    source = FakeSource(make_frames(6))
    listed = load_image_set_frames(source, DS, ISET).frames

    def broken(_draining: float) -> bool:
        raise RuntimeError("deadline bug")

    # WHEN the engine runs THEN every frame still ends in one result (the first one is fetched: the deadline
    # is never asked for it; the others carry the internal error)
    results = list(iter_frame_results(source, DS, ISET, listed, stop=broken))
    assert sorted(r.index for r in results) == sorted(f.index for f in listed)
    assert {r.reason for r in results if r.status is Status.ERROR} == {Reason.INTERNAL}


def test_the_deadline_is_told_how_long_the_fetches_in_flight_take_to_drain() -> None:
    # GIVEN 40 frames fetched 8 at a time at 20 ms each
    source = FakeSource(make_frames(40), delay=0.02)
    listed = load_image_set_frames(source, DS, ISET).frames
    seen: list[float] = []

    def deadline(draining: float) -> bool:
        seen.append(draining)
        return False

    # WHEN the engine runs
    list(iter_frame_results(source, DS, ISET, listed, VerifyOptions(fetch_concurrency=8), stop=deadline))
    # THEN once fetches have finished, the estimate is about 8 in flight x 20 ms / 8 at a time, never negative
    later = seen[10:]
    assert later
    assert all(d >= 0 for d in seen)
    assert 0 < sorted(later)[len(later) // 2] < 1.0
