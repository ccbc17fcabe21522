"""The template reader: short tags, intrinsic functions, parameters, conditions, rules and Globals, on small
inline templates and on the test application's template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.template import NO_VALUE, Template, TemplateError, load_template, merge_globals
from tests.local.conftest import APP, DATASTORE_ID

CONTRACT_ENV = {
    "DATASTORE_ID",
    "OUTPUT_BUCKET",
    "OUTPUT_PREFIX",
    "REPORTS_PREFIX",
    "WORK_QUEUE_URL",
    "PROGRESS_TABLE",
    "IDEMPOTENCY_TABLE",
    "ALERT_TOPIC_ARN",
    "NOTIFY_ON_CLEAN_JOBS",
    "FRAMES_PER_WORK_ITEM",
    "FRAME_RATE_BUDGET",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
}

SMALL = """
Parameters:
  Stage:
    Type: String
    Default: dev
    AllowedValues: [dev, prod]
  Size:
    Type: Number
    Default: 3
    MinValue: 1
  Names:
    Type: CommaDelimitedList
    Default: a,b,c
Mappings:
  Sizes:
    dev: {Memory: 256}
    prod: {Memory: 1024}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  IsDev: !Not [!Condition IsProd]
  DevAndBig: !And [!Condition IsDev, !Equals [!Ref Size, 3]]
Rules:
  ProdIsBig:
    RuleCondition: !Equals [!Ref Stage, prod]
    Assertions:
      - Assert: !Not [!Equals [!Ref Size, "1"]]
        AssertDescription: prod needs Size > 1
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Dlq:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-dead-${Stage}"
  ProdOnly:
    Type: AWS::SNS::Topic
    Condition: IsProd
  Thing:
    Type: AWS::Local::Thing
    Properties:
      Sub: !Sub "${AWS::Region}:${AWS::AccountId}:${Queue.QueueName}:${!Literal}:${Stage}"
      SubList: !Sub ["${A}-${Dlq.Arn}", {A: !Ref Size}]
      Url: !GetAtt Queue.QueueUrl
      Join: !Join ["/", [!Ref Stage, !Select [1, !Ref Names], !Select [0, !Split [".", "x.y"]]]]
      If: !If [IsProd, big, small]
      Gone: !If [IsProd, here, !Ref AWS::NoValue]
      List: [one, !If [IsProd, two, !Ref AWS::NoValue], three]
      Memory: !FindInMap [Sizes, !Ref Stage, Memory]
      Json: !ToJsonString {a: !Ref Size}
      Base: !Base64 hi
      Cond: !Condition DevAndBig
      Topic: !If [IsProd, !Ref ProdOnly, none]
"""


def small(tmp_path: Path, **parameters: Any) -> Template:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL, encoding="utf-8")
    return Template(load_template(path), parameters, stack_name="st", sqs_endpoint="http://127.0.0.1:9")


def test_short_tags_become_the_json_form(tmp_path: Path) -> None:
    # GIVEN a template using short-form tags and a date-like string
    path = tmp_path / "t.yaml"
    path.write_text(
        "AWSTemplateFormatVersion: 2010-09-09\nResources:\n  R:\n    Type: X\n    Properties:\n"
        "      A: !GetAtt Db.Endpoint.Address\n      B: !Ref P\n      C: !Sub x\n      D: !If [C, 1, 2]\n",
        encoding="utf-8",
    )
    # WHEN it is loaded
    doc = load_template(path)
    # THEN each tag is CloudFormation's JSON form, the dotted GetAtt splits at the first dot, the date stays text
    props = doc["Resources"]["R"]["Properties"]
    assert props == {
        "A": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "B": {"Ref": "P"},
        "C": {"Fn::Sub": "x"},
        "D": {"Fn::If": ["C", 1, 2]},
    }
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"


def test_intrinsics_resolve_to_local_values(tmp_path: Path) -> None:
    # GIVEN the small template with its defaults
    template = small(tmp_path)
    # WHEN the resource's properties are resolved
    props = template.resolve(dict(template.resource("Thing").properties), where="Thing")
    # THEN every function has CloudFormation's meaning, with the local names, URLs and ARNs
    assert props["Sub"] == "us-east-1:123456789012:st-Queue:${Literal}:dev"
    assert props["SubList"] == "3-arn:aws:sqs:us-east-1:123456789012:st-dead-dev"
    assert props["Url"] == "http://127.0.0.1:9/123456789012/st-Queue"
    assert props["Join"] == "dev/b/x"
    assert props["If"] == "small"
    assert "Gone" not in props  # AWS::NoValue removes the key ...
    assert props["List"] == ["one", "three"]  # ... and the list element
    assert props["Memory"] == 256
    assert props["Json"] == '{"a":"3"}'
    assert props["Base"] == "aGk="
    assert props["Cond"] is True
    assert props["Topic"] == "none"


def test_conditions_drop_resources_and_references_to_them_fail(tmp_path: Path) -> None:
    # GIVEN the small template in dev (ProdOnly's condition is false) and in prod
    dev, prod = small(tmp_path), small(tmp_path, Stage="prod")
    # WHEN / THEN the conditional resource exists only in prod, and a reference to it in dev names the reason
    assert "ProdOnly" not in dev.resources
    assert prod.resolve({"Ref": "ProdOnly"}) == "arn:aws:sns:us-east-1:123456789012:st-ProdOnly"
    with pytest.raises(TemplateError, match="disabled by its Condition"):
        dev.resolve({"Ref": "ProdOnly"}, where="X")
    assert dev.ref("AWS::NoValue") is NO_VALUE


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"Stage": "test"}, "not one of"),
        ({"Size": "0"}, "below MinValue"),
        ({"Size": "many"}, "not a Number"),
        ({"Nope": "x"}, "unknown parameter"),
        ({"Stage": "prod", "Size": "1"}, "prod needs Size > 1"),
    ],
)
def test_parameters_are_validated_like_cloudformation(tmp_path: Path, parameters: dict[str, str], message: str) -> None:
    # GIVEN an override CloudFormation would reject / WHEN the template is bound / THEN it is rejected, named
    with pytest.raises(TemplateError, match=message):
        small(tmp_path, **parameters)


def test_unsupported_intrinsics_fail_loudly(tmp_path: Path) -> None:
    # GIVEN a value using a function the local run does not model
    template = small(tmp_path)
    # WHEN / THEN it raises, naming where
    with pytest.raises(TemplateError, match=r"Here: Fn::ImportValue is not supported"):
        template.resolve({"Fn::ImportValue": "x"}, where="Here")
    with pytest.raises(TemplateError, match="not modelled"):
        template.resolve({"Fn::GetAtt": ["Queue", "Nonsense"]})


def test_globals_merge_as_sam_does() -> None:
    # GIVEN Globals and a function's own values
    global_props = {"Timeout": 3, "Layers": ["A"], "Environment": {"Variables": {"X": "1", "Y": "2"}}}
    local_props = {"Timeout": 9, "Layers": ["B"], "Environment": {"Variables": {"Y": "3"}}}
    # WHEN merged
    merged = merge_globals(global_props, local_props)
    # THEN scalars are the function's, lists are concatenated, maps merge key by key
    assert merged == {"Timeout": 9, "Layers": ["A", "B"], "Environment": {"Variables": {"X": "1", "Y": "3"}}}
    # and an intrinsic is never merged into
    assert merge_globals({"a": 1}, {"Fn::If": ["C", 1, 2]}) == {"Fn::If": ["C", 1, 2]}


def test_the_test_application_environment_resolves_per_mode() -> None:
    # GIVEN the test application's template in both trigger modes
    doc = load_template(APP / "template.yaml")
    created = Template(doc, {"DatastoreId": DATASTORE_ID}, stack_name="st", sqs_endpoint="http://h:1")
    existing = Template(
        doc,
        {"DatastoreId": DATASTORE_ID, "TriggerMode": "ExistingBucket", "ExistingOutputBucketName": "theirs"},
        stack_name="st",
        sqs_endpoint="http://h:1",
    )
    # WHEN the trigger's environment (Globals merged) is resolved
    function = created.resource("JobTriggerFunction")
    env = created.resolve(function.properties["Environment"]["Variables"])
    env_existing = existing.resolve(existing.resource("JobTriggerFunction").properties["Environment"]["Variables"])
    # THEN it has the contract's variables with local values, the function's own variable merged in
    assert set(env) == CONTRACT_ENV | {"TRIGGER_ONLY"}
    assert env["WORK_QUEUE_URL"] == "http://h:1/123456789012/st-WorkQueue"
    assert env["ALERT_TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:st-AlertTopic"
    assert env["PROGRESS_TABLE"] == "st-ProgressTable"
    assert env["OUTPUT_BUCKET"] == "st-output-123456789012"
    assert env["FRAMES_PER_WORK_ITEM"] == "2000"
    # and the mode switches the bucket, the bucket resource and the EventBridge rule
    assert env_existing["OUTPUT_BUCKET"] == "theirs"
    assert "OutputBucket" in created.resources
    assert "OutputBucket" not in existing.resources
    assert "ExistingBucketManifestRule" in existing.resources
    assert "ExistingBucketManifestRule" not in created.resources
