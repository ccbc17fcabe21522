"""A Docker-free local run of the SAM application: moto for S3/SQS/SNS/DynamoDB/EventBridge, the HealthImaging
emulator, and the real Lambda handlers, wired together exactly as the template wires them.

``sam local invoke`` needs Docker and moto's Lambda needs Docker too, so the local run plays the part of the
Lambda service and of its event sources; everything else is moto's. Everything it creates comes from the
template (read by :mod:`local.template`), so resources and environment cannot drift from what is deployed.
:class:`LocalStack` is the facade; the work is split by role:

- :mod:`local.resources` creates the resources in moto (EventBridge rules included) and resolves the wiring;
- :mod:`local.functions` runs a function as Lambda would (environment, ``sys.path``, real module names,
  context, timeout, killed processes);
- :mod:`local.triggers` delivers S3 notifications, EventBridge matches and schedules through Lambda's
  asynchronous invocation (:mod:`local.async_invoke`: retries, the failure destination);
- :mod:`local.sqs_source` is the SQS event source mapping (batches, partial batch failures, redelivery,
  moto's redrive to the dead-letter queue).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from ahi_emulator import Emulator, EmulatorServer

from .async_invoke import AsyncInvoker
from .atomic_moto import atomic_moto
from .functions import FakeLambdaContext, FunctionRunner, Invocation, Isolation, LocalFunction, apply_env
from .resources import LocalQueue, Resources, Rule, S3Route, SqsMapping, provision
from .sqs_source import BatchExecutor, ConcurrentExecutor, SerialExecutor, SqsPoller
from .template import ACCOUNT_ID, Template, TemplateError, load_template
from .triggers import Triggers

__all__ = [
    "DEFAULT_TEMPLATE",
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
    "TemplateError",
]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO / "template.yaml"
DEFAULT_SQS_CONCURRENCY = 5
"""Batches in flight for an SQS event source without ``ScalingConfig.MaximumConcurrency`` (Lambda starts such a
mapping with five concurrent pollers and scales on from there; the local run stays at five)."""


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
        The HealthImaging emulator to serve (default: a new, empty one). Its ``on_event`` puts the import-job
        events on moto's EventBridge while the stack runs.
    retry_visibility_timeout
        Seconds after which a message that failed in the worker becomes visible again (the queue's own
        ``VisibilityTimeout`` applies while a batch is being processed).
    async_retries
        Retries of a failed asynchronous invocation (S3, EventBridge, schedule). Default: the function's
        ``EventInvokeConfig.MaximumRetryAttempts``, else 2, as Lambda does.
    existing_buckets
        Buckets that exist outside the stack (ExistingBucket mode): created in moto, with EventBridge delivery
        enabled as the deployment instructions require. Default: the values of parameters named
        ``Existing...BucketName`` that are not empty.
    isolation
        Per function logical ID: ``"subprocess"`` to run every invocation in a fresh Python process (a cold
        start each time; the ``Timeout`` is enforced), ``"container"`` for warm execution environments (a
        process each, reused), ``"inprocess"``. Default in-process, except for the functions whose SQS event
        source runs batches concurrently: containers (see ``concurrency``).
    region
        The local region.
    reset_moto
        Reset moto's in-process state when starting (moto's backends are global to the Python process).
    concurrency
        Batches each SQS event source mapping runs at once, like its ``ScalingConfig.MaximumConcurrency``: one
        number for every mapping, or a number per function logical ID. Default: the template's
        ``MaximumConcurrency`` (:data:`DEFAULT_SQS_CONCURRENCY` for a mapping without one). 1 is the serial
        mode: one batch at a time, on the pumping thread. Above 1, each batch runs on a thread of its own and
        its invocation in an execution environment of its own (``"container"`` isolation unless ``isolation``
        names the function; ``"inprocess"`` cannot run concurrently and is refused), because the handler's
        module state is one environment's (see :class:`local.functions.FunctionRunner`).
    executor
        Runs every SQS event source's batches, instead of what ``concurrency`` sets up (the caller then
        chooses the functions' isolation too).

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
        async_retries: int | None = None,
        existing_buckets: Sequence[str] | None = None,
        isolation: Mapping[str, Isolation] | None = None,
        region: str = "us-east-1",
        reset_moto: bool = True,
        concurrency: int | Mapping[str, int] | None = None,
        executor: BatchExecutor | None = None,
    ) -> None:
        self.template_path = Path(template) if template is not None else DEFAULT_TEMPLATE
        self.parameter_overrides = dict(parameters or {})
        self.stack_name = stack_name
        self.emulator = emulator if emulator is not None else Emulator(region=region)
        self.retry_visibility_timeout = retry_visibility_timeout
        self.async_retries = async_retries
        self._existing_buckets_arg = list(existing_buckets) if existing_buckets is not None else None
        self.isolation = dict(isolation or {})
        self.region = region
        self.reset_moto = reset_moto
        self._executor = executor
        self.concurrency_option = concurrency
        self.concurrency: dict[str, int] = {}
        """Batches in flight at most, per SQS-mapped function (once started)."""
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
        self._alerts: list[Alert] = []
        self._done_jobs: set[str] = set()
        self._running = False
        self._runner: FunctionRunner | None = None
        self._poller: SqsPoller | None = None
        self._atomic = contextlib.ExitStack()

        self.template: Template
        self.endpoint_url = ""
        self.resources = Resources()
        self.functions: dict[str, LocalFunction] = self.resources.functions
        self.queues: dict[str, LocalQueue] = self.resources.queues
        self.tables: dict[str, str] = self.resources.tables
        self.topics: dict[str, str] = self.resources.topics
        self.buckets: dict[str, str] = self.resources.buckets
        self.existing_buckets: list[str] = self.resources.existing_buckets
        self.rules: dict[str, Rule] = self.resources.rules
        self.sqs_mappings: list[SqsMapping] = self.resources.sqs_mappings
        self.s3_routes: dict[str, S3Route] = self.resources.s3_routes
        """S3 notification routes by configuration ID (a function, or the bus for EventBridge-enabled buckets)."""

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
        # Before anything sends a request: concurrent workers need DynamoDB's and SQS's atomicity (moto has none).
        self._atomic = contextlib.ExitStack()
        self._atomic.enter_context(atomic_moto())
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
            self.events: Any = self._client("events")
            self._wire()
            self._saved_on_event = self.emulator.on_event
            self.emulator.on_event = self._on_emulator_event
        except BaseException:
            self.stop()
            raise
        return self

    def _wire(self) -> None:
        clients = {"s3": self.s3, "sqs": self.sqs, "sns": self.sns, "dynamodb": self.dynamodb, "events": self.events}
        self.resources = provision(
            self.template,
            clients,
            stack_name=self.stack_name,
            region=self.region,
            existing_buckets=self._existing_buckets_arg,
            note=self._note,
        )
        res = self.resources
        self.functions, self.queues, self.tables, self.topics = res.functions, res.queues, res.tables, res.topics
        self.buckets, self.existing_buckets, self.rules = res.buckets, res.existing_buckets, res.rules
        self.sqs_mappings, self.s3_routes = res.sqs_mappings, res.s3_routes
        isolation = dict(self.isolation)
        if self._executor is None:
            for mapping in self.sqs_mappings:
                # A function with two mappings (WorkQueue, AuditQueue) shares one executor here: the larger
                # concurrency, so the work queue keeps its own (the audit mapping's lower cap is AWS's to enforce).
                n = max(self.concurrency.get(mapping.function, 0), self._concurrency_of(mapping))
                self.concurrency[mapping.function] = n
                if n > 1 and isolation.setdefault(mapping.function, "container") == "inprocess":
                    raise ValueError(
                        f"{mapping.function}: in-process invocations run one at a time; "
                        f"ask for concurrency 1 or for container isolation (concurrency {n})"
                    )
        self._runner = FunctionRunner(
            self.functions, region=self.region, isolation=isolation, invocations=self.invocations
        )
        invoker = AsyncInvoker(
            self._runner, self.template, self.sns, self.topics, self.async_retries, sqs=self.sqs, queues=self.queues
        )
        self._triggers = Triggers(res, self.sqs, self.events, invoker, region=self.region)
        self._poller = SqsPoller(
            self.sqs,
            self._runner,
            region=self.region,
            retry_visibility_timeout=self.retry_visibility_timeout,
            executor=self._executor,
            executor_for=self._executor_for,
        )

    def _concurrency_of(self, mapping: SqsMapping) -> int:
        option = self.concurrency_option
        if isinstance(option, int):
            return option
        if option is not None and mapping.function in option:
            return int(option[mapping.function])
        return mapping.maximum_concurrency or DEFAULT_SQS_CONCURRENCY

    def _executor_for(self, mapping: SqsMapping) -> BatchExecutor:
        n = self.concurrency.get(mapping.function, 1)
        return ConcurrentExecutor(n, name=mapping.function) if n > 1 else SerialExecutor()

    def stop(self) -> None:
        """Stop the servers, restore the environment, ``sys.path`` and ``sys.modules`` (handlers imported by
        this stack are forgotten, so the next stack cold-starts them against its own endpoints)."""
        if not self._running:
            return
        self._running = False
        if self.emulator.on_event == self._on_emulator_event:
            self.emulator.on_event = self._saved_on_event
        if self._runner is not None:
            # Running invocations fail at once (their environments are killed), so their batches end quickly.
            self._runner.close()
        if self._poller is not None:
            with contextlib.suppress(Exception):  # a batch cut short by the stop may fail on its way out
                self._poller.close()
        if self._runner is not None:
            self._runner.forget_modules(self._modules_before)
        if self._saved_sys_path:
            sys.path[:] = self._saved_sys_path
        apply_env(self._saved_env)
        self._saved_env = {}
        if self._emulator_server is not None:
            self._emulator_server.stop()
            self._emulator_server = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._atomic.close()
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
        self._saved_env = apply_env(wanted)

    @property
    def runner(self) -> FunctionRunner:
        """The function runner (once started)."""
        if self._runner is None:
            raise RuntimeError("the stack is not started")
        return self._runner

    # ---------------------------------------------------------------------------------------- lookups

    def function(self, logical_id: str) -> LocalFunction:
        """Return a function of the template.

        Raises
        ------
        KeyError
            Naming the functions the template has.
        """
        return self.runner.function(logical_id)

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
        """Messages in the queue: in flight or delayed, then visible, asked in that order in two requests.

        moto computes each count at a slightly different instant (not under one snapshot), and a message whose
        visibility timeout lapses between them is counted in neither: asked in one request, a queue holding one
        message can read as empty and the stack as idle with a redelivery still due. Time only moves a message
        from in flight or delayed to visible (receiving, the other way, happens on this thread, in
        :meth:`pump_once`), so counting those first and the visible ones after never misses one.
        """
        hidden = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        visible = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        return sum(int(v) for v in hidden.values()) + int(visible["ApproximateNumberOfMessages"])

    # ------------------------------------------------------------------------------------- invocation

    def arm_crash(self, function: str, **plan: Any) -> None:
        """Kill the next invocations of ``function`` mid-flight, like a crashed execution environment.

        ``after_s``, ``when`` and ``times`` as :meth:`local.functions.FunctionRunner.arm_crash` takes them.
        """
        self.runner.arm_crash(function, **plan)

    def invoke(self, function: str, event: Any, **options: Any) -> Invocation:
        """Invoke a function synchronously (``RequestResponse``) and record the invocation.

        ``source``, ``isolation`` and ``attempt`` as :meth:`local.functions.FunctionRunner.invoke` takes them.
        """
        return self.runner.invoke(function, event, **options)

    # ---------------------------------------------------------------------------------- event sources

    def _on_emulator_event(self, event: dict[str, Any]) -> None:
        # Called on the emulator's job thread: moto's EventBridge only queues the match for the next pump,
        # so the handler still runs on the thread that pumps.
        self._triggers.put_events(event)

    def put_events(self, *events: Mapping[str, Any]) -> list[str]:
        """Put events on the bus; the next pump delivers them to the matching rules' functions.

        See :meth:`local.triggers.Triggers.put_events`.
        """
        return self._triggers.put_events(*events)

    def run_schedule(self, rule: str | None = None, *, event: Mapping[str, Any] | None = None) -> list[Invocation]:
        """Fire schedule rules now (see :meth:`local.triggers.Triggers.run_schedule`)."""
        return self._triggers.run_schedule(rule, event=event)

    def schedule_rules(self) -> list[str]:
        """Logical IDs of the template's schedule rules."""
        return self._triggers.schedule_rules()

    def deliver_s3_event(self, event: Mapping[str, Any]) -> list[Invocation]:
        """Deliver an S3 notification event the way the template routes it (see
        :meth:`local.triggers.Triggers.deliver_s3_event`)."""
        return self._triggers.deliver_s3_event(event)

    def pump_once(self, *, include_mappings: bool = True) -> bool:
        """Deliver whatever every event source has ready, once: S3 notifications, EventBridge matches, then one
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
        if self._poller is None:
            raise RuntimeError("the stack is not started")
        progressed = self._triggers.pump()
        for mapping in self.sqs_mappings if include_mappings else []:
            progressed = self._poller.poll(mapping) or progressed
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
        pending.extend(self._triggers.pending(self._depth))
        for mapping in self.sqs_mappings if include_mappings else []:
            if depth := self._depth(mapping.queue.url):
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
        """Drop pending S3 notifications and EventBridge events without delivering them (e.g. those of seeding).

        Returns
        -------
        int
            How many were dropped.
        """
        return self._triggers.discard()

    # ------------------------------------------------------------------------------------------ alerts

    def alerts(self, topic: str | None = None) -> list[Alert]:
        """SNS notifications published so far (parsed envelopes), oldest first; repeatable.

        Parameters
        ----------
        topic
            Logical ID of one topic; default all.
        """
        for logical_id, url in self.resources.alert_queues.items():
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
