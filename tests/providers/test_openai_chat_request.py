"""Request mapping: the body we send, checked against the official SDK's types."""

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
    TextBlock,
    ToolCallBlock,
    ToolChoice,
    ToolResultBlock,
)
from lash.providers import ProviderError
from lash.providers.openai_chat import OpenAIChatProvider, build_chat_body

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
PNG_ID = "a" * 64
GIF_ID = "b" * 64
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def full_request(**overrides: Any) -> LlmRequest:
    fields: dict[str, Any] = {
        "model": "openai:gpt-4.1",
        "attachments": (AttachmentRef(id=PNG_ID, mime="image/png", byte_len=len(PNG)),),
        "messages": (
            LlmMessage.text(LlmRole.SYSTEM, "Be brief."),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(TextBlock(text="What is in this picture?"), ImageBlock(attachment_idx=0)),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    ReasoningBlock(text="hidden"),
                    ToolCallBlock(call_id="call_1", tool_name="weather", input_json='{"city":"X"}'),
                ),
            ),
            LlmMessage(
                role=LlmRole.USER,
                blocks=(ToolResultBlock(call_id="call_1", content="sunny", tool_name="weather"),),
            ),
            LlmMessage(
                role=LlmRole.ASSISTANT,
                blocks=(
                    TextBlock(text="Checking again."),
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
    }
    fields.update(overrides)
    return LlmRequest(**fields)


async def resolver(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
    return {ref.id: PNG for ref in refs}


def body_for(request: LlmRequest, *, stream: bool = True) -> dict[str, Any]:
    provider = OpenAIChatProvider(api_key=API_KEY, model_prefix="openai:", attachments=resolver)
    return run(provider.build_body(request, stream=stream))


def test_mapping() -> None:
    body = body_for(full_request())
    assert body["model"] == "gpt-4.1"
    assert body["max_completion_tokens"] == 256
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is True
    assert body["response_format"]["json_schema"] == {
        "name": "answer",
        "schema": SCHEMA,
        "strict": True,
    }
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "user"]
    image = body["messages"][1]["content"][1]["image_url"]["url"]
    assert image == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert body["messages"][2]["content"] is None
    assert body["messages"][4]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert body["messages"][6]["content"] == "And now?"
    assert "hidden" not in json.dumps(body)


def test_max_tokens_field_for_compatible_servers() -> None:
    body = build_chat_body(
        full_request(output_spec=JsonObjectOutput()),
        model="m",
        images={PNG_ID: PNG},
        stream=False,
        max_tokens_field="max_tokens",
    )
    assert body["max_tokens"] == 256
    assert body["response_format"] == {"type": "json_object"}
    assert "stream_options" not in body
    provider = OpenAIChatProvider(api_key=API_KEY, base_url="http://127.0.0.1:1/v1")
    assert provider.max_tokens_field == "max_tokens"


def test_unsupported_image_and_missing_resolver() -> None:
    bad = full_request(attachments=(AttachmentRef(id=GIF_ID, mime="image/tiff", byte_len=3),))
    with pytest.raises(ProviderError, match="unsupported image format") as info:
        body_for(bad)
    assert info.value.error.code == "unsupported_image_format"
    provider = OpenAIChatProvider(api_key=API_KEY)
    with pytest.raises(ProviderError, match="no attachment resolver"):
        run(provider.build_body(full_request(), stream=True))


def test_images_are_resolved_at_call_time_over_the_wire() -> None:
    calls: list[list[str]] = []

    async def counting(refs: Sequence[AttachmentRef]) -> dict[str, bytes]:
        calls.append([r.id for r in refs])
        return {r.id: PNG for r in refs}

    async def go() -> Any:
        reply = Reply(
            chunks=[
                b'{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
                b'"finish_reason":"stop"}]}'
            ]
        )
        async with serving(reply) as server:
            async with OpenAIChatProvider(
                api_key=API_KEY, base_url=server.base_url, attachments=counting
            ) as provider:
                response = await provider.complete(full_request())
            return response, server.received[0].json()

    response, sent = run(go())
    assert response.full_text == "ok"
    assert calls == [[PNG_ID]]
    assert sent["stream"] is False


# ------------------------------------------------------------------ SDK types


def _fail(errors: list[str], message: str) -> bool:
    errors.append(message)
    return False


def _conforms(value: Any, tp: Any, path: str, errors: list[str]) -> bool:
    """A strict structural check of ``value`` against an SDK TypedDict type."""
    origin = te.get_origin(tp)
    args = te.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in (te.Required, te.NotRequired, te.Annotated, typing.Required, typing.NotRequired):
        return _conforms(value, args[0], path, errors)
    if origin is typing.Union or origin is types.UnionType:
        trial: list[str] = []
        return any(_conforms(value, a, path, trial) for a in args) or _fail(
            errors, f"{path}: {value!r} matches no option"
        )
    if origin in (typing.Literal, te.Literal):
        return value in args or _fail(errors, f"{path}: {value!r} not in {args}")
    if tp is type(None):
        return value is None
    if te.is_typeddict(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected object")
            return False
        hints = te.get_type_hints(tp, include_extras=True)
        unknown = set(value) - set(hints)
        # The SDK marks every required key with Required[...] (its TypedDicts are total=False).
        required_forms: tuple[object, ...] = (te.Required, typing.Required)
        required = {k for k, h in hints.items() if te.get_origin(h) in required_forms}
        missing = required - set(value)
        if unknown or missing:
            errors.append(f"{path}: unknown {sorted(unknown)} missing {sorted(missing)}")
            return False
        return all(_conforms(value[k], hints[k], f"{path}.{k}", errors) for k in value)
    if origin in (collections.abc.Iterable, list, collections.abc.Sequence):
        if not isinstance(value, list):
            errors.append(f"{path}: expected list")
            return False
        return all(_conforms(v, args[0], f"{path}[{i}]", errors) for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp) or _fail(errors, f"{path}: expected {tp.__name__}")
    return True


@pytest.mark.parametrize("stream", [True, False])
def test_body_conforms_to_openai_sdk_types(stream: bool) -> None:
    params = pytest.importorskip(
        "openai.types.chat.completion_create_params",
        reason="the openai SDK is not installed; cannot check the body against its types",
    )
    body = body_for(full_request(), stream=stream)
    tp = (
        params.CompletionCreateParamsStreaming
        if stream
        else params.CompletionCreateParamsNonStreaming
    )
    errors: list[str] = []
    assert _conforms(body, tp, "body", errors), errors
    # the checker itself rejects a wrong shape
    broken = {**body, "messages": [{"role": "tool", "content": "x"}]}
    assert not _conforms(broken, tp, "body", [])
    assert not _conforms({**body, "tool_choice": "sometimes"}, tp, "body", [])
    assert not _conforms({**body, "bogus_field": 1}, tp, "body", [])


def test_model_variant_is_sent_as_reasoning_effort() -> None:
    body = body_for(full_request(model="openai:o4-mini", model_variant=" High"))
    assert body["reasoning_effort"] == "high"
    assert "reasoning_effort" not in body_for(full_request())
    with pytest.raises(ProviderError, match="model variant 'turbo'") as info:
        body_for(full_request(model_variant="turbo"))
    assert info.value.error.code == "validation"
    assert not info.value.error.retryable
