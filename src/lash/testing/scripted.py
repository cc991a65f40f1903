"""``ScriptedProvider``: a model that replays scripted replies.

It implements the real ``Provider`` interface, streams its text like a real
provider, and records every request it receives, so tests and benchmarks
exercise the runtime exactly as a network provider would, without a network.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..kernel.llm import (
    LlmCallError,
    LlmRequest,
    LlmResponse,
    LlmUsage,
    ReasoningOutput,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from ..providers.base import (
    ProviderError,
    ReasoningDeltaEvent,
    StreamCallback,
    TextDeltaEvent,
    UsageEvent,
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call in a scripted reply: ``ToolCall("add", {"a": 1, "b": 2})``.

    ``args`` may be a dict or raw argument text (to script malformed JSON).
    ``id`` defaults to ``call_{n}``, counted per provider.
    """

    name: str
    args: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted model reply: text, tool calls, reasoning, or an error.

    ``error`` makes the call fail (a string becomes a non-retryable provider
    error). ``delay`` seconds pass before the reply, for cancellation tests.
    ``chunks`` splits the streamed text into that many deltas.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    reasoning: str | None = None
    usage: LlmUsage | None = None
    terminal_reason: TerminalReason | None = None
    error: LlmCallError | str | None = None
    delay: float = 0.0
    chunks: int = 1


ReplyScript = Sequence[Reply] | Callable[[LlmRequest], Reply | Awaitable[Reply]]


class ScriptedProvider:
    """A provider that answers from a list of ``Reply`` or a function ``request -> Reply``."""

    def __init__(
        self,
        replies: ReplyScript,
        *,
        name: str = "scripted",
        stream: bool = True,
    ) -> None:
        self._name = name
        self._stream = stream
        self._script = replies if callable(replies) else list(replies)
        self._next = 0
        self._call_seq = 0
        self.requests: list[LlmRequest] = []
        """Every request received, in order."""

    @property
    def name(self) -> str:
        """The provider kind."""
        return self._name

    @property
    def calls(self) -> int:
        """How many completions were requested."""
        return len(self.requests)

    async def _reply_for(self, request: LlmRequest) -> Reply:
        script = self._script
        if callable(script):
            reply = script(request)
            if inspect.isawaitable(reply):
                reply = await reply
            return reply
        if self._next >= len(script):
            raise ProviderError(
                LlmCallError(
                    message=f"scripted provider has no reply left for call {self.calls}",
                    code="script_exhausted",
                )
            )
        reply = script[self._next]
        self._next += 1
        return reply

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        """Answer ``request`` with the next scripted reply."""
        self.requests.append(request)
        reply = await self._reply_for(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            error = reply.error
            if isinstance(error, str):
                error = LlmCallError(message=error, code="scripted_error")
            raise ProviderError(error)
        parts: list[Any] = []
        if reply.reasoning:
            parts.append(ReasoningOutput(text=reply.reasoning))
        if reply.text:
            parts.append(TextOutput(text=reply.text))
        for call in reply.tool_calls:
            self._call_seq += 1
            args = call.args
            input_json = args if isinstance(args, str) else msgspec.json.encode(args).decode()
            parts.append(
                ToolCallOutput(
                    call_id=call.id or f"call_{self._call_seq}",
                    tool_name=call.name,
                    input_json=input_json,
                )
            )
        usage = reply.usage or LlmUsage()
        if on_event is not None and self._stream:
            if reply.reasoning:
                await on_event(ReasoningDeltaEvent(text=reply.reasoning))
            for piece in _split(reply.text, reply.chunks):
                await on_event(TextDeltaEvent(text=piece))
            if reply.usage is not None:
                await on_event(UsageEvent(usage=usage))
        reason = reply.terminal_reason or (
            TerminalReason.TOOL_USE if reply.tool_calls else TerminalReason.STOP
        )
        return LlmResponse(
            full_text=reply.text, parts=tuple(parts), usage=usage, terminal_reason=reason
        )


def _split(text: str, chunks: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(chunks, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]
