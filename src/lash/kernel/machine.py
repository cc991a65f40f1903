"""The turn machine: a pure, synchronous state machine for one agent turn.

The host alternates ``poll()`` (the next effect, or ``None``) and
``respond(response)`` (the answer to the outstanding effect). The machine never
does I/O, reads no clock and draws no randomness: given the same responses it
yields byte-identical effects.

State transitions live in the ``_on_*`` handlers below; each validates its
response completely before changing anything, so a rejected response leaves
the machine exactly as it was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import msgspec

from .driver import (
    AdvanceIteration,
    AppendMessages,
    ContinueIteration,
    DriverAction,
    EmitEvent,
    Finish,
    FinishWith,
    ProtocolDriver,
    ResumeAction,
    StartCheckpoint,
    StartExec,
    StartLlm,
    StartTools,
)
from .effects import (
    RESPONSES_FOR,
    Checkpoint,
    CheckpointDelivered,
    Done,
    Effect,
    Emit,
    ExecCode,
    ExecResult,
    ExecutionSurface,
    LlmCall,
    LlmCompleted,
    LlmFailed,
    Progress,
    ReplyEffect,
    Response,
    SurfaceSynced,
    SyncExecutionSurface,
    ToolCalls,
    ToolResults,
)
from .errors import DriverContractError, ProtocolError
from .events import (
    ErrorReported,
    LlmRequestStarted,
    LlmResponded,
    SessionEvent,
    TextDelta,
    TokenUsageReported,
    ToolCallFinished,
    error_event,
)
from .llm import (
    GenerationOptions,
    LlmRequest,
    LlmResponse,
    LlmToolSpec,
    LlmUsage,
    OutputSpec,
    TerminalReason,
    ToolCallOutput,
)
from .messages import (
    CheckpointKind,
    InjectedMessage,
    Message,
    Part,
    PartKind,
    PluginOrigin,
    Role,
    TurnCause,
    renumber_parts,
)
from .outcome import Stopped, StopReason, TurnOutcome
from .projector import ChatProjector, ContextProjector, ProjectionInput
from .render import RenderCache
from .tools.output import CompletedToolCall, PendingToolCall

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

# ---------------------------------------------------------------- states (serialized)


class Preparing(msgspec.Struct, tag="preparing", tag_field="type", **_S):
    """The turn has not started; the next poll prepares it."""


class PrepareIteration(msgspec.Struct, tag="prepare_iteration", tag_field="type", **_S):
    """Between iterations; the next poll asks the driver to start one."""


class WaitingSurface(msgspec.Struct, tag="waiting_surface", tag_field="type", **_S):
    """Waiting for ``SurfaceSynced``."""

    effect_id: int
    refresh: bool


class WaitingLlm(msgspec.Struct, tag="waiting_llm", tag_field="type", **_S):
    """Waiting for the model's reply to ``request``."""

    effect_id: int
    request: LlmRequest
    driver_state: Any = None


class WaitingTools(msgspec.Struct, tag="waiting_tools", tag_field="type", **_S):
    """Waiting for the results of a tool batch."""

    effect_id: int
    calls: tuple[PendingToolCall, ...]


class WaitingExec(msgspec.Struct, tag="waiting_exec", tag_field="type", **_S):
    """Waiting for a code execution."""

    effect_id: int
    code: str
    driver_state: Any = None


class WaitingCheckpoint(msgspec.Struct, tag="waiting_checkpoint", tag_field="type", **_S):
    """Waiting at a checkpoint."""

    effect_id: int
    kind: CheckpointKind
    on_empty: ResumeAction


class Ended(msgspec.Struct, tag="ended", tag_field="type", **_S):
    """The turn is over."""

    outcome: TurnOutcome


MachineState: TypeAlias = (
    Preparing
    | PrepareIteration
    | WaitingSurface
    | WaitingLlm
    | WaitingTools
    | WaitingExec
    | WaitingCheckpoint
    | Ended
)
QueuedEffect: TypeAlias = Emit | Progress | Done


class TurnCheckpoint(msgspec.Struct, **_S):
    """A serializable snapshot of a machine; ``TurnMachine.restore`` rebuilds it.

    The restored machine first drains ``queue``, then re-issues the outstanding
    effect of ``state`` with the same id and payload.
    """

    state: MachineState
    queue: tuple[QueuedEffect, ...] = ()
    next_effect_id: int = 1
    next_message_seq: int = 0
    messages: tuple[Message, ...] = ()
    history_len: int = 0
    cursor: int = 0
    turn_causes: tuple[TurnCause, ...] = ()
    iteration: int = 0
    iteration_offset: int = 0
    usage: LlmUsage = msgspec.field(default_factory=LlmUsage)
    turn_limit_scheduled: bool = False
    synced_iteration: int | None = None
    surface: ExecutionSurface | None = None


# ---------------------------------------------------------------- configuration


def default_message_ids(seq: int) -> str:
    """The default message-id factory: ``m0``, ``m1``, ... (hosts pass a turn-scoped one)."""
    return f"m{seq}"


def default_turn_limit_message(message_id: str, max_turns: int) -> Message:
    """The note added when the iteration budget is spent and the model gets one last try."""
    text = (
        f"The turn limit ({max_turns} iterations) is reached. "
        "Answer now with what you have; do not call more tools."
    )
    return Message(
        id=message_id,
        role=Role.SYSTEM,
        parts=(Part(id=f"{message_id}.p0", kind=PartKind.TEXT, content=text),),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineConfig:
    """How a turn runs. Not serialized: pass the same config again to ``restore``."""

    driver: ProtocolDriver
    model: str
    system_prompt: str = ""
    tools: tuple[LlmToolSpec, ...] = ()
    projector: ContextProjector = field(default_factory=ChatProjector)
    sync_execution_surface: bool = False
    model_variant: str | None = None
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    run_session_id: str | None = None
    output_spec: OutputSpec | None = None
    max_context_tokens: int | None = None
    max_turns: int | None = None
    max_response_chars: int = 4_000_000
    """A model reply with more text than this stops the turn as a provider error."""
    message_ids: Callable[[int], str] = default_message_ids
    """Mints message ids from a counter that checkpoints preserve."""
    turn_limit_message: Callable[[str, int], Message] = default_turn_limit_message

    def __post_init__(self) -> None:
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.max_response_chars < 1:
            raise ValueError("max_response_chars must be >= 1")


_START_ACTIONS = frozenset({StartLlm, StartTools, StartExec, StartCheckpoint})


def _check_driver_contract(actions: Sequence[DriverAction]) -> None:
    """Raise ``DriverContractError`` unless ``actions`` hold one start action or a finish."""
    starts = finishes = 0
    for action in actions:
        kind = type(action)
        if kind in _START_ACTIONS:
            starts += 1
        elif kind is Finish:
            finishes += 1
    if starts > 1 or (starts == 0 and finishes == 0):
        got = ", ".join(type(a).__name__ for a in actions) or "no actions"
        raise DriverContractError(
            f"a driver must return exactly one start action or a finish action; got {got}"
        )


def _response_chars(response: LlmResponse) -> int:
    """Characters in a reply; ``full_text`` repeats the text parts, so it counts once."""
    if not response.parts:
        return len(response.full_text)
    total = 0
    for part in response.parts:
        if isinstance(part, ToolCallOutput):
            total += len(part.input_json)
        else:
            total += len(part.text)
    return total


# ---------------------------------------------------------------- the machine


class TurnMachine:
    """A pure state machine for one turn.

    ``history`` is the session history the turn starts from; ``inputs`` are the
    messages this turn adds before the first model call (the user's message,
    event messages for ``turn_causes``). Effect ids count 1, 2, 3, ... per turn.
    ``message_ids`` (default: the config's) mints this turn's message ids from a
    counter; hosts pass a turn-scoped factory so ids never collide across turns.
    ``render_cache`` memoizes rendered history for this machine's requests
    (default: a fresh one); a host may pass one cache per session so later turns
    render only their new messages, but never share one across sessions.
    """

    __slots__ = (
        "_cfg",
        "_cursor",
        "_history_len",
        "_issued",
        "_iteration",
        "_iteration_offset",
        "_message_ids",
        "_messages",
        "_next_effect_id",
        "_next_message_seq",
        "_outstanding",
        "_queue",
        "_render_cache",
        "_state",
        "_surface",
        "_synced_iteration",
        "_turn_causes",
        "_turn_limit_scheduled",
        "_usage",
    )

    def __init__(
        self,
        config: MachineConfig,
        history: Sequence[Message] = (),
        *,
        inputs: Sequence[Message] = (),
        turn_causes: Sequence[TurnCause] = (),
        iteration_offset: int = 0,
        message_ids: Callable[[int], str] | None = None,
        render_cache: RenderCache | None = None,
    ) -> None:
        self._cfg = config
        self._message_ids = message_ids or config.message_ids
        self._messages: list[Message] = [*history, *inputs]
        self._history_len = len(history)
        self._cursor = len(history)
        self._turn_causes: list[TurnCause] = list(turn_causes)
        self._queue: deque[QueuedEffect] = deque()
        self._state: MachineState = Preparing()
        self._outstanding: ReplyEffect | None = None
        self._issued = False
        self._next_effect_id = 1
        self._next_message_seq = 0
        self._iteration = iteration_offset
        self._iteration_offset = iteration_offset
        self._usage = LlmUsage()
        self._turn_limit_scheduled = False
        self._synced_iteration: int | None = None
        self._surface: ExecutionSurface | None = None
        self._render_cache = render_cache if render_cache is not None else RenderCache()

    # ------------------------------------------------------------ public API

    @property
    def config(self) -> MachineConfig:
        """The configuration this machine runs with."""
        return self._cfg

    @property
    def is_done(self) -> bool:
        """True once the turn has ended (its ``Done`` may still be queued)."""
        return isinstance(self._state, Ended)

    @property
    def outcome(self) -> TurnOutcome | None:
        """The outcome, once the turn has ended."""
        return self._state.outcome if isinstance(self._state, Ended) else None

    @property
    def state(self) -> MachineState:
        """The current state."""
        return self._state

    @property
    def outstanding(self) -> ReplyEffect | None:
        """The effect waiting for a response, if any."""
        return self._outstanding

    @property
    def messages(self) -> tuple[Message, ...]:
        """A snapshot of the history, this turn's messages included."""
        return tuple(self._messages)

    @property
    def iteration(self) -> int:
        """The current protocol iteration."""
        return self._iteration

    @property
    def usage(self) -> LlmUsage:
        """Token usage summed over this turn's model calls."""
        return self._usage

    def poll(self) -> Effect | None:
        """Return the next effect, or ``None`` when the machine waits for a response."""
        if self._queue:
            return self._queue.popleft()
        if self._outstanding is not None:
            if not self._issued:
                self._issued = True
                return self._outstanding
            return None
        state = self._state
        if isinstance(state, Preparing):
            if self._cfg.sync_execution_surface:
                self._wait(WaitingSurface(effect_id=self._take_id(), refresh=False))
            else:
                self._prepare_iteration()
        elif isinstance(state, PrepareIteration):
            self._prepare_iteration()
        else:
            return None
        return self.poll()

    def respond(self, response: Response) -> None:
        """Apply the response to the outstanding effect.

        Raises ``ProtocolError`` (and changes nothing) when nothing is waiting,
        or the response has the wrong kind, id or payload for the waiting effect.
        """
        expected = self._outstanding
        rid = getattr(response, "id", None)
        if expected is None:
            what = "the turn has ended" if self.is_done else "no effect is waiting"
            raise ProtocolError(f"{what}; got {type(response).__name__} for effect #{rid}")
        allowed = RESPONSES_FOR[type(expected)]
        if not isinstance(response, allowed) or rid != expected.id:
            names = " or ".join(t.__name__ for t in allowed)
            raise ProtocolError(
                f"expected {names} for {type(expected).__name__} #{expected.id}; "
                f"got {type(response).__name__} for effect #{rid}"
            )
        _HANDLERS[type(response)](self, response)

    def finish(self, outcome: TurnOutcome) -> bool:
        """End the turn from outside (e.g. a frame switch). False if it had already ended."""
        if self.is_done:
            return False
        self._finish(outcome)
        return True

    def cancel(self, message: str = "cancelled") -> bool:
        """End the turn as ``Stopped(cancelled)``. False if it had already ended."""
        return self.finish(Stopped(reason=StopReason.CANCELLED, message=message))

    def fail(
        self,
        message: str,
        *,
        code: str = "runtime_error",
        raw: str | None = None,
        kind: str = "runtime",
    ) -> bool:
        """End the turn as ``Stopped(runtime_error)`` with an error event of ``kind``."""
        if self.is_done:
            return False
        self._emit(error_event(kind, code, message, raw=raw))
        self._finish(Stopped(reason=StopReason.RUNTIME_ERROR, message=message))
        return True

    def checkpoint(self) -> TurnCheckpoint:
        """A serializable snapshot of the whole machine."""
        return TurnCheckpoint(
            state=self._state,
            queue=tuple(self._queue),
            next_effect_id=self._next_effect_id,
            next_message_seq=self._next_message_seq,
            messages=tuple(self._messages),
            history_len=self._history_len,
            cursor=self._cursor,
            turn_causes=tuple(self._turn_causes),
            iteration=self._iteration,
            iteration_offset=self._iteration_offset,
            usage=self._usage,
            turn_limit_scheduled=self._turn_limit_scheduled,
            synced_iteration=self._synced_iteration,
            surface=self._surface,
        )

    @classmethod
    def restore(
        cls,
        config: MachineConfig,
        checkpoint: TurnCheckpoint,
        *,
        message_ids: Callable[[int], str] | None = None,
        render_cache: RenderCache | None = None,
    ) -> TurnMachine:
        """Rebuild a machine; it re-issues the outstanding effect with the same id and payload.

        Pass the same ``message_ids`` factory the original machine used; the
        render cache is a memo, not state, so any (or none) will do.
        """
        m = cls(config, message_ids=message_ids, render_cache=render_cache)
        cp = checkpoint
        m._messages = list(cp.messages)
        m._history_len = cp.history_len
        m._cursor = cp.cursor
        m._turn_causes = list(cp.turn_causes)
        m._queue = deque(cp.queue)
        m._next_effect_id = cp.next_effect_id
        m._next_message_seq = cp.next_message_seq
        m._iteration = cp.iteration
        m._iteration_offset = cp.iteration_offset
        m._usage = cp.usage
        m._turn_limit_scheduled = cp.turn_limit_scheduled
        m._synced_iteration = cp.synced_iteration
        m._surface = cp.surface
        m._state = cp.state
        m._outstanding = _effect_for(cp.state)
        m._issued = False
        return m

    # ------------------------------------------------------------ driver context

    @property
    def iteration_offset(self) -> int:
        """The iteration this turn started at."""
        return self._iteration_offset

    @property
    def max_turns(self) -> int | None:
        """The iteration budget of this turn."""
        return self._cfg.max_turns

    @property
    def turn_causes(self) -> Sequence[TurnCause]:
        """The external events that caused this turn."""
        return tuple(self._turn_causes)

    def project_request(self, *, use_tools: bool = True) -> LlmRequest:
        """Build the model request for the current history."""
        cfg = self._cfg
        surface = self._surface
        return cfg.projector.project(
            ProjectionInput(
                model=cfg.model,
                system_prompt=surface.system_prompt if surface else cfg.system_prompt,
                tools=surface.tools if surface else cfg.tools,
                messages=self._messages,
                turn_causes=self._turn_causes,
                use_tools=use_tools,
                model_variant=cfg.model_variant,
                generation=cfg.generation,
                run_session_id=cfg.run_session_id,
                output_spec=cfg.output_spec,
                render_cache=self._render_cache,
            )
        )

    def new_message_id(self) -> str:
        """Mint the next message id."""
        seq = self._next_message_seq
        self._next_message_seq = seq + 1
        return self._message_ids(seq)

    def turn_limit_due(self) -> int | None:
        """The turn limit when its final note is due now, else None."""
        limit = self._cfg.max_turns
        if self._turn_limit_scheduled or limit is None:
            return None
        if self._iteration < self._iteration_offset + limit:
            return None
        return limit

    # ------------------------------------------------------------ internals

    def _take_id(self) -> int:
        eid = self._next_effect_id
        self._next_effect_id = eid + 1
        return eid

    def _wait(self, state: MachineState) -> None:
        self._state = state
        self._outstanding = _effect_for(state)
        self._issued = False

    def _emit(self, event: SessionEvent) -> None:
        self._queue.append(Emit(event=event))

    def _progress(self) -> None:
        delta = tuple(self._messages[self._cursor :])
        self._cursor = len(self._messages)
        self._queue.append(Progress(delta=delta, iteration=self._iteration))

    def _finish(self, outcome: TurnOutcome) -> None:
        delta = tuple(self._messages[self._cursor :])
        self._cursor = len(self._messages)
        added = tuple(self._messages[self._history_len :])
        self._queue.append(
            Done(
                outcome=outcome,
                added=added,
                delta=delta,
                iteration=self._iteration,
                usage=self._usage,
            )
        )
        self._state = Ended(outcome=outcome)
        self._outstanding = None
        self._issued = False

    def _prepare_iteration(self) -> None:
        if self._cfg.sync_execution_surface and self._synced_iteration != self._iteration:
            self._wait(WaitingSurface(effect_id=self._take_id(), refresh=True))
            return
        self._run_driver(lambda: self._cfg.driver.prepare_iteration(self))

    def _run_driver(
        self,
        call: Callable[[], Sequence[DriverAction]],
        prelude: Sequence[SessionEvent] = (),
        usage: LlmUsage | None = None,
    ) -> None:
        """Ask the driver for actions, check the driver contract, then apply them.

        ``usage`` (the new cumulative usage) and the ``prelude`` events take
        effect only once the actions pass the check. A driver that raises, or
        breaks the contract, changes nothing: the message-id counter it may have
        advanced is put back.
        """
        seq_before = self._next_message_seq
        try:
            actions = call()
            _check_driver_contract(actions)
        except BaseException:
            self._next_message_seq = seq_before
            raise
        if usage is not None:
            self._usage = usage
        for event in prelude:
            self._emit(event)
        self._apply(actions)

    def _apply(self, actions: Sequence[DriverAction]) -> None:
        dirty = False
        for action in actions:
            match action:
                case EmitEvent(event=event):
                    self._queue.append(Emit(event=event))
                case AppendMessages(messages=messages):
                    if messages:
                        self._messages.extend(messages)
                        dirty = True
                case StartLlm(request=request, driver_state=driver_state):
                    self._emit(
                        LlmRequestStarted(
                            iteration=self._iteration,
                            message_count=len(request.messages),
                            tool_names=tuple(t.name for t in request.tools),
                        )
                    )
                    self._wait(
                        WaitingLlm(
                            effect_id=self._take_id(), request=request, driver_state=driver_state
                        )
                    )
                case StartTools(calls=calls):
                    self._wait(WaitingTools(effect_id=self._take_id(), calls=calls))
                case StartCheckpoint(kind=kind, on_empty=on_empty):
                    self._wait(
                        WaitingCheckpoint(effect_id=self._take_id(), kind=kind, on_empty=on_empty)
                    )
                case StartExec(code=code, driver_state=driver_state):
                    self._wait(
                        WaitingExec(effect_id=self._take_id(), code=code, driver_state=driver_state)
                    )
                case AdvanceIteration():
                    self._iteration += 1
                    self._synced_iteration = None
                    dirty = True
                case Finish(outcome=outcome):
                    if dirty:
                        self._progress()
                    self._finish(outcome)
                    return
        if dirty:
            self._progress()

    # ------------------------------------------------------------ response handlers

    def _on_surface(self, response: SurfaceSynced) -> None:
        if response.error is not None:
            self._emit(
                error_event(
                    "execution_surface",
                    "reconfigure_failed",
                    f"Failed to refresh execution surface: {response.error}",
                    raw=response.error,
                )
            )
            self._finish(Stopped(reason=StopReason.RUNTIME_ERROR, message=response.error))
            return
        if response.surface is not None:
            self._surface = response.surface
        self._synced_iteration = self._iteration
        self._state = PrepareIteration()
        self._outstanding = None

    def _on_llm_failed(self, response: LlmFailed) -> None:
        err = response.error
        self._emit(
            error_event(
                "llm_provider",
                err.code,
                f"LLM error: {err.message}",
                raw=err.raw,
                terminal_reason=err.terminal_reason,
            )
        )
        if err.terminal_reason is TerminalReason.CANCELLED:
            outcome = Stopped(reason=StopReason.CANCELLED, message=err.message)
        else:
            outcome = Stopped(reason=StopReason.PROVIDER_ERROR, message=err.message)
        self._finish(outcome)

    def _on_llm(self, response: LlmCompleted) -> None:
        state = self._state
        assert isinstance(state, WaitingLlm)
        resp = response.response
        reason = resp.terminal_reason
        diagnostic = resp.terminal_diagnostic
        usage = resp.usage
        limit = self._cfg.max_context_tokens
        if (
            reason is TerminalReason.OUTPUT_LIMIT
            and usage.output_tokens == 0
            and limit
            # input already includes cached tokens (see LlmUsage), so they are not added again
            and usage.input_tokens >= limit * 95 // 100
        ):
            reason = TerminalReason.CONTEXT_OVERFLOW
            diagnostic = (
                "The prompt filled the model's context window; no output tokens were produced."
            )
        cumulative = self._usage + usage
        usage_event = TokenUsageReported(
            iteration=self._iteration, usage=usage, cumulative=cumulative
        )
        chars = _response_chars(resp)
        stop = _TERMINAL_STOPS.get(reason)
        if chars > self._cfg.max_response_chars or stop is not None:
            self._usage = cumulative
            self._emit(usage_event)
            if chars > self._cfg.max_response_chars:
                message = (
                    f"Model reply of {chars} characters exceeds the limit of "
                    f"{self._cfg.max_response_chars}."
                )
                self._emit(error_event("llm_provider", "oversized_response", message))
                self._finish(Stopped(reason=StopReason.PROVIDER_ERROR, message=message))
                return
            assert stop is not None
            text = resp.full_text
            if text and not response.text_streamed:
                self._emit(TextDelta(content=text))
            self._emit(LlmResponded(iteration=self._iteration, content=text))
            message = diagnostic or f"Model call ended with terminal reason {reason.value}."
            self._emit(error_event("llm_provider", reason.value, message, terminal_reason=reason))
            self._finish(Stopped(reason=stop, message=message))
            return
        driver = self._cfg.driver
        self._run_driver(
            lambda: driver.handle_llm_success(
                self, state.request, state.driver_state, resp, response.text_streamed
            ),
            prelude=(usage_event,),
            usage=cumulative,
        )

    def _on_tools(self, response: ToolResults) -> None:
        state = self._state
        assert isinstance(state, WaitingTools)
        ordered = _order_results(state, response)
        events = [
            ToolCallFinished(
                call_id=r.call_id,
                name=r.tool_name,
                args=r.args,
                output=r.output,
                duration_ms=r.duration_ms,
            )
            for r in ordered
        ]
        driver = self._cfg.driver
        self._run_driver(lambda: driver.handle_tool_results(self, ordered), prelude=events)

    def _on_exec(self, response: ExecResult) -> None:
        state = self._state
        assert isinstance(state, WaitingExec)
        driver = self._cfg.driver
        self._run_driver(lambda: driver.handle_exec_result(self, state.driver_state, response))

    def _on_checkpoint(self, response: CheckpointDelivered) -> None:
        state = self._state
        assert isinstance(state, WaitingCheckpoint)
        for group, name in (
            (response.messages, "messages"),
            (response.transient_messages, "transient_messages"),
        ):
            for i, injected in enumerate(group):
                if injected.role not in (Role.USER, Role.SYSTEM):
                    raise ProtocolError(
                        f"Checkpoint #{state.effect_id}: {name}[{i}] has role "
                        f"{injected.role.value}; only user and system messages can be injected"
                    )
        if response.is_empty:
            action = state.on_empty
            if isinstance(action, FinishWith):
                self._finish(action.outcome)
            else:
                self._state = PrepareIteration()
                self._outstanding = None
            return
        for injected in response.messages:
            self._messages.append(self._inject(injected, transient=False))
        for injected in response.transient_messages:
            self._messages.append(self._inject(injected, transient=True))
        known = {c.id for c in self._turn_causes}
        for cause in response.turn_causes:
            if cause.id not in known:
                known.add(cause.id)
                self._turn_causes.append(cause)
                self._messages.append(cause.to_event_message())
        if state.kind is CheckpointKind.BEFORE_COMPLETION:
            self._iteration += 1
            if self._turn_limit_scheduled:
                self._progress()
                self._finish(
                    Stopped(
                        reason=StopReason.MAX_TURNS,
                        message="The turn limit was reached after the final grace iteration.",
                    )
                )
                return
            limit = self.turn_limit_due()
            if limit is not None:
                self._turn_limit_scheduled = True
                self._messages.append(self._cfg.turn_limit_message(self.new_message_id(), limit))
        self._state = PrepareIteration()
        self._outstanding = None
        self._progress()

    def _inject(self, injected: InjectedMessage, *, transient: bool) -> Message:
        mid = self.new_message_id()
        parts: Sequence[Part] = injected.parts or (
            Part(id="", kind=PartKind.TEXT, content=injected.content),
        )
        origin = injected.origin or PluginOrigin(plugin_id="plugin", transient=transient)
        return Message(
            id=mid, role=injected.role, parts=renumber_parts(mid, tuple(parts)), origin=origin
        )


_TERMINAL_STOPS = {
    TerminalReason.OUTPUT_LIMIT: StopReason.INCOMPLETE,
    TerminalReason.CONTEXT_OVERFLOW: StopReason.PROVIDER_ERROR,
    TerminalReason.CONTENT_FILTER: StopReason.PROVIDER_ERROR,
    TerminalReason.PROVIDER_ERROR: StopReason.PROVIDER_ERROR,
    TerminalReason.CANCELLED: StopReason.CANCELLED,
}


def _order_results(state: WaitingTools, response: ToolResults) -> tuple[CompletedToolCall, ...]:
    """Check the results answer exactly the requested calls; return them in call order."""
    by_id: dict[str, CompletedToolCall] = {}
    for i, r in enumerate(response.results):
        if r.call_id in by_id:
            raise ProtocolError(
                f"ToolResults #{response.id}: results[{i}] repeats call id {r.call_id!r}"
            )
        by_id[r.call_id] = r
    ordered: list[CompletedToolCall] = []
    for call in state.calls:
        if call.call_id not in by_id:
            raise ProtocolError(
                f"ToolResults #{response.id}: no result for call {call.call_id!r} "
                f"({call.tool_name})"
            )
        r = by_id.pop(call.call_id)
        if r.tool_name != call.tool_name:
            raise ProtocolError(
                f"ToolResults #{response.id}: call {call.call_id!r} is {call.tool_name!r}, "
                f"but its result names {r.tool_name!r}"
            )
        ordered.append(r)
    if by_id:
        extra = ", ".join(repr(k) for k in by_id)
        raise ProtocolError(f"ToolResults #{response.id}: results for unknown calls {extra}")
    return tuple(ordered)


def _effect_for(state: MachineState) -> ReplyEffect | None:
    """The outstanding effect a state waits on, rebuilt from the state alone."""
    kind = type(state)
    if kind is WaitingLlm:
        return LlmCall(id=state.effect_id, request=state.request)  # type: ignore[union-attr]
    if kind is WaitingTools:
        return ToolCalls(id=state.effect_id, calls=state.calls)  # type: ignore[union-attr]
    if kind is WaitingCheckpoint:
        return Checkpoint(id=state.effect_id, kind=state.kind)  # type: ignore[union-attr]
    if kind is WaitingSurface:
        return SyncExecutionSurface(id=state.effect_id, refresh=state.refresh)  # type: ignore[union-attr]
    if kind is WaitingExec:
        return ExecCode(id=state.effect_id, code=state.code)  # type: ignore[union-attr]
    return None


_HANDLERS: dict[type[Any], Callable[[TurnMachine, Any], None]] = {
    SurfaceSynced: TurnMachine._on_surface,
    LlmCompleted: TurnMachine._on_llm,
    LlmFailed: TurnMachine._on_llm_failed,
    ToolResults: TurnMachine._on_tools,
    ExecResult: TurnMachine._on_exec,
    CheckpointDelivered: TurnMachine._on_checkpoint,
}


__all__ = [
    "ContinueIteration",
    "Ended",
    "ErrorReported",
    "MachineConfig",
    "MachineState",
    "PrepareIteration",
    "Preparing",
    "TurnCheckpoint",
    "TurnMachine",
    "WaitingCheckpoint",
    "WaitingExec",
    "WaitingLlm",
    "WaitingSurface",
    "WaitingTools",
    "default_message_ids",
    "default_turn_limit_message",
]
