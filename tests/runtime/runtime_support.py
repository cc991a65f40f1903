"""Helpers shared by the runtime tests: a runner with a timeout and a recording effect host."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from lash.runtime.effects import (
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectOutcome,
    SleepCommand,
    Slept,
    TurnScope,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0


def run(coro: Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT) -> T:
    """Run ``coro`` on a fresh loop; a hang fails with ``TimeoutError`` after ``timeout`` s."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


Hook = Callable[[EffectEnvelope, EffectExecutor], Awaitable[EffectOutcome]]


class RecordingController:
    """An ``EffectController`` that records every envelope, then delegates.

    ``hook`` (if given) replaces the delegation for every envelope; with
    ``skip_sleeps`` a sleep envelope is answered at once (as a durable timer that
    already fired would be), so retry tests need no real waiting.
    """

    def __init__(
        self,
        *,
        tier: DurabilityTier = DurabilityTier.INLINE,
        skip_sleeps: bool = False,
        hook: Hook | None = None,
    ) -> None:
        self.envelopes: list[EffectEnvelope] = []
        self.outcomes: dict[str, EffectOutcome] = {}
        self._tier = tier
        self._skip_sleeps = skip_sleeps
        self._hook = hook

    @property
    def tier(self) -> DurabilityTier:
        return self._tier

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        self.envelopes.append(envelope)
        if self._hook is not None:
            outcome = await self._hook(envelope, executor)
        elif self._skip_sleeps and isinstance(envelope.command, SleepCommand):
            outcome = Slept(duration_ms=envelope.command.duration_ms)
        else:
            outcome = await executor.execute(envelope)
        self.outcomes[envelope.replay_key] = outcome
        return outcome

    def keys(self, kind: str | None = None) -> list[str]:
        """Replay keys in the order the envelopes arrived (optionally of one kind)."""
        return [
            e.replay_key for e in self.envelopes if kind is None or e.invocation.kind.value == kind
        ]

    def triples(self) -> list[tuple[str, str, str]]:
        """``(kind, replay_key, effect_id)`` of every envelope, in arrival order."""
        return [
            (e.invocation.kind.value, e.replay_key, e.invocation.effect_id) for e in self.envelopes
        ]


class RecordingHost:
    """An ``EffectHost`` that hands out one ``RecordingController`` and records scopes."""

    def __init__(self, controller: RecordingController | None = None) -> None:
        self.controller = controller or RecordingController()
        self.scopes: list[TurnScope] = []

    @property
    def tier(self) -> DurabilityTier:
        return self.controller.tier

    def scoped(self, scope: TurnScope) -> EffectController:
        self.scopes.append(scope)
        return self.controller
