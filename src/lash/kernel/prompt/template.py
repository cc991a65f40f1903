"""System prompt pieces: slots, contributions, templates and their rendering.

A system prompt is a :class:`PromptTemplate`, an ordered list of sections whose
entries are fixed text, builtin texts, or *slots* that take every
:class:`PromptContribution` addressed to them. Rendering is a pure function of
the template and a :class:`PromptContext`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TypeAlias, assert_never

import msgspec

from ..tools.definition import Availability

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}

# The characters Unicode calls White_Space. ``str.strip()`` with no argument
# also removes U+001C..U+001F, which are not whitespace in that sense.
_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _trim(text: str) -> str:
    return text.strip(_WHITESPACE)


class PromptSlot(StrEnum):
    """A named place in the system prompt that contributions are addressed to.

    Members are declared in prompt order; :attr:`rank` gives that order.
    """

    INTRO = "intro"
    EXECUTION = "execution"
    GUIDANCE = "guidance"
    PROJECT_INSTRUCTIONS = "project_instructions"
    RUNTIME_CONTEXT = "runtime_context"
    ENVIRONMENT = "environment"

    @property
    def rank(self) -> int:
        """Position of the slot in prompt order (``intro`` is 0)."""
        return _SLOT_RANK[self]


_SLOT_RANK: dict[str, int] = {slot: i for i, slot in enumerate(PromptSlot)}


class Builtin(StrEnum):
    """A text the kernel renders itself."""

    MAIN_AGENT_INTRO = "main_agent_intro"
    """The one-line :data:`MAIN_AGENT_INTRO`."""
    EXECUTION_INSTRUCTIONS = "execution_instructions"
    """The protocol's execution prompt, from :attr:`PromptContext.execution_prompt`."""
    CORE_GUIDANCE = "core_guidance"
    """The bullets of :func:`render_core_guidance`."""


MAIN_AGENT_INTRO = (
    "You are an agent running on the lash runtime: "
    "you answer, and you act through the tools you are given."
)
"""The text of :attr:`Builtin.MAIN_AGENT_INTRO`."""

CORE_GUIDANCE_BULLETS: tuple[str, ...] = (
    "- Keep replies short and direct; leave out filler, hedging and pleasantries.",
    "- Say each conclusion once. When you know where a fix belongs, make it in this same turn.",
    "- Pick the plainest solution that works over clever tricks or needless abstraction.",
)
"""The core guidance bullets that always render, in order."""

ASK_GUIDANCE_BULLET = (
    "- When the goal is clear, act on it yourself; turn to the user only when you cannot proceed."
)
"""The bullet added second to the core guidance when a tool named ``ask`` exists."""


class PromptGate(msgspec.Struct, **_S):
    """Keep a contribution only while one of ``tools`` is at least ``minimum_availability``.

    A gate with no tools lets everything through.
    """

    tools: tuple[str, ...] = ()
    minimum_availability: Availability = Availability.CALLABLE


class PromptContribution(msgspec.Struct, **_S):
    """A piece of text addressed to one prompt slot.

    Within a slot, contributions render in ``priority`` order (lowest first),
    each under ``### {title}`` when it has a title.
    """

    slot: PromptSlot
    content: str
    title: str | None = None
    priority: int = 0
    gate: PromptGate | None = None

    def __post_init__(self) -> None:
        if self.slot not in _SLOT_RANK:
            raise ValueError(f"unknown prompt slot {self.slot!r}")

    @classmethod
    def intro(
        cls, title: str | None, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A contribution to the ``intro`` slot."""
        return _make(PromptSlot.INTRO, title, content, priority, gate)

    @classmethod
    def execution(
        cls, title: str | None, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A contribution to the ``execution`` slot."""
        return _make(PromptSlot.EXECUTION, title, content, priority, gate)

    @classmethod
    def guidance(
        cls, title: str | None, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A contribution to the ``guidance`` slot."""
        return _make(PromptSlot.GUIDANCE, title, content, priority, gate)

    @classmethod
    def project_instructions(
        cls, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A ``project_instructions`` contribution titled "Project Instructions"."""
        return _make(
            PromptSlot.PROJECT_INSTRUCTIONS, "Project Instructions", content, priority, gate
        )

    @classmethod
    def runtime_context(
        cls, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A ``runtime_context`` contribution titled "Runtime Context"."""
        return _make(PromptSlot.RUNTIME_CONTEXT, "Runtime Context", content, priority, gate)

    @classmethod
    def environment(
        cls, title: str | None, content: str, *, priority: int = 0, gate: PromptGate | None = None
    ) -> PromptContribution:
        """A contribution to the ``environment`` slot."""
        return _make(PromptSlot.ENVIRONMENT, title, content, priority, gate)


def _make(
    slot: PromptSlot, title: str | None, content: str, priority: int, gate: PromptGate | None
) -> PromptContribution:
    if title is not None and not _trim(title):
        title = None
    return PromptContribution(slot=slot, title=title, priority=priority, gate=gate, content=content)


def _sort_key(c: PromptContribution) -> tuple[int, int, bool, str, str]:
    # ``title is not None`` puts untitled contributions first.
    return (_SLOT_RANK[c.slot], c.priority, c.title is not None, c.title or "", c.content)


def normalize_contributions(
    contributions: Iterable[PromptContribution],
) -> tuple[PromptContribution, ...]:
    """Trim, drop empties, sort and de-duplicate contributions.

    Content and titles are trimmed; a contribution with empty content is
    dropped and a blank title becomes ``None``. The rest are stably sorted by
    (slot order, priority, title with ``None`` first, content), and of
    neighbours equal on that tuple only the first is kept. Gates take no part
    in sorting or de-duplication.
    """
    cleaned: list[PromptContribution] = []
    for c in contributions:
        content = _trim(c.content)
        if not content:
            continue
        title = _trim(c.title) if c.title is not None else None
        if not title:
            title = None
        if content != c.content or title != c.title:
            c = msgspec.structs.replace(c, title=title, content=content)
        cleaned.append(c)
    cleaned.sort(key=_sort_key)
    out: list[PromptContribution] = []
    last: tuple[int, int, bool, str, str] | None = None
    for c in cleaned:
        key = _sort_key(c)
        if key != last:
            out.append(c)
            last = key
    return tuple(out)


class TextEntry(msgspec.Struct, tag="text", tag_field="kind", **_S):
    """Fixed text, rendered trimmed."""

    content: str


class BuiltinEntry(msgspec.Struct, tag="builtin", tag_field="kind", **_S):
    """A builtin text, rendered trimmed."""

    builtin: Builtin


class SlotEntry(msgspec.Struct, tag="slot", tag_field="kind", **_S):
    """Every contribution of one slot, in priority order."""

    slot: PromptSlot


TemplateEntry: TypeAlias = TextEntry | BuiltinEntry | SlotEntry
"""One entry of a template section (tagged by ``kind`` on the wire)."""


class PromptSection(msgspec.Struct, **_S):
    """A run of entries, headed ``## {title}`` when titled; skipped when it renders nothing."""

    title: str | None = None
    entries: tuple[TemplateEntry, ...] = ()


class PromptContext(msgspec.Struct, **_S):
    """Everything a template needs to render a system prompt."""

    execution_prompt: str = ""
    tool_names: tuple[str, ...] = ()
    contributions: tuple[PromptContribution, ...] = ()

    def has_tool(self, name: str) -> bool:
        """True when a tool named exactly ``name`` is present."""
        return name in self.tool_names


def render_core_guidance(context: PromptContext) -> str:
    """The core guidance bullets; the ``ask`` bullet goes second when an ``ask`` tool exists."""
    bullets = list(CORE_GUIDANCE_BULLETS)
    if context.has_tool("ask"):
        bullets.insert(1, ASK_GUIDANCE_BULLET)
    return "\n".join(bullets)


def render_builtin(builtin: Builtin, context: PromptContext) -> str:
    """The untrimmed text of one builtin."""
    match builtin:
        case Builtin.MAIN_AGENT_INTRO:
            return MAIN_AGENT_INTRO
        case Builtin.EXECUTION_INSTRUCTIONS:
            return context.execution_prompt
        case Builtin.CORE_GUIDANCE:
            return render_core_guidance(context)
        case _:
            assert_never(builtin)


class PromptTemplate(msgspec.Struct, **_S):
    """An ordered list of sections that renders to a system prompt."""

    sections: tuple[PromptSection, ...] = ()

    def render(self, context: PromptContext) -> str:
        """Render the sections that have content, separated by blank lines."""
        by_slot: dict[str, list[PromptContribution]] = {}
        for c in context.contributions:
            by_slot.setdefault(c.slot, []).append(c)
        for group in by_slot.values():
            group.sort(key=lambda c: c.priority)
        rendered = (_render_section(s, context, by_slot) for s in self.sections)
        return "\n\n".join(text for text in rendered if text is not None)


def _render_section(
    section: PromptSection,
    context: PromptContext,
    by_slot: dict[str, list[PromptContribution]],
) -> str | None:
    parts: list[str] = []
    for entry in section.entries:
        match entry:
            case TextEntry(content=text):
                _push_trimmed(parts, text)
            case BuiltinEntry(builtin=builtin):
                _push_trimmed(parts, render_builtin(builtin, context))
            case SlotEntry(slot=slot):
                for c in by_slot.get(slot, ()):
                    part = _render_contribution(c)
                    if part is not None:
                        parts.append(part)
            case _:
                assert_never(entry)
    if not parts:
        return None
    title = _trim(section.title) if section.title is not None else ""
    if title:
        parts.insert(0, f"## {title}")
    return "\n\n".join(parts)


def _push_trimmed(parts: list[str], text: str) -> None:
    text = _trim(text)
    if text:
        parts.append(text)


def _render_contribution(c: PromptContribution) -> str | None:
    content = _trim(c.content)
    if not content:
        return None
    title = _trim(c.title) if c.title is not None else ""
    return f"### {title}\n\n{content}" if title else content


DEFAULT_TEMPLATE = PromptTemplate(
    sections=(
        PromptSection(
            entries=(
                BuiltinEntry(builtin=Builtin.MAIN_AGENT_INTRO),
                SlotEntry(slot=PromptSlot.INTRO),
            )
        ),
        PromptSection(
            title="Execution",
            entries=(
                BuiltinEntry(builtin=Builtin.EXECUTION_INSTRUCTIONS),
                SlotEntry(slot=PromptSlot.EXECUTION),
            ),
        ),
        PromptSection(
            title="Guidance",
            entries=(
                BuiltinEntry(builtin=Builtin.CORE_GUIDANCE),
                SlotEntry(slot=PromptSlot.PROJECT_INSTRUCTIONS),
                SlotEntry(slot=PromptSlot.GUIDANCE),
            ),
        ),
        PromptSection(
            title="Environment",
            entries=(
                SlotEntry(slot=PromptSlot.RUNTIME_CONTEXT),
                SlotEntry(slot=PromptSlot.ENVIRONMENT),
            ),
        ),
    )
)
"""The template used when no prompt layer sets one."""
