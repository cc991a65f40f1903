"""Request mapping for the Responses API: golden bodies, and the SDK's own types."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from provider_support import API_KEY, Reply, run, serving

from lash.kernel.attachments import AttachmentRef
from lash.kernel.llm import (
    GenerationOptions,
    ImageBlock,
    JsonObjectOutput,
    JsonSchemaOutput,
    LlmMessage,
    LlmRequest,
    LlmRole,
    LlmToolSpec,
    ProviderReplayMeta,
    ReasoningBlock,
    ReasoningReplay,
    ResponseTextMeta,
    TextBlock,
    ToolCallBlock,
    ToolChoice,
    ToolResultBlock,
)
from lash.providers import ProviderError
from lash.providers.openai_responses import (
    OpenAIResponsesProvider,
    build_responses_body,
    openai_responses_from_env,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
PNG_ID = "a" * 64
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
BLOB = "gAAAAABencrypted-reasoning-blob=="


def full_request(**overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {
        "model": "openai:gpt-5.5",
        "attachments": (AttachmentRef(id=PNG_ID, mime="image/png", byte_len=len(PNG)),),
        "messages": (
            LlmMessage.text(LlmRole.SYSTEM, "Be brief."),
            LlmMessage.text(LlmRole.SYSTEM, "Use metric units."),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(TextBlock(text="What is in this picture?"), ImageBlock(attachment_idx=0)),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    ReasoningBlock(
                        text="Looking at the picture",
                        replay=ReasoningReplay(
                            item_id="rs_1",
                            encrypted_content=BLOB,
                            summary=("Looking at the picture",),
                        ),
                    ),
                    ReasoningBlock(text="display only, nothing to replay"),
                    TextBlock(
                        text="Let me check.",
                        response_meta=ResponseTextMeta(
                            id="msg_vendor_1", status="completed", phase="commentary"
                        ),
                    ),
                    ToolCallBlock(
                        call_id="call_1",
                        tool_name="weather",
                        input_json='{"city":"X"}',
                        replay=ProviderReplayMeta(item_id="fc_1"),
                    ),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(ToolResultBlock(call_id="call_1", content="sunny", tool_name="weather"),),
            ),
            LlmMessage.text(LlmRole.SYSTEM, "Runtime note: one tool call left."),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="Checking again."),
                    TextBlock(text=" Still checking."),
                    ToolCallBlock(call_id="call_2", tool_name="weather", input_json=""),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(
                    ToolResultBlock(call_id="call_2", content="rain"),
                    TextBlock(text="And now?"),
                ),
            ),
        ),
        "tools": (LlmToolSpec(name="weather", description="Weather", input_schema=SCHEMA),),
        "tool_choice": ToolChoice.REQUIRED,
        "generation": GenerationOptions(output_token_cap=256),
        "output_spec": JsonSchemaOutput(name="answer", schema=SCHEMA),
        "model_variant": "high",
        "session_id": "session-42",
    }
    fields.update(overrides)
    return LlmRequest(**fields)


GOLDEN: dict[str, Any] = {
    "model": "gpt-5.5",
    "instructions": "Be brief.\n\nUse metric units.",
    "input": [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {"type": "input_image", "image_url": PNG_URL, "detail": "auto"},
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Looking at the picture"}],
            "encrypted_content": BLOB,
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_vendor_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            "phase": "commentary",
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "weather",
            "arguments": '{"city":"X"}',
            "id": "fc_1",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Runtime note: one tool call left."}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_lash_6_0",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Checking again.", "annotations": []},
                {"type": "output_text", "text": " Still checking.", "annotations": []},
            ],
        },
        {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "And now?"}],
        },
    ],
    "stream": True,
    "store": False,
    "max_output_tokens": 256,
    "tools": [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather",
            "parameters": SCHEMA,
            "strict": False,
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": True,
    "reasoning": {"effort": "high", "summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}},
    "prompt_cache_key": "session-42",
}


async def resolver(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
    return {ref.id: PNG for ref in refs}


def provider(**kw: Any) -> OpenAIResponsesProvider:
    return OpenAIResponsesProvider(
        api_key=API_KEY, model_prefix="openai:", attachments=resolver, **kw
    )


def body_for(request: LlmRequest, *, stream: bool = True, **kw: Any) -> dict[str, Any]:
    kw.setdefault("reasoning_summary", "auto")
    return run(provider(**kw).build_body(request, stream=stream))


def test_golden_body() -> None:
    assert body_for(full_request()) == GOLDEN


def test_non_streaming_body_differs_only_in_stream() -> None:
    assert body_for(full_request(), stream=False) == {**GOLDEN, "stream": False}


def test_minimal_request_sends_no_optional_fields() -> None:
    request = LlmRequest(model="gpt-4o", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
    body = build_responses_body(request, model="gpt-4o", images={}, stream=False)
    assert body == {
        "model": "gpt-4o",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
        "stream": False,
        "store": False,
    }


def test_tool_choice_only_with_tools() -> None:
    request = full_request(tools=(), tool_choice=ToolChoice.NONE)
    body = body_for(request)
    assert "tools" not in body
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body
    assert body_for(full_request(tool_choice=ToolChoice.NONE))["tool_choice"] == "none"


def test_json_object_output_and_default_token_cap() -> None:
    request = full_request(output_spec=JsonObjectOutput(), generation=GenerationOptions())
    body = body_for(request, max_output_tokens=999)
    assert body["text"] == {"format": {"type": "json_object"}}
    assert body["max_output_tokens"] == 999
    assert "max_output_tokens" not in body_for(request)
    # the request's own cap wins over the provider default
    assert body_for(full_request(), max_output_tokens=999)["max_output_tokens"] == 256


@pytest.mark.parametrize(
    ("model", "variant", "default", "reasoning", "include"),
    [
        ("gpt-4o", None, None, None, False),
        ("gpt-4.1", "low", None, {"effort": "low"}, True),
        ("gpt-5", None, None, None, True),  # a reasoning model reasons anyway
        ("o4-mini", None, None, None, True),
        ("gpt-5-chat-latest", None, None, None, False),
        ("gpt-5", None, "medium", {"effort": "medium"}, True),
        ("gpt-5", "minimal", "high", {"effort": "minimal"}, True),
        ("gpt-5.1", "none", None, {"effort": "none"}, False),
    ],
)
def test_reasoning_configuration(
    model: str,
    variant: str | None,
    default: str | None,
    reasoning: dict[str, str] | None,
    include: bool,
) -> None:
    request = LlmRequest(
        model=model, messages=(LlmMessage.text(LlmRole.USER, "hi"),), model_variant=variant
    )
    body = build_responses_body(
        request, model=model, images={}, stream=True, reasoning_effort=default
    )
    assert body.get("reasoning") == reasoning
    assert ("include" in body) is include


def test_reasoning_summary_and_forced_include() -> None:
    request = full_request(messages=(LlmMessage.text(LlmRole.USER, "hi"),), model="gpt-4o")
    body = build_responses_body(
        request, model="gpt-4o", images={}, stream=True, reasoning_summary="detailed"
    )
    assert body["reasoning"] == {"effort": "high", "summary": "detailed"}
    off = build_responses_body(
        request, model="gpt-4o", images={}, stream=True, encrypted_reasoning=False
    )
    assert "include" not in off


def test_replayed_reasoning_asks_for_encrypted_content_again() -> None:
    request = full_request(model_variant=None)
    body = build_responses_body(
        request, model="my-gateway-model", images={PNG_ID: PNG}, stream=True
    )
    assert "reasoning" not in body
    assert body["include"] == ["reasoning.encrypted_content"]


def test_unknown_variant_is_a_validation_error() -> None:
    with pytest.raises(ProviderError, match="model variant 'turbo'") as info:
        body_for(full_request(model_variant="turbo"))
    assert info.value.error.code == "validation"
    assert not info.value.error.retryable
    with pytest.raises(ValueError, match="reasoning_effort"):
        OpenAIResponsesProvider(api_key=API_KEY, reasoning_effort="turbo")
    with pytest.raises(ValueError, match="reasoning_summary"):
        OpenAIResponsesProvider(api_key=API_KEY, reasoning_summary="verbose")


def test_foreign_or_duplicate_item_ids_are_not_sent() -> None:
    """Only the vendor's own ids go back, each once; other providers' ids are dropped."""
    request = LlmRequest(
        model="gpt-5",
        messages=(
            LlmMessage.text(LlmRole.USER, "hi"),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="a", response_meta=ResponseTextMeta(id="text-from-elsewhere")),
                    TextBlock(text="b", response_meta=ResponseTextMeta(id="msg_x", status="odd")),
                    ToolCallBlock(
                        call_id="toolu_1",
                        tool_name="t",
                        input_json="{}",
                        replay=ProviderReplayMeta(item_id="toolu_1"),
                    ),
                    ReasoningBlock(
                        text="r", replay=ReasoningReplay(signature="anthropic-signature")
                    ),
                ),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(TextBlock(text="c", response_meta=ResponseTextMeta(id="msg_x")),),
            ),
        ),
    )
    items = build_responses_body(request, model="gpt-5", images={}, stream=True)["input"][1:]
    assert [(i["type"], i.get("id"), i.get("status")) for i in items] == [
        ("message", "msg_lash_1_0", "completed"),
        ("message", "msg_x", "completed"),
        ("function_call", None, None),
        ("message", "msg_lash_2_0", "completed"),
    ]


def test_unsupported_image_and_missing_resolver() -> None:
    bad = full_request(attachments=(AttachmentRef(id=PNG_ID, mime="image/tiff", byte_len=3),))
    with pytest.raises(ProviderError, match="unsupported image format") as info:
        body_for(bad)
    assert info.value.error.code == "unsupported_image_format"
    bare = OpenAIResponsesProvider(api_key=API_KEY)
    with pytest.raises(ProviderError, match="no attachment resolver"):
        run(bare.build_body(full_request(), stream=True))
    dangling = full_request(attachments=())
    with pytest.raises(ProviderError, match="points at attachment 0"):
        body_for(dangling)


def test_images_are_resolved_at_call_time_over_the_wire() -> None:
    calls: list[list[str]] = []

    async def counting(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
        calls.append([r.id for r in refs])
        return {r.id: PNG for r in refs}

    reply = Reply(
        chunks=[
            json.dumps(
                {
                    "status": "completed",
                    "output": [
                        {
                            "type": "message",
                            "id": "msg_1",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": "a cat"}],
                        }
                    ],
                }
            ).encode()
        ]
    )

    async def go() -> Any:
        async with serving(reply) as server:
            async with OpenAIResponsesProvider(
                api_key=API_KEY, base_url=server.base_url, attachments=counting
            ) as p:
                response = await p.complete(full_request(model="gpt-5.5"))
            return response, server.received[0]

    response, sent = run(go())
    assert response.full_text == "a cat"
    assert calls == [[PNG_ID]]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["accept"] == "application/json"
    body = sent.json()
    assert body["stream"] is False
    assert body["input"][0]["content"][1]["image_url"] == PNG_URL
    assert "previous_response_id" not in body


def test_from_env() -> None:
    provider = openai_responses_from_env(
        {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"},
        reasoning_effort="low",
    )
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert provider.reasoning_effort == "low"
    assert provider.name == "openai"
    assert API_KEY not in repr(provider)
    default = openai_responses_from_env({"OPENAI_API_KEY": API_KEY})
    assert default.base_url == "https://api.openai.com/v1"
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        openai_responses_from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})


def test_long_session_ids_make_a_bounded_cache_key() -> None:
    body = body_for(full_request(session_id="s" * 300))
    assert len(body["prompt_cache_key"]) == 64
    assert (
        body_for(full_request(session_id="s" * 300))["prompt_cache_key"]
        == (body["prompt_cache_key"])
    )
    assert "prompt_cache_key" not in body_for(full_request(), prompt_cache_key=False)


# ------------------------------------------------------------------ SDK types


def _materialize(value: Any) -> Any:
    """Validated SDK values with lazily checked iterables forced (so they are checked)."""
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        return [_materialize(v) for v in value]
    return value


def _sdk_check(body: dict[str, Any], tp: Any) -> None:
    """Validate against the SDK TypedDict; the round trip must drop or change nothing."""
    from pydantic import TypeAdapter

    adapter = TypeAdapter(tp)  # must outlive the lazy iterators it hands out
    validated = _materialize(adapter.validate_python(body, strict=True))
    assert validated == body


@pytest.mark.parametrize("stream", [True, False])
def test_body_conforms_to_openai_sdk_types(stream: bool) -> None:
    params = pytest.importorskip(
        "openai.types.responses.response_create_params",
        reason="the openai SDK is not installed; cannot check the body against its types",
    )
    from pydantic import ValidationError

    tp = params.ResponseCreateParamsStreaming if stream else params.ResponseCreateParamsNonStreaming
    _sdk_check(body_for(full_request(), stream=stream), tp)
    _sdk_check(body_for(full_request(output_spec=JsonObjectOutput()), stream=stream), tp)
    # the check itself rejects wrong shapes
    good = body_for(full_request(), stream=stream)
    broken_item = {**good, "input": [{"type": "function_call", "call_id": "c"}]}
    for broken in (
        broken_item,
        {**good, "tool_choice": "sometimes"},
        {**good, "bogus_field": 1},
        {**good, "input": [{**good["input"][0], "extra": 1}]},
        {**good, "reasoning": {"effort": "enormous"}},
    ):
        with pytest.raises((ValidationError, AssertionError)):
            _sdk_check(broken, tp)
