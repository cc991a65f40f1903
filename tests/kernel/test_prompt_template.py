"""Prompt slots, contributions, normalization and template rendering (reference §3.7)."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash.kernel.prompt import (
    ASK_GUIDANCE_BULLET,
    CORE_GUIDANCE_BULLETS,
    DEFAULT_TEMPLATE,
    MAIN_AGENT_INTRO,
    Builtin,
    BuiltinEntry,
    PromptContext,
    PromptContribution,
    PromptGate,
    PromptSection,
    PromptSlot,
    PromptTemplate,
    SlotEntry,
    TextEntry,
    normalize_contributions,
    render_core_guidance,
)
from lash.kernel.tools.definition import Availability

INTRO = (
    "You are an agent running on the lash runtime: "
    "you answer, and you act through the tools you are given."
)
CONCISE = "- Keep replies short and direct; leave out filler, hedging and pleasantries."
ASK = "- When the goal is clear, act on it yourself; turn to the user only when you cannot proceed."
ONCE = "- Say each conclusion once. When you know where a fix belongs, make it in this same turn."
PLAIN = "- Pick the plainest solution that works over clever tricks or needless abstraction."


def ctx(*contributions: PromptContribution, tools: tuple[str, ...] = ()) -> PromptContext:
    return PromptContext(
        execution_prompt="mode execution", tool_names=tools, contributions=contributions
    )


# --- builtin texts ----------------------------------------------------------


def test_builtin_texts_are_pinned() -> None:
    assert MAIN_AGENT_INTRO == INTRO
    assert CORE_GUIDANCE_BULLETS == (CONCISE, ONCE, PLAIN)
    assert ASK_GUIDANCE_BULLET == ASK


def test_default_template_renders_builtin_sections() -> None:
    text = DEFAULT_TEMPLATE.render(ctx(tools=("ask",)))
    assert text == (
        f"{INTRO}\n\n"
        "## Execution\n\nmode execution\n\n"
        f"## Guidance\n\n{CONCISE}\n{ASK}\n{ONCE}\n{PLAIN}"
    )


def test_default_template_renders_every_slot_in_its_place() -> None:
    contributions = normalize_contributions(
        [
            PromptContribution.environment("Shell", "bash 5"),
            PromptContribution.runtime_context("cwd is /repo"),
            PromptContribution.guidance("Style", "Use tabs."),
            PromptContribution.project_instructions("Run make."),
            PromptContribution.execution(None, "Extra execution."),
            PromptContribution.intro("Persona", "Be kind."),
        ]
    )
    text = DEFAULT_TEMPLATE.render(ctx(*contributions))
    assert text == (
        f"{INTRO}\n\n### Persona\n\nBe kind.\n\n"
        "## Execution\n\nmode execution\n\nExtra execution.\n\n"
        f"## Guidance\n\n{CONCISE}\n{ONCE}\n{PLAIN}\n\n"
        "### Project Instructions\n\nRun make.\n\n### Style\n\nUse tabs.\n\n"
        "## Environment\n\n### Runtime Context\n\ncwd is /repo\n\n### Shell\n\nbash 5"
    )


def test_core_guidance_drops_ask_line_when_ask_tool_absent() -> None:
    assert render_core_guidance(ctx(tools=("read_file",))) == f"{CONCISE}\n{ONCE}\n{PLAIN}"


def test_core_guidance_keeps_ask_line_when_ask_tool_present() -> None:
    rendered = render_core_guidance(ctx(tools=("read_file", "ask")))
    assert rendered.split("\n") == [CONCISE, ASK, ONCE, PLAIN]


@pytest.mark.parametrize("name", ["Ask", "ask_user", " ask", "asks"])
def test_core_guidance_needs_a_tool_named_exactly_ask(name: str) -> None:
    assert ASK not in render_core_guidance(ctx(tools=(name,)))


def test_execution_builtin_is_trimmed_and_skipped_when_blank() -> None:
    template = PromptTemplate(
        sections=(
            PromptSection(
                title="Execution", entries=(BuiltinEntry(builtin=Builtin.EXECUTION_INSTRUCTIONS),)
            ),
        )
    )
    padded = PromptContext(execution_prompt="  \n run it \n ")
    assert template.render(padded) == "## Execution\n\nrun it"
    assert template.render(PromptContext(execution_prompt=" \n\t")) == ""


# --- templates ----------------------------------------------------------------


def test_template_renders_slot_contributions_in_order() -> None:
    text = DEFAULT_TEMPLATE.render(
        ctx(
            PromptContribution.guidance("Second Guide", "Second details.", priority=10),
            PromptContribution.guidance("First Guide", "First details.", priority=0),
        )
    )
    assert text.endswith("### First Guide\n\nFirst details.\n\n### Second Guide\n\nSecond details.")
    assert text.index("### First Guide") < text.index("### Second Guide")


def test_slot_order_within_a_slot_is_stable_for_equal_priorities() -> None:
    template = PromptTemplate(
        sections=(PromptSection(entries=(SlotEntry(slot=PromptSlot.GUIDANCE),)),)
    )
    text = template.render(
        ctx(
            PromptContribution.guidance(None, "b"),
            PromptContribution.guidance(None, "a"),
            PromptContribution.guidance(None, "first", priority=-1),
        )
    )
    assert text == "first\n\nb\n\na"


def test_template_can_omit_builtin_guidance_and_keep_plugin_guidance() -> None:
    template = PromptTemplate(
        sections=(PromptSection(title="Guidance", entries=(SlotEntry(slot=PromptSlot.GUIDANCE),)),)
    )
    text = template.render(ctx(PromptContribution.guidance("Custom", "More guidance.")))
    assert text == "## Guidance\n\n### Custom\n\nMore guidance."
    assert CONCISE not in text


def test_template_can_place_project_instructions_separately() -> None:
    template = PromptTemplate(
        sections=(
            PromptSection(
                title="Rules", entries=(SlotEntry(slot=PromptSlot.PROJECT_INSTRUCTIONS),)
            ),
            PromptSection(title="Guidance", entries=(SlotEntry(slot=PromptSlot.GUIDANCE),)),
        )
    )
    text = template.render(
        ctx(
            PromptContribution.project_instructions("Repo rules"),
            PromptContribution.guidance("Shell", "Use exec_command."),
        )
    )
    assert text == (
        "## Rules\n\n### Project Instructions\n\nRepo rules\n\n"
        "## Guidance\n\n### Shell\n\nUse exec_command."
    )


def test_empty_sections_are_skipped() -> None:
    template = PromptTemplate(
        sections=(
            PromptSection(title="Environment", entries=(SlotEntry(slot=PromptSlot.ENVIRONMENT),)),
        )
    )
    assert template.render(ctx()) == ""
    assert PromptTemplate().render(ctx()) == ""


def test_text_entries_are_trimmed_and_blank_ones_skipped() -> None:
    template = PromptTemplate(
        sections=(
            PromptSection(title="  ", entries=(TextEntry(content="  one \n"),)),
            PromptSection(title="Empty", entries=(TextEntry(content=" \n "),)),
            PromptSection(title=" Two ", entries=(TextEntry(content="two"),)),
        )
    )
    assert template.render(ctx()) == "one\n\n## Two\n\ntwo"


def test_rendering_tolerates_unnormalized_contributions() -> None:
    template = PromptTemplate(
        sections=(PromptSection(entries=(SlotEntry(slot=PromptSlot.INTRO),)),)
    )
    raw = (
        PromptContribution(slot=PromptSlot.INTRO, title=" ", content=" a "),
        PromptContribution(slot=PromptSlot.INTRO, title="T", content="   "),
        PromptContribution(slot=PromptSlot.INTRO, title=" T ", content="b"),
    )
    assert template.render(ctx(*raw)) == "a\n\n### T\n\nb"


def test_slot_entry_can_repeat_a_slot() -> None:
    template = PromptTemplate(
        sections=(
            PromptSection(title="A", entries=(SlotEntry(slot=PromptSlot.INTRO),)),
            PromptSection(title="B", entries=(SlotEntry(slot=PromptSlot.INTRO),)),
        )
    )
    assert template.render(ctx(PromptContribution.intro(None, "x"))) == "## A\n\nx\n\n## B\n\nx"


# --- contributions ------------------------------------------------------------


def test_slots_are_ordered() -> None:
    assert [s.value for s in sorted(PromptSlot, key=lambda s: s.rank)] == [
        "intro",
        "execution",
        "guidance",
        "project_instructions",
        "runtime_context",
        "environment",
    ]


def test_helper_constructors_fill_slot_and_title() -> None:
    assert PromptContribution.project_instructions("x") == PromptContribution(
        slot=PromptSlot.PROJECT_INSTRUCTIONS, title="Project Instructions", content="x"
    )
    assert PromptContribution.runtime_context("x").title == "Runtime Context"
    assert PromptContribution.runtime_context("x").slot is PromptSlot.RUNTIME_CONTEXT
    assert PromptContribution.intro("  ", "x").title is None
    assert PromptContribution.execution("", "x").slot is PromptSlot.EXECUTION
    gate = PromptGate(tools=("shell",))
    c = PromptContribution.environment("Env", "x", priority=3, gate=gate)
    assert (c.slot, c.title, c.priority, c.gate) == (PromptSlot.ENVIRONMENT, "Env", 3, gate)


def test_normalize_trims_drops_empty_and_blank_titles() -> None:
    out = normalize_contributions(
        [
            PromptContribution(slot=PromptSlot.GUIDANCE, title="  Repo ", content="  rules \n"),
            PromptContribution(slot=PromptSlot.GUIDANCE, title="Empty", content=" \n\t "),
            PromptContribution(slot=PromptSlot.INTRO, title="   ", content="hi"),
        ]
    )
    assert out == (
        PromptContribution(slot=PromptSlot.INTRO, content="hi"),
        PromptContribution(slot=PromptSlot.GUIDANCE, title="Repo", content="rules"),
    )


def test_normalize_trims_unicode_whitespace_only() -> None:
    # U+3000 is whitespace; U+001F (unit separator) is not, though str.strip() removes it.
    out = normalize_contributions(
        [PromptContribution(slot=PromptSlot.INTRO, content="\u3000x\x1f\u00a0")]
    )
    assert out[0].content == "x\x1f"


def test_normalize_sorts_by_slot_priority_title_then_content() -> None:
    g = PromptSlot.GUIDANCE
    out = normalize_contributions(
        [
            PromptContribution(slot=PromptSlot.ENVIRONMENT, content="env"),
            PromptContribution(slot=g, title="B", content="b"),
            PromptContribution(slot=g, title="A", content="z"),
            PromptContribution(slot=g, title="A", content="y"),
            PromptContribution(slot=g, content="untitled"),
            PromptContribution(slot=g, priority=-5, title="Z", content="early"),
            PromptContribution(slot=PromptSlot.INTRO, priority=100, content="intro"),
        ]
    )
    assert [c.content for c in out] == ["intro", "early", "untitled", "y", "z", "b", "env"]


def test_normalize_drops_duplicates_ignoring_gates_and_keeps_the_first() -> None:
    gated = PromptContribution.guidance("Repo", "Follow rules.", gate=PromptGate(tools=("x",)))
    plain = PromptContribution.guidance("Repo", " Follow rules. ")
    out = normalize_contributions([gated, plain, PromptContribution.intro("Repo", "Follow rules.")])
    assert out == (PromptContribution.intro("Repo", "Follow rules."), gated)


def test_normalize_keeps_contributions_that_differ_only_in_priority() -> None:
    out = normalize_contributions(
        [PromptContribution.guidance("T", "x"), PromptContribution.guidance("T", "x", priority=1)]
    )
    assert [c.priority for c in out] == [0, 1]


def test_normalize_returns_unchanged_contributions_as_is() -> None:
    c = PromptContribution.guidance("T", "x")
    assert normalize_contributions([c])[0] is c


# --- wire form and bad input -------------------------------------------------


def test_contribution_wire_form_round_trips() -> None:
    c = PromptContribution.guidance(
        "Shell", "Use it.", priority=2, gate=PromptGate(tools=("shell",))
    )
    raw = msgspec.json.encode(c)
    assert msgspec.json.decode(raw) == {
        "slot": "guidance",
        "content": "Use it.",
        "title": "Shell",
        "priority": 2,
        "gate": {"tools": ["shell"]},
    }
    assert msgspec.json.decode(raw, type=PromptContribution) == c
    strict = PromptGate(tools=("shell",), minimum_availability=Availability.SHOWCASED)
    assert msgspec.json.encode(strict) == b'{"tools":["shell"],"minimum_availability":"showcased"}'
    minimal = PromptContribution(slot=PromptSlot.INTRO, content="x")
    assert msgspec.json.encode(minimal) == b'{"slot":"intro","content":"x"}'


def test_gate_defaults_when_decoded() -> None:
    decoded = msgspec.json.decode(
        b'{"slot":"guidance","content":"x","gate":{"tools":["a"]}}', type=PromptContribution
    )
    assert decoded.gate == PromptGate(tools=("a",), minimum_availability=Availability.CALLABLE)


def test_template_wire_form_round_trips() -> None:
    raw = msgspec.json.encode(DEFAULT_TEMPLATE)
    assert msgspec.json.decode(raw)["sections"][1] == {
        "title": "Execution",
        "entries": [
            {"kind": "builtin", "builtin": "execution_instructions"},
            {"kind": "slot", "slot": "execution"},
        ],
    }
    assert msgspec.json.decode(raw, type=PromptTemplate) == DEFAULT_TEMPLATE
    text = PromptTemplate(sections=(PromptSection(entries=(TextEntry(content="hi"),)),))
    assert (
        msgspec.json.encode(text) == b'{"sections":[{"entries":[{"kind":"text","content":"hi"}]}]}'
    )


def test_unknown_slot_in_json_is_a_clear_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"'instructions'.*\$\.slot"):
        msgspec.json.decode(b'{"slot":"instructions","content":"x"}', type=PromptContribution)


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b'{"slot":"intro"}', r"missing required field `content`"),
        (b'{"slot":"intro","content":7}', r"Expected `str`, got `int` - at `\$\.content`"),
        (b'{"slot":"intro","content":"x","priority":1.5}', r"\$\.priority"),
        (
            b'{"slot":"intro","content":"x","gate":{"minimum_availability":"visible"}}',
            r"'visible'.*\$\.gate\.minimum_availability",
        ),
    ],
)
def test_malformed_contribution_json_is_rejected(raw: bytes, pattern: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=pattern):
        msgspec.json.decode(raw, type=PromptContribution)


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b'{"sections":[{"entries":[{"kind":"nope"}]}]}', r"Invalid value 'nope'"),
        (
            b'{"sections":[{"entries":[{"kind":"builtin","builtin":"banner"}]}]}',
            r"'banner'.*\$\.sections\[0\]\.entries\[0\]\.builtin",
        ),
        (b'{"sections":[{"entries":[{"kind":"slot","slot":"footer"}]}]}', r"'footer'"),
    ],
)
def test_malformed_template_json_is_rejected(raw: bytes, pattern: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=pattern):
        msgspec.json.decode(raw, type=PromptTemplate)


def test_unknown_slot_in_python_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown prompt slot 'footer'"):
        PromptContribution(slot="footer", content="x")  # type: ignore[arg-type]


# --- properties ---------------------------------------------------------------

_text = st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", "\u3000"]), max_size=4)
_gate = st.none() | st.builds(
    PromptGate,
    tools=st.tuples(st.sampled_from(["a", "b"])),
    minimum_availability=st.sampled_from(Availability),
)
_contribution = st.builds(
    PromptContribution,
    slot=st.sampled_from(PromptSlot),
    content=_text,
    title=st.none() | _text,
    priority=st.integers(-2, 2),
    gate=_gate,
)


def _key(c: PromptContribution) -> tuple[str, int, str | None, str]:
    return (c.slot, c.priority, c.title, c.content)


@given(st.lists(_contribution, max_size=12))
def test_normalize_is_idempotent(contributions: list[PromptContribution]) -> None:
    once = normalize_contributions(contributions)
    assert normalize_contributions(once) == once
    for c in once:
        assert c.content
        assert c.content == c.content.strip()
        assert c.title is None or (c.title and c.title == c.title.strip())
    assert len({_key(c) for c in once}) == len(once)


@given(st.lists(_contribution, max_size=12), st.randoms(use_true_random=False))
def test_normalize_ignores_input_order(
    contributions: list[PromptContribution], rnd: random.Random
) -> None:
    shuffled = list(contributions)
    rnd.shuffle(shuffled)
    a = normalize_contributions(contributions)
    b = normalize_contributions(shuffled)
    # Which of several gate-only duplicates survives depends on order; nothing else does.
    assert [_key(c) for c in a] == [_key(c) for c in b]
    if all(c.gate is None for c in contributions):
        assert a == b
