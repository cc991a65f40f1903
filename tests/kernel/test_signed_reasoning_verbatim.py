"""Signed reasoning is kept byte for byte; unsigned reasoning is tidied.

Anthropic verifies a replayed thinking block against its signature, so the
text that goes back must be exactly the text that came: the standard driver
keeps reasoning that carries replay data verbatim (whitespace included) and
strips only unsigned reasoning. The replies here come from the real Anthropic
parser, and the follow-up request goes through the real Anthropic body builder.
"""

from __future__ import annotations

from typing import Any

import pytest
from scripted import ScriptedHost, reasoning, reply, tool_call

from lash.kernel.llm import (
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmToolSpec,
    ReasoningBlock,
    ReasoningReplay,
    TextOutput,
)
from lash.kernel.machine import MachineConfig, TurnMachine
from lash.kernel.messages import PartKind, user_message
from lash.kernel.protocols.standard import StandardDriver
from lash.providers.anthropic import build_messages_body, parse_message

READ = LlmToolSpec(name="read", description="Read a file.", input_schema={"type": "object"})
SIGNATURE = "EqQBCkYIBxgCKkDsig+/=="
THINKING = "  First, read the file.\n\nThen answer.  \n"


def config() -> MachineConfig:
    return MachineConfig(driver=StandardDriver(), model="claude-sonnet-4-5", tools=(READ,))


def machine() -> TurnMachine:
    return TurnMachine(config(), inputs=[user_message("u0", "hi")])


def anthropic_reply(*content: dict[str, Any], stop: str) -> LlmResponse:
    """A Messages reply as the real parser reads it."""
    return parse_message(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "content": list(content),
            "stop_reason": stop,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
    )


THINKING_BLOCK = {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE}
TOOL_BLOCK = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}


def replayed(request: LlmRequest) -> list[ReasoningBlock]:
    return [
        block
        for message in request.messages
        if message.role is LlmRole.ASSISTANT
        for block in message.blocks
        if isinstance(block, ReasoningBlock)
    ]


@pytest.mark.parametrize("restore", [False, True], ids=["live", "restored"])
def test_signed_thinking_goes_back_to_anthropic_unchanged(restore: bool) -> None:
    first = anthropic_reply(THINKING_BLOCK, TOOL_BLOCK, stop="tool_use")
    m = machine()
    host = ScriptedHost(
        m,
        llm=[first, reply("done")],
        tools=[["contents"]],
        restore_with=config() if restore else None,
    )
    host.run()
    second = host.requests[1]
    assert replayed(second) == [
        ReasoningBlock(text=THINKING, replay=ReasoningReplay(signature=SIGNATURE))
    ]
    body = build_messages_body(second, model="claude-sonnet-4-5", images={}, stream=True)
    assistant = next(m for m in body["messages"] if m["role"] == "assistant")
    assert assistant["content"][0] == THINKING_BLOCK
    assert assistant["content"][1]["type"] == "tool_use"


def test_signed_reasoning_in_a_final_answer_is_stored_verbatim() -> None:
    answer = anthropic_reply(THINKING_BLOCK, {"type": "text", "text": "42"}, stop="end_turn")
    m = machine()
    host = ScriptedHost(m, llm=[answer])
    host.run()
    parts = host.machine.messages[-1].parts
    assert [(p.kind, p.content) for p in parts] == [
        (PartKind.REASONING, THINKING),
        (PartKind.PROSE, "42"),
    ]


def test_signed_whitespace_only_thinking_is_kept_as_sent() -> None:
    blank = {"type": "thinking", "thinking": " \n", "signature": SIGNATURE}
    m = machine()
    host = ScriptedHost(
        m,
        llm=[anthropic_reply(blank, TOOL_BLOCK, stop="tool_use"), reply("done")],
        tools=[["contents"]],
    )
    host.run()
    blocks = replayed(host.requests[1])
    assert [(b.text, b.replay) for b in blocks] == [(" \n", ReasoningReplay(signature=SIGNATURE))]


def test_unsigned_reasoning_is_still_stripped_or_dropped() -> None:
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                "ok",
                parts=[
                    reasoning("  plain thoughts \n"),
                    reasoning("   "),
                    reasoning(""),
                    TextOutput(text="ok"),
                ],
            )
        ],
    )
    host.run()
    parts = host.machine.messages[-1].parts
    assert [(p.kind, p.content, p.reasoning) for p in parts] == [
        (PartKind.REASONING, "plain thoughts", None),
        (PartKind.PROSE, "ok", None),
    ]


def test_any_replay_data_counts_as_signed() -> None:
    """Encrypted (OpenAI) and redacted reasoning keep their text untouched too."""
    encrypted = ReasoningReplay(item_id="rs_1", encrypted_content="gAAAA", summary=(" s ",))
    m = machine()
    host = ScriptedHost(
        m,
        llm=[
            reply(
                calls=[tool_call("c1", "read")],
                parts=[
                    reasoning(
                        " summary \n", item_id="rs_1", encrypted_content="gAAAA", summary=(" s ",)
                    ),
                    reasoning("\n", redacted=True, encrypted_content="opaque"),
                    tool_call("c1", "read"),
                ],
            ),
            reply("done"),
        ],
        tools=[["x"]],
    )
    host.run()
    blocks = replayed(host.requests[1])
    assert [(b.text, b.replay) for b in blocks] == [
        (" summary \n", encrypted),
        ("\n", ReasoningReplay(redacted=True, encrypted_content="opaque")),
    ]
