"""Durable hosts: what each adds to a turn over the inline host.

The ARCHITECTURE workload (the model asks for two tool calls, the tools run,
the model answers) against ``ScriptedProvider``, on a SQLite store in a
temporary directory, under each effect host:

* ``inline``: ``InlineEffectHost`` (nothing journaled; the baseline);
* ``journal``: ``SqliteJournalHost`` (lash's engine-free durable host);
* ``dbos``: ``DbosTurnRunner`` + ``DbosEffectHost`` (a DBOS workflow per turn,
  a step per effect, SQLite system database), when ``dbos`` is installed;
* ``restate``: ``LashRestateService`` behind a real ``restate-server`` on
  loopback, each turn an HTTP call to the ingress, when ``restate-sdk``,
  ``hypercorn`` and npm (for the server) are available.

Prints the median per-turn time of each and its ratio to inline. Run:
``python benchmarks/durable.py [turns]`` (default 100).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import ANSWER, prompt, workload_core

from lash import LashCore
from lash.hosts import SqliteJournalHost
from lash.runtime.effects import EffectHost, InlineEffectHost

HERE = Path(__file__).resolve().parent


def build_core(store_dir: Path, host: EffectHost) -> LashCore:
    """The workload on a SQLite store in ``store_dir``, under ``host``."""
    return workload_core(f"sqlite:///{store_dir}", effect_host=host)


async def timed(turns: int, run_turn: Callable[[int], Awaitable[str]]) -> list[float]:
    await run_turn(-1)  # warm up
    samples = []
    for i in range(turns):
        started = time.perf_counter()
        text = await run_turn(i)
        samples.append((time.perf_counter() - started) * 1e3)
        assert text == ANSWER, text
    return samples


async def bench_core(home: Path, host: EffectHost, turns: int) -> list[float]:
    async with build_core(home / "store", host) as core, core.session("bench") as session:

        async def run_turn(i: int) -> str:
            result = await session.run(prompt(i), turn_id=f"t{i}")
            return result.text

        return await timed(turns, run_turn)


async def bench_journal(home: Path, turns: int) -> list[float]:
    host = SqliteJournalHost(home / "journal.sqlite3")
    try:
        return await bench_core(home, host, turns)
    finally:
        await host.aclose()


async def bench_dbos(home: Path, turns: int) -> list[float] | str:
    try:
        from dbos import DBOS

        from lash.hosts.dbos import DbosEffectHost, DbosTurnRunner, dbos_sqlite_config
    except ImportError as exc:
        return f"skipped ({exc.name} is not installed: pip install 'lash-runtime[dbos]')"
    runner = DbosTurnRunner(
        lambda: build_core(home / "store", DbosEffectHost()), name="bench-durable"
    )
    DBOS(config=dbos_sqlite_config(home / "dbos.sqlite3", name="lash-bench"))
    DBOS.launch()
    try:

        async def run_turn(i: int) -> str:
            result = await runner.run("bench", prompt(i), turn_id=f"t{i}")
            return result.text

        return await timed(turns, run_turn)
    finally:
        await runner.aclose()
        DBOS.destroy()


async def bench_restate(home: Path, turns: int) -> list[float] | str:
    try:
        import hypercorn  # noqa: F401
        import restate  # noqa: F401
    except ImportError as exc:
        return f"skipped ({exc.name} is not installed: pip install 'lash-runtime[restate]')"
    sys.path.insert(0, str(HERE.parent / "tests" / "hosts"))
    from restate_server import (
        RestateServer,
        RestateUnavailable,
        free_port,
        install_restate_server,
        wait_listening,
    )

    try:
        binary = install_restate_server()
    except RestateUnavailable as exc:
        return f"skipped ({exc})"
    server = RestateServer(binary)
    port = free_port()
    env = dict(os.environ, LASH_BENCH_HOME=str(home), LASH_BENCH_PORT=str(port))
    endpoint = subprocess.Popen(
        [sys.executable, str(HERE / "durable_restate_endpoint.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, 30, endpoint)
        server.register(f"http://127.0.0.1:{port}")

        async def run_turn(i: int) -> str:
            body = {"turn_id": f"t{i}", "input": prompt(i)}
            reply = await asyncio.to_thread(server.call, "bench", body)
            if reply.status_code != 200:
                raise RuntimeError(f"turn {i}: {reply.status_code} {reply.text}")
            return str(reply.json()["text"])

        return await timed(turns, run_turn)
    finally:
        endpoint.kill()
        endpoint.wait(10)
        server.stop()


def main(turns: int) -> None:
    """Each host in its own event loop (DBOS takes over the loop's default executor)."""
    rows: list[tuple[str, list[float] | str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, bench in (
            ("inline", lambda home: bench_core(home, InlineEffectHost(), turns)),
            ("journal", lambda home: bench_journal(home, turns)),
            ("dbos", lambda home: bench_dbos(home, turns)),
            ("restate", lambda home: bench_restate(home, turns)),
        ):
            home = root / name
            home.mkdir()
            result: Any = asyncio.run(bench(home))
            rows.append((name, result))
    base = statistics.median(rows[0][1])  # type: ignore[arg-type]
    print(f"{turns} turns of the workload per host (2 tool calls + answer), SQLite store")
    print(f"  {'host':8} {'median':>10} {'p90':>10} {'over inline':>12} {'ratio':>7}")
    for name, result in rows:
        if isinstance(result, str):
            print(f"  {name:8} {result}")
            continue
        median = statistics.median(result)
        p90 = statistics.quantiles(result, n=10)[-1]
        print(
            f"  {name:8} {median:8.2f} ms {p90:8.2f} ms {median - base:9.2f} ms"
            f" {median / base:6.1f}x"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
