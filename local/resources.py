"""Creates a template's resources in moto and describes the wiring between them, for the local run.

Queues (attributes, redrive policy onto the dead-letter queue's local ARN), DynamoDB tables (keys, TTL), SNS
topics and their subscriptions (plus one reader queue a topic, for :meth:`local.stack.LocalStack.alerts`),
buckets with their versioning and Lambda notifications (delivered by moto to one internal queue) and EventBridge
notifications (existing buckets), and the EventBridge rules with event patterns, put into moto's EventBridge
with one internal queue a rule as the target. Lambda itself is not moto's (it needs Docker): what invokes
which function is returned as :class:`S3Route`, :class:`Rule` and :class:`SqsMapping` for the event sources.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moto.events.models import EventPattern

from .functions import LocalFunction, env_string, load_function
from .template import ACCOUNT_ID, NO_VALUE, Template, TemplateError

__all__ = ["LocalQueue", "Resources", "Rule", "S3Route", "SqsMapping", "provision", "s3_key_filter"]

_FUNCTION_TYPE = "AWS::Serverless::Function"
_EMULATED_TYPES = frozenset(
    {
        _FUNCTION_TYPE,
        "AWS::Serverless::LayerVersion",
        "AWS::DynamoDB::Table",
        "AWS::S3::Bucket",
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
        "AWS::Events::Rule",
    }
)
# The queue attributes the templates set; moto rejects properties that are not attributes (tags, names).
_QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "SqsManagedSseEnabled")
_S3_QUEUE = "local-s3-notifications"
_EVENTBRIDGE_ROUTE = "local-eventbridge"


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
    """An SQS event source of a function: queue, batch size, whether partial batch responses count, and
    ``ScalingConfig.MaximumConcurrency`` (None when the template sets none)."""

    function: str
    queue: LocalQueue
    batch_size: int
    report_failures: bool
    maximum_concurrency: int | None = None


@dataclass(frozen=True)
class Rule:
    """An EventBridge rule of the template (an event pattern, held by moto, or a schedule) and its targets.

    Attributes
    ----------
    targets
        Logical IDs of the functions it invokes.
    queue_url
        Pattern rules: the internal queue moto's EventBridge delivers matched events to (empty for schedules).
    """

    logical_id: str
    name: str
    arn: str
    pattern: dict[str, Any] | None
    schedule: str | None
    enabled: bool
    targets: tuple[str, ...]
    queue_url: str = ""

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether moto's EventBridge matches ``event`` against this rule's pattern (False for a schedule).

        The same matcher (:class:`moto.events.models.EventPattern`) routes events in the running stack.
        """
        if self.pattern is None:
            return False
        message: Any = dict(event)  # moto types it as its own TypedDict of the envelope
        return bool(EventPattern.load(json.dumps(self.pattern)).matches_event(message))


@dataclass(frozen=True)
class S3Route:
    """Where a bucket's notifications go: a function (with the template's filter) or the bus (None)."""

    bucket: str
    function: str | None  # None: the bucket's EventBridge delivery
    events: tuple[str, ...]
    prefix: str
    suffix: str


@dataclass
class Resources:
    """What :func:`provision` created: local names, URLs and ARNs by logical ID, and the event wiring."""

    functions: dict[str, LocalFunction] = field(default_factory=dict)
    queues: dict[str, LocalQueue] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    existing_buckets: list[str] = field(default_factory=list)
    rules: dict[str, Rule] = field(default_factory=dict)
    sqs_mappings: list[SqsMapping] = field(default_factory=list)
    s3_routes: dict[str, S3Route] = field(default_factory=dict)
    """S3 notification routes by configuration ID (a function, or the bus for EventBridge-enabled buckets)."""
    s3_queue_url: str = ""
    """The internal queue moto delivers the buckets' Lambda notifications to."""
    alert_queues: dict[str, str] = field(default_factory=dict)
    """Per topic logical ID, the URL of the queue subscribed to it (SNS envelopes)."""


def s3_key_filter(filter_spec: Any) -> tuple[str, str]:
    """Return ``(prefix, suffix)`` of a CloudFormation/SAM S3 notification ``Filter`` (either may be empty)."""
    rules = ((filter_spec or {}).get("S3Key") or {}).get("Rules") or []
    values = {str(rule.get("Name", "")).lower(): str(rule.get("Value", "")) for rule in rules}
    return values.get("prefix", ""), values.get("suffix", "")


def provision(
    template: Template,
    clients: Mapping[str, Any],
    *,
    stack_name: str,
    region: str,
    existing_buckets: Sequence[str] | None,
    note: Callable[[str], None],
) -> Resources:
    """Create the template's resources in moto and resolve its functions and event sources.

    Parameters
    ----------
    template
        The resolved template.
    clients
        boto3 clients on moto by service name: ``s3``, ``sqs``, ``sns``, ``dynamodb``, ``events``.
    stack_name, region
        Prefix of the internal queues' names; the local region.
    existing_buckets
        Buckets outside the stack, created with EventBridge delivery; None: the non-empty values of parameters
        named ``Existing...BucketName``.
    note
        Told what the local run does not emulate.

    Returns
    -------
    Resources

    Raises
    ------
    TemplateError
        For wiring the local run cannot resolve.
    """
    builder = _Builder(template, clients, stack_name, region, note)
    builder.build(existing_buckets)
    return builder.out


class _Builder:
    def __init__(
        self, template: Template, clients: Mapping[str, Any], stack_name: str, region: str, note: Callable[[str], None]
    ) -> None:
        self.t, self.stack_name, self.region, self.note = template, stack_name, region, note
        self.s3, self.sqs, self.sns = clients["s3"], clients["sqs"], clients["sns"]
        self.dynamodb, self.events = clients["dynamodb"], clients["events"]
        self.out = Resources()
        self._function_by_arn: dict[str, str] = {}

    def build(self, existing_buckets: Sequence[str] | None) -> None:
        """Resolve the functions, then create queues, tables, topics, buckets and rules in that order (each
        may name the ones before)."""
        t = self.t
        for resource in t.of_type(_FUNCTION_TYPE):
            fn = load_function(t, resource, self.note)
            self.out.functions[fn.logical_id] = fn
            self._function_by_arn[fn.arn] = fn.logical_id
        ignored = Counter(r.type for r in t.resources.values() if r.type not in _EMULATED_TYPES)
        if ignored:
            listed = ", ".join(f"{kind} x{count}" if count > 1 else kind for kind, count in sorted(ignored.items()))
            self.note(f"no local effect (IAM is not enforced either): {listed}")
        self._create_queues()
        self._create_tables()
        self._create_topics()
        self.out.s3_queue_url = self._internal_queue(_S3_QUEUE)[0]
        self._create_buckets(existing_buckets)
        self._create_rules()
        self._collect_sqs_mappings()

    def _internal_queue(self, suffix: str) -> tuple[str, str]:
        """Create a queue of the local run itself (not of the template); return its URL and ARN."""
        name = f"{self.stack_name}-{suffix}"
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        return url, f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}"

    def _create_queues(self) -> None:
        t, out = self.t, self.out
        redrives: dict[str, Any] = {}
        for resource in t.of_type("AWS::SQS::Queue"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            attributes = {key: env_string(props[key]) for key in _QUEUE_ATTRIBUTES if key in props}
            if "RedrivePolicy" in props:
                redrives[resource.logical_id] = props["RedrivePolicy"]
            url = self.sqs.create_queue(QueueName=resource.physical_id, Attributes=attributes)["QueueUrl"]
            if url != t.queue_url(resource):
                raise TemplateError(
                    f"moto's URL {url} for {resource.logical_id} is not the expected {t.queue_url(resource)}"
                )
            out.queues[resource.logical_id] = LocalQueue(
                resource.logical_id, resource.physical_id, url, t.arn(resource), None
            )
        # Redrive policies after every queue exists: moto checks that the dead-letter queue does.
        by_arn = {q.arn: q for q in out.queues.values()}
        for logical_id, policy in redrives.items():
            doc = json.loads(policy) if isinstance(policy, str) else dict(policy)
            dlq = by_arn.get(str(doc.get("deadLetterTargetArn")))
            if dlq is None:
                raise TemplateError(
                    f"{logical_id}.RedrivePolicy: {doc.get('deadLetterTargetArn')} is not a queue of the stack"
                )
            source = out.queues[logical_id]
            self.sqs.set_queue_attributes(
                QueueUrl=source.url,
                Attributes={
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": int(doc["maxReceiveCount"])}
                    )
                },
            )
            out.queues[logical_id] = LocalQueue(source.logical_id, source.name, source.url, source.arn, dlq.logical_id)

    def _create_tables(self) -> None:
        t = self.t
        for resource in t.of_type("AWS::DynamoDB::Table"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            name = resource.physical_id
            # On-demand, as both templates' tables are: the local run has no capacity to provision.
            indexes = {}
            if props.get("GlobalSecondaryIndexes"):
                # Keys and projection as declared (an on-demand table's indexes have no throughput to give).
                indexes["GlobalSecondaryIndexes"] = [
                    {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
                    for index in props["GlobalSecondaryIndexes"]
                ]
            self.dynamodb.create_table(
                TableName=name,
                AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"],
                BillingMode="PAY_PER_REQUEST",
                **indexes,
            )
            ttl = props.get("TimeToLiveSpecification")
            if ttl and _as_bool(ttl.get("Enabled"), False):
                self.dynamodb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            self.out.tables[resource.logical_id] = name

    def _create_topics(self) -> None:
        t = self.t
        for resource in t.of_type("AWS::SNS::Topic"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            arn = self.sns.create_topic(Name=resource.physical_id)["TopicArn"]
            self.out.topics[resource.logical_id] = arn
            for sub in props.get("Subscription") or []:
                self._subscribe(arn, str(sub.get("Protocol")), str(sub.get("Endpoint")))
            alert_url, alert_arn = self._internal_queue(f"local-{resource.logical_id}-reader")
            # RawMessageDelivery false: the reader sees the SNS envelope, so Subject and attributes are checked too.
            self.sns.subscribe(
                TopicArn=arn, Protocol="sqs", Endpoint=alert_arn, Attributes={"RawMessageDelivery": "false"}
            )
            self.out.alert_queues[resource.logical_id] = alert_url
        for resource in t.of_type("AWS::SNS::Subscription"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            self._subscribe(str(props["TopicArn"]), str(props["Protocol"]), str(props["Endpoint"]))

    def _subscribe(self, topic_arn: str, protocol: str, endpoint: str) -> None:
        if protocol in ("email", "email-json", "sms", "http", "https"):
            # Nothing local can receive these; alerts are read through the stack's own queue subscription.
            self.note(f"SNS {protocol} subscription {endpoint!r} to {topic_arn} is not delivered locally")
            return
        self.sns.subscribe(TopicArn=topic_arn, Protocol=protocol, Endpoint=endpoint)

    def _create_buckets(self, existing_buckets: Sequence[str] | None) -> None:
        t, out = self.t, self.out
        internal_arn = f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{self.stack_name}-{_S3_QUEUE}"
        configs: dict[str, dict[str, Any]] = {}
        for resource in t.of_type("AWS::S3::Bucket"):
            name = resource.physical_id
            self.s3.create_bucket(Bucket=name)
            out.buckets[resource.logical_id] = name
            versioning = t.resolve(resource.properties.get("VersioningConfiguration") or {}, where=resource.logical_id)
            if str(versioning.get("Status", "")) == "Enabled":
                # Overwrites then keep the earlier content as a noncurrent version, as the deployed bucket does.
                self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            notification = t.resolve(
                resource.properties.get("NotificationConfiguration") or {}, where=resource.logical_id
            )
            for cfg in notification.get("LambdaConfigurations") or []:
                function = self._function_by_arn.get(str(cfg.get("Function")))
                if function is None:
                    self.note(f"{resource.logical_id}: notification to {cfg.get('Function')} is not a local function")
                    continue
                # moto delivers the notification to the internal queue, with the template's filter applied.
                prefix, suffix = s3_key_filter(cfg.get("Filter"))
                config_id = f"local-lambda-{len(out.s3_routes)}"
                out.s3_routes[config_id] = S3Route(name, function, (str(cfg["Event"]),), prefix, suffix)
                rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix)) if v]
                entry: dict[str, Any] = {"Id": config_id, "QueueArn": internal_arn, "Events": [str(cfg["Event"])]}
                if rules:
                    entry["Filter"] = {"Key": {"FilterRules": rules}}
                configs.setdefault(name, {}).setdefault("QueueConfigurations", []).append(entry)
        out.existing_buckets = list(existing_buckets) if existing_buckets is not None else self._existing_buckets()
        for name in out.existing_buckets:
            if name not in out.buckets.values():
                self.s3.create_bucket(Bucket=name)
            # moto's S3 sends these buckets' events to its EventBridge itself; the route serves replayed records.
            out.s3_routes[_EVENTBRIDGE_ROUTE] = S3Route(
                name, None, ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"), "", ""
            )
            configs.setdefault(name, {})["EventBridgeConfiguration"] = {}
        for bucket, config in configs.items():
            self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)

    def _existing_buckets(self) -> list[str]:
        return [
            str(value)
            for name, value in self.t.parameters.items()
            if name.startswith("Existing") and name.endswith("BucketName") and value
        ]

    def _create_rules(self) -> None:
        t = self.t
        for fn in self.out.functions.values():
            for event_name, event in (fn.properties.get("Events") or {}).items():
                kind = event.get("Type")
                if kind not in ("EventBridgeRule", "Schedule"):
                    continue
                where = f"{fn.logical_id}.Events.{event_name}"
                props = t.resolve(event.get("Properties") or {}, where=where)
                _no_input(props, where)
                logical_id = f"{fn.logical_id}{event_name}"
                name = str(props.get("RuleName") or props.get("Name") or f"{self.stack_name}-{logical_id}")
                pattern = props.get("Pattern") if kind == "EventBridgeRule" else None
                schedule = str(props["Schedule"]) if kind == "Schedule" else None
                self._add_rule(
                    logical_id, name, pattern, schedule, _as_bool(props.get("Enabled"), True), [fn.logical_id]
                )
        for resource in t.of_type("AWS::Events::Rule"):
            props = t.resolve(dict(resource.properties), where=resource.logical_id)
            if "EventPattern" not in props:
                raise TemplateError(f"{resource.logical_id}: only SAM Schedule events are run as schedules locally")
            targets = []
            for i, raw in enumerate(props.get("Targets") or []):
                _no_input(raw, f"{resource.logical_id}.Targets[{i}]")
                function = self._function_by_arn.get(str(raw["Arn"]))
                if function is None:
                    self.note(f"{resource.logical_id}: target {raw['Arn']} is not emulated")
                    continue
                targets.append(function)
            enabled = str(props.get("State", "ENABLED")).upper() == "ENABLED"
            self._add_rule(resource.logical_id, resource.physical_id, props["EventPattern"], None, enabled, targets)

    def _add_rule(
        self,
        logical_id: str,
        name: str,
        pattern: Any,
        schedule: str | None,
        enabled: bool,
        targets: Sequence[str],
    ) -> None:
        doc = (json.loads(pattern) if isinstance(pattern, str) else dict(pattern)) if pattern else None
        queue_url = ""
        if doc is not None:
            # moto's EventBridge holds the rule and matches events; its target is a queue the stack polls,
            # because moto's Lambda target needs Docker. A disabled rule gets no target (moto ignores State).
            # Schedules stay local: moto does not fire them, and a rule without a pattern would match every event.
            self.events.put_rule(Name=name, EventPattern=json.dumps(doc), State="ENABLED" if enabled else "DISABLED")
            if enabled and targets:
                queue_url, queue_arn = self._internal_queue(f"local-rule-{logical_id}")
                self.events.put_targets(Rule=name, Targets=[{"Id": "local-stack", "Arn": queue_arn}])
        self.out.rules[logical_id] = Rule(
            logical_id=logical_id,
            name=name,
            arn=f"arn:aws:events:{self.region}:{ACCOUNT_ID}:rule/{name}",
            pattern=doc,
            schedule=schedule,
            enabled=enabled,
            targets=tuple(targets),
            queue_url=queue_url,
        )

    def _collect_sqs_mappings(self) -> None:
        t = self.t
        by_arn = {q.arn: q for q in self.out.queues.values()}
        for fn in self.out.functions.values():
            for event_name, event in (fn.properties.get("Events") or {}).items():
                if event.get("Type") != "SQS":
                    continue
                where = f"{fn.logical_id}.Events.{event_name}"
                props = t.resolve(event.get("Properties") or {}, where=where)
                source = by_arn.get(str(props.get("Queue")))
                if source is None:
                    raise TemplateError(f"{where}: Queue {props.get('Queue')} is not a queue of the stack")
                self.out.sqs_mappings.append(
                    SqsMapping(
                        function=fn.logical_id,
                        queue=source,
                        batch_size=int(props.get("BatchSize", 10)),
                        report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                        maximum_concurrency=_maximum_concurrency(props.get("ScalingConfig")),
                    )
                )


def _maximum_concurrency(scaling: Any) -> int | None:
    value = scaling.get("MaximumConcurrency") if isinstance(scaling, dict) else None
    return None if value is None or value is NO_VALUE else int(value)


def _as_bool(value: Any, default: bool) -> bool:
    if value is None or value is NO_VALUE:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "enabled")


def _no_input(props: Mapping[str, Any], where: str) -> None:
    """Refuse a target input the local run would not apply (neither template uses one): the event is sent as is."""
    for key in ("Input", "InputPath", "InputTransformer"):
        if key in props:
            raise TemplateError(f"{where}: {key} is not supported by the local run")
