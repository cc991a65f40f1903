"""Tool-argument validation with standard JSON Schema (draft 2020-12) semantics.

Arguments are checked with ``jsonschema``'s ``Draft202012Validator``; every
error is reported with the path of the offending argument (``arguments`` is the
root, deeper paths read ``arguments.items[2].name``) and a message that shows
the offending value when it is short. Schemas are checked against the 2020-12
metaschema before use, so a broken schema is a :class:`ToolDefinitionError`
rather than a crash in the middle of a call.

``jsonschema`` is imported on first use only: importing the kernel stays cheap.
``format`` is an annotation (the 2020-12 default), not an assertion.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeAlias

import msgspec

from ..errors import KernelError, ToolDefinitionError
from ..jsonvalue import is_json_int

__all__ = [
    "ArgumentError",
    "InvalidToolArguments",
    "check_tool_schema",
    "validate_tool_args",
]

ROOT_PATH = "arguments"
"""How the root of a tool's arguments is written in error paths."""

_CACHE_LIMIT = 256
_MAX_SHOWN_VALUE = 60
_MAX_SHOWN_CHOICES = 200
_MAX_RENDERED_ERRORS = 20
_MAX_LISTED_PROPERTIES = 20
_PathRenderer: TypeAlias = Callable[[Iterable[object]], str]
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Keywords whose value is one subschema, a list of subschemas, or a map of
# name -> subschema. Used to walk a schema without mistaking data for schemas.
_SUBSCHEMA_ONE = (
    "additionalProperties",
    "contains",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SUBSCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAP = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")


class ArgumentError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One problem with a tool call's arguments."""

    path: str
    """Where the problem is: ``arguments``, ``arguments.query``, ``arguments.items[2].name``."""
    message: str
    """What is wrong, in words a model can act on."""
    keyword: str
    """The JSON Schema keyword that failed (``type``, ``maximum``, ``required``, ...)."""


class InvalidToolArguments(KernelError):
    """A tool call's arguments do not match the tool's input schema.

    ``errors`` holds every problem found, sorted by path then keyword; the
    message lists them as ``{path}: {message}`` lines.
    """

    def __init__(self, errors: Iterable[ArgumentError]) -> None:
        unique = {(e.path, e.keyword, e.message): e for e in errors}
        ordered = tuple(unique[key] for key in sorted(unique))
        self.errors: tuple[ArgumentError, ...] = ordered
        lines = [f"{e.path}: {e.message}" for e in ordered[:_MAX_RENDERED_ERRORS]]
        hidden = len(ordered) - _MAX_RENDERED_ERRORS
        if hidden > 0:
            lines.append(f"... and {hidden} more error{'s' if hidden != 1 else ''}")
        super().__init__("\n".join(lines) if lines else "invalid tool arguments")


# ---------------------------------------------------------------------------
# public entry points


def validate_tool_args(schema: dict[str, Any] | bool, args: object) -> None:
    """Check ``args`` against the tool input ``schema``.

    Raises :class:`InvalidToolArguments` listing every problem, or
    :class:`ToolDefinitionError` when the schema itself is invalid.
    """
    if not isinstance(args, dict):
        raise InvalidToolArguments(
            [
                ArgumentError(
                    path=ROOT_PATH,
                    message=f"expected a JSON object, got {_describe(args)}",
                    keyword="type",
                )
            ]
        )
    validator = _compiled(schema)
    try:
        raw_errors = list(validator.iter_errors(args))
    except Exception as exc:  # unresolvable $ref or a broken regex found mid-walk
        if _is_schema_fault(exc):
            raise ToolDefinitionError(f"tool schema cannot be used: {exc}") from exc
        raise
    if raw_errors:
        found: list[ArgumentError] = []
        for error in raw_errors:
            found.extend(_convert(error))
        raise InvalidToolArguments(found)


def check_tool_schema(schema: object, *, tool_name: str | None = None) -> None:
    """Raise :class:`ToolDefinitionError` unless ``schema`` is a valid 2020-12 JSON Schema.

    Besides the metaschema, every local ``$ref`` must resolve (remote
    references are never fetched, so they are rejected too).
    """
    _compiled(schema, tool_name=tool_name)


# ---------------------------------------------------------------------------
# compiled-validator cache

_validators: dict[bytes, Any] = {}
_meta_validators: dict[type[Any], Any] = {}


def _compiled(schema: object, *, tool_name: str | None = None) -> Any:
    where = f"tool {tool_name!r}: " if tool_name else ""
    if not isinstance(schema, (dict, bool)):
        raise ToolDefinitionError(
            f"{where}a JSON Schema must be an object or a boolean, got {_describe(schema)}"
        )
    try:
        key = msgspec.json.encode(schema, order="sorted")
    except (TypeError, ValueError, OverflowError) as exc:
        raise ToolDefinitionError(f"{where}schema is not plain JSON: {exc}") from exc
    validator = _validators.get(key)
    if validator is not None:
        return validator
    validator = _build_validator(schema, where)
    if len(_validators) >= _CACHE_LIMIT:
        _validators.pop(next(iter(_validators)))
    _validators[key] = validator
    return validator


def _build_validator(schema: dict[str, Any] | bool, where: str) -> Any:
    """Check ``schema`` against its dialect's metaschema, then compile it.

    The dialect follows the schema's ``$schema`` (draft 7 tool schemas are
    common); schemas that name none are read as 2020-12.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    meta = _meta_validators.get(cls)
    if meta is None:
        meta = _meta_validators[cls] = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)
    problem = best_match(meta.iter_errors(schema))
    if problem is not None:
        first = min(_convert(problem, _pointer), key=lambda e: (e.path, e.keyword, e.message))
        raise ToolDefinitionError(f"{where}invalid JSON Schema at {first.path}: {first.message}")
    _check_refs(schema, where)
    return cls(_patch_false(schema))


_NOTHING: dict[str, Any] = {"not": {}}


def _patch_false(schema: Any) -> Any:
    """Spell ``false`` property and prefix-item schemas as ``{"not": {}}``.

    The two mean the same, but jsonschema drops the instance path of errors
    raised by a bare ``false`` subschema; the spelled-out form keeps it.
    """
    if not isinstance(schema, dict):
        return schema
    out = map_subschemas(schema, _patch_false)
    for keyword in ("properties", "patternProperties"):
        value = out.get(keyword)
        if isinstance(value, dict):
            out[keyword] = {k: _NOTHING if v is False else v for k, v in value.items()}
    prefix = out.get("prefixItems")
    if isinstance(prefix, list):
        out["prefixItems"] = [_NOTHING if v is False else v for v in prefix]
    return out


def _check_refs(schema: dict[str, Any] | bool, where: str) -> None:
    from jsonschema_specifications import REGISTRY  # type: ignore[import-untyped]
    from referencing import Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = REGISTRY.resolver_with_root(root)
    for location, ref in _iter_refs(schema, ()):
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise ToolDefinitionError(
                f"{where}invalid JSON Schema at {_pointer(location)}: "
                f"$ref {_json(ref)} cannot be resolved"
            ) from exc


def _iter_refs(
    schema: object, location: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (location, ref) for each ``$ref`` in scope of the root's base URI."""
    if not isinstance(schema, dict):
        return
    if location and "$id" in schema:
        return  # a nested resource with its own base URI; jsonschema checks it when used
    ref = schema.get("$ref")
    if isinstance(ref, str):
        yield (*location, "$ref"), ref
    for child_location, child in iter_subschemas(schema, location):
        yield from _iter_refs(child, child_location)


def iter_subschemas(
    schema: dict[str, Any], location: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Yield ``(location, subschema)`` for the direct subschemas of ``schema``."""
    for keyword in _SUBSCHEMA_ONE:
        if keyword in schema:
            yield (*location, keyword), schema[keyword]
    for keyword in _SUBSCHEMA_LIST:
        value = schema.get(keyword)
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield (*location, keyword, index), item
    for keyword in _SUBSCHEMA_MAP:
        value = schema.get(keyword)
        if isinstance(value, dict):
            for name, item in value.items():
                yield (*location, keyword, name), item


def map_subschemas(schema: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """A shallow copy of ``schema`` with ``fn`` applied to each direct subschema."""
    out = dict(schema)
    for keyword in _SUBSCHEMA_ONE:
        if keyword in schema:
            out[keyword] = fn(schema[keyword])
    for keyword in _SUBSCHEMA_LIST:
        value = schema.get(keyword)
        if isinstance(value, list):
            out[keyword] = [fn(item) for item in value]
    for keyword in _SUBSCHEMA_MAP:
        value = schema.get(keyword)
        if isinstance(value, dict):
            out[keyword] = {name: fn(item) for name, item in value.items()}
    return out


def _is_schema_fault(exc: Exception) -> bool:
    from referencing.exceptions import Unresolvable

    return isinstance(exc, (Unresolvable, re.error))


# ---------------------------------------------------------------------------
# turning jsonschema errors into ArgumentErrors


def _convert(error: Any, render: _PathRenderer | None = None) -> list[ArgumentError]:
    render = render or _path
    keyword = error.validator
    base = list(error.absolute_path)
    instance = error.instance
    value = error.validator_value

    if keyword == "required" and isinstance(instance, dict):
        return [
            ArgumentError(
                path=render([*base, name]),
                message="required property is missing",
                keyword="required",
            )
            for name in value
            if isinstance(name, str) and name not in instance
        ]
    if keyword == "dependentRequired" and isinstance(instance, dict):
        out: list[ArgumentError] = []
        for trigger, needed in value.items():
            if trigger not in instance:
                continue
            for name in needed:
                if name not in instance:
                    out.append(
                        ArgumentError(
                            path=render([*base, name]),
                            message=f"required when {_json(trigger)} is present",
                            keyword="dependentRequired",
                        )
                    )
        return out
    if keyword == "additionalProperties" and isinstance(instance, dict):
        extras = _extra_properties(instance, error.schema)
        if extras:
            declared = sorted(error.schema.get("properties") or {})
            hint = ""
            if declared and not error.schema.get("patternProperties"):
                shown = ", ".join(declared[:_MAX_LISTED_PROPERTIES])
                if len(declared) > _MAX_LISTED_PROPERTIES:
                    shown += ", ..."
                hint = f" (expected one of: {shown})"
            return [
                ArgumentError(
                    path=render([*base, name]),
                    message=f"unexpected property{hint}",
                    keyword="additionalProperties",
                )
                for name in extras
            ]
    if keyword is None or (keyword == "not" and value == {}):
        return [
            ArgumentError(path=render(base), message="no value is allowed here", keyword="false")
        ]
    if keyword in ("anyOf", "oneOf") and error.context:
        narrowed = _narrow_alternatives(error, render)
        if narrowed is not None:
            return narrowed
    return [ArgumentError(path=render(base), message=_message(error), keyword=keyword)]


def _narrow_alternatives(error: Any, render: _PathRenderer) -> list[ArgumentError] | None:
    """Explain a failed anyOf/oneOf by the one branch that nearly matched, if there is one."""
    branches: dict[int, list[Any]] = {}
    for sub in error.context:
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(branch, []).append(sub)
    applicable = {
        index: subs
        for index, subs in branches.items()
        if not all(sub.validator == "type" and not sub.relative_path for sub in subs)
    }
    if len(applicable) == 1:
        (subs,) = applicable.values()
        out: list[ArgumentError] = []
        for sub in subs:
            out.extend(_convert(sub, render))
        return out
    if not applicable:
        types: list[str] = []
        for index in sorted(branches):
            for sub in branches[index]:
                for name in _as_list(sub.validator_value):
                    if name not in types:
                        types.append(name)
        return [
            ArgumentError(
                path=render(list(error.absolute_path)),
                message=f"{_show(error.instance)} is not of type {' or '.join(types)}",
                keyword=error.validator,
            )
        ]
    return None


def _extra_properties(instance: dict[str, Any], schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    declared = schema.get("properties") or {}
    patterns = list((schema.get("patternProperties") or {}).keys())
    extras = []
    for name in instance:
        if name in declared:
            continue
        if any(re.search(pattern, name) for pattern in patterns):
            continue
        extras.append(name)
    return sorted(extras)


def _message(error: Any) -> str:
    """A readable message for one jsonschema error, values shown as JSON."""
    keyword = error.validator
    value = error.validator_value
    instance = error.instance
    shown = _show(instance)
    match keyword:
        case "type":
            return f"{shown} is not of type {' or '.join(_as_list(value))}"
        case "enum":
            return f"{shown} is not one of {_show_choices(value)}"
        case "const":
            return f"expected {_show(value)}, got {shown}"
        case "minimum":
            return f"{shown} is less than the minimum of {_json(value)}"
        case "maximum":
            return f"{shown} is greater than the maximum of {_json(value)}"
        case "exclusiveMinimum":
            return f"{shown} is less than or equal to the exclusive minimum of {_json(value)}"
        case "exclusiveMaximum":
            return f"{shown} is greater than or equal to the exclusive maximum of {_json(value)}"
        case "multipleOf":
            return f"{shown} is not a multiple of {_json(value)}"
        case "minLength":
            return f"{shown} is too short (minimum length {_json(value)})"
        case "maxLength":
            return f"{shown} is too long (maximum length {_json(value)})"
        case "pattern":
            return f"{shown} does not match the pattern {_json(value)}"
        case "format":
            return f"{shown} is not a valid {value}"
        case "minItems":
            return f"expected at least {_json(value)} items, got {_count(instance)}"
        case "maxItems":
            return f"expected at most {_json(value)} items, got {_count(instance)}"
        case "uniqueItems":
            return "array items must be unique"
        case "minProperties":
            return f"expected at least {_json(value)} properties, got {_count(instance)}"
        case "maxProperties":
            return f"expected at most {_json(value)} properties, got {_count(instance)}"
        case "anyOf":
            return f"{shown} does not match any of the allowed schemas"
        case "oneOf":
            if error.context:
                return f"{shown} does not match any of the allowed schemas"
            return f"{shown} matches more than one of the allowed schemas"
        case "not":
            return f"{shown} matches a schema it must not match"
        case "contains":
            return "no array item matches the required schema"
        case _:
            return str(error.message)


# ---------------------------------------------------------------------------
# small rendering helpers


def _path(parts: Iterable[object]) -> str:
    out = ROOT_PATH
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += f"[{_json(str(part))}]"
    return out


def _pointer(parts: Iterable[object]) -> str:
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    return "#" + "".join(f"/{p}" for p in escaped)


def _as_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _json(value: object) -> str:
    try:
        return msgspec.json.encode(value, order="sorted").decode()
    except (TypeError, ValueError, OverflowError):
        return repr(value)


def _show(value: object) -> str:
    """The value as JSON when short, otherwise a short description of it."""
    text = _json(value)
    if len(text) <= _MAX_SHOWN_VALUE:
        return text
    return _describe(value)


def _show_choices(values: object) -> str:
    """An enum's values as a JSON-like list, cut short when long."""
    if not isinstance(values, list):
        return _show(values)
    shown: list[str] = []
    length = 0
    for value in values:
        text = _json(value)
        if shown and length + len(text) > _MAX_SHOWN_CHOICES:
            shown.append("...")
            break
        shown.append(text)
        length += len(text) + 2
    return "[" + ", ".join(shown) + "]"


def _count(value: object) -> int:
    return len(value) if isinstance(value, (list, dict, str)) else 0


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if is_json_int(value):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {_plural(len(value), 'character')}"
    if isinstance(value, list):
        return f"an array of {_plural(len(value), 'item')}"
    if isinstance(value, dict):
        return f"an object with {_plural(len(value), 'property', 'properties')}"
    return f"a {type(value).__name__}"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
