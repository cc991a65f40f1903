"""The standard protocol driver (reference kernel.md §6.2, §8 "Standard driver tests").

Pinned departures: the driver appends the final assistant message (reasoning
first, then prose with its response metadata); every tool call gets a
ToolResult part even when its return has no text; unusable tool arguments
become ``args_error``; an empty reply not after a tool result is an
``empty_response`` provider error.
"""

from __future__ import annotations

import pytest
from scripted import (
    HOLD,
    Inject,
    ScriptedHost,
    complete,
    decoded_checkpoint,
    drain,
    events,
    of_type,
    reasoning,
    reply,
    roundtrip,
    tool_call,
    trace,
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
    StartLlm,
    StartTools,
)
from lash.kernel.effects import ExecResult, LlmCompleted, Progress, ToolCalls, ToolResults
from lash.kernel.events import (
    ErrorEnvelope,
    ErrorReported,
    LlmResponded,
    TextDelta,
    ToolCallFinished,
)
from lash.kernel.llm import (
    LlmRole,
    LlmToolSpec,
    ProviderReplayMeta,
    ReasoningBlock,
    ReasoningOutput,
    ReasoningReplay,
    ResponseTextMeta,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolChoice,
    ToolResultBlock,
)
from lash.kernel.machine import MachineConfig, TurnMachine, WaitingTools
from lash.kernel.messages import (
    CheckpointKind,
    InjectedMessage,
    Message,
    Part,
    PartKind,
    Role,
    user_message,
)
from lash.kernel.outcome import (
    AgentFrameSwitch,
    Finished,
    Stopped,
    StopReason,
    ToolValueAnswer,
    finished_text,
)
from lash.kernel.protocols.standard import (
    TURN_LIMIT_PREFIX,
    StandardDriver,
    join_assistant_text,
    parse_tool_arguments,
)
from lash.kernel.render import messages_are_prompt_resume_safe
from lash.kernel.tools.output import (
    AttachmentReturn,
    FailTurn,
    FailureClass,
    FinishTurn,
    PendingToolCall,
    SwitchAgentFrame,
    TextReturn,
    ToolFailure,
    ToolOutput,
)

USER = user_message("u0", "hi")
READ = LlmToolSpec(name="read", description="Read a file.", input_schema={"type": "object"})
SHOT = AttachmentRef(id="b" * 64, mime="image/png", byte_len=10, width=2, height=2)


def config(**kw: object) -> MachineConfig:
    return MachineConfig(driver=StandardDriver(), model="test-model", tools=(READ,), **kw)  # type: ignore[arg-type]


def machine(**kw: object) -> TurnMachine:
    return TurnMachine(config(**kw), inputs=[USER])


def texts(msg: object) -> list[str]:
    return [b.text for b in msg.blocks if isinstance(b, TextBlock)]  # type: ignore[attr-defined]


# ================================================================ reference tests


def test_standard_prose_only_response_emits_done() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply("Hello there.")])
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "Checkpoint#2(before_completion)",
        "Done(finished:assistant_message)",
    ]
    (request,) = host.requests
    assert request.tools == (READ,)
    assert request.tool_choice is ToolChoice.AUTO
    assert host.done.outcome == finished_text("Hello there.")
    assert host.done.added == (
        USER,
        Message(
            id="m0",
            role=Role.ASSISTANT,
            parts=(Part(id="m0.p0", kind=PartKind.PROSE, content="Hello there."),),
        ),
    )
    assert m.poll() is None


def test_standard_tool_calls_produce_effects_and_loop() -> None:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                "Reading both.",
                calls=[tool_call("c1", "read", {"p": "a"}), tool_call("c2", "read", {"p": "b"})],
            ),
            reply(calls=[tool_call("c3", "read", {"p": "c"})]),
            reply("All read."),
        ],
        tools=[["A", "B"], ["C"]],
    )
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "ToolCalls#2[c1,c2]",
        "Emit(tool_call)",
        "Emit(tool_call)",
        "Progress(iter=1, delta=[m1])",
        "Checkpoint#3(after_work)",
        "Emit(llm_request)",
        "LlmCall#4",
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Progress(iter=1, delta=[m2])",
        "ToolCalls#5[c3]",
        "Emit(tool_call)",
        "Progress(iter=2, delta=[m3])",
        "Checkpoint#6(after_work)",
        "Emit(llm_request)",
        "LlmCall#7",
        "Emit(token_usage)",
        "Emit(text_delta)",
        "Emit(llm_response)",
        "Progress(iter=2, delta=[m4])",
        "Checkpoint#8(before_completion)",
        "Done(finished:assistant_message)",
    ]
    finished = events(host.effects, ToolCallFinished)
    assert [(f.call_id, f.name, f.args, f.output) for f in finished] == [
        ("c1", "read", {"p": "a"}, ToolOutput.success("A")),
        ("c2", "read", {"p": "b"}, ToolOutput.success("B")),
        ("c3", "read", {"p": "c"}, ToolOutput.success("C")),
    ]
    third = host.requests[2]
    assert [x.role for x in third.messages] == [
        LlmRole.USER,
        LlmRole.ASSISTANT,
        LlmRole.USER,
        LlmRole.ASSISTANT,
        LlmRole.USER,
    ]
    assert third.messages[1].blocks == (
        TextBlock(text="Reading both."),
        ToolCallBlock(call_id="c1", tool_name="read", input_json='{"p":"a"}'),
        ToolCallBlock(call_id="c2", tool_name="read", input_json='{"p":"b"}'),
    )
    assert third.messages[2].blocks == (
        ToolResultBlock(call_id="c1", content="A", tool_name="read"),
        ToolResultBlock(call_id="c2", content="B", tool_name="read"),
    )
    assert host.done.outcome == finished_text("All read.")
    assert messages_are_prompt_resume_safe(m.messages)


def test_standard_checkpoint_redrives_parallel_tool_batch_without_losing_calls() -> None:
    cfg = config()
    m = TurnMachine(cfg, inputs=[USER])
    calls = [tool_call(f"c{i}", "read", {"i": i}) for i in range(1, 5)]
    host = ScriptedHost(m, llm=[reply(calls=calls)])
    host.run()
    batch = host.waiting
    assert isinstance(batch, ToolCalls)
    assert isinstance(decoded_checkpoint(m).state, WaitingTools)
    restored = roundtrip(m, cfg)
    host2 = ScriptedHost(restored, llm=[reply("done")], tools=[["1", "2", "3", "4"]])
    host2.run()
    assert host2.effects[0] == batch
    assert [f.call_id for f in events(host2.effects, ToolCallFinished)] == ["c1", "c2", "c3", "c4"]
    results = of_type(host2.effects, Progress)[0].delta[0]
    assert [p.tool_call_id for p in results.parts] == ["c1", "c2", "c3", "c4"]
    assert host2.done.outcome == finished_text("done")
    assert messages_are_prompt_resume_safe(restored.messages)


def test_standard_checkpoint_after_tool_control_finish_preserves_terminal_outcome() -> None:
    cfg = config()
    m = TurnMachine(cfg, inputs=[USER])
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")])])
    host.run()
    call = host.waiting.calls[0]  # type: ignore[union-attr]
    m.respond(
        ToolResults(
            id=2,
            results=(
                complete(
                    call,
                    ToolOutput.success({"answer": 42}, control=FinishTurn(value={"answer": 42})),
                    model_return=[TextReturn(text='{"answer":42}')],
                ),
            ),
        )
    )
    restored = roundtrip(m, cfg)
    polled = drain(restored)
    assert trace(polled) == [
        "Emit(tool_call)",
        "Progress(iter=0, delta=[m1])",
        "Done(finished:tool_value)",
    ]
    outcome = Finished(result=ToolValueAnswer(tool_name="read", value={"answer": 42}))
    assert polled[-1].outcome == outcome
    assert restored.outcome == outcome
    assert restored.poll() is None


def test_standard_empty_final_after_tool_result_finishes_without_error() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")]), reply("")], tools=[["x"]])
    host.run()
    assert trace(host.effects)[-5:] == [
        "LlmCall#4",
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Checkpoint#5(before_completion)",
        "Done(finished:assistant_message)",
    ]
    assert events(host.effects, ErrorReported) == []
    assert host.done.outcome == finished_text("")
    # nothing to append for an empty answer
    assert [x.id for x in m.messages] == ["u0", "m0", "m1"]


def test_standard_max_turns_stops_iteration() -> None:
    m = machine(max_turns=1)
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")])], tools=[["x"]])
    host.run()
    assert trace(host.effects) == [
        "Emit(llm_request)",
        "LlmCall#1",
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "ToolCalls#2[c1]",
        "Emit(tool_call)",
        "Progress(iter=1, delta=[m1,m2])",
        "Done(stopped:max_turns)",
    ]
    note = "Turn limit reached (1) before a final assistant response."
    assert note.startswith(TURN_LIMIT_PREFIX)
    assert m.messages[-1] == Message(
        id="m2", role=Role.SYSTEM, parts=(Part(id="m2.p0", kind=PartKind.ERROR, content=note),)
    )
    assert host.done.outcome == Stopped(reason=StopReason.MAX_TURNS, message=note)
    assert host.done.delta == ()


def test_standard_max_turns_counts_from_the_iteration_offset() -> None:
    two = TurnMachine(config(max_turns=2), inputs=[USER], iteration_offset=7)
    host = ScriptedHost(
        two,
        llm=[reply(calls=[tool_call("c1", "read")]), reply(calls=[tool_call("c2", "read")])],
        tools=[["x"], ["y"]],
    )
    host.run()
    assert [
        d for d in trace(host.effects) if d.startswith(("ToolCalls", "Checkpoint", "Done"))
    ] == [
        "ToolCalls#2[c1]",
        "Checkpoint#3(after_work)",
        "ToolCalls#5[c2]",
        "Done(stopped:max_turns)",
    ]
    assert host.done.iteration == 9
    assert host.done.outcome.message == "Turn limit reached (2) before a final assistant response."


# ================================================================ tool results → history


def _run_one_call(model_return: list[object], output: ToolOutput | None = None) -> TurnMachine:
    m = machine()
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read")])])
    host.run()
    call = host.waiting.calls[0]  # type: ignore[union-attr]
    m.respond(
        ToolResults(
            id=2,
            results=(
                complete(call, output or ToolOutput.success("x"), model_return=model_return),  # type: ignore[arg-type]
            ),
        )
    )
    drain(m)
    return m


def _result_parts(m: TurnMachine) -> list[tuple[PartKind, str, str | None, str | None, object]]:
    results = m.messages[2]
    assert results.role is Role.USER
    return [(p.kind, p.content, p.tool_call_id, p.tool_name, p.attachment) for p in results.parts]


def test_tool_attachment_round_trips_to_part_kind_image() -> None:
    """An attachment-only return: an empty ToolResult, then the Image (departure 6)."""
    m = _run_one_call([AttachmentReturn(ref=SHOT)])
    assert _result_parts(m) == [
        (PartKind.TOOL_RESULT, "", "c1", "read", None),
        (PartKind.IMAGE, "", "c1", "read", SHOT),
    ]
    assert [p.id for p in m.messages[2].parts] == ["m1.p0", "m1.p1"]
    assert messages_are_prompt_resume_safe(m.messages)


def test_tool_text_and_attachment_round_trip_preserves_order() -> None:
    """Departure: one result part per call (the reference emits result, image, result,
    which answers the call twice); the text marks where the image sat."""
    m = _run_one_call(
        [TextReturn(text='["before",'), AttachmentReturn(ref=SHOT), TextReturn(text=',"after"]')]
    )
    assert _result_parts(m) == [
        (PartKind.TOOL_RESULT, '["before",[Image attached],"after"]', "c1", "read", None),
        (PartKind.IMAGE, "", "c1", "read", SHOT),
    ]
    assert messages_are_prompt_resume_safe(m.messages)


def test_attachment_then_text_gives_one_result_then_the_image() -> None:
    m = _run_one_call([AttachmentReturn(ref=SHOT), TextReturn(text="caption")])
    assert _result_parts(m) == [
        (PartKind.TOOL_RESULT, "caption", "c1", "read", None),
        (PartKind.IMAGE, "", "c1", "read", SHOT),
    ]
    assert messages_are_prompt_resume_safe(m.messages)


@pytest.mark.parametrize(
    "model_return", [[], [TextReturn(text="")]], ids=["no-parts", "empty-text"]
)
def test_tool_return_without_text_still_answers_the_call(model_return: list[object]) -> None:
    """Departure 6: the reference drops empty text and leaves the call unanswered."""
    m = _run_one_call(model_return, ToolOutput.success(""))
    assert _result_parts(m) == [(PartKind.TOOL_RESULT, "", "c1", "read", None)]
    assert messages_are_prompt_resume_safe(m.messages)


def test_every_call_of_a_batch_is_answered_even_when_some_return_nothing() -> None:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[reply(calls=[tool_call("c1", "read"), tool_call("c2", "read")]), reply("ok")],
        tools=[["", "two"]],
    )
    host.run()
    assert [(p.tool_call_id, p.content) for p in m.messages[2].parts] == [("c1", ""), ("c2", "two")]
    assert host.requests[1].messages[2].blocks == (
        ToolResultBlock(call_id="c1", content="", tool_name="read"),
        ToolResultBlock(call_id="c2", content="two", tool_name="read"),
    )
    assert messages_are_prompt_resume_safe(m.messages)


def test_failed_tool_output_goes_back_to_the_model_as_text() -> None:
    failure = ToolFailure(
        failure_class=FailureClass.TIMEOUT, code="timeout", message="took too long"
    )
    m = machine()
    host = ScriptedHost(
        m,
        llm=[reply(calls=[tool_call("c1", "read")]), reply("sorry")],
        tools=[
            lambda effect: ToolResults(
                id=effect.id,
                results=(
                    complete(
                        effect.calls[0],
                        ToolOutput.failure(failure),
                        model_return=[TextReturn(text="[Tool execution failed]\ntook too long")],
                    ),
                ),
            )
        ],
    )
    host.run()
    assert host.done.outcome == finished_text("sorry")
    second = host.requests[1]
    assert second.messages[-1].blocks == (
        ToolResultBlock(
            call_id="c1", content="[Tool execution failed]\ntook too long", tool_name="read"
        ),
    )


# ================================================================ terminal tool controls


def _one_call_with(output: ToolOutput) -> ScriptedHost:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[reply(calls=[tool_call("c1", "read")]), reply("after")],
        tools=[
            lambda effect: ToolResults(
                id=effect.id,
                results=(
                    complete(
                        effect.calls[0], output, model_return=[TextReturn(text="result text")]
                    ),
                ),
            )
        ],
    )
    host.run()
    return host


def test_switch_agent_frame_control_ends_the_turn() -> None:
    host = _one_call_with(
        ToolOutput.success("ok", control=SwitchAgentFrame(frame_id="reviewer", task="check"))
    )
    assert trace(host.effects)[-3:] == [
        "Emit(tool_call)",
        "Progress(iter=0, delta=[m1])",
        "Done(agent_frame_switch)",
    ]
    assert host.done.outcome == AgentFrameSwitch(frame_id="reviewer", task="check")
    assert host.machine.messages[-1].parts[0].content == "result text"


def test_blank_frame_switch_is_ignored() -> None:
    host = _one_call_with(ToolOutput.success("ok", control=SwitchAgentFrame(frame_id="  ")))
    assert host.done.outcome == finished_text("after")


def test_fail_control_stops_with_tool_error() -> None:
    failure = ToolFailure(failure_class=FailureClass.PERMISSION_DENIED, code="denied", message="no")
    host = _one_call_with(ToolOutput.success("ok", control=FailTurn(failure=failure)))
    assert host.done.outcome == Stopped(
        reason=StopReason.TOOL_ERROR,
        message="no",
        tool_name="read",
        value={
            "code": "denied",
            "failure_class": "permission_denied",
            "message": "no",
            "retry": {"type": "never"},
            "status": "failure",
        },
    )
    assert codec.from_builtins(host.done.outcome.value, ToolFailure) == failure


def test_controls_on_failed_outputs_are_ignored() -> None:
    failure = ToolFailure(failure_class=FailureClass.EXECUTION, code="x", message="broke")
    output = ToolOutput(outcome=failure, control=FinishTurn(value="ignored"))
    host = _one_call_with(output)
    assert host.done.outcome == finished_text("after")


def test_first_terminal_control_wins() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply(calls=[tool_call("c1", "read"), tool_call("c2", "read")])])
    host.run()
    batch = host.waiting
    assert isinstance(batch, ToolCalls)
    m.respond(
        ToolResults(
            id=2,
            results=(
                complete(batch.calls[0], ToolOutput.success(1, control=FinishTurn(value="first"))),
                complete(
                    batch.calls[1], ToolOutput.success(2, control=SwitchAgentFrame(frame_id="f"))
                ),
            ),
        )
    )
    polled = drain(m)
    assert polled[-1].outcome == Finished(result=ToolValueAnswer(tool_name="read", value="first"))


# ================================================================ model replies → history


def test_final_answer_is_appended_with_reasoning_first_then_prose_with_meta() -> None:
    """Departure 5: the kernel keeps the final answer, its reasoning and response_meta."""
    replay = ReasoningReplay(item_id="rs_1", encrypted_content="enc", summary=("plan",))
    meta1 = ResponseTextMeta(id="msg_1", status="completed")
    meta2 = ResponseTextMeta(id="msg_2", phase="final_answer")
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                "Hello\n\nWorld",
                parts=[
                    TextOutput(text="Hello", response_meta=meta1),
                    ReasoningOutput(text="  thinking  ", replay=replay),
                    TextOutput(text="World", response_meta=meta2),
                ],
            )
        ],
    )
    host.run()
    assert [e.content for e in events(host.effects, TextDelta)] == ["Hello", "\n\nWorld"]
    assert events(host.effects, LlmResponded) == [
        LlmResponded(iteration=0, content="Hello\n\nWorld")
    ]
    assert m.messages[-1] == Message(
        id="m0",
        role=Role.ASSISTANT,
        parts=(
            Part(id="m0.p0", kind=PartKind.REASONING, content="  thinking  ", reasoning=replay),
            Part(id="m0.p1", kind=PartKind.PROSE, content="Hello", response_meta=meta1),
            Part(id="m0.p2", kind=PartKind.PROSE, content="\n\nWorld", response_meta=meta2),
        ),
    )
    assert host.done.outcome == finished_text("Hello\n\nWorld")


def test_injection_at_before_completion_keeps_the_previous_answer_in_the_next_request() -> None:
    replay = ReasoningReplay(signature="sig")
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                "first answer",
                parts=[reasoning("why", signature="sig"), TextOutput(text="first answer")],
            ),
            reply("second answer"),
        ],
        checkpoints=[Inject(messages=[InjectedMessage(role=Role.USER, content="one more thing")])],
    )
    host.run()
    second = host.requests[1]
    assert [(x.role, x.blocks) for x in second.messages] == [
        (LlmRole.USER, (TextBlock(text="hi"),)),
        (
            LlmRole.ASSISTANT,
            (ReasoningBlock(text="why", replay=replay), TextBlock(text="first answer")),
        ),
        (LlmRole.USER, (TextBlock(text="one more thing"),)),
    ]
    assert host.done.outcome == finished_text("second answer")
    assert [x.id for x in host.done.added] == ["u0", "m0", "m1", "m2"]


def test_tool_round_message_orders_prose_then_reasoning_before_each_call() -> None:
    m = machine()
    parts = [
        reasoning("r0", item_id="rs0"),
        TextOutput(text="a"),
        tool_call("c1", "read", {"x": 1}, replay=ProviderReplayMeta(item_id="fc1")),
        reasoning("r1", item_id="rs1"),
        tool_call("c2", "read"),
        reasoning("r2", item_id="rs2"),
        TextOutput(text="b"),
    ]
    host = ScriptedHost(m, llm=[reply("a\n\nb", parts=parts)])
    host.run()
    msg = m.messages[-1]
    assert [(p.id, p.kind, p.content) for p in msg.parts] == [
        ("m0.p0", PartKind.PROSE, "a"),
        ("m0.p1", PartKind.PROSE, "\n\nb"),
        ("m0.p2", PartKind.REASONING, "r0"),
        ("m0.p3", PartKind.TOOL_CALL, '{"x":1}'),
        ("m0.p4", PartKind.REASONING, "r1"),
        ("m0.p5", PartKind.TOOL_CALL, "{}"),
        ("m0.p6", PartKind.REASONING, "r2"),
    ]
    assert msg.parts[3].tool_replay == ProviderReplayMeta(item_id="fc1")
    assert msg.parts[2].reasoning == ReasoningReplay(item_id="rs0")
    assert events(host.effects, LlmResponded)[0].content == "a\n\nb"
    batch = host.waiting
    assert isinstance(batch, ToolCalls)
    assert batch.calls[0].replay == ProviderReplayMeta(item_id="fc1")


def test_blank_prose_is_left_out_of_a_tool_round_message() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply(parts=[TextOutput(text="\n\n"), tool_call("c1", "read")])])
    host.run()
    assert [p.kind for p in m.messages[-1].parts] == [PartKind.TOOL_CALL]


def test_blank_reasoning_without_replay_is_skipped_but_kept_with_replay() -> None:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                "ok",
                parts=[
                    ReasoningOutput(text="   "),
                    ReasoningOutput(text="", replay=ReasoningReplay()),
                    ReasoningOutput(text=" ", replay=ReasoningReplay(redacted=True)),
                    TextOutput(text="ok"),
                ],
            )
        ],
    )
    host.run()
    assert m.messages[-1].parts == (
        Part(
            id="m0.p0",
            kind=PartKind.REASONING,
            content=" ",
            reasoning=ReasoningReplay(redacted=True),
        ),
        Part(id="m0.p1", kind=PartKind.PROSE, content="ok"),
    )


def test_reasoning_only_reply_is_a_silent_answer_not_an_error() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply(parts=[reasoning("hmm", item_id="rs")])])
    host.run()
    assert events(host.effects, ErrorReported) == []
    assert m.messages[-1].parts == (
        Part(
            id="m0.p0",
            kind=PartKind.REASONING,
            content="hmm",
            reasoning=ReasoningReplay(item_id="rs"),
        ),
    )
    assert host.done.outcome == finished_text("")


def test_streamed_text_is_not_emitted_again() -> None:
    m = machine()
    drain(m)
    m.respond(LlmCompleted(id=1, response=reply("streamed"), text_streamed=True))
    polled = drain(m)
    assert trace(polled) == [
        "Emit(token_usage)",
        "Emit(llm_response)",
        "Progress(iter=0, delta=[u0,m0])",
        "Checkpoint#2(before_completion)",
    ]


def test_full_text_without_parts_is_treated_as_one_text_part() -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply("only full text", parts=[])])
    host.run()
    assert m.messages[-1].parts == (
        Part(id="m0.p0", kind=PartKind.PROSE, content="only full text"),
    )


# ---------------------------------------------------------------- empty replies (departure 8)


@pytest.mark.parametrize("text", ["", "  \n "])
def test_empty_reply_not_after_a_tool_result_is_a_provider_error(text: str) -> None:
    m = machine()
    host = ScriptedHost(m, llm=[reply(text)])
    host.run()
    expected = ["Emit(llm_request)", "LlmCall#1", "Emit(token_usage)"]
    if text:
        expected.append("Emit(text_delta)")
    expected += ["Emit(llm_response)", "Emit(error)", "Done(stopped:provider_error)"]
    assert trace(host.effects) == expected
    message = "The model returned an empty response."
    assert events(host.effects, ErrorReported) == [
        ErrorReported(
            message=message,
            envelope=ErrorEnvelope(
                kind="llm_provider", user_message=message, code="empty_response"
            ),
        )
    ]
    assert host.done.outcome == Stopped(reason=StopReason.PROVIDER_ERROR, message=message)
    assert m.messages == (USER,)


# ---------------------------------------------------------------- tool arguments (departure 7)


@pytest.mark.parametrize(
    ("input_json", "args", "problem"),
    [
        ('{"path": "a"}', {"path": "a"}, None),
        ("", {}, None),
        ("   ", {}, None),
        ("[1, 2]", {}, "arguments must be a JSON object, got array"),
        ('"text"', {}, "arguments must be a JSON object, got string"),
        ("null", {}, "arguments must be a JSON object, got null"),
    ],
)
def test_parse_tool_arguments(
    input_json: str, args: dict[str, object], problem: str | None
) -> None:
    assert parse_tool_arguments(input_json) == (args, problem)


def test_invalid_json_arguments_become_args_error_and_the_turn_goes_on() -> None:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(calls=[tool_call("c1", "read", '{"path": '), tool_call("c2", "read", "[1]")]),
            reply("ok"),
        ],
        tools=[["bad args", "bad args"]],
    )
    host.run()
    batch = of_type(host.effects, ToolCalls)[0]
    first, second = batch.calls
    assert first.args == {}
    assert first.input_json == '{"path": '
    assert first.args_error is not None
    assert first.args_error.startswith("arguments are not valid JSON (")
    assert second == PendingToolCall(
        call_id="c2",
        tool_name="read",
        args={},
        input_json="[1]",
        args_error="arguments must be a JSON object, got array",
    )
    # the raw text is what the history keeps
    assert [p.content for p in m.messages[1].parts] == ['{"path": ', "[1]"]
    assert host.done.outcome == finished_text("ok")


# ================================================================ helpers and unit behaviour


@pytest.mark.parametrize(
    ("buffer", "addition", "piece"),
    [
        ("", "a", "a"),
        ("", "\na", "\na"),
        ("a", "b", "\n\nb"),
        ("a\n", "b", "\nb"),
        ("a\n\n", "b", "b"),
        ("a", "\nb", "\n\nb"),
        ("a\n", "\nb", "\nb"),
        ("a\n\n\n", "b", "b"),
    ],
)
def test_join_assistant_text(buffer: str, addition: str, piece: str) -> None:
    assert join_assistant_text(buffer, addition) == piece


def test_prepare_iteration_projects_with_tools() -> None:
    m = machine()
    actions = StandardDriver().prepare_iteration(m)
    assert actions == [StartLlm(request=m.project_request(use_tools=True))]


def test_handle_tool_results_actions() -> None:
    m = machine()
    call = PendingToolCall(call_id="c1", tool_name="read", args={})
    actions = StandardDriver().handle_tool_results(m, [complete(call, "x")])
    assert [type(a) for a in actions] == [AppendMessages, AdvanceIteration, StartCheckpoint]
    assert actions[2] == StartCheckpoint(
        kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration()
    )


def test_handle_llm_success_final_answer_actions() -> None:
    m = machine()
    actions = StandardDriver().handle_llm_success(m, m.project_request(), None, reply("yes"), False)
    assert [type(a) for a in actions] == [EmitEvent, EmitEvent, AppendMessages, StartCheckpoint]
    assert actions[-1] == StartCheckpoint(
        kind=CheckpointKind.BEFORE_COMPLETION, on_empty=FinishWith(outcome=finished_text("yes"))
    )


def test_handle_llm_success_tool_round_actions() -> None:
    m = machine()
    actions = StandardDriver().handle_llm_success(
        m, m.project_request(), None, reply(calls=[tool_call("c1", "read")]), False
    )
    assert [type(a) for a in actions] == [EmitEvent, AppendMessages, StartTools]


def test_exec_results_are_a_runtime_error_for_the_standard_protocol() -> None:
    m = machine()
    actions = StandardDriver().handle_exec_result(m, None, ExecResult(id=1))
    message = "The standard protocol does not execute code."
    assert actions == [
        EmitEvent(
            event=ErrorReported(
                message=message,
                envelope=ErrorEnvelope(
                    kind="runtime", user_message=message, code="unexpected_exec"
                ),
            )
        ),
        Finish(outcome=Stopped(reason=StopReason.RUNTIME_ERROR, message=message)),
    ]


def test_checkpoint_hold_sentinel_stops_the_host() -> None:
    """The helper's HOLD leaves the effect outstanding (guards the other tests)."""
    m = machine()
    host = ScriptedHost(m, llm=[reply("x")], checkpoints=[HOLD])
    host.run()
    assert trace(host.effects)[-1] == "Checkpoint#2(before_completion)"
    assert not m.is_done
