"""Stable, versioned JSON for kernel types, and a canonical hash.

Canonical JSON is compact with every object's keys sorted (struct fields
included), so equal values always encode to identical bytes. Documents that
outlive a process (checkpoints, commits, journals) are wrapped with a format
name and version so a reader can refuse what it does not understand.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec

from .errors import CodecError

T = TypeVar("T")

FORMAT_VERSION = 1
"""The version of every document format this library writes."""

_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(value: Any) -> bytes:
    """Canonical JSON bytes of a kernel value or plain JSON value."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {type(value).__name__}: {exc}") from exc


def canonical_hash(value: Any) -> str:
    """Lowercase hex SHA-256 of ``encode(value)``."""
    return hashlib.sha256(encode(value)).hexdigest()


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    dec = _DECODERS.get(type_)
    if dec is None:
        dec = _DECODERS[type_] = msgspec.json.Decoder(type_)
    return dec


def _codec_error(exc: msgspec.MsgspecError) -> CodecError:
    text = str(exc)
    path = "$"
    marker = " - at `"
    if marker in text:
        text, _, rest = text.partition(marker)
        path = rest.rstrip("`")
    return CodecError(text, path=path)


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode JSON into ``type_``; errors are ``CodecError`` naming the JSON path."""
    try:
        return _decoder(type_).decode(data)  # type: ignore[no-any-return]
    except msgspec.MsgspecError as exc:
        raise _codec_error(exc) from exc


def to_builtins(value: Any) -> Any:
    """The plain-JSON form (dicts, lists, strings, numbers) of a kernel value."""
    try:
        return msgspec.to_builtins(value, order="sorted")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"cannot convert {type(value).__name__}: {exc}") from exc


def from_builtins(value: Any, type_: type[T]) -> T:
    """Convert a plain-JSON value into ``type_``; errors name the path."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.MsgspecError as exc:
        raise _codec_error(exc) from exc


class _Document(msgspec.Struct, frozen=True):
    format: str
    version: int
    data: msgspec.Raw


def encode_document(kind: str, value: Any) -> bytes:
    """``{"data": ..., "format": "lash.<kind>", "version": 1}`` as canonical JSON."""
    return encode({"format": f"lash.{kind}", "version": FORMAT_VERSION, "data": value})


def decode_document(data: bytes | str, kind: str, type_: type[T]) -> T:
    """Decode a document written by ``encode_document``.

    Raises ``CodecError`` when the bytes are not such a document, name another
    format, or carry a version this library does not read.
    """
    try:
        doc = _decoder(_Document).decode(data)
    except msgspec.MsgspecError as exc:
        raise _codec_error(exc) from exc
    expected = f"lash.{kind}"
    if doc.format != expected:
        raise CodecError(f"expected a {expected} document, got {doc.format}", path="$.format")
    if doc.version != FORMAT_VERSION:
        raise CodecError(
            f"{expected} version {doc.version} is not supported "
            f"(this library reads version {FORMAT_VERSION})",
            path="$.version",
        )
    try:
        return _decoder(type_).decode(doc.data)  # type: ignore[no-any-return]
    except msgspec.MsgspecError as exc:
        err = _codec_error(exc)
        raise CodecError(err.reason, path="$.data" + err.path[1:]) from exc
