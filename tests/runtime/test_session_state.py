"""Session state and session metadata through the facade.

State: typed keys that tools and before-turn hooks read and write, committed
with the turn (or by ``set_state`` in a commit of its own). Parallel calls see
each other's writes in call order, failed calls and aborted turns change
nothing, and durable replays re-apply recorded writes without running the tool
again. Metadata: what a session's first commit records, renames, forks and
child sessions.

Tests run on the in-memory store and the embedded SQLite store wherever the
behaviour is the same (a durable host needs the SQLite one), with
``ScriptedProvider`` as the model. Tools wait on events, never on the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from runtime_support import run

from lash import LashCore, SessionBusyError, StateError, StateKey, ToolContext, ToolError, tool
from lash.core import TurnResult
from lash.hosts import SqliteJournalHost
from lash.kernel.llm import LlmRequest
from lash.kernel.outcome import Finished, Stopped, StopReason
from lash.kernel.tools.definition import SafeRetry
from lash.kernel.tools.output import ToolFailure
from lash.runtime.activity import ToolCallCompleted
from lash.runtime.plugins import AbortTurn, PluginRegistrar, TurnHookContext
from lash.runtime.tools import Tool
from lash.store import MemoryStore
from lash.store.base import SessionMeta, SessionRelation
from lash.testing import Reply, ScriptedProvider, ToolCall

TIMEOUT = 20.0
STORES = ["memory", "sqlite"]

COUNTER: StateKey[int] = StateKey("test.counter", int, default=0)
ITEMS: StateKey[list[str]] = StateKey("test.items", list[str], default_factory=list)
HOOK_RUNS: StateKey[int] = StateKey("test.hook_runs", int, default=0)


def _store(kind: str, tmp_path: Path) -> Any:
    """One store for a test: pass the result to every core that should share it."""
    return MemoryStore() if kind == "memory" else f"sqlite:///{tmp_path / 'db'}"


def _done(*calls: ToolCall) -> list[Reply]:
    """A reply making ``calls`` (all in one reply), then a final answer."""
    return [Reply(tool_calls=list(calls)), Reply(text="done")]


def _failure(result: TurnResult, call_id: str) -> ToolFailure:
    (call,) = [c for c in result.tool_calls if c.call_id == call_id]
    outcome = call.output.outcome
    assert isinstance(outcome, ToolFailure), outcome
    return outcome


def _untyped(value: object) -> Any:
    """``value`` as ``Any``: lets a test hand a key a value of the wrong type."""
    return value


def _value(result: TurnResult, call_id: str) -> Any:
    (call,) = [c for c in result.tool_calls if c.call_id == call_id]
    assert not isinstance(call.output.outcome, ToolFailure), call.output.outcome
    return call.output.value


@tool
async def bump(ctx: ToolContext) -> int:
    """Add one to the counter and return the new value."""
    value = await ctx.state.get(COUNTER)
    ctx.state.set(COUNTER, value + 1)
    return value + 1


@dataclass
class ListTools:
    """Tools over ``ITEMS`` whose interleaving a test controls with events.

    ``append(item, hold)`` reads the list (logging before and after the read),
    waits for ``release`` when ``hold`` is set, then writes the list with
    ``item`` appended. ``ping`` never touches state: it waits until a held call
    has read and ``append("b")`` has started its read, then snapshots the log
    (and with ``release`` set, lets the held call go). ``spoil`` writes and then
    raises.
    """

    log: list[str] = field(default_factory=list)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    reading: defaultdict[str, asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event)
    )
    snapshots: list[list[str]] = field(default_factory=list)

    def tools(self) -> list[Tool]:
        @tool
        async def append(item: str, ctx: ToolContext, hold: bool = False) -> list[str]:
            """Append ``item`` to the list; return the list."""
            self.reading[item].set()
            self.log.append(f"{item} reads")
            items = await ctx.state.get(ITEMS)
            self.log.append(f"{item} read {items}")
            if hold:
                self.held.set()
                await self.release.wait()
            items.append(item)
            ctx.state.set(ITEMS, items)
            return items

        @tool
        async def ping(release: bool = False) -> str:
            """Answer pong once a held call waits and append("b") is reading."""
            await self.held.wait()
            await self.reading["b"].wait()
            self.snapshots.append(list(self.log))
            if release:
                self.release.set()
            return "pong"

        @tool
        async def spoil(ctx: ToolContext) -> str:
            """Write state, then fail."""
            ctx.state.set(ITEMS, ["spoiled"])
            ctx.state.set(COUNTER, 99)
            raise RuntimeError("broken after writing")

        return [append, ping, spoil]


# ---------------------------------------------------------------- tools and commits


@pytest.mark.parametrize("kind", STORES)
def test_a_tool_write_lands_with_the_turn_and_survives_a_new_core(
    kind: str, tmp_path: Path
) -> None:
    store = _store(kind, tmp_path)

    async def main() -> None:
        wrote = asyncio.Event()
        proceed = asyncio.Event()
        seen: list[tuple[int, int]] = []

        @tool
        async def slow_bump(ctx: ToolContext) -> int:
            """Add one to the counter, then wait for the test."""
            value = await ctx.state.get(COUNTER)
            ctx.state.set(COUNTER, value + 1)
            seen.append((value, await ctx.state.get(COUNTER)))  # a call reads its own writes
            wrote.set()
            await proceed.wait()
            return value + 1

        provider = ScriptedProvider(
            [
                Reply(tool_calls=[ToolCall("slow_bump")]),
                Reply(tool_calls=[ToolCall("slow_bump")]),  # the next step sees the first write
                Reply(text="done"),
                *_done(ToolCall("slow_bump")),
            ]
        )
        async with (
            LashCore(provider=provider, model="m", tools=[slow_bump], store=store) as core,
            core.session("s") as session,
        ):
            task = asyncio.ensure_future(session.run("go"))
            await wrote.wait()
            assert session.get_state(COUNTER) == 0, "nothing is committed before the turn ends"
            assert session.revision is None
            proceed.set()
            first = await task
            assert isinstance(first.outcome, Finished)
            assert session.get_state(COUNTER) == 2
            assert session.revision == first.revision
            assert [c.output.value for c in first.tool_calls] == [1, 2]
            second = await session.run("again")
            assert session.get_state(COUNTER) == 3
        assert seen == [(0, 1), (1, 2), (2, 3)]
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core,
            core.session("s") as session,
        ):
            assert session.get_state(COUNTER) == 3
            assert session.revision == second.revision

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_parallel_read_modify_writes_apply_in_call_order(kind: str, tmp_path: Path) -> None:
    """c1 reads and is held; c2 must wait to read until c1 is done; c3 (no state) runs freely."""

    async def main() -> None:
        t = ListTools()
        provider = ScriptedProvider(
            _done(
                ToolCall("append", {"item": "a", "hold": True}, id="c1"),
                ToolCall("append", {"item": "b"}, id="c2"),
                ToolCall("ping", {}, id="c3"),
            )
        )
        completed: list[str] = []
        async with (
            LashCore(
                provider=provider, model="m", tools=t.tools(), store=_store(kind, tmp_path)
            ) as core,
            core.session("s") as session,
        ):
            async with session.turn("go").stream() as stream:
                async for activity in stream:
                    if isinstance(activity, ToolCallCompleted):
                        completed.append(activity.call_id)
                        if activity.call_id == "c3":
                            # c3 finished while c1 still holds after its read; only now
                            # may c1 go on.
                            t.release.set()
            result = stream.result
            assert isinstance(result.outcome, Finished)
            assert completed == ["c3", "c1", "c2"]
            # when ping ran, c2 had started reading but had not read yet
            (snapshot,) = t.snapshots
            assert "a read []" in snapshot
            assert "b reads" in snapshot
            assert not any(line.startswith("b read ") for line in snapshot)
            assert "b read ['a']" in t.log
            assert _value(result, "c1") == ["a"]
            assert _value(result, "c2") == ["a", "b"]
            assert session.get_state(ITEMS) == ["a", "b"]

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_writes_fold_in_call_order_not_in_finishing_order(kind: str, tmp_path: Path) -> None:
    """c2 overwrites the list without reading and finishes first; c1 (held) finishes later.

    The calls behave as if run one after another in the model's order, so c2's
    write wins over c1's, and c3 (which only reads) sees c2's.
    """

    async def main() -> None:
        t = ListTools()

        @tool
        async def overwrite(ctx: ToolContext) -> str:
            """Replace the list without reading it."""
            ctx.state.set(ITEMS, ["overwritten"])
            return "ok"

        @tool
        async def look(ctx: ToolContext) -> list[str]:
            """Return the list."""
            return await ctx.state.get(ITEMS)

        provider = ScriptedProvider(
            _done(
                ToolCall("append", {"item": "a", "hold": True}, id="c1"),
                ToolCall("overwrite", {}, id="c2"),
                ToolCall("look", {}, id="c3"),
            )
        )
        completed: list[str] = []
        async with (
            LashCore(
                provider=provider,
                model="m",
                tools=[*t.tools(), overwrite, look],
                store=_store(kind, tmp_path),
            ) as core,
            core.session("s") as session,
        ):
            async with session.turn("go").stream() as stream:
                async for activity in stream:
                    if isinstance(activity, ToolCallCompleted):
                        completed.append(activity.call_id)
                        if activity.call_id == "c2":
                            t.release.set()
            result = stream.result
            assert completed == ["c2", "c1", "c3"]
            assert _value(result, "c1") == ["a"]
            assert _value(result, "c3") == ["overwritten"]
            assert session.get_state(ITEMS) == ["overwritten"]

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_a_failed_call_drops_its_writes(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        t = ListTools()
        attempts: list[int] = []

        @tool(retry=SafeRetry(max_attempts=2, base_delay_ms=0))
        async def flaky(ctx: ToolContext) -> int:
            """Bump the counter; the first attempt fails after writing."""
            value = await ctx.state.get(COUNTER)
            attempts.append(value)
            ctx.state.set(COUNTER, value + 1)
            if ctx.attempt == 1:
                raise ToolError("try again", retryable=True)
            return value + 1

        provider = ScriptedProvider(
            [
                *_done(
                    ToolCall("spoil", {}, id="c1"),
                    ToolCall("append", {"item": "b"}, id="c2"),
                ),
                *_done(ToolCall("flaky", {}, id="c3")),
            ]
        )
        async with (
            LashCore(
                provider=provider,
                model="m",
                tools=[*t.tools(), flaky],
                store=_store(kind, tmp_path),
            ) as core,
            core.session("s") as session,
        ):
            await session.set_state(ITEMS, ["x"])
            result = await session.run("go")
            assert _failure(result, "c1").message == "RuntimeError: broken after writing"
            assert _value(result, "c2") == ["x", "b"], "the failed call's write was not seen"
            assert session.get_state(ITEMS) == ["x", "b"]
            stored = await core.store.load("s")
            assert stored is not None
            assert COUNTER.name not in stored.state
            # a retried call: the failed attempt's write is dropped, the retry's lands
            retried = await session.run("again")
            assert _value(retried, "c3") == 1
            assert attempts == [0, 0]
            assert session.get_state(COUNTER) == 1

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_writes_inside_batch_land_in_order(kind: str, tmp_path: Path) -> None:
    """Sub-calls of ``batch`` read in entry order; a failed entry's writes are dropped;
    the batch's writes are visible to the calls after it and to the next step."""

    async def main() -> None:
        t = ListTools()
        entries = [
            ("append", {"item": "a", "hold": True}),
            ("spoil", {}),
            ("append", {"item": "b"}),
            ("ping", {"release": True}),
        ]
        batch = ToolCall(
            "batch",
            {"tool_calls": [{"tool": name, "parameters": args} for name, args in entries]},
            id="c1",
        )
        provider = ScriptedProvider(
            [
                Reply(tool_calls=[batch, ToolCall("append", {"item": "c"}, id="c2")]),
                Reply(tool_calls=[ToolCall("append", {"item": "d"}, id="c3")]),
                Reply(text="done"),
            ]
        )
        async with (
            LashCore(
                provider=provider, model="m", tools=t.tools(), store=_store(kind, tmp_path)
            ) as core,
            core.session("s") as session,
        ):
            result = await session.run("go")
            assert isinstance(result.outcome, Finished)
            results = _value(result, "c1")["results"]
            assert [r["success"] for r in results] == [True, False, True, True]
            assert [r.get("result") for r in results] == [["a"], None, ["a", "b"], "pong"]
            (snapshot,) = t.snapshots  # the "b" entry was waiting for "a" when ping ran
            assert "b reads" in snapshot
            assert not any(line.startswith("b read ") for line in snapshot)
            assert _value(result, "c2") == ["a", "b", "c"]
            assert _value(result, "c3") == ["a", "b", "c", "d"]
            assert session.get_state(ITEMS) == ["a", "b", "c", "d"]
            assert session.get_state(COUNTER) == 0, "the failed entry's write was dropped"

    run(main(), TIMEOUT)


# ---------------------------------------------------------------- hooks


@dataclass
class P:
    """A test plugin assembled from a registration callback."""

    id: str
    setup: Any

    def register(self, registrar: PluginRegistrar) -> None:
        self.setup(registrar)


@pytest.mark.parametrize("kind", STORES)
def test_before_turn_hooks_read_and_write_state(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)

    async def count_turns(ctx: TurnHookContext) -> None:
        ctx.state.set(HOOK_RUNS, ctx.state.get(HOOK_RUNS) + 1)

    async def guard(ctx: TurnHookContext) -> AbortTurn | None:
        ctx.state.set(ITEMS, [ctx.input])
        if ctx.input == "stop":
            return AbortTurn(message="not now", code="blocked")
        return None

    @tool
    async def peek(ctx: ToolContext) -> list[Any]:
        """What the hooks wrote this turn."""
        return [await ctx.state.get(HOOK_RUNS), await ctx.state.get(ITEMS)]

    async def main() -> None:
        provider = ScriptedProvider([*_done(ToolCall("peek")), *_done(ToolCall("peek"))])
        async with (
            LashCore(
                provider=provider,
                model="m",
                tools=[peek],
                plugins=[
                    P("counter", lambda r: r.before_turn(count_turns)),
                    P("guard", lambda r: r.before_turn(guard)),
                ],
                store=store,
            ) as core,
            core.session("s") as session,
        ):
            first = await session.run("go")
            assert first.tool_calls[0].output.value == [1, ["go"]], "tools see the hooks' writes"
            assert session.get_state(HOOK_RUNS) == 1
            assert session.get_state(ITEMS) == ["go"]
            revision = session.revision
            stopped = await session.run("stop")
            assert stopped.outcome == Stopped(
                reason=StopReason.PLUGIN_ABORT, message="plugin guard: not now"
            )
            assert session.revision == revision
            assert session.get_state(HOOK_RUNS) == 1
            assert session.get_state(ITEMS) == ["go"]
            third = await session.run("again")
            assert third.tool_calls[0].output.value == [2, ["again"]]
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as again,
            again.session("s") as reopened,
        ):
            assert reopened.get_state(HOOK_RUNS) == 2
            assert reopened.get_state(ITEMS) == ["again"]

    run(main(), TIMEOUT)


# ---------------------------------------------------------------- bad input


class Opaque:
    """A type msgspec cannot encode."""


def test_state_key_construction_errors_are_value_errors() -> None:
    for name in ("", "   "):
        with pytest.raises(ValueError, match="state name"):
            StateKey(name, int)
    with pytest.raises(ValueError, match="NUL"):
        StateKey("a\x00b", int)
    with pytest.raises(ValueError, match="longer than"):
        StateKey("n" * 257, int)
    with pytest.raises(ValueError, match=r"'both'.*not both"):
        StateKey("both", list[int], default=[1], default_factory=list)
    with pytest.raises(ValueError, match=r"'typo'.*not a supported type"):
        StateKey("typo", "list[int]")  # a string, not a type
    assert StateKey("n" * 256, int).name == "n" * 256


def test_a_key_over_a_class_msgspec_cannot_handle_is_a_value_error() -> None:
    """A plain class is neither encodable nor decodable without hooks: the key is unusable."""
    with pytest.raises(ValueError, match=r"'opaque'.*not a supported type"):
        StateKey("opaque", Opaque)


@pytest.mark.parametrize("kind", STORES)
def test_a_value_of_the_wrong_type_is_refused_and_nothing_is_written(
    kind: str, tmp_path: Path
) -> None:
    store = _store(kind, tmp_path)

    @tool
    async def write_text(ctx: ToolContext) -> str:
        """Write text into the integer counter."""
        ctx.state.set(COUNTER, _untyped("seven"))
        return "unreachable"

    async def main() -> None:
        provider = ScriptedProvider(_done(ToolCall("write_text", id="c1")))
        async with (
            LashCore(provider=provider, model="m", tools=[write_text], store=store) as core,
            core.session("s") as session,
        ):
            with pytest.raises(StateError, match=r"'test\.counter'") as info:
                await session.set_state(COUNTER, _untyped("three"))
            assert info.value.name == "test.counter"
            assert session.revision is None
            assert await session.meta() is None, "not even the metadata row was written"
            await session.set_state(COUNTER, 3)
            revision = session.revision
            with pytest.raises(StateError):
                await session.set_state(COUNTER, _untyped(4.5))
            with pytest.raises(StateError):
                await session.set_state(ITEMS, _untyped(["ok", 5]))
            assert session.revision == revision
            assert session.get_state(COUNTER) == 3
            result = await session.run("go")
            failure = _failure(result, "c1")
            assert failure.message.startswith("StateError: state 'test.counter'")
            assert session.get_state(COUNTER) == 3

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_a_stored_value_that_no_longer_decodes_names_its_key(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    as_text: StateKey[str] = StateKey("test.shape", str)
    as_number: StateKey[int] = StateKey("test.shape", int, default=0)

    @tool
    async def read_shape(ctx: ToolContext) -> int:
        """Read the shape as a number."""
        return await ctx.state.get(as_number)

    async def main() -> None:
        provider = ScriptedProvider(_done(ToolCall("read_shape", id="c1")))
        async with (
            LashCore(provider=provider, model="m", tools=[read_shape], store=store) as core,
            core.session("s") as session,
        ):
            await session.set_state(as_text, "round")
            with pytest.raises(StateError, match=r"'test\.shape'.*does not decode") as info:
                session.get_state(as_number)
            assert info.value.name == "test.shape"
            result = await session.run("go")
            assert "state 'test.shape'" in _failure(result, "c1").message
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core,
            core.session("s") as session,
        ):
            assert session.get_state(as_text) == "round"
            with pytest.raises(StateError, match=r"'test\.shape'"):
                session.get_state(as_number)

    run(main(), TIMEOUT)


# ---------------------------------------------------------------- outside a turn


@pytest.mark.parametrize("kind", STORES)
def test_set_and_delete_outside_a_turn_commit_at_once(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)

    async def main() -> None:
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core,
            core.session("s") as session,
        ):
            await session.delete_state(COUNTER)  # unset: nothing to do
            assert session.revision is None
            assert await session.meta() is None
            await session.set_state(COUNTER, 5)
            first = session.revision
            assert first is not None
            meta = await session.meta()
            assert meta is not None
            assert meta.model == "m"
            await session.set_state(COUNTER, 5)  # the same value: no commit
            assert session.revision == first
            await session.set_state(ITEMS, ["x"])
            assert session.revision == first + 1
            await session.delete_state(COUNTER)
            assert session.revision == first + 2
            assert session.get_state(COUNTER) == 0
            await session.delete_state(COUNTER)  # unset again: no commit
            assert session.revision == first + 2
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core,
            core.session("s") as session,
        ):
            assert session.revision == first + 2
            assert session.get_state(ITEMS) == ["x"]
            assert session.get_state(COUNTER) == 0

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_set_state_while_a_turn_runs_is_refused(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        running = asyncio.Event()
        gate = asyncio.Event()

        @tool
        async def wait(ctx: ToolContext) -> str:
            """Set the counter, then wait for the gate."""
            ctx.state.set(COUNTER, 7)
            running.set()
            await gate.wait()
            return "ok"

        provider = ScriptedProvider(_done(ToolCall("wait")))
        async with (
            LashCore(
                provider=provider, model="m", tools=[wait], store=_store(kind, tmp_path)
            ) as core,
            core.session("s") as session,
        ):
            await session.set_state(ITEMS, ["before"])
            task = asyncio.ensure_future(session.run("go"))
            await running.wait()
            with pytest.raises(SessionBusyError):
                await session.set_state(COUNTER, 1)
            with pytest.raises(SessionBusyError):
                await session.delete_state(ITEMS)
            gate.set()
            result = await task
            assert result.revision == session.revision
            assert session.get_state(COUNTER) == 7
            assert session.get_state(ITEMS) == ["before"]
            await session.set_state(COUNTER, 8)  # free again once the turn is over
            assert session.get_state(COUNTER) == 8

    run(main(), TIMEOUT)


# ---------------------------------------------------------------- durable replay


class Crash(BaseException):
    """The process dies here: nothing in the runtime handles it."""


def test_a_durable_rerun_reapplies_recorded_writes_without_running_the_tool(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.sqlite3"
    executions: list[int] = []

    @tool
    async def counted_bump(ctx: ToolContext) -> int:
        """Add one to the counter, counting executions."""
        value = await ctx.state.get(COUNTER)
        executions.append(value)
        ctx.state.set(COUNTER, value + 1)
        return value + 1

    async def once(store: str) -> tuple[TurnResult, int, int]:
        provider = ScriptedProvider(
            _done(ToolCall("counted_bump", id="c1"), ToolCall("counted_bump", id="c2"))
        )
        async with SqliteJournalHost(journal, owner_id="w") as host:
            core = LashCore(
                provider=provider,
                model="m",
                tools=[counted_bump],
                effect_host=host,
                store=f"sqlite:///{tmp_path / store}",
            )
            async with core, core.session("s") as session:
                result = await session.run("go", turn_id="t1")
                return result, provider.calls, session.get_state(COUNTER)

    first, first_calls, first_state = run(once("store-1"), TIMEOUT)
    second, second_calls, second_state = run(once("store-2"), TIMEOUT)
    assert (first_calls, second_calls) == (2, 0)
    assert executions == [0, 1], "the second run executed nothing"
    assert first_state == second_state == 2
    assert first.messages == second.messages

    async def reopen() -> int:
        async with (
            LashCore(
                provider=ScriptedProvider([]), model="m", store=f"sqlite:///{tmp_path / 'store-2'}"
            ) as core,
            core.session("s") as session,
        ):
            return session.get_state(COUNTER)

    assert run(reopen(), TIMEOUT) == 2


def test_a_crash_after_the_tool_before_the_commit_replays_its_write(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    store = f"sqlite:///{tmp_path / 'db'}"
    executions: list[int] = []

    @tool
    async def counted_bump(ctx: ToolContext) -> int:
        """Add one to the counter, counting executions."""
        value = await ctx.state.get(COUNTER)
        executions.append(value)
        ctx.state.set(COUNTER, value + 1)
        return value + 1

    requests: list[LlmRequest] = []

    def crash_on_second_call(request: LlmRequest) -> Reply:
        requests.append(request)
        if len(requests) == 1:
            return Reply(tool_calls=[ToolCall("counted_bump", id="c1")])
        raise Crash

    async def crashing() -> None:
        async with SqliteJournalHost(journal, owner_id="w") as host:
            core = LashCore(
                provider=ScriptedProvider(crash_on_second_call),
                model="m",
                tools=[counted_bump],
                effect_host=host,
                store=store,
            )
            async with core, core.session("s") as session:
                await session.run("go", turn_id="t1")

    with pytest.raises(Crash):
        run(crashing(), TIMEOUT)
    assert executions == [0]
    assert len(requests) == 2, "the crash came after the tool's effect was recorded"

    async def rerun() -> tuple[TurnResult, int, list[str]]:
        provider = ScriptedProvider([Reply(text="done")])
        async with SqliteJournalHost(journal, owner_id="w") as host:
            core = LashCore(
                provider=provider,
                model="m",
                tools=[counted_bump],
                effect_host=host,
                store=store,
            )
            async with core, core.session("s") as session:
                assert session.revision is None, "the crashed turn committed nothing"
                assert session.get_state(COUNTER) == 0
                result = await session.run("go", turn_id="t1")
                assert session.get_state(COUNTER) == 1
                entries = await host.entries("s", "t1")
                return result, provider.calls, [e.status for e in entries]

    result, calls, statuses = run(rerun(), TIMEOUT)
    assert isinstance(result.outcome, Finished)
    assert result.text == "done"
    assert not result.replayed
    assert calls == 1, "only the model call that crashed ran again"
    assert executions == [0], "the tool was not executed again"
    assert set(statuses) == {"completed"}

    async def reopen() -> int:
        async with (
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core,
            core.session("s") as session,
        ):
            return session.get_state(COUNTER)

    assert run(reopen(), TIMEOUT) == 1


# ---------------------------------------------------------------- metadata


@pytest.mark.parametrize("kind", STORES)
def test_session_metadata_rename_fork_and_child(kind: str, tmp_path: Path) -> None:
    @tool
    async def delegate(ctx: ToolContext) -> str:
        """Hand a sub-task to a child session."""
        child = await ctx.run_child("sub task")
        return str(child.text)

    async def main() -> None:
        provider = ScriptedProvider(
            [
                Reply(text="hello"),
                Reply(tool_calls=[ToolCall("delegate", id="c1")]),  # s1's second turn
                Reply(text="child answer"),  # the child's turn
                Reply(text="done"),  # s1 again
                Reply(text="fresh"),  # s3's first turn
            ]
        )
        async with LashCore(
            provider=provider, model="m", tools=[delegate], store=_store(kind, tmp_path)
        ) as core:
            async with core.session("s1") as s1:
                assert await s1.meta() is None
                before = int(time.time() * 1000)
                await s1.run("hi")
                after = int(time.time() * 1000)
                meta = await s1.meta()
                assert meta is not None
                assert (meta.session_id, meta.model, meta.name, meta.relation) == (
                    "s1",
                    "m",
                    None,
                    None,
                )
                assert before <= meta.created_at_ms <= after
                # rename round-trips, and None clears it; the rest of the row stays
                named = await s1.rename("Project chat")
                assert named == _with_name(meta, "Project chat")
                assert await s1.meta() == named
                for blank in ("", "  "):
                    with pytest.raises(ValueError, match="session name"):
                        await s1.rename(blank)
                assert await s1.meta() == named
                assert await s1.rename(None) == meta
                assert await s1.meta() == meta
                # a child session run by a tool call
                delegated = await s1.run("delegate")
                assert _value(delegated, "c1") == "child answer"
                assert await s1.meta() == meta, "later turns keep the row"
                assert await s1.fork("s2") == "s2"
                leaf = s1.messages[-1].id
            async with core.session("s1/c1") as child:
                child_meta = await child.meta()
                assert child_meta is not None
                assert child_meta.model == "m"
                assert child_meta.relation == SessionRelation(
                    kind="child",
                    parent_session_id="s1",
                    turn_id=delegated.turn_id,
                    call_id="c1",
                )
            async with core.session("s2") as s2:
                fork_meta = await s2.meta()
                assert fork_meta is not None
                assert fork_meta.relation == SessionRelation(
                    kind="fork", parent_session_id="s1", node_id=leaf
                )
                renamed = await s2.rename("A fork")
                assert renamed.relation == fork_meta.relation
            # a name given before the first commit is kept by it
            async with core.session("s3") as s3:
                for blank in ("", "\t"):
                    with pytest.raises(ValueError, match="session name"):
                        await s3.rename(blank)
                assert await s3.meta() is None, "a refused rename writes nothing"
                draft = await s3.rename("Draft")
                await s3.run("first")
                assert await s3.meta() == draft
            listed = await core.sessions()
            assert [m.session_id for m in listed] == ["s1", "s1/c1", "s2", "s3"]
            stamps = [m.created_at_ms for m in listed]
            assert stamps == sorted(stamps)
            assert listed[0] == meta
            assert await core.sessions(limit=2) == listed[:2]

    run(main(), TIMEOUT)


def _with_name(meta: SessionMeta, name: str | None) -> SessionMeta:
    return SessionMeta(
        session_id=meta.session_id,
        created_at_ms=meta.created_at_ms,
        name=name,
        model=meta.model,
        relation=meta.relation,
    )


@pytest.mark.parametrize("kind", STORES)
def test_a_fork_copies_state_and_then_goes_its_own_way(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        provider = ScriptedProvider([*_done(ToolCall("bump")), *_done(ToolCall("bump"))] * 2)
        async with LashCore(
            provider=provider, model="m", tools=[bump], store=_store(kind, tmp_path)
        ) as core:
            async with core.session("parent") as parent:
                await parent.run("go")
                await parent.set_state(ITEMS, ["p"])
                await parent.fork("child")
                async with core.session("child") as fork:
                    assert fork.get_state(COUNTER) == 1
                    assert fork.get_state(ITEMS) == ["p"]
                    await fork.set_state(COUNTER, 10)
                    await fork.run("go")
                    await fork.delete_state(ITEMS)
                    assert fork.get_state(COUNTER) == 11
                    assert fork.get_state(ITEMS) == []
                assert parent.get_state(COUNTER) == 1
                await parent.run("go")
                assert parent.get_state(COUNTER) == 2
            async with core.session("parent") as parent:
                assert parent.get_state(COUNTER) == 2
                assert parent.get_state(ITEMS) == ["p"]
            async with core.session("child") as fork:
                assert fork.get_state(COUNTER) == 11
                assert fork.get_state(ITEMS) == []

    run(main(), TIMEOUT)


# ---------------------------------------------------------------- replayed turns


@pytest.mark.parametrize("kind", STORES)
def test_a_replayed_turn_changes_no_state(kind: str, tmp_path: Path) -> None:
    store = _store(kind, tmp_path)
    executions: list[int] = []

    @tool
    async def counted_bump(ctx: ToolContext) -> int:
        """Add one to the counter, counting executions."""
        value = await ctx.state.get(COUNTER)
        executions.append(value)
        ctx.state.set(COUNTER, value + 1)
        return value + 1

    async def main() -> None:
        provider = ScriptedProvider(
            [*_done(ToolCall("counted_bump")), *_done(ToolCall("counted_bump"))]
        )
        async with (
            LashCore(provider=provider, model="m", tools=[counted_bump], store=store) as core,
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as other,
            core.session("s") as session,
            other.session("s") as stale,  # opened before the turn commits
        ):
            first = await session.run("go", turn_id="t1")
            assert not first.replayed
            assert session.get_state(COUNTER) == 1
            again = await session.run("go", turn_id="t1")
            assert again.replayed
            assert again.revision == first.revision == session.revision
            assert session.get_state(COUNTER) == 1
            assert stale.get_state(COUNTER) == 0
            replayed = await stale.run("go", turn_id="t1")
            assert replayed.replayed
            assert stale.get_state(COUNTER) == 1, "the stale object caught up, no more"
            assert stale.revision == first.revision
            assert executions == [0]
            await session.run("next", turn_id="t2")
            assert session.get_state(COUNTER) == 2
            assert executions == [0, 1]

    run(main(), TIMEOUT)


@pytest.mark.parametrize("kind", STORES)
def test_a_cancelled_batch_keeps_the_state_its_finished_calls_wrote(
    kind: str, tmp_path: Path
) -> None:
    """Finished calls keep their real results when a batch is cancelled, so their
    state writes land with them; the cut-short call writes nothing."""
    from lash import CancelToken

    entered = asyncio.Event()

    @tool
    async def stuck(ctx: ToolContext) -> str:
        """Write, then wait until cancelled."""
        ctx.state.set(ITEMS, ["never"])
        entered.set()
        await asyncio.Event().wait()
        return "never"

    async def main() -> None:
        provider = ScriptedProvider(
            [Reply(tool_calls=[ToolCall("bump", id="c1"), ToolCall("stuck", id="c2")])]
        )
        core = LashCore(
            provider=provider, model="m", store=_store(kind, tmp_path), tools=[bump, stuck]
        )
        async with core, core.session("s") as session:
            token = CancelToken()
            turn = asyncio.create_task(session.run("go", cancel=token))
            await entered.wait()
            token.cancel()
            result = await turn
            assert isinstance(result.outcome, Stopped)
            assert result.outcome.reason is StopReason.CANCELLED
            assert _value(result, "c1") == 1
            assert session.get_state(COUNTER) == 1
            assert session.get_state(ITEMS) == []  # the cut-short call wrote nothing
        reopened = LashCore(provider=ScriptedProvider([]), model="m", store=_store(kind, tmp_path))
        if kind == "sqlite":
            async with reopened, reopened.session("s") as again:
                assert again.get_state(COUNTER) == 1
                assert again.get_state(ITEMS) == []

    run(main(), TIMEOUT)
