"""Model providers: the interface the runtime calls, and HTTP adapters.

The HTTP adapters (``OpenAIChatProvider``, ``OpenAIResponsesProvider``,
``AnthropicProvider``, ``GeminiProvider``, ``ProviderHandle``, ``provider_from_string``
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
    from .anthropic import AnthropicProvider, anthropic_from_env
    from .classify import FailureKind, classify_failure
    from .gemini import GeminiProvider, gemini_from_env
    from .http import ProviderCallError, ProviderHandle, RateLimit, RetryPolicy, Timeouts
    from .openai_chat import OpenAIChatProvider, openai_from_env
    from .openai_responses import OpenAIResponsesProvider, openai_responses_from_env
    from .select import ProviderSelection, provider_from_string
    from .sse import SseDecoder, SseError, SseEvent

_LAZY = {
    "AnthropicProvider": "anthropic",
    "anthropic_from_env": "anthropic",
    "FailureKind": "classify",
    "classify_failure": "classify",
    "GeminiProvider": "gemini",
    "gemini_from_env": "gemini",
    "ProviderCallError": "http",
    "ProviderHandle": "http",
    "RateLimit": "http",
    "RetryPolicy": "http",
    "Timeouts": "http",
    "OpenAIChatProvider": "openai_chat",
    "openai_from_env": "openai_chat",
    "OpenAIResponsesProvider": "openai_responses",
    "openai_responses_from_env": "openai_responses",
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
    "AnthropicProvider",
    "FailureKind",
    "GeminiProvider",
    "OpenAIChatProvider",
    "OpenAIResponsesProvider",
    "Provider",
    "ProviderCallError",
    "ProviderHandle",
    "ProviderSelection",
    "ProviderError",
    "RateLimit",
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
    "anthropic_from_env",
    "classify_failure",
    "gemini_from_env",
    "openai_from_env",
    "openai_responses_from_env",
    "provider_from_string",
]
