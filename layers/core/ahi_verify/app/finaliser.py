"""Finaliser: once nothing of a job is pending, merge its parts into the report and send its one alert.

The merge streams (:meth:`ahi_verify.app.storage.ReportStore.write_merged_report`): parts are read a window
at a time and the report is written as it is merged, so a job of a million frames fits the function's memory.

Whoever completes a job's last work item (or the trigger, for a job with nothing to verify) calls
:func:`finalise_job`; a conditional claim in the progress table lets exactly one caller through, and a
claim that has gone stale (its finaliser died) can be taken over by the next delivery. The alert is kept
beside the report before it is published, so an alert SNS refuses is sent again by the reconciliation
instead of leaving the job in ``finalising``. The documents written are recorded in one digest of the
evidence chain (:mod:`ahi_verify.evidence`) before the job is marked finalised.

Each image set of the report gets its row in the verification ledger (:mod:`ahi_verify.ledger`) as the
merge streams past it, 25 rows a BatchWriteItem, all before the job is marked finalised: a finaliser that
dies is taken over, and its successor writes the same deterministic keys again, so no row is doubled.
"""

from __future__ import annotations

from dataclasses import replace

from aws_lambda_powertools.metrics import MetricUnit

from ..alert import Alert, compose_alert, is_version_job
from ..ledger import LedgerRecorder
from ..report import iso_time
from .observability import logger, metrics
from .storage import REPORT
from .wiring import Services


def finalise_job(job_id: str, svc: Services, claimer: str) -> str | None:
    """Write the report and send the alert if this caller wins the claim; return the report's URI."""
    if not svc.progress.claim_finalisation(job_id, claimer):
        return None
    record = svc.progress.get(job_id) or {}
    plan = svc.reports.get_plan(job_id)
    if record.get("abandoned"):  # finished by the reconciliation past its deadline: the report says why
        plan = replace(plan, discrepancies=(*plan.discrepancies, str(record["abandoned"])))
    finished_at = iso_time(svc.clock())
    recorder = None
    if svc.ledger is not None:
        report_uri = svc.reports.uri(job_id, REPORT)
        recorder = LedgerRecorder(svc.ledger.record, plan.job, verified_at=finished_at, report_uri=report_uri)
    on_image_set = recorder.add if recorder is not None else None
    uri, outcome = svc.reports.write_merged_report(plan, finished_at=finished_at, on_image_set=on_image_set)
    if recorder is not None:
        # Before the job is marked done, like the digest: a ledger that cannot be written leaves the claim to
        # go stale, and the finaliser that takes it over writes the rows again (the same keys).
        rows = recorder.flush()
        metrics.add_metric(name="LedgerRowsWritten", unit=MetricUnit.Count, value=rows)
    settings = svc.settings
    # A new-version job (one image set, not listed) is named by its image set and version, not its job ID.
    single = plan.image_sets[0] if is_version_job(job_id) and len(plan.image_sets) == 1 else None
    image_set = (single.image_set_id, single.version) if single is not None else None
    alert = compose_alert(
        outcome,
        uri,
        notify_clean=settings.notify_on_clean_jobs,
        deployment=settings.deployment,
        image_set=image_set,
    )
    due = alert is not None and not record.get("alert_message_id")
    if alert is not None and due:
        svc.reports.put_alert(job_id, alert)  # kept first: a publish that fails is sent by the reconciliation
    # Before the job is marked done: a failure here leaves the claim to go stale, and the finaliser that takes
    # it over writes the documents and their digest again, so no report stands without its digest.
    svc.reports.record_evidence(job_id, created_at=iso_time(svc.clock()))
    svc.progress.mark_finalised(job_id, uri, outcome.verdict.value, alert_due=due)
    metrics.add_metric(name="JobsFinalised", unit=MetricUnit.Count, value=1)
    logger.info("job finalised", extra={"verdict": outcome.verdict.value, "report": uri})
    if alert is not None and due:
        send_kept_alert(job_id, svc, alert)
    return uri


def send_kept_alert(job_id: str, svc: Services, alert: Alert | None = None) -> bool:
    """Publish the job's kept alert and remember it; True when sent.

    botocore has already retried what it classes as transient; a failure left (a disabled KMS key, a
    deleted topic, a policy) is logged and counted, and the job stays done with its alert due: the report
    is written, the work items are not failed for it, and the reconciliation sends the alert again.
    """
    try:
        message_id = svc.alerts.publish(alert or svc.reports.get_alert(job_id))
    except Exception as exc:  # the job is done whatever SNS says; the alert is retried, not lost
        logger.error("alert not published; the reconciliation sends it again", extra={"error": type(exc).__name__})
        metrics.add_metric(name="AlertsNotPublished", unit=MetricUnit.Count, value=1)
        return False
    svc.progress.mark_alert_sent(job_id, message_id)
    return True


def finalise_if_done(job_id: str, svc: Services, claimer: str) -> None:
    """Finalise the job when its last work item has been counted."""
    job = svc.progress.get(job_id) or {}
    if int(job.get("pending", 1)) <= 0:
        finalise_job(job_id, svc, claimer)
