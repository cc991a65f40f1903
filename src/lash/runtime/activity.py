"""``TurnActivity``: what a host UI sees while a turn runs.

Every activity has a unique ``id`` and a ``correlation_id`` that joins the
pieces of one logical item (the deltas of one text block, the start and end of
one tool call). Guarantees: a tool call's start comes before its completion;
tool output never appears in prose; a prose answer emits no terminal activity
(read ``TurnResult`` for the outcome).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from ..kernel.llm import LlmUsage
from ..kernel.outcome import TurnOutcome
from ..kernel.tools.output import ToolOutput

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class _Activity(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    @property
    def type(self) -> str:
        """The activity's kind, e.g. ``assistant_prose_delta`` (its ``type`` on the wire)."""
        return self.__struct_config__.tag  # type: ignore[return-value]


class ModelRequestStarted(
    _Activity,
    tag="model_request_started",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A model call starts."""

    id: str
    correlation_id: str
    iteration: int


class AssistantProseDelta(
    _Activity,
    tag="assistant_prose_delta",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A piece of the assistant's prose."""

    id: str
    correlation_id: str
    text: str


class ReasoningDelta(
    _Activity,
    tag="reasoning_delta",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A piece of visible reasoning."""

    id: str
    correlation_id: str
    text: str


class ToolCallStarted(
    _Activity,
    tag="tool_call_started",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A tool call starts; ``correlation_id`` is the call id."""

    id: str
    correlation_id: str
    call_id: str
    name: str
    args: Any


class ToolCallCompleted(
    _Activity,
    tag="tool_call_completed",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A tool call finished; ``output`` is the full output (not the model's projection)."""

    id: str
    correlation_id: str
    call_id: str
    name: str
    args: Any
    output: ToolOutput
    duration_ms: int = 0


class UsageReported(
    _Activity, tag="usage", tag_field="type", frozen=True, kw_only=True, omit_defaults=True
):
    """Usage of one model call, and the turn's running total."""

    id: str
    correlation_id: str
    iteration: int
    usage: LlmUsage
    cumulative: LlmUsage


class RetryStatus(
    _Activity, tag="retry_status", tag_field="type", frozen=True, kw_only=True, omit_defaults=True
):
    """The provider will retry a failed call after ``wait_seconds``."""

    id: str
    correlation_id: str
    wait_seconds: float
    attempt: int
    max_attempts: int
    reason: str


class QueuedInputAccepted(
    _Activity,
    tag="queued_input_accepted",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """Queued input joined the running turn at a checkpoint."""

    id: str
    correlation_id: str
    checkpoint: str
    input_ids: tuple[str, ...]
    texts: tuple[str, ...]


class ChildTurnCompleted(
    _Activity,
    tag="child_turn_completed",
    tag_field="type",
    frozen=True,
    kw_only=True,
    omit_defaults=True,
):
    """A tool ran a turn of a child session; its usage counts toward this turn."""

    id: str
    correlation_id: str
    session_id: str
    turn_id: str
    outcome: TurnOutcome
    usage: LlmUsage


class ToolValue(
    _Activity, tag="tool_value", tag_field="type", frozen=True, kw_only=True, omit_defaults=True
):
    """A tool ended the turn with its value."""

    id: str
    correlation_id: str
    tool_name: str
    value: Any = None


class ErrorActivity(
    _Activity, tag="error", tag_field="type", frozen=True, kw_only=True, omit_defaults=True
):
    """Something went wrong; ``kind`` and ``code`` say what."""

    id: str
    correlation_id: str
    message: str
    kind: str | None = None
    code: str | None = None


TurnActivity: TypeAlias = (
    ModelRequestStarted
    | AssistantProseDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallCompleted
    | UsageReported
    | RetryStatus
    | QueuedInputAccepted
    | ChildTurnCompleted
    | ToolValue
    | ErrorActivity
)
