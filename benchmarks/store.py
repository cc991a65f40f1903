"""Store benchmark: what persistence adds to a turn, and how big the database gets.

Runs the ARCHITECTURE workload (the model asks for two tool calls, the tools
run, the model answers) for 200 turns in one session through the real runtime,
once with the in-memory store and once with the SQLite store, and prints the
median per-turn time of each, the difference (budget: SQLite adds <= 1.5 ms per
turn), and the SQLite database size after the run (budget: no larger than the
leanest peer's store; measured here: OpenAI Agents SDK ``SQLiteSession`` 190 KB).

    python benchmarks/store.py [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from lash import LashCore, tool
from lash.kernel.llm import LlmRequest, LlmUsage, ToolResultBlock
from lash.testing import Reply, ScriptedProvider, ToolCall

EXTRA_BUDGET_US = 1500.0
SIZE_BUDGET_BYTES = 190_000


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def model(request: LlmRequest) -> Reply:
    usage = LlmUsage(input_tokens=120, output_tokens=30)
    if any(isinstance(b, ToolResultBlock) for b in request.messages[-1].blocks):
        return Reply(text="The sums are 3 and 7.", usage=usage)
    return Reply(
        tool_calls=[ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4})],
        usage=usage,
    )


async def run_turns(store: str, turns: int) -> list[float]:
    samples = []
    async with (
        LashCore(
            provider=ScriptedProvider(model), model="scripted", tools=[add], store=store
        ) as core,
        core.session("bench") as session,
    ):
        for i in range(turns):
            started = time.perf_counter()
            result = await session.run(f"Add 1+2 and 3+4 (turn {i}).")
            samples.append((time.perf_counter() - started) * 1e6)
            assert result.text == "The sums are 3 and 7.", result.outcome
            assert len(result.tool_calls) == 2
    return samples


def db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


async def main(turns: int) -> None:
    await run_turns("memory://", 5)  # warm up imports and caches
    memory = await run_turns("memory://", turns)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch)
        await run_turns(f"sqlite:///{data / 'warm'}", 5)
        sqlite = await run_turns(f"sqlite:///{data / 'lash'}", turns)
        size = db_bytes(data / "lash")
    m, s = statistics.median(memory), statistics.median(sqlite)
    extra = s - m
    print(f"{turns} turns of the workload in one session (2 tool calls + answer per turn)")
    print(f"  memory store: median {m:8.0f} us per turn")
    print(f"  sqlite store: median {s:8.0f} us per turn")
    verdict = "within" if extra <= EXTRA_BUDGET_US else "OVER"
    print(f"  sqlite extra: {extra:8.0f} us per turn  (budget {EXTRA_BUDGET_US:.0f} us: {verdict})")
    late, early = statistics.median(sqlite[-20:]), statistics.median(sqlite[20:40])
    print(f"  sqlite growth: turns {turns - 20}-{turns} over 20-40 = {late / early:.2f}x")
    verdict = "within" if size <= SIZE_BUDGET_BYTES else "OVER"
    print(
        f"  sqlite database after {turns} turns: {size / 1024:.0f} KiB ({size} bytes; "
        f"budget {SIZE_BUDGET_BYTES} bytes: {verdict})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    if args.turns < 40:
        parser.error("--turns must be at least 40")
    asyncio.run(main(args.turns))
