"""The tool surface of a turn: which tools exist, which the model may call, and how they read.

A :class:`ToolSurface` is built from tool definitions, optional availability
overrides and tool-list notes. It is immutable; the views the turn needs (tool
names, model tool specs, prompt docs) are computed on first use and kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from ..errors import ToolDefinitionError
from ..llm import LlmToolSpec
from . import docs as _docs
from .definition import _SEGMENT, Availability, ToolDefinition

__all__ = ["ToolSurface", "ToolSurfaceEntry"]


class ToolSurfaceEntry:
    """One tool on a surface with the availability in force for this surface."""

    __slots__ = ("availability", "definition")

    definition: ToolDefinition
    availability: Availability

    def __init__(self, definition: ToolDefinition, availability: Availability) -> None:
        object.__setattr__(self, "definition", definition)
        object.__setattr__(self, "availability", availability)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"ToolSurfaceEntry({self.definition.name!r}, {self.availability.value})"

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.definition.name

    @property
    def is_callable(self) -> bool:
        """True when the model may call the tool (callable or showcased)."""
        return self.availability.at_least(Availability.CALLABLE)

    @property
    def is_showcased(self) -> bool:
        """True when the tool is documented in the prompt."""
        return self.availability is Availability.SHOWCASED


class ToolSurface:
    """The tools of a turn, split by availability, with lazily computed views.

    ``overrides`` maps tool names to the availability to use instead of each
    definition's own (names that match no tool are ignored). ``notes`` are
    appended to the prompt docs after trimming; blank notes are dropped.

    Raises :class:`ToolDefinitionError` when two tools share a name, when a
    callable tool's module path segments or operation are not ``[a-z0-9_]``
    with at least one lowercase letter, or when two callable tools share a
    call path.
    """

    __slots__ = (
        "_by_name",
        "_docs",
        "_entries",
        "_fingerprint",
        "_names",
        "_notes",
        "_specs",
    )

    def __init__(
        self,
        tools: Iterable[ToolDefinition] = (),
        *,
        overrides: Mapping[str, Availability] | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        overrides = overrides or {}
        entries: list[ToolSurfaceEntry] = []
        by_name: dict[str, ToolSurfaceEntry] = {}
        for tool in tools:
            if tool.name in by_name:
                raise ToolDefinitionError(f"two tools are named {tool.name!r}")
            entry = ToolSurfaceEntry(
                tool, Availability(overrides.get(tool.name, tool.availability))
            )
            entries.append(entry)
            by_name[tool.name] = entry
        _check_call_paths(entries)
        self._entries: tuple[ToolSurfaceEntry, ...] = tuple(entries)
        self._by_name = by_name
        self._notes: tuple[str, ...] = tuple(n.strip() for n in notes if n.strip())
        self._names: tuple[str, ...] | None = None
        self._fingerprint: str | None = None
        self._specs: tuple[LlmToolSpec, ...] | None = None
        self._docs: str | None = None

    def __repr__(self) -> str:
        return f"ToolSurface({list(self._entries)!r})"

    # -- plain accessors ---------------------------------------------------------------

    @property
    def entries(self) -> tuple[ToolSurfaceEntry, ...]:
        """Every tool on the surface, in order, with its availability (``off`` ones included)."""
        return self._entries

    @property
    def notes(self) -> tuple[str, ...]:
        """The trimmed, non-blank tool-list notes."""
        return self._notes

    @property
    def callable_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools the model may call, in surface order."""
        return tuple(e.definition for e in self._entries if e.is_callable)

    @property
    def showcased_tools(self) -> tuple[ToolDefinition, ...]:
        """The tools documented in the prompt, in surface order."""
        return tuple(e.definition for e in self._entries if e.is_showcased)

    def availability(self, name: str) -> Availability | None:
        """The availability of the named tool on this surface, or None when it is unknown."""
        entry = self._by_name.get(name)
        return entry.availability if entry is not None else None

    def get(self, name: str) -> ToolDefinition | None:
        """The named tool if the model may call it; None when unknown, off or searchable only."""
        entry = self._by_name.get(name)
        return entry.definition if entry is not None and entry.is_callable else None

    def is_callable(self, name: str) -> bool:
        """True when the named tool exists and the model may call it."""
        entry = self._by_name.get(name)
        return entry is not None and entry.is_callable

    # -- memoized views ------------------------------------------------------------------

    @property
    def tool_names(self) -> tuple[str, ...]:
        """Names of the callable tools, in surface order."""
        if self._names is None:
            self._names = tuple(e.name for e in self._entries if e.is_callable)
        return self._names

    @property
    def tool_names_fingerprint(self) -> str:
        """Lowercase hex SHA-256 of ``tool_names`` joined by newlines."""
        if self._fingerprint is None:
            joined = "\n".join(self.tool_names).encode()
            self._fingerprint = hashlib.sha256(joined).hexdigest()
        return self._fingerprint

    @property
    def model_tool_specs(self) -> tuple[LlmToolSpec, ...]:
        """The callable tools as the model sees them, in surface order."""
        if self._specs is None:
            self._specs = tuple(e.definition.model_tool() for e in self._entries if e.is_callable)
        return self._specs

    @property
    def prompt_tool_docs(self) -> str:
        """Markdown docs of the showcased tools, then the notes, separated by blank lines."""
        if self._docs is None:
            blocks = [
                _docs.compact_contract(e.definition).render_markdown()
                for e in self._entries
                if e.is_showcased
            ]
            self._docs = "\n\n".join([*blocks, *self._notes])
        return self._docs


def _check_call_paths(entries: Iterable[ToolSurfaceEntry]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.is_callable:
            continue
        tool = entry.definition
        for segment in tool.module_path:
            _check_segment(tool.name, "module path segment", segment)
        _check_segment(tool.name, "operation", tool.operation)
        path = tool.call_path
        if path in seen:
            raise ToolDefinitionError(
                f"tools {seen[path]!r} and {tool.name!r} have the same call path {path!r}"
            )
        seen[path] = tool.name


def _check_segment(tool_name: str, what: str, segment: str) -> None:
    if not _SEGMENT.fullmatch(segment):
        raise ToolDefinitionError(
            f"tool {tool_name!r} has invalid {what} {segment!r}: "
            "use only a-z, 0-9 and _, with at least one lowercase letter"
        )
