"""Gemini failures over a real loopback connection: cuts, stalls, retries, errors, secrets."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from provider_support import API_KEY, Harness, Reply, failed, ignore_event, no_secret, run, serving

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    TerminalReason,
    ToolCallOutput,
)
from lash.providers import TextDeltaEvent
from lash.providers.gemini import GeminiProvider
from lash.providers.http import RetryPolicy, Timeouts

REQUEST = LlmRequest(model="gemini-test", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
SSE = "text/event-stream"
JSON = "application/json; charset=UTF-8"


def element(text: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if text is not None:
        candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "responseId": "resp-1", **extra}


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


USAGE = {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}
PAYLOADS = [element("Hel"), element("lo"), element("", "STOP", usageMetadata=USAGE)]
GOOD_STREAM = [sse(p) for p in PAYLOADS]
GOOD_ARRAY = [
    b"[" + json.dumps(PAYLOADS[0]).encode(),
    b"\n,\r\n" + json.dumps(PAYLOADS[1]).encode(),
    b"\n,\r\n" + json.dumps(PAYLOADS[2]).encode() + b"\n]",
]


def harness() -> Harness:
    return Harness(GeminiProvider, REQUEST)


@pytest.mark.parametrize(("content_type", "chunks"), [(SSE, GOOD_STREAM), (JSON, GOOD_ARRAY)])
def test_success_streams_text(content_type: str, chunks: list[bytes]) -> None:
    h = harness()
    result, count = run(h.call(Reply(content_type=content_type, chunks=chunks)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert [e.text for e in h.events if isinstance(e, TextDeltaEvent)] == ["Hel", "lo"]
    assert result.usage.input_tokens == 5
    assert result.terminal_reason is TerminalReason.STOP
    assert count == 1
    assert h.sleeps == []


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize(
    ("content_type", "chunks"),
    [
        (SSE, [GOOD_STREAM[0], GOOD_STREAM[1][:15]]),  # inside an event
        (SSE, GOOD_STREAM[:2]),  # at an event boundary, before the finish reason
        (JSON, [GOOD_ARRAY[0], GOOD_ARRAY[1][:20]]),  # inside an element
        (JSON, GOOD_ARRAY[:2]),  # between elements, before the closing bracket
    ],
    ids=["sse-mid-event", "sse-boundary", "array-mid-element", "array-boundary"],
)
def test_stream_cut_is_a_retryable_error(
    chunked: bool, content_type: str, chunks: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    reply = Reply(content_type=content_type, chunks=chunks, chunked=chunked, abort=chunked)
    result, count = run(h.call(reply, retry=RetryPolicy.disabled()))
    error = failed(result).error
    assert error.retryable
    assert error.code == "transport"
    if not chunked:  # a clean close: only the parser can tell the body was cut
        assert "ended before the response was complete" in error.message
    assert count == 1
    no_secret(h, caplog)


def test_cut_stream_is_retried_and_then_succeeds() -> None:
    h = harness()
    cut = Reply(content_type=SSE, chunks=[GOOD_STREAM[0], GOOD_STREAM[1][:9]], abort=True)
    result, count = run(h.call(cut, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert len(h.retries) == 1


@pytest.mark.parametrize(("content_type", "chunks"), [(SSE, GOOD_STREAM), (JSON, GOOD_ARRAY)])
def test_slow_chunk_times_out(
    content_type: str, chunks: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    result, _ = run(
        h.call(
            Reply(content_type=content_type, chunks=chunks, delay=0.5),
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
            b'{"error": {"code": 429, "message": "Resource has been exhausted '
            b'(e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}'
        ],
    )
    result, count = run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert h.sleeps == [3.0]
    [status] = h.retries
    assert (status.wait_seconds, status.attempt, status.max_attempts) == (3.0, 1, 4)
    assert "RESOURCE_EXHAUSTED" in status.reason
    assert "Resource has been exhausted" in status.reason
    assert h.events[0] == status  # the retry status precedes every delta of the next attempt
    no_secret(h, caplog)


def test_429_retry_info_in_the_body_is_honoured() -> None:
    h = harness()
    body = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.5s"},
            ],
        }
    }
    limited = Reply(status=429, chunks=[json.dumps(body).encode()])
    result, count = run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    assert h.sleeps == [7.5]


def test_500_then_success_uses_backoff() -> None:
    h = harness()
    failing = Reply(
        status=500,
        chunks=[b'{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}'],
    )
    result, count = run(h.call(failing, failing, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 3
    assert h.sleeps == [2.0, 4.0]
    assert [r.attempt for r in h.retries] == [1, 2]
    assert "INTERNAL" in h.retries[0].reason


def test_retries_stop_after_max_attempts() -> None:
    h = harness()
    failing = Reply(status=503, chunks=[b"<html>unavailable</html>"])
    retry = RetryPolicy(max_attempts=3, base_delay=1, max_delay=1.5, jitter=1.0)
    result, count = run(h.call(failing, retry=retry))
    error = failed(result).error
    assert error.code == "server_error"
    assert "HTTP 503" in error.message
    assert count == 3
    assert h.sleeps == [1.5, 2.0]


@pytest.mark.parametrize(
    ("content_type", "chunks", "detail"),
    [
        (SSE, [GOOD_STREAM[0], b"data: {not json\r\n\r\n", *GOOD_STREAM[1:]], "{not json"),
        (JSON, [GOOD_ARRAY[0], b"\n,\r\n{not json}", *GOOD_ARRAY[1:]], "{not json}"),
        (JSON, [GOOD_ARRAY[0], b"\n;\r\n", *GOOD_ARRAY[1:]], "expected ',' or ']'"),
        (JSON, [b'[{"candidates": []}, 42]'], "is not an object"),
    ],
    ids=["sse", "array-element", "array-separator", "array-scalar"],
)
def test_malformed_json_in_a_stream(
    content_type: str, chunks: list[bytes], detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    reply = Reply(content_type=content_type, chunks=chunks)
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled()))
    error = failed(result).error
    assert error.code == "malformed_response"
    assert detail in error.message
    no_secret(h, caplog)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("content_type", "body", "code", "detail"),
    [
        (JSON, b"", "malformed_response", "the response body is empty"),
        (JSON, b"<html>oops</html>", "malformed_response", "unrecognized response body"),
        (JSON, b'{"candidates": ', "malformed_response", "invalid JSON body"),
        (SSE, b"", "transport", "ended before the response was complete"),
        (SSE, b": keep-alive\r\n\r\n", "transport", "ended before the response was complete"),
    ],
    ids=["empty", "html", "cut-object", "empty-sse", "comment-only-sse"],
)
def test_unusable_bodies_are_clear_errors(
    content_type: str, body: bytes, code: str, detail: str, stream: bool
) -> None:
    h = harness()
    reply = Reply(content_type=content_type, chunks=[body] if body else [])
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled(), stream=stream))
    error = failed(result).error
    assert error.code == code
    assert error.retryable
    assert "gemini generateContent" in error.message
    assert detail in error.message


def test_invalid_utf8_in_stream() -> None:
    h = harness()
    chunks = [GOOD_STREAM[0], b'data: {"x": "\xff"}\r\n\r\n', *GOOD_STREAM[1:]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert "invalid UTF-8" in failed(result).error.message


def test_abrupt_disconnect_before_headers_is_retried() -> None:
    h = harness()
    result, count = run(h.call(Reply(hangup=True), Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    [status] = h.retries
    assert "transport error" in status.reason


def test_invalid_api_key_is_an_auth_error_and_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    body = {
        "error": {
            "code": 400,
            "message": f"API key not valid. Please pass a valid API key. ({API_KEY})",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ],
        }
    }
    with caplog.at_level(logging.DEBUG):
        result, count = run(h.call(Reply(status=400, chunks=[json.dumps(body).encode()])))
    error = failed(result).error
    assert error.code == "auth"
    assert not error.retryable
    assert count == 1
    assert h.retries == []
    assert "[REDACTED]" in error.message
    assert error.raw is not None
    no_secret(h, caplog)


@pytest.mark.parametrize(
    ("status", "status_text", "message", "code", "terminal"),
    [
        (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.", "auth", None),
        (
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576).",
            "context_overflow",
            TerminalReason.CONTEXT_OVERFLOW,
        ),
        (
            400,
            "FAILED_PRECONDITION",
            "User location is not supported for the API use.",
            "validation",
            None,
        ),
    ],
)
def test_http_errors_are_classified(
    status: int, status_text: str, message: str, code: str, terminal: TerminalReason | None
) -> None:
    h = harness()
    body = {"error": {"code": status, "message": message, "status": status_text}}
    result, count = run(h.call(Reply(status=status, chunks=[json.dumps(body).encode()])))
    error = failed(result).error
    assert error.code == code
    assert not error.retryable
    assert count == 1
    assert f"HTTP {status} {status_text}: {message}" in error.message
    assert error.terminal_reason is (terminal or TerminalReason.PROVIDER_ERROR)


def test_error_inside_a_json_array_body() -> None:
    h = harness()
    body = b'[{"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}]'
    result, _ = run(h.call(Reply(status=404, chunks=[body])))
    error = failed(result).error
    assert error.code == "not_found"
    assert "HTTP 404 NOT_FOUND: models/x is not found" in error.message


@pytest.mark.parametrize(("content_type", "framing"), [(SSE, "sse"), (JSON, "array")])
def test_in_stream_error_is_classified_and_retried(
    content_type: str, framing: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    err = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    if framing == "sse":
        broken = [GOOD_STREAM[0], sse(err)]
    else:
        broken = [GOOD_ARRAY[0], b"\n,\r\n" + json.dumps(err).encode() + b"\n]"]
    result, count = run(
        h.call(
            Reply(content_type=content_type, chunks=broken),
            Reply(
                content_type=content_type, chunks=GOOD_STREAM if framing == "sse" else GOOD_ARRAY
            ),
        )
    )
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert "overloaded" in h.retries[0].reason
    assert "UNAVAILABLE" in h.retries[0].reason
    no_secret(h, caplog)


def test_in_stream_client_error_is_not_retried() -> None:
    h = harness()
    err = {
        "error": {
            "code": 400,
            "message": "Request contains an invalid argument.",
            "status": "INVALID_ARGUMENT",
        }
    }
    result, count = run(h.call(Reply(content_type=SSE, chunks=[GOOD_STREAM[0], sse(err)])))
    error = failed(result).error
    assert not error.retryable
    assert error.code == "validation"
    assert count == 1


@pytest.mark.parametrize("stream", [True, False])
def test_malformed_function_call_is_a_stop_with_a_diagnostic(stream: bool) -> None:
    h = harness()
    payload = element(None, "MALFORMED_FUNCTION_CALL", usageMetadata=USAGE)
    payload["candidates"][0]["finishMessage"] = "Malformed function call: print(default_api.x("
    reply = (
        Reply(content_type=SSE, chunks=[sse(payload)])
        if stream
        else Reply(content_type=JSON, chunks=[json.dumps(payload).encode()])
    )
    result, count = run(h.call(reply, stream=stream))
    assert isinstance(result, LlmResponse)
    assert count == 1  # a model outcome, not a transport failure: not retried here
    assert result.terminal_reason is TerminalReason.PROVIDER_ERROR
    assert result.terminal_diagnostic is not None
    assert "MALFORMED_FUNCTION_CALL" in result.terminal_diagnostic
    assert "could not be parsed" in result.terminal_diagnostic
    assert "print(default_api.x(" in result.terminal_diagnostic


def test_prompt_block_in_a_stream_is_a_content_filter() -> None:
    h = harness()
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": USAGE}
    result, _ = run(h.call(Reply(content_type=SSE, chunks=[sse(blocked)])))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is TerminalReason.CONTENT_FILTER
    assert result.terminal_diagnostic == "prompt blocked (PROHIBITED_CONTENT)"


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("RECITATION", TerminalReason.CONTENT_FILTER),
        ("IMAGE_SAFETY", TerminalReason.CONTENT_FILTER),
        ("SPII", TerminalReason.CONTENT_FILTER),
        ("MAX_TOKENS", TerminalReason.OUTPUT_LIMIT),
        ("OTHER", TerminalReason.PROVIDER_ERROR),
        ("SOMETHING_NEW", TerminalReason.PROVIDER_ERROR),
    ],
)
def test_finish_reasons(finish: str, reason: TerminalReason) -> None:
    h = harness()
    result, _ = run(h.call(Reply(content_type=SSE, chunks=[sse(element("x", finish))])))
    assert isinstance(result, LlmResponse)
    assert result.terminal_reason is reason
    if reason is not TerminalReason.OUTPUT_LIMIT:
        assert result.terminal_diagnostic is not None
        assert finish in result.terminal_diagnostic


def test_streamed_partial_function_arguments_are_merged() -> None:
    """Vertex-style ``partialArgs``: one call whose arguments arrive in pieces."""

    def call_part(call: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"functionCall": call}]},
                    "index": 0,
                    **extra,
                }
            ],
            "responseId": "resp-9",
        }

    pieces = [
        call_part({"name": "get_weather", "willContinue": True}),
        call_part(
            {
                "partialArgs": [
                    {"jsonPath": "$.location", "stringValue": "Bos", "willContinue": True}
                ],
                "willContinue": True,
            }
        ),
        call_part(
            {
                "partialArgs": [
                    {"jsonPath": "$.location", "stringValue": "ton"},
                    {"jsonPath": "$.days[1]", "numberValue": 2},
                    {"jsonPath": "$.opts.metric", "boolValue": True},
                ],
                "willContinue": True,
            }
        ),
        call_part({}, finishReason="STOP"),
        call_part({"name": "get_time", "args": {"tz": "UTC"}}, finishReason="STOP"),
    ]
    h = harness()
    result, _ = run(h.call(Reply(content_type=SSE, chunks=[sse(p) for p in pieces])))
    assert isinstance(result, LlmResponse)
    calls = [p for p in result.parts if isinstance(p, ToolCallOutput)]
    assert [(c.call_id, c.tool_name) for c in calls] == [
        ("gemini-resp-9-0", "get_weather"),
        ("gemini-resp-9-1", "get_time"),
    ]
    assert json.loads(calls[0].input_json) == {
        "location": "Boston",
        "days": [None, 2],
        "opts": {"metric": True},
    }
    assert json.loads(calls[1].input_json) == {"tz": "UTC"}
    assert result.terminal_reason is TerminalReason.TOOL_USE


def test_vendor_call_ids_are_kept() -> None:
    h = harness()
    payload = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"id": "fc-1", "name": "f", "args": {"a": 1}}}],
                },
                "finishReason": "STOP",
            }
        ]
    }
    result, _ = run(h.call(Reply(content_type=SSE, chunks=[sse(payload)])))
    assert isinstance(result, LlmResponse)
    [call] = result.parts
    assert isinstance(call, ToolCallOutput)
    assert call.call_id == "fc-1"
    assert call.replay is not None
    assert call.replay.item_id == "fc-1"


def test_request_headers_and_body_for_a_streamed_call() -> None:
    async def go() -> Any:
        async with serving(Reply(content_type=SSE, chunks=GOOD_STREAM)) as server:
            async with GeminiProvider(api_key=API_KEY, base_url=server.base_url) as provider:
                await provider.complete(REQUEST, ignore_event)
            return server.received[0]

    got = run(go())
    assert got.method == "POST"
    assert got.path == "/v1/models/gemini-test:streamGenerateContent?alt=sse"
    assert got.headers["x-goog-api-key"] == API_KEY
    assert got.headers["accept"] == "text/event-stream"
    assert "authorization" not in got.headers
    assert got.json() == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
