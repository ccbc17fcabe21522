"""The ``--env-vars`` file for ``sam local invoke``, from a deployed stack.

``sam local invoke`` resolves a function's environment from the template alone: a ``!Ref`` to a resource
becomes the resource's logical ID (``WORK_QUEUE_URL=WorkQueue``, ``ALERT_TOPIC_ARN=AlertTopic``), and the
functions' typed settings refuse those at cold start. This module resolves the same variables against a
deployed stack instead: its parameters, its resources' physical IDs (a queue's is its URL, a topic's its ARN)
and its Region and account, through the template's own intrinsics (:class:`local.template.Template`), so the
file can never name a variable the template does not set or miss one it does.

Usage (needs ``cloudformation:DescribeStacks`` and ``DescribeStackResources`` on the stack)::

    python -m local.sam_env STACK_NAME > env.json
    sam local invoke ImageSetWorkerFunction -e events/sqs-work-batch.json --env-vars env.json

``events/env.json`` is this module's output for an example stack (:data:`EXAMPLE_STACK`), kept in the repo so
that the command works without a stack for the events that need no AWS resource (a test keeps it current).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .template import Template, load_template

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE_STACK: dict[str, Any] = {
    "StackName": "ahi-verify",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/ahi-verify/00000000-0000-4000-8000-000000000000",
    "Parameters": {"DatastoreId": "0123456789abcdef0123456789abcdef"},
    "Resources": {
        "WorkQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/ahi-verify-WorkQueue-EXAMPLE",
        "AuditQueue": "https://sqs.us-east-1.amazonaws.com/123456789012/ahi-verify-AuditQueue-EXAMPLE",
        "ReportsBucket": "ahi-verify-reportsbucket-example",
        "ProgressTable": "ahi-verify-ProgressTable-EXAMPLE",
        "IdempotencyTable": "ahi-verify-IdempotencyTable-EXAMPLE",
        "LedgerTable": "ahi-verify-LedgerTable-EXAMPLE",
        "AlertTopic": "arn:aws:sns:us-east-1:123456789012:ahi-verify-AlertTopic-EXAMPLE",
        "OpsTopic": "arn:aws:sns:us-east-1:123456789012:ahi-verify-OpsTopic-EXAMPLE",
    },
}
"""A stack as DescribeStacks/DescribeStackResources would describe it (only what the functions' environment
refers to): the source of ``events/env.json``."""


class _DeployedTemplate(Template):
    """The template bound to a deployed stack: a resource's ``Ref`` is its physical ID there."""

    def __init__(self, doc: Mapping[str, Any], physical: Mapping[str, str], **kwargs: Any) -> None:
        self._physical = dict(physical)
        super().__init__(doc, **kwargs)

    def ref(self, name: str, *, where: str = "") -> Any:
        if name in getattr(self, "_physical", {}) and name not in self.parameters:
            return self._physical[name]
        return super().ref(name, where=where)


def function_environment(
    stack_name: str, stack_id: str, parameters: Mapping[str, str], physical: Mapping[str, str]
) -> dict[str, str]:
    """The environment every function of the template gets in the described stack.

    Parameters
    ----------
    stack_name, stack_id
        The stack's name and ARN (the Region and account are read from the ARN).
    parameters
        The stack's parameter values (those the template declares; the others are ignored).
    physical
        Physical resource IDs by logical ID.

    Returns
    -------
    dict
        ``Globals.Function.Environment.Variables``, resolved, as strings.
    """
    doc = load_template(ROOT / "template.yaml")
    declared = doc.get("Parameters") or {}
    _, _, _, region, account, _ = stack_id.split(":", 5)
    template = _DeployedTemplate(
        doc,
        physical,
        parameters={k: v for k, v in parameters.items() if k in declared},
        stack_name=stack_name,
        region=region,
        account_id=account,
    )
    variables = doc["Globals"]["Function"]["Environment"]["Variables"]
    resolved = {name: template.resolve(value, where=f"Globals.{name}") for name, value in variables.items()}
    return {name: "" if value is None else str(value) for name, value in resolved.items()}


def env_vars_document(environment: Mapping[str, str]) -> str:
    """The ``--env-vars`` file: ``Parameters`` applies to every function."""
    return json.dumps({"Parameters": dict(environment)}, indent=2) + "\n"


def describe(stack_name: str, cloudformation: Any) -> dict[str, Any]:
    """What :func:`function_environment` needs, from CloudFormation."""
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    return {
        "StackName": stack["StackName"],
        "StackId": stack["StackId"],
        "Parameters": {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])},
        "Resources": {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the env-vars file of a deployed stack."""
    parser = argparse.ArgumentParser(prog="python -m local.sam_env", description=__doc__.splitlines()[0])
    parser.add_argument("stack_name", metavar="STACK_NAME")
    parser.add_argument("--region", help="the stack's Region (default: the AWS configuration's)")
    args = parser.parse_args(argv)
    import boto3  # noqa: PLC0415 - only this command talks to AWS

    stack = describe(args.stack_name, boto3.client("cloudformation", region_name=args.region))
    environment = function_environment(stack["StackName"], stack["StackId"], stack["Parameters"], stack["Resources"])
    sys.stdout.write(env_vars_document(environment))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
