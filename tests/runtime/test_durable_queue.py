"""The facade over the store's durable queue: across cores, processes and backends.

Every test runs on real stores: ``MemoryStore`` (cores sharing one object),
SQLite (cores opening one directory) and PostgreSQL (cores with their own
pools on one schema; skipped only when nothing listens at
``LASH_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_support import run

from lash import ConfigError, Delivery, LashCore, Session, tool
from lash.kernel.llm import LlmRequest, TextBlock, ToolResultBlock
from lash.kernel.messages import Role, user_message
from lash.kernel.outcome import Finished, Stopped, StopReason
from lash.runtime.activity import QueuedInputAccepted
from lash.runtime.plugins import AbortTurn, PluginRegistrar, TurnHookContext
from lash.runtime.queue import JOIN_SEPARATOR, UnsupportedQueuedWork
from lash.store.base import HeadRevisionConflict, RuntimeCommit, SessionStore
from lash.store.memory import MemoryStore
from lash.store.queue import (
    ClaimBoundary,
    QueuedBatch,
    QueuedBatchDraft,
    QueuedCommand,
    QueuedTurnInput,
    QueuedWorkClaimExpired,
    SlotPolicy,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

HERE = Path(__file__).parent
RUN_PREFIX = f"lash_dq_{os.getpid()}_{secrets.token_hex(3)}"
TIMEOUT = 60.0
EARLY = Delivery.EARLIEST_SAFE_BOUNDARY

try:
    from postgres_support import URL as PG_URL
    from postgres_support import drop_schemas, unreachable_reason
except ImportError as exc:  # no psycopg: the memory and SQLite runs still count
    PG_URL, PG_REASON = "", f"psycopg is not installed ({exc})"
else:
    PG_REASON = unreachable_reason(PG_URL)
NEEDS_PG = pytest.mark.skipif(PG_REASON is not None, reason=PG_REASON or "")
ALL_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=NEEDS_PG)]
SHARED_BACKENDS = ["sqlite", pytest.param("postgres", marks=NEEDS_PG)]
"""The backends another process can open."""


@pytest.fixture(scope="module", autouse=True)
def _drop_schemas() -> Iterator[None]:
    yield
    if PG_REASON is None:
        drop_schemas(RUN_PREFIX, PG_URL)


class Backend:
    """One shared storage; ``core()`` opens another worker (core and store handle) on it."""

    _count = 0

    def __init__(self, kind: str, root: Path) -> None:
        Backend._count += 1
        self.kind = kind
        self.root = root
        self.schema = f"{RUN_PREFIX}_{Backend._count}"
        self._memory = MemoryStore() if kind == "memory" else None
        self._opened: list[Any] = []

    def core(self, provider: Any = None, **kwargs: Any) -> LashCore:
        """A new core on the shared storage (its own connections on SQLite/PostgreSQL)."""
        store: Any
        if self.kind == "memory":
            store = self._memory
        elif self.kind == "sqlite":
            store = f"sqlite:///{self.root / 'db'}"
        else:
            from lash.store.postgres import PostgresStore

            store = PostgresStore(PG_URL, schema=self.schema, max_size=2)
            self._opened.append(store)
            kwargs.setdefault("attachments", f"file:///{self.root / 'attachments'}")
        core = LashCore(provider=provider or ScriptedProvider([]), model="m", store=store, **kwargs)
        self._opened.append(core)
        return core

    def child_args(self) -> list[str]:
        """How ``queue_child.py`` opens this storage."""
        if self.kind == "sqlite":
            return ["sqlite", str(self.root / "db")]
        return ["postgres", PG_URL, self.schema, str(self.root / "attachments")]

    async def aclose(self) -> None:
        for thing in reversed(self._opened):  # cores first, then the stores they share
            await thing.aclose()


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


@pytest.fixture(params=SHARED_BACKENDS)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


def on(backend: Backend, body: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``body`` on a fresh loop, closing every core and store it opened."""

    async def main() -> Any:
        try:
            return await body()
        finally:
            await backend.aclose()

    return run(main(), timeout=TIMEOUT)


def child_enqueue(
    backend: Backend, session: str, text: str, key: str = "", delivery: Delivery | None = None
) -> dict[str, Any]:
    """Enqueue from a separate process; its ``QueuedBatch`` as a dict."""
    args = [session, text, key] + ([delivery.value] if delivery is not None else [])
    done = subprocess.run(
        [sys.executable, str(HERE / "queue_child.py"), *backend.child_args(), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def text_of(batch: QueuedBatch) -> str:
    (item,) = batch.items
    assert isinstance(item.payload, QueuedTurnInput)
    return item.payload.text


def last_user_text(request: LlmRequest) -> str:
    texts = [
        b.text
        for m in request.messages
        if m.role.value == "user"
        for b in m.blocks
        if isinstance(b, TextBlock)
    ]
    return texts[-1]


def user_texts(session: Session) -> list[str]:
    """The committed user messages' texts, in history order."""
    return [m.parts[0].content for m in session.messages if m.role is Role.USER]


def echo() -> ScriptedProvider:
    """A model that answers every request with ``echo: <the last user text>``."""
    return ScriptedProvider(lambda request: Reply(text=f"echo: {last_user_text(request)}"))


# ---------------------------------------------------------------- across cores and processes


def test_input_queued_by_one_core_is_drained_by_another(backend: Backend) -> None:
    async def body() -> None:
        writer, worker = backend.core(), backend.core(echo())
        async with writer.session("s") as w, worker.session("s") as d:
            first = await w.enqueue("hello")
            second = await w.enqueue("world")
            seen = await d.pending()
            assert [b.batch_id for b in seen] == [first.batch_id, second.batch_id]
            results = await d.drain()
            assert [r.text for r in results] == ["echo: hello", "echo: world"]
            assert [r.revision for r in results] == [1, 2]
            assert await w.pending() == ()
            assert await d.drain() == []  # nothing left, nothing run
        async with backend.core().session("s") as fresh:
            assert user_texts(fresh) == ["hello", "world"]

    on(backend, body)


def test_a_child_process_enqueues_and_the_parent_drains(shared: Backend) -> None:
    early = child_enqueue(shared, "s", "from a child, early", delivery=EARLY)
    later = child_enqueue(shared, "s", "from a child, later")
    assert later["seq"] > early["seq"]

    async def body() -> None:
        provider = echo()
        async with shared.core(provider).session("s") as session:
            assert [b.batch_id for b in await session.pending()] == [
                early["batch_id"],
                later["batch_id"],
            ]
            results = await session.drain()
            assert [r.text for r in results] == [
                "echo: from a child, early",
                "echo: from a child, later",
            ]
            assert await session.pending() == ()
            assert provider.calls == 2
        async with shared.core().session("s") as fresh:
            assert user_texts(fresh) == ["from a child, early", "from a child, later"]

    on(shared, body)


def test_a_worker_killed_mid_turn_loses_its_claim_once_the_lease_lapses(shared: Backend) -> None:
    """SIGKILL, not a simulated death: the dead worker stops renewing, the batch runs once."""

    async def enqueue() -> str:
        async with shared.core().session("s") as session:
            return (await session.enqueue("work")).batch_id

    batch_id = on(shared, enqueue)
    env = {**os.environ, "LASH_TEST_DRAIN_AND_DIE": str(LEASE_MS)}
    died = subprocess.run(
        [sys.executable, str(HERE / "queue_child.py"), *shared.child_args(), "s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr

    async def body() -> None:
        provider = echo()
        async with shared.core(provider).session("s") as session:
            # The dead worker's claim is still live: nothing to take yet.
            assert [b.batch_id for b in await shared_store(session).list_queued("s")] == [batch_id]
            assert await session.pending() == ()
            assert await session.drain() == []
            await outlive_leases(shared_store(session), 2)
            (result,) = await session.drain()
            assert result.text == "echo: work"
            assert await shared_store(session).list_queued("s") == ()
            assert provider.calls == 1
        async with shared.core().session("s") as fresh:
            assert user_texts(fresh) == ["work"]

    on(shared, body)


def shared_store(session: Session) -> SessionStore:
    return session.core.store


def test_source_key_dedupes_across_processes_until_the_batch_is_consumed(
    shared: Backend,
) -> None:
    first = child_enqueue(shared, "s", "the original", "webhook:7")
    again = child_enqueue(shared, "s", "a redelivery", "webhook:7")
    assert again == first  # same batch, the first payload wins

    async def body() -> None:
        async with shared.core(echo()).session("s") as session:
            same = await session.enqueue("from the parent", source_key="webhook:7")
            assert (same.batch_id, text_of(same)) == (first["batch_id"], "the original")
            (result,) = await session.drain()
            assert result.text == "echo: the original"

    on(shared, body)
    # The batch is gone with the turn that consumed it: the key is free again.
    fresh = child_enqueue(shared, "s", "a new event", "webhook:7")
    assert fresh["batch_id"] != first["batch_id"]
    assert fresh["text"] == "a new event"


def test_two_workers_draining_one_session_run_each_batch_once(shared: Backend) -> None:
    texts = [f"job {i}" for i in range(8)]

    def worker_model() -> ScriptedProvider:
        async def answer(request: LlmRequest) -> Reply:
            await asyncio.sleep(0.005)  # long enough for the other worker to try a claim
            return Reply(text=f"did {last_user_text(request)}")

        return ScriptedProvider(answer)

    models = [worker_model(), worker_model()]

    async def body() -> list[Any]:
        async with shared.core().session("s") as writer:
            for text in texts:
                await writer.enqueue(text)
        a, b = shared.core(models[0]), shared.core(models[1])
        results: list[Any] = []
        async with a.session("s") as sa, b.session("s") as sb:
            for _ in range(len(texts) + 2):  # a worker that sees the other's claim stops early
                rounds = await asyncio.gather(sa.drain(), sb.drain())
                results.extend(r for batch in rounds for r in batch)
                if not await sa.pending():
                    break
            assert await sa.pending() == ()
        async with shared.core().session("s") as fresh:
            assert user_texts(fresh) == texts  # each once, in queue order
        return results

    results = on(shared, body)
    assert sorted(r.text for r in results) == sorted(f"did {t}" for t in texts)
    assert all(isinstance(r.outcome, Finished) for r in results)
    asked = [last_user_text(q) for m in models for q in m.requests]
    assert sorted(asked) == sorted(texts)  # no batch reached a model twice


# ---------------------------------------------------------------- crashes and failures


def test_a_claim_whose_worker_died_is_claimed_again(backend: Backend) -> None:
    async def body() -> None:
        core = backend.core(echo())
        store: SessionStore = core.store
        async with core.session("s") as session:
            batch = await session.enqueue("lost work")
            # A worker claims the batch and dies before committing its turn.
            dead = await store.claim_ready("s", owner_id="dead worker", ttl_ms=500)
            assert dead is not None
            assert dead.batch_ids == (batch.batch_id,)
            assert await session.pending() == ()
            assert await session.drain() == []  # its lease is live: nothing to take yet
            await asyncio.sleep(0.6)
            (result,) = await session.drain()  # the lease lapsed: the batch is free again
            assert result.text == "echo: lost work"
            revision = session.revision
            # The dead worker's turn can no longer land: the batch ran once, here.
            late = RuntimeCommit(
                session_id="s",
                expected_revision=revision,
                messages=(user_message("late.in", "lost work"),),
                turn_index=session.turn_index + 1,
                completed_claims=(dead.completion(),),
            )
            with pytest.raises(QueuedWorkClaimExpired):
                await store.commit(late)
        async with backend.core().session("s") as fresh:
            assert fresh.revision == revision
            assert user_texts(fresh) == ["lost work"]

    on(backend, body)


def test_a_drained_turn_that_fails_to_commit_gives_its_batch_back(backend: Backend) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def slow_model(request: LlmRequest) -> Reply:
        calls.append(last_user_text(request))
        if len(calls) == 1:
            entered.set()
            await release.wait()
        return Reply(text=f"echo: {last_user_text(request)}")

    async def body() -> None:
        worker, other = backend.core(ScriptedProvider(slow_model)), backend.core(echo())
        async with worker.session("s") as session, other.session("s") as meanwhile:
            batch = await session.enqueue("contested")
            draining = asyncio.ensure_future(session.drain())
            await entered.wait()
            assert await session.pending() == ()  # claimed by the running turn
            # Another worker commits to the session under the drained turn's feet.
            assert (await meanwhile.run("meanwhile")).revision == 1
            release.set()
            with pytest.raises(HeadRevisionConflict):
                await draining
            # Nothing landed, so the claim went back: the batch is pending again.
            assert [b.batch_id for b in await session.pending()] == [batch.batch_id]
            (result,) = await session.drain()
            assert result.text == "echo: contested"
            assert result.revision == 2
        async with backend.core().session("s") as fresh:
            assert user_texts(fresh) == ["meanwhile", "contested"]

    on(backend, body)
    assert calls == ["contested", "contested"]  # the failed attempt, then the landed one


def test_a_turn_that_ends_without_committing_stops_the_drain_and_keeps_its_batch(
    backend: Backend,
) -> None:
    async def guard(ctx: TurnHookContext) -> AbortTurn | None:
        return AbortTurn(message="not now", code="busy") if ctx.input == "blocked" else None

    class Guard:
        id = "guard"

        def register(self, registrar: PluginRegistrar) -> None:
            registrar.before_turn(guard)

    async def body() -> None:
        async with backend.core(echo(), plugins=[Guard()]).session("s") as session:
            blocked = await session.enqueue("blocked")
            after = await session.enqueue("after")
            (result,) = await session.drain()
            assert result.outcome == Stopped(
                reason=StopReason.PLUGIN_ABORT, message="plugin guard: not now"
            )
            pending = await session.pending()
            assert [b.batch_id for b in pending] == [blocked.batch_id, after.batch_id]
            assert session.revision is None

    on(backend, body)


def test_a_batch_the_facade_cannot_run_is_refused_and_left_queued(backend: Backend) -> None:
    async def body() -> None:
        core = backend.core(echo())
        async with core.session("s") as session:
            command = await core.store.enqueue(
                QueuedBatchDraft(
                    session_id="s",
                    payloads=(QueuedCommand(kind="reset_session", key="k1"),),
                    delivery=Delivery.AFTER_CURRENT_TURN,
                    slot=SlotPolicy.EXCLUSIVE,
                )
            )
            text = await session.enqueue("plain text")
            with pytest.raises(UnsupportedQueuedWork) as caught:
                await session.drain()
            assert caught.value.batch_id == command.batch_id
            assert "reset_session" in str(caught.value)
            queued = [b.batch_id for b in await session.pending()]
            assert queued == [command.batch_id, text.batch_id]  # given back, not lost
            assert await core.store.cancel_queued("s", command.batch_id) is not None
            (result,) = await session.drain()
            assert result.text == "echo: plain text"

    on(backend, body)


def test_a_checkpoint_gives_back_a_batch_it_cannot_inject(backend: Backend) -> None:
    async def body() -> None:
        core = backend.core(echo())
        async with core.session("s") as session:
            command = await core.store.enqueue(
                QueuedBatchDraft(
                    session_id="s",
                    payloads=(QueuedCommand(kind="refresh_tool_surface", key="k2"),),
                    delivery=EARLY,
                    slot=SlotPolicy.EXCLUSIVE,
                )
            )
            result = await session.run("hello")
            assert result.text == "echo: hello"
            assert not [a for a in result.activities if isinstance(a, QueuedInputAccepted)]
            assert [b.batch_id for b in await session.pending()] == [command.batch_id]

    on(backend, body)


# ---------------------------------------------------------------- checkpoints and joining


@tool
async def wait_here() -> str:
    """Block until the test lets the tool finish."""
    GATES["started"].set()
    await GATES["tool"].wait()
    return "done"


GATES: dict[str, asyncio.Event] = {}


def checkpoint_model(steps: dict[str, asyncio.Event]) -> ScriptedProvider:
    """Calls ``wait_here`` first; on seeing "also check B" it signals and waits, then answers."""

    async def script(request: LlmRequest) -> Reply:
        if last_user_text(request) == "also check B":
            steps["injected"].set()
            await steps["finish"].wait()
            return Reply(text="checked A and B")
        if any(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks):
            return Reply(text="checked A")
        return Reply(tool_calls=[ToolCall("wait_here")])

    return ScriptedProvider(script)


def _events() -> dict[str, asyncio.Event]:
    GATES["tool"] = asyncio.Event()
    GATES["started"] = asyncio.Event()
    return {"injected": asyncio.Event(), "finish": asyncio.Event()}


def test_checkpoint_input_from_another_worker_is_consumed_when_the_turn_commits(
    backend: Backend,
) -> None:
    async def body() -> None:
        steps = _events()
        runner = backend.core(checkpoint_model(steps), tools=[wait_here])
        writer = backend.core()
        async with runner.session("s") as session, writer.session("s") as w:
            turn = asyncio.ensure_future(session.run("check A"))
            await GATES["started"].wait()  # the turn is inside its tool call
            batch = await w.enqueue("also check B", delivery=EARLY)
            GATES["tool"].set()
            await steps["injected"].wait()
            # The model sees the input, but only the commit consumes it.
            assert await w.pending() == ()
            stored = await writer.store.list_queued("s")
            assert [b.batch_id for b in stored] == [batch.batch_id]
            steps["finish"].set()
            result = await turn
            assert result.text == "checked A and B"
            accepted = [a for a in result.activities if isinstance(a, QueuedInputAccepted)]
            assert [(a.input_ids, a.texts) for a in accepted] == [
                ((batch.batch_id,), ("also check B",))
            ]
            assert await writer.store.list_queued("s") == ()
            # Transient: the model saw it, the history does not keep it.
            assert "also check B" not in [p.content for m in result.messages for p in m.parts]

    on(backend, body)


def test_checkpoint_input_goes_back_to_the_queue_when_the_turn_does_not_land(
    backend: Backend,
) -> None:
    async def body() -> None:
        steps = _events()
        runner = backend.core(checkpoint_model(steps), tools=[wait_here])
        other = backend.core(echo())
        async with runner.session("s") as session, other.session("s") as o:
            turn = asyncio.ensure_future(session.run("check A"))
            await GATES["started"].wait()
            batch = await o.enqueue("also check B", delivery=EARLY)
            GATES["tool"].set()
            await steps["injected"].wait()
            assert await o.pending() == ()
            await o.run("meanwhile")  # lands first: the running turn's commit will conflict
            steps["finish"].set()
            with pytest.raises(HeadRevisionConflict):
                await turn
            assert [b.batch_id for b in await o.pending()] == [batch.batch_id]
            # The input was not lost: it runs as a turn of its own now.
            (result,) = await o.drain()
            assert result.text == "echo: also check B"
        async with backend.core().session("s") as fresh:
            assert user_texts(fresh) == ["meanwhile", "also check B"]

    on(backend, body)


def test_a_drain_joins_early_batches_into_one_turn_and_keeps_queue_order(
    backend: Backend,
) -> None:
    provider = echo()

    async def body() -> list[Any]:
        async with backend.core(provider).session("s") as session:
            await session.enqueue("a", delivery=EARLY)
            await session.enqueue("b", delivery=EARLY)
            await session.enqueue("c")
            d = await session.enqueue("d", delivery=EARLY)
            results = await session.drain()
            assert await session.pending() == ()
            assert user_texts(session) == [f"a{JOIN_SEPARATOR}b", "c"]
            accepted = [
                a for r in results for a in r.activities if isinstance(a, QueuedInputAccepted)
            ]
            assert [(a.input_ids, a.texts) for a in accepted] == [((d.batch_id,), ("d",))]
            return results

    results = on(backend, body)
    # "a" and "b" join into one turn; "c" (after-turn) blocks "d" from that turn,
    # then "d" joins the turn of "c" at its first checkpoint.
    assert [r.text for r in results] == [f"echo: a{JOIN_SEPARATOR}b", "echo: d"]
    assert [last_user_text(q) for q in provider.requests] == [f"a{JOIN_SEPARATOR}b", "c", "d"]


def test_queue_claims_at_a_checkpoint_use_the_turn_id_as_owner() -> None:
    seen: list[Any] = []

    class Spy(MemoryStore):
        async def claim_ready(self, session_id: str, **kwargs: Any) -> Any:
            claim = await super().claim_ready(session_id, **kwargs)
            seen.append((kwargs["boundary"], kwargs["owner_id"], claim is not None))
            return claim

    async def body() -> None:
        core = LashCore(provider=echo(), model="m", store=Spy())
        async with core, core.session("s") as session:
            await session.enqueue("first")
            await session.enqueue("second", delivery=EARLY)
            (result,) = await session.drain()
        assert result.text == "echo: second"
        assert len(seen) == 2  # a checkpoint with nothing for it does not write
        (idle, idle_owner, took_idle), checkpoint = seen
        assert (idle, took_idle) == (ClaimBoundary.IDLE, True)
        assert idle_owner.endswith(":s")  # this process's worker, this session
        assert idle_owner != result.turn_id
        assert checkpoint == (ClaimBoundary.CHECKPOINT, result.turn_id, True)

    run(body())


def test_a_store_without_a_queue_is_refused_by_name() -> None:
    class Plain:
        """A store with the session methods only (no durable queue)."""

        def __init__(self) -> None:
            self._inner = MemoryStore()
            self.tier = self._inner.tier
            self.load = self._inner.load
            self.commit = self._inner.commit
            self.load_turn = self._inner.load_turn

        async def aclose(self) -> None:
            await self._inner.aclose()

    async def body() -> None:
        core = LashCore(provider=echo(), model="m", store=Plain())  # type: ignore[arg-type]
        async with core.session("s") as session:
            with pytest.raises(ConfigError, match="Plain has no durable queue"):
                await session.enqueue("x")
            assert (await session.run("still runs")).text == "echo: still runs"

    run(body())


# ---------------------------------------------------------------- lease renewal

LEASE_MS = 300


async def outlive_leases(store: SessionStore, leases: int = 3) -> None:
    """Let ``leases`` lease lengths pass (the subject of these tests is elapsed time)."""
    await asyncio.sleep(leases * LEASE_MS / 1000)


def test_a_long_drained_turn_keeps_its_claim(backend: Backend) -> None:
    async def body() -> None:
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow(request: LlmRequest) -> Reply:
            entered.set()
            await release.wait()
            return Reply(text=f"echo: {last_user_text(request)}")

        core = backend.core(ScriptedProvider(slow), queue_lease_ms=LEASE_MS)
        store: SessionStore = core.store
        async with core.session("s") as session, core.session("c") as control:
            await session.enqueue("long work")
            # The control: a claim nobody renews, taken with the same lease.
            await control.enqueue("unrenewed")
            lapsing = await store.claim_ready("c", owner_id="other worker", ttl_ms=LEASE_MS)
            assert lapsing is not None
            drain = asyncio.ensure_future(session.drain())
            await entered.wait()
            await outlive_leases(store)
            # The control lapsed; the running turn still holds its batch.
            assert await store.claim_ready("c", owner_id="other worker") is not None
            assert await store.claim_ready("s", owner_id="other worker") is None
            release.set()
            (result,) = await drain
            assert result.text == "echo: long work"
        assert await store.list_queued("s") == ()

    on(backend, body)


def test_a_long_turn_keeps_the_claim_it_took_at_a_checkpoint(backend: Backend) -> None:
    async def body() -> None:
        steps = _events()
        runner = backend.core(checkpoint_model(steps), tools=[wait_here], queue_lease_ms=LEASE_MS)
        store: SessionStore = runner.store
        async with runner.session("s") as session:
            turn = asyncio.ensure_future(session.run("check A"))
            await GATES["started"].wait()
            batch = await session.enqueue("also check B", delivery=EARLY)
            GATES["tool"].set()
            await steps["injected"].wait()
            await outlive_leases(store)
            assert await store.claim_ready("s", owner_id="other worker") is None
            assert [b.batch_id for b in await store.list_queued("s")] == [batch.batch_id]
            steps["finish"].set()
            result = await turn
            assert result.text == "checked A and B"
        assert await store.list_queued("s") == ()

    on(backend, body)


def test_queue_lease_must_be_a_sensible_integer() -> None:
    for bad in (0, 29, -5, 1.5, "300", True):
        with pytest.raises(ConfigError, match="queue_lease_ms"):
            LashCore(provider=ScriptedProvider([]), model="m", queue_lease_ms=bad)  # type: ignore[arg-type]
