"""A Restate endpoint for the tests: hypercorn serving ``LashRestateService`` on loopback.

Usage: ``python restate_endpoint_child.py DIR PORT``. The service's core has a scripted
model (a function of the request, so a replay gets the same replies), one tool ``step``
and a SQLite store under ``DIR/store``. Every real model call and tool run appends a
line to ``DIR/effects.log`` (outside the process, so it survives SIGKILL). The turn is
model -> tools c1, c2 -> model -> tools c3, c4 -> model answer.

The effect log and the kill points (``LASH_TEST_KILL_AT``) are ``crash_support``'s;
with ``tool:c4`` the sibling ``c3`` has finished and its step was journaled first.

``LASH_TEST_INSTRUCTIONS`` changes the system prompt (a replay then diverges).
``LASH_TEST_SCENARIO=retries`` swaps the turn for model -> tools c1, c2 -> model answer,
where both calls fail their first attempt as retryable and succeed on the second after a
durable retry wait: c2 fails at once, c1 only after a delay, so the two calls finish in
the opposite of their creation order.
``LASH_TEST_SCENARIO=state`` makes every turn one ``step`` call whose argument is the
number of user messages so far (it appends that to the session's state), then an answer.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from crash_support import CrashChild, KillingController, record_step
from hypercorn.asyncio import serve
from hypercorn.config import Config

from lash import LashCore, ToolContext, tool
from lash.hosts.restate import LashRestateService, RestateEffectHost
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.kernel.tools.definition import SafeRetry
from lash.runtime.effects import EffectController, EffectEnvelope, EffectKind, TurnScope
from lash.runtime.tools import ToolError
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

CHILD = CrashChild(Path(sys.argv[1]))
HOME = CHILD.home
PORT = int(sys.argv[2])
INSTRUCTIONS = os.environ.get("LASH_TEST_INSTRUCTIONS") or None
SCENARIO = os.environ.get("LASH_TEST_SCENARIO", "")

c3_journaled = asyncio.Event()


@tool
async def step(x: int, ctx: ToolContext) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if CHILD.kill_at == "tool:c4" and call == "c4":
        await asyncio.wait_for(c3_journaled.wait(), 20)
    CHILD.reached(f"tool:{call}")
    await record_step(ctx, x)
    return x * 10


def reply_for_retries(request: LlmRequest) -> Reply:
    results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
    n = 1 if results == 0 else 2
    CHILD.reached(f"llm:{n}")
    if n == 1:
        return Reply(
            tool_calls=[ToolCall("flaky", {"x": 1}, id="c1"), ToolCall("flaky", {"x": 2}, id="c2")]
        )
    return Reply(text=f"retries done after {results} results")


def reply_for_state(request: LlmRequest) -> Reply:
    last = request.messages[-1]
    if any(isinstance(b, ToolResultBlock) for b in last.blocks):
        return Reply(text="recorded")
    turns = sum(m.role.value == "user" for m in request.messages) - sum(
        isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks
    )
    return Reply(tool_calls=[ToolCall("step", {"x": turns}, id=f"s{turns}")])


@tool(retry=SafeRetry(max_attempts=2, base_delay_ms=100, max_delay_ms=100))
async def flaky(x: int) -> int:
    """Fails its first attempt (retryable), then succeeds; c1 takes a while to fail."""
    call = f"c{x}"
    attempt = CHILD.lines().count(f"flaky:{call}") + 1
    if attempt == 1 and x == 1:
        await asyncio.sleep(0.5)
    CHILD.log(f"flaky:{call}")  # when the attempt finishes
    if attempt == 1:
        raise ToolError("not yet", retryable=True)
    return x * 100


def c3_returned(envelope: EffectEnvelope) -> None:
    if envelope.invocation.kind is EffectKind.TOOL_CALL and envelope.replay_key.endswith(":c3"):
        c3_journaled.set()


class KillingHost(RestateEffectHost):
    """A Restate host whose controllers can kill the process at a chosen boundary."""

    __slots__ = ()

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(super().scoped(scope), CHILD, c3_returned)


def build(host: RestateEffectHost) -> LashCore:
    retries = SCENARIO == "retries"
    replies = {"retries": reply_for_retries, "state": reply_for_state}
    core = LashCore(
        provider=ScriptedProvider(replies.get(SCENARIO, CHILD.reply_for)),
        model="scripted",
        tools=[flaky] if retries else [step],
        instructions=INSTRUCTIONS,
        effect_host=host,
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    CHILD.arm_commit(core.store)
    return core


async def main() -> None:
    service = LashRestateService(build, host=KillingHost())
    config = Config()
    config.bind = [f"127.0.0.1:{PORT}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    try:
        await serve(service.app(), config)
    finally:
        await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
