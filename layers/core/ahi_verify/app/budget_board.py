"""DynamoDB: the request-rate board (``budget.Board``) of one deployment, one item in the progress table.

Item ``pk=BUDGET, sk=BOARD``: the board as JSON and a version. Every refresh reads it (strongly consistent),
applies ``budget.allocate`` and writes it back on condition that the version did not move, so two workers
that refresh at once cannot both take the same free share: the loser reads again. One read and one write per
worker per second, whatever the request rate.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from ..budget import BoardState, Observed, Rates, allocate, release

_KEY = {"pk": {"S": "BUDGET"}, "sk": {"S": "BOARD"}}
BOARD_ATTEMPTS = 5
"""Conditional writes lost to another worker's refresh before this refresh gives up (and the worker keeps its
rates, see ``budget.STALE_S``): with one write per worker per second, a second loss in a row is rare."""
BOARD_RETENTION_S = 24 * 3600
"""A board nobody has written for a day expires (table TTL); the next worker starts a new one at the budget."""
_T = TypeVar("_T")


class BoardContendedError(RuntimeError):
    """Every attempt to write the board lost to another worker's write."""


class DynamoBoard:
    """The board in the progress table, shared by every worker of the deployment."""

    def __init__(self, client: Any, table: str, budget: Rates, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._table = table
        self._budget = budget
        self._sleep = sleep

    def refresh(self, worker: str, observed: Observed, now: float) -> Rates:
        """See ``budget.Board.refresh``."""
        return self._change(lambda state: allocate(state, worker, observed, now, self._budget), now)

    def leave(self, worker: str, now: float) -> None:
        """See ``budget.Board.leave``."""
        self._change(lambda state: (release(state, worker, now), None), now)

    def read(self) -> BoardState | None:
        """The board as stored (None before any worker wrote it)."""
        return self._read()[0]

    def _read(self) -> tuple[BoardState | None, int]:
        item = self._client.get_item(TableName=self._table, Key=_KEY, ConsistentRead=True).get("Item")
        if item is None:
            return None, 0
        return BoardState.from_json(json.loads(item["board"]["S"])), int(item["version"]["N"])

    def _change(self, change: Callable[[BoardState], tuple[BoardState, _T]], now: float) -> _T:
        for _ in range(BOARD_ATTEMPTS):
            state, version = self._read()
            new, result = change(state or BoardState.empty(self._budget, now))
            item = {
                **_KEY,
                "board": {"S": json.dumps(new.to_json(), separators=(",", ":"))},
                "version": {"N": str(version + 1)},
                "expires_at": {"N": str(int(now + BOARD_RETENTION_S))},
            }
            condition: dict[str, Any] = (
                {"ConditionExpression": "attribute_not_exists(pk)"}
                if state is None
                else {"ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"N": str(version)}}}
            )
            try:
                self._client.put_item(TableName=self._table, Item=item, **condition)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                self._sleep(0.01 * (1 + random.random()))  # another worker's refresh won: read it again
                continue
            return result
        raise BoardContendedError(f"the budget board was written by others {BOARD_ATTEMPTS} times in a row")
