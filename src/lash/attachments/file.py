"""A durable attachment store on the file system: ``root/ab/cd/<id>`` plus ``<id>.json``.

Writes are crash-atomic: bytes go to a temporary file in the destination
directory, are fsynced, renamed over the final name with ``os.replace``, and
the directory is fsynced, so a reader sees either nothing or the whole file.
The metadata sidecar is written the same way, before the bytes, so a data
file always has its sidecar. Reads re-hash the bytes. Ids are validated before
a path is built, and a valid id (64 lowercase hex digits) cannot name anything
outside ``root``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from .._closing import AsyncClosing
from ..kernel.attachments import AttachmentRef, is_content_id
from ..runtime.effects import DurabilityTier
from ..store.base import StoreError
from .base import (
    DEFAULT_CLOCK,
    AttachmentCorrupt,
    AttachmentNotFound,
    BytesLike,
    Clock,
    check_attachment_id,
    content_id,
    prepare_put,
)

T = TypeVar("T")

_SHARD = re.compile(r"^[0-9a-f]{2}$")
_CHUNK = 1 << 20
_TMP_SUFFIX = ".tmp"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` in chunks."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:_CHUNK])
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` so that it holds either its old content or all of ``data``."""
    tmp = directory / f".{name}.{secrets.token_hex(8)}{_TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


class FileAttachmentStore(AsyncClosing):
    """Content-addressed attachments under ``root``; Durable.

    ``stored_at`` is the data file's modification time, set from ``clock`` on
    every ``put``. Left-over temporary files from a crash are invisible to
    readers; ``purge_temp_files`` removes them.
    """

    def __init__(self, root: str | Path, *, clock: Clock = DEFAULT_CLOCK) -> None:
        path = Path(root)
        if path.exists() and not path.is_dir():
            raise ValueError(f"FileAttachmentStore root {path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        self._root = path.resolve()
        self._clock = clock
        self._closed = False

    @property
    def tier(self) -> DurabilityTier:
        """Durable: a put survives a crash once it returns."""
        return DurabilityTier.DURABLE

    @property
    def root(self) -> Path:
        """The directory everything is stored under."""
        return self._root

    def _paths(self, attachment_id: str) -> tuple[Path, Path, Path]:
        """(directory, data file, sidecar) for a validated id."""
        check_attachment_id(attachment_id)
        directory = self._root / attachment_id[:2] / attachment_id[2:4]
        return directory, directory / attachment_id, directory / f"{attachment_id}.json"

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise StoreError(f"{self!r}: {exc}") from exc

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
        await self._run(self._put_sync, ref, blob, self._clock())
        return ref

    def _ensure_dir(self, directory: Path) -> None:
        for level in (directory.parent, directory):
            try:
                os.mkdir(level)
            except FileExistsError:
                continue
            _fsync_dir(level.parent)

    def _put_sync(self, ref: AttachmentRef, blob: bytes, now: float) -> None:
        directory, data_path, meta_path = self._paths(ref.id)
        self._ensure_dir(directory)
        try:
            size: int | None = os.stat(data_path, follow_symlinks=False).st_size
        except FileNotFoundError:
            size = None
        sidecar = msgspec.json.encode(ref)
        try:
            current = meta_path.read_bytes()
        except FileNotFoundError:
            current = None
        # With no data yet, always rewrite the sidecar so its mtime is fresh and
        # ``purge_temp_files`` cannot mistake it for an orphan while we write.
        if size is None or current != sidecar:
            _atomic_write(directory, meta_path.name, sidecar)
        if size != len(blob):  # absent, or truncated by something outside this store
            _atomic_write(directory, data_path.name, blob)
        stamp = int(now * 1_000_000_000)
        os.utime(data_path, ns=(stamp, stamp))

    async def get(self, attachment_id: str) -> bytes:
        """The stored bytes; ``AttachmentCorrupt`` if they no longer hash to the id."""
        _, data_path, _ = self._paths(attachment_id)
        return await self._run(self._get_sync, attachment_id, data_path)

    @staticmethod
    def _get_sync(attachment_id: str, data_path: Path) -> bytes:
        try:
            fd = os.open(data_path, os.O_RDONLY | _O_NOFOLLOW)
        except FileNotFoundError:
            raise AttachmentNotFound(attachment_id) from None
        with os.fdopen(fd, "rb") as file:
            data = file.read()
        if content_id(data) != attachment_id:
            raise AttachmentCorrupt(attachment_id, f"{data_path} does not match its SHA-256")
        return data

    async def meta(self, attachment_id: str) -> AttachmentRef:
        """The stored reference, read from the sidecar and checked against the data file."""
        _, data_path, meta_path = self._paths(attachment_id)
        return await self._run(self._meta_sync, attachment_id, data_path, meta_path)

    @staticmethod
    def _meta_sync(attachment_id: str, data_path: Path, meta_path: Path) -> AttachmentRef:
        try:
            size = os.stat(data_path, follow_symlinks=False).st_size
        except FileNotFoundError:
            raise AttachmentNotFound(attachment_id) from None
        try:
            raw = meta_path.read_bytes()
        except FileNotFoundError:
            raise AttachmentCorrupt(attachment_id, "metadata sidecar is missing") from None
        try:
            ref = msgspec.json.decode(raw, type=AttachmentRef)
        except (msgspec.MsgspecError, ValueError) as exc:
            raise AttachmentCorrupt(attachment_id, f"bad metadata sidecar: {exc}") from exc
        if ref.id != attachment_id:
            raise AttachmentCorrupt(attachment_id, f"sidecar names another id {ref.id}")
        if ref.byte_len != size:
            raise AttachmentCorrupt(
                attachment_id, f"sidecar says {ref.byte_len} bytes, the file has {size}"
            )
        return ref

    async def stored_at(self, attachment_id: str) -> float:
        """When the bytes were last put (the data file's modification time)."""
        _, data_path, _ = self._paths(attachment_id)
        return await self._run(self._stored_at_sync, attachment_id, data_path)

    @staticmethod
    def _stored_at_sync(attachment_id: str, data_path: Path) -> float:
        try:
            return os.stat(data_path, follow_symlinks=False).st_mtime_ns / 1_000_000_000
        except FileNotFoundError:
            raise AttachmentNotFound(attachment_id) from None

    async def list_ids(self) -> list[str]:
        """Every id with a complete data file, sorted; temporary files are skipped."""
        return await self._run(self._list_sync)

    def _shard_dirs(self) -> list[Path]:
        out: list[Path] = []
        for top in os.scandir(self._root):
            if _SHARD.match(top.name) and top.is_dir(follow_symlinks=False):
                out.extend(
                    Path(sub.path)
                    for sub in os.scandir(top.path)
                    if _SHARD.match(sub.name) and sub.is_dir(follow_symlinks=False)
                )
        return out

    def _list_sync(self) -> list[str]:
        ids: list[str] = []
        for directory in self._shard_dirs():
            prefix = directory.parent.name + directory.name
            ids.extend(
                entry.name
                for entry in os.scandir(directory)
                if is_content_id(entry.name)
                and entry.name.startswith(prefix)
                and entry.is_file(follow_symlinks=False)
            )
        return sorted(ids)

    async def delete(self, attachment_id: str) -> bool:
        """Remove the data file and its sidecar; True if the data was present."""
        directory, data_path, meta_path = self._paths(attachment_id)
        return await self._run(self._delete_sync, directory, data_path, meta_path)

    @staticmethod
    def _delete_sync(directory: Path, data_path: Path, meta_path: Path) -> bool:
        existed = True
        try:
            os.unlink(data_path)
        except FileNotFoundError:
            existed = False
        try:
            os.unlink(meta_path)
        except FileNotFoundError:
            if not existed:
                return False
        _fsync_dir(directory)
        return existed

    async def purge_temp_files(self, *, older_than_seconds: float, now: float | None = None) -> int:
        """Remove crash left-overs older than the given age: temporary files and sidecars
        without data. Returns how many files were removed."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        return await self._run(self._purge_sync, cutoff)

    def _purge_sync(self, cutoff: float) -> int:
        removed = 0
        for directory in self._shard_dirs():
            for entry in os.scandir(directory):
                name = entry.name
                stale_tmp = name.startswith(".") and name.endswith(_TMP_SUFFIX)
                orphan = (
                    name.endswith(".json")
                    and is_content_id(name[:-5])
                    and not os.path.lexists(directory / name[:-5])
                )
                if not (stale_tmp or orphan) or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    async def aclose(self) -> None:
        """Refuse further work; idempotent (nothing is held open)."""
        self._closed = True

    def __repr__(self) -> str:
        return f"FileAttachmentStore({str(self._root)!r})"
