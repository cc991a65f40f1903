"""OpenAI Responses API (``POST {base_url}/responses``), used statelessly.

Every call sends the whole conversation (``store: false``, never
``previous_response_id``). Reasoning survives between calls as the vendor's
``encrypted_content`` blobs: a reply's reasoning items are kept, id, summary and
blob, in :class:`~lash.kernel.llm.ReasoningOutput` and sent back verbatim on the
next request. Image attachments are resolved to data URLs at call time.

The reply is assembled from an SSE stream or a JSON body (whatever the server
sent) by one state machine, so both paths give the same :class:`LlmResponse` for
the same content. Usage follows lash's convention (see
:func:`~lash.providers.openai_chat.usage_from_openai`): ``input_tokens`` includes
cached tokens, ``output_tokens`` excludes reasoning tokens.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..kernel.attachments import AttachmentRef
from ..kernel.llm import (
    ImageBlock,
    JsonObjectOutput,
    JsonSchemaOutput,
    LlmContentBlock,
    LlmOutputPart,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmUsage,
    ProviderReplayMeta,
    ReasoningBlock,
    ReasoningOutput,
    ReasoningReplay,
    ResponseTextMeta,
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
    image_mime,
    merge_usage,
    validation_error,
    variant_effort,
)
from .base import ReasoningDeltaEvent, StreamCallback, StreamEvent, TextDeltaEvent, UsageEvent
from .classify import classify_failure
from .http import ProviderCallError, Timeouts
from .models import REASONING_VARIANTS
from .openai_chat import _openai_error_verdict, usage_from_openai
from .sse import SseEvent

__all__ = [
    "OPENAI_BASE_URL",
    "REASONING_EFFORTS",
    "OpenAIResponsesProvider",
    "ResponseFailedError",
    "build_responses_body",
    "openai_responses_from_env",
    "parse_response",
]

REASONING_EFFORTS = REASONING_VARIANTS
"""The ``model_variant`` values this provider maps to ``reasoning.effort``."""

_REASONING_SUMMARIES = ("auto", "concise", "detailed")
_MESSAGE_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
_PHASES = frozenset({"commentary", "final_answer"})
_OUTPUT_LIMIT_REASONS = frozenset({"max_output_tokens", "max_tokens"})
_FILTER_REASONS = frozenset({"content_filter", "safety"})
_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
_MAX_INDEX = 4096  # no real reply has this many output items or content parts
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_MAX_CACHE_KEY = 64


# ---------------------------------------------------------------- request mapping


def _image_part(ref: AttachmentRef, data: bytes) -> dict[str, Any]:
    url = data_url(image_mime(ref, IMAGE_MIMES, "OpenAI"), data)
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def _is_reasoning_model(model: str) -> bool:
    name = model.rsplit("/", 1)[-1].lower()
    return bool(_REASONING_MODEL.match(name)) and "chat" not in name


class _InputBuilder:
    """Turns request messages into ``instructions`` and Responses ``input`` items."""

    def __init__(self, request: LlmRequest, images: Mapping[str, bytes]) -> None:
        self.request = request
        self.images = images
        self.instructions: list[str] = []
        self.items: list[dict[str, Any]] = []
        self.used_ids: set[str] = set()
        self.replays_reasoning = False
        # pending message content and, for assistant text, the item id it will get
        self._content: list[dict[str, Any]] = []
        self._role = ""
        self._meta: ResponseTextMeta | None = None
        self._fallback_id = ""

    def build(self) -> None:
        leading = True
        for m_index, message in enumerate(self.request.messages):
            if message.role is LlmRole.SYSTEM:
                texts = [b.text for b in message.blocks if isinstance(b, TextBlock) and b.text]
                if leading:
                    self.instructions.extend(texts)
                elif texts:
                    # A system note in mid-conversation stays where it was said.
                    content = [{"type": "input_text", "text": t} for t in texts]
                    self.items.append({"type": "message", "role": "system", "content": content})
                continue
            leading = False
            for b_index, block in enumerate(message.blocks):
                self._block(message.role, m_index, b_index, block)
            self._flush()

    def _claim(self, item_id: str | None, prefix: str) -> str | None:
        """``item_id`` if it is the vendor's kind of id and not yet used in this request."""
        if not item_id or not item_id.startswith(prefix) or item_id in self.used_ids:
            return None
        self.used_ids.add(item_id)
        return item_id

    def _block(self, role: LlmRole, m_index: int, b_index: int, block: LlmContentBlock) -> None:
        if isinstance(block, TextBlock):
            if not block.text:
                return
            if role is LlmRole.ASSISTANT:
                meta = block.response_meta
                same_item = (
                    self._role == "assistant"
                    and self._content
                    and (meta is None or self._meta is None or meta.id == self._meta.id)
                )
                if not same_item:
                    self._flush()
                    self._role = "assistant"
                    self._meta = meta
                    self._fallback_id = f"msg_lash_{m_index}_{b_index}"
                elif self._meta is None:
                    self._meta = meta
                self._content.append({"type": "output_text", "text": block.text, "annotations": []})
            else:
                self._user_part({"type": "input_text", "text": block.text})
        elif isinstance(block, ImageBlock):
            if role is LlmRole.USER:
                self._user_part(_image_part(*attached_image(self.request, block, self.images)))
        elif isinstance(block, ReasoningBlock):
            self._flush()
            replay = block.replay
            if replay is None or not replay.encrypted_content:
                return  # without the blob there is nothing the vendor can continue from
            item_id = self._claim(replay.item_id, "rs")
            if item_id is None:
                return
            self.replays_reasoning = True
            self.items.append(
                {
                    "type": "reasoning",
                    "id": item_id,
                    "summary": [{"type": "summary_text", "text": s} for s in replay.summary],
                    "encrypted_content": replay.encrypted_content,
                }
            )
        elif isinstance(block, ToolCallBlock):
            self._flush()
            call: dict[str, Any] = {
                "type": "function_call",
                "call_id": block.call_id,
                "name": block.tool_name,
                "arguments": block.input_json or "{}",
            }
            item_id = self._claim(block.replay.item_id if block.replay else None, "fc")
            if item_id is not None:
                call["id"] = item_id
            self.items.append(call)
        elif isinstance(block, ToolResultBlock):
            self._flush()
            self.items.append(
                {"type": "function_call_output", "call_id": block.call_id, "output": block.content}
            )

    def _user_part(self, part: dict[str, Any]) -> None:
        if self._role != "user":
            self._flush()
            self._role = "user"
        self._content.append(part)

    def _flush(self) -> None:
        content, self._content = self._content, []
        role, self._role = self._role, ""
        meta, self._meta = self._meta, None
        if not content:
            return
        if role != "assistant":
            self.items.append({"type": "message", "role": role, "content": content})
            return
        item_id = self._claim(meta.id if meta else None, "msg") or self._claim(
            self._fallback_id, "msg"
        )
        status = meta.status if meta and meta.status in _MESSAGE_STATUSES else "completed"
        item: dict[str, Any] = {
            "type": "message",
            "role": "assistant",
            "id": item_id or f"msg_lash_{uuid.uuid4().hex}",
            "status": status,
            "content": content,
        }
        if meta is not None and meta.phase in _PHASES:
            item["phase"] = meta.phase
        self.items.append(item)


def _cache_key(session_id: str) -> str:
    if len(session_id) <= _MAX_CACHE_KEY:
        return session_id
    return hashlib.sha256(session_id.encode()).hexdigest()


def build_responses_body(
    request: LlmRequest,
    *,
    model: str,
    images: Mapping[str, bytes],
    stream: bool,
    reasoning_effort: str | None = None,
    reasoning_summary: str | None = None,
    encrypted_reasoning: bool | None = None,
    max_output_tokens: int | None = None,
    prompt_cache_key: bool = True,
) -> dict[str, Any]:
    """The Responses JSON body for ``request`` (``images`` maps attachment id → bytes).

    ``request.model_variant`` (one of :data:`REASONING_EFFORTS`) overrides
    ``reasoning_effort``. ``encrypted_reasoning`` decides whether to ask for
    ``reasoning.encrypted_content``; ``None`` asks when reasoning is configured,
    when the input replays reasoning, or when ``model`` is an o-series or GPT-5
    reasoning model.
    """
    if reasoning_summary is not None and reasoning_summary not in _REASONING_SUMMARIES:
        raise validation_error(
            f"reasoning_summary {reasoning_summary!r} is not one of "
            f"{', '.join(_REASONING_SUMMARIES)}"
        )
    builder = _InputBuilder(request, images)
    builder.build()
    body: dict[str, Any] = {"model": model}
    if builder.instructions:
        body["instructions"] = "\n\n".join(builder.instructions)
    body["input"] = builder.items
    body["stream"] = stream
    body["store"] = False
    cap = request.generation.output_token_cap or max_output_tokens
    if cap is not None:
        body["max_output_tokens"] = cap
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.input_schema or {"type": "object", "properties": {}},
                "strict": False,
            }
            for tool in request.tools
        ]
        body["tool_choice"] = request.tool_choice.value
        body["parallel_tool_calls"] = True
    effort = variant_effort(request, "OpenAI Responses", reasoning_effort)
    reasoning: dict[str, Any] = {}
    if effort is not None:
        reasoning["effort"] = effort
    if reasoning_summary is not None and effort != "none":
        reasoning["summary"] = reasoning_summary
    if reasoning:
        body["reasoning"] = reasoning
    if encrypted_reasoning is None:
        reasoning_on = effort is not None and effort != "none"
        encrypted_reasoning = (
            reasoning_on
            or builder.replays_reasoning
            or (effort is None and _is_reasoning_model(model))
        )
    if encrypted_reasoning:
        body["include"] = ["reasoning.encrypted_content"]
    spec = request.output_spec
    if isinstance(spec, JsonObjectOutput):
        body["text"] = {"format": {"type": "json_object"}}
    elif isinstance(spec, JsonSchemaOutput):
        body["text"] = {
            "format": {
                "type": "json_schema",
                "name": spec.name,
                "schema": spec.schema,
                "strict": spec.strict,
            }
        }
    if prompt_cache_key and request.session_id:
        body["prompt_cache_key"] = _cache_key(request.session_id)
    return body


# ---------------------------------------------------------------- response assembly


class ResponseFailedError(Exception):
    """The vendor reported a failed response (``response.failed``, an ``error`` event).

    ``error`` is the vendor's error object; the provider classifies it.
    """

    def __init__(self, error: dict[str, Any], *, event: str) -> None:
        message = error.get("message")
        super().__init__(message if isinstance(message, str) and message else json.dumps(error))
        self.error = error
        self.event = event


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(entries: Any, kind: str, key: str = "text") -> list[str]:
    if not isinstance(entries, list):
        return []
    out: list[str] = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type", kind) == kind:
            text = entry.get(key)
            if isinstance(text, str):
                out.append(text)
    return out


def _visible_reasoning(item: dict[str, Any]) -> str:
    summary = [s for s in _texts(item.get("summary"), "summary_text") if s]
    if summary:
        return "\n\n".join(summary)
    return "\n\n".join(s for s in _texts(item.get("content"), "reasoning_text") if s)


def _message_text(item: dict[str, Any]) -> str:
    return "".join(_texts(item.get("content"), "output_text"))


def _visible(item: dict[str, Any] | None) -> tuple[str, str]:
    """(assistant text, reasoning text) an item shows."""
    if item is None:
        return "", ""
    kind = item.get("type")
    if kind == "message":
        return _message_text(item), ""
    if kind == "reasoning":
        return "", _visible_reasoning(item)
    return "", ""


def _index(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_INDEX:
        raise ValueError(f"{what} {value!r} is not a small non-negative integer")
    return value


def _event_index(event: dict[str, Any], name: str) -> int:
    return _index(event.get(name), name)


def _part(item: dict[str, Any], key: str, index: int, kind: str, field: str) -> dict[str, Any]:
    """``item[key][index]``, created (and the list padded) as a ``kind`` part."""
    entries = item.get(key)
    if not isinstance(entries, list):
        entries = item[key] = []
    while len(entries) <= index:
        entries.append({"type": kind, field: ""})
    entry = entries[index]
    if not isinstance(entry, dict):
        entry = entries[index] = {"type": kind, field: ""}
    if not isinstance(entry.get(field), str):
        entry[field] = ""
    return entry


@dataclass
class _Assembly:
    """One reply, built from stream events or from a whole response object.

    Output items live in ``items`` keyed by output index, in the vendor's item
    shape; deltas grow them, ``output_item.done`` replaces them, and the final
    response fills in whatever the stream did not finish. :meth:`response` maps
    the items to lash parts, so the streamed and the buffered paths share one
    conversion.
    """

    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    status: str | None = None
    incomplete_reason: str | None = None
    usage: LlmUsage | None = None
    raw_usage: Any = None
    finished: bool = False

    # ------------------------------------------------------------ whole objects

    def note_response(self, response: Any) -> list[StreamEvent]:
        """Take status and usage from a response object (any event may carry one)."""
        if not isinstance(response, dict):
            return []
        status = response.get("status")
        if isinstance(status, str):
            self.status = status
        details = response.get("incomplete_details", response.get("incompleteDetails"))
        if isinstance(details, dict) and isinstance(details.get("reason"), str):
            self.incomplete_reason = details["reason"]
        raw = response.get("usage")
        if not isinstance(raw, dict):
            return []
        self.raw_usage = raw
        self.usage = merge_usage(self.usage, usage_from_openai(raw))
        return [UsageEvent(usage=self.usage)]

    def finish(self, response: Any) -> list[StreamEvent]:
        """Take the final response object: status, usage and its authoritative output."""
        if not isinstance(response, dict):
            raise ValueError("the final response is not an object")
        if response.get("status") == "failed":
            error = response.get("error")
            raise ResponseFailedError(
                error if isinstance(error, dict) else {"message": "the response failed"},
                event="response.failed",
            )
        events = self.note_response(response)
        output = response.get("output")
        if isinstance(output, list) and output:
            events = [*self._adopt_output(output), *events]
        self.finished = True
        return events

    def _adopt_output(self, output: list[Any]) -> list[StreamEvent]:
        """Take the final output; items the stream already finished are kept as streamed.

        (The vendor re-encrypts reasoning for every copy it sends, so the final
        object's blob can differ from the ``output_item.done`` one; both are valid.)
        """
        events: list[StreamEvent] = []
        streamed = self.items
        finished = {
            item_id: streamed[i]
            for i in sorted(self.done)
            if i in streamed and (item_id := _str(streamed[i].get("id")))
        }
        streamed_ids = dict(self.ids)
        self.items, self.ids, self.done = {}, {}, set()
        for index, item in enumerate(output):
            if not isinstance(item, dict):
                continue
            item_id = _str(item.get("id"))
            kept = finished.pop(item_id, None) if item_id else None
            if kept is None:
                if item_id is None:
                    before = streamed.get(index)
                else:
                    before = streamed.get(streamed_ids.get(item_id, -1))
                events += self._catch_up(before, item)
                kept = copy.deepcopy(item)
            self._put(index, kept)
            self.done.add(index)
        for item in finished.values():  # finished in the stream but missing from the final
            index = max(self.items, default=-1) + 1
            self._put(index, item)
            self.done.add(index)
        return events

    # ------------------------------------------------------------ stream events

    def _put(self, index: int, item: dict[str, Any]) -> None:
        self.items[index] = item
        item_id = _str(item.get("id"))
        if item_id:
            self.ids[item_id] = index

    def _slot(self, event: dict[str, Any], kind: str) -> dict[str, Any]:
        item_id = _str(event.get("item_id"))
        if item_id and item_id in self.ids:
            return self.items[self.ids[item_id]]
        raw_index = event.get("output_index")
        if raw_index is not None:
            index = _index(raw_index, "output_index")
        else:
            # no position given: continue the last item if it is of this kind
            index = max(self.items, default=-1)
            if index < 0 or self.items[index].get("type") != kind or item_id:
                index += 1
        item = self.items.get(index)
        if item is None:
            item = {"type": kind}
            if item_id:
                item["id"] = item_id
            self._put(index, item)
        return item

    def _catch_up(self, before: dict[str, Any] | None, after: dict[str, Any]) -> list[StreamEvent]:
        """Deltas for text an authoritative item adds to what was streamed."""
        old_text, old_reasoning = _visible(before)
        new_text, new_reasoning = _visible(after)
        item_id = _str(after.get("id"))
        events: list[StreamEvent] = []
        if new_text != old_text and new_text.startswith(old_text):
            events.append(TextDeltaEvent(text=new_text[len(old_text) :], item_id=item_id))
        if new_reasoning != old_reasoning and new_reasoning.startswith(old_reasoning):
            events.append(
                ReasoningDeltaEvent(text=new_reasoning[len(old_reasoning) :], item_id=item_id)
            )
        return events

    def apply(self, kind: str, event: dict[str, Any]) -> list[StreamEvent]:
        """Apply one stream event; return the stream events it produces.

        Raises :class:`ResponseFailedError` for a vendor failure and ``ValueError``
        for an event that cannot be applied.
        """
        if kind == "error":
            error = event.get("error")
            if not isinstance(error, dict):
                error = {k: v for k, v in event.items() if k not in ("type", "sequence_number")}
            raise ResponseFailedError(error, event="error")
        if kind == "response.failed":
            response = event.get("response")
            error = response.get("error") if isinstance(response, dict) else None
            if not isinstance(error, dict):
                error = {"message": "the response failed"}
            raise ResponseFailedError(error, event=kind)
        if kind in _TERMINAL_EVENTS:
            return self.finish(event.get("response"))
        events = self.note_response(event.get("response"))
        handler = _HANDLERS.get(kind)
        if handler is not None:
            events += handler(self, event)
        return events

    def _item_event(self, event: dict[str, Any], *, done: bool) -> list[StreamEvent]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise ValueError(f"{event.get('type')} without an item object")
        item_id = _str(item.get("id"))
        raw_index = event.get("output_index")
        if item_id and item_id in self.ids:
            index = self.ids[item_id]
        elif raw_index is None:
            index = max(self.items, default=-1) + 1
        else:
            index = _index(raw_index, "output_index")
        before = self.items.get(index)
        item = copy.deepcopy(item)
        self._put(index, item)
        if done:
            self.done.add(index)
        return self._catch_up(before, item)

    def _content_part_added(self, event: dict[str, Any]) -> list[StreamEvent]:
        part = event.get("part")
        if not isinstance(part, dict):
            return []
        item = self._slot(event, "message")
        index = _index(event.get("content_index"), "content_index")
        kind = part.get("type")
        field_name = "refusal" if kind == "refusal" else "text"
        entry = _part(item, "content", index, str(kind or "output_text"), field_name)
        if not entry[field_name]:
            entry.update(copy.deepcopy(part))
        return []

    def _text_delta(self, event: dict[str, Any], kind: str, field_name: str) -> list[StreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        item = self._slot(event, "message")
        entry = _part(
            item, "content", _index(event.get("content_index"), "content_index"), kind, field_name
        )
        entry[field_name] += delta
        if kind != "output_text":
            return []
        return [TextDeltaEvent(text=delta, item_id=_str(item.get("id")))]

    def _text_done(self, event: dict[str, Any], kind: str, field_name: str) -> list[StreamEvent]:
        full = event.get(field_name)
        if not isinstance(full, str):
            return []
        item = self._slot(event, "message")
        before = copy.deepcopy(item)
        entry = _part(
            item, "content", _index(event.get("content_index"), "content_index"), kind, field_name
        )
        entry[field_name] = full
        return self._catch_up(before, item)

    def _arguments_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta")
        if isinstance(delta, str) and delta:
            item = self._slot(event, "function_call")
            current = item.get("arguments")
            item["arguments"] = (current if isinstance(current, str) else "") + delta
        return []

    def _arguments_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        arguments = event.get("arguments")
        if isinstance(arguments, str):
            self._slot(event, "function_call")["arguments"] = arguments
        return []

    def _reasoning_delta(self, event: dict[str, Any], key: str, kind: str) -> list[StreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        item = self._slot(event, "reasoning")
        index_field = "summary_index" if key == "summary" else "content_index"
        index = _index(event.get(index_field), index_field)
        entry = _part(item, key, index, kind, "text")
        piece = delta
        if not entry["text"] and any(_texts(item[key][:index], kind)):
            piece = "\n\n" + delta  # parts are shown joined by a blank line
        entry["text"] += delta
        return [ReasoningDeltaEvent(text=piece, item_id=_str(item.get("id")))]

    def _reasoning_done(self, event: dict[str, Any], key: str, kind: str) -> list[StreamEvent]:
        full = event.get("text")
        if not isinstance(full, str):
            return []
        item = self._slot(event, "reasoning")
        index_field = "summary_index" if key == "summary" else "content_index"
        before = copy.deepcopy(item)
        _part(item, key, _index(event.get(index_field), index_field), kind, "text")["text"] = full
        return self._catch_up(before, item)

    def _summary_part_added(self, event: dict[str, Any]) -> list[StreamEvent]:
        item = self._slot(event, "reasoning")
        _part(
            item,
            "summary",
            _index(event.get("summary_index"), "summary_index"),
            "summary_text",
            "text",
        )
        return []

    # ------------------------------------------------------------ result

    def response(self) -> LlmResponse:
        """The assembled reply."""
        parts: list[LlmOutputPart] = []
        refusal: list[str] = []
        for index in sorted(self.items):
            item = self.items[index]
            kind = item.get("type")
            if kind == "message":
                refusal += _texts(item.get("content"), "refusal", "refusal")
                text = _message_text(item)
                if text:
                    parts.append(TextOutput(text=text, response_meta=_text_meta(item)))
            elif kind == "reasoning":
                part = _reasoning_part(item)
                if part is not None:
                    parts.append(part)
            elif kind == "function_call":
                call = _tool_call(item)
                if call is not None:
                    parts.append(call)
        text = "".join(p.text for p in parts if isinstance(p, TextOutput))
        has_calls = any(isinstance(p, ToolCallOutput) for p in parts)
        reason, diagnostic = self._terminal(has_calls, bool(parts))
        if any(refusal):
            reason, diagnostic = TerminalReason.CONTENT_FILTER, f"refusal: {''.join(refusal)}"
        return LlmResponse(
            full_text=text,
            parts=tuple(parts),
            usage=self.usage or LlmUsage(),
            terminal_reason=reason,
            terminal_diagnostic=diagnostic,
            provider_usage=self.raw_usage,
        )

    def _terminal(self, has_calls: bool, has_parts: bool) -> tuple[TerminalReason, str | None]:
        reason = self.incomplete_reason
        if reason in _OUTPUT_LIMIT_REASONS:
            return TerminalReason.OUTPUT_LIMIT, None
        if reason in _FILTER_REASONS:
            return TerminalReason.CONTENT_FILTER, f"incomplete: {reason}"
        if reason is not None:
            return TerminalReason.PROVIDER_ERROR, f"incomplete: {reason}"
        if self.status == "cancelled":
            return TerminalReason.CANCELLED, None
        if self.status == "incomplete" and not has_parts:
            return TerminalReason.PROVIDER_ERROR, "incomplete response without a reason"
        return (TerminalReason.TOOL_USE if has_calls else TerminalReason.STOP), None


_Handler = Callable[[_Assembly, dict[str, Any]], list[StreamEvent]]
_HANDLERS: dict[str, _Handler] = {
    "response.output_item.added": lambda a, e: a._item_event(e, done=False),
    "response.output_item.done": lambda a, e: a._item_event(e, done=True),
    "response.content_part.added": _Assembly._content_part_added,
    "response.output_text.delta": lambda a, e: a._text_delta(e, "output_text", "text"),
    "response.output_text.done": lambda a, e: a._text_done(e, "output_text", "text"),
    "response.refusal.delta": lambda a, e: a._text_delta(e, "refusal", "refusal"),
    "response.refusal.done": lambda a, e: a._text_done(e, "refusal", "refusal"),
    "response.function_call_arguments.delta": _Assembly._arguments_delta,
    "response.function_call_arguments.done": _Assembly._arguments_done,
    "response.reasoning_summary_part.added": _Assembly._summary_part_added,
    "response.reasoning_summary_text.delta": lambda a, e: a._reasoning_delta(
        e, "summary", "summary_text"
    ),
    "response.reasoning_summary_text.done": lambda a, e: a._reasoning_done(
        e, "summary", "summary_text"
    ),
    "response.reasoning_text.delta": lambda a, e: a._reasoning_delta(
        e, "content", "reasoning_text"
    ),
    "response.reasoning_text.done": lambda a, e: a._reasoning_done(e, "content", "reasoning_text"),
}


def _text_meta(item: dict[str, Any]) -> ResponseTextMeta:
    return ResponseTextMeta(
        id=_str(item.get("id")),
        status=_str(item.get("status")) or "completed",
        phase=_str(item.get("phase")),
    )


def _reasoning_part(item: dict[str, Any]) -> ReasoningOutput | None:
    replay = ReasoningReplay(
        item_id=_str(item.get("id")),
        encrypted_content=_str(item.get("encrypted_content")) or None,
        summary=tuple(_texts(item.get("summary"), "summary_text")),
    )
    text = _visible_reasoning(item)
    if not text and replay.encrypted_content is None and not replay.summary:
        return None
    return ReasoningOutput(text=text, replay=None if replay.is_empty else replay)


def _tool_call(item: dict[str, Any]) -> ToolCallOutput | None:
    name = _str(item.get("name"))
    if not name:
        return None
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        arguments = "" if arguments is None else json.dumps(arguments)
    item_id = _str(item.get("id"))
    return ToolCallOutput(
        call_id=_str(item.get("call_id")) or item_id or f"call_{uuid.uuid4().hex}",
        tool_name=name,
        input_json=arguments if arguments.strip() else "{}",
        replay=ProviderReplayMeta(item_id=item_id) if item_id else None,
    )


def parse_response(payload: Any) -> LlmResponse:
    """Assemble a non-streamed Responses object.

    Raises :class:`ResponseFailedError` when its status is ``failed`` and
    ``ValueError`` when it is not a response object.
    """
    if not isinstance(payload, dict):
        raise ValueError("response body is not a JSON object")
    if not isinstance(payload.get("output", []), list):
        raise ValueError("'output' is not a list")
    error = payload.get("error")
    if isinstance(error, dict) and payload.get("status") in (None, "failed"):
        raise ResponseFailedError(error, event="response")
    assembly = _Assembly()
    assembly.finish(payload)
    return assembly.response()


# ---------------------------------------------------------------- provider


class OpenAIResponsesProvider(HttpProvider):
    """The OpenAI Responses API over httpx, streaming when a callback is given.

    Stateless: ``store`` is false and the whole conversation goes out each call.
    ``reasoning_effort`` is the default ``reasoning.effort`` (a request's
    ``model_variant`` overrides it), ``reasoning_summary`` (``auto``, ``concise``
    or ``detailed``) asks for visible summaries, ``encrypted_reasoning`` forces
    asking for replayable reasoning on or off (default: decided per request, see
    :func:`build_responses_body`). ``attachments`` resolves image references at
    call time. Pass ``http_client`` to share a pool, else close the provider with
    :meth:`aclose` or ``async with``; wrap it in
    :class:`~lash.providers.http.ProviderHandle` for retries.
    """

    _path = "/responses"
    _operation = "responses"

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
        reasoning_effort: str | None = None,
        reasoning_summary: str | None = None,
        encrypted_reasoning: bool | None = None,
        max_output_tokens: int | None = None,
        prompt_cache_key: bool = True,
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
        if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(
                f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, "
                f"got {reasoning_effort!r}"
            )
        if reasoning_summary is not None and reasoning_summary not in _REASONING_SUMMARIES:
            raise ValueError(
                f"reasoning_summary must be one of {', '.join(_REASONING_SUMMARIES)}, "
                f"got {reasoning_summary!r}"
            )
        if max_output_tokens is not None and max_output_tokens <= 0:
            raise ValueError(f"max_output_tokens must be positive, got {max_output_tokens}")
        self.reasoning_effort = reasoning_effort
        self.reasoning_summary = reasoning_summary
        self.encrypted_reasoning = encrypted_reasoning
        self.max_output_tokens = max_output_tokens
        self.prompt_cache_key = prompt_cache_key

    async def build_body(self, request: LlmRequest, *, stream: bool = False) -> dict[str, Any]:
        """Resolve attachments and build the JSON body (exposed for tests and tracing)."""
        return build_responses_body(
            request,
            model=self.wire_model(request.model),
            images=await self._images(request),
            stream=stream,
            reasoning_effort=self.reasoning_effort,
            reasoning_summary=self.reasoning_summary,
            encrypted_reasoning=self.encrypted_reasoning,
            max_output_tokens=self.max_output_tokens,
            prompt_cache_key=self.prompt_cache_key,
        )

    # ------------------------------------------------------------ internals

    def _http_error(self, response: httpx.Response, raw: bytes) -> ProviderCallError:
        body = ErrorBody.read(response, raw)
        verdict, tag = _openai_error_verdict(response.status_code, body)
        return self._status_error(response, body, verdict, tag)

    def _failed(self, exc: ResponseFailedError, label: str) -> ProviderCallError:
        error = exc.error
        code = error.get("code") or error.get("type")
        status = error.get("status")
        verdict = classify_failure(
            status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            code=None if code is None else str(code),
            message=str(exc),
            in_stream=True,
        )
        tag = f" ({code})" if code else ""
        return self._error(
            f"{label}: {exc.event}{tag}: {exc}", verdict, raw=json.dumps(error)[:4000]
        )

    async def _parse_json(
        self, raw: bytes, on_event: StreamCallback | None, label: str
    ) -> LlmResponse:
        try:
            response = parse_response(json.loads(raw))
        except ResponseFailedError as exc:
            raise self._failed(exc, label) from None
        except ValueError as exc:
            raise self._malformed(label, f"{exc} in {raw[:200]!r}") from None
        await self._replay_events(response, on_event, item_id=_part_id)
        return response

    def _event_sink(self, on_event: StreamCallback | None, label: str) -> EventSink:
        assembly = _Assembly()

        async def apply(event: SseEvent) -> None:
            await self._apply_event(assembly, event, on_event, label)

        return EventSink(
            apply=apply,
            ended=lambda: assembly.finished,
            complete=lambda: assembly.finished,
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
        try:
            produced = assembly.apply(kind, payload)
        except ResponseFailedError as exc:
            raise self._failed(exc, label) from None
        except ValueError as exc:
            raise self._malformed(label, f"{kind}: {exc}") from None
        if on_event is not None:
            for item in produced:
                await on_event(item)


def _part_id(part: LlmOutputPart) -> str | None:
    """The vendor item id a part came from (reasoning: its replay id; text: its message id)."""
    if isinstance(part, ReasoningOutput):
        return part.replay.item_id if part.replay else None
    if isinstance(part, TextOutput):
        return part.response_meta.id if part.response_meta else None
    return None


def openai_responses_from_env(
    env: Mapping[str, str] | None = None, **kwargs: Any
) -> OpenAIResponsesProvider:
    """A Responses provider configured from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``."""
    return OpenAIResponsesProvider(**provider_settings("openai-responses", env), **kwargs)
