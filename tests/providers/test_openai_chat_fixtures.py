"""OpenAI Chat Completions against recorded vendor bodies served on loopback."""

from __future__ import annotations

import functools
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_support import (
    Fixture,
    complete_fixture,
    load_fixtures,
    one_byte_writes,
    run,
    split_at,
)

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    TerminalReason,
    ToolCallOutput,
)
from lash.providers import ProviderError, TextDeltaEvent, UsageEvent
from lash.providers.openai_chat import OpenAIChatProvider, parse_chat_completion

FIXTURES = load_fixtures("openai-chat")
OK = [f for f in FIXTURES if f.expected["error"] is None]
ERRORS = [f for f in FIXTURES if f.expected["error"] is not None]
FINISH = {
    "stop": TerminalReason.STOP,
    "tool_use": TerminalReason.TOOL_USE,
    "length": TerminalReason.OUTPUT_LIMIT,
    "content_filter": TerminalReason.CONTENT_FILTER,
}
REQUEST = LlmRequest(model="gpt-4o", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
complete = functools.partial(complete_fixture, OpenAIChatProvider, REQUEST)


def check_expected(fx: Fixture, response: LlmResponse) -> None:
    exp = fx.expected
    assert response.full_text == exp["text"]
    calls = [p for p in response.parts if isinstance(p, ToolCallOutput)]
    assert [(c.call_id, c.tool_name) for c in calls] == [
        (t["id"], t["name"]) for t in exp["tool_calls"]
    ]
    for call, want in zip(calls, exp["tool_calls"], strict=True):
        assert call.input_json == (want["arguments_raw"] or "{}")
        assert json.loads(call.input_json) == want["arguments"]
    usage = exp["usage"]
    reasoning = usage["reasoning_tokens"] or 0
    assert response.usage.input_tokens == usage["input_tokens"]
    assert response.usage.output_tokens == usage["output_tokens"] - reasoning
    assert response.usage.cached_input_tokens == (usage["cached_input_tokens"] or 0)
    assert response.usage.reasoning_tokens == reasoning
    if exp.get("refusal"):
        assert response.terminal_reason is TerminalReason.CONTENT_FILTER
        assert response.terminal_diagnostic == f"refusal: {exp['refusal']}"
    else:
        assert response.terminal_reason is FINISH[exp["finish"]]


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_whole_body(fx: Fixture) -> None:
    response, events, _ = run(complete(fx))
    check_expected(fx, response)
    deltas = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert deltas == fx.expected["text"]
    usage_events = [e for e in events if isinstance(e, UsageEvent)]
    assert usage_events[-1].usage == response.usage


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_without_callback(fx: Fixture) -> None:
    response, events, _ = run(complete(fx, stream=False))
    check_expected(fx, response)
    assert events == []


@pytest.mark.parametrize("fx", [f for f in OK if f.meta["streaming"]], ids=lambda f: f.name)
def test_fixture_one_byte_writes(fx: Fixture) -> None:
    chunks = one_byte_writes(fx.body)
    check_expected(fx, run(complete(fx, chunks))[0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_seeded_random_splits(fx: Fixture, seed: int) -> None:
    rng = random.Random(seed)
    offsets = [rng.randrange(len(fx.body) + 1) for _ in range(rng.randrange(1, 60))]
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(OK) - 1), data=st.data())
def test_fixture_hypothesis_splits(index: int, data: st.DataObject) -> None:
    fx = OK[index]
    offsets = data.draw(st.lists(st.integers(0, len(fx.body)), max_size=30))
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


@pytest.mark.parametrize("fx", [f for f in OK if not f.meta["streaming"]], ids=lambda f: f.name)
def test_nonstream_bodies_parse_directly(fx: Fixture) -> None:
    check_expected(fx, parse_chat_completion(json.loads(fx.body)))


@pytest.mark.parametrize("fx", ERRORS, ids=lambda f: f.name)
def test_error_fixtures_are_classified(fx: Fixture) -> None:
    with pytest.raises(ProviderError) as info:
        run(complete(fx))
    want = fx.expected["error"]
    error = info.value.error
    assert not error.retryable
    assert want["message"] in error.message
    assert f"HTTP {want['status']}" in error.message
    assert want["code"] in error.message
    expected_code: dict[int, str] = {400: "validation", 404: "unsupported"}
    assert error.code == expected_code[want["status"]]
    assert error.terminal_reason is TerminalReason.PROVIDER_ERROR
