"""TurnMachine: effects, responses, checkpoints (reference kernel.md §1, §2, §8 sansio/tests.rs).

Our deliberate departures from the reference are pinned here, not the
reference behaviour: reply effects come after the queued fire-and-forget
effects, Progress/Done carry message deltas, bad responses raise
``ProtocolError`` and change nothing, and broken drivers raise
``DriverContractError``.
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

import pytest
from scripted import (
    HOLD,
    FnDriver,
    Inject,
    ScriptedHost,
    complete,
    decoded_checkpoint,
    describe,
    drain,
    events,
    of_type,
    reply,
    roundtrip,
    snapshot,
    tool_call,
    trace,
    wire,
)

from lash.kernel import codec
from lash.kernel.attachments import AttachmentRef
from lash.kernel.driver import (
    AdvanceIteration,
    AppendMessages,
    ContinueIteration,
    EmitEvent,
    Finish,
    FinishWith,
    StartCheckpoint,
    StartExec,
    StartLlm,
    StartTools,
)
from lash.kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    Done,
    Emit,
    ExecCode,
    ExecResult,
    ExecutionSurface,
    LlmCall,
    LlmCompleted,
    Progress,
    SurfaceSynced,
    SyncExecutionSurface,
    ToolCalls,
    ToolResults,
)
from lash.kernel.errors import CodecError, DriverContractError, ProtocolError
from lash.kernel.events import (
    ErrorEnvelope,
    ErrorReported,
    LlmRequestStarted,
    LlmResponded,
    TextDelta,
    TokenUsageReported,
    ToolCallFinished,
)
from lash.kernel.llm import (
    ImageBlock,
    LlmCallError,
    LlmRole,
    LlmToolSpec,
    LlmUsage,
    ProviderReplayMeta,
    ReasoningOutput,
    TerminalReason,
    TextBlock,
    TextOutput,
    ToolResultBlock,
)
from lash.kernel.machine import (
    Ended,
    MachineConfig,
    PrepareIteration,
    Preparing,
    TurnCheckpoint,
    TurnMachine,
    WaitingCheckpoint,
    WaitingExec,
    WaitingLlm,
    WaitingTools,
    default_turn_limit_message,
)
from lash.kernel.messages import (
    CheckpointKind,
    InjectedMessage,
    Message,
    Part,
    PartKind,
    PluginOrigin,
    ProcessOrigin,
    Role,
    TurnCause,
    user_message,
)
from lash.kernel.outcome import (
    AgentFrameSwitch,
    Stopped,
    StopReason,
    finished_text,
)
from lash.kernel.protocols.standard import StandardDriver
from lash.kernel.render import TURN_EVENTS_HEADER
from lash.kernel.tools.output import (
    FailureClass,
    PendingToolCall,
    TextReturn,
    ToolFailure,
    ToolOutput,
)

USER = user_message("u0", "hi")
HISTORY = user_message("h0", "earlier")
READ = LlmToolSpec(name="read", description="Read a file.", input_schema={"type": "object"})
WRITE = LlmToolSpec(name="write", description="Write a file.", input_schema={"type": "object"})
IMAGE = AttachmentRef(id="a" * 64, mime="image/png", byte_len=3)


def usage(i: int = 0, o: int = 0, cached: int = 0) -> LlmUsage:
    return LlmUsage(input_tokens=i, output_tokens=o, cached_input_tokens=cached)


def config(driver: object | None = None, **kw: object) -> MachineConfig:
    return MachineConfig(driver=driver or StandardDriver(), model="test-model", **kw)  # type: ignore[arg-type]


def machine(cfg: MachineConfig, **kw: object) -> TurnMachine:
    kw.setdefault("inputs", [USER])
    return TurnMachine(cfg, **kw)  # type: ignore[arg-type]


def texts(msg: object) -> list[str]:
    return [b.text for b in msg.blocks if isinstance(b, TextBlock)]  # type: ignore[attr-defined]


# ================================================================ §1.10 worked trace


def test_worked_trace_sync_on_one_tool_round_then_prose() -> None:
    """§1.10, with our ordering: queued emits and Progress come before the reply effect."""
    cfg = config(sync_execution_surface=True, system_prompt="You help.", tools=(READ,))
    m = machine(cfg)

    # 1: initial surface sync (host only, refresh=False)
    assert trace(drain(m)) == ["SyncExecutionSurface#1(refresh=False)"]
    m.respond(SurfaceSynced(id=1))

    # 2: LlmRequestStarted precedes the call
    step2 = drain(m)
    assert trace(step2) == ["Emit(llm_request)", "LlmCall#2"]
    assert step2[0].event == LlmRequestStarted(iteration=0, message_count=2, tool_names=("read",))
    first = reply(
        "Let me look.", calls=[tool_call("c1", "read", {"path": "a.txt"})], usage=usage(10, 5)
    )
    m.respond(LlmCompleted(id=2, response=first))

    # 3: usage, text, response, Progress (with the unanswered call), then ToolCalls
    step3 = drain(m)
    assert trace(step3) == [
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "ToolCalls#3[c1]",
    ]
    assert step3[0].event == TokenUsageReported(
        iteration=0, usage=usage(10, 5), cumulative=usage(10, 5)
    )
    assert step3[1].event == TextDelta(content="Let me look.")
    assert step3[2].event == LlmResponded(iteration=0, content="Let me look.")
    assistant = step3[3].delta[1]
    assert assistant == Message(
        id="m0",
        role=Role.ASSISTANT,
        parts=(
            Part(id="m0.p0", kind=PartKind.PROSE, content="Let me look."),
            Part(
                id="m0.p1",
                kind=PartKind.TOOL_CALL,
                content='{"path":"a.txt"}',
                tool_call_id="c1",
                tool_name="read",
            ),
        ),
    )
    assert step3[4].calls == (
        PendingToolCall(
            call_id="c1", tool_name="read", args={"path": "a.txt"}, input_json='{"path":"a.txt"}'
        ),
    )
    m.respond(results_ok(step3[4], "AAA"))

    # 4: tool events, Progress at the advanced iteration, AfterWork checkpoint
    step4 = drain(m)
    assert trace(step4) == [
        "Emit(tool_call)",
        "Progress(iter=1, delta=[m1])",
        "Checkpoint#4(after_work)",
    ]
    assert step4[1].delta[0].parts == (
        Part(
            id="m1.p0",
            kind=PartKind.TOOL_RESULT,
            content="AAA",
            tool_call_id="c1",
            tool_name="read",
        ),
    )
    m.respond(CheckpointDelivered(id=4))

    # 5: refresh sync before the next iteration
    assert trace(drain(m)) == ["SyncExecutionSurface#5(refresh=True)"]
    m.respond(SurfaceSynced(id=5))

    # 6
    step6 = drain(m)
    assert trace(step6) == ["Emit(llm_request)", "LlmCall#6"]
    assert step6[0].event == LlmRequestStarted(iteration=1, message_count=4, tool_names=("read",))
    m.respond(LlmCompleted(id=6, response=reply("It says AAA.", usage=usage(20, 3))))

    # 7: the final answer is appended (departure 5) and reported before the checkpoint
    step7 = drain(m)
    assert trace(step7) == [
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m2])",
        "Checkpoint#7(before_completion)",
    ]
    assert step7[0].event.cumulative == usage(30, 8)
    m.respond(CheckpointDelivered(id=7))

    # 8: Done is the single end marker
    step8 = drain(m)
    assert trace(step8) == ["Done(finished:assistant_message)"]
    done = step8[0]
    assert done.outcome == finished_text("It says AAA.")
    assert [x.id for x in done.added] == ["u0", "m0", "m1", "m2"]
    assert done.delta == ()
    assert done.iteration == 1
    assert done.usage == usage(30, 8)
    assert m.is_done
    assert m.outcome == done.outcome
    assert m.poll() is None


def results_ok(effect: ToolCalls, *texts_: str) -> ToolResults:
    return ToolResults(
        id=effect.id,
        results=tuple(complete(c, t) for c, t in zip(effect.calls, texts_, strict=True)),
    )


# ================================================================ ordering (departure 1)


def test_reply_effect_comes_after_every_queued_effect_of_its_batch() -> None:
    calls = (PendingToolCall(call_id="c1", tool_name="read", args={}),)

    def prepare(ctx: object) -> list[object]:
        return [
            EmitEvent(event=TextDelta(content="a")),
            StartTools(calls=calls),
            AppendMessages(messages=(user_message("x1", "x"),)),
            EmitEvent(event=TextDelta(content="b")),
        ]

    m = machine(config(FnDriver(prepare=prepare)))
    polled = drain(m)
    assert trace(polled) == [
        "Emit(text_delta)",
        "Emit(text_delta)",
        "Progress(iter=0, delta=[u0,x1])",
        "ToolCalls#1[c1]",
    ]
    assert [e.event.content for e in polled[:2]] == ["a", "b"]
    assert m.poll() is None


def test_llm_request_started_precedes_each_llm_call() -> None:
    m = machine(config(tools=(READ, WRITE)))
    host = ScriptedHost(
        m,
        llm=[
            reply(calls=[tool_call("c1", "read")]),
            reply(calls=[tool_call("c2", "write")]),
            reply("ok"),
        ],
        tools=[["r"], ["w"]],
    )
    host.run()
    stream = trace(host.effects)
    call_positions = [i for i, d in enumerate(stream) if d.startswith("LlmCall#")]
    assert len(call_positions) == 3
    for i in call_positions:
        assert stream[i - 1] == "Emit(llm_request)"
    started = events(host.effects, LlmRequestStarted)
    assert [(s.iteration, s.message_count, s.tool_names) for s in started] == [
        (0, 1, ("read", "write")),
        (1, 3, ("read", "write")),
        (2, 5, ("read", "write")),
    ]


def test_poll_issues_the_outstanding_effect_once() -> None:
    m = machine(config())
    assert trace(drain(m)) == ["Emit(llm_request)", "LlmCall#1"]
    assert m.poll() is None
    assert m.poll() is None
    assert isinstance(m.outstanding, LlmCall)
    assert m.outstanding.id == 1


def test_effect_ids_count_from_one_per_machine_without_gaps() -> None:
    for _ in range(2):
        m = machine(config(sync_execution_surface=True, tools=(READ,)))
        host = ScriptedHost(
            m, llm=[reply(calls=[tool_call("c1", "read")]), reply("done")], tools=[["x"]]
        )
        host.run()
        ids = [e.id for e in host.effects if hasattr(e, "id")]
        assert ids == [1, 2, 3, 4, 5, 6, 7]


# ================================================================ Progress / Done (departure 2)


def _stepper(*steps: object) -> FnDriver:
    """A driver whose n-th prepare_iteration returns steps[n](ctx)."""
    it = iter(steps)
    return FnDriver(prepare=lambda ctx: next(it)(ctx))  # type: ignore[operator]


def _note(mid: str, text: str) -> Message:
    return Message(
        id=mid, role=Role.SYSTEM, parts=(Part(id=f"{mid}.p0", kind=PartKind.TEXT, content=text),)
    )


def test_progress_emits_only_new_event_delta() -> None:
    """progress_emits_only_new_event_delta: each Progress carries only what is new."""
    drv = _stepper(
        lambda ctx: [
            AppendMessages(messages=(_note(ctx.new_message_id(), "a"),)),
            AdvanceIteration(),
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
        ],
        lambda ctx: [
            AppendMessages(messages=(_note(ctx.new_message_id(), "b"),)),
            AdvanceIteration(),
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
        ],
        lambda ctx: [Finish(outcome=finished_text("end"))],
    )
    m = TurnMachine(config(drv), [HISTORY], inputs=[USER])
    host = ScriptedHost(m)
    host.run()
    assert trace(host.effects) == [
        "Progress(iter=1, delta=[u0,m0])",
        "Checkpoint#1(after_work)",
        "Progress(iter=2, delta=[m1])",
        "Checkpoint#2(after_work)",
        "Done(finished:assistant_message)",
    ]
    done = host.done
    assert [x.id for x in done.added] == ["u0", "m0", "m1"]
    assert done.delta == ()
    assert done.iteration == 2
    assert [x.id for x in m.messages] == ["h0", "u0", "m0", "m1"]


def test_progress_without_new_events_emits_empty_delta() -> None:
    drv = _stepper(
        lambda ctx: [
            AppendMessages(messages=(_note(ctx.new_message_id(), "a"),)),
            AdvanceIteration(),
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
        ],
        lambda ctx: [
            AdvanceIteration(),
            StartCheckpoint(
                kind=CheckpointKind.AFTER_WORK, on_empty=FinishWith(outcome=finished_text("x"))
            ),
        ],
    )
    host = ScriptedHost(machine(config(drv)))
    host.run()
    assert trace(host.effects) == [
        "Progress(iter=1, delta=[u0,m0])",
        "Checkpoint#1(after_work)",
        "Progress(iter=2, delta=[])",
        "Checkpoint#2(after_work)",
        "Done(finished:assistant_message)",
    ]
    empty = host.effects[2]
    assert isinstance(empty, Progress)
    assert empty.delta == ()


def test_done_carries_unreported_final_delta() -> None:
    """Messages no Progress reported yet (here: the inputs) arrive in Done.delta."""
    m = TurnMachine(
        config(FnDriver(prepare=lambda ctx: [Finish(outcome=finished_text("now"))])),
        [HISTORY],
        inputs=[USER],
    )
    polled = drain(m)
    assert trace(polled) == ["Done(finished:assistant_message)"]
    assert polled[0].delta == (USER,)
    assert polled[0].added == (USER,)


def test_finish_after_appending_flushes_a_progress_first() -> None:
    drv = FnDriver(
        prepare=lambda ctx: [
            AppendMessages(messages=(_note(ctx.new_message_id(), "a"),)),
            Finish(outcome=finished_text("x")),
            AppendMessages(messages=(_note("dropped", "b"),)),  # after Finish: dropped
        ]
    )
    m = machine(config(drv))
    polled = drain(m)
    assert trace(polled) == ["Progress(iter=0, delta=[u0,m0])", "Done(finished:assistant_message)"]
    assert polled[1].delta == ()
    assert [x.id for x in polled[1].added] == ["u0", "m0"]
    assert [x.id for x in m.messages] == ["u0", "m0"]


def test_done_is_emitted_exactly_once_and_last() -> None:
    m = machine(config(tools=(READ,)))
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")]), reply("ok")], tools=[["x"]])
    host.run()
    assert sum(isinstance(e, Done) for e in host.effects) == 1
    assert isinstance(host.effects[-1], Done)
    # no lifecycle events duplicate the end marker
    tags = {e.event.__struct_config__.tag for e in of_type(host.effects, Emit)}
    assert tags == {"llm_request", "token_usage", "text_delta", "llm_response", "tool_call"}
    assert m.poll() is None
    assert m.finish(finished_text("again")) is False
    assert m.poll() is None


def test_usage_is_summed_over_the_turn() -> None:
    m = machine(config(tools=(READ,)))
    host = ScriptedHost(
        m,
        llm=[
            reply(
                calls=[tool_call("c1", "read")], usage=LlmUsage(input_tokens=3, reasoning_tokens=2)
            ),
            reply("ok", usage=usage(4, 5, cached=1)),
        ],
        tools=[["x"]],
    )
    host.run()
    reported = events(host.effects, TokenUsageReported)
    assert [(r.iteration, r.cumulative) for r in reported] == [
        (0, LlmUsage(input_tokens=3, reasoning_tokens=2)),
        (
            1,
            LlmUsage(input_tokens=7, output_tokens=5, cached_input_tokens=1, reasoning_tokens=2),
        ),
    ]
    assert host.done.usage == reported[-1].cumulative
    assert m.usage == reported[-1].cumulative
    assert m.usage.total == 14


# ================================================================ ProtocolError (departure 3)


def test_respond_before_any_effect_raises() -> None:
    m = machine(config())
    before = snapshot(m)
    with pytest.raises(
        ProtocolError, match=re.escape("no effect is waiting; got LlmCompleted for effect #1")
    ):
        m.respond(LlmCompleted(id=1, response=reply("x")))
    assert snapshot(m) == before
    assert isinstance(m.state, Preparing)


def test_wrong_effect_id_raises_and_changes_nothing() -> None:
    m = machine(config())
    drain(m)
    before = snapshot(m)
    with pytest.raises(ProtocolError) as err:
        m.respond(LlmCompleted(id=2, response=reply("x")))
    assert str(err.value) == (
        "expected LlmCompleted or LlmFailed for LlmCall #1; got LlmCompleted for effect #2"
    )
    assert snapshot(m) == before
    assert m.poll() is None
    # the right response is still accepted
    m.respond(LlmCompleted(id=1, response=reply("x")))
    assert trace(drain(m))[-1] == "Checkpoint#2(before_completion)"


@pytest.mark.parametrize(
    "bad",
    [
        ToolResults(id=1, results=()),
        CheckpointDelivered(id=1),
        SurfaceSynced(id=1),
        ExecResult(id=1),
    ],
    ids=lambda r: type(r).__name__,
)
def test_wrong_response_kind_raises_and_changes_nothing(bad: object) -> None:
    m = machine(config())
    drain(m)
    before = snapshot(m)
    with pytest.raises(ProtocolError) as err:
        m.respond(bad)  # type: ignore[arg-type]
    assert str(err.value) == (
        f"expected LlmCompleted or LlmFailed for LlmCall #1; got {type(bad).__name__} for effect #1"
    )
    assert snapshot(m) == before


@pytest.mark.parametrize(
    "bad", ["LlmCompleted", {"type": "llm_completed", "id": 1}, None, 42], ids=repr
)
def test_objects_that_are_not_responses_raise_and_change_nothing(bad: object) -> None:
    m = machine(config())
    drain(m)
    before = snapshot(m)
    with pytest.raises(
        ProtocolError, match=r"^expected LlmCompleted or LlmFailed for LlmCall #1; got "
    ):
        m.respond(bad)  # type: ignore[arg-type]
    assert snapshot(m) == before


def test_response_after_the_turn_ended_raises() -> None:
    m = machine(config())
    ScriptedHost(m, llm=[reply("hello")]).run()
    assert m.is_done
    before = snapshot(m)
    with pytest.raises(
        ProtocolError,
        match=re.escape("the turn has ended; got CheckpointDelivered for effect #2"),
    ):
        m.respond(CheckpointDelivered(id=2))
    assert snapshot(m) == before


def _at_tool_batch(*calls: tuple[str, str]) -> tuple[TurnMachine, ToolCalls]:
    m = machine(config(tools=(READ, WRITE)))
    host = ScriptedHost(
        m, llm=[reply(calls=[tool_call(cid, name, {"n": cid}) for cid, name in calls])]
    )
    host.run()
    effect = host.waiting
    assert isinstance(effect, ToolCalls)
    return m, effect


def _result(call_id: str, name: str, text: str = "ok") -> object:
    return complete(PendingToolCall(call_id=call_id, tool_name=name, args={}), text)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (
            [("c1", "read"), ("c1", "read"), ("c2", "write")],
            "ToolResults #2: results[1] repeats call id 'c1'",
        ),
        ([("c1", "read")], "ToolResults #2: no result for call 'c2' (write)"),
        (
            [("c1", "write"), ("c2", "write")],
            "ToolResults #2: call 'c1' is 'read', but its result names 'write'",
        ),
        (
            [("c1", "read"), ("c2", "write"), ("zz", "read")],
            "ToolResults #2: results for unknown calls 'zz'",
        ),
        ([], "ToolResults #2: no result for call 'c1' (read)"),
    ],
    ids=["duplicate", "missing", "wrong-tool-name", "unknown", "empty"],
)
def test_tool_results_must_answer_exactly_the_batch(
    results: list[tuple[str, str]], message: str
) -> None:
    m, effect = _at_tool_batch(("c1", "read"), ("c2", "write"))
    before = snapshot(m)
    with pytest.raises(ProtocolError) as err:
        m.respond(ToolResults(id=effect.id, results=tuple(_result(c, n) for c, n in results)))  # type: ignore[misc]
    assert str(err.value) == message
    assert snapshot(m) == before
    assert m.poll() is None


def test_tool_results_in_any_order_are_reordered_to_call_order() -> None:
    m, effect = _at_tool_batch(("c1", "read"), ("c2", "write"), ("c3", "read"))
    m.respond(
        ToolResults(
            id=effect.id,
            results=(
                _result("c3", "read", "three"),
                _result("c1", "read", "one"),
                _result("c2", "write", "two"),
            ),  # type: ignore[arg-type]
        )
    )
    polled = drain(m)
    assert [e.call_id for e in events(polled, ToolCallFinished)] == ["c1", "c2", "c3"]
    progress = of_type(polled, Progress)[0]
    parts = progress.delta[0].parts
    assert [(p.tool_call_id, p.content) for p in parts] == [
        ("c1", "one"),
        ("c2", "two"),
        ("c3", "three"),
    ]


@pytest.mark.parametrize(
    ("field", "role", "message"),
    [
        (
            "messages",
            Role.ASSISTANT,
            "Checkpoint #2: messages[1] has role assistant; "
            "only user and system messages can be injected",
        ),
        (
            "transient_messages",
            Role.EVENT,
            "Checkpoint #2: transient_messages[1] has role event; "
            "only user and system messages can be injected",
        ),
    ],
)
def test_injecting_assistant_or_event_messages_raises(field: str, role: Role, message: str) -> None:
    m = machine(config())
    host = ScriptedHost(m, llm=[reply("answer")], checkpoints=[HOLD])
    host.run()
    assert describe(host.waiting) == "Checkpoint#2(before_completion)"  # type: ignore[arg-type]
    before = snapshot(m)
    bad = CheckpointDelivered(
        id=2,
        **{
            field: (
                InjectedMessage(role=Role.USER, content="fine"),
                InjectedMessage(role=role, content="not allowed"),
            )
        },
    )
    with pytest.raises(ProtocolError) as err:
        m.respond(bad)
    assert str(err.value) == message
    assert snapshot(m) == before
    # the checkpoint can still be answered properly
    m.respond(CheckpointDelivered(id=2))
    assert trace(drain(m)) == ["Done(finished:assistant_message)"]


# ======================================================= model replies with terminal reasons


def test_output_limit_stops_as_incomplete_without_assistant_message() -> None:
    m = machine(config())
    host = ScriptedHost(
        m, llm=[reply("partial ans", reason=TerminalReason.OUTPUT_LIMIT, usage=usage(7, 9))]
    )
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Emit(error)",
        "Done(stopped:incomplete)",
    ]
    emitted = events(host.effects)
    assert emitted[2] == TextDelta(content="partial ans")
    assert emitted[3] == LlmResponded(iteration=0, content="partial ans")
    message = "Model call ended with terminal reason output_limit."
    assert emitted[4] == ErrorReported(
        message=message,
        envelope=ErrorEnvelope(
            kind="llm_provider",
            user_message=message,
            code="output_limit",
            terminal_reason=TerminalReason.OUTPUT_LIMIT,
        ),
    )
    done = host.done
    assert done.outcome == Stopped(reason=StopReason.INCOMPLETE, message=message)
    assert done.added == (USER,)
    assert done.delta == (USER,)
    assert done.usage == usage(7, 9)
    assert m.messages == (USER,)


def test_terminal_reply_streamed_text_is_not_repeated_and_diagnostic_is_used() -> None:
    m = machine(config())
    drain(m)
    m.respond(
        LlmCompleted(
            id=1,
            response=reply(
                "cut", reason=TerminalReason.CONTENT_FILTER, diagnostic="Blocked by policy."
            ),
            text_streamed=True,
        )
    )
    polled = drain(m)
    assert trace(polled) == [
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Emit(error)",
        "Done(stopped:provider_error)",
    ]
    err = polled[2].event
    assert err.message == "Blocked by policy."
    assert err.envelope.code == "content_filter"
    assert polled[3].outcome == Stopped(
        reason=StopReason.PROVIDER_ERROR, message="Blocked by policy."
    )


@pytest.mark.parametrize(
    ("reason", "stop"),
    [
        (TerminalReason.CONTEXT_OVERFLOW, StopReason.PROVIDER_ERROR),
        (TerminalReason.CONTENT_FILTER, StopReason.PROVIDER_ERROR),
        (TerminalReason.PROVIDER_ERROR, StopReason.PROVIDER_ERROR),
        (TerminalReason.CANCELLED, StopReason.CANCELLED),
        (TerminalReason.OUTPUT_LIMIT, StopReason.INCOMPLETE),
    ],
)
def test_terminal_reasons_map_to_stops(reason: TerminalReason, stop: StopReason) -> None:
    """context_overflow_response_stops_as_provider_error, and the rest of the table."""
    host = ScriptedHost(machine(config()), llm=[reply("", reason=reason)])
    host.run()
    assert host.done.outcome == Stopped(
        reason=stop, message=f"Model call ended with terminal reason {reason.value}."
    )
    assert [e.envelope.code for e in events(host.effects, ErrorReported)] == [reason.value]
    # an empty text emits no TextDelta
    assert events(host.effects, TextDelta) == []


def test_context_overflow_response_stops_as_provider_error() -> None:
    host = ScriptedHost(
        machine(config()),
        llm=[reply("", reason=TerminalReason.CONTEXT_OVERFLOW, diagnostic="Prompt too long.")],
    )
    host.run()
    assert trace(host.effects)[2:] == [
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Emit(error)",
        "Done(stopped:provider_error)",
    ]
    (err,) = events(host.effects, ErrorReported)
    assert err.envelope == ErrorEnvelope(
        kind="llm_provider",
        user_message="Prompt too long.",
        code="context_overflow",
        terminal_reason=TerminalReason.CONTEXT_OVERFLOW,
    )
    assert host.done.outcome == Stopped(
        reason=StopReason.PROVIDER_ERROR, message="Prompt too long."
    )


@pytest.mark.parametrize(
    ("limit", "used", "expected"),
    [
        (1000, usage(960, 0, cached=900), "context_overflow"),
        (1000, usage(950, 0), "context_overflow"),
        (1000, usage(900, 0, cached=50), "output_limit"),  # cached is part of input, not extra
        (1000, usage(949, 0), "output_limit"),
        (1000, usage(990, 1), "output_limit"),
        (None, usage(990, 0), "output_limit"),
    ],
)
def test_output_limit_near_context_window_is_refined_to_context_overflow(
    limit: int | None, used: LlmUsage, expected: str
) -> None:
    host = ScriptedHost(
        machine(config(max_context_tokens=limit)),
        llm=[reply("", reason=TerminalReason.OUTPUT_LIMIT, usage=used)],
    )
    host.run()
    (err,) = events(host.effects, ErrorReported)
    assert err.envelope.code == expected
    if expected == "context_overflow":
        text = "The prompt filled the model's context window; no output tokens were produced."
        assert err.message == text
        assert err.envelope.terminal_reason is TerminalReason.CONTEXT_OVERFLOW
        assert host.done.outcome == Stopped(reason=StopReason.PROVIDER_ERROR, message=text)
    else:
        assert host.done.outcome.reason is StopReason.INCOMPLETE


@pytest.mark.parametrize(
    ("reason", "stop"),
    [
        (TerminalReason.CANCELLED, StopReason.CANCELLED),
        (TerminalReason.PROVIDER_ERROR, StopReason.PROVIDER_ERROR),
        (TerminalReason.CONTEXT_OVERFLOW, StopReason.PROVIDER_ERROR),
        (TerminalReason.UNKNOWN, StopReason.PROVIDER_ERROR),
    ],
)
def test_llm_failed_maps_cancelled_to_cancelled_and_others_to_provider_error(
    reason: TerminalReason, stop: StopReason
) -> None:
    """Departure 4 (the reference maps every LlmCallError to provider_error)."""
    m = machine(config())
    host = ScriptedHost(
        m,
        llm=[
            LlmCallError(
                message="rate limited",
                code="http_429",
                raw='  {"error": 1}\n',
                terminal_reason=reason,
            )
        ],
    )
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(error)",
        f"Done(stopped:{stop.value})",
    ]
    (err,) = events(host.effects, ErrorReported)
    assert err == ErrorReported(
        message="LLM error: rate limited",
        envelope=ErrorEnvelope(
            kind="llm_provider",
            user_message="LLM error: rate limited",
            code="http_429",
            terminal_reason=reason,
            raw='{"error": 1}',
        ),
    )
    assert host.done.outcome == Stopped(reason=stop, message="rate limited")
    assert host.done.added == (USER,)


# ---------------------------------------------------------------- oversized replies (departure 8)


def test_oversized_reply_stops_as_provider_error() -> None:
    m = machine(config(max_response_chars=10))
    host = ScriptedHost(m, llm=[reply(parts=[TextOutput(text="x" * 11)], usage=usage(1, 2))])
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(error)",
        "Done(stopped:provider_error)",
    ]
    message = "Model reply of 11 characters exceeds the limit of 10."
    (err,) = events(host.effects, ErrorReported)
    assert err.message == message
    assert err.envelope == ErrorEnvelope(
        kind="llm_provider", user_message=message, code="oversized_response"
    )
    assert host.done.outcome == Stopped(reason=StopReason.PROVIDER_ERROR, message=message)
    assert host.done.usage == usage(1, 2)
    assert m.messages == (USER,)


@pytest.mark.parametrize(
    "parts",
    [
        [ReasoningOutput(text="r" * 11)],
        [tool_call("c1", "read", "x" * 11)],
        [TextOutput(text="x" * 5), ReasoningOutput(text="r" * 6)],
    ],
    ids=["reasoning", "tool-args", "text+reasoning"],
)
def test_oversized_counts_reasoning_and_tool_arguments(parts: list[object]) -> None:
    host = ScriptedHost(machine(config(max_response_chars=10)), llm=[reply(parts=parts)])  # type: ignore[arg-type]
    host.run()
    assert [e.envelope.code for e in events(host.effects, ErrorReported)] == ["oversized_response"]


def test_reply_at_the_size_limit_is_accepted() -> None:
    host = ScriptedHost(
        machine(config(max_response_chars=10)), llm=[reply(parts=[TextOutput(text="x" * 10)])]
    )
    host.run()
    assert host.done.outcome == finished_text("x" * 10)


def test_oversized_limit_counts_reply_text_once() -> None:
    """Providers report the text in ``full_text`` *and* in its text parts; it is one text.

    A 10-character answer, reported the usual way, fits a 10-character limit.
    """
    host = ScriptedHost(machine(config(max_response_chars=10)), llm=[reply("abcdefghij")])
    host.run()
    assert events(host.effects, ErrorReported) == []
    assert host.done.outcome == finished_text("abcdefghij")


def test_oversized_message_reports_the_reply_length() -> None:
    host = ScriptedHost(machine(config(max_response_chars=10)), llm=[reply("abcdefghijk")])
    host.run()
    (err,) = events(host.effects, ErrorReported)
    assert err.message == "Model reply of 11 characters exceeds the limit of 10."


def test_config_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_turns must be >= 1, got 0"):
        config(max_turns=0)
    with pytest.raises(ValueError, match="max_response_chars must be >= 1"):
        config(max_response_chars=0)


# ================================================================ execution surface sync


def test_initial_execution_surface_sync_is_host_only() -> None:
    m = machine(config(sync_execution_surface=True, system_prompt="base"))
    first = drain(m)
    assert first == [SyncExecutionSurface(id=1, refresh=False)]
    m.respond(SurfaceSynced(id=1))
    assert isinstance(m.state, PrepareIteration)
    polled = drain(m)
    assert trace(polled) == ["Emit(llm_request)", "LlmCall#2"]
    assert texts(polled[1].request.messages[0]) == ["base"]


def test_no_sync_when_disabled() -> None:
    m = machine(config(tools=(READ,)))
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")]), reply("ok")], tools=[["x"]])
    host.run()
    assert of_type(host.effects, SyncExecutionSurface) == []


def test_iteration_execution_surface_sync_can_refresh_prompt_and_tools() -> None:
    new_tool = LlmToolSpec(name="grep", description="Search.")
    cfg = config(sync_execution_surface=True, system_prompt="old prompt", tools=(READ,))
    host = ScriptedHost(
        machine(cfg),
        llm=[reply(calls=[tool_call("c1", "read")]), reply("ok")],
        tools=[["x"]],
        surfaces=[None, ExecutionSurface(system_prompt="new prompt", tools=(new_tool,))],
    )
    host.run()
    syncs = of_type(host.effects, SyncExecutionSurface)
    assert syncs == [
        SyncExecutionSurface(id=1, refresh=False),
        SyncExecutionSurface(id=5, refresh=True),
    ]
    first, second = host.requests
    assert texts(first.messages[0]) == ["old prompt"]
    assert first.tools == (READ,)
    assert texts(second.messages[0]) == ["new prompt"]
    assert second.tools == (new_tool,)
    assert events(host.effects, LlmRequestStarted)[1].tool_names == ("grep",)


def test_surface_sync_error_fails_the_turn() -> None:
    m = machine(config(sync_execution_surface=True))
    host = ScriptedHost(m, surfaces=["registry offline"])
    host.run()
    assert trace(host.effects) == [
        "SyncExecutionSurface#1(refresh=False)",
        "Emit(error)",
        "Done(stopped:runtime_error)",
    ]
    (err,) = events(host.effects, ErrorReported)
    text = "Failed to refresh execution surface: registry offline"
    assert err == ErrorReported(
        message=text,
        envelope=ErrorEnvelope(
            kind="execution_surface",
            user_message=text,
            code="reconfigure_failed",
            raw="registry offline",
        ),
    )
    assert host.done.outcome == Stopped(reason=StopReason.RUNTIME_ERROR, message="registry offline")


def test_restore_keeps_a_surface_applied_by_an_earlier_sync() -> None:
    """Departure 9: TurnCheckpoint.surface survives; the reference loses it."""
    synced_tool = LlmToolSpec(name="grep")
    cfg = config(sync_execution_surface=True, system_prompt="config prompt", tools=(READ,))
    m = machine(cfg)
    host = ScriptedHost(
        m,
        llm=[reply(calls=[tool_call("c1", "grep")])],
        tools=[["x"]],
        checkpoints=[HOLD],
        surfaces=[ExecutionSurface(system_prompt="synced prompt", tools=(synced_tool,))],
    )
    host.run()
    assert describe(host.waiting) == "Checkpoint#4(after_work)"  # type: ignore[arg-type]
    cp = decoded_checkpoint(m)
    assert cp.surface == ExecutionSurface(system_prompt="synced prompt", tools=(synced_tool,))

    restored = roundtrip(m, cfg)
    host2 = ScriptedHost(restored, llm=[reply("ok")], surfaces=[None])
    host2.run()
    assert trace(host2.effects) == [
        "Checkpoint#4(after_work)",
        "SyncExecutionSurface#5(refresh=True)",
        "Emit(llm_request)",
        "LlmCall#6",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m2])",
        "Checkpoint#7(before_completion)",
        "Done(finished:assistant_message)",
    ]
    (request,) = host2.requests
    assert texts(request.messages[0]) == ["synced prompt"]
    assert request.tools == (synced_tool,)


# ======================================================= checkpoint / restore (departure 12)


def test_checkpoint_before_llm_completion_reissues_same_logical_llm_call() -> None:
    cfg = config(sync_execution_surface=True, system_prompt="sys", tools=(READ,))
    m = machine(cfg)
    host = ScriptedHost(m)
    host.run()
    assert trace(host.effects) == [
        "SyncExecutionSurface#1(refresh=False)",
        "Emit(llm_request)",
        "LlmCall#2",
    ]
    original = host.effects[-1]
    restored = roundtrip(m, cfg)
    again = drain(restored)
    assert trace(again) == ["LlmCall#2"]  # no second sync, no second LlmRequestStarted
    assert again[0] == original
    assert codec.encode(again[0]) == codec.encode(original)
    assert again[0].request.model == "test-model"
    assert restored.poll() is None
    restored.respond(LlmCompleted(id=2, response=reply("fine")))
    host2 = ScriptedHost(restored)
    host2.run()
    assert host2.done.outcome == finished_text("fine")


def test_checkpoint_after_llm_result_replays_checkpoint_without_second_llm() -> None:
    cfg = config()
    m = machine(cfg)
    drain(m)
    m.respond(LlmCompleted(id=1, response=reply("the answer", usage=usage(2, 3))))
    # checkpoint before the queued effects were polled
    cp = decoded_checkpoint(m)
    assert isinstance(cp.state, WaitingCheckpoint)
    assert cp.state.effect_id == 2
    assert all(not isinstance(e, Checkpoint) for e in cp.queue)
    restored = roundtrip(m, cfg)
    replayed = drain(restored)
    assert trace(replayed) == [
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "Checkpoint#2(before_completion)",
    ]
    assert wire(replayed) == wire(drain(m))  # the same effects the original would have yielded
    restored.respond(CheckpointDelivered(id=2))
    done = drain(restored)
    assert trace(done) == ["Done(finished:assistant_message)"]
    assert done[0].outcome == finished_text("the answer")
    assert done[0].usage == usage(2, 3)


def test_checkpoint_messages_resume_prepare_protocol_iteration() -> None:
    m = machine(config())
    host = ScriptedHost(
        m,
        llm=[reply("first"), reply("second")],
        checkpoints=[Inject(messages=[InjectedMessage(role=Role.USER, content="also this")])],
    )
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "Checkpoint#2(before_completion)",
        "Progress(iter=1, delta=[m1])",
        "Emit(llm_request)",
        "LlmCall#3",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m2])",
        "Checkpoint#4(before_completion)",
        "Done(finished:assistant_message)",
    ]
    injected = host.effects[7].delta[0]
    assert injected == Message(
        id="m1",
        role=Role.USER,
        parts=(Part(id="m1.p0", kind=PartKind.TEXT, content="also this"),),
        origin=PluginOrigin(plugin_id="plugin"),
    )
    second = host.requests[1]
    assert [(x.role, texts(x)) for x in second.messages] == [
        (LlmRole.USER, ["hi"]),
        (LlmRole.ASSISTANT, ["first"]),
        (LlmRole.USER, ["also this"]),
    ]
    assert host.done.outcome == finished_text("second")
    assert host.done.iteration == 1


def test_checkpoint_preserves_parallel_tool_batch_before_any_result() -> None:
    cfg = config(tools=(READ, WRITE))
    calls = [
        tool_call(
            "c1", "read", {"p": 1}, replay=ProviderReplayMeta(item_id="fc_1", opaque={"s": "a"})
        ),
        tool_call("c2", "write", {"p": 2}, replay=ProviderReplayMeta(item_id="fc_2")),
        tool_call("c3", "read", {"p": 3}),
    ]
    m = machine(cfg)
    host = ScriptedHost(m, llm=[reply(calls=calls)])
    host.run()
    batch = host.waiting
    assert describe(batch) == "ToolCalls#2[c1,c2,c3]"  # type: ignore[arg-type]
    cp = decoded_checkpoint(m)
    assert cp.queue == ()
    assert isinstance(cp.state, WaitingTools)
    assert cp.state.calls == batch.calls  # type: ignore[union-attr]

    restored = roundtrip(m, cfg)
    again = drain(restored)
    assert again == [batch]
    assert [c.replay for c in again[0].calls] == [
        ProviderReplayMeta(item_id="fc_1", opaque={"s": "a"}),
        ProviderReplayMeta(item_id="fc_2"),
        None,
    ]
    assert [c.args for c in again[0].calls] == [{"p": 1}, {"p": 2}, {"p": 3}]
    # answer in reverse order; nothing is lost
    restored.respond(
        ToolResults(
            id=2, results=tuple(complete(c, c.call_id.upper()) for c in reversed(again[0].calls))
        )
    )
    polled = drain(restored)
    assert [e.call_id for e in events(polled, ToolCallFinished)] == ["c1", "c2", "c3"]
    results = of_type(polled, Progress)[0].delta[0]
    assert [(p.tool_call_id, p.content) for p in results.parts] == [
        ("c1", "C1"),
        ("c2", "C2"),
        ("c3", "C3"),
    ]


def test_checkpoint_after_mixed_tool_batch_results_replays_model_feedback_once() -> None:
    cfg = config(tools=(READ,))
    m = machine(cfg)
    host = ScriptedHost(
        m,
        llm=[
            reply(calls=[tool_call("c1", "read"), tool_call("c2", "read"), tool_call("c3", "read")])
        ],
    )
    host.run()
    batch = host.waiting
    assert isinstance(batch, ToolCalls)
    failure = ToolFailure(
        failure_class=FailureClass.EXECUTION, code="enoent", message="no such file"
    )
    m.respond(
        ToolResults(
            id=batch.id,
            results=(
                complete(batch.calls[0], "contents"),
                complete(
                    batch.calls[1],
                    ToolOutput.failure(failure),
                    model_return=[TextReturn(text="[Tool execution failed]\nno such file")],
                ),
                complete(
                    batch.calls[2],
                    ToolOutput.cancelled("stopped"),
                    model_return=[TextReturn(text="[Tool execution cancelled]\nstopped")],
                ),
            ),
        )
    )
    restored = roundtrip(m, cfg)
    host2 = ScriptedHost(restored, llm=[reply("summary")])
    host2.run()
    assert trace(host2.effects) == [
        "Emit(tool_call)",
        "Emit(tool_call)",
        "Emit(tool_call)",
        "Progress(iter=1, delta=[m1])",
        "Checkpoint#3(after_work)",
        "Emit(llm_request)",
        "LlmCall#4",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m2])",
        "Checkpoint#5(before_completion)",
        "Done(finished:assistant_message)",
    ]
    finished = events(host2.effects, ToolCallFinished)
    assert [f.output.status for f in finished] == ["success", "failure", "cancelled"]
    assert finished[1].output.outcome == failure
    (request,) = host2.requests
    result_blocks = [
        b for x in request.messages for b in x.blocks if isinstance(b, ToolResultBlock)
    ]
    assert [(b.call_id, b.content) for b in result_blocks] == [
        ("c1", "contents"),
        ("c2", "[Tool execution failed]\nno such file"),
        ("c3", "[Tool execution cancelled]\nstopped"),
    ]


def _exec_driver(seen: list[object]) -> FnDriver:
    def on_exec(ctx: object, state: object, result: ExecResult) -> list[object]:
        seen.append((state, result.result, result.error))
        return [Finish(outcome=finished_text(json.dumps(result.result)))]

    return FnDriver(
        prepare=lambda ctx: [StartExec(code="print(1)", driver_state={"step": 1, "vars": ["a"]})],
        exec_=on_exec,  # type: ignore[arg-type]
    )


def test_exec_driver_state_round_trip() -> None:
    seen: list[object] = []
    host = ScriptedHost(machine(config(_exec_driver(seen))), execs=[{"out": 1}])
    host.run()
    assert trace(host.effects) == ["ExecCode#1", "Done(finished:assistant_message)"]
    assert host.effects[0] == ExecCode(id=1, code="print(1)")
    assert seen == [({"step": 1, "vars": ["a"]}, {"out": 1}, None)]
    assert host.done.outcome == finished_text('{"out": 1}')


def test_checkpoint_round_trips_waiting_exec_driver_state() -> None:
    seen: list[object] = []
    cfg = config(_exec_driver(seen))
    m = machine(cfg)
    assert trace(drain(m)) == ["ExecCode#1"]
    cp = decoded_checkpoint(m)
    assert cp.state == WaitingExec(
        effect_id=1, code="print(1)", driver_state={"step": 1, "vars": ["a"]}
    )
    restored = roundtrip(m, cfg)
    assert drain(restored) == [ExecCode(id=1, code="print(1)")]
    restored.respond(ExecResult(id=1, error="boom"))
    assert trace(drain(restored)) == ["Done(finished:assistant_message)"]
    assert seen == [({"step": 1, "vars": ["a"]}, None, "boom")]


def test_checkpoint_round_trips_waiting_llm_driver_state() -> None:
    def prepare(ctx: object) -> list[object]:
        return [StartLlm(request=ctx.project_request(), driver_state=["opaque", {"k": 2}])]  # type: ignore[attr-defined]

    drv = FnDriver(prepare=prepare)
    cfg = config(drv)
    m = machine(cfg)
    drain(m)
    restored = roundtrip(m, cfg)
    drain(restored)
    restored.respond(LlmCompleted(id=1, response=reply("x")))
    assert drv.calls[-1] == ("llm", ["opaque", {"k": 2}])


@pytest.mark.parametrize("waiting", ["llm", "tool_batch", "exec"])
def test_checkpoint_redelivers_waiting_effect_from_state_only(waiting: str) -> None:
    """checkpoint_redelivers_waiting_{llm,tool_batch,exec}_from_state_only."""
    if waiting == "exec":
        cfg = config(_exec_driver([]))
        host = ScriptedHost(machine(cfg))
    else:
        cfg = config(tools=(READ,))
        llm = [reply(calls=[tool_call("c1", "read")])] if waiting == "tool_batch" else []
        host = ScriptedHost(machine(cfg), llm=llm)
    host.run()
    outstanding = host.waiting
    assert outstanding is not None
    blob = codec.encode_document("turn_checkpoint", host.machine.checkpoint())
    assert b'"queue"' not in blob  # nothing queued: the effect lives only in the state
    cp = codec.decode_document(blob, "turn_checkpoint", TurnCheckpoint)
    assert cp.queue == ()
    state_type = {"llm": WaitingLlm, "tool_batch": WaitingTools, "exec": WaitingExec}[waiting]
    assert isinstance(cp.state, state_type)
    assert cp.state.effect_id == outstanding.id  # type: ignore[attr-defined]
    restored = TurnMachine.restore(cfg, cp)
    assert drain(restored) == [outstanding]
    assert restored.poll() is None


def test_restore_of_a_fresh_machine_starts_the_turn() -> None:
    cfg = config(sync_execution_surface=True)
    m = machine(cfg)
    cp = decoded_checkpoint(m)
    assert isinstance(cp.state, Preparing)
    restored = roundtrip(m, cfg)
    assert drain(restored) == [SyncExecutionSurface(id=1, refresh=False)]


def test_restore_of_an_ended_machine_replays_the_queued_done() -> None:
    cfg = config()
    m = machine(cfg)
    drain(m)
    assert m.cancel("user pressed stop") is True
    cp = decoded_checkpoint(m)
    assert isinstance(cp.state, Ended)
    restored = roundtrip(m, cfg)
    polled = drain(restored)
    assert trace(polled) == ["Done(stopped:cancelled)"]
    assert polled[0].outcome == Stopped(reason=StopReason.CANCELLED, message="user pressed stop")
    assert restored.is_done
    with pytest.raises(ProtocolError, match="the turn has ended"):
        restored.respond(LlmCompleted(id=1, response=reply("late")))


def test_restore_after_every_response_yields_the_same_stream() -> None:
    def run(restore: bool) -> list[bytes]:
        cfg = config(sync_execution_surface=True, tools=(READ,), max_turns=5)
        host = ScriptedHost(
            TurnMachine(cfg, [HISTORY], inputs=[USER]),
            llm=[
                reply("looking", calls=[tool_call("c1", "read"), tool_call("c2", "read")]),
                reply("first answer"),
                reply("second answer"),
            ],
            tools=[["one", "two"]],
            checkpoints=[None, Inject(messages=[InjectedMessage(role=Role.USER, content="more")])],
            restore_with=cfg if restore else None,
        )
        host.run()
        assert isinstance(host.effects[-1], Done)
        return wire(host.effects)

    assert run(restore=True) == run(restore=False)


def test_decode_document_rejects_another_kind() -> None:
    m = machine(config())
    blob = codec.encode_document("turn_checkpoint", m.checkpoint())
    with pytest.raises(
        CodecError, match=r"expected a lash.commit document, got lash.turn_checkpoint"
    ):
        codec.decode_document(blob, "commit", TurnCheckpoint)


# ================================================================ checkpoint deliveries


def test_injected_messages_get_minted_ids_renumbered_parts_and_default_origins() -> None:
    own_origin = ProcessOrigin(process_id="p9", event_type="stdout", sequence=4)
    m = machine(config(message_ids=lambda n: f"t1.m{n}"))
    host = ScriptedHost(
        m,
        llm=[reply("a"), reply("b")],
        checkpoints=[
            Inject(
                messages=[
                    InjectedMessage(
                        role=Role.SYSTEM,
                        parts=(
                            Part(id="x", kind=PartKind.TEXT, content="one"),
                            Part(id="y", kind=PartKind.TEXT, content="two"),
                        ),
                    ),
                    InjectedMessage(role=Role.USER, content="with origin", origin=own_origin),
                ],
                transient=[InjectedMessage(role=Role.USER, content="just this turn")],
            )
        ],
    )
    host.run()
    progress = of_type(host.effects, Progress)[1]
    assert progress.iteration == 1
    assert list(progress.delta) == [
        Message(
            id="t1.m1",
            role=Role.SYSTEM,
            parts=(
                Part(id="t1.m1.p0", kind=PartKind.TEXT, content="one"),
                Part(id="t1.m1.p1", kind=PartKind.TEXT, content="two"),
            ),
            origin=PluginOrigin(plugin_id="plugin"),
        ),
        Message(
            id="t1.m2",
            role=Role.USER,
            parts=(Part(id="t1.m2.p0", kind=PartKind.TEXT, content="with origin"),),
            origin=own_origin,
        ),
        Message(
            id="t1.m3",
            role=Role.USER,
            parts=(Part(id="t1.m3.p0", kind=PartKind.TEXT, content="just this turn"),),
            origin=PluginOrigin(plugin_id="plugin", transient=True),
        ),
    ]
    assert progress.delta[2].is_transient


def test_checkpoint_turn_causes_are_added_once_and_projected_last() -> None:
    c0 = TurnCause(id="ev0", event_type="wake", text="first event")
    c1 = TurnCause(
        id="ev1",
        event_type="exit",
        text="  build finished  ",
        origin=ProcessOrigin(process_id="p1", event_type="exit", sequence=3, wake_id="w1"),
    )
    m = TurnMachine(config(), inputs=[USER, c0.to_event_message()], turn_causes=[c0])
    host = ScriptedHost(m, llm=[reply("a"), reply("b")], checkpoints=[Inject(causes=[c0, c1])])
    host.run()
    progress = of_type(host.effects, Progress)[1]
    assert progress.delta == (c1.to_event_message(),)
    assert tuple(m.turn_causes) == (c0, c1)
    second = host.requests[1]
    # the event messages of active causes are not rendered in place
    assert [(x.role, texts(x)) for x in second.messages[:-1]] == [
        (LlmRole.USER, ["hi"]),
        (LlmRole.ASSISTANT, ["a"]),
    ]
    assert texts(second.messages[-1]) == [
        f"{TURN_EVENTS_HEADER}\n\n"
        "--- event[0] \u00b7 wake \u00b7 ev0 ---\nOrigin: host\n\nfirst event\n\n"
        "--- event[1] \u00b7 exit \u00b7 ev1 ---\nOrigin: process p1 exit #3 (w1)\n\nbuild finished"
    ]


def test_after_work_injection_keeps_the_iteration_before_completion_advances_it() -> None:
    m = machine(config(tools=(READ,)))
    host = ScriptedHost(
        m,
        llm=[reply(calls=[tool_call("c1", "read")]), reply("a"), reply("b")],
        tools=[["x"]],
        checkpoints=[
            Inject(messages=[InjectedMessage(role=Role.USER, content="after work")]),
            Inject(messages=[InjectedMessage(role=Role.USER, content="before completion")]),
        ],
    )
    host.run()
    progress = [(p.iteration, [x.id for x in p.delta]) for p in of_type(host.effects, Progress)]
    assert progress == [
        (0, ["u0", "m0"]),
        (1, ["m1"]),  # tool results; the driver advanced the iteration
        (1, ["m2"]),  # after_work injection: same iteration
        (1, ["m3"]),  # answer "a"
        (2, ["m4"]),  # before_completion injection: next iteration
        (2, ["m5"]),  # answer "b"
    ]
    assert host.done.iteration == 2


def test_empty_checkpoint_continue_prepares_the_next_iteration_without_progress() -> None:
    drv = _stepper(
        lambda ctx: [
            AdvanceIteration(),
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
        ],
        lambda ctx: [Finish(outcome=finished_text("done"))],
    )
    host = ScriptedHost(TurnMachine(config(drv)))
    host.run()
    assert trace(host.effects) == [
        "Progress(iter=1, delta=[])",
        "Checkpoint#1(after_work)",
        "Done(finished:assistant_message)",
    ]
    assert drv.calls == [("prepare", 0), ("prepare", 1)]


def test_driver_can_finish_via_checkpoint() -> None:
    outcome = AgentFrameSwitch(frame_id="reviewer", task="review it")
    drv = FnDriver(
        prepare=lambda ctx: [
            StartCheckpoint(
                kind=CheckpointKind.BEFORE_COMPLETION, on_empty=FinishWith(outcome=outcome)
            )
        ]
    )
    m = machine(config(drv))
    host = ScriptedHost(m)
    host.run()
    assert trace(host.effects) == ["Checkpoint#1(before_completion)", "Done(agent_frame_switch)"]
    assert host.done.outcome == outcome
    assert host.done.delta == (USER,)


# ================================================================ turn limit (§1.9)


def test_turn_limit_grants_one_grace_iteration_then_stops() -> None:
    m = machine(config(max_turns=1))
    more = Inject(messages=[InjectedMessage(role=Role.USER, content="more")])
    host = ScriptedHost(m, llm=[reply("one"), reply("two")], checkpoints=[more, more])
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "Checkpoint#2(before_completion)",
        "Progress(iter=1, delta=[m1,m2])",
        "Emit(llm_request)",
        "LlmCall#3",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m3])",
        "Checkpoint#4(before_completion)",
        "Progress(iter=2, delta=[m4])",
        "Done(stopped:max_turns)",
    ]
    note = host.effects[7].delta[1]
    assert note == default_turn_limit_message("m2", 1)
    assert note.parts[0].content == (
        "The turn limit (1 iterations) is reached. "
        "Answer now with what you have; do not call more tools."
    )
    assert texts(host.requests[1].messages[-1]) == [f"Runtime note:\n{note.parts[0].content}"]
    assert host.done.outcome == Stopped(
        reason=StopReason.MAX_TURNS,
        message="The turn limit was reached after the final grace iteration.",
    )


def test_turn_limit_message_factory_is_configurable() -> None:
    def note(mid: str, limit: int) -> Message:
        return _note(mid, f"stop after {limit}")

    m = machine(config(max_turns=1, turn_limit_message=note))
    host = ScriptedHost(
        m,
        llm=[reply("one"), reply("two")],
        checkpoints=[Inject(messages=[InjectedMessage(role=Role.USER, content="more")])],
    )
    host.run()
    assert of_type(host.effects, Progress)[1].delta[1] == _note("m2", "stop after 1")
    assert host.done.outcome == finished_text("two")


def test_iteration_offset_is_where_the_turn_starts() -> None:
    m = TurnMachine(config(tools=(READ,)), inputs=[USER], iteration_offset=5)
    assert m.iteration == 5
    assert m.iteration_offset == 5
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")]), reply("ok")], tools=[["x"]])
    host.run()
    assert [s.iteration for s in events(host.effects, LlmRequestStarted)] == [5, 6]
    assert [p.iteration for p in of_type(host.effects, Progress)] == [5, 6, 6]
    assert host.done.iteration == 6


# ================================================================ external finish


def test_cancel_while_waiting_ends_the_turn_and_rejects_late_replies() -> None:
    m = machine(config())
    drain(m)
    assert m.cancel() is True
    polled = drain(m)
    assert trace(polled) == ["Done(stopped:cancelled)"]
    assert polled[0].outcome == Stopped(reason=StopReason.CANCELLED, message="cancelled")
    assert polled[0].added == (USER,)
    with pytest.raises(
        ProtocolError, match=re.escape("the turn has ended; got LlmCompleted for effect #1")
    ):
        m.respond(LlmCompleted(id=1, response=reply("late")))
    assert m.cancel() is False
    assert m.poll() is None


def test_fail_emits_a_runtime_error_and_stops() -> None:
    m = machine(config())
    drain(m)
    assert m.fail("plugin exploded", code="plugin_failed", raw=" stack ") is True
    polled = drain(m)
    assert trace(polled) == ["Emit(error)", "Done(stopped:runtime_error)"]
    assert polled[0].event == ErrorReported(
        message="plugin exploded",
        envelope=ErrorEnvelope(
            kind="runtime", user_message="plugin exploded", code="plugin_failed", raw="stack"
        ),
    )
    assert polled[1].outcome == Stopped(reason=StopReason.RUNTIME_ERROR, message="plugin exploded")
    assert m.fail("again") is False


def test_finish_from_outside_switches_frame() -> None:
    m = machine(config())
    assert m.finish(AgentFrameSwitch(frame_id="f2")) is True
    assert trace(drain(m)) == ["Done(agent_frame_switch)"]
    assert m.outcome == AgentFrameSwitch(frame_id="f2")


# ================================================================ driver contract (departure 11)

CONTRACT = "a driver must return exactly one start action or a finish action; got "


@pytest.mark.parametrize(
    ("actions", "got"),
    [
        (lambda ctx: [], "no actions"),
        (
            lambda ctx: [AppendMessages(messages=(_note(ctx.new_message_id(), "x"),))],
            "AppendMessages",
        ),
        (
            lambda ctx: [
                StartLlm(request=ctx.project_request()),
                StartExec(code="x"),
            ],
            "StartLlm, StartExec",
        ),
    ],
    ids=["empty", "no-start", "two-starts"],
)
def test_broken_prepare_raises_driver_contract_error_and_changes_nothing(
    actions: object, got: str
) -> None:
    m = machine(config(FnDriver(prepare=actions)))  # type: ignore[arg-type]
    before = snapshot(m)
    with pytest.raises(DriverContractError) as err:
        m.poll()
    assert str(err.value) == CONTRACT + got
    assert snapshot(m) == before


def test_broken_llm_handler_raises_and_changes_nothing() -> None:
    drv = FnDriver(llm=lambda *a: [EmitEvent(event=TextDelta(content="x"))])
    m = machine(config(drv))
    drain(m)
    before = snapshot(m)
    with pytest.raises(DriverContractError) as err:
        m.respond(LlmCompleted(id=1, response=reply("x", usage=usage(5, 5))))
    assert str(err.value) == CONTRACT + "EmitEvent"
    assert snapshot(m) == before
    assert m.usage == LlmUsage()
    assert m.poll() is None
    assert m.outstanding == LlmCall(id=1, request=m.state.request)  # type: ignore[union-attr]


def test_broken_tool_handler_raises_and_changes_nothing() -> None:
    calls = (PendingToolCall(call_id="c1", tool_name="read", args={}),)
    drv = FnDriver(
        prepare=lambda ctx: [StartTools(calls=calls)],
        tools=lambda ctx, results: [
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()),
        ],
    )
    m = machine(config(drv))
    drain(m)
    before = snapshot(m)
    with pytest.raises(DriverContractError, match="got StartCheckpoint, StartCheckpoint"):
        m.respond(ToolResults(id=1, results=(complete(calls[0], "x"),)))
    assert snapshot(m) == before


def _raise_after_minting(ctx: TurnMachine, *_: object) -> NoReturn:
    ctx.new_message_id()
    raise RuntimeError("driver bug")


def test_raising_llm_handler_changes_nothing() -> None:
    m = machine(config(FnDriver(llm=_raise_after_minting)))
    drain(m)
    before = snapshot(m)
    with pytest.raises(RuntimeError, match="driver bug"):
        m.respond(LlmCompleted(id=1, response=reply("x", usage=usage(5, 5))))
    assert snapshot(m) == before
    assert m.usage == LlmUsage()
    assert m.new_message_id() == "m0"


def test_raising_prepare_changes_nothing() -> None:
    m = machine(config(FnDriver(prepare=_raise_after_minting)))
    before = snapshot(m)
    with pytest.raises(RuntimeError, match="driver bug"):
        m.poll()
    assert snapshot(m) == before
    assert m.new_message_id() == "m0"


# ================================================================ determinism (departure 10)


def _deterministic_run() -> tuple[list[bytes], tuple[Message, ...]]:
    cfg = config(
        sync_execution_surface=True,
        tools=(READ,),
        message_ids=lambda n: f"turn7.m{n}",
    )
    m = TurnMachine(cfg, [HISTORY], inputs=[USER])
    host = ScriptedHost(
        m,
        llm=[
            reply("reading", calls=[tool_call("c1", "read", {"p": "a"}), tool_call("c2", "read")]),
            reply("answer one", usage=usage(3, 4)),
            reply("answer two"),
        ],
        tools=[["A", "B"]],
        checkpoints=[None, Inject(messages=[InjectedMessage(role=Role.USER, content="and?")])],
    )
    host.run()
    return wire(host.effects), m.messages


def test_same_responses_give_byte_identical_effect_streams() -> None:
    first, messages = _deterministic_run()
    second, _ = _deterministic_run()
    assert first == second
    assert [x.id for x in messages] == [
        "h0",
        "u0",
        "turn7.m0",
        "turn7.m1",
        "turn7.m2",
        "turn7.m3",
        "turn7.m4",
    ]
    assert [p.id for p in messages[2].parts] == ["turn7.m0.p0", "turn7.m0.p1", "turn7.m0.p2"]


def test_llm_image_attachments_reach_the_request() -> None:
    """llm_request_includes_image_prompt_parts_for_attached_images."""
    with_image = Message(
        id="u1",
        role=Role.USER,
        parts=(
            Part(id="u1.p0", kind=PartKind.TEXT, content="what is this?"),
            Part(id="u1.p1", kind=PartKind.IMAGE, attachment=IMAGE),
        ),
    )
    m = TurnMachine(config(), inputs=[with_image])
    polled = drain(m)
    request = polled[-1].request
    assert request.attachments == (IMAGE,)
    assert request.messages[-1].blocks == (
        TextBlock(text="what is this?"),
        ImageBlock(attachment_idx=0),
    )


def test_message_text_and_char_count() -> None:
    msg = Message(
        id="a",
        role=Role.ASSISTANT,
        parts=(
            Part(id="a.p0", kind=PartKind.REASONING, content="hidden thoughts"),
            Part(id="a.p1", kind=PartKind.PROSE, content="Hello"),
            Part(id="a.p2", kind=PartKind.IMAGE, attachment=IMAGE),
        ),
    )
    assert msg.text() == "Hello"
    assert msg.char_count == 5 + 64
