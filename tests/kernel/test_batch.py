"""The ``batch`` tool: definition, planning, and result assembly."""

from __future__ import annotations

from typing import Any

import pytest

from lash.kernel import codec
from lash.kernel.protocols.batch import (
    BATCH_TOOL_NAME,
    MAX_BATCH_CALLS,
    BatchArgumentsError,
    BatchCall,
    BatchItem,
    batch_call_id,
    batch_item,
    batch_output,
    batch_tool_definition,
    plan_batch,
)
from lash.kernel.tools.definition import Availability, Scheduling
from lash.kernel.tools.docs import compact_contract
from lash.kernel.tools.output import FailureClass, ToolFailure, ToolOutput
from lash.kernel.tools.surface import ToolSurface
from lash.kernel.tools.validation import (
    InvalidToolArguments,
    check_tool_schema,
    validate_tool_args,
)


def test_definition_is_callable_parallel_and_not_showcased() -> None:
    d = batch_tool_definition()
    assert d.name == BATCH_TOOL_NAME
    assert d.availability is Availability.CALLABLE
    assert d.scheduling is Scheduling.PARALLEL
    assert d.surface.aliases == ("parallel_tools",)
    check_tool_schema(d.input_schema)
    check_tool_schema(d.output_schema)
    surface = ToolSurface([d])
    assert surface.tool_names == ("batch",)
    assert surface.prompt_tool_docs == ""  # callable tools are not documented in the prompt
    assert [s.name for s in surface.model_tool_specs] == ["batch"]


def test_batch_contract_documents_results_array() -> None:
    contract = compact_contract(batch_tool_definition())
    assert contract.name == "tools.batch"
    assert contract.signature == (
        "await tools.batch({ tool_calls: list[record] min_items 1 max_items 25 })?"
    )
    assert contract.returns == (
        "record{results: list[record{duration_ms: int, error?: any, index: int, "
        "result?: any, success: bool, tool: str}]}"
    )


def test_schema_rejects_empty_oversized_and_malformed_batches() -> None:
    schema = batch_tool_definition().input_schema
    validate_tool_args(schema, {"tool_calls": [{"tool": "read", "parameters": {}}]})
    cases: list[tuple[Any, str]] = [
        ({"tool_calls": []}, "arguments.tool_calls"),
        ({"tool_calls": [{"tool": "t", "parameters": {}}] * 26}, "arguments.tool_calls"),
        ({"tool_calls": [{"tool": "t"}]}, "arguments.tool_calls[0].parameters"),
        ({"tool_calls": [{"tool": "", "parameters": {}}]}, "arguments.tool_calls[0].tool"),
        ({"tool_calls": [{"tool": "t", "parameters": {}, "x": 1}]}, "arguments.tool_calls[0].x"),
        ({"calls": []}, "arguments.tool_calls"),
    ]
    for args, path in cases:
        with pytest.raises(InvalidToolArguments) as info:
            validate_tool_args(schema, args)
        assert path in [e.path for e in info.value.errors], (args, info.value.errors)


def test_plan_gives_each_entry_a_stable_call_id() -> None:
    plan = plan_batch(
        {
            "tool_calls": [
                {"tool": "read", "parameters": {"path": "a"}},
                {"tool": "read", "parameters": {"path": "b"}},
                {"tool": "ls"},
            ]
        },
        parent_call_id="call_7",
    )
    assert plan.answered == ()
    assert plan.calls == (
        BatchCall(index=0, call_id="call_7:00", tool="read", parameters={"path": "a"}),
        BatchCall(index=1, call_id="call_7:01", tool="read", parameters={"path": "b"}),
        BatchCall(index=2, call_id="call_7:02", tool="ls", parameters={}),
    )
    assert batch_call_id(None, 3) == "batch:03"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "Missing required parameter: tool_calls"),
        ({"tool_calls": "read"}, "Missing required parameter: tool_calls"),
        ([], "Missing required parameter: tool_calls"),
        ({"tool_calls": []}, "Invalid tool_calls: expected at least one call"),
        ({"tool_calls": ["read"]}, r"Invalid tool_calls\[0\]: expected object with tool"),
        ({"tool_calls": [{"parameters": {}}]}, r"Invalid tool_calls\[0\]: expected object"),
        ({"tool_calls": [{"tool": " "}]}, r"Invalid tool_calls\[0\]\.tool: expected non-empty"),
        ({"tool_calls": [{"tool": 3}]}, r"Invalid tool_calls\[0\]\.tool: expected non-empty"),
        (
            {"tool_calls": [{"tool": "a"}, {"tool": "b", "parameters": [1]}]},
            r"Invalid tool_calls\[1\]\.parameters: expected object",
        ),
    ],
)
def test_unusable_arguments_are_clear_errors(args: Any, message: str) -> None:
    with pytest.raises(BatchArgumentsError, match=message):
        plan_batch(args)


def test_nested_batch_and_overflow_entries_are_answered_without_running() -> None:
    entries = [{"tool": "batch", "parameters": {"tool_calls": []}}]
    entries += [{"tool": "t", "parameters": {}} for _ in range(MAX_BATCH_CALLS)]
    plan = plan_batch({"tool_calls": entries}, "p")
    assert [c.index for c in plan.calls] == list(range(1, MAX_BATCH_CALLS))
    assert plan.answered == (
        BatchItem(index=0, tool="batch", success=False, duration_ms=0,
                  error="Tool 'batch' is not allowed inside batch"),
        BatchItem(index=MAX_BATCH_CALLS, tool="t", success=False, duration_ms=0,
                  error="Maximum of 25 tool calls allowed in batch"),
    )  # fmt: skip


def test_output_orders_entries_and_projects_values_and_failures() -> None:
    plan = plan_batch({"tool_calls": [{"tool": "a"}, {"tool": "batch"}, {"tool": "b"}]}, "p")
    a, b = plan.calls
    failure = ToolFailure(failure_class=FailureClass.TIMEOUT, code="slow", message="too slow")
    items = [
        batch_item(b, ToolOutput.failure(failure), duration_ms=9),
        *plan.answered,
        batch_item(a, ToolOutput.success({"n": 1}), duration_ms=4),
    ]
    out = batch_output(items)
    assert out.value == {
        "results": [
            {"index": 0, "tool": "a", "success": True, "duration_ms": 4, "result": {"n": 1}},
            {"index": 1, "tool": "batch", "success": False, "duration_ms": 0,
             "error": "Tool 'batch' is not allowed inside batch"},
            {"index": 2, "tool": "b", "success": False, "duration_ms": 9,
             "error": {"status": "failure", "failure_class": "timeout", "code": "slow",
                       "message": "too slow", "retry": {"type": "never"}}},
        ]
    }  # fmt: skip
    assert codec.decode(codec.encode(out), ToolOutput) == out


def test_output_rejects_repeated_indexes() -> None:
    item = BatchItem(index=0, tool="a", success=True, duration_ms=1)
    with pytest.raises(BatchArgumentsError, match="repeat an index"):
        batch_output([item, item])
