"""Events the machine emits for streaming and tracing (the payload of ``Emit``)."""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from .llm import LlmUsage, TerminalReason
from .tools.output import ToolOutput

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

_RAW_LIMIT = 4000
_RAW_KEEP = 2000


class ErrorEnvelope(msgspec.Struct, **_S):
    """Structured detail of an error: kind, code, the reason, and raw provider text."""

    kind: str
    user_message: str
    code: str | None = None
    terminal_reason: TerminalReason | None = None
    raw: str | None = None


def make_error_envelope(
    kind: str,
    message: str,
    *,
    code: str | None = None,
    terminal_reason: TerminalReason | None = None,
    raw: str | None = None,
) -> ErrorEnvelope:
    """Build an envelope; long raw text keeps its head and tail."""
    if raw is not None:
        raw = raw.strip()
        if len(raw) > _RAW_LIMIT:
            omitted = len(raw) - 2 * _RAW_KEEP
            raw = f"{raw[:_RAW_KEEP]}\n\n... ({omitted} chars omitted) ...\n\n{raw[-_RAW_KEEP:]}"
    return ErrorEnvelope(
        kind=kind, user_message=message, code=code, terminal_reason=terminal_reason, raw=raw
    )


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type", **_S):
    """Assistant text, as it becomes known."""

    content: str


class ReasoningDelta(msgspec.Struct, tag="reasoning_delta", tag_field="type", **_S):
    """Reasoning text, as it becomes known."""

    content: str


class LlmRequestStarted(msgspec.Struct, tag="llm_request", tag_field="type", **_S):
    """A model call is about to be made."""

    iteration: int
    message_count: int
    tool_names: tuple[str, ...] = ()


class LlmResponded(msgspec.Struct, tag="llm_response", tag_field="type", **_S):
    """A model call returned; ``content`` is its text."""

    iteration: int
    content: str


class TokenUsageReported(msgspec.Struct, tag="token_usage", tag_field="type", **_S):
    """Usage of one model call and the turn's running total."""

    iteration: int
    usage: LlmUsage
    cumulative: LlmUsage


class ToolCallFinished(msgspec.Struct, tag="tool_call", tag_field="type", **_S):
    """A tool call finished."""

    call_id: str
    name: str
    args: Any
    output: ToolOutput
    duration_ms: int = 0


class ErrorReported(msgspec.Struct, tag="error", tag_field="type", **_S):
    """Something went wrong; the envelope says what and where."""

    message: str
    envelope: ErrorEnvelope | None = None


SessionEvent: TypeAlias = (
    TextDelta
    | ReasoningDelta
    | LlmRequestStarted
    | LlmResponded
    | TokenUsageReported
    | ToolCallFinished
    | ErrorReported
)


def error_event(
    kind: str,
    code: str | None,
    message: str,
    *,
    raw: str | None = None,
    terminal_reason: TerminalReason | None = None,
) -> ErrorReported:
    """An ``ErrorReported`` event with its envelope."""
    return ErrorReported(
        message=message,
        envelope=make_error_envelope(
            kind, message, code=code, terminal_reason=terminal_reason, raw=raw
        ),
    )
