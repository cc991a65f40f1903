"""Durable turns on DBOS: a turn is a workflow, each effect a step named by its replay key.

`DBOS <https://docs.dbos.dev>`_ checkpoints a workflow's steps in a system
database (SQLite or PostgreSQL) and, after a crash, re-runs the workflow with
every completed step answered from its checkpoint. Here a lash turn is one DBOS
workflow and every effect the turn loop hands to the controller is one step::

    from dbos import DBOS
    from lash import LashCore
    from lash.hosts.dbos import DbosEffectHost, DbosTurnRunner, dbos_sqlite_config

    def build_core() -> LashCore:
        return LashCore(provider=..., model=..., tools=[...],
                        store="sqlite:///./lash-data", effect_host=DbosEffectHost())

    async def main() -> None:
        runner = DbosTurnRunner(build_core, name="chat")    # before DBOS.launch()
        DBOS(config=dbos_sqlite_config("./lash-data/dbos.sqlite3", name="chat-app"))
        DBOS.launch()       # inside the event loop: recovered turns resume on it
        result = await runner.run("chat-1", "What is 1 + 2?", turn_id="t-1")
        await runner.aclose()
        DBOS.destroy()

The pieces:

* ``DbosTurnRunner(core_or_factory, name=...)`` registers itself under ``name``
  and runs ``run(session_id, input, turn_id=...)`` as the workflow
  ``lash.turn`` whose id is ``runner.workflow_id(session_id, turn_id)``. Running
  the same turn again returns the recorded result; a turn id that already ran
  with other input is ``dbos_turn_conflict``. ``start(...)`` returns a handle
  instead of waiting; ``result(workflow_id)`` waits for any turn workflow (a
  recovered or forked one, say).
* **Recovery.** ``DBOS.launch()`` resumes every turn workflow a crash left
  pending by calling the workflow again with its recorded arguments, the
  runner's *name* among them. The workflow looks the runner up by that name,
  so create every runner before ``DBOS.launch()``; a factory is called once,
  on first use, to build the core (in whichever process recovers the turn).
  Launch DBOS from inside the running event loop so recovered turns run on it.
* ``DbosEffectHost`` is the effect host the core must use (it reports the
  Durable tier, so ``LashCore`` refuses an inline store or inline attachments).
  Its controller journals into the DBOS workflow it runs in.
* ``turn_journal()`` is what the runner's workflow wraps around the turn; use it
  in a workflow of your own to run lash turns there (``async with
  turn_journal(): await session.run(..., turn_id=...)``). Start no DBOS
  operations of your own concurrently with the turns inside it, and let the
  workflow fail when a turn inside it raises.

How effects map onto DBOS:

* a reply-producing effect (model call, tool-call attempt, checkpoint, surface
  sync, direct completion) is one step named ``lash:{replay_key}``. Its
  checkpointed output is a versioned document holding the envelope's stable
  hash and the outcome's canonical JSON. On replay the recorded outcome is
  returned and nothing executes; a recorded hash that differs from the replayed
  envelope's is ``dbos_effect_hash_mismatch``;
* a sleep is a durable timer: its step records the wake-up time, and a replay
  only waits for what is left of it (the mechanism of ``DBOS.sleep``, addressed
  by replay key);
* effects raised *inside* a step (a tool's direct completion or child turn)
  execute inline: the enclosing step's checkpoint covers them;
* an executor exception is a crash, not an outcome: the step records a crash
  marker and the exception propagates, so the workflow fails. A fork of the
  workflow (``DBOS.fork_workflow``) replays every completed effect and runs the
  crashed one again;
* the final store commit is not a step: it is idempotent by its turn stamp, so
  a recovered workflow may simply commit again.

**Replay is by replay key, not by position.** DBOS finds a step's checkpoint by
its ordinal in the workflow, while a turn runs tool calls concurrently, so the
order in which steps start (retries, serial tools, helper calls) can differ
between a run and its replay. ``turn_journal()`` therefore reads the
workflow's checkpoints when it opens, serves recorded effects by key, and
reserves (``DBOS.reserve_step``) every ordinal the earlier run used, so new
steps never land on a recorded one. When the journal closes normally it records
an end marker, so a replay of a finished journal knows where it ended, and a
replay that asks for an effect the finished run never had is
``dbos_replay_diverged``.

Needs the ``dbos`` package (3.4 or later: async steps, ``reserve_step``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import pickle
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import quote

import msgspec
from dbos import DBOS, DBOSConfig, SetWorkflowID, WorkflowHandleAsync

from .._closing import AsyncClosing
from ..core import ConfigError, LashCore, TurnInput, TurnResult, new_turn_id
from ..kernel.codec import decode, decode_document, encode, encode_document
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
from ..store.base import check_session_id, check_turn_id

TURN_WORKFLOW_NAME = "lash.turn"
"""The DBOS workflow every ``DbosTurnRunner`` runs turns as."""

EFFECT_STEP_PREFIX = "lash:"
"""Effect steps are named ``lash:{replay_key}``."""

_END_STEP = "lash.journal-end"
_EFFECT_DOC = "dbos_effect"
_RUNNER_WAIT_S = 10.0

CoreFactory: TypeAlias = Callable[[], "LashCore | Awaitable[LashCore]"]
"""Builds the core a runner's turns run on (called once, on first use)."""


def effect_step_name(replay_key: str) -> str:
    """The DBOS step name of the effect with ``replay_key``."""
    return EFFECT_STEP_PREFIX + replay_key


def dbos_sqlite_config(
    path: str | Path, *, name: str = "lash", log_level: str = "WARNING"
) -> DBOSConfig:
    """A ``DBOSConfig`` whose system database is the SQLite file ``path`` (nothing to start)."""
    file = Path(path).absolute()
    if file.is_dir():
        raise ValueError(f"DBOS system database path {file} is a directory; name a file")
    file.parent.mkdir(parents=True, exist_ok=True)
    return {"name": name, "system_database_url": f"sqlite:///{file}", "log_level": log_level}


class DbosHostError(EffectHostError):
    """The DBOS host could not obtain an outcome or run a turn; ``code`` says why.

    ``replay_key`` names the effect and ``workflow_id`` the workflow, when known.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        replay_key: str | None = None,
        workflow_id: str | None = None,
    ) -> None:
        where = "".join(f"[{part}] " for part in (workflow_id, replay_key) if part is not None)
        super().__init__(code, f"{where}{message}")
        self.detail = message
        self.replay_key = replay_key
        self.workflow_id = workflow_id


class _Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one effect step checkpoints."""

    replay_key: str
    envelope_hash: str
    kind: str
    outcome: msgspec.Raw = msgspec.Raw(b"null")
    """The outcome's canonical JSON (``null`` for a crash)."""
    due_at_ms: int | None = None
    """A sleep's wake-up time (Unix ms)."""
    crash: str | None = None
    """An executor exception (type and message): the effect has no outcome."""


# ---------------------------------------------------------------- the journal


_JOURNAL: contextvars.ContextVar[TurnJournal | None] = contextvars.ContextVar(
    "lash_dbos_journal", default=None
)


async def _recorded_steps(workflow_id: str) -> list[Any]:
    """The workflow's checkpointed steps, read outside the workflow's own context.

    Read inside the workflow, DBOS would checkpoint the listing itself and a
    replay would see the first run's (empty) answer; an empty context makes it
    a plain read of what is recorded now.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(
        DBOS.list_workflow_steps_async(workflow_id), context=contextvars.Context()
    )
    return await task


class TurnJournal:
    """The effects of one DBOS workflow, as ``turn_journal()`` opened them.

    ``complete`` says whether an earlier run of the workflow closed this journal
    (then every effect must replay). ``replayed`` and ``executed`` count the
    effects answered from checkpoints and run for real in this run.
    """

    __slots__ = ("_records", "complete", "executed", "replayed", "workflow_id")

    def __init__(
        self, workflow_id: str, records: dict[str, deque[_Record]], *, complete: bool
    ) -> None:
        self.workflow_id = workflow_id
        self._records = records
        self.complete = complete
        self.replayed = 0
        self.executed = 0

    def _take(self, key: str) -> _Record | None:
        queue = self._records.get(key)
        if not queue:
            return None
        record = queue.popleft()
        if not queue:
            del self._records[key]
        return record

    def __repr__(self) -> str:
        return (
            f"TurnJournal({self.workflow_id!r}, complete={self.complete}, "
            f"replayed={self.replayed}, executed={self.executed})"
        )

    @classmethod
    async def _open(cls, workflow_id: str) -> TurnJournal:
        # A reservation that never runs: it tells where this journal starts.
        start = DBOS.reserve_step().step_id
        steps = await _recorded_steps(workflow_id)
        later = sorted(
            (s for s in steps if s["function_id"] > start), key=lambda s: s["function_id"]
        )
        end = next((s["function_id"] for s in later if s["function_name"] == _END_STEP), None)
        records: dict[str, deque[_Record]] = {}
        top = start
        for step in later:
            fid = step["function_id"]
            if end is not None and fid >= end:
                break
            top = fid
            name = step["function_name"]
            if not name.startswith(EFFECT_STEP_PREFIX):
                continue  # not ours; its ordinal is reserved all the same
            key = name[len(EFFECT_STEP_PREFIX) :]
            records.setdefault(key, deque()).append(_parse_step(workflow_id, key, step))
        # Draw every ordinal the earlier run used, so new steps land after them
        # (and a finished journal's end marker lands on its recorded ordinal).
        last = end - 1 if end is not None else top
        for _ in range(last - start):
            DBOS.reserve_step()
        return cls(workflow_id, records, complete=end is not None)


def _parse_step(workflow_id: str, key: str, step: Any) -> _Record:
    error = step["error"]
    if error is not None:  # not written by this module (ours never raise); treat it as a crash
        return _Record(
            replay_key=key, envelope_hash="", kind="", crash=f"{type(error).__name__}: {error}"
        )
    return _parse_output(workflow_id, key, f"step {step['function_id']}", step["output"])


def _parse_output(workflow_id: str, key: str, where: str, output: object) -> _Record:
    if not isinstance(output, str):
        raise DbosHostError(
            "dbos_journal_corrupt",
            f"{where} holds {type(output).__name__}, not a lash effect record",
            replay_key=key,
            workflow_id=workflow_id,
        )
    try:
        record = decode_document(output, _EFFECT_DOC, _Record)
    except CodecError as exc:
        raise DbosHostError(
            "dbos_journal_corrupt",
            f"{where} is not a readable lash effect record: {exc}",
            replay_key=key,
            workflow_id=workflow_id,
        ) from exc
    if record.replay_key != key:
        raise DbosHostError(
            "dbos_journal_corrupt",
            f"{where} records replay key {record.replay_key!r}",
            replay_key=key,
            workflow_id=workflow_id,
        )
    return record


async def _end_marker(replayed: int, executed: int) -> str:
    return f"replayed={replayed} executed={executed}"


@contextlib.asynccontextmanager
async def turn_journal() -> AsyncIterator[TurnJournal]:
    """Journal the lash effects run inside this block in the current DBOS workflow.

    Enter it in workflow code (not in a step). ``DbosTurnRunner`` wraps every
    turn in it; in a workflow of your own, run turns inside it and start no
    DBOS operations of your own concurrently with them.
    """
    workflow_id = DBOS.workflow_id
    if workflow_id is None or DBOS.step_id is not None:
        raise DbosHostError(
            "dbos_outside_workflow",
            "turn_journal() must be entered in DBOS workflow code, not outside a "
            "workflow or inside a step",
        )
    if _JOURNAL.get() is not None:
        raise DbosHostError(
            "dbos_journal_nested", "a turn journal is already open", workflow_id=workflow_id
        )
    journal = await TurnJournal._open(workflow_id)
    token = _JOURNAL.set(journal)
    try:
        yield journal
    finally:
        _JOURNAL.reset(token)
    await DBOS.run_step_async({"name": _END_STEP}, _end_marker, journal.replayed, journal.executed)


# ---------------------------------------------------------------- the host


class DbosEffectHost:
    """A durable effect host whose controllers journal into the running DBOS workflow.

    ``clock`` (wall-clock seconds) and ``sleep`` drive durable timers; tests
    inject them.
    """

    __slots__ = ("_clock", "_sleep")

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep

    @property
    def tier(self) -> DurabilityTier:
        """Always durable."""
        return DurabilityTier.DURABLE

    def scoped(self, scope: TurnScope) -> EffectController:
        """A controller for ``scope``'s effects (run inside ``turn_journal()``)."""
        return _DbosController(self, scope)

    def __repr__(self) -> str:
        return "DbosEffectHost()"


class _DbosController:
    __slots__ = ("_host", "_scope")

    def __init__(self, host: DbosEffectHost, scope: TurnScope) -> None:
        self._host = host
        self._scope = scope

    @property
    def tier(self) -> DurabilityTier:
        """Always durable."""
        return DurabilityTier.DURABLE

    async def run(self, envelope: EffectEnvelope, executor: EffectExecutor) -> EffectOutcome:
        """The recorded outcome of ``envelope``, executing it in a new step if none is recorded."""
        key = envelope.replay_key
        if DBOS.step_id is not None:
            # Raised inside another effect's step: that step's checkpoint covers it.
            return await executor.execute(envelope)
        journal = _JOURNAL.get()
        workflow_id = DBOS.workflow_id
        if journal is None or workflow_id is None or journal.workflow_id != workflow_id:
            raise DbosHostError(
                "dbos_outside_workflow",
                "DbosEffectHost journals into a DBOS workflow: run the turn with "
                "DbosTurnRunner, or inside turn_journal() in your own workflow",
                replay_key=key,
                workflow_id=workflow_id,
            )
        digest = envelope.stable_hash()
        record = journal._take(key)
        if record is not None:
            if record.envelope_hash and record.envelope_hash != digest:
                raise DbosHostError(
                    "dbos_effect_hash_mismatch",
                    f"the workflow recorded envelope hash {record.envelope_hash[:12]}... for "
                    f"this key, but the replayed envelope hashes to {digest[:12]}...; the "
                    "turn is not replaying the same effects",
                    replay_key=key,
                    workflow_id=workflow_id,
                )
            if record.crash is None:
                outcome = self._decode(record, envelope, workflow_id)
                journal.replayed += 1
                if record.due_at_ms is not None:
                    await self._wait_until(record.due_at_ms)
                return outcome
            if journal.complete:
                raise DbosHostError(
                    "dbos_effect_crashed",
                    f"the recorded run crashed here: {record.crash}",
                    replay_key=key,
                    workflow_id=workflow_id,
                )
            # A crash in a run that never finished: run the effect again.
        elif journal.complete:
            raise DbosHostError(
                "dbos_replay_diverged",
                "the workflow finished its turns without this effect; the replay asks "
                "for an effect the recorded run never had",
                replay_key=key,
                workflow_id=workflow_id,
            )
        return await self._execute(envelope, executor, journal, digest)

    def _decode(self, record: _Record, envelope: EffectEnvelope, workflow_id: str) -> EffectOutcome:
        kind = envelope.invocation.kind
        try:
            outcome: EffectOutcome = decode(record.outcome, OUTCOME_TYPES[kind])
        except CodecError as exc:
            raise DbosHostError(
                "dbos_journal_corrupt",
                f"the recorded {kind.value} outcome does not decode: {exc}",
                replay_key=envelope.replay_key,
                workflow_id=workflow_id,
            ) from exc
        return outcome

    async def _wait_until(self, due_at_ms: int) -> None:
        remaining = due_at_ms / 1000 - self._host._clock()
        if remaining > 0:
            await self._host._sleep(remaining)

    async def _execute(
        self,
        envelope: EffectEnvelope,
        executor: EffectExecutor,
        journal: TurnJournal,
        digest: str,
    ) -> EffectOutcome:
        key = envelope.replay_key
        kind = envelope.invocation.kind
        command = envelope.command
        produced: list[EffectOutcome] = []
        crashed: list[Exception] = []
        timer: list[int] = []

        def document(**fields: Any) -> str:
            record = _Record(replay_key=key, envelope_hash=digest, kind=kind.value, **fields)
            return encode_document(_EFFECT_DOC, record).decode()

        async def step() -> str:
            if isinstance(command, SleepCommand):
                timer.append(int(self._host._clock() * 1000) + command.duration_ms)
                slept = Slept(duration_ms=command.duration_ms)
                produced.append(slept)
                return document(outcome=msgspec.Raw(encode(slept)), due_at_ms=timer[0])
            try:
                outcome = await executor.execute(envelope)
                raw = msgspec.Raw(encode(outcome))
            except Exception as exc:
                crashed.append(exc)
                return document(crash=f"{type(exc).__name__}: {exc}")
            produced.append(outcome)
            return document(outcome=raw)

        text = await DBOS.run_step_async({"name": effect_step_name(key)}, step)
        journal.executed += 1
        if crashed:
            exc = crashed[0]
            if isinstance(exc, CodecError):
                raise DbosHostError(
                    "dbos_effect_unencodable",
                    f"the outcome cannot be checkpointed: {exc}",
                    replay_key=key,
                    workflow_id=journal.workflow_id,
                ) from exc
            raise exc
        if not produced:
            # DBOS answered from a checkpoint at this ordinal without running the step
            # (the journal reserves recorded ordinals, so this is a foreign writer's).
            record = _parse_output(journal.workflow_id, key, "the step's checkpoint", text)
            if record.crash is not None:
                raise DbosHostError(
                    "dbos_effect_crashed",
                    f"the recorded run crashed here: {record.crash}",
                    replay_key=key,
                    workflow_id=journal.workflow_id,
                )
            produced.append(self._decode(record, envelope, journal.workflow_id))
            if record.due_at_ms is not None:
                timer.append(record.due_at_ms)
        if timer:
            await self._wait_until(timer[0])
        return produced[0]


# ---------------------------------------------------------------- the turn workflow


_RUNNERS: dict[str, DbosTurnRunner] = {}


async def _registered_runner(name: str) -> DbosTurnRunner:
    deadline = time.monotonic() + _RUNNER_WAIT_S
    while (runner := _RUNNERS.get(name)) is None:
        if time.monotonic() >= deadline:
            raise DbosHostError(
                "dbos_runner_missing",
                f"no DbosTurnRunner named {name!r} is registered in this process; create "
                "it before DBOS.launch() so recovered turns find it",
                workflow_id=DBOS.workflow_id,
            )
        await asyncio.sleep(0.05)
    return runner


@DBOS.workflow(name=TURN_WORKFLOW_NAME)
async def _lash_turn(runner_name: str, session_id: str, turn_input: str, turn_id: str) -> str:
    """One lash turn as a DBOS workflow (arguments and result are lash JSON documents)."""
    runner = await _registered_runner(runner_name)
    core = await runner.core()
    decoded = decode_document(turn_input, "turn_input", TurnInput)
    try:
        async with turn_journal(), core.session(session_id) as session:
            result = await session.run(decoded, turn_id=turn_id)
    except Exception as exc:
        if _survives_pickling(exc):
            raise
        # DBOS stores the error a workflow ends with; keep its type and message.
        raise DbosHostError(
            "dbos_turn_failed", f"{type(exc).__name__}: {exc}", workflow_id=DBOS.workflow_id
        ) from exc
    return encode_document("turn_result", result).decode()


def _survives_pickling(exc: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


def _decode_result(workflow_id: str, output: object) -> TurnResult:
    if not isinstance(output, str):
        raise DbosHostError(
            "dbos_turn_result_corrupt",
            f"the workflow returned {type(output).__name__}, not a lash turn result",
            workflow_id=workflow_id,
        )
    try:
        return decode_document(output, "turn_result", TurnResult)
    except CodecError as exc:
        raise DbosHostError(
            "dbos_turn_result_corrupt",
            f"the workflow's result is not a readable turn result: {exc}",
            workflow_id=workflow_id,
        ) from exc


class DbosTurn:
    """A started turn workflow: ``await turn.result()`` waits for its committed result."""

    __slots__ = ("_handle", "_poll", "session_id", "turn_id", "workflow_id")

    def __init__(
        self,
        handle: WorkflowHandleAsync[str],
        *,
        session_id: str,
        turn_id: str,
        workflow_id: str,
        poll: float,
    ) -> None:
        self._handle = handle
        self._poll = poll
        self.session_id = session_id
        self.turn_id = turn_id
        self.workflow_id = workflow_id

    async def result(self) -> TurnResult:
        """The turn's committed result (raises what the workflow raised)."""
        output = await self._handle.get_result(polling_interval_sec=self._poll)
        return _decode_result(self.workflow_id, output)

    def __repr__(self) -> str:
        return f"DbosTurn({self.workflow_id!r})"


class DbosTurnRunner(AsyncClosing):
    """Runs lash turns as DBOS workflows on one core.

    ``core`` is a ``LashCore`` whose effect host is a ``DbosEffectHost``, or a
    factory building one (called once, on first use, also when DBOS recovers a
    turn). ``name`` identifies the runner in its workflows' arguments: keep it
    stable across restarts and create the runner before ``DBOS.launch()``.
    ``poll_interval`` is how often a handle on a turn running elsewhere (a
    recovering one, say) checks for its result. Cancelling a wait for a result
    leaves the turn running; ``DBOS.cancel_workflow`` stops it.
    """

    def __init__(
        self,
        core: LashCore | CoreFactory,
        *,
        name: str = "lash",
        poll_interval: float = 0.1,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"runner name must be a non-blank string, got {name!r}")
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval must be positive, got {poll_interval!r}")
        if not isinstance(core, LashCore) and not callable(core):
            raise ConfigError(f"core must be a LashCore or a factory, got {type(core).__name__}")
        if name in _RUNNERS:
            raise ConfigError(
                f"a DbosTurnRunner named {name!r} is already registered; close it first "
                "or pick another name"
            )
        self.name = name
        self.poll_interval = poll_interval
        self._core: LashCore | None = None
        self._factory: CoreFactory | None = None
        if isinstance(core, LashCore):
            self._core = self._checked(core)
        else:
            self._factory = core
        self._lock = asyncio.Lock()
        self._closed = False
        _RUNNERS[name] = self

    @staticmethod
    def _checked(core: object) -> LashCore:
        if not isinstance(core, LashCore):
            raise ConfigError(f"the core factory returned {type(core).__name__}, not a LashCore")
        if not isinstance(core.effect_host, DbosEffectHost):
            raise ConfigError(
                "DbosTurnRunner needs a core whose effect_host is a DbosEffectHost, got "
                f"{type(core.effect_host).__name__}"
            )
        return core

    async def core(self) -> LashCore:
        """The runner's core (built by the factory on first use)."""
        if self._closed:
            raise ConfigError(f"DbosTurnRunner {self.name!r} is closed")
        if self._core is not None:
            return self._core
        async with self._lock:
            if self._core is None:
                assert self._factory is not None
                built = self._factory()
                if inspect.isawaitable(built):
                    built = await built
                try:
                    self._core = self._checked(built)
                except ConfigError:
                    if isinstance(built, LashCore):
                        await built.aclose()  # rejected: do not leak its stores' threads
                    raise
        return self._core

    def workflow_id(self, session_id: str, turn_id: str) -> str:
        """The DBOS workflow id of a turn: ``lash-turn:{runner}:{session}:{turn}``, each part
        percent-encoded so no two (session, turn) pairs share an id."""
        parts = (quote(p, safe="") for p in (self.name, session_id, turn_id))
        return "lash-turn:" + ":".join(parts)

    async def start(
        self, session_id: str, input: str | TurnInput, *, turn_id: str | None = None
    ) -> DbosTurn:
        """Start (or find) the turn's workflow and return a handle on it.

        Without ``turn_id`` a fresh one is minted; pass your own to make a retry
        of the call find the same turn.
        """
        try:
            check_session_id(session_id)
            if turn_id is not None:
                check_turn_id(turn_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if isinstance(input, str):
            input = TurnInput(text=input)
        elif not isinstance(input, TurnInput):
            raise TypeError(
                f"turn input must be a string or a TurnInput, got {type(input).__name__}"
            )
        turn_id = turn_id or new_turn_id()
        workflow_id = self.workflow_id(session_id, turn_id)
        args = (self.name, session_id, encode_document("turn_input", input).decode(), turn_id)
        with SetWorkflowID(workflow_id):
            handle: WorkflowHandleAsync[str] = await DBOS.start_workflow_async(_lash_turn, *args)
        status = await DBOS.get_workflow_status_async(workflow_id)
        recorded = status.input if status is not None else None
        if status is not None and (
            status.name != TURN_WORKFLOW_NAME
            or (recorded is not None and tuple(recorded["args"]) != args)
        ):
            raise DbosHostError(
                "dbos_turn_conflict",
                f"turn {turn_id!r} of session {session_id!r} already ran as this workflow "
                "with other input",
                workflow_id=workflow_id,
            )
        return DbosTurn(
            handle,
            session_id=session_id,
            turn_id=turn_id,
            workflow_id=workflow_id,
            poll=self.poll_interval,
        )

    async def run(
        self, session_id: str, input: str | TurnInput, *, turn_id: str | None = None
    ) -> TurnResult:
        """Run one turn as a workflow and return its committed result."""
        return await (await self.start(session_id, input, turn_id=turn_id)).result()

    async def result(self, workflow_id: str) -> TurnResult:
        """Wait for any lash turn workflow (recovered, forked, started elsewhere)."""
        handle: WorkflowHandleAsync[object] = await DBOS.retrieve_workflow_async(workflow_id)
        output = await handle.get_result(polling_interval_sec=self.poll_interval)
        return _decode_result(workflow_id, output)

    async def aclose(self) -> None:
        """Unregister the runner and close a core its factory built (idempotent)."""
        self._closed = True
        if _RUNNERS.get(self.name) is self:
            del _RUNNERS[self.name]
        if self._factory is not None and self._core is not None:
            core, self._core = self._core, None
            await core.aclose()

    def __repr__(self) -> str:
        return f"DbosTurnRunner(name={self.name!r})"


__all__ = [
    "EFFECT_STEP_PREFIX",
    "TURN_WORKFLOW_NAME",
    "CoreFactory",
    "DbosEffectHost",
    "DbosHostError",
    "DbosTurn",
    "DbosTurnRunner",
    "TurnJournal",
    "dbos_sqlite_config",
    "effect_step_name",
    "turn_journal",
]
