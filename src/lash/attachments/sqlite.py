"""SQLite attachment store and manifest (Durable), on stdlib ``sqlite3`` in WAL mode.

Each object owns one connection on one worker thread. Keep a store and a
manifest in separate files: a sweep holds the manifest's write lock while it
deletes from the store. Ids are bound as parameters, never formatted into SQL,
and are validated before any query.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec

from .._closing import AsyncClosing
from .._sqlite import in_write_transaction
from ..kernel.attachments import AttachmentRef
from ..runtime.effects import DurabilityTier
from ..store.base import check_session_id
from ._sqlite import SqliteWorker
from .base import (
    DEFAULT_CLOCK,
    AttachmentCorrupt,
    AttachmentNotFound,
    BytesLike,
    Clock,
    check_attachment_id,
    check_attachment_ids,
    content_id,
    prepare_put,
)
from .manifest import ManifestEntry, ManifestStatus

_STORE_DDL = (
    # A rowid table (not WITHOUT ROWID): rows hold large BLOBs. ``data`` is the
    # last column so metadata reads never touch its overflow pages.
    """CREATE TABLE attachments (
        id TEXT NOT NULL UNIQUE,
        mime TEXT NOT NULL,
        byte_len INTEGER NOT NULL,
        width INTEGER,
        height INTEGER,
        label TEXT,
        stored_at REAL NOT NULL,
        data BLOB NOT NULL
    )""",
)

_MANIFEST_DDL = (
    """CREATE TABLE attachment_manifest (
        session_id TEXT NOT NULL,
        attachment_id TEXT NOT NULL,
        intent_at REAL NOT NULL,
        committed_at REAL,
        PRIMARY KEY (session_id, attachment_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX attachment_manifest_by_attachment"
    " ON attachment_manifest (attachment_id, committed_at)",
)


class SqliteAttachmentStore(AsyncClosing):
    """Attachments as BLOB rows in one SQLite file; bytes are hash-checked on every read.

    ``path=":memory:"`` gives a private in-memory database (Inline tier).
    """

    def __init__(self, path: str | Path, *, clock: Clock = DEFAULT_CLOCK) -> None:
        self._clock = clock
        self._db = SqliteWorker(path, component="attachment_store", version=1, ddl=_STORE_DDL)

    @property
    def tier(self) -> DurabilityTier:
        """Durable, unless the database is ``:memory:``."""
        return DurabilityTier.INLINE if self._db.in_memory else DurabilityTier.DURABLE

    async def put(
        self,
        data: BytesLike,
        *,
        mime: str,
        width: int | None = None,
        height: int | None = None,
        label: str | None = None,
    ) -> AttachmentRef:
        """Store ``data`` under its SHA-256; see ``AttachmentStore.put``."""
        blob, ref = await prepare_put(data, mime=mime, width=width, height=height, label=label)
        return await self.put_prepared(blob, ref)

    async def put_prepared(self, blob: bytes, ref: AttachmentRef) -> AttachmentRef:
        """Store bytes already hashed by ``prepare_put`` (``ref`` must be theirs)."""
        now = self._clock()

        def write(conn: sqlite3.Connection) -> None:
            # Existing bytes are kept unless their length is wrong (a repair).
            conn.execute(
                "INSERT INTO attachments"
                " (id, mime, byte_len, width, height, label, stored_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET mime = excluded.mime,"
                " width = excluded.width, height = excluded.height, label = excluded.label,"
                " stored_at = excluded.stored_at, byte_len = excluded.byte_len,"
                " data = CASE WHEN length(data) = excluded.byte_len"
                " THEN data ELSE excluded.data END",
                (ref.id, ref.mime, ref.byte_len, ref.width, ref.height, ref.label, now, blob),
            )

        await self._db.call(write)
        return ref

    async def _row(self, attachment_id: str, sql: str) -> tuple[Any, ...]:
        check_attachment_id(attachment_id)
        row = await self._db.call(lambda conn: conn.execute(sql, (attachment_id,)).fetchone())
        if row is None:
            raise AttachmentNotFound(attachment_id)
        return tuple(row)

    async def get(self, attachment_id: str) -> bytes:
        """The stored bytes; ``AttachmentCorrupt`` if they no longer hash to the id."""
        (data,) = await self._row(attachment_id, "SELECT data FROM attachments WHERE id = ?")
        if not isinstance(data, bytes):
            raise AttachmentCorrupt(attachment_id, f"data column holds {type(data).__name__}")
        if content_id(data) != attachment_id:
            raise AttachmentCorrupt(attachment_id, "stored bytes do not match their SHA-256")
        return data

    async def meta(self, attachment_id: str) -> AttachmentRef:
        """The stored reference."""
        mime, byte_len, width, height, label = await self._row(
            attachment_id,
            "SELECT mime, byte_len, width, height, label FROM attachments WHERE id = ?",
        )
        fields = {"id": attachment_id, "mime": mime, "byte_len": byte_len}
        fields.update(width=width, height=height, label=label)
        try:
            return msgspec.convert(fields, AttachmentRef)
        except (msgspec.ValidationError, ValueError) as exc:
            raise AttachmentCorrupt(attachment_id, f"bad metadata row: {exc}") from exc

    async def stored_at(self, attachment_id: str) -> float:
        """When the bytes were last put."""
        (when,) = await self._row(attachment_id, "SELECT stored_at FROM attachments WHERE id = ?")
        if not isinstance(when, int | float):
            raise AttachmentCorrupt(attachment_id, f"stored_at is {when!r}")
        return float(when)

    async def list_ids(self) -> list[str]:
        """Every stored id, sorted."""
        rows = await self._db.call(
            lambda conn: conn.execute("SELECT id FROM attachments ORDER BY id").fetchall()
        )
        return [r[0] for r in rows]

    async def delete(self, attachment_id: str) -> bool:
        """Remove an attachment; True if it was present."""
        check_attachment_id(attachment_id)
        count = await self._db.call(
            lambda conn: (
                conn.execute("DELETE FROM attachments WHERE id = ?", (attachment_id,)).rowcount
            )
        )
        return bool(count)

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()

    async def aclose(self) -> None:
        """Close without blocking the event loop; idempotent."""
        await self._db.aclose()

    def __repr__(self) -> str:
        return f"SqliteAttachmentStore({self._db.label!r})"


def _status_row(row: tuple[Any, ...] | None) -> ManifestStatus | None:
    if row is None or row[1] is None:
        return None
    return ManifestStatus(committed=bool(row[0]), newest_intent_at=float(row[1]))


_STATUS_SQL = (
    "SELECT max(committed_at IS NOT NULL), max(intent_at)"
    " FROM attachment_manifest WHERE attachment_id = ?"
)


class _SqliteHeld:
    def __init__(self, db: SqliteWorker, attachment_id: str, status: ManifestStatus | None):
        self._db = db
        self._attachment_id = attachment_id
        self._status = status

    @property
    def status(self) -> ManifestStatus | None:
        return self._status

    async def forget(self) -> int:
        attachment_id = self._attachment_id
        count: int = await self._db.call(
            lambda conn: (
                conn.execute(
                    "DELETE FROM attachment_manifest WHERE attachment_id = ?", (attachment_id,)
                ).rowcount
            )
        )
        return count


def _begin_and_read(conn: sqlite3.Connection, attachment_id: str) -> ManifestStatus | None:
    conn.execute("BEGIN IMMEDIATE")
    return _status_row(conn.execute(_STATUS_SQL, (attachment_id,)).fetchone())


def _end(conn: sqlite3.Connection, commit: bool) -> None:
    if conn.in_transaction:
        conn.execute("COMMIT" if commit else "ROLLBACK")


class SqliteAttachmentManifest(AsyncClosing):
    """The manifest as one SQLite table keyed by ``(session_id, attachment_id)``.

    A ``hold`` is a ``BEGIN IMMEDIATE`` transaction, so it excludes writers in
    other processes sharing the file as well as in this one.
    """

    def __init__(self, path: str | Path, *, clock: Clock = DEFAULT_CLOCK) -> None:
        self._clock = clock
        self._db = SqliteWorker(path, component="attachment_manifest", version=1, ddl=_MANIFEST_DDL)
        self._lock = asyncio.Lock()

    @property
    def tier(self) -> DurabilityTier:
        """Durable, unless the database is ``:memory:``."""
        return DurabilityTier.INLINE if self._db.in_memory else DurabilityTier.DURABLE

    async def record_intent(
        self, session_id: str, attachment_id: str, *, at: float | None = None
    ) -> None:
        """See ``AttachmentManifest.record_intent``."""
        check_session_id(session_id)
        check_attachment_id(attachment_id)
        when = self._clock() if at is None else float(at)
        async with self._lock:
            await self._db.call(
                lambda conn: conn.execute(
                    "INSERT INTO attachment_manifest (session_id, attachment_id, intent_at)"
                    " VALUES (?, ?, ?) ON CONFLICT (session_id, attachment_id)"
                    " DO UPDATE SET intent_at = max(intent_at, excluded.intent_at)",
                    (session_id, attachment_id, when),
                )
            )

    async def mark_committed(
        self,
        session_id: str,
        attachment_ids: Iterable[str | AttachmentRef],
        *,
        at: float | None = None,
    ) -> None:
        """See ``AttachmentManifest.mark_committed``."""
        check_session_id(session_id)
        ids = check_attachment_ids(attachment_ids)
        if not ids:
            return
        when = self._clock() if at is None else float(at)
        rows = [(session_id, attachment_id, when, when) for attachment_id in ids]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO attachment_manifest"
                " (session_id, attachment_id, intent_at, committed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (session_id, attachment_id)"
                " DO UPDATE SET committed_at = coalesce(committed_at, excluded.committed_at)",
                rows,
            )

        async with self._lock:
            await self._db.call(lambda conn: in_write_transaction(conn, write))

    async def entries(
        self, *, session_id: str | None = None, attachment_id: str | None = None
    ) -> list[ManifestEntry]:
        """See ``AttachmentManifest.entries``."""
        if session_id is not None:
            check_session_id(session_id)
        if attachment_id is not None:
            check_attachment_id(attachment_id)
        async with self._lock:
            rows = await self._db.call(
                lambda conn: conn.execute(
                    "SELECT session_id, attachment_id, intent_at, committed_at"
                    " FROM attachment_manifest"
                    " WHERE (?1 IS NULL OR session_id = ?1) AND (?2 IS NULL OR attachment_id = ?2)"
                    " ORDER BY attachment_id, session_id",
                    (session_id, attachment_id),
                ).fetchall()
            )
        return [
            ManifestEntry(session_id=s, attachment_id=a, intent_at=i, committed_at=c)
            for s, a, i, c in rows
        ]

    async def statuses(self) -> dict[str, ManifestStatus]:
        """See ``AttachmentManifest.statuses``."""
        async with self._lock:
            rows = await self._db.call(
                lambda conn: conn.execute(
                    "SELECT attachment_id, max(committed_at IS NOT NULL), max(intent_at)"
                    " FROM attachment_manifest GROUP BY attachment_id"
                ).fetchall()
            )
        return {
            row[0]: ManifestStatus(committed=bool(row[1]), newest_intent_at=float(row[2]))
            for row in rows
        }

    @asynccontextmanager
    async def hold(self, attachment_id: str) -> AsyncIterator[_SqliteHeld]:
        """See ``AttachmentManifest.hold``."""
        check_attachment_id(attachment_id)
        async with self._lock:
            try:
                status = await self._db.call(lambda conn: _begin_and_read(conn, attachment_id))
            except BaseException:
                await self._db.call(lambda conn: _end(conn, commit=False))
                raise
            try:
                yield _SqliteHeld(self._db, attachment_id, status)
            except BaseException:
                await self._db.call(lambda conn: _end(conn, commit=False))
                raise
            await self._db.call(lambda conn: _end(conn, commit=True))

    async def forget_session(self, session_id: str) -> int:
        """See ``AttachmentManifest.forget_session``."""
        check_session_id(session_id)
        async with self._lock:
            count: int = await self._db.call(
                lambda conn: (
                    conn.execute(
                        "DELETE FROM attachment_manifest WHERE session_id = ?", (session_id,)
                    ).rowcount
                )
            )
        return count

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._db.close()

    async def aclose(self) -> None:
        """Close without blocking the event loop; idempotent."""
        await self._db.aclose()

    def __repr__(self) -> str:
        return f"SqliteAttachmentManifest({self._db.label!r})"
