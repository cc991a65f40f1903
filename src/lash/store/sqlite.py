"""The embedded SQLite store (Durable tier), on stdlib ``sqlite3`` in WAL mode.

One connection, owned by one dedicated worker thread, does all the SQL; the
async methods hand work to that thread so the event loop never blocks on disk.
A commit is one ``BEGIN IMMEDIATE`` transaction that appends the turn's
messages (cost O(what the turn added), never O(history)); any failure rolls it
back completely. Message JSON is stored as text, or zlib-compressed when that
saves space (about 40 % for typical tool calls and results). Session-state blobs
are rows of their own, rewritten only when their content changes; session
metadata lives in a table keyed by the session id, apart from the head.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from .._closing import AsyncClosing
from .._sqlite import SqliteThread, connect, enable_wal, in_write_transaction
from ..kernel.codec import encode
from ..kernel.llm import LlmUsage
from ..runtime.effects import DurabilityTier
from . import queue
from ._codec import commit_messages as _commit_messages
from ._codec import decode_message as _decode_message
from ._codec import (
    decode_meta,
    decode_record,
    decode_usage_rows,
    encode_meta,
    encode_record,
    pack_state,
    sum_usage,
    unpack_state,
)
from ._codec import decode_row as _decode_row
from ._codec import encode_message as _encode_message
from ._codec import pack as _pack
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
    UsageRow,
    check_commit,
    check_limit,
    check_meta,
    check_node_ids,
    check_session_id,
    check_turn_id,
)
from .graph import hidden_subtree, resolve_parent_ids, stored_path
from .queue import SQLITE_QUEUE_SCHEMA, sqlite_complete

T = TypeVar("T")

SCHEMA_VERSION = 2
"""The schema version this module writes and reads; other versions are refused."""

DB_FILENAME = "lash.sqlite3"
"""The database file inside the store's directory."""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    # ``sid`` is a compact surrogate key, so message rows never repeat the session
    # id. ``leaf`` ends the active path; ``tail`` is the node committed last and
    # ``next_seq`` the order number the next node gets.
    """CREATE TABLE IF NOT EXISTS sessions (
        sid INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        turn_index INTEGER NOT NULL,
        iteration INTEGER NOT NULL,
        frame_id TEXT,
        leaf TEXT,
        tail TEXT,
        next_seq INTEGER NOT NULL DEFAULT 0
    )""",
    # The session graph, one row per node (= message), keyed by its id; turn ids
    # grow over time, so rows are appended at the end of the B-tree. ``seq`` is
    # commit order. ``parent`` is stored only at a branch point: NULL means the
    # row committed just before (for the first row, the root). ``dead`` marks a
    # tombstone until ``vacuum`` deletes the row. ``message_json`` is the message
    # without its id, as JSON text or (a BLOB) zlib-compressed JSON.
    """CREATE TABLE IF NOT EXISTS messages (
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        node_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        parent TEXT,
        dead INTEGER,
        message_json BLOB NOT NULL,
        PRIMARY KEY (sid, node_id)
    ) WITHOUT ROWID""",
    # One row per (session, source, model), summed on upsert; ``usage_id`` keeps
    # first-seen order, as the in-memory store does.
    """CREATE TABLE IF NOT EXISTS usage (
        usage_id INTEGER PRIMARY KEY,
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        usage_json TEXT NOT NULL,
        UNIQUE (sid, source, model)
    )""",
    # ``record`` is the turn's outcome and usage (JSON, maybe compressed).
    """CREATE TABLE IF NOT EXISTS turn_stamps (
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        turn_id TEXT NOT NULL,
        commit_hash BLOB NOT NULL,
        revision INTEGER NOT NULL,
        record BLOB,
        PRIMARY KEY (sid, turn_id)
    ) WITHOUT ROWID""",
)

# Tables added without a version bump: a file made before them gets them when
# it is opened (see ``SqliteStore._prepare``), keyed by the name each one creates.
_ADDED_SCHEMA = {
    # Session-state blobs, one row per (session, name). ``digest`` is the SHA-256
    # of the value: a commit leaves a row with the same digest alone, and a load
    # checks it. ``compressed`` is 1 when ``data`` is zlib-compressed, else 0.
    "state": """CREATE TABLE IF NOT EXISTS state (
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        name TEXT NOT NULL,
        digest BLOB NOT NULL,
        compressed INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (sid, name)
    ) WITHOUT ROWID""",
    # Keyed by the session id, not ``sid``: metadata may be saved before the
    # session's first commit. ``meta_json`` is the row without its session id.
    "session_meta": """CREATE TABLE IF NOT EXISTS session_meta (
        session_id TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL,
        meta_json TEXT NOT NULL
    ) WITHOUT ROWID""",
    "session_meta_created": """CREATE INDEX IF NOT EXISTS session_meta_created
        ON session_meta (created_at_ms, session_id)""",
}

_StateRow = tuple[str, tuple[bytes, bool, bytes] | None]
"""A state change ready for the database: the name and its packed value (None: delete)."""


class SqliteStore(QueueOps, AsyncClosing):
    """A durable session store in ``<path>/lash.sqlite3``.

    Several instances (and processes) may share one directory: every
    read-then-write runs under ``BEGIN IMMEDIATE``, so the head-revision
    compare-and-set has exactly one winner. Close with ``close()``/``aclose()``
    or use the store as a (sync or async) context manager.

    ``synchronous="normal"`` (the default) survives any process crash; after a
    power loss or OS crash the last few commits may be lost, but the database is
    never corrupt. ``"full"`` fsyncs on every commit.

    A file written before the session-state and metadata tables existed gains
    them the first time it is opened; everything else in it is kept.
    """

    def __init__(
        self, path: str | Path, *, synchronous: Literal["normal", "full"] = "normal"
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ValueError(f"SqliteStore path {root} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        self._root = root
        self._file = root / DB_FILENAME
        self._synchronous = synchronous.upper()
        self._rows_written = 0
        self._queue_ready = False
        self._thread = SqliteThread(
            self._open, name="lash-sqlite", closed_error=lambda: StoreError(f"{self!r} is closed")
        )

    # ------------------------------------------------------------------ public

    @property
    def tier(self) -> DurabilityTier:
        """Durable: commits survive a process crash."""
        return DurabilityTier.DURABLE

    @property
    def path(self) -> Path:
        """The database file."""
        return self._file

    @property
    def rows_written(self) -> int:
        """Rows this store's connection has inserted, updated or deleted (a diagnostic)."""
        return self._rows_written

    async def load(self, session_id: str) -> StoredSession | None:
        """The stored session, or None; a row that fails to decode is a ``StoreCorruptError``."""
        check_session_id(session_id)
        return await self._call(lambda: self._load_sync(session_id))

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        """Apply one commit in one transaction (see ``SessionStore.commit``)."""
        check_commit(commit)
        rows = [_pack(_encode_message(m)) for m in _commit_messages(commit)]
        usage = sum_usage(commit)
        record = encode_record(commit)
        state: list[_StateRow] = [
            (name, None if value is None else pack_state(value))
            for name, value in commit.state.items()
        ]
        meta = None if commit.meta is None else encode_meta(commit.meta)
        stamp = commit.stamp
        what = "commit" if stamp is None else f"turn {stamp.turn_id!r} commit"
        return await self._call(
            lambda: self._write(
                commit.session_id,
                what,
                lambda c: self._apply(c, commit, rows, usage, record, state, meta),
            )
        )

    async def load_turn(self, session_id: str, turn_id: str) -> CommittedTurn | None:
        """The landed commit of ``turn_id`` with its record and messages, or None."""
        check_session_id(session_id)
        check_turn_id(turn_id)
        return await self._call(lambda: self._load_turn_sync(session_id, turn_id))

    async def tombstone(self, session_id: str, node_ids: Iterable[str]) -> int:
        """Hide nodes and their descendants (see ``SessionStore.tombstone``)."""
        check_session_id(session_id)
        ids = check_node_ids(node_ids)
        return await self._call(lambda: self._tombstone_sync(session_id, ids))

    async def vacuum(self, session_id: str) -> int:
        """Delete the session's tombstoned nodes; returns how many this call removed."""
        check_session_id(session_id)
        return await self._call(lambda: self._vacuum_sync(session_id))

    async def save_session_meta(self, meta: SessionMeta, *, replace: bool = True) -> SessionMeta:
        """Write the session's metadata row (see ``SessionStore.save_session_meta``)."""
        check_meta(meta)
        text = encode_meta(meta)
        session_id = meta.session_id

        def apply(conn: sqlite3.Connection) -> SessionMeta:
            if not replace:
                row = conn.execute(
                    "SELECT created_at_ms, meta_json FROM session_meta WHERE session_id = ?",
                    (session_id,),
                ).fetchone()
                if row is not None:
                    return _decode_meta_row(session_id, row[0], row[1])
            conn.execute(
                "INSERT INTO session_meta (session_id, created_at_ms, meta_json) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE"
                " SET created_at_ms = excluded.created_at_ms, meta_json = excluded.meta_json",
                (session_id, meta.created_at_ms, text),
            )
            return meta

        return await self._call(lambda: self._write(session_id, "saving metadata", apply))

    async def load_session_meta(self, session_id: str) -> SessionMeta | None:
        """The session's metadata row, or None; a damaged row is a ``StoreCorruptError``."""
        check_session_id(session_id)

        def read() -> list[Any]:
            return self._read(
                session_id,
                "loading metadata",
                "SELECT session_id, created_at_ms, meta_json FROM session_meta"
                " WHERE session_id = ?",
                (session_id,),
            )

        rows = await self._call(read)
        return _decode_meta_row(*rows[0]) if rows else None

    async def list_sessions(self, *, limit: int | None = None) -> tuple[SessionMeta, ...]:
        """Every metadata row, oldest first (by creation time, then session id)."""
        check_limit(limit)

        def read() -> list[Any]:
            return self._read(
                "*",
                "listing sessions",
                "SELECT session_id, created_at_ms, meta_json FROM session_meta"
                " ORDER BY created_at_ms, session_id LIMIT ?",
                (-1 if limit is None else limit,),
            )

        rows = await self._call(read)
        return tuple(_decode_meta_row(*row) for row in rows)

    def close(self) -> None:
        """Close the connection and stop the worker thread; idempotent."""
        self._thread.close()

    async def aclose(self) -> None:
        """Close without blocking the event loop; idempotent."""
        await self._thread.aclose()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = (
            "closed" if getattr(self, "_thread", None) is None or self._thread.closed else "open"
        )
        return f"SqliteStore({str(self._root)!r}, {state})"

    async def _queue_op(
        self, name: str, session_id: object, args: tuple[Any, ...], write: bool
    ) -> Any:
        fn = getattr(queue, f"sqlite_{name}")
        if not write:
            return await self._call(lambda: self._queue_read(fn, args))

        def apply(conn: sqlite3.Connection) -> Any:
            self._ensure_queue(conn)
            return fn(conn, *args)

        result = await self._call(lambda: self._write(str(session_id), name, apply))
        self._queue_ready = True  # the tables exist now: that transaction committed
        return result

    def _queue_read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        conn = self._connection()
        if not self._queue_ready:
            if not _has_queue(conn):
                return ()  # nothing was ever queued in this database
            self._queue_ready = True  # created by another store or process
        return fn(conn, *args)

    def _ensure_queue(self, conn: sqlite3.Connection) -> None:
        """Create the queue tables on first use (inside the caller's write transaction).

        A database that never queues work does not pay their pages.
        """
        if not self._queue_ready:
            for ddl in SQLITE_QUEUE_SCHEMA:
                conn.execute(ddl)

    # ------------------------------------------------------------------ worker side

    async def _call(self, fn: Callable[[], T]) -> T:
        return await self._thread.call(fn)

    def _connection(self) -> sqlite3.Connection:
        return self._thread.connection()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = connect(str(self._file))
        except sqlite3.Error as exc:
            raise StoreError(f"{self._file}: cannot open: {exc}") from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA foreign_keys = ON")
        # Check the version before anything that could write, so a file we do not
        # understand is left byte-for-byte as it was.
        try:
            found, missing = self._read_version(conn)
            if found is None:
                self._enable_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    found, missing = self._read_version(conn)  # a concurrent opener may have won
                    if found is None:
                        for ddl in (*_SCHEMA, *_ADDED_SCHEMA.values()):
                            conn.execute(ddl)
                        missing = False
                        conn.execute(
                            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),),
                        )
                        found = str(SCHEMA_VERSION)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._check_version(found)
            if missing:
                self._add_missing(conn)
            self._enable_wal(conn)
        except sqlite3.OperationalError as exc:  # busy beyond the timeout, I/O trouble
            raise StoreError(f"{self._file}: cannot open: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            raise StoreSchemaError(
                str(self._file), f"not a usable lash store: {exc}", expected=SCHEMA_VERSION
            ) from exc
        # In WAL mode, NORMAL syncs the WAL only at checkpoints, not at each commit.
        # That is safe: a commit is durable against any *process* crash (the WAL
        # frames are in the OS page cache), and a power loss can drop only the
        # latest commits, never corrupt the database (the WAL's checksums make
        # recovery stop at the last intact commit).
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _check_version(self, found: str) -> None:
        if found != str(SCHEMA_VERSION):
            raise StoreSchemaError(
                str(self._file),
                f"schema version {found!r} is not supported "
                f"(this library reads version {SCHEMA_VERSION}); the file was not changed",
                found=found,
                expected=SCHEMA_VERSION,
            )

    def _add_missing(self, conn: sqlite3.Connection) -> None:
        """Create the tables a file of this version may predate, under the write lock."""
        self._enable_wal(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            found, _ = self._read_version(conn)  # what a concurrent opener left
            if found is None:
                raise StoreSchemaError(
                    str(self._file),
                    "the lash schema vanished while opening",
                    expected=SCHEMA_VERSION,
                )
            self._check_version(found)
            for ddl in _ADDED_SCHEMA.values():
                conn.execute(ddl)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _read_version(self, conn: sqlite3.Connection) -> tuple[str | None, bool]:
        """The stored schema version (None for an empty database) and whether a table
        added since that version is missing; refuses foreign databases."""
        names = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchall()
        }
        if not names:
            return None, False
        if "meta" not in names:
            raise StoreSchemaError(
                str(self._file),
                "the database holds tables but no lash schema version; not touching it",
                expected=SCHEMA_VERSION,
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise StoreSchemaError(
                str(self._file),
                "the meta table has no schema_version; not touching it",
                expected=SCHEMA_VERSION,
            )
        return str(row[0]), not names.issuperset(_ADDED_SCHEMA)

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        mode = enable_wal(conn)
        if mode != "wal":
            raise StoreError(f"{self._file}: cannot enable WAL mode (journal_mode is {mode!r})")

    def _load_sync(self, session_id: str) -> StoredSession | None:
        conn = self._connection()
        try:
            conn.execute("BEGIN")  # one read snapshot for head, nodes and usage
            try:
                head = conn.execute(
                    "SELECT sid, revision, turn_index, iteration, frame_id, leaf FROM sessions"
                    " WHERE session_id = ?",
                    (session_id,),
                ).fetchone()
                if head is None:
                    return None
                sid = head[0]
                node_rows = conn.execute(
                    "SELECT seq, node_id, parent, message_json FROM messages"
                    " WHERE sid = ? AND dead IS NULL",
                    (sid,),
                ).fetchall()
                usage_rows = conn.execute(
                    "SELECT source, model, usage_json FROM usage WHERE sid = ? ORDER BY usage_id",
                    (sid,),
                ).fetchall()
                state_rows = conn.execute(
                    "SELECT name, digest, compressed, data FROM state WHERE sid = ?", (sid,)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"session {session_id!r}: load failed: {exc}") from exc
        for column, value in zip(("revision", "turn_index", "iteration"), head[1:4], strict=True):
            if type(value) is not int:
                raise StoreCorruptError(
                    session_id, "sessions", session_id, f"{column} is {value!r}, not an integer"
                )
        node_rows.sort(key=_seq_of)
        state = {name: unpack_state(session_id, name, *rest) for name, *rest in state_rows}
        return _stored_session(
            session_id, head, node_rows, decode_usage_rows(session_id, usage_rows), state
        )

    def _load_turn_sync(self, session_id: str, turn_id: str) -> CommittedTurn | None:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    "SELECT t.sid, t.commit_hash, t.revision, t.record FROM turn_stamps t"
                    " JOIN sessions h ON h.sid = t.sid WHERE h.session_id = ? AND t.turn_id = ?",
                    (session_id, turn_id),
                ).fetchone()
                if row is None:
                    return None
                # Ids of a turn's messages start with "{turn_id}.": a key range scan.
                node_rows = conn.execute(
                    "SELECT seq, node_id, message_json FROM messages WHERE sid = ?"
                    " AND node_id >= ? AND node_id < ? AND dead IS NULL",
                    (row[0], f"{turn_id}.", f"{turn_id}/"),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(
                f"session {session_id!r} turn {turn_id!r}: lookup failed: {exc}"
            ) from exc
        node_rows.sort(key=_seq_of)
        messages = tuple(_decode_message(session_id, nid, data) for _, nid, data in node_rows)
        record = None
        if row[3] is not None:
            record = decode_record(session_id, turn_id, row[3], messages)
        return CommittedTurn(
            session_id=session_id,
            turn_id=turn_id,
            revision=row[2],
            commit_hash=bytes(row[1]).hex(),
            record=record,
            messages=messages,
        )

    def _read(self, session_id: str, what: str, sql: str, args: tuple[Any, ...]) -> list[Any]:
        """The rows of one query (its own read snapshot)."""
        try:
            return self._connection().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"session {session_id!r}: {what} failed: {exc}") from exc

    def _write(self, session_id: str, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; any failure rolls it back."""
        conn = self._connection()
        try:
            return in_write_transaction(conn, fn)
        except sqlite3.Error as exc:
            raise StoreError(
                f"session {session_id!r}: {what} failed and was rolled back: {exc}"
            ) from exc
        finally:
            self._rows_written = conn.total_changes

    def _tombstone_sync(self, session_id: str, ids: list[str]) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            head = conn.execute(
                "SELECT sid, leaf FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if head is None or not ids:
                return 0
            sid, leaf = head
            rows = conn.execute(
                "SELECT seq, node_id, parent FROM messages WHERE sid = ? AND dead IS NULL",
                (sid,),
            ).fetchall()
            rows.sort(key=_seq_of)
            parents = resolve_parent_ids((nid, parent) for _, nid, parent in rows)
            hidden = hidden_subtree(session_id, parents, leaf, ids)
            conn.executemany(
                "UPDATE messages SET dead = 1 WHERE sid = ? AND node_id = ?",
                [(sid, nid) for nid in hidden],
            )
            return len(hidden)

        return self._write(session_id, "tombstone", apply)

    def _vacuum_sync(self, session_id: str) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            head = conn.execute(
                "SELECT sid FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if head is None:
                return 0
            removed = conn.execute(
                "DELETE FROM messages WHERE sid = ? AND dead IS NOT NULL", (head[0],)
            ).rowcount
            if removed:
                # The tail may have been deleted; the next append compares against it.
                last = conn.execute(
                    "SELECT node_id FROM messages WHERE sid = ? ORDER BY seq DESC LIMIT 1",
                    (head[0],),
                ).fetchone()
                conn.execute(
                    "UPDATE sessions SET tail = ? WHERE sid = ?",
                    (None if last is None else last[0], head[0]),
                )
            return int(removed)

        return self._write(session_id, "vacuum", apply)

    def _apply(
        self,
        conn: sqlite3.Connection,
        commit: RuntimeCommit,
        rows: list[str | bytes],
        usage: dict[tuple[str, str], LlmUsage],
        record: str | bytes | None,
        state: list[_StateRow],
        meta: str | None,
    ) -> CommitResult:
        session_id = commit.session_id
        head = conn.execute(
            "SELECT sid, revision, leaf, tail, next_seq FROM sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        stamp = commit.stamp
        # 1. The turn stamp, before the compare-and-set, so a replayed turn that
        #    rebuilt from an old head can still retry its final commit.
        if stamp is not None and head is not None:
            seen = conn.execute(
                "SELECT commit_hash, revision FROM turn_stamps WHERE sid = ? AND turn_id = ?",
                (head[0], stamp.turn_id),
            ).fetchone()
            if seen is not None:
                if bytes(seen[0]) == bytes.fromhex(stamp.commit_hash):
                    return CommitResult(revision=seen[1], replayed=True)
                raise TurnCommitConflict(stamp, bytes(seen[0]).hex())
        # 2. Head-revision compare-and-set; only a brand-new session may expect None.
        actual: int | None = None if head is None else head[1]
        if commit.expected_revision != actual:
            raise HeadRevisionConflict(session_id, commit.expected_revision, actual)
        # 3. The graph: append (or replace), then the head, usage and stamp.
        if head is None:
            revision = 1
            cur = conn.execute(
                "INSERT INTO sessions (session_id, revision, turn_index, iteration, frame_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, revision, commit.turn_index, commit.iteration, commit.frame_id),
            )
            sid = int(cur.lastrowid or 0)
            leaf, tail, next_seq = None, None, 0
        else:
            sid, revision = head[0], head[1] + 1
            leaf, tail, next_seq = head[2], head[3], head[4]
        leaf, tail, next_seq = _write_graph(conn, sid, commit, rows, leaf, tail, next_seq)
        if commit.completed_claims:
            self._ensure_queue(conn)
            sqlite_complete(conn, commit.completed_claims, session_id=session_id)
        conn.execute(
            "UPDATE sessions SET revision = ?, turn_index = ?, iteration = ?, frame_id = ?,"
            " leaf = ?, tail = ?, next_seq = ? WHERE sid = ?",
            (
                revision,
                commit.turn_index,
                commit.iteration,
                commit.frame_id,
                leaf,
                tail,
                next_seq,
                sid,
            ),
        )
        for (source, model), delta in usage.items():
            prior = conn.execute(
                "SELECT usage_json FROM usage WHERE sid = ? AND source = ? AND model = ?",
                (sid, source, model),
            ).fetchone()
            total = delta
            if prior is not None:
                key = f"{source}/{model}"
                total = _decode_row(session_id, "usage", key, prior[0], LlmUsage) + delta
            conn.execute(
                "INSERT INTO usage (sid, source, model, usage_json) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sid, source, model) DO UPDATE SET usage_json = excluded.usage_json",
                (sid, source, model, encode(total).decode()),
            )
        _write_state(conn, sid, state)
        if commit.meta is not None:
            conn.execute(
                "INSERT INTO session_meta (session_id, created_at_ms, meta_json) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO NOTHING",
                (session_id, commit.meta.created_at_ms, meta),
            )
        if stamp is not None:
            conn.execute(
                "INSERT INTO turn_stamps (sid, turn_id, commit_hash, revision, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (sid, stamp.turn_id, bytes.fromhex(stamp.commit_hash), revision, record),
            )
        return CommitResult(revision=revision)


def _has_queue(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queued_work_batches'"
    ).fetchone()
    return found is not None


def _seq_of(row: tuple[Any, ...]) -> int:
    return int(row[0])


def _write_state(conn: sqlite3.Connection, sid: int, state: list[_StateRow]) -> None:
    """Apply a commit's state changes; a value with the stored digest is not rewritten."""
    deletes = [(sid, name) for name, packed in state if packed is None]
    upserts = [
        (sid, name, packed[0], int(packed[1]), packed[2])
        for name, packed in state
        if packed is not None
    ]
    if deletes:
        conn.executemany("DELETE FROM state WHERE sid = ? AND name = ?", deletes)
    if upserts:
        conn.executemany(
            "INSERT INTO state (sid, name, digest, compressed, data) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (sid, name) DO UPDATE SET digest = excluded.digest,"
            " compressed = excluded.compressed, data = excluded.data"
            " WHERE state.digest != excluded.digest",
            upserts,
        )


def _decode_meta_row(session_id: str, created_at_ms: object, text: object) -> SessionMeta:
    """A ``session_meta`` row back; its JSON must agree with its ``created_at_ms`` column."""
    meta = decode_meta(session_id, text)
    if meta.created_at_ms != created_at_ms:
        raise StoreCorruptError(
            session_id,
            "session_meta",
            session_id,
            f"created_at_ms is {meta.created_at_ms!r} in the JSON "
            f"but {created_at_ms!r} in its column",
            path="$.created_at_ms",
        )
    return meta


def _stored_session(
    session_id: str,
    head: Any,
    node_rows: list[Any],
    usage: tuple[UsageRow, ...],
    state: dict[str, bytes],
) -> StoredSession:
    """The loaded session from its head row and its live node rows in commit order."""
    parents = resolve_parent_ids((nid, parent) for _, nid, parent, _ in node_rows)
    nodes = tuple(
        GraphNode(message=_decode_message(session_id, nid, data), parent_id=parents[nid])
        for _, nid, _, data in node_rows
    )
    leaf = head[5]
    return StoredSession(
        session_id=session_id,
        revision=head[1],
        messages=stored_path(session_id, nodes, leaf),
        turn_index=head[2],
        iteration=head[3],
        frame_id=head[4],
        usage=usage,
        leaf_id=leaf,
        nodes=nodes,
        state=state,
    )


def _write_graph(
    conn: sqlite3.Connection,
    sid: int,
    commit: RuntimeCommit,
    rows: list[str | bytes],
    leaf: str | None,
    tail: str | None,
    next_seq: int,
) -> tuple[str | None, str | None, int]:
    """Insert a commit's nodes; returns the new ``(leaf, tail, next_seq)``."""
    session_id = commit.session_id
    if commit.replace_graph is not None:
        conn.execute("DELETE FROM messages WHERE sid = ?", (sid,))
        nodes = commit.replace_graph
        previous: str | None = None
        values = []
        for seq, (node, data) in enumerate(zip(nodes, rows, strict=True)):
            parent = None if node.parent_id == previous else node.parent_id
            values.append((sid, node.id, seq, parent, data))
            previous = node.id
        conn.executemany(
            "INSERT INTO messages (sid, node_id, seq, parent, message_json) VALUES (?, ?, ?, ?, ?)",
            values,
        )
        last = nodes[-1].id if nodes else None
        return (commit.leaf_id or last), last, len(nodes)
    parent = leaf
    if commit.parent_id is not None and commit.parent_id != leaf:
        parent = commit.parent_id
        _require_live(conn, sid, session_id, parent, "unknown_parent")
    if rows:
        values = []
        for i, (message, data) in enumerate(zip(commit.messages, rows, strict=True)):
            values.append((sid, message.id, next_seq + i, None if parent == tail else parent, data))
            parent = tail = message.id
        try:
            conn.executemany(
                "INSERT INTO messages (sid, node_id, seq, parent, message_json)"
                " VALUES (?, ?, ?, ?, ?)",
                values,
            )
        except sqlite3.IntegrityError:
            ids = [m.id for m in commit.messages]
            marks = ", ".join("?" * len(ids))
            taken = {
                r[0]
                for r in conn.execute(
                    f"SELECT node_id FROM messages WHERE sid = ? AND node_id IN ({marks})",
                    (sid, *ids),
                )
            }
            raise GraphError(
                session_id,
                next((i for i in ids if i in taken), None),
                "duplicate_id",
                "the session already has this id",
            ) from None
        next_seq += len(rows)
        leaf = commit.messages[-1].id
    if commit.leaf_id is not None and commit.leaf_id != leaf:
        if all(m.id != commit.leaf_id for m in commit.messages):
            _require_live(conn, sid, session_id, commit.leaf_id, "unknown_leaf")
        leaf = commit.leaf_id
    return leaf, tail, next_seq


def _require_live(
    conn: sqlite3.Connection, sid: int, session_id: str, node_id: str, problem: str
) -> None:
    row = conn.execute(
        "SELECT dead FROM messages WHERE sid = ? AND node_id = ?", (sid, node_id)
    ).fetchone()
    if row is None or row[0] is not None:
        what = "missing" if row is None else "tombstoned"
        raise GraphError(session_id, node_id, problem, f"the node is {what}")
