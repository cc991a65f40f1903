"""What a model can do: context window, output cap, reasoning variants, prompt-cache dialect.

``model_capabilities("anthropic", "claude-sonnet-4-5")`` looks a model up by
provider kind and the longest matching name prefix (dated snapshots such as
``gpt-4.1-2025-04-14`` match their family). Unknown models get conservative
defaults with ``known=False``, so a caller can tell a guess from a fact.

The figures are the vendors' published limits for the model families lash
knows; ``reasoning_variants`` are the ``model_variant`` values the provider
accepts for that model (``()``: the model does not reason on request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CacheDialect", "ModelCapabilities", "model_capabilities"]

CacheDialect = Literal["automatic", "breakpoints", "implicit", "none"]
"""How prompt caching works: ``automatic`` (OpenAI: long shared prefixes are
cached by the server), ``breakpoints`` (Anthropic: the request marks cache
points), ``implicit`` (Gemini: the server caches repeated prefixes and reports
hits), ``none`` (not known to cache)."""

# The variant names each provider maps (see the provider modules), per model family.
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_OPENAI_EFFORTS = _EFFORTS
_O_SERIES = _EFFORTS
_CLAUDE_THINKING = _EFFORTS
_GEMINI_BUDGETS = (*_EFFORTS, "auto", "dynamic")
_GEMINI_LEVELS = (*_EFFORTS, "auto", "dynamic")


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """Limits and features of one model family."""

    context_window: int
    """Input plus output tokens the model accepts."""
    max_output_tokens: int
    """The largest output cap the vendor allows."""
    reasoning_variants: tuple[str, ...] = ()
    cache_dialect: CacheDialect = "none"
    known: bool = True
    """False when the model was not in the table and these are defaults."""

    def supports_variant(self, variant: str | None) -> bool:
        """True for no variant, or one this model accepts."""
        return variant is None or variant.strip().lower() in self.reasoning_variants


_TABLE: dict[str, tuple[tuple[str, ModelCapabilities], ...]] = {
    "openai": (
        ("gpt-5", ModelCapabilities(400_000, 128_000, _OPENAI_EFFORTS, "automatic")),
        ("gpt-4.1", ModelCapabilities(1_047_576, 32_768, (), "automatic")),
        ("gpt-4o-mini", ModelCapabilities(128_000, 16_384, (), "automatic")),
        ("gpt-4o", ModelCapabilities(128_000, 16_384, (), "automatic")),
        ("o4-mini", ModelCapabilities(200_000, 100_000, _O_SERIES, "automatic")),
        ("o3", ModelCapabilities(200_000, 100_000, _O_SERIES, "automatic")),
        ("o1", ModelCapabilities(200_000, 100_000, _O_SERIES, "automatic")),
    ),
    "anthropic": (
        ("claude-opus-4", ModelCapabilities(200_000, 32_000, _CLAUDE_THINKING, "breakpoints")),
        ("claude-sonnet-4", ModelCapabilities(200_000, 64_000, _CLAUDE_THINKING, "breakpoints")),
        ("claude-haiku-4", ModelCapabilities(200_000, 64_000, _CLAUDE_THINKING, "breakpoints")),
        (
            "claude-3-7-sonnet",
            ModelCapabilities(200_000, 64_000, _CLAUDE_THINKING, "breakpoints"),
        ),
        ("claude-3-5-haiku", ModelCapabilities(200_000, 8_192, (), "breakpoints")),
        ("claude-3-5-sonnet", ModelCapabilities(200_000, 8_192, (), "breakpoints")),
    ),
    "gemini": (
        ("gemini-3", ModelCapabilities(1_048_576, 65_536, _GEMINI_LEVELS, "implicit")),
        ("gemini-2.5-pro", ModelCapabilities(1_048_576, 65_536, _GEMINI_BUDGETS, "implicit")),
        (
            "gemini-2.5-flash",
            ModelCapabilities(1_048_576, 65_536, _GEMINI_BUDGETS, "implicit"),
        ),
        ("gemini-2.0-flash", ModelCapabilities(1_048_576, 8_192, (), "implicit")),
    ),
}
_ALIASES = {"openai-responses": "openai", "openrouter": "openrouter"}
_DEFAULT = ModelCapabilities(128_000, 4_096, (), "none", known=False)


def model_capabilities(kind: str, model: str) -> ModelCapabilities:
    """The capabilities of ``model`` under provider ``kind`` (``openai``, ``anthropic``...).

    OpenRouter names carry the vendor (``anthropic/claude-sonnet-4.5``); the part
    after the slash is looked up under that vendor, with dots read as dashes.
    """
    kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    name = model.strip().lower()
    if kind == "openrouter" and "/" in name:
        vendor, _, rest = name.partition("/")
        kind = {"google": "gemini"}.get(vendor, vendor)
        name = rest if kind != "anthropic" else rest.replace(".", "-")
    best: tuple[int, ModelCapabilities] | None = None
    for prefix, caps in _TABLE.get(kind, ()):
        if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), caps)
    return _DEFAULT if best is None else best[1]
