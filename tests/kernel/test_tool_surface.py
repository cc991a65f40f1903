"""The tool surface: availability split, overrides, notes, call-path checks and lazy views."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from lash.kernel.errors import ToolDefinitionError
from lash.kernel.llm import LlmToolSpec
from lash.kernel.tools import docs
from lash.kernel.tools.definition import AgentSurface, Availability, ToolDefinition
from lash.kernel.tools.surface import ToolSurface

INPUT = {
    "type": "object",
    "properties": {"path": {"type": "string"}},
    "required": ["path"],
}


def tool(name: str, availability: Availability, **kw: Any) -> ToolDefinition:
    return ToolDefinition(
        name=name,
        description=f"Tool {name}",
        input_schema=INPUT,
        output_schema={"type": "string"},
        availability=availability,
        **kw,
    )


@pytest.fixture
def contract_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each tool whose compact contract is computed."""
    calls: list[str] = []
    real = docs.compact_contract

    def counting(definition: ToolDefinition) -> docs.CompactToolContract:
        calls.append(definition.name)
        return real(definition)

    monkeypatch.setattr(docs, "compact_contract", counting)
    return calls


@pytest.fixture
def spec_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each tool whose model spec is computed."""
    calls: list[str] = []
    real = ToolDefinition.model_tool

    def counting(self: ToolDefinition) -> LlmToolSpec:
        calls.append(self.name)
        return real(self)

    monkeypatch.setattr(ToolDefinition, "model_tool", counting)
    return calls


# --- ports of the reference tests -------------------------------------------------------


def test_surface_splits_callable_and_showcased_tools() -> None:
    surface = ToolSurface(
        [
            tool("search_tools", Availability.SHOWCASED),
            tool("read_file", Availability.SHOWCASED),
            tool("grep", Availability.CALLABLE),
            tool("privileged_tool", Availability.SEARCHABLE),
        ]
    )

    assert [t.name for t in surface.callable_tools] == ["search_tools", "read_file", "grep"]
    assert [t.name for t in surface.showcased_tools] == ["search_tools", "read_file"]
    assert surface.tool_names == ("search_tools", "read_file", "grep")
    assert surface.prompt_tool_docs == (
        "### await tools.search_tools({ path: str })? -> str\n"
        "Tool search_tools\n"
        "Parameters:\n"
        "- `path: str`\n"
        "\n"
        "### await tools.read_file({ path: str })? -> str\n"
        "Tool read_file\n"
        "Parameters:\n"
        "- `path: str`"
    )


def test_explicit_overrides_change_availability() -> None:
    surface = ToolSurface(
        [tool("read_file", Availability.SHOWCASED), tool("grep", Availability.SEARCHABLE)],
        overrides={"read_file": Availability.OFF, "grep": Availability.CALLABLE, "nope": "off"},  # type: ignore[dict-item]
        notes=["  custom note  ", "   ", "second"],
    )

    assert surface.availability("read_file") is Availability.OFF
    assert surface.availability("grep") is Availability.CALLABLE
    assert surface.availability("nope") is None
    assert surface.notes == ("custom note", "second")
    assert surface.tool_names == ("grep",)
    assert surface.prompt_tool_docs == "custom note\n\nsecond"


def test_tool_that_is_off_cannot_be_called_by_name() -> None:
    surface = ToolSurface(
        [tool("read_file", Availability.SHOWCASED), tool("find", Availability.SEARCHABLE)],
        overrides={"read_file": Availability.OFF},
    )

    assert surface.get("read_file") is None
    assert not surface.is_callable("read_file")
    assert surface.get("find") is None
    assert not surface.is_callable("find")
    assert surface.get("missing") is None
    assert surface.model_tool_specs == ()
    assert [(e.name, e.availability) for e in surface.entries] == [
        ("read_file", Availability.OFF),
        ("find", Availability.SEARCHABLE),
    ]


def test_searchable_only_contracts_are_not_rendered(contract_calls: list[str]) -> None:
    surface = ToolSurface(
        [
            tool("large_schema", Availability.SEARCHABLE),
            tool("search_tools", Availability.SHOWCASED),
        ]
    )

    assert surface.availability("large_schema") is Availability.SEARCHABLE
    assert contract_calls == []
    assert "large_schema" not in surface.prompt_tool_docs
    assert contract_calls == ["search_tools"]


def test_callable_only_surface_resolves_model_specs_lazily(
    contract_calls: list[str], spec_calls: list[str]
) -> None:
    surface = ToolSurface([tool("large_callable", Availability.CALLABLE)])

    assert surface.tool_names == ("large_callable",)
    assert spec_calls == []
    assert len(surface.model_tool_specs) == 1
    assert surface.prompt_tool_docs == ""
    assert spec_calls == ["large_callable"]
    assert contract_calls == []


def test_views_are_memoized(contract_calls: list[str], spec_calls: list[str]) -> None:
    surface = ToolSurface([tool("read_file", Availability.SHOWCASED)])

    first_specs = surface.model_tool_specs
    first_docs = surface.prompt_tool_docs

    assert surface.model_tool_specs is first_specs
    assert surface.prompt_tool_docs is first_docs
    assert surface.tool_names is surface.tool_names
    assert spec_calls == ["read_file"]
    assert contract_calls == ["read_file"]


def test_tool_names_fingerprint_is_sha256_of_names() -> None:
    surface = ToolSurface(
        [
            tool("read_file", Availability.CALLABLE),
            tool("search_tools", Availability.SHOWCASED),
            tool("hidden", Availability.SEARCHABLE),
        ]
    )

    expected = hashlib.sha256(b"read_file\nsearch_tools").hexdigest()
    assert surface.tool_names_fingerprint == expected
    assert ToolSurface().tool_names_fingerprint == hashlib.sha256(b"").hexdigest()


# --- model specs --------------------------------------------------------------------------


def test_model_tool_specs_follow_surface_order() -> None:
    surface = ToolSurface(
        [
            tool("b_tool", Availability.CALLABLE),
            tool("skip", Availability.SEARCHABLE),
            tool("a_tool", Availability.SHOWCASED),
        ]
    )

    assert surface.model_tool_specs == (
        LlmToolSpec(
            name="b_tool",
            description="Tool b_tool",
            input_schema=INPUT,
            output_schema={"type": "string"},
        ),
        LlmToolSpec(
            name="a_tool",
            description="Tool a_tool",
            input_schema=INPUT,
            output_schema={"type": "string"},
        ),
    )


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surface", "message"),
    [
        (
            AgentSurface(module_path=("Tools",)),
            "tool 'x' has invalid module path segment 'Tools': "
            "use only a-z, 0-9 and _, with at least one lowercase letter",
        ),
        (
            AgentSurface(module_path=("fs", "")),
            "tool 'x' has invalid module path segment '': "
            "use only a-z, 0-9 and _, with at least one lowercase letter",
        ),
        (
            AgentSurface(operation="read-file"),
            "tool 'x' has invalid operation 'read-file': "
            "use only a-z, 0-9 and _, with at least one lowercase letter",
        ),
        (
            AgentSurface(module_path=("123",)),
            "tool 'x' has invalid module path segment '123': "
            "use only a-z, 0-9 and _, with at least one lowercase letter",
        ),
        (
            AgentSurface(operation="read\n"),
            "tool 'x' has invalid operation 'read\\n': "
            "use only a-z, 0-9 and _, with at least one lowercase letter",
        ),
    ],
)
def test_callable_tools_need_valid_module_segments(surface: AgentSurface, message: str) -> None:
    with pytest.raises(ToolDefinitionError) as info:
        ToolSurface([tool("x", Availability.CALLABLE, surface=surface)])
    assert str(info.value) == message


def test_an_explicit_operation_must_be_valid_when_callable() -> None:
    bad = AgentSurface(operation="ReadFile")
    with pytest.raises(ToolDefinitionError, match="invalid operation 'ReadFile'"):
        ToolSurface([tool("read", Availability.SHOWCASED, surface=bad)])

    # hidden or catalog-only tools are not checked
    surface = ToolSurface(
        [
            tool("read", Availability.SEARCHABLE, surface=bad),
            tool("off", Availability.OFF, surface=bad),
        ]
    )
    assert surface.tool_names == ()


def test_call_paths_must_be_unique_among_callable_tools() -> None:
    fs_read = AgentSurface(module_path=("fs",), operation="read")

    with pytest.raises(ToolDefinitionError) as info:
        ToolSurface(
            [
                tool("read_a", Availability.CALLABLE, surface=fs_read),
                tool("read_b", Availability.SHOWCASED, surface=fs_read),
            ]
        )
    assert str(info.value) == "tools 'read_a' and 'read_b' have the same call path 'fs.read'"

    # a searchable duplicate does not clash
    ToolSurface(
        [
            tool("read_a", Availability.CALLABLE, surface=fs_read),
            tool("read_b", Availability.SEARCHABLE, surface=fs_read),
        ]
    )


def test_an_override_can_make_a_tool_invalid() -> None:
    bad = AgentSurface(operation="Bad")
    with pytest.raises(ToolDefinitionError, match="invalid operation 'Bad'"):
        ToolSurface(
            [tool("bad", Availability.SEARCHABLE, surface=bad)],
            overrides={"bad": Availability.CALLABLE},
        )


def test_duplicate_tool_names_are_rejected() -> None:
    with pytest.raises(ToolDefinitionError) as info:
        ToolSurface([tool("a", Availability.OFF), tool("a", Availability.CALLABLE)])
    assert str(info.value) == "two tools are named 'a'"


def test_entries_are_immutable() -> None:
    entry = ToolSurface([tool("a", Availability.CALLABLE)]).entries[0]

    with pytest.raises(AttributeError):
        entry.availability = Availability.OFF  # type: ignore[misc]
    assert repr(entry) == "ToolSurfaceEntry('a', callable)"


def test_tool_names_in_other_styles_get_snake_case_operations() -> None:
    from lash.kernel.tools.definition import operation_name

    assert operation_name("read-file") == "read_file"
    assert operation_name("ReadFile") == "read_file"
    assert operation_name("getHTTPStatus2") == "get_httpstatus2"
    assert operation_name("__x__") == "__x__"
    assert operation_name("mcp__app__Search") == "mcp_app_search"
    assert operation_name("123") == "tool_123"
    surface = ToolSurface([ToolDefinition(name="read-file"), ToolDefinition(name="ls")])
    assert surface.tool_names == ("read-file", "ls")
    assert surface.get("read-file") is not None
    assert ToolDefinition(name="read-file").call_path == "tools.read_file"
    with pytest.raises(ToolDefinitionError, match="read_file"):
        ToolSurface([ToolDefinition(name="read-file"), ToolDefinition(name="ReadFile")])


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "../etc", "a.b", "ünï"])
def test_tool_names_providers_would_reject_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="tool name"):
        ToolDefinition(name=name)
