"""Saving the emulator's state to a directory and loading it back (``ahi-emulator seed`` / ``serve --data``).

Layout: ``index.json`` (data stores, image sets and import job records), ``<datastore>/<imageset>/
metadata-v<N>.json`` and ``<datastore>/<imageset>/frames/<frameId>.<ext>``. This module is the only one that
knows the layout; it reads and fills the state through :class:`~ahi_emulator.models.HealthImagingBackend`'s
``snapshot`` and ``restore``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .ids import JOB_ID_PATTERN, VERSION_PATTERN, check_id
from .metadata import StoredFrame
from .models import TERMINAL, DatastoreRecord, HealthImagingBackend, ImageSetRecord, JobRecord, VersionInfo

_INDEX_FILE = "index.json"
_INDEX_FORMAT = "ahi-emulator"
_EXTENSIONS = {"image/jph": "jph", "image/jphc": "jhc", "image/j2c": "j2c", "image/jpeg": "jpg"}


def save_state(backend: HealthImagingBackend, directory: str | os.PathLike[str]) -> Path:
    """Write the backend's data stores, image sets and job records to ``directory``.

    A job's injected faults and their record are not saved; a job still running is saved as it is and
    loads as FAILED.

    Parameters
    ----------
    backend
        The state to save.
    directory
        Created if missing; files already there are overwritten.

    Returns
    -------
    pathlib.Path
        The directory.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    stores, jobs = backend.snapshot()
    index_stores = []
    for ds in stores:
        index_sets = []
        for iset in ds.image_sets.values():
            base = root / ds.datastore_id / iset.image_set_id
            (base / "frames").mkdir(parents=True, exist_ok=True)
            for version, doc in iset.versions.items():
                (base / f"metadata-v{version}.json").write_text(json.dumps(doc), encoding="utf-8")
            frame_index = {}
            for frame_id, stored in iset.frames.items():
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
                    "versions": sorted(iset.versions, key=int),
                    "frames": frame_index,
                    "isPrimary": iset.is_primary,
                    # Optional on load: states saved before versions had them read as CREATED.
                    "versionInfo": {
                        version: {
                            "createdAt": info.created_at,
                            "updatedAt": info.updated_at,
                            "workflowStatus": info.workflow_status,
                            "message": info.message,
                            "forced": info.forced,
                        }
                        for version, info in iset.version_info.items()
                    },
                }
            )
        index_stores.append(
            {
                "datastoreId": ds.datastore_id,
                "createdAt": ds.created_at,
                "losslessStorageFormat": ds.lossless_storage_format,
                **({"datastoreName": ds.name} if ds.name else {}),
                "imageSets": index_sets,
            }
        )
    index = {
        "format": _INDEX_FORMAT,
        "formatVersion": 1,
        "datastores": index_stores,
        "importJobs": [_job_to_json(job) for job in jobs],
    }
    (root / _INDEX_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return root


def load_state(backend: HealthImagingBackend, directory: str | os.PathLike[str]) -> None:
    """Read a directory written by :func:`save_state` into ``backend`` (meant for a new, empty one).

    Parameters
    ----------
    backend
        Receives the data stores, image sets and job records.
    directory
        A directory written by :func:`save_state` or ``ahi-emulator seed``.

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
    stores: dict[str, DatastoreRecord] = {}
    for ds_entry in index.get("datastores", []):
        # IDs become path components, so they are validated before any file is opened.
        datastore_id = check_id(ds_entry["datastoreId"], "datastoreId")
        store = DatastoreRecord(
            datastore_id,
            float(ds_entry.get("createdAt", time.time())),
            lossless_storage_format=str(ds_entry.get("losslessStorageFormat", "HTJ2K")),
            name=ds_entry.get("datastoreName"),
        )
        for is_entry in ds_entry.get("imageSets", []):
            image_set_id = check_id(is_entry["imageSetId"], "imageSetId")
            base = root / datastore_id / image_set_id
            versions = {}
            for version in is_entry["versions"]:
                if not VERSION_PATTERN.fullmatch(str(version)):
                    raise ValueError(f"invalid version {version!r} in {index_path}")
                path = base / f"metadata-v{version}.json"
                versions[str(version)] = json.loads(path.read_text(encoding="utf-8"))
            frames = {}
            for frame_id, meta in is_entry.get("frames", {}).items():
                check_id(frame_id, "frame ID")
                frames[frame_id] = StoredFrame(
                    data=(base / "frames" / Path(meta["file"]).name).read_bytes(),
                    content_type=meta["contentType"],
                    transfer_syntax=meta.get("transferSyntax"),
                    boxed=bool(meta.get("boxed", False)),
                    bits_stored=meta.get("bitsStored"),
                )
            store.image_sets[image_set_id] = ImageSetRecord(
                image_set_id,
                float(is_entry.get("createdAt", time.time())),
                float(is_entry.get("updatedAt", time.time())),
                versions,
                frames,
                is_primary=bool(is_entry.get("isPrimary", True)),
                version_info={
                    str(version): VersionInfo(
                        float(info["createdAt"]),
                        float(info["updatedAt"]),
                        str(info.get("workflowStatus", "CREATED")),
                        info.get("message"),
                        bool(info.get("forced", False)),
                    )
                    for version, info in is_entry.get("versionInfo", {}).items()
                    if str(version) in versions
                },
            )
        stores[datastore_id] = store
    jobs = []
    for job_entry in index.get("importJobs", []):
        job = _job_from_json(job_entry)
        if job.datastore_id not in stores:
            raise ValueError(f"import job {job.job_id} names an unknown data store in {index_path}")
        jobs.append(job)
    backend.restore(stores.values(), jobs)


def _job_to_json(job: JobRecord) -> dict[str, Any]:
    """A job's persistent form (faults and their record are not kept)."""
    return {
        **job.properties(),
        "outputS3Uri": job.output_s3_uri,
        "clientToken": job.client_token,
        "inputOwnerAccountId": job.input_owner_account_id,
    }


def _job_from_json(obj: dict[str, Any]) -> JobRecord:
    """Rebuild a saved job; one that was still running becomes FAILED."""
    job = JobRecord(
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
