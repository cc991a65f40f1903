"""The attachment GC sweep: delete bytes no session committed once every claim on them is stale.

An id is *live* while any session has committed it; such bytes are never
deleted, whatever other sessions' intents say. Otherwise it *expires* when both
its newest intent (across all sessions) and its bytes' last ``put`` are older
than the grace period; the sweep then deletes the bytes and the stale intent
rows. Each deletion runs under the manifest's ``hold`` on that id and
re-checks it there, so a ``SessionAttachments.put`` racing the sweep either
lands its intent first (and the bytes are kept) or waits and writes them anew.
The grace period must exceed the longest turn: a turn that commits a reference
after its intent expired finds the bytes gone (``SessionAttachments.commit``
says so).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import msgspec

from .base import AttachmentNotFound, AttachmentStore
from .manifest import AttachmentManifest


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one sweep did."""

    kept: int = 0
    """Stored attachments kept because some session committed them."""
    deleted: int = 0
    """Attachments whose bytes were deleted."""
    young: int = 0
    """Uncommitted attachments skipped because an intent or the bytes are within the grace."""
    intents_removed: int = 0
    """Stale manifest rows removed (including rows whose bytes never landed)."""
    temp_files_removed: int = 0
    """Crash left-overs removed by a store that has them (``purge_temp_files``)."""
    deleted_ids: tuple[str, ...] = ()


@runtime_checkable
class _PurgesTempFiles(Protocol):
    async def purge_temp_files(
        self, *, older_than_seconds: float, now: float | None = None
    ) -> int: ...


_NEVER = float("-inf")

TEMP_FILE_MIN_AGE_SECONDS = 900.0
"""Crash left-overs younger than this (or than the grace, if longer) are never purged:
a ``put`` still in progress owns them."""


async def sweep(
    store: AttachmentStore,
    manifest: AttachmentManifest,
    *,
    grace_seconds: float,
    now: float | None = None,
) -> SweepReport:
    """Collect expired, uncommitted attachments from ``store``; see the module docstring."""
    if not grace_seconds >= 0:
        raise ValueError(f"grace_seconds must be >= 0, got {grace_seconds!r}")
    current = time.time() if now is None else now
    cutoff = current - grace_seconds
    stored = set(await store.list_ids())
    statuses = await manifest.statuses()
    candidates = stored | {aid for aid, status in statuses.items() if not status.committed}

    kept = young = intents_removed = 0
    deleted: list[str] = []
    for attachment_id in sorted(candidates):
        status = statuses.get(attachment_id)
        # Cheap pre-checks: keeping is always safe, so only deletion needs the hold.
        if status is not None and status.committed:
            kept += 1
            continue
        if status is not None and status.newest_intent_at >= cutoff:
            young += 1
            continue
        async with manifest.hold(attachment_id) as held:
            status = held.status
            if status is not None and status.committed:
                kept += 1
                continue
            try:
                put_at = await store.stored_at(attachment_id)
            except AttachmentNotFound:
                put_at = None
            if status is None and put_at is None:
                continue  # gone already
            newest = max(
                status.newest_intent_at if status is not None else _NEVER,
                put_at if put_at is not None else _NEVER,
            )
            if newest >= cutoff:
                young += 1
                continue
            if put_at is not None and await store.delete(attachment_id):
                deleted.append(attachment_id)
            if status is not None:
                intents_removed += await held.forget()

    temp_files = 0
    if isinstance(store, _PurgesTempFiles):
        min_age = max(grace_seconds, TEMP_FILE_MIN_AGE_SECONDS)
        temp_files = await store.purge_temp_files(older_than_seconds=min_age)
    return SweepReport(
        kept=kept,
        deleted=len(deleted),
        young=young,
        intents_removed=intents_removed,
        temp_files_removed=temp_files,
        deleted_ids=tuple(deleted),
    )
