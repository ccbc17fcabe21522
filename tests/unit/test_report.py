"""The job report: its JSON document, the verdict, the problem list, and the self-contained HTML page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import ahi_verify
from ahi_verify.documents import ReportFormatError
from ahi_verify.job_output import ImportLine, ImportWarning, JobManifest, LineKind, LineProblem
from ahi_verify.locations import S3Location
from ahi_verify.metadata import FrameRef, ResolutionChecksum
from ahi_verify.outcomes import MISMATCH_RELATIONS, Reason, Status, ThreeWay
from ahi_verify.plan import JobPlan, LineTally, PlannedImageSet, failed_job_plan
from ahi_verify.report import (
    FrameResult,
    ImageSetReport,
    ImportFindings,
    JobHeader,
    JobReport,
    SourceComparison,
    SourceFileProblem,
    Timings,
    Verdict,
)
from ahi_verify.report_html import render_html
from ahi_verify.syntax import HTJ2K_LOSSLESS_RPCL, Rule
from ahi_verify.work import with_source

DS, JOB = "12345678901234567890123456789012", "09876543210987654321098765432109"
ISET_A, ISET_B = "12345612345612345678907890789012", "12345612345612345678917891789012"
FOLDER = f"s3://medical-imaging-output/job_output/{DS}-DicomImport-{JOB}/"
REPORT_URI = f"s3://medical-imaging-output/ahi-verify/reports/{JOB}/report.json"
CRC = 3014344982  # >= 2**31: checksums are unsigned
STARTED = "2026-12-01T00:00:00+00:00"


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


@dataclass(frozen=True)
class Head:
    """Everything of a report but its image sets."""

    job: JobHeader
    findings: ImportFindings
    notes: tuple[str, ...]


def header(
    *,
    failures: Sequence[ImportLine] = (),
    warnings: Sequence[ImportLine] = (),
    problems: Sequence[LineProblem] = (),
    job_manifest: JobManifest | None = None,
    failure_message: str | None = None,
    notes: Sequence[str] = (),
) -> Head:
    """The header the trigger plans: from the manifest (or a failed job) and the ndjson lines."""
    tally = LineTally(failures=list(failures), warnings=list(warnings), problems=list(problems))
    folder = S3Location.parse(FOLDER)
    if failure_message is not None:
        plan = failed_job_plan(DS, JOB, folder, failure_message, STARTED)
        job = plan.job
    else:
        m = job_manifest or manifest()
        job = JobHeader(
            job_id=JOB,
            datastore_id=DS,
            folder=FOLDER,
            input_s3_uri=m.input_s3_uri,
            scanned_files=m.scanned_files,
            imported_files=m.imported_files,
            files_with_customer_error=m.customer_error_files,
            files_with_server_error=m.server_error_files,
            generated_image_sets=m.generated_image_sets,
        )
    return Head(job, tally.findings(), tuple(notes))


def frame(
    number: int,
    status: Status = Status.MATCH,
    *,
    reason: Reason | None = None,
    detail: str | None = None,
    frame_id: str | None = None,
    source: SourceComparison | None = None,
    expected: int | None = CRC,
) -> FrameResult:
    """A frame as a worker reports it: the frame check's result, and its source comparison if any."""
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
    result = FrameResult.of(
        ref,
        status,
        expected=expected,
        actual=actual,
        rule=Rule.DECODED_HTJ2K if actual is not None else None,
        reason=reason,
        detail=detail,
    )
    return with_source(result, source) if source is not None else result


def source_of(
    relation: str, ifrc: int | None = CRC ^ 7, input_file: str | None = "dicom_input/1.dcm"
) -> SourceComparison:
    return SourceComparison(ifrc, ThreeWay(relation), input_file)


def image_set(
    image_set_id: str,
    frames: Sequence[FrameResult],
    *,
    error: str | None = None,
    source_errors: Sequence[SourceFileProblem] = (),
    orphans: Sequence[str] = (),
) -> ImageSetReport:
    return ImageSetReport(
        image_set_id=image_set_id,
        version=1,
        is_primary=True,
        error=error,
        frames=tuple(frames),
        source_errors=tuple(source_errors),
        orphan_source_frames=tuple(orphans),
    )


def matching(count: int, start: int = 1) -> list[FrameResult]:
    return [frame(n) for n in range(start, start + count)]


def report(head: Head | None = None, *sets: ImageSetReport) -> JobReport:
    head = head if head is not None else header()
    return JobReport(job=head.job, findings=head.findings, notes=head.notes, image_sets=sets)


# --- the document ------------------------------------------------------------------------------------------


def test_clean_job_document() -> None:
    # GIVEN two image sets whose every frame matched, and an import with no problem
    rep = report(header(), image_set(ISET_A, matching(3)), image_set(ISET_B, matching(2, start=4)))
    doc = rep.to_json()
    # THEN the totals add up and the verdict is CLEAN
    assert doc["verdict"] == "CLEAN"
    assert doc["summary"] == {
        "imageSets": 2,
        "imageSetErrors": 0,
        "frames": {"total": 5, "match": 5, "mismatch": 0, "error": 0},
        "importFailures": 0,
        "importWarnings": 0,
        "unreadableLines": 0,
        "lossyDecoderDiffers": 0,
    }
    assert doc["imageSets"][1]["summary"] == {"total": 2, "match": 2, "mismatch": 0, "error": 0}
    assert doc["job"]["status"] == "COMPLETED"
    assert rep.problem_frames() == []


def test_document_is_json_serialisable_and_round_trips_exactly() -> None:
    # GIVEN a report with every kind of entry, the three-way check included
    rep = report(
        header(failures=[failure()], warnings=[warned(45330)], notes=["a note"]),
        image_set(ISET_A, [*matching(2), frame(3, Status.MISMATCH), frame(4, source=source_of("consistent", CRC))]),
        image_set(ISET_B, [], error="GetImageSetMetadata failed", source_errors=[SourceFileProblem("in/1.dcm", "x")]),
    )
    rep = replace(rep, timings=Timings(STARTED, STARTED, 2, 1.5))
    doc = rep.to_json()
    # WHEN it goes through JSON text and back into the model
    again = JobReport.from_json(json.loads(json.dumps(doc)))
    # THEN nothing is lost or changed
    assert again == rep
    assert again.to_json() == doc


def test_from_json_rejects_a_report_whose_verdict_was_edited() -> None:
    # GIVEN a MISMATCH report whose verdict was changed to CLEAN after it was written
    doc = report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])).to_json()
    doc["verdict"] = "CLEAN"
    # THEN reading it fails and says why
    with pytest.raises(
        ReportFormatError, match=r"report.verdict is 'CLEAN', but the document's own values give 'MISMATCH'"
    ):
        JobReport.from_json(doc)


def test_from_json_rejects_counts_that_do_not_add_up() -> None:
    doc = report(header(), image_set(ISET_A, matching(2))).to_json()
    doc["imageSets"][0]["summary"]["match"] = 3
    with pytest.raises(ReportFormatError, match=r"report.imageSets\[0\].summary"):
        JobReport.from_json(doc)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda d: d.pop("job"), "job is not an object", id="no-job"),
        pytest.param(
            lambda d: d["imageSets"][0]["frames"][0].update(status="FINE"), "status is not one of", id="status"
        ),
        pytest.param(lambda d: d["imageSets"][0]["frames"][0].update(index="1"), "index is not an integer", id="index"),
        pytest.param(lambda d: d.update(schemaVersion=2), "schemaVersion is not 1", id="schema-version"),
        pytest.param(lambda d: d.update(notes="x"), "notes is not a list of strings", id="notes"),
    ],
)
def test_from_json_names_the_malformed_field(edit: Any, message: str) -> None:
    doc = report(header(), image_set(ISET_A, matching(1))).to_json()
    edit(doc)
    with pytest.raises(ReportFormatError, match=message):
        JobReport.from_json(doc)


def test_header_carries_manifest_totals_and_import_findings() -> None:
    problem = LineProblem(LineKind.SUCCESS, "job_output/x/SUCCESS/success.ndjson", 7, "not valid JSON")
    head = header(
        failures=[failure()],
        warnings=[warned(45330)],
        problems=[problem],
        job_manifest=manifest(customer_errors=1),
        notes=["manifest counts disagree"],
    )
    doc = report(head).to_json()
    assert doc["job"] == {
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
    assert doc["failures"] == [
        {
            "inputFile": "dicom_input/bad.dcm",
            "exceptionType": "ValidationException",
            "message": "DICOM attribute missing",
        }
    ]
    assert doc["warnings"] == [
        {
            "inputFile": "dicom_input/w.dcm",
            "imageSetId": ISET_A,
            "warnings": [{"code": 45330, "type": "InvalidOffsetTable", "affectsFrames": True}],
        }
    ]
    assert doc["unreadableLines"] == [
        {"file": "job_output/x/SUCCESS/success.ndjson", "line": 7, "problem": "not valid JSON"}
    ]
    assert doc["notes"] == ["manifest counts disagree"]


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
    rep = report(head(), image_set(ISET_A, frames()))
    # THEN the verdict is decided worst-first, the same in the model and in the document
    assert rep.verdict is expected
    assert rep.to_json()["verdict"] == expected.value


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
    rep = report(header(warnings=[warned(code)]), image_set(ISET_A, matching(2)))
    # THEN the verdict depends on the numeric code alone
    assert rep.verdict is expected
    assert rep.summary.import_warnings == 1


def test_image_set_that_could_not_be_read_is_unverified() -> None:
    rep = report(
        header(),
        image_set(ISET_A, matching(2)),
        image_set(ISET_B, [], error="GetImageSetMetadata failed: AccessDeniedException"),
    )
    assert rep.verdict is Verdict.UNVERIFIED
    assert rep.summary.image_set_errors == 1


def test_failed_import_job_is_import_failed() -> None:
    # GIVEN a job whose GetDICOMImportJob status is FAILED, with no manifest and no frames
    doc = report(header(failure_message="Unable to access input S3 location")).to_json()
    # THEN the verdict says the import failed, not that verification was incomplete
    assert doc["verdict"] == "IMPORT_FAILED"
    assert (doc["job"]["status"], doc["job"]["message"]) == ("FAILED", "Unable to access input S3 location")
    assert doc["job"]["scannedFiles"] is None


def test_mismatch_outranks_a_failed_import() -> None:
    rep = report(header(failure_message="failed"), image_set(ISET_A, [frame(1, Status.MISMATCH)]))
    assert rep.verdict is Verdict.MISMATCH


@pytest.mark.parametrize("relation", sorted(MISMATCH_RELATIONS))
@pytest.mark.parametrize("checked", [Status.MATCH, Status.ERROR], ids=["check-matched", "check-could-not-decode"])
def test_source_relation_that_means_changed_pixels_is_a_mismatch_everywhere(relation: str, checked: Status) -> None:
    # GIVEN a frame whose stored-checksum check matched (or could not decode), but whose source file disagrees
    bad = frame(
        2, checked, reason=Reason.DECODE_FAILED if checked is Status.ERROR else None, source=source_of(relation)
    )
    rep = report(header(), image_set(ISET_A, [frame(1), bad]))
    doc = rep.to_json()
    # THEN the frame itself is a MISMATCH, with a reason, and every count says so
    assert (bad.status, bad.reason) == (Status.MISMATCH, Reason.DIFFERS_FROM_SOURCE)
    assert relation in (bad.detail or "")
    assert doc["verdict"] == "MISMATCH"
    assert doc["summary"]["frames"] == {"total": 2, "match": 1, "mismatch": 1, "error": 0}
    assert doc["imageSets"][0]["summary"]["mismatch"] == 1
    assert doc["imageSets"][0]["frames"][1]["status"] == "MISMATCH"


def test_a_frame_cannot_be_built_that_matches_while_its_source_says_mismatch() -> None:
    # GIVEN the one invariant the model keeps: no MATCH frame with a mismatch relation
    good = frame(1)
    with pytest.raises(ValueError, match="is a mismatch"):
        replace(good, source=source_of("import-changed-pixels"))


def test_a_frame_consistent_with_its_source_leaves_the_job_clean() -> None:
    rep = report(header(), image_set(ISET_A, [frame(1, source=source_of("consistent", CRC))]))
    assert rep.verdict is Verdict.CLEAN


@pytest.mark.parametrize("relation", ["no-source-frame", "source-unreadable", "source-agrees-with-stored"])
def test_a_frame_the_three_way_check_could_not_compare_leaves_the_job_unverified(relation: str) -> None:
    # GIVEN a frame that matched its published checksum but could not be compared with its source
    rep = report(header(), image_set(ISET_A, [frame(1, source=source_of(relation, None, None))]))
    # THEN the job is not clean (nor a mismatch): the source check is incomplete
    assert rep.verdict is Verdict.UNVERIFIED
    assert rep.summary.frames.match == 1


@pytest.mark.parametrize(
    ("problems", "orphans"),
    [
        ([SourceFileProblem("dicom_input/1.dcm", "not a DICOM file")], []),
        ([], ["dicom_input/1.dcm: frame 2"]),
    ],
    ids=["source-file-unreadable", "source-frame-lost"],
)
def test_source_files_that_were_unreadable_or_lost_frames_leave_the_job_unverified(
    problems: list[SourceFileProblem], orphans: list[str]
) -> None:
    # GIVEN every stored frame matched and agreed with its source, but the image set lists a source problem
    entry = image_set(ISET_A, [frame(1, source=source_of("consistent", CRC))], source_errors=problems, orphans=orphans)
    # WHEN the report is built THEN it is UNVERIFIED, never CLEAN
    assert report(header(), entry).verdict is Verdict.UNVERIFIED


# --- the problem list --------------------------------------------------------------------------------------


def test_problem_frames_lists_non_matching_frames_mismatches_first() -> None:
    # GIVEN errors and mismatches interleaved across two image sets
    a_error = frame(1, Status.ERROR, reason=Reason.FETCH_FAILED)
    a_mismatch = frame(2, Status.MISMATCH)
    b_error = frame(3, Status.ERROR, reason=Reason.TRUNCATED)
    b_mismatch = frame(4, Status.MISMATCH)
    rep = report(header(), image_set(ISET_A, [a_error, frame(5), a_mismatch]), image_set(ISET_B, [b_error, b_mismatch]))
    # WHEN the problems are listed
    listed = [(iset, f.image_frame_id) for iset, f in rep.problem_frames()]
    # THEN mismatches come first, each group in report order, and matches are absent
    assert listed == [
        (ISET_A, a_mismatch.image_frame_id),
        (ISET_B, b_mismatch.image_frame_id),
        (ISET_A, a_error.image_frame_id),
        (ISET_B, b_error.image_frame_id),
    ]


def test_frame_that_is_a_mismatch_by_its_source_relation_is_listed() -> None:
    # GIVEN the only reason for a MISMATCH verdict is a source relation
    corrupted = frame(2, source=source_of("storage-corrupted"))
    rep = report(header(), image_set(ISET_A, [frame(1), corrupted]))
    assert rep.verdict is Verdict.MISMATCH
    # THEN that frame appears among the problems
    assert [f.image_frame_id for _, f in rep.problem_frames()] == [corrupted.image_frame_id]


# --- the published schema ----------------------------------------------------------------------------------

SCHEMA_PATH = Path(ahi_verify.__file__).with_name("report.schema.json")


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize(
    ("pointer", "values"),
    [
        pytest.param("frame.status", {s.value for s in Status}, id="status"),
        pytest.param("frame.reason", {r.value for r in Reason} | {None}, id="reason"),
        pytest.param("frame.rule", {r.value for r in Rule} | {None}, id="rule"),
        pytest.param("verdict", {v.value for v in Verdict}, id="verdict"),
    ],
)
def test_the_schema_enumerates_exactly_the_model_s_values(pointer: str, values: set[str | None]) -> None:
    # GIVEN the schema file shipped beside the model
    schema = json.loads(SCHEMA_PATH.read_text())
    node = schema["properties"]["verdict"] if pointer == "verdict" else schema["$defs"]["frame"]["properties"]
    if pointer != "verdict":
        node = node[pointer.split(".")[1]]
    # THEN it allows exactly what the model can write: no drift either way
    assert set(node["enum"]) == values


def test_the_schema_s_relations_and_mismatch_rule_follow_the_model() -> None:
    frame_schema = json.loads(SCHEMA_PATH.read_text())["$defs"]["frame"]
    source = frame_schema["properties"]["source"]["oneOf"][1]
    assert set(source["properties"]["relation"]["enum"]) == {t.value for t in ThreeWay}
    rule = frame_schema["allOf"][0]["if"]["properties"]["source"]["properties"]["relation"]["enum"]
    assert set(rule) == {t.value for t in MISMATCH_RELATIONS}


def test_the_schema_rejects_a_match_frame_with_a_mismatch_relation() -> None:
    # GIVEN a document edited so that a frame says MATCH although its source comparison says import-changed-pixels
    doc = report(header(), image_set(ISET_A, [frame(1, source=source_of("import-changed-pixels"))])).to_json()
    doc["imageSets"][0]["frames"][0]["status"] = "MATCH"
    # THEN the schema alone already refuses it
    errors = list(jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(doc))
    assert errors


def test_a_plan_round_trips_exactly_and_names_a_malformed_field() -> None:
    # GIVEN a plan as the trigger stores it (job.json), with the three-way check's source files
    head = header(failures=[failure()], warnings=[warned(45330)], notes=["n"])
    plan = JobPlan(
        head.job,
        head.findings,
        head.notes,
        (PlannedImageSet(ISET_A, 2, True, ("dicom_input/1.dcm",)), PlannedImageSet(ISET_B, None, None)),
        STARTED,
        with_sources=True,
    )
    doc = json.loads(json.dumps(plan.to_json()))
    # THEN it reads back equal, and a broken member is named
    assert JobPlan.from_json(doc) == plan
    doc["imageSets"][1]["inputFiles"] = "dicom_input/1.dcm"
    with pytest.raises(ReportFormatError, match=r"plan.imageSets\[1\].inputFiles is not a list of strings"):
        JobPlan.from_json(doc)


# --- lossy sources -------------------------------------------------------------------------------------------


def decoder_dependent(number: int) -> FrameResult:
    """A frame whose lossy source no decoder reproduced, within the tolerance of the stored pixels."""
    comparison = SourceComparison(CRC ^ 7, ThreeWay.LOSSY_DECODER_DIFFERS, "dicom_input/1.dcm", "libjpeg-turbo", 1, 42)
    return frame(number, source=comparison)


def test_a_decoder_dependent_frame_is_counted_listed_and_clean() -> None:
    # GIVEN a job whose one frame matched a lossy source only within the decoder tolerance
    rep = report(header(), image_set(ISET_A, [frame(1), decoder_dependent(2)]))
    doc = rep.to_json()
    # THEN it is no mismatch and the job is CLEAN, but the summary counts it and the problem list shows it
    assert doc["verdict"] == "CLEAN"
    assert doc["summary"]["lossyDecoderDiffers"] == 1
    assert doc["imageSets"][0]["frames"][1]["source"] == {
        "ifrc": CRC ^ 7,
        "relation": "lossy-decoder-differs",
        "inputFile": "dicom_input/1.dcm",
        "decoder": "libjpeg-turbo",
        "maxDifference": 1,
        "differingSamples": 42,
    }
    assert [f.index for _, f in rep.problem_frames()] == [1]
    # AND the document is valid against the schema and reads back to the same report
    assert list(jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(doc)) == []
    assert JobReport.from_json(json.loads(json.dumps(doc))) == rep
    # AND the page says the result depends on the decoder
    page = render_html(rep)
    assert "depends on the decoder: libjpeg-turbo is within 1 on 42 samples" in page


def test_an_unresolved_lossy_source_makes_the_job_unverified() -> None:
    # GIVEN a frame whose lossy source no decoder reproduced and whose stored pixels could not be compared
    unresolved = frame(2, source=source_of("lossy-source-unresolved"))
    rep = report(header(), image_set(ISET_A, [frame(1), unresolved]))
    # THEN it stays a MATCH, but the job is neither CLEAN nor MISMATCH
    assert unresolved.status is Status.MATCH
    assert rep.verdict is Verdict.UNVERIFIED
    assert rep.to_json()["summary"]["lossyDecoderDiffers"] == 0


def test_every_report_says_which_tool_wrote_it_and_its_verdict() -> None:
    # GIVEN a report document
    doc = report(header(), image_set(ISET_A, [frame(1)])).to_json()
    # THEN it carries the tool's version (declared in the schema) next to the verdict
    from ahi_verify import __version__  # noqa: PLC0415

    assert doc["toolVersion"] == __version__
    assert doc["verdict"] == "CLEAN"
    assert "toolVersion" in json.loads(SCHEMA_PATH.read_text())["properties"]
