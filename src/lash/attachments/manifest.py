"""The write-ahead attachment manifest: which session intends to keep, or committed, which bytes.

Rows are keyed by ``(session_id, attachment_id)``. A session records an
*intent* (with a timestamp) before its bytes land, and marks the row
*committed* together with the turn commit that references it. Because bytes
are shared between sessions, the GC sweep treats an id as live while *any*
session has committed it, and otherwise waits until every session's intent
is older than the grace period.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from ..kernel.attachments import AttachmentRef
from ..runtime.effects import DurabilityTier

_S = {"frozen": True, "kw_only": True}


class ManifestEntry(msgspec.Struct, **_S):
    """One session's row for one attachment; ``committed_at`` is None while only intended."""

    session_id: str
    attachment_id: str
    intent_at: float
    committed_at: float | None = None


class ManifestStatus(msgspec.Struct, **_S):
    """What the manifest says about one attachment across all sessions."""

    committed: bool
    """Some session has committed a reference to it."""
    newest_intent_at: float
    """The newest intent time among all its rows."""


class HeldAttachment(Protocol):
    """One attachment's manifest rows, locked against concurrent writers (see ``hold``)."""

    @property
    def status(self) -> ManifestStatus | None:
        """The attachment's status when the lock was taken; None if it has no rows."""
        ...

    async def forget(self) -> int:
        """Delete every row for the attachment (applied when the hold ends); the count."""
        ...


class AttachmentManifest(Protocol):
    """A durable (or in-memory) record of attachment intents and commits, per session."""

    @property
    def tier(self) -> DurabilityTier:
        """Inline or Durable."""
        ...

    async def record_intent(
        self, session_id: str, attachment_id: str, *, at: float | None = None
    ) -> None:
        """Note that ``session_id`` is about to store ``attachment_id``.

        An existing uncommitted row keeps the newer of the two times; a committed
        row stays committed.
        """
        ...

    async def mark_committed(
        self,
        session_id: str,
        attachment_ids: Iterable[str | AttachmentRef],
        *,
        at: float | None = None,
    ) -> None:
        """Mark the rows committed (creating missing ones), all in one transaction."""
        ...

    async def entries(
        self, *, session_id: str | None = None, attachment_id: str | None = None
    ) -> list[ManifestEntry]:
        """Rows, optionally filtered, ordered by (attachment_id, session_id)."""
        ...

    async def statuses(self) -> dict[str, ManifestStatus]:
        """The status of every attachment that has rows."""
        ...

    def hold(self, attachment_id: str) -> AbstractAsyncContextManager[HeldAttachment]:
        """Lock one attachment's rows: ``record_intent`` and ``mark_committed`` wait until
        the hold ends, so a sweep can check them, delete the bytes and ``forget`` the rows
        without a concurrent ``put`` slipping in between. A hold that raises forgets nothing.
        """
        ...

    async def forget_session(self, session_id: str) -> int:
        """Delete every row of a session (when the session is deleted); the count."""
        ...

    async def aclose(self) -> None:
        """Release resources; idempotent."""
        ...
