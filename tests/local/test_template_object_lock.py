"""The repository's template: Object Lock on the reports bucket only when ReportRetentionDays asks for it,
and the functions can write the evidence chain with the permissions they have (no .venv-sam needed)."""

from __future__ import annotations

from typing import Any

import pytest

from local.stack import DEFAULT_TEMPLATE
from local.template import Template, TemplateError, load_template
from tests.local.conftest import DATASTORE_ID

WRITERS = ("JobTriggerRole", "ImageSetWorkerRole", "DeadLetterRecorderRole")


def bound(**parameters: str) -> Template:
    return Template(
        load_template(DEFAULT_TEMPLATE),
        {"DatastoreId": DATASTORE_ID, **parameters},
        stack_name="st",
        sqs_endpoint="http://h:1",
    )


def reports_bucket(template: Template) -> dict[str, Any]:
    resource = template.resource("ReportsBucket")
    return dict(template.resolve(resource.properties, where="ReportsBucket"))


def test_the_default_deployment_has_no_object_lock() -> None:
    # GIVEN the template with its defaults WHEN the reports bucket is resolved
    props = reports_bucket(bound())
    # THEN neither Object Lock property is there (the bucket is what it was), and it stays versioned and SSE-KMS
    assert "ObjectLockEnabled" not in props
    assert "ObjectLockConfiguration" not in props
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_retention_days_create_the_bucket_with_object_lock(mode: str) -> None:
    # GIVEN ReportRetentionDays and a mode WHEN the reports bucket is resolved
    props = reports_bucket(bound(ReportRetentionDays="2555", ReportRetentionMode=mode))
    # THEN Object Lock is enabled at creation with that default retention
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"] == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": mode, "Days": "2555"}},  # a Number parameter resolves to its string
    }


def test_an_unknown_retention_mode_is_refused() -> None:
    # GIVEN a mode S3 does not have WHEN the parameters are bound THEN the template refuses it
    with pytest.raises(TemplateError, match="ReportRetentionMode"):
        bound(ReportRetentionDays="30", ReportRetentionMode="LEGAL_HOLD")


@pytest.mark.parametrize("role", WRITERS)
def test_the_writers_may_put_and_get_the_digests_under_the_reports_prefix(role: str) -> None:
    # GIVEN each role that finalises jobs WHEN its policies are resolved
    template = bound(ReportsPrefix="reports/")
    policies = template.resolve(template.resource(role).properties["Policies"], where=role)
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    objects = [s for s in statements if "s3:PutObject" in s["Action"]]
    # THEN PutObject and GetObject on the reports prefix cover <prefix>_evidence/ (digests and pointer), and
    # nothing grants more than the prefix or any Object Lock bypass
    assert any("s3:GetObject" in s["Action"] and str(s["Resource"]).endswith("/reports/*") for s in objects)
    assert all(str(s["Resource"]).endswith("/reports/*") for s in objects)
    assert not any("Bypass" in str(s["Action"]) or "Retention" in str(s["Action"]) for s in statements)
