"""The shell every HTTP provider shares; vendors add request mapping and reply assembly.

:class:`HttpProvider` holds the options all adapters take (API key, base URL,
model prefix, HTTP client, attachment resolver, timeouts, name, stream flag,
extra headers), owns or borrows the httpx client, resolves the image
attachments a request uses, and runs the POST through the transport helpers of
:mod:`lash.providers.http` (response-start, per-chunk and whole-body time
limits; an HTTP error status becomes a classified :class:`ProviderCallError`).
The SSE providers share one event loop (:meth:`HttpProvider._read_events`),
fed by the streamed body and by an event stream sent with another content type;
each vendor supplies its hooks as an :class:`EventSink`. The functions below it
are the small pieces the request mappers and usage normalizers have in common.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from .._closing import AsyncClosing
from ..kernel.attachments import AttachmentRef
from ..kernel.llm import (
    ImageBlock,
    LlmCallError,
    LlmOutputPart,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmUsage,
    ReasoningOutput,
    TextOutput,
)
from .base import ReasoningDeltaEvent, StreamCallback, TextDeltaEvent, UsageEvent
from .classify import Classification, FailureKind, make_call_error
from .http import (
    ProviderCallError,
    Timeouts,
    open_response,
    parse_retry_after,
    read_body,
    read_chunks,
)
from .models import REASONING_VARIANTS
from .sse import SseDecoder, SseError, SseEvent

__all__ = [
    "IMAGE_MIMES",
    "AttachmentResolver",
    "ErrorBody",
    "EventSink",
    "HttpProvider",
    "attached_image",
    "data_url",
    "emit_usage",
    "image_mime",
    "merge_usage",
    "token_count",
    "validation_error",
    "variant_effort",
]

AttachmentResolver = Callable[[Sequence[AttachmentRef]], Awaitable[dict[str, bytes]]]
"""Resolves attachment references to their bytes, keyed by attachment id."""

IMAGE_MIMES = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/png": "image/png",
    "image/gif": "image/gif",
    "image/webp": "image/webp",
}
"""Image media types OpenAI and Anthropic accept, by the names an attachment may give."""


def validation_error(message: str, code: str = "validation") -> ProviderCallError:
    """A non-retryable error for a request the provider cannot send as it is."""
    return ProviderCallError(LlmCallError(message=message, retryable=False, code=code))


# ---------------------------------------------------------------- request pieces


def attached_image(
    request: LlmRequest, block: ImageBlock, images: Mapping[str, bytes]
) -> tuple[AttachmentRef, bytes]:
    """The attachment ``block`` points at and its bytes (validation error if either is missing)."""
    try:
        ref = request.attachments[block.attachment_idx]
    except IndexError:
        raise validation_error(
            f"image block points at attachment {block.attachment_idx}, "
            f"but the request has {len(request.attachments)}"
        ) from None
    if ref.id not in images:
        raise validation_error(f"attachment {ref.id} could not be resolved")
    return ref, images[ref.id]


def image_mime(ref: AttachmentRef, mimes: Mapping[str, str], vendor: str) -> str:
    """The media type to send for ``ref``; an unlisted one is an error naming ``vendor``'s."""
    mime = mimes.get(ref.mime.lower())
    if mime is None:
        accepted = ", ".join(dict.fromkeys(m.split("/", 1)[1] for m in mimes.values()))
        raise validation_error(
            f"unsupported image format {ref.mime!r} for attachment {ref.id} "
            f"({vendor} accepts {accepted})",
            code="unsupported_image_format",
        )
    return mime


def data_url(mime: str, data: bytes) -> str:
    """``data`` as a base64 ``data:`` URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def variant_effort(request: LlmRequest, api: str, default: str | None = None) -> str | None:
    """The request's ``model_variant`` as an OpenAI reasoning effort, else ``default``.

    A variant outside :data:`~lash.providers.models.REASONING_VARIANTS` is a
    validation error naming ``api``.
    """
    variant = request.model_variant
    if variant is None:
        return default
    effort = variant.strip().lower()
    if effort not in REASONING_VARIANTS:
        raise validation_error(
            f"model variant {variant!r} is not a reasoning effort the {api} provider "
            f"knows (use one of {', '.join(REASONING_VARIANTS)})"
        )
    return effort


# ---------------------------------------------------------------- usage pieces


def token_count(value: Any) -> int:
    """A usage count as a non-negative int (booleans, NaN and unreadable values count 0)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value:
        return max(int(value), 0)
    if isinstance(value, str):
        try:
            return max(int(value.strip()), 0)
        except ValueError:
            return 0
    return 0


def merge_usage(old: LlmUsage | None, new: LlmUsage) -> LlmUsage:
    """``new``, with each field it reports as zero taken from ``old``."""
    if old is None:
        return new
    return LlmUsage(
        input_tokens=new.input_tokens or old.input_tokens,
        output_tokens=new.output_tokens or old.output_tokens,
        cached_input_tokens=new.cached_input_tokens or old.cached_input_tokens,
        reasoning_tokens=new.reasoning_tokens or old.reasoning_tokens,
    )


async def emit_usage(on_event: StreamCallback | None, usage: LlmUsage | None) -> None:
    """Report ``usage`` to ``on_event`` (nothing when either is missing)."""
    if usage is not None and on_event is not None:
        await on_event(UsageEvent(usage=usage))


# ---------------------------------------------------------------- event streams


@dataclass(frozen=True, slots=True)
class EventSink:
    """A vendor's hooks for building one reply from SSE events.

    ``apply`` takes one event (raising a classified :class:`ProviderCallError`
    for an error event or a malformed one); ``ended`` is true once the vendor's
    end marker arrived, so reading stops; ``complete`` is true once the reply is
    whole (ended, or its stop reason arrived), so a body that ends there is
    accepted; ``response`` assembles the reply.
    """

    apply: Callable[[SseEvent], Awaitable[None]]
    ended: Callable[[], bool]
    complete: Callable[[], bool]
    response: Callable[[], LlmResponse]


def _is_event_stream(raw: bytes) -> bool:
    """Whether a body read whole is an event stream (whatever its content type said)."""
    return raw.lstrip().startswith((b"data:", b"event:")) or b"\ndata:" in raw


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


# ---------------------------------------------------------------- error bodies


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """The body of an HTTP error response, read the way every vendor's is.

    ``text`` is the decoded body, ``payload`` its JSON (``None`` when it is not
    JSON), ``error`` the payload's ``error`` member (the payload itself when it
    has none; ``None`` when the payload is not an object), and ``message`` the
    error's message, else the start of the body, else the reason phrase.
    """

    text: str
    message: str
    payload: Any
    error: Any

    @classmethod
    def read(
        cls, response: httpx.Response, raw: bytes, *, first_of_list: bool = False
    ) -> ErrorBody:
        """Parse ``raw``; ``first_of_list`` looks inside a JSON array at its first element."""
        text = raw.decode("utf-8", errors="replace")
        message = text.strip()[:500] or response.reason_phrase
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if first_of_list and isinstance(payload, list) and payload:
            payload = payload[0]
        error: Any = None
        if isinstance(payload, dict):
            error = payload.get("error", payload)
            if isinstance(error, dict):
                if isinstance(error.get("message"), str):
                    message = error["message"]
            elif isinstance(error, str):
                message = error
        return cls(text=text, message=message, payload=payload, error=error)


# ---------------------------------------------------------------- the provider shell


class HttpProvider(AsyncClosing):
    """What the httpx-based providers share: options, client, attachments, the POST.

    ``base_url`` loses trailing slashes; ``model_prefix`` is stripped from a
    request's model; ``attachments`` resolves image references at call time.
    Without ``http_client`` the provider creates one on first use (with
    ``timeouts``) and closes it in :meth:`aclose`; a client passed in is left
    open. ``stream`` forces streaming on or off (default: stream when a
    callback listens); ``extra_headers`` go on every request, last.
    """

    _truncation_detail: ClassVar[str] = ""
    """Appended to the message of a stream that ended before the reply was complete."""
    _path: ClassVar[str] = ""
    """The endpoint below ``base_url`` that :meth:`complete` posts to."""
    _operation: ClassVar[str] = ""
    """What one call is called in errors (``chat completions``, ``messages``...)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model_prefix: str | None,
        http_client: httpx.AsyncClient | None,
        attachments: AttachmentResolver | None,
        timeouts: Timeouts | None,
        name: str,
        stream: bool | None,
        extra_headers: Mapping[str, str] | None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.model_prefix = model_prefix
        self._client = http_client
        self._owns_client = http_client is None
        self._resolve = attachments
        self.timeouts = timeouts or Timeouts()
        self._name = name
        self._stream = stream
        self._extra_headers = dict(extra_headers or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, base_url={self.base_url!r})"

    @property
    def name(self) -> str:
        """The provider kind (``openai``, ``openrouter``, ``anthropic``, ``gemini``, ...)."""
        return self._name

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            t = self.timeouts
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(t.request, connect=t.connect, read=t.chunk)
            )
        return self._client

    def wire_model(self, model: str) -> str:
        """The model name sent on the wire."""
        if self.model_prefix and model.startswith(self.model_prefix):
            return model[len(self.model_prefix) :]
        return model

    # ------------------------------------------------------------ request

    def _streams(self, on_event: StreamCallback | None) -> bool:
        """Whether to ask for a stream: the ``stream`` option, else whether anyone listens."""
        return self._stream if self._stream is not None else on_event is not None

    async def _images(self, request: LlmRequest) -> dict[str, bytes]:
        """The bytes of the images the request's user messages show, by attachment id."""
        used = {
            block.attachment_idx
            for message in request.messages
            if message.role is LlmRole.USER
            for block in message.blocks
            if isinstance(block, ImageBlock)
        }
        refs = [request.attachments[i] for i in sorted(used) if 0 <= i < len(request.attachments)]
        if not refs:
            return {}
        if self._resolve is None:
            raise validation_error(
                "the request has image attachments but the provider has no attachment "
                "resolver (pass attachments=...)"
            )
        return await self._resolve(refs)

    async def build_body(self, request: LlmRequest, *, stream: bool = False) -> dict[str, Any]:
        """Resolve attachments and build the JSON body (exposed for tests and tracing)."""
        raise NotImplementedError

    def headers(self, body: Mapping[str, Any], *, stream: bool) -> dict[str, str]:
        """The request headers for ``body``: bearer auth by default (never log them)."""
        return self._json_headers({"Authorization": f"Bearer {self._api_key}"}, event_stream=stream)

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        """Run one call (no retries; see ``ProviderHandle``)."""
        stream = self._streams(on_event)
        body = await self.build_body(request, stream=stream)
        return await self._exchange(
            f"{self.base_url}{self._path}",
            headers=self.headers(body, stream=stream),
            body=body,
            stream=stream,
            on_event=on_event,
            label=f"{self._name} {self._operation}",
        )

    def _json_headers(self, auth: Mapping[str, str], *, event_stream: bool) -> dict[str, str]:
        """``auth``, the JSON content type, what to accept, then the extra headers."""
        return {
            **auth,
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if event_stream else "application/json",
            **self._extra_headers,
        }

    # ------------------------------------------------------------ transport

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    @asynccontextmanager
    async def _post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        stream: bool,
        label: str,
    ) -> AsyncIterator[httpx.Response]:
        """POST ``body`` as JSON; yield the response once its headers arrive.

        An HTTP error status raises what :meth:`_http_error` makes of the body.
        """
        client = self._http()
        http_request = client.build_request(
            "POST", url, headers=dict(headers), content=json.dumps(body).encode()
        )
        async with open_response(
            client,
            http_request,
            start_timeout=self.timeouts.response_start(stream),
            label=label,
            secrets=self._secrets,
        ) as response:
            if response.status_code >= 400:
                raise self._http_error(response, await self._read_body(response, label))
            yield response

    async def _read_body(self, response: httpx.Response, label: str) -> bytes:
        return await read_body(
            response,
            timeout=self.timeouts.request,
            chunk_timeout=self.timeouts.chunk,
            label=label,
            secrets=self._secrets,
        )

    def _read_chunks(self, response: httpx.Response, label: str) -> AsyncIterator[bytes]:
        return read_chunks(
            response, chunk_timeout=self.timeouts.chunk, label=label, secrets=self._secrets
        )

    async def _exchange(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        stream: bool,
        on_event: StreamCallback | None,
        label: str,
    ) -> LlmResponse:
        """POST and assemble the reply from what the server sent.

        An event stream goes to :meth:`_read_stream` as it arrives; any other
        body is read whole and goes to :meth:`_parse_buffered`.
        """
        async with self._post(url, headers=headers, body=body, stream=stream, label=label) as rsp:
            content_type = rsp.headers.get("content-type", "").lower()
            if "text/event-stream" in content_type:
                return await self._read_stream(rsp, on_event, label)
            raw = await self._read_body(rsp, label)
        return await self._parse_buffered(raw, on_event, label)

    async def _read_stream(
        self, response: httpx.Response, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        """Assemble a streamed reply as its chunks arrive."""
        return await self._read_events(self._read_chunks(response, label), on_event, label)

    async def _parse_buffered(
        self, raw: bytes, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        """Assemble a reply read whole: by its events if it is an event stream, else as JSON."""
        if _is_event_stream(raw):
            return await self._read_events(_once(raw), on_event, label)
        return await self._parse_json(raw, on_event, label)

    async def _parse_json(
        self, raw: bytes, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        """Assemble a JSON reply (a provider that uses :meth:`_exchange` supplies it)."""
        raise NotImplementedError

    def _event_sink(self, on_event: StreamCallback | None, label: str) -> EventSink:
        """The hooks that build one reply from events (an SSE provider supplies them)."""
        raise NotImplementedError

    async def _read_events(
        self, chunks: AsyncIterable[bytes], on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        """Decode ``chunks`` as SSE and build the reply through :meth:`_event_sink`.

        Reading stops at the vendor's end marker. An event the body ends inside
        (no blank line after it) is still applied; if it is malformed the body
        was cut mid-event, which is a truncation, while any other error it
        carries keeps its own classification. A reply that is not complete when
        the body ends is a truncation too.
        """
        sink = self._event_sink(on_event, label)
        decoder = SseDecoder()
        try:
            async for chunk in chunks:
                for event in decoder.feed(chunk):
                    await sink.apply(event)
                    if sink.ended():
                        break
                if sink.ended():
                    break
            tail = [] if sink.ended() else decoder.close()
        except SseError as exc:
            raise self._malformed(label, str(exc)) from None
        for event in tail:
            try:
                await sink.apply(event)
            except ProviderCallError as exc:
                if exc.error.code == FailureKind.MALFORMED.value:
                    raise self._truncated(label) from None  # a half-sent last event
                raise
            if sink.ended():
                break
        if not sink.complete():
            raise self._truncated(label)
        return sink.response()

    async def _replay_events(
        self,
        response: LlmResponse,
        on_event: StreamCallback | None,
        *,
        item_id: Callable[[LlmOutputPart], str | None] = lambda part: None,
        reasoning: bool = True,
    ) -> None:
        """Send a reply that arrived whole as the events a stream would have sent.

        Each reasoning part with text (when ``reasoning``) and each text part
        becomes one delta tagged with ``item_id(part)``; the usage comes last.
        """
        if on_event is None:
            return
        for part in response.parts:
            if isinstance(part, ReasoningOutput) and part.text and reasoning:
                await on_event(ReasoningDeltaEvent(text=part.text, item_id=item_id(part)))
            elif isinstance(part, TextOutput):
                await on_event(TextDeltaEvent(text=part.text, item_id=item_id(part)))
        await on_event(UsageEvent(usage=response.usage))

    def _event_object(self, data: str, label: str) -> dict[str, Any]:
        """A stream event's data as a JSON object (malformed when it is not one)."""
        try:
            payload = json.loads(data)
        except ValueError:
            raise self._malformed(label, f"invalid JSON in stream event: {data[:200]!r}") from None
        if not isinstance(payload, dict):
            raise self._malformed(label, f"stream event is not an object: {data[:200]!r}")
        return payload

    # ------------------------------------------------------------ errors

    def _http_error(self, response: httpx.Response, raw: bytes) -> ProviderCallError:
        """The classified error for an HTTP error status (each vendor reads its own body)."""
        raise NotImplementedError

    def _error(
        self,
        message: str,
        verdict: Classification,
        raw: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> ProviderCallError:
        error = make_call_error(message, verdict, raw=raw, secrets=self._secrets)
        return ProviderCallError(error, status=status, retry_after=retry_after)

    def _status_error(
        self,
        response: httpx.Response,
        body: ErrorBody,
        verdict: Classification,
        tag: str | None = None,
        *,
        where: str = "",
        retry_after_fallback: float | None = None,
    ) -> ProviderCallError:
        """``{name}: HTTP {status} {tag}: {message}{where}``, with the body and ``Retry-After``.

        ``retry_after_fallback`` is the wait when the response has no ``Retry-After`` header.
        """
        status = response.status_code
        header_wait = parse_retry_after(response.headers)
        return self._error(
            f"{self._name}: HTTP {status}{f' {tag}' if tag else ''}: {body.message}{where}",
            verdict,
            raw=body.text[:4000],
            status=status,
            retry_after=retry_after_fallback if header_wait is None else header_wait,
        )

    def _malformed(self, label: str, detail: str) -> ProviderCallError:
        return self._error(
            f"{label}: malformed response: {detail}",
            Classification(FailureKind.MALFORMED, True),
        )

    def _truncated(self, label: str) -> ProviderCallError:
        return self._error(
            f"{label}: the stream ended before the response was complete{self._truncation_detail}",
            Classification(FailureKind.TRANSPORT, True),
        )
