"""Wiring: the one place the application creates AWS clients and the adapters around them.

Called once per process at cold start by each handler. Nothing here decodes a frame: the frame source
is only an HTTP adapter, so the trigger can be wired without numpy or imagecodecs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import boto3
from botocore.config import Config

from ..budget import MAX_FETCH_THREADS, Rates, RequestBudget
from ..dynamo_ledger import DynamoLedger
from ..healthimaging import HealthImagingJobs, HealthImagingSource, make_client
from ..ports import FrameSource, ImportJobs, JobOutputStore, Ledger
from ..s3_output import JobOutputReader
from .budget_board import DynamoBoard
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
    )


def _budget_of(settings: Settings) -> Rates:
    return Rates(float(settings.frame_rate_budget), float(settings.metadata_rate_budget))


def request_budget(settings: Settings, board: DynamoBoard) -> RequestBudget:
    """This process's share of the deployment's budget, on the board every worker shares (a container runs
    one invocation at a time, so one name per process is one per running worker)."""
    budget = _budget_of(settings)
    return RequestBudget(
        budget, board, worker=uuid.uuid4().hex, static_share=budget.divided(settings.worker_max_concurrency)
    )
