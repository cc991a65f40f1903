"""Gemini against recorded vendor bodies served on loopback, whole and re-chunked."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_support import (
    API_KEY,
    Fixture,
    Reply,
    complete_fixture,
    fixture_reply,
    load_fixtures,
    one_byte_writes,
    run,
    serving,
    split_at,
)

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    ReasoningOutput,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from lash.providers import (
    ProviderError,
    ReasoningDeltaEvent,
    StreamEvent,
    TextDeltaEvent,
    UsageEvent,
)
from lash.providers.gemini import (
    GeminiProvider,
    JsonArrayDecoder,
    parse_generate_content,
    parse_stream_payloads,
)
from lash.providers.sse import iter_sse_events

FIXTURES = load_fixtures("gemini")
OK = [f for f in FIXTURES if f.expected["error"] is None]
ERRORS = [f for f in FIXTURES if f.expected["error"] is not None]
STREAMS = [f for f in OK if f.meta["streaming"]]
FINISH = {
    "stop": TerminalReason.STOP,
    "tool_use": TerminalReason.TOOL_USE,
    "length": TerminalReason.OUTPUT_LIMIT,
    "content_filter": TerminalReason.CONTENT_FILTER,
}
MODEL = "gemini-test"
REQUEST = LlmRequest(model=MODEL, messages=(LlmMessage.text(LlmRole.USER, "hi"),))
complete = functools.partial(complete_fixture, GeminiProvider, REQUEST)


def payloads_of(fx: Fixture) -> list[Any]:
    """The response elements of a body, decoded independently of the provider."""
    fmt = fx.meta.get("stream_format")
    if fmt == "sse":
        return [json.loads(e.data) for e in iter_sse_events(fx.body)]
    if fmt == "json_array":
        value = json.loads(fx.body)
        assert isinstance(value, list)
        return value
    return [json.loads(fx.body)]


def signatures(response: LlmResponse) -> int:
    count = 0
    for part in response.parts:
        if isinstance(part, ReasoningOutput) and part.replay and part.replay.signature:
            count += 1
        elif isinstance(part, ToolCallOutput) and part.replay is not None:
            opaque = part.replay.opaque
            count += bool(isinstance(opaque, dict) and opaque.get("thought_signature"))
    return count


def check_expected(fx: Fixture, response: LlmResponse) -> None:
    exp = fx.expected
    assert response.full_text == exp["text"]
    texts = [p.text for p in response.parts if isinstance(p, TextOutput)]
    assert "".join(texts) == exp["text"]
    reasoning = "".join(p.text for p in response.parts if isinstance(p, ReasoningOutput))
    assert reasoning == (exp["reasoning_text"] or "")
    assert exp["text"] == "" or exp["text"] not in reasoning
    calls = [p for p in response.parts if isinstance(p, ToolCallOutput)]
    assert [c.tool_name for c in calls] == [t["name"] for t in exp["tool_calls"]]
    for call, want in zip(calls, exp["tool_calls"], strict=True):
        assert json.loads(call.input_json) == want["arguments"]
        if want["id"] is None:
            assert call.call_id.startswith("gemini-")
        else:
            assert call.call_id == want["id"]
    assert len({c.call_id for c in calls}) == len(calls)
    assert signatures(response) == exp["thought_signatures"]
    usage = exp["usage"] or {}
    assert response.usage.input_tokens == (usage.get("input_tokens") or 0)
    assert response.usage.output_tokens == (usage.get("output_tokens") or 0)
    assert response.usage.cached_input_tokens == (usage.get("cached_input_tokens") or 0)
    assert response.usage.reasoning_tokens == (usage.get("reasoning_tokens") or 0)
    if usage.get("total_tokens") is not None:
        assert response.usage.total == usage["total_tokens"]
    assert response.terminal_reason is FINISH[exp["finish"]]
    if exp["finish"] == "content_filter":
        raw = exp["finish_raw"].rsplit("=", 1)[-1]
        assert response.terminal_diagnostic is not None
        assert raw in response.terminal_diagnostic


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_whole_body_streamed(fx: Fixture) -> None:
    response, events, path = run(complete(fx))
    check_expected(fx, response)
    assert path == f"/v1/models/{MODEL}:streamGenerateContent?alt=sse"
    deltas = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert deltas == fx.expected["text"]
    thoughts = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    assert thoughts == (fx.expected["reasoning_text"] or "")
    usage_events = [e for e in events if isinstance(e, UsageEvent)]
    if response.usage.total:
        assert usage_events[-1].usage == response.usage
    else:
        assert usage_events == []


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_without_callback_matches_streamed(fx: Fixture) -> None:
    response, events, path = run(complete(fx, stream=False))
    check_expected(fx, response)
    assert events == []
    assert path == f"/v1/models/{MODEL}:generateContent"
    assert response == run(complete(fx))[0]


@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_fixture_one_byte_writes(fx: Fixture) -> None:
    chunks = one_byte_writes(fx.body, 2500)
    whole = run(complete(fx))[0]
    response, events, _ = run(complete(fx, chunks))
    check_expected(fx, response)
    assert response == whole
    assert "".join(e.text for e in events if isinstance(e, TextDeltaEvent)) == whole.full_text


@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_fixture_splits_at_event_boundaries(fx: Fixture) -> None:
    """Cuts between the CR and LF of a boundary, and between the two line breaks."""
    separator = b"\r\n\r\n" if fx.meta["stream_format"] == "sse" else b"\n,\r\n"
    offsets: list[int] = []
    start = 0
    while (at := fx.body.find(separator, start)) >= 0:
        offsets += [at + 1, at + 2, at + 3]
        start = at + 1
    assert offsets, "the fixture has no element boundary"
    response = run(complete(fx, split_at(fx.body, offsets)))[0]
    check_expected(fx, response)


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_fixture_connection_close_framing(fx: Fixture, chunked: bool) -> None:
    rng = random.Random(7)
    offsets = [rng.randrange(len(fx.body)) for _ in range(12)]
    reply = fixture_reply(fx, split_at(fx.body, offsets), chunked=chunked)
    check_expected(fx, run(complete(fx, reply=reply))[0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_seeded_random_splits(fx: Fixture, seed: int) -> None:
    rng = random.Random(seed)
    offsets = [rng.randrange(len(fx.body) + 1) for _ in range(rng.randrange(1, 60))]
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(OK) - 1), data=st.data(), stream=st.booleans())
def test_fixture_hypothesis_splits(index: int, data: st.DataObject, stream: bool) -> None:
    fx = OK[index]
    offsets = data.draw(st.lists(st.integers(0, len(fx.body)), max_size=30))
    response = run(complete(fx, split_at(fx.body, offsets), stream=stream))[0]
    check_expected(fx, response)


@pytest.mark.parametrize("fx", [f for f in OK if not f.meta["streaming"]], ids=lambda f: f.name)
def test_nonstream_bodies_parse_directly(fx: Fixture) -> None:
    check_expected(fx, parse_generate_content(json.loads(fx.body)))


@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_stream_payloads_parse_directly(fx: Fixture) -> None:
    check_expected(fx, parse_stream_payloads(payloads_of(fx)))


def as_json_array(payloads: list[Any]) -> bytes:
    return ("[" + "\n,\r\n".join(json.dumps(p, indent=2) for p in payloads) + "\n]").encode()


def as_sse(payloads: list[Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\r\n\r\n" for p in payloads)


@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_sse_and_json_array_framings_give_the_same_response(fx: Fixture) -> None:
    payloads = payloads_of(fx)
    array = Reply(content_type="application/json; charset=UTF-8", chunks=[as_json_array(payloads)])
    sse = Reply(content_type="text/event-stream", chunks=[as_sse(payloads)])
    from_array = run(complete(fx, reply=array))[0]
    from_sse = run(complete(fx, reply=sse))[0]
    check_expected(fx, from_array)
    assert from_array == from_sse


@pytest.mark.parametrize("fx", STREAMS, ids=lambda f: f.name)
def test_streamed_and_nonstreamed_paths_agree_on_the_same_content(fx: Fixture) -> None:
    """All parts of the stream in one non-streamed body assemble to the same response."""
    payloads = payloads_of(fx)
    parts = [
        part
        for p in payloads
        for c in p.get("candidates", [])
        for part in c.get("content", {}).get("parts", [])
    ]
    finish = [c["finishReason"] for p in payloads for c in p["candidates"] if "finishReason" in c]
    whole = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish[-1], "index": 0}
        ],
        "usageMetadata": payloads[-1]["usageMetadata"],
        "responseId": payloads[0]["responseId"],
    }
    body = Reply(content_type="application/json", chunks=[json.dumps(whole).encode()])
    streamed = run(complete(fx))[0]
    buffered = run(complete(fx, stream=False, reply=body))[0]
    assert buffered == streamed
    assert buffered == parse_generate_content(whole)


def test_json_array_elements_are_emitted_before_the_body_ends() -> None:
    fx = next(f for f in STREAMS if f.name == "text_stream_json_array")
    first = fx.body.index(b"\n,\r\n") + 1
    times: dict[str, float] = {}

    async def go() -> None:
        loop = asyncio.get_running_loop()

        async def on_event(event: StreamEvent) -> None:
            if isinstance(event, ReasoningDeltaEvent):
                times.setdefault("reasoning", loop.time())

        reply = fixture_reply(fx, [fx.body[:first], fx.body[first:]], delay=0.4)
        async with (
            serving(reply) as server,
            GeminiProvider(api_key=API_KEY, base_url=server.base_url) as provider,
        ):
            await provider.complete(REQUEST, on_event)
        times["done"] = loop.time()

    run(go())
    assert times["done"] - times["reasoning"] > 0.3


def test_json_array_decoder_yields_each_element_as_it_completes() -> None:
    fx = next(f for f in STREAMS if f.name == "function_call_stream_json_array")
    decoder = JsonArrayDecoder()
    seen: list[tuple[int, int]] = []
    for offset in range(len(fx.body)):
        for element in decoder.feed(fx.body[offset : offset + 1]):
            seen.append((offset, len(element)))
    decoder.close()
    assert decoder.done
    assert len(seen) == 2
    # each element comes out on the byte of its own closing brace, not at the end
    assert seen[0][0] == fx.body.index(b"\n,\r\n") - 1
    assert seen[1][0] == len(fx.body) - 3  # the closing brace, before "\n]"


@pytest.mark.parametrize("fx", ERRORS, ids=lambda f: f.name)
@pytest.mark.parametrize("stream", [True, False])
def test_error_fixtures_are_classified(fx: Fixture, stream: bool) -> None:
    with pytest.raises(ProviderError) as info:
        run(complete(fx, stream=stream))
    want = fx.expected["error"]
    error = info.value.error
    assert not error.retryable
    assert want["message"] in error.message
    assert f"HTTP {want['status']}" in error.message
    assert want["status_text"] in error.message
    assert error.code == {404: "not_found"}[want["status"]]
    assert error.terminal_reason is TerminalReason.PROVIDER_ERROR
    assert error.raw is not None
    assert API_KEY not in error.message
