"""Where each provider kind finds its key and base URL in the environment.

One table serves :func:`~lash.providers.select.provider_from_string` and the
``*_from_env`` constructors of the provider modules (which :mod:`.select`
imports, so the table lives here, below both).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ENV_KINDS",
    "GEMINI_BASE_URL",
    "OPENAI_BASE_URL",
    "OPENROUTER_BASE_URL",
    "EnvKind",
    "ProviderSettings",
    "provider_settings",
]

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"


@dataclass(frozen=True, slots=True)
class EnvKind:
    """The key variables (first set wins), the base-URL variable and the default URL."""

    key_envs: tuple[str, ...]
    base_url_env: str
    base_url: str

    @property
    def key_names(self) -> str:
        """The key variables as a message names them: ``A (or B)``."""
        first, *rest = self.key_envs
        return f"{first} (or {', '.join(rest)})" if rest else first


class ProviderSettings(TypedDict):
    """The constructor arguments a provider takes from the environment."""

    api_key: str
    base_url: str


ENV_KINDS: dict[str, EnvKind] = {
    "openai": EnvKind(("OPENAI_API_KEY",), "OPENAI_BASE_URL", OPENAI_BASE_URL),
    "openrouter": EnvKind(("OPENROUTER_API_KEY",), "OPENROUTER_BASE_URL", OPENROUTER_BASE_URL),
    "openai-responses": EnvKind(("OPENAI_API_KEY",), "OPENAI_BASE_URL", OPENAI_BASE_URL),
    "anthropic": EnvKind(("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL", ANTHROPIC_BASE_URL),
    "gemini": EnvKind(("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL", GEMINI_BASE_URL),
}


def provider_settings(kind: str, env: Mapping[str, str] | None = None) -> ProviderSettings:
    """``api_key`` and ``base_url`` for provider ``kind`` from ``env`` (default: the process's).

    Values are stripped; a blank key counts as unset and raises ``ValueError``
    naming the variable to set; a blank base URL falls back to the kind's default.
    """
    spec = ENV_KINDS[kind]
    source = os.environ if env is None else env
    key = next((k for name in spec.key_envs if (k := (source.get(name) or "").strip())), "")
    if not key:
        raise ValueError(f"{spec.key_names} is not set (needed for provider {kind!r})")
    base_url = (source.get(spec.base_url_env) or "").strip() or spec.base_url
    return ProviderSettings(api_key=key, base_url=base_url)
