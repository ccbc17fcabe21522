"""save/load, and the ahi-emulator command (seed in-process, serve in a subprocess)."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import boto3
import imagecodecs
import numpy as np
import pytest
from botocore.config import Config

from ahi_emulator import Emulator, InstanceSpec
from ahi_emulator.cli import main
from ahi_verify.codestream import read_codestream_info


def test_save_load_round_trip(emulator: Emulator, datastore_id: str, tmp_path: Path) -> None:
    """GIVEN an emulator with HTTP-visible state, two versions and stored-data faults
    WHEN saved and loaded THEN metadata, frame bytes, content types and versions are identical."""
    mono = np.arange(24 * 16, dtype=np.uint16).reshape(24, 16)
    rgb = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    info = emulator.add_image_set(
        datastore_id,
        [
            InstanceSpec(frames=[mono, mono + 1], bits_stored=12),
            InstanceSpec(frames=[rgb], boxed=True),
            InstanceSpec(
                frames=[np.zeros((2, 2), np.uint8)],
                stored_transfer_syntax_uid="1.2.840.10008.1.2.4.91",
                encoded_frames=[b"j2k-bytes"],
            ),
        ],
    )
    emulator.new_version(datastore_id, info.image_set_id)
    emulator.set_checksum(datastore_id, info.image_set_id, info.frame_ids[0], 1)
    emulator.remove_frame(datastore_id, info.image_set_id, info.frame_ids[1])

    emulator.save(tmp_path / "data")
    loaded = Emulator.load(tmp_path / "data")

    assert loaded.image_sets() == emulator.image_sets()
    for version in ("1", "2"):
        assert loaded.metadata(datastore_id, info.image_set_id, version) == emulator.metadata(
            datastore_id, info.image_set_id, version
        )
    for frame_id in (info.frame_ids[0], *info.frame_ids[2:]):
        assert loaded.frame(datastore_id, info.image_set_id, frame_id) == emulator.frame(
            datastore_id, info.image_set_id, frame_id
        )
    assert loaded.frame(datastore_id, info.image_set_id, info.frame_ids[3])[1] == "image/j2c"
    # A loaded boxed frame can still be corrupted: the boxing flag survived.
    loaded.corrupt_frame(datastore_id, info.image_set_id, info.frame_ids[2])
    assert loaded.frame(datastore_id, info.image_set_id, info.frame_ids[2])[0].startswith(b"\x00\x00\x00\x0cjP")
    assert loaded.image_set_properties(datastore_id, info.image_set_id) == emulator.image_set_properties(
        datastore_id, info.image_set_id
    )


def test_load_rejects_path_traversal(tmp_path: Path) -> None:
    """GIVEN an index naming a data store '../x' WHEN loaded THEN ValueError before any file is read."""
    index = {"format": "ahi-emulator", "formatVersion": 1, "datastores": [{"datastoreId": "../x", "imageSets": []}]}
    (tmp_path / "index.json").write_text(json.dumps(index))

    with pytest.raises(ValueError, match="datastoreId"):
        Emulator.load(tmp_path)


def test_seed_writes_a_loadable_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN the seed command WHEN run THEN the directory loads into two image sets with valid checksums."""
    status = main(["seed", "--data", str(tmp_path / "seeded"), "--frames", "2", "--rows", "24", "--cols", "20"])

    assert status == 0
    loaded = Emulator.load(tmp_path / "seeded")
    image_sets = loaded.image_sets()
    assert [len(i.frame_ids) for i in image_sets] == [4, 2]
    for info in image_sets:
        for frame_id, checksum in zip(info.frame_ids, info.checksums, strict=True):
            data, _ = loaded.frame(info.datastore_id, info.image_set_id, frame_id)
            decoded = np.ascontiguousarray(imagecodecs.htj2k_decode(data, planar=False))
            assert decoded.shape[:2] == (24, 20)
            assert zlib.crc32(decoded) == checksum
    assert "image set" in capsys.readouterr().out


def test_seed_can_make_a_jpeg_2000_lossless_data_store(tmp_path: Path) -> None:
    """GIVEN seed --lossless-storage-format JPEG_2000_LOSSLESS WHEN run THEN the data store has that format and
    every frame is classic JPEG 2000 (.90, image/j2c, no HT code-blocks) whose pixels have the listed checksum."""
    args = ["seed", "--data", str(tmp_path / "j2k"), "--frames", "1", "--rows", "16", "--cols", "12"]
    assert main([*args, "--lossless-storage-format", "JPEG_2000_LOSSLESS"]) == 0
    loaded = Emulator.load(tmp_path / "j2k")
    (datastore,) = loaded.datastore_ids()
    assert loaded.lossless_storage_format(datastore) == "JPEG_2000_LOSSLESS"
    image_sets = loaded.image_sets()
    assert [len(i.frame_ids) for i in image_sets] == [2, 1]
    for info in image_sets:
        instances = [
            i
            for s in loaded.metadata(datastore, info.image_set_id)["Study"]["Series"].values()
            for i in s["Instances"].values()
        ]
        assert {i["StoredTransferSyntaxUID"] for i in instances} == {"1.2.840.10008.1.2.4.90"}
        for frame_id, checksum in zip(info.frame_ids, info.checksums, strict=True):
            data, content_type = loaded.frame(datastore, info.image_set_id, frame_id)
            assert content_type == "image/j2c"
            assert not read_codestream_info(data).high_throughput
            assert zlib.crc32(np.ascontiguousarray(imagecodecs.jpeg2k_decode(data, planar=False))) == checksum


def test_seed_refuses_an_unknown_storage_format(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["seed", "--data", str(tmp_path / "x"), "--lossless-storage-format", "JPEG_XL"])
    assert not (tmp_path / "x").exists()


def test_serve_without_dataset_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN an empty directory WHEN serve is run THEN exit status 2 and an error on stderr."""
    status = main(["serve", "--data", str(tmp_path)])

    assert status == 2
    assert "index.json" in capsys.readouterr().err


@pytest.mark.integration
def test_serve_subprocess_answers_boto3_and_stops_on_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a seeded directory WHEN 'python -m ahi_emulator serve --port 0 --url-file' runs
    THEN the URL file appears, boto3 reads metadata through it, and SIGTERM stops it with status 0."""
    data = tmp_path / "data"
    assert main(["seed", "--data", str(data), "--frames", "1", "--rows", "16", "--cols", "16"]) == 0
    info = Emulator.load(data).image_sets()[0]
    url_file = tmp_path / "url.txt"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ahi_emulator",
            "serve",
            "--data",
            str(data),
            "--port",
            "0",
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no URL file after 30 s"
            time.sleep(0.05)
        url = url_file.read_text().strip()
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")

        # The same variables the command printed for `export`.
        for key, value in {
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("medical-imaging", config=Config(retries={"total_max_attempts": 1}))
        blob = client.get_image_set_metadata(datastoreId=info.datastore_id, imageSetId=info.image_set_id)[
            "imageSetMetadataBlob"
        ].read()
        client.close()
        assert json.loads(gzip.decompress(blob))["ImageSetID"] == info.image_set_id
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)

    assert process.returncode == 0, err
    assert f"export AWS_ENDPOINT_URL_MEDICAL_IMAGING={url}" in out
    assert "stopped" in out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param([], None, id="default-pydicom"),
        pytest.param(["--lossy-jpeg-decoder", "libjpeg-turbo"], ("libjpeg-turbo", 0), id="libjpeg-turbo"),
        pytest.param(["--lossy-jpeg-perturb", "2"], ("pydicom", 2), id="perturb"),
    ],
)
def test_serve_lossy_jpeg_flags_reach_the_emulator(
    tmp_path: Path, flags: list[str], expected: tuple[str, int] | None
) -> None:
    """GIVEN serve's lossy JPEG flags WHEN the served emulator is built THEN its imports decode that way."""
    from ahi_emulator.cli import _parser, _served_emulator  # noqa: PLC0415

    args = _parser().parse_args(["serve", "--data", str(tmp_path), "--datastore-id", "0" * 32, *flags])
    decoding = _served_emulator(args).lossy_jpeg_decoding
    found = None if decoding is None else (decoding.decoder, decoding.perturb)
    assert found == expected


def test_serve_refuses_an_unknown_lossy_decoder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(tmp_path), "--lossy-jpeg-decoder", "gdcm"])
    assert exited.value.code == 2
