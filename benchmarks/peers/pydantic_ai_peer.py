"""PydanticAI: an ``Agent`` on a ``FunctionModel``; history carried with ``all_messages()``.

A turn is ``agent.run(prompt, message_history=history)`` plus taking
``result.all_messages()`` as the next turn's history: that is how PydanticAI
keeps a conversation, and lash's session does the equivalent inside ``run``.
The fake model is an ``async`` function (a plain one would run in a worker
thread) and reports its usage, so ``FunctionModel`` skips its own token
estimate over the whole history, which is test-double work, not framework work.
"""

from __future__ import annotations

import time
from typing import Any

from . import CALLS, PROMPT, PeerUnavailable, ToolCounter, check, check_turn

NAME = "pydantic-ai"
PACKAGE = "pydantic-ai-slim"


async def run_turns(n: int) -> list[float]:
    """Run ``n`` turns in one fresh conversation; per-turn wall times in microseconds."""
    try:
        from pydantic_ai import Agent
        from pydantic_ai.messages import (
            ModelMessage,
            ModelRequest,
            ModelResponse,
            TextPart,
            ToolCallPart,
            ToolReturnPart,
        )
        from pydantic_ai.models.function import AgentInfo, FunctionModel
        from pydantic_ai.usage import RequestUsage
    except ImportError as exc:
        raise PeerUnavailable(f"{PACKAGE} not installed") from exc

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        usage = RequestUsage(input_tokens=100, output_tokens=10)
        last = messages[-1]
        results = [
            str(part.content)
            for part in (last.parts if isinstance(last, ModelRequest) else ())
            if isinstance(part, ToolReturnPart)
        ]
        if results:
            return ModelResponse(parts=[TextPart(" and ".join(results))], usage=usage)
        parts: list[Any] = [ToolCallPart("add", {"a": a, "b": b}) for a, b in CALLS]
        return ModelResponse(parts=parts, usage=usage)

    counter = ToolCounter()
    count = counter.add
    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return count(a, b)

    history: list[ModelMessage] = []
    samples: list[float] = []
    perf = time.perf_counter
    for turn in range(n):
        start = perf()
        result = await agent.run(PROMPT, message_history=history)
        history = result.all_messages()
        samples.append((perf() - start) * 1e6)
        check_turn(turn, counter, result.output)
        returns = [
            part.content
            for message in result.new_messages()
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        check(returns == [3, 7], f"turn {turn}: tool returns {returns!r}")
        check(len(history) == 4 * (turn + 1), f"turn {turn}: history has {len(history)} messages")
    return samples
