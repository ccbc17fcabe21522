"""In-memory HealthImaging state: data stores, image sets (versioned metadata) and stored frames."""

from __future__ import annotations

import base64
import binascii
import copy
import gzip
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import imagecodecs
import numpy.typing as npt
from pydicom.uid import generate_uid

from .codec import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS_RPCL,
    PreparedFrame,
    box_jph,
    content_type_for,
    encode_htj2k,
    flip_one_pixel,
    is_htj2k_lossless,
    normalize_frame,
    prepare_htj2k_frame,
    prepare_retained_frame,
)
from .dicom import DicomSource, read_dicom
from .faults import Fault, FaultBook, FaultDecision
from .jobs import (
    DEFAULT_ROLE_ARN,
    JOB_STATUSES,
    TERMINAL,
    EventSink,
    ImportFaults,
    ImportJob,
    ImportRunner,
    InjectedFaults,
    import_event,
    safe_message,
    validate_start_request,
)
from .p10 import P10Instance
from .specs import ImageSetInfo, InstanceSpec, PatientSpec

logger = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"[0-9a-z]{32}")
VERSION_PATTERN = re.compile(r"\d+")
_INDEX_FILE = "index.json"
_INDEX_FORMAT = "ahi-emulator"
_EXTENSIONS = {"image/jph": "jph", "image/jphc": "jhc", "image/j2c": "j2c", "image/jpeg": "jpg"}


class NotFoundError(LookupError):
    """A data store, image set, version or frame does not exist (the API's ResourceNotFoundException)."""


def new_id() -> str:
    """Return a random 32-character ``[0-9a-f]`` identifier (a subset of the API's ``[0-9a-z]{32}``)."""
    return secrets.token_hex(16)


def _check_id(value: str, what: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(f"{what} must match [0-9a-z]{{32}}, got {value!r}")
    return value


@dataclass
class _Frame:
    data: bytes
    content_type: str
    transfer_syntax: str | None
    boxed: bool = False
    bits_stored: int | None = None


@dataclass
class _ImageSet:
    image_set_id: str
    created_at: float
    updated_at: float
    # Published documents are never mutated in place (mutations swap in a copy), so request threads can
    # serialise them without holding the lock.
    versions: dict[str, dict[str, Any]]
    frames: dict[str, _Frame]
    gzip_cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def latest_version(self) -> str:
        return max(self.versions, key=int)


@dataclass
class _Datastore:
    datastore_id: str
    created_at: float
    image_sets: dict[str, _ImageSet] = field(default_factory=dict)


@dataclass
class _PreparedInstance:
    """An encoded instance waiting to be published in an image set."""

    series_uid: str
    sop_uid: str
    series_dicom: dict[str, Any]
    instance: dict[str, Any]
    frames: dict[str, _Frame]


@dataclass
class _PlannedInstance:
    spec: InstanceSpec
    frames: list[npt.NDArray[Any]]
    syntax: str | None
    series_uid: str
    sop_uid: str


def iter_image_frames(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every ``ImageFrames`` entry of a metadata document in metadata order."""
    for series in (doc.get("Study") or {}).get("Series", {}).values():
        for instance in (series or {}).get("Instances", {}).values():
            yield from (instance or {}).get("ImageFrames") or []


def _full_resolution(frame: Mapping[str, Any]) -> dict[str, Any] | None:
    entries = frame.get("PixelDataChecksumFromBaseToFullResolution") or []
    return max(entries, key=lambda e: e.get("Width", 0)) if entries else None


class Emulator:
    """A local AWS HealthImaging: the runtime data plane plus the DICOM import job control plane.

    All public methods are thread-safe; the HTTP app calls into one instance from many threads.

    Parameters
    ----------
    s3_client
        A boto3 ``"s3"`` client for import jobs. ``None`` (the default) makes each job create its own from
        the normal boto3 configuration (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, credentials, region)
        when it starts, so environment changes made before :meth:`start_import_job` apply. Settable later
        as :attr:`s3_client`.
    on_event
        Called (on the job's thread) with the EventBridge-shaped event of every job that ends: ``Import Job
        Completed`` or ``Import Job Failed``. Settable later as :attr:`on_event` (e.g. ``queue.put``); its
        exceptions are logged and ignored.
    region
        Region named in events; defaults to ``AWS_REGION``, ``AWS_DEFAULT_REGION`` or ``us-east-1``.
    import_faults
        Faults for jobs started without their own (e.g. over HTTP). Settable later as :attr:`import_faults`.
    """

    def __init__(
        self,
        *,
        s3_client: Any | None = None,
        on_event: EventSink | None = None,
        region: str | None = None,
        import_faults: ImportFaults | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._datastores: dict[str, _Datastore] = {}
        self._faults = FaultBook()
        self._jobs: dict[str, ImportJob] = {}
        self._job_tokens: dict[tuple[str, str], str] = {}
        self._job_changed = threading.Condition(self._lock)
        self.s3_client = s3_client
        self.on_event = on_event
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.import_faults = import_faults

    # ----------------------------------------------------------------------------------------------- setup

    def create_datastore(self, datastore_id: str | None = None) -> str:
        """Create an empty data store.

        Parameters
        ----------
        datastore_id
            32 characters ``[0-9a-z]``; random when ``None``.

        Returns
        -------
        str
            The data store ID.
        """
        datastore_id = _check_id(datastore_id, "datastore_id") if datastore_id else uuid.uuid4().hex
        with self._lock:
            if datastore_id in self._datastores:
                raise ValueError(f"data store {datastore_id} already exists")
            self._datastores[datastore_id] = _Datastore(datastore_id, time.time())
        return datastore_id

    def datastore_ids(self) -> list[str]:
        """Return the IDs of every data store, in creation order."""
        with self._lock:
            return list(self._datastores)

    def add_image_set(
        self,
        datastore_id: str,
        instances: Sequence[InstanceSpec],
        *,
        image_set_id: str | None = None,
        patient: PatientSpec | None = None,
        study_instance_uid: str | None = None,
        study_dicom: Mapping[str, Any] | None = None,
        resolution_levels: bool = True,
    ) -> ImageSetInfo:
        """Encode the instances' frames and store them as a new image set (version ``"1"``).

        Parameters
        ----------
        datastore_id
            An existing data store.
        instances
            The SOP instances; they may belong to different series.
        image_set_id
            32 characters ``[0-9a-z]``; random when ``None``.
        patient
            ``Patient.DICOM`` values; synthetic defaults when ``None``.
        study_instance_uid
            Generated when ``None``.
        study_dicom
            Extra attributes merged over the generated ``Study.DICOM``.
        resolution_levels
            List one checksum per wavelet decomposition level before the full-resolution one.

        Returns
        -------
        ImageSetInfo

        Raises
        ------
        NotFoundError
            Unknown data store.
        ValueError
            Invalid frames, IDs or transfer-syntax combinations.
        """
        if not instances:
            raise ValueError("an image set needs at least one instance")
        image_set_id = _check_id(image_set_id, "image_set_id") if image_set_id else new_id()
        self._datastore(datastore_id)  # fail before the (slow) encoding
        prepared = self._prepare_instances(instances, resolution_levels)

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
        patient_dicom = (patient or PatientSpec()).to_dicom()
        return self._publish_image_set(datastore_id, image_set_id, patient_dicom, study, prepared)

    def add_image_set_from_dicom(
        self,
        datastore_id: str,
        paths_or_datasets: Sequence[DicomSource],
        *,
        image_set_id: str | None = None,
        resolution_levels: bool = True,
        boxed: bool = False,
    ) -> ImageSetInfo:
        """Add one image set from uncompressed little-endian DICOM P10 files of one study.

        Patient, Study, Series and Instance attributes are copied from the datasets; pixel values are the
        stored values (no rescale, no colour conversion), colour kept interleaved.

        Parameters
        ----------
        datastore_id
            An existing data store.
        paths_or_datasets
            File paths or ``pydicom`` datasets.
        image_set_id, resolution_levels
            As for :meth:`add_image_set`.
        boxed
            Store the frames as JPH files.

        Raises
        ------
        ValueError
            Naming the file, for anything but uncompressed little-endian pixel data.
        """
        specs, patient, study = read_dicom(paths_or_datasets)
        if boxed:
            specs = [replace(s, boxed=True) for s in specs]
        return self.add_image_set(
            datastore_id,
            specs,
            image_set_id=image_set_id,
            patient=patient,
            study_instance_uid=study.get("StudyInstanceUID"),
            study_dicom=study,
            resolution_levels=resolution_levels,
        )

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
        return [_info(*item) for item in items]

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
                    full = _full_resolution(entry)
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

    # ------------------------------------------------------------------------------ request-time faults

    def add_fault(self, fault: Fault) -> None:
        """Activate a request-time fault (see :class:`Fault`)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every request-time fault."""
        self._faults.clear()

    def faults(self) -> list[Fault]:
        """Return the active, not yet exhausted faults."""
        return self._faults.faults()

    def stats(self) -> dict[str, Any]:
        """Return request, response and fault counters (see :meth:`FaultBook.stats`)."""
        return self._faults.stats()

    def reset_stats(self) -> None:
        """Zero the request, response and fault counters."""
        self._faults.reset_stats()

    def intercept(self, operation: str, image_set_id: str | None, frame_id: str | None) -> FaultDecision:
        """Count an API request and return the faults that fire for it (called by the HTTP app)."""
        return self._faults.check(operation, image_set_id, frame_id)

    def record_response(self, status: int) -> None:
        """Count an API response by status (called by the HTTP app)."""
        self._faults.record_response(status)

    # ---------------------------------------------------------------------------------- import jobs

    def start_import_job(
        self,
        datastore_id: str,
        input_s3_uri: str,
        output_s3_uri: str,
        *,
        job_name: str | None = None,
        data_access_role_arn: str = DEFAULT_ROLE_ARN,
        client_token: str | None = None,
        faults: ImportFaults | None = None,
        input_owner_account_id: str | None = None,
        import_configuration: Mapping[str, Any] | None = None,
    ) -> str:
        """Start a DICOM import job (``StartDICOMImportJob``) on a background thread.

        The job goes SUBMITTED -> IN_PROGRESS -> COMPLETED or FAILED; see :mod:`ahi_emulator.jobs` for what it
        reads and writes and :mod:`ahi_emulator.p10` for how files become image sets.

        Parameters
        ----------
        datastore_id
            An existing data store.
        input_s3_uri, output_s3_uri
            ``s3://bucket/prefix``; the output folder is ``<output>/<datastoreId>-DicomImport-<jobId>/``.
        job_name
            Defaults to ``DicomImport-<first 8 characters of the job ID>``.
        data_access_role_arn
            Recorded and reported only; nothing assumes the role.
        client_token
            Idempotency: a token already used for this data store returns that job's ID (whatever the other
            parameters); random when ``None``.
        faults
            Injected faults (default: :attr:`import_faults`, else none).
        input_owner_account_id, import_configuration
            Recorded and reported only.

        Returns
        -------
        str
            The job ID (32 characters ``[0-9a-f]``).

        Raises
        ------
        NotFoundError
            Unknown data store.
        ValueError
            Parameters that break the API's constraints (the ValidationException cases).
        """
        token = client_token if client_token is not None else uuid.uuid4().hex
        validate_start_request(
            input_s3_uri=input_s3_uri,
            output_s3_uri=output_s3_uri,
            data_access_role_arn=data_access_role_arn,
            client_token=token,
            job_name=job_name,
            input_owner_account_id=input_owner_account_id,
            import_configuration=import_configuration,
        )
        self._datastore(datastore_id)
        with self._lock:
            existing = self._job_tokens.get((datastore_id, token))
            if existing is not None:
                return existing
            job_id = new_id()
            job = ImportJob(
                job_id=job_id,
                datastore_id=datastore_id,
                job_name=job_name or f"DicomImport-{job_id[:8]}",
                client_token=token,
                data_access_role_arn=data_access_role_arn,
                input_s3_uri=input_s3_uri,
                output_s3_uri=output_s3_uri,
                submitted_at=time.time(),
                input_owner_account_id=input_owner_account_id,
                import_configuration=dict(import_configuration) if import_configuration is not None else None,
                faults=faults or self.import_faults or ImportFaults(),
            )
            self._jobs[job_id] = job
            self._job_tokens[(datastore_id, token)] = job_id
            s3_client = self.s3_client
        threading.Thread(
            target=self._run_job, args=(job, s3_client), name=f"ahi-import-{job_id[:8]}", daemon=True
        ).start()
        return job_id

    def _run_job(self, job: ImportJob, s3_client: Any | None) -> None:
        try:
            if s3_client is None:
                # A session per job: boto3's default session is not safe to share across threads.
                s3_client = boto3.session.Session().client("s3")
            runner = ImportRunner(self, job, s3_client)
        except Exception as exc:
            logger.exception("import job %s could not start", job.job_id)
            self._set_job_status(job.job_id, "FAILED", f"The import job could not start: {type(exc).__name__}")
            job.done.set()
            return
        runner.run()  # ends the job and sets job.done whatever happens

    def _set_job_status(self, job_id: str, status: str, message: str | None = None) -> None:
        """Move a job to ``status``; a terminal status records ``endedAt`` and sends the job's event."""
        with self._lock:
            job = self._jobs[job_id]
            if job.status in TERMINAL:
                return
            job.status = status
            if message is not None:
                job.message = safe_message(message)
            if status in TERMINAL:
                job.ended_at = time.time()
            event = import_event(job, self.region) if status in TERMINAL else None
            self._job_changed.notify_all()
            sink = self.on_event
        if event is not None and sink is not None:
            try:
                sink(event)
            except Exception:
                logger.exception("import job %s: the event sink failed", job_id)

    def _job(self, datastore_id: str, job_id: str) -> ImportJob:
        self._datastore(datastore_id)
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.datastore_id != datastore_id:
            raise NotFoundError(f"import job {job_id} not found in data store {datastore_id}")
        return job

    def get_import_job(self, datastore_id: str, job_id: str) -> dict[str, Any]:
        """Return ``GetDICOMImportJob``'s ``jobProperties`` (``outputS3Uri`` includes the job folder)."""
        job = self._job(datastore_id, job_id)
        with self._lock:
            return job.properties()

    def import_jobs(self, datastore_id: str) -> list[dict[str, Any]]:
        """Return the ``jobProperties`` of every job of a data store, in submission order."""
        self._datastore(datastore_id)
        with self._lock:
            return [job.properties() for job in self._jobs.values() if job.datastore_id == datastore_id]

    def list_import_jobs(
        self,
        datastore_id: str,
        *,
        job_status: str | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> dict[str, Any]:
        """Return a ``ListDICOMImportJobs`` page: ``{"jobSummaries": [...], "nextToken"?}``, submission order.

        Raises
        ------
        ValueError
            For an unknown status, ``max_results`` outside 1..50 or a token this emulator did not issue.
        """
        if job_status is not None and job_status not in JOB_STATUSES:
            raise ValueError(f"jobStatus must be one of {', '.join(JOB_STATUSES)}")
        limit = 50 if max_results is None else max_results
        if not 1 <= limit <= 50:
            raise ValueError("maxResults must be between 1 and 50")
        start = _decode_token(next_token) if next_token is not None else 0
        self._datastore(datastore_id)
        with self._lock:
            matching = [
                job.summary()
                for job in self._jobs.values()
                if job.datastore_id == datastore_id and (job_status is None or job.status == job_status)
            ]
        page: dict[str, Any] = {"jobSummaries": matching[start : start + limit]}
        if start + limit < len(matching):
            page["nextToken"] = base64.urlsafe_b64encode(json.dumps({"offset": start + limit}).encode()).decode()
        return page

    def wait_for_job(
        self, datastore_id: str, job_id: str, timeout: float = 60, *, wait_for_outputs: bool = False
    ) -> dict[str, Any]:
        """Block until a job is COMPLETED or FAILED and return its ``jobProperties``.

        Parameters
        ----------
        wait_for_outputs
            Also wait until the job's thread has finished writing (a delayed manifest included).

        Raises
        ------
        TimeoutError
            When the job is still running after ``timeout`` seconds.
        """
        job = self._job(datastore_id, job_id)
        deadline = time.monotonic() + timeout
        with self._lock:
            while job.status not in TERMINAL:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._job_changed.wait(remaining):
                    if job.status in TERMINAL:
                        break
                    raise TimeoutError(f"import job {job_id} is still {job.status} after {timeout} s")
        if wait_for_outputs and not job.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"import job {job_id} is still writing its output after {timeout} s")
        return self.get_import_job(datastore_id, job_id)

    def job_faults(self, job_id: str) -> InjectedFaults:
        """Return what a job's :class:`ImportFaults` changed (corrupted frames, wrong checksums, failed files)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"import job {job_id} not found")
        return job.injected

    # ------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the state (not faults or counters) to ``directory``.

        Layout: ``index.json`` (data stores, image sets and import job records), ``<datastore>/<imageset>/
        metadata-v<N>.json`` and ``<datastore>/<imageset>/frames/<frameId>.<ext>``. A job's injected faults
        and their record are not saved; a job still running is saved as it is and loads as FAILED.

        Returns
        -------
        pathlib.Path
            The directory.
        """
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            snapshot = [
                (ds, [(iset, dict(iset.versions), dict(iset.frames)) for iset in ds.image_sets.values()])
                for ds in self._datastores.values()
            ]
        index_stores = []
        for ds, image_sets in snapshot:
            index_sets = []
            for iset, versions, frames in image_sets:
                base = root / ds.datastore_id / iset.image_set_id
                (base / "frames").mkdir(parents=True, exist_ok=True)
                for version, doc in versions.items():
                    (base / f"metadata-v{version}.json").write_text(json.dumps(doc), encoding="utf-8")
                frame_index = {}
                for frame_id, stored in frames.items():
                    name = f"frames/{frame_id}.{_EXTENSIONS.get(stored.content_type, 'bin')}"
                    (base / name).write_bytes(stored.data)
                    frame_index[frame_id] = {
                        "file": name,
                        "contentType": stored.content_type,
                        "transferSyntax": stored.transfer_syntax,
                        "boxed": stored.boxed,
                        "bitsStored": stored.bits_stored,
                    }
                index_sets.append(
                    {
                        "imageSetId": iset.image_set_id,
                        "createdAt": iset.created_at,
                        "updatedAt": iset.updated_at,
                        "versions": sorted(versions, key=int),
                        "frames": frame_index,
                    }
                )
            index_stores.append({"datastoreId": ds.datastore_id, "createdAt": ds.created_at, "imageSets": index_sets})
        with self._lock:
            jobs = [job.to_json() for job in self._jobs.values()]
        index = {"format": _INDEX_FORMAT, "formatVersion": 1, "datastores": index_stores, "importJobs": jobs}
        (root / _INDEX_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
        return root

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        s3_client: Any | None = None,
        on_event: EventSink | None = None,
    ) -> Emulator:
        """Read a directory written by :meth:`save` (``s3_client``/``on_event`` as for the constructor).

        Raises
        ------
        ValueError
            When the index is missing, of another format, or names invalid IDs.
        """
        root = Path(directory)
        index_path = root / _INDEX_FILE
        if not index_path.is_file():
            raise ValueError(f"{index_path} not found; create it with 'ahi-emulator seed' or Emulator.save()")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") != _INDEX_FORMAT:
            raise ValueError(f"{index_path} is not an ahi-emulator index")
        emulator = cls(s3_client=s3_client, on_event=on_event)
        for ds_entry in index.get("datastores", []):
            # IDs become path components, so they are validated before any file is opened.
            datastore_id = _check_id(ds_entry["datastoreId"], "datastoreId")
            store = _Datastore(datastore_id, float(ds_entry.get("createdAt", time.time())))
            for is_entry in ds_entry.get("imageSets", []):
                image_set_id = _check_id(is_entry["imageSetId"], "imageSetId")
                base = root / datastore_id / image_set_id
                versions = {}
                for version in is_entry["versions"]:
                    if not VERSION_PATTERN.fullmatch(str(version)):
                        raise ValueError(f"invalid version {version!r} in {index_path}")
                    path = base / f"metadata-v{version}.json"
                    versions[str(version)] = json.loads(path.read_text(encoding="utf-8"))
                frames = {}
                for frame_id, meta in is_entry.get("frames", {}).items():
                    _check_id(frame_id, "frame ID")
                    frames[frame_id] = _Frame(
                        data=(base / "frames" / Path(meta["file"]).name).read_bytes(),
                        content_type=meta["contentType"],
                        transfer_syntax=meta.get("transferSyntax"),
                        boxed=bool(meta.get("boxed", False)),
                        bits_stored=meta.get("bitsStored"),
                    )
                store.image_sets[image_set_id] = _ImageSet(
                    image_set_id,
                    float(is_entry.get("createdAt", time.time())),
                    float(is_entry.get("updatedAt", time.time())),
                    versions,
                    frames,
                )
            emulator._datastores[datastore_id] = store
        for job_entry in index.get("importJobs", []):
            job = ImportJob.from_json(job_entry)
            if job.datastore_id not in emulator._datastores:
                raise ValueError(f"import job {job.job_id} names an unknown data store in {index_path}")
            emulator._jobs[job.job_id] = job
            emulator._job_tokens[(job.datastore_id, job.client_token)] = job.job_id
        return emulator

    # ---------------------------------------------------------------------------------------- internals

    def _datastore(self, datastore_id: str) -> _Datastore:
        with self._lock:
            store = self._datastores.get(datastore_id)
        if store is None:
            raise NotFoundError(f"data store {datastore_id} not found")
        return store

    def _image_set(self, datastore_id: str, image_set_id: str) -> _ImageSet:
        store = self._datastore(datastore_id)
        with self._lock:
            image_set = store.image_sets.get(image_set_id)
        if image_set is None:
            raise NotFoundError(f"image set {image_set_id} not found in data store {datastore_id}")
        return image_set

    def _document(
        self, datastore_id: str, image_set_id: str, version_id: str | None
    ) -> tuple[_ImageSet, dict[str, Any], str]:
        image_set = self._image_set(datastore_id, image_set_id)
        with self._lock:
            version = version_id if version_id is not None else image_set.latest_version
            doc = image_set.versions.get(version)
        if doc is None:
            raise NotFoundError(f"version {version} of image set {image_set_id} not found")
        return image_set, doc, version

    def _frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> _Frame:
        image_set = self._image_set(datastore_id, image_set_id)
        with self._lock:
            stored = image_set.frames.get(frame_id)
        if stored is None:
            raise NotFoundError(f"image frame {frame_id} not found in image set {image_set_id}")
        return stored

    def _prepare_instances(self, instances: Sequence[InstanceSpec], resolution_levels: bool) -> list[_PreparedInstance]:
        """Encode the instances' frames and build their metadata entries (nothing is stored yet)."""
        planned = [self._plan_instance(spec) for spec in instances]
        sop_uids = [p.sop_uid for p in planned]
        if len(set(sop_uids)) != len(sop_uids):
            raise ValueError("SOPInstanceUIDs must be unique within an image set")
        prepared = self._prepare_frames(planned, resolution_levels)
        result = []
        for plan, frame_list in zip(planned, prepared, strict=True):
            frames: dict[str, _Frame] = {}
            image_frames = []
            for item in frame_list:
                frame_id = new_id()
                frames[frame_id] = _Frame(
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
            instance: dict[str, Any] = {"DICOM": self._instance_dicom(plan), "DICOMVRs": {}}
            if plan.spec.stored_transfer_syntax_uid is not None:
                instance["StoredTransferSyntaxUID"] = plan.spec.stored_transfer_syntax_uid
            if is_htj2k_lossless(plan.syntax):
                instance["ChecksumType"] = "DECOMPRESSED"
            instance["ImageFrames"] = image_frames
            result.append(_PreparedInstance(plan.series_uid, plan.sop_uid, self._series_dicom(plan), instance, frames))
        return result

    def _prepare_import_instance(self, source: P10Instance) -> _PreparedInstance:
        """Encode one instance read by an import job; its ``DICOM`` is exactly the source file's attributes."""
        if source.spec is None:
            instance: dict[str, Any] = {"DICOM": dict(source.instance), "DICOMVRs": {}}
            return _PreparedInstance(source.series_uid, source.sop_uid, dict(source.series), instance, {})
        (prepared,) = self._prepare_instances([source.spec], resolution_levels=True)
        prepared.instance["DICOM"] = dict(source.instance)
        prepared.series_dicom = dict(source.series)
        return prepared

    def _publish_image_set(
        self,
        datastore_id: str,
        image_set_id: str,
        patient_dicom: Mapping[str, Any],
        study_dicom: Mapping[str, Any],
        instances: Sequence[_PreparedInstance],
    ) -> ImageSetInfo:
        """Store prepared instances as a new image set, version ``"1"`` (Series.DICOM from its first instance)."""
        series: dict[str, Any] = {}
        frames: dict[str, _Frame] = {}
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
        now = time.time()
        with self._lock:
            store = self._datastore(datastore_id)
            if image_set_id in store.image_sets:
                raise ValueError(f"image set {image_set_id} already exists")
            store.image_sets[image_set_id] = _ImageSet(image_set_id, now, now, {"1": doc}, frames)
        return _info(datastore_id, image_set_id, "1", doc)

    @staticmethod
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
        if syntax is not None and spec.encoded_frames is None:
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

    @staticmethod
    def _prepare_frames(planned: list[_PlannedInstance], resolution_levels: bool) -> list[list[PreparedFrame]]:
        def job(plan: _PlannedInstance, index: int) -> PreparedFrame:
            arr = plan.frames[index]
            encoded = plan.spec.encoded_frames[index] if plan.spec.encoded_frames is not None else None
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

    @staticmethod
    def _series_dicom(plan: _PlannedInstance) -> dict[str, Any]:
        series: dict[str, Any] = {
            "Modality": plan.spec.modality,
            "SeriesInstanceUID": plan.series_uid,
            "SeriesNumber": plan.spec.series_number,
        }
        series.update(plan.spec.series_dicom or {})
        series["SeriesInstanceUID"] = plan.series_uid
        return series

    @staticmethod
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
            "PhotometricInterpretation": plan.spec.photometric_interpretation
            or ("RGB" if samples == 3 else "MONOCHROME2"),
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


def _decode_token(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError("nextToken is invalid") from exc
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("nextToken is invalid")
    return offset


def _info(datastore_id: str, image_set_id: str, version_id: str, doc: Mapping[str, Any]) -> ImageSetInfo:
    frame_ids: list[str] = []
    checksums: list[int | None] = []
    for entry in iter_image_frames(doc):
        frame_ids.append(entry["ID"])
        full = _full_resolution(entry)
        checksums.append(full.get("Checksum") if full else None)
    return ImageSetInfo(datastore_id, image_set_id, frame_ids, version_id, checksums)
