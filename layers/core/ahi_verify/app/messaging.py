"""SQS for work items, SNS for the one alert per job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..alert import Alert
from ..work_items import WorkItem

_BATCH = 10  # SendMessageBatch limit


class WorkQueue:
    """Sends work items; a partially failed batch raises, naming the items, so nothing is dropped."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url

    def send(self, items: Sequence[WorkItem]) -> None:
        """Queue every item (10 per request)."""
        for start in range(0, len(items), _BATCH):
            batch = items[start : start + _BATCH]
            response = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": item.to_json()} for i, item in enumerate(batch)],
            )
            failed = response.get("Failed") or []
            if failed:
                ids = ", ".join(batch[int(f["Id"])].item_id for f in failed)
                raise RuntimeError(f"SQS rejected work items {ids}: {failed[0].get('Code')}")


class AlertPublisher:
    """Publishes alerts to the topic."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self._sns = sns
        self._topic = topic_arn

    def publish(self, alert: Alert) -> str:
        """Send one alert; return SNS's message ID."""
        response = self._sns.publish(
            TopicArn=self._topic,
            Subject=alert.subject,
            Message=alert.message,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in alert.attributes.items()},
        )
        return str(response["MessageId"])
