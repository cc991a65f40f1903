"""``SqliteJournalHost``: an engine-free durable effect host on one SQLite file.

Every effect is journaled under ``(session_id, turn_id, replay_key)`` with the
envelope's stable hash. A controller's ``run``:

1. in one ``BEGIN IMMEDIATE`` transaction, looks the key up: a completed row
   with the same hash returns its recorded outcome (the executor is not
   called); another hash is ``journal_hash_mismatch``; an in-progress row under
   another owner's live lease is waited for (polling with backoff); an expired
   lease, or no row, is claimed with a fresh fencing token;
2. executes the effect outside the transaction, renewing the lease meanwhile;
3. records the outcome as canonical JSON, only while it still holds the lease
   (or the lease lapsed unclaimed); when someone else finished first, their
   recorded outcome wins and ours is discarded.

A lease held by this host's own ``owner_id`` but not running in this process
is a leftover of a crash, so a restarted worker with a stable ``owner_id``
takes it over at once instead of waiting for it to expire. Executor
exceptions are crashes, not outcomes: the lease is released and the error
propagates (tool failures and provider errors arrive as outcome values).
Sleeps are durable timers: the due time is journaled with the claim, so a
replay only waits for what is left of it.

All SQL runs on one worker thread with its own connection (WAL), so the event
loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from .._closing import AsyncClosing
from .._sqlite import SqliteThread, connect, enable_wal
from ..kernel.codec import decode, encode
from ..kernel.errors import CodecError
from ..runtime.effects import (
    OUTCOME_TYPES,
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectHostError,
    EffectKind,
    EffectOutcome,
    SleepCommand,
    Slept,
    TurnScope,
)

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The journal schema version this module writes and reads."""

_POLL_FIRST_S = 0.025
_POLL_MAX_S = 0.5

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS journal_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS effect_journal (
        session_id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        replay_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        envelope_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('in_progress', 'completed')),
        outcome_json TEXT,
        lease_owner TEXT,
        lease_token TEXT,
        lease_expires_at_ms INTEGER NOT NULL DEFAULT 0,
        due_at_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        PRIMARY KEY (session_id, turn_id, replay_key)
    ) WITHOUT ROWID""",
)


class JournalError(EffectHostError):
    """A journal operation failed; ``path`` names the journal file, ``replay_key`` the effect."""

    def __init__(
        self, code: str, message: str, *, path: str, replay_key: str | None = None
    ) -> None:
        where = path if replay_key is None else f"{path} [{replay_key}]"
        super().__init__(code, f"{where}: {message}")
        self.path = path
        self.replay_key = replay_key


class JournalEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One journal row, as ``SqliteJournalHost.entries`` reports it."""

    session_id: str
    turn_id: str
    replay_key: str
    kind: str
    envelope_hash: str
    status: str
    attempts: int
    lease_owner: str | None = None
    outcome_json: str | None = None


# Row columns read by the controller, in this order.
_ROW = (
    "envelope_hash, status, outcome_json, lease_owner, lease_token, lease_expires_at_ms, due_at_ms"
)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class SqliteJournalHost(AsyncClosing):
    """A durable effect host journaling every effect in one SQLite file.

    ``owner_id`` identifies this worker in leases (default: host, pid and a
    random suffix); give a restarted worker the same id to let it take over its
    own crashed leases at once. ``lease_seconds`` is how long a claim lives
    without renewal; ``wait_seconds`` bounds how long a controller waits for an
    effect another live owner is running (None: no bound). ``clock`` returns
    wall-clock seconds (tests inject one).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        owner_id: str | None = None,
        lease_seconds: float = 30.0,
        wait_seconds: float | None = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        if owner_id is not None and not owner_id.strip():
            raise ValueError("owner_id must be non-blank")
        file = Path(path)
        if file.exists() and file.is_dir():
            raise ValueError(f"SqliteJournalHost path {file} is a directory; name a file")
        file.parent.mkdir(parents=True, exist_ok=True)
        self._file = file
        self._path = str(file)
        self.owner_id = owner_id or _default_owner()
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._running: set[tuple[str, str, str]] = set()
        self._thread = SqliteThread(
            self._open,
            name="lash-journal",
            closed_error=lambda: self._error("journal_closed", "the journal host is closed"),
        )

    # ------------------------------------------------------------------ public

    @property
    def tier(self) -> DurabilityTier:
        """Always durable."""
        return DurabilityTier.DURABLE

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._file

    def scoped(self, scope: TurnScope) -> EffectController:
        """A controller journaling the effects of ``scope``'s turn."""
        return _JournalController(self, scope)

    async def entries(self, session_id: str, turn_id: str | None = None) -> list[JournalEntry]:
        """The journal rows of a session (or one turn), in key order."""
        return await self._call(lambda: self._entries_sync(session_id, turn_id))

    def close(self) -> None:
        """Close the connection and stop the worker thread (idempotent)."""
        self._thread.close()

    async def aclose(self) -> None:
        """Close without blocking the event loop (idempotent)."""
        await self._thread.aclose()

    def __repr__(self) -> str:
        thread = getattr(self, "_thread", None)  # absent while the constructor runs
        state = "open" if thread is not None and not thread.closed else "closed"
        return f"SqliteJournalHost({self._path!r}, owner={self.owner_id!r}, {state})"

    # ------------------------------------------------------------------ worker side

    def _error(self, code: str, message: str, key: str | None = None) -> JournalError:
        return JournalError(code, message, path=self._path, replay_key=key)

    async def _call(self, fn: Callable[[], T], key: str | None = None) -> T:
        try:
            return await self._thread.call(fn)
        except JournalError as exc:
            if exc.code == "journal_closed" and key is not None and exc.replay_key is None:
                raise self._error("journal_closed", "the journal host is closed", key) from exc
            raise
        except sqlite3.Error as exc:
            raise self._error("journal_unavailable", f"{type(exc).__name__}: {exc}", key) from exc

    def _connection(self) -> sqlite3.Connection:
        return self._thread.connection()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = connect(self._path)
        except sqlite3.Error as exc:
            raise self._error("journal_unavailable", f"cannot open: {exc}") from exc
        try:
            enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for ddl in _SCHEMA:
                    conn.execute(ddl)
                conn.execute(
                    "INSERT OR IGNORE INTO journal_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                found = conn.execute(
                    "SELECT value FROM journal_meta WHERE key = 'schema_version'"
                ).fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if found != str(SCHEMA_VERSION):
                raise self._error(
                    "journal_schema",
                    f"schema version {found!r} is not supported (this library reads "
                    f"version {SCHEMA_VERSION})",
                )
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error("journal_unavailable", f"not a usable journal: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction on the worker thread."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _entries_sync(self, session_id: str, turn_id: str | None) -> list[JournalEntry]:
        sql = (
            "SELECT session_id, turn_id, replay_key, kind, envelope_hash, status, attempts,"
            " lease_owner, outcome_json FROM effect_journal WHERE session_id = ?"
        )
        params: tuple[str, ...] = (session_id,)
        if turn_id is not None:
            sql += " AND turn_id = ?"
            params = (session_id, turn_id)
        rows = self._connection().execute(sql + " ORDER BY turn_id, replay_key", params)
        return [
            JournalEntry(
                session_id=r[0],
                turn_id=r[1],
                replay_key=r[2],
                kind=r[3],
                envelope_hash=r[4],
                status=r[5],
                attempts=r[6],
                lease_owner=r[7],
                outcome_json=r[8],
            )
            for r in rows.fetchall()
        ]

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


# Decisions the claim transaction hands back to the controller.
class _Recorded(msgspec.Struct, frozen=True):
    outcome_json: str
    due_at_ms: int | None


class _Claimed(msgspec.Struct, frozen=True):
    token: str
    due_at_ms: int | None


class _Wait(msgspec.Struct, frozen=True):
    owner: str | None


class _Landed(msgspec.Struct, frozen=True):
    """``_finish``: our outcome is the recorded one."""


class _JournalController:
    """Journals the effects of one turn; see the module docstring for the protocol."""

    __slots__ = ("_host", "_scope")

    def __init__(self, host: SqliteJournalHost, scope: TurnScope) -> None:
        self._host = host
        self._scope = scope

    @property
    def tier(self) -> DurabilityTier:
        """Always durable."""
        return DurabilityTier.DURABLE

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        """The recorded outcome of ``envelope``, executing it only if none is recorded."""
        host = self._host
        key = envelope.replay_key
        kind = envelope.invocation.kind
        digest = envelope.stable_hash()
        ident = (self._scope.session_id, self._scope.turn_id, key)
        deadline = None if host.wait_seconds is None else time.monotonic() + host.wait_seconds
        delay = _POLL_FIRST_S
        while True:
            local = ident in host._running

            def claim(c: sqlite3.Connection, local: bool = local) -> _Recorded | _Claimed | _Wait:
                return self._claim(c, ident, kind, digest, envelope, local)

            decision = await host._call(lambda: host._tx(claim), key)
            if isinstance(decision, _Recorded):
                return await self._replayed(envelope, decision)
            if isinstance(decision, _Claimed):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise host._error(
                    "journal_wait_timeout",
                    f"still in progress under {decision.owner!r} after {host.wait_seconds} s",
                    key,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
        return await self._execute(envelope, executor, ident, digest, decision)

    # -------------------------------------------------------------- steps

    def _claim(
        self,
        conn: sqlite3.Connection,
        ident: tuple[str, str, str],
        kind: EffectKind,
        digest: str,
        envelope: EffectEnvelope,
        running_here: bool,
    ) -> _Recorded | _Claimed | _Wait:
        host = self._host
        now = host._now_ms()
        row = conn.execute(
            f"SELECT {_ROW} FROM effect_journal"
            " WHERE session_id = ? AND turn_id = ? AND replay_key = ?",
            ident,
        ).fetchone()
        lease_ms = int(host.lease_seconds * 1000)
        token = uuid.uuid4().hex
        command = envelope.command
        if row is None:
            due = now + command.duration_ms if isinstance(command, SleepCommand) else None
            conn.execute(
                "INSERT INTO effect_journal (session_id, turn_id, replay_key, kind,"
                " envelope_hash, status, lease_owner, lease_token, lease_expires_at_ms,"
                " due_at_ms, attempts, created_at_ms, updated_at_ms)"
                " VALUES (?, ?, ?, ?, ?, 'in_progress', ?, ?, ?, ?, 1, ?, ?)",
                (*ident, kind.value, digest, host.owner_id, token, now + lease_ms, due, now, now),
            )
            return _Claimed(token=token, due_at_ms=due)
        stored_hash, status, outcome_json, owner, _tok, expires, due = row
        if stored_hash != digest:
            raise host._error(
                "journal_hash_mismatch",
                f"the journal recorded envelope hash {stored_hash[:12]}... for this key, "
                f"but the replayed envelope hashes to {digest[:12]}...; the turn is not "
                "replaying the same effects",
                ident[2],
            )
        if status == "completed":
            return _Recorded(outcome_json=outcome_json, due_at_ms=due)
        live = expires > now
        if live and (owner != host.owner_id or running_here):
            return _Wait(owner=owner)
        conn.execute(
            "UPDATE effect_journal SET lease_owner = ?, lease_token = ?, lease_expires_at_ms = ?,"
            " attempts = attempts + 1, updated_at_ms = ?"
            " WHERE session_id = ? AND turn_id = ? AND replay_key = ?",
            (host.owner_id, token, now + lease_ms, now, *ident),
        )
        return _Claimed(token=token, due_at_ms=due)

    def _decode(self, envelope: EffectEnvelope, outcome_json: str) -> EffectOutcome:
        kind = envelope.invocation.kind
        try:
            outcome: EffectOutcome = decode(outcome_json, OUTCOME_TYPES[kind])
        except CodecError as exc:
            raise self._host._error(
                "journal_corrupt",
                f"the recorded {kind.value} outcome does not decode: {exc}",
                envelope.replay_key,
            ) from exc
        return outcome

    async def _replayed(self, envelope: EffectEnvelope, recorded: _Recorded) -> EffectOutcome:
        outcome = self._decode(envelope, recorded.outcome_json)
        if recorded.due_at_ms is not None:  # a durable timer that is still running
            await self._sleep_until(recorded.due_at_ms)
        return outcome

    async def _sleep_until(self, due_at_ms: int) -> None:
        remaining = due_at_ms - self._host._now_ms()
        if remaining > 0:
            await asyncio.sleep(remaining / 1000)

    async def _execute(
        self,
        envelope: EffectEnvelope,
        executor: EffectExecutor,
        ident: tuple[str, str, str],
        digest: str,
        claim: _Claimed,
    ) -> EffectOutcome:
        host = self._host
        host._running.add(ident)
        renewer = asyncio.ensure_future(self._renew(ident, claim.token))
        try:
            try:
                command = envelope.command
                if isinstance(command, SleepCommand) and claim.due_at_ms is not None:
                    await self._sleep_until(claim.due_at_ms)
                    outcome: EffectOutcome = Slept(duration_ms=command.duration_ms)
                else:
                    outcome = await executor.execute(envelope)
                try:
                    data = encode(outcome).decode()
                except CodecError as exc:
                    raise host._error(
                        "journal_unencodable", f"the outcome cannot be journaled: {exc}", ident[2]
                    ) from exc
            except BaseException:
                renewer.cancel()
                host._running.discard(ident)
                await asyncio.shield(self._release(ident, claim.token, envelope.replay_key))
                raise
            renewer.cancel()
            finished = await asyncio.shield(
                host._call(
                    lambda: host._tx(lambda c: self._finish(c, ident, digest, claim.token, data)),
                    ident[2],
                )
            )
        finally:
            host._running.discard(ident)
        if isinstance(finished, _Landed):
            return outcome
        if isinstance(finished, _Recorded):
            return self._decode(envelope, finished.outcome_json)
        # Another owner took the lease over and is still running it: use theirs.
        return await self.run(envelope, executor)

    def _finish(
        self,
        conn: sqlite3.Connection,
        ident: tuple[str, str, str],
        digest: str,
        token: str,
        data: str,
    ) -> _Landed | _Recorded | _Wait:
        """Record ``data`` (``_Landed``), or answer the winner's record or a new owner's wait."""
        host = self._host
        now = host._now_ms()
        row = conn.execute(
            f"SELECT {_ROW} FROM effect_journal"
            " WHERE session_id = ? AND turn_id = ? AND replay_key = ?",
            ident,
        ).fetchone()
        if row is None:
            raise host._error("journal_corrupt", "the claimed row disappeared", ident[2])
        stored_hash, status, outcome_json, owner, stored_token, expires, due = row
        if stored_hash != digest:
            raise host._error(
                "journal_hash_mismatch",
                f"the key was re-claimed with envelope hash {stored_hash[:12]}...",
                ident[2],
            )
        if status == "completed":
            return _Recorded(outcome_json=outcome_json, due_at_ms=due)
        if stored_token != token and expires > now:
            return _Wait(owner=owner)
        conn.execute(
            "UPDATE effect_journal SET status = 'completed', outcome_json = ?,"
            " lease_token = NULL, lease_expires_at_ms = 0, updated_at_ms = ?"
            " WHERE session_id = ? AND turn_id = ? AND replay_key = ?",
            (data, now, *ident),
        )
        return _Landed()

    async def _renew(self, ident: tuple[str, str, str], token: str) -> None:
        host = self._host
        interval = host.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)

            def renew() -> None:
                host._connection().execute(
                    "UPDATE effect_journal SET lease_expires_at_ms = ?, updated_at_ms = ?"
                    " WHERE session_id = ? AND turn_id = ? AND replay_key = ?"
                    " AND lease_token = ? AND status = 'in_progress'",
                    (
                        host._now_ms() + int(host.lease_seconds * 1000),
                        host._now_ms(),
                        *ident,
                        token,
                    ),
                )

            try:
                await host._call(renew, ident[2])
            except JournalError:
                return  # finishing will find out whether we still hold the lease

    async def _release(self, ident: tuple[str, str, str], token: str, key: str) -> None:
        """Let the claim lapse now, so a retry need not wait for the lease to expire."""
        host = self._host

        def release() -> None:
            host._connection().execute(
                "UPDATE effect_journal SET lease_owner = NULL, lease_token = NULL,"
                " lease_expires_at_ms = 0"
                " WHERE session_id = ? AND turn_id = ? AND replay_key = ?"
                " AND lease_token = ? AND status = 'in_progress'",
                (*ident, token),
            )

        with contextlib.suppress(JournalError, RuntimeError):  # else the lease just expires
            await host._call(release, key)


__all__: list[str] = ["SCHEMA_VERSION", "JournalEntry", "JournalError", "SqliteJournalHost"]
