"""The transfer-syntax x format class of a DICOM file, as the real-data table names it."""

from __future__ import annotations

from typing import Any


def format_class(ds: Any) -> str:
    """``"<TransferSyntaxUID> / <format>"``, e.g. ``1.2.840.10008.1.2.4.50 / YBR_FULL_422 8-bit``.

    The format says the photometric interpretation, BitsStored (and BitsAllocated when it is larger),
    signedness, PlanarConfiguration 1, multi-frame, odd Rows or Columns and binary segmentation; only header
    values that carry no patient data are read.
    """
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if "PixelData" not in ds:
        return f"{syntax} / no pixel data"
    allocated = int(ds.get("BitsAllocated") or 0)
    stored = int(ds.get("BitsStored") or allocated)
    bits = f"{stored}-bit" if stored == allocated else f"{stored}-in-{allocated}-bit"
    parts = [str(ds.get("PhotometricInterpretation") or "?"), bits]
    if int(ds.get("PixelRepresentation") or 0) == 1:
        parts.append("signed")
    if int(ds.get("SamplesPerPixel") or 1) > 1 and int(ds.get("PlanarConfiguration") or 0) == 1:
        parts.append("planar 1")
    if int(ds.get("NumberOfFrames") or 1) > 1:
        parts.append("multi-frame")
    if int(ds.get("Rows") or 0) % 2 or int(ds.get("Columns") or 0) % 2:
        parts.append("odd-size")
    if str(ds.get("SOPClassUID") or "") == "1.2.840.10008.5.1.4.1.1.66.4":
        parts.append("SEG")
    return f"{syntax} / {' '.join(parts)}"
