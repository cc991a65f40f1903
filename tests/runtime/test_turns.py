"""The facade end to end: results, sessions, streams, cancellation, errors, stores.

Each test drives ``LashCore`` → ``core.session(id)`` → ``session.run`` /
``session.turn(...).stream()`` against ``ScriptedProvider``, as a host would.
"""

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from runtime_support import RecordingController, RecordingHost, run

from lash import (
    CancelToken,
    ConfigError,
    LashCore,
    LashError,
    Session,
    SessionBusyError,
    ToolContext,
    TurnResult,
    tool,
)
from lash.kernel.effects import CheckpointDelivered, LlmCompleted
from lash.kernel.llm import LlmResponse, LlmUsage, ToolResultBlock
from lash.kernel.messages import Role, user_message
from lash.kernel.outcome import AssistantAnswer, Finished, Stopped, StopReason, ToolValueAnswer
from lash.kernel.render import messages_are_prompt_resume_safe
from lash.kernel.tools.output import FinishTurn, ToolCancelled, ToolOutput
from lash.runtime.activity import (
    AssistantProseDelta,
    ErrorActivity,
    ModelRequestStarted,
    ToolCallCompleted,
    ToolValue,
    UsageReported,
)
from lash.runtime.effects import (
    DurabilityTier,
    EffectEnvelope,
    EffectExecutor,
    EffectHostError,
    EffectKind,
    EffectOutcome,
    Slept,
    TurnScope,
)
from lash.store import (
    CommitResult,
    HeadRevisionConflict,
    MemoryStore,
    RuntimeCommit,
    TurnCommitConflict,
    TurnStamp,
    UsageRow,
    commit_hash,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

PROSE_TYPES = {"assistant_prose_delta", "reasoning_delta"}
TERMINAL_TYPES = {"tool_value", "submitted_value"}


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _core(replies: Any, **options: Any) -> tuple[LashCore, ScriptedProvider]:
    provider = replies if isinstance(replies, ScriptedProvider) else ScriptedProvider(replies)
    options.setdefault("tools", [add])
    return LashCore(provider=provider, model="scripted", **options), provider


def _types(result: TurnResult) -> list[str]:
    return [a.type for a in result.activities]


def _prose(result: TurnResult) -> list[str]:
    return [a.text for a in result.activities if isinstance(a, AssistantProseDelta)]


def _stop(result: TurnResult) -> StopReason:
    assert isinstance(result.outcome, Stopped), result.outcome
    return result.outcome.reason


def _errors(result: TurnResult) -> list[tuple[str | None, str | None, str]]:
    return [(a.kind, a.code, a.message) for a in result.activities if isinstance(a, ErrorActivity)]


def _tool_loop() -> list[Reply]:
    return [
        Reply(
            tool_calls=[ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4})],
            usage=LlmUsage(input_tokens=10, output_tokens=3),
        ),
        Reply(text="3 and 7", usage=LlmUsage(input_tokens=20, output_tokens=5)),
    ]


# ---------------------------------------------------------------- results and sessions


def test_run_returns_the_committed_result() -> None:
    async def body() -> TurnResult:
        core, _ = _core(_tool_loop())
        async with core.session("chat-1") as session:
            return await session.run("What is 1 + 2 and 3 + 4?", turn_id="t1")

    result = run(body())
    assert result.outcome == Finished(result=AssistantAnswer(text="3 and 7"))
    assert result.ok
    assert (result.session_id, result.turn_id, result.text, result.revision) == (
        "chat-1",
        "t1",
        "3 and 7",
        1,
    )
    assert result.usage == LlmUsage(input_tokens=30, output_tokens=8)
    assert [(c.call_id, c.name, c.args, c.output.value) for c in result.tool_calls] == [
        ("call_1", "add", {"a": 1, "b": 2}, 3),
        ("call_2", "add", {"a": 3, "b": 4}, 7),
    ]
    assert [(m.id, m.role) for m in result.messages] == [
        ("t1.in", Role.USER),
        ("t1.m0", Role.ASSISTANT),
        ("t1.m1", Role.USER),
        ("t1.m2", Role.ASSISTANT),
    ]
    assert result.messages[0] == user_message("t1.in", "What is 1 + 2 and 3 + 4?")
    assert result.messages[3].text() == "3 and 7"


def test_history_revision_and_turn_index_grow_across_turns() -> None:
    async def body() -> None:
        core, provider = _core([*_tool_loop(), Reply(text="second answer")])
        async with core.session("s1") as session:
            assert (session.revision, session.turn_index, session.messages) == (None, 0, ())
            first = await session.run("one", turn_id="t1")
            assert (session.revision, session.turn_index, len(session.messages)) == (1, 1, 4)
            second = await session.run("two", turn_id="t2")
            assert (first.revision, second.revision) == (1, 2)
            assert (session.revision, session.turn_index) == (2, 2)
            assert session.messages == first.messages + second.messages
            assert [m.id for m in second.messages] == ["t2.in", "t2.m0"]
            # the second turn's request carries the first turn's history
            last = provider.requests[-1].messages
            assert [m.role.value for m in last] == [
                "system",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
            ]
        stored = await core.store.load("s1")
        assert stored is not None
        assert (stored.revision, stored.turn_index, stored.messages) == (
            2,
            2,
            first.messages + second.messages,
        )
        async with core.session("s1") as resumed:
            assert (resumed.revision, resumed.turn_index) == (2, 2)
            assert resumed.messages == stored.messages

    run(body())


def test_usage_ledger_accumulates_per_source_and_model() -> None:
    async def body() -> None:
        core, _ = _core(
            [
                *_tool_loop(),
                Reply(text="b", usage=LlmUsage(input_tokens=1, output_tokens=1)),
                Reply(text="no usage"),
            ]
        )
        async with core.session("s1") as session:
            await session.run("one")
            assert session.usage == {
                ("turn", "scripted"): LlmUsage(input_tokens=30, output_tokens=8)
            }
            await session.run("two")
            third = await session.run("three")
            assert third.usage == LlmUsage()
            assert session.usage == {
                ("turn", "scripted"): LlmUsage(input_tokens=31, output_tokens=9)
            }
        stored = await core.store.load("s1")
        assert stored is not None
        assert stored.usage == (
            UsageRow(
                source="turn",
                model="scripted",
                usage=LlmUsage(input_tokens=31, output_tokens=9),
            ),
        )
        async with core.session("s1") as resumed:
            assert resumed.usage == session.usage

    run(body())


def test_usage_activities_report_each_call_and_the_running_total() -> None:
    core, _ = _core(_tool_loop())

    async def body() -> TurnResult:
        async with core.session("s1") as session:
            return await session.run("go", turn_id="t1")

    result = run(body())
    usage = [a for a in result.activities if isinstance(a, UsageReported)]
    assert [(u.iteration, u.usage, u.cumulative) for u in usage] == [
        (0, LlmUsage(input_tokens=10, output_tokens=3), LlmUsage(input_tokens=10, output_tokens=3)),
        (1, LlmUsage(input_tokens=20, output_tokens=5), LlmUsage(input_tokens=30, output_tokens=8)),
    ]


# ---------------------------------------------------------------- the activity stream


async def _stream(session: Session, text: str, turn_id: str = "t1") -> tuple[list[Any], Any]:
    seen: list[Any] = []
    async with session.turn(text, turn_id=turn_id).stream() as turn:
        async for activity in turn:
            seen.append(activity)
    return seen, turn


def test_stream_yields_every_activity_in_order_and_then_the_result() -> None:
    async def body() -> tuple[list[Any], TurnResult]:
        core, _ = _core(_tool_loop())
        async with core.session("s1") as session:
            seen, turn = await _stream(session, "go")
            return seen, turn.result

    seen, result = run(body())
    assert tuple(seen) == result.activities
    assert [a.type for a in seen] == [
        "model_request_started",
        "usage",
        "tool_call_started",
        "tool_call_started",
        "tool_call_completed",
        "tool_call_completed",
        "model_request_started",
        "assistant_prose_delta",
        "usage",
    ]
    ids = [a.id for a in seen]
    assert ids == [f"t1:{n}" for n in range(1, 10)]
    assert result.text == "3 and 7"


def test_stream_order_guarantees() -> None:
    secret = "TOOL-OUTPUT-5e1f"

    @tool
    def leak() -> str:
        """Return something the prose must not contain."""
        return secret

    async def body() -> list[Any]:
        core, _ = _core(
            [
                Reply(text="Let me look.", tool_calls=[ToolCall("leak"), ToolCall("leak")]),
                Reply(text="All done.", chunks=3),
            ],
            tools=[leak],
        )
        async with core.session("s1") as session:
            seen, _ = await _stream(session, "go")
            return seen

    seen = run(body())
    types = [a.type for a in seen]
    # a model request starts before any prose of that call
    requests = [i for i, t in enumerate(types) if t == "model_request_started"]
    prose = [i for i, t in enumerate(types) if t == "assistant_prose_delta"]
    assert len(requests) == 2
    assert prose
    assert all(any(r < p for r in requests) for p in prose)
    assert requests[0] < prose[0]
    # each call's start comes before its completion, joined by the call id
    for call_id in ("call_1", "call_2"):
        started = [
            i for i, a in enumerate(seen) if a.type == "tool_call_started" and a.call_id == call_id
        ]
        completed = [
            i
            for i, a in enumerate(seen)
            if a.type == "tool_call_completed" and a.call_id == call_id
        ]
        assert len(started) == len(completed) == 1
        assert started[0] < completed[0]
        assert seen[started[0]].correlation_id == seen[completed[0]].correlation_id == call_id
    # tool output reaches completions, never prose
    assert any(isinstance(a, ToolCallCompleted) and a.output.value == secret for a in seen)
    assert not [a for a in seen if a.type in PROSE_TYPES and secret in a.text]
    assert "".join(a.text for a in seen if a.type == "assistant_prose_delta") == (
        "Let me look.All done."
    )
    # a prose answer emits no terminal activity
    assert not TERMINAL_TYPES & set(types)
    # ids are unique
    assert len({a.id for a in seen}) == len(seen)


def test_a_tool_finishing_the_turn_emits_a_tool_value_activity_last() -> None:
    @tool
    def finish(x: int) -> ToolOutput:
        """End the turn with a value."""
        return ToolOutput.success(x, control=FinishTurn(value={"answer": x}))

    async def body() -> tuple[list[Any], TurnResult]:
        core, provider = _core([Reply(tool_calls=[ToolCall("finish", {"x": 42})])], tools=[finish])
        async with core.session("s1") as session:
            seen, turn = await _stream(session, "go")
        assert provider.calls == 1  # the model is not asked again
        return seen, turn.result

    seen, result = run(body())
    assert [a.type for a in seen] == [  # no usage activity: the scripted reply reports none
        "model_request_started",
        "tool_call_started",
        "tool_call_completed",
        "tool_value",
    ]
    last = seen[-1]
    assert isinstance(last, ToolValue)
    assert (last.tool_name, last.value) == ("finish", {"answer": 42})
    assert result.outcome == Finished(
        result=ToolValueAnswer(tool_name="finish", value={"answer": 42})
    )
    assert result.text == '{"answer":42}'
    assert not [a for a in seen if a.type in PROSE_TYPES]


def test_streamed_chunks_are_the_only_prose_deltas() -> None:
    async def body() -> TurnResult:
        core, _ = _core([Reply(text="hello world", chunks=3)])
        async with core.session("s1") as session:
            return await session.run("hi", turn_id="t1")

    result = run(body())
    assert _prose(result) == ["hell", "o wo", "rld"]  # no duplicate full-text delta
    deltas = [a for a in result.activities if isinstance(a, AssistantProseDelta)]
    assert len({d.correlation_id for d in deltas}) == 1
    assert _types(result) == [
        "model_request_started",
        "assistant_prose_delta",
        "assistant_prose_delta",
        "assistant_prose_delta",
    ]  # zero usage is not reported
    assert result.text == "hello world"


def test_a_non_streaming_provider_still_yields_one_prose_delta() -> None:
    async def body() -> TurnResult:
        core, _ = _core(ScriptedProvider([Reply(text="hello world", chunks=3)], stream=False))
        async with core.session("s1") as session:
            return await session.run("hi", turn_id="t1")

    result = run(body())
    assert _prose(result) == ["hello world"]
    assert result.text == "hello world"


def test_reasoning_streams_before_the_prose() -> None:
    async def body() -> TurnResult:
        core, _ = _core([Reply(reasoning="thinking it over", text="answer")])
        async with core.session("s1") as session:
            return await session.run("hi")

    result = run(body())
    assert [
        (a.type, getattr(a, "text", None)) for a in result.activities if a.type in PROSE_TYPES
    ] == [
        ("reasoning_delta", "thinking it over"),
        ("assistant_prose_delta", "answer"),
    ]
    answer = result.messages[-1]
    assert [p.kind.value for p in answer.parts] == ["reasoning", "prose"]


def test_a_slow_consumer_receives_every_activity_and_the_stream_ends() -> None:
    """More activities than the stream's buffer, read slowly (many loop turns per item)."""

    async def body() -> tuple[int, TurnResult]:
        calls = [ToolCall("add", {"a": i, "b": 1}) for i in range(40)]
        core, _ = _core([Reply(tool_calls=calls), Reply(text="done")])
        count = 0
        async with core.session("s1") as session, session.turn("go").stream() as turn:
            for _ in range(50):
                await asyncio.sleep(0)  # let the producer fill the buffer
            async for _activity in turn:
                count += 1
                for _ in range(50):
                    await asyncio.sleep(0)
        return count, turn.result

    count, result = run(body())
    # 2 model requests, 40 starts, 40 completions, 1 prose delta (zero usage is not reported)
    assert count == len(result.activities) == 2 + 40 + 40 + 1
    assert result.text == "done"


def test_result_is_unavailable_before_the_turn_ends() -> None:
    async def body() -> None:
        core, _ = _core([Reply(text="x", delay=0.01)])
        async with core.session("s1") as session:
            stream = session.turn("hi").stream()
            with pytest.raises(LashError, match="has not finished yet"):
                _ = stream.result
            async with stream as turn:
                with pytest.raises(LashError, match="has not finished yet"):
                    _ = turn.result
                async for _ in turn:
                    pass
            assert turn.result.text == "x"

    run(body())


# ---------------------------------------------------------------- cancellation


async def _cancel_after(token: CancelToken, seconds: float) -> None:
    await asyncio.sleep(seconds)
    token.cancel()


def test_on_cancel_returns_a_remover() -> None:
    token = CancelToken()
    fired: list[str] = []
    remove_a = token.on_cancel(lambda: fired.append("a"))
    token.on_cancel(lambda: fired.append("b"))
    remove_a()
    remove_a()  # idempotent
    token.cancel()
    assert fired == ["b"]
    token.on_cancel(lambda: fired.append("late"))()  # runs at once; its remover is a no-op
    assert fired == ["b", "late"]


def test_a_reused_token_keeps_no_callback_of_finished_turns() -> None:
    async def body() -> CancelToken:
        core, _ = _core([Reply(text="a"), Reply(text="b"), Reply(text="c")])
        token = CancelToken()
        async with core.session("s1") as session:
            for text in ("one", "two"):
                await session.run(text, cancel=token)
            async with session.turn("three", cancel=token).stream() as stream:
                async for _ in stream:
                    pass
        return token

    token = run(body())
    assert token._callbacks == {}  # each held its finished turn's task
    assert not token.cancelled


def test_cancelling_during_the_model_call_stops_quickly_and_commits() -> None:
    async def body() -> tuple[TurnResult, float, Session, ScriptedProvider]:
        core, provider = _core([Reply(text="too late", delay=30.0)])
        async with core.session("s1") as session:
            token = CancelToken()
            canceller = asyncio.create_task(_cancel_after(token, 0.02))
            started = time.monotonic()
            result = await session.run("hi", cancel=token, turn_id="t1")
            elapsed = time.monotonic() - started
            await canceller
            return result, elapsed, session, provider

    result, elapsed, session, provider = run(body())
    assert _stop(result) is StopReason.CANCELLED
    assert elapsed < 1.5  # far below the 30 s reply: it did not wait for the model
    assert provider.calls == 1
    assert result.revision == session.revision == 1
    assert [m.id for m in session.messages] == ["t1.in"]
    assert _types(result) == ["model_request_started"]
    assert result.text == ""


def test_a_token_cancelled_before_the_turn_stops_it_before_the_model_call() -> None:
    async def body() -> tuple[TurnResult, ScriptedProvider]:
        core, provider = _core([Reply(text="never")])
        async with core.session("s1") as session:
            token = CancelToken()
            token.cancel("not now")
            return await session.run("hi", cancel=token), provider

    result, provider = run(body())
    assert _stop(result) is StopReason.CANCELLED
    assert provider.calls == 0
    assert result.revision == 1


def test_cancelling_during_a_tool_stops_the_turn() -> None:
    entered = asyncio.Event()

    @tool
    async def wait_forever(ctx: ToolContext) -> str:
        """Wait until cancelled."""
        entered.set()
        await asyncio.Event().wait()
        return "never"

    async def body() -> tuple[TurnResult, float, Session]:
        core, provider = _core(
            [Reply(tool_calls=[ToolCall("wait_forever")]), Reply(text="unreached")],
            tools=[wait_forever],
        )
        async with core.session("s1") as session:
            token = CancelToken()
            task = asyncio.create_task(session.run("hi", cancel=token, turn_id="t1"))
            await entered.wait()
            started = time.monotonic()
            token.cancel()
            result = await task
            assert provider.calls == 1
            return result, time.monotonic() - started, session

    result, elapsed, session = run(body())
    assert _stop(result) is StopReason.CANCELLED
    assert elapsed < 1.5  # the tool never returns: only cancellation ends the turn
    assert result.revision == session.revision == 1


def test_a_cancelled_tool_call_is_answered_so_the_history_stays_resumable() -> None:
    """A tool call and its result land in the same commit (invariant 3): a call
    cut short by cancellation is answered as cancelled (reference/runtime.md §2.4:
    the model sees "[Tool execution cancelled]..."), so the next turn's request
    has a result for every call the assistant made."""
    entered = asyncio.Event()

    @tool
    async def wait_forever() -> str:
        """Wait until cancelled."""
        entered.set()
        await asyncio.Event().wait()
        return "never"

    async def body() -> tuple[TurnResult, Session, ScriptedProvider]:
        core, provider = _core(
            [Reply(tool_calls=[ToolCall("wait_forever")]), Reply(text="next turn")],
            tools=[wait_forever],
        )
        async with core.session("s1") as session:
            token = CancelToken()
            task = asyncio.create_task(session.run("hi", cancel=token, turn_id="t1"))
            await entered.wait()
            token.cancel()
            result = await task
            await session.run("again", turn_id="t2")
            return result, session, provider

    result, _, provider = run(body())
    assert _stop(result) is StopReason.CANCELLED
    completed = [a for a in result.activities if isinstance(a, ToolCallCompleted)]
    assert [(a.call_id, type(a.output.outcome)) for a in completed] == [("call_1", ToolCancelled)]
    assert messages_are_prompt_resume_safe(result.messages)
    results = [
        b
        for m in provider.requests[-1].messages
        for b in m.blocks
        if isinstance(b, ToolResultBlock)
    ]
    assert [b.call_id for b in results] == ["call_1"]
    assert results[0].content.startswith("[Tool execution cancelled]")


def test_leaving_the_stream_early_cancels_the_turn() -> None:
    async def body() -> tuple[Any, TurnResult, TurnResult]:
        core, provider = _core([Reply(text="slow answer", delay=30.0), Reply(text="next")])
        async with core.session("s1") as session:
            started = time.monotonic()
            first = None
            async with session.turn("hi", turn_id="t1").stream() as turn:
                async for activity in turn:
                    first = activity
                    break
            assert time.monotonic() - started < 1.5  # far below the 30 s reply
            assert provider.calls == 1
            result = turn.result
            assert result.revision == session.revision == 1
            # the session is free at once for the next turn
            following = await session.run("next", turn_id="t2")
            return first, result, following

    first, result, following = run(body())
    assert isinstance(first, ModelRequestStarted)
    assert _stop(result) is StopReason.CANCELLED
    assert result.outcome == Stopped(
        reason=StopReason.CANCELLED, message="the stream was closed early"
    )
    assert following.text == "next"
    assert following.revision == 2


def test_leaving_the_stream_early_leaves_the_session_usable() -> None:
    """Whatever point the turn had reached, leaving the block neither raises nor
    desynchronizes the session from its store; the next turn runs at once."""

    async def body() -> tuple[Any, TurnResult, Session, Any]:
        core, _ = _core([Reply(text="fast answer", chunks=3), Reply(text="next")])
        async with core.session("s1") as session:
            async with session.turn("hi", turn_id="t1").stream() as turn:
                async for _ in turn:
                    break
            stored = await core.store.load("s1")
            following = await session.run("again", turn_id="t2")
            return turn.result, following, session, stored

    first, following, session, stored = run(body())
    assert first.outcome in (
        Stopped(reason=StopReason.CANCELLED, message="the stream was closed early"),
        Finished(result=AssistantAnswer(text="fast answer")),
    )
    assert stored is not None
    assert first.revision == stored.revision == 1
    assert following.text == "next"
    assert session.revision == 2


class _SlowCommitStore(MemoryStore):
    """Commits after a short wait, announcing when a commit has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.committing = asyncio.Event()

    async def commit(self, commit: RuntimeCommit) -> CommitResult:
        self.committing.set()
        await asyncio.sleep(0.005)
        return await super().commit(commit)


def test_cancelling_while_the_commit_is_in_flight_returns_the_committed_result() -> None:
    """The commit lands (it is shielded), so the caller must get its result, and
    the session must stay in step with the store."""

    async def body() -> tuple[Any, Session, Any, Any]:
        store = _SlowCommitStore()
        core, _ = _core([Reply(text="answer"), Reply(text="next")], store=store)
        async with core.session("s1") as session:
            token = CancelToken()
            task = asyncio.create_task(session.run("hi", cancel=token, turn_id="t1"))
            await store.committing.wait()
            token.cancel()
            try:
                outcome: Any = await task
            except asyncio.CancelledError:
                outcome = "CancelledError escaped session.run"
            stored = await store.load("s1")
            try:
                following: Any = await session.run("again", turn_id="t2")
            except Exception as exc:
                following = exc
            return outcome, session, stored, following

    result, session, stored, following = run(body())
    assert isinstance(result, TurnResult), result
    assert result.revision == stored.revision == 1
    assert isinstance(following, TurnResult), following
    assert following.revision == session.revision == 2


# ---------------------------------------------------------------- errors that stop the turn


def test_a_provider_error_stops_the_turn_with_an_error_activity() -> None:
    async def body() -> tuple[TurnResult, Session]:
        core, _ = _core([Reply(error="boom")])
        async with core.session("s1") as session:
            return await session.run("hi", turn_id="t1"), session

    result, session = run(body())
    assert result.outcome == Stopped(reason=StopReason.PROVIDER_ERROR, message="boom")
    assert not result.ok
    assert _errors(result) == [("llm_provider", "scripted_error", "LLM error: boom")]
    assert _types(result) == ["model_request_started", "error"]
    assert result.revision == session.revision == 1  # the user's message is kept
    assert [m.id for m in session.messages] == ["t1.in"]


def test_an_exhausted_script_is_a_provider_error() -> None:
    async def body() -> TurnResult:
        core, _ = _core([])
        async with core.session("s1") as session:
            return await session.run("hi")

    result = run(body())
    assert _stop(result) is StopReason.PROVIDER_ERROR
    assert _errors(result) == [
        (
            "llm_provider",
            "script_exhausted",
            "LLM error: scripted provider has no reply left for call 1",
        )
    ]


def test_a_provider_that_raises_a_plain_exception_is_a_provider_error() -> None:
    async def broken(request: Any) -> Reply:
        raise KeyError("oops")

    async def body() -> TurnResult:
        core, _ = _core(ScriptedProvider(broken))
        async with core.session("s1") as session:
            return await session.run("hi")

    result = run(body())
    assert _stop(result) is StopReason.PROVIDER_ERROR
    assert _errors(result) == [
        ("llm_provider", "provider_exception", "LLM error: KeyError: 'oops'")
    ]


@pytest.mark.parametrize("bad_input", [123, None, b"bytes", ["list"]])
def test_invalid_input_stops_the_turn_and_changes_nothing(bad_input: Any) -> None:
    async def body() -> None:
        core, provider = _core([Reply(text="first"), Reply(text="never")])
        async with core.session("s1") as session:
            await session.run("first")
            before = (session.revision, session.messages, session.turn_index)
            stored_before = await core.store.load("s1")
            result = await session.run(bad_input, turn_id="bad")
            assert result.outcome == Stopped(
                reason=StopReason.INVALID_INPUT,
                message="turn input must be a string or a TurnInput, got "
                f"{type(bad_input).__name__}",
            )
            assert _errors(result) == [
                (
                    "input_validation",
                    "invalid_turn_input",
                    f"turn input must be a string or a TurnInput, got {type(bad_input).__name__}",
                )
            ]
            assert result.messages == ()
            assert result.revision == 1
            assert (session.revision, session.messages, session.turn_index) == before
            assert await core.store.load("s1") == stored_before
            assert provider.calls == 1
            # and the session is free for the next turn
            assert (await session.run("third")).text == "never"

    run(body())


def test_invalid_input_on_a_new_session_commits_nothing() -> None:
    async def body() -> None:
        core, _ = _core([])
        async with core.session("fresh") as session:
            result = await session.run(123)  # type: ignore[arg-type]
            assert _stop(result) is StopReason.INVALID_INPUT
            assert result.revision is None
            assert session.revision is None
        assert await core.store.load("fresh") is None

    run(body())


def test_max_turns_stops_a_tool_loop() -> None:
    async def body() -> tuple[TurnResult, ScriptedProvider]:
        core, provider = _core(
            [Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]), Reply(text="unreached")],
            max_turns=1,
        )
        async with core.session("s1") as session:
            return await session.run("loop", turn_id="t1"), provider

    result, provider = run(body())
    note = "Turn limit reached (1) before a final assistant response."
    assert result.outcome == Stopped(reason=StopReason.MAX_TURNS, message=note)
    assert provider.calls == 1
    assert [c.output.value for c in result.tool_calls] == [2]
    assert result.messages[-1].role is Role.SYSTEM
    assert result.messages[-1].parts[0].content == note
    assert messages_are_prompt_resume_safe(result.messages)


# ---------------------------------------------------------------- busy sessions


def test_a_second_concurrent_turn_is_refused_and_the_first_completes() -> None:
    async def body() -> tuple[TurnResult, Session]:
        core, _ = _core([Reply(text="first", delay=0.02), Reply(text="third")])
        async with core.session("s1") as session:
            first = asyncio.create_task(session.run("one", turn_id="t1"))
            await asyncio.sleep(0)
            with pytest.raises(SessionBusyError, match="'s1' is already running a turn"):
                await session.run("two", turn_id="t2")
            with pytest.raises(SessionBusyError):
                async with session.turn("two").stream():
                    pass
            result = await first
            assert (await session.run("three", turn_id="t3")).text == "third"
            return result, session

    result, session = run(body())
    assert result.text == "first"
    assert [m.id for m in session.messages] == ["t1.in", "t1.m0", "t3.in", "t3.m0"]


def test_a_closed_session_refuses_turns() -> None:
    async def body() -> None:
        core, _ = _core([Reply(text="x")])
        async with core.session("s1") as session:
            pass
        with pytest.raises(LashError, match="'s1' is closed"):
            await session.run("hi")

    run(body())


# ---------------------------------------------------------------- configuration errors


class _DurableHost:
    @property
    def tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    def scoped(self, scope: TurnScope) -> Any:
        raise AssertionError("no turn may run")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": ""}, "model must be a non-blank string, got ''"),
        ({"model": "   "}, "model must be a non-blank string"),
        ({"provider": object()}, "has no complete\\(\\) method"),
        ({"store": "sqlite:///"}, "store 'sqlite:///': name a directory"),
        ({"store": "redis://localhost"}, "the 'redis' backend is not available"),
        ({"store": object()}, "it is not a store"),
        (
            {"effect_host": _DurableHost()},
            "a durable effect host needs durable peers: the store facet is inline",
        ),
        ({"plugins": [object()]}, "a plugin needs a non-blank string id"),
        ({"max_turns": 0}, "max_turns must be a positive integer, got 0"),
    ],
)
def test_config_errors_are_raised_before_any_turn(options: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"provider": ScriptedProvider([]), "model": "scripted", **options}
    with pytest.raises(ConfigError, match=message):
        LashCore(**kwargs)


def test_a_durable_host_needs_a_durable_store_and_durable_attachments(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'db'}"
    with pytest.raises(ConfigError, match=r"the attachments facet is inline"):
        LashCore(
            provider=ScriptedProvider([]),
            model="m",
            effect_host=_DurableHost(),
            store=store,
            attachments="memory://",
        )
    core = LashCore(
        provider=ScriptedProvider([]),
        model="m",
        effect_host=_DurableHost(),
        store=store,
        attachments=f"file:///{tmp_path / 'attachments'}",
    )
    assert core.effect_host.tier is DurabilityTier.DURABLE
    assert core.attachments.tier is DurabilityTier.DURABLE
    run(core.aclose())


def _lash_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("lash-")}


def test_a_config_error_opens_nothing_or_closes_what_it_opened(tmp_path: Path) -> None:
    before = _lash_threads()
    with pytest.raises(ConfigError, match="max_frame_switches must be >= 0"):
        LashCore(
            provider=ScriptedProvider([]),
            model="m",
            store=f"sqlite:///{tmp_path / 'early'}",
            max_frame_switches=-1,
        )
    assert not (tmp_path / "early").exists()  # checked before the store was opened
    with pytest.raises(ConfigError, match="a durable store needs durable peers"):
        LashCore(
            provider=ScriptedProvider([]),
            model="m",
            store=f"sqlite:///{tmp_path / 'late'}",
            attachments="memory://",
        )
    assert (tmp_path / "late").is_dir()  # opened, then the tier check failed ...
    assert _lash_threads() <= before  # ... and its SQLite thread was stopped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"store": "sqlite:///{file}"}, "store 'sqlite:///.*': SqliteStore path .* is not a dir"),
        ({"attachments": "file:///{file}"}, "attachments 'file:///.*': .* is not a directory"),
        ({"attachments": "sqlite:///{dir}"}, "attachments 'sqlite:///.*': .* is a directory"),
    ],
)
def test_a_path_of_the_wrong_kind_is_a_config_error(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    where = {"file": tmp_path / "file", "dir": tmp_path}
    before = _lash_threads()
    with pytest.raises(ConfigError, match=message):
        LashCore(
            provider=ScriptedProvider([]),
            model="m",
            **{k: v.format(**where) for k, v in options.items()},
        )
    assert _lash_threads() <= before


@pytest.mark.parametrize("session_id", ["", "  "])
def test_a_blank_session_id_is_a_config_error(session_id: str) -> None:
    core, _ = _core([])
    with pytest.raises(ConfigError, match="session id must be a non-blank string"):
        core.session(session_id)


# ---------------------------------------------------------------- controller failures


async def _run_with(controller: RecordingController, replies: list[Reply], **options: Any) -> Any:
    core, _ = _core(replies, effect_host=RecordingHost(controller), **options)
    async with core.session("s1") as session:
        result = await session.run("hi", turn_id="t1")
        return result, session


def test_a_raising_inline_controller_fails_the_turn_explicitly() -> None:
    """Ported: controller_rejection_fails_turn_explicitly."""

    async def reject(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        raise RuntimeError("journal offline")

    result, session = run(_run_with(RecordingController(hook=reject), [Reply(text="x")]))
    message = "effect s1:t1:1:0:llm_call:1 failed: RuntimeError: journal offline"
    assert result.outcome == Stopped(reason=StopReason.RUNTIME_ERROR, message=message)
    assert _errors(result) == [("runtime_effect_controller", "runtime_effect_controller", message)]
    assert result.revision == session.revision == 1


def test_an_effect_host_error_keeps_its_code() -> None:
    async def reject(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        if envelope.invocation.kind is EffectKind.TOOL_CALL:
            raise EffectHostError("journal_full", "no room")
        return await executor.execute(envelope)

    result, _ = run(
        _run_with(
            RecordingController(hook=reject),
            [Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]), Reply(text="x")],
        )
    )
    assert _stop(result) is StopReason.RUNTIME_ERROR
    assert _errors(result) == [
        (
            "runtime_effect_controller",
            "journal_full",
            "effect s1:t1:1:0:tool_call:2:call_1 failed: no room",
        )
    ]


def test_a_wrong_outcome_type_fails_the_turn_explicitly() -> None:
    """Ported: wrong_controller_outcome_fails_turn_explicitly."""

    async def wrong(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        return Slept(duration_ms=0)

    result, _ = run(_run_with(RecordingController(hook=wrong), [Reply(text="x")]))
    message = "effect s1:t1:1:0:llm_call:1 failed: expected a llm_call outcome, got Slept"
    assert result.outcome == Stopped(reason=StopReason.RUNTIME_ERROR, message=message)
    assert _errors(result) == [
        ("runtime_effect_controller", "runtime_effect_wrong_outcome", message)
    ]


def test_an_outcome_for_another_effect_fails_the_turn_explicitly() -> None:
    async def wrong_id(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        if envelope.invocation.kind is EffectKind.LLM_CALL:
            return LlmCompleted(id=99, response=LlmResponse(full_text="x"))
        return CheckpointDelivered(id=99)

    result, _ = run(_run_with(RecordingController(hook=wrong_id), [Reply(text="x")]))
    assert _stop(result) is StopReason.RUNTIME_ERROR
    [(kind, code, message)] = _errors(result)
    assert (kind, code) == ("runtime_effect_controller", "runtime_effect_wrong_outcome")
    assert message.startswith("effect outcome rejected: expected LlmCompleted or LlmFailed")


def test_a_raising_durable_controller_raises_so_the_engine_can_replay(tmp_path: Path) -> None:
    async def reject(envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        raise EffectHostError("suspended", "waiting for the journal")

    async def body() -> None:
        controller = RecordingController(tier=DurabilityTier.DURABLE, hook=reject)
        core, _ = _core(
            [Reply(text="x")], effect_host=RecordingHost(controller), store=f"sqlite:///{tmp_path}"
        )
        store = core.store
        async with core, core.session("s1") as session:
            with pytest.raises(EffectHostError, match="suspended: waiting for the journal"):
                await session.run("hi", turn_id="t1")
            assert session.revision is None
            assert await store.load("s1") is None  # nothing committed
            with pytest.raises(EffectHostError):  # not left busy
                await session.run("hi", turn_id="t1")

    run(body(), 10.0)


# ---------------------------------------------------------------- the memory store


def _commit(
    expected: int | None, text: str = "hi", turn_id: str | None = "t1", session_id: str = "s1"
) -> RuntimeCommit:
    commit = RuntimeCommit(
        session_id=session_id,
        expected_revision=expected,
        messages=(user_message(f"{turn_id}.in", text),),
        turn_index=1,
        iteration=1,
    )
    if turn_id is None:
        return commit
    stamp = TurnStamp(session_id=session_id, turn_id=turn_id, commit_hash=commit_hash(commit))
    return msgspec.structs.replace(commit, stamp=stamp)


def test_memory_store_is_inline_and_starts_empty() -> None:
    store = MemoryStore()
    assert store.tier is DurabilityTier.INLINE
    assert run(store.load("s1")) is None


def test_memory_store_first_commit_must_omit_the_expected_revision() -> None:
    store = MemoryStore()
    with pytest.raises(HeadRevisionConflict, match="expected head revision 0, found None") as info:
        run(store.commit(_commit(0)))
    assert (info.value.session_id, info.value.expected, info.value.actual) == ("s1", 0, None)
    assert run(store.commit(_commit(None))) == CommitResult(revision=1)
    # a later commit without an expected revision does not overwrite blindly
    with pytest.raises(HeadRevisionConflict, match="expected head revision None, found 1"):
        run(store.commit(_commit(None, turn_id="t2")))


def test_memory_store_same_stamp_same_hash_is_replayed() -> None:
    store = MemoryStore()
    first = _commit(None)
    assert run(store.commit(first)) == CommitResult(revision=1)
    assert run(store.commit(first)) == CommitResult(revision=1, replayed=True)
    # the stamp is checked before the revision: a retry with a stale revision still replays
    loaded = run(store.load("s1"))
    assert loaded is not None
    assert (loaded.revision, len(loaded.messages)) == (1, 1)
    second = _commit(1, turn_id="t2")
    assert run(store.commit(second)) == CommitResult(revision=2)
    assert run(store.commit(first)) == CommitResult(revision=1, replayed=True)
    loaded = run(store.load("s1"))
    assert loaded is not None
    assert (loaded.revision, [m.id for m in loaded.messages]) == (2, ["t1.in", "t2.in"])


def test_memory_store_same_stamp_different_hash_is_a_conflict() -> None:
    store = MemoryStore()
    run(store.commit(_commit(None, text="hi")))
    with pytest.raises(TurnCommitConflict, match="turn 't1' was committed with hash") as info:
        run(store.commit(_commit(1, text="something else")))
    assert info.value.stamp.turn_id == "t1"
    loaded = run(store.load("s1"))
    assert loaded is not None
    assert loaded.revision == 1


def test_memory_store_stale_expected_revision_is_a_conflict() -> None:
    store = MemoryStore()
    run(store.commit(_commit(None)))
    run(store.commit(_commit(1, turn_id="t2")))
    with pytest.raises(HeadRevisionConflict, match="expected head revision 1, found 2"):
        run(store.commit(_commit(1, turn_id="t3")))
    loaded = run(store.load("s1"))
    assert loaded is not None
    assert (loaded.revision, len(loaded.messages)) == (2, 2)


def test_memory_store_rejects_a_stamp_that_does_not_match_the_commit() -> None:
    store = MemoryStore()
    good = _commit(None)
    assert good.stamp is not None
    forged = RuntimeCommit(
        session_id="s1",
        expected_revision=None,
        messages=(user_message("t1.in", "tampered"),),
        turn_index=1,
        iteration=1,
        stamp=good.stamp,
    )
    with pytest.raises(ValueError, match="the stamp's hash does not match the commit"):
        run(store.commit(forged))
    assert run(store.load("s1")) is None


def test_commit_hash_ignores_revision_and_stamp_only() -> None:
    a = _commit(None)
    b = _commit(5)
    assert commit_hash(a) == commit_hash(b)
    assert commit_hash(a) != commit_hash(_commit(None, text="other"))


def test_memory_store_unstamped_commits_and_usage_rows() -> None:
    store = MemoryStore()
    row = UsageRow(source="turn", model="m", usage=LlmUsage(input_tokens=2))
    base = _commit(None, turn_id=None)
    with_usage = RuntimeCommit(
        session_id="s1", expected_revision=None, messages=base.messages, usage=(row,)
    )
    assert run(store.commit(with_usage)) == CommitResult(revision=1)
    again = RuntimeCommit(session_id="s1", expected_revision=1, usage=(row,))
    assert run(store.commit(again)) == CommitResult(revision=2)
    loaded = run(store.load("s1"))
    assert loaded is not None
    assert loaded.usage == (UsageRow(source="turn", model="m", usage=LlmUsage(input_tokens=4)),)


def test_a_facade_turn_retried_after_a_lost_reply_replays_its_commit() -> None:
    """A store that applies the commit but loses the reply: the facade's retry of
    the same turn id with the same content is answered from the stamp."""

    async def body() -> None:
        store = MemoryStore()
        core, _ = _core([Reply(text="same"), Reply(text="same")], store=store)
        async with core.session("s1") as session:
            first = await session.run("hi", turn_id="t1")
        # the host retries from the state it had before t1: no history, no revision
        retry = Session(core, "s1")
        replayed = await retry.run("hi", turn_id="t1")
        assert replayed.outcome == first.outcome
        assert first.revision == replayed.revision == 1
        loaded = await store.load("s1")
        assert loaded is not None
        assert (loaded.revision, len(loaded.messages)) == (1, 2)

    run(body())
