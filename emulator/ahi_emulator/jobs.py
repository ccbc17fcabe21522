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
Completed`` / ``Import Job Failed``) goes to ``Emulator.on_event`` once the job is terminal; Submitted and In
Progress events are not emitted. ``StartDICOMImportJob`` answers ``jobStatus`` SUBMITTED; a ``clientToken``
already used for the data store returns that job (whatever the other parameters). Without ``jobName`` the job
is named ``DicomImport-<first 8 characters of the job ID>`` (the service's default is undocumented).
``ListDICOMImportJobs`` lists in submission order; its ``nextToken`` is an opaque offset.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from .p10 import TRANSCODING_EXCEPTION, P10Error, P10Instance, read_p10

if TYPE_CHECKING:
    from .store import Emulator, _PreparedInstance

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
DEFAULT_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/ahi-import"
MANIFEST_NAME = "job-output-manifest.json"

JobStatus = Literal["SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED"]
JOB_STATUSES: tuple[str, ...] = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
TERMINAL: frozenset[str] = frozenset({"COMPLETED", "FAILED"})

# Patterns of botocore's medical-imaging model.
S3_URI_PATTERN = re.compile(r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?")
ROLE_ARN_PATTERN = re.compile(r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+")
CLIENT_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
JOB_NAME_PATTERN = re.compile(r"[A-Za-z0-9._/#-]+")
JOB_ID_PATTERN = re.compile(r"[0-9a-z]{1,32}")
ACCOUNT_PATTERN = re.compile(r"\d{12}")
_MESSAGE_DISALLOWED = re.compile(r"[^\w -:`]")

EventSink = Callable[[dict[str, Any]], None]

#: What a failed S3 call raises (a service error, or no connection at all).
S3_ERRORS = (ClientError, BotoCoreError)


@dataclass(frozen=True)
class ImportFaults:
    """Faults an import job injects into what it produces.

    Parameters
    ----------
    corrupt_frames
        After the checksums are taken, corrupt this many stored frames (the first ones, in image set and
        metadata order) with :meth:`Emulator.corrupt_frame`: HTJ2K frames decode to one changed sample,
        retained frames get one byte flipped.
    wrong_checksums
        List a wrong full-resolution checksum (the correct one XOR ``0xFFFFFFFF``) for this many frames (the
        last ones, in image set and metadata order).
    fail_files
        Object keys or basenames to reject with a FAILURE line (``ValidationException``), counted in
        ``numberOfFilesWithCustomerError``. The object is not read.
    server_error_files
        Object keys or basenames to reject with a FAILURE line (``InternalServerException``), counted in
        ``numberOfFilesWithServerError``.
    manifest_delay_s
        Write the ndjson files, mark the job COMPLETED (and send its event), wait this long, then write the
        manifest: the "manifest lags COMPLETED" case.
    write_manifest
        False: the job ends COMPLETED without a manifest.
    """

    corrupt_frames: int = 0
    wrong_checksums: int = 0
    fail_files: Sequence[str] = ()
    server_error_files: Sequence[str] = ()
    manifest_delay_s: float = 0.0
    write_manifest: bool = True

    def __post_init__(self) -> None:
        if self.corrupt_frames < 0 or self.wrong_checksums < 0:
            raise ValueError("corrupt_frames and wrong_checksums must be >= 0")
        if self.manifest_delay_s < 0:
            raise ValueError("manifest_delay_s must be >= 0")
        for name in ("fail_files", "server_error_files"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a sequence of keys, not a string")
            object.__setattr__(self, name, tuple(value))

    def to_json(self) -> dict[str, Any]:
        """Return the admin API's wire form."""
        return {
            "corrupt_frames": self.corrupt_frames,
            "wrong_checksums": self.wrong_checksums,
            "fail_files": list(self.fail_files),
            "server_error_files": list(self.server_error_files),
            "manifest_delay_s": self.manifest_delay_s,
            "write_manifest": self.write_manifest,
        }

    @classmethod
    def from_json(cls, obj: Any) -> ImportFaults:
        """Build from the admin API's wire form.

        Raises
        ------
        ValueError
            For unknown keys or invalid values.
        """
        if not isinstance(obj, dict):
            raise ValueError("import faults must be a JSON object")
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown import fault fields: {sorted(unknown)}")
        try:
            return cls(**obj)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def rejects(self, key: str) -> Literal["customer", "server"] | None:
        """Return which injected failure applies to an object key, if any."""
        basename = key.rsplit("/", 1)[-1]
        if key in self.server_error_files or basename in self.server_error_files:
            return "server"
        if key in self.fail_files or basename in self.fail_files:
            return "customer"
        return None


class FrameRef(NamedTuple):
    """One stored frame."""

    image_set_id: str
    frame_id: str


@dataclass
class InjectedFaults:
    """What a job's :class:`ImportFaults` actually changed.

    Attributes
    ----------
    corrupted_frames
        Frames whose stored bytes were corrupted.
    wrong_checksums
        Frames whose listed full-resolution checksum is wrong, with ``(listed, correct)`` values.
    failed_files
        Object keys rejected by ``fail_files`` / ``server_error_files``.
    """

    corrupted_frames: list[FrameRef] = field(default_factory=list)
    wrong_checksums: dict[FrameRef, tuple[int, int]] = field(default_factory=dict)
    failed_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (the admin API's)."""
        return {
            "corruptedFrames": [ref._asdict() for ref in self.corrupted_frames],
            "wrongChecksums": [
                {**ref._asdict(), "listed": listed, "correct": correct}
                for ref, (listed, correct) in self.wrong_checksums.items()
            ],
            "failedFiles": list(self.failed_files),
        }


@dataclass
class ImportJob:
    """The record of one import job (internal; the API view is :meth:`properties`)."""

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

    def to_json(self) -> dict[str, Any]:
        """Persistent form (faults and their record are not kept)."""
        return {
            **self.properties(),
            "outputS3Uri": self.output_s3_uri,
            "clientToken": self.client_token,
            "inputOwnerAccountId": self.input_owner_account_id,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImportJob:
        """Rebuild a saved job; one that was still running becomes FAILED."""
        job = cls(
            job_id=_checked(obj["jobId"], JOB_ID_PATTERN, "jobId"),
            datastore_id=str(obj["datastoreId"]),
            job_name=str(obj["jobName"]),
            client_token=str(obj["clientToken"]),
            data_access_role_arn=str(obj["dataAccessRoleArn"]),
            input_s3_uri=str(obj["inputS3Uri"]),
            output_s3_uri=str(obj["outputS3Uri"]),
            submitted_at=float(obj["submittedAt"]),
            status=str(obj["jobStatus"]),
            ended_at=float(obj["endedAt"]) if obj.get("endedAt") is not None else None,
            message=obj.get("message"),
            input_owner_account_id=obj.get("inputOwnerAccountId"),
            import_configuration=obj.get("importConfiguration"),
        )
        if job.status not in TERMINAL:
            job.status, job.ended_at = "FAILED", job.ended_at or time.time()
            job.message = "The emulator was restarted before the job finished"
        job.done.set()
        return job


def _checked(value: Any, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{name} must match {pattern.pattern}")
    return value


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


def job_folder_uri(output_s3_uri: str, datastore_id: str, job_id: str) -> str:
    """Join the caller's output prefix and ``<datastoreId>-DicomImport-<jobId>/``, with or without a trailing ``/``."""
    base = output_s3_uri if output_s3_uri.endswith("/") else output_s3_uri + "/"
    return f"{base}{datastore_id}-DicomImport-{job_id}/"


def safe_message(text: str) -> str:
    """Fit a job ``message`` to the model's pattern ``[\\w -:`]+`` and 2048 characters."""
    return _MESSAGE_DISALLOWED.sub(" ", text)[:2048] or "error"


def import_event(job: ImportJob, region: str) -> dict[str, Any]:
    """The EventBridge event for a terminal job (doc §2.2 shape; ``detail.outputS3Uri`` is the bare prefix)."""
    detail_type = "Import Job Completed" if job.status == "COMPLETED" else "Import Job Failed"
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
            "jobStatus": job.status,
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
    instances: list[_PreparedInstance] = field(default_factory=list)
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


class ImportRunner:
    """Runs one job on a background thread (see the module docstring)."""

    def __init__(self, emulator: Emulator, job: ImportJob, s3: Any) -> None:
        self.emulator = emulator
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

    def run(self) -> None:
        """Do the job and leave it COMPLETED or FAILED."""
        emulator, job = self.emulator, self.job
        emulator._set_job_status(job.job_id, "IN_PROGRESS")
        try:
            self._scan()
            infos = self._publish()
            self._inject(infos)
            self._write_outputs(infos)
        except JobFailedError as exc:
            emulator._set_job_status(job.job_id, "FAILED", str(exc))
        except Exception:
            logger.exception("import job %s failed", job.job_id)
            emulator._set_job_status(job.job_id, "FAILED", "Internal error while running the import job")
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
            instance = read_p10(data)
        except P10Error as exc:
            self._fail(key, str(exc))
            return
        group = self._group(instance)
        if instance.sop_uid in group.sop_uids:
            self._fail(key, "SOPInstanceUID repeats an instance already imported into this series by this job")
            return
        try:
            prepared = self.emulator._prepare_import_instance(instance)
        except Exception:
            # The HTJ2K encoder refused the frames: keep the pixel data as a blob, like TRANSCODING_EXCEPTION.
            try:
                instance = read_p10(data, blob_code=TRANSCODING_EXCEPTION)
                prepared = self.emulator._prepare_import_instance(instance)
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
            group = _Group(secrets.token_hex(16), instance.patient, instance.study)
            self.groups[key] = group
        return group

    # --------------------------------------------------------------------------------------- results

    def _publish(self) -> list[tuple[_Group, list[str], list[int | None]]]:
        published = []
        for group in self.groups.values():
            if not group.instances:
                continue
            info = self.emulator._publish_image_set(
                self.job.datastore_id, group.image_set_id, group.patient, group.study, group.instances
            )
            published.append((group, info.frame_ids, info.checksums))
        return published

    def _inject(self, infos: list[tuple[_Group, list[str], list[int | None]]]) -> None:
        frames = [
            (FrameRef(group.image_set_id, frame_id), checksum)
            for group, frame_ids, checksums in infos
            for frame_id, checksum in zip(frame_ids, checksums, strict=True)
        ]
        datastore_id = self.job.datastore_id
        for ref, _ in frames[: self.faults.corrupt_frames]:
            self.emulator.corrupt_frame(datastore_id, ref.image_set_id, ref.frame_id)
            self.job.injected.corrupted_frames.append(ref)
        wrong = frames[len(frames) - min(self.faults.wrong_checksums, len(frames)) :]
        for ref, checksum in wrong:
            if checksum is None:
                continue
            listed = checksum ^ 0xFFFFFFFF
            self.emulator.set_checksum(datastore_id, ref.image_set_id, ref.frame_id, listed)
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
            self.emulator._set_job_status(self.job.job_id, "COMPLETED")
            return
        if self.faults.manifest_delay_s > 0:
            self.emulator._set_job_status(self.job.job_id, "COMPLETED")
            time.sleep(self.faults.manifest_delay_s)
            try:
                self._put(bucket, folder + MANIFEST_NAME, manifest, "application/json")
            except JobFailedError as exc:  # the job already ended; nothing left to report it to
                logger.warning("import job %s: delayed manifest not written: %s", self.job.job_id, exc)
            return
        self._put(bucket, folder + MANIFEST_NAME, manifest, "application/json")
        self.emulator._set_job_status(self.job.job_id, "COMPLETED")
