"""One SQLite connection on one worker thread, shared by the SQLite attachment store and manifest.

Each component stamps its own schema version in ``lash_attachment_schema``; a
version this library does not write is refused before any table is touched.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..store.base import StoreError

T = TypeVar("T")

BUSY_TIMEOUT_S = 15.0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lash-{component}")
        try:
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            self._closed = True
            raise

    @property
    def closed(self) -> bool:
        """True once ``close``/``aclose`` ran."""
        return self._closed

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread; ``sqlite3.Error`` becomes ``StoreError``."""
        if self._closed:
            raise StoreError(f"{self.label} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn)
        except RuntimeError as exc:
            if self._closed:
                raise StoreError(f"{self.label} is closed") from exc
            raise

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.label} is closed")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(f"{self.label}: {exc}") from exc

    def close(self) -> None:
        """Close the connection and stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(self._close).result()
        finally:
            self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Close without blocking the event loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.label}: cannot open: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.in_memory:
                self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.label}: cannot open: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

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

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> None:
        # The switch to WAL ignores the busy handler, so retry it by hand.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot enable WAL mode (journal_mode is {mode!r})")


def in_write_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``; roll back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
