"""EventBridge pattern matching (rules and SQS FilterCriteria), including the template's own rule shapes."""

from __future__ import annotations

from typing import Any

import pytest

from local.patterns import PatternError, matches

IMPORT_RULE = {
    "source": ["aws.medical-imaging"],
    "detail-type": ["Import Job Completed", "Import Job Failed"],
    "detail": {"datastoreId": ["0123456789abcdef0123456789abcdef"]},
}
MANIFEST_RULE = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {
        "bucket": {"name": ["imaging-out"]},
        "object": {"key": [{"wildcard": "import-output/*job-output-manifest.json"}]},
    },
}


def import_event(**detail: Any) -> dict[str, Any]:
    return {
        "source": "aws.medical-imaging",
        "detail-type": "Import Job Completed",
        "detail": {"datastoreId": "0123456789abcdef0123456789abcdef", "jobId": "j1", **detail},
    }


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": bucket}, "object": {"key": key}},
    }


def test_exact_values_and_nested_detail_select_the_data_store() -> None:
    # GIVEN the import-job rule and events for its data store and for another one
    mine, other = import_event(), import_event(datastoreId="f" * 32)
    submitted = {**import_event(), "detail-type": "Import Job Submitted"}
    # WHEN they are matched / THEN only the completed job of the data store matches
    assert matches(IMPORT_RULE, mine)
    assert not matches(IMPORT_RULE, other)
    assert not matches(IMPORT_RULE, submitted)


def test_a_field_missing_from_the_event_does_not_match() -> None:
    # GIVEN an event without the nested field the pattern names
    event = {"source": "aws.medical-imaging", "detail-type": "Import Job Completed", "detail": {}}
    # WHEN / THEN
    assert not matches(IMPORT_RULE, event)
    assert not matches(IMPORT_RULE, {"source": "aws.medical-imaging", "detail-type": "Import Job Completed"})


def test_wildcard_matches_the_manifest_under_the_prefix_only() -> None:
    # GIVEN the existing-bucket rule
    folder = "import-output/0123456789abcdef0123456789abcdef-DicomImport-j1/"
    # WHEN / THEN the manifest (at any depth below the prefix) matches; other objects and buckets do not
    assert matches(MANIFEST_RULE, s3_event("imaging-out", folder + "job-output-manifest.json"))
    assert matches(MANIFEST_RULE, s3_event("imaging-out", "import-output/a/b/job-output-manifest.json"))
    assert not matches(MANIFEST_RULE, s3_event("imaging-out", folder + "SUCCESS/success.ndjson"))
    assert not matches(MANIFEST_RULE, s3_event("imaging-out", "reports/" + folder + "job-output-manifest.json"))
    assert not matches(MANIFEST_RULE, s3_event("other-bucket", folder + "job-output-manifest.json"))


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
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
        ("5", 5, False),
        (5, 5.0, True),
        (True, "true", False),
        (None, None, True),
    ],
)
def test_single_matchers(matcher: Any, value: Any, expected: bool) -> None:
    # GIVEN a pattern with one matcher on one field / WHEN a value is matched / THEN EventBridge's answer
    assert matches({"f": [matcher]}, {"f": value}) is expected


def test_exists_and_arrays() -> None:
    # GIVEN patterns testing presence, and an event field holding an array
    # WHEN / THEN exists looks at presence only; an array matches when any element does
    assert matches({"f": [{"exists": True}]}, {"f": "x"})
    assert not matches({"f": [{"exists": True}]}, {})
    assert matches({"f": [{"exists": False}]}, {})
    assert not matches({"f": [{"exists": False}]}, {"f": 1})
    assert matches({"resources": [{"prefix": "arn:aws:s3:::b"}]}, {"resources": ["arn:aws:x", "arn:aws:s3:::b"]})


def test_or_of_patterns() -> None:
    # GIVEN an $or of two alternatives
    pattern = {
        "source": ["aws.s3"],
        "$or": [{"detail": {"size": [{"numeric": [">", 10]}]}}, {"detail": {"tag": ["x"]}}],
    }
    # WHEN / THEN either alternative suffices, neither fails
    assert matches(pattern, {"source": "aws.s3", "detail": {"size": 11}})
    assert matches(pattern, {"source": "aws.s3", "detail": {"tag": "x", "size": 1}})
    assert not matches(pattern, {"source": "aws.s3", "detail": {"size": 1}})


def test_a_json_string_pattern_is_accepted_and_unknown_matchers_fail_loudly() -> None:
    # GIVEN a pattern as the JSON text a template may hold, and one using a matcher the runner lacks
    # WHEN / THEN the first works and the second raises instead of silently not matching
    assert matches('{"source": ["aws.s3"]}', {"source": "aws.s3"})
    with pytest.raises(PatternError, match="cidr"):
        matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.1"})
    with pytest.raises(PatternError):
        matches({"f": "not-a-list"}, {"f": "not-a-list"})
