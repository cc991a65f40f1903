"""The turn loop: drive a ``TurnMachine``, sending every reply effect across the boundary.

``TurnRunner`` plays two roles. As the *loop* it polls the machine, maps each
reply-needing effect to an ``EffectEnvelope`` with a stable replay key, and
hands the envelope to the effect controller. As the *local executor* it does
the real work when the controller asks: call the provider (streaming deltas to
the host), run one tool attempt, collect checkpoint input, sleep.

Tool calls of one batch run concurrently (``serial`` tools one at a time, in
call order), each with its own envelope; retries are separate envelopes with a
``sleep`` envelope between them, so a durable engine journals every attempt and
every wait. Results go back to the machine in call order.

Cancellation is cooperative and cheap: cancelling the token cancels the task
running the loop; the loop catches that at whatever it was awaiting and ends
the turn as ``Stopped(cancelled)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from ..kernel.effects import (
    Checkpoint,
    CheckpointDelivered,
    Done,
    Emit,
    LlmCall,
    LlmCompleted,
    LlmFailed,
    Progress,
    Response,
    SurfaceSynced,
    SyncExecutionSurface,
    ToolCalls,
    ToolResults,
)
from ..kernel.errors import ProtocolError
from ..kernel.events import (
    ErrorReported,
    LlmRequestStarted,
    SessionEvent,
    TextDelta,
    TokenUsageReported,
    ToolCallFinished,
)
from ..kernel.events import (
    ReasoningDelta as KernelReasoningDelta,
)
from ..kernel.llm import LlmCallError, LlmRequest, LlmResponse, LlmUsage, ToolCallOutput
from ..kernel.machine import TurnMachine
from ..kernel.messages import InjectedMessage
from ..kernel.outcome import Finished, Stopped, StopReason, ToolValueAnswer
from ..kernel.protocols.batch import (
    BATCH_TOOL_NAME,
    BatchArgumentsError,
    BatchCall,
    batch_item,
    batch_output,
    plan_batch,
)
from ..kernel.tools.definition import NeverRetry, Scheduling, retry_delay_ms
from ..kernel.tools.output import (
    CompletedToolCall,
    FailureClass,
    FailureSource,
    PendingToolCall,
    RetryExhausted,
    SwitchAgentFrame,
    ToolFailure,
    ToolOutput,
)
from ..providers.base import (
    Provider,
    ProviderError,
    ReasoningDeltaEvent,
    RetryStatusEvent,
    StreamEvent,
    TextDeltaEvent,
    UsageEvent,
)
from ..store.base import SessionRelation
from .activity import (
    AssistantProseDelta,
    ChildTurnCompleted,
    ErrorActivity,
    ModelRequestStarted,
    QueuedInputAccepted,
    ReasoningDelta,
    RetryStatus,
    ToolCallCompleted,
    ToolCallStarted,
    ToolValue,
    TurnActivity,
    UsageReported,
)
from .cancel import CancelToken
from .effects import (
    CheckpointCommand,
    DirectCommand,
    DirectCompleted,
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectHostError,
    EffectKind,
    EffectOutcome,
    InvocationScope,
    LlmCallCommand,
    RuntimeInvocation,
    SleepCommand,
    Slept,
    SyncSurfaceCommand,
    ToolCallCommand,
    attempt_key,
    batch_entry_key,
    direct_key,
    outcome_matches,
    retry_sleep_key,
    tool_call_cause,
    tool_call_key,
    turn_effect_key,
)
from .plugins import (
    AbortTurn,
    CheckpointContext,
    EnqueueMessages,
    PluginHost,
    Projector,
    ReplaceToolArgs,
    ShortCircuit,
    ToolHookContext,
    directives,
)
from .queue import TurnClaims, as_injected
from .state import CallSlots, StateWrites, ToolStateView
from .tools import Tool, ToolContext, ToolRegistry, default_projection, prepare_failure
from .trace import (
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallStarted,
    ToolCallTraced,
    Tracer,
    TurnCompleted,
    TurnStarted,
)

ActivitySink = Callable[[TurnActivity], Awaitable[None]]


_NO_USAGE = LlmUsage()


class PluginAbortError(Exception):
    """A plugin hook asked to end the turn from inside an effect."""

    def __init__(self, plugin_id: str, code: str, message: str) -> None:
        super().__init__(f"plugin {plugin_id}: {message}")
        self.plugin_id = plugin_id
        self.code = code
        self.message = message


def _hook_failure(plugin_id: str, code: str, exc: Exception) -> ToolOutput:
    return ToolOutput.failure(
        ToolFailure(
            failure_class=FailureClass.INTERNAL,
            code=code,
            message=f"plugin {plugin_id}: {type(exc).__name__}: {exc}",
            source=FailureSource.PLUGIN,
        )
    )


class TurnRunner:
    """Runs one turn to its ``Done``; see the module docs."""

    def __init__(
        self,
        *,
        machine: TurnMachine,
        session_id: str,
        turn_id: str,
        turn_index: int,
        controller: EffectController,
        provider: Provider,
        registry: ToolRegistry,
        cancel: CancelToken | None = None,
        sink: ActivitySink | None = None,
        tracer: Tracer | None = None,
        plugins: PluginHost | None = None,
        queue: TurnClaims | None = None,
        spawn: Callable[[str, str, str, SessionRelation], Awaitable[Any]] | None = None,
        frames: frozenset[str] = frozenset(),
        state: Mapping[str, bytes] | None = None,
        state_changes: StateWrites | None = None,
    ) -> None:
        self.machine = machine
        self.session_id = session_id
        self.turn_id = turn_id
        self.turn_index = turn_index
        self.controller = controller
        self.provider = provider
        self.registry = registry
        self.cancel = cancel or CancelToken()
        self.plugins = plugins if plugins is not None and not plugins.empty else None
        parts = self.plugins.parts if self.plugins is not None else None
        self.projector: Projector = (
            parts.projector[1] if parts and parts.projector else default_projection
        )
        self._pending_injections: list[InjectedMessage] = []
        self._queue = queue
        self._spawn = spawn
        self._frames = frames
        self.state_base: Mapping[str, bytes] = state if state is not None else {}
        """The session state as committed before this turn."""
        self.state_changes: StateWrites = dict(state_changes or {})
        """State the turn has changed so far (hooks, then each finished batch of tool calls)."""
        self._state_slots: dict[str, tuple[CallSlots, int]] = {}
        self.activities: list[TurnActivity] = []
        self.tool_calls: list[ToolCallCompleted] = []
        self.direct_usage: dict[tuple[str, str], LlmUsage] = {}
        """Usage of direct completions made during the turn, by (source, model)."""
        self._sink = sink
        self._seq = 0
        self._trace = tracer
        self._streamed: set[int] = set()
        self._llm_effect = 0
        self._partial: tuple[int, list[CompletedToolCall | None]] | None = None
        self._announced: dict[str, ToolCallCompleted] = {}

    # ------------------------------------------------------------ the loop

    async def run(self) -> Done:
        """Drive the machine until it is done; return its ``Done``."""
        m = self.machine
        if self._trace is not None:
            self._trace(TurnStarted(turn_index=self.turn_index, model=m.config.model))
        while True:
            try:
                effect = m.poll()
                if effect is None:
                    raise RuntimeError("the turn machine stopped without finishing")
                kind = type(effect)
                if kind is Emit:
                    await self._on_event(effect.event)  # type: ignore[union-attr]
                elif kind is Progress:
                    continue
                elif kind is LlmCall:
                    await self._llm_call(effect)  # type: ignore[arg-type]
                elif kind is ToolCalls:
                    await self._tool_calls(effect)  # type: ignore[arg-type]
                elif kind is Checkpoint:
                    await self._checkpoint(effect)  # type: ignore[arg-type]
                elif kind is SyncExecutionSurface:
                    await self._sync_surface(effect)  # type: ignore[arg-type]
                elif kind is Done:
                    await self._on_done(effect)  # type: ignore[arg-type]
                    return effect  # type: ignore[return-value]
                else:
                    m.fail(
                        f"the runtime cannot execute {kind.__name__} effects",
                        code="unsupported_effect",
                    )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self.cancel.cancel("cancelled")
                await self._answer_cancelled_calls()
                m.cancel(self.cancel.reason)

    async def _answer_cancelled_calls(self) -> None:
        """Answer every call of an interrupted batch, so no tool call is left unanswered.

        Calls that finished keep their real results; the rest are ``cancelled``.
        """
        outstanding = self.machine.outstanding
        partial = self._partial
        self._partial = None
        if (
            not isinstance(outstanding, ToolCalls)
            or partial is None
            or partial[0] != outstanding.id
        ):
            return
        output = ToolOutput.cancelled("tool call cancelled")
        results = []
        for call, done in zip(outstanding.calls, partial[1], strict=True):
            if done is None:
                done = self._complete(call, output, 0)
                await self._announce(done)
            elif done.state_writes:  # a finished call's state lands with its result
                self.state_changes.update(done.state_writes)
                done = msgspec.structs.replace(done, state_writes={})
            results.append(done)
        try:
            self.machine.respond(ToolResults(id=outstanding.id, results=tuple(results)))
        except ProtocolError:  # pragma: no cover - the batch is known to be outstanding
            return

    # ------------------------------------------------------------ envelopes

    def _scope(self) -> InvocationScope:
        return InvocationScope(
            session_id=self.session_id,
            turn_id=self.turn_id,
            turn_index=self.turn_index,
            iteration=self.machine.iteration,
        )

    def _envelope(
        self, kind: EffectKind, effect_id: str, key: str, command: Any, caused_by: str | None = None
    ) -> EffectEnvelope:
        return EffectEnvelope(
            invocation=RuntimeInvocation(
                scope=self._scope(),
                effect_id=effect_id,
                kind=kind,
                replay_key=key,
                caused_by=caused_by,
            ),
            command=command,
        )

    async def _run(self, envelope: EffectEnvelope) -> EffectOutcome | None:
        """The outcome, or None after failing the turn (inline hosts only)."""
        try:
            outcome = await self.controller.run(envelope, self)
        except PluginAbortError as exc:
            await self._plugin_abort(exc)
            return None
        except EffectHostError as exc:
            if self.controller.tier is DurabilityTier.DURABLE:
                raise
            self._fail_effect(envelope, exc.code, exc.message)
            return None
        except Exception as exc:
            if self.controller.tier is DurabilityTier.DURABLE:
                raise
            self._fail_effect(envelope, "runtime_effect_controller", f"{type(exc).__name__}: {exc}")
            return None
        if not outcome_matches(envelope.invocation.kind, outcome):
            self._fail_effect(
                envelope,
                "runtime_effect_wrong_outcome",
                f"expected a {envelope.invocation.kind.value} outcome, "
                f"got {type(outcome).__name__}",
            )
            return None
        return outcome

    async def _plugin_abort(self, exc: PluginAbortError) -> None:
        aid = self._next_id()
        await self._emit(
            ErrorActivity(
                id=aid,
                correlation_id=aid,
                message=f"plugin {exc.plugin_id}: {exc.message}",
                kind="plugin",
                code=exc.code,
            )
        )
        self.machine.finish(Stopped(reason=StopReason.PLUGIN_ABORT, message=exc.message))

    def _fail_effect(self, envelope: EffectEnvelope, code: str, message: str) -> None:
        if self.controller.tier is DurabilityTier.DURABLE:
            raise EffectHostError(code, message)
        self.machine.fail(
            f"effect {envelope.replay_key} failed: {message}",
            code=code,
            kind="runtime_effect_controller",
        )

    def _respond(self, response: Response) -> None:
        try:
            self.machine.respond(response)
        except ProtocolError as exc:
            if self.controller.tier is DurabilityTier.DURABLE:
                raise
            self.machine.fail(
                f"effect outcome rejected: {exc}",
                code="runtime_effect_wrong_outcome",
                kind="runtime_effect_controller",
            )

    # ------------------------------------------------------------ reply effects

    def _effect_key(self, kind: EffectKind, effect_id: int) -> str:
        return turn_effect_key(
            self.session_id, self.turn_id, self.turn_index, self.machine.iteration, kind, effect_id
        )

    async def _send(
        self, kind: EffectKind, effect_id: int, command: Any, key: str | None = None
    ) -> EffectOutcome | None:
        """Send one of the machine's reply effects; its outcome, or None if the turn failed."""
        key = key or self._effect_key(kind, effect_id)
        return await self._run(self._envelope(kind, str(effect_id), key, command))

    async def _llm_call(self, effect: LlmCall) -> None:
        self._llm_effect = effect.id
        if self.cancel.cancelled:
            self.machine.cancel(self.cancel.reason)
            return
        key = self._effect_key(EffectKind.LLM_CALL, effect.id)
        command = LlmCallCommand(effect_id=effect.id, request=effect.request)
        trace = self._trace
        if trace is not None:
            trace(
                LlmCallStarted(
                    effect_id=effect.id,
                    replay_key=key,
                    model=effect.request.model,
                    message_count=len(effect.request.messages),
                    tool_names=tuple(t.name for t in effect.request.tools),
                )
            )
            started = time.perf_counter()
        outcome = await self._send(EffectKind.LLM_CALL, effect.id, command, key)
        if trace is not None:
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            if isinstance(outcome, LlmCompleted):
                r = outcome.response
                trace(
                    LlmCallCompleted(
                        effect_id=effect.id,
                        duration_ms=elapsed,
                        terminal_reason=r.terminal_reason,
                        usage=r.usage,
                        text_chars=len(r.full_text),
                        tool_calls=sum(isinstance(p, ToolCallOutput) for p in r.parts),
                    )
                )
            elif isinstance(outcome, LlmFailed):
                trace(LlmCallFailed(effect_id=effect.id, duration_ms=elapsed, error=outcome.error))
        if isinstance(outcome, LlmCompleted):
            # Whether the text reached the host is a fact about this process, not
            # about the recorded outcome: a replayed answer was never streamed here.
            streamed_here = effect.id in self._streamed
            if outcome.text_streamed != streamed_here:
                outcome = msgspec.structs.replace(outcome, text_streamed=streamed_here)
        if outcome is not None:
            self._respond(outcome)  # type: ignore[arg-type]

    async def _checkpoint(self, effect: Checkpoint) -> None:
        command = CheckpointCommand(effect_id=effect.id, kind=effect.kind)
        outcome = await self._send(EffectKind.CHECKPOINT, effect.id, command)
        if outcome is not None:
            self._respond(outcome)  # type: ignore[arg-type]
            if self._queue is not None:
                # Queue claims taken for this checkpoint now ride on the turn's
                # commit; ones whose outcome never reached the machine are given
                # back when the turn ends.
                self._queue.confirm()

    async def _sync_surface(self, effect: SyncExecutionSurface) -> None:
        command = SyncSurfaceCommand(effect_id=effect.id, refresh=effect.refresh)
        outcome = await self._send(EffectKind.SYNC_EXECUTION_SURFACE, effect.id, command)
        if outcome is not None:
            self._respond(outcome)  # type: ignore[arg-type]

    async def _tool_calls(self, effect: ToolCalls) -> None:
        calls = effect.calls
        iteration = self.machine.iteration
        for call in calls:
            await self._emit(
                ToolCallStarted(
                    id=self._next_id(),
                    correlation_id=call.call_id,
                    call_id=call.call_id,
                    name=call.tool_name,
                    args=call.args,
                )
            )
        keys = [
            tool_call_key(
                self.session_id, self.turn_id, self.turn_index, iteration, effect.id, c.call_id
            )
            for c in calls
        ]
        prefixes = [f"{effect.id}:{c.call_id}" for c in calls]
        partial: list[CompletedToolCall | None] = [None] * len(calls)
        self._partial = (effect.id, partial)
        slots = CallSlots(self._turn_state, len(calls))
        results = await self._run_calls(
            calls, keys, prefixes, f"effect:{effect.id}", slots, partial, announce=True
        )
        self._partial = None
        if results is not None:
            self.state_changes.update(slots.folded())
            results = tuple(
                msgspec.structs.replace(r, state_writes={}) if r.state_writes else r
                for r in results
            )
            self._respond(ToolResults(id=effect.id, results=results))

    async def _turn_state(self) -> StateWrites:
        return self.state_changes

    async def _run_calls(
        self,
        calls: Sequence[PendingToolCall],
        keys: Sequence[str],
        effect_ids: Sequence[str],
        caused_by: str,
        slots: CallSlots,
        results: list[CompletedToolCall | None] | None = None,
        *,
        announce: bool = False,
    ) -> tuple[CompletedToolCall, ...] | None:
        """Run calls concurrently (serial tools one at a time); None if the turn failed.

        With ``announce``, each call's completion is reported as soon as it finishes.
        """
        if results is None:
            results = [None] * len(calls)

        async def one(i: int) -> None:
            done = None
            try:
                done = await self._run_call(calls[i], keys[i], effect_ids[i], caused_by, (slots, i))
            finally:  # later calls may be waiting to read state after this one
                slots.finish(i, dict(done.state_writes) if done is not None else {})
            results[i] = done
            if announce and done is not None:
                await self._announce(done)

        serial: list[int] = []
        parallel: list[int] = []
        for i, call in enumerate(calls):
            t = self.registry.get(call.tool_name)
            (
                serial
                if t is not None and t.definition.scheduling is Scheduling.SERIAL
                else parallel
            ).append(i)

        async def serial_chain() -> None:
            for i in serial:
                await one(i)

        jobs = [one(i) for i in parallel]
        if serial:
            jobs.append(serial_chain())
        if len(jobs) == 1:
            await jobs[0]
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    for job in jobs:
                        group.create_task(job)
            except BaseExceptionGroup as group_error:
                raise group_error.exceptions[0] from None
        if any(r is None for r in results):
            return None
        return tuple(results)  # type: ignore[arg-type]

    async def _run_call(
        self,
        call: PendingToolCall,
        key: str,
        effect_id: str,
        caused_by: str,
        slot: tuple[CallSlots, int],
    ) -> CompletedToolCall | None:
        failure = prepare_failure(call, self.registry)
        if failure is not None:
            return self._complete(call, failure, 0)
        if call.tool_name == BATCH_TOOL_NAME:
            return await self._run_batch(call, key, effect_id, slot)
        self._state_slots[key] = slot
        t = self.registry.get(call.tool_name)
        policy = t.definition.retry_policy if t is not None else NeverRetry()
        max_attempts = policy.max_attempts
        attempt = 1
        spent_ms = 0  # earlier attempts and the waits between them
        while True:
            command = ToolCallCommand(
                call=call, attempt=attempt, max_attempts=max_attempts, idempotency_key=key
            )
            suffix = "" if attempt == 1 else f":attempt:{attempt}"
            envelope = self._envelope(
                EffectKind.TOOL_CALL,
                effect_id + suffix,
                attempt_key(key, attempt),
                command,
                caused_by,
            )
            outcome = await self._run(envelope)
            if outcome is None:
                return None
            completed: CompletedToolCall = outcome  # type: ignore[assignment]
            if spent_ms:
                completed = msgspec.structs.replace(
                    completed, duration_ms=completed.duration_ms + spent_ms
                )
            failed = completed.output.outcome
            retryable = isinstance(failed, ToolFailure) and failed.is_retryable
            if not retryable:
                return completed
            if attempt >= max_attempts:
                if max_attempts > 1:
                    exhausted = msgspec.structs.replace(
                        failed, retry=RetryExhausted(attempts=attempt)
                    )
                    return msgspec.structs.replace(
                        completed,
                        output=msgspec.structs.replace(completed.output, outcome=exhausted),
                    )
                return completed
            if self.cancel.cancelled:
                return completed
            requested = getattr(failed.retry, "after_ms", None)  # type: ignore[union-attr]
            delay = retry_delay_ms(policy, attempt - 1, requested)
            if delay > 0:
                sleep = self._envelope(
                    EffectKind.SLEEP,
                    f"{effect_id}:{call.tool_name}:attempt:{attempt}:sleep",
                    retry_sleep_key(key, call.tool_name, attempt),
                    SleepCommand(duration_ms=delay),
                    caused_by,
                )
                if await self._run(sleep) is None:
                    return None
            spent_ms = completed.duration_ms + delay
            attempt += 1

    async def _run_batch(
        self, call: PendingToolCall, key: str, effect_id: str, slot: tuple[CallSlots, int]
    ) -> CompletedToolCall | None:
        started = time.monotonic()
        try:
            plan = plan_batch(call.args, call.call_id)
        except BatchArgumentsError as exc:
            failure = ToolFailure.runtime(FailureClass.INVALID_REQUEST, "invalid_batch", str(exc))
            return self._complete(call, ToolOutput.failure(failure), 0)
        entries: list[BatchCall] = list(plan.calls)
        subcalls = [
            PendingToolCall(call_id=e.call_id, tool_name=e.tool, args=e.parameters) for e in entries
        ]
        keys = [batch_entry_key(key, e.index) for e in entries]
        ids = [f"{effect_id}:batch:{e.index:02d}" for e in entries]
        outer, index = slot

        async def seen_by_batch() -> StateWrites:
            return await outer.before(index)

        nested = CallSlots(seen_by_batch, len(subcalls))
        done = await self._run_calls(subcalls, keys, ids, f"tool_call:{call.call_id}", nested)
        if done is None:
            return None
        items = [*plan.answered]
        items.extend(
            batch_item(entry, result.output, result.duration_ms)
            for entry, result in zip(entries, done, strict=True)
        )
        duration = int((time.monotonic() - started) * 1000)
        completed = self._complete(call, batch_output(items), duration)
        return msgspec.structs.replace(completed, state_writes=nested.folded())

    def _complete(
        self, call: PendingToolCall, output: ToolOutput, duration_ms: int
    ) -> CompletedToolCall:
        return CompletedToolCall(
            call_id=call.call_id,
            tool_name=call.tool_name,
            args=call.args,
            output=output,
            model_return=self.projector(output),
            duration_ms=duration_ms,
            replay=call.replay,
        )

    # ------------------------------------------------------------ local execution

    async def execute(self, envelope: EffectEnvelope) -> EffectOutcome:
        """Perform ``envelope`` for real (called by the effect controller)."""
        command = envelope.command
        kind = type(command)
        if kind is LlmCallCommand:
            return await self._execute_llm(command)  # type: ignore[arg-type]
        if kind is ToolCallCommand:
            return await self._execute_tool(command)  # type: ignore[arg-type]
        if kind is CheckpointCommand:
            return await self._execute_checkpoint(command)  # type: ignore[arg-type]
        if kind is SleepCommand:
            await asyncio.sleep(command.duration_ms / 1000)  # type: ignore[union-attr]
            return Slept(duration_ms=command.duration_ms)  # type: ignore[union-attr]
        if kind is SyncSurfaceCommand:
            return SurfaceSynced(id=command.effect_id)  # type: ignore[union-attr]
        if kind is DirectCommand:
            return await self._execute_direct(command)  # type: ignore[arg-type]
        raise EffectHostError("local_executor_mismatch", f"cannot execute {kind.__name__}")

    async def _execute_checkpoint(self, command: CheckpointCommand) -> CheckpointDelivered:
        messages = list(self._pending_injections)
        self._pending_injections.clear()
        if self.plugins is not None and self.plugins.parts.checkpoint_hooks:
            ctx = CheckpointContext(
                session_id=self.session_id,
                turn_id=self.turn_id,
                kind=command.kind.value,
                iteration=self.machine.iteration,
            )
            for pid, hook in self.plugins.parts.checkpoint_hooks:
                try:
                    decided = directives(await hook(ctx))
                except Exception as exc:
                    raise PluginAbortError(
                        pid, "plugin_checkpoint_failed", f"{type(exc).__name__}: {exc}"
                    ) from exc
                for d in decided:
                    if isinstance(d, AbortTurn):
                        raise PluginAbortError(pid, d.code, d.message)
                    if isinstance(d, EnqueueMessages):
                        messages.extend(d.messages)
        # The durable queue last, so a hook that aborts the turn claims nothing.
        transient: list[InjectedMessage] = []
        claim = await self._queue.take() if self._queue is not None else None
        if claim is not None:
            injected = [as_injected(batch) for batch in claim.batches]
            transient.extend(injected)
            aid = self._next_id()
            await self._emit(
                QueuedInputAccepted(
                    id=aid,
                    correlation_id=aid,
                    checkpoint=command.kind.value,
                    input_ids=claim.batch_ids,
                    texts=tuple(m.content for m in injected),
                )
            )
        return CheckpointDelivered(
            id=command.effect_id, messages=tuple(messages), transient_messages=tuple(transient)
        )

    async def _execute_llm(self, command: LlmCallCommand) -> LlmCompleted | LlmFailed:
        streamed = False
        streamed_usage: LlmUsage | None = None
        correlation = self._prose_correlation(command.effect_id)

        async def on_event(event: StreamEvent) -> None:
            nonlocal streamed, streamed_usage
            kind = type(event)
            if kind is TextDeltaEvent:
                streamed = True
                self._streamed.add(command.effect_id)
                await self._prose_delta(command.effect_id, event.text, event.item_id)  # type: ignore[union-attr]
            elif kind is ReasoningDeltaEvent:
                await self._reasoning_delta(command.effect_id, event.text, event.item_id)  # type: ignore[union-attr]
            elif kind is RetryStatusEvent:
                e: RetryStatusEvent = event  # type: ignore[assignment]
                await self._emit(
                    RetryStatus(
                        id=self._next_id(),
                        correlation_id=correlation,
                        wait_seconds=e.wait_seconds,
                        attempt=e.attempt,
                        max_attempts=e.max_attempts,
                        reason=e.reason,
                    )
                )
            elif kind is UsageEvent:
                streamed_usage = event.usage  # type: ignore[union-attr]

        try:
            response = await self.provider.complete(command.request, on_event)
        except ProviderError as exc:
            return LlmFailed(id=command.effect_id, error=exc.error)
        except Exception as exc:  # a provider bug ends the turn as a provider error
            return LlmFailed(
                id=command.effect_id,
                error=LlmCallError(
                    message=f"{type(exc).__name__}: {exc}", code="provider_exception"
                ),
            )
        if streamed_usage is not None and response.usage == LlmUsage():
            response = msgspec.structs.replace(response, usage=streamed_usage)
        if self.plugins is not None:
            for _pid, transform in self.plugins.parts.response_transforms:
                response = transform(response)
        return LlmCompleted(id=command.effect_id, response=response, text_streamed=streamed)

    async def _execute_tool(self, command: ToolCallCommand) -> CompletedToolCall:
        call = command.call
        t = self.registry.get(call.tool_name)
        if t is None:
            failure = ToolFailure.runtime(
                FailureClass.UNAVAILABLE, "tool_unavailable", f"Unknown tool {call.tool_name!r}"
            )
            return self._complete(call, ToolOutput.failure(failure), 0)
        slots, index = self._state_slots.get(command.idempotency_key) or (
            CallSlots(self._turn_state, 1),
            0,
        )
        state = ToolStateView(self.state_base, slots, index)
        ctx = ToolContext(
            session_id=self.session_id,
            turn_id=self.turn_id,
            call_id=call.call_id,
            tool_name=call.tool_name,
            replay_key=command.idempotency_key,
            attempt=command.attempt,
            max_attempts=command.max_attempts,
            cancel=self.cancel,
            completer=self._direct,
            children=self._child if self._spawn is not None else None,
            state=state,
        )
        started = time.monotonic()
        output = await self._run_tool_with_hooks(t, call, ctx)
        control = output.control
        if isinstance(control, SwitchAgentFrame) and control.frame_id not in self._frames:
            known = ", ".join(sorted(self._frames)) or "none"
            output = ToolOutput.failure(
                ToolFailure.runtime(
                    FailureClass.INVALID_REQUEST,
                    "unknown_agent_frame",
                    f"{call.tool_name} asked to switch to agent frame {control.frame_id!r}, "
                    f"which is not defined (defined: {known})",
                )
            )
        completed = self._complete(call, output, int((time.monotonic() - started) * 1000))
        writes = state.writes()
        if writes and not isinstance(output.outcome, ToolFailure):
            completed = msgspec.structs.replace(completed, state_writes=writes)
        return completed

    async def _run_tool_with_hooks(
        self, t: Tool, call: PendingToolCall, ctx: ToolContext
    ) -> ToolOutput:
        if self.plugins is None:
            return await t.run(call.args, ctx)
        parts = self.plugins.parts
        args = call.args
        for pid, hook in parts.before_tool_hooks:
            hook_ctx = ToolHookContext(
                session_id=self.session_id, turn_id=self.turn_id, call=call, state=ctx.state
            )
            try:
                decided = directives(await hook(hook_ctx))
            except Exception as exc:
                return _hook_failure(pid, "before_tool_call_failed", exc)
            for d in decided:
                if isinstance(d, ShortCircuit):
                    return d.output
                if isinstance(d, AbortTurn):
                    failure = ToolFailure(
                        failure_class=FailureClass.PERMISSION_DENIED,
                        code=d.code,
                        message=f"plugin {pid}: {d.message}",
                        source=FailureSource.PLUGIN,
                    )
                    return ToolOutput.failure(failure)
                if isinstance(d, ReplaceToolArgs):
                    replaced = msgspec.structs.replace(call, args=d.args)
                    problem = prepare_failure(replaced, self.registry)
                    if problem is not None:
                        return problem
                    call, args = replaced, d.args
        output = await t.run(args, ctx)
        for pid, hook in parts.after_tool_hooks:
            hook_ctx = ToolHookContext(
                session_id=self.session_id,
                turn_id=self.turn_id,
                call=call,
                output=output,
                state=ctx.state,
            )
            try:
                decided = directives(await hook(hook_ctx))
            except Exception as exc:
                return _hook_failure(pid, "after_tool_call_failed", exc)
            for d in decided:
                if isinstance(d, ShortCircuit):
                    output = d.output
                elif isinstance(d, EnqueueMessages):
                    self._pending_injections.extend(d.messages)
        return output

    def _display(self, text: str) -> str:
        if self.plugins is not None:
            for _pid, transform in self.plugins.parts.stream_transforms:
                text = transform(text)
        return text

    async def _direct(
        self, ctx: ToolContext, request: LlmRequest, usage_source: str, key: str | None
    ) -> LlmResponse:
        """A direct completion from a tool: its own envelope, keyed by the call and request."""
        replay = direct_key(
            self.session_id,
            self.turn_id,
            usage_source,
            request,
            cause=tool_call_cause(self.session_id, ctx.call_id),
            explicit_key=key,
        )
        envelope = self._envelope(
            EffectKind.DIRECT,
            replay.rsplit(":direct:", 1)[1],
            replay,
            DirectCommand(request=request, usage_source=usage_source),
            f"tool_call:{ctx.call_id}",
        )
        outcome = await self.controller.run(envelope, self)
        if isinstance(outcome, LlmFailed):
            raise ProviderError(outcome.error)
        if not isinstance(outcome, DirectCompleted):
            raise EffectHostError(
                "runtime_effect_wrong_outcome",
                f"expected a direct outcome, got {type(outcome).__name__}",
            )
        response: LlmResponse = outcome.response
        model = request.model
        prior = self.direct_usage.get((usage_source, model))
        self.direct_usage[(usage_source, model)] = (
            response.usage if prior is None else prior + response.usage
        )
        return response

    async def _child(self, ctx: ToolContext, text: str, session_id: str | None) -> Any:
        """Run a child session turn for a tool; book its usage as ``child``."""
        assert self._spawn is not None
        child_id = session_id or f"{self.session_id}/{ctx.call_id}"
        if child_id == self.session_id:
            raise ValueError("a child session needs an id other than its parent's")
        relation = SessionRelation(
            kind="child",
            parent_session_id=self.session_id,
            turn_id=self.turn_id,
            call_id=ctx.call_id,
        )
        result = await self._spawn(child_id, f"{self.turn_id}:{ctx.call_id}:child", text, relation)
        model = self.machine.config.model
        for row in getattr(result, "usage_rows", ()):
            source = "child" if row.source == "turn" else f"child:{row.source}"
            key, usage = (source, row.model or model), row.usage
            prior = self.direct_usage.get(key)
            self.direct_usage[key] = usage if prior is None else prior + usage
        aid = self._next_id()
        await self._emit(
            ChildTurnCompleted(
                id=aid,
                correlation_id=ctx.call_id,
                session_id=child_id,
                turn_id=result.turn_id,
                outcome=result.outcome,
                usage=result.usage,
            )
        )
        return result

    async def _execute_direct(self, command: DirectCommand) -> DirectCompleted | LlmFailed:
        try:
            response = await self.provider.complete(command.request, None)
        except ProviderError as exc:
            return LlmFailed(id=0, error=exc.error)
        except Exception as exc:
            error = LlmCallError(message=f"{type(exc).__name__}: {exc}", code="provider_exception")
            return LlmFailed(id=0, error=error)
        return DirectCompleted(response=response)

    # ------------------------------------------------------------ activities

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self.turn_id}:{self._seq}"

    async def _emit(self, activity: TurnActivity) -> None:
        self.activities.append(activity)
        if self._sink is not None:
            await self._sink(activity)

    def _prose_correlation(self, effect_id: int) -> str:
        return f"{self.turn_id}:prose:{effect_id}"

    async def _prose_delta(self, effect_id: int, text: str, item_id: str | None = None) -> None:
        """A piece of model call ``effect_id``'s prose (``item_id``: the provider's grouping)."""
        correlation = item_id or self._prose_correlation(effect_id)
        await self._emit(
            AssistantProseDelta(
                id=self._next_id(), correlation_id=correlation, text=self._display(text)
            )
        )

    async def _reasoning_delta(self, effect_id: int, text: str, item_id: str | None = None) -> None:
        """A piece of model call ``effect_id``'s visible reasoning."""
        correlation = item_id or f"{self._prose_correlation(effect_id)}:reasoning"
        await self._emit(ReasoningDelta(id=self._next_id(), correlation_id=correlation, text=text))

    async def _on_event(self, event: SessionEvent) -> None:
        kind = type(event)
        if kind is TextDelta:
            await self._prose_delta(self._llm_effect, event.content)  # type: ignore[union-attr]
        elif kind is KernelReasoningDelta:
            await self._reasoning_delta(self._llm_effect, event.content)  # type: ignore[union-attr]
        elif kind is LlmRequestStarted:
            aid = self._next_id()
            await self._emit(
                ModelRequestStarted(id=aid, correlation_id=aid, iteration=event.iteration)  # type: ignore[union-attr]
            )
        elif kind is TokenUsageReported:
            e: TokenUsageReported = event  # type: ignore[assignment]
            if e.usage == _NO_USAGE:
                return
            aid = self._next_id()
            await self._emit(
                UsageReported(
                    id=aid,
                    correlation_id=aid,
                    iteration=e.iteration,
                    usage=e.usage,
                    cumulative=e.cumulative,
                )
            )
        elif kind is ToolCallFinished:
            # The activity went out when the call finished; the result lists calls in
            # call order, which is the order the kernel reports them in.
            announced = self._announced.pop(event.call_id, None)  # type: ignore[union-attr]
            if announced is not None:
                self.tool_calls.append(announced)
        elif kind is ErrorReported:
            r: ErrorReported = event  # type: ignore[assignment]
            aid = self._next_id()
            envelope = r.envelope
            await self._emit(
                ErrorActivity(
                    id=aid,
                    correlation_id=aid,
                    message=r.message,
                    kind=envelope.kind if envelope else None,
                    code=envelope.code if envelope else None,
                )
            )

    async def _announce(self, done: CompletedToolCall) -> None:
        """Report one finished tool call (activity, result list, trace)."""
        activity = ToolCallCompleted(
            id=self._next_id(),
            correlation_id=done.call_id,
            call_id=done.call_id,
            name=done.tool_name,
            args=done.args,
            output=done.output,
            duration_ms=done.duration_ms,
        )
        self._announced[done.call_id] = activity
        if self._trace is not None:
            self._trace(
                ToolCallTraced(
                    call_id=done.call_id,
                    name=done.tool_name,
                    status=done.output.status,
                    duration_ms=done.duration_ms,
                )
            )
        await self._emit(activity)

    async def _on_done(self, done: Done) -> None:
        outcome = done.outcome
        if self._trace is not None:
            self._trace(TurnCompleted(outcome=outcome, usage=done.usage))
        if isinstance(outcome, Finished) and isinstance(outcome.result, ToolValueAnswer):
            aid = self._next_id()
            await self._emit(
                ToolValue(
                    id=aid,
                    correlation_id=aid,
                    tool_name=outcome.result.tool_name,
                    value=outcome.result.value,
                )
            )
