"""The provider interface: complete a request, streaming events as they arrive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias, runtime_checkable

import msgspec

from ..kernel.llm import LlmCallError, LlmRequest, LlmResponse, LlmUsage

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class TextDeltaEvent(msgspec.Struct, tag="text_delta", tag_field="type", **_S):
    """A piece of assistant text; ``item_id`` groups pieces of one provider text item."""

    text: str
    item_id: str | None = None


class ReasoningDeltaEvent(msgspec.Struct, tag="reasoning_delta", tag_field="type", **_S):
    """A piece of visible reasoning."""

    text: str
    item_id: str | None = None


class UsageEvent(msgspec.Struct, tag="usage", tag_field="type", **_S):
    """Usage reported mid-stream."""

    usage: LlmUsage


class RetryStatusEvent(msgspec.Struct, tag="retry_status", tag_field="type", **_S):
    """The provider will retry after a failure."""

    wait_seconds: float
    attempt: int
    max_attempts: int
    reason: str


StreamEvent: TypeAlias = TextDeltaEvent | ReasoningDeltaEvent | UsageEvent | RetryStatusEvent
StreamCallback: TypeAlias = Callable[[StreamEvent], Awaitable[None]]


class ProviderError(Exception):
    """A model call failed; ``error`` is the value that crosses the effect boundary."""

    def __init__(self, error: LlmCallError) -> None:
        super().__init__(error.message)
        self.error = error


@runtime_checkable
class Provider(Protocol):
    """Completes model requests.

    ``complete`` returns the whole response and may call ``on_event`` with
    stream events first. Failures raise ``ProviderError``. Requests carry
    attachment references; a provider resolves bytes itself.
    """

    @property
    def name(self) -> str:
        """A short identifier of the provider kind (``openai``, ``scripted``, ...)."""

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        """Complete ``request``."""
