"""Conversation history: messages, parts, origins and turn causes."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

import msgspec

from .attachments import AttachmentRef
from .llm import ProviderReplayMeta, ReasoningReplay, ResponseTextMeta

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


class Role(StrEnum):
    """Who a history message comes from. ``event`` is an external happening."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    EVENT = "event"


class PartKind(StrEnum):
    """What a part holds."""

    TEXT = "text"
    """User text."""
    PROSE = "prose"
    """Assistant text."""
    CODE = "code"
    OUTPUT = "output"
    ERROR = "error"
    TOOL_CALL = "tool_call"
    """Content is the raw JSON arguments."""
    TOOL_RESULT = "tool_result"
    """Content is the text the model sees."""
    IMAGE = "image"
    REASONING = "reasoning"
    """Content is a display summary; replay data sits in ``reasoning``."""


class Cleared(msgspec.Struct, tag="cleared", tag_field="type", **_S):
    """The part's content was removed to save context."""


class Deleted(msgspec.Struct, tag="deleted", tag_field="type", **_S):
    """The part's content was archived; a breadcrumb remains."""

    breadcrumb: str
    archive_hash: str


class Summarized(msgspec.Struct, tag="summarized", tag_field="type", **_S):
    """The part's content was replaced by a summary."""

    summary: str
    archive_hash: str


PruneState: TypeAlias = Cleared | Deleted | Summarized
"""How a part was pruned; ``None`` on a part means intact."""


class Part(msgspec.Struct, **_S):
    """One piece of a message. Ids are ``{message_id}.p{index}``."""

    id: str
    kind: PartKind
    content: str = ""
    attachment: AttachmentRef | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    tool_replay: ProviderReplayMeta | None = None
    reasoning: ReasoningReplay | None = None
    response_meta: ResponseTextMeta | None = None
    prune: PruneState | None = None

    def render(self) -> str:
        """The text this part contributes to a prompt."""
        if self.kind is PartKind.IMAGE:
            if self.attachment is not None or not self.content.strip():
                return "[Image attached]"
            return self.content
        prune = self.prune
        if prune is None:
            return self.content
        if isinstance(prune, Cleared):
            return "[Old tool result content cleared]"
        if isinstance(prune, Deleted):
            return f"[pruned:{prune.archive_hash} \u2014 {prune.breadcrumb}]"
        return f"[SUMMARY of original {prune.archive_hash}]\n{prune.summary}"

    @property
    def prompt_char_count(self) -> int:
        """Characters this part adds to a prompt (reasoning counts zero)."""
        if self.kind is PartKind.REASONING:
            return 0
        if self.kind is PartKind.IMAGE and self.attachment is not None:
            return len(self.attachment.id)
        return len(self.render())


class PluginOrigin(msgspec.Struct, tag="plugin", tag_field="kind", **_S):
    """The message was added by a plugin; transient ones are not committed."""

    plugin_id: str
    transient: bool = False


class ProcessOrigin(msgspec.Struct, tag="process", tag_field="kind", **_S):
    """The message came from a background process event."""

    process_id: str
    event_type: str
    sequence: int
    wake_id: str | None = None
    caused_by: str | None = None


MessageOrigin: TypeAlias = PluginOrigin | ProcessOrigin


class Message(msgspec.Struct, **_S):
    """A history message: a role, parts, and where it came from."""

    id: str
    role: Role
    parts: tuple[Part, ...] = ()
    origin: MessageOrigin | None = None

    @property
    def is_transient(self) -> bool:
        """True for messages from a transient plugin origin (never committed)."""
        return isinstance(self.origin, PluginOrigin) and self.origin.transient

    @property
    def char_count(self) -> int:
        """Characters this message adds to a prompt."""
        return sum(p.prompt_char_count for p in self.parts)

    def text(self) -> str:
        """The concatenated text and prose content."""
        return "".join(p.content for p in self.parts if p.kind in (PartKind.TEXT, PartKind.PROSE))


def renumber_parts(message_id: str, parts: tuple[Part, ...] | list[Part]) -> tuple[Part, ...]:
    """Give parts the ids ``{message_id}.p{i}``."""
    return tuple(msgspec.structs.replace(p, id=f"{message_id}.p{i}") for i, p in enumerate(parts))


def user_message(message_id: str, text: str, *, origin: MessageOrigin | None = None) -> Message:
    """A user message with one text part."""
    return Message(
        id=message_id,
        role=Role.USER,
        parts=(Part(id=f"{message_id}.p0", kind=PartKind.TEXT, content=text),),
        origin=origin,
    )


class TurnCause(msgspec.Struct, **_S):
    """An external event that caused the turn (a process wake, a trigger)."""

    id: str
    event_type: str
    text: str
    origin: MessageOrigin | None = None

    def to_event_message(self) -> Message:
        """The event-role history message recording this cause."""
        return Message(
            id=self.id,
            role=Role.EVENT,
            parts=(Part(id=f"{self.id}.p0", kind=PartKind.TEXT, content=self.text),),
            origin=self.origin,
        )


class CheckpointKind(StrEnum):
    """Where in the turn a checkpoint sits."""

    AFTER_WORK = "after_work"
    BEFORE_COMPLETION = "before_completion"


class InjectedMessage(msgspec.Struct, **_S):
    """A message a plugin or queued input injects at a checkpoint."""

    role: Role
    content: str = ""
    parts: tuple[Part, ...] = ()
    origin: MessageOrigin | None = None
