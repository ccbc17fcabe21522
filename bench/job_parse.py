"""Job-output parsing benchmark: a 100,000-line success.ndjson and a 10,000-image-set manifest.

Targets: <= 3 s and <= 100 MB peak RSS for the whole process. Runs in a child process so the peak is
its own. The baseline figure is a bare loop of ``json.loads`` over the same lines in the same child:
the ratio shows what the reader adds on top of JSON decoding.

    python -m bench.job_parse [--lines 100000] [--image-sets 10000]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time

from bench.memory import peak_rss_mb

DS, JOB = "a" * 32, "b" * 32
FOLDER = f"out/{DS}-DicomImport-{JOB}/"


def build(lines: int, image_sets: int) -> tuple[bytes, bytes]:
    ids = [f"{i:032x}" for i in range(image_sets)]
    manifest = {
        "jobSummary": {
            "jobId": JOB,
            "datastoreId": DS,
            "inputS3Uri": "s3://in/dicom/",
            "outputS3Uri": f"s3://bkt/{FOLDER}",
            "successOutputS3Uri": f"s3://bkt/{FOLDER}SUCCESS/",
            "failureOutputS3Uri": f"s3://bkt/{FOLDER}FAILURE/",
            "numberOfScannedFiles": lines,
            "numberOfImportedFiles": lines,
            "numberOfFilesWithCustomerError": 0,
            "numberOfFilesWithServerError": 0,
            "numberOfGeneratedImageSets": image_sets,
            "imageSetsSummary": [
                {"imageSetId": i, "imageSetVersion": 1, "isPrimary": True, "numberOfMatchedSOPInstances": 10}
                for i in ids
            ],
        }
    }
    success = io.BytesIO()  # written line by line: no transient list of 100,000 strings
    for n in range(lines):
        line = {
            "inputFile": f"dicom_input/study-{n // 1000}/series-{n // 10}/1.2.826.0.1.3680043.8.498.{n}.dcm",
            "importResponse": {"imageSetId": ids[n % image_sets], "isPrimary": True},
        }
        success.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return json.dumps(manifest).encode(), success.getvalue()


def child(lines: int, image_sets: int) -> None:
    from ahi_verify.job_output import LineKind  # noqa: PLC0415
    from ahi_verify.locations import job_folder  # noqa: PLC0415 - measured process
    from ahi_verify.plan import read_job  # noqa: PLC0415 - measured process
    from ahi_verify.s3_output import JobOutputReader  # noqa: PLC0415
    from tests.fakes.s3 import FakeS3  # noqa: PLC0415

    manifest, success = build(lines, image_sets)
    s3 = FakeS3()
    s3.put("bkt", FOLDER + "job-output-manifest.json", manifest)
    s3.put("bkt", FOLDER + "SUCCESS/success.ndjson", success)
    del manifest
    before = peak_rss_mb()

    start = time.perf_counter()
    parsed_manifest, findings, notes = read_job(
        JobOutputReader(s3), job_folder(f"s3://bkt/{FOLDER}"), manifest_wait_s=0
    )
    elapsed = time.perf_counter() - start
    peak = peak_rss_mb()

    start = time.perf_counter()
    for line in io.BytesIO(success):
        json.loads(line)
    bare = time.perf_counter() - start
    assert findings.lines[LineKind.SUCCESS] == lines
    assert len(parsed_manifest.image_sets) == image_sets
    assert not notes
    assert not findings.problems
    print(json.dumps({"seconds": elapsed, "bare_seconds": bare, "before_mb": before, "peak_mb": peak}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--image-sets", type=int, default=10_000)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.lines, args.image_sets)
        return 0
    cmd = [sys.executable, "-m", "bench.job_parse", "--child", "--lines", str(args.lines)]
    done = subprocess.run([*cmd, "--image-sets", str(args.image_sets)], capture_output=True, text=True, check=True)
    f = json.loads(done.stdout.strip().splitlines()[-1])
    ok = f["seconds"] <= 3 and f["peak_mb"] <= 100
    print(f"job parse: {args.lines} success lines, {args.image_sets} image sets in the manifest")
    print(f"  read_job (manifest + ndjson)  : {f['seconds']:6.2f} s  (target <= 3 s)")
    print(
        f"  bare json.loads of the lines  : {f['bare_seconds']:6.2f} s  (ratio {f['seconds'] / f['bare_seconds']:.2f}x)"
    )
    print(f"  RSS with the data in memory   : {f['before_mb']:6.1f} MB")
    print(f"  peak RSS of the process       : {f['peak_mb']:6.1f} MB  (target <= 100 MB) {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
