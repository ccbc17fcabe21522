"""`ahi-verify datastore` against the emulator: SearchImageSets through real boto3 over HTTP, one report per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import numpy as np
import pytest

import ahi_verify
from ahi_emulator import Emulator, Fault, InstanceSpec, PatientSpec
from ahi_verify.audit import DELETED, audit_datastore, audit_run_id
from ahi_verify.cli import main
from ahi_verify.healthimaging import HealthImagingListing, HealthImagingSource
from ahi_verify.report import ImageSetReport, Verdict

SCHEMA_PATH = Path(ahi_verify.__file__).parent / "report.schema.json"

pytestmark = pytest.mark.integration

SENTINEL = PatientSpec(name="SENTINEL^AUDIT^NEVER", id="SENTINEL-AUDIT-0815", birth_date="19020101", sex="O")
OLD, NEW = 1_600_000_000.0, 1_700_000_000.0  # 2020-09-13 and 2023-11-14, UTC


def _frames(seed: int, count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(16, 12)).astype(np.uint16) for _ in range(count)]


def _store(emulator: Emulator, count: int) -> tuple[str, list[str]]:
    """A new data store of ``count`` image sets (two frames each), all created and updated at OLD."""
    datastore_id = emulator.create_datastore()
    ids = []
    for n in range(count):
        info = emulator.add_image_set(datastore_id, [InstanceSpec(frames=_frames(n))], patient=SENTINEL)
        emulator.set_image_set_times(datastore_id, info.image_set_id, created_at=OLD + n, updated_at=OLD + n)
        ids.append(info.image_set_id)
    return datastore_id, ids


def _first_frame(emulator: Emulator, datastore_id: str, image_set_id: str) -> str:
    for info in emulator.image_sets():
        if (info.datastore_id, info.image_set_id) == (datastore_id, image_set_id):
            return info.frame_ids[0]
    raise AssertionError(f"{image_set_id} not in the emulator")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["datastore", *args])
    out, err = capsys.readouterr()
    # SearchImageSets' summaries carry the patient's name and ID (DICOMTags): none of it may be printed.
    assert SENTINEL.name not in out + err
    assert SENTINEL.id not in out + err
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = _run(capsys, *args, "--output", "json")
    return code, json.loads(out)


@pytest.mark.usefixtures("emulator_env")
def test_one_corrupted_frame_fails_the_audit_naming_its_image_set(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a data store of 20 image sets, one of which has one frame whose stored pixels were changed
    datastore_id, ids = _store(emulator, 20)
    bad = ids[13]
    emulator.corrupt_frame(datastore_id, bad, _first_frame(emulator, datastore_id, bad))
    # WHEN the data store is audited, as a table and as JSON
    code, table, _ = _run(capsys, datastore_id)
    json_code, doc = _json(capsys, datastore_id)
    # THEN exit 1, the table names that image set, and the report lists all 20 with exactly one mismatch in it
    assert (code, json_code) == (1, 1)
    assert f"(image set {bad})" in table
    assert "Verdict: MISMATCH" in table
    assert doc["verdict"] == Verdict.MISMATCH.value
    assert doc["summary"]["imageSets"] == 20
    assert doc["summary"]["frames"] == {"total": 40, "match": 39, "mismatch": 1, "error": 0}
    mismatched = {s["imageSetId"] for s in doc["imageSets"] if s["summary"]["mismatch"]}
    assert mismatched == {bad}
    assert sorted(s["imageSetId"] for s in doc["imageSets"]) == sorted(ids)


@pytest.mark.usefixtures("emulator_env")
def test_clean_store_exits_0_with_a_schema_valid_report(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a data store of 5 intact image sets
    datastore_id, ids = _store(emulator, 5)
    # WHEN audited with --output json
    code, doc = _json(capsys, datastore_id)
    # THEN exit 0 and one report for the run: CLEAN, the tool's version, timings, the run named as the "job"
    assert code == 0
    assert doc["verdict"] == "CLEAN"
    assert doc["toolVersion"]
    assert set(doc["timings"]) == {"startedAt", "finishedAt", "workItems", "verificationSeconds"}
    assert doc["timings"]["workItems"] == 5
    assert doc["job"]["jobId"].startswith("audit")
    assert doc["job"]["datastoreId"] == datastore_id
    assert doc["job"]["folder"] == f"healthimaging://{datastore_id}/"
    assert [s["version"] for s in doc["imageSets"]] == [1] * 5
    assert [s["imageSetId"] for s in doc["imageSets"]] == ids  # createdAt ascending: the walk's order
    assert list(jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(doc)) == []


@pytest.mark.usefixtures("emulator_env")
def test_updated_after_limits_the_walk(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN 6 image sets last updated in 2020, two of them updated again in 2023, and a corrupted frame in
    # one of the old ones
    datastore_id, ids = _store(emulator, 6)
    for image_set_id in ids[1:3]:
        emulator.set_image_set_times(datastore_id, image_set_id, updated_at=NEW)
    emulator.corrupt_frame(datastore_id, ids[4], _first_frame(emulator, datastore_id, ids[4]))
    # WHEN audited with --updated-after 2023-01-01
    code, doc = _json(capsys, datastore_id, "--updated-after", "2023-01-01T00:00:00Z")
    # THEN only the two updated image sets are verified: the old damage is outside the walk
    assert code == 0
    assert sorted(s["imageSetId"] for s in doc["imageSets"]) == sorted(ids[1:3])
    assert any("updated at or after 2023-01-01T00:00:00+00:00" in note for note in doc["notes"])


@pytest.mark.usefixtures("emulator_env")
def test_created_after_and_a_bad_time(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN 4 image sets created one second apart
    datastore_id, ids = _store(emulator, 4)
    # WHEN audited from the third one's creation second; and with a time that is not ISO 8601
    code, doc = _json(capsys, datastore_id, "--created-after", "2020-09-13T12:26:42Z")
    with pytest.raises(SystemExit) as usage:
        main(["datastore", datastore_id, "--created-after", "last tuesday"])
    capsys.readouterr()
    # THEN the walk starts there (inclusive), oldest first; the bad time is a usage error
    assert code == 0
    assert [s["imageSetId"] for s in doc["imageSets"]] == ids[2:]
    assert usage.value.code == 2


@pytest.mark.usefixtures("emulator_env")
def test_the_audit_flags_exactly_the_damaged_copy(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an image set copied with CopyImageSet, and one frame of the copy corrupted
    datastore_id, (source,) = _store(emulator, 1)
    client = boto3.client("medical-imaging")
    answer = client.copy_image_set(
        datastoreId=datastore_id,
        sourceImageSetId=source,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
    )
    client.close()
    copy_id = answer["destinationImageSetProperties"]["imageSetId"]
    emulator.corrupt_frame(datastore_id, copy_id, _first_frame(emulator, datastore_id, copy_id))
    # WHEN the data store is audited
    code, doc = _json(capsys, datastore_id)
    # THEN the copy, and only the copy, has a mismatch
    by_id = {s["imageSetId"]: s["summary"] for s in doc["imageSets"]}
    assert code == 1
    assert set(by_id) == {source, copy_id}
    assert by_id[copy_id]["mismatch"] == 1
    assert by_id[source] == {"total": 2, "match": 2, "mismatch": 0, "error": 0}


@pytest.mark.usefixtures("emulator_env")
def test_an_image_set_deleted_after_listing_is_reported_deleted(emulator: Emulator) -> None:
    # GIVEN 3 image sets, and the second deleted after the listing's page was read, before its verification
    datastore_id, ids = _store(emulator, 3)
    client = boto3.client("medical-imaging")
    reports: list[ImageSetReport] = []

    def delete_second(index: int) -> None:
        if index == 2:
            emulator.delete_image_set(datastore_id, ids[1])

    # WHEN the data store is audited
    outcome, run = audit_datastore(
        HealthImagingListing(client),
        HealthImagingSource(client),
        datastore_id,
        run_id=audit_run_id(NEW),
        started=NEW,
        on_image_set=delete_second,
        on_report=reports.append,
    )
    client.close()
    # THEN it is reported as deleted: not a mismatch, not a frame error, and the others verified
    by_id = {r.image_set_id: r for r in reports}
    assert by_id[ids[1]].error == DELETED
    assert by_id[ids[1]].frames == ()
    assert [by_id[i].counts.match for i in (ids[0], ids[2])] == [2, 2]
    assert outcome.verdict is Verdict.UNVERIFIED
    assert outcome.summary.frames.mismatch == 0
    assert run.errors == [(ids[1], DELETED)]


@pytest.mark.usefixtures("emulator_env")
def test_unknown_datastore_exits_3_with_an_error_document(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a data store ID the emulator does not know
    # WHEN it is audited
    code, out, err = _run(capsys, "0" * 32, "--output", "json")
    # THEN exit 3 (nothing verified), the error named, no report pretending to be one
    assert code == 3
    assert "ResourceNotFoundException" in json.loads(out)["error"]
    assert "could not be verified" in err


@pytest.mark.usefixtures("emulator_env")
def test_a_listing_that_fails_midway_still_ends_in_one_complete_report(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 55 image sets (two pages) and SearchImageSets denied on its second request
    datastore_id, ids = _store(emulator, 55)
    emulator.add_fault(Fault(kind="access_denied", operation="SearchImageSets", every=2, count=1))
    try:
        # WHEN the data store is audited
        code, doc = _json(capsys, datastore_id)
    finally:
        emulator.clear_faults()
    # THEN the first page's 50 image sets are verified and reported, the walk's end is a discrepancy, the
    # document is complete and valid, and the run is UNVERIFIED (exit 3), not CLEAN
    assert code == 3
    assert doc["verdict"] == "UNVERIFIED"
    assert [s["imageSetId"] for s in doc["imageSets"]] == ids[:50]
    (discrepancy,) = doc["discrepancies"]
    assert discrepancy.startswith("the listing stopped after 50 image sets")
    assert "AccessDeniedException" in discrepancy
    assert list(jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).iter_errors(doc)) == []
