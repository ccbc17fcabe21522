"""The metadata document builder: instance specs become encoded frames and HealthImaging metadata documents.

Nothing here keeps state (that is :mod:`ahi_emulator.models`); only new IDs, UIDs and dates are not inputs.
The builder plans each instance (checks its frames and transfer syntax), encodes the frames on every core,
writes the ``ImageFrames`` entries with checksums computed from the source arrays, and assembles the
``Patient``/``Study``/``Series``/``Instances`` document an image set publishes as version ``"1"``. It also
reads documents back (frames in metadata order, the full-resolution checksum, an :class:`ImageSetInfo`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy.typing as npt
from pydicom.uid import generate_uid

from .codec import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000_LOSSLESS,
    PreparedFrame,
    content_type_for,
    encode_j2k_lossless,
    is_htj2k_lossless,
    is_transcoded_lossless,
    normalize_frame,
    prepare_htj2k_frame,
    prepare_retained_frame,
)
from .ids import new_id
from .p10 import P10Instance
from .specs import ImageSetInfo, InstanceSpec


@dataclass
class StoredFrame:
    """One frame's stored bytes, as ``GetImageFrame`` serves them.

    The builder makes them and the models keep them; ``transfer_syntax``, ``boxed`` and ``bits_stored``
    are what a corrupting fault needs to re-encode the frame the way it was encoded.
    """

    data: bytes
    content_type: str
    transfer_syntax: str | None
    boxed: bool = False
    bits_stored: int | None = None


@dataclass
class PreparedInstance:
    """An encoded instance waiting to be published in an image set."""

    series_uid: str
    sop_uid: str
    series_dicom: dict[str, Any]
    instance: dict[str, Any]
    frames: dict[str, StoredFrame]


@dataclass
class _PlannedInstance:
    spec: InstanceSpec
    frames: list[npt.NDArray[Any]]
    syntax: str | None
    series_uid: str
    sop_uid: str


# ------------------------------------------------------------------------------------ reading documents


def iter_image_frames(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every ``ImageFrames`` entry of a metadata document in metadata order."""
    for series in (doc.get("Study") or {}).get("Series", {}).values():
        for instance in (series or {}).get("Instances", {}).values():
            yield from (instance or {}).get("ImageFrames") or []


def full_resolution(frame: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return an ``ImageFrames`` entry's full-resolution checksum entry (the widest), or ``None`` if none."""
    entries = frame.get("PixelDataChecksumFromBaseToFullResolution") or []
    return max(entries, key=lambda e: e.get("Width", 0)) if entries else None


def image_set_info(datastore_id: str, image_set_id: str, version_id: str, doc: Mapping[str, Any]) -> ImageSetInfo:
    """Describe one image set version's document.

    Returns
    -------
    ImageSetInfo
        Its frame IDs and full-resolution checksums (``None`` where a frame lists none), in metadata order.
    """
    frame_ids: list[str] = []
    checksums: list[int | None] = []
    for entry in iter_image_frames(doc):
        frame_ids.append(entry["ID"])
        full = full_resolution(entry)
        checksums.append(full.get("Checksum") if full else None)
    return ImageSetInfo(datastore_id, image_set_id, frame_ids, version_id, checksums)


# ----------------------------------------------------------------------------------- building documents


def prepare_instances(instances: Sequence[InstanceSpec], resolution_levels: bool) -> list[PreparedInstance]:
    """Encode the instances' frames and build their metadata entries (nothing is stored yet).

    Parameters
    ----------
    instances
        The SOP instances of one image set; they may belong to different series.
    resolution_levels
        List one checksum per wavelet decomposition level before the full-resolution one.

    Returns
    -------
    list of PreparedInstance
        One per instance, in order, each with fresh frame IDs.

    Raises
    ------
    ValueError
        Invalid frames, repeated SOPInstanceUIDs or a retained syntax without ``encoded_frames``.
    """
    planned = [_plan_instance(spec) for spec in instances]
    sop_uids = [p.sop_uid for p in planned]
    if len(set(sop_uids)) != len(sop_uids):
        raise ValueError("SOPInstanceUIDs must be unique within an image set")
    prepared = _prepare_frames(planned, resolution_levels)
    result = []
    for plan, frame_list in zip(planned, prepared, strict=True):
        frames: dict[str, StoredFrame] = {}
        image_frames = []
        for item in frame_list:
            frame_id = new_id()
            frames[frame_id] = StoredFrame(
                data=item.data,
                content_type=content_type_for(plan.syntax),
                transfer_syntax=plan.syntax,
                boxed=plan.spec.boxed and is_htj2k_lossless(plan.syntax),
                bits_stored=plan.spec.bits_stored,
            )
            image_frames.append(
                {
                    "ID": frame_id,
                    "PixelDataChecksumFromBaseToFullResolution": [
                        {"Width": r.width, "Height": r.height, "Checksum": r.checksum} for r in item.resolutions
                    ],
                    "MinPixelValue": item.min_value,
                    "MaxPixelValue": item.max_value,
                    "FrameSizeInBytes": item.size_in_bytes,
                }
            )
        instance: dict[str, Any] = {"DICOM": _instance_dicom(plan), "DICOMVRs": {}}
        if plan.spec.stored_transfer_syntax_uid is not None:
            instance["StoredTransferSyntaxUID"] = plan.spec.stored_transfer_syntax_uid
        if is_transcoded_lossless(plan.syntax):
            instance["ChecksumType"] = "DECOMPRESSED"
        instance["ImageFrames"] = image_frames
        result.append(PreparedInstance(plan.series_uid, plan.sop_uid, _series_dicom(plan), instance, frames))
    return result


def prepare_import_instance(source: P10Instance, transcode_to: str | None = None) -> PreparedInstance:
    """Encode one instance read by an import job; its ``DICOM`` is exactly the source file's attributes.

    Parameters
    ----------
    source
        What :func:`ahi_emulator.p10.read_p10` made of the file; without pixel data (``spec`` is ``None``)
        the instance has no frames.
    transcode_to
        The data store's lossless transcode when it is not HTJ2K: ``1.2.840.10008.1.2.4.90`` in a JPEG 2000
        Lossless data store. Frames the import transcodes (not retained ones, not blobs) are stored as it.

    Returns
    -------
    PreparedInstance
        The instance, ready for :func:`build_document`.

    Raises
    ------
    ValueError
        When the encoder refuses the frames (the job then retries with the pixel data kept as a blob).
    """
    if source.spec is None:
        instance: dict[str, Any] = {"DICOM": dict(source.instance), "DICOMVRs": {}}
        return PreparedInstance(source.series_uid, source.sop_uid, dict(source.series), instance, {})
    spec = source.spec
    if transcode_to is not None and spec.stored_transfer_syntax_uid is None:
        spec = replace(spec, stored_transfer_syntax_uid=transcode_to)
    (prepared,) = prepare_instances([spec], resolution_levels=True)
    prepared.instance["DICOM"] = dict(source.instance)
    prepared.series_dicom = dict(source.series)
    return prepared


def synthetic_study(study_instance_uid: str | None, study_dicom: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a ``Study.DICOM`` object: synthetic defaults, then ``study_dicom`` over them.

    Parameters
    ----------
    study_instance_uid
        Wins over any ``StudyInstanceUID`` in ``study_dicom``; generated when neither names one.
    study_dicom
        Extra attributes merged over the defaults.

    Returns
    -------
    dict
        The ``Study.DICOM`` object.
    """
    study: dict[str, Any] = {
        "StudyInstanceUID": study_instance_uid or generate_uid(),
        "StudyDescription": "Synthetic study",
        "StudyDate": time.strftime("%Y%m%d"),
        "StudyTime": time.strftime("%H%M%S"),
        "StudyID": "1",
        "AccessionNumber": f"EMU{secrets.randbelow(10**7):07d}",
    }
    study.update(study_dicom or {})
    if study_instance_uid:
        study["StudyInstanceUID"] = study_instance_uid
    return study


def build_document(
    datastore_id: str,
    image_set_id: str,
    patient_dicom: Mapping[str, Any],
    study_dicom: Mapping[str, Any],
    instances: Sequence[PreparedInstance],
) -> tuple[dict[str, Any], dict[str, StoredFrame]]:
    """Assemble an image set's version ``"1"`` document from prepared instances.

    Instances of one series share a ``Series`` entry, whose ``DICOM`` comes from the series' first instance.

    Returns
    -------
    tuple
        ``(document, frames)``: the metadata document and every instance's frames by frame ID.
    """
    series: dict[str, Any] = {}
    frames: dict[str, StoredFrame] = {}
    for item in instances:
        entry = series.setdefault(item.series_uid, {"DICOM": item.series_dicom, "Instances": {}})
        entry["Instances"][item.sop_uid] = item.instance
        frames.update(item.frames)
    doc: dict[str, Any] = {
        "SchemaVersion": "1.1",
        "DatastoreID": datastore_id,
        "ImageSetID": image_set_id,
        "Patient": {"DICOM": dict(patient_dicom)},
        "Study": {"DICOM": dict(study_dicom), "Series": series},
    }
    return doc, frames


def _plan_instance(spec: InstanceSpec) -> _PlannedInstance:
    if not spec.frames:
        raise ValueError("an instance needs at least one frame")
    frames = [normalize_frame(f, spec.bits_stored) for f in spec.frames]
    first = frames[0]
    if any(f.shape != first.shape or f.dtype != first.dtype for f in frames):
        raise ValueError("all frames of an instance must share shape and dtype")
    syntax = spec.stored_transfer_syntax_uid
    if syntax == HTJ2K_LOSSLESS_RPCL:
        syntax = None
    if syntax is not None and syntax != JPEG2000_LOSSLESS and spec.encoded_frames is None:
        raise ValueError(f"stored transfer syntax {syntax} is retained: pass encoded_frames")
    if spec.encoded_frames is not None and len(spec.encoded_frames) != len(frames):
        raise ValueError("encoded_frames must have one entry per frame")
    return _PlannedInstance(
        spec=spec,
        frames=frames,
        syntax=syntax,
        series_uid=spec.series_instance_uid or generate_uid(),
        sop_uid=spec.sop_instance_uid or generate_uid(),
    )


def _prepare_frames(planned: list[_PlannedInstance], resolution_levels: bool) -> list[list[PreparedFrame]]:
    def job(plan: _PlannedInstance, index: int) -> PreparedFrame:
        arr = plan.frames[index]
        encoded = plan.spec.encoded_frames[index] if plan.spec.encoded_frames is not None else None
        if plan.syntax == JPEG2000_LOSSLESS:  # transcoded losslessly by the service: checksum on the pixels
            codestream = encoded if encoded is not None else encode_j2k_lossless(arr, plan.spec.bits_stored)
            return prepare_htj2k_frame(arr, resolution_levels=False, encoded=codestream)
        if plan.syntax is not None:
            assert encoded is not None  # checked in _plan_instance
            return prepare_retained_frame(arr, encoded)
        return prepare_htj2k_frame(
            arr,
            bits_stored=plan.spec.bits_stored,
            boxed=plan.spec.boxed,
            resolution_levels=resolution_levels,
            encoded=encoded,
        )

    tasks = [(plan, i) for plan in planned for i in range(len(plan.frames))]
    workers = min(len(tasks), os.cpu_count() or 1, 8)
    if workers <= 1:
        results = [job(plan, i) for plan, i in tasks]
    else:
        # The codec releases the GIL, so big image sets encode on every core.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ahi-emulator-encode") as pool:
            results = list(pool.map(lambda t: job(*t), tasks))
    grouped: list[list[PreparedFrame]] = []
    position = 0
    for plan in planned:
        grouped.append(results[position : position + len(plan.frames)])
        position += len(plan.frames)
    return grouped


def _series_dicom(plan: _PlannedInstance) -> dict[str, Any]:
    series: dict[str, Any] = {
        "Modality": plan.spec.modality,
        "SeriesInstanceUID": plan.series_uid,
        "SeriesNumber": plan.spec.series_number,
    }
    series.update(plan.spec.series_dicom or {})
    series["SeriesInstanceUID"] = plan.series_uid
    return series


def _instance_dicom(plan: _PlannedInstance) -> dict[str, Any]:
    first = plan.frames[0]
    samples = 3 if first.ndim == 3 else 1
    container = first.dtype.itemsize * 8
    bits_stored = plan.spec.bits_stored or container
    dicom: dict[str, Any] = {
        "SOPInstanceUID": plan.sop_uid,
        "SOPClassUID": plan.spec.sop_class_uid,
        "Rows": int(first.shape[0]),
        "Columns": int(first.shape[1]),
        "BitsAllocated": container,
        "BitsStored": bits_stored,
        "HighBit": bits_stored - 1,
        "PixelRepresentation": 1 if first.dtype.kind == "i" else 0,
        "SamplesPerPixel": samples,
        "PhotometricInterpretation": plan.spec.photometric_interpretation or ("RGB" if samples == 3 else "MONOCHROME2"),
    }
    if samples == 3:
        dicom["PlanarConfiguration"] = 0
    if len(plan.frames) > 1:
        # IS values are strings in HealthImaging metadata (see the usdoppler fixture).
        dicom["NumberOfFrames"] = str(len(plan.frames))
    # The *source* file's syntax; retained frames were already in it.
    dicom["TransferSyntaxUID"] = plan.syntax or EXPLICIT_VR_LITTLE_ENDIAN
    dicom.update(plan.spec.dicom or {})
    dicom["SOPInstanceUID"] = plan.sop_uid
    return dicom
