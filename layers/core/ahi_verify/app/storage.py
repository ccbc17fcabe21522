"""S3: where a job's header, its per-work-item parts and its reports live, under the reports prefix.

``<reports>/<jobId>/job.json``          the job header (manifest totals, failed and warned files)
``<reports>/<jobId>/parts/<item>.json`` one verified work item (frames of one image set or range)
``<reports>/<jobId>/report.json|.html`` the merged report
The reports prefix lies outside the watched import-output prefix and no key ends with the manifest name,
so writing reports can never trigger the function again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class ReportStore:
    """Reads and writes a job's documents in one bucket under the reports prefix."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix

    def uri(self, job_id: str, name: str) -> str:
        """The ``s3://`` URI of one of the job's documents."""
        return f"s3://{self._bucket}/{self._key(job_id, name)}"

    def _key(self, job_id: str, name: str) -> str:
        return f"{self._prefix}{job_id}/{name}"

    def put_json(self, job_id: str, name: str, doc: Any) -> str:
        """Write a JSON document (idempotent: the same name is overwritten)."""
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._s3.put_object(Bucket=self._bucket, Key=self._key(job_id, name), Body=body, ContentType="application/json")
        return self.uri(job_id, name)

    def put_html(self, job_id: str, name: str, text: str) -> str:
        """Write an HTML page."""
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(job_id, name),
            Body=text.encode(),
            ContentType="text/html; charset=utf-8",
        )
        return self.uri(job_id, name)

    def get_json(self, job_id: str, name: str) -> Any:
        """Read a JSON document."""
        return json.loads(self._s3.get_object(Bucket=self._bucket, Key=self._key(job_id, name))["Body"].read())

    def parts(self, job_id: str) -> Iterator[Any]:
        """Every part document of the job, in key order."""
        prefix = self._key(job_id, "parts/")
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield json.loads(self._s3.get_object(Bucket=self._bucket, Key=entry["Key"])["Body"].read())
