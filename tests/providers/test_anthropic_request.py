"""Request mapping: the Messages body we send, golden-checked and checked against the SDK types."""

from __future__ import annotations

import base64
import collections.abc
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

import pytest
import typing_extensions as te
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
    ReasoningBlock,
    ReasoningReplay,
    TextBlock,
    ToolCallBlock,
    ToolChoice,
    ToolResultBlock,
)
from lash.providers import ProviderError
from lash.providers.anthropic import (
    AnthropicProvider,
    CacheRetention,
    build_messages_body,
    model_traits,
    sanitize_tool_id,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\1" * 20
PNG_ID = "a" * 64
JPEG_ID = "c" * 64
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
SIG = "EqQBCkYIBxgCKkB+signature/part=="
REDACTED = "EmwKAhgBEgy+redacted+payload=="
EPHEMERAL = {"type": "ephemeral"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def full_request(**overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {
        "model": "anthropic:claude-sonnet-4-5",
        "attachments": (
            AttachmentRef(id=PNG_ID, mime="image/png", byte_len=len(PNG)),
            AttachmentRef(id=JPEG_ID, mime="image/jpg", byte_len=len(JPEG)),
        ),
        "messages": (
            LlmMessage.text(LlmRole.SYSTEM, "Be brief."),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(TextBlock(text="What is in this picture?"), ImageBlock(attachment_idx=0)),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="Let me check the weather."),
                    ReasoningBlock(
                        text="I should call weather.", replay=ReasoningReplay(signature=SIG)
                    ),
                    ToolCallBlock(
                        call_id="call:1/x", tool_name="weather", input_json='{"city":"X"}'
                    ),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(
                    ToolResultBlock(call_id="call:1/x", content="sunny", tool_name="weather"),
                    ImageBlock(attachment_idx=1),
                ),
            ),
            LlmMessage.text(LlmRole.SYSTEM, "Runtime note:\nbe quick"),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    ReasoningBlock(
                        text="", replay=ReasoningReplay(redacted=True, encrypted_content=REDACTED)
                    ),
                    ReasoningBlock(
                        text="foreign", replay=ReasoningReplay(encrypted_content="gAAAA-openai")
                    ),
                    TextBlock(text="   "),
                    ToolCallBlock(call_id="call_2", tool_name="weather", input_json=""),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(TextBlock(text="And now?"), ToolResultBlock(call_id="call_2", content="")),
            ),
        ),
        "tools": (
            LlmToolSpec(name="weather", description="Weather", input_schema=SCHEMA),
            LlmToolSpec(name="ping"),
        ),
        "tool_choice": ToolChoice.REQUIRED,
        "generation": GenerationOptions(output_token_cap=256),
        "output_spec": JsonSchemaOutput(name="answer", schema=SCHEMA),
    }
    fields.update(overrides)
    return LlmRequest(**fields)


def simple(*messages: LlmMessage, **overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {"model": "claude-sonnet-4-5", "messages": messages}
    fields.update(overrides)
    return LlmRequest(**fields)


USER_HI = LlmMessage.text(LlmRole.USER, "hi")


async def resolver(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
    return {ref.id: PNG if ref.id == PNG_ID else JPEG for ref in refs}


def body_for(request: LlmRequest, *, stream: bool = True, **options: Any) -> dict[str, Any]:
    provider = AnthropicProvider(
        api_key=API_KEY, model_prefix="anthropic:", attachments=resolver, **options
    )
    return run(provider.build_body(request, stream=stream))


def bare(request: LlmRequest, **kw: Any) -> dict[str, Any]:
    kw.setdefault("cache", "none")
    return build_messages_body(
        request, model=request.model, images={PNG_ID: PNG, JPEG_ID: JPEG}, stream=True, **kw
    )


GOLDEN: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 256,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should call weather.", "signature": SIG},
                {"type": "text", "text": "Let me check the weather."},
                {"type": "tool_use", "id": "call_1_x", "name": "weather", "input": {"city": "X"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_1_x",
                    "content": [
                        {"type": "text", "text": "sunny"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": b64(JPEG),
                            },
                        },
                    ],
                },
                {"type": "text", "text": "Runtime note:\nbe quick"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "redacted_thinking", "data": REDACTED},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_2"},
                {"type": "text", "text": "And now?", "cache_control": EPHEMERAL},
            ],
        },
    ],
    "tools": [
        {"name": "weather", "input_schema": SCHEMA, "description": "Weather"},
        {
            "name": "ping",
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": EPHEMERAL,
        },
    ],
    "tool_choice": {"type": "any"},
    "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    "stream": True,
}


def test_golden_body() -> None:
    body = body_for(full_request())
    assert body == GOLDEN
    # key order does not matter on the wire, but the content order does
    assert json.loads(json.dumps(body)) == GOLDEN
    assert "foreign" not in json.dumps(body)  # unsigned reasoning is not replayed


def test_non_streaming_body_differs_only_in_stream_flag() -> None:
    assert body_for(full_request(), stream=False) == {**GOLDEN, "stream": False}


# ------------------------------------------------------------------ messages


def test_leading_system_messages_are_hoisted_later_ones_become_user_text() -> None:
    body = bare(
        simple(
            LlmMessage.text(LlmRole.SYSTEM, "one"),
            LlmMessage(role=LlmRole.SYSTEM, blocks=(TextBlock(text="two"), TextBlock(text=" "))),
            USER_HI,
            LlmMessage.text(LlmRole.ASSISTANT, "hello"),
            LlmMessage.text(LlmRole.SYSTEM, "Runtime note: x"),
        )
    )
    assert body["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "text", "text": "Runtime note: x"}]},
    ]


def test_no_system_key_without_system_text_and_adjacent_roles_merge() -> None:
    body = bare(simple(USER_HI, LlmMessage.text(LlmRole.USER, "again")))
    assert "system" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
        }
    ]


def test_a_request_with_only_system_text_is_rejected() -> None:
    with pytest.raises(ProviderError, match="no user or assistant content") as info:
        bare(simple(LlmMessage.text(LlmRole.SYSTEM, "rules")))
    assert info.value.error.code == "validation"


def test_tool_results_lead_the_user_message_even_across_merged_messages() -> None:
    body = bare(
        simple(
            USER_HI,
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    ToolCallBlock(call_id="a", tool_name="t", input_json="{}"),
                    ToolCallBlock(call_id="b", tool_name="t", input_json="[1]"),
                ),
            ),
            LlmMessage.text(LlmRole.SYSTEM, "note"),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(
                    ToolResultBlock(call_id="a", content="1"),
                    ToolResultBlock(call_id="b", content="2"),
                ),
            ),
        )
    )
    last = body["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "tool_result", "text"]
    assert [b.get("tool_use_id") for b in last["content"]] == ["a", "b", None]
    # a non-object argument text replays as an empty object
    assert body["messages"][1]["content"][1]["input"] == {}


def test_signed_thinking_is_replayed_verbatim_and_leads_the_assistant_turn() -> None:
    text = "  spaced thinking\n"
    body = bare(
        simple(
            USER_HI,
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="Answer first."),
                    TextBlock(text="More."),
                    ReasoningBlock(text=text, replay=ReasoningReplay(signature=SIG)),
                    ToolCallBlock(call_id="c1", tool_name="t", input_json="{}"),
                    ReasoningBlock(text="", replay=ReasoningReplay(signature="sig-omitted")),
                    ToolCallBlock(call_id="c2", tool_name="t", input_json="{}"),
                    ReasoningBlock(text="unsigned"),
                ),
            ),
        )
    )
    content = body["messages"][1]["content"]
    assert [b["type"] for b in content] == [
        "thinking",
        "text",
        "text",
        "tool_use",
        "thinking",
        "tool_use",
    ]
    assert content[0] == {"type": "thinking", "thinking": text, "signature": SIG}
    # display "omitted" thinking has no text but its signature must go back
    assert content[4] == {"type": "thinking", "thinking": "", "signature": "sig-omitted"}


def test_reasoning_is_never_sent_in_a_user_message() -> None:
    body = bare(
        simple(
            LlmMessage(
                role=LlmRole.USER,
                blocks=(
                    TextBlock(text="hi"),
                    ReasoningBlock(text="x", replay=ReasoningReplay(signature=SIG)),
                ),
            )
        )
    )
    assert body["messages"][0]["content"] == [{"type": "text", "text": "hi"}]


def test_tool_ids_are_sanitized_consistently() -> None:
    long_id = "call/" + "x" * 80
    other = "call/" + "x" * 79 + "y"
    assert sanitize_tool_id("toolu_01AbC-9") == "toolu_01AbC-9"
    assert sanitize_tool_id("a.b:c d") == "a_b_c_d"
    assert sanitize_tool_id("") == "toolu_empty"
    first, second = sanitize_tool_id(long_id), sanitize_tool_id(other)
    assert len(first) == 64
    assert len(second) == 64
    assert first != second
    assert sanitize_tool_id(long_id) == first
    body = bare(
        simple(
            USER_HI,
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(ToolCallBlock(call_id=long_id, tool_name="t", input_json="{}"),),
            ),
            LlmMessage(role=LlmRole.USER, blocks=(ToolResultBlock(call_id=long_id, content="ok"),)),
        )
    )
    assert body["messages"][1]["content"][0]["id"] == first
    assert body["messages"][2]["content"][0]["tool_use_id"] == first


# ------------------------------------------------------------------ tools


@pytest.mark.parametrize(
    ("choice", "wire"),
    [(ToolChoice.AUTO, "auto"), (ToolChoice.NONE, "none"), (ToolChoice.REQUIRED, "any")],
)
def test_tool_choice(choice: ToolChoice, wire: str) -> None:
    tools = (LlmToolSpec(name="t", input_schema={"properties": {"a": {"type": "integer"}}}),)
    body = bare(simple(USER_HI, tools=tools, tool_choice=choice))
    assert body["tool_choice"] == {"type": wire}
    assert body["tools"] == [
        {"name": "t", "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    ]


def test_no_tools_means_no_tool_choice() -> None:
    body = bare(simple(USER_HI, tool_choice=ToolChoice.NONE))
    assert "tools" not in body
    assert "tool_choice" not in body


# ------------------------------------------------------------------ output


def test_structured_output() -> None:
    schema_body = bare(simple(USER_HI, output_spec=JsonSchemaOutput(name="n", schema=SCHEMA)))
    assert schema_body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    object_body = bare(simple(USER_HI, output_spec=JsonObjectOutput()))
    assert object_body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert "output_config" not in bare(simple(USER_HI))


def test_structured_output_keeps_adaptive_effort() -> None:
    body = bare(
        simple(
            USER_HI,
            model="claude-opus-4-6",
            model_variant="medium",
            output_spec=JsonSchemaOutput(name="n", schema=SCHEMA),
        )
    )
    assert body["output_config"] == {
        "effort": "medium",
        "format": {"type": "json_schema", "schema": SCHEMA},
    }
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}


@pytest.mark.parametrize(
    ("model", "default"),
    [
        ("claude-3-haiku-20240307", 4096),
        ("claude-3-opus-latest", 4096),
        ("claude-3-5-sonnet-20241022", 8192),
        ("claude-3-5-haiku-latest", 8192),
        ("claude-3-7-sonnet-20250219", 64000),
        ("claude-opus-4-20250514", 32000),
        ("claude-opus-4-1", 32000),
        ("claude-sonnet-4-20250514", 64000),
        ("claude-sonnet-4-5-20250929", 64000),
        ("claude-haiku-4-5", 64000),
        ("claude-opus-4-5", 64000),
        ("claude-opus-4.6", 64000),
        ("anthropic.claude-sonnet-4-6-v1:0", 64000),
        ("claude-fable-5-1", 64000),
        ("some-proxy-model", 8192),
    ],
)
def test_max_tokens_defaults_by_model_family(model: str, default: int) -> None:
    assert model_traits(model).default_max_tokens == default
    assert bare(simple(USER_HI, model=model))["max_tokens"] == default


def test_max_tokens_precedence() -> None:
    capped = simple(USER_HI, generation=GenerationOptions(output_token_cap=77))
    assert body_for(capped, max_tokens=999)["max_tokens"] == 77
    assert body_for(simple(USER_HI), max_tokens=999)["max_tokens"] == 999
    assert body_for(simple(USER_HI))["max_tokens"] == 64000
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        AnthropicProvider(api_key=API_KEY, max_tokens=0)


# ------------------------------------------------------------------ thinking


@pytest.mark.parametrize(
    ("model", "variant", "thinking", "effort"),
    [
        ("claude-sonnet-4-5", "low", {"type": "enabled", "budget_tokens": 1024}, None),
        ("claude-sonnet-4-5", "minimal", {"type": "enabled", "budget_tokens": 1024}, None),
        ("claude-sonnet-4-5", "medium", {"type": "enabled", "budget_tokens": 4096}, None),
        ("claude-haiku-4-5", "high", {"type": "enabled", "budget_tokens": 12288}, None),
        ("claude-3-7-sonnet-latest", "max", {"type": "enabled", "budget_tokens": 32000}, None),
        ("claude-opus-4-1", "xhigh", {"type": "enabled", "budget_tokens": 24576}, None),
        ("claude-sonnet-4-6", "high", {"type": "adaptive"}, "high"),
        ("claude-sonnet-4-6", "minimal", {"type": "adaptive"}, "low"),
        ("claude-sonnet-4-6", "xhigh", {"type": "adaptive"}, "high"),
        ("claude-opus-4-6", "xhigh", {"type": "adaptive"}, "max"),
        ("claude-opus-4-6", "max", {"type": "adaptive"}, "max"),
        ("claude-opus-4-7", "max", {"type": "adaptive"}, "xhigh"),
        ("claude-opus-4-7", "xhigh", {"type": "adaptive"}, "xhigh"),
        ("claude-fable-5-1", "Medium", {"type": "adaptive"}, "medium"),
        ("claude-sonnet-4-5", "none", None, None),
        ("claude-3-5-haiku-latest", "none", None, None),
        ("claude-sonnet-4-5", None, None, None),
    ],
)
def test_thinking_variants(
    model: str, variant: str | None, thinking: dict[str, Any] | None, effort: str | None
) -> None:
    body = bare(simple(USER_HI, model=model, model_variant=variant))
    if thinking is None:
        assert "thinking" not in body
    else:
        assert body["thinking"] == {**thinking, "display": "summarized"}
    assert body.get("output_config", {}).get("effort") == effort


def test_thinking_display_follows_expose_thinking() -> None:
    request = simple(USER_HI, model="claude-sonnet-4-5", model_variant="low")
    assert body_for(request, expose_thinking=False)["thinking"]["display"] == "omitted"
    assert body_for(request)["thinking"]["display"] == "summarized"


def test_thinking_budget_stays_below_max_tokens() -> None:
    request = simple(
        USER_HI,
        model="claude-sonnet-4-5",
        model_variant="high",
        generation=GenerationOptions(output_token_cap=2000),
    )
    assert bare(request)["thinking"]["budget_tokens"] == 1999
    tiny = simple(
        USER_HI,
        model="claude-sonnet-4-5",
        model_variant="low",
        generation=GenerationOptions(output_token_cap=1024),
    )
    with pytest.raises(ProviderError, match="leaves no room for thinking"):
        bare(tiny)


def test_forced_tool_choice_turns_thinking_off() -> None:
    tools = (LlmToolSpec(name="t"),)
    request = simple(
        USER_HI,
        model="claude-sonnet-4-5",
        model_variant="high",
        tools=tools,
        tool_choice=ToolChoice.REQUIRED,
    )
    body = bare(request)
    assert "thinking" not in body
    assert body["tool_choice"] == {"type": "any"}


def test_bad_variants_are_clear_errors() -> None:
    with pytest.raises(ProviderError, match="unknown model variant 'turbo'") as info:
        bare(simple(USER_HI, model_variant="turbo"))
    assert info.value.error.code == "validation"
    assert not info.value.error.retryable
    with pytest.raises(ProviderError, match="has no extended thinking"):
        bare(simple(USER_HI, model="claude-3-5-haiku-latest", model_variant="high"))


# ------------------------------------------------------------------ caching


def _cache_marks(body: dict[str, Any]) -> list[str]:
    marks: list[str] = []
    for i, block in enumerate(body.get("system", [])):
        if "cache_control" in block:
            marks.append(f"system[{i}]")
    for i, tool in enumerate(body.get("tools", [])):
        if "cache_control" in tool:
            marks.append(f"tools[{i}]")
    for m, message in enumerate(body["messages"]):
        for b, block in enumerate(message["content"]):
            if "cache_control" in block:
                marks.append(f"messages[{m}][{b}]")
    return marks


CACHE_REQUEST = simple(
    LlmMessage.text(LlmRole.SYSTEM, "sys"),
    LlmMessage(
        role=LlmRole.USER,
        blocks=(TextBlock(text="doc", cache_breakpoint=True), TextBlock(text="q")),
    ),
    LlmMessage.text(LlmRole.ASSISTANT, "a"),
    LlmMessage(role=LlmRole.USER, blocks=(TextBlock(text="q2"), TextBlock(text="q3"))),
    tools=(LlmToolSpec(name="one"), LlmToolSpec(name="two")),
)


@pytest.mark.parametrize(
    ("cache", "marker"),
    [("short", {"type": "ephemeral"}), ("long", {"type": "ephemeral", "ttl": "1h"})],
)
def test_cache_breakpoints(cache: CacheRetention, marker: dict[str, Any]) -> None:
    body = bare(CACHE_REQUEST, cache=cache)
    # an explicit breakpoint beats the trailing user block
    assert _cache_marks(body) == ["system[0]", "tools[1]", "messages[0][0]"]
    assert body["messages"][0]["content"][0]["cache_control"] == marker
    assert body["system"][0]["cache_control"] == marker


def test_cache_falls_back_to_the_last_user_block() -> None:
    plain = simple(
        LlmMessage.text(LlmRole.SYSTEM, "sys"),
        USER_HI,
        LlmMessage.text(LlmRole.ASSISTANT, "a"),
        LlmMessage(role=LlmRole.USER, blocks=(TextBlock(text="q2"), TextBlock(text="q3"))),
    )
    assert _cache_marks(bare(plain, cache="short")) == ["system[0]", "messages[2][1]"]
    prefill = simple(USER_HI, LlmMessage.text(LlmRole.ASSISTANT, "Sure,"))
    assert _cache_marks(bare(prefill, cache="short")) == []


def test_cache_none_sends_no_markers() -> None:
    body = bare(CACHE_REQUEST, cache="none")
    assert _cache_marks(body) == []
    assert "cache_breakpoint" not in json.dumps(body)
    with pytest.raises(ValueError, match="cache must be"):
        AnthropicProvider(api_key=API_KEY, cache="forever")  # type: ignore[arg-type]


# ------------------------------------------------------------------ images


def test_unsupported_image_and_missing_resolver() -> None:
    bad = full_request(attachments=(AttachmentRef(id=PNG_ID, mime="image/tiff", byte_len=3),))
    with pytest.raises(ProviderError, match="unsupported image format 'image/tiff'") as info:
        body_for(bad)
    assert info.value.error.code == "unsupported_image_format"
    provider = AnthropicProvider(api_key=API_KEY)
    with pytest.raises(ProviderError, match="no attachment resolver"):
        run(provider.build_body(full_request(), stream=True))
    with pytest.raises(ProviderError, match="points at attachment 5"):
        bare(simple(LlmMessage(role=LlmRole.USER, blocks=(ImageBlock(attachment_idx=5),))))


def test_unresolved_attachment_is_an_error() -> None:
    async def partial(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
        return {PNG_ID: PNG}

    provider = AnthropicProvider(api_key=API_KEY, attachments=partial)
    with pytest.raises(ProviderError, match=f"attachment {JPEG_ID} could not be resolved"):
        run(provider.build_body(full_request(), stream=True))


def test_images_are_resolved_at_call_time_over_the_wire() -> None:
    calls: list[list[str]] = []

    async def counting(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
        calls.append([r.id for r in refs])
        return await resolver(refs)

    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }

    async def go() -> Any:
        reply = Reply(chunks=[json.dumps(message).encode()])
        async with serving(reply) as server:
            async with AnthropicProvider(
                api_key=API_KEY,
                base_url=server.base_url,
                attachments=counting,
                model_prefix="anthropic:",
            ) as provider:
                assert calls == []
                response = await provider.complete(full_request())
            return response, server.received[0].json()

    response, sent = run(go())
    assert response.full_text == "ok"
    assert calls == [[PNG_ID, JPEG_ID]]
    assert sent == {**GOLDEN, "stream": False}


# ------------------------------------------------------------------ SDK types


def _fail(errors: list[str], message: str) -> bool:
    errors.append(message)
    return False


_REQUIRED = (te.Required, typing.Required)
_WRAPPERS = (te.Required, te.NotRequired, te.Annotated, typing.Required, typing.NotRequired)


def conforms(value: Any, tp: Any, path: str, errors: list[str]) -> bool:
    """Strictly check ``value`` against an SDK param type: no unknown keys, no missing ones."""
    origin = te.get_origin(tp)
    args = te.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in _WRAPPERS:
        return conforms(value, args[0], path, errors)
    if origin is typing.Union or origin is types.UnionType:
        trials: list[str] = []
        if any(conforms(value, option, path, trials) for option in args):
            return True
        return _fail(errors, f"{path}: {str(value)[:80]} matches no option ({trials[:3]})")
    if origin in (typing.Literal, te.Literal):
        return value in args or _fail(errors, f"{path}: {value!r} not in {args}")
    if tp is type(None):
        return value is None or _fail(errors, f"{path}: expected null")
    if te.is_typeddict(tp):
        if not isinstance(value, dict):
            return _fail(errors, f"{path}: expected an object")
        hints = te.get_type_hints(tp, include_extras=True)
        unknown = set(value) - set(hints)
        required = {k for k, h in hints.items() if te.get_origin(h) in _REQUIRED}
        missing = required - set(value)
        if unknown or missing:
            return _fail(errors, f"{path}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        return all(conforms(value[k], hints[k], f"{path}.{k}", errors) for k in value)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return isinstance(value, dict) or _fail(errors, f"{path}: expected an object")
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence):
        if not isinstance(value, list):
            return _fail(errors, f"{path}: expected a list")
        return all(conforms(v, args[0], f"{path}[{i}]", errors) for i, v in enumerate(value))
    if tp is bool:
        return isinstance(value, bool) or _fail(errors, f"{path}: expected a bool")
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok or _fail(errors, f"{path}: expected an int")
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok or _fail(errors, f"{path}: expected a number")
    if isinstance(tp, type):
        return isinstance(value, tp) or _fail(errors, f"{path}: expected {tp.__name__}")
    return _fail(errors, f"{path}: the checker does not know type {tp!r}")


def sdk_variants() -> list[tuple[str, LlmRequest, dict[str, Any]]]:
    return [
        ("full", full_request(), {}),
        ("full-long-cache", full_request(), {"cache": "long"}),
        (
            "budget-thinking",
            full_request(
                tool_choice=ToolChoice.AUTO,
                model_variant="high",
                output_spec=JsonObjectOutput(),
                generation=GenerationOptions(output_token_cap=20000),
            ),
            {"expose_thinking": False},
        ),
        (
            "adaptive-thinking",
            full_request(model="claude-opus-4-6", model_variant="max", tool_choice=ToolChoice.NONE),
            {},
        ),
        ("plain", simple(USER_HI, generation=GenerationOptions(output_token_cap=5)), {}),
    ]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", sdk_variants(), ids=lambda c: c[0])
def test_body_conforms_to_anthropic_sdk_types(
    case: tuple[str, LlmRequest, dict[str, Any]], stream: bool
) -> None:
    try:
        from anthropic.types import message_create_params as params
    except ImportError:
        message = "the anthropic SDK is not installed; cannot check the body against its types"
        print(message)
        pytest.skip(message)
    _, request, options = case
    body = body_for(request, stream=stream, **options)
    tp = params.MessageCreateParamsStreaming if stream else params.MessageCreateParamsNonStreaming
    errors: list[str] = []
    assert conforms(body, tp, "body", errors), errors


def test_the_sdk_checker_rejects_wrong_shapes() -> None:
    try:
        from anthropic.types import message_create_params as params
    except ImportError:
        pytest.skip("the anthropic SDK is not installed")
    tp = params.MessageCreateParamsStreaming
    body = body_for(full_request())
    assert conforms(body, tp, "body", [])
    assert not conforms({**body, "bogus_field": 1}, tp, "body", [])
    assert not conforms({**body, "tool_choice": {"type": "required"}}, tp, "body", [])
    assert not conforms({**body, "stream": False}, tp, "body", [])
    no_max = {k: v for k, v in body.items() if k != "max_tokens"}
    assert not conforms(no_max, tp, "body", [])
    bad_block = [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]
    assert not conforms({**body, "messages": bad_block}, tp, "body", [])
    no_budget = {"type": "enabled", "display": "summarized"}
    assert not conforms({**body, "thinking": no_budget}, tp, "body", [])
    bad_image = json.loads(json.dumps(body))
    bad_image["messages"][0]["content"][1]["source"]["media_type"] = "image/tiff"
    assert not conforms(bad_image, tp, "body", [])
