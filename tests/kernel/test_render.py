"""Rendering history into requests, projection, resume safety, reasoning (reference §3.1-3.6)."""

from __future__ import annotations

import json

import msgspec
import pytest

from lash.kernel import codec
from lash.kernel import render as render_module
from lash.kernel.attachments import AttachmentRef
from lash.kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    LlmCall,
    LlmCompleted,
    ToolCalls,
    ToolResults,
)
from lash.kernel.llm import (
    GenerationOptions,
    ImageBlock,
    JsonObjectOutput,
    LlmMessage,
    LlmResponse,
    LlmRole,
    LlmToolSpec,
    ProviderReplayMeta,
    ReasoningBlock,
    ReasoningReplay,
    ResponseTextMeta,
    TerminalReason,
    TextBlock,
    ToolCallBlock,
    ToolCallOutput,
    ToolChoice,
    ToolResultBlock,
)
from lash.kernel.machine import MachineConfig, TurnCheckpoint, TurnMachine
from lash.kernel.messages import (
    Cleared,
    Deleted,
    Message,
    Part,
    PartKind,
    PluginOrigin,
    ProcessOrigin,
    Role,
    Summarized,
    TurnCause,
    user_message,
)
from lash.kernel.projector import ChatProjector, ProjectionInput
from lash.kernel.protocols.standard import StandardDriver
from lash.kernel.render import (
    TURN_EVENTS_HEADER,
    RenderCache,
    RenderedMessage,
    chat_text,
    messages_are_prompt_resume_safe,
    render_message,
    render_prompt,
    render_turn_causes,
)
from lash.kernel.tools.output import CompletedToolCall, TextReturn, ToolOutput

IMG1 = AttachmentRef(id="1" * 64, mime="image/png", byte_len=10)
IMG2 = AttachmentRef(id="2" * 64, mime="image/jpeg", byte_len=20, label="photo")


def msg(mid: str, role: Role, *parts: Part) -> Message:
    """A message whose parts get ids ``{mid}.p{i}``."""
    return Message(
        id=mid,
        role=role,
        parts=tuple(msgspec.structs.replace(p, id=f"{mid}.p{i}") for i, p in enumerate(parts)),
    )


def part(kind: PartKind, content: str = "", **kw: object) -> Part:
    return Part(id="", kind=kind, content=content, **kw)  # type: ignore[arg-type]


def call(cid: str, name: str = "read", args: str = "{}", **kw: object) -> Part:
    return part(PartKind.TOOL_CALL, args, tool_call_id=cid, tool_name=name, **kw)


def result(cid: str, text: str = "ok", name: str = "read") -> Part:
    return part(PartKind.TOOL_RESULT, text, tool_call_id=cid, tool_name=name)


def project(
    messages: list[Message],
    causes: list[TurnCause] = (),  # type: ignore[assignment]
    *,
    system_prompt: str = "",
    use_tools: bool = True,
    **kw: object,
) -> object:
    return ChatProjector().project(
        ProjectionInput(
            model="m",
            system_prompt=system_prompt,
            tools=(LlmToolSpec(name="read"),),
            messages=messages,
            turn_causes=causes,
            use_tools=use_tools,
            **kw,  # type: ignore[arg-type]
        )
    )


def all_text(request: object) -> list[tuple[LlmRole, str]]:
    return [
        (m.role, b.text)
        for m in request.messages  # type: ignore[attr-defined]
        for b in m.blocks
        if isinstance(b, TextBlock)
    ]


# ================================================================ projector and turn causes


def test_chat_context_projector_projects_event_context_as_user_messages() -> None:
    active = TurnCause(
        id="ev1",
        event_type="wake",
        text="timer fired\n",
        origin=PluginOrigin(plugin_id="cron", transient=True),
    )
    inactive = TurnCause(id="ev0", event_type="old", text="an earlier event")
    history = [inactive.to_event_message(), user_message("u0", "hi"), active.to_event_message()]
    request = project(history, [active], system_prompt="You help.")
    assert all_text(request) == [
        (LlmRole.SYSTEM, "You help."),
        (LlmRole.USER, "Runtime event:\nan earlier event"),
        (LlmRole.USER, "hi"),
        (
            LlmRole.USER,
            "=== TURN EVENTS ===\n\n--- event[0] \u00b7 wake \u00b7 ev1 ---\n"
            "Origin: plugin cron (transient)\n\ntimer fired",
        ),
    ]
    # the active cause appears exactly once, and never in a system message
    assert sum("timer fired" in t for _, t in all_text(request)) == 1
    assert all("timer fired" not in t for r, t in all_text(request) if r is LlmRole.SYSTEM)


def test_render_turn_causes_origins() -> None:
    causes = [
        TurnCause(id="a", event_type="t1", text=" one ", origin=PluginOrigin(plugin_id="p")),
        TurnCause(
            id="b",
            event_type="t2",
            text="two",
            origin=ProcessOrigin(process_id="proc", event_type="exit", sequence=7),
        ),
        TurnCause(
            id="c",
            event_type="t3",
            text="three",
            origin=ProcessOrigin(process_id="proc", event_type="out", sequence=8, wake_id="w9"),
        ),
        TurnCause(id="d", event_type="t4", text="four"),
    ]
    assert render_turn_causes(causes) == "\n".join(
        [
            TURN_EVENTS_HEADER,
            "",
            "--- event[0] \u00b7 t1 \u00b7 a ---",
            "Origin: plugin p",
            "",
            "one",
            "",
            "--- event[1] \u00b7 t2 \u00b7 b ---",
            "Origin: process proc exit #7",
            "",
            "two",
            "",
            "--- event[2] \u00b7 t3 \u00b7 c ---",
            "Origin: process proc out #8 (w9)",
            "",
            "three",
            "",
            "--- event[3] \u00b7 t4 \u00b7 d ---",
            "Origin: host",
            "",
            "four",
        ]
    )
    assert TURN_EVENTS_HEADER == "=== TURN EVENTS ==="


def test_turn_cause_event_message() -> None:
    origin = ProcessOrigin(process_id="p", event_type="e", sequence=1)
    cause = TurnCause(id="ev", event_type="e", text="body", origin=origin)
    assert cause.to_event_message() == Message(
        id="ev",
        role=Role.EVENT,
        parts=(Part(id="ev.p0", kind=PartKind.TEXT, content="body"),),
        origin=origin,
    )


def test_projector_request_fields() -> None:
    request = project(
        [user_message("u0", "hi")],
        system_prompt="   ",
        use_tools=False,
        model_variant="fast",
        generation=GenerationOptions(output_token_cap=100),
        run_session_id="run-1",
        output_spec=JsonObjectOutput(),
    )
    assert request.messages == (LlmMessage.text(LlmRole.USER, "hi"),)  # type: ignore[attr-defined]
    assert request.tools == ()  # type: ignore[attr-defined]
    assert request.tool_choice is ToolChoice.NONE  # type: ignore[attr-defined]
    assert request.model_variant == "fast"  # type: ignore[attr-defined]
    assert request.generation == GenerationOptions(output_token_cap=100)  # type: ignore[attr-defined]
    assert request.session_id == "run-1"  # type: ignore[attr-defined]
    assert request.output_spec == JsonObjectOutput()  # type: ignore[attr-defined]
    with_tools = project([user_message("u0", "hi")])
    assert with_tools.tools == (LlmToolSpec(name="read"),)  # type: ignore[attr-defined]
    assert with_tools.tool_choice is ToolChoice.AUTO  # type: ignore[attr-defined]


def test_machine_request_uses_the_projector() -> None:
    m = TurnMachine(
        MachineConfig(driver=StandardDriver(), model="m", system_prompt="sys", run_session_id="r"),
        inputs=[user_message("u0", "hi")],
    )
    request = m.project_request(use_tools=False)
    assert [(x.role, x.blocks) for x in request.messages] == [
        (LlmRole.SYSTEM, (TextBlock(text="sys"),)),
        (LlmRole.USER, (TextBlock(text="hi"),)),
    ]
    assert request.session_id == "r"


# ================================================================ structured rendering


def test_llm_request_includes_image_prompt_parts_for_attached_images() -> None:
    history = [
        msg("u0", Role.USER, part(PartKind.TEXT, "first"), part(PartKind.IMAGE, attachment=IMG1)),
        msg("a0", Role.ASSISTANT, part(PartKind.PROSE, "seen")),
        msg("u1", Role.USER, part(PartKind.IMAGE, attachment=IMG2), part(PartKind.TEXT, "second")),
    ]
    request = project(history)
    assert request.attachments == (IMG1, IMG2)  # type: ignore[attr-defined]
    assert [m.blocks for m in request.messages] == [  # type: ignore[attr-defined]
        (TextBlock(text="first"), ImageBlock(attachment_idx=0)),
        (TextBlock(text="seen"),),
        (ImageBlock(attachment_idx=1), TextBlock(text="second")),
    ]


def test_images_outside_user_messages_render_as_text() -> None:
    rendered, attachments = render_prompt(
        [
            msg("a", Role.ASSISTANT, part(PartKind.IMAGE, attachment=IMG1)),
            msg("s", Role.SYSTEM, part(PartKind.IMAGE, "diagram of the flow")),
            msg("u", Role.USER, part(PartKind.IMAGE, "  ")),
        ]
    )
    assert attachments == ()
    assert [m.blocks for m in rendered] == [
        (TextBlock(text="[Image attached]"),),
        (TextBlock(text="Runtime note:\ndiagram of the flow"),),
        (TextBlock(text="[Image attached]"),),
    ]


def test_render_structured_prompt_preserves_tool_protocol_and_user_images() -> None:
    replay = ProviderReplayMeta(item_id="fc_1", opaque={"k": [1]})
    meta = ResponseTextMeta(id="msg_1", status="completed")
    history = [
        msg("u0", Role.USER, part(PartKind.TEXT, "look at this")),
        msg(
            "a0",
            Role.ASSISTANT,
            part(PartKind.PROSE, "Reading.", response_meta=meta),
            call("c1", "read", ' {"p": "a"} ', tool_replay=replay),
        ),
        msg(
            "u1",
            Role.USER,
            result("c1", "contents"),
            part(PartKind.IMAGE, attachment=IMG1, tool_call_id="c1"),
        ),
    ]
    rendered, attachments = render_prompt(history)
    assert attachments == (IMG1,)
    assert [(m.role, m.blocks) for m in rendered] == [
        (LlmRole.USER, (TextBlock(text="look at this"),)),
        (
            LlmRole.ASSISTANT,
            (
                TextBlock(text="Reading.", response_meta=meta),
                ToolCallBlock(
                    call_id="c1", tool_name="read", input_json=' {"p": "a"} ', replay=replay
                ),
            ),
        ),
        (
            LlmRole.USER,
            (
                ToolResultBlock(call_id="c1", content="contents", tool_name="read"),
                ImageBlock(attachment_idx=0),
            ),
        ),
    ]


def test_render_structured_prompt_preserves_empty_tool_results() -> None:
    rendered, _ = render_prompt(
        [msg("a", Role.ASSISTANT, call("c1")), msg("u", Role.USER, result("c1", ""))]
    )
    assert rendered[1].blocks == (ToolResultBlock(call_id="c1", content="", tool_name="read"),)


def test_tool_parts_render_as_blocks_in_any_role_with_defaults() -> None:
    rendered, _ = render_prompt(
        [msg("u", Role.USER, part(PartKind.TOOL_CALL, "{}"), part(PartKind.TOOL_RESULT, "r"))]
    )
    assert rendered[0].blocks == (
        ToolCallBlock(call_id="", tool_name="", input_json="{}"),
        ToolResultBlock(call_id="", content="r"),
    )


def test_render_prompt_repl_preserves_message_boundaries() -> None:
    history = [
        msg("u0", Role.USER, part(PartKind.TEXT, "one")),
        msg("u1", Role.USER, part(PartKind.TEXT, "two")),
        msg("a0", Role.ASSISTANT, part(PartKind.CODE, "x = 1"), part(PartKind.PROSE, "ran it")),
        msg(
            "s0",
            Role.SYSTEM,
            part(PartKind.CODE, "print(x)"),
            part(PartKind.OUTPUT, "1"),
            part(PartKind.ERROR, "boom"),
        ),
        msg("e0", Role.EVENT, part(PartKind.TEXT, "process exited")),
    ]
    rendered, _ = render_prompt(history)
    assert [(m.role, m.blocks) for m in rendered] == [
        (LlmRole.USER, (TextBlock(text="one"),)),
        (LlmRole.USER, (TextBlock(text="two"),)),
        (LlmRole.ASSISTANT, (TextBlock(text="x = 1"), TextBlock(text="ran it"))),
        (
            LlmRole.SYSTEM,
            (
                TextBlock(text="Runtime note:\nprint(x)"),
                TextBlock(text="Runtime note:\n<output>\n1\n</output>"),
                TextBlock(text="Runtime note:\n<error>\nboom\n</error>"),
            ),
        ),
        (LlmRole.USER, (TextBlock(text="Runtime event:\nprocess exited"),)),
    ]


def test_blank_text_is_skipped_and_empty_messages_are_dropped() -> None:
    rendered, _ = render_prompt(
        [
            msg("u0", Role.USER, part(PartKind.TEXT, "  \n"), part(PartKind.TEXT, "kept")),
            msg("u1", Role.USER, part(PartKind.TEXT, "")),
            msg("a0", Role.ASSISTANT, part(PartKind.REASONING, "thoughts")),
            msg("a1", Role.ASSISTANT),
        ]
    )
    assert [m.blocks for m in rendered] == [(TextBlock(text="kept"),)]
    assert render_message(msg("u1", Role.USER)).message is None


def test_response_meta_is_carried_only_for_text_and_prose() -> None:
    meta = ResponseTextMeta(id="x")
    rendered, _ = render_prompt(
        [
            msg(
                "a",
                Role.ASSISTANT,
                part(PartKind.PROSE, "p", response_meta=meta),
                part(PartKind.CODE, "c", response_meta=meta),
            )
        ]
    )
    assert rendered[0].blocks == (TextBlock(text="p", response_meta=meta), TextBlock(text="c"))


def test_pruned_parts_render_their_placeholders() -> None:
    cleared = result("c1", "big output")
    cleared = msgspec.structs.replace(cleared, prune=Cleared())
    deleted = part(PartKind.TEXT, "x", prune=Deleted(breadcrumb="read a.txt", archive_hash="abc"))
    summarized = part(PartKind.PROSE, "x", prune=Summarized(summary="short", archive_hash="def"))
    image = part(PartKind.IMAGE, "", attachment=IMG1, prune=Cleared())
    assert cleared.render() == "[Old tool result content cleared]"
    assert deleted.render() == "[pruned:abc \u2014 read a.txt]"
    assert summarized.render() == "[SUMMARY of original def]\nshort"
    assert image.render() == "[Image attached]"
    assert part(PartKind.IMAGE, "caption", prune=Cleared()).render() == "caption"
    rendered, _ = render_prompt(
        [msg("a", Role.ASSISTANT, call("c1")), msg("u", Role.USER, cleared)]
    )
    assert rendered[1].blocks == (
        ToolResultBlock(
            call_id="c1", content="[Old tool result content cleared]", tool_name="read"
        ),
    )


@pytest.mark.parametrize(
    ("name", "args", "text"),
    [
        ("read", ' {"p": 1} ', 'read({"p": 1})'),
        ("read", "{}", "read()"),
        ("read", "  ", "read()"),
        (None, '{"a":1}', 'tool({"a":1})'),
    ],
)
def test_chat_text_of_assistant_tool_calls(name: str | None, args: str, text: str) -> None:
    m = Message(
        id="a",
        role=Role.ASSISTANT,
        parts=(Part(id="a.p0", kind=PartKind.TOOL_CALL, content=args, tool_name=name),),
    )
    assert chat_text(m, 0) == text


def test_chat_text_wraps_system_output_and_error_only() -> None:
    system = msg("s", Role.SYSTEM, part(PartKind.OUTPUT, "o"), part(PartKind.ERROR, "e"))
    user = msg("u", Role.USER, part(PartKind.OUTPUT, "o"), part(PartKind.ERROR, "e"))
    assert [chat_text(system, i) for i in range(2)] == [
        "<output>\no\n</output>",
        "<error>\ne\n</error>",
    ]
    assert [chat_text(user, i) for i in range(2)] == ["o", "e"]


def test_prompt_char_count() -> None:
    m = msg(
        "a",
        Role.USER,
        part(PartKind.REASONING, "not counted"),
        part(PartKind.IMAGE, attachment=IMG1),
        part(PartKind.IMAGE, "cap"),
        part(PartKind.TEXT, "hello"),
        part(PartKind.TEXT, "x", prune=Cleared()),
    )
    assert [p.prompt_char_count for p in m.parts] == [0, 64, 3, 5, 33]
    assert m.char_count == 105


def test_render_cache_reuses_only_identical_messages() -> None:
    cache = RenderCache()
    first = msg("u0", Role.USER, part(PartKind.TEXT, "one"))
    assert render_prompt([first], cache) == render_prompt([first])
    assert render_prompt([first], cache) == render_prompt([first])
    changed = msg("u0", Role.USER, part(PartKind.TEXT, "changed"))  # same id, new object
    rendered, _ = render_prompt([changed], cache)
    assert rendered == (LlmMessage.text(LlmRole.USER, "changed"),)
    # attachments are rebased correctly when cached messages are reused at new offsets
    img = msg("u1", Role.USER, part(PartKind.IMAGE, attachment=IMG2))
    render_prompt([img], cache)
    rendered, attachments = render_prompt(
        [msg("u2", Role.USER, part(PartKind.IMAGE, attachment=IMG1)), img], cache
    )
    assert attachments == (IMG1, IMG2)
    assert rendered[1].blocks == (ImageBlock(attachment_idx=1),)


def test_projector_memo_gives_the_same_request_as_a_fresh_projector() -> None:
    memo = RenderCache()
    history = [user_message("u0", "a"), msg("a0", Role.ASSISTANT, part(PartKind.PROSE, "b"))]

    def req(messages: list[Message], cache: RenderCache | None) -> object:
        return ChatProjector().project(
            ProjectionInput(
                model="m",
                system_prompt="s",
                tools=(),
                messages=messages,
                turn_causes=(),
                use_tools=True,
                render_cache=cache,
            )
        )

    assert req(history, memo) == req(history, None)
    longer = [*history, user_message("u1", "c")]
    assert req(longer, memo) == req(longer, None)
    assert req(history[:1], memo) == req(history[:1], None)


@pytest.fixture
def rendered_ids(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ids of the messages ``render_message`` renders from now on."""
    ids: list[str] = []
    real = render_module.render_message

    def counting(message: Message) -> RenderedMessage:
        ids.append(message.id)
        return real(message)

    monkeypatch.setattr(render_module, "render_message", counting)
    return ids


def _call_the_model_once(m: TurnMachine) -> None:
    """Answer effects until the next model call, then ask for one ``read``."""
    while (effect := m.poll()) is not None:
        if isinstance(effect, LlmCall):
            ask = ToolCallOutput(call_id=f"c{effect.id}", tool_name="read", input_json="{}")
            response = LlmResponse(parts=(ask,), terminal_reason=TerminalReason.TOOL_USE)
            m.respond(LlmCompleted(id=effect.id, response=response))
            return
        if isinstance(effect, ToolCalls):
            done = tuple(
                CompletedToolCall(
                    call_id=c.call_id,
                    tool_name=c.tool_name,
                    args=c.args,
                    output=ToolOutput.success("ok"),
                    model_return=(TextReturn(text="ok"),),
                )
                for c in effect.calls
            )
            m.respond(ToolResults(id=effect.id, results=done))
        elif isinstance(effect, Checkpoint):
            m.respond(CheckpointDelivered(id=effect.id))


def test_machines_sharing_a_config_keep_their_own_render_memo(rendered_ids: list[str]) -> None:
    cfg = MachineConfig(driver=StandardDriver(), model="m", tools=(LlmToolSpec(name="read"),))
    sessions = [
        TurnMachine(
            cfg,
            [user_message(f"{s}.h{i}", "earlier") for i in range(50)],
            inputs=[user_message(f"{s}.u", "hi")],
            message_ids=lambda n, s=s: f"{s}.m{n}",  # type: ignore[misc]
        )
        for s in ("a", "b")
    ]
    for _ in range(3):
        for m in sessions:
            _call_the_model_once(m)
    # Each machine renders its 51 messages once, then per call only the two new
    # ones (the model's tool call and its result), however the calls interleave.
    assert len(rendered_ids) == 2 * (51 + 2 + 2)
    assert [i for i in rendered_ids if i.startswith("a.m")] == ["a.m0", "a.m1", "a.m2", "a.m3"]


def test_a_host_can_carry_one_render_cache_across_a_sessions_turns(
    rendered_ids: list[str],
) -> None:
    cfg = MachineConfig(driver=StandardDriver(), model="m")
    cache = RenderCache()
    history = [user_message(f"h{i}", "earlier") for i in range(20)]
    first = TurnMachine(cfg, history, inputs=[user_message("u1", "hi")], render_cache=cache)
    first.project_request()
    second = TurnMachine(
        cfg, first.messages, inputs=[user_message("u2", "again")], render_cache=cache
    )
    request = second.project_request()
    assert rendered_ids == [*(m.id for m in history), "u1", "u2"]
    assert request == TurnMachine(cfg, second.messages).project_request()


def test_llm_message_is_blank() -> None:
    assert LlmMessage(role=LlmRole.USER, blocks=(TextBlock(text=" "),)).is_blank
    assert not LlmMessage(role=LlmRole.USER, blocks=(ImageBlock(attachment_idx=0),)).is_blank
    assert not LlmMessage.text(LlmRole.USER, "x").is_blank


# ================================================================ reasoning


def test_reasoning_parts_without_replay_are_never_rendered() -> None:
    rendered, _ = render_prompt(
        [
            msg(
                "a",
                Role.ASSISTANT,
                part(PartKind.REASONING, "private"),
                part(PartKind.REASONING, "also private", reasoning=ReasoningReplay()),
                part(PartKind.PROSE, "answer"),
            )
        ]
    )
    assert rendered[0].blocks == (TextBlock(text="answer"),)


def test_reasoning_parts_with_replay_become_reasoning_blocks() -> None:
    replay = ReasoningReplay(item_id="rs_1", encrypted_content="enc", summary=("s1", "s2"))
    rendered, _ = render_prompt(
        [
            msg(
                "a",
                Role.ASSISTANT,
                part(PartKind.REASONING, "summary text", reasoning=replay),
                call("c1"),
            )
        ]
    )
    assert rendered[0].blocks == (
        ReasoningBlock(text="summary text", replay=replay),
        ToolCallBlock(call_id="c1", tool_name="read", input_json="{}"),
    )


def test_reasoning_parts_are_ignored_by_resume_safety_and_char_count() -> None:
    m = msg("a", Role.ASSISTANT, part(PartKind.REASONING, "long thoughts " * 10))
    assert m.char_count == 0
    assert messages_are_prompt_resume_safe([m])


@pytest.mark.parametrize(
    "replay",
    [
        ReasoningReplay(
            item_id="rs", encrypted_content="e", signature="s", redacted=True, summary=("a", "b")
        ),
        ReasoningReplay(signature="only"),
    ],
)
def test_reasoning_part_roundtrips_through_the_codec(replay: ReasoningReplay) -> None:
    m = msg("a", Role.ASSISTANT, part(PartKind.REASONING, "text", reasoning=replay))
    blob = codec.encode(m)
    assert codec.decode(blob, Message) == m


def test_reasoning_replay_wire_form_omits_defaults() -> None:
    p = Part(
        id="a.p0", kind=PartKind.REASONING, content="", reasoning=ReasoningReplay(signature="s")
    )
    assert json.loads(codec.encode(p)) == {
        "id": "a.p0",
        "kind": "reasoning",
        "reasoning": {"signature": "s"},
    }
    assert ReasoningReplay().is_empty
    assert not ReasoningReplay(redacted=True).is_empty
    assert not ReasoningReplay(summary=("x",)).is_empty


def test_message_sequence_serializes_as_flat_message_array() -> None:
    history = (
        user_message("u0", "hi"),
        msg("a0", Role.ASSISTANT, part(PartKind.PROSE, "yo"), call("c1")),
        msg("u1", Role.USER, result("c1")),
    )
    blob = codec.encode(history)
    assert json.loads(blob) == [json.loads(codec.encode(x)) for x in history]
    assert codec.decode(blob, tuple[Message, ...]) == history
    m = TurnMachine(
        MachineConfig(driver=StandardDriver(), model="m"), history[:1], inputs=history[1:]
    )
    document = json.loads(codec.encode_document("turn_checkpoint", m.checkpoint()))
    assert document["data"]["messages"] == json.loads(blob)
    assert (
        codec.decode_document(
            codec.encode_document("turn_checkpoint", m.checkpoint()),
            "turn_checkpoint",
            TurnCheckpoint,
        ).messages
        == history
    )


# ================================================================ prompt resume safety (§3.6)


def test_prompt_resume_safety_accepts_completed_tool_history() -> None:
    history = [
        user_message("u0", "go"),
        msg("a0", Role.ASSISTANT, part(PartKind.PROSE, "x"), call("c1"), call("c2")),
        msg("u1", Role.USER, result("c2"), result("c1")),
        msg("a1", Role.ASSISTANT, call("c3")),
        msg("u2", Role.USER, result("c3", "")),
        msg("a2", Role.ASSISTANT, part(PartKind.PROSE, "done")),
    ]
    assert messages_are_prompt_resume_safe(history)
    assert messages_are_prompt_resume_safe([])


@pytest.mark.parametrize(
    "history",
    [
        [msg("a0", Role.ASSISTANT, call("c1"))],
        [msg("a0", Role.ASSISTANT, call("c1"), call("c2")), msg("u0", Role.USER, result("c1"))],
        [msg("u0", Role.USER, result("c1")), msg("a0", Role.ASSISTANT, call("c1"))],
        [msg("u0", Role.USER, call("c1")), msg("u1", Role.USER, result("c1"))],
        [msg("a0", Role.ASSISTANT, call("c1")), msg("a1", Role.ASSISTANT, result("c1"))],
        [msg("a0", Role.ASSISTANT, call("c1"), call("c1")), msg("u0", Role.USER, result("c1"))],
        [msg("a0", Role.ASSISTANT, call("c1")), msg("u0", Role.USER, result("c1"), result("c1"))],
        [msg("a0", Role.ASSISTANT, call(" ")), msg("u0", Role.USER, result(" "))],
        [msg("a0", Role.ASSISTANT, call("c1")), msg("u0", Role.USER, result("zz"))],
    ],
    ids=[
        "unanswered",
        "one-of-two-unanswered",
        "result-before-call",
        "call-in-user-message",
        "result-in-assistant-message",
        "duplicate-call-id",
        "answered-twice",
        "blank-id",
        "unknown-result",
    ],
)
def test_prompt_resume_safety_rejects_unmatched_tool_calls(history: list[Message]) -> None:
    assert not messages_are_prompt_resume_safe(history)
