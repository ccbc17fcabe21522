"""`ahi-verify job` on imports into a JPEG 2000 Lossless data store (issue 12): the emulator's import job
transcodes every frame to .90, and the verifier takes the syntax from the metadata, or from GetDatastore where the
metadata omits it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from ahi_emulator import Emulator, Fault, ImportFaults
from tests.integration.test_verify_job import frames_of, run_job_cli

pytestmark = pytest.mark.integration

J2K = "1.2.840.10008.1.2.4.90"
# Files the import transcodes (no retained syntax), in three studies: three image sets, five frames.
TRANSCODED = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"]


def import_into(emulator: Emulator, s3: Any, tag: str, storage_format: str, **kw: Any) -> tuple[str, str]:
    """Import TRANSCODED and CT1_UNC into a new data store of ``storage_format``; the data store and job folder."""
    datastore = emulator.create_datastore(lossless_storage_format=storage_format)
    s3.create_bucket(Bucket=f"in-{tag}")
    s3.create_bucket(Bucket=f"out-{tag}")
    for name in TRANSCODED:
        s3.put_object(Bucket=f"in-{tag}", Key=f"dicom/{name}", Body=Path(get_testdata_file(name)).read_bytes())
    job = emulator.start_import_job(datastore, f"s3://in-{tag}/dicom/", f"s3://out-{tag}/results/", **kw)
    emulator.wait_for_job(datastore, job)
    return datastore, f"s3://out-{tag}/results/{datastore}-DicomImport-{job}/"


@pytest.fixture
def faults(emulator: Emulator) -> Iterator[Emulator]:
    """The emulator, its request faults cleared after the test (the emulator is shared by the module)."""
    try:
        yield emulator
    finally:
        emulator.clear_faults()


@pytest.mark.usefixtures("aws_env")
def test_a_jpeg_2000_lossless_import_verifies_clean(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a JPEG 2000 Lossless data store and an import job into it
    datastore, folder = import_into(emulator, s3, "j2kclean", "JPEG_2000_LOSSLESS")
    # THEN the store holds .90 frames with the metadata such a store gives
    image_sets = [i for i in emulator.image_sets() if i.datastore_id == datastore]
    assert len(image_sets) == 3
    for info in image_sets:
        doc = json.loads(gzip.decompress(emulator.metadata_gzip(datastore, info.image_set_id)))
        instances = [i for s in doc["Study"]["Series"].values() for i in s["Instances"].values()]
        assert {(i["StoredTransferSyntaxUID"], i["ChecksumType"]) for i in instances} == {(J2K, "DECOMPRESSED")}
        assert {emulator.frame(datastore, info.image_set_id, f)[1] for f in info.frame_ids} == {"image/j2c"}
    # WHEN the job is verified with the three-way check
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    # THEN every frame decodes with OpenJPEG, matches, and agrees with its source file: CLEAN
    frames = frames_of(doc)
    assert len(frames) == 4
    assert {(f["status"], f["rule"], f["source"]["relation"]) for f in frames} == {
        ("MATCH", "decoded-j2k", "consistent")
    }
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_a_corrupted_jpeg_2000_frame_is_a_mismatch(
    emulator: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an import into a JPEG 2000 Lossless data store whose first stored frame decodes to one other sample
    _, folder = import_into(emulator, s3, "j2kcorrupt", "JPEG_2000_LOSSLESS", faults=ImportFaults(corrupt_frames=1))
    # WHEN verified
    code, doc, _ = run_job_cli(capsys, folder, "--source")
    # THEN that one frame is a MISMATCH, storage corrupted, and the job says so
    bad = [f for f in frames_of(doc) if f["status"] != "MATCH"]
    assert [(f["status"], f["reason"], f["source"]["relation"]) for f in bad] == [
        ("MISMATCH", "checksum-differs", "storage-corrupted")
    ]
    assert code == 1


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("storage_format", "rule"), [("JPEG_2000_LOSSLESS", "decoded-j2k"), ("HTJ2K", "decoded-htj2k")]
)
def test_an_omitted_syntax_is_the_data_stores_with_one_get_datastore(
    faults: Emulator, s3: Any, capsys: pytest.CaptureFixture[str], storage_format: str, rule: str
) -> None:
    # GIVEN an import whose metadata, when read, omits StoredTransferSyntaxUID in every instance
    _, folder = import_into(faults, s3, f"omit{storage_format.lower().replace('_', '')}", storage_format)
    faults.add_fault(Fault("omit_stored_syntax", operation="GetImageSetMetadata"))
    faults.reset_stats()
    # WHEN the job is verified
    code, doc, _ = run_job_cli(capsys, folder)
    # THEN each frame is verified as the data store's format, with nothing assumed, from one GetDatastore for
    # the three image sets
    assert {(f["status"], f["rule"], f["detail"]) for f in frames_of(doc)} == {("MATCH", rule, None)}
    assert len(doc["imageSets"]) == 3
    assert faults.stats()["requests"]["GetDatastore"] == 1
    assert (code, doc["verdict"]) == (0, "CLEAN")


@pytest.mark.usefixtures("aws_env")
def test_get_datastore_denied_falls_back_to_htj2k_and_says_so(
    faults: Emulator, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a JPEG 2000 Lossless store whose metadata omits the syntax and whose GetDatastore is denied
    _, folder = import_into(faults, s3, "j2kdenied", "JPEG_2000_LOSSLESS")
    faults.add_fault(Fault("omit_stored_syntax", operation="GetImageSetMetadata"))
    faults.add_fault(Fault("access_denied", operation="GetDatastore"))
    faults.reset_stats()
    # WHEN the job is verified
    code, doc, _ = run_job_cli(capsys, folder)
    # THEN HTJ2K is assumed, each frame says so and why, and the .90 frames are errors, never a match
    frames = frames_of(doc)
    assert {(f["status"], f["reason"]) for f in frames} == {("ERROR", "storage-format-disagrees")}
    for f in frames:
        assert "stored syntax assumed 1.2.840.10008.1.2.4.202" in f["detail"]
        assert "AccessDeniedException" in f["detail"]
    assert faults.stats()["requests"]["GetDatastore"] == 1  # a denial is remembered for the run
    assert (code, doc["verdict"]) == (3, "UNVERIFIED")
