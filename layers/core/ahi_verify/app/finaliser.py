"""Finaliser: once nothing of a job is pending, merge its parts into the report and send its one alert.

Whoever completes a job's last work item (or the trigger, for a job with nothing to verify) calls
:func:`finalise_job`; a conditional claim in the progress table lets exactly one caller through, and a
claim that has gone stale (its finaliser died) can be taken over by the next delivery.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from ..alert import compose_alert
from ..merge import merge_parts
from ..report import iso_time
from .observability import logger, metrics
from .wiring import Services


def finalise_job(job_id: str, svc: Services, claimer: str) -> str | None:
    """Write the report and send the alert if this caller wins the claim; return the report's URI."""
    if not svc.progress.claim_finalisation(job_id, claimer):
        return None
    plan = svc.reports.get_plan(job_id)
    report = merge_parts(plan, svc.reports.parts(job_id), finished_at=iso_time(svc.clock()))
    uri = svc.reports.put_report(report)
    alert = compose_alert(report, uri, notify_clean=svc.settings.notify_on_clean_jobs)
    record = svc.progress.get(job_id) or {}
    if alert is not None and not record.get("alert_message_id"):
        svc.progress.mark_alert_sent(job_id, svc.alerts.publish(alert))
    svc.progress.mark_finalised(job_id, uri, report.verdict.value)
    metrics.add_metric(name="JobsFinalised", unit=MetricUnit.Count, value=1)
    logger.info("job finalised", extra={"verdict": report.verdict.value, "report": uri})
    return uri


def finalise_if_done(job_id: str, svc: Services, claimer: str) -> None:
    """Finalise the job when its last work item has been counted."""
    job = svc.progress.get(job_id) or {}
    if job.get("pending") == 0:
        finalise_job(job_id, svc, claimer)
