"""How a turn ends: finished, switched to another agent frame, or stopped."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

import msgspec

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class AssistantAnswer(msgspec.Struct, tag="assistant_message", tag_field="kind", **_S):
    """The model answered in prose."""

    text: str


class ToolValueAnswer(msgspec.Struct, tag="tool_value", tag_field="kind", **_S):
    """A tool ended the turn with its value (a ``finish`` control)."""

    tool_name: str
    value: Any = None


class SubmittedAnswer(msgspec.Struct, tag="submitted_value", tag_field="kind", **_S):
    """The code-writing mode submitted a value."""

    value: Any = None


FinishedResult: TypeAlias = AssistantAnswer | ToolValueAnswer | SubmittedAnswer


class Finished(msgspec.Struct, tag="finished", tag_field="type", **_S):
    """The turn produced a result."""

    result: FinishedResult

    @property
    def text(self) -> str:
        """The answer text; for a value result, its compact JSON."""
        r = self.result
        if isinstance(r, AssistantAnswer):
            return r.text
        if isinstance(r.value, str):
            return r.value
        return msgspec.json.encode(r.value, order="sorted").decode()


class AgentFrameSwitch(msgspec.Struct, tag="agent_frame_switch", tag_field="type", **_S):
    """A tool asked the session to continue in another agent frame."""

    frame_id: str
    task: str | None = None


class StopReason(StrEnum):
    """Why a turn stopped without a result."""

    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"
    """The model hit its output cap."""
    MAX_TURNS = "max_turns"
    PROVIDER_ERROR = "provider_error"
    RUNTIME_ERROR = "runtime_error"
    TOOL_ERROR = "tool_error"
    """A tool ended the turn with a ``fail`` control."""
    SUBMITTED_ERROR = "submitted_error"
    INVALID_INPUT = "invalid_input"
    PLUGIN_ABORT = "plugin_abort"
    TOOL_FAILURE = "tool_failure"


class Stopped(msgspec.Struct, tag="stopped", tag_field="type", **_S):
    """The turn stopped; ``message`` says why in words."""

    reason: StopReason
    message: str = ""
    tool_name: str | None = None
    value: Any = None


TurnOutcome: TypeAlias = Finished | AgentFrameSwitch | Stopped


def finished_text(text: str) -> Finished:
    """A ``Finished`` outcome holding a prose answer."""
    return Finished(result=AssistantAnswer(text=text))
