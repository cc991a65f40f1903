"""The write-ahead manifest, the session wrapper, and the GC sweep's rules and races."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from attachments_support import (
    MANIFEST_KINDS,
    PNG,
    STORE_KINDS,
    FakeClock,
    make_manifest,
    make_store,
    run,
)

from lash.attachments import (
    AttachmentManifest,
    AttachmentNotFound,
    AttachmentStore,
    ManifestEntry,
    ManifestStatus,
    MemoryAttachmentManifest,
    MemoryAttachmentStore,
    SessionAttachments,
    SqliteAttachmentManifest,
    SweepReport,
    content_id,
    sweep,
)
from lash.kernel.attachments import AttachmentRef
from lash.runtime.effects import DurabilityTier
from lash.store.base import StoreError

A = content_id(b"a")
B = content_id(b"b")
GRACE = 100.0


def _ordered(*entries: ManifestEntry) -> list[ManifestEntry]:
    return sorted(entries, key=lambda e: (e.attachment_id, e.session_id))


@pytest.mark.parametrize("kind", MANIFEST_KINDS)
def test_manifest_rows_are_per_session_and_commits_stick(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        manifest = make_manifest(kind, tmp_path, FakeClock())
        try:
            await manifest.record_intent("s1", A, at=10)
            await manifest.record_intent("s2", A, at=20)
            await manifest.record_intent("s1", A, at=5)  # an older intent never moves it back
            await manifest.record_intent("s1", B, at=25)
            await manifest.record_intent("s1", B, at=30)  # a newer one refreshes it
            assert await manifest.entries() == _ordered(
                ManifestEntry(session_id="s1", attachment_id=A, intent_at=10),
                ManifestEntry(session_id="s2", attachment_id=A, intent_at=20),
                ManifestEntry(session_id="s1", attachment_id=B, intent_at=30),
            )
            await manifest.mark_committed("s2", [A], at=40)
            await manifest.mark_committed("s2", [A], at=50)  # the first commit time stays
            await manifest.mark_committed(
                "s3", [AttachmentRef(id=B, mime="x/y", byte_len=1)], at=60
            )
            await manifest.mark_committed("s3", [], at=70)
            assert await manifest.entries(attachment_id=A) == [
                ManifestEntry(session_id="s1", attachment_id=A, intent_at=10),
                ManifestEntry(session_id="s2", attachment_id=A, intent_at=20, committed_at=40),
            ]
            assert await manifest.entries(session_id="s3") == [
                ManifestEntry(session_id="s3", attachment_id=B, intent_at=60, committed_at=60),
            ]
            assert await manifest.statuses() == {
                A: ManifestStatus(committed=True, newest_intent_at=20),
                B: ManifestStatus(committed=True, newest_intent_at=60),
            }
            assert await manifest.forget_session("s3") == 1
            assert (await manifest.statuses())[B] == ManifestStatus(
                committed=False, newest_intent_at=30
            )
            async with manifest.hold(A) as held:
                assert held.status == ManifestStatus(committed=True, newest_intent_at=20)
                assert await held.forget() == 2
            assert await manifest.entries(attachment_id=A) == []
            async with manifest.hold(A) as held:
                assert held.status is None
        finally:
            await manifest.aclose()

    run(main())


async def _forget_then_fail(manifest: AttachmentManifest) -> None:
    async with manifest.hold(A) as held:
        await held.forget()
        raise RuntimeError("boom")


@pytest.mark.parametrize("kind", MANIFEST_KINDS)
def test_a_failing_hold_forgets_nothing(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        manifest = make_manifest(kind, tmp_path, FakeClock())
        try:
            await manifest.record_intent("s1", A, at=1)
            with pytest.raises(RuntimeError, match="boom"):
                await _forget_then_fail(manifest)
            assert len(await manifest.entries()) == 1
            await manifest.record_intent("s2", A, at=2)  # the lock was released
            assert len(await manifest.entries()) == 2
        finally:
            await manifest.aclose()

    run(main())


def test_sqlite_manifest_survives_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        async with SqliteAttachmentManifest(tmp_path / "m.db") as manifest:
            await manifest.record_intent("s1", A, at=1.5)
            await manifest.mark_committed("s1", [A], at=2.5)
        async with SqliteAttachmentManifest(tmp_path / "m.db") as manifest:
            assert await manifest.entries() == [
                ManifestEntry(session_id="s1", attachment_id=A, intent_at=1.5, committed_at=2.5)
            ]

    run(main())


# ---------------------------------------------------------------- SessionAttachments


class _RefusingManifest(MemoryAttachmentManifest):
    async def record_intent(
        self, session_id: str, attachment_id: str, *, at: float | None = None
    ) -> None:
        raise StoreError("manifest is down")


def test_session_put_records_the_intent_before_the_bytes() -> None:
    async def main() -> None:
        clock = FakeClock(500.0)
        order: list[str] = []
        manifest = MemoryAttachmentManifest()
        store = MemoryAttachmentStore(clock=clock)

        # the session hands the store bytes it hashed itself (put_prepared)
        real_intent, real_put = manifest.record_intent, store.put_prepared

        async def intent(*args: object, **kwargs: object) -> None:
            order.append("intent")
            await real_intent(*args, **kwargs)  # type: ignore[arg-type]

        async def put(*args: object, **kwargs: object) -> AttachmentRef:
            order.append("put")
            return await real_put(*args, **kwargs)  # type: ignore[arg-type]

        manifest.record_intent = intent  # type: ignore[method-assign]
        store.put_prepared = put  # type: ignore[method-assign]
        session = SessionAttachments(store, manifest, "s1", clock=clock)
        ref = await session.put(PNG, mime="image/jpg", label="x")
        assert order == ["intent", "put"]
        assert ref.mime == "image/jpeg"
        assert await manifest.entries() == [
            ManifestEntry(session_id="s1", attachment_id=ref.id, intent_at=500.0)
        ]
        assert await session.get(ref.id) == PNG
        assert await session.meta(ref.id) == ref

    run(main())


def test_bytes_never_land_when_the_intent_cannot_be_recorded() -> None:
    async def main() -> None:
        store = MemoryAttachmentStore()
        session = SessionAttachments(store, _RefusingManifest(), "s1")
        with pytest.raises(StoreError, match="manifest is down"):
            await session.put(PNG, mime="image/png")
        assert await store.list_ids() == []
        with pytest.raises(ValueError, match="empty"):
            await session.put(b"", mime="image/png")

    run(main())


def test_session_commit_marks_rows_and_reports_missing_bytes() -> None:
    async def main() -> None:
        clock = FakeClock(10.0)
        manifest = MemoryAttachmentManifest()
        store = MemoryAttachmentStore()
        session = SessionAttachments(store, manifest, "s1", clock=clock)
        ref = await session.put(b"a", mime="text/plain")
        clock.advance(5)
        assert await session.commit([ref, ref.id]) == [ref.id]
        assert await session.commit([]) == []
        gone = content_id(b"swept")
        with pytest.raises(AttachmentNotFound) as info:
            await session.commit([ref, gone])
        assert info.value.attachment_id == gone
        assert "'s1'" in str(info.value)
        # The row stays committed, so a later put of the same bytes is protected at once.
        assert [e.committed_at for e in await manifest.entries(attachment_id=gone)] == [15.0]
        assert await session.commit([gone], verify=False) == [gone]

    run(main())


def test_session_tier_is_durable_only_when_both_halves_are(tmp_path: Path) -> None:
    async def main() -> None:
        durable_store = make_store("file", tmp_path, FakeClock())
        durable_manifest = SqliteAttachmentManifest(tmp_path / "m.db")
        memory_store, memory_manifest = MemoryAttachmentStore(), MemoryAttachmentManifest()
        tier = DurabilityTier
        assert SessionAttachments(durable_store, durable_manifest, "s").tier is tier.DURABLE
        assert SessionAttachments(durable_store, memory_manifest, "s").tier is tier.INLINE
        assert SessionAttachments(memory_store, durable_manifest, "s").tier is tier.INLINE
        with pytest.raises(ValueError, match="session id"):
            SessionAttachments(memory_store, memory_manifest, " ")
        await durable_manifest.aclose()

    run(main())


# ---------------------------------------------------------------- sweep rules


@pytest.mark.parametrize("store_kind", STORE_KINDS)
@pytest.mark.parametrize("manifest_kind", MANIFEST_KINDS)
def test_sweep_rules(store_kind: str, manifest_kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(1_000.0)
        store = make_store(store_kind, tmp_path, clock)
        manifest = make_manifest(manifest_kind, tmp_path, clock)
        s1 = SessionAttachments(store, manifest, "s1", clock=clock)
        s2 = SessionAttachments(store, manifest, "s2", clock=clock)
        try:
            shared = await s1.put(b"shared", mime="text/plain")  # s1 commits, s2 only intends
            await s2.put(b"shared", mime="text/plain")
            await s1.commit([shared])
            orphan = await s2.put(b"orphan", mime="text/plain")  # never committed
            raw = await store.put(b"raw", mime="text/plain")  # no manifest rows at all
            await manifest.record_intent("s3", content_id(b"lost"))  # bytes never landed

            report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now + GRACE - 1)
            assert report == SweepReport(kept=1, young=3)
            assert report.deleted_ids == ()

            clock.advance(GRACE + 1)
            fresh = await s2.put(b"fresh", mime="text/plain")
            report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
            assert report.kept == 1
            assert report.young == 1
            assert sorted(report.deleted_ids) == sorted([orphan.id, raw.id])
            assert report.deleted == 2
            assert report.intents_removed == 2  # orphan's row and the lost bytes' row
            assert sorted(await store.list_ids()) == sorted([shared.id, fresh.id])
            assert await store.get(shared.id) == b"shared"
            # s2's stale intent on the committed bytes is left alone.
            assert len(await manifest.entries(attachment_id=shared.id)) == 2
            assert await manifest.entries(session_id="s3") == []

            # Once the committing session is deleted, the shared bytes become collectable.
            await manifest.forget_session("s1")
            clock.advance(GRACE + 1)
            report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
            assert sorted(report.deleted_ids) == sorted([shared.id, fresh.id])
            assert await store.list_ids() == []
            assert await manifest.entries() == []
        finally:
            await store.aclose()
            await manifest.aclose()

    run(main())


def test_a_recent_put_keeps_bytes_even_with_a_stale_intent() -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        store, manifest = MemoryAttachmentStore(clock=clock), MemoryAttachmentManifest()
        await SessionAttachments(store, manifest, "s1", clock=clock).put(b"x", mime="a/b")
        clock.advance(GRACE * 2)
        await store.put(b"x", mime="a/b")  # re-put outside any session: refreshes stored_at
        report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
        assert report == SweepReport(young=1)
        with pytest.raises(ValueError, match="grace_seconds"):
            await sweep(store, manifest, grace_seconds=-1)

    run(main())


@pytest.mark.parametrize("kind", MANIFEST_KINDS)
def test_a_repeated_intent_restarts_the_grace(kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        store, manifest = MemoryAttachmentStore(clock=clock), make_manifest(kind, tmp_path, clock)
        await manifest.record_intent("s1", A)  # a put that crashed before its bytes landed
        clock.advance(GRACE * 2)
        await manifest.record_intent("s1", A)  # the retried turn intends the same bytes again
        report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
        assert report == SweepReport(young=1)
        clock.advance(GRACE + 1)
        report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
        assert report == SweepReport(intents_removed=1)
        await manifest.aclose()

    run(main())


def test_sweep_defaults_to_the_wall_clock() -> None:
    async def main() -> None:
        store, manifest = MemoryAttachmentStore(), MemoryAttachmentManifest()
        await SessionAttachments(store, manifest, "s1").put(b"x", mime="a/b")
        assert (await sweep(store, manifest, grace_seconds=3600)).young == 1
        assert (await sweep(store, manifest, grace_seconds=0, now=1e12)).deleted == 1

    run(main())


# ---------------------------------------------------------------- races


class _GatedStore:
    """Delegates to a store, but ``delete`` waits for ``release`` after signalling ``deleting``."""

    def __init__(self, inner: AttachmentStore) -> None:
        self.inner = inner
        self.deleting = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def delete(self, attachment_id: str) -> bool:
        self.deleting.set()
        await self.release.wait()
        return await self.inner.delete(attachment_id)


@pytest.mark.parametrize(
    ("manifest_kind", "same_object"),
    [("memory", True), ("sqlite", True), ("sqlite", False)],
    ids=["memory", "sqlite", "sqlite-two-connections"],
)
def test_a_put_racing_a_sweep_keeps_its_bytes(
    manifest_kind: str, same_object: bool, tmp_path: Path
) -> None:

    async def main() -> None:
        clock = FakeClock(0.0)
        inner = make_store("file", tmp_path, clock)
        store = _GatedStore(inner)
        sweeper_manifest = make_manifest(manifest_kind, tmp_path, clock)
        writer_manifest = (
            sweeper_manifest if same_object else make_manifest(manifest_kind, tmp_path, clock)
        )
        old = SessionAttachments(inner, sweeper_manifest, "old", clock=clock)
        new = SessionAttachments(inner, writer_manifest, "new", clock=clock)
        ref = await old.put(PNG, mime="image/png")
        clock.advance(GRACE + 1)

        swept = asyncio.create_task(
            sweep(store, sweeper_manifest, grace_seconds=GRACE, now=clock.now)  # type: ignore[arg-type]
        )
        await asyncio.wait_for(store.deleting.wait(), 5)
        put = asyncio.create_task(new.put(PNG, mime="image/png"))
        await asyncio.sleep(0.05)
        assert not put.done(), "the intent must wait for the sweep's hold on this id"
        store.release.set()
        report, again = await asyncio.gather(swept, put)
        assert report.deleted_ids == (ref.id,)  # the stale copy went ...
        assert again == ref
        assert await inner.get(ref.id) == PNG  # ... and the racing put wrote it anew
        [entry] = await writer_manifest.entries(attachment_id=ref.id)
        assert entry.session_id == "new"
        await new.commit([again])
        for manifest in {id(m): m for m in (sweeper_manifest, writer_manifest)}.values():
            await manifest.aclose()

    run(main())


@pytest.mark.parametrize("manifest_kind", MANIFEST_KINDS)
def test_an_intent_recorded_before_the_hold_keeps_the_bytes(
    manifest_kind: str, tmp_path: Path
) -> None:
    async def main() -> None:
        clock = FakeClock(0.0)
        store = make_store("memory", tmp_path, clock)
        manifest: AttachmentManifest = make_manifest(manifest_kind, tmp_path, clock)
        ref = await SessionAttachments(store, manifest, "old", clock=clock).put(b"x", mime="a/b")
        clock.advance(GRACE + 1)
        statuses = manifest.statuses

        async def stale_view() -> dict[str, ManifestStatus]:
            # The sweep reads statuses, then another session's intent lands.
            view = await statuses()
            await manifest.record_intent("new", ref.id, at=clock.now)
            return view

        manifest.statuses = stale_view  # type: ignore[method-assign]
        report = await sweep(store, manifest, grace_seconds=GRACE, now=clock.now)
        assert report == SweepReport(young=1)
        assert await store.get(ref.id) == b"x"
        await manifest.aclose()

    run(main())
