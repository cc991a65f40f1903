"""Session persistence: the store contract and its backends."""

from .base import (
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    SessionRelation,
    SessionStore,
    StoreCorruptError,
    StoredSession,
    StoreError,
    StoreSchemaError,
    TurnCommitConflict,
    TurnStamp,
    UsageRow,
    commit_hash,
)
from .memory import MemoryStore
from .sqlite import SqliteStore


def __getattr__(name: str) -> object:
    # PostgreSQL support is an optional extra, and psycopg is slow to import:
    # load it only when asked for.
    if name in ("PostgresStore", "PostgresSchemaError"):
        from . import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module 'lash.store' has no attribute {name!r}")


__all__ = [
    "CommitResult",
    "HeadRevisionConflict",
    "MemoryStore",
    "PostgresSchemaError",
    "PostgresStore",
    "RuntimeCommit",
    "SessionMeta",
    "SessionRelation",
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
