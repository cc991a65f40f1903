"""The store conformance suite, run against every backend in this package."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from lash.store.base import SessionStore
from lash.store.memory import MemoryStore
from lash.store.sqlite import SqliteStore
from lash.testing.store_conformance import StoreConformance, StoreFactory


class TestStoreConformance(StoreConformance):
    @pytest.fixture(params=["memory", "sqlite"])
    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
        made: list[SqliteStore] = []
        counter = itertools.count()

        def sqlite() -> SessionStore:
            store = SqliteStore(tmp_path / f"store-{next(counter)}")
            made.append(store)
            return store

        yield MemoryStore if request.param == "memory" else sqlite
        for store in made:  # the suite closes what it makes; this is a safety net
            store.close()

    def rows_written(self, store: SessionStore) -> int | None:
        return store.rows_written if isinstance(store, SqliteStore) else None
