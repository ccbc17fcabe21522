"""`sam build` of the whole application, then each function imported as Lambda would, from the built artifacts.

GIVEN template.yaml and the Makefiles it names WHEN `sam build` runs here (makefile builds: no Docker, no local
Python 3.12 needed by SAM) THEN every function and layer is built, each function with its layers fits Lambda's
250 MB, and in a clean Python 3.12 (the runtime's version, no site packages) with only the function, the layers
the template gives it and the runtime's own SDK on the path, each handler module imports with the template's
environment. The trigger has no codecs layer: its handler imports without numpy or imagecodecs on the path.

The build downloads the layers' wheels (marker ``layer``); it runs once per session.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, run_json_script
from tests.template.conftest import TEMPLATE, sam_env

pytestmark = pytest.mark.layer

#: Lambda's limit for a function and all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT = 262_144_000
HANDLERS = {
    "JobTriggerFunction": "job_trigger",
    "ImageSetWorkerFunction": "image_set_worker",
    "DeadLetterRecorderFunction": "dead_letter_recorder",
}
LAYERS = ("CoreLayer", "CodecsLayer")
#: The layers each function lists in template.yaml (checked against the template below).
FUNCTION_LAYERS = {
    "JobTriggerFunction": ("CoreLayer",),
    "ImageSetWorkerFunction": ("CoreLayer", "CodecsLayer"),
    "DeadLetterRecorderFunction": ("CoreLayer",),
}
#: What the python3.12 runtime itself provides (/var/lang/lib/python3.12/site-packages): boto3 and its closure.
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
#: The template's environment (Globals) with the values a deployed stack would give it.
# What the deployed stack gives every function: events/env.json, the example stack's environment, which
# tests/local/test_sam_env.py keeps equal to what the template resolves to.
LAMBDA_ENVIRONMENT: dict[str, str] = json.loads((REPO / "events" / "env.json").read_text(encoding="utf-8"))[
    "Parameters"
]

# Runs in the clean Python 3.12; argv: handler module. Prints one JSON line.
IMPORT_SCRIPT = r"""
import importlib, importlib.metadata, json, sys

module = importlib.import_module(sys.argv[1])
loaded_by_handler = sorted(name for name in ("numpy", "imagecodecs", "pydicom") if name in sys.modules)
import aws_lambda_powertools, aws_xray_sdk, botocore, ahi_verify

modules = [module, ahi_verify, aws_lambda_powertools, aws_xray_sdk, botocore]
if sys.argv[2] == "codecs":
    import imagecodecs, numpy
    modules += [imagecodecs, numpy]
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "handler_callable": callable(getattr(module, "handler", None)),
    "files": {m.__name__: m.__file__ for m in modules},
    "loaded_by_handler": loaded_by_handler,
    "powertools": importlib.metadata.version("aws-lambda-powertools"),
}))
"""


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="session")
def built(sam_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `sam build` per session, outside the checkout (its scratch files too)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    workdir = tmp_path_factory.mktemp("sam-build")
    build_dir = workdir / "build"
    env = sam_env()
    # As `make build` does: the codecs layer reads ARCH; PYTHON gives the layer Makefiles this venv's pinned pip.
    env.update(ARCH="x86_64", PYTHON=sys.executable)
    cmd = [str(sam_bin / "sam"), "build", "--template", str(TEMPLATE), "--build-dir", str(build_dir)]
    cmd += ["--base-dir", str(REPO), "--parameter-overrides", "Architecture=x86_64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, env=env, cwd=workdir)
    assert proc.returncode == 0, f"sam build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return build_dir


@pytest.fixture(scope="session")
def runtime_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the runtime's site-packages: boto3 and its pure-Python closure, copied from this venv."""
    site = tmp_path_factory.mktemp("runtime-site-packages")
    for name in RUNTIME_SDK:
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{name} is not installed in the dev venv"
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
            shutil.copytree(source, site / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            assert spec.origin is not None
            shutil.copy2(spec.origin, site)
    return site


def test_sam_build_builds_every_function_and_layer(built: Path) -> None:
    assert sorted(p.name for p in built.iterdir() if p.is_dir()) == sorted([*HANDLERS, *LAYERS])
    assert (built / "template.yaml").is_file()
    for function, module in HANDLERS.items():
        source = REPO / "functions" / module
        expected = {p.name for p in source.glob("*.py") if not p.name.startswith("test_") and p.name != "conftest.py"}
        shipped = {p.relative_to(built / function).as_posix() for p in (built / function).rglob("*")}
        assert shipped == expected, f"{function}: only the function's own modules belong in its package"
        assert f"{module}.py" in shipped
    core = built / "CoreLayer" / "python"
    assert {"ahi_verify", "aws_lambda_powertools", "aws_xray_sdk"} <= {p.name for p in core.iterdir()}
    assert (built / "CodecsLayer" / "python" / "imagecodecs").is_dir()


def test_each_function_lists_the_layers_it_needs(cfn: dict[str, Any]) -> None:
    for function, layers in FUNCTION_LAYERS.items():
        listed = [next(iter(ref.values())) for ref in cfn["Resources"][function]["Properties"]["Layers"]]
        assert [name for name in listed for layer in layers if name.startswith(layer)] == listed
        assert len(listed) == len(layers), f"{function}: {listed}"


def test_each_function_with_its_layers_fits_lambda_s_size_limit(built: Path) -> None:
    for function, layers in FUNCTION_LAYERS.items():
        total = _tree_bytes(built / function) + sum(_tree_bytes(built / layer) for layer in layers)
        assert total < LAMBDA_UNZIPPED_LIMIT, f"{function} with its layers is {total / 1e6:.1f} MB unzipped"
    # The core layer is pure Python: ahi_verify and Powertools[tracer] without botocore, about 5 MB.
    assert _tree_bytes(built / "CoreLayer") < 8 * 1024 * 1024


@pytest.mark.parametrize("function", list(HANDLERS))
def test_the_built_function_imports_in_a_clean_python312_like_lambda(
    function: str, built: Path, runtime_sdk: Path, clean_python312: Path, cfn: dict[str, Any], tmp_path: Path
) -> None:
    module = HANDLERS[function]
    template_env = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert set(LAMBDA_ENVIRONMENT) == set(template_env), "the template's environment changed: update this test"
    # Lambda's order: the function (/var/task), its layers (/opt/python), then the runtime's site-packages.
    layers = FUNCTION_LAYERS[function]
    path = [built / function, *(built / layer / "python" for layer in layers), runtime_sdk]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_", "POWERTOOLS_"))}
    env.update(LAMBDA_ENVIRONMENT)
    env.update(
        PYTHONPATH=os.pathsep.join(map(str, path)),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",  # /var/task and /opt are read-only
        AWS_LAMBDA_FUNCTION_NAME=f"ahi-verify-{function}",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="3008",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    # The session's fake credentials (tests/conftest.py): nothing may reach AWS.
    env.update({k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")})
    report = run_json_script(
        clean_python312,
        IMPORT_SCRIPT,
        [module, "codecs" if "CodecsLayer" in layers else "none"],
        env=env,
        cwd=tmp_path,
        what=f"importing {module} from the built artifacts",
    )

    assert report["python"] == "3.12"
    assert report["handler_callable"], f"{module}.handler is missing or not callable"
    assert report["powertools"] == "3.37.0"
    files = report["files"]
    assert files[module].startswith(str(built / function))
    for name in ("ahi_verify", "aws_lambda_powertools", "aws_xray_sdk"):
        assert files[name].startswith(str(built / "CoreLayer")), files[name]
    if "CodecsLayer" in layers:
        for name in ("imagecodecs", "numpy"):
            assert files[name].startswith(str(built / "CodecsLayer")), files[name]
    else:
        # THEN the trigger's handler imported with no codecs anywhere on the path, and loaded none
        assert report["loaded_by_handler"] == []
    assert files["botocore"].startswith(str(runtime_sdk)), "a layer shadows the runtime's botocore"
