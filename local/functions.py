"""Runs a template's function the way Lambda runs it: its resolved environment and reserved variables, its
code and layers on ``sys.path``, its handler imported under its real module name, a Lambda-shaped context,
the ``Timeout``; in-process (one execution environment), in warm execution environments of its own
(:class:`Container`: a Python process each, reused one invocation at a time, as many as concurrent invocations
need), or in a fresh Python process per invocation; a process can be killed mid-flight (:meth:`arm_crash`).

``sam local invoke`` and moto's Lambda need Docker; this module is the Docker-free stand-in for the
invocation itself. Event sources (:mod:`local.triggers`, :mod:`local.sqs_source`) call :meth:`FunctionRunner.invoke`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
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
    "Container",
    "FakeLambdaContext",
    "FunctionRunner",
    "Invocation",
    "Isolation",
    "LocalFunction",
    "apply_env",
    "load_function",
]

logger = logging.getLogger(__name__)

Isolation = Literal["inprocess", "subprocess", "container"]
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


_CONTAINER_BOOTSTRAP = r"""
import importlib, json, os, sys, time, traceback
spec = json.loads(sys.stdin.readline())
sys.path[:0] = spec["sys_path"]
results = os.fdopen(spec["result_fd"], "w", encoding="utf-8")

class FakeLambdaContext:
    def __init__(self, fields):
        self.__dict__.update(fields)
        self.identity = None
        self.client_context = None
    def get_remaining_time_in_millis(self):
        return max(0, self.deadline_epoch_ms - int(time.time() * 1000))

def answer(out):
    results.write(json.dumps(out) + "\n")
    results.flush()

def failure(exc, error_type=None):
    traceback.print_exc()
    return {"ok": False, "errorType": error_type or type(exc).__name__, "errorMessage": str(exc)}

init_error = None
try:
    module = importlib.import_module(spec["module"])
    handler = getattr(module, spec["attribute"])
    for target, args in spec["hooks"]:
        hook_module, _, hook_name = target.partition(":")
        getattr(importlib.import_module(hook_module), hook_name)(module, *args)
except Exception as exc:
    init_error = failure(exc)
sys.stdout.flush()

for line in sys.stdin:
    request = json.loads(line)
    if init_error is not None:
        answer(init_error)  # the init failed: this environment is discarded, the next invocation starts afresh
        sys.exit(1)
    try:
        result = handler(request["event"], FakeLambdaContext(request["context"]))
    except Exception as exc:
        out = failure(exc)
    else:
        try:
            out = {"ok": True, "result": json.loads(json.dumps(result))}
        except (TypeError, ValueError) as exc:
            out = failure(exc, "Runtime.MarshalError")
    sys.stdout.flush()
    sys.stderr.flush()
    answer(out)
"""

_POLL_S = 0.02  # how often a running invocation's crash plan and timeout are checked


class Container:
    """One execution environment of a function: a Python process that cold-starts the handler once and then
    runs invocations one at a time, as a warm Lambda execution environment does.

    The process gets the function's environment (with the reserved variables of its first invocation: an
    environment keeps its log stream), the function's code and layers on ``sys.path``, and runs the init
    hooks after the import. Requests go in on its stdin, results come back on a pipe of their own (the
    handler's stdout is its log, as on Lambda: forwarded line by line to the logger
    ``local.functions.<LogicalId>`` at INFO). A killed or timed-out container is gone; the next invocation
    gets a new one.

    Parameters
    ----------
    fn
        The function.
    env
        The process environment, the function's variables included.
    sys_path
        Put in front of the child's ``sys.path``.
    hooks
        ``(module:callable, args)`` called with the handler's module after the cold start.
    log_stream
        The log stream every invocation's context reports.
    """

    def __init__(
        self,
        fn: LocalFunction,
        env: Mapping[str, str],
        sys_path: list[str],
        hooks: list[tuple[str, list[Any]]],
        log_stream: str,
    ) -> None:
        self.fn, self.log_stream = fn, log_stream
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CONTAINER_BOOTSTRAP],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=fn.code_dir,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self._results = os.fdopen(read_fd, "r", encoding="utf-8")
        spec = {
            "sys_path": sys_path,
            "module": fn.module,
            "attribute": fn.attribute,
            "hooks": hooks,
            "result_fd": write_fd,
        }
        self._send(spec)
        self._log = logging.getLogger(f"{__name__}.{fn.logical_id}")
        self._output = threading.Thread(target=self._forward_output, name=f"log-{fn.logical_id}", daemon=True)
        self._output.start()

    @property
    def alive(self) -> bool:
        """Whether the process still runs (a container that was killed or exited cannot be reused)."""
        return self.process.poll() is None

    def _send(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def _forward_output(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._log.info("%s", raw.decode("utf-8", "replace").rstrip("\n"))

    def invoke(self, payload: Any, context: FakeLambdaContext, plan: _CrashPlan | None) -> tuple[Any, str | None]:
        """Run one invocation; kill the process when the crash plan says so or the ``Timeout`` has passed.

        Returns
        -------
        tuple
            The JSON result and None, or None and ``"<ErrorType>: <message>"``.
        """
        fields = {k: v for k, v in vars(context).items() if k not in ("identity", "client_context")}
        try:
            self._send({"event": payload, "context": fields})
        except (BrokenPipeError, OSError):
            return None, self._exit_error()
        started = time.monotonic()
        while True:
            try:
                ready, _, _ = select.select([self._results], [], [], _POLL_S)
                line = self._results.readline() if ready else ""
            except (OSError, ValueError):  # killed and closed by FunctionRunner.close (the stack is stopping)
                return None, self._exit_error()
            if ready:
                if not line:  # the process exited without answering
                    return None, self._exit_error()
                out = json.loads(line)
                if out.get("ok"):
                    return out.get("result"), None
                return None, f"{out.get('errorType')}: {out.get('errorMessage')}"
            elapsed = time.monotonic() - started
            reason: str | None = None
            if plan is not None and (
                (plan.after_s is not None and elapsed >= plan.after_s) or (plan.when is not None and plan.when())
            ):
                reason = f"Runtime.ExitError: killed (SIGKILL) after {elapsed:.2f} s, as arranged by arm_crash"
            elif elapsed > self.fn.timeout_s:
                reason = f"Sandbox.Timedout: Task timed out after {self.fn.timeout_s:.2f} seconds"
            if reason is not None:
                self.kill()
                return None, reason

    def _exit_error(self) -> str:
        status = self.process.wait()
        return f"Runtime.ExitError: the process exited with status {status} and no result"

    def kill(self) -> None:
        """SIGKILL the process (a crashed execution environment) and wait for it."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._close_pipes()

    def close(self) -> None:
        """Let the process end (its stdin closes), killing it if it does not within a few seconds."""
        if self.alive:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdin, self._results):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._output.join(timeout=5)
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()


def _run_hook(module: ModuleType, target: str, args: list[Any]) -> None:
    hook_module, _, name = target.partition(":")
    getattr(importlib.import_module(hook_module), name)(module, *args)


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
        Per logical ID: ``"inprocess"`` (the default) runs the handler in this process, one invocation at a
        time (one execution environment); ``"container"`` in warm execution environments of their own, a
        Python process each, reused one invocation at a time and started as concurrent invocations need
        them; ``"subprocess"`` in a fresh process per invocation (a cold start each time).
    invocations
        The list every invocation is appended to (the stack's record).

    Notes
    -----
    Invocations may come from several threads at once (the SQS event source runs batches concurrently).
    In-process invocations still run one at a time: the handler module's state (its ``SERVICES``, Powertools'
    logger keys, metrics and batch processor) belongs to one execution environment, and Lambda never runs two
    invocations in one environment at once; os.environ is the process's. Concurrent invocations of a function
    therefore need ``"container"`` (or ``"subprocess"``) isolation, which is what :class:`local.stack.LocalStack`
    picks for a mapping that runs batches concurrently.
    """

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        *,
        region: str,
        isolation: Mapping[str, Isolation],
        invocations: list[Invocation],
    ) -> None:
        self.functions = dict(functions)
        self.region = region
        self.isolation = isolation
        self.invocations = invocations
        self._handlers: dict[str, Callable[..., Any]] = {}
        # The process environment is shared: one invocation at a time may swap in its function's variables.
        self._invoke_lock = threading.RLock()
        # Guards os.environ while it is swapped, and the variables it replaced (to start children without them).
        self._env_lock = threading.Lock()
        self._env_saved: dict[str, str | None] | None = None
        self._state_lock = threading.Lock()  # crash plans, hooks and containers, taken by concurrent invocations
        self._crash_plans: dict[str, list[_CrashPlan]] = {}
        self._hooks: dict[str, list[tuple[str, list[Any]]]] = {}
        self._idle: dict[str, list[Container]] = {}
        self._containers: set[Container] = set()
        self._closed = False

    def shorten_timeout(self, logical_id: str, seconds: int) -> None:
        """Give a function a shorter ``Timeout`` than the template's, for invocations from now on (the context's
        remaining time and the kill follow it): scenarios about deadlines then run in seconds, not minutes."""
        fn = self.function(logical_id)
        if not 0 < seconds <= fn.timeout_s:
            raise ValueError(f"a shorter timeout than {fn.timeout_s} s is expected, got {seconds}")
        self.functions[logical_id] = dataclasses.replace(fn, timeout_s=seconds)

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

        Those invocations run in a Python process of their own (a fresh one, or for ``"container"`` isolation
        the warm execution environment that takes the invocation), which gets SIGKILL once ``after_s`` seconds
        of the invocation have passed or ``when()`` returns true, whichever comes first. The invocation then
        fails as a whole: for an SQS batch every message stays in the queue and is redelivered. An invocation
        that finishes first is not killed. With concurrent invocations, the plan goes to whichever starts next.

        Parameters
        ----------
        function
            Logical ID.
        after_s
            Kill this long after the invocation starts.
        when
            Polled (every 20 ms) while the invocation runs, in this process (on the invoking thread); e.g.
            "a progress item exists".
        times
            How many invocations to kill.
        """
        if after_s is None and when is None:
            raise ValueError("arm_crash needs after_s or when")
        self.function(function)
        with self._state_lock:
            self._crash_plans.setdefault(function, []).append(_CrashPlan(after_s, when, times))

    def add_init_hook(self, function: str, target: str, *args: Any) -> None:
        """Run ``target(handler_module, *args)`` after the function's cold start, in every execution environment.

        The test-side way to change a running handler (wrap one of its services) that works whatever the
        isolation: in-process the hook runs now (cold-starting the handler if needed) and after any later cold
        start; containers run it after their import, and the idle ones are retired so that no invocation runs
        without it.

        Parameters
        ----------
        function
            Logical ID.
        target
            ``"package.module:callable"``, importable in the child processes too (on this process's ``sys.path``).
        args
            JSON-serialisable arguments.
        """
        fn = self.function(function)
        json.dumps(args)  # refused here rather than in a child
        with self._state_lock:
            self._hooks.setdefault(function, []).append((target, list(args)))
            retired = self._idle.pop(function, [])
            for container in retired:
                self._containers.discard(container)
        for container in retired:
            container.close()
        if self.isolation.get(function, "inprocess") == "inprocess":
            with self._function_env(fn, self._context(fn, str(uuid.uuid4()))):
                if fn.logical_id in self._handlers:
                    _run_hook(sys.modules[fn.module], target, list(args))
                else:
                    self._load_handler(fn)  # the cold start, which runs every hook

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
        if mode == "container":
            result, error = self._invoke_in_container(fn, payload, context, plan)
        elif plan is not None or mode == "subprocess":
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
        with self._state_lock:
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
            with self._env_lock:
                saved = apply_env(values)
                self._env_saved = saved
            try:
                yield
            finally:
                with self._env_lock:
                    apply_env(saved)
                    self._env_saved = None

    def _base_env(self) -> dict[str, str]:
        """The process environment without the variables an in-process invocation has swapped in right now
        (a child started meanwhile from another thread must not inherit another function's variables)."""
        with self._env_lock:
            env = dict(os.environ)
            for key, value in (self._env_saved or {}).items():
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = value
        return env

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
        with self._state_lock:
            hooks = list(self._hooks.get(fn.logical_id, []))
        for target, args in hooks:
            _run_hook(module, target, args)
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

    def _new_container(self, fn: LocalFunction, context: FakeLambdaContext) -> Container:
        env = {**self._base_env(), **fn.environment, **fn.reserved_environment(context, self.region)}
        sys_path = [str(d) for d in (fn.code_dir, *fn.layer_dirs)] + [p or os.getcwd() for p in sys.path]
        with self._state_lock:
            hooks = list(self._hooks.get(fn.logical_id, []))
        return Container(fn, env, sys_path, hooks, context.log_stream_name)

    def _invoke_subprocess(
        self, fn: LocalFunction, payload: Any, context: FakeLambdaContext, plan: _CrashPlan | None
    ) -> tuple[Any, str | None]:
        container = self._new_container(fn, context)
        with self._state_lock:
            self._containers.add(container)
        try:
            return container.invoke(payload, context, plan)
        finally:
            with self._state_lock:
                self._containers.discard(container)
            container.close()

    def _invoke_in_container(
        self, fn: LocalFunction, payload: Any, context: FakeLambdaContext, plan: _CrashPlan | None
    ) -> tuple[Any, str | None]:
        with self._state_lock:
            if self._closed:
                return None, "Runtime.ExitError: the local stack is stopping"
            idle = self._idle.setdefault(fn.logical_id, [])
            container = idle.pop() if idle else None
        if container is None:
            container = self._new_container(fn, context)
            with self._state_lock:
                self._containers.add(container)
        context.log_stream_name = container.log_stream  # an execution environment keeps its log stream
        result, error = container.invoke(payload, context, plan)
        with self._state_lock:
            if container.alive and not self._closed:
                self._idle.setdefault(fn.logical_id, []).append(container)
                container = None
            else:
                self._containers.discard(container)
        if container is not None:
            container.close()
        return result, error

    def close(self) -> None:
        """Kill every execution environment (idle or running an invocation, which then fails) and refuse new
        container invocations: the stack is stopping."""
        with self._state_lock:
            self._closed = True
            containers = list(self._containers)
            self._containers.clear()
            self._idle.clear()
        for container in containers:
            container.kill()

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
