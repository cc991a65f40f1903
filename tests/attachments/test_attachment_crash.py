"""A FileAttachmentStore write killed midway leaves nothing under the final name."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from attachments_support import run

from lash.attachments import (
    AttachmentNotFound,
    FileAttachmentStore,
    MemoryAttachmentManifest,
    SessionAttachments,
    SweepReport,
    content_id,
    sweep,
)
from lash.attachments.sweep import TEMP_FILE_MIN_AGE_SECONDS

HERE = Path(__file__).parent


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_a_put_killed_mid_write_is_invisible_and_a_retry_succeeds(tmp_path: Path) -> None:
    from attachment_crash_child import SIZE, payload

    data = payload()
    attachment_id = content_id(data)
    shard = tmp_path / attachment_id[:2] / attachment_id[2:4]

    child = subprocess.Popen(
        [sys.executable, str(HERE / "attachment_crash_child.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else ""
        assert line.strip() == "writing", f"child said {line!r}"
        temps = [p for p in shard.iterdir() if p.name.endswith(".tmp")]
        assert [p.stat().st_size for p in temps] == [SIZE // 2]
        assert temps[0].name.startswith(f".{attachment_id}.")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert not (shard / attachment_id).exists(), "a partial file is visible under its final name"

    async def after_crash() -> None:
        store = FileAttachmentStore(tmp_path)
        assert await store.list_ids() == []
        for call in (store.get, store.meta, store.stored_at):
            with pytest.raises(AttachmentNotFound):
                await call(attachment_id)
        # Young left-overs are kept (a put may still be writing them) ...
        assert await store.purge_temp_files(older_than_seconds=3600) == 0
        ref = await store.put(data, mime="application/octet-stream")
        assert ref.id == attachment_id
        assert await store.get(attachment_id) == data
        assert await store.meta(attachment_id) == ref
        # ... old ones go; the completed attachment is untouched.
        assert await store.purge_temp_files(older_than_seconds=0, now=time.time() + 1) == 1
        assert sorted(p.name for p in shard.iterdir()) == [attachment_id, f"{attachment_id}.json"]
        assert await store.get(attachment_id) == data

    run(after_crash())


def test_purge_removes_orphan_sidecars_but_not_complete_attachments(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileAttachmentStore(tmp_path)
        kept = await store.put(b"kept", mime="text/plain")
        gone = await store.put(b"gone", mime="text/plain")
        (tmp_path / gone.id[:2] / gone.id[2:4] / gone.id).unlink()  # as if killed mid-delete
        assert await store.list_ids() == [kept.id]
        assert await store.purge_temp_files(older_than_seconds=0, now=time.time() + 1) == 1
        assert not (tmp_path / gone.id[:2] / gone.id[2:4] / f"{gone.id}.json").exists()
        assert await store.meta(kept.id) == kept

    run(main())


def test_sweep_purges_only_old_left_overs(tmp_path: Path) -> None:
    async def main() -> None:
        store = FileAttachmentStore(tmp_path)
        manifest = MemoryAttachmentManifest()
        ref = await SessionAttachments(store, manifest, "s1").put(b"kept", mime="text/plain")
        await manifest.mark_committed("s1", [ref])
        shard = tmp_path / ref.id[:2] / ref.id[2:4]
        old, young = shard / f".{ref.id}.old.tmp", shard / f".{ref.id}.young.tmp"
        old.write_bytes(b"partial")
        young.write_bytes(b"partial")
        long_ago = time.time() - 2 * TEMP_FILE_MIN_AGE_SECONDS
        os.utime(old, (long_ago, long_ago))
        report = await sweep(store, manifest, grace_seconds=60)
        assert report == SweepReport(kept=1, temp_files_removed=1)
        assert not old.exists()
        assert young.exists()

    run(main())
