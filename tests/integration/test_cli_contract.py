"""What scripts and people rely on from `ahi-verify`: exit codes, one-line messages instead of tracebacks, the AWS
CLI's option names, documents that carry their verdict, and a progress bar whose count never passes its total."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ahi_emulator import Emulator, EmulatorServer, InstanceSpec
from ahi_verify import __version__
from ahi_verify.cli import (
    EXIT_CANNOT_RUN,
    EXIT_CODES,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_UNVERIFIED,
    EXIT_USAGE,
    _Progress,
    build_parser,
    main,
)
from ahi_verify.outcomes import Status
from ahi_verify.report import FrameResult

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATASTORE = "0" * 32
IMAGE_SET = "1" * 32


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(32, 24)).astype(np.uint16) for _ in range(count)]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed console script's code, in a fresh process with exactly ``env`` (plus PATH)."""
    code = "import sys; from ahi_verify.cli import main; sys.exit(main(sys.argv[1:]))"
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "layers" / "core"), "HOME": "/nonexistent", **env}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True, timeout=120, check=False
    )


NO_AWS_FILES = {
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- could not run: exit 4, one line naming what to set, never a traceback ------------------------------------


@pytest.mark.parametrize(
    ("env", "extra", "says"),
    [
        pytest.param(
            {**NO_AWS_FILES, **KEYS}, (), "no AWS region: pass --region, set AWS_DEFAULT_REGION", id="no-region"
        ),
        pytest.param(
            {**NO_AWS_FILES, **KEYS, "AWS_REGION": "eu-west-1"},
            (),
            "no AWS region",
            id="AWS_REGION-is-not-read",  # boto3 reads AWS_DEFAULT_REGION; the README says so
        ),
        pytest.param(
            {**NO_AWS_FILES, **KEYS, "AWS_PROFILE": "nope"}, (), "profile (nope) could not be found", id="no-profile"
        ),
        pytest.param(
            {**NO_AWS_FILES, "AWS_DEFAULT_REGION": "us-east-1"}, (), "no AWS credentials: pass --profile", id="no-keys"
        ),
        pytest.param(
            {**NO_AWS_FILES, **KEYS, "AWS_DEFAULT_REGION": "us-east-1"},
            ("--endpoint-url", "not a url"),
            "Invalid endpoint",
            id="bad-endpoint",
        ),
    ],
)
def test_what_is_missing_is_named_with_exit_4_and_no_traceback(
    env: dict[str, str], extra: tuple[str, ...], says: str
) -> None:
    # GIVEN a shell that lacks what every request needs
    # WHEN the CLI runs
    done = cli("image-set", DATASTORE, IMAGE_SET, *extra, env=env)
    # THEN it exits 4 ("could not run", not "mismatch") with one line that names what to set
    assert done.returncode == EXIT_CANNOT_RUN, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_an_endpoint_out_of_reach_is_exit_4_for_an_image_set_and_a_job() -> None:
    # GIVEN an endpoint where nothing listens
    env = {**NO_AWS_FILES, **KEYS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_DISABLE_HOST_PREFIX_INJECTION": "true"}
    endpoint = f"http://127.0.0.1:{free_port()}"
    common = ("--endpoint-url", endpoint, "--max-attempts", "1")
    # WHEN an image set and a job (found with GetDICOMImportJob) are verified
    image_set = cli("image-set", DATASTORE, IMAGE_SET, *common, env=env)
    job = cli("job", "--datastore-id", DATASTORE, "--job-id", "abc", *common, env=env)
    # THEN both say they could not connect, with exit 4
    for done in (image_set, job):
        assert done.returncode == EXIT_CANNOT_RUN, done.stderr
        assert "Could not connect to the endpoint URL" in done.stderr
        assert "check --endpoint-url" in done.stderr
        assert "Traceback" not in done.stderr


def test_debug_adds_the_traceback() -> None:
    done = cli("--debug", "image-set", DATASTORE, IMAGE_SET, env={**NO_AWS_FILES, **KEYS})
    assert done.returncode == EXIT_CANNOT_RUN
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("ahi-verify: cannot run: no AWS region")


# --- usage: exit 2 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("job", "http://foo"), id="job-uri-not-s3"),
        pytest.param(("image-set", "short", IMAGE_SET), id="bad-datastore-id"),
        pytest.param(("image-set", DATASTORE, IMAGE_SET, "--output", "xml"), id="bad-output"),
        pytest.param(("job",), id="job-without-a-job"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_version_and_help() -> None:
    # WHEN --version and --help are asked for
    version = cli("--version", env={})
    help_text = cli("--help", env={})
    # THEN the version is the package's, and the help lists every exit code, examples and the environment
    assert version.returncode == 0
    assert version.stdout.strip() == f"ahi-verify {__version__}"
    assert help_text.returncode == 0
    for code, words in EXIT_CODES.items():
        assert f"  {code}  {words}" in help_text.stdout
    for needed in ("examples:", "ahi-verify job s3://", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_MEDICAL_IMAGING"):
        assert needed in help_text.stdout


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["--region", "eu-west-1", "--profile", "p", "--output", "json", "image-set", DATASTORE, IMAGE_SET],
            id="before",
        ),
        pytest.param(
            ["image-set", DATASTORE, IMAGE_SET, "--region", "eu-west-1", "--profile", "p", "--format", "json"],
            id="after",
        ),
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.region, args.profile, args.output, args.debug) == ("eu-west-1", "p", "json", False)


# --- documents and tables carry the verdict -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Any:
    emulator = Emulator()
    datastore_id = emulator.create_datastore()
    clean = emulator.add_image_set(datastore_id, [InstanceSpec(frames=frames(3))])
    broken = emulator.add_image_set(datastore_id, [InstanceSpec(frames=frames(2, seed=4))])
    emulator.corrupt_frame(datastore_id, broken.image_set_id, broken.frame_ids[0])
    with EmulatorServer(emulator) as server:
        yield server, datastore_id, clean, broken


def test_json_documents_carry_verdict_version_and_timings(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server, datastore_id, clean, broken = served
    common = ["--endpoint-url", server.endpoint_url, "--region", "us-east-1"]
    # WHEN both image sets are verified with --output json (and the old --format spelling)
    code_clean = main(["image-set", datastore_id, clean.image_set_id, "--output", "json", *common])
    doc_clean = json.loads(capsys.readouterr().out)
    code_broken = main(["image-set", datastore_id, broken.image_set_id, "--format", "json", *common])
    doc_broken = json.loads(capsys.readouterr().out)
    # THEN each document says its verdict and why, which tool wrote it, and when
    assert (code_clean, doc_clean["verdict"]) == (EXIT_OK, "CLEAN")
    assert doc_clean["verdictReason"] == "all 3 frames match the published checksum"
    assert (code_broken, doc_broken["verdict"]) == (EXIT_MISMATCH, "MISMATCH")
    assert doc_broken["verdictReason"] == "1 frame differs from the published checksum"
    for doc in (doc_clean, doc_broken):
        assert doc["toolVersion"] == __version__
        assert set(doc["timings"]) == {"startedAt", "finishedAt", "verificationSeconds"}
        assert doc["timings"]["startedAt"] <= doc["timings"]["finishedAt"]


def test_the_table_ends_with_the_verdict_in_words(served: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server, datastore_id, clean, broken = served
    common = ["--endpoint-url", server.endpoint_url, "--region", "us-east-1"]
    assert main(["image-set", datastore_id, clean.image_set_id, *common]) == EXIT_OK
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == "Verdict: CLEAN: all 3 frames match the published checksum"
    )
    assert main(["image-set", datastore_id, broken.image_set_id, *common]) == EXIT_MISMATCH
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "Verdict: MISMATCH: 1 frame differs from the published checksum"
    missing = "f" * 32
    assert main(["image-set", datastore_id, missing, *common]) == EXIT_UNVERIFIED


# --- the progress bar --------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def result(index: int) -> FrameResult:
    return FrameResult(
        image_frame_id=f"{index:032x}",
        series_instance_uid="1.2",
        sop_instance_uid="1.2.3",
        frame_number=1,
        status=Status.MATCH,
        expected=1,
        actual=1,
        index=index,
    )


def test_the_job_bar_counts_across_image_sets_and_never_passes_its_total() -> None:
    # GIVEN a job of three image sets of 5, 7 and 3 frames, on a terminal
    stream = Terminal()
    progress = _Progress(stream)
    seen = []
    # WHEN each image set begins and its frames complete
    for index, size in enumerate((5, 7, 3), start=1):
        progress.next_image_set(index, 3)
        for i in range(size):
            progress.update(result(i), size)
            seen.append((progress._bar.n, progress._bar.total))
    progress.close()
    # THEN the count never passed the total, and the bar ends at 15/15 naming the last image set
    assert all(n <= total for n, total in seen)
    assert seen[-1] == (15, 15)
    assert "image set 3/3" in stream.getvalue()
    assert "15/15" in stream.getvalue()


def test_no_bar_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = _Progress(stream)
    progress.next_image_set(1, 1)
    progress.update(result(0), 1)
    progress.close()
    assert stream.getvalue() == ""
