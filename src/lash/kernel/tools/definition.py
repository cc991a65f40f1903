"""Tool definitions: identity, schemas, availability, scheduling and retry policy."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, TypeAlias

import msgspec

from ..llm import LlmToolSpec

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_SEGMENT = re.compile(r"[^a-z0-9_]+")
_SEGMENT = re.compile(r"[a-z0-9_]*[a-z][a-z0-9_]*")


def operation_name(tool_name: str) -> str:
    """A code-style operation name for a tool name: ``read-file``/``ReadFile`` -> ``read_file``.

    Names that already are valid operations (``[a-z0-9_]`` with a letter) are kept.
    """
    if _SEGMENT.fullmatch(tool_name):
        return tool_name
    snake = _NOT_SEGMENT.sub("_", _CAMEL.sub("_", tool_name).lower())
    snake = re.sub(r"_+", "_", snake).strip("_")
    if not any(c.isalpha() for c in snake):
        snake = f"tool_{snake}" if snake else "tool"
    return snake


_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

DEFAULT_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": True,
}


class Availability(StrEnum):
    """How visible a tool is, ordered ``off < searchable < callable < showcased``."""

    OFF = "off"
    """Hidden; cannot be called."""
    SEARCHABLE = "searchable"
    """Listed in a catalog only."""
    CALLABLE = "callable"
    """In the model's tool list."""
    SHOWCASED = "showcased"
    """Callable and documented in the system prompt."""

    @property
    def rank(self) -> int:
        """Position in the visibility order."""
        return _AVAILABILITY_RANK[self]

    def at_least(self, other: Availability) -> bool:
        """True when this availability is ``other`` or more visible."""
        return self.rank >= other.rank


_AVAILABILITY_RANK = {a: i for i, a in enumerate(Availability)}


class Scheduling(StrEnum):
    """Whether a tool may run concurrently with other calls of the same batch."""

    PARALLEL = "parallel"
    SERIAL = "serial"


class NeverRetry(msgspec.Struct, tag="never", tag_field="type", **_S):
    """Never retry a failed call."""

    @property
    def max_attempts(self) -> int:
        """Total attempts allowed."""
        return 1


class SafeRetry(msgspec.Struct, tag="safe", tag_field="type", **_S):
    """Retry calls whose failure says a retry is safe."""

    max_attempts: int = 3
    base_delay_ms: int = 200
    max_delay_ms: int = 5_000

    def __post_init__(self) -> None:
        _check_retry(self.max_attempts, self.base_delay_ms, self.max_delay_ms)


class IdempotentRetry(msgspec.Struct, tag="idempotent", tag_field="type", **_S):
    """Retry any retryable failure; the tool is idempotent per replay key."""

    max_attempts: int = 3
    base_delay_ms: int = 200
    max_delay_ms: int = 5_000

    def __post_init__(self) -> None:
        _check_retry(self.max_attempts, self.base_delay_ms, self.max_delay_ms)


def _check_retry(max_attempts: int, base: int, cap: int) -> None:
    if max_attempts < 1:
        raise ValueError(f"retry max_attempts must be >= 1, got {max_attempts}")
    if base < 0 or cap < 0:
        raise ValueError("retry delays must be >= 0")


RetryPolicy: TypeAlias = NeverRetry | SafeRetry | IdempotentRetry


def retry_delay_ms(policy: RetryPolicy, retry_index: int, requested_ms: int | None = None) -> int:
    """Delay before retry number ``retry_index`` (0-based): requested, else exponential, capped."""
    if isinstance(policy, NeverRetry):
        return 0
    if requested_ms is not None:
        delay = requested_ms
    else:
        delay = policy.base_delay_ms * (2 ** min(retry_index, 62))
    if policy.max_delay_ms:
        delay = min(delay, policy.max_delay_ms)
    return delay


class AgentSurface(msgspec.Struct, **_S):
    """Where a tool appears in code-style documentation (``await tools.read_file(...)``)."""

    module_path: tuple[str, ...] = ()
    operation: str | None = None
    aliases: tuple[str, ...] = ()


class ToolDefinition(msgspec.Struct, **_S):
    """Everything the runtime and the model need to know about one tool."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=lambda: dict(DEFAULT_INPUT_SCHEMA))
    output_schema: Any = None
    availability: Availability = Availability.SHOWCASED
    scheduling: Scheduling = Scheduling.PARALLEL
    retry_policy: RetryPolicy = msgspec.field(default_factory=NeverRetry)
    surface: AgentSurface = msgspec.field(default_factory=AgentSurface)
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _TOOL_NAME.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 characters of letters, digits, '_' or '-' "
                "(what every provider accepts)"
            )
        if not isinstance(self.input_schema, dict):
            raise ValueError(f"tool {self.name!r}: input_schema must be a JSON object")

    @property
    def module_path(self) -> tuple[str, ...]:
        """The module path for code-style docs, ``("tools",)`` by default."""
        return self.surface.module_path or ("tools",)

    @property
    def operation(self) -> str:
        """The operation name for code-style docs; by default the tool name in snake case."""
        op = self.surface.operation
        return op if op and op.strip() else operation_name(self.name)

    @property
    def call_path(self) -> str:
        """``module.path.operation``."""
        return ".".join((*self.module_path, self.operation))

    def model_tool(self) -> LlmToolSpec:
        """The tool as the model sees it."""
        return LlmToolSpec(
            name=self.name,
            description=self.description,
            input_schema=self.input_schema,
            output_schema=self.output_schema,
        )
