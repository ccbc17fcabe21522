"""Runs a template's function the way Lambda runs it: its resolved environment and reserved variables, its
code and layers on ``sys.path``, its handler imported under its real module name, a Lambda-shaped context,
the ``Timeout``; in-process, or in a fresh Python process that can be killed mid-flight (:meth:`arm_crash`).

``sam local invoke`` and moto's Lambda need Docker; this module is the Docker-free stand-in for the
invocation itself. Event sources (:mod:`local.triggers`, :mod:`local.sqs_source`) call :meth:`FunctionRunner.invoke`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from .template import Resource, Template, TemplateError

__all__ = [
    "FakeLambdaContext",
    "FunctionRunner",
    "Invocation",
    "Isolation",
    "LocalFunction",
    "apply_env",
    "load_function",
]

logger = logging.getLogger(__name__)

Isolation = Literal["inprocess", "subprocess"]
LAYER_TYPE = "AWS::Serverless::LayerVersion"


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


def is_under(path: str | None, directory: Path) -> bool:
    """Whether ``path`` (a module's ``__file__``, maybe None) lies below ``directory``."""
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def env_string(value: Any) -> str:
    """A resolved template scalar as the string Lambda (and CloudFormation) puts in the environment.

    Raises
    ------
    TemplateError
        For a list or a mapping.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        raise TemplateError(f"environment values must be scalars, got {value!r}")
    return "" if value is None else str(value)


def apply_env(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set (or, for None, unset) environment variables.

    Parameters
    ----------
    values
        Variable names and their new values.

    Returns
    -------
    dict
        The previous values, for :func:`apply_env` to put back (None: the variable was not set).
    """
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return saved


def load_function(template: Template, resource: Resource, note: Callable[[str], None]) -> LocalFunction:
    """Resolve a function of the template for the local run.

    Parameters
    ----------
    template
        The resolved template.
    resource
        An ``AWS::Serverless::Function`` of it.
    note
        Told what the local run provides differently (layers satisfied by the virtualenv).

    Returns
    -------
    LocalFunction

    Raises
    ------
    TemplateError
        When ``CodeUri`` is not a local directory or ``Handler`` is not ``module.function``.
    """
    t, props, where = template, resource.properties, resource.logical_id
    code_uri = t.resolve(props.get("CodeUri"), where=f"{where}.CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{where}: CodeUri must be a local directory for the local run, got {code_uri!r}")
    handler = str(t.resolve(props.get("Handler"), where=f"{where}.Handler"))
    module, _, attribute = handler.rpartition(".")
    if not module:
        raise TemplateError(f"{where}: Handler {handler!r} is not module.function")
    variables = t.resolve((props.get("Environment") or {}).get("Variables") or {}, where=f"{where}.Environment")
    environment = {str(k): env_string(v) for k, v in dict(variables).items()}
    layer_dirs: list[Path] = []
    for i, layer in enumerate(props.get("Layers") or []):
        ref = layer.get("Ref") if isinstance(layer, dict) else None
        target = t.resources.get(str(ref)) if ref else None
        if target is None or target.type != LAYER_TYPE:
            note(f"{where}.Layers[{i}] is not a layer of this template: provided by the virtualenv")
            continue
        content = t.resolve(target.properties.get("ContentUri"), where=f"{target.logical_id}.ContentUri")
        directory = (t.base_dir / str(content)).resolve()
        if (directory / "python").is_dir():
            layer_dirs.append(directory / "python")
        elif any((child / "__init__.py").is_file() for child in directory.iterdir() if child.is_dir()):
            layer_dirs.append(directory)
        else:
            note(f"{target.logical_id}: no Python sources in {content}: provided by the virtualenv")
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


class FunctionRunner:
    """Invokes the functions of one local stack, records every invocation, and kills armed ones.

    Parameters
    ----------
    functions
        The template's functions by logical ID.
    region
        Reported in the reserved variables.
    isolation
        Per logical ID, ``"subprocess"`` for a fresh Python process per invocation (default in-process).
    invocations
        The list every invocation is appended to (the stack's record).
    """

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        *,
        region: str,
        isolation: Mapping[str, Isolation],
        invocations: list[Invocation],
    ) -> None:
        self.functions = functions
        self.region = region
        self.isolation = isolation
        self.invocations = invocations
        self._handlers: dict[str, Callable[..., Any]] = {}
        # The process environment is shared: one invocation at a time may swap in its function's variables.
        self._invoke_lock = threading.RLock()
        self._crash_plans: dict[str, list[_CrashPlan]] = {}

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
            saved = apply_env(values)
            try:
                yield
            finally:
                apply_env(saved)

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
        if existing is not None and not is_under(getattr(existing, "__file__", None), fn.code_dir):
            # Another function's module of the same name: this function must get its own file.
            del sys.modules[fn.module]
        importlib.invalidate_caches()
        module: ModuleType = importlib.import_module(fn.module)
        if not is_under(getattr(module, "__file__", None), fn.code_dir):
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

    def forget_modules(self, modules_before: set[str]) -> None:
        """Drop the handlers and every module imported from the functions' code, and the layers' modules that
        were not imported before the stack started, so that the next stack cold-starts them.

        Parameters
        ----------
        modules_before
            ``sys.modules`` keys when the stack started.
        """
        code_dirs = [f.code_dir for f in self.functions.values()]
        layer_dirs = [d for f in self.functions.values() for d in f.layer_dirs]
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            fresh = name not in modules_before
            if any(is_under(path, d) for d in code_dirs) or (fresh and any(is_under(path, d) for d in layer_dirs)):
                del sys.modules[name]
        self._handlers.clear()
