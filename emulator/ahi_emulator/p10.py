"""DICOM P10 files to HealthImaging instances, the way a DICOM import job stores them.

The rules below are the emulator's contract. Another component independently recomputes a "source IFRC"
from the original P10 files with the same rules, so they are stated exactly.

Grouping into image sets
------------------------
Within one import job, instances are grouped by the pair (StudyInstanceUID, SeriesInstanceUID): one image set
per series, in the order the series is first seen, each primary (``isPrimary`` true) at ``imageSetVersion`` 1.
Image sets of earlier jobs are never extended or merged. ``Patient.DICOM`` and ``Study.DICOM`` come from the
first instance of the series; a later file repeating a SOPInstanceUID already imported in that series is a
FAILURE line.

Decision table (by the source ``TransferSyntaxUID`` in the file meta)
---------------------------------------------------------------------
================================================ ===========================================================
Source                                           Stored as
================================================ ===========================================================
No PixelData (SR, RT plan, ...)                  metadata only, no ``ImageFrames``
Segmentation Storage (1.2.840.10008.5.1.4.1.1.   RETAINED: ``StoredTransferSyntaxUID`` 1.2.840.10008.1.2.1;
66.4) with BitsAllocated 1, any decodable source each frame is the frame's bits packed LSB-first from a byte
syntax                                           boundary (``numpy.packbits(bits, bitorder="little")``, zero
                                                 padded), which equals the native frame bytes when
                                                 Rows x Columns is a multiple of 8. Native (and deflated)
                                                 frames are cut from the bit stream here (pydicom 3.0.2
                                                 under-reads frames that start mid-byte); RLE frames
                                                 (one segment: packed bits or a byte a pixel) are decoded
                                                 here (pydicom refuses 1-bit RLE); other syntaxes by
                                                 pydicom. Frames that do not decode: WARNING 45312, blob
FloatPixelData / DoubleFloatPixelData            WARNING 45312 (TRANSCODING_EXCEPTION), the float element's
(7FE0,0008/0009)                                 value stored as one blob frame. A guess: AWS documents
                                                 nothing about float pixel data. The Instance ``DICOM``
                                                 keeps BitsAllocated 32/64 and, like the source, has no
                                                 BitsStored/HighBit/PixelRepresentation
``.4.50`` JPEG baseline, ``.4.91`` JPEG 2000,    RETAINED: ``StoredTransferSyntaxUID`` = source syntax; each
``.4.203`` HTJ2K, ``.4.112`` JPEG XL             frame is the original frame bytes
                                                 (``pydicom.encaps.generate_frames``)
``.1.2``, ``.1.2.1``, ``.1.2.1.99``, ``.1.2.2``, TRANSCODED to HTJ2K lossless RPCL (``htj2k_encode(arr,
``.1.2.5`` RLE, ``.4.51``, ``.4.57``, ``.4.70``, reversible=True)``); ``StoredTransferSyntaxUID`` omitted,
``.4.80``, ``.4.81``, ``.4.90``, ``.4.201``,     ``ChecksumType`` "DECOMPRESSED"
``.4.202``
Transcoded syntax whose pixel data pydicom       WARNING 45312 (0xB100, TRANSCODING_EXCEPTION): imported,
cannot decode (or decodes to another number of   pixel data stored as one blob frame (below)
frames than NumberOfFrames), or HTJ2K encoding
fails
Any other syntax (video .4.100-.4.108, JPEG XL,  WARNING 45344 (0xB120, UNSUPPORTED_TRANSFER_SYNTAX):
JPIP, JPEG 2000 multi-component, private ...)    imported, pixel data stored as one blob frame (below)
Not DICOM P10 (``dcmread(force=False)``),       FAILURE line, ``ValidationException``
unparseable, missing SOPInstanceUID/
StudyInstanceUID/SeriesInstanceUID/
TransferSyntaxUID (file meta); with PixelData:
missing Rows/Columns/BitsAllocated/BitsStored/
PixelRepresentation/SamplesPerPixel/
PhotometricInterpretation (PlanarConfiguration
when 3 samples); BitsAllocated 1 outside
binary segmentation; BitsAllocated not 8/16/32;
BitsStored outside 1..BitsAllocated;
SamplesPerPixel not 1 or 3; retained pixel data
that does not split into NumberOfFrames frames
================================================ ===========================================================

Retained and blob frames list one checksum entry (Width=Columns, Height=Rows, CRC-32 of the stored bytes),
``MinPixelValue``/``MaxPixelValue`` null and ``FrameSizeInBytes`` = the stored length. A *blob* is the whole
PixelData value in one frame: the concatenated fragments (no item headers, no offset table) for encapsulated
syntaxes, the element value for native ones; ``StoredTransferSyntaxUID`` is the source syntax.

Pixel normalisation (transcoded syntaxes)
-----------------------------------------
1. Frames are ``pydicom.pixels.iter_pixels(ds, raw=True)``, one array per frame: no colour-space conversion
   (YBR stays YBR; pydicom upsamples YBR_FULL_422 to three full samples), no rescale, no VOI/palette;
   multi-sample data comes back interleaved ``(rows, cols, samples)`` whatever PlanarConfiguration says, and
   is stored interleaved (the Instance ``DICOM`` still reports the source's PlanarConfiguration).
2. The container dtype is set by BitsAllocated and PixelRepresentation: 8 -> ``uint8``/``int8``,
   16 -> ``uint16``/``int16``, 32 -> ``uint32``/``int32`` (native byte order). An array of another integer
   dtype (e.g. big-endian ``>i2`` from Explicit VR Big Endian) is converted with ``astype`` (value-preserving
   for in-range values, modulo 2**BitsAllocated otherwise, so the low bits are kept).
3. Only the low BitsStored bits are significant. With ``shift = BitsAllocated - BitsStored > 0`` every value
   becomes ``(v << shift) >> shift`` in the container dtype: for unsigned data (PixelRepresentation 0) this
   masks off the bits above BitsStored, for signed data (PixelRepresentation 1) it sign-extends from bit
   BitsStored - 1 (arithmetic right shift).
4. The container is narrowed to ``ceil(BitsStored / 8)`` bytes (3 widened to 4), exactly, as the values
   fit: BitsAllocated 16 / BitsStored 8 becomes ``(u)int8``, 32 / 16 ``(u)int16``. The HTJ2K codestream's
   precision is BitsStored (the service's streams carry the real precision), and the IFRC layout follows
   the codestream precision, so the stored frame decodes to this array.
5. The full-resolution IFRC is ``zlib.crc32`` of the C-contiguous little-endian bytes of that array
   (``(rows, cols)`` for one sample, ``(rows, cols, 3)`` for three), computed from the array and not by
   decoding the stored HTJ2K. ``MinPixelValue``/``MaxPixelValue`` are the array's min/max over all samples
   and ``FrameSizeInBytes`` its ``nbytes``.

What pydicom 3.0 already does: for native, deflated, RLE and JPEG (.51/.57/.70) sources it applies step 3
itself by default (``correct_unused_bits``); for JPEG 2000 (.90/.91/.201-.203) and JPEG-LS (.80/.81) it only
corrects signedness against the codestream precision (JPEG 2000: monochrome only), so bits above BitsStored
can survive when the codestream precision exceeds BitsStored; big-endian native data comes back as a
big-endian dtype. Steps 2-4 are applied to every transcoded frame and are idempotent where pydicom already
did them.

Failure messages name attributes, transfer syntaxes and sizes only, never attribute values, so they carry no
patient data.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, generate_frames, parse_basic_offsets
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import iter_pixels

from .codec import EXPLICIT_VR_LITTLE_ENDIAN, normalize_frame
from .dicom import INSTANCE_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS, dicom_attributes
from .lossy import LossyJpegDecoding
from .specs import InstanceSpec

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"

#: Source syntaxes decoded by pydicom and transcoded to HTJ2K lossless.
TRANSCODED_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    }
)

#: Source syntaxes whose frames are stored unchanged.
RETAINED_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        # JPEG XL: the botocore model lists it among GetImageFrame's stored syntaxes (image/jxl), as the
        # original; pydicom 3.0 does not know the UID, which only matters for decoding (never done here).
        "1.2.840.10008.1.2.4.112",
    }
)

TRANSCODING_EXCEPTION = 0xB100  # 45312
UNSUPPORTED_TRANSFER_SYNTAX = 0xB120  # 45344

_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
_PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


class P10Error(ValueError):
    """The file cannot be imported (a FAILURE line). The message never contains attribute values."""


@dataclass(frozen=True)
class P10Warning:
    """One entry of a WARNING line's ``importResponse.warnings``."""

    code: int
    type: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """Return the ndjson form (``warning_reason_code`` is snake_case, as on the service)."""
        return {"warning_reason_code": self.code, "type": self.type, "message": self.message}


@dataclass(frozen=True, eq=False)
class P10Instance:
    """What a job imports from one P10 file.

    Attributes
    ----------
    study_uid, series_uid, sop_uid
        The grouping and instance keys.
    patient, study, series, instance
        The ``Patient``/``Study``/``Series``/Instance ``DICOM`` objects (instance includes the source
        ``TransferSyntaxUID``).
    spec
        Frames to store; ``None`` for an instance without pixel data.
    warning
        Set when the pixel data is stored as a blob.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    spec: InstanceSpec | None
    warning: P10Warning | None = None


def normalise_pixels(
    arr: npt.NDArray[Any], *, bits_allocated: int, bits_stored: int, pixel_representation: int
) -> npt.NDArray[Any]:
    """Apply normalisation steps 2 and 3 of the module docstring to one decoded frame.

    Parameters
    ----------
    arr
        A frame from ``iter_pixels(ds, raw=True)``.
    bits_allocated
        8, 16 or 32.
    bits_stored
        1..bits_allocated.
    pixel_representation
        0 unsigned, 1 two's complement.

    Returns
    -------
    numpy.ndarray
        A C-contiguous array of the container dtype (native byte order).

    Raises
    ------
    P10Error
        For non-integer arrays or invalid bit depths.
    """
    if arr.dtype.kind not in "iu":
        raise P10Error(f"pixel data decodes to {arr.dtype.kind!r}-kind values, not integers")
    if bits_allocated not in (8, 16, 32):
        raise P10Error(f"BitsAllocated {bits_allocated} is not supported (8, 16 or 32)")
    if not 1 <= bits_stored <= bits_allocated:
        raise P10Error(f"BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})")
    target = np.dtype(f"{'i' if pixel_representation == 1 else 'u'}{bits_allocated // 8}")
    out = arr.astype(target) if arr.dtype != target else np.array(arr, copy=True)
    shift = bits_allocated - bits_stored
    if shift:
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)
    return np.ascontiguousarray(out)


def read_p10(data: bytes, *, blob_code: int | None = None, lossy_jpeg: LossyJpegDecoding | None = None) -> P10Instance:
    """Parse one P10 file and decide how its pixel data is stored (see the module docstring).

    Parameters
    ----------
    data
        The file's bytes.
    blob_code
        Store any pixel data as a blob with this warning code (the import job's second attempt after the
        HTJ2K encoder failed on a transcoded file).
    lossy_jpeg
        Decode a JPEG Extended (``.51``) source this way instead of with pydicom alone (see
        :mod:`ahi_emulator.lossy`).

    Raises
    ------
    P10Error
        For every FAILURE case of the decision table.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise P10Error("not a DICOM P10 file: no preamble and DICM prefix") from exc
    except Exception as exc:
        raise P10Error(f"the file could not be parsed as DICOM P10 ({type(exc).__name__})") from exc
    try:
        return _instance(ds, blob_code, lossy_jpeg)
    except P10Error:
        raise
    except Exception as exc:
        # Element values are parsed lazily, so a malformed one surfaces here. Its text may quote the value.
        raise P10Error(f"the file could not be parsed as DICOM P10 ({type(exc).__name__})") from exc


def _required(ds: Dataset, keywords: Iterable[str]) -> None:
    for keyword in keywords:
        if keyword not in ds or ds[keyword].value in (None, "", b""):
            raise P10Error(f"DICOM attribute {keyword} does not exist")


def _instance(ds: Dataset, blob_code: int | None, lossy_jpeg: LossyJpegDecoding | None = None) -> P10Instance:
    meta = getattr(ds, "file_meta", None)
    if meta is None or not meta.get("TransferSyntaxUID"):
        raise P10Error("DICOM attribute TransferSyntaxUID does not exist")
    syntax = str(meta.TransferSyntaxUID)
    _required(ds, ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))
    instance = dicom_attributes(ds, INSTANCE_KEYWORDS)
    instance["TransferSyntaxUID"] = syntax
    series = dicom_attributes(ds, SERIES_KEYWORDS)
    spec: InstanceSpec | None = None
    warning: P10Warning | None = None
    if "PixelData" in ds:
        spec, warning = _pixel_spec(ds, syntax, instance, series, blob_code, lossy_jpeg)
    elif any(keyword in ds for keyword, _ in FLOAT_PIXEL_ELEMENTS):
        spec, warning = _float_blob(ds, syntax, instance, series)
    patient = dicom_attributes(ds, _PATIENT_KEYWORDS)
    return P10Instance(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        patient={keyword: patient.get(keyword) for keyword in _PATIENT_KEYWORDS},
        study=dicom_attributes(ds, STUDY_KEYWORDS),
        series=series,
        instance=instance,
        spec=spec,
        warning=warning,
    )


def _placeholders(ds: Dataset, count: int) -> list[npt.NDArray[Any]]:
    """Zero-memory ``(rows, cols)`` arrays: retained frames only take Width/Height from them."""
    shape = (int(ds.Rows), int(ds.Columns))
    if shape[0] < 1 or shape[1] < 1:
        raise P10Error("Rows and Columns must be at least 1")
    return [np.broadcast_to(np.uint8(0), shape)] * count


def _number_of_frames(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames")
    count = int(value) if value not in (None, "") else 1
    if count < 1:
        raise P10Error("NumberOfFrames must be at least 1")
    return count


def _pixel_spec(
    ds: Dataset,
    syntax: str,
    instance: dict[str, Any],
    series: dict[str, Any],
    blob_code: int | None,
    lossy_jpeg: LossyJpegDecoding | None = None,
) -> tuple[InstanceSpec, P10Warning | None]:
    _required(ds, _PIXEL_KEYWORDS)
    samples = int(ds.SamplesPerPixel)
    if samples not in (1, 3):
        raise P10Error(f"SamplesPerPixel {samples} is not supported (1 or 3)")
    if samples > 1:
        _required(ds, ("PlanarConfiguration",))
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.BitsStored)
    frames = _number_of_frames(ds)
    common = _common(ds, instance, series)
    if blob_code is not None:
        return _blob(ds, syntax, common, blob_code)
    if bits_allocated == 1:
        if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE or samples != 1:
            raise P10Error("BitsAllocated 1 is supported only for binary Segmentation Storage instances")
        return _binary_segmentation(ds, syntax, common)
    if bits_allocated not in (8, 16, 32):
        raise P10Error(f"BitsAllocated {bits_allocated} is not supported (8, 16 or 32)")
    if not 1 <= bits_stored <= bits_allocated:
        raise P10Error(f"BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})")
    if syntax in RETAINED_SYNTAXES:
        encoded = _encapsulated_frames(ds, frames)
        spec = InstanceSpec(
            frames=_placeholders(ds, len(encoded)), stored_transfer_syntax_uid=syntax, encoded_frames=encoded, **common
        )
        return spec, None
    if syntax not in TRANSCODED_SYNTAXES:
        return _blob(ds, syntax, common, UNSUPPORTED_TRANSFER_SYNTAX)
    return _transcoded(ds, syntax, common, frames, lossy_jpeg if syntax == JPEG_EXTENDED else None)


def _binary_segmentation(ds: Dataset, syntax: str, common: dict[str, Any]) -> tuple[InstanceSpec, P10Warning | None]:
    try:
        packed = [np.packbits(f.reshape(-1) & 1, bitorder="little").tobytes() for f in _segmentation_pixels(ds)]
    except Exception:
        return _blob(ds, syntax, common, TRANSCODING_EXCEPTION)
    if len(packed) != _number_of_frames(ds):
        return _blob(ds, syntax, common, TRANSCODING_EXCEPTION)
    spec = InstanceSpec(
        frames=_placeholders(ds, len(packed)),
        stored_transfer_syntax_uid=EXPLICIT_VR_LITTLE_ENDIAN,
        encoded_frames=packed,
        **common,
    )
    return spec, None


def _transcoded(
    ds: Dataset, syntax: str, common: dict[str, Any], frames: int, lossy_jpeg: LossyJpegDecoding | None = None
) -> tuple[InstanceSpec, P10Warning | None]:
    bits_stored = int(ds.BitsStored)
    try:
        arrays = [
            normalise_pixels(
                f,
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=bits_stored,
                pixel_representation=int(ds.PixelRepresentation),
            )
            for f in (lossy_jpeg.decode(ds) if lossy_jpeg else _decode(ds))
        ]
    except P10Error:
        raise
    except Exception:
        return _blob(ds, syntax, common, TRANSCODING_EXCEPTION)
    if len(arrays) != frames:
        return _blob(ds, syntax, common, TRANSCODING_EXCEPTION)
    try:
        arrays = [normalize_frame(narrow_container(a, bits_stored), bits_stored) for a in arrays]
    except ValueError as exc:
        raise P10Error(f"decoded frames are not importable: {exc}") from exc
    return InstanceSpec(frames=arrays, bits_stored=bits_stored, **common), None


def _decode(ds: Dataset) -> list[npt.NDArray[Any]]:
    return [np.asarray(frame) for frame in iter_pixels(ds, raw=True)]


def _encapsulated_frames(ds: Dataset, count: int) -> list[bytes]:
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended))
    except Exception as exc:
        raise P10Error("the encapsulated pixel data could not be split into frames") from exc
    if len(frames) != count:
        raise P10Error(f"the encapsulated pixel data holds {len(frames)} frame(s), NumberOfFrames says {count}")
    return frames


def _encapsulated(ds: Dataset) -> bool:
    """Whether the pixel data is encapsulated (fragments in items), read from the element itself: encapsulated
    pixel data always has undefined length. ``TransferSyntaxUID.is_encapsulated`` would raise for a syntax
    pydicom does not know (JPEG XL ``.112`` in pydicom 3.0), and such a file must become a 45344 blob, not a
    rejected file."""
    return "PixelData" in ds and bool(ds["PixelData"].is_undefined_length)


def _blob(ds: Dataset, syntax: str, common: dict[str, Any], code: int) -> tuple[InstanceSpec, P10Warning]:
    value: bytes = ds.PixelData
    blob = value
    if _encapsulated(ds):
        try:
            buffer = io.BytesIO(value)
            parse_basic_offsets(buffer)  # positions the buffer after the Basic Offset Table item
            blob = b"".join(generate_fragments(buffer))
        except Exception:
            blob = value
    if code == UNSUPPORTED_TRANSFER_SYNTAX:
        warning = P10Warning(
            code,
            "UnsupportedTransferSyntax",
            f"The file was imported but transfer syntax {syntax} is not supported for transcoding; "
            "the pixel data is stored as a blob.",
        )
    else:
        warning = P10Warning(
            code,
            "TranscodingException",
            f"The file was imported but its pixel data ({syntax}) could not be transcoded; "
            "the pixel data is stored as a blob.",
        )
    spec = InstanceSpec(frames=_placeholders(ds, 1), stored_transfer_syntax_uid=syntax, encoded_frames=[blob], **common)
    return spec, warning


FLOAT_PIXEL_ELEMENTS = (("FloatPixelData", "7FE0,0008"), ("DoubleFloatPixelData", "7FE0,0009"))
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


def narrow_container(arr: npt.NDArray[Any], bits_stored: int) -> npt.NDArray[Any]:
    """Normalisation step 4: the ``ceil(bits_stored / 8)``-byte container (3 widened to 4), same signedness.

    Parameters
    ----------
    arr
        Output of :func:`normalise_pixels` (values fit ``bits_stored`` bits).
    bits_stored
        1..32.

    Returns
    -------
    numpy.ndarray
        ``arr`` itself when its container already has that size, else an exact narrowing copy.
    """
    size = (bits_stored + 7) // 8
    size = 4 if size == 3 else size
    if size >= arr.dtype.itemsize:
        return arr
    return np.ascontiguousarray(arr.astype(np.dtype(f"{arr.dtype.kind}{size}")))


def _common(ds: Dataset, instance: dict[str, Any], series: dict[str, Any]) -> dict[str, Any]:
    """The InstanceSpec fields every pixel-data decision shares."""
    return {
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "photometric_interpretation": instance.get("PhotometricInterpretation"),
        "modality": series.get("Modality") or "OT",
        "sop_class_uid": instance.get("SOPClassUID") or InstanceSpec.sop_class_uid,
        "series_number": series.get("SeriesNumber"),
        "dicom": instance,
        "series_dicom": series,
    }


def _float_blob(
    ds: Dataset, syntax: str, instance: dict[str, Any], series: dict[str, Any]
) -> tuple[InstanceSpec, P10Warning]:
    """Float or Double Float Pixel Data: imported, the element's value kept as one blob frame (a guess)."""
    _required(ds, ("Rows", "Columns"))
    keyword, tag = next((k, t) for k, t in FLOAT_PIXEL_ELEMENTS if k in ds)
    warning = P10Warning(
        TRANSCODING_EXCEPTION,
        "TranscodingException",
        f"The file was imported but its {keyword} ({tag}, floating point pixel data) could not be transcoded; "
        "the pixel data is stored as a blob.",
    )
    spec = InstanceSpec(
        frames=_placeholders(ds, 1),
        stored_transfer_syntax_uid=syntax,
        encoded_frames=[bytes(ds[keyword].value)],
        **_common(ds, instance, series),
    )
    return spec, warning


def _segmentation_pixels(ds: Dataset) -> list[npt.NDArray[Any]]:
    """The 0/1 pixels of each frame of a binary segmentation, flat, whatever the syntax."""
    pixels = int(ds.Rows) * int(ds.Columns)
    count = _number_of_frames(ds)
    if not _encapsulated(ds):
        # The frames follow each other in one bit stream; pydicom 3.0.2 under-reads frames that start mid-byte.
        stream = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), bitorder="little")
        if stream.size < pixels * count:
            raise P10Error(f"PixelData holds {stream.size} bits, {count} frames need {pixels * count}")
        return [stream[k * pixels : (k + 1) * pixels] for k in range(count)]
    if str(ds.file_meta.TransferSyntaxUID) == RLE_LOSSLESS:
        return [_rle_bits(frame, pixels) for frame in _encapsulated_frames(ds, count)]
    return [f.reshape(-1) for f in _decode(ds)]


def _rle_bits(frame: bytes, pixels: int) -> npt.NDArray[Any]:
    """Decode a one-segment RLE frame of a 1-bit image: its packed bits, or one byte a pixel."""
    offsets = struct.unpack_from("<16I", frame, 0)
    if offsets[0] != 1:
        raise P10Error(f"a 1-bit RLE frame has {offsets[0]} segments, not 1")
    segment = np.frombuffer(imagecodecs.packbits_decode(frame[offsets[1] :]), dtype=np.uint8)
    if segment.size >= pixels:  # a byte a pixel
        return segment[:pixels] & 1
    bits = np.unpackbits(segment, bitorder="little")
    if bits.size < pixels:
        raise P10Error(f"a 1-bit RLE frame decodes to {bits.size} bits, the frame has {pixels}")
    return bits[:pixels]
