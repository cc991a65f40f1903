"""The GC property over random interleavings of put / intent / commit / sweep across sessions.

A model tracks the manifest rows and the stored bytes. At every sweep:
bytes some session committed are never deleted (and still read back intact),
and uncommitted bytes whose every claim is older than the grace are always
deleted; everything the sweep reports and leaves behind matches the model.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from attachments_support import FakeClock, make_manifest, make_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lash.attachments import (
    AttachmentNotFound,
    AttachmentStore,
    SessionAttachments,
    SweepReport,
    content_id,
    sweep,
)

SESSIONS = ("s1", "s2", "s3")
BLOBS = tuple(f"blob-{i}".encode() for i in range(3))
IDS = tuple(content_id(b) for b in BLOBS)
GRACE = 10.0

session = st.sampled_from(SESSIONS)
blob = st.integers(0, len(BLOBS) - 1)
op = st.one_of(
    st.tuples(st.just("put"), session, blob),
    st.tuples(st.just("intent"), session, blob),  # a put that crashed before its bytes landed
    st.tuples(st.just("raw"), blob),  # bytes stored outside any session
    st.tuples(st.just("commit"), session, blob),
    st.tuples(st.just("tick"), st.integers(0, 2 * int(GRACE))),
    st.tuples(st.just("sweep")),
    st.tuples(st.just("forget"), session),  # a session was deleted
)
programs = st.lists(op, min_size=1, max_size=40)


@dataclass
class Model:
    rows: dict[tuple[str, int], list[float | bool]] = field(default_factory=dict)
    stored: dict[int, float] = field(default_factory=dict)  # blob -> last put time

    def intend(self, s: str, b: int, now: float) -> None:
        row = self.rows.setdefault((s, b), [now, False])
        row[0] = max(float(row[0]), now)

    def committed(self, b: int) -> bool:
        return any(row[1] for (_, rb), row in self.rows.items() if rb == b)

    def sweep(self, now: float) -> tuple[SweepReport, set[int]]:
        cutoff = now - GRACE
        kept = young = removed = 0
        deleted: set[int] = set()
        candidates = set(self.stored) | {b for (_, b) in self.rows if not self.committed(b)}
        for b in candidates:
            if self.committed(b):
                kept += 1
                continue
            times = [float(row[0]) for (_, rb), row in self.rows.items() if rb == b]
            if b in self.stored:
                times.append(self.stored[b])
            if max(times) >= cutoff:
                young += 1
                continue
            if self.stored.pop(b, None) is not None:
                deleted.add(b)
            for key in [k for k in self.rows if k[1] == b]:
                del self.rows[key]
                removed += 1
        report = SweepReport(kept=kept, deleted=len(deleted), young=young, intents_removed=removed)
        return report, deleted


async def _execute(program: list[tuple[object, ...]], store_kind: str, manifest_kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock(1_000.0)
        store: AttachmentStore = make_store(store_kind, Path(tmp), clock)
        manifest = make_manifest(manifest_kind, Path(tmp), clock)
        views = {s: SessionAttachments(store, manifest, s, clock=clock) for s in SESSIONS}
        model = Model()
        try:
            for step in program:
                await _step(step, store, manifest, views, model, clock)
                assert await store.list_ids() == sorted(IDS[b] for b in model.stored)
        finally:
            await store.aclose()
            await manifest.aclose()


async def _step(
    step: tuple[object, ...],
    store: AttachmentStore,
    manifest: object,
    views: dict[str, SessionAttachments],
    model: Model,
    clock: FakeClock,
) -> None:
    kind = step[0]
    if kind == "put":
        s, b = str(step[1]), int(step[2])  # type: ignore[call-overload]
        await views[s].put(BLOBS[b], mime="text/plain")
        model.intend(s, b, clock.now)
        model.stored[b] = clock.now
    elif kind == "intent":
        s, b = str(step[1]), int(step[2])  # type: ignore[call-overload]
        await views[s].manifest.record_intent(s, IDS[b], at=clock.now)
        model.intend(s, b, clock.now)
    elif kind == "raw":
        b = int(step[1])  # type: ignore[call-overload]
        await store.put(BLOBS[b], mime="text/plain")
        model.stored[b] = clock.now
    elif kind == "commit":
        s, b = str(step[1]), int(step[2])  # type: ignore[call-overload]
        model.rows.setdefault((s, b), [clock.now, False])[1] = True
        if b in model.stored:
            await views[s].commit([IDS[b]])
        else:
            with pytest.raises(AttachmentNotFound):
                await views[s].commit([IDS[b]])
    elif kind == "tick":
        clock.advance(float(step[1]))  # type: ignore[arg-type]
    elif kind == "forget":
        s = str(step[1])
        await views[s].manifest.forget_session(s)
        for key in [k for k in model.rows if k[0] == s]:
            del model.rows[key]
    else:
        committed_before = {b for b in model.stored if model.committed(b)}
        expected, expected_deleted = model.sweep(clock.now)
        report = await sweep(store, views["s1"].manifest, grace_seconds=GRACE, now=clock.now)
        # The safety property, stated directly: committed bytes survive and read back.
        for b in committed_before:
            assert await store.get(IDS[b]) == BLOBS[b]
        # The liveness property: every uncommitted, expired attachment is gone.
        assert set(report.deleted_ids) == {IDS[b] for b in expected_deleted}
        assert report == SweepReport(
            kept=expected.kept,
            deleted=expected.deleted,
            young=expected.young,
            intents_removed=expected.intents_removed,
            deleted_ids=report.deleted_ids,
        )
    entries = await views["s1"].manifest.entries()
    assert {
        (e.session_id, IDS.index(e.attachment_id)): e.committed_at is not None for e in entries
    } == {key: bool(row[1]) for key, row in model.rows.items()}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_gc_property_in_memory(program: list[tuple[object, ...]]) -> None:
    asyncio.run(_execute(program, "memory", "memory"))


@pytest.mark.parametrize("store_kind", ["file", "sqlite"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_gc_property_on_durable_backends(
    store_kind: str, program: list[tuple[object, ...]]
) -> None:
    asyncio.run(_execute(program, store_kind, "sqlite"))
