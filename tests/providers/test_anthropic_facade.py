"""The facade with the Anthropic provider: a tool round trip over loopback."""

from __future__ import annotations

import json
from typing import Any

from provider_support import API_KEY, Reply, run, serving

from lash import LashCore, tool
from lash.kernel.outcome import Finished
from lash.runtime.activity import AssistantProseDelta, ReasoningDelta

SSE = "text/event-stream; charset=utf-8"
SIGNATURE = "EqQBCkYIBxgCKkBsig+nature=="


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def ev(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def delta(index: int, **body: Any) -> bytes:
    return ev("content_block_delta", index=index, delta=body)


def start(message_id: str, input_tokens: int) -> bytes:
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return ev("message_start", message=message)


TOOL_TURN = [
    start("msg_1", 50),
    ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
    delta(0, type="thinking_delta", thinking="I need the add tool."),
    delta(0, type="signature_delta", signature=SIGNATURE),
    ev("content_block_stop", index=0),
    ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
    delta(1, type="text_delta", text="Let me add them."),
    ev("content_block_stop", index=1),
    ev(
        "content_block_start",
        index=2,
        content_block={"type": "tool_use", "id": "toolu_01", "name": "add", "input": {}},
    ),
    delta(2, type="input_json_delta", partial_json='{"a": 2, '),
    delta(2, type="input_json_delta", partial_json='"b": 40}'),
    ev("content_block_stop", index=2),
    ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 30}),
    ev("message_stop"),
]
ANSWER_TURN = [
    start("msg_2", 90),
    ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    delta(0, type="text_delta", text="The sum "),
    delta(0, type="text_delta", text="is 42."),
    ev("content_block_stop", index=0),
    ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 7}),
    ev("message_stop"),
]


def test_a_tool_turn_runs_through_the_anthropic_provider() -> None:
    from lash.providers.anthropic import AnthropicProvider

    async def main() -> tuple[Any, Any]:
        replies = [
            Reply(content_type=SSE, chunks=TOOL_TURN),
            Reply(content_type=SSE, chunks=ANSWER_TURN),
        ]
        async with serving(*replies) as server:
            provider = AnthropicProvider(api_key=API_KEY, base_url=server.base_url)
            async with provider:
                core = LashCore(
                    provider=provider,
                    model="claude-sonnet-4-5",
                    tools=[add],
                    instructions="You add numbers.",
                )
                async with core.session("s") as session:
                    result = await session.run("What is 2 + 40?")
            return result, server.received

    result, received = run(main(), timeout=20)
    assert isinstance(result.outcome, Finished)
    assert result.text == "The sum is 42."
    [call] = result.tool_calls
    assert call.name == "add"
    assert call.args == {"a": 2, "b": 40}
    prose = "".join(a.text for a in result.activities if isinstance(a, AssistantProseDelta))
    assert "The sum is 42." in prose
    thoughts = "".join(a.text for a in result.activities if isinstance(a, ReasoningDelta))
    assert thoughts == "I need the add tool."
    assert result.usage.input_tokens == 140
    assert result.usage.output_tokens == 37

    first, second = (r.json() for r in received)
    assert all(r.path == "/v1/messages" for r in received)
    assert all(r.headers["x-api-key"] == API_KEY for r in received)
    assert first["model"] == "claude-sonnet-4-5"
    assert first["stream"] is True
    assert "You add numbers." in first["system"][0]["text"]
    tools = {t["name"]: t for t in first["tools"]}
    assert tools["add"]["input_schema"]["properties"].keys() == {"a", "b"}
    assert tools["add"]["description"] == "Add two integers."
    assert first["tool_choice"] == {"type": "auto"}
    assert first["messages"][-1]["role"] == "user"
    assert "What is 2 + 40?" in json.dumps(first["messages"][-1])

    # the second call replays the signed thinking, the call and its result
    assistant, results = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "I need the add tool.",
        "signature": SIGNATURE,
    }
    kinds = [b["type"] for b in assistant["content"]]
    assert kinds == ["thinking", "text", "tool_use"]
    assert assistant["content"][2] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "add",
        "input": {"a": 2, "b": 40},
    }
    assert results["role"] == "user"
    [result_block] = [b for b in results["content"] if b["type"] == "tool_result"]
    assert result_block["tool_use_id"] == "toolu_01"
    assert "42" in json.dumps(result_block.get("content"))
    assert results["content"][0] is not None
    assert results["content"][0]["type"] == "tool_result"
