"""Typed tool definitions: schemas from Python signatures or pydantic models.

``tool_definition_from_function`` reads a function's type hints and docstring
and returns a :class:`TypedTool`: the :class:`ToolDefinition` the model sees
plus ``parse_args``, which checks a call's JSON arguments against the input
schema and turns them into the Python values to call the function with
(``convert_args`` does only the second step, for arguments already checked).
Nothing here runs the function, so plain and ``async`` functions are alike.

pydantic is imported on first use only.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from ..errors import ToolDefinitionError
from .definition import (
    AgentSurface,
    Availability,
    NeverRetry,
    RetryPolicy,
    Scheduling,
    ToolDefinition,
)
from .output import ToolOutput
from .validation import (
    ROOT_PATH,
    ArgumentError,
    InvalidToolArguments,
    map_subschemas,
    validate_tool_args,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "TypedTool",
    "tool_definition_from_function",
    "tool_definition_from_models",
]

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
_ARG_LINE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# pydantic error types -> the JSON Schema keyword they correspond to
_PYDANTIC_KEYWORDS = {
    "missing": "required",
    "extra_forbidden": "additionalProperties",
    "greater_than": "exclusiveMinimum",
    "greater_than_equal": "minimum",
    "less_than": "exclusiveMaximum",
    "less_than_equal": "maximum",
    "multiple_of": "multipleOf",
    "string_too_short": "minLength",
    "string_too_long": "maxLength",
    "string_pattern_mismatch": "pattern",
    "too_short": "minItems",
    "too_long": "maxItems",
    "enum": "enum",
    "literal_error": "enum",
}


class TypedTool:
    """A tool definition generated from Python types, with an argument parser.

    ``definition`` is what the model and the runtime see; ``parse_args`` turns a
    call's JSON arguments into the keyword arguments of ``function`` (or, for a
    model-defined tool, a mapping of the model's field names to values).
    """

    __slots__ = ("_fields", "_model", "definition", "function")

    definition: ToolDefinition
    function: Callable[..., Any] | None
    _model: type[BaseModel]
    _fields: tuple[tuple[str, str], ...]

    def __init__(
        self,
        definition: ToolDefinition,
        model: type[BaseModel],
        fields: tuple[tuple[str, str], ...],
        function: Callable[..., Any] | None = None,
    ) -> None:
        object.__setattr__(self, "definition", definition)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_fields", fields)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"TypedTool({self.definition.name!r})"

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.definition.name

    def parse_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``args`` and convert them into Python values, keyed by parameter name.

        The arguments are first checked against the input schema with standard
        JSON Schema semantics (so ``true`` is never an integer), then converted
        by pydantic (nested models, enums, dates, ...). Raises
        :class:`InvalidToolArguments` with argument paths on failure.
        """
        validate_tool_args(self.definition.input_schema, args)
        return self.convert_args(args)

    def convert_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Convert arguments that already passed the input schema, as ``parse_args`` does.

        Only the pydantic conversion runs (the runtime checks the schema once,
        before any attempt). Raises :class:`InvalidToolArguments` if pydantic
        still refuses them.
        """
        from pydantic import ValidationError

        try:
            instance = self._model.model_validate(args)
        except ValidationError as exc:
            raise InvalidToolArguments(_pydantic_errors(exc)) from None
        values = {param: getattr(instance, attr) for param, attr in self._fields}
        extra = instance.model_extra
        if extra:
            values.update(extra)
        return values


# ---------------------------------------------------------------------------
# from a function


def tool_definition_from_function(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    availability: Availability = Availability.SHOWCASED,
    scheduling: Scheduling = Scheduling.PARALLEL,
    retry_policy: RetryPolicy | None = None,
    surface: AgentSurface | None = None,
    examples: tuple[str, ...] = (),
    skip: Collection[str] = (),
) -> TypedTool:
    """Build a :class:`TypedTool` from a function's signature, type hints and docstring.

    Parameters named in ``skip`` (values the runtime injects, such as a tool
    context) are left out of the schema and of ``parse_args``.

    Every parameter needs a type annotation; parameters without a default are
    required; ``*args``, ``**kwargs`` and positional-only parameters are
    rejected. The input schema is a closed object (``additionalProperties:
    false``) without pydantic's ``title`` keys; nested models stay in
    ``$defs``. The description is the docstring with its Google-style
    ``Args:`` section moved into the parameters' descriptions. The output
    schema comes from the return annotation (none for ``None`` or no annotation).
    Raises :class:`ToolDefinitionError` when any of this cannot be done.
    """
    tool_name: str = name or str(getattr(fn, "__name__", ""))
    where = f"tool {tool_name!r}"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"{where}: cannot read the signature: {exc}") from exc
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolvable forward references and the like
        raise ToolDefinitionError(f"{where}: cannot resolve type hints: {exc}") from exc

    import pydantic
    import pydantic.fields

    fields: dict[str, Any] = {}
    mapping: list[tuple[str, str]] = []
    for index, param in enumerate(signature.parameters.values()):
        if param.name in skip:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"{where}: {star}{param.name} is not supported; declare each argument"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(
                f"{where}: parameter {param.name!r} is positional-only; "
                "tool arguments are passed by name"
            )
        if param.name not in hints:
            raise ToolDefinitionError(f"{where}: parameter {param.name!r} has no type annotation")
        attr = f"p{index}"  # never clashes with BaseModel attributes; the alias is the name
        hint = hints[param.name]
        if isinstance(param.default, pydantic.fields.FieldInfo):  # x: int = Field(5, le=9)
            fields[attr] = (Annotated[hint, param.default], pydantic.Field(alias=param.name))
        else:
            default = ... if param.default is param.empty else param.default
            fields[attr] = (hint, pydantic.Field(default, alias=param.name))
        mapping.append((param.name, attr))

    try:
        model = pydantic.create_model(
            f"{tool_name or 'tool'}_args",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )
        raw_schema = model.model_json_schema(by_alias=True, mode="validation")
    except Exception as exc:
        raise ToolDefinitionError(
            f"{where}: cannot build an input schema: {_offending_parameter(hints, mapping, exc)}"
        ) from exc

    summary, arg_docs = _split_docstring(inspect.getdoc(fn) or "")
    input_schema = _object_schema(raw_schema, close=True)
    properties = input_schema["properties"]
    for param_name, text in arg_docs.items():
        prop = properties.get(param_name)
        if isinstance(prop, dict) and "description" not in prop:
            prop["description"] = text

    return_hint = hints.get("return", None)
    output_schema = _output_schema(return_hint, where)
    definition = _definition(
        where,
        name=tool_name,
        description=summary if description is None else description,
        input_schema=input_schema,
        output_schema=output_schema,
        availability=availability,
        scheduling=scheduling,
        retry_policy=retry_policy,
        surface=surface,
        examples=examples,
    )
    return TypedTool(definition, model, tuple(mapping), fn)


# ---------------------------------------------------------------------------
# from models


def tool_definition_from_models(
    name: str,
    args_model: type[BaseModel],
    output_type: Any = None,
    *,
    description: str | None = None,
    availability: Availability = Availability.SHOWCASED,
    scheduling: Scheduling = Scheduling.PARALLEL,
    retry_policy: RetryPolicy | None = None,
    surface: AgentSurface | None = None,
    examples: tuple[str, ...] = (),
) -> TypedTool:
    """Build a :class:`TypedTool` whose arguments are the fields of a pydantic model.

    The input schema is the model's (titles removed). Unless the model sets
    ``extra="allow"``, unknown arguments are rejected. ``output_type`` is any
    type pydantic can describe; ``None`` means no output schema. The
    description defaults to the model's docstring. ``parse_args`` returns the
    validated field values keyed by field name.
    """
    import pydantic

    where = f"tool {name!r}"
    if not (isinstance(args_model, type) and issubclass(args_model, pydantic.BaseModel)):
        raise ToolDefinitionError(f"{where}: args_model must be a pydantic BaseModel subclass")
    try:
        raw_schema = args_model.model_json_schema(by_alias=True, mode="validation")
    except Exception as exc:
        raise ToolDefinitionError(f"{where}: cannot build an input schema: {exc}") from exc
    doc = inspect.cleandoc(args_model.__doc__) if args_model.__doc__ else ""
    tool_description = doc if description is None else description
    extra = args_model.model_config.get("extra")
    input_schema = _object_schema(raw_schema, close=extra not in ("allow",))
    if input_schema.get("description") == tool_description:
        del input_schema["description"]
    definition = _definition(
        where,
        name=name,
        description=tool_description,
        input_schema=input_schema,
        output_schema=_output_schema(output_type, where),
        availability=availability,
        scheduling=scheduling,
        retry_policy=retry_policy,
        surface=surface,
        examples=examples,
    )
    fields = tuple((field, field) for field in args_model.model_fields)
    return TypedTool(definition, args_model, fields)


# ---------------------------------------------------------------------------
# helpers


def _definition(
    where: str,
    *,
    name: str,
    description: str,
    input_schema: dict[str, Any],
    output_schema: Any,
    availability: Availability,
    scheduling: Scheduling,
    retry_policy: RetryPolicy | None,
    surface: AgentSurface | None,
    examples: tuple[str, ...],
) -> ToolDefinition:
    try:
        return ToolDefinition(
            name=name,
            description=description,
            input_schema=input_schema,
            output_schema=output_schema,
            availability=availability,
            scheduling=scheduling,
            retry_policy=retry_policy if retry_policy is not None else NeverRetry(),
            surface=surface if surface is not None else AgentSurface(),
            examples=tuple(examples),
        )
    except ValueError as exc:
        raise ToolDefinitionError(f"{where}: {exc}") from exc


def _object_schema(raw: dict[str, Any], *, close: bool) -> dict[str, Any]:
    """A top-level object schema in a fixed key order, without titles."""
    schema = strip_titles(raw)
    out: dict[str, Any] = {
        "type": "object",
        "properties": schema.pop("properties", {}),
        "required": schema.pop("required", []),
    }
    schema.pop("type", None)
    if close:
        schema.pop("additionalProperties", None)
        out["additionalProperties"] = False
    elif "additionalProperties" in schema:
        out["additionalProperties"] = schema.pop("additionalProperties")
    out.update(schema)
    return out


def _output_schema(hint: Any, where: str) -> Any:
    if hint is None or hint is type(None) or hint is ToolOutput:
        return None
    import pydantic

    try:
        schema = pydantic.TypeAdapter(hint).json_schema(mode="serialization")
    except Exception as exc:
        raise ToolDefinitionError(
            f"{where}: cannot build an output schema for {hint!r}: {exc}"
        ) from exc
    return strip_titles(schema)


def strip_titles(schema: Any) -> Any:
    """A copy of a JSON Schema without ``title`` keywords (a property *named* title is kept)."""
    if not isinstance(schema, dict):
        return schema
    out = map_subschemas(schema, strip_titles)
    if isinstance(out.get("title"), str):
        del out["title"]
    return out


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a cleaned docstring into (description without ``Args:``, {param: description})."""
    lines = doc.splitlines()
    kept: list[str] = []
    params: dict[str, str] = {}
    i = 0
    while i < len(lines):
        if not _ARGS_HEADER.match(lines[i]):
            kept.append(lines[i])
            i += 1
            continue
        i += 1
        current: str | None = None
        base_indent: int | None = None
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                # a blank line ends the section unless more indented entries follow
                nxt = next((ln for ln in lines[i + 1 :] if ln.strip()), "")
                if not nxt.startswith((" ", "\t")):
                    break
                i += 1
                continue
            indent = len(line) - len(line.lstrip())
            if indent == 0:
                break
            if base_indent is None:
                base_indent = indent
            match = _ARG_LINE.match(line.strip())
            if indent <= base_indent and match:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
            i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        if kept and kept[-1].strip() and i < len(lines):
            kept.append("")
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept), {k: v for k, v in params.items() if v}


def _pydantic_errors(exc: Any) -> list[ArgumentError]:
    out = []
    for error in exc.errors(include_url=False):
        path = ROOT_PATH
        for part in error.get("loc", ()):
            if isinstance(part, int):
                path += f"[{part}]"
            elif _IDENTIFIER.match(str(part)):
                path += f".{part}"
            else:
                path += f"[{_quote(str(part))}]"
        kind = str(error.get("type", "value_error"))
        keyword = _PYDANTIC_KEYWORDS.get(kind, kind)
        if kind == "missing":
            message = "required property is missing"
        elif kind == "extra_forbidden":
            message = "unexpected property"
        else:
            message = str(error.get("msg", "invalid value"))
            shown = _short(error.get("input"))
            if shown is not None:
                message += f", got {shown}"
        out.append(ArgumentError(path=path, message=message, keyword=keyword))
    return out


def _short(value: Any) -> str | None:
    try:
        text = msgspec.json.encode(value, order="sorted").decode()
    except (TypeError, ValueError, OverflowError):
        return None
    return text if len(text) <= 60 else None


def _quote(text: str) -> str:
    return msgspec.json.encode(text).decode()


def _offending_parameter(
    hints: Mapping[str, Any], mapping: list[tuple[str, str]], exc: Exception
) -> str:
    """Name the first parameter whose annotation pydantic cannot handle, if there is one."""
    import pydantic

    for param, _attr in mapping:
        try:
            pydantic.TypeAdapter(hints[param]).json_schema()
        except Exception as inner:
            return f"parameter {param!r} ({hints[param]!r}): {inner}"
    return str(exc)
