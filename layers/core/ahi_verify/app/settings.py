"""Configuration of the functions: one typed object, read from the environment once, at cold start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..alert import Deployment
from ..ids import SERVICE_ID

_BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
_TOPIC = r"arn:aws[a-z\-]*:sns:.+"
_REGION = r"[a-z]{2}(-[a-z]+)+-[0-9]+"
_ACCOUNT = r"[0-9]{12}"
_STACK = r"[A-Za-z][A-Za-z0-9\-]{0,127}"


class SettingsError(ValueError):
    """The function's environment is incomplete or malformed; lists every problem at once."""


@dataclass(frozen=True)
class Settings:
    """What the template passes to every function."""

    datastore_id: str
    output_bucket: str
    output_prefix: str
    reports_bucket: str
    """The stack's own reports bucket (template ReportsBucket), not the import-output bucket."""
    reports_prefix: str
    work_queue_url: str
    progress_table: str
    idempotency_table: str
    alert_topic_arn: str
    """Verification alerts (verdicts), for the people who act on a job's result."""
    ops_topic_arn: str
    """Operational messages (stuck jobs, the stack's health), for whoever runs the stack."""
    notify_on_clean_jobs: bool
    frames_per_work_item: int
    frame_rate_budget: int
    """GetImageFrame requests per second the whole deployment may send, retries included (template parameter
    FrameRequestRateBudget): the workers running share it (``budget``)."""
    metadata_rate_budget: int
    """GetImageSetMetadata requests per second, likewise (MetadataRequestRateBudget)."""
    worker_max_concurrency: int
    """The most workers that can run at once (WorkerMaximumConcurrency): a worker that cannot reach the board
    keeps to budget / this, its share when all of them run."""
    manifest_wait_s: float = 30.0
    work_max_receive_count: int = 5
    """The work queue's redrive limit: the delivery on which a failing item is recorded as failed."""
    source_bucket: str | None = None
    """The input bucket the three-way check may read (template parameter SourceBucketName); None: the check
    is off. Source files in any other bucket are reported as not compared, never read."""
    job_deadline_s: int = 12 * 3600
    """A job still open this long after it was planned is finished by the reconciliation, its unfinished
    work items reported as not verified (template parameter JobDeadlineHours). The default lies past the
    longest a work item can stay in the queue before it is dead-lettered (5 receives x 1.5 h visibility)."""
    audit_queue_url: str | None = None
    """The audit queue (template AuditQueue): audit work items, consumed with a lower concurrency."""
    memory_budget_bytes: int = 200 * 1024 * 1024
    """Frames in flight per worker: 40 % of the function's memory (the rest is the runtime, the code and the
    HTTP pools), measured: a 3328x4096 frame in flight costs about 3.5x its 27 MB decoded size."""
    region: str | None = None
    """The function's region (Lambda's ``AWS_REGION``): named in alerts, and the console of their links."""
    account_id: str | None = None
    """The stack's account (template: ``AWS::AccountId``), named in alerts."""
    stack_name: str | None = None
    """The stack's name (template: ``AWS::StackName``), named in alerts."""
    ledger_table: str | None = None
    """The verification ledger (template LedgerTable): a row per image set version verified. None (the
    variable unset or empty): no ledger is written (a deployment older than the ledger)."""

    @property
    def deployment(self) -> Deployment:
        """Where this deployment's alerts come from."""
        return Deployment(self.region, self.account_id, self.stack_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build and validate the settings.

        Raises
        ------
        SettingsError
            Naming every missing or malformed variable.
        """
        problems: list[str] = []

        def text(name: str, pattern: str = r".+") -> str:
            if name not in env:
                problems.append(f"{name} is missing")
                return ""
            value = env[name]
            if not re.fullmatch(pattern, value):
                problems.append(f"{name} is {'empty' if not value else 'malformed'}")
            return value

        def number(name: str, low: int) -> int:
            value = env.get(name, "")
            if not re.fullmatch(r"[0-9]+", value) or int(value) < low:
                problems.append(f"{name} must be an integer >= {low}")
                return low
            return int(value)

        flag = env.get("NOTIFY_ON_CLEAN_JOBS", "false").lower()
        if flag not in ("true", "false"):
            problems.append("NOTIFY_ON_CLEAN_JOBS must be true or false")
        settings = cls(
            datastore_id=text("DATASTORE_ID", SERVICE_ID.pattern),
            output_bucket=text("OUTPUT_BUCKET", _BUCKET),
            output_prefix=text("OUTPUT_PREFIX", r"(.*/)?"),
            reports_bucket=text("REPORTS_BUCKET", _BUCKET),
            reports_prefix=text("REPORTS_PREFIX", r".+/"),
            work_queue_url=text("WORK_QUEUE_URL", r"https?://.+"),
            progress_table=text("PROGRESS_TABLE"),
            idempotency_table=text("IDEMPOTENCY_TABLE"),
            alert_topic_arn=text("ALERT_TOPIC_ARN", _TOPIC),
            ops_topic_arn=text("OPS_TOPIC_ARN", _TOPIC),
            notify_on_clean_jobs=flag == "true",
            frames_per_work_item=number("FRAMES_PER_WORK_ITEM", 1),
            frame_rate_budget=number("FRAME_RATE_BUDGET", 1),
            metadata_rate_budget=number("METADATA_RATE_BUDGET", 1),
            worker_max_concurrency=number("WORKER_MAXIMUM_CONCURRENCY", 1),
        )
        receives = env.get("WORK_MAX_RECEIVE_COUNT", "5")
        if re.fullmatch(r"[0-9]+", receives) and int(receives) >= 1:
            settings = replace(settings, work_max_receive_count=int(receives))
        else:
            problems.append("WORK_MAX_RECEIVE_COUNT must be an integer >= 1")
        deadline = env.get("JOB_DEADLINE_S", str(settings.job_deadline_s))
        if re.fullmatch(r"[0-9]+", deadline) and int(deadline) >= 60:
            settings = replace(settings, job_deadline_s=int(deadline))
        else:
            problems.append("JOB_DEADLINE_S must be an integer >= 60")
        # Optional: empty or unset leaves the feature off (None); a malformed value is a problem.
        settings = replace(
            settings,
            source_bucket=_optional(env, "SOURCE_BUCKET", _BUCKET, problems),
            ledger_table=_optional(env, "LEDGER_TABLE", r".+", problems),
            audit_queue_url=_optional(env, "AUDIT_QUEUE_URL", r"https?://.+", problems),
        )
        where = _deployment(env, problems)
        settings = replace(settings, region=where.region, account_id=where.account_id, stack_name=where.stack_name)
        memory_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        if memory_mb.isdigit():
            settings = replace(settings, memory_budget_bytes=int(memory_mb) * 1024 * 1024 * 2 // 5)
        # The template gives reports a bucket of their own, which nothing watches; a configuration that puts
        # them back in the output bucket must still keep them out of the watched prefix.
        if (
            settings.reports_bucket == settings.output_bucket
            and settings.output_prefix
            and settings.reports_prefix.startswith(settings.output_prefix)
        ):
            problems.append("REPORTS_PREFIX must not lie under OUTPUT_PREFIX (reports would re-trigger the function)")
        if problems:
            raise SettingsError("invalid function configuration: " + "; ".join(problems))
        return settings


def _optional(env: Mapping[str, str], name: str, pattern: str, problems: list[str]) -> str | None:
    """``env[name]`` when given and well formed; None when empty or unset; a malformed one is a problem."""
    value = env.get(name, "")
    if value and not re.fullmatch(pattern, value):
        problems.append(f"{name} is malformed")
        return None
    return value or None


def _deployment(env: Mapping[str, str], problems: list[str]) -> Deployment:
    """The region, account and stack name given, each checked (a malformed one is added to ``problems``).

    Only alerts read them, and one that is missing costs a line of an alert: checked when given, else None.
    """

    def given(name: str, pattern: str) -> str | None:
        value = env.get(name, "")
        if value and not re.fullmatch(pattern, value):
            problems.append(f"{name} is malformed")
        return value if value and re.fullmatch(pattern, value) else None

    return Deployment(given("AWS_REGION", _REGION), given("ACCOUNT_ID", _ACCOUNT), given("STACK_NAME", _STACK))
