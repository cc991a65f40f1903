"""Content-addressed attachment stores, the write-ahead manifest, and the GC sweep.

* ``MemoryAttachmentStore`` (Inline), ``FileAttachmentStore`` and
  ``SqliteAttachmentStore`` (Durable) keep bytes under their SHA-256.
* ``MemoryAttachmentManifest`` / ``SqliteAttachmentManifest`` record, per
  ``(session_id, attachment_id)``, an intent before bytes land and the commit
  that keeps them.
* ``SessionAttachments`` ties a store and a manifest to one session.
* ``sweep`` deletes bytes no session committed once every claim is stale.
"""

from .base import (
    AttachmentCorrupt,
    AttachmentNotFound,
    AttachmentReader,
    AttachmentStore,
    Clock,
    check_attachment_id,
    content_id,
    resolve_attachments,
)
from .file import FileAttachmentStore
from .manifest import AttachmentManifest, HeldAttachment, ManifestEntry, ManifestStatus
from .memory import MemoryAttachmentManifest, MemoryAttachmentStore
from .session import SessionAttachments
from .sqlite import SqliteAttachmentManifest, SqliteAttachmentStore
from .sweep import SweepReport, sweep

__all__ = [
    "AttachmentCorrupt",
    "AttachmentManifest",
    "AttachmentNotFound",
    "AttachmentReader",
    "AttachmentStore",
    "Clock",
    "FileAttachmentStore",
    "HeldAttachment",
    "ManifestEntry",
    "ManifestStatus",
    "MemoryAttachmentManifest",
    "MemoryAttachmentStore",
    "SessionAttachments",
    "SqliteAttachmentManifest",
    "SqliteAttachmentStore",
    "SweepReport",
    "check_attachment_id",
    "content_id",
    "resolve_attachments",
    "sweep",
]
