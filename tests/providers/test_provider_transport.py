"""Failures over a real loopback connection: cuts, stalls, retries, auth, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from provider_support import API_KEY, Harness, Reply, ignore_event, no_secret, run, serving

from lash.kernel.llm import LlmMessage, LlmRequest, LlmResponse, LlmRole
from lash.providers import ProviderError
from lash.providers.http import ProviderHandle, RetryPolicy, Timeouts
from lash.providers.openai_chat import OpenAIChatProvider

REQUEST = LlmRequest(model="gpt-4o", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
SSE = "text/event-stream"


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


GOOD_STREAM = [
    chunk("Hel"),
    chunk("lo"),
    chunk(None, "stop"),
    chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 2}, choices=[]),
    b"data: [DONE]\n\n",
]


def harness() -> Harness:
    return Harness(OpenAIChatProvider, REQUEST)


def test_success_streams_text() -> None:
    h = harness()
    result, count = run(h.call(Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert result.usage.input_tokens == 5
    assert count == 1
    assert h.sleeps == []


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_cut_mid_event_is_a_retryable_error(
    chunked: bool, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness()
    cut = [GOOD_STREAM[0], GOOD_STREAM[1][:15]]
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
        headers={"Retry-After": "3"},
        chunks=[b'{"error": {"message": "Rate limit reached", "type": "requests"}}'],
    )
    result, count = run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert count == 2
    assert h.sleeps == [3.0]
    [status] = h.retries
    assert (status.wait_seconds, status.attempt, status.max_attempts) == (3.0, 1, 4)
    assert "Rate limit reached" in status.reason
    # the retry status precedes every delta of the successful attempt
    assert h.events[0] == status
    no_secret(h, caplog)


def test_retry_after_is_capped() -> None:
    h = harness()
    limited = Reply(status=429, headers={"Retry-After": "3600"}, chunks=[b"{}"])
    run(h.call(limited, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert h.sleeps == [60.0]


def test_500_then_success_uses_backoff() -> None:
    h = harness()
    failing = Reply(status=500, chunks=[b'{"error": {"message": "boom"}}'])
    result, count = run(h.call(failing, failing, Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 3
    assert h.sleeps == [2.0, 4.0]
    assert [r.attempt for r in h.retries] == [1, 2]


def test_retries_stop_after_max_attempts() -> None:
    h = harness()
    failing = Reply(status=503, chunks=[b"unavailable"])
    retry = RetryPolicy(max_attempts=3, base_delay=1, max_delay=1.5, jitter=1.0)
    result, count = run(h.call(failing, retry=retry))
    assert isinstance(result, ProviderError)
    assert result.error.code == "server_error"
    assert count == 3
    assert h.sleeps == [1.5, 2.0]  # min(base * 2**n, max) + jitter * 0.5


def test_malformed_json_in_stream(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    chunks = [GOOD_STREAM[0], b"data: {not json\n\n", *GOOD_STREAM[2:]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert result.error.code == "malformed_response"
    assert "invalid JSON in stream event" in result.error.message
    assert "{not json" in result.error.message
    no_secret(h, caplog)


def test_invalid_utf8_in_stream() -> None:
    h = harness()
    chunks = [GOOD_STREAM[0], b'data: {"x": "\xff"}\n\n', *GOOD_STREAM[2:]]
    result, _ = run(h.call(Reply(content_type=SSE, chunks=chunks), retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert "invalid UTF-8" in result.error.message


def test_abrupt_disconnect_before_headers_is_retried() -> None:
    h = harness()
    result, count = run(h.call(Reply(hangup=True), Reply(content_type=SSE, chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert count == 2
    [status] = h.retries
    assert "transport error" in status.reason


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
    assert isinstance(result, ProviderError)
    assert result.error.code == "auth"
    assert not result.error.retryable
    assert count == 1
    assert h.retries == []
    assert "[REDACTED]" in result.error.message
    assert result.error.raw is not None
    no_secret(h, caplog)


def test_in_stream_error_event_is_classified(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    err = b'data: {"error": {"message": "The server is overloaded", "code": "server_error"}}\n\n'
    result, count = run(
        h.call(
            Reply(content_type=SSE, chunks=[GOOD_STREAM[0], err]),
            Reply(content_type=SSE, chunks=GOOD_STREAM),
        )
    )
    assert isinstance(result, LlmResponse)
    assert count == 2
    assert "overloaded" in h.retries[0].reason
    no_secret(h, caplog)


def test_request_goes_to_chat_completions_with_bearer_auth() -> None:
    async def go() -> tuple[str, dict[str, str], Any]:
        async with serving(Reply(content_type=SSE, chunks=GOOD_STREAM)) as server:
            async with OpenAIChatProvider(api_key=API_KEY, base_url=server.base_url) as p:
                await p.complete(REQUEST, ignore_event)
            got = server.received[0]
            return got.path, got.headers, got.json()

    path, headers, body = run(go())
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["accept"] == "text/event-stream"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_concurrency_limit() -> None:
    active = 0
    peak = 0

    class Slow:
        name = "slow"

        async def complete(self, request: LlmRequest, on_event: object = None) -> LlmResponse:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1
            return LlmResponse(full_text="ok")

    async def go() -> None:
        handle = ProviderHandle(Slow(), max_concurrency=2)
        results = await asyncio.gather(*(handle.complete(REQUEST) for _ in range(6)))
        assert all(r.full_text == "ok" for r in results)

    run(go())
    assert peak == 2


# ------------------------------------------------------------------ the last event of a body


QUOTA_ERROR = (
    b'data: {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
)


@pytest.mark.parametrize("content_type", [SSE, "application/json"])
def test_an_error_in_the_unterminated_last_event_keeps_its_classification(
    content_type: str,
) -> None:
    """A final error event with no blank line after it is that error, not a cut stream."""
    h = harness()
    result, count = run(
        h.call(Reply(content_type=content_type, chunks=[GOOD_STREAM[0], QUOTA_ERROR]))
    )
    assert isinstance(result, ProviderError)
    assert result.error.code == "quota"
    assert not result.error.retryable
    assert "exceeded your current quota" in result.error.message
    assert count == 1


@pytest.mark.parametrize("content_type", [SSE, "application/json"])
def test_a_half_sent_last_event_is_a_truncation(content_type: str) -> None:
    h = harness()
    chunks = [GOOD_STREAM[0], GOOD_STREAM[1][:15]]
    reply = Reply(content_type=content_type, chunks=chunks)
    result, _ = run(h.call(reply, retry=RetryPolicy.disabled()))
    assert isinstance(result, ProviderError)
    assert (result.error.code, result.error.retryable) == ("transport", True)
    assert "ended before the response was complete" in result.error.message


def test_an_event_stream_sent_as_json_that_is_cut_off_is_a_truncation() -> None:
    """Two deltas and no finish_reason or [DONE] is not a whole reply, whatever the content type."""
    h = harness()
    reply = Reply(content_type="application/json", chunks=GOOD_STREAM[:2])
    result, count = run(h.call(reply, retry=RetryPolicy.disabled(), stream=False))
    assert isinstance(result, ProviderError)
    assert (result.error.code, result.error.retryable) == ("transport", True)
    assert "ended before the response was complete" in result.error.message
    assert count == 1


def test_an_event_stream_sent_as_json_is_read_like_a_stream() -> None:
    h = harness()
    result, _ = run(h.call(Reply(content_type="application/json", chunks=GOOD_STREAM)))
    assert isinstance(result, LlmResponse)
    assert result.full_text == "Hello"
    assert result.usage.input_tokens == 5
