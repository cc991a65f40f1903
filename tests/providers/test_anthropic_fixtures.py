"""Anthropic Messages against recorded vendor bodies served on loopback."""

from __future__ import annotations

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
from lash.providers.anthropic import AnthropicProvider, parse_message

FIXTURES = load_fixtures("anthropic")
OK = [f for f in FIXTURES if f.expected["error"] is None]
ERRORS = [f for f in FIXTURES if f.expected["error"] is not None]
NONSTREAM = [f for f in OK if not f.meta["streaming"]]
FINISH = {
    "stop": TerminalReason.STOP,
    "stop_sequence": TerminalReason.STOP,
    "tool_use": TerminalReason.TOOL_USE,
    "length": TerminalReason.OUTPUT_LIMIT,
    "refusal": TerminalReason.CONTENT_FILTER,
}
REQUEST = LlmRequest(model="claude-sonnet-4-5", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
complete = functools.partial(complete_fixture, AnthropicProvider, REQUEST)


def test_every_case_is_covered() -> None:
    assert len(FIXTURES) == 15
    assert len(ERRORS) == 2
    assert {f.expected["finish"] for f in OK} == set(FINISH)


def check_expected(fx: Fixture, response: LlmResponse) -> None:
    exp = fx.expected
    assert response.full_text == exp["text"]
    texts = [p.text for p in response.parts if isinstance(p, TextOutput)]
    assert "".join(texts) == exp["text"]
    calls = [p for p in response.parts if isinstance(p, ToolCallOutput)]
    assert [(c.call_id, c.tool_name) for c in calls] == [
        (t["id"], t["name"]) for t in exp["tool_calls"]
    ]
    for call, want in zip(calls, exp["tool_calls"], strict=True):
        assert call.input_json == (want["arguments_raw"] or "{}")
        if want["arguments"] is None:  # cut short by max_tokens: the raw text is kept
            with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
                json.loads(call.input_json)
        else:
            assert json.loads(call.input_json) == want["arguments"]

    reasoning = [p for p in response.parts if isinstance(p, ReasoningOutput)]
    redacted = [r for r in reasoning if r.replay is not None and r.replay.redacted]
    thinking = [r for r in reasoning if r not in redacted]
    assert len(redacted) == exp["redacted_thinking_blocks"]
    for block in redacted:
        assert block.replay is not None
        assert block.replay.encrypted_content
        assert block.replay.encrypted_content.encode() in fx.body
        assert block.text == ""
    if exp["reasoning_text"] is None:
        assert thinking == []
    else:
        assert "".join(r.text for r in thinking) == exp["reasoning_text"]
    signed = [r for r in thinking if r.replay is not None and r.replay.signature]
    assert bool(signed) == exp["thinking_signature_present"]
    for block in signed:
        assert block.replay is not None
        assert block.replay.signature is not None
        assert block.replay.signature.encode() in fx.body
    if reasoning and calls:  # thinking precedes the call it led to
        assert response.parts.index(reasoning[0]) < response.parts.index(calls[0])

    usage = exp["usage"]
    reasoning_tokens = usage["reasoning_tokens"] or 0
    cache_read = usage["cached_input_tokens"] or 0
    cache_write = usage["cache_creation_input_tokens"] or 0
    assert response.usage.input_tokens == usage["input_tokens"] + cache_read + cache_write
    assert response.usage.cached_input_tokens == cache_read
    assert response.usage.output_tokens == usage["output_tokens"] - reasoning_tokens
    assert response.usage.reasoning_tokens == reasoning_tokens
    assert isinstance(response.provider_usage, dict)
    assert response.provider_usage["output_tokens"] == usage["output_tokens"]

    assert response.terminal_reason is FINISH[exp["finish"]]
    if exp["finish"] == "refusal":
        explanation = exp["stop_details"]["explanation"]
        assert response.terminal_diagnostic == f"refusal: {explanation}"


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_whole_body(fx: Fixture) -> None:
    response, events, _ = run(complete(fx))
    check_expected(fx, response)
    deltas = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert deltas == fx.expected["text"]
    thoughts = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    assert thoughts == (fx.expected["reasoning_text"] or "")
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
    response, events, _ = run(complete(fx, chunks))
    check_expected(fx, response)
    deltas = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert deltas == fx.expected["text"]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_seeded_random_splits(fx: Fixture, seed: int) -> None:
    rng = random.Random(seed)
    offsets = [rng.randrange(len(fx.body) + 1) for _ in range(rng.randrange(1, 60))]
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


def _multibyte_offsets(body: bytes) -> list[int]:
    """Offsets that fall inside a multi-byte UTF-8 character or a CRLF/LF-LF pair."""
    inside = [i for i, b in enumerate(body) if 0x80 <= b < 0xC0]
    boundaries = [i + 1 for i in range(len(body) - 1) if body[i : i + 2] == b"\n\n"]
    return inside + boundaries


@pytest.mark.parametrize(
    "name", ["thinking_stream", "refusal_stream", "max_tokens_truncated_tool_json_stream"]
)
def test_splits_inside_characters_and_event_boundaries(name: str) -> None:
    fx = next(f for f in OK if f.name == name)
    offsets = _multibyte_offsets(fx.body)
    assert offsets
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(OK) - 1), data=st.data())
def test_fixture_hypothesis_splits(index: int, data: st.DataObject) -> None:
    fx = OK[index]
    offsets = data.draw(st.lists(st.integers(0, len(fx.body)), max_size=30))
    check_expected(fx, run(complete(fx, split_at(fx.body, offsets)))[0])


@pytest.mark.parametrize("fx", NONSTREAM, ids=lambda f: f.name)
def test_nonstream_bodies_parse_directly(fx: Fixture) -> None:
    check_expected(fx, parse_message(json.loads(fx.body)))


@pytest.mark.parametrize("fx", ERRORS, ids=lambda f: f.name)
def test_error_fixtures_are_classified(fx: Fixture) -> None:
    with pytest.raises(ProviderError) as info:
        run(complete(fx))
    want = fx.expected["error"]
    error = info.value.error
    assert not error.retryable
    assert want["message"] in error.message
    assert f"HTTP {want['status']}" in error.message
    assert want["type"] in error.message
    request_id = json.loads(fx.body)["request_id"]
    assert request_id in error.message
    expected_code = {400: "validation", 404: "not_found"}
    assert error.code == expected_code[want["status"]]
    assert error.terminal_reason is TerminalReason.PROVIDER_ERROR
    assert error.raw is not None
    assert want["message"] in error.raw


# ------------------------------------------------- the same content, streamed


def message_as_stream(message: dict[str, Any], piece: int) -> bytes:
    """A non-streamed ``message`` re-expressed as the event stream the API would send.

    Text, thinking, signatures and tool input are cut into ``piece``-sized deltas.
    """

    def event(kind: str, **fields: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"

    def cut(text: str) -> list[str]:
        return [text[i : i + piece] for i in range(0, len(text), piece)] or [""]

    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    head = {k: v for k, v in message.items() if k not in ("content", "usage")}
    out = [event("message_start", message={**head, "content": [], "usage": start_usage})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            out.append(
                event("content_block_start", index=index, content_block={**block, "text": ""})
            )
            for text in cut(block["text"]):
                delta = {"type": "text_delta", "text": text}
                out.append(event("content_block_delta", index=index, delta=delta))
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            out.append(event("content_block_start", index=index, content_block=empty))
            for text in cut(block["thinking"]):
                delta = {"type": "thinking_delta", "thinking": text}
                out.append(event("content_block_delta", index=index, delta=delta))
            for sig in cut(block["signature"]):
                delta = {"type": "signature_delta", "signature": sig}
                out.append(event("content_block_delta", index=index, delta=delta))
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            out.append(event("content_block_start", index=index, content_block=opened))
            for text in cut(json.dumps(block["input"])):
                delta = {"type": "input_json_delta", "partial_json": text}
                out.append(event("content_block_delta", index=index, delta=delta))
        out.append(event("content_block_stop", index=index))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    out.append(event("message_delta", delta=stop, usage={"output_tokens": usage["output_tokens"]}))
    out.append(event("message_stop"))
    return "".join(out).encode()


@pytest.mark.parametrize("piece", [1, 7, 10_000])
@pytest.mark.parametrize("fx", NONSTREAM, ids=lambda f: f.name)
def test_streaming_and_json_paths_agree(fx: Fixture, piece: int) -> None:
    message = json.loads(fx.body)
    stream_body = message_as_stream(message, piece)

    async def both() -> tuple[LlmResponse, LlmResponse, list[StreamEvent], list[StreamEvent]]:
        streamed = Reply(content_type="text/event-stream", chunks=[stream_body])
        as_json = Reply(content_type="application/json", chunks=[fx.body])
        got: list[list[StreamEvent]] = [[], []]
        responses = []
        for i, reply in enumerate((streamed, as_json)):
            sink_events = got[i]

            async def sink(event: StreamEvent, into: list[StreamEvent] = sink_events) -> None:
                into.append(event)

            async with serving(reply) as server:
                provider = AnthropicProvider(api_key=API_KEY, base_url=server.base_url)
                async with provider:
                    responses.append(await provider.complete(REQUEST, sink))
        return responses[0], responses[1], got[0], got[1]

    from_stream, from_json, stream_events, json_events = run(both())
    check_expected(fx, from_stream)
    check_expected(fx, from_json)
    assert from_stream.parts == from_json.parts
    assert from_stream.usage == from_json.usage
    assert from_stream.full_text == from_json.full_text
    assert from_stream.terminal_reason == from_json.terminal_reason
    assert from_stream.terminal_diagnostic == from_json.terminal_diagnostic

    def text_of(events: list[StreamEvent], kind: type) -> str:
        return "".join(e.text for e in events if isinstance(e, kind))

    for kind in (TextDeltaEvent, ReasoningDeltaEvent):
        assert text_of(stream_events, kind) == text_of(json_events, kind)
    assert [e for e in stream_events if isinstance(e, UsageEvent)][-1] == json_events[-1]
