"""Finaliser: once nothing of a job is pending, merge its parts into the report and send its one alert.

The merge streams (:meth:`ahi_verify.app.storage.ReportStore.write_merged_report`): parts are read a window
at a time and the report is written as it is merged, so a job of a million frames fits the function's memory.

Whoever completes a job's last work item (or the trigger, for a job with nothing to verify) calls
:func:`finalise_job`; a conditional claim in the progress table lets exactly one caller through, and a
claim that has gone stale (its finaliser died) can be taken over by the next delivery.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from ..alert import compose_alert
from ..report import iso_time
from .observability import logger, metrics
from .wiring import Services


def finalise_job(job_id: str, svc: Services, claimer: str) -> str | None:
    """Write the report and send the alert if this caller wins the claim; return the report's URI."""
    if not svc.progress.claim_finalisation(job_id, claimer):
        return None
    plan = svc.reports.get_plan(job_id)
    uri, outcome = svc.reports.write_merged_report(plan, finished_at=iso_time(svc.clock()))
    alert = compose_alert(outcome, uri, notify_clean=svc.settings.notify_on_clean_jobs)
    record = svc.progress.get(job_id) or {}
    if alert is not None and not record.get("alert_message_id"):
        svc.progress.mark_alert_sent(job_id, svc.alerts.publish(alert))
    svc.progress.mark_finalised(job_id, uri, outcome.verdict.value)
    metrics.add_metric(name="JobsFinalised", unit=MetricUnit.Count, value=1)
    logger.info("job finalised", extra={"verdict": outcome.verdict.value, "report": uri})
    return uri


def finalise_if_done(job_id: str, svc: Services, claimer: str) -> None:
    """Finalise the job when its last work item has been counted."""
    job = svc.progress.get(job_id) or {}
    if job.get("pending") == 0:
        finalise_job(job_id, svc, claimer)
