"""Tool outputs: success, failure or cancellation, terminal controls, and what the model sees."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

import msgspec

from ..attachments import AttachmentRef
from ..llm import ProviderReplayMeta

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class FailureClass(StrEnum):
    """What kind of failure a tool call met."""

    INVALID_REQUEST = "invalid_request"
    UNAVAILABLE = "unavailable"
    PERMISSION_DENIED = "permission_denied"
    TIMEOUT = "timeout"
    EXECUTION = "execution"
    EXTERNAL = "external"
    RESOURCE_LIMIT = "resource_limit"
    INTERNAL = "internal"


class FailureSource(StrEnum):
    """Who reported a failure."""

    RUNTIME = "runtime"
    TOOL = "tool"
    PLUGIN = "plugin"
    POLICY = "policy"
    CANCELLATION = "cancellation"


class RetryNever(msgspec.Struct, tag="never", tag_field="type", **_S):
    """Do not retry."""


class RetrySafe(msgspec.Struct, tag="safe", tag_field="type", **_S):
    """A retry is safe, optionally after a delay."""

    after_ms: int | None = None


class RetryExhausted(msgspec.Struct, tag="exhausted", tag_field="type", **_S):
    """Retries were made and all failed."""

    attempts: int


RetryHint: TypeAlias = RetryNever | RetrySafe | RetryExhausted


class ToolFailure(msgspec.Struct, tag="failure", tag_field="status", **_S):
    """A failed tool call: class, machine code, message, source and retry hint."""

    failure_class: FailureClass
    code: str
    message: str
    source: FailureSource = FailureSource.TOOL
    retry: RetryHint = msgspec.field(default_factory=RetryNever)
    raw: Any = None

    @classmethod
    def runtime(cls, failure_class: FailureClass, code: str, message: str) -> ToolFailure:
        """A failure reported by the runtime (never retried)."""
        return cls(
            failure_class=failure_class, code=code, message=message, source=FailureSource.RUNTIME
        )

    @property
    def is_retryable(self) -> bool:
        """True when the hint says a retry is safe."""
        return isinstance(self.retry, RetrySafe)


class ToolSuccess(msgspec.Struct, tag="success", tag_field="status", **_S):
    """A successful tool call.

    ``value`` is the tool value's wire form (see ``tools.value``): plain JSON in
    which attachments appear as reserved objects, so it encodes and decodes
    exactly. Build it with ``ToolOutput.success``; read it with ``ToolOutput.value``.
    """

    value: Any = None


class ToolCancelled(msgspec.Struct, tag="cancelled", tag_field="status", **_S):
    """The call was cancelled before it finished."""

    message: str
    source: FailureSource = FailureSource.CANCELLATION
    raw: Any = None


ToolOutcome: TypeAlias = ToolSuccess | ToolFailure | ToolCancelled


class SwitchAgentFrame(msgspec.Struct, tag="switch_agent_frame", tag_field="type", **_S):
    """End the turn and switch the session to another agent frame."""

    frame_id: str
    task: str | None = None


class FinishTurn(msgspec.Struct, tag="finish", tag_field="type", **_S):
    """End the turn with this tool's value as the final result."""

    value: Any = None


class FailTurn(msgspec.Struct, tag="fail", tag_field="type", **_S):
    """End the turn as a tool error."""

    failure: ToolFailure


ToolControl: TypeAlias = SwitchAgentFrame | FinishTurn | FailTurn


class ToolOutput(msgspec.Struct, **_S):
    """The result of one tool call, with an optional terminal control."""

    outcome: ToolOutcome
    control: ToolControl | None = None

    @classmethod
    def success(cls, value: Any = None, *, control: ToolControl | None = None) -> ToolOutput:
        """A successful result; ``value`` is JSON, possibly holding ``AttachmentRef``s.

        Raises ``ToolValueError`` naming the path of anything else.
        """
        from .value import encode_tool_value

        return cls(outcome=ToolSuccess(value=encode_tool_value(value)), control=control)

    @property
    def value(self) -> Any:
        """The success value with attachments as ``AttachmentRef``s; None otherwise."""
        if not isinstance(self.outcome, ToolSuccess):
            return None
        from .value import decode_tool_value

        return decode_tool_value(self.outcome.value)

    @classmethod
    def failure(cls, failure: ToolFailure) -> ToolOutput:
        """A failed result."""
        return cls(outcome=failure)

    @classmethod
    def cancelled(cls, message: str = "cancelled") -> ToolOutput:
        """A cancelled result."""
        return cls(outcome=ToolCancelled(message=message))

    @property
    def status(self) -> str:
        """``success``, ``failure`` or ``cancelled``."""
        return self.outcome.__struct_config__.tag  # type: ignore[return-value]

    @property
    def is_success(self) -> bool:
        """True for a successful result."""
        return isinstance(self.outcome, ToolSuccess)


class TextReturn(msgspec.Struct, tag="text", tag_field="type", **_S):
    """Text the model sees as (part of) a tool result."""

    text: str


class AttachmentReturn(msgspec.Struct, tag="attachment", tag_field="type", **_S):
    """An attachment the model sees as part of a tool result."""

    ref: AttachmentRef


ModelReturnPart: TypeAlias = TextReturn | AttachmentReturn


class PendingToolCall(msgspec.Struct, **_S):
    """A tool call the model asked for, waiting to run."""

    call_id: str
    tool_name: str
    args: Any
    replay: ProviderReplayMeta | None = None
    input_json: str = ""
    args_error: str | None = None
    """Set when the model's argument text was not a JSON object; the call must fail."""


class CompletedToolCall(msgspec.Struct, **_S):
    """A finished tool call with the model-facing projection the host chose."""

    call_id: str
    tool_name: str
    args: Any
    output: ToolOutput
    model_return: tuple[ModelReturnPart, ...] = ()
    duration_ms: int = 0
    replay: ProviderReplayMeta | None = None
    state_writes: dict[str, bytes | None] = msgspec.field(default_factory=dict)
    """Session state the call wrote (host bookkeeping, recorded with the outcome so a
    replay re-applies it); the kernel ignores it."""
