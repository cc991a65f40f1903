"""The provider conformance suite over all four HTTP providers, plus wire-shape checks.

Each target is built the way an application builds it, through
``provider_from_string`` with the base URL pointed at the suite's loopback
server. The wire scripts are held to the recorded vendor fixtures: every JSON
field path and stream event type they emit must occur in a real recording,
except for a short, explained list of fields no recording happens to contain.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from provider_support import API_KEY, FIXTURES, load_fixtures

from lash.kernel.llm import (
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    ReasoningBlock,
    ReasoningOutput,
    ReasoningReplay,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
)
from lash.providers.base import Provider, ReasoningDeltaEvent, StreamCallback
from lash.providers.http import ProviderHandle, RetryPolicy
from lash.providers.select import provider_from_string
from lash.providers.sse import SseDecoder
from lash.testing.provider_conformance import (
    SCENARIOS,
    AnthropicWire,
    ConformanceTarget,
    GeminiWire,
    OpenAIChatWire,
    OpenAIResponsesWire,
    ProviderConformance,
    WireScript,
    WireServer,
    check_events,
    close_provider,
    conformance_request,
    one_byte_pieces,
    render_wire,
    run_scenario,
    scenario,
    wire_script,
)

_TLS = ssl.create_default_context()  # built once: a fresh one per client costs ~25 ms


@dataclass
class _Selected:
    """A provider from ``provider_from_string`` and the HTTP client lent to it."""

    handle: ProviderHandle
    client: httpx.AsyncClient

    @property
    def name(self) -> str:
        return self.handle.name

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        return await self.handle.complete(request, on_event)

    async def aclose(self) -> None:
        await self.client.aclose()


def _select(spec: str, env: dict[str, str], **kwargs: Any) -> _Selected:
    client = httpx.AsyncClient(verify=_TLS, timeout=httpx.Timeout(10.0))
    selection = provider_from_string(
        spec, env=env, retry=RetryPolicy.disabled(), http_client=client, **kwargs
    )
    return _Selected(selection.provider, client)


def _targets() -> dict[str, ConformanceTarget]:
    return {
        "openai-chat": ConformanceTarget(
            script=OpenAIChatWire(),
            make_provider=lambda url: _select(
                "openai:gpt-4.1", {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"{url}/v1"}
            ),
            model="gpt-4.1",
        ),
        "openai-responses": ConformanceTarget(
            script=OpenAIResponsesWire(),
            make_provider=lambda url: _select(
                "openai-responses:gpt-5",
                {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"{url}/v1"},
            ),
            model="gpt-5",
        ),
        "anthropic": ConformanceTarget(
            script=AnthropicWire(),
            make_provider=lambda url: _select(
                "anthropic:claude-sonnet-4-5",
                {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url},
            ),
            model="claude-sonnet-4-5",
        ),
        "gemini": ConformanceTarget(
            script=GeminiWire("sse"),
            make_provider=lambda url: _select(
                "gemini:gemini-2.5-flash",
                {"GEMINI_API_KEY": API_KEY, "GEMINI_BASE_URL": f"{url}/v1beta"},
            ),
            model="gemini-2.5-flash",
        ),
        "gemini-json-array": ConformanceTarget(
            script=GeminiWire("json_array"),
            make_provider=lambda url: _select(
                "gemini:gemini-2.5-flash",
                {"GOOGLE_API_KEY": API_KEY, "GEMINI_BASE_URL": f"{url}/v1beta"},
                sse=False,
            ),
            model="gemini-2.5-flash",
        ),
    }


TARGETS = _targets()


class TestProviderConformance(ProviderConformance):
    @pytest.fixture(params=sorted(TARGETS))
    def target(self, request: pytest.FixtureRequest) -> ConformanceTarget:
        return TARGETS[request.param]


# ---------------------------------------------------------------- wire shapes vs recordings


_ARGUMENTS = frozenset({"input", "args"})  # tool arguments: the scenario's, not the vendor's


def _paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key path in ``value`` (list positions collapse to ``[]``)."""
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if key not in _ARGUMENTS:
                yield from _paths(child, path)
    elif isinstance(value, list):
        for child in value:
            yield from _paths(child, f"{prefix}[]")


def _documents(body: bytes, content_type: str) -> list[tuple[str | None, Any]]:
    """The JSON documents of a body, each with its SSE event name (if any)."""
    if "event-stream" in content_type:
        decoder = SseDecoder()
        events = [*decoder.feed(body), *decoder.close()]
        return [(e.event, json.loads(e.data)) for e in events if e.data.strip() != "[DONE]"]
    value = json.loads(body)
    if isinstance(value, list):
        return [(None, v) for v in value]
    return [(None, value)]


def _shape(documents: list[tuple[str | None, Any]]) -> set[str]:
    shape: set[str] = set()
    for event, doc in documents:
        kind = doc.get("type") if isinstance(doc, dict) else None
        tag = kind if isinstance(kind, str) else (event or "")
        if event is not None:
            shape.add(f"event:{event}")
        shape.update(f"{tag}|{path}" for path in _paths(doc))
    return shape


# Fields the scripts send that no recording contains, each with why it is real.
_NOT_RECORDED: dict[str, dict[str, str]] = {
    "openai-chat": {
        "choices[].message.reasoning_content": "the reasoning field of compatible servers "
        "(vLLM, DeepSeek); OpenAI itself never returns reasoning text",
        "choices[].delta.reasoning_content": "streamed form of the same field",
    },
    "openai-responses": {
        "event:response.incomplete": "the terminal event of a reply cut short "
        "(max_output_tokens, content_filter); no incomplete reply was recorded",
        "incomplete_details.reason": "why a response is incomplete",
        "response.incomplete_details.reason": "the same, inside stream events",
    },
    "anthropic": {},
    "gemini": {},
}


def _recorded_shape(api: str) -> set[str]:
    shape: set[str] = set()
    for fixture in load_fixtures(api):
        if fixture.meta["status"] != 200:
            continue
        shape |= _shape(_documents(fixture.body, fixture.meta["content_type"]))
    return shape


def _untagged(shape: set[str]) -> set[str]:
    return {entry.partition("|")[2] or entry for entry in shape}


@pytest.mark.parametrize(
    ("script", "api"),
    [
        (OpenAIChatWire(), "openai-chat"),
        (OpenAIResponsesWire(), "openai-responses"),
        (AnthropicWire(), "anthropic"),
        (GeminiWire("sse"), "gemini"),
        (GeminiWire("json_array"), "gemini"),
    ],
    ids=lambda v: v.label if isinstance(v, WireScript) else None,
)
def test_wire_scripts_only_use_recorded_fields(script: WireScript, api: str) -> None:
    recorded = _untagged(_recorded_shape(api))
    allowed = _NOT_RECORDED[api]
    for item in SCENARIOS:
        for stream in (False, True):
            if item.name in script.unsupported:
                continue
            reply = script.render(item, stream=stream)
            produced = _untagged(_shape(_documents(reply.body, reply.content_type)))
            strange = {
                p
                for p in produced - recorded
                if not any(p == a or p.endswith("." + a) for a in allowed)
            }
            assert not strange, (
                f"{script.label} {item.name} ({'stream' if stream else 'json'}) uses fields no "
                f"{api} recording has: {sorted(strange)}"
            )


def test_every_recorded_api_has_an_exception_table() -> None:
    apis = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert apis == set(_NOT_RECORDED)


def test_gemini_streams_use_the_recorded_framing() -> None:
    reply = GeminiWire("sse").render(scenario("plain_text_stop"), stream=True)
    assert all(piece.endswith(b"\r\n\r\n") for piece in reply.pieces)
    array = GeminiWire("json_array").render(scenario("plain_text_stop"), stream=True)
    assert array.body.startswith(b"[{")
    assert array.body.endswith(b"\n]")
    assert array.body.count(b"\n,\r\n") == len(array.pieces) - 2


def test_one_byte_pieces_reach_the_client_one_byte_at_a_time() -> None:
    """The premise of the byte-boundary runs: every HTTP chunk is a separate read."""
    reply = render_wire("anthropic", scenario("streaming_text_assembly"), stream=True)
    pieces = one_byte_pieces(reply.body)

    async def reads() -> list[bytes]:
        async with (
            WireServer(reply.rechunked(pieces)) as server,
            httpx.AsyncClient(verify=_TLS) as client,
            client.stream("POST", f"{server.base_url}/v1/messages") as response,
        ):
            assert response.headers["content-type"] == reply.content_type
            return [chunk async for chunk in response.aiter_bytes()]

    got = asyncio.run(reads())
    assert got == list(pieces)
    assert len(got) == len(reply.body) > 1000


def test_wire_scripts_by_api_name() -> None:
    item = scenario("tool_use")
    for api in ("openai-chat", "openai-responses", "anthropic", "gemini", "gemini-json-array"):
        assert wire_script(api).label == api
        assert render_wire(api, item, stream=False) == TARGETS[api].script.json(item)
    with pytest.raises(KeyError, match="no wire script for 'cohere'"):
        wire_script("cohere")


# ---------------------------------------------------------------- the suite catches mistakes


class _WrongUsageChat(OpenAIChatWire):
    """A broken script: reports completion tokens without counting reasoning in them."""

    @staticmethod
    def _usage(usage: Any) -> dict[str, Any]:
        wire = OpenAIChatWire._usage(usage)
        wire["completion_tokens"] = usage.output_tokens
        return wire


def test_the_suite_rejects_a_usage_mismatch() -> None:
    target = ConformanceTarget(
        script=_WrongUsageChat(),
        make_provider=TARGETS["openai-chat"].make_provider,
        model="gpt-4.1",
    )

    class Probe(ProviderConformance):
        pass

    with pytest.raises(AssertionError, match=r"usage_reasoning .*usage LlmUsage"):
        Probe().test_non_streamed(target, scenario("usage_reasoning"))


def test_the_suite_rejects_a_provider_that_asks_for_the_wrong_mode() -> None:
    def always_streaming(url: str) -> Provider:
        env = {"ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": url}
        return _select("anthropic:claude-sonnet-4-5", env, stream=True)

    target = ConformanceTarget(AnthropicWire(), always_streaming, "claude-sonnet-4-5")
    with pytest.raises(AssertionError, match="'stream' is True, expected False"):
        ProviderConformance().run(target, scenario("plain_text_stop"), stream=False)


@pytest.mark.parametrize("name", ["openai-chat", "anthropic", "openai-responses"])
def test_the_suite_rejects_a_stream_without_reasoning_deltas(name: str) -> None:
    item = scenario("reasoning_extraction")
    outcome = asyncio.run(run_scenario(TARGETS[name], item, stream=True))
    check_events(item, outcome.response, outcome.events, who=name)
    silent = [e for e in outcome.events if not isinstance(e, ReasoningDeltaEvent)]
    assert len(silent) < len(outcome.events)
    with pytest.raises(AssertionError, match="reasoning deltas assemble to ''"):
        check_events(item, outcome.response, silent, who=name)


# ---------------------------------------------------------------- cross-vendor history


def _history(response: LlmResponse) -> LlmMessage:
    """The assistant message a reply becomes in the next request."""
    blocks: list[Any] = []
    for part in response.parts:
        if isinstance(part, TextOutput):
            blocks.append(TextBlock(text=part.text, response_meta=part.response_meta))
        elif isinstance(part, ReasoningOutput):
            blocks.append(ReasoningBlock(text=part.text, replay=part.replay))
        elif isinstance(part, ToolCallOutput):
            blocks.append(
                ToolCallBlock(
                    call_id=part.call_id,
                    tool_name=part.tool_name,
                    input_json=part.input_json,
                    replay=part.replay,
                )
            )
    return LlmMessage(role=LlmRole.ASSISTANT, blocks=tuple(blocks))


def _signed_reply(name: str) -> LlmResponse:
    """A real reply with signed reasoning from the vendor ``name``."""
    outcome = asyncio.run(
        run_scenario(TARGETS[name], scenario("reasoning_extraction"), stream=False)
    )
    replays = [p.replay for p in outcome.response.parts if isinstance(p, ReasoningOutput)]
    assert any(r is not None and not r.is_empty for r in replays)
    return outcome.response


async def _anthropic_body(history: LlmMessage) -> dict[str, Any]:
    """The Messages body the anthropic kind actually sends after ``history``."""
    reply = AnthropicWire().render(scenario("plain_text_stop"), stream=False)
    async with WireServer(reply) as server:
        provider = TARGETS["anthropic"].make_provider(server.base_url)
        try:
            request = LlmRequest(
                model="claude-sonnet-4-5",
                messages=(
                    *conformance_request("claude-sonnet-4-5").messages,
                    history,
                    LlmMessage.text(LlmRole.USER, "And now?"),
                ),
            )
            await provider.complete(request)
        finally:
            await close_provider(provider)
    body = server.received[0].json()
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("vendor", ["gemini", "openai-responses"])
def test_foreign_signed_reasoning_is_not_replayed_to_anthropic(vendor: str) -> None:
    reply = _signed_reply(vendor)
    body = asyncio.run(_anthropic_body(_history(reply)))
    assistant = [m for m in body["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 1
    kinds = [block["type"] for block in assistant[0]["content"]]
    assert "thinking" not in kinds
    assert "redacted_thinking" not in kinds
    assert kinds == ["text"]
    assert assistant[0]["content"][0]["text"] == scenario("reasoning_extraction").full_text


def test_anthropic_signed_reasoning_is_still_replayed_verbatim() -> None:
    reply = _signed_reply("anthropic")
    body = asyncio.run(_anthropic_body(_history(reply)))
    assistant = next(m for m in body["messages"] if m["role"] == "assistant")
    thinking = assistant["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"] == scenario("reasoning_extraction").reasoning_text
    expected = next(p for p in reply.parts if isinstance(p, ReasoningOutput))
    assert expected.replay is not None
    assert thinking["signature"] == expected.replay.signature


@pytest.mark.parametrize(
    ("replay", "sent"),
    [
        (ReasoningReplay(signature="sig-a"), "thinking"),
        (ReasoningReplay(redacted=True, encrypted_content="data-a"), "redacted_thinking"),
        (ReasoningReplay(item_id="gemini:resp-1", signature="sig-g"), None),
        (ReasoningReplay(item_id="gemini:", signature="sig-g"), None),
        (ReasoningReplay(item_id="gemini:r", redacted=True, encrypted_content="d"), None),
        (ReasoningReplay(item_id="rs_1", encrypted_content="gAAAA", summary=("s",)), None),
        (ReasoningReplay(encrypted_content="gAAAA", summary=("s",)), None),
        (ReasoningReplay(signature="sig", encrypted_content="gAAAA"), None),
        (ReasoningReplay(encrypted_content="gAAAA"), None),
        (None, None),
    ],
    ids=[
        "anthropic-signed",
        "anthropic-redacted",
        "gemini-signed",
        "gemini-signed-no-response-id",
        "gemini-tagged-redacted",
        "openai-encrypted",
        "openai-encrypted-no-id",
        "signature-with-encrypted-content",
        "encrypted-only",
        "unsigned",
    ],
)
def test_anthropic_replays_only_its_own_reasoning(
    replay: ReasoningReplay | None, sent: str | None
) -> None:
    message = LlmMessage(
        role=LlmRole.ASSISTANT,
        blocks=(ReasoningBlock(text=" why \n", replay=replay), TextBlock(text="because")),
    )
    body = asyncio.run(_anthropic_body(message))
    assistant = next(m for m in body["messages"] if m["role"] == "assistant")
    kinds = [block["type"] for block in assistant["content"]]
    assert kinds == (["text"] if sent is None else [sent, "text"])
    if sent == "thinking":
        assert assistant["content"][0] == {
            "type": "thinking",
            "thinking": " why \n",
            "signature": "sig-a",
        }
