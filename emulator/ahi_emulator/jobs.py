"""The DICOM import job control plane: StartDICOMImportJob's work, its S3 output folder and its events.

A job lists every object under ``inputS3Uri`` (``ListObjectsV2``, paginated, nested folders included; keys
ending in ``/`` are folder markers and skipped; a non-empty prefix without a trailing ``/`` is treated as a
folder, so ``s3://b/in`` scans ``in/...`` and not ``in2/...``), reads the objects one at a time, turns each
into an instance (:mod:`ahi_emulator.p10` holds the decision table, the pixel normalisation and the grouping
rule: one image set per StudyInstanceUID + SeriesInstanceUID), streams one ndjson line per file into a
temporary file, and finally writes, below ``<outputS3Uri>/<datastoreId>-DicomImport-<jobId>/``:

- ``SUCCESS/success.ndjson`` (always, possibly empty),
- ``FAILURE/failure.ndjson`` and ``WARNING/warning.ndjson`` (only when they have lines; the service's
  behaviour is undocumented),
- ``job-output-manifest.json`` last.

A file imported with a warning is listed in ``WARNING/`` only and counted in ``numberOfImportedFiles``.
Counters: ``numberOfScannedFiles`` counts every object scanned (folder markers excluded);
``numberOfImportedFiles`` the SUCCESS plus WARNING lines; ``numberOfFilesWithCustomerError`` the
``ValidationException`` FAILURE lines (not DICOM, missing attributes, unsupported pixel layouts, unreadable
objects, a repeated SOPInstanceUID in one series, injected ``fail_files``); ``numberOfFilesWithServerError`` the
``InternalServerException`` lines (injected ``server_error_files``, or the emulator failing to store a file).
A file imported with a warning is listed in ``WARNING/`` only.

A job whose input cannot be listed (missing bucket, access, no connection), or whose output cannot be
written, ends FAILED with a ``message`` and no manifest. Otherwise it ends COMPLETED, even when every file
failed or the prefix is empty. Image sets are published when the scan ends. A job's event (``Import Job
Completed`` / ``Import Job Failed``) goes to :attr:`ImportControlPlane.on_event` (the ``Emulator``'s) once the
job is terminal; Submitted and In Progress events are not emitted. ``StartDICOMImportJob`` answers
``jobStatus`` SUBMITTED; a ``clientToken`` already used for the data store returns that job (whatever the
other parameters). Without ``jobName`` the job is named ``DicomImport-<first 8 characters of the job ID>``
(the service's default is undocumented).
``ListDICOMImportJobs`` lists in submission order; its ``nextToken`` is an opaque offset.

The control plane keeps no state of its own beyond its settings: job records, their status and the image
sets a job publishes live in :mod:`ahi_emulator.models`, reached only through the :class:`ImportBackend`
protocol, so this module imports the models and never the reverse.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .codec import JPEG2000_LOSSLESS
from .faults import ImportFaults, InjectedFaults, StoredFrameRef
from .ids import new_id
from .lossy import LossyJpegDecoding
from .metadata import PreparedInstance, prepare_import_instance
from .models import JOB_STATUSES, TERMINAL, EventSink, JobRecord, safe_message
from .p10 import TRANSCODING_EXCEPTION, P10Error, P10Instance, read_p10
from .specs import ImageSetInfo

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
DEFAULT_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/ahi-import"
MANIFEST_NAME = "job-output-manifest.json"

# Patterns of botocore's medical-imaging model.
S3_URI_PATTERN = re.compile(r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?")
ROLE_ARN_PATTERN = re.compile(r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+")
CLIENT_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
JOB_NAME_PATTERN = re.compile(r"[A-Za-z0-9._/#-]+")
ACCOUNT_PATTERN = re.compile(r"\d{12}")

#: What a failed S3 call raises (a service error, or no connection at all).
S3_ERRORS = (ClientError, BotoCoreError)


# Shorthands for the protocol's signatures.
_Dicom = Mapping[str, Any]
_Instances = Sequence[PreparedInstance]


class ImportBackend(Protocol):
    """What the control plane needs from the state (:class:`~ahi_emulator.models.HealthImagingBackend` has it)."""

    # Job records.
    def register_job(self, job: JobRecord) -> JobRecord: ...

    def job_record(self, job_id: str, datastore_id: str | None = None) -> JobRecord: ...

    def job_properties(self, datastore_id: str, job_id: str) -> dict[str, Any]: ...

    def job_listing(
        self,
        datastore_id: str,
        *,
        job_status: str | None = None,
        view: Callable[[JobRecord], dict[str, Any]] = ...,
    ) -> list[dict[str, Any]]: ...

    def record_job_status(self, job_id: str, status: str, message: str | None = None) -> bool: ...

    def wait_until_ended(self, job: JobRecord, deadline: float) -> bool: ...

    # What a running job writes.
    def lossless_storage_format(self, datastore_id: str) -> str: ...

    def publish_image_set(
        self, datastore_id: str, image_set_id: str, patient_dicom: _Dicom, study_dicom: _Dicom, instances: _Instances
    ) -> ImageSetInfo: ...

    def corrupt_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> None: ...

    def set_checksum(self, datastore_id: str, image_set_id: str, frame_id: str, checksum: int) -> None: ...


def validate_start_request(
    *,
    input_s3_uri: Any,
    output_s3_uri: Any,
    data_access_role_arn: Any,
    client_token: Any,
    job_name: Any = None,
    input_owner_account_id: Any = None,
    import_configuration: Any = None,
) -> None:
    """Check StartDICOMImportJob's parameters against the botocore model's constraints.

    Raises
    ------
    ValueError
        Naming the first invalid parameter (the API's ValidationException).
    """
    required = {
        "dataAccessRoleArn": data_access_role_arn,
        "clientToken": client_token,
        "inputS3Uri": input_s3_uri,
        "outputS3Uri": output_s3_uri,
    }
    for name, value in required.items():
        if value is None or value == "":
            raise ValueError(f"{name} is required")
    for name in ("inputS3Uri", "outputS3Uri"):
        value = required[name]
        if not isinstance(value, str) or len(value) > 1024 or not S3_URI_PATTERN.fullmatch(value):
            raise ValueError(f"{name} must be an s3:// URI matching {S3_URI_PATTERN.pattern}")
    if (
        not isinstance(data_access_role_arn, str)
        or not 20 <= len(data_access_role_arn) <= 2048
        or not ROLE_ARN_PATTERN.fullmatch(data_access_role_arn)
    ):
        raise ValueError(f"dataAccessRoleArn must match {ROLE_ARN_PATTERN.pattern}")
    if not isinstance(client_token, str) or len(client_token) > 64 or not CLIENT_TOKEN_PATTERN.fullmatch(client_token):
        raise ValueError(f"clientToken must be 1-64 characters matching {CLIENT_TOKEN_PATTERN.pattern}")
    if job_name is not None and (
        not isinstance(job_name, str) or not 1 <= len(job_name) <= 64 or not JOB_NAME_PATTERN.fullmatch(job_name)
    ):
        raise ValueError(f"jobName must be 1-64 characters matching {JOB_NAME_PATTERN.pattern}")
    if input_owner_account_id is not None and (
        not isinstance(input_owner_account_id, str) or not ACCOUNT_PATTERN.fullmatch(input_owner_account_id)
    ):
        raise ValueError("inputOwnerAccountId must be 12 digits")
    if import_configuration is not None and not isinstance(import_configuration, dict):
        raise ValueError("importConfiguration must be an object")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Return ``(bucket, key prefix)`` of an ``s3://bucket/prefix`` URI."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def import_event(job: JobRecord, region: str, status: str | None = None) -> dict[str, Any]:
    """The EventBridge event for a terminal job (doc §2.2 shape; ``detail.outputS3Uri`` is the bare prefix).

    Parameters
    ----------
    job
        The job.
    region
        Named in ``region`` and the data store ARN.
    status
        The terminal status announced; the job's own when ``None``.

    Returns
    -------
    dict
        The event, as EventBridge delivers it to a rule's target.
    """
    status = status or job.status
    detail_type = "Import Job Completed" if status == "COMPLETED" else "Import Job Failed"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.medical-imaging",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:medical-imaging:{region}:{ACCOUNT_ID}:datastore/{job.datastore_id}"],
        "detail": {
            "imagingVersion": "1.0",
            "datastoreId": job.datastore_id,
            "jobId": job.job_id,
            "jobName": job.job_name,
            "jobStatus": status,
            "inputS3Uri": job.input_s3_uri,
            "outputS3Uri": job.output_s3_uri,
        },
    }


class JobFailedError(Exception):
    """Ends the job FAILED with this (already safe) message."""


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


@dataclass
class _Group:
    image_set_id: str
    patient: dict[str, Any]
    study: dict[str, Any]
    instances: list[PreparedInstance] = field(default_factory=list)
    sop_uids: set[str] = field(default_factory=set)


class _Lines:
    """An ndjson file streamed to a temporary file, uploaded at the end."""

    def __init__(self) -> None:
        self.count = 0
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    def add(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        self.count += 1

    def rewound(self) -> IO[bytes]:
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._file.close()


class ImportControlPlane:
    """The DICOM import job API: start, describe, list and wait for jobs, and run each on its own thread.

    Job records and their status live in the backend; this class validates requests, starts the job
    threads and sends each job's event when it ends.

    Parameters
    ----------
    backend
        The state the jobs read and write, reached only through :class:`ImportBackend`.
    region
        Region named in events; defaults to ``AWS_REGION``, ``AWS_DEFAULT_REGION`` or ``us-east-1``.

    Attributes
    ----------
    s3_client
        A boto3 ``"s3"`` client for import jobs. ``None`` (the default) makes each job create its own from
        the normal boto3 configuration (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, credentials, region)
        when it starts, so environment changes made before :meth:`start_import_job` apply.
    on_event
        Called (on the job's thread) with the EventBridge-shaped event of every job that ends: ``Import Job
        Completed`` or ``Import Job Failed`` (e.g. ``queue.put``); its exceptions are logged and ignored.
        ``None`` (the default): no events.
    region
        As above; settable later.
    import_faults
        Faults for jobs started without their own (e.g. over HTTP); ``None`` (the default): none.
    lossy_jpeg_decoding
        How jobs started without their own decode JPEG Extended sources (:mod:`ahi_emulator.lossy`);
        ``None`` (the default): pydicom.
    """

    def __init__(self, backend: ImportBackend, region: str | None = None) -> None:
        self.backend = backend
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        # Read when a job starts (s3_client, import_faults) or ends (on_event), so changes apply to later jobs.
        self.s3_client: Any | None = None
        self.on_event: EventSink | None = None
        self.import_faults: ImportFaults | None = None
        self.lossy_jpeg_decoding: LossyJpegDecoding | None = None

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
        lossy_jpeg_decoding: LossyJpegDecoding | None = None,
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
        lossy_jpeg_decoding
            How the job decodes JPEG Extended sources (default: :attr:`lossy_jpeg_decoding`, else pydicom).

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
        job_id = new_id()
        job = JobRecord(
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
            lossy_jpeg=lossy_jpeg_decoding or self.lossy_jpeg_decoding,
        )
        registered = self.backend.register_job(job)
        if registered is not job:  # a client token already used for this data store: that job, not a new one
            return registered.job_id
        s3_client = self.s3_client
        threading.Thread(
            target=self._run_job, args=(job, s3_client), name=f"ahi-import-{job_id[:8]}", daemon=True
        ).start()
        return job_id

    def _run_job(self, job: JobRecord, s3_client: Any | None) -> None:
        try:
            if s3_client is None:
                # A session per job: boto3's default session is not safe to share across threads.
                s3_client = boto3.session.Session().client("s3")
            runner = ImportRunner(self, job, s3_client)
        except Exception as exc:
            logger.exception("import job %s could not start", job.job_id)
            self.set_job_status(job, "FAILED", f"The import job could not start: {type(exc).__name__}")
            job.done.set()
            return
        runner.run()  # ends the job and sets job.done whatever happens

    def set_job_status(self, job: JobRecord, status: str, message: str | None = None) -> None:
        """Move a job to ``status``; when that ends the job, send its event to :attr:`on_event`.

        Parameters
        ----------
        job
            A started job.
        status
            ``IN_PROGRESS``, ``COMPLETED`` or ``FAILED``; a job already terminal is left as it is.
        message
            The job's ``message`` (for FAILED).
        """
        # The event is built before the transition wakes the job's waiters, so that nothing between the
        # wake-up and the sink releases the GIL (uuid4 reads os.urandom): a wait_for_job that returns has, in
        # practice, seen the event sent, and the sink still runs outside the models' lock.
        event = import_event(job, self.region, status) if status in TERMINAL else None
        ended = self.backend.record_job_status(job.job_id, status, message)
        sink = self.on_event
        if not ended or event is None or sink is None:
            return
        try:
            sink(event)
        except Exception:
            logger.exception("import job %s: the event sink failed", job.job_id)

    def get_import_job(self, datastore_id: str, job_id: str) -> dict[str, Any]:
        """Return ``GetDICOMImportJob``'s ``jobProperties`` (``outputS3Uri`` includes the job folder)."""
        return self.backend.job_properties(datastore_id, job_id)

    def import_jobs(self, datastore_id: str) -> list[dict[str, Any]]:
        """Return the ``jobProperties`` of every job of a data store, in submission order."""
        return self.backend.job_listing(datastore_id)

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
        matching = self.backend.job_listing(datastore_id, job_status=job_status, view=JobRecord.summary)
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
        job = self.backend.job_record(job_id, datastore_id)
        deadline = time.monotonic() + timeout
        if not self.backend.wait_until_ended(job, deadline):
            raise TimeoutError(f"import job {job_id} is still {job.status} after {timeout} s")
        if wait_for_outputs and not job.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"import job {job_id} is still writing its output after {timeout} s")
        return self.get_import_job(datastore_id, job_id)

    def job_faults(self, job_id: str) -> InjectedFaults:
        """Return what a job's :class:`ImportFaults` changed (corrupted frames, wrong checksums, failed files)."""
        return self.backend.job_record(job_id).injected


class ImportRunner:
    """Runs one job on a background thread (see the module docstring)."""

    def __init__(self, plane: ImportControlPlane, job: JobRecord, s3: Any) -> None:
        self.plane = plane
        self.backend = plane.backend
        self.job = job
        self.s3 = s3
        self.faults = job.faults
        self.groups: dict[tuple[str, str], _Group] = {}
        self.success = _Lines()
        self.failure = _Lines()
        self.warning = _Lines()
        self.scanned = 0
        self.imported = 0
        self.customer_errors = 0
        self.server_errors = 0
        self.transcode_to: str | None = None

    def run(self) -> None:
        """Do the job and leave it COMPLETED or FAILED."""
        plane, job = self.plane, self.job
        plane.set_job_status(job, "IN_PROGRESS")
        try:
            # A JPEG 2000 Lossless data store stores what the import transcodes as .90, not HTJ2K.
            if self.backend.lossless_storage_format(job.datastore_id) == "JPEG_2000_LOSSLESS":
                self.transcode_to = JPEG2000_LOSSLESS
            self._scan()
            infos = self._publish()
            self._inject(infos)
            self._write_outputs(infos)
        except JobFailedError as exc:
            plane.set_job_status(job, "FAILED", str(exc))
        except Exception:
            logger.exception("import job %s failed", job.job_id)
            plane.set_job_status(job, "FAILED", "Internal error while running the import job")
        finally:
            for lines in (self.success, self.failure, self.warning):
                lines.close()
            job.done.set()

    # ------------------------------------------------------------------------------------------ scan

    def _scan(self) -> None:
        bucket, prefix = split_s3_uri(self.job.input_s3_uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if not key.endswith("/"):
                        self.scanned += 1
                        self._import_object(bucket, key)
        except S3_ERRORS as exc:
            raise JobFailedError(
                safe_message(f"Input S3 URI {self.job.input_s3_uri} cannot be listed: {_error_code(exc)}")
            ) from exc

    def _fail(self, key: str, message: str, *, server: bool = False) -> None:
        exception_type = "InternalServerException" if server else "ValidationException"
        self.failure.add({"inputFile": key, "exception": {"exceptionType": exception_type, "message": message}})
        if server:
            self.server_errors += 1
        else:
            self.customer_errors += 1

    def _import_object(self, bucket: str, key: str) -> None:
        injected = self.faults.rejects(key)
        if injected is not None:
            self.job.injected.failed_files.append(key)
            if injected == "server":
                self._fail(key, "Internal error while importing the file (injected by ahi-emulator)", server=True)
            else:
                self._fail(key, "The file was rejected (injected by ahi-emulator)")
            return
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except S3_ERRORS as exc:
            self._fail(key, f"The object could not be read from S3: {_error_code(exc)}")
            return
        try:
            instance = read_p10(data, lossy_jpeg=self.job.lossy_jpeg)
        except P10Error as exc:
            self._fail(key, str(exc))
            return
        group = self._group(instance)
        if instance.sop_uid in group.sop_uids:
            self._fail(key, "SOPInstanceUID repeats an instance already imported into this series by this job")
            return
        try:
            prepared = prepare_import_instance(instance, self.transcode_to)
        except Exception:
            # The HTJ2K encoder refused the frames: keep the pixel data as a blob, like TRANSCODING_EXCEPTION.
            try:
                instance = read_p10(data, blob_code=TRANSCODING_EXCEPTION)
                prepared = prepare_import_instance(instance, self.transcode_to)
            except Exception:
                logger.exception("import job %s: %s could not be stored", self.job.job_id, key)
                self._fail(key, "Internal error while storing the file", server=True)
                return
        del data
        group.instances.append(prepared)
        group.sop_uids.add(instance.sop_uid)
        self.imported += 1
        response: dict[str, Any] = {"imageSetId": group.image_set_id, "isPrimary": True}
        if instance.warning is None:
            self.success.add({"inputFile": key, "importResponse": response})
        else:
            response = {"imageSetId": group.image_set_id, "imageSetVersion": 1, "isPrimary": True}
            response["warnings"] = [instance.warning.to_json()]
            self.warning.add({"inputFile": key, "importResponse": response})

    def _group(self, instance: P10Instance) -> _Group:
        key = (instance.study_uid, instance.series_uid)
        group = self.groups.get(key)
        if group is None:
            group = _Group(new_id(), instance.patient, instance.study)
            self.groups[key] = group
        return group

    # --------------------------------------------------------------------------------------- results

    def _publish(self) -> list[tuple[_Group, list[str], list[int | None]]]:
        published = []
        for group in self.groups.values():
            if not group.instances:
                continue
            info = self.backend.publish_image_set(
                self.job.datastore_id, group.image_set_id, group.patient, group.study, group.instances
            )
            published.append((group, info.frame_ids, info.checksums))
        return published

    def _inject(self, infos: list[tuple[_Group, list[str], list[int | None]]]) -> None:
        frames = [
            (StoredFrameRef(group.image_set_id, frame_id), checksum)
            for group, frame_ids, checksums in infos
            for frame_id, checksum in zip(frame_ids, checksums, strict=True)
        ]
        datastore_id = self.job.datastore_id
        for ref, _ in frames[: self.faults.corrupt_frames]:
            self.backend.corrupt_frame(datastore_id, ref.image_set_id, ref.frame_id)
            self.job.injected.corrupted_frames.append(ref)
        wrong = frames[len(frames) - min(self.faults.wrong_checksums, len(frames)) :]
        for ref, checksum in wrong:
            if checksum is None:
                continue
            listed = checksum ^ 0xFFFFFFFF
            self.backend.set_checksum(datastore_id, ref.image_set_id, ref.frame_id, listed)
            self.job.injected.wrong_checksums[ref] = (listed, checksum)

    def _manifest(self, infos: list[tuple[_Group, list[str], list[int | None]]]) -> dict[str, Any]:
        folder = self.job.job_folder_uri
        return {
            "jobSummary": {
                "jobId": self.job.job_id,
                "datastoreId": self.job.datastore_id,
                "inputS3Uri": self.job.input_s3_uri,
                "outputS3Uri": folder,
                "successOutputS3Uri": folder + "SUCCESS/",
                "failureOutputS3Uri": folder + "FAILURE/",
                "warningsOutputS3Uri": folder + "WARNING/",
                "numberOfScannedFiles": self.scanned,
                "numberOfImportedFiles": self.imported,
                "numberOfFilesWithCustomerError": self.customer_errors,
                "numberOfFilesWithServerError": self.server_errors,
                "numberOfGeneratedImageSets": len(infos),
                "imageSetsSummary": [
                    {
                        "imageSetId": group.image_set_id,
                        "imageSetVersion": 1,
                        "isPrimary": True,
                        "numberOfMatchedSOPInstances": len(group.instances),
                    }
                    for group, _, _ in infos
                ],
            }
        }

    def _put(self, bucket: str, key: str, body: bytes | IO[bytes], content_type: str) -> None:
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except S3_ERRORS as exc:
            folder = self.job.job_folder_uri
            raise JobFailedError(safe_message(f"Output S3 URI {folder} cannot be written: {_error_code(exc)}")) from exc

    def _write_outputs(self, infos: list[tuple[_Group, list[str], list[int | None]]]) -> None:
        bucket, folder = split_s3_uri(self.job.job_folder_uri)
        ndjson = "application/x-ndjson"
        self._put(bucket, folder + "SUCCESS/success.ndjson", self.success.rewound(), ndjson)
        if self.failure.count:
            self._put(bucket, folder + "FAILURE/failure.ndjson", self.failure.rewound(), ndjson)
        if self.warning.count:
            self._put(bucket, folder + "WARNING/warning.ndjson", self.warning.rewound(), ndjson)
        manifest = json.dumps(self._manifest(infos), separators=(",", ":")).encode()
        if not self.faults.write_manifest:
            self.plane.set_job_status(self.job, "COMPLETED")
            return
        if self.faults.manifest_delay_s > 0:
            self.plane.set_job_status(self.job, "COMPLETED")
            time.sleep(self.faults.manifest_delay_s)
            try:
                self._put(bucket, folder + MANIFEST_NAME, manifest, "application/json")
            except JobFailedError as exc:  # the job already ended; nothing left to report it to
                logger.warning("import job %s: delayed manifest not written: %s", self.job.job_id, exc)
            return
        self._put(bucket, folder + MANIFEST_NAME, manifest, "application/json")
        self.plane.set_job_status(self.job, "COMPLETED")


def _decode_token(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError("nextToken is invalid") from exc
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("nextToken is invalid")
    return offset
