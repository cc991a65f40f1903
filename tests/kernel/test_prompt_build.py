"""Prompt layers, gating and the memoized build (reference §3.7)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import msgspec
import pytest

import lash.kernel.prompt as prompt_pkg
from lash.kernel.prompt import (
    ASK_GUIDANCE_BULLET,
    CORE_GUIDANCE_BULLETS,
    DEFAULT_TEMPLATE,
    MAIN_AGENT_INTRO,
    Builtin,
    BuiltinEntry,
    PreparedPrompt,
    PromptBuilder,
    PromptBuildInput,
    PromptContext,
    PromptContribution,
    PromptGate,
    PromptLayer,
    PromptSection,
    PromptSlot,
    PromptTemplate,
    SlotLayer,
    TextEntry,
    build_prompt,
    filter_prompt_contributions,
    resolve_prompt_layers,
)
from lash.kernel.tools.definition import Availability

GUIDANCE = "\n".join(CORE_GUIDANCE_BULLETS)


def build_input(
    execution_prompt: str = "Use tools.",
    contributions: tuple[PromptContribution, ...] = (),
    tool_names: tuple[str, ...] = ("read_file",),
) -> PromptBuildInput:
    return PromptBuildInput(
        execution_prompt=execution_prompt,
        tool_names=tool_names,
        extra_contributions=contributions,
    )


def contents(contributions: tuple[PromptContribution, ...]) -> list[str]:
    return [c.content for c in contributions]


# --- build_prompt -------------------------------------------------------------


def test_build_prompt_renders_template_from_merged_context() -> None:
    prepared = build_prompt(
        build_input(
            contributions=(
                PromptContribution.guidance("Repo", "Follow repo rules."),
                PromptContribution.guidance("Repo", "Follow repo rules."),
                PromptContribution.project_instructions("Be careful."),
            )
        )
    )
    assert prepared.system_prompt == (
        f"{MAIN_AGENT_INTRO}\n\n"
        "## Execution\n\nUse tools.\n\n"
        f"## Guidance\n\n{GUIDANCE}\n\n"
        "### Project Instructions\n\nBe careful.\n\n"
        "### Repo\n\nFollow repo rules."
    )
    assert prepared.context == PromptContext(
        execution_prompt="Use tools.",
        tool_names=("read_file",),
        contributions=(
            PromptContribution.guidance("Repo", "Follow repo rules."),
            PromptContribution.project_instructions("Be careful."),
        ),
    )


def test_build_prompt_merges_layers_and_extras_then_normalizes() -> None:
    layer = PromptLayer(
        template=PromptTemplate(
            sections=(
                PromptSection(
                    entries=(
                        TextEntry(content="Custom head."),
                        BuiltinEntry(builtin=Builtin.CORE_GUIDANCE),
                    )
                ),
                DEFAULT_TEMPLATE.sections[2],
            )
        )
    ).with_contribution(PromptContribution.guidance("Layer", "from layer", priority=5))
    prepared = build_prompt(
        PromptBuildInput(
            execution_prompt="ignored by this template",
            tool_names=("ask",),
            layers=(layer,),
            extra_contributions=(
                PromptContribution.guidance("Extra", "  from extra  "),
                PromptContribution.guidance("Layer", "from layer", priority=5),
            ),
        )
    )
    ask_guidance = "\n".join(
        (CORE_GUIDANCE_BULLETS[0], ASK_GUIDANCE_BULLET, *CORE_GUIDANCE_BULLETS[1:])
    )
    assert prepared.system_prompt == (
        f"Custom head.\n\n{ask_guidance}\n\n"
        f"## Guidance\n\n{ask_guidance}\n\n"
        "### Extra\n\nfrom extra\n\n### Layer\n\nfrom layer"
    )
    assert contents(prepared.context.contributions) == ["from extra", "from layer"]


def test_build_prompt_without_anything_renders_intro_and_guidance() -> None:
    prepared = build_prompt(PromptBuildInput())
    assert prepared.system_prompt == f"{MAIN_AGENT_INTRO}\n\n## Guidance\n\n{GUIDANCE}"


# --- PromptBuilder memo --------------------------------------------------------


def test_build_prompt_cached_reuses_result_on_identical_inputs() -> None:
    builder = PromptBuilder()
    contributions = (PromptContribution.guidance("Repo", "Follow repo rules."),)
    first = builder.build(build_input(contributions=contributions))
    # An equal but distinct input object still hits the memo.
    second = builder.build(build_input(contributions=contributions))
    assert second is first


def test_build_prompt_cached_renders_again_when_inputs_change() -> None:
    builder = PromptBuilder()
    first = builder.build(build_input("Use tools."))
    second = builder.build(build_input("Use other tools."))
    assert second is not first
    assert second.system_prompt != first.system_prompt
    assert "Use other tools." in second.system_prompt


def test_memo_holds_one_entry_and_results_stay_equal() -> None:
    builder = PromptBuilder()
    a, b = build_input("A"), build_input("B")
    first_a = builder.build(a)
    builder.build(b)
    again_a = builder.build(a)
    assert again_a is not first_a
    assert again_a == first_a == build_prompt(a)
    assert builder.build(a) is again_a
    builder.clear()
    assert builder.build(a) is not again_a


def test_memo_sees_changes_inside_layers() -> None:
    builder = PromptBuilder()
    layer = PromptLayer().with_contribution(PromptContribution.guidance("T", "one"))
    first = builder.build(PromptBuildInput(layers=(layer,)))
    changed = PromptLayer().with_contribution(PromptContribution.guidance("T", "two"))
    second = builder.build(PromptBuildInput(layers=(changed,)))
    assert "two" in second.system_prompt
    assert second is not first


# --- layers -------------------------------------------------------------------


def template_with_text(text: str) -> PromptTemplate:
    return PromptTemplate(
        sections=(
            PromptSection(
                entries=(
                    TextEntry(content=text),
                    BuiltinEntry(builtin=Builtin.EXECUTION_INSTRUCTIONS),
                )
            ),
        )
    )


def test_prompt_layers_use_later_template() -> None:
    core = PromptLayer(template=template_with_text("core"))
    session = PromptLayer(template=template_with_text("session"))
    resolved = resolve_prompt_layers([core, session])
    assert resolved.template.render(PromptContext(execution_prompt="execute")) == (
        "session\n\nexecute"
    )


def test_prompt_layers_without_template_keep_the_current_one() -> None:
    core = PromptLayer(template=template_with_text("core"))
    resolved = resolve_prompt_layers([core, PromptLayer()])
    assert resolved.template == template_with_text("core")
    assert resolve_prompt_layers([]).template == DEFAULT_TEMPLATE
    assert resolve_prompt_layers([]).contributions == ()


def test_prompt_layers_append_inherited_slot_content() -> None:
    core = PromptLayer().with_contribution(PromptContribution.guidance("Core", "core"))
    session = PromptLayer().with_contribution(PromptContribution.guidance("Session", "session"))
    resolved = resolve_prompt_layers([core, session])
    assert contents(resolved.contributions) == ["core", "session"]


def test_prompt_layers_clear_one_slot_without_touching_others() -> None:
    core = (
        PromptLayer()
        .with_contribution(PromptContribution.guidance("Guide", "guide"))
        .with_contribution(PromptContribution.project_instructions("project"))
    )
    session = PromptLayer().with_cleared_slot(PromptSlot.GUIDANCE)
    resolved = resolve_prompt_layers([core, session])
    assert contents(resolved.contributions) == ["project"]


def test_prompt_layers_replace_slot_and_normalize_contribution_slot() -> None:
    core = PromptLayer().with_contribution(PromptContribution.guidance("Guide", "old"))
    session = PromptLayer().with_replaced_slot(
        PromptSlot.GUIDANCE, [PromptContribution.project_instructions("new")]
    )
    resolved = resolve_prompt_layers([core, session])
    assert contents(resolved.contributions) == ["new"]
    assert resolved.contributions[0].slot is PromptSlot.GUIDANCE
    assert resolved.contributions[0].title == "Project Instructions"


def test_prompt_layers_allow_later_append_after_replace() -> None:
    core = PromptLayer().with_contribution(PromptContribution.guidance("Guide", "old"))
    session = PromptLayer().with_replaced_slot(
        PromptSlot.GUIDANCE, [PromptContribution.guidance("New", "new")]
    )
    turn = PromptLayer().with_contribution(PromptContribution.guidance("Turn", "turn"))
    resolved = resolve_prompt_layers([core, session, turn])
    assert contents(resolved.contributions) == ["new", "turn"]


def test_prompt_layers_reslot_contributions_filed_under_another_key() -> None:
    # Decoded or hand-built layers may file a contribution under a different slot key.
    layer = PromptLayer(
        slots={
            PromptSlot.ENVIRONMENT: SlotLayer(
                contributions=(PromptContribution.guidance("G", "moved"),)
            )
        }
    )
    (c,) = resolve_prompt_layers([layer]).contributions
    assert c == PromptContribution.environment("G", "moved")


def test_prompt_layers_visit_slots_in_slot_order() -> None:
    slots = {
        slot: SlotLayer(contributions=(PromptContribution.intro(None, slot.value),))
        for slot in reversed(PromptSlot)
    }
    resolved = resolve_prompt_layers([PromptLayer(slots=slots)])
    assert contents(resolved.contributions) == [s.value for s in PromptSlot]


def test_prompt_layers_do_not_normalize() -> None:
    c = PromptContribution.guidance("T", "  same ")
    layer = PromptLayer().with_contribution(c).with_contribution(c)
    assert resolve_prompt_layers([layer]).contributions == (c, c)


def test_layer_helpers_do_not_mutate_the_original() -> None:
    base = PromptLayer().with_contribution(PromptContribution.guidance("A", "a"))
    grown = base.with_contribution(PromptContribution.guidance("B", "b"))
    cleared = base.with_cleared_slot(PromptSlot.GUIDANCE)
    assert contents(base.slots[PromptSlot.GUIDANCE].contributions) == ["a"]
    assert contents(grown.slots[PromptSlot.GUIDANCE].contributions) == ["a", "b"]
    assert cleared.slots[PromptSlot.GUIDANCE] == SlotLayer(reset=True)
    replaced_then_added = cleared.with_contribution(PromptContribution.guidance("C", "c"))
    assert replaced_then_added.slots[PromptSlot.GUIDANCE].reset is True
    assert base.with_template(DEFAULT_TEMPLATE).template == DEFAULT_TEMPLATE


def test_layer_wire_form_round_trips() -> None:
    layer = (
        PromptLayer(template=template_with_text("t"))
        .with_contribution(PromptContribution.runtime_context("cwd"))
        .with_cleared_slot(PromptSlot.GUIDANCE)
    )
    raw = msgspec.json.encode(layer)
    assert msgspec.json.decode(raw)["slots"] == {
        "runtime_context": {
            "contributions": [
                {"slot": "runtime_context", "content": "cwd", "title": "Runtime Context"}
            ]
        },
        "guidance": {"reset": True},
    }
    assert msgspec.json.decode(raw, type=PromptLayer) == layer
    assert msgspec.json.encode(PromptLayer()) == b"{}"


def test_layer_with_unknown_slot_key_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"'footer'.*\$\.slots"):
        msgspec.json.decode(b'{"slots":{"footer":{"reset":true}}}', type=PromptLayer)


# --- gates --------------------------------------------------------------------

TOOLS = {
    "off": Availability.OFF,
    "search": Availability.SEARCHABLE,
    "call": Availability.CALLABLE,
    "show": Availability.SHOWCASED,
}


def gated(tools: tuple[str, ...], minimum: Availability | None = None) -> PromptContribution:
    gate = (
        PromptGate(tools=tools)
        if minimum is None
        else PromptGate(tools=tools, minimum_availability=minimum)
    )
    return PromptContribution.guidance(None, ",".join(tools), gate=gate)


def test_ungated_contributions_are_kept() -> None:
    open_ = (PromptContribution.guidance(None, "free"), gated(()))
    assert filter_prompt_contributions(open_, TOOLS.get) == open_


@pytest.mark.parametrize(
    ("tool", "minimum", "kept"),
    [
        ("missing", Availability.OFF, False),
        ("off", Availability.OFF, True),
        ("search", None, False),
        ("call", None, True),
        ("show", None, True),
        ("call", Availability.SHOWCASED, False),
        ("show", Availability.SHOWCASED, True),
        ("search", Availability.SEARCHABLE, True),
        ("off", Availability.SEARCHABLE, False),
    ],
)
def test_prompt_gate_requires_matching_tool_availability(
    tool: str, minimum: Availability | None, kept: bool
) -> None:
    c = gated((tool,), minimum)
    assert filter_prompt_contributions([c], TOOLS.get) == ((c,) if kept else ())


def test_prompt_gate_opens_when_any_tool_qualifies_and_keeps_order() -> None:
    a = gated(("missing", "search", "show"), Availability.SHOWCASED)
    b = gated(("off", "search"))
    c = PromptContribution.guidance(None, "free")
    assert filter_prompt_contributions([c, b, a], TOOLS.get) == (c, a)


# --- packaging and purity -----------------------------------------------------


def test_public_names_are_exported_and_documented() -> None:
    for name in prompt_pkg.__all__:
        obj = getattr(prompt_pkg, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    assert PreparedPrompt.__doc__
    assert SlotLayer.__doc__


def test_prompt_package_is_pure() -> None:
    forbidden = {"asyncio", "os", "io", "time", "random", "uuid", "threading", "socket", "pathlib"}
    forbidden |= {"datetime", "subprocess", "secrets", "tempfile", "shutil", "sys"}
    root = pathlib.Path(prompt_pkg.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_importing_the_prompt_package_stays_light() -> None:
    code = (
        "import sys, lash.kernel.prompt\n"
        "heavy = {'asyncio', 'pydantic', 'jsonschema', 'hypothesis', 'threading', 'socket'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
