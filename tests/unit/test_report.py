"""The job report: its JSON document, the verdict, the problem list, and the self-contained HTML page."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from ahi_verify.frame_check import FrameResult, Reason, Status
from ahi_verify.job import ImportFindings
from ahi_verify.job_output import ImportLine, ImportWarning, JobManifest, LineKind, LineProblem
from ahi_verify.metadata import FrameRef, ResolutionChecksum
from ahi_verify.report import (
    Verdict,
    image_set_document,
    job_header,
    problem_frames,
    render_html,
    report_document,
    verdict,
)
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL, Rule

DS, JOB = "12345678901234567890123456789012", "09876543210987654321098765432109"
ISET_A, ISET_B = "12345612345612345678907890789012", "12345612345612345678917891789012"
FOLDER = f"s3://medical-imaging-output/job_output/{DS}-DicomImport-{JOB}/"
REPORT_URI = f"s3://medical-imaging-output/ahi-verify/reports/{JOB}/report.json"
CRC = 3014344982  # >= 2**31: checksums are unsigned


# --- builders (also used by test_alert.py) -----------------------------------------------------------------


def manifest(*, customer_errors: int = 0, server_errors: int = 0, image_sets: int = 1) -> JobManifest:
    return JobManifest(
        job_id=JOB,
        datastore_id=DS,
        input_s3_uri="s3://medical-imaging-dicom-input/dicom_input/",
        output_s3_uri=FOLDER,
        scanned_files=3 + customer_errors + server_errors,
        imported_files=3,
        customer_error_files=customer_errors,
        server_error_files=server_errors,
        generated_image_sets=image_sets,
        image_sets=(),
    )


def failure(input_file: str = "dicom_input/bad.dcm", message: str = "DICOM attribute missing") -> ImportLine:
    return ImportLine(LineKind.FAILURE, input_file, exception_type="ValidationException", message=message)


def warned(code: int | None, input_file: str = "dicom_input/w.dcm") -> ImportLine:
    return ImportLine(
        LineKind.WARNING,
        input_file,
        image_set_id=ISET_A,
        warnings=(ImportWarning(code, "InvalidOffsetTable", "may see issues when retrieving certain frames"),),
    )


def header(
    *,
    failures: Sequence[ImportLine] = (),
    warnings: Sequence[ImportLine] = (),
    problems: Sequence[LineProblem] = (),
    job_manifest: JobManifest | None = None,
    failure_message: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    findings = ImportFindings(failures=list(failures), warnings=list(warnings), problems=list(problems))
    return job_header(
        job_id=JOB,
        datastore_id=DS,
        folder=FOLDER,
        manifest=job_manifest if job_manifest is not None or failure_message else manifest(),
        findings=findings,
        notes=notes,
        failure_message=failure_message,
    )


def frame(
    number: int,
    status: Status = Status.MATCH,
    *,
    reason: Reason | None = None,
    detail: str | None = None,
    frame_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A frame entry exactly as ``FrameResult.to_json()`` writes it, plus any ``extra`` fields."""
    ref = FrameRef(
        index=number - 1,
        image_frame_id=frame_id or f"{number:032x}",
        series_instance_uid="1.2.840.99.1",
        sop_instance_uid=f"1.2.840.99.1.{number}",
        frame_number=1,
        stored_transfer_syntax_uid=HTJ2K_LOSSLESS_RPCL,
        checksum_type=None,
        full_resolution=ResolutionChecksum(512, 512, CRC),
    )
    actual = {Status.MATCH: CRC, Status.MISMATCH: CRC ^ 1, Status.ERROR: None}[status]
    if status is Status.MISMATCH and reason is None:
        reason = Reason.CHECKSUM_DIFFERS
    result = FrameResult(
        ref,
        status,
        expected=CRC,
        actual=actual,
        rule=Rule.DECODED_HTJ2K if actual is not None else None,
        reason=reason,
        detail=detail,
    )
    return {**result.to_json(), **extra}


def image_set(image_set_id: str, frames: list[dict[str, Any]], *, error: str | None = None) -> dict[str, Any]:
    return image_set_document(image_set_id, 1, True, frames, error=error)


def matching(count: int, start: int = 1) -> list[dict[str, Any]]:
    return [frame(n) for n in range(start, start + count)]


def report(head: dict[str, Any] | None = None, *sets: dict[str, Any]) -> dict[str, Any]:
    return report_document(head if head is not None else header(), list(sets))


# --- the document ------------------------------------------------------------------------------------------


def test_clean_job_document() -> None:
    # GIVEN two image sets whose every frame matched, and an import with no problem
    doc = report(header(), image_set(ISET_A, matching(3)), image_set(ISET_B, matching(2, start=4)))
    # THEN the totals add up and the verdict is CLEAN
    assert doc["verdict"] == "CLEAN"
    assert doc["summary"] == {
        "imageSets": 2,
        "imageSetErrors": 0,
        "frames": {"total": 5, "match": 5, "mismatch": 0, "error": 0},
        "importFailures": 0,
        "importWarnings": 0,
        "unreadableLines": 0,
    }
    assert doc["imageSets"][1]["summary"] == {"total": 2, "match": 2, "mismatch": 0, "error": 0}
    assert doc["job"]["status"] == "COMPLETED"
    assert problem_frames(doc) == []


def test_document_is_json_serialisable_and_round_trips() -> None:
    doc = report(header(failures=[failure()], warnings=[warned(45330)]), image_set(ISET_A, matching(2)))
    assert json.loads(json.dumps(doc)) == doc


def test_header_carries_manifest_totals_and_import_findings() -> None:
    problem = LineProblem(LineKind.SUCCESS, "job_output/x/SUCCESS/success.ndjson", 7, "not valid JSON")
    head = header(
        failures=[failure()],
        warnings=[warned(45330)],
        problems=[problem],
        job_manifest=manifest(customer_errors=1),
        notes=["manifest counts disagree"],
    )
    assert head["job"] == {
        "jobId": JOB,
        "datastoreId": DS,
        "folder": FOLDER,
        "status": "COMPLETED",
        "message": None,
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "scannedFiles": 4,
        "importedFiles": 3,
        "filesWithCustomerError": 1,
        "filesWithServerError": 0,
        "generatedImageSets": 1,
    }
    assert head["failures"] == [
        {
            "inputFile": "dicom_input/bad.dcm",
            "exceptionType": "ValidationException",
            "message": "DICOM attribute missing",
        }
    ]
    assert head["warnings"] == [
        {
            "inputFile": "dicom_input/w.dcm",
            "imageSetId": ISET_A,
            "warnings": [{"code": 45330, "type": "InvalidOffsetTable", "affectsFrames": True}],
        }
    ]
    assert head["unreadableLines"] == [
        {"file": "job_output/x/SUCCESS/success.ndjson", "line": 7, "problem": "not valid JSON"}
    ]
    assert head["notes"] == ["manifest counts disagree"]


# --- the verdict -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "frames", "expected"),
    [
        pytest.param(header, lambda: matching(3), Verdict.CLEAN, id="clean"),
        pytest.param(
            header,
            lambda: [*matching(2), frame(3, Status.MISMATCH)],
            Verdict.MISMATCH,
            id="one-mismatch",
        ),
        pytest.param(
            header,
            lambda: [*matching(2), frame(3, Status.ERROR, reason=Reason.FETCH_FAILED)],
            Verdict.UNVERIFIED,
            id="errors-only",
        ),
        pytest.param(
            header,
            lambda: [frame(1, Status.ERROR, reason=Reason.NO_CHECKSUM), frame(2, Status.MISMATCH)],
            Verdict.MISMATCH,
            id="mismatch-outranks-error",
        ),
        pytest.param(
            lambda: header(failures=[failure()], job_manifest=manifest(customer_errors=1)),
            lambda: matching(3),
            Verdict.UNVERIFIED,
            id="completed-job-with-failed-file-all-match",
        ),
        pytest.param(
            lambda: header(failures=[failure()]),
            lambda: matching(3),
            Verdict.UNVERIFIED,
            id="failure-line-without-manifest-count",
        ),
        pytest.param(
            lambda: header(job_manifest=manifest(server_errors=1)),
            lambda: matching(3),
            Verdict.UNVERIFIED,
            id="manifest-server-error-without-failure-line",
        ),
        pytest.param(
            lambda: header(job_manifest=manifest(customer_errors=2)),
            lambda: matching(3),
            Verdict.UNVERIFIED,
            id="manifest-customer-error-without-failure-line",
        ),
        pytest.param(
            lambda: header(problems=[LineProblem(LineKind.FAILURE, "FAILURE/failure.ndjson", 1, "not valid JSON")]),
            lambda: matching(3),
            Verdict.UNVERIFIED,
            id="unreadable-ndjson-line",
        ),
        pytest.param(header, list, Verdict.UNVERIFIED, id="zero-frames-is-never-clean"),
    ],
)
def test_verdict(head: Any, frames: Any, expected: Verdict) -> None:
    # GIVEN a job header and one image set's frames
    doc = report(head(), image_set(ISET_A, frames()))
    # THEN the verdict is decided worst-first
    assert doc["verdict"] == expected.value
    assert verdict(doc) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(45312, Verdict.UNVERIFIED, id="0xB100-transcoding-exception"),
        pytest.param(45328, Verdict.UNVERIFIED, id="0xB110-frames-extraction-failure"),
        pytest.param(45329, Verdict.UNVERIFIED, id="0xB111-frame-number-mismatch"),
        pytest.param(45330, Verdict.UNVERIFIED, id="0xB112-invalid-offset-table"),
        pytest.param(45344, Verdict.UNVERIFIED, id="0xB120-unsupported-transfer-syntax"),
        pytest.param(45331, Verdict.CLEAN, id="0xB113-not-frame-affecting"),
        pytest.param(1, Verdict.CLEAN, id="unrelated-code"),
        pytest.param(None, Verdict.CLEAN, id="no-numeric-code"),
    ],
)
def test_only_frame_affecting_warning_codes_make_a_matching_job_unverified(code: int | None, expected: Verdict) -> None:
    # GIVEN every frame matched, but a file was imported with a warning
    doc = report(header(warnings=[warned(code)]), image_set(ISET_A, matching(2)))
    # THEN the verdict depends on the numeric code alone
    assert doc["verdict"] == expected.value
    assert doc["summary"]["importWarnings"] == 1


def test_image_set_that_could_not_be_read_is_unverified() -> None:
    doc = report(
        header(),
        image_set(ISET_A, matching(2)),
        image_set(ISET_B, [], error="GetImageSetMetadata failed: AccessDeniedException"),
    )
    assert doc["verdict"] == "UNVERIFIED"
    assert doc["summary"]["imageSetErrors"] == 1


def test_failed_import_job_is_import_failed() -> None:
    # GIVEN a job whose GetDICOMImportJob status is FAILED, with no manifest and no frames
    head = header(failure_message="Unable to access input S3 location")
    doc = report(head)
    # THEN the verdict says the import failed, not that verification was incomplete
    assert doc["verdict"] == "IMPORT_FAILED"
    assert (doc["job"]["status"], doc["job"]["message"]) == ("FAILED", "Unable to access input S3 location")
    assert doc["job"]["scannedFiles"] is None


def test_mismatch_outranks_a_failed_import() -> None:
    doc = report(header(failure_message="failed"), image_set(ISET_A, [frame(1, Status.MISMATCH)]))
    assert doc["verdict"] == "MISMATCH"


@pytest.mark.parametrize(
    "relation",
    [
        "import-changed-pixels",
        "storage-corrupted",
        "stored-checksum-wrong",
        "all-differ",
        "source-differs-from-stored",
    ],
)
def test_source_relation_that_means_changed_pixels_is_a_mismatch_even_when_the_frame_matched(relation: str) -> None:
    # GIVEN a frame whose stored checksum matched, but whose source file disagrees
    source = {"ifrc": CRC ^ 7, "relation": relation, "inputFile": "dicom_input/1.dcm"}
    doc = report(header(), image_set(ISET_A, [frame(1), frame(2, source=source)]))
    # THEN the job is a MISMATCH
    assert doc["verdict"] == "MISMATCH"
    assert doc["summary"]["frames"]["mismatch"] == 0


def test_a_frame_consistent_with_its_source_leaves_the_job_clean() -> None:
    source = {"ifrc": CRC, "relation": "consistent", "inputFile": "dicom_input/1.dcm"}
    doc = report(header(), image_set(ISET_A, [frame(1, source=source)]))
    assert doc["verdict"] == "CLEAN"


@pytest.mark.parametrize("relation", ["no-source-frame", "source-unreadable", "source-agrees-with-stored"])
def test_a_frame_the_three_way_check_could_not_compare_leaves_the_job_unverified(relation: str) -> None:
    # GIVEN a frame that matched its published checksum but could not be compared with its source
    source = {"ifrc": None, "relation": relation, "inputFile": None}
    doc = report(header(), image_set(ISET_A, [frame(1, source=source)]))
    # THEN the job is not clean (nor a mismatch): the source check is incomplete
    assert doc["verdict"] == "UNVERIFIED"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sourceErrors", [{"inputFile": "dicom_input/1.dcm", "error": "not a DICOM file"}]),
        ("orphanSourceFrames", ["dicom_input/1.dcm frame 2"]),
    ],
    ids=["source-file-unreadable", "source-frame-lost"],
)
def test_source_files_that_were_unreadable_or_lost_frames_leave_the_job_unverified(field: str, value: object) -> None:
    # GIVEN every stored frame matched and agreed with its source, but the image set lists a source problem
    source = {"ifrc": CRC, "relation": "consistent", "inputFile": "dicom_input/1.dcm"}
    entry = {**image_set(ISET_A, [frame(1, source=source)]), "sourceErrors": [], "orphanSourceFrames": []}
    entry[field] = value
    # WHEN the report is built THEN it is UNVERIFIED, never CLEAN
    assert report(header(), entry)["verdict"] == "UNVERIFIED"


# --- the problem list --------------------------------------------------------------------------------------


def test_problem_frames_lists_non_matching_frames_mismatches_first() -> None:
    # GIVEN errors and mismatches interleaved across two image sets
    a_error = frame(1, Status.ERROR, reason=Reason.FETCH_FAILED)
    a_mismatch = frame(2, Status.MISMATCH)
    b_error = frame(3, Status.ERROR, reason=Reason.TRUNCATED)
    b_mismatch = frame(4, Status.MISMATCH)
    doc = report(header(), image_set(ISET_A, [a_error, frame(5), a_mismatch]), image_set(ISET_B, [b_error, b_mismatch]))
    # WHEN the problems are listed
    listed = [(iset, f["imageFrameId"]) for iset, f in problem_frames(doc)]
    # THEN mismatches come first, each group in report order, and matches are absent
    assert listed == [
        (ISET_A, a_mismatch["imageFrameId"]),
        (ISET_B, b_mismatch["imageFrameId"]),
        (ISET_A, a_error["imageFrameId"]),
        (ISET_B, b_error["imageFrameId"]),
    ]


def test_frame_that_is_a_mismatch_by_its_source_relation_is_listed() -> None:
    # GIVEN the only reason for a MISMATCH verdict is a source relation
    source = {"ifrc": CRC ^ 7, "relation": "storage-corrupted", "inputFile": "dicom_input/1.dcm"}
    corrupted = frame(2, source=source)
    doc = report(header(), image_set(ISET_A, [frame(1), corrupted]))
    assert doc["verdict"] == "MISMATCH"
    # THEN that frame appears among the problems
    assert [f["imageFrameId"] for _, f in problem_frames(doc)] == [corrupted["imageFrameId"]]


# --- HTML --------------------------------------------------------------------------------------------------

SCRIPT = "<script>alert(1)</script>"


def hostile_report() -> dict[str, Any]:
    """A report whose every free-text field carries markup."""
    head = header(
        failures=[failure(input_file=f"dicom_input/{SCRIPT}.dcm", message=SCRIPT)],
        warnings=[warned(45330, input_file=f"dicom_input/{SCRIPT}w.dcm")],
        notes=[SCRIPT],
    )
    head["job"]["message"] = SCRIPT
    return report(
        head,
        image_set(ISET_A, [frame(1), frame(2, Status.ERROR, reason=Reason.DECODE_FAILED, detail=SCRIPT)]),
        image_set(ISET_B, [], error=SCRIPT),
    )


def test_html_escapes_every_free_text_field() -> None:
    # GIVEN markup in a frame detail, a failure, a warning's file, a note, an image set error and the job message
    page = render_html(hostile_report())
    # THEN none of it comes out as markup
    assert "<script" not in page.lower()
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 7


def test_html_is_self_contained() -> None:
    # GIVEN a report with every section filled
    doc = report(
        header(failures=[failure()], warnings=[warned(45330)], notes=["a note"]),
        image_set(ISET_A, [frame(1), frame(2, Status.MISMATCH), frame(3, Status.ERROR, reason=Reason.NO_CHECKSUM)]),
    )
    page = render_html(doc)
    # THEN the page loads nothing and runs nothing
    assert "<script" not in page.lower()
    assert not re.search(r"https?://", page)
    assert not re.search(r"\b(src|href)\s*=|url\(|@import", page, re.IGNORECASE)
    assert page.startswith("<!doctype html>")
    assert page.rstrip().endswith("</html>")
    # AND it shows the job and data store IDs, the verdict and the output folder
    assert f"<h1>Import job {JOB}</h1>" in page
    assert '<p class="verdict">MISMATCH</p>' in page
    assert DS in page
    assert FOLDER in page


def test_html_lists_problems_before_the_image_set_table() -> None:
    mismatch = frame(2, Status.MISMATCH)
    doc = report(header(failures=[failure()]), image_set(ISET_A, [frame(1), mismatch]))
    page = render_html(doc)
    problems = page.index("<h2>Frames that did not match</h2>")
    rejected = page.index("<h2>Files the import rejected</h2>")
    table = page.index("<h2>Image sets</h2>")
    assert problems < rejected < table
    row = page.index(mismatch["imageFrameId"])
    assert problems < row < table
    # AND the row carries the expected and the actual checksum
    assert f"<td>{CRC}</td><td>{CRC ^ 1}</td><td>checksum-differs</td>" in page


def test_html_of_a_clean_job_has_no_problem_sections() -> None:
    page = render_html(report(header(), image_set(ISET_A, matching(2))))
    assert '<p class="verdict">CLEAN</p>' in page
    for title in ("Frames that did not match", "Files the import rejected", "Files imported with warnings", "Notes"):
        assert title not in page
    assert f"<tr><td>{ISET_A}</td><td>1</td><td>2</td><td>2</td><td>0</td><td>0</td><td></td></tr>" in page


def test_html_of_a_failed_job_shows_its_escaped_message() -> None:
    page = render_html(report(header(failure_message="bucket <b>&</b> denied")))
    assert "job failed: bucket &lt;b&gt;&amp;&lt;/b&gt; denied" in page
    assert '<p class="verdict">IMPORT_FAILED</p>' in page


def test_html_error_frame_without_checksums_shows_dashes() -> None:
    entry = frame(1, Status.ERROR, reason=Reason.NO_CHECKSUM, detail="no checksum in metadata")
    entry["expected"] = None
    page = render_html(report(header(), image_set(ISET_A, [entry])))
    assert "<td>-</td><td>-</td><td>no-checksum-in-metadata no checksum in metadata</td>" in page
