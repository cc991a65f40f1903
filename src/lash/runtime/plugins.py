"""Plugins: one registrar for tools, prompt, hooks, transforms, projector, events, actions.

A plugin is any object with an ``id`` and a ``register(registrar)`` method.
Hooks are async functions returning *directives* (values, never exceptions):

| hook | may return |
|---|---|
| ``before_turn`` | ``EnqueueMessages`` (added to the turn's input), ``AbortTurn`` |
| ``checkpoint`` | ``EnqueueMessages`` (injected and committed), ``AbortTurn`` |
| ``before_tool_call`` | ``ReplaceToolArgs``, ``ShortCircuit`` (skip the tool), ``AbortTurn`` |
| ``after_tool_call`` | ``ShortCircuit`` (replace output), ``EnqueueMessages`` (next checkpoint) |

Directive hooks run one after another in registration order; a hook that
raises, or returns something other than None, a directive or a list of
directives, fails what it guards (the turn, or the tool call) with the plugin named.
Lifecycle listeners run concurrently and their failures are logged, never
fatal. Exactly one tool-result projector may be registered.

Tool-call hooks run inside the tool call's effect, and checkpoint hooks inside
the checkpoint's effect, so a durable host records what they decided.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

import msgspec

from ..kernel.llm import LlmResponse
from ..kernel.messages import InjectedMessage, Message, Role
from ..kernel.prompt import PromptContribution
from ..kernel.tools.output import PendingToolCall, ToolOutput
from .state import StateView, ToolStateView
from .tools import Tool

log = logging.getLogger("lash.plugins")

_S = {"frozen": True, "kw_only": True, "omit_defaults": True}


# ---------------------------------------------------------------- directives


class AbortTurn(msgspec.Struct, tag="abort_turn", tag_field="kind", **_S):
    """End the turn as ``Stopped(plugin_abort)`` (or fail the tool call, from a tool hook)."""

    message: str
    code: str = "plugin_abort"


class ReplaceToolArgs(msgspec.Struct, tag="replace_tool_args", tag_field="kind", **_S):
    """Call the tool with these arguments instead (they are validated again)."""

    args: dict[str, Any]


class ShortCircuit(msgspec.Struct, tag="short_circuit", tag_field="kind", **_S):
    """Use this output: before the call, the tool does not run; after it, it replaces the result."""

    output: ToolOutput


class EnqueueMessages(msgspec.Struct, tag="enqueue_messages", tag_field="kind", **_S):
    """Add messages (user or system) to the conversation at the next safe point."""

    messages: tuple[InjectedMessage, ...]

    @classmethod
    def text(cls, *texts: str, role: Role = Role.USER) -> EnqueueMessages:
        """Messages holding plain text."""
        return cls(messages=tuple(InjectedMessage(role=role, content=t) for t in texts))


Directive: TypeAlias = AbortTurn | ReplaceToolArgs | ShortCircuit | EnqueueMessages
HookResult: TypeAlias = Directive | Sequence[Directive] | None


# ---------------------------------------------------------------- hook contexts


class TurnHookContext(msgspec.Struct, kw_only=True):
    """What a turn hook sees."""

    session_id: str
    turn_id: str
    turn_index: int
    input: str
    history: Sequence[Message]
    state: StateView = msgspec.field(default_factory=lambda: StateView({}))
    """The session's state; writes land with the turn's commit (or not at all if it ends early)."""


class CheckpointContext(msgspec.Struct, kw_only=True):
    """What a checkpoint hook sees: where the turn is and what it has added so far."""

    session_id: str
    turn_id: str
    kind: str
    iteration: int


class ToolHookContext(msgspec.Struct, kw_only=True):
    """What a tool-call hook sees; ``output`` is set for ``after_tool_call``."""

    session_id: str
    turn_id: str
    call: PendingToolCall
    output: ToolOutput | None = None
    state: ToolStateView | None = None
    """The session's state as the call sees it (shared with the tool)."""


class TurnEvent(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """Base of lifecycle events."""

    @property
    def type(self) -> str:
        """The event's kind (its ``type`` on the wire)."""
        return self.__struct_config__.tag  # type: ignore[return-value]


class TurnStartedEvent(TurnEvent, tag="turn_started", frozen=True, kw_only=True):
    """A turn is about to run."""

    session_id: str
    turn_id: str


class TurnFinishedEvent(TurnEvent, tag="turn_finished", frozen=True, kw_only=True):
    """A turn was committed; ``result`` is its ``TurnResult``."""

    session_id: str
    turn_id: str
    result: Any


LifecycleEvent: TypeAlias = TurnStartedEvent | TurnFinishedEvent

TurnHook = Callable[[TurnHookContext], Awaitable[HookResult]]
CheckpointHook = Callable[[CheckpointContext], Awaitable[HookResult]]
ToolHook = Callable[[ToolHookContext], Awaitable[HookResult]]
Projector = Callable[[ToolOutput], tuple[Any, ...]]
ResponseTransform = Callable[[LlmResponse], LlmResponse]
StreamTransform = Callable[[str], str]
Listener = Callable[[LifecycleEvent], Awaitable[None]]
ActionHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class Plugin(Protocol):
    """A plugin: an ``id`` and a ``register`` method that adds its parts."""

    @property
    def id(self) -> str:
        """A stable identifier, used in errors and traces."""

    def register(self, registrar: PluginRegistrar) -> None:
        """Add tools, prompt contributions, hooks and so on."""


class PluginError(Exception):
    """A plugin could not be registered, or a plugin action failed."""


# ---------------------------------------------------------------- registrar


class PluginRegistrar:
    """Collects what plugins register; ``PluginHost.build`` hands one to each plugin."""

    def __init__(self) -> None:
        self.current = ""
        self.tools: list[Tool] = []
        self.contributions: list[PromptContribution] = []
        self.before_turn_hooks: list[tuple[str, TurnHook]] = []
        self.checkpoint_hooks: list[tuple[str, CheckpointHook]] = []
        self.before_tool_hooks: list[tuple[str, ToolHook]] = []
        self.after_tool_hooks: list[tuple[str, ToolHook]] = []
        self.response_transforms: list[tuple[str, ResponseTransform]] = []
        self.stream_transforms: list[tuple[str, StreamTransform]] = []
        self.listeners: list[tuple[str, Listener]] = []
        self.actions: dict[str, tuple[str, ActionHandler, str]] = {}
        self.projector: tuple[str, Projector] | None = None

    def tool(self, t: Tool) -> None:
        """Offer a tool to the model."""
        self.tools.append(t)

    def prompt(self, contribution: PromptContribution) -> None:
        """Add a system-prompt contribution."""
        self.contributions.append(contribution)

    def before_turn(self, hook: TurnHook) -> None:
        """Run ``hook`` before each turn (may enqueue input or abort)."""
        self.before_turn_hooks.append((self.current, hook))

    def checkpoint(self, hook: CheckpointHook) -> None:
        """Run ``hook`` at each checkpoint (may inject messages or abort)."""
        self.checkpoint_hooks.append((self.current, hook))

    def before_tool_call(self, hook: ToolHook) -> None:
        """Run ``hook`` before each tool call (after argument validation)."""
        self.before_tool_hooks.append((self.current, hook))

    def after_tool_call(self, hook: ToolHook) -> None:
        """Run ``hook`` after each tool call."""
        self.after_tool_hooks.append((self.current, hook))

    def response_transform(self, fn: ResponseTransform) -> None:
        """Rewrite each model response before the turn machine sees it (chained)."""
        self.response_transforms.append((self.current, fn))

    def stream_transform(self, fn: StreamTransform) -> None:
        """Rewrite each streamed prose delta before the host sees it (chained)."""
        self.stream_transforms.append((self.current, fn))

    def tool_result_projector(self, fn: Projector) -> None:
        """Decide what the model sees of a tool output; only one plugin may do this."""
        if self.projector is not None:
            raise PluginError(
                f"plugin {self.current!r}: a tool result projector is already registered "
                f"by {self.projector[0]!r}"
            )
        self.projector = (self.current, fn)

    def on_event(self, listener: Listener) -> None:
        """Be told about lifecycle events (failures are logged, never fatal)."""
        self.listeners.append((self.current, listener))

    def action(self, name: str, handler: ActionHandler, *, description: str = "") -> None:
        """Expose a named operation the host can call with ``session.action(name, args)``."""
        if not name.strip():
            raise PluginError(f"plugin {self.current!r}: an action needs a name")
        if name in self.actions:
            raise PluginError(
                f"plugin {self.current!r}: action {name!r} is already registered by "
                f"{self.actions[name][0]!r}"
            )
        self.actions[name] = (self.current, handler, description)


class PluginHost:
    """The registered parts of every plugin, in registration order."""

    def __init__(self, registrar: PluginRegistrar, plugin_ids: tuple[str, ...]) -> None:
        self.parts = registrar
        self.plugin_ids = plugin_ids

    @classmethod
    def build(cls, plugins: Sequence[Plugin]) -> PluginHost:
        """Register every plugin; duplicate ids or conflicting parts are ``PluginError``."""
        registrar = PluginRegistrar()
        ids: list[str] = []
        for plugin in plugins:
            pid = getattr(plugin, "id", None)
            if not isinstance(pid, str) or not pid.strip():
                raise PluginError(f"{plugin!r} has no id; a plugin needs a non-blank string id")
            if pid in ids:
                raise PluginError(f"two plugins have the id {pid!r}")
            if not callable(getattr(plugin, "register", None)):
                raise PluginError(f"plugin {pid!r} has no register() method")
            ids.append(pid)
            registrar.current = pid
            plugin.register(registrar)
        registrar.current = ""
        return cls(registrar, tuple(ids))

    @property
    def empty(self) -> bool:
        """True when no plugin is installed."""
        return not self.plugin_ids

    async def emit(self, event: LifecycleEvent) -> None:
        """Tell every listener, concurrently; a failing listener is logged and ignored."""
        listeners = self.parts.listeners
        if not listeners:
            return
        results = await asyncio.gather(
            *(listener(event) for _, listener in listeners), return_exceptions=True
        )
        for (pid, _), outcome in zip(listeners, results, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("plugin %s listener failed on %s: %r", pid, event.type, outcome)


_DIRECTIVES = (AbortTurn, ReplaceToolArgs, ShortCircuit, EnqueueMessages)


def directives(result: HookResult) -> tuple[Directive, ...]:
    """A hook's result as a tuple of directives.

    A hook may return None, one directive, or a list or tuple of them; anything
    else (a string, a dict, a number, ...) is a ``PluginError``.
    """
    if result is None:
        return ()
    if isinstance(result, _DIRECTIVES):
        return (result,)
    if isinstance(result, list | tuple):
        for item in result:
            if not isinstance(item, _DIRECTIVES):
                raise PluginError(
                    f"plugin hook returned a sequence holding {type(item).__name__}; "
                    f"each item must be a directive ({_DIRECTIVE_NAMES})"
                )
        return tuple(result)
    raise PluginError(
        f"plugin hook returned {type(result).__name__}; expected None, a directive "
        f"({_DIRECTIVE_NAMES}) or a list of directives"
    )


_DIRECTIVE_NAMES = ", ".join(t.__name__ for t in _DIRECTIVES)
