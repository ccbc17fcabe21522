"""Find a runnable CPython 3.12, the Lambda runtime's version, on this machine.

The Makefile builds the dev venv with it when there is one, so the tests and benchmarks run the same numpy,
imagecodecs and OpenJPH builds the codecs layer ships (imagecodecs >= 2026.10 needs Python >= 3.12); the layer
and SAM build tests use it for their clean runtime venvs. Looked for, in order: ``$AHI_PYTHON312``,
``python3.12`` on PATH, then pyenv's 3.12.x installs, newest first (a pyenv shim on PATH may exist without
running, when 3.12 is installed but not selected). Standard library only: it runs before any venv exists.

    python3 local/python312.py    # prints the interpreter's path; exit 1 when there is none
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _runs_python312(candidate: str) -> bool:
    try:
        proc = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "True"


def _pyenv_pythons312() -> list[str]:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return []
    listing = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=60, check=False)
    versions = [v.strip() for v in listing.stdout.splitlines() if re.fullmatch(r"3\.12\.\d+", v.strip())]
    versions.sort(key=lambda v: int(v.rsplit(".", 1)[1]), reverse=True)
    found = []
    for version in versions:
        prefix = subprocess.run([pyenv, "prefix", version], capture_output=True, text=True, timeout=60, check=False)
        if prefix.returncode == 0 and prefix.stdout.strip():
            found.append(str(Path(prefix.stdout.strip()) / "bin" / "python3.12"))
    return found


def find_python312() -> str | None:
    """Return the path of a Python 3.12 interpreter that runs, or None."""
    candidates = [os.environ.get("AHI_PYTHON312", ""), shutil.which("python3.12") or ""]
    candidates += _pyenv_pythons312()
    return next((c for c in candidates if c and _runs_python312(c)), None)


if __name__ == "__main__":
    found = find_python312()
    if found is None:
        sys.exit(1)
    print(found)
