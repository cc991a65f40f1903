"""Shared helpers for the attachment tests: a runner, a fake clock, and backend factories."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from lash.attachments import (
    AttachmentManifest,
    AttachmentStore,
    FileAttachmentStore,
    MemoryAttachmentManifest,
    MemoryAttachmentStore,
    SqliteAttachmentManifest,
    SqliteAttachmentStore,
)

T = TypeVar("T")

STORE_KINDS = ("memory", "file", "sqlite")
MANIFEST_KINDS = ("memory", "sqlite")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coro`` on a fresh event loop, failing after ``timeout`` seconds."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


class FakeClock:
    """A settable clock in epoch seconds."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_store(kind: str, root: Path, clock: Callable[[], float]) -> AttachmentStore:
    """A store of ``kind`` under ``root`` (created by the store if missing)."""
    if kind == "memory":
        return MemoryAttachmentStore(clock=clock)
    if kind == "file":
        return FileAttachmentStore(root / "files", clock=clock)
    if kind == "sqlite":
        return SqliteAttachmentStore(root / "attachments.sqlite3", clock=clock)
    raise ValueError(kind)


def make_manifest(kind: str, root: Path, clock: Callable[[], float]) -> AttachmentManifest:
    """A manifest of ``kind`` under ``root``."""
    if kind == "memory":
        return MemoryAttachmentManifest(clock=clock)
    if kind == "sqlite":
        return SqliteAttachmentManifest(root / "manifest.sqlite3", clock=clock)
    raise ValueError(kind)
