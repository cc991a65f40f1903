"""Effects the machine yields and the responses the host sends back.

Effects that need a response carry an ``id`` (1, 2, 3, ... per turn). The
others (``Emit``, ``Progress``, ``Done``) are fire-and-forget.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgspec

from .events import SessionEvent
from .llm import LlmCallError, LlmRequest, LlmResponse, LlmToolSpec, LlmUsage
from .messages import CheckpointKind, InjectedMessage, Message, TurnCause
from .outcome import TurnOutcome
from .tools.output import CompletedToolCall, PendingToolCall

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

# ---------------------------------------------------------------- effects needing a reply


class SyncExecutionSurface(msgspec.Struct, tag="sync_execution_surface", tag_field="type", **_S):
    """Ask the host for the current system prompt and tools (``refresh`` after turn start)."""

    id: int
    refresh: bool = False


class LlmCall(msgspec.Struct, tag="llm_call", tag_field="type", **_S):
    """Call the model with this request."""

    id: int
    request: LlmRequest


class ToolCalls(msgspec.Struct, tag="tool_calls", tag_field="type", **_S):
    """Run this batch of tool calls; answer with one result per call."""

    id: int
    calls: tuple[PendingToolCall, ...]


class ExecCode(msgspec.Struct, tag="exec_code", tag_field="type", **_S):
    """Run code (reserved for the code-writing execution mode)."""

    id: int
    code: str


class Checkpoint(msgspec.Struct, tag="checkpoint", tag_field="type", **_S):
    """A safe boundary: the host may inject messages or turn causes here."""

    id: int
    kind: CheckpointKind


# ---------------------------------------------------------------- fire-and-forget


class Emit(msgspec.Struct, tag="emit", tag_field="type", **_S):
    """A stream or trace event."""

    event: SessionEvent


class Progress(msgspec.Struct, tag="progress", tag_field="type", **_S):
    """History grew; ``delta`` holds the messages appended since the last Progress."""

    delta: tuple[Message, ...]
    iteration: int


class Done(msgspec.Struct, tag="done", tag_field="type", **_S):
    """The turn ended. Emitted exactly once.

    ``added`` holds every message this turn appended to the history it started
    from (its inputs included); ``delta`` the part no Progress reported yet.
    """

    outcome: TurnOutcome
    added: tuple[Message, ...]
    delta: tuple[Message, ...]
    iteration: int
    usage: LlmUsage


ReplyEffect: TypeAlias = SyncExecutionSurface | LlmCall | ToolCalls | ExecCode | Checkpoint
Effect: TypeAlias = ReplyEffect | Emit | Progress | Done

# ---------------------------------------------------------------- responses


class ExecutionSurface(msgspec.Struct, **_S):
    """A refreshed system prompt and tool list."""

    system_prompt: str
    tools: tuple[LlmToolSpec, ...] = ()


class SurfaceSynced(msgspec.Struct, tag="surface_synced", tag_field="type", **_S):
    """Reply to ``SyncExecutionSurface``: a new surface, none (unchanged), or an error."""

    id: int
    surface: ExecutionSurface | None = None
    error: str | None = None


class LlmCompleted(msgspec.Struct, tag="llm_completed", tag_field="type", **_S):
    """Reply to ``LlmCall``: the model's response. ``text_streamed`` if deltas were shown."""

    id: int
    response: LlmResponse
    text_streamed: bool = False


class LlmFailed(msgspec.Struct, tag="llm_failed", tag_field="type", **_S):
    """Reply to ``LlmCall``: the call failed after the host's retries."""

    id: int
    error: LlmCallError


class ToolResults(msgspec.Struct, tag="tool_results", tag_field="type", **_S):
    """Reply to ``ToolCalls``: exactly one completed call per requested call."""

    id: int
    results: tuple[CompletedToolCall, ...]


class ExecResult(msgspec.Struct, tag="exec_result", tag_field="type", **_S):
    """Reply to ``ExecCode`` (reserved for the code-writing mode)."""

    id: int
    result: Any = None
    error: str | None = None


class CheckpointDelivered(msgspec.Struct, tag="checkpoint_delivered", tag_field="type", **_S):
    """Reply to ``Checkpoint``: messages and turn causes to inject, possibly none."""

    id: int
    messages: tuple[InjectedMessage, ...] = ()
    transient_messages: tuple[InjectedMessage, ...] = ()
    turn_causes: tuple[TurnCause, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when nothing is injected."""
        return not (self.messages or self.transient_messages or self.turn_causes)


Response: TypeAlias = (
    SurfaceSynced | LlmCompleted | LlmFailed | ToolResults | ExecResult | CheckpointDelivered
)

RESPONSES_FOR: dict[type[Any], tuple[type[Any], ...]] = {
    SyncExecutionSurface: (SurfaceSynced,),
    LlmCall: (LlmCompleted, LlmFailed),
    ToolCalls: (ToolResults,),
    ExecCode: (ExecResult,),
    Checkpoint: (CheckpointDelivered,),
}
"""For each effect that needs a reply, the response types that answer it."""
