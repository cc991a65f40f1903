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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .anthropic import ANTHROPIC_BASE_URL, AnthropicProvider
from .gemini import GEMINI_BASE_URL, GeminiProvider
from .http import ProviderHandle, RateLimit, RetryPolicy
from .models import ModelCapabilities, model_capabilities
from .openai_chat import OPENAI_BASE_URL, OpenAIChatProvider
from .openai_responses import OpenAIResponsesProvider

__all__ = [
    "OPENROUTER_BASE_URL",
    "ProviderSelection",
    "known_kinds",
    "parse_provider_string",
    "provider_from_string",
]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

_Build = Callable[..., object]
"""``build(api_key=..., base_url=..., name=..., **provider_kwargs)`` → provider."""


@dataclass(frozen=True, slots=True)
class _Kind:
    key_envs: tuple[str, ...]
    base_url_env: str
    base_url: str
    build: _Build

    @property
    def key_names(self) -> str:
        first, *rest = self.key_envs
        return f"{first} (or {', '.join(rest)})" if rest else first


_KINDS: dict[str, _Kind] = {
    "openai": _Kind(("OPENAI_API_KEY",), "OPENAI_BASE_URL", OPENAI_BASE_URL, OpenAIChatProvider),
    "openrouter": _Kind(
        ("OPENROUTER_API_KEY",), "OPENROUTER_BASE_URL", OPENROUTER_BASE_URL, OpenAIChatProvider
    ),
    "openai-responses": _Kind(
        ("OPENAI_API_KEY",), "OPENAI_BASE_URL", OPENAI_BASE_URL, OpenAIResponsesProvider
    ),
    "anthropic": _Kind(
        ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL", ANTHROPIC_BASE_URL, AnthropicProvider
    ),
    "gemini": _Kind(
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL", GEMINI_BASE_URL, GeminiProvider
    ),
}


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
    kind = _KINDS[kind_name]
    source = os.environ if env is None else env
    key = next((k for name in kind.key_envs if (k := source.get(name, "").strip())), "")
    if not key:
        raise ValueError(f"{kind.key_names} is not set (needed for provider {kind_name!r})")
    base_url = source.get(kind.base_url_env, "").strip() or kind.base_url
    options: dict[str, Any] = {"name": kind_name, **provider_kwargs}
    inner = kind.build(api_key=key, base_url=base_url, **options)
    handle = ProviderHandle(
        inner, retry=retry, max_concurrency=max_concurrency, rate_limit=rate_limit
    )
    return ProviderSelection(provider=handle, model=model, kind=kind_name)
