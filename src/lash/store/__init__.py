"""Session persistence: the store contract and its backends."""

from .base import (
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionStore,
    StoredSession,
    StoreError,
    TurnCommitConflict,
    TurnStamp,
    UsageRow,
    commit_hash,
)
from .memory import MemoryStore

__all__ = [
    "CommitResult",
    "HeadRevisionConflict",
    "MemoryStore",
    "RuntimeCommit",
    "SessionStore",
    "StoreError",
    "StoredSession",
    "TurnCommitConflict",
    "TurnStamp",
    "UsageRow",
    "commit_hash",
]
