"""Durable queued work: one suite over the in-memory, SQLite and PostgreSQL queues.

Every behaviour test runs against all three implementations through thin
adapters: ``MemoryQueue``; a real SQLite file with each call in its own
``BEGIN IMMEDIATE`` transaction; a real PostgreSQL server with each call in its
own transaction, each test in a fresh schema. The SQL adapters commit even when
a call raises, so "an error changes nothing" is checked on what the functions
themselves wrote, not on a rollback. PostgreSQL cases skip only when nothing
listens at ``LASH_TEST_POSTGRES_URL``.

Also here: a Hypothesis state machine against a small model, worker processes
racing on one SQLite file, and asyncio workers with separate connections
racing on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from postgres_support import RUN_PREFIX, URL, drop_schemas, unreachable_reason

from lash._sqlite import connect, enable_wal
from lash.kernel.attachments import AttachmentRef
from lash.runtime.queue import Delivery
from lash.store.base import StoreCorruptError, StoreError
from lash.store.queue import (
    CHECKPOINT_MAX,
    DEFAULT_CLAIM_TTL_MS,
    SQLITE_QUEUE_SCHEMA,
    ClaimBoundary,
    ClaimCompletion,
    MemoryQueue,
    QueueClaim,
    QueuedBatch,
    QueuedBatchDraft,
    QueuedCommand,
    QueueDelivery,
    QueuedTurnInput,
    QueuedWorkClaimExpired,
    SlotPolicy,
    postgres_abandon,
    postgres_cancel,
    postgres_claim_batches,
    postgres_claim_ready,
    postgres_complete,
    postgres_enqueue,
    postgres_list,
    postgres_queue_schema,
    postgres_renew,
    sqlite_abandon,
    sqlite_cancel,
    sqlite_claim_batches,
    sqlite_claim_ready,
    sqlite_complete,
    sqlite_enqueue,
    sqlite_list,
    sqlite_renew,
    validate_draft,
)

HERE = Path(__file__).parent
T = TypeVar("T")

T0 = 1_700_000_000_000
"""The tests' clock starts here (epoch ms); time only moves when a test says so."""
TTL = 60_000
EARLY = QueueDelivery.EARLIEST_SAFE_BOUNDARY
AFTER = QueueDelivery.AFTER_CURRENT_TURN
JOIN = SlotPolicy.JOIN
EXCL = SlotPolicy.EXCLUSIVE
IDLE = ClaimBoundary.IDLE
CHECKPOINT = ClaimBoundary.CHECKPOINT
FAR_FUTURE = 4_102_444_800_000

_PG_REASON = unreachable_reason()


def draft(
    session: str = "root",
    text: str = "hi",
    *,
    delivery: QueueDelivery = EARLY,
    slot: SlotPolicy = JOIN,
    key: str | None = None,
    merge: str | None = None,
    at: int = 0,
) -> QueuedBatchDraft:
    return QueuedBatchDraft(
        session_id=session,
        payloads=(QueuedTurnInput(text=text),),
        source_key=key,
        delivery=delivery,
        slot=slot,
        merge_key=merge,
        available_at_ms=at,
    )


def text_of(batch: QueuedBatch) -> str:
    payload = batch.items[0].payload
    assert isinstance(payload, QueuedTurnInput)
    return payload.text


def ids(batches: Sequence[QueuedBatch]) -> list[str]:
    return [b.batch_id for b in batches]


# ---------------------------------------------------------------------- adapters


class MemoryBackend:
    """``MemoryQueue`` as is."""

    name = "memory"

    def __init__(self) -> None:
        self.q = MemoryQueue()

    def enqueue(self, d: QueuedBatchDraft, now: int = T0) -> QueuedBatch:
        return self.q.enqueue(d, now)

    def claim_ready(
        self,
        session: str,
        owner: str = "owner",
        boundary: ClaimBoundary = IDLE,
        ttl: int = TTL,
        limit: int = 10,
        now: int = T0,
    ) -> QueueClaim | None:
        return self.q.claim_ready(session, owner, boundary, ttl, limit, now)

    def claim_batches(
        self,
        session: str,
        batch_ids: Sequence[str],
        owner: str = "owner",
        ttl: int = TTL,
        now: int = T0,
        boundary: ClaimBoundary = IDLE,
    ) -> QueueClaim | None:
        return self.q.claim_batches(session, batch_ids, owner, ttl, now, boundary=boundary)

    def renew(self, claim: QueueClaim, ttl: int = TTL, now: int = T0) -> QueueClaim:
        return self.q.renew(claim, ttl, now)

    def abandon(self, claim: QueueClaim) -> None:
        self.q.abandon(claim)

    def cancel(self, session: str, batch_id: str, now: int = T0) -> QueuedBatch | None:
        return self.q.cancel(session, batch_id, now)

    def list(self, session: str, pending_only: bool = False, now: int = T0) -> list[QueuedBatch]:
        return list(self.q.list(session, pending_only, now))

    def complete(
        self, completions: Sequence[ClaimCompletion], session_id: str | None = None
    ) -> None:
        self.q.complete(completions, session_id=session_id)

    def state(self) -> Any:
        """Everything stored, claim columns included (white-box, for "nothing changed")."""
        q = self.q
        return (
            q._seq,
            dict(q._sources),
            {
                sid: [
                    (
                        e.batch,
                        e.claim_id,
                        e.owner,
                        e.token,
                        e.fencing,
                        e.claimed_at_ms,
                        e.expires_at_ms,
                    )
                    for e in entries.values()
                ]
                for sid, entries in q._sessions.items()
            },
        )

    def close(self) -> None:
        pass


class SqliteBackend(MemoryBackend):
    """The ``sqlite_*`` functions on a real file, each call in ``BEGIN IMMEDIATE``."""

    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = connect(path)
        enable_wal(self.conn)
        self.tx(lambda: [self.conn.execute(ddl) for ddl in SQLITE_QUEUE_SCHEMA])

    def tx(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in ``BEGIN IMMEDIATE`` and COMMIT, even when it raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            return fn()
        finally:
            self.conn.execute("COMMIT")

    def enqueue(self, d: QueuedBatchDraft, now: int = T0) -> QueuedBatch:
        return self.tx(lambda: sqlite_enqueue(self.conn, d, now))

    def claim_ready(
        self,
        session: str,
        owner: str = "owner",
        boundary: ClaimBoundary = IDLE,
        ttl: int = TTL,
        limit: int = 10,
        now: int = T0,
    ) -> QueueClaim | None:
        return self.tx(
            lambda: sqlite_claim_ready(self.conn, session, owner, boundary, ttl, limit, now)
        )

    def claim_batches(
        self,
        session: str,
        batch_ids: Sequence[str],
        owner: str = "owner",
        ttl: int = TTL,
        now: int = T0,
        boundary: ClaimBoundary = IDLE,
    ) -> QueueClaim | None:
        return self.tx(
            lambda: sqlite_claim_batches(
                self.conn, session, batch_ids, owner, ttl, now, boundary=boundary
            )
        )

    def renew(self, claim: QueueClaim, ttl: int = TTL, now: int = T0) -> QueueClaim:
        return self.tx(lambda: sqlite_renew(self.conn, claim, ttl, now))

    def abandon(self, claim: QueueClaim) -> None:
        self.tx(lambda: sqlite_abandon(self.conn, claim))

    def cancel(self, session: str, batch_id: str, now: int = T0) -> QueuedBatch | None:
        return self.tx(lambda: sqlite_cancel(self.conn, session, batch_id, now))

    def list(self, session: str, pending_only: bool = False, now: int = T0) -> list[QueuedBatch]:
        return list(sqlite_list(self.conn, session, pending_only, now))

    def complete(
        self, completions: Sequence[ClaimCompletion], session_id: str | None = None
    ) -> None:
        self.tx(lambda: sqlite_complete(self.conn, completions, session_id=session_id))

    def state(self) -> Any:
        rows = self.conn.execute("SELECT * FROM queued_work_batches ORDER BY enqueue_seq")
        seq = self.conn.execute("SELECT seq FROM sqlite_sequence").fetchall()
        return rows.fetchall(), seq

    def reopen(self) -> SqliteBackend:
        self.close()
        return SqliteBackend(self.path)

    def close(self) -> None:
        self.conn.close()


class PostgresBackend(MemoryBackend):
    """The ``postgres_*`` functions on a real server, each call in its own transaction."""

    name = "postgres"

    def __init__(self, schema: str, *, create: bool = True) -> None:
        import psycopg

        self.schema = schema
        self.runner = asyncio.Runner()
        self.conn: psycopg.AsyncConnection[Any] = self.runner.run(
            psycopg.AsyncConnection.connect(URL, autocommit=True)
        )
        if create:
            self.runner.run(self._create())

    async def _create(self) -> None:
        from psycopg import sql

        await self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        for ddl in postgres_queue_schema(self.schema):
            await self.conn.execute(ddl)

    def tx(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` in a transaction that COMMITs even on a logical error."""

        async def body() -> T:
            failure: Exception | None = None
            async with self.conn.transaction():
                try:
                    result = await fn()
                except (StoreError, ValueError) as exc:
                    failure = exc
            if failure is not None:
                raise failure
            return result

        return self.runner.run(body())

    def enqueue(self, d: QueuedBatchDraft, now: int = T0) -> QueuedBatch:
        return self.tx(lambda: postgres_enqueue(self.conn, self.schema, d, now))

    def claim_ready(
        self,
        session: str,
        owner: str = "owner",
        boundary: ClaimBoundary = IDLE,
        ttl: int = TTL,
        limit: int = 10,
        now: int = T0,
    ) -> QueueClaim | None:
        return self.tx(
            lambda: postgres_claim_ready(
                self.conn, self.schema, session, owner, boundary, ttl, limit, now
            )
        )

    def claim_batches(
        self,
        session: str,
        batch_ids: Sequence[str],
        owner: str = "owner",
        ttl: int = TTL,
        now: int = T0,
        boundary: ClaimBoundary = IDLE,
    ) -> QueueClaim | None:
        return self.tx(
            lambda: postgres_claim_batches(
                self.conn, self.schema, session, batch_ids, owner, ttl, now, boundary=boundary
            )
        )

    def renew(self, claim: QueueClaim, ttl: int = TTL, now: int = T0) -> QueueClaim:
        return self.tx(lambda: postgres_renew(self.conn, self.schema, claim, ttl, now))

    def abandon(self, claim: QueueClaim) -> None:
        self.tx(lambda: postgres_abandon(self.conn, self.schema, claim))

    def cancel(self, session: str, batch_id: str, now: int = T0) -> QueuedBatch | None:
        return self.tx(lambda: postgres_cancel(self.conn, self.schema, session, batch_id, now))

    def list(self, session: str, pending_only: bool = False, now: int = T0) -> list[QueuedBatch]:
        return list(
            self.runner.run(postgres_list(self.conn, self.schema, session, pending_only, now))
        )

    def complete(
        self, completions: Sequence[ClaimCompletion], session_id: str | None = None
    ) -> None:
        self.tx(
            lambda: postgres_complete(self.conn, self.schema, completions, session_id=session_id)
        )

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` with ``{s}`` standing for the test schema."""
        from psycopg import sql

        async def body() -> list[tuple[Any, ...]]:
            statement = sql.SQL(query).format(s=sql.Identifier(self.schema))  # type: ignore[arg-type]
            cur = await self.conn.execute(statement, params)
            return await cur.fetchall() if cur.description else []

        return self.runner.run(body())

    def state(self) -> Any:
        return self.sql("SELECT * FROM {s}.queued_work_batches ORDER BY enqueue_seq")

    def reopen(self) -> PostgresBackend:
        self.close()
        return PostgresBackend(self.schema, create=False)

    def close(self) -> None:
        if not self.conn.closed:
            self.runner.run(self.conn.close())
        self.runner.close()


def pg_schema() -> str:
    return f"{RUN_PREFIX}_q{secrets.token_hex(4)}"


def drop_schema(schema: str) -> None:
    drop_schemas(schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    if request.param == "sqlite":
        b: Any = SqliteBackend(str(tmp_path / "queue.sqlite3"))
        try:
            yield b
        finally:
            b.close()
        return
    if _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    schema = pg_schema()
    pg_backend = PostgresBackend(schema)
    try:
        yield pg_backend
    finally:
        pg_backend.close()
        drop_schema(schema)


# ---------------------------------------------------------------------- conformance cases


def test_source_keys_are_idempotent_and_list_ordered(backend: Any) -> None:
    first = backend.enqueue(draft(text="first", key="source:first"))
    replay = backend.enqueue(draft(text="different replay payload", key="source:first"), T0 + 5)
    second = backend.enqueue(draft(text="second", slot=EXCL))
    other = backend.enqueue(draft("other", "other session", slot=EXCL, key="source:first"))

    assert replay == first  # the original batch, payload and enqueue time unchanged
    assert text_of(replay) == "first"
    assert other.batch_id != first.batch_id  # source keys are per session
    listed = backend.list("root")
    assert ids(listed) == [first.batch_id, second.batch_id]
    assert listed == [first, second]
    assert listed[0].enqueue_seq < listed[1].enqueue_seq < other.enqueue_seq
    assert backend.list("other") == [other]
    assert backend.list("nobody") == []


def test_batches_round_trip_every_field(backend: Any) -> None:
    ref = AttachmentRef(id="ab" * 32, mime="image/png", byte_len=3, width=1, height=2, label="x")
    d = QueuedBatchDraft(
        session_id="s",
        payloads=(
            QueuedTurnInput(text="look ✓", attachments=(ref,)),
            QueuedCommand(kind="reset_session", reason="asked", key="k1"),
            QueuedTurnInput(text=""),
        ),
        source_key="command:reset_session:k1",
        delivery=AFTER,
        slot=EXCL,
        merge_key="group",
        available_at_ms=T0 - 1,
    )
    batch = backend.enqueue(d, T0 + 7)
    assert re.fullmatch(r"qwb:[0-9a-f]{32}", batch.batch_id)
    assert batch.session_id == "s"
    assert batch.enqueued_at_ms == T0 + 7
    assert (batch.source_key, batch.delivery, batch.slot) == (d.source_key, AFTER, EXCL)
    assert (batch.merge_key, batch.available_at_ms) == ("group", T0 - 1)
    assert [i.item_id for i in batch.items] == [f"{batch.batch_id}:item:{i}" for i in range(3)]
    assert tuple(i.payload for i in batch.items) == d.payloads
    assert backend.list("s") == [batch]
    claim = backend.claim_ready("s", now=T0 + 8)
    assert claim is not None
    assert claim.batches == (batch,)
    # A second batch gets another unguessable id and a later sequence number.
    again = backend.enqueue(draft("s"))
    assert again.batch_id != batch.batch_id
    assert again.enqueue_seq > batch.enqueue_seq


def test_the_queue_reuses_the_runtime_delivery_values() -> None:
    assert QueueDelivery is Delivery
    assert [d.value for d in QueueDelivery] == ["earliest_safe_boundary", "after_current_turn"]
    assert [s.value for s in SlotPolicy] == ["join", "exclusive"]
    assert [b.value for b in ClaimBoundary] == ["checkpoint", "idle"]
    assert DEFAULT_CLAIM_TTL_MS == 900_000
    assert CHECKPOINT_MAX == 64
    encoded = msgspec.json.encode(QueuedCommand(kind="refresh_tool_surface", key="k"))
    assert json.loads(encoded) == {
        "type": "session_command",
        "kind": "refresh_tool_surface",
        "key": "k",
    }
    assert json.loads(msgspec.json.encode(QueuedTurnInput(text="t"))) == {
        "type": "turn_input",
        "text": "t",
    }


def test_dedupe_lapses_once_the_batch_is_gone(backend: Any) -> None:
    a = backend.enqueue(draft(text="a", key="k"))
    assert backend.cancel("root", a.batch_id) == a
    b = backend.enqueue(draft(text="b", key="k"))
    assert b.batch_id != a.batch_id
    assert text_of(b) == "b"
    claim = backend.claim_ready("root")
    assert backend.enqueue(draft(text="again", key="k")) == b  # claimed still counts
    backend.complete([claim.completion()])
    c = backend.enqueue(draft(text="c", key="k"))
    assert c.batch_id not in (a.batch_id, b.batch_id)
    assert backend.list("root") == [c]


def test_cancel_removes_only_unclaimed_batches(backend: Any) -> None:
    cancellable = backend.enqueue(draft(text="cancel me", delivery=AFTER, slot=EXCL))
    cancelled = backend.cancel("root", cancellable.batch_id)
    assert cancelled == cancellable
    assert backend.list("root") == []
    assert backend.cancel("root", cancellable.batch_id) is None  # already gone

    claimed = backend.enqueue(draft(text="claimed", delivery=AFTER, slot=EXCL))
    claim = backend.claim_ready("root", limit=1)
    assert claim.batch_ids == (claimed.batch_id,)
    assert backend.list("root", pending_only=True) == []
    assert backend.list("root") == [claimed]
    assert backend.cancel("root", claimed.batch_id) is None
    assert backend.cancel("other", claimed.batch_id) is None  # another session's id
    backend.abandon(claim)
    assert backend.list("root", pending_only=True) == [claimed]
    assert backend.cancel("root", claimed.batch_id) == claimed
    assert backend.list("root") == []


def test_an_expired_claim_is_pending_and_cancellable(backend: Any) -> None:
    batch = backend.enqueue(draft())
    claim = backend.claim_ready("root", ttl=100)
    assert backend.list("root", True, T0 + 99) == []
    assert backend.cancel("root", batch.batch_id, T0 + 99) is None
    assert backend.list("root", True, T0 + 100) == [batch]  # expires_at == now: not live
    assert backend.cancel("root", batch.batch_id, T0 + 100) == batch
    with pytest.raises(QueuedWorkClaimExpired, match=claim.claim_id):
        backend.complete([claim.completion()])


def test_exact_claim_uses_selected_batch_ids(backend: Any) -> None:
    first = backend.enqueue(draft(text="first", delivery=AFTER, slot=EXCL))
    second = backend.enqueue(draft(text="second", delivery=AFTER, slot=EXCL))
    before = backend.state()
    assert backend.claim_batches("root", [second.batch_id]) is None  # cannot skip the head
    assert backend.claim_batches("root", []) is None
    assert backend.claim_batches("root", ["qwb:unknown"]) is None
    assert backend.claim_batches("root", [first.batch_id, second.batch_id]) is None  # exclusive
    assert backend.claim_batches("other", [first.batch_id]) is None
    assert backend.state() == before  # a refused exact claim writes nothing
    assert ids(backend.list("root", True)) == [first.batch_id, second.batch_id]

    claim = backend.claim_batches("root", [first.batch_id], owner="ui", now=T0 + 1)
    assert claim.batch_ids == (first.batch_id,)
    assert (claim.owner_id, claim.claimed_at_ms, claim.fencing_token) == ("ui", T0 + 1, 1)
    assert ids(backend.list("root", True)) == [second.batch_id]
    # With the head claimed, the second batch heads the candidates.
    assert backend.claim_batches("root", [second.batch_id]).batch_ids == (second.batch_id,)


def test_exact_claim_of_a_join_group_and_at_a_checkpoint(backend: Any) -> None:
    a = backend.enqueue(draft(text="a"))
    b = backend.enqueue(draft(text="b"))
    c = backend.enqueue(draft(text="c", delivery=AFTER))
    assert backend.claim_batches("root", [a.batch_id, b.batch_id, c.batch_id]) is None
    assert backend.claim_batches("root", [b.batch_id, a.batch_id]) is None  # order matters
    claim = backend.claim_batches("root", [a.batch_id, b.batch_id], boundary=CHECKPOINT)
    assert claim.batch_ids == (a.batch_id, b.batch_id)
    assert backend.claim_batches("root", [c.batch_id], boundary=CHECKPOINT) is None
    assert backend.claim_batches("root", [c.batch_id]).batch_ids == (c.batch_id,)


def test_claims_respect_boundaries_renewal_and_abandon(backend: Any) -> None:
    after_commit = backend.enqueue(draft(text="after current commit", delivery=AFTER, slot=EXCL))
    earliest = backend.enqueue(draft(text="earliest", slot=EXCL))

    assert backend.claim_ready("root", "owner-a", CHECKPOINT) is None  # head-of-line
    idle_claim = backend.claim_ready("root", "owner-a", IDLE)
    assert idle_claim.batch_ids == (after_commit.batch_id,)
    checkpoint_claim = backend.claim_ready("root", "owner-b", CHECKPOINT)
    assert checkpoint_claim.batch_ids == (earliest.batch_id,)

    backend.abandon(idle_claim)
    reclaimed = backend.claim_ready("root", "owner-c", IDLE, now=T0 + 10)
    assert reclaimed.batch_ids == (after_commit.batch_id,)
    assert reclaimed.fencing_token > idle_claim.fencing_token
    assert reclaimed.claim_id != idle_claim.claim_id
    assert reclaimed.lease_token != idle_claim.lease_token

    renewed = backend.renew(reclaimed, 90_000, T0 + 500)
    assert (renewed.claim_id, renewed.lease_token) == (reclaimed.claim_id, reclaimed.lease_token)
    assert renewed.batches == reclaimed.batches
    assert renewed.claimed_at_ms == reclaimed.claimed_at_ms == T0 + 10
    assert renewed.expires_at_ms == T0 + 500 + 90_000 > reclaimed.expires_at_ms
    # The renewal is stored: the batch stays live until the new expiry.
    # (The checkpoint claim on ``earliest`` has lapsed by then.)
    assert backend.list("root", True, T0 + 10 + TTL) == [earliest]
    assert backend.list("root", True, T0 + 500 + 90_000) == [after_commit, earliest]
    # The abandoned claim cannot be renewed.
    with pytest.raises(QueuedWorkClaimExpired) as info:
        backend.renew(idle_claim)
    assert (info.value.session_id, info.value.claim_id) == ("root", idle_claim.claim_id)


def test_claim_fields_and_fencing(backend: Any) -> None:
    a = backend.enqueue(draft(text="a"))
    b = backend.enqueue(draft(text="b"))
    # Push b's counter ahead: claim it alone twice (a is live-claimed meanwhile).
    hold_a = backend.claim_batches("root", [a.batch_id])
    for _ in range(2):
        backend.abandon(backend.claim_batches("root", [b.batch_id]))
    backend.abandon(hold_a)
    claim = backend.claim_ready("root", "worker-1", IDLE, 250, 5, T0 + 3)
    assert claim.batch_ids == (a.batch_id, b.batch_id)
    assert claim.fencing_token == 2  # the head's counter (1) + 1, whatever b's is
    assert claim.claim_id == f"qwc:{a.enqueue_seq}:2"
    assert re.fullmatch(r"[0-9a-f]{32}", claim.lease_token)
    assert (claim.session_id, claim.owner_id) == ("root", "worker-1")
    assert (claim.claimed_at_ms, claim.expires_at_ms) == (T0 + 3, T0 + 253)
    assert claim.completion() == ClaimCompletion(
        session_id="root",
        claim_id=claim.claim_id,
        lease_token=claim.lease_token,
        batch_ids=(a.batch_id, b.batch_id),
    )
    backend.abandon(claim)
    # Each claim bumps every row it takes: a is at 3 after this, b at 3 (1, 2 alone, 3 joined).
    backend.abandon(hold := backend.claim_batches("root", [a.batch_id]))
    assert hold.fencing_token == 3
    hold_a = backend.claim_batches("root", [a.batch_id])
    alone = backend.claim_ready("root")
    assert alone.batch_ids == (b.batch_id,)
    assert alone.fencing_token == 4
    assert alone.claim_id == f"qwc:{b.enqueue_seq}:4"
    assert hold_a.fencing_token == 4


def test_availability_limits_exclusivity_reclaim_and_sessions(backend: Any) -> None:
    backend.enqueue(draft(text="not ready", slot=EXCL, at=FAR_FUTURE))
    exclusive = backend.enqueue(draft(text="exclusive", slot=EXCL))
    joined = backend.enqueue(draft(text="joined", merge="root"))
    other = backend.enqueue(draft("other", "other session", slot=EXCL))

    claim = backend.claim_ready("root", "owner-a")
    assert claim.batch_ids == (exclusive.batch_id,)
    assert backend.claim_ready("root", "owner-b").batch_ids == (joined.batch_id,)
    assert backend.claim_ready("root", "owner-b") is None  # only future work is left
    assert backend.claim_ready("other", "owner-c").batch_ids == (other.batch_id,)

    source = backend.enqueue(draft("reclaim", "expired claim", slot=EXCL))
    expired = backend.claim_ready("reclaim", "owner-a", ttl=0, limit=1)
    reclaimed = backend.claim_ready("reclaim", "owner-b", limit=1)
    assert reclaimed.batch_ids == (source.batch_id,)
    assert reclaimed.fencing_token > expired.fencing_token

    first, second, third = (backend.enqueue(draft("limited", t, merge="l")) for t in "123")
    limited = backend.claim_ready("limited", limit=2)
    assert limited.batch_ids == (first.batch_id, second.batch_id)
    assert backend.claim_ready("limited", limit=10).batch_ids == (third.batch_id,)

    # Future work becomes claimable once its time has come.
    later = backend.enqueue(draft("timed", at=T0 + 50))
    assert backend.claim_ready("timed", now=T0 + 49) is None
    assert backend.claim_ready("timed", now=T0 + 50).batch_ids == (later.batch_id,)


def test_max_zero_claims_nothing(backend: Any) -> None:
    backend.enqueue(draft())
    before = backend.state()
    assert backend.claim_ready("root", limit=0) is None
    assert backend.state() == before


def test_join_groups_by_delivery_policy_and_merge_key(backend: Any) -> None:
    first = backend.enqueue(draft(text="group a one", merge="a"))
    second = backend.enqueue(draft(text="group a two", merge="a"))
    different_merge = backend.enqueue(draft(text="group b", merge="b"))
    different_delivery = backend.enqueue(draft(text="after", delivery=AFTER, merge="a"))
    no_key = [backend.enqueue(draft(text=f"no key {i}", delivery=AFTER)) for i in range(3)]
    exclusive = backend.enqueue(draft(text="exclusive", delivery=AFTER, slot=EXCL))
    tail = backend.enqueue(draft(text="tail", delivery=AFTER))

    assert backend.claim_ready("root", "a").batch_ids == (first.batch_id, second.batch_id)
    assert backend.claim_ready("root", "b").batch_ids == (different_merge.batch_id,)
    assert backend.claim_ready("root", "c").batch_ids == (different_delivery.batch_id,)
    # No merge key joins no merge key; an exclusive batch ends the group.
    assert backend.claim_ready("root", "d").batch_ids == tuple(ids(no_key))
    assert backend.claim_ready("root", "e").batch_ids == (exclusive.batch_id,)
    assert backend.claim_ready("root", "f").batch_ids == (tail.batch_id,)


def test_ineligible_batches_between_join_candidates_are_skipped(backend: Any) -> None:
    # Rust lash's SQLite semantics, on every backend: batches that are not
    # yet available or are live-claimed are not candidates, so they neither
    # join the group nor end it.
    a = backend.enqueue(draft(text="a"))
    backend.enqueue(draft(text="future, other kind", slot=EXCL, at=FAR_FUTURE))
    backend.enqueue(draft(text="future, same kind", at=FAR_FUTURE))
    held = backend.enqueue(draft(text="held", slot=EXCL))
    c = backend.enqueue(draft(text="c"))
    d = backend.enqueue(draft(text="d", merge="other"))
    hold = backend.claim_batches("root", [a.batch_id])  # a heads; take it alone
    assert hold is not None
    assert backend.claim_ready("root").batch_ids == (held.batch_id,)
    backend.abandon(hold)
    claim = backend.claim_ready("root")
    assert claim.batch_ids == (a.batch_id, c.batch_id)
    assert backend.claim_ready("root").batch_ids == (d.batch_id,)


def test_checkpoint_takes_only_earliest_safe_work_at_the_head(backend: Any) -> None:
    early_1 = backend.enqueue(draft(text="e1"))
    early_2 = backend.enqueue(draft(text="e2"))
    after = backend.enqueue(draft(text="after", delivery=AFTER))
    early_3 = backend.enqueue(draft(text="e3"))
    claim = backend.claim_ready("root", boundary=CHECKPOINT, limit=CHECKPOINT_MAX)
    assert claim.batch_ids == (early_1.batch_id, early_2.batch_id)
    # The after-turn batch now heads the queue and blocks the checkpoint.
    assert backend.claim_ready("root", boundary=CHECKPOINT) is None
    assert backend.claim_ready("root", boundary=IDLE).batch_ids == (after.batch_id,)
    assert backend.claim_ready("root", boundary=CHECKPOINT).batch_ids == (early_3.batch_id,)


def test_completion_is_lease_guarded(backend: Any) -> None:
    first = backend.enqueue(draft(text="join one", merge="joined"))
    second = backend.enqueue(draft(text="join two", merge="joined"))
    claim = backend.claim_ready("root", "owner-a")
    assert claim.batch_ids == (first.batch_id, second.batch_id)

    before = backend.state()
    stale = msgspec.structs.replace(claim.completion(), lease_token=claim.lease_token + ":stale")
    with pytest.raises(QueuedWorkClaimExpired, match="root"):
        backend.complete([stale])
    partial = msgspec.structs.replace(claim.completion(), batch_ids=(first.batch_id,))
    with pytest.raises(QueuedWorkClaimExpired, match="holds 2 batches, not the 1 listed"):
        backend.complete([partial])
    extra = msgspec.structs.replace(
        claim.completion(), batch_ids=(first.batch_id, second.batch_id, "qwb:nope")
    )
    with pytest.raises(QueuedWorkClaimExpired):
        backend.complete([extra])
    swapped = msgspec.structs.replace(claim.completion(), batch_ids=(first.batch_id, "qwb:nope"))
    with pytest.raises(QueuedWorkClaimExpired, match="1 of its 2 batches no longer hold it"):
        backend.complete([swapped])
    with pytest.raises(QueuedWorkClaimExpired, match="another session"):
        backend.complete([claim.completion()], session_id="elsewhere")
    assert backend.state() == before
    assert len(backend.list("root")) == 2

    backend.complete([claim.completion()], session_id="root")
    assert backend.list("root") == []
    with pytest.raises(QueuedWorkClaimExpired):  # completing twice fails
        backend.complete([claim.completion()])
    backend.complete([])  # nothing to complete is fine


def test_expiry_alone_does_not_invalidate_a_claim(backend: Any) -> None:
    batch = backend.enqueue(draft())
    claim = backend.claim_ready("root", ttl=10)
    late = T0 + 1_000
    renewed = backend.renew(claim, 100, late)  # expired, never re-claimed: renewable
    assert renewed.expires_at_ms == late + 100
    assert backend.claim_ready("root", now=late + 99) is None
    backend.complete([claim.completion()])  # and completable
    assert backend.list("root") == []

    batch = backend.enqueue(draft(text="second"))
    old = backend.claim_ready("root", "old", ttl=10)
    new = backend.claim_ready("root", "new", now=T0 + 10)  # took it over
    assert new.batch_ids == (batch.batch_id,)
    assert new.fencing_token == old.fencing_token + 1
    before = backend.state()
    with pytest.raises(QueuedWorkClaimExpired):
        backend.renew(old, TTL, T0 + 11)
    with pytest.raises(QueuedWorkClaimExpired):
        backend.complete([old.completion()])
    backend.abandon(old)  # a no-op: it must not release the new claim
    assert backend.state() == before
    assert backend.list("root", True, T0 + 11) == []
    backend.complete([new.completion()])
    assert backend.list("root") == []


def test_abandon_is_idempotent_and_keeps_the_fencing_counter(backend: Any) -> None:
    backend.enqueue(draft())
    claim = backend.claim_ready("root")
    backend.abandon(claim)
    after_first = backend.state()
    backend.abandon(claim)
    assert backend.state() == after_first
    again = backend.claim_ready("root")
    assert again.fencing_token == claim.fencing_token + 1
    with pytest.raises(QueuedWorkClaimExpired):
        backend.complete([claim.completion()])


def test_completions_are_checked_all_before_any_is_applied(backend: Any) -> None:
    backend.enqueue(draft(text="a", slot=EXCL))
    backend.enqueue(draft(text="b", slot=EXCL))
    good = backend.claim_ready("root", "one")
    bad = backend.claim_ready("root", "two")
    stale = msgspec.structs.replace(bad.completion(), lease_token="0" * 32)
    before = backend.state()
    for order in ([good.completion(), stale], [stale, good.completion()]):
        with pytest.raises(QueuedWorkClaimExpired, match=bad.claim_id):
            backend.complete(order)
        assert backend.state() == before
    backend.complete([good.completion(), bad.completion()])
    assert backend.list("root") == []


def test_queued_wake_is_source_key_idempotent_and_claimed_once(backend: Any) -> None:
    def wake() -> QueuedBatchDraft:
        return draft(
            "target", "process 7 woke", slot=EXCL, key="process:7:event:1:wake", delivery=EARLY
        )

    batch = backend.enqueue(wake())
    assert backend.enqueue(wake()) == batch
    assert len(backend.list("target")) == 1
    claim = backend.claim_ready("target", boundary=CHECKPOINT, limit=CHECKPOINT_MAX)
    assert claim.batch_ids == (batch.batch_id,)
    assert backend.claim_ready("target") is None
    assert backend.enqueue(wake()) == batch  # still there while claimed
    backend.complete([claim.completion()], session_id="target")
    assert backend.list("target") == []
    assert backend.claim_ready("target") is None


def test_enqueue_seq_is_monotonic_across_deletes_and_sessions(backend: Any) -> None:
    seen = []
    for i in range(3):
        batch = backend.enqueue(draft(f"s{i % 2}", f"t{i}"))
        seen.append(batch.enqueue_seq)
        assert backend.cancel(batch.session_id, batch.batch_id) == batch
    last = backend.enqueue(draft("s0"))
    claim = backend.claim_ready("s0")
    backend.complete([claim.completion()])
    seen.append(last.enqueue_seq)
    seen.append(backend.enqueue(draft("s0")).enqueue_seq)
    assert seen == sorted(set(seen))


# ---------------------------------------------------------------------- bad input


BAD_DRAFTS: list[tuple[Callable[[], QueuedBatchDraft], str]] = [
    (lambda: draft(""), "session id"),
    (lambda: draft("   "), "session id"),
    (lambda: draft("a\x00b"), "session id"),
    (lambda: QueuedBatchDraft(session_id="root", payloads=()), "payloads must not be empty"),
    (lambda: draft(key=""), "source_key must not be blank"),
    (lambda: draft(key="  "), "source_key must not be blank"),
    (lambda: draft(key="a\x00"), "source_key must not contain NUL"),
    (lambda: draft(merge=" "), "merge_key must not be blank"),
    (lambda: draft(at=-1), "available_at_ms must be between 0"),
    (lambda: draft(at=2**63), "available_at_ms must be between 0"),
    (lambda: draft(at=True), "available_at_ms must be an integer"),  # type: ignore[arg-type]
    (lambda: draft(at=1.5), "available_at_ms must be an integer"),  # type: ignore[arg-type]
    (lambda: draft(delivery="soon"), "delivery must be one of"),  # type: ignore[arg-type]
    (lambda: draft(slot="shared"), "slot must be one of"),  # type: ignore[arg-type]
    (lambda: draft(text="\ud800"), "lone surrogates"),
    (lambda: draft(text=7), "text must be a string"),  # type: ignore[arg-type]
    (
        lambda: QueuedBatchDraft(session_id="root", payloads=("hello",)),  # type: ignore[arg-type]
        "must be a QueuedTurnInput or QueuedCommand",
    ),
    (
        lambda: QueuedBatchDraft(session_id="root", payloads=(QueuedCommand(kind="x", key=" "),)),
        "command key must not be blank",
    ),
    (
        lambda: QueuedBatchDraft(session_id="root", payloads=(QueuedCommand(kind="", key="k"),)),
        "command kind must not be blank",
    ),
    (
        lambda: QueuedBatchDraft(
            session_id="root",
            payloads=(QueuedTurnInput(text="x", attachments=("ref",)),),  # type: ignore[arg-type]
        ),
        "attachment 0 must be an AttachmentRef",
    ),
]


@pytest.mark.parametrize(("make", "message"), BAD_DRAFTS)
def test_invalid_drafts_are_refused_and_change_nothing(
    backend: Any, make: Callable[[], QueuedBatchDraft], message: str
) -> None:
    backend.enqueue(draft(key="kept"))
    before = backend.state()
    bad = make()
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_draft(bad)
    with pytest.raises(ValueError, match=re.escape(message)):
        backend.enqueue(bad)
    assert backend.state() == before


def test_validate_draft_normalizes_policies() -> None:
    raw = QueuedBatchDraft(
        session_id="s",
        payloads=[QueuedTurnInput(text="x")],  # type: ignore[arg-type]
        delivery="after_current_turn",  # type: ignore[arg-type]
        slot="exclusive",  # type: ignore[arg-type]
    )
    checked = validate_draft(raw)
    assert checked.delivery is AFTER
    assert checked.slot is EXCL
    assert checked.payloads == (QueuedTurnInput(text="x"),)
    fine = draft()
    assert validate_draft(fine) is fine
    with pytest.raises(ValueError, match="expected a QueuedBatchDraft"):
        validate_draft("draft")  # type: ignore[arg-type]


def test_bad_arguments_are_refused_and_change_nothing(backend: Any) -> None:
    batch = backend.enqueue(draft())
    claim = backend.claim_ready("root", ttl=0)
    before = backend.state()
    bad_calls: list[tuple[Callable[[], object], str]] = [
        (lambda: backend.claim_ready("", "o"), "session id"),
        (lambda: backend.claim_ready("root", " "), "owner_id must not be blank"),
        (lambda: backend.claim_ready("root", "o", "sometime"), "boundary must be one of"),
        (lambda: backend.claim_ready("root", "o", IDLE, -1), "ttl_ms must be between"),
        (lambda: backend.claim_ready("root", "o", IDLE, TTL, -1), "max_batches must be between"),
        (lambda: backend.claim_ready("root", "o", IDLE, TTL, 1, -5), "now_ms must be between"),
        (
            lambda: backend.claim_ready("root", "o", IDLE, TTL, True),
            "max_batches must be an integer",
        ),
        (lambda: backend.claim_batches("root", "qwb:x"), "batch_ids must be a sequence"),
        (lambda: backend.claim_batches("root", [batch.batch_id] * 2), "must be distinct"),
        (lambda: backend.claim_batches("root", [""]), "batch id must not be blank"),
        (lambda: backend.renew(claim, -1), "ttl_ms must be between"),
        (lambda: backend.renew("claim"), "expected a QueueClaim"),
        (lambda: backend.abandon(None), "expected a QueueClaim"),
        (lambda: backend.cancel("root", ""), "batch id must not be blank"),
        (lambda: backend.cancel(" ", batch.batch_id), "session id"),
        (lambda: backend.list("root", True, -1), "now_ms must be between"),
        (lambda: backend.complete([claim]), "expected a ClaimCompletion"),
        (
            lambda: backend.complete([msgspec.structs.replace(claim.completion(), batch_ids=())]),
            "lists no batch ids",
        ),
        (
            lambda: backend.complete([claim.completion(), claim.completion()]),
            "listed by more than one completion",
        ),
        (
            lambda: backend.complete([msgspec.structs.replace(claim.completion(), claim_id=" ")]),
            "claim_id must not be blank",
        ),
    ]
    for call, message in bad_calls:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
        assert backend.state() == before, message


# ---------------------------------------------------------------------- durability


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_queue_and_claims_survive_reopen(kind: str, tmp_path: Path) -> None:
    if kind == "postgres" and _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    schema = pg_schema()
    b: Any = (
        SqliteBackend(str(tmp_path / "q.sqlite3")) if kind == "sqlite" else PostgresBackend(schema)
    )
    try:
        kept = b.enqueue(draft(text="kept", key="k", delivery=AFTER, merge="m"))
        claimed = b.enqueue(draft("s2", "claimed"))
        claim = b.claim_ready("s2")
        b = b.reopen()
        assert b.list("root") == [kept]
        assert b.enqueue(draft(text="replay", key="k")) == kept
        assert b.list("s2", True) == []
        assert b.claim_ready("s2") is None
        assert b.renew(claim).claim_id == claim.claim_id
        b.complete([claim.completion()])
        assert b.list("s2") == []
        assert b.enqueue(draft("s3")).enqueue_seq > claimed.enqueue_seq
    finally:
        b.close()
        if kind == "postgres":
            drop_schema(schema)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_completion_rolled_back_with_its_commit_leaves_the_queue(
    kind: str, tmp_path: Path
) -> None:
    if kind == "postgres" and _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    schema = pg_schema()
    b: Any = (
        SqliteBackend(str(tmp_path / "q.sqlite3")) if kind == "sqlite" else PostgresBackend(schema)
    )
    try:
        batch = b.enqueue(draft())
        claim = b.claim_ready("root")
        if kind == "sqlite":
            b.conn.execute("BEGIN IMMEDIATE")
            sqlite_complete(b.conn, [claim.completion()], session_id="root")
            assert b.conn.execute("SELECT count(*) FROM queued_work_batches").fetchone()[0] == 0
            b.conn.execute("ROLLBACK")  # a later step of the commit failed
        else:

            async def body() -> None:
                async with b.conn.transaction(force_rollback=True):
                    await postgres_complete(b.conn, schema, [claim.completion()])
                    assert await postgres_list(b.conn, schema, "root", False, T0) == ()

            b.runner.run(body())
        assert b.list("root") == [batch]
        b.complete([claim.completion()])  # the claim still holds: the retry succeeds
        assert b.list("root") == []
    finally:
        b.close()
        if kind == "postgres":
            drop_schema(schema)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_claim_that_cannot_take_every_row_takes_none(kind: str, tmp_path: Path) -> None:
    # A trigger that silently skips updating one row stands in for a row that
    # changed between the candidate read and the claim's UPDATE.
    if kind == "postgres" and _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    schema = pg_schema()
    b: Any = (
        SqliteBackend(str(tmp_path / "q.sqlite3")) if kind == "sqlite" else PostgresBackend(schema)
    )
    try:
        first = b.enqueue(draft(text="a"))
        second = b.enqueue(draft(text="b"))
        if kind == "sqlite":
            b.conn.execute(
                "CREATE TRIGGER skip_second BEFORE UPDATE ON queued_work_batches"
                f" WHEN OLD.batch_id = '{second.batch_id}' BEGIN SELECT RAISE(IGNORE); END"
            )
        else:
            b.sql(
                "CREATE FUNCTION {s}.skip_second() RETURNS trigger LANGUAGE plpgsql AS $$"
                f" BEGIN IF OLD.batch_id = '{second.batch_id}' THEN RETURN NULL; END IF;"
                " RETURN NEW; END $$"
            )
            b.sql(
                "CREATE TRIGGER skip_second BEFORE UPDATE ON {s}.queued_work_batches"
                " FOR EACH ROW EXECUTE FUNCTION {s}.skip_second()"
            )
        before = b.state()
        assert b.claim_ready("root") is None
        if kind == "sqlite":
            assert b.state() == before  # rolled back to the savepoint: nothing written
        assert b.list("root", True) == [first, second]  # nothing is left claimed
        claim = b.claim_batches("root", [first.batch_id], now=T0 + 1)
        assert claim.batch_ids == (first.batch_id,)
    finally:
        b.close()
        if kind == "postgres":
            drop_schema(schema)


# ---------------------------------------------------------------------- SQLite specifics


def test_sqlite_schema_is_idempotent_and_payloads_are_compact_json(tmp_path: Path) -> None:
    b = SqliteBackend(str(tmp_path / "q.sqlite3"))
    try:
        b.tx(lambda: [b.conn.execute(ddl) for ddl in SQLITE_QUEUE_SCHEMA])  # again: no error
        batch = b.enqueue(
            QueuedBatchDraft(
                session_id="s",
                payloads=(QueuedTurnInput(text="hi"), QueuedCommand(kind="reset_session", key="k")),
            )
        )
        (raw,) = b.conn.execute(
            "SELECT payloads_json FROM queued_work_batches WHERE batch_id = ?", (batch.batch_id,)
        ).fetchone()
        assert raw == (
            '[{"type":"turn_input","text":"hi"},'
            '{"type":"session_command","kind":"reset_session","key":"k"}]'
        )
    finally:
        b.close()


def test_sqlite_writes_refuse_to_run_outside_a_transaction(tmp_path: Path) -> None:
    b = SqliteBackend(str(tmp_path / "q.sqlite3"))
    try:
        with pytest.raises(StoreError, match="BEGIN IMMEDIATE"):
            sqlite_enqueue(b.conn, draft(), T0)
        with pytest.raises(StoreError, match="BEGIN IMMEDIATE"):
            sqlite_claim_ready(b.conn, "root", "o", IDLE, TTL, 1, T0)
        assert sqlite_list(b.conn, "root", False, T0) == ()  # reads need none
    finally:
        b.close()


@pytest.mark.parametrize(
    ("column", "value", "where"),
    [
        ("payloads_json", "not json", "payloads_json"),
        ("payloads_json", '[{"type":"turn_input"}]', "payloads_json[0]"),
        ("payloads_json", '[{"type":"telepathy","text":"x"}]', "payloads_json[0]"),
        ("payloads_json", "[]", "payloads_json"),
        ("delivery", "whenever", "delivery"),
        ("slot", "crowd", "slot"),
    ],
)
def test_sqlite_corrupt_rows_are_named(tmp_path: Path, column: str, value: str, where: str) -> None:
    b = SqliteBackend(str(tmp_path / "q.sqlite3"))
    try:
        batch = b.enqueue(draft("s"))
        b.conn.execute(f"UPDATE queued_work_batches SET {column} = ?", (value,))
        with pytest.raises(StoreCorruptError) as info:
            b.list("s")
        assert info.value.session_id == "s"
        assert info.value.table == "queued_work_batches"
        assert info.value.row == batch.batch_id
        assert info.value.path.startswith(where)
        with pytest.raises(StoreCorruptError):
            b.claim_ready("s")
        b.conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreCorruptError):
            sqlite_claim_ready(b.conn, "s", "o", IDLE, TTL, 1, T0)
        b.conn.execute("ROLLBACK")
    finally:
        b.close()


def test_importing_the_queue_does_not_import_psycopg() -> None:
    code = "import sys, lash.store.queue; print('psycopg' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- PostgreSQL specifics


@pytest.fixture
def pg() -> Iterator[PostgresBackend]:
    if _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    schema = pg_schema()
    b = PostgresBackend(schema)
    try:
        yield b
    finally:
        b.close()
        drop_schema(schema)


def test_postgres_functions_work_in_pipeline_mode(pg: PostgresBackend) -> None:
    async def body() -> None:
        conn, s = pg.conn, pg.schema
        async with conn.pipeline(), conn.transaction():
            a = await postgres_enqueue(conn, s, draft(text="a", key="ka"), T0)
            b = await postgres_enqueue(conn, s, draft(text="b"), T0)
            assert await postgres_enqueue(conn, s, draft(text="x", key="ka"), T0) == a
            claim = await postgres_claim_ready(conn, s, "root", "o", IDLE, TTL, 5, T0)
            assert claim is not None
            assert claim.batch_ids == (a.batch_id, b.batch_id)
            renewed = await postgres_renew(conn, s, claim, TTL, T0 + 1)
            await postgres_complete(conn, s, [renewed.completion()], session_id="root")
            c = await postgres_enqueue(conn, s, draft(text="c"), T0)
            assert await postgres_cancel(conn, s, "root", c.batch_id, T0) == c
        async with conn.pipeline(), conn.transaction():
            assert await postgres_list(conn, s, "root", False, T0) == ()

    pg.runner.run(body())


def test_postgres_schema_ddl_is_idempotent(pg: PostgresBackend) -> None:
    for ddl in postgres_queue_schema(pg.schema):
        pg.runner.run(pg.conn.execute(ddl))
    tables = pg.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg.schema,)
    )
    assert tables == [("queued_work_batches",)]
    with pytest.raises(ValueError, match="schema name must not be blank"):
        postgres_queue_schema("")


def test_postgres_corrupt_rows_are_named(pg: PostgresBackend) -> None:
    batch = pg.enqueue(draft("s"))
    pg.sql("UPDATE {s}.queued_work_batches SET payloads_json = %s", ('[{"type":"turn_input"}]',))
    with pytest.raises(StoreCorruptError) as info:
        pg.list("s")
    assert (info.value.row, info.value.path) == (batch.batch_id, "payloads_json[0]")


def test_postgres_claims_skip_batches_another_transaction_is_claiming(pg: PostgresBackend) -> None:
    import psycopg

    a = pg.enqueue(draft(text="a", slot=EXCL))
    b = pg.enqueue(draft(text="b", slot=EXCL))

    async def body() -> None:
        other = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        try:
            async with pg.conn.transaction():
                mine = await postgres_claim_ready(
                    pg.conn, pg.schema, "root", "one", IDLE, TTL, 5, T0
                )
                assert mine is not None
                assert mine.batch_ids == (a.batch_id,)
                # Not committed yet: a competing claim neither waits nor takes a.
                async with other.transaction():
                    await other.execute("SET LOCAL lock_timeout = '2s'")
                    theirs = await postgres_claim_ready(
                        other, pg.schema, "root", "two", IDLE, TTL, 5, T0
                    )
                    assert theirs is not None
                    assert theirs.batch_ids == (b.batch_id,)
                    nothing = await postgres_claim_ready(
                        other, pg.schema, "root", "two", IDLE, TTL, 5, T0
                    )
                    assert nothing is None
        finally:
            await other.close()

    pg.runner.run(body())
    assert pg.list("root", True) == []

    # A join claim locks only its own rows: a competitor takes the batch after them.
    c, d, e = (pg.enqueue(draft(text=t)) for t in "cde")

    async def joined() -> None:
        other = await psycopg.AsyncConnection.connect(URL, autocommit=True)
        try:
            async with pg.conn.transaction():
                mine = await postgres_claim_ready(
                    pg.conn, pg.schema, "root", "one", IDLE, TTL, 2, T0
                )
                assert mine is not None
                assert mine.batch_ids == (c.batch_id, d.batch_id)
                async with other.transaction():
                    await other.execute("SET LOCAL lock_timeout = '2s'")
                    theirs = await postgres_claim_ready(
                        other, pg.schema, "root", "two", IDLE, TTL, 5, T0
                    )
                    assert theirs is not None
                    assert theirs.batch_ids == (e.batch_id,)
        finally:
            await other.close()

    pg.runner.run(joined())


def test_postgres_concurrent_enqueues_of_one_source_key_make_one_batch(pg: PostgresBackend) -> None:
    import psycopg

    async def one(conn: psycopg.AsyncConnection[Any], gate: asyncio.Event, i: int) -> QueuedBatch:
        async with conn.transaction():
            await gate.wait()
            batch = await postgres_enqueue(conn, pg.schema, draft(text=f"t{i}", key="same"), T0)
            await asyncio.sleep(0.05)  # hold the transaction open so the others must wait
            return batch

    async def body() -> list[QueuedBatch]:
        conns = [await psycopg.AsyncConnection.connect(URL, autocommit=True) for _ in range(4)]
        gate = asyncio.Event()
        try:
            tasks = [asyncio.create_task(one(c, gate, i)) for i, c in enumerate(conns)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(*tasks)
        finally:
            for c in conns:
                await c.close()

    results = pg.runner.run(body())
    assert len({b.batch_id for b in results}) == 1
    assert len({msgspec.json.encode(b) for b in results}) == 1  # the winner's payload for all
    assert pg.list("root") == [results[0]]


# ---------------------------------------------------------------------- state machine


class Model:
    """The queue rules, written as plainly as possible (one list per store)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def session(self, sid: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["batch"].session_id == sid]

    @staticmethod
    def live(r: dict[str, Any], now: int) -> bool:
        return r["token"] is not None and r["expires"] > now

    def candidates(self, sid: str, now: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self.session(sid)
            if r["batch"].available_at_ms <= now and not self.live(r, now)
        ]

    def group(
        self, sid: str, boundary: ClaimBoundary, limit: int, now: int
    ) -> list[dict[str, Any]]:
        cands = self.candidates(sid, now)
        if limit == 0 or not cands:
            return []
        head = cands[0]["batch"]
        if boundary is CHECKPOINT and head.delivery is not EARLY:
            return []
        if head.slot is EXCL:
            return [cands[0]]
        out = [cands[0]]
        for r in cands[1:limit]:
            b = r["batch"]
            if (
                b.slot is not JOIN
                or b.delivery is not head.delivery
                or b.merge_key != head.merge_key
            ):
                break
            out.append(r)
        return out

    def held(self, sid: str, claim_id: str, token: str) -> set[str]:
        return {
            r["batch"].batch_id
            for r in self.session(sid)
            if r["claim_id"] == claim_id and r["token"] == token
        }


SESSIONS = ("a", "b")


def make_machine(factory: Callable[[], Any]) -> type[RuleBasedStateMachine]:
    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.backend = factory()
            self.model = Model()
            self.now = T0
            self.claims: list[QueueClaim] = []

        def teardown(self) -> None:
            self.backend.close()

        @rule(
            sid=st.sampled_from(SESSIONS),
            key=st.sampled_from([None, None, "k1", "k2"]),
            delivery=st.sampled_from(list(QueueDelivery)),
            slot=st.sampled_from(list(SlotPolicy)),
            merge=st.sampled_from([None, "m"]),
            delay=st.sampled_from([0, 0, 0, 7]),
        )
        def enqueue(
            self,
            sid: str,
            key: str | None,
            delivery: QueueDelivery,
            slot: SlotPolicy,
            merge: str | None,
            delay: int,
        ) -> None:
            d = draft(
                sid,
                f"t{len(self.model.rows)}",
                delivery=delivery,
                slot=slot,
                key=key,
                merge=merge,
                at=self.now + delay,
            )
            got = self.backend.enqueue(d, self.now)
            known = [
                r
                for r in self.model.session(sid)
                if key is not None and r["batch"].source_key == key
            ]
            if known:
                assert got == known[0]["batch"]
                return
            assert all(got.enqueue_seq > r["batch"].enqueue_seq for r in self.model.rows)
            assert got.enqueued_at_ms == self.now
            self.model.rows.append(
                {"batch": got, "claim_id": None, "token": None, "expires": 0, "fencing": 0}
            )

        @rule(dt=st.integers(1, 12))
        def tick(self, dt: int) -> None:
            self.now += dt

        def _expect_claim(
            self, got: QueueClaim | None, group: list[dict[str, Any]], sid: str, ttl: int
        ) -> None:
            if not group:
                assert got is None
                return
            assert got is not None
            assert got.batches == tuple(r["batch"] for r in group)
            fencing = group[0]["fencing"] + 1
            assert got.fencing_token == fencing
            assert got.claim_id == f"qwc:{group[0]['batch'].enqueue_seq}:{fencing}"
            assert got.expires_at_ms == self.now + ttl
            for r in group:
                r.update(claim_id=got.claim_id, token=got.lease_token, expires=self.now + ttl)
                r["fencing"] += 1
            self.claims.append(got)

        @rule(
            sid=st.sampled_from(SESSIONS),
            boundary=st.sampled_from(list(ClaimBoundary)),
            limit=st.integers(0, 4),
            ttl=st.sampled_from([0, 5, 30]),
        )
        def claim_ready(self, sid: str, boundary: ClaimBoundary, limit: int, ttl: int) -> None:
            group = self.model.group(sid, boundary, limit, self.now)
            got = self.backend.claim_ready(sid, "w", boundary, ttl, limit, self.now)
            self._expect_claim(got, group, sid, ttl)

        @rule(sid=st.sampled_from(SESSIONS), k=st.integers(1, 3), skip=st.integers(0, 1))
        def claim_batches(self, sid: str, k: int, skip: int) -> None:
            wanted = [r["batch"].batch_id for r in self.model.candidates(sid, self.now)][
                skip : skip + k
            ]
            group = self.model.group(sid, IDLE, len(wanted), self.now)
            if [r["batch"].batch_id for r in group] != wanted:
                group = []
            before = self.backend.state()
            got = self.backend.claim_batches(sid, wanted, "x", 20, self.now)
            self._expect_claim(got, group, sid, 20)
            if got is None:
                assert self.backend.state() == before

        @rule(data=st.data(), ttl=st.sampled_from([0, 10]))
        def renew(self, data: st.DataObject, ttl: int) -> None:
            if not self.claims:
                return
            claim = data.draw(st.sampled_from(self.claims))
            held = self.model.held(claim.session_id, claim.claim_id, claim.lease_token)
            if held == set(claim.batch_ids):
                got = self.backend.renew(claim, ttl, self.now)
                assert got.expires_at_ms == self.now + ttl
                for r in self.model.session(claim.session_id):
                    if r["batch"].batch_id in held:
                        r["expires"] = self.now + ttl
            else:
                with pytest.raises(QueuedWorkClaimExpired):
                    self.backend.renew(claim, ttl, self.now)

        @rule(data=st.data())
        def abandon(self, data: st.DataObject) -> None:
            if not self.claims:
                return
            claim = data.draw(st.sampled_from(self.claims))
            self.backend.abandon(claim)
            for r in self.model.session(claim.session_id):
                if r["claim_id"] == claim.claim_id and r["token"] == claim.lease_token:
                    r.update(claim_id=None, token=None, expires=0)

        @rule(sid=st.sampled_from(SESSIONS), data=st.data())
        def cancel(self, sid: str, data: st.DataObject) -> None:
            options = [r["batch"].batch_id for r in self.model.rows] + ["qwb:unknown"]
            batch_id = data.draw(st.sampled_from(options))
            match = [r for r in self.model.session(sid) if r["batch"].batch_id == batch_id]
            got = self.backend.cancel(sid, batch_id, self.now)
            if match and not self.model.live(match[0], self.now):
                assert got == match[0]["batch"]
                self.model.rows.remove(match[0])
            else:
                assert got is None

        @rule(data=st.data(), tamper=st.booleans())
        def complete(self, data: st.DataObject, tamper: bool) -> None:
            if not self.claims:
                return
            picked = data.draw(st.lists(st.sampled_from(self.claims), min_size=1, max_size=2))
            completions = [c.completion() for c in picked]
            if tamper:
                completions[-1] = msgspec.structs.replace(completions[-1], lease_token="f" * 32)
            listed = [b for c in completions for b in c.batch_ids]
            before = self.backend.state()
            if len(set(listed)) != len(listed):
                with pytest.raises(ValueError, match="more than one completion"):
                    self.backend.complete(completions)
            elif all(
                self.model.held(c.session_id, c.claim_id, c.lease_token) == set(c.batch_ids)
                for c in completions
            ):
                self.backend.complete(completions)
                self.model.rows = [r for r in self.model.rows if r["batch"].batch_id not in listed]
                return
            else:
                with pytest.raises(QueuedWorkClaimExpired):
                    self.backend.complete(completions)
            assert self.backend.state() == before

        @invariant()
        def lists_match(self) -> None:
            for sid in SESSIONS:
                rows = self.model.session(sid)
                assert self.backend.list(sid, False, self.now) == [r["batch"] for r in rows]
                pending = [r["batch"] for r in rows if not self.model.live(r, self.now)]
                assert self.backend.list(sid, True, self.now) == pending

    return QueueMachine


def _sqlite_memory_backend() -> SqliteBackend:
    return SqliteBackend(":memory:")


class _ThrowawayPostgres(PostgresBackend):
    """A backend in its own schema, dropped when closed."""

    def __init__(self) -> None:
        super().__init__(pg_schema())

    def close(self) -> None:
        super().close()
        drop_schema(self.schema)


@pytest.mark.parametrize(
    ("factory", "examples"),
    [(MemoryBackend, 60), (_sqlite_memory_backend, 60), (_ThrowawayPostgres, 20)],
    ids=["memory", "sqlite", "postgres"],
)
def test_queue_matches_the_model(factory: Callable[[], Any], examples: int) -> None:
    if factory is _ThrowawayPostgres and _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    run_state_machine_as_test(
        make_machine(factory),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# ---------------------------------------------------------------------- concurrency

N_WORKERS = 4
N_BATCHES = 200


def _race_drafts(rng: random.Random, sessions: Sequence[str]) -> list[QueuedBatchDraft]:
    out = []
    for i in range(N_BATCHES):
        out.append(
            draft(
                sessions[i % len(sessions)],
                f"work {i}",
                slot=rng.choice([JOIN, JOIN, EXCL]),
                merge=rng.choice([None, "m"]),
                delivery=rng.choice([EARLY, AFTER]),
            )
        )
    return out


def _check_exactly_once(
    enqueued: set[str],
    done: list[tuple[str, str]],
    log: list[tuple[str, str, int]],
) -> None:
    """``done``: (batch_id, claim_id); ``log``: (batch_id, claim_id, ttl_ms) in claim order."""
    done_ids = [b for b, _ in done]
    assert sorted(done_ids) == sorted(enqueued)  # every batch exactly once
    by_batch: dict[str, list[tuple[str, int]]] = {}
    for batch_id, claim_id, ttl in log:
        by_batch.setdefault(batch_id, []).append((claim_id, ttl))
    completed_by = dict(done)
    for batch_id, claims in by_batch.items():
        # Only a lapsed (zero-TTL) claim may ever be followed by another claim of
        # the same batch, and the batch's last claim is the one that completed it.
        assert all(ttl == 0 for _, ttl in claims[:-1]), (batch_id, claims)
        assert completed_by[batch_id] == claims[-1][0]


def test_sqlite_worker_processes_complete_every_batch_exactly_once(tmp_path: Path) -> None:
    db = str(tmp_path / "race.sqlite3")
    sessions = ["s0", "s1", "s2"]
    setup = SqliteBackend(db)
    setup.tx(
        lambda: [
            setup.conn.execute(
                "CREATE TABLE claims_log (seq INTEGER PRIMARY KEY, worker TEXT, claim_id TEXT,"
                " token TEXT, batch_id TEXT, ttl_ms INTEGER)"
            ),
            setup.conn.execute("CREATE TABLE done (batch_id TEXT, worker TEXT, claim_id TEXT)"),
        ]
    )
    rng = random.Random(7)
    enqueued = {setup.enqueue(d).batch_id for d in _race_drafts(rng, sessions)}
    setup.close()

    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "queue_worker_child.py"),
                db,
                f"w{i}",
                str(i),
                ",".join(sessions),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N_WORKERS)
    ]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out))

    conn = sqlite3.connect(db)
    try:
        done = conn.execute("SELECT batch_id, claim_id FROM done").fetchall()
        log = conn.execute(
            "SELECT batch_id, claim_id, ttl_ms FROM claims_log ORDER BY seq"
        ).fetchall()
        left = conn.execute("SELECT count(*) FROM queued_work_batches").fetchone()[0]
    finally:
        conn.close()
    assert left == 0
    _check_exactly_once(enqueued, done, log)
    assert sum(r["completed"] for r in reports) == N_BATCHES
    assert sum(1 for r in reports if r["claims"] > 0) >= 2  # the workers really competed


def test_postgres_workers_complete_every_batch_exactly_once(pg: PostgresBackend) -> None:
    import psycopg

    sessions = ["s0", "s1"]
    pg.sql("CREATE TABLE {s}.done (batch_id text, worker text, claim_id text)")
    pg.sql(
        "CREATE TABLE {s}.claims_log (seq bigint GENERATED ALWAYS AS IDENTITY, worker text,"
        " claim_id text, batch_id text, ttl_ms bigint)"
    )
    rng = random.Random(11)
    enqueued = {pg.enqueue(d).batch_id for d in _race_drafts(rng, sessions)}
    schema = pg.schema
    from psycopg import sql

    log_sql = sql.SQL(
        "INSERT INTO {}.claims_log (worker, claim_id, batch_id, ttl_ms) VALUES (%s, %s, %s, %s)"
    ).format(sql.Identifier(schema))
    done_sql = sql.SQL(
        "INSERT INTO {}.done (batch_id, worker, claim_id) VALUES (%s, %s, %s)"
    ).format(sql.Identifier(schema))
    left_sql = sql.SQL("SELECT count(*) FROM {}.queued_work_batches").format(sql.Identifier(schema))

    async def worker(name: str, seed: int) -> dict[str, int]:
        wrng = random.Random(seed)
        tallies = {"claims": 0, "completed": 0, "lost": 0}
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            while True:
                session = wrng.choice(sessions)
                ttl = 0 if wrng.random() < 0.1 else TTL
                now = time.time_ns() // 1_000_000
                async with conn.transaction():
                    claim = await postgres_claim_ready(
                        conn, schema, session, name, IDLE, ttl, wrng.randint(1, 4), now
                    )
                    if claim is not None:
                        # One statement per row: the claim's transaction records it.
                        async with conn.cursor() as cur:
                            await cur.executemany(
                                log_sql, [(name, claim.claim_id, b, ttl) for b in claim.batch_ids]
                            )
                if claim is None:
                    cur = await conn.execute(left_sql)
                    row = await cur.fetchone()
                    if row is not None and row[0] == 0:
                        return tallies
                    await asyncio.sleep(0.002)
                    continue
                tallies["claims"] += 1
                if ttl == 0:
                    await asyncio.sleep(0.01)  # stalled: another worker may take over
                try:
                    async with conn.transaction():
                        await postgres_complete(
                            conn, schema, [claim.completion()], session_id=session
                        )
                        async with conn.cursor() as cur:
                            await cur.executemany(
                                done_sql, [(b, name, claim.claim_id) for b in claim.batch_ids]
                            )
                    tallies["completed"] += len(claim.batch_ids)
                except QueuedWorkClaimExpired:
                    tallies["lost"] += 1

    async def body() -> list[dict[str, int]]:
        return await asyncio.wait_for(
            asyncio.gather(*(worker(f"w{i}", 100 + i) for i in range(N_WORKERS))), 60
        )

    reports = pg.runner.run(body())
    done = pg.sql("SELECT batch_id, claim_id FROM {s}.done")
    log = pg.sql("SELECT batch_id, claim_id, ttl_ms FROM {s}.claims_log ORDER BY seq")
    assert pg.sql("SELECT count(*) FROM {s}.queued_work_batches") == [(0,)]
    _check_exactly_once(enqueued, [tuple(r) for r in done], [tuple(r) for r in log])
    assert sum(r["completed"] for r in reports) == N_BATCHES
    assert sum(1 for r in reports if r["claims"] > 0) >= 2
