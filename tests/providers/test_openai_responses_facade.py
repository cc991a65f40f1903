"""The facade end to end over the Responses provider: a tool call, then an answer."""

from __future__ import annotations

import json
from typing import Any

from provider_support import API_KEY, fixture_reply, load_fixtures, run, serving

from lash import LashCore, tool
from lash.kernel.outcome import Finished
from lash.providers.openai_responses import OpenAIResponsesProvider
from lash.providers.sse import iter_sse_events
from lash.runtime.activity import AssistantProseDelta

FIXTURES = {fx.name: fx for fx in load_fixtures("openai-responses")}


@tool
async def final_result(result: int) -> str:
    """Record the final result."""
    return f"recorded {result}"


def done_items(body: bytes) -> list[dict[str, Any]]:
    items = []
    for event in iter_sse_events(body):
        payload = json.loads(event.data)
        if payload["type"] == "response.output_item.done":
            items.append(payload["item"])
    return items


def test_a_tool_turn_runs_through_the_responses_provider() -> None:
    asks = FIXTURES["reasoning_tool_call_stream"]  # reasoning + a final_result call
    answers = FIXTURES["text_stream"]

    async def main() -> tuple[Any, Any]:
        async with serving(fixture_reply(asks), fixture_reply(answers)) as server:
            provider = OpenAIResponsesProvider(api_key=API_KEY, base_url=server.base_url)
            async with provider:
                core = LashCore(provider=provider, model="gpt-5", tools=[final_result])
                async with core.session("s") as session:
                    result = await session.run("Calculate 100 * 200 / 3")
            return result, server.received

    result, received = run(main())
    assert isinstance(result.outcome, Finished)
    assert result.text == answers.expected["text"]
    deltas = "".join(a.text for a in result.activities if isinstance(a, AssistantProseDelta))
    assert deltas == answers.expected["text"]
    [call] = result.tool_calls
    assert call.output.value == "recorded 6666"

    first, second = (r.json() for r in received)
    assert all(r.path == "/v1/responses" for r in received)
    assert first["stream"] is True
    assert first["store"] is False
    assert first["include"] == ["reasoning.encrypted_content"]
    assert "final_result" in [t["name"] for t in first["tools"]]
    assert first["input"][-1]["content"] == [
        {"type": "input_text", "text": "Calculate 100 * 200 / 3"}
    ]
    assert "previous_response_id" not in second
    # the second call sends everything again: the question, the vendor's reasoning
    # item verbatim, its function call, and the tool's result
    reasoning, function_call = done_items(asks.body)
    sent = second["input"]
    assert sent[: len(first["input"])] == first["input"]
    tail = sent[len(first["input"]) :]
    assert tail[0] == {k: reasoning[k] for k in ("type", "id", "summary", "encrypted_content")}
    keys = ("type", "id", "call_id", "name", "arguments")
    assert tail[1] == {k: function_call[k] for k in keys}
    assert tail[2]["type"] == "function_call_output"
    assert tail[2]["call_id"] == function_call["call_id"]
    assert "recorded 6666" in tail[2]["output"]
