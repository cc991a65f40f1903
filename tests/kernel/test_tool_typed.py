"""Typed tool definitions from functions and pydantic models.

No ``from __future__ import annotations`` here: several tools are defined inside
test functions, and their hints must be real objects, as in most user code.
"""

import datetime as dt
from enum import Enum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lash.kernel.errors import ToolDefinitionError
from lash.kernel.tools.definition import (
    AgentSurface,
    Availability,
    IdempotentRetry,
    NeverRetry,
    Scheduling,
    ToolDefinition,
)
from lash.kernel.tools.docs import compact_contract, parameter_metadata
from lash.kernel.tools.output import ToolOutput
from lash.kernel.tools.typed import (
    TypedTool,
    tool_definition_from_function,
    tool_definition_from_models,
)
from lash.kernel.tools.validation import ArgumentError, InvalidToolArguments, check_tool_schema


class Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


class Output(BaseModel):
    answer: str
    confidence: Annotated[float, Field(ge=0)]


class Author(BaseModel):
    """Someone who wrote something."""

    name: str
    title: str = "Dr"


def demo(
    query: str,
    page_limit: Annotated[int, Field(le=20)],
    tags: Annotated[list[str], Field(min_length=1, max_length=3)],
    mode: Mode | None = None,
) -> Output:
    """Search the demo index.

    Finds things.

    Args:
        query: What to look for.
        page_limit (int): How many results,
            at most 20.
        mode: Search mode.

    Returns:
        The best answer.
    """
    raise NotImplementedError


# --- port of the reference test -------------------------------------------------------


def test_typed_tool_definition_generates_input_and_output_schema() -> None:
    tool = tool_definition_from_function(demo)
    metadata = {p["name"]: p for p in parameter_metadata(tool.definition.input_schema)}

    assert metadata["page_limit"]["type"] == "int"
    assert metadata["page_limit"]["maximum"] == 20
    assert metadata["tags"]["type"] == "list[str]"
    assert metadata["tags"]["min_items"] == 1
    assert metadata["tags"]["max_items"] == 3
    assert metadata["mode"]["nullable"] is True
    output = tool.definition.output_schema
    assert output["properties"]["answer"]["type"] == "string"
    assert output["properties"]["confidence"]["minimum"] == 0


# --- schemas from a function ------------------------------------------------------------


def test_function_input_schema_is_a_closed_compact_object() -> None:
    tool = tool_definition_from_function(demo)

    assert tool.definition.input_schema == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "page_limit": {
                "type": "integer",
                "maximum": 20,
                "description": "How many results, at most 20.",
            },
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": 3,
            },
            "mode": {
                "anyOf": [{"$ref": "#/$defs/Mode"}, {"type": "null"}],
                "default": None,
                "description": "Search mode.",
            },
        },
        "required": ["query", "page_limit", "tags"],
        "additionalProperties": False,
        "$defs": {"Mode": {"type": "string", "enum": ["fast", "slow"]}},
    }
    assert list(tool.definition.input_schema) == [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "$defs",
    ]
    check_tool_schema(tool.definition.input_schema)


def test_function_description_drops_the_args_section() -> None:
    tool = tool_definition_from_function(demo)

    assert tool.definition.name == "demo"
    assert tool.definition.description == (
        "Search the demo index.\n\nFinds things.\n\nReturns:\n    The best answer."
    )


def test_function_output_schema_has_no_titles() -> None:
    tool = tool_definition_from_function(demo)

    assert tool.definition.output_schema == {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0},
        },
        "required": ["answer", "confidence"],
    }


def test_compact_docs_of_a_typed_tool() -> None:
    tool = tool_definition_from_function(demo)

    assert compact_contract(tool.definition).render_signature() == (
        "await tools.demo({ query: str, page_limit: int <= 20, "
        "tags: list[str] min_items 1 max_items 3, "
        'mode?: enum["fast", "slow"] | null = null })? '
        "-> record{answer: str, confidence: float}\n"
        "Parameters:\n"
        "- `query: str` — What to look for.\n"
        "- `page_limit: int <= 20` — How many results, at most 20.\n"
        "- `tags: list[str] min_items 1 max_items 3`\n"
        '- `mode?: enum["fast", "slow"] | null = null` — Search mode.\n'
        "Return fields:\n"
        "- `answer: str`\n"
        "- `confidence: float >= 0`"
    )


def test_nested_models_stay_in_defs_and_property_named_title_is_kept() -> None:
    def cite(author: Author, authors: list[Author] | None = None) -> None:
        """Cite an author."""

    tool = tool_definition_from_function(cite)
    schema = tool.definition.input_schema

    assert schema["properties"]["author"] == {"$ref": "#/$defs/Author"}
    assert schema["$defs"]["Author"] == {
        "type": "object",
        "description": "Someone who wrote something.",
        "properties": {
            "name": {"type": "string"},
            "title": {"type": "string", "default": "Dr"},
        },
        "required": ["name"],
    }
    assert tool.definition.output_schema is None
    assert tool.definition.description == "Cite an author."


def test_description_field_metadata_wins_over_the_docstring() -> None:
    def f(x: Annotated[int, Field(description="from Field")]) -> None:
        """Do it.

        Args:
            x: from docstring
        """

    tool = tool_definition_from_function(f)

    assert tool.definition.input_schema["properties"]["x"]["description"] == "from Field"
    assert tool.definition.description == "Do it."


def test_async_functions_and_options() -> None:
    async def fetch(url: str, timeout: float = 5.0) -> str:
        return url

    tool = tool_definition_from_function(
        fetch,
        name="web_fetch",
        description="Fetch a page.",
        availability=Availability.CALLABLE,
        scheduling=Scheduling.SERIAL,
        retry_policy=IdempotentRetry(max_attempts=2),
        surface=AgentSurface(module_path=("web",), operation="fetch"),
        examples=("await web.fetch({ url: 'x' })?",),
    )

    definition = tool.definition
    assert definition.name == "web_fetch"
    assert definition.description == "Fetch a page."
    assert definition.availability is Availability.CALLABLE
    assert definition.scheduling is Scheduling.SERIAL
    assert definition.retry_policy == IdempotentRetry(max_attempts=2)
    assert definition.call_path == "web.fetch"
    assert definition.examples == ("await web.fetch({ url: 'x' })?",)
    assert definition.output_schema == {"type": "string"}
    assert definition.input_schema["properties"]["timeout"] == {"type": "number", "default": 5.0}
    assert definition.input_schema["required"] == ["url"]
    assert tool.function is fetch
    assert tool.name == "web_fetch"


def test_defaults_and_no_parameters() -> None:
    def ping() -> None:
        pass

    tool = tool_definition_from_function(ping)

    assert tool.definition == ToolDefinition(
        name="ping",
        input_schema={
            "type": "object",
            "properties": {},
            "required": [],
            "additionalProperties": False,
        },
    )
    assert tool.definition.retry_policy == NeverRetry()
    assert tool.parse_args({}) == {}


def test_field_defaults_in_the_signature() -> None:
    def page(
        size: int = Field(5, ge=1, le=9, description="Page size."),
        tags: list[str] = [],  # noqa: B006
    ) -> None:
        pass

    tool = tool_definition_from_function(page)

    assert tool.definition.input_schema["properties"] == {
        "size": {
            "type": "integer",
            "default": 5,
            "minimum": 1,
            "maximum": 9,
            "description": "Page size.",
        },
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
    }
    assert tool.definition.input_schema["required"] == []
    assert tool.parse_args({}) == {"size": 5, "tags": []}
    with pytest.raises(InvalidToolArguments, match=r"^arguments.size: 10 is greater than"):
        tool.parse_args({"size": 10})


def test_tool_output_return_annotation_has_no_output_schema() -> None:
    def raw() -> ToolOutput:
        raise NotImplementedError

    assert tool_definition_from_function(raw).definition.output_schema is None


def test_parameter_names_that_shadow_model_attributes_work() -> None:
    def odd(json: str, model_config: int, schema: bool = False) -> None:
        pass

    tool = tool_definition_from_function(odd)

    assert list(tool.definition.input_schema["properties"]) == ["json", "model_config", "schema"]
    assert tool.parse_args({"json": "j", "model_config": 2}) == {
        "json": "j",
        "model_config": 2,
        "schema": False,
    }


# --- parse_args -------------------------------------------------------------------------


def test_parse_args_converts_values_for_the_call() -> None:
    def plan(when: dt.date, mode: Mode, who: Author, ids: tuple[int, int]) -> None:
        pass

    tool = tool_definition_from_function(plan)

    values = tool.parse_args(
        {"when": "2024-05-01", "mode": "slow", "who": {"name": "Ada"}, "ids": [1, 2]}
    )

    assert values == {
        "when": dt.date(2024, 5, 1),
        "mode": Mode.SLOW,
        "who": Author(name="Ada"),
        "ids": (1, 2),
    }


def test_parse_args_fills_defaults() -> None:
    tool = tool_definition_from_function(demo)

    assert tool.parse_args({"query": "q", "page_limit": 3, "tags": ["a"]}) == {
        "query": "q",
        "page_limit": 3,
        "tags": ["a"],
        "mode": None,
    }


def test_parse_args_rejects_bool_as_integer() -> None:
    tool = tool_definition_from_function(demo)

    with pytest.raises(InvalidToolArguments) as info:
        tool.parse_args({"query": "q", "page_limit": True, "tags": ["a"]})

    assert str(info.value) == "arguments.page_limit: true is not of type integer"


def test_parse_args_reports_every_problem_with_paths() -> None:
    tool = tool_definition_from_function(demo)

    with pytest.raises(InvalidToolArguments) as info:
        tool.parse_args({"page_limit": 100, "tags": [], "mode": "medium", "extra": 1})

    assert str(info.value).splitlines() == [
        "arguments.extra: unexpected property (expected one of: mode, page_limit, query, tags)",
        'arguments.mode: "medium" is not one of ["fast", "slow"]',
        "arguments.page_limit: 100 is greater than the maximum of 20",
        "arguments.query: required property is missing",
        "arguments.tags: expected at least 1 items, got 0",
    ]


def test_parse_args_reports_pydantic_only_checks_with_paths() -> None:
    class Item(BaseModel):
        sku: str

        @field_validator("sku")
        @classmethod
        def upper(cls, value: str) -> str:
            if value != value.upper():
                raise ValueError("must be upper case")
            return value

    def order(items: list[Item]) -> None:
        pass

    tool = tool_definition_from_function(order)

    with pytest.raises(InvalidToolArguments) as info:
        tool.parse_args({"items": [{"sku": "AB"}, {"sku": "cd"}]})

    assert info.value.errors == (
        ArgumentError(
            path="arguments.items[1].sku",
            message='Value error, must be upper case, got "cd"',
            keyword="value_error",
        ),
    )


def test_parse_args_rejects_non_objects() -> None:
    tool = tool_definition_from_function(demo)

    with pytest.raises(InvalidToolArguments) as info:
        tool.parse_args(["q"])  # type: ignore[arg-type]

    assert str(info.value) == "arguments: expected a JSON object, got an array of 1 item"


# --- bad definitions --------------------------------------------------------------------


def test_var_args_are_rejected() -> None:
    def many(*items: int) -> None:
        pass

    def named(**options: str) -> None:
        pass

    with pytest.raises(ToolDefinitionError) as info:
        tool_definition_from_function(many)
    assert str(info.value) == "tool 'many': *items is not supported; declare each argument"
    with pytest.raises(ToolDefinitionError) as info:
        tool_definition_from_function(named)
    assert str(info.value) == "tool 'named': **options is not supported; declare each argument"


def test_positional_only_parameters_are_rejected() -> None:
    def f(a: int, /) -> None:
        pass

    with pytest.raises(ToolDefinitionError, match="parameter 'a' is positional-only"):
        tool_definition_from_function(f)


def test_missing_annotation_names_the_parameter() -> None:
    def f(a: int, b) -> None:  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(ToolDefinitionError) as info:
        tool_definition_from_function(f)

    assert str(info.value) == "tool 'f': parameter 'b' has no type annotation"


def test_unsupported_annotation_names_the_parameter() -> None:
    class Opaque:
        pass

    def f(a: int, thing: Opaque) -> None:
        pass

    with pytest.raises(ToolDefinitionError, match=r"^tool 'f': cannot build an input schema: "):
        tool_definition_from_function(f)
    with pytest.raises(ToolDefinitionError, match="parameter 'thing'"):
        tool_definition_from_function(f)


def test_unsupported_return_annotation_is_a_definition_error() -> None:
    class Opaque:
        pass

    def f() -> Opaque:
        raise NotImplementedError

    with pytest.raises(ToolDefinitionError, match=r"^tool 'f': cannot build an output schema"):
        tool_definition_from_function(f)


def test_unresolvable_forward_reference_is_a_definition_error() -> None:
    def f(a: "DoesNotExist") -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(ToolDefinitionError, match=r"^tool 'f': cannot resolve type hints"):
        tool_definition_from_function(f)


def test_blank_name_is_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError, match="tool name '  ' must be 1-64 characters"):
        tool_definition_from_function(demo, name="  ")


# --- from models ------------------------------------------------------------------------


class SearchArgs(BaseModel):
    """Search the catalog."""

    query: str = Field(description="Text to find.")
    limit: int = Field(5, ge=1, le=50)
    kind: Literal["book", "film"] | None = None


class OpenArgs(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str


def test_tool_definition_from_models() -> None:
    tool = tool_definition_from_models("search", SearchArgs, list[Author])

    assert isinstance(tool, TypedTool)
    assert tool.function is None
    assert tool.definition.description == "Search the catalog."
    assert tool.definition.input_schema == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Text to find."},
            "limit": {"type": "integer", "default": 5, "minimum": 1, "maximum": 50},
            "kind": {
                "anyOf": [{"type": "string", "enum": ["book", "film"]}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    assert tool.definition.output_schema == {
        "type": "array",
        "items": {"$ref": "#/$defs/Author"},
        "$defs": {
            "Author": {
                "type": "object",
                "description": "Someone who wrote something.",
                "properties": {
                    "name": {"type": "string"},
                    "title": {"type": "string", "default": "Dr"},
                },
                "required": ["name"],
            }
        },
    }
    assert tool.parse_args({"query": "dune", "kind": "book"}) == {
        "query": "dune",
        "limit": 5,
        "kind": "book",
    }
    with pytest.raises(InvalidToolArguments) as info:
        tool.parse_args({"query": "dune", "limit": 0, "typo": 1})
    assert str(info.value).splitlines() == [
        "arguments.limit: 0 is less than the minimum of 1",
        "arguments.typo: unexpected property (expected one of: kind, limit, query)",
    ]


def test_models_that_allow_extra_keep_their_extras() -> None:
    tool = tool_definition_from_models("open", OpenArgs, description="Open a file.")

    assert tool.definition.input_schema["additionalProperties"] is True
    assert tool.definition.output_schema is None
    assert tool.parse_args({"path": "a", "mode": "r"}) == {"path": "a", "mode": "r"}


def test_from_models_requires_a_model() -> None:
    with pytest.raises(ToolDefinitionError, match="must be a pydantic BaseModel subclass"):
        tool_definition_from_models("x", dict)  # type: ignore[arg-type]


def test_typed_tool_is_immutable() -> None:
    tool = tool_definition_from_function(demo)

    with pytest.raises(AttributeError):
        tool.definition = tool.definition  # type: ignore[misc]
    assert repr(tool) == "TypedTool('demo')"
