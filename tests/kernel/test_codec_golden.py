"""Golden wire forms of kernel types, canonical hashing, and codec errors.

The files under ``golden/`` are compatibility data: a change to one is a change
to what stores and journals hold. Regenerate deliberately with
``LASH_UPDATE_GOLDEN=1 scripts/test tests/kernel/test_codec_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lash.kernel import codec
from lash.kernel.attachments import AttachmentRef
from lash.kernel.driver import FinishWith
from lash.kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    Done,
    Emit,
    LlmCall,
    LlmCompleted,
    LlmFailed,
    Progress,
    ToolCalls,
    ToolResults,
)
from lash.kernel.errors import CodecError
from lash.kernel.events import TextDelta, TokenUsageReported, error_event
from lash.kernel.llm import (
    GenerationOptions,
    ImageBlock,
    JsonSchemaOutput,
    LlmCallError,
    LlmMessage,
    LlmRequest,
    LlmResponse,
    LlmRole,
    LlmToolSpec,
    LlmUsage,
    ProviderReplayMeta,
    ReasoningBlock,
    ReasoningOutput,
    ReasoningReplay,
    ResponseTextMeta,
    TerminalReason,
    TextBlock,
    TextOutput,
    ToolCallBlock,
    ToolCallOutput,
    ToolChoice,
    ToolResultBlock,
)
from lash.kernel.machine import TurnCheckpoint, WaitingCheckpoint, WaitingLlm
from lash.kernel.messages import (
    CheckpointKind,
    Deleted,
    InjectedMessage,
    Message,
    Part,
    PartKind,
    PluginOrigin,
    ProcessOrigin,
    Role,
    TurnCause,
)
from lash.kernel.outcome import (
    AgentFrameSwitch,
    Finished,
    Stopped,
    StopReason,
    ToolValueAnswer,
    finished_text,
)
from lash.kernel.tools.definition import (
    AgentSurface,
    Availability,
    IdempotentRetry,
    Scheduling,
    ToolDefinition,
)
from lash.kernel.tools.output import (
    CompletedToolCall,
    FailTurn,
    FailureClass,
    PendingToolCall,
    RetrySafe,
    TextReturn,
    ToolFailure,
    ToolOutput,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LASH_UPDATE_GOLDEN") == "1"
IMAGE = AttachmentRef(id="ab" * 32, mime="image/png", byte_len=1024, width=32, height=32)

ASSISTANT = Message(
    id="t1.m0",
    role=Role.ASSISTANT,
    parts=(
        Part(
            id="t1.m0.p0",
            kind=PartKind.REASONING,
            content="Two sums.",
            reasoning=ReasoningReplay(item_id="rs_1", encrypted_content="enc", summary=("s",)),
        ),
        Part(
            id="t1.m0.p1",
            kind=PartKind.PROSE,
            content="Adding.",
            response_meta=ResponseTextMeta(id="msg_1", status="completed"),
        ),
        Part(
            id="t1.m0.p2",
            kind=PartKind.TOOL_CALL,
            content='{"a":1,"b":2}',
            tool_call_id="c1",
            tool_name="add",
            tool_replay=ProviderReplayMeta(item_id="fc_1"),
        ),
    ),
)
RESULTS = Message(
    id="t1.m1",
    role=Role.USER,
    parts=(
        Part(id="t1.m1.p0", kind=PartKind.TOOL_RESULT, content="3", tool_call_id="c1",
             tool_name="add"),
        Part(id="t1.m1.p1", kind=PartKind.IMAGE, attachment=IMAGE, tool_call_id="c1",
             tool_name="add"),
        Part(id="t1.m1.p2", kind=PartKind.TOOL_RESULT, content="old", tool_call_id="c0",
             prune=Deleted(breadcrumb="big listing", archive_hash="h1")),
    ),
    origin=PluginOrigin(plugin_id="budget", transient=True),
)  # fmt: skip
EVENT = TurnCause(
    id="cause-1",
    event_type="wake",
    text="timer fired",
    origin=ProcessOrigin(process_id="p1", event_type="wake", sequence=3, wake_id="w9"),
).to_event_message()

REQUEST = LlmRequest(
    model="gpt-x",
    messages=(
        LlmMessage.text(LlmRole.SYSTEM, "Be brief."),
        LlmMessage(
            role=LlmRole.USER,
            blocks=(TextBlock(text="see", cache_breakpoint=True), ImageBlock(attachment_idx=0)),
        ),
        LlmMessage(
            role=LlmRole.ASSISTANT,
            blocks=(
                ReasoningBlock(text="hm", replay=ReasoningReplay(signature="sig")),
                ToolCallBlock(call_id="c1", tool_name="add", input_json="{}"),
            ),
        ),
        LlmMessage(role=LlmRole.USER, blocks=(ToolResultBlock(call_id="c1", content="3"),)),
    ),
    attachments=(IMAGE,),
    tools=(LlmToolSpec(name="add", description="Add.", input_schema={"type": "object"}),),
    tool_choice=ToolChoice.REQUIRED,
    model_variant="high",
    generation=GenerationOptions(output_token_cap=512),
    session_id="s1",
    output_spec=JsonSchemaOutput(name="answer", schema={"type": "object"}),
)
RESPONSE = LlmResponse(
    full_text="ok",
    parts=(
        ReasoningOutput(text="think", replay=ReasoningReplay(redacted=True)),
        TextOutput(text="ok"),
        ToolCallOutput(call_id="c2", tool_name="read", input_json='{"path":"a"}'),
    ),
    usage=LlmUsage(input_tokens=100, output_tokens=20, cached_input_tokens=60, reasoning_tokens=5),
    terminal_reason=TerminalReason.TOOL_USE,
)
FAILURE = ToolFailure(
    failure_class=FailureClass.TIMEOUT,
    code="slow",
    message="took too long",
    retry=RetrySafe(after_ms=500),
)

CASES: dict[str, tuple[Any, Any]] = {
    "message_assistant": (ASSISTANT, Message),
    "message_tool_results": (RESULTS, Message),
    "message_event": (EVENT, Message),
    "injected_message": (InjectedMessage(role=Role.SYSTEM, content="note"), InjectedMessage),
    "llm_request": (REQUEST, LlmRequest),
    "llm_response": (RESPONSE, LlmResponse),
    "llm_call_error": (
        LlmCallError(message="rate limited", retryable=True, code="429", raw="{}"),
        LlmCallError,
    ),
    "tool_definition": (
        ToolDefinition(
            name="add",
            description="Add two integers.",
            input_schema={"type": "object", "properties": {"a": {"type": "integer"}}},
            availability=Availability.CALLABLE,
            scheduling=Scheduling.SERIAL,
            retry_policy=IdempotentRetry(max_attempts=4),
            surface=AgentSurface(module_path=("math",), aliases=("plus",)),
            examples=("add(a=1)",),
        ),
        ToolDefinition,
    ),
    "tool_definition_defaults": (ToolDefinition(name="noop"), ToolDefinition),
    "tool_output_success": (ToolOutput.success({"sum": 3}), ToolOutput),
    "tool_output_failure": (ToolOutput.failure(FAILURE), ToolOutput),
    "tool_output_attachments": (
        ToolOutput.success({"shot": IMAGE, "$lash_tool_value": "user data", "n": [1.5]}),
        ToolOutput,
    ),
    "tool_output_cancelled": (ToolOutput.cancelled("user hit stop"), ToolOutput),
    "tool_output_fail_control": (
        ToolOutput.success(None, control=FailTurn(failure=FAILURE)),
        ToolOutput,
    ),
    "outcome_finished": (finished_text("done"), Finished),
    "outcome_tool_value": (Finished(result=ToolValueAnswer(tool_name="t", value=[1])), Finished),
    "outcome_frame_switch": (AgentFrameSwitch(frame_id="f2", task="review"), AgentFrameSwitch),
    "outcome_stopped": (
        Stopped(reason=StopReason.TOOL_ERROR, message="no", tool_name="t", value={"x": 1}),
        Stopped,
    ),
    "effect_llm_call": (LlmCall(id=2, request=REQUEST), LlmCall),
    "effect_tool_calls": (
        ToolCalls(
            id=3,
            calls=(
                PendingToolCall(call_id="c1", tool_name="add", args={"a": 1}, input_json='{"a":1}'),
                PendingToolCall(
                    call_id="c2", tool_name="add", args={}, input_json="[", args_error="bad JSON"
                ),
            ),
        ),
        ToolCalls,
    ),
    "effect_checkpoint": (Checkpoint(id=4, kind=CheckpointKind.BEFORE_COMPLETION), Checkpoint),
    "effect_emit": (Emit(event=error_event("llm_provider", "x", "boom", raw="r")), Emit),
    "effect_progress": (Progress(delta=(ASSISTANT,), iteration=1), Progress),
    "effect_done": (
        Done(
            outcome=finished_text("3"),
            added=(ASSISTANT, RESULTS),
            delta=(RESULTS,),
            iteration=1,
            usage=LlmUsage(input_tokens=1),
        ),
        Done,
    ),
    "response_llm_completed": (
        LlmCompleted(id=2, response=RESPONSE, text_streamed=True),
        LlmCompleted,
    ),
    "response_llm_failed": (LlmFailed(id=2, error=LlmCallError(message="x")), LlmFailed),
    "response_tool_results": (
        ToolResults(
            id=3,
            results=(
                CompletedToolCall(
                    call_id="c1",
                    tool_name="add",
                    args={"a": 1},
                    output=ToolOutput.success(3),
                    model_return=(TextReturn(text="3"),),
                    duration_ms=7,
                ),
            ),
        ),
        ToolResults,
    ),
    "response_checkpoint": (
        CheckpointDelivered(
            id=4,
            messages=(InjectedMessage(role=Role.USER, content="also"),),
            turn_causes=(TurnCause(id="c", event_type="wake", text="t"),),
        ),
        CheckpointDelivered,
    ),
    "turn_checkpoint_waiting_llm": (
        TurnCheckpoint(
            state=WaitingLlm(effect_id=2, request=REQUEST, driver_state={"k": [1, 2]}),
            queue=(Emit(event=TextDelta(content="hi")),),
            next_effect_id=3,
            next_message_seq=1,
            messages=(EVENT, ASSISTANT),
            history_len=1,
            cursor=1,
            iteration=4,
            iteration_offset=3,
            usage=LlmUsage(input_tokens=9),
            synced_iteration=4,
        ),
        TurnCheckpoint,
    ),
    "turn_checkpoint_waiting_checkpoint": (
        TurnCheckpoint(
            state=WaitingCheckpoint(
                effect_id=5,
                kind=CheckpointKind.BEFORE_COMPLETION,
                on_empty=FinishWith(outcome=finished_text("bye")),
            ),
            queue=(
                Emit(
                    event=TokenUsageReported(
                        iteration=0, usage=LlmUsage(output_tokens=1), cumulative=LlmUsage()
                    )
                ),
            ),
            next_effect_id=6,
            turn_limit_scheduled=True,
        ),
        TurnCheckpoint,
    ),
}


def _golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


@pytest.mark.parametrize("name", sorted(CASES))
def test_wire_form_matches_golden_file(name: str) -> None:
    value, type_ = CASES[name]
    encoded = codec.encode(value)
    path = _golden_path(name)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(json.loads(encoded), indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"missing golden file {path.name}; run with LASH_UPDATE_GOLDEN=1"
    golden = json.loads(path.read_text())
    assert encoded == codec.encode(golden), f"{name}: wire form changed"
    assert codec.decode(path.read_bytes(), type_) == value


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_through_builtins(name: str) -> None:
    value, type_ = CASES[name]
    assert codec.from_builtins(codec.to_builtins(value), type_) == value
    assert codec.decode(codec.encode(value), type_) == value


def test_no_stray_golden_files() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} - {"hashes"} == set(CASES)


def test_canonical_hashes_are_pinned() -> None:
    hashes = {name: codec.canonical_hash(value) for name, (value, _) in sorted(CASES.items())}
    path = GOLDEN / "hashes.json"
    if UPDATE:
        path.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    assert json.loads(path.read_text()) == hashes


def test_encoding_is_canonical() -> None:
    # Key order of plain dicts does not change the bytes or the hash.
    a = PendingToolCall(call_id="c", tool_name="t", args={"b": 1, "a": {"y": 2, "x": 1}})
    b = PendingToolCall(call_id="c", tool_name="t", args={"a": {"x": 1, "y": 2}, "b": 1})
    assert codec.encode(a) == codec.encode(b)
    assert codec.canonical_hash(a) == codec.canonical_hash(b)
    assert codec.encode(a) == b'{"args":{"a":{"x":1,"y":2},"b":1},"call_id":"c","tool_name":"t"}'
    assert len(codec.canonical_hash(a)) == 64


# ---------------------------------------------------------------- bad input


def test_corrupt_json_names_the_problem() -> None:
    with pytest.raises(CodecError, match=r"truncated|malformed|Invalid"):
        codec.decode(b'{"id": "m", "role": "user", "parts": [', Message)


def test_unknown_tag_names_the_path() -> None:
    bad = b'{"id":"m","role":"user","parts":[{"id":"p","kind":"hologram"}]}'
    with pytest.raises(CodecError) as info:
        codec.decode(bad, Message)
    assert info.value.path == "$.parts[0].kind"
    assert "hologram" in str(info.value)


def test_wrong_type_names_the_path() -> None:
    bad = b'{"state":{"type":"waiting_llm","effect_id":"two","request":{"model":"m"}}}'
    with pytest.raises(CodecError) as info:
        codec.decode(bad, TurnCheckpoint)
    assert info.value.path == "$.state.effect_id"


def test_bad_attachment_id_is_rejected_on_decode() -> None:
    bad = b'{"id":"../../etc/passwd","mime":"image/png","byte_len":1}'
    with pytest.raises(CodecError, match="SHA-256"):
        codec.decode(bad, AttachmentRef)


def test_generation_options_reject_unknown_fields() -> None:
    with pytest.raises(CodecError, match="temperature"):
        codec.decode(b'{"temperature": 2}', GenerationOptions)
    with pytest.raises(CodecError, match="positive"):
        codec.decode(b'{"output_token_cap": 0}', GenerationOptions)


def test_document_envelope_checks_format_and_version() -> None:
    cp = CASES["turn_checkpoint_waiting_llm"][0]
    blob = codec.encode_document("turn_checkpoint", cp)
    assert codec.decode_document(blob, "turn_checkpoint", TurnCheckpoint) == cp
    with pytest.raises(CodecError, match=r"expected a lash\.commit document") as info:
        codec.decode_document(blob, "commit", TurnCheckpoint)
    assert info.value.path == "$.format"
    newer = blob.replace(b'"version":1', b'"version":2')
    with pytest.raises(CodecError, match="version 2 is not supported") as info:
        codec.decode_document(newer, "turn_checkpoint", TurnCheckpoint)
    assert info.value.path == "$.version"
    broken = blob.replace(b'"effect_id":2', b'"effect_id":null')
    with pytest.raises(CodecError) as info:
        codec.decode_document(broken, "turn_checkpoint", TurnCheckpoint)
    assert info.value.path == "$.data.state.effect_id"
    with pytest.raises(CodecError):
        codec.decode_document(b"[]", "turn_checkpoint", TurnCheckpoint)


def test_unencodable_values_raise_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode({"x": object()})
    with pytest.raises(CodecError, match="cannot convert"):
        codec.to_builtins({"x": object()})


def test_tool_values_with_attachments_survive_the_wire_exactly() -> None:
    output = ToolOutput.success({"shot": IMAGE, "$lash_tool_value": "user data", "n": [1.5]})
    back = codec.decode(codec.encode(output), ToolOutput)
    assert back == output
    assert back.value == {"shot": IMAGE, "$lash_tool_value": "user data", "n": [1.5]}
    assert isinstance(back.value["shot"], AttachmentRef)


@pytest.mark.parametrize("bad", ["a" * 64 + "\n", "A" * 64, "a" * 63, "a" * 65, "g" * 64, ""])
def test_attachment_ids_must_be_exactly_64_lowercase_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        AttachmentRef(id=bad, mime="image/png", byte_len=1)
