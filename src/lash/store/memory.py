"""The in-memory store (Inline tier): the contract without durability."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..kernel.llm import LlmUsage
from ..runtime.effects import DurabilityTier
from ._queue_ops import QueueOps
from .base import (
    CommitResult,
    CommittedTurn,
    GraphError,
    GraphNode,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    StoredSession,
    TurnCommitConflict,
    TurnRecord,
    UsageRow,
    check_commit,
    check_limit,
    check_meta,
    check_node_ids,
    check_session_id,
    check_turn_id,
)
from .graph import active_path, hidden_subtree
from .queue import MemoryQueue


class _Session:
    __slots__ = (
        "dead",
        "frame_id",
        "iteration",
        "leaf",
        "nodes",
        "revision",
        "stamps",
        "state",
        "turn_index",
        "usage",
    )

    def __init__(self) -> None:
        self.revision = 0
        self.nodes: dict[str, GraphNode] = {}  # commit order; tombstoned ones included
        self.dead: set[str] = set()
        self.leaf: str | None = None
        self.turn_index = 0
        self.iteration = 0
        self.frame_id: str | None = None
        self.usage: dict[tuple[str, str], LlmUsage] = {}
        self.stamps: dict[str, tuple[str, CommitResult, TurnRecord | None]] = {}
        self.state: dict[str, bytes] = {}

    def live(self) -> list[GraphNode]:
        return [n for nid, n in self.nodes.items() if nid not in self.dead]

    def path(self) -> list[str]:
        return active_path({nid: n.parent_id for nid, n in self.nodes.items()}, self.leaf)


class MemoryStore(QueueOps):
    """Keeps sessions in a dict; commits are atomic because they never await."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._meta: dict[str, SessionMeta] = {}
        self._queue = MemoryQueue()

    async def _queue_op(
        self, name: str, session_id: object, args: tuple[Any, ...], write: bool
    ) -> Any:
        return getattr(self._queue, name)(*args)

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
            messages=tuple(s.nodes[i].message for i in s.path()),
            turn_index=s.turn_index,
            iteration=s.iteration,
            frame_id=s.frame_id,
            usage=tuple(
                UsageRow(source=src, model=model, usage=u) for (src, model), u in s.usage.items()
            ),
            leaf_id=s.leaf,
            nodes=tuple(s.live()),
            state=dict(s.state),
        )

    async def load_turn(self, session_id: str, turn_id: str) -> CommittedTurn | None:
        """The landed commit of ``turn_id``, or None."""
        check_turn_id(turn_id)
        s = self._sessions.get(check_session_id(session_id))
        seen = None if s is None else s.stamps.get(turn_id)
        if s is None or seen is None:
            return None
        prefix = f"{turn_id}."
        return CommittedTurn(
            session_id=session_id,
            turn_id=turn_id,
            revision=seen[1].revision,
            commit_hash=seen[0],
            record=seen[2],
            messages=tuple(n.message for n in s.live() if n.id.startswith(prefix)),
        )

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        """Apply one commit (see ``SessionStore.commit``)."""
        check_commit(commit)
        sid = commit.session_id
        s = self._sessions.get(sid)
        stamp = commit.stamp
        if stamp is not None and s is not None:
            seen = s.stamps.get(stamp.turn_id)
            if seen is not None:
                if seen[0] == stamp.commit_hash:
                    return CommitResult(revision=seen[1].revision, replayed=True)
                raise TurnCommitConflict(stamp, seen[0])
        actual = s.revision if s is not None else None
        if commit.expected_revision != actual:
            raise HeadRevisionConflict(sid, commit.expected_revision, actual)
        # Check the graph change completely before changing anything.
        nodes = {} if s is None else s.nodes
        dead = set() if s is None else s.dead
        leaf = None if s is None else s.leaf
        if commit.replace_graph is not None:
            new_nodes = {n.id: n for n in commit.replace_graph}
            new_dead: set[str] = set()
            new_leaf = commit.leaf_id
            if new_leaf is None and commit.replace_graph:
                new_leaf = commit.replace_graph[-1].id
        else:
            parent = commit.parent_id if commit.parent_id is not None else leaf
            if commit.parent_id is not None and (parent not in nodes or parent in dead):
                raise GraphError(sid, parent, "unknown_parent", "the parent is not in the session")
            appended: list[GraphNode] = []
            for m in commit.messages:
                if m.id in nodes:
                    raise GraphError(sid, m.id, "duplicate_id", "the session already has this id")
                appended.append(GraphNode(message=m, parent_id=parent))
                parent = m.id
            new_leaf = commit.leaf_id
            if new_leaf is None:
                new_leaf = appended[-1].id if appended else leaf
            elif (new_leaf not in nodes or new_leaf in dead) and all(
                n.id != new_leaf for n in appended
            ):
                raise GraphError(sid, new_leaf, "unknown_leaf", "the leaf is not in the session")
        # The last check, and the first write: consume the turn's queue claims.
        self._queue.complete(commit.completed_claims, session_id=sid)
        if s is None:
            s = self._sessions[sid] = _Session()
        if commit.replace_graph is not None:
            s.nodes = new_nodes
            s.dead = new_dead
        else:
            for n in appended:  # O(the turn): checked above, applied in place
                s.nodes[n.id] = n
        s.leaf = new_leaf
        s.turn_index = commit.turn_index
        s.iteration = commit.iteration
        s.frame_id = commit.frame_id
        for row in commit.usage:
            key = (row.source, row.model)
            prior = s.usage.get(key)
            s.usage[key] = row.usage if prior is None else prior + row.usage
        for name, value in commit.state.items():
            if value is None:
                s.state.pop(name, None)
            else:
                s.state[name] = value
        if commit.meta is not None:
            self._meta.setdefault(sid, commit.meta)
        s.revision += 1
        result = CommitResult(revision=s.revision)
        if stamp is not None:
            s.stamps[stamp.turn_id] = (stamp.commit_hash, result, commit.record)
        return result

    async def tombstone(self, session_id: str, node_ids: Iterable[str]) -> int:
        """Hide nodes and their descendants (see ``SessionStore.tombstone``)."""
        ids = check_node_ids(node_ids)
        s = self._sessions.get(check_session_id(session_id))
        if s is None:
            return 0
        parents = {n.id: n.parent_id for n in s.live()}
        hidden = hidden_subtree(session_id, parents, s.leaf, ids)
        s.dead |= hidden
        return len(hidden)

    async def vacuum(self, session_id: str) -> int:
        """Delete tombstoned nodes; returns how many this call removed."""
        s = self._sessions.get(check_session_id(session_id))
        if s is None or not s.dead:
            return 0
        removed = len(s.dead)
        s.nodes = {i: n for i, n in s.nodes.items() if i not in s.dead}
        s.dead = set()
        return removed

    async def save_session_meta(self, meta: SessionMeta, *, replace: bool = True) -> SessionMeta:
        """Write the metadata row (see ``SessionStore.save_session_meta``)."""
        check_meta(meta)
        if replace:
            self._meta[meta.session_id] = meta
            return meta
        return self._meta.setdefault(meta.session_id, meta)

    async def load_session_meta(self, session_id: str) -> SessionMeta | None:
        """The metadata row, or None."""
        return self._meta.get(check_session_id(session_id))

    async def list_sessions(self, *, limit: int | None = None) -> tuple[SessionMeta, ...]:
        """Every metadata row, oldest first."""
        check_limit(limit)
        rows = sorted(self._meta.values(), key=lambda m: (m.created_at_ms, m.session_id))
        return tuple(rows if limit is None else rows[:limit])

    async def aclose(self) -> None:
        """Nothing to release."""
