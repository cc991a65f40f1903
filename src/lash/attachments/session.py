"""A session's view of the attachment store: write-ahead intents, then commits with the turn."""

from __future__ import annotations

from collections.abc import Iterable

from ..kernel.attachments import AttachmentRef
from ..runtime.effects import DurabilityTier
from ..store.base import check_session_id
from .base import (
    DEFAULT_CLOCK,
    AttachmentNotFound,
    AttachmentStore,
    BytesLike,
    Clock,
    check_attachment_id,
    check_attachment_ids,
    prepare_put,
)
from .manifest import AttachmentManifest


class SessionAttachments:
    """Wraps a shared store and manifest for one session.

    ``put`` records the session's intent in the manifest *before* the bytes
    land, so bytes orphaned by a crash are visible to the GC sweep; if the
    intent cannot be recorded the bytes are never written. ``commit`` marks the
    references a turn keeps, protecting them from the sweep for good.
    """

    def __init__(
        self,
        store: AttachmentStore,
        manifest: AttachmentManifest,
        session_id: str,
        *,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        self._store = store
        self._manifest = manifest
        self._session_id = check_session_id(session_id)
        self._clock = clock

    @property
    def session_id(self) -> str:
        """The session this view writes intents and commits for."""
        return self._session_id

    @property
    def store(self) -> AttachmentStore:
        """The shared byte store."""
        return self._store

    @property
    def manifest(self) -> AttachmentManifest:
        """The shared manifest."""
        return self._manifest

    @property
    def tier(self) -> DurabilityTier:
        """Durable only when both the store and the manifest are."""
        durable = DurabilityTier.DURABLE
        if self._store.tier is durable and self._manifest.tier is durable:
            return durable
        return DurabilityTier.INLINE

    async def put(
        self,
        data: BytesLike,
        *,
        mime: str,
        width: int | None = None,
        height: int | None = None,
        label: str | None = None,
    ) -> AttachmentRef:
        """Record this session's intent, then store the bytes; returns their reference."""
        blob, ref = await prepare_put(data, mime=mime, width=width, height=height, label=label)
        await self._manifest.record_intent(self._session_id, ref.id, at=self._clock())
        put_prepared = getattr(self._store, "put_prepared", None)
        if put_prepared is not None:  # the bytes are hashed once, here
            stored: AttachmentRef = await put_prepared(blob, ref)
            return stored
        return await self._store.put(blob, mime=mime, width=width, height=height, label=label)

    async def get(self, attachment_id: str) -> bytes:
        """The bytes stored under ``attachment_id``."""
        return await self._store.get(check_attachment_id(attachment_id))

    async def meta(self, attachment_id: str) -> AttachmentRef:
        """The reference stored for ``attachment_id``."""
        return await self._store.meta(check_attachment_id(attachment_id))

    async def commit(
        self, refs: Iterable[AttachmentRef | str], *, verify: bool = True
    ) -> list[str]:
        """Mark ``refs`` committed for this session; returns their ids.

        Call it just before the turn commit that references them. With
        ``verify`` (the default) the bytes are checked afterwards, and
        ``AttachmentNotFound`` names every id whose bytes are gone (a turn that
        outlived the sweep's grace period); the rows stay committed, so a later
        ``put`` of the same bytes is protected at once.
        """
        ids = check_attachment_ids(refs)
        if not ids:
            return ids
        await self._manifest.mark_committed(self._session_id, ids, at=self._clock())
        if verify:
            missing = []
            for attachment_id in ids:
                try:
                    await self._store.meta(attachment_id)
                except AttachmentNotFound:
                    missing.append(attachment_id)
            if missing:
                raise AttachmentNotFound(
                    missing[0],
                    f"session {self._session_id!r} committed {len(missing)} attachment(s) "
                    f"whose bytes are gone: {', '.join(missing)}",
                )
        return ids
