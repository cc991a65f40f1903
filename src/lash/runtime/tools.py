"""Tools at run time: the ``@tool`` decorator, the registry, and running one attempt.

Arguments are validated against the tool's schema before any tool code runs.
Everything a tool can do wrong (raise, time out, return something that is not
JSON) becomes a ``ToolFailure`` value, never an exception that escapes the turn.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, overload

import msgspec

from ..kernel.errors import ToolDefinitionError, ToolValueError
from ..kernel.llm import LlmRequest, LlmResponse
from ..kernel.protocols.batch import BATCH_TOOL_NAME
from ..kernel.protocols.standard import standard_surface
from ..kernel.tools.definition import (
    Availability,
    RetryPolicy,
    Scheduling,
    ToolDefinition,
)
from ..kernel.tools.output import (
    FailureClass,
    FailureSource,
    PendingToolCall,
    RetryNever,
    RetrySafe,
    TextReturn,
    ToolFailure,
    ToolOutput,
)
from ..kernel.tools.surface import ToolSurface
from ..kernel.tools.typed import TypedTool, tool_definition_from_function
from ..kernel.tools.validation import (
    InvalidToolArguments,
    check_tool_schema,
    validate_tool_args,
)
from ..kernel.tools.value import model_return_parts
from .cancel import CancelToken
from .state import CallSlots, StateWrites, ToolStateView


class ToolContext:
    """What a running tool may know: where it runs, its attempt, and cancellation.

    ``replay_key`` is the same for every attempt of one call, so an idempotent
    tool can use it as its idempotency key.
    """

    __slots__ = (
        "_children",
        "_completer",
        "attempt",
        "call_id",
        "cancel",
        "max_attempts",
        "replay_key",
        "session_id",
        "state",
        "tool_name",
        "turn_id",
    )

    def __init__(
        self,
        *,
        session_id: str,
        turn_id: str,
        call_id: str,
        tool_name: str,
        replay_key: str,
        attempt: int = 1,
        max_attempts: int = 1,
        cancel: CancelToken | None = None,
        completer: DirectCompleter | None = None,
        children: ChildRunner | None = None,
        state: ToolStateView | None = None,
    ) -> None:
        self._completer = completer
        self._children = children
        self.session_id = session_id
        self.turn_id = turn_id
        self.call_id = call_id
        self.tool_name = tool_name
        self.replay_key = replay_key
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.cancel = cancel or CancelToken()
        self.state: ToolStateView = state or ToolStateView({}, CallSlots(_no_changes, 1), 0)
        """The session's state as this call sees it; writes land with the turn's commit."""

    async def complete(
        self, request: LlmRequest, *, usage_source: str = "tool", key: str | None = None
    ) -> LlmResponse:
        """A helper model call made from this tool, through the effect boundary.

        It is keyed by this call and a stable hash of ``request`` (or ``key``),
        so a durable replay returns the recorded answer instead of paying again.
        Its usage is booked to ``usage_source``. Raises ``ProviderError``.
        """
        if self._completer is None:
            raise RuntimeError("this tool context has no model access")
        return await self._completer(self, request, usage_source, key)

    async def run_child(self, text: str, *, session_id: str | None = None) -> Any:
        """Run one turn of a child session and return its ``TurnResult``.

        The child is its own session (default id ``{session}/{call_id}``) in the
        same store; its turn id derives from this call, so a replayed call finds
        the child's commit instead of running it twice. Its usage is booked to
        this turn under the source ``child``.
        """
        if self._children is None:
            raise RuntimeError("this tool context cannot start child sessions")
        return await self._children(self, text, session_id)


async def _no_changes() -> StateWrites:
    return {}


ChildRunner = Callable[["ToolContext", str, "str | None"], Awaitable[Any]]
"""How a ``ToolContext`` reaches the runtime to run a child session turn."""

DirectCompleter = Callable[["ToolContext", LlmRequest, str, "str | None"], Awaitable[LlmResponse]]
"""How a ``ToolContext`` reaches the runtime for a direct completion."""


class ToolError(Exception):
    """Raise from a tool to fail the call with a chosen class, code and retry hint.

    ``retry_after_ms`` (or ``retryable=True``) marks the failure safe to retry;
    the tool's retry policy decides whether it is.
    """

    def __init__(
        self,
        message: str,
        *,
        failure_class: FailureClass = FailureClass.EXECUTION,
        code: str = "tool_error",
        retryable: bool = False,
        retry_after_ms: int | None = None,
        raw: Any = None,
    ) -> None:
        super().__init__(message)
        self.failure = ToolFailure(
            failure_class=failure_class,
            code=code,
            message=message,
            source=FailureSource.TOOL,
            retry=RetrySafe(after_ms=retry_after_ms)
            if retryable or retry_after_ms is not None
            else RetryNever(),
            raw=raw,
        )


def _failure(failure_class: FailureClass, code: str, message: str) -> ToolOutput:
    return ToolOutput.failure(ToolFailure.runtime(failure_class, code, message))


def _is_context_hint(hint: object) -> bool:
    """True for ``ToolContext`` and ``ToolContext | None``."""
    if hint is ToolContext or hint == "ToolContext":
        return True
    if isinstance(hint, str):
        return hint.replace(" ", "") in (
            "ToolContext|None",
            "None|ToolContext",
            "Optional[ToolContext]",
        )
    return ToolContext in typing.get_args(hint)


class Tool:
    """A tool the runtime can call: its definition and the function behind it.

    Plain functions run in a worker thread so they never stall the event loop;
    ``async`` functions run on the loop. A parameter annotated ``ToolContext``
    receives the call's context and is not part of the schema. ``timeout``
    (seconds) bounds one attempt.
    """

    __slots__ = ("_context_param", "_fn", "_is_async", "_typed", "definition", "timeout")

    def __init__(
        self,
        definition: ToolDefinition,
        fn: Callable[..., Any],
        *,
        typed: TypedTool | None = None,
        context_param: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"tool {definition.name!r}: timeout must be positive")
        self.definition = definition
        self.timeout = timeout
        self._fn = fn
        self._typed = typed
        self._context_param = context_param
        self._is_async = inspect.iscoroutinefunction(fn)

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.definition.name

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Run one attempt; every failure comes back as a ``ToolOutput`` failure.

        ``args`` must already have passed ``prepare_failure`` (the schema check);
        here they are only converted into the function's Python values.
        """
        try:
            kwargs = self._typed.convert_args(args) if self._typed is not None else dict(args)
        except InvalidToolArguments as exc:
            return _failure(
                FailureClass.INVALID_REQUEST, "invalid_tool_args", f"{self.name}: {exc}"
            )
        if self._context_param is not None:
            kwargs[self._context_param] = ctx
        try:
            if self._is_async:
                pending = self._fn(**kwargs)
            else:
                pending = asyncio.to_thread(self._fn, **kwargs)
            if self.timeout is not None:
                result = await asyncio.wait_for(pending, self.timeout)
            else:
                result = await pending
        except ToolError as exc:
            return ToolOutput.failure(exc.failure)
        except TimeoutError:
            return _failure(
                FailureClass.TIMEOUT,
                "tool_timeout",
                f"{self.name} did not finish within {self.timeout:g} s",
            )
        except Exception as exc:  # a tool's own bug is a failed call, not a failed turn
            return ToolOutput.failure(
                ToolFailure(
                    failure_class=FailureClass.EXECUTION,
                    code="tool_error",
                    message=f"{type(exc).__name__}: {exc}",
                    source=FailureSource.TOOL,
                )
            )
        return _to_output(self.name, result)


def _to_output(name: str, result: Any) -> ToolOutput:
    if isinstance(result, ToolOutput):
        return result
    dump = getattr(result, "model_dump", None)
    if callable(dump):  # a pydantic model
        result = dump(mode="json")
    try:
        return ToolOutput.success(result)
    except ToolValueError:
        pass
    try:
        return ToolOutput.success(msgspec.to_builtins(result))
    except (TypeError, ToolValueError) as exc:
        return _failure(
            FailureClass.INTERNAL,
            "invalid_tool_output",
            f"{name} returned a value that is not JSON: {exc}",
        )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    availability: Availability = Availability.SHOWCASED,
    scheduling: Scheduling = Scheduling.PARALLEL,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    availability: Availability = Availability.SHOWCASED,
    scheduling: Scheduling = Scheduling.PARALLEL,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a tool from a plain or ``async`` function.

    The schema comes from the type hints, the description from the docstring
    (Google-style ``Args:`` lines describe the parameters). Use bare
    (``@tool``) or with options (``@tool(scheduling=Scheduling.SERIAL)``).
    """

    def build(func: Callable[..., Any]) -> Tool:
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = {}
        params = inspect.signature(func).parameters
        context = [p for p in params if _is_context_hint(hints.get(p, params[p].annotation))]
        if len(context) > 1:
            raise ToolDefinitionError(
                f"tool {func.__name__!r}: more than one ToolContext parameter"
            )
        typed = tool_definition_from_function(
            func,
            name=name,
            description=description,
            availability=availability,
            scheduling=scheduling,
            retry_policy=retry,
            skip=context,
        )
        return Tool(
            typed.definition,
            func,
            typed=typed,
            context_param=context[0] if context else None,
            timeout=timeout,
        )

    return build(fn) if fn is not None else build


class ToolRegistry:
    """The tools a session offers, with a generation counter that changes on every edit."""

    __slots__ = ("_generation", "_surface", "_tools")

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._generation = 0
        self._surface: ToolSurface | None = None
        for t in tools:
            self.add(t)

    @property
    def generation(self) -> int:
        """Increments whenever a tool is added or removed."""
        return self._generation

    def add(self, t: Tool) -> None:
        """Add a tool; a second tool with the same name, or an invalid schema, is an error."""
        if not isinstance(t, Tool):
            raise ToolDefinitionError(
                f"expected a Tool (decorate the function with @tool), got {type(t).__name__}"
            )
        if t.name == BATCH_TOOL_NAME:
            raise ToolDefinitionError("'batch' is provided by the runtime; pick another name")
        if t.name in self._tools:
            raise ToolDefinitionError(f"two tools are named {t.name!r}")
        check_tool_schema(t.definition.input_schema, tool_name=t.name)
        self._tools[t.name] = t
        self._changed()

    def remove(self, name: str) -> Tool:
        """Remove and return a tool; an unknown name is a ``KeyError``."""
        removed = self._tools.pop(name)
        self._changed()
        return removed

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, if any."""
        return self._tools.get(name)

    def __iter__(self) -> typing.Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def surface(self) -> ToolSurface:
        """The tool surface the model sees (the tools plus ``batch``), memoized."""
        if self._surface is None:
            self._surface = standard_surface([t.definition for t in self._tools.values()])
        return self._surface

    def _changed(self) -> None:
        self._generation += 1
        self._surface = None


# ---------------------------------------------------------------- preparing and projecting


def prepare_failure(call: PendingToolCall, registry: ToolRegistry) -> ToolOutput | None:
    """The failure that completes ``call`` before any tool code runs, or None if it may run.

    Unusable argument text, unknown or hidden tools, and arguments that break the
    tool's schema are answered here, deterministically, without an effect.
    """
    if call.args_error is not None:
        return _failure(
            FailureClass.INVALID_REQUEST,
            "invalid_tool_args",
            f"{call.tool_name}: {call.args_error}",
        )
    name = call.tool_name
    if name == BATCH_TOOL_NAME:
        return None  # the batch planner reports its own argument problems
    definition = registry.surface.get(name)
    if definition is None:
        available = ", ".join(registry.surface.tool_names)
        return _failure(
            FailureClass.UNAVAILABLE,
            "tool_unavailable",
            f"Unknown tool {name!r}. Available tools: {available}",
        )
    try:
        validate_tool_args(definition.input_schema, call.args)
    except InvalidToolArguments as exc:
        return _failure(FailureClass.INVALID_REQUEST, "invalid_tool_args", f"{name}: {exc}")
    return None


OUTPUT_BUDGET_CHARS = 16 * 1024
OUTPUT_BUDGET_LINES = 400


def budget_text(
    text: str, *, max_chars: int = OUTPUT_BUDGET_CHARS, max_lines: int = OUTPUT_BUDGET_LINES
) -> str:
    """Keep the head and tail of text beyond the budget, saying how much was left out."""
    lines = text.count("\n") + 1
    if len(text) <= max_chars and lines <= max_lines:
        return text
    if lines > max_lines:
        parts = text.split("\n")
        keep = max_lines // 2
        omitted = len(parts) - 2 * keep
        text = "\n".join([*parts[:keep], f"... ({omitted} lines omitted) ...", *parts[-keep:]])
    if len(text) > max_chars:
        keep = max_chars // 2
        omitted = len(text) - 2 * keep
        text = f"{text[:keep]}\n\n... ({omitted} characters omitted) ...\n\n{text[-keep:]}"
    return text


def default_projection(output: ToolOutput) -> tuple[Any, ...]:
    """What the model sees of a tool output: the standard projection within the budget."""
    parts = model_return_parts(output)
    return tuple(
        TextReturn(text=budget_text(p.text)) if isinstance(p, TextReturn) else p for p in parts
    )
