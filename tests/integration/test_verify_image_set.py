"""`ahi-verify image-set` against the emulator: real boto3, real HTTP, every verdict and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest

from ahi_emulator import Emulator, EmulatorServer, Fault, ImageSetInfo, InstanceSpec, PatientSpec
from ahi_verify.cli import main
from tests.support import CT1_UNC_CRC

pytestmark = pytest.mark.integration

SENTINEL = PatientSpec(name="SENTINEL^NEVER^LEAK", id="SENTINEL-ID-4711", birth_date="19011231", sex="O")


def ct_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-1024, 3000, size=(64, 48)).astype(np.int16) for _ in range(count)]


def add_mixed(emulator: Emulator, datastore_id: str) -> ImageSetInfo:
    """A multi-frame CT instance, an RGB instance, a JPH-boxed instance and a retained JPEG instance."""
    rgb = np.random.default_rng(5).integers(0, 255, size=(30, 40, 3)).astype(np.uint8)
    jpeg = bytes(imagecodecs.jpeg8_encode(rgb, level=90))
    return emulator.add_image_set(
        datastore_id,
        [
            InstanceSpec(frames=ct_frames(5)),
            InstanceSpec(frames=[rgb]),
            InstanceSpec(frames=ct_frames(2, seed=9), boxed=True),
            InstanceSpec(frames=[rgb], stored_transfer_syntax_uid="1.2.840.10008.1.2.4.50", encoded_frames=[jpeg]),
        ],
        patient=SENTINEL,
    )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert SENTINEL.name not in out + err
    assert SENTINEL.id not in out + err
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], info: ImageSetInfo, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(capsys, "image-set", info.datastore_id, info.image_set_id, "--format", "json", *extra)
    return code, json.loads(out)


@pytest.fixture(scope="module")
def datastore(emulator: Emulator) -> str:
    return emulator.create_datastore()


@pytest.mark.usefixtures("emulator_env")
def test_ct1_unc_verifies_with_the_published_checksum(
    emulator: Emulator, datastore: str, shared_fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the real CT1_UNC file imported into the emulator
    info = emulator.add_image_set_from_dicom(datastore, [shared_fixtures / "CT1_UNC"])
    # WHEN verified through the CLI
    code, doc = run_json(capsys, info)
    # THEN the one frame matches with the checksum HealthImaging reports for this file
    assert code == 0
    (frame,) = doc["frames"]
    assert (frame["status"], frame["expected"], frame["actual"]) == ("MATCH", CT1_UNC_CRC, CT1_UNC_CRC)
    assert frame["rule"] == "decoded-htj2k"
    assert doc["summary"] == {"total": 1, "match": 1, "mismatch": 0, "error": 0}


@pytest.mark.usefixtures("emulator_env")
def test_clean_mixed_image_set_matches_every_frame(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info = add_mixed(emulator, datastore)
    code, doc = run_json(capsys, info)
    assert code == 0, doc
    assert [f["imageFrameId"] for f in doc["frames"]] == info.frame_ids
    assert [f["frameNumber"] for f in doc["frames"]] == [1, 2, 3, 4, 5, 1, 1, 2, 1]
    rules = [f["rule"] for f in doc["frames"]]
    assert rules == ["decoded-htj2k"] * 8 + ["raw-bytes"]
    assert [f["expected"] for f in doc["frames"]] == info.checksums


@pytest.mark.usefixtures("emulator_env")
def test_stored_side_damage_is_reported_per_frame(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an image set with one frame corrupted, one truncated, one with a wrong checksum, one missing
    info = add_mixed(emulator, datastore)
    corrupted, truncated, wrong, missing = info.frame_ids[1], info.frame_ids[2], info.frame_ids[5], info.frame_ids[6]
    emulator.corrupt_frame(datastore, info.image_set_id, corrupted)
    emulator.truncate_frame(datastore, info.image_set_id, truncated)
    emulator.set_checksum(datastore, info.image_set_id, wrong, 1234567)
    emulator.remove_frame(datastore, info.image_set_id, missing)
    # WHEN verified
    code, doc = run_json(capsys, info)
    # THEN each damaged frame has the verdict and reason that name its damage, and the rest match
    by_id = {f["imageFrameId"]: f for f in doc["frames"]}
    assert (by_id[corrupted]["status"], by_id[corrupted]["reason"]) == ("MISMATCH", "checksum-differs")
    assert by_id[corrupted]["actual"] != by_id[corrupted]["expected"]
    assert (by_id[truncated]["status"], by_id[truncated]["reason"]) == ("ERROR", "truncated-codestream")
    assert (by_id[wrong]["status"], by_id[wrong]["expected"]) == ("MISMATCH", 1234567)
    assert (by_id[missing]["status"], by_id[missing]["reason"]) == ("ERROR", "frame-not-found")
    assert doc["summary"] == {"total": 9, "match": 5, "mismatch": 2, "error": 2}
    assert code == 1


@pytest.mark.usefixtures("emulator_env")
def test_table_output_lists_problems_and_counts(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(3))], patient=SENTINEL)
    emulator.corrupt_frame(datastore, info.image_set_id, info.frame_ids[0])
    code, out, _ = run_cli(capsys, "image-set", info.datastore_id, info.image_set_id)
    assert code == 1
    assert f"MISMATCH  {info.frame_ids[0]}" in out
    assert "3 frames: 2 match, 1 mismatch, 0 error" in out


@pytest.mark.usefixtures("emulator_env")
def test_throttling_and_5xx_bursts_are_retried_to_a_verified_frame(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN one frame throttled four times in a row, another failing twice with 500, the metadata throttled twice
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(6))])
    emulator.clear_faults()
    before = emulator.stats()
    iset = info.image_set_id
    emulator.add_fault(Fault(kind="throttle", operation="GetImageFrame", image_set_id=iset,
                             frame_id=info.frame_ids[0], count=4))  # fmt: skip
    emulator.add_fault(Fault(kind="server_error", operation="GetImageFrame", image_set_id=iset,
                             frame_id=info.frame_ids[1], count=2))  # fmt: skip
    emulator.add_fault(Fault(kind="throttle", operation="GetImageSetMetadata", image_set_id=iset, count=2))
    try:
        # WHEN verified with the default retry settings
        code, doc = run_json(capsys, info)
    finally:
        emulator.clear_faults()
    # THEN every fault fired and every frame still ends MATCH
    assert code == 0, doc
    assert doc["summary"]["match"] == 6
    assert _faults_fired(emulator.stats()) - _faults_fired(before) == 8


def _faults_fired(stats: dict[str, Any]) -> int:
    return int(stats["faults_fired"])


@pytest.mark.usefixtures("emulator_env")
def test_persistent_throttling_ends_in_fetch_failed_not_a_hang(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(2))])
    emulator.add_fault(Fault(kind="throttle", operation="GetImageFrame", frame_id=info.frame_ids[0]))
    try:
        code, doc = run_json(capsys, info, "--max-attempts", "2")
    finally:
        emulator.clear_faults()
    first = doc["frames"][0]
    assert (first["status"], first["reason"]) == ("ERROR", "fetch-failed")
    assert "ThrottlingException" in first["detail"]
    assert (code, doc["summary"]["match"]) == (3, 1)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        pytest.param("access_denied", "access-denied", id="403"),
        pytest.param("not_found", "frame-not-found", id="404"),
        pytest.param("truncate_body", "incomplete-body", id="cut-body"),
    ],
)
@pytest.mark.usefixtures("emulator_env")
def test_request_faults_give_the_right_reason(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str], kind: str, reason: str
) -> None:
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(2))])
    emulator.add_fault(Fault(kind=kind, operation="GetImageFrame", frame_id=info.frame_ids[1]))
    try:
        code, doc = run_json(capsys, info, "--max-attempts", "2")
    finally:
        emulator.clear_faults()
    assert [f["status"] for f in doc["frames"]] == ["MATCH", "ERROR"]
    assert doc["frames"][1]["reason"] == reason
    assert code == 3


@pytest.mark.usefixtures("emulator_env")
def test_pinned_version_and_unknown_image_set(
    emulator: Emulator, datastore: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(1))])
    assert run_json(capsys, info, "--version", "1")[0] == 0
    code, doc = run_json(capsys, info, "--version", "7")
    assert code == 3
    assert "ResourceNotFoundException" in doc["error"]
    code, _, err = run_cli(capsys, "image-set", datastore, "0" * 32)
    assert code == 3
    assert "could not be verified" in err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["image-set", "short", "a" * 32], id="bad-datastore-id"),
        pytest.param(["image-set", "a" * 32, "A" * 32], id="uppercase-image-set-id"),
        pytest.param(["image-set", "a" * 32, "b" * 32, "--version", "x"], id="bad-version"),
        pytest.param(["image-set", "a" * 32, "b" * 32, "--frame-rate", "0"], id="zero-frame-rate"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2


def test_installed_entry_point_runs_against_the_emulator(emulator: Emulator, server: EmulatorServer) -> None:
    # GIVEN the console script as a user runs it, configured only through the environment
    datastore = emulator.create_datastore()
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=ct_frames(2))], patient=SENTINEL)
    env = {**os.environ, **server.client_env()}
    script = Path(sys.executable).with_name("ahi-verify")
    # WHEN it verifies an image set THEN it exits 0 and prints no patient data
    done = subprocess.run(
        [str(script), "image-set", datastore, info.image_set_id, "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["match"] == 2
    assert SENTINEL.name not in done.stdout + done.stderr


def test_checksums_in_metadata_are_independent_of_the_verifier(emulator: Emulator) -> None:
    # GIVEN a frame added from an array THEN its published checksum is the plain CRC of the array
    datastore = emulator.create_datastore()
    frame = ct_frames(1, seed=3)[0]
    info = emulator.add_image_set(datastore, [InstanceSpec(frames=[frame])])
    assert info.checksums == [zlib.crc32(frame.astype("<i2").tobytes())]
