"""What every SQLite-backed part shares: one connection owned by one worker thread.

The session store, the attachment store and manifest, and the journal host
all keep a single ``sqlite3`` connection on a dedicated thread. The async
methods hand work to that thread, so the event loop never blocks on disk. Each
part keeps only what differs: its schema checks and its error types.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
"""How long a connection waits for another writer before giving up."""


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """True when ``exc`` means another connection holds the lock."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def connect(path: str, *, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with a busy timeout."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


def enable_wal(conn: sqlite3.Connection, *, timeout: float = BUSY_TIMEOUT_S) -> str:
    """Switch to WAL and return the journal mode SQLite reports.

    The switch ignores the busy handler, so it is retried by hand while another
    connection holds the lock; a lock held past the busy timeout raises.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


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


class SqliteThread:
    """One SQLite connection, opened and used only on one worker thread.

    ``opener`` runs on that thread and returns the connection (it raises, and
    the thread stops, when the database cannot be used). ``closed_error`` builds
    the exception for work asked of a closed owner.
    """

    __slots__ = ("_closed", "_closed_error", "_conn", "_executor")

    def __init__(
        self,
        opener: Callable[[], sqlite3.Connection],
        *,
        name: str,
        closed_error: Callable[[], Exception],
    ) -> None:
        self._closed_error = closed_error
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            self._conn = self._executor.submit(opener).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            self._closed = True
            raise

    @property
    def closed(self) -> bool:
        """True once ``close`` or ``aclose`` ran."""
        return self._closed

    def connection(self) -> sqlite3.Connection:
        """The connection (call only from functions running on the worker thread)."""
        if self._conn is None:
            raise self._closed_error()
        return self._conn

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread and return its result."""
        if self._closed:
            raise self._closed_error()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except RuntimeError as exc:
            if self._closed:  # shut down while this call was being scheduled
                raise self._closed_error() from exc
            raise

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
