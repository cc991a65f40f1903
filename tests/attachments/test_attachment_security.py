"""Attachment ids are validated before they reach a path or a query; nothing escapes the root."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from attachments_support import PNG, STORE_KINDS, FakeClock, make_manifest, make_store, run

from lash.attachments import (
    AttachmentManifest,
    AttachmentStore,
    FileAttachmentStore,
    MemoryAttachmentManifest,
    MemoryAttachmentStore,
    SessionAttachments,
    SqliteAttachmentManifest,
    SqliteAttachmentStore,
    check_attachment_id,
    content_id,
)

GOOD = content_id(b"good")
BAD_ID = "lowercase hex SHA-256"

BAD_IDS: list[object] = [
    "../" * 8 + "etc/passwd",
    "../" + GOOD[3:],
    "/etc/passwd",
    "/" + GOOD[1:],
    GOOD.upper(),
    "A" + GOOD[1:],
    GOOD[:-1],
    GOOD + "0",
    GOOD[:-1] + "\x00",
    GOOD + "\n",
    GOOD[:2] + "/" + GOOD[3:],
    GOOD[:-1] + "g",
    "",
    "sha256:" + GOOD,
    "'; DROP TABLE attachments; --",
    None,
    123,
    GOOD.encode(),
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_check_attachment_id_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="lowercase hex SHA-256"):
        check_attachment_id(bad)
    assert check_attachment_id(GOOD) == GOOD


def _store_calls(store: AttachmentStore) -> list[Callable[[Any], Awaitable[object]]]:
    return [store.get, store.meta, store.stored_at, store.delete]


def _forbid_io(monkeypatch: pytest.MonkeyPatch, target: object) -> None:
    """Make any storage access of ``target`` fail the test."""

    def boom(*args: object, **kwargs: object) -> Any:
        raise AssertionError("storage was touched before the id was validated")

    if isinstance(target, FileAttachmentStore):
        monkeypatch.setattr(target, "_run", boom)
    elif isinstance(target, SqliteAttachmentStore | SqliteAttachmentManifest):
        monkeypatch.setattr(target._db, "call", boom)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_bad_ids_never_reach_storage(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        await store.put(PNG, mime="image/png")
        _forbid_io(monkeypatch, store)
        for bad in BAD_IDS:
            for call in _store_calls(store):
                with pytest.raises(ValueError, match=BAD_ID):
                    await call(bad)

    run(main())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_bad_ids_never_reach_the_manifest(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        manifest = make_manifest(kind, tmp_path, FakeClock())
        _forbid_io(monkeypatch, manifest)
        for bad in BAD_IDS:
            with pytest.raises(ValueError, match=BAD_ID):
                await manifest.record_intent("s", bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=BAD_ID):
                await manifest.mark_committed("s", [GOOD, bad])  # type: ignore[list-item]
            if bad is not None:  # None means "no filter" here
                with pytest.raises(ValueError, match=BAD_ID):
                    await manifest.entries(attachment_id=bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=BAD_ID):
                async with manifest.hold(bad):  # type: ignore[arg-type]
                    pass
        for bad_session in ("", "   ", None, 7):
            with pytest.raises(ValueError, match="session id"):
                await manifest.record_intent(bad_session, GOOD)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="session id"):
                await manifest.forget_session(bad_session)  # type: ignore[arg-type]

    run(main())


def test_a_batch_with_one_bad_id_commits_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        for manifest in (MemoryAttachmentManifest(), SqliteAttachmentManifest(tmp_path / "m.db")):
            with pytest.raises(ValueError, match=BAD_ID):
                await manifest.mark_committed("s", [GOOD, "../escape"])
            assert await manifest.entries() == []
            with pytest.raises(ValueError, match="collection"):
                await manifest.mark_committed("s", GOOD)
            await manifest.aclose()

    run(main())


def test_traversal_attempts_touch_nothing_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    bait = outside / GOOD  # what "../outside/<id>" would name
    bait.write_bytes(b"bait")

    async def main() -> None:
        store = FileAttachmentStore(root)
        session = SessionAttachments(store, MemoryAttachmentManifest(), "../../outside")
        ref = await session.put(PNG, mime="image/png")
        before = _snapshot(tmp_path)
        attempts: list[object] = [
            *BAD_IDS,
            str(bait),
            f"../outside/{GOOD}",
            f"..\\outside\\{GOOD}",
            str(outside / "secret"),
        ]
        for bad in attempts:
            for call in _store_calls(store):
                with pytest.raises(ValueError, match=BAD_ID):
                    await call(bad)
            with pytest.raises(ValueError, match=BAD_ID):
                await session.get(bad)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=BAD_ID):
                await session.commit([bad])  # type: ignore[list-item]
        assert _snapshot(tmp_path) == before
        assert (outside / "secret").read_bytes() == b"do not touch"
        assert bait.read_bytes() == b"bait"
        # Everything the store wrote is under its root; session ids never become paths.
        written = {p for p in tmp_path.rglob("*") if p.is_file()} - {bait, outside / "secret"}
        assert written
        assert all(p.is_relative_to(root) for p in written)
        assert await store.list_ids() == [ref.id]

    run(main())


def test_files_planted_in_the_root_are_not_listed(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileAttachmentStore(tmp_path)
        ref = await store.put(PNG, mime="image/png")
        shard = tmp_path / ref.id[:2] / ref.id[2:4]
        (shard / "README").write_text("x")
        (shard / GOOD).write_bytes(b"wrong shard")  # a valid id in the wrong directory
        (tmp_path / "zz").mkdir()
        (tmp_path / "notes.txt").write_text("x")
        if os.name == "posix":
            target = tmp_path / "elsewhere"
            target.write_bytes(b"x")
            other = content_id(b"linked")
            link_dir = tmp_path / other[:2] / other[2:4]
            link_dir.mkdir(parents=True)
            (link_dir / other).symlink_to(target)
        assert await store.list_ids() == [ref.id]

    run(main())


def test_session_ids_are_data_in_sql(tmp_path: Path) -> None:
    async def main() -> None:
        manifest: AttachmentManifest = SqliteAttachmentManifest(tmp_path / "m.db")
        store = MemoryAttachmentStore()
        evil = "x'); DELETE FROM attachment_manifest; --"
        session = SessionAttachments(store, manifest, evil)
        ref = await session.put(PNG, mime="image/png")
        await session.commit([ref])
        [entry] = await manifest.entries(session_id=evil)
        assert entry.session_id == evil
        assert entry.committed_at is not None
        await manifest.aclose()

    run(main())
