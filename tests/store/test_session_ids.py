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


def test_store_errors_survive_pickling_with_their_fields() -> None:
    """Durable engines store failures by pickling them; types and fields must survive."""
    import pickle

    from lash.store.base import GraphError, HeadRevisionConflict, TurnCommitConflict, TurnStamp

    stamp = TurnStamp(session_id="s", turn_id="t", commit_hash="ab" * 32)
    errors = [
        HeadRevisionConflict("s", 1, 2),
        TurnCommitConflict(stamp, "cd" * 32),
        GraphError("s", "n", "unknown_parent", "the node is missing"),
    ]
    for error in errors:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert vars(again) == vars(error)
