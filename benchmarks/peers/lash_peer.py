"""lash through its public facade: ``LashCore`` with ``ScriptedProvider``, in-memory store."""

from __future__ import annotations

import time
from typing import Any

from . import CALLS, PROMPT, PeerUnavailable, ToolCounter, check, check_turn

NAME = "lash"
PACKAGE = "lash-runtime"


async def run_turns(n: int) -> list[float]:
    """Run ``n`` turns in one fresh lash session; per-turn wall times in microseconds."""
    try:
        from lash import LashCore, tool
        from lash.kernel.llm import LlmRequest, ToolResultBlock
        from lash.kernel.outcome import Finished
        from lash.testing import Reply, ScriptedProvider, ToolCall
    except ImportError as exc:
        raise PeerUnavailable(f"lash facade not available ({exc})") from exc

    counter = ToolCounter()
    count = counter.add

    @tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return count(a, b)

    ask = Reply(tool_calls=[ToolCall("add", {"a": a, "b": b}) for a, b in CALLS])

    def script(request: LlmRequest) -> Reply:
        # Tools just answered: reply with their results; otherwise ask for the two calls.
        results = [
            block.content
            for block in request.messages[-1].blocks
            if isinstance(block, ToolResultBlock)
        ]
        if results:
            return Reply(text=" and ".join(results))
        return ask

    provider = ScriptedProvider(script)
    core = LashCore(provider=provider, model="scripted", tools=[add], store="memory://")
    samples: list[float] = []
    perf = time.perf_counter
    async with core.session("bench") as session:
        for turn in range(n):
            start = perf()
            result: Any = await session.run(PROMPT)
            samples.append((perf() - start) * 1e6)
            check(isinstance(result.outcome, Finished), f"turn {turn}: {result.outcome!r}")
            check_turn(turn, counter, result.text)
            check(
                len(result.tool_calls) == 2,
                f"turn {turn}: expected 2 tool calls in the result, got {result.tool_calls!r} "
                f"(outcome {result.outcome!r})",
            )
            check(provider.calls == 2 * (turn + 1), f"turn {turn}: {provider.calls} model calls")
    return samples
