"""The SQS event source mapping runs batches concurrently, up to the template's ``MaximumConcurrency``, each in an
execution environment of its own; 1 is the serial mode. The batch semantics (partial failures, redelivery,
the dead-letter queue) are those of ``test_stack``, checked here at both settings.

Concurrency is shown by a rendezvous, never by timing: ``gather`` messages wait until ``count`` of them have
arrived, so they can only all succeed when that many run at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from local.stack import Invocation, LocalStack
from tests.local.conftest import StackFactory

pytestmark = pytest.mark.integration

WORKER = "ImageSetWorkerFunction"


def send(stack: LocalStack, *bodies: dict[str, Any]) -> list[str]:
    url = stack.queue_url("WorkQueue")
    return [stack.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(b))["MessageId"] for b in bodies]


def worker_runs(records: list[Invocation]) -> list[Invocation]:
    return [r for r in records if r.function == WORKER]


def gathering(directory: Path, count: int, messages: int) -> list[dict[str, Any]]:
    directory.mkdir(exist_ok=True)
    return [{"mode": "gather", "dir": str(directory), "count": count}] * messages


def test_the_default_is_the_templates_maximum_concurrency(make_stack: StackFactory) -> None:
    # GIVEN the test template, whose worker mapping has MaximumConcurrency: !Ref WorkerMaximumConcurrency
    # WHEN a stack starts with that parameter at 3 and no concurrency option
    stack = make_stack(parameters={"WorkerMaximumConcurrency": "3"})
    # THEN the worker's batches run three at a time
    assert stack.concurrency == {WORKER: 3}


def test_batches_run_concurrently_in_environments_of_their_own(make_stack: StackFactory, tmp_path: Path) -> None:
    # GIVEN a maximum concurrency of 3, and three messages that each wait until all three have arrived
    stack = make_stack(parameters={"WorkerMaximumConcurrency": "3"})
    send(stack, *gathering(tmp_path / "gather", count=3, messages=3))
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=60)
    # THEN all three met (three batches ran at once), each in a process of its own (not this one)
    runs = worker_runs(summary.records)
    assert len(runs) == 3
    assert all(r.ok for r in runs), [r.error for r in runs]
    assert [r.result["met"] for r in runs] == [True, True, True]
    assert max(r.result["running"] for r in runs) == 3
    pids = {r.result["pid"] for r in runs}
    assert len(pids) == 3
    assert os.getpid() not in pids
    assert stack.queue_depth("WorkQueue") == 0


def test_no_more_batches_run_than_the_maximum(make_stack: StackFactory, tmp_path: Path) -> None:
    # GIVEN a concurrency of 2 (the stack option), and six messages of which the first two wait for each other
    stack = make_stack(concurrency=2)
    send(stack, *gathering(tmp_path / "pairs", count=2, messages=6))
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=120)
    # THEN every batch ran, never more than two at once, and warm environments were reused
    runs = worker_runs(summary.records)
    assert len(runs) == 6
    assert all(r.ok and r.result["met"] for r in runs)
    assert max(r.result["running"] for r in runs) == 2
    assert len({r.result["pid"] for r in runs}) <= 2


def test_concurrency_one_runs_batches_serially_in_process(make_stack: StackFactory, tmp_path: Path) -> None:
    # GIVEN the serial mode
    stack = make_stack(concurrency=1)
    send(stack, *gathering(tmp_path / "one", count=1, messages=3))
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=60)
    # THEN one batch ran at a time, in this process, as before there was concurrency
    runs = worker_runs(summary.records)
    assert stack.concurrency == {WORKER: 1}
    assert [r.result["running"] for r in runs] == [1, 1, 1]
    assert {r.result["pid"] for r in runs} == {os.getpid()}


def test_in_process_isolation_cannot_run_concurrently(make_stack: StackFactory) -> None:
    # GIVEN / WHEN a stack asked for in-process workers and three concurrent batches
    # THEN it refuses to start, naming the way out
    with pytest.raises(ValueError, match="concurrency 1 or for container isolation"):
        make_stack(concurrency=3, isolation={WORKER: "inprocess"})


@pytest.mark.parametrize("concurrency", [1, 4])
def test_partial_failures_and_redrive_are_unchanged_by_concurrency(make_stack: StackFactory, concurrency: int) -> None:
    # GIVEN batches of three: ok, fail-once, ok; and a message that always fails (maxReceiveCount 3)
    stack = make_stack(concurrency=concurrency, edit=lambda t: t.replace("BatchSize: 1", "BatchSize: 3"))
    first, flaky, third = send(stack, {"mode": "ok"}, {"mode": "fail-once"}, {"mode": "ok"})
    # WHEN the event source mapping runs
    summary = stack.run_until_idle(timeout=60)
    (poison,) = send(stack, {"mode": "fail"})
    dead = stack.run_until_idle(timeout=60)
    # THEN only the failed message came back, once; the poison went to the DLQ after three receives
    counts = [
        {r["messageId"]: r["attributes"]["ApproximateReceiveCount"] for r in run.event["Records"]}
        for run in worker_runs(summary.records)
    ]
    assert counts[0] == {first: "1", flaky: "1", third: "1"}
    assert counts[1:] == [{flaky: "2"}]
    assert dead.failed_items == {WORKER: 3}
    assert dead.dlq_depth == {"WorkDeadLetterQueue": 1}
    assert stack.queue_depth("WorkQueue") == 0
    assert poison


def test_an_environment_started_meanwhile_does_not_inherit_another_functions_variables(
    make_stack: StackFactory,
) -> None:
    # GIVEN the trigger's variables swapped into os.environ, as while it runs in-process
    stack = make_stack()
    runner = stack.runner
    trigger = stack.function("JobTriggerFunction")
    with runner._function_env(trigger, runner._context(trigger, "r")):
        assert os.environ["TRIGGER_ONLY"] == "yes"
        # WHEN a worker environment is started meanwhile (from another thread, in the stack)
        inherited = runner._base_env()
    # THEN it starts from the stack's environment, without the trigger's variables
    assert "TRIGGER_ONLY" not in inherited
    assert inherited["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert inherited.get("AWS_LAMBDA_FUNCTION_NAME") == os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
