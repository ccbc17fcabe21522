"""Application audit walk benchmark: the trigger's chunked, checkpointed walk, killed half-way and resumed.

Goal: listing and queueing in constant memory, every image set queued once per run across a kill. The emulator
serves a data store of N image sets without frames over HTTP from this process (SearchImageSets is what is
measured; quotas lifted, as in ``bench.datastore_walk``). A child process runs
:func:`ahi_verify.app.audit_run.walk_audit` with the real ``HealthImagingListing`` (boto3, 50 per page) and:

- a progress table with the methods the walk calls, kept in an SQLite file (conditional puts as
  ``INSERT OR IGNORE``), so the markers of 100,000 image sets are on disk, not in the child's memory, and survive
  the kill, as DynamoDB's would;
- a queue that only appends each work item's image set ID to a file (the parent counts them afterwards).

Pass 1 (timed): a first child is killed (``os._exit``) right after the SQS batch that reaches N/2 messages,
before that batch is marked sent: the worst moment. A second child resumes the run from the checkpoint to the
end. Pass 2 (memory): a fresh run walked under tracemalloc, and the child's peak RSS (VmHWM). Reported: time,
traced peak, peak RSS, image sets queued, distinct, duplicates (at most the batch in flight at the kill), and
the large/small ratios.

    python -m bench.audit_walk [--small 1000] [--large 100000]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ahi_emulator import Emulator, EmulatorServer
from ahi_emulator.metadata import synthetic_study
from ahi_emulator.quotas import NO_QUOTAS
from ahi_emulator.specs import PatientSpec
from ahi_verify.app.audit_run import walk_audit
from ahi_verify.app.events import AuditRequest
from ahi_verify.healthimaging import HealthImagingListing, make_client
from bench.memory import peak_rss_mb

KILLED = 137


class SqliteProgress:
    """The progress-table methods ``walk_audit`` calls, over an SQLite file (a stand-in for DynamoDB)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE IF NOT EXISTS job (id TEXT PRIMARY KEY, state TEXT, pending INTEGER)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queued (id TEXT, image_set TEXT, sent INTEGER, PRIMARY KEY (id, image_set))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS cursor (id TEXT PRIMARY KEY, at REAL, ids TEXT, walked INTEGER)")

    def create(self, job_id: str, datastore_id: str, folder: str, pending: int, **_: Any) -> bool:
        cursor = self._db.execute("INSERT OR IGNORE INTO job VALUES (?, 'planning', ?)", (job_id, pending))
        return cursor.rowcount == 1

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT state, pending FROM job WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else {"state": row[0], "pending": row[1]}

    def record_queued(self, job_id: str, image_set_id: str) -> bool:
        cursor = self._db.execute("INSERT OR IGNORE INTO queued VALUES (?, ?, 0)", (job_id, image_set_id))
        if cursor.rowcount != 1:
            return False
        self._db.execute("UPDATE job SET pending = pending + 1 WHERE id = ?", (job_id,))
        return True

    def was_sent(self, job_id: str, image_set_id: str) -> bool:
        row = self._db.execute("SELECT sent FROM queued WHERE id = ? AND image_set = ?", (job_id, image_set_id))
        found = row.fetchone()
        return bool(found and found[0])

    def mark_queued(self, job_id: str, marker: str) -> None:
        image_set_id = marker.removeprefix("QUEUED#")
        self._db.execute("UPDATE queued SET sent = 1 WHERE id = ? AND image_set = ?", (job_id, image_set_id))

    def cursor(self, job_id: str) -> tuple[float | None, list[str], bool]:
        row = self._db.execute("SELECT at, ids, walked FROM cursor WHERE id = ?", (job_id,)).fetchone()
        return (None, [], False) if row is None else (row[0], json.loads(row[1]), bool(row[2]))

    def checkpoint(self, job_id: str, at: float, ids_at: list[str]) -> None:
        self._db.execute("INSERT OR REPLACE INTO cursor VALUES (?, ?, ?, 0)", (job_id, at, json.dumps(ids_at)))

    def end_walk(self, job_id: str) -> bool:
        cursor = self._db.execute("UPDATE cursor SET walked = 1 WHERE id = ? AND walked = 0", (job_id,))
        if cursor.rowcount == 1:
            self._db.execute("UPDATE job SET pending = pending - 1 WHERE id = ?", (job_id,))
        return cursor.rowcount == 1

    def advance(self, job_id: str, from_state: Any, to_state: Any) -> bool:
        cursor = self._db.execute(
            "UPDATE job SET state = ? WHERE id = ? AND state = ?", (str(to_state), job_id, str(from_state))
        )
        return cursor.rowcount == 1

    def claim_finalisation(self, job_id: str, claimer: str) -> bool:
        return False  # nothing is verified here: the run stays pending


class CountingQueue:
    """Appends each work item's image set ID to a file; ``kill_at`` ends the process right after the batch that
    reaches that many messages, before the walk marks it sent."""

    def __init__(self, path: str, kill_at: int | None) -> None:
        self._file = Path(path).open("a", encoding="ascii")  # noqa: SIM115 - open for the process's life
        self._sent = 0
        self._kill_at = kill_at

    def send(self, items: Any) -> None:
        self._file.write("".join(f"{item.image_set_id}\n" for item in items))
        self._sent += len(items)
        if self._kill_at is not None and self._sent >= self._kill_at:
            self._file.flush()
            os._exit(KILLED)  # like a killed execution environment: nothing after this runs


def _populate(emulator: Emulator, count: int) -> str:
    datastore_id = emulator.create_datastore()
    patient = PatientSpec().to_dicom()
    for n in range(count):
        emulator.publish_image_set(datastore_id, f"{n:032x}", patient, synthetic_study(None, None), [])
    return datastore_id


def child(datastore_id: str, run_id: str, db: str, sent: str, kill_at: int, traced: bool) -> None:
    """One invocation of the walk (until the end, or the kill); print one JSON line."""
    listing = HealthImagingListing(make_client(max_pool_connections=4))
    svc: Any = SimpleNamespace(
        settings=SimpleNamespace(datastore_id=datastore_id),
        progress=SqliteProgress(db),
        reports=SimpleNamespace(put_plan=lambda plan: None),
        audit_queue=CountingQueue(sent, kill_at or None),
        queue=None,
        clock=time.time,
    )
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    result = walk_audit(
        AuditRequest(run_id, "bench"), svc, listing, continue_run=lambda _: None, chunk_image_sets=10**9
    )
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    print(json.dumps({"seconds": seconds, "traced_peak_mb": peak / 2**20, "rss_mb": peak_rss_mb(), **result}))


def _child(server: EmulatorServer, *args: str) -> tuple[int, dict[str, Any] | None, float]:
    env = {**os.environ, **server.client_env()}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.audit_walk", "--child", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode not in (0, KILLED):
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return done.returncode, (json.loads(lines[-1]) if done.returncode == 0 else None), wall


def measure(server: EmulatorServer, datastore_id: str, count: int, work: Path) -> dict[str, Any]:
    """Pass 1: killed at half and resumed; pass 2: a fresh run under tracemalloc."""
    db, sent = str(work / f"{count}.sqlite"), str(work / f"{count}.sent")
    code, _, killed_wall = _child(server, datastore_id, "auditbench1", db, sent, str(count // 2), "0")
    assert code == KILLED, "the first walk was not killed"
    queued_before_kill = len(Path(sent).read_text(encoding="ascii").split())
    code, resumed, resumed_wall = _child(server, datastore_id, "auditbench1", db, sent, "0", "0")
    assert resumed is not None
    counts = collections.Counter(Path(sent).read_text(encoding="ascii").split())
    pending = SqliteProgress(db).get("auditbench1")
    _, traced, _ = _child(server, datastore_id, "auditbench2", db, str(work / f"{count}.traced"), "0", "1")
    assert traced is not None
    return {
        "count": count,
        "seconds": killed_wall + resumed_wall,
        "before_kill": queued_before_kill,
        "distinct": len(counts),
        "duplicates": sum(counts.values()) - len(counts),
        "pending": pending["pending"] if pending else None,
        "traced_peak_mb": traced["traced_peak_mb"],
        "rss_mb": max(resumed["rss_mb"], traced["rss_mb"]),
        "traced_seconds": traced["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one invocation of the walk)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        datastore_id, run_id, db, sent, kill_at, traced = args.child
        child(datastore_id, run_id, db, sent, int(kill_at), traced == "1")
        return
    emulator = Emulator(quotas=NO_QUOTAS)
    stores = {n: _populate(emulator, n) for n in (args.small, args.large)}
    with EmulatorServer(emulator) as server, tempfile.TemporaryDirectory() as work:
        results = [measure(server, stores[n], n, Path(work)) for n in (args.small, args.large)]
    for r in results:
        print(
            f"{r['count']:>7} image sets: killed after {r['before_kill']} queued, resumed; {r['seconds']:7.2f} s "
            f"({r['count'] / r['seconds']:5.0f}/s); distinct queued {r['distinct']}, duplicates {r['duplicates']}, "
            f"pending counted {r['pending']} (walk's own 1 removed); traced peak {r['traced_peak_mb']:.2f} MB; "
            f"child peak RSS {r['rss_mb']:.1f} MB"
        )
        if r["distinct"] != r["count"] or r["pending"] != r["count"]:
            raise SystemExit(f"not every image set was queued and counted exactly once: {r}")
    small, large = results
    print(
        f"large/small: image sets x{large['count'] / small['count']:.0f}, "
        f"time x{large['seconds'] / small['seconds']:.1f}, "
        f"traced peak x{large['traced_peak_mb'] / small['traced_peak_mb']:.2f}, "
        f"peak RSS x{large['rss_mb'] / small['rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
