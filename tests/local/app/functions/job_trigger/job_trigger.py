"""Test trigger: reports what it received and where it runs; acts on instructions in a test event's detail.

Instructions (``detail`` of a ``source: local.test`` event): ``alert`` publishes it to ALERT_TOPIC_ARN,
``work`` sends each body to WORK_QUEUE_URL, ``fail`` raises. An S3 record whose key contains ``fail-me``
raises too.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus

import boto3
from local_test_layer import LAYER_MARKER

ENV_AT_IMPORT = {key: os.environ.get(key) for key in ("WORK_QUEUE_URL", "AWS_LAMBDA_FUNCTION_NAME")}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    detail = event.get("detail") or {}
    if event.get("source") == "local.test":
        if detail.get("fail"):
            raise RuntimeError("instructed to fail")
        if "alert" in detail:
            alert = detail["alert"]
            boto3.client("sns").publish(
                TopicArn=os.environ["ALERT_TOPIC_ARN"],
                Subject=alert["subject"],
                Message=alert["message"],
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in alert["attributes"].items()},
            )
        for body in detail.get("work") or []:
            boto3.client("sqs").send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=json.dumps(body))
    keys = [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]
    if any("fail-me" in key for key in keys):
        raise RuntimeError("instructed to fail by the key")
    return {
        "keys": keys,
        "layer": LAYER_MARKER,
        "env": dict(os.environ),
        "env_at_import": ENV_AT_IMPORT,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }
