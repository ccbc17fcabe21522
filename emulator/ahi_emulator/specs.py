"""Value objects describing what to put into the emulator and what it made of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt


@dataclass(frozen=True)
class PatientSpec:
    """Patient-level attributes for ``Patient.DICOM``. The defaults are synthetic; ``None`` is written as null."""

    name: str | None = "DOE^JANE^^^"
    id: str | None = "EMU-000001"
    birth_date: str | None = "19700101"
    sex: str | None = "F"

    def to_dicom(self) -> dict[str, Any]:
        """Return the ``Patient.DICOM`` object."""
        return {
            "PatientName": self.name,
            "PatientID": self.id,
            "PatientBirthDate": self.birth_date,
            "PatientSex": self.sex,
        }


@dataclass(frozen=True, eq=False)
class InstanceSpec:
    """One SOP instance of an image set.

    Parameters
    ----------
    frames
        Source frames, each ``(rows, cols)`` or ``(rows, cols, samples)`` (samples interleaved), of dtype
        (u)int8, (u)int16 or (u)int32. For HTJ2K storage the full-resolution checksum is the CRC-32 of these
        arrays' little-endian bytes; for retained syntaxes they only give Rows/Columns.
    series_instance_uid, sop_instance_uid
        Generated when ``None``.
    bits_stored
        Significant bits (e.g. 12 in uint16); values must fit. Defaults to the container size.
    photometric_interpretation
        Defaults to ``MONOCHROME2`` (one sample) or ``RGB`` (three).
    stored_transfer_syntax_uid
        ``None`` stores HTJ2K lossless RPCL and omits ``StoredTransferSyntaxUID`` (as the real service
        does); ``"1.2.840.10008.1.2.4.202"`` writes it explicitly; any other syntax is *retained* and needs
        ``encoded_frames``.
    encoded_frames
        Bytes to store as-is, one per frame. For retained syntaxes the checksum is the CRC-32 of these
        bytes. For HTJ2K syntaxes the checksum still comes from ``frames``, so a mismatching stream can be
        planted deliberately.
    boxed
        Store HTJ2K frames as JPH files (JP2-family boxes) instead of bare codestreams.
    modality, sop_class_uid, series_number
        Series/instance attributes; defaults ``OT``, Secondary Capture, ``"1"``.
    dicom, series_dicom
        Extra attributes merged over the generated Instance / Series ``DICOM`` objects.
    """

    frames: Sequence[npt.NDArray[Any]]
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    bits_stored: int | None = None
    photometric_interpretation: str | None = None
    stored_transfer_syntax_uid: str | None = None
    encoded_frames: Sequence[bytes] | None = None
    boxed: bool = False
    modality: str = "OT"
    sop_class_uid: str = "1.2.840.10008.5.1.4.1.1.7"
    series_number: str | None = "1"
    dicom: Mapping[str, Any] | None = None
    series_dicom: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ImageSetInfo:
    """What the emulator stored for an image set version.

    Attributes
    ----------
    datastore_id, image_set_id, version_id
        Identifiers, as the API uses them.
    frame_ids
        Every ``ImageFrames[].ID`` in metadata order (series, then instance, then frame).
    checksums
        The full-resolution checksum listed for each frame, same order (``None`` when absent).
    """

    datastore_id: str
    image_set_id: str
    frame_ids: list[str]
    version_id: str = "1"
    checksums: list[int | None] = field(default_factory=list)
