"""``SqliteJournalHost``: replay, hash mismatch, leases, fencing, and a whole-turn replay."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lash import ConfigError, LashCore, tool
from lash.hosts import JournalError, SqliteJournalHost
from lash.kernel.effects import SurfaceSynced
from lash.runtime.effects import (
    DurabilityTier,
    EffectEnvelope,
    EffectKind,
    EffectOutcome,
    InvocationScope,
    RuntimeInvocation,
    SleepCommand,
    Slept,
    SyncSurfaceCommand,
    TurnScope,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

T = TypeVar("T")
SCOPE = TurnScope(session_id="s1", turn_id="t1")
KEY = "s1:t1:1:0:sync_execution_surface:1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


def envelope(*, refresh: bool = False, key: str = KEY, effect_id: int = 1) -> EffectEnvelope:
    return EffectEnvelope(
        invocation=RuntimeInvocation(
            scope=InvocationScope(session_id="s1", turn_id="t1", turn_index=1, iteration=0),
            effect_id=str(effect_id),
            kind=EffectKind.SYNC_EXECUTION_SURFACE,
            replay_key=key,
        ),
        command=SyncSurfaceCommand(effect_id=effect_id, refresh=refresh),
    )


class Executor:
    """Counts executions; optionally waits for ``gate`` first; answers with ``error``."""

    def __init__(self, error: str = "ours", gate: asyncio.Event | None = None) -> None:
        self.calls = 0
        self.error = error
        self.gate = gate
        self.started = asyncio.Event()

    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        command = envelope.command
        assert isinstance(command, SyncSurfaceCommand)
        return SurfaceSynced(id=command.effect_id, error=self.error)


class Boom(Exception):
    pass


class Failing:
    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        raise Boom("crashed")


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT replay_key, status, attempts, lease_owner FROM effect_journal"
        ).fetchall()


def test_tier_path_and_repr(tmp_path: Path) -> None:
    host = SqliteJournalHost(tmp_path / "j" / "journal.sqlite3", owner_id="w1")
    try:
        assert host.tier is DurabilityTier.DURABLE
        assert host.scoped(SCOPE).tier is DurabilityTier.DURABLE
        assert host.path == tmp_path / "j" / "journal.sqlite3"
        assert "w1" in repr(host)
    finally:
        host.close()
    assert "closed" in repr(host)


def test_a_directory_path_or_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        SqliteJournalHost(tmp_path)
    with pytest.raises(ValueError, match="lease_seconds"):
        SqliteJournalHost(tmp_path / "j.sqlite3", lease_seconds=0)


def test_a_non_sqlite_file_is_a_typed_error_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "journal.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError) as info:
        SqliteJournalHost(bad)
    assert info.value.code == "journal_unavailable"
    assert str(bad) in str(info.value)


def test_completed_effect_replays_without_executing(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> tuple[EffectOutcome, EffectOutcome, int, int]:
        first, second = Executor("first"), Executor("second")
        async with SqliteJournalHost(path) as host:
            a = await host.scoped(SCOPE).run(envelope(), first)
        async with SqliteJournalHost(path) as host:  # another process, later
            b = await host.scoped(SCOPE).run(envelope(), second)
            entries = await host.entries("s1", "t1")
        assert [(e.replay_key, e.status, e.attempts) for e in entries] == [(KEY, "completed", 1)]
        return a, b, first.calls, second.calls

    a, b, first_calls, second_calls = run(main())
    assert a == b == SurfaceSynced(id=1, error="first")
    assert (first_calls, second_calls) == (1, 0)


def test_keys_are_scoped_by_session_and_turn(tmp_path: Path) -> None:
    async def main() -> int:
        ex = Executor()
        async with SqliteJournalHost(tmp_path / "j.sqlite3") as host:
            await host.scoped(SCOPE).run(envelope(), ex)
            await host.scoped(TurnScope(session_id="s1", turn_id="t2")).run(envelope(), ex)
            await host.scoped(SCOPE).run(envelope(), ex)
        return ex.calls

    assert run(main()) == 2


def test_hash_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    async def main() -> JournalError:
        async with SqliteJournalHost(tmp_path / "journal.sqlite3") as host:
            await host.scoped(SCOPE).run(envelope(refresh=False), Executor())
            with pytest.raises(JournalError) as info:
                await host.scoped(SCOPE).run(envelope(refresh=True), Executor())
            return info.value

    err = run(main())
    assert err.code == "journal_hash_mismatch"
    assert err.replay_key == KEY
    assert KEY in str(err)
    assert "journal.sqlite3" in str(err)


def test_live_lease_of_another_owner_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> tuple[EffectOutcome, EffectOutcome, int, int]:
        gate = asyncio.Event()
        holder, waiter = Executor("holder", gate), Executor("waiter")
        async with (
            SqliteJournalHost(path, owner_id="a") as a,
            SqliteJournalHost(path, owner_id="b") as b,
        ):
            first = asyncio.ensure_future(a.scoped(SCOPE).run(envelope(), holder))
            await holder.started.wait()
            second = asyncio.ensure_future(b.scoped(SCOPE).run(envelope(), waiter))
            await asyncio.sleep(0.15)
            assert not second.done()  # waiting on a's live lease
            gate.set()
            x, y = await asyncio.gather(first, second)
        return x, y, holder.calls, waiter.calls

    x, y, holder_calls, waiter_calls = run(main())
    assert x == y == SurfaceSynced(id=1, error="holder")
    assert (holder_calls, waiter_calls) == (1, 0)


def test_waiting_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> JournalError:
        gate = asyncio.Event()
        holder = Executor("holder", gate)
        async with (
            SqliteJournalHost(path, owner_id="a") as a,
            SqliteJournalHost(path, owner_id="b", wait_seconds=0.1) as b,
        ):
            first = asyncio.ensure_future(a.scoped(SCOPE).run(envelope(), holder))
            await holder.started.wait()
            with pytest.raises(JournalError) as info:
                await b.scoped(SCOPE).run(envelope(), Executor())
            gate.set()
            await first
        return info.value

    err = run(main())
    assert err.code == "journal_wait_timeout"
    assert "'a'" in str(err)


def _plant_in_progress(path: Path, envelope_hash: str, *, owner: str, expires_ms: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO effect_journal (session_id, turn_id, replay_key, kind, envelope_hash,"
            " status, lease_owner, lease_token, lease_expires_at_ms, attempts, created_at_ms,"
            " updated_at_ms) VALUES ('s1', 't1', ?, 'sync_execution_surface', ?,"
            " 'in_progress', ?, 'dead-token', ?, 1, 0, 0)",
            (KEY, envelope_hash, owner, expires_ms),
        )


def test_expired_lease_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    SqliteJournalHost(path).close()
    _plant_in_progress(path, envelope().stable_hash(), owner="crashed", expires_ms=1)

    async def main() -> tuple[EffectOutcome, int]:
        ex = Executor("taken over")
        async with SqliteJournalHost(path, owner_id="b") as host:
            out = await host.scoped(SCOPE).run(envelope(), ex)
        return out, ex.calls

    out, calls = run(main())
    assert out == SurfaceSynced(id=1, error="taken over")
    assert calls == 1
    assert rows(path) == [(KEY, "completed", 2, "b")]


def test_own_crashed_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    """A restarted worker with a stable owner id does not wait out its own old lease."""
    path = tmp_path / "journal.sqlite3"
    SqliteJournalHost(path).close()
    _plant_in_progress(path, envelope().stable_hash(), owner="w1", expires_ms=2**62)

    async def main() -> int:
        ex = Executor()
        async with SqliteJournalHost(path, owner_id="w1", wait_seconds=1) as host:
            await host.scoped(SCOPE).run(envelope(), ex)
        return ex.calls

    assert run(main()) == 1


def test_executor_exception_releases_the_lease_and_propagates(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> int:
        ex = Executor()
        async with (
            SqliteJournalHost(path, owner_id="a") as a,
            SqliteJournalHost(path, owner_id="b", wait_seconds=1) as b,
        ):
            with pytest.raises(Boom):
                await a.scoped(SCOPE).run(envelope(), Failing())
            await b.scoped(SCOPE).run(envelope(), ex)  # no wait for a's lease
        return ex.calls

    assert run(main()) == 1
    assert rows(path) == [(KEY, "completed", 2, "b")]


def test_recorded_outcome_of_a_concurrent_finisher_wins(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> EffectOutcome:
        gate = asyncio.Event()
        slow = Executor("slow", gate)
        async with SqliteJournalHost(path, owner_id="a") as a:
            task = asyncio.ensure_future(a.scoped(SCOPE).run(envelope(), slow))
            await slow.started.wait()
            # Meanwhile a's lease lapsed and another worker took over and finished.
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "UPDATE effect_journal SET status = 'completed', lease_owner = 'b',"
                    ' outcome_json = \'{"error":"winner","id":1,"type":"surface_synced"}\''
                )
            gate.set()
            return await task

    assert run(main()) == SurfaceSynced(id=1, error="winner")
    assert rows(path)[0][:2] == (KEY, "completed")


def test_a_fenced_out_finisher_waits_for_the_new_owner(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> tuple[EffectOutcome, bool]:
        gate = asyncio.Event()
        slow = Executor("slow", gate)
        async with SqliteJournalHost(path, owner_id="a") as a:
            task = asyncio.ensure_future(a.scoped(SCOPE).run(envelope(), slow))
            await slow.started.wait()
            with sqlite3.connect(path) as conn:  # b took the lease over and is running
                conn.execute(
                    "UPDATE effect_journal SET lease_owner = 'b', lease_token = 'b-token',"
                    " lease_expires_at_ms = ?",
                    (2**62,),
                )
            gate.set()
            await asyncio.sleep(0.15)
            waiting = not task.done()
            with sqlite3.connect(path) as conn:  # b finishes
                conn.execute(
                    "UPDATE effect_journal SET status = 'completed',"
                    ' outcome_json = \'{"error":"b","id":1,"type":"surface_synced"}\''
                )
            return await task, waiting

    out, waiting = run(main())
    assert waiting
    assert out == SurfaceSynced(id=1, error="b")


def test_a_corrupt_recorded_outcome_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> JournalError:
        async with SqliteJournalHost(path) as host:
            await host.scoped(SCOPE).run(envelope(), Executor())
            with sqlite3.connect(path) as conn:
                conn.execute('UPDATE effect_journal SET outcome_json = \'{"type":"nope"}\'')
            with pytest.raises(JournalError) as info:
                await host.scoped(SCOPE).run(envelope(), Executor())
            return info.value

    err = run(main())
    assert err.code == "journal_corrupt"
    assert err.replay_key == KEY


def test_sleep_is_a_durable_timer(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    sleep = EffectEnvelope(
        invocation=RuntimeInvocation(
            scope=InvocationScope(session_id="s1", turn_id="t1"),
            effect_id="z",
            kind=EffectKind.SLEEP,
            replay_key="s1:t1:sleep",
        ),
        command=SleepCommand(duration_ms=30),
    )

    async def main() -> tuple[EffectOutcome, EffectOutcome, int]:
        ex = Executor()
        async with SqliteJournalHost(path) as host:
            a = await host.scoped(SCOPE).run(sleep, ex)
            b = await host.scoped(SCOPE).run(sleep, ex)
        return a, b, ex.calls

    a, b, calls = run(main())
    assert a == b == Slept(duration_ms=30)
    assert calls == 0  # the host keeps the timer itself


def test_closed_host_refuses_work(tmp_path: Path) -> None:
    host = SqliteJournalHost(tmp_path / "journal.sqlite3")
    run(host.aclose())
    run(host.aclose())
    with pytest.raises(JournalError) as info:
        run(host.scoped(SCOPE).run(envelope(), Executor()))
    assert info.value.code == "journal_closed"


# ---------------------------------------------------------------- a whole turn


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_durable_host_over_an_inline_store_is_refused(tmp_path: Path) -> None:
    host = SqliteJournalHost(tmp_path / "journal.sqlite3")
    try:
        with pytest.raises(ConfigError, match="durable"):
            LashCore(provider=ScriptedProvider([]), model="m", effect_host=host)
    finally:
        host.close()


def test_a_whole_turn_replays_from_the_journal(tmp_path: Path) -> None:
    """The second run (a fresh process, in effect) calls neither the model nor a tool."""
    path = tmp_path / "journal.sqlite3"
    calls: list[str] = []

    @tool
    async def mul(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append(f"mul {a} {b}")
        return a * b

    def script() -> list[Reply]:
        return [
            Reply(
                tool_calls=[
                    ToolCall("mul", {"a": 2, "b": 3}, id="c1"),
                    ToolCall("add", {"a": 1, "b": 1}, id="c2"),
                ]
            ),
            Reply(text="6 and 2"),
        ]

    async def once() -> tuple[Any, int]:
        provider = ScriptedProvider(script())
        async with SqliteJournalHost(path, owner_id="w") as host:
            core = LashCore(
                provider=provider,
                model="m",
                tools=[mul, add],
                effect_host=host,
                store=f"sqlite:///{tmp_path}/store-{len(calls)}",
            )
            async with core, core.session("s1") as session:
                result = await session.run("go", turn_id="t1")
        return result, provider.calls

    first, first_calls = run(once())
    second, second_calls = run(once())
    assert (first_calls, second_calls) == (2, 0)
    assert calls == ["mul 2 3"]
    assert first.text == second.text == "6 and 2"
    assert first.messages == second.messages
