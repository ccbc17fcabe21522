"""Synthetic frames and a small ready-made dataset for manual runs and demos."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .codec import JPEG2000_LOSSLESS
from .emulator import Emulator
from .specs import ImageSetInfo, InstanceSpec, PatientSpec


def synthetic_frame(
    rows: int,
    cols: int,
    dtype: npt.DTypeLike = np.uint16,
    *,
    samples: int = 1,
    bits_stored: int | None = None,
    seed: int = 0,
) -> npt.NDArray[Any]:
    """Return a deterministic frame: a diagonal gradient plus noise, so it compresses like an image.

    Parameters
    ----------
    rows, cols
        Frame size.
    dtype
        Integer dtype; signed types get negative values.
    samples
        1 gives ``(rows, cols)``, 3 gives interleaved ``(rows, cols, 3)``.
    bits_stored
        Keep values within this many bits (defaults to the container size).
    seed
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
    """
    dt = np.dtype(dtype)
    bits = bits_stored or dt.itemsize * 8
    if dt.kind == "i":
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        low, high = 0, (1 << bits) - 1
    # Stay within a 16-bit range even for 32-bit containers: realistic, and quick to encode.
    low, high = max(low, -(1 << 15)), min(high, (1 << 16) - 1)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    ramp = low + (high - low) * ((yy + xx) / max(rows + cols - 2, 1))
    if samples > 1:
        ramp = np.stack([np.roll(ramp, 7 * s, axis=1) for s in range(samples)], axis=2)
    noisy = ramp + rng.normal(0.0, (high - low) * 0.03, size=ramp.shape)
    frame: npt.NDArray[Any] = np.clip(np.rint(noisy), low, high).astype(dt)
    return frame


def seed_emulator(
    emulator: Emulator,
    *,
    frames: int = 2,
    rows: int = 256,
    cols: int = 256,
    seed: int = 0,
    lossless_storage_format: str = "HTJ2K",
) -> list[ImageSetInfo]:
    """Add a data store with two image sets that cover the common pixel formats.

    The first image set (CT-like) holds a series of ``frames`` single-frame 12-bit instances and a series with
    one signed 16-bit multi-frame instance. The second (ultrasound-like) holds one RGB 8-bit multi-frame
    instance stored as JPH files.

    Parameters
    ----------
    emulator
        Where to add them.
    frames, rows, cols
        Frames per instance series and frame size.
    seed
        Seed of the synthetic pixel data.
    lossless_storage_format
        The data store's ``losslessStorageFormat``: ``HTJ2K`` (the service's default), or ``JPEG_2000_LOSSLESS``,
        whose frames are all stored as JPEG 2000 lossless (``.90``; the ultrasound frames then are not boxed).

    Returns
    -------
    list of ImageSetInfo
    """
    if frames < 1 or rows < 1 or cols < 1:
        raise ValueError("frames, rows and cols must be >= 1")
    datastore_id = emulator.create_datastore(lossless_storage_format=lossless_storage_format)
    syntax = JPEG2000_LOSSLESS if lossless_storage_format == "JPEG_2000_LOSSLESS" else None
    ct = [
        InstanceSpec(
            frames=[synthetic_frame(rows, cols, np.uint16, bits_stored=12, seed=seed + i)],
            bits_stored=12,
            stored_transfer_syntax_uid=syntax,
            modality="CT",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            series_number="1",
            dicom={"InstanceNumber": str(i + 1)},
        )
        for i in range(frames)
    ]
    signed = InstanceSpec(
        frames=[synthetic_frame(rows, cols, np.int16, seed=seed + 100 + i) for i in range(frames)],
        stored_transfer_syntax_uid=syntax,
        modality="CT",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2.1",
        series_number="2",
    )
    ultrasound = InstanceSpec(
        frames=[synthetic_frame(rows, cols, np.uint8, samples=3, seed=seed + 200 + i) for i in range(frames)],
        stored_transfer_syntax_uid=syntax,
        boxed=syntax is None,
        modality="US",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.3.1",
    )
    return [
        emulator.add_image_set(
            datastore_id,
            [*ct, signed],
            patient=PatientSpec(name="DOE^JOHN", id="EMU-000101", birth_date="19650412", sex="M"),
            study_dicom={"StudyDescription": "Synthetic CT"},
        ),
        emulator.add_image_set(
            datastore_id,
            [ultrasound],
            patient=PatientSpec(name="ROE^MARY", id="EMU-000102", birth_date="19880923", sex="F"),
            study_dicom={"StudyDescription": "Synthetic US"},
        ),
    ]
