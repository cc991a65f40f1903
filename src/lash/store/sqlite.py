"""The embedded SQLite store (Durable tier), on stdlib ``sqlite3`` in WAL mode.

One connection, owned by one dedicated worker thread, does all the SQL; the
async methods hand work to that thread so the event loop never blocks on disk.
A commit is one ``BEGIN IMMEDIATE`` transaction that appends the turn's
messages (cost O(what the turn added), never O(history)); any failure rolls it
back completely. Message JSON is stored as text, or zlib-compressed when that
saves space (about 40 % for typical tool calls and results).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

from .._closing import AsyncClosing
from .._sqlite import SqliteThread, connect, enable_wal
from ..kernel.codec import encode
from ..kernel.llm import LlmUsage
from ..runtime.effects import DurabilityTier
from ._codec import decode_message as _decode_message
from ._codec import decode_row as _decode_row
from ._codec import decode_usage_rows
from ._codec import encode_message as _encode_message
from ._codec import pack as _pack
from .base import (
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    StoreCorruptError,
    StoredSession,
    StoreError,
    StoreSchemaError,
    TurnCommitConflict,
    check_commit,
    check_session_id,
)

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The schema version this module writes and reads; other versions are refused."""

DB_FILENAME = "lash.sqlite3"
"""The database file inside the store's directory."""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    # ``sid`` is a compact surrogate key, so message rows never repeat the session id.
    """CREATE TABLE IF NOT EXISTS sessions (
        sid INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL UNIQUE,
        revision INTEGER NOT NULL,
        turn_index INTEGER NOT NULL,
        iteration INTEGER NOT NULL,
        frame_id TEXT
    )""",
    # Append-only: a commit inserts its messages at the next ``seq``, never rewrites.
    # ``message_json`` is JSON text, or zlib-compressed JSON (a BLOB) when that
    # saves space; the BLOB declaration keeps SQLite from converting either.
    """CREATE TABLE IF NOT EXISTS messages (
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        seq INTEGER NOT NULL,
        message_json BLOB NOT NULL,
        PRIMARY KEY (sid, seq)
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
    """CREATE TABLE IF NOT EXISTS turn_stamps (
        sid INTEGER NOT NULL REFERENCES sessions (sid),
        turn_id TEXT NOT NULL,
        commit_hash BLOB NOT NULL,
        revision INTEGER NOT NULL,
        PRIMARY KEY (sid, turn_id)
    ) WITHOUT ROWID""",
)


class SqliteStore(AsyncClosing):
    """A durable session store in ``<path>/lash.sqlite3``.

    Several instances (and processes) may share one directory: every
    read-then-write runs under ``BEGIN IMMEDIATE``, so the head-revision
    compare-and-set has exactly one winner. Close with ``close()``/``aclose()``
    or use the store as a (sync or async) context manager.

    ``synchronous="normal"`` (the default) survives any process crash; after a
    power loss or OS crash the last few commits may be lost, but the database is
    never corrupt. ``"full"`` fsyncs on every commit.
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
        rows = [_pack(_encode_message(m)) for m in commit.messages]
        usage: dict[tuple[str, str], LlmUsage] = {}
        for row in commit.usage:
            key = (row.source, row.model)
            prior = usage.get(key)
            usage[key] = row.usage if prior is None else prior + row.usage
        return await self._call(lambda: self._commit_sync(commit, rows, usage))

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
            found = self._read_version(conn)
            if found is None:
                self._enable_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    found = self._read_version(conn)  # a concurrent opener may have won
                    if found is None:
                        for ddl in _SCHEMA:
                            conn.execute(ddl)
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
            if found != str(SCHEMA_VERSION):
                raise StoreSchemaError(
                    str(self._file),
                    f"schema version {found!r} is not supported "
                    f"(this library reads version {SCHEMA_VERSION}); the file was not changed",
                    found=found,
                    expected=SCHEMA_VERSION,
                )
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

    def _read_version(self, conn: sqlite3.Connection) -> str | None:
        """The stored schema version; None for an empty database; refuses foreign ones."""
        names = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchall()
        }
        if not names:
            return None
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
        return str(row[0])

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        mode = enable_wal(conn)
        if mode != "wal":
            raise StoreError(f"{self._file}: cannot enable WAL mode (journal_mode is {mode!r})")

    def _load_sync(self, session_id: str) -> StoredSession | None:
        conn = self._connection()
        try:
            conn.execute("BEGIN")  # one read snapshot for head, messages and usage
            try:
                head = conn.execute(
                    "SELECT sid, revision, turn_index, iteration, frame_id FROM sessions"
                    " WHERE session_id = ?",
                    (session_id,),
                ).fetchone()
                if head is None:
                    return None
                sid = head[0]
                message_rows = conn.execute(
                    "SELECT seq, message_json FROM messages WHERE sid = ? ORDER BY seq", (sid,)
                ).fetchall()
                usage_rows = conn.execute(
                    "SELECT source, model, usage_json FROM usage WHERE sid = ? ORDER BY usage_id",
                    (sid,),
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
        messages = tuple(_decode_message(session_id, seq, data) for seq, data in message_rows)
        usage = decode_usage_rows(session_id, usage_rows)
        return StoredSession(
            session_id=session_id,
            revision=head[1],
            messages=messages,
            turn_index=head[2],
            iteration=head[3],
            frame_id=head[4],
            usage=usage,
        )

    def _commit_sync(
        self,
        commit: RuntimeCommit,
        rows: list[str | bytes],
        usage: dict[tuple[str, str], LlmUsage],
    ) -> CommitResult:
        conn = self._connection()
        session_id = commit.session_id
        stamp = commit.stamp
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = self._apply(conn, commit, rows, usage)
                if result.replayed:
                    conn.execute("ROLLBACK")  # nothing was written
                else:
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._rows_written = conn.total_changes
        except sqlite3.Error as exc:
            turn = f" turn {stamp.turn_id!r}" if stamp is not None else ""
            raise StoreError(
                f"session {session_id!r}{turn}: commit failed and was rolled back: {exc}"
            ) from exc
        return result

    def _apply(
        self,
        conn: sqlite3.Connection,
        commit: RuntimeCommit,
        rows: list[str | bytes],
        usage: dict[tuple[str, str], LlmUsage],
    ) -> CommitResult:
        session_id = commit.session_id
        head = conn.execute(
            "SELECT sid, revision FROM sessions WHERE session_id = ?", (session_id,)
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
        # 3. Append, aggregate, bump, stamp.
        if head is None:
            revision = 1
            cur = conn.execute(
                "INSERT INTO sessions (session_id, revision, turn_index, iteration, frame_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_id, revision, commit.turn_index, commit.iteration, commit.frame_id),
            )
            sid = cur.lastrowid
            next_seq = 0
        else:
            sid, revision = head[0], head[1] + 1
            conn.execute(
                "UPDATE sessions SET revision = ?, turn_index = ?, iteration = ?, frame_id = ?"
                " WHERE sid = ?",
                (revision, commit.turn_index, commit.iteration, commit.frame_id, sid),
            )
            last = conn.execute("SELECT max(seq) FROM messages WHERE sid = ?", (sid,)).fetchone()
            next_seq = 0 if last[0] is None else last[0] + 1
        if rows:
            conn.executemany(
                "INSERT INTO messages (sid, seq, message_json) VALUES (?, ?, ?)",
                [(sid, next_seq + i, data) for i, data in enumerate(rows)],
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
        if stamp is not None:
            conn.execute(
                "INSERT INTO turn_stamps (sid, turn_id, commit_hash, revision) VALUES (?, ?, ?, ?)",
                (sid, stamp.turn_id, bytes.fromhex(stamp.commit_hash), revision),
            )
        return CommitResult(revision=revision)
