"""The store contract: load a session, commit a turn atomically and idempotently."""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..kernel.codec import canonical_hash
from ..kernel.llm import LlmUsage
from ..kernel.messages import Message
from ..runtime.effects import DurabilityTier

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class UsageRow(msgspec.Struct, **_S):
    """Token usage booked to one (source, model) pair."""

    source: str
    model: str
    usage: LlmUsage


class TurnStamp(msgspec.Struct, **_S):
    """Identifies a turn's final commit; a retry with the same hash is the same commit."""

    session_id: str
    turn_id: str
    commit_hash: str


class RuntimeCommit(msgspec.Struct, **_S):
    """What one turn adds to a session; O(the turn), never O(history).

    Only a session's first commit may leave ``expected_revision`` unset.
    """

    session_id: str
    expected_revision: int | None
    messages: tuple[Message, ...] = ()
    turn_index: int = 0
    iteration: int = 0
    usage: tuple[UsageRow, ...] = ()
    frame_id: str | None = None
    """The agent frame the session is in after this commit (None: the default frame)."""
    stamp: TurnStamp | None = None


def commit_hash(commit: RuntimeCommit) -> str:
    """The hash a stamp carries: the commit without its revision and stamp."""
    scrubbed = msgspec.structs.replace(commit, expected_revision=None, stamp=None)
    return canonical_hash(scrubbed)


class StoredSession(msgspec.Struct, **_S):
    """A session as loaded: history, counters and the usage ledger."""

    session_id: str
    revision: int
    messages: tuple[Message, ...] = ()
    turn_index: int = 0
    iteration: int = 0
    usage: tuple[UsageRow, ...] = ()
    frame_id: str | None = None


class CommitResult(msgspec.Struct, **_S):
    """The revision a commit produced; ``replayed`` when it had already landed."""

    revision: int
    replayed: bool = False


class StoreError(Exception):
    """A store refused or failed an operation."""


class HeadRevisionConflict(StoreError):
    """The session moved on since the committer loaded it."""

    def __init__(self, session_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"session {session_id!r}: expected head revision {expected}, found {actual}"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class TurnCommitConflict(StoreError):
    """A turn was committed before with different content."""

    def __init__(self, stamp: TurnStamp, stored_hash: str) -> None:
        super().__init__(
            f"session {stamp.session_id!r} turn {stamp.turn_id!r} was committed with hash "
            f"{stored_hash[:12]}..., not {stamp.commit_hash[:12]}..."
        )
        self.stamp = stamp


class StoreSchemaError(StoreError):
    """A database holds a schema this library does not read; it was left untouched.

    ``location`` names the database (a file, a PostgreSQL schema); ``found`` and
    ``expected`` are the schema versions.
    """

    def __init__(
        self, location: str, message: str, *, found: str | None = None, expected: int
    ) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.found = found
        self.expected = expected


class StoreCorruptError(StoreError):
    """A stored row could not be decoded; names the session, table, row and JSON path."""

    def __init__(
        self, session_id: str, table: str, row: int | str, reason: str, *, path: str = "$"
    ) -> None:
        super().__init__(
            f"session {session_id!r}: corrupt row {row} in table {table!r} at {path}: {reason}"
        )
        self.session_id = session_id
        self.table = table
        self.row = row
        self.path = path
        self.reason = reason


def check_session_id(session_id: object) -> str:
    """``session_id`` if it is a non-blank string every backend can store, else ``ValueError``."""
    if not isinstance(session_id, str) or not session_id.strip():
        raise ValueError(f"session id must be a non-blank string, got {session_id!r}")
    if "\x00" in session_id:
        raise ValueError(f"session id must not contain NUL characters, got {session_id!r}")
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"session id must be valid Unicode text (no lone surrogates), got {session_id!r}"
        ) from None
    return session_id


def check_commit(commit: RuntimeCommit) -> None:
    """Refuse a malformed commit before any store is touched (``ValueError``)."""
    session_id = check_session_id(commit.session_id)
    stamp = commit.stamp
    if stamp is not None:
        if stamp.session_id != session_id:
            raise ValueError(
                f"turn {stamp.turn_id!r}: the stamp names session {stamp.session_id!r}, "
                f"the commit {session_id!r}"
            )
        if stamp.commit_hash != commit_hash(commit):
            raise ValueError(f"turn {stamp.turn_id!r}: the stamp's hash does not match the commit")


class SessionStore(Protocol):
    """Loads sessions and applies commits, each as one atomic step."""

    @property
    def tier(self) -> DurabilityTier:
        """Whether commits survive a crash."""

    async def load(self, session_id: str) -> StoredSession | None:
        """The stored session, or None if it was never committed."""

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        """Apply ``commit`` atomically: stamp check, then revision compare-and-set, then append.

        Loaded usage rows come back in the order their (source, model) was first seen.
        """

    async def aclose(self) -> None:
        """Release connections and threads (a no-op for stores that hold none)."""
