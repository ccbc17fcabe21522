"""`make audit-demo`: an audit of the demo data store, and the verification ledger answering an auditor.

On the local stack (:mod:`local.demo`'s: moto, the HealthImaging emulator, the real handlers): a clean import
is verified by the application, which writes a ledger row per image set (CLEAN). Then one image set is added to
the data store without an import (so nothing ever verified it), and one stored frame of an image set verified
clean at import is changed, as storage damage would. ``ahi-verify datastore`` audits the whole data store
and records its verdicts in the ledger; ``ahi-verify ledger`` then answers "never verified" and "not clean".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from local.demo import FUNCTION_LOG, REPO, into_function_log, run_story, step
from local.stack import LocalStack

DATASTORE = "ad" * 16
SAMPLES = ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm")
DIRECT = "MR_small.dcm"
"""Added to the data store directly, as a copy or another tool would: never verified by the application."""


def _cli(*args: str) -> tuple[int, str]:
    """Run ``ahi-verify`` as a user would, showing the command and its output."""
    print("$ ahi-verify " + " ".join(args))
    cli = Path(sys.executable).with_name("ahi-verify")
    done = subprocess.run([str(cli), *args], check=False, timeout=600, capture_output=True, text=True)
    print(done.stdout.rstrip())
    print(f"exit code {done.returncode}")
    return done.returncode, done.stdout


def main() -> int:
    return run_story(_story, DATASTORE)


def _story(stack: LocalStack) -> int:
    env = stack.function("JobTriggerFunction").environment
    bucket, prefix, table = env["OUTPUT_BUCKET"], env["OUTPUT_PREFIX"], env["LEDGER_TABLE"]
    ledger = ("ledger", "--datastore-id", DATASTORE, "--table", table)
    step(1, "the stack from template.yaml, on this machine, with its verification ledger")
    print(f"ledger table {table}; the functions' logs go to {FUNCTION_LOG.relative_to(REPO)}")

    stack.emulator.create_datastore(DATASTORE)
    stack.s3.create_bucket(Bucket="hospital-dicom")
    for name in SAMPLES:
        body = Path(str(get_testdata_file(name, download=False))).read_bytes()
        stack.s3.put_object(Bucket="hospital-dicom", Key=f"study-2/{name}", Body=body)
    step(2, f"an import of {len(SAMPLES)} DICOM files, verified clean by the application: a ledger row each")
    with into_function_log():
        job = stack.emulator.start_import_job(DATASTORE, "s3://hospital-dicom/study-2/", f"s3://{bucket}/{prefix}")
        summary = stack.run_until_idle(timeout=300)
    print(f"import job {job}: verified, failures: {summary.failures or 'none'}")
    _, imported = _cli(*ledger, "--output", "csv")
    clean_at_import = [line.split(",")[1] for line in imported.splitlines()[1:] if ",CLEAN," in line]

    step(3, "one image set added without an import, and one stored frame changed in an image set verified clean")
    direct = stack.emulator.add_image_set_from_dicom(DATASTORE, [Path(str(get_testdata_file(DIRECT, download=False)))])
    victim = clean_at_import[0] if clean_at_import else ""
    info = next(i for i in stack.emulator.image_sets() if i.image_set_id == victim)
    stack.emulator.corrupt_frame(DATASTORE, victim, info.frame_ids[0])
    print(f"added directly: image set {direct.image_set_id}")
    print(f"corrupted: frame {info.frame_ids[0]} of image set {victim} (verified CLEAN at import)")
    _, never_before = _cli(*ledger, "--never-verified")

    step(4, "the audit: every image set of the data store, its verdicts recorded in the ledger")
    audited, table_out = _cli("datastore", DATASTORE, "--ledger-table", table)

    step(5, 'the ledger answers the auditor: "not clean?" and, after the audit, "never verified?" again')
    _, not_clean = _cli(*ledger, "--verdict", "MISMATCH", "--output", "csv")
    _, unverified = _cli(*ledger, "--verdict", "UNVERIFIED", "--output", "csv")
    _, never_after = _cli(*ledger, "--never-verified", "--output", "csv")

    ok = (
        len(clean_at_import) == len(SAMPLES)
        and audited == 1
        and f"(image set {victim})" in table_out
        and f",{victim}," in not_clean
        and f"NEVER VERIFIED image set {direct.image_set_id}" in never_before
        and "1 image sets of data store" in never_before
        and direct.image_set_id not in never_after  # the audit verified it: it has a row now
        and len(unverified.splitlines()) == 1
    )
    if not ok:
        print("\nUNEXPECTED: the audit or the ledger did not answer as expected (see above)")
        return 1
    print(f"\nThe audit caught frame {info.frame_ids[0]} of image set {victim}, verified CLEAN at import: the ledger")
    print("holds both rows (CLEAN by the import job, MISMATCH by the audit run); the image set added without an")
    print(f"import ({direct.image_set_id}) was never verified until the audit.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
