"""The verification ledger in DynamoDB: the :class:`~ahi_verify.ports.Ledger` adapter.

Table ``LedgerTable`` (template.yaml): partition key ``pk`` = ``datastoreId#imageSetId``, sort key ``sk`` =
``version#by`` (:func:`ahi_verify.ledger.row_key`), so an image set's history is one Query and a retried
write replaces its own row. Global secondary index :data:`BY_VERDICT` (``dv`` = ``datastoreId#verdict``,
``verified_at``) answers "which rows of this data store have verdict V (since T)" without a Scan; every
question of the CLI is one or three Queries of it.

The functions that finalise jobs call ``BatchWriteItem`` only (IAM grants them that and ``PutItem``, never a
read); the CLI reads with ``Query``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .ledger import ROW_VERDICTS, LedgerEntry, VerifiedBy
from .ports import LedgerError
from .report import FrameCounts, Verdict

BY_VERDICT = "by_verdict"
BATCH = 25
"""BatchWriteItem's limit of requests per call."""
UNPROCESSED_ATTEMPTS = 8
"""Calls made for a batch DynamoDB keeps leaving unprocessed (throttled) before giving up."""


def to_item(entry: LedgerEntry) -> dict[str, Any]:
    """The row as a DynamoDB item (low-level attribute values)."""
    pk, sk = entry.key
    f = entry.frames
    item: dict[str, Any] = {
        "pk": {"S": pk},
        "sk": {"S": sk},
        "dv": {"S": f"{entry.datastore_id}#{entry.verdict.value}"},
        "datastore_id": {"S": entry.datastore_id},
        "image_set_id": {"S": entry.image_set_id},
        "verified_at": {"S": entry.verified_at},
        "by": {"S": entry.by},
        "kind": {"S": entry.kind.value},
        "verdict": {"S": entry.verdict.value},
        "frames_total": {"N": str(f.total)},
        "frames_match": {"N": str(f.match)},
        "frames_mismatch": {"N": str(f.mismatch)},
        "frames_error": {"N": str(f.error)},
    }
    if entry.version is not None:
        item["version"] = {"N": str(entry.version)}
    if entry.report_uri is not None:
        item["report_uri"] = {"S": entry.report_uri}
    return item


def from_item(item: dict[str, Any]) -> LedgerEntry:
    """A DynamoDB item back into the row."""

    def n(name: str) -> int:
        return int(item[name]["N"])

    return LedgerEntry(
        datastore_id=item["datastore_id"]["S"],
        image_set_id=item["image_set_id"]["S"],
        version=n("version") if "version" in item else None,
        verified_at=item["verified_at"]["S"],
        by=item["by"]["S"],
        kind=VerifiedBy(item["kind"]["S"]),
        verdict=Verdict(item["verdict"]["S"]),
        frames=FrameCounts(
            total=n("frames_total"), match=n("frames_match"), mismatch=n("frames_mismatch"), error=n("frames_error")
        ),
        report_uri=item["report_uri"]["S"] if "report_uri" in item else None,
    )


class DynamoLedger:
    """:class:`~ahi_verify.ports.Ledger` on a DynamoDB table (a boto3 ``dynamodb`` client)."""

    def __init__(self, client: Any, table: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._db, self._table, self._sleep = client, table, sleep

    def record(self, entries: Iterable[LedgerEntry]) -> int:
        """Write the rows with BatchWriteItem, 25 a call, sending again what DynamoDB leaves unprocessed."""
        written = 0
        batch: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in entries:
            # One request per key in a call (BatchWriteItem refuses duplicates): the last row of a key wins,
            # as it would have had the two been written one after the other.
            batch[entry.key] = to_item(entry)
            if len(batch) == BATCH:
                written += self._write(list(batch.values()))
                batch = {}
        if batch:
            written += self._write(list(batch.values()))
        return written

    def _write(self, items: list[dict[str, Any]]) -> int:
        requests: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in items]
        for attempt in range(UNPROCESSED_ATTEMPTS):
            try:
                answer = self._db.batch_write_item(RequestItems={self._table: requests})
            except (ClientError, BotoCoreError) as exc:
                raise LedgerError(f"the ledger table {self._table} cannot be written: {exc}") from exc
            requests = answer.get("UnprocessedItems", {}).get(self._table, [])
            if not requests:
                return len(items)
            self._sleep(min(0.05 * 2**attempt, 2.0))  # throttled: back off before sending the rest again
        raise LedgerError(
            f"the ledger table {self._table} left {len(requests)} rows unprocessed after {UNPROCESSED_ATTEMPTS} calls"
        )

    def entries(
        self, datastore_id: str, *, since: str | None = None, verdict: Verdict | None = None
    ) -> Iterator[LedgerEntry]:
        """The rows of one verdict (or of every verdict, merged in time order), oldest first."""
        verdicts = (verdict,) if verdict is not None else ROW_VERDICTS
        streams = [self._by_verdict(datastore_id, v, since) for v in verdicts]
        return heapq.merge(*streams, key=lambda e: (e.verified_at, e.image_set_id, e.by))

    def _by_verdict(self, datastore_id: str, verdict: Verdict, since: str | None) -> Iterator[LedgerEntry]:
        condition = "dv = :dv"
        values: dict[str, Any] = {":dv": {"S": f"{datastore_id}#{verdict.value}"}}
        if since is not None:
            condition += " AND verified_at >= :since"
            values[":since"] = {"S": since}
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_VERDICT,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        while True:
            try:
                page = self._db.query(**query)
            except (ClientError, BotoCoreError) as exc:
                raise LedgerError(f"the ledger table {self._table} cannot be read: {exc}") from exc
            for item in page.get("Items", []):
                yield from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def has_row(self, datastore_id: str, image_set_id: str) -> bool:
        """One Query of the image set's partition, for one key."""
        try:
            page = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"{datastore_id}#{image_set_id}"}},
                ProjectionExpression="pk",
                Limit=1,
            )
        except (ClientError, BotoCoreError) as exc:
            raise LedgerError(f"the ledger table {self._table} cannot be read: {exc}") from exc
        return bool(page.get("Items"))


def create_table(client: Any, table: str) -> None:
    """Create the ledger table as template.yaml declares it (keys and index), for tests and the local demo."""
    strings = ("pk", "sk", "dv", "verified_at")
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in strings],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_VERDICT,
                "KeySchema": [
                    {"AttributeName": "dv", "KeyType": "HASH"},
                    {"AttributeName": "verified_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
