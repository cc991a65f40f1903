"""The failure classifier's table, backoff arithmetic, and provider strings."""

from __future__ import annotations

import pytest
from provider_support import API_KEY, run

from lash.kernel.llm import TerminalReason
from lash.providers.classify import FailureKind, classify_failure, make_call_error, redact
from lash.providers.http import ProviderHandle, RetryPolicy, Timeouts, parse_retry_after
from lash.providers.openai_chat import OpenAIChatProvider
from lash.providers.select import OPENROUTER_BASE_URL, provider_from_string


@pytest.mark.parametrize(
    ("kwargs", "kind", "retryable"),
    [
        ({"status": 408}, FailureKind.HTTP_RETRYABLE, True),
        ({"status": 409}, FailureKind.HTTP_RETRYABLE, True),
        ({"status": 425}, FailureKind.HTTP_RETRYABLE, True),
        ({"status": 429, "message": "Rate limit reached"}, FailureKind.RATE_LIMITED, True),
        ({"status": 429, "message": "Quota exceeded per minute"}, FailureKind.RATE_LIMITED, True),
        ({"status": 429, "code": "insufficient_quota"}, FailureKind.QUOTA, False),
        ({"status": 500}, FailureKind.SERVER_ERROR, True),
        ({"status": 502}, FailureKind.SERVER_ERROR, True),
        ({"status": 503}, FailureKind.SERVER_ERROR, True),
        ({"status": 504}, FailureKind.SERVER_ERROR, True),
        ({"status": 501}, FailureKind.SERVER_ERROR, False),
        ({"status": 501, "code": "overloaded_error"}, FailureKind.SERVER_ERROR, True),
        ({"status": 520, "code": "api_error"}, FailureKind.SERVER_ERROR, True),
        ({"status": 505, "code": "invalid_request_error"}, FailureKind.SERVER_ERROR, False),
        (
            {"status": 500, "code": "api_error", "message": "prompt is too long: context window"},
            FailureKind.CONTEXT_OVERFLOW,
            False,
        ),
        ({"status": 401}, FailureKind.AUTH, False),
        ({"status": 403}, FailureKind.AUTH, False),
        ({"status": 400}, FailureKind.VALIDATION, False),
        ({"status": 413}, FailureKind.VALIDATION, False),
        ({"status": 422}, FailureKind.VALIDATION, False),
        ({"status": 404, "code": "model_not_found"}, FailureKind.UNSUPPORTED, False),
        ({"status": 404}, FailureKind.NOT_FOUND, False),
        (
            {"status": 400, "code": "context_length_exceeded"},
            FailureKind.CONTEXT_OVERFLOW,
            False,
        ),
        (
            {"status": 429, "message": "Request too large: tokens per minute (TPM) limit"},
            FailureKind.RATE_LIMITED,
            True,
        ),
        ({"status": 400, "code": "content_filter"}, FailureKind.CONTENT_FILTER, False),
        ({"transport": True}, FailureKind.TRANSPORT, True),
        ({"transport": True, "timeout": True}, FailureKind.TIMEOUT, True),
        ({"in_stream": True, "code": "server_error"}, FailureKind.STREAM_ERROR, True),
        ({"in_stream": True, "code": "invalid_prompt"}, FailureKind.STREAM_ERROR, False),
    ],
)
def test_classifier(kwargs: dict[str, object], kind: FailureKind, retryable: bool) -> None:
    verdict = classify_failure(**kwargs)  # type: ignore[arg-type]
    assert (verdict.kind, verdict.retryable) == (kind, retryable)


def test_terminal_reasons() -> None:
    overflow = classify_failure(status=400, message="This model's maximum context length is 8k")
    assert overflow.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    flagged = classify_failure(status=400, code="content_filter")
    assert flagged.terminal_reason is TerminalReason.CONTENT_FILTER


def test_redaction() -> None:
    verdict = classify_failure(status=401)
    error = make_call_error(f"bad key {API_KEY}", verdict, raw=API_KEY, secrets=[API_KEY])
    assert API_KEY not in error.message
    assert error.raw == "[REDACTED]"
    assert error.code == "auth"
    assert redact("abc", ["", "a"]) == "abc"  # trivial secrets are not "redacted"


def test_backoff_and_retry_after() -> None:
    policy = RetryPolicy()
    assert [policy.delay(i, None, 0.0) for i in range(5)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(0, 7.0, 0.0) == 7.0
    assert policy.delay(0, 600.0, 0.0) == 60.0
    assert RetryPolicy(jitter=1.0).delay(0, None, 0.25) == 2.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({"retry-after": "-3"}) is None
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_timeouts_response_start() -> None:
    assert Timeouts().response_start(streaming=False) == 300.0
    assert Timeouts().response_start(streaming=True) == 120.0
    assert Timeouts(request=None, chunk=None).response_start(streaming=True) is None


def test_provider_from_string_openai_and_openrouter() -> None:
    sel = provider_from_string("openai:gpt-4.1", env={"OPENAI_API_KEY": API_KEY})
    assert sel.model == "gpt-4.1"
    assert isinstance(sel.provider, ProviderHandle)
    inner = sel.provider.provider
    assert isinstance(inner, OpenAIChatProvider)
    assert inner.base_url == "https://api.openai.com/v1"
    assert inner.name == sel.provider.name == "openai"
    assert API_KEY not in repr(inner)

    env = {"OPENROUTER_API_KEY": API_KEY}
    sel = provider_from_string("openrouter:anthropic/claude-sonnet-4", env=env)
    assert sel.model == "anthropic/claude-sonnet-4"
    assert isinstance(sel.provider.provider, OpenAIChatProvider)
    assert sel.provider.provider.base_url == OPENROUTER_BASE_URL
    assert sel.provider.provider.max_tokens_field == "max_tokens"

    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1/"}
    sel = provider_from_string("openai:local-model", env=env)
    assert isinstance(sel.provider.provider, OpenAIChatProvider)
    assert sel.provider.provider.base_url == "http://127.0.0.1:8000/v1"
    run(sel.provider.provider.aclose())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("openai:gpt-4.1", "OPENAI_API_KEY is not set"),
        ("openrouter:x/y", "OPENROUTER_API_KEY is not set"),
        ("gpt-4.1", "must look like 'openai:gpt-4.1'"),
        ("mystery:model", "unknown provider kind 'mystery'"),
        ("openai:", "must look like"),
    ],
)
def test_provider_from_string_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provider_from_string(spec, env={})
