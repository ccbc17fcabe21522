"""DynamoDB: one job record and a completion ledger, so that the last work item of a job is recognised,
and the report and alert decided, exactly once, under concurrent completions and redelivery.

Items (partition ``JOB#<jobId>``):
``JOB``               datastore, folder, state, ``pending`` work items, frame counters, finalisation marks
``ITEM#<itemId>``     a work item completed (conditional put: a redelivered item is not counted twice)
``SPLIT#<imageSetId>``an image set was split into frame ranges (conditional put: ``pending`` grows once);
                      holds the frame count and range size, so a redelivered whole-set message is cut the
                      same way even when its metadata cannot be read again
``QUEUED#<imageSetId>``an audit run queued the image set (conditional put: ``pending`` grows once per run);
                      ``queued`` once the message was sent, so a resumed walk sends it at most once more
``CURSOR``            an audit run's walk checkpoint: the last ``createdAt`` queued, the image sets queued at
                      exactly that instant, and ``walked`` once the listing ended (``pending`` lost the
                      walk's own 1 then)
``HANDBACK#<itemId>`` a work item stopped at its deadline and handed the frames from ``at`` on to a new
                      item (conditional put: ``pending`` grows once, and a redelivery stops at the same frame)

Items (partition ``OPEN#runs``, :data:`OPEN_RUNS`):
``<jobId>``           an audit run or a new-version job that is not known to be done yet, written with its job
                      record in one transaction. The reconciliation lists import jobs through
                      ListDICOMImportJobs but has no such listing for these, so it queries this partition (a
                      Query, O(open runs), no Scan) and deletes the item once the run is done with no alert due.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from ..report import FrameCounts

RETENTION_S = 90 * 24 * 3600  # progress records expire (TTL) after 90 days, as import jobs are listed
STALE_CLAIM_S = 900  # the Lambda timeout ceiling: a claim this old belongs to a finaliser that died
# Conflicts last as long as the other transaction (milliseconds); 5 attempts over ~1.5 s at most ride them out.
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.05


OPEN_RUNS = "OPEN#runs"
"""The partition that indexes the open runs that are not import jobs (see the module docstring)."""


def _pk(job_id: str) -> dict[str, str]:
    return {"S": f"JOB#{job_id}"}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _conditional_failed(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False


def _conflicted(exc: ClientError) -> bool:
    """Another request held the item: nothing of this one was applied, so it can be sent again. botocore
    does not retry these, and a worker that raised would wait a whole visibility timeout."""
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "TransactionConflictException":
        return True
    if code == "TransactionCanceledException":
        reasons = {r.get("Code") for r in exc.response.get("CancellationReasons") or []}
        return "TransactionConflict" in reasons and "ConditionalCheckFailed" not in reasons
    return False


def _when_condition_holds(sleep: Callable[[float], None], request: Callable[[], object]) -> bool:
    """Run a conditional write: True when it was applied, False when its condition did not hold (the race
    the condition exists to settle). A transaction conflict is retried with jittered back-off, up to
    :data:`CONFLICT_ATTEMPTS` attempts; any other failure is raised."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            request()
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            if not _conflicted(exc) or attempt == CONFLICT_ATTEMPTS:
                raise
            sleep(CONFLICT_BACKOFF_S * 2 ** (attempt - 1) * (1 + random.random()))
            continue
        return True
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class JobState(enum.StrEnum):
    """Where a job is: planned and queueing, verifying, being finalised, finished (report and alert done)."""

    PLANNING = "planning"
    RUNNING = "running"
    FINALISING = "finalising"
    DONE = "done"
    UNREADABLE = "unreadable"
    """The reconciliation found the job's output unreadable (recorded once, alerted once, not swept again)."""


class JobProgress:
    """The progress table, through a low-level DynamoDB client.

    ``clock`` gives seconds since the epoch (``time.time``); tests pass their own to age a claim.
    """

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock
        self._sleep = sleep

    def create(
        self,
        job_id: str,
        datastore_id: str,
        folder_uri: str,
        pending: int,
        manifest_sha256: str | None = None,
        *,
        indexed: bool = False,
    ) -> bool:
        """Record a new job in state ``planning`` (with its manifest's SHA-256, to recognise a manifest that
        changes later); False when the job is already known.

        ``indexed``: also index it as an open run (:data:`OPEN_RUNS`), for the jobs the reconciliation cannot
        list through ListDICOMImportJobs (audit runs, new image set versions)."""
        manifest = {"manifest_sha256": {"S": manifest_sha256}} if manifest_sha256 else {}
        return self._new_job(
            job_id,
            datastore_id,
            JobState.PLANNING,
            {
                "folder": {"S": folder_uri},
                "pending": _n(pending),
                "frames_match": _n(0),
                "frames_mismatch": _n(0),
                "frames_error": _n(0),
                **manifest,
            },
            indexed=indexed,
        )

    def record_unreadable(self, job_id: str, datastore_id: str, error_type: str) -> bool:
        """Record a job whose output cannot be read, once; False when the job is already known."""
        return self._new_job(job_id, datastore_id, JobState.UNREADABLE, {"error_type": {"S": error_type}})

    def _new_job(
        self, job_id: str, datastore_id: str, state: JobState, fields: dict[str, Any], *, indexed: bool = False
    ) -> bool:
        """Put a job record that does not exist yet; False when it does (the job is already known). With
        ``indexed``, its open-run index item is put in the same transaction, so neither exists without the
        other whatever dies."""
        now = int(self._clock())
        item = {
            "pk": _pk(job_id),
            "sk": {"S": "JOB"},
            "datastore_id": {"S": datastore_id},
            "state": {"S": state.value},
            "created_at": _n(now),
            "expires_at": _n(now + RETENTION_S),
            **fields,
        }
        if not indexed:
            return _when_condition_holds(
                self._sleep,
                lambda: self._db.put_item(
                    TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
                ),
            )
        index = {
            "pk": {"S": OPEN_RUNS},
            "sk": {"S": job_id},
            "created_at": _n(now),
            "expires_at": _n(now + RETENTION_S),
        }
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"TableName": self._table, "Item": index}},
                ]
            ),
        )

    def open_runs(self) -> list[str]:
        """The audit runs and new-version jobs indexed as open (:data:`OPEN_RUNS`), in job ID order."""
        runs: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            page = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": OPEN_RUNS}},
                ProjectionExpression="sk",
                ConsistentRead=True,
                **({"ExclusiveStartKey": start} if start else {}),
            )
            runs += [item["sk"]["S"] for item in page.get("Items", [])]
            start = page.get("LastEvaluatedKey")
            if not start:
                return runs

    def close_run(self, job_id: str) -> None:
        """Remove a run from the open-run index (it is done and its alert, if any, sent)."""
        self._db.delete_item(TableName=self._table, Key={"pk": {"S": OPEN_RUNS}, "sk": {"S": job_id}})

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job record as plain values, or None."""
        item = self._db.get_item(
            TableName=self._table, Key={"pk": _pk(job_id), "sk": {"S": "JOB"}}, ConsistentRead=True
        ).get("Item")
        return {k: _plain(v) for k, v in item.items()} if item else None

    def advance(self, job_id: str, from_state: JobState, to_state: JobState) -> bool:
        """Move the job from one state to the next; False when it is no longer in ``from_state``
        (the workers may already have finalised a small job before the trigger marks it running)."""
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
                UpdateExpression="SET #s = :to",
                ConditionExpression="#s = :from",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":to": {"S": to_state.value}, ":from": {"S": from_state.value}},
            ),
        )

    def record_split(self, job_id: str, image_set_id: str, extra_items: int, total_frames: int, per_item: int) -> bool:
        """Count the extra work items of a split image set, once; False if it was already counted."""
        return self._transact(
            job_id,
            f"SPLIT#{image_set_id}",
            "ADD pending :extra",
            {":extra": _n(extra_items)},
            {"total_frames": _n(total_frames), "per_item": _n(per_item)},
        )

    def split_of(self, job_id: str, image_set_id: str) -> tuple[int, int, bool] | None:
        """``(total frames, frames per item, queued)`` of an image set already split, or None; ``queued``
        says the other ranges were sent (see :meth:`mark_queued`)."""
        marker = self._marker(job_id, f"SPLIT#{image_set_id}")
        if marker is None:
            return None
        return int(marker["total_frames"]), int(marker["per_item"]), bool(marker.get("queued"))

    def mark_queued(self, job_id: str, marker: str) -> None:
        """Remember that the work items a split (``SPLIT#<imageSetId>``) or a hand-back (``HANDBACK#<itemId>``)
        created were sent, so a redelivery does not send them again: a second copy of a work item would run
        beside the first, and whichever part is written first stands."""
        self._db.update_item(
            TableName=self._table,
            Key={"pk": _pk(job_id), "sk": {"S": marker}},
            UpdateExpression="SET queued = :yes",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )

    def record_handback(self, job_id: str, item_id: str, rest: tuple[int, int]) -> tuple[int, int]:
        """Count the work item that continues ``item_id`` with the frames ``rest`` (``[start, end)``), once;
        return the range recorded, which is the first one when a redelivery got there before."""
        fields = {"at": _n(rest[0]), "end": _n(rest[1])}
        if self._transact(job_id, f"HANDBACK#{item_id}", "ADD pending :one", {":one": _n(1)}, fields):
            return rest
        recorded = self.handed_back(job_id, item_id)
        if recorded is None:  # pragma: no cover - the conditional put failed, so the marker exists
            raise RuntimeError(f"hand-back of work item {item_id} neither recorded nor found")
        return recorded[0], recorded[1]

    def handed_back(self, job_id: str, item_id: str) -> tuple[int, int, bool] | None:
        """The frames ``[start, end)`` a work item handed on to another item, and whether that item was sent,
        or None."""
        marker = self._marker(job_id, f"HANDBACK#{item_id}")
        return None if marker is None else (int(marker["at"]), int(marker["end"]), bool(marker.get("queued")))

    def item_done(self, job_id: str, item_id: str) -> bool:
        """True when the work item's completion has been counted."""
        return self._marker(job_id, f"ITEM#{item_id}") is not None

    def _marker(self, job_id: str, marker: str) -> dict[str, Any] | None:
        item = self._db.get_item(
            TableName=self._table, Key={"pk": _pk(job_id), "sk": {"S": marker}}, ConsistentRead=True
        ).get("Item")
        return {k: _plain(v) for k, v in item.items()} if item else None

    def complete_item(self, job_id: str, item_id: str, counts: FrameCounts) -> bool:
        """Mark one work item done and add its frame counts, once; False if it was already done."""
        return self._transact(
            job_id,
            f"ITEM#{item_id}",
            "ADD pending :minus_one, frames_match :m, frames_mismatch :x, frames_error :e",
            {
                ":minus_one": _n(-1),
                ":m": _n(counts.match),
                ":x": _n(counts.mismatch),
                ":e": _n(counts.error),
            },
        )

    def _transact(
        self, job_id: str, marker: str, update: str, values: dict[str, Any], fields: dict[str, Any] | None = None
    ) -> bool:
        now = int(self._clock())
        item = {"pk": _pk(job_id), "sk": {"S": marker}, "expires_at": _n(now + RETENTION_S), **(fields or {})}
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": _pk(job_id), "sk": {"S": "JOB"}},
                            "UpdateExpression": update,
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": values,
                        }
                    },
                ]
            ),
        )

    def record_queued(self, run_id: str, image_set_id: str) -> bool:
        """Count one image set of an audit run as pending, once per run; False if it was already counted."""
        return self._transact(run_id, f"QUEUED#{image_set_id}", "ADD pending :one", {":one": _n(1)})

    def was_sent(self, run_id: str, image_set_id: str) -> bool:
        """Whether the audit run's work item for the image set was sent (:meth:`mark_queued` ``QUEUED#<id>``)."""
        marker = self._marker(run_id, f"QUEUED#{image_set_id}")
        return bool(marker and marker.get("queued"))

    def cursor(self, run_id: str) -> tuple[float | None, list[str], bool]:
        """The audit run's walk checkpoint: ``(createdAt reached, image sets queued at that instant, walked)``."""
        marker = self._marker(run_id, "CURSOR")
        if marker is None:
            return None, [], False
        at = marker.get("at")
        ids = marker.get("ids_at")
        return (
            (float(at) if at is not None else None),
            sorted(ids) if isinstance(ids, set) else [],
            bool(marker.get("walked")),
        )

    def walk_saved_at(self, run_id: str) -> int | None:
        """When the audit run's walk last checkpointed (epoch seconds), or None before its first page."""
        marker = self._marker(run_id, "CURSOR")
        return None if marker is None else int(marker["saved_at"])

    def checkpoint(self, run_id: str, at: float, ids_at: list[str]) -> None:
        """Save the walk's cursor: everything created before ``at``, and ``ids_at`` created at it, is queued.

        ``at`` is stored as the decimal text of the float (epoch seconds), so it comes back exactly."""
        names = {"ids_at": {"SS": sorted(set(ids_at))}} if ids_at else {}
        # A walk that already ended keeps its end: a late duplicate walker cannot move the cursor back.
        _when_condition_holds(
            self._sleep,
            lambda: self._db.put_item(
                TableName=self._table,
                Item={
                    "pk": _pk(run_id),
                    "sk": {"S": "CURSOR"},
                    "at": {"S": repr(at)},
                    "saved_at": _n(int(self._clock())),
                    "expires_at": _n(int(self._clock()) + RETENTION_S),
                    **names,
                },
                ConditionExpression="attribute_not_exists(walked)",
            ),
        )

    def end_walk(self, run_id: str) -> bool:
        """The listing ended: the walk's own pending 1 is removed, once; False when it already was."""
        now = int(self._clock())
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": _pk(run_id), "sk": {"S": "CURSOR"}},
                            "UpdateExpression": "SET walked = :yes, saved_at = :now, expires_at = :exp",
                            "ConditionExpression": "attribute_not_exists(walked)",
                            "ExpressionAttributeValues": {
                                ":yes": {"BOOL": True},
                                ":now": _n(now),
                                ":exp": _n(now + RETENTION_S),
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": _pk(run_id), "sk": {"S": "JOB"}},
                            "UpdateExpression": "ADD pending :minus_one",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":minus_one": _n(-1)},
                        }
                    },
                ]
            ),
        )

    def claim_finalisation(self, job_id: str, claimer: str) -> bool:
        """Claim the right to write the report and send the alert: only when nothing is pending, only once.

        ``pending`` is below zero only when a work item completed after the reconciliation abandoned the job.

        A claim older than :data:`STALE_CLAIM_S` (longer than any function can run) may be taken over, so a
        finaliser that died is finished by the next delivery; a younger one never is, so duplicate deliveries
        arriving together cannot both finalise.
        """
        now = int(self._clock())
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
                UpdateExpression="SET finalised_by = :c, claimed_at = :now, #s = :finalising",
                ConditionExpression=(
                    "attribute_exists(pk) AND pending <= :zero AND attribute_not_exists(finalised_at) "
                    "AND (attribute_not_exists(claimed_at) OR claimed_at < :stale)"
                ),
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":c": {"S": claimer},
                    ":zero": _n(0),
                    ":finalising": {"S": JobState.FINALISING.value},
                    ":now": _n(now),
                    ":stale": _n(now - STALE_CLAIM_S),
                },
            ),
        )

    def record_changed_manifest(self, job_id: str, manifest_sha256: str) -> bool:
        """Remember a manifest whose content differs from the planned one; True the first time it is seen
        (so each changed content is alerted once, whatever is redelivered)."""
        return _when_condition_holds(
            self._sleep,
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
                UpdateExpression="ADD changed_manifests :sha",
                ConditionExpression="attribute_exists(pk) AND NOT contains(changed_manifests, :one)",
                ExpressionAttributeValues={":sha": {"SS": [manifest_sha256]}, ":one": {"S": manifest_sha256}},
            ),
        )

    def mark_alert_sent(self, job_id: str, message_id: str) -> None:
        """Remember the alert, so a retried finalisation or reconciliation does not send it again."""
        self._db.update_item(
            TableName=self._table,
            Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
            UpdateExpression="SET alert_message_id = :m REMOVE alert_due",
            ExpressionAttributeValues={":m": {"S": message_id}},
        )

    def mark_finalised(self, job_id: str, report_uri: str, verdict: str, *, alert_due: bool = False) -> None:
        """The job is done: its report is written and its alert decided (``alert_due``: an alert is kept
        beside the report and not yet published; the reconciliation sends it if the finaliser could not)."""
        due = ", alert_due = :due" if alert_due else ""
        values = {":due": {"BOOL": True}} if alert_due else {}
        self._db.update_item(
            TableName=self._table,
            Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
            UpdateExpression=f"SET finalised_at = :t, report = :r, verdict = :v, #s = :done{due}",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":t": _n(int(self._clock())),
                ":r": {"S": report_uri},
                ":v": {"S": verdict},
                ":done": {"S": JobState.DONE.value},
                **values,
            },
        )

    def abandon(self, job_id: str, why: str) -> int | None:
        """Finish a job that stayed open past its deadline: nothing is pending any more, and ``why`` is kept
        for its report. Returns the work items that had not completed, or None when the job was finished
        meanwhile (the condition lets exactly one sweep through, and never a job already finalised)."""
        record = self.get(job_id)
        if record is None or record.get("finalised_at") is not None:
            return None
        pending = int(record.get("pending", 0))
        applied = _when_condition_holds(
            self._sleep,
            lambda: self._db.update_item(
                TableName=self._table,
                Key={"pk": _pk(job_id), "sk": {"S": "JOB"}},
                UpdateExpression="SET pending = :zero, abandoned_items = :p, abandoned = :why",
                ConditionExpression="pending = :p AND attribute_not_exists(finalised_at)",
                ExpressionAttributeValues={":zero": _n(0), ":p": _n(pending), ":why": {"S": why}},
            ),
        )
        return pending if applied else None


def _plain(value: Mapping[str, Any]) -> Any:
    (kind, raw), *_ = value.items()
    if kind == "N":
        return int(raw)
    if kind == "BOOL":
        return bool(raw)
    if kind == "SS":
        return set(raw)
    return raw
