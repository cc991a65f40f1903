"""A child process for the crash matrix: one durable turn, killed where ``LASH_TEST_KILL_AT`` says.

Usage: ``python crash_child.py DIR``. The turn, the effect log and the kill points are
``crash_support``'s, over ``SqliteJournalHost``; with ``tool:c4`` the sibling ``c3``
has finished and been journaled first.

On success it writes ``DIR/result.json``: the turn's text and the stored session.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from crash_support import CrashChild, KillingController, png, record_step, stored_steps

from lash import Image, LashCore, ToolContext, TurnInput, tool
from lash.hosts import SqliteJournalHost
from lash.kernel.codec import to_builtins
from lash.runtime.effects import DurabilityTier, EffectController, EffectHost, TurnScope
from lash.store.sqlite import SqliteStore
from lash.testing import ScriptedProvider

SESSION = "crash-session"
TURN = "turn-1"
CHILD = CrashChild(Path(sys.argv[1]))
HOME = CHILD.home
JOURNAL = HOME / "journal.sqlite3"


def journaled(suffix: str) -> bool:
    with sqlite3.connect(JOURNAL) as conn:
        row = conn.execute(
            "SELECT 1 FROM effect_journal WHERE replay_key LIKE ? AND status = 'completed'",
            (f"%{suffix}",),
        ).fetchone()
    return row is not None


@tool
async def step(x: int, ctx: ToolContext) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if CHILD.kill_at == "tool:c4" and call == "c4":
        deadline = time.monotonic() + 10
        while not journaled(":c3") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    CHILD.reached(f"tool:{call}")
    await record_step(ctx, x)
    return x * 10


class KillingHost:
    def __init__(self, inner: SqliteJournalHost) -> None:
        self.inner = inner

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(self.inner.scoped(scope), CHILD)


def already_committed(messages: tuple[Any, ...]) -> bool:
    """Whether this turn's commit landed before a crash (its messages carry the turn id)."""
    return any(m.id.startswith(f"{TURN}.") for m in messages)


async def main() -> None:
    journal = SqliteJournalHost(JOURNAL, owner_id="worker-1")
    host: EffectHost = KillingHost(journal)
    core = LashCore(
        provider=ScriptedProvider(CHILD.reply_for),
        model="scripted",
        tools=[step],
        effect_host=host,
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    CHILD.arm_commit(core.store)
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
                "steps": stored_steps(stored.state),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
