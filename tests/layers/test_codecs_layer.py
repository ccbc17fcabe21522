"""The Lambda layers, built with their own Makefiles as `sam build` runs them, then used from a clean Python 3.12.

GIVEN the layer Makefiles WHEN the codecs layer is built for x86_64 (and the core layer beside it) THEN it fits
the size budget, and a virtualenv of the Lambda runtime's Python (3.12, no site packages, only the layers on
PYTHONPATH) decodes an HTJ2K frame of the CT1_UNC fixture bit-exactly. The arm64 build is only downloaded and
inspected: its extensions cannot run here.

The Python 3.12 interpreter is `python3.12` on PATH if that runs, else the newest pyenv 3.12.x; set
AHI_PYTHON312 to choose another. Without one, the decode test is skipped.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest

from tests.support import CT1_UNC_CRC, REPO, SHARED_FIXTURES, run_json_script

pytestmark = pytest.mark.layer

CT1_UNC = SHARED_FIXTURES / "CT1_UNC"
MAX_UNZIPPED = 100 * 1024 * 1024
MIB = 1024 * 1024
IMAGECODECS = "2026.10.10"
NUMPY = "2.5.5"
EM_X86_64 = 62
EM_AARCH64 = 183

# Runs inside the clean Python 3.12 with only the layers on sys.path; prints one JSON line.
# argv: HTJ2K frame file, JPEG 2000 frame file.
SMOKE_SCRIPT = r"""
import json, sys, zlib

import numpy as np
import imagecodecs

htj2k = open(sys.argv[1], "rb").read()
j2k = open(sys.argv[2], "rb").read()
report = {
    "python": "%d.%d" % sys.version_info[:2],
    "in_venv": sys.prefix != sys.base_prefix,
    "imagecodecs": imagecodecs.__version__,
    "numpy": np.__version__,
    "files": [imagecodecs.__file__, np.__file__],
    "codecs": [imagecodecs.htj2k_version(), imagecodecs.jpeg2k_version(), imagecodecs.deflate_version()],
}
pixels = np.ascontiguousarray(imagecodecs.htj2k_decode(htj2k, planar=False))
report["htj2k"] = {
    "shape": list(pixels.shape),
    "dtype": pixels.dtype.str,
    "crc": zlib.crc32(pixels),
    "deflate_crc32": imagecodecs.deflate_crc32(pixels),
}
report["jpeg2k_crc"] = zlib.crc32(np.ascontiguousarray(imagecodecs.jpeg2k_decode(j2k)))

# The verification core's own entry point, from the core layer.
from ahi_verify import ifrc

report["ifrc"] = int(ifrc.decoded_checksum(htj2k, "image/jph").crc)
report["ifrc_crc32"] = getattr(ifrc.crc32, "__name__", repr(ifrc.crc32))

# report.html from the core layer's Jinja2 template, escaped by MarkupSafe's plain-Python build.
import markupsafe
from ahi_verify.report import JobHeader, JobReport
from ahi_verify.report_html import render_html

report["page"] = render_html(JobReport(JobHeader("j<1>", "d", "s3://b/f/")))
report["escape"] = markupsafe._escape_inner.__module__
print(json.dumps(report))
"""


def _make(layer: str, target: str, artifacts: Path, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    cmd = ["make", "--no-print-directory", "-C", str(REPO / "layers" / layer), target]
    cmd += [f"ARTIFACTS_DIR={artifacts}", *(f"{name}={value}" for name, value in variables.items())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _build_codecs(artifacts: Path, arch: str) -> Path:
    # The dev venv's pip (pinned) rather than whatever `python3` is on PATH.
    _make("codecs", "build-CodecsLayer", artifacts, ARCH=arch, PYTHON=sys.executable)
    return artifacts / "python"


def _unzipped_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int(struct.unpack_from("<H", header, 18)[0])


@pytest.fixture(scope="module")
def x86_64_layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layers-x86_64")
    codecs = _build_codecs(root / "codecs", "x86_64")
    _make("core", "build-CoreLayer", root / "core")
    return {"codecs": codecs, "core": root / "core" / "python"}


@pytest.fixture(scope="module")
def arm64_codecs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_codecs(tmp_path_factory.mktemp("layers-arm64") / "codecs", "arm64")


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """CT1_UNC's pixels as a reversible HTJ2K frame and a lossless JPEG 2000 frame, encoded in the dev venv."""
    assert CT1_UNC.is_file(), f"shared fixture missing: {CT1_UNC}"
    pixels = np.ascontiguousarray(pydicom.dcmread(CT1_UNC).pixel_array)
    assert zlib.crc32(pixels) == CT1_UNC_CRC, "the fixture's pixels do not hash to the published test vector"
    folder = tmp_path_factory.mktemp("frames")
    htj2k, j2k = folder / "ct1.jph", folder / "ct1.j2k"
    htj2k.write_bytes(imagecodecs.htj2k_encode(pixels, reversible=True))
    j2k.write_bytes(imagecodecs.jpeg2k_encode(pixels, level=0, codecformat="j2k"))
    return htj2k, j2k


def test_x86_64_codecs_layer_fits_the_size_budget(x86_64_layers: dict[str, Path]) -> None:
    codecs = _unzipped_bytes(x86_64_layers["codecs"])
    core = _unzipped_bytes(x86_64_layers["core"])
    assert codecs < MAX_UNZIPPED, f"codecs layer is {codecs / MIB:.1f} MiB unzipped, over the 100 MiB budget"
    # Trimmed to imagecodecs' HTJ2K/JPEG 2000/deflate parts, numpy without tests: about 52 MiB.
    assert codecs < 60 * MIB, f"codecs layer grew to {codecs / MIB:.1f} MiB unzipped (expected about 52)"
    # ahi_verify and aws-lambda-powertools[tracer] (pure Python): about 5 MiB.
    assert core < 8 * MIB, f"core layer is {core / MIB:.2f} MiB unzipped"


def test_x86_64_codecs_layer_holds_only_what_the_verifier_uses(x86_64_layers: dict[str, Path]) -> None:
    site = x86_64_layers["codecs"]
    modules = sorted(p.name.split(".", 1)[0] for p in (site / "imagecodecs").glob("*.so"))
    assert modules == ["_deflate", "_htj2k", "_imcd", "_jpeg2k", "_shared", "_shared_cython"]
    libs = sorted(p.name.split("-", 1)[0] for p in (site / "imagecodecs.libs").iterdir())
    assert libs == ["libdeflate", "liblcms2", "libopenjp2", "libopenjph"]
    assert (site / "imagecodecs" / "licenses").is_dir()
    assert not list(site.rglob("__pycache__")), "bytecode of the build machine's Python in the layer"
    assert not list((site / "numpy").rglob("tests")), "numpy test suites in the layer"
    assert not (site / "bin").exists(), "console scripts (build machine shebangs) in the layer"
    assert {_elf_machine(so) for so in site.rglob("*.so*") if so.is_file()} == {EM_X86_64}


def test_core_layer_is_the_ahi_verify_package(x86_64_layers: dict[str, Path]) -> None:
    core = x86_64_layers["core"]
    names = {p.name for p in core.iterdir()}
    # Beside ahi_verify: Powertools with its [tracer] extra (layers/core/requirements.txt), without botocore,
    # which the Lambda runtime provides; all pure Python, so the layer serves both architectures.
    assert {"ahi_verify", "aws_lambda_powertools", "aws_xray_sdk", "wrapt", "jinja2", "markupsafe"} <= names, names
    assert not names & {"boto3", "botocore", "urllib3"}, "a layer copy of the SDK would shadow the runtime's"
    assert not list(core.rglob("*.so*")), "native code in the architecture-independent core layer"
    assert (core / "ahi_verify" / "__init__.py").is_file()
    assert not list(core.rglob("__pycache__"))
    shipped = {p.relative_to(core / "ahi_verify") for p in (core / "ahi_verify").rglob("*.py")}
    source = REPO / "layers" / "core" / "ahi_verify"
    assert shipped == {p.relative_to(source) for p in source.rglob("*.py")}
    # AND the report page's templates ship with it, and MarkupSafe is its plain-Python build (no _speedups)
    templates = {p.name for p in (source / "templates").iterdir()}
    assert templates
    assert templates == {p.name for p in (core / "ahi_verify" / "templates").iterdir()}
    assert (core / "markupsafe" / "_native.py").is_file()


def test_clean_python312_decodes_htj2k_bit_exactly_with_only_the_layers(
    x86_64_layers: dict[str, Path], clean_python312: Path, frames: tuple[Path, Path], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        PYTHONPATH=os.pathsep.join(str(x86_64_layers[name]) for name in ("codecs", "core")),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",  # Lambda's /opt is read-only
    )
    report = run_json_script(
        clean_python312, SMOKE_SCRIPT, [str(f) for f in frames], env=env, cwd=tmp_path, what="the smoke script"
    )

    assert report["python"] == "3.12"
    assert report["in_venv"]
    assert (report["imagecodecs"], report["numpy"]) == (IMAGECODECS, NUMPY)
    assert all(f.startswith(str(x86_64_layers["codecs"])) for f in report["files"]), report["files"]
    assert report["codecs"][0].startswith("openjph 0.32"), report["codecs"]
    assert report["htj2k"]["shape"] == [512, 512]
    assert report["htj2k"]["dtype"] == "<i2"
    assert report["htj2k"]["crc"] == CT1_UNC_CRC
    assert report["htj2k"]["deflate_crc32"] == CT1_UNC_CRC
    assert report["jpeg2k_crc"] == CT1_UNC_CRC
    assert report["ifrc"] == CT1_UNC_CRC
    assert report["ifrc_crc32"] == "deflate_crc32", "the core fell back to zlib: _deflate unusable?"
    assert '<h1>ahi-verify report: import job <span class="id">j&lt;1&gt;</span></h1>' in report["page"]
    assert report["escape"] == "markupsafe._native"


def test_arm64_codecs_layer_has_the_aarch64_htj2k_wheel(arm64_codecs: Path) -> None:
    site = arm64_codecs
    wheel = (site / f"imagecodecs-{IMAGECODECS}.dist-info" / "WHEEL").read_text()
    assert "Tag: cp312-abi3-manylinux_2_28_aarch64" in wheel, wheel
    htj2k = list((site / "imagecodecs").glob("_htj2k*.so"))
    assert len(htj2k) == 1, "no HTJ2K extension: an imagecodecs without OpenJPH was resolved"
    assert _elf_machine(htj2k[0]) == EM_AARCH64
    assert {_elf_machine(so) for so in site.rglob("*.so*") if so.is_file()} == {EM_AARCH64}
    size = _unzipped_bytes(site)
    assert size < MAX_UNZIPPED, f"arm64 codecs layer is {size / MIB:.1f} MiB unzipped, over the 100 MiB budget"


def test_codecs_build_refuses_an_unknown_architecture(tmp_path: Path) -> None:
    cmd = ["make", "--no-print-directory", "-C", str(REPO / "layers" / "codecs"), "build-CodecsLayer"]
    cmd += [f"ARTIFACTS_DIR={tmp_path}", "ARCH=ppc64le"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "ARCH must be x86_64 or arm64" in proc.stderr
    assert not (tmp_path / "python").exists()
