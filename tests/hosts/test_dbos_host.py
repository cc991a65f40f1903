"""The DBOS effect host against a real DBOS (SQLite system database) in this process.

Each test launches DBOS inside its own event loop and destroys it at the end. Replays
use ``DBOS.fork_workflow``: a fork re-runs a workflow from the start with the earlier
run's checkpoints, which is what recovery after a crash does (the crash matrix in
``test_dbos_crash_matrix.py`` kills real processes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbos import DBOS, SetWorkflowID

from lash import ConfigError, LashCore, ToolContext, tool
from lash.hosts.dbos import (
    TURN_WORKFLOW_NAME,
    DbosEffectHost,
    DbosHostError,
    DbosTurnRunner,
    dbos_sqlite_config,
    effect_step_name,
    turn_journal,
)
from lash.kernel.codec import decode_document
from lash.kernel.effects import SurfaceSynced
from lash.kernel.llm import LlmMessage, LlmRequest, LlmRole, ToolResultBlock
from lash.runtime.effects import (
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
    InvocationScope,
    RuntimeInvocation,
    SleepCommand,
    Slept,
    SyncSurfaceCommand,
    TurnScope,
)
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

T = TypeVar("T")
SESSION = "s1"
TURN = "t1"
SCOPE = TurnScope(session_id=SESSION, turn_id=TURN)
FAST_QUEUE = "lash-tests"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def launched(home: Path) -> AsyncIterator[None]:
    """DBOS over a SQLite system database in ``home``, launched on the running loop."""
    config = dbos_sqlite_config(home / "dbos.sqlite3", name="lash-dbos-tests")
    config["notification_listener_polling_interval_sec"] = 0.05
    DBOS(config=config)
    DBOS.launch()
    try:
        await DBOS.register_queue_async(FAST_QUEUE, polling_interval_sec=0.05)
        yield
    finally:
        DBOS.destroy()


async def steps(workflow_id: str) -> list[tuple[int, str, Any]]:
    return [
        (s["function_id"], s["function_name"], s["output"])
        for s in await DBOS.list_workflow_steps_async(workflow_id)
    ]


async def fork(workflow_id: str) -> str:
    """A fork that re-runs ``workflow_id`` with every one of its checkpoints."""
    last = max(fid for fid, _, _ in await steps(workflow_id))
    handle = await DBOS.fork_workflow_async(workflow_id, last + 1, queue_name=FAST_QUEUE)
    return handle.get_workflow_id()


# ---------------------------------------------------------------- a turn


class Effects:
    """Counts what really ran: model calls and tool runs."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def reply(self, request: LlmRequest) -> Reply:
        results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
        self.log.append(f"llm:{results // 2 + 1}")
        if results == 0:
            return Reply(
                tool_calls=[
                    ToolCall("step", {"x": 1}, id="c1"),
                    ToolCall("step", {"x": 2}, id="c2"),
                ]
            )
        return Reply(text=f"done after {results} results")

    def tools(self) -> list[Any]:
        log = self.log

        @tool
        async def step(x: int) -> int:
            """One scripted side effect."""
            log.append(f"tool:c{x}")
            return x * 10

        return [step]

    def core(self, home: Path, host: Any, *, instructions: str | None = None) -> LashCore:
        return LashCore(
            provider=ScriptedProvider(self.reply),
            model="scripted",
            tools=self.tools(),
            instructions=instructions,
            effect_host=host,
            store=f"sqlite:///{home / 'store'}",
        )


ALL = ["llm:1", "tool:c1", "tool:c2", "llm:2"]


async def inline_reference() -> Any:
    """The same turn over the inline host and an in-memory store."""
    effects = Effects()
    core = LashCore(
        provider=ScriptedProvider(effects.reply), model="scripted", tools=effects.tools()
    )
    async with core, core.session(SESSION) as session:
        return await session.run("go", turn_id=TURN)


class CrashOnce:
    """An executor that raises the first time it runs an effect whose key ends with ``suffix``."""

    def __init__(self, inner: EffectExecutor, host: CrashingHost) -> None:
        self.inner = inner
        self.host = host

    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        if envelope.replay_key.endswith(self.host.suffix) and not self.host.crashed:
            self.host.crashed = True
            raise RuntimeError("executor bug")
        return await self.inner.execute(envelope)


class CrashingController:
    def __init__(self, inner: EffectController, host: CrashingHost) -> None:
        self.inner = inner
        self.host = host

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        return await self.inner.run(envelope, CrashOnce(executor, self.host))


class CrashingHost(DbosEffectHost):
    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix
        self.crashed = False

    def scoped(self, scope: TurnScope) -> EffectController:
        return CrashingController(super().scoped(scope), self)


def test_the_host_is_durable_and_refuses_inline_peers() -> None:
    host = DbosEffectHost()
    assert host.tier is DurabilityTier.DURABLE
    assert host.scoped(SCOPE).tier is DurabilityTier.DURABLE
    with pytest.raises(ConfigError, match=r"durable_store_required:store"):
        LashCore(provider=ScriptedProvider([]), model="m", effect_host=host, store="memory://")
    with pytest.raises(ConfigError, match=r"durable_store_required:store"):
        LashCore(provider=ScriptedProvider([]), model="m", effect_host=host)


def test_the_sqlite_config_names_an_absolute_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = dbos_sqlite_config("data/dbos.sqlite3", name="app")
    assert config["name"] == "app"
    assert config["system_database_url"] == f"sqlite:///{tmp_path / 'data' / 'dbos.sqlite3'}"
    assert (tmp_path / "data").is_dir()
    with pytest.raises(ValueError, match="is a directory"):
        dbos_sqlite_config(tmp_path)


def test_the_runner_needs_a_dbos_host_and_a_free_name() -> None:
    async def main() -> None:
        inline = LashCore(provider=ScriptedProvider([]), model="m")
        with pytest.raises(ConfigError, match="DbosEffectHost"):
            DbosTurnRunner(inline, name="needs-dbos")
        async with inline:
            pass
        factory_runner = DbosTurnRunner(lambda: inline, name="factory")
        with pytest.raises(ConfigError, match="DbosEffectHost"):
            await factory_runner.core()
        with pytest.raises(ConfigError, match="already registered"):
            DbosTurnRunner(lambda: inline, name="factory")
        await factory_runner.aclose()
        again = DbosTurnRunner(lambda: inline, name="factory")  # the name is free again
        with pytest.raises(TypeError, match="string or a TurnInput"):
            await again.start(SESSION, 42, turn_id=TURN)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="session id"):
            await again.start(" ", "go", turn_id=TURN)
        # Workflow ids are unambiguous: each part is percent-encoded.
        assert again.workflow_id("a:b", "c") != again.workflow_id("a", "b:c")
        assert again.workflow_id("a/b", "t 1") == "lash-turn:factory:a%2Fb:t%201"
        await again.aclose()
        with pytest.raises(ConfigError, match="closed"):
            await again.core()

    run(main())


def test_ids_no_store_can_hold_are_refused_before_a_workflow_starts(tmp_path: Path) -> None:
    async def main() -> None:
        core = Effects().core(tmp_path, DbosEffectHost())
        async with launched(tmp_path), core:
            runner = DbosTurnRunner(core, name="bad-ids")
            with pytest.raises(ConfigError, match=r"session id .*NUL"):
                await runner.start("a\x00b", "go", turn_id=TURN)
            with pytest.raises(ConfigError, match=r"turn id .*NUL"):
                await runner.start(SESSION, "go", turn_id="t\x00")
            assert await DBOS.list_workflows_async() == []
            await runner.aclose()

    run(main())


def test_a_core_the_runner_rejects_is_closed(tmp_path: Path) -> None:
    built: list[LashCore] = []

    def inline_core() -> LashCore:
        core = LashCore(
            provider=ScriptedProvider([]), model="m", store=f"sqlite:///{tmp_path / 'store'}"
        )
        built.append(core)
        return core

    async def main() -> None:
        runner = DbosTurnRunner(inline_core, name="rejected")
        try:
            with pytest.raises(ConfigError, match="DbosEffectHost"):
                await runner.core()
        finally:
            await runner.aclose()

    run(main())
    [core] = built
    assert isinstance(core.store, SqliteStore)
    assert repr(core.store).endswith(", closed)")  # its worker thread is gone


def test_a_turn_is_a_workflow_with_one_step_per_effect(tmp_path: Path) -> None:
    effects = Effects()

    async def main() -> None:
        reference = await inline_reference()
        async with launched(tmp_path):
            runner = DbosTurnRunner(effects.core(tmp_path, DbosEffectHost()), name="one-step")
            turn = await runner.start(SESSION, "go", turn_id=TURN)
            assert turn.workflow_id == runner.workflow_id(SESSION, TURN)
            result = await turn.result()
            assert result.text == reference.text == "done after 2 results"
            assert result.messages == reference.messages
            assert result.revision == 1
            assert Counter(effects.log) == Counter(ALL)

            recorded = await steps(turn.workflow_id)
            names = [name for _, name, _ in recorded]
            assert names[-1] == "lash.journal-end"
            assert all(n.startswith(effect_step_name(f"{SESSION}:{TURN}:1:")) for n in names[:-1])
            kinds = Counter(n.split(":")[5] for n in names[:-1])
            assert (kinds["llm_call"], kinds["tool_call"]) == (2, 2), names
            assert {n.rsplit(":", 1)[1] for n in names if ":tool_call:" in n} == {"c1", "c2"}
            for _, name, output in recorded[:-1]:
                data = decode_document(output, "dbos_effect", dict)
                assert data["replay_key"] == name.removeprefix("lash:")
                assert len(data["envelope_hash"]) == 64

            # The same turn again: the recorded result, and nothing runs.
            again = await runner.run(SESSION, "go", turn_id=TURN)
            assert again == result
            assert Counter(effects.log) == Counter(ALL)
            status = await DBOS.get_workflow_status_async(turn.workflow_id)
            assert status is not None
            assert (status.name, status.status) == (TURN_WORKFLOW_NAME, "SUCCESS")

            # The same turn id with other input is a conflict, not a silent replay.
            with pytest.raises(DbosHostError) as info:
                await runner.run(SESSION, "something else", turn_id=TURN)
            assert info.value.code == "dbos_turn_conflict"
            assert info.value.workflow_id == turn.workflow_id
            await runner.aclose()
        assert await stored_revision(tmp_path) == 1

    run(main())


async def stored_revision(home: Path) -> int | None:
    store = SqliteStore(home / "store")
    try:
        stored = await store.load(SESSION)
    finally:
        await store.aclose()
    return None if stored is None else stored.revision


def test_a_replay_returns_recorded_outcomes_and_reruns_only_the_crashed_effect(
    tmp_path: Path,
) -> None:
    effects = Effects()
    second_llm = f"{SESSION}:{TURN}:1:1:llm_call:4"

    async def main() -> None:
        reference = await inline_reference()
        async with launched(tmp_path):
            # The executor crashes on the second model call, before the provider is asked.
            host = CrashingHost(second_llm)
            runner = DbosTurnRunner(lambda: effects.core(tmp_path, host), name="crash-once")
            with pytest.raises(RuntimeError, match="executor bug"):
                await runner.run(SESSION, "go", turn_id=TURN)
            assert Counter(effects.log) == Counter(["llm:1", "tool:c1", "tool:c2"])
            workflow_id = runner.workflow_id(SESSION, TURN)
            crashed = [
                decode_document(out, "dbos_effect", dict)
                for _, name, out in await steps(workflow_id)
                if name == effect_step_name(second_llm)
            ]
            assert [c.get("crash") for c in crashed] == ["RuntimeError: executor bug"]
            assert "outcome" not in crashed[0]

            forked = await fork(workflow_id)
            result = await runner.result(forked)
            # llm:1, c1 and c2 came from checkpoints; only the crashed call ran.
            assert Counter(effects.log) == Counter(ALL)
            assert result.messages == reference.messages
            assert result.text == reference.text
            names = [name for _, name, _ in await steps(forked)]
            assert names.count(effect_step_name(second_llm)) == 2  # the crash, then the answer
            assert names[-1] == "lash.journal-end"
            await runner.aclose()
        assert await stored_revision(tmp_path) == 1

    run(main())


def test_a_replay_whose_envelope_hashes_differently_is_refused(tmp_path: Path) -> None:
    effects = Effects()

    async def main() -> None:
        async with launched(tmp_path):
            host = CrashingHost(":llm_call:4")
            runner = DbosTurnRunner(lambda: effects.core(tmp_path, host), name="mismatch")
            with pytest.raises(RuntimeError, match="executor bug"):
                await runner.run(SESSION, "go", turn_id=TURN)
            await runner.aclose()
            ran = list(effects.log)
            # The code changed before the replay: another system prompt, so the first
            # model call's request (and its envelope hash) differs.
            changed = DbosTurnRunner(
                lambda: effects.core(tmp_path, DbosEffectHost(), instructions="Be brief."),
                name="mismatch",
            )
            forked = await fork(changed.workflow_id(SESSION, TURN))
            with pytest.raises(DbosHostError) as info:
                await changed.result(forked)
            assert info.value.code == "dbos_effect_hash_mismatch"
            assert info.value.replay_key == f"{SESSION}:{TURN}:1:0:llm_call:1"
            assert info.value.workflow_id == forked
            assert "replayed envelope hashes to" in str(info.value)
            assert effects.log == ran  # nothing ran again
            await changed.aclose()
        assert await stored_revision(tmp_path) is None

    run(main())


def test_effects_inside_a_tool_step_are_covered_by_that_step(tmp_path: Path) -> None:
    """A tool's helper model call runs inside the tool's step; a replay runs neither."""
    helper_calls: list[str] = []

    def reply(request: LlmRequest) -> Reply:
        if request.model == "helper":
            helper_calls.append("helper")
            return Reply(text="helper says hi")
        if any(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks):
            return Reply(text="done")
        return Reply(tool_calls=[ToolCall("ask", {}, id="c1")])

    @tool
    async def ask(ctx: ToolContext) -> str:
        """Ask a helper model."""
        request = LlmRequest(model="helper", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
        return (await ctx.complete(request)).full_text

    async def main() -> None:
        async with launched(tmp_path):
            runner = DbosTurnRunner(
                lambda: LashCore(
                    provider=ScriptedProvider(reply),
                    model="scripted",
                    tools=[ask],
                    effect_host=DbosEffectHost(),
                    store=f"sqlite:///{tmp_path / 'store'}",
                ),
                name="nested",
            )
            result = await runner.run(SESSION, "go", turn_id=TURN)
            assert result.text == "done"
            assert result.tool_calls[0].output.outcome.value == "helper says hi"  # type: ignore[union-attr]
            assert helper_calls == ["helper"]
            workflow_id = runner.workflow_id(SESSION, TURN)
            names = [name for _, name, _ in await steps(workflow_id)]
            assert not [n for n in names if ":direct:" in n], names
            assert len([n for n in names if ":tool_call:" in n]) == 1

            replayed = await runner.result(await fork(workflow_id))
            assert replayed.text == "done"
            assert helper_calls == ["helper"]
            await runner.aclose()

    run(main())


# ---------------------------------------------------------------- the journal itself


def surface_envelope(key: str, effect_id: int = 1) -> EffectEnvelope:
    return EffectEnvelope(
        invocation=RuntimeInvocation(
            scope=InvocationScope(session_id=SESSION, turn_id=TURN, turn_index=1, iteration=0),
            effect_id=str(effect_id),
            kind=EffectKind.SYNC_EXECUTION_SURFACE,
            replay_key=key,
        ),
        command=SyncSurfaceCommand(effect_id=effect_id, refresh=False),
    )


def sleep_envelope(key: str, duration_ms: int) -> EffectEnvelope:
    return EffectEnvelope(
        invocation=RuntimeInvocation(
            scope=InvocationScope(session_id=SESSION, turn_id=TURN, turn_index=1, iteration=0),
            effect_id="sleep",
            kind=EffectKind.SLEEP,
            replay_key=key,
        ),
        command=SleepCommand(duration_ms=duration_ms),
    )


class Labelled:
    """Answers with its label and the key, so a replayed outcome shows which run made it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.ran: list[str] = []

    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        self.ran.append(envelope.replay_key)
        return SurfaceSynced(id=1, error=f"{envelope.replay_key} by {self.label}")


class FakeTime:
    """A wall clock the test sets, and a sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))


PLAN: dict[str, Any] = {}
"""What the test workflows below do on their next run (set by each test)."""


@DBOS.workflow(name="lash.tests.effects")
async def effects_workflow() -> list[str]:
    executor: Labelled = PLAN["executor"]
    controller = PLAN["host"].scoped(SCOPE)
    async with turn_journal() as journal:
        outcomes = await asyncio.gather(
            *(controller.run(surface_envelope(k), executor) for k in PLAN["keys"])
        )
        PLAN["journal"] = journal
        if PLAN.get("fail"):
            raise RuntimeError("the workflow failed after its effects")
    return [o.error for o in outcomes]


@DBOS.workflow(name="lash.tests.sleep")
async def sleep_workflow(duration_ms: int) -> str:
    controller = PLAN["host"].scoped(SCOPE)
    async with turn_journal() as journal:
        never = Labelled("never")  # a sleep never reaches the executor
        outcome = await controller.run(sleep_envelope("s1:t1:sleep", duration_ms), never)
    assert never.ran == []
    assert outcome == Slept(duration_ms=duration_ms)
    return f"replayed={journal.replayed} executed={journal.executed}"


def test_replay_is_by_replay_key_not_by_the_order_effects_start(tmp_path: Path) -> None:
    async def main() -> None:
        async with launched(tmp_path):
            first = Labelled("first")
            PLAN.update(host=DbosEffectHost(), executor=first, keys=["k1", "k2", "k3"], fail=True)
            with SetWorkflowID("effects-1"):
                handle = await DBOS.start_workflow_async(effects_workflow)
            with pytest.raises(RuntimeError, match="failed after its effects"):
                await handle.get_result()
            assert sorted(first.ran) == ["k1", "k2", "k3"]  # concurrently, in any order

            # The replay asks in another order, and for one effect the run never had.
            second = Labelled("second")
            PLAN.update(executor=second, keys=["k3", "k4", "k2", "k1"], fail=False)
            forked = await fork("effects-1")
            answers = await (await DBOS.retrieve_workflow_async(forked)).get_result()
            assert answers == ["k3 by first", "k4 by second", "k2 by first", "k1 by first"]
            assert second.ran == ["k4"]
            journal = PLAN["journal"]
            assert (journal.replayed, journal.executed, journal.complete) == (3, 1, False)
            # The new step took an ordinal after every recorded one.
            names = [name for _, name, _ in await steps(forked)]
            assert names == ["lash:k1", "lash:k2", "lash:k3", "lash:k4", "lash.journal-end"]

            # A finished journal replays exactly: asking for an unknown effect is refused.
            third = Labelled("third")
            PLAN.update(executor=third, keys=["k1", "k5"])
            diverged = await fork(forked)
            with pytest.raises(DbosHostError) as info:
                await (await DBOS.retrieve_workflow_async(diverged)).get_result()
            assert info.value.code == "dbos_replay_diverged"
            assert info.value.replay_key == "k5"
            assert third.ran == []

    run(main())


def test_sleeps_are_durable_timers(tmp_path: Path) -> None:
    async def main() -> None:
        time = FakeTime()
        PLAN.update(host=DbosEffectHost(clock=time.clock, sleep=time.sleep))
        async with launched(tmp_path):
            with SetWorkflowID("sleep-1"):
                handle = await DBOS.start_workflow_async(sleep_workflow, 5_000)
            assert await handle.get_result() == "replayed=0 executed=1"
            assert time.waits == [5.0]
            recorded = [
                decode_document(out, "dbos_effect", dict)
                for _, name, out in await steps("sleep-1")
                if name == "lash:s1:t1:sleep"
            ]
            assert [r["due_at_ms"] for r in recorded] == [1_005_000]

            # A replay two seconds later (the process died mid-sleep) waits what is left.
            time.now = 1_002.0
            forked = await fork("sleep-1")
            result = await (await DBOS.retrieve_workflow_async(forked)).get_result()
            assert result == "replayed=1 executed=0"
            assert time.waits == [5.0, 3.0]

            # After the wake-up time, a replay does not wait at all.
            time.now = 1_010.0
            forked = await fork("sleep-1")
            await (await DBOS.retrieve_workflow_async(forked)).get_result()
            assert time.waits == [5.0, 3.0]

    run(main())


def test_effects_outside_a_turn_workflow_are_refused() -> None:
    async def main() -> None:
        executor = Labelled("outside")
        with pytest.raises(DbosHostError) as info:
            await DbosEffectHost().scoped(SCOPE).run(surface_envelope("k1"), executor)
        assert info.value.code == "dbos_outside_workflow"
        assert info.value.replay_key == "k1"
        assert executor.ran == []
        with pytest.raises(DbosHostError) as entered:
            async with turn_journal():
                pass
        assert entered.value.code == "dbos_outside_workflow"

    run(main())


def test_host_errors_survive_dbos_pickling() -> None:
    import pickle

    error = DbosHostError("dbos_x", "what went wrong", replay_key="k", workflow_id="w")
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, DbosHostError)
    assert (back.code, back.replay_key, back.workflow_id) == ("dbos_x", "k", "w")
    assert str(back) == str(error) == "dbos_x: [w] [k] what went wrong"
