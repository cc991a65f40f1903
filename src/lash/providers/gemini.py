"""Google Gemini (the public Generative Language API, ``generateContent``).

The provider maps an :class:`LlmRequest` to ``POST {base_url}/models/{model}:generateContent``
(or ``:streamGenerateContent?alt=sse`` when streaming), resolves image attachments to
``inlineData`` at call time, and assembles the reply from whatever the server sent:
an SSE stream, a JSON array streamed element by element (``streamGenerateContent``
without ``alt=sse``), or a single JSON object. The API key travels in the
``x-goog-api-key`` header, never in the URL.

Mapping notes:

* Leading system messages become ``systemInstruction``; a system message after the
  conversation has started becomes user text, so it keeps its place.
* Gemini rarely gives function calls ids. A call without one gets
  ``gemini-{responseId}-{n}`` (``n`` counts calls in the response), so the id is the
  same whether the reply was streamed or not. Ids the server did send are echoed
  back; synthesized ones are not, and results are matched to calls by name and
  order instead (function responses are sent in the order of their calls).
* Thought signatures are replay data. A signed thought becomes a
  :class:`ReasoningOutput` with ``replay.signature``; a signature on a plain text
  part (or on an empty trailing part) becomes an extra ``ReasoningOutput`` with
  empty text; a signature on a function call goes into the call's
  ``ProviderReplayMeta.opaque``. Each is marked as Gemini's, and only Gemini's
  signatures are sent back. For ``gemini-3`` and later a step of function calls with
  no signature at all (history from another provider) gets Google's documented
  ``skip_thought_signature_validator`` sentinel on its first call.
* Tool schemas go out as ``parametersJsonSchema`` (JSON Schema) with ``$schema``
  removed; ``schema_dialect="openapi"`` instead sends the older ``parameters`` /
  ``responseSchema`` OpenAPI subset (see :func:`gemini_openapi_schema`).
* ``request.model_variant`` sets ``thinkingConfig``: before gemini-3 a
  ``thinkingBudget`` (none 0, minimal 512, low 1024, medium 8192, high 16000,
  xhigh/max 24576, auto -1, or a number of tokens); from gemini-3 on a
  ``thinkingLevel`` (none/minimal, low, medium, high; xhigh/max mean high; auto
  leaves it to the model). Unknown variants are rejected before any request.
* Images go inline (``inlineData``, base64): jpeg, png, webp, heic, heif.
* Usage follows lash's convention: ``input_tokens`` is ``promptTokenCount`` (which
  already includes ``cachedContentTokenCount``) plus ``toolUsePromptTokenCount``,
  ``output_tokens`` is ``candidatesTokenCount`` (which already excludes thoughts),
  ``reasoning_tokens`` is ``thoughtsTokenCount``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

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
    ProviderReplayMeta,
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
from ._env import GEMINI_BASE_URL, provider_settings
from ._http_provider import (
    AttachmentResolver,
    ErrorBody,
    HttpProvider,
    attached_image,
    image_mime,
    merge_usage,
    token_count,
    validation_error,
)
from .base import ReasoningDeltaEvent, StreamCallback, StreamEvent, TextDeltaEvent, UsageEvent
from .classify import Classification, FailureKind, classify_failure
from .http import ProviderCallError, Timeouts
from .sse import SseDecoder

__all__ = [
    "GEMINI_BASE_URL",
    "SKIP_SIGNATURE_SENTINEL",
    "AttachmentResolver",
    "GeminiProvider",
    "JsonArrayDecoder",
    "JsonArrayError",
    "SchemaDialect",
    "build_gemini_body",
    "gemini_from_env",
    "gemini_json_schema",
    "gemini_openapi_schema",
    "parse_generate_content",
    "parse_stream_payloads",
    "usage_from_gemini",
]

SKIP_SIGNATURE_SENTINEL = "skip_thought_signature_validator"
"""Google's documented placeholder for a function call that has no thought signature."""

SchemaDialect = Literal["json_schema", "openapi"]

_REPLAY_TAG = "gemini"
_IMAGE_MIMES = {
    "image/jpeg": "image/jpeg",
    "image/jpg": "image/jpeg",
    "image/png": "image/png",
    "image/webp": "image/webp",
    "image/heic": "image/heic",
    "image/heif": "image/heif",
}
_CONTENT_FILTER_FINISH = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "LANGUAGE",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FINISH_EXPLANATION = {
    "MALFORMED_FUNCTION_CALL": "the model produced a function call that could not be parsed",
    "UNEXPECTED_TOOL_CALL": "the model called a tool although tools were disabled",
    "TOO_MANY_TOOL_CALLS": "the model made too many consecutive tool calls",
    "MISSING_THOUGHT_SIGNATURE": "a replayed function call lacked its thought signature",
}
_TOOL_MODES = {ToolChoice.AUTO: "AUTO", ToolChoice.NONE: "NONE", ToolChoice.REQUIRED: "ANY"}

# thinking variants: budgets before gemini-3, levels from gemini-3 on
_THINKING_BUDGETS = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 16000,
    "xhigh": 24576,
    "max": 24576,
    "auto": -1,
    "dynamic": -1,
}
_THINKING_LEVELS: dict[str, str | None] = {
    "none": "minimal",
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
    "auto": None,
    "dynamic": None,
}
_CONTEXT_OVERFLOW = re.compile(
    r"input token count.*exceeds the maximum|exceeds the maximum number of tokens", re.S
)


_MAJOR = re.compile(r"gemini-(\d+)")


def _uses_thinking_levels(model: str) -> bool:
    """True for gemini-3 and later (thinking levels and mandatory call signatures)."""
    match = _MAJOR.search(model)
    return match is not None and int(match.group(1)) >= 3


# ---------------------------------------------------------------- JSON Schema


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
)


def gemini_json_schema(schema: Any) -> Any:
    """``schema`` as ``parametersJsonSchema`` / ``responseJsonSchema`` take it.

    Those fields accept JSON Schema, but Gemini rejects the ``$schema`` dialect
    marker, so it is removed wherever a subschema can hold it (a property that
    happens to be *named* ``$schema`` is kept). Nothing else changes.
    """
    if isinstance(schema, list):
        return [gemini_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$schema":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: gemini_json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [gemini_json_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = gemini_json_schema(value)
        else:
            out[key] = value
    return out


_OPENAPI_KEEP = frozenset(
    {
        "description",
        "title",
        "nullable",
        "maxItems",
        "minItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "default",
        "minimum",
        "maximum",
        "propertyOrdering",
    }
)
_OPENAPI_FORMATS = {
    "STRING": frozenset({"enum", "date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}


def gemini_openapi_schema(schema: Any) -> dict[str, Any]:
    """``schema`` reduced to the OpenAPI subset of Gemini's ``parameters`` / ``responseSchema``.

    Local references (``$ref`` into ``#/$defs`` or ``#/definitions``) are
    inlined; a recursive reference becomes a bare ``OBJECT`` where it repeats.
    ``type: [T, "null"]`` becomes ``T`` + ``nullable``; other type lists and
    ``oneOf`` become ``anyOf``; ``allOf`` is merged; ``const`` becomes a one-value ``enum``;
    non-string enums move into the description; types are upper-cased. Dropped:
    ``$schema``, ``$id``, ``$defs``/``definitions``, ``additionalProperties``,
    ``patternProperties``, ``not``, conditionals, ``exclusiveMinimum``/``Maximum``,
    ``multipleOf``, ``uniqueItems``, ``prefixItems``, formats other than
    ``enum``/``date-time`` (strings), ``float``/``double``, ``int32``/``int64``, and
    every other keyword outside the subset.
    """
    root = schema if isinstance(schema, dict) else {}
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(root.get(key), dict):
            defs.update({f"#/{key}/{name}": sub for name, sub in root[key].items()})
    return _openapi(root, defs, ())


def _openapi(schema: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    if schema is True or not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen or ref not in defs:
            return {"type": "OBJECT"}
        merged = {**defs[ref], **{k: v for k, v in schema.items() if k != "$ref"}}
        return _openapi(merged, defs, (*seen, ref))
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            if isinstance(sub, dict) and isinstance(sub.get("$ref"), str):
                sub = defs.get(sub["$ref"], {}) if sub["$ref"] not in seen else {}
            if not isinstance(sub, dict):
                continue
            for key, value in sub.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return _openapi(merged, defs, seen)
    out: dict[str, Any] = {k: v for k, v in schema.items() if k in _OPENAPI_KEEP}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str) and k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            kind = kinds[0]
        elif kinds:
            rest = {k: v for k, v in schema.items() if k not in ("type", "nullable")}
            out["anyOf"] = [_openapi({**rest, "type": k}, defs, seen) for k in kinds]
            return out
        else:
            kind = None
    if isinstance(kind, str):
        if kind == "null":
            out["nullable"] = True
        else:
            out["type"] = kind.upper()
    variants = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(variants, list):
        options = []
        for sub in variants:
            if isinstance(sub, dict) and sub.get("type") == "null":
                out["nullable"] = True
            else:
                options.append(_openapi(sub, defs, seen))
        if len(options) == 1 and "type" not in out:
            out.update({k: v for k, v in options[0].items() if k not in out})
        elif options:
            out["anyOf"] = options
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _OPENAPI_FORMATS.get(out.get("type", ""), ()):
        out["format"] = fmt
    values = schema.get("enum")
    if "const" in schema:
        values = [schema["const"]]
    if isinstance(values, list):
        if values and all(isinstance(v, str) for v in values):
            out["enum"] = list(values)
            out.setdefault("type", "STRING")
        else:
            allowed = ", ".join(json.dumps(v) for v in values)
            note = f"Allowed values: {allowed}."
            out["description"] = f"{out['description']} {note}" if "description" in out else note
    if isinstance(schema.get("properties"), dict):
        props = {name: _openapi(sub, defs, seen) for name, sub in schema["properties"].items()}
        out["properties"] = props
        out.setdefault("type", "OBJECT")
        required = schema.get("required")
        if isinstance(required, list):
            kept = [name for name in required if name in props]
            if kept:
                out["required"] = kept
    if "items" in schema:
        out["items"] = _openapi(schema["items"], defs, seen)
        out.setdefault("type", "ARRAY")
    return out


# ---------------------------------------------------------------- request mapping


def _replay_signature(replay: ProviderReplayMeta | None) -> str | None:
    opaque = replay.opaque if replay is not None else None
    if isinstance(opaque, dict) and opaque.get("provider") == _REPLAY_TAG:
        signature = opaque.get("thought_signature")
        return signature if isinstance(signature, str) and signature else None
    return None


def _vendor_call_id(replay: ProviderReplayMeta | None) -> str | None:
    """The id Gemini itself gave a call (synthesized ids are never sent back)."""
    if replay is None or not isinstance(replay.opaque, dict):
        return None
    if replay.opaque.get("provider") != _REPLAY_TAG:
        return None
    return replay.item_id or None


def _reasoning_part(block: ReasoningBlock) -> dict[str, Any] | None:
    replay = block.replay
    if replay is None or not replay.signature:
        return None  # unsigned thoughts carry nothing Gemini can use
    if not (replay.item_id or "").startswith(f"{_REPLAY_TAG}:"):
        return None  # another vendor's signature would be rejected
    if block.text:
        return {"text": block.text, "thought": True, "thoughtSignature": replay.signature}
    return {"text": "", "thoughtSignature": replay.signature}


def _call_args(input_json: str) -> dict[str, Any]:
    if not input_json.strip():
        return {}
    try:
        value = json.loads(input_json)
    except ValueError:
        return {"_raw_arguments": input_json}
    return value if isinstance(value, dict) else {"value": value}


def _image_part(ref: AttachmentRef, data: bytes) -> dict[str, Any]:
    mime = image_mime(ref, _IMAGE_MIMES, "Gemini")
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode("ascii")}}


def _thinking_config(
    model: str, variant: str | None, include_thoughts: bool
) -> dict[str, Any] | None:
    config: dict[str, Any] = {}
    if variant is not None:
        key = variant.strip().lower()
        if _uses_thinking_levels(model):
            if key not in _THINKING_LEVELS:
                raise validation_error(
                    f"unknown model variant {variant!r} for {model} "
                    f"(known: {', '.join(_THINKING_LEVELS)})",
                    code="unsupported_variant",
                )
            level = _THINKING_LEVELS[key]
            if level is not None:
                config["thinkingLevel"] = level
        elif key.isdigit():
            config["thinkingBudget"] = int(key)
        elif key in _THINKING_BUDGETS:
            config["thinkingBudget"] = _THINKING_BUDGETS[key]
        else:
            raise validation_error(
                f"unknown model variant {variant!r} for {model} "
                f"(known: {', '.join(_THINKING_BUDGETS)} or a token budget)",
                code="unsupported_variant",
            )
    if include_thoughts:
        config["includeThoughts"] = True
    return config or None


def build_gemini_body(
    request: LlmRequest,
    *,
    model: str,
    images: Mapping[str, bytes],
    include_thoughts: bool = False,
    temperature: float | None = None,
    max_output_tokens: int | None = None,
    schema_dialect: SchemaDialect = "json_schema",
    safety_settings: Sequence[Mapping[str, Any]] | None = None,
    generation_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``generateContent`` JSON body for ``request`` (``images`` maps id → bytes).

    ``model`` is the wire model name (it picks thinking budgets vs levels and the
    signature sentinel); ``generation_config`` entries override computed ones.
    """
    calls: dict[str, tuple[int, str, str | None]] = {}  # call_id → (order, name, vendor id)
    for message in request.messages:
        for block in message.blocks:
            if isinstance(block, ToolCallBlock) and block.call_id not in calls:
                calls[block.call_id] = (len(calls), block.tool_name, _vendor_call_id(block.replay))

    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    wants_sentinel = _uses_thinking_levels(model)
    for message in request.messages:
        if message.role is LlmRole.SYSTEM:
            texts = [b.text for b in message.blocks if isinstance(b, TextBlock) and b.text]
            if not contents:
                system.extend({"text": t} for t in texts)
            elif texts:
                _append(contents, "user", [{"text": t} for t in texts])
            continue
        role = "model" if message.role is LlmRole.ASSISTANT else "user"
        parts: list[dict[str, Any]] = []
        results: list[tuple[int, dict[str, Any]]] = []
        call_parts: list[dict[str, Any]] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                if block.text:
                    parts.append({"text": block.text})
            elif isinstance(block, ImageBlock):
                if role == "user":
                    parts.append(_image_part(*attached_image(request, block, images)))
            elif isinstance(block, ReasoningBlock):
                if role == "model" and (part := _reasoning_part(block)) is not None:
                    parts.append(part)
            elif isinstance(block, ToolCallBlock):
                call: dict[str, Any] = {
                    "name": block.tool_name,
                    "args": _call_args(block.input_json),
                }
                vendor_id = _vendor_call_id(block.replay)
                if vendor_id:
                    call["id"] = vendor_id
                part = {"functionCall": call}
                if signature := _replay_signature(block.replay):
                    part["thoughtSignature"] = signature
                parts.append(part)
                call_parts.append(part)
            elif isinstance(block, ToolResultBlock):
                order, name, vendor_id = calls.get(
                    block.call_id, (len(calls) + len(results), block.tool_name or "tool", None)
                )
                response: dict[str, Any] = {"name": name, "response": {"output": block.content}}
                if vendor_id:
                    response["id"] = vendor_id
                results.append((order, {"functionResponse": response}))
        if wants_sentinel and call_parts and not any("thoughtSignature" in p for p in call_parts):
            call_parts[0]["thoughtSignature"] = SKIP_SIGNATURE_SENTINEL
        results.sort(key=lambda item: item[0])
        ordered = [part for _, part in results] + parts
        if ordered:
            _append(contents, role, ordered)

    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        declarations = []
        for tool in request.tools:
            schema = tool.input_schema or {"type": "object", "properties": {}}
            declaration: dict[str, Any] = {"name": tool.name, "description": tool.description}
            if schema_dialect == "openapi":
                declaration["parameters"] = gemini_openapi_schema(schema)
            else:
                declaration["parametersJsonSchema"] = gemini_json_schema(schema)
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        body["toolConfig"] = {"functionCallingConfig": {"mode": _TOOL_MODES[request.tool_choice]}}

    config: dict[str, Any] = {}
    cap = request.generation.output_token_cap or max_output_tokens
    if cap is not None:
        config["maxOutputTokens"] = cap
    if temperature is not None:
        config["temperature"] = temperature
    spec = request.output_spec
    if isinstance(spec, JsonObjectOutput):
        config["responseMimeType"] = "application/json"
    elif isinstance(spec, JsonSchemaOutput):
        config["responseMimeType"] = "application/json"
        if schema_dialect == "openapi":
            config["responseSchema"] = gemini_openapi_schema(spec.schema)
        else:
            config["responseJsonSchema"] = gemini_json_schema(spec.schema)
    thinking = _thinking_config(model, request.model_variant, include_thoughts)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if generation_config:
        config.update(generation_config)
    if config:
        body["generationConfig"] = config
    if safety_settings:
        body["safetySettings"] = [dict(s) for s in safety_settings]
    return body


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


# ---------------------------------------------------------------- response parsing


def usage_from_gemini(raw: Any) -> LlmUsage:
    """Normalize a Gemini ``usageMetadata`` object to lash's convention."""
    if not isinstance(raw, dict):
        return LlmUsage()
    prompt = token_count(raw.get("promptTokenCount")) + token_count(
        raw.get("toolUsePromptTokenCount")
    )
    cached = token_count(raw.get("cachedContentTokenCount"))
    return LlmUsage(
        input_tokens=prompt,
        output_tokens=token_count(raw.get("candidatesTokenCount")),
        cached_input_tokens=min(cached, prompt) if prompt else cached,
        reasoning_tokens=token_count(raw.get("thoughtsTokenCount")),
    )


class _InStreamError(ValueError):
    """An ``error`` object inside a 200 response (SSE event or array element)."""

    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Segment:
    thought: bool
    pieces: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)


@dataclass
class _Call:
    name: str
    args: dict[str, Any]
    vendor_id: str | None
    signature: str | None
    open: bool = False  # more argument pieces will follow (Vertex-style partial args)


@dataclass
class _Assembly:
    """Accumulates one reply from stream payloads or a whole JSON body."""

    items: list[_Segment | _Call] = field(default_factory=list)
    finish: str | None = None
    finish_message: str | None = None
    block_reason: str | None = None
    block_message: str | None = None
    response_id: str | None = None
    usage: LlmUsage | None = None
    raw_usage: Any = None

    @property
    def terminal_seen(self) -> bool:
        return self.finish is not None or self.block_reason is not None

    def add_payload(self, payload: Any) -> list[StreamEvent]:
        """Apply one ``GenerateContentResponse``; return the events it produced."""
        if not isinstance(payload, dict):
            raise ValueError(f"response element is not a JSON object: {str(payload)[:200]!r}")
        if payload.get("error") is not None:
            raise _InStreamError(payload["error"])
        events: list[StreamEvent] = []
        if isinstance(payload.get("responseId"), str) and self.response_id is None:
            self.response_id = payload["responseId"]
        feedback = payload.get("promptFeedback")
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            self.block_reason = feedback["blockReason"]
            message = feedback.get("blockReasonMessage")
            self.block_message = message if isinstance(message, str) else None
        candidates = payload.get("candidates") or []
        if not isinstance(candidates, list):
            raise ValueError("'candidates' is not a list")
        candidate = next(
            (c for c in candidates if isinstance(c, dict) and c.get("index", 0) in (0, None)),
            None,
        )
        if candidate is not None:
            content = candidate.get("content") or {}
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    events.extend(self._add_part(part))
            finish = candidate.get("finishReason")
            if isinstance(finish, str) and finish:
                self.finish = finish
                message = candidate.get("finishMessage")
                self.finish_message = message if isinstance(message, str) else None
        if isinstance(payload.get("usageMetadata"), dict):
            self.raw_usage = payload["usageMetadata"]
            merged = merge_usage(self.usage, usage_from_gemini(payload["usageMetadata"]))
            if merged != (self.usage or LlmUsage()):
                events.append(UsageEvent(usage=merged))
            self.usage = merged
        return events

    def _add_part(self, part: dict[str, Any]) -> list[StreamEvent]:
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        call = part.get("functionCall")
        if isinstance(call, dict):
            self._add_call(call, signature)
            return []
        text = part.get("text")
        text = text if isinstance(text, str) else ""
        if part.get("thought") is True:
            last = self.items[-1] if self.items else None
            if not (isinstance(last, _Segment) and last.thought and not last.signatures):
                last = _Segment(thought=True)
                self.items.append(last)
            if text:
                last.pieces.append(text)
            if signature:
                last.signatures.append(signature)
            return [ReasoningDeltaEvent(text=text)] if text else []
        if "text" not in part and signature is None:
            return []  # executableCode, inlineData output, ...: not mapped
        last = self.items[-1] if self.items else None
        if not (isinstance(last, _Segment) and not last.thought):
            last = _Segment(thought=False)
            self.items.append(last)
        if text:
            last.pieces.append(text)
        if signature:
            last.signatures.append(signature)
        return [TextDeltaEvent(text=text)] if text else []

    def _add_call(self, call: dict[str, Any], signature: str | None) -> None:
        last = self.items[-1] if self.items else None
        name = call.get("name")
        if isinstance(last, _Call) and last.open and not name:
            target = last  # a continuation of a call streamed in pieces
        else:
            vendor_id = call.get("id")
            target = _Call(
                name=name if isinstance(name, str) else "",
                args={},
                vendor_id=vendor_id if isinstance(vendor_id, str) and vendor_id else None,
                signature=None,
            )
            self.items.append(target)
        if signature and target.signature is None:
            target.signature = signature
        args = call.get("args")
        if isinstance(args, dict):
            target.args.update(args)
        partial = call.get("partialArgs")
        if isinstance(partial, list):
            for piece in partial:
                if isinstance(piece, dict):
                    _apply_partial_arg(target.args, piece)
        target.open = call.get("willContinue") is True

    def response(self) -> LlmResponse:
        parts: list[LlmOutputPart] = []
        texts: list[str] = []
        calls = 0
        tag = f"{_REPLAY_TAG}:{self.response_id or ''}"
        prefix = self.response_id or uuid.uuid4().hex[:16]
        for item in self.items:
            if isinstance(item, _Call):
                if not item.name:
                    continue
                replay = None
                if item.signature is not None or item.vendor_id is not None:
                    opaque: dict[str, Any] = {"provider": _REPLAY_TAG}
                    if item.signature is not None:
                        opaque["thought_signature"] = item.signature
                    replay = ProviderReplayMeta(item_id=item.vendor_id, opaque=opaque)
                parts.append(
                    ToolCallOutput(
                        call_id=item.vendor_id or f"gemini-{prefix}-{calls}",
                        tool_name=item.name,
                        input_json=json.dumps(item.args, ensure_ascii=False),
                        replay=replay,
                    )
                )
                calls += 1
                continue
            text = "".join(item.pieces)
            if item.thought:
                signature = item.signatures[0] if item.signatures else None
                replay_r = ReasoningReplay(item_id=tag, signature=signature) if signature else None
                if text or replay_r is not None:
                    parts.append(ReasoningOutput(text=text, replay=replay_r))
                continue
            if text:
                texts.append(text)
                parts.append(TextOutput(text=text))
            parts.extend(
                ReasoningOutput(text="", replay=ReasoningReplay(item_id=tag, signature=s))
                for s in item.signatures
            )
        reason, diagnostic = self._terminal(calls > 0)
        return LlmResponse(
            full_text="".join(texts),
            parts=tuple(parts),
            usage=self.usage or LlmUsage(),
            terminal_reason=reason,
            terminal_diagnostic=diagnostic,
            provider_usage=self.raw_usage,
        )

    def _terminal(self, has_calls: bool) -> tuple[TerminalReason, str | None]:
        if self.block_reason is not None:
            detail = f": {self.block_message}" if self.block_message else ""
            return TerminalReason.CONTENT_FILTER, f"prompt blocked ({self.block_reason}){detail}"
        finish = self.finish
        if finish is None or finish == "STOP":
            return (TerminalReason.TOOL_USE if has_calls else TerminalReason.STOP), None
        if finish == "MAX_TOKENS":
            return TerminalReason.OUTPUT_LIMIT, None
        detail = f": {self.finish_message}" if self.finish_message else ""
        if finish in _CONTENT_FILTER_FINISH:
            return TerminalReason.CONTENT_FILTER, f"finishReason {finish}{detail}"
        explanation = _FINISH_EXPLANATION.get(finish)
        what = f" ({explanation})" if explanation else ""
        return TerminalReason.PROVIDER_ERROR, f"finishReason {finish}{what}{detail}"


_PATH_TOKEN = re.compile(r"\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[['\"]([^'\"]*)['\"]\]")


def _apply_partial_arg(args: dict[str, Any], piece: dict[str, Any]) -> None:
    """Apply one Vertex-style ``partialArgs`` entry (``jsonPath`` + a typed value)."""
    path = piece.get("jsonPath")
    if not isinstance(path, str) or not path.startswith("$"):
        return
    keys: list[str | int] = []
    pos = 1
    while pos < len(path):
        match = _PATH_TOKEN.match(path, pos)
        if match is None:
            return
        name, index, quoted = match.groups()
        keys.append(int(index) if index is not None else (name or quoted or ""))
        pos = match.end()
    if not keys:
        return
    if "stringValue" in piece:
        value: Any = piece["stringValue"]
    elif "numberValue" in piece:
        value = piece["numberValue"]
    elif "boolValue" in piece:
        value = piece["boolValue"]
    elif "nullValue" in piece:
        value = None
    else:
        return
    node: Any = args
    for key, nxt in itertools.pairwise(keys):
        child = _get(node, key)
        if not isinstance(child, dict | list):
            child = [] if isinstance(nxt, int) else {}
            _set(node, key, child)
        node = child
    last = keys[-1]
    current = _get(node, last)
    if isinstance(value, str) and isinstance(current, str):
        value = current + value  # string values arrive in pieces
    _set(node, last, value)


def _get(node: Any, key: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and key < len(node):
        return node[key]
    return None


def _set(node: Any, key: str | int, value: Any) -> None:
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list) and isinstance(key, int):
        while len(node) <= key:
            node.append(None)
        node[key] = value


def parse_generate_content(payload: Any) -> LlmResponse:
    """Assemble a non-streamed ``GenerateContentResponse`` JSON object."""
    assembly = _Assembly()
    assembly.add_payload(payload)
    return assembly.response()


def parse_stream_payloads(payloads: Iterable[Any]) -> LlmResponse:
    """Assemble the elements of a streamed reply (SSE events or array elements)."""
    assembly = _Assembly()
    for payload in payloads:
        assembly.add_payload(payload)
    return assembly.response()


# ---------------------------------------------------------------- JSON array stream


class JsonArrayError(ValueError):
    """The body is not a well-formed JSON array of objects."""


_STRUCT = re.compile(rb'["{}\[\]]')
_IN_STRING = re.compile(rb'["\\]')
_WS = b" \t\r\n"


class JsonArrayDecoder:
    """Splits a streamed top-level JSON array into its elements as each one completes.

    Sans-IO: :meth:`feed` takes bytes in any split and returns the decoded
    elements it completed; :meth:`close` checks that the array was closed. Only
    the bytes of the element in progress are buffered.
    """

    __slots__ = (
        "_buf",
        "_count",
        "_depth",
        "_escape",
        "_in_string",
        "_max",
        "_offset",
        "_started",
        "_state",
    )

    def __init__(self, *, max_element_bytes: int = 64 * 1024 * 1024) -> None:
        self._state = "start"  # start → before → element → after → done
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._offset = 0
        self._count = 0
        self._started = False
        self._max = max_element_bytes

    @property
    def done(self) -> bool:
        """True once the closing ``]`` was read."""
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Any]:
        """Add ``chunk`` and return every element it completes."""
        out: list[Any] = []
        data = bytes(chunk)
        if not self._started and data:
            self._started = True
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
                self._offset += 3
        i, n = 0, len(data)
        while i < n:
            state = self._state
            if state == "element":
                i = self._scan(data, i, out)
                continue
            byte = data[i : i + 1]
            if byte in (b" ", b"\t", b"\r", b"\n"):
                i += 1
                continue
            where = self._offset + i
            if state == "start":
                if byte != b"[":
                    raise JsonArrayError(f"expected '[' at byte {where}, got {byte!r}")
                self._state = "before"
            elif state in ("before", "after") and byte == b"]":
                if state == "before" and self._count:
                    raise JsonArrayError(f"trailing comma before ']' at byte {where}")
                self._state = "done"
            elif state == "before":
                if byte not in (b"{", b"["):
                    raise JsonArrayError(
                        f"array element at byte {where} is not an object (starts with {byte!r})"
                    )
                self._state = "element"
                self._depth = 0
                continue  # the scanner consumes the opening bracket
            elif state == "after":
                if byte != b",":
                    raise JsonArrayError(f"expected ',' or ']' at byte {where}, got {byte!r}")
                self._state = "before"
            else:
                raise JsonArrayError(f"unexpected data after the array at byte {where}")
            i += 1
        self._offset += n
        return out

    def _scan(self, data: bytes, i: int, out: list[Any]) -> int:
        start, n = i, len(data)
        while i < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    i += 1
                    continue
                match = _IN_STRING.search(data, i)
                if match is None:
                    i = n
                    break
                i = match.end()
                if match.group() == b"\\":
                    self._escape = True
                else:
                    self._in_string = False
                continue
            match = _STRUCT.search(data, i)
            if match is None:
                i = n
                break
            i = match.end()
            token = match.group()
            if token == b'"':
                self._in_string = True
            elif token in (b"{", b"["):
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._buf += data[start:i]
                    out.append(self._finish_element())
                    return i
        self._buf += data[start:i]
        if len(self._buf) > self._max:
            raise JsonArrayError(f"array element longer than {self._max} bytes")
        return i

    def _finish_element(self) -> Any:
        raw = bytes(self._buf)
        self._buf.clear()
        self._state = "after"
        self._count += 1
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise JsonArrayError(
                f"invalid JSON in array element {self._count}: {exc}: {raw[:200]!r}"
            ) from None

    def close(self) -> None:
        """Signal end of body; raise :class:`JsonArrayError` if the array is unfinished."""
        if self._state != "done":
            what = "inside an element" if self._state == "element" else "before the closing ']'"
            raise JsonArrayError(f"the JSON array ended {what} (after {self._count} elements)")


class _BodyParser:
    """Chooses SSE, JSON-array or single-object parsing from the Content-Type and first byte."""

    def __init__(self, content_type: str) -> None:
        self.mode: str | None = "sse" if "text/event-stream" in content_type.lower() else None
        self._sse = SseDecoder()
        self._array = JsonArrayDecoder()
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Any]:
        if self.mode is None:
            self._pending += chunk
            head = self._pending.lstrip(_WS + b"\xef\xbb\xbf")
            if not head:
                return []
            first = head[:1]
            if first == b"[":
                self.mode = "array"
            elif first == b"{":
                self.mode = "object"
            elif first in (b"d", b":", b"e", b"i"):  # data:, comment, event:, id:
                self.mode = "sse"
            else:
                raise ValueError(f"unrecognized response body: {head[:200]!r}")
            chunk, self._pending = self._pending, b""
        if self.mode == "sse":
            return [self._sse_payload(e.data) for e in self._sse.feed(chunk) if _has_data(e.data)]
        if self.mode == "array":
            return self._array.feed(chunk)
        self._pending += chunk
        return []

    def close(self) -> list[Any]:
        if self.mode == "sse":
            return [self._sse_payload(e.data) for e in self._sse.close() if _has_data(e.data)]
        if self.mode == "array":
            self._array.close()
            return []
        if self.mode is None:
            raise ValueError("the response body is empty")
        try:
            return [json.loads(self._pending)]
        except ValueError as exc:
            raise ValueError(f"invalid JSON body: {exc}: {self._pending[:200]!r}") from None

    @staticmethod
    def _sse_payload(data: str) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            raise ValueError(f"invalid JSON in stream event: {data[:200]!r}") from None


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _has_data(data: str) -> bool:
    text = data.strip()
    return bool(text) and text != "[DONE]"


# ---------------------------------------------------------------- provider


def _retry_info_delay(error: Any) -> float | None:
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict) or "RetryInfo" not in str(detail.get("@type", "")):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            return seconds if seconds >= 0 else None
    return None


def _error_reasons(error: Any) -> list[str]:
    details = error.get("details") if isinstance(error, dict) else None
    return [
        d["reason"]
        for d in (details if isinstance(details, list) else ())
        if isinstance(d, dict) and isinstance(d.get("reason"), str)
    ]


def _classify(
    status: int | None, status_text: str | None, message: str, raw: str, error: Any, **kw: Any
) -> Classification:
    reasons = _error_reasons(error)
    lowered = f"{message} {raw}".lower()
    if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
        return Classification(FailureKind.AUTH, False)
    if _CONTEXT_OVERFLOW.search(lowered):
        return Classification(FailureKind.CONTEXT_OVERFLOW, False, TerminalReason.CONTEXT_OVERFLOW)
    return classify_failure(status=status, code=status_text, message=message, raw=raw, **kw)


class GeminiProvider(HttpProvider):
    """Gemini ``generateContent`` over httpx, streaming when a callback is given.

    ``model_prefix`` is stripped from ``request.model`` (``"gemini:gemini-2.5-flash"``),
    as is a leading ``models/``. ``attachments`` resolves image references at call
    time. ``include_thoughts`` asks for thought summaries (streamed as
    :class:`ReasoningDeltaEvent`); ``temperature``, ``max_output_tokens`` (used
    when the request sets no cap), ``safety_settings`` and ``generation_config``
    (raw overrides) shape every request. ``sse=False`` streams without
    ``alt=sse`` (a JSON array). Pass ``http_client`` to share a pool; wrap in
    :class:`~lash.providers.http.ProviderHandle` for retries.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = GEMINI_BASE_URL,
        model_prefix: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        attachments: AttachmentResolver | None = None,
        timeouts: Timeouts | None = None,
        name: str = "gemini",
        stream: bool | None = None,
        sse: bool = True,
        include_thoughts: bool = False,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        schema_dialect: SchemaDialect = "json_schema",
        safety_settings: Sequence[Mapping[str, Any]] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
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
        if schema_dialect not in ("json_schema", "openapi"):
            raise ValueError(
                f"schema_dialect must be 'json_schema' or 'openapi', got {schema_dialect!r}"
            )
        if max_output_tokens is not None and max_output_tokens <= 0:
            raise ValueError(f"max_output_tokens must be positive, got {max_output_tokens}")
        self.sse = sse
        self.include_thoughts = include_thoughts
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.schema_dialect: SchemaDialect = schema_dialect
        self.safety_settings = [dict(s) for s in safety_settings or ()]
        self.generation_config = dict(generation_config or {})

    def wire_model(self, model: str) -> str:
        """The model name used in the URL (prefix and ``models/`` removed)."""
        return super().wire_model(model).removeprefix("models/")

    def endpoint(self, model: str, *, stream: bool) -> str:
        """The URL for ``model`` (a tuned model keeps its ``tunedModels/`` path)."""
        wire = self.wire_model(model)
        path = wire if wire.startswith("tunedModels/") else f"models/{wire}"
        url = f"{self.base_url}/{quote(path, safe='/-._~')}"
        if not stream:
            return f"{url}:generateContent"
        return f"{url}:streamGenerateContent" + ("?alt=sse" if self.sse else "")

    async def build_body(self, request: LlmRequest, *, stream: bool = False) -> dict[str, Any]:
        """Resolve attachments and build the JSON body (exposed for tests and tracing).

        The body is the same either way: Gemini picks streaming by endpoint.
        """
        return build_gemini_body(
            request,
            model=self.wire_model(request.model),
            images=await self._images(request),
            include_thoughts=self.include_thoughts,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            schema_dialect=self.schema_dialect,
            safety_settings=self.safety_settings,
            generation_config=self.generation_config,
        )

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        """Run one ``generateContent`` call (no retries; see ``ProviderHandle``)."""
        stream = self._streams(on_event)
        body = await self.build_body(request)
        headers = self._json_headers(
            {"x-goog-api-key": self._api_key}, event_stream=stream and self.sse
        )
        label = f"{self._name} generateContent"
        url = self.endpoint(request.model, stream=stream)
        async with self._post(
            url, headers=headers, body=body, stream=stream, label=label
        ) as response:
            parser = _BodyParser(response.headers.get("content-type", ""))
            if stream:
                chunks = self._read_chunks(response, label)
                return await self._consume(chunks, parser, on_event, label)
            raw = await self._read_body(response, label)
        return await self._consume(_once(raw), parser, on_event, label)

    # ------------------------------------------------------------ internals

    async def _consume(
        self,
        chunks: AsyncIterator[bytes],
        parser: _BodyParser,
        on_event: StreamCallback | None,
        label: str,
    ) -> LlmResponse:
        """Feed body pieces through ``parser``, applying each element as it completes."""
        assembly = _Assembly()
        try:
            async for chunk in chunks:
                for payload in parser.feed(chunk):
                    await self._apply(assembly, payload, on_event, label)
        except ValueError as exc:  # SseError, JsonArrayError, bad JSON in an event
            raise self._malformed(label, str(exc)) from None
        try:
            tail = parser.close()
        except JsonArrayError:
            raise self._truncated(label) from None
        except ValueError as exc:
            if parser.mode == "sse" and not assembly.terminal_seen:
                raise self._truncated(label) from None  # a cut inside the last event
            raise self._malformed(label, str(exc)) from None
        for payload in tail:
            await self._apply(assembly, payload, on_event, label)
        if parser.mode == "sse" and not assembly.terminal_seen:
            raise self._truncated(label)
        return assembly.response()

    async def _apply(
        self, assembly: _Assembly, payload: Any, on_event: StreamCallback | None, label: str
    ) -> None:
        try:
            events = assembly.add_payload(payload)
        except _InStreamError as exc:
            raise self._stream_error(exc.error, label) from None
        except ValueError as exc:
            raise self._malformed(label, str(exc)) from None
        if on_event is not None:
            for event in events:
                await on_event(event)

    def _http_error(self, response: httpx.Response, raw: bytes) -> ProviderCallError:
        # streamGenerateContent without alt=sse wraps errors in an array
        body = ErrorBody.read(response, raw, first_of_list=True)
        error = body.error
        status_text: str | None = None
        if isinstance(error, dict) and isinstance(error.get("status"), str):
            status_text = error["status"]
        verdict = _classify(response.status_code, status_text, body.message, body.text, error)
        return self._status_error(
            response, body, verdict, status_text, retry_after_fallback=_retry_info_delay(error)
        )

    def _stream_error(self, error: Any, label: str) -> ProviderCallError:
        status: int | None = None
        status_text: str | None = None
        if isinstance(error, dict):
            message = str(error.get("message") or json.dumps(error)[:500])
            code = error.get("code")
            status = code if isinstance(code, int) and not isinstance(code, bool) else None
            status_text = error.get("status") if isinstance(error.get("status"), str) else None
        else:
            message = str(error)
        raw = json.dumps(error)[:4000]
        verdict = _classify(status, status_text, message, raw, error, in_stream=True)
        tag = f" ({status_text})" if status_text else ""
        return self._error(
            f"{label}: error in stream{tag}: {message}",
            verdict,
            raw=raw,
            status=status,
            retry_after=_retry_info_delay(error),
        )


def gemini_from_env(env: Mapping[str, str] | None = None, **kwargs: Any) -> GeminiProvider:
    """A Gemini provider configured from the environment.

    The key is ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``; ``GEMINI_BASE_URL``
    overrides the public endpoint.
    """
    return GeminiProvider(**provider_settings("gemini", env), **kwargs)
