"""GetImageSetMetadata document -> the frames to verify.

Every frame listed in the document becomes exactly one :class:`FrameRef`, even when its entry is
malformed: the problem travels with the frame so that it ends in an ERROR result instead of vanishing.
Error messages name where in the document something was wrong, never the DICOM values themselves
(they may be patient data).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .ids import is_int
from .syntax import HTJ2K_LOSSLESS_RPCL

_UINT32_MAX = 0xFFFFFFFF


class MetadataError(ValueError):
    """The image set metadata cannot be read at all (not gzip, not JSON, not an image set document)."""


@dataclass(frozen=True)
class ResolutionChecksum:
    """One entry of ``PixelDataChecksumFromBaseToFullResolution``."""

    width: int
    height: int
    checksum: int


@dataclass(frozen=True)
class FrameRef:
    """One frame listed in the metadata, with everything needed to check it."""

    index: int
    """Position in document order, so results can be reported in a stable order."""
    image_frame_id: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_number: int
    """1-based: the first entry of ``ImageFrames`` is DICOM frame 1."""
    stored_transfer_syntax_uid: str
    checksum_type: str | None
    full_resolution: ResolutionChecksum | None
    rows: int | None = None
    columns: int | None = None
    samples_per_pixel: int | None = None
    bits_allocated: int | None = None
    frame_size_in_bytes: int | None = None
    float_pixel_data: bool = False
    """The instance's ``DICOM`` describes Float or Double Float Pixel Data (see :func:`is_float_pixel_data`)."""
    problem: str | None = None
    """Why this frame cannot be verified from its metadata entry alone (malformed entry)."""
    syntax_stated: bool = True
    """False when the instance omits ``StoredTransferSyntaxUID``: ``stored_transfer_syntax_uid`` is then HTJ2K
    until :func:`resolve_omitted_syntax` sets the syntax of the data store's lossless storage format."""
    syntax_note: str | None = None
    """Why the resolved syntax is an assumption (the data store's format could not be read); every result of
    the frame carries it in its detail."""

    def decoded_size_estimate(self) -> int:
        """Upper estimate of the decoded frame in bytes, for the in-flight memory budget."""
        estimates = [self.frame_size_in_bytes or 0]
        if self.rows and self.columns:
            estimates.append(
                self.rows * self.columns * (self.samples_per_pixel or 1) * ((self.bits_allocated or 16) // 8)
            )
        if self.full_resolution:
            # Without DICOM attributes assume the widest common layout: 3 samples of 2 bytes.
            samples = self.samples_per_pixel or 3
            estimates.append(self.full_resolution.width * self.full_resolution.height * samples * 2)
        return max(estimates) or 1 << 20


@dataclass(frozen=True)
class ImageSetFrames:
    """The frames of one image set, in document order."""

    datastore_id: str | None
    image_set_id: str | None
    frames: tuple[FrameRef, ...]
    instances: int = 0
    """SOP instances the document lists, with pixel data or without (compared with the import's counts)."""


def decode_metadata_blob(blob: bytes) -> Mapping[str, Any]:
    """Turn the ``imageSetMetadataBlob`` bytes into the JSON document.

    botocore does not undo the ``Content-Encoding: gzip`` of this payload, so the body is decompressed
    when it starts with the gzip magic number, and taken as JSON otherwise.

    Raises
    ------
    MetadataError
        Corrupt or truncated gzip, invalid UTF-8 or JSON, or a document that is not a JSON object.
    """
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise MetadataError(f"image set metadata is not valid gzip: {exc}") from exc
    try:
        doc = json.loads(blob)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers, deep nesting
        raise MetadataError(f"image set metadata is not valid JSON: {exc.__class__.__name__} at {_where(exc)}") from exc
    if not isinstance(doc, dict):
        raise MetadataError(f"image set metadata is a JSON {type(doc).__name__}, not an object")
    return doc


def _where(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"byte {exc.start}"
    return "unknown position"


def parse_image_set_metadata(doc: Mapping[str, Any]) -> ImageSetFrames:
    """List every frame of an image set metadata document.

    Parameters
    ----------
    doc : Mapping
        The decoded GetImageSetMetadata document. Reduced documents (no ``Patient``, ``DICOM`` or
        checksums) are accepted; a frame without checksums gets ``full_resolution=None``.

    Returns
    -------
    ImageSetFrames

    Raises
    ------
    MetadataError
        When ``Study.Series`` is missing or not an object: without it no frame can be found, and
        reporting zero frames would look like success.
    """
    study = doc.get("Study")
    if not isinstance(study, Mapping) or not isinstance(study.get("Series"), Mapping):
        raise MetadataError("image set metadata has no Study.Series object: no frames can be listed")
    frames = tuple(FrameRef(index=i, **fields) for i, fields in enumerate(_walk_frames(study["Series"])))
    return ImageSetFrames(
        datastore_id=_str_or_none(doc.get("DatastoreID")),
        image_set_id=_str_or_none(doc.get("ImageSetID")),
        frames=frames,
        instances=sum(
            1
            for series in study["Series"].values()
            if isinstance(series, Mapping) and isinstance(series.get("Instances"), Mapping)
            for instance in series["Instances"].values()
            if isinstance(instance, Mapping)
        ),
    )


def resolve_omitted_syntax(listed: ImageSetFrames, syntax_uid: str, note: str | None = None) -> ImageSetFrames:
    """Give the frames whose instance omits ``StoredTransferSyntaxUID`` the data store's stored syntax.

    Parameters
    ----------
    listed : ImageSetFrames
        From :func:`parse_image_set_metadata`.
    syntax_uid : str
        The syntax the data store's lossless storage format transcodes to (``.202`` or ``.90``).
    note : str, optional
        Why ``syntax_uid`` is an assumption rather than the data store's answer; kept on each resolved frame.

    Returns
    -------
    ImageSetFrames
        The same frames, the omitted syntaxes resolved; frames with a stated syntax are unchanged.
    """
    frames = tuple(
        f if f.syntax_stated else replace(f, stored_transfer_syntax_uid=syntax_uid, syntax_note=note)
        for f in listed.frames
    )
    return replace(listed, frames=frames)


def _walk_frames(series_map: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for series_uid, series in series_map.items():
        instances = series.get("Instances") if isinstance(series, Mapping) else None
        if not isinstance(instances, Mapping):
            continue  # a series without instances lists no frames
        for sop_uid, instance in instances.items():
            if not isinstance(instance, Mapping):
                continue
            yield from _instance_frames(series_uid, sop_uid, instance)


def _instance_frames(series_uid: str, sop_uid: str, instance: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    where = f"Series[{series_uid}].Instances[{sop_uid}]"
    raw_dicom = instance.get("DICOM")
    dicom: Mapping[str, Any] = raw_dicom if isinstance(raw_dicom, Mapping) else {}
    stated = _str_or_none(instance.get("StoredTransferSyntaxUID"))
    common: dict[str, Any] = {
        "series_instance_uid": series_uid,
        "sop_instance_uid": sop_uid,
        "stored_transfer_syntax_uid": stated or HTJ2K_LOSSLESS_RPCL,
        "syntax_stated": stated is not None,
        "checksum_type": _str_or_none(instance.get("ChecksumType")),
        "rows": _int_or_none(dicom.get("Rows")),
        "columns": _int_or_none(dicom.get("Columns")),
        "samples_per_pixel": _int_or_none(dicom.get("SamplesPerPixel")),
        "bits_allocated": _int_or_none(dicom.get("BitsAllocated")),
        "float_pixel_data": is_float_pixel_data(dicom),
    }
    image_frames = instance.get("ImageFrames")
    if image_frames is None:
        return  # no pixel data: nothing to verify for this instance
    if not isinstance(image_frames, list):
        yield {
            **common,
            "image_frame_id": "",
            "frame_number": 1,
            "full_resolution": None,
            "problem": f"{where}.ImageFrames is not a list",
        }
        return
    for number, entry in enumerate(image_frames, start=1):
        yield {**common, "frame_number": number, **_frame_fields(f"{where}.ImageFrames[{number - 1}]", entry)}


def _frame_fields(where: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        return {"image_frame_id": "", "full_resolution": None, "problem": f"{where} is not an object"}
    frame_id = entry.get("ID")
    fields: dict[str, Any] = {
        "image_frame_id": frame_id if isinstance(frame_id, str) else "",
        "frame_size_in_bytes": _int_or_none(entry.get("FrameSizeInBytes")),
        "full_resolution": None,
        "problem": None,
    }
    if not isinstance(frame_id, str) or not frame_id:
        fields["problem"] = f"{where}.ID is missing or not a string"
        return fields
    levels = entry.get("PixelDataChecksumFromBaseToFullResolution")
    if levels is None or levels == []:
        return fields  # no checksum published: reported as such, not as a malformed entry
    try:
        fields["full_resolution"] = _full_resolution(levels)
    except ValueError as exc:
        fields["problem"] = f"{where}.PixelDataChecksumFromBaseToFullResolution: {exc}"
    return fields


def _full_resolution(levels: Any) -> ResolutionChecksum:
    """The entry with the largest Width (the list runs from base to full resolution)."""
    if not isinstance(levels, list):
        raise ValueError("not a list")
    parsed = []
    for i, level in enumerate(levels):
        if not isinstance(level, Mapping):
            raise ValueError(f"entry {i} is not an object")
        width, height, checksum = (_int_or_none(level.get(k)) for k in ("Width", "Height", "Checksum"))
        if width is None or height is None or checksum is None:
            raise ValueError(f"entry {i}: Width, Height and Checksum must be integers")
        if not 0 <= checksum <= _UINT32_MAX:
            raise ValueError(f"entry {i}: Checksum is outside the unsigned 32-bit range")
        parsed.append(ResolutionChecksum(width=width, height=height, checksum=checksum))
    return max(parsed, key=lambda level: (level.width, level.height))


def is_float_pixel_data(dicom: Mapping[str, Any]) -> bool:
    """Whether an instance's ``DICOM`` attributes describe Float or Double Float Pixel Data.

    AWS documents nothing about float pixel data, so this follows DICOM: integer pixel data always has
    BitsStored (Type 1), float pixel data (Floating Point Image Pixel module) never has; Double Float Pixel
    Data is the only pixel data with BitsAllocated 64.

    Parameters
    ----------
    dicom : Mapping
        The instance's ``DICOM`` object (empty when the document has none: then False).

    Returns
    -------
    bool
    """
    bits_allocated = _int_or_none(dicom.get("BitsAllocated"))
    return bits_allocated == 64 or (bits_allocated == 32 and "BitsStored" not in dicom)


def _int_or_none(value: Any) -> int | None:
    return value if is_int(value) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
