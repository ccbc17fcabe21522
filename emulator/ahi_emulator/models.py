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

import base64
import binascii
import bisect
import copy
import gzip
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
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
from .search import MAX_RESULTS, Candidate, Criteria, encode_cursor, matches, sort_key
from .search import decode_cursor as _decode_cursor
from .search import summary as _summary
from .specs import ImageSetInfo

EventSink = Callable[[dict[str, Any]], None]
"""Receives each EventBridge-shaped event the emulator sends (import jobs and image sets)."""

JobStatus = Literal["SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED"]
JOB_STATUSES: tuple[str, ...] = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
TERMINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED"})

logger = logging.getLogger(__name__)

_MESSAGE_DISALLOWED = re.compile(r"[^\w -:`]")


class NotFoundError(LookupError):
    """A data store, image set, version, frame or import job does not exist (the API's ResourceNotFoundException)."""


class ConflictError(Exception):
    """A request names a version that is no longer the latest, or a state that forbids it (ConflictException)."""


def safe_message(text: str) -> str:
    """Fit a job ``message`` to the model's pattern ``[\\w -:`]+`` and 2048 characters."""
    return _MESSAGE_DISALLOWED.sub(" ", text)[:2048] or "error"


def job_folder_uri(output_s3_uri: str, datastore_id: str, job_id: str) -> str:
    """Join the caller's output prefix and ``<datastoreId>-DicomImport-<jobId>/``, with or without a trailing ``/``."""
    base = output_s3_uri if output_s3_uri.endswith("/") else output_s3_uri + "/"
    return f"{base}{datastore_id}-DicomImport-{job_id}/"


@dataclass(frozen=True)
class VersionInfo:
    """What ``ListImageSetVersions`` says of one version besides its document."""

    created_at: float
    updated_at: float
    workflow_status: str = "CREATED"
    message: str | None = None
    forced: bool = False


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
    is_primary: bool = True
    # Versions without an entry (made by new_version, or loaded from a state saved before entries existed)
    # read as CREATED at the set's times.
    version_info: dict[str, VersionInfo] = field(default_factory=dict)

    @property
    def latest_version(self) -> str:
        """The highest version ID."""
        return max(self.versions, key=int)

    def info(self, version: str) -> VersionInfo:
        """The version's :class:`VersionInfo` (a CREATED default for versions recorded without one)."""
        found = self.version_info.get(version)
        if found is not None:
            return found
        return VersionInfo(self.created_at, self.updated_at if version == self.latest_version else self.created_at)

    def candidate(self) -> Candidate:
        """What a search reads of this image set (its latest version)."""
        return Candidate(
            self.image_set_id, self.created_at, self.updated_at, self.is_primary, self.versions[self.latest_version]
        )


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
        self.on_event: EventSink | None = None
        """Receives the image set events (on the :class:`~ahi_emulator.Emulator`, the same attribute the import
        control plane sends its job events to); ``None``: no events."""
        # Bumped by every change to which image sets exist or to their times or documents, so that a cached
        # search listing is used only while it is still true.
        self._generation = 0
        self._search_cache: dict[tuple[str, str], tuple[int, list[tuple[Any, str]]]] = {}

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
            self._generation += 1
        self._emit(datastore_id, [(image_set_id, "Image Set Created", "ACTIVE", "CREATED")])
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
            self._generation += 1
            return version

    def set_image_set_times(
        self, datastore_id: str, image_set_id: str, *, created_at: float | None = None, updated_at: float | None = None
    ) -> None:
        """Backdate an image set's ``createdAt``/``updatedAt`` (epoch seconds), e.g. to seed an old data store.

        botocore sends search timestamps in whole seconds, so tests of the date filters need image sets
        seconds apart; setting the times is how they get them without waiting.
        """
        with self._lock:
            image_set = self._image_set(datastore_id, image_set_id)
            if created_at is not None:
                image_set.created_at = created_at
            if updated_at is not None:
                image_set.updated_at = updated_at
            self._generation += 1

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
        with self._lock:
            info = image_set.info(version)
            latest = version == image_set.latest_version
        props: dict[str, Any] = {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "versionId": version,
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": info.workflow_status,
            "createdAt": image_set.created_at,
            "updatedAt": image_set.updated_at if latest else info.updated_at,
            "imageSetArn": self._image_set_arn(datastore_id, image_set_id),
            "isPrimary": image_set.is_primary,
            "storageTier": "FREQUENT_ACCESS",
        }
        if info.message is not None:
            props["message"] = info.message
        if info.forced:
            props["overrides"] = {"forced": True}
        return props

    def frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> tuple[bytes, str]:
        """Return ``(stored bytes, content type)`` of a frame, as ``GetImageFrame`` serves it."""
        stored = self._frame(datastore_id, image_set_id, frame_id)
        return stored.data, stored.content_type

    # ------------------------------------------------------------------------- image set operations

    def search_image_sets(
        self,
        datastore_id: str,
        criteria: Criteria,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> dict[str, Any]:
        """Return a ``SearchImageSets`` page: ``{"imageSetsMetadataSummaries": [...], "sort"?, "nextToken"?}``.

        Parameters
        ----------
        datastore_id
            An existing data store.
        criteria
            From :func:`ahi_emulator.search.parse_criteria`.
        max_results
            1..50 (the model's bounds); 50 when ``None``.
        next_token
            The previous page's ``nextToken``.

        Raises
        ------
        NotFoundError
            Unknown data store.
        ValueError
            ``max_results`` out of bounds or a token this emulator did not issue.

        Notes
        -----
        A token names the last image set of its page by its sort key, not by an offset, so a page after
        image sets were added or deleted neither repeats nor skips the ones that stayed. The sorted listing
        of each search is cached until the image sets change, so walking 100,000 image sets page by page
        sorts them once, not once per page.
        """
        limit = MAX_RESULTS if max_results is None else max_results
        if not 1 <= limit <= MAX_RESULTS:
            raise ValueError(f"maxResults must be between 1 and {MAX_RESULTS}")
        cursor = _decode_cursor(next_token) if next_token is not None else None
        with self._lock:
            store = self._datastore(datastore_id)
            ordered = self._sorted_listing(store, criteria)
            try:
                if criteria.sort_order == "ASC":
                    start = 0 if cursor is None else bisect.bisect_right(ordered, cursor)
                    keys = ordered[start : start + limit]
                    more = start + limit < len(ordered)
                else:
                    end = len(ordered) if cursor is None else bisect.bisect_left(ordered, cursor)
                    keys = ordered[max(0, end - limit) : end][::-1]
                    more = end - limit > 0
            except TypeError as exc:  # a cursor of another sort field (a number against a date string)
                raise ValueError("nextToken is invalid for this search") from exc
            summaries = []
            for _, image_set_id in keys:
                record = store.image_sets[image_set_id]
                summaries.append(_summary(record.candidate(), record.latest_version))
        page: dict[str, Any] = {"imageSetsMetadataSummaries": summaries}
        if criteria.sort_given:
            page["sort"] = {"sortOrder": criteria.sort_order, "sortField": criteria.sort_field}
        if more and keys:
            page["nextToken"] = encode_cursor(keys[-1])
        return page

    def list_image_set_versions(
        self,
        datastore_id: str,
        image_set_id: str,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> dict[str, Any]:
        """Return a ``ListImageSetVersions`` page, oldest version first (the service's order is undocumented).

        Raises
        ------
        NotFoundError
            Unknown data store or image set.
        ValueError
            ``max_results`` outside 1..50 or a token this emulator did not issue.
        """
        limit = MAX_RESULTS if max_results is None else max_results
        if not 1 <= limit <= MAX_RESULTS:
            raise ValueError(f"maxResults must be between 1 and {MAX_RESULTS}")
        start = _decode_offset(next_token) if next_token is not None else 0
        image_set = self._image_set(datastore_id, image_set_id)
        with self._lock:
            versions = sorted(image_set.versions, key=int)
            listed = []
            for version in versions[start : start + limit]:
                info = image_set.info(version)
                item: dict[str, Any] = {
                    "imageSetId": image_set_id,
                    "versionId": version,
                    "imageSetState": "ACTIVE",
                    # The model spells this member with a capital I in ImageSetProperties (only there).
                    "ImageSetWorkflowStatus": info.workflow_status,
                    "createdAt": info.created_at,
                    "updatedAt": info.updated_at,
                    "isPrimary": image_set.is_primary,
                }
                if info.message is not None:
                    item["message"] = info.message
                if info.forced:
                    item["overrides"] = {"forced": True}
                listed.append(item)
        page: dict[str, Any] = {"imageSetPropertiesList": listed}
        if start + limit < len(versions):
            page["nextToken"] = _encode_offset(start + limit)
        return page

    def update_image_set_metadata(
        self,
        datastore_id: str,
        image_set_id: str,
        latest_version_id: str,
        updates: Mapping[str, Any],
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        """Apply ``UpdateImageSetMetadata``: a new version with DICOM attributes changed, or a revert.

        Parameters
        ----------
        datastore_id, image_set_id
            The image set.
        latest_version_id
            Must be the latest version (optimistic concurrency, as the service checks it).
        updates
            The ``MetadataUpdates`` union: ``{"DICOMUpdates": {"updatableAttributes"?, "removableAttributes"?}}``
            (each a base64 blob of a JSON document shaped like the metadata, ``{"Study": {"DICOM": {...}}}``)
            or ``{"revertToVersionId": "N"}``.
        force
            Recorded as ``overrides.forced`` on the new version.

        Returns
        -------
        dict
            The response body. The service answers while the update runs (``LOCKED``/``UPDATING``); the
            emulator updates synchronously but answers the same way, and ``GetImageSet`` then says
            ``ACTIVE``/``UPDATED``.

        Raises
        ------
        NotFoundError
            Unknown data store, image set or revert version.
        ConflictError
            ``latest_version_id`` is not the latest version.
        ValueError
            A malformed update, or one that would add series or instances (they would have no frames) or
            change ``ImageFrames`` (pixel data checksums are not DICOM attributes).
        """
        image_set = self._image_set(datastore_id, image_set_id)
        if not isinstance(updates, Mapping) or len(updates) != 1:
            raise ValueError("updateImageSetMetadataUpdates must set exactly one of DICOMUpdates, revertToVersionId")
        with self._lock:
            latest = image_set.latest_version
            if latest_version_id != latest:
                raise ConflictError(f"latestVersionId {latest_version_id} is not the latest version ({latest})")
            if "revertToVersionId" in updates:
                target = str(updates["revertToVersionId"])
                if target not in image_set.versions:
                    raise NotFoundError(f"version {target} of image set {image_set_id} not found")
                doc = copy.deepcopy(image_set.versions[target])
            elif "DICOMUpdates" in updates and isinstance(updates["DICOMUpdates"], Mapping):
                doc = copy.deepcopy(image_set.versions[latest])
                dicom_updates = updates["DICOMUpdates"]
                unknown = set(dicom_updates) - {"updatableAttributes", "removableAttributes"}
                if unknown or not dicom_updates:
                    raise ValueError("DICOMUpdates takes updatableAttributes and/or removableAttributes")
                if "removableAttributes" in dicom_updates:
                    _remove_attributes(doc, _attribute_blob(dicom_updates["removableAttributes"]))
                if "updatableAttributes" in dicom_updates:
                    _update_attributes(doc, _attribute_blob(dicom_updates["updatableAttributes"]), ())
            else:
                raise ValueError("updateImageSetMetadataUpdates must set DICOMUpdates or revertToVersionId")
            now = time.time()
            version = str(int(latest) + 1)
            image_set.versions[version] = doc
            image_set.version_info[version] = VersionInfo(now, now, "UPDATED", forced=force)
            image_set.updated_at = now
            self._generation += 1
            created = image_set.created_at
        self._emit(
            datastore_id,
            [
                (image_set_id, "Image Set Updating", "LOCKED", "UPDATING"),
                (image_set_id, "Image Set Updated", "ACTIVE", "UPDATED"),
            ],
        )
        return {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "latestVersionId": version,
            "imageSetState": "LOCKED",
            "imageSetWorkflowStatus": "UPDATING",
            "createdAt": created,
            "updatedAt": now,
        }

    def copy_image_set(
        self,
        datastore_id: str,
        source_image_set_id: str,
        source_latest_version_id: str,
        *,
        destination: tuple[str, str] | None = None,
        force: bool = False,
        promote_to_primary: bool = False,
    ) -> dict[str, Any]:
        """Apply ``CopyImageSet``: the source's latest version into a new image set, or into a new version of
        an existing one.

        Parameters
        ----------
        datastore_id
            The data store of both image sets.
        source_image_set_id, source_latest_version_id
            The source and its latest version (a stale version is a conflict).
        destination
            ``(imageSetId, latestVersionId)`` of an existing image set to copy into; ``None``: a new image set.
        force
            Copy into a destination of another study (the service refuses that without ``force``).
        promote_to_primary
            Make the destination primary (a new image set is primary anyway here).

        Returns
        -------
        dict
            The response body (both sides ``LOCKED``/``COPYING``, as the service answers while it copies; the
            emulator has finished when it answers).

        Raises
        ------
        NotFoundError
            Unknown data store, source or destination.
        ConflictError
            A stale version, or a destination of another study without ``force``.

        Notes
        -----
        Copied frames keep their image frame IDs (frame IDs are per image set in the API, and whether the
        service mints new ones is not documented); each image set holds its own copy of the bytes, so
        damaging a frame of the copy leaves the source intact.
        """
        source = self._image_set(datastore_id, source_image_set_id)
        target = self._image_set(datastore_id, destination[0]) if destination is not None else None
        with self._lock:
            if source_latest_version_id != source.latest_version:
                raise ConflictError(
                    f"sourceImageSet.latestVersionId {source_latest_version_id} is not the latest version"
                    f" ({source.latest_version})"
                )
            source_doc = source.versions[source.latest_version]
            frames = {frame_id: replace(stored) for frame_id, stored in source.frames.items()}
            now = time.time()
            if target is None or destination is None:
                image_set_id = uuid.uuid4().hex
                doc = copy.deepcopy(source_doc)
                doc["ImageSetID"] = image_set_id
                record = ImageSetRecord(image_set_id, now, now, {"1": doc}, frames)
                record.version_info["1"] = VersionInfo(now, now, "COPIED", forced=force)
                self._datastore(datastore_id).image_sets[image_set_id] = record
                version = "1"
                target = record
            else:
                image_set_id, latest = destination
                if latest != target.latest_version:
                    raise ConflictError(
                        f"destinationImageSet.latestVersionId {latest} is not the latest version"
                        f" ({target.latest_version})"
                    )
                doc = copy.deepcopy(target.versions[target.latest_version])
                same_study = _dicom_of(doc, "Study").get("StudyInstanceUID") == _dicom_of(source_doc, "Study").get(
                    "StudyInstanceUID"
                )
                if not same_study and not force:
                    raise ConflictError("the destination image set is of another study; copy with force=true")
                series = doc.setdefault("Study", {}).setdefault("Series", {})
                for uid, source_series in copy.deepcopy(source_doc.get("Study", {}).get("Series", {})).items():
                    if uid in series:
                        series[uid].setdefault("Instances", {}).update(source_series.get("Instances", {}))
                    else:
                        series[uid] = source_series
                version = str(int(target.latest_version) + 1)
                target.versions[version] = doc
                target.version_info[version] = VersionInfo(now, now, "COPIED", forced=force)
                target.frames.update(frames)
                target.updated_at = now
            if promote_to_primary:
                target.is_primary = True
            source.version_info[source.latest_version] = replace(
                source.info(source.latest_version), workflow_status="COPIED"
            )
            self._generation += 1
            source_version = source.latest_version
        # The service's event for the source while it is read from is not documented; the destination's
        # are the two the EventBridge reference lists for a copy.
        self._emit(
            datastore_id,
            [
                (image_set_id, "Image Set Copying", "LOCKED", "COPYING"),
                (image_set_id, "Image Set Copied", "ACTIVE", "COPIED"),
            ],
        )

        def side(iset_id: str, version_id: str, record: ImageSetRecord) -> dict[str, Any]:
            return {
                "imageSetId": iset_id,
                "latestVersionId": version_id,
                "imageSetState": "LOCKED",
                "imageSetWorkflowStatus": "COPYING",
                "createdAt": record.created_at,
                "updatedAt": record.updated_at,
                "imageSetArn": self._image_set_arn(datastore_id, iset_id),
            }

        return {
            "datastoreId": datastore_id,
            "sourceImageSetProperties": side(source_image_set_id, source_version, source),
            "destinationImageSetProperties": side(image_set_id, version, target),
        }

    def delete_image_set(self, datastore_id: str, image_set_id: str) -> dict[str, Any]:
        """Apply ``DeleteImageSet``: the image set, every version and its frames are gone at once.

        Returns
        -------
        dict
            The response body (``LOCKED``/``DELETING``, as the service answers); afterwards every operation on
            the image set answers ResourceNotFoundException.

        Raises
        ------
        NotFoundError
            Unknown data store or image set.
        """
        self._image_set(datastore_id, image_set_id)
        with self._lock:
            store = self._datastore(datastore_id)
            if store.image_sets.pop(image_set_id, None) is None:
                raise NotFoundError(f"image set {image_set_id} not found in data store {datastore_id}")
            self._generation += 1
        self._emit(
            datastore_id,
            [
                (image_set_id, "Image Set Deleting", "LOCKED", "DELETING"),
                (image_set_id, "Image Set Deleted", "DELETED", "DELETED"),
            ],
        )
        return {
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "imageSetState": "LOCKED",
            "imageSetWorkflowStatus": "DELETING",
        }

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
                            iset,
                            versions=dict(iset.versions),
                            frames=dict(iset.frames),
                            gzip_cache={},
                            version_info=dict(iset.version_info),
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

    def _region(self) -> str:
        # The control plane's region when this is an Emulator; the environment's otherwise.
        region = getattr(self, "region", None)
        return region if isinstance(region, str) else default_region()

    def _image_set_arn(self, datastore_id: str, image_set_id: str) -> str:
        return f"arn:aws:medical-imaging:{self._region()}:{ACCOUNT_ID}:datastore/{datastore_id}/imageset/{image_set_id}"

    def _emit(self, datastore_id: str, events: Sequence[tuple[str, str, str, str]]) -> None:
        """Send ``(image set, detail-type, state, workflow status)`` events to :attr:`on_event`, outside the lock."""
        sink = self.on_event
        if sink is None:
            return
        for image_set_id, detail_type, state, workflow in events:
            event = image_set_event(self._region(), datastore_id, image_set_id, detail_type, state, workflow)
            try:
                sink(event)
            except Exception:
                logger.exception("image set %s: the event sink failed", image_set_id)

    def _sorted_listing(self, store: DatastoreRecord, criteria: Criteria) -> list[tuple[Any, str]]:
        """The search's matching image sets as sorted ``(sort key, ID)`` tuples (cached; call under the lock)."""
        key = (store.datastore_id, criteria.cache_key())
        cached = self._search_cache.get(key)
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        listing = sorted(
            sort_key(criteria, c) for c in (r.candidate() for r in store.image_sets.values()) if matches(criteria, c)
        )
        if len(self._search_cache) >= 8:  # a handful of concurrent searches; older ones are rebuilt if asked for
            self._search_cache.pop(next(iter(self._search_cache)))
        self._search_cache[key] = (self._generation, listing)
        return listing

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


def default_region() -> str:
    """``AWS_REGION``, ``AWS_DEFAULT_REGION`` or ``us-east-1``."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def image_set_event(
    region: str, datastore_id: str, image_set_id: str, detail_type: str, state: str, workflow_status: str
) -> dict[str, Any]:
    """An ``aws.medical-imaging`` image set event, as EventBridge delivers it to a rule's target.

    The detail-types are the HealthImaging guide's ("Using Amazon EventBridge with HealthImaging": Image Set
    Created, Copying, Copying With Read Only Access, Copied, Copy Failed, Updating, Updated, Update Failed,
    Deleting, Deleted). The detail fields (``imagingVersion``, ``datastoreId``, ``imageSetId``,
    ``imageSetState``, ``imageSetWorkflowStatus``) are those of the published event patterns (AWS CDK's
    ``aws_healthimaging.events``); their values in each event are not documented: the state is the one the
    API reports at that step. ``resources`` naming the image set ARN is a choice too.
    """
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.medical-imaging",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [
            f"arn:aws:medical-imaging:{region}:{ACCOUNT_ID}:datastore/{datastore_id}/imageset/{image_set_id}"
        ],
        "detail": {
            "imagingVersion": "1.0",
            "datastoreId": datastore_id,
            "imageSetId": image_set_id,
            "imageSetState": state,
            "imageSetWorkflowStatus": workflow_status,
        },
    }


def _encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_offset(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError("nextToken is invalid") from exc
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("nextToken is invalid")
    return offset


def _dicom_of(doc: Mapping[str, Any], level: str) -> Mapping[str, Any]:
    section = doc.get(level)
    dicom = section.get("DICOM") if isinstance(section, Mapping) else None
    return dicom if isinstance(dicom, Mapping) else {}


def _attribute_blob(raw: Any) -> dict[str, Any]:
    """Decode a ``DICOMAttribute`` blob (base64 in the rest-json body) into its JSON document."""
    data = raw
    if isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ValueError("DICOM attributes must be base64") from exc
    if not isinstance(data, bytes | bytearray) or not 1 <= len(data) <= 30000:
        raise ValueError("DICOM attributes must be 1 to 30000 bytes")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("DICOM attributes must be a JSON document") from exc
    if not isinstance(doc, dict):
        raise ValueError("DICOM attributes must be a JSON object")
    return doc


_CONTAINERS = ("Series", "Instances")


def _update_attributes(target: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]) -> None:
    """Merge ``patch`` into ``target``; new series or instances and ``ImageFrames`` are refused."""
    for key, value in patch.items():
        if key == "SchemaVersion" and not path:
            continue
        if key == "ImageFrames":
            raise ValueError("ImageFrames cannot be updated")
        if path and path[-1] in _CONTAINERS and key not in target:
            raise ValueError(f"{path[-1]} {key} is not in the image set")
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _update_attributes(current, value, (*path, key))
        else:
            target[key] = copy.deepcopy(value)


def _remove_attributes(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Remove what ``patch`` names: a key with a non-empty object descends, any other value removes the key."""
    for key, value in patch.items():
        if key == "SchemaVersion":
            continue
        if key == "ImageFrames":
            raise ValueError("ImageFrames cannot be removed")
        current = target.get(key)
        if isinstance(value, Mapping) and value and isinstance(current, dict):
            _remove_attributes(current, value)
        else:
            target.pop(key, None)
