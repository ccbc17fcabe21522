"""Frames of a JPEG 2000 Lossless data store (stored syntax 1.2.840.10008.1.2.4.90): real boto3, real HTTP.

Issue 12, part 1: such frames were ``ERROR unsupported-transfer-syntax``, so every job of such a data store ended
UNVERIFIED. They are HealthImaging's own lossless transcode, so they decode with OpenJPEG, the checksum is the
IFRC of the decoded pixels, and a difference is an authoritative MISMATCH.
"""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from ahi_emulator import Emulator, InstanceSpec
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.image_set import VerifyOptions, verify_image_set
from ahi_verify.outcomes import Reason, Status
from ahi_verify.syntax import JPEG2000_LOSSLESS, Rule, stored_syntax

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def datastore(emulator: Emulator) -> str:
    return emulator.create_datastore()


def frames(dtype: type, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    low, high = max(info.min, -2048), min(info.max, 4095)
    return [rng.integers(low, high, size=(40, 56)).astype(dtype) for _ in range(count)]


def test_the_syntax_is_lossless_storage_so_a_difference_is_a_mismatch() -> None:
    syntax = stored_syntax(JPEG2000_LOSSLESS)
    assert syntax is not None
    assert (syntax.content_type, syntax.authoritative) == ("image/j2c", True)


@pytest.mark.usefixtures("emulator_env")
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16], ids=["uint8", "int16", "uint16"])
def test_jpeg2000_lossless_frames_are_decoded_and_match(emulator: Emulator, datastore: str, dtype: type) -> None:
    # GIVEN an image set stored as JPEG 2000 lossless, as a JPEG 2000 Lossless data store stores it
    spec = InstanceSpec(frames=frames(dtype, 3, seed=7), stored_transfer_syntax_uid=JPEG2000_LOSSLESS)
    info = emulator.add_image_set(datastore, [spec], resolution_levels=False)
    # WHEN it is verified
    result = verify_image_set(
        HealthImagingSource(make_client(max_pool_connections=4)),
        datastore,
        info.image_set_id,
        options=VerifyOptions(fetch_concurrency=4, decode_workers=1),
    )
    # THEN every frame matched, by the decoded classic JPEG 2000 rule
    assert [(r.status, r.rule) for r in result.results] == [(Status.MATCH, Rule.DECODED_J2K)] * 3


@pytest.mark.usefixtures("emulator_env")
def test_a_changed_pixel_or_a_wrong_checksum_is_a_mismatch(emulator: Emulator, datastore: str) -> None:
    # GIVEN a JPEG 2000 lossless image set whose first frame decodes to one different pixel, and whose second
    # frame's published checksum is wrong
    spec = InstanceSpec(frames=frames(np.int16, 3, seed=11), stored_transfer_syntax_uid=JPEG2000_LOSSLESS)
    info = emulator.add_image_set(datastore, [spec], resolution_levels=False)
    emulator.corrupt_frame(datastore, info.image_set_id, info.frame_ids[0])
    emulator.set_checksum(datastore, info.image_set_id, info.frame_ids[1], 12345)
    # WHEN it is verified
    result = verify_image_set(
        HealthImagingSource(make_client(max_pool_connections=4)),
        datastore,
        info.image_set_id,
        options=VerifyOptions(fetch_concurrency=4, decode_workers=1),
    )
    # THEN both are mismatches (the storage is lossless: no "decoder-dependent" excuse), the third matches
    assert [r.status for r in result.results] == [Status.MISMATCH, Status.MISMATCH, Status.MATCH]


@pytest.mark.usefixtures("emulator_env")
def test_a_90_frame_holding_htj2k_is_an_error_not_a_match(emulator: Emulator, datastore: str) -> None:
    # GIVEN a frame labelled .90 (served as image/j2c) whose bytes are an HTJ2K codestream of the listed pixels
    pixels = frames(np.uint16, 1, seed=13)
    htj2k = bytes(imagecodecs.htj2k_encode(pixels[0], reversible=True))
    spec = InstanceSpec(frames=pixels, stored_transfer_syntax_uid=JPEG2000_LOSSLESS, encoded_frames=[htj2k])
    info = emulator.add_image_set(datastore, [spec], resolution_levels=False)
    # WHEN it is verified
    (result,) = verify_image_set(
        HealthImagingSource(make_client(max_pool_connections=4)), datastore, info.image_set_id
    ).results
    # THEN it is an ERROR with the reason, although OpenJPEG would decode it to the listed pixels
    assert (result.status, result.reason) == (Status.ERROR, Reason.STORAGE_FORMAT_DISAGREES)
    assert result.detail is not None
    assert "HTJ2K" in result.detail
