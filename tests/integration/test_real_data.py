"""Real DICOM files imported through the emulator and verified with the three-way check (``--source``):
the 78 files bundled with pydicom, CT1_UNC, and the corpus ``make corpus`` builds in ``build/dicom-corpus/``
from pinned public test-data packages (pydicom-data, deid-data, nibabel) plus files derived from real ones in
code (``tests/corpus/``).

Each file is its own import job, so files that share SOP Instance UIDs (pydicom's MR_small variants) do not
collide. Each file's verdict and relation are asserted: zero false MISMATCH, and every file that imports as
frames verifies CLEAN and consistent with its source unless it is listed below with the outcome it has and
why. Where a second decoder exists (GDCM, pydicom's own RLE decoder, OpenJPH) the source IFRC is compared with
it. ``-s`` prints the table: file, syntax, frames, verdict, relation, class, second decoder, and nothing from a
file's header beyond those.
"""

from __future__ import annotations

import collections
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from ahi_emulator import Emulator
from ahi_verify.healthimaging import HealthImagingSource, make_client
from ahi_verify.job import verify_job
from ahi_verify.locations import job_folder
from ahi_verify.outcomes import Status
from ahi_verify.report import JobReport
from ahi_verify.s3_output import JobOutputReader
from ahi_verify.source_check import SourceError, read_source_file
from tests.corpus import build_corpus, second_decoder
from tests.corpus.classify import format_class
from tests.support import SHARED_FIXTURES

pytestmark = [
    pytest.mark.integration,
    # pydicom's warnings about malformed elements quote the element's value, which may be patient data:
    # they are not collected into pytest's warnings summary.
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.valuerep"),
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.filereader"),
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.pixels.decoders.base"),
]

build_corpus.ensure()  # a no-op when `make corpus` (a step of `make test`) has built it

PYDICOM_FILES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
_MANIFEST = json.loads(build_corpus.MANIFEST.read_text())
CORPUS_ENTRIES = {e["file"]: e for e in _MANIFEST["files"]}
FILES: dict[str, Path] = {
    **{p.name: p for p in PYDICOM_FILES},
    "CT1_UNC": SHARED_FIXTURES / "CT1_UNC",
    **{name: build_corpus.CORPUS / name for name in CORPUS_ENTRIES},
}

VERIFIED = ("CLEAN", "consistent")
REJECTED = ("UNVERIFIED", "rejected")
BLOB = ("UNVERIFIED", "blob: import-warned")
NO_PIXELS = ("UNVERIFIED", "no pixel data")


def _each(outcome: tuple[str, str], why: str, *names: str) -> dict[str, tuple[str, str, str]]:
    return dict.fromkeys(names, (*outcome, why))


#: Files that do not import as verifiable frames: (verdict, relation, why). Everything else must verify CLEAN
#: and consistent with its source.
EXPECTED: dict[str, tuple[str, str, str]] = {
    **_each(
        REJECTED,
        "not DICOM P10 (no preamble and DICM prefix)",
        "ExplVR_BigEndNoMeta.dcm",
        "ExplVR_LitEndNoMeta.dcm",
        "no_meta.dcm",
        "rtstruct.dcm",
    ),
    **_each(REJECTED, "no TransferSyntaxUID in the file meta", "meta_missing_tsyntax.dcm"),
    **_each(REJECTED, "an element pydicom cannot parse (IS value '1A')", "badVR.dcm"),
    **_each(
        REJECTED,
        "no StudyInstanceUID",
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
    ),
    **_each(
        REJECTED,
        "no SOPInstanceUID",
        "UN_sequence.dcm",
        "empty_charset_LEI.dcm",
        "nested_priv_SQ.dcm",
        "no_meta_group_length.dcm",
        "priv_SQ.dcm",
        "nibabel/decimal_rescale.dcm",
        "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm",
    ),
    **_each(
        BLOB,
        "pixel data no decoder reads (truncated; 12-bit lossy JPEG): a 45312 blob, its frame not compared "
        "(the warning says so)",
        "JPEG-lossy.dcm",
        "MR_truncated.dcm",
    ),
    **_each(
        NO_PIXELS,
        "no pixel data (SR, RT plan, waveform, CSA-only): metadata only",
        "reportsi.dcm",
        "reportsi_with_empty_number_tags.dcm",
        "rtplan.dcm",
        "rtplan_truncated.dcm",
        "test-SR.dcm",
        "waveform_ecg.dcm",
        "nibabel/csa_slice_norm.dcm",
    ),
}

#: Known gaps: the outcome today, asserted so that a fix shows up here as an expectation to update.
KNOWN_GAPS: dict[str, tuple[str, str, str]] = {}

#: Files on which the second decoder differs from pydicom, and why pydicom is right.
SECOND_DECODER_DIFFERS: dict[str, str] = {
    "rtdose_expb.dcm": "GDCM 3.2.6 mis-swaps 32-bit big-endian samples; pydicom gives rtdose.dcm's IFRCs",
    "derived/signed32_big_endian_CT_small.dcm": "the same GDCM big-endian 32-bit defect; pydicom gives the "
    "little-endian twin's IFRCs",
    "derived/signed24in32_CT_small.dcm": "GDCM returns zeros for signed 24-in-32-bit samples",
}

#: Transfer syntax x format classes (``tests.corpus.classify.format_class``) verified CLEAN and consistent,
#: with the number of files in each.
EXPECTED_CLASSES: dict[str, int] = {
    "1.2.840.10008.1.2 / MONOCHROME2 12-in-16-bit": 4,
    "1.2.840.10008.1.2 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2 / MONOCHROME2 32-bit": 1,
    "1.2.840.10008.1.2 / MONOCHROME2 32-bit multi-frame": 1,
    "1.2.840.10008.1.2 / PALETTE COLOR 16-bit": 1,
    "1.2.840.10008.1.2 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME1 10-in-16-bit": 2,
    "1.2.840.10008.1.2.1 / MONOCHROME1 15-in-16-bit odd-size": 2,
    "1.2.840.10008.1.2.1 / MONOCHROME2 1-bit SEG": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 1-bit multi-frame SEG": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 1-bit multi-frame odd-size SEG": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 12-in-16-bit": 6,
    "1.2.840.10008.1.2.1 / MONOCHROME2 12-in-16-bit multi-frame": 2,
    "1.2.840.10008.1.2.1 / MONOCHROME2 12-in-16-bit signed": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 14-in-16-bit signed": 2,
    "1.2.840.10008.1.2.1 / MONOCHROME2 16-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 16-bit signed": 5,
    "1.2.840.10008.1.2.1 / MONOCHROME2 24-in-32-bit signed": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 32-bit signed": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 8-bit": 2,
    "1.2.840.10008.1.2.1 / MONOCHROME2 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / MONOCHROME2 8-bit signed": 1,
    "1.2.840.10008.1.2.1 / PALETTE COLOR 8-bit": 2,
    "1.2.840.10008.1.2.1 / PALETTE COLOR 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / RGB 16-bit": 1,
    "1.2.840.10008.1.2.1 / RGB 16-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / RGB 16-bit planar 1": 1,
    "1.2.840.10008.1.2.1 / RGB 32-bit": 1,
    "1.2.840.10008.1.2.1 / RGB 32-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / RGB 8-bit": 13,
    "1.2.840.10008.1.2.1 / RGB 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.1 / RGB 8-bit odd-size": 1,
    "1.2.840.10008.1.2.1 / RGB 8-bit planar 1": 1,
    "1.2.840.10008.1.2.1 / RGB 8-bit planar 1 multi-frame": 2,
    "1.2.840.10008.1.2.1 / YBR_FULL 8-bit": 1,
    "1.2.840.10008.1.2.1 / YBR_FULL 8-bit planar 1": 1,
    "1.2.840.10008.1.2.1 / YBR_FULL_422 8-bit": 1,
    "1.2.840.10008.1.2.1.99 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.1.99 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.1.99 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.1.99 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 1-bit SEG": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 1-bit multi-frame SEG": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 16-bit signed": 2,
    "1.2.840.10008.1.2.2 / MONOCHROME2 32-bit": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 32-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / MONOCHROME2 32-bit signed": 1,
    "1.2.840.10008.1.2.2 / PALETTE COLOR 16-bit": 1,
    "1.2.840.10008.1.2.2 / PALETTE COLOR 8-bit": 1,
    "1.2.840.10008.1.2.2 / PALETTE COLOR 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / RGB 16-bit": 1,
    "1.2.840.10008.1.2.2 / RGB 16-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / RGB 32-bit": 1,
    "1.2.840.10008.1.2.2 / RGB 32-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.2 / RGB 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.2 / RGB 8-bit odd-size": 1,
    "1.2.840.10008.1.2.2 / RGB 8-bit planar 1": 1,
    "1.2.840.10008.1.2.4.201 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.4.201 / RGB 16-bit": 1,
    "1.2.840.10008.1.2.4.202 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.202 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.4.203 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.203 / RGB 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.112 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.50 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.4.50 / RGB 8-bit": 5,
    "1.2.840.10008.1.2.4.50 / YBR_FULL 8-bit": 5,
    "1.2.840.10008.1.2.4.50 / YBR_FULL 8-bit odd-size": 1,
    "1.2.840.10008.1.2.4.50 / YBR_FULL_422 8-bit": 11,
    "1.2.840.10008.1.2.4.50 / YBR_FULL_422 8-bit multi-frame": 3,
    "1.2.840.10008.1.2.4.51 / MONOCHROME2 12-in-16-bit": 1,
    "1.2.840.10008.1.2.4.57 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.57 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.4.70 / MONOCHROME2 12-in-16-bit": 1,
    "1.2.840.10008.1.2.4.70 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.4.70 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.4.70 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.80 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.80 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.4.80 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.4.80 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.81 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.4.81 / RGB 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.90 / MONOCHROME1 10-in-16-bit": 1,
    "1.2.840.10008.1.2.4.90 / MONOCHROME1 15-in-16-bit odd-size": 1,
    "1.2.840.10008.1.2.4.90 / MONOCHROME2 12-in-16-bit": 2,
    "1.2.840.10008.1.2.4.90 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.90 / MONOCHROME2 13-in-16-bit signed": 1,
    "1.2.840.10008.1.2.4.90 / MONOCHROME2 16-bit signed": 4,
    "1.2.840.10008.1.2.4.90 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.90 / YBR_RCT 8-bit": 3,
    "1.2.840.10008.1.2.4.91 / MONOCHROME1 10-in-16-bit": 1,
    "1.2.840.10008.1.2.4.91 / MONOCHROME1 15-in-16-bit odd-size": 1,
    "1.2.840.10008.1.2.4.91 / MONOCHROME2 12-in-16-bit": 1,
    "1.2.840.10008.1.2.4.91 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.4.91 / MONOCHROME2 14-in-16-bit signed": 1,
    "1.2.840.10008.1.2.4.91 / MONOCHROME2 16-bit signed": 2,
    "1.2.840.10008.1.2.4.91 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.4.91 / YBR_ICT 8-bit": 1,
    "1.2.840.10008.1.2.5 / MONOCHROME2 12-in-16-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / MONOCHROME2 16-bit signed": 1,
    "1.2.840.10008.1.2.5 / MONOCHROME2 32-bit": 1,
    "1.2.840.10008.1.2.5 / MONOCHROME2 32-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / MONOCHROME2 8-bit": 1,
    "1.2.840.10008.1.2.5 / PALETTE COLOR 8-bit": 1,
    "1.2.840.10008.1.2.5 / PALETTE COLOR 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / RGB 16-bit": 1,
    "1.2.840.10008.1.2.5 / RGB 16-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / RGB 32-bit": 1,
    "1.2.840.10008.1.2.5 / RGB 32-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / RGB 8-bit": 1,
    "1.2.840.10008.1.2.5 / RGB 8-bit multi-frame": 1,
    "1.2.840.10008.1.2.5 / YBR_FULL 8-bit": 1,
}


@dataclass
class Row:
    syntax: str
    frames: int
    verdict: str
    relation: str
    klass: str
    origin: str
    second: str
    detail: str


ROWS: dict[str, Row] = {}


def _header(path: Path) -> tuple[str, int, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        return str(ds.file_meta.TransferSyntaxUID), int(ds.get("NumberOfFrames") or 1), format_class(ds)
    except Exception as exc:  # an unreadable file is a row, not an error
        return "-", 0, f"unreadable ({type(exc).__name__})"


def _detail(report: JobReport) -> str:
    """Why a file did not import as frames: the import's failure (its messages name attributes and sizes,
    never values) or its warning codes."""
    if report.findings.failures:
        (failure,) = report.findings.failures
        return f"{failure.exception_type}: {failure.message}"
    codes = sorted({w.code for line in report.findings.warnings for w in line.warnings if w.code is not None})
    return f"warning {codes}" if codes else ""


def _relation(report: JobReport) -> str:
    """``rejected``, ``no pixel data``, or the frames' three-way relations (prefixed ``blob:`` when the
    import stored the pixel data as one blob with a warning)."""
    if report.findings.failures:
        return "rejected"
    if report.summary.frames.total == 0:
        return "no pixel data"
    relations = "+".join(sorted({f.source.relation.value for _, f in report.frames() if f.source})) or "no source"
    if any(w.code is not None for line in report.findings.warnings for w in line.warnings):
        return f"blob: {relations}"
    return relations


def _decoder_of(path: Path) -> str | None:
    """The second decoder for this file, or None (no pixel data, 1-bit, retained or unsupported syntax, or a
    header pydicom cannot read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            return second_decoder.second_decoder_for(str(ds.file_meta.TransferSyntaxUID), ds)
        except Exception:  # an unreadable header gets no second opinion
            return None


def _second_opinion(name: str, path: Path, gdcm: dict[str, list[int] | str]) -> str:
    """``agree (GDCM)``, ``DIFFERS (GDCM)``, or why no second decoder looked at the file."""
    decoder = _decoder_of(path)
    if decoder is None:
        return "-"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = [f.crc for f in read_source_file(path.read_bytes(), name).frames]
    except SourceError:
        return f"- (source unreadable, {decoder} not asked)"
    if decoder == "GDCM":
        if not gdcm:
            return "- (GDCM not installed)"
        other = gdcm[str(path)]
    elif decoder == "pydicom-rle":
        other = second_decoder.rle_ifrcs(path.read_bytes())
    else:
        other = second_decoder.openjph_ifrcs(path.read_bytes())
    if isinstance(other, str):
        return f"- ({other})"
    return f"agree ({decoder})" if other == source else f"DIFFERS ({decoder})"


@pytest.fixture(scope="module")
def gdcm_results() -> dict[str, list[int] | str]:
    """GDCM's frame IFRCs for every file it is the second decoder of, in one subprocess run."""
    if not second_decoder.gdcm_available():
        return {}
    return second_decoder.gdcm_ifrcs([p for p in FILES.values() if _decoder_of(p) == "GDCM"])


@pytest.fixture(scope="module")
def verifier(aws_env_module: dict[str, str]) -> tuple[JobOutputReader, HealthImagingSource]:
    import boto3  # noqa: PLC0415

    return JobOutputReader(boto3.client("s3")), HealthImagingSource(make_client(max_pool_connections=8))


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_file_imports_and_verifies_without_false_mismatch(
    name: str,
    emulator: Emulator,
    s3_module: Any,
    verifier: tuple[JobOutputReader, HealthImagingSource],
    gdcm_results: dict[str, list[int] | str],
) -> None:
    path = FILES[name]
    # GIVEN one real DICOM file in an input prefix, imported by the emulator
    datastore = emulator.create_datastore()
    prefix = f"real/{name.replace('/', '--')}/"  # one prefix a file: each is its own job
    s3_module.put_object(Bucket="real-in", Key=f"{prefix}{path.name}", Body=path.read_bytes())
    job = emulator.start_import_job(datastore, f"s3://real-in/{prefix}", "s3://real-out/jobs/")
    emulator.wait_for_job(datastore, job)
    # WHEN the job is verified with the three-way check
    reader, source = verifier
    folder = job_folder(f"s3://real-out/jobs/{datastore}-DicomImport-{job}/")
    report = verify_job(reader, source, folder, manifest_wait_s=5, with_sources=True)
    syntax, frames, klass = _header(path)
    origin = CORPUS_ENTRIES.get(name, {}).get("source", "pydicom 3.0 test_files")
    second = _second_opinion(name, path, gdcm_results)
    row = Row(syntax, frames, report.verdict.value, _relation(report), klass, origin, second, _detail(report))
    ROWS[name] = row
    # THEN nothing mismatches, and the file has the outcome expected of it
    expected = (KNOWN_GAPS.get(name) or EXPECTED.get(name) or VERIFIED)[:2]
    assert (row.verdict, row.relation) == expected, row
    if name not in KNOWN_GAPS:
        assert all(f.status is not Status.MISMATCH for _, f in report.frames())
    if expected == VERIFIED:
        assert report.summary.frames.match == report.summary.frames.total > 0
        assert all(s.error is None and not s.source_errors and not s.orphan_source_frames for s in report.image_sets)
    # AND the second decoder, where there is one, computes the same source IFRC
    if name in SECOND_DECODER_DIFFERS:
        assert not row.second.startswith("agree"), row.second
    else:
        assert not row.second.startswith("DIFFERS"), row.second


def test_real_data_table() -> None:
    """Prints every file's row (run with -s) and checks the class coverage and the totals."""
    assert set(ROWS) == set(FILES), "run the whole module: the table needs every file"
    width = max(map(len, ROWS))
    print(f"\nReal DICOM files through import and verification ({len(ROWS)} files):")
    print(f"  {'file':<{width}}  {'syntax':<24} {'frames':>6}  {'verdict':<10} {'relation':<14} class / origin / 2nd")
    for name in sorted(ROWS):
        r = ROWS[name]
        derived = " [derived]" if r.origin.startswith("derived") else ""
        print(
            f"  {name:<{width}}  {r.syntax:<24} {r.frames:>6}  {r.verdict:<10} {r.relation:<14} "
            f"{r.klass.split(' / ', 1)[-1]}{derived} / {r.origin} / {r.second} / {r.detail}"
        )
    classes = collections.Counter(r.klass for r in ROWS.values() if r.relation == "consistent")
    print(f"\n  {len(classes)} transfer-syntax/format classes verified consistent:")
    for klass, count in sorted(classes.items()):
        print(f"    {count:3d}  {klass}")
    seconds = collections.Counter("not compared" if r.second.startswith("-") else r.second for r in ROWS.values())
    print(f"  second decoder: {dict(sorted(seconds.items()))}")
    print(f"  outcomes: {dict(collections.Counter(r.relation for r in ROWS.values()))}")
    assert dict(classes) == EXPECTED_CLASSES
    assert len(classes) >= 25
    assert ROWS["CT1_UNC"].relation == "consistent"
