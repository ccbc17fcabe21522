"""The local stack's moto is atomic per request: concurrent conditional writes, transactions and SQS receives
behave as DynamoDB and SQS do (moto's own backends take no lock; :mod:`local.atomic_moto`).

The races are provoked, not timed: many rounds of threads released together by a barrier, with the
interpreter switching threads as often as it can, so that without the lock an interleaving inside moto's
read-check-write is all but certain somewhere in the run.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local import atomic_moto
from local.stack import LocalStack
from tests.local.conftest import StackFactory

pytestmark = pytest.mark.integration

THREADS = 8
ROUNDS = 40


@pytest.fixture(autouse=True)
def eager_thread_switching() -> Iterator[None]:
    """Switch threads as often as the interpreter allows, to open every race window moto has."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on threads released at once; each result is the return value or the exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the test inspects what each call did
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def clients(stack: LocalStack, service: str) -> list[Any]:
    """One client per thread (boto3 clients are created on the main thread, then used from one thread each)."""
    return [stack._client(service) for _ in range(THREADS)]


def conditional_failures(results: list[Any]) -> int:
    return sum(
        isinstance(r, ClientError)
        and r.response["Error"]["Code"] in ("ConditionalCheckFailedException", "TransactionCanceledException")
        for r in results
    )


def test_only_one_of_concurrent_conditional_puts_succeeds(make_stack: StackFactory) -> None:
    # GIVEN the stack's progress table and eight writers
    stack = make_stack()
    table = stack.tables["ProgressTable"]
    dbs = clients(stack, "dynamodb")

    def create(db: Any, key: str, writer: int) -> Any:
        return db.put_item(
            TableName=table,
            Item={"pk": {"S": key}, "sk": {"S": "job"}, "writer": {"N": str(writer)}},
            ConditionExpression="attribute_not_exists(pk)",
        )

    for round_ in range(ROUNDS):
        # WHEN all eight put the same new item "if it does not exist" at once
        results = together([functools.partial(create, db, f"job-{round_}", n) for n, db in enumerate(dbs)])
        # THEN exactly one succeeded and the others failed their condition
        successes = [r for r in results if isinstance(r, dict)]
        assert len(successes) == 1, f"round {round_}: {len(successes)} conditional puts succeeded"
        assert conditional_failures(results) == THREADS - 1


def test_concurrent_transactions_on_one_counter_never_lose_an_update(make_stack: StackFactory) -> None:
    # GIVEN a counter at 0 and eight writers that each add 1 if the counter still holds what they read
    stack = make_stack()
    table = stack.tables["ProgressTable"]
    dbs = clients(stack, "dynamodb")
    key = {"pk": {"S": "counter"}, "sk": {"S": "c"}}
    dbs[0].put_item(TableName=table, Item={**key, "n": {"N": "0"}})

    def claim(db: Any, seen: int) -> Any:
        return db.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": key,
                        "UpdateExpression": "SET n = n + :one",
                        "ConditionExpression": "n = :seen",
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":seen": {"N": str(seen)}},
                    }
                }
            ]
        )

    for round_ in range(ROUNDS):
        # WHEN all of them try to move it from `round_` to `round_ + 1` at once
        results = together([functools.partial(claim, db, round_) for db in dbs])
        # THEN exactly one transaction went through, and the counter moved by one
        assert sum(isinstance(r, dict) for r in results) == 1, f"round {round_}: {results}"
        assert conditional_failures(results) == THREADS - 1
    item = dbs[0].get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": str(ROUNDS)}


def test_concurrent_receives_never_raise_and_never_share_a_message(make_stack: StackFactory) -> None:
    # GIVEN a queue of messages, eight receivers and deleters working on it at once
    stack = make_stack()
    url = stack.queue_url("WorkQueue")
    sqs = clients(stack, "sqs")
    received: list[str] = []
    for round_ in range(ROUNDS // 4):
        for start in range(0, 40, 10):
            stack.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": f"{round_}-{i}"} for i in range(start, start + 10)],
            )

        def receive_and_delete(client: Any) -> list[str]:
            got: list[str] = []
            while True:
                # A visibility timeout far longer than the test: a message received twice was handed out twice.
                messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=600).get(
                    "Messages", []
                )
                if not messages:
                    return got
                for message in messages:
                    got.append(message["MessageId"])
                    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

        # WHEN they drain it concurrently
        results = together([functools.partial(receive_and_delete, c) for c in sqs])
        # THEN no call failed, and every message went to exactly one receiver
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors[:1]
        ids = [i for r in results for i in r]
        duplicated = [i for i, n in Counter(ids).items() if n > 1]
        assert not duplicated, f"round {round_}: {len(duplicated)} message(s) handed to two receivers"
        assert len(ids) == 40
        received.extend(ids)
    assert stack.queue_depth("WorkQueue") == 0
    assert len(set(received)) == len(received)


def test_the_lock_is_installed_while_a_stack_runs_and_removed_after(make_stack: StackFactory) -> None:
    # GIVEN no stack running
    assert not atomic_moto.installed()
    # WHEN a stack starts, and then stops
    stack = make_stack()
    during = atomic_moto.installed()
    stack.stop()
    # THEN moto's backends were patched while it ran, and are moto's own again
    assert during
    assert not atomic_moto.installed()
