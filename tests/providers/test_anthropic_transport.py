"""Anthropic over a real loopback connection: cuts, stalls, retries, errors, secrets, headers."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from provider_support import API_KEY, Harness, Reply, ignore_event, no_secret, run, serving

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmToolSpec,
    LlmUsage,
    ReasoningOutput,
    TerminalReason,
    ToolCallOutput,
)
from lash.providers import (
    ProviderError,
    ReasoningDeltaEvent,
    StreamEvent,
    TextDeltaEvent,
    UsageEvent,
)
from lash.providers.anthropic import (
    ANTHROPIC_BASE_URL,
    AnthropicProvider,
    anthropic_from_env,
)
from lash.providers.http import RetryPolicy, Timeouts

REQUEST = LlmRequest(model="claude-sonnet-4-5", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
SSE = "text/event-stream; charset=utf-8"


def ev(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def start(usage: dict[str, Any] | None = None) -> bytes:
    message = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [],
        "stop_reason": None,
        "usage": usage or {"input_tokens": 5, "output_tokens": 1},
    }
    return ev("message_start", message=message)


def text_delta(index: int, text: str) -> bytes:
    return ev("content_block_delta", index=index, delta={"type": "text_delta", "text": text})


def stop(reason: str, output_tokens: int = 2, **delta: Any) -> bytes:
    return ev(
        "message_delta",
        delta={"stop_reason": reason, "stop_sequence": None, **delta},
        usage={"output_tokens": output_tokens},
    )


GOOD_STREAM = [
    start(),
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ev("ping"),
    text_delta(0, "Hel"),
    text_delta(0, "lo"),
    ev("content_block_stop", index=0),
    stop("end_turn"),
    ev("message_stop"),
]


def harness() -> Harness:
    return Harness(AnthropicProvider, REQUEST)


def error_body(kind: str, message: str) -> bytes:
    payload = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "r1"}
    return json.dumps(payload).encode()


# ------------------------------------------------------------------ success paths


def test_success_streams_text_with_headers_and_path() -> None:
    async def go() -> tuple[LlmResponse, Any, list[StreamEvent]]:
        events: list[StreamEvent] = []

        async def sink(event: StreamEvent) -> None:
            events.append(event)

        async with serving(Reply(content_type=SSE, chunks=GOOD_STREAM)) as server:
            async with AnthropicProvider(api_key=API_KEY, base_url=server.base_url) as p:
                response = await p.complete(REQUEST, sink)
            return response, server.received[0], events

    response, got, events = run(go())
    assert response.full_text == "Hello"
    assert response.terminal_reason is TerminalReason.STOP
    assert response.usage == LlmUsage(input_tokens=5, output_tokens=2)
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == API_KEY
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["accept"] == "text/event-stream"
    assert "authorization" not in got.headers
    assert "anthropic-beta" not in got.headers
    body = got.json()
    assert body["stream"] is True
    assert body["model"] == "claude-sonnet-4-5"
    deltas = [e for e in events if isinstance(e, TextDeltaEvent)]
    assert [d.text for d in deltas] == ["Hel", "lo"]
    assert {d.item_id for d in deltas} == {"msg_test:0"}
    usages = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usages == [LlmUsage(input_tokens=5, output_tokens=1), response.usage]


def test_beta_headers_and_interleaved_thinking_for_budget_models_with_tools() -> None:
    tools = (LlmToolSpec(name="t"),)
    thinking = LlmRequest(
        model="claude-sonnet-4-5",
        messages=REQUEST.messages,
        tools=tools,
        model_variant="low",
    )

    async def headers(request: LlmRequest, **options: Any) -> dict[str, str]:
        async with serving(Reply(content_type=SSE, chunks=GOOD_STREAM)) as server:
            async with AnthropicProvider(api_key=API_KEY, base_url=server.base_url, **options) as p:
                await p.complete(request, ignore_event)
            return server.received[0].headers

    got = run(headers(thinking))
    assert got["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    got = run(headers(REQUEST, betas=["files-api-2025-04-14"], extra_headers={"x-extra": "1"}))
    assert got["anthropic-beta"] == "files-api-2025-04-14"
    assert got["x-extra"] == "1"


def test_json_replies_and_forced_stream() -> None:
    message = {
        "id": "msg_j",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hi"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 4, "output_tokens": 3},
    }
    as_json = Reply(chunks=[json.dumps(message).encode()])

    async def go() -> tuple[list[LlmResponse], list[Any], list[StreamEvent]]:
        events: list[StreamEvent] = []

        async def sink(event: StreamEvent) -> None:
            events.append(event)

        replies = [as_json, as_json, Reply(content_type=SSE, chunks=GOOD_STREAM)]
        async with serving(*replies) as server:
            async with AnthropicProvider(api_key=API_KEY, base_url=server.base_url) as p:
                with_sink = await p.complete(REQUEST, sink)  # asked to stream, got JSON
                without = await p.complete(REQUEST)
            async with AnthropicProvider(
                api_key=API_KEY, base_url=server.base_url, stream=True
            ) as p:
                forced = await p.complete(REQUEST)
            return [with_sink, without, forced], server.received, events

    (with_sink, without, forced), received, events = run(go())
    assert with_sink == without
    assert with_sink.full_text == "Hi"
    thinking = with_sink.parts[0]
    assert isinstance(thinking, ReasoningOutput)
    assert thinking.text == "hmm"
    assert thinking.replay is not None
    assert thinking.replay.signature == "sig"
    assert [r.json()["stream"] for r in received] == [True, False, True]
    assert [r.headers["accept"] for r in received] == [
        "text/event-stream",
        "application/json",
        "text/event-stream",
    ]
    assert [type(e).__name__ for e in events] == [
        "ReasoningDeltaEvent",
        "TextDeltaEvent",
        "UsageEvent",
    ]
    assert forced.full_text == "Hello"


def test_thinking_and_tool_use_stream_assembles_and_hides_reasoning_when_asked() -> None:
    stream = [
        start(),
        ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "Let "}),
        ev("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "me."}),
        ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s1"}),
        ev("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s2"}),
        ev("content_block_stop", index=0),
        ev(
            "content_block_start",
            index=1,
            content_block={"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}},
        ),
        ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ""}),
        ev(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '{"a'},
        ),
        ev(
            "content_block_delta",
            index=1,
            delta={"type": "input_json_delta", "partial_json": '": 1}'},
        ),
        ev("content_block_stop", index=1),
        ev(
            "content_block_start",
            index=2,
            content_block={"type": "tool_use", "id": "toolu_2", "name": "add", "input": {"b": 2}},
        ),
        ev("content_block_stop", index=2),
        stop("tool_use", output_tokens=30, stop_details=None),
        ev("message_stop"),
    ]
    for expose in (True, False):
        h = harness()
        result, _ = run(h.call(Reply(content_type=SSE, chunks=stream), expose_thinking=expose))
        assert isinstance(result, LlmResponse)
        thinking, first, second = result.parts
        assert isinstance(thinking, ReasoningOutput)
        assert thinking.text == "Let me."
        assert thinking.replay is not None
        assert thinking.replay.signature == "s1s2"
        assert first == ToolCallOutput(call_id="toolu_1", tool_name="add", input_json='{"a": 1}')
        assert second == ToolCallOutput(call_id="toolu_2", tool_name="add", input_json='{"b": 2}')
        assert result.terminal_reason is TerminalReason.TOOL_USE
        reasoning = "".join(e.text for e in h.events if isinstance(e, ReasoningDeltaEvent))
        assert reasoning == ("Let me." if expose else "")


@pytest.mark.parametrize(
    ("reason", "terminal", "diagnostic"),
    [
        ("pause_turn", TerminalReason.STOP, "pause_turn: the server paused a long-running turn"),
        ("stop_sequence", TerminalReason.STOP, None),
        ("max_tokens", TerminalReason.OUTPUT_LIMIT, None),
        ("model_context_window_exceeded", TerminalReason.CONTEXT_OVERFLOW, "context window"),
        ("refusal", TerminalReason.CONTENT_FILTER, "refusal"),
        ("brand_new_reason", TerminalReason.PROVIDER_ERROR, "stop_reason 'brand_new_reason'"),
    ],
)
def test_stop_reasons(reason: str, terminal: TerminalReason, diagnostic: str | None) -> None:
    h = harness()
    chunks = [*GOOD_STREAM[:-2], stop(reason), GOOD_STREAM[-1]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks)))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is terminal
    if diagnostic is None:
        assert result.terminal_diagnostic is None
    else:
        assert result.terminal_diagnostic is not None
        assert diagnostic in result.terminal_diagnostic


def test_missing_message_stop_is_fine_once_the_stop_reason_arrived() -> None:
    h = harness()
    result, _ = run(
        h.call(Reply(content_type=SSE, chunks=GOOD_STREAM[:-1]), retry=RetryPolicy.disabled())
    )
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"


def test_usage_merges_cache_and_thinking_counts() -> None:
    h = harness()
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 50,
        "output_tokens": 1,
    }
    final = ev(
        "message_delta",
        delta={"stop_reason": "end_turn"},
        usage={"output_tokens": 20, "output_tokens_details": {"thinking_tokens": 15}},
    )
    chunks = [start(usage), *GOOD_STREAM[1:-2], final, GOOD_STREAM[-1]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks)))
    assert isinstance(result, LlmResponse)
    assert result.usage == LlmUsage(
        input_tokens=100, output_tokens=5, cached_input_tokens=40, reasoning_tokens=15
    )
    assert result.provider_usage == {
        **usage,
        "output_tokens": 20,
        "output_tokens_details": {"thinking_tokens": 15},
    }


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_cut_mid_event_is_a_retryable_error(
    chunked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    cut = [*GOOD_STREAM[:3], GOOD_STREAM[3][:25]]
    result, count = run(
        h.call(
            Reply(content_type=SSE, chunks=cut, chunked=chunked, abort=chunked),
            retry=RetryPolicy.disabled(),
        )
    )
    assert isinstance(result, ProviderError)
    assert result.error.retryable
    assert result.error.code == "transport"
    assert count == 1
    no_secret(h, caplog)


def test_stream_ending_between_events_without_a_stop_is_truncated() -> None:
    h = harness()
    result, _ = run(
        h.call(
            Reply(content_type=SSE, chunks=GOOD_STREAM[:5], chunked=False),
            retry=RetryPolicy.disabled(),
        )
    )
    assert isinstance(result, ProviderError)
    assert result.error.code == "transport"
    assert result.error.retryable
    assert "ended before the response was complete" in result.error.message


def test_abrupt_disconnect_mid_stream_is_retried() -> None:
    h = harness()
    dropped = Reply(content_type=SSE, chunks=GOOD_STREAM[:4], abort=True)
    result, count = run(h.call(dropped, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    [status] = h.retries
    assert "transport error" in status.reason


def test_abrupt_disconnect_before_headers_is_retried() -> None:
    h = harness()
    result, count = run(h.call(Reply(hangup=True), Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    [status] = h.retries
    assert "transport error" in status.reason


def test_slow_chunk_times_out(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    result, _ = run(
        h.call(
            Reply(content_type=SSE, chunks=GOOD_STREAM, delay=0.5),
            timeouts=Timeouts(chunk=0.1),
            retry=RetryPolicy.disabled(),
        )
    )
    assert isinstance(result, ProviderError)
    assert result.error.code == "timeout"
    assert result.error.retryable
    no_secret(h, caplog)


def test_slow_response_start_times_out() -> None:
    h = harness()
    result, _ = run(
        h.call(
            Reply(content_type=SSE, chunks=GOOD_STREAM, head_delay=1.0),
            timeouts=Timeouts(request=0.2, chunk=5),
            retry=RetryPolicy.disabled(),
        )
    )
    assert isinstance(result, ProviderError)
    assert result.error.code == "timeout"


def test_429_with_retry_after_then_success(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    limited = Reply(
        status=429,
        headers={"Retry-After": "3", "request-id": "req_limited"},
        chunks=[error_body("rate_limit_error", "Number of request tokens has exceeded your limit")],
    )
    result, count = run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert h.sleeps == [3.0]
    [status] = h.retries
    assert (status.wait_seconds, status.attempt, status.max_attempts) == (3.0, 1, 4)
    assert "rate_limit_error" in status.reason
    assert "HTTP 429" in status.reason
    assert h.events[0] == status
    no_secret(h, caplog)


def test_529_overloaded_then_success() -> None:
    h = harness()
    overloaded = Reply(status=529, chunks=[error_body("overloaded_error", "Overloaded")])
    result, count = run(h.call(overloaded, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    assert h.sleeps == [2.0]
    assert "overloaded_error" in h.retries[0].reason


def test_500_then_success_uses_backoff() -> None:
    h = harness()
    failing = Reply(status=500, chunks=[error_body("api_error", "Internal server error")])
    result, count = run(h.call(failing, failing, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 3
    assert h.sleeps == [2.0, 4.0]
    assert [r.attempt for r in h.retries] == [1, 2]


def test_malformed_json_in_stream(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    chunks = [
        *GOOD_STREAM[:4],
        b"event: content_block_delta\ndata: {not json\n\n",
        *GOOD_STREAM[4:],
    ]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert result.error.code == "malformed_response"
    assert "invalid JSON in stream event" in result.error.message
    assert "{not json" in result.error.message
    no_secret(h, caplog)


@pytest.mark.parametrize(
    ("bad", "detail"),
    [
        (b"data: [1, 2]\n\n", "stream event is not an object"),
        (b'data: {"type": "content_block_delta", "index": "x", "delta": {}}\n\n', "bad content"),
        (b'data: {"type": "message_start"}\n\n', "message_start without a message"),
        (b'data: {"x": "\xff"}\n\n', "invalid UTF-8"),
    ],
)
def test_other_malformed_streams(bad: bytes, detail: str) -> None:
    h = harness()
    chunks = [*GOOD_STREAM[:3], bad, *GOOD_STREAM[3:]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert result.error.code == "malformed_response"
    assert detail in result.error.message


def test_malformed_json_body() -> None:
    h = harness()
    result, _ = run(h.call(Reply(chunks=[b"{ nope"]), retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert result.error.code == "malformed_response"
    assert "{ nope" in result.error.message


def test_in_stream_overloaded_error_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    err = ev("error", error={"type": "overloaded_error", "message": "Overloaded"})
    result, count = run(
        h.call(
            Reply(content_type=SSE, chunks=[*GOOD_STREAM[:4], err]),
            Reply(content_type=SSE, chunks=GOOD_STREAM),
        )
    )
    assert isinstance(result, LlmResponse)
    assert count == 2
    assert "error in stream overloaded_error: Overloaded" in h.retries[0].reason
    no_secret(h, caplog)


def test_in_stream_invalid_request_is_not_retried() -> None:
    h = harness()
    err = ev("error", error={"type": "invalid_request_error", "message": "bad thing"})
    result, count = run(h.call(Reply(content_type=SSE, chunks=[GOOD_STREAM[0], err])))
    assert isinstance(result, ProviderError)
    assert not result.error.retryable
    assert result.error.code == "stream_error"
    assert count == 1


def test_error_object_in_a_200_json_body() -> None:
    h = harness()
    result, count = run(
        h.call(
            Reply(chunks=[error_body("overloaded_error", "Overloaded")]),
            Reply(content_type=SSE, chunks=GOOD_STREAM),
        )
    )
    assert isinstance(result, LlmResponse)
    assert count == 2


def test_401_is_an_auth_error_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    body = error_body("authentication_error", f"invalid x-api-key: {API_KEY}")
    with caplog.at_level(logging.DEBUG):
        result, count = run(h.call(Reply(status=401, chunks=[body])))
    assert isinstance(result, ProviderError)
    assert result.error.code == "auth"
    assert not result.error.retryable
    assert count == 1
    assert h.retries == []
    assert "[REDACTED]" in result.error.message
    assert result.error.raw is not None
    assert "[REDACTED]" in result.error.raw
    no_secret(h, caplog)


def test_prompt_too_long_is_a_context_overflow() -> None:
    h = harness()
    body = error_body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    result, count = run(h.call(Reply(status=400, chunks=[body])))
    assert isinstance(result, ProviderError)
    assert result.error.code == "context_overflow"
    assert result.error.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    assert not result.error.retryable
    assert count == 1


@pytest.mark.parametrize("content_type", [SSE, "application/json"])
def test_an_error_in_the_unterminated_last_event_keeps_its_classification(
    content_type: str,
) -> None:
    """A final error event with no blank line after it is that error, not a cut stream."""
    h = harness()
    error = {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens"}
    last = ev("error", error=error).rstrip(b"\n")
    result, count = run(h.call(Reply(content_type=content_type, chunks=[*GOOD_STREAM[:4], last])))
    assert isinstance(result, ProviderError)
    assert result.error.code == "context_overflow"
    assert result.error.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    assert not result.error.retryable
    assert count == 1


@pytest.mark.parametrize("content_type", [SSE, "application/json"])
def test_a_cut_off_stream_is_a_truncation(content_type: str) -> None:
    h = harness()
    for chunks in ([*GOOD_STREAM[:4]], [*GOOD_STREAM[:4], GOOD_STREAM[4][:30]]):
        reply = Reply(content_type=content_type, chunks=chunks)
        result, _ = run(h.call(reply, retry=RetryPolicy.disabled()))
        assert isinstance(result, ProviderError)
        assert (result.error.code, result.error.retryable) == ("transport", True)
        assert "no message_stop or stop_reason" in result.error.message


def test_a_5xx_prompt_too_long_stays_a_context_overflow() -> None:
    """The vendor's retryable error types do not override what the message says."""
    h = harness()
    body = error_body("api_error", "prompt is too long: context window exceeded")
    result, count = run(h.call(Reply(status=500, chunks=[body])))
    assert isinstance(result, ProviderError)
    assert result.error.code == "context_overflow"
    assert not result.error.retryable
    assert count == 1


def test_an_unusual_5xx_with_an_overloaded_type_is_retried() -> None:
    h = harness()
    busy = Reply(status=520, chunks=[error_body("overloaded_error", "Overloaded")])
    result, count = run(h.call(busy, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2


def test_headers_take_the_shared_json_shape() -> None:
    provider = AnthropicProvider(api_key=API_KEY, betas=["b1"], extra_headers={"x-extra": "1"})
    assert provider.headers({"model": "claude-sonnet-4-5"}, stream=True) == {
        "x-api-key": API_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "b1",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "x-extra": "1",
    }
    assert provider.headers({}, stream=False)["Accept"] == "application/json"


def test_non_json_error_body_keeps_its_text() -> None:
    h = harness()
    result, _ = run(
        h.call(Reply(status=503, chunks=[b"upstream unavailable"]), retry=RetryPolicy.disabled())
    )
    assert isinstance(result, ProviderError)
    assert result.error.retryable
    assert "HTTP 503" in result.error.message
    assert "upstream unavailable" in result.error.message


# ------------------------------------------------------------------ construction


def test_from_env() -> None:
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY is not set"):
        anthropic_from_env(env={})
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY is not set"):
        anthropic_from_env(env={"ANTHROPIC_API_KEY": "  "})
    default = anthropic_from_env(env={"ANTHROPIC_API_KEY": API_KEY})
    assert default.base_url == ANTHROPIC_BASE_URL == "https://api.anthropic.com"
    assert default.name == "anthropic"
    custom = anthropic_from_env(
        env={"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/v1/"},
        cache="none",
    )
    assert custom.base_url == "http://127.0.0.1:9"
    assert custom.cache == "none"
    assert API_KEY not in repr(custom)
    with pytest.raises(ValueError, match="api_key must not be empty"):
        AnthropicProvider(api_key="")
