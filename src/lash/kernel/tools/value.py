"""Tool values: JSON that may hold attachment references, their wire form, and model projection.

In memory a tool value is plain JSON (``None``, ``bool``, ``int``, ``float``,
``str``, ``list``/``tuple``, ``dict`` with string keys) in which an
:class:`AttachmentRef` may appear anywhere. On the wire:

* an attachment is ``{"$lash_tool_value": "attachment", "ref": {...}}``;
* a user object that itself has the key ``$lash_tool_value`` is escaped as
  ``{"$lash_tool_value": "object", "entries": {...}}``.

Objects are handled in sorted key order everywhere, so every projection is
deterministic.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from ..attachments import AttachmentRef
from ..errors import ToolValueError
from .output import (
    AttachmentReturn,
    ModelReturnPart,
    TextReturn,
    ToolCancelled,
    ToolFailure,
    ToolOutput,
    ToolSuccess,
)

__all__ = [
    "TOOL_VALUE_TAG",
    "collect_attachments",
    "decode_tool_value",
    "encode_tool_value",
    "format_tool_output_content",
    "model_return_parts",
]

TOOL_VALUE_TAG = "$lash_tool_value"
"""The reserved key that marks an encoded attachment or an escaped object."""

_ATTACHMENT = "attachment"
_OBJECT = "object"
_COMPANION = {_ATTACHMENT: "ref", _OBJECT: "entries"}

FAILED_TEXT = "[Tool execution failed]"
"""The text that opens the model's view of a failed call."""
CANCELLED_TEXT = "[Tool execution cancelled]"
"""The text that opens the model's view of a cancelled call."""


# ---------------------------------------------------------------------------
# wire codec


def encode_tool_value(value: Any) -> Any:
    """The JSON wire form of a tool value (see the module docs).

    Raises :class:`ToolValueError` naming the path of anything that is not
    JSON or an attachment, including non-finite floats and non-string keys.
    """
    return _encode(value, "$")


def _encode(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolValueError(f"{path}: non-finite number {value!r} is not a tool value")
        return value
    if isinstance(value, AttachmentRef):
        return {TOOL_VALUE_TAG: _ATTACHMENT, "ref": msgspec.to_builtins(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        entries: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ToolValueError(f"{path}: object key {key!r} is not a string")
            entries[key] = _encode(item, f"{path}.{key}")
        if TOOL_VALUE_TAG in entries:
            return {TOOL_VALUE_TAG: _OBJECT, "entries": entries}
        return entries
    raise ToolValueError(f"{path}: {type(value).__name__} is not a tool value")


def decode_tool_value(data: Any) -> Any:
    """The tool value a wire-form JSON document stands for; the inverse of ``encode_tool_value``.

    An object carrying ``$lash_tool_value`` must have a string tag, exactly one
    companion key (``ref`` for ``attachment``, ``entries`` for ``object``) and
    nothing else. Anything malformed raises :class:`ToolValueError` naming the path.
    """
    return _decode(data, "$")


def _decode(data: Any, path: str) -> Any:
    if data is None or isinstance(data, (bool, str, int, AttachmentRef)):
        return data
    if isinstance(data, float):
        if not math.isfinite(data):
            raise ToolValueError(f"{path}: non-finite number {data!r} is not a tool value")
        return data
    if isinstance(data, (list, tuple)):
        return [_decode(item, f"{path}[{i}]") for i, item in enumerate(data)]
    if isinstance(data, dict):
        if TOOL_VALUE_TAG in data:
            return _decode_reserved(data, path)
        out: dict[str, Any] = {}
        for key, item in data.items():
            if not isinstance(key, str):
                raise ToolValueError(f"{path}: object key {key!r} is not a string")
            out[key] = _decode(item, f"{path}.{key}")
        return out
    raise ToolValueError(f"{path}: {type(data).__name__} is not JSON")


def _decode_reserved(data: dict[Any, Any], path: str) -> Any:
    tag = data[TOOL_VALUE_TAG]
    if not isinstance(tag, str):
        raise ToolValueError(f"{path}: {TOOL_VALUE_TAG} must be a string, got {tag!r}")
    companion = _COMPANION.get(tag)
    if companion is None:
        raise ToolValueError(f"{path}: unknown {TOOL_VALUE_TAG} tag {tag!r}")
    if len(data) != 2 or companion not in data:
        keys = sorted(str(k) for k in data if k != TOOL_VALUE_TAG)
        raise ToolValueError(
            f"{path}: a {tag!r} tool value must have exactly the keys "
            f"{TOOL_VALUE_TAG!r} and {companion!r}, got extra keys {keys}"
        )
    inner = data[companion]
    inner_path = f"{path}.{companion}"
    if tag == _ATTACHMENT:
        try:
            return msgspec.convert(inner, AttachmentRef)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise ToolValueError(f"{inner_path}: invalid attachment reference: {exc}") from exc
    if not isinstance(inner, dict):
        raise ToolValueError(f"{inner_path}: escaped object entries must be an object")
    out: dict[str, Any] = {}
    for key, item in inner.items():
        if not isinstance(key, str):
            raise ToolValueError(f"{inner_path}: object key {key!r} is not a string")
        out[key] = _decode(item, f"{inner_path}.{key}")
    return out


# ---------------------------------------------------------------------------
# model projection


def model_return_parts(output: ToolOutput) -> tuple[ModelReturnPart, ...]:
    """What the model sees for a tool call's output, as text and attachment parts.

    * success with a string: that string as one text part (no part when empty);
    * success with an attachment: one attachment part;
    * any other success: compact JSON (sorted keys) with each attachment split
      out in place, e.g. ``["before",`` · image · ``,"after"]``;
    * failure / cancellation: ``[Tool execution failed]`` (or ``cancelled``),
      then ``\\n{message}`` when there is a message, then any attachments in ``raw``.
    """
    outcome = output.outcome
    parts: list[ModelReturnPart] = []
    if isinstance(outcome, ToolSuccess):
        value = decode_tool_value(outcome.value)
        if isinstance(value, str):
            _push_text(parts, value)
        elif isinstance(value, AttachmentRef):
            parts.append(AttachmentReturn(ref=value))
        else:
            _push_compact(parts, value, "$")
        return tuple(parts)
    parts.append(TextReturn(text=_outcome_text(outcome)))
    parts.extend(AttachmentReturn(ref=ref) for ref in _attachments(decode_tool_value(outcome.raw)))
    return tuple(parts)


def format_tool_output_content(output: ToolOutput) -> str:
    """The output as one string: a success string as-is, other values as compact
    wire-form JSON, otherwise the failure or cancellation text."""
    outcome = output.outcome
    if isinstance(outcome, ToolSuccess):
        if isinstance(outcome.value, str):
            return outcome.value
        return _compact(encode_tool_value(decode_tool_value(outcome.value)))
    return _outcome_text(outcome)


def collect_attachments(output: ToolOutput) -> tuple[AttachmentRef, ...]:
    """Every attachment in the success value, or in a failure's or cancellation's ``raw``."""
    outcome = output.outcome
    raw = outcome.value if isinstance(outcome, ToolSuccess) else outcome.raw
    return tuple(_attachments(decode_tool_value(raw)))


def _outcome_text(outcome: ToolFailure | ToolCancelled) -> str:
    head = FAILED_TEXT if isinstance(outcome, ToolFailure) else CANCELLED_TEXT
    return f"{head}\n{outcome.message}" if outcome.message else head


def _attachments(value: Any) -> list[AttachmentRef]:
    found: list[AttachmentRef] = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list[AttachmentRef]) -> None:
    if isinstance(value, AttachmentRef):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found)
    elif isinstance(value, dict):
        for key in _sorted_keys(value, "$"):
            _collect(value[key], found)


def _push_text(parts: list[ModelReturnPart], text: str) -> None:
    if not text:
        return
    if parts and isinstance(parts[-1], TextReturn):
        parts[-1] = TextReturn(text=parts[-1].text + text)
    else:
        parts.append(TextReturn(text=text))


def _push_compact(parts: list[ModelReturnPart], value: Any, path: str) -> None:
    if isinstance(value, AttachmentRef):
        parts.append(AttachmentReturn(ref=value))
    elif isinstance(value, (list, tuple)):
        _push_text(parts, "[")
        for i, item in enumerate(value):
            if i:
                _push_text(parts, ",")
            _push_compact(parts, item, f"{path}[{i}]")
        _push_text(parts, "]")
    elif isinstance(value, dict):
        _push_text(parts, "{")
        for i, key in enumerate(_sorted_keys(value, path)):
            if i:
                _push_text(parts, ",")
            _push_text(parts, _compact(key) + ":")
            _push_compact(parts, value[key], f"{path}.{key}")
        _push_text(parts, "}")
    else:
        _push_text(parts, _compact(_encode(value, path)))


def _sorted_keys(value: dict[Any, Any], path: str) -> list[str]:
    keys = list(value)
    for key in keys:
        if not isinstance(key, str):
            raise ToolValueError(f"{path}: object key {key!r} is not a string")
    return sorted(keys)


def _compact(value: Any) -> str:
    return msgspec.json.encode(value, order="sorted").decode()
