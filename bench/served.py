"""Run the HealthImaging emulator in its own process, as the service would be: remote from the verifier.

Benchmarks measure the verifier's process only; the emulator's CPU time and memory stay out of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ahi_emulator import Emulator


@contextmanager
def served(emulator: Emulator, *, verify_signatures: bool | None = None) -> Iterator[str]:
    """Save the emulator's state, serve it from a child process, yield the endpoint URL.

    ``verify_signatures`` True or False forces the child's SigV4 verification on or off; None leaves it to the
    environment (``AHI_EMULATOR_VERIFY_SIGV4``).
    """
    with tempfile.TemporaryDirectory(prefix="ahi-bench-") as tmp:
        data, url_file = Path(tmp) / "data", Path(tmp) / "url"
        emulator.save(data)
        cmd = [sys.executable, "-m", "ahi_emulator", "serve", "--data", str(data), "--port", "0"]
        env = dict(os.environ)
        if verify_signatures is not None:
            env["AHI_EMULATOR_VERIFY_SIGV4"] = "1" if verify_signatures else "0"
        proc = subprocess.Popen([*cmd, "--url-file", str(url_file)], stdout=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 120
            while not url_file.exists() or not url_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start")
                time.sleep(0.1)
            yield url_file.read_text().strip()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def set_faults(endpoint: str, faults: list[dict[str, Any]]) -> None:
    """Replace the served emulator's request faults (admin route)."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/_emulator/faults", method="DELETE"), timeout=10).close()
    if faults:
        body = json.dumps(faults).encode()
        request = urllib.request.Request(
            f"{endpoint}/_emulator/faults", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).close()


def point_boto3_at(endpoint: str) -> None:
    """Configure this process's boto3 clients for the emulator, the way a user would."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": endpoint,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
