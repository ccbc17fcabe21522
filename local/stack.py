"""A Docker-free local run of the SAM application: moto for S3/SQS/SNS/DynamoDB, the HealthImaging emulator,
and the real Lambda handlers, wired together exactly as ``template.yaml`` wires them.

``sam local invoke`` needs Docker and moto's Lambda needs Docker too, so this module plays the part of the
Lambda service and of the event sources instead. Everything it creates comes from the template (read by
:mod:`local.template`), so resources and environment cannot drift from what is deployed:

- S3 buckets, SQS queues (attributes, redrive policy onto the DLQ's local ARN), DynamoDB tables (keys, TTL)
  and SNS topics are created in moto; each topic also gets a local SQS subscription for reading alerts.
- Each function's ``Environment`` (Globals merged) is resolved to the local names, URLs and ARNs; its handler
  is imported under its real module name from ``CodeUri`` with the layers' directories on ``sys.path``, and
  called with a Lambda-shaped context while ``AWS_LAMBDA_FUNCTION_NAME`` and the other reserved variables
  are set.
- Event sources: S3 bucket notifications (moto delivers them to an internal SQS queue, which is polled; the
  template's event names and prefix/suffix filters are passed to moto and checked again here), EventBridge
  rules (HealthImaging's import-job events from the emulator, ``put_events``, S3 "Object Created" events of
  EventBridge-enabled buckets; matched with :mod:`local.patterns`), schedules (:meth:`LocalStack.run_schedule`)
  and the SQS event source mapping (batches, partial batch failures, redelivery, moto's redrive to the DLQ).

Lambda's asynchronous invocation (S3, EventBridge, schedules) retries a failed invocation twice by default;
that is emulated without the delays. Retried SQS messages become visible again after
``retry_visibility_timeout`` seconds instead of the queue's full visibility timeout, so that a run with
retries takes seconds, not hours; the queue itself keeps the template's attributes.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal
from urllib.parse import unquote_plus

import boto3
from moto.server import ThreadedMotoServer

from ahi_emulator import Emulator, EmulatorServer

from .patterns import matches, parse_pattern
from .template import ACCOUNT_ID, NO_VALUE, Resource, Template, TemplateError, load_template

__all__ = [
    "Alert",
    "FakeLambdaContext",
    "Invocation",
    "LocalFunction",
    "LocalQueue",
    "LocalStack",
    "Rule",
    "RunSummary",
    "S3Route",
    "SqsMapping",
    "Target",
    "TemplateError",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO / "template.yaml"

Isolation = Literal["inprocess", "subprocess"]
S3EventStyle = Literal["aws", "moto"]

_FUNCTION_TYPES = ("AWS::Serverless::Function",)
_LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
_TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
_EMULATED_TYPES = frozenset(
    {
        *_FUNCTION_TYPES,
        *_LAYER_TYPES,
        *_TABLE_TYPES,
        "AWS::S3::Bucket",
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
        "AWS::Events::Rule",
        "AWS::Lambda::EventSourceMapping",
        "AWS::Lambda::Function",  # noted separately
    }
)
_ASYNC_RETRIES_DEFAULT = 2  # Lambda's MaximumRetryAttempts for asynchronous invocation
_SQS_RECEIVE_MAX = 10
_INTERNAL_S3_QUEUE = "local-s3-notifications"
_EVENTBRIDGE_CONFIG_ID = "local-eventbridge"
_SQS_SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "DeadLetterQueueSourceArn",
)


# ---------------------------------------------------------------------------------------- public data


@dataclass
class FakeLambdaContext:
    """The Lambda context object, with the attributes and method the Python runtime provides.

    ``memory_limit_in_mb`` is a string, as the Python runtime gives it (it copies
    ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``); code that does arithmetic with it must convert it on AWS too.
    """

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_epoch_ms: int
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's ``Timeout`` (never negative)."""
        return max(0, self.deadline_epoch_ms - int(time.time() * 1000))


@dataclass(frozen=True)
class LocalFunction:
    """A function of the template, resolved for the local run.

    Attributes
    ----------
    logical_id, name, arn
        Template key, local function name (``FunctionName`` or ``<stack>-<logical id>``) and ARN.
    code_dir
        ``CodeUri`` (absolute).
    module, attribute
        ``Handler`` split at its last dot: the module imported under this exact name, and the callable.
    timeout_s, memory_mb, runtime
        ``Timeout`` (default 3), ``MemorySize`` (default 128), ``Runtime``.
    environment
        ``Environment.Variables`` with Globals merged, every value resolved to a string.
    layer_dirs
        Directories put on ``sys.path`` for the template's own layers (``<ContentUri>/python`` when it exists,
        else ``ContentUri`` when it holds a Python package; layers without Python sources, such as a
        makefile-built native layer, are satisfied by the virtualenv instead).
    properties
        The function's properties, Globals merged, unresolved.
    log_group
        ``LoggingConfig.LogGroup`` when set, else ``/aws/lambda/<name>`` (the context reports it).
    """

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    module: str
    attribute: str
    timeout_s: int
    memory_mb: int
    runtime: str
    environment: Mapping[str, str]
    layer_dirs: tuple[Path, ...]
    properties: Mapping[str, Any]
    log_group: str = ""

    def reserved_environment(self, context: FakeLambdaContext, region: str) -> dict[str, str]:
        """The variables Lambda sets in every execution environment, for this function."""
        return {
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": context.function_version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": context.log_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": context.log_stream_name,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{self.runtime}",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "_HANDLER": f"{self.module}.{self.attribute}",
            # What `sam local invoke` sets; Powertools' Tracer reads it and stays disabled (no X-Ray daemon here).
            "AWS_SAM_LOCAL": "true",
        }


@dataclass
class Invocation:
    """One invocation of a function.

    Attributes
    ----------
    function
        Logical ID.
    source
        ``"s3"``, ``"eventbridge"``, ``"schedule"``, ``"sqs"`` or ``"direct"``.
    request_id
        The context's ``aws_request_id``.
    event
        The event as delivered.
    result
        The JSON-serialisable return value (None on error).
    error
        ``"<ErrorType>: <message>"`` when the invocation failed (an exception, a timeout, a killed process).
    duration_s
        Wall time.
    failed_item_ids
        SQS only: the message IDs the batch left for redelivery.
    attempt
        Asynchronous sources: 1 for the first attempt, 2.. for Lambda's retries.
    started_at
        Epoch seconds when the invocation started.
    """

    function: str
    source: str
    request_id: str
    event: Any
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0
    failed_item_ids: list[str] = field(default_factory=list)
    attempt: int = 1
    started_at: float = 0.0

    @property
    def ok(self) -> bool:
        """The invocation returned (an SQS batch may still have failed items)."""
        return self.error is None


@dataclass(frozen=True)
class Alert:
    """One SNS notification, read back from the queue subscribed to the topic (envelope, not raw).

    Attributes
    ----------
    topic
        Logical ID of the topic.
    subject, message
        ``Subject`` (None when published without one) and ``Message``.
    attributes
        ``MessageAttributes`` as ``{name: value}``.
    envelope
        The full SNS envelope (``Type``, ``MessageId``, ``TopicArn``, ``Timestamp`` ...).
    """

    topic: str
    subject: str | None
    message: str
    attributes: Mapping[str, str]
    envelope: Mapping[str, Any]


@dataclass
class RunSummary:
    """What :meth:`LocalStack.run_until_idle` did.

    Attributes
    ----------
    invocations, failures
        Per function logical ID: invocations, and invocations that failed (error, timeout, killed).
    failed_items
        Per function: SQS messages its batches left for redelivery.
    dlq_depth
        Per dead-letter queue logical ID: messages in it now.
    elapsed_s
        Wall time of the run.
    records
        Every invocation of the run, in order.
    """

    invocations: dict[str, int]
    failures: dict[str, int]
    failed_items: dict[str, int]
    dlq_depth: dict[str, int]
    elapsed_s: float
    records: list[Invocation]

    def __str__(self) -> str:
        lines = [f"idle after {self.elapsed_s:.1f} s"]
        for name, count in sorted(self.invocations.items()):
            extra = []
            if self.failures.get(name):
                extra.append(f"{self.failures[name]} failed")
            if self.failed_items.get(name):
                extra.append(f"{self.failed_items[name]} message(s) left for redelivery")
            lines.append(f"  {name}: {count} invocation(s)" + (f" ({', '.join(extra)})" if extra else ""))
        lines.extend(
            f"  dead-letter queue {name}: {depth} message(s)" for name, depth in sorted(self.dlq_depth.items())
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ wiring


@dataclass(frozen=True)
class LocalQueue:
    """A queue of the template: local name, URL, ARN, and the logical ID of its dead-letter queue."""

    logical_id: str
    name: str
    url: str
    arn: str
    dlq: str | None  # logical ID of the dead-letter queue


@dataclass(frozen=True)
class SqsMapping:
    """An SQS event source mapping: queue -> function, batch size, partial batch responses, filters."""

    function: str
    queue: LocalQueue
    batch_size: int
    report_failures: bool
    filters: tuple[dict[str, Any], ...]
    enabled: bool


@dataclass(frozen=True)
class Target:
    """A rule target: a function (logical ID), a queue (URL) or a topic (ARN), with Input/InputPath."""

    kind: Literal["function", "sqs", "sns"]
    ref: str  # function logical ID, queue URL or topic ARN
    input: Any = None  # Input (parsed JSON) replaces the event
    input_path: str | None = None


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule of the template (an event pattern or a schedule) and its targets."""

    logical_id: str
    name: str
    arn: str
    bus: str
    pattern: dict[str, Any] | None
    schedule: str | None
    enabled: bool
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class S3Route:
    """Where a bucket's notifications go: a function (with the template's filter) or the bus (None)."""

    bucket: str
    function: str | None  # None: the bucket's EventBridge delivery
    events: tuple[str, ...]
    prefix: str
    suffix: str


@dataclass
class _CrashPlan:
    after_s: float | None
    when: Callable[[], bool] | None
    times: int


_CHILD_BOOTSTRAP = r"""
import importlib, json, sys, time, traceback
spec = json.loads(sys.stdin.read())
sys.path[:0] = spec["sys_path"]

class FakeLambdaContext:
    def __init__(self, fields):
        self.__dict__.update(fields)
        self.identity = None
        self.client_context = None
    def get_remaining_time_in_millis(self):
        return max(0, self.deadline_epoch_ms - int(time.time() * 1000))

context = FakeLambdaContext(spec["context"])
try:
    module = importlib.import_module(spec["module"])
    result = getattr(module, spec["attribute"])(spec["event"], context)
    out = {"ok": True, "result": json.loads(json.dumps(result))}
except Exception as exc:
    traceback.print_exc()
    out = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}
with open(spec["result_path"], "w", encoding="utf-8") as handle:
    json.dump(out, handle)
"""


def _now_iso(milliseconds: bool = False) -> str:
    now = datetime.now(UTC)
    if milliseconds:
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_under(path: str | None, directory: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _as_bool(value: Any, default: bool) -> bool:
    if value is None or value is NO_VALUE:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "enabled")


def _json_path(event: Any, path: str) -> Any:
    """The tiny JSONPath subset EventBridge's InputPath uses in practice: ``$`` and ``$.a.b``."""
    if path == "$":
        return event
    if not path.startswith("$."):
        raise TemplateError(f"InputPath {path!r} is not supported by the local run (only $ and $.a.b)")
    value = event
    for part in path[2:].split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def s3_key_filter(filter_spec: Any) -> tuple[str, str]:
    """Return ``(prefix, suffix)`` of a CloudFormation/SAM S3 notification ``Filter`` (either may be empty)."""
    rules = ((filter_spec or {}).get("S3Key") or {}).get("Rules") or []
    values = {str(rule.get("Name", "")).lower(): str(rule.get("Value", "")) for rule in rules}
    return values.get("prefix", ""), values.get("suffix", "")


def s3_event_matches(event_name: str, patterns: Sequence[str]) -> bool:
    """Whether an S3 event name (``ObjectCreated:Put``) is selected by notification event types.

    Parameters
    ----------
    event_name
        From the record, without the ``s3:`` prefix.
    patterns
        ``s3:ObjectCreated:*``, ``s3:ObjectCreated:Put`` ...
    """
    full = f"s3:{event_name}"
    family = ":".join(full.split(":")[:2]) + ":*"
    return any(p in (full, family) for p in patterns)


def s3_record_to_eventbridge(record: Mapping[str, Any], account_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """The EventBridge event S3 sends for a bucket with EventBridge enabled, from a notification record.

    EventBridge events carry the key as is (not URL-encoded, unlike notification records).
    """
    s3 = record["s3"]
    name = str(record.get("eventName", "ObjectCreated:Put"))
    family, _, action = name.partition(":")
    detail_type = "Object Created" if family == "ObjectCreated" else "Object Deleted"
    reason = {
        "Put": "PutObject",
        "Post": "PostObject",
        "Copy": "CopyObject",
        "CompleteMultipartUpload": "CompleteMultipartUpload",
        "Delete": "DeleteObject",
        "DeleteMarkerCreated": "DeleteObject",
    }.get(action, action)
    obj = s3["object"]
    detail_object: dict[str, Any] = {
        "key": unquote_plus(str(obj["key"])),
        "size": obj.get("size", 0),
        "etag": obj.get("eTag", ""),
        "sequencer": obj.get("sequencer") or secrets.token_hex(9).upper(),
    }
    if obj.get("versionId"):
        detail_object["version-id"] = obj["versionId"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": account_id,
        "time": str(record.get("eventTime", _now_iso()))[:19] + "Z",
        "region": record.get("awsRegion", "us-east-1"),
        "resources": [f"arn:aws:s3:::{s3['bucket']['name']}"],
        "detail": {
            "version": "0",
            "bucket": {"name": s3["bucket"]["name"]},
            "object": detail_object,
            "request-id": secrets.token_hex(8).upper(),
            "requester": account_id,
            "source-ip-address": "127.0.0.1",
            "reason": reason,
        },
    }


def enrich_s3_record(record: Mapping[str, Any], account_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """Complete moto's reduced S3 notification record to the shape AWS sends.

    moto omits ``userIdentity``, ``requestParameters``, ``responseElements``, ``ownerIdentity`` and
    ``sequencer`` (Powertools' parser models reject the record without them). The key keeps moto's encoding:
    ``quote_plus`` of the whole key, ``/`` included, which decodes exactly like AWS's with ``unquote_plus``
    and makes a forgotten decode fail locally instead of only on keys with spaces.
    """
    out = json.loads(json.dumps(record))
    principal = f"AWS:AIDA{account_id}LOCAL"
    out.setdefault("userIdentity", {"principalId": principal})
    out.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    out.setdefault(
        "responseElements",
        {
            "x-amz-request-id": secrets.token_hex(8).upper(),
            "x-amz-id-2": base64.b64encode(secrets.token_bytes(48)).decode(),
        },
    )
    s3 = out.setdefault("s3", {})
    s3.setdefault("bucket", {}).setdefault("ownerIdentity", {"principalId": f"A{account_id}LOCAL"})
    obj = s3.setdefault("object", {})
    obj.setdefault("sequencer", f"{time.time_ns():X}"[:18])
    return dict(out)


# --------------------------------------------------------------------------------------------- stack


class LocalStack:
    """The SAM application running locally; use it as a context manager.

    Parameters
    ----------
    template
        ``template.yaml`` (default: the repository's).
    parameters
        Parameter overrides (``{"DatastoreId": "...", "TriggerMode": "ExistingBucket"}``).
    stack_name
        ``AWS::StackName`` and the prefix of generated names.
    emulator
        The HealthImaging emulator to serve (default: a new, empty one). Its ``on_event`` is connected to the
        local EventBridge bus while the stack runs.
    retry_visibility_timeout
        Seconds after which a message that failed in the worker becomes visible again (the queue's own
        ``VisibilityTimeout`` applies while a batch is being processed).
    s3_event_style
        ``"aws"`` (default) delivers S3 records completed to AWS's full shape; ``"moto"`` delivers moto's
        reduced record unchanged.
    async_retries
        Retries of a failed asynchronous invocation (S3, EventBridge, schedule). Default: the function's
        ``EventInvokeConfig.MaximumRetryAttempts``, else 2, as Lambda does.
    existing_buckets
        Buckets that exist outside the stack (ExistingBucket mode): created in moto, with EventBridge delivery
        enabled as the deployment instructions require. Default: the values of parameters named
        ``Existing...BucketName`` that are not empty.
    isolation
        Per function logical ID, ``"subprocess"`` to run every invocation in a fresh Python process (a cold
        start each time; the ``Timeout`` is enforced); default in-process.
    region
        The local region.
    reset_moto
        Reset moto's in-process state when starting (moto's backends are global to the Python process).

    Examples
    --------
    >>> with LocalStack(parameters={"DatastoreId": ds}) as stack:  # doctest: +SKIP
    ...     stack.emulator.start_import_job(ds, "s3://in/dicom/", f"s3://{stack.bucket_name('OutputBucket')}/import-output/")
    ...     print(stack.run_until_idle(timeout=120))
    ...     print(stack.alerts())
    """

    def __init__(
        self,
        template: str | Path | None = None,
        *,
        parameters: Mapping[str, str | Sequence[str]] | None = None,
        stack_name: str = "ahi-verify-local",
        emulator: Emulator | None = None,
        retry_visibility_timeout: int = 1,
        s3_event_style: S3EventStyle = "aws",
        async_retries: int | None = None,
        existing_buckets: Sequence[str] | None = None,
        isolation: Mapping[str, Isolation] | None = None,
        region: str = "us-east-1",
        reset_moto: bool = True,
    ) -> None:
        self.template_path = Path(template) if template is not None else DEFAULT_TEMPLATE
        self.parameter_overrides = dict(parameters or {})
        self.stack_name = stack_name
        self.emulator = emulator if emulator is not None else Emulator(region=region)
        self.retry_visibility_timeout = retry_visibility_timeout
        self.s3_event_style: S3EventStyle = s3_event_style
        self.async_retries = async_retries
        self._existing_buckets_arg = list(existing_buckets) if existing_buckets is not None else None
        self.isolation = dict(isolation or {})
        self.region = region
        self.reset_moto = reset_moto
        self.invocations: list[Invocation] = []
        self.notes: list[str] = []
        """What the local run does not emulate for this template (each said once)."""

        self._moto: ThreadedMotoServer | None = None
        self._emulator_server: EmulatorServer | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_sys_path: list[str] = []
        self._modules_before: set[str] = set()
        self._saved_on_event: Any = None
        self._saved_werkzeug_level: int = logging.NOTSET
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._invoke_lock = threading.RLock()
        self._bus: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._crash_plans: dict[str, list[_CrashPlan]] = {}
        self._alerts: list[Alert] = []
        self._done_jobs: set[str] = set()
        self._running = False

        self.template: Template
        self.endpoint_url = ""
        self.functions: dict[str, LocalFunction] = {}
        self.queues: dict[str, LocalQueue] = {}
        self.tables: dict[str, str] = {}
        self.topics: dict[str, str] = {}
        self.buckets: dict[str, str] = {}
        self.existing_buckets: list[str] = []
        self.rules: dict[str, Rule] = {}
        self.sqs_mappings: list[SqsMapping] = []
        self.s3_routes: dict[str, S3Route] = {}
        """S3 notification routes by configuration ID (a function, or the bus for EventBridge-enabled buckets)."""
        self._s3_queue_url = ""
        self._alert_queues: dict[str, str] = {}
        self._function_by_arn: dict[str, str] = {}

    # ------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalStack:
        """Start moto and the emulator, point this process's boto3 at them, create the resources.

        Returns
        -------
        LocalStack
            ``self``.

        Raises
        ------
        TemplateError
            When the template cannot be resolved with the given parameters.
        """
        if self._running:
            return self
        werkzeug = logging.getLogger("werkzeug")
        self._saved_werkzeug_level = werkzeug.level
        werkzeug.setLevel(logging.WARNING)  # moto's server logs every request at INFO
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self._running = True
        try:
            host, port = self._moto.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            if self.reset_moto:
                request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
                with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback, our own server
                    pass
            self._emulator_server = EmulatorServer(self.emulator).start()
            self._set_process_env()
            self._saved_sys_path = list(sys.path)
            self._modules_before = set(sys.modules)
            self.template = Template(
                load_template(self.template_path),
                self.parameter_overrides,
                stack_name=self.stack_name,
                base_dir=self.template_path.parent,
                sqs_endpoint=self.endpoint_url,
                region=self.region,
                account_id=ACCOUNT_ID,
            )
            self._session = boto3.session.Session(
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto's fake credentials
                region_name=self.region,
            )
            self.s3: Any = self._client("s3")
            self.sqs: Any = self._client("sqs")
            self.sns: Any = self._client("sns")
            self.dynamodb: Any = self._client("dynamodb")
            self._build()
            self._saved_on_event = self.emulator.on_event
            self.emulator.on_event = self._on_emulator_event
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the servers, restore the environment, ``sys.path`` and ``sys.modules`` (handlers imported by
        this stack are forgotten, so the next stack cold-starts them against its own endpoints)."""
        if not self._running:
            return
        self._running = False
        if self.emulator.on_event == self._on_emulator_event:
            self.emulator.on_event = self._saved_on_event
        code_dirs = [f.code_dir for f in getattr(self, "functions", {}).values()]
        layer_dirs = [d for f in getattr(self, "functions", {}).values() for d in f.layer_dirs]
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            fresh = name not in self._modules_before
            if any(_is_under(path, d) for d in code_dirs) or (fresh and any(_is_under(path, d) for d in layer_dirs)):
                del sys.modules[name]
        self._handlers.clear()
        if self._saved_sys_path:
            sys.path[:] = self._saved_sys_path
        self._restore_env(self._saved_env)
        self._saved_env = {}
        if self._emulator_server is not None:
            self._emulator_server.stop()
            self._emulator_server = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        logging.getLogger("werkzeug").setLevel(self._saved_werkzeug_level)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self.endpoint_url)

    def _set_process_env(self) -> None:
        assert self._emulator_server is not None
        wanted: dict[str, str | None] = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": self._emulator_server.endpoint_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PROFILE": None,
        }
        # A service-specific endpoint left in the environment would win over AWS_ENDPOINT_URL.
        for key in os.environ:
            if key.startswith("AWS_ENDPOINT_URL_") and key not in wanted:
                wanted[key] = None
        self._saved_env = self._apply_env(wanted)

    @staticmethod
    def _apply_env(values: Mapping[str, str | None]) -> dict[str, str | None]:
        saved = {key: os.environ.get(key) for key in values}
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return saved

    @staticmethod
    def _restore_env(saved: Mapping[str, str | None]) -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # ------------------------------------------------------------------------------------- resources

    def _build(self) -> None:
        t = self.template
        for resource in t.of_type(*_FUNCTION_TYPES):
            fn = self._function(resource)
            self.functions[fn.logical_id] = fn
            self._function_by_arn[fn.arn] = fn.logical_id
        for resource in t.of_type("AWS::Lambda::Function"):
            self._note(f"{resource.logical_id}: AWS::Lambda::Function is not run locally (SAM functions only)")
        ignored = Counter(r.type for r in t.resources.values() if r.type not in _EMULATED_TYPES)
        if ignored:
            listed = ", ".join(f"{kind} x{count}" if count > 1 else kind for kind, count in sorted(ignored.items()))
            self._note(f"no local effect (IAM is not enforced either): {listed}")
        self._create_queues()
        self._create_tables()
        self._create_topics()
        self._s3_queue_url = self.sqs.create_queue(QueueName=f"{self.stack_name}-{_INTERNAL_S3_QUEUE}")["QueueUrl"]
        self._create_buckets()
        self._collect_rules()
        self._collect_sqs_mappings()

    def _function(self, resource: Resource) -> LocalFunction:
        t, props, where = self.template, resource.properties, resource.logical_id
        code_uri = t.resolve(props.get("CodeUri"), where=f"{where}.CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{where}: CodeUri must be a local directory for the local run, got {code_uri!r}")
        handler = str(t.resolve(props.get("Handler"), where=f"{where}.Handler"))
        module, _, attribute = handler.rpartition(".")
        if not module:
            raise TemplateError(f"{where}: Handler {handler!r} is not module.function")
        variables = t.resolve((props.get("Environment") or {}).get("Variables") or {}, where=f"{where}.Environment")
        environment = {str(k): _env_string(v) for k, v in dict(variables).items()}
        layer_dirs: list[Path] = []
        for i, layer in enumerate(props.get("Layers") or []):
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            target = t.resources.get(str(ref)) if ref else None
            if target is None or target.type not in _LAYER_TYPES:
                self._note(f"{where}.Layers[{i}] is not a layer of this template: provided by the virtualenv")
                continue
            content = t.resolve(target.properties.get("ContentUri"), where=f"{target.logical_id}.ContentUri")
            directory = (t.base_dir / str(content)).resolve()
            if (directory / "python").is_dir():
                layer_dirs.append(directory / "python")
            elif any((child / "__init__.py").is_file() for child in directory.iterdir() if child.is_dir()):
                layer_dirs.append(directory)
            else:
                self._note(f"{target.logical_id}: no Python sources in {content}: provided by the virtualenv")
        logging_config = t.resolve(props.get("LoggingConfig") or {}, where=f"{where}.LoggingConfig")
        timeout = t.resolve(props.get("Timeout", 3), where=f"{where}.Timeout")
        memory = t.resolve(props.get("MemorySize", 128), where=f"{where}.MemorySize")
        return LocalFunction(
            logical_id=resource.logical_id,
            name=resource.physical_id,
            arn=t.arn(resource),
            code_dir=(t.base_dir / code_uri).resolve(),
            module=module,
            attribute=attribute,
            timeout_s=int(timeout),
            memory_mb=int(memory),
            runtime=str(t.resolve(props.get("Runtime", "python3.12"), where=f"{where}.Runtime")),
            environment=environment,
            layer_dirs=tuple(layer_dirs),
            properties=props,
            log_group=str(logging_config.get("LogGroup") or f"/aws/lambda/{resource.physical_id}"),
        )

    def _create_queues(self) -> None:
        t = self.template
        redrives: dict[str, Any] = {}
        for resource in t.of_type("AWS::SQS::Queue"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            attributes: dict[str, str] = {}
            for key in (
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "DelaySeconds",
                "MaximumMessageSize",
                "ReceiveMessageWaitTimeSeconds",
                "FifoQueue",
                "ContentBasedDeduplication",
                "SqsManagedSseEnabled",
            ):
                if key in props:
                    attributes[key] = _env_string(props[key])
            if "RedrivePolicy" in props:
                redrives[resource.logical_id] = props["RedrivePolicy"]
            url = self.sqs.create_queue(QueueName=resource.physical_id, Attributes=attributes)["QueueUrl"]
            if url != t.queue_url(resource):
                raise TemplateError(
                    f"moto's URL {url} for {resource.logical_id} is not the expected {t.queue_url(resource)}"
                )
            self.queues[resource.logical_id] = LocalQueue(
                resource.logical_id, resource.physical_id, url, t.arn(resource), None
            )
        # Redrive policies after every queue exists: moto checks that the dead-letter queue does.
        by_arn = {q.arn: q for q in self.queues.values()}
        for logical_id, policy in redrives.items():
            doc = json.loads(policy) if isinstance(policy, str) else dict(policy)
            dlq = by_arn.get(str(doc.get("deadLetterTargetArn")))
            if dlq is None:
                raise TemplateError(
                    f"{logical_id}.RedrivePolicy: {doc.get('deadLetterTargetArn')} is not a queue of the stack"
                )
            source = self.queues[logical_id]
            self.sqs.set_queue_attributes(
                QueueUrl=source.url,
                Attributes={
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": int(doc["maxReceiveCount"])}
                    )
                },
            )
            self.queues[logical_id] = LocalQueue(source.logical_id, source.name, source.url, source.arn, dlq.logical_id)

    def _create_tables(self) -> None:
        t = self.template
        for resource in t.of_type(*_TABLE_TYPES):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            name = resource.physical_id
            if resource.type == "AWS::Serverless::SimpleTable":
                key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
                kind = {"String": "S", "Number": "N", "Binary": "B"}[str(key["Type"])]
                self.dynamodb.create_table(
                    TableName=name,
                    AttributeDefinitions=[{"AttributeName": key["Name"], "AttributeType": kind}],
                    KeySchema=[{"AttributeName": key["Name"], "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                self.tables[resource.logical_id] = name
                continue
            request: dict[str, Any] = {
                "TableName": name,
                "AttributeDefinitions": props["AttributeDefinitions"],
                "KeySchema": props["KeySchema"],
            }
            for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
                if key in props:
                    request[key] = props[key]
            if props.get("BillingMode") == "PAY_PER_REQUEST" or "ProvisionedThroughput" not in props:
                request["BillingMode"] = "PAY_PER_REQUEST"
                for index in request.get("GlobalSecondaryIndexes", []):
                    index.pop("ProvisionedThroughput", None)
            else:
                request["ProvisionedThroughput"] = {k: int(v) for k, v in props["ProvisionedThroughput"].items()}
            self.dynamodb.create_table(**request)
            ttl = props.get("TimeToLiveSpecification")
            if ttl and _as_bool(ttl.get("Enabled"), False):
                self.dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            self.tables[resource.logical_id] = name

    def _create_topics(self) -> None:
        t = self.template
        for resource in t.of_type("AWS::SNS::Topic"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            arn = self.sns.create_topic(Name=resource.physical_id)["TopicArn"]
            self.topics[resource.logical_id] = arn
            for sub in props.get("Subscription") or []:
                self._subscribe(arn, str(sub.get("Protocol")), str(sub.get("Endpoint")))
            alert_queue = self.sqs.create_queue(QueueName=f"{self.stack_name}-local-{resource.logical_id}-reader")
            alert_url = alert_queue["QueueUrl"]
            alert_arn = self.sqs.get_queue_attributes(QueueUrl=alert_url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            # RawMessageDelivery false: the reader sees the SNS envelope, so Subject and attributes are checked too.
            self.sns.subscribe(
                TopicArn=arn, Protocol="sqs", Endpoint=alert_arn, Attributes={"RawMessageDelivery": "false"}
            )
            self._alert_queues[resource.logical_id] = alert_url
        for resource in t.of_type("AWS::SNS::Subscription"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            self._subscribe(str(props["TopicArn"]), str(props["Protocol"]), str(props["Endpoint"]))

    def _subscribe(self, topic_arn: str, protocol: str, endpoint: str) -> None:
        if protocol in ("email", "email-json", "sms", "http", "https"):
            # Nothing local can receive these; alerts are read through the stack's own queue subscription.
            self._note(f"SNS {protocol} subscription {endpoint!r} to {topic_arn} is not delivered locally")
            return
        self.sns.subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint)

    def _create_buckets(self) -> None:
        t = self.template
        internal_arn = f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{self.stack_name}-{_INTERNAL_S3_QUEUE}"
        configs: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def add_route(bucket: str, function: str | None, events: Sequence[str], filter_spec: Any) -> None:
            prefix, suffix = s3_key_filter(filter_spec)
            config_id = _EVENTBRIDGE_CONFIG_ID if function is None else f"local-lambda-{len(self.s3_routes)}"
            self.s3_routes[config_id] = S3Route(bucket, function, tuple(events), prefix, suffix)
            rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
            entry: dict[str, Any] = {"Id": config_id, "QueueArn": internal_arn, "Events": list(events)}
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": rules}}
            configs.setdefault(bucket, {}).setdefault("QueueConfigurations", []).append(entry)

        for resource in t.of_type("AWS::S3::Bucket"):
            name = resource.physical_id
            self.s3.create_bucket(Bucket=name)
            self.buckets[resource.logical_id] = name
            notification = t.resolve(
                resource.properties.get("NotificationConfiguration") or {}, where=resource.logical_id
            )
            for cfg in notification.get("LambdaConfigurations") or []:
                function = self._function_by_arn.get(str(cfg.get("Function")))
                if function is None:
                    self._note(f"{resource.logical_id}: notification to {cfg.get('Function')} is not a local function")
                    continue
                add_route(name, function, [str(cfg["Event"])], cfg.get("Filter"))
            for cfg in notification.get("QueueConfigurations") or []:
                configs.setdefault(name, {}).setdefault("QueueConfigurations", []).append(
                    _api_notification(cfg, "Queue", "QueueArn")
                )
            for cfg in notification.get("TopicConfigurations") or []:
                configs.setdefault(name, {}).setdefault("TopicConfigurations", []).append(
                    _api_notification(cfg, "Topic", "TopicArn")
                )
            if _as_bool((notification.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled"), False):
                add_route(name, None, ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], None)
        # SAM `Type: S3` events on a function (the bucket must be in the template).
        for fn in self.functions.values():
            for event_name, event in (fn.properties.get("Events") or {}).items():
                if event.get("Type") != "S3":
                    continue
                props = t.resolve(event.get("Properties") or {}, where=f"{fn.logical_id}.Events.{event_name}")
                events = props.get("Events")
                add_route(
                    str(props["Bucket"]),
                    fn.logical_id,
                    events if isinstance(events, list) else [events],
                    props.get("Filter"),
                )
        self.existing_buckets = self._existing_bucket_names()
        for name in self.existing_buckets:
            if name not in self.buckets.values():
                self.s3.create_bucket(Bucket=name)
            add_route(name, None, ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], None)
        for bucket, config in configs.items():
            self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)

    def _existing_bucket_names(self) -> list[str]:
        if self._existing_buckets_arg is not None:
            return self._existing_buckets_arg
        return [
            str(value)
            for name, value in self.template.parameters.items()
            if name.startswith("Existing") and name.endswith("BucketName") and value
        ]

    def _collect_rules(self) -> None:
        t = self.template
        for fn in self.functions.values():
            for event_name, event in (fn.properties.get("Events") or {}).items():
                kind = event.get("Type")
                if kind not in ("EventBridgeRule", "CloudWatchEvent", "Schedule", "ScheduleV2"):
                    continue
                where = f"{fn.logical_id}.Events.{event_name}"
                props = t.resolve(event.get("Properties") or {}, where=where)
                logical_id = f"{fn.logical_id}{event_name}"
                name = str(props.get("RuleName") or props.get("Name") or f"{self.stack_name}-{logical_id}")
                if "InputTransformer" in props:
                    raise TemplateError(f"{where}: InputTransformer is not supported by the local run")
                target = Target("function", fn.logical_id, _parse_input(props.get("Input")), props.get("InputPath"))
                schedule = props.get("Schedule") or props.get("ScheduleExpression")
                enabled = _as_bool(props.get("Enabled"), True) and _as_bool(props.get("State", "ENABLED"), True)
                self.rules[logical_id] = Rule(
                    logical_id=logical_id,
                    name=name,
                    arn=f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{name}",
                    bus=str(props.get("EventBusName") or "default"),
                    pattern=parse_pattern(props["Pattern"]) if "Pattern" in props else None,
                    schedule=str(schedule) if schedule else None,
                    enabled=enabled,
                    targets=(target,),
                )
        for resource in t.of_type("AWS::Events::Rule"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            targets = []
            for i, raw in enumerate(props.get("Targets") or []):
                if "InputTransformer" in raw:
                    raise TemplateError(
                        f"{resource.logical_id}.Targets[{i}]: InputTransformer is not supported locally"
                    )
                arn = str(raw["Arn"])
                found = self._target_for_arn(arn, raw)
                if found is None:
                    self._note(f"{resource.logical_id}: target {arn} is not emulated")
                    continue
                targets.append(found)
            pattern = props.get("EventPattern")
            self.rules[resource.logical_id] = Rule(
                logical_id=resource.logical_id,
                name=resource.physical_id,
                arn=t.arn(resource),
                bus=str(props.get("EventBusName") or "default"),
                pattern=parse_pattern(pattern) if pattern else None,
                schedule=str(props["ScheduleExpression"]) if props.get("ScheduleExpression") else None,
                enabled=str(props.get("State", "ENABLED")).upper() == "ENABLED",
                targets=tuple(targets),
            )

    def _target_for_arn(self, arn: str, raw: Mapping[str, Any]) -> Target | None:
        input_value, input_path = _parse_input(raw.get("Input")), raw.get("InputPath")
        function = self._function_by_arn.get(arn)
        if function is not None:
            return Target("function", function, input_value, input_path)
        for q in self.queues.values():
            if q.arn == arn:
                return Target("sqs", q.url, input_value, input_path)
        if arn in self.topics.values():
            return Target("sns", arn, input_value, input_path)
        return None

    def _collect_sqs_mappings(self) -> None:
        t = self.template
        by_arn = {q.arn: q for q in self.queues.values()}
        for fn in self.functions.values():
            for event_name, event in (fn.properties.get("Events") or {}).items():
                if event.get("Type") != "SQS":
                    continue
                props = t.resolve(event.get("Properties") or {}, where=f"{fn.logical_id}.Events.{event_name}")
                self._add_mapping(fn.logical_id, props, by_arn, f"{fn.logical_id}.Events.{event_name}")
        for resource in t.of_type("AWS::Lambda::EventSourceMapping"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            target = str(props.get("FunctionName"))
            function = next((f.logical_id for f in self.functions.values() if target in (f.name, f.arn)), None)
            if function is None or str(props.get("EventSourceArn")) not in by_arn:
                self._note(f"{resource.logical_id}: event source mapping is not emulated")
                continue
            self._add_mapping(function, {**props, "Queue": props["EventSourceArn"]}, by_arn, resource.logical_id)

    def _add_mapping(
        self, function: str, props: Mapping[str, Any], by_arn: Mapping[str, LocalQueue], where: str
    ) -> None:
        source = by_arn.get(str(props.get("Queue")))
        if source is None:
            raise TemplateError(f"{where}: Queue {props.get('Queue')} is not a queue of the stack")
        filters = tuple(parse_pattern(f["Pattern"]) for f in ((props.get("FilterCriteria") or {}).get("Filters") or []))
        self.sqs_mappings.append(
            SqsMapping(
                function=function,
                queue=source,
                batch_size=int(props.get("BatchSize", 10)),
                report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                filters=filters,
                enabled=_as_bool(props.get("Enabled"), True),
            )
        )

    # ---------------------------------------------------------------------------------------- lookups

    def function(self, logical_id: str) -> LocalFunction:
        """Return a function of the template.

        Raises
        ------
        KeyError
            Naming the functions the template has.
        """
        try:
            return self.functions[logical_id]
        except KeyError:
            raise KeyError(f"no function {logical_id!r}; the template has {sorted(self.functions)}") from None

    def queue_url(self, logical_id: str) -> str:
        """URL of a queue of the template."""
        return self.queues[logical_id].url

    def bucket_name(self, logical_id: str) -> str:
        """Name of a bucket of the template."""
        return self.buckets[logical_id]

    def queue_depth(self, logical_id: str) -> int:
        """Messages in a queue of the template: visible, in flight and delayed."""
        return self._depth(self.queues[logical_id].url)

    def _depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    # ------------------------------------------------------------------------------------- invocation

    def arm_crash(
        self,
        function: str,
        *,
        after_s: float | None = None,
        when: Callable[[], bool] | None = None,
        times: int = 1,
    ) -> None:
        """Kill the next ``times`` invocations of ``function`` mid-flight, like a crashed execution environment.

        Those invocations run in a fresh Python process (the handler imported under its real module name,
        with the function's environment), which gets SIGKILL once ``after_s`` seconds have passed or ``when()``
        returns true, whichever comes first. The invocation then fails as a whole: for an SQS batch every
        message stays in the queue and is redelivered. An invocation that finishes first is not killed.

        Parameters
        ----------
        function
            Logical ID.
        after_s
            Kill this long after the process starts.
        when
            Polled (every 20 ms) while the process runs, in this process; e.g. "a progress item exists".
        times
            How many invocations to kill.
        """
        if after_s is None and when is None:
            raise ValueError("arm_crash needs after_s or when")
        self.function(function)
        self._crash_plans.setdefault(function, []).append(_CrashPlan(after_s, when, times))

    def invoke(
        self,
        function: str,
        event: Any,
        *,
        source: str = "direct",
        isolation: Isolation | None = None,
        attempt: int = 1,
    ) -> Invocation:
        """Invoke a function synchronously (``RequestResponse``) and record the invocation.

        The event and the result pass through JSON, as they do on Lambda (a result that is not JSON-serialisable
        is an error). In-process, the ``Timeout`` cannot interrupt the handler; an invocation that overruns it
        is recorded as timed out all the same.

        Parameters
        ----------
        function
            Logical ID.
        event
            The event.
        source
            Recorded on the :class:`Invocation`.
        isolation
            Override the function's isolation for this call.
        attempt
            Recorded on the :class:`Invocation` (asynchronous retries).

        Returns
        -------
        Invocation
        """
        fn = self.function(function)
        request_id = str(uuid.uuid4())
        payload = json.loads(json.dumps(event))
        invocation = Invocation(fn.logical_id, source, request_id, payload, attempt=attempt, started_at=time.time())
        context = self._context(fn, request_id)
        plan = self._take_crash_plan(fn.logical_id)
        mode = isolation or self.isolation.get(fn.logical_id, "inprocess")
        started = time.monotonic()
        if plan is not None or mode == "subprocess":
            result, error = self._invoke_subprocess(fn, payload, context, plan)
        else:
            result, error = self._invoke_inprocess(fn, payload, context)
        invocation.duration_s = time.monotonic() - started
        if error is None and invocation.duration_s > fn.timeout_s:
            error = f"Sandbox.Timedout: Task timed out after {fn.timeout_s:.2f} seconds (in-process: not interrupted)"
        invocation.result, invocation.error = (None, error) if error else (result, None)
        self.invocations.append(invocation)
        return invocation

    def _context(self, fn: LocalFunction, request_id: str) -> FakeLambdaContext:
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{secrets.token_hex(16)}"
        return FakeLambdaContext(
            function_name=fn.name,
            function_version="$LATEST",
            invoked_function_arn=fn.arn,
            memory_limit_in_mb=str(fn.memory_mb),
            aws_request_id=request_id,
            log_group_name=fn.log_group,
            log_stream_name=stream,
            deadline_epoch_ms=int(time.time() * 1000) + fn.timeout_s * 1000,
        )

    def _take_crash_plan(self, function: str) -> _CrashPlan | None:
        plans = self._crash_plans.get(function)
        if not plans:
            return None
        plan = plans[0]
        plan.times -= 1
        if plan.times <= 0:
            plans.pop(0)
        return plan

    @contextlib.contextmanager
    def _function_env(self, fn: LocalFunction, context: FakeLambdaContext) -> Iterator[None]:
        values: dict[str, str | None] = {**fn.environment, **fn.reserved_environment(context, self.region)}
        with self._invoke_lock:
            saved = self._apply_env(values)
            try:
                yield
            finally:
                self._restore_env(saved)

    def _load_handler(self, fn: LocalFunction) -> Callable[..., Any]:
        cached = self._handlers.get(fn.logical_id)
        if cached is not None:
            return cached
        # Lambda's order: the function's code first (/var/task), then the layers (/opt/python).
        for directory in reversed([fn.code_dir, *fn.layer_dirs]):
            if str(directory) in sys.path:
                sys.path.remove(str(directory))
            sys.path.insert(0, str(directory))
        existing = sys.modules.get(fn.module)
        if existing is not None and not _is_under(getattr(existing, "__file__", None), fn.code_dir):
            # Another function's module of the same name: this function must get its own file.
            del sys.modules[fn.module]
        importlib.invalidate_caches()
        module: ModuleType = importlib.import_module(fn.module)
        if not _is_under(getattr(module, "__file__", None), fn.code_dir):
            raise ImportError(f"{fn.module} was imported from {module.__file__}, not from {fn.code_dir}")
        handler: Callable[..., Any] = getattr(module, fn.attribute)
        self._handlers[fn.logical_id] = handler
        return handler

    def _invoke_inprocess(self, fn: LocalFunction, payload: Any, context: FakeLambdaContext) -> tuple[Any, str | None]:
        with self._function_env(fn, context):
            try:
                handler = self._load_handler(fn)  # the cold start runs with the function's environment
                result = handler(payload, context)
            except (Exception, SystemExit) as exc:
                logger.warning("%s failed:\n%s", fn.logical_id, traceback.format_exc())
                return None, f"{type(exc).__name__}: {exc}"
        try:
            return json.loads(json.dumps(result)), None
        except (TypeError, ValueError) as exc:
            return None, f"Runtime.MarshalError: {exc}"

    def _invoke_subprocess(
        self, fn: LocalFunction, payload: Any, context: FakeLambdaContext, plan: _CrashPlan | None
    ) -> tuple[Any, str | None]:
        env = {**os.environ, **fn.environment, **fn.reserved_environment(context, self.region)}
        with tempfile.TemporaryDirectory(prefix="ahi-local-invoke-") as scratch:
            result_path = Path(scratch) / "result.json"
            spec = {
                "sys_path": [str(d) for d in (fn.code_dir, *fn.layer_dirs)] + [p or os.getcwd() for p in sys.path],
                "module": fn.module,
                "attribute": fn.attribute,
                "event": payload,
                "context": {k: v for k, v in vars(context).items() if k not in ("identity", "client_context")},
                "result_path": str(result_path),
            }
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_BOOTSTRAP], stdin=subprocess.PIPE, env=env, cwd=fn.code_dir
            )
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec).encode())
            process.stdin.close()
            started = time.monotonic()
            reason: str | None = None
            while process.poll() is None:
                elapsed = time.monotonic() - started
                if plan is not None and (
                    (plan.after_s is not None and elapsed >= plan.after_s) or (plan.when is not None and plan.when())
                ):
                    reason = f"Runtime.ExitError: killed (SIGKILL) after {elapsed:.2f} s, as arranged by arm_crash"
                elif elapsed > fn.timeout_s:
                    reason = f"Sandbox.Timedout: Task timed out after {fn.timeout_s:.2f} seconds"
                if reason is not None:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return None, reason
                time.sleep(0.02)
            if not result_path.exists():
                return None, f"Runtime.ExitError: the process exited with status {process.returncode} and no result"
            out = json.loads(result_path.read_text(encoding="utf-8"))
        if out.get("ok"):
            return out.get("result"), None
        return None, f"{out.get('errorType')}: {out.get('errorMessage')}"

    def _invoke_async(self, function: str, event: Any, source: str) -> list[Invocation]:
        """Lambda's asynchronous invocation: the event is retried on error, then sent to the failure destination."""
        fn = self.function(function)
        retries = self.async_retries
        config = self.template.resolve(
            fn.properties.get("EventInvokeConfig") or {}, where=f"{function}.EventInvokeConfig"
        )
        if retries is None:
            retries = int(config.get("MaximumRetryAttempts", _ASYNC_RETRIES_DEFAULT))
        attempts: list[Invocation] = []
        for attempt in range(1, retries + 2):
            invocation = self.invoke(function, event, source=source, attempt=attempt)
            attempts.append(invocation)
            if invocation.ok:
                return attempts
        self._send_to_failure_destination(fn, config, event, attempts[-1])
        return attempts

    def _send_to_failure_destination(
        self, fn: LocalFunction, config: Mapping[str, Any], event: Any, last: Invocation
    ) -> None:
        dlq = self.template.resolve(
            fn.properties.get("DeadLetterQueue") or {}, where=f"{fn.logical_id}.DeadLetterQueue"
        )
        on_failure = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        destination = on_failure or dlq.get("TargetArn")
        if not destination:
            return
        target = self._target_for_arn(str(destination), {})
        error_type, _, error_message = (last.error or "").partition(": ")
        # A function DLQ receives the event itself; an OnFailure destination receives Lambda's invocation record.
        body = json.dumps(event)
        if on_failure:
            body = json.dumps(
                {
                    "version": "1.0",
                    "timestamp": _now_iso(milliseconds=True),
                    "requestContext": {
                        "requestId": last.request_id,
                        "functionArn": f"{fn.arn}:$LATEST",
                        "condition": "RetriesExhausted",
                        "approximateInvokeCount": last.attempt,
                    },
                    "requestPayload": event,
                    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                    "responsePayload": {"errorType": error_type, "errorMessage": error_message},
                }
            )
        if target is not None and target.kind == "sqs":
            self.sqs.send_message(QueueUrl=target.ref, MessageBody=body)
        elif target is not None and target.kind == "sns":
            self.sns.publish(TopicArn=target.ref, Message=body)

    # ---------------------------------------------------------------------------------- event sources

    def _on_emulator_event(self, event: dict[str, Any]) -> None:
        # Called on the emulator's job thread: only queue it; handlers run on the thread that pumps.
        self._bus.put(("default", event))

    def put_events(self, *events: Mapping[str, Any]) -> list[str]:
        """Put events on the local EventBridge bus; the next pump delivers them to the matching rules.

        Parameters
        ----------
        *events
            Full events (``{"source", "detail-type", "detail", ...}``, missing envelope fields are filled in)
            or ``PutEvents`` entries (``{"Source", "DetailType", "Detail": "<json>", "EventBusName"?}``).

        Returns
        -------
        list of str
            The event IDs.
        """
        ids = []
        for entry in events:
            bus = "default"
            if "Source" in entry or "DetailType" in entry:
                bus = str(entry.get("EventBusName") or "default").rsplit("/", 1)[-1]
                event: dict[str, Any] = {
                    "source": entry["Source"],
                    "detail-type": entry["DetailType"],
                    "detail": json.loads(entry.get("Detail") or "{}"),
                    "resources": list(entry.get("Resources") or []),
                }
            else:
                event = json.loads(json.dumps(entry))
            event.setdefault("version", "0")
            event.setdefault("id", str(uuid.uuid4()))
            event.setdefault("account", ACCOUNT_ID)
            event.setdefault("time", _now_iso())
            event.setdefault("region", self.region)
            event.setdefault("resources", [])
            self._bus.put((bus, event))
            ids.append(str(event["id"]))
        return ids

    def _deliver_event(self, bus: str, event: dict[str, Any]) -> int:
        delivered = 0
        for rule in self.rules.values():
            if not rule.enabled or rule.pattern is None or rule.bus != bus or not matches(rule.pattern, event):
                continue
            for target in rule.targets:
                self._send_to_target(target, event, "eventbridge")
                delivered += 1
        return delivered

    def _send_to_target(self, target: Target, event: dict[str, Any], source: str) -> list[Invocation]:
        payload = target.input if target.input is not None else event
        if target.input_path:
            payload = _json_path(event, target.input_path)
        if target.kind == "function":
            return self._invoke_async(target.ref, payload, source)
        if target.kind == "sqs":
            self.sqs.send_message(QueueUrl=target.ref, MessageBody=json.dumps(payload))
        else:
            self.sns.publish(TopicArn=target.ref, Message=json.dumps(payload))
        return []

    def run_schedule(self, rule: str | None = None, *, event: Mapping[str, Any] | None = None) -> list[Invocation]:
        """Fire schedule rules now, with the event EventBridge sends (``detail-type: Scheduled Event``).

        Parameters
        ----------
        rule
            Logical ID or name of one rule (fired even when disabled); default every enabled schedule rule.
        event
            Deliver this event instead of a new one (a replayed file); its ``resources`` are set to the rule's
            local ARN, as EventBridge would send it.

        Returns
        -------
        list of Invocation
            The invocations (retries included).

        Raises
        ------
        KeyError
            When ``rule`` is not a schedule rule of the template.
        """
        if rule is not None:
            selected = [r for r in self.rules.values() if r.schedule and rule in (r.logical_id, r.name)]
            if not selected:
                raise KeyError(f"no schedule rule {rule!r}; the template has {self.schedule_rules()}")
        else:
            selected = [r for r in self.rules.values() if r.schedule and r.enabled]
        invocations: list[Invocation] = []
        for chosen in selected:
            scheduled: dict[str, Any] = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": _now_iso(),
                "region": self.region,
                "detail": {},
            }
            if event is not None:
                scheduled = json.loads(json.dumps(event))
            scheduled["resources"] = [chosen.arn]
            for target in chosen.targets:
                invocations.extend(self._send_to_target(target, scheduled, "schedule"))
        return invocations

    def schedule_rules(self) -> list[str]:
        """Logical IDs of the template's schedule rules."""
        return [r.logical_id for r in self.rules.values() if r.schedule]

    def _pump_s3(self) -> bool:
        response = self.sqs.receive_message(QueueUrl=self._s3_queue_url, MaxNumberOfMessages=_SQS_RECEIVE_MAX)
        messages = response.get("Messages", [])
        for message in messages:
            # S3 hands the event to Lambda (or EventBridge) and forgets it: delete first, then deliver.
            self.sqs.delete_message(QueueUrl=self._s3_queue_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if body.get("Event") == "s3:TestEvent":
                continue  # sent by S3 when a notification configuration is saved
            for record in body.get("Records", []):
                self._route_s3_record(record)
        return bool(messages)

    def _route_s3_record(self, record: Mapping[str, Any]) -> None:
        config_id = str(record["s3"].get("configurationId"))
        route = self.s3_routes.get(config_id)
        if route is None:
            logger.warning("S3 notification for unknown configuration %s ignored", config_id)
            return
        if route.function is None:
            self._bus.put(("default", s3_record_to_eventbridge(record)))
            return
        key = unquote_plus(str(record["s3"]["object"]["key"]))
        name = str(record.get("eventName", ""))
        if not (key.startswith(route.prefix) and key.endswith(route.suffix) and s3_event_matches(name, route.events)):
            # moto applied the same filter; a mismatch here means moto changed, and the event must not pass.
            logger.warning("S3 event %s %s is outside the template's filter; not delivered", name, key)
            return
        delivered = enrich_s3_record(record) if self.s3_event_style == "aws" else dict(record)
        self._invoke_async(route.function, {"Records": [delivered]}, "s3")

    def deliver_s3_event(self, event: Mapping[str, Any]) -> list[Invocation]:
        """Deliver an S3 notification event (``{"Records": [...]}``) the way the template routes it.

        Each record goes, as its own event, to the function whose notification configuration on that bucket
        selects the record's event name and (decoded) key, or to the local EventBridge bus for an
        EventBridge-enabled bucket.

        Parameters
        ----------
        event
            An S3 notification event (e.g. ``events/s3-put-manifest.json``).

        Returns
        -------
        list of Invocation
            The invocations (retries included); bus deliveries happen on the next pump.

        Raises
        ------
        LookupError
            For a record that no notification configuration of the stack selects.
        """
        invocations: list[Invocation] = []
        for record in event.get("Records", []):
            bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))
            name = str(record.get("eventName", ""))
            selected = [
                config_id
                for config_id, route in self.s3_routes.items()
                if route.bucket == bucket
                and key.startswith(route.prefix)
                and key.endswith(route.suffix)
                and s3_event_matches(name, route.events)
            ]
            if not selected:
                raise LookupError(f"no notification configuration of the stack selects {name} s3://{bucket}/{key}")
            for config_id in selected:
                routed = {**record, "s3": {**record["s3"], "configurationId": config_id}}
                route = self.s3_routes[config_id]
                if route.function is None:
                    self._bus.put(("default", s3_record_to_eventbridge(routed)))
                else:
                    invocations.extend(self._invoke_async(route.function, {"Records": [routed]}, "s3"))
        return invocations

    def _pump_bus(self) -> bool:
        progressed = False
        while True:
            try:
                bus, event = self._bus.get_nowait()
            except queue.Empty:
                return progressed
            progressed = True
            self._deliver_event(bus, event)

    def _pump_mapping(self, mapping: SqsMapping) -> bool:
        messages: list[dict[str, Any]] = []
        while len(messages) < mapping.batch_size:
            response = self.sqs.receive_message(
                QueueUrl=mapping.queue.url,
                MaxNumberOfMessages=min(_SQS_RECEIVE_MAX, mapping.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        if not messages:
            return False
        records = [self._sqs_record(mapping, m) for m in messages]
        if mapping.filters:
            kept = []
            for record in records:
                if any(matches(f, _filterable(record)) for f in mapping.filters):
                    kept.append(record)
                else:
                    # Lambda deletes SQS messages that no filter matches.
                    self.sqs.delete_message(QueueUrl=mapping.queue.url, ReceiptHandle=record["receiptHandle"])
            records = kept
            if not records:
                return True
        invocation = self.invoke(mapping.function, {"Records": records}, source="sqs")
        failed = _failed_message_ids(records, invocation, report_failures=mapping.report_failures)
        invocation.failed_item_ids = sorted(failed)
        for record in records:
            if record["messageId"] in failed:
                # Left in the queue for redelivery; visible again sooner than the queue's timeout (see module doc).
                with contextlib.suppress(self.sqs.exceptions.ClientError):
                    self.sqs.change_message_visibility(
                        QueueUrl=mapping.queue.url,
                        ReceiptHandle=record["receiptHandle"],
                        VisibilityTimeout=self.retry_visibility_timeout,
                    )
            else:
                self.sqs.delete_message(QueueUrl=mapping.queue.url, ReceiptHandle=record["receiptHandle"])
        return True

    def _sqs_record(self, mapping: SqsMapping, message: Mapping[str, Any]) -> dict[str, Any]:
        attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items() if k in _SQS_SYSTEM_ATTRIBUTES}
        message_attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            entry: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
            if "StringValue" in value:
                entry["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                entry["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
            message_attributes[name] = entry
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": mapping.queue.arn,
            "awsRegion": self.region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    def pump_once(self, *, include_mappings: bool = True) -> bool:
        """Deliver whatever every event source has ready, once: S3 notifications, the EventBridge bus, then one
        batch per SQS event source mapping.

        Parameters
        ----------
        include_mappings
            False leaves the SQS event source mappings alone (triggers only).

        Returns
        -------
        bool
            Whether anything was delivered.
        """
        progressed = self._pump_s3()
        progressed = self._pump_bus() or progressed
        for mapping in self.sqs_mappings:
            if mapping.enabled and include_mappings:
                progressed = self._pump_mapping(mapping) or progressed
        return progressed

    def _busy(self, include_mappings: bool = True) -> list[str]:
        """What is still pending (empty when idle). The emulator is asked first: a job writes its manifest
        (and so its S3 notification) and sends its event before it counts as done."""
        pending = []
        for datastore_id in self.emulator.datastore_ids():
            for job in self.emulator.import_jobs(datastore_id):
                job_id = str(job["jobId"])
                if job_id in self._done_jobs:
                    continue
                try:
                    self.emulator.wait_for_job(datastore_id, job_id, timeout=0, wait_for_outputs=True)
                except TimeoutError:
                    pending.append(f"import job {job_id} ({job['jobStatus']})")
                    continue
                self._done_jobs.add(job_id)
        if not self._bus.empty():
            pending.append("EventBridge events")
        if self._depth(self._s3_queue_url):
            pending.append("S3 notifications")
        for mapping in self.sqs_mappings if include_mappings else []:
            if mapping.enabled and (depth := self._depth(mapping.queue.url)):
                pending.append(f"{depth} message(s) in {mapping.queue.logical_id}")
        return pending

    def run_until_idle(
        self, timeout: float = 60.0, poll_interval: float = 0.05, *, include_mappings: bool = True
    ) -> RunSummary:
        """Pump every event source until nothing is queued, in flight or still being imported.

        Parameters
        ----------
        timeout
            Seconds before giving up.
        poll_interval
            Pause between polls when nothing was ready (messages waiting out their visibility timeout).
        include_mappings
            False runs the triggers only: messages they queue for the SQS event source mappings stay queued.

        Returns
        -------
        RunSummary
            The invocations of this run.

        Raises
        ------
        TimeoutError
            Naming what was still pending.
        """
        started = time.monotonic()
        first = len(self.invocations)
        while True:
            if not self.pump_once(include_mappings=include_mappings):
                pending = self._busy(include_mappings)
                if not pending:
                    break
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"not idle after {timeout} s: {', '.join(pending)}")
                time.sleep(poll_interval)
            elif time.monotonic() - started > timeout:
                busy = self._busy(include_mappings)
                raise TimeoutError(f"not idle after {timeout} s: {', '.join(busy) or 'still delivering'}")
        return self.summary(since=first, elapsed_s=time.monotonic() - started)

    def summary(self, since: int = 0, elapsed_s: float = 0.0) -> RunSummary:
        """Summarise the invocations from index ``since`` of :attr:`invocations` on.

        Parameters
        ----------
        since
            First invocation to count.
        elapsed_s
            Recorded as the run's duration.
        """
        records = self.invocations[since:]
        return RunSummary(
            invocations=dict(Counter(r.function for r in records)),
            failures=dict(Counter(r.function for r in records if not r.ok)),
            failed_items=dict(Counter(r.function for r in records for _ in r.failed_item_ids)),
            dlq_depth=self.dlq_depths(),
            elapsed_s=elapsed_s,
            records=records,
        )

    def dlq_depths(self) -> dict[str, int]:
        """Messages in each dead-letter queue (a queue some RedrivePolicy names), by logical ID."""
        dlqs = {q.dlq for q in self.queues.values() if q.dlq}
        return {name: self.queue_depth(name) for name in sorted(dlqs)}

    def discard_pending(self) -> int:
        """Drop pending S3 notifications and bus events without delivering them (e.g. those of seeding).

        Returns
        -------
        int
            How many were dropped.
        """
        dropped = 0
        while True:
            messages = self.sqs.receive_message(QueueUrl=self._s3_queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.sqs.delete_message(QueueUrl=self._s3_queue_url, ReceiptHandle=message["ReceiptHandle"])
                dropped += json.loads(message["Body"]).get("Event") != "s3:TestEvent"
        while True:
            try:
                self._bus.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        return dropped

    # ------------------------------------------------------------------------------------------ alerts

    def alerts(self, topic: str | None = None) -> list[Alert]:
        """SNS notifications published so far (parsed envelopes), oldest first; repeatable.

        Parameters
        ----------
        topic
            Logical ID of one topic; default all.
        """
        for logical_id, url in self._alert_queues.items():
            while True:
                messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    envelope = json.loads(message["Body"])
                    self._alerts.append(
                        Alert(
                            topic=logical_id,
                            subject=envelope.get("Subject"),
                            message=str(envelope.get("Message", "")),
                            attributes={
                                k: str(v.get("Value")) for k, v in (envelope.get("MessageAttributes") or {}).items()
                            },
                            envelope=envelope,
                        )
                    )
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [a for a in self._alerts if topic is None or a.topic == topic]


# -------------------------------------------------------------------------------------------- helpers


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        raise TemplateError(f"environment values must be scalars, got {value!r}")
    return "" if value is None else str(value)


def _parse_input(value: Any) -> Any:
    if value is None or value is NO_VALUE:
        return None
    return json.loads(value) if isinstance(value, str) else value


def _api_notification(cfg: Mapping[str, Any], kind: str, arn_key: str) -> dict[str, Any]:
    """A CloudFormation S3 notification entry in the S3 API's form."""
    prefix, suffix = s3_key_filter(cfg.get("Filter"))
    entry: dict[str, Any] = {arn_key: cfg[kind], "Events": [cfg["Event"]]}
    rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
    if rules:
        entry["Filter"] = {"Key": {"FilterRules": rules}}
    return entry


def _filterable(record: Mapping[str, Any]) -> dict[str, Any]:
    """An SQS record as FilterCriteria see it: a JSON body is matched as an object."""
    out = dict(record)
    with contextlib.suppress(ValueError):
        body = json.loads(record["body"])
        if isinstance(body, dict):
            out["body"] = body
    return out


def _failed_message_ids(  # noqa: PLR0911 - one return per rule of the partial batch response contract
    records: Sequence[Mapping[str, Any]], invocation: Invocation, *, report_failures: bool
) -> set[str]:
    """Which messages of a batch Lambda leaves in the queue, by the rules for partial batch responses.

    An error fails the whole batch. Without ``ReportBatchItemFailures`` the return value is ignored. With it:
    no response, no ``batchItemFailures`` or an empty list is a complete success; a response that is not an
    object, or an item without a valid ``itemIdentifier`` of this batch, fails the whole batch.
    """
    ids = {str(r["messageId"]) for r in records}
    if invocation.error is not None:
        return ids
    if not report_failures or invocation.result is None:
        return set()
    response = invocation.result
    if not isinstance(response, dict):
        return ids
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return ids
    failed = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return ids
        failed.add(identifier)
    return failed
