"""HealthImaging identifiers: the one place their patterns are written down.

Patterns come from the botocore ``medical-imaging`` model: data store, image set and image frame IDs are
``[0-9a-z]{32}``; import job IDs are ``[0-9a-z]{1,32}``; an image set version is a positive integer sent as
a decimal string. Every parser (CLI arguments, events, manifests, work items, settings) asks here.
"""

from __future__ import annotations

import re
import time
from typing import Any, TypeGuard

SERVICE_ID = re.compile(r"[0-9a-z]{32}")
"""Data store, image set and image frame IDs."""
JOB_ID = re.compile(r"[0-9a-z]{1,32}")
"""Import job IDs."""
JOB_FOLDER = re.compile(r"(?:^|/)([0-9a-z]{32})-DicomImport-([0-9a-z]{1,32})/$")
"""``<datastoreId>-DicomImport-<jobId>/``: the job folder HealthImaging appends to the caller's output prefix."""


def is_service_id(value: Any) -> TypeGuard[str]:
    """True for a data store, image set or image frame ID."""
    return isinstance(value, str) and SERVICE_ID.fullmatch(value) is not None


def is_job_id(value: Any) -> TypeGuard[str]:
    """True for an import job ID."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def is_int(value: Any) -> TypeGuard[int]:
    """True for a JSON integer (``bool`` is an ``int`` subclass in Python, and never a count or a version)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_job_folder(key_or_uri: str) -> tuple[str, str] | None:
    """Return ``(datastore_id, job_id)`` from a job folder path, or None when it is not one."""
    folder = key_or_uri if key_or_uri.endswith("/") else key_or_uri.rsplit("/", 1)[0] + "/"
    match = JOB_FOLDER.search(folder)
    return (match.group(1), match.group(2)) if match else None


def audit_run_id(started: float) -> str:
    """The audit run's ID: ``audit`` and the UTC start time, in the job ID alphabet ``[0-9a-z]``."""
    return "audit" + time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(started))
