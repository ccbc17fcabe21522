"""Evidence chain benchmark: ``evidence validate`` over N finalised jobs vs N/10, and the tamper tests' findings.

Jobs are written to an in-process ``moto.mock_aws`` S3 (versioned, as the template's reports bucket) the
way the finaliser writes them: ``report.json``, ``report.html`` and, for every third job, ``alert.json``
through :class:`~ahi_verify.app.storage.ReportStore`-like PutObjects, then one digest per job with
:meth:`EvidenceChain.append`. Then :meth:`EvidenceChain.validate` (what ``ahi-verify evidence validate`` runs)
is timed at both sizes, and the figure is the ratio: validation is one GET per digest plus one per listed
document and a listing, so it should grow linearly (ratio about 10 for 10x the jobs). moto answers in
microseconds where S3 answers in 20-30 ms, so the absolute times are not S3's; the workers (``--workers``)
hide S3's latency, not moto's.

The same run then alters one report, deletes one digest and swaps two digests, each on a fresh copy of the
small chain, and prints what validation found for each (the figures for issue 14's tamper tests).

    python -m bench.evidence [--jobs 1000] [--small 100] [--rounds 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import boto3
from moto import mock_aws

from ahi_verify.evidence import EvidenceChain, Fingerprint
from ahi_verify.s3_evidence import S3EvidenceStore
from bench.common import best_of

BUCKET, REPORTS = "bench-reports", "ahi-verify-reports/"
NOW = "2026-12-02T00:00:00+00:00"


def write_jobs(s3: Any, bucket: str, jobs: int, workers: int = 8) -> EvidenceChain:
    """``jobs`` finalisations in the bucket: their documents, then one digest each. Returns the chain."""
    chain = EvidenceChain(S3EvidenceStore(s3, bucket), REPORTS, workers=workers)
    for n in range(jobs):
        job_id = f"{n:032x}"
        names = ["report.json", "report.html", *(["alert.json"] if n % 3 == 0 else [])]
        written = []
        for name in names:
            key = f"{REPORTS}{job_id}/{name}"
            body = json.dumps({"jobId": job_id, "document": name, "frames": [n] * 50}).encode()
            done = s3.put_object(Bucket=bucket, Key=key, Body=body)
            written.append(Fingerprint(key, hashlib.sha256(body).hexdigest(), len(body), done.get("VersionId")))
        chain.append(written, created_at=NOW)
    return chain


_made = [0]


def fresh_bucket(s3: Any) -> str:
    """A new versioned bucket (a new name each time: emptying a versioned bucket costs more than the bench)."""
    _made[0] += 1
    bucket = f"{BUCKET}-{_made[0]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def tamper_findings(s3: Any, jobs: int) -> dict[str, dict[str, Any]]:
    """What validation finds after each tamper test, each on a fresh chain of ``jobs`` finalisations."""
    found: dict[str, dict[str, Any]] = {}

    def alter_report(bucket: str, chain: EvidenceChain) -> None:
        s3.put_object(Bucket=bucket, Key=f"{REPORTS}{1:032x}/report.json", Body=b'{"verdict":"CLEAN"}')

    def delete_digest(bucket: str, chain: EvidenceChain) -> None:
        s3.delete_object(Bucket=bucket, Key=chain.digest_key(jobs // 2))

    def reorder(bucket: str, chain: EvidenceChain) -> None:
        a, b = chain.digest_key(2), chain.digest_key(3)
        body_a = s3.get_object(Bucket=bucket, Key=a)["Body"].read()
        body_b = s3.get_object(Bucket=bucket, Key=b)["Body"].read()
        s3.put_object(Bucket=bucket, Key=a, Body=body_b)
        s3.put_object(Bucket=bucket, Key=b, Body=body_a)

    def delete_report(bucket: str, chain: EvidenceChain) -> None:
        s3.delete_object(Bucket=bucket, Key=f"{REPORTS}{0:032x}/alert.json")

    for name, tamper in (
        ("untouched", None),
        ("alter report.json", alter_report),
        ("delete a digest", delete_digest),
        ("swap digests 2 and 3", reorder),
        ("delete alert.json", delete_report),
    ):
        bucket = fresh_bucket(s3)
        chain = write_jobs(s3, bucket, jobs)
        if tamper is not None:
            tamper(bucket, chain)
        found[name] = chain.validate().to_json()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)

    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        seconds = {}
        objects = {}
        for jobs in (args.small, args.jobs):
            chain = write_jobs(s3, fresh_bucket(s3), jobs, args.workers)
            result = chain.validate()
            assert result.intact, result.to_json()
            objects[jobs] = (result.digests, result.objects)
            seconds[jobs] = best_of(args.rounds, chain.validate)
        for jobs in (args.small, args.jobs):
            digests, listed = objects[jobs]
            print(
                f"validate {jobs:>6} jobs ({digests} digests, {listed} documents): {seconds[jobs]:.3f} s "
                f"({seconds[jobs] / listed * 1000:.2f} ms a document)"
            )
        print(f"ratio {args.jobs}/{args.small} jobs: {seconds[args.jobs] / seconds[args.small]:.1f}x time")
        print("\ntamper tests (on a chain of", args.small, "jobs):")
        for name, doc in tamper_findings(s3, args.small).items():
            summary = {k: doc[k] for k in ("altered", "missing", "chainBroken", "unlisted") if doc[k]}
            print(f"  {name}: intact={doc['intact']} {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
