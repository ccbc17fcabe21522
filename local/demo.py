"""`make demo`: sample image sets in the emulator, one frame corrupted on the stored side, each verified
with the real `ahi-verify` command exactly as a user would run it against AWS.

The emulator is served on loopback; the CLI reaches it only through the standard boto3 environment
variables, so no code path differs from a run against AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np

from ahi_emulator import Emulator, EmulatorServer, ImageSetInfo, InstanceSpec

REPO = Path(__file__).resolve().parents[1]
CT1_UNC = REPO.parent / "shared" / "fixtures" / "aws-samples" / "CT1_UNC"


@dataclass(frozen=True)
class Sample:
    title: str
    info: ImageSetInfo
    expected_exit: int


def ct_series(count: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:256, 0:256]
    body = ((yy - 128) ** 2 + (xx - 128) ** 2) < 110**2
    rng = np.random.default_rng(42)
    return [
        np.where(body, 40 + (xx * (i + 1)) % 200, -1000).astype(np.int16)
        + rng.integers(-5, 5, (256, 256), dtype=np.int16)
        for i in range(count)
    ]


def ultrasound_clip(count: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:240, 0:320]
    return [
        np.stack([(xx + 7 * i) % 256, (yy * 2 + i) % 256, ((xx ^ yy) + i) % 256], axis=-1).astype(np.uint8)
        for i in range(count)
    ]


def build_samples(emulator: Emulator, datastore: str) -> list[Sample]:
    samples = []
    if CT1_UNC.exists():
        samples.append(
            Sample("CT1_UNC (real DICOM, signed 16-bit)", emulator.add_image_set_from_dicom(datastore, [CT1_UNC]), 0)
        )
    clip = ultrasound_clip(14)
    jpeg = bytes(imagecodecs.jpeg8_encode(clip[0], level=90))
    samples.append(
        Sample(
            "ultrasound: 14-frame RGB clip + a retained JPEG baseline frame",
            emulator.add_image_set(
                datastore,
                [
                    InstanceSpec(frames=clip),
                    InstanceSpec(
                        frames=[clip[0]], stored_transfer_syntax_uid="1.2.840.10008.1.2.4.50", encoded_frames=[jpeg]
                    ),
                ],
            ),
            0,
        )
    )
    series = emulator.add_image_set(datastore, [InstanceSpec(frames=[f]) for f in ct_series(20)])
    emulator.corrupt_frame(datastore, series.image_set_id, series.frame_ids[7])
    samples.append(Sample("CT series of 20 slices, slice 8 corrupted after import", series, 1))
    return samples


def main() -> int:
    emulator = Emulator()
    datastore = emulator.create_datastore()
    samples = build_samples(emulator, datastore)
    cli = Path(sys.executable).with_name("ahi-verify")
    failures = 0
    with EmulatorServer(emulator) as server:
        env = {**os.environ, **server.client_env()}
        print(f"HealthImaging emulator on {server.endpoint_url}, data store {datastore}\n")
        for sample in samples:
            print(f"== {sample.title}")
            cmd = [str(cli), "image-set", datastore, sample.info.image_set_id]
            print(f"$ ahi-verify image-set {datastore} {sample.info.image_set_id}")
            done = subprocess.run(cmd, env=env, check=False, timeout=600)
            verdict = "as expected" if done.returncode == sample.expected_exit else "UNEXPECTED"
            print(f"exit code {done.returncode} ({verdict})\n")
            failures += done.returncode != sample.expected_exit
    print("demo finished: every image set gave the expected verdict" if not failures else f"{failures} unexpected")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
