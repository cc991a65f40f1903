"""Every attachment store: content addressing, metadata, listing, deletion, tiers, corruption."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from attachments_support import PNG, STORE_KINDS, FakeClock, make_store, run

from lash.attachments import (
    AttachmentCorrupt,
    AttachmentNotFound,
    FileAttachmentStore,
    MemoryAttachmentManifest,
    MemoryAttachmentStore,
    SqliteAttachmentManifest,
    SqliteAttachmentStore,
    content_id,
    resolve_attachments,
)
from lash.kernel.attachments import AttachmentRef
from lash.runtime.effects import DurabilityTier
from lash.store.base import StoreError

kinds = pytest.mark.parametrize("kind", STORE_KINDS)


@kinds
def test_put_is_content_addressed_and_idempotent(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        try:
            a = await store.put(PNG, mime="image/png", width=2, height=1, label="pixel")
            b = await store.put(bytearray(PNG), mime="image/png", width=2, height=1, label="pixel")
            other = await store.put(b"other bytes", mime="text/plain")
            assert a == b
            assert a.id == hashlib.sha256(PNG).hexdigest() == content_id(PNG)
            assert a.byte_len == len(PNG)
            assert other.id != a.id
            assert await store.list_ids() == sorted([a.id, other.id])
            assert await store.get(a.id) == PNG
            assert await store.get(other.id) == b"other bytes"
        finally:
            await store.aclose()

    run(main())


@kinds
def test_metadata_round_trips_and_mime_is_normalized(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        try:
            ref = await store.put(PNG, mime=" IMAGE/JPG ", width=640, height=480, label="a cat")
            assert ref == AttachmentRef(
                id=content_id(PNG), mime="image/jpeg", byte_len=len(PNG), width=640,
                height=480, label="a cat",
            )  # fmt: skip
            assert ref.is_image
            assert await store.meta(ref.id) == ref
            plain = await store.put(b"%PDF-1.7", mime="Application/PDF")
            assert plain.mime == "application/pdf"
            assert (plain.width, plain.height, plain.label) == (None, None, None)
            assert await store.meta(plain.id) == plain
            # A second put of the same bytes keeps one copy and takes the new metadata.
            relabelled = await store.put(PNG, mime="image/jpeg", label="still a cat")
            assert relabelled.id == ref.id
            assert await store.meta(ref.id) == relabelled
            assert await store.get(ref.id) == PNG
        finally:
            await store.aclose()

    run(main())


@kinds
def test_bad_put_arguments_are_value_errors_and_store_nothing(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        try:
            bad: list[tuple[dict[str, object], str]] = [
                ({"data": b"", "mime": "image/png"}, "empty"),
                ({"data": "text, not bytes", "mime": "text/plain"}, "must be bytes"),
                ({"data": PNG, "mime": ""}, "type/subtype"),
                ({"data": PNG, "mime": "png"}, "type/subtype"),
                ({"data": PNG, "mime": "image/png", "width": -1}, "width"),
                ({"data": PNG, "mime": "image/png", "height": 1.5}, "height"),
                ({"data": PNG, "mime": "image/png", "width": True}, "width"),
                ({"data": PNG, "mime": "image/png", "label": 7}, "label"),
            ]
            for kwargs, message in bad:
                with pytest.raises(ValueError, match=message):
                    await store.put(**kwargs)  # type: ignore[arg-type]
            assert await store.list_ids() == []
        finally:
            await store.aclose()

    run(main())


@kinds
def test_unknown_ids_are_not_found_and_named(kind: str, tmp_path: Path) -> None:
    missing = content_id(b"never stored")

    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        try:
            for call in (store.get, store.meta, store.stored_at):
                with pytest.raises(AttachmentNotFound) as info:
                    await call(missing)
                assert info.value.attachment_id == missing
                assert missing in str(info.value)
                assert isinstance(info.value, StoreError)
            assert await store.delete(missing) is False
        finally:
            await store.aclose()

    run(main())


@kinds
def test_delete_removes_bytes_and_metadata(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        try:
            keep = await store.put(b"keep", mime="text/plain")
            drop = await store.put(b"drop", mime="text/plain")
            assert await store.delete(drop.id) is True
            assert await store.delete(drop.id) is False
            assert await store.list_ids() == [keep.id]
            with pytest.raises(AttachmentNotFound):
                await store.get(drop.id)
            with pytest.raises(AttachmentNotFound):
                await store.meta(drop.id)
            again = await store.put(b"drop", mime="text/plain")  # can be stored again
            assert await store.get(again.id) == b"drop"
        finally:
            await store.aclose()

    run(main())


@kinds
def test_stored_at_is_the_last_put(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(5_000.0)
        store = make_store(kind, tmp_path, clock)
        try:
            ref = await store.put(PNG, mime="image/png")
            assert await store.stored_at(ref.id) == pytest.approx(5_000.0)
            clock.advance(60)
            await store.put(PNG, mime="image/png")
            assert await store.stored_at(ref.id) == pytest.approx(5_060.0)
        finally:
            await store.aclose()

    run(main())


def test_tiers(tmp_path: Path) -> None:
    async def main() -> None:
        assert MemoryAttachmentStore().tier is DurabilityTier.INLINE
        assert MemoryAttachmentManifest().tier is DurabilityTier.INLINE
        assert FileAttachmentStore(tmp_path / "f").tier is DurabilityTier.DURABLE
        async with SqliteAttachmentStore(tmp_path / "a.db") as durable:
            assert durable.tier is DurabilityTier.DURABLE
        async with SqliteAttachmentStore(":memory:") as inline:
            assert inline.tier is DurabilityTier.INLINE
        async with SqliteAttachmentManifest(tmp_path / "m.db") as manifest:
            assert manifest.tier is DurabilityTier.DURABLE
        async with SqliteAttachmentManifest(":memory:") as manifest:
            assert manifest.tier is DurabilityTier.INLINE

    run(main())


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_durable_stores_survive_reopen(kind: str, tmp_path: Path) -> None:
    clock = FakeClock()

    async def write() -> AttachmentRef:
        store = make_store(kind, tmp_path, clock)
        try:
            return await store.put(PNG, mime="image/png", width=1, height=1, label="pixel")
        finally:
            await store.aclose()

    ref = run(write())

    async def read() -> None:
        store = make_store(kind, tmp_path, clock)
        try:
            assert await store.list_ids() == [ref.id]
            assert await store.meta(ref.id) == ref
            assert await store.get(ref.id) == PNG
        finally:
            await store.aclose()

    run(read())


@kinds
def test_closed_stores_refuse_work(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(StoreError):
            await store.put(PNG, mime="image/png")
        with pytest.raises(StoreError):
            await store.list_ids()

    run(main())


def test_resolve_attachments_loads_every_ref(tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryAttachmentStore()
        a = await store.put(b"a", mime="text/plain")
        b = await store.put(b"b", mime="text/plain")
        assert await resolve_attachments(store, [a, b.id, a]) == {a.id: b"a", b.id: b"b"}
        with pytest.raises(AttachmentNotFound):
            await resolve_attachments(store, [content_id(b"zzz")])

    run(main())


def test_large_attachments_round_trip(tmp_path: Path) -> None:
    big = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # > 3 MiB, hashed off-loop

    async def main() -> None:
        for kind in STORE_KINDS:
            store = make_store(kind, tmp_path, FakeClock())
            try:
                ref = await store.put(big, mime="application/octet-stream")
                assert ref.byte_len == len(big)
                assert await store.get(ref.id) == big
            finally:
                await store.aclose()

    run(main())


# ---------------------------------------------------------------- corruption


def _file_paths(store: FileAttachmentStore, attachment_id: str) -> tuple[Path, Path]:
    directory = store.root / attachment_id[:2] / attachment_id[2:4]
    return directory / attachment_id, directory / f"{attachment_id}.json"


def test_file_store_layout_is_sharded_with_a_sidecar(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileAttachmentStore(tmp_path)
        ref = await store.put(PNG, mime="image/png", label="pixel")
        data, sidecar = _file_paths(store, ref.id)
        assert data.read_bytes() == PNG
        assert b'"label":"pixel"' in sidecar.read_bytes()
        files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
        shard = f"{ref.id[:2]}/{ref.id[2:4]}"
        assert files == [ref.id[:2], shard, f"{shard}/{ref.id}", f"{shard}/{ref.id}.json"]

    run(main())


def test_file_store_detects_flipped_bytes_and_bad_sidecars(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileAttachmentStore(tmp_path)
        ref = await store.put(PNG, mime="image/png")
        data, sidecar = _file_paths(store, ref.id)
        flipped = bytearray(PNG)
        flipped[3] ^= 0xFF
        data.write_bytes(bytes(flipped))
        with pytest.raises(AttachmentCorrupt) as info:
            await store.get(ref.id)
        assert info.value.attachment_id == ref.id
        assert isinstance(info.value, StoreError)

        data.write_bytes(PNG[:-1])  # truncated: the sidecar's length disagrees
        with pytest.raises(AttachmentCorrupt, match="bytes"):
            await store.meta(ref.id)
        await store.put(PNG, mime="image/png")  # a re-put repairs a wrong-length file
        assert await store.get(ref.id) == PNG

        sidecar.write_bytes(b"{not json")
        with pytest.raises(AttachmentCorrupt, match="sidecar"):
            await store.meta(ref.id)
        other = content_id(b"other")
        sidecar.write_bytes(f'{{"id":"{other}","mime":"image/png","byte_len":40}}'.encode())
        with pytest.raises(AttachmentCorrupt, match="another id"):
            await store.meta(ref.id)
        sidecar.unlink()
        with pytest.raises(AttachmentCorrupt, match="missing"):
            await store.meta(ref.id)
        assert await store.get(ref.id) == PNG  # the bytes themselves are fine

    run(main())


def test_sqlite_store_detects_corrupt_rows(tmp_path: Path) -> None:
    path = tmp_path / "a.db"

    async def put() -> AttachmentRef:
        async with SqliteAttachmentStore(path) as store:
            return await store.put(PNG, mime="image/png")

    ref = run(put())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE attachments SET data = ? WHERE id = ?", (b"tampered", ref.id))

    async def check() -> None:
        async with SqliteAttachmentStore(path) as store:
            with pytest.raises(AttachmentCorrupt, match="SHA-256"):
                await store.get(ref.id)

    run(check())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE attachments SET data = 'text', byte_len = 'x' WHERE id = ?", (ref.id,))

    async def check_types() -> None:
        async with SqliteAttachmentStore(path) as store:
            with pytest.raises(AttachmentCorrupt, match="str"):
                await store.get(ref.id)
            with pytest.raises(AttachmentCorrupt, match="metadata"):
                await store.meta(ref.id)

    run(check_types())


def test_sqlite_schema_version_gate(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    run(SqliteAttachmentStore(path).aclose())
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE lash_attachment_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteAttachmentStore(path)
    # Each component has its own version stamp.
    SqliteAttachmentManifest(path).close()


def test_file_store_root_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        FileAttachmentStore(target)
    with pytest.raises(ValueError, match="directory"):
        SqliteAttachmentStore(tmp_path)


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_session_put_hashes_the_bytes_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session wrapper hands the store bytes it already hashed (no second SHA-256)."""
    import lash.attachments.base as base
    from lash.attachments import SessionAttachments

    calls: list[int] = []
    real = base.content_id

    def counting(data: bytes) -> str:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(base, "content_id", counting)

    async def body() -> None:
        store = make_store(kind, tmp_path, FakeClock())
        session = SessionAttachments(store, MemoryAttachmentManifest(), "s")
        try:
            ref = await session.put(PNG, mime="image/png", label="dot")
            assert calls == [len(PNG)]
            assert ref.id == real(PNG)
            assert await store.get(ref.id) == PNG
            assert (await store.meta(ref.id)).label == "dot"
        finally:
            await store.aclose()

    run(body())
