"""What the crash matrices share: the child side (``CrashChild``) and the test side.

Every crash-matrix child (``crash_child.py``, ``dbos_child.py``,
``restate_endpoint_child.py``) runs the same turn, model -> tools c1, c2 -> model ->
tools c3, c4 -> model answer, with a scripted model that is a function of the request
(a replay gets the same replies). Every real model call and tool run appends a line
to ``DIR/effects.log`` (outside the process, so it survives SIGKILL), and the process
SIGKILLs itself where ``LASH_TEST_KILL_AT`` says:

* ``llm:N`` — during model call N (after its log line, before it returns);
* ``after-llm:N`` — right after the host returned model call N's reply;
* ``tool:ID`` — during tool call ID (after its log line);
* ``commit:during`` — inside the store's commit transaction, before COMMIT;
* ``commit:after`` — after the commit landed.

This module imports no pytest: the children import it too.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lash import StateKey, ToolContext
from lash.kernel.llm import LlmRequest, ToolResultBlock
from lash.runtime.effects import (
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
)
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ToolCall

STEPS = StateKey("crash.steps", list[int], default_factory=list)
"""Session state every ``step`` call appends its argument to (read-modify-write)."""
ALL_STEPS = [1, 2, 3, 4]
"""The state an uninterrupted turn commits: calls in the model's order."""

KILL_ENV = "LASH_TEST_KILL_AT"
ALL_TAGS = ["llm:1", "tool:c1", "tool:c2", "llm:2", "tool:c3", "tool:c4", "llm:3"]
"""The log of an uninterrupted turn."""


# ---------------------------------------------------------------- the test side


def spawn(child: Path, home: Path, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``child`` on ``home`` to its end (or its kill point)."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at is not None:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, str(child), str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def log_lines(home: Path) -> list[str]:
    """The effects the children under ``home`` really ran, in order."""
    path = home / "effects.log"
    return path.read_text().split() if path.exists() else []


def tag_of(replay_key: str) -> str | None:
    """The log tag of the effect with ``replay_key`` (None: no side effect)."""
    parts = replay_key.split(":")
    if len(parts) < 5:  # not a turn effect (Restate's session head, say)
        return None
    if parts[4] == "llm_call":
        return f"llm:{int(parts[3]) + 1}"
    if parts[4] == "tool_call":
        return f"tool:{parts[-1]}"
    return None


def final_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last committed message (as plain JSON)."""
    return str(messages[-1]["parts"][-1]["content"])


# ---------------------------------------------------------------- the child side


async def record_step(ctx: ToolContext, x: int) -> None:
    """Append ``x`` to the session's ``STEPS`` (reads wait for the calls before this one)."""
    ctx.state.set(STEPS, [*await ctx.state.get(STEPS), x])


def stored_steps(state: dict[str, bytes]) -> list[int] | None:
    """The ``STEPS`` a loaded session holds (None while unset)."""
    data = state.get(STEPS.name)
    return None if data is None else STEPS.decode(data)


def png() -> bytes:
    """A valid 1x1 PNG (the turn's input image)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class CrashChild:
    """One child process: its home directory, its kill point and its effect log."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.kill_at = os.environ.get(KILL_ENV, "")
        self.llm_replies = 0
        """Model replies the host returned in this process (for ``after-llm:N``)."""

    def log(self, tag: str) -> None:
        """Append ``tag`` to the effect log, durably."""
        with (self.home / "effects.log").open("a") as f:
            f.write(tag + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lines(self) -> list[str]:
        """The effect log so far."""
        return log_lines(self.home)

    def reached(self, tag: str) -> None:
        """Log ``tag`` and die if it is the kill point."""
        self.log(tag)
        if tag == self.kill_at:
            die()

    def reply_for(self, request: LlmRequest) -> Reply:
        """The turn's model: a function of the request, so a replay gets the same replies."""
        results = sum(isinstance(b, ToolResultBlock) for m in request.messages for b in m.blocks)
        n = results // 2 + 1
        self.reached(f"llm:{n}")
        if n == 1:
            calls = [ToolCall("step", {"x": 1}, id="c1"), ToolCall("step", {"x": 2}, id="c2")]
            return Reply(tool_calls=calls)
        if n == 2:
            calls = [ToolCall("step", {"x": 3}, id="c3"), ToolCall("step", {"x": 4}, id="c4")]
            return Reply(tool_calls=calls)
        return Reply(text=f"done after {results} results")

    def arm_commit(self, store: SqliteStore) -> None:
        """Make ``store`` die inside or after its commit, as the kill point says."""
        if self.kill_at == "commit:during":
            apply = store._apply

            def apply_then_die(*args: Any) -> Any:
                apply(*args)
                die()  # inside BEGIN IMMEDIATE, before COMMIT

            store._apply = apply_then_die  # type: ignore[method-assign]
        elif self.kill_at == "commit:after":
            commit = store.commit

            async def commit_then_die(*args: Any) -> Any:
                await commit(*args)
                die()

            store.commit = commit_then_die  # type: ignore[method-assign]


def die() -> None:
    """SIGKILL this process (nothing runs after it)."""
    os.kill(os.getpid(), signal.SIGKILL)


class KillingController:
    """Delegates to ``inner``; dies right after the host returned model call N's reply.

    ``returned`` (optional) sees every envelope whose outcome the host returned.
    """

    def __init__(
        self,
        inner: EffectController,
        child: CrashChild,
        returned: Callable[[EffectEnvelope], None] | None = None,
    ) -> None:
        self.inner = inner
        self.child = child
        self.returned = returned

    @property
    def tier(self) -> DurabilityTier:
        return self.inner.tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        outcome = await self.inner.run(envelope, executor)
        if envelope.invocation.kind is EffectKind.LLM_CALL:
            self.child.llm_replies += 1
            if f"after-llm:{self.child.llm_replies}" == self.child.kill_at:
                die()
        if self.returned is not None:
            self.returned(envelope)
        return outcome
