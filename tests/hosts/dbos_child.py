"""DBOS crash-matrix child: one durable turn, killed where ``LASH_TEST_KILL_AT`` says.

Usage: ``python dbos_child.py DIR``. The turn (model -> 2 tools -> model -> 2 tools ->
model answer) runs as a DBOS workflow through ``DbosTurnRunner``, with a SQLite DBOS
system database and a SQLite lash store under ``DIR``. Every real model call and tool
run appends a line to ``DIR/effects.log`` (outside the process, so it survives
SIGKILL). Kill points:

* ``llm:N`` — during model call N (after its log line, before it returns);
* ``after-llm:N`` — right after DBOS checkpointed model call N's reply;
* ``tool:ID`` — during tool call ID (after its log line); with ``tool:c4`` the
  sibling ``c3`` has finished and been checkpointed first;
* ``commit:during`` — inside the store's commit transaction, before COMMIT;
* ``commit:after`` — after the commit landed, before the workflow finished.

Without a kill point the child launches DBOS (which recovers a turn a killed child
left pending), runs the turn to its result and writes ``DIR/result.json``: the
turn's text and the stored session.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from dbos import DBOS

from lash import Image, LashCore, TurnInput, tool
from lash.hosts.dbos import DbosEffectHost, DbosTurnRunner, dbos_sqlite_config
from lash.kernel.codec import to_builtins
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.runtime.effects import (
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
    TurnScope,
)
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

SESSION = "crash-session"
TURN = "turn-1"
RUNNER = "crash-matrix"
KILL_AT = os.environ.get("LASH_TEST_KILL_AT", "")
HOME = Path(sys.argv[1])
LOG = HOME / "effects.log"


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


async def checkpointed(suffix: str) -> bool:
    """Whether DBOS holds a step whose name ends with ``suffix`` (read outside the step)."""
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    steps = await asyncio.get_running_loop().create_task(
        DBOS.list_workflow_steps_async(workflow_id), context=contextvars.Context()
    )
    return any(s["function_name"].endswith(suffix) for s in steps)


@tool
async def step(x: int) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if KILL_AT == "tool:c4" and call == "c4":
        deadline = time.monotonic() + 10
        while not await checkpointed(":c3") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    log(f"tool:{call}")
    if f"tool:{call}" == KILL_AT:
        die()
    return x * 10


class KillingController:
    """Delegates to the DBOS controller; dies right after model call N's reply is checkpointed."""

    def __init__(self, inner: EffectController) -> None:
        self.inner = inner
        self.llm_calls = 0

    @property
    def tier(self) -> Any:
        return self.inner.tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        outcome = await self.inner.run(envelope, executor)
        if envelope.invocation.kind is EffectKind.LLM_CALL:
            self.llm_calls += 1
            if f"after-llm:{self.llm_calls}" == KILL_AT:
                die()
        return outcome


class KillingHost(DbosEffectHost):
    __slots__ = ()

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(super().scoped(scope))


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


def build_core() -> LashCore:
    core = LashCore(
        provider=ScriptedProvider(reply_for),
        model="scripted",
        tools=[step],
        effect_host=KillingHost(),
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    arm_commit(core.store)
    return core


async def main() -> None:
    runner = DbosTurnRunner(build_core, name=RUNNER, poll_interval=0.05)
    config = dbos_sqlite_config(HOME / "dbos.sqlite3", name="lash-crash-matrix")
    config["notification_listener_polling_interval_sec"] = 0.05  # a quicker shutdown
    DBOS(config=config)
    DBOS.launch()  # recovers a turn a killed child left pending
    turn_input = TurnInput(text="go", images=(Image(data=png(), mime="image/png"),))
    result = await runner.run(SESSION, turn_input, turn_id=TURN)
    await runner.aclose()
    store = SqliteStore(HOME / "store")
    stored = await store.load(SESSION)
    await store.aclose()
    assert stored is not None
    (HOME / "result.json").write_text(
        json.dumps(
            {
                "text": result.text,
                "revision": stored.revision,
                "turn_index": stored.turn_index,
                "messages": to_builtins(stored.messages),
            }
        )
    )
    DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(main())
