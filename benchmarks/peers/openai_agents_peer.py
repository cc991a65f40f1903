"""OpenAI Agents SDK: an ``Agent`` on a scripted ``Model`` subclass, run with ``Runner.run``.

A turn is ``Runner.run(agent, history + [user message])`` plus taking
``result.to_input_list()`` as the next turn's history: the SDK's own way to
carry a conversation without a server-side session, and the equivalent of what
lash's session does inside ``run``. Tracing is disabled for the runs (its
default exporter would try to reach the network); lash traces nothing here
either.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from . import CALLS, PROMPT, PeerUnavailable, ToolCounter, check, check_turn

NAME = "openai-agents"
PACKAGE = "openai-agents"


async def run_turns(n: int) -> list[float]:
    """Run ``n`` turns in one fresh conversation; per-turn wall times in microseconds."""
    try:
        from agents import (
            Agent,
            Model,
            ModelResponse,
            RunConfig,
            Runner,
            ToolCallOutputItem,
            Usage,
            function_tool,
        )
        from openai.types.responses import (
            ResponseFunctionToolCall,
            ResponseOutputMessage,
            ResponseOutputText,
        )
    except ImportError as exc:
        raise PeerUnavailable(f"{PACKAGE} not installed") from exc

    ids = itertools.count()
    arguments = [json.dumps({"a": a, "b": b}) for a, b in CALLS]

    class ScriptedModel(Model):
        """Asks for the two ``add`` calls, then answers with the tool outputs it was sent."""

        async def get_response(
            self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
        ) -> ModelResponse:
            results: list[str] = []
            if isinstance(input, list):
                for item in reversed(input):
                    if not (isinstance(item, dict) and item.get("type") == "function_call_output"):
                        break
                    results.append(str(item["output"]))
            output: list[Any]
            if results:
                text = ResponseOutputText(
                    type="output_text", text=" and ".join(reversed(results)), annotations=[]
                )
                output = [
                    ResponseOutputMessage(
                        id=f"msg_{next(ids)}",
                        type="message",
                        role="assistant",
                        status="completed",
                        content=[text],
                    )
                ]
            else:
                output = [
                    ResponseFunctionToolCall(
                        type="function_call", call_id=f"call_{next(ids)}", name="add", arguments=arg
                    )
                    for arg in arguments
                ]
            return ModelResponse(output=output, usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the benchmark does not stream")

    counter = ToolCounter()
    count = counter.add

    @function_tool
    async def add(a: int, b: int) -> int:
        """Add two integers."""
        return count(a, b)

    agent: Any = Agent(name="bench", model=ScriptedModel(), tools=[add])
    config = RunConfig(tracing_disabled=True)
    history: list[Any] = []
    samples: list[float] = []
    perf = time.perf_counter
    for turn in range(n):
        start = perf()
        result = await Runner.run(
            agent, [*history, {"role": "user", "content": PROMPT}], run_config=config
        )
        history = result.to_input_list()
        samples.append((perf() - start) * 1e6)
        check_turn(turn, counter, result.final_output)
        outputs = [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]
        check(outputs == [3, 7], f"turn {turn}: tool outputs {outputs!r}")
        check(len(history) == 6 * (turn + 1), f"turn {turn}: history has {len(history)} items")
    return samples
