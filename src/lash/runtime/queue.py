"""Queued input: the facade's side of the store's durable queue (``lash.store.queue``).

Queued input lives in the session store, so it survives a crash and every
worker sharing the store sees it. ``Session.enqueue`` stores one batch holding
one ``QueuedTurnInput``. Queued input is text only: the facade never sets
``QueuedTurnInput.attachments``, and a batch that carries attachments or a
session command (queued by other code, straight into the store) is never
half-delivered: a checkpoint gives its claim back and injects nothing, and
``Session.drain`` gives it back and raises ``UnsupportedQueuedWork``.

Delivery ``earliest_safe_boundary`` joins the running turn at its next
checkpoint (the model sees it as a transient user message, never committed);
with no turn running, ``Session.drain`` runs it as a turn. Delivery
``after_current_turn`` always becomes a full turn of its own. The queue is
never reordered: a checkpoint takes only ``earliest_safe_boundary`` batches at
the head, so an ``after_current_turn`` batch at the head blocks those behind it.

Slots: ``after_current_turn`` batches are ``exclusive`` (one turn each);
``earliest_safe_boundary`` batches ``join``, so consecutive ones are claimed
together. Joining: a checkpoint injects one transient message per claimed
batch; a drained claim becomes ONE turn whose input is the texts of its
batches, in queue order, joined with a blank line (``"\\n\\n"``). A batch with
several items joins its items' texts the same way.

A claim is consumed only by the commit of the turn that used it
(``RuntimeCommit.completed_claims``), so queued input vanishes exactly when
that turn lands; a turn that fails first gives its claims back. Leases last
``LashCore(queue_lease_ms=...)`` (default ``DEFAULT_CLAIM_TTL_MS``, 15
minutes), and a ``LeaseKeeper`` renews a running turn's claims every third of
that, so a long turn keeps its input. Only a worker that stops renewing (it
died, or its store was unreachable for a whole lease) loses its batches to
another worker; its commit then fails with ``QueuedWorkClaimExpired`` and the
batches run once, elsewhere.

Under a durable effect host, a checkpoint's outcome is journaled but its claim
lives in process memory: a turn replayed after a crash re-injects the
journaled text without holding the claim, so those batches are delivered again
once the old lease lapses (at least once, not exactly once, on that path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

from ..kernel.messages import InjectedMessage, PluginOrigin, Role

if TYPE_CHECKING:
    from ..store.base import SessionStore
    from ..store.queue import ClaimCompletion, QueueClaim, QueuedBatch, QueuedBatchDraft

_log = logging.getLogger(__name__)

JOIN_SEPARATOR = "\n\n"
"""What joins the texts of a claim's batches into one turn input."""


class Delivery(StrEnum):
    """When queued input reaches the model."""

    EARLIEST_SAFE_BOUNDARY = "earliest_safe_boundary"
    AFTER_CURRENT_TURN = "after_current_turn"


class UnsupportedQueuedWork(Exception):
    """A claimed batch holds something the facade cannot run (a command, attachments).

    The claim is given back, so the batch stays queued until it is cancelled
    (``store.cancel_queued``) or a worker that understands it takes it.
    """

    def __init__(self, session_id: str, batch_id: str, detail: str) -> None:
        super().__init__(f"session {session_id!r}: queued batch {batch_id!r}: {detail}")
        self.session_id = session_id
        self.batch_id = batch_id
        self.detail = detail


_worker: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's queue worker id (a fresh one after ``fork``)."""
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        _worker = (pid, f"worker:{pid}:{secrets.token_hex(6)}")
    return _worker[1]


def turn_input_draft(
    session_id: str, text: str, delivery: Delivery | str, source_key: str | None
) -> QueuedBatchDraft:
    """The batch ``Session.enqueue`` stores: ``TypeError``/``ValueError`` say what is wrong."""
    from ..store.queue import QueuedBatchDraft, QueuedTurnInput, SlotPolicy

    if not isinstance(text, str):
        raise TypeError(f"queued input must be a string, got {type(text).__name__}")
    try:
        when = Delivery(delivery)
    except ValueError:
        allowed = ", ".join(repr(d.value) for d in Delivery)
        raise ValueError(f"delivery must be one of {allowed}, got {delivery!r}") from None
    if source_key is not None and (not isinstance(source_key, str) or not source_key.strip()):
        raise ValueError(f"source_key must be a non-blank string, got {source_key!r}")
    slot = SlotPolicy.JOIN if when is Delivery.EARLIEST_SAFE_BOUNDARY else SlotPolicy.EXCLUSIVE
    return QueuedBatchDraft(
        session_id=session_id,
        payloads=(QueuedTurnInput(text=text),),
        source_key=source_key,
        delivery=when,
        slot=slot,
    )


def batch_text(batch: QueuedBatch) -> str:
    """The batch's text (its items' texts joined); ``UnsupportedQueuedWork`` otherwise."""
    from ..store.queue import QueuedTurnInput

    texts = []
    for item in batch.items:
        payload = item.payload
        if not isinstance(payload, QueuedTurnInput):
            detail = f"item {item.item_id!r} is a {payload.kind!r} session command"
            raise UnsupportedQueuedWork(batch.session_id, batch.batch_id, detail)
        if payload.attachments:
            detail = f"item {item.item_id!r} carries attachments (queued input is text only)"
            raise UnsupportedQueuedWork(batch.session_id, batch.batch_id, detail)
        texts.append(payload.text)
    return JOIN_SEPARATOR.join(texts)


def claim_text(claim: QueueClaim) -> str:
    """A drained claim's turn input: its batches' texts in queue order, blank-line joined."""
    return JOIN_SEPARATOR.join(batch_text(b) for b in claim.batches)


def as_injected(batch: QueuedBatch) -> InjectedMessage:
    """A queued batch as a transient user message for a checkpoint."""
    return InjectedMessage(
        role=Role.USER,
        content=batch_text(batch),
        origin=PluginOrigin(plugin_id=f"queue:{batch.batch_id}", transient=True),
    )


def has_queue(store: object) -> bool:
    """True when ``store`` offers the durable queue (custom stores may not)."""
    return all(
        callable(getattr(store, name, None))
        for name in ("enqueue", "claim_ready", "abandon_claim", "list_queued")
    )


async def abandon_quietly(store: SessionStore, claim: QueueClaim) -> None:
    """Give ``claim`` back; a store error here only delays the batches until the lease lapses."""
    with contextlib.suppress(Exception):
        await store.abandon_claim(claim)


async def claim_idle(
    store: SessionStore, session_id: str, owner_id: str, *, ttl_ms: int | None = None
) -> QueueClaim | None:
    """The next group a drain should run as a turn, claimed; None when there is none for us.

    None also when an earlier batch is under another live claim (another
    worker is running this session's queue, or a turn elsewhere took it at a
    checkpoint): taking later batches then would run them out of order, and
    concurrently with that worker's turn. The claim just made is given back.
    """
    from ..store.queue import CHECKPOINT_MAX, DEFAULT_CLAIM_TTL_MS, ClaimBoundary

    if not await store.list_queued(session_id, pending_only=True):
        return None  # nothing to claim (and no write transaction spent finding out)
    claim = await store.claim_ready(
        session_id,
        owner_id=owner_id,
        boundary=ClaimBoundary.IDLE,
        max_batches=CHECKPOINT_MAX,
        ttl_ms=ttl_ms or DEFAULT_CLAIM_TTL_MS,
    )
    if claim is None:
        return None
    head = claim.batches[0].enqueue_seq
    mine = set(claim.batch_ids)
    now = claim.claimed_at_ms
    earlier = [
        b
        for b in await store.list_queued(session_id)
        if b.enqueue_seq < head and b.batch_id not in mine and b.available_at_ms <= now
    ]
    if earlier:
        await abandon_quietly(store, claim)
        return None
    return claim


class TurnClaims:
    """The checkpoint claims of one running turn (owner: the turn id).

    The runner ``take``s at a checkpoint and ``confirm``s once the machine has
    accepted the injection; the facade commits the confirmed claims'
    ``completions`` with the turn and gives the rest back (``release``).
    """

    __slots__ = ("_confirmed", "_store", "_taken", "owner_id", "session_id", "ttl_ms")

    def __init__(
        self, store: SessionStore, session_id: str, owner_id: str, *, ttl_ms: int | None = None
    ) -> None:
        from ..store.queue import DEFAULT_CLAIM_TTL_MS

        self._store = store
        self.session_id = session_id
        self.owner_id = owner_id
        self.ttl_ms = ttl_ms or DEFAULT_CLAIM_TTL_MS
        self._taken: list[QueueClaim] = []
        self._confirmed: list[QueueClaim] = []

    async def take(self) -> QueueClaim | None:
        """Claim the ``earliest_safe_boundary`` batches at the head of the queue, if any.

        A group holding something the facade cannot inject is given back at
        once and nothing is injected (the queue is not reordered around it).
        """
        from ..store.queue import CHECKPOINT_MAX, ClaimBoundary

        pending = await self._store.list_queued(self.session_id, pending_only=True)
        if not any(b.delivery is Delivery.EARLIEST_SAFE_BOUNDARY for b in pending):
            return None  # a checkpoint claims only such batches: skip the write
        claim = await self._store.claim_ready(
            self.session_id,
            owner_id=self.owner_id,
            boundary=ClaimBoundary.CHECKPOINT,
            max_batches=CHECKPOINT_MAX,
            ttl_ms=self.ttl_ms,
        )
        if claim is None:
            return None
        try:
            for batch in claim.batches:
                batch_text(batch)
        except UnsupportedQueuedWork:
            await abandon_quietly(self._store, claim)
            return None
        self._taken.append(claim)
        return claim

    def held(self) -> tuple[QueueClaim, ...]:
        """Every claim the turn holds (taken or confirmed), for lease renewal."""
        return (*self._confirmed, *self._taken)

    def confirm(self) -> None:
        """The machine accepted what was taken: those claims ride on the turn's commit."""
        self._confirmed.extend(self._taken)
        self._taken.clear()

    def completions(self) -> tuple[ClaimCompletion, ...]:
        """What the turn's commit carries to consume the confirmed claims."""
        return tuple(c.completion() for c in self._confirmed)

    async def release(self, *, confirmed: bool = False) -> None:
        """Give back the claims not confirmed (and, with ``confirmed``, the confirmed too)."""
        claims = self._taken + (self._confirmed if confirmed else [])
        self._taken.clear()
        if confirmed:
            self._confirmed.clear()
        for claim in claims:
            await abandon_quietly(self._store, claim)


class LeaseKeeper:
    """Renews a running turn's queue claims every third of their lease until it ends.

    ``claims`` is read afresh at each round, so claims taken mid-turn are kept
    too. A claim another worker took over is dropped from renewal (the turn's
    commit will then fail with ``QueuedWorkClaimExpired``); a store error is
    logged and retried at the next round.
    """

    __slots__ = ("_claims", "_lost", "_store", "_task", "ttl_ms")

    def __init__(
        self, store: SessionStore, ttl_ms: int, claims: Callable[[], Iterable[QueueClaim]]
    ) -> None:
        self._store = store
        self.ttl_ms = ttl_ms
        self._claims = claims
        self._lost: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.create_task(self._keep(), name="lash-queue-lease")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def renew(self) -> None:
        """One round: extend every held claim's lease."""
        from ..store.queue import QueuedWorkClaimExpired

        for claim in tuple(self._claims()):
            if claim.claim_id in self._lost:
                continue
            try:
                await self._store.renew_claim(claim, ttl_ms=self.ttl_ms)
            except QueuedWorkClaimExpired:
                self._lost.add(claim.claim_id)
            except Exception as exc:  # the next round tries again
                _log.warning("renewing queue claim %s failed: %s", claim.claim_id, exc)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self.renew()
