"""In-memory attachment store and manifest (Inline tier): the contracts without durability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from ..kernel.attachments import AttachmentRef
from ..runtime.effects import DurabilityTier
from ..store.base import StoreError, check_session_id
from .base import (
    DEFAULT_CLOCK,
    AttachmentNotFound,
    BytesLike,
    Clock,
    check_attachment_id,
    check_attachment_ids,
    prepare_put,
)
from .manifest import ManifestEntry, ManifestStatus


class MemoryAttachmentStore:
    """Keeps attachments in a dict; nothing survives the process."""

    def __init__(self, *, clock: Clock = DEFAULT_CLOCK) -> None:
        self._clock = clock
        self._items: dict[str, tuple[bytes, AttachmentRef, float]] = {}
        self._closed = False

    @property
    def tier(self) -> DurabilityTier:
        """Inline."""
        return DurabilityTier.INLINE

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("MemoryAttachmentStore is closed")

    async def put(
        self,
        data: BytesLike,
        *,
        mime: str,
        width: int | None = None,
        height: int | None = None,
        label: str | None = None,
    ) -> AttachmentRef:
        """Store ``data`` under its SHA-256; see ``AttachmentStore.put``."""
        blob, ref = await prepare_put(data, mime=mime, width=width, height=height, label=label)
        return await self.put_prepared(blob, ref)

    async def put_prepared(self, blob: bytes, ref: AttachmentRef) -> AttachmentRef:
        """Store bytes already hashed by ``prepare_put`` (``ref`` must be theirs)."""
        self._check_open()
        prior = self._items.get(ref.id)
        self._items[ref.id] = (prior[0] if prior else blob, ref, self._clock())
        return ref

    def _item(self, attachment_id: str) -> tuple[bytes, AttachmentRef, float]:
        check_attachment_id(attachment_id)
        self._check_open()
        item = self._items.get(attachment_id)
        if item is None:
            raise AttachmentNotFound(attachment_id)
        return item

    async def get(self, attachment_id: str) -> bytes:
        """The stored bytes."""
        return self._item(attachment_id)[0]

    async def meta(self, attachment_id: str) -> AttachmentRef:
        """The stored reference."""
        return self._item(attachment_id)[1]

    async def stored_at(self, attachment_id: str) -> float:
        """When the bytes were last put."""
        return self._item(attachment_id)[2]

    async def list_ids(self) -> list[str]:
        """Every stored id, sorted."""
        self._check_open()
        return sorted(self._items)

    async def delete(self, attachment_id: str) -> bool:
        """Remove an attachment; True if it was present."""
        check_attachment_id(attachment_id)
        self._check_open()
        return self._items.pop(attachment_id, None) is not None

    async def aclose(self) -> None:
        """Drop everything; idempotent."""
        self._closed = True
        self._items.clear()


class _MemoryHeld:
    def __init__(self, status: ManifestStatus | None, rows: int) -> None:
        self._status = status
        self._rows = rows
        self.forgotten = False

    @property
    def status(self) -> ManifestStatus | None:
        return self._status

    async def forget(self) -> int:
        self.forgotten = True
        return self._rows


class _Row:
    __slots__ = ("committed_at", "intent_at")

    def __init__(self, intent_at: float, committed_at: float | None = None) -> None:
        self.intent_at = intent_at
        self.committed_at = committed_at


class MemoryAttachmentManifest:
    """The manifest in a dict; for tests and for runs that need no durability."""

    def __init__(self, *, clock: Clock = DEFAULT_CLOCK) -> None:
        self._clock = clock
        self._rows: dict[str, dict[str, _Row]] = {}  # attachment_id -> session_id -> row
        self._lock = asyncio.Lock()

    @property
    def tier(self) -> DurabilityTier:
        """Inline."""
        return DurabilityTier.INLINE

    async def record_intent(
        self, session_id: str, attachment_id: str, *, at: float | None = None
    ) -> None:
        """See ``AttachmentManifest.record_intent``."""
        check_session_id(session_id)
        check_attachment_id(attachment_id)
        when = self._clock() if at is None else at
        async with self._lock:
            rows = self._rows.setdefault(attachment_id, {})
            row = rows.get(session_id)
            if row is None:
                rows[session_id] = _Row(when)
            else:
                row.intent_at = max(row.intent_at, when)

    async def mark_committed(
        self,
        session_id: str,
        attachment_ids: Iterable[str | AttachmentRef],
        *,
        at: float | None = None,
    ) -> None:
        """See ``AttachmentManifest.mark_committed``."""
        check_session_id(session_id)
        ids = check_attachment_ids(attachment_ids)
        when = self._clock() if at is None else at
        async with self._lock:
            for attachment_id in ids:
                row = self._rows.setdefault(attachment_id, {}).setdefault(session_id, _Row(when))
                if row.committed_at is None:
                    row.committed_at = when

    async def entries(
        self, *, session_id: str | None = None, attachment_id: str | None = None
    ) -> list[ManifestEntry]:
        """See ``AttachmentManifest.entries``."""
        if session_id is not None:
            check_session_id(session_id)
        if attachment_id is not None:
            check_attachment_id(attachment_id)
        return [
            ManifestEntry(
                session_id=sid,
                attachment_id=aid,
                intent_at=row.intent_at,
                committed_at=row.committed_at,
            )
            for aid in sorted(self._rows)
            if attachment_id in (None, aid)
            for sid, row in sorted(self._rows[aid].items())
            if session_id in (None, sid)
        ]

    def _status(self, attachment_id: str) -> ManifestStatus | None:
        rows = self._rows.get(attachment_id)
        if not rows:
            return None
        return ManifestStatus(
            committed=any(r.committed_at is not None for r in rows.values()),
            newest_intent_at=max(r.intent_at for r in rows.values()),
        )

    async def statuses(self) -> dict[str, ManifestStatus]:
        """See ``AttachmentManifest.statuses``."""
        out = {}
        for attachment_id in self._rows:
            status = self._status(attachment_id)
            if status is not None:
                out[attachment_id] = status
        return out

    @asynccontextmanager
    async def hold(self, attachment_id: str) -> AsyncIterator[_MemoryHeld]:
        """See ``AttachmentManifest.hold``."""
        check_attachment_id(attachment_id)
        async with self._lock:
            held = _MemoryHeld(self._status(attachment_id), len(self._rows.get(attachment_id, ())))
            yield held
            if held.forgotten:
                self._rows.pop(attachment_id, None)

    async def forget_session(self, session_id: str) -> int:
        """See ``AttachmentManifest.forget_session``."""
        check_session_id(session_id)
        count = 0
        async with self._lock:
            for attachment_id in list(self._rows):
                if self._rows[attachment_id].pop(session_id, None) is not None:
                    count += 1
                if not self._rows[attachment_id]:
                    del self._rows[attachment_id]
        return count

    async def aclose(self) -> None:
        """Nothing to release."""
