"""The session graph: messages as nodes with parents, an active path from a leaf.

A session's history is a tree. Every committed message is a node whose parent
is the message it follows; the *leaf* marks the end of the *active path*, which
is what the next turn continues. ``branch_to`` moves the leaf to an earlier
node, so the next turn starts a new branch there; the old branch stays, off
the active path, until it is tombstoned (hidden) and vacuumed (deleted).

This module is pure: the checks every backend runs before touching storage,
the row decoding the SQL backends share, and :class:`SessionGraph`, the
read view.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import msgspec

from ..kernel.messages import Message
from .base import GraphError, GraphNode, RuntimeCommit, StoreCorruptError

__all__ = [
    "ProjectionEntry",
    "SessionGraph",
    "active_path",
    "check_commit_graph",
    "hidden_subtree",
    "resolve_parent_ids",
    "stored_path",
]


class ProjectionEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the chronological projection: a contiguous index and a message."""

    index: int
    message: Message


def check_commit_graph(commit: RuntimeCommit) -> None:
    """The graph checks that need no stored state; raises ``GraphError``."""
    sid = commit.session_id
    if commit.replace_graph is not None:
        if commit.messages or commit.parent_id is not None:
            raise GraphError(
                sid,
                None,
                "replace_with_messages",
                "a commit that replaces the graph carries its nodes in replace_graph only "
                "(messages and parent_id must be empty)",
            )
        check_replacement(sid, commit.replace_graph, commit.leaf_id)
        return
    seen: set[str] = set()
    for message in commit.messages:
        if message.id in seen:
            raise GraphError(sid, message.id, "duplicate_id", "the commit holds this id twice")
        seen.add(message.id)


def check_replacement(session_id: str, nodes: Sequence[GraphNode], leaf_id: str | None) -> None:
    """A replacement graph must be a tree, parents first, with a known leaf."""
    seen: set[str] = set()
    root: str | None = None
    for node in nodes:
        nid = node.id
        if nid in seen:
            raise GraphError(session_id, nid, "duplicate_id", "the new graph holds this id twice")
        if node.parent_id is None:
            if root is not None:
                raise GraphError(
                    session_id,
                    nid,
                    "second_root",
                    f"the new graph already has a root ({root!r}); a graph has one",
                )
            root = nid
        elif node.parent_id not in seen:
            problem = "unordered" if any(n.id == node.parent_id for n in nodes) else None
            if problem is not None:
                raise GraphError(
                    session_id,
                    nid,
                    "unordered",
                    f"its parent {node.parent_id!r} comes after it; list parents first",
                )
            raise GraphError(
                session_id,
                nid,
                "unknown_parent",
                f"its parent {node.parent_id!r} is not in the new graph",
            )
        seen.add(nid)
    if leaf_id is not None and leaf_id not in seen:
        raise GraphError(session_id, leaf_id, "unknown_leaf", "the leaf is not in the new graph")


def resolve_parent_ids(rows: Iterable[tuple[str, str | None]]) -> dict[str, str | None]:
    """Stored ``(node_id, parent)`` rows in commit order as ``{node_id: parent_id}``.

    A row stores its parent only at a branch point: ``None`` means the row just
    before it (and, for the first row, the root).
    """
    parents: dict[str, str | None] = {}
    previous: str | None = None
    for node_id, parent in rows:
        parents[node_id] = parent if parent is not None else previous
        previous = node_id
    return parents


def hidden_subtree(
    session_id: str, parents: dict[str, str | None], leaf: str | None, ids: Iterable[str]
) -> set[str]:
    """The live nodes ``tombstone(ids)`` hides: the known ``ids`` and everything below them.

    ``parents`` maps every live node to its parent, in commit order. Unknown ids
    are ignored; a hidden node on the active path is a ``GraphError``.
    """
    hidden = {i for i in ids if i in parents}
    if not hidden:
        return hidden
    for nid, parent in parents.items():  # commit order: parents come first
        if parent in hidden:
            hidden.add(nid)
    for nid in active_path(parents, leaf):
        if nid in hidden:
            raise GraphError(
                session_id, nid, "on_active_path", "it is on the active path; branch away first"
            )
    return hidden


def stored_path(
    session_id: str, nodes: Sequence[GraphNode], leaf: str | None
) -> tuple[Message, ...]:
    """The active path's messages of loaded ``nodes``; a broken graph is ``StoreCorruptError``."""
    by_id = {n.id: n for n in nodes}
    if leaf is not None and leaf not in by_id:
        raise StoreCorruptError(session_id, "sessions", session_id, f"leaf {leaf!r} is no node")
    try:
        path = active_path({n.id: n.parent_id for n in nodes}, leaf)
    except KeyError as exc:
        raise StoreCorruptError(
            session_id, "messages", str(exc.args[0]), "the active path reaches a missing parent"
        ) from None
    return tuple(by_id[i].message for i in path)


def active_path(parents: dict[str, str | None], leaf_id: str | None) -> list[str]:
    """The node ids from the root to ``leaf_id``."""
    path: list[str] = []
    node = leaf_id
    while node is not None:
        path.append(node)
        node = parents[node]
    path.reverse()
    return path


class SessionGraph:
    """A read view of a session graph: every live node, and the active path from the leaf."""

    __slots__ = ("_by_id", "_children", "_nodes", "_path", "leaf_id")

    def __init__(self, nodes: Sequence[GraphNode], leaf_id: str | None) -> None:
        self._nodes = tuple(nodes)
        self._by_id = {n.id: n for n in self._nodes}
        if leaf_id is not None and leaf_id not in self._by_id:
            raise ValueError(f"leaf {leaf_id!r} is not a node of the graph")
        self.leaf_id = leaf_id
        """The end of the active path (None for an empty graph)."""
        self._children: dict[str | None, list[str]] | None = None
        self._path: tuple[Message, ...] | None = None

    @property
    def nodes(self) -> tuple[GraphNode, ...]:
        """Every live node, in commit order."""
        return self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def __iter__(self) -> Iterator[GraphNode]:
        return iter(self._nodes)

    def node(self, node_id: str) -> GraphNode | None:
        """The node with this id, or None."""
        return self._by_id.get(node_id)

    @property
    def root_id(self) -> str | None:
        """The root node's id (None for an empty graph)."""
        return self._nodes[0].id if self._nodes else None

    def path_to(self, node_id: str) -> tuple[Message, ...]:
        """The messages from the root to ``node_id``; ``KeyError`` for an unknown id."""
        if node_id not in self._by_id:
            raise KeyError(f"no node {node_id!r} in this session graph")
        parents = {n.id: n.parent_id for n in self._nodes}
        return tuple(self._by_id[i].message for i in active_path(parents, node_id))

    @property
    def active_path(self) -> tuple[Message, ...]:
        """The messages from the root to the leaf: what the next turn continues."""
        if self._path is None:
            self._path = () if self.leaf_id is None else self.path_to(self.leaf_id)
        return self._path

    def children(self, node_id: str | None) -> tuple[str, ...]:
        """The ids of the nodes directly below ``node_id`` (``None``: the root)."""
        if self._children is None:
            children: dict[str | None, list[str]] = {}
            for n in self._nodes:
                children.setdefault(n.parent_id, []).append(n.id)
            self._children = children
        return tuple(self._children.get(node_id, ()))

    @property
    def branch_points(self) -> tuple[str, ...]:
        """Nodes with more than one child, in commit order."""
        return tuple(n.id for n in self._nodes if len(self.children(n.id)) > 1)

    def orphaned_ids(self) -> tuple[str, ...]:
        """Live nodes off the active path, in commit order (what ``tombstone`` may hide)."""
        on_path = {m.id for m in self.active_path}
        return tuple(n.id for n in self._nodes if n.id not in on_path)

    def read_view(self) -> tuple[Message, ...]:
        """The active path without transient messages, each id once."""
        seen: set[str] = set()
        out: list[Message] = []
        for m in self.active_path:
            if m.is_transient or m.id in seen:
                continue
            seen.add(m.id)
            out.append(m)
        return tuple(out)

    def chronological(self) -> tuple[ProjectionEntry, ...]:
        """The read view as entries with contiguous indexes from 0."""
        return tuple(ProjectionEntry(index=i, message=m) for i, m in enumerate(self.read_view()))

    def __repr__(self) -> str:
        return f"SessionGraph({len(self._nodes)} nodes, leaf={self.leaf_id!r})"
