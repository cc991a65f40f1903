"""The standard protocol: native tool calling.

Each iteration calls the model with the tools. Tool calls run as one batch and
their results go back to the model; a prose answer ends the turn at a
``before_completion`` checkpoint (where queued input may extend it).

Unlike the reference, the final assistant answer, reasoning included, is
appended to the history by the driver itself, so it is part of the turn's
messages and of any later request in the same turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..attachments import AttachmentRef
from ..driver import (
    AdvanceIteration,
    AppendMessages,
    ContinueIteration,
    DriverAction,
    DriverContext,
    EmitEvent,
    Finish,
    FinishWith,
    StartCheckpoint,
    StartLlm,
    StartTools,
)
from ..effects import ExecResult
from ..errors import ToolDefinitionError
from ..events import LlmResponded, TextDelta, error_event
from ..jsonvalue import json_type_name
from ..llm import (
    LlmRequest,
    LlmResponse,
    ReasoningOutput,
    ReasoningReplay,
    ResponseTextMeta,
    TextOutput,
    ToolCallOutput,
)
from ..machine import MachineConfig
from ..messages import CheckpointKind, Message, Part, PartKind, Role
from ..outcome import (
    AgentFrameSwitch,
    Finished,
    Stopped,
    StopReason,
    ToolValueAnswer,
    TurnOutcome,
    finished_text,
)
from ..prompt import (
    PromptBuildInput,
    PromptContribution,
    PromptLayer,
    build_prompt,
    filter_prompt_contributions,
)
from ..tools.definition import ToolDefinition
from ..tools.output import (
    CompletedToolCall,
    FailTurn,
    FinishTurn,
    ModelReturnPart,
    PendingToolCall,
    SwitchAgentFrame,
    TextReturn,
    ToolSuccess,
)
from ..tools.surface import ToolSurface
from .batch import BATCH_TOOL_NAME, batch_tool_definition

TURN_LIMIT_PREFIX = "Turn limit reached ("

STANDARD_EXECUTION_PROMPT = """\
Call tools directly by name when you need them. When you need two or more calls
that do not depend on each other, make them in one `batch` call (at most 25);
when a call needs another's result, make them one after the other. Answer
conversational requests in plain prose, without tools.

A batch of two reads:
{"tool_calls": [{"tool": "read_file", "parameters": {"path": "a.txt"}},
                {"tool": "read_file", "parameters": {"path": "b.txt"}}]}"""
"""The execution section of the system prompt for native tool calling."""


def join_assistant_text(buffer: str, addition: str) -> str:
    """The slice to append so that text pieces are separated by a blank line."""
    if not buffer:
        return addition
    trailing = len(buffer) - len(buffer.rstrip("\n"))
    leading = len(addition) - len(addition.lstrip("\n"))
    return "\n" * max(0, 2 - trailing - leading) + addition


def parse_tool_arguments(input_json: str) -> tuple[dict[str, Any], str | None]:
    """Parse a model's argument text: ``(args, None)`` or ``({}, reason)`` when unusable."""
    text = input_json.strip()
    if not text:
        return {}, None
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {json_type_name(value)}"
    return value, None


def standard_surface(tools: Sequence[ToolDefinition]) -> ToolSurface:
    """The tool surface of the standard protocol: the given tools plus ``batch``.

    ``batch`` is built in: the built-in definition may be passed back in (it is
    then kept where it is), but any other tool of that name is a
    ``ToolDefinitionError``.
    """
    builtin = batch_tool_definition()
    for tool in tools:
        if tool.name == BATCH_TOOL_NAME:
            if tool != builtin:
                raise ToolDefinitionError(
                    f"tool name {BATCH_TOOL_NAME!r} is reserved for the built-in batch tool; "
                    "pick another name"
                )
            return ToolSurface(tools)
    return ToolSurface([*tools, builtin])


def standard_config(
    *,
    model: str,
    tools: Sequence[ToolDefinition] = (),
    layers: Sequence[PromptLayer] = (),
    contributions: Sequence[PromptContribution] = (),
    **options: Any,
) -> MachineConfig:
    """A ``MachineConfig`` for native tool calling.

    Builds the tool surface (adding ``batch``), keeps the prompt contributions
    whose tool gates the surface opens, renders the system prompt with the
    standard execution section, and passes ``options`` (``max_turns``,
    ``generation``, ...) through to the config.
    """
    surface = standard_surface(tools)
    prompt = build_prompt(
        PromptBuildInput(
            execution_prompt=STANDARD_EXECUTION_PROMPT,
            tool_names=surface.tool_names,
            layers=tuple(layers),
            extra_contributions=tuple(
                filter_prompt_contributions(contributions, surface.availability)
            ),
        )
    )
    return MachineConfig(
        driver=StandardDriver(),
        model=model,
        system_prompt=prompt.system_prompt,
        tools=surface.model_tool_specs,
        **options,
    )


class StandardDriver:
    """Native function calling: model, tools, model, ... until a prose answer."""

    def prepare_iteration(self, ctx: DriverContext) -> Sequence[DriverAction]:
        """Call the model with the tools."""
        return [StartLlm(request=ctx.project_request(use_tools=True))]

    def handle_llm_success(
        self,
        ctx: DriverContext,
        request: LlmRequest,
        driver_state: Any,
        response: LlmResponse,
        text_streamed: bool,
    ) -> Sequence[DriverAction]:
        """Turn a reply into a tool batch, or into the final answer."""
        actions: list[DriverAction] = []
        text = ""
        prose: list[tuple[str, ResponseTextMeta | None]] = []
        reasoning: list[tuple[int, str, ReasoningReplay | None]] = []
        calls: list[ToolCallOutput] = []
        for part in response.normalized_parts():
            if isinstance(part, TextOutput):
                if not part.text:
                    continue
                piece = join_assistant_text(text, part.text)
                text += piece
                prose.append((piece, part.response_meta))
                if not text_streamed:
                    actions.append(EmitEvent(event=TextDelta(content=piece)))
            elif isinstance(part, ReasoningOutput):
                # Signed reasoning goes back to its vendor byte for byte (Anthropic
                # rejects thinking whose text changed); unsigned text is tidied.
                signed = part.replay is not None and not part.replay.is_empty
                if not part.text.strip() and not signed:
                    continue
                body = part.text if signed else part.text.strip()
                reasoning.append((len(calls), body, part.replay))
            else:
                calls.append(part)
        actions.append(EmitEvent(event=LlmResponded(iteration=ctx.iteration, content=text)))

        if not calls:
            if not text.strip() and not reasoning:
                if _last_is_tool_result(ctx.messages):
                    actions.append(_before_completion(finished_text("")))
                    return actions
                message = "The model returned an empty response."
                actions.append(
                    EmitEvent(event=error_event("llm_provider", "empty_response", message))
                )
                actions.append(
                    Finish(outcome=Stopped(reason=StopReason.PROVIDER_ERROR, message=message))
                )
                return actions
            answer = _Parts(ctx.new_message_id())
            for _, body, replay in reasoning:
                answer.add(PartKind.REASONING, body, reasoning=replay)
            for piece, meta in prose:
                answer.add(PartKind.PROSE, piece, response_meta=meta)
            actions.append(AppendMessages(messages=(answer.message(Role.ASSISTANT),)))
            actions.append(_before_completion(finished_text(text)))
            return actions

        asked = _Parts(ctx.new_message_id())
        for piece, meta in prose:
            if piece.strip():
                asked.add(PartKind.PROSE, piece, response_meta=meta)
        pending: list[PendingToolCall] = []
        r_index = 0
        for k, call in enumerate(calls):
            while r_index < len(reasoning) and reasoning[r_index][0] <= k:
                _, body, replay = reasoning[r_index]
                asked.add(PartKind.REASONING, body, reasoning=replay)
                r_index += 1
            asked.add(
                PartKind.TOOL_CALL,
                call.input_json,
                tool_call_id=call.call_id,
                tool_name=call.tool_name,
                tool_replay=call.replay,
            )
            args, problem = parse_tool_arguments(call.input_json)
            pending.append(
                PendingToolCall(
                    call_id=call.call_id,
                    tool_name=call.tool_name,
                    args=args,
                    replay=call.replay,
                    input_json=call.input_json,
                    args_error=problem,
                )
            )
        for _, body, replay in reasoning[r_index:]:
            asked.add(PartKind.REASONING, body, reasoning=replay)
        actions.append(AppendMessages(messages=(asked.message(Role.ASSISTANT),)))
        actions.append(StartTools(calls=tuple(pending)))
        return actions

    def handle_tool_results(
        self, ctx: DriverContext, results: Sequence[CompletedToolCall]
    ) -> Sequence[DriverAction]:
        """Feed results back to the model, or end the turn on a terminal control.

        Every call gets exactly one result part (empty when its model return has
        no text), so the history stays prompt-resume-safe and providers see one
        result per call id; its attachments follow as image parts.
        """
        outcome = _terminal_outcome(results)
        answers = _Parts(ctx.new_message_id())
        for r in results:
            text, images = _merge_model_return(r.model_return)
            answers.add(PartKind.TOOL_RESULT, text, tool_call_id=r.call_id, tool_name=r.tool_name)
            for ref in images:
                answers.add(
                    PartKind.IMAGE, attachment=ref, tool_call_id=r.call_id, tool_name=r.tool_name
                )
        actions: list[DriverAction] = [AppendMessages(messages=(answers.message(Role.USER),))]
        if outcome is not None:
            actions.append(Finish(outcome=outcome))
            return actions
        actions.append(AdvanceIteration())
        limit = ctx.max_turns
        if limit is not None and ctx.iteration + 1 >= ctx.iteration_offset + limit:
            note = f"{TURN_LIMIT_PREFIX}{limit}) before a final assistant response."
            stop = _Parts(ctx.new_message_id())
            stop.add(PartKind.ERROR, note)
            actions.append(AppendMessages(messages=(stop.message(Role.SYSTEM),)))
            actions.append(Finish(outcome=Stopped(reason=StopReason.MAX_TURNS, message=note)))
            return actions
        actions.append(
            StartCheckpoint(kind=CheckpointKind.AFTER_WORK, on_empty=ContinueIteration())
        )
        return actions

    def handle_exec_result(
        self, ctx: DriverContext, driver_state: Any, result: ExecResult
    ) -> Sequence[DriverAction]:
        """The standard protocol never executes code; an exec result is a runtime error."""
        message = "The standard protocol does not execute code."
        return [
            EmitEvent(event=error_event("runtime", "unexpected_exec", message)),
            Finish(outcome=Stopped(reason=StopReason.RUNTIME_ERROR, message=message)),
        ]


def _before_completion(outcome: TurnOutcome) -> StartCheckpoint:
    return StartCheckpoint(
        kind=CheckpointKind.BEFORE_COMPLETION, on_empty=FinishWith(outcome=outcome)
    )


class _Parts:
    """Collects a message's parts, numbering their ids as they are added."""

    __slots__ = ("mid", "parts")

    def __init__(self, mid: str) -> None:
        self.mid = mid
        self.parts: list[Part] = []

    def add(self, kind: PartKind, content: str = "", **fields: Any) -> None:
        self.parts.append(
            Part(id=f"{self.mid}.p{len(self.parts)}", kind=kind, content=content, **fields)
        )

    def message(self, role: Role) -> Message:
        return Message(id=self.mid, role=role, parts=tuple(self.parts))


IMAGE_MARKER = "[Image attached]"


def _merge_model_return(
    pieces: Sequence[ModelReturnPart],
) -> tuple[str, list[AttachmentRef]]:
    """One call's model return as one text plus its attachments.

    Where an attachment sat between two pieces of text, the text says so.
    """
    texts: list[str] = []
    images: list[AttachmentRef] = []
    pending_marker = False
    for piece in pieces:
        if isinstance(piece, TextReturn):
            if not piece.text:
                continue
            if pending_marker and texts:
                texts.append(IMAGE_MARKER)
            pending_marker = False
            texts.append(piece.text)
        else:
            images.append(piece.ref)
            pending_marker = True
    return "".join(texts), images


def _last_is_tool_result(messages: Sequence[Message]) -> bool:
    if not messages:
        return False
    last = messages[-1]
    return last.role is Role.USER and any(p.kind is PartKind.TOOL_RESULT for p in last.parts)


def _terminal_outcome(results: Sequence[CompletedToolCall]) -> TurnOutcome | None:
    """The first terminal control on a successful result, as an outcome."""
    for r in results:
        control = r.output.control
        if control is None or not isinstance(r.output.outcome, ToolSuccess):
            continue
        if isinstance(control, SwitchAgentFrame):
            if control.frame_id.strip():
                return AgentFrameSwitch(frame_id=control.frame_id, task=control.task)
        elif isinstance(control, FinishTurn):
            return Finished(result=ToolValueAnswer(tool_name=r.tool_name, value=control.value))
        elif isinstance(control, FailTurn):
            return Stopped(
                reason=StopReason.TOOL_ERROR,
                message=control.failure.message,
                tool_name=r.tool_name,
                value=msgspec.to_builtins(control.failure),
            )
    return None
