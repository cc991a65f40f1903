"""Durable queued work: the one way input reaches a stored session while it is busy, or later.

A *batch* is one enqueued unit (a user's turn input, a session command) for one
session. Workers *claim* batches under a lease, and a claim is *completed* only
inside the turn commit that consumed it, so consuming work and committing the
turn it produced are one atomic step. This module holds the values, the pure
selection rules, and three backends with identical behaviour:

* ``MemoryQueue``: every session's queue in process memory (for ``MemoryStore``);
* SQLite: ``SQLITE_QUEUE_SCHEMA`` plus ``sqlite_*`` functions on an open
  ``sqlite3.Connection`` the caller has put inside ``BEGIN IMMEDIATE``;
* PostgreSQL: ``postgres_queue_schema`` plus ``async postgres_*`` functions on a
  psycopg ``AsyncConnection`` inside a transaction the caller opened.

The SQL functions never begin, commit or roll back the caller's transaction.
Each one either does all its writes or raises (or returns ``None``) having
written nothing, so the caller may commit or roll back as it likes. Database
errors propagate as the driver's exceptions; rows that do not decode raise
``StoreCorruptError``. Times are epoch milliseconds passed in by the caller.

Rules (the same on every backend):

* A batch is *live-claimed* when it holds a lease token that expires after
  ``now``; it is *available* when ``available_at_ms <= now``. Its
  *candidates* are the session's available batches that are not live-claimed,
  in ``enqueue_seq`` order.
* ``enqueue``: a batch of the same session with the same ``source_key`` that
  still exists is returned unchanged (the first payload wins); otherwise a new
  batch gets the next store-wide ``enqueue_seq`` and an unguessable
  ``batch_id``. Dedupe lapses once that batch is completed or cancelled.
* ``claim_ready``: the first candidate is the head. At a ``checkpoint``
  boundary a head whose delivery is not ``earliest_safe_boundary`` blocks the
  claim (``None``; the queue is never reordered). An ``exclusive`` head is
  claimed alone; a ``join`` head takes the following candidates while they are
  ``join`` with the head's delivery and merge key, up to ``max_batches``.
  Ineligible batches (not yet available, or live-claimed) between candidates
  are skipped, not a barrier: the semantics of Rust lash's SQLite store, which
  all three backends follow (its in-memory store ended the group at such a
  batch instead). The claim's fencing token is the head's counter + 1;
  every claimed batch's counter goes up by one; the claim id is
  ``qwc:{head enqueue_seq}:{fencing}``; the lease token is 32 random hex
  digits; the lease expires at ``now + ttl_ms``. Every batch is claimed, or
  none is (``None``).
* Expiry alone does not invalidate a claim: its holder may still renew or
  complete it until another claim takes the batches (writing a new token).
* ``complete``: for each completion, exactly the listed batches, and no others,
  must still hold its ``(claim_id, lease_token)``; otherwise
  ``QueuedWorkClaimExpired`` and nothing is deleted. Then they are deleted.

On PostgreSQL, a claim locks the rows it takes, and only those, with ``FOR
UPDATE SKIP LOCKED``: a batch another transaction is claiming right now counts
as live-claimed, so competing workers never wait for each other and never
claim one batch twice. The end of a join group is read, not locked, so a batch
of another kind that a concurrent transaction is claiming still ends the group
(a smaller claim, never a wrong one). A refused claim (a checkpoint blocked by
its head, an exact claim that does not match) writes nothing but keeps its
head locked until the caller's transaction ends. ``enqueue_seq`` comes from an
identity column there, so enqueues that run concurrently may become visible
out of ``enqueue_seq`` order.
"""

from __future__ import annotations

import builtins
import re
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec

from ..kernel.attachments import AttachmentRef
from ..runtime.queue import Delivery as QueueDelivery
from .base import StoreCorruptError, StoreError, check_session_id, check_text

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = [
    "CHECKPOINT_MAX",
    "DEFAULT_CLAIM_TTL_MS",
    "SQLITE_QUEUE_SCHEMA",
    "ClaimBoundary",
    "ClaimCompletion",
    "MemoryQueue",
    "QueueClaim",
    "QueueDelivery",
    "QueuePayload",
    "QueuedBatch",
    "QueuedBatchDraft",
    "QueuedCommand",
    "QueuedItem",
    "QueuedTurnInput",
    "QueuedWorkClaimExpired",
    "SlotPolicy",
    "check_completions",
    "postgres_abandon",
    "postgres_cancel",
    "postgres_claim_batches",
    "postgres_claim_ready",
    "postgres_complete",
    "postgres_enqueue",
    "postgres_list",
    "postgres_queue_schema",
    "postgres_renew",
    "sqlite_abandon",
    "sqlite_cancel",
    "sqlite_claim_batches",
    "sqlite_claim_ready",
    "sqlite_complete",
    "sqlite_enqueue",
    "sqlite_list",
    "sqlite_renew",
    "validate_draft",
]

DEFAULT_CLAIM_TTL_MS: Final = 15 * 60 * 1000
"""How long a claim's lease lasts unless renewed (15 minutes)."""

CHECKPOINT_MAX: Final = 64
"""The most batches one drain (a checkpoint or an idle drain) claims at once."""

_INT64_MAX: Final = 2**63 - 1
_TABLE: Final = "queued_work_batches"


class SlotPolicy(StrEnum):
    """Whether a batch may share a claim with its neighbours."""

    JOIN = "join"
    EXCLUSIVE = "exclusive"


class ClaimBoundary(StrEnum):
    """Where a claim is made: at an active turn's checkpoint, or with the session idle."""

    CHECKPOINT = "checkpoint"
    IDLE = "idle"


class QueuedTurnInput(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag="turn_input",
):
    """User input to deliver to the session."""

    text: str
    attachments: tuple[AttachmentRef, ...] = ()


class QueuedCommand(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag="session_command",
):
    """A session command (``kind`` such as ``reset_session``), keyed for idempotency."""

    kind: str
    reason: str = ""
    key: str


QueuePayload: TypeAlias = QueuedTurnInput | QueuedCommand
"""What one queued item carries, tagged by ``type``."""


class QueuedBatchDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A batch to enqueue (see ``validate_draft`` for what is accepted)."""

    session_id: str
    payloads: tuple[QueuePayload, ...]
    source_key: str | None = None
    """Makes the enqueue idempotent while a batch with this key exists in the session."""
    delivery: QueueDelivery = QueueDelivery.EARLIEST_SAFE_BOUNDARY
    slot: SlotPolicy = SlotPolicy.JOIN
    merge_key: str | None = None
    """Join batches share a claim only with batches of the same merge key (None included)."""
    available_at_ms: int = 0
    """The batch is not claimed before this time (epoch ms)."""


class QueuedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One payload of a stored batch; ``item_id`` is ``{batch_id}:item:{index}``."""

    item_id: str
    payload: QueuePayload


class QueuedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """A stored batch."""

    batch_id: str
    session_id: str
    enqueue_seq: int
    enqueued_at_ms: int
    source_key: str | None
    delivery: QueueDelivery
    slot: SlotPolicy
    merge_key: str | None
    available_at_ms: int
    items: tuple[QueuedItem, ...]


class ClaimCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """What a turn commit carries to consume a claim's batches."""

    session_id: str
    claim_id: str
    lease_token: str
    batch_ids: tuple[str, ...]


class QueueClaim(msgspec.Struct, frozen=True, kw_only=True):
    """A lease on some of a session's batches, in queue order."""

    session_id: str
    claim_id: str
    owner_id: str
    lease_token: str
    fencing_token: int
    claimed_at_ms: int
    expires_at_ms: int
    batches: tuple[QueuedBatch, ...]

    @property
    def batch_ids(self) -> tuple[str, ...]:
        """The claimed batches' ids, in queue order."""
        return tuple(b.batch_id for b in self.batches)

    def completion(self) -> ClaimCompletion:
        """The completion a turn commit carries to consume this claim."""
        return ClaimCompletion(
            session_id=self.session_id,
            claim_id=self.claim_id,
            lease_token=self.lease_token,
            batch_ids=self.batch_ids,
        )


class QueuedWorkClaimExpired(StoreError):
    """A claim no longer holds its batches: re-claimed by another worker, cancelled or completed."""

    def __init__(self, session_id: str, claim_id: str, detail: str) -> None:
        super().__init__(
            f"session {session_id!r}: queued work claim {claim_id!r} is missing or expired: "
            f"{detail}"
        )
        self.session_id = session_id
        self.claim_id = claim_id
        self.detail = detail


# ---------------------------------------------------------------------- validation


_check_text = check_text


def _check_int(what: str, value: object) -> int:
    """A non-negative integer that fits a signed 64-bit column, else ``ValueError``."""
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{what} must be between 0 and 2**63-1, got {value}")
    return value


def _check_enum(what: str, enum: type[Any], value: object) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}") from None


def _check_payload(where: str, payload: object) -> None:
    if isinstance(payload, QueuedTurnInput):
        _check_text(f"{where} text", payload.text, blank_ok=True)
        if not isinstance(payload.attachments, tuple):
            raise ValueError(f"{where} attachments must be a tuple of AttachmentRef")
        for j, ref in enumerate(payload.attachments):
            if not isinstance(ref, AttachmentRef):
                raise ValueError(
                    f"{where} attachment {j} must be an AttachmentRef, got {type(ref).__name__}"
                )
            _check_text(f"{where} attachment {j} mime", ref.mime, blank_ok=True)
            if ref.label is not None:
                _check_text(f"{where} attachment {j} label", ref.label, blank_ok=True)
    elif isinstance(payload, QueuedCommand):
        _check_text(f"{where} command kind", payload.kind)
        _check_text(f"{where} command key", payload.key)
        _check_text(f"{where} command reason", payload.reason, blank_ok=True)
    else:
        raise ValueError(
            f"{where} must be a QueuedTurnInput or QueuedCommand, got {type(payload).__name__}"
        )


def validate_draft(draft: QueuedBatchDraft) -> QueuedBatchDraft:
    """``draft`` checked, with its policies as enum members; ``ValueError`` says what is wrong.

    Refused: a blank or unstorable session id; no payloads, or one that is not a
    ``QueuedTurnInput``/``QueuedCommand`` or holds a command with a blank kind
    or key; a blank ``source_key`` or ``merge_key``; an unknown delivery or
    slot policy; an ``available_at_ms`` that is negative or not an integer.
    Strings must not contain NUL or lone surrogates (PostgreSQL cannot store
    them). Every backend calls this before it writes anything.
    """
    if not isinstance(draft, QueuedBatchDraft):
        raise ValueError(f"expected a QueuedBatchDraft, got {type(draft).__name__}")
    try:
        session_id = check_session_id(draft.session_id)
    except ValueError as exc:
        raise ValueError(f"queued batch: {exc}") from None
    where = f"queued batch for session {session_id!r}:"
    payloads = draft.payloads
    if not isinstance(payloads, tuple | list):
        raise ValueError(f"{where} payloads must be a tuple, got {type(payloads).__name__}")
    if not payloads:
        raise ValueError(f"{where} payloads must not be empty")
    for i, payload in enumerate(payloads):
        _check_payload(f"{where} payload {i}", payload)
    if draft.source_key is not None:
        _check_text(f"{where} source_key", draft.source_key)
    if draft.merge_key is not None:
        _check_text(f"{where} merge_key", draft.merge_key)
    delivery = _check_enum(f"{where} delivery", QueueDelivery, draft.delivery)
    slot = _check_enum(f"{where} slot", SlotPolicy, draft.slot)
    _check_int(f"{where} available_at_ms", draft.available_at_ms)
    if (
        delivery is draft.delivery
        and slot is draft.slot
        and isinstance(payloads, tuple)
        and session_id is draft.session_id
    ):
        return draft
    return msgspec.structs.replace(
        draft, delivery=delivery, slot=slot, payloads=tuple(payloads), session_id=session_id
    )


def _check_claim_args(
    session_id: object, owner_id: object, ttl_ms: object, now_ms: object
) -> tuple[str, str, int, int]:
    sid = check_session_id(session_id)
    owner = _check_text("owner_id", owner_id)
    ttl = _check_int("ttl_ms", ttl_ms)
    now = _check_int("now_ms", now_ms)
    return sid, owner, ttl, now


def _check_claim(claim: object) -> QueueClaim:
    if not isinstance(claim, QueueClaim):
        raise ValueError(f"expected a QueueClaim, got {type(claim).__name__}")
    return claim


def _check_batch_ids(batch_ids: object) -> tuple[str, ...]:
    if isinstance(batch_ids, str) or not isinstance(batch_ids, Iterable):
        raise ValueError(f"batch_ids must be a sequence of batch ids, got {batch_ids!r}")
    ids = tuple(batch_ids)
    for batch_id in ids:
        _check_text("batch id", batch_id)
    if len(set(ids)) != len(ids):
        raise ValueError(f"batch ids must be distinct, got {list(ids)!r}")
    return ids


def check_completions(
    completions: Iterable[ClaimCompletion], *, session_id: str | None = None
) -> tuple[ClaimCompletion, ...]:
    """The completions, checked before any store is touched.

    ``ValueError`` for a malformed completion (blank ids, no batch ids, a batch
    listed twice anywhere); ``QueuedWorkClaimExpired`` when ``session_id`` is
    given and a completion names another session (a commit may complete only
    its own session's claims).
    """
    items = tuple(completions)
    seen: set[str] = set()
    for c in items:
        if not isinstance(c, ClaimCompletion):
            raise ValueError(f"expected a ClaimCompletion, got {type(c).__name__}")
        check_session_id(c.session_id)
        _check_text("completion claim_id", c.claim_id)
        _check_text("completion lease_token", c.lease_token)
        ids = _check_batch_ids(c.batch_ids)
        if not ids:
            raise ValueError(f"completion of claim {c.claim_id!r} lists no batch ids")
        if seen.intersection(ids):
            raise ValueError(
                f"completion of claim {c.claim_id!r}: batch {sorted(seen.intersection(ids))[0]!r} "
                "is listed by more than one completion"
            )
        seen.update(ids)
        if session_id is not None and c.session_id != session_id:
            raise QueuedWorkClaimExpired(
                c.session_id,
                c.claim_id,
                f"a commit to session {session_id!r} cannot complete another session's claim",
            )
    return items


# ---------------------------------------------------------------------- shared rules


def _group_size(
    keys: Sequence[tuple[QueueDelivery, SlotPolicy, str | None]],
    boundary: ClaimBoundary,
    max_batches: int,
) -> int:
    """How many of the leading candidates one claim takes (0: none).

    ``keys`` are the candidates' ``(delivery, slot, merge_key)`` in queue order.
    A claim is always a prefix of the candidates.
    """
    if not keys or max_batches == 0:
        return 0
    delivery, slot, merge_key = keys[0]
    at_checkpoint = boundary is ClaimBoundary.CHECKPOINT
    if at_checkpoint and delivery is not QueueDelivery.EARLIEST_SAFE_BOUNDARY:
        return 0
    if slot is SlotPolicy.EXCLUSIVE:
        return 1
    n = 1
    while n < min(max_batches, len(keys)):
        d, s, m = keys[n]
        if s is not SlotPolicy.JOIN or d is not delivery or m != merge_key:
            break
        n += 1
    return n


def _claim_id(head_seq: int, fencing: int) -> str:
    return f"qwc:{head_seq}:{fencing}"


def _new_batch_id() -> str:
    return f"qwb:{secrets.token_hex(16)}"


def _expires(now_ms: int, ttl_ms: int) -> int:
    return min(now_ms + ttl_ms, _INT64_MAX)


def _items(batch_id: str, payloads: Sequence[QueuePayload]) -> tuple[QueuedItem, ...]:
    return tuple(
        QueuedItem(item_id=f"{batch_id}:item:{i}", payload=p) for i, p in enumerate(payloads)
    )


def _batch_from_draft(draft: QueuedBatchDraft, batch_id: str, seq: int, now_ms: int) -> QueuedBatch:
    return QueuedBatch(
        batch_id=batch_id,
        session_id=draft.session_id,
        enqueue_seq=seq,
        enqueued_at_ms=now_ms,
        source_key=draft.source_key,
        delivery=draft.delivery,
        slot=draft.slot,
        merge_key=draft.merge_key,
        available_at_ms=draft.available_at_ms,
        items=_items(batch_id, draft.payloads),
    )


def _check_held(
    completion: ClaimCompletion | QueueClaim, held: set[str], wanted: Sequence[str]
) -> None:
    """Raise unless exactly the ``wanted`` batches hold the claim."""
    if held == set(wanted):
        return
    missing = [b for b in wanted if b not in held]
    if missing:
        detail = (
            f"{len(missing)} of its {len(wanted)} batches no longer hold it "
            f"(first: {missing[0]!r}); they were re-claimed, cancelled or completed"
        )
    else:
        detail = f"it holds {len(held)} batches, not the {len(wanted)} listed"
    raise QueuedWorkClaimExpired(completion.session_id, completion.claim_id, detail)


# ---------------------------------------------------------------------- in memory


class _Entry:
    __slots__ = ("batch", "claim_id", "claimed_at_ms", "expires_at_ms", "fencing", "owner", "token")

    def __init__(self, batch: QueuedBatch) -> None:
        self.batch = batch
        self.claim_id: str | None = None
        self.owner: str | None = None
        self.token: str | None = None
        self.fencing = 0
        self.claimed_at_ms = 0
        self.expires_at_ms = 0

    def live(self, now_ms: int) -> bool:
        return self.token is not None and self.expires_at_ms > now_ms

    def release(self) -> None:
        self.claim_id = self.owner = self.token = None
        self.claimed_at_ms = self.expires_at_ms = 0


class MemoryQueue:
    """Every session's queued work, in process memory, for ``MemoryStore``.

    Methods never await and so are atomic under asyncio; each either applies
    completely or raises having changed nothing. ``enqueue_seq`` is monotonic
    across all sessions of one ``MemoryQueue``.
    """

    __slots__ = ("_seq", "_sessions", "_sources")

    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, _Entry]] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self._seq = 0

    def enqueue(self, draft: QueuedBatchDraft, now_ms: int) -> QueuedBatch:
        """Store ``draft`` as a new batch, or return the batch its source key names."""
        draft = validate_draft(draft)
        now = _check_int("now_ms", now_ms)
        queue = self._sessions.get(draft.session_id)
        if draft.source_key is not None and queue is not None:
            known = self._sources.get((draft.session_id, draft.source_key))
            if known is not None:
                return queue[known].batch
        self._seq += 1
        batch = _batch_from_draft(draft, _new_batch_id(), self._seq, now)
        if queue is None:
            queue = self._sessions[draft.session_id] = {}
        queue[batch.batch_id] = _Entry(batch)
        if draft.source_key is not None:
            self._sources[(draft.session_id, draft.source_key)] = batch.batch_id
        return batch

    def claim_ready(
        self,
        session_id: str,
        owner_id: str,
        boundary: ClaimBoundary,
        ttl_ms: int,
        max_batches: int,
        now_ms: int,
    ) -> QueueClaim | None:
        """Claim the next ready group of ``session_id``'s batches (see the module rules)."""
        sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
        edge = _check_enum("boundary", ClaimBoundary, boundary)
        limit = _check_int("max_batches", max_batches)
        return self._claim(sid, owner, edge, ttl, limit, now, None)

    def claim_batches(
        self,
        session_id: str,
        batch_ids: Sequence[str],
        owner_id: str,
        ttl_ms: int,
        now_ms: int,
        *,
        boundary: ClaimBoundary = ClaimBoundary.IDLE,
    ) -> QueueClaim | None:
        """Claim exactly ``batch_ids`` if they are, in order, the group a claim would take now.

        That is ``claim_ready`` with ``max_batches=len(batch_ids)``, kept only
        when its ids equal ``batch_ids``: the head is never skipped. Otherwise
        (no ids, unknown ids, another order) ``None``, and nothing is written:
        Rust lash claims and then abandons instead, which would also bump
        the head's fencing counter and drop an expired earlier claim.
        """
        sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
        ids = _check_batch_ids(batch_ids)
        edge = _check_enum("boundary", ClaimBoundary, boundary)
        if not ids:
            return None
        return self._claim(sid, owner, edge, ttl, len(ids), now, ids)

    def renew(self, claim: QueueClaim, ttl_ms: int, now_ms: int) -> QueueClaim:
        """Extend the lease to ``now + ttl``; ``QueuedWorkClaimExpired`` if it was lost."""
        claim = _check_claim(claim)
        ttl = _check_int("ttl_ms", ttl_ms)
        now = _check_int("now_ms", now_ms)
        held = self._held(claim.session_id, claim.claim_id, claim.lease_token)
        _check_held(claim, {e.batch.batch_id for e in held}, claim.batch_ids)
        expires = _expires(now, ttl)
        for entry in held:
            entry.expires_at_ms = expires
        return msgspec.structs.replace(claim, expires_at_ms=expires)

    def abandon(self, claim: QueueClaim) -> None:
        """Release the claim's batches (their fencing counters stay); idempotent."""
        claim = _check_claim(claim)
        for entry in self._held(claim.session_id, claim.claim_id, claim.lease_token):
            entry.release()

    def cancel(self, session_id: str, batch_id: str, now_ms: int) -> QueuedBatch | None:
        """Delete and return the batch unless it is live-claimed or unknown (then ``None``)."""
        sid = check_session_id(session_id)
        _check_text("batch id", batch_id)
        now = _check_int("now_ms", now_ms)
        queue = self._sessions.get(sid)
        entry = None if queue is None else queue.get(batch_id)
        if entry is None or entry.live(now):
            return None
        self._remove(entry.batch)
        return entry.batch

    def list(self, session_id: str, pending_only: bool, now_ms: int) -> tuple[QueuedBatch, ...]:
        """The session's batches in queue order; ``pending_only`` leaves out live-claimed ones."""
        sid = check_session_id(session_id)
        now = _check_int("now_ms", now_ms)
        queue = self._sessions.get(sid, {})
        return tuple(e.batch for e in queue.values() if not (pending_only and e.live(now)))

    def verify(
        self, completions: Iterable[ClaimCompletion], *, session_id: str | None = None
    ) -> tuple[ClaimCompletion, ...]:
        """Check ``completions`` as ``complete`` does, changing nothing; returns them."""
        items = check_completions(completions, session_id=session_id)
        for c in items:
            held = self._held(c.session_id, c.claim_id, c.lease_token)
            _check_held(c, {e.batch.batch_id for e in held}, c.batch_ids)
        return items

    def complete(
        self, completions: Iterable[ClaimCompletion], *, session_id: str | None = None
    ) -> None:
        """Delete the completed batches: all checked first, then all deleted, or none.

        ``session_id`` (the committing session) makes a completion for another
        session fail; see ``check_completions``.
        """
        items = self.verify(completions, session_id=session_id)
        for c in items:
            queue = self._sessions[c.session_id]
            for batch_id in c.batch_ids:
                self._remove(queue[batch_id].batch)

    # -- helpers

    def _claim(
        self,
        session_id: str,
        owner: str,
        boundary: ClaimBoundary,
        ttl: int,
        limit: int,
        now: int,
        expect: tuple[str, ...] | None,
    ) -> QueueClaim | None:
        if limit == 0:
            return None
        queue = self._sessions.get(session_id, {})
        candidates: builtins.list[_Entry] = []
        for entry in queue.values():
            if len(candidates) >= limit:
                break
            if entry.batch.available_at_ms <= now and not entry.live(now):
                candidates.append(entry)
        keys = [(e.batch.delivery, e.batch.slot, e.batch.merge_key) for e in candidates]
        group = candidates[: _group_size(keys, boundary, limit)]
        if not group:
            return None
        if expect is not None and tuple(e.batch.batch_id for e in group) != expect:
            return None
        fencing = group[0].fencing + 1
        claim_id = _claim_id(group[0].batch.enqueue_seq, fencing)
        token = secrets.token_hex(16)
        expires = _expires(now, ttl)
        for entry in group:
            entry.claim_id, entry.owner, entry.token = claim_id, owner, token
            entry.fencing += 1
            entry.claimed_at_ms, entry.expires_at_ms = now, expires
        return QueueClaim(
            session_id=session_id,
            claim_id=claim_id,
            owner_id=owner,
            lease_token=token,
            fencing_token=fencing,
            claimed_at_ms=now,
            expires_at_ms=expires,
            batches=tuple(e.batch for e in group),
        )

    def _held(self, session_id: str, claim_id: str, token: str) -> tuple[_Entry, ...]:
        queue = self._sessions.get(session_id, {})
        return tuple(e for e in queue.values() if e.claim_id == claim_id and e.token == token)

    def _remove(self, batch: QueuedBatch) -> None:
        queue = self._sessions[batch.session_id]
        del queue[batch.batch_id]
        if not queue:
            del self._sessions[batch.session_id]
        if batch.source_key is not None:
            self._sources.pop((batch.session_id, batch.source_key), None)


# ---------------------------------------------------------------------- SQL rows

_COLUMNS: Final = (
    "enqueue_seq, batch_id, session_id, source_key, delivery, slot, merge_key,"
    " available_at_ms, enqueued_at_ms, payloads_json, claim_fencing"
)
"""The columns every batch read selects, in ``_Row`` order."""

_Row: TypeAlias = tuple[Any, ...]
_PAYLOADS_JSON = msgspec.json.Encoder()
_PAYLOADS_DECODER = msgspec.json.Decoder(tuple[QueuePayload, ...])
_MSGSPEC_PATH = re.compile(r" - at `(.*)`$")


def _encode_payloads(payloads: Sequence[QueuePayload]) -> str:
    return _PAYLOADS_JSON.encode(tuple(payloads)).decode()


def _row_keys(row: _Row) -> tuple[QueueDelivery, SlotPolicy, str | None]:
    """A row's ``(delivery, slot, merge_key)``, decoded strictly."""
    session_id, batch_id = row[2], row[1]
    try:
        delivery = QueueDelivery(row[4])
    except ValueError:
        raise StoreCorruptError(
            session_id, _TABLE, batch_id, f"unknown delivery {row[4]!r}", path="delivery"
        ) from None
    try:
        slot = SlotPolicy(row[5])
    except ValueError:
        raise StoreCorruptError(
            session_id, _TABLE, batch_id, f"unknown slot policy {row[5]!r}", path="slot"
        ) from None
    return delivery, slot, row[6]


def _row_batch(row: _Row) -> QueuedBatch:
    """A selected row as a ``QueuedBatch``; a row that does not decode is ``StoreCorruptError``."""
    seq, batch_id, session_id, source_key = row[0], row[1], row[2], row[3]
    delivery, slot, merge_key = _row_keys(row)
    data = row[9]
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        payloads = _PAYLOADS_DECODER.decode(data)
    except (msgspec.MsgspecError, TypeError) as exc:
        text = str(exc)
        match = _MSGSPEC_PATH.search(text)
        path = "payloads_json"
        if match is not None:
            text = text[: match.start()]
            path = f"payloads_json{match.group(1)[1:]}"
        raise StoreCorruptError(session_id, _TABLE, batch_id, text, path=path) from exc
    except ValueError as exc:  # an AttachmentRef refused its own fields
        raise StoreCorruptError(
            session_id, _TABLE, batch_id, str(exc), path="payloads_json"
        ) from exc
    if not payloads:
        raise StoreCorruptError(
            session_id, _TABLE, batch_id, "a batch with no payloads", path="payloads_json"
        )
    return QueuedBatch(
        batch_id=batch_id,
        session_id=session_id,
        enqueue_seq=seq,
        enqueued_at_ms=row[8],
        source_key=source_key,
        delivery=delivery,
        slot=slot,
        merge_key=merge_key,
        available_at_ms=row[7],
        items=_items(batch_id, payloads),
    )


def _plan_claim(
    rows: Sequence[_Row],
    session_id: str,
    owner: str,
    boundary: ClaimBoundary,
    ttl: int,
    limit: int,
    now: int,
    expect: tuple[str, ...] | None,
) -> tuple[QueueClaim, list[str]] | None:
    """The claim the candidate ``rows`` yield (not yet written), or None."""
    keys = [_row_keys(r) for r in rows]
    group = rows[: _group_size(keys, boundary, limit)]
    if not group:
        return None
    ids = [r[1] for r in group]
    if expect is not None and tuple(ids) != expect:
        return None
    fencing = int(group[0][10]) + 1
    claim = QueueClaim(
        session_id=session_id,
        claim_id=_claim_id(group[0][0], fencing),
        owner_id=owner,
        lease_token=secrets.token_hex(16),
        fencing_token=fencing,
        claimed_at_ms=now,
        expires_at_ms=_expires(now, ttl),
        batches=tuple(_row_batch(r) for r in group),
    )
    return claim, ids


# ---------------------------------------------------------------------- SQLite

SQLITE_QUEUE_SCHEMA: Final[tuple[str, ...]] = (
    # AUTOINCREMENT: enqueue_seq never reuses the number of a deleted batch, so
    # it is monotonic for the life of the database (and claim ids never repeat).
    """CREATE TABLE IF NOT EXISTS queued_work_batches (
        enqueue_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        source_key TEXT,
        delivery TEXT NOT NULL,
        slot TEXT NOT NULL,
        merge_key TEXT,
        available_at_ms INTEGER NOT NULL,
        enqueued_at_ms INTEGER NOT NULL,
        payloads_json TEXT NOT NULL,
        claim_id TEXT,
        claim_owner_id TEXT,
        claim_token TEXT,
        claim_fencing INTEGER NOT NULL DEFAULT 0,
        claim_claimed_at_ms INTEGER NOT NULL DEFAULT 0,
        claim_expires_at_ms INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS queued_work_source
        ON queued_work_batches (session_id, source_key) WHERE source_key IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS queued_work_order
        ON queued_work_batches (session_id, enqueue_seq)""",
    """CREATE INDEX IF NOT EXISTS queued_work_claim
        ON queued_work_batches (session_id, claim_id, claim_token) WHERE claim_id IS NOT NULL""",
)
"""DDL for the queue tables, idempotent; rows are keyed by session id, not the sessions table."""

_SQ_SELECT: Final = f"SELECT {_COLUMNS} FROM queued_work_batches"
_SQ_CANDIDATES: Final = (
    f"{_SQ_SELECT} WHERE session_id = ? AND available_at_ms <= ?"
    " AND (claim_token IS NULL OR claim_expires_at_ms <= ?) ORDER BY enqueue_seq LIMIT ?"
)
_SQ_HELD: Final = (
    "SELECT batch_id FROM queued_work_batches"
    " WHERE session_id = ? AND claim_id = ? AND claim_token = ?"
)


def _sqlite_writing(conn: sqlite3.Connection, op: str) -> None:
    if not conn.in_transaction:
        raise StoreError(
            f"{op} must run inside a write transaction (BEGIN IMMEDIATE) the caller opened"
        )


def sqlite_enqueue(conn: sqlite3.Connection, draft: QueuedBatchDraft, now_ms: int) -> QueuedBatch:
    """``MemoryQueue.enqueue`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    draft = validate_draft(draft)
    now = _check_int("now_ms", now_ms)
    _sqlite_writing(conn, "sqlite_enqueue")
    if draft.source_key is not None:
        row = conn.execute(
            f"{_SQ_SELECT} WHERE session_id = ? AND source_key = ?",
            (draft.session_id, draft.source_key),
        ).fetchone()
        if row is not None:
            return _row_batch(row)
    batch_id = _new_batch_id()
    cur = conn.execute(
        "INSERT INTO queued_work_batches (batch_id, session_id, source_key, delivery, slot,"
        " merge_key, available_at_ms, enqueued_at_ms, payloads_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch_id,
            draft.session_id,
            draft.source_key,
            draft.delivery.value,
            draft.slot.value,
            draft.merge_key,
            draft.available_at_ms,
            now,
            _encode_payloads(draft.payloads),
        ),
    )
    seq = cur.lastrowid
    if seq is None:  # pragma: no cover - sqlite3 always sets it after an INSERT
        raise StoreError(f"session {draft.session_id!r}: enqueue did not report its row")
    return _batch_from_draft(draft, batch_id, seq, now)


def _sqlite_claim(
    conn: sqlite3.Connection,
    session_id: str,
    owner: str,
    boundary: ClaimBoundary,
    ttl: int,
    limit: int,
    now: int,
    expect: tuple[str, ...] | None,
) -> QueueClaim | None:
    if limit == 0:
        return None
    rows = conn.execute(_SQ_CANDIDATES, (session_id, now, now, limit)).fetchall()
    plan = _plan_claim(rows, session_id, owner, boundary, ttl, limit, now, expect)
    if plan is None:
        return None
    claim, ids = plan
    # One conditional UPDATE, undone through a savepoint unless every row took
    # the claim: never a half-owned claim, and the caller's transaction is intact.
    conn.execute("SAVEPOINT lash_queue_claim")
    try:
        cur = conn.execute(
            "UPDATE queued_work_batches SET claim_id = ?, claim_owner_id = ?, claim_token = ?,"
            " claim_fencing = claim_fencing + 1, claim_claimed_at_ms = ?, claim_expires_at_ms = ?"
            " WHERE session_id = ? AND batch_id IN (SELECT value FROM json_each(?))"
            " AND available_at_ms <= ? AND (claim_token IS NULL OR claim_expires_at_ms <= ?)",
            (
                claim.claim_id,
                owner,
                claim.lease_token,
                now,
                claim.expires_at_ms,
                session_id,
                msgspec.json.encode(ids).decode(),
                now,
                now,
            ),
        )
        won = cur.rowcount == len(ids)
        if not won:
            conn.execute("ROLLBACK TO lash_queue_claim")
    except BaseException:
        conn.execute("ROLLBACK TO lash_queue_claim")
        conn.execute("RELEASE lash_queue_claim")
        raise
    conn.execute("RELEASE lash_queue_claim")
    return claim if won else None


def sqlite_claim_ready(
    conn: sqlite3.Connection,
    session_id: str,
    owner_id: str,
    boundary: ClaimBoundary,
    ttl_ms: int,
    max_batches: int,
    now_ms: int,
) -> QueueClaim | None:
    """``MemoryQueue.claim_ready`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
    edge = _check_enum("boundary", ClaimBoundary, boundary)
    limit = _check_int("max_batches", max_batches)
    _sqlite_writing(conn, "sqlite_claim_ready")
    return _sqlite_claim(conn, sid, owner, edge, ttl, limit, now, None)


def sqlite_claim_batches(
    conn: sqlite3.Connection,
    session_id: str,
    batch_ids: Sequence[str],
    owner_id: str,
    ttl_ms: int,
    now_ms: int,
    *,
    boundary: ClaimBoundary = ClaimBoundary.IDLE,
) -> QueueClaim | None:
    """``MemoryQueue.claim_batches`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
    ids = _check_batch_ids(batch_ids)
    edge = _check_enum("boundary", ClaimBoundary, boundary)
    _sqlite_writing(conn, "sqlite_claim_batches")
    if not ids:
        return None
    return _sqlite_claim(conn, sid, owner, edge, ttl, len(ids), now, ids)


def sqlite_renew(
    conn: sqlite3.Connection, claim: QueueClaim, ttl_ms: int, now_ms: int
) -> QueueClaim:
    """``MemoryQueue.renew`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    claim = _check_claim(claim)
    ttl = _check_int("ttl_ms", ttl_ms)
    now = _check_int("now_ms", now_ms)
    _sqlite_writing(conn, "sqlite_renew")
    args = (claim.session_id, claim.claim_id, claim.lease_token)
    held = {r[0] for r in conn.execute(_SQ_HELD, args)}
    _check_held(claim, held, claim.batch_ids)
    expires = _expires(now, ttl)
    conn.execute(
        "UPDATE queued_work_batches SET claim_expires_at_ms = ?"
        " WHERE session_id = ? AND claim_id = ? AND claim_token = ?",
        (expires, *args),
    )
    return msgspec.structs.replace(claim, expires_at_ms=expires)


def sqlite_abandon(conn: sqlite3.Connection, claim: QueueClaim) -> None:
    """``MemoryQueue.abandon`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    claim = _check_claim(claim)
    _sqlite_writing(conn, "sqlite_abandon")
    conn.execute(
        "UPDATE queued_work_batches SET claim_id = NULL, claim_owner_id = NULL,"
        " claim_token = NULL, claim_claimed_at_ms = 0, claim_expires_at_ms = 0"
        " WHERE session_id = ? AND claim_id = ? AND claim_token = ?",
        (claim.session_id, claim.claim_id, claim.lease_token),
    )


def sqlite_cancel(
    conn: sqlite3.Connection, session_id: str, batch_id: str, now_ms: int
) -> QueuedBatch | None:
    """``MemoryQueue.cancel`` on SQLite (inside the caller's ``BEGIN IMMEDIATE``)."""
    sid = check_session_id(session_id)
    _check_text("batch id", batch_id)
    now = _check_int("now_ms", now_ms)
    _sqlite_writing(conn, "sqlite_cancel")
    row = conn.execute(
        f"{_SQ_SELECT} WHERE session_id = ? AND batch_id = ?"
        " AND (claim_token IS NULL OR claim_expires_at_ms <= ?)",
        (sid, batch_id, now),
    ).fetchone()
    if row is None:
        return None
    batch = _row_batch(row)
    conn.execute("DELETE FROM queued_work_batches WHERE batch_id = ?", (batch_id,))
    return batch


def sqlite_list(
    conn: sqlite3.Connection, session_id: str, pending_only: bool, now_ms: int
) -> tuple[QueuedBatch, ...]:
    """``MemoryQueue.list`` on SQLite (any transaction, or none)."""
    sid = check_session_id(session_id)
    now = _check_int("now_ms", now_ms)
    if pending_only:
        rows = conn.execute(
            f"{_SQ_SELECT} WHERE session_id = ?"
            " AND (claim_token IS NULL OR claim_expires_at_ms <= ?) ORDER BY enqueue_seq",
            (sid, now),
        ).fetchall()
    else:
        rows = conn.execute(
            f"{_SQ_SELECT} WHERE session_id = ? ORDER BY enqueue_seq", (sid,)
        ).fetchall()
    return tuple(_row_batch(r) for r in rows)


def sqlite_complete(
    conn: sqlite3.Connection,
    completions: Iterable[ClaimCompletion],
    *,
    session_id: str | None = None,
) -> None:
    """``MemoryQueue.complete`` on SQLite, inside the caller's commit transaction.

    Every completion is checked before any row is deleted, so on
    ``QueuedWorkClaimExpired`` nothing was written.
    """
    items = check_completions(completions, session_id=session_id)
    _sqlite_writing(conn, "sqlite_complete")
    for c in items:
        held = {r[0] for r in conn.execute(_SQ_HELD, (c.session_id, c.claim_id, c.lease_token))}
        _check_held(c, held, c.batch_ids)
    for c in items:
        conn.executemany(
            "DELETE FROM queued_work_batches"
            " WHERE session_id = ? AND batch_id = ? AND claim_id = ? AND claim_token = ?",
            [(c.session_id, b, c.claim_id, c.lease_token) for b in c.batch_ids],
        )


# ---------------------------------------------------------------------- PostgreSQL

_PG_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS {s}.queued_work_batches (
        enqueue_seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        batch_id text NOT NULL UNIQUE,
        session_id text NOT NULL,
        source_key text,
        delivery text NOT NULL,
        slot text NOT NULL,
        merge_key text,
        available_at_ms bigint NOT NULL,
        enqueued_at_ms bigint NOT NULL,
        payloads_json text NOT NULL,
        claim_id text,
        claim_owner_id text,
        claim_token text,
        claim_fencing bigint NOT NULL DEFAULT 0,
        claim_claimed_at_ms bigint NOT NULL DEFAULT 0,
        claim_expires_at_ms bigint NOT NULL DEFAULT 0
    )""",
    # NULL source keys are distinct, so only keyed batches are deduplicated.
    """CREATE UNIQUE INDEX IF NOT EXISTS queued_work_source
        ON {s}.queued_work_batches (session_id, source_key)""",
    """CREATE INDEX IF NOT EXISTS queued_work_order
        ON {s}.queued_work_batches (session_id, enqueue_seq)""",
    """CREATE INDEX IF NOT EXISTS queued_work_claim
        ON {s}.queued_work_batches (session_id, claim_id, claim_token)
        WHERE claim_id IS NOT NULL""",
)

_PG_STATEMENTS: Final = {
    "by_source": f"SELECT {_COLUMNS} FROM {{s}}.queued_work_batches"
    " WHERE session_id = %s AND source_key = %s",
    "insert": "INSERT INTO {s}.queued_work_batches (batch_id, session_id, source_key, delivery,"
    " slot, merge_key, available_at_ms, enqueued_at_ms, payloads_json)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (session_id, source_key) DO NOTHING RETURNING enqueue_seq",
    # A claim locks only the rows it takes, head first. SKIP LOCKED: a batch
    # another transaction is claiming right now counts as live-claimed.
    "head": f"SELECT {_COLUMNS} FROM {{s}}.queued_work_batches"
    " WHERE session_id = %s AND available_at_ms <= %s"
    " AND (claim_token IS NULL OR claim_expires_at_ms <= %s)"
    " ORDER BY enqueue_seq LIMIT 1 FOR UPDATE SKIP LOCKED",
    # The join batches after the head that share its delivery and merge key, up
    # to the first candidate that does not (the group's end).
    "followers": f"SELECT {_COLUMNS} FROM {{s}}.queued_work_batches"
    " WHERE session_id = %(sid)s AND enqueue_seq > %(head)s AND available_at_ms <= %(now)s"
    " AND (claim_token IS NULL OR claim_expires_at_ms <= %(now)s)"
    " AND slot = 'join' AND delivery = %(delivery)s"
    " AND merge_key IS NOT DISTINCT FROM %(merge)s::text"
    " AND enqueue_seq < coalesce((SELECT min(x.enqueue_seq) FROM {s}.queued_work_batches x"
    "  WHERE x.session_id = %(sid)s AND x.enqueue_seq > %(head)s"
    "  AND x.available_at_ms <= %(now)s"
    "  AND (x.claim_token IS NULL OR x.claim_expires_at_ms <= %(now)s)"
    "  AND NOT (x.slot = 'join' AND x.delivery = %(delivery)s"
    "  AND x.merge_key IS NOT DISTINCT FROM %(merge)s::text)), 9223372036854775807)"
    " ORDER BY enqueue_seq LIMIT %(more)s FOR UPDATE SKIP LOCKED",
    # All rows or none: the count guard makes the statement all-or-nothing.
    "claim": "UPDATE {s}.queued_work_batches SET claim_id = %(claim_id)s,"
    " claim_owner_id = %(owner)s, claim_token = %(token)s, claim_fencing = claim_fencing + 1,"
    " claim_claimed_at_ms = %(now)s, claim_expires_at_ms = %(expires)s"
    " WHERE session_id = %(sid)s AND batch_id = ANY(%(ids)s)"
    " AND (claim_token IS NULL OR claim_expires_at_ms <= %(now)s)"
    " AND (SELECT count(*) FROM {s}.queued_work_batches g"
    "  WHERE g.session_id = %(sid)s AND g.batch_id = ANY(%(ids)s)"
    "  AND (g.claim_token IS NULL OR g.claim_expires_at_ms <= %(now)s)) = %(n)s"
    " RETURNING batch_id",
    "held": "SELECT batch_id FROM {s}.queued_work_batches"
    " WHERE session_id = %s AND claim_id = %s AND claim_token = %s FOR UPDATE",
    "renew": "UPDATE {s}.queued_work_batches SET claim_expires_at_ms = %s"
    " WHERE session_id = %s AND claim_id = %s AND claim_token = %s",
    "abandon": "UPDATE {s}.queued_work_batches SET claim_id = NULL, claim_owner_id = NULL,"
    " claim_token = NULL, claim_claimed_at_ms = 0, claim_expires_at_ms = 0"
    " WHERE session_id = %s AND claim_id = %s AND claim_token = %s",
    "cancel": "DELETE FROM {s}.queued_work_batches WHERE session_id = %s AND batch_id = %s"
    f" AND (claim_token IS NULL OR claim_expires_at_ms <= %s) RETURNING {_COLUMNS}",
    "list_all": f"SELECT {_COLUMNS} FROM {{s}}.queued_work_batches"
    " WHERE session_id = %s ORDER BY enqueue_seq",
    "list_pending": f"SELECT {_COLUMNS} FROM {{s}}.queued_work_batches"
    " WHERE session_id = %s AND (claim_token IS NULL OR claim_expires_at_ms <= %s)"
    " ORDER BY enqueue_seq",
    "held_many": "SELECT session_id, claim_id, claim_token, batch_id"
    " FROM {s}.queued_work_batches"
    " WHERE (session_id, claim_id, claim_token) IN"
    "  (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
    " FOR UPDATE",
    "delete_many": "DELETE FROM {s}.queued_work_batches WHERE batch_id = ANY(%s)",
}
_PG_CACHE: dict[str, dict[str, bytes]] = {}


def _check_schema(schema: object) -> str:
    return _check_text("PostgreSQL schema name", schema)


def postgres_queue_schema(schema: str) -> list[sql.Composed]:
    """DDL for the queue tables in PostgreSQL schema ``schema`` (idempotent).

    The schema itself must exist; rows are keyed by session id, independent of
    any sessions table.
    """
    from psycopg import sql

    ident = sql.Identifier(_check_schema(schema))
    return [sql.SQL(ddl).format(s=ident) for ddl in _PG_DDL]


def _pg(schema: str) -> dict[str, bytes]:
    """Every statement, rendered for ``schema`` once."""
    statements = _PG_CACHE.get(schema)
    if statements is None:
        from psycopg import sql

        ident = sql.Identifier(_check_schema(schema))
        statements = {
            name: sql.SQL(text).format(s=ident).as_bytes(None)
            for name, text in _PG_STATEMENTS.items()
        }
        _PG_CACHE[schema] = statements
    return statements


async def _pg_rows(
    conn: psycopg.AsyncConnection[Any], query: bytes, params: Any
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def postgres_enqueue(
    conn: psycopg.AsyncConnection[Any], schema: str, draft: QueuedBatchDraft, now_ms: int
) -> QueuedBatch:
    """``MemoryQueue.enqueue`` on PostgreSQL (inside the caller's transaction).

    A concurrent enqueue of the same source key waits for the other transaction
    and then returns its batch (unique index plus ``ON CONFLICT DO NOTHING``).
    """
    draft = validate_draft(draft)
    now = _check_int("now_ms", now_ms)
    q = _pg(schema)
    payloads = _encode_payloads(draft.payloads)
    for _ in range(3):
        batch_id = _new_batch_id()
        rows = await _pg_rows(
            conn,
            q["insert"],
            (
                batch_id,
                draft.session_id,
                draft.source_key,
                draft.delivery.value,
                draft.slot.value,
                draft.merge_key,
                draft.available_at_ms,
                now,
                payloads,
            ),
        )
        if rows:
            return _batch_from_draft(draft, batch_id, int(rows[0][0]), now)
        # The source key is taken: return that batch (a later statement sees it
        # even when its transaction committed after ours began). When it was
        # deleted meanwhile, the key is free again: insert once more.
        found = await _pg_rows(conn, q["by_source"], (draft.session_id, draft.source_key))
        if found:
            return _row_batch(found[0])
    raise StoreError(
        f"session {draft.session_id!r}: source key {draft.source_key!r} kept conflicting with a"
        " batch this transaction cannot see (use READ COMMITTED for queue writes)"
    )


async def _pg_claim(
    conn: psycopg.AsyncConnection[Any],
    q: dict[str, bytes],
    session_id: str,
    owner: str,
    boundary: ClaimBoundary,
    ttl: int,
    limit: int,
    now: int,
    expect: tuple[str, ...] | None,
) -> QueueClaim | None:
    if limit == 0:
        return None
    rows = await _pg_rows(conn, q["head"], (session_id, now, now))
    if not rows:
        return None
    delivery, slot, merge_key = _row_keys(rows[0])
    if (
        boundary is ClaimBoundary.CHECKPOINT
        and delivery is not QueueDelivery.EARLIEST_SAFE_BOUNDARY
    ):
        return None
    if slot is SlotPolicy.JOIN and limit > 1:
        rows += await _pg_rows(
            conn,
            q["followers"],
            {
                "sid": session_id,
                "head": rows[0][0],
                "now": now,
                "delivery": delivery.value,
                "merge": merge_key,
                "more": limit - 1,
            },
        )
    plan = _plan_claim(rows, session_id, owner, boundary, ttl, limit, now, expect)
    if plan is None:
        return None
    claim, ids = plan
    won = await _pg_rows(
        conn,
        q["claim"],
        {
            "claim_id": claim.claim_id,
            "owner": owner,
            "token": claim.lease_token,
            "now": now,
            "expires": claim.expires_at_ms,
            "sid": session_id,
            "ids": ids,
            "n": len(ids),
        },
    )
    if len(won) == len(ids):
        return claim
    # Cannot happen while the candidates stay locked (a trigger could do it):
    # release what this claim took rather than leave a half-owned claim behind.
    await conn.execute(q["abandon"], (session_id, claim.claim_id, claim.lease_token))
    return None


async def postgres_claim_ready(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    session_id: str,
    owner_id: str,
    boundary: ClaimBoundary,
    ttl_ms: int,
    max_batches: int,
    now_ms: int,
) -> QueueClaim | None:
    """``MemoryQueue.claim_ready`` on PostgreSQL (inside the caller's transaction)."""
    sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
    edge = _check_enum("boundary", ClaimBoundary, boundary)
    limit = _check_int("max_batches", max_batches)
    q = _pg(schema)
    return await _pg_claim(conn, q, sid, owner, edge, ttl, limit, now, None)


async def postgres_claim_batches(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    session_id: str,
    batch_ids: Sequence[str],
    owner_id: str,
    ttl_ms: int,
    now_ms: int,
    *,
    boundary: ClaimBoundary = ClaimBoundary.IDLE,
) -> QueueClaim | None:
    """``MemoryQueue.claim_batches`` on PostgreSQL (inside the caller's transaction)."""
    sid, owner, ttl, now = _check_claim_args(session_id, owner_id, ttl_ms, now_ms)
    ids = _check_batch_ids(batch_ids)
    edge = _check_enum("boundary", ClaimBoundary, boundary)
    q = _pg(schema)
    if not ids:
        return None
    return await _pg_claim(conn, q, sid, owner, edge, ttl, len(ids), now, ids)


async def postgres_renew(
    conn: psycopg.AsyncConnection[Any], schema: str, claim: QueueClaim, ttl_ms: int, now_ms: int
) -> QueueClaim:
    """``MemoryQueue.renew`` on PostgreSQL (inside the caller's transaction)."""
    claim = _check_claim(claim)
    ttl = _check_int("ttl_ms", ttl_ms)
    now = _check_int("now_ms", now_ms)
    q = _pg(schema)
    args = (claim.session_id, claim.claim_id, claim.lease_token)
    held = {r[0] for r in await _pg_rows(conn, q["held"], args)}
    _check_held(claim, held, claim.batch_ids)
    expires = _expires(now, ttl)
    await conn.execute(q["renew"], (expires, *args))
    return msgspec.structs.replace(claim, expires_at_ms=expires)


async def postgres_abandon(
    conn: psycopg.AsyncConnection[Any], schema: str, claim: QueueClaim
) -> None:
    """``MemoryQueue.abandon`` on PostgreSQL (inside the caller's transaction)."""
    claim = _check_claim(claim)
    q = _pg(schema)
    await conn.execute(q["abandon"], (claim.session_id, claim.claim_id, claim.lease_token))


async def postgres_cancel(
    conn: psycopg.AsyncConnection[Any], schema: str, session_id: str, batch_id: str, now_ms: int
) -> QueuedBatch | None:
    """``MemoryQueue.cancel`` on PostgreSQL (inside the caller's transaction)."""
    sid = check_session_id(session_id)
    _check_text("batch id", batch_id)
    now = _check_int("now_ms", now_ms)
    q = _pg(schema)
    rows = await _pg_rows(conn, q["cancel"], (sid, batch_id, now))
    return _row_batch(rows[0]) if rows else None


async def postgres_list(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    session_id: str,
    pending_only: bool,
    now_ms: int,
) -> tuple[QueuedBatch, ...]:
    """``MemoryQueue.list`` on PostgreSQL (any transaction, or autocommit)."""
    sid = check_session_id(session_id)
    now = _check_int("now_ms", now_ms)
    q = _pg(schema)
    if pending_only:
        rows = await _pg_rows(conn, q["list_pending"], (sid, now))
    else:
        rows = await _pg_rows(conn, q["list_all"], (sid,))
    return tuple(_row_batch(r) for r in rows)


async def postgres_complete(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    completions: Iterable[ClaimCompletion],
    *,
    session_id: str | None = None,
) -> None:
    """``MemoryQueue.complete`` on PostgreSQL, inside the caller's commit transaction.

    The held rows are locked (``FOR UPDATE``) and every completion is checked
    before one ``DELETE`` removes them all, so on ``QueuedWorkClaimExpired``
    nothing was written.
    """
    items = check_completions(completions, session_id=session_id)
    q = _pg(schema)
    if not items:
        return
    rows = await _pg_rows(
        conn,
        q["held_many"],
        (
            [c.session_id for c in items],
            [c.claim_id for c in items],
            [c.lease_token for c in items],
        ),
    )
    held: dict[tuple[str, str, str], set[str]] = {}
    for sid, claim_id, token, batch_id in rows:
        held.setdefault((sid, claim_id, token), set()).add(batch_id)
    for c in items:
        _check_held(c, held.get((c.session_id, c.claim_id, c.lease_token), set()), c.batch_ids)
    await conn.execute(q["delete_many"], ([b for c in items for b in c.batch_ids],))
