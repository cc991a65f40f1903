"""Client-side rate limits on ``ProviderHandle``: request and token windows, shared 429 pauses.

A virtual clock advances only when the handle sleeps, so the tests assert exact
waits without waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from provider_support import run

from lash.kernel.llm import (
    GenerationOptions,
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmUsage,
)
from lash.providers.classify import FailureKind, classify_failure, make_call_error
from lash.providers.http import (
    ProviderCallError,
    ProviderHandle,
    RateLimit,
    RetryPolicy,
    estimate_tokens,
)
from lash.testing import Reply, ScriptedProvider


class Clock:
    """Virtual time: ``sleep`` moves it forward and records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)


def request(text: str = "hi", cap: int | None = None) -> LlmRequest:
    return LlmRequest(
        model="m",
        messages=(LlmMessage.text(LlmRole.USER, text),),
        generation=GenerationOptions(output_token_cap=cap),
    )


def handle(inner: Any, clock: Clock, limit: RateLimit | None, **kw: Any) -> ProviderHandle:
    return ProviderHandle(inner, rate_limit=limit, sleep=clock.sleep, clock=clock, **kw)


def test_rate_limit_arguments_are_checked() -> None:
    for bad in ({"requests": 0}, {"tokens": -1}, {"window": 0}):
        with pytest.raises(ValueError, match="RateLimit"):
            RateLimit(**bad)


def test_the_request_window_spaces_calls_out() -> None:
    clock = Clock()
    inner = ScriptedProvider(lambda _req: Reply(text="ok"))
    h = handle(inner, clock, RateLimit(requests=2, window=10.0))

    async def main() -> list[float]:
        started = []
        for _ in range(5):
            await h.complete(request())
            started.append(clock.now - 1000.0)
        return started

    # two calls per 10 s window: calls 3 and 4 wait for the window, call 5 again
    assert run(main()) == [0.0, 0.0, 10.0, 10.0, 20.0]
    assert inner.calls == 5


def test_the_token_window_uses_estimates_then_reported_usage() -> None:
    clock = Clock()
    used = LlmUsage(input_tokens=60, output_tokens=30)
    inner = ScriptedProvider(lambda _req: Reply(text="ok", usage=used))
    h = handle(inner, clock, RateLimit(tokens=100, window=60.0))
    small = request("x" * 40)  # about 11 tokens estimated, 90 really spent

    async def main() -> list[float]:
        times = []
        for _ in range(3):
            await h.complete(small)
            times.append(clock.now - 1000.0)
        return times

    # the first call's real usage (90) leaves no room for a second within the window
    assert run(main()) == [0.0, 60.0, 120.0]


def test_a_call_bigger_than_the_budget_runs_alone() -> None:
    clock = Clock()
    inner = ScriptedProvider(lambda _req: Reply(text="ok"))
    h = handle(inner, clock, RateLimit(tokens=10, window=5.0))
    big = request("y" * 400)
    assert estimate_tokens(big) > 10

    async def main() -> None:
        await h.complete(big)
        await h.complete(big)

    run(main())
    assert inner.calls == 2
    assert clock.waits == [5.0]


def test_estimates_count_text_tools_and_the_output_cap() -> None:
    assert estimate_tokens(request("a" * 400)) == 101
    assert estimate_tokens(request("a" * 400, cap=50)) == 151


class RateLimitedOnce:
    """Fails its first call with a 429 that asks for ``retry_after`` seconds."""

    name = "limited"

    def __init__(self, clock: Clock, retry_after: float) -> None:
        self.clock = clock
        self.retry_after = retry_after
        self.starts: list[float] = []

    async def complete(self, req: LlmRequest, on_event: Any = None) -> LlmResponse:
        self.starts.append(self.clock.now - 1000.0)
        if len(self.starts) == 1:
            verdict = classify_failure(status=429)
            assert verdict.kind is FailureKind.RATE_LIMITED
            raise ProviderCallError(
                make_call_error("slow down", verdict), status=429, retry_after=self.retry_after
            )
        await asyncio.sleep(0)
        return LlmResponse(parts=())


def test_a_429_with_retry_after_pauses_every_caller_of_the_handle() -> None:
    clock = Clock()
    inner = RateLimitedOnce(clock, retry_after=7.0)
    h = handle(inner, clock, None, retry=RetryPolicy(max_attempts=3))

    async def main() -> None:
        first = asyncio.ensure_future(h.complete(request()))
        await asyncio.sleep(0)  # the first call fails and pauses the handle
        await asyncio.sleep(0)
        second = asyncio.ensure_future(h.complete(request()))
        await asyncio.gather(first, second)

    run(main())
    # nothing but the failed first attempt starts before the pause ends
    assert inner.starts[0] == 0.0
    assert all(t >= 7.0 for t in inner.starts[1:])
    assert len(inner.starts) == 3


def test_without_a_limit_nothing_waits() -> None:
    clock = Clock()
    inner = ScriptedProvider(lambda _req: Reply(text="ok"))
    h = handle(inner, clock, None)

    async def main() -> None:
        await asyncio.gather(*(h.complete(request()) for _ in range(20)))

    run(main())
    assert clock.waits == []
    assert h.rate_limit is None
