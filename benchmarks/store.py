"""Store benchmark: what persistence adds to a turn, and how big the database gets.

Runs the ARCHITECTURE workload (the model asks for two tool calls, the tools
run, the model answers) for 200 turns in one session through the real runtime,
once with the in-memory store and once with the SQLite store, and prints the
median per-turn time of each, the difference (budget: SQLite adds <= 1.5 ms per
turn), and the SQLite database size after the run (budget: no larger than the
leanest peer's store; measured here: OpenAI Agents SDK ``SQLiteSession`` 190 KB).

    python benchmarks/store.py [--turns 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import ANSWER, prompt, workload_core

EXTRA_BUDGET_US = 1500.0
SIZE_BUDGET_BYTES = 190_000


async def run_turns(store: Any, turns: int, attachments: str | None = None) -> list[float]:
    samples = []
    async with (
        workload_core(store, attachments=attachments) as core,
        core.session("bench") as session,
    ):
        for i in range(turns):
            started = time.perf_counter()
            result = await session.run(prompt(i))
            samples.append((time.perf_counter() - started) * 1e6)
            assert result.text == ANSWER, result.outcome
            assert len(result.tool_calls) == 2
    return samples


async def run_postgres(turns: int) -> list[float] | None:
    """The same turns on PostgreSQL (a throwaway schema), or None when it is not reachable."""
    url = os.environ.get("LASH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg
        from psycopg import sql

        from lash.store.postgres import PostgresStore
    except ImportError:
        print("  postgres: skipped (install the postgres extra)")
        return None
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        print(f"  postgres: skipped (cannot connect: {exc})")
        return None
    schema = f"lash_bench_{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            samples: list[float] = []
            for name, n in ((f"{schema}_warm", 5), (schema, turns)):
                store = PostgresStore(url, schema=name)
                try:
                    samples = await run_turns(store, n, f"file:///{scratch}")
                finally:
                    await store.aclose()
            return samples
    finally:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for name in (schema, f"{schema}_warm"):
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                    )
        except psycopg.Error:
            pass


async def langgraph_sqlite_bytes(turns: int) -> int | None:
    """LangGraph's SQLite saver after the same turns, or None when it is not installed."""
    try:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from peers import PeerUnavailable, langgraph_peer
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "langgraph.sqlite3"
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            try:
                await langgraph_peer.run_turns(turns, checkpointer=saver)
            except PeerUnavailable:
                return None
        return sum(p.stat().st_size for p in Path(scratch).iterdir())


def db_bytes(directory: Path, name: str) -> int:
    """Bytes of one SQLite database with its WAL and shared-memory files."""
    return sum(p.stat().st_size for p in directory.glob(f"{name}*") if p.is_file())


async def main(turns: int) -> None:
    await run_turns("memory://", 5)  # warm up imports and caches
    memory = await run_turns("memory://", turns)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch)
        await run_turns(f"sqlite:///{data / 'warm'}", 5)
        sqlite = await run_turns(f"sqlite:///{data / 'lash'}", turns)
        size = db_bytes(data / "lash", "lash.sqlite3")
        manifest = db_bytes(data / "lash", "attachments-manifest.sqlite3")
    m, s = statistics.median(memory), statistics.median(sqlite)
    extra = s - m
    print(f"{turns} turns of the workload in one session (2 tool calls + answer per turn)")
    print(f"  memory store: median {m:8.0f} us per turn")
    print(f"  sqlite store: median {s:8.0f} us per turn")
    verdict = "within" if extra <= EXTRA_BUDGET_US else "OVER"
    print(f"  sqlite extra: {extra:8.0f} us per turn  (budget {EXTRA_BUDGET_US:.0f} us: {verdict})")
    late, early = statistics.median(sqlite[-20:]), statistics.median(sqlite[20:40])
    print(f"  sqlite growth: turns {turns - 20}-{turns} over 20-40 = {late / early:.2f}x")
    postgres = await run_postgres(turns)
    if postgres is not None:
        p = statistics.median(postgres)
        print(f"  postgres:     median {p:8.0f} us per turn, extra {p - m:6.0f} us (no budget set)")
    verdict = "within" if size <= SIZE_BUDGET_BYTES else "OVER"
    print(
        f"  sqlite session database after {turns} turns: {size / 1024:.0f} KiB ({size} bytes; "
        f"budget {SIZE_BUDGET_BYTES} bytes: {verdict})"
    )
    print(f"  (beside it, the empty attachment manifest: {manifest / 1024:.0f} KiB)")
    peer = await langgraph_sqlite_bytes(turns)
    if peer is None:
        print("  langgraph sqlite saver: skipped (pip install langgraph-checkpoint-sqlite)")
    else:
        print(
            f"  langgraph sqlite saver after {turns} turns: {peer / 1024:.0f} KiB "
            f"({peer / size:.0f}x ours)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    if args.turns < 40:
        parser.error("--turns must be at least 40")
    asyncio.run(main(args.turns))
