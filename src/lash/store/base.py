"""The store contract: load a session, commit a turn atomically and idempotently."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from ..kernel.codec import canonical_hash
from ..kernel.llm import LlmUsage
from ..kernel.messages import Message
from ..kernel.outcome import TurnOutcome
from ..runtime.effects import DurabilityTier

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .graph import SessionGraph
    from .queue import ClaimBoundary, QueueClaim, QueuedBatch, QueuedBatchDraft

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


class GraphNode(msgspec.Struct, **_S):
    """A node of the session graph: a message and the node it follows (None: the root)."""

    message: Message
    parent_id: str | None = None

    @property
    def id(self) -> str:
        """The node id, which is the message id."""
        return self.message.id


class TurnRecord(msgspec.Struct, **_S):
    """What a committed turn ended with, kept with its stamp so a replay can return it."""

    outcome: TurnOutcome
    usage: LlmUsage = msgspec.field(default_factory=LlmUsage)


class SessionRelation(msgspec.Struct, **_S):
    """Where a session came from: forked from another, or a child a tool call ran."""

    kind: Literal["fork", "child"]
    parent_session_id: str
    node_id: str | None = None
    """For a fork: the node of the parent the fork was taken at."""
    turn_id: str | None = None
    """For a child: the parent's turn that ran it."""
    call_id: str | None = None
    """For a child: the tool call that ran it."""


class SessionMeta(msgspec.Struct, **_S):
    """A session's descriptive row, kept apart from its head: what lists show."""

    session_id: str
    created_at_ms: int
    """When the session was created, in milliseconds since the Unix epoch."""
    name: str | None = None
    model: str | None = None
    """The model the session was created with."""
    relation: SessionRelation | None = None
    """None for a root session."""


class RuntimeCommit(msgspec.Struct, **_S):
    """What one turn adds to a session; O(the turn), never O(history).

    Only a session's first commit may leave ``expected_revision`` unset.

    ``messages`` are appended as a chain under ``parent_id`` (default: the
    current leaf). ``leaf_id`` then becomes the leaf; by default the last
    appended message is, or the leaf stays where it was when nothing is
    appended. ``replace_graph`` (fork and rewrite only) replaces every node,
    tombstoned ones included, with the given nodes, parents before children;
    ``messages`` and ``parent_id`` must then be empty. A missing parent, a
    duplicate id, a second root or an unknown leaf is a ``GraphError`` and
    nothing is written.
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
    parent_id: str | None = None
    leaf_id: str | None = None
    replace_graph: tuple[GraphNode, ...] | None = None
    record: TurnRecord | None = None
    """The turn's outcome, returned again when the same turn is run once more."""
    completed_claims: tuple[ClaimCompletion, ...] = ()
    """Queue claims this turn consumed; their batches are deleted in the same
    transaction, and a claim someone else took over fails the whole commit."""
    state: dict[str, bytes | None] = msgspec.field(default_factory=dict)
    """Named session-state blobs this commit changes (plugin and tool state);
    ``None`` deletes one. Blobs not named keep their stored value."""
    meta: SessionMeta | None = None
    """Written only if the session has no metadata row yet (its first commit)."""


def commit_hash(commit: RuntimeCommit) -> str:
    """The hash a stamp carries: the commit without its revision, stamp, claims and meta.

    Claims are bookkeeping of who delivered the input, and the metadata row says
    when the session was first written; neither is the turn's content, so a
    retry under a fresh claim or clock is still the same turn.
    """
    scrubbed = msgspec.structs.replace(
        commit, expected_revision=None, stamp=None, completed_claims=(), meta=None
    )
    return canonical_hash(scrubbed)


class StoredSession(msgspec.Struct, **_S):
    """A session as loaded: counters, the usage ledger and the session graph.

    ``messages`` is the active path, root first: what the next turn continues.
    ``nodes`` holds every live (not tombstoned) node in the order it was
    committed, and ``leaf_id`` the end of the active path.
    """

    session_id: str
    revision: int
    messages: tuple[Message, ...] = ()
    turn_index: int = 0
    iteration: int = 0
    usage: tuple[UsageRow, ...] = ()
    frame_id: str | None = None
    leaf_id: str | None = None
    nodes: tuple[GraphNode, ...] = ()
    state: dict[str, bytes] = msgspec.field(default_factory=dict)
    """The session-state blobs by name, as the last commit that touched each left them."""

    @property
    def graph(self) -> SessionGraph:
        """The session graph as a read view."""
        from .graph import SessionGraph

        return SessionGraph(self.nodes, self.leaf_id)


class CommittedTurn(msgspec.Struct, **_S):
    """A turn's landed commit, looked up by its id: the stamp, record and messages."""

    session_id: str
    turn_id: str
    revision: int
    commit_hash: str
    record: TurnRecord | None = None
    messages: tuple[Message, ...] = ()
    """The live messages whose ids start with ``{turn_id}.``, in commit order."""


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

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.session_id, self.expected, self.actual))


class TurnCommitConflict(StoreError):
    """A turn was committed before with different content."""

    def __init__(self, stamp: TurnStamp, stored_hash: str) -> None:
        super().__init__(
            f"session {stamp.session_id!r} turn {stamp.turn_id!r} was committed with hash "
            f"{stored_hash[:12]}..., not {stamp.commit_hash[:12]}..."
        )
        self.stamp = stamp
        self.stored_hash = stored_hash

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stamp, self.stored_hash))


class GraphError(StoreError):
    """A commit or graph operation does not fit the session graph; nothing was written.

    ``problem`` is one of ``unknown_parent``, ``duplicate_id``, ``second_root``,
    ``unknown_leaf``, ``unordered`` (a child before its parent),
    ``replace_with_messages`` and ``on_active_path``.
    """

    def __init__(self, session_id: str, node_id: str | None, problem: str, detail: str) -> None:
        where = f" node {node_id!r}" if node_id is not None else ""
        super().__init__(f"session {session_id!r}{where}: {detail}")
        self.session_id = session_id
        self.node_id = node_id
        self.problem = problem
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.session_id, self.node_id, self.problem, self.detail))


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


def check_text(what: str, value: object, *, blank_ok: bool = False) -> str:
    """``value`` if it is a string every backend stores as given, else ``ValueError``.

    SQLite, PostgreSQL and JSON all refuse NUL characters or lone surrogates in
    some place; refusing them here gives every backend the same answer.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not blank_ok and not value.strip():
        raise ValueError(f"{what} must not be blank, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} must be valid Unicode text (no lone surrogates), got {value!r}"
        ) from None
    return value


def check_session_id(session_id: object) -> str:
    """``session_id`` if it is a non-blank string every backend can store, else ``ValueError``."""
    return check_text("session id", session_id)


def check_commit(commit: RuntimeCommit) -> None:
    """Refuse a malformed commit before any store is touched (``ValueError``)."""
    session_id = check_session_id(commit.session_id)
    stamp = commit.stamp
    for what, value in (
        ("frame id", commit.frame_id),
        ("parent id", commit.parent_id),
        ("leaf id", commit.leaf_id),
    ):
        if value is not None:
            check_text(what, value)
    for message in commit.messages:
        check_text("message id", message.id)
    for node in commit.replace_graph or ():
        check_text("message id", node.message.id)
    for row in commit.usage:
        check_text("usage source", row.source, blank_ok=True)
        check_text("usage model", row.model, blank_ok=True)
    check_state(commit.state)
    if commit.meta is not None:
        check_meta(commit.meta)
        if commit.meta.session_id != session_id:
            raise ValueError(
                f"session {session_id!r}: the commit's metadata names session "
                f"{commit.meta.session_id!r}"
            )
    if stamp is not None:
        check_turn_id(stamp.turn_id)
        if stamp.session_id != session_id:
            raise ValueError(
                f"turn {stamp.turn_id!r}: the stamp names session {stamp.session_id!r}, "
                f"the commit {session_id!r}"
            )
        if stamp.commit_hash != commit_hash(commit):
            raise ValueError(f"turn {stamp.turn_id!r}: the stamp's hash does not match the commit")
    from .graph import check_commit_graph

    check_commit_graph(commit)
    # Claim completions are checked by the backend's ``complete`` inside the
    # commit's transaction (before it writes anything).


MAX_STATE_NAME = 256
"""The longest session-state name a store accepts, in characters."""


def check_state(state: object) -> None:
    """Refuse a malformed session-state change (``ValueError``).

    Names are non-blank text of at most ``MAX_STATE_NAME`` characters; values are
    ``bytes`` (``None`` deletes).
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict of name to bytes, got {type(state).__name__}")
    for name, value in state.items():
        check_text("state name", name)
        if len(name) > MAX_STATE_NAME:
            raise ValueError(
                f"state name {name[:40]!r}... is {len(name)} characters; "
                f"at most {MAX_STATE_NAME} are allowed"
            )
        if value is not None and type(value) is not bytes:
            raise ValueError(
                f"state {name!r}: the value must be bytes or None, got {type(value).__name__}"
            )


def check_meta(meta: object) -> SessionMeta:
    """``meta`` if every field is one every backend stores as given, else ``ValueError``."""
    if not isinstance(meta, SessionMeta):
        raise ValueError(f"session metadata must be a SessionMeta, got {type(meta).__name__}")
    check_session_id(meta.session_id)
    where = f"session {meta.session_id!r} metadata"
    if type(meta.created_at_ms) is not int or not 0 <= meta.created_at_ms < 2**63:
        raise ValueError(
            f"{where}: created_at_ms must be a non-negative integer, got {meta.created_at_ms!r}"
        )
    if meta.name is not None:
        check_text(f"{where}: name", meta.name)
    if meta.model is not None:
        check_text(f"{where}: model", meta.model, blank_ok=True)
    rel = meta.relation
    if rel is not None:
        if not isinstance(rel, SessionRelation) or rel.kind not in ("fork", "child"):
            raise ValueError(f"{where}: relation must be a fork or child SessionRelation")
        check_text(f"{where}: parent session id", rel.parent_session_id)
        if rel.parent_session_id == meta.session_id:
            raise ValueError(f"{where}: a session cannot be its own parent")
        for what, value in (
            ("node id", rel.node_id),
            ("turn id", rel.turn_id),
            ("call id", rel.call_id),
        ):
            if value is not None:
                check_text(f"{where}: relation {what}", value)
    return meta


def check_limit(limit: object) -> int | None:
    """``limit`` if it is None or a non-negative integer, else ``ValueError``."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"limit must be None or a non-negative integer, got {limit!r}")
    return limit


def check_node_ids(node_ids: Iterable[str]) -> list[str]:
    """Node ids as a list of strings, else ``ValueError``."""
    if isinstance(node_ids, str):
        raise ValueError(f"node ids must be a collection of strings, not the string {node_ids!r}")
    ids = list(node_ids)
    for nid in ids:
        check_text("node id", nid)
    return ids


def check_turn_id(turn_id: object) -> str:
    """``turn_id`` if it is a non-blank string every backend can store, else ``ValueError``."""
    return check_text("turn id", turn_id)


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

    async def load_turn(self, session_id: str, turn_id: str) -> CommittedTurn | None:
        """The landed commit of ``turn_id``, or None if that turn never committed."""

    async def tombstone(self, session_id: str, node_ids: Iterable[str]) -> int:
        """Hide nodes and everything below them; returns how many were newly hidden.

        Unknown ids are ignored; a node on the active path is a ``GraphError``
        (nothing is hidden then).
        """

    async def vacuum(self, session_id: str) -> int:
        """Delete the session's tombstoned nodes for good; returns how many this call removed."""

    async def save_session_meta(self, meta: SessionMeta, *, replace: bool = True) -> SessionMeta:
        """Write the session's metadata row, independent of its head; returns the stored row.

        With ``replace=False`` an existing row is kept (and returned) unchanged.
        """

    async def load_session_meta(self, session_id: str) -> SessionMeta | None:
        """The session's metadata row, or None."""

    async def list_sessions(self, *, limit: int | None = None) -> tuple[SessionMeta, ...]:
        """Metadata rows of every session, oldest first (by creation time, then id)."""

    async def enqueue(self, draft: QueuedBatchDraft) -> QueuedBatch:
        """Queue work; the same (session, source key) while queued returns the first batch."""

    async def claim_ready(
        self,
        session_id: str,
        *,
        owner_id: str,
        boundary: ClaimBoundary = ...,
        ttl_ms: int = ...,
        max_batches: int = ...,
    ) -> QueueClaim | None:
        """Claim the next ready group of batches under a lease, or None."""

    async def claim_batches(
        self, session_id: str, batch_ids: Sequence[str], *, owner_id: str, ttl_ms: int = ...
    ) -> QueueClaim | None:
        """Claim exactly ``batch_ids`` if they are the group a claim would take now."""

    async def renew_claim(self, claim: QueueClaim, *, ttl_ms: int = ...) -> QueueClaim:
        """Extend a claim's lease; ``QueuedWorkClaimExpired`` once it was taken over."""

    async def abandon_claim(self, claim: QueueClaim) -> None:
        """Release a claim's batches; idempotent."""

    async def cancel_queued(self, session_id: str, batch_id: str) -> QueuedBatch | None:
        """Delete a batch nobody holds a live claim on."""

    async def list_queued(
        self, session_id: str, *, pending_only: bool = False
    ) -> tuple[QueuedBatch, ...]:
        """The session's batches in queue order."""

    async def aclose(self) -> None:
        """Release connections and threads (a no-op for stores that hold none)."""


# ``queue`` builds on this module (StoreError); import it last, for the commit's claims.
from .queue import ClaimCompletion  # noqa: E402
