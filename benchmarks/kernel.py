"""Kernel benchmark: one turn through ``TurnMachine`` alone.

Workload (ARCHITECTURE.md): the model asks for two tool calls, the tools
answer, the model replies. No runtime, no I/O: the host loop below answers
each effect from prepared values. Budget: median <= 100 us per turn.

    python benchmarks/kernel.py [--turns N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lash.kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    Done,
    LlmCall,
    LlmCompleted,
    ToolCalls,
    ToolResults,
)
from lash.kernel.llm import (
    LlmResponse,
    LlmToolSpec,
    LlmUsage,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from lash.kernel.machine import MachineConfig, TurnMachine
from lash.kernel.messages import Message, user_message
from lash.kernel.protocols.standard import StandardDriver
from lash.kernel.render import RenderCache
from lash.kernel.tools.output import CompletedToolCall, TextReturn, ToolOutput

BUDGET_US = 100.0

ASK = LlmResponse(
    parts=(
        TextOutput(text="Let me add those."),
        ToolCallOutput(call_id="c1", tool_name="add", input_json='{"a":1,"b":2}'),
        ToolCallOutput(call_id="c2", tool_name="add", input_json='{"a":3,"b":4}'),
    ),
    usage=LlmUsage(input_tokens=120, output_tokens=30),
    terminal_reason=TerminalReason.TOOL_USE,
)
ANSWER = LlmResponse(
    full_text="The sums are 3 and 7.",
    usage=LlmUsage(input_tokens=180, output_tokens=12),
    terminal_reason=TerminalReason.STOP,
)
TOOLS = (
    LlmToolSpec(
        name="add",
        description="Add two integers.",
        input_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    ),
)


def _answer_tools(effect: ToolCalls) -> ToolResults:
    results = []
    for c in effect.calls:
        total = c.args["a"] + c.args["b"]
        results.append(
            CompletedToolCall(
                call_id=c.call_id,
                tool_name=c.tool_name,
                args=c.args,
                output=ToolOutput.success(total),
                model_return=(TextReturn(text=str(total)),),
            )
        )
    return ToolResults(id=effect.id, results=tuple(results))


def one_turn(config: MachineConfig, history: list[Message], turn: int, cache: RenderCache) -> float:
    """Run one turn; the host loop dispatches on effect type, as a real host does.

    ``cache`` is the session's render cache, kept across its turns as the runtime does.
    """
    start = time.perf_counter()
    machine = TurnMachine(
        config,
        history,
        inputs=[user_message(f"u{turn}", "Add 1+2 and 3+4.")],
        message_ids=lambda n: f"t{turn}.m{n}",
        render_cache=cache,
    )
    llm_replies = iter((ASK, ANSWER))
    poll, respond = machine.poll, machine.respond
    while (effect := poll()) is not None:
        kind = type(effect)
        if kind is LlmCall:
            respond(LlmCompleted(id=effect.id, response=next(llm_replies)))
        elif kind is ToolCalls:
            respond(_answer_tools(effect))
        elif kind is Checkpoint:
            respond(CheckpointDelivered(id=effect.id))
        elif kind is Done:
            history.extend(effect.added)
    return (time.perf_counter() - start) * 1e6


def measure(turns: int, keep_history: bool) -> list[float]:
    config = MachineConfig(
        driver=StandardDriver(),
        model="scripted",
        system_prompt="You are a helpful assistant.",
        tools=TOOLS,
    )
    history: list[Message] = []
    cache = RenderCache()  # one session: one cache; a fresh session gets its own
    samples = []
    for i in range(turns):
        if not keep_history:
            history = []
            cache = RenderCache()
        samples.append(one_turn(config, history, i, cache))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    measure(200, keep_history=False)  # warm up
    fresh = measure(args.turns, keep_history=False)
    grown = measure(200, keep_history=True)
    median = statistics.median(fresh)
    early = statistics.median(grown[20:40])
    late = statistics.median(grown[180:200])
    print(
        f"kernel turn (2 tool calls + answer), fresh session: median {median:.1f} us, "
        f"p90 {statistics.quantiles(fresh, n=10)[-1]:.1f} us over {len(fresh)} turns"
    )
    print(
        f"kernel turn in one growing session: turns 20-40 median {early:.1f} us, "
        f"turns 180-200 median {late:.1f} us, growth {late / early:.2f}x"
    )
    verdict = "within" if median <= BUDGET_US else "OVER"
    print(f"budget {BUDGET_US:.0f} us: {verdict} ({median / BUDGET_US:.2f} of budget)")


if __name__ == "__main__":
    main()
