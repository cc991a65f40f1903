"""OpenAI Responses against recorded vendor bodies served on loopback."""

from __future__ import annotations

import functools
import json
import random
from typing import Any

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
    ReasoningBlock,
    ReasoningOutput,
    TerminalReason,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
    ToolResultBlock,
)
from lash.providers import (
    ProviderError,
    ReasoningDeltaEvent,
    TextDeltaEvent,
    UsageEvent,
)
from lash.providers.openai_responses import (
    OpenAIResponsesProvider,
    build_responses_body,
    parse_response,
)
from lash.providers.sse import iter_sse_events

FIXTURES = load_fixtures("openai-responses")
OK = [f for f in FIXTURES if f.expected["error"] is None]
STREAMED = [f for f in OK if f.meta["streaming"]]
HTTP_ERRORS = [f for f in FIXTURES if f.expected["error"] is not None and f.meta["status"] >= 400]
STREAM_ERRORS = [f for f in FIXTURES if f.expected["error"] is not None and f.meta["status"] < 400]
FINISH = {
    "stop": TerminalReason.STOP,
    "tool_use": TerminalReason.TOOL_USE,
    "length": TerminalReason.OUTPUT_LIMIT,
    "content_filter": TerminalReason.CONTENT_FILTER,
}
REQUEST = LlmRequest(model="gpt-4o", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
complete = functools.partial(complete_fixture, OpenAIResponsesProvider, REQUEST)


def final_response_object(fx: Fixture) -> dict[str, Any]:
    """The vendor's own final response object: the JSON body, or the terminal stream event's."""
    if not fx.meta["streaming"]:
        return json.loads(fx.body)  # type: ignore[no-any-return]
    for event in iter_sse_events(fx.body):
        payload = json.loads(event.data)
        if payload["type"] in ("response.completed", "response.incomplete"):
            return payload["response"]  # type: ignore[no-any-return]
    raise AssertionError(f"{fx.name} has no terminal event")


def vendor_items(fx: Fixture, kind: str) -> list[dict[str, Any]]:
    return [i for i in final_response_object(fx)["output"] if i["type"] == kind]


def check_expected(fx: Fixture, response: LlmResponse) -> None:
    exp = fx.expected
    assert response.full_text == exp["text"]
    texts = [p for p in response.parts if isinstance(p, TextOutput)]
    assert "".join(t.text for t in texts) == exp["text"]
    calls = [p for p in response.parts if isinstance(p, ToolCallOutput)]
    assert [(c.call_id, c.tool_name) for c in calls] == [
        (t["id"], t["name"]) for t in exp["tool_calls"]
    ]
    for call, want in zip(calls, exp["tool_calls"], strict=True):
        assert call.input_json == (want["arguments_raw"] or "{}")
        assert json.loads(call.input_json) == want["arguments"]
    reasoning = [p for p in response.parts if isinstance(p, ReasoningOutput)]
    assert "\n\n".join(r.text for r in reasoning if r.text) == (exp["reasoning_text"] or "")
    encrypted = any(r.replay is not None and r.replay.encrypted_content for r in reasoning)
    assert encrypted == exp["encrypted_reasoning_present"]
    usage = exp["usage"]
    thinking = usage["reasoning_tokens"] or 0
    assert response.usage.input_tokens == usage["input_tokens"]
    assert response.usage.output_tokens == usage["output_tokens"] - thinking
    assert response.usage.cached_input_tokens == (usage["cached_input_tokens"] or 0)
    assert response.usage.reasoning_tokens == thinking
    if exp.get("refusal"):
        assert response.terminal_reason is TerminalReason.CONTENT_FILTER
        assert response.terminal_diagnostic == f"refusal: {exp['refusal']}"
    else:
        assert response.terminal_reason is FINISH[exp["finish"]]
    # replay data: the vendor's ids travel with the parts
    assert [c.replay.item_id if c.replay else None for c in calls] == [
        i["id"] for i in vendor_items(fx, "function_call")
    ]
    assert [t.response_meta.id if t.response_meta else None for t in texts] == [
        i["id"] for i in vendor_items(fx, "message")
    ]


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_whole_body(fx: Fixture) -> None:
    response, events, _ = run(complete(fx))
    check_expected(fx, response)
    deltas = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert deltas == fx.expected["text"]
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    assert thinking == (fx.expected["reasoning_text"] or "")
    usage_events = [e for e in events if isinstance(e, UsageEvent)]
    assert usage_events[-1].usage == response.usage


@pytest.mark.parametrize("fx", OK, ids=lambda f: f.name)
def test_fixture_without_callback(fx: Fixture) -> None:
    response, events, _ = run(complete(fx, stream=False))
    check_expected(fx, response)
    assert events == []


def done_items(fx: Fixture) -> dict[str, dict[str, Any]]:
    """The stream's ``output_item.done`` items by id."""
    items = {}
    for event in iter_sse_events(fx.body):
        payload = json.loads(event.data)
        if payload["type"] == "response.output_item.done":
            items[payload["item"]["id"]] = payload["item"]
    return items


@pytest.mark.parametrize("fx", STREAMED, ids=lambda f: f.name)
def test_stream_and_final_object_give_the_same_response(fx: Fixture) -> None:
    """Streamed and buffered paths agree on the same content.

    The vendor sends each finished item twice (``output_item.done`` and in the
    final object), re-encrypting reasoning each time; the stream keeps the
    ``.done`` copies, so the buffered side gets the same copies.
    """
    streamed, _, _ = run(complete(fx))
    final = final_response_object(fx)
    done = done_items(fx)
    same_content = {**final, "output": [done.get(i["id"], i) for i in final["output"]]}
    assert streamed == parse_response(same_content)


def test_stream_without_done_items_takes_the_final_output() -> None:
    """A stream that only sends the final object still yields its parts and deltas."""
    fx = next(f for f in STREAMED if f.name == "reasoning_summary_stream")
    final = final_response_object(fx)
    body = (
        b"event: response.completed\ndata: "
        + json.dumps({"type": "response.completed", "response": final}).encode()
        + b"\n\n"
    )
    response, events, _ = run(complete(fx, [body]))
    assert response == parse_response(final)
    check_expected(fx, response)
    assert "".join(e.text for e in events if isinstance(e, TextDeltaEvent)) == response.full_text
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    assert thinking == fx.expected["reasoning_text"]


@pytest.mark.parametrize("fx", STREAMED, ids=lambda f: f.name)
def test_text_deltas_carry_their_message_item_id(fx: Fixture) -> None:
    response, events, _ = run(complete(fx))
    ids = {e.item_id for e in events if isinstance(e, TextDeltaEvent)}
    assert ids == {t.response_meta.id for t in response.parts if isinstance(t, TextOutput)}


@pytest.mark.parametrize("fx", STREAMED, ids=lambda f: f.name)
def test_fixture_one_byte_writes(fx: Fixture) -> None:
    chunks = one_byte_writes(fx.body)
    check_expected(fx, run(complete(fx, chunks))[0])


@pytest.mark.parametrize("fx", STREAMED, ids=lambda f: f.name)
def test_fixture_split_inside_characters_and_event_boundaries(fx: Fixture) -> None:
    body = fx.body
    inside_chars = [i for i in range(1, len(body)) if 0x80 <= body[i] < 0xC0][:400]
    between_newlines = [i + 1 for i in range(len(body) - 1) if body[i : i + 2] == b"\n\n"]
    after_data = [i + 5 for i in range(len(body)) if body.startswith(b"data:", i)]
    offsets = inside_chars + between_newlines + after_data
    assert between_newlines
    assert after_data
    response, events, _ = run(complete(fx, split_at(body, offsets)))
    check_expected(fx, response)
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    assert thinking == (fx.expected["reasoning_text"] or "")


def test_a_fixture_with_non_ascii_text_is_covered() -> None:
    names = {f.name for f in STREAMED if any(b >= 0x80 for b in f.body)}
    assert "reasoning_summary_stream" in names


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
    check_expected(fx, parse_response(json.loads(fx.body)))


@pytest.mark.parametrize(
    "fx", [f for f in OK if f.expected["encrypted_reasoning_present"]], ids=lambda f: f.name
)
def test_reasoning_replays_verbatim_on_the_next_request(fx: Fixture) -> None:
    """The vendor's reasoning items go back unchanged, next to their tool calls."""
    response, _, _ = run(complete(fx))
    blocks: list[Any] = []
    for part in response.parts:
        if isinstance(part, ReasoningOutput):
            blocks.append(ReasoningBlock(text=part.text, replay=part.replay))
        elif isinstance(part, ToolCallOutput):
            blocks.append(
                ToolCallBlock(
                    call_id=part.call_id,
                    tool_name=part.tool_name,
                    input_json=part.input_json,
                    replay=part.replay,
                )
            )
        elif isinstance(part, TextOutput):
            blocks.append(TextBlock(text=part.text, response_meta=part.response_meta))
    results = tuple(
        ToolResultBlock(call_id=p.call_id, content="42")
        for p in response.parts
        if isinstance(p, ToolCallOutput)
    )
    follow_up = LlmRequest(
        model="gpt-5",
        messages=(
            LlmMessage.text(LlmRole.USER, "hi"),
            LlmMessage(role=LlmRole.ASSISTANT, blocks=tuple(blocks)),
            *([LlmMessage(role=LlmRole.USER, blocks=results)] if results else []),
        ),
    )
    body = build_responses_body(follow_up, model="gpt-5", images={}, stream=True)
    sent = body["input"][1:]
    done = done_items(fx) if fx.meta["streaming"] else {}
    vendor = [done.get(i["id"], i) for i in final_response_object(fx)["output"]]
    assert [i["type"] for i in sent[: len(vendor)]] == [i["type"] for i in vendor]
    for mine, theirs in zip(sent, vendor, strict=False):
        if theirs["type"] == "reasoning":
            assert mine == {k: theirs[k] for k in ("type", "id", "summary", "encrypted_content")}
        elif theirs["type"] == "function_call":
            keys = ("type", "id", "call_id", "name", "arguments")
            assert mine == {k: theirs[k] for k in keys}
        else:
            assert mine["id"] == theirs["id"]
            assert mine["content"][0]["text"] == theirs["content"][0]["text"]
    assert body["include"] == ["reasoning.encrypted_content"]


def test_streamed_reasoning_keeps_the_done_blob() -> None:
    """``encrypted_content`` changes between ``output_item.added`` and ``.done``."""
    fx = next(f for f in STREAMED if f.name == "reasoning_tool_call_stream")
    blobs = {
        payload["type"]: payload["item"]["encrypted_content"]
        for payload in (json.loads(e.data) for e in iter_sse_events(fx.body))
        if payload.get("item", {}).get("type") == "reasoning"
    }
    assert blobs["response.output_item.added"] != blobs["response.output_item.done"]
    response, _, _ = run(complete(fx))
    [reasoning] = [p for p in response.parts if isinstance(p, ReasoningOutput)]
    assert reasoning.replay is not None
    assert reasoning.replay.encrypted_content == blobs["response.output_item.done"]


@pytest.mark.parametrize("fx", HTTP_ERRORS, ids=lambda f: f.name)
def test_http_error_fixtures_are_classified(fx: Fixture) -> None:
    with pytest.raises(ProviderError) as info:
        run(complete(fx))
    want = fx.expected["error"]
    error = info.value.error
    assert not error.retryable
    assert want["message"] in error.message
    assert f"HTTP {want['status']}" in error.message
    assert want["code"] in error.message
    expected_code = "unsupported" if want["code"] == "model_not_found" else "validation"
    assert error.code == expected_code
    assert error.terminal_reason is TerminalReason.PROVIDER_ERROR


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("fx", STREAM_ERRORS, ids=lambda f: f.name)
def test_in_stream_error_fixtures_are_classified(fx: Fixture, stream: bool) -> None:
    with pytest.raises(ProviderError) as info:
        run(complete(fx, stream=stream))
    want = fx.expected["error"]
    error = info.value.error
    assert want["message"] in error.message
    assert want["code"] in error.message
    assert error.code == "quota"
    assert not error.retryable
    assert error.raw is not None
    assert want["code"] in error.raw


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(STREAM_ERRORS) - 1), data=st.data())
def test_in_stream_errors_survive_any_split(index: int, data: st.DataObject) -> None:
    fx = STREAM_ERRORS[index]
    offsets = data.draw(st.lists(st.integers(0, len(fx.body)), max_size=20))
    with pytest.raises(ProviderError) as info:
        run(complete(fx, split_at(fx.body, offsets)))
    assert info.value.error.code == "quota"
