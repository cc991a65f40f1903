"""Rendering history into model requests, and history safety checks."""

from __future__ import annotations

from collections.abc import Sequence

from .attachments import AttachmentRef
from .llm import (
    ImageBlock,
    LlmContentBlock,
    LlmMessage,
    LlmRole,
    ReasoningBlock,
    TextBlock,
    ToolCallBlock,
    ToolResultBlock,
)
from .messages import Message, PartKind, PluginOrigin, ProcessOrigin, Role, TurnCause

_ROLE_MAP = {
    Role.USER: LlmRole.USER,
    Role.ASSISTANT: LlmRole.ASSISTANT,
    Role.SYSTEM: LlmRole.SYSTEM,
    Role.EVENT: LlmRole.USER,
}

TURN_EVENTS_HEADER = "=== TURN EVENTS ==="


def chat_text(message: Message, index: int) -> str:
    """The chat text of one part, by the message's role."""
    part = message.parts[index]
    if message.role is Role.SYSTEM:
        if part.kind is PartKind.OUTPUT:
            return f"<output>\n{part.render()}\n</output>"
        if part.kind is PartKind.ERROR:
            return f"<error>\n{part.render()}\n</error>"
    if message.role is Role.ASSISTANT and part.kind is PartKind.TOOL_CALL:
        name = part.tool_name or "tool"
        args = part.content.strip()
        return f"{name}()" if args in ("", "{}") else f"{name}({args})"
    return part.render()


class RenderedMessage:
    """One message rendered on its own: blocks plus the attachments they reference.

    Image blocks index ``attachments`` locally; ``render_prompt`` rebases them.
    """

    __slots__ = ("attachments", "message")

    def __init__(self, message: LlmMessage | None, attachments: tuple[AttachmentRef, ...]) -> None:
        self.message = message
        self.attachments = attachments


def render_message(message: Message) -> RenderedMessage:
    """Render one history message into at most one request message."""
    blocks: list[LlmContentBlock] = []
    attachments: list[AttachmentRef] = []
    role = message.role
    for i, part in enumerate(message.parts):
        kind = part.kind
        if kind is PartKind.REASONING:
            if part.reasoning is not None and not part.reasoning.is_empty:
                blocks.append(ReasoningBlock(text=part.content, replay=part.reasoning))
        elif kind is PartKind.TOOL_CALL:
            blocks.append(
                ToolCallBlock(
                    call_id=part.tool_call_id or "",
                    tool_name=part.tool_name or "",
                    input_json=part.content,
                    replay=part.tool_replay,
                )
            )
        elif kind is PartKind.TOOL_RESULT:
            blocks.append(
                ToolResultBlock(
                    call_id=part.tool_call_id or "",
                    content=part.render(),
                    tool_name=part.tool_name,
                )
            )
        elif kind is PartKind.IMAGE and part.attachment is not None and role is Role.USER:
            blocks.append(ImageBlock(attachment_idx=len(attachments)))
            attachments.append(part.attachment)
        else:
            text = chat_text(message, i)
            if not text.strip():
                continue
            if role is Role.SYSTEM:
                text = f"Runtime note:\n{text}"
            elif role is Role.EVENT:
                text = f"Runtime event:\n{text}"
            meta = part.response_meta if kind in (PartKind.TEXT, PartKind.PROSE) else None
            blocks.append(TextBlock(text=text, response_meta=meta))
    if not blocks:
        return RenderedMessage(None, ())
    return RenderedMessage(
        LlmMessage(role=_ROLE_MAP[role], blocks=tuple(blocks)), tuple(attachments)
    )


def _rebase(message: LlmMessage, offset: int) -> LlmMessage:
    blocks = tuple(
        ImageBlock(attachment_idx=b.attachment_idx + offset) if isinstance(b, ImageBlock) else b
        for b in message.blocks
    )
    return LlmMessage(role=message.role, blocks=blocks)


class RenderCache:
    """Memo of the last rendered history, so a growing history renders only its new tail.

    History is append-only in practice. When the next history starts with the
    previously rendered messages (checked by a C-level tuple comparison, which
    short-circuits on identical objects), only the messages after that prefix
    are rendered. Messages are immutable, so equal messages render equally and a
    hit is always valid; any other history is rendered from scratch.
    """

    __slots__ = ("_attachments", "_prefix", "_rendered")

    def __init__(self) -> None:
        self._prefix: tuple[Message, ...] = ()
        self._rendered: tuple[LlmMessage, ...] = ()
        self._attachments: tuple[AttachmentRef, ...] = ()


def _render_into(
    messages: Sequence[Message],
    out: list[LlmMessage],
    attachments: list[AttachmentRef],
) -> None:
    for message in messages:
        rendered = render_message(message)
        if rendered.message is None:
            continue
        if rendered.attachments:
            out.append(_rebase(rendered.message, len(attachments)))
            attachments.extend(rendered.attachments)
        else:
            out.append(rendered.message)


def render_prompt(
    messages: Sequence[Message], cache: RenderCache | None = None
) -> tuple[tuple[LlmMessage, ...], tuple[AttachmentRef, ...]]:
    """Render history into request messages and the attachments they reference.

    With a ``cache``, a history that extends the memoized one renders only its tail.
    """
    history = tuple(messages)
    rendered: tuple[LlmMessage, ...] = ()
    attachments: list[AttachmentRef] = []
    start = 0
    if cache is not None:
        n = len(cache._prefix)
        if n and len(history) >= n and history[:n] == cache._prefix:
            rendered, attachments, start = cache._rendered, list(cache._attachments), n
    out: list[LlmMessage] = []
    _render_into(history[start:], out, attachments)
    rendered += tuple(out)
    all_attachments = tuple(attachments)
    if cache is not None:
        cache._prefix, cache._rendered, cache._attachments = history, rendered, all_attachments
    return rendered, all_attachments


def _origin_text(cause: TurnCause) -> str:
    origin = cause.origin
    if isinstance(origin, PluginOrigin):
        return f"plugin {origin.plugin_id}" + (" (transient)" if origin.transient else "")
    if isinstance(origin, ProcessOrigin):
        text = f"process {origin.process_id} {origin.event_type} #{origin.sequence}"
        return text + (f" ({origin.wake_id})" if origin.wake_id else "")
    return "host"


def render_turn_causes(causes: Sequence[TurnCause]) -> str:
    """The user-visible block that lists the events that caused this turn."""
    lines = [TURN_EVENTS_HEADER]
    for i, cause in enumerate(causes):
        lines.append("")
        lines.append(f"--- event[{i}] \u00b7 {cause.event_type} \u00b7 {cause.id} ---")
        lines.append(f"Origin: {_origin_text(cause)}")
        lines.append("")
        lines.append(cause.text.strip())
    return "\n".join(lines)


def messages_are_prompt_resume_safe(messages: Sequence[Message]) -> bool:
    """True when every tool call is answered exactly once, in a valid place.

    Calls must sit in assistant messages with unique, non-blank ids; results in
    user messages, answering an earlier call at most once; counts must match.
    """
    calls: set[str] = set()
    answered: set[str] = set()
    for message in messages:
        for part in message.parts:
            if part.kind is PartKind.TOOL_CALL:
                cid = (part.tool_call_id or "").strip()
                if message.role is not Role.ASSISTANT or not cid or cid in calls:
                    return False
                calls.add(cid)
            elif part.kind is PartKind.TOOL_RESULT:
                cid = (part.tool_call_id or "").strip()
                if message.role is not Role.USER or not cid or cid not in calls or cid in answered:
                    return False
                answered.add(cid)
    return len(calls) == len(answered)
