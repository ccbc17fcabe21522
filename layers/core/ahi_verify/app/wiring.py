"""Wiring: the one place the application creates AWS clients and the adapters around them.

Called once per process at cold start by each handler. Nothing here decodes a frame: the frame source
is only an HTTP adapter, so the trigger can be wired without numpy or imagecodecs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from ..budget import MAX_FETCH_THREADS, Rates, RequestBudget
from ..dynamo_ledger import DynamoLedger
from ..healthimaging import HealthImagingJobs, HealthImagingListing, HealthImagingSource, make_client
from ..ports import FrameSource, ImportJobs, JobOutputStore, Ledger
from ..s3_output import JobOutputReader
from .budget_board import DynamoBoard
from .events import AUDIT_REQUESTED, AUDIT_SOURCE
from .messaging import AlertPublisher, WorkQueue
from .progress import JobProgress
from .settings import Settings
from .storage import PART_FETCHES, ReportStore


@dataclass
class Services:
    """Everything the functions talk to, and the clock they read."""

    settings: Settings
    progress: JobProgress
    reports: ReportStore
    reader: JobOutputStore
    frames: FrameSource
    jobs: ImportJobs
    queue: WorkQueue
    alerts: AlertPublisher
    """The job alerts (verdicts), for the people who review imports."""
    ops: AlertPublisher
    """Operational messages (a job overdue or finished past its deadline), for the people who run the stack."""
    budget: RequestBudget | None = None
    """This process's share of the deployment's request-rate budget (the worker's; None where nothing fetches
    frames)."""
    clock: Callable[[], float] = time.time
    """Seconds since the epoch; tests inject their own."""
    ledger: Ledger | None = None
    """The verification ledger the finaliser writes a row per image set to (None: not deployed)."""
    listing: HealthImagingListing | None = None
    """SearchImageSets and GetImageSet (the trigger's audit walk and image set events; the worker's "deleted?")."""
    audit_queue: WorkQueue | None = None
    """The audit queue (consumed with a lower concurrency than ``queue``); None: audit work goes to ``queue``."""
    audit_requests: Callable[[str], None] | None = None
    """Asks for the next chunk of an audit run (puts the ``Audit Requested`` event naming it)."""

    def queue_for(self, job_id: str) -> WorkQueue:
        """The queue a job's work items go to: an audit run's (split ranges and hand-backs included) keep to the
        audit queue, so an audit never takes the import queue's concurrency."""
        if self.audit_queue is not None and job_id.startswith("audit"):
            return self.audit_queue
        return self.queue


def build_services(settings: Settings) -> Services:
    """Create the AWS clients and adapters (once, at cold start)."""
    dynamodb = boto3.client("dynamodb")
    budget = request_budget(settings, DynamoBoard(dynamodb, settings.progress_table, _budget_of(settings)))
    medical_imaging = make_client(max_pool_connections=MAX_FETCH_THREADS, budget=budget)
    # One pooled connection per concurrent part fetch of the finaliser (botocore's default pool holds 10).
    s3, sns = boto3.client("s3", config=Config(max_pool_connections=PART_FETCHES)), boto3.client("sns")
    return Services(
        settings=settings,
        progress=JobProgress(dynamodb, settings.progress_table),
        reports=ReportStore(s3, settings.reports_bucket, settings.reports_prefix),
        reader=JobOutputReader(s3),
        frames=HealthImagingSource(medical_imaging),
        jobs=HealthImagingJobs(medical_imaging),
        queue=WorkQueue(boto3.client("sqs"), settings.work_queue_url),
        alerts=AlertPublisher(sns, settings.alert_topic_arn),
        ops=AlertPublisher(sns, settings.ops_topic_arn),
        budget=budget,
        ledger=DynamoLedger(dynamodb, settings.ledger_table) if settings.ledger_table else None,
        listing=HealthImagingListing(medical_imaging),
        audit_queue=WorkQueue(boto3.client("sqs"), settings.audit_queue_url) if settings.audit_queue_url else None,
        audit_requests=_audit_requests(boto3.client("events")),
    )


def _audit_requests(events: Any) -> Callable[[str], None]:
    """Put the ``Audit Requested`` event that starts the next chunk of a run on the default bus."""

    def request(run_id: str) -> None:
        response = events.put_events(
            Entries=[
                {
                    "Source": AUDIT_SOURCE,
                    "DetailType": AUDIT_REQUESTED,
                    "Detail": json.dumps({"runId": run_id}),
                    "EventBusName": "default",
                }
            ]
        )
        if response.get("FailedEntryCount"):
            # The run stays open in planning; the invocation fails and its retry resumes from the checkpoint.
            raise RuntimeError(f"EventBridge refused the next chunk of audit run {run_id}")

    return request


def _budget_of(settings: Settings) -> Rates:
    return Rates(float(settings.frame_rate_budget), float(settings.metadata_rate_budget))


def request_budget(settings: Settings, board: DynamoBoard) -> RequestBudget:
    """This process's share of the deployment's budget, on the board every worker shares (a container runs
    one invocation at a time, so one name per process is one per running worker)."""
    budget = _budget_of(settings)
    # The audit queue's workers run beside the work queue's: a worker that cannot reach the board keeps to the
    # share it would have with all of them running.
    workers = settings.worker_max_concurrency + (AUDIT_WORKER_CONCURRENCY if settings.audit_queue_url else 0)
    return RequestBudget(budget, board, worker=uuid.uuid4().hex, static_share=budget.divided(workers))


AUDIT_WORKER_CONCURRENCY = 2
"""The audit queue mapping's MaximumConcurrency (template.yaml, ImageSetWorkerFunction's AuditQueue event)."""
