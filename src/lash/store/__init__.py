"""Session persistence: the store contract and its backends."""

from .base import (
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionStore,
    StoreCorruptError,
    StoredSession,
    StoreError,
    TurnCommitConflict,
    TurnStamp,
    UsageRow,
    commit_hash,
)
from .memory import MemoryStore
from .sqlite import SqliteStore, StoreSchemaError

__all__ = [
    "CommitResult",
    "HeadRevisionConflict",
    "MemoryStore",
    "RuntimeCommit",
    "SessionStore",
    "SqliteStore",
    "StoreCorruptError",
    "StoreSchemaError",
    "StoreError",
    "StoredSession",
    "TurnCommitConflict",
    "TurnStamp",
    "UsageRow",
    "commit_hash",
]
