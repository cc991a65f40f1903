"""The ``batch`` tool: several independent tool calls in one call.

This module is the pure half: the definition, turning arguments into a plan,
and assembling the result. Running the planned calls concurrently is the
runtime's job; each planned call has its own stable call id
(``{parent}:{index:02}``) and so its own replay key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import KernelError
from ..tools.definition import AgentSurface, Availability, Scheduling, ToolDefinition
from ..tools.output import ToolOutput, ToolSuccess

BATCH_TOOL_NAME = "batch"
MAX_BATCH_CALLS = 25

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

BATCH_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tool_calls": {
            "type": "array",
            "description": "Independent calls to run together; results come back in this order.",
            "minItems": 1,
            "maxItems": MAX_BATCH_CALLS,
            "items": {
                "type": "object",
                "properties": {
                    "tool": {"type": "string", "minLength": 1, "description": "Tool name."},
                    "parameters": {"type": "object", "description": "The tool's arguments."},
                },
                "required": ["tool", "parameters"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["tool_calls"],
    "additionalProperties": False,
}

BATCH_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
            "description": "One entry per call, in call order.",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer", "description": "Position in tool_calls."},
                    "tool": {"type": "string"},
                    "success": {"type": "boolean"},
                    "duration_ms": {"type": "integer"},
                    "result": {"description": "The tool's value, when it succeeded."},
                    "error": {"description": "What went wrong, when it did not."},
                },
                "required": ["index", "tool", "success", "duration_ms"],
            },
        }
    },
    "required": ["results"],
}


def batch_tool_definition() -> ToolDefinition:
    """The ``batch`` tool as the model sees it (callable, not documented in the prompt)."""
    return ToolDefinition(
        name=BATCH_TOOL_NAME,
        description=(
            f"Run up to {MAX_BATCH_CALLS} independent tool calls at once. Use it when two or "
            "more calls do not depend on each other's results; make dependent calls one "
            "after another instead. Nested batches are not allowed."
        ),
        input_schema=BATCH_INPUT_SCHEMA,
        output_schema=BATCH_OUTPUT_SCHEMA,
        availability=Availability.CALLABLE,
        scheduling=Scheduling.PARALLEL,
        surface=AgentSurface(module_path=("tools",), aliases=("parallel_tools",)),
        examples=(
            '{"tool_calls": [{"tool": "read_file", "parameters": {"path": "a.txt"}}, '
            '{"tool": "read_file", "parameters": {"path": "b.txt"}}]}',
        ),
    )


class BatchArgumentsError(KernelError):
    """The ``batch`` arguments are unusable; the message says where."""


class BatchCall(msgspec.Struct, **_S):
    """One call a batch will dispatch."""

    index: int
    call_id: str
    tool: str
    parameters: dict[str, Any]


class BatchItem(msgspec.Struct, **_S):
    """The outcome of one entry of a batch, in the tool's result."""

    index: int
    tool: str
    success: bool
    duration_ms: int
    result: Any = None
    error: Any = None


class BatchPlan(msgspec.Struct, **_S):
    """What to run, and the entries already answered without running anything."""

    calls: tuple[BatchCall, ...]
    answered: tuple[BatchItem, ...] = ()


def batch_call_id(parent_call_id: str | None, index: int) -> str:
    """The call id of entry ``index`` of the batch call ``parent_call_id``."""
    return f"{parent_call_id or 'batch'}:{index:02d}"


def plan_batch(args: Any, parent_call_id: str | None = None) -> BatchPlan:
    """Turn ``batch`` arguments into calls to dispatch.

    Raises ``BatchArgumentsError`` for arguments no batch can be made of. A
    nested ``batch`` entry, or one past the limit, is answered at once with an
    error and the rest still run.
    """
    calls_value = args.get("tool_calls") if isinstance(args, dict) else None
    if not isinstance(calls_value, list):
        raise BatchArgumentsError("Missing required parameter: tool_calls")
    if not calls_value:
        raise BatchArgumentsError("Invalid tool_calls: expected at least one call")
    calls: list[BatchCall] = []
    answered: list[BatchItem] = []
    for i, entry in enumerate(calls_value):
        if not isinstance(entry, dict) or "tool" not in entry:
            raise BatchArgumentsError(
                f"Invalid tool_calls[{i}]: expected object with tool and parameters"
            )
        tool = entry["tool"]
        if not isinstance(tool, str) or not tool.strip():
            raise BatchArgumentsError(f"Invalid tool_calls[{i}].tool: expected non-empty string")
        parameters = entry.get("parameters", {})
        if not isinstance(parameters, dict):
            raise BatchArgumentsError(f"Invalid tool_calls[{i}].parameters: expected object")
        if i >= MAX_BATCH_CALLS:
            error = f"Maximum of {MAX_BATCH_CALLS} tool calls allowed in batch"
            answered.append(
                BatchItem(index=i, tool=tool, success=False, duration_ms=0, error=error)
            )
        elif tool == BATCH_TOOL_NAME:
            error = f"Tool '{BATCH_TOOL_NAME}' is not allowed inside batch"
            answered.append(
                BatchItem(index=i, tool=tool, success=False, duration_ms=0, error=error)
            )
        else:
            call_id = batch_call_id(parent_call_id, i)
            calls.append(BatchCall(index=i, call_id=call_id, tool=tool, parameters=parameters))
    return BatchPlan(calls=tuple(calls), answered=tuple(answered))


def batch_item(call: BatchCall, output: ToolOutput, duration_ms: int = 0) -> BatchItem:
    """The entry for a dispatched call: its value on success, else the failure as JSON."""
    outcome = output.outcome
    if isinstance(outcome, ToolSuccess):
        return BatchItem(
            index=call.index,
            tool=call.tool,
            success=True,
            duration_ms=duration_ms,
            result=outcome.value,
        )
    return BatchItem(
        index=call.index,
        tool=call.tool,
        success=False,
        duration_ms=duration_ms,
        error=msgspec.to_builtins(outcome),
    )


def batch_output(items: Iterable[BatchItem]) -> ToolOutput:
    """The ``batch`` tool's result: ``{"results": [...]}`` in entry order."""
    ordered = sorted(items, key=lambda item: item.index)
    indexes = [item.index for item in ordered]
    if len(set(indexes)) != len(indexes):
        raise BatchArgumentsError(f"batch results repeat an index: {indexes}")
    results = [msgspec.to_builtins(item) for item in ordered]
    # Values are already in tool-value wire form; wrap without re-encoding them.
    return ToolOutput(outcome=ToolSuccess(value={"results": results}))
