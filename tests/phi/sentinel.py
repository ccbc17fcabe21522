"""The sentinel patient, P10 files that carry it, and a scanner for everything a run emits.

Every test in this package plants these values and then asserts that none of them (nor an obvious variant)
appears in any captured output. The only exception is the README's: the job report (CLI ``job`` output,
``report.json``/``report.html`` and the ``job.json`` header they are built from) names input files by their
key in ``inputFile`` fields (files rejected or warned, and with ``--source`` unreadable sources and each
frame's source file), and a key may embed a name. The ``allow_documented_keys_*`` helpers remove exactly
those occurrences.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ahi_emulator import PatientSpec

NAME = "ZZSENTINEL^PATIENT^NAME"
PATIENT_ID = "ZZSENTINEL-ID-8841"
BIRTH_DATE = "18880808"
STUDY_DESCRIPTION = "ZZSENTINEL STUDY DESC"
ACCESSION = "ZZSENTACC77"
REFERRING = "ZZSENTINEL^DOCTOR"
INSTITUTION = "ZZSENTINEL HOSPITAL"

#: The object key that embeds the patient's name.
SENTINEL_KEY = f"dicom/{NAME}/1.dcm"

SENTINEL_PATIENT = PatientSpec(name=NAME, id=PATIENT_ID, birth_date=BIRTH_DATE, sex="O")
SENTINEL_STUDY = {
    "StudyDescription": STUDY_DESCRIPTION,
    "AccessionNumber": ACCESSION,
    "ReferringPhysicianName": REFERRING,
    "InstitutionName": INSTITUTION,
    "StudyID": PATIENT_ID,
}


def _variants(value: str) -> set[str]:
    spaced = value.replace("^", " ")
    return {v.lower() for v in (value, spaced, spaced.strip(), value.replace("^", "%5E"), value.replace("^", "_"))}


#: Lower-case needles; the haystack is lower-cased, so every case variant is caught. "zzsentinel" alone
#: already catches every name, ID and text value in any encoding that keeps ASCII letters.
NEEDLES: frozenset[str] = frozenset(
    {"zzsentinel", "zzsentacc", BIRTH_DATE, "1888-08-08", "08/08/1888"}
    | set().union(*(_variants(v) for v in (NAME, PATIENT_ID, STUDY_DESCRIPTION, ACCESSION, REFERRING, INSTITUTION)))
)


@dataclass(frozen=True)
class Hit:
    """One sentinel found in one captured text."""

    where: str
    needle: str
    context: str

    def __str__(self) -> str:
        return f"{self.where}: {self.needle!r} in ...{self.context}..."


def scan(where: str, text: str | bytes | None) -> list[Hit]:
    """Every sentinel occurrence in ``text`` (decoded as UTF-8 when bytes)."""
    if text is None:
        return []
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    low = text.lower()
    hits = []
    for needle in sorted(NEEDLES):
        for match in re.finditer(re.escape(needle), low):
            start = max(match.start() - 60, 0)
            hits.append(Hit(where, needle, text[start : match.end() + 60].replace("\n", "\\n")))
    return hits


def assert_clean(texts: Mapping[str, str | bytes | None]) -> None:
    """Fail, listing every place, when any captured text contains a sentinel."""
    hits = [hit for where, text in texts.items() for hit in scan(where, text)]
    assert not hits, "patient data leaked:\n" + "\n".join(str(h) for h in hits)


# ----------------------------------------------------------------------------------- the documented exception


def _key_fields(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The objects whose ``inputFile`` the README documents: failures[], warnings[], and with --source each
    image set's sourceErrors[] and each frame's source."""
    fields = [e for section in ("failures", "warnings") for e in doc.get(section) or [] if isinstance(e, dict)]
    for image_set in doc.get("imageSets") or []:
        fields += [e for e in image_set.get("sourceErrors") or [] if isinstance(e, dict)]
        fields += [f["source"] for f in image_set.get("frames") or [] if isinstance(f.get("source"), dict)]
    return fields


def allow_documented_keys_json(doc: Any) -> Any:
    """A copy of a job report document with the key removed where the README says keys are listed (the
    ``inputFile`` fields of :func:`_key_fields`), and only when the value is exactly a key."""
    if not isinstance(doc, dict):
        return doc
    out = json.loads(json.dumps(doc))
    for entry in _key_fields(out):
        if entry.get("inputFile") == SENTINEL_KEY:
            entry["inputFile"] = "<documented key>"
    return out


def documented_key_count(doc: Mapping[str, Any]) -> int:
    """Keys report.html may show: the failed and warned files (it lists no per-frame sources)."""
    return sum(
        1 for section in ("failures", "warnings") for e in doc.get(section) or [] if e.get("inputFile") == SENTINEL_KEY
    )


def allow_documented_keys_table(text: str) -> str:
    """The CLI job table lists failed files as ``FAILED    <key>: ...`` and warned ones as
    ``WARNING   <key>: codes ...``: the key is removed only at that position of those lines."""
    pattern = re.compile(rf"^(FAILED    |WARNING   |SOURCE    ){re.escape(SENTINEL_KEY)}: ", re.MULTILINE)
    return pattern.sub(r"\1<documented key>: ", text)


def allow_documented_keys_html(text: str, count: int) -> str:
    """report.html lists failed and warned files as ``<li><key>: ...``; exactly ``count`` of them are removed
    (the number of entries report.json lists with that key)."""
    needle = f"<li>{html.escape(SENTINEL_KEY)}: "
    assert text.count(needle) <= count, "the key is listed in report.html more often than in report.json"
    return text.replace(needle, "<li><documented key>: ")


# ---------------------------------------------------------------------------------------------- P10 files


def _bundled(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), f"{name} is not bundled with this pydicom"
    return pydicom.dcmread(path)


def _plant(ds: Dataset, study_uid: str) -> Dataset:
    ds.PatientName = NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.AccessionNumber = ACCESSION
    ds.ReferringPhysicianName = REFERRING
    ds.InstitutionName = INSTITUTION
    ds.StudyID = "ZZSENTINEL"
    ds.SeriesDescription = "ZZSENTINEL SERIES"
    ds.OtherPatientIDs = PATIENT_ID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sentinel_files(*, sentinel_key_holds: str) -> dict[str, bytes]:
    """Object key -> P10 bytes, every file carrying the sentinel patient and study text.

    Parameters
    ----------
    sentinel_key_holds
        ``"good"``: :data:`SENTINEL_KEY` holds an importable, decodable CT; ``"undecodable"``: it holds
        the file whose pixel data is truncated (imported with a warning, its source cannot be decoded).
    """
    study = generate_uid()
    ct = _plant(_bundled("CT_small.dcm"), study)
    mr = _plant(_bundled("MR_small_RLE.dcm"), study)
    rgb = _plant(_bundled("SC_rgb_rle_2frame.dcm"), study)
    # rejected by the import: no SOP Instance UID
    rejected = _plant(_bundled("CT_small.dcm"), study)
    del rejected.SOPInstanceUID
    # imported with a warning (pixels stored as a blob), and undecodable as a source: truncated PixelData
    truncated = _plant(_bundled("CT_small.dcm"), study)
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 2]
    other_ct = _plant(_bundled("CT_small.dcm"), study)
    files = {
        "dicom/ct.dcm": _bytes(ct),
        "dicom/mr_rle.dcm": _bytes(mr),
        "dicom/rgb_rle.dcm": _bytes(rgb),
        "dicom/rejected.dcm": _bytes(rejected),
    }
    if sentinel_key_holds == "good":
        files["dicom/truncated.dcm"] = _bytes(truncated)
        files[SENTINEL_KEY] = _bytes(other_ct)
    else:
        files[SENTINEL_KEY] = _bytes(truncated)
    return files


def scrub_key(text: str) -> str:
    """``text`` with every spelling of :data:`SENTINEL_KEY` (raw, URL-encoded) replaced: what is left can
    only leak patient data through attribute values, not through the key."""
    for spelling in (SENTINEL_KEY, quote(SENTINEL_KEY), quote_plus(SENTINEL_KEY), quote(SENTINEL_KEY, safe="")):
        text = text.replace(spelling, "<key>")
    return text


#: The AWS SDK's own DEBUG records quote every request's parameters and URL: reading an object whose key
#: embeds a name (which ``--source`` must do) puts that key there. They appear only when someone turns the
#: SDK's DEBUG logging on, so the key (never an attribute value) is tolerated in them.
SDK_LOG = re.compile(r": log (botocore|boto3|urllib3|s3transfer)[. ]")


def scrub_key_in_sdk_logs(texts: Mapping[str, str]) -> dict[str, str]:
    return {where: scrub_key(text) if SDK_LOG.search(where) else text for where, text in texts.items()}
