"""What the emulator can be told to get wrong: request-time faults (with request counters) and import job faults.

Request-time faults (:class:`Fault`, kept in a :class:`FaultBook` shared by all server threads) change how the
HTTP app answers. Import faults (:class:`ImportFaults`) change what a DICOM import job stores and writes, and
:class:`InjectedFaults` records what they changed. Stored-data faults on existing frames (corrupt, truncate,
wrong checksum, remove) are operations on the state, in :mod:`ahi_emulator.models`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar, get_args

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FaultKind = Literal[
    "latency",
    "throttle",
    "server_error",
    "truncate_body",
    "access_denied",
    "not_found",
    "corrupt_gzip",
    "invalid_json",
    "missing_fields",
    "omit_stored_syntax",
]
Operation = Literal[
    "GetImageFrame",
    "GetImageSetMetadata",
    "GetImageSet",
    "SearchImageSets",
    "ListImageSetVersions",
    "UpdateImageSetMetadata",
    "CopyImageSet",
    "DeleteImageSet",
    "StartDICOMImportJob",
    "GetDICOMImportJob",
    "ListDICOMImportJobs",
    "CreateDatastore",
    "GetDatastore",
    "ListDatastores",
]

_Wire = TypeVar("_Wire", bound="DataclassInstance")

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
OPERATIONS: tuple[str, ...] = get_args(Operation)

#: Faults that answer ``GetImageSetMetadata`` with 200 and a damaged document (other operations: no effect).
METADATA_BODY_FAULTS: tuple[str, ...] = ("corrupt_gzip", "invalid_json", "missing_fields", "omit_stored_syntax")

#: kind -> (HTTP status, x-amzn-ErrorType, message) for faults answered with an error response.
ERROR_RESPONSES: dict[str, tuple[int, str, str]] = {
    "throttle": (429, "ThrottlingException", "Rate exceeded (injected by ahi-emulator)"),
    "server_error": (500, "InternalServerException", "Internal server error (injected by ahi-emulator)"),
    "access_denied": (403, "AccessDeniedException", "Access denied (injected by ahi-emulator)"),
    "not_found": (404, "ResourceNotFoundException", "Resource not found (injected by ahi-emulator)"),
}


@dataclass(frozen=True)
class Fault:
    """A request-time fault.

    Parameters
    ----------
    kind
        ``latency`` (sleep, then answer normally), ``throttle`` (429 ThrottlingException),
        ``server_error`` (500 InternalServerException), ``access_denied`` (403 AccessDeniedException),
        ``not_found`` (404 ResourceNotFoundException) or ``truncate_body`` (full ``Content-Length``
        declared, half the body sent, connection closed). Metadata body faults answer ``GetImageSetMetadata``
        with 200 and ``Content-Encoding: gzip`` but a damaged document: ``corrupt_gzip`` (gzip magic number
        followed by bytes that do not inflate), ``invalid_json`` (valid gzip of text that is not JSON) and
        ``missing_fields`` (valid gzip of the document without its ``Study`` object, so no frame can be
        listed), and ``omit_stored_syntax`` (the document with every instance's ``StoredTransferSyntaxUID``
        removed, as a reader must then take it from the data store's lossless storage format); on other
        operations they fire (and are counted) but change nothing.
    operation
        One of :data:`OPERATIONS` (``GetImageFrame``, ``GetImageSetMetadata``, ``GetImageSet``,
        ``SearchImageSets``, ``StartDICOMImportJob``, ...) or ``None`` for any.
    image_set_id, frame_id
        Restrict to one image set / frame; ``None`` matches any. A fault naming either never matches the
        import job operations.
    count
        How many times the fault fires before it is exhausted; ``None`` means forever.
    latency_ms
        Delay for ``latency`` faults.
    every
        Fire on every n-th matching request (n, 2n, 3n, ...); 1 fires on each.
    """

    kind: FaultKind
    operation: Operation | None = None
    image_set_id: str | None = None
    frame_id: str | None = None
    count: int | None = None
    latency_ms: float = 0.0
    every: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.operation is not None and self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}; expected one of {OPERATIONS} or None")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 or None")
        if self.every < 1:
            raise ValueError("every must be >= 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")

    def matches(self, operation: str, image_set_id: str | None, frame_id: str | None) -> bool:
        """Return True when a request for these identifiers is in this fault's scope."""
        return (
            (self.operation is None or self.operation == operation)
            and (self.image_set_id is None or self.image_set_id == image_set_id)
            and (self.frame_id is None or self.frame_id == frame_id)
        )

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the admin API's wire form)."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> Fault:
        """Build a fault from the admin API's wire form.

        Raises
        ------
        ValueError
            When ``obj`` is not an object, has unknown keys or invalid values.
        """
        return _from_wire(cls, obj, "a fault", "fault")


@dataclass(frozen=True)
class FaultDecision:
    """What the app must do for one request: wait ``latency_s``, then apply ``fault`` if set."""

    latency_s: float = 0.0
    fault: Fault | None = None


@dataclass
class _ActiveFault:
    fault: Fault
    matched: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.fault.count is not None and self.fired >= self.fault.count


class LoggedRequest(NamedTuple):
    """One answered API request in the request log.

    Attributes
    ----------
    time
        :func:`time.monotonic` when the answer was ready to send.
    operation
        The API operation, e.g. ``GetImageFrame``.
    status
        The HTTP status of the answer.
    """

    time: float
    operation: str
    status: int


@dataclass
class FaultBook:
    """Thread-safe list of active faults plus request/response counters and the optional request log."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _active: list[_ActiveFault] = field(default_factory=list)
    _requests: Counter[str] = field(default_factory=Counter)
    _responses: Counter[str] = field(default_factory=Counter)
    _fired: Counter[str] = field(default_factory=Counter)
    # None until a benchmark asks for the log: an emulator serving for hours must not grow without bound.
    _log: list[LoggedRequest] | None = None

    def add(self, fault: Fault) -> None:
        """Activate a fault; faults are evaluated in the order they were added."""
        with self._lock:
            self._active.append(_ActiveFault(fault))

    def clear(self) -> None:
        """Remove every fault (counters are kept)."""
        with self._lock:
            self._active.clear()

    def check(
        self, operation: str, image_set_id: str | None, frame_id: str | None, *, latency_only: bool = False
    ) -> FaultDecision:
        """Count one request and decide which faults fire for it.

        Latency faults add up. The first firing non-latency fault decides the response; faults after it
        are not consulted, so they neither count the request nor fire. With ``latency_only`` (a request
        already refused by its quota) only latency faults are consulted: the others never see the request.
        """
        latency_ms = 0.0
        chosen: Fault | None = None
        with self._lock:
            self._requests[operation] += 1
            for active in self._active:
                fault = active.fault
                if active.exhausted or not fault.matches(operation, image_set_id, frame_id):
                    continue
                if latency_only and fault.kind != "latency":
                    continue
                if chosen is not None and fault.kind != "latency":
                    continue
                active.matched += 1
                if active.matched % fault.every:
                    continue
                active.fired += 1
                self._fired[fault.kind] += 1
                if fault.kind == "latency":
                    latency_ms += fault.latency_ms
                else:
                    chosen = fault
        return FaultDecision(latency_ms / 1000.0, chosen)

    def record_response(self, operation: str, status: int) -> None:
        """Count a response by HTTP status, and log it while the request log runs."""
        with self._lock:
            self._responses[str(status)] += 1
            if self._log is not None:
                self._log.append(LoggedRequest(time.monotonic(), operation, status))

    def start_log(self) -> None:
        """Start the request log afresh: from now on every response is logged (see :meth:`log`)."""
        with self._lock:
            self._log = []

    def stop_log(self) -> list[LoggedRequest]:
        """Stop the request log and return what it held."""
        with self._lock:
            log, self._log = self._log or [], None
            return log

    def log(self) -> list[LoggedRequest]:
        """Return a copy of the request log (empty when it has not been started)."""
        with self._lock:
            return list(self._log or ())

    def reset_stats(self) -> None:
        """Zero the counters (active faults keep their own progress)."""
        with self._lock:
            self._requests.clear()
            self._responses.clear()
            self._fired.clear()

    def faults(self) -> list[Fault]:
        """Return the active (not exhausted) faults."""
        with self._lock:
            return [a.fault for a in self._active if not a.exhausted]

    def stats(self) -> dict[str, Any]:
        """Snapshot of the counters, JSON-serialisable.

        Returns
        -------
        dict
            ``requests`` (per operation, every operation listed), ``requests_total``, ``responses`` (per
            HTTP status as a string), ``faults_fired`` (total), ``faults_fired_by_kind`` and ``faults``
            (each active or exhausted fault with its ``matched``/``fired`` counts).
        """
        with self._lock:
            return {
                "requests": {op: self._requests.get(op, 0) for op in OPERATIONS},
                "requests_total": sum(self._requests.values()),
                "responses": dict(self._responses),
                "faults_fired": sum(self._fired.values()),
                "faults_fired_by_kind": {kind: self._fired.get(kind, 0) for kind in FAULT_KINDS},
                "faults": [
                    {**a.fault.to_json(), "matched": a.matched, "fired": a.fired, "exhausted": a.exhausted}
                    for a in self._active
                ],
            }


# ------------------------------------------------------------------------------------------ import faults


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
        return _from_wire(cls, obj, "import faults", "import fault")

    def rejects(self, key: str) -> Literal["customer", "server"] | None:
        """Return which injected failure applies to an object key, if any."""
        basename = key.rsplit("/", 1)[-1]
        if key in self.server_error_files or basename in self.server_error_files:
            return "server"
        if key in self.fail_files or basename in self.fail_files:
            return "customer"
        return None


class StoredFrameRef(NamedTuple):
    """One stored frame, named by its image set and frame IDs."""

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

    corrupted_frames: list[StoredFrameRef] = field(default_factory=list)
    wrong_checksums: dict[StoredFrameRef, tuple[int, int]] = field(default_factory=dict)
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


def _from_wire(cls: type[_Wire], obj: Any, what: str, field_label: str) -> _Wire:
    """Build a fault dataclass from the admin API's JSON object, every mistake a ``ValueError``.

    ``what`` names the object in "must be a JSON object" and ``field_label`` the fields in "unknown ...
    fields", so each fault type keeps its own messages.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = set(obj) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {field_label} fields: {sorted(unknown)}")
    try:
        return cls(**obj)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc
