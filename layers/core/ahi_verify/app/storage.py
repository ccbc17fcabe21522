"""S3: a job's plan, its per-work-item parts and its reports, under the reports prefix.

``<reports>/<jobId>/job.json``          the plan (:class:`ahi_verify.plan.JobPlan`)
``<reports>/<jobId>/parts/<item>.json`` one verified work item (:class:`ahi_verify.report.Part`)
``<reports>/<jobId>/report.json|.html`` the merged report
``<reports>/<jobId>/alert.json``        the job's alert, kept until it has been published
The reports bucket is not the watched import-output bucket (and no key ends with the manifest name), so
writing reports can never trigger the function again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..alert import Alert
from ..plan import JobPlan
from ..report import JobReport, Part
from ..report_html import render_html

PLAN = "job.json"
REPORT = "report.json"
PAGE = "report.html"
ALERT = "alert.json"


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

    def put_plan(self, plan: JobPlan) -> str:
        """Write the job's plan."""
        return self._put_json(plan.job.job_id, PLAN, plan.to_json())

    def get_plan(self, job_id: str) -> JobPlan:
        """Read the job's plan."""
        return JobPlan.from_json(self._get_json(self._key(job_id, PLAN)))

    def put_part(self, job_id: str, part: Part) -> str:
        """Write one work item's part (idempotent: a redelivered item overwrites its own part)."""
        return self._put_json(job_id, f"parts/{part.item_id}.json", part.to_json())

    def parts(self, job_id: str) -> Iterator[Part]:
        """Every part of the job, in key order."""
        prefix = self._key(job_id, "parts/")
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                yield Part.from_json(self._get_json(entry["Key"]), where=entry["Key"])

    def put_report(self, report: JobReport) -> str:
        """Write ``report.json`` and ``report.html``; return the JSON's URI."""
        job_id = report.job.job_id
        uri = self._put_json(job_id, REPORT, report.to_json())
        self._s3.put_object(
            Bucket=self._bucket,
            Key=self._key(job_id, PAGE),
            Body=render_html(report).encode(),
            ContentType="text/html; charset=utf-8",
        )
        return uri

    def put_alert(self, job_id: str, alert: Alert) -> str:
        """Keep the job's alert, so that one whose publish failed can be sent again later."""
        return self._put_json(job_id, ALERT, alert.to_json())

    def get_alert(self, job_id: str) -> Alert:
        """Read the job's kept alert."""
        return Alert.from_json(self._get_json(self._key(job_id, ALERT)))

    def get_report(self, job_id: str) -> JobReport:
        """Read the job's report."""
        return JobReport.from_json(self._get_json(self._key(job_id, REPORT)))

    def _put_json(self, job_id: str, name: str, doc: Any) -> str:
        body = json.dumps(doc, separators=(",", ":")).encode()
        self._s3.put_object(Bucket=self._bucket, Key=self._key(job_id, name), Body=body, ContentType="application/json")
        return self.uri(job_id, name)

    def _get_json(self, key: str) -> Any:
        return json.loads(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
