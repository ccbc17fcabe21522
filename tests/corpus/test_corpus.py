"""The corpus builder's checks (pins, extraction, stamp), the second decoder's IFRC layout, the class names, and
that every losslessly derived file holds exactly its real source's values."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import UID

from tests.corpus import build_corpus, derive, second_decoder
from tests.corpus.classify import format_class

P10 = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00"


def test_fetch_refuses_an_archive_that_is_not_the_pinned_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a cached archive whose bytes are not the ones pinned
    monkeypatch.setattr(build_corpus, "DOWNLOADS", tmp_path)
    pin = build_corpus.Pin("pkg", "1.0", "pkg-1.0.tar.gz", hashlib.sha256(b"the real one").hexdigest())
    (tmp_path / pin.filename).write_bytes(b"tampered")
    # WHEN it is fetched THEN the build stops and the file is gone, so the next run downloads it again
    with pytest.raises(SystemExit, match="is not the pinned"):
        build_corpus.fetch(pin)
    assert not (tmp_path / pin.filename).exists()


def test_fetch_returns_a_cached_archive_that_matches_its_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a cached archive with the pinned SHA-256 WHEN fetched THEN it is used as it is (no download)
    monkeypatch.setattr(build_corpus, "DOWNLOADS", tmp_path)
    pin = build_corpus.Pin("pkg", "1.0", "pkg-1.0.tar.gz", hashlib.sha256(b"the real one").hexdigest())
    (tmp_path / pin.filename).write_bytes(b"the real one")
    assert build_corpus.fetch(pin) == tmp_path / pin.filename


def test_dicom_files_are_found_in_plain_gzip_and_zip_members_and_nothing_else() -> None:
    # GIVEN a zip holding a P10 file, a gzipped P10 file and a text file
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.dcm", P10 + b"a")
        z.writestr("b.dcm.gz", gzip.compress(P10 + b"b"))
        z.writestr("notes.txt", b"not dicom")
    # WHEN its DICOM files are listed
    found = dict(build_corpus._dicom_files("pkg/cine.zip", buffer.getvalue()))
    # THEN the two P10 files come out under the zip's name, the text file does not
    assert found == {"pkg/cine/a.dcm": P10 + b"a", "pkg/cine/b.dcm": P10 + b"b"}
    assert list(build_corpus._dicom_files("x/readme.md", b"# hello")) == []


def test_flat_names_drop_the_packaging_folders() -> None:
    assert build_corpus._flat_name("deid-data-0.0.20/deid_data/data/animals/cat.dcm") == "animals__cat.dcm"
    assert build_corpus._flat_name("nibabel/nicom/tests/data/siemens_dwi_0.dcm") == "siemens_dwi_0.dcm"
    assert (
        build_corpus._flat_name("deid_data/data/ultrasounds/RGB_CINE/RGB_CINE") == "ultrasounds__RGB_CINE__RGB_CINE.dcm"
    )


def test_the_stamp_is_current_only_for_the_same_pins_and_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a corpus folder with a manifest
    monkeypatch.setattr(build_corpus, "STAMP", tmp_path / ".stamp")
    monkeypatch.setattr(build_corpus, "MANIFEST", tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{}")
    # WHEN the stamp holds another digest THEN the corpus is rebuilt; with this code's digest it is not
    (tmp_path / ".stamp").write_text("0" * 64 + "\n")
    assert not build_corpus.is_current()
    (tmp_path / ".stamp").write_text(build_corpus._digest_inputs() + "\n")
    assert build_corpus.is_current()


def test_second_decoder_ifrc_sign_extends_and_masks_from_bits_stored() -> None:
    # GIVEN 12 bits stored in 16 with junk in the unused high bits
    # WHEN hashed in the IFRC layout THEN signed data is sign-extended from bit 11 (-5 -> FB FF) and unsigned
    # data has the high bits cleared
    assert second_decoder.ifrc(np.array([[0xAFFB]], np.uint16), 16, 12, signed=True) == zlib.crc32(b"\xfb\xff")
    assert second_decoder.ifrc(np.array([[0xF123]], np.uint16), 16, 12, signed=False) == zlib.crc32(b"\x23\x01")
    # AND a 24-in-32-bit signed sample fills the 4-byte little-endian container
    assert second_decoder.ifrc(np.array([[-2]], np.int32), 32, 24, signed=True) == zlib.crc32(b"\xfe\xff\xff\xff")


def _set(ds: Dataset, **values: object) -> None:
    for keyword, value in values.items():
        setattr(ds, keyword, value)


def test_format_class_names_syntax_photometric_bits_and_layout() -> None:
    # GIVEN a header of a 2-frame 7 x 9 RGB image, 8 bits, planar configuration 1
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.PixelData = b""
    _set(ds, Rows=7, Columns=9, SamplesPerPixel=3, PlanarConfiguration=1, NumberOfFrames=2)
    _set(ds, BitsAllocated=8, BitsStored=8, PixelRepresentation=0, PhotometricInterpretation="RGB")
    # WHEN classified THEN every trait is named
    assert format_class(ds) == "1.2.840.10008.1.2.1 / RGB 8-bit planar 1 multi-frame odd-size"
    _set(ds, SamplesPerPixel=1, BitsAllocated=16, BitsStored=12, PixelRepresentation=1)
    _set(ds, PhotometricInterpretation="MONOCHROME2", NumberOfFrames=1, Rows=8, Columns=8)
    assert format_class(ds) == "1.2.840.10008.1.2.1 / MONOCHROME2 12-in-16-bit signed"


#: Derived files that change only the encoding or the layout: their stored values are the source's.
LOSSLESS = tuple(
    d for d in derive.DERIVATIONS if d.name.startswith(("htj2k_", "jpeg_57", "jpegls_80", "j2k_90", "rle_", "deflate_"))
) + tuple(d for d in derive.DERIVATIONS if d.name.startswith("planar1_"))


@pytest.mark.integration
@pytest.mark.parametrize("derivation", LOSSLESS, ids=[d.name for d in LOSSLESS])
def test_a_losslessly_derived_file_holds_its_real_sources_values(derivation: derive.Derivation) -> None:
    # GIVEN the built corpus
    build_corpus.ensure()
    derived = pydicom.dcmread(build_corpus.CORPUS / "derived" / derivation.name)
    source = pydicom.dcmread(derive._source_path(build_corpus.CORPUS, derivation.source))
    # WHEN both are decoded without colour conversion THEN every frame holds the same values
    assert str(derived.SOPInstanceUID) != str(source.SOPInstanceUID)
    pairs = list(zip(iter_pixels(derived, raw=True), iter_pixels(source, raw=True), strict=True))
    assert pairs
    assert all(np.array_equal(a, b) for a, b in pairs)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "near"), [("jpegls_81_near2_vlut_04.dcm", 2), ("jpegls_81_near3_SC_rgb_2frame.dcm", 3)]
)
def test_a_near_lossless_derived_file_is_within_near_of_its_source(name: str, near: int) -> None:
    # GIVEN the built corpus
    build_corpus.ensure()
    (derivation,) = [d for d in derive.DERIVATIONS if d.name == name]
    derived = pydicom.dcmread(build_corpus.CORPUS / "derived" / name)
    source = pydicom.dcmread(derive._source_path(build_corpus.CORPUS, derivation.source))
    # WHEN both are decoded THEN the values differ (it is lossy) but never by more than NEAR
    a = np.stack(list(iter_pixels(derived, raw=True))).astype(np.int64)
    b = np.stack(list(iter_pixels(source, raw=True))).astype(np.int64)
    assert 0 < int(np.abs(a - b).max()) <= near
