"""Build a provider from a ``"kind:model"`` string such as ``"openai:gpt-4.1"``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .http import ProviderHandle, RetryPolicy
from .openai_chat import OPENAI_BASE_URL, OpenAIChatProvider

__all__ = [
    "OPENROUTER_BASE_URL",
    "ProviderSelection",
    "parse_provider_string",
    "provider_from_string",
]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"


@dataclass(frozen=True, slots=True)
class _Kind:
    key_env: str
    base_url_env: str
    base_url: str


_KINDS: dict[str, _Kind] = {
    "openai": _Kind("OPENAI_API_KEY", "OPENAI_BASE_URL", OPENAI_BASE_URL),
    "openrouter": _Kind("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", OPENROUTER_BASE_URL),
}


@dataclass(frozen=True, slots=True)
class ProviderSelection:
    """A provider built from a string, and the model name it selected."""

    provider: ProviderHandle
    model: str


def parse_provider_string(spec: str) -> tuple[str, str]:
    """Split ``"kind:model"``; the model may itself contain ``:`` or ``/``."""
    kind, sep, model = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not kind or not model.strip():
        raise ValueError(f"provider string must look like 'openai:gpt-4.1', got {spec!r}")
    if kind not in _KINDS:
        known = ", ".join(sorted(_KINDS))
        raise ValueError(f"unknown provider kind {kind!r} in {spec!r} (known: {known})")
    return kind, model.strip()


def provider_from_string(
    spec: str,
    *,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int | None = None,
    **provider_kwargs: Any,
) -> ProviderSelection:
    """A retrying provider for ``spec`` configured from the environment.

    ``openai:<model>`` reads ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``);
    ``openrouter:<model>`` reads ``OPENROUTER_API_KEY`` and talks to OpenRouter.
    A missing key raises ``ValueError`` naming the variable.
    """
    kind_name, model = parse_provider_string(spec)
    kind = _KINDS[kind_name]
    source = os.environ if env is None else env
    key = source.get(kind.key_env, "").strip()
    if not key:
        raise ValueError(f"{kind.key_env} is not set (needed for provider {kind_name!r})")
    base_url = source.get(kind.base_url_env, "").strip() or kind.base_url
    inner = OpenAIChatProvider(api_key=key, base_url=base_url, name=kind_name, **provider_kwargs)
    handle = ProviderHandle(inner, retry=retry, max_concurrency=max_concurrency)
    return ProviderSelection(provider=handle, model=model)
