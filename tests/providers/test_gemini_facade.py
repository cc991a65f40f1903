"""The facade with the Gemini provider over loopback: a tool call, then an answer."""

from __future__ import annotations

import json
from typing import Any

from provider_support import API_KEY, fixture_reply, load_fixtures, run, serving

from lash import LashCore, tool
from lash.kernel.llm import LlmUsage
from lash.kernel.outcome import Finished
from lash.providers.gemini import GeminiProvider
from lash.runtime.activity import AssistantProseDelta

FIXTURES = {fx.name: fx for fx in load_fixtures("gemini")}
asked: list[str] = []


@tool
def get_country() -> str:
    """The user's country."""
    asked.append("get_country")
    return "France"


def test_a_tool_turn_runs_through_the_gemini_provider() -> None:
    call = FIXTURES["function_call_stream_sse"]  # asks for get_country(), with a signature
    answer = FIXTURES["text_stream_sse"]

    async def main() -> tuple[Any, Any]:
        async with serving(fixture_reply(call), fixture_reply(answer)) as server:
            provider = GeminiProvider(api_key=API_KEY, base_url=server.base_url)
            core = LashCore(provider=provider, model="gemini-3-pro-preview", tools=[get_country])
            async with provider, core.session("s") as session:
                result = await session.run("What is the capital of my country?")
            return result, server.received

    asked.clear()
    result, received = run(main())
    assert isinstance(result.outcome, Finished)
    assert result.text == answer.expected["text"]
    deltas = "".join(a.text for a in result.activities if isinstance(a, AssistantProseDelta))
    assert deltas == answer.expected["text"]
    assert asked == ["get_country"]
    [completed] = result.tool_calls
    assert completed.name == "get_country"
    assert completed.output.value == "France"

    first, second = received
    for request in received:
        assert request.path == "/v1/models/gemini-3-pro-preview:streamGenerateContent?alt=sse"
        assert request.headers["x-goog-api-key"] == API_KEY
    sent = first.json()
    assert sent["contents"][-1] == {
        "role": "user",
        "parts": [{"text": "What is the capital of my country?"}],
    }
    declarations = {d["name"]: d for d in sent["tools"][0]["functionDeclarations"]}
    declaration = declarations["get_country"]
    assert declaration["description"] == "The user's country."
    assert declaration["parametersJsonSchema"]["type"] == "object"
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert "systemInstruction" in sent

    # the second request replays the call with its signature and answers it by name
    follow_up = second.json()["contents"]
    recorded_part = _first_part(call.body)
    model_turn, results = follow_up[-2], follow_up[-1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [recorded_part]
    assert results["role"] == "user"
    [response] = results["parts"]
    assert response["functionResponse"]["name"] == "get_country"
    assert "id" not in response["functionResponse"]
    assert "France" in response["functionResponse"]["response"]["output"]

    call_usage = call.expected["usage"]
    answer_usage = answer.expected["usage"]
    assert result.usage == LlmUsage(
        input_tokens=call_usage["input_tokens"] + answer_usage["input_tokens"],
        output_tokens=call_usage["output_tokens"] + answer_usage["output_tokens"],
        reasoning_tokens=call_usage["reasoning_tokens"],
    )


def _first_part(body: bytes) -> dict[str, Any]:
    first_event = body.split(b"\r\n\r\n", 1)[0].removeprefix(b"data: ")
    part: dict[str, Any] = json.loads(first_event)["candidates"][0]["content"]["parts"][0]
    return part
