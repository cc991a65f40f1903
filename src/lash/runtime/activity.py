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


class _Activity(msgspec.Struct, tag_field="type", frozen=True, kw_only=True, omit_defaults=True):
    """The fields and wire shape every activity shares.

    Subclasses inherit the struct config; they restate ``frozen=True`` only
    because type checkers do not inherit it.
    """

    id: str
    correlation_id: str

    @property
    def type(self) -> str:
        """The activity's kind, e.g. ``assistant_prose_delta`` (its ``type`` on the wire)."""
        return self.__struct_config__.tag  # type: ignore[return-value]


class ModelRequestStarted(_Activity, tag="model_request_started", frozen=True):
    """A model call starts."""

    iteration: int


class AssistantProseDelta(_Activity, tag="assistant_prose_delta", frozen=True):
    """A piece of the assistant's prose."""

    text: str


class ReasoningDelta(_Activity, tag="reasoning_delta", frozen=True):
    """A piece of visible reasoning."""

    text: str


class ToolCallStarted(_Activity, tag="tool_call_started", frozen=True):
    """A tool call starts; ``correlation_id`` is the call id."""

    call_id: str
    name: str
    args: Any


class ToolCallCompleted(_Activity, tag="tool_call_completed", frozen=True):
    """A tool call finished; ``output`` is the full output (not the model's projection)."""

    call_id: str
    name: str
    args: Any
    output: ToolOutput
    duration_ms: int = 0


class UsageReported(_Activity, tag="usage", frozen=True):
    """Usage of one model call, and the turn's running total."""

    iteration: int
    usage: LlmUsage
    cumulative: LlmUsage


class RetryStatus(_Activity, tag="retry_status", frozen=True):
    """The provider will retry a failed call after ``wait_seconds``."""

    wait_seconds: float
    attempt: int
    max_attempts: int
    reason: str


class QueuedInputAccepted(_Activity, tag="queued_input_accepted", frozen=True):
    """Queued input joined the running turn at a checkpoint."""

    checkpoint: str
    input_ids: tuple[str, ...]
    texts: tuple[str, ...]


class ChildTurnCompleted(_Activity, tag="child_turn_completed", frozen=True):
    """A tool ran a turn of a child session; its usage counts toward this turn."""

    session_id: str
    turn_id: str
    outcome: TurnOutcome
    usage: LlmUsage


class ToolValue(_Activity, tag="tool_value", frozen=True):
    """A tool ended the turn with its value."""

    tool_name: str
    value: Any = None


class ErrorActivity(_Activity, tag="error", frozen=True):
    """Something went wrong; ``kind`` and ``code`` say what."""

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
