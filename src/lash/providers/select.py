"""Build a provider from a ``"kind:model"`` string such as ``"openai:gpt-4.1"``.

Each kind names an API, the variable holding its key and the variable that
overrides its base URL:

* ``openai``: OpenAI Chat Completions; ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``.
* ``openrouter``: OpenRouter (Chat Completions); ``OPENROUTER_API_KEY``,
  ``OPENROUTER_BASE_URL``.
* ``openai-responses``: OpenAI Responses; ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``.
* ``anthropic``: Anthropic Messages; ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``
  (the API root; a trailing ``/v1`` is accepted).
* ``gemini``: Google Gemini; ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``;
  ``GEMINI_BASE_URL`` (including the version, e.g. ``.../v1beta``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._env import OPENROUTER_BASE_URL, provider_settings
from .anthropic import AnthropicProvider
from .gemini import GeminiProvider
from .http import ProviderHandle, RateLimit, RetryPolicy
from .models import ModelCapabilities, model_capabilities
from .openai_chat import OpenAIChatProvider
from .openai_responses import OpenAIResponsesProvider

__all__ = [
    "OPENROUTER_BASE_URL",
    "ProviderSelection",
    "known_kinds",
    "parse_provider_string",
    "provider_from_string",
]

_Build = Callable[..., object]
"""``build(api_key=..., base_url=..., name=..., **provider_kwargs)`` → provider."""

_KINDS: dict[str, _Build] = {
    "openai": OpenAIChatProvider,
    "openrouter": OpenAIChatProvider,
    "openai-responses": OpenAIResponsesProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}
"""The class each kind builds; where its key and base URL come from is in ``_env``."""


def known_kinds() -> tuple[str, ...]:
    """The provider kinds a selection string may name, sorted."""
    return tuple(sorted(_KINDS))


@dataclass(frozen=True, slots=True)
class ProviderSelection:
    """A provider built from a string, and the model name it selected."""

    provider: ProviderHandle
    model: str
    kind: str = ""
    """The provider kind (``openai``, ``anthropic``...)."""

    @property
    def capabilities(self) -> ModelCapabilities:
        """The selected model's context window, output cap, reasoning variants and cache dialect."""
        return model_capabilities(self.kind, self.model)


def parse_provider_string(spec: str) -> tuple[str, str]:
    """Split ``"kind:model"``; the model may itself contain ``:`` or ``/``."""
    kind, sep, model = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not kind or not model.strip():
        raise ValueError(f"provider string must look like 'openai:gpt-4.1', got {spec!r}")
    if kind not in _KINDS:
        known = ", ".join(known_kinds())
        raise ValueError(f"unknown provider kind {kind!r} in {spec!r} (known: {known})")
    return kind, model.strip()


def provider_from_string(
    spec: str,
    *,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
    **provider_kwargs: Any,
) -> ProviderSelection:
    """A retrying provider for ``spec`` configured from the environment.

    The kind picks the API, the key variable and the base-URL override (see the
    module table); ``retry``, ``max_concurrency`` and ``rate_limit`` configure the
    :class:`ProviderHandle`, ``provider_kwargs`` go to the provider's
    constructor. A missing key raises ``ValueError`` naming the variable to set.
    """
    kind_name, model = parse_provider_string(spec)
    options: dict[str, Any] = {"name": kind_name, **provider_kwargs}
    inner = _KINDS[kind_name](**provider_settings(kind_name, env), **options)
    handle = ProviderHandle(
        inner, retry=retry, max_concurrency=max_concurrency, rate_limit=rate_limit
    )
    return ProviderSelection(provider=handle, model=model, kind=kind_name)
