"""The README's walk-throughs, run exactly as written: a fresh shell with only the variables they set."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def fenced_block_after(heading: str) -> str:
    """The first ```bash block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M).search(text, start)
    assert match is not None, f"no bash block after {heading!r}"
    return match.group(1)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_emulator_walk_through_runs_as_written(tmp_path: Path) -> None:
    # GIVEN the README's emulator walk-through and a shell with nothing but PATH and HOME
    script = fenced_block_after("## The HealthImaging emulator")
    if not port_free(8787):
        pytest.skip("port 8787, which the walk-through uses, is taken on this machine")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    # WHEN it runs, stopping at the first command that fails
    done = subprocess.run(
        ["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    # THEN every command succeeded (ahi-verify exits 0) and the verdict is the one the comment promises
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert re.search(r"^Verdict: CLEAN: all 4 frames match the published checksum$", done.stdout, re.M), done.stdout
