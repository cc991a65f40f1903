"""Tool-argument validation: standard JSON Schema 2020-12 semantics, path-bearing errors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from lash.kernel.errors import KernelError, ToolDefinitionError
from lash.kernel.tools import validation
from lash.kernel.tools.validation import (
    ArgumentError,
    InvalidToolArguments,
    check_tool_schema,
    validate_tool_args,
)


def errors_of(schema: dict[str, Any], args: object) -> list[str]:
    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(schema, args)
    return str(info.value).splitlines()


# --- ports of the reference tests (adapted to standard semantics) --------------------


def test_validation_reports_missing_required_property_by_path() -> None:
    schema = {
        "type": "object",
        "properties": {"access_token": {"type": "string"}},
        "required": ["access_token"],
        "additionalProperties": False,
    }

    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(schema, {})

    assert str(info.value) == "arguments.access_token: required property is missing"
    assert info.value.errors == (
        ArgumentError(
            path="arguments.access_token",
            message="required property is missing",
            keyword="required",
        ),
    )


def test_validation_reports_numeric_limits_by_path() -> None:
    schema = {
        "type": "object",
        "properties": {"page_limit": {"type": "integer", "maximum": 20}},
        "required": ["page_limit"],
        "additionalProperties": False,
    }

    assert errors_of(schema, {"page_limit": 100}) == [
        "arguments.page_limit: 100 is greater than the maximum of 20"
    ]


def test_validation_allows_unknown_property_when_additional_properties_is_omitted() -> None:
    # Standard semantics: an omitted additionalProperties allows anything (the reference
    # closed such objects by default).
    schema = {
        "type": "object",
        "properties": {
            "min_created_at": {"type": "string"},
            "max_created_at": {"type": "string"},
            "limit": {"type": "integer", "maximum": 100},
        },
        "required": ["limit"],
    }

    validate_tool_args(schema, {"min_datetime": "2024-01-01T00:00:00Z", "limit": 20})


def test_validation_rejects_unknown_property_when_additional_properties_is_false() -> None:
    schema = {
        "type": "object",
        "properties": {
            "min_created_at": {"type": "string"},
            "max_created_at": {"type": "string"},
            "limit": {"type": "integer", "maximum": 100},
        },
        "required": ["limit"],
        "additionalProperties": False,
    }

    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(schema, {"min_datetime": "2024-01-01T00:00:00Z", "limit": 20})

    assert str(info.value) == (
        "arguments.min_datetime: unexpected property "
        "(expected one of: limit, max_created_at, min_created_at)"
    )
    assert info.value.errors[0].keyword == "additionalProperties"


def test_validation_allows_unknown_property_when_additional_properties_is_true() -> None:
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "additionalProperties": True,
    }

    validate_tool_args(schema, {"path": "README.md", "unknown": "preserved"})


def test_validation_preserves_internal_session_id_argument() -> None:
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}

    validate_tool_args(schema, {"query": "hello", "__session_id__": "session"})


# --- standard semantics ---------------------------------------------------------------


def test_bool_is_not_an_integer_or_a_number() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "x": {"type": "number"}},
    }

    assert errors_of(schema, {"n": True, "x": False}) == [
        "arguments.n: true is not of type integer",
        "arguments.x: false is not of type number",
    ]


def test_integer_accepts_whole_floats_as_json_schema_says() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

    validate_tool_args(schema, {"n": 1.0})
    assert errors_of(schema, {"n": 1.5}) == ["arguments.n: 1.5 is not of type integer"]


def test_enum_uses_json_equality() -> None:
    schema = {"type": "object", "properties": {"v": {"enum": [1, "a"]}}}

    validate_tool_args(schema, {"v": 1})
    assert errors_of(schema, {"v": True}) == ['arguments.v: true is not one of [1, "a"]']


def test_nested_paths_use_dots_and_indexes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 2}},
                    "required": ["name"],
                },
            },
            "odd key": {"type": "string"},
        },
    }

    lines = errors_of(schema, {"items": [{"name": "ok"}, {}, {"name": "x"}, 3], "odd key": 1})

    assert lines == [
        "arguments.items[1].name: required property is missing",
        'arguments.items[2].name: "x" is too short (minimum length 2)',
        "arguments.items[3]: 3 is not of type object",
        'arguments["odd key"]: 1 is not of type string',
    ]


def test_errors_are_sorted_by_path_then_keyword() -> None:
    schema = {
        "type": "object",
        "properties": {
            "b": {"type": "string", "minLength": 5, "pattern": "^z"},
            "a": {"type": "integer", "minimum": 3, "multipleOf": 2},
        },
        "required": ["c"],
    }

    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(schema, {"b": "abc", "a": 1})

    assert [(e.path, e.keyword) for e in info.value.errors] == [
        ("arguments.a", "minimum"),
        ("arguments.a", "multipleOf"),
        ("arguments.b", "minLength"),
        ("arguments.b", "pattern"),
        ("arguments.c", "required"),
    ]
    assert str(info.value).splitlines() == [
        "arguments.a: 1 is less than the minimum of 3",
        "arguments.a: 1 is not a multiple of 2",
        'arguments.b: "abc" is too short (minimum length 5)',
        'arguments.b: "abc" does not match the pattern "^z"',
        "arguments.c: required property is missing",
    ]


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        ({"exclusiveMinimum": 0}, 0, "0 is less than or equal to the exclusive minimum of 0"),
        (
            {"exclusiveMaximum": 1.5},
            2,
            "2 is greater than or equal to the exclusive maximum of 1.5",
        ),
        ({"maxLength": 2}, "abc", '"abc" is too long (maximum length 2)'),
        ({"const": "x"}, "y", 'expected "x", got "y"'),
        ({"minItems": 2}, [1], "expected at least 2 items, got 1"),
        ({"maxItems": 1}, [1, 2], "expected at most 1 items, got 2"),
        ({"uniqueItems": True}, [1, 1], "array items must be unique"),
        ({"minProperties": 1}, {}, "expected at least 1 properties, got 0"),
        ({"maxProperties": 0}, {"a": 1}, "expected at most 0 properties, got 1"),
        ({"not": {"type": "string"}}, "s", '"s" matches a schema it must not match'),
        ({"contains": {"type": "string"}}, [1], "no array item matches the required schema"),
        (
            {"oneOf": [{"type": "integer"}, {"type": "number"}]},
            3,
            "3 matches more than one of the allowed schemas",
        ),
        (
            {"anyOf": [{"type": "string", "minLength": 3}, {"type": "string", "pattern": "^z"}]},
            "ab",
            '"ab" does not match any of the allowed schemas',
        ),
        (
            {"anyOf": [{"type": "string", "minLength": 3}, {"type": "integer", "minimum": 5}]},
            1,
            "1 is less than the minimum of 5",
        ),
        (
            {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            True,
            "true is not of type string or integer",
        ),
    ],
)
def test_keyword_messages(prop: dict[str, Any], value: object, message: str) -> None:
    schema = {"type": "object", "properties": {"v": prop}}

    assert errors_of(schema, {"v": value}) == [f"arguments.v: {message}"]


def test_nullable_union_reports_the_types() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
    }

    validate_tool_args(schema, {"n": None})
    assert errors_of(schema, {"n": "x"}) == ['arguments.n: "x" is not of type integer or null']


def test_union_with_one_nearly_matching_branch_reports_that_branch() -> None:
    schema = {
        "$defs": {
            "Mode": {"type": "string", "enum": ["fast", "slow"]},
            "Item": {
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
            },
        },
        "type": "object",
        "properties": {
            "mode": {"anyOf": [{"$ref": "#/$defs/Mode"}, {"type": "null"}]},
            "item": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
        },
    }

    assert errors_of(schema, {"mode": "medium", "item": {"id": "7"}}) == [
        'arguments.item.id: "7" is not of type integer',
        'arguments.mode: "medium" is not one of ["fast", "slow"]',
    ]


def test_false_schemas_keep_the_argument_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "gone": False,
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, False]},
        },
        "patternProperties": {"^x_": False},
    }

    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(schema, {"gone": 1, "pair": [1, 2], "x_1": 0})

    assert [(e.path, e.keyword, e.message) for e in info.value.errors] == [
        ("arguments.gone", "false", "no value is allowed here"),
        ("arguments.pair[1]", "false", "no value is allowed here"),
        ("arguments.x_1", "false", "no value is allowed here"),
    ]
    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(False, {})
    assert str(info.value) == "arguments: no value is allowed here"


def test_format_is_an_annotation_only() -> None:
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}}

    validate_tool_args(schema, {"when": "not a date"})


def test_dependent_required_names_the_missing_property() -> None:
    schema = {"type": "object", "dependentRequired": {"a": ["b"]}}

    assert errors_of(schema, {"a": 1}) == ['arguments.b: required when "a" is present']


def test_long_values_are_described_not_dumped() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}

    assert errors_of(schema, {"n": "x" * 500}) == [
        "arguments.n: a string of 500 characters is not of type integer"
    ]


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "description"),
    [
        ([1, 2], "an array of 2 items"),
        ("text", "a string of 4 characters"),
        (None, "null"),
        (3, "an integer"),
        (2.5, "a number"),
        (True, "a boolean"),
    ],
)
def test_arguments_must_be_an_object(args: object, description: str) -> None:
    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args({"type": "object"}, args)

    assert info.value.errors == (
        ArgumentError(
            path="arguments",
            message=f"expected a JSON object, got {description}",
            keyword="type",
        ),
    )


def test_array_arguments_message_is_exact() -> None:
    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args({"type": "object"}, [1, 2])

    assert str(info.value) == "arguments: expected a JSON object, got an array of 2 items"


def test_invalid_tool_arguments_is_a_kernel_error_and_caps_its_message() -> None:
    schema = {"type": "object", "additionalProperties": False}
    args = {f"k{i:02d}": i for i in range(25)}

    with pytest.raises(KernelError) as info:
        validate_tool_args(schema, args)

    assert isinstance(info.value, InvalidToolArguments)
    assert len(info.value.errors) == 25
    lines = str(info.value).splitlines()
    assert len(lines) == 21
    assert lines[0] == "arguments.k00: unexpected property"
    assert lines[-1] == "... and 5 more errors"


# --- schema checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "objectx"},
            'invalid JSON Schema at #/type: "objectx" is not one of '
            '["array", "boolean", "integer", "null", "number", "object", "string"]',
        ),
        (
            {"properties": {"a": {"maximum": "ten"}}},
            'invalid JSON Schema at #/properties/a/maximum: "ten" is not of type number',
        ),
        ({"pattern": "("}, 'invalid JSON Schema at #/pattern: "(" is not a valid regex'),
        (
            {"minLength": -1},
            "invalid JSON Schema at #/minLength: -1 is less than the minimum of 0",
        ),
        (
            {"$ref": "#/$defs/Missing"},
            'invalid JSON Schema at #/$ref: $ref "#/$defs/Missing" cannot be resolved',
        ),
        (
            {"properties": {"x": {"$ref": "https://example.com/schema.json"}}},
            "invalid JSON Schema at #/properties/x/$ref: "
            '$ref "https://example.com/schema.json" cannot be resolved',
        ),
        ([1], "a JSON Schema must be an object or a boolean, got an array of 1 item"),
    ],
)
def test_check_tool_schema_names_the_location(schema: Any, message: str) -> None:
    with pytest.raises(ToolDefinitionError) as info:
        check_tool_schema(schema)
    assert str(info.value) == message

    with pytest.raises(ToolDefinitionError) as info:
        check_tool_schema(schema, tool_name="search")
    assert str(info.value) == f"tool 'search': {message}"


def test_invalid_schema_fails_validation_with_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError):
        validate_tool_args({"type": 5}, {})
    with pytest.raises(ToolDefinitionError):
        validate_tool_args({"$ref": "#/nowhere"}, {})


def test_valid_schemas_pass_the_check() -> None:
    check_tool_schema({"type": "object", "properties": {}, "additionalProperties": True})
    check_tool_schema(
        {
            "$defs": {"A": {"type": "string"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"items": {"$ref": "#"}}},
        }
    )
    check_tool_schema(True)


def test_validators_are_cached_by_canonical_schema() -> None:
    validation._validators.clear()
    first = {"type": "object", "properties": {"a": {"type": "string"}}}
    same_in_other_order = {"properties": {"a": {"type": "string"}}, "type": "object"}

    validate_tool_args(first, {"a": "x"})
    validate_tool_args(same_in_other_order, {"a": "y"})

    assert len(validation._validators) == 1


def test_validator_cache_is_bounded() -> None:
    validation._validators.clear()
    for i in range(validation._CACHE_LIMIT + 10):
        validate_tool_args({"type": "object", "maxProperties": i}, {})

    assert len(validation._validators) == validation._CACHE_LIMIT


def test_importing_the_tool_modules_does_not_import_jsonschema_or_pydantic() -> None:
    code = (
        "import sys\n"
        "import lash.kernel.tools.validation, lash.kernel.tools.typed\n"
        "import lash.kernel.tools.value, lash.kernel.tools.docs, lash.kernel.tools.surface\n"
        "print(sorted(m for m in ('jsonschema', 'pydantic', 'referencing') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_schema_dialect_follows_dollar_schema() -> None:
    # Draft 7 tuple-form `items` (common in MCP tool schemas) is valid there, not in 2020-12.
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"xs": {"type": "array", "items": [{"type": "integer"}, {"type": "string"}]}},
    }
    validate_tool_args(draft7, {"xs": [1, "a"]})
    with pytest.raises(InvalidToolArguments) as info:
        validate_tool_args(draft7, {"xs": ["a", 1]})
    assert [e.path for e in info.value.errors] == ["arguments.xs[0]", "arguments.xs[1]"]
    no_dialect = {k: v for k, v in draft7.items() if k != "$schema"}
    with pytest.raises(ToolDefinitionError, match="invalid JSON Schema"):
        validate_tool_args(no_dialect, {"xs": [1, "a"]})
