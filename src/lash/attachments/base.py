"""The attachment-store contract, its errors, and the id and metadata checks every backend shares.

Attachments are content-addressed: an id is the lowercase hex SHA-256 of the
bytes, so storing the same bytes twice yields the same id and one copy. Every
method validates an id *before* it can reach a path or a query.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..kernel.attachments import AttachmentRef, is_content_id, media_type_from_mime
from ..runtime.effects import DurabilityTier
from ..store.base import StoreError

Clock = Callable[[], float]
"""Returns the current time in epoch seconds (``time.time`` by default)."""

DEFAULT_CLOCK: Clock = time.time

BytesLike = bytes | bytearray | memoryview
"""What ``put`` accepts; stores keep an immutable ``bytes`` copy."""


class AttachmentNotFound(StoreError):
    """No bytes are stored under ``attachment_id``."""

    def __init__(self, attachment_id: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"attachment {attachment_id} was not found{suffix}")
        self.attachment_id = attachment_id


class AttachmentCorrupt(StoreError):
    """Stored bytes or metadata for ``attachment_id`` fail their integrity check."""

    def __init__(self, attachment_id: str, reason: str) -> None:
        super().__init__(f"attachment {attachment_id} is corrupt: {reason}")
        self.attachment_id = attachment_id
        self.reason = reason


def check_attachment_id(value: object) -> str:
    """``value`` if it is a lowercase hex SHA-256 digest, else ``ValueError``."""
    if not isinstance(value, str) or not is_content_id(value) or len(value) != 64:
        raise ValueError(f"attachment id must be a lowercase hex SHA-256 digest, got {value!r}")
    return value


def check_attachment_ids(values: Iterable[str | AttachmentRef]) -> list[str]:
    """Every id in ``values`` (refs or ids), validated, de-duplicated, in first-seen order."""
    if isinstance(values, str | bytes):
        raise ValueError("attachment ids must be given as a collection, not a single string")
    out: dict[str, None] = {}
    for value in values:
        out[check_attachment_id(value.id if isinstance(value, AttachmentRef) else value)] = None
    return list(out)


def content_id(data: BytesLike) -> str:
    """The attachment id of ``data``: its lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def _check_dimension(name: str, value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
    return value


def make_ref(
    data: BytesLike,
    *,
    mime: str,
    width: int | None = None,
    height: int | None = None,
    label: str | None = None,
) -> tuple[bytes, AttachmentRef]:
    """Validate a ``put``'s arguments; return the bytes and the reference they produce.

    Raises ``ValueError`` for empty or non-bytes data, a blank MIME type, bad
    dimensions or a non-string label.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"attachment data must be bytes, got {type(data).__name__}")
    blob = bytes(data)
    if not blob:
        raise ValueError("attachment data must not be empty")
    if not isinstance(mime, str):
        raise ValueError(f"mime must be a string, got {mime!r}")
    normalized = media_type_from_mime(mime)
    if not normalized or "/" not in normalized or any(c.isspace() for c in normalized):
        raise ValueError(f"mime must look like 'type/subtype', got {mime!r}")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"label must be a string or None, got {label!r}")
    ref = AttachmentRef(
        id=content_id(blob),
        mime=normalized,
        byte_len=len(blob),
        width=_check_dimension("width", width),
        height=_check_dimension("height", height),
        label=label,
    )
    return blob, ref


_HASH_OFFLOAD_BYTES = 256 * 1024


async def prepare_put(
    data: BytesLike,
    *,
    mime: str,
    width: int | None = None,
    height: int | None = None,
    label: str | None = None,
) -> tuple[bytes, AttachmentRef]:
    """``make_ref`` that hashes large data on a worker thread, off the event loop."""
    if isinstance(data, bytes | bytearray | memoryview) and len(data) >= _HASH_OFFLOAD_BYTES:
        return await asyncio.to_thread(
            make_ref, data, mime=mime, width=width, height=height, label=label
        )
    return make_ref(data, mime=mime, width=width, height=height, label=label)


class AttachmentReader(Protocol):
    """Reads attachments by id; what a provider needs to resolve references."""

    async def get(self, attachment_id: str) -> bytes:
        """The bytes stored under ``attachment_id`` (``AttachmentNotFound`` if none)."""
        ...

    async def meta(self, attachment_id: str) -> AttachmentRef:
        """The reference (MIME type, size, dimensions, label) stored for ``attachment_id``."""
        ...


class AttachmentStore(AttachmentReader, Protocol):
    """A content-addressed byte store for images and files referenced by messages.

    Every method that takes an id raises ``ValueError`` for anything that is not
    a lowercase hex SHA-256 digest, before touching storage.
    """

    @property
    def tier(self) -> DurabilityTier:
        """Inline or Durable."""
        ...

    async def put(
        self,
        data: BytesLike,
        *,
        mime: str,
        width: int | None = None,
        height: int | None = None,
        label: str | None = None,
    ) -> AttachmentRef:
        """Store ``data`` (idempotent) and return its reference; empty data is a ``ValueError``.

        The bytes are written once; the stored metadata becomes this call's.
        """
        ...

    async def list_ids(self) -> list[str]:
        """Every stored id, sorted."""
        ...

    async def stored_at(self, attachment_id: str) -> float:
        """When the bytes were last put (epoch seconds); ``AttachmentNotFound`` if absent."""
        ...

    async def delete(self, attachment_id: str) -> bool:
        """Remove the bytes and metadata; True if they were present."""
        ...

    async def aclose(self) -> None:
        """Release resources; idempotent."""
        ...


async def resolve_attachments(
    reader: AttachmentReader, refs: Iterable[AttachmentRef | str]
) -> dict[str, bytes]:
    """The bytes of every referenced attachment, keyed by id (for a provider's request)."""
    return {
        attachment_id: await reader.get(attachment_id)
        for attachment_id in check_attachment_ids(refs)
    }
