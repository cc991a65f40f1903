"""What a model can do: context window, output cap, reasoning variants, prompt-cache dialect.

``model_capabilities("anthropic", "claude-sonnet-4-5")`` looks a model up by
provider kind and the longest matching name prefix (dated snapshots such as
``gpt-4.1-2025-04-14`` match their family); Claude names are read by family
and version (``claude-opus-4.6``, ``anthropic.claude-haiku-4-5-v1:0``), so the
Anthropic provider's default ``max_tokens`` is this table's output cap. Unknown
models get conservative defaults with ``known=False``, so a caller can tell a
guess from a fact.

The figures are the vendors' published limits for the model families lash
knows; ``reasoning_variants`` are the ``model_variant`` values the provider
accepts for that model (``()``: the model does not reason on request).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REASONING_VARIANTS",
    "CacheDialect",
    "ModelCapabilities",
    "claude_version",
    "model_capabilities",
]

CacheDialect = Literal["automatic", "breakpoints", "implicit", "none"]
"""How prompt caching works: ``automatic`` (OpenAI: long shared prefixes are
cached by the server), ``breakpoints`` (Anthropic: the request marks cache
points), ``implicit`` (Gemini: the server caches repeated prefixes and reports
hits), ``none`` (not known to cache)."""

REASONING_VARIANTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
"""The ``model_variant`` names every reasoning provider maps (OpenAI Chat and
Responses send them as the reasoning effort, Anthropic as thinking, Gemini as a
thinking budget or level; Gemini also takes ``auto``/``dynamic``)."""

_OPENAI_EFFORTS = REASONING_VARIANTS
_O_SERIES = REASONING_VARIANTS
_CLAUDE_THINKING = REASONING_VARIANTS
_GEMINI_BUDGETS = (*REASONING_VARIANTS, "auto", "dynamic")
_GEMINI_LEVELS = (*REASONING_VARIANTS, "auto", "dynamic")


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

# "claude-sonnet-4-5-20250929", "claude-opus-4.6", "anthropic.claude-haiku-4-5-v1:0"
_CLAUDE_NEW_NAME = re.compile(r"claude-([a-z]+)-(\d{1,2})(?:[-.](\d{1,2}))?(?!\d)")
# "claude-3-5-sonnet-20241022", "claude-3-opus-latest"
_CLAUDE_OLD_NAME = re.compile(r"claude-(\d)(?:[-.](\d))?-([a-z]+)")


def claude_version(model: str) -> tuple[str, int, int] | None:
    """``(family, major, minor)`` read from a Claude model name; ``None`` if it is not one."""
    name = model.lower()
    old = _CLAUDE_OLD_NAME.search(name)
    if old is not None:
        return old.group(3), int(old.group(1)), int(old.group(2) or 0)
    new = _CLAUDE_NEW_NAME.search(name)
    if new is None:
        return None
    return new.group(1), int(new.group(2)), int(new.group(3) or 0)


def _claude(model: str) -> ModelCapabilities:
    """Claude's limits by family and version.

    ======================================  ======  ========
    model family                            output  thinking
    ======================================  ======  ========
    Claude 2 and Instant                     4 096  no
    Claude 3 (haiku, sonnet, opus)           4 096  no
    Claude 3.5                               8 192  no
    Claude 3.7 Sonnet                       64 000  yes
    Claude Opus 4 / 4.1                     32 000  yes
    other Claude 4.x, Claude 5 and later    64 000  yes
    ======================================  ======  ========
    """
    version = claude_version(model)
    if version is None:
        return _DEFAULT
    family, major, minor = version
    if major < 3:
        return ModelCapabilities(100_000, 4_096, (), "none")
    if major == 3 and minor < 7:
        return ModelCapabilities(200_000, 8_192 if minor == 5 else 4_096, (), "breakpoints")
    if major == 4 and family == "opus" and minor < 5:
        return ModelCapabilities(200_000, 32_000, _CLAUDE_THINKING, "breakpoints")
    return ModelCapabilities(200_000, 64_000, _CLAUDE_THINKING, "breakpoints")


def model_capabilities(kind: str, model: str) -> ModelCapabilities:
    """The capabilities of ``model`` under provider ``kind`` (``openai``, ``anthropic``...).

    OpenRouter names carry the vendor (``anthropic/claude-sonnet-4.5``); the part
    after the slash is looked up under that vendor.
    """
    kind = _ALIASES.get(kind.strip().lower(), kind.strip().lower())
    name = model.strip().lower()
    if kind == "openrouter" and "/" in name:
        vendor, _, name = name.partition("/")
        kind = {"google": "gemini"}.get(vendor, vendor)
    if kind == "anthropic":
        return _claude(name)
    best: tuple[int, ModelCapabilities] | None = None
    for prefix, caps in _TABLE.get(kind, ()):
        if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
            best = (len(prefix), caps)
    return _DEFAULT if best is None else best[1]
