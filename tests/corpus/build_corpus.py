"""Build ``build/dicom-corpus/``: real DICOM files from pinned public test-data packages, plus files derived
from them in code, and GDCM (``python-gdcm``) as a second decoder in ``build/corpus-cache/gdcm``.

``python -m tests.corpus.build_corpus`` (``make corpus``) downloads each archive once with
``pip download --no-deps`` into ``build/corpus-cache/dl``, checks its SHA-256 pin, and extracts only the DICOM
P10 files (preamble ``DICM``; gzip and zip members are opened too). A stamp file holds a digest of the pins and
of this package's code: while it matches, a run does nothing. Nothing here prints file contents, only names and
counts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "build" / "dicom-corpus"
CACHE = ROOT / "build" / "corpus-cache"
DOWNLOADS = CACHE / "dl"
GDCM_DIR = CACHE / "gdcm"
STAMP = CORPUS / ".stamp"
MANIFEST = CORPUS / "manifest.json"


@dataclass(frozen=True)
class Pin:
    """One registry distribution, pinned by version and by the SHA-256 of the file pip downloads."""

    name: str
    version: str
    filename: str
    sha256: str


#: The data packages. Why these: each is a maintained project's own test data, on the registry, with a
#: permissive licence (see README.md beside this file).
DATA_PINS = (
    Pin(
        "pydicom-data",
        "1.0.0",
        "pydicom_data-1.0.0-py3-none-any.whl",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
    ),
    Pin(
        "deid-data",
        "0.0.20",
        "deid-data-0.0.20.tar.gz",
        "33d455f13c82f76a39e8eb52d2808a35d7cde29c120819e246c863432281b8ed",
    ),
    Pin(
        "nibabel",
        "5.4.2",
        "nibabel-5.4.2-py3-none-any.whl",
        "553482c5f1e1034fc312edf6fb7f32236c0056439845d1c29293b7e8c98d4854",
    ),
)

#: The second decoder: a binary wheel, so one pin per platform; other platforms run without it.
GDCM_PINS = {
    "x86_64": Pin(
        "python-gdcm",
        "3.2.6",
        "python_gdcm-3.2.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "512d0d903e12c5ad389939a257817bf182ce288431b3d474d62cb0c0833b8b56",
    ),
}


def _digest_inputs() -> str:
    """What the corpus depends on: the pins, this package's code and the Python minor version."""
    h = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for path in sorted(p for p in Path(__file__).parent.glob("*.py") if not p.name.startswith("test_")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def is_current() -> bool:
    return STAMP.is_file() and STAMP.read_text().strip() == _digest_inputs() and MANIFEST.is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(pin: Pin) -> Path:
    """The pinned archive, downloaded once into the cache and checked against its SHA-256."""
    path = DOWNLOADS / pin.filename
    if not path.is_file():
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(DOWNLOADS)]
        command += ["--only-binary", ":all:"] if pin.filename.endswith(".whl") else ["--no-binary", pin.name]
        subprocess.run([*command, f"{pin.name}=={pin.version}"], check=True)
    actual = _sha256(path) if path.is_file() else "missing"
    if actual != pin.sha256:
        path.unlink(missing_ok=True)
        raise SystemExit(f"{pin.filename}: SHA-256 {actual} is not the pinned {pin.sha256}")
    return path


def _members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every regular file in a wheel, zip or tar.gz."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and (f := tar.extractfile(member)) is not None:
                    yield member.name, f.read()
    else:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, z.read(info)


def _dicom_files(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The DICOM P10 files in one archive member: itself, or inside it when it is a .gz or .zip."""
    if data[128:132] == b"DICM":
        yield name, data
    elif name.endswith(".gz") and data[:2] == b"\x1f\x8b":
        yield from _dicom_files(name[: -len(".gz")], gzip.decompress(data))
    elif name.endswith(".zip") and zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield from _dicom_files(f"{name[: -len('.zip')]}/{info.filename}", z.read(info))


_NOISE_FOLDERS = frozenset({"data", "data_store", "tests", "nicom", "nibabel", "deid_data", "deid-data-0.0.20"})


def _flat_name(path: str) -> str:
    """``deid-data-0.0.20/deid_data/data/animals/cat.dcm`` -> ``animals__cat.dcm`` (packaging folders dropped)."""
    parts = [p for p in path.split("/") if p and p not in _NOISE_FOLDERS]
    stem = "__".join(parts)
    return stem if stem.lower().endswith(".dcm") else f"{stem}.dcm"


#: Files not extracted, and why.
SKIPPED = {
    "ultrasounds__RGB_CINE__RGB_CINE.dcm": "104 MB; its class (native RGB 8-bit multi-frame) has smaller files",
}


def extract(pin: Pin, archive: Path) -> list[dict[str, str]]:
    out = CORPUS / pin.name
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    entries = []
    for member, data in _members(archive):
        for name, dicom in _dicom_files(member, data):
            digest = hashlib.sha256(dicom).hexdigest()
            if digest in seen or _flat_name(name) in SKIPPED:  # nibabel ships 0.dcm and 1.dcm twice
                continue
            seen.add(digest)
            target = out / _flat_name(name)
            target.write_bytes(dicom)
            entries.append({"file": f"{pin.name}/{target.name}", "source": f"{pin.name} {pin.version}", "note": ""})
    return entries


def install_gdcm() -> str:
    """python-gdcm into its own folder (never the dev venv, so pydicom does not pick GDCM as a backend)."""
    import platform  # noqa: PLC0415

    pin = GDCM_PINS.get(platform.machine())
    python_tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    if pin is None or f"-{python_tag}-" not in pin.filename:
        return f"no python-gdcm pin for {platform.machine()} / {python_tag}: no second decoder"
    if (GDCM_DIR / "gdcm.py").is_file():
        return f"python-gdcm {pin.version} (cached)"
    wheel = fetch(pin)
    shutil.rmtree(GDCM_DIR, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(GDCM_DIR),
            str(wheel),
        ],
        check=True,
    )
    return f"python-gdcm {pin.version}"


def build() -> None:
    from tests.corpus import derive  # noqa: PLC0415 - derive needs pydicom/imagecodecs, the stamp check does not

    shutil.rmtree(CORPUS, ignore_errors=True)
    CORPUS.mkdir(parents=True)
    entries = []
    for pin in DATA_PINS:
        entries += extract(pin, fetch(pin))
    entries += derive.derive_all(CORPUS)
    gdcm = install_gdcm()
    MANIFEST.write_text(json.dumps({"second_decoder": gdcm, "files": entries}, indent=1) + "\n")
    STAMP.write_text(_digest_inputs() + "\n")
    size = sum(p.stat().st_size for p in CORPUS.rglob("*.dcm"))
    print(f"dicom-corpus: {len(entries)} files, {size / 1e6:.1f} MB; second decoder: {gdcm}")


def ensure() -> None:
    """Build the corpus unless the stamp says it is current."""
    if not is_current():
        build()


if __name__ == "__main__":
    ensure()
