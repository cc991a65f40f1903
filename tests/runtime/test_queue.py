"""Queued work through the facade: early injection at checkpoints, full turns after, dedupe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_support import run

from lash import Delivery, LashCore, tool
from lash.kernel.llm import LlmRequest, TextBlock, ToolResultBlock
from lash.kernel.outcome import Finished
from lash.runtime.activity import QueuedInputAccepted
from lash.store.queue import QueuedBatch, QueuedTurnInput
from lash.testing import Reply, ScriptedProvider, ToolCall

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


def queued_text(batch: QueuedBatch) -> str:
    """A facade batch's text (it holds one text input)."""
    (item,) = batch.items
    assert isinstance(item.payload, QueuedTurnInput)
    return item.payload.text


def last_user_texts(request: LlmRequest) -> list[str]:
    return [
        b.text
        for m in request.messages
        if m.role.value == "user"
        for b in m.blocks
        if isinstance(b, TextBlock)
    ]


def test_earliest_input_joins_the_running_turn_at_its_next_checkpoint() -> None:
    running = asyncio.Event()
    gate = asyncio.Event()

    @tool
    async def slow() -> str:
        """Wait for the test."""
        running.set()
        await gate.wait()
        return "done"

    def script(request: LlmRequest) -> Reply:
        blocks = request.messages[-1].blocks
        if any(isinstance(b, TextBlock) and b.text == "also check B" for b in blocks):
            return Reply(text="checked A and B")
        if any(isinstance(b, ToolResultBlock) for b in blocks):
            return Reply(text="checked A")
        return Reply(tool_calls=[ToolCall("slow")])

    provider = ScriptedProvider(script)
    core = LashCore(provider=provider, model="m", tools=[slow])

    async def main() -> tuple[Any, Any]:
        async with core.session("s") as session:
            turn = asyncio.ensure_future(session.run("check A"))
            await running.wait()
            item = await session.enqueue("also check B", delivery=Delivery.EARLIEST_SAFE_BOUNDARY)
            gate.set()
            result = await turn
            return result, item

    result, item = run(main(), TIMEOUT)
    assert result.text == "checked A and B"
    accepted = [a for a in result.activities if isinstance(a, QueuedInputAccepted)]
    assert [(a.checkpoint, a.input_ids, a.texts) for a in accepted] == [
        ("after_work", (item.batch_id,), ("also check B",))
    ]
    # The model saw it in the same turn; it is transient, so it was not committed.
    assert "also check B" in last_user_texts(provider.requests[-1])
    assert all(p.content != "also check B" for m in result.messages for p in m.parts)


def test_after_turn_input_waits_and_head_of_line_blocks_early_items() -> None:
    provider = ScriptedProvider([Reply(text="one"), Reply(text="two"), Reply(text="three")])
    core = LashCore(provider=provider, model="m")

    async def main() -> tuple[list[str], list[Any]]:
        async with core.session("s") as session:
            first = await session.enqueue("second question")  # after the current turn (default)
            await session.enqueue("third question", delivery=Delivery.EARLIEST_SAFE_BOUNDARY)
            answer = await session.run("first question")
            # Neither joined the first turn: the head of the queue is an after-turn item.
            assert [queued_text(b) for b in await session.pending()] == [
                "second question",
                "third question",
            ]
            assert first.delivery is Delivery.AFTER_CURRENT_TURN
            drained = await session.drain()
            return [answer.text, *(r.text for r in drained)], list(await session.pending())

    texts, pending = run(main(), TIMEOUT)
    # Draining runs "second question" as a turn; the early item, now at the head,
    # joins that turn at its first checkpoint instead of becoming a turn of its own.
    assert texts == ["one", "three"]
    assert pending == []
    assert [last_user_texts(r)[-1] for r in provider.requests] == [
        "first question",
        "second question",
        "third question",
    ]


def test_source_key_makes_enqueue_idempotent() -> None:
    core = LashCore(provider=ScriptedProvider([Reply(text="ok")]), model="m")

    async def main() -> list[str]:
        async with core.session("s") as session:
            a = await session.enqueue("ping", source_key="webhook:42")
            b = await session.enqueue("ping again", source_key="webhook:42")
            assert a == b  # the first payload wins while the batch is queued
            assert queued_text(b) == "ping"
            results = await session.drain()
            return [r.text for r in results]

    assert run(main(), TIMEOUT) == ["ok"]


@pytest.mark.parametrize(
    ("text", "kwargs", "error"),
    [
        (42, {}, TypeError),
        ("x", {"source_key": "  "}, ValueError),
        ("x", {"delivery": "whenever"}, ValueError),
    ],
)
def test_bad_enqueue_arguments_change_nothing(
    text: Any, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    core = LashCore(provider=ScriptedProvider([]), model="m")

    async def main() -> None:
        async with core.session("s") as session:
            with pytest.raises(error):
                await session.enqueue(text, **kwargs)
            assert await session.pending() == ()

    run(main(), TIMEOUT)


def test_a_finished_turn_result_is_reported_for_each_drained_item() -> None:
    core = LashCore(provider=ScriptedProvider([Reply(text="a"), Reply(text="b")]), model="m")

    async def main() -> list[Any]:
        async with core.session("s") as session:
            await session.enqueue("1")
            await session.enqueue("2")
            return await session.drain()

    results = run(main(), TIMEOUT)
    assert [type(r.outcome) for r in results] == [Finished, Finished]
    assert [r.revision for r in results] == [1, 2]
