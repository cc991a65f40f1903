"""Plugins through the facade: hooks, directives, transforms, projector, events, actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import runtime_support

from lash import ConfigError, LashCore, tool
from lash.kernel.llm import LlmResponse, TextOutput, ToolResultBlock
from lash.kernel.messages import PartKind, PluginOrigin, Role
from lash.kernel.outcome import Finished, Stopped, StopReason
from lash.kernel.prompt import PromptContribution
from lash.kernel.tools.output import FailureClass, TextReturn, ToolOutput
from lash.runtime.activity import AssistantProseDelta, ErrorActivity
from lash.runtime.plugins import (
    AbortTurn,
    CheckpointContext,
    EnqueueMessages,
    LifecycleEvent,
    PluginError,
    PluginRegistrar,
    ReplaceToolArgs,
    ShortCircuit,
    ToolHookContext,
    TurnHookContext,
    directives,
)
from lash.testing import Reply, ScriptedProvider, ToolCall

CALLS: list[tuple[str, int, int]] = []

TIMEOUT = 10.0  # seconds before a hung test fails (stores on disk are slower)


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLS.append(("add", a, b))
    return a + b


@dataclass
class P:
    """A test plugin assembled from registration callbacks."""

    id: str
    setup: Callable[[PluginRegistrar], None] = lambda r: None
    seen: list[Any] = field(default_factory=list)

    def register(self, registrar: PluginRegistrar) -> None:
        self.setup(registrar)


def run(core: LashCore, *inputs: str) -> list[Any]:
    async def main() -> list[Any]:
        async with core.session("s") as session:
            return [await session.run(text) for text in inputs]

    return runtime_support.run(main(), TIMEOUT)


def tool_then_answer() -> list[Reply]:
    return [Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="done")]


def test_plugin_tools_and_prompt_reach_the_model() -> None:
    @tool
    async def ping() -> str:
        """Reply pong."""
        return "pong"

    def setup(r: PluginRegistrar) -> None:
        r.tool(ping)
        r.prompt(PromptContribution.guidance("House rules", "Never guess."))

    provider = ScriptedProvider([Reply(text="ok")])
    run(LashCore(provider=provider, model="m", tools=[add], plugins=[P("p", setup)]), "hi")
    request = provider.requests[0]
    assert [t.name for t in request.tools] == ["add", "ping", "batch"]
    system = request.messages[0].blocks[0].text  # type: ignore[union-attr]
    assert "### House rules\n\nNever guess." in system


def test_before_turn_can_enqueue_messages_into_the_turn() -> None:
    async def hook(ctx: TurnHookContext) -> EnqueueMessages:
        return EnqueueMessages.text(f"note for {ctx.input}", role=Role.SYSTEM)

    provider = ScriptedProvider([Reply(text="ok")])
    core = LashCore(
        provider=provider, model="m", plugins=[P("notes", lambda r: r.before_turn(hook))]
    )
    (result,) = run(core, "hello")
    assert result.outcome == Finished(result=result.outcome.result)  # type: ignore[union-attr]
    roles = [(m.role, m.parts[0].content) for m in result.messages[:2]]
    assert roles == [(Role.USER, "hello"), (Role.SYSTEM, "note for hello")]
    assert result.messages[1].origin == PluginOrigin(plugin_id="notes")
    last = provider.requests[0].messages[-1].blocks[0]
    assert last.text == "Runtime note:\nnote for hello"  # type: ignore[union-attr]


def test_before_turn_abort_ends_the_turn_and_commits_nothing() -> None:
    async def hook(ctx: TurnHookContext) -> AbortTurn:
        return AbortTurn(message="quota exceeded", code="quota")

    provider = ScriptedProvider([Reply(text="never")])
    core = LashCore(
        provider=provider, model="m", plugins=[P("guard", lambda r: r.before_turn(hook))]
    )
    (result,) = run(core, "hello")
    assert result.outcome == Stopped(
        reason=StopReason.PLUGIN_ABORT, message="plugin guard: quota exceeded"
    )
    assert result.revision is None
    assert result.messages == ()
    assert provider.calls == 0
    (error,) = result.activities
    assert isinstance(error, ErrorActivity)
    assert (error.kind, error.code) == ("plugin", "quota")


def test_a_raising_before_turn_hook_is_a_runtime_error_naming_the_plugin() -> None:
    async def hook(ctx: TurnHookContext) -> None:
        raise KeyError("missing")

    core = LashCore(
        provider=ScriptedProvider([]),
        model="m",
        plugins=[P("buggy", lambda r: r.before_turn(hook))],
    )
    (result,) = run(core, "hello")
    assert isinstance(result.outcome, Stopped)
    assert result.outcome.reason is StopReason.RUNTIME_ERROR
    assert result.outcome.message == "plugin buggy: before_turn failed: KeyError: 'missing'"


def test_before_tool_call_can_replace_args_and_they_are_validated_again() -> None:
    CALLS.clear()

    async def double(ctx: ToolHookContext) -> ReplaceToolArgs:
        return ReplaceToolArgs(args={k: v * 2 for k, v in ctx.call.args.items()})

    core = LashCore(
        provider=ScriptedProvider(tool_then_answer()),
        model="m",
        tools=[add],
        plugins=[P("x2", lambda r: r.before_tool_call(double))],
    )
    (result,) = run(core, "go")
    assert CALLS == [("add", 2, 4)]
    assert result.tool_calls[0].output.value == 6

    CALLS.clear()

    async def bad(ctx: ToolHookContext) -> ReplaceToolArgs:
        return ReplaceToolArgs(args={"a": "one"})

    core = LashCore(
        provider=ScriptedProvider(tool_then_answer()),
        model="m",
        tools=[add],
        plugins=[P("bad", lambda r: r.before_tool_call(bad))],
    )
    (result,) = run(core, "go")
    assert CALLS == []  # the replaced arguments failed the schema; the tool never ran
    failure = result.tool_calls[0].output.outcome
    assert failure.code == "invalid_tool_args"  # type: ignore[union-attr]


def test_short_circuit_skips_the_tool_and_abort_fails_only_the_call() -> None:
    CALLS.clear()

    async def cached(ctx: ToolHookContext) -> ShortCircuit:
        return ShortCircuit(output=ToolOutput.success(42))

    core = LashCore(
        provider=ScriptedProvider(tool_then_answer()),
        model="m",
        tools=[add],
        plugins=[P("cache", lambda r: r.before_tool_call(cached))],
    )
    (result,) = run(core, "go")
    assert CALLS == []
    assert result.tool_calls[0].output.value == 42

    async def deny(ctx: ToolHookContext) -> AbortTurn:
        return AbortTurn(message="not allowed", code="policy_denied")

    core = LashCore(
        provider=ScriptedProvider(tool_then_answer()),
        model="m",
        tools=[add],
        plugins=[P("policy", lambda r: r.before_tool_call(deny))],
    )
    (result,) = run(core, "go")
    assert isinstance(result.outcome, Finished)  # the model saw the failure and answered
    failure = result.tool_calls[0].output.outcome
    assert (failure.failure_class, failure.code) == (  # type: ignore[union-attr]
        FailureClass.PERMISSION_DENIED,
        "policy_denied",
    )
    assert failure.message == "plugin policy: not allowed"  # type: ignore[union-attr]


def test_after_tool_call_can_replace_output_and_enqueue_for_the_checkpoint() -> None:
    async def after(ctx: ToolHookContext) -> list[Any]:
        assert ctx.output is not None
        return [
            ShortCircuit(output=ToolOutput.success(f"sum={ctx.output.value}")),
            EnqueueMessages.text("remember the sum"),
        ]

    provider = ScriptedProvider(tool_then_answer())
    core = LashCore(
        provider=provider,
        model="m",
        tools=[add],
        plugins=[P("after", lambda r: r.after_tool_call(after))],
    )
    (result,) = run(core, "go")
    assert result.tool_calls[0].output.value == "sum=3"
    texts = [m.parts[0].content for m in result.messages]
    assert "remember the sum" in texts  # injected at the after-work checkpoint, committed
    second = provider.requests[1].messages
    results = [b for m in second for b in m.blocks if isinstance(b, ToolResultBlock)]
    assert [b.content for b in results] == ["sum=3"]


def test_checkpoint_hook_injects_messages_and_can_abort() -> None:
    seen: list[str] = []

    async def inject(ctx: CheckpointContext) -> EnqueueMessages | None:
        seen.append(ctx.kind)
        if ctx.kind == "before_completion" and len(seen) == 1:
            return EnqueueMessages.text("one more thing")
        return None

    provider = ScriptedProvider([Reply(text="first"), Reply(text="second")])
    core = LashCore(provider=provider, model="m", plugins=[P("cp", lambda r: r.checkpoint(inject))])
    (result,) = run(core, "go")
    assert result.text == "second"
    assert seen == ["before_completion", "before_completion"]
    assert [m.parts[0].content for m in result.messages] == [
        "go",
        "first",
        "one more thing",
        "second",
    ]

    async def stop(ctx: CheckpointContext) -> AbortTurn:
        return AbortTurn(message="budget spent")

    core = LashCore(
        provider=ScriptedProvider([Reply(text="x")]),
        model="m",
        plugins=[P("budget", lambda r: r.checkpoint(stop))],
    )
    (result,) = run(core, "go")
    assert result.outcome == Stopped(reason=StopReason.PLUGIN_ABORT, message="budget spent")
    assert any(isinstance(a, ErrorActivity) and a.kind == "plugin" for a in result.activities)


def test_transforms_and_the_exclusive_projector() -> None:
    def redact(response: LlmResponse) -> LlmResponse:
        def clean(part: Any) -> Any:
            if isinstance(part, TextOutput):
                return TextOutput(text=part.text.replace("secret", "******"))
            return part

        return msgspec.structs.replace(
            response,
            full_text=response.full_text.replace("secret", "******"),
            parts=tuple(clean(p) for p in response.parts),
        )

    def setup(r: PluginRegistrar) -> None:
        r.response_transform(redact)
        r.stream_transform(str.upper)
        r.tool_result_projector(lambda output: (TextReturn(text="<projected>"),))

    provider = ScriptedProvider(
        [Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="the secret")]
    )
    core = LashCore(provider=provider, model="m", tools=[add], plugins=[P("t", setup)])
    (result,) = run(core, "go")
    assert result.text == "the ******"
    deltas = [a.text for a in result.activities if isinstance(a, AssistantProseDelta)]
    assert deltas == ["THE SECRET"]  # display transform on the stream
    blocks = [b for m in provider.requests[1].messages for b in m.blocks]
    assert [b.content for b in blocks if isinstance(b, ToolResultBlock)] == ["<projected>"]
    assert result.tool_calls[0].output.value == 3  # the full output is kept

    def twice(r: PluginRegistrar) -> None:
        r.tool_result_projector(lambda o: ())

    with pytest.raises(ConfigError, match="a tool result projector is already registered by 'a'"):
        LashCore(provider=provider, model="m", plugins=[P("a", twice), P("b", twice)])


def test_lifecycle_listeners_run_and_their_failures_are_not_fatal() -> None:
    events: list[str] = []

    async def listen(event: LifecycleEvent) -> None:
        events.append(event.type)

    async def broken(event: LifecycleEvent) -> None:
        raise RuntimeError("listener bug")

    def setup(r: PluginRegistrar) -> None:
        r.on_event(listen)
        r.on_event(broken)

    core = LashCore(
        provider=ScriptedProvider([Reply(text="ok")]), model="m", plugins=[P("l", setup)]
    )
    (result,) = run(core, "go")
    assert result.text == "ok"
    assert events == ["turn_started", "turn_finished"]


def test_actions_are_called_by_name() -> None:
    async def count(args: dict[str, Any]) -> int:
        return len(args.get("items", []))

    core = LashCore(
        provider=ScriptedProvider([]),
        model="m",
        plugins=[P("a", lambda r: r.action("count", count, description="Count items."))],
    )

    async def main() -> Any:
        async with core.session("s") as session:
            value = await session.action("count", {"items": [1, 2, 3]})
            with pytest.raises(PluginError, match=r"no plugin action 'nope' \(registered: count\)"):
                await session.action("nope")
            return value

    assert runtime_support.run(main(), TIMEOUT) == 3


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        ([P("same"), P("same")], "two plugins have the id 'same'"),
        ([P(" ")], "has no id"),
        ([object()], "has no id"),
    ],
)
def test_bad_plugin_sets_are_config_errors(plugins: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LashCore(provider=ScriptedProvider([]), model="m", plugins=plugins)


def test_duplicate_actions_and_tool_names_are_config_errors() -> None:
    async def handler(args: dict[str, Any]) -> None:
        return None

    def action(r: PluginRegistrar) -> None:
        r.action("go", handler)

    with pytest.raises(ConfigError, match="action 'go' is already registered by 'a'"):
        LashCore(provider=ScriptedProvider([]), model="m", plugins=[P("a", action), P("b", action)])

    def tools(r: PluginRegistrar) -> None:
        r.tool(add)

    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        LashCore(provider=ScriptedProvider([]), model="m", tools=[add], plugins=[P("t", tools)])


def test_plugin_message_kinds_in_history() -> None:
    async def hook(ctx: TurnHookContext) -> EnqueueMessages:
        return EnqueueMessages.text("ctx")

    core = LashCore(
        provider=ScriptedProvider([Reply(text="ok")]),
        model="m",
        plugins=[P("n", lambda r: r.before_turn(hook))],
    )
    (result,) = run(core, "hi")
    assert [p.kind for m in result.messages for p in m.parts] == [
        PartKind.TEXT,
        PartKind.TEXT,
        PartKind.PROSE,
    ]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("abort", "plugin hook returned str; expected None, a directive"),
        ({"kind": "abort_turn", "message": "x"}, "plugin hook returned dict"),
        (42, "plugin hook returned int"),
        ([AbortTurn(message="x"), "y"], "plugin hook returned a sequence holding str"),
    ],
)
def test_a_hook_result_that_is_not_directives_is_a_plugin_error(result: Any, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        directives(result)


def test_directives_accepts_none_one_directive_or_a_list() -> None:
    abort = AbortTurn(message="x")
    assert directives(None) == ()
    assert directives(abort) == (abort,)
    assert directives([abort, abort]) == directives((abort, abort)) == (abort, abort)


def test_a_before_turn_hook_returning_a_string_fails_the_turn_naming_the_plugin() -> None:
    async def hook(ctx: TurnHookContext) -> Any:
        return "abort"  # once silently iterated as characters, and ignored

    provider = ScriptedProvider([Reply(text="never")])
    plugin = P("sloppy", lambda r: r.before_turn(hook))
    core = LashCore(provider=provider, model="m", plugins=[plugin])
    (result,) = run(core, "hello")
    assert isinstance(result.outcome, Stopped)
    assert result.outcome.reason is StopReason.RUNTIME_ERROR
    assert result.outcome.message.startswith(
        "plugin sloppy: before_turn failed: PluginError: plugin hook returned str"
    )
    assert provider.calls == 0


@pytest.mark.parametrize("hook_kind", ["before", "after"])
def test_a_tool_hook_returning_a_non_directive_fails_only_the_call(hook_kind: str) -> None:
    async def hook(ctx: ToolHookContext) -> Any:
        return 42  # once a raw TypeError outside the hook's guard, failing the whole turn

    def setup(r: PluginRegistrar) -> None:
        (r.before_tool_call if hook_kind == "before" else r.after_tool_call)(hook)

    core = LashCore(
        provider=ScriptedProvider(tool_then_answer()),
        model="m",
        tools=[add],
        plugins=[P("sloppy", setup)],
    )
    (result,) = run(core, "go")
    assert isinstance(result.outcome, Finished)  # the model saw the failed call and answered
    failure = result.tool_calls[0].output.outcome
    assert failure.code == f"{hook_kind}_tool_call_failed"  # type: ignore[union-attr]
    assert failure.message.startswith(  # type: ignore[union-attr]
        "plugin sloppy: PluginError: plugin hook returned int"
    )


def test_a_checkpoint_hook_returning_a_non_directive_ends_the_turn() -> None:
    async def hook(ctx: CheckpointContext) -> Any:
        return {"kind": "enqueue_messages"}

    core = LashCore(
        provider=ScriptedProvider([Reply(text="x")]),
        model="m",
        plugins=[P("sloppy", lambda r: r.checkpoint(hook))],
    )
    (result,) = run(core, "go")
    assert isinstance(result.outcome, Stopped)
    assert result.outcome.reason is StopReason.PLUGIN_ABORT
    (error,) = [a for a in result.activities if isinstance(a, ErrorActivity)]
    assert error.code == "plugin_checkpoint_failed"
    assert "PluginError: plugin hook returned dict" in error.message
