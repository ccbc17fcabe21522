"""Check and trim the codecs layer that ``pip install --target`` left in ``<layer>/python``.

Run by the Makefile beside this file (``build-CodecsLayer``); standard library only, so that any Python 3.9+
that can run pip can run it, whatever the target architecture. It fails the build when:

- an installed distribution is not the version pinned in ``requirements.txt``, or its wheel is not a
  CPython 3.12 wheel for the requested architecture (a platform list that is too narrow can silently
  resolve an old imagecodecs without HTJ2K);
- an extension the verifier needs is missing, a kept extension links a library that is neither in
  ``imagecodecs.libs`` nor provided by the Lambda runtime, or any ``.so`` is built for another machine;
- the layer is larger than ``--max-bytes`` unzipped.

imagecodecs imports its extensions lazily and turns a failed import into a stub that raises
``DelayedImportError`` only when called, so a bad trim would not show at ``import imagecodecs``: the
checks here are static, and ``tests/layers`` decodes a frame with the built layer.
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
from pathlib import Path

# Extension modules of imagecodecs that the verifier uses (module name = file name up to the first dot).
# _shared/_shared_cython: the Cython runtime every extension imports (without it: DelayedImportError);
# _imcd: imagecodecs' own small codecs and version info; _htj2k: OpenJPH; _jpeg2k: OpenJPEG (fallback);
# _deflate: libdeflate, whose deflate_crc32 is ~4x faster than zlib.crc32 (~0.8 MB with its library).
REQUIRED_EXTENSIONS = frozenset({"_shared", "_imcd", "_htj2k", "_jpeg2k", "_deflate"})
OPTIONAL_EXTENSIONS = frozenset({"_shared_cython"})
KEPT_PY_FILES = frozenset({"__init__.py", "imagecodecs.py", "_imagecodecs.py", "py.typed"})
KEPT_DIRS = frozenset({"licenses"})

# Libraries the Lambda python3.12 runtime (Amazon Linux 2023) provides; anything else must be bundled.
SYSTEM_LIBS = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    }
)

ARCHES = {
    # ARCH: (wheel platform suffix, ELF e_machine)
    "x86_64": ("x86_64", 62),
    "arm64": ("aarch64", 183),
}

MIB = 1024 * 1024
_SHT_DYNAMIC = 6
_DT_NEEDED = 1


class LayerError(Exception):
    """The layer is unusable; the message says why."""


def elf_info(path: Path) -> tuple[int, list[str]]:
    """Return ``(e_machine, DT_NEEDED names)`` of a little-endian ELF64 file (x86_64 and aarch64)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise LayerError(f"{path}: not a little-endian ELF64 file")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    needed: list[str] = []
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, _entsize in sections:
        if sh_type != _SHT_DYNAMIC:
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                start = strtab_offset + value
                needed.append(data[start : data.index(b"\0", start)].decode())
    return e_machine, needed


def tree_bytes(root: Path) -> int:
    """Unzipped size: the sum of the regular files' sizes, as Lambda counts it."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def read_pins(requirements: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise LayerError(f"{requirements}: {line!r} is not pinned with ==")
            pins[normalize(name)] = version.strip()
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def check_wheels(site: Path, pins: dict[str, str], platform: str) -> None:
    """Each pinned distribution is installed at its pinned version from a cp312 wheel for ``platform``."""
    found: dict[str, str] = {}
    for dist_info in site.glob("*.dist-info"):
        name, _, version = dist_info.name[: -len(".dist-info")].partition("-")
        found[normalize(name)] = version
        tags = [
            line.split(":", 1)[1].strip()
            for line in (dist_info / "WHEEL").read_text().splitlines()
            if line.startswith("Tag:")
        ]
        good = [t for t in tags if t.startswith("cp312-") and t.endswith("_" + platform)]
        if not good:
            raise LayerError(f"{dist_info.name}: wheel tags {tags} are not cp312 for {platform}")
        print(f"  {dist_info.name[: -len('.dist-info')]}: {', '.join(tags)}")
    for name, version in pins.items():
        if found.get(name) != version:
            raise LayerError(f"{name}: pinned {version}, installed {found.get(name, 'nothing')}")


def trim_imagecodecs(site: Path) -> list[str]:
    """Keep only what the verifier imports; return the bundled libraries kept."""
    package = site / "imagecodecs"
    kept_exts: list[Path] = []
    for entry in sorted(package.iterdir()):
        if entry.is_dir():
            if entry.name not in KEPT_DIRS:
                shutil.rmtree(entry)
        elif entry.suffix == ".so" and module_of(entry) in REQUIRED_EXTENSIONS | OPTIONAL_EXTENSIONS:
            kept_exts.append(entry)
        elif entry.name not in KEPT_PY_FILES:
            entry.unlink()
    missing = REQUIRED_EXTENSIONS - {module_of(p) for p in kept_exts}
    if missing:
        raise LayerError(f"imagecodecs lacks the extensions {sorted(missing)}: wrong wheel?")
    for ext in kept_exts:
        print(f"  kept {ext.name} ({ext.stat().st_size / MIB:.2f} MiB)")
    return trim_bundled_libs(site / "imagecodecs.libs", kept_exts)


def module_of(path: Path) -> str:
    return path.name.split(".", 1)[0]


def trim_bundled_libs(libs_dir: Path, binaries: list[Path]) -> list[str]:
    """Keep the bundled libraries that ``binaries`` need, directly or through each other."""
    bundled = {p.name for p in libs_dir.iterdir()} if libs_dir.is_dir() else set()
    keep: set[str] = set()
    stdcxx: list[str] = []
    todo = list(binaries)
    while todo:
        binary = todo.pop()
        for lib in elf_info(binary)[1]:
            if lib in bundled:
                if lib not in keep:
                    keep.add(lib)
                    todo.append(libs_dir / lib)
            elif lib not in SYSTEM_LIBS:
                raise LayerError(f"{binary.name} needs {lib}, which is neither bundled nor in the runtime")
            elif lib == "libstdc++.so.6":
                stdcxx.append(binary.name)
    for name in bundled - keep:
        (libs_dir / name).unlink()
    for name in sorted(keep):
        print(f"  kept {libs_dir.name}/{name} ({(libs_dir / name).stat().st_size / MIB:.2f} MiB)")
    if stdcxx:
        print(f"  note: {', '.join(sorted(stdcxx))} link the runtime's libstdc++.so.6: smoke-test in Lambda")
    return sorted(keep)


def trim_common(site: Path) -> None:
    """Drop what never runs in Lambda: tests, type stubs, bytecode and console scripts.

    ``bin/`` holds pip's console-script wrappers, whose shebang is the build machine's interpreter.
    """
    shutil.rmtree(site / "bin", ignore_errors=True)
    for tests in sorted((site / "numpy").rglob("tests"), reverse=True):
        if tests.is_dir():
            shutil.rmtree(tests)
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for stub in site.rglob("*.pyi"):
        stub.unlink()


def check_machine(site: Path, e_machine: int, arch: str) -> int:
    count = 0
    for so in site.rglob("*.so*"):
        if so.is_file():
            machine = elf_info(so)[0]
            if machine != e_machine:
                raise LayerError(f"{so.relative_to(site)}: ELF machine {machine}, expected {e_machine} ({arch})")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the layer's python/ directory")
    parser.add_argument("--arch", choices=sorted(ARCHES), required=True)
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, required=True, help="fail above this unzipped size")
    args = parser.parse_args(argv)
    site: Path = args.site
    platform, e_machine = ARCHES[args.arch]
    try:
        before = tree_bytes(site)
        print(f"codecs layer ({args.arch}): {before / MIB:.1f} MiB unzipped as installed")
        check_wheels(site, read_pins(args.requirements), platform)
        trim_imagecodecs(site)
        trim_common(site)
        count = check_machine(site, e_machine, args.arch)
        after = tree_bytes(site)
        print(f"codecs layer ({args.arch}): {after / MIB:.1f} MiB unzipped after trimming ({count} ELF files)")
        if after > args.max_bytes:
            raise LayerError(f"{after} bytes unzipped exceeds the budget of {args.max_bytes} bytes")
    except LayerError as exc:
        print(f"codecs layer: ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
