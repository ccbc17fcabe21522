"""Fixtures of the template tests: the SAM CLI's virtualenv, the translated template, one `sam build`.

The SAM CLI lives in .venv-sam (`make sam`; `make test` and `make validate` create it), never in the dev venv:
it pins boto3, click and cfn-lint exactly. Without it these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO

SAM_VENV = REPO / ".venv-sam"
TEMPLATE = REPO / "template.yaml"
TRANSFORM_SCRIPT = Path(__file__).with_name("sam_transform.py")
#: The only parameter without a default; any valid data store ID.
DATASTORE_ID = "0123456789abcdefghijklmnopqrstuv"


def sam_env() -> dict[str, str]:
    """The environment for SAM CLI processes: no telemetry, a region, this session's fake credentials."""
    env = dict(os.environ)
    env.update(SAM_CLI_TELEMETRY="0", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1")
    return env


@pytest.fixture(scope="session")
def sam_bin() -> Path:
    if not (SAM_VENV / "bin" / "sam").is_file():
        pytest.skip(f"{SAM_VENV.name} is missing: run `make sam` (make test and make validate create it)")
    return SAM_VENV / "bin"


@pytest.fixture(scope="session")
def cfn(sam_bin: Path) -> dict[str, Any]:
    """template.yaml as CloudFormation: the SAM translator's output, computed offline once per session."""
    proc = subprocess.run(
        [str(sam_bin / "python"), str(TRANSFORM_SCRIPT), str(TEMPLATE), json.dumps({"DatastoreId": DATASTORE_ID})],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=sam_env(),
    )
    assert proc.returncode == 0, f"the SAM translator rejected template.yaml:\n{proc.stderr}"
    template: dict[str, Any] = json.loads(proc.stdout)
    return template
