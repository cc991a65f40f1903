"""Every provider kind ``provider_from_string`` (and so ``LashCore``) accepts, end to end.

Each kind is built from an environment, pointed at a loopback server through
its base-URL variable, and made to answer a recorded vendor reply. The vendor
failure wording the classifier learned for these kinds (Anthropic's 529,
Gemini's token-limit message) is checked both in the table and over HTTP.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from provider_support import API_KEY, Reply, fixture_reply, load_fixtures, run, serving

import lash.providers as providers_pkg
from lash.core import ConfigError, LashCore
from lash.kernel.llm import LlmMessage, LlmRequest, LlmRole, TerminalReason
from lash.providers.anthropic import ANTHROPIC_BASE_URL, AnthropicProvider
from lash.providers.base import ProviderError, RetryStatusEvent, StreamEvent
from lash.providers.classify import FailureKind, classify_failure
from lash.providers.gemini import GEMINI_BASE_URL, GeminiProvider
from lash.providers.http import ProviderHandle, RateLimit, RetryPolicy
from lash.providers.openai_chat import OPENAI_BASE_URL, OpenAIChatProvider
from lash.providers.openai_responses import OpenAIResponsesProvider
from lash.providers.select import (
    OPENROUTER_BASE_URL,
    known_kinds,
    parse_provider_string,
    provider_from_string,
)


@dataclass(frozen=True)
class Kind:
    kind: str
    model: str
    key_env: str
    base_env: str
    cls: type
    default_base: str
    fixture: str  # recorded API folder whose text_nonstream reply the kind must read
    base_suffix: str  # what to append to the server root for the base-URL variable
    path: str  # request path the server must see
    auth_header: str
    auth_value: str


KINDS = [
    Kind(
        "openai",
        "gpt-4.1",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        OpenAIChatProvider,
        OPENAI_BASE_URL,
        "openai-chat",
        "/v1",
        "/v1/chat/completions",
        "authorization",
        f"Bearer {API_KEY}",
    ),
    Kind(
        "openrouter",
        "anthropic/claude-sonnet-4",
        "OPENROUTER_API_KEY",
        "OPENROUTER_BASE_URL",
        OpenAIChatProvider,
        OPENROUTER_BASE_URL,
        "openai-chat",
        "/api/v1",
        "/api/v1/chat/completions",
        "authorization",
        f"Bearer {API_KEY}",
    ),
    Kind(
        "openai-responses",
        "gpt-5",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        OpenAIResponsesProvider,
        OPENAI_BASE_URL,
        "openai-responses",
        "/v1",
        "/v1/responses",
        "authorization",
        f"Bearer {API_KEY}",
    ),
    Kind(
        "anthropic",
        "claude-sonnet-4-5",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        AnthropicProvider,
        ANTHROPIC_BASE_URL,
        "anthropic",
        "",
        "/v1/messages",
        "x-api-key",
        API_KEY,
    ),
    Kind(
        "gemini",
        "gemini-2.5-flash",
        "GEMINI_API_KEY",
        "GEMINI_BASE_URL",
        GeminiProvider,
        GEMINI_BASE_URL,
        "gemini",
        "/v1beta",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "x-goog-api-key",
        API_KEY,
    ),
]
BY_NAME = {k.kind: k for k in KINDS}
ALL_KEY_VARS = {
    "OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
}
ALL_BASE_VARS = {k.base_env for k in KINDS}


def recorded_text_reply(api: str) -> tuple[Reply, str]:
    fixture = next(f for f in load_fixtures(api) if f.name == "text_nonstream")
    return fixture_reply(fixture), fixture.expected["text"]


def root(base_url: str) -> str:
    """The provider_support server URL without its ``/v1`` suffix."""
    return base_url.removesuffix("/v1")


def hello(model: str) -> LlmRequest:
    return LlmRequest(model=model, messages=(LlmMessage.text(LlmRole.USER, "hi"),))


# ---------------------------------------------------------------- construction


def test_known_kinds_are_the_five_documented() -> None:
    assert known_kinds() == tuple(sorted(BY_NAME))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_kind_builds_its_provider_with_the_default_base_url(kind: Kind) -> None:
    selection = provider_from_string(f"{kind.kind}:{kind.model}", env={kind.key_env: API_KEY})
    assert selection.model == kind.model
    assert isinstance(selection.provider, ProviderHandle)
    inner: Any = selection.provider.provider
    assert type(inner) is kind.cls
    assert inner.name == selection.provider.name == kind.kind
    assert inner.base_url == kind.default_base
    assert API_KEY not in repr(inner)
    run(inner.aclose())


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_missing_key_names_the_variable(kind: Kind) -> None:
    unrelated = {name: "set" for name in ALL_KEY_VARS if name != kind.key_env}
    if kind.kind == "gemini":
        unrelated.pop("GOOGLE_API_KEY")
    with pytest.raises(ValueError, match=kind.key_env) as caught:
        provider_from_string(f"{kind.kind}:{kind.model}", env={**unrelated, kind.key_env: "  "})
    assert f"needed for provider {kind.kind!r}" in str(caught.value)


def test_gemini_names_both_key_variables_and_takes_either() -> None:
    with pytest.raises(ValueError, match=r"GEMINI_API_KEY \(or GOOGLE_API_KEY\) is not set"):
        provider_from_string("gemini:gemini-2.5-flash", env={})
    environments = [
        {"GOOGLE_API_KEY": "g-key"},
        {"GEMINI_API_KEY": "gem-key", "GOOGLE_API_KEY": "g-key"},
        {"GEMINI_API_KEY": " ", "GOOGLE_API_KEY": "g-key"},
    ]

    async def keys() -> list[str]:
        reply, _ = recorded_text_reply("gemini")
        async with serving(reply) as server:
            for env in environments:
                env = {**env, "GEMINI_BASE_URL": f"{root(server.base_url)}/v1beta"}
                selection = provider_from_string("gemini:gemini-2.5-flash", env=env)
                inner: Any = selection.provider.provider
                try:
                    await selection.provider.complete(hello(selection.model))
                finally:
                    await inner.aclose()
            return [r.headers["x-goog-api-key"] for r in server.received]

    assert run(keys()) == ["g-key", "gem-key", "g-key"]


def test_unknown_kind_lists_every_known_kind() -> None:
    with pytest.raises(ValueError, match="unknown provider kind 'claude'") as caught:
        provider_from_string("claude:sonnet", env={})
    message = str(caught.value)
    for kind in KINDS:
        assert repr(kind.kind)[1:-1] in message
    assert "known: anthropic, gemini, openai, openai-responses, openrouter" in message


def test_kind_and_model_parsing() -> None:
    assert parse_provider_string(" Anthropic:claude-sonnet-4-5 ") == (
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert parse_provider_string("openai-responses:ft:gpt-5:org::x") == (
        "openai-responses",
        "ft:gpt-5:org::x",
    )
    with pytest.raises(ValueError, match="must look like"):
        parse_provider_string("anthropic:  ")


def test_provider_kwargs_reach_the_provider() -> None:
    selection = provider_from_string(
        "anthropic:claude-sonnet-4-5", env={"ANTHROPIC_API_KEY": API_KEY}, max_tokens=123
    )
    inner: Any = selection.provider.provider
    assert inner.max_tokens == 123
    limit = RateLimit(requests=5, tokens=1000)
    limited = provider_from_string(
        "openai-responses:gpt-5",
        env={"OPENAI_API_KEY": API_KEY},
        rate_limit=limit,
        max_concurrency=2,
        retry=RetryPolicy.disabled(),
    )
    assert limited.provider.rate_limit == limit
    assert limited.provider.retry == RetryPolicy.disabled()
    gemini = provider_from_string(
        "gemini:gemini-2.5-flash", env={"GEMINI_API_KEY": API_KEY}, sse=False
    )
    assert gemini.provider.provider.sse is False  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="max_tokens"):
        provider_from_string(
            "gemini:gemini-2.5-flash", env={"GEMINI_API_KEY": API_KEY}, max_tokens=1
        )


def test_package_exports_the_adapters_lazily() -> None:
    from lash.providers import anthropic, gemini, openai_chat, openai_responses

    assert providers_pkg.AnthropicProvider is anthropic.AnthropicProvider
    assert providers_pkg.anthropic_from_env is anthropic.anthropic_from_env
    assert providers_pkg.GeminiProvider is gemini.GeminiProvider
    assert providers_pkg.gemini_from_env is gemini.gemini_from_env
    assert providers_pkg.OpenAIResponsesProvider is openai_responses.OpenAIResponsesProvider
    assert providers_pkg.openai_responses_from_env is openai_responses.openai_responses_from_env
    assert providers_pkg.openai_from_env is openai_chat.openai_from_env
    for name in providers_pkg.__all__:
        assert getattr(providers_pkg, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'NoSuchProvider'"):
        _ = providers_pkg.NoSuchProvider
    probe = (
        "import sys, lash.providers\n"
        "assert 'httpx' not in sys.modules, 'lash.providers imported httpx eagerly'\n"
        "lash.providers.GeminiProvider\n"
        "assert 'httpx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# ---------------------------------------------------------------- a request reaches the override


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_base_url_override_is_where_the_request_goes(kind: Kind) -> None:
    reply, text = recorded_text_reply(kind.fixture)

    async def main() -> tuple[str, Any]:
        async with serving(reply) as server:
            env = {kind.key_env: API_KEY, kind.base_env: root(server.base_url) + kind.base_suffix}
            selection = provider_from_string(f"{kind.kind}:{kind.model}", env=env)
            inner: Any = selection.provider.provider
            try:
                response = await selection.provider.complete(hello(selection.model))
            finally:
                await inner.aclose()
            return response.full_text, server.received

    full_text, received = run(main())
    assert full_text == text
    assert len(received) == 1
    request = received[0]
    assert (request.method, request.path) == ("POST", kind.path)
    assert request.headers[kind.auth_header] == kind.auth_value
    body = request.json()
    if kind.kind != "gemini":  # Gemini names the model in the URL
        assert body["model"] == kind.model


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_lash_core_runs_a_turn_on_each_kind(kind: Kind, monkeypatch: pytest.MonkeyPatch) -> None:
    reply, text = recorded_text_reply(kind.fixture)
    for name in ALL_KEY_VARS | ALL_BASE_VARS:
        monkeypatch.delenv(name, raising=False)

    async def main() -> tuple[str, Any, str, str]:
        async with serving(reply) as server:
            monkeypatch.setenv(kind.key_env, API_KEY)
            monkeypatch.setenv(kind.base_env, root(server.base_url) + kind.base_suffix)
            core = LashCore(provider=f"{kind.kind}:{kind.model}", store="memory://")
            inner: Any = core.provider.provider  # type: ignore[attr-defined]
            client = inner._http()
            try:
                async with core.session("s-1") as session:
                    result = await session.run("hi")
            finally:
                await core.aclose()
            assert client.is_closed, "the core closes a provider it built from a string"
            return result.text, server.received, core.model, type(inner).__name__

    result_text, received, model, cls = run(main(), timeout=20)
    assert result_text == text
    assert model == kind.model
    assert cls == kind.cls.__name__
    assert received[0].path.startswith(kind.path.rsplit(":", 1)[0])
    assert received[0].headers[kind.auth_header] == kind.auth_value


def test_lash_core_reports_a_missing_key_for_the_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        LashCore(provider="anthropic:claude-sonnet-4-5", store="memory://")


# ---------------------------------------------------------------- vendor failure wording


OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
GEMINI_OVERFLOW = (
    b'{"error": {"code": 400, "message": "The input token count (1210479) exceeds the '
    b'maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}'
)


def test_529_is_retryable() -> None:
    verdict = classify_failure(status=529, code="overloaded_error", message="Overloaded")
    assert (verdict.kind, verdict.retryable) == (FailureKind.SERVER_ERROR, True)
    assert classify_failure(status=529).retryable


@pytest.mark.parametrize(
    "message",
    [
        "The input token count (1210479) exceeds the maximum number of tokens allowed (1048576).",
        "Request exceeds the maximum number of tokens for this model",
    ],
)
def test_gemini_token_limit_wording_is_context_overflow(message: str) -> None:
    verdict = classify_failure(status=400, code="INVALID_ARGUMENT", message=message)
    assert verdict.kind is FailureKind.CONTEXT_OVERFLOW
    assert not verdict.retryable
    assert verdict.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    # the same wording on a rate-limit reply stays a rate limit
    throttled = classify_failure(status=429, message=message + " Quota exceeded per minute.")
    assert throttled.kind is FailureKind.RATE_LIMITED


def test_anthropic_kind_retries_a_529_and_then_answers() -> None:
    reply, text = recorded_text_reply("anthropic")
    overloaded = Reply(status=529, chunks=[OVERLOADED])
    events: list[StreamEvent] = []

    async def collect(event: StreamEvent) -> None:
        events.append(event)

    async def main() -> tuple[str, int]:
        async with serving(overloaded, reply) as server:
            env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": root(server.base_url)}
            selection = provider_from_string(
                "anthropic:claude-sonnet-4-5", env=env, retry=RetryPolicy(base_delay=0.0)
            )
            inner: Any = selection.provider.provider
            try:
                response = await selection.provider.complete(hello(selection.model), collect)
            finally:
                await inner.aclose()
            return response.full_text, len(server.received)

    assert run(main()) == (text, 2)
    retries = [e for e in events if isinstance(e, RetryStatusEvent)]
    assert len(retries) == 1
    assert (retries[0].attempt, retries[0].wait_seconds) == (1, 0.0)
    assert "529" in retries[0].reason
    assert "Overloaded" in retries[0].reason


def test_gemini_kind_reports_context_overflow() -> None:
    overflow = Reply(status=400, content_type="application/json; charset=UTF-8")
    overflow.chunks.append(GEMINI_OVERFLOW)

    async def main() -> ProviderError:
        async with serving(overflow) as server:
            env = {"GEMINI_API_KEY": API_KEY, "GEMINI_BASE_URL": root(server.base_url)}
            selection = provider_from_string("gemini:gemini-2.5-flash", env=env)
            inner: Any = selection.provider.provider
            try:
                await selection.provider.complete(hello(selection.model))
            except ProviderError as exc:
                return exc
            finally:
                await inner.aclose()
            raise AssertionError("a 400 overflow reply did not raise")

    error = asyncio.run(main()).error
    assert error.code == FailureKind.CONTEXT_OVERFLOW.value
    assert error.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    assert not error.retryable
    assert "exceeds the maximum number of tokens" in error.message


FROM_ENV = {
    "openai": providers_pkg.openai_from_env,
    "openai-responses": providers_pkg.openai_responses_from_env,
    "anthropic": providers_pkg.anthropic_from_env,
    "gemini": providers_pkg.gemini_from_env,
}


@pytest.mark.parametrize("kind", [BY_NAME[name] for name in FROM_ENV], ids=lambda k: k.kind)
def test_from_env_reads_the_environment_like_provider_from_string(kind: Kind) -> None:
    from_env: Any = FROM_ENV[kind.kind]
    with pytest.raises(ValueError, match=f"{kind.key_env}.* is not set"):
        from_env(env={kind.key_env: " \t"})
    env = {kind.key_env: f" {API_KEY} ", kind.base_env: " http://127.0.0.1:9/v1 "}
    built = from_env(env=env)
    selected: Any = provider_from_string(f"{kind.kind}:{kind.model}", env=env).provider.provider
    assert type(built) is type(selected) is kind.cls
    assert (built._api_key, built.base_url) == (API_KEY, selected.base_url)
    assert built.base_url.startswith("http://127.0.0.1:9")
    run(built.aclose())
    run(selected.aclose())
