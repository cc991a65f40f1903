"""The shared PostgreSQL store (Durable tier), on psycopg 3 with an async connection pool.

One PostgreSQL schema holds many sessions and is shared by any number of
worker processes. A commit is one transaction that first locks the session's
head row (``SELECT ... FOR UPDATE``), so commits to one session are serialized
while commits to different sessions run in parallel; the stamp check, the
revision compare-and-set and the appends then run under that lock. Statements
are pipelined and the writes are one statement: a commit to an existing session
costs two network round trips (lock and read; write and ``COMMIT``), a
session's first commit three. Loads read one ``REPEATABLE READ`` snapshot.

Session state blobs (``state``: one row per session and name, with the value's
SHA-256 digest) and the metadata row (``session_meta``, keyed by session id, so
it may exist before the session's head does) are written by that same write
statement; a blob whose digest is unchanged is not rewritten.

Messages are stored exactly as the SQLite store stores them, in a ``bytea``
column: compact JSON without derivable part ids, zlib-compressed when that
saves space. ``bytea`` rather than ``jsonb`` because the compressed form is
binary, the server need not parse JSON it never queries, and ``jsonb`` takes
more room than compressed text; a row is plain JSON exactly when its first byte
is ``{`` (a zlib stream never starts with it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..kernel.codec import encode
from ..kernel.llm import LlmUsage
from ..kernel.messages import Message
from ..runtime.effects import DurabilityTier
from . import queue
from ._codec import (
    commit_messages,
    decode_message,
    decode_meta,
    decode_record,
    decode_row,
    decode_usage_rows,
    encode_message,
    encode_meta,
    encode_record,
    pack,
    pack_state,
    sum_usage,
    unpack_state,
)
from ._queue_ops import QueueOps
from .base import (
    CommitResult,
    CommittedTurn,
    GraphError,
    GraphNode,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    StoreCorruptError,
    StoredSession,
    StoreError,
    StoreSchemaError,
    TurnCommitConflict,
    check_commit,
    check_limit,
    check_meta,
    check_node_ids,
    check_session_id,
    check_turn_id,
)
from .graph import hidden_subtree, stored_path
from .queue import postgres_complete, postgres_queue_schema

__all__ = ["SCHEMA_VERSION", "PostgresSchemaError", "PostgresStore"]

SCHEMA_VERSION = 2
"""The schema version this module writes and reads; other versions are refused."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BEGIN_SNAPSHOT = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_LOCK_CLASS = 0x6C617368
"""The first key ("lash") of the advisory lock that serializes schema creation."""

_DDL: tuple[LiteralString, ...] = (
    """CREATE TABLE {s}.meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    # ``sid`` is a compact surrogate key, so message rows never repeat the session id.
    """CREATE TABLE {s}.sessions (
        sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id text NOT NULL UNIQUE,
        revision bigint NOT NULL CHECK (revision > 0),
        turn_index bigint NOT NULL,
        iteration bigint NOT NULL,
        frame_id text,
        leaf text,
        next_seq bigint NOT NULL DEFAULT 0
    )""",
    # The session graph: one row per node (= message), keyed by its id, with its
    # parent (NULL for the root), commit order ``seq`` and a tombstone flag.
    """CREATE TABLE {s}.messages (
        sid bigint NOT NULL REFERENCES {s}.sessions (sid),
        node_id text NOT NULL,
        seq bigint NOT NULL,
        parent text,
        dead boolean NOT NULL DEFAULT false,
        message_json bytea NOT NULL,
        PRIMARY KEY (sid, node_id)
    )""",
    # One row per (session, source, model), summed on upsert; ``usage_id`` keeps
    # first-seen order, as the in-memory store does.
    """CREATE TABLE {s}.usage (
        usage_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sid bigint NOT NULL REFERENCES {s}.sessions (sid),
        source text NOT NULL,
        model text NOT NULL,
        usage_json text NOT NULL,
        UNIQUE (sid, source, model)
    )""",
    """CREATE TABLE {s}.turn_stamps (
        sid bigint NOT NULL REFERENCES {s}.sessions (sid),
        turn_id text NOT NULL,
        commit_hash bytea NOT NULL,
        revision bigint NOT NULL,
        record bytea,
        PRIMARY KEY (sid, turn_id)
    )""",
)

_ADDED_DDL: tuple[LiteralString, ...] = (
    # Named session-state blobs: the value's SHA-256 ``digest`` (which lets a
    # commit skip an unchanged blob and a load detect a damaged one), and the
    # value as given or zlib-compressed.
    """CREATE TABLE IF NOT EXISTS {s}.state (
        sid bigint NOT NULL REFERENCES {s}.sessions (sid),
        name text NOT NULL,
        digest bytea NOT NULL,
        compressed boolean NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (sid, name)
    )""",
    # Keyed by the session id itself: metadata may be saved before the first commit.
    """CREATE TABLE IF NOT EXISTS {s}.session_meta (
        session_id text PRIMARY KEY,
        created_at_ms bigint NOT NULL,
        meta_json text NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS session_meta_created
        ON {s}.session_meta (created_at_ms, session_id)""",
)
"""Tables added within schema version 2; idempotent, so a schema without them gains them."""

_ADDED_RELATIONS = frozenset({"state", "session_meta", "session_meta_created"})
"""What ``_ADDED_DDL`` creates; when all exist an open takes no lock."""


class PostgresSchemaError(StoreSchemaError):
    """The PostgreSQL schema holds something this library does not read; it was left untouched."""

    def __init__(self, schema: str, message: str, *, found: str | None = None) -> None:
        super().__init__(
            f"PostgreSQL schema {schema!r}", message, found=found, expected=SCHEMA_VERSION
        )
        self.schema = schema


class _Statements:
    """Every statement of one schema, rendered once; values are always parameters."""

    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)

        def q(text: LiteralString) -> bytes:
            return sql.SQL(text).format(s=ident).as_bytes(None)

        self.ddl = tuple(q(d) for d in _DDL)
        self.added_ddl = tuple(q(d) for d in _ADDED_DDL)
        self.create_schema = q("CREATE SCHEMA {s}")
        self.read_version = q("SELECT value FROM {s}.meta WHERE key = 'schema_version'")
        self.write_version = q("INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s)")
        # commit, round 1: lock the head, then (a later statement, so a fresh
        # snapshot taken after the lock) read the stamp, last seq and prior usage.
        self.lock = q("SELECT sid, revision FROM {s}.sessions WHERE session_id = %s FOR UPDATE")
        self.info = q(
            "SELECT h.leaf, h.next_seq,"
            " (SELECT array_agg(m.node_id) FROM {s}.messages m"
            "  WHERE m.sid = h.sid AND m.node_id = ANY(%s::text[])),"
            " EXISTS (SELECT 1 FROM {s}.messages m"
            "  WHERE m.sid = h.sid AND m.node_id = %s AND NOT m.dead),"
            " EXISTS (SELECT 1 FROM {s}.messages m"
            "  WHERE m.sid = h.sid AND m.node_id = %s AND NOT m.dead),"
            " t.commit_hash, t.revision,"
            " (SELECT array_agg(ARRAY[u.source, u.model, u.usage_json]) FROM {s}.usage u"
            "  WHERE u.sid = h.sid"
            "  AND (u.source, u.model) IN (SELECT * FROM unnest(%s::text[], %s::text[])))"
            " FROM {s}.sessions h"
            " LEFT JOIN {s}.turn_stamps t ON t.sid = h.sid AND t.turn_id = %s"
            " WHERE h.session_id = %s"
        )
        self.create = q(
            "INSERT INTO {s}.sessions (session_id, revision, turn_index, iteration, frame_id)"
            " VALUES (%s, 1, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING RETURNING sid"
        )
        # commit, round 2: every write in one statement; returns the rows written.
        self.write = q(
            "WITH bump AS ("
            "  UPDATE {s}.sessions SET revision = %(revision)s, turn_index = %(turn_index)s,"
            "  iteration = %(iteration)s, frame_id = %(frame_id)s, leaf = %(leaf)s,"
            "  next_seq = %(after_seq)s"
            "  WHERE sid = %(sid)s RETURNING 1"
            "), appended AS ("
            "  INSERT INTO {s}.messages (sid, node_id, seq, parent, message_json)"
            "  SELECT %(sid)s, u.n, %(next_seq)s::bigint + u.o - 1, u.p, u.m"
            "  FROM unnest(%(ids)s::text[], %(parents)s::text[], %(blobs)b::bytea[])"
            "  WITH ORDINALITY AS u(n, p, m, o) RETURNING 1"
            "), summed AS ("
            "  INSERT INTO {s}.usage (sid, source, model, usage_json)"
            "  SELECT %(sid)s, u.source, u.model, u.j"
            "  FROM unnest(%(sources)s::text[], %(models)s::text[], %(usage)s::text[])"
            "  WITH ORDINALITY AS u(source, model, j, o) ORDER BY u.o"
            "  ON CONFLICT (sid, source, model) DO UPDATE SET usage_json = excluded.usage_json"
            "  RETURNING 1"
            "), stamped AS ("
            "  INSERT INTO {s}.turn_stamps (sid, turn_id, commit_hash, revision, record)"
            "  SELECT %(sid)s, %(turn_id)s, %(commit_hash)b, %(revision)s, %(record)b"
            "  WHERE %(turn_id)s::text IS NOT NULL RETURNING 1"
            "), kept AS ("
            "  INSERT INTO {s}.state (sid, name, digest, compressed, data)"
            "  SELECT %(sid)s, u.n, u.d, u.c, u.v"
            "  FROM unnest(%(state_names)s::text[], %(digests)b::bytea[],"
            "  %(compressed)s::boolean[], %(values)b::bytea[]) AS u(n, d, c, v)"
            "  ON CONFLICT (sid, name) DO UPDATE SET digest = excluded.digest,"
            "  compressed = excluded.compressed, data = excluded.data"
            "  WHERE state.digest IS DISTINCT FROM excluded.digest RETURNING 1"
            "), dropped AS ("
            "  DELETE FROM {s}.state WHERE sid = %(sid)s AND name = ANY(%(dropped)s::text[])"
            "  RETURNING 1"
            "), described AS ("
            "  INSERT INTO {s}.session_meta (session_id, created_at_ms, meta_json)"
            "  SELECT %(meta_id)s::text, %(meta_at)s::bigint, %(meta_json)s::text"
            "  WHERE %(meta_json)s::text IS NOT NULL"
            "  ON CONFLICT (session_id) DO NOTHING RETURNING 1"
            ") SELECT (SELECT count(*) FROM bump) + (SELECT count(*) FROM appended)"
            " + (SELECT count(*) FROM summed) + (SELECT count(*) FROM stamped)"
            " + (SELECT count(*) FROM kept) + (SELECT count(*) FROM dropped)"
            " + (SELECT count(*) FROM described)"
        )
        # load: one REPEATABLE READ snapshot
        self.head = q(
            "SELECT revision, turn_index, iteration, frame_id, leaf"
            " FROM {s}.sessions WHERE session_id = %s"
        )
        self.messages = q(
            "SELECT m.node_id, m.parent, m.message_json"
            " FROM {s}.messages m JOIN {s}.sessions h ON h.sid = m.sid"
            " WHERE h.session_id = %s AND NOT m.dead ORDER BY m.seq"
        )
        self.clear = q("DELETE FROM {s}.messages WHERE sid = %s")
        self.turn = q(
            "SELECT t.sid, t.commit_hash, t.revision, t.record"
            " FROM {s}.turn_stamps t JOIN {s}.sessions h ON h.sid = t.sid"
            " WHERE h.session_id = %s AND t.turn_id = %s"
        )
        self.turn_messages = q(
            "SELECT node_id, message_json FROM {s}.messages"
            " WHERE sid = %s AND node_id >= %s AND node_id < %s AND NOT dead ORDER BY seq"
        )
        self.lock_head = q("SELECT sid, leaf FROM {s}.sessions WHERE session_id = %s FOR UPDATE")
        self.live_parents = q(
            "SELECT node_id, parent FROM {s}.messages WHERE sid = %s AND NOT dead ORDER BY seq"
        )
        self.mark_dead = q(
            "UPDATE {s}.messages SET dead = true WHERE sid = %s AND node_id = ANY(%s::text[])"
        )
        self.sweep = q(
            "WITH d AS (DELETE FROM {s}.messages WHERE sid = %s AND dead RETURNING 1)"
            " SELECT count(*) FROM d"
        )
        self.usage = q(
            "SELECT u.source, u.model, u.usage_json"
            " FROM {s}.usage u JOIN {s}.sessions h ON h.sid = u.sid"
            " WHERE h.session_id = %s ORDER BY u.usage_id"
        )
        self.state = q(
            "SELECT t.name, t.digest, t.compressed, t.data"
            " FROM {s}.state t JOIN {s}.sessions h ON h.sid = t.sid"
            " WHERE h.session_id = %s"
        )
        # session metadata, independent of the head
        self.put_meta = q(
            "INSERT INTO {s}.session_meta (session_id, created_at_ms, meta_json)"
            " VALUES (%s, %s, %s) ON CONFLICT (session_id) DO UPDATE"
            " SET created_at_ms = excluded.created_at_ms, meta_json = excluded.meta_json"
        )
        self.add_meta = q(
            "INSERT INTO {s}.session_meta (session_id, created_at_ms, meta_json)"
            " VALUES (%s, %s, %s) ON CONFLICT (session_id) DO NOTHING RETURNING 1"
        )
        self.session_meta = q(
            "SELECT session_id, created_at_ms, meta_json FROM {s}.session_meta"
            " WHERE session_id = %s"
        )
        self.list_meta = q(
            "SELECT session_id, created_at_ms, meta_json FROM {s}.session_meta"
            " ORDER BY created_at_ms, session_id LIMIT %s"
        )


class PostgresStore(QueueOps):
    """A durable session store in one PostgreSQL schema, shared by many workers.

    ``url`` is a libpq URL or conninfo string (``postgresql://user@host/db``).
    The store creates its tables on ``open()`` (or on first use) and refuses a
    schema written by another version. Commits to one session are serialized by
    a row lock, so of several commits at one revision, from any number of
    processes, exactly one wins. The pool is bound to the event loop that opens
    it; close with ``aclose()`` or use ``async with``.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "lash",
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lowercase SQL identifier ([a-z_][a-z0-9_]*, "
                f"at most 63 characters), got {schema!r}"
            )
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"need 0 <= min_size <= max_size, max_size >= 1; got {min_size}, {max_size}"
            )
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ValueError(f"not a PostgreSQL URL or conninfo string: {exc}") from None
        # Keep only what identifies the server, never a password, for repr and errors.
        self._where = " ".join(
            f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if params.get(k)
        )
        self._url = url
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._sql = _Statements(schema)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._rows_written = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        schema: str = "lash",
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 30.0,
    ) -> PostgresStore:
        """Make a store and ``open()`` it."""
        store = cls(url, schema=schema, min_size=min_size, max_size=max_size, timeout=timeout)
        await store.open()
        return store

    # ------------------------------------------------------------------ public

    @property
    def tier(self) -> DurabilityTier:
        """Durable: a commit is durable once ``commit()`` returns."""
        return DurabilityTier.DURABLE

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._schema

    @property
    def rows_written(self) -> int:
        """Rows this store's commits have inserted or updated (a diagnostic)."""
        return self._rows_written

    async def open(self) -> None:
        """Check or create the schema and open the pool; idempotent."""
        if self._pool is not None:
            return
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=max(2, int(self._timeout))
                )
            except psycopg.Error as exc:
                raise StoreError(f"{self!r}: cannot connect: {exc}") from exc
            try:
                await self._prepare(conn)
            except psycopg.Error as exc:
                raise StoreError(f"{self!r}: cannot prepare the schema: {exc}") from exc
            finally:
                await conn.close()
            pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                kwargs={"autocommit": True},
                timeout=self._timeout,
                name=f"lash-{self._schema}",
                open=False,
            )
            try:
                await pool.open(wait=True, timeout=self._timeout)
            except PoolTimeout as exc:
                await pool.close()
                raise StoreError(f"{self!r}: cannot open the connection pool: {exc}") from exc
            if self._closed:  # closed while opening
                await pool.close()
                raise StoreError(f"{self!r} is closed")
            self._pool = pool

    async def load(self, session_id: str) -> StoredSession | None:
        """The stored session, or None; a row that fails to decode is a ``StoreCorruptError``."""
        check_session_id(session_id)
        q = self._sql
        try:
            async with self._transaction(_BEGIN_SNAPSHOT) as conn:
                head_cur = conn.cursor(binary=True)
                message_cur = conn.cursor(binary=True)
                usage_cur = conn.cursor(binary=True)
                state_cur = conn.cursor(binary=True)
                await head_cur.execute(q.head, (session_id,))
                await message_cur.execute(q.messages, (session_id,))
                await usage_cur.execute(q.usage, (session_id,))
                await state_cur.execute(q.state, (session_id,))
                head = await head_cur.fetchone()
                message_rows = await message_cur.fetchall()
                usage_rows = await usage_cur.fetchall()
                state_rows = await state_cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"session {session_id!r}: load failed: {exc}") from exc
        if head is None:
            return None
        nodes = tuple(
            GraphNode(message=_decode_stored(session_id, nid, data), parent_id=parent)
            for nid, parent, data in message_rows
        )
        leaf = head[4]
        return StoredSession(
            session_id=session_id,
            revision=head[0],
            messages=stored_path(session_id, nodes, leaf),
            turn_index=head[1],
            iteration=head[2],
            frame_id=head[3],
            usage=decode_usage_rows(session_id, usage_rows),
            leaf_id=leaf,
            nodes=nodes,
            state={
                name: unpack_state(session_id, name, digest, compressed, data)
                for name, digest, compressed, data in state_rows
            },
        )

    async def load_turn(self, session_id: str, turn_id: str) -> CommittedTurn | None:
        """The landed commit of ``turn_id`` with its record and messages, or None."""
        check_session_id(session_id)
        check_turn_id(turn_id)
        q = self._sql
        try:
            async with self._transaction(_BEGIN_SNAPSHOT) as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(q.turn, (session_id, turn_id))
                row = await cur.fetchone()
                rows: list[Any] = []
                if row is not None:
                    await cur.execute(q.turn_messages, (row[0], f"{turn_id}.", f"{turn_id}/"))
                    rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(
                f"session {session_id!r} turn {turn_id!r}: lookup failed: {exc}"
            ) from exc
        if row is None:
            return None
        messages = tuple(_decode_stored(session_id, nid, data) for nid, data in rows)
        record = None
        if row[3] is not None:
            record = decode_record(session_id, turn_id, _unpack(row[3]), messages)
        return CommittedTurn(
            session_id=session_id,
            turn_id=turn_id,
            revision=row[2],
            commit_hash=bytes(row[1]).hex(),
            record=record,
            messages=messages,
        )

    async def tombstone(self, session_id: str, node_ids: Iterable[str]) -> int:
        """Hide nodes and their descendants (see ``SessionStore.tombstone``)."""
        check_session_id(session_id)
        ids = check_node_ids(node_ids)
        q = self._sql
        try:
            async with self._transaction(b"BEGIN") as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(q.lock_head, (session_id,))
                head = await cur.fetchone()
                if head is None or not ids:
                    return 0
                sid, leaf = head
                await cur.execute(q.live_parents, (sid,))
                parents: dict[str, str | None] = dict(await cur.fetchall())
                hidden = hidden_subtree(session_id, parents, leaf, ids)
                if not hidden:
                    return 0
                await cur.execute(q.mark_dead, (sid, sorted(hidden)))
        except psycopg.Error as exc:
            raise StoreError(
                f"session {session_id!r}: tombstone failed and was rolled back: {exc}"
            ) from exc
        self._rows_written += len(hidden)
        return len(hidden)

    async def vacuum(self, session_id: str) -> int:
        """Delete the session's tombstoned nodes; returns how many this call removed."""
        check_session_id(session_id)
        q = self._sql
        try:
            async with self._transaction(b"BEGIN") as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(q.lock_head, (session_id,))
                head = await cur.fetchone()
                if head is None:
                    return 0
                await cur.execute(q.sweep, (head[0],))
                row = await cur.fetchone()
                removed = 0 if row is None else int(row[0])
        except psycopg.Error as exc:
            raise StoreError(
                f"session {session_id!r}: vacuum failed and was rolled back: {exc}"
            ) from exc
        self._rows_written += removed
        return removed

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        """Apply one commit in one transaction (see ``SessionStore.commit``)."""
        check_commit(commit)
        encoded = _Encoded(commit)
        tally = _Tally()
        try:
            async with self._transaction(b"BEGIN") as conn:
                result = await self._apply(conn, commit, encoded, tally)
        except psycopg.Error as exc:
            turn = f" turn {commit.stamp.turn_id!r}" if commit.stamp is not None else ""
            outcome = (
                "if the connection broke while committing it may have landed; "
                "load the session (or retry a stamped commit) to find out"
                if isinstance(exc, psycopg.OperationalError)
                else "it was rolled back"
            )
            raise StoreError(
                f"session {commit.session_id!r}{turn}: commit failed ({outcome}): {exc}"
            ) from exc
        self._rows_written += await tally.total()
        return result

    async def save_session_meta(self, meta: SessionMeta, *, replace: bool = True) -> SessionMeta:
        """Write the session's metadata row (see ``SessionStore.save_session_meta``).

        With ``replace=False`` the row stored afterwards is read back: when two
        workers race, both get the one row that won.
        """
        check_meta(meta)
        row = (meta.session_id, meta.created_at_ms, encode_meta(meta))
        q = self._sql
        try:
            async with self._transaction(b"BEGIN") as conn:
                if replace:
                    await conn.execute(q.put_meta, row)
                    stored = None
                    written = 1
                else:
                    # The read is a later statement than the insert, so it sees
                    # the row a concurrent insert committed while this one waited.
                    add_cur = conn.cursor(binary=True)
                    read_cur = conn.cursor(binary=True)
                    await add_cur.execute(q.add_meta, row)
                    await read_cur.execute(q.session_meta, (meta.session_id,))
                    written = 0 if await add_cur.fetchone() is None else 1
                    stored = await read_cur.fetchone()
        except psycopg.Error as exc:
            raise StoreError(
                f"session {meta.session_id!r}: saving metadata failed and was rolled back: {exc}"
            ) from exc
        self._rows_written += written
        if replace:
            return meta
        if stored is None:  # cannot happen: metadata rows are never deleted
            raise StoreError(f"session {meta.session_id!r}: the metadata row vanished")
        return _decode_meta_row(*stored)

    async def load_session_meta(self, session_id: str) -> SessionMeta | None:
        """The session's metadata row, or None; a damaged row is a ``StoreCorruptError``."""
        check_session_id(session_id)
        try:
            async with self._transaction(_BEGIN_SNAPSHOT) as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(self._sql.session_meta, (session_id,))
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"session {session_id!r}: loading metadata failed: {exc}") from exc
        return None if row is None else _decode_meta_row(*row)

    async def list_sessions(self, *, limit: int | None = None) -> tuple[SessionMeta, ...]:
        """Metadata rows, oldest first (by creation time, then session id)."""
        check_limit(limit)
        try:
            async with self._transaction(_BEGIN_SNAPSHOT) as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(self._sql.list_meta, (limit,))
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"{self!r}: listing sessions failed: {exc}") from exc
        return tuple(_decode_meta_row(*row) for row in rows)

    async def aclose(self) -> None:
        """Close the pool; idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._pool is not None else "not open"
        return f"PostgresStore({self._where!r}, schema={self._schema!r}, {state})"

    # ------------------------------------------------------------------ internals

    async def _ready(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self!r} is closed")
        return pool

    @asynccontextmanager
    async def _transaction(self, begin: bytes) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in one pipelined transaction, committed unless the body raises.

        BEGIN and COMMIT are sent as plain statements in the pipeline, so they
        ride along with the body's statements instead of costing round trips.
        """
        pool = await self._ready()
        async with pool.connection() as conn:
            try:
                async with conn.pipeline():
                    await conn.execute(begin)
                    yield conn
                    await conn.execute(b"COMMIT")
            except Exception:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    with suppress(psycopg.Error):  # a broken connection: the pool drops it
                        await conn.execute(b"ROLLBACK")
                raise

    async def _prepare(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # Check the version before anything that could write, so a schema we do
        # not understand is left exactly as it was.
        found, missing = await self._inspect(conn)
        if found is None or (found == str(SCHEMA_VERSION) and missing):
            async with conn.transaction():
                # DDL is transactional; the lock makes concurrent opens wait for
                # one creator instead of racing on the catalog. A complete schema
                # of this version never takes it.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, self._schema)
                )
                found, missing = await self._inspect(conn)
                if found is None:
                    cur = await conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
                    )
                    if await cur.fetchone() is None:
                        await conn.execute(self._sql.create_schema)
                    for ddl in (*self._sql.ddl, *self._sql.added_ddl):
                        await conn.execute(ddl)
                    for queue_ddl in postgres_queue_schema(self._schema):
                        await conn.execute(queue_ddl)
                    await conn.execute(self._sql.write_version, (str(SCHEMA_VERSION),))
                    found = str(SCHEMA_VERSION)
                elif found == str(SCHEMA_VERSION) and missing:
                    # Written before the state and metadata tables existed.
                    for ddl in self._sql.added_ddl:
                        await conn.execute(ddl)
        if found != str(SCHEMA_VERSION):
            raise PostgresSchemaError(
                self._schema,
                f"schema version {found!r} is not supported "
                f"(this library reads version {SCHEMA_VERSION}); nothing was changed",
                found=found,
            )

    async def _inspect(self, conn: psycopg.AsyncConnection[Any]) -> tuple[str | None, bool]:
        """The stored schema version and whether ``_ADDED_DDL`` has work to do.

        The version is None for a missing or empty schema; a schema holding
        tables but no lash version is refused.
        """
        cur = await conn.execute(
            "SELECT c.relname, c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'i')",
            (self._schema,),
        )
        rows = await cur.fetchall()
        tables = {name for name, is_table in rows if is_table}
        if not tables:
            return None, True
        if "meta" not in tables:
            raise PostgresSchemaError(
                self._schema, "it holds tables but no lash schema version; not touching it"
            )
        cur = await conn.execute(self._sql.read_version)
        row = await cur.fetchone()
        if row is None:
            raise PostgresSchemaError(
                self._schema, "the meta table has no schema_version; not touching it"
            )
        return str(row[0]), bool(_ADDED_RELATIONS - {name for name, _ in rows})

    async def _apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        commit: RuntimeCommit,
        encoded: _Encoded,
        tally: _Tally,
    ) -> CommitResult:
        """The commit's statements, inside its pipelined transaction."""
        q = self._sql
        usage = encoded.usage
        session_id = commit.session_id
        stamp = commit.stamp
        appending = commit.replace_graph is None
        ids = [m.id for m in commit.messages] if appending else []
        while True:
            # Round 1: lock the head row; the read after it (a later statement,
            # so a fresh snapshot) sees every commit that finished before the lock.
            lock_cur = conn.cursor(binary=True)
            info_cur = conn.cursor(binary=True)
            await lock_cur.execute(q.lock, (session_id,))
            await info_cur.execute(
                q.info,
                (
                    ids,
                    commit.parent_id if appending else None,
                    commit.leaf_id,
                    [k[0] for k in usage],
                    [k[1] for k in usage],
                    None if stamp is None else stamp.turn_id,
                    session_id,
                ),
            )
            head = await lock_cur.fetchone()
            if head is not None:
                break
            # A new session: only a commit that expects none may create it.
            if commit.expected_revision is not None:
                raise HeadRevisionConflict(session_id, commit.expected_revision, None)
            if appending and commit.parent_id is not None:
                raise GraphError(
                    session_id, commit.parent_id, "unknown_parent", "the node is missing"
                )
            if appending and commit.leaf_id is not None and commit.leaf_id not in ids:
                raise GraphError(session_id, commit.leaf_id, "unknown_leaf", "the node is missing")
            create_cur = conn.cursor(binary=True)
            await create_cur.execute(
                q.create, (session_id, commit.turn_index, commit.iteration, commit.frame_id)
            )
            created = await create_cur.fetchone()
            if created is not None:
                await self._complete_claims(conn, commit)
                tally.rows += 1
                await self._write(conn, created[0], None, 0, 1, commit, encoded, usage, tally)
                return CommitResult(revision=1)
            # Another worker created it first; lock that row and look again.
        sid, actual = head
        info = await info_cur.fetchone()
        if info is None:  # cannot happen: sessions are never deleted
            raise StoreError(f"session {session_id!r}: the head row vanished under its lock")
        leaf, next_seq, taken, parent_live, leaf_live, seen_hash, seen_revision, prior_usage = info
        # 1. The turn stamp, before the compare-and-set, so a replayed turn that
        #    rebuilt from an old head can still retry its final commit.
        if stamp is not None and seen_hash is not None:
            if bytes(seen_hash) == bytes.fromhex(stamp.commit_hash):
                return CommitResult(revision=seen_revision, replayed=True)
            raise TurnCommitConflict(stamp, bytes(seen_hash).hex())
        # 2. Head-revision compare-and-set, under the row lock.
        if commit.expected_revision != actual:
            raise HeadRevisionConflict(session_id, commit.expected_revision, actual)
        # 3. The graph change must fit the stored graph.
        if appending:
            if taken:
                first = next(i for i in ids if i in set(taken))
                raise GraphError(
                    session_id, first, "duplicate_id", "the session already has this id"
                )
            if commit.parent_id not in (None, leaf) and not parent_live:
                raise GraphError(
                    session_id, commit.parent_id, "unknown_parent", "the node is missing"
                )
            if commit.leaf_id not in (None, leaf) and commit.leaf_id not in ids and not leaf_live:
                raise GraphError(session_id, commit.leaf_id, "unknown_leaf", "the node is missing")
        await self._complete_claims(conn, commit)
        # 4. Sum usage onto the stored rows; a corrupt one aborts the commit.
        totals = dict(usage)
        for source, model, data in prior_usage or ():
            prior = decode_row(session_id, "usage", f"{source}/{model}", data, LlmUsage)
            totals[(source, model)] = prior + usage[(source, model)]
        # 5. Round 2: bump, append, upsert usage and state, stamp, describe; the
        #    caller's COMMIT rides along.
        revision = actual + 1
        await self._write(conn, sid, leaf, next_seq, revision, commit, encoded, totals, tally)
        return CommitResult(revision=revision)

    async def _complete_claims(
        self, conn: psycopg.AsyncConnection[Any], commit: RuntimeCommit
    ) -> None:
        """Consume the turn's queue claims, in the commit's transaction (all or nothing)."""
        if commit.completed_claims:
            await postgres_complete(
                conn, self._schema, commit.completed_claims, session_id=commit.session_id
            )

    async def _queue_op(
        self, name: str, session_id: object, args: tuple[Any, ...], write: bool
    ) -> Any:
        fn = getattr(queue, f"postgres_{name}")
        try:
            async with self._transaction(b"BEGIN" if write else _BEGIN_SNAPSHOT) as conn:
                return await fn(conn, self._schema, *args)
        except psycopg.Error as exc:
            raise StoreError(
                f"session {session_id!r}: queued work {name} failed and was rolled back: {exc}"
            ) from exc

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        sid: int,
        leaf: str | None,
        next_seq: int,
        revision: int,
        commit: RuntimeCommit,
        encoded: _Encoded,
        totals: dict[tuple[str, str], LlmUsage],
        tally: _Tally,
    ) -> None:
        """Queue the statements that write a commit (pipelined: no waiting for a reply)."""
        stamp = commit.stamp
        if commit.replace_graph is not None:
            clear = conn.cursor(binary=True)
            await clear.execute(self._sql.clear, (sid,))
            nodes = commit.replace_graph
            ids = [n.id for n in nodes]
            parents = [n.parent_id for n in nodes]
            next_seq = 0
            new_leaf = commit.leaf_id or (ids[-1] if ids else None)
        else:
            ids = [m.id for m in commit.messages]
            parent = commit.parent_id if commit.parent_id is not None else leaf
            parents = [parent, *ids[:-1]] if ids else []
            new_leaf = commit.leaf_id or (ids[-1] if ids else leaf)
        cur = conn.cursor(binary=True)
        await cur.execute(
            self._sql.write,
            {
                "sid": sid,
                "revision": revision,
                "turn_index": commit.turn_index,
                "iteration": commit.iteration,
                "frame_id": commit.frame_id,
                "leaf": new_leaf,
                "next_seq": next_seq,
                "after_seq": next_seq + len(ids),
                "ids": ids,
                "parents": parents,
                "blobs": encoded.blobs,
                "sources": [k[0] for k in totals],
                "models": [k[1] for k in totals],
                "usage": [encode(u).decode() for u in totals.values()],
                "turn_id": None if stamp is None else stamp.turn_id,
                "commit_hash": None if stamp is None else bytes.fromhex(stamp.commit_hash),
                "record": encoded.record,
                "state_names": encoded.state_names,
                "digests": encoded.digests,
                "compressed": encoded.compressed,
                "values": encoded.values,
                "dropped": encoded.dropped,
                "meta_id": commit.session_id,
                "meta_at": None if commit.meta is None else commit.meta.created_at_ms,
                "meta_json": encoded.meta_json,
            },
        )
        tally.counted = cur


class _Encoded:
    """A commit's rows encoded for the database, before its transaction starts."""

    __slots__ = (
        "blobs",
        "compressed",
        "digests",
        "dropped",
        "meta_json",
        "record",
        "state_names",
        "usage",
        "values",
    )

    def __init__(self, commit: RuntimeCommit) -> None:
        self.blobs = [_as_bytes(pack(encode_message(m))) for m in commit_messages(commit)]
        self.usage = sum_usage(commit)
        packed = encode_record(commit)
        self.record = None if packed is None else _as_bytes(packed)
        self.state_names: list[str] = []
        self.digests: list[bytes] = []
        self.compressed: list[bool] = []
        self.values: list[bytes] = []
        self.dropped: list[str] = []
        for name, value in commit.state.items():
            if value is None:
                self.dropped.append(name)
                continue
            digest, compressed, data = pack_state(value)
            self.state_names.append(name)
            self.digests.append(digest)
            self.compressed.append(compressed)
            self.values.append(data)
        self.meta_json = None if commit.meta is None else encode_meta(commit.meta)


class _Tally:
    """Rows one commit wrote: counted in Python, plus what the write statement reports."""

    def __init__(self) -> None:
        self.rows = 0
        self.counted: psycopg.AsyncCursor[Any] | None = None

    async def total(self) -> int:
        row = None if self.counted is None else await self.counted.fetchone()
        return self.rows + (0 if row is None else int(row[0]))


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _unpack(data: bytes) -> str | bytes:
    """A stored JSON column: text when it starts with ``{``, else zlib-compressed bytes."""
    data = bytes(data)
    if data[:1] == b"{":
        return data.decode()
    return data


def _decode_meta_row(session_id: str, created_at_ms: int, data: str) -> SessionMeta:
    """A ``session_meta`` row; its ordering column must agree with its JSON."""
    meta = decode_meta(session_id, data)
    if meta.created_at_ms != created_at_ms:
        raise StoreCorruptError(
            session_id,
            "session_meta",
            session_id,
            f"the created_at_ms column holds {created_at_ms}, the JSON {meta.created_at_ms}",
            path="$.created_at_ms",
        )
    return meta


def _decode_stored(session_id: str, node_id: str, data: bytes) -> Message:
    """A ``messages`` row: plain JSON when it starts with ``{``, else zlib-compressed JSON."""
    try:
        return decode_message(session_id, node_id, _unpack(data))
    except UnicodeDecodeError as exc:
        raise StoreCorruptError(session_id, "messages", node_id, f"not UTF-8 JSON: {exc}") from exc
