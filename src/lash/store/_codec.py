"""How the SQL stores write rows: compact message JSON, optionally compressed, decoded strictly.

Shared by the SQLite and PostgreSQL stores, which therefore store messages
byte-for-byte alike. A row that does not decode is a ``StoreCorruptError``
naming the session, table, row and JSON path.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import Any, TypeVar, cast

import msgspec

from ..kernel.codec import decode, encode, from_builtins, to_builtins
from ..kernel.errors import CodecError
from ..kernel.llm import LlmUsage
from ..kernel.messages import Message, Role
from ..kernel.outcome import AssistantAnswer, Finished, TurnOutcome
from .base import RuntimeCommit, SessionMeta, StoreCorruptError, TurnRecord, UsageRow

T = TypeVar("T")

COMPRESS_MIN = 64
"""Message JSON at least this long is stored zlib-compressed if that saves 1/8 or more."""


def encode_message(message: Message) -> bytes:
    """A message's JSON without its id and the part ids that follow ``{id}.p{index}``.

    The id is stored in its own column (the node id), and the part ids are
    derivable from it; ``decode_message`` puts both back.
    """
    doc = to_builtins(message)
    del doc["id"]
    prefix = f"{message.id}.p"
    for i, part in enumerate(doc.get("parts", ())):
        if part["id"] == f"{prefix}{i}":
            del part["id"]
    return encode(doc)


def decode_message(session_id: str, node_id: str, data: object) -> Message:
    """A stored message row back as a ``Message`` (its id and part ids restored)."""
    raw = decode_row(session_id, "messages", node_id, data, dict)
    if "id" in raw:
        raise StoreCorruptError(
            session_id, "messages", node_id, "the row repeats the message id", path="$.id"
        )
    raw["id"] = node_id
    parts = raw.get("parts")
    if isinstance(parts, list):
        for i, part in enumerate(parts):
            if isinstance(part, dict) and "id" not in part:
                part["id"] = f"{node_id}.p{i}"
    try:
        return from_builtins(raw, Message)
    except CodecError as exc:
        raise StoreCorruptError(session_id, "messages", node_id, exc.reason, path=exc.path) from exc


def pack(data: bytes) -> str | bytes:
    """JSON text, or its zlib compression when that saves space."""
    size = len(data)
    if size >= COMPRESS_MIN:
        # A window just big enough for the data: the same ratio as the default
        # window, at a fraction of the set-up cost for small messages.
        wbits = min(max(size.bit_length(), 9), 15)
        packer = zlib.compressobj(6, zlib.DEFLATED, wbits, wbits - 7)
        packed = packer.compress(data) + packer.flush()
        if len(packed) <= size - size // 8:  # worth giving up readable text
            return packed
    return data.decode()


def decode_row(session_id: str, table: str, row: int | str, data: object, type_: type[T]) -> T:
    """A stored JSON row (text, or zlib-compressed bytes) decoded into ``type_``."""
    if isinstance(data, bytes):
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise StoreCorruptError(
                session_id, table, row, f"not zlib-compressed JSON: {exc}"
            ) from exc
    elif not isinstance(data, str):
        raise StoreCorruptError(session_id, table, row, f"expected JSON text, found {data!r}")
    try:
        return decode(data, type_)
    except CodecError as exc:
        raise StoreCorruptError(session_id, table, row, exc.reason, path=exc.path) from exc


def decode_usage_rows(
    session_id: str, rows: Iterable[tuple[str, str, Any]]
) -> tuple[UsageRow, ...]:
    """Stored ``(source, model, usage_json)`` rows as ``UsageRow``s, in row order."""
    return tuple(
        UsageRow(
            source=source,
            model=model,
            usage=decode_row(session_id, "usage", f"{source}/{model}", data, LlmUsage),
        )
        for source, model, data in rows
    )


def commit_messages(commit: RuntimeCommit) -> tuple[Message, ...]:
    """The messages a commit writes: its appended messages, or its replacement graph's."""
    if commit.replace_graph is not None:
        return tuple(n.message for n in commit.replace_graph)
    return commit.messages


def sum_usage(commit: RuntimeCommit) -> dict[tuple[str, str], LlmUsage]:
    """A commit's usage rows summed by (source, model), in first-seen order."""
    usage: dict[tuple[str, str], LlmUsage] = {}
    for row in commit.usage:
        key = (row.source, row.model)
        prior = usage.get(key)
        usage[key] = row.usage if prior is None else prior + row.usage
    return usage


class _StoredRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A turn record as stored: ``answer`` instead of an outcome that repeats a message."""

    outcome: Any = None
    answer: str | None = None
    """The id of the committed message whose text is the turn's answer."""
    usage: LlmUsage = msgspec.field(default_factory=LlmUsage)


def encode_record(commit: RuntimeCommit) -> str | bytes | None:
    """A commit's turn record for storage, or None when it has none.

    A finished turn's answer is the text of its last assistant message; the
    record then names that message instead of repeating the text.
    """
    record = commit.record
    if record is None:
        return None
    outcome = record.outcome
    if isinstance(outcome, Finished) and isinstance(outcome.result, AssistantAnswer):
        last = next((m for m in reversed(commit.messages) if m.role is Role.ASSISTANT), None)
        stamp = commit.stamp
        if (
            last is not None
            and stamp is not None
            and last.id.startswith(f"{stamp.turn_id}.")
            and last.text() == outcome.result.text
        ):
            return pack(encode(_StoredRecord(answer=last.id, usage=record.usage)))
    return pack(encode(_StoredRecord(outcome=to_builtins(outcome), usage=record.usage)))


def decode_record(
    session_id: str, turn_id: str, data: object, messages: Iterable[Message]
) -> TurnRecord:
    """A stored turn record back, its answer read from the turn's ``messages``."""
    stored = decode_row(session_id, "turn_stamps", turn_id, data, _StoredRecord)
    if stored.answer is not None:
        answer = next((m for m in messages if m.id == stored.answer), None)
        if answer is None:
            raise StoreCorruptError(
                session_id,
                "turn_stamps",
                turn_id,
                f"the answer message {stored.answer!r} is gone",
                path="$.answer",
            )
        outcome: Any = Finished(result=AssistantAnswer(text=answer.text()))
    else:
        try:
            outcome = from_builtins(stored.outcome, cast(Any, TurnOutcome))
        except CodecError as exc:
            raise StoreCorruptError(
                session_id, "turn_stamps", turn_id, exc.reason, path=f"$.outcome{exc.path[1:]}"
            ) from exc
    return TurnRecord(outcome=outcome, usage=stored.usage)


STATE_COMPRESS_MIN = 512
"""A state blob at least this long is stored zlib-compressed if that saves 1/8 or more."""


def pack_state(value: bytes) -> tuple[bytes, bool, bytes]:
    """A state blob for storage: ``(sha256 of the value, compressed?, stored bytes)``.

    The digest lets a commit skip rewriting an unchanged blob and lets a load
    detect a damaged one.
    """
    digest = hashlib.sha256(value).digest()
    if len(value) >= STATE_COMPRESS_MIN:
        packed = zlib.compress(value, 6)
        if len(packed) <= len(value) - len(value) // 8:
            return digest, True, packed
    return digest, False, value


def unpack_state(
    session_id: str, name: str, digest: object, compressed: object, data: object
) -> bytes:
    """A stored state blob back; a damaged one is a ``StoreCorruptError``."""
    if not isinstance(data, bytes | bytearray | memoryview) or not isinstance(
        digest, bytes | bytearray | memoryview
    ):
        raise StoreCorruptError(session_id, "state", name, "the blob or its digest is not bytes")
    value = bytes(data)
    if compressed:
        inflater = zlib.decompressobj()
        try:
            value = inflater.decompress(value) + inflater.flush()
        except zlib.error as exc:
            raise StoreCorruptError(
                session_id, "state", name, f"not zlib-compressed: {exc}"
            ) from exc
        if not inflater.eof or inflater.unused_data:
            raise StoreCorruptError(
                session_id,
                "state",
                name,
                "not zlib-compressed: the stream is truncated or has trailing bytes",
            )
    if hashlib.sha256(value).digest() != bytes(digest):
        raise StoreCorruptError(
            session_id, "state", name, "the blob does not match its SHA-256 digest"
        )
    return value


def encode_meta(meta: SessionMeta) -> str:
    """A metadata row's JSON text (the session id is stored in its own column)."""
    doc = to_builtins(meta)
    del doc["session_id"]
    return encode(doc).decode()


def decode_meta(session_id: str, data: object) -> SessionMeta:
    """A stored metadata row back; one that does not decode is a ``StoreCorruptError``."""
    raw = decode_row(session_id, "session_meta", session_id, data, dict)
    if "session_id" in raw:
        raise StoreCorruptError(
            session_id, "session_meta", session_id, "the row repeats the session id"
        )
    raw["session_id"] = session_id
    try:
        return from_builtins(raw, SessionMeta)
    except CodecError as exc:
        raise StoreCorruptError(
            session_id, "session_meta", session_id, exc.reason, path=exc.path
        ) from exc
