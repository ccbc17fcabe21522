"""Direct calls that raise or report problems on sentinel-bearing input, and the scanner's self-check."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys

import pytest

from ahi_verify.job_output import LineKind, LineProblem, ManifestError, parse_line, parse_manifest
from ahi_verify.metadata import MetadataError, decode_metadata_blob, parse_image_set_metadata
from ahi_verify.source_check import SourceError, read_source_file
from ahi_verify.work_items import WorkItem, WorkItemError
from tests.phi.conftest import Emitted
from tests.phi.sentinel import (
    ACCESSION,
    BIRTH_DATE,
    NAME,
    PATIENT_ID,
    SENTINEL_KEY,
    STUDY_DESCRIPTION,
    allow_documented_keys_json,
    allow_documented_keys_table,
    assert_clean,
    scan,
    sentinel_files,
)

PATIENT = {"PatientName": NAME, "PatientID": PATIENT_ID, "PatientBirthDate": BIRTH_DATE}
STUDY = {"StudyDescription": STUDY_DESCRIPTION, "AccessionNumber": ACCESSION}


def test_source_check_errors_never_quote_the_file(emitted: Emitted) -> None:
    files = sentinel_files(sentinel_key_holds="good")
    broken = {
        "truncated pixel data": files["dicom/truncated.dcm"],
        "cut inside the dataset": files["dicom/ct.dcm"][:400],
        "not DICOM, sentinel text": f"{NAME} {PATIENT_ID} {BIRTH_DATE}".encode(),
        "preamble only": b"\0" * 128 + b"DICM" + NAME.encode(),
    }
    for label, data in broken.items():
        result = emitted.call(label, lambda data=data: read_source_file(data, "dicom/plain-key.dcm"))
        assert isinstance(result, SourceError), label
    emitted.collect("source_check")
    assert_clean(emitted.texts)


def test_metadata_errors_never_quote_the_document(emitted: Emitted) -> None:
    doc = {"Patient": {"DICOM": PATIENT}, "Study": {"DICOM": STUDY}}
    text = json.dumps(doc)
    blobs = {
        "invalid json": text[:-5].encode(),
        "json after sentinel": (text + f" {NAME}").encode(),
        "invalid utf-8": text.encode().replace(b"ZZSENTINEL^P", b"ZZSENTINEL\xff"),
        "truncated gzip": gzip.compress(text.encode())[:-20],
        "corrupt gzip": gzip.compress(text.encode())[:10] + NAME.encode(),
        "array": json.dumps([PATIENT]).encode(),
        "string": json.dumps(NAME).encode(),
    }
    for label, blob in blobs.items():
        assert isinstance(emitted.call(label, lambda blob=blob: decode_metadata_blob(blob)), MetadataError), label
    bad_docs = [
        doc,  # no Study.Series
        {**doc, "Study": {"DICOM": STUDY, "Series": NAME}},
        {
            **doc,
            "Study": {
                "DICOM": STUDY,
                "Series": {
                    "1.2.3": {
                        "DICOM": {"SeriesDescription": NAME},
                        "Instances": {
                            "1.2.3.4": {
                                "DICOM": {**PATIENT, "Rows": NAME},
                                "ImageFrames": [
                                    NAME,
                                    {"ID": 7, "Name": NAME},
                                    {"ID": "a" * 32, "PixelDataChecksumFromBaseToFullResolution": [{"Width": NAME}]},
                                    {"ID": "b" * 32, "PixelDataChecksumFromBaseToFullResolution": NAME},
                                ],
                            },
                            "1.2.3.5": {"ImageFrames": {"x": NAME}},
                        },
                    }
                },
            },
        },
    ]
    for i, bad in enumerate(bad_docs):
        result = emitted.call(f"parse {i}", lambda bad=bad: parse_image_set_metadata(bad))
        emitted.add(f"parse {i} result", repr(result))
    emitted.collect("metadata")
    assert_clean(emitted.texts)


def test_job_output_and_work_item_errors_never_quote_the_line(emitted: Emitted) -> None:
    lines = [
        json.dumps({"inputFile": f"dicom/{NAME}.dcm", "exception": {"message": NAME}})[:-3],
        json.dumps([NAME, PATIENT_ID]),
        json.dumps({"inputFile": f"dicom/{NAME}.dcm", "importResponse": {"imageSetId": 5, "patient": NAME}}),
        json.dumps({"inputFile": f"dicom/{NAME}.dcm", "exception": NAME}),
        json.dumps({"inputFile": 1, "importResponse": {"imageSetId": "a" * 32}, "PatientName": NAME}),
        f"{NAME}\xff".encode("latin-1").decode("latin-1"),
    ]
    for kind in (LineKind.SUCCESS, LineKind.FAILURE, LineKind.WARNING):
        for i, line in enumerate(lines):
            raw = line.encode("latin-1") if i == len(lines) - 1 else line.encode()
            parsed = emitted.call(
                f"{kind} {i}", lambda raw=raw, kind=kind, n=i: parse_line(kind, raw, "out/x.ndjson", n)
            )
            assert isinstance(parsed, LineProblem), (kind, i, parsed)
            emitted.add(f"{kind} {i} problem", repr(parsed))
    for i, manifest in enumerate([json.dumps(PATIENT)[:-2], json.dumps({"jobSummary": {"x": NAME}}), NAME]):
        result = emitted.call(
            f"manifest {i}", lambda m=manifest: parse_manifest(m.encode(), "s3://out/job-output-manifest.json")
        )
        assert isinstance(result, ManifestError)
    for i, body in enumerate([f"not json {NAME}", json.dumps({"v": 1, "jobId": PATIENT_ID, "x": NAME}), NAME]):
        assert isinstance(emitted.call(f"work item {i}", lambda b=body: WorkItem.from_json(b)), WorkItemError)
    emitted.collect("job_output")
    assert_clean(emitted.texts)


# --------------------------------------------------------------------------------------------- self-check


def test_the_scanner_catches_a_planted_sentinel_everywhere(emitted: Emitted) -> None:
    """The capture sees fd-level output of a child process, log records, extras and exceptions, and the
    scanner finds every variant; the documented exception is narrow."""
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('zzsentinel patient name')"], check=True)
    print(f"born {BIRTH_DATE[:4]}-{BIRTH_DATE[4:6]}-{BIRTH_DATE[6:]}")
    logging.getLogger("ahi_verify.anything").debug("id %s", PATIENT_ID.lower())
    logging.getLogger("some.library").info("ok", extra={"who": "Zzsentinel Hospital"})
    emitted.call("raise", lambda: (_ for _ in ()).throw(ValueError(ACCESSION)))
    emitted.collect("planted")
    hits = [h for where, text in emitted.texts.items() for h in scan(where, text)]
    found = {h.where.split(": ", 1)[1].split(" #")[0] for h in hits}
    assert {"stderr", "stdout", "str(exception)", "traceback"} <= found
    assert any("log ahi_verify.anything" in w for w in found)
    assert any("log some.library" in w for w in found)
    with pytest.raises(AssertionError, match="patient data leaked"):
        assert_clean(emitted.texts)
    # the documented exception removes the key only from documented inputFile fields and report lines
    doc = {"warnings": [{"inputFile": SENTINEL_KEY}], "imageSets": [{"sourceErrors": [{"error": f"{SENTINEL_KEY}"}]}]}
    assert scan("doc", json.dumps(allow_documented_keys_json(doc)))
    assert not scan("doc", json.dumps(allow_documented_keys_json({"failures": [{"inputFile": SENTINEL_KEY}]})))
    assert not scan("table", allow_documented_keys_table(f"WARNING   {SENTINEL_KEY}: codes 45312\n"))
    assert not scan("table", allow_documented_keys_table(f"SOURCE    {SENTINEL_KEY}: bad\n"))
    assert scan("table", allow_documented_keys_table(f"THREE-WAY {SENTINEL_KEY}: bad\n"))
    assert scan("table", allow_documented_keys_table(f"FAILED    {SENTINEL_KEY}: x: {NAME}\n"))
