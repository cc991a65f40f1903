"""Anthropic Messages API (``POST {base_url}/v1/messages``).

The provider maps an :class:`LlmRequest` to a Messages body, resolves image
attachments to base64 at call time, and assembles the reply from either the SSE
stream or a JSON body (it looks at what the server sent, not at what it asked
for). Wire rules it takes care of:

* **System text.** Leading system messages become the top-level ``system``
  blocks; a system message later in the conversation is sent as user text.
* **Ordering.** Adjacent messages of one role are merged. In a user message the
  ``tool_result`` blocks go first, and an image that follows a tool result
  (a tool that returned an image) is nested inside that result. In an assistant
  message a thinking block moves ahead of the text that precedes it, so signed
  thinking opens the turn as the API requires.
* **Reasoning replay.** Thinking comes back as :class:`ReasoningOutput` with its
  ``signature`` (``redacted_thinking`` keeps its ``data`` in
  ``encrypted_content`` with ``redacted=True``) and is replayed verbatim.
  Only Anthropic's own reasoning is sent back: unsigned reasoning and other
  vendors' replay data (Gemini's ``gemini:``-tagged thought signatures, OpenAI's
  ``rs_`` encrypted reasoning) are dropped.
* **max_tokens** is required by the API. The request's ``output_token_cap``
  wins, then the provider's ``max_tokens`` option, then the model's output cap
  from :func:`~lash.providers.models.model_capabilities` (Claude 3: 4 096,
  3.5: 8 192, Opus 4/4.1: 32 000, 3.7 Sonnet and other Claude 4.x and later:
  64 000), or 8 192 for a model name it cannot read.

* **Thinking** follows ``request.model_variant``: ``none`` (or no variant) sends
  none. Models with adaptive thinking (Opus 4.6/4.7, Sonnet 4.6, Claude 5 and
  later) get ``thinking: {type: adaptive}`` and ``output_config.effort``
  (``minimal`` is sent as ``low``; ``xhigh``/``max`` fall back to what the model
  accepts). Other thinking models (Claude 3.7, Claude 4.x) get a token budget:
  minimal/low 1 024, medium 4 096, high 12 288, xhigh 24 576, max 32 000, kept
  below ``max_tokens``. Anthropic refuses thinking with a forced tool choice, so
  ``ToolChoice.REQUIRED`` sends no thinking.
* **Prompt caching** (``cache="short"`` by default, ``"long"`` for the one-hour
  TTL, ``"none"`` to switch off) marks the last system block, the last tool, and
  the last :attr:`TextBlock.cache_breakpoint` block (else the last block of a
  trailing user message).

Usage is normalized to lash's convention: ``input_tokens`` = input + cache read
+ cache write, ``cached_input_tokens`` = cache read, ``reasoning_tokens`` =
``output_tokens_details.thinking_tokens`` and ``output_tokens`` excludes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
    ReasoningReplay,
    TerminalReason,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
    ToolChoice,
    ToolResultBlock,
)
from ._env import ANTHROPIC_BASE_URL, provider_settings
from ._http_provider import (
    IMAGE_MIMES,
    AttachmentResolver,
    ErrorBody,
    EventSink,
    HttpProvider,
    attached_image,
    emit_usage,
    image_mime,
    token_count,
    validation_error,
)
from .base import ReasoningDeltaEvent, StreamCallback, TextDeltaEvent
from .classify import classify_failure
from .http import ProviderCallError, Timeouts
from .models import REASONING_VARIANTS, claude_version, model_capabilities
from .sse import SseEvent

__all__ = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_VERSION",
    "AnthropicProvider",
    "CacheRetention",
    "ModelTraits",
    "anthropic_from_env",
    "build_messages_body",
    "model_traits",
    "parse_message",
    "resolve_max_tokens",
    "sanitize_tool_id",
    "usage_from_anthropic",
]

ANTHROPIC_VERSION = "2023-06-01"
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"

CacheRetention = Literal["none", "short", "long"]

_STOP_REASONS = {
    "end_turn": TerminalReason.STOP,
    "stop_sequence": TerminalReason.STOP,
    "pause_turn": TerminalReason.STOP,
    "tool_use": TerminalReason.TOOL_USE,
    "max_tokens": TerminalReason.OUTPUT_LIMIT,
    "model_context_window_exceeded": TerminalReason.CONTEXT_OVERFLOW,
    "refusal": TerminalReason.CONTENT_FILTER,
    "safety": TerminalReason.CONTENT_FILTER,
    "sensitive": TerminalReason.CONTENT_FILTER,
}
_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 12288,
    "xhigh": 24576,
    "max": 32000,
}
_MIN_BUDGET = 1024


# ---------------------------------------------------------------- model traits


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What the provider assumes about a model from its name.

    ``thinking`` is ``"adaptive"``, ``"budget"`` or ``"none"``; ``efforts`` are
    the adaptive effort levels the model accepts.
    """

    default_max_tokens: int
    thinking: Literal["adaptive", "budget", "none"]
    efforts: tuple[str, ...] = ()


_UNKNOWN_MAX_TOKENS = 8192
"""``max_tokens`` for a model name :func:`~lash.providers.models.claude_version` cannot read."""


def model_traits(model: str) -> ModelTraits:
    """Defaults for ``model`` (see the module docstring for the table).

    ``default_max_tokens`` is the output cap :func:`~lash.providers.models.model_capabilities`
    publishes for the model.
    """
    caps = model_capabilities("anthropic", model)
    default = caps.max_output_tokens if caps.known else _UNKNOWN_MAX_TOKENS
    version = claude_version(model)
    if version is None or not caps.reasoning_variants:
        return ModelTraits(default, "none")
    family, major, minor = version
    base = ("low", "medium", "high")
    if major == 4 and family == "opus" and minor == 7:
        return ModelTraits(default, "adaptive", (*base, "xhigh"))
    if major == 4 and family == "opus" and minor == 6:
        return ModelTraits(default, "adaptive", (*base, "max"))
    if major == 4 and family == "sonnet" and minor == 6:
        return ModelTraits(default, "adaptive", base)
    if major >= 5:
        return ModelTraits(default, "adaptive", base)
    return ModelTraits(default, "budget")


def _effort(variant: str, traits: ModelTraits) -> str:
    if variant == "minimal":
        return "low"
    if variant in traits.efforts:
        return variant
    if variant in ("xhigh", "max"):
        for fallback in ("xhigh", "max"):
            if fallback in traits.efforts:
                return fallback
    return "high"


def _thinking(
    request: LlmRequest, traits: ModelTraits, model: str, max_tokens: int, display: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The ``thinking`` object and adaptive effort for the request's variant."""
    variant = request.model_variant
    if variant is None:
        return None, None
    variant = variant.strip().lower()
    if variant not in REASONING_VARIANTS:
        raise validation_error(
            f"unknown model variant {request.model_variant!r} for {model!r} "
            f"(expected one of: {', '.join(REASONING_VARIANTS)})"
        )
    if variant == "none" or request.tool_choice is ToolChoice.REQUIRED:
        return None, None
    if traits.thinking == "none":
        raise validation_error(
            f"model {model!r} has no extended thinking, so variant {variant!r} cannot "
            "be honoured (use variant 'none' or no variant)"
        )
    if traits.thinking == "adaptive":
        return {"type": "adaptive", "display": display}, _effort(variant, traits)
    budget = min(_BUDGETS[variant], max_tokens - 1)
    if budget < _MIN_BUDGET:
        raise validation_error(
            f"max_tokens {max_tokens} leaves no room for thinking on {model!r}: the "
            f"budget must be at least {_MIN_BUDGET} and below max_tokens"
        )
    return {"type": "enabled", "budget_tokens": budget, "display": display}, None


# ---------------------------------------------------------------- request mapping


_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_tool_id(call_id: str) -> str:
    """A tool-use id the API accepts: ``[A-Za-z0-9_-]``, at most 64 characters.

    The mapping is deterministic, so a call and its result stay paired; an id
    that has to be shortened keeps a hash of the original to stay distinct.
    """
    clean = _TOOL_ID_BAD.sub("_", call_id) or "toolu_empty"
    if len(clean) <= 64:
        return clean
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:16]
    return f"{clean[:47]}_{digest}"


def _image(ref: AttachmentRef, data: bytes) -> dict[str, Any]:
    mime = image_mime(ref, IMAGE_MIMES, "Anthropic")
    return {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": mime,
            "data": base64.b64encode(data).decode("ascii"),
        },
    }


def _tool_input(input_json: str) -> dict[str, Any]:
    try:
        value = json.loads(input_json) if input_json.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _is_anthropic_replay(replay: ReasoningReplay) -> bool:
    """True when ``replay`` came from this API, so Anthropic can verify it.

    This provider's replays carry a thinking ``signature`` or ``redacted`` data
    and never an ``item_id`` or summaries. Other vendors mark theirs: Gemini
    tags its thought signatures ``item_id="gemini:<responseId>"``, OpenAI
    Responses keeps its reasoning item id (``rs_...``), encrypted content and
    summaries. A foreign signature would be rejected, so it is never sent.
    """
    return replay.item_id is None and not replay.summary


def _reasoning_block(block: ReasoningBlock) -> dict[str, Any] | None:
    replay = block.replay
    if replay is None or not _is_anthropic_replay(replay):
        return None
    if replay.redacted:
        data = replay.encrypted_content or replay.signature
        return {"type": "redacted_thinking", "data": data} if data else None
    if replay.signature and replay.encrypted_content is None:
        return {"type": "thinking", "thinking": block.text, "signature": replay.signature}
    return None


@dataclass
class _Wire:
    """One wire message being built (a role and its content blocks)."""

    role: str
    content: list[dict[str, Any]]


def _order_user(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = [b for b in content if b["type"] == "tool_result"]
    if not results:
        return content
    return results + [b for b in content if b["type"] != "tool_result"]


def _order_assistant(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in content:
        if block["type"] in ("thinking", "redacted_thinking"):
            at = len(out)
            while at > 0 and out[at - 1]["type"] == "text":
                at -= 1
            out.insert(at, block)
        else:
            out.append(block)
    return out


def _convert(
    request: LlmRequest,
    images: Mapping[str, bytes],
    marked: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[_Wire]]:
    """System blocks and wire messages (unmerged) for ``request``."""
    system: list[dict[str, Any]] = []
    wire: list[_Wire] = []
    leading = True
    for message in request.messages:
        if message.role is LlmRole.SYSTEM and leading:
            for block in message.blocks:
                if isinstance(block, TextBlock) and block.text.strip():
                    system.append({"type": "text", "text": block.text})
            continue
        leading = False
        role = "assistant" if message.role is LlmRole.ASSISTANT else "user"
        content: list[dict[str, Any]] = []
        last_result: dict[str, Any] | None = None
        for block in message.blocks:
            if isinstance(block, TextBlock):
                if not block.text.strip():
                    continue
                item = {"type": "text", "text": block.text}
                if block.cache_breakpoint:
                    marked.append(item)
                content.append(item)
            elif isinstance(block, ImageBlock):
                if role != "user":
                    continue
                image = _image(*attached_image(request, block, images))
                if last_result is not None:
                    nested = last_result.setdefault("content", [])
                    if isinstance(nested, str):
                        nested = last_result["content"] = [{"type": "text", "text": nested}]
                    nested.append(image)
                    continue
                content.append(image)
            elif isinstance(block, ToolCallBlock):
                content.append(
                    {
                        "type": "tool_use",
                        "id": sanitize_tool_id(block.call_id),
                        "name": block.tool_name,
                        "input": _tool_input(block.input_json),
                    }
                )
            elif isinstance(block, ToolResultBlock):
                result: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": sanitize_tool_id(block.call_id),
                }
                if block.content:
                    result["content"] = block.content
                content.append(result)
                last_result = result
                continue
            elif isinstance(block, ReasoningBlock):
                if role != "assistant":
                    continue
                thinking = _reasoning_block(block)
                if thinking is None:
                    continue
                content.append(thinking)
            last_result = None
        if content:
            wire.append(_Wire(role, content))
    return system, wire


def _merge(wire: list[_Wire]) -> list[dict[str, Any]]:
    merged: list[_Wire] = []
    for message in wire:
        if merged and merged[-1].role == message.role:
            merged[-1].content.extend(message.content)
        else:
            merged.append(_Wire(message.role, list(message.content)))
    out: list[dict[str, Any]] = []
    for message in merged:
        if message.role == "user":
            content = _order_user(message.content)
        else:
            content = _order_assistant(message.content)
        out.append({"role": message.role, "content": content})
    return out


def _tool_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    if not schema:
        return {"type": "object", "properties": {}}
    if "type" not in schema:
        return {"type": "object", **schema}
    return dict(schema)


def _cache_marker(cache: CacheRetention) -> dict[str, Any] | None:
    if cache == "none":
        return None
    if cache == "long":
        return {"type": "ephemeral", "ttl": "1h"}
    return {"type": "ephemeral"}


def resolve_max_tokens(request: LlmRequest, model: str, default: int | None = None) -> int:
    """``max_tokens`` for ``request``: its cap, else ``default``, else the model table."""
    if request.generation.output_token_cap is not None:
        return request.generation.output_token_cap
    if default is not None:
        return default
    return model_traits(model).default_max_tokens


def build_messages_body(
    request: LlmRequest,
    *,
    model: str,
    images: Mapping[str, bytes],
    stream: bool,
    max_tokens: int | None = None,
    cache: CacheRetention = "short",
    expose_thinking: bool = True,
) -> dict[str, Any]:
    """The Messages JSON body for ``request`` (``images`` maps attachment id → bytes).

    ``max_tokens`` is the provider default used when the request has no cap.
    """
    marked: list[dict[str, Any]] = []
    system, wire = _convert(request, images, marked)
    messages = _merge(wire)
    if not messages:
        raise validation_error(
            "the request has no user or assistant content to send (Anthropic needs at "
            "least one message besides the system prompt)"
        )
    traits = model_traits(model)
    limit = resolve_max_tokens(request, model, max_tokens)
    body: dict[str, Any] = {"model": model, "max_tokens": limit, "messages": messages}
    if system:
        body["system"] = system
    tools: list[dict[str, Any]] = []
    for tool in request.tools:
        entry: dict[str, Any] = {"name": tool.name, "input_schema": _tool_schema(tool.input_schema)}
        if tool.description:
            entry["description"] = tool.description
        tools.append(entry)
    if tools:
        body["tools"] = tools
        choice = {ToolChoice.AUTO: "auto", ToolChoice.NONE: "none", ToolChoice.REQUIRED: "any"}
        body["tool_choice"] = {"type": choice[request.tool_choice]}
    display = "summarized" if expose_thinking else "omitted"
    thinking, effort = _thinking(request, traits, model, limit, display)
    output_config: dict[str, Any] = {}
    if thinking is not None:
        body["thinking"] = thinking
    if effort is not None:
        output_config["effort"] = effort
    spec = request.output_spec
    if isinstance(spec, JsonObjectOutput):
        output_config["format"] = {"type": "json_schema", "schema": {"type": "object"}}
    elif isinstance(spec, JsonSchemaOutput):
        output_config["format"] = {"type": "json_schema", "schema": spec.schema}
    if output_config:
        body["output_config"] = output_config
    marker = _cache_marker(cache)
    if marker is not None:
        if system:
            system[-1]["cache_control"] = dict(marker)
        if tools:
            tools[-1]["cache_control"] = dict(marker)
        if marked:
            marked[-1]["cache_control"] = dict(marker)
        elif messages and messages[-1]["role"] == "user":
            messages[-1]["content"][-1]["cache_control"] = dict(marker)
    body["stream"] = stream
    return body


# ---------------------------------------------------------------- response parsing


def usage_from_anthropic(raw: Any) -> LlmUsage:
    """Normalize an Anthropic ``usage`` object to lash's convention (module docstring)."""
    if not isinstance(raw, dict):
        return LlmUsage()
    read = token_count(raw.get("cache_read_input_tokens"))
    write = token_count(raw.get("cache_creation_input_tokens"))
    output = token_count(raw.get("output_tokens"))
    details = raw.get("output_tokens_details")
    thinking = token_count(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    thinking = min(thinking, output)
    return LlmUsage(
        input_tokens=token_count(raw.get("input_tokens")) + read + write,
        output_tokens=output - thinking,
        cached_input_tokens=read,
        reasoning_tokens=thinking,
    )


def _merge_raw_usage(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Later usage objects carry cumulative counts: a reported field replaces the old one."""
    merged = dict(old)
    for key, value in new.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_raw_usage(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class _Block:
    kind: str
    text: list[str] = field(default_factory=list)
    signature: list[str] = field(default_factory=list)
    data: str | None = None
    id: str | None = None
    name: str = ""
    initial_input: Any = None
    input_json: list[str] = field(default_factory=list)


@dataclass
class _Assembly:
    """Accumulates one reply from stream events or a whole message object."""

    message_id: str | None = None
    blocks: dict[int, _Block] = field(default_factory=dict)
    stop_reason: str | None = None
    stop_details: Any = None
    raw_usage: dict[str, Any] | None = None
    done: bool = False

    def add_usage(self, raw: Any) -> LlmUsage | None:
        if not isinstance(raw, dict):
            return None
        self.raw_usage = _merge_raw_usage(self.raw_usage or {}, raw)
        return usage_from_anthropic(self.raw_usage)

    def set_stop(self, source: Mapping[str, Any]) -> None:
        reason = source.get("stop_reason")
        if isinstance(reason, str):
            self.stop_reason = reason
        if source.get("stop_details") is not None:
            self.stop_details = source["stop_details"]

    def start_block(self, index: int, meta: Mapping[str, Any]) -> _Block:
        kind = meta.get("type")
        block = _Block(kind=kind if isinstance(kind, str) else "unknown")
        if isinstance(meta.get("id"), str):
            block.id = meta["id"]
        if isinstance(meta.get("name"), str):
            block.name = meta["name"]
        block.initial_input = meta.get("input")
        if isinstance(meta.get("data"), str):
            block.data = meta["data"]
        if isinstance(meta.get("signature"), str) and meta["signature"]:
            block.signature.append(meta["signature"])
        self.blocks[index] = block
        return block

    def block(self, index: int, kind: str) -> _Block:
        block = self.blocks.get(index)
        if block is None:
            block = self.blocks[index] = _Block(kind=kind)
        return block

    def _diagnostic(self, reason: TerminalReason) -> str | None:
        stop = self.stop_reason
        if reason is TerminalReason.CONTENT_FILTER:
            details = self.stop_details if isinstance(self.stop_details, dict) else {}
            explanation = details.get("explanation") or details.get("category")
            return f"{stop}: {explanation}" if explanation else str(stop)
        if reason is TerminalReason.CONTEXT_OVERFLOW:
            return "The reply reached the model's context window (model_context_window_exceeded)."
        if stop == "pause_turn":
            return "pause_turn: the server paused a long-running turn"
        return None

    def response(self) -> LlmResponse:
        parts: list[LlmOutputPart] = []
        texts: list[str] = []
        has_call = False
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block.kind == "text":
                text = "".join(block.text)
                if text:
                    texts.append(text)
                    parts.append(TextOutput(text=text))
            elif block.kind == "thinking":
                signature = "".join(block.signature)
                replay = ReasoningReplay(signature=signature) if signature else None
                parts.append(ReasoningOutput(text="".join(block.text), replay=replay))
            elif block.kind == "redacted_thinking":
                if block.data:
                    replay = ReasoningReplay(redacted=True, encrypted_content=block.data)
                    parts.append(ReasoningOutput(text="", replay=replay))
            elif block.kind == "tool_use" and block.name:
                streamed = "".join(block.input_json)
                if streamed.strip():
                    arguments = streamed
                elif isinstance(block.initial_input, dict) and block.initial_input:
                    arguments = json.dumps(block.initial_input, ensure_ascii=False)
                else:
                    arguments = "{}"
                parts.append(
                    ToolCallOutput(
                        call_id=block.id or f"toolu_lash_{uuid.uuid4().hex}",
                        tool_name=block.name,
                        input_json=arguments,
                    )
                )
                has_call = True
        diagnostic: str | None = None
        if self.stop_reason is None:
            reason = TerminalReason.TOOL_USE if has_call else TerminalReason.STOP
        else:
            reason = _STOP_REASONS.get(self.stop_reason, TerminalReason.PROVIDER_ERROR)
            if reason is TerminalReason.PROVIDER_ERROR:
                diagnostic = f"stop_reason {self.stop_reason!r}"
            else:
                diagnostic = self._diagnostic(reason)
        return LlmResponse(
            full_text="".join(texts),
            parts=tuple(parts),
            usage=usage_from_anthropic(self.raw_usage),
            terminal_reason=reason,
            terminal_diagnostic=diagnostic,
            provider_usage=self.raw_usage,
        )


def _assemble_message(payload: Any) -> _Assembly:
    if not isinstance(payload, dict):
        raise ValueError("message body is not a JSON object")
    if payload.get("type") not in (None, "message"):
        raise ValueError(f"expected a message object, got type {payload.get('type')!r}")
    content = payload.get("content")
    if not isinstance(content, list):
        raise ValueError("message 'content' is not a list")
    assembly = _Assembly()
    if isinstance(payload.get("id"), str):
        assembly.message_id = payload["id"]
    for index, item in enumerate(content):
        if not isinstance(item, dict):
            raise ValueError(f"content block {index} is not an object")
        block = assembly.start_block(index, item)
        if block.kind == "text" and isinstance(item.get("text"), str):
            block.text.append(item["text"])
        elif block.kind == "thinking" and isinstance(item.get("thinking"), str):
            block.text.append(item["thinking"])
        elif block.kind == "tool_use" and isinstance(item.get("input"), dict):
            block.input_json.append(json.dumps(item["input"], ensure_ascii=False))
    assembly.set_stop(payload)
    assembly.add_usage(payload.get("usage"))
    assembly.done = True
    return assembly


def parse_message(payload: Any) -> LlmResponse:
    """Assemble a non-streamed Messages response (a ``message`` JSON object)."""
    return _assemble_message(payload).response()


# ---------------------------------------------------------------- provider


def _normalize_base_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class AnthropicProvider(HttpProvider):
    """Anthropic Messages over httpx, streaming when a callback is given.

    ``base_url`` is the API root (``/v1`` is appended; a trailing ``/v1`` is
    accepted). ``model_prefix`` is stripped from ``request.model`` when present
    (``"anthropic:claude-sonnet-4-5"``); ``attachments`` resolves image
    references to bytes at call time; ``max_tokens`` overrides the per-model
    default; ``cache`` sets prompt caching; ``expose_thinking`` asks for
    summarized thinking and streams it as ``ReasoningDeltaEvent`` (``False`` asks
    the API to omit the text but still keeps the signature for replay);
    ``betas`` are sent as ``anthropic-beta``. Pass ``http_client`` to share a
    pool; otherwise the provider owns one (close it with :meth:`aclose` or
    ``async with``). Wrap it in :class:`~lash.providers.http.ProviderHandle` for
    retries.
    """

    _path = "/v1/messages"
    _operation = "messages"

    _truncation_detail = " (no message_stop or stop_reason)"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = ANTHROPIC_BASE_URL,
        model_prefix: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        attachments: AttachmentResolver | None = None,
        timeouts: Timeouts | None = None,
        name: str = "anthropic",
        stream: bool | None = None,
        max_tokens: int | None = None,
        cache: CacheRetention = "short",
        expose_thinking: bool = True,
        betas: tuple[str, ...] | list[str] = (),
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=_normalize_base_url(base_url),
            model_prefix=model_prefix,
            http_client=http_client,
            attachments=attachments,
            timeouts=timeouts,
            name=name,
            stream=stream,
            extra_headers=extra_headers,
        )
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if cache not in ("none", "short", "long"):
            raise ValueError(f"cache must be 'none', 'short' or 'long', got {cache!r}")
        self.max_tokens = max_tokens
        self.cache: CacheRetention = cache
        self.expose_thinking = expose_thinking
        self.betas = tuple(betas)

    async def build_body(self, request: LlmRequest, *, stream: bool = False) -> dict[str, Any]:
        """Resolve attachments and build the JSON body (exposed for tests and tracing)."""
        return build_messages_body(
            request,
            model=self.wire_model(request.model),
            images=await self._images(request),
            stream=stream,
            max_tokens=self.max_tokens,
            cache=self.cache,
            expose_thinking=self.expose_thinking,
        )

    def headers(self, body: Mapping[str, Any], *, stream: bool) -> dict[str, str]:
        """The request headers for ``body`` (the key is included; never log them)."""
        auth = {"x-api-key": self._api_key, "anthropic-version": ANTHROPIC_VERSION}
        betas = list(self.betas)
        thinking = body.get("thinking")
        if (
            isinstance(thinking, dict)
            and thinking.get("type") == "enabled"
            and body.get("tools")
            and "claude-3" not in str(body.get("model", "")).lower()
            and INTERLEAVED_THINKING_BETA not in betas
        ):
            betas.append(INTERLEAVED_THINKING_BETA)
        if betas:
            auth["anthropic-beta"] = ",".join(betas)
        return self._json_headers(auth, event_stream=stream)

    # ------------------------------------------------------------ internals

    def _http_error(self, response: httpx.Response, raw: bytes) -> ProviderCallError:
        body = ErrorBody.read(response, raw)
        status = response.status_code
        vendor_type: str | None = None
        if isinstance(body.error, dict) and isinstance(body.error.get("type"), str):
            vendor_type = body.error["type"]
        request_id: str | None = None
        if isinstance(body.payload, dict) and isinstance(body.payload.get("request_id"), str):
            request_id = body.payload["request_id"]
        request_id = request_id or response.headers.get("request-id")
        verdict = classify_failure(
            status=status, code=vendor_type, message=body.message, raw=body.text
        )
        where = f" (request {request_id})" if request_id else ""
        return self._status_error(response, body, verdict, vendor_type, where=where)

    def _stream_error(self, error: Any, label: str) -> ProviderCallError:
        if isinstance(error, dict):
            message = str(error.get("message") or json.dumps(error)[:500])
            code = error.get("type") if isinstance(error.get("type"), str) else None
        else:
            message, code = str(error), None
        verdict = classify_failure(code=code, message=message, in_stream=True)
        tag = f" {code}" if code else ""
        return self._error(
            f"{label}: error in stream{tag}: {message}", verdict, raw=json.dumps(error)[:4000]
        )

    async def _parse_json(
        self, raw: bytes, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise self._malformed(label, f"{exc} in {raw[:200]!r}") from None
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise self._stream_error(payload.get("error", payload), label)
        try:
            assembly = _assemble_message(payload)
        except ValueError as exc:
            raise self._malformed(label, str(exc)) from None
        response = assembly.response()
        await self._replay_events(
            response,
            on_event,
            item_id=lambda part: assembly.message_id,
            reasoning=self.expose_thinking,
        )
        return response

    def _event_sink(self, on_event: StreamCallback | None, label: str) -> EventSink:
        assembly = _Assembly()

        async def apply(event: SseEvent) -> None:
            await self._apply_event(assembly, event, on_event, label)

        return EventSink(
            apply=apply,
            ended=lambda: assembly.done,
            complete=lambda: assembly.done or assembly.stop_reason is not None,
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
        if not data or data == "[DONE]":
            return
        payload = self._event_object(data, label)
        kind = payload.get("type")
        if not isinstance(kind, str):
            kind = event.event
        if kind == "error":
            raise self._stream_error(payload.get("error", payload), label)
        if kind == "message_start":
            message = payload.get("message")
            if not isinstance(message, dict):
                raise self._malformed(label, "message_start without a message object")
            if isinstance(message.get("id"), str):
                assembly.message_id = message["id"]
            assembly.set_stop(message)
            if isinstance(message.get("usage"), dict):
                await emit_usage(on_event, assembly.add_usage(message["usage"]))
        elif kind == "content_block_start":
            index = payload.get("index")
            meta = payload.get("content_block")
            if not isinstance(index, int) or not isinstance(meta, dict):
                raise self._malformed(label, f"bad content_block_start: {data[:200]!r}")
            block = assembly.start_block(index, meta)
            # A block may open with content already in it.
            if block.kind == "text" and isinstance(meta.get("text"), str) and meta["text"]:
                await self._text(assembly, block, index, meta["text"], on_event)
            elif block.kind == "thinking" and isinstance(meta.get("thinking"), str):
                piece = meta["thinking"]
                if piece:
                    await self._thinking(assembly, block, index, piece, on_event)
        elif kind == "content_block_delta":
            index = payload.get("index")
            delta = payload.get("delta")
            if not isinstance(index, int) or not isinstance(delta, dict):
                raise self._malformed(label, f"bad content_block_delta: {data[:200]!r}")
            await self._apply_delta(assembly, index, delta, on_event)
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                assembly.set_stop(delta)
            if isinstance(payload.get("usage"), dict):
                await emit_usage(on_event, assembly.add_usage(payload["usage"]))
        elif kind == "message_stop":
            assembly.done = True
        # ping, content_block_stop and event types added later carry nothing to keep.

    async def _text(
        self,
        assembly: _Assembly,
        block: _Block,
        index: int,
        piece: str,
        on_event: StreamCallback | None,
    ) -> None:
        block.text.append(piece)
        if on_event is not None:
            item = f"{assembly.message_id}:{index}" if assembly.message_id else None
            await on_event(TextDeltaEvent(text=piece, item_id=item))

    async def _thinking(
        self,
        assembly: _Assembly,
        block: _Block,
        index: int,
        piece: str,
        on_event: StreamCallback | None,
    ) -> None:
        block.text.append(piece)
        if on_event is not None and self.expose_thinking:
            item = f"{assembly.message_id}:{index}" if assembly.message_id else None
            await on_event(ReasoningDeltaEvent(text=piece, item_id=item))

    async def _apply_delta(
        self,
        assembly: _Assembly,
        index: int,
        delta: dict[str, Any],
        on_event: StreamCallback | None,
    ) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            piece = delta.get("text")
            if isinstance(piece, str) and piece:
                await self._text(assembly, assembly.block(index, "text"), index, piece, on_event)
        elif kind == "thinking_delta":
            piece = delta.get("thinking")
            if isinstance(piece, str) and piece:
                block = assembly.block(index, "thinking")
                await self._thinking(assembly, block, index, piece, on_event)
        elif kind == "signature_delta":
            piece = delta.get("signature")
            if isinstance(piece, str) and piece:
                assembly.block(index, "thinking").signature.append(piece)
        elif kind == "input_json_delta":
            piece = delta.get("partial_json")
            if isinstance(piece, str) and piece:
                assembly.block(index, "tool_use").input_json.append(piece)


def anthropic_from_env(*, env: Mapping[str, str] | None = None, **kwargs: Any) -> AnthropicProvider:
    """An Anthropic provider configured from ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``."""
    return AnthropicProvider(**provider_settings("anthropic", env), **kwargs)
