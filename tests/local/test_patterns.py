"""EventBridge pattern matching in the local stack: the rules live in moto's EventBridge, which matches the
events (moto's ``EventPattern``) and hands the matches to the stack; these tests put events through the
running stack and look at which reached the trigger, for the template's own rule shapes and for each matcher.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.stack import LocalStack
from tests.local.conftest import DATASTORE_ID, StackFactory

pytestmark = pytest.mark.integration

TRIGGER = "JobTriggerFunction"

SINGLE_MATCHERS: list[tuple[Any, Any, bool]] = [
    ({"prefix": "import-output/"}, "import-output/x", True),
    ({"prefix": "import-output/"}, "reports/import-output/x", False),
    ({"suffix": ".json"}, "a/job-output-manifest.json", True),
    ({"suffix": ".json"}, "a/success.ndjson", False),
    ({"prefix": {"equals-ignore-case": "IMPORT-"}}, "import-x", True),
    ({"equals-ignore-case": "COMPLETED"}, "completed", True),
    ({"wildcard": "a*c"}, "abbbc", True),
    ({"wildcard": "a*c"}, "abbbd", False),
    ({"wildcard": r"a\*c"}, "a*c", True),
    ({"wildcard": r"a\*c"}, "abc", False),
    ({"anything-but": ["FAILED", "SUBMITTED"]}, "COMPLETED", True),
    ({"anything-but": "COMPLETED"}, "COMPLETED", False),
    ({"anything-but": {"prefix": "tmp/"}}, "tmp/x", False),
    ({"numeric": [">", 0, "<=", 5]}, 5, True),
    ({"numeric": [">", 0, "<=", 5]}, 0, False),
    ({"numeric": [">", 0]}, "5", False),
    ({"cidr": "10.0.0.0/24"}, "10.0.0.1", True),
    ("5", 5, False),
    (5, 5.0, True),
    (True, "true", False),
    (None, None, True),
]


def rules_yaml(patterns: dict[str, Any]) -> str:
    """``AWS::Events::Rule`` resources (JSON is YAML) targeting the trigger, one per pattern."""
    return "".join(
        f"  {name}:\n    Type: AWS::Events::Rule\n    Properties:\n"
        f"      EventPattern: {json.dumps(pattern)}\n"
        "      Targets:\n        - Id: T\n          Arn: !GetAtt JobTriggerFunction.Arn\n"
        for name, pattern in patterns.items()
    )


def with_rules(patterns: dict[str, Any]) -> Any:
    return lambda text: text.replace("Resources:\n", "Resources:\n" + rules_yaml(patterns), 1)


def delivered(stack: LocalStack, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """Put the events on the bus; return those the trigger was invoked with (as delivered)."""
    stack.put_events(*events)
    return [r.event for r in stack.run_until_idle(timeout=30).records if r.function == TRIGGER]


def import_event(**detail: Any) -> dict[str, Any]:
    return {
        "source": "aws.medical-imaging",
        "detail-type": "Import Job Completed",
        "detail": {"datastoreId": DATASTORE_ID, "jobId": "j1", **detail},
    }


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def test_the_import_job_rule_selects_completed_and_failed_jobs_of_the_data_store(make_stack: StackFactory) -> None:
    # GIVEN the template's import-job rule (exact values, a list of detail types, a nested detail field)
    stack = make_stack()
    events = {
        "mine": import_event(jobId="mine"),
        "failed": {**import_event(jobId="failed"), "detail-type": "Import Job Failed"},
        "other": import_event(jobId="other", datastoreId="f" * 32),
        "submitted": {**import_event(jobId="submitted"), "detail-type": "Import Job Submitted"},
        "missing": {"source": "aws.medical-imaging", "detail-type": "Import Job Completed", "detail": {"jobId": "x"}},
    }
    # WHEN they are put on the bus / THEN only the completed and failed jobs of the data store reach the trigger
    got = delivered(stack, *events.values())
    assert sorted(e["detail"]["jobId"] for e in got) == ["failed", "mine"]


def test_the_existing_bucket_rule_matches_the_manifest_under_the_prefix_only(make_stack: StackFactory) -> None:
    # GIVEN the template's existing-bucket rule (bucket name, wildcard on the key)
    stack = make_stack(parameters={"TriggerMode": "ExistingBucket", "ExistingOutputBucketName": "imaging-out"})
    folder = f"import-output/{DATASTORE_ID}-DicomImport-j1/"
    keys = {
        folder + "job-output-manifest.json": True,
        "import-output/a/b/job-output-manifest.json": True,
        folder + "SUCCESS/success.ndjson": False,
        "reports/" + folder + "job-output-manifest.json": False,
    }
    # WHEN Object Created events for those keys, and one for another bucket, are put on the bus
    got = delivered(
        stack,
        *(s3_event("imaging-out", key) for key in keys),
        s3_event("other-bucket", folder + "job-output-manifest.json"),
    )
    # THEN only the manifests below the prefix, in that bucket, reach the trigger
    assert sorted(e["detail"]["object"]["key"] for e in got) == sorted(k for k, hit in keys.items() if hit)
    assert {e["detail"]["bucket"]["name"] for e in got} == {"imaging-out"}


def test_single_matchers(make_stack: StackFactory) -> None:
    # GIVEN one rule per matcher, each on detail.f of its own source
    patterns = {
        f"Case{i}Rule": {"source": [f"case.{i}"], "detail": {"f": [matcher]}}
        for i, (matcher, _, _) in enumerate(SINGLE_MATCHERS)
    }
    stack = make_stack(edit=with_rules(patterns))
    # WHEN each case's value is put on the bus / THEN EventBridge's answer decides whether it arrives
    events = [
        {"source": f"case.{i}", "detail-type": "t", "detail": {"f": value}}
        for i, (_, value, _) in enumerate(SINGLE_MATCHERS)
    ]
    got = {e["source"] for e in delivered(stack, *events)}
    expected = {f"case.{i}" for i, (_, _, hit) in enumerate(SINGLE_MATCHERS) if hit}
    wrong = [SINGLE_MATCHERS[int(s.split(".")[1])] for s in got ^ expected]
    assert not wrong, wrong


def test_exists_arrays_or_and_json_text_patterns(make_stack: StackFactory) -> None:
    # GIVEN rules testing presence, an array field, an $or of alternatives, and a pattern given as JSON text
    patterns: dict[str, Any] = {
        "ExistsRule": {"source": ["exists"], "detail": {"f": [{"exists": True}]}},
        "AbsentRule": {"source": ["absent"], "detail": {"f": [{"exists": False}]}},
        "ArrayRule": {"source": ["array"], "resources": [{"prefix": "arn:aws:s3:::b"}]},
        "OrRule": {
            "source": ["or"],
            "$or": [{"detail": {"size": [{"numeric": [">", 10]}]}}, {"detail": {"tag": ["x"]}}],
        },
        "TextRule": json.dumps({"source": ["text"]}),
    }
    stack = make_stack(edit=with_rules(patterns))

    def event(source: str, n: int, detail: dict[str, Any], resources: list[str] | None = None) -> dict[str, Any]:
        return {"source": source, "detail-type": str(n), "detail": detail, "resources": resources or []}

    # WHEN events for each are put on the bus
    got = delivered(
        stack,
        event("exists", 1, {"f": "x"}),
        event("exists", 2, {}),
        event("absent", 3, {}),
        event("absent", 4, {"f": 1}),
        event("array", 5, {}, ["arn:aws:x", "arn:aws:s3:::b"]),
        event("array", 6, {}, ["arn:aws:x"]),
        event("or", 7, {"size": 11}),
        event("or", 8, {"tag": "x", "size": 1}),
        event("or", 9, {"size": 1}),
        event("text", 10, {}),
    )
    # THEN exists looks at presence only, an array matches when any element does, either alternative suffices
    assert sorted(int(e["detail-type"]) for e in got) == [1, 3, 5, 7, 8, 10]


def test_an_invalid_pattern_fails_the_start(app_dir: Any) -> None:
    # GIVEN a rule whose pattern value is not a list (EventBridge rejects it)
    template = app_dir / "template.yaml"
    template.write_text(with_rules({"BadRule": {"f": "not-a-list"}})(template.read_text(encoding="utf-8")))
    # WHEN the stack starts / THEN moto's EventBridge refuses the rule
    with (
        pytest.raises(ClientError, match="InvalidEventPattern"),
        LocalStack(template, parameters={"DatastoreId": DATASTORE_ID}),
    ):
        pass
