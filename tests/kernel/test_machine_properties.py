"""Property tests: random valid response sequences, invalid responses, checkpoint/restore."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash.kernel import codec
from lash.kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    Done,
    Effect,
    ExecResult,
    ExecutionSurface,
    LlmCall,
    LlmCompleted,
    LlmFailed,
    Response,
    SurfaceSynced,
    SyncExecutionSurface,
    ToolCalls,
    ToolResults,
)
from lash.kernel.errors import ProtocolError
from lash.kernel.llm import (
    LlmCallError,
    LlmResponse,
    LlmToolSpec,
    LlmUsage,
    ReasoningOutput,
    ReasoningReplay,
    TerminalReason,
    TextOutput,
    ToolCallOutput,
)
from lash.kernel.machine import MachineConfig, TurnCheckpoint, TurnMachine
from lash.kernel.messages import InjectedMessage, Role, TurnCause, user_message
from lash.kernel.protocols.standard import StandardDriver
from lash.kernel.tools.output import (
    CompletedToolCall,
    FailureClass,
    FinishTurn,
    SwitchAgentFrame,
    TextReturn,
    ToolFailure,
    ToolOutput,
)

MAX_REPLIES = 40

# ---------------------------------------------------------------- response strategies


def _llm_reply(draw: st.DrawFn, effect: LlmCall) -> Response:
    kind = draw(
        st.sampled_from(
            ["prose", "prose", "tools", "tools", "tools", "empty", "limit", "error", "reasoning"]
        )
    )
    usage = LlmUsage(input_tokens=draw(st.integers(0, 50)), output_tokens=draw(st.integers(0, 50)))
    if kind == "error":
        reason = draw(st.sampled_from([TerminalReason.PROVIDER_ERROR, TerminalReason.CANCELLED]))
        return LlmFailed(id=effect.id, error=LlmCallError(message="boom", terminal_reason=reason))
    if kind == "limit":
        reason = draw(
            st.sampled_from(
                [
                    TerminalReason.OUTPUT_LIMIT,
                    TerminalReason.CONTENT_FILTER,
                    TerminalReason.CANCELLED,
                ]
            )
        )
        return LlmCompleted(
            id=effect.id, response=LlmResponse(full_text="cut", terminal_reason=reason, usage=usage)
        )
    if kind == "empty":
        return LlmCompleted(
            id=effect.id, response=LlmResponse(terminal_reason=TerminalReason.STOP, usage=usage)
        )
    if kind == "reasoning":
        parts: tuple[Any, ...] = (
            ReasoningOutput(text="thinking", replay=ReasoningReplay(signature="sig")),
            TextOutput(text="answer"),
        )
        return LlmCompleted(
            id=effect.id,
            response=LlmResponse(parts=parts, terminal_reason=TerminalReason.STOP, usage=usage),
            text_streamed=draw(st.booleans()),
        )
    if kind == "prose":
        text = draw(st.text(min_size=1, max_size=12).filter(lambda s: s.strip()))
        return LlmCompleted(
            id=effect.id,
            response=LlmResponse(full_text=text, terminal_reason=TerminalReason.STOP, usage=usage),
        )
    n = draw(st.integers(1, 3))
    calls = tuple(
        ToolCallOutput(
            call_id=f"c{effect.id}_{i}",
            tool_name=draw(st.sampled_from(["add", "read", "finish", "switch"])),
            input_json=draw(st.sampled_from(['{"a":1}', "{}", "", "[1]", '{"a":'])),
        )
        for i in range(n)
    )
    return LlmCompleted(
        id=effect.id,
        response=LlmResponse(
            parts=(TextOutput(text="calling"), *calls),
            terminal_reason=TerminalReason.TOOL_USE,
            usage=usage,
        ),
    )


def _tool_output(draw: st.DrawFn, name: str) -> ToolOutput:
    kind = draw(st.sampled_from(["ok", "ok", "ok", "fail", "cancel"]))
    if kind == "fail":
        return ToolOutput.failure(
            ToolFailure(failure_class=FailureClass.EXECUTION, code="e", message="bad")
        )
    if kind == "cancel":
        return ToolOutput.cancelled()
    if name == "finish" and draw(st.booleans()):
        return ToolOutput.success("v", control=FinishTurn(value=1))
    if name == "switch" and draw(st.booleans()):
        return ToolOutput.success("v", control=SwitchAgentFrame(frame_id="f2"))
    return ToolOutput.success(draw(st.sampled_from(["", "3", "x" * 5])))


def _tool_reply(draw: st.DrawFn, effect: ToolCalls) -> Response:
    results = []
    for call in effect.calls:
        out = _tool_output(draw, call.tool_name)
        text = out.outcome.value if out.is_success else "[Tool execution failed]"  # type: ignore[union-attr]
        results.append(
            CompletedToolCall(
                call_id=call.call_id,
                tool_name=call.tool_name,
                args=call.args,
                output=out,
                model_return=(TextReturn(text=text),) if text else (),
            )
        )
    order = draw(st.permutations(results))
    return ToolResults(id=effect.id, results=tuple(order))


def _checkpoint_reply(draw: st.DrawFn, effect: Checkpoint) -> Response:
    kind = draw(st.sampled_from(["empty", "empty", "empty", "inject", "transient", "cause"]))
    if kind == "inject":
        return CheckpointDelivered(
            id=effect.id, messages=(InjectedMessage(role=Role.USER, content="more please"),)
        )
    if kind == "transient":
        return CheckpointDelivered(
            id=effect.id,
            transient_messages=(InjectedMessage(role=Role.SYSTEM, content="note"),),
        )
    if kind == "cause":
        return CheckpointDelivered(
            id=effect.id,
            turn_causes=(TurnCause(id=f"cause{effect.id}", event_type="wake", text="woke"),),
        )
    return CheckpointDelivered(id=effect.id)


def _surface_reply(draw: st.DrawFn, effect: SyncExecutionSurface) -> Response:
    kind = draw(st.sampled_from(["none", "none", "new", "error"]))
    if kind == "new":
        return SurfaceSynced(
            id=effect.id,
            surface=ExecutionSurface(
                system_prompt=f"prompt {effect.id}", tools=(LlmToolSpec(name="add"),)
            ),
        )
    if kind == "error":
        return SurfaceSynced(id=effect.id, error="registry offline")
    return SurfaceSynced(id=effect.id)


def reply_for(draw: st.DrawFn, effect: Effect) -> Response | None:
    """A random valid response to ``effect``, or None for fire-and-forget effects."""
    if isinstance(effect, LlmCall):
        return _llm_reply(draw, effect)
    if isinstance(effect, ToolCalls):
        return _tool_reply(draw, effect)
    if isinstance(effect, Checkpoint):
        return _checkpoint_reply(draw, effect)
    if isinstance(effect, SyncExecutionSurface):
        return _surface_reply(draw, effect)
    return None


# ---------------------------------------------------------------- driving


def make_config(draw: st.DrawFn, *, bounded: bool = False) -> MachineConfig:
    limits = st.integers(1, 4) if bounded else st.one_of(st.none(), st.integers(1, 4))
    return MachineConfig(
        driver=StandardDriver(),
        model="scripted",
        system_prompt="You are a test.",
        tools=(LlmToolSpec(name="add"), LlmToolSpec(name="read")),
        sync_execution_surface=draw(st.booleans()),
        max_turns=draw(limits),
        max_context_tokens=draw(st.one_of(st.none(), st.just(100))),
        message_ids=lambda n: f"t1.m{n}",
    )


def new_machine(config: MachineConfig) -> TurnMachine:
    history = [user_message("h0", "earlier")]
    return TurnMachine(config, history, inputs=[user_message("u1", "hello")])


Decide = Callable[[Effect], Response | None]


def run(machine: TurnMachine, decide: Decide, log: list[Effect]) -> None:
    """Drive to the end; ``decide`` answers reply effects. Every polled effect is logged."""
    replies = 0
    while True:
        effect = machine.poll()
        if effect is None:
            assert machine.is_done, "machine stalled without finishing"
            return
        log.append(effect)
        response = decide(effect)
        if response is not None:
            replies += 1
            if replies > MAX_REPLIES:
                machine.cancel("too long")
                continue
            machine.respond(response)


def wire(effects: list[Effect]) -> list[bytes]:
    return [codec.encode(e) for e in effects]


def restored(machine: TurnMachine, config: MachineConfig) -> TurnMachine:
    blob = codec.encode_document("turn_checkpoint", machine.checkpoint())
    return TurnMachine.restore(
        config, codec.decode_document(blob, "turn_checkpoint", TurnCheckpoint)
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- properties


@FAST
@given(st.data())
def test_random_valid_responses_end_in_exactly_one_done(data: st.DataObject) -> None:
    config = make_config(data.draw)
    machine = new_machine(config)
    log: list[Effect] = []
    run(machine, lambda e: reply_for(data.draw, e), log)
    dones = [e for e in log if isinstance(e, Done)]
    assert len(dones) == 1
    assert log[-1] is dones[0]
    assert machine.poll() is None
    assert dones[0].outcome == machine.outcome
    # Reply effect ids count 1, 2, 3, ... without gaps.
    ids = [e.id for e in log if hasattr(e, "id")]
    assert ids == list(range(1, len(ids) + 1))
    # The turn's added messages start with its input and the usage adds up.
    assert dones[0].added[0].id == "u1"
    assert [m.id for m in machine.messages] == ["h0"] + [m.id for m in dones[0].added]


@FAST
@given(st.data())
def test_same_responses_give_byte_identical_effects(data: st.DataObject) -> None:
    config = make_config(data.draw)
    script: list[Response | None] = []

    def record(effect: Effect) -> Response | None:
        r = reply_for(data.draw, effect)
        script.append(r)
        return r

    first: list[Effect] = []
    run(new_machine(config), record, first)
    replay = iter(script)
    second: list[Effect] = []
    run(new_machine(config), lambda _e: next(replay), second)
    assert wire(first) == wire(second)


def _bad_responses(effect: Effect, machine: TurnMachine) -> list[Response]:
    """Responses that must be rejected while ``effect`` is outstanding."""
    eid = getattr(effect, "id", 0)
    bad: list[Response] = [
        CheckpointDelivered(id=eid + 100),
        LlmFailed(id=eid + 1, error=LlmCallError(message="late")),
        ExecResult(id=eid),
    ]
    if not isinstance(effect, SyncExecutionSurface):
        bad.append(SurfaceSynced(id=eid))
    if not isinstance(effect, LlmCall):
        bad.append(LlmCompleted(id=eid, response=LlmResponse(full_text="x")))
    if not isinstance(effect, ToolCalls):
        bad.append(ToolResults(id=eid, results=()))
    else:
        calls = effect.calls
        ok = ToolOutput.success("1")
        bad.append(ToolResults(id=eid, results=()))  # missing results
        first = CompletedToolCall(
            call_id=calls[0].call_id, tool_name=calls[0].tool_name, args={}, output=ok
        )
        bad.append(ToolResults(id=eid, results=(first, first)))  # duplicate
        wrong = CompletedToolCall(call_id=calls[0].call_id, tool_name="other", args={}, output=ok)
        bad.append(ToolResults(id=eid, results=(wrong,)))
    if isinstance(effect, Checkpoint):
        bad.append(
            CheckpointDelivered(
                id=eid, messages=(InjectedMessage(role=Role.ASSISTANT, content="no"),)
            )
        )
    return bad


@FAST
@given(st.data())
def test_invalid_responses_raise_and_change_nothing(data: st.DataObject) -> None:
    config = make_config(data.draw)
    machine = new_machine(config)
    log: list[Effect] = []
    checked = 0

    def decide(effect: Effect) -> Response | None:
        nonlocal checked
        if hasattr(effect, "id"):
            for bad in _bad_responses(effect, machine):
                before = codec.encode(machine.checkpoint())
                with pytest.raises(ProtocolError):
                    machine.respond(bad)
                assert codec.encode(machine.checkpoint()) == before
                checked += 1
        return reply_for(data.draw, effect)

    run(machine, decide, log)
    assert checked > 0
    # After the end, every response is rejected too.
    before = codec.encode(machine.checkpoint())
    with pytest.raises(ProtocolError, match="ended"):
        machine.respond(CheckpointDelivered(id=1))
    assert codec.encode(machine.checkpoint()) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_checkpoint_restore_at_every_point_yields_the_same_remaining_stream(
    data: st.DataObject,
) -> None:
    config = make_config(data.draw, bounded=True)
    script: list[Response | None] = []

    def record(effect: Effect) -> Response | None:
        r = reply_for(data.draw, effect)
        script.append(r)
        return r

    reference: list[Effect] = []
    run(new_machine(config), record, reference)
    expected = wire(reference)

    for cut in range(len(reference) + 1):
        machine = new_machine(config)
        answers = iter(script)
        seen: list[Effect] = []
        # Poll and answer the first `cut` effects; the answer to effect `cut - 1`
        # is held back, so some cuts land while a reply effect is outstanding.
        for i in range(cut):
            effect = machine.poll()
            assert effect is not None
            seen.append(effect)
            response = next(answers)
            if response is not None and i < cut - 1:
                machine.respond(response)
        pending = script[cut - 1] if cut else None
        resumed = restored(machine, config)
        rest: list[Effect] = []
        if pending is not None:
            # The outstanding effect is re-issued with the same id and payload.
            again = resumed.poll()
            assert again is not None
            assert codec.encode(again) == expected[cut - 1]
            resumed.respond(pending)
        remaining = iter(script[cut:])
        run(resumed, lambda _e, it=remaining: next(it), rest)
        assert wire(seen) + wire(rest) == expected, f"diverged after cut {cut}"
