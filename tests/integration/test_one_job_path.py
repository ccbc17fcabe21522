"""One job path, one report: the application (trigger -> workers -> finaliser, through the local stack) and
``ahi-verify job`` (one process) build the same report for the same job, and a source file replaced after
the import gives one answer everywhere: report JSON, CLI table, report.html, the alert and the exit code.

The three-way check runs in the application because the stack is deployed with SourceBucketName."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from ahi_verify.cli import main
from ahi_verify.report import JobReport, Verdict
from local.stack import LocalStack
from local.template import ACCOUNT_ID
from tests.unit.test_report_html import tables

pytestmark = pytest.mark.integration

DS = "b2" * 16
SOURCE_BUCKET = "site-dicom"
FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(parameters={"DatastoreId": DS, "SourceBucketName": SOURCE_BUCKET}) as running:
        running.emulator.create_datastore(DS)
        running.s3.create_bucket(Bucket=SOURCE_BUCKET)
        yield running


def upload(stack: LocalStack, prefix: str) -> None:
    for name in FILES:
        body = Path(str(get_testdata_file(name, download=False))).read_bytes()
        stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=f"{prefix}{name}", Body=body)


def other_pixels(original: bytes) -> bytes:
    """The same file (same SOP Instance UID) with one pixel changed: not the image that was imported."""
    ds = pydicom.dcmread(io.BytesIO(original))
    pixels = ds.pixel_array.copy()
    pixels.flat[0] = pixels.flat[0] + 1
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def env_of(stack: LocalStack) -> dict[str, str]:
    return stack.function("JobTriggerFunction").environment


def run_application(stack: LocalStack, prefix: str, *, replace_after_import: str | None = None) -> tuple[str, str]:
    """Import ``prefix`` and let the application verify it; returns (job ID, job folder URI)."""
    env = env_of(stack)
    output = f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}"
    job: str = stack.emulator.start_import_job(DS, f"s3://{SOURCE_BUCKET}/{prefix}", output)
    stack.emulator.wait_for_job(DS, job)
    if replace_after_import is not None:
        key = f"{prefix}{replace_after_import}"
        original = stack.s3.get_object(Bucket=SOURCE_BUCKET, Key=key)["Body"].read()
        stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=other_pixels(original))
    summary = stack.run_until_idle(timeout=180)
    assert summary.failures == {}
    return job, f"{output}{DS}-DicomImport-{job}/"


def application_report(stack: LocalStack, job: str) -> dict[str, Any]:
    env = env_of(stack)
    key = f"{env['REPORTS_PREFIX']}{job}/report.json"
    return dict(json.loads(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read()))


def application_page(stack: LocalStack, job: str) -> str:
    env = env_of(stack)
    key = f"{env['REPORTS_PREFIX']}{job}/report.html"
    return str(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read().decode())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["job", *args])
    return code, capsys.readouterr().out


def without_timings(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "timings"}


def test_cli_and_application_reports_are_equal_apart_from_timings(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a clean import verified by the application, with the three-way check on
    upload(stack, "clean/")
    job, folder = run_application(stack, "clean/")
    app = application_report(stack, job)
    # WHEN the CLI verifies the same job in one process
    code, out = cli(capsys, folder, "--source", "--format", "json")
    mine = json.loads(out)
    # THEN both documents are equal but for their timings, and both are CLEAN with every frame source-checked
    assert without_timings(mine) == without_timings(app)
    assert (code, app["verdict"]) == (0, "CLEAN")
    relations = {f["source"]["relation"] for s in app["imageSets"] for f in s["frames"]}
    assert relations == {"consistent"}
    assert app["summary"]["frames"]["total"] == 4
    # AND both carry timings (work items differ in number only where the application split an image set)
    assert app["timings"]["workItems"] == mine["timings"]["workItems"] == len(app["imageSets"])
    assert JobReport.from_json(app).verdict is Verdict.CLEAN


def test_a_source_file_replaced_after_import_gives_one_answer_everywhere(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an import whose source CT_small.dcm is replaced by other pixels after the import, before verification
    upload(stack, "replaced/")
    job, folder = run_application(stack, "replaced/", replace_after_import="CT_small.dcm")
    app = application_report(stack, job)
    # THEN the application's report: one frame is a MISMATCH because its original differs, and the counts say so
    (changed,) = [(s, f) for s in app["imageSets"] for f in s["frames"] if f["status"] != "MATCH"]
    image_set, frame = changed
    assert (frame["status"], frame["reason"]) == ("MISMATCH", "differs-from-source")
    assert frame["source"]["relation"] == "import-changed-pixels"
    assert frame["expected"] == frame["actual"] != frame["source"]["ifrc"]
    assert app["verdict"] == "MISMATCH"
    assert app["summary"]["frames"] == {"total": 4, "match": 3, "mismatch": 1, "error": 0}
    assert image_set["summary"]["mismatch"] == 1
    # AND the CLI's JSON is the same document, with the mismatch exit code
    code, out = cli(capsys, folder, "--source", "--format", "json")
    assert code == 1
    assert without_timings(json.loads(out)) == without_timings(app)
    # AND the CLI's table lists the frame as a MISMATCH and counts one mismatch
    code, table = cli(capsys, folder, "--source")
    assert code == 1
    rows = [line for line in table.splitlines() if frame["imageFrameId"] in line]
    assert any(line.startswith("MISMATCH ") and "differs-from-source" in line for line in rows), table
    assert "4 frames: 3 match, 1 mismatch, 0 error" in table
    # AND report.html shows it as a mismatch row with its reason, under the mismatch count
    page = application_page(stack, job)
    (row,) = tables(page)["mismatched"][1:]
    assert row[0] == "MISMATCH"
    assert row[1].startswith("differs-from-source import-changed-pixels:")
    assert f"image set {image_set['imageSetId']} image frame {frame['imageFrameId']}" in row[6]
    assert "4 frames: 3 match, 1 mismatch, 0 error" in page
    # AND the one alert says one frame differs and names it
    (alert,) = [a for a in stack.alerts() if a.attributes["jobId"] == job]
    assert alert.subject == f"[ahi-verify] MISMATCH: 1 frame(s) differ in import job {job}"
    assert "Frames: 4 total, 3 match, 1 mismatch, 0 could not be verified" in alert.message
    assert f"MISMATCH {image_set['imageSetId']} {frame['imageFrameId']} #1 differs-from-source" in alert.message
    # AND it names the deployment from the template's pseudo parameters and Lambda's region, with a console link
    lines = alert.message.splitlines()
    assert [f"Region: {stack.region}", f"Account: {ACCOUNT_ID}", f"Stack: {stack.stack_name}"] == [
        line for line in lines if line.startswith(("Region: ", "Account: ", "Stack: "))
    ]
    assert any(line.startswith(f"Full report in the S3 console: https://{stack.region}.console.") for line in lines)
