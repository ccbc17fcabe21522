"""The reliability matrix at CI size: a representative subset of the faults of ``local.fault_matrix``, each a job of
240 frames (8 image sets x 30 frames) through the local stack, checked for exact accounting (every listed
frame in exactly one result, or in an image set reported as an error), verdict, frame statuses and alerts.
``python -m bench.reliability`` runs every fault and the soak.

The worker runs ``RELIABILITY_WORKERS`` batches at once (default 4, each in an execution environment of its
own; 1 is the serial, in-process mode)."""

from __future__ import annotations

import os

import pytest

from local.fault_matrix import WORKERS, Outcome, run_scenario

pytestmark = pytest.mark.integration

CONCURRENT_WORKERS = int(os.environ.get("RELIABILITY_WORKERS", WORKERS))

CI_SCENARIOS = [
    "clean",
    "throttle-frames-short",
    "server-error-bursts",
    "latency-spikes",
    "corrupted-frames",
    "truncated-frames",
    "missing-frames-404",
    "metadata-corrupt-gzip",
    "metadata-invalid-json",
    "metadata-missing-fields",
    "manifest-late",
    "manifest-missing",
    "ndjson-malformed-split",
    "manifest-malformed-json",
    "duplicate-events-sequential",
    "duplicate-events-concurrent",
    "worker-killed-after-part",
    "manifest-omits-image-set",
    "manifest-overcounts-image-sets",
    "manifest-instances-lost",
    "manifest-forged-unknown-job",
    "manifest-rewritten-after-verification",
    # every job ends in a report, whatever is killed, throttled or lost
    "worker-timeout-every-delivery",
    "throttling-sustained-handback",
    "alert-publish-refused",
    "job-stuck-past-deadline",
    "reconcile-unreadable-and-lost",
    "dynamodb-transaction-conflicts",
    "split-message-redelivered",
]


def assert_passed(out: Outcome) -> None:
    assert out.ok, f"{out.name}: " + "; ".join(out.problems)


@pytest.mark.parametrize("name", CI_SCENARIOS)
def test_fault_is_survived_and_accounted_for(name: str) -> None:
    # GIVEN the scenario's fault, WHEN its job runs through the stack with concurrent workers
    out = run_scenario(name, workers=CONCURRENT_WORKERS)
    # THEN every check of the harness held: each listed frame once, one report, at most one alert
    assert_passed(out)
    assert out.alerts <= 1
    if out.verdict != "no report":  # jobs whose output cannot be read must not claim anything
        assert out.listed >= 200
        assert (out.accounted, out.duplicates, out.lost, out.reports) == (out.listed, 0, 0, 1)


def test_poison_item_is_dead_lettered_and_reported() -> None:
    # GIVEN an item that raises on every delivery, WHEN its job runs with concurrent workers
    out = run_scenario("poison-item-dlq", workers=CONCURRENT_WORKERS)
    # THEN it is dead-lettered, and the job still ends in one report and one alert
    assert out.extra.get("dead letters") == 1, "; ".join(out.problems)
    assert_passed(out)
    assert (out.accounted, out.duplicates, out.lost, out.verdict, out.alerts, out.reports) == (
        out.listed,
        0,
        0,
        "UNVERIFIED",
        1,
        1,
    )
