"""The asynchronous event sources of the template's functions: S3 notifications, EventBridge rules and
schedules, each delivered through Lambda's asynchronous invocation (:mod:`local.async_invoke`).

- S3: moto applies each bucket's Lambda notification configuration (events, prefix/suffix) and delivers the
  record to an internal queue; :meth:`Triggers.pump` completes it to AWS's full record shape and invokes the
  function. moto's record keeps its key encoding: ``quote_plus`` of the whole key, ``/`` included, which decodes
  exactly like AWS's with ``unquote_plus`` and makes a forgotten decode fail locally.
- EventBridge: moto's EventBridge holds the rules and matches events (``put_events``, the emulator's import-job
  events, and the S3 events of EventBridge-enabled buckets, which moto's S3 sends itself) and delivers each
  match to the rule's internal queue; :meth:`Triggers.pump` invokes the rule's functions with it.
- Schedules: moto does not fire them; :meth:`Triggers.run_schedule` sends EventBridge's scheduled event.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from .async_invoke import AsyncInvoker
from .functions import Invocation
from .resources import Resources, Rule
from .sqs_source import SQS_RECEIVE_MAX
from .template import ACCOUNT_ID

__all__ = ["Triggers", "enrich_s3_record", "s3_event_matches", "s3_record_to_eventbridge"]

logger = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class Triggers:
    """Delivers the S3, EventBridge and schedule events of one local stack to its functions.

    Parameters
    ----------
    resources
        The provisioned stack (routes, rules, internal queues).
    sqs, events
        boto3 SQS and EventBridge clients on moto.
    invoker
        Lambda's asynchronous invocation.
    region
        Of scheduled events.
    """

    def __init__(self, resources: Resources, sqs: Any, events: Any, invoker: AsyncInvoker, *, region: str) -> None:
        self.resources, self.sqs, self.events, self.invoker, self.region = resources, sqs, events, invoker, region

    def _rule_queues(self) -> list[Rule]:
        return [r for r in self.resources.rules.values() if r.queue_url]

    # -------------------------------------------------------------------------------------- EventBridge

    def put_events(self, *events: Mapping[str, Any]) -> list[str]:
        """Put events on moto's EventBridge bus; the next pump delivers what its rules matched.

        Parameters
        ----------
        *events
            Full events (``{"source", "detail-type", "detail", "resources"?}``; the envelope's other fields
            are EventBridge's) or ``PutEvents`` entries (``{"Source", "DetailType", "Detail": "<json>", ...}``).

        Returns
        -------
        list of str
            The event IDs.
        """
        ids = []
        for event in events:
            if "Source" in event or "DetailType" in event:
                entry = dict(event)
                entry.setdefault("Detail", "{}")
            else:
                entry = {
                    "Source": event["source"],
                    "DetailType": event["detail-type"],
                    "Detail": json.dumps(event.get("detail") or {}),
                    "Resources": list(event.get("resources") or []),
                }
            response = self.events.put_events(Entries=[entry])
            ids.append(str(response["Entries"][0].get("EventId", "")))
        return ids

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
        rules = self.resources.rules.values()
        if rule is not None:
            selected = [r for r in rules if r.schedule and rule in (r.logical_id, r.name)]
            if not selected:
                raise KeyError(f"no schedule rule {rule!r}; the template has {self.schedule_rules()}")
        else:
            selected = [r for r in rules if r.schedule and r.enabled]
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
            for function in chosen.targets:
                invocations.extend(self.invoker.invoke(function, scheduled, "schedule"))
        return invocations

    def schedule_rules(self) -> list[str]:
        """Logical IDs of the template's schedule rules."""
        return [r.logical_id for r in self.resources.rules.values() if r.schedule]

    # ----------------------------------------------------------------------------------------------- S3

    def deliver_s3_event(self, event: Mapping[str, Any]) -> list[Invocation]:
        """Deliver an S3 notification event (``{"Records": [...]}``) the way the template routes it.

        Each record goes, as its own event, to the function whose notification configuration on that bucket
        selects the record's event name and (decoded) key, or, for an EventBridge-enabled bucket, to moto's
        EventBridge as the event S3 sends there.

        Parameters
        ----------
        event
            An S3 notification event (e.g. ``events/s3-put-manifest.json``).

        Returns
        -------
        list of Invocation
            The invocations (retries included); EventBridge deliveries happen on the next pump.

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
                for config_id, route in self.resources.s3_routes.items()
                if route.bucket == bucket
                and key.startswith(route.prefix)
                and key.endswith(route.suffix)
                and s3_event_matches(name, route.events)
            ]
            if not selected:
                raise LookupError(f"no notification configuration of the stack selects {name} s3://{bucket}/{key}")
            for config_id in selected:
                routed = {**record, "s3": {**record["s3"], "configurationId": config_id}}
                route = self.resources.s3_routes[config_id]
                if route.function is None:
                    self.put_events(s3_record_to_eventbridge(routed))
                else:
                    invocations.extend(self.invoker.invoke(route.function, {"Records": [routed]}, "s3"))
        return invocations

    def _route_s3_record(self, record: Mapping[str, Any]) -> None:
        config_id = str(record["s3"].get("configurationId"))
        route = self.resources.s3_routes.get(config_id)
        if route is None or route.function is None:
            logger.warning("S3 notification for unknown configuration %s ignored", config_id)
            return
        key = unquote_plus(str(record["s3"]["object"]["key"]))
        name = str(record.get("eventName", ""))
        if not (key.startswith(route.prefix) and key.endswith(route.suffix) and s3_event_matches(name, route.events)):
            # moto applied the same filter; a mismatch here means moto changed, and the event must not pass.
            logger.warning("S3 event %s %s is outside the template's filter; not delivered", name, key)
            return
        self.invoker.invoke(route.function, {"Records": [enrich_s3_record(record)]}, "s3")

    # ------------------------------------------------------------------------------------------ pumping

    def pump(self) -> bool:
        """Deliver the S3 notifications, then the matched EventBridge events, that moto has queued.

        Returns
        -------
        bool
            Whether anything was delivered.
        """
        progressed = False
        for message in self._take(self.resources.s3_queue_url):
            progressed = True
            body = json.loads(message["Body"])
            if body.get("Event") == "s3:TestEvent":
                continue  # sent by S3 when a notification configuration is saved
            for record in body.get("Records", []):
                self._route_s3_record(record)
        for rule in self._rule_queues():
            for message in self._take(rule.queue_url):
                progressed = True
                event = json.loads(message["Body"])
                event.pop("ingestion-time", None)  # moto's bookkeeping, not part of the event EventBridge sends
                # moto's target template for put_events leaves out the envelope's account; EventBridge sends it.
                event.setdefault("account", ACCOUNT_ID)
                for function in rule.targets:
                    self.invoker.invoke(function, event, "eventbridge")
        return progressed

    def _take(self, url: str) -> list[dict[str, Any]]:
        """Receive what a queue holds now and delete it: S3 and EventBridge hand an event to Lambda's
        asynchronous invocation and forget it, so it is never redelivered by the queue."""
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=SQS_RECEIVE_MAX
        ).get("Messages", [])
        for message in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return messages

    def pending(self, depth: Callable[[str], int]) -> list[str]:
        """What is queued and not delivered yet (empty when nothing is).

        Parameters
        ----------
        depth
            Callable giving a queue URL's message count.
        """
        pending = []
        if sum(depth(r.queue_url) for r in self._rule_queues()):
            pending.append("EventBridge events")
        if depth(self.resources.s3_queue_url):
            pending.append("S3 notifications")
        return pending

    def discard(self) -> int:
        """Drop queued S3 notifications and EventBridge events without delivering them.

        Returns
        -------
        int
            How many were dropped (S3's test events not counted).
        """
        dropped = 0
        while messages := self._take(self.resources.s3_queue_url):
            dropped += sum(json.loads(m["Body"]).get("Event") != "s3:TestEvent" for m in messages)
        for rule in self._rule_queues():
            while messages := self._take(rule.queue_url):
                dropped += len(messages)
        return dropped
