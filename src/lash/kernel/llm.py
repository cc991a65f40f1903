"""Provider-neutral LLM request and response types.

Requests carry attachment *references*; a provider resolves the bytes at the
moment it builds its HTTP body, so nothing durable ever holds bytes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, TypeAlias

import msgspec

from .attachments import AttachmentRef

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class LlmRole(StrEnum):
    """Role of a message sent to a model."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class ProviderReplayMeta(msgspec.Struct, **_S):
    """Opaque provider data a tool call must carry back on the next request."""

    item_id: str | None = None
    opaque: Any = None


class ReasoningReplay(msgspec.Struct, **_S):
    """Provider data that lets reasoning be replayed (signatures, encrypted content)."""

    item_id: str | None = None
    encrypted_content: str | None = None
    signature: str | None = None
    redacted: bool = False
    summary: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when nothing is set."""
        return (
            self.item_id is None
            and self.encrypted_content is None
            and self.signature is None
            and not self.redacted
            and not self.summary
        )


class ResponseTextMeta(msgspec.Struct, **_S):
    """Opaque metadata of a text item from a provider, passed through unchanged."""

    id: str | None = None
    status: str | None = None
    phase: str | None = None


# ---------------------------------------------------------------- request blocks


class TextBlock(msgspec.Struct, tag="text", tag_field="type", **_S):
    """Plain text in a request message."""

    text: str
    response_meta: ResponseTextMeta | None = None
    cache_breakpoint: bool = False


class ImageBlock(msgspec.Struct, tag="image", tag_field="type", **_S):
    """An image; ``attachment_idx`` indexes ``LlmRequest.attachments``."""

    attachment_idx: int


class ToolCallBlock(msgspec.Struct, tag="tool_call", tag_field="type", **_S):
    """A tool call the assistant made earlier; ``input_json`` is the raw argument text."""

    call_id: str
    tool_name: str
    input_json: str
    replay: ProviderReplayMeta | None = None


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", **_S):
    """The model-facing result of an earlier tool call."""

    call_id: str
    content: str
    tool_name: str | None = None


class ReasoningBlock(msgspec.Struct, tag="reasoning", tag_field="type", **_S):
    """Reasoning to replay to the provider that produced it."""

    text: str
    replay: ReasoningReplay | None = None


LlmContentBlock: TypeAlias = (
    TextBlock | ImageBlock | ToolCallBlock | ToolResultBlock | ReasoningBlock
)


class LlmMessage(msgspec.Struct, **_S):
    """One message of a request."""

    role: LlmRole
    blocks: tuple[LlmContentBlock, ...] = ()

    @classmethod
    def text(cls, role: LlmRole, text: str) -> LlmMessage:
        """A message holding a single text block."""
        return cls(role=role, blocks=(TextBlock(text=text),))

    @property
    def is_blank(self) -> bool:
        """True when every block is blank text."""
        return all(isinstance(b, TextBlock) and not b.text.strip() for b in self.blocks)


class LlmToolSpec(msgspec.Struct, **_S):
    """A tool as the model sees it."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    output_schema: Any = None


class ToolChoice(StrEnum):
    """Whether the model may, must or must not call tools."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


class JsonObjectOutput(msgspec.Struct, tag="json_object", tag_field="type", **_S):
    """Ask for any JSON object as the answer."""


class JsonSchemaOutput(msgspec.Struct, tag="json_schema", tag_field="type", **_S):
    """Ask for an answer matching a JSON Schema."""

    name: str
    schema: dict[str, Any]
    strict: bool = True


OutputSpec: TypeAlias = JsonObjectOutput | JsonSchemaOutput


class GenerationOptions(msgspec.Struct, forbid_unknown_fields=True, **_S):
    """Sampling and length options; unknown fields are rejected on decode."""

    output_token_cap: int | None = None

    def __post_init__(self) -> None:
        if self.output_token_cap is not None and self.output_token_cap <= 0:
            raise ValueError(f"output_token_cap must be positive, got {self.output_token_cap}")


class LlmRequest(msgspec.Struct, **_S):
    """A provider-neutral model request."""

    model: str
    messages: tuple[LlmMessage, ...] = ()
    attachments: tuple[AttachmentRef, ...] = ()
    tools: tuple[LlmToolSpec, ...] = ()
    tool_choice: ToolChoice = ToolChoice.AUTO
    model_variant: str | None = None
    generation: GenerationOptions = msgspec.field(default_factory=GenerationOptions)
    session_id: str | None = None
    output_spec: OutputSpec | None = None


# ---------------------------------------------------------------- responses


class LlmUsage(msgspec.Struct, **_S):
    """Token counts of one call, or a running total."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: LlmUsage) -> LlmUsage:
        return LlmUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    @property
    def total(self) -> int:
        """Input + output + reasoning tokens (cached input is part of input)."""
        return self.input_tokens + self.output_tokens + self.reasoning_tokens


class TerminalReason(StrEnum):
    """Why the model stopped producing output."""

    STOP = "stop"
    TOOL_USE = "tool_use"
    OUTPUT_LIMIT = "output_limit"
    CONTEXT_OVERFLOW = "context_overflow"
    CONTENT_FILTER = "content_filter"
    PROVIDER_ERROR = "provider_error"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class TextOutput(msgspec.Struct, tag="text", tag_field="type", **_S):
    """Text the model produced."""

    text: str
    response_meta: ResponseTextMeta | None = None


class ReasoningOutput(msgspec.Struct, tag="reasoning", tag_field="type", **_S):
    """Reasoning the model produced, with its replay data."""

    text: str = ""
    replay: ReasoningReplay | None = None


class ToolCallOutput(msgspec.Struct, tag="tool_call", tag_field="type", **_S):
    """A tool call the model asked for; ``input_json`` is the raw argument text."""

    call_id: str
    tool_name: str
    input_json: str
    replay: ProviderReplayMeta | None = None


LlmOutputPart: TypeAlias = TextOutput | ReasoningOutput | ToolCallOutput


class LlmResponse(msgspec.Struct, **_S):
    """A completed model reply."""

    full_text: str = ""
    parts: tuple[LlmOutputPart, ...] = ()
    usage: LlmUsage = msgspec.field(default_factory=LlmUsage)
    terminal_reason: TerminalReason = TerminalReason.UNKNOWN
    terminal_diagnostic: str | None = None
    provider_usage: Any = None

    def normalized_parts(self) -> tuple[LlmOutputPart, ...]:
        """The parts, or one text part made from ``full_text`` when there are none."""
        if not self.parts and self.full_text:
            return (TextOutput(text=self.full_text),)
        return self.parts


class LlmCallError(msgspec.Struct, **_S):
    """A failed model call, as a value (it crosses the effect boundary as data)."""

    message: str
    retryable: bool = False
    code: str | None = None
    raw: str | None = None
    terminal_reason: TerminalReason = TerminalReason.PROVIDER_ERROR


ErrorKind: TypeAlias = Literal["llm_provider", "execution_surface", "runtime", "tool"]
