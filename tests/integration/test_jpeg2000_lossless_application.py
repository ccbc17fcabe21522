"""The application (local stack: trigger -> workers -> finaliser) on a JPEG 2000 Lossless data store: imports
stored as .90 verify CLEAN, a corrupted frame is a MISMATCH, and metadata that omits the stored syntax is resolved
by the worker's GetDatastore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_emulator import Fault, ImportFaults
from local.stack import LocalStack

pytestmark = pytest.mark.integration

DS = "c3" * 16
FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(parameters={"DatastoreId": DS}) as running:
        running.emulator.create_datastore(DS, lossless_storage_format="JPEG_2000_LOSSLESS")
        running.s3.create_bucket(Bucket="site-dicom")
        yield running


@pytest.fixture(autouse=True)
def no_faults_after(stack: LocalStack) -> Iterator[None]:
    yield
    stack.emulator.clear_faults()


def verify_import(stack: LocalStack, **kw: Any) -> dict[str, Any]:
    """Import FILES, let the application verify the job until idle, and return its report."""
    env = stack.function("JobTriggerFunction").environment
    prefix = f"batch-{len(stack.emulator.import_jobs(DS))}/"
    for name in FILES:
        body = Path(str(get_testdata_file(name, download=False))).read_bytes()
        stack.s3.put_object(Bucket="site-dicom", Key=f"{prefix}{name}", Body=body)
    output = f"s3://{env['OUTPUT_BUCKET']}/{env['OUTPUT_PREFIX']}"
    job = stack.emulator.start_import_job(DS, f"s3://site-dicom/{prefix}", output, **kw)
    assert stack.run_until_idle(timeout=180).failures == {}
    key = f"{env['REPORTS_PREFIX']}{job}/report.json"
    return dict(json.loads(stack.s3.get_object(Bucket=env["REPORTS_BUCKET"], Key=key)["Body"].read()))


def frames_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for image_set in doc["imageSets"] for f in image_set["frames"]]


def test_a_jpeg_2000_lossless_import_verifies_clean(stack: LocalStack) -> None:
    # GIVEN an import into the JPEG 2000 Lossless data store WHEN the application verifies it
    doc = verify_import(stack)
    # THEN every frame is decoded with OpenJPEG and matches: CLEAN, nobody alerted
    assert {(f["status"], f["rule"]) for f in frames_of(doc)} == {("MATCH", "decoded-j2k")}
    assert (doc["verdict"], doc["summary"]["frames"]["total"]) == ("CLEAN", 4)
    assert stack.alerts() == []


def test_a_corrupted_jpeg_2000_frame_is_a_mismatch(stack: LocalStack) -> None:
    # GIVEN an import whose first stored frame decodes to one other sample WHEN verified
    doc = verify_import(stack, faults=ImportFaults(corrupt_frames=1))
    # THEN exactly that frame is a MISMATCH, and the alert says so
    bad = [f for f in frames_of(doc) if f["status"] != "MATCH"]
    assert [(f["status"], f["reason"]) for f in bad] == [("MISMATCH", "checksum-differs")]
    assert doc["verdict"] == "MISMATCH"
    assert [a.attributes["severity"] for a in stack.alerts()] == ["MISMATCH"]


def test_an_omitted_syntax_is_resolved_by_the_worker(stack: LocalStack) -> None:
    # GIVEN metadata served without StoredTransferSyntaxUID
    stack.emulator.add_fault(Fault("omit_stored_syntax", operation="GetImageSetMetadata"))
    before = stack.emulator.stats()["requests"].get("GetDatastore", 0)
    # WHEN the application verifies an import
    doc = verify_import(stack)
    # THEN the worker asked the data store and verified the frames as .90: CLEAN, nothing assumed
    assert stack.emulator.stats()["requests"].get("GetDatastore", 0) > before
    assert {(f["status"], f["rule"], f["detail"]) for f in frames_of(doc)} == {("MATCH", "decoded-j2k", None)}
    assert doc["verdict"] == "CLEAN"
