"""Every DICOM file that ships inside pydicom (and CT1_UNC) imported through the emulator and verified with
the three-way check: zero false mismatches. Each file is its own import job, so files that share SOP
Instance UIDs (pydicom's MR_small variants) do not collide; each file's outcome is asserted and listed."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pydicom
import pytest

from ahi_emulator import Emulator
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.job import verify_job
from ahi_verify.locations import job_folder
from ahi_verify.outcomes import Status, ThreeWay
from ahi_verify.report import JobReport, Verdict
from ahi_verify.s3_output import JobOutputReader
from tests.support import SHARED_FIXTURES

pytestmark = pytest.mark.integration

PYDICOM_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
FILES = [*PYDICOM_FILES, SHARED_FIXTURES / "CT1_UNC"]
OUTCOMES: dict[str, str] = {}


def outcome_of(report: JobReport) -> str:
    """One line that says what happened to the file."""
    if report.findings.failures:
        (failure,) = report.findings.failures
        return f"not applicable: rejected by the import ({failure.exception_type}: {failure.message})"
    counts = report.summary.frames
    warnings = sorted({w.code for line in report.findings.warnings for w in line.warnings if w.code is not None})
    if warnings:
        return f"not applicable: imported as a blob with warning {warnings} ({counts.error} unverifiable frame(s))"
    if counts.total == 0:
        return "not applicable: no pixel data (metadata only)"
    relations = sorted({f.source.relation.value for _, f in report.frames() if f.source})
    rules = sorted({str(f.rule) for _, f in report.frames()})
    return f"verified: {counts.match}/{counts.total} frames MATCH, source {relations}, rule {rules}"


@pytest.fixture(scope="module")
def verifier(aws_env_module: dict[str, str]) -> tuple[JobOutputReader, HealthImagingSource]:
    import boto3  # noqa: PLC0415

    return JobOutputReader(boto3.client("s3")), HealthImagingSource(make_client(max_pool_connections=8))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_file_imports_and_verifies_without_false_mismatch(
    path: Path, emulator: Emulator, s3_module: Any, verifier: tuple[JobOutputReader, HealthImagingSource]
) -> None:
    # GIVEN one real DICOM file in an input prefix, imported by the emulator
    datastore = emulator.create_datastore()
    prefix = f"real/{path.stem.lower().replace('_', '-')}/"
    s3_module.put_object(Bucket="real-in", Key=f"{prefix}{path.name}", Body=path.read_bytes())
    job = emulator.start_import_job(datastore, f"s3://real-in/{prefix}", "s3://real-out/jobs/")
    emulator.wait_for_job(datastore, job)
    # WHEN the job is verified with the three-way check
    reader, source = verifier
    folder = job_folder(f"s3://real-out/jobs/{datastore}-DicomImport-{job}/")
    report = verify_job(reader, source, folder, manifest_wait_s=5, with_sources=True)
    OUTCOMES[path.name] = outcome_of(report)
    # THEN nothing mismatches, and a file that imported cleanly verifies completely and agrees with its source
    assert report.verdict is not Verdict.MISMATCH, OUTCOMES[path.name]
    assert all(f.status is not Status.MISMATCH for _, f in report.frames())
    if OUTCOMES[path.name].startswith("verified"):
        assert report.verdict is Verdict.CLEAN
        assert all(s.error is None and not s.source_errors and not s.orphan_source_frames for s in report.image_sets)
        relations = {f.source.relation for _, f in report.frames() if f.source}
        assert relations == {ThreeWay.CONSISTENT}


def test_outcome_table() -> None:
    """Lists every file's outcome (run with -s to see it) and checks the totals."""
    assert set(OUTCOMES) == {p.name for p in FILES}, "run the whole module: the table needs every file"
    width = max(map(len, OUTCOMES))
    print("\nReal DICOM files through import and verification:")
    for name in sorted(OUTCOMES):
        print(f"  {name:<{width}}  {OUTCOMES[name]}")
    kinds = collections.Counter(outcome.split(":")[0] for outcome in OUTCOMES.values())
    print(f"  {dict(kinds)}")
    assert OUTCOMES["CT1_UNC"].startswith("verified: 1/1")
    assert kinds["verified"] >= 50
