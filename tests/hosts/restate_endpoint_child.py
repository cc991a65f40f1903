"""A Restate endpoint for the tests: hypercorn serving ``LashRestateService`` on loopback.

Usage: ``python restate_endpoint_child.py DIR PORT``. The service's core has a scripted
model (a function of the request, so a replay gets the same replies), one tool ``step``
and a SQLite store under ``DIR/store``. Every real model call and tool run appends a
line to ``DIR/effects.log`` (outside the process, so it survives SIGKILL). The turn is
model -> tools c1, c2 -> model -> tools c3, c4 -> model answer.

``LASH_TEST_KILL_AT`` names where the process SIGKILLs itself:

* ``llm:N`` — during model call N (after its log line, before it returns);
* ``after-llm:N`` — right after Restate journaled model call N's reply;
* ``tool:ID`` — during tool call ID; with ``tool:c4`` the sibling ``c3`` has finished
  and its step was journaled first;
* ``commit:during`` — inside the store's commit transaction, before COMMIT;
* ``commit:after`` — after the commit landed, before the handler returns.

``LASH_TEST_INSTRUCTIONS`` changes the system prompt (a replay then diverges).
``LASH_TEST_SCENARIO=retries`` swaps the turn for model -> tools c1, c2 -> model answer,
where both calls fail their first attempt as retryable and succeed on the second after a
durable retry wait: c2 fails at once, c1 only after a delay, so the two calls finish in
the opposite of their creation order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from lash import LashCore, tool
from lash.hosts.restate import LashRestateService, RestateEffectHost
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.kernel.tools.definition import SafeRetry
from lash.runtime.effects import (
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
    TurnScope,
)
from lash.runtime.tools import ToolError
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

HOME = Path(sys.argv[1])
PORT = int(sys.argv[2])
KILL_AT = os.environ.get("LASH_TEST_KILL_AT", "")
INSTRUCTIONS = os.environ.get("LASH_TEST_INSTRUCTIONS") or None
SCENARIO = os.environ.get("LASH_TEST_SCENARIO", "")
LOG = HOME / "effects.log"

c3_journaled = asyncio.Event()


def log(tag: str) -> None:
    with LOG.open("a") as f:
        f.write(tag + "\n")
        f.flush()
        os.fsync(f.fileno())


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reply_for(request: LlmRequest) -> Reply:
    """A function of the request, so a replayed turn gets the same replies."""
    results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
    n = results // 2 + 1
    log(f"llm:{n}")
    if f"llm:{n}" == KILL_AT:
        die()
    if n == 1:
        return Reply(
            tool_calls=[ToolCall("step", {"x": 1}, id="c1"), ToolCall("step", {"x": 2}, id="c2")]
        )
    if n == 2:
        return Reply(
            tool_calls=[ToolCall("step", {"x": 3}, id="c3"), ToolCall("step", {"x": 4}, id="c4")]
        )
    return Reply(text=f"done after {results} results")


@tool
async def step(x: int) -> int:
    """One scripted side effect."""
    call = f"c{x}"
    if KILL_AT == "tool:c4" and call == "c4":
        await asyncio.wait_for(c3_journaled.wait(), 20)
    log(f"tool:{call}")
    if f"tool:{call}" == KILL_AT:
        die()
    return x * 10


def reply_for_retries(request: LlmRequest) -> Reply:
    results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
    n = 1 if results == 0 else 2
    log(f"llm:{n}")
    if f"llm:{n}" == KILL_AT:
        die()
    if n == 1:
        return Reply(
            tool_calls=[ToolCall("flaky", {"x": 1}, id="c1"), ToolCall("flaky", {"x": 2}, id="c2")]
        )
    return Reply(text=f"retries done after {results} results")


@tool(retry=SafeRetry(max_attempts=2, base_delay_ms=100, max_delay_ms=100))
async def flaky(x: int) -> int:
    """Fails its first attempt (retryable), then succeeds; c1 takes a while to fail."""
    call = f"c{x}"
    attempt = log_lines().count(f"flaky:{call}") + 1
    if attempt == 1 and x == 1:
        await asyncio.sleep(0.5)
    log(f"flaky:{call}")  # when the attempt finishes
    if attempt == 1:
        raise ToolError("not yet", retryable=True)
    return x * 100


def log_lines() -> list[str]:
    return LOG.read_text().split() if LOG.exists() else []


class KillingController:
    """Delegates to the Restate controller; dies right after model call N's reply is journaled."""

    def __init__(self, inner: EffectController, host: KillingHost) -> None:
        self.inner = inner
        self.host = host

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        outcome = await self.inner.run(envelope, executor)
        kind = envelope.invocation.kind
        if kind is EffectKind.LLM_CALL:
            self.host.llm_calls += 1
            if f"after-llm:{self.host.llm_calls}" == KILL_AT:
                die()
        elif kind is EffectKind.TOOL_CALL and envelope.replay_key.endswith(":c3"):
            c3_journaled.set()
        return outcome


class KillingHost(RestateEffectHost):
    """A Restate host whose controllers can kill the process at a chosen boundary."""

    __slots__ = ("llm_calls",)

    def __init__(self) -> None:
        super().__init__()
        self.llm_calls = 0

    def scoped(self, scope: TurnScope) -> EffectController:
        return KillingController(super().scoped(scope), self)


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


def build(host: RestateEffectHost) -> LashCore:
    retries = SCENARIO == "retries"
    core = LashCore(
        provider=ScriptedProvider(reply_for_retries if retries else reply_for),
        model="scripted",
        tools=[flaky] if retries else [step],
        instructions=INSTRUCTIONS,
        effect_host=host,
        store=f"sqlite:///{HOME}/store",
    )
    assert isinstance(core.store, SqliteStore)
    arm_commit(core.store)
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
