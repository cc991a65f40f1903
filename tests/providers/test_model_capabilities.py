"""Per-model capabilities: lookups by kind and prefix, OpenRouter names, unknown models."""

from __future__ import annotations

import pytest

from lash.kernel.llm import LlmMessage, LlmRequest, LlmRole
from lash.providers import anthropic, openai_responses
from lash.providers.anthropic import build_messages_body, model_traits
from lash.providers.models import REASONING_VARIANTS, ModelCapabilities, model_capabilities


def test_known_families_match_by_the_longest_prefix() -> None:
    mini = model_capabilities("openai", "gpt-4o-mini-2024-07-18")
    assert (mini.context_window, mini.max_output_tokens, mini.known) == (128_000, 16_384, True)
    assert model_capabilities("openai", "gpt-4.1-2025-04-14").context_window == 1_047_576
    assert model_capabilities("openai-responses", "gpt-5.1").supports_variant("high")
    assert not model_capabilities("openai", "gpt-4.1").supports_variant("high")
    sonnet = model_capabilities("anthropic", "claude-sonnet-4-5-20250929")
    assert (sonnet.max_output_tokens, sonnet.cache_dialect) == (64_000, "breakpoints")
    assert model_capabilities("gemini", "gemini-2.5-flash-lite").cache_dialect == "implicit"
    assert model_capabilities("gemini", "gemini-3-pro-preview").supports_variant("LOW ")


def test_openrouter_names_are_read_under_their_vendor() -> None:
    claude = model_capabilities("openrouter", "anthropic/claude-sonnet-4.5")
    assert claude == model_capabilities("anthropic", "claude-sonnet-4-5")
    gemini = model_capabilities("openrouter", "google/gemini-2.5-pro")
    assert gemini.context_window == 1_048_576
    assert model_capabilities("openrouter", "openai/gpt-4o").max_output_tokens == 16_384


@pytest.mark.parametrize(
    ("kind", "model"),
    [("openai", "my-finetune"), ("vllm", "llama-3"), ("openrouter", "meta/llama-4")],
)
def test_unknown_models_get_marked_defaults(kind: str, model: str) -> None:
    caps = model_capabilities(kind, model)
    assert caps.known is False
    assert caps.reasoning_variants == ()
    assert caps.supports_variant(None)
    assert not caps.supports_variant("high")


def test_the_table_agrees_with_what_the_providers_send() -> None:
    """The Anthropic provider caps max_tokens at the same figure the table publishes."""
    caps: ModelCapabilities = model_capabilities("anthropic", "claude-sonnet-4-5")
    request = LlmRequest(model="claude-sonnet-4-5", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
    body = build_messages_body(request, model=request.model, images={}, stream=False)
    assert body["max_tokens"] <= caps.max_output_tokens


def test_a_provider_selection_reports_its_models_capabilities() -> None:
    from lash.providers.select import provider_from_string

    selected = provider_from_string("anthropic:claude-opus-4-1", env={"ANTHROPIC_API_KEY": "k"})
    assert selected.kind == "anthropic"
    assert selected.capabilities == model_capabilities("anthropic", "claude-opus-4-1")
    assert selected.capabilities.max_output_tokens == 32_000


@pytest.mark.parametrize(
    ("model", "cap"),
    [
        ("claude-3-opus-latest", 4_096),
        ("claude-3-5-sonnet-20241022", 8_192),
        ("claude-3-7-sonnet-20250219", 64_000),
        ("claude-opus-4-1", 32_000),
        ("claude-opus-4-5", 64_000),
        ("claude-opus-4-6", 64_000),
        ("claude-opus-4.7", 64_000),
        ("anthropic.claude-sonnet-4-6-v1:0", 64_000),
        ("claude-opus-5", 64_000),
        ("claude-fable-5-1", 64_000),
    ],
)
def test_claude_output_caps_are_the_anthropic_default_max_tokens(model: str, cap: int) -> None:
    caps = model_capabilities("anthropic", model)
    assert caps.known
    assert caps.max_output_tokens == cap
    assert model_traits(model).default_max_tokens == cap
    assert model_capabilities("openrouter", f"anthropic/{model}") == caps


def test_claude_thinking_variants_follow_the_provider() -> None:
    assert model_capabilities("anthropic", "claude-3-5-haiku-latest").reasoning_variants == ()
    assert model_traits("claude-3-5-haiku-latest").thinking == "none"
    assert model_capabilities("anthropic", "claude-opus-4-6").supports_variant("max")
    assert model_traits("claude-opus-4-6").thinking == "adaptive"


def test_the_variant_names_are_defined_once() -> None:
    assert openai_responses.REASONING_EFFORTS is REASONING_VARIANTS
    assert anthropic.REASONING_VARIANTS is REASONING_VARIANTS
