"""`make demo`: the whole application on this machine, no AWS account, no Docker.

The local stack creates the template's resources in moto and serves the HealthImaging emulator. Sample
DICOM files are imported by an emulated import job with one frame corrupted on the stored side after its
checksum was taken; the job's manifest fires the bucket's real S3 notification, which drives the real
handlers through the work queue to the report and the one alert. Then ``ahi-verify job`` checks the same
job from the command line, with the three-way check against the original files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from ahi_emulator import ImportFaults
from local.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
CT1_UNC = REPO.parent / "shared" / "fixtures" / "aws-samples" / "CT1_UNC"
OUT = REPO / "build" / "demo"
DATASTORE = "de" * 16
SAMPLES = ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm", "rtdose.dcm", "SC_rgb_jpeg_dcmtk.dcm")


def main() -> int:
    with LocalStack(parameters={"DatastoreId": DATASTORE}) as stack:
        env = stack.function("JobTriggerFunction").environment
        bucket, prefix = env["OUTPUT_BUCKET"], env["OUTPUT_PREFIX"]
        reports_bucket, reports = env["REPORTS_BUCKET"], env["REPORTS_PREFIX"]
        print(f"local stack: moto {os.environ['AWS_ENDPOINT_URL']}, HealthImaging emulator "
              f"{os.environ['AWS_ENDPOINT_URL_MEDICAL_IMAGING']}")  # fmt: skip
        print(f"resources from template.yaml: bucket {bucket}, watched prefix {prefix}, "
              f"reports s3://{reports_bucket}/{reports}\n")  # fmt: skip

        stack.emulator.create_datastore(DATASTORE)
        stack.s3.create_bucket(Bucket="hospital-dicom")
        files = [Path(str(get_testdata_file(n, download=False))) for n in SAMPLES]
        files += [CT1_UNC] if CT1_UNC.exists() else []
        for path in files:
            stack.s3.put_object(Bucket="hospital-dicom", Key=f"study-1/{path.name}", Body=path.read_bytes())
        stack.s3.put_object(Bucket="hospital-dicom", Key="study-1/readme.txt", Body=b"not DICOM")
        print(f"importing {len(files)} DICOM files and 1 non-DICOM file; one stored frame will be corrupted")
        job = stack.emulator.start_import_job(
            DATASTORE, "s3://hospital-dicom/study-1/", f"s3://{bucket}/{prefix}", faults=ImportFaults(corrupt_frames=1)
        )
        summary = stack.run_until_idle(timeout=300)
        print(f"import job {job}: {stack.emulator.wait_for_job(DATASTORE, job)['jobStatus']}")
        print(f"invocations: {summary.invocations}, failures: {summary.failures or 'none'}, "
              f"dead letters: {summary.dlq_depth}")  # fmt: skip
        (corrupted,) = stack.emulator.job_faults(job).corrupted_frames
        print(f"frame corrupted on the stored side: {corrupted.frame_id}\n")

        OUT.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "report.html"):
            body = stack.s3.get_object(Bucket=reports_bucket, Key=f"{reports}{job}/{name}")["Body"].read()
            (OUT / name).write_bytes(body)
        report = json.loads((OUT / "report.json").read_text())
        frames = report["summary"]["frames"]
        print(f"report: verdict {report['verdict']}; {report['summary']['imageSets']} image sets, "
              f"{frames['total']} frames: {frames['match']} match, {frames['mismatch']} mismatch, "
              f"{frames['error']} error; {report['summary']['importFailures']} failed file(s)")  # fmt: skip
        print(f"  s3://{reports_bucket}/{reports}{job}/report.html  (copied to {OUT.relative_to(REPO)}/report.html)\n")

        alerts = stack.alerts()
        print(f"alerts delivered: {len(alerts)}")
        for alert in alerts:
            print(f"Subject: {alert.subject}")
            print(f"Attributes: {dict(alert.attributes)}")
            print(alert.message)
        print()

        print(f"$ ahi-verify job s3://{bucket}/{prefix}{DATASTORE}-DicomImport-{job}/ --source")
        cli = Path(sys.executable).with_name("ahi-verify")
        folder = f"s3://{bucket}/{prefix}{DATASTORE}-DicomImport-{job}/"
        done = subprocess.run([str(cli), "job", folder, "--source"], check=False, timeout=600)
        print(f"exit code {done.returncode} (1: a frame mismatched)")

    ok = (
        report["verdict"] == "MISMATCH"
        and frames["mismatch"] == 1
        and len(alerts) == 1
        and corrupted.frame_id in alerts[0].message
        and done.returncode == 1
    )
    print("\ndemo finished: the corrupted frame was caught by the application and the CLI" if ok else "\nUNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
