"""JSON value helpers with strict JSON semantics.

Python treats ``True == 1 == 1.0``; JSON does not. These helpers compare and
classify values the way a JSON document would.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonValue: TypeAlias = Any
"""A JSON value: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` or ``dict[str, ...]``."""

JsonObject: TypeAlias = dict[str, Any]


def json_type_name(value: object) -> str:
    """Return the JSON type name of ``value`` (``integer`` for whole ints, never for bools)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_json_int(value: object) -> bool:
    """True for ``int`` values that are not ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def strict_json_eq(a: object, b: object) -> bool:
    """Equality that keeps booleans, integers and strings apart as JSON does.

    ``1`` and ``1.0`` are equal (both JSON numbers); ``True`` and ``1`` are not.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(strict_json_eq(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(strict_json_eq(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
