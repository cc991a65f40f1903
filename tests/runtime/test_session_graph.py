"""The session graph through the facade: branch, fork, tombstone, vacuum, replayed turns.

Every test runs on the embedded SQLite store (and the in-memory one where the
behaviour is the same), with ``ScriptedProvider`` as the model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from runtime_support import run

from lash import LashCore, SessionBusyError, tool
from lash.kernel.llm import LlmUsage, TerminalReason
from lash.kernel.messages import Role
from lash.kernel.outcome import Finished, Stopped, StopReason
from lash.store import HeadRevisionConflict, MemoryStore
from lash.store.base import GraphError
from lash.testing import Reply, ScriptedProvider, ToolCall

TIMEOUT = 20.0


def _store(kind: str, tmp_path: Path) -> Any:
    return MemoryStore() if kind == "memory" else f"sqlite:///{tmp_path / 'db'}"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_branch_to_continues_from_an_earlier_node(kind: str, tmp_path: Path) -> None:
    provider = ScriptedProvider([Reply(text="one"), Reply(text="two"), Reply(text="three")])

    async def main() -> None:
        async with (
            LashCore(provider=provider, model="m", store=_store(kind, tmp_path)) as core,
            core.session("s") as session,
        ):
            first = await session.run("first")
            await session.run("second")
            answer_one = first.messages[-1].id
            await session.branch_to(answer_one)
            assert session.messages == first.messages
            third = await session.run("third")
            assert isinstance(third.outcome, Finished)
            # the model saw the first exchange and the new input, not the second one
            request = provider.requests[-1]
            texts = " ".join(getattr(b, "text", "") for m in request.messages for b in m.blocks)
            assert "second" not in texts
            assert "first" in texts
            assert request.messages[-1].role.value == "user"
            graph = await session.graph()
            assert graph.leaf_id == third.messages[-1].id
            assert graph.children(answer_one) == (
                f"{session_turn_prefix(graph, 'second')}",
                third.messages[0].id,
            )
            assert len(graph.orphaned_ids()) == 2  # the second exchange
            assert session.messages == first.messages + third.messages
            # unknown node: typed error, nothing changes
            revision = session.revision
            with pytest.raises(GraphError) as info:
                await session.branch_to("no-such-node")
            assert info.value.problem == "unknown_leaf"
            assert session.revision == revision

    run(main(), TIMEOUT)


def session_turn_prefix(graph: Any, text: str) -> str:
    """The id of the user message whose text is ``text``."""
    return next(n.id for n in graph if n.message.role is Role.USER and n.message.text() == text)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_fork_copies_the_active_path_into_a_new_session(kind: str, tmp_path: Path) -> None:
    provider = ScriptedProvider([Reply(text="a1"), Reply(text="a2"), Reply(text="f1")])

    async def main() -> None:
        async with LashCore(provider=provider, model="m", store=_store(kind, tmp_path)) as core:
            async with core.session("main") as session:
                first = await session.run("q1")
                await session.run("q2")
                assert await session.fork("copy") == "copy"
                assert await session.fork("early", at=first.messages[-1].id) == "early"
                with pytest.raises(HeadRevisionConflict):
                    await session.fork("copy")
                with pytest.raises(GraphError):
                    await session.fork("nowhere", at="missing")
                original = session.messages
            async with core.session("copy") as copy:
                assert copy.messages == original
                assert copy.turn_index == 2
                result = await copy.run("q3")
                assert copy.messages == original + result.messages
            async with core.session("early") as early:
                assert early.messages == first.messages
            async with core.session("main") as again:
                assert again.messages == original, "the fork left the original alone"

    run(main(), TIMEOUT)


def test_tombstone_and_vacuum_through_the_session(tmp_path: Path) -> None:
    provider = ScriptedProvider([Reply(text="a"), Reply(text="b"), Reply(text="c")])

    async def main() -> None:
        async with (
            LashCore(provider=provider, model="m", store=f"sqlite:///{tmp_path}") as core,
            core.session("s") as session,
        ):
            first = await session.run("1")
            second = await session.run("2")
            await session.branch_to(first.messages[-1].id)
            with pytest.raises(GraphError) as info:
                await session.tombstone([first.messages[0].id])
            assert info.value.problem == "on_active_path"
            assert await session.tombstone([second.messages[0].id]) == len(second.messages)
            graph = await session.graph()
            assert graph.orphaned_ids() == ()
            assert await session.vacuum() == len(second.messages)
            third = await session.run("3")
            assert session.messages == first.messages + third.messages

    run(main(), TIMEOUT)


@tool
def count(n: int) -> int:
    """Return n."""
    return n


def test_a_committed_turn_run_again_with_its_id_returns_the_commit(tmp_path: Path) -> None:
    """A replay of a landed turn (a durable host retrying) runs nothing and returns the result."""
    store = f"sqlite:///{tmp_path}"
    replies = [
        Reply(tool_calls=[ToolCall("count", {"n": 2})], usage=LlmUsage(input_tokens=3)),
        Reply(text="done", usage=LlmUsage(input_tokens=4, output_tokens=1)),
    ]

    async def main() -> None:
        provider = ScriptedProvider(list(replies))
        async with (
            LashCore(provider=provider, model="m", tools=[count], store=store) as core,
            core.session("s") as session,
        ):
            first = await session.run("go", turn_id="turn-1")
            assert not first.replayed
            calls = provider.calls
            again = await session.run("go", turn_id="turn-1")
            assert provider.calls == calls, "no model call on replay"
            assert again.replayed
            assert (again.outcome, again.text, again.usage) == (
                first.outcome,
                first.text,
                first.usage,
            )
            assert again.messages == first.messages
            assert again.revision == first.revision
            assert session.revision == first.revision
        # a fresh process (a new core on the same files) sees the same
        fresh_provider = ScriptedProvider([])
        async with (
            LashCore(provider=fresh_provider, model="m", tools=[count], store=store) as core,
            core.session("s") as session,
        ):
            replayed = await session.run("go", turn_id="turn-1")
            assert replayed.replayed
            assert replayed.text == "done"
            assert replayed.messages == first.messages
            assert fresh_provider.calls == 0
            assert len(session.messages) == len(first.messages)

    run(main(), TIMEOUT)


def test_a_stale_session_object_catches_up_when_its_turn_is_replayed(tmp_path: Path) -> None:
    """Two session objects; one commits, the other replays that turn id and catches up."""
    store = f"sqlite:///{tmp_path}"

    async def main() -> None:
        async with (
            LashCore(
                provider=ScriptedProvider([Reply(text="x")]), model="m", store=store
            ) as core_a,
            LashCore(provider=ScriptedProvider([]), model="m", store=store) as core_b,
            core_b.session("s") as stale,
            core_a.session("s") as live,
        ):
            done = await live.run("hi", turn_id="t")
            replayed = await stale.run("hi", turn_id="t")
            assert replayed.replayed
            assert replayed.outcome == done.outcome
            assert stale.messages == live.messages
            assert stale.revision == live.revision

    run(main(), TIMEOUT)


def test_stopped_turns_replay_their_outcome_too(tmp_path: Path) -> None:
    provider = ScriptedProvider(
        [Reply(text="partial", terminal_reason=TerminalReason.OUTPUT_LIMIT)]
    )

    async def main() -> None:
        async with (
            LashCore(provider=provider, model="m", store=f"sqlite:///{tmp_path}") as core,
            core.session("s") as session,
        ):
            first = await session.run("go", turn_id="t")
            assert isinstance(first.outcome, Stopped)
            again = await session.run("go", turn_id="t")
            assert again.replayed
            assert isinstance(again.outcome, Stopped)
            assert again.outcome.reason is StopReason.INCOMPLETE
            assert again.outcome == first.outcome

    run(main(), TIMEOUT)


def test_branching_while_a_turn_runs_is_refused() -> None:
    async def main() -> None:
        running = asyncio.Event()
        gate = asyncio.Event()

        @tool
        async def wait() -> str:
            """Wait for the gate."""
            running.set()
            await gate.wait()
            return "ok"

        provider = ScriptedProvider([Reply(tool_calls=[ToolCall("wait", {})]), Reply(text="done")])
        async with (
            LashCore(provider=provider, model="m", tools=[wait]) as core,
            core.session("s") as session,
        ):
            task = asyncio.ensure_future(session.run("go"))
            await running.wait()
            with pytest.raises(SessionBusyError):
                await session.branch_to("anything")
            gate.set()
            await task

    run(main(), TIMEOUT)
