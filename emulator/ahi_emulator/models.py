"""The emulator's state and the operations on it: data stores, image sets (versioned metadata), stored frames and
import job records.

This is the one module that owns mutable state, behind one re-entrant lock, so every public method is
thread-safe. It knows metadata documents only as far as storing, versioning, serving and faulting them
needs; how a document is built is :mod:`ahi_emulator.metadata`. It keeps the record of each import job and
its status transitions; running a job, validating its request and sending its event is
:mod:`ahi_emulator.jobs`. Saving and loading the state is :mod:`ahi_emulator.persistence`.

The frames it keeps are :class:`~ahi_emulator.metadata.StoredFrame` objects, the builder's output type, so
that the imports run one way: the models import the builder, and the builder never imports the models.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import imagecodecs

from .codec import JPEG2000_LOSSLESS, box_jph, encode_htj2k, encode_j2k_lossless, flip_one_pixel, is_htj2k_lossless
from .faults import ImportFaults, InjectedFaults
from .ids import check_id
from .lossy import LossyJpegDecoding
from .metadata import (
    PreparedInstance,
    StoredFrame,
    build_document,
    full_resolution,
    image_set_info,
    iter_image_frames,
)
from .specs import ImageSetInfo

JobStatus = Literal["SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED"]
JOB_STATUSES: tuple[str, ...] = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
TERMINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED"})

_MESSAGE_DISALLOWED = re.compile(r"[^\w -:`]")


class NotFoundError(LookupError):
    """A data store, image set, version, frame or import job does not exist (the API's ResourceNotFoundException)."""


def safe_message(text: str) -> str:
    """Fit a job ``message`` to the model's pattern ``[\\w -:`]+`` and 2048 characters."""
    return _MESSAGE_DISALLOWED.sub(" ", text)[:2048] or "error"


def job_folder_uri(output_s3_uri: str, datastore_id: str, job_id: str) -> str:
    """Join the caller's output prefix and ``<datastoreId>-DicomImport-<jobId>/``, with or without a trailing ``/``."""
    base = output_s3_uri if output_s3_uri.endswith("/") else output_s3_uri + "/"
    return f"{base}{datastore_id}-DicomImport-{job_id}/"


@dataclass
class ImageSetRecord:
    """One image set: its versions' metadata documents, its stored frames and the gzip bodies served so far."""

    image_set_id: str
    created_at: float
    updated_at: float
    # Published documents are never mutated in place (mutations swap in a copy), so request threads can
    # serialise them without holding the lock.
    versions: dict[str, dict[str, Any]]
    frames: dict[str, StoredFrame]
    gzip_cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def latest_version(self) -> str:
        """The highest version ID."""
        return max(self.versions, key=int)


LOSSLESS_STORAGE_FORMATS = ("HTJ2K", "JPEG_2000_LOSSLESS")
"""``CreateDatastore``'s ``losslessStorageFormat`` (botocore model): what imported frames are transcoded to."""
ACCOUNT_ID = "123456789012"


@dataclass
class DatastoreRecord:
    """One data store and its image sets, in creation order."""

    datastore_id: str
    created_at: float
    image_sets: dict[str, ImageSetRecord] = field(default_factory=dict)
    lossless_storage_format: str = "HTJ2K"
    name: str | None = None

    def summary(self, region: str) -> dict[str, Any]:
        """``ListDatastores``' ``DatastoreSummary`` (epoch seconds, as the service's JSON has them)."""
        return {
            "datastoreId": self.datastore_id,
            **({"datastoreName": self.name} if self.name else {}),
            "datastoreStatus": "ACTIVE",
            "datastoreArn": f"arn:aws:medical-imaging:{region}:{ACCOUNT_ID}:datastore/{self.datastore_id}",
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
        }

    def properties(self, region: str) -> dict[str, Any]:
        """``GetDatastore``'s ``datastoreProperties``."""
        return {**self.summary(region), "losslessStorageFormat": self.lossless_storage_format}


@dataclass
class JobRecord:
    """The record of one import job (the API views are :meth:`properties` and :meth:`summary`).

    ``status``, ``ended_at`` and ``message`` change under the models' lock only (see
    :meth:`HealthImagingBackend.record_job_status`); ``done`` is set by the job's thread when it has
    finished writing, which can be after the job is terminal.
    """

    job_id: str
    datastore_id: str
    job_name: str
    client_token: str
    data_access_role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    submitted_at: float
    status: str = "SUBMITTED"
    ended_at: float | None = None
    message: str | None = None
    input_owner_account_id: str | None = None
    import_configuration: dict[str, Any] | None = None
    faults: ImportFaults = field(default_factory=ImportFaults)
    lossy_jpeg: LossyJpegDecoding | None = None
    """How the job decodes JPEG Extended sources (None: pydicom, see :mod:`ahi_emulator.lossy`)."""
    injected: InjectedFaults = field(default_factory=InjectedFaults)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def job_folder_uri(self) -> str:
        """``outputS3Uri`` with the job folder appended, as ``GetDICOMImportJob`` reports it."""
        return job_folder_uri(self.output_s3_uri, self.datastore_id, self.job_id)

    def properties(self) -> dict[str, Any]:
        """The ``GetDICOMImportJob`` ``jobProperties`` (timestamps as epoch seconds)."""
        props = {**self.summary(), "inputS3Uri": self.input_s3_uri, "outputS3Uri": self.job_folder_uri}
        if self.import_configuration is not None:
            props["importConfiguration"] = self.import_configuration
        return props

    def summary(self) -> dict[str, Any]:
        """One ``ListDICOMImportJobs`` ``jobSummaries`` entry: the properties both operations share."""
        item: dict[str, Any] = {
            "jobId": self.job_id,
            "jobName": self.job_name,
            "jobStatus": self.status,
            "datastoreId": self.datastore_id,
            "dataAccessRoleArn": self.data_access_role_arn,
            "submittedAt": self.submitted_at,
        }
        if self.ended_at is not None:
            item["endedAt"] = self.ended_at
        if self.message is not None:
            item["message"] = self.message
        return item


class HealthImagingBackend:
    """The state of one emulated HealthImaging: data stores, image sets, frames and import job records.

    All public methods are thread-safe; the HTTP app and the import job threads call into one instance.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._datastores: dict[str, DatastoreRecord] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._job_tokens: dict[tuple[str, str], str] = {}
        self._job_changed = threading.Condition(self._lock)

    # ----------------------------------------------------------------------------------------------- setup

    def create_datastore(
        self, datastore_id: str | None = None, *, lossless_storage_format: str = "HTJ2K", name: str | None = None
    ) -> str:
        """Create an empty data store.

        Parameters
        ----------
        datastore_id
            32 characters ``[0-9a-z]``; random when ``None``.
        lossless_storage_format
            ``HTJ2K`` (the service's default) or ``JPEG_2000_LOSSLESS``.
        name
            ``datastoreName``.

        Returns
        -------
        str
            The data store ID.

        Raises
        ------
        ValueError
            An ID in use or malformed, or an unknown storage format.
        """
        if lossless_storage_format not in LOSSLESS_STORAGE_FORMATS:
            raise ValueError(f"losslessStorageFormat must be one of {', '.join(LOSSLESS_STORAGE_FORMATS)}")
        datastore_id = check_id(datastore_id, "datastore_id") if datastore_id else uuid.uuid4().hex
        with self._lock:
            if datastore_id in self._datastores:
                raise ValueError(f"data store {datastore_id} already exists")
            self._datastores[datastore_id] = DatastoreRecord(
                datastore_id, time.time(), lossless_storage_format=lossless_storage_format, name=name
            )
        return datastore_id

    def datastore_properties(self, datastore_id: str, region: str) -> dict[str, Any]:
        """``GetDatastore``'s ``datastoreProperties``.

        Raises
        ------
        NotFoundError
            No such data store.
        """
        with self._lock:
            store = self._datastores.get(datastore_id)
            if store is None:
                raise NotFoundError(f"data store {datastore_id} not found")
            return store.properties(region)

    def lossless_storage_format(self, datastore_id: str) -> str:
        """The data store's ``losslessStorageFormat``; raise :class:`NotFoundError` for an unknown data store."""
        with self._lock:
            return self._datastore(datastore_id).lossless_storage_format

    def datastore_summaries(self, region: str) -> list[dict[str, Any]]:
        """``ListDatastores``' summaries, in creation order."""
        with self._lock:
            return [store.summary(region) for store in self._datastores.values()]

    def datastore_ids(self) -> list[str]:
        """Return the IDs of every data store, in creation order."""
        with self._lock:
            return list(self._datastores)

    def check_datastore(self, datastore_id: str) -> None:
        """Raise :class:`NotFoundError` unless the data store exists."""
        self._datastore(datastore_id)

    def publish_image_set(
        self,
        datastore_id: str,
        image_set_id: str,
        patient_dicom: Mapping[str, Any],
        study_dicom: Mapping[str, Any],
        instances: Sequence[PreparedInstance],
    ) -> ImageSetInfo:
        """Store prepared instances as a new image set, version ``"1"``, built by :func:`~.metadata.build_document`.

        Parameters
        ----------
        datastore_id
            An existing data store.
        image_set_id
            A new image set ID.
        patient_dicom, study_dicom
            The document's ``Patient.DICOM`` and ``Study.DICOM``.
        instances
            From :func:`~ahi_emulator.metadata.prepare_instances` or
            :func:`~ahi_emulator.metadata.prepare_import_instance`.

        Returns
        -------
        ImageSetInfo
            The stored version's frame IDs and full-resolution checksums.

        Raises
        ------
        NotFoundError
            Unknown data store.
        ValueError
            When the image set already exists.
        """
        doc, frames = build_document(datastore_id, image_set_id, patient_dicom, study_dicom, instances)
        now = time.time()
        with self._lock:
            store = self._datastore(datastore_id)
            if image_set_id in store.image_sets:
                raise ValueError(f"image set {image_set_id} already exists")
            store.image_sets[image_set_id] = ImageSetRecord(image_set_id, now, now, {"1": doc}, frames)
        return image_set_info(datastore_id, image_set_id, "1", doc)

    def new_version(self, datastore_id: str, image_set_id: str) -> str:
        """Create the next image set version as a copy of the latest one's metadata.

        Returns
        -------
        str
            The new version ID.
        """
        with self._lock:
            image_set = self._image_set(datastore_id, image_set_id)
            version = str(int(image_set.latest_version) + 1)
            image_set.versions[version] = copy.deepcopy(image_set.versions[image_set.latest_version])
            image_set.updated_at = time.time()
            return version

    # ---------------------------------------------------------------------------------------------- reads

    def image_sets(self) -> list[ImageSetInfo]:
        """Describe the latest version of every image set (no patient data)."""
        with self._lock:
            items = [
                (ds.datastore_id, iset.image_set_id, iset.latest_version, iset.versions[iset.latest_version])
                for ds in self._datastores.values()
                for iset in ds.image_sets.values()
            ]
        return [image_set_info(*item) for item in items]

    def metadata(self, datastore_id: str, image_set_id: str, version_id: str | None = None) -> dict[str, Any]:
        """Return a copy of an image set version's metadata document (latest when ``version_id`` is None)."""
        return copy.deepcopy(self._document(datastore_id, image_set_id, version_id)[1])

    def metadata_gzip(self, datastore_id: str, image_set_id: str, version_id: str | None = None) -> bytes:
        """Return the gzip-compressed JSON metadata, as ``GetImageSetMetadata`` sends it (cached)."""
        image_set, doc, version = self._document(datastore_id, image_set_id, version_id)
        with self._lock:
            cached = image_set.gzip_cache.get(version)
        if cached is not None:
            return cached
        body = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
        with self._lock:
            if image_set.versions.get(version) is doc:
                image_set.gzip_cache[version] = body
        return body

    def image_set_properties(
        self, datastore_id: str, image_set_id: str, version_id: str | None = None
    ) -> dict[str, Any]:
        """Return the ``GetImageSet`` response body."""
        image_set, _, version = self._document(datastore_id, image_set_id, version_id)
        return {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "versionId": version,
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": "CREATED",
            "createdAt": image_set.created_at,
            "updatedAt": image_set.updated_at,
        }

    def frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> tuple[bytes, str]:
        """Return ``(stored bytes, content type)`` of a frame, as ``GetImageFrame`` serves it."""
        stored = self._frame(datastore_id, image_set_id, frame_id)
        return stored.data, stored.content_type

    # ------------------------------------------------------------------------------ stored-data faults

    def corrupt_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> None:
        """Change a stored frame so that it still decodes, but to different pixels.

        HTJ2K frames are decoded, one sample's lowest bit is flipped and the result re-encoded (boxed
        again if it was). Retained frames get one byte flipped, so they may no longer decode.
        """
        with self._lock:
            stored = self._frame(datastore_id, image_set_id, frame_id)
            data, boxed, syntax, bits = stored.data, stored.boxed, stored.transfer_syntax, stored.bits_stored
        if is_htj2k_lossless(syntax):
            pixels = imagecodecs.htj2k_decode(data, planar=False)
            codestream = encode_htj2k(flip_one_pixel(pixels), bits)
            changed = box_jph(codestream) if boxed else codestream
        elif syntax == JPEG2000_LOSSLESS:
            changed = encode_j2k_lossless(flip_one_pixel(imagecodecs.jpeg2k_decode(data, planar=False)), bits)
        else:
            mutable = bytearray(data)
            mutable[len(mutable) // 2] ^= 0x01
            changed = bytes(mutable)
        with self._lock:
            self._frame(datastore_id, image_set_id, frame_id).data = changed

    def truncate_frame(
        self, datastore_id: str, image_set_id: str, frame_id: str, keep_bytes: int | None = None
    ) -> None:
        """Cut a stored frame to ``keep_bytes`` bytes (default: half).

        Raises
        ------
        ValueError
            When ``keep_bytes`` is negative or not shorter than the frame.
        """
        with self._lock:
            stored = self._frame(datastore_id, image_set_id, frame_id)
            keep = len(stored.data) // 2 if keep_bytes is None else keep_bytes
            if not 0 <= keep < len(stored.data):
                raise ValueError(f"keep_bytes must be in [0, {len(stored.data)}), got {keep}")
            stored.data = stored.data[:keep]

    def set_checksum(
        self,
        datastore_id: str,
        image_set_id: str,
        frame_id: str,
        checksum: int,
        *,
        version_id: str | None = None,
    ) -> None:
        """Replace the full-resolution checksum listed for a frame (latest version by default)."""
        with self._lock:
            image_set, doc, version = self._document(datastore_id, image_set_id, version_id)
            changed = copy.deepcopy(doc)
            for entry in iter_image_frames(changed):
                if entry.get("ID") == frame_id:
                    full = full_resolution(entry)
                    if full is None:
                        raise ValueError(f"frame {frame_id} has no checksum entries to change")
                    full["Checksum"] = checksum
                    break
            else:
                raise NotFoundError(f"frame {frame_id} is not in the metadata of version {version}")
            image_set.versions[version] = changed
            image_set.gzip_cache.pop(version, None)

    def remove_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> None:
        """Delete a frame's pixel data; the metadata still lists it, ``GetImageFrame`` answers 404."""
        with self._lock:
            self._frame(datastore_id, image_set_id, frame_id)
            del self._image_set(datastore_id, image_set_id).frames[frame_id]

    # ---------------------------------------------------------------------------------- import job records

    def register_job(self, job: JobRecord) -> JobRecord:
        """Add a new job's record, unless its client token was already used for its data store.

        Parameters
        ----------
        job
            A SUBMITTED job, not yet registered.

        Returns
        -------
        JobRecord
            ``job``, or the earlier job with the same data store and ``client_token`` (the API's idempotency:
            the caller starts ``job`` only if it gets it back).

        Raises
        ------
        NotFoundError
            Unknown data store.
        """
        self._datastore(job.datastore_id)
        key = (job.datastore_id, job.client_token)
        with self._lock:
            existing = self._job_tokens.get(key)
            if existing is not None:
                return self._jobs[existing]
            self._jobs[job.job_id] = job
            self._job_tokens[key] = job.job_id
        return job

    def job_record(self, job_id: str, datastore_id: str | None = None) -> JobRecord:
        """Return a job's record.

        Parameters
        ----------
        job_id
            The job.
        datastore_id
            When given, the data store must exist and the job must belong to it.

        Raises
        ------
        NotFoundError
            Unknown data store or job.
        """
        if datastore_id is not None:
            self._datastore(datastore_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if datastore_id is None:
            if job is None:
                raise NotFoundError(f"import job {job_id} not found")
        elif job is None or job.datastore_id != datastore_id:
            raise NotFoundError(f"import job {job_id} not found in data store {datastore_id}")
        return job

    def job_properties(self, datastore_id: str, job_id: str) -> dict[str, Any]:
        """Return a job's ``jobProperties``, read under the lock so that status, ``endedAt`` and message agree."""
        job = self.job_record(job_id, datastore_id)
        with self._lock:
            return job.properties()

    def job_listing(
        self,
        datastore_id: str,
        *,
        job_status: str | None = None,
        view: Callable[[JobRecord], dict[str, Any]] = JobRecord.properties,
    ) -> list[dict[str, Any]]:
        """Return a view of each job of a data store, in submission order.

        Parameters
        ----------
        datastore_id
            An existing data store.
        job_status
            Only the jobs with this status; all when ``None``.
        view
            :meth:`JobRecord.properties` (the default) or :meth:`JobRecord.summary`; called under the lock.

        Raises
        ------
        NotFoundError
            Unknown data store.
        """
        self._datastore(datastore_id)
        with self._lock:
            return [
                view(job)
                for job in self._jobs.values()
                if job.datastore_id == datastore_id and (job_status is None or job.status == job_status)
            ]

    def record_job_status(self, job_id: str, status: str, message: str | None = None) -> bool:
        """Move a job to ``status`` (a terminal status also records ``endedAt``) and wake its waiters.

        A job that is already terminal keeps its status: the first ending wins.

        Parameters
        ----------
        job_id
            A registered job.
        status
            One of :data:`JOB_STATUSES`.
        message
            The job's ``message``, fitted with :func:`safe_message`.

        Returns
        -------
        bool
            Whether this call ended the job (its event is due).
        """
        with self._lock:
            job = self._jobs[job_id]
            if job.status in TERMINAL:
                return False
            job.status = status
            if message is not None:
                job.message = safe_message(message)
            ended = status in TERMINAL
            if ended:
                job.ended_at = time.time()
            self._job_changed.notify_all()
        return ended

    def wait_until_ended(self, job: JobRecord, deadline: float) -> bool:
        """Block until ``job`` is terminal or ``time.monotonic()`` passes ``deadline``.

        Returns
        -------
        bool
            Whether the job is terminal.
        """
        with self._lock:
            while job.status not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._job_changed.wait(remaining):
                    return job.status in TERMINAL
        return True

    # ---------------------------------------------------------------------------------------- persistence

    def snapshot(self) -> tuple[list[DatastoreRecord], list[JobRecord]]:
        """Copy the records for saving, under the lock, so that the copies are consistent.

        Returns
        -------
        tuple
            ``(data stores, jobs)``. The containers are copies; documents and frames are shared (published
            documents are never mutated in place).
        """
        with self._lock:
            stores = [
                replace(
                    ds,
                    image_sets={
                        iset.image_set_id: replace(
                            iset, versions=dict(iset.versions), frames=dict(iset.frames), gzip_cache={}
                        )
                        for iset in ds.image_sets.values()
                    },
                )
                for ds in self._datastores.values()
            ]
            jobs = [replace(job) for job in self._jobs.values()]
        return stores, jobs

    def restore(self, datastores: Iterable[DatastoreRecord], jobs: Iterable[JobRecord]) -> None:
        """Add loaded records (what :mod:`ahi_emulator.persistence` read); each job must name one of the data stores."""
        with self._lock:
            for store in datastores:
                self._datastores[store.datastore_id] = store
            for job in jobs:
                self._jobs[job.job_id] = job
                self._job_tokens[(job.datastore_id, job.client_token)] = job.job_id

    # ---------------------------------------------------------------------------------------- internals

    def _datastore(self, datastore_id: str) -> DatastoreRecord:
        with self._lock:
            store = self._datastores.get(datastore_id)
        if store is None:
            raise NotFoundError(f"data store {datastore_id} not found")
        return store

    def _image_set(self, datastore_id: str, image_set_id: str) -> ImageSetRecord:
        store = self._datastore(datastore_id)
        with self._lock:
            image_set = store.image_sets.get(image_set_id)
        if image_set is None:
            raise NotFoundError(f"image set {image_set_id} not found in data store {datastore_id}")
        return image_set

    def _document(
        self, datastore_id: str, image_set_id: str, version_id: str | None
    ) -> tuple[ImageSetRecord, dict[str, Any], str]:
        image_set = self._image_set(datastore_id, image_set_id)
        with self._lock:
            version = version_id if version_id is not None else image_set.latest_version
            doc = image_set.versions.get(version)
        if doc is None:
            raise NotFoundError(f"version {version} of image set {image_set_id} not found")
        return image_set, doc, version

    def _frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> StoredFrame:
        image_set = self._image_set(datastore_id, image_set_id)
        with self._lock:
            stored = image_set.frames.get(frame_id)
        if stored is None:
            raise NotFoundError(f"image frame {frame_id} not found in image set {image_set_id}")
        return stored
