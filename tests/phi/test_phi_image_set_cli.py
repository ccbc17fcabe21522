"""`ahi-verify image-set` on an image set whose metadata carries the sentinel patient and study: clean,
damaged frames, missing frames and an image set that cannot be read, in table and JSON form."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ahi_emulator import Emulator, Fault, ImageSetInfo, InstanceSpec
from ahi_verify.cli import main
from tests.phi.conftest import Emitted
from tests.phi.sentinel import SENTINEL_PATIENT, SENTINEL_STUDY, assert_clean

pytestmark = pytest.mark.integration


def frames(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(32, 24)).astype(np.uint16) for _ in range(count)]


def sentinel_image_set(emulator: Emulator, datastore: str) -> ImageSetInfo:
    return emulator.add_image_set(
        datastore,
        [InstanceSpec(frames=frames(4, 1)), InstanceSpec(frames=frames(2, 2))],
        patient=SENTINEL_PATIENT,
        study_dicom=SENTINEL_STUDY,
    )


def clean(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    return [info.datastore_id, info.image_set_id]


def damaged(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    ds, iset, ids = info.datastore_id, info.image_set_id, info.frame_ids
    emulator.corrupt_frame(ds, iset, ids[0])
    emulator.truncate_frame(ds, iset, ids[1])
    emulator.remove_frame(ds, iset, ids[2])  # GetImageFrame answers 404
    emulator.set_checksum(ds, iset, ids[3], 1234)
    return [ds, iset]


def missing_image_set(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    return [info.datastore_id, "f" * 32]  # GetImageSetMetadata answers 404


def missing_version(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    return [info.datastore_id, info.image_set_id, "--version", "9"]


def metadata_denied(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    emulator.add_fault(Fault(kind="access_denied", operation="GetImageSetMetadata", image_set_id=info.image_set_id))
    return [info.datastore_id, info.image_set_id]


def metadata_damaged(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    emulator.add_fault(Fault(kind="invalid_json", operation="GetImageSetMetadata", image_set_id=info.image_set_id))
    return [info.datastore_id, info.image_set_id]


def frames_5xx(emulator: Emulator, info: ImageSetInfo) -> list[str]:
    emulator.add_fault(Fault(kind="server_error", operation="GetImageFrame", image_set_id=info.image_set_id, count=99))
    return [info.datastore_id, info.image_set_id, "--max-attempts", "1"]


CASES: dict[str, tuple[Callable[[Emulator, ImageSetInfo], list[str]], int]] = {
    "clean": (clean, 0),
    "damaged": (damaged, 1),
    "missing-image-set": (missing_image_set, 3),
    "missing-version": (missing_version, 3),
    "metadata-denied": (metadata_denied, 3),
    "metadata-invalid-json": (metadata_damaged, 3),
    "frames-5xx": (frames_5xx, 3),
}


@pytest.fixture(scope="module")
def datastore(emulator: Emulator) -> str:
    return emulator.create_datastore()


@pytest.mark.usefixtures("emulator_env")
@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_image_set_cli_never_prints_patient_data(
    emulator: Emulator, datastore: str, emitted: Emitted, case: str, fmt: str
) -> None:
    # GIVEN an image set whose Patient and Study metadata are the sentinel, damaged as the case says
    prepare, expected_exit = CASES[case]
    info = sentinel_image_set(emulator, datastore)
    emulator.clear_faults()
    args = prepare(emulator, info)
    assert SENTINEL_PATIENT.name in str(emulator.metadata(datastore, info.image_set_id))
    emitted.start()
    try:
        # WHEN verified through the CLI
        code = emitted.call("main", lambda: main(["image-set", *args, "--format", fmt]))
    finally:
        emulator.clear_faults()
    out, _ = emitted.collect(f"image-set {case} {fmt}")
    # THEN the run did what the case intends, and nothing it emitted carries the sentinel
    assert code == expected_exit, out
    assert_clean(emitted.texts)
