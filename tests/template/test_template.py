"""template.yaml, as CloudFormation after the SAM translator: least privilege, encryption, triggers, contract.

GIVEN template.yaml WHEN the SAM translator turns it into CloudFormation (offline, fixture ``cfn``) THEN the
deployed stack would grant only what the functions need, encrypt and dead-letter what it stores and queues,
wire all three triggers to the job trigger, and expose the names the functions and the other engineers rely on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.persistence import dynamodb as powertools_dynamodb

from ahi_verify import dynamo_ledger
from ahi_verify.app import progress
from tests.template.conftest import DATASTORE_ID

Template = dict[str, Any]
Statement = dict[str, Any]

FUNCTIONS = ("JobTriggerFunction", "ImageSetWorkerFunction", "DeadLetterRecorderFunction")
BUCKET_NAME = "${AWS::StackName}-output-${AWS::AccountId}-${AWS::Region}"
DATASTORE_ARN = "arn:${AWS::Partition}:medical-imaging:${AWS::Region}:${AWS::AccountId}:datastore/${DatastoreId}"
#: Actions AWS authorises only on Resource "*" (no resource-level permissions).
STAR_RESOURCE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
RESOURCE_POLICY_TYPES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
}
ENVIRONMENT = {
    "ACCOUNT_ID",
    "STACK_NAME",
    "DATASTORE_ID",
    "OUTPUT_BUCKET",
    "OUTPUT_PREFIX",
    "REPORTS_BUCKET",
    "REPORTS_PREFIX",
    "WORK_QUEUE_URL",
    "PROGRESS_TABLE",
    "IDEMPOTENCY_TABLE",
    "LEDGER_TABLE",
    "ALERT_TOPIC_ARN",
    "OPS_TOPIC_ARN",
    "NOTIFY_ON_CLEAN_JOBS",
    "FRAMES_PER_WORK_ITEM",
    "FRAME_RATE_BUDGET",
    "METADATA_RATE_BUDGET",
    "WORKER_MAXIMUM_CONCURRENCY",
    "WORK_MAX_RECEIVE_COUNT",
    "JOB_DEADLINE_S",
    "SOURCE_BUCKET",
    "AUDIT_QUEUE_URL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
}
FOURTEEN_DAYS = 14 * 24 * 3600
#: Matches whatever stands at its place in a compared structure (the bucket choice of an Fn::Sub).
ANY: Any = object()


# --- helpers -------------------------------------------------------------------------------------------------


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def of_type(cfn: Template, type_: str) -> dict[str, Any]:
    return {name: r for name, r in cfn["Resources"].items() if r["Type"] == type_}


def sub_text(value: Any) -> str | None:
    """The format string of an Fn::Sub (short or long form), else None."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return None


def role_of(cfn: Template, function: str) -> str:
    role = cfn["Resources"][function]["Properties"]["Role"]
    assert isinstance(role, dict), f"{function} has a literal role ARN"
    assert "Fn::GetAtt" in role, f"{function} does not use a role of this template"
    name: str = role["Fn::GetAtt"][0]
    return name


def either_branch(statements: list[Any]) -> list[Statement]:
    """Statements with each ``Fn::If [condition, statement, AWS::NoValue]`` replaced by what it may grant: a
    least-privilege check must hold whichever way the condition goes."""
    out = []
    for s in statements:
        if isinstance(s, dict) and set(s) == {"Fn::If"}:
            out += [b for b in s["Fn::If"][1:] if b != {"Ref": "AWS::NoValue"}]
        else:
            out.append(s)
    return out


def role_statements(cfn: Template, role: str) -> list[Statement]:
    props = cfn["Resources"][role]["Properties"]
    return [
        s for policy in props.get("Policies", []) for s in either_branch(listed(policy["PolicyDocument"]["Statement"]))
    ]


def function_statements(cfn: Template, function: str) -> list[Statement]:
    return role_statements(cfn, role_of(cfn, function))


def grants(statements: list[Statement], action: str) -> list[Statement]:
    return [s for s in statements if s["Effect"] == "Allow" and action in listed(s["Action"])]


def all_policy_statements(cfn: Template) -> Iterator[tuple[str, str, Statement]]:
    """(resource, kind, statement) for every IAM role policy and resource policy of the stack."""
    for name in of_type(cfn, "AWS::IAM::Role"):
        for statement in role_statements(cfn, name):
            yield name, "role", statement
    for type_, key in RESOURCE_POLICY_TYPES.items():
        for name, resource in of_type(cfn, type_).items():
            for statement in listed(resource["Properties"][key]["Statement"]):
                yield name, type_, statement


def wildcard_violations(cfn: Template) -> list[str]:
    """Allow statements that grant an action pattern, or Resource "*" outside the documented exceptions."""
    problems = []
    for name, kind, s in all_policy_statements(cfn):
        if s["Effect"] != "Allow":
            continue  # Deny statements (TLS only) deny a whole service on purpose
        actions = listed(s["Action"])
        if kind == "AWS::KMS::Key" and s.get("Sid") == "EnableIamPolicies":
            # The default key policy: the account governs its key through IAM. Only the account root, only here.
            root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
            if s["Principal"] != {"AWS": root} or actions != ["kms:*"]:
                problems.append(f"{name}: key administration statement changed: {s}")
            continue
        problems += [f"{name} ({kind}): action pattern {a!r}" for a in actions if "*" in a]
        if "*" in listed(s.get("Resource", [])) and kind == "role" and not set(actions) <= STAR_RESOURCE_ACTIONS:
            problems.append(f"{name}: Resource '*' for {actions}")
    return problems


# --- least privilege ---------------------------------------------------------------------------------------


def test_every_function_has_an_explicit_role_without_managed_policies(cfn: Template) -> None:
    functions = of_type(cfn, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS)
    roles = {role_of(cfn, f) for f in FUNCTIONS}
    assert roles == {"JobTriggerRole", "ImageSetWorkerRole", "DeadLetterRecorderRole"}
    assert set(of_type(cfn, "AWS::IAM::Role")) == roles, "a role SAM generated (with AWS-managed policies)"
    for role in roles:
        props = cfn["Resources"][role]["Properties"]
        # AWSLambdaBasicExecutionRole, AWSLambdaSQSQueueExecutionRole, AWSXrayWriteOnlyAccess grant on "*".
        assert not props.get("ManagedPolicyArns"), f"{role} attaches managed policies"
        trust = listed(props["AssumeRolePolicyDocument"]["Statement"])
        assert trust == [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]


def test_no_policy_grants_an_action_pattern_or_resource_star(cfn: Template) -> None:
    assert wildcard_violations(cfn) == []
    # The exceptions are exactly the documented ones: X-Ray (no resource-level permissions) in each role.
    star = [(n, s["Action"]) for n, kind, s in all_policy_statements(cfn) if kind == "role" and s["Resource"] == "*"]
    assert sorted(star) == [
        ("DeadLetterRecorderRole", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]),
        ("ImageSetWorkerRole", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]),
        ("JobTriggerRole", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]),
    ]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": ["s3:Get*"], "Resource": "arn:aws:s3:::b/*"}, "action pattern 's3:Get*'"),
        ({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}, "Resource '*'"),
    ],
)
def test_the_wildcard_check_catches_a_broad_grant(cfn: Template, statement: Statement, expected: str) -> None:
    """GIVEN one broad statement slipped into a role THEN the check above would fail on it."""
    broken = json.loads(json.dumps(cfn))
    broken["Resources"]["JobTriggerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(statement)
    problems = wildcard_violations(broken)
    assert len(problems) == 1
    assert expected in problems[0]


def test_medical_imaging_is_scoped_to_the_datastore(cfn: Template) -> None:
    by_function = {}
    for function in FUNCTIONS:
        statements = [
            s for s in function_statements(cfn, function) if any(a.startswith("medical-imaging:") for a in s["Action"])
        ]
        by_function[function] = sorted(a for s in statements for a in s["Action"])
        for s in statements:
            for resource in listed(s["Resource"]):
                assert sub_text(resource) in (DATASTORE_ARN, DATASTORE_ARN + "/imageset/*"), resource
    assert by_function == {
        "JobTriggerFunction": [
            "medical-imaging:GetDICOMImportJob",
            "medical-imaging:GetImageSet",  # an image set event's current version
            "medical-imaging:ListDICOMImportJobs",
            "medical-imaging:ListImageSetVersions",
            "medical-imaging:SearchImageSets",  # the audit walk
        ],
        "ImageSetWorkerFunction": [
            "medical-imaging:GetDatastore",  # the data store's lossless storage format
            "medical-imaging:GetImageFrame",
            "medical-imaging:GetImageSet",  # was an image set whose frames are gone deleted?
            "medical-imaging:GetImageSetMetadata",
        ],
        "DeadLetterRecorderFunction": [],  # it records and finalises; it reads nothing of HealthImaging
    }
    worker = grants(function_statements(cfn, "ImageSetWorkerFunction"), "medical-imaging:GetImageFrame")
    assert [sub_text(r) for r in listed(worker[0]["Resource"])] == [DATASTORE_ARN, DATASTORE_ARN + "/imageset/*"]
    # GetDatastore reads the data store itself, never an image set
    (datastore,) = grants(function_statements(cfn, "ImageSetWorkerFunction"), "medical-imaging:GetDatastore")
    assert [sub_text(r) for r in listed(datastore["Resource"])] == [DATASTORE_ARN]


SOURCE_FILES = "arn:${AWS::Partition}:s3:::${SourceBucketName}/*"


OUTPUT_OBJECTS = "arn:${AWS::Partition}:s3:::${Bucket}/"
REPORT_OBJECTS = "${ReportsBucket.Arn}/"


def _s3_object_grants(cfn: Template, function: str) -> dict[tuple[str, str], set[str]]:
    """(bucket, action) -> key patterns for s3 object actions, bucket "output" or "reports"; the source bucket
    grant of the three-way check is checked on its own (test_source_files_are_readable_only_when_the_check_is_on)."""
    found: dict[tuple[str, str], set[str]] = {}
    for s in function_statements(cfn, function):
        if s.get("Sid") == "ReadSourceFiles":
            continue
        for action in (a for a in s["Action"] if a.startswith("s3:") and a != "s3:ListBucket"):
            for resource in listed(s["Resource"]):
                text = sub_text(resource)
                assert text is not None, resource
                for bucket, start in (("output", OUTPUT_OBJECTS), ("reports", REPORT_OBJECTS)):
                    if text.startswith(start):
                        found.setdefault((bucket, action), set()).add(text.removeprefix(start))
                        break
                else:
                    raise AssertionError(f"{function}: {action} on {text}, neither the output nor the reports bucket")
    return found


def test_s3_object_access_is_limited_to_the_output_and_reports_prefixes(cfn: Template) -> None:
    assert _s3_object_grants(cfn, "JobTriggerFunction") == {
        ("output", "s3:GetObject"): {"${OutputPrefix}*"},
        ("reports", "s3:GetObject"): {"${ReportsPrefix}*"},
        ("reports", "s3:PutObject"): {"${ReportsPrefix}*"},
    }
    # The worker never touches the import output: only its reports. Neither function may delete anything.
    assert _s3_object_grants(cfn, "ImageSetWorkerFunction") == {
        ("reports", "s3:GetObject"): {"${ReportsPrefix}*"},
        ("reports", "s3:PutObject"): {"${ReportsPrefix}*"},
    }


def test_source_files_are_readable_only_when_the_check_is_on(cfn: Template) -> None:
    # GIVEN the worker's policy: the one statement that reads outside the output and reports buckets
    policy = cfn["Resources"]["ImageSetWorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    (conditional,) = [s for s in policy if set(s) == {"Fn::If"} and s["Fn::If"][0] != "HasReportsKmsKey"]
    condition, grant, otherwise = conditional["Fn::If"]
    # THEN it exists only under CheckAgainstSource (SourceBucketName set), reads objects of that bucket only
    assert condition == "CheckAgainstSource"
    assert cfn["Conditions"]["CheckAgainstSource"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SourceBucketName"}, ""]}]}
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert (grant["Sid"], grant["Effect"], grant["Action"]) == ("ReadSourceFiles", "Allow", ["s3:GetObject"])
    assert sub_text(grant["Resource"]) == SOURCE_FILES
    # AND the trigger never reads source files (it only lists them from the ndjson lines)
    assert all(s.get("Sid") != "ReadSourceFiles" for s in function_statements(cfn, "JobTriggerFunction"))
    for function in FUNCTIONS:
        env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["SOURCE_BUCKET"] == {"Ref": "SourceBucketName"}


def test_list_bucket_carries_a_prefix_condition(cfn: Template) -> None:
    output_bucket = {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${Bucket}", ANY]}
    reports_bucket = {"Fn::GetAtt": ["ReportsBucket", "Arn"]}
    expected = {
        "JobTriggerFunction": [(output_bucket, ["${OutputPrefix}*"]), (reports_bucket, ["${ReportsPrefix}*"])],
        "ImageSetWorkerFunction": [(reports_bucket, ["${ReportsPrefix}*"])],
    }
    for function, buckets in expected.items():
        statements = grants(function_statements(cfn, function), "s3:ListBucket")
        found = []
        for s in statements:
            condition = s["Condition"]
            assert list(condition) == ["StringLike"]
            resource = s["Resource"]
            if "Fn::Sub" in resource:
                resource = {"Fn::Sub": [resource["Fn::Sub"][0], ANY]}
            found.append((resource, [sub_text(p) for p in listed(condition["StringLike"]["s3:prefix"])]))
        assert found == buckets, function


def test_every_reference_to_the_bucket_uses_the_bucket_s_own_name(cfn: Template) -> None:
    """The bucket is named, not referenced, from the functions (circularity): the strings must agree."""
    bucket = cfn["Resources"]["OutputBucket"]["Properties"]
    assert sub_text(bucket["BucketName"]) == BUCKET_NAME
    expected_choice = {"Fn::If": ["CreateOutputBucket", {"Fn::Sub": BUCKET_NAME}, {"Ref": "ExistingOutputBucketName"}]}
    for function in FUNCTIONS:
        env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["OUTPUT_BUCKET"] == expected_choice
        for s in function_statements(cfn, function):
            for resource in listed(s["Resource"]):
                if "${Bucket}" in (sub_text(resource) or ""):
                    assert resource["Fn::Sub"][1] == {"Bucket": expected_choice}, resource
    permission = cfn["Resources"]["JobTriggerS3Permission"]["Properties"]
    assert sub_text(permission["SourceArn"]) == "arn:${AWS::Partition}:s3:::" + BUCKET_NAME


WORK_QUEUE_ARN = {"Fn::GetAtt": ["WorkQueue", "Arn"]}
AUDIT_QUEUE_ARN = {"Fn::GetAtt": ["AuditQueue", "Arn"]}


def test_the_functions_publish_only_to_the_encrypted_topics_they_use(cfn: Template) -> None:
    for function in FUNCTIONS:
        statements = function_statements(cfn, function)
        # the recorder finalises jobs (their alerts); overdue-job messages come from the trigger's sweep
        topics = [{"Ref": "AlertTopic"}] + ([] if function == "DeadLetterRecorderFunction" else [{"Ref": "OpsTopic"}])
        assert [s["Resource"] for s in grants(statements, "sns:Publish")] == topics
        # the one key of both topics; the reports key (only with ReportsKmsKeyArn) is checked on its own
        kms = [s for s in grants(statements, "kms:GenerateDataKey") if s.get("Sid") != "EncryptReports"]
        assert [s["Resource"] for s in kms] == [{"Fn::GetAtt": ["AlertTopicKey", "Arn"]}]
        assert set(kms[0]["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
        for topic in ("AlertTopic", "OpsTopic"):
            assert cfn["Resources"][topic]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlertTopicKey", "Arn"]}
    sends = {f: [s["Resource"] for s in grants(function_statements(cfn, f), "sqs:SendMessage")] for f in FUNCTIONS}
    assert sends == {
        # the trigger's second queue is its OnFailure destination: Lambda sends the record with the function's role
        # the work queue and the audit queue in one statement (an audit's items, splits and hand-backs)
        "JobTriggerFunction": [[WORK_QUEUE_ARN, AUDIT_QUEUE_ARN], {"Fn::GetAtt": ["TriggerFailureQueue", "Arn"]}],
        "ImageSetWorkerFunction": [[WORK_QUEUE_ARN, AUDIT_QUEUE_ARN]],
        # a dead-lettered whole-set message of a split image set queues its other ranges again
        "DeadLetterRecorderFunction": [{"Fn::GetAtt": ["WorkQueue", "Arn"]}],
    }


def test_each_function_writes_only_its_own_log_group(cfn: Template) -> None:
    for function, group in (
        ("JobTriggerFunction", "JobTriggerLogGroup"),
        ("ImageSetWorkerFunction", "ImageSetWorkerLogGroup"),
        ("DeadLetterRecorderFunction", "DeadLetterRecorderLogGroup"),
    ):
        props = cfn["Resources"][function]["Properties"]
        assert props["LoggingConfig"] == {"LogGroup": {"Ref": group}}
        logs = [s for s in function_statements(cfn, function) if any(a.startswith("logs:") for a in s["Action"])]
        assert len(logs) == 1
        assert logs[0]["Resource"] == {"Fn::GetAtt": [group, "Arn"]}
        assert "logs:CreateLogGroup" not in logs[0]["Action"]
        assert cfn["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}


def test_dynamodb_grants_name_the_tables(cfn: Template) -> None:
    trigger = function_statements(cfn, "JobTriggerFunction")
    worker = function_statements(cfn, "ImageSetWorkerFunction")
    assert {json.dumps(s["Resource"]) for s in grants(trigger, "dynamodb:PutItem")} == {
        json.dumps({"Fn::GetAtt": ["ProgressTable", "Arn"]}),
        json.dumps({"Fn::GetAtt": ["IdempotencyTable", "Arn"]}),
    }
    assert [s["Resource"] for s in grants(worker, "dynamodb:UpdateItem")] == [{"Fn::GetAtt": ["ProgressTable", "Arn"]}]
    # IAM has no TransactWriteItems action: a transaction is authorised per item (Put -> PutItem, Update ->
    # UpdateItem); app/progress.py's transactions hold only those two. Only the trigger (the reconciliation)
    # queries and deletes, and only in the open-run index partition.
    for statements in (trigger, worker):
        progress_grants = [s for s in statements if s["Resource"] == {"Fn::GetAtt": ["ProgressTable", "Arn"]}]
        unconditioned = [s for s in progress_grants if "Condition" not in s]
        (items,) = unconditioned
        assert sorted(items["Action"]) == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    (open_runs,) = [
        s for s in trigger if s["Resource"] == {"Fn::GetAtt": ["ProgressTable", "Arn"]} and "Condition" in s
    ]
    assert sorted(open_runs["Action"]) == ["dynamodb:DeleteItem", "dynamodb:Query"]
    assert open_runs["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["OPEN#runs"]}}
    assert not [s for s in worker if "dynamodb:Query" in listed(s["Action"])]


# --- encryption, TLS, dead letters ------------------------------------------------------------------------------


def test_the_alert_topic_is_encrypted_with_a_key_cloudwatch_alarms_can_use(cfn: Template) -> None:
    topic = cfn["Resources"]["AlertTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlertTopicKey", "Arn"]}
    key = cfn["Resources"]["AlertTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [
        s for s in key["KeyPolicy"]["Statement"] if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(cloudwatch) == 1
    assert set(cloudwatch[0]["Action"]) == {"kms:GenerateDataKey", "kms:Decrypt"}
    policy = cfn["Resources"]["AlertTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "AlertTopic"}]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    deny = statements["DenyInsecurePublish"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    allow = statements["CloudWatchAlarmsPublish"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish"
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_every_queue_is_encrypted_and_the_work_queue_dead_letters(cfn: Template) -> None:
    queues = of_type(cfn, "AWS::SQS::Queue")
    assert set(queues) == {"WorkQueue", "AuditQueue", "WorkDeadLetterQueue", "TriggerFailureQueue"}
    for name, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, f"{name} is not encrypted"
        assert props["MessageRetentionPeriod"] == FOURTEEN_DAYS
    work = queues["WorkQueue"]["Properties"]
    assert work["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "WorkMaxReceiveCount"},
    }
    # the worker's last-delivery rule reads the same parameter, so the two can never drift apart
    worker_env = cfn["Globals"]["Function"]["Environment"]["Variables"] if "Globals" in cfn else None
    if worker_env is None:
        worker_env = cfn["Resources"]["ImageSetWorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert worker_env["WORK_MAX_RECEIVE_COUNT"] == {"Ref": "WorkMaxReceiveCount"}
    worker_timeout = cfn["Resources"]["ImageSetWorkerFunction"]["Properties"]["Timeout"]
    assert work["VisibilityTimeout"] >= 6 * worker_timeout
    # audit items dead-letter like work items, to the queue the recorder reads
    audit = queues["AuditQueue"]["Properties"]
    assert audit["RedrivePolicy"] == work["RedrivePolicy"]
    assert audit["VisibilityTimeout"] == work["VisibilityTimeout"]
    assert "RedrivePolicy" not in queues["WorkDeadLetterQueue"]["Properties"]
    assert "RedrivePolicy" not in queues["TriggerFailureQueue"]["Properties"]


def test_the_queue_policy_denies_insecure_transport_on_every_queue(cfn: Template) -> None:
    props = cfn["Resources"]["WorkQueuePolicy"]["Properties"]
    queues = ("WorkQueue", "WorkDeadLetterQueue", "TriggerFailureQueue", "AuditQueue")
    assert set(of_type(cfn, "AWS::SQS::QueuePolicy")) == {"WorkQueuePolicy"}
    assert props["Queues"] == [{"Ref": q} for q in queues]
    [deny] = props["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sqs:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": [q, "Arn"]} for q in queues]


def test_the_dynamodb_tables_are_encrypted_on_demand_and_expire_items(cfn: Template) -> None:
    tables = of_type(cfn, "AWS::DynamoDB::Table")
    assert set(tables) == {"ProgressTable", "IdempotencyTable", "LedgerTable"}
    expected = {
        "ProgressTable": ([("pk", "HASH"), ("sk", "RANGE")], "expires_at"),
        "IdempotencyTable": ([("id", "HASH")], "expiration"),
        "LedgerTable": ([("pk", "HASH"), ("sk", "RANGE")], None),
    }
    for name, (keys, ttl) in expected.items():
        props = tables[name]["Properties"]
        assert props["SSESpecification"] == {"SSEEnabled": True}
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]] == keys
        assert {a["AttributeType"] for a in props["AttributeDefinitions"]} == {"S"}
        if ttl is None:  # the ledger is audit evidence: nothing in it expires
            assert "TimeToLiveSpecification" not in props
        else:
            assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}
    for name in ("ProgressTable", "LedgerTable"):
        assert tables[name]["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    [index] = tables["LedgerTable"]["Properties"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_verdict"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("dv", "HASH"),
        ("verified_at", "RANGE"),
    ]


def test_the_output_bucket_is_private_encrypted_and_tls_only(cfn: Template) -> None:
    bucket = cfn["Resources"]["OutputBucket"]
    props = bucket["Properties"]
    assert bucket["Condition"] == "CreateOutputBucket"
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert rule["BucketKeyEnabled"] is True
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    policy = cfn["Resources"]["OutputBucketPolicy"]
    assert policy["Condition"] == "CreateOutputBucket"
    [deny] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"]) == ("Deny", "*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["OutputBucket", "Arn"]}, {"Fn::Sub": "${OutputBucket.Arn}/*"}]


# --- the worker and the triggers ------------------------------------------------------------------------------


def test_the_worker_consumes_the_work_queue_one_item_at_a_time_with_bounded_concurrency(cfn: Template) -> None:
    mappings = of_type(cfn, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 3  # the work queue's, the audit queue's (below), and the dead-letter queue's
    [props] = [
        m["Properties"] for m in mappings.values() if m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] == "WorkQueue"
    ]
    assert props["FunctionName"] == {"Ref": "ImageSetWorkerFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert props["BatchSize"] == 1
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaximumConcurrency"}}
    parameter = cfn["Parameters"]["WorkerMaximumConcurrency"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (
        "Number",
        5,
        2,
        1000,
    )
    assert "does not set the request rate" in parameter["Description"]
    worker = cfn["Resources"]["ImageSetWorkerFunction"]["Properties"]
    assert (worker["Handler"], worker["Timeout"]) == ("image_set_worker.handler", 900)
    assert worker["MemorySize"] == {"Ref": "WorkerMemorySize"}
    # audits: the same worker on the audit queue, at most 2 at once (SQS's minimum), so an audit holds at most
    # 2 of the WorkerMaximumConcurrency + 2 shares of the request-rate budget while imports are verified
    [audit] = [
        m["Properties"] for m in mappings.values() if m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] == "AuditQueue"
    ]
    assert audit["FunctionName"] == {"Ref": "ImageSetWorkerFunction"}
    assert (audit["BatchSize"], audit["ScalingConfig"]) == (1, {"MaximumConcurrency": 2})
    assert audit["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    consume = grants(function_statements(cfn, "ImageSetWorkerFunction"), "sqs:ReceiveMessage")
    assert [s["Resource"] for s in consume] == [[WORK_QUEUE_ARN, AUDIT_QUEUE_ARN]]
    assert {"sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"} <= set(consume[0]["Action"])


def test_every_dead_letter_is_recorded_by_a_function_without_codecs(cfn: Template) -> None:
    # GIVEN the mapping on the dead-letter queue
    [mapping] = [
        m["Properties"]
        for m in of_type(cfn, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]}
    ]
    # THEN it feeds the recorder, which reports failures per message (an unrecorded one stays in the queue)
    assert mapping["FunctionName"] == {"Ref": "DeadLetterRecorderFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    recorder = cfn["Resources"]["DeadLetterRecorderFunction"]["Properties"]
    assert recorder["Handler"] == "dead_letter_recorder.handler"
    assert [next(iter(layer.values())) for layer in recorder["Layers"]] == [
        name for name in cfn["Resources"] if name.startswith("CoreLayer")
    ]
    consume = grants(function_statements(cfn, "DeadLetterRecorderFunction"), "sqs:ReceiveMessage")
    assert [s["Resource"] for s in consume] == [{"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]}]


def _invokes_job_trigger(target_or_function: Any) -> bool:
    return target_or_function in ({"Fn::GetAtt": ["JobTriggerFunction", "Arn"]}, {"Ref": "JobTriggerFunction"})


def _permission_for(cfn: Template, principal: str, source_arn: Any) -> list[str]:
    return [
        name
        for name, p in of_type(cfn, "AWS::Lambda::Permission").items()
        if p["Properties"]["Principal"] == principal
        and p["Properties"]["SourceArn"] == source_arn
        and _invokes_job_trigger(p["Properties"]["FunctionName"])
    ]


def test_the_s3_notification_watches_manifests_under_the_output_prefix_only(cfn: Template) -> None:
    bucket = cfn["Resources"]["OutputBucket"]
    [config] = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert _invokes_job_trigger(config["Function"])
    rules = {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": {"Ref": "OutputPrefix"}, "suffix": "job-output-manifest.json"}
    assert bucket["DependsOn"] == "JobTriggerS3Permission" or "JobTriggerS3Permission" in bucket["DependsOn"]
    permission = cfn["Resources"]["JobTriggerS3Permission"]
    assert permission["Condition"] == "CreateOutputBucket"
    assert permission["Properties"]["SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert _permission_for(cfn, "s3.amazonaws.com", permission["Properties"]["SourceArn"]) == ["JobTriggerS3Permission"]


def test_reports_cannot_re_trigger_the_verification(cfn: Template) -> None:
    # Reports live in the stack's own bucket, which has no notification and is named by no trigger; the old
    # "reports outside the watched prefix" rule is gone with the shared bucket.
    reports = cfn["Resources"]["ReportsBucket"]["Properties"]
    assert "NotificationConfiguration" not in reports
    assert "BucketName" not in reports
    for function in FUNCTIONS:
        env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["REPORTS_BUCKET"] == {"Ref": "ReportsBucket"}
        assert env["REPORTS_PREFIX"] == {"Ref": "ReportsPrefix"}
    rules = json.dumps(cfn.get("Rules", {}))
    assert "ReportsPrefix" not in rules
    events = json.dumps([r["Properties"].get("EventPattern") for r in of_type(cfn, "AWS::Events::Rule").values()])
    assert "ReportsBucket" not in events
    parameters = cfn["Parameters"]
    assert (parameters["OutputPrefix"]["Default"], parameters["ReportsPrefix"]["Default"]) == (
        "import-output/",
        "ahi-verify-reports/",
    )
    for name in ("OutputPrefix", "ReportsPrefix"):
        pattern = parameters[name]["AllowedPattern"]
        assert re.fullmatch(pattern, parameters[name]["Default"])
        assert not re.fullmatch(pattern, ""), f"{name} may be empty (the whole bucket)"
        assert not re.fullmatch(pattern, "no-slash"), f"{name} may lack its trailing /"
        assert not re.fullmatch(pattern, "a*/"), f"{name} may contain a wildcard"


def test_an_existing_bucket_is_watched_through_eventbridge(cfn: Template) -> None:
    rule = cfn["Resources"]["ExistingBucketManifestRule"]
    assert rule["Condition"] == "UseExistingBucket"
    props = rule["Properties"]
    assert "EventBridge" in props["Description"]
    assert props["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [{"Ref": "ExistingOutputBucketName"}]},
            "object": {"key": [{"wildcard": {"Fn::Sub": "${OutputPrefix}*job-output-manifest.json"}}]},
        },
    }
    [target] = props["Targets"]
    assert _invokes_job_trigger(target["Arn"])
    arn = {"Fn::GetAtt": ["ExistingBucketManifestRule", "Arn"]}
    assert _permission_for(cfn, "events.amazonaws.com", arn) == ["ExistingBucketManifestPermission"]
    assert cfn["Resources"]["ExistingBucketManifestPermission"]["Condition"] == "UseExistingBucket"
    [needs_name] = cfn["Rules"]["ExistingBucketNeedsAName"]["Assertions"]
    assert cfn["Rules"]["ExistingBucketNeedsAName"]["RuleCondition"] == {
        "Fn::Equals": [{"Ref": "TriggerMode"}, "ExistingBucket"]
    }
    assert needs_name["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExistingOutputBucketName"}, ""]}]}


def test_import_job_events_of_the_datastore_reach_the_job_trigger(cfn: Template) -> None:
    props = cfn["Resources"]["ImportJobEventsRule"]["Properties"]
    assert props["EventPattern"] == {
        "source": ["aws.medical-imaging"],
        "detail-type": ["Import Job Completed", "Import Job Failed"],
        "detail": {"datastoreId": [{"Ref": "DatastoreId"}]},
    }
    [target] = props["Targets"]
    assert _invokes_job_trigger(target["Arn"])
    arn = {"Fn::GetAtt": ["ImportJobEventsRule", "Arn"]}
    assert _permission_for(cfn, "events.amazonaws.com", arn) == ["ImportJobEventsPermission"]


def test_the_reconciliation_schedule_reaches_the_job_trigger(cfn: Template) -> None:
    schedules = {n: r for n, r in of_type(cfn, "AWS::Events::Rule").items() if "ScheduleExpression" in r["Properties"]}
    assert sorted(schedules) == ["AuditScheduleRule", "JobTriggerFunctionReconcile"]
    # the audit schedule exists only with AuditSchedule set (off by default)
    assert schedules["AuditScheduleRule"]["Condition"] == "HasAuditSchedule"
    assert cfn["Parameters"]["AuditSchedule"]["Default"] == ""
    assert schedules["AuditScheduleRule"]["Properties"]["ScheduleExpression"] == {"Ref": "AuditSchedule"}
    props = schedules["JobTriggerFunctionReconcile"]["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "ReconcileSchedule"}
    assert cfn["Parameters"]["ReconcileSchedule"]["Default"] == "rate(6 hours)"
    [target] = props["Targets"]
    assert _invokes_job_trigger(target["Arn"])
    # No Input: the function recognises the standard "Scheduled Event" (source aws.events) payload.
    assert "Input" not in target
    arn = {"Fn::GetAtt": ["JobTriggerFunctionReconcile", "Arn"]}
    assert len(_permission_for(cfn, "events.amazonaws.com", arn)) == 1


def test_every_trigger_invokes_the_job_trigger_and_nothing_else_invokes_a_function(cfn: Template) -> None:
    targets = [t["Arn"] for r in of_type(cfn, "AWS::Events::Rule").values() for t in r["Properties"]["Targets"]]
    # import-job events, an existing bucket's manifests, the reconciliation; audits on demand and on a schedule;
    # image set events
    assert len(targets) == 6
    assert all(_invokes_job_trigger(t) for t in targets)
    permissions = of_type(cfn, "AWS::Lambda::Permission")
    assert len(permissions) == 7
    assert all(_invokes_job_trigger(p["Properties"]["FunctionName"]) for p in permissions.values())
    trigger = cfn["Resources"]["JobTriggerFunction"]["Properties"]
    assert (trigger["Handler"], trigger["Timeout"], trigger["MemorySize"]) == ("job_trigger.handler", 900, 512)


# --- conditions, alarms, dashboard, contract ----------------------------------------------------------------------


def test_conditions_make_the_bucket_and_the_email_subscription_optional(cfn: Template) -> None:
    conditions = cfn["Conditions"]
    assert conditions["HasAlertEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]}
    assert conditions["CreateOutputBucket"] == {"Fn::Equals": [{"Ref": "TriggerMode"}, "CreateBucket"]}
    assert conditions["UseExistingBucket"] == {"Fn::Equals": [{"Ref": "TriggerMode"}, "ExistingBucket"]}
    subscription = cfn["Resources"]["AlertEmailSubscription"]
    assert subscription["Condition"] == "HasAlertEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    assert cfn["Parameters"]["AlertEmail"]["Default"] == ""
    conditional = {name for name, r in cfn["Resources"].items() if "Condition" in r}
    assert conditional == {
        "OutputBucket",
        "OutputBucketPolicy",
        "JobTriggerS3Permission",
        "ExistingBucketManifestRule",
        "ExistingBucketManifestPermission",
        "AlertEmailSubscription",
        "OpsEmailSubscription",
        "AuditScheduleRule",
        "AuditSchedulePermission",
    }
    assert conditions["HasOpsEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OpsEmail"}, ""]}]}
    ops = cfn["Resources"]["OpsEmailSubscription"]
    assert (ops["Condition"], ops["Properties"]["Protocol"]) == ("HasOpsEmail", "email")
    assert ops["Properties"]["TopicArn"] == {"Ref": "OpsTopic"}
    assert cfn["Parameters"]["OpsEmail"]["Default"] == ""


def test_the_alarms_watch_the_dead_letters_the_failed_triggers_and_the_mismatches(cfn: Template) -> None:
    alarms = {n: a["Properties"] for n, a in of_type(cfn, "AWS::CloudWatch::Alarm").items()}
    assert set(alarms) == {
        "DeadLetterAlarm",
        "DeadLetterArrivalsAlarm",
        "TriggerFailureAlarm",
        "TriggerFailureArrivalsAlarm",
        "MismatchAlarm",
        "OldestOpenJobAlarm",
        "WorkNotVerifiedAlarm",
        "AlertsNotPublishedAlarm",
        "ThrottlingAlarm",
    }
    alarms.pop("ThrottlingAlarm")  # a share of requests, not a count: its own test below
    for name, queue in (("DeadLetterAlarm", "WorkDeadLetterQueue"), ("TriggerFailureAlarm", "TriggerFailureQueue")):
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        assert alarm["Statistic"] == "Maximum"
    mismatch = alarms["MismatchAlarm"]
    assert (mismatch["Namespace"], mismatch["MetricName"], mismatch["Statistic"]) == (
        "AhiVerify",
        "FramesMismatched",
        "Sum",
    )
    assert mismatch["Dimensions"] == [{"Name": "service", "Value": "ahi-verify"}]
    assert (mismatch["Period"], mismatch["TreatMissingData"]) == (300, "notBreaching")
    oldest = alarms.pop("OldestOpenJobAlarm")
    assert (oldest["Namespace"], oldest["MetricName"], oldest["Statistic"]) == (
        "AhiVerify",
        "OldestOpenJobAge",
        "Maximum",
    )
    assert (oldest["Threshold"], oldest["ComparisonOperator"]) == (
        {"Ref": "JobDeadlineSeconds"},
        "GreaterThanOrEqualToThreshold",
    )
    assert oldest["AlarmActions"] == oldest["OKActions"] == [{"Ref": "OpsTopic"}]
    for name in ("AlertsNotPublishedAlarm", "WorkNotVerifiedAlarm"):
        assert alarms[name]["AlarmActions"] == [{"Ref": "OpsTopic"}]
    for alarm in alarms.values():
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # a mismatch concerns a job's verdict: the job alerts' topic
    assert mismatch["AlarmActions"] == [{"Ref": "AlertTopic"}]


def test_throttling_alarms_on_the_share_of_requests_refused_not_on_one_429(cfn: Template) -> None:
    # GIVEN the throttling alarm
    alarm = cfn["Resources"]["ThrottlingAlarm"]["Properties"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    # THEN it divides the two metrics the workers publish (the same namespace and dimension as the others)
    for metric_id, name in (("sent", "RequestsSent"), ("throttled", "RequestsThrottled")):
        stat = metrics[metric_id]["MetricStat"]
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Stat"]) == ("AhiVerify", name, "Sum")
        assert stat["Metric"]["Dimensions"] == [{"Name": "service", "Value": "ahi-verify"}]
        assert metrics[metric_id]["ReturnData"] is False
    assert metrics["share"]["Expression"] == "IF(sent > 0, 100 * throttled / sent, 0)"
    # AND fires on a sustained share (over 1 % in 2 of 3 five-minute periods), to the operators, with recovery
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanThreshold")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)
    assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "OpsTopic"}]
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_request_rate_budget_is_a_parameter_passed_to_the_functions(cfn: Template) -> None:
    params = cfn["Parameters"]
    assert (params["FrameRequestRateBudget"]["Default"], params["MetadataRequestRateBudget"]["Default"]) == (300, 10)
    assert params["FrameRequestRateBudget"]["MaxValue"] <= 2000  # never more than the default quota's burst
    assert "FetchConcurrency" not in params  # fetches in flight follow from the rate, not a parameter
    env = cfn["Resources"]["ImageSetWorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["FRAME_RATE_BUDGET"] == {"Ref": "FrameRequestRateBudget"}
    assert env["METADATA_RATE_BUDGET"] == {"Ref": "MetadataRequestRateBudget"}
    assert env["WORKER_MAXIMUM_CONCURRENCY"] == {"Ref": "WorkerMaximumConcurrency"}


def test_the_dashboard_is_valid_json_showing_frames_queue_and_functions(cfn: Template) -> None:
    body = sub_text(cfn["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    assert body is not None
    variables = set(re.findall(r"\$\{([^}]+)\}", body))
    assert variables == {
        "AWS::Region",
        "WorkQueue.QueueName",
        "WorkDeadLetterQueue.QueueName",
        "TriggerFailureQueue.QueueName",
        "ImageSetWorkerFunction",
        "JobTriggerFunction",
    }
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    metrics = {(m[0], m[1]) for w in document["widgets"] for m in w["properties"]["metrics"]}
    for name in ("FramesVerified", "FramesMismatched", "FramesErrored", "JobsStarted", "VerificationLatency"):
        assert ("AhiVerify", name) in metrics
    assert {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/Lambda", "Errors")} <= metrics
    assert {("AWS/Lambda", "Throttles"), ("AWS/Lambda", "Duration")} <= metrics


def test_every_function_gets_the_environment_contract(cfn: Template) -> None:
    for function in FUNCTIONS:
        props = cfn["Resources"][function]["Properties"]
        env = props["Environment"]["Variables"]
        assert set(env) == ENVIRONMENT, function
        assert env["POWERTOOLS_SERVICE_NAME"] == "ahi-verify"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "AhiVerify"
        assert env["LOG_LEVEL"] == "INFO"
        assert env["DATASTORE_ID"] == {"Ref": "DatastoreId"}
        assert env["WORK_QUEUE_URL"] == {"Ref": "WorkQueue"}
        assert env["ALERT_TOPIC_ARN"] == {"Ref": "AlertTopic"}
        assert env["OPS_TOPIC_ARN"] == {"Ref": "OpsTopic"}
        assert env["REPORTS_BUCKET"] == {"Ref": "ReportsBucket"}
        assert env["FRAMES_PER_WORK_ITEM"] == {"Ref": "FramesPerWorkItem"}
        assert env["JOB_DEADLINE_S"] == {"Ref": "JobDeadlineSeconds"}
        # named in the alerts; from pseudo parameters, so no STS call (nor its permission) is needed
        assert env["ACCOUNT_ID"] == {"Ref": "AWS::AccountId"}
        assert env["STACK_NAME"] == {"Ref": "AWS::StackName"}
        assert props["Runtime"] == "python3.12"
        assert props["TracingConfig"] == {"Mode": "Active"}
        # The trigger and the recorder decode nothing and carry only the core layer (tests/template/test_sam_build.py
        # imports their handlers without numpy or imagecodecs); the worker needs both.
        prefixes = ("CoreLayer", "CodecsLayer") if function == "ImageSetWorkerFunction" else ("CoreLayer",)
        assert [next(iter(layer.values())) for layer in props["Layers"]] == [
            name for prefix in prefixes for name in cfn["Resources"] if name.startswith(prefix)
        ]


def test_the_parameters_keep_their_contract(cfn: Template) -> None:
    parameters = cfn["Parameters"]
    defaults = {name: p.get("Default") for name, p in parameters.items()}
    assert defaults == {
        "Architecture": "x86_64",
        "DatastoreId": None,
        "TriggerMode": "CreateBucket",
        "ExistingOutputBucketName": "",
        "OutputPrefix": "import-output/",
        "ReportsPrefix": "ahi-verify-reports/",
        "ReportsKmsKeyArn": "",
        "ReportsNoncurrentVersionDays": 365,
        "ReportRetentionDays": 0,
        "ReportRetentionMode": "GOVERNANCE",
        "AuditSchedule": "",
        "AlertEmail": "",
        "OpsEmail": "",
        "NotifyOnCleanJobs": "false",
        "SourceBucketName": "",
        "WorkerMaximumConcurrency": 5,
        "FramesPerWorkItem": 2000,
        "FrameRequestRateBudget": 300,
        "MetadataRequestRateBudget": 10,
        "WorkMaxReceiveCount": 5,
        "JobDeadlineSeconds": 43200,
        "ReconcileSchedule": "rate(6 hours)",
        "WorkerMemorySize": 3008,
        "LogRetentionInDays": 30,
    }
    assert parameters["DatastoreId"]["AllowedPattern"] == "^[0-9a-z]{32}$"
    assert re.fullmatch(parameters["DatastoreId"]["AllowedPattern"], DATASTORE_ID)
    assert parameters["TriggerMode"]["AllowedValues"] == ["CreateBucket", "ExistingBucket"]
    assert parameters["NotifyOnCleanJobs"]["AllowedValues"] == ["true", "false"]


def test_the_outputs_tell_a_user_where_everything_is(cfn: Template) -> None:
    assert set(cfn["Outputs"]) >= {
        "OutputBucketName",
        "ImportOutputS3Uri",
        "WatchedPrefix",
        "ReportsBucketName",
        "ReportsLocation",
        "WorkQueueUrl",
        "WorkDeadLetterQueueUrl",
        "TriggerFailureQueueUrl",
        "ProgressTableName",
        "LedgerTableName",
        "IdempotencyTableName",
        "AlertTopicArn",
        "OpsTopicArn",
        "JobTriggerFunctionName",
        "ImageSetWorkerFunctionName",
        "DeadLetterRecorderFunctionName",
        "DashboardUrl",
        "CodecsLayerArn",
        "CoreLayerArn",
    }
    url = sub_text(cfn["Outputs"]["DashboardUrl"]["Value"])
    assert url is not None
    assert url.endswith("#dashboards:name=${Dashboard}")
    assert cfn["Outputs"]["ReportsLocation"]["Value"] == {"Fn::Sub": "s3://${ReportsBucket}/${ReportsPrefix}"}


# --- reports bucket, retained state ------------------------------------------------------------------------------

FUNCTION_ROLES = [
    {"Fn::GetAtt": ["JobTriggerRole", "Arn"]},
    {"Fn::GetAtt": ["ImageSetWorkerRole", "Arn"]},
    {"Fn::GetAtt": ["DeadLetterRecorderRole", "Arn"]},
]


def test_the_reports_bucket_is_versioned_kms_encrypted_private_and_retained(cfn: Template) -> None:
    bucket = cfn["Resources"]["ReportsBucket"]
    # GIVEN the bucket of the reports, the verification evidence
    props = bucket["Properties"]
    # THEN it outlives the stack and a replacement, on every parameter value
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert "Condition" not in bucket
    # and an overwritten or deleted report stays recoverable
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    # and it is SSE-KMS with a bucket key: the customer's key when given, else the AWS managed aws/s3
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["BucketKeyEnabled"] is True
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::If": ["HasReportsKmsKey", {"Ref": "ReportsKmsKeyArn"}, {"Ref": "AWS::NoValue"}]},
    }
    assert cfn["Conditions"]["HasReportsKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReportsKmsKeyArn"}, ""]}]}
    pattern = cfn["Parameters"]["ReportsKmsKeyArn"]["AllowedPattern"]
    assert re.fullmatch(pattern, "")
    assert re.fullmatch(pattern, "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert not re.fullmatch(pattern, "arn:aws:kms:us-east-1:123456789012:alias/reports"), "an alias grants nothing"
    # and it is private, ACL-free
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    # and noncurrent versions expire after the parameter's days; current reports never expire
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    noncurrent = rules["expire-noncurrent-report-versions"]
    assert noncurrent["NoncurrentVersionExpiration"] == {"NoncurrentDays": {"Ref": "ReportsNoncurrentVersionDays"}}
    assert not any("ExpirationInDays" in r or "Expiration" in r for r in rules.values())
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


def test_the_reports_bucket_policy_is_tls_only_and_lets_only_the_functions_write(cfn: Template) -> None:
    policy = cfn["Resources"]["ReportsBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ReportsBucket"}
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {"DenyInsecureTransport", "OnlyTheFunctionsWriteReports"}
    tls = statements["DenyInsecureTransport"]
    assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "s3:*")
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == [{"Fn::GetAtt": ["ReportsBucket", "Arn"]}, {"Fn::Sub": "${ReportsBucket.Arn}/*"}]
    # an explicit deny (not only least-privilege IAM): any other principal of the account is refused writes
    guard = statements["OnlyTheFunctionsWriteReports"]
    assert (guard["Effect"], guard["Principal"]) == ("Deny", "*")
    assert set(guard["Action"]) == {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"}
    assert guard["Resource"] == {"Fn::Sub": "${ReportsBucket.Arn}/*"}
    assert guard["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": FUNCTION_ROLES}}
    assert sorted(role_of(cfn, f) for f in FUNCTIONS) == sorted(r["Fn::GetAtt"][0] for r in FUNCTION_ROLES)
    # and the functions' own writes stay within what the guard lets through: PutObject, no deletes
    for function in FUNCTIONS:
        actions = {a for s in function_statements(cfn, function) for a in listed(s["Action"])}
        assert "s3:PutObject" in actions
        assert not {"s3:DeleteObject", "s3:DeleteObjectVersion"} & actions


def test_the_reports_key_is_granted_only_when_a_customer_key_is_given(cfn: Template) -> None:
    for function in FUNCTIONS:
        policy = cfn["Resources"][role_of(cfn, function)]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        conditional = [s["Fn::If"] for s in policy if set(s) == {"Fn::If"} and s["Fn::If"][0] == "HasReportsKmsKey"]
        assert len(conditional) == 1, function
        [(_, grant, otherwise)] = conditional
        assert otherwise == {"Ref": "AWS::NoValue"}
        assert (grant["Sid"], grant["Effect"]) == ("EncryptReports", "Allow")
        assert sorted(grant["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert grant["Resource"] == {"Ref": "ReportsKmsKeyArn"}


def test_the_progress_table_is_retained_and_deletion_protected(cfn: Template) -> None:
    for name in ("ProgressTable", "LedgerTable"):  # the job records and the ledger are both evidence
        table = cfn["Resources"][name]
        assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
        assert table["Properties"]["DeletionProtectionEnabled"] is True
    # the idempotency records are a 24-hour cache of what the progress table decides: deleted with the stack
    idempotency = cfn["Resources"]["IdempotencyTable"]
    assert (idempotency["DeletionPolicy"], idempotency["UpdateReplacePolicy"]) == ("Delete", "Delete")
    assert not idempotency["Properties"].get("DeletionProtectionEnabled")


def _dynamodb_actions(source: str, client: str) -> set[str]:
    """IAM actions of the DynamoDB calls ``source`` makes on ``client`` (``self._db``, ``self.client``): each
    ``get_item`` -> ``dynamodb:GetItem``; a ``transact_write_items`` -> the item actions it holds (IAM has no
    action of its own for it: Put -> PutItem, Update -> UpdateItem, Delete -> DeleteItem, ConditionCheck ->
    ConditionCheckItem)."""
    calls = set(re.findall(re.escape(client) + r"\.([a-z_]+)\(", source))
    actions = {"dynamodb:" + "".join(w.capitalize() for w in c.split("_")) for c in calls - {"transact_write_items"}}
    if "transact_write_items" in calls:
        kinds = set(re.findall(r'\{\s*"(Put|Update|Delete|ConditionCheck)": \{', source))
        assert kinds, "a transaction whose items this test cannot see"
        actions |= {f"dynamodb:{k}Item" if k != "ConditionCheck" else "dynamodb:ConditionCheckItem" for k in kinds}
    return actions


def test_dynamodb_grants_are_exactly_the_calls_the_code_makes(cfn: Template) -> None:
    # GIVEN the calls of the progress table's adapter and of Powertools' idempotency persistence layer
    used = {
        "ProgressTable": _dynamodb_actions(Path(progress.__file__).read_text(encoding="utf-8"), "self._db"),
        "LedgerTable": _dynamodb_actions(Path(dynamo_ledger.__file__).read_text(encoding="utf-8"), "self._db"),
        "IdempotencyTable": _dynamodb_actions(
            Path(powertools_dynamodb.__file__).read_text(encoding="utf-8"), "self.client"
        ),
    }
    assert used["ProgressTable"] == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "dynamodb:DeleteItem",
    }
    # the workers never list or close open runs: only the reconciliation (the trigger) does
    items_only = used["ProgressTable"] - {"dynamodb:Query", "dynamodb:DeleteItem"}
    assert used["IdempotencyTable"] == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    # and the ledger's adapter writes with BatchWriteItem (the functions) and reads with Query (the CLI only)
    assert used["LedgerTable"] == {"dynamodb:BatchWriteItem", "dynamodb:Query"}
    # THEN each role is granted exactly those on each table it uses (the worker has no idempotency table), and
    # every function that can finalise a job may write the ledger and never read it
    ledger = {"LedgerTable": {"dynamodb:BatchWriteItem"}}
    expected = {
        "JobTriggerFunction": {
            "ProgressTable": used["ProgressTable"],
            "IdempotencyTable": used["IdempotencyTable"],
            **ledger,
        },
        "ImageSetWorkerFunction": {"ProgressTable": items_only, **ledger},
        "DeadLetterRecorderFunction": {"ProgressTable": items_only, **ledger},
    }
    for function, tables in expected.items():
        granted: dict[str, set[str]] = {}
        for s in function_statements(cfn, function):
            dynamodb = {a for a in listed(s["Action"]) if a.startswith("dynamodb:")}
            if dynamodb:
                assert s["Effect"] == "Allow"
                [table] = [r["Fn::GetAtt"][0] for r in listed(s["Resource"])]
                granted.setdefault(table, set()).update(dynamodb)
        assert granted == tables, function


# --- failed triggers and the operations topic ---------------------------------------------------------------------


def test_trigger_failures_go_to_a_queue_never_to_a_topic(cfn: Template) -> None:
    # GIVEN Lambda's asynchronous invocation config of the trigger (what SAM's EventInvokeConfig becomes)
    configs = of_type(cfn, "AWS::Lambda::EventInvokeConfig")
    [config] = configs.values()
    assert config["Properties"]["FunctionName"] == {"Ref": "JobTriggerFunction"}
    # THEN the failure record (the raw event: jobName and inputS3Uri may name a patient) goes to a queue
    destinations = config["Properties"]["DestinationConfig"]
    assert destinations == {"OnFailure": {"Destination": {"Fn::GetAtt": ["TriggerFailureQueue", "Arn"]}}}
    queue = cfn["Resources"]["TriggerFailureQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == FOURTEEN_DAYS
    # and no topic subscribes anything to that queue, nor is any topic a destination of any function
    assert "OnSuccess" not in destinations
    for subscription in of_type(cfn, "AWS::SNS::Subscription").values():
        assert subscription["Properties"]["Endpoint"] != {"Fn::GetAtt": ["TriggerFailureQueue", "Arn"]}
    sam = cfn["Resources"]["JobTriggerFunction"]
    assert "EventInvokeConfig" not in sam.get("Properties", {}), "SAM did not translate the event invoke config"


def test_operational_alarms_go_to_the_ops_topic_and_report_recovery(cfn: Template) -> None:
    alarms = {n: a["Properties"] for n, a in of_type(cfn, "AWS::CloudWatch::Alarm").items()}
    ops = [{"Ref": "OpsTopic"}]
    # "messages wait": ALARM and OK (drained) to the operators; no data is an idle, empty queue
    for name in ("DeadLetterAlarm", "TriggerFailureAlarm"):
        alarm = alarms[name]
        assert (alarm["AlarmActions"], alarm["OKActions"]) == (ops, ops), name
        assert alarm["TreatMissingData"] == "notBreaching"
    # "more arrived": notifies again while the first alarm stays in ALARM (CloudWatch notifies only on a
    # state change), so a second job's dead letters are not swallowed; its OK means nothing, so it has none
    for name, queue, metric_id in (
        ("DeadLetterArrivalsAlarm", "WorkDeadLetterQueue", "dead"),
        ("TriggerFailureArrivalsAlarm", "TriggerFailureQueue", "failed"),
    ):
        alarm = alarms[name]
        assert alarm["AlarmActions"] == ops
        assert "OKActions" not in alarm
        assert alarm["TreatMissingData"] == "notBreaching"
        metrics = {m["Id"]: m for m in alarm["Metrics"]}
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert stat["Metric"]["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
        assert (stat["Stat"], stat["Period"]) == ("Maximum", 300)
        returned = [m for m in alarm["Metrics"] if m.get("ReturnData")]
        assert [m["Expression"] for m in returned] == [f"DIFF({metric_id})"]
    # verdict alerts stay on the alert topic, and nothing operational goes there
    assert alarms["MismatchAlarm"]["AlarmActions"] == [{"Ref": "AlertTopic"}]
    for name, alarm in alarms.items():
        if name != "MismatchAlarm":
            assert {"Ref": "AlertTopic"} not in alarm["AlarmActions"] + alarm.get("OKActions", []), name


def test_the_ops_topic_is_encrypted_and_guarded_like_the_alert_topic(cfn: Template) -> None:
    topic = cfn["Resources"]["OpsTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlertTopicKey", "Arn"]}
    assert topic["TopicName"] != cfn["Resources"]["AlertTopic"]["Properties"]["TopicName"]
    alert = cfn["Resources"]["AlertTopicPolicy"]["Properties"]
    ops = cfn["Resources"]["OpsTopicPolicy"]["Properties"]
    assert ops["Topics"] == [{"Ref": "OpsTopic"}]
    # the same statements, on the ops topic
    expected = json.loads(json.dumps(alert["PolicyDocument"]).replace('"AlertTopic"', '"OpsTopic"'))
    assert ops["PolicyDocument"] == expected
