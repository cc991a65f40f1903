"""Responses API failures over a real loopback connection: cuts, stalls, retries, errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from provider_support import API_KEY, Harness, Reply, failed, no_secret, run

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    TerminalReason,
    ToolCallOutput,
)
from lash.providers import (
    TextDeltaEvent,
    UsageEvent,
)
from lash.providers.http import RetryPolicy, Timeouts
from lash.providers.openai_responses import OpenAIResponsesProvider

REQUEST = LlmRequest(model="gpt-5", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
SSE = "text/event-stream"
USAGE = {
    "input_tokens": 20,
    "input_tokens_details": {"cached_tokens": 8},
    "output_tokens": 12,
    "output_tokens_details": {"reasoning_tokens": 5},
}


def event(kind: str, **fields: Any) -> bytes:
    payload = json.dumps({"type": kind, **fields})
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def response_object(status: str = "completed", output: list[Any] | None = None, **kw: Any) -> Any:
    return {"id": "resp_1", "object": "response", "status": status, "output": output or [], **kw}


def message(text: str, item_id: str = "msg_1", **kw: Any) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}]
    return {"type": "message", "id": item_id, "role": "assistant", "content": content, **kw}


HELLO = message("Hello")
GOOD_STREAM = [
    event("response.created", response=response_object("in_progress")),
    event("response.output_item.added", output_index=0, item=message("", content=[])),
    event("response.output_text.delta", item_id="msg_1", output_index=0, delta="Hel"),
    event("response.output_text.delta", item_id="msg_1", output_index=0, delta="lo"),
    event("response.output_item.done", output_index=0, item=HELLO),
    event("response.completed", response=response_object(output=[HELLO], usage=USAGE)),
]


def harness() -> Harness:
    return Harness(OpenAIResponsesProvider, REQUEST)


def test_success_streams_text_and_usage() -> None:
    h = harness()
    result, count = run(h.call(Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert result.terminal_reason is TerminalReason.STOP
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (20, 8)
    assert (result.usage.output_tokens, result.usage.reasoning_tokens) == (7, 5)
    assert [e.text for e in h.events if isinstance(e, TextDeltaEvent)] == ["Hel", "lo"]
    assert [e.usage for e in h.events if isinstance(e, UsageEvent)] == [result.usage]
    assert count == 1
    assert h.bodies[0]["stream"] is True
    assert h.sleeps == []


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_cut_mid_event_is_a_retryable_error(
    chunked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    cut = [*GOOD_STREAM[:3], GOOD_STREAM[3][:40]]
    result, count = run(
        h.call(
            Reply(content_type=SSE, chunks=cut, chunked=chunked, abort=chunked),
            retry=RetryPolicy.disabled(),
        )
    )
    error = failed(result).error
    assert error.retryable
    assert error.code == "transport"
    wanted = "transport error" if chunked else "ended before the response was complete"
    assert wanted in error.message
    assert count == 1
    no_secret(h, caplog)


def test_stream_without_a_terminal_event_is_truncated() -> None:
    h = harness()
    result, _ = run(
        h.call(Reply(content_type=SSE, chunks=GOOD_STREAM[:-1]), retry=RetryPolicy.disabled())
    )
    assert failed(result).error.code == "transport"


def test_stream_cut_is_retried_then_succeeds() -> None:
    h = harness()
    cut = Reply(content_type=SSE, chunks=GOOD_STREAM[:3], abort=True)
    result, count = run(h.call(cut, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert [r.attempt for r in h.retries] == [1]


def test_slow_chunk_times_out(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    result, _ = run(
        h.call(
            Reply(content_type=SSE, chunks=GOOD_STREAM, delay=0.5),
            timeouts=Timeouts(chunk=0.1),
            retry=RetryPolicy.disabled(),
        )
    )
    error = failed(result).error
    assert error.code == "timeout"
    assert error.retryable
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
    assert failed(result).error.code == "timeout"


def test_429_with_retry_after_then_success(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    limited = Reply(
        status=429,
        headers={"Retry-After": "3"},
        chunks=[
            b'{"error": {"message": "Rate limit reached for gpt-5", "type": "requests",'
            b' "code": "rate_limit_exceeded"}}'
        ],
    )
    result, count = run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert h.sleeps == [3.0]
    [status] = h.retries
    assert (status.wait_seconds, status.attempt, status.max_attempts) == (3.0, 1, 4)
    assert "Rate limit reached" in status.reason
    assert h.events[0] == status
    assert h.bodies[0] == h.bodies[1]  # the retry resends the same stateless body
    no_secret(h, caplog)


def test_500_then_success_uses_backoff() -> None:
    h = harness()
    failing = Reply(status=500, chunks=[b'{"error": {"message": "boom", "type": "server_error"}}'])
    result, count = run(h.call(failing, failing, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 3
    assert h.sleeps == [2.0, 4.0]
    assert [r.attempt for r in h.retries] == [1, 2]


def test_malformed_json_in_stream(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    chunks = [*GOOD_STREAM[:3], b"event: response.output_text.delta\ndata: {not json\n\n"]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    error = failed(result).error
    assert error.code == "malformed_response"
    assert "invalid JSON in stream event" in error.message
    assert "{not json" in error.message
    no_secret(h, caplog)


@pytest.mark.parametrize(
    ("chunk", "wanted"),
    [
        (b"data: [1, 2]\n\n", "stream event is not an object"),
        (event("response.output_text.delta", output_index=10**9, delta="x"), "output_index"),
        (event("response.output_item.added", output_index=0), "without an item object"),
        (event("response.completed", response="done"), "final response is not an object"),
        (b'data: {"type": "response.output_text.delta", "delta": "\xff"}\n\n', "invalid UTF-8"),
    ],
)
def test_events_that_cannot_be_applied_are_malformed(chunk: bytes, wanted: str) -> None:
    h = harness()
    chunks = [GOOD_STREAM[0], chunk, *GOOD_STREAM[1:]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    error = failed(result).error
    assert error.code == "malformed_response"
    assert wanted in error.message


def test_abrupt_disconnect_before_headers_is_retried() -> None:
    h = harness()
    result, count = run(h.call(Reply(hangup=True), Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    [status] = h.retries
    assert "transport error" in status.reason


def test_abrupt_disconnect_mid_json_body() -> None:
    h = harness()
    body = json.dumps(response_object(output=[HELLO])).encode()
    reply = Reply(chunks=[body[:30]], abort=True)
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled(), stream=False))
    error = failed(result).error
    assert error.retryable
    assert error.code in ("transport", "malformed_response")


def test_401_is_an_auth_error_and_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    body = json.dumps(
        {
            "error": {
                "message": f"Incorrect API key provided: {API_KEY}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        }
    ).encode()
    with caplog.at_level(logging.DEBUG):
        result, count = run(h.call(Reply(status=401, chunks=[body])))
    error = failed(result).error
    assert error.code == "auth"
    assert not error.retryable
    assert count == 1
    assert h.retries == []
    assert "[REDACTED]" in error.message
    assert error.raw is not None
    assert "[REDACTED]" in error.raw
    no_secret(h, caplog)


def test_context_overflow_is_classified() -> None:
    h = harness()
    body = json.dumps(
        {
            "error": {
                "message": "Your input exceeds the context window of this model.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        }
    ).encode()
    result, count = run(h.call(Reply(status=400, chunks=[body])))
    error = failed(result).error
    assert error.code == "context_overflow"
    assert error.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
    assert not error.retryable
    assert count == 1


def test_retryable_in_stream_error_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    err = event(
        "error",
        code="server_error",
        message="The server had an error while processing your request.",
        param=None,
    )
    result, count = run(
        h.call(
            Reply(content_type=SSE, chunks=[*GOOD_STREAM[:3], err]),
            Reply(content_type=SSE, chunks=GOOD_STREAM),
        )
    )
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert "server had an error" in h.retries[0].reason
    no_secret(h, caplog)


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [("rate_limit_exceeded", "stream_error", True), ("invalid_prompt", "stream_error", False)],
)
def test_response_failed_is_classified(code: str, kind: str, retryable: bool) -> None:
    h = harness()
    failed_event = event(
        "response.failed",
        response=response_object("failed", error={"code": code, "message": f"failed: {code}"}),
    )
    result, _ = run(
        h.call(
            Reply(content_type=SSE, chunks=[GOOD_STREAM[0], failed_event]),
            retry=RetryPolicy.disabled(),
        )
    )
    error = failed(result).error
    assert (error.code, error.retryable) == (kind, retryable)
    assert f"failed: {code}" in error.message


@pytest.mark.parametrize(
    "body",
    [
        response_object("failed", error={"code": "server_error", "message": "oops"}),
        {"error": {"code": "server_error", "message": "oops"}},
    ],
)
def test_failed_status_in_a_json_body_is_an_error(body: dict[str, Any]) -> None:
    h = harness()
    result, _ = run(h.call(Reply(chunks=[json.dumps(body).encode()]), retry=RetryPolicy.disabled()))
    error = failed(result).error
    assert error.retryable
    assert error.code == "stream_error"
    assert "oops" in error.message


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("reason", "terminal", "diagnostic"),
    [
        ("max_output_tokens", TerminalReason.OUTPUT_LIMIT, None),
        ("content_filter", TerminalReason.CONTENT_FILTER, "incomplete: content_filter"),
        ("something_new", TerminalReason.PROVIDER_ERROR, "incomplete: something_new"),
    ],
)
def test_incomplete_responses_map_to_terminal_reasons(
    reason: str, terminal: TerminalReason, diagnostic: str | None, stream: bool
) -> None:
    h = harness()
    final = response_object(
        "incomplete", output=[HELLO], incomplete_details={"reason": reason}, usage=USAGE
    )
    if stream:
        chunks = [*GOOD_STREAM[:-1], event("response.incomplete", response=final)]
        reply = Reply(content_type=SSE, chunks=chunks)
    else:
        reply = Reply(chunks=[json.dumps(final).encode()])
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled(), stream=stream))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert result.terminal_reason is terminal
    assert result.terminal_diagnostic == diagnostic


def test_cancelled_and_reasonless_incomplete() -> None:
    h = harness()
    cancelled = Reply(chunks=[json.dumps(response_object("cancelled")).encode()])
    result, _ = run(h.call(cancelled, retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is TerminalReason.CANCELLED
    empty = Reply(chunks=[json.dumps(response_object("incomplete")).encode()])
    result, _ = run(h.call(empty, retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is TerminalReason.PROVIDER_ERROR


@pytest.mark.parametrize("stream", [True, False])
def test_refusal_is_a_content_filter_with_the_refusal_text(stream: bool) -> None:
    h = harness()
    refusal = {
        "type": "message",
        "id": "msg_r",
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": "I can't help with that."}],
    }
    if stream:
        chunks = [
            event("response.output_item.added", output_index=0, item={**refusal, "content": []}),
            event(
                "response.content_part.added",
                item_id="msg_r",
                output_index=0,
                content_index=0,
                part={"type": "refusal", "refusal": ""},
            ),
            event("response.refusal.delta", item_id="msg_r", output_index=0, delta="I can't "),
            event("response.refusal.delta", item_id="msg_r", output_index=0, delta="help."),
            event("response.completed", response=response_object()),
        ]
        reply = Reply(content_type=SSE, chunks=chunks)
        want = "refusal: I can't help."
    else:
        reply = Reply(chunks=[json.dumps(response_object(output=[refusal])).encode()])
        want = "refusal: I can't help with that."
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled(), stream=stream))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is TerminalReason.CONTENT_FILTER
    assert result.terminal_diagnostic == want
    assert result.full_text == ""
    assert not [e for e in h.events if isinstance(e, TextDeltaEvent)]


def test_streamed_tool_arguments_are_merged_by_item_id() -> None:
    """Two calls interleave their argument fragments; each call gets its own."""
    h = harness()

    def call(n: int, arguments: str = "") -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": f"fc_{n}",
            "call_id": f"call_{n}",
            "name": "lookup",
            "arguments": arguments,
        }

    def delta(n: int, piece: str) -> bytes:
        return event(
            "response.function_call_arguments.delta",
            item_id=f"fc_{n}",
            output_index=n,
            delta=piece,
        )

    chunks = [
        event("response.output_item.added", output_index=0, item=call(0)),
        event("response.output_item.added", output_index=1, item=call(1)),
        delta(0, '{"key": '),
        delta(1, '{"key": "b'),
        delta(0, '"a"}'),
        delta(1, 'ee"}'),
        event("response.completed", response=response_object()),
    ]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    calls = [p for p in result.parts if isinstance(p, ToolCallOutput)]
    assert [(c.call_id, json.loads(c.input_json)) for c in calls] == [
        ("call_0", {"key": "a"}),
        ("call_1", {"key": "bee"}),
    ]
    assert [c.replay.item_id if c.replay else None for c in calls] == ["fc_0", "fc_1"]
    assert result.terminal_reason is TerminalReason.TOOL_USE


def test_arguments_done_replaces_the_fragments() -> None:
    h = harness()
    item = {"type": "function_call", "id": "fc_0", "call_id": "c", "name": "t", "arguments": ""}
    chunks = [
        event("response.output_item.added", output_index=0, item=item),
        event("response.function_call_arguments.delta", item_id="fc_0", delta='{"x": 1'),
        event("response.function_call_arguments.done", item_id="fc_0", arguments='{"x": 10}'),
        event("response.completed", response=response_object()),
    ]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    [call] = [p for p in result.parts if isinstance(p, ToolCallOutput)]
    assert call.input_json == '{"x": 10}'


def test_mid_stream_usage_is_reported_and_merged() -> None:
    h = harness()
    early = response_object("in_progress", usage={"input_tokens": 20})
    late = response_object(output=[HELLO], usage={"input_tokens": 0, "output_tokens": 3})
    chunks = [event("response.in_progress", response=early), *GOOD_STREAM[1:-1]]
    chunks.append(event("response.completed", response=late))
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    usage_events = [e.usage for e in h.events if isinstance(e, UsageEvent)]
    assert [(u.input_tokens, u.output_tokens) for u in usage_events] == [(20, 0), (20, 3)]
    assert result.usage == usage_events[-1]


def test_json_reply_to_a_streaming_request_still_emits_events() -> None:
    h = harness()
    body = json.dumps(response_object(output=[HELLO], usage=USAGE)).encode()
    result, _ = run(h.call(Reply(chunks=[body]), retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    assert [e.text for e in h.events if isinstance(e, TextDeltaEvent)] == ["Hello"]
    assert [e.item_id for e in h.events if isinstance(e, TextDeltaEvent)] == ["msg_1"]
    assert [e.usage for e in h.events if isinstance(e, UsageEvent)] == [result.usage]


def test_sse_body_under_a_json_content_type_is_parsed_as_a_stream() -> None:
    h = harness()
    result, _ = run(
        h.call(Reply(chunks=[b"".join(GOOD_STREAM)]), retry=RetryPolicy.disabled(), stream=False)
    )
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    truncated = Reply(chunks=[b"".join(GOOD_STREAM[:-1])])
    result, _ = run(h.call(truncated, retry=RetryPolicy.disabled(), stream=False))
    assert failed(result).error.code == "transport"


def test_non_json_body_is_malformed() -> None:
    h = harness()
    result, _ = run(
        h.call(Reply(chunks=[b"<html>gateway</html>"]), retry=RetryPolicy.disabled(), stream=False)
    )
    error = failed(result).error
    assert error.code == "malformed_response"
    assert "<html>" in error.message


def test_bare_events_without_positions_still_assemble() -> None:
    """Minimal compatible servers omit item ids and output indexes."""
    h = harness()
    chunks = [
        event("response.reasoning_summary_text.delta", delta="Think"),
        event("response.reasoning_summary_text.delta", delta="ing"),
        event("response.output_text.delta", delta="Hel"),
        event("response.output_text.delta", delta="lo"),
        event("response.completed", response=response_object(usage={"input_tokens": 3})),
    ]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert [type(p).__name__ for p in result.parts] == ["ReasoningOutput", "TextOutput"]
    assert [p.text for p in result.parts] == ["Thinking", "Hello"]
    assert result.usage.input_tokens == 3
