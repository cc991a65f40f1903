"""``lash demo``: a scripted agent run end to end on the embedded defaults.

No network and no API key: the model is a ``ScriptedProvider`` that speaks the
real provider interface. Everything else is the real runtime: the pure turn
machine, the effect boundary, concurrent tool execution, argument validation,
streaming activities, and an atomic per-turn commit.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import TextIO

from ..core import LashCore, Session, TurnResult
from ..kernel.llm import LlmUsage
from ..kernel.tools.output import ToolFailure, ToolSuccess
from ..runtime.activity import (
    AssistantProseDelta,
    ErrorActivity,
    ModelRequestStarted,
    ToolCallCompleted,
    ToolCallStarted,
    TurnActivity,
)
from ..runtime.tools import tool
from ..testing.scripted import Reply, ScriptedProvider, ToolCall

FORECASTS = {"oslo": "light snow, -3 °C", "lisbon": "sunny, 19 °C"}

SPANS: dict[str, tuple[float, float]] = {}
"""When each demo tool call ran (start, end), to show which calls overlapped."""


def _ran(name: str, started: float) -> None:
    SPANS[name] = (started, time.monotonic())


@tool
async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    started = time.monotonic()
    await asyncio.sleep(0.05)
    _ran("multiply", started)
    return a * b


@tool
def weather(city: str) -> str:
    """Look up today's forecast for a city.

    Args:
        city: The city's name, e.g. "Oslo".
    """
    started = time.monotonic()
    time.sleep(0.05)  # a blocking call: it runs in a worker thread, not on the event loop
    _ran("weather", started)
    return FORECASTS.get(city.lower(), "no forecast available")


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _script() -> list[Reply]:
    usage = LlmUsage(input_tokens=420, output_tokens=38, cached_input_tokens=256)
    return [
        # turn 1: two independent calls in one batch, then a dependent one, then the answer
        Reply(
            text="I'll compute the product and check the weather at the same time.",
            tool_calls=[
                ToolCall("multiply", {"a": 12, "b": 7}),
                ToolCall("weather", {"city": "Oslo"}),
            ],
            usage=usage,
        ),
        Reply(tool_calls=[ToolCall("add", {"a": 84, "b": 5})], usage=usage),
        Reply(
            text="12 x 7 + 5 = 89. In Oslo today: light snow, -3 °C.",
            chunks=6,
            usage=usage,
        ),
        # turn 2: the model sends a bad argument; the runtime refuses it before any tool code runs
        Reply(tool_calls=[ToolCall("add", {"a": "two", "b": 2})], usage=usage),
        Reply(tool_calls=[ToolCall("add", {"a": 89, "b": 2})], usage=usage),
        Reply(text="89 + 2 = 91.", chunks=3, usage=usage),
        # turn 3, in a new process-like core that reopened the store from disk
        Reply(text="You first asked for 12 x 7 + 5 and the weather in Oslo.", usage=usage),
    ]


def _show(activity: TurnActivity, out: TextIO) -> None:
    match activity:
        case ModelRequestStarted(iteration=iteration):
            out.write(f"\n  · model call (iteration {iteration})\n")
        case AssistantProseDelta(text=text):
            out.write(text)
        case ToolCallStarted(name=name, args=args):
            out.write(f"\n  → {name}({args})\n")
        case ToolCallCompleted(name=name, output=output, duration_ms=ms):
            outcome = output.outcome
            shown = output.value if isinstance(outcome, ToolSuccess) else outcome.message
            out.write(f"  ← {name} {output.status} in {ms} ms: {shown}\n")
        case ErrorActivity(message=message):
            out.write(f"  ! {message}\n")
        case _:
            pass
    out.flush()


async def _turn(session: Session, text: str, out: TextIO) -> TurnResult:
    out.write(f"\nuser: {text}\n")
    async with session.turn(text).stream() as turn:
        async for activity in turn:
            _show(activity, out)
    result = turn.result
    out.write(
        f"\n  = {type(result.outcome).__name__}: {result.text!r}  "
        f"(revision {result.revision}, {len(result.tool_calls)} tool calls, "
        f"{result.usage.input_tokens} in / {result.usage.output_tokens} out tokens)\n"
    )
    return result


async def run_demo(out: TextIO) -> list[TurnResult]:
    """Run the demo, writing to ``out``; returns the turn results.

    Sessions live in an SQLite store in a fresh temporary directory.
    """
    with tempfile.TemporaryDirectory(prefix="lash-demo-") as scratch:
        return await _demo(out, scratch)


async def _demo(out: TextIO, data_dir: str) -> list[TurnResult]:
    provider = ScriptedProvider(_script())
    store_url = f"sqlite:///{data_dir}"

    def make_core() -> LashCore:
        return LashCore(
            provider=provider,
            model="scripted-model",
            tools=[multiply, weather, add],
            instructions="Answer briefly.",
            store=store_url,
        )

    out.write("lash demo: a scripted agent on the embedded defaults (no network)\n")
    out.write(f"sessions are stored in {store_url}\n")
    results = []
    async with make_core() as core, core.session("demo") as session:
        SPANS.clear()
        question = "What is 12 x 7 + 5, and how is the weather in Oslo?"
        results.append(await _turn(session, question, out))
        results.append(await _turn(session, "Now add 2.", out))
        history = len(session.messages)
    out.write("\n(the first core is closed; a new one opens the same store from disk)\n")
    async with make_core() as core, core.session("demo") as resumed:
        reopened = (len(resumed.messages), resumed.revision)
        results.append(await _turn(resumed, "What did I ask first?", out))
    # The calls overlapped when each started before the other ended (however slow
    # the machine); one after the other they never would.
    (m_start, m_end), (w_start, w_end) = SPANS["multiply"], SPANS["weather"]
    concurrent = m_start < w_end and w_start < m_end
    window = max(m_end, w_end) - min(m_start, w_start)
    refused = results[1].tool_calls[0].output.outcome
    code = refused.code if isinstance(refused, ToolFailure) else "none"
    out.write(
        "\nWhat this demonstrated:\n"
        f"  - a pure turn machine drove {provider.calls} model calls; every call and every tool\n"
        "    call crossed the effect boundary with a stable replay key;\n"
        f"  - the model's two independent tool calls ran concurrently "
        f"({'yes' if concurrent else 'no'}: {window * 1000:.0f} ms for two 50 ms tools),\n"
        "    the blocking one in a worker thread;\n"
        f"  - a bad argument was refused before any tool code ran "
        f"({code}), and the model recovered;\n"
        "  - prose streamed as deltas while tool calls reported start and completion;\n"
        f"  - each turn was committed atomically to SQLite: {history} messages at revision "
        f"{results[1].revision};\n"
        f"  - a new core reopened the session from disk ({reopened[0]} messages, revision "
        f"{reopened[1]}) and continued it to revision {results[-1].revision}.\n"
    )
    return results


def main(out: TextIO) -> int:
    """Entry point for ``lash demo``."""
    results = asyncio.run(run_demo(out))
    return 0 if all(r.ok for r in results) else 1
