"""The queued-work methods every store offers, over one backend primitive.

Each store implements ``_queue_op(name, session_id, args, write)``, which runs
the backend's function ``name`` (``enqueue``, ``claim_ready``...) with ``args``
in one transaction (``session_id`` names the session in its errors); this mixin
supplies the typed public methods, the clock and the defaults, so the three
backends cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .queue import (
    CHECKPOINT_MAX,
    DEFAULT_CLAIM_TTL_MS,
    ClaimBoundary,
    QueueClaim,
    QueuedBatch,
    QueuedBatchDraft,
)


def now_ms() -> int:
    """Wall-clock milliseconds, the time base of queue claims."""
    return time.time_ns() // 1_000_000


class QueueOps:
    """Queued work: the single durable ingress of a session (see ``lash.store.queue``)."""

    async def _queue_op(
        self, name: str, session_id: object, args: tuple[Any, ...], write: bool
    ) -> Any:
        raise NotImplementedError

    async def enqueue(self, draft: QueuedBatchDraft) -> QueuedBatch:
        """Queue a batch; a batch with the same (session, source key) still queued is returned.

        The backend validates the draft (``ValueError`` before anything is written).
        """
        session_id = getattr(draft, "session_id", None)
        return await self._queue_op("enqueue", session_id, (draft, now_ms()), True)  # type: ignore[no-any-return]

    async def claim_ready(
        self,
        session_id: str,
        *,
        owner_id: str,
        boundary: ClaimBoundary = ClaimBoundary.IDLE,
        ttl_ms: int = DEFAULT_CLAIM_TTL_MS,
        max_batches: int = CHECKPOINT_MAX,
    ) -> QueueClaim | None:
        """Claim the next ready group of the session's batches, or None.

        At the ``checkpoint`` boundary only an ``earliest_safe_boundary`` head
        is taken (the queue is never reordered). The claim is completed only by
        the turn commit that consumes it (``RuntimeCommit.completed_claims``).
        """
        args = (session_id, owner_id, boundary, ttl_ms, max_batches, now_ms())
        return await self._queue_op("claim_ready", session_id, args, True)  # type: ignore[no-any-return]

    async def claim_batches(
        self,
        session_id: str,
        batch_ids: Sequence[str],
        *,
        owner_id: str,
        ttl_ms: int = DEFAULT_CLAIM_TTL_MS,
    ) -> QueueClaim | None:
        """Claim exactly ``batch_ids`` if they are the group a claim would take now, else None."""
        args = (session_id, batch_ids, owner_id, ttl_ms, now_ms())
        return await self._queue_op("claim_batches", session_id, args, True)  # type: ignore[no-any-return]

    async def renew_claim(
        self, claim: QueueClaim, *, ttl_ms: int = DEFAULT_CLAIM_TTL_MS
    ) -> QueueClaim:
        """Extend a claim; ``QueuedWorkClaimExpired`` when someone else has re-claimed it."""
        args = (claim, ttl_ms, now_ms())
        return await self._queue_op("renew", getattr(claim, "session_id", None), args, True)  # type: ignore[no-any-return]

    async def abandon_claim(self, claim: QueueClaim) -> None:
        """Give a claim's batches back (their fencing counters stay); idempotent."""
        await self._queue_op("abandon", getattr(claim, "session_id", None), (claim,), True)

    async def cancel_queued(self, session_id: str, batch_id: str) -> QueuedBatch | None:
        """Delete and return a batch nobody holds a live claim on; else None."""
        args = (session_id, batch_id, now_ms())
        return await self._queue_op("cancel", session_id, args, True)  # type: ignore[no-any-return]

    async def list_queued(
        self, session_id: str, *, pending_only: bool = False
    ) -> tuple[QueuedBatch, ...]:
        """The session's batches in queue order (``pending_only``: not under a live claim)."""
        args = (session_id, pending_only, now_ms())
        return await self._queue_op("list", session_id, args, False)  # type: ignore[no-any-return]
