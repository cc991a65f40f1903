"""Replay keys, envelopes and the effect boundary (ARCHITECTURE invariant 2).

Replay-key formats are compatibility data: a journal written today must be
readable tomorrow, so every builder is pinned here with exact strings
(reference/runtime.md §2.2). The turn-level tests record what actually crosses
the boundary during a real turn.
"""

import hashlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from runtime_support import RecordingController, RecordingHost, run

from lash import LashCore, tool
from lash.kernel.codec import canonical_hash
from lash.kernel.effects import CheckpointDelivered, LlmCompleted, LlmFailed, SurfaceSynced
from lash.kernel.llm import LlmCallError, LlmMessage, LlmRequest, LlmResponse, LlmRole
from lash.kernel.messages import CheckpointKind
from lash.kernel.outcome import Finished
from lash.kernel.tools.output import CompletedToolCall, PendingToolCall, ToolOutput
from lash.runtime.effects import (
    OUTCOME_TYPES,
    CheckpointCommand,
    DirectCommand,
    DirectCompleted,
    DurabilityTier,
    EffectEnvelope,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
    InlineEffectHost,
    InvocationScope,
    LlmCallCommand,
    RuntimeInvocation,
    SleepCommand,
    Slept,
    SyncSurfaceCommand,
    ToolCallCommand,
    TurnScope,
    attempt_key,
    batch_entry_key,
    child_key,
    direct_key,
    outcome_matches,
    retry_sleep_key,
    tool_call_cause,
    tool_call_key,
    turn_cause,
    turn_effect_key,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

CALL_KEY = "s1:t1:1:0:tool_call:2:call_1"
REQUEST = LlmRequest(model="m", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
REQUEST_HASH = "51da1b9ff61ebe6b815c1b77eec773191015b6eae8ee5ae6a641dd91dde6eaf8"


# ---------------------------------------------------------------- golden builders


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (EffectKind.LLM_CALL, "s1:t1:1:0:llm_call:1"),
        (EffectKind.DIRECT, "s1:t1:1:0:direct:1"),
        (EffectKind.TOOL_CALL, "s1:t1:1:0:tool_call:1"),
        (EffectKind.CHECKPOINT, "s1:t1:1:0:checkpoint:1"),
        (EffectKind.SYNC_EXECUTION_SURFACE, "s1:t1:1:0:sync_execution_surface:1"),
        (EffectKind.SLEEP, "s1:t1:1:0:sleep:1"),
        (EffectKind.EXEC_CODE, "s1:t1:1:0:exec_code:1"),
    ],
)
def test_turn_effect_key_golden_for_every_kind(kind: EffectKind, expected: str) -> None:
    assert turn_effect_key("s1", "t1", 1, 0, kind, 1) == expected


def test_effect_kind_wire_values_are_pinned() -> None:
    assert [k.value for k in EffectKind] == [
        "llm_call",
        "direct",
        "tool_call",
        "checkpoint",
        "sync_execution_surface",
        "sleep",
        "exec_code",
    ]


def test_turn_effect_key_orders_coordinates() -> None:
    key = turn_effect_key("sess-A", "turn-B", 7, 12, EffectKind.CHECKPOINT, 42)
    assert key == "sess-A:turn-B:7:12:checkpoint:42"


def test_tool_call_key_golden() -> None:
    assert tool_call_key("s1", "t1", 1, 0, 2, "call_1") == CALL_KEY
    assert tool_call_key("chat", "abc", 3, 5, 9, "toolu_01X") == (
        "chat:abc:3:5:tool_call:9:toolu_01X"
    )


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (0, CALL_KEY),
        (1, CALL_KEY),
        (2, f"{CALL_KEY}:attempt:2"),
        (10, f"{CALL_KEY}:attempt:10"),
    ],
)
def test_attempt_key_golden(attempt: int, expected: str) -> None:
    assert attempt_key(CALL_KEY, attempt) == expected


def test_retry_sleep_key_golden() -> None:
    assert retry_sleep_key(CALL_KEY, "fetch", 1) == f"{CALL_KEY}:fetch:attempt:1:sleep"
    assert retry_sleep_key("p", "t", 3) == "p:t:attempt:3:sleep"


@pytest.mark.parametrize(
    ("index", "suffix"), [(0, "batch:00"), (3, "batch:03"), (24, "batch:24"), (100, "batch:100")]
)
def test_batch_entry_key_golden(index: int, suffix: str) -> None:
    assert batch_entry_key(CALL_KEY, index) == f"{CALL_KEY}:{suffix}"


def test_child_key_golden() -> None:
    assert child_key("s1:t1:1:0:llm_call:1", "compaction") == "s1:t1:1:0:llm_call:1:compaction"


def test_cause_prefixes_golden() -> None:
    assert turn_cause("s1", "t1") == "cause:turn:s1:t1:"
    assert tool_call_cause("s1", "call_1") == "cause:tool_call:s1:call_1:"


def test_direct_key_with_explicit_key() -> None:
    assert (
        direct_key("s1", "t1", "subagent", REQUEST, explicit_key="summary-1")
        == "s1:t1:direct:subagent:request:summary-1"
    )


def test_direct_key_without_turn_omits_the_turn_segment() -> None:
    assert direct_key("s1", None, "observer", REQUEST, explicit_key="k") == (
        "s1:direct:observer:request:k"
    )
    assert direct_key("s1", "", "observer", REQUEST, explicit_key="k") == (
        "s1:direct:observer:request:k"
    )


def test_direct_key_with_cause_prefix() -> None:
    cause = tool_call_cause("s1", "call_7")
    assert direct_key("s1", "t1", "subagent", REQUEST, cause=cause, explicit_key="x") == (
        "s1:t1:direct:subagent:cause:tool_call:s1:call_7:request:x"
    )
    assert direct_key("s1", "t1", "subagent", REQUEST, cause=turn_cause("s1", "t1")) == (
        f"s1:t1:direct:subagent:cause:turn:s1:t1:sha256:{REQUEST_HASH}"
    )


def test_direct_key_hashes_the_request_when_unnamed() -> None:
    key = direct_key("s1", "t1", "compaction", REQUEST)
    assert key == f"s1:t1:direct:compaction:sha256:{REQUEST_HASH}"
    # the hash is sha256 of the canonical JSON of the request, pinned byte for byte
    canonical = (
        b'{"generation":{},"messages":[{"blocks":[{"text":"hi","type":"text"}],'
        b'"role":"user"}],"model":"m"}'
    )
    assert hashlib.sha256(canonical).hexdigest() == REQUEST_HASH


def test_direct_key_is_sensitive_to_the_request() -> None:
    other = LlmRequest(model="m", messages=(LlmMessage.text(LlmRole.USER, "hi!"),))
    assert direct_key("s1", "t1", "compaction", other) != direct_key(
        "s1", "t1", "compaction", REQUEST
    )
    # an equal request built separately gives the same key
    again = LlmRequest(model="m", messages=(LlmMessage.text(LlmRole.USER, "hi"),))
    assert direct_key("s1", "t1", "compaction", again) == direct_key(
        "s1", "t1", "compaction", REQUEST
    )


# ---------------------------------------------------------------- envelopes


def _invocation(kind: EffectKind, *, effect_id: str = "3", key: str = "k") -> RuntimeInvocation:
    return RuntimeInvocation(
        scope=InvocationScope(session_id="s1", turn_id="t1", turn_index=1, iteration=1),
        effect_id=effect_id,
        kind=kind,
        replay_key=key,
    )


def _checkpoint_envelope() -> EffectEnvelope:
    return EffectEnvelope(
        invocation=_invocation(EffectKind.CHECKPOINT, key="s1:t1:1:1:checkpoint:3"),
        command=CheckpointCommand(effect_id=3, kind=CheckpointKind.AFTER_WORK),
    )


CHECKPOINT_JSON = (
    b'{"command":{"effect_id":3,"kind":"after_work","type":"checkpoint"},'
    b'"invocation":{"effect_id":"3","kind":"checkpoint","replay_key":"s1:t1:1:1:checkpoint:3",'
    b'"scope":{"iteration":1,"session_id":"s1","turn_id":"t1","turn_index":1}}}'
)
CHECKPOINT_HASH = "d64990724a68198ff9ea3077d90f7f650c843137b3c7e1019b7c6846d9725270"


def test_envelope_canonical_json_and_stable_hash_are_pinned() -> None:
    env = _checkpoint_envelope()
    assert msgspec.json.encode(env, order="sorted") == CHECKPOINT_JSON
    assert env.stable_hash() == CHECKPOINT_HASH
    assert hashlib.sha256(CHECKPOINT_JSON).hexdigest() == CHECKPOINT_HASH
    assert env.replay_key == "s1:t1:1:1:checkpoint:3"


def test_stable_hash_is_equal_for_equal_envelopes() -> None:
    assert _checkpoint_envelope().stable_hash() == _checkpoint_envelope().stable_hash()
    assert _checkpoint_envelope().stable_hash() == canonical_hash(_checkpoint_envelope())


def test_stable_hash_changes_with_any_field() -> None:
    base = _checkpoint_envelope()
    variants = [
        EffectEnvelope(
            invocation=_invocation(EffectKind.CHECKPOINT, key="s1:t1:1:1:checkpoint:4"),
            command=base.command,
        ),
        EffectEnvelope(
            invocation=_invocation(
                EffectKind.CHECKPOINT, effect_id="4", key="s1:t1:1:1:checkpoint:3"
            ),
            command=base.command,
        ),
        EffectEnvelope(
            invocation=base.invocation,
            command=CheckpointCommand(effect_id=3, kind=CheckpointKind.BEFORE_COMPLETION),
        ),
        EffectEnvelope(
            invocation=msgspec.structs.replace(base.invocation, caused_by="effect:2"),
            command=base.command,
        ),
    ]
    hashes = {v.stable_hash() for v in variants}
    assert len(hashes) == len(variants)
    assert base.stable_hash() not in hashes


def test_envelope_round_trips_through_json() -> None:
    env = EffectEnvelope(
        invocation=_invocation(EffectKind.TOOL_CALL, effect_id="2:call_1", key=CALL_KEY),
        command=ToolCallCommand(
            call=PendingToolCall(call_id="call_1", tool_name="add", args={"a": 1}),
            idempotency_key=CALL_KEY,
            attempt=2,
            max_attempts=3,
        ),
    )
    decoded = msgspec.json.decode(msgspec.json.encode(env), type=EffectEnvelope)
    assert decoded == env
    assert decoded.stable_hash() == env.stable_hash()


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        (EffectKind.LLM_CALL, CheckpointCommand(effect_id=1, kind=CheckpointKind.AFTER_WORK)),
        (EffectKind.CHECKPOINT, LlmCallCommand(effect_id=1, request=REQUEST)),
        (EffectKind.TOOL_CALL, SleepCommand(duration_ms=5)),
        (EffectKind.SLEEP, SyncSurfaceCommand(effect_id=1, refresh=True)),
        (EffectKind.DIRECT, LlmCallCommand(effect_id=1, request=REQUEST)),
    ],
)
def test_envelope_rejects_a_kind_mismatch(kind: EffectKind, command: Any) -> None:
    with pytest.raises(ValueError, match="does not match command") as info:
        EffectEnvelope(invocation=_invocation(kind, key="the-key"), command=command)
    assert "'the-key'" in str(info.value)
    assert f"invocation kind {kind.value}" in str(info.value)


def test_envelope_kind_mismatch_is_rejected_on_decode_too() -> None:
    bad = CHECKPOINT_JSON.replace(b'"kind":"checkpoint"', b'"kind":"sleep"')
    with pytest.raises(msgspec.ValidationError, match="does not match command"):
        msgspec.json.decode(bad, type=EffectEnvelope)


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_invocation_rejects_a_blank_effect_id(blank: str) -> None:
    with pytest.raises(ValueError, match="non-blank effect_id"):
        _invocation(EffectKind.SLEEP, effect_id=blank)


@pytest.mark.parametrize("blank", ["", "  "])
def test_invocation_rejects_a_blank_replay_key(blank: str) -> None:
    with pytest.raises(ValueError, match="non-blank replay_key"):
        _invocation(EffectKind.SLEEP, key=blank)


@pytest.mark.parametrize(
    ("session_id", "turn_id", "field"), [("", "t1", "session_id"), ("s1", " ", "turn_id")]
)
def test_turn_scope_rejects_blank_ids(session_id: str, turn_id: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"non-blank {field}"):
        TurnScope(session_id=session_id, turn_id=turn_id)


# ---------------------------------------------------------------- outcome_matches


_RESPONSE = LlmResponse(full_text="x")
_COMPLETED = CompletedToolCall(
    call_id="c", tool_name="t", args={}, output=ToolOutput.success(1), duration_ms=0
)
_OUTCOMES: dict[str, EffectOutcome] = {
    "llm_completed": LlmCompleted(id=1, response=_RESPONSE),
    "llm_failed": LlmFailed(id=1, error=LlmCallError(message="x")),
    "completed_tool_call": _COMPLETED,
    "checkpoint_delivered": CheckpointDelivered(id=1),
    "surface_synced": SurfaceSynced(id=1),
    "slept": Slept(duration_ms=1),
    "direct_completed": DirectCompleted(response=_RESPONSE),
}
_ACCEPTED = {
    EffectKind.LLM_CALL: {"llm_completed", "llm_failed"},
    EffectKind.DIRECT: {"direct_completed", "llm_failed"},
    EffectKind.TOOL_CALL: {"completed_tool_call"},
    EffectKind.CHECKPOINT: {"checkpoint_delivered"},
    EffectKind.SYNC_EXECUTION_SURFACE: {"surface_synced"},
    EffectKind.SLEEP: {"slept"},
    EffectKind.EXEC_CODE: set(),
}


@pytest.mark.parametrize("kind", list(EffectKind))
def test_outcome_matches_accepts_exactly_the_kinds_outcomes(kind: EffectKind) -> None:
    accepted = {name for name, outcome in _OUTCOMES.items() if outcome_matches(kind, outcome)}
    assert accepted == _ACCEPTED[kind]


def test_outcome_matches_rejects_non_outcomes() -> None:
    assert not outcome_matches(EffectKind.LLM_CALL, None)
    assert not outcome_matches(EffectKind.TOOL_CALL, ToolOutput.success(1))
    assert not outcome_matches(EffectKind.SLEEP, {"type": "slept", "duration_ms": 1})


def test_outcome_types_cover_every_kind_but_exec_code() -> None:
    assert set(OUTCOME_TYPES) == set(EffectKind) - {EffectKind.EXEC_CODE}


def test_direct_command_is_a_direct_envelope() -> None:
    env = EffectEnvelope(
        invocation=_invocation(EffectKind.DIRECT, key=direct_key("s1", "t1", "x", REQUEST)),
        command=DirectCommand(request=REQUEST, usage_source="x"),
    )
    assert env.replay_key == f"s1:t1:direct:x:sha256:{REQUEST_HASH}"


# ---------------------------------------------------------------- a real turn


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _two_tool_script() -> list[Reply]:
    return [
        Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4})]),
        Reply(text="3 and 7"),
    ]


async def _recorded_turn(
    replies: list[Reply], *, session_id: str = "s1", turn_id: str = "t1", text: str = "hi"
) -> tuple[RecordingHost, Any]:
    host = RecordingHost()
    core = LashCore(
        provider=ScriptedProvider(replies), model="scripted", tools=[add], effect_host=host
    )
    async with core.session(session_id) as session:
        result = await session.run(text, turn_id=turn_id)
    return host, result


def test_turn_envelope_sequence_for_two_tool_calls_then_answer() -> None:
    host, result = run(_recorded_turn(_two_tool_script()))
    assert isinstance(result.outcome, Finished)
    assert result.text == "3 and 7"
    assert host.controller.triples() == [
        ("llm_call", "s1:t1:1:0:llm_call:1", "1"),
        ("tool_call", "s1:t1:1:0:tool_call:2:call_1", "2:call_1"),
        ("tool_call", "s1:t1:1:0:tool_call:2:call_2", "2:call_2"),
        ("checkpoint", "s1:t1:1:1:checkpoint:3", "3"),
        ("llm_call", "s1:t1:1:1:llm_call:4", "4"),
        ("checkpoint", "s1:t1:1:1:checkpoint:5", "5"),
    ]
    assert host.scopes == [TurnScope(session_id="s1", turn_id="t1")]


def test_tool_call_envelopes_carry_scope_cause_and_idempotency_key() -> None:
    host, _ = run(_recorded_turn(_two_tool_script()))
    tools = [e for e in host.controller.envelopes if e.invocation.kind is EffectKind.TOOL_CALL]
    assert [e.invocation.caused_by for e in tools] == ["effect:2", "effect:2"]
    assert [e.invocation.scope for e in tools] == [
        InvocationScope(session_id="s1", turn_id="t1", turn_index=1, iteration=0)
    ] * 2
    commands = [e.command for e in tools]
    assert all(isinstance(c, ToolCallCommand) for c in commands)
    assert [(c.idempotency_key, c.attempt, c.max_attempts) for c in commands] == [  # type: ignore[union-attr]
        ("s1:t1:1:0:tool_call:2:call_1", 1, 1),
        ("s1:t1:1:0:tool_call:2:call_2", 1, 1),
    ]


def test_plain_answer_crosses_the_controller_once_per_llm_call_and_checkpoint() -> None:
    """Ported: standard_turn_llm_and_checkpoint_effects_cross_controller_once."""
    host, result = run(_recorded_turn([Reply(text="hello")]))
    assert result.text == "hello"
    assert host.controller.triples() == [
        ("llm_call", "s1:t1:1:0:llm_call:1", "1"),
        ("checkpoint", "s1:t1:1:0:checkpoint:2", "2"),
    ]
    assert all(key.startswith("s1:") for key in host.controller.keys(None))


def test_coordinates_continue_across_turns_and_resume_from_the_store() -> None:
    async def body() -> list[str]:
        host = RecordingHost()
        provider = ScriptedProvider(
            [
                Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]),
                Reply(text="2"),
                Reply(text="ok"),
                Reply(text="again"),
            ]
        )
        core = LashCore(provider=provider, model="scripted", tools=[add], effect_host=host)
        async with core.session("s1") as session:
            await session.run("one", turn_id="t1")
            await session.run("two", turn_id="t2")
        async with core.session("s1") as reopened:  # a fresh Session object, loaded
            await reopened.run("three", turn_id="t3")
        return host.controller.keys("llm_call")

    assert run(body()) == [
        "s1:t1:1:0:llm_call:1",
        "s1:t1:1:1:llm_call:4",
        "s1:t2:2:2:llm_call:1",
        "s1:t3:3:3:llm_call:1",
    ]


def test_same_turn_replays_to_identical_envelopes() -> None:
    first, _ = run(_recorded_turn(_two_tool_script()))
    second, _ = run(_recorded_turn(_two_tool_script()))
    hashes = [e.stable_hash() for e in first.controller.envelopes]
    assert hashes == [e.stable_hash() for e in second.controller.envelopes]
    assert len(set(hashes)) == len(hashes)


def test_checkpoint_envelope_carries_only_effect_id_and_kind() -> None:
    """Ported: turn_effect_envelope_does_not_carry_checkpoint_payload."""
    host, _ = run(_recorded_turn(_two_tool_script()))
    checkpoints = [
        msgspec.to_builtins(e.command)
        for e in host.controller.envelopes
        if e.invocation.kind is EffectKind.CHECKPOINT
    ]
    assert checkpoints == [
        {"type": "checkpoint", "effect_id": 3, "kind": "after_work"},
        {"type": "checkpoint", "effect_id": 5, "kind": "before_completion"},
    ]


def test_envelopes_other_than_model_calls_never_carry_history() -> None:
    marker = "history-marker-7f3a"
    host, _ = run(_recorded_turn(_two_tool_script(), text=f"please {marker}"))
    for env in host.controller.envelopes:
        text = msgspec.json.encode(env).decode()
        if env.invocation.kind is EffectKind.LLM_CALL:
            assert marker in text  # the request is the model's prompt
        else:
            assert marker not in text, env.replay_key
    tool = next(e for e in host.controller.envelopes if e.invocation.kind is EffectKind.TOOL_CALL)
    assert msgspec.to_builtins(tool.command) == {
        "type": "tool_call",
        "call": {
            "call_id": "call_1",
            "tool_name": "add",
            "args": {"a": 1, "b": 2},
            "input_json": '{"a":1,"b":2}',
        },
        "idempotency_key": "s1:t1:1:0:tool_call:2:call_1",
    }


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found.extend(_walk(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(_walk(item))
    return found


def test_envelopes_never_contain_bytes() -> None:
    host, _ = run(_recorded_turn(_two_tool_script()))
    assert host.controller.envelopes
    for env in host.controller.envelopes:
        plain = msgspec.to_builtins(env, builtin_types=(bytes, bytearray, memoryview))
        assert not [v for v in _walk(plain) if isinstance(v, bytes | bytearray | memoryview)]
        assert msgspec.to_builtins(env.command)["type"] == env.invocation.kind.value


def test_inline_host_is_inline_and_stateless() -> None:
    host = InlineEffectHost()
    assert host.tier is DurabilityTier.INLINE
    a = host.scoped(TurnScope(session_id="s1", turn_id="t1"))
    b = host.scoped(TurnScope(session_id="s2", turn_id="t2"))
    assert a is b
    assert a.tier is DurabilityTier.INLINE


# ---------------------------------------------------------------- replay from a journal


def _counting_add(runs: list[tuple[int, int]]) -> Any:
    @tool(name="add")
    async def counting_add(a: int, b: int) -> int:
        """Add two integers."""
        runs.append((a, b))
        return a + b

    return counting_add


async def _durable_turn(
    controller: RecordingController, provider: ScriptedProvider, t: Any, data: Path
) -> Any:
    """One turn on a durable wiring: SQLite store, file attachments beside it in ``data``."""
    core = LashCore(
        provider=provider,
        model="scripted",
        tools=[t],
        effect_host=RecordingHost(controller),
        store=f"sqlite:///{data}",
    )
    async with core, core.session("s1") as session:
        return await session.run("hi", turn_id="t1")


def _record_then_replay(
    tmp_path: Path,
) -> tuple[Any, Any, list[tuple[int, int]], ScriptedProvider, list[str]]:
    """Record a turn, then replay it from the journal in a fresh process's store."""
    runs: list[tuple[int, int]] = []
    t = _counting_add(runs)
    recorder = RecordingController(tier=DurabilityTier.DURABLE)
    script = ScriptedProvider(_two_tool_script())
    original = run(_durable_turn(recorder, script, t, tmp_path / "recorded"), 10.0)
    assert runs == [(1, 2), (3, 4)]
    journal = dict(recorder.outcomes)

    async def replay(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        return journal[envelope.replay_key]

    replayer = RecordingController(tier=DurabilityTier.DURABLE, hook=replay)
    empty = ScriptedProvider([])
    replayed = run(_durable_turn(replayer, empty, t, tmp_path / "replayed"), 10.0)
    assert replayer.keys() == recorder.keys()
    return original, replayed, runs, empty, recorder.keys()


def test_a_durable_journal_replays_the_turn_without_reexecuting_anything(tmp_path: Path) -> None:
    """Every nondeterministic operation crosses the boundary: replaying the recorded
    outcomes by replay key reproduces the turn with no model call and no tool run."""
    original, replayed, runs, empty, keys = _record_then_replay(tmp_path)
    assert runs == [(1, 2), (3, 4)]  # no tool ran again
    assert empty.calls == 0  # no model call
    assert len(keys) == 6
    assert replayed.outcome == original.outcome
    assert replayed.text == original.text == "3 and 7"
    assert replayed.messages == original.messages
    assert replayed.tool_calls == original.tool_calls


def test_a_replayed_turn_still_streams_its_prose_answer(tmp_path: Path) -> None:
    """A host watching a turn resumed from a journal must see the answer: the recorded
    ``LlmCompleted`` says ``text_streamed=True`` (it streamed in the *original*
    process), but nothing streamed in this one."""
    original, replayed, *_ = _record_then_replay(tmp_path)

    def prose(result: Any) -> str:
        return "".join(a.text for a in result.activities if a.type == "assistant_prose_delta")

    assert prose(original) == "3 and 7"
    assert prose(replayed) == "3 and 7"
