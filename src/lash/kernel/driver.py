"""The protocol-driver interface: what a driver sees and the actions it returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import msgspec

from .events import SessionEvent
from .llm import LlmRequest, LlmResponse
from .messages import CheckpointKind, Message, TurnCause
from .outcome import TurnOutcome
from .tools.output import CompletedToolCall, PendingToolCall

if TYPE_CHECKING:
    from .effects import ExecResult

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


# ---------------------------------------------------------------- resume actions (serialized)


class ContinueIteration(msgspec.Struct, tag="continue", tag_field="type", **_S):
    """After an empty checkpoint, prepare the next iteration."""


class FinishWith(msgspec.Struct, tag="finish", tag_field="type", **_S):
    """After an empty checkpoint, finish the turn with this outcome."""

    outcome: TurnOutcome


ResumeAction: TypeAlias = ContinueIteration | FinishWith


# ---------------------------------------------------------------- driver actions


class EmitEvent(msgspec.Struct, **_S):
    """Queue an ``Emit`` effect."""

    event: SessionEvent


class AppendMessages(msgspec.Struct, **_S):
    """Append messages to the turn's history."""

    messages: tuple[Message, ...]


class StartLlm(msgspec.Struct, **_S):
    """Call the model; ``driver_state`` comes back with the reply."""

    request: LlmRequest
    driver_state: Any = None


class StartTools(msgspec.Struct, **_S):
    """Run a batch of tool calls."""

    calls: tuple[PendingToolCall, ...]


class StartExec(msgspec.Struct, **_S):
    """Run code (code-writing mode)."""

    code: str
    driver_state: Any = None


class StartCheckpoint(msgspec.Struct, **_S):
    """Stop at a checkpoint; ``on_empty`` says what happens when nothing is injected."""

    kind: CheckpointKind
    on_empty: ResumeAction


class AdvanceIteration(msgspec.Struct, **_S):
    """Count one more protocol iteration."""


class Finish(msgspec.Struct, **_S):
    """End the turn; later actions in the same batch are dropped."""

    outcome: TurnOutcome


DriverAction: TypeAlias = (
    EmitEvent
    | AppendMessages
    | StartLlm
    | StartTools
    | StartExec
    | StartCheckpoint
    | AdvanceIteration
    | Finish
)


class DriverContext(Protocol):
    """A read-only view of the machine, plus deterministic id minting."""

    @property
    def iteration(self) -> int:
        """The current protocol iteration."""

    @property
    def iteration_offset(self) -> int:
        """The iteration this turn started at."""

    @property
    def max_turns(self) -> int | None:
        """The iteration budget of this turn, if any."""

    @property
    def messages(self) -> Sequence[Message]:
        """The history so far, this turn's messages included."""

    @property
    def turn_causes(self) -> Sequence[TurnCause]:
        """The external events that caused the turn."""

    def project_request(self, *, use_tools: bool = True) -> LlmRequest:
        """Build the model request for the current history."""

    def new_message_id(self) -> str:
        """Mint the next message id (deterministic; restored by checkpoints)."""

    def turn_limit_due(self) -> int | None:
        """The turn limit when its final note is due now, else None."""


class ProtocolDriver(Protocol):
    """Decides what a turn does next. All methods are pure and return actions."""

    def prepare_iteration(self, ctx: DriverContext) -> Sequence[DriverAction]:
        """Start an iteration (normally: call the model)."""

    def handle_llm_success(
        self,
        ctx: DriverContext,
        request: LlmRequest,
        driver_state: Any,
        response: LlmResponse,
        text_streamed: bool,
    ) -> Sequence[DriverAction]:
        """React to a model reply whose terminal reason lets the turn go on."""

    def handle_tool_results(
        self, ctx: DriverContext, results: Sequence[CompletedToolCall]
    ) -> Sequence[DriverAction]:
        """React to a finished tool batch (results are in call order)."""

    def handle_exec_result(
        self, ctx: DriverContext, driver_state: Any, result: ExecResult
    ) -> Sequence[DriverAction]:
        """React to a finished code execution."""
