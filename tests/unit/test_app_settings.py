"""The functions' configuration: read from the environment once, every problem named at once."""

from __future__ import annotations

import re

import pytest

from ahi_verify.alert import Deployment
from ahi_verify.app.settings import Settings, SettingsError

DS = "12345678901234567890123456789012"
ENV = {
    "DATASTORE_ID": DS,
    "OUTPUT_BUCKET": "medical-imaging-output",
    "OUTPUT_PREFIX": "job_output/",
    "REPORTS_BUCKET": "ahi-verify-reports-111122223333",
    "REPORTS_PREFIX": "ahi-verify/reports/",
    "WORK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/ahi-verify-work",
    "PROGRESS_TABLE": "ahi-verify-progress",
    "IDEMPOTENCY_TABLE": "ahi-verify-idempotency",
    "ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:ahi-verify-alerts",
    "OPS_TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:ahi-verify-ops",
    "NOTIFY_ON_CLEAN_JOBS": "false",
    "FRAMES_PER_WORK_ITEM": "2000",
    "FRAME_RATE_BUDGET": "300",
    "METADATA_RATE_BUDGET": "10",
    "WORKER_MAXIMUM_CONCURRENCY": "5",
}


def env(**changes: str | None) -> dict[str, str]:
    """ENV with some variables changed; None removes one."""
    result = dict(ENV)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def problems_of(environment: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environment)
    text = str(caught.value)
    assert text.startswith("invalid function configuration: ")
    return text.removeprefix("invalid function configuration: ").split("; ")


def test_complete_environment_gives_typed_settings() -> None:
    # GIVEN every variable the template sets
    # WHEN the settings are read
    settings = Settings.from_env(ENV)
    # THEN every value is typed, and the manifest wait keeps its default
    assert settings == Settings(
        datastore_id=DS,
        output_bucket="medical-imaging-output",
        output_prefix="job_output/",
        reports_bucket="ahi-verify-reports-111122223333",
        reports_prefix="ahi-verify/reports/",
        work_queue_url="https://sqs.us-east-1.amazonaws.com/111122223333/ahi-verify-work",
        progress_table="ahi-verify-progress",
        idempotency_table="ahi-verify-idempotency",
        alert_topic_arn="arn:aws:sns:us-east-1:111122223333:ahi-verify-alerts",
        ops_topic_arn="arn:aws:sns:us-east-1:111122223333:ahi-verify-ops",
        notify_on_clean_jobs=False,
        frames_per_work_item=2000,
        frame_rate_budget=300,
        metadata_rate_budget=10,
        worker_max_concurrency=5,
        manifest_wait_s=30.0,
    )


def test_unrelated_variables_are_ignored() -> None:
    settings = Settings.from_env(env(AWS_LAMBDA_FUNCTION_NAME="trigger", POWERTOOLS_SERVICE_NAME="ahi-verify"))
    assert settings == Settings.from_env(ENV)


def test_the_region_account_and_stack_name_the_alerts_give_are_read() -> None:
    # GIVEN Lambda's AWS_REGION and the template's ACCOUNT_ID and STACK_NAME
    given = env(AWS_REGION="us-gov-west-1", ACCOUNT_ID="111122223333", STACK_NAME="ahi-verify-prod")
    # WHEN the settings are read THEN the alerts' deployment is them
    assert Settings.from_env(given).deployment == Deployment("us-gov-west-1", "111122223333", "ahi-verify-prod")
    # AND without them (a test, a partial environment) the alerts name none: nothing else reads them
    assert Settings.from_env(ENV).deployment == Deployment(None, None, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("AWS_REGION", "us-east-1/../x", id="region"),
        pytest.param("ACCOUNT_ID", "1111-2222-3333", id="account"),
        pytest.param("STACK_NAME", "ahi verify\nSubject: x", id="stack-name"),
    ],
)
def test_a_malformed_deployment_value_is_named(name: str, value: str) -> None:
    assert problems_of(env(**{name: value})) == [f"{name} is malformed"]


def test_every_problem_is_listed_at_once() -> None:
    # GIVEN an environment with several missing and malformed variables
    broken = env(
        DATASTORE_ID=None,
        OUTPUT_BUCKET="Medical_Imaging",
        WORK_QUEUE_URL="sqs://queue",
        ALERT_TOPIC_ARN=None,
        NOTIFY_ON_CLEAN_JOBS="yes",
        FRAMES_PER_WORK_ITEM="0",
        FRAME_RATE_BUDGET="many",
    )
    # WHEN the settings are read THEN one error names each of them
    assert sorted(problems_of(broken)) == sorted(
        [
            "DATASTORE_ID is missing",
            "OUTPUT_BUCKET is malformed",
            "WORK_QUEUE_URL is malformed",
            "ALERT_TOPIC_ARN is missing",
            "NOTIFY_ON_CLEAN_JOBS must be true or false",
            "FRAMES_PER_WORK_ITEM must be an integer >= 1",
            "FRAME_RATE_BUDGET must be an integer >= 1",
        ]
    )


def test_empty_environment_names_every_required_variable() -> None:
    problems = problems_of({})
    named = {re.split(r" ", p, maxsplit=1)[0] for p in problems}
    assert named == {
        "DATASTORE_ID",
        "OUTPUT_BUCKET",
        "OUTPUT_PREFIX",  # may be empty (the whole bucket) but must be set: a forgotten variable is an error
        "REPORTS_BUCKET",
        "REPORTS_PREFIX",
        "WORK_QUEUE_URL",
        "PROGRESS_TABLE",
        "IDEMPOTENCY_TABLE",
        "ALERT_TOPIC_ARN",
        "OPS_TOPIC_ARN",
        "FRAMES_PER_WORK_ITEM",
        "FRAME_RATE_BUDGET",
        "METADATA_RATE_BUDGET",
        "WORKER_MAXIMUM_CONCURRENCY",
    }
    assert "DATASTORE_ID is missing" in problems


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("DATASTORE_ID", DS[:31], id="datastore-id-short"),
        pytest.param("DATASTORE_ID", DS + "0", id="datastore-id-long"),
        pytest.param("DATASTORE_ID", "BBC4F3CCCBAE4095A34170FDDC19B13D", id="datastore-id-upper-case"),
        pytest.param("OUTPUT_BUCKET", "ab", id="bucket-too-short"),
        pytest.param("OUTPUT_BUCKET", "s3://medical-imaging-output", id="bucket-as-uri"),
        pytest.param("OUTPUT_BUCKET", "-bucket", id="bucket-leading-dash"),
        pytest.param("REPORTS_BUCKET", "s3://ahi-verify-reports", id="reports-bucket-as-uri"),
        pytest.param("OUTPUT_PREFIX", "job_output", id="output-prefix-without-slash"),
        pytest.param("REPORTS_PREFIX", "reports", id="reports-prefix-without-slash"),
        pytest.param("WORK_QUEUE_URL", "ahi-verify-work", id="queue-name-not-url"),
        pytest.param("ALERT_TOPIC_ARN", "arn:aws:sqs:us-east-1:111122223333:q", id="arn-of-a-queue"),
        pytest.param("OPS_TOPIC_ARN", "ahi-verify-ops", id="ops-topic-name-not-arn"),
    ],
)
def test_malformed_value_is_named(name: str, value: str) -> None:
    assert problems_of(env(**{name: value})) == [f"{name} is malformed"]


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("arn:aws:sns:us-east-1:111122223333:t", id="aws"),
        pytest.param("arn:aws-us-gov:sns:us-gov-west-1:111122223333:t", id="govcloud"),
        pytest.param("arn:aws-cn:sns:cn-north-1:111122223333:t", id="china"),
    ],
)
def test_topic_arns_of_every_partition_are_accepted(arn: str) -> None:
    assert Settings.from_env(env(ALERT_TOPIC_ARN=arn)).alert_topic_arn == arn


@pytest.mark.parametrize(
    ("reports", "output"),
    [
        pytest.param("job_output/reports/", "job_output/", id="nested-under-output"),
        pytest.param("job_output/", "job_output/", id="same-as-output"),
    ],
)
def test_reports_under_the_watched_output_prefix_are_rejected(reports: str, output: str) -> None:
    # GIVEN reports configured into the output bucket, under the watched prefix
    same_bucket = env(REPORTS_BUCKET=ENV["OUTPUT_BUCKET"], REPORTS_PREFIX=reports, OUTPUT_PREFIX=output)
    # WHEN the settings are read THEN the loop risk is named
    assert problems_of(same_bucket) == [
        "REPORTS_PREFIX must not lie under OUTPUT_PREFIX (reports would re-trigger the function)"
    ]
    # AND in a bucket of their own (the template's ReportsBucket, which nothing watches) the prefixes may agree
    assert Settings.from_env(env(REPORTS_PREFIX=reports, OUTPUT_PREFIX=output)).reports_prefix == reports


@pytest.mark.parametrize(
    ("reports", "output"),
    [
        pytest.param("job_output_reports/", "job_output/", id="sibling-sharing-a-name-prefix"),
        pytest.param("imports/", "imports/job_output/", id="reports-is-a-parent"),
    ],
)
def test_reports_beside_the_output_prefix_are_accepted(reports: str, output: str) -> None:
    settings = Settings.from_env(env(REPORTS_PREFIX=reports, OUTPUT_PREFIX=output))
    assert (settings.reports_prefix, settings.output_prefix) == (reports, output)


def test_empty_output_prefix_means_the_whole_bucket() -> None:
    # GIVEN an import output written at the bucket root (empty prefix)
    settings = Settings.from_env(env(OUTPUT_PREFIX=""))
    # THEN it is accepted, and the reports prefix is not compared with it
    assert (settings.output_prefix, settings.reports_prefix) == ("", "ahi-verify/reports/")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("TRUE", True, id="upper-case-true"),
        pytest.param("True", True, id="title-case-true"),
        pytest.param("false", False, id="false"),
        pytest.param("False", False, id="title-case-false"),
        pytest.param(None, False, id="absent-means-false"),
    ],
)
def test_notify_on_clean_jobs_flag(value: str | None, expected: bool) -> None:
    assert Settings.from_env(env(NOTIFY_ON_CLEAN_JOBS=value)).notify_on_clean_jobs is expected


@pytest.mark.parametrize("value", ["1", "0", "yes", "on", "", " true", "true "])
def test_notify_on_clean_jobs_accepts_only_true_or_false(value: str) -> None:
    assert problems_of(env(NOTIFY_ON_CLEAN_JOBS=value)) == ["NOTIFY_ON_CLEAN_JOBS must be true or false"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1", 1, id="minimum"),
        pytest.param("007", 7, id="leading-zeros"),
        pytest.param("100000", 100000, id="large"),
    ],
)
def test_numbers_are_parsed(value: str, expected: int) -> None:
    settings = Settings.from_env(env(FRAMES_PER_WORK_ITEM=value, FRAME_RATE_BUDGET=value))
    assert (settings.frames_per_work_item, settings.frame_rate_budget) == (expected, expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0", id="zero"),
        pytest.param("-4", id="negative"),
        pytest.param("2.5", id="fraction"),
        pytest.param("1e3", id="exponent"),
        pytest.param(" 8", id="leading-space"),
        pytest.param("", id="empty"),
        pytest.param("eight", id="word"),
    ],
)
def test_bad_numbers_are_named(value: str) -> None:
    assert sorted(problems_of(env(FRAMES_PER_WORK_ITEM=value, FRAME_RATE_BUDGET=value))) == [
        "FRAMES_PER_WORK_ITEM must be an integer >= 1",
        "FRAME_RATE_BUDGET must be an integer >= 1",
    ]


def test_settings_are_immutable() -> None:
    settings = Settings.from_env(ENV)
    with pytest.raises(AttributeError):
        settings.datastore_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("memory", "budget"),
    [
        pytest.param(None, 200 * 1024 * 1024, id="outside-lambda-default"),
        pytest.param("1769", 1769 * 1024 * 1024 * 2 // 5, id="one-vcpu"),
        pytest.param("10240", 4096 * 1024 * 1024, id="maximum-memory"),
        pytest.param("128", 128 * 1024 * 1024 * 2 // 5, id="minimum-memory"),
    ],
)
def test_memory_budget_is_forty_percent_of_the_function_memory(memory: str | None, budget: int) -> None:
    # GIVEN the memory size Lambda sets in the function's environment (or none, outside Lambda)
    settings = Settings.from_env(env(AWS_LAMBDA_FUNCTION_MEMORY_SIZE=memory))
    # THEN frames in flight may use 40 % of it
    assert settings.memory_budget_bytes == budget
