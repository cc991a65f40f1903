"""Preparing a native-tool-calling turn: surface, system prompt, tool specs."""

from __future__ import annotations

import pytest

from lash.kernel import codec
from lash.kernel.effects import Checkpoint, CheckpointDelivered, Done, LlmCall, LlmCompleted
from lash.kernel.errors import ToolDefinitionError
from lash.kernel.llm import LlmResponse, TerminalReason
from lash.kernel.machine import TurnMachine
from lash.kernel.messages import user_message
from lash.kernel.outcome import finished_text
from lash.kernel.prompt import PromptContribution, PromptGate, PromptLayer, PromptSlot, SlotLayer
from lash.kernel.protocols.standard import (
    STANDARD_EXECUTION_PROMPT,
    StandardDriver,
    standard_config,
    standard_surface,
)
from lash.kernel.tools import Availability, ToolDefinition

READ = ToolDefinition(name="read_file", description="Read a file.")
HIDDEN = ToolDefinition(name="shell", availability=Availability.SEARCHABLE)


def test_config_carries_prompt_specs_and_driver() -> None:
    cfg = standard_config(
        model="m1",
        tools=[READ, HIDDEN],
        contributions=[PromptContribution.project_instructions("Use tabs.")],
        max_turns=3,
    )
    assert isinstance(cfg.driver, StandardDriver)
    assert cfg.model == "m1"
    assert cfg.max_turns == 3
    assert [t.name for t in cfg.tools] == ["read_file", "batch"]
    assert STANDARD_EXECUTION_PROMPT in cfg.system_prompt
    assert "## Guidance" in cfg.system_prompt
    assert "### Project Instructions\n\nUse tabs." in cfg.system_prompt


def test_gated_contributions_follow_tool_availability() -> None:
    shell_note = PromptContribution.guidance(
        "Shell", "Quote every path.", gate=PromptGate(tools=("shell",))
    )
    read_note = PromptContribution.guidance(
        "Reading", "Read before writing.", gate=PromptGate(tools=("read_file",))
    )
    cfg = standard_config(model="m", tools=[READ, HIDDEN], contributions=[shell_note, read_note])
    assert "Read before writing." in cfg.system_prompt
    assert "Quote every path." not in cfg.system_prompt


def test_layers_reach_the_prompt() -> None:
    layer = PromptLayer(
        slots={
            PromptSlot.ENVIRONMENT: SlotLayer(
                contributions=(PromptContribution.environment("Env", "cwd=/srv"),)
            )
        }
    )
    cfg = standard_config(model="m", layers=[layer])
    assert cfg.system_prompt.endswith("### Env\n\ncwd=/srv")


def test_batch_is_added_once() -> None:
    surface = standard_surface([READ])
    assert surface.tool_names == ("read_file", "batch")
    again = standard_surface([e.definition for e in surface.entries])
    assert again.tool_names == ("read_file", "batch")


def test_bad_tool_sets_are_definition_errors() -> None:
    with pytest.raises(ToolDefinitionError, match="two tools are named 'read_file'"):
        standard_config(model="m", tools=[READ, READ])


def test_a_user_tool_named_batch_is_refused() -> None:
    mine = ToolDefinition(name="batch", description="My own batch.")
    reserved = "tool name 'batch' is reserved for the built-in batch tool; pick another name"
    with pytest.raises(ToolDefinitionError, match=reserved):
        standard_surface([READ, mine])
    with pytest.raises(ToolDefinitionError, match=reserved):
        standard_config(model="m", tools=[mine])


def test_built_machine_sends_prompt_and_tools_and_finishes() -> None:
    cfg = standard_config(model="m1", tools=[READ])
    machine = TurnMachine(cfg, inputs=[user_message("u1", "hi")])
    effects = []
    while (effect := machine.poll()) is not None:
        effects.append(effect)
        if isinstance(effect, LlmCall):
            request = effect.request
            assert request.messages[0].blocks[0].text == cfg.system_prompt  # type: ignore[union-attr]
            assert [t.name for t in request.tools] == ["read_file", "batch"]
            reply = LlmResponse(full_text="hello", terminal_reason=TerminalReason.STOP)
            machine.respond(LlmCompleted(id=effect.id, response=reply))
        elif isinstance(effect, Checkpoint):
            machine.respond(CheckpointDelivered(id=effect.id))
    done = effects[-1]
    assert isinstance(done, Done)
    assert done.outcome == finished_text("hello")
    # The request is deterministic: the same config yields the same bytes.
    again = TurnMachine(
        standard_config(model="m1", tools=[READ]), inputs=[user_message("u1", "hi")]
    )
    first = again.poll()
    while not isinstance(first, LlmCall):
        first = again.poll()
    assert codec.encode(first) == codec.encode(next(e for e in effects if isinstance(e, LlmCall)))
