"""Every backend refuses the same unstorable session ids, before touching anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lash.store import MemoryStore, RuntimeCommit, SqliteStore


@pytest.mark.parametrize("bad", ["", "  ", "a\x00b", "lone\ud800surrogate"])
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_unstorable_session_ids_are_refused(bad: str, backend: str, tmp_path: Path) -> None:
    async def main() -> None:
        store = MemoryStore() if backend == "memory" else SqliteStore(tmp_path)
        try:
            with pytest.raises(ValueError, match="session id must"):
                await store.load(bad)
            with pytest.raises(ValueError, match="session id must"):
                await store.commit(RuntimeCommit(session_id=bad, expected_revision=None))
        finally:
            await store.aclose()

    asyncio.run(main())
