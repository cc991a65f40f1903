"""A tool runs a child session turn; its usage is relayed to the parent turn."""

from __future__ import annotations

from typing import Any

from runtime_support import run

from lash import LashCore, ToolContext, tool
from lash.kernel.llm import LlmRequest, LlmUsage, TextBlock, ToolResultBlock
from lash.kernel.outcome import Finished
from lash.runtime.activity import ChildTurnCompleted
from lash.testing import Reply, ScriptedProvider, ToolCall

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


@tool
async def delegate(task: str, ctx: ToolContext) -> str:
    """Hand a task to a sub-agent and return its answer."""
    result = await ctx.run_child(task)
    return str(result.text)


def script(request: LlmRequest) -> Reply:
    first_user = next(
        b.text for m in request.messages for b in m.blocks if isinstance(b, TextBlock)
        and m.role.value == "user"
    )  # fmt: skip
    if first_user == "summarize the report":  # the child session
        return Reply(text="it is fine", usage=LlmUsage(input_tokens=30, output_tokens=5))
    if any(isinstance(b, ToolResultBlock) for b in request.messages[-1].blocks):
        return Reply(text="the sub-agent says: it is fine", usage=LlmUsage(input_tokens=20))
    return Reply(
        tool_calls=[ToolCall("delegate", {"task": "summarize the report"}, id="c1")],
        usage=LlmUsage(input_tokens=10),
    )


def test_a_tool_runs_a_child_session_turn_and_relays_usage() -> None:
    core = LashCore(provider=ScriptedProvider(script), model="m", tools=[delegate])

    async def main() -> tuple[Any, Any, Any]:
        async with core.session("parent") as session:
            result = await session.run("check the report", turn_id="t1")
        child = await core.store.load("parent/c1")
        parent = await core.store.load("parent")
        return result, child, parent

    result, child, parent = run(main(), TIMEOUT)
    assert isinstance(result.outcome, Finished)
    assert result.tool_calls[0].output.value == "it is fine"
    assert {(r.source, r.model): r.usage for r in result.usage_rows} == {
        ("turn", "m"): LlmUsage(input_tokens=30),
        ("child", "m"): LlmUsage(input_tokens=30, output_tokens=5),
    }
    (done,) = [a for a in result.activities if isinstance(a, ChildTurnCompleted)]
    assert (done.session_id, done.turn_id, done.correlation_id) == (
        "parent/c1",
        "t1:c1:child",
        "c1",
    )
    # The child is a separate committed session; the parent's ledger carries both sources.
    assert child is not None
    assert child.revision == 1
    assert [m.parts[0].content for m in child.messages] == ["summarize the report", "it is fine"]
    assert {(r.source, r.usage.input_tokens) for r in parent.usage} == {("turn", 30), ("child", 30)}


def test_a_child_needs_its_own_id() -> None:
    @tool
    async def selfish(ctx: ToolContext) -> str:
        """Try to reuse the parent's id."""
        try:
            await ctx.run_child("x", session_id=ctx.session_id)
        except ValueError as exc:
            return str(exc)
        return "no error"

    provider = ScriptedProvider([Reply(tool_calls=[ToolCall("selfish")]), Reply(text="ok")])
    core = LashCore(provider=provider, model="m", tools=[selfish])

    async def main() -> Any:
        async with core.session("p") as session:
            return await session.run("go")

    result = run(main(), TIMEOUT)
    assert (
        result.tool_calls[0].output.value == "a child session needs an id other than its parent's"
    )
