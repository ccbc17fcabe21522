"""The vocabulary of results: a frame's status and reason, and how its source, stored and decoded
checksums relate (the three-way check).

Kept apart from the code that computes them (``frame_check``, ``source_check``, which load the native
codecs) so that the report, the alert and the application's trigger can speak about results without
importing numpy or imagecodecs.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """The verdict for one frame."""

    MATCH = "MATCH"
    MISMATCH = "MISMATCH"
    ERROR = "ERROR"


class Reason(enum.StrEnum):
    """Why a frame is ERROR (or, for MISMATCH, what disagreed)."""

    CHECKSUM_DIFFERS = "checksum-differs"
    DIFFERS_FROM_SOURCE = "differs-from-source"
    """The three-way check: the original file's pixels are not what was imported (see :data:`MISMATCH_RELATIONS`)."""
    NO_CHECKSUM = "no-checksum-in-metadata"
    METADATA_INVALID = "metadata-entry-invalid"
    FRAME_NOT_FOUND = "frame-not-found"
    ACCESS_DENIED = "access-denied"
    FETCH_FAILED = "fetch-failed"
    INCOMPLETE_BODY = "incomplete-body"
    TRUNCATED = "truncated-codestream"
    DECODE_FAILED = "decode-failed"
    UNSUPPORTED_SYNTAX = "unsupported-transfer-syntax"
    UNSUPPORTED_CONTENT_TYPE = "unsupported-content-type"
    STORAGE_FORMAT_DISAGREES = "storage-format-disagrees"
    """A frame of HealthImaging's own lossless transcode whose content type or codestream kind (HTJ2K or classic
    JPEG 2000) is not what its stored syntax, stated or resolved from the data store's format, says."""
    NO_RULE_MATCHED = "checksum-definition-unknown"
    UNKNOWN_CHECKSUM_TYPE = "unknown-checksum-type"
    FLOAT_PIXEL_DATA = "float-pixel-data"
    """Float or Double Float Pixel Data kept as the original: AWS documents neither how it is stored nor its
    checksum, so the frame is not verified."""
    INTERNAL = "internal-error"


class ThreeWay(enum.StrEnum):
    """How source, stored and decoded checksums relate for one frame.

    =============================  =====================================================================
    ``consistent``                 source = stored = decoded
    ``import-changed-pixels``      stored differs from source, decoded agrees with stored: the import
                                   transcoded other pixels than the file held
    ``storage-corrupted``          stored agrees with source, decoded differs: storage or retrieval
    ``stored-checksum-wrong``      source = decoded, the stored checksum differs: the pixels are intact but
                                   the published checksum is not theirs
    ``all-differ``                 no two agree
    ``lossy-decoder-differs``      a lossy source: no decoder reproduces the stored checksum, but every
                                   sample of the stored frame is within ``LOSSY_DECODER_TOLERANCE`` of
                                   the source's: the import's decoder rounds differently (not a mismatch)
    ``lossy-source-unresolved``    a lossy source no decoder reproduces, and the stored pixels could not
                                   be compared with it: unverified
    ``import-warned``              the import warned that the file's frames were not stored as usual
                                   (a blob, frames not extracted, a frame count that disagrees): nothing
                                   documents how such frames relate to the file's, so they are not
                                   compared: unverified, never a mismatch
    =============================  =====================================================================
    """

    CONSISTENT = "consistent"
    IMPORT_CHANGED_PIXELS = "import-changed-pixels"
    STORAGE_CORRUPTED = "storage-corrupted"
    STORED_CHECKSUM_WRONG = "stored-checksum-wrong"
    ALL_DIFFER = "all-differ"
    SOURCE_DIFFERS = "source-differs-from-stored"
    """Like import-changed-pixels, for a frame that could not be decoded."""
    SOURCE_AGREES = "source-agrees-with-stored"
    """The stored frame could not be fetched or decoded, but the stored checksum matches the source."""
    NO_SOURCE = "no-source-frame"
    """No listed source file holds this SOP instance and frame."""
    SOURCE_UNREADABLE = "source-unreadable"
    LOSSY_DECODER_DIFFERS = "lossy-decoder-differs"
    """A lossy source whose decoded pixels depend on the decoder: the stored pixels are within the tolerance."""
    LOSSY_SOURCE_UNRESOLVED = "lossy-source-unresolved"
    """A lossy source no decoder reproduces, whose stored pixels could not be compared with it."""
    IMPORT_WARNED = "import-warned"
    """The file's WARNING line has a code that affects frames (0xB100-0xB120): not compared."""


MISMATCH_RELATIONS = frozenset(
    {
        ThreeWay.IMPORT_CHANGED_PIXELS,
        ThreeWay.STORAGE_CORRUPTED,
        ThreeWay.STORED_CHECKSUM_WRONG,
        ThreeWay.ALL_DIFFER,
        ThreeWay.SOURCE_DIFFERS,
    }
)
"""Relations that mean "what is stored is not what the file held, or not what its checksum says": each
makes the frame a MISMATCH, whatever the stored-checksum check alone said. Every one of them has two
checksums of lossless data that disagree; ``source-agrees-with-stored``, ``no-source-frame`` and
``source-unreadable`` compare nothing and leave the frame's status as the frame check decided.
``lossy-decoder-differs`` is not one: a lossy source's pixels are what its decoder makes of it, and decoders
may round differently (``source_check.LOSSY_DECODER_TOLERANCE``)."""

SETTLED_RELATIONS = frozenset({ThreeWay.CONSISTENT, ThreeWay.LOSSY_DECODER_DIFFERS})
"""Relations that compared the frame with its source and found nothing wrong: every other relation leaves the
three-way check of the frame incomplete (the job cannot be CLEAN)."""


def three_way(source: int | None, stored: int | None, decoded: int | None) -> ThreeWay:
    """Classify one frame from its three checksums (None where a value is not available)."""
    if source is None:
        return ThreeWay.NO_SOURCE
    if decoded is None:
        return ThreeWay.SOURCE_AGREES if source == stored else ThreeWay.SOURCE_DIFFERS
    # (source = stored, stored = decoded, source = decoded); equality is transitive, so these are all cases.
    return _BY_AGREEMENT[(source == stored, stored == decoded, source == decoded)]


_BY_AGREEMENT = {
    (True, True, True): ThreeWay.CONSISTENT,
    (False, True, False): ThreeWay.IMPORT_CHANGED_PIXELS,
    (True, False, False): ThreeWay.STORAGE_CORRUPTED,
    (False, False, True): ThreeWay.STORED_CHECKSUM_WRONG,
    (False, False, False): ThreeWay.ALL_DIFFER,
}
