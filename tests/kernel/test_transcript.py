"""The transcript renderer: history as one user message of numbered turns (reference §3.3)."""

from __future__ import annotations

import msgspec
import pytest

from lash.kernel.attachments import AttachmentRef
from lash.kernel.llm import ImageBlock, LlmMessage, LlmRole, ReasoningReplay, TextBlock
from lash.kernel.messages import Cleared, Message, Part, PartKind, Role
from lash.kernel.transcript import (
    NO_REPLY_PLACEHOLDER,
    TRANSCRIPT_CLOSING,
    TRANSCRIPT_HEADER,
    render_transcript_prompt,
)

IMG1 = AttachmentRef(id="1" * 64, mime="image/png", byte_len=10)
IMG2 = AttachmentRef(id="2" * 64, mime="image/jpeg", byte_len=20)

HEAD = TRANSCRIPT_HEADER + "\n\n"
TAIL = "\n\n" + TRANSCRIPT_CLOSING


def msg(mid: str, role: Role, *parts: Part) -> Message:
    """A message whose parts get ids ``{mid}.p{i}``."""
    return Message(
        id=mid,
        role=role,
        parts=tuple(msgspec.structs.replace(p, id=f"{mid}.p{i}") for i, p in enumerate(parts)),
    )


def part(kind: PartKind, content: str = "", **kw: object) -> Part:
    return Part(id="", kind=kind, content=content, **kw)  # type: ignore[arg-type]


def text(mid: str, role: Role, content: str) -> Message:
    kind = PartKind.PROSE if role is Role.ASSISTANT else PartKind.TEXT
    return msg(mid, role, part(kind, content))


def render_text(history: list[Message]) -> str:
    """The transcript text, checking the single-message, single-text-block shape."""
    rendered, attachments = render_transcript_prompt(history)
    assert attachments == ()
    assert len(rendered) == 1
    (message,) = rendered
    assert message.role is LlmRole.USER
    (block,) = message.blocks
    assert isinstance(block, TextBlock)
    assert block.cache_breakpoint is False
    assert block.response_meta is None
    return block.text


# ================================================================ ported reference tests


def test_render_transcript_prompt_orders_turns_oldest_first() -> None:
    history = [
        text("m0", Role.USER, "first"),
        text("m1", Role.ASSISTANT, "reply one"),
        text("m2", Role.USER, "second"),
    ]
    rendered, attachments = render_transcript_prompt(history)
    assert attachments == ()
    assert rendered == (
        LlmMessage.text(
            LlmRole.USER,
            "Conversation so far, replayed as numbered turns with the oldest first.\n"
            'Every "Assistant" section is your own earlier output in this same session.\n'
            "\n"
            "=== Turn 1 ===\n"
            "User:\n"
            "first\n"
            "\n"
            "Assistant (you):\n"
            "reply one\n"
            "\n"
            "=== Turn 2 ===\n"
            "User:\n"
            "second\n"
            "\n"
            "Assistant (you):\n"
            "\n"
            "Resume at the final turn above, speaking as the assistant.\n"
            "If the work is done, reply with the final answer; if not, take the next step.",
        ),
    )


def test_render_transcript_prompt_collects_attachments() -> None:
    history = [msg("m0", Role.USER, part(PartKind.IMAGE, attachment=IMG1))]
    rendered, attachments = render_transcript_prompt(history)
    assert attachments == (IMG1,)
    assert rendered == (
        LlmMessage(
            role=LlmRole.USER,
            blocks=(
                TextBlock(
                    text=HEAD + "=== Turn 1 ===\nUser:\n[Image attached]\n\nAssistant (you):" + TAIL
                ),
                ImageBlock(attachment_idx=0),
            ),
        ),
    )


def test_render_transcript_prompt_omits_missing_assistant_placeholder_for_current_turn() -> None:
    history = [
        text("m0", Role.USER, "first"),
        text("m1", Role.ASSISTANT, "reply one"),
        text("m2", Role.USER, "second"),
    ]
    got = render_text(history)
    assert got.endswith("=== Turn 2 ===\nUser:\nsecond\n\nAssistant (you):" + TAIL)
    assert NO_REPLY_PLACEHOLDER not in got


def test_render_transcript_prompt_preserves_tool_name_for_assistant_tool_calls() -> None:
    history = [
        text("m0", Role.USER, "what time is it"),
        msg(
            "m1",
            Role.ASSISTANT,
            part(
                PartKind.TOOL_CALL, '{"timezone":"UTC"}', tool_call_id="tc1", tool_name="get_time"
            ),
        ),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nwhat time is it\n\n"
        'Assistant (you):\nget_time({"timezone":"UTC"})' + TAIL
    )


def test_render_transcript_prompt_omits_runtime_notes_section() -> None:
    got = render_text([text("m0", Role.USER, "hi")])
    assert got == HEAD + "=== Turn 1 ===\nUser:\nhi\n\nAssistant (you):" + TAIL
    assert "Runtime" not in got


# ================================================================ turn boundaries


def test_empty_history_renders_header_marker_and_closing() -> None:
    assert render_text([]) == HEAD + "[no turns yet]" + TAIL


def test_history_of_only_blank_or_reasoning_parts_renders_no_turns() -> None:
    history = [
        text("u0", Role.USER, "   "),
        msg("a0", Role.ASSISTANT, part(PartKind.REASONING, "thinking")),
        msg("s0", Role.SYSTEM),
    ]
    assert render_text(history) == HEAD + "[no turns yet]" + TAIL


def test_only_events_each_open_a_turn() -> None:
    history = [
        text("e0", Role.EVENT, "process started"),
        text("e1", Role.EVENT, "process exited"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nEvent:\nprocess started\n\n"
        "Assistant (you):\n[no assistant reply recorded]\n\n"
        "=== Turn 2 ===\nUser:\nEvent:\nprocess exited\n\n"
        "Assistant (you):" + TAIL
    )


def test_consecutive_user_messages_open_separate_turns() -> None:
    history = [
        text("u0", Role.USER, "one"),
        text("u1", Role.USER, "two"),
        text("a0", Role.ASSISTANT, "both done"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\none\n\n"
        "Assistant (you):\n[no assistant reply recorded]\n\n"
        "=== Turn 2 ===\nUser:\ntwo\n\n"
        "Assistant (you):\nboth done" + TAIL
    )


def test_trailing_assistant_text_fills_the_last_turn() -> None:
    history = [
        text("u0", Role.USER, "hello"),
        text("a0", Role.ASSISTANT, "hi"),
        text("a1", Role.ASSISTANT, "how can I help?"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nhello\n\nAssistant (you):\nhi\n\nhow can I help?" + TAIL
    )


def test_leading_assistant_text_gets_a_user_placeholder() -> None:
    history = [text("a0", Role.ASSISTANT, "welcome"), text("u0", Role.USER, "thanks")]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\n[no user input in this turn]\n\n"
        "Assistant (you):\nwelcome\n\n"
        "=== Turn 2 ===\nUser:\nthanks\n\nAssistant (you):" + TAIL
    )


def test_blank_user_message_still_closes_the_current_turn() -> None:
    history = [
        text("u0", Role.USER, "q"),
        text("a0", Role.ASSISTANT, "a"),
        text("u1", Role.USER, ""),
        text("a1", Role.ASSISTANT, "more"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nq\n\nAssistant (you):\na\n\n"
        "=== Turn 2 ===\nUser:\n[no user input in this turn]\n\nAssistant (you):\nmore" + TAIL
    )


def test_event_after_user_text_opens_a_turn_and_is_prefixed() -> None:
    history = [
        text("u0", Role.USER, "watch the build"),
        msg("e0", Role.EVENT, part(PartKind.TEXT, "build"), part(PartKind.TEXT, "failed")),
        text("a0", Role.ASSISTANT, "looking"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nwatch the build\n\n"
        "Assistant (you):\n[no assistant reply recorded]\n\n"
        "=== Turn 2 ===\nUser:\nEvent:\nbuild\n\nfailed\n\nAssistant (you):\nlooking" + TAIL
    )


# ================================================================ part rendering


def test_system_notes_and_repl_parts_go_to_the_assistant_slot_without_prefix() -> None:
    history = [
        text("u0", Role.USER, "one"),
        msg("a0", Role.ASSISTANT, part(PartKind.CODE, "x = 1"), part(PartKind.PROSE, "ran it")),
        msg(
            "s0",
            Role.SYSTEM,
            part(PartKind.CODE, "print(x)"),
            part(PartKind.OUTPUT, "1"),
            part(PartKind.ERROR, "boom"),
        ),
        text("s1", Role.SYSTEM, "context compacted"),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\none\n\nAssistant (you):\n"
        "x = 1\n\nran it\n\n"
        "print(x)\n\n<output>\n1\n</output>\n\n<error>\nboom\n</error>\n\n"
        "context compacted" + TAIL
    )


def test_reasoning_parts_are_skipped_even_with_replay_data() -> None:
    history = [
        text("u0", Role.USER, "why?"),
        msg(
            "a0",
            Role.ASSISTANT,
            part(PartKind.REASONING, "secret", reasoning=ReasoningReplay(signature="sig")),
            part(PartKind.PROSE, "because"),
        ),
    ]
    got = render_text(history)
    assert got == HEAD + "=== Turn 1 ===\nUser:\nwhy?\n\nAssistant (you):\nbecause" + TAIL
    assert "secret" not in got


def test_tool_calls_and_results_render_as_readable_text() -> None:
    history = [
        text("u0", Role.USER, "read it"),
        msg(
            "a0",
            Role.ASSISTANT,
            part(PartKind.PROSE, "reading"),
            part(PartKind.TOOL_CALL, '{"path":"a.md"}', tool_call_id="c1", tool_name="read"),
            part(PartKind.TOOL_CALL, "{}", tool_call_id="c2", tool_name="ask"),
            part(PartKind.TOOL_CALL, "", tool_call_id="c3"),
            part(PartKind.TOOL_CALL, "", tool_call_id="c4", tool_name="old"),
        ),
        msg(
            "u1",
            Role.USER,
            part(PartKind.TOOL_RESULT, "# A", tool_call_id="c1", tool_name="read"),
            part(PartKind.TOOL_RESULT, "", tool_call_id="c2", tool_name="ask"),
            part(PartKind.TOOL_RESULT, "done", tool_call_id="c3"),
            part(PartKind.TOOL_RESULT, "big", tool_call_id="c4", tool_name="old", prune=Cleared()),
        ),
    ]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\nread it\n\n"
        'Assistant (you):\nreading\n\nread({"path":"a.md"})\n\nask()\n\ntool()\n\nold()\n\n'
        "=== Turn 2 ===\nUser:\n"
        "Tool result (read):\n# A\n\n"
        "Tool result (ask): [empty]\n\n"
        "Tool result:\ndone\n\n"
        "Tool result (old):\n[Old tool result content cleared]\n\n"
        "Assistant (you):" + TAIL
    )


def test_user_images_are_collected_in_order_with_matching_image_blocks() -> None:
    history = [
        msg(
            "u0",
            Role.USER,
            part(PartKind.TEXT, "compare"),
            part(PartKind.IMAGE, attachment=IMG1),
            part(PartKind.IMAGE, attachment=IMG2),
        ),
        text("a0", Role.ASSISTANT, "same"),
        msg("u1", Role.USER, part(PartKind.IMAGE, attachment=IMG1)),
    ]
    rendered, attachments = render_transcript_prompt(history)
    assert attachments == (IMG1, IMG2, IMG1)
    (message,) = rendered
    assert message.role is LlmRole.USER
    assert message.blocks == (
        TextBlock(
            text=HEAD + "=== Turn 1 ===\nUser:\ncompare\n\n[Image attached]\n\n[Image attached]\n\n"
            "Assistant (you):\nsame\n\n"
            "=== Turn 2 ===\nUser:\n[Image attached]\n\nAssistant (you):" + TAIL
        ),
        ImageBlock(attachment_idx=0),
        ImageBlock(attachment_idx=1),
        ImageBlock(attachment_idx=2),
    )


@pytest.mark.parametrize("role", [Role.ASSISTANT, Role.SYSTEM, Role.EVENT])
def test_images_outside_user_messages_are_text_only(role: Role) -> None:
    history = [msg("m0", role, part(PartKind.IMAGE, attachment=IMG1))]
    got = render_text(history)
    assert "[Image attached]" in got


def test_image_without_attachment_keeps_its_description() -> None:
    history = [msg("u0", Role.USER, part(PartKind.IMAGE, "a cat"), part(PartKind.IMAGE))]
    assert render_text(history) == (
        HEAD + "=== Turn 1 ===\nUser:\na cat\n\n[Image attached]\n\nAssistant (you):" + TAIL
    )


def test_rendering_is_deterministic_and_accepts_any_sequence() -> None:
    history = (text("u0", Role.USER, "a"), text("a0", Role.ASSISTANT, "b"))
    assert render_transcript_prompt(history) == render_transcript_prompt(list(history))
