"""The in-memory store (Inline tier): the contract without durability."""

from __future__ import annotations

from ..kernel.llm import LlmUsage
from ..kernel.messages import Message
from ..runtime.effects import DurabilityTier
from .base import (
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    StoredSession,
    TurnCommitConflict,
    UsageRow,
    check_commit,
    check_session_id,
)


class _Session:
    __slots__ = ("frame_id", "iteration", "messages", "revision", "stamps", "turn_index", "usage")

    def __init__(self) -> None:
        self.revision = 0
        self.messages: list[Message] = []
        self.turn_index = 0
        self.iteration = 0
        self.frame_id: str | None = None
        self.usage: dict[tuple[str, str], LlmUsage] = {}
        self.stamps: dict[str, tuple[str, CommitResult]] = {}


class MemoryStore:
    """Keeps sessions in a dict; commits are atomic because they never await."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    @property
    def tier(self) -> DurabilityTier:
        """Inline: nothing survives the process."""
        return DurabilityTier.INLINE

    async def load(self, session_id: str) -> StoredSession | None:
        """The stored session, or None."""
        s = self._sessions.get(check_session_id(session_id))
        if s is None:
            return None
        return StoredSession(
            session_id=session_id,
            revision=s.revision,
            messages=tuple(s.messages),
            turn_index=s.turn_index,
            iteration=s.iteration,
            frame_id=s.frame_id,
            usage=tuple(
                UsageRow(source=src, model=model, usage=u) for (src, model), u in s.usage.items()
            ),
        )

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        """Apply one commit (see ``SessionStore.commit``)."""
        check_commit(commit)
        s = self._sessions.get(commit.session_id)
        stamp = commit.stamp
        if stamp is not None and s is not None:
            seen = s.stamps.get(stamp.turn_id)
            if seen is not None:
                if seen[0] == stamp.commit_hash:
                    return CommitResult(revision=seen[1].revision, replayed=True)
                raise TurnCommitConflict(stamp, seen[0])
        actual = s.revision if s is not None else None
        if commit.expected_revision != actual:
            raise HeadRevisionConflict(commit.session_id, commit.expected_revision, actual)
        if s is None:
            s = self._sessions[commit.session_id] = _Session()
        s.messages.extend(commit.messages)
        s.turn_index = commit.turn_index
        s.iteration = commit.iteration
        s.frame_id = commit.frame_id
        for row in commit.usage:
            key = (row.source, row.model)
            prior = s.usage.get(key)
            s.usage[key] = row.usage if prior is None else prior + row.usage
        s.revision += 1
        result = CommitResult(revision=s.revision)
        if stamp is not None:
            s.stamps[stamp.turn_id] = (stamp.commit_hash, result)
        return result

    async def aclose(self) -> None:
        """Nothing to release."""
