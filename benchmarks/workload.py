"""The ARCHITECTURE workload the runtime benchmarks share: two tool calls, then an answer.

Each turn the model asks ``add`` for 1 + 2 and 3 + 4, the tools run, and the
model answers ``ANSWER``. The model is a function of the request (tool call ids
included), so a durable host replaying a turn gets the same replies.
"""

from __future__ import annotations

from typing import Any

from lash import LashCore, tool
from lash.kernel.llm import LlmRequest, LlmUsage, ToolResultBlock
from lash.runtime.effects import EffectHost
from lash.testing import Reply, ScriptedProvider, ToolCall

ANSWER = "The sums are 3 and 7."


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def model(request: LlmRequest) -> Reply:
    """The workload's model: two tool calls, then the answer."""
    usage = LlmUsage(input_tokens=120, output_tokens=30)
    if any(isinstance(b, ToolResultBlock) for b in request.messages[-1].blocks):
        return Reply(text=ANSWER, usage=usage)
    n = len(request.messages)
    return Reply(
        tool_calls=[
            ToolCall("add", {"a": 1, "b": 2}, id=f"a{n}"),
            ToolCall("add", {"a": 3, "b": 4}, id=f"b{n}"),
        ],
        usage=usage,
    )


def prompt(turn: int) -> str:
    """The user input of turn ``turn``."""
    return f"Add 1+2 and 3+4 (turn {turn})."


def workload_core(
    store: Any, *, effect_host: EffectHost | None = None, attachments: str | None = None
) -> LashCore:
    """A core running the workload on ``store`` (a store or a store URL)."""
    return LashCore(
        provider=ScriptedProvider(model),
        model="scripted",
        tools=[add],
        store=store,
        attachments=attachments,
        effect_host=effect_host,
    )
