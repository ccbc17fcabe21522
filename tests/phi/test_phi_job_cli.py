"""`ahi-verify job` on emulated imports of the sentinel files (table and JSON, with and without --source).

Import A: the key that embeds the name holds the file with truncated pixel data (imported with a warning,
its source cannot be decoded); one file is rejected; one stored frame is corrupted, one checksum is wrong.
Import B: the key holds a good file (its frame is the one corrupted); the truncated file has a plain key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from ahi_emulator import Emulator, ImportFaults
from ahi_verify.cli import main
from tests.phi.conftest import Emitted
from tests.phi.sentinel import (
    SENTINEL_KEY,
    allow_documented_keys_json,
    allow_documented_keys_table,
    assert_clean,
    scrub_key,
    scrub_key_in_sdk_logs,
    sentinel_files,
)

pytestmark = pytest.mark.integration

IMPORTS = {
    "A": ("undecodable", ImportFaults(corrupt_frames=1, wrong_checksums=1)),
    "B": ("good", ImportFaults(corrupt_frames=1)),
}


@pytest.fixture(scope="module")
def jobs(emulator: Emulator, aws_env_module: dict[str, str]) -> Iterator[dict[str, tuple[str, str, str]]]:
    """Import name -> (data store, job, job folder URI)."""
    s3 = boto3.client("s3")
    out: dict[str, tuple[str, str, str]] = {}
    for name, (holds, faults) in IMPORTS.items():
        bucket = f"phi-in-{name.lower()}"
        s3.create_bucket(Bucket=bucket)
        s3.create_bucket(Bucket=f"phi-out-{name.lower()}")
        for key, body in sentinel_files(sentinel_key_holds=holds).items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        datastore = emulator.create_datastore()
        job = emulator.start_import_job(
            datastore, f"s3://{bucket}/dicom/", f"s3://phi-out-{name.lower()}/r/", faults=faults
        )
        emulator.wait_for_job(datastore, job)
        out[name] = (datastore, job, f"s3://phi-out-{name.lower()}/r/{datastore}-DicomImport-{job}/")
    return out


def run_job(emitted: Emitted, args: list[str], label: str) -> tuple[Any, str]:
    emitted.start()
    code = emitted.call("main", lambda: main(["job", *args]))
    out, _ = emitted.collect(label)
    return code, out


CASES = [(name, fmt, source) for name in IMPORTS for fmt in ("table", "json") for source in (False, True)]


def _id(case: tuple[str, str, bool]) -> str:
    return f"{case[0]}-{case[1]}{'-source' if case[2] else ''}"


def _exercise(jobs: dict[str, tuple[str, str, str]], emitted: Emitted, case: tuple[str, str, bool]) -> str:
    name, fmt, source = case
    folder = jobs[name][2]
    args = [folder, "--format", fmt, "--manifest-wait", "1", *(["--source"] if source else [])]
    code, out = run_job(emitted, args, _id(case))
    assert code in (1, 3), out  # a corrupted frame, a rejected file: never clean
    if fmt == "json":
        doc = json.loads(out)
        assert [f["inputFile"] for f in doc["failures"]] == ["dicom/rejected.dcm"]
        assert len(doc["warnings"]) == 1
    else:
        assert "FAILED    dicom/rejected.dcm" in out
    return out


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_job_cli_never_prints_patient_attributes(
    jobs: dict[str, tuple[str, str, str]], emitted: Emitted, case: tuple[str, str, bool]
) -> None:
    # WHEN the job is verified; THEN no attribute value appears anywhere (the key is judged separately)
    _exercise(jobs, emitted, case)
    assert_clean({where: scrub_key(text) for where, text in emitted.texts.items()})


KEY_MARKS: dict[str, Any] = {}  # every case lists the key only in documented fields


@pytest.mark.parametrize("case", [pytest.param(c, marks=KEY_MARKS.get(_id(c), ()), id=_id(c)) for c in CASES])
def test_job_cli_lists_the_named_key_only_where_documented(
    jobs: dict[str, tuple[str, str, str]], emitted: Emitted, case: tuple[str, str, bool]
) -> None:
    # WHEN the job is verified
    out = _exercise(jobs, emitted, case)
    # THEN the key that embeds the name appears only as the inputFile of a failed or warned file
    name, fmt, _ = case
    texts = scrub_key_in_sdk_logs(emitted.texts)
    stdout = next(k for k in texts if k.endswith(": stdout"))
    if fmt == "json":
        doc = json.loads(out)
        if name == "A":
            assert doc["warnings"][0]["inputFile"] == SENTINEL_KEY  # the documented exception is exercised
        texts[stdout] = json.dumps(allow_documented_keys_json(doc))
    else:
        if name == "A":
            assert f"WARNING   {SENTINEL_KEY}: codes" in out
        texts[stdout] = allow_documented_keys_table(out)
    assert_clean(texts)


@pytest.mark.usefixtures("aws_env_module")
def test_job_cli_by_ids_and_for_a_job_without_manifest(
    emulator: Emulator, jobs: dict[str, tuple[str, str, str]], emitted: Emitted
) -> None:
    # GIVEN import A, found through GetDICOMImportJob, and an import of the same files that writes no manifest
    datastore, job, _ = jobs["A"]
    code, _ = run_job(emitted, ["--datastore-id", datastore, "--job-id", job, "--format", "json"], "by-ids")
    assert code in (1, 3)
    failed = emulator.start_import_job(
        datastore, "s3://phi-in-a/dicom/", "s3://phi-out-a/nomanifest/", faults=ImportFaults(write_manifest=False)
    )
    emulator.wait_for_job(datastore, failed)
    folder = f"s3://phi-out-a/nomanifest/{datastore}-DicomImport-{failed}/"
    for fmt in ("table", "json"):
        code, _ = run_job(emitted, [folder, "--format", fmt, "--manifest-wait", "0.2"], f"no-manifest {fmt}")
        assert code == 3
    # THEN nothing carries the sentinel (documented fields: see the JSON tests above)
    texts = scrub_key_in_sdk_logs(emitted.texts)
    by_ids = "by-ids: stdout"
    texts[by_ids] = json.dumps(allow_documented_keys_json(json.loads(texts[by_ids])))
    assert_clean(texts)
