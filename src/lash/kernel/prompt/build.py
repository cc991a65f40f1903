"""Prompt layers, gating and the memoized system prompt build."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import msgspec

from ..tools.definition import Availability
from .template import (
    DEFAULT_TEMPLATE,
    PromptContext,
    PromptContribution,
    PromptSlot,
    PromptTemplate,
    normalize_contributions,
)

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class SlotLayer(msgspec.Struct, **_S):
    """What one layer does to one slot: optionally clear it, then append contributions."""

    reset: bool = False
    contributions: tuple[PromptContribution, ...] = ()


class PromptLayer(msgspec.Struct, **_S):
    """One layer of prompt configuration (host, session, turn, ...).

    ``template``, when set, replaces the template of earlier layers. ``slots``
    edits the contributions gathered so far; each edit's contributions belong
    to the slot they are filed under, whatever their own ``slot`` says. Treat
    the mapping as immutable once the layer is built.
    """

    template: PromptTemplate | None = None
    slots: dict[PromptSlot, SlotLayer] = msgspec.field(default_factory=dict)

    def with_template(self, template: PromptTemplate | None) -> PromptLayer:
        """A copy of this layer with ``template`` set (or unset with ``None``)."""
        return msgspec.structs.replace(self, template=template)

    def with_contribution(self, contribution: PromptContribution) -> PromptLayer:
        """A copy that also appends ``contribution`` to its own slot."""
        slot = contribution.slot
        old = self.slots.get(slot, SlotLayer())
        edit = SlotLayer(reset=old.reset, contributions=(*old.contributions, contribution))
        return msgspec.structs.replace(self, slots={**self.slots, slot: edit})

    def with_replaced_slot(
        self, slot: PromptSlot, contributions: Iterable[PromptContribution]
    ) -> PromptLayer:
        """A copy that clears ``slot`` and puts ``contributions`` there instead."""
        edit = SlotLayer(reset=True, contributions=_reslot(slot, contributions))
        return msgspec.structs.replace(self, slots={**self.slots, slot: edit})

    def with_cleared_slot(self, slot: PromptSlot) -> PromptLayer:
        """A copy that removes every earlier contribution of ``slot``."""
        return self.with_replaced_slot(slot, ())


def _reslot(
    slot: PromptSlot, contributions: Iterable[PromptContribution]
) -> tuple[PromptContribution, ...]:
    return tuple(
        c if c.slot == slot else msgspec.structs.replace(c, slot=slot) for c in contributions
    )


class ResolvedPromptLayers(NamedTuple):
    """The template and the contributions that a stack of layers comes to."""

    template: PromptTemplate
    contributions: tuple[PromptContribution, ...]


def resolve_prompt_layers(layers: Iterable[PromptLayer]) -> ResolvedPromptLayers:
    """Fold layers, earliest first, starting from :data:`DEFAULT_TEMPLATE` and no contributions.

    A layer's template replaces the current one. For each slot the layer edits,
    visited in slot order, ``reset`` first drops the slot's contributions so
    far, then the edit's contributions are appended with their slot set to
    that slot. Contributions are returned in that order, not normalized.
    """
    template = DEFAULT_TEMPLATE
    gathered: list[PromptContribution] = []
    for layer in layers:
        if layer.template is not None:
            template = layer.template
        if not layer.slots:
            continue
        for slot in PromptSlot:
            edit = layer.slots.get(slot)
            if edit is None:
                continue
            if edit.reset:
                gathered = [c for c in gathered if c.slot != slot]
            gathered.extend(_reslot(slot, edit.contributions))
    return ResolvedPromptLayers(template, tuple(gathered))


def filter_prompt_contributions(
    contributions: Iterable[PromptContribution],
    availability_of: Callable[[str], Availability | None],
) -> tuple[PromptContribution, ...]:
    """Keep contributions whose gate is open.

    A gate is open when it is absent or names no tools, or when any of its
    tools has an availability at least its ``minimum_availability``.
    ``availability_of`` returns ``None`` for a tool that does not exist.
    """
    kept: list[PromptContribution] = []
    for c in contributions:
        gate = c.gate
        if gate is None or not gate.tools:
            kept.append(c)
            continue
        for name in gate.tools:
            availability = availability_of(name)
            if availability is not None and availability.at_least(gate.minimum_availability):
                kept.append(c)
                break
    return tuple(kept)


class PromptBuildInput(msgspec.Struct, **_S):
    """Everything :func:`build_prompt` reads.

    ``extra_contributions`` are added after the layers' contributions.
    """

    execution_prompt: str = ""
    tool_names: tuple[str, ...] = ()
    layers: tuple[PromptLayer, ...] = ()
    extra_contributions: tuple[PromptContribution, ...] = ()


class PreparedPrompt(msgspec.Struct, **_S):
    """A rendered system prompt and the context it was rendered from."""

    context: PromptContext
    system_prompt: str


def build_prompt(build_input: PromptBuildInput) -> PreparedPrompt:
    """Resolve the layers, normalize the contributions and render the system prompt."""
    template, layered = resolve_prompt_layers(build_input.layers)
    context = PromptContext(
        execution_prompt=build_input.execution_prompt,
        tool_names=build_input.tool_names,
        contributions=normalize_contributions((*layered, *build_input.extra_contributions)),
    )
    return PreparedPrompt(context=context, system_prompt=template.render(context))


class PromptBuilder:
    """:func:`build_prompt` with a one-entry memo.

    Consecutive builds from equal inputs return the very same
    :class:`PreparedPrompt`; a different input renders again and replaces the
    memo. Inputs are compared by value, so nothing process-specific is kept.
    """

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: tuple[PromptBuildInput, PreparedPrompt] | None = None

    def build(self, build_input: PromptBuildInput) -> PreparedPrompt:
        """The prepared prompt for ``build_input``, from the memo when the input is unchanged."""
        memo = self._memo
        if memo is not None and (memo[0] is build_input or memo[0] == build_input):
            return memo[1]
        prepared = build_prompt(build_input)
        self._memo = (build_input, prepared)
        return prepared

    def clear(self) -> None:
        """Forget the memo."""
        self._memo = None
