"""Transcript rendering: the whole history packed into one user message.

An alternative to :func:`lash.kernel.render.render_prompt` for models or modes
that work better with a single flat prompt than with a chat of many messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from .attachments import AttachmentRef
from .llm import ImageBlock, LlmContentBlock, LlmMessage, LlmRole, TextBlock
from .messages import Message, Part, PartKind, Role
from .render import chat_text

TRANSCRIPT_HEADER = (
    "Conversation so far, replayed as numbered turns with the oldest first.\n"
    'Every "Assistant" section is your own earlier output in this same session.'
)
"""Text placed before the first turn."""

TRANSCRIPT_CLOSING = (
    "Resume at the final turn above, speaking as the assistant.\n"
    "If the work is done, reply with the final answer; if not, take the next step."
)
"""Text placed after the last turn."""

EMPTY_TRANSCRIPT = "[no turns yet]"
"""Stands in for the turns when the history renders to nothing."""

TURN_HEADING = "=== Turn {number} ==="
"""Heading of each turn; ``{number}`` counts from 1."""

USER_LABEL = "User:"
"""Label opening a turn's user slot."""

ASSISTANT_LABEL = "Assistant (you):"
"""Label opening a turn's assistant slot."""

NO_USER_PLACEHOLDER = "[no user input in this turn]"
"""Fills the user slot of a turn that starts with assistant or system text."""

NO_REPLY_PLACEHOLDER = "[no assistant reply recorded]"
"""Fills the assistant slot of a finished turn without assistant text."""

EVENT_PREFIX = "Event:\n"
"""Prefix of event-message text in a user slot."""

EMPTY_TOOL_RESULT = "[empty]"
"""Shown for a tool result with blank content."""


def _tool_result_text(part: Part) -> str:
    label = f"Tool result ({part.tool_name}):" if part.tool_name else "Tool result:"
    body = part.render()
    return f"{label} {EMPTY_TOOL_RESULT}" if not body.strip() else f"{label}\n{body}"


def _message_text(message: Message, attachments: list[AttachmentRef]) -> str:
    """The transcript text of one message; user images are appended to ``attachments``."""
    pieces: list[str] = []
    for i, part in enumerate(message.parts):
        kind = part.kind
        if kind is PartKind.REASONING:
            continue
        if kind is PartKind.TOOL_RESULT:
            pieces.append(_tool_result_text(part))
            continue
        if kind is PartKind.IMAGE and part.attachment is not None and message.role is Role.USER:
            attachments.append(part.attachment)
        text = chat_text(message, i)
        if text.strip():
            pieces.append(text)
    return "\n\n".join(pieces)


def _render_turn(number: int, user: list[str], assistant: list[str], pending: bool) -> str:
    lines = [TURN_HEADING.format(number=number), USER_LABEL]
    lines.append("\n\n".join(user) if user else NO_USER_PLACEHOLDER)
    lines.append("")
    lines.append(ASSISTANT_LABEL)
    if assistant:
        lines.append("\n\n".join(assistant))
    elif not pending:
        lines.append(NO_REPLY_PLACEHOLDER)
    return "\n".join(lines)


def render_transcript_prompt(
    messages: Sequence[Message],
) -> tuple[tuple[LlmMessage, ...], tuple[AttachmentRef, ...]]:
    """Render history as one user message holding a numbered transcript of turns.

    * User and event messages open a new turn when the current one has content;
      their text fills its user slot (event text prefixed ``Event:\\n``).
    * Assistant and system text fills the current turn's assistant slot.
    * Parts render as their chat text (:func:`~lash.kernel.render.chat_text`):
      assistant tool calls read ``name(args)``; tool results read
      ``Tool result (name):`` followed by their text (``[empty]`` when blank);
      reasoning is skipped; blank parts are dropped.
    * Images with an attachment in user messages render as ``[Image attached]``
      and are returned as attachments, in order. Images elsewhere are text only.
    * A turn without assistant text shows :data:`NO_REPLY_PLACEHOLDER`, except
      the last turn, which is left open for the model to continue.
    * :data:`TRANSCRIPT_HEADER` and :data:`TRANSCRIPT_CLOSING` surround the turns.

    The result is exactly one user message: one text block, then one
    :class:`~lash.kernel.llm.ImageBlock` per attachment (``attachment_idx`` 0,
    1, ...), so providers that build request bodies from blocks still send the
    images. Each image block matches an ``[Image attached]`` marker by order.
    """
    attachments: list[AttachmentRef] = []
    turns: list[tuple[list[str], list[str]]] = []
    user: list[str] = []
    assistant: list[str] = []
    for message in messages:
        text = _message_text(message, attachments)
        if message.role in (Role.USER, Role.EVENT):
            if user or assistant:
                turns.append((user, assistant))
                user, assistant = [], []
            if text.strip():
                user.append(EVENT_PREFIX + text if message.role is Role.EVENT else text)
        elif text.strip():
            assistant.append(text)
    if user or assistant:
        turns.append((user, assistant))

    rendered = [
        _render_turn(n, u, a, pending=n == len(turns)) for n, (u, a) in enumerate(turns, start=1)
    ]
    body = "\n\n".join([TRANSCRIPT_HEADER, *(rendered or [EMPTY_TRANSCRIPT]), TRANSCRIPT_CLOSING])
    blocks: list[LlmContentBlock] = [TextBlock(text=body)]
    blocks.extend(ImageBlock(attachment_idx=i) for i in range(len(attachments)))
    return (LlmMessage(role=LlmRole.USER, blocks=tuple(blocks)),), tuple(attachments)
