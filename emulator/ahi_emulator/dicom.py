"""Turn uncompressed little-endian DICOM P10 files into emulator instance specs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .codec import normalize_frame
from .specs import InstanceSpec, PatientSpec

DicomSource = str | os.PathLike[str] | Dataset

_SUPPORTED_SYNTAXES = frozenset({str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)})

# The attributes copied into each level of the metadata document; public because the import job's P10
# reader (p10.py) fills the same levels from the same keywords.
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDescription",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
SERIES_KEYWORDS = ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate")
INSTANCE_KEYWORDS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "RescaleIntercept",
    "RescaleSlope",
    "WindowCenter",
    "WindowWidth",
    "PixelSpacing",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


def _json_value(value: Any, vr: str) -> Any:
    """Convert a pydicom value to the JSON form HealthImaging metadata uses (IS/DS stay strings)."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        return [_json_value(v, vr) for v in value]
    if vr in ("IS", "DS"):
        original = getattr(value, "original_string", None)
        return str(original) if original is not None else str(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, bytes):
        return None
    return str(value)


def dicom_attributes(ds: Dataset, keywords: Iterable[str]) -> dict[str, Any]:
    """Return the JSON values of the keywords present in ``ds`` (absent keywords are left out).

    Parameters
    ----------
    ds
        The dataset to read.
    keywords
        DICOM keywords, e.g. :data:`STUDY_KEYWORDS`.

    Returns
    -------
    dict
        Keyword to JSON value, as HealthImaging metadata lists it.
    """
    out: dict[str, Any] = {}
    for keyword in keywords:
        if keyword in ds:
            element = ds[keyword]
            out[keyword] = _json_value(element.value, element.VR)
    return out


def _load(source: DicomSource) -> tuple[Dataset, str]:
    if isinstance(source, Dataset):
        return source, str(getattr(source, "filename", None) or "<dataset>")
    label = os.fspath(source)
    try:
        return pydicom.dcmread(source), label
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise ValueError(f"{label}: cannot read DICOM file: {exc}") from exc


def _frames(ds: Dataset, label: str) -> list[npt.NDArray[Any]]:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    if syntax not in _SUPPORTED_SYNTAXES:
        raise ValueError(
            f"{label}: transfer syntax {syntax} is not supported; only uncompressed little-endian files "
            f"({ExplicitVRLittleEndian}, {ImplicitVRLittleEndian}) can be added"
        )
    if "PixelData" not in ds:
        raise ValueError(f"{label}: no PixelData")
    # raw=True keeps the stored samples (no YBR->RGB conversion): a lossless import stores what is in the file.
    pixels = pixel_array(ds, raw=True)
    number_of_frames = int(ds.get("NumberOfFrames") or 1)
    stack = [np.asarray(f) for f in pixels] if number_of_frames > 1 else [np.asarray(pixels)]
    bits_stored = int(ds.BitsStored) if "BitsStored" in ds else None
    try:
        return [normalize_frame(f, bits_stored) for f in stack]
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from exc


def read_dicom(
    sources: Sequence[DicomSource],
) -> tuple[list[InstanceSpec], PatientSpec, dict[str, Any]]:
    """Read P10 files (or datasets) into instance specs, the patient and the Study ``DICOM`` object.

    Parameters
    ----------
    sources
        Paths or already-read datasets; all must belong to one study.

    Returns
    -------
    tuple
        ``(instances, patient, study_dicom)``.

    Raises
    ------
    ValueError
        Naming the file, for unreadable or compressed files, or files from different studies.
    """
    if not sources:
        raise ValueError("no DICOM sources given")
    instances: list[InstanceSpec] = []
    patient: PatientSpec | None = None
    study: dict[str, Any] = {}
    for source in sources:
        ds, label = _load(source)
        frames = _frames(ds, label)
        if patient is None:
            person = dicom_attributes(ds, ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"))
            patient = PatientSpec(
                name=person.get("PatientName"),
                id=person.get("PatientID"),
                birth_date=person.get("PatientBirthDate"),
                sex=person.get("PatientSex"),
            )
            study = dicom_attributes(ds, STUDY_KEYWORDS)
        elif str(ds.get("StudyInstanceUID", "")) != str(study.get("StudyInstanceUID") or ""):
            raise ValueError(f"{label}: belongs to another study than the first file")
        instance_dicom = dicom_attributes(ds, INSTANCE_KEYWORDS)
        instance_dicom["TransferSyntaxUID"] = str(ds.file_meta.TransferSyntaxUID)
        series_dicom = dicom_attributes(ds, SERIES_KEYWORDS)
        instances.append(
            InstanceSpec(
                frames=frames,
                series_instance_uid=series_dicom.get("SeriesInstanceUID"),
                sop_instance_uid=instance_dicom.get("SOPInstanceUID"),
                bits_stored=int(ds.BitsStored) if "BitsStored" in ds else None,
                photometric_interpretation=instance_dicom.get("PhotometricInterpretation"),
                modality=series_dicom.get("Modality") or "OT",
                sop_class_uid=instance_dicom.get("SOPClassUID") or InstanceSpec.sop_class_uid,
                series_number=series_dicom.get("SeriesNumber"),
                dicom=instance_dicom,
                series_dicom=series_dicom,
            )
        )
    assert patient is not None  # sources is non-empty
    return instances, patient, study
