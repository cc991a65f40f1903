"""Helpers of the PostgreSQL store tests, and the child processes they start.

As a script: ``python postgres_support.py race <url> <schema> <name> <rounds>``
races to commit revisions 1..rounds (after a ``go`` line on stdin) and prints
one JSON line per attempt; ``python postgres_support.py crash <url>
<schema> <app-name>`` dies inside a huge commit's transaction (see
``store_crash_child``, whose huge commit it shares).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import sys
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from store_crash_child import HEAD_USAGE as HEAD_USAGE
from store_crash_child import HUGE as HUGE
from store_crash_child import huge_commit

from lash.kernel.messages import user_message
from lash.store.base import HeadRevisionConflict, RuntimeCommit

URL = os.environ.get("LASH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The test server; CI and the project's machines run PostgreSQL 15 here."""

RUN_PREFIX = f"lash_test_{os.getpid()}_{secrets.token_hex(3)}"
"""Schemas of this test run start with this, so parallel workers and reruns never collide."""


def unreachable_reason(url: str = URL) -> str | None:
    """Why nothing listens at ``url``'s host and port, or None when something does."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "/var/run/postgresql").split(",")[0]
    port = int(str(params.get("port") or 5432).split(",")[0])
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(f"{host}/.s.PGSQL.{port}")
        else:
            socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        return (
            f"no PostgreSQL listens at {host}:{port} ({exc}); "
            "start one or set LASH_TEST_POSTGRES_URL"
        )
    return None


def drop_schemas(prefix: str, url: str = URL) -> None:
    """Drop every schema whose name starts with ``prefix``."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (prefix,)
            )
        ]
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def race_messages(name: str, revision: int) -> tuple[Any, ...]:
    """What racer ``name`` commits at ``revision``."""
    return tuple(user_message(f"{name}-r{revision}-{i}", f"{name} at {revision}") for i in range(2))


def race_child(url: str, schema: str, name: str, rounds: int) -> None:
    """Race to commit revisions 1..rounds; print one JSON line per attempt.

    Each attempt expects the newest revision this racer knows of (from its own
    win or from the conflict it lost), so both racers keep colliding.
    """
    from lash.store.postgres import PostgresStore

    async def run() -> None:
        async with PostgresStore(url, schema=schema, max_size=1) as store:
            print("ready", flush=True)
            sys.stdin.readline()  # "go": both racers start together
            expected = 1
            while expected <= rounds:
                commit = RuntimeCommit(
                    session_id="race",
                    expected_revision=expected,
                    messages=race_messages(name, expected),
                    turn_index=expected,
                )
                try:
                    result = await store.commit(commit)
                    line: dict[str, Any] = {"won": expected, "revision": result.revision}
                    expected = result.revision
                except HeadRevisionConflict as exc:
                    line = {"lost": expected, "expected": exc.expected, "actual": exc.actual}
                    expected = exc.actual or expected + 1
                print(json.dumps(line), flush=True)
                # A little jitter breaks lock convoys, so both racers win some revisions.
                await asyncio.sleep(random.random() / 250)

    asyncio.run(run())


def crash_child(url: str, schema: str, app_name: str) -> None:
    """Start the huge commit, let the server run every write, then wait to be killed.

    The pause is found by wrapping ``PostgresStore._apply``, which queues the
    writes inside the open transaction (a white-box seam: the store itself
    carries no test hook). A ``SELECT`` after it flushes the pipeline, so the
    server has executed every insert before ``in-transaction`` is printed.
    """
    from lash.store.postgres import PostgresStore

    real = PostgresStore._apply

    async def pause(self: PostgresStore, conn: Any, *args: Any) -> Any:
        result = await real(self, conn, *args)
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity")
        await cur.fetchone()
        print("in-transaction", flush=True)
        await asyncio.sleep(60)
        return result

    PostgresStore._apply = pause  # type: ignore[method-assign,assignment]

    async def run() -> None:
        named = f"{url}{'&' if '?' in url else '?'}application_name={app_name}"
        async with PostgresStore(named, schema=schema, max_size=1) as store:
            await store.commit(huge_commit(expected_revision=1))
            print("committed", flush=True)  # never reached when the test kills us

    asyncio.run(run())


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "race":
        race_child(rest[0], rest[1], rest[2], int(rest[3]))
    elif mode == "crash":
        crash_child(rest[0], rest[1], rest[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
