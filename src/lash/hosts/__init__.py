"""Durable effect hosts: journal each effect so a crashed turn replays, not re-executes."""

from .journal import JournalEntry, JournalError, SqliteJournalHost

__all__ = ["JournalEntry", "JournalError", "SqliteJournalHost"]
