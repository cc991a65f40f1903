"""One SQLite connection on one worker thread, shared by the SQLite attachment store and manifest.

Each component stamps its own schema version in ``lash_attachment_schema``; a
version this library does not write is refused before any table is touched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .._sqlite import SqliteThread, connect, enable_wal
from ..store.base import StoreError

T = TypeVar("T")

BUSY_TIMEOUT_S = 15.0


class SqliteWorker:
    """Owns a connection on a single-thread executor; ``call`` runs a function there."""

    def __init__(self, path: str | Path, *, component: str, version: int, ddl: Sequence[str]):
        self.in_memory = str(path) == ":memory:"
        if not self.in_memory:
            file = Path(path)
            if file.is_dir():
                raise ValueError(f"{file} is a directory; give the database file's path")
            file.parent.mkdir(parents=True, exist_ok=True)
        self.label = f"{component} at {path}"
        self._path = str(path)
        self._component = component
        self._version = version
        self._ddl = ddl
        self._thread = SqliteThread(
            self._open,
            name=f"lash-{component}",
            closed_error=lambda: StoreError(f"{self.label} is closed"),
        )

    @property
    def closed(self) -> bool:
        """True once ``close``/``aclose`` ran."""
        return self._thread.closed

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread; ``sqlite3.Error`` becomes ``StoreError``."""
        return await self._thread.call(lambda: self._run(fn))

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._thread.connection()
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.label}: {exc}") from exc

    def close(self) -> None:
        """Close the connection and stop the thread; idempotent."""
        self._thread.close()

    async def aclose(self) -> None:
        """Close without blocking the event loop; idempotent."""
        await self._thread.aclose()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = connect(self._path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.label}: cannot open: {exc}") from exc
        try:
            if not self.in_memory:
                mode = enable_wal(conn, timeout=BUSY_TIMEOUT_S)
                if mode != "wal":
                    raise StoreError(
                        f"{self.label}: cannot enable WAL mode (journal_mode is {mode!r})"
                    )
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.label}: cannot open: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS lash_attachment_schema ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
            )
            row = conn.execute(
                "SELECT version FROM lash_attachment_schema WHERE component = ?",
                (self._component,),
            ).fetchone()
            if row is None:
                for statement in self._ddl:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO lash_attachment_schema (component, version) VALUES (?, ?)",
                    (self._component, self._version),
                )
            elif row[0] != self._version:
                raise StoreError(
                    f"{self.label}: schema version {row[0]!r} is not supported (this library "
                    f"reads version {self._version}); refusing to open it"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
