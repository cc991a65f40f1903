"""Per-turn overhead of ``SqliteJournalHost`` against ``InlineEffectHost`` (prints; no asserts).

Run: ``.venv/bin/python tests/hosts/bench_journal_overhead.py [turns]``. Each turn is
model -> 2 tool calls -> model answer over a SQLite store in a temporary directory.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from lash import LashCore, tool
from lash.hosts import SqliteJournalHost
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.runtime.effects import EffectHost, InlineEffectHost
from lash.testing import Reply, ScriptedProvider, ToolCall


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def reply_for(request: LlmRequest) -> Reply:
    last = request.messages[-1]
    if any(isinstance(b, ToolResultBlock) for b in last.blocks):
        return Reply(text="done")
    n = len(request.messages)
    calls = [
        ToolCall("add", {"a": 1, "b": 2}, id=f"a{n}"),
        ToolCall("add", {"a": 3, "b": 4}, id=f"b{n}"),
    ]
    return Reply(tool_calls=calls)


async def measure(home: Path, host: EffectHost, turns: int) -> float:
    core = LashCore(
        provider=ScriptedProvider(reply_for),
        model="m",
        tools=[add],
        effect_host=host,
        store=f"sqlite:///{home}/store",
    )
    async with core, core.session("bench") as session:
        await session.run("warm up", turn_id="warm")
        start = time.perf_counter()
        for i in range(turns):
            await session.run(f"turn {i}", turn_id=f"t{i}")
        return (time.perf_counter() - start) / turns


async def main(turns: int) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        inline = await measure(Path(a), InlineEffectHost(), turns)
        journal = SqliteJournalHost(Path(b) / "journal.sqlite3")
        durable = await measure(Path(b), journal, turns)
        effects = len(await journal.entries("bench")) / (turns + 1)
        await journal.aclose()
    print(f"turns: {turns}, journaled effects per turn: {effects:.0f}")
    print(f"inline host : {inline * 1e3:7.2f} ms/turn")
    print(f"journal host: {durable * 1e3:7.2f} ms/turn")
    print(f"overhead    : {(durable - inline) * 1e3:7.2f} ms/turn ({durable / inline:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
