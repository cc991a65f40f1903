"""A child process for the crash matrix: one durable turn, killed where ``LASH_TEST_KILL_AT`` says.

Usage: ``python crash_child.py DIR``. The turn is model -> 2 tools -> model -> 2 tools ->
model answer. Every real model call and tool run appends a line to ``DIR/effects.log``
(outside the process, so it survives SIGKILL). Kill points:

* ``llm:N`` — during model call N (after its log line, before it returns);
* ``after-llm:N`` — right after the journal returned model call N's reply;
* ``tool:ID`` — during tool call ID (after its log line); with ``tool:c4`` the
  sibling ``c3`` has finished and been journaled first;
* ``commit:during`` — inside the store's commit transaction, before COMMIT;
* ``commit:after`` — after the commit landed, before the process reports.

On success it writes ``DIR/result.json``: the turn's text and the stored session.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from lash import Image, LashCore, TurnInput, tool
from lash.hosts import SqliteJournalHost
from lash.kernel.codec import to_builtins
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.runtime.effects import (
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectHost,
    EffectKind,
    EffectOutcome,
    TurnScope,
)
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

SESSION = "crash-session"
TURN = "turn-1"
KILL_AT = os.environ.get("LASH_TEST_KILL_AT", "")
HOME = Path(sys.argv[1])
LOG = HOME / "effects.log"
JOURNAL = HOME / "journal.sqlite3"


def log(tag: str) -> None:
    with LOG.open("a") as f:
        f.write(tag + "\n")
        f.flush()
        os.fsync(f.fileno())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def reply_for(request: LlmRequest) -> Reply:
    """A function of the request, so a replayed turn gets the same replies."""
    results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
    n = results // 2 + 1
    log(f"llm:{n}")
    if f"llm:{n}" == KILL_AT:
        die()
    if n == 1:
        calls = [ToolCall("step", {"x": 1}, id="c1"), ToolCall("step", {"x": 2}, id="c2")]
        return Reply(tool_calls=calls)
    if n == 2:
        calls = [ToolCall("step", {"x": 3}, id="c3"), ToolCall("step", {"x": 4}, id="c4")]
        return Reply(tool_calls=calls)
    return Reply(text=f"done after {results} results")


def journaled(suffix: str) -> bool:
    with sqlite3.connect(JOURNAL) as conn:
        row = conn.execute(
            "SELECT 1 FROM effect_journal WHERE replay_key LIKE ? AND status = 'completed'",
            (f"%{suffix}",),
        ).fetchone()
    return row is not None


@tool
async def step(x: int) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if KILL_AT == "tool:c4" and call == "c4":
        deadline = time.monotonic() + 10
        while not journaled(":c3") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    log(f"tool:{call}")
    if f"tool:{call}" == KILL_AT:
        die()
    return x * 10


class KillingController:
    """Delegates to the journal; dies right after model call N's reply is journaled."""

    def __init__(self, inner: EffectController) -> None:
        self.inner = inner
        self.llm_calls = 0

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        outcome = await self.inner.run(envelope, executor)
        if envelope.invocation.kind is EffectKind.LLM_CALL:
            self.llm_calls += 1
            if f"after-llm:{self.llm_calls}" == KILL_AT:
                die()
        return outcome


class KillingHost:
    def __init__(self, inner: SqliteJournalHost) -> None:
        self.inner = inner

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(self.inner.scoped(scope))


def arm_commit(store: SqliteStore) -> None:
    if KILL_AT == "commit:during":
        apply = store._apply

        def apply_then_die(*args: Any) -> Any:
            apply(*args)
            die()  # inside BEGIN IMMEDIATE, before COMMIT

        store._apply = apply_then_die  # type: ignore[method-assign]
    elif KILL_AT == "commit:after":
        commit = store.commit

        async def commit_then_die(*args: Any) -> Any:
            await commit(*args)
            die()

        store.commit = commit_then_die  # type: ignore[method-assign]


def already_committed(messages: tuple[Any, ...]) -> bool:
    """Whether this turn's commit landed before a crash (its messages carry the turn id)."""
    return any(m.id.startswith(f"{TURN}.") for m in messages)


async def main() -> None:
    journal = SqliteJournalHost(JOURNAL, owner_id="worker-1")
    host: EffectHost = KillingHost(journal)
    core = LashCore(
        provider=ScriptedProvider(reply_for),
        model="scripted",
        tools=[step],
        effect_host=host,
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    arm_commit(core.store)
    async with core, core.session(SESSION) as session:
        if already_committed(session.messages):
            text = None  # the commit landed; nothing to run again
        else:
            result = await session.run(
                TurnInput(text="go", images=(Image(data=png(), mime="image/png"),)),
                turn_id=TURN,
            )
            text = result.text
    await journal.aclose()
    store = SqliteStore(HOME / "store")
    stored = await store.load(SESSION)
    await store.aclose()
    assert stored is not None
    (HOME / "result.json").write_text(
        json.dumps(
            {
                "text": text,
                "revision": stored.revision,
                "turn_index": stored.turn_index,
                "messages": to_builtins(stored.messages),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
