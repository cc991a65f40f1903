"""DBOS crash-matrix child: one durable turn, killed where ``LASH_TEST_KILL_AT`` says.

Usage: ``python dbos_child.py DIR``. The turn, the effect log and the kill points are
``crash_support``'s; the turn runs as a DBOS workflow through ``DbosTurnRunner``, with a
SQLite DBOS system database and a SQLite lash store under ``DIR``. With ``tool:c4`` the
sibling ``c3`` has finished and been checkpointed first.

Without a kill point the child launches DBOS (which recovers a turn a killed child
left pending), runs the turn to its result and writes ``DIR/result.json``: the
turn's text and the stored session.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
import time
from pathlib import Path

from crash_support import CrashChild, KillingController, png, record_step, stored_steps
from dbos import DBOS

from lash import Image, LashCore, ToolContext, TurnInput, tool
from lash.hosts.dbos import DbosEffectHost, DbosTurnRunner, dbos_sqlite_config
from lash.kernel.codec import to_builtins
from lash.runtime.effects import EffectController, TurnScope
from lash.store.sqlite import SqliteStore
from lash.testing import ScriptedProvider

SESSION = "crash-session"
TURN = "turn-1"
RUNNER = "crash-matrix"
CHILD = CrashChild(Path(sys.argv[1]))
HOME = CHILD.home


async def checkpointed(suffix: str) -> bool:
    """Whether DBOS holds a step whose name ends with ``suffix`` (read outside the step)."""
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    steps = await asyncio.get_running_loop().create_task(
        DBOS.list_workflow_steps_async(workflow_id), context=contextvars.Context()
    )
    return any(s["function_name"].endswith(suffix) for s in steps)


@tool
async def step(x: int, ctx: ToolContext) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if CHILD.kill_at == "tool:c4" and call == "c4":
        deadline = time.monotonic() + 10
        while not await checkpointed(":c3") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    CHILD.reached(f"tool:{call}")
    await record_step(ctx, x)
    return x * 10


class KillingHost(DbosEffectHost):
    __slots__ = ()

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(super().scoped(scope), CHILD)


def build_core() -> LashCore:
    core = LashCore(
        provider=ScriptedProvider(CHILD.reply_for),
        model="scripted",
        tools=[step],
        effect_host=KillingHost(),
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    CHILD.arm_commit(core.store)
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
                "steps": stored_steps(stored.state),
            }
        )
    )
    DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(main())
