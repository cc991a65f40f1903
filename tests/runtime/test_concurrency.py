"""Tool batches run concurrently; serial tools one at a time; results in call order.

Where the reference runs a model's batch sequentially, ours runs it
concurrently (ARCHITECTURE, "Where we deliberately do better"). The barrier
tests would deadlock if calls ran one after another; ``run`` bounds each test
with a timeout so that shows up as a ``TimeoutError``, not a hang.
"""

import asyncio
import json
from typing import Any

from runtime_support import RecordingHost, run

from lash import LashCore, Scheduling, ToolContext, tool
from lash.kernel.llm import ToolResultBlock
from lash.kernel.tools.output import ToolFailure
from lash.runtime.tools import Tool
from lash.testing import Reply, ScriptedProvider, ToolCall


async def _turn(
    tools: list[Tool], replies: list[Reply], *, host: RecordingHost | None = None
) -> tuple[Any, ScriptedProvider]:
    provider = ScriptedProvider(replies)
    core = LashCore(provider=provider, model="scripted", tools=tools, effect_host=host)
    async with core.session("s1") as session:
        result = await session.run("go", turn_id="t1")
    return result, provider


def _result_blocks(provider: ScriptedProvider, request: int = 1) -> list[ToolResultBlock]:
    return [
        b for b in provider.requests[request].messages[-1].blocks if isinstance(b, ToolResultBlock)
    ]


class Barrier:
    """Each party waits until ``parties`` have arrived (asyncio has no Barrier in 3.11)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived: list[str] = []
        self._all = asyncio.Event()

    async def wait(self, name: str) -> None:
        self.arrived.append(name)
        if len(self.arrived) == self.parties:
            self._all.set()
        await self._all.wait()


def test_a_model_batch_of_parallel_tools_runs_concurrently() -> None:
    barrier = Barrier(3)

    @tool
    async def meet(name: str) -> str:
        """Wait for the others."""
        await barrier.wait(name)
        return f"{name} met"

    calls = [ToolCall("meet", {"name": n}) for n in ("a", "b", "c")]
    result, _ = run(_turn([meet], [Reply(tool_calls=calls), Reply(text="done")]))
    assert barrier.arrived == ["a", "b", "c"]
    assert [c.output.value for c in result.tool_calls] == ["a met", "b met", "c met"]
    assert result.text == "done"


def test_sync_tools_of_one_batch_run_concurrently_in_threads() -> None:
    import threading

    barrier = threading.Barrier(3, timeout=1.0)

    @tool
    def meet(name: str) -> str:
        """Wait for the others, in a worker thread."""
        barrier.wait()
        return name

    calls = [ToolCall("meet", {"name": n}) for n in ("a", "b", "c")]
    result, _ = run(_turn([meet], [Reply(tool_calls=calls), Reply(text="done")]))
    assert [c.output.value for c in result.tool_calls] == ["a", "b", "c"]


def test_serial_tools_never_overlap_each_other_but_overlap_parallel_ones() -> None:
    log: list[str] = []
    serial_in = asyncio.Event()
    parallel_in = asyncio.Event()

    @tool(scheduling=Scheduling.SERIAL)
    async def first(ctx: ToolContext) -> str:
        """Serial; meets the parallel tool while running."""
        log.append("first>")
        serial_in.set()
        await parallel_in.wait()
        for _ in range(5):
            await asyncio.sleep(0)
        log.append("<first")
        return "first"

    @tool(scheduling=Scheduling.SERIAL)
    async def second(ctx: ToolContext) -> str:
        """Serial; must not start before first ends."""
        log.append("second>")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append("<second")
        return "second"

    @tool
    async def side() -> str:
        """Parallel; meets the first serial tool while running."""
        log.append("side>")
        parallel_in.set()
        await serial_in.wait()
        log.append("<side")
        return "side"

    calls = [ToolCall("second"), ToolCall("side"), ToolCall("first")]
    result, provider = run(
        _turn([first, second, side], [Reply(tool_calls=calls), Reply(text="done")])
    )
    serial = [entry for entry in log if "first" in entry or "second" in entry]
    # serial tools run one at a time, in call order (second was called first)
    assert serial == ["second>", "<second", "first>", "<first"]
    # the parallel tool overlapped a serial one (the events would deadlock otherwise)
    assert log.index("side>") < log.index("<first")
    assert log.index("first>") < log.index("<side")
    assert [c.output.value for c in result.tool_calls] == ["second", "side", "first"]
    assert [b.call_id for b in _result_blocks(provider)] == ["call_1", "call_2", "call_3"]


def test_results_return_to_the_model_in_call_order_regardless_of_finish_order() -> None:
    finished: list[str] = []
    gates = {"a": asyncio.Event(), "b": asyncio.Event(), "c": asyncio.Event()}

    @tool
    async def step(name: str, after: str | None = None) -> str:
        """Finish after another call has finished."""
        if after is not None:
            await gates[after].wait()
        finished.append(name)
        gates[name].set()
        return f"{name}!"

    calls = [
        ToolCall("step", {"name": "a", "after": "b"}),
        ToolCall("step", {"name": "b", "after": "c"}),
        ToolCall("step", {"name": "c"}),
    ]
    result, provider = run(_turn([step], [Reply(tool_calls=calls), Reply(text="done")]))
    assert finished == ["c", "b", "a"]
    assert [(b.call_id, b.content) for b in _result_blocks(provider)] == [
        ("call_1", "a!"),
        ("call_2", "b!"),
        ("call_3", "c!"),
    ]
    # Activities report each call as it finishes; the result lists them in call order.
    completed = [a.call_id for a in result.activities if a.type == "tool_call_completed"]
    assert completed == ["call_3", "call_2", "call_1"]
    assert [c.call_id for c in result.tool_calls] == ["call_1", "call_2", "call_3"]
    tool_parts = [p.tool_call_id for p in result.messages[2].parts]
    assert tool_parts == ["call_1", "call_2", "call_3"]


def test_each_concurrent_call_has_its_own_envelope() -> None:
    barrier = Barrier(2)

    @tool
    async def meet(name: str) -> str:
        """Wait for the other."""
        await barrier.wait(name)
        return name

    host = RecordingHost()
    run(
        _turn(
            [meet],
            [
                Reply(
                    tool_calls=[ToolCall("meet", {"name": "x"}), ToolCall("meet", {"name": "y"})]
                ),
                Reply(),
            ],
            host=host,
        )
    )
    assert host.controller.keys("tool_call") == [
        "s1:t1:1:0:tool_call:2:call_1",
        "s1:t1:1:0:tool_call:2:call_2",
    ]


# ---------------------------------------------------------------- the batch tool


def _batch(*entries: tuple[str, dict[str, Any]]) -> ToolCall:
    return ToolCall(
        "batch", {"tool_calls": [{"tool": name, "parameters": params} for name, params in entries]}
    )


def _batch_results(result: Any) -> list[dict[str, Any]]:
    value = result.tool_calls[0].output.value
    assert set(value) == {"results"}
    items = value["results"]
    for item in items:
        assert isinstance(item.pop("duration_ms"), int)
    return items  # type: ignore[no-any-return]


def test_batch_entries_run_concurrently_and_results_keep_entry_order() -> None:
    barrier = Barrier(3)

    @tool
    async def meet(name: str) -> str:
        """Wait for the others."""
        await barrier.wait(name)
        return name.upper()

    host = RecordingHost()
    result, provider = run(
        _turn(
            [meet],
            [
                Reply(
                    tool_calls=[
                        _batch(
                            ("meet", {"name": "a"}),
                            ("meet", {"name": "b"}),
                            ("meet", {"name": "c"}),
                        )
                    ]
                ),
                Reply(text="done"),
            ],
            host=host,
        )
    )
    assert sorted(barrier.arrived) == ["a", "b", "c"]
    assert _batch_results(result) == [
        {"index": 0, "tool": "meet", "success": True, "result": "A"},
        {"index": 1, "tool": "meet", "success": True, "result": "B"},
        {"index": 2, "tool": "meet", "success": True, "result": "C"},
    ]
    key = "s1:t1:1:0:tool_call:2:call_1"
    assert host.controller.keys("tool_call") == [
        f"{key}:batch:00",
        f"{key}:batch:01",
        f"{key}:batch:02",
    ]
    entry = next(e for e in host.controller.envelopes if e.replay_key == f"{key}:batch:01")
    assert entry.invocation.effect_id == "2:call_1:batch:01"
    assert entry.invocation.caused_by == "tool_call:call_1"
    assert entry.command.call.call_id == "call_1:01"  # type: ignore[union-attr]
    # the model sees one result for the one batch call, as compact JSON
    blocks = _result_blocks(provider)
    assert [b.call_id for b in blocks] == ["call_1"]
    seen = json.loads(blocks[0].content)
    assert [r["result"] for r in seen["results"]] == ["A", "B", "C"]


def test_batch_preserves_partial_failures_and_rejects_nested_batches() -> None:
    @tool
    async def echo(x: str) -> str:
        """Echo."""
        return x

    @tool
    def boom() -> str:
        """Fail."""
        raise ValueError("bad thing")

    call = _batch(
        ("echo", {"x": "hi"}),
        ("batch", {"tool_calls": [{"tool": "echo", "parameters": {"x": "inner"}}]}),
        ("boom", {}),
        ("echo", {"x": 3}),
        ("nope", {}),
    )
    result, _ = run(_turn([echo, boom], [Reply(tool_calls=[call]), Reply(text="done")]))
    assert result.tool_calls[0].output.is_success
    assert _batch_results(result) == [
        {"index": 0, "tool": "echo", "success": True, "result": "hi"},
        {
            "index": 1,
            "tool": "batch",
            "success": False,
            "error": "Tool 'batch' is not allowed inside batch",
        },
        {
            "index": 2,
            "tool": "boom",
            "success": False,
            "error": {
                "status": "failure",
                "failure_class": "execution",
                "code": "tool_error",
                "message": "ValueError: bad thing",
                "retry": {"type": "never"},
            },
        },
        {
            "index": 3,
            "tool": "echo",
            "success": False,
            "error": {
                "status": "failure",
                "failure_class": "invalid_request",
                "code": "invalid_tool_args",
                "message": "echo: arguments.x: 3 is not of type string",
                "source": "runtime",
                "retry": {"type": "never"},
            },
        },
        {
            "index": 4,
            "tool": "nope",
            "success": False,
            "error": {
                "status": "failure",
                "failure_class": "unavailable",
                "code": "tool_unavailable",
                "message": "Unknown tool 'nope'. Available tools: echo, boom, batch",
                "source": "runtime",
                "retry": {"type": "never"},
            },
        },
    ]
    assert result.text == "done"


def test_batch_marks_overflow_entries_as_failures() -> None:
    ran: list[int] = []

    @tool
    def count(n: int) -> int:
        """Count."""
        ran.append(n)
        return n

    call = _batch(*(("count", {"n": i}) for i in range(27)))
    result, _ = run(_turn([count], [Reply(tool_calls=[call]), Reply()]))
    items = _batch_results(result)
    assert sorted(ran) == list(range(25))
    assert [i["index"] for i in items] == list(range(27))
    assert [i["success"] for i in items] == [True] * 25 + [False] * 2
    assert items[25] == {
        "index": 25,
        "tool": "count",
        "success": False,
        "error": "Maximum of 25 tool calls allowed in batch",
    }


def test_batch_with_unusable_arguments_fails_as_a_whole() -> None:
    result, provider = run(
        _turn([], [Reply(tool_calls=[ToolCall("batch", {"tool_calls": []})]), Reply(text="ok")])
    )
    failure = result.tool_calls[0].output.outcome
    assert isinstance(failure, ToolFailure)
    assert (failure.code, failure.message) == (
        "invalid_batch",
        "Invalid tool_calls: expected at least one call",
    )
    assert _result_blocks(provider)[0].content == (
        "[Tool execution failed]\nInvalid tool_calls: expected at least one call"
    )
