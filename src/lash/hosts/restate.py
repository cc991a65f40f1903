"""Durable turns on Restate: each effect is a step in a Restate invocation's journal.

A turn runs inside a Restate handler. ``LashRestateService`` is a virtual object
keyed by session id whose exclusive ``turn`` handler takes
``{"turn_id": "...", "input": "..."}`` (or ``{"text": ...}`` as the input), so a
session runs one turn at a time, and returns a summary of the committed turn::

    from lash import LashCore
    from lash.hosts.restate import LashRestateService, RestateEffectHost

    def build(host: RestateEffectHost) -> LashCore:
        return LashCore(provider=..., model=..., tools=[...],
                        store="sqlite:///./lash-data", effect_host=host)

    service = LashRestateService(build)       # the virtual object "LashSession"
    app = service.app()                       # an ASGI app: serve it with hypercorn

    # then register the endpoint with Restate's admin API and call
    #   POST {ingress}/LashSession/{session_id}/turn  {"turn_id": "t1", "input": "hi"}

``core_factory`` is called once per process, on the first invocation, with the
service's ``RestateEffectHost``; the core it returns must use that host (the
tier check in ``LashCore`` then refuses an inline store or inline attachments).

How effects map onto Restate:

* every reply-producing effect (model call, tool call attempt, checkpoint,
  surface sync, direct completion) is one ``ctx.run`` named
  ``lash:{replay_key}``; the journaled value is a versioned document holding the
  envelope's stable hash and the outcome's canonical JSON. The outcome handed to
  the turn is always the decoded journal value, so a first run and a replay see
  identical outcomes. On replay nothing is executed again; a recorded hash that
  differs from the replayed envelope's is ``restate_effect_hash_mismatch``
  (replaying cannot fix that: see ``TERMINAL_CODES``);
* a sleep is a durable Restate timer (``ctx.sleep``), never a ``run``;
* effects raised *inside* a step (a tool's direct completion or child turn)
  execute inline: the enclosing step's journal entry covers them;
* the final store commit is not a step: a commit that fails makes the handler
  fail, Restate retries the invocation, every effect replays from the journal,
  and the commit is retried with the same turn stamp (idempotent in the store).
  The first step of every turn journals the session head it started from
  (revision, counters, a digest of the history), so a replay rebuilds the
  turn from that state even when its commit already landed: every step then
  replays and the commit returns the stored result instead of writing again.
  A store that moved on in any other way is ``restate_session_moved``.

The handler answers with ``turn_summary(result)``: session and turn ids, ``ok``,
the outcome, the answer text, the store revision, usage and the tool calls'
ids, names and statuses.

Concurrent tool calls are concurrent ``ctx.run`` steps. Restate requires the
journal's commands to be created in the same order on every replay, so one
pump per invocation awaits all pending steps together and hands their results
back in creation order, letting each resumed task create its next step before
the next result is handed out: the order of steps is then a function of the
journal, not of timing. Should a replay still diverge, Restate reports a
journal mismatch (step names carry the replay key), never a wrong outcome.

``RestateEffectHost.bind(ctx)`` is the lower-level piece for hand-written
handlers: ``async with host.bind(ctx): await session.run(..., turn_id=...)``
journals the turn's effects, but replaying a turn whose commit landed also needs
the journaled session head that ``LashRestateService`` keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import restate
from restate import ObjectContext, RunOptions, TerminalError
from restate.serde import BytesSerde
from restate.server_context import ServerDurableFuture

from ..kernel.codec import canonical_hash, decode, decode_document, encode_document, to_builtins
from ..kernel.errors import CodecError
from ..runtime.effects import (
    OUTCOME_TYPES,
    DurabilityTier,
    EffectController,
    EffectEnvelope,
    EffectExecutor,
    EffectHostError,
    EffectOutcome,
    SleepCommand,
    Slept,
    TurnScope,
)

if TYPE_CHECKING:
    from ..core import LashCore, Session, TurnInput, TurnResult
    from ..store.base import StoredSession

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "LashRestateService",
    "RestateEffectHost",
    "TERMINAL_CODES",
    "CoreFactory",
    "RestateHostError",
    "lash_restate_app",
    "head_step_key",
    "restate_effect_name",
    "turn_summary",
]

DEFAULT_SERVICE_NAME = "LashSession"
"""The virtual object's name unless ``LashRestateService(name=...)`` says otherwise."""

_RECORD_KIND = "restate_effect"
_HEAD_KIND = "restate_session_head"

TERMINAL_CODES = frozenset(
    {
        "restate_effect_hash_mismatch",
        "restate_effect_corrupt",
        "restate_effect_failed",
        "restate_effect_scope_mismatch",
        "restate_session_moved",
    }
)
"""Error codes a replay cannot fix: the service fails the invocation terminally when the
error arises at the end of the journal; earlier, it stays a retryable failure carrying the
same message (Restate cannot end an invocation whose journal holds steps not yet replayed)."""

_SETTLE_ROUNDS = 3
"""Consecutive quiet event-loop rounds after which the pump deems the turn settled."""
_SETTLE_MAX = 64


def restate_effect_name(replay_key: str) -> str:
    """The name of the ``ctx.run`` (or timer) journaling the effect with ``replay_key``."""
    return f"lash:{replay_key}"


class RestateHostError(EffectHostError):
    """The Restate effect host could not obtain an outcome; ``replay_key`` names the effect."""

    def __init__(self, code: str, message: str, *, replay_key: str | None = None) -> None:
        where = f"[{replay_key}] " if replay_key else ""
        super().__init__(code, f"{where}{message}")
        self.replay_key = replay_key


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """What one journaled step holds: the envelope hash and the outcome's canonical JSON."""

    envelope_hash: str
    kind: str
    outcome: msgspec.Raw


# ---------------------------------------------------------------- the pump


class _Pump:
    """The only code that awaits Restate futures within one invocation.

    Steps are queued in creation order. The pump awaits every unfinished step at
    once (so their closures run concurrently) and releases results strictly in
    creation order, one at a time, yielding to the event loop after each so the
    resumed task can create its next step before anything else is released.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[ServerDurableFuture[Any], asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    def submit(self, future: restate.RestateDurableFuture[Any]) -> asyncio.Future[Any]:
        """Queue ``future``; the returned asyncio future resolves when the pump releases it."""
        if self._failure is not None:
            raise self._failure
        if not isinstance(future, ServerDurableFuture):
            raise TypeError(f"expected a Restate SDK future, got {type(future).__name__}")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._queue.append((future, waiter))
        self._wake.set()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="lash-restate-pump")
        return waiter

    async def _settle(self) -> None:
        quiet = 0
        size = len(self._queue)
        for _ in range(_SETTLE_MAX):
            await asyncio.sleep(0)
            if len(self._queue) == size:
                quiet += 1
                if quiet >= _SETTLE_ROUNDS:
                    return
            else:
                size = len(self._queue)
                quiet = 0

    async def _run(self) -> None:
        try:
            while True:
                await self._settle()
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                head, waiter = self._queue[0]
                if not _completed(head):
                    unfinished = [f for f, _ in self._queue if not _completed(f)]
                    await restate.wait_completed(*unfinished)
                    continue
                self._queue.popleft()
                try:
                    value = await head
                except Exception as exc:  # a step that failed terminally
                    if not waiter.done():
                        waiter.set_exception(exc)
                else:
                    if not waiter.done():
                        waiter.set_result(value)
        except asyncio.CancelledError:
            self._fail(asyncio.CancelledError())
            raise
        except BaseException as exc:  # suspension, disconnect, protocol errors: the SDK's business
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        while self._queue:
            _, waiter = self._queue.popleft()
            if not waiter.done():
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()
                else:
                    waiter.set_exception(exc)

    async def aclose(self) -> None:
        """Stop the pump (the invocation attempt is over)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _completed(future: ServerDurableFuture[Any]) -> bool:
    """Whether the SDK already holds ``future``'s result (awaiting it will not block)."""
    return bool(future.is_completed())  # type: ignore[no-untyped-call]


class _Invocation:
    """One handler attempt: the Restate context, its session and its pump."""

    __slots__ = ("ctx", "pump", "session_id")

    def __init__(self, ctx: ObjectContext, session_id: str) -> None:
        self.ctx = ctx
        self.session_id = session_id
        self.pump = _Pump()


_CURRENT: contextvars.ContextVar[_Invocation | None] = contextvars.ContextVar(
    "lash_restate_invocation", default=None
)
_IN_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lash_restate_in_step", default=False
)


# ---------------------------------------------------------------- host and controllers


class RestateEffectHost:
    """A durable effect host whose journal is the current Restate invocation's.

    Controllers exist only while a handler has bound its context with
    ``bind(ctx)`` (``LashRestateService`` does this for you); a turn run outside
    one fails with ``restate_effect_host_requires_handler``. ``max_attempts``
    bounds how often Restate retries a step whose executor raised (None: the
    invocation's retry policy decides); tool failures and provider errors are
    outcomes, journaled like any other, never retried as crashes.
    """

    __slots__ = ("max_attempts",)

    def __init__(self, *, max_attempts: int | None = None) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts!r}")
        self.max_attempts = max_attempts

    @property
    def tier(self) -> DurabilityTier:
        """Always durable."""
        return DurabilityTier.DURABLE

    @contextlib.asynccontextmanager
    async def bind(self, ctx: ObjectContext) -> AsyncIterator[None]:
        """Make ``ctx`` (a virtual object keyed by session id) the journal for turns run inside."""
        invocation = _Invocation(ctx, ctx.key())
        token = _CURRENT.set(invocation)
        try:
            yield
        finally:
            _CURRENT.reset(token)
            await invocation.pump.aclose()

    def scoped(self, scope: TurnScope) -> EffectController:
        """A controller journaling ``scope``'s effects in the bound invocation."""
        if _IN_STEP.get():
            return _NESTED
        invocation = _CURRENT.get()
        if invocation is None:
            raise RestateHostError(
                "restate_effect_host_requires_handler",
                f"session {scope.session_id!r} turn {scope.turn_id!r}: a RestateEffectHost "
                "journals effects only inside a Restate handler that bound its context "
                "(LashRestateService, or `async with host.bind(ctx)`)",
            )
        if scope.session_id != invocation.session_id:
            raise RestateHostError(
                "restate_effect_scope_mismatch",
                f"turn {scope.turn_id!r} belongs to session {scope.session_id!r}, but the "
                f"Restate invocation is keyed by session {invocation.session_id!r}",
            )
        return _RestateController(self, invocation)

    def __repr__(self) -> str:
        return f"RestateEffectHost(max_attempts={self.max_attempts!r})"


class _NestedController:
    """Effects raised inside a step run inline; the enclosing step journals their result."""

    __slots__ = ()

    @property
    def tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        return await executor.execute(envelope)


_NESTED = _NestedController()


class _RestateController:
    """Maps one turn's effects onto named ``ctx.run`` steps and durable timers."""

    __slots__ = ("_host", "_invocation")

    def __init__(self, host: RestateEffectHost, invocation: _Invocation) -> None:
        self._host = host
        self._invocation = invocation

    @property
    def tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        if _IN_STEP.get():
            return await executor.execute(envelope)
        key = envelope.replay_key
        name = restate_effect_name(key)
        ctx = self._invocation.ctx
        command = envelope.command
        if isinstance(command, SleepCommand):
            timer = ctx.sleep(timedelta(milliseconds=command.duration_ms), name=name)
            await self._await(timer, key)
            return Slept(duration_ms=command.duration_ms)
        kind = envelope.invocation.kind
        digest = envelope.stable_hash()

        async def step() -> bytes:
            _IN_STEP.set(True)  # this task only: effects raised by the executor run inline
            outcome = await executor.execute(envelope)
            try:
                return encode_document(
                    _RECORD_KIND, {"envelope_hash": digest, "kind": kind.value, "outcome": outcome}
                )
            except CodecError as exc:
                raise TerminalError(
                    f"restate_effect_unencodable: [{key}] the outcome cannot be journaled: {exc}"
                ) from exc

        options: RunOptions[bytes] = RunOptions(
            serde=BytesSerde(), max_attempts=self._host.max_attempts
        )
        data = await self._await(ctx.run_typed(name, step, options), key)
        return self._replayed(envelope, digest, data)

    async def _await(self, future: restate.RestateDurableFuture[Any], key: str) -> Any:
        try:
            return await self._invocation.pump.submit(future)
        except TerminalError as exc:
            raise RestateHostError(
                "restate_effect_failed", f"the step failed for good: {exc.message}", replay_key=key
            ) from exc

    def _replayed(self, envelope: EffectEnvelope, digest: str, data: object) -> EffectOutcome:
        key = envelope.replay_key
        kind = envelope.invocation.kind
        if not isinstance(data, bytes | bytearray):
            raise RestateHostError(
                "restate_effect_corrupt",
                f"the journaled value is {type(data).__name__}, not bytes",
                replay_key=key,
            )
        try:
            record = decode_document(bytes(data), _RECORD_KIND, _Record)
        except CodecError as exc:
            raise RestateHostError(
                "restate_effect_corrupt",
                f"the journaled value does not decode: {exc}",
                replay_key=key,
            ) from exc
        if record.envelope_hash != digest:
            raise RestateHostError(
                "restate_effect_hash_mismatch",
                f"the journal recorded envelope hash {record.envelope_hash[:12]}... for this "
                f"step, but the replayed envelope hashes to {digest[:12]}...; the turn is not "
                "replaying the same effects (did the code, tools or configuration change?)",
                replay_key=key,
            )
        if record.kind != kind.value:
            raise RestateHostError(
                "restate_effect_corrupt",
                f"the journal recorded a {record.kind} outcome for a {kind.value} effect",
                replay_key=key,
            )
        try:
            outcome: EffectOutcome = decode(bytes(record.outcome), OUTCOME_TYPES[kind])
        except CodecError as exc:
            raise RestateHostError(
                "restate_effect_corrupt",
                f"the recorded {kind.value} outcome does not decode: {exc}",
                replay_key=key,
            ) from exc
        return outcome


# ---------------------------------------------------------------- the service


CoreFactory = Callable[[RestateEffectHost], "LashCore | Awaitable[LashCore]"]
"""Builds the service's core from its effect host (plain or async)."""


class LashRestateService:
    """A Restate virtual object running lash turns, one session per key.

    ``core_factory(host)`` builds the ``LashCore`` (provider, tools, durable
    store) on the first invocation in each process; ``host`` defaults to a fresh
    ``RestateEffectHost``. ``name`` is the virtual object's name;
    ``retry_policy`` (a ``restate.InvocationRetryPolicy``) overrides the
    server's retry policy for the ``turn`` handler. ``app()`` returns the ASGI
    application to serve (bind it to loopback unless a proxy guards it).
    """

    def __init__(
        self,
        core_factory: CoreFactory,
        *,
        name: str = DEFAULT_SERVICE_NAME,
        host: RestateEffectHost | None = None,
        retry_policy: restate.InvocationRetryPolicy | None = None,
        inactivity_timeout: timedelta | None = None,
    ) -> None:
        if not callable(core_factory):
            raise TypeError(f"core_factory must be callable, got {type(core_factory).__name__}")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"the service name must be a non-blank string, got {name!r}")
        self.host = host if host is not None else RestateEffectHost()
        if not isinstance(self.host, RestateEffectHost):
            raise TypeError(f"host must be a RestateEffectHost, got {type(self.host).__name__}")
        self.name = name
        self._factory = core_factory
        self._core: LashCore | None = None
        self._lock: asyncio.Lock | None = None
        self.object = restate.VirtualObject(
            name,
            description="lash sessions: one durable agent turn at a time per session key",
            invocation_retry_policy=retry_policy,
            inactivity_timeout=inactivity_timeout,
        )

        async def turn(ctx: ObjectContext, request: dict[str, Any]) -> dict[str, Any]:
            """Run one turn of the session named by the key: {"turn_id": ..., "input": ...}."""
            return await self._turn(ctx, request)

        self.object.handler("turn", kind="exclusive")(turn)

    def app(self) -> Any:
        """The ASGI application serving this virtual object (Restate's HTTP/2 protocol)."""
        return restate.app(services=[self.object])

    async def core(self) -> LashCore:
        """The core, built by the factory on first use and checked to use this host."""
        if self._core is not None:
            return self._core
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._core is None:
                built = self._factory(self.host)
                if inspect.isawaitable(built):
                    built = await built
                from ..core import ConfigError, LashCore

                if not isinstance(built, LashCore):
                    raise ConfigError(
                        f"the core factory returned {type(built).__name__}, not a LashCore"
                    )
                if built.effect_host is not self.host:
                    await built.aclose()
                    raise ConfigError(
                        "the core factory must build its LashCore with "
                        "effect_host=<the host it was given>, got "
                        f"{type(built.effect_host).__name__}"
                    )
                self._core = built
        return self._core

    async def aclose(self) -> None:
        """Close the core (and the stores it opened)."""
        core, self._core = self._core, None
        if core is not None:
            await core.aclose()

    async def _turn(self, ctx: ObjectContext, request: object) -> dict[str, Any]:
        turn_id, turn_input = _parse_request(ctx.key(), request)
        core = await self.core()
        session_id = ctx.key()
        try:
            async with self.host.bind(ctx):
                invocation = _CURRENT.get()
                assert invocation is not None
                stored = await core.store.load(session_id)
                head = await _journal_head(invocation, turn_id, stored)
                session, landed = await _session_at(core, session_id, turn_id, stored, head)
                try:
                    turn = session.turn(
                        turn_input, turn_id=turn_id, if_committed="replay" if landed else "return"
                    )
                    result = await turn.run()
                finally:
                    session.close()
        except RestateHostError as exc:
            # Ending the invocation is only possible at the journal's end; mid-journal the
            # error stays retryable so Restate records it as the last failure (and pauses).
            if exc.code in TERMINAL_CODES and not _still_replaying(ctx):
                raise TerminalError(str(exc), status_code=500) from exc
            raise
        return turn_summary(result)


def _still_replaying(ctx: ObjectContext) -> bool:
    """Whether journaled commands lie ahead (then a handler return would not match them)."""
    vm = getattr(ctx, "vm", None)
    return bool(vm.is_replaying()) if vm is not None else False


class _Head(msgspec.Struct, frozen=True, kw_only=True):
    """The session as the turn first found it: counters, its state and a digest of its history.

    The state is kept whole (it is small, and once the commit lands the store
    holds the turn's result, not what the turn started from).
    """

    revision: int | None
    turn_index: int
    iteration: int
    frame_id: str | None
    message_count: int
    history_hash: str
    state: dict[str, bytes] = msgspec.field(default_factory=dict)


def _head_of(stored: StoredSession | None) -> _Head:
    """The head of ``stored`` (an empty session's when None)."""
    if stored is None:
        return _Head(
            revision=None,
            turn_index=0,
            iteration=0,
            frame_id=None,
            message_count=0,
            history_hash=canonical_hash([]),
        )
    return _Head(
        revision=stored.revision,
        turn_index=stored.turn_index,
        iteration=stored.iteration,
        frame_id=stored.frame_id,
        message_count=len(stored.messages),
        history_hash=canonical_hash(list(stored.messages)),
        state=dict(stored.state),
    )


def head_step_key(session_id: str, turn_id: str) -> str:
    """The replay key of the step journaling the session head a turn started from."""
    return f"{session_id}:{turn_id}:session_head"


async def _journal_head(
    invocation: _Invocation, turn_id: str, stored: StoredSession | None
) -> _Head:
    """Journal (first attempt) or read back (replays) the head the turn started from.

    A replay must rebuild the turn from the state it first saw: once its commit
    has landed, the store is ahead of that state. The head (a hash of the whole
    history) is built inside the step, so only the attempt that journals it pays.
    """
    key = head_step_key(invocation.session_id, turn_id)

    async def step() -> bytes:
        return encode_document(_HEAD_KIND, _head_of(stored))

    options: RunOptions[bytes] = RunOptions(serde=BytesSerde())
    future = invocation.ctx.run_typed(restate_effect_name(key), step, options)
    data = await invocation.pump.submit(future)
    try:
        return decode_document(bytes(data), _HEAD_KIND, _Head)
    except (CodecError, TypeError) as exc:
        raise RestateHostError(
            "restate_effect_corrupt",
            f"the journaled session head does not decode: {exc}",
            replay_key=key,
        ) from exc


async def _session_at(
    core: LashCore, session_id: str, turn_id: str, stored: StoredSession | None, head: _Head
) -> tuple[Session, bool]:
    """The session as of ``head``; True when the store has moved past it (the commit landed)."""
    from ..core import Session

    current = None if stored is None else stored.revision
    usage = stored.usage if stored is not None else ()
    if current == head.revision:
        messages = stored.messages if stored is not None else ()
        landed = False
    else:
        messages = stored.messages[: head.message_count] if stored is not None else ()
        ours = await core.store.load_turn(session_id, turn_id)
        if (
            stored is None
            or ours is None
            or (head.revision is not None and stored.revision < head.revision)
            or len(messages) != head.message_count
            or canonical_hash(list(messages)) != head.history_hash
        ):
            raise RestateHostError(
                "restate_session_moved",
                f"session {session_id!r} turn {turn_id!r}: the turn started at revision "
                f"{head.revision}, but the store now holds revision {current} and not as "
                "this turn's own commit on the history it saw; it cannot be replayed",
            )
        landed = True
    session = Session(
        core,
        session_id,
        history=messages,
        revision=head.revision,
        turn_index=head.turn_index,
        iteration=head.iteration,
        usage=usage,
        frame_id=head.frame_id,
        state=head.state,
    )
    return session, landed


def _parse_request(session_id: str, request: object) -> tuple[str, str | TurnInput]:
    where = f"session {session_id!r}"
    if not isinstance(request, dict):
        raise TerminalError(
            f"{where}: the turn request must be a JSON object with turn_id and input, "
            f"got {type(request).__name__}",
            status_code=400,
        )
    unknown = sorted(set(request) - {"turn_id", "input"})
    if unknown:
        raise TerminalError(f"{where}: unknown request fields {unknown}", status_code=400)
    turn_id = request.get("turn_id")
    if not isinstance(turn_id, str) or not turn_id.strip():
        raise TerminalError(
            f"{where}: turn_id must be a non-blank string (it makes the turn replayable), "
            f"got {turn_id!r}",
            status_code=400,
        )
    raw = request.get("input")
    if isinstance(raw, str):
        return turn_id, raw
    if isinstance(raw, dict) and set(raw) <= {"text"} and isinstance(raw.get("text"), str):
        from ..core import TurnInput

        return turn_id, TurnInput(text=raw["text"])
    raise TerminalError(
        f"{where} turn {turn_id!r}: input must be a string or {{'text': str}}, got {raw!r}",
        status_code=400,
    )


def turn_summary(result: TurnResult) -> dict[str, Any]:
    """The JSON the ``turn`` handler returns for a committed turn."""
    return {
        "session_id": result.session_id,
        "turn_id": result.turn_id,
        "ok": result.ok,
        "outcome": to_builtins(result.outcome),
        "text": result.text,
        "revision": result.revision,
        "usage": to_builtins(result.usage),
        "tool_calls": [
            {"call_id": c.call_id, "name": c.name, "status": str(c.output.status)}
            for c in result.tool_calls
        ],
    }


def lash_restate_app(core_factory: CoreFactory, **options: Any) -> Any:
    """Shorthand: ``LashRestateService(core_factory, **options).app()``."""
    return LashRestateService(core_factory, **options).app()
