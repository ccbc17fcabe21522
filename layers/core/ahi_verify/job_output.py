"""An import job's output folder: ``job-output-manifest.json`` and the SUCCESS/FAILURE/WARNING ndjson lines.

Pure parsing, no AWS: the S3 adapter feeds bytes in. A malformed manifest is an error naming the field;
a malformed ndjson line is a finding (file and line number) and parsing goes on, because one bad line must
neither hide the others nor pass unnoticed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .ids import is_int, is_service_id

_V = TypeVar("_V")


#: Warning codes that leave frames stored as a blob instead of HTJ2K, or malformed / not retrievable.
#: Frames of files with these warnings are expected to fail verification and are reported against them.
FRAME_AFFECTING_WARNINGS: Mapping[int, str] = {
    0xB100: "TRANSCODING_EXCEPTION",
    0xB110: "FRAMES_EXTRACTION_FAILURE",
    0xB111: "FRAME_NUMBER_MISMATCH",
    0xB112: "INVALID_OFFSET_TABLE",
    0xB120: "UNSUPPORTED_TRANSFER_SYNTAX",
}


class ManifestError(ValueError):
    """The manifest is missing, unreadable or lacks a required field."""


class LineKind(enum.StrEnum):
    """Which ndjson file a line came from."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    WARNING = "WARNING"


@dataclass(frozen=True)
class ImageSetSummary:
    """One ``imageSetsSummary`` entry."""

    image_set_id: str
    version: int | None
    is_primary: bool | None
    matched_sop_instances: int | None


@dataclass(frozen=True)
class JobManifest:
    """The parts of ``jobSummary`` verification uses; optional fields are None when absent."""

    job_id: str
    datastore_id: str
    input_s3_uri: str
    output_s3_uri: str
    scanned_files: int
    imported_files: int
    customer_error_files: int
    server_error_files: int
    generated_image_sets: int
    image_sets: tuple[ImageSetSummary, ...]
    """De-duplicated by image set ID, first occurrence kept."""
    duplicate_image_set_entries: int = 0

    @property
    def failed_files(self) -> int:
        """Files the job reported as not imported (customer plus server errors)."""
        return self.customer_error_files + self.server_error_files


@dataclass(frozen=True)
class ImportWarning:
    """One entry of a WARNING line's ``importResponse.warnings``."""

    code: int | None
    type: str | None
    message: str | None

    @property
    def affects_frames(self) -> bool:
        """Whether this warning predicts frames that fail verification (decided by the numeric code)."""
        return self.code in FRAME_AFFECTING_WARNINGS


@dataclass(frozen=True)
class ImportLine:
    """One parsed ndjson line."""

    kind: LineKind
    input_file: str
    image_set_id: str | None = None
    image_set_version: int | None = None
    is_primary: bool | None = None
    exception_type: str | None = None
    message: str | None = None
    warnings: tuple[ImportWarning, ...] = ()


@dataclass(frozen=True)
class LineProblem:
    """An ndjson line that could not be parsed, and where it is."""

    kind: LineKind
    key: str
    line_number: int
    problem: str


def parse_manifest(raw: bytes, where: str) -> JobManifest:
    """Parse ``job-output-manifest.json``.

    Parameters
    ----------
    raw : bytes
        The object's content.
    where : str
        Its location (S3 URI), named in every error.

    Raises
    ------
    ManifestError
        Not JSON, no ``jobSummary``, or a required field missing or of the wrong type.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers, deep nesting
        raise ManifestError(f"{where}: not valid JSON ({type(exc).__name__})") from exc
    summary = doc.get("jobSummary") if isinstance(doc, dict) else None
    if not isinstance(summary, dict):
        raise ManifestError(f"{where}: no jobSummary object")
    entries = summary.get("imageSetsSummary")
    if not isinstance(entries, list):
        raise ManifestError(f"{where}: jobSummary.imageSetsSummary is missing or not a list")
    image_sets: dict[str, ImageSetSummary] = {}
    duplicates = 0
    for i, entry in enumerate(entries):
        parsed = _image_set_summary(entry, f"{where}: jobSummary.imageSetsSummary[{i}]")
        if parsed.image_set_id in image_sets:
            duplicates += 1
        else:
            image_sets[parsed.image_set_id] = parsed
    return JobManifest(
        job_id=_required_str(summary, "jobId", where),
        datastore_id=_required_str(summary, "datastoreId", where),
        input_s3_uri=_required_str(summary, "inputS3Uri", where),
        output_s3_uri=_required_str(summary, "outputS3Uri", where),
        scanned_files=_required_int(summary, "numberOfScannedFiles", where),
        imported_files=_required_int(summary, "numberOfImportedFiles", where),
        customer_error_files=_required_int(summary, "numberOfFilesWithCustomerError", where),
        server_error_files=_required_int(summary, "numberOfFilesWithServerError", where),
        generated_image_sets=_required_int(summary, "numberOfGeneratedImageSets", where),
        image_sets=tuple(image_sets.values()),
        duplicate_image_set_entries=duplicates,
    )


def _image_set_summary(entry: Any, where: str) -> ImageSetSummary:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where} is not an object")
    image_set_id = entry.get("imageSetId")
    if not is_service_id(image_set_id):
        raise ManifestError(f"{where}.imageSetId is missing or not a HealthImaging ID")
    version = entry.get("imageSetVersion")
    primary = entry.get("isPrimary")
    matched = entry.get("numberOfMatchedSOPInstances")
    return ImageSetSummary(
        image_set_id=image_set_id,
        version=version if is_int(version) else None,
        is_primary=primary if isinstance(primary, bool) else None,
        matched_sop_instances=matched if is_int(matched) else None,
    )


def _required_str(summary: Mapping[str, Any], key: str, where: str) -> str:
    value = summary.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: jobSummary.{key} is missing or not a string")
    return value


def _required_int(summary: Mapping[str, Any], key: str, where: str) -> int:
    value = summary.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{where}: jobSummary.{key} is missing or not a non-negative integer")
    return value


class _BadLineError(ValueError):
    """Raised inside line parsing; becomes a LineProblem."""


def parse_line(kind: LineKind, line: bytes, key: str, line_number: int) -> ImportLine | LineProblem | None:
    """Parse one ndjson line; blank lines give None, malformed ones a :class:`LineProblem`.

    Problems name the file and line and what was wrong, never the line's content (the source file
    name may carry patient data).
    """
    if not line.strip():
        return None
    try:
        return _parse_line(kind, line)
    except _BadLineError as exc:
        return LineProblem(kind, key, line_number, str(exc))


def _parse_line(kind: LineKind, line: bytes) -> ImportLine:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, huge integers, deep nesting
        raise _BadLineError(f"not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(obj, dict):
        raise _BadLineError("not a JSON object")
    input_file = _required(obj, "inputFile", str)
    if kind is LineKind.FAILURE:
        exception = _required(obj, "exception", dict)
        return ImportLine(
            kind,
            input_file,
            exception_type=_str(exception.get("exceptionType")),
            message=_str(exception.get("message")),
        )
    response = _required(obj, "importResponse", dict)
    image_set_id = _required(response, "imageSetId", str, "importResponse.")
    warnings: tuple[ImportWarning, ...] = ()
    if kind is LineKind.WARNING:
        warnings = tuple(
            ImportWarning(
                code=w.get("warning_reason_code") if is_int(w.get("warning_reason_code")) else None,
                type=_str(w.get("type")),
                message=_str(w.get("message")),
            )
            for w in _required(response, "warnings", list, "importResponse.")
            if isinstance(w, dict)
        )
    version = response.get("imageSetVersion")
    primary = response.get("isPrimary")
    return ImportLine(
        kind,
        input_file,
        image_set_id=image_set_id,
        image_set_version=version if is_int(version) else None,
        is_primary=primary if isinstance(primary, bool) else None,
        warnings=warnings,
    )


def _required(obj: Mapping[str, Any], key: str, kind: type[_V], prefix: str = "") -> _V:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise _BadLineError(f"{prefix}{key} is missing or not a{'n' if kind is dict else ''} {_TYPE_NAMES[kind]}")
    return value


_TYPE_NAMES: Mapping[type, str] = {str: "string", dict: "object", list: "list"}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
