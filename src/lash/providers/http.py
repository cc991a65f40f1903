"""Transport shared by HTTP providers: retries, backoff, timeouts, concurrency.

:class:`ProviderHandle` wraps any :class:`~lash.providers.base.Provider` and runs
the retry loop: classify the failure, wait (``Retry-After`` if the server sent
one, else capped exponential backoff plus jitter), tell the stream with a
:class:`RetryStatusEvent`, try again. The helpers below it open a response with a
response-start timeout and read its body with a per-chunk timeout, so a stalled
server fails the call instead of hanging it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ..kernel.llm import (
    LlmCallError,
    LlmRequest,
    LlmResponse,
    ReasoningBlock,
    TextBlock,
    ToolCallBlock,
    ToolResultBlock,
)
from .base import ProviderError, RetryStatusEvent, StreamCallback
from .classify import Classification, FailureKind, classify_failure, make_call_error

__all__ = [
    "ProviderCallError",
    "ProviderHandle",
    "RateLimit",
    "RetryPolicy",
    "Sleep",
    "Timeouts",
    "open_response",
    "parse_retry_after",
    "read_chunks",
    "transport_error",
]

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry; delays are in seconds.

    The n-th retry (0-based) waits ``min(base_delay * 2**n, max_delay)`` plus up
    to ``jitter`` seconds, or the server's ``Retry-After`` capped at
    ``retry_after_cap``.
    """

    max_attempts: int = 4
    base_delay: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if min(self.base_delay, self.max_delay, self.jitter, self.retry_after_cap) < 0:
            raise ValueError("retry delays must not be negative")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """One attempt, no retries."""
        return cls(max_attempts=1)

    def delay(self, retry_index: int, retry_after: float | None, unit_random: float) -> float:
        """Seconds to wait before retry number ``retry_index`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        backoff = min(self.base_delay * (2.0 ** min(retry_index, 62)), self.max_delay)
        return backoff + self.jitter * unit_random


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Transport time limits in seconds (``None`` disables one).

    ``request`` bounds a whole non-streaming call and the wait for a streaming
    response's headers (together with ``chunk``); ``chunk`` bounds the wait for
    each piece of a streamed body.
    """

    request: float | None = 300.0
    chunk: float | None = 120.0
    connect: float | None = 30.0

    def response_start(self, streaming: bool) -> float | None:
        """How long to wait for the status line and headers."""
        if not streaming:
            return self.request
        limits = [t for t in (self.request, self.chunk) if t is not None]
        return min(limits) if limits else None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Client-side rate limits over a sliding ``window`` of seconds.

    ``requests`` caps the calls started in any window; ``tokens`` caps the tokens
    they spend (estimated from the request before the call, at about four
    characters a token, then corrected with the usage the reply reports). A
    single call larger than the whole token budget still runs, alone.
    """

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0

    def __post_init__(self) -> None:
        for name, value in (("requests", self.requests), ("tokens", self.tokens)):
            if value is not None and value < 1:
                raise ValueError(f"RateLimit.{name} must be at least 1 (or None), got {value}")
        if not self.window > 0:
            raise ValueError(f"RateLimit.window must be positive, got {self.window}")


def estimate_tokens(request: LlmRequest) -> int:
    """A rough, deterministic token estimate of a request: characters / 4, plus the output cap."""
    chars = 0
    for message in request.messages:
        for block in message.blocks:
            if isinstance(block, TextBlock | ReasoningBlock):
                chars += len(block.text)
            elif isinstance(block, ToolCallBlock):
                chars += len(block.input_json)
            elif isinstance(block, ToolResultBlock):
                chars += len(block.content)
    for spec in request.tools:
        chars += len(spec.name) + len(spec.description) + len(str(spec.input_schema))
    cap = request.generation.output_token_cap
    return chars // 4 + 1 + (cap or 0)


class _Windows:
    """The request and token windows of one handle, plus a shared cool-down after a 429."""

    def __init__(self, limit: RateLimit | None, clock: Callable[[], float], sleep: Sleep) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._spent: deque[list[float]] = deque()  # [time, tokens], corrected after the reply
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> float:
        """Hold every caller of this handle for ``seconds`` (the server said to slow down).

        Returns the deadline; the caller that paused waits it out itself and
        then calls ``resume`` with it.
        """
        deadline = self._clock() + seconds
        self._paused_until = max(self._paused_until, deadline)
        return deadline

    def resume(self, deadline: float) -> None:
        """Lift a pause whose wait its owner has slept through (unless a later one replaced it)."""
        if self._paused_until == deadline:
            self._paused_until = 0.0

    def _purge(self, now: float, window: float) -> None:
        while self._calls and self._calls[0] <= now - window:
            self._calls.popleft()
        while self._spent and self._spent[0][0] <= now - window:
            self._spent.popleft()

    async def acquire(self, tokens: int) -> list[float] | None:
        """Wait until a call of ``tokens`` fits; returns its ledger entry (to correct later)."""
        while True:
            async with self._lock:
                now = self._clock()
                wait = self._paused_until - now
                limit = self.limit
                if wait <= 0 and limit is not None:
                    self._purge(now, limit.window)
                    waits = []
                    if limit.requests is not None and len(self._calls) >= limit.requests:
                        waits.append(self._calls[0] + limit.window - now)
                    if limit.tokens is not None and self._spent:
                        used = sum(e[1] for e in self._spent)
                        if used + tokens > limit.tokens:
                            waits.append(self._spent[0][0] + limit.window - now)
                    wait = max(waits, default=0.0)
                if wait <= 0:
                    if limit is None:
                        return None
                    self._calls.append(now)
                    entry = [now, float(tokens)]
                    if limit.tokens is not None:
                        self._spent.append(entry)
                    return entry
            await self._sleep(max(wait, 0.001))


class ProviderCallError(ProviderError):
    """A :class:`ProviderError` that also carries the HTTP status and ``Retry-After``."""

    def __init__(
        self,
        error: LlmCallError,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (or ``retry-after-ms``) as seconds; HTTP dates are ignored."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    seconds = headers.get("retry-after")
    if seconds is None:
        return None
    try:
        value = float(seconds.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def transport_error(
    exc: BaseException, label: str, *, secrets: Iterable[str] = ()
) -> ProviderCallError:
    """Map an httpx/asyncio failure to a retryable transport or timeout error."""
    timed_out = isinstance(exc, TimeoutError | httpx.TimeoutException)
    verdict = classify_failure(transport=True, timeout=timed_out)
    what = "timed out" if timed_out else "transport error"
    detail = str(exc) or type(exc).__name__
    return ProviderCallError(
        make_call_error(f"{label}: {what}: {detail}", verdict, secrets=secrets)
    )


class ProviderHandle:
    """A provider with retries, backoff, and optional concurrency and rate limits.

    ``sleep``, ``rand`` and ``clock`` are injectable so tests neither wait nor
    depend on randomness. A ``RetryStatusEvent`` reaches ``on_event`` before
    every retry wait. A rate-limited failure (429) that names a wait pauses
    every call of this handle for that long, not just the one that failed.
    """

    def __init__(
        self,
        provider: object,
        *,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        rate_limit: RateLimit | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        complete = getattr(provider, "complete", None)
        if not callable(complete):
            raise TypeError(f"{provider!r} has no complete() method")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.provider = provider
        self._complete: Callable[[LlmRequest, StreamCallback | None], Awaitable[LlmResponse]]
        self._complete = complete
        self.retry = retry or RetryPolicy()
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._sleep = sleep
        self._rand = rand
        self._windows = _Windows(rate_limit, clock, sleep)

    async def aclose(self) -> None:
        """Close the wrapped provider (its HTTP client) when it can be closed."""
        aclose = getattr(self.provider, "aclose", None)
        if callable(aclose):
            await aclose()

    @property
    def rate_limit(self) -> RateLimit | None:
        """The client-side rate limits (None: unlimited)."""
        return self._windows.limit

    @property
    def name(self) -> str:
        """The wrapped provider's name."""
        return str(getattr(self.provider, "name", "provider"))

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        """Complete ``request``, retrying retryable failures."""
        policy = self.retry
        windows = self._windows
        estimate = estimate_tokens(request) if windows.limit is not None else 0
        attempt = 1
        while True:
            try:
                entry = await windows.acquire(estimate)
                if self._limit is None:
                    response = await self._complete(request, on_event)
                else:
                    async with self._limit:
                        response = await self._complete(request, on_event)
                if entry is not None:
                    usage = response.usage
                    spent = usage.input_tokens + usage.output_tokens + usage.reasoning_tokens
                    if spent:
                        entry[1] = float(spent)
                return response
            except ProviderError as exc:
                if not exc.error.retryable or attempt >= policy.max_attempts:
                    raise
                retry_after = exc.retry_after if isinstance(exc, ProviderCallError) else None
                wait = policy.delay(attempt - 1, retry_after, self._rand())
                paused = None
                if retry_after is not None and exc.error.code == FailureKind.RATE_LIMITED.value:
                    paused = windows.pause(wait)
                if on_event is not None:
                    await on_event(
                        RetryStatusEvent(
                            wait_seconds=wait,
                            attempt=attempt,
                            max_attempts=policy.max_attempts,
                            reason=exc.error.message,
                        )
                    )
                await self._sleep(wait)
                if paused is not None:
                    windows.resume(paused)
                attempt += 1


@asynccontextmanager
async def open_response(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    start_timeout: float | None,
    label: str,
    secrets: Iterable[str] = (),
) -> AsyncIterator[httpx.Response]:
    """Send ``request`` and yield the streaming response once headers arrive.

    Waiting longer than ``start_timeout`` for the headers, or any transport
    failure, raises a retryable :class:`ProviderCallError`.
    """
    try:
        async with asyncio.timeout(start_timeout):
            response = await client.send(request, stream=True)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise transport_error(exc, label, secrets=secrets) from None
    try:
        yield response
    finally:
        await response.aclose()


async def read_chunks(
    response: httpx.Response,
    *,
    chunk_timeout: float | None,
    label: str,
    secrets: Iterable[str] = (),
) -> AsyncIterator[bytes]:
    """The decoded body, piece by piece, each piece bounded by ``chunk_timeout``."""
    stream = response.aiter_bytes()
    while True:
        try:
            async with asyncio.timeout(chunk_timeout):
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ProviderCallError(
                make_call_error(
                    f"{label}: no data for {chunk_timeout:g}s while reading the response",
                    Classification(FailureKind.TIMEOUT, True),
                )
            ) from None
        except (httpx.HTTPError, OSError) as exc:
            raise transport_error(exc, label, secrets=secrets) from None
        yield chunk


async def read_body(
    response: httpx.Response,
    *,
    timeout: float | None,
    chunk_timeout: float | None,
    label: str,
    secrets: Iterable[str] = (),
) -> bytes:
    """The whole body, bounded overall by ``timeout`` and per piece by ``chunk_timeout``."""
    parts: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            async for chunk in read_chunks(
                response, chunk_timeout=chunk_timeout, label=label, secrets=secrets
            ):
                parts.append(chunk)
    except TimeoutError:
        raise ProviderCallError(
            make_call_error(
                f"{label}: response body not complete after {timeout:g}s",
                Classification(FailureKind.TIMEOUT, True),
            )
        ) from None
    return b"".join(parts)
