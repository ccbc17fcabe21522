"""``ahi-verify evidence validate`` against reports the application's ReportStore wrote (moto, in process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ahi_verify.alert import compose_alert
from ahi_verify.app.storage import ReportStore
from ahi_verify.cli import EVIDENCE_BROKEN, EVIDENCE_INTACT, EXIT_CANNOT_RUN, EXIT_USAGE, build_parser, main
from tests.unit.test_report import ISET_A, header, image_set, matching, report

BUCKET, PREFIX = "reports-bkt", "reports/"
JOBS = ("job1", "job2")
NOW = "2026-12-02T15:00:00+00:00"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A versioned reports bucket holding two finalised jobs, the second with its kept alert."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        store = ReportStore(client, BUCKET, PREFIX)
        for job_id in JOBS:
            doc = report(header(), image_set(ISET_A, matching(2)))
            doc = replace(doc, job=replace(doc.job, job_id=job_id))
            uri = store.put_report(doc)
            if job_id == "job2":
                alert = compose_alert(doc.outcome(), uri, notify_clean=True)
                assert alert is not None
                store.put_alert(job_id, alert)
            assert store.record_evidence(job_id, created_at=NOW) is not None
        yield client


def validate(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = main(["evidence", "validate", f"s3://{BUCKET}/{PREFIX}", "--output", "json", *extra])
    return code, dict(json.loads(capsys.readouterr().out))


def test_reports_as_written_are_intact(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN two finalised jobs WHEN validated
    code, doc = validate(capsys)
    # THEN exit 0: two digests, five documents (two reports, two pages, one alert), nothing found
    assert code == EVIDENCE_INTACT
    assert (doc["intact"], doc["digests"], doc["objects"]) == (True, 2, 5)
    assert doc["altered"] == doc["missing"] == doc["chainBroken"] == doc["unlisted"] == []
    digest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}_evidence/digests/000000000002.json")["Body"].read())
    assert all(entry["versionId"] for entry in digest["objects"])  # the versions S3 gave, recorded as written


def test_an_altered_report_is_exit_1_and_named(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN job1's report overwritten
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}job1/report.json", Body=b'{"verdict":"CLEAN"}')
    # WHEN validated THEN exit 1, that report altered and nothing else
    code, doc = validate(capsys)
    assert code == EVIDENCE_BROKEN
    assert [line.split(":")[0] for line in doc["altered"]] == [f"{PREFIX}job1/report.json"]
    assert doc["missing"] == doc["chainBroken"] == []


def test_a_deleted_digest_is_exit_1_and_named_in_the_table(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the first digest deleted
    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}_evidence/digests/000000000001.json")
    # WHEN validated with the table output
    code = main(["evidence", "validate", f"s3://{BUCKET}/{PREFIX}"])
    out = capsys.readouterr().out
    # THEN exit 1; the table says NOT INTACT, the missing digest, and job1's now unlisted documents
    assert code == EVIDENCE_BROKEN
    assert "NOT INTACT" in out.splitlines()[0]
    assert f"digest 1 is missing ({PREFIX}_evidence/digests/000000000001.json)" in out
    assert f"  {PREFIX}job1/report.json" in out.splitlines()


def test_a_prefix_without_its_slash_is_the_same_folder(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the prefix given without the trailing slash WHEN validated THEN it is the same chain
    code, doc = validate_uri(capsys, f"s3://{BUCKET}/{PREFIX.rstrip('/')}")
    assert (code, doc["digests"]) == (EVIDENCE_INTACT, 2)


def validate_uri(capsys: pytest.CaptureFixture[str], uri: str) -> tuple[int, dict[str, Any]]:
    code = main(["evidence", "validate", uri, "--output", "json"])
    return code, dict(json.loads(capsys.readouterr().out))


def test_a_missing_bucket_cannot_run(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a bucket that does not exist WHEN validated THEN exit 4 with a one-line message
    assert main(["evidence", "validate", "s3://no-such-bucket/reports/"]) == EXIT_CANNOT_RUN
    assert "cannot run" in capsys.readouterr().err


def test_a_uri_that_is_not_s3_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an https URL WHEN parsed THEN exit 2 (argparse)
    with pytest.raises(SystemExit) as exited:
        main(["evidence", "validate", "https://example.com/reports/"])
    assert exited.value.code == EXIT_USAGE


def test_help_lists_the_evidence_exit_codes() -> None:
    # GIVEN the parser WHEN the validate help is rendered THEN it names what 0 and 1 mean
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    validate_help = next(a for a in commands["evidence"]._actions if a.dest == "evidence_command")
    assert validate_help.choices is not None
    text = validate_help.choices["validate"].format_help()
    assert "0  intact" in text
    assert "1  a report altered, missing or unlisted" in text


def test_every_write_to_a_locked_bucket_carries_content_md5_and_locked_versions_stay(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a reports bucket with Object Lock default retention (as ReportRetentionDays creates it), and a hook
    # that sees every request sent
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        )
        writes: list[tuple[str, bool]] = []

        def seen(request: Any, **_: Any) -> None:
            if request.method == "PUT":
                writes.append((request.url.split("?")[0].rsplit("/", 1)[-1], "Content-MD5" in request.headers))

        client.meta.events.register("before-send.s3", seen)
        store = ReportStore(client, BUCKET, PREFIX)
        doc = report(header(), image_set(ISET_A, matching(2)))
        store.put_report(doc)
        store.record_evidence(doc.job.job_id, created_at=NOW)
        # THEN every PUT (report, page, digest, pointer) carried Content-MD5, which S3 requires on such a bucket
        assert [name for name, _ in writes] == ["report.json", "report.html", "000000000001.json", "latest.json"]
        assert all(has_md5 for _, has_md5 in writes), writes
        # and the chain validates; the written report version cannot be deleted while it is retained
        assert main(["evidence", "validate", f"s3://{BUCKET}/{PREFIX}"]) == EVIDENCE_INTACT
        key = f"{PREFIX}{doc.job.job_id}/report.json"
        version = client.head_object(Bucket=BUCKET, Key=key)["VersionId"]
        with pytest.raises(ClientError, match="AccessDenied"):
            client.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
        capsys.readouterr()
