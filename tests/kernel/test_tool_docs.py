# ruff: noqa: E501  (golden strings are kept whole, one rendered line per source line)
"""Compact tool contracts and prompt docs (golden strings from the reference's tests)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from lash.kernel.tools.definition import DEFAULT_INPUT_SCHEMA, AgentSurface, ToolDefinition
from lash.kernel.tools.docs import (
    CompactToolContract,
    compact_contract,
    format_tool_docs,
    parameter_metadata,
    resolve_schema_refs,
    return_field_metadata,
    return_label,
    type_label,
)


def wire(contract: CompactToolContract) -> Any:
    """The contract's JSON form, as plain lists and dicts."""
    return msgspec.json.decode(msgspec.json.encode(contract))


def from_fixture(data: dict[str, Any]) -> ToolDefinition:
    return ToolDefinition(
        name=data["name"],
        description=data["description"],
        examples=tuple(data["examples"]),
        input_schema=data["input_schema"],
        output_schema=data["output_schema"],
    )


SEARCH_SONGS: dict[str, Any] = {
    "name": "mcp__appworld__spotify_search_songs",
    "description": "[MCP appworld] Search for songs with a query.",
    "examples": ["search songs by genre"],
    "input_schema": {
        "type": "object",
        "properties": {
            "access_token": {
                "type": "string",
                "description": "Access token obtained from spotify app login.",
            },
            "genre": {
                "type": ["string", "null"],
                "description": "Only include songs from this genre.",
                "default": None,
            },
            "page_limit": {
                "type": "integer",
                "description": "Maximum number of songs to return.",
                "minimum": 1,
                "maximum": 20,
                "default": 5,
            },
            "sort_by": {
                "type": ["string", "null"],
                "description": "Field to sort by. Prefix with '-' for descending order.",
                "default": None,
            },
        },
        "required": ["access_token"],
        "additionalProperties": False,
    },
    "output_schema": {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "response": {
                        "type": "array",
                        "description": "Matched songs.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "album_id": {
                                    "type": ["integer", "null"],
                                    "description": "Album "
                                    "identifier "
                                    "when "
                                    "the "
                                    "song "
                                    "belongs "
                                    "to "
                                    "an "
                                    "album.",
                                },
                                "album_title": {"type": ["string", "null"]},
                                "artists": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "id": {"type": "integer"},
                                            "name": {"type": "string"},
                                        },
                                        "required": ["id", "name"],
                                    },
                                },
                                "duration": {"type": "integer"},
                                "genre": {"type": "string"},
                                "like_count": {"type": "integer"},
                                "play_count": {
                                    "type": "integer",
                                    "description": "Number of times the song was played.",
                                    "minimum": 0,
                                },
                                "rating": {"type": "number"},
                                "release_date": {
                                    "type": "string",
                                    "description": "Song release date in YYYY-MM-DD format.",
                                },
                                "song_id": {
                                    "type": "integer",
                                    "description": "Stable song identifier.",
                                },
                                "title": {"type": "string", "description": "Song title."},
                            },
                            "required": [
                                "album_id",
                                "album_title",
                                "artists",
                                "duration",
                                "genre",
                                "like_count",
                                "play_count",
                                "rating",
                                "release_date",
                                "song_id",
                                "title",
                            ],
                        },
                    }
                },
                "required": ["response"],
            },
            {
                "type": "object",
                "properties": {
                    "response": {
                        "type": "object",
                        "properties": {
                            "message": {
                                "type": "string",
                                "description": "Failure or status message.",
                            }
                        },
                        "required": ["message"],
                    }
                },
                "required": ["response"],
            },
        ]
    },
}

SEARCH_SONGS_CONTRACT: dict[str, Any] = {
    "name": "tools.mcp__appworld__spotify_search_songs",
    "signature": "await tools.mcp__appworld__spotify_search_songs({ access_token: str, genre?: "
    "str | null = null, page_limit?: int >= 1 <= 20 = 5, sort_by?: str | null = null "
    "})?",
    "returns": "record{response: list[record{album_id: int | null, album_title: str | null, "
    "artists: list[record{id: int, name: str}], duration: int, genre: str, like_count: "
    "int, play_count: int, rating: float, release_date: str, song_id: int, title: "
    "str}]} | record{response: record{message: str}}",
    "parameters": [
        {
            "name": "access_token",
            "type": "str",
            "required": True,
            "description": "Access token obtained from spotify app login.",
            "signature": "access_token: str",
        },
        {
            "name": "genre",
            "type": "str | null",
            "required": False,
            "nullable": True,
            "description": "Only include songs from this genre.",
            "default": None,
            "signature": "genre?: str | null = null",
        },
        {
            "name": "page_limit",
            "type": "int",
            "required": False,
            "description": "Maximum number of songs to return.",
            "default": 5,
            "minimum": 1,
            "maximum": 20,
            "signature": "page_limit?: int >= 1 <= 20 = 5",
        },
        {
            "name": "sort_by",
            "type": "str | null",
            "required": False,
            "nullable": True,
            "description": "Field to sort by. Prefix with '-' for descending order.",
            "default": None,
            "signature": "sort_by?: str | null = null",
        },
    ],
    "return_fields": [
        {
            "path": "response",
            "type": "list[record]",
            "required": True,
            "description": "Matched songs.",
            "items": "record",
            "signature": "response: list[record]",
        },
        {
            "path": "response[].album_id",
            "type": "int | null",
            "required": True,
            "nullable": True,
            "description": "Album identifier when the song belongs to an album.",
            "signature": "response[].album_id: int | null",
        },
        {
            "path": "response[].album_title",
            "type": "str | null",
            "required": True,
            "nullable": True,
            "signature": "response[].album_title: str | null",
        },
        {
            "path": "response[].artists[].id",
            "type": "int",
            "required": True,
            "signature": "response[].artists[].id: int",
        },
        {
            "path": "response[].artists[].name",
            "type": "str",
            "required": True,
            "signature": "response[].artists[].name: str",
        },
        {
            "path": "response[].duration",
            "type": "int",
            "required": True,
            "signature": "response[].duration: int",
        },
        {
            "path": "response[].genre",
            "type": "str",
            "required": True,
            "signature": "response[].genre: str",
        },
        {
            "path": "response[].like_count",
            "type": "int",
            "required": True,
            "signature": "response[].like_count: int",
        },
        {
            "path": "response[].play_count",
            "type": "int",
            "required": True,
            "description": "Number of times the song was played.",
            "minimum": 0,
            "signature": "response[].play_count: int >= 0",
        },
        {
            "path": "response[].rating",
            "type": "float",
            "required": True,
            "signature": "response[].rating: float",
        },
        {
            "path": "response[].release_date",
            "type": "str",
            "required": True,
            "description": "Song release date in YYYY-MM-DD format.",
            "signature": "response[].release_date: str",
        },
        {
            "path": "response[].song_id",
            "type": "int",
            "required": True,
            "description": "Stable song identifier.",
            "signature": "response[].song_id: int",
        },
        {
            "path": "response[].title",
            "type": "str",
            "required": True,
            "description": "Song title.",
            "signature": "response[].title: str",
        },
        {
            "path": "response.message",
            "type": "str",
            "required": True,
            "description": "Failure or status message.",
            "signature": "response.message: str",
        },
    ],
    "description": "[MCP appworld] Search for songs with a query.",
    "examples": ["search songs by genre"],
}

SEARCH_SONGS_MARKDOWN = (
    "### await tools.mcp__appworld__spotify_search_songs({ access_token: str, genre?: str | null = null, page_limit?: int >= 1 <= 20 = 5, sort_by?: str | null = null })? -> record{response: list[record{album_id: int | null, album_title: str | null, artists: list[record{id: int, name: str}], duration: int, genre: str, like_count: int, play_count: int, rating: float, release_date: str, song_id: int, title: str}]} | record{response: record{message: str}}\n"
    "[MCP appworld] Search for songs with a query.\n"
    "Parameters:\n"
    "- `access_token: str` — Access token obtained from spotify app login.\n"
    "- `genre?: str | null = null` — Only include songs from this genre.\n"
    "- `page_limit?: int >= 1 <= 20 = 5` — Maximum number of songs to return.\n"
    "- `sort_by?: str | null = null` — Field to sort by. Prefix with '-' for descending order.\n"
    "Return fields:\n"
    "- `response: list[record]` — Matched songs.\n"
    "- `response[].album_id: int | null` — Album identifier when the song belongs to an album.\n"
    "- `response[].album_title: str | null`\n"
    "- `response[].artists[].id: int`\n"
    "- `response[].artists[].name: str`\n"
    "- `response[].duration: int`\n"
    "- `response[].genre: str`\n"
    "- `response[].like_count: int`\n"
    "- `response[].play_count: int >= 0` — Number of times the song was played.\n"
    "- `response[].rating: float`\n"
    "- `response[].release_date: str` — Song release date in YYYY-MM-DD format.\n"
    "- `response[].song_id: int` — Stable song identifier.\n"
    "- `response[].title: str` — Song title.\n"
    "- `response.message: str` — Failure or status message.\n"
    "Examples: search songs by genre"
)

SEARCH_SONGS_SIGNATURE = (
    "await tools.mcp__appworld__spotify_search_songs({ access_token: str, genre?: str | null = null, page_limit?: int >= 1 <= 20 = 5, sort_by?: str | null = null })? -> record{response: list[record{album_id: int | null, album_title: str | null, artists: list[record{id: int, name: str}], duration: int, genre: str, like_count: int, play_count: int, rating: float, release_date: str, song_id: int, title: str}]} | record{response: record{message: str}}\n"
    "Parameters:\n"
    "- `access_token: str` — Access token obtained from spotify app login.\n"
    "- `genre?: str | null = null` — Only include songs from this genre.\n"
    "- `page_limit?: int >= 1 <= 20 = 5` — Maximum number of songs to return.\n"
    "- `sort_by?: str | null = null` — Field to sort by. Prefix with '-' for descending order.\n"
    "Return fields:\n"
    "- `response: list[record]` — Matched songs.\n"
    "- `response[].album_id: int | null` — Album identifier when the song belongs to an album.\n"
    "- `response[].album_title: str | null`\n"
    "- `response[].artists[].id: int`\n"
    "- `response[].artists[].name: str`\n"
    "- `response[].duration: int`\n"
    "- `response[].genre: str`\n"
    "- `response[].like_count: int`\n"
    "- `response[].play_count: int >= 0` — Number of times the song was played.\n"
    "- `response[].rating: float`\n"
    "- `response[].release_date: str` — Song release date in YYYY-MM-DD format.\n"
    "- `response[].song_id: int` — Stable song identifier.\n"
    "- `response[].title: str` — Song title.\n"
    "- `response.message: str` — Failure or status message."
)

SEARCH_SONGS_RETURNS = (
    "Return fields:\n"
    "- `response: list[record]` — Matched songs.\n"
    "- `response[].album_id: int | null` — Album identifier when the song belongs to an album.\n"
    "- `response[].album_title: str | null`\n"
    "- `response[].artists[].id: int`\n"
    "- `response[].artists[].name: str`\n"
    "- `response[].duration: int`\n"
    "- `response[].genre: str`\n"
    "- `response[].like_count: int`\n"
    "- `response[].play_count: int >= 0` — Number of times the song was played.\n"
    "- `response[].rating: float`\n"
    "- `response[].release_date: str` — Song release date in YYYY-MM-DD format.\n"
    "- `response[].song_id: int` — Stable song identifier.\n"
    "- `response[].title: str` — Song title.\n"
    "- `response.message: str` — Failure or status message."
)

ALBUM_LIBRARY: dict[str, Any] = {
    "name": "mcp__appworld__spotify_show_album_library",
    "description": "[MCP appworld] Search or show a list of albums in your album library.",
    "examples": ["show album library"],
    "input_schema": {
        "type": "object",
        "properties": {
            "access_token": {
                "type": "string",
                "description": "Access token obtained from spotify app login.",
            },
            "page_index": {
                "type": "integer",
                "description": "The index of the page to return.",
                "minimum": 0,
                "default": 0,
            },
            "page_limit": {
                "type": "integer",
                "description": "The maximum number of results to return per page.",
                "minimum": 1,
                "maximum": 20,
                "default": 5,
            },
        },
        "required": ["access_token"],
    },
    "output_schema": {
        "type": "object",
        "properties": {
            "response": {
                "anyOf": [
                    {
                        "type": "array",
                        "description": "Albums in the user's library.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "added_at": {
                                    "description": "When the album was added to the library.",
                                    "anyOf": [{"type": "string"}, {"type": "null"}],
                                },
                                "album_id": {"type": "integer"},
                                "genre": {
                                    "type": "string",
                                    "description": "Album genre.",
                                    "minLength": 1,
                                },
                                "song_ids": {"type": "array", "items": {"type": "integer"}},
                                "title": {"type": "string", "minLength": 1},
                            },
                            "required": ["added_at", "album_id", "genre", "song_ids", "title"],
                        },
                    },
                    {
                        "type": "object",
                        "properties": {
                            "message": {
                                "type": "string",
                                "description": "Failure or status message.",
                            }
                        },
                        "required": ["message"],
                    },
                ]
            }
        },
        "required": ["response"],
    },
}

ALBUM_LIBRARY_CONTRACT: dict[str, Any] = {
    "name": "tools.mcp__appworld__spotify_show_album_library",
    "signature": "await tools.mcp__appworld__spotify_show_album_library({ access_token: str, "
    "page_index?: int >= 0 = 0, page_limit?: int >= 1 <= 20 = 5 })?",
    "returns": "record{response: list[record{added_at: null | str, album_id: int, genre: str, "
    "song_ids: list[int], title: str}] | record{message: str}}",
    "parameters": [
        {
            "name": "access_token",
            "type": "str",
            "required": True,
            "description": "Access token obtained from spotify app login.",
            "signature": "access_token: str",
        },
        {
            "name": "page_index",
            "type": "int",
            "required": False,
            "description": "The index of the page to return.",
            "default": 0,
            "minimum": 0,
            "signature": "page_index?: int >= 0 = 0",
        },
        {
            "name": "page_limit",
            "type": "int",
            "required": False,
            "description": "The maximum number of results to return per page.",
            "default": 5,
            "minimum": 1,
            "maximum": 20,
            "signature": "page_limit?: int >= 1 <= 20 = 5",
        },
    ],
    "return_fields": [
        {
            "path": "response",
            "type": "list[record]",
            "required": True,
            "description": "Albums in the user's library.",
            "items": "record",
            "signature": "response: list[record]",
        },
        {
            "path": "response[].added_at",
            "type": "str | null",
            "required": True,
            "nullable": True,
            "description": "When the album was added to the library.",
            "signature": "response[].added_at: str | null",
        },
        {
            "path": "response[].album_id",
            "type": "int",
            "required": True,
            "signature": "response[].album_id: int",
        },
        {
            "path": "response[].genre",
            "type": "str",
            "required": True,
            "description": "Album genre.",
            "min_length": 1,
            "signature": "response[].genre: str min_len 1",
        },
        {
            "path": "response[].song_ids[]",
            "type": "int",
            "required": True,
            "signature": "response[].song_ids[]: int",
        },
        {
            "path": "response[].title",
            "type": "str",
            "required": True,
            "min_length": 1,
            "signature": "response[].title: str min_len 1",
        },
        {
            "path": "response.message",
            "type": "str",
            "required": True,
            "description": "Failure or status message.",
            "signature": "response.message: str",
        },
    ],
    "description": "[MCP appworld] Search or show a list of albums in your album library.",
    "examples": ["show album library"],
}

ALBUM_LIBRARY_MARKDOWN = (
    "### await tools.mcp__appworld__spotify_show_album_library({ access_token: str, page_index?: int >= 0 = 0, page_limit?: int >= 1 <= 20 = 5 })? -> record{response: list[record{added_at: null | str, album_id: int, genre: str, song_ids: list[int], title: str}] | record{message: str}}\n"
    "[MCP appworld] Search or show a list of albums in your album library.\n"
    "Parameters:\n"
    "- `access_token: str` — Access token obtained from spotify app login.\n"
    "- `page_index?: int >= 0 = 0` — The index of the page to return.\n"
    "- `page_limit?: int >= 1 <= 20 = 5` — The maximum number of results to return per page.\n"
    "Return fields:\n"
    "- `response: list[record]` — Albums in the user's library.\n"
    "- `response[].added_at: str | null` — When the album was added to the library.\n"
    "- `response[].album_id: int`\n"
    "- `response[].genre: str min_len 1` — Album genre.\n"
    "- `response[].song_ids[]: int`\n"
    "- `response[].title: str min_len 1`\n"
    "- `response.message: str` — Failure or status message.\n"
    "Examples: show album library"
)

# --- ports of the reference tests -------------------------------------------------------


def search_docs_tool() -> ToolDefinition:
    return ToolDefinition(
        name="search_docs",
        description="Search indexed docs",
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "maximum": 10, "default": 5},
            },
            "required": ["query"],
        },
        output_schema={
            "type": "object",
            "properties": {
                "matches": {"type": "array", "items": {"type": "string"}},
                "next_page": {"type": ["string", "null"]},
            },
            "required": ["matches"],
        },
        examples=(
            'await tools.search_docs({ query: "rust" })?',
            'await tools.search_docs({ query: "rust", limit: 3 })?',
            'await tools.search_docs({ query: "ignored" })?',
        ),
    )


def test_compact_tool_contract_renders_prompt_and_search_shape_from_schemas() -> None:
    tool = search_docs_tool()
    contract = compact_contract(tool)

    assert contract.name == "tools.search_docs"
    assert contract.signature == "await tools.search_docs({ query: str, limit?: int <= 10 = 5 })?"
    assert contract.returns == "record{matches: list[str], next_page?: str | null}"
    assert contract.parameters == (
        {"name": "query", "type": "str", "required": True, "signature": "query: str"},
        {
            "name": "limit",
            "type": "int",
            "required": False,
            "default": 5,
            "maximum": 10,
            "signature": "limit?: int <= 10 = 5",
        },
    )
    assert contract.examples == (
        'await tools.search_docs({ query: "rust" })?',
        'await tools.search_docs({ query: "rust", limit: 3 })?',
    )

    docs = format_tool_docs([tool])
    assert docs == (
        "### await tools.search_docs({ query: str, limit?: int <= 10 = 5 })? -> "
        "record{matches: list[str], next_page?: str | null}\n"
        "Search indexed docs\n"
        "Parameters:\n"
        "- `query: str`\n"
        "- `limit?: int <= 10 = 5`\n"
        "Return fields:\n"
        "- `matches[]: str`\n"
        "- `next_page?: str | null`\n"
        'Examples: await tools.search_docs({ query: "rust" })?; '
        'await tools.search_docs({ query: "rust", limit: 3 })?'
    )
    assert "Returns:" not in docs


def test_compact_tool_contract_resolves_local_refs_in_string_or_list_parameters() -> None:
    tool = ToolDefinition(
        name="search_tools",
        description="Search tools",
        input_schema={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {
                "ModuleFilter": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}},
                    ]
                }
            },
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "module": {"anyOf": [{"$ref": "#/$defs/ModuleFilter"}, {"type": "null"}]},
            },
            "required": ["query"],
        },
        output_schema={"type": "array", "items": {"type": "object"}},
    )

    signature = compact_contract(tool).render_signature()

    assert signature == (
        "await tools.search_tools({ query: str, module?: str | list[str] | null })? "
        "-> list[record]\n"
        "Parameters:\n"
        "- `query: str`\n"
        "- `module?: str | list[str] | null`"
    )


def test_static_output_contract_keeps_compact_docs_and_wire_shape() -> None:
    tool = ToolDefinition(
        name="read_text",
        description="Read text",
        input_schema=dict(DEFAULT_INPUT_SCHEMA),
        output_schema={"type": "string"},
    )

    contract = compact_contract(tool)

    assert contract.returns == "str"
    assert wire(contract) == {
        "name": "tools.read_text",
        "signature": "await tools.read_text({})?",
        "returns": "str",
        "description": "Read text",
    }
    assert format_tool_docs([tool]) == "### await tools.read_text({})? -> str\nRead text"


def test_json_schema_loaded_contract_matches_hardcoded_renderer() -> None:
    contract = compact_contract(from_fixture(SEARCH_SONGS))

    assert wire(contract) == SEARCH_SONGS_CONTRACT
    assert contract.render_markdown() == SEARCH_SONGS_MARKDOWN
    assert contract.render_signature() == SEARCH_SONGS_SIGNATURE
    assert contract.render_returns() == SEARCH_SONGS_RETURNS


def test_json_schema_loaded_contract_merges_nullable_anyof_return_fields() -> None:
    contract = compact_contract(from_fixture(ALBUM_LIBRARY))

    assert wire(contract) == ALBUM_LIBRARY_CONTRACT
    assert contract.render_markdown() == ALBUM_LIBRARY_MARKDOWN


def test_contract_round_trips_through_json() -> None:
    contract = compact_contract(from_fixture(SEARCH_SONGS))

    decoded = msgspec.json.decode(msgspec.json.encode(contract), type=CompactToolContract)

    assert decoded.render_markdown() == SEARCH_SONGS_MARKDOWN


def test_tool_agent_surface_defaults_are_empty() -> None:
    tool = msgspec.convert({"name": "read_file", "description": "Read a file"}, type=ToolDefinition)
    assert tool.surface == AgentSurface()
    assert compact_contract(tool).signature == "await tools.read_file({})?"


def test_tool_agent_surface_controls_prompt_call_form() -> None:
    tool = ToolDefinition(
        name="read_file",
        description="Read a file",
        output_schema={"type": "string"},
        surface=AgentSurface(module_path=("fs",), operation="read", aliases=("cat",)),
    )

    assert format_tool_docs([tool]) == "### await fs.read({})? -> str\nRead a file"
    assert compact_contract(tool).name == "fs.read"


# --- labels, parameters and fields ----------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "label"),
    [
        ({"type": "string"}, "str"),
        ({"type": "integer"}, "int"),
        ({"type": "number"}, "float"),
        ({"type": "boolean"}, "bool"),
        ({"type": "object"}, "record"),
        ({"type": "null"}, "null"),
        ({"type": "array"}, "list[any]"),
        ({"type": "array", "items": {"type": "integer"}}, "list[int]"),
        ({"type": "wat"}, "any"),
        ({}, "any"),
        (True, "any"),
        ({"type": ["integer", "string", "null"]}, "int | str | null"),
        ({"type": ["null"]}, "any | null"),
        ({"enum": ["a", 1, None]}, 'enum["a", 1] | null'),
        ({"enum": [None], "type": "string"}, "str"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}, {"type": "string"}]}, "str | null"),
        ({"oneOf": [{"type": "integer"}, {"enum": ["x", None]}]}, 'int | enum["x"] | null'),
        ({"anyOf": []}, "any"),
    ],
)
def test_type_label(schema: Any, label: str) -> None:
    assert type_label(schema) == label


@pytest.mark.parametrize(
    ("schema", "label"),
    [
        (None, "any"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "null | str"),
        ({"type": ["string", "integer", "null"]}, "int | str | null"),
        ({"type": "array", "items": {"type": "object"}}, "list[record]"),
        ({"type": "object", "properties": {}}, "record"),
        (
            {
                "type": "object",
                "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                "required": ["b"],
            },
            "record{a?: str, b: int}",
        ),
        (
            {"$defs": {"N": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/N"}},
            "list[int]",
        ),
    ],
)
def test_return_label(schema: Any, label: str) -> None:
    assert return_label(schema) == label


def test_parameters_put_required_first_in_required_order_then_the_rest_alphabetically() -> None:
    schema = {
        "type": "object",
        "properties": {name: {"type": "string"} for name in ("d", "c", "b", "a", "e")},
        "required": ["e", "b", "missing"],
    }

    names = [p["name"] for p in parameter_metadata(schema)]

    assert names == ["e", "b", "a", "c", "d"]


def test_parameter_signature_shows_constraints_enum_and_defaults() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
            "size": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 9},
            "name": {"type": "string", "minLength": 1, "maxLength": 8, "description": "  "},
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": 3,
                "default": ["a"],
            },
            "opts": {"type": "object", "default": {"b": 1, "a": None}},
            "any_list": {"type": "array", "items": {}},
        },
    }

    by_name = {p["name"]: p for p in parameter_metadata(schema)}

    assert by_name["mode"]["signature"] == 'mode?: enum["fast", "slow"] = "fast"'
    assert by_name["mode"]["enum"] == ["fast", "slow"]
    assert by_name["size"]["signature"] == "size?: int >= 0 <= 9"
    assert by_name["name"] == {
        "name": "name",
        "type": "str",
        "required": False,
        "min_length": 1,
        "max_length": 8,
        "signature": "name?: str min_len 1 max_len 8",
    }
    assert by_name["tags"]["signature"] == 'tags?: list[str] min_items 1 max_items 3 = ["a"]'
    assert by_name["tags"]["items"] == "str"
    assert by_name["opts"]["signature"] == 'opts?: record = {"a":null,"b":1}'
    assert "items" not in by_name["any_list"]


def test_enum_constraint_is_shown_when_the_label_is_not_an_enum() -> None:
    fields = return_field_metadata(
        {
            "type": "object",
            "properties": {
                "kind": {"anyOf": [{"enum": ["a"]}, {"enum": ["b"]}]},
            },
            "required": ["kind"],
        }
    )

    assert fields == (
        {
            "path": "kind",
            "type": 'enum["a"] | enum["b"]',
            "required": True,
            "enum": ["a", "b"],
            "signature": 'kind: enum["a"] | enum["b"]',
        },
    )


def test_parameter_metadata_of_a_schema_without_properties_is_empty() -> None:
    assert parameter_metadata({"type": "object"}) == ()
    assert parameter_metadata(True) == ()
    assert parameter_metadata({"properties": []}) == ()


def test_examples_keep_the_first_two_non_blank_and_cut_long_ones() -> None:
    long = "x" * 241
    tool = ToolDefinition(name="t", examples=("  ", f"  {long}  ", " short ", "third"))

    examples = compact_contract(tool).examples

    assert examples == ("x" * 237 + "...", "short")
    assert compact_contract(ToolDefinition(name="t", examples=("y" * 240,))).examples == (
        "y" * 240,
    )


# --- $ref resolution ------------------------------------------------------------------


def test_ref_siblings_override_the_target() -> None:
    schema = {
        "$defs": {"Name": {"type": "string", "description": "a name"}},
        "properties": {"n": {"$ref": "#/$defs/Name", "description": "the user's name"}},
    }

    resolved = resolve_schema_refs(schema)

    assert resolved["properties"]["n"] == {"type": "string", "description": "the user's name"}


def test_ref_cycle_resolves_to_empty_schema() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/Node"}, "v": {"type": "integer"}},
            }
        },
        "$ref": "#/$defs/Node",
    }

    resolved = resolve_schema_refs(schema)

    assert resolved["properties"]["next"] == {}
    assert resolved["$defs"]["Node"]["properties"]["next"]["properties"]["next"] == {}
    assert return_label(schema) == "record{next?: any, v?: int}"


def test_unresolvable_and_remote_refs_are_left_alone() -> None:
    schema = {
        "properties": {
            "a": {"$ref": "#/$defs/Missing"},
            "b": {"$ref": "https://example.com/schema"},
            "c": {"$ref": "#/properties/a~1b"},
            "a/b": {"type": "integer"},
        }
    }

    resolved = resolve_schema_refs(schema)

    assert resolved["properties"]["a"] == {"$ref": "#/$defs/Missing"}
    assert resolved["properties"]["b"] == {"$ref": "https://example.com/schema"}
    assert resolved["properties"]["c"] == {"type": "integer"}
    assert type_label(resolved["properties"]["a"]) == "any"


def test_return_fields_merge_labels_with_null_last() -> None:
    schema = {
        "anyOf": [
            {"type": "object", "properties": {"v": {"type": "null"}}, "required": ["v"]},
            {
                "type": "object",
                "properties": {"v": {"type": "integer", "minimum": 1, "description": "value"}},
            },
        ]
    }

    assert return_field_metadata(schema) == (
        {
            "path": "v",
            "type": "int | null",
            "required": True,
            "nullable": True,
            "description": "value",
            "minimum": 1,
            "signature": "v: int | null >= 1",
        },
    )
