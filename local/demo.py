"""`make demo`: the whole application on this machine, no AWS account, no Docker.

The local stack creates the template's resources in moto and serves the HealthImaging emulator. Sample
DICOM files are imported by an emulated import job with one frame corrupted on the stored side after its
checksum was taken; the job's manifest fires the bucket's real S3 notification, which drives the real
handlers through the work queue to the report and the one alert. Then ``ahi-verify job`` checks the same
job from the command line, with the three-way check against the original files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pydicom.data import get_testdata_file

from ahi_emulator import ImportFaults
from local.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
CT1_UNC = REPO.parent / "shared" / "fixtures" / "aws-samples" / "CT1_UNC"
OUT = REPO / "build" / "demo"
DATASTORE = "de" * 16
SAMPLES = ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "rtdose.dcm", "SC_rgb_jpeg_dcmtk.dcm")
FUNCTION_LOG = OUT / "functions.log"
"""What the functions print while they run (their JSON logs and EMF metrics, Powertools' warnings): kept in a
file, so that the terminal shows the story and the file shows what CloudWatch would."""


@contextlib.contextmanager
def into_function_log() -> Iterator[None]:
    """Send stdout, stderr (warnings included) and every log record to :data:`FUNCTION_LOG` meanwhile."""
    OUT.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with FUNCTION_LOG.open("a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def step(number: int, text: str) -> None:
    """Print the heading of step ``number`` of five."""
    print(f"\n== {number}/5 {text}")


def run_story(story: Callable[[LocalStack], int], datastore_id: str) -> int:
    """Start the local stack for ``datastore_id`` with its own output in :data:`FUNCTION_LOG`, tell ``story``
    on it, and stop it: what ``make demo`` and ``make audit-demo`` share."""
    FUNCTION_LOG.unlink(missing_ok=True)
    with into_function_log():
        stack = LocalStack(parameters={"DatastoreId": datastore_id}).__enter__()
    try:
        return story(stack)
    finally:
        with into_function_log():
            stack.__exit__(None, None, None)


def main() -> int:
    return run_story(_story, DATASTORE)


def _story(stack: LocalStack) -> int:
    env = stack.function("JobTriggerFunction").environment
    bucket, prefix = env["OUTPUT_BUCKET"], env["OUTPUT_PREFIX"]
    reports_bucket, reports = env["REPORTS_BUCKET"], env["REPORTS_PREFIX"]
    step(1, "the stack from template.yaml, on this machine (moto and the HealthImaging emulator, no AWS account)")
    print(f"output bucket {bucket}, watched prefix {prefix}; reports s3://{reports_bucket}/{reports}")
    print(f"moto {os.environ['AWS_ENDPOINT_URL']}, emulator {os.environ['AWS_ENDPOINT_URL_MEDICAL_IMAGING']}")
    print(f"the functions' logs and metrics go to {FUNCTION_LOG.relative_to(REPO)}")

    stack.emulator.create_datastore(DATASTORE)
    stack.s3.create_bucket(Bucket="hospital-dicom")
    files = [Path(str(get_testdata_file(n, download=False))) for n in SAMPLES]
    files += [CT1_UNC] if CT1_UNC.exists() else []
    for path in files:
        stack.s3.put_object(Bucket="hospital-dicom", Key=f"study-1/{path.name}", Body=path.read_bytes())
    stack.s3.put_object(Bucket="hospital-dicom", Key="study-1/readme.txt", Body=b"not DICOM")
    step(2, f"an import job of {len(files)} DICOM files and 1 non-DICOM file, one stored frame corrupted after")
    print("its checksum was taken (as storage damage would)")
    step(3, "the application verifies it: manifest -> trigger -> work queue -> workers -> report + alert")
    with into_function_log():
        job = stack.emulator.start_import_job(
            DATASTORE, "s3://hospital-dicom/study-1/", f"s3://{bucket}/{prefix}", faults=ImportFaults(corrupt_frames=1)
        )
        summary = stack.run_until_idle(timeout=300)
    (corrupted,) = stack.emulator.job_faults(job).corrupted_frames
    status = stack.emulator.wait_for_job(DATASTORE, job)["jobStatus"]
    print(f"import job {job}: {status}; corrupted frame {corrupted.frame_id}")
    print(f"invocations {summary.invocations}, failures: {summary.failures or 'none'}, "
          f"dead letters: {sum(summary.dlq_depth.values())}")  # fmt: skip

    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.html"):
        body = stack.s3.get_object(Bucket=reports_bucket, Key=f"{reports}{job}/{name}")["Body"].read()
        (OUT / name).write_bytes(body)
    report = json.loads((OUT / "report.json").read_text())
    frames = report["summary"]["frames"]
    print(f"report: verdict {report['verdict']}; {report['summary']['imageSets']} image sets, "
          f"{frames['total']} frames: {frames['match']} match, {frames['mismatch']} mismatch, "
          f"{frames['error']} error; {report['summary']['importFailures']} failed file(s)")  # fmt: skip

    alerts = stack.alerts()
    step(4, f"the alert, as SNS delivered it ({len(alerts)} for this job)")
    for alert in alerts:
        print(f"Subject: {alert.subject}")
        print(alert.message.rstrip())

    folder = f"s3://{bucket}/{prefix}{DATASTORE}-DicomImport-{job}/"
    step(5, "the CLI checks the same job, and every frame against its original file")
    print(f"$ ahi-verify job {folder} --source")
    cli = Path(sys.executable).with_name("ahi-verify")
    done = subprocess.run([str(cli), "job", folder, "--source"], check=False, timeout=600)
    print(f"exit code {done.returncode} (1: a frame mismatched)")

    ok = (
        report["verdict"] == "MISMATCH"
        and frames["mismatch"] == 1
        and len(alerts) == 1
        and corrupted.frame_id in alerts[0].message
        and done.returncode == 1
    )
    if not ok:
        print("\nUNEXPECTED: the corrupted frame was not caught everywhere (see above)")
        return 1
    print(f"\nVerdict: {report['verdict']}: the corrupted frame {corrupted.frame_id} was caught by the application")
    print(f"(one alert) and by the CLI (exit 1). Report: {(OUT / 'report.html').relative_to(REPO)} "
          f"(and report.json); in the stack: s3://{reports_bucket}/{reports}{job}/report.html")  # fmt: skip
    print("Next: `make audit-demo` audits a whole data store and asks the verification ledger which image sets")
    print("were never verified and which are not clean.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
