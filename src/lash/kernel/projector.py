"""Context projection: turning the machine's history into a model request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from .llm import (
    GenerationOptions,
    LlmMessage,
    LlmRequest,
    LlmRole,
    LlmToolSpec,
    OutputSpec,
    ToolChoice,
)
from .messages import Message, Role, TurnCause
from .render import RenderCache, render_prompt, render_turn_causes


class ProjectionInput(msgspec.Struct, kw_only=True):
    """Everything a projector may use to build a request."""

    model: str
    system_prompt: str
    tools: tuple[LlmToolSpec, ...]
    messages: Sequence[Message]
    turn_causes: Sequence[TurnCause]
    use_tools: bool
    model_variant: str | None = None
    generation: GenerationOptions = msgspec.field(default_factory=GenerationOptions)
    run_session_id: str | None = None
    output_spec: OutputSpec | None = None
    render_cache: RenderCache | None = None
    """The caller's memo of rendered history; ``None`` renders from scratch."""


class ContextProjector(Protocol):
    """Builds the model request for the current history."""

    def project(self, data: ProjectionInput) -> LlmRequest:
        """Return the request."""


class ChatProjector:
    """The default projector: structured chat messages with a system prompt.

    Messages recording the turn's active causes are left out of the history and
    their text goes, as one user block, at the end of every request of the turn.
    The projector is stateless; rendered messages are memoized in the input's
    ``render_cache`` (one per machine), so concurrent sessions never evict each
    other's memo.
    """

    __slots__ = ()

    def project(self, data: ProjectionInput) -> LlmRequest:
        """Return the request for ``data``."""
        history: Sequence[Message] = data.messages
        causes = data.turn_causes
        if causes:
            active = {c.id for c in causes}
            history = [m for m in history if not (m.role is Role.EVENT and m.id in active)]
        rendered, attachments = render_prompt(history, data.render_cache)
        messages: list[LlmMessage] = []
        if data.system_prompt.strip():
            messages.append(LlmMessage.text(LlmRole.SYSTEM, data.system_prompt))
        messages.extend(rendered)
        if causes:
            messages.append(LlmMessage.text(LlmRole.USER, render_turn_causes(causes)))
        return LlmRequest(
            model=data.model,
            messages=tuple(messages),
            attachments=attachments,
            tools=data.tools if data.use_tools else (),
            tool_choice=ToolChoice.AUTO if data.use_tools else ToolChoice.NONE,
            model_variant=data.model_variant,
            generation=data.generation,
            session_id=data.run_session_id,
            output_spec=data.output_spec,
        )
