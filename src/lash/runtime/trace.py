"""Tracing: structured records of what a turn did, for offline inspection.

A ``TraceSink`` receives ``TraceRecord``s synchronously and must not block;
``JsonlTraceSink`` appends one JSON line per record. Records hold what the
turn did (requests' shape, usage, outcomes, durations), never credentials:
providers keep their keys and headers to themselves.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO, Any, Protocol, TypeAlias

import msgspec

from ..kernel.llm import LlmCallError, LlmUsage, TerminalReason
from ..kernel.outcome import TurnOutcome

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

TRACE_SCHEMA_VERSION = 1


class TurnStarted(msgspec.Struct, tag="turn_started", tag_field="type", **_S):
    """A turn began."""

    turn_index: int
    model: str


class LlmCallStarted(msgspec.Struct, tag="llm_call_started", tag_field="type", **_S):
    """A model call was sent."""

    effect_id: int
    replay_key: str
    model: str
    message_count: int
    tool_names: tuple[str, ...] = ()


class LlmCallCompleted(msgspec.Struct, tag="llm_call_completed", tag_field="type", **_S):
    """A model call returned."""

    effect_id: int
    duration_ms: float
    terminal_reason: TerminalReason
    usage: LlmUsage
    text_chars: int
    tool_calls: int


class LlmCallFailed(msgspec.Struct, tag="llm_call_failed", tag_field="type", **_S):
    """A model call failed."""

    effect_id: int
    duration_ms: float
    error: LlmCallError


class ToolCallTraced(msgspec.Struct, tag="tool_call_completed", tag_field="type", **_S):
    """A tool call finished."""

    call_id: str
    name: str
    status: str
    duration_ms: int


class TurnCompleted(msgspec.Struct, tag="turn_completed", tag_field="type", **_S):
    """A turn ended."""

    outcome: TurnOutcome
    usage: LlmUsage


TraceEvent: TypeAlias = (
    TurnStarted | LlmCallStarted | LlmCallCompleted | LlmCallFailed | ToolCallTraced | TurnCompleted
)


class TraceRecord(msgspec.Struct, **_S):
    """One trace line: when, where, and what."""

    schema_version: int
    seq: int
    timestamp: float
    session_id: str
    turn_id: str
    event: TraceEvent


class TraceSink(Protocol):
    """Receives trace records; ``append`` must be quick and must not raise on the hot path."""

    def append(self, record: TraceRecord) -> None:
        """Record one event."""


class JsonlTraceSink:
    """Appends each record as one JSON line to ``path`` (parents created on first write)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder()

    def append(self, record: TraceRecord) -> None:
        """Write one line and flush it."""
        line = self._encoder.encode(record) + b"\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        """Close the file (it reopens on the next append)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ListTraceSink:
    """Keeps records in memory (tests, diagnostics)."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []

    def append(self, record: TraceRecord) -> None:
        """Keep ``record``."""
        self.records.append(record)


def read_trace(path: str | Path) -> list[TraceRecord]:
    """Read a JSONL trace back; a malformed line raises ``msgspec.DecodeError`` naming it."""
    decoder = msgspec.json.Decoder(TraceRecord)
    records = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(decoder.decode(line))
        except msgspec.DecodeError as exc:
            raise msgspec.DecodeError(f"line {n}: {exc}") from exc
    return records


class Tracer:
    """Stamps events with the turn's identity and a sequence number."""

    __slots__ = ("_seq", "_sink", "session_id", "turn_id")

    def __init__(self, sink: TraceSink, session_id: str, turn_id: str) -> None:
        self._sink = sink
        self._seq = 0
        self.session_id = session_id
        self.turn_id = turn_id

    def __call__(self, event: Any) -> None:
        self._seq += 1
        self._sink.append(
            TraceRecord(
                schema_version=TRACE_SCHEMA_VERSION,
                seq=self._seq,
                timestamp=time.time(),
                session_id=self.session_id,
                turn_id=self.turn_id,
                event=event,
            )
        )
