"""A tiny scripted host for kernel tests.

``ScriptedHost`` drives a ``TurnMachine``: it polls effects, records every one,
and answers reply-needing effects from per-kind scripts. It stops when the
machine is done, or when an effect needs an answer the script does not have
(an exhausted LLM/tool script, or an explicit ``HOLD``), leaving that effect
outstanding so a test can take a checkpoint there.

Surface syncs and checkpoints answer "nothing changed" once their scripts are
used up, so most tests only script the model and the tools.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lash.kernel import codec
from lash.kernel.driver import DriverAction, Finish, StartLlm
from lash.kernel.effects import (
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
    Response,
    SurfaceSynced,
    SyncExecutionSurface,
    ToolCalls,
    ToolResults,
)
from lash.kernel.llm import (
    LlmCallError,
    LlmOutputPart,
    LlmResponse,
    LlmUsage,
    ProviderReplayMeta,
    ReasoningOutput,
    ReasoningReplay,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from lash.kernel.machine import MachineConfig, TurnCheckpoint, TurnMachine
from lash.kernel.messages import InjectedMessage, TurnCause
from lash.kernel.outcome import AgentFrameSwitch, Finished, Stopped, TurnOutcome, finished_text
from lash.kernel.tools.output import (
    CompletedToolCall,
    ModelReturnPart,
    PendingToolCall,
    TextReturn,
    ToolOutput,
)


class _Hold:
    def __repr__(self) -> str:
        return "HOLD"


HOLD: Any = _Hold()
"""Script item: leave this effect unanswered and stop ``run()``."""

REPLY_EFFECTS = (SyncExecutionSurface, LlmCall, ToolCalls, ExecCode, Checkpoint)

# ---------------------------------------------------------------- building model replies


def tool_call(
    call_id: str,
    tool_name: str,
    args: dict[str, Any] | str | None = None,
    *,
    replay: ProviderReplayMeta | None = None,
) -> ToolCallOutput:
    """A model tool call; dict args become compact JSON, a string is sent verbatim."""
    if args is None:
        args = {}
    input_json = args if isinstance(args, str) else json.dumps(args, separators=(",", ":"))
    return ToolCallOutput(
        call_id=call_id, tool_name=tool_name, input_json=input_json, replay=replay
    )


def reply(
    text: str = "",
    *,
    calls: Sequence[ToolCallOutput] = (),
    parts: Sequence[LlmOutputPart] | None = None,
    usage: LlmUsage | None = None,
    reason: TerminalReason | None = None,
    diagnostic: str | None = None,
) -> LlmResponse:
    """A model reply as providers report it: ``full_text`` plus matching parts.

    Without ``parts``: one text part (when ``text`` is non-empty) then the calls.
    """
    if parts is None:
        built: list[LlmOutputPart] = [TextOutput(text=text)] if text else []
        built.extend(calls)
        parts = built
    if reason is None:
        reason = TerminalReason.TOOL_USE if calls else TerminalReason.STOP
    return LlmResponse(
        full_text=text,
        parts=tuple(parts),
        usage=usage or LlmUsage(),
        terminal_reason=reason,
        terminal_diagnostic=diagnostic,
    )


def reasoning(text: str = "", **replay: Any) -> ReasoningOutput:
    """A reasoning output part; keyword arguments build its replay data."""
    return ReasoningOutput(text=text, replay=ReasoningReplay(**replay) if replay else None)


# ---------------------------------------------------------------- building tool results


def complete(
    call: PendingToolCall,
    output: str | ToolOutput,
    *,
    model_return: Sequence[ModelReturnPart] | None = None,
    duration_ms: int = 0,
) -> CompletedToolCall:
    """A completed call. A string output is a text success the model sees verbatim."""
    if isinstance(output, str):
        text = output
        output = ToolOutput.success(text)
        if model_return is None:
            model_return = (TextReturn(text=text),) if text else ()
    return CompletedToolCall(
        call_id=call.call_id,
        tool_name=call.tool_name,
        args=call.args,
        output=output,
        model_return=tuple(model_return or ()),
        duration_ms=duration_ms,
        replay=call.replay,
    )


def results_for(
    effect: ToolCalls, items: Sequence[str | ToolOutput | CompletedToolCall]
) -> ToolResults:
    """Results in call order; strings and outputs are completed against the calls."""
    assert len(items) == len(effect.calls), (items, effect.calls)
    out = [
        item if isinstance(item, CompletedToolCall) else complete(call, item)
        for call, item in zip(effect.calls, items, strict=True)
    ]
    return ToolResults(id=effect.id, results=tuple(out))


@dataclass(frozen=True)
class Inject:
    """Script item for a checkpoint: what to deliver."""

    messages: Sequence[InjectedMessage] = ()
    transient: Sequence[InjectedMessage] = ()
    causes: Sequence[TurnCause] = ()


# ---------------------------------------------------------------- the host


class ScriptedHost:
    """Drive a machine from scripts, recording every polled effect.

    Script items per kind (a callable item receives the effect and returns the
    response; ``HOLD`` leaves the effect unanswered):

    * ``llm``: ``LlmResponse`` or ``LlmCallError``; exhausted -> stop.
    * ``tools``: a sequence of ``str | ToolOutput | CompletedToolCall`` (one per
      call, in call order); exhausted -> stop.
    * ``checkpoints``: ``None`` (empty delivery) or ``Inject``; exhausted -> empty.
    * ``surfaces``: ``None`` (unchanged), an ``ExecutionSurface``, or a ``str``
      error; exhausted -> unchanged.
    * ``execs``: the ``ExecResult.result`` value; exhausted -> stop.

    With ``restore_with``, the machine is checkpointed, serialized and restored
    (with that config) right after every response.
    """

    def __init__(
        self,
        machine: TurnMachine,
        *,
        llm: Iterable[Any] = (),
        tools: Iterable[Any] = (),
        checkpoints: Iterable[Any] = (),
        surfaces: Iterable[Any] = (),
        execs: Iterable[Any] = (),
        restore_with: MachineConfig | None = None,
    ) -> None:
        self.machine = machine
        self.restore_with = restore_with
        self.llm = deque(llm)
        self.tools = deque(tools)
        self.checkpoints = deque(checkpoints)
        self.surfaces = deque(surfaces)
        self.execs = deque(execs)
        self.effects: list[Effect] = []
        self.waiting: Effect | None = None

    def run(self) -> list[Effect]:
        """Poll and answer until done or stuck; return the effects polled by this call."""
        polled: list[Effect] = []
        while True:
            effect = self.machine.poll()
            if effect is None:
                return polled
            polled.append(effect)
            self.effects.append(effect)
            if not isinstance(effect, REPLY_EFFECTS):
                continue
            response = self._answer(effect)
            if response is None:
                self.waiting = effect
                return polled
            self.waiting = None
            self.machine.respond(response)
            if self.restore_with is not None:
                self.machine = roundtrip(self.machine, self.restore_with)

    @property
    def requests(self) -> list[Any]:
        """The requests of every LlmCall polled so far."""
        return [e.request for e in self.effects if isinstance(e, LlmCall)]

    @property
    def done(self) -> Done:
        """The single Done effect polled so far."""
        dones = [e for e in self.effects if isinstance(e, Done)]
        assert len(dones) == 1, dones
        return dones[0]

    def _answer(self, effect: Any) -> Response | None:
        if isinstance(effect, SyncExecutionSurface):
            if not self.surfaces:
                return SurfaceSynced(id=effect.id)
            item = self.surfaces.popleft()
            if item is HOLD:
                return None
            if callable(item):
                return item(effect)  # type: ignore[no-any-return]
            if item is None:
                return SurfaceSynced(id=effect.id)
            if isinstance(item, str):
                return SurfaceSynced(id=effect.id, error=item)
            assert isinstance(item, ExecutionSurface)
            return SurfaceSynced(id=effect.id, surface=item)
        if isinstance(effect, LlmCall):
            if not self.llm:
                return None
            item = self.llm.popleft()
            if item is HOLD:
                return None
            if isinstance(item, LlmResponse):
                return LlmCompleted(id=effect.id, response=item)
            if isinstance(item, LlmCallError):
                return LlmFailed(id=effect.id, error=item)
            return item(effect)  # type: ignore[no-any-return]
        if isinstance(effect, ToolCalls):
            if not self.tools:
                return None
            item = self.tools.popleft()
            if item is HOLD:
                return None
            if callable(item):
                return item(effect)  # type: ignore[no-any-return]
            return results_for(effect, item)
        if isinstance(effect, ExecCode):
            if not self.execs:
                return None
            item = self.execs.popleft()
            if item is HOLD:
                return None
            if callable(item):
                return item(effect)  # type: ignore[no-any-return]
            return ExecResult(id=effect.id, result=item)
        assert isinstance(effect, Checkpoint)
        if not self.checkpoints:
            return CheckpointDelivered(id=effect.id)
        item = self.checkpoints.popleft()
        if item is HOLD:
            return None
        if callable(item):
            return item(effect)  # type: ignore[no-any-return]
        if item is None:
            return CheckpointDelivered(id=effect.id)
        assert isinstance(item, Inject)
        return CheckpointDelivered(
            id=effect.id,
            messages=tuple(item.messages),
            transient_messages=tuple(item.transient),
            turn_causes=tuple(item.causes),
        )


def drain(machine: TurnMachine) -> list[Effect]:
    """Poll until ``None`` without answering anything."""
    out: list[Effect] = []
    while (effect := machine.poll()) is not None:
        out.append(effect)
    return out


# ---------------------------------------------------------------- inspecting effects


def describe_outcome(outcome: TurnOutcome) -> str:
    """``finished:assistant_message``, ``stopped:max_turns``, ``agent_frame_switch``."""
    if isinstance(outcome, Finished):
        return f"finished:{outcome.result.__struct_config__.tag}"
    if isinstance(outcome, Stopped):
        return f"stopped:{outcome.reason.value}"
    assert isinstance(outcome, AgentFrameSwitch)
    return "agent_frame_switch"


def describe(effect: Effect) -> str:
    """A short, exact description of one effect."""
    if isinstance(effect, Emit):
        return f"Emit({effect.event.__struct_config__.tag})"
    if isinstance(effect, Progress):
        ids = ",".join(m.id for m in effect.delta)
        return f"Progress(iter={effect.iteration}, delta=[{ids}])"
    if isinstance(effect, Done):
        return f"Done({describe_outcome(effect.outcome)})"
    if isinstance(effect, SyncExecutionSurface):
        return f"SyncExecutionSurface#{effect.id}(refresh={effect.refresh})"
    if isinstance(effect, LlmCall):
        return f"LlmCall#{effect.id}"
    if isinstance(effect, ToolCalls):
        return f"ToolCalls#{effect.id}[{','.join(c.call_id for c in effect.calls)}]"
    if isinstance(effect, ExecCode):
        return f"ExecCode#{effect.id}"
    assert isinstance(effect, Checkpoint)
    return f"Checkpoint#{effect.id}({effect.kind.value})"


def trace(effects: Iterable[Effect]) -> list[str]:
    """``describe`` of each effect."""
    return [describe(e) for e in effects]


def events(effects: Iterable[Effect], kind: type[Any] | None = None) -> list[Any]:
    """The events of the ``Emit`` effects, optionally only those of one type."""
    return [
        e.event
        for e in effects
        if isinstance(e, Emit) and (kind is None or isinstance(e.event, kind))
    ]


def of_type(effects: Iterable[Effect], kind: type[Any]) -> list[Any]:
    """The effects of one type."""
    return [e for e in effects if isinstance(e, kind)]


def wire(effects: Iterable[Effect]) -> list[bytes]:
    """Canonical JSON of each effect."""
    return [codec.encode(e) for e in effects]


def snapshot(machine: TurnMachine) -> bytes:
    """Canonical bytes of the whole machine state."""
    return codec.encode(machine.checkpoint())


def roundtrip(machine: TurnMachine, config: MachineConfig) -> TurnMachine:
    """Checkpoint, serialize as a document, decode, and restore into a new machine."""
    blob = codec.encode_document("turn_checkpoint", machine.checkpoint())
    cp = codec.decode_document(blob, "turn_checkpoint", TurnCheckpoint)
    return TurnMachine.restore(config, cp)


def decoded_checkpoint(machine: TurnMachine) -> TurnCheckpoint:
    """The machine's checkpoint after a trip through its serialized document."""
    blob = codec.encode_document("turn_checkpoint", machine.checkpoint())
    return codec.decode_document(blob, "turn_checkpoint", TurnCheckpoint)


# ---------------------------------------------------------------- a driver built from functions


class FnDriver:
    """A protocol driver whose methods are plain functions (defaults below).

    * prepare: call the model with the projected request;
    * llm: finish with the reply text;
    * tools / exec: finish with an empty answer.

    Every call is recorded in ``calls`` as ``(method, payload)``.
    """

    def __init__(
        self,
        *,
        prepare: Callable[[Any], Sequence[DriverAction]] | None = None,
        llm: Callable[..., Sequence[DriverAction]] | None = None,
        tools: Callable[[Any, Sequence[CompletedToolCall]], Sequence[DriverAction]] | None = None,
        exec_: Callable[[Any, Any, ExecResult], Sequence[DriverAction]] | None = None,
    ) -> None:
        self._prepare = prepare
        self._llm = llm
        self._tools = tools
        self._exec = exec_
        self.calls: list[tuple[str, Any]] = []

    def prepare_iteration(self, ctx: Any) -> Sequence[DriverAction]:
        self.calls.append(("prepare", ctx.iteration))
        if self._prepare is not None:
            return self._prepare(ctx)
        return [StartLlm(request=ctx.project_request(use_tools=True))]

    def handle_llm_success(
        self,
        ctx: Any,
        request: Any,
        driver_state: Any,
        response: LlmResponse,
        text_streamed: bool,
    ) -> Sequence[DriverAction]:
        self.calls.append(("llm", driver_state))
        if self._llm is not None:
            return self._llm(ctx, request, driver_state, response, text_streamed)
        return [Finish(outcome=finished_text(response.full_text))]

    def handle_tool_results(
        self, ctx: Any, results: Sequence[CompletedToolCall]
    ) -> Sequence[DriverAction]:
        self.calls.append(("tools", tuple(r.call_id for r in results)))
        if self._tools is not None:
            return self._tools(ctx, results)
        return [Finish(outcome=finished_text(""))]

    def handle_exec_result(
        self, ctx: Any, driver_state: Any, result: ExecResult
    ) -> Sequence[DriverAction]:
        self.calls.append(("exec", driver_state))
        if self._exec is not None:
            return self._exec(ctx, driver_state, result)
        return [Finish(outcome=finished_text(""))]
