"""OpenAI Chat Completions (and any compatible endpoint: OpenRouter, vLLM, Ollama...).

The provider maps an :class:`LlmRequest` to ``POST {base_url}/chat/completions``,
resolves image attachments to data URLs at call time, and assembles the reply
from either an SSE stream or a JSON body (it looks at what the server sent, not
at what it asked for). Usage is normalized to lash's convention: ``input_tokens``
includes cached tokens, ``output_tokens`` excludes reasoning tokens.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..kernel.attachments import AttachmentRef
from ..kernel.llm import (
    ImageBlock,
    JsonObjectOutput,
    JsonSchemaOutput,
    LlmOutputPart,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmUsage,
    ReasoningBlock,
    ReasoningOutput,
    TerminalReason,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
    ToolResultBlock,
)
from ._env import OPENAI_BASE_URL, provider_settings
from ._http_provider import (
    IMAGE_MIMES,
    AttachmentResolver,
    ErrorBody,
    EventSink,
    HttpProvider,
    attached_image,
    data_url,
    emit_usage,
    image_mime,
    merge_usage,
    token_count,
    variant_effort,
)
from .base import ReasoningDeltaEvent, StreamCallback, TextDeltaEvent
from .classify import Classification, classify_failure
from .http import ProviderCallError, Timeouts
from .sse import SseEvent

__all__ = [
    "OPENAI_BASE_URL",
    "AttachmentResolver",
    "OpenAIChatProvider",
    "build_chat_body",
    "openai_from_env",
    "parse_chat_completion",
    "usage_from_openai",
]

_FINISH = {
    "stop": TerminalReason.STOP,
    "tool_calls": TerminalReason.TOOL_USE,
    "function_call": TerminalReason.TOOL_USE,
    "length": TerminalReason.OUTPUT_LIMIT,
    "max_tokens": TerminalReason.OUTPUT_LIMIT,
    "content_filter": TerminalReason.CONTENT_FILTER,
    "safety": TerminalReason.CONTENT_FILTER,
}
_REASONING_KEYS = ("reasoning_content", "reasoning", "reasoning_text")


# ---------------------------------------------------------------- request mapping


def _image_part(ref: AttachmentRef, data: bytes) -> dict[str, Any]:
    url = data_url(image_mime(ref, IMAGE_MIMES, "OpenAI"), data)
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not parts:
        return None
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def build_chat_body(
    request: LlmRequest,
    *,
    model: str,
    images: dict[str, bytes],
    stream: bool,
    max_tokens_field: str = "max_completion_tokens",
) -> dict[str, Any]:
    """The Chat Completions JSON body for ``request`` (``images`` maps id → bytes).

    ``request.model_variant`` (one of :data:`~lash.providers.models.REASONING_VARIANTS`)
    is sent as ``reasoning_effort``.
    """
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                if block.text:
                    parts.append({"type": "text", "text": block.text})
            elif isinstance(block, ImageBlock):
                if message.role is LlmRole.USER:
                    parts.append(_image_part(*attached_image(request, block, images)))
            elif isinstance(block, ToolCallBlock):
                calls.append(
                    {
                        "id": block.call_id,
                        "type": "function",
                        "function": {
                            "name": block.tool_name,
                            "arguments": block.input_json or "{}",
                        },
                    }
                )
            elif isinstance(block, ToolResultBlock):
                result: dict[str, Any] = {
                    "role": "tool",
                    "tool_call_id": block.call_id,
                    "content": block.content,
                }
                results.append(result)
            elif isinstance(block, ReasoningBlock):
                continue  # Chat Completions cannot take reasoning back.
        messages.extend(results)
        if message.role is LlmRole.SYSTEM:
            text = "\n\n".join(p["text"] for p in parts if p["type"] == "text")
            if text:
                messages.append({"role": "system", "content": text})
        elif message.role is LlmRole.ASSISTANT:
            if parts or calls:
                entry: dict[str, Any] = {"role": "assistant", "content": _content(parts)}
                if calls:
                    entry["tool_calls"] = calls
                messages.append(entry)
        elif parts:
            messages.append({"role": "user", "content": _content(parts)})

    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    effort = variant_effort(request, "OpenAI Chat Completions")
    if effort is not None:
        body["reasoning_effort"] = effort
    if request.generation.output_token_cap is not None:
        body[max_tokens_field] = request.generation.output_token_cap
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema or {"type": "object", "properties": {}},
                    "strict": False,
                },
            }
            for tool in request.tools
        ]
        body["tool_choice"] = request.tool_choice.value
        body["parallel_tool_calls"] = True
    spec = request.output_spec
    if isinstance(spec, JsonObjectOutput):
        body["response_format"] = {"type": "json_object"}
    elif isinstance(spec, JsonSchemaOutput):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": spec.name, "schema": spec.schema, "strict": spec.strict},
        }
    return body


# ---------------------------------------------------------------- response parsing


def usage_from_openai(raw: Any) -> LlmUsage:
    """Normalize an OpenAI ``usage`` object (Chat or Responses field names)."""
    if not isinstance(raw, dict):
        return LlmUsage()
    prompt = token_count(raw.get("prompt_tokens", raw.get("input_tokens")))
    completion = token_count(raw.get("completion_tokens", raw.get("output_tokens")))
    in_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    out_details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    if not isinstance(in_details, dict):
        in_details = {}
    if not isinstance(out_details, dict):
        out_details = {}
    cached = token_count(
        in_details.get("cached_tokens")
        or raw.get("cached_input_tokens")
        or raw.get("cached_tokens")
        or raw.get("prompt_cache_hit_tokens")
    )
    cached = max(cached - token_count(in_details.get("cache_write_tokens")), 0)
    reasoning = token_count(out_details.get("reasoning_tokens") or raw.get("reasoning_tokens"))
    return LlmUsage(
        input_tokens=prompt,
        output_tokens=max(completion - reasoning, 0),
        cached_input_tokens=min(cached, prompt) if prompt else cached,
        reasoning_tokens=reasoning,
    )


@dataclass
class _ToolCallDraft:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Assembly:
    """Accumulates one reply from stream chunks or a whole JSON body."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    calls: dict[int, _ToolCallDraft] = field(default_factory=dict)
    finish: str | None = None
    usage: LlmUsage | None = None
    raw_usage: Any = None
    done: bool = False

    def tool_call(self, index: int) -> _ToolCallDraft:
        draft = self.calls.get(index)
        if draft is None:
            draft = self.calls[index] = _ToolCallDraft()
        return draft

    def add_usage(self, raw: Any) -> LlmUsage | None:
        if not isinstance(raw, dict):
            return None
        self.raw_usage = raw
        self.usage = merge_usage(self.usage, usage_from_openai(raw))
        return self.usage

    def response(self) -> LlmResponse:
        parts: list[LlmOutputPart] = []
        reasoning = "".join(self.reasoning)
        if reasoning:
            parts.append(ReasoningOutput(text=reasoning))
        text = "".join(self.text)
        if text:
            parts.append(TextOutput(text=text))
        calls: list[ToolCallOutput] = []
        for index in sorted(self.calls):
            draft = self.calls[index]
            if not draft.name:
                continue
            arguments = "".join(draft.arguments)
            calls.append(
                ToolCallOutput(
                    call_id=draft.id or f"call_{uuid.uuid4().hex}",
                    tool_name=draft.name,
                    input_json=arguments if arguments.strip() else "{}",
                )
            )
        parts.extend(calls)
        refusal = "".join(self.refusal)
        diagnostic: str | None = None
        if self.finish is None:
            reason = TerminalReason.TOOL_USE if calls else TerminalReason.STOP
        else:
            reason = _FINISH.get(self.finish, TerminalReason.PROVIDER_ERROR)
            if reason is TerminalReason.PROVIDER_ERROR:
                diagnostic = f"finish_reason {self.finish!r}"
        if refusal:
            reason = TerminalReason.CONTENT_FILTER
            diagnostic = f"refusal: {refusal}"
        return LlmResponse(
            full_text=text,
            parts=tuple(parts),
            usage=self.usage or LlmUsage(),
            terminal_reason=reason,
            terminal_diagnostic=diagnostic,
            provider_usage=self.raw_usage,
        )


def _reasoning_piece(source: dict[str, Any]) -> str:
    for key in _REASONING_KEYS:
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def parse_chat_completion(payload: Any) -> LlmResponse:
    """Assemble a non-streamed ``chat.completion`` JSON object."""
    if not isinstance(payload, dict):
        raise ValueError("chat completion body is not a JSON object")
    assembly = _Assembly()
    choices = payload.get("choices") or []
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        raise ValueError("chat completion choice is not an object")
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise ValueError("chat completion message is not an object")
    if isinstance(message.get("content"), str):
        assembly.text.append(message["content"])
    if isinstance(message.get("refusal"), str):
        assembly.refusal.append(message["refusal"])
    if piece := _reasoning_piece(message):
        assembly.reasoning.append(piece)
    for index, call in enumerate(message.get("tool_calls") or []):
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        draft = assembly.tool_call(index)
        draft.id = call.get("id") or None
        draft.name = str(function.get("name") or "")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            draft.arguments.append(arguments)
        elif arguments is not None:
            draft.arguments.append(json.dumps(arguments))
    finish = choice.get("finish_reason")
    assembly.finish = finish if isinstance(finish, str) else None
    assembly.add_usage(payload.get("usage"))
    return assembly.response()


# ---------------------------------------------------------------- provider


def _auto_max_tokens_field(base_url: str) -> str:
    host = urlsplit(base_url).hostname or ""
    return "max_completion_tokens" if host.endswith("openai.com") else "max_tokens"


def _openai_error_verdict(status: int, body: ErrorBody) -> tuple[Classification, str]:
    """Classify an OpenAI-style error body; also the ``type/code`` tag for the message."""
    vendor_type = vendor_code = None
    if isinstance(body.error, dict):
        vendor_type = body.error.get("type") if isinstance(body.error.get("type"), str) else None
        code = body.error.get("code")
        vendor_code = str(code) if code is not None else None
    verdict = classify_failure(status=status, code=vendor_code, message=body.message, raw=body.text)
    return verdict, "/".join(x for x in (vendor_type, vendor_code) if x)


class OpenAIChatProvider(HttpProvider):
    """Chat Completions over httpx, streaming when a callback is given.

    ``model_prefix`` is stripped from ``request.model`` when present (so
    ``"openrouter:anthropic/claude-sonnet-4"`` can name a model), ``attachments``
    resolves image references to bytes at call time. Pass ``http_client`` to
    share a connection pool; otherwise the provider owns one (close it with
    :meth:`aclose` or ``async with``). Wrap it in
    :class:`~lash.providers.http.ProviderHandle` for retries.
    """

    _path = "/chat/completions"
    _operation = "chat completions"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = OPENAI_BASE_URL,
        model_prefix: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        attachments: AttachmentResolver | None = None,
        timeouts: Timeouts | None = None,
        name: str = "openai",
        stream: bool | None = None,
        max_tokens_field: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            model_prefix=model_prefix,
            http_client=http_client,
            attachments=attachments,
            timeouts=timeouts,
            name=name,
            stream=stream,
            extra_headers=extra_headers,
        )
        self.max_tokens_field = max_tokens_field or _auto_max_tokens_field(self.base_url)

    async def build_body(self, request: LlmRequest, *, stream: bool = False) -> dict[str, Any]:
        """Resolve attachments and build the JSON body (exposed for tests and tracing)."""
        return build_chat_body(
            request,
            model=self.wire_model(request.model),
            images=await self._images(request),
            stream=stream,
            max_tokens_field=self.max_tokens_field,
        )

    # ------------------------------------------------------------ internals

    def _http_error(self, response: httpx.Response, raw: bytes) -> ProviderCallError:
        body = ErrorBody.read(response, raw)
        verdict, tag = _openai_error_verdict(response.status_code, body)
        return self._status_error(response, body, verdict, tag)

    async def _parse_json(
        self, raw: bytes, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        try:
            response = parse_chat_completion(json.loads(raw))
        except ValueError as exc:
            raise self._malformed(label, f"{exc} in {raw[:200]!r}") from None
        await self._replay_events(response, on_event)
        return response

    def _event_sink(self, on_event: StreamCallback | None, label: str) -> EventSink:
        assembly = _Assembly()

        async def apply(event: SseEvent) -> None:
            await self._apply_event(assembly, event, on_event, label)

        return EventSink(
            apply=apply,
            ended=lambda: assembly.done,
            complete=lambda: assembly.done or assembly.finish is not None,
            response=assembly.response,
        )

    async def _apply_event(
        self,
        assembly: _Assembly,
        event: SseEvent,
        on_event: StreamCallback | None,
        label: str,
    ) -> None:
        data = event.data.strip()
        if not data:
            return
        if data == "[DONE]":
            assembly.done = True
            return
        chunk = self._event_object(data, label)
        error = chunk.get("error")
        if error is not None or event.event == "error":
            raise self._stream_error(error if error is not None else chunk, label)
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise self._malformed(label, "'choices' is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                await self._apply_delta(assembly, delta, on_event)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                assembly.finish = finish
            if isinstance(choice.get("usage"), dict):
                await emit_usage(on_event, assembly.add_usage(choice["usage"]))
        if isinstance(chunk.get("usage"), dict):
            await emit_usage(on_event, assembly.add_usage(chunk["usage"]))

    async def _apply_delta(
        self, assembly: _Assembly, delta: dict[str, Any], on_event: StreamCallback | None
    ) -> None:
        if piece := _reasoning_piece(delta):
            assembly.reasoning.append(piece)
            if on_event is not None:
                await on_event(ReasoningDeltaEvent(text=piece))
        content = delta.get("content")
        if isinstance(content, str) and content:
            assembly.text.append(content)
            if on_event is not None:
                await on_event(TextDeltaEvent(text=content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            assembly.refusal.append(refusal)
        for position, call in enumerate(delta.get("tool_calls") or []):
            if not isinstance(call, dict):
                continue
            index = call.get("index", position)
            draft = assembly.tool_call(index if isinstance(index, int) else position)
            if isinstance(call.get("id"), str) and call["id"]:
                draft.id = call["id"]
            function = call.get("function") or {}
            if isinstance(function.get("name"), str) and function["name"]:
                draft.name = function["name"]
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                draft.arguments.append(arguments)

    def _stream_error(self, error: Any, label: str) -> ProviderCallError:
        if isinstance(error, dict):
            message = str(error.get("message") or json.dumps(error)[:500])
            code = error.get("code") or error.get("type")
            status = error.get("status") or error.get("code")
        else:
            message, code, status = str(error), None, None
        status_int = status if isinstance(status, int) else None
        verdict = classify_failure(
            status=status_int,
            code=None if code is None else str(code),
            message=message,
            in_stream=True,
        )
        return self._error(
            f"{label}: error in stream: {message}", verdict, raw=json.dumps(error)[:4000]
        )


def openai_from_env(*, env: dict[str, str] | None = None, **kwargs: Any) -> OpenAIChatProvider:
    """An OpenAI provider configured from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``."""
    return OpenAIChatProvider(**provider_settings("openai", env), **kwargs)
