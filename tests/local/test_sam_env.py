"""`sam local invoke --env-vars`: the environment file resolves every variable the template sets, as a deployed
stack gives it, so the functions' settings accept it at cold start (SAM alone gives logical IDs, refused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ahi_verify.app.settings import Settings, SettingsError
from local.sam_env import EXAMPLE_STACK, describe, env_vars_document, function_environment, main
from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def example_environment(**parameters: str) -> dict[str, str]:
    stack = EXAMPLE_STACK
    return function_environment(
        stack["StackName"], stack["StackId"], {**stack["Parameters"], **parameters}, stack["Resources"]
    )


def test_the_shipped_env_file_is_the_example_stacks_and_current() -> None:
    # GIVEN events/env.json and the template as it is now
    shipped = (ROOT / "events" / "env.json").read_text(encoding="utf-8")
    # THEN it is exactly what the generator makes of the example stack (regenerate it when the template changes)
    assert shipped == env_vars_document(example_environment())


def test_every_variable_of_the_template_is_set_and_the_settings_accept_them() -> None:
    # GIVEN the functions' environment in the example stack
    environment = json.loads((ROOT / "events" / "env.json").read_text(encoding="utf-8"))["Parameters"]
    template_variables = load_template(ROOT / "template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    # THEN it names exactly the template's variables, with the deployed values, and the cold start accepts them
    assert set(environment) == set(template_variables)
    settings = Settings.from_env(environment)
    assert settings.work_queue_url == EXAMPLE_STACK["Resources"]["WorkQueue"]
    assert settings.alert_topic_arn == EXAMPLE_STACK["Resources"]["AlertTopic"]
    assert settings.output_bucket == "ahi-verify-output-123456789012-us-east-1"  # the template's !Sub, resolved


def test_what_sam_alone_resolves_is_refused_at_cold_start() -> None:
    # GIVEN the environment as `sam local invoke` without --env-vars resolves it: Refs become logical IDs
    environment = {**example_environment(), "WORK_QUEUE_URL": "WorkQueue", "ALERT_TOPIC_ARN": "AlertTopic"}
    # THEN the settings name both variables (which is why the env file exists)
    with pytest.raises(SettingsError, match=r"WORK_QUEUE_URL is malformed.*ALERT_TOPIC_ARN is malformed"):
        Settings.from_env(environment)


def test_parameters_of_the_stack_are_used() -> None:
    # GIVEN a stack in ExistingBucket mode with its own bucket and the three-way check on
    environment = example_environment(
        TriggerMode="ExistingBucket", ExistingOutputBucketName="clinic-imports", SourceBucketName="clinic-dicom"
    )
    # THEN the output bucket is that bucket and the source bucket is set
    assert environment["OUTPUT_BUCKET"] == "clinic-imports"
    assert environment["SOURCE_BUCKET"] == "clinic-dicom"
    assert Settings.from_env(environment).source_bucket == "clinic-dicom"


class FakeCloudFormation:
    """DescribeStacks and DescribeStackResources of the example stack, in the shapes CloudFormation answers."""

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's parameter names
        assert StackName == "ahi-verify"
        parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in EXAMPLE_STACK["Parameters"].items()]
        # A parameter the template no longer declares (an older deployment) is ignored, not an error.
        parameters.append({"ParameterKey": "Retired", "ParameterValue": "x"})
        return {"Stacks": [{"StackName": StackName, "StackId": EXAMPLE_STACK["StackId"], "Parameters": parameters}]}

    def describe_stack_resources(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        resources = [{"LogicalResourceId": k, "PhysicalResourceId": v} for k, v in EXAMPLE_STACK["Resources"].items()]
        return {"StackResources": resources}


def test_a_described_stack_gives_the_same_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN CloudFormation describing the example stack
    import boto3  # noqa: PLC0415

    monkeypatch.setattr(boto3, "client", lambda service, **_: FakeCloudFormation())
    stack = describe("ahi-verify", FakeCloudFormation())
    # WHEN the command runs
    assert main(["ahi-verify"]) == 0
    # THEN it prints the shipped example file
    assert stack["Resources"] == EXAMPLE_STACK["Resources"]
    assert capsys.readouterr().out == (ROOT / "events" / "env.json").read_text(encoding="utf-8")
