"""The facade: ``LashCore`` → ``core.session(id)`` → ``session.run(...)`` / ``session.turn(...)``.

One turn runs at a time per session: starting a second turn while one is
running raises ``SessionBusyError`` at once (a documented choice: a silent wait
would hide a host bug that interleaves two conversations).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec

from ._closing import AsyncClosing
from .attachments import AttachmentManifest, AttachmentStore, SessionAttachments
from .kernel.attachments import ImageMediaType
from .kernel.errors import ToolDefinitionError
from .kernel.llm import GenerationOptions, LlmUsage
from .kernel.machine import MachineConfig, TurnMachine
from .kernel.messages import (
    Message,
    Part,
    PartKind,
    PluginOrigin,
    Role,
    renumber_parts,
)
from .kernel.outcome import AgentFrameSwitch, Finished, Stopped, StopReason, TurnOutcome
from .kernel.prompt import PromptContribution
from .kernel.protocols.standard import standard_config
from .kernel.render import RenderCache
from .providers.base import Provider
from .runtime.activity import ErrorActivity, ToolCallCompleted, TurnActivity
from .runtime.cancel import CancelToken
from .runtime.effects import DurabilityTier, EffectHost, InlineEffectHost, TurnScope
from .runtime.plugins import (
    AbortTurn,
    EnqueueMessages,
    Plugin,
    PluginError,
    PluginHost,
    TurnFinishedEvent,
    TurnHookContext,
    TurnStartedEvent,
    directives,
)
from .runtime.queue import (
    Delivery,
    LeaseKeeper,
    TurnClaims,
    abandon_quietly,
    claim_idle,
    claim_text,
    has_queue,
    turn_input_draft,
    worker_id,
)
from .runtime.state import StateKey, StateView, net_changes
from .runtime.tools import Tool, ToolRegistry
from .runtime.trace import JsonlTraceSink, Tracer, TraceSink
from .runtime.turn import TurnRunner
from .store.base import (
    GraphError,
    GraphNode,
    RuntimeCommit,
    SessionMeta,
    SessionRelation,
    SessionStore,
    StoredSession,
    TurnRecord,
    TurnStamp,
    UsageRow,
    check_text,
    commit_hash,
)
from .store.graph import SessionGraph
from .store.memory import MemoryStore
from .store.queue import DEFAULT_CLAIM_TTL_MS, QueueClaim, QueuedBatch

T = TypeVar("T")

_STREAM_BUFFER = 64


class LashError(Exception):
    """Base class of the facade's errors."""


class ConfigError(LashError):
    """``LashCore`` was given a configuration that cannot work; the message names the part."""


class SessionBusyError(LashError):
    """A turn is already running on this session."""


class Image(msgspec.Struct, frozen=True, kw_only=True):
    """An image for a turn's input: its bytes and MIME type (``image/png``, ``image/jpeg``, ...)."""

    data: bytes
    mime: str
    label: str | None = None


class TurnInput(msgspec.Struct, frozen=True, kw_only=True):
    """A turn's input: text and images. ``session.run("text")`` is shorthand for text only."""

    text: str = ""
    images: tuple[Image, ...] = ()


def _input_problem(value: object) -> str | None:
    """Why ``value`` cannot be a turn's input, or None when it can."""
    if isinstance(value, str):
        return None
    if not isinstance(value, TurnInput):
        return f"turn input must be a string or a TurnInput, got {type(value).__name__}"
    if not isinstance(value.text, str):
        return f"text must be a string, got {type(value.text).__name__}"
    for i, image in enumerate(value.images):
        if not isinstance(image, Image):
            return f"images[{i}] must be an Image, got {type(image).__name__}"
        if not isinstance(image.data, bytes | bytearray) or not image.data:
            return f"images[{i}]: data must be non-empty bytes"
        if not isinstance(image.mime, str) or ImageMediaType.from_mime(image.mime) is None:
            return f"images[{i}]: {image.mime!r} is not an image type (png, jpeg, gif, webp, bmp)"
    return None


class AgentFrame(msgspec.Struct, frozen=True, kw_only=True):
    """A named configuration a session can switch into (a reviewer, a planner, ...).

    ``tools`` None inherits the core's tools; ``model`` None the core's model.
    A tool switches frames with ``ToolOutput.success(..., control=SwitchAgentFrame(...))``.
    """

    instructions: str | None = None
    tools: tuple[Tool, ...] | None = None
    model: str | None = None
    max_turns: int | None = None


class _FrameSetup:
    """The registry and (cached) machine config of one frame."""

    __slots__ = ("_config", "_generation", "frame", "registry")

    def __init__(self, frame: AgentFrame | None, registry: ToolRegistry) -> None:
        self.frame = frame
        self.registry = registry
        self._config: MachineConfig | None = None
        self._generation = -1


class TurnResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished, committed turn.

    ``text`` is the answer for a finished turn ("" otherwise); ``messages`` are
    the messages the turn committed; ``activities`` everything it streamed.
    """

    session_id: str
    turn_id: str
    outcome: TurnOutcome
    text: str = ""
    usage: LlmUsage = msgspec.field(default_factory=LlmUsage)
    tool_calls: tuple[ToolCallCompleted, ...] = ()
    messages: tuple[Message, ...] = ()
    activities: tuple[TurnActivity, ...] = ()
    revision: int | None = None
    frame_id: str | None = None
    """The agent frame the turn ran in (None: the default frame)."""
    usage_rows: tuple[UsageRow, ...] = ()
    """Everything this turn booked, by (source, model): its own model calls
    (``turn``), direct completions, and child turns (``child``)."""
    replayed: bool = False
    """True when the turn had committed before and this result was read back
    from the store (no activities or tool-call details then)."""

    @property
    def ok(self) -> bool:
        """True for a finished turn or an agent-frame switch."""
        return isinstance(self.outcome, Finished | AgentFrameSwitch)


def _resolve_store(store: SessionStore | str | None) -> SessionStore:
    if store is None or store == "memory://":
        return MemoryStore()
    if isinstance(store, str) and store.startswith("sqlite:///"):
        path = store[len("sqlite:///") :]
        if not path:
            raise ConfigError(f"store {store!r}: name a directory, e.g. 'sqlite:///./lash-data'")
        from .store.sqlite import SqliteStore

        try:
            return SqliteStore(path)
        except ValueError as exc:  # the path is a file, not a directory
            raise ConfigError(f"store {store!r}: {exc}") from exc
    if isinstance(store, str) and store.startswith(("postgresql://", "postgres://")):
        try:
            from .store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"store {store.split('@')[-1]!r}: PostgreSQL needs the postgres extra "
                "(pip install 'lash-runtime[postgres]')"
            ) from exc
        return PostgresStore(store)
    if isinstance(store, str):
        scheme = store.split("://", 1)[0] if "://" in store else store
        raise ConfigError(
            f"store {store!r}: the {scheme!r} backend is not available in this version; "
            "use 'memory://', 'sqlite:///dir', 'postgresql://...' or pass a store object"
        )
    for attr in ("load", "commit", "tier"):
        if not hasattr(store, attr):
            raise ConfigError(f"store {type(store).__name__} has no {attr!r}; it is not a store")
    return store


_Closeable = SessionStore | AttachmentStore | AttachmentManifest


def _resolve_attachments(
    attachments: AttachmentStore | str | None,
    manifest: AttachmentManifest | None,
    store: SessionStore,
    built: list[_Closeable],
) -> tuple[AttachmentStore, AttachmentManifest]:
    """The attachment store and manifest: given, from a URL, or beside the session store.

    Whatever is built here (not given) is appended to ``built`` as soon as it exists.
    """
    from .attachments import (
        FileAttachmentStore,
        MemoryAttachmentManifest,
        MemoryAttachmentStore,
        SqliteAttachmentManifest,
        SqliteAttachmentStore,
    )
    from .store.sqlite import SqliteStore

    given_manifest = manifest
    where = "attachments"
    try:
        if attachments is None:
            if isinstance(store, SqliteStore):
                home = store.path.parent
                attachments = FileAttachmentStore(home / "attachments")
                built.append(attachments)
                manifest = manifest or SqliteAttachmentManifest(
                    home / "attachments-manifest.sqlite3"
                )
            else:
                attachments = MemoryAttachmentStore()
                built.append(attachments)
        elif isinstance(attachments, str):
            url = where = attachments
            if url == "memory://":
                attachments = MemoryAttachmentStore()
                built.append(attachments)
            elif url.startswith("file:///") and len(url) > len("file:///"):
                root = Path(url[len("file:///") :])
                attachments = FileAttachmentStore(root)
                built.append(attachments)
                manifest = manifest or SqliteAttachmentManifest(root / "manifest.sqlite3")
            elif url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
                path = Path(url[len("sqlite:///") :])
                attachments = SqliteAttachmentStore(path)
                built.append(attachments)
                manifest = manifest or SqliteAttachmentManifest(
                    path.with_name(path.name + ".manifest")
                )
            else:
                raise ConfigError(
                    f"attachments {url!r}: use 'memory://', 'file:///dir', 'sqlite:///file' "
                    "or pass an attachment store"
                )
        else:
            for attr in ("put", "get", "tier"):
                if not hasattr(attachments, attr):
                    raise ConfigError(
                        f"attachments {type(attachments).__name__} has no {attr!r}; "
                        "it is not an attachment store"
                    )
    except ValueError as exc:  # a path of the wrong kind (a file for a directory, ...)
        raise ConfigError(f"attachments {where!r}: {exc}") from exc
    if manifest is None:
        manifest = MemoryAttachmentManifest()
    if manifest is not given_manifest:
        built.append(manifest)
    return attachments, manifest


def _close_built(parts: Sequence[_Closeable]) -> None:
    """Close parts a failing constructor built (``__init__`` cannot await ``aclose``).

    Parts with a blocking ``close()`` (the SQLite ones, which run a thread) are
    closed; the others hold nothing until first used (a PostgreSQL pool opens lazily).
    """
    for part in reversed(parts):
        close = getattr(part, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):  # the configuration error matters more
                close()


class LashCore(AsyncClosing):
    """Everything sessions share: provider, model, tools, prompt, store and effect host.

    Keyword arguments only. ``provider`` takes a provider object or a selection
    string such as ``"openai:gpt-4.1"`` (which also names the model; keys come
    from the environment). ``store`` takes a store object or a URL
    (``memory://``, ``sqlite:///dir``, ``postgresql://...``). ``effect_host``
    defaults to the inline host; a durable host over inline peers is refused
    here, before any turn runs.
    """

    def __init__(
        self,
        *,
        provider: Provider | str,
        model: str | None = None,
        tools: Iterable[Tool] = (),
        instructions: str | None = None,
        plugins: Sequence[Plugin] = (),
        store: SessionStore | str | None = None,
        attachments: AttachmentStore | str | None = None,
        effect_host: EffectHost | None = None,
        max_turns: int | None = None,
        trace: TraceSink | str | Path | None = None,
        generation: GenerationOptions | None = None,
        frames: Mapping[str, AgentFrame] | None = None,
        max_frame_switches: int = 8,
        attachment_manifest: AttachmentManifest | None = None,
        queue_lease_ms: int = DEFAULT_CLAIM_TTL_MS,
    ) -> None:
        tools = tuple(tools)  # read once: a generator would be empty for the frames
        self._owns_provider = isinstance(provider, str)
        if isinstance(provider, str):
            from .providers.select import provider_from_string

            try:
                selection = provider_from_string(provider)
            except ValueError as exc:
                raise ConfigError(f"provider {provider!r}: {exc}") from exc
            provider = selection.provider  # its HTTP client opens on first use
            model = model or selection.model
        if not callable(getattr(provider, "complete", None)):
            raise ConfigError(f"provider {provider!r} has no complete() method")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a non-blank string, got {model!r}")
        if max_turns is not None and (not isinstance(max_turns, int) or max_turns < 1):
            raise ConfigError(f"max_turns must be a positive integer, got {max_turns!r}")
        if max_frame_switches < 0:
            raise ConfigError(f"max_frame_switches must be >= 0, got {max_frame_switches}")
        if type(queue_lease_ms) is not int or queue_lease_ms < 30:
            raise ConfigError(f"queue_lease_ms must be an integer >= 30, got {queue_lease_ms!r}")
        self.queue_lease_ms = queue_lease_ms
        """How long a queue claim this core takes lasts; running turns renew theirs."""
        try:
            self.plugins = PluginHost.build(plugins)
        except PluginError as exc:
            raise ConfigError(str(exc)) from exc
        if isinstance(trace, str | Path):
            self._built_trace: JsonlTraceSink | None = JsonlTraceSink(trace)  # closed by aclose
            self.trace: TraceSink | None = self._built_trace
        elif trace is None or callable(getattr(trace, "append", None)):
            self._built_trace = None
            self.trace = trace
        else:
            raise ConfigError(f"trace must be a path or a TraceSink, got {type(trace).__name__}")
        self.provider = provider
        self.model = model
        try:
            self.registry = ToolRegistry([*tools, *self.plugins.parts.tools])
        except ToolDefinitionError as exc:
            raise ConfigError(str(exc)) from exc
        self.instructions = instructions
        self.max_turns = max_turns
        self.generation = generation or GenerationOptions()
        self.max_frame_switches = max_frame_switches
        self._frames: dict[str | None, _FrameSetup] = {None: _FrameSetup(None, self.registry)}
        for frame_id, frame in (frames or {}).items():
            if not isinstance(frame_id, str) or not frame_id.strip():
                raise ConfigError(f"agent frame ids must be non-blank strings, got {frame_id!r}")
            if not isinstance(frame, AgentFrame):
                raise ConfigError(f"frame {frame_id!r} must be an AgentFrame")
            if frame.max_turns is not None and frame.max_turns < 1:
                raise ConfigError(f"frame {frame_id!r}: max_turns must be >= 1")
            tools_of = frame.tools if frame.tools is not None else tools
            try:
                registry = ToolRegistry([*tools_of, *self.plugins.parts.tools])
            except ToolDefinitionError as exc:
                raise ConfigError(f"frame {frame_id!r}: {exc}") from exc
            self._frames[frame_id] = _FrameSetup(frame, registry)
        # Only now open files, threads and connections; a later failure closes them.
        self._built: list[_Closeable] = []
        """What this core built (not given) and closes: store, attachments, manifest."""
        try:
            self.store = _resolve_store(store)
            if self.store is not store:
                self._built.append(self.store)
            self.attachments, self.attachment_manifest = _resolve_attachments(
                attachments, attachment_manifest, self.store, self._built
            )
            self.effect_host: EffectHost = effect_host or InlineEffectHost()
            self._check_tiers()
        except BaseException:
            _close_built(self._built)
            raise

    def _check_tiers(self) -> None:
        """Durability comes from the wiring: every durable part needs durable peers."""
        attachments_tier = (
            DurabilityTier.DURABLE
            if self.attachments.tier is DurabilityTier.DURABLE
            and self.attachment_manifest.tier is DurabilityTier.DURABLE
            else DurabilityTier.INLINE
        )
        needs = []
        if self.effect_host.tier is DurabilityTier.DURABLE:
            needs.append(("a durable effect host", "store", self.store.tier))
            needs.append(("a durable effect host", "attachments", attachments_tier))
        if self.store.tier is DurabilityTier.DURABLE:
            needs.append(("a durable store", "attachments", attachments_tier))
        for who, facet, tier in needs:
            if tier is not DurabilityTier.DURABLE:
                raise ConfigError(
                    f"{who} needs durable peers: the {facet} facet is inline "
                    f"(durable_store_required:{facet})"
                )

    @property
    def frame_ids(self) -> frozenset[str]:
        """The registered agent frames."""
        return frozenset(k for k in self._frames if k is not None)

    def _frame(self, frame_id: str | None) -> _FrameSetup:
        setup = self._frames.get(frame_id)
        if setup is None:  # a stored frame that this core no longer defines
            raise ConfigError(
                f"agent frame {frame_id!r} is not defined on this core "
                f"(defined: {', '.join(sorted(self.frame_ids)) or 'none'})"
            )
        return setup

    def machine_config(self, frame_id: str | None = None) -> MachineConfig:
        """The turn machine's configuration for a frame, rebuilt when its tools change."""
        setup = self._frame(frame_id)
        if setup._config is None or setup._generation != setup.registry.generation:
            frame = setup.frame
            contributions = list(self.plugins.parts.contributions)
            for text in (self.instructions, frame.instructions if frame else None):
                if text and text.strip():
                    contributions.append(PromptContribution.project_instructions(text))
            setup._config = standard_config(
                model=(frame.model if frame and frame.model else None) or self.model,
                tools=[t.definition for t in setup.registry],
                contributions=contributions,
                max_turns=(frame.max_turns if frame and frame.max_turns else None)
                or self.max_turns,
                generation=self.generation,
            )
            setup._generation = setup.registry.generation
        return setup._config

    async def aclose(self) -> None:
        """Close what this core opened.

        That is the store and attachment parts it built (from URLs or defaults), a
        provider made from a string, and a trace file it was given a path for.
        """
        if self._owns_provider:
            close = getattr(self.provider, "aclose", None)
            if callable(close):
                await close()
        for part in self._built:
            await part.aclose()
        if self._built_trace is not None:
            self._built_trace.close()

    async def sessions(self, *, limit: int | None = None) -> tuple[SessionMeta, ...]:
        """Metadata of the store's sessions, oldest first (a session gets its row on
        its first commit)."""
        return await self.store.list_sessions(limit=limit)

    def session(self, session_id: str) -> SessionContext:
        """Open (or resume) a session: ``async with core.session("chat-1") as session``."""
        if not isinstance(session_id, str) or not session_id.strip():
            raise ConfigError(f"session id must be a non-blank string, got {session_id!r}")
        return SessionContext(self, session_id)


class SessionContext:
    """The async context manager ``core.session(id)`` returns."""

    __slots__ = ("_core", "_session", "_session_id")

    def __init__(self, core: LashCore, session_id: str) -> None:
        self._core = core
        self._session_id = session_id
        self._session: Session | None = None

    async def __aenter__(self) -> Session:
        self._session = await Session.open(self._core, self._session_id)
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            self._session.close()


class Session:
    """One conversation: its committed history, counters and usage."""

    def __init__(
        self,
        core: LashCore,
        session_id: str,
        *,
        history: Sequence[Message] = (),
        revision: int | None = None,
        turn_index: int = 0,
        iteration: int = 0,
        usage: Iterable[UsageRow] = (),
        frame_id: str | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> None:
        self.core = core
        self._frame_id = frame_id
        self.id = session_id
        self._history: list[Message] = list(history)
        self._revision = revision
        self._turn_index = turn_index
        self._iteration = iteration
        self._usage: dict[tuple[str, str], LlmUsage] = {(r.source, r.model): r.usage for r in usage}
        self._state: dict[str, bytes] = dict(state or {})
        self._relation: SessionRelation | None = None
        """Where this session came from, written with its first commit."""
        self._busy = False
        self._closed = False
        self._render_cache = RenderCache()
        """This session's rendered history, reused turn after turn (only new messages render)."""
        self._queue_owner = f"{worker_id()}:{session_id}"
        """Who claims this session's queue at idle: this process's worker, this session."""
        self._attachments = SessionAttachments(
            core.attachments, core.attachment_manifest, session_id
        )

    @classmethod
    async def open(cls, core: LashCore, session_id: str) -> Session:
        """Load the session from the core's store, or start it empty."""
        session = cls(core, session_id)
        await session._refresh()
        return session

    async def _refresh(self) -> StoredSession | None:
        """Read this session's committed state from the store again."""
        stored = await self.core.store.load(self.id)
        if stored is None:
            return None
        if stored.session_id != self.id:
            raise ConfigError(f"store returned session {stored.session_id!r} for {self.id!r}")
        self._history = list(stored.messages)
        self._revision = stored.revision
        self._turn_index = stored.turn_index
        self._iteration = stored.iteration
        self._usage = {(r.source, r.model): r.usage for r in stored.usage}
        self._frame_id = stored.frame_id
        self._state = dict(stored.state)
        return stored

    async def _committed_turn(self, turn_id: str) -> TurnResult | None:
        """The result of ``turn_id`` if it committed before, from the store; else None."""
        load_turn = getattr(self.core.store, "load_turn", None)
        if load_turn is None:
            return None
        landed = await load_turn(self.id, turn_id)
        if landed is None:
            return None
        await self._refresh()  # this object may predate the commit
        record = landed.record
        outcome: TurnOutcome = (
            record.outcome
            if record is not None
            else Stopped(reason=StopReason.RUNTIME_ERROR, message="committed without a record")
        )
        usage = record.usage if record is not None else LlmUsage()
        try:  # booked like ``_execute`` does: under the frame's model
            model = self.core.machine_config(self._frame_id).model
        except ConfigError:  # a stored frame this core no longer defines
            model = self.core.model
        return TurnResult(
            session_id=self.id,
            turn_id=turn_id,
            outcome=outcome,
            text=outcome.text if isinstance(outcome, Finished) else "",
            usage=usage,
            messages=landed.messages,
            revision=landed.revision,
            frame_id=self._frame_id,
            usage_rows=(UsageRow(source="turn", model=model, usage=usage),)
            if usage != LlmUsage()
            else (),
            replayed=True,
        )

    # ------------------------------------------------------------ the session graph

    async def graph(self) -> SessionGraph:
        """The committed session graph (every live node and the active path), from the store."""
        stored = await self.core.store.load(self.id)
        if stored is None:
            return SessionGraph((), None)
        return stored.graph

    async def branch_to(self, node_id: str) -> None:
        """Move the leaf to ``node_id``: the next turn continues from there.

        The nodes after it stay in the graph, off the active path, until they
        are tombstoned. An unknown node is a ``GraphError``; nothing changes.
        """
        self._claim()
        try:
            if self._revision is None:
                raise GraphError(self.id, node_id, "unknown_leaf", "the session has no nodes yet")
            await self.core.store.commit(
                RuntimeCommit(
                    session_id=self.id,
                    expected_revision=self._revision,
                    turn_index=self._turn_index,
                    iteration=self._iteration,
                    frame_id=self._frame_id,
                    leaf_id=node_id,
                )
            )
            await self._refresh()
        finally:
            self._busy = False

    async def fork(self, new_session_id: str, *, at: str | None = None) -> str:
        """Copy the active path (up to node ``at``, default the leaf) into a new session.

        The new session starts with those messages, this session's turn counters,
        agent frame and state, and no usage; its metadata names this session as
        its parent. Open it with ``core.session(new_session_id)``. Returns its
        id. An existing ``new_session_id`` is a ``HeadRevisionConflict``.
        """
        stored = await self.core.store.load(self.id)
        graph = stored.graph if stored is not None else SessionGraph((), None)
        stored_state = stored.state if stored is not None else {}
        if at is None:
            path = graph.active_path
        elif at not in graph:
            raise GraphError(self.id, at, "unknown_leaf", "no such node to fork at")
        else:
            path = graph.path_to(at)
        nodes = tuple(
            GraphNode(message=m, parent_id=path[i - 1].id if i else None)
            for i, m in enumerate(path)
        )
        node = path[-1].id if path else None
        await self.core.store.commit(
            RuntimeCommit(
                session_id=new_session_id,
                expected_revision=None,
                turn_index=self._turn_index,
                iteration=self._iteration,
                frame_id=self._frame_id,
                replace_graph=nodes,
                state=dict(stored_state),
                meta=self._new_meta(
                    SessionRelation(kind="fork", parent_session_id=self.id, node_id=node),
                    session_id=new_session_id,
                ),
            )
        )
        return new_session_id

    async def tombstone(self, node_ids: Iterable[str]) -> int:
        """Hide nodes off the active path, with everything below them; returns how many."""
        return await self.core.store.tombstone(self.id, node_ids)

    async def vacuum(self) -> int:
        """Delete tombstoned nodes for good; returns how many this call removed."""
        return await self.core.store.vacuum(self.id)

    # ------------------------------------------------------------ state and metadata

    def get_state(self, key: StateKey[T]) -> T:
        """The committed value of a session-state slot, or the key's default while unset."""
        return StateView(self._state).get(key)

    async def set_state(self, key: StateKey[T], value: T) -> None:
        """Set a session-state slot now, in a commit of its own.

        ``StateError`` if ``value`` does not fit the key's type (nothing is
        written); ``SessionBusyError`` while a turn runs (a turn's hooks and
        tools write state through their contexts instead).
        """
        await self._commit_state({key.name: key.encode(value)})

    async def delete_state(self, key: StateKey[Any]) -> None:
        """Unset a session-state slot now, in a commit of its own (a no-op when unset)."""
        if key.name in self._state:
            await self._commit_state({key.name: None})

    async def _commit_state(self, changes: dict[str, bytes | None]) -> None:
        self._claim()
        try:
            changes = net_changes(self._state, changes)
            if not changes:
                return
            result = await self.core.store.commit(
                RuntimeCommit(
                    session_id=self.id,
                    expected_revision=self._revision,
                    turn_index=self._turn_index,
                    iteration=self._iteration,
                    frame_id=self._frame_id,
                    state=changes,
                    meta=self._new_meta(self._relation) if self._revision is None else None,
                )
            )
            self._record((), self._turn_index, self._iteration, (), result.revision, changes)
        finally:
            self._busy = False

    def _new_meta(
        self,
        relation: SessionRelation | None,
        *,
        session_id: str | None = None,
        model: str | None = None,
    ) -> SessionMeta:
        """The metadata row a session's first commit writes (kept if one exists)."""
        return SessionMeta(
            session_id=session_id or self.id,
            created_at_ms=int(time.time() * 1000),
            model=model or self.core.model,
            relation=relation,
        )

    async def meta(self) -> SessionMeta | None:
        """The session's metadata row (None until its first commit or ``rename``)."""
        return await self.core.store.load_session_meta(self.id)

    async def rename(self, name: str | None) -> SessionMeta:
        """Set (or with None, clear) the session's display name; returns the stored row."""
        if name is not None:
            check_text("session name", name)
        current = await self.core.store.load_session_meta(self.id)
        if current is None:
            current = self._new_meta(self._relation)
        return await self.core.store.save_session_meta(msgspec.structs.replace(current, name=name))

    @property
    def messages(self) -> tuple[Message, ...]:
        """The committed history."""
        return tuple(self._history)

    @property
    def revision(self) -> int | None:
        """The store's head revision for this session (None before the first commit)."""
        return self._revision

    @property
    def frame_id(self) -> str | None:
        """The agent frame the session is in (None: the default frame)."""
        return self._frame_id

    @property
    def turn_index(self) -> int:
        """How many turns have been committed."""
        return self._turn_index

    @property
    def usage(self) -> dict[tuple[str, str], LlmUsage]:
        """Token usage by (source, model)."""
        return dict(self._usage)

    def close(self) -> None:
        """Stop accepting turns."""
        self._closed = True

    def turn(
        self,
        input: str | TurnInput,
        *,
        cancel: CancelToken | None = None,
        turn_id: str | None = None,
        if_committed: Literal["return", "replay"] = "return",
    ) -> Turn:
        """Prepare a turn; run it with ``await turn.run()`` or ``turn.stream()``.

        When ``turn_id`` names a turn that already committed, ``if_committed``
        decides: ``"return"`` answers from the store without running anything;
        ``"replay"`` runs it again (an engine re-creating its journaled steps),
        and the final commit then matches the stored stamp and writes nothing.
        """
        return Turn(self, input, cancel=cancel, turn_id=turn_id, if_committed=if_committed)

    async def run(
        self,
        input: str | TurnInput,
        *,
        cancel: CancelToken | None = None,
        turn_id: str | None = None,
        if_committed: Literal["return", "replay"] = "return",
    ) -> TurnResult:
        """Run one turn to its committed result (see ``turn`` for ``if_committed``)."""
        turn = self.turn(input, cancel=cancel, turn_id=turn_id, if_committed=if_committed)
        return await turn.run()

    # ------------------------------------------------------------ running a turn

    async def _execute(
        self,
        input: object,
        *,
        cancel: CancelToken,
        turn_id: str,
        sink: Any,
        guard: Turn | None = None,
        queue_claim: QueueClaim | None = None,
    ) -> TurnResult:
        """Run one turn and commit it; its commit consumes ``queue_claim`` (from ``drain``)."""
        core = self.core
        problem = _input_problem(input)
        if problem is not None:
            return self._invalid_input(turn_id, problem)
        turn_input = input if isinstance(input, TurnInput) else TurnInput(text=str(input))
        frame_id = self._frame_id
        try:
            setup = core._frame(frame_id)
            config = core.machine_config(frame_id)
        except ConfigError as exc:
            return self._ended_early(
                turn_id, StopReason.RUNTIME_ERROR, str(exc), "runtime", "unknown_agent_frame"
            )
        turn_index = self._turn_index + 1
        enqueued: list[Message] = []
        hook_state = StateView(self._state)
        hooks = core.plugins.parts.before_turn_hooks
        if hooks:
            stop = await self._before_turn(
                hooks, turn_id, turn_index, turn_input.text, enqueued, hook_state
            )
            if stop is not None:
                return stop
        # Images are stored only once nothing can end the turn before it starts.
        try:
            inputs = [await self._input_message(f"{turn_id}.in", turn_input), *enqueued]
        except Exception as exc:
            message = f"could not store the input's images: {type(exc).__name__}: {exc}"
            return self._ended_early(
                turn_id, StopReason.RUNTIME_ERROR, message, "runtime", "attachment_store_failed"
            )
        await core.plugins.emit(TurnStartedEvent(session_id=self.id, turn_id=turn_id))
        machine = TurnMachine(
            config,
            self._history,
            inputs=inputs,
            iteration_offset=self._iteration,
            message_ids=lambda n: f"{turn_id}.m{n}",
            render_cache=self._render_cache,
        )
        claims = (
            TurnClaims(core.store, self.id, owner_id=turn_id, ttl_ms=core.queue_lease_ms)
            if has_queue(core.store)
            else None
        )
        runner = TurnRunner(
            machine=machine,
            session_id=self.id,
            turn_id=turn_id,
            turn_index=turn_index,
            controller=core.effect_host.scoped(TurnScope(session_id=self.id, turn_id=turn_id)),
            provider=core.provider,
            registry=setup.registry,
            cancel=cancel,
            sink=sink,
            tracer=Tracer(core.trace, self.id, turn_id) if core.trace is not None else None,
            plugins=core.plugins,
            queue=claims,
            spawn=self._spawn_child,
            frames=core.frame_ids,
            state=self._state,
            state_changes=hook_state.writes(),
        )
        if guard is not None:
            guard.cancellable = True
        landed = False
        try:
            try:
                if claims is None:
                    done = await runner.run()
                else:

                    def held() -> tuple[QueueClaim, ...]:
                        own = claims.held()
                        return own if queue_claim is None else (queue_claim, *own)

                    async with LeaseKeeper(core.store, core.queue_lease_ms, held):
                        done = await runner.run()
            finally:
                if guard is not None:
                    guard.cancellable = False
            if claims is not None:
                await claims.release()  # taken at a checkpoint whose outcome the machine never saw
            completed = claims.completions() if claims is not None else ()
            if queue_claim is not None:
                completed = (queue_claim.completion(), *completed)
            committed = tuple(m for m in done.added if not m.is_transient)
            rows = [UsageRow(source="turn", model=config.model, usage=done.usage)]
            rows.extend(
                UsageRow(source=source, model=model, usage=u)
                for (source, model), u in sorted(runner.direct_usage.items())
            )
            usage_rows = tuple(r for r in rows if r.usage != LlmUsage())
            next_frame = frame_id
            if isinstance(done.outcome, AgentFrameSwitch):
                next_frame = done.outcome.frame_id
            state = net_changes(self._state, runner.state_changes)
            commit = RuntimeCommit(
                session_id=self.id,
                expected_revision=self._revision,
                messages=committed,
                turn_index=turn_index,
                iteration=done.iteration + 1,
                usage=usage_rows,
                frame_id=next_frame,
                record=TurnRecord(outcome=done.outcome, usage=done.usage),
                completed_claims=completed,
                state=state,
                meta=self._new_meta(self._relation, model=config.model)
                if self._revision is None
                else None,
            )
            refs = [p.attachment for m in committed for p in m.parts if p.attachment is not None]
            if refs:
                # Before the turn commit: a crash between the two leaves bytes the sweep
                # may delete later, never a committed reference without its bytes.
                await self._attachments.commit(refs)
            stamp = TurnStamp(session_id=self.id, turn_id=turn_id, commit_hash=commit_hash(commit))
            commit = msgspec.structs.replace(commit, stamp=stamp)
            landing = asyncio.ensure_future(core.store.commit(commit))
            try:
                result = await asyncio.shield(landing)
            except asyncio.CancelledError:
                # The caller was cancelled while the commit was in flight: finish the
                # bookkeeping so this session stays in step with the store, then give up.
                result = await landing
                landed = True
                self._record(
                    committed, turn_index, commit.iteration, usage_rows, result.revision, state
                )
                self._frame_id = next_frame
                raise
        except BaseException:
            # Nothing landed: give the queued input this turn took back to the queue.
            if claims is not None and not landed:
                await claims.release(confirmed=True)
            raise
        if result.replayed and claims is not None:
            # The store already held this turn's commit, so these claims were not
            # consumed: give the input back for a turn that will really land.
            await claims.release(confirmed=True)
        if result.replayed:
            await self._refresh()  # the stored turn, not this run, is what the session holds
        else:
            self._record(
                committed, turn_index, commit.iteration, usage_rows, result.revision, state
            )
        self._frame_id = next_frame
        outcome = done.outcome
        turn_result = TurnResult(
            session_id=self.id,
            turn_id=turn_id,
            outcome=outcome,
            text=outcome.text if isinstance(outcome, Finished) else "",
            usage=done.usage,
            tool_calls=tuple(runner.tool_calls),
            messages=committed,
            activities=tuple(runner.activities),
            revision=result.revision,
            usage_rows=usage_rows,
            frame_id=frame_id,
        )
        await core.plugins.emit(
            TurnFinishedEvent(session_id=self.id, turn_id=turn_id, result=turn_result)
        )
        return turn_result

    async def _input_message(self, message_id: str, turn_input: TurnInput) -> Message:
        """The user message for a turn's input; images are stored first (intent, then bytes)."""
        parts: list[Part] = []
        if turn_input.text or not turn_input.images:
            parts.append(Part(id="", kind=PartKind.TEXT, content=turn_input.text))
        for image in turn_input.images:
            ref = await self._attachments.put(bytes(image.data), mime=image.mime, label=image.label)
            parts.append(Part(id="", kind=PartKind.IMAGE, attachment=ref))
        return Message(id=message_id, role=Role.USER, parts=renumber_parts(message_id, parts))

    def _record(
        self,
        committed: tuple[Message, ...],
        turn_index: int,
        iteration: int,
        usage_rows: tuple[UsageRow, ...],
        revision: int,
        state: Mapping[str, bytes | None],
    ) -> None:
        """Apply a landed commit to this session's view of the store."""
        self._history.extend(committed)
        for name, value in state.items():
            if value is None:
                self._state.pop(name, None)
            else:
                self._state[name] = value
        self._revision = revision
        self._turn_index = turn_index
        self._iteration = iteration
        for row in usage_rows:
            key = (row.source, row.model)
            prior = self._usage.get(key)
            self._usage[key] = row.usage if prior is None else prior + row.usage

    async def _spawn_child(
        self, child_id: str, turn_id: str, text: str, relation: SessionRelation
    ) -> TurnResult:
        """Run one turn of a child session (same core and store); replays are idempotent."""
        child = await Session.open(self.core, child_id)
        child._relation = relation
        return await child.run(text, turn_id=turn_id)

    async def _before_turn(
        self,
        hooks: Sequence[tuple[str, Any]],
        turn_id: str,
        turn_index: int,
        text: str,
        inputs: list[Message],
        state: StateView,
    ) -> TurnResult | None:
        """Run before-turn hooks; a result means the turn ends here, uncommitted."""
        ctx = TurnHookContext(
            session_id=self.id,
            turn_id=turn_id,
            turn_index=turn_index,
            input=text,
            history=tuple(self._history),
            state=state,
        )
        for pid, hook in hooks:
            try:
                decided = directives(await hook(ctx))
            except Exception as exc:
                message = f"plugin {pid}: before_turn failed: {type(exc).__name__}: {exc}"
                return self._ended_early(
                    turn_id, StopReason.RUNTIME_ERROR, message, "plugin", "plugin_prepare_turn"
                )
            for d in decided:
                if isinstance(d, AbortTurn):
                    return self._ended_early(
                        turn_id, StopReason.PLUGIN_ABORT, f"plugin {pid}: {d.message}", "plugin",
                        d.code,
                    )  # fmt: skip
                if isinstance(d, EnqueueMessages):
                    for injected in d.messages:
                        if injected.role not in (Role.USER, Role.SYSTEM):
                            message = (
                                f"plugin {pid}: before_turn may enqueue user or system "
                                f"messages, not {injected.role.value}"
                            )
                            return self._ended_early(
                                turn_id, StopReason.RUNTIME_ERROR, message, "plugin",
                                "plugin_prepare_turn",
                            )  # fmt: skip
                        mid = f"{turn_id}.pre{len(inputs) + 1}"  # after the user message
                        parts = injected.parts or (
                            Part(id="", kind=PartKind.TEXT, content=injected.content),
                        )
                        inputs.append(
                            Message(
                                id=mid,
                                role=injected.role,
                                parts=renumber_parts(mid, parts),
                                origin=injected.origin or PluginOrigin(plugin_id=pid),
                            )
                        )
        return None

    def _ended_early(
        self, turn_id: str, reason: StopReason, message: str, kind: str, code: str
    ) -> TurnResult:
        """A turn that ends before it starts: an error activity, nothing committed."""
        error = ErrorActivity(
            id=f"{turn_id}:1", correlation_id=f"{turn_id}:1", message=message, kind=kind, code=code
        )
        return TurnResult(
            session_id=self.id,
            turn_id=turn_id,
            outcome=Stopped(reason=reason, message=message),
            activities=(error,),
            revision=self._revision,
        )

    def _invalid_input(self, turn_id: str, message: str) -> TurnResult:
        return self._ended_early(
            turn_id, StopReason.INVALID_INPUT, message, "input_validation", "invalid_turn_input"
        )

    async def enqueue(
        self,
        text: str,
        *,
        delivery: Delivery = Delivery.AFTER_CURRENT_TURN,
        source_key: str | None = None,
    ) -> QueuedBatch:
        """Queue input durably in the session's store (see ``lash.runtime.queue``).

        ``earliest_safe_boundary`` input joins a running turn at its next
        checkpoint (on any worker sharing the store); ``after_current_turn``
        input waits for ``drain``. While a batch with the same ``source_key`` is
        still queued, that batch is returned and nothing new is queued.
        """
        if self._closed:
            raise LashError(f"session {self.id!r} is closed")
        store = self._queue_store()
        return await store.enqueue(turn_input_draft(self.id, text, delivery, source_key))

    async def pending(self) -> tuple[QueuedBatch, ...]:
        """Queued input no claim holds right now (not taken by a running turn), oldest first."""
        return await self._queue_store().list_queued(self.id, pending_only=True)

    async def drain(self) -> list[TurnResult]:
        """Run the queued input as turns, oldest first; returns their results.

        Each round claims the next group at the idle boundary (owner: this
        process's worker id and the session) and runs ONE turn whose input is
        the group's texts joined with a blank line; the turn's commit consumes
        the claim, so the batches vanish exactly when the turn lands. A turn
        that raises gives its claim back and the error propagates; a turn that
        ends without committing (a plugin abort, say) gives it back and ends
        the drain, its result last. The drain also stops when another worker
        holds an earlier batch of this session (it is running the queue), and
        ``UnsupportedQueuedWork`` (the claim given back) when a batch is not
        text input. Another worker's plain ``run`` is not fenced off: if both
        commit, one fails with ``HeadRevisionConflict`` and its batches return
        to the queue.
        """
        store = self._queue_store()
        results: list[TurnResult] = []
        while True:
            self._claim()  # busy while claiming, so no turn starts on stale state
            claim = None
            try:
                claim = await claim_idle(
                    store, self.id, self._queue_owner, ttl_ms=self.core.queue_lease_ms
                )
                if claim is None:
                    return results
                text = claim_text(claim)
                await self._refresh()  # another worker may have committed since
            except BaseException:
                if claim is not None:
                    await abandon_quietly(store, claim)
                raise
            finally:
                self._busy = False
            before = self._turn_index
            try:
                turn = Turn(self, text, cancel=None, turn_id=None, queue_claim=claim)
                result = await turn.run()
            except BaseException:
                await abandon_quietly(store, claim)
                raise
            results.append(result)
            if self._turn_index == before:  # ended before committing: the claim was not used
                await abandon_quietly(store, claim)
                return results

    def _queue_store(self) -> SessionStore:
        """The core's store, which must offer the durable queue."""
        store = self.core.store
        if not has_queue(store):
            raise ConfigError(
                f"store {type(store).__name__} has no durable queue "
                "(enqueue, claim_ready, abandon_claim, list_queued); queued input needs one"
            )
        return store

    async def action(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """Call a plugin action by name; an unknown name is a ``PluginError``."""
        entry = self.core.plugins.parts.actions.get(name)
        if entry is None:
            known = ", ".join(sorted(self.core.plugins.parts.actions)) or "none"
            raise PluginError(f"no plugin action {name!r} (registered: {known})")
        return await entry[1](dict(args or {}))

    def _claim(self) -> None:
        if self._closed:
            raise LashError(f"session {self.id!r} is closed")
        if self._busy:
            raise SessionBusyError(f"session {self.id!r} is already running a turn")
        self._busy = True


_TURN_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z
_turn_id_lock = threading.Lock()
_last_turn_value = 0


def new_turn_id() -> str:
    """A fresh turn id: 12 hex digits, 32 bits of seconds since 2025 then 16 random bits.

    Ids grow over time (and strictly within a process), so the stores' keys,
    which embed them, are appended at the end of their B-trees instead of
    splitting pages all over. Every message id of a turn embeds the turn id, so
    it is kept short. Two turns that start in the same second on one session in
    different processes collide with probability 2**-16; the store's revision
    check then lets only one of them commit. Hosts that need stable ids
    (durable replays) pass their own.
    """
    global _last_turn_value
    seconds = (int(time.time()) - _TURN_EPOCH) & 0xFFFFFFFF
    value = (seconds << 16) | secrets.randbits(16)
    with _turn_id_lock:
        if value <= _last_turn_value:
            value = _last_turn_value + 1
        _last_turn_value = value
    return f"{value & 0xFFFFFFFFFFFF:012x}"


class Turn:
    """A prepared turn: ``await turn.run()`` or ``async with turn.stream() as s``."""

    __slots__ = (
        "_cancel",
        "_explicit",
        "_input",
        "_queue_claim",
        "_session",
        "_turn_id",
        "cancellable",
    )
    # ``_explicit``: a caller-chosen id whose committed result is returned, not re-run.

    def __init__(
        self,
        session: Session,
        input: object,
        *,
        cancel: CancelToken | None,
        turn_id: str | None,
        if_committed: Literal["return", "replay"] = "return",
        queue_claim: QueueClaim | None = None,
    ) -> None:
        if if_committed not in ("return", "replay"):
            raise ValueError(f"if_committed must be 'return' or 'replay', got {if_committed!r}")
        self._session = session
        self._input = input
        self._cancel = cancel or CancelToken()
        self._explicit = bool(turn_id) and if_committed == "return"
        self._turn_id = turn_id or new_turn_id()
        self._queue_claim = queue_claim  # a drained claim: its commit consumes it
        self.cancellable = False
        """True while the turn loop runs; cancelling outside that window does nothing
        to the task (before it, the loop sees the token; after it, the commit is kept)."""

    @property
    def id(self) -> str:
        """The turn id (stable across replays when the host supplies it)."""
        return self._turn_id

    def _launch(self, body: Coroutine[Any, Any, TurnResult]) -> asyncio.Task[TurnResult]:
        """Run ``body`` as the turn's task: claims the session, wires cancellation."""
        try:
            self._session._claim()
        except BaseException:
            body.close()
            raise
        task = asyncio.ensure_future(body)
        task.add_done_callback(self._release)

        def cancel_task() -> None:
            if self.cancellable and not task.done():
                task.cancel()

        # A token may outlive the turn (a host reuses one): drop the callback, and
        # with it the finished task, as soon as the task is done.
        forget = self._cancel.on_cancel(cancel_task)
        task.add_done_callback(lambda _task: forget())
        return task

    async def _body(self, sink: Any) -> TurnResult:
        try:
            if self._explicit:
                # A caller-chosen id may name a turn that already committed (a
                # durable host replaying after a crash): return that turn, run nothing.
                landed = await self._session._committed_turn(self._turn_id)
                if landed is not None:
                    return landed
            return await self._session._execute(
                self._input,
                cancel=self._cancel,
                turn_id=self._turn_id,
                sink=sink,
                guard=self,
                queue_claim=self._queue_claim,
            )
        finally:
            # Released here, not only in the done-callback (which runs a loop step
            # later), so a caller can start the next turn as soon as this one ends.
            self._session._busy = False

    def _release(self, _task: asyncio.Task[TurnResult]) -> None:
        self._session._busy = False

    async def run(self) -> TurnResult:
        """Run the turn and return its committed result.

        When a tool switches the session to another agent frame with a task, the
        task runs next in that frame (turn ``{id}:agent-frame:{n}``), up to the
        core's ``max_frame_switches``; the last turn's result is returned.
        """
        result = await self._launch(self._body(None))
        limit = self._session.core.max_frame_switches
        switches = 0
        while (
            isinstance(result.outcome, AgentFrameSwitch)
            and result.outcome.task
            and switches < limit
            and not self._cancel.cancelled
        ):
            switches += 1
            follow = Turn(
                self._session,
                result.outcome.task,
                cancel=self._cancel,
                turn_id=f"{self._turn_id}:agent-frame:{switches}",
                if_committed="return" if self._explicit else "replay",
            )
            result = await follow._launch(follow._body(None))
        return result

    def stream(self) -> TurnStream:
        """Stream the turn's activities: ``async with turn.stream() as s: async for a in s``."""
        return TurnStream(self)


_END = object()


class TurnStream:
    """An async iterator of ``TurnActivity``; ``result`` is set once the turn is done.

    Activities are buffered (up to 64); a slow consumer slows the turn down
    rather than losing activities. Leaving the ``async with`` block before the
    end cancels the turn, which then ends (and commits) as ``Stopped(cancelled)``.
    """

    def __init__(self, turn: Turn) -> None:
        self._turn = turn
        self._queue: asyncio.Queue[Any] = asyncio.Queue(_STREAM_BUFFER)
        self._task: asyncio.Task[TurnResult] | None = None
        self._result: TurnResult | None = None
        self._closed = False

    @property
    def result(self) -> TurnResult:
        """The committed result (after the stream is exhausted or the block exits)."""
        if self._result is None:
            raise LashError("the turn has not finished yet")
        return self._result

    async def _put(self, activity: TurnActivity) -> None:
        if not self._closed:
            await self._queue.put(activity)

    async def _produce(self) -> TurnResult:
        try:
            return await self._turn._body(self._put)
        finally:
            if not self._closed:
                await self._queue.put(_END)

    async def __aenter__(self) -> TurnStream:
        self._task = self._turn._launch(self._produce())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            self._closed = True
            while not self._queue.empty():  # unblock a producer waiting for room
                self._queue.get_nowait()
            self._turn._cancel.cancel("the stream was closed early")
        self._result = await task

    def __aiter__(self) -> AsyncIterator[TurnActivity]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TurnActivity]:
        if self._task is None:
            raise LashError("use the stream inside `async with turn.stream() as stream`")
        while True:
            item = await self._queue.get()
            if item is _END:
                self._result = await self._task
                return
            yield item
