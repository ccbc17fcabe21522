"""The one SNS alert per job: IDs, codes and counts only, within SNS's limits, never patient data; enough for a
person on call to act (why, where, what next, a link to click)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from ahi_verify.alert import (
    MAX_LISTED_FRAMES,
    MAX_LISTED_IMAGE_SETS,
    MESSAGE_LIMIT,
    SUBJECT_LIMIT,
    Alert,
    Deployment,
    compose_alert,
    console_url,
)
from ahi_verify.job_output import ImportLine, LineKind
from ahi_verify.outcomes import Reason, Status, ThreeWay
from ahi_verify.report import (
    JobReport,
    SourceComparison,
    Timings,
    UnreadableLine,
    Verdict,
    image_set_error_cause,
)
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
HERE = Deployment(region="eu-west-1", account_id="111122223333", stack_name="ahi-verify-prod")
REPORT_KEY = REPORT_URI.removeprefix("s3://medical-imaging-output/")


def alert_for(doc: JobReport, *, notify_clean: bool = False, deployment: Deployment | None = None) -> Alert:
    alert = compose_alert(doc.outcome(), REPORT_URI, notify_clean=notify_clean, deployment=deployment)
    assert alert is not None
    return alert


def metadata_error(image_set_id: str, code: str, message: str = "User arn:aws:sts::1:x is not authorized") -> str:
    """An image set's error as healthimaging.HealthImagingSource words a failed GetImageSetMetadata."""
    return f"GetImageSetMetadata for image set {image_set_id} failed: {code}: {message} (after 0 retries)"


def section(message: str, heading: str) -> list[str]:
    """The lines of the message under ``heading`` up to the next empty line."""
    lines = message.splitlines()
    start = lines.index(heading) + 1
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    return lines[start:end]


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
    # an error text of no known form is named by its image set only: its words stay in the report
    assert f"    image set {ISET_B} could not be read: see the report" in alert.message.splitlines()
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


def test_an_unverified_alert_says_why_in_words_naming_the_image_set_and_its_error_code() -> None:
    # GIVEN a job that rejected two files and one of whose image sets GetImageSetMetadata refused
    head = header(failures=[failure(), failure("dicom_input/b2.dcm")], job_manifest=manifest(customer_errors=2))
    denied = metadata_error(ISET_B, "AccessDeniedException", "DOE^JOHN may not read this")
    doc = report(head, image_set(ISET_A, matching(3)), image_set(ISET_B, [], error=denied))
    # WHEN the alert is composed
    alert = alert_for(doc, deployment=HERE)
    # THEN it says why, cause by cause, naming the image set and the service's error code, not its message
    assert alert.attributes["severity"] == "UNVERIFIED"
    assert section(alert.message, "Why it is not verified:") == [
        "  - 1 image set could not be read",
        f"    image set {ISET_B} could not be read: AccessDeniedException",
        "  - 2 files failed import",
        "    2 with ValidationException",
        "  - the manifest counts 2 files with errors",
    ]
    assert "DOE^JOHN" not in alert.message
    assert "dicom_input/" not in alert.message


def test_the_next_step_of_an_unverified_job_fixes_its_causes_and_gives_the_command_to_verify_it_again() -> None:
    # GIVEN an UNVERIFIED job with failed files and a frame that could not be fetched
    head = header(failures=[failure()], job_manifest=manifest(customer_errors=1))
    error = frame(2, Status.ERROR, reason=Reason.FETCH_FAILED)
    alert = alert_for(report(head, image_set(ISET_A, [frame(1), error])), deployment=HERE)
    # THEN the next step names a fix for each kind of cause, and the command with this job's IDs and region
    steps = section(alert.message, "What to do next:")
    assert steps[0] == "  1. Fix the cause above:"
    assert steps[1].startswith("     - re-import the files that failed import")
    assert steps[2].startswith("     - an image set or frame that could not be read gives its code: AccessDenied*")
    assert len(steps) == 6  # nothing about counts or source files, which do not apply
    assert steps[-2] == f"     ahi-verify job --datastore-id {DS} --job-id {JOB} --region eu-west-1"


def test_the_next_step_of_a_mismatch_is_the_report_a_re_import_and_aws_support() -> None:
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])))
    steps = section(alert.message, "What to do next:")
    assert steps[0].startswith("  1. Open the readable report (link below)")
    assert any("re-import the affected source files" in line for line in steps)
    assert any("contact AWS Support with the data store, image set and frame" in line for line in steps)
    assert "Why it is not verified:" not in alert.message


def test_a_mismatch_with_unreadable_image_sets_says_what_else_was_not_verified() -> None:
    doc = report(
        header(),
        image_set(ISET_A, [frame(1, Status.MISMATCH)]),
        image_set(ISET_B, [], error=metadata_error(ISET_B, "ThrottlingException")),
    )
    alert = alert_for(doc)
    assert alert.attributes["severity"] == "MISMATCH"
    assert section(alert.message, "Also not verified:") == [
        "  - 1 image set could not be read",
        f"    image set {ISET_B} could not be read: ThrottlingException",
    ]


def test_at_most_ten_unreadable_image_sets_are_named_and_the_rest_counted() -> None:
    # GIVEN 25 image sets that could not be read
    ids = [f"{n:032d}" for n in range(25)]
    doc = report(header(), *(image_set(i, [], error=metadata_error(i, "AccessDeniedException")) for i in ids))
    # WHEN the alert is composed
    named = [line for line in alert_for(doc).message.splitlines() if line.startswith("    image set ")]
    # THEN the first ten are named, in report order, and the rest counted
    assert MAX_LISTED_IMAGE_SETS == 10
    assert named == [f"    image set {i} could not be read: AccessDeniedException" for i in ids[:10]]
    assert "    ... and 15 more in the report" in alert_for(doc).message.splitlines()


def test_the_alert_names_region_account_stack_and_the_verification_times() -> None:
    # GIVEN a mismatching job whose verification has its times
    doc = replace(
        report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])),
        timings=Timings("2026-12-01T00:00:00+00:00", "2026-12-01T00:07:12+00:00", 1, 3.5),
    )
    # WHEN the alert is composed for a deployment
    lines = alert_for(doc, deployment=HERE).message.splitlines()
    # THEN it says where it comes from and when the job was verified
    assert lines[lines.index(f"Import job: {JOB}") + 1 :][:4] == [
        "Region: eu-west-1",
        "Account: 111122223333",
        "Stack: ahi-verify-prod",
        "Verification: started 2026-12-01T00:00:00+00:00, finished 2026-12-01T00:07:12+00:00 (UTC)",
    ]


def test_the_report_is_a_console_link_as_well_as_an_s3_uri() -> None:
    # GIVEN a deployment in eu-west-1
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])), deployment=HERE)
    # THEN the readable report and the full report are https links to the S3 console, then the S3 URIs
    console = "https://eu-west-1.console.aws.amazon.com/s3/object/medical-imaging-output?region=eu-west-1&prefix="
    assert alert.message.splitlines()[-4:] == [
        f"Readable report in the S3 console: {console}{REPORT_KEY.removesuffix('.json')}.html",
        f"Full report in the S3 console: {console}{REPORT_KEY}",
        f"Full report: {REPORT_URI}",
        f"Readable report: {HTML_URI}",
    ]


def test_without_a_region_the_alert_gives_the_s3_uris_only() -> None:
    alert = alert_for(report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])))
    assert "console" not in alert.message
    assert "Region:" not in alert.message


@pytest.mark.parametrize(
    ("region", "url"),
    [
        pytest.param(
            "us-east-1", "https://us-east-1.console.aws.amazon.com/s3/object/b?region=us-east-1&prefix=", id="aws"
        ),
        pytest.param(
            "cn-north-1", "https://cn-north-1.console.amazonaws.cn/s3/object/b?region=cn-north-1&prefix=", id="cn"
        ),
        pytest.param(
            "us-gov-west-1",
            "https://us-gov-west-1.console.amazonaws-us-gov.com/s3/object/b?region=us-gov-west-1&prefix=",
            id="gov",
        ),
        pytest.param("us-iso-east-1", None, id="iso-has-no-public-console"),
        pytest.param("eu-west-1/../x", None, id="not-a-region"),
        pytest.param(None, None, id="no-region"),
    ],
)
def test_the_console_link_is_in_the_console_of_the_regions_partition(region: str | None, url: str | None) -> None:
    # WHEN the link of an object whose key needs quoting is made for the region
    link = console_url("s3://b/reports/job 1/report#1.json", region)
    # THEN it is the partition's console, with the key quoted (its slashes kept)
    assert link == (None if url is None else url + "reports/job%201/report%231.json")


@pytest.mark.parametrize("uri", ["https://b/k", "s3://b", "s3://b/", "s3:///k"])
def test_a_uri_that_names_no_object_has_no_console_link(uri: str) -> None:
    assert console_url(uri, "us-east-1") is None


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        pytest.param(metadata_error(ISET_A, "AccessDeniedException"), "AccessDeniedException", id="service-code"),
        pytest.param(
            f"GetImageSetMetadata for image set {ISET_A} failed: Could not connect to the endpoint URL: x",
            "GetImageSetMetadata failed",
            id="transport-error-without-code",
        ),
        pytest.param(f"image set {ISET_A}: DOE^JOHN is not JSON", "its metadata could not be parsed", id="parse"),
        pytest.param("no work item of this image set completed", "no work item of this image set completed", id="none"),
        pytest.param("3 of 10 frames have no recorded result", "3 of 10 frames have no recorded result", id="partial"),
        pytest.param(
            "work item failed on all 5 deliveries and was moved to the dead-letter queue: KeyError: 'DOE^JOHN'",
            "its work item failed on all 5 deliveries (KeyError)",
            id="last-delivery",
        ),
        pytest.param(
            "work item was moved to the dead-letter queue after 5 deliveries that failed or ran out of time; its "
            "frames were not verified",
            "its work item was dead-lettered after 5 deliveries that failed or ran out of time",
            id="dead-lettered",
        ),
        pytest.param(
            f"{metadata_error(ISET_A, 'ThrottlingException')}; {metadata_error(ISET_A, 'ThrottlingException')}; "
            "no work item of this image set completed",
            "ThrottlingException, no work item of this image set completed",
            id="parts-joined-once-each",
        ),
        pytest.param("DOE^JOHN: SENTINEL", "see the report", id="unknown-form"),
        pytest.param(None, "see the report", id="none-at-all"),
    ],
)
def test_an_image_set_error_is_published_as_its_code_or_the_projects_own_words(error: str | None, cause: str) -> None:
    assert image_set_error_cause(error) == cause


def test_an_exception_type_that_is_not_a_name_is_not_published() -> None:
    # GIVEN a rejected file whose exception type is free text (the ndjson is the import's, not ours)
    odd = ImportLine(LineKind.FAILURE, "dicom/DOE^JOHN/1.dcm", exception_type="DOE^JOHN failed", message="x")
    head = header(failures=[odd, failure()], job_manifest=manifest(customer_errors=2))
    alert = alert_for(report(head, image_set(ISET_A, matching(1))))
    # THEN it is counted without its text, beside the named one
    assert section(alert.message, "Why it is not verified:")[:3] == [
        "  - 2 files failed import",
        "    1 with ValidationException",
        "    1 with an exception type not shown here",
    ]
    assert "DOE^JOHN" not in alert.message


LONG_JOB = "f" * 32  # a job ID's full length


@pytest.mark.parametrize(
    ("doc", "subject"),
    [
        pytest.param(
            lambda: report(header(), image_set(ISET_A, [frame(1, Status.MISMATCH)])),
            f"[ahi-verify] MISMATCH: 9999999 frame(s) differ in import job {LONG_JOB}",
            id="MISMATCH",
        ),
        pytest.param(
            lambda: report(header(), image_set(ISET_A, [])),
            f"[ahi-verify] UNVERIFIED: import job {LONG_JOB} is not fully verified",
            id="UNVERIFIED",
        ),
        pytest.param(
            lambda: report(header(failure_message="failed")),
            f"[ahi-verify] Import job {LONG_JOB} failed",
            id="IMPORT_FAILED",
        ),
        pytest.param(
            lambda: report(header(), image_set(ISET_A, matching(1))),
            f"[ahi-verify] OK: import job {LONG_JOB} verified, 9999999 frames match",
            id="CLEAN",
        ),
    ],
)
def test_the_subject_of_the_longest_real_job_is_whole_within_the_limit(
    doc: Callable[[], JobReport], subject: str
) -> None:
    # GIVEN a job with the longest real ID whose every count (mismatches, matches) has seven digits
    built = doc()
    outcome = replace(built, job=replace(built.job, job_id=LONG_JOB)).outcome()
    counts = outcome.summary.frames
    frames = replace(counts, mismatch=counts.mismatch and 9_999_999, match=counts.match and 9_999_999)
    outcome = replace(outcome, totals=replace(outcome.totals, summary=replace(outcome.summary, frames=frames)))
    # WHEN the alert is composed
    alert = compose_alert(outcome, REPORT_URI, notify_clean=True, deployment=HERE)
    # THEN its subject is whole, not cut, and within SNS's limit
    assert alert is not None
    assert alert.subject == subject
    assert_valid_subject(alert.subject)


@pytest.mark.parametrize(
    ("job_id", "version_of", "subject"),
    [
        pytest.param(
            "audit20260101t000000z",
            None,
            "UNVERIFIED: audit run audit20260101t000000z is not fully verified",
            id="audit-run",
        ),
        pytest.param(
            "v" + "a" * 31,
            ("b" * 32, 3),
            f"UNVERIFIED: image set {'b' * 32} version 3 is not fully verified",
            id="new-version",
        ),
        # too long for the whole sentence: the short form keeps the image set and version whole
        pytest.param(
            "v" + "a" * 31,
            ("b" * 32, 12345),
            f"UNVERIFIED: image set {'b' * 32} version 12345",
            id="new-version-short-form",
        ),
        pytest.param(
            "v" + "a" * 31, None, f"UNVERIFIED: image set job v{'a' * 31} is not fully verified", id="failed-change"
        ),
    ],
)
def test_audit_runs_and_new_versions_are_named_for_what_they_are(
    job_id: str, version_of: tuple[str, int] | None, subject: str
) -> None:
    # GIVEN an UNVERIFIED job that is an audit run or a new image set version, not an import job
    head = header()
    head = replace(head, job=replace(head.job, job_id=job_id))
    doc = report(head, image_set(ISET_A, []))
    # WHEN its alert is composed
    alert = compose_alert(doc.outcome(), REPORT_URI, notify_clean=False, image_set=version_of)
    # THEN the subject names what it is, whole, within SNS's limit, and never calls it an import job
    assert alert is not None
    assert alert.subject == f"[ahi-verify] {subject}"
    assert_valid_subject(alert.subject)
    assert "import job" not in alert.subject.lower()
    assert alert.attributes["jobId"] == job_id
