"""A conformance suite every ``SessionStore`` backend must pass.

Subclass ``StoreConformance`` in a test module and provide a ``make_store``
fixture that returns a factory of *fresh, empty* stores::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_store(self, tmp_path):
            counter = itertools.count()
            return lambda: MyStore(tmp_path / f"db{next(counter)}")

The suite closes every store it makes (``aclose()`` or ``close()`` when the
store has one). Override ``rows_written`` when the backend can count the rows
it writes, so the commit-cost check runs. Tests are plain functions that run
their async bodies with ``asyncio.run``; no pytest-asyncio plugin is needed.
Requires ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, NamedTuple, cast

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..kernel.attachments import AttachmentRef
from ..kernel.codec import encode
from ..kernel.llm import LlmUsage, ProviderReplayMeta, ReasoningReplay, ResponseTextMeta
from ..kernel.messages import (
    Cleared,
    Deleted,
    Message,
    Part,
    PartKind,
    PluginOrigin,
    ProcessOrigin,
    Role,
    Summarized,
    user_message,
)
from ..kernel.outcome import AssistantAnswer, Finished
from ..runtime.effects import DurabilityTier
from ..runtime.queue import Delivery
from ..store.base import (
    MAX_STATE_NAME,
    CommitResult,
    GraphError,
    GraphNode,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    SessionRelation,
    SessionStore,
    StoredSession,
    TurnCommitConflict,
    TurnRecord,
    TurnStamp,
    UsageRow,
    commit_hash,
)
from ..store.queue import (
    ClaimBoundary,
    QueuedBatchDraft,
    QueuedTurnInput,
    QueuedWorkClaimExpired,
)

StoreFactory = Callable[[], SessionStore]
"""Makes a fresh, empty store; what a ``make_store`` fixture returns."""

__all__ = [
    "StoreConformance",
    "StoreFactory",
    "close_store",
    "rich_messages",
    "stamped",
]


# ---------------------------------------------------------------- helpers


def stamped(commit: RuntimeCommit, turn_id: str) -> RuntimeCommit:
    """``commit`` carrying a turn stamp with its correct hash."""
    stamp = TurnStamp(
        session_id=commit.session_id, turn_id=turn_id, commit_hash=commit_hash(commit)
    )
    return msgspec.structs.replace(commit, stamp=stamp)


async def close_store(store: object) -> None:
    """Close ``store`` through ``aclose()`` or ``close()``, if it has either."""
    aclose = getattr(store, "aclose", None)
    if callable(aclose):
        await aclose()
        return
    close = getattr(store, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


def rich_messages(prefix: str) -> tuple[Message, ...]:
    """Messages that use every part kind, prune state, replay field and origin."""
    image_id = hashlib.sha256(prefix.encode()).hexdigest()
    return (
        Message(
            id=f"{prefix}-u",
            role=Role.USER,
            parts=(
                Part(
                    id=f"{prefix}-u.p0",
                    kind=PartKind.TEXT,
                    content='h\u00e9llo "q" \\ \u2028 \U0001f600',
                ),
                Part(
                    id=f"{prefix}-u.p1",
                    kind=PartKind.IMAGE,
                    attachment=AttachmentRef(
                        id=image_id,
                        mime="image/png",
                        byte_len=1234,
                        width=64,
                        height=48,
                        label="cat.png",
                    ),
                ),
            ),
        ),
        Message(
            id=f"{prefix}-a",
            role=Role.ASSISTANT,
            parts=(
                Part(
                    id=f"{prefix}-a.p0",
                    kind=PartKind.REASONING,
                    content="thinking about it",
                    reasoning=ReasoningReplay(
                        item_id="rs_1",
                        encrypted_content="gAAAA==",
                        signature="sig-1",
                        redacted=True,
                        summary=("first", "second"),
                    ),
                ),
                Part(
                    id=f"{prefix}-a.p1",
                    kind=PartKind.PROSE,
                    content="Let me add.",
                    response_meta=ResponseTextMeta(
                        id="msg_1", status="completed", phase="commentary"
                    ),
                ),
                Part(
                    id=f"{prefix}-a.p2",
                    kind=PartKind.TOOL_CALL,
                    content='{"a": 1, "b": [2, 3]}',
                    tool_call_id="call_1",
                    tool_name="add",
                    tool_replay=ProviderReplayMeta(
                        item_id="fc_1", opaque={"k": [1, "x", None, True, 1.5], "z": {}}
                    ),
                ),
            ),
        ),
        Message(
            id=f"{prefix}-r",
            role=Role.USER,
            parts=(
                Part(
                    id=f"{prefix}-r.p0",
                    kind=PartKind.TOOL_RESULT,
                    content="3",
                    tool_call_id="call_1",
                    tool_name="add",
                ),
                Part(
                    id=f"{prefix}-r.p1",
                    kind=PartKind.TOOL_RESULT,
                    tool_call_id="c2",
                    prune=Cleared(),
                ),
                Part(
                    id=f"{prefix}-r.p2",
                    kind=PartKind.TOOL_RESULT,
                    tool_call_id="c3",
                    prune=Deleted(breadcrumb="big listing", archive_hash="ab" * 32),
                ),
                Part(
                    id=f"{prefix}-r.p3",
                    kind=PartKind.TOOL_RESULT,
                    tool_call_id="c4",
                    prune=Summarized(summary="it was long", archive_hash="cd" * 32),
                ),
            ),
        ),
        Message(
            id=f"{prefix}-e",
            role=Role.EVENT,
            parts=(Part(id=f"{prefix}-e.p0", kind=PartKind.TEXT, content="process finished"),),
            origin=ProcessOrigin(
                process_id="proc-1",
                event_type="completed",
                sequence=7,
                wake_id="wake-1",
                caused_by="call_1",
            ),
        ),
        Message(
            id=f"{prefix}-s",
            role=Role.SYSTEM,
            parts=(
                Part(id=f"{prefix}-s.p0", kind=PartKind.CODE, content="print(1)"),
                Part(id=f"{prefix}-s.p1", kind=PartKind.OUTPUT, content="1\n"),
                Part(id=f"{prefix}-s.p2", kind=PartKind.ERROR, content="Traceback ..."),
            ),
            origin=PluginOrigin(plugin_id="memory"),
        ),
    )


def _usage(source: str, model: str, tokens: int, output: int = 0) -> UsageRow:
    return UsageRow(
        source=source,
        model=model,
        usage=LlmUsage(input_tokens=tokens, output_tokens=output, cached_input_tokens=tokens // 2),
    )


def _texts(prefix: str, n: int) -> tuple[Message, ...]:
    return tuple(user_message(f"{prefix}-{i}", f"{prefix} message {i}") for i in range(n))


# ---------------------------------------------------------------- a reference model


class _ModelSession:
    def __init__(self) -> None:
        self.revision = 0
        self.nodes: dict[str, GraphNode] = {}
        self.dead: set[str] = set()
        self.leaf: str | None = None
        self.turn_index = 0
        self.iteration = 0
        self.usage: dict[tuple[str, str], LlmUsage] = {}
        self.stamps: dict[str, tuple[str, int]] = {}
        self.state: dict[str, bytes] = {}

    def live(self) -> list[str]:
        return [i for i in self.nodes if i not in self.dead]

    def path(self) -> list[str]:
        path, node = [], self.leaf
        while node is not None:
            path.append(node)
            node = self.nodes[node].parent_id
        return path[::-1]


class _Model:
    """The store contract as plainly as possible, for the property test."""

    def __init__(self) -> None:
        self.sessions: dict[str, _ModelSession] = {}

    def commit(self, c: RuntimeCommit) -> CommitResult:
        s = self.sessions.get(c.session_id)
        if c.stamp is not None and s is not None and c.stamp.turn_id in s.stamps:
            stored_hash, revision = s.stamps[c.stamp.turn_id]
            if stored_hash != c.stamp.commit_hash:
                raise TurnCommitConflict(c.stamp, stored_hash)
            return CommitResult(revision=revision, replayed=True)
        actual = None if s is None else s.revision
        if c.expected_revision != actual:
            raise HeadRevisionConflict(c.session_id, c.expected_revision, actual)
        live = set() if s is None else set(s.live())
        leaf = None if s is None else s.leaf
        parent = leaf if c.parent_id is None else c.parent_id
        if parent not in live and parent is not None:
            raise GraphError(c.session_id, parent, "unknown_parent", "")
        for m in c.messages:
            if s is not None and m.id in s.nodes:
                raise GraphError(c.session_id, m.id, "duplicate_id", "")
        new_ids = [m.id for m in c.messages]
        if c.leaf_id is not None and c.leaf_id not in live and c.leaf_id not in new_ids:
            raise GraphError(c.session_id, c.leaf_id, "unknown_leaf", "")
        s = self.sessions.setdefault(c.session_id, _ModelSession())
        s.revision += 1
        for m in c.messages:
            s.nodes[m.id] = GraphNode(message=m, parent_id=parent)
            parent = m.id
        s.leaf = c.leaf_id or (new_ids[-1] if new_ids else s.leaf)
        s.turn_index, s.iteration = c.turn_index, c.iteration
        for row in c.usage:
            key = (row.source, row.model)
            s.usage[key] = s.usage.get(key, LlmUsage()) + row.usage
        for name, value in c.state.items():
            if value is None:
                s.state.pop(name, None)
            else:
                s.state[name] = value
        if c.stamp is not None:
            s.stamps[c.stamp.turn_id] = (c.stamp.commit_hash, s.revision)
        return CommitResult(revision=s.revision)

    def tombstone(self, session_id: str, node_id: str) -> int:
        s = self.sessions.get(session_id)
        if s is None or node_id not in s.live():
            return 0
        hidden = {node_id}
        for nid in s.live():
            if s.nodes[nid].parent_id in hidden:
                hidden.add(nid)
        for nid in s.path():
            if nid in hidden:
                raise GraphError(session_id, nid, "on_active_path", "")
        s.dead |= hidden
        return len(hidden)

    def vacuum(self, session_id: str) -> int:
        s = self.sessions.get(session_id)
        if s is None:
            return 0
        removed = len(s.dead)
        for nid in s.dead:
            del s.nodes[nid]
        s.dead = set()
        return removed

    def load(self, session_id: str) -> StoredSession | None:
        s = self.sessions.get(session_id)
        if s is None:
            return None
        return StoredSession(
            session_id=session_id,
            revision=s.revision,
            messages=tuple(s.nodes[i].message for i in s.path()),
            turn_index=s.turn_index,
            iteration=s.iteration,
            usage=tuple(UsageRow(source=k[0], model=k[1], usage=u) for k, u in s.usage.items()),
            leaf_id=s.leaf,
            nodes=tuple(s.nodes[i] for i in s.live()),
            state=dict(s.state),
        )


class _Op(NamedTuple):
    session: int
    revision: str
    turn: int | None
    variant: int
    kind: str = "append"
    pick: int = 0
    state: int = 0


_SESSIONS = ("alpha", "beta")
_OPS = st.lists(
    st.builds(
        _Op,
        session=st.integers(0, len(_SESSIONS) - 1),
        revision=st.sampled_from(("current", "current", "current", "stale", "none", "ahead")),
        turn=st.none() | st.integers(0, 2),
        variant=st.integers(0, 1),
        kind=st.sampled_from(
            ("append", "append", "append", "under", "branch", "tombstone", "vacuum")
        ),
        pick=st.integers(0, 50),
        state=st.integers(0, 3),
    ),
    max_size=20,
)


def _picked(model: _Model, op: _Op) -> str | None:
    """The node an op names: one of the session's live nodes, or an unknown id."""
    head = model.sessions.get(_SESSIONS[op.session])
    live = [] if head is None else head.live()
    if op.pick >= 40 or not live:
        return f"nowhere-{op.pick}"
    return live[op.pick % len(live)]


def _op_state(key: str, choice: int) -> dict[str, bytes | None]:
    """A state change: none, a set, a delete with an empty blob, a big blob and absent deletes."""
    changes: list[dict[str, bytes | None]] = [
        {},
        {"a": key.encode()},
        {"a": None, "b": b""},
        {"b": None, "c": b"\x00" + key.encode() * 100, "never-set": None},
    ]
    return changes[choice]


def _op_commit(index: int, op: _Op, actual: int | None, node: str | None = None) -> RuntimeCommit:
    session_id = _SESSIONS[op.session]
    expected = {
        "current": actual,
        "none": None,
        "stale": (actual or 1) - 1,
        "ahead": (actual or 0) + 1,
    }[op.revision]
    key = f"op{index}" if op.turn is None else f"t{op.turn}v{op.variant}"
    # Content depends only on (session, turn, variant): the same pair is a retry,
    # another variant of the same turn a conflict.
    tokens = 10 + (index if op.turn is None else op.turn)
    usage = [_usage("model", f"m{op.variant}", tokens, op.variant)]
    if op.turn is not None and op.turn % 2:
        usage.append(_usage("tool", "m0", 1))
    commit = RuntimeCommit(
        session_id=session_id,
        expected_revision=expected,
        messages=()
        if op.kind == "branch"
        else _texts(f"{session_id}-{key}", 1 + op.variant + (op.turn or 0) % 2),
        turn_index=index if op.turn is None else op.turn,
        iteration=op.variant,
        usage=tuple(usage),
        parent_id=node if op.kind == "under" else None,
        leaf_id=node if op.kind == "branch" else None,
        state=_op_state(key, op.state if op.turn is None else (2 * op.turn + op.variant) % 4),
    )
    return commit if op.turn is None else stamped(commit, f"turn-{op.turn}")


def _model_outcome(model: _Model, commit: RuntimeCommit) -> tuple[Any, ...]:
    try:
        r = model.commit(commit)
    except (HeadRevisionConflict, TurnCommitConflict, GraphError) as exc:
        return _conflict(exc)
    return ("ok", r.revision, r.replayed)


async def _outcome(result: Awaitable[CommitResult]) -> tuple[Any, ...]:
    try:
        r = await result
    except (HeadRevisionConflict, TurnCommitConflict, GraphError) as exc:
        return _conflict(exc)
    return ("ok", r.revision, r.replayed)


def _conflict(exc: HeadRevisionConflict | TurnCommitConflict | GraphError) -> tuple[Any, ...]:
    if isinstance(exc, GraphError):
        return ("graph", exc.problem, exc.node_id)
    if isinstance(exc, HeadRevisionConflict):
        return ("head", exc.session_id, exc.expected, exc.actual)
    return ("turn", exc.stamp)


# ---------------------------------------------------------------- the suite


class StoreConformance:
    """Backend-agnostic store tests; subclasses supply the ``make_store`` fixture."""

    timeout: ClassVar[float] = 20.0
    """Seconds one test body may take before it fails as a hang."""

    property_settings: ClassVar[settings] = settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    """Hypothesis settings of the random-sequence test."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        """Return a factory of fresh, empty stores (override in the subclass)."""
        raise NotImplementedError("a StoreConformance subclass must define a make_store fixture")

    def rows_written(self, store: SessionStore) -> int | None:
        """Rows/records ``store`` has written so far, or None when it cannot tell."""
        return None

    def run(
        self,
        make_store: StoreFactory,
        body: Callable[[SessionStore], Coroutine[Any, Any, None]],
    ) -> None:
        """Run ``body`` against a fresh store on a fresh event loop, then close the store."""

        async def main() -> None:
            store = make_store()
            try:
                await asyncio.wait_for(body(store), self.timeout)
            finally:
                await close_store(store)

        asyncio.run(main())

    # ------------------------------------------------------------ basics

    def test_reports_a_durability_tier(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            assert store.tier in (DurabilityTier.INLINE, DurabilityTier.DURABLE)

        self.run(make_store, body)

    def test_unknown_session_loads_as_none(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            assert await store.load("never-committed") is None

        self.run(make_store, body)

    def test_first_commit_expects_no_revision(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            msgs = _texts("first", 2)
            result = await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=msgs,
                    turn_index=1,
                    iteration=3,
                )
            )
            assert result == CommitResult(revision=1)
            assert await store.load("s") == StoredSession(
                session_id="s",
                revision=1,
                messages=msgs,
                turn_index=1,
                iteration=3,
                leaf_id=msgs[-1].id,
                nodes=(
                    GraphNode(message=msgs[0]),
                    GraphNode(message=msgs[1], parent_id=msgs[0].id),
                ),
            )

        self.run(make_store, body)

    def test_first_commit_with_a_revision_conflicts(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            commit = RuntimeCommit(session_id="s", expected_revision=0, messages=_texts("x", 1))
            with pytest.raises(HeadRevisionConflict) as info:
                await store.commit(commit)
            assert (info.value.expected, info.value.actual) == (0, None)
            assert await store.load("s") is None

        self.run(make_store, body)

    def test_later_commits_need_the_current_revision(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            with pytest.raises(HeadRevisionConflict) as info:
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=None, messages=_texts("x", 1))
                )
            assert (info.value.session_id, info.value.expected, info.value.actual) == ("s", None, 1)
            r2 = await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=1, messages=_texts("a", 1), turn_index=1
                )
            )
            r3 = await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=2, messages=_texts("b", 2), turn_index=2
                )
            )
            assert (r2.revision, r3.revision) == (2, 3)
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.revision == 3
            assert loaded.turn_index == 2
            assert loaded.messages == _texts("a", 1) + _texts("b", 2)

        self.run(make_store, body)

    def test_empty_commit_still_bumps_the_revision(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            await store.commit(RuntimeCommit(session_id="s", expected_revision=1, iteration=5))
            assert await store.load("s") == StoredSession(session_id="s", revision=2, iteration=5)

        self.run(make_store, body)

    def test_stale_revision_conflicts_and_writes_nothing(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=_texts("a", 1))
            )
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, usage=(_usage("m", "x", 5),))
            )
            before = await store.load("s")
            stale = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=1,
                    messages=_texts("late", 3),
                    turn_index=9,
                    usage=(_usage("m", "x", 7), _usage("n", "y", 1)),
                ),
                "turn-late",
            )
            with pytest.raises(HeadRevisionConflict) as info:
                await store.commit(stale)
            assert (info.value.expected, info.value.actual) == (1, 2)
            assert await store.load("s") == before
            # The stamp was not recorded either: the same turn lands once rebased.
            rebased = stamped(msgspec.structs.replace(stale, expected_revision=2), "turn-late")
            assert await store.commit(rebased) == CommitResult(revision=3)

        self.run(make_store, body)

    # ------------------------------------------------------------ turn stamps

    def test_retried_stamped_commit_is_replayed(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            turn = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=rich_messages("t1"),
                    turn_index=1,
                    usage=(_usage("model", "gpt", 100, 20),),
                ),
                "turn-1",
            )
            first = await store.commit(turn)
            assert first == CommitResult(revision=1)
            after_first = await store.load("s")
            again = await store.commit(turn)
            assert again == CommitResult(revision=1, replayed=True)
            assert await store.load("s") == after_first
            # Later commits move the head; a replayed workflow retrying turn 1 from the
            # old head (a stale revision) still gets the stored result: stamp before CAS.
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, messages=_texts("t2", 1))
            )
            for expected in (None, 0, 1):
                retry = stamped(msgspec.structs.replace(turn, expected_revision=expected), "turn-1")
                assert await store.commit(retry) == CommitResult(revision=1, replayed=True)
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.revision == 2
            assert loaded.messages == rich_messages("t1") + _texts("t2", 1)
            assert loaded.usage == (_usage("model", "gpt", 100, 20),)

        self.run(make_store, body)

    def test_same_turn_with_other_content_conflicts(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            original = stamped(
                RuntimeCommit(session_id="s", expected_revision=None, messages=_texts("a", 1)),
                "turn-1",
            )
            await store.commit(original)
            before = await store.load("s")
            changed = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=1,
                    messages=_texts("b", 2),
                    usage=(_usage("m", "x", 1),),
                ),
                "turn-1",
            )
            with pytest.raises(TurnCommitConflict) as info:
                await store.commit(changed)
            assert info.value.stamp == changed.stamp
            assert await store.load("s") == before
            # The conflict is about the turn, not the revision: it is reported even when
            # the revision is current, and the original still replays.
            assert (await store.commit(original)).replayed

        self.run(make_store, body)

    def test_stamp_with_a_wrong_hash_is_refused(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            commit = RuntimeCommit(
                session_id="s",
                expected_revision=None,
                messages=_texts("a", 1),
                stamp=TurnStamp(session_id="s", turn_id="turn-1", commit_hash="0" * 64),
            )
            with pytest.raises(ValueError, match="turn-1"):
                await store.commit(commit)
            assert await store.load("s") is None

        self.run(make_store, body)

    def test_turn_ids_are_scoped_to_their_session(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            for sid in ("s1", "s2"):
                commit = RuntimeCommit(
                    session_id=sid, expected_revision=None, messages=_texts(sid, 1)
                )
                assert await store.commit(stamped(commit, "turn-1")) == CommitResult(revision=1)

        self.run(make_store, body)

    # ------------------------------------------------------------ content

    def test_usage_aggregates_by_source_and_model(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    usage=(
                        _usage("model", "gpt", 10, 1),
                        _usage("tool:search", "mini", 3),
                        _usage("model", "gpt", 5, 2),
                    ),
                )
            )
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=1,
                    usage=(
                        _usage("model", "claude", 7),
                        _usage("model", "gpt", 1, 1),
                        UsageRow(source="zero", model="z", usage=LlmUsage()),
                    ),
                )
            )
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.usage == (
                UsageRow(
                    source="model",
                    model="gpt",
                    usage=LlmUsage(input_tokens=16, output_tokens=4, cached_input_tokens=7),
                ),
                _usage("tool:search", "mini", 3),
                _usage("model", "claude", 7),
                UsageRow(source="zero", model="z", usage=LlmUsage()),
            )

        self.run(make_store, body)

    def test_rich_messages_round_trip_exactly(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            first, second = rich_messages("one"), rich_messages("two")
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=first)
            )
            snapshot = await store.load("s")
            await store.commit(RuntimeCommit(session_id="s", expected_revision=1, messages=second))
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.messages == first + second
            assert encode(loaded.messages) == encode(first + second)
            assert snapshot is not None
            assert snapshot.messages == first, "a loaded session is a snapshot"

        self.run(make_store, body)

    def test_commit_cost_is_independent_of_history(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            if self.rows_written(store) is None:
                pytest.skip(f"{type(store).__name__} does not report rows written")
            usage = (_usage("model", "gpt", 10),)

            async def cost(revision: int, tag: str) -> int:
                before = self.rows_written(store)
                commit = RuntimeCommit(
                    session_id="s", expected_revision=revision, messages=_texts(tag, 4), usage=usage
                )
                await store.commit(stamped(commit, tag))
                after = self.rows_written(store)
                assert before is not None
                assert after is not None
                return after - before

            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            early = await cost(1, "early")
            for i in range(2, 60):
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=i, messages=_texts(f"h{i}", 4))
                )
            late = await cost(60, "late")
            assert early == late, "a commit must not rewrite history"
            # the 4 messages, plus a bounded constant (head, usage, stamp)
            assert 4 <= late <= 4 + len(usage) + 3
            loaded = await store.load("s")
            assert loaded is not None
            assert len(loaded.messages) == 4 * 60

        self.run(make_store, body)

    def test_sessions_are_independent(self, make_store: StoreFactory) -> None:
        async def body(store: SessionStore) -> None:
            ids = [f"session-{i}" for i in range(8)]
            for round_ in range(3):
                for i, sid in enumerate(ids):
                    await store.commit(
                        RuntimeCommit(
                            session_id=sid,
                            expected_revision=round_ or None,
                            messages=_texts(f"{sid}-r{round_}", i % 3),
                            turn_index=round_,
                            usage=(_usage("model", sid, round_ + 1),),
                        )
                    )
            for i, sid in enumerate(ids):
                loaded = await store.load(sid)
                assert loaded is not None
                assert loaded.revision == 3
                assert loaded.messages == sum((_texts(f"{sid}-r{r}", i % 3) for r in range(3)), ())
                assert loaded.usage == (
                    UsageRow(
                        source="model",
                        model=sid,
                        usage=LlmUsage(input_tokens=6, cached_input_tokens=2),
                    ),
                )
            assert await store.load("session-8") is None

        self.run(make_store, body)

    def test_concurrent_commits_at_one_revision_have_one_winner(
        self, make_store: StoreFactory
    ) -> None:
        async def body(store: SessionStore) -> None:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            for revision in range(1, 6):
                outcomes = await asyncio.gather(
                    *(
                        _outcome(
                            store.commit(
                                RuntimeCommit(
                                    session_id="s",
                                    expected_revision=revision,
                                    messages=_texts(f"r{revision}w{w}", 1),
                                )
                            )
                        )
                        for w in range(4)
                    )
                )
                winners = [o for o in outcomes if o[0] == "ok"]
                assert winners == [("ok", revision + 1, False)]
                assert sorted(outcomes)[:-1] == [("head", "s", revision, revision + 1)] * 3
            loaded = await store.load("s")
            assert loaded is not None
            assert (loaded.revision, len(loaded.messages)) == (6, 5)

        self.run(make_store, body)

    # ------------------------------------------------------------ the session graph

    def test_branching_moves_the_active_path_and_keeps_the_old_branch(
        self, make_store: StoreFactory
    ) -> None:
        """A leaf moved back starts a new branch; both branches stay in the graph."""

        async def body(store: SessionStore) -> None:
            a, b = _texts("a", 3), _texts("b", 2)
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None, messages=a))
            # branch back to a-0, then append: b hangs under a-0
            await store.commit(RuntimeCommit(session_id="s", expected_revision=1, leaf_id="a-0"))
            moved = await store.load("s")
            assert moved is not None
            assert (moved.leaf_id, moved.messages) == ("a-0", a[:1])
            await store.commit(RuntimeCommit(session_id="s", expected_revision=2, messages=b))
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.messages == a[:1] + b
            assert loaded.leaf_id == "b-1"
            graph = loaded.graph
            assert [n.id for n in graph] == ["a-0", "a-1", "a-2", "b-0", "b-1"]
            assert graph.children("a-0") == ("a-1", "b-0")
            assert graph.branch_points == ("a-0",)
            assert graph.orphaned_ids() == ("a-1", "a-2")
            assert graph.path_to("a-2") == a
            # append under an explicit parent off the active path
            c = _texts("c", 1)
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=3, messages=c, parent_id="a-2")
            )
            again = await store.load("s")
            assert again is not None
            assert again.messages == a + c
            assert again.graph.node("c-0") == GraphNode(message=c[0], parent_id="a-2")

        self.run(make_store, body)

    def test_graph_errors_are_typed_and_write_nothing(self, make_store: StoreFactory) -> None:
        """Unknown parent or leaf, duplicate ids, bad replacements: ``GraphError``, no change."""

        async def body(store: SessionStore) -> None:
            a = _texts("a", 2)
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None, messages=a))
            before = await store.load("s")
            bad = [
                (
                    "unknown_parent",
                    RuntimeCommit(
                        session_id="s", expected_revision=1, messages=_texts("x", 1), parent_id="zz"
                    ),
                ),
                ("unknown_leaf", RuntimeCommit(session_id="s", expected_revision=1, leaf_id="zz")),
                (
                    "duplicate_id",
                    RuntimeCommit(
                        session_id="s", expected_revision=1, messages=_texts("n", 1) + a[:1]
                    ),
                ),
                (
                    "duplicate_id",
                    RuntimeCommit(session_id="s", expected_revision=1, messages=_texts("n", 1) * 2),
                ),
                (
                    "second_root",
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        replace_graph=(GraphNode(message=a[0]), GraphNode(message=a[1])),
                    ),
                ),
                (
                    "unordered",
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        replace_graph=(
                            GraphNode(message=a[1], parent_id="a-0"),
                            GraphNode(message=a[0]),
                        ),
                    ),
                ),
                (
                    "unknown_parent",
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        replace_graph=(GraphNode(message=a[0], parent_id="zz"),),
                    ),
                ),
                (
                    "replace_with_messages",
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        messages=_texts("x", 1),
                        replace_graph=(GraphNode(message=a[0]),),
                    ),
                ),
                (
                    "unknown_leaf",
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        replace_graph=(GraphNode(message=a[0]),),
                        leaf_id="a-1",
                    ),
                ),
            ]
            for problem, commit in bad:
                with pytest.raises(GraphError) as info:
                    await store.commit(commit)
                assert info.value.problem == problem, commit
                assert "'s'" in str(info.value)
                assert await store.load("s") == before
            # a brand-new session cannot name a parent either
            with pytest.raises(GraphError) as info:
                await store.commit(
                    RuntimeCommit(
                        session_id="new", expected_revision=None, messages=a, parent_id="a-0"
                    )
                )
            assert info.value.problem == "unknown_parent"
            assert await store.load("new") is None

        self.run(make_store, body)

    def test_replace_graph_rebuilds_it_for_a_fork(self, make_store: StoreFactory) -> None:
        """A first commit with ``replace_graph`` creates a session holding exactly those nodes."""

        async def body(store: SessionStore) -> None:
            a = _texts("a", 3)
            nodes = (
                GraphNode(message=a[0]),
                GraphNode(message=a[1], parent_id="a-0"),
                GraphNode(message=a[2], parent_id="a-0"),
            )
            await store.commit(
                RuntimeCommit(
                    session_id="f", expected_revision=None, replace_graph=nodes, leaf_id="a-1"
                )
            )
            loaded = await store.load("f")
            assert loaded is not None
            assert loaded.nodes == nodes
            assert (loaded.leaf_id, loaded.messages) == ("a-1", a[:2])
            # replacing again drops every old node, tombstoned ones included
            await store.commit(RuntimeCommit(session_id="f", expected_revision=1, leaf_id="a-2"))
            assert await store.tombstone("f", ["a-1"]) == 1
            await store.commit(
                RuntimeCommit(session_id="f", expected_revision=2, replace_graph=nodes[:1])
            )
            again = await store.load("f")
            assert again is not None
            assert (again.nodes, again.leaf_id) == (nodes[:1], "a-0")
            assert await store.vacuum("f") == 0
            # and the graph grows on from there
            await store.commit(RuntimeCommit(session_id="f", expected_revision=3, messages=a[1:2]))
            grown = await store.load("f")
            assert grown is not None
            assert grown.messages == a[:2]

        self.run(make_store, body)

    def test_tombstones_hide_subtrees_and_vacuum_deletes_them(
        self, make_store: StoreFactory
    ) -> None:
        """Tombstoning hides a node and its descendants; the active path is protected."""

        async def body(store: SessionStore) -> None:
            a, b = _texts("a", 3), _texts("b", 2)
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None, messages=a))
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, messages=b, parent_id="a-0")
            )
            with pytest.raises(GraphError) as info:
                await store.tombstone("s", ["a-2", "b-0"])
            assert (info.value.problem, info.value.node_id) == ("on_active_path", "b-0")
            loaded = await store.load("s")
            assert loaded is not None
            assert len(loaded.nodes) == 5, "a refused tombstone hides nothing"
            assert await store.tombstone("s", ["a-1", "unknown"]) == 2  # a-1 and a-2
            assert await store.tombstone("s", ["a-2"]) == 0, "already hidden"
            hidden = await store.load("s")
            assert hidden is not None
            assert [n.id for n in hidden.nodes] == ["a-0", "b-0", "b-1"]
            assert hidden.messages == a[:1] + b
            # hidden ids still exist until vacuumed: reusing one is a duplicate
            with pytest.raises(GraphError):
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=2, messages=a[1:2])
                )
            # a hidden node cannot be branched to or appended under
            for commit in (
                RuntimeCommit(session_id="s", expected_revision=2, leaf_id="a-1"),
                RuntimeCommit(
                    session_id="s", expected_revision=2, messages=_texts("x", 1), parent_id="a-2"
                ),
            ):
                with pytest.raises(GraphError):
                    await store.commit(commit)
            assert await store.vacuum("s") == 2
            assert await store.vacuum("s") == 0
            assert await store.vacuum("nobody") == 0
            assert await store.tombstone("nobody", ["a-0"]) == 0
            # vacuumed ids may be used again, and appends still chain correctly
            await store.commit(RuntimeCommit(session_id="s", expected_revision=2, messages=a[1:]))
            final = await store.load("s")
            assert final is not None
            assert final.messages == a[:1] + b + a[1:]
            with pytest.raises(ValueError, match="node ids"):
                await store.tombstone("s", "a-0")

        self.run(make_store, body)

    def test_load_turn_returns_the_record_and_the_turns_messages(
        self, make_store: StoreFactory
    ) -> None:
        """``load_turn`` finds a stamped commit by turn id, with its record and messages."""

        async def body(store: SessionStore) -> None:
            assert await store.load_turn("s", "t1") is None
            msgs = (
                user_message("t1.in", "question"),
                user_message("t1.m1", "answer"),
            )
            record = TurnRecord(
                outcome=Finished(result=AssistantAnswer(text="answer")),
                usage=LlmUsage(input_tokens=5, output_tokens=2),
            )
            commit = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=(user_message("t0.in", "before"), *msgs),
                    record=record,
                ),
                "t1",
            )
            await store.commit(commit)
            await store.commit(
                stamped(
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        messages=(user_message("t10.in", "later"),),
                    ),
                    "t10",
                )
            )
            landed = await store.load_turn("s", "t1")
            assert landed is not None
            assert landed.turn_id == "t1"
            assert landed.revision == 1
            assert landed.commit_hash == commit.stamp.commit_hash  # type: ignore[union-attr]
            assert landed.record == record
            assert landed.messages == msgs, "only ids under 't1.', in commit order"
            other = await store.load_turn("s", "t10")
            assert other is not None
            assert other.record is None
            assert await store.load_turn("s", "t2") is None
            assert await store.load_turn("other", "t1") is None
            # an answer that is the turn's last assistant message is read back from it
            answer = Message(
                id="t2.m1",
                role=Role.ASSISTANT,
                parts=(Part(id="t2.m1.p0", kind=PartKind.PROSE, content="the answer"),),
            )
            said = TurnRecord(outcome=Finished(result=AssistantAnswer(text="the answer")))
            await store.commit(
                stamped(
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=2,
                        messages=(user_message("t2.in", "q"), answer),
                        record=said,
                    ),
                    "t2",
                )
            )
            second = await store.load_turn("s", "t2")
            assert second is not None
            assert second.record == said
            assert second.messages[-1] == answer
            with pytest.raises(ValueError, match="turn id"):
                await store.load_turn("s", "")

        self.run(make_store, body)

    def test_text_no_backend_can_store_is_refused_alike(self, make_store: StoreFactory) -> None:
        """NUL characters and lone surrogates in any id: the same ``ValueError`` everywhere."""

        async def body(store: SessionStore) -> None:
            with pytest.raises(ValueError, match="turn id must be valid Unicode"):
                await store.load_turn("s", "t\ud800")
            with pytest.raises(ValueError, match="node id must not contain NUL"):
                await store.tombstone("s", ["n\x00"])
            bad = [
                RuntimeCommit(
                    session_id="s", expected_revision=None, messages=_texts("bad\x00", 1)
                ),
                RuntimeCommit(session_id="s", expected_revision=None, frame_id="f\ud800"),
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    usage=(UsageRow(source="s\x00", model="m", usage=LlmUsage()),),
                ),
            ]
            for commit in bad:
                with pytest.raises(ValueError, match=r"must not contain NUL|valid Unicode"):
                    await store.commit(commit)
            assert await store.load("s") is None

        self.run(make_store, body)

    # ------------------------------------------------------------ session state

    def test_state_round_trips_exactly_and_later_commits_merge(
        self, make_store: StoreFactory
    ) -> None:
        """Blobs load back byte for byte; a commit changes only the names it gives."""

        async def body(store: SessionStore) -> None:
            big = hashlib.shake_256(b"incompressible").digest(200 * 1024)
            wide = b"ab\x00" * (200 * 1024 // 3)  # compresses well
            first: dict[str, bytes | None] = {
                "plugin:memory": b"one",
                "empty": b"",
                "nul": b"\x00a\x00\x00",
                "big": big,
                "wide": wide,
                "h\u00e9llo \U0001f600": b"\xff\xfe\x00",
                "n" * MAX_STATE_NAME: b"the longest name",
            }
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=None, messages=_texts("a", 1), state=first
                )
            )
            want = dict(first)

            async def check(step: str) -> None:
                loaded = await store.load("s")
                assert loaded is not None
                assert sorted(loaded.state) == sorted(want), step
                for name, value in want.items():
                    got = loaded.state[name]
                    assert type(got) is bytes, (step, name, type(got))
                    assert got == value, (step, name, len(got), len(value or b""))

            await check("first commit")
            snapshot = await store.load("s")
            assert snapshot is not None
            snapshot.state["empty"] = b"changed"
            del snapshot.state["big"]
            await check("a loaded session is a snapshot")
            change: dict[str, bytes | None] = {"plugin:memory": b"two", "added": b"\x00"}
            await store.commit(RuntimeCommit(session_id="s", expected_revision=1, state=change))
            want.update(change)
            await check("a later commit keeps the names it does not give")
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=2,
                    state={"big": None, "never-set": None, "nul": None},
                )
            )
            del want["big"], want["nul"]
            await check("None deletes; deleting an absent name is fine")
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=3, messages=_texts("b", 1))
            )
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=4, state={"wide": wide, "empty": b""}
                )
            )
            await check("a commit without state, then one with the stored values")
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=5, state={"big": b"", "nul": big})
            )
            want.update(big=b"", nul=big)
            await check("deleted names set again; a big blob replaced by an empty one")
            # a session that never had state, and one whose every blob was deleted
            await store.commit(
                RuntimeCommit(session_id="bare", expected_revision=None, messages=_texts("c", 1))
            )
            await store.commit(
                RuntimeCommit(session_id="gone", expected_revision=None, state={"x": b"1"})
            )
            await store.commit(
                RuntimeCommit(session_id="gone", expected_revision=1, state={"x": None})
            )
            for sid in ("bare", "gone"):
                loaded = await store.load(sid)
                assert loaded is not None
                assert loaded.state == {}, sid

        self.run(make_store, body)

    def test_state_is_part_of_the_turn_stamp(self, make_store: StoreFactory) -> None:
        """Same turn, same state: replayed, nothing written; other state: a conflict."""

        async def body(store: SessionStore) -> None:
            turn = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=_texts("t1", 1),
                    state={"k": b"v1", "gone": None},
                ),
                "turn-1",
            )
            assert await store.commit(turn) == CommitResult(revision=1)
            landed = await store.load("s")
            assert landed is not None
            assert landed.state == {"k": b"v1"}
            written = self.rows_written(store)
            assert await store.commit(turn) == CommitResult(revision=1, replayed=True)
            assert await store.load("s") == landed
            assert self.rows_written(store) == written, "a replay writes nothing"
            # the state moves on; a retry of turn 1 must not put its state back
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=1, state={"k": b"v2", "other": b"o"}
                )
            )
            moved = await store.load("s")
            assert moved is not None
            assert moved.state == {"k": b"v2", "other": b"o"}
            written = self.rows_written(store)
            for expected in (None, 1, 2):
                retry = stamped(msgspec.structs.replace(turn, expected_revision=expected), "turn-1")
                assert await store.commit(retry) == CommitResult(revision=1, replayed=True)
                assert await store.load("s") == moved, f"replay from revision {expected}"
            assert self.rows_written(store) == written, "a replay writes nothing"
            # other state under the same turn id is other content
            others: list[dict[str, bytes | None]] = [
                {"k": b"v1-changed", "gone": None},
                {"k": b"v1", "gone": None, "extra": b""},
                {"k": None, "gone": None},
                {},
            ]
            for state in others:
                changed = stamped(
                    msgspec.structs.replace(turn, expected_revision=2, state=state), "turn-1"
                )
                with pytest.raises(TurnCommitConflict) as info:
                    await store.commit(changed)
                assert info.value.stamp == changed.stamp, state
                assert await store.load("s") == moved, state
            record = await store.load_turn("s", "turn-1")
            assert record is not None
            assert (record.revision, record.commit_hash) == (1, turn.stamp.commit_hash)  # type: ignore[union-attr]

        self.run(make_store, body)

    def test_refused_commits_write_no_state(self, make_store: StoreFactory) -> None:
        """A stale revision or a graph error: none of the commit's state is written."""

        async def body(store: SessionStore) -> None:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=_texts("a", 2),
                    state={"k": b"v1", "keep": b"x"},
                )
            )
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, state={"k": b"v2"})
            )
            before = await store.load("s")
            assert before is not None
            assert before.state == {"k": b"v2", "keep": b"x"}
            change: dict[str, bytes | None] = {"k": b"late", "keep": None, "new": b"n"}
            stale = RuntimeCommit(
                session_id="s", expected_revision=1, messages=_texts("late", 1), state=change
            )
            for commit in (stale, stamped(stale, "turn-late")):
                with pytest.raises(HeadRevisionConflict):
                    await store.commit(commit)
                assert await store.load("s") == before, "a stale commit wrote state"
            assert await store.load_turn("s", "turn-late") is None
            bad_graph = [
                RuntimeCommit(
                    session_id="s",
                    expected_revision=2,
                    messages=_texts("x", 1),
                    parent_id="zz",
                    state=change,
                ),
                RuntimeCommit(
                    session_id="s",
                    expected_revision=2,
                    messages=_texts("x", 1) + _texts("a", 1),
                    state=change,
                ),
                RuntimeCommit(session_id="s", expected_revision=2, leaf_id="zz", state=change),
            ]
            for commit in bad_graph:
                with pytest.raises(GraphError):
                    await store.commit(stamped(commit, "turn-graph"))
                assert await store.load("s") == before, "a commit failing a graph check wrote state"
            # refused first commits leave no session behind, and no state
            for commit in (
                RuntimeCommit(
                    session_id="new",
                    expected_revision=None,
                    messages=_texts("n", 1),
                    parent_id="zz",
                    state={"k": b"v"},
                ),
                RuntimeCommit(session_id="new", expected_revision=3, state={"k": b"v"}),
            ):
                with pytest.raises((GraphError, HeadRevisionConflict)):
                    await store.commit(commit)
                assert await store.load("new") is None
            # the next good commit starts from the stored state
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=2, state={"new": b"n"})
            )
            after = await store.load("s")
            assert after is not None
            assert after.state == {"k": b"v2", "keep": b"x", "new": b"n"}

        self.run(make_store, body)

    def test_malformed_state_is_refused_before_anything_is_written(
        self, make_store: StoreFactory
    ) -> None:
        """Non-bytes values and bad names: a ``ValueError`` naming the problem, no write."""

        async def body(store: SessionStore) -> None:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, state={"k": b"v"})
            )
            before = await store.load("s")
            written = self.rows_written(store)
            bad: list[tuple[str, dict[Any, Any]]] = [
                ("'k': the value must be bytes or None, got str", {"ok": b"1", "k": "text"}),
                ("got bytearray", {"k": bytearray(b"x"), "ok": b"1"}),
                ("got int", {"k": 1}),
                ("got memoryview", {"k": memoryview(b"x")}),
                ("state name must not be blank", {"": b"x"}),
                ("state name must not be blank", {" \t": b"x"}),
                ("state name must not contain NUL", {"a\x00b": b"x"}),
                (f"is {MAX_STATE_NAME + 1} characters", {"n" * (MAX_STATE_NAME + 1): b"x"}),
                ("state name must be a string", {7: b"x"}),
                ("state name must be valid Unicode", {"s\ud800": b"x"}),
            ]
            for what, state in bad:
                for sid, revision in (("s", 1), ("new", None)):
                    with pytest.raises(ValueError, match=what):
                        await store.commit(
                            RuntimeCommit(
                                session_id=sid,
                                expected_revision=revision,
                                messages=_texts(f"{sid}-m", 1),
                                state=state,
                            )
                        )
                assert await store.load("s") == before, what
                assert await store.load("new") is None, what
            assert self.rows_written(store) == written

        self.run(make_store, body)

    def test_state_is_per_session_and_a_fork_can_carry_it(self, make_store: StoreFactory) -> None:
        """Sessions keep their own blobs; a ``replace_graph`` fork given the state has it."""

        async def body(store: SessionStore) -> None:
            await store.commit(
                RuntimeCommit(
                    session_id="s1",
                    expected_revision=None,
                    messages=_texts("a", 3),
                    state={"k": b"1", "only-1": b"x"},
                )
            )
            await store.commit(
                RuntimeCommit(session_id="s2", expected_revision=None, state={"k": b"2"})
            )
            await store.commit(
                RuntimeCommit(session_id="s1", expected_revision=1, state={"k": None})
            )
            source = await store.load("s1")
            assert source is not None
            assert source.state == {"only-1": b"x"}
            other = await store.load("s2")
            assert other is not None
            assert other.state == {"k": b"2"}, "a delete in one session touches no other"
            fork_meta = SessionMeta(
                session_id="f",
                created_at_ms=30,
                relation=SessionRelation(
                    kind="fork", parent_session_id="s1", node_id=source.leaf_id
                ),
            )
            carried: dict[str, bytes | None] = dict(source.state)
            await store.commit(
                RuntimeCommit(
                    session_id="f",
                    expected_revision=None,
                    replace_graph=source.nodes,
                    leaf_id=source.leaf_id,
                    state=carried,
                    meta=fork_meta,
                )
            )
            fork = await store.load("f")
            assert fork is not None
            assert fork.state == source.state
            assert (fork.nodes, fork.messages) == (source.nodes, source.messages)
            assert await store.load_session_meta("f") == fork_meta
            assert await store.load_session_meta("s1") is None
            # from here the two go their own ways
            await store.commit(
                RuntimeCommit(
                    session_id="f", expected_revision=1, state={"only-1": b"fork", "f": b""}
                )
            )
            await store.commit(
                RuntimeCommit(session_id="s1", expected_revision=2, state={"only-1": None})
            )
            fork = await store.load("f")
            assert fork is not None
            assert fork.state == {"only-1": b"fork", "f": b""}
            source = await store.load("s1")
            assert source is not None
            assert source.state == {}
            assert await store.load("s2") == other
            # rewriting a graph keeps the state the rewrite does not name
            await store.commit(
                RuntimeCommit(session_id="f", expected_revision=2, replace_graph=source.nodes[:1])
            )
            rewritten = await store.load("f")
            assert rewritten is not None
            assert rewritten.state == {"only-1": b"fork", "f": b""}

        self.run(make_store, body)

    def test_state_commit_cost_is_independent_of_stored_state(
        self, make_store: StoreFactory
    ) -> None:
        """Setting one blob writes the same rows whether the session has 1 blob or 51."""

        async def body(store: SessionStore) -> None:
            if self.rows_written(store) is None:
                pytest.skip(f"{type(store).__name__} does not report rows written")

            async def cost(revision: int, state: dict[str, bytes | None]) -> int:
                before = self.rows_written(store)
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=revision, state=state)
                )
                after = self.rows_written(store)
                assert before is not None
                assert after is not None
                return after - before

            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            early = await cost(1, {"k": b"1"})
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=2,
                    state={f"stored-{i}": bytes([i]) * 600 for i in range(50)},
                )
            )
            late = await cost(3, {"k": b"2"})
            assert early == late, "a commit must not rewrite blobs it does not name"
            assert 1 <= late <= 4, "the head and one blob, plus a bounded constant"
            assert await cost(4, {"stored-0": None}) <= 4
            loaded = await store.load("s")
            assert loaded is not None
            assert len(loaded.state) == 50

        self.run(make_store, body)

    def test_concurrent_first_commits_write_only_the_winners_state_and_meta(
        self, make_store: StoreFactory
    ) -> None:
        """Racing first commits: one lands, with its own state and metadata only."""

        async def body(store: SessionStore) -> None:
            commits = [
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=_texts(f"w{w}", 1),
                    state={"writer": bytes([w]), f"only-{w}": b"x"},
                    meta=SessionMeta(session_id="s", created_at_ms=w, name=f"writer {w}"),
                )
                for w in range(4)
            ]
            outcomes = await asyncio.gather(*(_outcome(store.commit(c)) for c in commits))
            winners = [w for w, o in enumerate(outcomes) if o[0] == "ok"]
            assert len(winners) == 1, outcomes
            (w,) = winners
            assert sorted(outcomes)[:-1] == [("head", "s", None, 1)] * 3
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.messages == commits[w].messages
            assert loaded.state == {"writer": bytes([w]), f"only-{w}": b"x"}
            assert await store.load_session_meta("s") == commits[w].meta

        self.run(make_store, body)

    # ------------------------------------------------------------ session metadata

    def test_session_meta_round_trips_every_field(self, make_store: StoreFactory) -> None:
        """Every field loads back as saved, for sessions that were never committed."""

        async def body(store: SessionStore) -> None:
            assert await store.load_session_meta("nobody") is None
            metas = [
                SessionMeta(
                    session_id="root",
                    created_at_ms=1_700_000_000_123,
                    name='h\u00e9llo "q" \U0001f600',
                    model="gpt-5",
                ),
                SessionMeta(session_id="minimal", created_at_ms=0),
                SessionMeta(
                    session_id="fork",
                    created_at_ms=2**63 - 1,
                    name="a fork",
                    model="",
                    relation=SessionRelation(
                        kind="fork", parent_session_id="root", node_id="root-3"
                    ),
                ),
                SessionMeta(
                    session_id="child",
                    created_at_ms=5,
                    relation=SessionRelation(
                        kind="child", parent_session_id="root", turn_id="turn-7", call_id="call_1"
                    ),
                ),
                SessionMeta(
                    session_id="bare relation",
                    created_at_ms=6,
                    relation=SessionRelation(kind="fork", parent_session_id="elsewhere"),
                ),
            ]
            for meta in metas:
                assert await store.save_session_meta(meta) == meta
            for meta in metas:
                assert await store.load_session_meta(meta.session_id) == meta
                assert await store.load(meta.session_id) is None, "metadata is not a head"
            assert await store.list_sessions() == tuple(
                sorted(metas, key=lambda m: (m.created_at_ms, m.session_id))
            )
            assert await store.load_session_meta("nobody") is None
            with pytest.raises(ValueError, match="session id must not be blank"):
                await store.load_session_meta("")
            with pytest.raises(ValueError, match="session id must not contain NUL"):
                await store.load_session_meta("root\x00")

        self.run(make_store, body)

    def test_save_session_meta_replaces_or_keeps(self, make_store: StoreFactory) -> None:
        """``replace=True`` overwrites the whole row; ``replace=False`` returns the stored one."""

        async def body(store: SessionStore) -> None:
            first = SessionMeta(session_id="s", created_at_ms=10, name="first")
            second = SessionMeta(
                session_id="s",
                created_at_ms=20,
                model="m",
                relation=SessionRelation(
                    kind="child", parent_session_id="p", turn_id="t", call_id="c"
                ),
            )
            assert await store.save_session_meta(first, replace=False) == first
            assert await store.save_session_meta(second, replace=False) == first
            assert await store.load_session_meta("s") == first
            assert await store.save_session_meta(second) == second
            assert await store.load_session_meta("s") == second, "the name is gone too"
            assert await store.save_session_meta(first, replace=True) == first
            assert await store.list_sessions() == (first,)
            # racing keep-if-absent saves all get the one row that was stored
            racers = [
                SessionMeta(session_id="race", created_at_ms=i, name=f"r{i}") for i in range(4)
            ]
            got = await asyncio.gather(*(store.save_session_meta(m, replace=False) for m in racers))
            assert got[0] in racers
            assert got == [got[0]] * 4
            assert await store.load_session_meta("race") == got[0]

        self.run(make_store, body)

    def test_commit_meta_is_written_only_when_the_session_has_none(
        self, make_store: StoreFactory
    ) -> None:
        """A commit's metadata is inserted if absent and never replaces a stored row."""

        async def body(store: SessionStore) -> None:
            saved = SessionMeta(session_id="pre", created_at_ms=5, name="saved first")
            await store.save_session_meta(saved)
            await store.commit(
                RuntimeCommit(
                    session_id="pre",
                    expected_revision=None,
                    meta=SessionMeta(session_id="pre", created_at_ms=9, name="from the commit"),
                )
            )
            assert await store.load_session_meta("pre") == saved
            m1 = SessionMeta(session_id="s", created_at_ms=10, name="one", model="m")
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=None, messages=_texts("a", 1), meta=m1
                )
            )
            assert await store.load_session_meta("s") == m1
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=1,
                    meta=SessionMeta(session_id="s", created_at_ms=11, name="two"),
                )
            )
            assert await store.load_session_meta("s") == m1, "a later commit replaced it"
            # refused commits write no metadata
            await store.commit(RuntimeCommit(session_id="bare", expected_revision=None))
            late = SessionMeta(session_id="bare", created_at_ms=3, name="late")
            for commit in (
                RuntimeCommit(session_id="bare", expected_revision=None, meta=late),
                RuntimeCommit(session_id="bare", expected_revision=1, leaf_id="zz", meta=late),
            ):
                with pytest.raises((HeadRevisionConflict, GraphError)):
                    await store.commit(commit)
                assert await store.load_session_meta("bare") is None
            # a session first committed without metadata gets it from a later commit
            await store.commit(RuntimeCommit(session_id="bare", expected_revision=1, meta=late))
            assert await store.load_session_meta("bare") == late
            assert [m.session_id for m in await store.list_sessions()] == ["bare", "pre", "s"]

        self.run(make_store, body)

    def test_meta_is_not_part_of_the_turn_stamp(self, make_store: StoreFactory) -> None:
        """A retry with another ``created_at_ms`` replays; a replay writes no metadata."""

        async def body(store: SessionStore) -> None:
            base = RuntimeCommit(
                session_id="s",
                expected_revision=None,
                messages=_texts("t1", 1),
                state={"k": b"v"},
            )
            m1 = SessionMeta(session_id="s", created_at_ms=100, name="first try")
            first = stamped(msgspec.structs.replace(base, meta=m1), "turn-1")
            retry = stamped(
                msgspec.structs.replace(base, meta=msgspec.structs.replace(m1, created_at_ms=200)),
                "turn-1",
            )
            assert first.stamp == retry.stamp
            assert await store.commit(first) == CommitResult(revision=1)
            assert await store.commit(retry) == CommitResult(revision=1, replayed=True)
            assert await store.load_session_meta("s") == m1
            # a replay writes no metadata, even for a session that has none
            plain = stamped(
                RuntimeCommit(session_id="r", expected_revision=None, messages=_texts("r", 1)),
                "turn-1",
            )
            await store.commit(plain)
            landed = await store.load("r")
            written = self.rows_written(store)
            for expected in (None, 0, 1):
                with_meta = stamped(
                    msgspec.structs.replace(
                        plain,
                        expected_revision=expected,
                        meta=SessionMeta(session_id="r", created_at_ms=1),
                    ),
                    "turn-1",
                )
                assert await store.commit(with_meta) == CommitResult(revision=1, replayed=True)
                assert await store.load_session_meta("r") is None, f"replay at {expected}"
            assert await store.load("r") == landed
            assert self.rows_written(store) == written, "a replay writes nothing"
            assert await store.list_sessions() == (m1,)

        self.run(make_store, body)

    def test_list_sessions_orders_by_creation_then_id_and_honours_limit(
        self, make_store: StoreFactory
    ) -> None:
        """Oldest first, ties by session id (code point order); ``limit`` cuts the list."""

        async def body(store: SessionStore) -> None:
            assert await store.list_sessions() == ()
            await store.commit(RuntimeCommit(session_id="no-meta", expected_revision=None))
            assert await store.list_sessions() == (), "a session without metadata is not listed"
            for sid, at in (("b", 20), ("z", 5), ("aa", 20), ("c", 10), ("a", 20)):
                await store.save_session_meta(SessionMeta(session_id=sid, created_at_ms=at))
            d = SessionMeta(session_id="d", created_at_ms=15, name="from a commit")
            await store.commit(RuntimeCommit(session_id="d", expected_revision=None, meta=d))
            every = await store.list_sessions()
            assert [m.session_id for m in every] == ["z", "c", "d", "a", "aa", "b"]
            assert every[2] == d
            assert await store.list_sessions(limit=None) == every
            assert await store.list_sessions(limit=0) == ()
            assert await store.list_sessions(limit=1) == every[:1]
            assert await store.list_sessions(limit=4) == every[:4]
            assert await store.list_sessions(limit=100) == every
            # a replaced row moves with its new creation time
            await store.save_session_meta(SessionMeta(session_id="z", created_at_ms=20))
            assert [m.session_id for m in await store.list_sessions()] == [
                "c",
                "d",
                "a",
                "aa",
                "b",
                "z",
            ]
            # ties compare ids by code point, not by a locale's collation
            tied = ["\u00e9", "_x", "a-b", "B", "ab", "A", "a b"]
            for sid in tied:
                await store.save_session_meta(SessionMeta(session_id=sid, created_at_ms=99))
            listed = [m.session_id for m in await store.list_sessions()]
            assert listed[-len(tied) :] == sorted(tied), listed
            for limit in (-1, True, False, "2", 1.5):
                with pytest.raises(ValueError, match="limit"):
                    await store.list_sessions(limit=cast(Any, limit))

        self.run(make_store, body)

    def test_bad_meta_is_refused_and_writes_nothing(self, make_store: StoreFactory) -> None:
        """Bad metadata, saved or committed: a ``ValueError`` naming the field, no write."""

        async def body(store: SessionStore) -> None:
            good = SessionMeta(session_id="s", created_at_ms=1, name="good")
            fork = SessionRelation(kind="fork", parent_session_id="p", node_id="n")

            def bad_meta(**changes: Any) -> SessionMeta:
                return msgspec.structs.replace(good, **changes)

            bad: list[tuple[str, SessionMeta]] = [
                ("created_at_ms must be a non-negative integer", bad_meta(created_at_ms=-1)),
                ("created_at_ms", bad_meta(created_at_ms=True)),
                ("created_at_ms", bad_meta(created_at_ms=2**63)),
                ("created_at_ms", bad_meta(created_at_ms=1.5)),
                ("name must not be blank", bad_meta(name="")),
                ("name must not be blank", bad_meta(name=" \n")),
                ("name must not contain NUL", bad_meta(name="a\x00")),
                ("model must not contain NUL", bad_meta(model="m\x00")),
                (
                    "cannot be its own parent",
                    bad_meta(relation=SessionRelation(kind="fork", parent_session_id="s")),
                ),
                (
                    "fork or child",
                    bad_meta(relation=msgspec.structs.replace(fork, kind="sibling")),
                ),
                (
                    "fork or child",
                    bad_meta(
                        relation=SessionRelation(kind=cast(Any, "parent"), parent_session_id="p")
                    ),
                ),
                (
                    "parent session id must not be blank",
                    bad_meta(relation=SessionRelation(kind="child", parent_session_id="")),
                ),
                (
                    "relation call id must not contain NUL",
                    bad_meta(
                        relation=SessionRelation(
                            kind="child", parent_session_id="p", call_id="c\x00"
                        )
                    ),
                ),
            ]
            for what, meta in bad:
                for replace in (True, False):
                    with pytest.raises(ValueError, match=what):
                        await store.save_session_meta(meta, replace=replace)
                with pytest.raises(ValueError, match=what):
                    await store.commit(
                        RuntimeCommit(
                            session_id="s", expected_revision=None, state={"k": b"v"}, meta=meta
                        )
                    )
                assert await store.load_session_meta("s") is None, what
                assert await store.load("s") is None, what
            with pytest.raises(ValueError, match="session id must not be blank"):
                await store.save_session_meta(bad_meta(session_id=""))
            with pytest.raises(ValueError, match="must be a SessionMeta"):
                await store.save_session_meta(cast(Any, {"session_id": "s", "created_at_ms": 1}))
            with pytest.raises(ValueError, match="metadata names session 'other'"):
                await store.commit(
                    RuntimeCommit(
                        session_id="s", expected_revision=None, meta=bad_meta(session_id="other")
                    )
                )
            assert await store.load("s") is None
            assert await store.load_session_meta("other") is None
            assert await store.list_sessions() == ()
            # a stored row survives refused saves and commits
            await store.save_session_meta(good)
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            for what, meta in bad:
                with pytest.raises(ValueError, match=what):
                    await store.save_session_meta(meta)
                with pytest.raises(ValueError, match=what):
                    await store.commit(
                        RuntimeCommit(session_id="s", expected_revision=1, meta=meta)
                    )
                assert await store.load_session_meta("s") == good, what
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.revision == 1
            assert await store.list_sessions() == (good,)

        self.run(make_store, body)

    def test_tombstone_and_vacuum_leave_meta_and_state_alone(
        self, make_store: StoreFactory
    ) -> None:
        """Hiding and deleting nodes changes neither the metadata row nor the state blobs."""

        async def body(store: SessionStore) -> None:
            a = _texts("a", 3)
            meta = SessionMeta(session_id="s", created_at_ms=7, name="kept")
            state: dict[str, bytes | None] = {"k": b"v", "empty": b"", "a-1": b"named like a node"}
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=None, messages=a, state=state, meta=meta
                )
            )
            await store.commit(RuntimeCommit(session_id="s", expected_revision=1, leaf_id="a-0"))

            async def check(step: str) -> None:
                loaded = await store.load("s")
                assert loaded is not None
                assert loaded.state == state, step
                assert await store.load_session_meta("s") == meta, step
                assert await store.list_sessions() == (meta,), step

            with pytest.raises(GraphError):
                await store.tombstone("s", ["a-0"])
            await check("a refused tombstone")
            assert await store.tombstone("s", ["a-1"]) == 2
            await check("tombstone")
            assert await store.vacuum("s") == 2
            await check("vacuum")
            assert await store.vacuum("s") == 0
            await check("an empty vacuum")

        self.run(make_store, body)

    # ------------------------------------------------------------ queued work

    def test_queued_work_is_consumed_by_the_turn_commit(self, make_store: StoreFactory) -> None:
        """Enqueue (deduped), claim, and complete inside the stamped turn commit."""

        async def body(store: SessionStore) -> None:
            draft = QueuedBatchDraft(
                session_id="s", payloads=(QueuedTurnInput(text="later"),), source_key="k1"
            )
            batch = await store.enqueue(draft)
            again = await store.enqueue(
                QueuedBatchDraft(
                    session_id="s", payloads=(QueuedTurnInput(text="other"),), source_key="k1"
                )
            )
            assert again == batch, "the same source key returns the queued batch"
            assert await store.list_queued("s") == (batch,)
            claim = await store.claim_ready("s", owner_id="worker-1")
            assert claim is not None
            assert claim.batch_ids == (batch.batch_id,)
            assert await store.list_queued("s", pending_only=True) == ()
            assert await store.claim_ready("s", owner_id="worker-2") is None
            commit = stamped(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=_texts("q", 1),
                    completed_claims=(claim.completion(),),
                ),
                "t1",
            )
            assert (await store.commit(commit)).revision == 1
            assert await store.list_queued("s") == ()
            # a retry of the landed turn is answered from its stamp, claims and all
            retried = await store.commit(commit)
            assert (retried.revision, retried.replayed) == (1, True)
            # the source key is free again once its batch is gone
            fresh = await store.enqueue(draft)
            assert fresh.batch_id != batch.batch_id

        self.run(make_store, body)

    def test_a_stale_claim_fails_the_whole_commit(self, make_store: StoreFactory) -> None:
        """A claim taken over by another worker: ``QueuedWorkClaimExpired``, nothing written."""

        async def body(store: SessionStore) -> None:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
            batch = await store.enqueue(
                QueuedBatchDraft(session_id="s", payloads=(QueuedTurnInput(text="x"),))
            )
            old = await store.claim_ready("s", owner_id="slow", ttl_ms=1)
            assert old is not None
            await asyncio.sleep(0.01)  # the lease lapses; another worker takes over
            new = await store.claim_ready("s", owner_id="fast")
            assert new is not None
            assert new.fencing_token > old.fencing_token
            with pytest.raises(QueuedWorkClaimExpired):
                await store.renew_claim(old)
            before = await store.load("s")
            with pytest.raises(QueuedWorkClaimExpired):
                await store.commit(
                    stamped(
                        RuntimeCommit(
                            session_id="s",
                            expected_revision=1,
                            messages=_texts("late", 1),
                            completed_claims=(old.completion(),),
                        ),
                        "t-late",
                    )
                )
            assert await store.load("s") == before
            assert await store.load_turn("s", "t-late") is None
            assert [b.batch_id for b in await store.list_queued("s")] == [batch.batch_id]
            await store.abandon_claim(new)
            await store.abandon_claim(new)  # idempotent
            cancelled = await store.cancel_queued("s", batch.batch_id)
            assert cancelled is not None
            assert cancelled.batch_id == batch.batch_id
            assert await store.list_queued("s") == ()

        self.run(make_store, body)

    def test_queue_boundaries_and_exact_claims(self, make_store: StoreFactory) -> None:
        """A checkpoint never takes an after-turn head; exact claims cannot skip the head."""

        async def body(store: SessionStore) -> None:
            after = await store.enqueue(
                QueuedBatchDraft(
                    session_id="s",
                    payloads=(QueuedTurnInput(text="next turn"),),
                    delivery=Delivery.AFTER_CURRENT_TURN,
                )
            )
            early = await store.enqueue(
                QueuedBatchDraft(session_id="s", payloads=(QueuedTurnInput(text="now"),))
            )
            assert (
                await store.claim_ready("s", owner_id="t", boundary=ClaimBoundary.CHECKPOINT)
                is None
            )
            assert await store.claim_batches("s", [early.batch_id], owner_id="t") is None
            claim = await store.claim_batches("s", [after.batch_id], owner_id="t")
            assert claim is not None
            renewed = await store.renew_claim(claim, ttl_ms=60_000)
            assert (renewed.claim_id, renewed.lease_token) == (claim.claim_id, claim.lease_token)
            at_checkpoint = await store.claim_ready(
                "s", owner_id="t", boundary=ClaimBoundary.CHECKPOINT
            )
            assert at_checkpoint is not None
            assert at_checkpoint.batch_ids == (early.batch_id,)
            with pytest.raises(ValueError, match="payload"):
                await store.enqueue(QueuedBatchDraft(session_id="s", payloads=()))

        self.run(make_store, body)

    # ------------------------------------------------------------ the property

    def test_random_commit_sequences_match_a_model(self, make_store: StoreFactory) -> None:
        """Random commits (stale, retried, conflicting, with state) give the model's results."""

        async def check(ops: list[_Op]) -> None:
            store = make_store()
            model = _Model()
            try:
                for index, op in enumerate(ops):
                    session_id = _SESSIONS[op.session]
                    head = model.sessions.get(session_id)
                    node = _picked(model, op)
                    if op.kind in ("tombstone", "vacuum"):
                        assert node is not None
                        if op.kind == "vacuum":
                            want: Any = model.vacuum(session_id)
                            assert await store.vacuum(session_id) == want, f"op {index} {op}"
                            continue
                        try:
                            want = model.tombstone(session_id, node)
                        except GraphError as exc:
                            want = _conflict(exc)
                        try:
                            got: Any = await store.tombstone(session_id, [node])
                        except GraphError as exc:
                            got = _conflict(exc)
                        assert got == want, f"op {index} {op}"
                        continue
                    commit = _op_commit(index, op, None if head is None else head.revision, node)
                    expected = _model_outcome(model, commit)
                    got = await _outcome(store.commit(commit))
                    assert got == expected, f"op {index} {op}"
                    # after every commit, landed or not: the graph, counters and state
                    loaded = await store.load(commit.session_id)
                    assert loaded == model.load(commit.session_id), f"op {index} {op} stored"
                for session_id in _SESSIONS:
                    assert await store.load(session_id) == model.load(session_id)
            finally:
                await close_store(store)

        @self.property_settings
        @given(ops=_OPS)
        def prop(ops: list[_Op]) -> None:
            asyncio.run(asyncio.wait_for(check(ops), self.timeout))

        prop()
