"""Gemini request mapping: golden bodies for every kind of block and option."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from provider_support import API_KEY, FIXTURES, Reply, run, serving

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
    ReasoningOutput,
    ReasoningReplay,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
    ToolChoice,
    ToolResultBlock,
)
from lash.providers import ProviderError
from lash.providers.gemini import (
    GEMINI_BASE_URL,
    SKIP_SIGNATURE_SENTINEL,
    GeminiProvider,
    build_gemini_body,
    gemini_from_env,
    gemini_json_schema,
    gemini_openapi_schema,
    parse_generate_content,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
PNG_ID = "a" * 64
JPG_ID = "c" * 64
GIF_ID = "b" * 64
B64 = base64.b64encode(PNG).decode()
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "$schema": {"type": "string", "description": "a property that happens to be named so"},
        "opts": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": False,
        },
    },
    "required": ["city"],
    "additionalProperties": False,
}
SCHEMA_FOR_GEMINI = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "$schema": {"type": "string", "description": "a property that happens to be named so"},
        "opts": {"type": "object", "additionalProperties": False},
    },
    "required": ["city"],
    "additionalProperties": False,
}
ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def gemini_call(
    call_id: str, name: str, args: str, signature: str | None = None, vendor_id: str | None = None
) -> ToolCallBlock:
    opaque: dict[str, Any] = {"provider": "gemini"}
    if signature:
        opaque["thought_signature"] = signature
    replay = ProviderReplayMeta(item_id=vendor_id, opaque=opaque)
    return ToolCallBlock(call_id=call_id, tool_name=name, input_json=args, replay=replay)


def full_request(**overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {
        "model": "gemini-2.5-flash",
        "attachments": (AttachmentRef(id=PNG_ID, mime="image/png", byte_len=len(PNG)),),
        "messages": (
            LlmMessage.text(LlmRole.SYSTEM, "Be brief."),
            LlmMessage.text(LlmRole.SYSTEM, "Answer in English."),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(TextBlock(text="What is in this picture?"), ImageBlock(attachment_idx=0)),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    ReasoningBlock(
                        text="Look it up.",
                        replay=ReasoningReplay(item_id="gemini:r1", signature="sig-thought"),
                    ),
                    gemini_call("gemini-r1-0", "weather", '{"city":"X"}', signature="sig-call"),
                    gemini_call("fc-7", "clock", "", vendor_id="fc-7"),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(
                    # results arrive out of call order and without names
                    ToolResultBlock(call_id="fc-7", content="noon"),
                    ToolResultBlock(call_id="gemini-r1-0", content="sunny"),
                ),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="Checking again."),
                    ReasoningBlock(
                        text="", replay=ReasoningReplay(item_id="gemini:r2", signature="sig-text")
                    ),
                    ReasoningBlock(  # another vendor's signature: never sent to Gemini
                        text="foreign", replay=ReasoningReplay(signature="anthropic-signature")
                    ),
                    ReasoningBlock(text="unsigned thought"),
                ),
            ),
            LlmMessage.text(LlmRole.SYSTEM, "Runtime note: the user is waiting."),
            LlmMessage(role=LlmRole.USER, blocks=(TextBlock(text="And now?"),)),
        ),
        "tools": (LlmToolSpec(name="weather", description="Weather", input_schema=SCHEMA),),
        "tool_choice": ToolChoice.REQUIRED,
        "generation": GenerationOptions(output_token_cap=256),
        "output_spec": JsonSchemaOutput(name="answer", schema=ANSWER),
    }
    fields.update(overrides)
    return LlmRequest(**fields)


async def resolver(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
    return {ref.id: PNG for ref in refs}


def body_for(request: LlmRequest, **kwargs: Any) -> dict[str, Any]:
    provider = GeminiProvider(api_key=API_KEY, attachments=resolver, **kwargs)
    return run(provider.build_body(request))


GOLDEN = {
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "What is in this picture?"},
                {"inlineData": {"mimeType": "image/png", "data": B64}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Look it up.", "thought": True, "thoughtSignature": "sig-thought"},
                {
                    "functionCall": {"name": "weather", "args": {"city": "X"}},
                    "thoughtSignature": "sig-call",
                },
                {"functionCall": {"name": "clock", "args": {}, "id": "fc-7"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
                {
                    "functionResponse": {
                        "name": "clock",
                        "response": {"output": "noon"},
                        "id": "fc-7",
                    }
                },
            ],
        },
        {
            "role": "model",
            "parts": [{"text": "Checking again."}, {"text": "", "thoughtSignature": "sig-text"}],
        },
        {
            "role": "user",
            "parts": [{"text": "Runtime note: the user is waiting."}, {"text": "And now?"}],
        },
    ],
    "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Weather",
                    "parametersJsonSchema": SCHEMA_FOR_GEMINI,
                }
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    "generationConfig": {
        "maxOutputTokens": 256,
        "responseMimeType": "application/json",
        "responseJsonSchema": ANSWER,
    },
}


def test_golden_body() -> None:
    body = body_for(full_request())
    assert body == GOLDEN
    assert json.dumps(body) == json.dumps(GOLDEN)  # key order too: stable wire bytes
    assert "foreign" not in json.dumps(body)
    assert "unsigned thought" not in json.dumps(body)


@pytest.mark.parametrize(
    ("choice", "mode"),
    [(ToolChoice.AUTO, "AUTO"), (ToolChoice.NONE, "NONE"), (ToolChoice.REQUIRED, "ANY")],
)
def test_tool_choice(choice: ToolChoice, mode: str) -> None:
    body = body_for(full_request(tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_no_tools_means_no_tool_config_and_empty_schema_becomes_an_object() -> None:
    body = body_for(full_request(tools=()))
    assert "tools" not in body
    assert "toolConfig" not in body
    body = body_for(full_request(tools=(LlmToolSpec(name="ping"),)))
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration == {
        "name": "ping",
        "description": "",
        "parametersJsonSchema": {"type": "object", "properties": {}},
    }


def test_output_specs_and_generation_options() -> None:
    body = body_for(full_request(output_spec=JsonObjectOutput(), generation=GenerationOptions()))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    body = body_for(
        full_request(output_spec=None, generation=GenerationOptions()),
        temperature=0.2,
        max_output_tokens=1000,
        safety_settings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        generation_config={"topP": 0.9, "temperature": 0.0},
    )
    assert body["generationConfig"] == {"maxOutputTokens": 1000, "temperature": 0.0, "topP": 0.9}
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
    ]
    # the request's own cap beats the provider default
    body = body_for(full_request(output_spec=None), max_output_tokens=1000)
    assert body["generationConfig"] == {"maxOutputTokens": 256}


@pytest.mark.parametrize(
    ("model", "variant", "include", "expected"),
    [
        ("gemini-2.5-flash", "high", False, {"thinkingBudget": 16000}),
        ("gemini-2.5-flash", "none", False, {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "2048", True, {"thinkingBudget": 2048, "includeThoughts": True}),
        ("gemini-2.5-pro", None, True, {"includeThoughts": True}),
        ("gemini-3-pro-preview", "high", False, {"thinkingLevel": "high"}),
        ("gemini-3-flash-preview", "low", True, {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3-flash-preview", "auto", False, None),
        ("gemini-3.5-flash", "medium", False, {"thinkingLevel": "medium"}),
        ("gemini-4-pro", "xhigh", False, {"thinkingLevel": "high"}),
        ("gemini-2.5-flash", None, False, None),
    ],
)
def test_thinking_config(
    model: str, variant: str | None, include: bool, expected: dict[str, Any] | None
) -> None:
    request = full_request(
        model=model, model_variant=variant, output_spec=None, generation=GenerationOptions()
    )
    body = body_for(request, include_thoughts=include)
    config = body.get("generationConfig", {})
    assert config.get("thinkingConfig") == expected


def test_unknown_variant_is_rejected_before_any_request() -> None:
    with pytest.raises(ProviderError, match="unknown model variant 'turbo'") as info:
        body_for(full_request(model_variant="turbo"))
    assert info.value.error.code == "unsupported_variant"
    assert not info.value.error.retryable


def test_gemini_3_unsigned_calls_get_the_documented_sentinel() -> None:
    foreign = LlmMessage(
        role=LlmRole.ASSISTANT,
        blocks=(
            ToolCallBlock(call_id="call_a", tool_name="weather", input_json='{"city":"A"}'),
            ToolCallBlock(call_id="call_b", tool_name="weather", input_json='{"city":"B"}'),
        ),
    )
    results = LlmMessage(
        role=LlmRole.USER,
        blocks=(
            ToolResultBlock(call_id="call_a", content="1", tool_name="weather"),
            ToolResultBlock(call_id="call_b", content="2", tool_name="weather"),
        ),
    )
    messages = (LlmMessage.text(LlmRole.USER, "go"), foreign, results)
    for model, sentinel in (("gemini-3-pro-preview", True), ("gemini-2.5-flash", False)):
        body = body_for(LlmRequest(model=model, messages=messages))
        first, second = body["contents"][1]["parts"]
        assert ("thoughtSignature" in first) is sentinel
        if sentinel:
            assert first["thoughtSignature"] == SKIP_SIGNATURE_SENTINEL
        assert "thoughtSignature" not in second
        # foreign ids are not Gemini's: neither calls nor responses carry them
        assert "id" not in first["functionCall"]
        assert [p["functionResponse"] for p in body["contents"][2]["parts"]] == [
            {"name": "weather", "response": {"output": "1"}},
            {"name": "weather", "response": {"output": "2"}},
        ]
    # a signed step needs no sentinel
    signed = full_request(model="gemini-3-pro-preview")
    assert SKIP_SIGNATURE_SENTINEL not in json.dumps(body_for(signed))


def replayed(response_parts: Sequence[Any]) -> LlmMessage:
    """An assistant message made from response parts, the way the runtime replays them."""
    blocks: list[Any] = []
    for part in response_parts:
        if isinstance(part, TextOutput):
            blocks.append(TextBlock(text=part.text))
        elif isinstance(part, ReasoningOutput) and part.replay is not None:
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


def test_signatures_from_a_recorded_reply_round_trip() -> None:
    recorded = json.loads(
        (FIXTURES / "gemini" / "parallel_function_calls_nonstream.body").read_text()
    )
    response = parse_generate_content(recorded)
    calls = [p for p in response.parts if isinstance(p, ToolCallOutput)]
    results = LlmMessage(
        role=LlmRole.USER,
        blocks=tuple(
            ToolResultBlock(call_id=c.call_id, content=f"topic {i}")
            for i, c in reversed(list(enumerate(calls)))
        ),
    )
    request = LlmRequest(
        model="gemini-3-pro-preview",
        messages=(LlmMessage.text(LlmRole.USER, "jokes"), replayed(response.parts), results),
    )
    body = body_for(request)
    model_parts = body["contents"][1]["parts"]
    wire = recorded["candidates"][0]["content"]["parts"]
    assert model_parts == [
        {**p, "functionCall": {"name": "generate_topic", "args": {}}} for p in wire
    ]
    assert [p["functionResponse"]["response"]["output"] for p in body["contents"][2]["parts"]] == [
        "topic 0",
        "topic 1",
        "topic 2",
    ]

    thinking = json.loads((FIXTURES / "gemini" / "thinking_nonstream.body").read_text())
    response = parse_generate_content(thinking)
    body = body_for(LlmRequest(model="gemini-2.5-pro", messages=(replayed(response.parts),)))
    [signature] = [
        p["thoughtSignature"]
        for p in thinking["candidates"][0]["content"]["parts"]
        if "thoughtSignature" in p
    ]
    parts = body["contents"][0]["parts"]
    assert parts[-1] == {"text": "", "thoughtSignature": signature}
    assert parts[0]["text"] == response.full_text


def test_openapi_dialect_converts_to_the_schema_subset() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "number", "format": "double"}},
                "required": ["x", "ghost"],
                "additionalProperties": False,
            },
            "Tree": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Tree"}}},
        },
        "type": "object",
        "properties": {
            "where": {"$ref": "#/$defs/Point"},
            "note": {"type": ["string", "null"], "format": "uri", "maxLength": 10},
            "mode": {"const": "fast"},
            "level": {"type": "integer", "enum": [1, 2], "description": "How much."},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "tree": {"$ref": "#/$defs/Tree"},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "boolean"}}},
                ]
            },
        },
        "required": ["where"],
        "additionalProperties": False,
    }
    assert gemini_openapi_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "where": {
                "type": "OBJECT",
                "properties": {"x": {"type": "NUMBER", "format": "double"}},
                "required": ["x"],
            },
            "note": {"maxLength": 10, "nullable": True, "type": "STRING"},
            "mode": {"enum": ["fast"], "type": "STRING"},
            "level": {"description": "How much. Allowed values: 1, 2.", "type": "INTEGER"},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER", "minimum": 0}]},
            "maybe": {"nullable": True, "type": "STRING"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            # the recursive reference is cut where it repeats
            "tree": {"type": "OBJECT", "properties": {"child": {"type": "OBJECT"}}},
            "both": {
                "type": "OBJECT",
                "properties": {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}},
                "required": ["a"],
            },
        },
        "required": ["where"],
    }
    body = body_for(full_request(), schema_dialect="openapi")
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert "parametersJsonSchema" not in declaration
    assert declaration["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "$schema": {"type": "STRING", "description": "a property that happens to be named so"},
            "opts": {"type": "OBJECT"},
        },
        "required": ["city"],
    }
    assert body["generationConfig"]["responseSchema"] == {
        "type": "OBJECT",
        "properties": {"answer": {"type": "STRING"}},
        "required": ["answer"],
    }
    assert "responseJsonSchema" not in body["generationConfig"]


def test_json_schema_dialect_only_drops_the_dialect_marker() -> None:
    assert gemini_json_schema(SCHEMA) == SCHEMA_FOR_GEMINI
    nested = {"anyOf": [{"$schema": "x", "type": "string"}], "items": {"$schema": "x"}}
    assert gemini_json_schema(nested) == {"anyOf": [{"type": "string"}], "items": {}}


def test_images() -> None:
    jpg = full_request(attachments=(AttachmentRef(id=JPG_ID, mime="image/jpg", byte_len=3),))
    part = body_for(jpg)["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/jpeg", "data": B64}}
    gif = full_request(attachments=(AttachmentRef(id=GIF_ID, mime="image/gif", byte_len=3),))
    with pytest.raises(ProviderError, match="unsupported image format 'image/gif'") as info:
        body_for(gif)
    assert info.value.error.code == "unsupported_image_format"
    with pytest.raises(ProviderError, match="no attachment resolver"):
        run(GeminiProvider(api_key=API_KEY).build_body(full_request()))
    broken = full_request(
        messages=(LlmMessage(role=LlmRole.USER, blocks=(ImageBlock(attachment_idx=3),)),)
    )
    with pytest.raises(ProviderError, match="points at attachment 3"):
        body_for(broken)


def test_images_are_resolved_at_call_time_over_the_wire() -> None:
    calls: list[list[str]] = []

    async def counting(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
        calls.append([r.id for r in refs])
        return {r.id: PNG for r in refs}

    reply = Reply(
        chunks=[
            b'{"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},'
            b' "finishReason": "STOP"}], "responseId": "r"}'
        ]
    )

    async def go() -> Any:
        async with serving(reply) as server:
            async with GeminiProvider(
                api_key=API_KEY,
                base_url=server.base_url,
                attachments=counting,
                model_prefix="google:",
            ) as provider:
                assert calls == []  # nothing is resolved before the call
                response = await provider.complete(full_request(model="google:gemini-2.5-flash"))
            return response, server.received[0]

    response, received = run(go())
    assert response.full_text == "ok"
    assert calls == [[PNG_ID]]
    assert received.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert received.headers["x-goog-api-key"] == API_KEY
    assert API_KEY not in received.path
    assert "key=" not in received.path
    sent = received.json()
    assert sent["contents"][0]["parts"][1]["inlineData"]["data"] == B64
    assert sent == body_for(full_request())


def test_endpoints() -> None:
    provider = GeminiProvider(api_key=API_KEY, base_url="http://h/v1beta/")
    assert provider.endpoint("gemini-2.5-flash", stream=False) == (
        "http://h/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert provider.endpoint("models/gemini-2.5-flash", stream=True) == (
        "http://h/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert provider.endpoint("tunedModels/my-model-1", stream=False) == (
        "http://h/v1beta/tunedModels/my-model-1:generateContent"
    )
    array = GeminiProvider(api_key=API_KEY, base_url="http://h/v1beta", sse=False)
    assert array.endpoint("m", stream=True) == "http://h/v1beta/models/m:streamGenerateContent"
    assert provider.name == "gemini"
    assert API_KEY not in repr(provider)


def test_from_env() -> None:
    provider = gemini_from_env({"GEMINI_API_KEY": "k1", "GOOGLE_API_KEY": "k2"})
    assert provider._api_key == "k1"
    assert provider.base_url == GEMINI_BASE_URL
    provider = gemini_from_env(
        {"GEMINI_API_KEY": " ", "GOOGLE_API_KEY": "k2", "GEMINI_BASE_URL": "http://127.0.0.1:9/v1"},
        include_thoughts=True,
    )
    assert provider._api_key == "k2"
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert provider.include_thoughts is True
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        gemini_from_env({})
    with pytest.raises(ValueError, match="api_key must not be empty"):
        GeminiProvider(api_key="")
    with pytest.raises(ValueError, match="schema_dialect"):
        GeminiProvider(api_key="k", schema_dialect="yaml")  # type: ignore[arg-type]


def test_build_function_is_pure_and_matches_the_provider() -> None:
    direct = build_gemini_body(full_request(), model="gemini-2.5-flash", images={PNG_ID: PNG})
    assert direct == GOLDEN
