"""The effect boundary: every nondeterministic operation crosses it as an envelope.

An envelope names *what* to do (a command) and *where it sits* in the turn (an
invocation with a stable replay key). An effect host's controller decides how to
obtain the outcome: the inline host simply executes it; a durable host looks the
replay key up in its journal first and executes only what has no recorded
outcome. Envelopes carry references, never attachment bytes, and every command
and outcome is a serializable kernel-style value.

Replay keys are compatibility data (a journal written today must be readable
tomorrow); ``tests/runtime/test_replay_keys.py`` pins every builder.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, TypeAlias

import msgspec

from ..kernel.codec import canonical_hash
from ..kernel.effects import CheckpointDelivered, LlmCompleted, LlmFailed, SurfaceSynced
from ..kernel.llm import LlmRequest, LlmResponse
from ..kernel.messages import CheckpointKind
from ..kernel.tools.output import CompletedToolCall, PendingToolCall

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class DurabilityTier(StrEnum):
    """Whether a component survives a process crash."""

    INLINE = "inline"
    DURABLE = "durable"


class EffectKind(StrEnum):
    """What an envelope asks for."""

    LLM_CALL = "llm_call"
    DIRECT = "direct"
    TOOL_CALL = "tool_call"
    CHECKPOINT = "checkpoint"
    SYNC_EXECUTION_SURFACE = "sync_execution_surface"
    SLEEP = "sleep"
    EXEC_CODE = "exec_code"


# ---------------------------------------------------------------- scope and invocation


class TurnScope(msgspec.Struct, **_S):
    """The turn an effect host is scoped to; ``turn_id`` is stable across replays."""

    session_id: str
    turn_id: str

    def __post_init__(self) -> None:
        if not self.session_id.strip():
            raise ValueError("effect scope needs a non-blank session_id")
        if not self.turn_id.strip():
            raise ValueError("effect scope needs a non-blank turn_id")


class InvocationScope(msgspec.Struct, **_S):
    """Where in a session an effect happens."""

    session_id: str
    turn_id: str | None = None
    turn_index: int | None = None
    iteration: int | None = None


class RuntimeInvocation(msgspec.Struct, **_S):
    """The identity of one effect: scope, effect id, kind, replay key and cause."""

    scope: InvocationScope
    effect_id: str
    kind: EffectKind
    replay_key: str
    caused_by: str | None = None

    def __post_init__(self) -> None:
        if not self.effect_id.strip():
            raise ValueError("an effect invocation needs a non-blank effect_id")
        if not self.replay_key.strip():
            raise ValueError("an effect invocation needs a non-blank replay_key")


# ---------------------------------------------------------------- commands


class LlmCallCommand(msgspec.Struct, tag="llm_call", tag_field="type", **_S):
    """Call the model for the turn; the outcome is ``LlmCompleted`` or ``LlmFailed``."""

    effect_id: int
    request: LlmRequest


class DirectCommand(msgspec.Struct, tag="direct", tag_field="type", **_S):
    """A helper model call from a tool or plugin; usage is booked to ``usage_source``."""

    request: LlmRequest
    usage_source: str


class ToolCallCommand(msgspec.Struct, tag="tool_call", tag_field="type", **_S):
    """Run one tool call once (one attempt); the outcome is a ``CompletedToolCall``."""

    call: PendingToolCall
    idempotency_key: str
    """The call's replay key, the same for every attempt (tools may use it)."""
    attempt: int = 1
    max_attempts: int = 1


class CheckpointCommand(msgspec.Struct, tag="checkpoint", tag_field="type", **_S):
    """Collect what to inject at a checkpoint; the outcome is ``CheckpointDelivered``."""

    effect_id: int
    kind: CheckpointKind


class SyncSurfaceCommand(msgspec.Struct, tag="sync_execution_surface", tag_field="type", **_S):
    """Report the current system prompt and tools; the outcome is ``SurfaceSynced``."""

    effect_id: int
    refresh: bool


class SleepCommand(msgspec.Struct, tag="sleep", tag_field="type", **_S):
    """Wait; durable hosts use a durable timer."""

    duration_ms: int


EffectCommand: TypeAlias = (
    LlmCallCommand
    | DirectCommand
    | ToolCallCommand
    | CheckpointCommand
    | SyncSurfaceCommand
    | SleepCommand
)

_COMMAND_KIND: dict[type[Any], EffectKind] = {
    LlmCallCommand: EffectKind.LLM_CALL,
    DirectCommand: EffectKind.DIRECT,
    ToolCallCommand: EffectKind.TOOL_CALL,
    CheckpointCommand: EffectKind.CHECKPOINT,
    SyncSurfaceCommand: EffectKind.SYNC_EXECUTION_SURFACE,
    SleepCommand: EffectKind.SLEEP,
}


class Slept(msgspec.Struct, tag="slept", tag_field="type", **_S):
    """The outcome of a sleep."""

    duration_ms: int


class DirectCompleted(msgspec.Struct, tag="direct_completed", tag_field="type", **_S):
    """The outcome of a direct completion."""

    response: LlmResponse


EffectOutcome: TypeAlias = (
    LlmCompleted
    | LlmFailed
    | CompletedToolCall
    | CheckpointDelivered
    | SurfaceSynced
    | Slept
    | DirectCompleted
)

OUTCOME_TYPES: dict[EffectKind, Any] = {
    EffectKind.LLM_CALL: LlmCompleted | LlmFailed,
    EffectKind.DIRECT: DirectCompleted | LlmFailed,
    EffectKind.TOOL_CALL: CompletedToolCall,
    EffectKind.CHECKPOINT: CheckpointDelivered,
    EffectKind.SYNC_EXECUTION_SURFACE: SurfaceSynced,
    EffectKind.SLEEP: Slept,
}
"""For each kind, the type its outcome decodes to (journals use this)."""


class EffectEnvelope(msgspec.Struct, **_S):
    """One effect: where it sits and what it asks for."""

    invocation: RuntimeInvocation
    command: EffectCommand

    def __post_init__(self) -> None:
        kind = _COMMAND_KIND[type(self.command)]
        if kind is not self.invocation.kind:
            raise ValueError(
                f"envelope {self.invocation.replay_key!r}: invocation kind "
                f"{self.invocation.kind.value} does not match command {kind.value}"
            )

    @property
    def replay_key(self) -> str:
        """The stable key a journal records this effect under."""
        return self.invocation.replay_key

    def stable_hash(self) -> str:
        """A hash of the whole envelope; a replay with another hash is a different effect."""
        return canonical_hash(self)


def outcome_matches(kind: EffectKind, outcome: object) -> bool:
    """True when ``outcome`` is a valid outcome for an effect of ``kind``."""
    expected = OUTCOME_TYPES.get(kind)
    if expected is None:
        return False
    members = getattr(expected, "__args__", (expected,))
    return isinstance(outcome, members)


# ---------------------------------------------------------------- replay keys


def turn_effect_key(
    session_id: str, turn_id: str, turn_index: int, iteration: int, kind: EffectKind, effect_id: int
) -> str:
    """``{session}:{turn}:{turn_index}:{iteration}:{kind}:{effect_id}``."""
    return f"{session_id}:{turn_id}:{turn_index}:{iteration}:{kind.value}:{effect_id}"


def tool_call_key(
    session_id: str, turn_id: str, turn_index: int, iteration: int, effect_id: int, call_id: str
) -> str:
    """``{session}:{turn}:{turn_index}:{iteration}:tool_call:{effect_id}:{call_id}``."""
    return f"{session_id}:{turn_id}:{turn_index}:{iteration}:tool_call:{effect_id}:{call_id}"


def attempt_key(call_key: str, attempt: int) -> str:
    """The key of a tool call's ``attempt`` (the first attempt uses the call key itself)."""
    return call_key if attempt <= 1 else f"{call_key}:attempt:{attempt}"


def retry_sleep_key(call_key: str, tool_name: str, attempt: int) -> str:
    """``{call_key}:{tool}:attempt:{attempt}:sleep``: the wait after failed ``attempt``."""
    return f"{call_key}:{tool_name}:attempt:{attempt}:sleep"


def batch_entry_key(call_key: str, index: int) -> str:
    """``{batch_call_key}:batch:{index:02}``: one entry of a ``batch`` tool call."""
    return f"{call_key}:batch:{index:02d}"


def child_key(parent_key: str, suffix: str) -> str:
    """``{parent}:{suffix}``: an effect caused by another."""
    return f"{parent_key}:{suffix}"


def direct_key(
    session_id: str,
    turn_id: str | None,
    usage_source: str,
    request: LlmRequest,
    *,
    cause: str = "",
    explicit_key: str | None = None,
) -> str:
    """``{session}[:{turn}]:direct:{usage_source}:{discriminator}``.

    The discriminator is ``{cause}request:{explicit_key}`` when the caller names
    the completion, else ``{cause}sha256:{hash of the request}``, so the same
    helper request in the same place replays the same recorded answer.
    """
    if explicit_key is not None:
        discriminator = f"{cause}request:{explicit_key}"
    else:
        discriminator = f"{cause}sha256:{canonical_hash(request)}"
    head = f"{session_id}:{turn_id}" if turn_id else session_id
    return f"{head}:direct:{usage_source}:{discriminator}"


def turn_cause(session_id: str, turn_id: str) -> str:
    """The cause prefix of effects a turn causes: ``cause:turn:{s}:{t}:``."""
    return f"cause:turn:{session_id}:{turn_id}:"


def tool_call_cause(session_id: str, call_id: str) -> str:
    """The cause prefix of effects a tool call causes: ``cause:tool_call:{s}:{c}:``."""
    return f"cause:tool_call:{session_id}:{call_id}:"


# ---------------------------------------------------------------- hosts


class EffectExecutor(Protocol):
    """Performs an effect for real (the local side of the boundary)."""

    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        """Do what ``envelope`` asks and return its outcome."""


class EffectController(Protocol):
    """Obtains an effect's outcome for one scope: by executing it, or from a journal."""

    @property
    def tier(self) -> DurabilityTier:
        """Inline or durable."""

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        """Return the outcome of ``envelope``, executing it with ``executor`` if needed."""


class EffectHost(Protocol):
    """Hands out controllers scoped to a turn."""

    @property
    def tier(self) -> DurabilityTier:
        """Inline or durable."""

    def scoped(self, scope: TurnScope) -> EffectController:
        """A controller for ``scope``."""


class EffectHostError(Exception):
    """An effect host could not obtain an outcome; ``code`` says why.

    Errors pickle with their attributes (durable engines store the error a turn
    ends with), whatever constructor a subclass has.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild without __init__ (subclasses take other arguments), then restore the
        # attributes; the default reduce would call cls(*args) and fail.
        cls = type(self)
        return (cls.__new__, (cls, *self.args), dict(self.__dict__))


class _InlineController:
    __slots__ = ()

    @property
    def tier(self) -> DurabilityTier:
        return DurabilityTier.INLINE

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        return await executor.execute(envelope)


class InlineEffectHost:
    """Executes every effect in process; nothing is journaled (the Inline tier)."""

    __slots__ = ()

    _controller = _InlineController()

    @property
    def tier(self) -> DurabilityTier:
        """Always inline."""
        return DurabilityTier.INLINE

    def scoped(self, scope: TurnScope) -> EffectController:
        """The (stateless) inline controller."""
        return self._controller
