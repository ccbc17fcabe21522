"""Trigger events -> the import jobs they announce: S3 notifications, EventBridge, import-job events, schedules."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote_plus

import pytest

from ahi_verify.app.events import EventError, JobRef, Reconcile, parse_trigger_event

DS, JOB = "12345678901234567890123456789012", "09876543210987654321098765432109"
DS2, JOB2 = "bbc4f3cccbae4095a34170fddc19b13d", "a6a1d220f152e7aab6d8925d995d8b76"
BUCKET = "medical-imaging-output"
MANIFEST_KEY = f"job_output/{DS}-DicomImport-{JOB}/job-output-manifest.json"
FOLDER_URI = f"s3://{BUCKET}/job_output/{DS}-DicomImport-{JOB}/"


S3_ETAG = "0123456789abcdef0123456789abcdef"
EVENTBRIDGE_ETAG = "b1946ac92492d2347c6235b4d2611184"


def s3_put_record(key: str, bucket: str = BUCKET, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record as S3 delivers it (the shape `sam local generate-event s3 put` produces); ``key`` as sent."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-03-14T00:01:02.345Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:HealthImaging"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {
            "x-amz-request-id": "EXAMPLE123456789",
            "x-amz-id-2": "EXAMPLE123/5678abcdefghijklambdaisawesome/mnopqrstuvwxyzABCDEFGH",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "ahi-verify-manifest",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": key,
                "size": 1024,
                "eTag": S3_ETAG,
                "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "sequencer": "0A1B2C3D4E5F678901",
            },
        },
    }


def moto_record(key: str, bucket: str = BUCKET) -> dict[str, Any]:
    """One record as moto 5.2 sends it: reduced shape, key quote_plus-encoded including '/'."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-03-14T00:01:02.345Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "ahi-verify-manifest",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key), "size": 1024, "eTag": S3_ETAG},
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def eventbridge_s3_event(key: str, bucket: str = BUCKET) -> dict[str, Any]:
    """EventBridge "Object Created" for an existing bucket: the key is NOT URL-encoded."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2024-03-14T00:01:02Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": key,
                "size": 1024,
                "etag": EVENTBRIDGE_ETAG,
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "111122223333",
            "source-ip-address": "10.0.0.1",
            "reason": "PutObject",
        },
    }


def import_job_event(detail_type: str, status: str, **detail: Any) -> dict[str, Any]:
    """The HealthImaging import-job event of the domain reference (§2.2)."""
    return {
        "version": "0",
        "id": "7cf0fb1c-8720-4d48-baa3-6eb97b35a10e",
        "detail-type": detail_type,
        "source": "aws.medical-imaging",
        "account": "111122223333",
        "time": "2024-03-14T00:01:00Z",
        "region": "us-west-2",
        "resources": [f"arn:aws:medical-imaging:us-west-2:111122223333:datastore/{DS2}"],
        "detail": {
            "imagingVersion": "1.0",
            "datastoreId": DS2,
            "jobId": JOB2,
            "jobName": "test_only_1",
            "jobStatus": status,
            "inputS3Uri": "s3://healthimaging-test-bucket/input/",
            "outputS3Uri": "s3://healthimaging-test-bucket/output/",
            **detail,
        },
    }


SCHEDULED_EVENT = {
    "version": "0",
    "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "111122223333",
    "time": "2024-03-14T06:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:111122223333:rule/ahi-verify-reconcile"],
    "detail": {},
}


# --- S3 notifications --------------------------------------------------------------------------------------


def test_s3_put_event_for_a_manifest_names_the_job_and_its_folder() -> None:
    # GIVEN the full S3 put notification for a job's manifest
    event = s3_event(s3_put_record(MANIFEST_KEY))
    # WHEN it is parsed
    refs = parse_trigger_event(event)
    # THEN it announces exactly that job, with its output folder
    assert refs == [JobRef(DS, JOB, FOLDER_URI, "s3", failed=False, manifest_etag=S3_ETAG)]


def test_moto_event_with_slash_encoded_as_percent_2f_is_decoded() -> None:
    # GIVEN moto's reduced record, whose key arrives as job_output%2F...%2Fjob-output-manifest.json
    record = moto_record(MANIFEST_KEY)
    assert "%2F" in record["s3"]["object"]["key"]
    # WHEN it is parsed
    refs = parse_trigger_event(s3_event(record))
    # THEN the key was decoded before it was interpreted
    assert refs == [JobRef(DS, JOB, FOLDER_URI, "s3", manifest_etag=S3_ETAG)]


@pytest.mark.parametrize(
    ("sent_key", "prefix"),
    [
        pytest.param("my+imports/", "my imports/", id="space-as-plus"),
        pytest.param("caf%C3%A9/", "café/", id="non-ascii-percent-encoded"),
        pytest.param("a%2Bb/", "a+b/", id="literal-plus-as-percent-2b"),
        pytest.param("", "", id="job-folder-at-bucket-root"),
        pytest.param("x/y/z/", "x/y/z/", id="deep-prefix"),
    ],
)
def test_encoded_keys_are_decoded_before_the_folder_is_taken(sent_key: str, prefix: str) -> None:
    # GIVEN a record whose prefix S3 URL-encoded
    record = s3_put_record(f"{sent_key}{DS}-DicomImport-{JOB}/job-output-manifest.json")
    # WHEN it is parsed
    (ref,) = parse_trigger_event(s3_event(record))
    # THEN the folder URI is the decoded key's folder
    assert ref.folder_uri == f"s3://{BUCKET}/{prefix}{DS}-DicomImport-{JOB}/"
    assert (ref.datastore_id, ref.job_id) == (DS, JOB)


def test_short_job_id_is_accepted() -> None:
    (ref,) = parse_trigger_event(s3_event(s3_put_record(f"out/{DS}-DicomImport-7/job-output-manifest.json")))
    assert (ref.datastore_id, ref.job_id, ref.folder_uri) == (DS, "7", f"s3://{BUCKET}/out/{DS}-DicomImport-7/")


def test_every_record_of_a_multi_record_event_is_returned_in_order() -> None:
    # GIVEN one delivery carrying two manifests, one of them in moto's shape
    second = f"other/{DS2}-DicomImport-{JOB2}/job-output-manifest.json"
    event = s3_event(s3_put_record(MANIFEST_KEY), moto_record(second, bucket="second-bucket"))
    # WHEN it is parsed
    refs = parse_trigger_event(event)
    # THEN both jobs are announced, in record order
    assert refs == [
        JobRef(DS, JOB, FOLDER_URI, "s3", manifest_etag=S3_ETAG),
        JobRef(DS2, JOB2, f"s3://second-bucket/other/{DS2}-DicomImport-{JOB2}/", "s3", manifest_etag=S3_ETAG),
    ]


def test_redelivered_record_announces_the_same_job_twice() -> None:
    # GIVEN at-least-once delivery of the same record twice in one event
    refs = parse_trigger_event(s3_event(s3_put_record(MANIFEST_KEY), s3_put_record(MANIFEST_KEY)))
    # THEN both are returned unchanged; idempotency is the caller's job, on (datastore, job)
    assert refs == [JobRef(DS, JOB, FOLDER_URI, "s3", manifest_etag=S3_ETAG)] * 2


def test_s3_test_event_is_ignored() -> None:
    # GIVEN the event S3 sends once when a notification configuration is saved
    event = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2024-03-14T00:00:00.000Z",
        "Bucket": BUCKET,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    assert parse_trigger_event(event) == []


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param(
            f"job_output/{DS}-DicomImport-{JOB}/SUCCESS/success.ndjson",
            "is not a job-output-manifest.json",
            id="ndjson-file",
        ),
        pytest.param(
            "job_output/job-output-manifest.json", "is not a <datastoreId>-DicomImport-<jobId>/", id="no-job-folder"
        ),
        pytest.param(
            f"job_output/{DS}-DicomImport-{JOB}/nested/job-output-manifest.json",
            "is not a <datastoreId>-DicomImport-<jobId>/",
            id="manifest-below-the-job-folder",
        ),
        pytest.param(
            f"job_output/{DS2.upper()}-DicomImport-{JOB2}/job-output-manifest.json",
            "is not a <datastoreId>-DicomImport-<jobId>/",
            id="upper-case-datastore-id",
        ),
        pytest.param(
            f"job_output/{DS[:31]}-DicomImport-{JOB}/job-output-manifest.json",
            "is not a <datastoreId>-DicomImport-<jobId>/",
            id="short-datastore-id",
        ),
        pytest.param(
            f"job_output/{DS}-DicomImport-{JOB}0/job-output-manifest.json",
            "is not a <datastoreId>-DicomImport-<jobId>/",
            id="job-id-too-long",
        ),
    ],
)
def test_key_that_is_not_a_job_manifest_is_an_error_naming_record_and_key(key: str, message: str) -> None:
    # GIVEN a record for an object that is not a job's manifest
    event = s3_event(s3_put_record(quote_plus(key, safe="/")))
    # WHEN it is parsed THEN the error names the record and the object
    with pytest.raises(EventError, match=message) as caught:
        parse_trigger_event(event)
    assert str(caught.value).startswith("record 0: ")
    assert f"s3://{BUCKET}/" in str(caught.value)


def test_one_bad_record_among_good_ones_fails_the_event_and_names_it() -> None:
    # GIVEN a good record, a bad one and another good one
    bad = f"job_output/{DS}-DicomImport-{JOB}/FAILURE/failure.ndjson"
    event = s3_event(
        s3_put_record(MANIFEST_KEY),
        s3_put_record(bad),
        moto_record(f"p/{DS2}-DicomImport-{JOB2}/job-output-manifest.json"),
    )
    # WHEN it is parsed THEN the whole event is rejected, naming only the bad record
    with pytest.raises(EventError) as caught:
        parse_trigger_event(event)
    message = str(caught.value)
    assert message == f"record 1: s3://{BUCKET}/{bad} is not a job-output-manifest.json"


def test_every_bad_record_is_named_at_once() -> None:
    event = s3_event(s3_put_record("a/b.txt"), s3_put_record(MANIFEST_KEY), s3_put_record("c/d.txt"))
    with pytest.raises(EventError) as caught:
        parse_trigger_event(event)
    assert str(caught.value) == (
        f"record 0: s3://{BUCKET}/a/b.txt is not a job-output-manifest.json; "
        f"record 2: s3://{BUCKET}/c/d.txt is not a job-output-manifest.json"
    )


@pytest.mark.parametrize(
    ("source", "name"),
    [
        pytest.param("aws:s3", "ObjectRemoved:Delete", id="object-removed"),
        pytest.param("aws:s3", "ObjectRestore:Completed", id="object-restored"),
        pytest.param("aws:sqs", "ObjectCreated:Put", id="not-s3"),
    ],
)
def test_record_that_is_not_an_object_created_event_is_an_error(source: str, name: str) -> None:
    record = s3_put_record(MANIFEST_KEY, event_name=name)
    record["eventSource"] = source
    with pytest.raises(EventError) as caught:
        parse_trigger_event(s3_event(record))
    assert str(caught.value) == f"record 0: {source} {name} is not an S3 ObjectCreated event"


@pytest.mark.parametrize(
    "name", ["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Copy", "ObjectCreated:Post"]
)
def test_every_object_created_variant_is_accepted(name: str) -> None:
    refs = parse_trigger_event(s3_event(s3_put_record(MANIFEST_KEY, event_name=name)))
    assert refs == [JobRef(DS, JOB, FOLDER_URI, "s3", manifest_etag=S3_ETAG)]


def test_object_whose_name_only_ends_with_the_manifest_name_is_rejected() -> None:
    # GIVEN an object the suffix filter lets through but that is not the manifest
    key = f"job_output/{DS}-DicomImport-{JOB}/backup-job-output-manifest.json"
    # WHEN it is parsed THEN it is an error, not a job with a folder URI ending in "backup-"
    with pytest.raises(EventError, match=r"is not a job-output-manifest\.json"):
        parse_trigger_event(s3_event(s3_put_record(key)))


def test_sns_wrapped_records_are_an_event_error() -> None:
    # GIVEN the S3 -> SNS -> Lambda shape (records from SNS, with capitalised keys)
    event = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": "arn:aws:sns:us-east-1:111122223333:t:1",
                "Sns": {"Type": "Notification", "Message": '{"Records": []}'},
            }
        ]
    }
    # WHEN it is parsed THEN the error is the module's own, naming the record
    with pytest.raises(EventError, match="record 0"):
        parse_trigger_event(event)


def test_moto_record_lacks_what_powertools_s3model_would_require() -> None:
    # GIVEN moto's reduced shape (guard: the fixture really is reduced, so the tests above exercise it)
    record = moto_record(MANIFEST_KEY)
    assert not {"userIdentity", "requestParameters", "responseElements"} & record.keys()
    assert not {"ownerIdentity"} & record["s3"]["bucket"].keys()
    assert not {"sequencer", "versionId"} & record["s3"]["object"].keys()
    # WHEN it is parsed THEN nothing of the full shape is needed
    assert parse_trigger_event(s3_event(record)) == [JobRef(DS, JOB, FOLDER_URI, "s3", manifest_etag=S3_ETAG)]


# --- EventBridge S3 "Object Created" -----------------------------------------------------------------------


def test_eventbridge_object_created_names_the_job() -> None:
    refs = parse_trigger_event(eventbridge_s3_event(MANIFEST_KEY))
    assert refs == [JobRef(DS, JOB, FOLDER_URI, "eventbridge-s3", manifest_etag=EVENTBRIDGE_ETAG)]


@pytest.mark.parametrize(
    ("prefix", "folder_prefix"),
    [
        pytest.param("my imports/", "my imports/", id="space-stays-a-space"),
        pytest.param("a+b/", "a+b/", id="plus-stays-a-plus"),
        pytest.param("100%25/", "100%25/", id="percent-is-not-decoded"),
    ],
)
def test_eventbridge_keys_are_not_decoded(prefix: str, folder_prefix: str) -> None:
    # GIVEN an EventBridge event, whose keys are sent as they are
    event = eventbridge_s3_event(f"{prefix}{DS}-DicomImport-{JOB}/job-output-manifest.json")
    # WHEN it is parsed
    (ref,) = parse_trigger_event(event)
    # THEN the key is used verbatim ('+' is not turned into a space)
    assert ref.folder_uri == f"s3://{BUCKET}/{folder_prefix}{DS}-DicomImport-{JOB}/"


def test_eventbridge_object_that_is_not_a_manifest_is_an_error() -> None:
    key = f"job_output/{DS}-DicomImport-{JOB}/SUCCESS/success.ndjson"
    with pytest.raises(EventError) as caught:
        parse_trigger_event(eventbridge_s3_event(key))
    assert str(caught.value) == f"s3://{BUCKET}/{key} is not a job-output-manifest.json"


# --- HealthImaging import-job events -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detail_type", "status", "failed"),
    [
        pytest.param("Import Job Completed", "COMPLETED", False, id="completed"),
        pytest.param("Import Job Failed", "FAILED", True, id="failed"),
    ],
)
def test_import_job_event_names_the_job_without_a_folder(detail_type: str, status: str, failed: bool) -> None:
    # GIVEN the documented import-job event
    event = import_job_event(detail_type, status)
    # WHEN it is parsed
    refs = parse_trigger_event(event)
    # THEN the folder is left to GetDICOMImportJob (detail.outputS3Uri is ambiguous), and failure is flagged
    assert refs == [JobRef(DS2, JOB2, None, "import-job-event", failed=failed)]


def test_import_job_event_output_uri_with_job_folder_is_still_not_trusted() -> None:
    # GIVEN the grand-challenge variant, whose outputS3Uri already includes the job folder
    event = import_job_event(
        "Import Job Completed", "COMPLETED", outputS3Uri=f"s3://b/output/{DS2}-DicomImport-{JOB2}/"
    )
    # THEN the folder is still taken from GetDICOMImportJob
    (ref,) = parse_trigger_event(event)
    assert ref.folder_uri is None


@pytest.mark.parametrize("missing", ["datastoreId", "jobId"])
def test_import_job_event_without_an_id_is_an_error_naming_it(missing: str) -> None:
    event = import_job_event("Import Job Completed", "COMPLETED")
    del event["detail"][missing]
    with pytest.raises(EventError) as caught:
        parse_trigger_event(event)
    assert str(caught.value) == f"Import Job Completed event has no {missing}"


@pytest.mark.parametrize(
    ("detail_type", "status"),
    [
        pytest.param("Import Job Submitted", "SUBMITTED", id="submitted"),
        pytest.param("Import Job In Progress", "IN_PROGRESS", id="in-progress"),
    ],
)
def test_import_job_not_yet_finished_announces_nothing(detail_type: str, status: str) -> None:
    assert parse_trigger_event(import_job_event(detail_type, status)) == []


# --- schedule and everything else --------------------------------------------------------------------------


def test_scheduled_event_asks_for_reconciliation() -> None:
    assert parse_trigger_event(copy.deepcopy(SCHEDULED_EVENT)) == Reconcile()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        pytest.param({}, "source=None detail-type=None", id="empty"),
        pytest.param(
            {**SCHEDULED_EVENT, "source": "aws.health"}, "source='aws.health' detail-type='Scheduled Event'", id="other"
        ),
        pytest.param(
            {**SCHEDULED_EVENT, "detail-type": "Custom Event"},
            "source='aws.events' detail-type='Custom Event'",
            id="aws-events-not-a-schedule",
        ),
        pytest.param(
            {**eventbridge_s3_event(MANIFEST_KEY), "detail-type": "Object Deleted"},
            "source='aws.s3' detail-type='Object Deleted'",
            id="object-deleted",
        ),
        pytest.param({"Event": "s3:SomethingElse"}, "source=None", id="unknown-s3-service-event"),
    ],
)
def test_unsupported_event_is_an_error_naming_what_was_received(event: dict[str, Any], message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_trigger_event(event)


def test_parsing_does_not_modify_the_event() -> None:
    # GIVEN an event the caller (and Powertools idempotency) still holds
    event = s3_event(moto_record(MANIFEST_KEY))
    before = copy.deepcopy(event)
    # WHEN it is parsed THEN it is unchanged (the encoded key is not decoded in place)
    parse_trigger_event(event)
    assert event == before
