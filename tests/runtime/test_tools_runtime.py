"""Tools at run time: ``@tool``, the context, retries, failures, validation, budgets.

Everything a tool can do wrong becomes a ``ToolFailure`` value the model sees,
never an exception that escapes the turn; arguments are checked before any tool
code runs (reference/runtime.md §3).
"""

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel
from runtime_support import RecordingController, RecordingHost, run

from lash import Availability, LashCore, ToolContext, ToolError, tool
from lash.kernel.errors import ToolDefinitionError
from lash.kernel.llm import ToolResultBlock
from lash.kernel.outcome import Finished, Stopped, StopReason
from lash.kernel.tools.definition import NeverRetry, SafeRetry
from lash.kernel.tools.output import (
    FailureClass,
    FailureSource,
    RetryExhausted,
    RetryNever,
    RetrySafe,
    TextReturn,
    ToolFailure,
    ToolOutput,
    ToolSuccess,
)
from lash.runtime.cancel import CancelToken
from lash.runtime.effects import EffectKind, SleepCommand
from lash.runtime.tools import (
    OUTPUT_BUDGET_CHARS,
    OUTPUT_BUDGET_LINES,
    Tool,
    ToolRegistry,
    budget_text,
    default_projection,
)
from lash.testing import Reply, ScriptedProvider, ToolCall


async def _turn(
    tools: list[Tool],
    replies: list[Reply],
    *,
    host: RecordingHost | None = None,
    cancel: CancelToken | None = None,
) -> tuple[Any, ScriptedProvider]:
    provider = ScriptedProvider(replies)
    core = LashCore(provider=provider, model="scripted", tools=tools, effect_host=host)
    async with core.session("s1") as session:
        result = await session.run("go", turn_id="t1", cancel=cancel)
    return result, provider


def _results_seen_by_model(provider: ScriptedProvider, request: int = 1) -> list[ToolResultBlock]:
    last = provider.requests[request].messages[-1]
    return [b for b in last.blocks if isinstance(b, ToolResultBlock)]


def _failure(result: Any, index: int = 0) -> ToolFailure:
    outcome = result.tool_calls[index].output.outcome
    assert isinstance(outcome, ToolFailure), outcome
    return outcome


# ---------------------------------------------------------------- definitions


@tool
def read_file(path: str, ctx: ToolContext, limit: int = 10) -> str:
    """Read a file.

    Returns its first lines.

    Args:
        path: Where the file is.
        limit: How many lines to return.
    """
    return f"{path}:{limit}:{ctx.call_id}"


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_tool_reads_schema_from_hints_and_descriptions_from_the_docstring() -> None:
    d = read_file.definition
    assert d.name == "read_file"
    assert d.description == "Read a file.\n\nReturns its first lines."
    assert d.input_schema == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Where the file is."},
            "limit": {
                "default": 10,
                "type": "integer",
                "description": "How many lines to return.",
            },
        },
        "required": ["path"],
        "additionalProperties": False,
    }
    assert "ctx" not in d.input_schema["properties"]


def test_tool_on_an_async_function() -> None:
    assert isinstance(add, Tool)
    assert add.name == "add"
    assert add.definition.description == "Add two integers."
    assert add.definition.input_schema["required"] == ["a", "b"]
    assert add.definition.retry_policy == NeverRetry()


def test_an_optional_tool_context_parameter_is_injected_too() -> None:
    """``ctx: ToolContext | None = None`` is what strict typing asks for when the
    tool is also called directly; it should be the context parameter as well."""

    @tool
    def maybe(x: int, ctx: ToolContext | None = None) -> str:
        """Use the context when there is one."""
        return ctx.call_id if ctx is not None else "none"

    assert list(maybe.definition.input_schema["properties"]) == ["x"]
    result, _ = run(_turn([maybe], [Reply(tool_calls=[ToolCall("maybe", {"x": 1})]), Reply()]))
    assert result.tool_calls[0].output.value == "call_1"


def test_tool_options_name_description_and_timeout() -> None:
    @tool(name="renamed", description="Custom words.", timeout=1.5)
    def f(x: int) -> int:
        """Ignored docstring."""
        return x

    assert (f.name, f.definition.description, f.timeout) == ("renamed", "Custom words.", 1.5)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_tool_rejects_a_non_positive_timeout(timeout: float) -> None:
    with pytest.raises(ToolDefinitionError, match="timeout must be positive"):

        @tool(timeout=timeout)
        def f() -> None:
            """F."""


def test_tool_rejects_two_context_parameters() -> None:
    with pytest.raises(ToolDefinitionError, match="more than one ToolContext"):

        @tool
        def f(a: ToolContext, b: ToolContext) -> None:
            """F."""


def test_registry_rejects_duplicates_reserved_names_and_plain_functions() -> None:
    registry = ToolRegistry([add])
    with pytest.raises(ToolDefinitionError, match="two tools are named 'add'"):
        registry.add(add)

    @tool(name="batch")
    def batch() -> None:
        """B."""

    with pytest.raises(ToolDefinitionError, match="'batch' is provided by the runtime"):
        registry.add(batch)

    def plain() -> None:
        """P."""

    with pytest.raises(ToolDefinitionError, match="decorate the function with @tool"):
        registry.add(plain)  # type: ignore[arg-type]


def test_registry_generation_and_surface_follow_edits() -> None:
    registry = ToolRegistry()
    assert (registry.generation, registry.surface.tool_names) == (0, ("batch",))
    registry.add(add)
    assert registry.generation == 1
    assert registry.surface.tool_names == ("add", "batch")
    assert registry.remove("add") is add
    assert registry.generation == 2
    assert list(registry.surface.tool_names) == ["batch"]
    with pytest.raises(KeyError):
        registry.remove("add")


# ---------------------------------------------------------------- running tools


def test_context_is_injected_and_sync_tools_run_in_a_worker_thread() -> None:
    seen: dict[str, Any] = {}

    @tool
    def where(ctx: ToolContext) -> str:
        """Report the context."""
        seen["thread"] = threading.get_ident()
        seen["ctx"] = (
            ctx.session_id,
            ctx.turn_id,
            ctx.call_id,
            ctx.tool_name,
            ctx.replay_key,
            ctx.attempt,
            ctx.max_attempts,
            ctx.cancel.cancelled,
        )
        return "ok"

    assert where.definition.input_schema["properties"] == {}
    result, _ = run(_turn([where], [Reply(tool_calls=[ToolCall("where")]), Reply(text="done")]))
    assert result.text == "done"
    assert seen["ctx"] == (
        "s1",
        "t1",
        "call_1",
        "where",
        "s1:t1:1:0:tool_call:2:call_1",
        1,
        1,
        False,
    )
    assert seen["thread"] != threading.get_ident()


def test_a_blocking_sync_tool_does_not_stall_the_event_loop() -> None:
    """The sync tool blocks its thread until the async tool (on the loop) releases
    it, and the async tool waits until the sync tool has started: if the sync tool
    ran on the loop, the async tool could never run and the wait would time out."""
    started = threading.Event()
    released = threading.Event()
    log: list[tuple[str, float]] = []

    @tool
    def blocking() -> bool:
        """Block until released."""
        log.append(("blocking_start", time.monotonic()))
        started.set()
        ok = released.wait(1.0)
        log.append(("blocking_end", time.monotonic()))
        return ok

    @tool
    async def releaser() -> str:
        """Release the blocking tool once it runs."""
        for _ in range(1000):
            if started.is_set():
                break
            await asyncio.sleep(0.001)
        log.append(("releaser", time.monotonic()))
        released.set()
        return "released"

    result, provider = run(
        _turn(
            [blocking, releaser],
            [Reply(tool_calls=[ToolCall("blocking"), ToolCall("releaser")]), Reply(text="done")],
        )
    )
    assert [c.output.value for c in result.tool_calls] == [True, "released"]
    names = [name for name, _ in sorted(log, key=lambda e: e[1])]
    assert names == ["blocking_start", "releaser", "blocking_end"]
    assert [b.content for b in _results_seen_by_model(provider)] == ["true", "released"]


def test_tool_run_directly_returns_output_values() -> None:
    ctx = ToolContext(session_id="s", turn_id="t", call_id="c", tool_name="add", replay_key="k")
    assert run(add.run({"a": 2, "b": 5}, ctx)) == ToolOutput.success(7)
    bad = run(add.run({"a": "x", "b": 5}, ctx))
    assert isinstance(bad.outcome, ToolFailure)
    assert (bad.outcome.failure_class, bad.outcome.code) == (
        FailureClass.INVALID_REQUEST,
        "invalid_tool_args",
    )


class Point(BaseModel):
    x: int
    tags: list[str]


def test_return_values_become_json() -> None:
    @tool
    def model() -> Point:
        """A pydantic model."""
        return Point(x=1, tags=["a"])

    @tool
    def output() -> ToolOutput:
        """An explicit output."""
        return ToolOutput.success({"kept": True})

    @tool
    def nested() -> dict[str, Any]:
        """Nested JSON."""
        return {"b": [1, 2.5, None], "a": "z"}

    result, provider = run(
        _turn(
            [model, output, nested],
            [
                Reply(tool_calls=[ToolCall("model"), ToolCall("output"), ToolCall("nested")]),
                Reply(text="done"),
            ],
        )
    )
    assert [c.output for c in result.tool_calls] == [
        ToolOutput(outcome=ToolSuccess(value={"x": 1, "tags": ["a"]})),
        ToolOutput(outcome=ToolSuccess(value={"kept": True})),
        ToolOutput(outcome=ToolSuccess(value={"b": [1, 2.5, None], "a": "z"})),
    ]
    assert [b.content for b in _results_seen_by_model(provider)] == [
        '{"tags":["a"],"x":1}',
        '{"kept":true}',
        '{"a":"z","b":[1,2.5,null]}',
    ]


def test_a_failure_output_returned_by_a_tool_passes_through() -> None:
    failure = ToolFailure(
        failure_class=FailureClass.PERMISSION_DENIED, code="denied", message="not yours"
    )

    @tool
    def refuse() -> ToolOutput:
        """Refuse."""
        return ToolOutput.failure(failure)

    result, provider = run(_turn([refuse], [Reply(tool_calls=[ToolCall("refuse")]), Reply()]))
    assert result.tool_calls[0].output == ToolOutput.failure(failure)
    assert [b.content for b in _results_seen_by_model(provider)] == [
        "[Tool execution failed]\nnot yours"
    ]


def test_a_non_json_return_is_an_invalid_tool_output_failure() -> None:
    @tool
    def opaque() -> Any:
        """Return something that is not JSON."""
        return object()

    result, provider = run(
        _turn([opaque], [Reply(tool_calls=[ToolCall("opaque")]), Reply(text="ok")])
    )
    failure = _failure(result)
    assert (failure.failure_class, failure.code, failure.source) == (
        FailureClass.INTERNAL,
        "invalid_tool_output",
        FailureSource.RUNTIME,
    )
    assert failure.message.startswith("opaque returned a value that is not JSON: ")
    assert result.text == "ok"  # the turn goes on
    assert _results_seen_by_model(provider)[0].content.startswith(
        "[Tool execution failed]\nopaque returned a value that is not JSON"
    )


def test_a_raising_tool_is_a_failure_with_the_exception_text() -> None:
    @tool
    def broken(n: int) -> int:
        """Divide."""
        return 1 // n

    result, provider = run(
        _turn([broken], [Reply(tool_calls=[ToolCall("broken", {"n": 0})]), Reply(text="ok")])
    )
    assert result.tool_calls[0].output == ToolOutput.failure(
        ToolFailure(
            failure_class=FailureClass.EXECUTION,
            code="tool_error",
            message="ZeroDivisionError: integer division or modulo by zero",
            source=FailureSource.TOOL,
        )
    )
    assert isinstance(result.outcome, Finished)
    assert [b.content for b in _results_seen_by_model(provider)] == [
        "[Tool execution failed]\nZeroDivisionError: integer division or modulo by zero"
    ]


def test_tool_error_chooses_class_code_and_raw() -> None:
    @tool
    def picky() -> str:
        """Refuse politely."""
        raise ToolError(
            "quota spent",
            failure_class=FailureClass.RESOURCE_LIMIT,
            code="quota",
            raw={"left": 0},
        )

    result, _ = run(_turn([picky], [Reply(tool_calls=[ToolCall("picky")]), Reply(text="ok")]))
    assert _failure(result) == ToolFailure(
        failure_class=FailureClass.RESOURCE_LIMIT,
        code="quota",
        message="quota spent",
        source=FailureSource.TOOL,
        retry=RetryNever(),
        raw={"left": 0},
    )


def test_an_async_tool_past_its_timeout_fails_as_timeout() -> None:
    @tool(timeout=0.01)
    async def slow() -> str:
        """Too slow."""
        await asyncio.sleep(30)
        return "never"

    started = time.monotonic()
    result, _ = run(_turn([slow], [Reply(tool_calls=[ToolCall("slow")]), Reply(text="ok")]))
    assert time.monotonic() - started < 1.5  # far below the 30 s sleep: the timeout fired
    assert _failure(result) == ToolFailure(
        failure_class=FailureClass.TIMEOUT,
        code="tool_timeout",
        message="slow did not finish within 0.01 s",
        source=FailureSource.RUNTIME,
    )
    assert result.text == "ok"


def test_a_sync_tool_past_its_timeout_fails_as_timeout() -> None:
    gate = threading.Event()

    @tool(timeout=0.01)
    def stuck() -> str:
        """Blocks."""
        gate.wait(1.0)
        return "late"

    async def body() -> Any:
        try:
            return await _turn([stuck], [Reply(tool_calls=[ToolCall("stuck")]), Reply()])
        finally:
            gate.set()  # let the worker thread end before the loop closes

    result, _ = run(body())
    failure = _failure(result)
    assert (failure.failure_class, failure.code) == (FailureClass.TIMEOUT, "tool_timeout")


# ---------------------------------------------------------------- validation before execution


def test_arguments_invalid_against_the_schema_never_reach_the_tool() -> None:
    calls: list[Any] = []

    @tool
    def count(n: int) -> int:
        """Count."""
        calls.append(n)
        return n

    host = RecordingHost()
    result, provider = run(
        _turn(
            [count],
            [
                Reply(
                    tool_calls=[
                        ToolCall("count", {"n": "seven"}),
                        ToolCall("count", {}),
                        ToolCall("count", {"n": 1, "extra": True}),
                    ]
                ),
                Reply(text="ok"),
            ],
            host=host,
        )
    )
    assert calls == []
    assert [
        (f.failure_class, f.code, f.source) for f in (_failure(result, i) for i in range(3))
    ] == [(FailureClass.INVALID_REQUEST, "invalid_tool_args", FailureSource.RUNTIME)] * 3
    assert _failure(result, 0).message == 'count: arguments.n: "seven" is not of type integer'
    assert host.controller.keys("tool_call") == []  # answered without crossing the boundary
    assert len(_results_seen_by_model(provider)) == 3
    assert result.text == "ok"


def test_malformed_argument_json_fails_the_call_and_the_tool_never_runs() -> None:
    calls: list[Any] = []

    @tool(name="add")
    def counting_add(a: int, b: int) -> int:
        """Add."""
        calls.append((a, b))
        return a + b

    result, provider = run(
        _turn([counting_add], [Reply(tool_calls=[ToolCall("add", '{"a":')]), Reply(text="ok")])
    )
    assert calls == []
    failure = _failure(result)
    assert (failure.failure_class, failure.code) == (
        FailureClass.INVALID_REQUEST,
        "invalid_tool_args",
    )
    assert failure.message == "add: arguments are not valid JSON (Input data was truncated)"
    assert result.tool_calls[0].args == {}
    assert _results_seen_by_model(provider)[0].content == (
        "[Tool execution failed]\nadd: arguments are not valid JSON (Input data was truncated)"
    )
    # the model's raw argument text is kept in history, verbatim
    assert result.messages[1].parts[0].content == '{"a":'


def test_non_object_argument_json_fails_the_call() -> None:
    result, _ = run(_turn([add], [Reply(tool_calls=[ToolCall("add", "[1, 2]")]), Reply()]))
    assert _failure(result).message == "add: arguments must be a JSON object, got array"


def test_an_unknown_tool_is_reported_to_the_model_and_the_turn_goes_on() -> None:
    result, provider = run(
        _turn([add], [Reply(tool_calls=[ToolCall("subtract", {"a": 1})]), Reply(text="sorry")])
    )
    assert _failure(result) == ToolFailure(
        failure_class=FailureClass.UNAVAILABLE,
        code="tool_unavailable",
        message="Unknown tool 'subtract'. Available tools: add, batch",
        source=FailureSource.RUNTIME,
    )
    assert [b.content for b in _results_seen_by_model(provider)] == [
        "[Tool execution failed]\nUnknown tool 'subtract'. Available tools: add, batch"
    ]
    assert result.outcome == Finished(result=result.outcome.result)
    assert result.text == "sorry"


@pytest.mark.parametrize("availability", [Availability.OFF, Availability.SEARCHABLE])
def test_a_tool_hidden_by_availability_cannot_be_called_by_name(
    availability: Availability,
) -> None:
    calls: list[int] = []

    @tool(availability=availability)
    def secret(x: int) -> int:
        """Secret."""
        calls.append(x)
        return x

    result, provider = run(
        _turn([secret], [Reply(tool_calls=[ToolCall("secret", {"x": 1})]), Reply(text="ok")])
    )
    assert calls == []
    assert _failure(result).code == "tool_unavailable"
    assert [t.name for t in provider.requests[0].tools] == ["batch"]


# ---------------------------------------------------------------- retries


def _flaky(failures: int, log: list[tuple[int, int, str]], **retry: Any) -> Tool:
    @tool(name="flaky", retry=SafeRetry(**retry) if retry else None)
    def flaky(ctx: ToolContext) -> str:
        """Fail a few times, then succeed."""
        log.append((ctx.attempt, ctx.max_attempts, ctx.replay_key))
        if len(log) <= failures:
            raise ToolError(f"failure {len(log)}", retryable=True)
        return f"ok after {len(log)}"

    return flaky


KEY = "s1:t1:1:0:tool_call:2:call_1"


def test_safe_retry_retries_a_retryable_failure_and_stops_on_success() -> None:
    log: list[tuple[int, int, str]] = []
    host = RecordingHost(RecordingController(skip_sleeps=True))
    t = _flaky(1, log, max_attempts=3, base_delay_ms=7)
    result, provider = run(_turn([t], [Reply(tool_calls=[ToolCall("flaky")]), Reply()], host=host))
    assert log == [(1, 3, KEY), (2, 3, KEY)]  # same replay key on every attempt
    assert result.tool_calls[0].output == ToolOutput.success("ok after 2")
    assert _results_seen_by_model(provider)[0].content == "ok after 2"
    assert [t for t in host.controller.triples() if t[0] != "llm_call"][:3] == [
        ("tool_call", KEY, "2:call_1"),
        ("sleep", f"{KEY}:flaky:attempt:1:sleep", "2:call_1:flaky:attempt:1:sleep"),
        ("tool_call", f"{KEY}:attempt:2", "2:call_1:attempt:2"),
    ]
    sleeps = [e.command for e in host.controller.envelopes if isinstance(e.command, SleepCommand)]
    assert sleeps == [SleepCommand(duration_ms=7)]


def test_safe_retry_exhausts_after_max_attempts() -> None:
    log: list[tuple[int, int, str]] = []
    host = RecordingHost(RecordingController(skip_sleeps=True))
    t = _flaky(10, log, max_attempts=3, base_delay_ms=7, max_delay_ms=10)
    result, provider = run(_turn([t], [Reply(tool_calls=[ToolCall("flaky")]), Reply()], host=host))
    assert [a for a, _, _ in log] == [1, 2, 3]
    assert _failure(result) == ToolFailure(
        failure_class=FailureClass.EXECUTION,
        code="tool_error",
        message="failure 3",
        source=FailureSource.TOOL,
        retry=RetryExhausted(attempts=3),
    )
    assert _results_seen_by_model(provider)[0].content == "[Tool execution failed]\nfailure 3"
    assert host.controller.keys("tool_call") == [KEY, f"{KEY}:attempt:2", f"{KEY}:attempt:3"]
    assert host.controller.keys("sleep") == [
        f"{KEY}:flaky:attempt:1:sleep",
        f"{KEY}:flaky:attempt:2:sleep",
    ]
    # exponential backoff (7, 14) capped at max_delay_ms
    assert [
        e.command for e in host.controller.envelopes if e.invocation.kind is EffectKind.SLEEP
    ] == [
        SleepCommand(duration_ms=7),
        SleepCommand(duration_ms=10),
    ]


def test_retry_after_ms_from_the_tool_sets_the_sleep() -> None:
    attempts: list[int] = []

    @tool(retry=SafeRetry(max_attempts=2, base_delay_ms=1000))
    def limited(ctx: ToolContext) -> str:
        """Rate limited once."""
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ToolError("slow down", retry_after_ms=3)
        return "ok"

    host = RecordingHost(RecordingController(skip_sleeps=True))
    result, _ = run(_turn([limited], [Reply(tool_calls=[ToolCall("limited")]), Reply()], host=host))
    assert attempts == [1, 2]
    assert result.tool_calls[0].output.value == "ok"
    sleeps = [e.command for e in host.controller.envelopes if e.invocation.kind is EffectKind.SLEEP]
    assert sleeps == [SleepCommand(duration_ms=3)]


def test_never_retry_is_the_default_even_for_retryable_failures() -> None:
    log: list[tuple[int, int, str]] = []
    host = RecordingHost()
    t = _flaky(10, log)
    result, _ = run(_turn([t], [Reply(tool_calls=[ToolCall("flaky")]), Reply()], host=host))
    assert log == [(1, 1, KEY)]
    failure = _failure(result)
    assert failure.retry == RetrySafe()  # the hint stays as the tool gave it
    assert host.controller.keys("tool_call") == [KEY]
    assert host.controller.keys("sleep") == []


def test_a_non_retryable_failure_is_not_retried_under_safe_retry() -> None:
    attempts: list[int] = []

    @tool(retry=SafeRetry(max_attempts=5, base_delay_ms=1))
    def fatal(ctx: ToolContext) -> str:
        """Fail for good."""
        attempts.append(ctx.attempt)
        raise ToolError("no")

    result, _ = run(_turn([fatal], [Reply(tool_calls=[ToolCall("fatal")]), Reply()]))
    assert attempts == [1]
    assert _failure(result).retry == RetryNever()


def test_real_retry_sleeps_run_through_the_inline_host() -> None:
    log: list[tuple[int, int, str]] = []
    t = _flaky(2, log, max_attempts=3, base_delay_ms=1)
    result, _ = run(_turn([t], [Reply(tool_calls=[ToolCall("flaky")]), Reply(text="ok")]))
    assert [a for a, _, _ in log] == [1, 2, 3]
    assert result.tool_calls[0].output.value == "ok after 3"


def test_cancellation_stops_retrying() -> None:
    attempts: list[int] = []
    token = CancelToken()

    @tool(retry=SafeRetry(max_attempts=5, base_delay_ms=1))
    def cancelling(ctx: ToolContext) -> str:
        """Cancel the turn, then fail retryably."""
        attempts.append(ctx.attempt)
        token.cancel("user pressed stop")
        raise ToolError("interrupted", retryable=True)

    host = RecordingHost()
    result, _ = run(
        _turn(
            [cancelling],
            [Reply(tool_calls=[ToolCall("cancelling")]), Reply()],
            host=host,
            cancel=token,
        )
    )
    assert attempts == [1]
    assert host.controller.keys("sleep") == []
    assert isinstance(result.outcome, Stopped)
    assert result.outcome.reason is StopReason.CANCELLED


def test_arguments_are_checked_against_the_schema_once_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``prepare_failure`` checks the schema; the attempts only convert the arguments."""
    import lash.kernel.tools.typed as typed_module
    import lash.runtime.tools as tools_module

    checked: list[Any] = []
    real_check = tools_module.validate_tool_args

    def counting_check(schema: Any, args: Any) -> None:
        checked.append(args)
        real_check(schema, args)

    monkeypatch.setattr(tools_module, "validate_tool_args", counting_check)
    monkeypatch.setattr(typed_module, "validate_tool_args", counting_check)
    attempts: list[int] = []

    @tool(retry=SafeRetry(max_attempts=3, base_delay_ms=1))
    async def shaky(n: int, ctx: ToolContext) -> int:
        """Fail twice, then answer."""
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ToolError("busy", retryable=True)
        return n

    host = RecordingHost(RecordingController(skip_sleeps=True))
    replies = [Reply(tool_calls=[ToolCall("shaky", {"n": 4})]), Reply(text="4")]
    result, _ = run(_turn([shaky], replies, host=host))
    assert result.tool_calls[0].output == ToolOutput.success(4)
    assert attempts == [1, 2, 3]
    assert checked == [{"n": 4}]


def test_tool_call_duration_covers_every_attempt() -> None:
    """reference/runtime.md §3 Dispatch 5: "Duration covers all attempts"."""

    @tool(retry=SafeRetry(max_attempts=2, base_delay_ms=1))
    async def slow_then_fast(ctx: ToolContext) -> str:
        """Slow failure, fast success."""
        if ctx.attempt == 1:
            await asyncio.sleep(0.03)
            raise ToolError("slow failure", retryable=True)
        return "fast"

    host = RecordingHost(RecordingController(skip_sleeps=True))
    result, _ = run(
        _turn(
            [slow_then_fast], [Reply(tool_calls=[ToolCall("slow_then_fast")]), Reply()], host=host
        )
    )
    assert result.tool_calls[0].output.value == "fast"
    assert result.tool_calls[0].duration_ms >= 30


# ---------------------------------------------------------------- output budget


def test_budget_text_keeps_text_within_budget_unchanged() -> None:
    assert (OUTPUT_BUDGET_CHARS, OUTPUT_BUDGET_LINES) == (16 * 1024, 400)
    assert budget_text("") == ""
    exact_chars = "x" * OUTPUT_BUDGET_CHARS
    assert budget_text(exact_chars) == exact_chars
    exact_lines = "\n".join(f"l{i}" for i in range(400))
    assert budget_text(exact_lines) == exact_lines


def test_budget_text_truncates_characters_head_and_tail() -> None:
    text = "a" * 8192 + "X" + "b" * 8192
    assert budget_text(text) == "a" * 8192 + "\n\n... (1 characters omitted) ...\n\n" + "b" * 8192
    assert budget_text("abcdefghij", max_chars=4) == ("ab\n\n... (6 characters omitted) ...\n\nij")


def test_budget_text_truncates_lines_head_and_tail() -> None:
    text = "\n".join(f"l{i}" for i in range(401))
    expected = "\n".join(
        [
            *(f"l{i}" for i in range(200)),
            "... (1 lines omitted) ...",
            *(f"l{i}" for i in range(201, 401)),
        ]
    )
    assert budget_text(text) == expected
    assert budget_text("1\n2\n3\n4\n5", max_lines=2) == "1\n... (3 lines omitted) ...\n5"
    assert budget_text("1\n2\n3\n4\n5", max_lines=3) == "1\n... (3 lines omitted) ...\n5"


def test_budget_text_applies_lines_then_characters() -> None:
    text = "\n".join(f"r{i:02d}" for i in range(10))  # 10 lines, 39 characters
    # lines first: "r00\nr01\n... (6 lines omitted) ...\nr08\nr09" (41 characters),
    # then characters: 10 from each end
    assert budget_text(text, max_lines=4, max_chars=20) == (
        "r00\nr01\n..\n\n... (21 characters omitted) ...\n\n..\nr08\nr09"
    )


def test_default_projection_budgets_what_the_model_sees_not_the_output() -> None:
    big = "z" * 20_000

    @tool
    def dump() -> str:
        """A lot of text."""
        return big

    result, provider = run(_turn([dump], [Reply(tool_calls=[ToolCall("dump")]), Reply()]))
    assert result.tool_calls[0].output.value == big  # the full output is kept
    seen = _results_seen_by_model(provider)[0].content
    assert seen == "z" * 8192 + "\n\n... (3616 characters omitted) ...\n\n" + "z" * 8192
    assert default_projection(ToolOutput.success(big)) == (TextReturn(text=seen),)
