"""The one SNS alert per job: IDs and counts only, within SNS's limits, never patient data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ahi_verify.alert import MAX_LISTED_FRAMES, MESSAGE_LIMIT, SUBJECT_LIMIT, Alert, compose_alert
from ahi_verify.outcomes import Reason, Status, ThreeWay
from ahi_verify.report import JobReport, SourceComparison, UnreadableLine, Verdict
from tests.unit.test_report import (
    DS,
    ISET_A,
    ISET_B,
    JOB,
    REPORT_URI,
    failure,
    frame,
    header,
    image_set,
    manifest,
    matching,
    report,
    source_of,
    warned,
)

HTML_URI = REPORT_URI.removesuffix(".json") + ".html"
SNS_MESSAGE_BYTES = 262_144


def alert_for(doc: JobReport, *, notify_clean: bool = False) -> Alert:
    alert = compose_alert(doc.outcome(), REPORT_URI, notify_clean=notify_clean)
    assert alert is not None
    return alert


def assert_valid_subject(subject: str) -> None:
    assert len(subject) <= SUBJECT_LIMIT
    assert all(ch.isprintable() for ch in subject), repr(subject)


def test_clean_job_sends_no_alert_by_default() -> None:
    doc = report(header(), image_set(ISET_A, matching(5)))
    assert doc.verdict is Verdict.CLEAN
    assert compose_alert(doc.outcome(), REPORT_URI, notify_clean=False) is None


def test_clean_job_sends_an_ok_alert_when_asked() -> None:
    # GIVEN a clean job and a deployment that wants to hear about clean jobs
    doc = report(header(), image_set(ISET_A, matching(5)))
    # WHEN the alert is composed
    alert = alert_for(doc, notify_clean=True)
    # THEN it is an OK message with the counts
    assert alert.subject == f"[ahi-verify] OK: import job {JOB} verified, 5 frames match"
    assert alert.attributes == {"severity": "CLEAN", "jobId": JOB, "datastoreId": DS}
    assert alert.message.splitlines()[0] == "Every frame of this import matched its published checksum."
    assert "Frames: 5 total, 5 match, 0 mismatch, 0 could not be verified" in alert.message
    assert "Frames (status" not in alert.message


def test_one_mismatch() -> None:
    # GIVEN one frame of one image set differs
    bad = frame(2, Status.MISMATCH)
    doc = report(header(), image_set(ISET_A, [frame(1), bad, frame(3)]), image_set(ISET_B, matching(2, start=4)))
    # WHEN the alert is composed
    alert = alert_for(doc)
    # THEN the subject says how many frames differ in which job, within SNS's subject rules
    assert alert.subject == f"[ahi-verify] MISMATCH: 1 frame(s) differ in import job {JOB}"
    assert_valid_subject(alert.subject)
    # AND the body names the data store, the job, the frame, its image set, and both report URIs
    lines = alert.message.splitlines()
    assert lines[0] == "1 frame(s) differ from their published or source checksum."
    assert f"Data store: {DS}" in lines
    assert f"Import job: {JOB}" in lines
    assert "Frames: 5 total, 4 match, 1 mismatch, 0 could not be verified" in lines
    assert "Image sets: 2 (0 could not be read)" in lines
    assert f"  MISMATCH {ISET_A} {bad.image_frame_id} #1 checksum-differs" in lines
    assert lines[-2:] == [f"Full report: {REPORT_URI}", f"Readable report: {HTML_URI}"]
    # AND the attributes allow subscription filter policies
    assert alert.attributes == {"severity": "MISMATCH", "jobId": JOB, "datastoreId": DS}


def test_errors_only_is_unverified() -> None:
    error = frame(2, Status.ERROR, reason=Reason.FETCH_FAILED, detail="ThrottlingException after 5 attempts")
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1), error])))
    assert alert.subject == f"[ahi-verify] UNVERIFIED: import job {JOB} is not fully verified"
    assert alert.attributes["severity"] == "UNVERIFIED"
    assert f"  ERROR {ISET_A} {error.image_frame_id} #1 fetch-failed" in alert.message.splitlines()
    # the free-text detail stays in the report
    assert "ThrottlingException" not in alert.message


def test_completed_job_with_failed_files_alerts_even_when_every_frame_matches() -> None:
    # GIVEN a COMPLETED job that rejected two files, and every imported frame matched
    head = header(failures=[failure(), failure("dicom_input/b2.dcm")], job_manifest=manifest(customer_errors=2))
    alert = alert_for(report(head, image_set(ISET_A, matching(3))))
    # THEN it is UNVERIFIED and says how many files were rejected
    assert alert.attributes["severity"] == "UNVERIFIED"
    assert "Files the import rejected: 2; imported with warnings: 0" in alert.message.splitlines()
    assert "Frames (status" not in alert.message


@pytest.mark.parametrize(
    ("code", "severity"),
    [
        pytest.param(45330, "UNVERIFIED", id="invalid-offset-table-affects-frames"),
        pytest.param(45331, None, id="other-code-is-clean"),
    ],
)
def test_warning_codes(code: int, severity: str | None) -> None:
    doc = report(header(warnings=[warned(code)]), image_set(ISET_A, matching(2)))
    alert = compose_alert(doc.outcome(), REPORT_URI, notify_clean=False)
    assert (alert.attributes["severity"] if alert else None) == severity
    if alert:
        assert "Files the import rejected: 0; imported with warnings: 1" in alert.message


def test_failed_import_job() -> None:
    # GIVEN a FAILED import job, with its reason
    alert = alert_for(report(header(failure_message="Unable to access s3://in/DOE^JOHN/")))
    # THEN the subject says so, the body points at the report for the message, and the message is not echoed
    assert alert.subject == f"[ahi-verify] Import job {JOB} failed"
    assert alert.attributes["severity"] == "IMPORT_FAILED"
    lines = alert.message.splitlines()
    assert lines[0] == "The import job failed; nothing from it can be verified."
    assert "The import job reported a failure (see the report for its message)." in lines
    assert "DOE^JOHN" not in alert.message


def test_zero_frames_is_unverified_never_clean() -> None:
    alert = alert_for(report(header(), image_set(ISET_A, [])), notify_clean=False)
    assert alert.attributes["severity"] == "UNVERIFIED"
    assert "Frames: 0 total, 0 match, 0 mismatch, 0 could not be verified" in alert.message


def test_image_sets_that_could_not_be_read_are_named() -> None:
    doc = report(
        header(), image_set(ISET_A, matching(1)), image_set(ISET_B, [], error="ResourceNotFoundException: DOE^JOHN")
    )
    alert = alert_for(doc)
    assert f"Image sets that could not be read: {ISET_B}" in alert.message.splitlines()
    assert "Image sets: 2 (1 could not be read)" in alert.message.splitlines()
    assert "DOE^JOHN" not in alert.message


def test_mismatches_are_listed_before_errors() -> None:
    error = frame(1, Status.ERROR, reason=Reason.NO_CHECKSUM)
    bad = frame(2, Status.MISMATCH)
    alert = alert_for(report(header(), image_set(ISET_A, [error, bad])))
    assert alert.message.index(bad.image_frame_id) < alert.message.index(error.image_frame_id)


def test_ten_thousand_problem_frames_fit_in_one_sns_message() -> None:
    # GIVEN 10,000 mismatching frames
    frames = [frame(n, Status.MISMATCH) for n in range(1, 10_001)]
    doc = report(header(), image_set(ISET_A, frames))
    # WHEN the alert is composed
    alert = alert_for(doc)
    # THEN it stays well inside SNS's limit, lists 50 frames and says how many more there are
    assert len(alert.message) <= MESSAGE_LIMIT
    assert len(alert.message.encode()) <= SNS_MESSAGE_BYTES
    listed = [line for line in alert.message.splitlines() if line.startswith("  MISMATCH ")]
    assert len(listed) == MAX_LISTED_FRAMES == 50
    assert "  ... and 9950 more in the report" in alert.message.splitlines()
    assert alert.message.endswith(f"Readable report: {HTML_URI}")
    assert alert.subject == f"[ahi-verify] MISMATCH: 10000 frame(s) differ in import job {JOB}"
    assert_valid_subject(alert.subject)


def test_exactly_fifty_problem_frames_need_no_more_line() -> None:
    frames = [frame(n, Status.ERROR, reason=Reason.NO_CHECKSUM) for n in range(1, 51)]
    alert = alert_for(report(header(), image_set(ISET_A, frames)))
    assert sum(line.startswith("  ERROR ") for line in alert.message.splitlines()) == 50
    assert "more in the report" not in alert.message


def test_no_patient_data_reaches_the_alert() -> None:
    # GIVEN patient-identifying sentinels everywhere the report may carry free text or file keys
    sentinels = ["DOE^JOHN", "SENTINEL-MESSAGE", "SENTINEL-NOTE", "SENTINEL-DETAIL", "SENTINEL-SOURCE", "SENTINEL-ERR"]
    head = header(
        failures=[failure("dicom/DOE^JOHN/1.dcm", "SENTINEL-MESSAGE: PatientName DOE^JOHN is invalid")],
        warnings=[warned(45330, "dicom/DOE^JOHN/2.dcm")],
        notes=["SENTINEL-NOTE: dicom/DOE^JOHN/3.dcm"],
        job_manifest=manifest(customer_errors=1),
    )
    head = replace(
        head,
        job=replace(head.job, input_s3_uri="s3://in/DOE^JOHN/"),
        findings=replace(head.findings, unreadable_lines=(UnreadableLine("DOE^JOHN.ndjson", 1, "SENTINEL-MESSAGE"),)),
    )
    source = source_of("storage-corrupted", 1, "dicom/DOE^JOHN/SENTINEL-SOURCE.dcm")
    frames = [
        frame(1, Status.MISMATCH, detail="SENTINEL-DETAIL", source=source),
        frame(2, Status.ERROR, reason=Reason.DECODE_FAILED, detail="SENTINEL-DETAIL DOE^JOHN"),
    ]
    doc = report(head, image_set(ISET_A, frames), image_set(ISET_B, [], error="SENTINEL-ERR DOE^JOHN"))
    # WHEN the alert is composed
    alert = alert_for(doc)
    # THEN no sentinel is echoed: files are counted, never listed
    text = "\n".join([alert.subject, alert.message, *alert.attributes.values()])
    assert [s for s in sentinels if s in text] == []
    assert "dicom/" not in text
    assert "Files the import rejected: 1; imported with warnings: 1" in alert.message


@pytest.mark.parametrize(
    ("job_id", "subject"),
    [
        pytest.param("abc\ndef", "[ahi-verify] Import job abc def failed", id="newline"),
        pytest.param("abc\r\ndef", "[ahi-verify] Import job abc  def failed", id="crlf"),
        pytest.param("abc\tdef\x00", "[ahi-verify] Import job abc def  failed", id="tab-and-nul"),
        pytest.param("j" * 200, "[ahi-verify] Import job " + "j" * 75, id="very-long-cut-to-99"),
    ],
)
def test_subject_is_one_printable_line_within_the_sns_limit(job_id: str, subject: str) -> None:
    # GIVEN a job ID the subject must not trust (import-job events do not validate it)
    head = header(failure_message="failed")
    head = replace(head, job=replace(head.job, job_id=job_id))
    # WHEN the alert is composed
    alert = alert_for(report(head))
    # THEN control characters became spaces and the subject was cut to SNS's limit
    assert alert.subject == subject
    assert_valid_subject(alert.subject)


@pytest.mark.parametrize(
    "verdict",
    [Verdict.MISMATCH, Verdict.IMPORT_FAILED, Verdict.UNVERIFIED, Verdict.CLEAN],
)
def test_every_verdict_has_a_valid_subject(verdict: Verdict) -> None:
    docs = {
        Verdict.MISMATCH: lambda: report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])),
        Verdict.IMPORT_FAILED: lambda: report(header(failure_message="failed")),
        Verdict.UNVERIFIED: lambda: report(header(), image_set(ISET_A, [])),
        Verdict.CLEAN: lambda: report(header(), image_set(ISET_A, matching(1))),
    }
    doc = docs[verdict]()
    assert doc.verdict is verdict
    alert = alert_for(doc, notify_clean=True)
    assert_valid_subject(alert.subject)
    assert JOB in alert.subject
    assert alert.attributes["severity"] == verdict.value


def test_source_relation_mismatch_names_the_frame() -> None:
    # GIVEN a frame whose stored checksum matched but whose original file's pixels differ
    changed = frame(2, source=source_of("import-changed-pixels"))
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1), changed])))
    assert alert.attributes["severity"] == "MISMATCH"
    # THEN the subject, the counts and the frame list all say one frame differs
    assert alert.subject == f"[ahi-verify] MISMATCH: 1 frame(s) differ in import job {JOB}"
    assert "Frames: 2 total, 1 match, 1 mismatch, 0 could not be verified" in alert.message.splitlines()
    assert f"  MISMATCH {ISET_A} {changed.image_frame_id} #1 differs-from-source" in alert.message.splitlines()


def test_a_decoder_dependent_frame_is_said_to_depend_on_the_decoder() -> None:
    # GIVEN a CLEAN job with one frame that matched its lossy source only within the decoder tolerance
    comparison = SourceComparison(7, ThreeWay.LOSSY_DECODER_DIFFERS, "dicom_input/1.dcm", "libjpeg-turbo", 1, 3)
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1), frame(2, source=comparison)])), notify_clean=True)
    # THEN the alert is an OK one, and says the result depends on the decoder
    assert alert.attributes["severity"] == "CLEAN"
    assert (
        "Frames whose lossy source no decoder reproduced exactly: 1 (within the decoder tolerance, not "
        "mismatches; the result depends on the decoder)" in alert.message.splitlines()
    )
