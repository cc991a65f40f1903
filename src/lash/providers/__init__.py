"""Model providers: the interface the runtime calls, and HTTP adapters.

The HTTP adapters (``OpenAIChatProvider``, ``ProviderHandle``, ``provider_from_string``
...) load lazily so ``import lash`` does not import httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .classify import FailureKind, classify_failure
    from .http import ProviderCallError, ProviderHandle, RetryPolicy, Timeouts
    from .openai_chat import OpenAIChatProvider
    from .select import ProviderSelection, provider_from_string
    from .sse import SseDecoder, SseError, SseEvent

_LAZY = {
    "FailureKind": "classify",
    "classify_failure": "classify",
    "ProviderCallError": "http",
    "ProviderHandle": "http",
    "RetryPolicy": "http",
    "Timeouts": "http",
    "OpenAIChatProvider": "openai_chat",
    "ProviderSelection": "select",
    "provider_from_string": "select",
    "SseDecoder": "sse",
    "SseError": "sse",
    "SseEvent": "sse",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FailureKind",
    "OpenAIChatProvider",
    "Provider",
    "ProviderCallError",
    "ProviderHandle",
    "ProviderSelection",
    "ProviderError",
    "ReasoningDeltaEvent",
    "RetryPolicy",
    "RetryStatusEvent",
    "SseDecoder",
    "SseError",
    "SseEvent",
    "StreamCallback",
    "StreamEvent",
    "TextDeltaEvent",
    "Timeouts",
    "UsageEvent",
    "classify_failure",
    "provider_from_string",
]
