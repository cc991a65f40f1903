"""A conformance suite every HTTP model provider must pass.

The suite pins what "the same reply" means across vendors. Each
:class:`Scenario` is one logical model reply (plain text, a reply cut by the
output cap, a tool call, text streamed in pieces, ...) together with the
normalized :class:`~lash.kernel.llm.LlmResponse` every provider must turn it
into. A :class:`WireScript` renders a scenario as one vendor's real wire body
(JSON, or the vendor's SSE / JSON-array stream), in the shapes the vendors'
recorded responses have. :class:`ProviderConformance` serves those bodies from a
loopback HTTP server (:class:`WireServer`, stdlib ``asyncio`` only), points the
provider at it and checks every scenario non-streamed and streamed, including
streams cut into one-byte pieces and at seeded random offsets.

Subclass ``ProviderConformance`` in a test module and provide a ``target``
fixture::

    class TestMyProvider(ProviderConformance):
        @pytest.fixture
        def target(self) -> ConformanceTarget:
            return ConformanceTarget(
                script=OpenAIChatWire(),
                make_provider=lambda url: OpenAIChatProvider(api_key="k", base_url=url + "/v1"),
                model="gpt-4.1",
            )

``make_provider`` receives the server's root URL (``http://127.0.0.1:<port>``)
and returns a fresh provider; the suite closes it after each call (its
``aclose()``, or that of a wrapped ``.provider``). A scenario a vendor cannot
express is listed in its script's ``unsupported`` table with the reason and is
reported as a pytest skip carrying that reason, never as a pass. Requires
``pytest``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from ..kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmToolSpec,
    LlmUsage,
    ReasoningOutput,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from ..providers.base import (
    Provider,
    ReasoningDeltaEvent,
    StreamEvent,
    TextDeltaEvent,
    UsageEvent,
)

__all__ = [
    "BASE_INPUT",
    "BASE_OUTPUT",
    "CACHED_INPUT",
    "REASONING",
    "SCENARIOS",
    "AnthropicWire",
    "ConformanceTarget",
    "JSON_SCENARIOS",
    "GeminiWire",
    "OpenAIChatWire",
    "OpenAIResponsesWire",
    "Outcome",
    "ProviderConformance",
    "Scenario",
    "ScenarioUnsupported",
    "ToolCallScript",
    "WireBody",
    "WireRequest",
    "WireScript",
    "WireServer",
    "check_events",
    "check_response",
    "close_provider",
    "conformance_request",
    "one_byte_pieces",
    "random_pieces",
    "render_wire",
    "run_scenario",
    "scenario",
    "wire_script",
]

# ---------------------------------------------------------------- canonical numbers

BASE_INPUT = 100
"""Input tokens of every scenario (cache hits included)."""
BASE_OUTPUT = 20
"""Visible output tokens of every scenario (reasoning excluded)."""
CACHED_INPUT = 40
"""Of ``BASE_INPUT``, the tokens served from the prompt cache in ``usage_cache_hit``."""
REASONING = 15
"""Reasoning tokens reported beside the output in the reasoning scenarios."""

_BASE_USAGE = LlmUsage(input_tokens=BASE_INPUT, output_tokens=BASE_OUTPUT)


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class ToolCallScript:
    """One tool call; its argument JSON is sent in ``pieces`` where a vendor streams it."""

    name: str
    pieces: tuple[str, ...]

    @property
    def arguments_json(self) -> str:
        """The whole argument text."""
        return "".join(self.pieces)

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments as an object."""
        value = json.loads(self.arguments_json)
        if not isinstance(value, dict):
            raise TypeError(f"tool arguments of {self.name!r} are not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class Scenario:
    """One logical reply and what every provider must normalize it to.

    ``text`` and ``reasoning`` are the pieces a streaming vendor sends one by
    one (joined they are the whole text); ``terminal`` is the expected
    :class:`TerminalReason` and ``usage`` the exact normalized usage (lash's
    convention: input includes cached tokens, output excludes reasoning).
    ``split_usage`` asks the stream to report input early and output late.
    ``streaming_only`` scenarios test stream assembly and are not sent as JSON.
    ``reference`` is the scenario's name in the cross-language suite.
    """

    name: str
    reference: str
    summary: str
    text: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    tool_call: ToolCallScript | None = None
    terminal: TerminalReason = TerminalReason.STOP
    usage: LlmUsage = _BASE_USAGE
    split_usage: bool = False
    streaming_only: bool = False

    @property
    def full_text(self) -> str:
        """The assistant text the reply must assemble to."""
        return "".join(self.text)

    @property
    def reasoning_text(self) -> str:
        """The reasoning text the reply must assemble to."""
        return "".join(self.reasoning)

    def __str__(self) -> str:
        return self.name


_LOOKUP = ToolCallScript(name="lookup", pieces=('{"query": "weather in Paris", "limit": 3}',))
_LOOKUP_SPLIT = ToolCallScript(
    name="lookup",
    pieces=('{"qu', 'ery": "weather in Z', "\u00fcr", 'ich", "li', 'mit": ', "3}"),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="plain_text_stop",
        reference="PlainTextStop",
        summary="a finished text reply; usage exactly 100 in / 20 out, no cache, no reasoning",
        text=("Hello from", " the conformance", " suite."),
    ),
    Scenario(
        name="output_capped",
        reference="OutputCapped",
        summary="a reply cut off by the output-token cap",
        text=("The first primes are", " 2, 3, 5"),
        terminal=TerminalReason.OUTPUT_LIMIT,
    ),
    Scenario(
        name="tool_use",
        reference="NonStreamingToolUse",
        summary="a reply that ends by calling a tool",
        tool_call=_LOOKUP,
        terminal=TerminalReason.TOOL_USE,
    ),
    Scenario(
        name="streaming_text_assembly",
        reference="StreamingTextAssembly",
        summary="text in several stream chunks (multi-byte UTF-8 too) assembles in order",
        text=("Gr\u00fc\u00dfe", " aus K\u00f6ln ", "\u2615 \u2014 ", "na\u00efve caf\u00e9."),
        streaming_only=True,
    ),
    Scenario(
        name="streaming_tool_argument_merge",
        reference="StreamingToolArgumentMerge",
        summary="tool arguments cut mid-key and mid-character merge to valid JSON",
        text=("Let me look", " that up."),
        tool_call=_LOOKUP_SPLIT,
        terminal=TerminalReason.TOOL_USE,
        streaming_only=True,
    ),
    Scenario(
        name="content_filter",
        reference="ContentFilter",
        summary="the vendor's content filter stops the reply",
        text=("I can",),
        terminal=TerminalReason.CONTENT_FILTER,
    ),
    Scenario(
        name="usage_cache_hit",
        reference="UsageCacheHit",
        summary="40 of the 100 input tokens came from the prompt cache",
        text=("Cached", " answer."),
        usage=LlmUsage(
            input_tokens=BASE_INPUT, output_tokens=BASE_OUTPUT, cached_input_tokens=CACHED_INPUT
        ),
    ),
    Scenario(
        name="usage_reasoning",
        reference="UsageReasoning",
        summary="15 reasoning tokens reported beside 20 output tokens",
        text=("Thought", " it through."),
        usage=LlmUsage(
            input_tokens=BASE_INPUT, output_tokens=BASE_OUTPUT, reasoning_tokens=REASONING
        ),
    ),
    Scenario(
        name="reasoning_extraction",
        reference="ReasoningExtraction",
        summary="reasoning surfaces as a reasoning part, never as assistant text",
        text=("The answer", " is 42."),
        reasoning=("Let me think", " about the question."),
        usage=LlmUsage(
            input_tokens=BASE_INPUT, output_tokens=BASE_OUTPUT, reasoning_tokens=REASONING
        ),
    ),
    Scenario(
        name="streaming_usage_merge",
        reference="StreamingUsageMerge",
        summary="input tokens from an early stream event survive the later output count",
        text=("Merged", " usage."),
        split_usage=True,
        streaming_only=True,
    ),
)
"""Every scenario, in a fixed order."""

JSON_SCENARIOS = tuple(s for s in SCENARIOS if not s.streaming_only)
"""Scenarios also sent as a non-streamed JSON body."""


def scenario(name: str) -> Scenario:
    """The scenario called ``name``."""
    for item in SCENARIOS:
        if item.name == name:
            return item
    known = ", ".join(s.name for s in SCENARIOS)
    raise KeyError(f"no conformance scenario {name!r} (known: {known})")


# ---------------------------------------------------------------- wire scripts


class ScenarioUnsupported(Exception):
    """A vendor cannot express a scenario; ``reason`` says why."""

    def __init__(self, vendor: str, scenario_name: str, reason: str) -> None:
        super().__init__(f"{vendor} cannot express {scenario_name}: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WireBody:
    """A scripted HTTP response: status, Content-Type and the body in pieces.

    A streamed body's pieces are its events (or array elements); each goes out
    as one HTTP chunk.
    """

    content_type: str
    pieces: tuple[bytes, ...]
    status: int = 200

    @property
    def body(self) -> bytes:
        """The whole body."""
        return b"".join(self.pieces)

    def rechunked(self, pieces: Sequence[bytes]) -> WireBody:
        """The same body delivered in other pieces."""
        if b"".join(pieces) != self.body:
            raise ValueError("re-chunked pieces do not add up to the body")
        return WireBody(self.content_type, tuple(pieces), self.status)


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A request the server received."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The query string (without ``?``)."""
        return self.target.partition("?")[2]

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def _token(seed: str, length: int, alphabet: str) -> str:
    """A deterministic id-like string made from ``seed``."""
    out: list[str] = []
    counter = 0
    while len(out) < length:
        digest = hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        out.extend(alphabet[b % len(alphabet)] for b in digest)
        counter += 1
    return "".join(out[:length])


_HEX = "0123456789abcdef"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _blob(seed: str, size: int) -> str:
    """Base64 text that looks like an opaque vendor blob (signatures, encrypted reasoning)."""
    raw = b"".join(hashlib.sha256(f"{seed}/{i}".encode()).digest() for i in range(size // 32 + 1))
    return base64.b64encode(raw[:size]).decode("ascii")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_CREATED = 1_751_000_000


class WireScript(ABC):
    """Renders scenarios as one vendor's wire bodies.

    ``unsupported`` maps scenario names the vendor cannot express to the
    reason; ``signs_reasoning`` says the vendor attaches replay data
    (signatures, encrypted content) to its reasoning.
    """

    name: ClassVar[str]
    unsupported: ClassVar[Mapping[str, str]] = {}
    signs_reasoning: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """The name used in reports (a script may vary it per instance)."""
        return self.name

    def render(self, item: Scenario, *, stream: bool) -> WireBody:
        """``item`` as this vendor's JSON reply, or as its stream when ``stream``."""
        reason = self.unsupported.get(item.name)
        if reason is not None:
            raise ScenarioUnsupported(self.label, item.name, reason)
        return self.stream(item) if stream else self.json(item)

    @abstractmethod
    def json(self, item: Scenario) -> WireBody:
        """The non-streamed JSON reply."""

    @abstractmethod
    def stream(self, item: Scenario) -> WireBody:
        """The streamed reply, one piece per event."""

    @abstractmethod
    def call_id(self, item: Scenario) -> str | None:
        """The id the wire gives ``item``'s tool call (None when the vendor sends none)."""

    @abstractmethod
    def check_request(self, request: WireRequest, *, stream: bool) -> None:
        """Assert ``request`` is this vendor's call, asking to stream iff ``stream``."""


def _sse(event: str | None, payload: Any, *, separator: str = "\n\n") -> bytes:
    head = f"event: {event}\n" if event else ""
    data = payload if isinstance(payload, str) else _compact(payload)
    return f"{head}data: {data}{separator}".encode()


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _json_body(request: WireRequest, vendor: str) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise AssertionError(
            f"[{vendor}] request body is not JSON: {request.body[:200]!r}"
        ) from None
    _expect(isinstance(body, dict), f"[{vendor}] request body is not a JSON object")
    return body  # type: ignore[no-any-return]


class OpenAIChatWire(WireScript):
    """OpenAI Chat Completions (and compatible servers).

    Reasoning is sent as ``reasoning_content`` (the field compatible servers
    such as vLLM and DeepSeek use; OpenAI itself never returns reasoning text).
    ``split_usage`` streams vLLM-style continuous usage: every chunk carries the
    running counts, the final usage chunk the totals.
    """

    name = "openai-chat"
    model = "gpt-4.1-2025-04-14"
    _FINISH: ClassVar[Mapping[TerminalReason, str]] = {
        TerminalReason.STOP: "stop",
        TerminalReason.TOOL_USE: "tool_calls",
        TerminalReason.OUTPUT_LIMIT: "length",
        TerminalReason.CONTENT_FILTER: "content_filter",
    }

    def call_id(self, item: Scenario) -> str | None:
        return f"call_{_token(item.name, 24, _ALNUM)}" if item.tool_call else None

    def _id(self, item: Scenario) -> str:
        return f"chatcmpl-{_token('chat/' + item.name, 29, _ALNUM)}"

    @staticmethod
    def _usage(usage: LlmUsage) -> dict[str, Any]:
        completion = usage.output_tokens + usage.reasoning_tokens
        return {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": completion,
            "total_tokens": usage.input_tokens + completion,
            "prompt_tokens_details": {
                "cached_tokens": usage.cached_input_tokens,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": usage.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def json(self, item: Scenario) -> WireBody:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": item.full_text if item.text else None,
            "refusal": None,
            "annotations": [],
        }
        if item.reasoning:
            message["reasoning_content"] = item.reasoning_text
        if item.tool_call is not None:
            message["tool_calls"] = [
                {
                    "id": self.call_id(item),
                    "type": "function",
                    "function": {
                        "name": item.tool_call.name,
                        "arguments": item.tool_call.arguments_json,
                    },
                }
            ]
        body = {
            "id": self._id(item),
            "object": "chat.completion",
            "created": _CREATED,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._FINISH[item.terminal],
                }
            ],
            "usage": self._usage(item.usage),
            "service_tier": "default",
            "system_fingerprint": "fp_c1a2b3d4e5",
        }
        text = json.dumps(body, ensure_ascii=False, indent=2) + "\n"
        return WireBody("application/json", (text.encode(),))

    def stream(self, item: Scenario) -> WireBody:
        base = {
            "id": self._id(item),
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_c1a2b3d4e5",
        }
        deltas: list[dict[str, Any]] = []
        call = item.tool_call
        opener: dict[str, Any] | None = None
        if call is not None:
            opener = {
                "index": 0,
                "id": self.call_id(item),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
        if item.text or item.reasoning or opener is None:
            deltas.append({"role": "assistant", "content": "", "refusal": None})
        else:
            deltas.append(
                {"role": "assistant", "content": None, "tool_calls": [opener], "refusal": None}
            )
            opener = None
        deltas += [{"reasoning_content": piece} for piece in item.reasoning]
        deltas += [{"content": piece} for piece in item.text]
        if opener is not None:
            deltas.append({"tool_calls": [opener]})
        if call is not None:
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in call.pieces
            ]
        total = self._usage(item.usage)
        pieces: list[bytes] = []
        for step, delta in enumerate([*deltas, {}]):
            last = step == len(deltas)
            chunk = {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": self._FINISH[item.terminal] if last else None,
                    }
                ],
                "usage": None,
            }
            if item.split_usage:
                done = min(step, total["completion_tokens"])
                chunk["usage"] = {
                    "prompt_tokens": item.usage.input_tokens,
                    "total_tokens": item.usage.input_tokens + done,
                    "completion_tokens": done,
                }
            pieces.append(_sse(None, chunk))
        pieces.append(_sse(None, {**base, "choices": [], "usage": total}))
        pieces.append(_sse(None, "[DONE]"))
        return WireBody("text/event-stream; charset=utf-8", tuple(pieces))

    def check_request(self, request: WireRequest, *, stream: bool) -> None:
        body = _json_body(request, self.label)
        _expect(
            request.method == "POST" and request.path.endswith("/chat/completions"),
            f"[{self.label}] expected POST .../chat/completions, got {request.method} "
            f"{request.target}",
        )
        _expect(
            body.get("stream") is stream,
            f"[{self.label}] request 'stream' is {body.get('stream')!r}, expected {stream}",
        )


class OpenAIResponsesWire(WireScript):
    """OpenAI Responses (``POST /responses``), stream events with sequence numbers."""

    name = "openai-responses"
    model = "gpt-5-2025-08-07"
    signs_reasoning = True
    unsupported: ClassVar[Mapping[str, str]] = {
        "streaming_usage_merge": (
            "the Responses API reports usage once, on the terminal response object "
            "(response.completed / response.incomplete); no earlier event carries a "
            "partial count to merge"
        ),
    }
    _INCOMPLETE: ClassVar[Mapping[TerminalReason, str]] = {
        TerminalReason.OUTPUT_LIMIT: "max_output_tokens",
        TerminalReason.CONTENT_FILTER: "content_filter",
    }

    def _ids(self, item: Scenario) -> dict[str, str]:
        seed = "responses/" + item.name
        return {
            kind: f"{kind}_{_token(seed + kind, 50, _HEX)}" for kind in ("resp", "rs", "msg", "fc")
        }

    def call_id(self, item: Scenario) -> str | None:
        return f"call_{_token(item.name, 24, _ALNUM)}" if item.tool_call else None

    @staticmethod
    def _usage(usage: LlmUsage) -> dict[str, Any]:
        output = usage.output_tokens + usage.reasoning_tokens
        return {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + output,
        }

    def _status(self, item: Scenario) -> str:
        return "incomplete" if item.terminal in self._INCOMPLETE else "completed"

    def _items(self, item: Scenario) -> list[dict[str, Any]]:
        ids = self._ids(item)
        out: list[dict[str, Any]] = []
        if item.reasoning:
            out.append(
                {
                    "id": ids["rs"],
                    "type": "reasoning",
                    "encrypted_content": "gAAAAAB" + _blob("enc/" + item.name, 96),
                    "summary": [{"type": "summary_text", "text": item.reasoning_text}],
                }
            )
        if item.text:
            out.append(
                {
                    "id": ids["msg"],
                    "type": "message",
                    "status": self._status(item),
                    "content": [
                        {
                            "type": "output_text",
                            "annotations": [],
                            "logprobs": [],
                            "text": item.full_text,
                        }
                    ],
                    "role": "assistant",
                }
            )
        if item.tool_call is not None:
            out.append(
                {
                    "id": ids["fc"],
                    "type": "function_call",
                    "status": "completed",
                    "arguments": item.tool_call.arguments_json,
                    "call_id": self.call_id(item),
                    "name": item.tool_call.name,
                }
            )
        return out

    def _response(
        self, item: Scenario, *, final: bool, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        reason = self._INCOMPLETE.get(item.terminal)
        return {
            "id": self._ids(item)["resp"],
            "object": "response",
            "created_at": _CREATED,
            "status": self._status(item) if final else "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": {"reason": reason} if final and reason else None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {
                "effort": "medium" if item.reasoning else None,
                "summary": "auto" if item.reasoning else None,
            },
            "store": False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": self._usage(item.usage) if final else None,
            "user": None,
            "metadata": {},
        }

    def json(self, item: Scenario) -> WireBody:
        body = self._response(item, final=True, output=self._items(item))
        text = json.dumps(body, ensure_ascii=False, indent=2) + "\n"
        return WireBody("application/json", (text.encode(),))

    def stream(self, item: Scenario) -> WireBody:
        events: list[dict[str, Any]] = []

        def emit(kind: str, **fields: Any) -> None:
            events.append({"type": kind, **fields})

        emit("response.created", response=self._response(item, final=False, output=[]))
        emit("response.in_progress", response=self._response(item, final=False, output=[]))
        for index, done in enumerate(self._items(item)):
            kind = done["type"]
            item_id = done["id"]
            if kind == "reasoning":
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={
                        "id": item_id,
                        "type": "reasoning",
                        "encrypted_content": done["encrypted_content"],
                        "summary": [],
                    },
                )
                where = {"item_id": item_id, "output_index": index, "summary_index": 0}
                emit(
                    "response.reasoning_summary_part.added",
                    **where,
                    part={"type": "summary_text", "text": ""},
                )
                for piece in item.reasoning:
                    emit("response.reasoning_summary_text.delta", **where, delta=piece)
                emit("response.reasoning_summary_text.done", **where, text=item.reasoning_text)
                emit(
                    "response.reasoning_summary_part.done",
                    **where,
                    part={"type": "summary_text", "text": item.reasoning_text},
                )
            elif kind == "message":
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={
                        "id": item_id,
                        "type": "message",
                        "status": "in_progress",
                        "content": [],
                        "role": "assistant",
                    },
                )
                where = {"item_id": item_id, "output_index": index, "content_index": 0}
                empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
                emit("response.content_part.added", **where, part=empty)
                for piece in item.text:
                    emit("response.output_text.delta", **where, delta=piece, logprobs=[])
                emit("response.output_text.done", **where, text=item.full_text, logprobs=[])
                emit("response.content_part.done", **where, part=done["content"][0])
            else:
                call = item.tool_call
                assert call is not None
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**done, "status": "in_progress", "arguments": ""},
                )
                where = {"item_id": item_id, "output_index": index}
                for piece in call.pieces:
                    emit("response.function_call_arguments.delta", **where, delta=piece)
                emit(
                    "response.function_call_arguments.done", **where, arguments=call.arguments_json
                )
            emit("response.output_item.done", output_index=index, item=done)
        final = self._response(item, final=True, output=self._items(item))
        incomplete = final["status"] == "incomplete"
        emit("response.incomplete" if incomplete else "response.completed", response=final)
        pieces = tuple(
            _sse(event["type"], {**event, "sequence_number": number})
            for number, event in enumerate(events)
        )
        return WireBody("text/event-stream; charset=utf-8", pieces)

    def check_request(self, request: WireRequest, *, stream: bool) -> None:
        body = _json_body(request, self.label)
        _expect(
            request.method == "POST" and request.path.endswith("/responses"),
            f"[{self.label}] expected POST .../responses, got {request.method} {request.target}",
        )
        _expect(
            body.get("stream") is stream,
            f"[{self.label}] request 'stream' is {body.get('stream')!r}, expected {stream}",
        )


class AnthropicWire(WireScript):
    """Anthropic Messages (``POST /v1/messages``).

    Thinking blocks carry a signature. Usage follows the API: ``input_tokens``
    excludes cache reads, ``output_tokens`` includes thinking
    (``output_tokens_details.thinking_tokens``). ``split_usage`` streams the
    classic shape where ``message_delta`` reports only ``output_tokens``.
    """

    name = "anthropic"
    model = "claude-sonnet-4-5-20250929"
    signs_reasoning = True
    _STOP: ClassVar[Mapping[TerminalReason, str]] = {
        TerminalReason.STOP: "end_turn",
        TerminalReason.TOOL_USE: "tool_use",
        TerminalReason.OUTPUT_LIMIT: "max_tokens",
        TerminalReason.CONTENT_FILTER: "refusal",
    }

    def call_id(self, item: Scenario) -> str | None:
        return f"toolu_01{_token(item.name, 22, _ALNUM)}" if item.tool_call else None

    def _message_id(self, item: Scenario) -> str:
        return f"msg_01{_token('anthropic/' + item.name, 22, _ALNUM)}"

    def _signature(self, item: Scenario) -> str:
        return _blob("signature/" + item.name, 180)

    @staticmethod
    def _usage(usage: LlmUsage, *, output: int | None = None) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "input_tokens": usage.input_tokens - usage.cached_input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": (
                usage.output_tokens + usage.reasoning_tokens if output is None else output
            ),
            "service_tier": "standard",
        }
        if usage.reasoning_tokens and output is None:
            wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
        return wire

    def _blocks(self, item: Scenario) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if item.reasoning:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": item.reasoning_text,
                    "signature": self._signature(item),
                }
            )
        if item.text:
            blocks.append({"type": "text", "text": item.full_text})
        if item.tool_call is not None:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": self.call_id(item),
                    "name": item.tool_call.name,
                    "input": item.tool_call.arguments,
                }
            )
        return blocks

    def json(self, item: Scenario) -> WireBody:
        body = {
            "id": self._message_id(item),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self._blocks(item),
            "stop_reason": self._STOP[item.terminal],
            "stop_sequence": None,
            "usage": self._usage(item.usage),
        }
        return WireBody("application/json", (_compact(body).encode(),))

    def stream(self, item: Scenario) -> WireBody:
        pieces: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            pieces.append(_sse(kind, {"type": kind, **fields}))

        start_usage = self._usage(item.usage, output=1)
        emit(
            "message_start",
            message={
                "id": self._message_id(item),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        )
        for index, block in enumerate(self._blocks(item)):
            kind = block["type"]
            if kind == "thinking":
                emit(
                    "content_block_start",
                    index=index,
                    content_block={"type": "thinking", "thinking": "", "signature": ""},
                )
                deltas = [{"type": "thinking_delta", "thinking": p} for p in item.reasoning]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "text":
                emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
                deltas = [{"type": "text_delta", "text": p} for p in item.text]
            else:
                call = item.tool_call
                assert call is not None
                emit(
                    "content_block_start",
                    index=index,
                    content_block={**block, "input": {}},
                )
                deltas = [{"type": "input_json_delta", "partial_json": ""}]
                deltas += [{"type": "input_json_delta", "partial_json": p} for p in call.pieces]
            if index == 0:
                emit("ping")
            for delta in deltas:
                emit("content_block_delta", index=index, delta=delta)
            emit("content_block_stop", index=index)
        if item.split_usage:
            late: dict[str, Any] = {
                "output_tokens": item.usage.output_tokens + item.usage.reasoning_tokens
            }
        else:
            late = self._usage(item.usage)
            late.pop("cache_creation")
            late.pop("service_tier")
        emit(
            "message_delta",
            delta={"stop_reason": self._STOP[item.terminal], "stop_sequence": None},
            usage=late,
        )
        emit("message_stop")
        return WireBody("text/event-stream; charset=utf-8", tuple(pieces))

    def check_request(self, request: WireRequest, *, stream: bool) -> None:
        body = _json_body(request, self.label)
        _expect(
            request.method == "POST" and request.path.endswith("/v1/messages"),
            f"[{self.label}] expected POST .../v1/messages, got {request.method} {request.target}",
        )
        _expect(
            "anthropic-version" in request.headers,
            f"[{self.label}] request has no anthropic-version header",
        )
        _expect(
            body.get("stream") is stream,
            f"[{self.label}] request 'stream' is {body.get('stream')!r}, expected {stream}",
        )


GeminiStreamFormat = Literal["sse", "json_array"]


class GeminiWire(WireScript):
    """Google Gemini ``generateContent`` / ``streamGenerateContent``.

    ``stream_format`` is ``"sse"`` (``?alt=sse``, events separated by
    ``\\r\\n\\r\\n``) or ``"json_array"`` (one JSON array whose elements arrive one
    at a time). Stream chunks carry running usage: the prompt count (and
    thoughts) from the first chunk, candidates once the reply is complete.
    Gemini sends no function-call ids, so the provider synthesizes them.
    """

    name = "gemini"
    model = "gemini-2.5-flash"
    signs_reasoning = True
    unsupported: ClassVar[Mapping[str, str]] = {
        "streaming_tool_argument_merge": (
            "the Gemini API streams every functionCall whole, its args one JSON object "
            "in one chunk; there are no argument fragments to merge"
        ),
    }
    _FINISH: ClassVar[Mapping[TerminalReason, str]] = {
        TerminalReason.STOP: "STOP",
        TerminalReason.TOOL_USE: "STOP",
        TerminalReason.OUTPUT_LIMIT: "MAX_TOKENS",
        TerminalReason.CONTENT_FILTER: "SAFETY",
    }

    def __init__(self, stream_format: GeminiStreamFormat = "sse") -> None:
        if stream_format not in ("sse", "json_array"):
            raise ValueError(f"stream_format must be 'sse' or 'json_array', got {stream_format!r}")
        self.stream_format: GeminiStreamFormat = stream_format

    @property
    def label(self) -> str:
        return self.name if self.stream_format == "sse" else f"{self.name}-json-array"

    def call_id(self, item: Scenario) -> str | None:
        return None

    def _response_id(self, item: Scenario) -> str:
        return _token("gemini/" + item.name, 23, _ALNUM)

    @staticmethod
    def _usage(usage: LlmUsage, *, final: bool) -> dict[str, Any]:
        wire: dict[str, Any] = {"promptTokenCount": usage.input_tokens}
        total = usage.input_tokens + usage.reasoning_tokens
        if final:
            wire["candidatesTokenCount"] = usage.output_tokens
            total += usage.output_tokens
        wire["totalTokenCount"] = total
        if usage.cached_input_tokens and final:
            wire["cachedContentTokenCount"] = usage.cached_input_tokens
        wire["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": usage.input_tokens}]
        if usage.cached_input_tokens and final:
            wire["cacheTokensDetails"] = [
                {"modality": "TEXT", "tokenCount": usage.cached_input_tokens}
            ]
        if usage.reasoning_tokens:
            wire["thoughtsTokenCount"] = usage.reasoning_tokens
        return wire

    def _parts(self, item: Scenario) -> list[list[dict[str, Any]]]:
        """The reply's parts, grouped as they would arrive in stream chunks."""
        chunks: list[list[dict[str, Any]]] = [
            [{"text": piece, "thought": True}] for piece in item.reasoning
        ]
        for n, piece in enumerate(item.text):
            part: dict[str, Any] = {"text": piece}
            if n == 0 and item.reasoning:
                part["thoughtSignature"] = _blob("thought/" + item.name, 120)
            chunks.append([part])
        if item.tool_call is not None:
            chunks.append(
                [{"functionCall": {"name": item.tool_call.name, "args": item.tool_call.arguments}}]
            )
        return chunks

    def _element(
        self, item: Scenario, parts: list[dict[str, Any]], *, final: bool
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = self._FINISH[item.terminal]
            if item.terminal is TerminalReason.CONTENT_FILTER:
                candidate["safetyRatings"] = [
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    },
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                ]
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": self._usage(item.usage, final=final),
            "modelVersion": self.model,
            "responseId": self._response_id(item),
        }

    def json(self, item: Scenario) -> WireBody:
        merged: list[dict[str, Any]] = []
        for parts in self._parts(item):
            for part in parts:
                last = merged[-1] if merged else None
                same_kind = (
                    last is not None
                    and "text" in last
                    and "text" in part
                    and last.get("thought") == part.get("thought")
                    and "thoughtSignature" not in part
                )
                if same_kind and last is not None:
                    last["text"] += part["text"]
                else:
                    merged.append(dict(part))
        body = self._element(item, merged, final=True)
        return WireBody("application/json; charset=UTF-8", (json.dumps(body, indent=2).encode(),))

    def stream(self, item: Scenario) -> WireBody:
        groups = self._parts(item)
        # The finish reason rides on the last content chunk, except after a
        # function call (an empty text part follows) and for a safety stop
        # (a chunk without content follows), as recorded streams show.
        if item.tool_call is not None:
            groups.append([{"text": ""}])
        elements = [self._element(item, parts, final=False) for parts in groups]
        if item.terminal is TerminalReason.CONTENT_FILTER:
            final = self._element(item, [], final=True)
            final["candidates"][0]["content"] = {}
            elements.append(final)
        else:
            elements[-1] = self._element(item, groups[-1], final=True)
        if self.stream_format == "sse":
            pieces = tuple(
                b"data: "
                + json.dumps(e, ensure_ascii=False, separators=(",", ": ")).encode()
                + b"\r\n\r\n"
                for e in elements
            )
            return WireBody("text/event-stream", pieces)
        texts = [json.dumps(e, indent=2).encode() for e in elements]
        array = [b"[" + texts[0], *(b"\n,\r\n" + t for t in texts[1:]), b"\n]"]
        return WireBody("application/json; charset=UTF-8", tuple(array))

    def check_request(self, request: WireRequest, *, stream: bool) -> None:
        _json_body(request, self.label)
        method = request.path.rpartition(":")[2]
        expected = "streamGenerateContent" if stream else "generateContent"
        _expect(
            request.method == "POST" and method == expected,
            f"[{self.label}] expected POST ...:{expected}, got {request.method} {request.target}",
        )
        if stream:
            wants_sse = "alt=sse" in request.query.split("&")
            _expect(
                wants_sse == (self.stream_format == "sse"),
                f"[{self.label}] request query {request.query!r} does not ask for the "
                f"{self.stream_format} stream format",
            )


def wire_script(api: str) -> WireScript:
    """The script for ``api``: ``openai-chat``, ``openai-responses``, ``anthropic``,
    ``gemini`` (SSE stream) or ``gemini-json-array``."""
    scripts: dict[str, Callable[[], WireScript]] = {
        "openai-chat": OpenAIChatWire,
        "openai-responses": OpenAIResponsesWire,
        "anthropic": AnthropicWire,
        "gemini": lambda: GeminiWire("sse"),
        "gemini-json-array": lambda: GeminiWire("json_array"),
    }
    make = scripts.get(api)
    if make is None:
        raise KeyError(f"no wire script for {api!r} (known: {', '.join(sorted(scripts))})")
    return make()


def render_wire(api: str, item: Scenario, *, stream: bool) -> WireBody:
    """``item`` as ``api``'s JSON reply, or its stream when ``stream``."""
    return wire_script(api).render(item, stream=stream)


# ---------------------------------------------------------------- loopback server


@dataclass
class WireServer:
    """A loopback HTTP/1.1 server that answers every request with ``reply``.

    Bodies go out with chunked transfer encoding, one HTTP chunk per piece, so
    a client that keeps chunk boundaries (httpx does) receives exactly those
    pieces however the TCP segments fall. ``received`` records the requests.
    Use ``async with WireServer(reply) as server``.
    """

    reply: WireBody
    received: list[WireRequest] = field(default_factory=list)
    max_request_bytes: int = 16 * 1024 * 1024
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the wire server is not running")
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> WireServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await self._read(reader)
            self.received.append(request)
            writer.write(self._response_bytes(self.reply))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ValueError as exc:
            message = str(exc).encode()
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(message), message)
            )
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _read(self, reader: asyncio.StreamReader) -> WireRequest:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ValueError(f"bad request line {lines[0]!r}")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= self.max_request_bytes:
                raise ValueError(f"request body of {length} bytes is out of range")
            body = await reader.readexactly(length)
        return WireRequest(method=method, target=target, headers=headers, body=body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            if len(body) + size > self.max_request_bytes:
                raise ValueError("chunked request body is too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    @staticmethod
    def _response_bytes(reply: WireBody) -> bytes:
        head = (
            f"HTTP/1.1 {reply.status} Scripted\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in reply.pieces if p]
        return head + b"".join(chunks) + b"0\r\n\r\n"


# ---------------------------------------------------------------- re-chunking


def one_byte_pieces(body: bytes) -> tuple[bytes, ...]:
    """``body`` cut at every byte boundary."""
    return tuple(body[i : i + 1] for i in range(len(body)))


def random_pieces(body: bytes, seed: int, *, max_size: int = 48) -> tuple[bytes, ...]:
    """``body`` cut at offsets drawn from ``random.Random(seed)`` (pieces of 1..max_size)."""
    rng = random.Random(seed)
    pieces: list[bytes] = []
    at = 0
    while at < len(body):
        size = rng.randint(1, max_size)
        pieces.append(body[at : at + size])
        at += size
    return tuple(pieces)


# ---------------------------------------------------------------- running and checking


@dataclass(frozen=True, slots=True)
class ConformanceTarget:
    """What the suite runs against: a wire script and a provider factory.

    ``make_provider`` gets the server's root URL and returns a fresh provider;
    ``model`` is the model name sent in every request.
    """

    script: WireScript
    make_provider: Callable[[str], Provider]
    model: str

    @property
    def name(self) -> str:
        """The script's label."""
        return self.script.label


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scenario run: the response, the stream events and the request the server saw."""

    response: LlmResponse
    events: tuple[StreamEvent, ...]
    request: WireRequest


def conformance_request(model: str) -> LlmRequest:
    """The request every scenario is answered to: one user turn and a ``lookup`` tool."""
    return LlmRequest(
        model=model,
        messages=(LlmMessage.text(LlmRole.USER, "Run the conformance scenario."),),
        tools=(
            LlmToolSpec(
                name="lookup",
                description="Look something up.",
                input_schema={
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                    "required": ["query"],
                },
            ),
        ),
    )


async def close_provider(provider: object) -> None:
    """Close ``provider`` with its ``aclose()``, or that of the provider it wraps."""
    seen: set[int] = set()
    current: object = provider
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        aclose = getattr(current, "aclose", None)
        if callable(aclose):
            await aclose()
            return
        current = getattr(current, "provider", None)


async def run_scenario(
    target: ConformanceTarget,
    item: Scenario,
    *,
    stream: bool,
    pieces: Callable[[bytes], Sequence[bytes]] | None = None,
) -> Outcome:
    """Serve ``item`` and complete one request against it.

    Streaming runs pass an event callback (which is how a provider is asked to
    stream) and collect the events. ``pieces`` re-chunks the body.
    """
    reply = target.script.render(item, stream=stream)
    if pieces is not None:
        reply = reply.rechunked(pieces(reply.body))
    events: list[StreamEvent] = []

    async def collect(event: StreamEvent) -> None:
        events.append(event)

    async with WireServer(reply) as server:
        provider = target.make_provider(server.base_url)
        try:
            request = conformance_request(target.model)
            if stream:
                response = await provider.complete(request, collect)
            else:
                response = await provider.complete(request)
        finally:
            await close_provider(provider)
    if len(server.received) != 1:
        raise AssertionError(
            f"[{target.name}] {item.name}: expected exactly one request, the server saw "
            f"{len(server.received)}"
        )
    target.script.check_request(server.received[0], stream=stream)
    return Outcome(response=response, events=tuple(events), request=server.received[0])


def _where(who: str, item: Scenario, mode: str) -> str:
    return f"[{who}] {item.name} ({item.reference}, {mode})"


def check_response(
    item: Scenario,
    response: LlmResponse,
    *,
    who: str,
    mode: str,
    call_id: str | None = None,
    signs_reasoning: bool = False,
) -> None:
    """Assert ``response`` is ``item``'s normalized reply; messages name the vendor and mode."""
    at = _where(who, item, mode)
    parts = response.parts
    texts = [p.text for p in parts if isinstance(p, TextOutput)]
    reasoning = [p for p in parts if isinstance(p, ReasoningOutput)]
    calls = [p for p in parts if isinstance(p, ToolCallOutput)]
    _expect(
        response.terminal_reason is item.terminal,
        f"{at}: terminal reason {response.terminal_reason.value!r}, expected "
        f"{item.terminal.value!r} (diagnostic: {response.terminal_diagnostic!r})",
    )
    _expect(
        "".join(texts) == item.full_text,
        f"{at}: text parts assemble to {''.join(texts)!r}, expected {item.full_text!r}",
    )
    _expect(
        response.full_text == item.full_text,
        f"{at}: full_text is {response.full_text!r}, expected {item.full_text!r}",
    )
    got_reasoning = "".join(p.text for p in reasoning)
    _expect(
        got_reasoning == item.reasoning_text,
        f"{at}: reasoning parts assemble to {got_reasoning!r}, expected {item.reasoning_text!r}",
    )
    if item.reasoning:
        _expect(
            not any(item.reasoning_text in t or t in item.reasoning_text for t in texts if t),
            f"{at}: reasoning text leaked into assistant text parts {texts!r}",
        )
        if signs_reasoning:
            _expect(
                any(p.replay is not None and not p.replay.is_empty for p in reasoning),
                f"{at}: the vendor signs its reasoning but no reasoning part carries replay "
                f"data: {reasoning!r}",
            )
    _check_calls(item, calls, at, call_id)
    _expect(
        response.usage == item.usage,
        f"{at}: usage {response.usage!r}, expected {item.usage!r}",
    )


def _check_calls(
    item: Scenario, calls: Sequence[ToolCallOutput], at: str, call_id: str | None
) -> None:
    if item.tool_call is None:
        _expect(not calls, f"{at}: no tool call was sent, but the response has {calls!r}")
        return
    _expect(len(calls) == 1, f"{at}: expected one tool call, got {calls!r}")
    call = calls[0]
    _expect(
        call.tool_name == item.tool_call.name,
        f"{at}: tool name {call.tool_name!r}, expected {item.tool_call.name!r}",
    )
    try:
        arguments = json.loads(call.input_json)
    except ValueError:
        raise AssertionError(
            f"{at}: tool arguments are not valid JSON: {call.input_json!r}"
        ) from None
    _expect(
        arguments == item.tool_call.arguments,
        f"{at}: tool arguments {arguments!r}, expected {item.tool_call.arguments!r}",
    )
    _expect(bool(call.call_id), f"{at}: the tool call has an empty call_id")
    if call_id is not None:
        _expect(
            call.call_id == call_id,
            f"{at}: call_id {call.call_id!r}, expected the wire's {call_id!r}",
        )


def check_events(
    item: Scenario, response: LlmResponse, events: Iterable[StreamEvent], *, who: str
) -> None:
    """Assert the stream events agree with the response they led to."""
    at = _where(who, item, "stream events")
    events = list(events)
    deltas = [e.text for e in events if isinstance(e, TextDeltaEvent)]
    _expect(
        "".join(deltas) == item.full_text,
        f"{at}: text deltas assemble to {''.join(deltas)!r}, expected {item.full_text!r}",
    )
    if len(item.text) >= 2:
        _expect(
            sum(1 for d in deltas if d) >= 2,
            f"{at}: text sent in {len(item.text)} chunks arrived as {deltas!r}, not incrementally",
        )
    thoughts = "".join(e.text for e in events if isinstance(e, ReasoningDeltaEvent))
    _expect(
        thoughts == item.reasoning_text,
        f"{at}: reasoning deltas assemble to {thoughts!r}, expected {item.reasoning_text!r}",
    )
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    _expect(bool(usage), f"{at}: the stream reported no usage event")
    _expect(
        usage[-1] == response.usage,
        f"{at}: the last usage event {usage[-1]!r} differs from the response's {response.usage!r}",
    )


# ---------------------------------------------------------------- the suite


def _ids(item: Scenario) -> str:
    return item.name


class ProviderConformance:
    """Vendor-neutral provider tests; subclasses supply the ``target`` fixture."""

    timeout: ClassVar[float] = 10.0
    """Seconds one provider call may take before it fails as a hang."""

    random_seeds: ClassVar[tuple[int, ...]] = (7, 1234)
    """Seeds of the random re-chunking runs."""

    @pytest.fixture
    def target(self) -> ConformanceTarget:
        """Return the target to test (override in the subclass)."""
        raise NotImplementedError("a ProviderConformance subclass must define a target fixture")

    def run(
        self,
        target: ConformanceTarget,
        item: Scenario,
        *,
        stream: bool,
        pieces: Callable[[bytes], Sequence[bytes]] | None = None,
    ) -> Outcome:
        """Run one scenario on a fresh event loop; skip it when the vendor cannot express it."""
        reason = target.script.unsupported.get(item.name)
        if reason is not None:
            pytest.skip(f"{target.name} cannot express {item.name} ({item.reference}): {reason}")

        async def main() -> Outcome:
            return await asyncio.wait_for(
                run_scenario(target, item, stream=stream, pieces=pieces), self.timeout
            )

        return asyncio.run(main())

    def verify(
        self, target: ConformanceTarget, item: Scenario, outcome: Outcome, mode: str
    ) -> None:
        """Check ``outcome`` against the scenario (and its events when streamed)."""
        check_response(
            item,
            outcome.response,
            who=target.name,
            mode=mode,
            call_id=target.script.call_id(item),
            signs_reasoning=target.script.signs_reasoning,
        )
        if mode != "json":
            check_events(item, outcome.response, outcome.events, who=target.name)

    @pytest.mark.parametrize("item", JSON_SCENARIOS, ids=_ids)
    def test_non_streamed(self, target: ConformanceTarget, item: Scenario) -> None:
        outcome = self.run(target, item, stream=False)
        self.verify(target, item, outcome, "json")

    @pytest.mark.parametrize("item", SCENARIOS, ids=_ids)
    def test_streamed(self, target: ConformanceTarget, item: Scenario) -> None:
        outcome = self.run(target, item, stream=True)
        self.verify(target, item, outcome, "stream")

    @pytest.mark.parametrize("item", SCENARIOS, ids=_ids)
    def test_streamed_in_one_byte_pieces(self, target: ConformanceTarget, item: Scenario) -> None:
        """Every byte boundary of the stream is a chunk boundary."""
        outcome = self.run(target, item, stream=True, pieces=one_byte_pieces)
        self.verify(target, item, outcome, "stream, 1-byte pieces")
        whole = self.run(target, item, stream=True)
        _expect(
            outcome.response == whole.response,
            f"[{target.name}] {item.name}: the reply read byte by byte differs from the reply "
            f"read whole:\n{outcome.response!r}\n{whole.response!r}",
        )

    @pytest.mark.parametrize("item", SCENARIOS, ids=_ids)
    def test_streamed_in_random_pieces(self, target: ConformanceTarget, item: Scenario) -> None:
        for seed in self.random_seeds:
            outcome = self.run(
                target, item, stream=True, pieces=functools.partial(random_pieces, seed=seed)
            )
            self.verify(target, item, outcome, f"stream, random pieces seed {seed}")

    def test_unsupported_scenarios_are_declared_with_reasons(
        self, target: ConformanceTarget
    ) -> None:
        names = {s.name for s in SCENARIOS}
        for name, reason in target.script.unsupported.items():
            _expect(name in names, f"[{target.name}] declares unknown scenario {name!r}")
            _expect(
                isinstance(reason, str) and len(reason.strip()) >= 20,
                f"[{target.name}] unsupported {name!r} needs a real reason, got {reason!r}",
            )
            for stream in (False, True):
                with pytest.raises(ScenarioUnsupported, match="cannot express"):
                    target.script.render(scenario(name), stream=stream)

    def test_streams_arrive_in_several_events(self, target: ConformanceTarget) -> None:
        """A stream script that sent everything in one event would test no assembly."""
        for item in SCENARIOS:
            if item.name in target.script.unsupported:
                continue
            reply = target.script.render(item, stream=True)
            minimum = max(len(item.text) + len(item.reasoning), 2)
            _expect(
                len(reply.pieces) >= minimum,
                f"[{target.name}] {item.name}: a stream of {len(reply.pieces)} events cannot "
                f"deliver {minimum} separate pieces",
            )
