"""What the core needs from the outside world, as small interfaces; the adapters implement them.

``FrameSource``     GetImageSetMetadata, GetImageFrame and the data store's lossless storage format (GetDatastore)
                    (adapter: ``healthimaging.HealthImagingSource``)
``ImportJobs``      GetDICOMImportJob and ListDICOMImportJobs (adapter: ``healthimaging.HealthImagingJobs``)
``ImageSetListing`` SearchImageSets and GetImageSet, for a data store audit
                    (adapter: ``healthimaging.HealthImagingListing``)
``JobOutputStore``  the job output folder and the source files in S3 (adapter: ``s3_output.JobOutputReader``)
``Ledger``          the verification ledger, a DynamoDB table (adapter: ``dynamo_ledger.DynamoLedger``)

Each port has its own error type, raised by the adapters with a message that names what failed and where,
so the domain never inspects an SDK exception. Tests implement the same protocols with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from .job_output import LineKind
from .ledger import LedgerEntry
from .locations import S3Location
from .outcomes import Reason
from .report import ObjectEvidence, Verdict


@dataclass(frozen=True)
class FetchedFrame:
    """What GetImageFrame returned for one frame."""

    blob: bytes
    content_type: str | None


class FrameFetchError(Exception):
    """GetImageFrame did not deliver the frame (after the client's own retries)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImageSetError(Exception):
    """The image set as a whole cannot be verified (its metadata could not be fetched or read)."""


class DatastoreError(Exception):
    """The data store's properties cannot be read (GetDatastore failed after the client's retries).

    ``lasting`` says the failure will not pass within a run (access denied, not found), so it may be remembered.
    """

    def __init__(self, message: str, *, lasting: bool = False) -> None:
        super().__init__(message)
        self.lasting = lasting


class FrameSource(Protocol):
    """Where metadata and frames come from."""

    def get_image_set_metadata(self, datastore_id: str, image_set_id: str, version_id: str | None) -> bytes:
        """Return the raw ``imageSetMetadataBlob`` bytes; raise :class:`ImageSetError` on failure."""
        ...

    def get_image_frame(self, datastore_id: str, image_set_id: str, image_frame_id: str) -> FetchedFrame:
        """Return one frame's bytes and content type; raise :class:`FrameFetchError` on failure."""
        ...

    def lossless_storage_format(self, datastore_id: str) -> str:
        """Return the data store's ``losslessStorageFormat`` (``HTJ2K``, ``JPEG_2000_LOSSLESS``); raise
        :class:`DatastoreError` on failure. Asked only for instances that omit their stored syntax."""
        ...


@dataclass(frozen=True)
class ImportJob:
    """``GetDICOMImportJob.jobProperties``, the source of truth for where a job's output is."""

    status: str
    message: str | None
    output_folder_uri: str


class ImportJobError(Exception):
    """An import job cannot be described or listed (not found, access denied, ...).

    ``not_found`` says the service does not know the job: a fact about the job (a manifest for it is not
    from an import of this data store), where any other failure is a reason to try again.
    """

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class ImportJobs(Protocol):
    """The import-job control plane."""

    def describe(self, datastore_id: str, job_id: str) -> ImportJob:
        """The job's status and output folder; raise :class:`ImportJobError` on failure."""
        ...

    def job_ids(self, datastore_id: str, status: str) -> Iterator[str]:
        """IDs of the data store's jobs in ``status``, newest first as the service lists them."""
        ...


class JobOutputError(Exception):
    """The job output or a source file cannot be read (missing after waiting, access denied, bad URI).

    ``code`` is the storage service's short error code (``NoSuchKey``, ``AccessDenied``), when there is one:
    the report names it without naming the object (source file keys may embed patient names).
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and what identifies them (ETag, SHA-256)."""

    body: bytes
    evidence: ObjectEvidence


class JobOutputStore(Protocol):
    """Reads one job's output folder and its source files."""

    def read_manifest(self, folder: S3Location, wait_s: float) -> StoredObject:
        """The manifest, waiting up to ``wait_s`` for a late one; raise :class:`JobOutputError`."""
        ...

    def lines(
        self, kind: LineKind, prefix: S3Location, on_file: Callable[[ObjectEvidence], None] | None = None
    ) -> Iterator[tuple[str, int, bytes]]:
        """``(key, line number, line)`` of every ndjson file under ``prefix``, calling ``on_file`` with each
        file's evidence once it has been read to its end; raise :class:`JobOutputError`."""
        ...

    def read_object(self, location: S3Location) -> bytes:
        """One object's bytes (a source P10 file); raise :class:`JobOutputError`."""
        ...


@dataclass(frozen=True)
class ListedImageSet:
    """One image set a data store listing found: its ID and what the audit pins (never its DICOM tags)."""

    image_set_id: str
    version: int | None
    """The current version when listed; verified as that version, so an update during the audit cannot
    change what is verified."""
    is_primary: bool | None = None
    created_at: float | None = None
    """``createdAt`` in epoch seconds, when the listing gives it: the application checkpoints its walk by it."""


class ImageSetListError(Exception):
    """A data store's image sets cannot be listed, or an image set cannot be described.

    ``not_found`` says the service does not know the data store (for a listing) or the image set (for
    :meth:`ImageSetListing.exists`, where it is the answer rather than an error).
    """

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class ImageSetListing(Protocol):
    """A data store's image sets, as a stream (a data store may hold millions)."""

    def image_sets(
        self, datastore_id: str, *, created_after: float | None = None, updated_after: float | None = None
    ) -> Iterator[ListedImageSet]:
        """Every image set of the data store (with the filters: created or updated at or after the epoch
        seconds given), page by page; raise :class:`ImageSetListError` when a page cannot be read."""
        ...

    def exists(self, datastore_id: str, image_set_id: str) -> bool:
        """Whether the image set still exists (GetImageSet); raise :class:`ImageSetListError` when that cannot
        be told."""
        ...


class LedgerError(Exception):
    """The ledger cannot be written or read (after the client's retries, and the adapter's own for rows
    DynamoDB left unprocessed)."""


class Ledger(Protocol):
    """The verification ledger: rows written by verifications, read by an auditor."""

    def record(self, entries: Iterable[LedgerEntry]) -> int:
        """Write the rows (replacing any with the same key); return how many; raise :class:`LedgerError`."""
        ...

    def entries(
        self, datastore_id: str, *, since: str | None = None, verdict: Verdict | None = None
    ) -> Iterator[LedgerEntry]:
        """The data store's rows verified at or after ``since`` (ISO 8601 UTC), of ``verdict`` (any when
        None), oldest first; raise :class:`LedgerError`."""
        ...

    def has_row(self, datastore_id: str, image_set_id: str) -> bool:
        """Whether any verification of the image set (any version) is recorded; raise :class:`LedgerError`."""
        ...
