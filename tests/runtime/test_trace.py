"""JSONL traces: what a turn records, reading it back, and that no secret leaks."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from runtime_support import run

from lash import ConfigError, LashCore, tool
from lash.kernel.llm import LlmRequest, LlmResponse, LlmUsage
from lash.kernel.outcome import Finished
from lash.providers.base import StreamCallback
from lash.runtime.trace import (
    JsonlTraceSink,
    ListTraceSink,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallStarted,
    ToolCallTraced,
    TraceRecord,
    TurnCompleted,
    TurnStarted,
    read_trace,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

SECRET = "sk-test-PLANTED-SECRET-9f8e7d"

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class KeyedProvider(ScriptedProvider):
    """A provider holding an API key and auth header, as a real one does."""

    def __init__(self, replies: list[Reply]) -> None:
        super().__init__(replies)
        self.api_key = SECRET
        self.headers = {"Authorization": f"Bearer {SECRET}"}

    async def complete(
        self, request: LlmRequest, on_event: StreamCallback | None = None
    ) -> LlmResponse:
        return await super().complete(request, on_event)


def _replies() -> list[Reply]:
    return [
        Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})], usage=LlmUsage(input_tokens=9)),
        Reply(text="3", usage=LlmUsage(input_tokens=12, output_tokens=1)),
        Reply(error="upstream exploded"),
    ]


def test_jsonl_trace_records_a_turn_in_order(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "trace.jsonl"

    async def main() -> None:
        core = LashCore(provider=KeyedProvider(_replies()), model="m", tools=[add], trace=path)
        async with core.session("s1") as session:
            await session.run("1+2?", turn_id="turn-a")
            await session.run("again", turn_id="turn-b")

    run(main(), TIMEOUT)
    records = read_trace(path)
    kinds = [(r.turn_id, type(r.event).__name__) for r in records]
    assert kinds == [
        ("turn-a", "TurnStarted"),
        ("turn-a", "LlmCallStarted"),
        ("turn-a", "LlmCallCompleted"),
        ("turn-a", "ToolCallTraced"),
        ("turn-a", "LlmCallStarted"),
        ("turn-a", "LlmCallCompleted"),
        ("turn-a", "TurnCompleted"),
        ("turn-b", "TurnStarted"),
        ("turn-b", "LlmCallStarted"),
        ("turn-b", "LlmCallFailed"),
        ("turn-b", "TurnCompleted"),
    ]
    assert [r.seq for r in records[:7]] == list(range(1, 8))
    assert {r.session_id for r in records} == {"s1"}
    started = records[1].event
    assert isinstance(started, LlmCallStarted)
    assert started.replay_key == "s1:turn-a:1:0:llm_call:1"
    assert started.tool_names == ("add", "batch")
    completed = records[2].event
    assert isinstance(completed, LlmCallCompleted)
    assert (completed.tool_calls, completed.usage) == (1, LlmUsage(input_tokens=9))
    tool_record = records[3].event
    assert isinstance(tool_record, ToolCallTraced)
    assert (tool_record.name, tool_record.status) == ("add", "success")
    end = records[6].event
    assert isinstance(end, TurnCompleted)
    assert isinstance(end.outcome, Finished)
    assert end.usage == LlmUsage(input_tokens=21, output_tokens=1)
    failed = records[9].event
    assert isinstance(failed, LlmCallFailed)
    assert failed.error.message == "upstream exploded"
    assert isinstance(records[0].event, TurnStarted)


def test_no_sink_sees_the_api_key(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    memory = ListTraceSink()

    async def main() -> list[bytes]:
        blobs = []
        for sink in (path, memory):
            core = LashCore(provider=KeyedProvider(_replies()), model="m", tools=[add], trace=sink)
            async with core.session("s") as session:
                a = await session.run("1+2?")
                b = await session.run("again")
                for result in (a, b):
                    blobs.append(msgspec.json.encode(result))
                stored = await core.store.load("s")
                blobs.append(msgspec.json.encode(stored))
        return blobs

    blobs = run(main(), TIMEOUT)
    blobs.append(path.read_bytes())
    blobs.extend(msgspec.json.encode(r) for r in memory.records)
    assert memory.records, "the in-memory sink recorded nothing"
    for blob in blobs:
        assert SECRET.encode() not in blob
        assert b"Bearer" not in blob


def test_trace_argument_is_validated() -> None:
    with pytest.raises(ConfigError, match="trace must be a path or a TraceSink, got int"):
        LashCore(provider=ScriptedProvider([]), model="m", trace=42)  # type: ignore[arg-type]


def test_read_trace_names_a_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    sink = JsonlTraceSink(path)
    sink.append(
        msgspec.convert(
            {
                "schema_version": 1,
                "seq": 1,
                "timestamp": 0.0,
                "session_id": "s",
                "turn_id": "t",
                "event": {"type": "turn_started", "turn_index": 1, "model": "m"},
            },
            type=TraceRecord,
        )
    )
    sink.close()
    with path.open("ab") as f:
        f.write(b"{not json}\n")
    with pytest.raises(msgspec.DecodeError, match="line 2"):
        read_trace(path)


def test_a_trace_file_the_core_opened_is_closed_with_the_core(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    mine = ListTraceSink()

    async def main() -> JsonlTraceSink:
        core = LashCore(provider=ScriptedProvider([Reply(text="a")]), model="m", trace=path)
        async with core, core.session("s") as session:
            await session.run("hi")
            sink = core.trace
            assert isinstance(sink, JsonlTraceSink)
            assert sink._file is not None  # opened by the first record
        given = LashCore(provider=ScriptedProvider([Reply(text="b")]), model="m", trace=mine)
        async with given, given.session("s") as session:
            await session.run("hi")
        return sink

    sink = run(main(), TIMEOUT)
    assert sink._file is None  # closed by the core's aclose
    assert read_trace(path)  # and everything it wrote is there
    assert mine.records  # a sink the host passed is the host's to manage
