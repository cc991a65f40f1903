"""Model providers: the interface the runtime calls, and (later) HTTP adapters."""

from .base import (
    Provider,
    ProviderError,
    ReasoningDeltaEvent,
    RetryStatusEvent,
    StreamCallback,
    StreamEvent,
    TextDeltaEvent,
    UsageEvent,
)

__all__ = [
    "Provider",
    "ProviderError",
    "ReasoningDeltaEvent",
    "RetryStatusEvent",
    "StreamCallback",
    "StreamEvent",
    "TextDeltaEvent",
    "UsageEvent",
]
