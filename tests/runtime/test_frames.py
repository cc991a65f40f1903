"""Agent frames: a tool switches the session's frame; the task runs next in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runtime_support import run

from lash import AgentFrame, AgentFrameSwitch, ConfigError, LashCore, tool
from lash.kernel.llm import LlmRequest, LlmUsage, TextBlock
from lash.kernel.outcome import Finished
from lash.kernel.tools.output import SwitchAgentFrame, ToolOutput
from lash.store.base import UsageRow
from lash.testing import Reply, ScriptedProvider, ToolCall

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


@tool
async def hand_off(task: str) -> ToolOutput:
    """Hand the task to the reviewer frame."""
    return ToolOutput.success(
        "handing off", control=SwitchAgentFrame(frame_id="reviewer", task=task)
    )


@tool
async def approve() -> str:
    """Approve (reviewer only)."""
    return "approved"


def system_prompt(request: LlmRequest) -> str:
    block = request.messages[0].blocks[0]
    assert isinstance(block, TextBlock)
    return block.text


def test_a_switch_with_a_task_runs_the_task_in_the_new_frame(tmp_path: Path) -> None:
    provider = ScriptedProvider(
        [
            Reply(tool_calls=[ToolCall("hand_off", {"task": "review the patch"})]),
            Reply(tool_calls=[ToolCall("approve")]),
            Reply(text="Looks good."),
        ]
    )
    frames = {
        "reviewer": AgentFrame(instructions="You review patches.", tools=(approve,), model="big")
    }

    def core() -> LashCore:
        return LashCore(
            provider=provider,
            model="small",
            tools=[hand_off],
            frames=frames,
            store=f"sqlite:///{tmp_path}",
        )

    async def main() -> tuple[Any, str | None, str | None]:
        async with core() as c, c.session("s") as session:
            result = await session.run("please review", turn_id="root")
            frame = session.frame_id
        async with core() as c, c.session("s") as reopened:
            return result, frame, reopened.frame_id

    result, frame, reopened = run(main(), TIMEOUT)
    assert isinstance(result.outcome, Finished)
    assert result.text == "Looks good."
    assert (result.turn_id, result.frame_id) == ("root:agent-frame:1", "reviewer")
    assert frame == reopened == "reviewer"  # the frame is committed and survives a reopen
    first, second, _third = provider.requests
    assert [t.name for t in first.tools] == ["hand_off", "batch"]
    assert [t.name for t in second.tools] == ["approve", "batch"]
    assert (first.model, second.model) == ("small", "big")
    assert "You review patches." in system_prompt(second)
    assert "You review patches." not in system_prompt(first)
    user_texts = [
        b.text for m in second.messages if m.role.value == "user" for b in m.blocks
        if isinstance(b, TextBlock)
    ]  # fmt: skip
    assert user_texts[-1] == "review the patch"


def test_a_switch_to_an_unknown_frame_is_a_tool_failure_the_model_sees() -> None:
    @tool
    async def bad_hand_off() -> ToolOutput:
        """Switch to a frame that does not exist."""
        return ToolOutput.success(None, control=SwitchAgentFrame(frame_id="ghost", task="x"))

    provider = ScriptedProvider([Reply(tool_calls=[ToolCall("bad_hand_off")]), Reply(text="ok")])
    core = LashCore(provider=provider, model="m", tools=[bad_hand_off])

    async def main() -> Any:
        async with core.session("s") as session:
            return await session.run("go"), session.frame_id

    result, frame = run(main(), TIMEOUT)
    assert result.text == "ok"
    assert frame is None
    failure = result.tool_calls[0].output.outcome
    assert failure.code == "unknown_agent_frame"  # type: ignore[union-attr]
    assert "'ghost', which is not defined (defined: none)" in failure.message  # type: ignore[union-attr]


def test_a_switch_without_a_task_changes_the_frame_for_the_next_turn() -> None:
    @tool
    async def become_reviewer() -> ToolOutput:
        """Switch frames, no task."""
        return ToolOutput.success(None, control=SwitchAgentFrame(frame_id="reviewer"))

    provider = ScriptedProvider([Reply(tool_calls=[ToolCall("become_reviewer")]), Reply(text="hi")])
    core = LashCore(
        provider=provider,
        model="m",
        tools=[become_reviewer],
        frames={"reviewer": AgentFrame(tools=(approve,))},
    )

    async def main() -> tuple[Any, Any]:
        async with core.session("s") as session:
            first = await session.run("switch")
            second = await session.run("hello")
            return first, second

    first, second = run(main(), TIMEOUT)
    assert first.outcome == AgentFrameSwitch(frame_id="reviewer")
    assert (second.frame_id, second.text) == ("reviewer", "hi")
    assert [t.name for t in provider.requests[1].tools] == ["approve", "batch"]


def test_frame_following_stops_at_the_limit() -> None:
    @tool
    async def ping_pong(task: str) -> ToolOutput:
        """Always switch again."""
        return ToolOutput.success(None, control=SwitchAgentFrame(frame_id="b", task=task))

    provider = ScriptedProvider(
        lambda r: Reply(tool_calls=[ToolCall("ping_pong", {"task": "again"})])
    )
    core = LashCore(
        provider=provider,
        model="m",
        tools=[ping_pong],
        frames={"b": AgentFrame()},
        max_frame_switches=3,
    )

    async def main() -> Any:
        async with core.session("s") as session:
            return await session.run("go", turn_id="r")

    result = run(main(), TIMEOUT)
    assert isinstance(result.outcome, AgentFrameSwitch)
    assert result.turn_id == "r:agent-frame:3"
    assert provider.calls == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": {"": AgentFrame()}}, "agent frame ids must be non-blank strings"),
        ({"frames": {"x": object()}}, "frame 'x' must be an AgentFrame"),
        ({"frames": {"x": AgentFrame(max_turns=0)}}, "frame 'x': max_turns must be >= 1"),
        ({"frames": {"x": AgentFrame(tools=(approve, approve))}}, "two tools are named 'approve'"),
        ({"max_frame_switches": -1}, "max_frame_switches must be >= 0"),
    ],
)
def test_bad_frame_configuration_is_a_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LashCore(provider=ScriptedProvider([]), model="m", **kwargs)


def test_a_stored_frame_the_core_no_longer_defines_stops_the_turn_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"

    @tool
    async def go_b() -> ToolOutput:
        """Switch to b."""
        return ToolOutput.success(None, control=SwitchAgentFrame(frame_id="b"))

    async def main() -> Any:
        first = LashCore(
            provider=ScriptedProvider([Reply(tool_calls=[ToolCall("go_b")])]),
            model="m",
            tools=[go_b],
            frames={"b": AgentFrame()},
            store=url,
        )
        async with first, first.session("s") as session:
            await session.run("switch")
        second = LashCore(provider=ScriptedProvider([]), model="m", store=url)
        async with second, second.session("s") as session:
            return await session.run("hello"), session.revision

    result, revision = run(main(), TIMEOUT)
    assert result.outcome.reason.value == "runtime_error"  # type: ignore[union-attr]
    assert "agent frame 'b' is not defined on this core" in result.outcome.message  # type: ignore[union-attr]
    assert revision == 1  # nothing was committed


def test_frames_inherit_core_tools_given_as_a_generator() -> None:
    core = LashCore(
        provider=ScriptedProvider([]),
        model="m",
        tools=(t for t in (hand_off, approve)),  # readable once
        frames={"inherits": AgentFrame(), "own": AgentFrame(tools=(approve,))},
    )
    names = {f: [t.name for t in core.machine_config(f).tools] for f in (None, "inherits", "own")}
    assert names == {
        None: ["hand_off", "approve", "batch"],
        "inherits": ["hand_off", "approve", "batch"],
        "own": ["approve", "batch"],
    }


def test_usage_is_booked_under_the_model_of_the_frame_the_turn_ran_in(tmp_path: Path) -> None:
    small = LlmUsage(input_tokens=10, output_tokens=1)
    big = LlmUsage(input_tokens=200, output_tokens=20)
    provider = ScriptedProvider(
        [
            Reply(tool_calls=[ToolCall("hand_off", {"task": "review"})], usage=small),
            Reply(text="Looks good.", usage=big),
        ]
    )
    core = LashCore(
        provider=provider,
        model="small",
        tools=[hand_off],
        frames={"reviewer": AgentFrame(tools=(approve,), model="big")},
        store=f"sqlite:///{tmp_path}",
    )

    async def main() -> tuple[Any, Any, dict[tuple[str, str], LlmUsage]]:
        async with core, core.session("s") as session:
            result = await session.run("please review", turn_id="root")
            again = await session.run("please review", turn_id="root:agent-frame:1")
            return result, again, session.usage

    result, again, usage = run(main(), TIMEOUT)
    assert (result.frame_id, result.text) == ("reviewer", "Looks good.")
    assert result.usage_rows == (UsageRow(source="turn", model="big", usage=big),)
    assert again.replayed  # read back from the store, booked the same way
    assert again.usage_rows == result.usage_rows
    assert usage == {("turn", "small"): small, ("turn", "big"): big}
