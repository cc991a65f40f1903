"""A queue worker process for the SQLite concurrency test in ``test_store_queue.py``.

``python queue_worker_child.py <db> <name> <seed> <sessions>`` claims and
completes batches from the shared database file until every session's queue
is empty, then prints one JSON line with its tallies. Every claim is logged in
``claims_log`` in the claim's own transaction, and every completion writes
``done`` rows in the completion's transaction, so the parent can check that
each batch was completed exactly once and never held by two live claims.

Now and then a worker "stalls": it claims with a zero TTL (the lease is
expired at once, as if the worker had hung) and sleeps before completing, so
another worker may take the batches over and the staller's completion must
then fail.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lash._sqlite import connect
from lash.store.queue import (
    ClaimBoundary,
    QueueClaim,
    QueuedWorkClaimExpired,
    sqlite_claim_ready,
    sqlite_complete,
)

T = TypeVar("T")

LONG_TTL_MS = 60_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def immediate(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in ``BEGIN IMMEDIATE``; commit on success, roll back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(*args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def claim_and_log(
    conn: sqlite3.Connection, name: str, session: str, ttl: int, limit: int
) -> QueueClaim | None:
    """Claim, and log the claim in the same transaction."""
    claim = sqlite_claim_ready(conn, session, name, ClaimBoundary.IDLE, ttl, limit, now_ms())
    if claim is not None:
        conn.executemany(
            "INSERT INTO claims_log (worker, claim_id, token, batch_id, ttl_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            [(name, claim.claim_id, claim.lease_token, b, ttl) for b in claim.batch_ids],
        )
    return claim


def complete_and_record(conn: sqlite3.Connection, name: str, claim: QueueClaim) -> None:
    """Complete the claim and record it, in one transaction (as a turn commit would)."""
    sqlite_complete(conn, [claim.completion()], session_id=claim.session_id)
    conn.executemany(
        "INSERT INTO done (batch_id, worker, claim_id) VALUES (?, ?, ?)",
        [(b, name, claim.claim_id) for b in claim.batch_ids],
    )


def main(db: str, name: str, seed: int, sessions: list[str]) -> None:
    rng = random.Random(seed)
    conn = connect(db, timeout=30.0)
    tallies = {"claims": 0, "completed": 0, "lost": 0, "stalls": 0}
    idle_rounds = 0
    while True:
        session = rng.choice(sessions)
        stall = rng.random() < 0.1
        ttl = 0 if stall else LONG_TTL_MS
        claim = immediate(conn, claim_and_log, conn, name, session, ttl, rng.randint(1, 4))
        if claim is None:
            left = conn.execute("SELECT count(*) FROM queued_work_batches").fetchone()[0]
            if left == 0:
                break
            idle_rounds += 1
            time.sleep(0.002)
            continue
        tallies["claims"] += 1
        if stall:
            tallies["stalls"] += 1
            time.sleep(0.01)
        try:
            immediate(conn, complete_and_record, conn, name, claim)
            tallies["completed"] += len(claim.batch_ids)
        except QueuedWorkClaimExpired:
            tallies["lost"] += 1
    conn.close()
    print(json.dumps({"worker": name, "idle_rounds": idle_rounds, **tallies}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","))
