"""Transfer syntaxes HealthImaging stores, the content type GetImageFrame returns for each, and which
checksum rules apply to them.

AWS documents the IFRC of frames it transcodes to HTJ2K (``.202``) as the CRC-32 of the decoded full
resolution image. For retained syntaxes it says only "calculated on the original image", so those are
tried as raw bytes first and decoded second, and a frame matching neither is reported as unverifiable
rather than corrupt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K_RETAINED = "1.2.840.10008.1.2.4.203"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
"""What a data store created with ``losslessStorageFormat = JPEG_2000_LOSSLESS`` stores frames as."""
JPEG2000_RETAINED = "1.2.840.10008.1.2.4.91"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_XL = "1.2.840.10008.1.2.4.112"

_MPEG2 = (
    "1.2.840.10008.1.2.4.100",
    "1.2.840.10008.1.2.4.100.1",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.101.1",
)
_H264 = tuple(f"1.2.840.10008.1.2.4.{n}{suffix}" for n in range(102, 107) for suffix in ("", ".1"))
_HEVC = ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")


class Rule(enum.StrEnum):
    """How a checksum was computed."""

    DECODED_HTJ2K = "decoded-htj2k"
    """CRC-32 of the frame decoded by OpenJPH."""
    DECODED_J2K = "decoded-j2k"
    """CRC-32 of the frame decoded by OpenJPEG (classic JPEG 2000, or the OpenJPH fallback)."""
    RAW_BYTES = "raw-bytes"
    """CRC-32 of the bytes GetImageFrame returned, undecoded."""


class RuleSet(enum.Enum):
    """Which rules apply to a stored syntax, and what a frame matching none of them means."""

    DECODED = "decoded"
    """HealthImaging's own lossless transcode (HTJ2K, or JPEG 2000 in a JPEG 2000 Lossless data store): the
    decoded rule is documented and the storage lossless, so no match is a MISMATCH."""
    RAW_THEN_DECODED = "raw-then-decoded"
    """Retained (HT)J2K originals: the definition is undocumented, so no match is unverifiable."""
    RAW = "raw"
    """Retained lossy JPEG, binary segmentation, video: decoded values depend on the decoder; raw only."""


@dataclass(frozen=True)
class StoredSyntax:
    """What HealthImaging serves for one ``StoredTransferSyntaxUID``."""

    uid: str
    content_type: str
    rules: RuleSet
    high_throughput: bool | None = None
    """For HealthImaging's own transcodes, the codestream kind it writes: HTJ2K code-blocks (True) or classic
    JPEG 2000 (False). A frame of the other kind was not made by the transcode its syntax names."""

    @property
    def authoritative(self) -> bool:
        """Whether a frame matching no rule is corrupt (True) or merely unverifiable (False)."""
        return self.rules is RuleSet.DECODED


_SYNTAXES: dict[str, StoredSyntax] = {
    s.uid: s
    for s in (
        StoredSyntax(HTJ2K_LOSSLESS_RPCL, "image/jph", RuleSet.DECODED, high_throughput=True),
        StoredSyntax(HTJ2K_RETAINED, "image/jphc", RuleSet.RAW_THEN_DECODED),
        # The content type of these frames is not in the botocore model's list; classic JPEG 2000's is expected.
        StoredSyntax(JPEG2000_LOSSLESS, "image/j2c", RuleSet.DECODED, high_throughput=False),
        StoredSyntax(JPEG2000_RETAINED, "image/j2c", RuleSet.RAW_THEN_DECODED),
        StoredSyntax(JPEG_BASELINE, "image/jpeg", RuleSet.RAW),
        StoredSyntax(EXPLICIT_VR_LITTLE_ENDIAN, "application/octet-stream", RuleSet.RAW),
        StoredSyntax(JPEG_XL, "image/jxl", RuleSet.RAW),
        *(StoredSyntax(uid, "video/mpeg", RuleSet.RAW) for uid in _MPEG2),
        *(StoredSyntax(uid, "video/mp4", RuleSet.RAW) for uid in _H264),
        # "video/H256" is what the botocore model documents for HEVC (sic).
        *(StoredSyntax(uid, "video/H256", RuleSet.RAW) for uid in _HEVC),
    )
}

#: Content types whose bytes are a JPEG 2000 family codestream (bare or boxed) that the codecs decode.
DECODABLE_CONTENT_TYPES = frozenset({"image/jph", "image/jphc", "image/j2c"})


LOSSLESS_STORAGE_FORMATS = {"HTJ2K": HTJ2K_LOSSLESS_RPCL, "JPEG_2000_LOSSLESS": JPEG2000_LOSSLESS}
"""``GetDatastore``'s ``losslessStorageFormat`` -> the syntax HealthImaging transcodes the data store's frames to."""
DEFAULT_LOSSLESS_STORAGE_FORMAT = "HTJ2K"
"""``CreateDatastore``'s documented default, assumed when the data store's format cannot be read."""


def stored_syntax(uid: str | None) -> StoredSyntax | None:
    """Return what HealthImaging serves for a stored transfer syntax.

    Parameters
    ----------
    uid : str or None
        The instance's ``StoredTransferSyntaxUID``. Absent or ``None`` means HTJ2K lossless RPCL, the
        syntax HealthImaging transcodes to.

    Returns
    -------
    StoredSyntax or None
        ``None`` when the UID is not one HealthImaging documents.
    """
    return _SYNTAXES.get(uid or HTJ2K_LOSSLESS_RPCL)


def content_type_of(raw: str | None) -> str:
    """Normalise a Content-Type header: media type only, parameters dropped, lower-cased.

    The HEVC type is documented with a capital (``video/H256``), so compare case-insensitively.
    """
    return (raw or "application/octet-stream").split(";", 1)[0].strip().lower()
