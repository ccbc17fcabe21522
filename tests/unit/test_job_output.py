"""Parsing an import job's output: the manifest and the ndjson lines, as the service writes them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ahi_verify.ids import parse_job_folder
from ahi_verify.job_output import ImportLine, LineKind, LineProblem, ManifestError, parse_line, parse_manifest

DS, JOB = "12345678901234567890123456789012", "09876543210987654321098765432109"
FOLDER = f"s3://medical-imaging-output/job_output/{DS}-DicomImport-{JOB}/"

# The documented example manifest, verbatim in shape.
MANIFEST: dict[str, Any] = {
    "jobSummary": {
        "jobId": JOB,
        "datastoreId": DS,
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "outputS3Uri": FOLDER,
        "successOutputS3Uri": FOLDER + "SUCCESS/",
        "failureOutputS3Uri": FOLDER + "FAILURE/",
        "warningsOutputS3Uri": FOLDER + "WARNING/",
        "numberOfScannedFiles": 5,
        "numberOfImportedFiles": 3,
        "numberOfFilesWithCustomerError": 2,
        "numberOfFilesWithServerError": 0,
        "numberOfGeneratedImageSets": 2,
        "imageSetsSummary": [
            {
                "imageSetId": "12345612345612345678907890789012",
                "imageSetVersion": 1,
                "isPrimary": True,
                "numberOfMatchedSOPInstances": 2,
            },
            {"imageSetId": "12345612345612345678917891789012", "numberOfMatchedSOPInstances": 1},
        ],
    }
}


def test_documented_manifest_parses() -> None:
    manifest = parse_manifest(json.dumps(MANIFEST).encode(), "s3://b/k")
    assert (manifest.job_id, manifest.datastore_id, manifest.failed_files) == (JOB, DS, 2)
    first, second = manifest.image_sets
    assert (first.version, first.is_primary, first.matched_sop_instances) == (1, True, 2)
    assert (second.version, second.is_primary) == (None, None)


def test_duplicate_image_set_entries_are_merged_and_counted() -> None:
    doc = json.loads(json.dumps(MANIFEST))
    doc["jobSummary"]["imageSetsSummary"].append(doc["jobSummary"]["imageSetsSummary"][0])
    manifest = parse_manifest(json.dumps(doc).encode(), "s3://b/k")
    assert len(manifest.image_sets) == 2
    assert manifest.duplicate_image_set_entries == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda d: d.pop("jobSummary"), "no jobSummary", id="no-summary"),
        pytest.param(lambda d: d["jobSummary"].pop("jobId"), r"jobSummary\.jobId", id="no-job-id"),
        pytest.param(
            lambda d: d["jobSummary"].update(numberOfImportedFiles="3"), "numberOfImportedFiles", id="count-as-string"
        ),
        pytest.param(lambda d: d["jobSummary"].update(imageSetsSummary=None), "imageSetsSummary", id="no-image-sets"),
        pytest.param(
            lambda d: d["jobSummary"]["imageSetsSummary"][1].update(imageSetId="nope"),
            r"imageSetsSummary\[1\]\.imageSetId",
            id="bad-image-set-id",
        ),
    ],
)
def test_malformed_manifest_names_the_field(mutate: Any, message: str) -> None:
    doc = json.loads(json.dumps(MANIFEST))
    mutate(doc)
    with pytest.raises(ManifestError, match=message) as caught:
        parse_manifest(json.dumps(doc).encode(), "s3://bucket/key.json")
    assert "s3://bucket/key.json" in str(caught.value)


def test_manifest_that_is_not_json() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"<Error>AccessDenied</Error>", "s3://b/k")


def test_documented_lines_parse() -> None:
    success = parse_line(
        LineKind.SUCCESS,
        b'{"inputFile":"dicom_input/1.dcm","importResponse":{"imageSetId":"12345612345612345678907890789012",'
        b'"isPrimary":true}}',
        "SUCCESS/success.ndjson",
        1,
    )
    failure = parse_line(
        LineKind.FAILURE,
        b'{"inputFile":"dicom_input/bad.dcm","exception":{"exceptionType":"ValidationException",'
        b'"message":"DICOM attribute TransferSyntaxUID does not exist"}}',
        "FAILURE/failure.ndjson",
        1,
    )
    warning = parse_line(
        LineKind.WARNING,
        b'{"inputFile":"dicom_input/w.dcm","importResponse":{"imageSetId":"12345612345612345678907890789012",'
        b'"imageSetVersion":1,"isPrimary":true,"warnings":[{"warning_reason_code":45330,'
        b'"type":"InvalidOffsetTable","message":"invalid offset table"}]}}',
        "WARNING/warning.ndjson",
        1,
    )
    assert isinstance(success, ImportLine)
    assert success.is_primary is True
    assert isinstance(failure, ImportLine)
    assert failure.exception_type == "ValidationException"
    assert isinstance(warning, ImportLine)
    (w,) = warning.warnings
    assert (w.code, w.affects_frames, warning.image_set_version) == (45330, True, 1)


@pytest.mark.parametrize(
    ("kind", "line", "problem"),
    [
        pytest.param(LineKind.SUCCESS, b'{"inputFile": "a.dcm", "importResponse": ', "not valid JSON", id="cut"),
        pytest.param(LineKind.SUCCESS, b"[1]", "not a JSON object", id="array"),
        pytest.param(LineKind.SUCCESS, b'{"importResponse": {"imageSetId": "x"}}', "inputFile", id="no-input"),
        pytest.param(LineKind.SUCCESS, b'{"inputFile": "a.dcm"}', "importResponse", id="no-response"),
        pytest.param(LineKind.FAILURE, b'{"inputFile": "a.dcm"}', "exception", id="failure-no-exception"),
        pytest.param(
            LineKind.WARNING, b'{"inputFile": "a.dcm", "importResponse": {"imageSetId": "x"}}', "warnings", id="no-list"
        ),
        pytest.param(LineKind.SUCCESS, b"\xff\xfe", "not valid JSON", id="not-utf8"),
    ],
)
def test_malformed_lines_become_findings_with_location(kind: LineKind, line: bytes, problem: str) -> None:
    parsed = parse_line(kind, line, "SUCCESS/part-2.ndjson", 17)
    assert isinstance(parsed, LineProblem)
    assert problem in parsed.problem
    assert (parsed.key, parsed.line_number) == ("SUCCESS/part-2.ndjson", 17)
    assert "a.dcm" not in parsed.problem  # the line's content (file names) is never echoed


def test_python_style_true_is_a_finding_not_a_crash() -> None:
    # The AWS guide's example prints `True`; real files use JSON `true`.
    parsed = parse_line(
        LineKind.SUCCESS, b'{"inputFile":"a","importResponse":{"imageSetId":"b","isPrimary":True}}', "k", 3
    )
    assert isinstance(parsed, LineProblem)


def test_blank_lines_are_skipped() -> None:
    assert parse_line(LineKind.SUCCESS, b"   \r", "k", 1) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(f"job_output/{DS}-DicomImport-{JOB}/job-output-manifest.json", (DS, JOB), id="manifest-key"),
        pytest.param(FOLDER, (DS, JOB), id="folder-uri"),
        pytest.param(f"{DS}-DicomImport-{JOB}/", (DS, JOB), id="bucket-root"),
        pytest.param("job_output/other/job-output-manifest.json", None, id="not-a-job-folder"),
        pytest.param(f"x/{'A' * 32}-DicomImport-{JOB}/", None, id="uppercase"),
    ],
)
def test_job_folder_ids(path: str, expected: tuple[str, str] | None) -> None:
    assert parse_job_folder(path) == expected
