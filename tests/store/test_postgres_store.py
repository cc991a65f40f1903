"""PostgreSQL store: conformance, durability, schema gate, corruption, races, crashes,
session state and metadata.

Needs a PostgreSQL server at ``LASH_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the module skips only when
nothing listens there. Every store lives in a schema named after this run,
dropped at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from postgres_support import (
    HEAD_USAGE,
    HUGE,
    RUN_PREFIX,
    URL,
    drop_schemas,
    huge_commit,
    race_messages,
    unreachable_reason,
    wait_for,
)

HERE = Path(__file__).parent

_REASON = unreachable_reason()
if _REASON is not None:
    pytest.skip(_REASON, allow_module_level=True)

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from lash.kernel.codec import encode  # noqa: E402
from lash.kernel.llm import LlmUsage  # noqa: E402
from lash.kernel.messages import Message, Part, PartKind, user_message  # noqa: E402
from lash.runtime.effects import DurabilityTier  # noqa: E402
from lash.store._codec import encode_meta  # noqa: E402
from lash.store.base import (  # noqa: E402
    CommitResult,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    SessionRelation,
    SessionStore,
    StoreCorruptError,
    StoredSession,
    StoreError,
    StoreSchemaError,
    UsageRow,
)
from lash.store.postgres import (  # noqa: E402
    _LOCK_CLASS,
    SCHEMA_VERSION,
    PostgresSchemaError,
    PostgresStore,
)
from lash.testing.store_conformance import (  # noqa: E402
    StoreConformance,
    StoreFactory,
    rich_messages,
    stamped,
)

T = TypeVar("T")
_names = itertools.count()

TABLES = {
    "meta",
    "sessions",
    "messages",
    "usage",
    "turn_stamps",
    "state",
    "session_meta",
    "queued_work_batches",
}
"""The tables a store creates in its schema."""


@pytest.fixture(scope="module", autouse=True)
def _drop_run_schemas() -> Iterator[None]:
    yield
    drop_schemas(RUN_PREFIX)


@pytest.fixture
def schema() -> str:
    """A fresh schema name for one test."""
    return f"{RUN_PREFIX}_{next(_names)}"


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def raw() -> psycopg.Connection[Any]:
    return psycopg.connect(URL, autocommit=True)


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def texts(prefix: str, n: int) -> tuple[Message, ...]:
    return tuple(user_message(f"{prefix}-{i}", f"{prefix} {i}") for i in range(n))


def usage(source: str, model: str, tokens: int) -> UsageRow:
    return UsageRow(source=source, model=model, usage=LlmUsage(input_tokens=tokens))


# ---------------------------------------------------------------- conformance


class TestPostgresConformance(StoreConformance):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        # Lazily opened, so the suite's synchronous factory works; one schema each.
        return lambda: PostgresStore(URL, schema=f"{RUN_PREFIX}_{next(_names)}")

    def rows_written(self, store: SessionStore) -> int | None:
        return store.rows_written if isinstance(store, PostgresStore) else None


# ---------------------------------------------------------------- basics


def test_tier_repr_and_the_tables(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(URL.replace("postgres@", "postgres:s3cret@"), schema=schema)
        assert "not open" in repr(store)
        async with store:
            assert store.tier is DurabilityTier.DURABLE
            assert store.schema == schema
            assert "open" in repr(store)
            assert "s3cret" not in repr(store)
        assert "closed" in repr(store)

    run(body())
    with raw() as conn:
        names = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        assert names == TABLES
        version = conn.execute(sql.SQL("SELECT key, value FROM {}").format(table(schema, "meta")))
        assert version.fetchall() == [("schema_version", str(SCHEMA_VERSION))]


def test_connect_opens_and_messages_are_stored_compactly(schema: str) -> None:
    small = user_message("s", "hi")
    big = user_message("b", "tool output line\n" * 200)

    async def body() -> None:
        store = await PostgresStore.connect(URL, schema=schema)
        try:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=(small, big))
            )
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.messages == (small, big)
        finally:
            await store.aclose()

    run(body())
    with raw() as conn:
        rows = conn.execute(
            sql.SQL("SELECT message_json FROM {} ORDER BY seq").format(table(schema, "messages"))
        ).fetchall()
    first, second = bytes(rows[0][0]), bytes(rows[1][0])
    # Derivable part ids ("s.p0") are left out and restored on load; big rows are zlib.
    assert first == encode(small).replace(b'"id":"s.p0",', b"").replace(b'"id":"s",', b"")
    assert zlib.decompress(second).startswith(b"{")
    assert len(second) < len(encode(big)) // 10


def test_bad_arguments_are_refused_before_any_io() -> None:
    for bad in ("", "Lash", "lash-x", "x" * 64, 'a"; DROP SCHEMA public; --'):
        with pytest.raises(ValueError, match="schema"):
            PostgresStore(URL, schema=bad)
    with pytest.raises(ValueError, match="min_size"):
        PostgresStore(URL, min_size=3, max_size=2)
    with pytest.raises(ValueError, match="URL"):
        PostgresStore("postgresql://host/db?nonsense=1")


def test_text_postgres_cannot_hold_is_refused(schema: str) -> None:
    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            for bad in ("", "  ", None, 7):
                with pytest.raises(ValueError, match="session id"):
                    await store.load(bad)  # type: ignore[arg-type]
            for bad in ("a\x00b", "\ud800"):
                with pytest.raises(ValueError, match="session id"):
                    await store.load(bad)
                with pytest.raises(ValueError, match="session id"):
                    await store.commit(RuntimeCommit(session_id=bad, expected_revision=None))
            with pytest.raises(ValueError, match="turn id"):
                await store.commit(
                    stamped(RuntimeCommit(session_id="s", expected_revision=None), "t\x00")
                )
            with pytest.raises(ValueError, match="usage model"):
                await store.commit(
                    RuntimeCommit(
                        session_id="s", expected_revision=None, usage=(usage("m", "x\x00", 1),)
                    )
                )
            assert await store.load("s") is None

    run(body())


def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    async def body() -> None:
        store = PostgresStore(
            "postgresql://postgres:s3cret@127.0.0.1:1/test", schema="lash", timeout=2
        )
        with pytest.raises(StoreError, match="cannot connect") as info:
            await store.load("s")
        assert "s3cret" not in str(info.value)
        await store.aclose()

    run(body())


def test_closed_store_refuses_work_and_close_is_idempotent(schema: str) -> None:
    async def body() -> None:
        store = PostgresStore(URL, schema=schema)
        await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
        await store.aclose()
        await store.aclose()
        with pytest.raises(StoreError, match="closed"):
            await store.load("s")
        with pytest.raises(StoreError, match="closed"):
            await store.open()

    run(body())


# ---------------------------------------------------------------- durability


def test_a_reopened_store_sees_everything(schema: str) -> None:
    turn = stamped(
        RuntimeCommit(
            session_id="s",
            expected_revision=1,
            messages=rich_messages("t2"),
            turn_index=2,
            iteration=4,
            frame_id="planner",
            usage=(usage("model", "gpt", 7), usage("tool", "mini", 1)),
        ),
        "turn-2",
    )

    async def first() -> StoredSession | None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=rich_messages("t1"),
                    usage=(usage("model", "gpt", 3),),
                )
            )
            await store.commit(turn)
            await store.commit(RuntimeCommit(session_id="other", expected_revision=None))
            return await store.load("s")

    async def second(expected: StoredSession | None) -> None:
        async with PostgresStore(URL, schema=schema) as store:
            assert await store.load("s") == expected
            assert expected is not None
            assert expected.frame_id == "planner"
            assert expected.usage == (usage("model", "gpt", 10), usage("tool", "mini", 1))
            # the stamp survived too: a retry after the restart is a replay
            assert await store.commit(turn) == CommitResult(revision=2, replayed=True)
            assert await store.commit(
                RuntimeCommit(session_id="s", expected_revision=2, messages=texts("t3", 1))
            ) == CommitResult(revision=3)
            other = await store.load("other")
            assert other is not None
            assert other.revision == 1

    stored = run(first())
    run(second(stored))


def test_concurrent_first_opens_create_the_schema_once(schema: str) -> None:
    async def body() -> None:
        stores = [PostgresStore(URL, schema=schema) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        await asyncio.gather(*(s.aclose() for s in stores))

    run(body())
    with raw() as conn:
        rows = conn.execute(sql.SQL("SELECT key, value FROM {}").format(table(schema, "meta")))
        assert rows.fetchall() == [("schema_version", str(SCHEMA_VERSION))]


# ---------------------------------------------------------------- schema gate


def _catalog(schema: str) -> list[tuple[Any, ...]]:
    with raw() as conn:
        return conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1",
            (schema,),
        ).fetchall()


def test_an_unknown_schema_version_is_refused_and_left_alone(schema: str) -> None:
    async def create() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))

    run(create())
    with raw() as conn:
        conn.execute(sql.SQL("UPDATE {} SET value = '99'").format(table(schema, "meta")))
    before = _catalog(schema)

    async def reopen() -> None:
        with pytest.raises(StoreSchemaError) as info:
            await PostgresStore.connect(URL, schema=schema)
        err = info.value
        assert isinstance(err, PostgresSchemaError)
        assert "'99'" in str(err)
        assert f"version {SCHEMA_VERSION}" in str(err)
        assert (err.found, err.expected, err.schema) == ("99", SCHEMA_VERSION, schema)

    run(reopen())
    assert _catalog(schema) == before


def test_a_foreign_schema_is_refused_and_left_alone(schema: str) -> None:
    with raw() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (body text)").format(table(schema, "notes")))
    before = _catalog(schema)

    async def body() -> None:
        with pytest.raises(StoreSchemaError, match="no lash schema version"):
            await PostgresStore.connect(URL, schema=schema)

    run(body())
    assert _catalog(schema) == before


def test_an_empty_existing_schema_is_used(schema: str) -> None:
    with raw() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            assert await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None)
            ) == CommitResult(revision=1)

    run(body())


# ---------------------------------------------------------------- corrupt rows


def _seed(schema: str) -> None:
    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=texts("m", 3),
                    usage=(usage("model", "gpt", 1),),
                )
            )

    run(body())


@pytest.mark.parametrize(
    ("payload", "path", "reason"),
    [
        (b"{not json", "$", "malformed"),
        (b"{\xff\xfe}", "$", "not UTF-8"),
        (b"\x78\x9cnot zlib", "$", "not zlib-compressed JSON"),
        (zlib.compress(b'{"parts": []}'), "$", "missing required field `role`"),
        (b'{"role": "user", "parts": 5}', "$.parts", "Expected `array`"),
        (b'{"id": "m-1", "role": "user"}', "$.id", "repeats the message id"),
        (
            b'{"role": "user", "parts": [{"id": "p", "kind": "nope"}]}',
            "$.parts[0].kind",
            "Invalid enum",
        ),
    ],
)
def test_a_corrupt_message_row_is_a_typed_error(
    schema: str, payload: bytes, path: str, reason: str
) -> None:
    _seed(schema)
    with raw() as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET message_json = %s WHERE seq = 1").format(
                table(schema, "messages")
            ),
            (payload,),
        )

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load("s")
            err = info.value
            assert (err.session_id, err.table, err.row, err.path) == ("s", "messages", "m-1", path)
            assert reason.lower() in err.reason.lower()
            assert "'s'" in str(err)
            assert "'messages'" in str(err)
            assert "row m-1" in str(err)

    run(body())


def test_a_corrupt_usage_row_fails_load_and_rolls_back_a_commit(schema: str) -> None:
    _seed(schema)
    with raw() as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET usage_json = %s").format(table(schema, "usage")),
            ('{"input_tokens": "many"}',),
        )

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            with pytest.raises(StoreCorruptError, match="usage") as info:
                await store.load("s")
            assert (info.value.row, info.value.path) == ("model/gpt", "$.input_tokens")
            with pytest.raises(StoreCorruptError):
                await store.commit(
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        messages=texts("late", 2),
                        usage=(usage("model", "gpt", 1),),
                    )
                )
            # a commit that does not touch the corrupt row still lands
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, messages=texts("ok", 1))
            )

    run(body())
    with raw() as conn:
        assert conn.execute(
            sql.SQL("SELECT revision FROM {}").format(table(schema, "sessions"))
        ).fetchall() == [(2,)]
        assert conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(table(schema, "messages"))
        ).fetchone() == (4,)


# ---------------------------------------------------------------- concurrency


def test_two_processes_racing_on_one_session_win_each_revision_once(schema: str) -> None:
    rounds = 60

    async def seed() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(RuntimeCommit(session_id="race", expected_revision=None))

    run(seed())
    names = ("a", "b")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "postgres_support.py"),
                "race",
                URL,
                schema,
                n,
                str(rounds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    try:
        for child in children:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 30)
            line = child.stdout.readline() if ready else ""
            assert line.strip() == "ready", f"child said {line!r}"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    winners: dict[int, str] = {}
    losses = 0
    for name, child, (out, err) in zip(names, children, outputs, strict=True):
        assert child.returncode == 0, err
        for line in map(json.loads, out.splitlines()):
            if "won" in line:
                assert line["revision"] == line["won"] + 1
                assert line["won"] not in winners, f"revision {line['won']} won twice"
                winners[line["won"]] = name
            else:
                losses += 1
                assert line["expected"] == line["lost"]
                assert line["actual"] > line["lost"], line
    split = "".join(winners.get(r, "?") for r in range(1, rounds + 1))
    assert sorted(winners) == list(range(1, rounds + 1)), f"every revision won once: {split}"
    assert losses > 0, f"the racers never collided: {split}"
    assert set(winners.values()) == set(names), f"both racers should win some: {split}"

    async def check() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            loaded = await store.load("race")
            assert loaded is not None
            assert loaded.revision == rounds + 1
            assert loaded.turn_index == rounds
            expected = sum((race_messages(winners[r], r) for r in range(1, rounds + 1)), ())
            assert loaded.messages == expected

    run(check())


def test_many_sessions_commit_concurrently_over_the_pool(schema: str) -> None:
    sessions, turns = 24, 6

    async def worker(store: PostgresStore, sid: str) -> None:
        for turn in range(turns):
            head = await store.load(sid)
            commit = RuntimeCommit(
                session_id=sid,
                expected_revision=None if head is None else head.revision,
                messages=texts(f"{sid}-t{turn}", 2),
                turn_index=turn,
                usage=(usage("model", "gpt", 1), usage("tool", sid, 2)),
            )
            assert (await store.commit(stamped(commit, f"turn-{turn}"))).revision == turn + 1

    async def body() -> None:
        async with PostgresStore(URL, schema=schema, max_size=6) as store:
            ids = [f"session-{i}" for i in range(sessions)]
            await asyncio.gather(*(worker(store, sid) for sid in ids))
            for sid in ids:
                loaded = await store.load(sid)
                assert loaded is not None
                assert loaded.revision == turns
                assert loaded.messages == sum((texts(f"{sid}-t{t}", 2) for t in range(turns)), ())
                assert loaded.usage == (usage("model", "gpt", turns), usage("tool", sid, 2 * turns))

    run(body())


def test_racing_first_commits_create_a_session_once(schema: str) -> None:
    async def body() -> None:
        async with (
            PostgresStore(URL, schema=schema) as a,
            PostgresStore(URL, schema=schema) as b,
        ):
            for i in range(15):
                plain = [
                    RuntimeCommit(session_id=f"p{i}", expected_revision=None, messages=texts(n, 1))
                    for n in ("a", "b")
                ]
                results = await asyncio.gather(
                    a.commit(plain[0]), b.commit(plain[1]), return_exceptions=True
                )
                wins = [r for r in results if isinstance(r, CommitResult)]
                losses = [r for r in results if isinstance(r, HeadRevisionConflict)]
                assert wins == [CommitResult(revision=1)]
                assert [(e.expected, e.actual) for e in losses] == [(None, 1)]
                # the same stamped turn from two workers: one lands, one replays
                turn = stamped(
                    RuntimeCommit(
                        session_id=f"t{i}", expected_revision=None, messages=texts("x", 2)
                    ),
                    "turn-1",
                )
                got = await asyncio.gather(a.commit(turn), b.commit(turn))
                assert sorted(r.replayed for r in got) == [False, True]
                assert {r.revision for r in got} == {1}
                loaded = await a.load(f"t{i}")
                assert loaded is not None
                assert loaded.messages == texts("x", 2)

    run(body())


# ---------------------------------------------------------------- crash atomicity


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_a_commit_killed_mid_transaction_leaves_the_previous_head(schema: str) -> None:
    head_messages = texts("head", 3)
    app_name = f"{schema}_crash"

    async def seed() -> StoredSession | None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="crash",
                    expected_revision=None,
                    messages=head_messages,
                    turn_index=1,
                    usage=(HEAD_USAGE,),
                )
            )
            return await store.load("crash")

    def child_backends() -> list[tuple[Any, ...]]:
        with raw() as conn:
            return conn.execute(
                "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE application_name = %s",
                (app_name,),
            ).fetchall()

    head = run(seed())
    child = subprocess.Popen(
        [sys.executable, str(HERE / "postgres_support.py"), "crash", URL, schema, app_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else ""
        assert line.strip() == "in-transaction", f"child said {line!r}"
        # The child's transaction is open and has written: it holds a transaction id.
        assert child_backends() == [(True,)]
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert wait_for(lambda: not child_backends()), "the server ends the dead client's backend"

    retry = huge_commit(expected_revision=1)

    async def after_crash() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            assert await store.load("crash") == head
            assert await store.commit(retry) == CommitResult(revision=2)
            assert await store.commit(retry) == CommitResult(revision=2, replayed=True)
            loaded = await store.load("crash")
            assert loaded is not None
            assert loaded.revision == 2
            assert len(loaded.messages) == len(head_messages) + HUGE
            assert loaded.messages[: len(head_messages)] == head_messages
            assert loaded.messages[len(head_messages) :] == retry.messages
            assert loaded.usage == (
                UsageRow(source="model", model="m", usage=LlmUsage(input_tokens=6)),
            )

    run(after_crash())


# ---------------------------------------------------------------- security


def test_sql_in_identifiers_is_just_data(schema: str) -> None:
    evil = "x'); DROP TABLE messages;--"
    evil_turn = "t'; DELETE FROM sessions; --"
    evil_model = '"; DROP TABLE usage; --'

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(session_id="victim", expected_revision=None, messages=texts("v", 1))
            )
            commit = RuntimeCommit(
                session_id=evil,
                expected_revision=None,
                messages=(user_message(evil, evil),),
                frame_id=evil,
                usage=(usage(evil, evil_model, 2),),
            )
            assert await store.commit(stamped(commit, evil_turn)) == CommitResult(revision=1)
            assert (await store.commit(stamped(commit, evil_turn))).replayed
            loaded = await store.load(evil)
            assert loaded is not None
            assert loaded.messages == (user_message(evil, evil),)
            assert loaded.frame_id == evil
            assert loaded.usage == (usage(evil, evil_model, 2),)
            victim = await store.load("victim")
            assert victim is not None
            assert victim.messages == texts("v", 1)
            assert await store.load("x") is None
            assert await store.load("' OR '1'='1") is None

    run(body())
    assert {r[0] for r in _catalog(schema) if r[1] == "r"} == TABLES
    with raw() as conn:
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, "sessions")))
        assert count.fetchone() == (2,)


def test_part_ids_that_break_the_convention_are_kept(schema: str) -> None:
    odd = msgspec.structs.replace(
        user_message("m", "x"),
        parts=(Part(id="custom-id", kind=PartKind.TEXT, content="x"),),
    )

    async def body() -> tuple[Message, ...]:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=(odd,))
            )
            loaded = await store.load("s")
            assert loaded is not None
            return loaded.messages

    assert run(body()) == (odd,)


# ---------------------------------------------------------------- session state and metadata


def _meta(session_id: str, created_at_ms: int, name: str | None = None) -> SessionMeta:
    return SessionMeta(session_id=session_id, created_at_ms=created_at_ms, name=name)


def _hold_creation_lock(schema: str) -> psycopg.Connection[Any]:
    """A connection holding the advisory lock that serializes schema creation."""
    holder = raw()
    holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
    return holder


def _blocked_by(pid: int) -> int:
    """How many server backends are waiting for a lock held by backend ``pid``."""
    with raw() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _until_blocked(holder: psycopg.Connection[Any], count: int) -> None:
    """Return once ``count`` backends wait for a lock ``holder`` holds (polled off the loop)."""
    pid = holder.info.backend_pid
    assert await asyncio.to_thread(wait_for, lambda: _blocked_by(pid) == count)


def _create(schema: str) -> None:
    async def body() -> None:
        async with PostgresStore(URL, schema=schema):
            pass

    run(body())


def _rows(schema: str, name: str, order: str) -> list[tuple[Any, ...]]:
    with raw() as conn:
        return conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                table(schema, name), sql.Identifier(order)
            )
        ).fetchall()


def test_a_schema_without_state_and_meta_tables_gains_them_once(schema: str) -> None:
    async def create() -> StoredSession | None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="old",
                    expected_revision=None,
                    messages=rich_messages("t1"),
                    usage=(usage("model", "gpt", 3),),
                )
            )
            return await store.load("old")

    before = run(create())
    with raw() as conn:  # what the schema looked like before these tables existed
        conn.execute(
            sql.SQL("DROP TABLE {}, {}").format(
                table(schema, "state"), table(schema, "session_meta")
            )
        )
    assert {r[0] for r in _catalog(schema)} & {"state", "session_meta"} == set()
    holder = _hold_creation_lock(schema)

    async def reopen() -> None:
        a, b = PostgresStore(URL, schema=schema), PostgresStore(URL, schema=schema)
        try:
            opening = asyncio.gather(a.open(), b.open())
            # Both openers see the missing tables and wait for the creation lock.
            await _until_blocked(holder, 2)
            holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
            await opening
            assert await a.load("old") == before
            await b.commit(
                RuntimeCommit(
                    session_id="old",
                    expected_revision=1,
                    state={"plugin": b"v1"},
                    meta=_meta("old", 7, "kept"),
                )
            )
            loaded = await a.load("old")
            assert loaded is not None
            assert loaded.revision == 2
            assert loaded.messages == rich_messages("t1")
            assert loaded.state == {"plugin": b"v1"}
            assert await a.list_sessions() == (_meta("old", 7, "kept"),)
        finally:
            await asyncio.gather(a.aclose(), b.aclose())

    try:
        run(reopen())
    finally:
        holder.close()
    assert {r[0] for r in _catalog(schema) if r[1] == "r"} >= TABLES
    assert ("session_meta_created", "i") in _catalog(schema)
    with raw() as conn:
        rows = conn.execute(sql.SQL("SELECT key, value FROM {}").format(table(schema, "meta")))
        assert rows.fetchall() == [("schema_version", str(SCHEMA_VERSION))]


def test_a_complete_schema_opens_without_the_creation_lock(schema: str) -> None:
    _create(schema)
    holder = _hold_creation_lock(schema)
    try:

        async def reopen() -> None:
            async with PostgresStore(URL, schema=schema) as store:
                await store.save_session_meta(_meta("s", 1))
                assert await store.load_session_meta("s") == _meta("s", 1)

        run(reopen(), timeout=10)  # would wait for the lock forever if it took it
    finally:
        holder.close()


def test_an_unknown_version_without_state_and_meta_tables_is_left_alone(schema: str) -> None:
    async def create() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(RuntimeCommit(session_id="s", expected_revision=None))

    run(create())
    with raw() as conn:
        conn.execute(
            sql.SQL("DROP TABLE {}, {}").format(
                table(schema, "state"), table(schema, "session_meta")
            )
        )
        conn.execute(sql.SQL("UPDATE {} SET value = '1'").format(table(schema, "meta")))
    before = _catalog(schema)

    async def reopen() -> None:
        with pytest.raises(PostgresSchemaError, match="'1' is not supported") as info:
            await PostgresStore.connect(URL, schema=schema)
        assert info.value.found == "1"

    run(reopen())
    assert _catalog(schema) == before


_BIG_STATE = b"plugin state line\n" * 400
"""A blob the store keeps zlib-compressed."""


@pytest.mark.parametrize(
    ("name", "column", "value", "reason"),
    [
        ("ok", "data", b"fine\x00", "SHA-256"),
        ("ok", "digest", b"\x00", "SHA-256"),
        ("ok", "compressed", True, "not zlib-compressed"),
        ("a/b", "compressed", False, "SHA-256"),
        ("a/b", "data", zlib.compress(_BIG_STATE)[:-4], "not zlib-compressed"),
        ("a/b", "data", zlib.compress(_BIG_STATE + b"!"), "SHA-256"),
    ],
)
def test_a_corrupt_state_row_is_a_typed_error_and_changes_nothing(
    schema: str, name: str, column: str, value: object, reason: str
) -> None:
    big = _BIG_STATE

    async def seed() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s", expected_revision=None, state={"a/b": big, "ok": b"fine"}
                )
            )

    run(seed())
    with raw() as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE name = %s").format(
                table(schema, "state"), sql.Identifier(column)
            ),
            (value, name),
        )
    state_before = _rows(schema, "state", "name")
    heads_before = _rows(schema, "sessions", "sid")

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load("s")
            err = info.value
            assert (err.session_id, err.table, err.row) == ("s", "state", name)
            assert reason in err.reason
            assert "'state'" in str(err)
            assert f"row {name} " in str(err)

    run(body())
    assert _rows(schema, "state", "name") == state_before
    assert _rows(schema, "sessions", "sid") == heads_before


@pytest.mark.parametrize(
    ("damage", "value", "path", "reason"),
    [
        ("meta_json", "{not json", "$", "malformed"),
        ("meta_json", '{"created_at_ms": "soon"}', "$.created_at_ms", "Expected `int`"),
        ("meta_json", '{"session_id": "s", "created_at_ms": 5}', "$", "repeats the session id"),
        ("meta_json", '{"created_at_ms": 5, "relation": 3}', "$.relation", "Expected `object"),
        ("created_at_ms", 6, "$.created_at_ms", "column holds 6"),
    ],
)
def test_a_corrupt_meta_row_is_a_typed_error_and_changes_nothing(
    schema: str, damage: str, value: object, path: str, reason: str
) -> None:
    async def seed() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            await store.save_session_meta(_meta("s", 5, "first"))
            await store.save_session_meta(_meta("t", 9, "fine"))

    run(seed())
    with raw() as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE session_id = 's'").format(
                table(schema, "session_meta"), sql.Identifier(damage)
            ),
            (value,),
        )
    before = _rows(schema, "session_meta", "session_id")

    def check(err: StoreCorruptError) -> None:
        assert (err.session_id, err.table, err.row, err.path) == ("s", "session_meta", "s", path)
        assert reason.lower() in err.reason.lower()
        assert "'session_meta'" in str(err)
        assert "row s " in str(err)

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load_session_meta("s")
            check(info.value)
            with pytest.raises(StoreCorruptError) as info:
                await store.list_sessions()
            check(info.value)
            with pytest.raises(StoreCorruptError) as info:
                await store.save_session_meta(_meta("s", 1, "second"), replace=False)
            check(info.value)
            # The other session's row still reads; a first commit keeps the damaged row.
            assert await store.load_session_meta("t") == _meta("t", 9, "fine")
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, meta=_meta("s", 2))
            )

    run(body())
    assert _rows(schema, "session_meta", "session_id") == before


def test_state_and_meta_are_shared_by_stores_on_one_schema(schema: str) -> None:
    child = SessionMeta(
        session_id="child",
        created_at_ms=20,
        model="m",
        relation=SessionRelation(
            kind="child", parent_session_id="root", turn_id="turn-1", call_id="c1"
        ),
    )

    async def body() -> None:
        async with (
            PostgresStore(URL, schema=schema, max_size=2) as a,
            PostgresStore(URL, schema=schema, max_size=2) as b,
        ):
            await a.commit(
                RuntimeCommit(
                    session_id="root",
                    expected_revision=None,
                    state={"todo": b"[]", "mode": b"plan"},
                    meta=_meta("root", 10, "root"),
                )
            )
            loaded = await b.load("root")
            assert loaded is not None
            assert loaded.state == {"todo": b"[]", "mode": b"plan"}
            await b.commit(
                RuntimeCommit(
                    session_id="root", expected_revision=1, state={"mode": None, "todo": b"[1]"}
                )
            )
            loaded = await a.load("root")
            assert loaded is not None
            assert loaded.state == {"todo": b"[1]"}
            # Metadata of a session nobody committed yet, saved by one, seen by the other.
            assert await b.save_session_meta(child) == child
            assert await a.load("child") is None
            assert await a.load_session_meta("child") == child
            await a.save_session_meta(_meta("root", 10, "renamed"))
            assert await b.load_session_meta("root") == _meta("root", 10, "renamed")
            assert await b.list_sessions() == (_meta("root", 10, "renamed"), child)
            assert await a.list_sessions(limit=1) == (_meta("root", 10, "renamed"),)

    run(body())


@pytest.mark.parametrize("first", ["commits", "rolls back"])
def test_racing_save_session_meta_without_replace_returns_one_row(schema: str, first: str) -> None:
    """A third transaction holds an uncommitted row while both stores try to insert theirs."""
    mine = [_meta("s", 1, "a"), _meta("s", 2, "b")]
    held = _meta("s", 3, "held")
    _create(schema)
    holder = psycopg.connect(URL)  # not autocommit: the insert stays uncommitted

    async def body() -> tuple[SessionMeta, SessionMeta]:
        async with (
            PostgresStore(URL, schema=schema, max_size=1) as a,
            PostgresStore(URL, schema=schema, max_size=1) as b,
        ):
            holder.execute(
                sql.SQL(
                    "INSERT INTO {} (session_id, created_at_ms, meta_json) VALUES (%s, %s, %s)"
                ).format(table(schema, "session_meta")),
                ("s", held.created_at_ms, encode_meta(held)),
            )
            racing = asyncio.gather(
                a.save_session_meta(mine[0], replace=False),
                b.save_session_meta(mine[1], replace=False),
            )
            await _until_blocked(holder, 2)
            if first == "commits":
                holder.commit()
            else:
                holder.rollback()
            got_a, got_b = await racing
            return got_a, got_b

    try:
        got_a, got_b = run(body())
    finally:
        holder.close()
    assert got_a == got_b
    assert got_a == held if first == "commits" else got_a in mine
    with raw() as conn:
        rows = conn.execute(
            sql.SQL("SELECT session_id, created_at_ms, meta_json FROM {}").format(
                table(schema, "session_meta")
            )
        ).fetchall()
    assert rows == [("s", got_a.created_at_ms, encode_meta(got_a))]


def test_concurrent_save_session_meta_without_replace_agree(schema: str) -> None:
    async def body() -> None:
        async with (
            PostgresStore(URL, schema=schema, max_size=4) as a,
            PostgresStore(URL, schema=schema, max_size=4) as b,
        ):
            ids = [f"s{i}" for i in range(40)]
            got = await asyncio.gather(
                *(
                    store.save_session_meta(_meta(sid, n, store_name), replace=False)
                    for sid in ids
                    for n, (store, store_name) in enumerate(((a, "a"), (b, "b")))
                )
            )
            for i, sid in enumerate(ids):
                pair = got[2 * i : 2 * i + 2]
                assert pair[0] == pair[1]
                assert pair[0] in (_meta(sid, 0, "a"), _meta(sid, 1, "b"))
            assert await a.list_sessions() == tuple(
                sorted(got[::2], key=lambda m: (m.created_at_ms, m.session_id))
            )

    run(body())
    with raw() as conn:
        assert conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(table(schema, "session_meta"))
        ).fetchone() == (40,)


def test_large_state_is_stored_compressed_and_round_trips(schema: str) -> None:
    text = b"".join(b"entry %d: the plugin kept this\n" % i for i in range(40_000))  # ~1.3 MB
    noise = os.urandom(300_000)  # does not compress: stored as given
    values = {"text": text, "noise": noise, "small": b"x" * 600}

    async def body() -> None:
        async with (
            PostgresStore(URL, schema=schema) as a,
            PostgresStore(URL, schema=schema) as b,
        ):
            await a.commit(RuntimeCommit(session_id="s", expected_revision=None, state=values))
            for store in (a, b):
                loaded = await store.load("s")
                assert loaded is not None
                assert loaded.state == values

    run(body())
    with raw() as conn:
        rows = {
            name: (bytes(digest), compressed, bytes(data))
            for name, digest, compressed, data in conn.execute(
                sql.SQL("SELECT name, digest, compressed, data FROM {}").format(
                    table(schema, "state")
                )
            )
        }
    assert set(rows) == set(values)
    for name, value in values.items():
        assert rows[name][0] == hashlib.sha256(value).digest()
    _, compressed, data = rows["text"]
    assert compressed
    assert len(data) < len(text) // 10
    assert zlib.decompress(data) == text
    assert rows["noise"][1:] == (False, noise)
    assert rows["small"][1]
    assert zlib.decompress(rows["small"][2]) == values["small"]


def test_an_unchanged_state_blob_is_not_rewritten(schema: str) -> None:
    def versions() -> dict[str, str]:
        """Each state row's ``xmin``: the transaction that last wrote it."""
        with raw() as conn:
            return dict(
                conn.execute(
                    sql.SQL("SELECT name, xmin::text FROM {}").format(table(schema, "state"))
                ).fetchall()
            )

    async def commit(store: PostgresStore, revision: int | None, **state: bytes | None) -> int:
        before = store.rows_written
        await store.commit(RuntimeCommit(session_id="s", expected_revision=revision, state=state))
        return store.rows_written - before

    async def body() -> None:
        async with PostgresStore(URL, schema=schema) as store:
            assert await commit(store, None, a=b"same", b=b"old") == 4  # head twice + 2 blobs
            first = versions()
            assert await commit(store, 1, a=b"same", b=b"new") == 2  # head + b
            second = versions()
            assert second["a"] == first["a"]
            assert second["b"] != first["b"]
            assert await commit(store, 2, a=None, gone=None) == 2  # head + the delete
            assert versions() == {"b": second["b"]}
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state == {"b": b"new"}

    run(body())


# ---------------------------------------------------------------- through the facade


def test_lash_core_runs_sessions_on_postgres(schema: str, tmp_path: Path) -> None:
    from lash import ConfigError, LashCore
    from lash.testing import Reply, ScriptedProvider

    with pytest.raises(ConfigError, match="the attachments facet is inline"):
        LashCore(provider=ScriptedProvider([]), model="m", store=URL)  # durable store needs peers
    core = LashCore(
        provider=ScriptedProvider([]),
        model="m",
        store=URL,
        attachments=f"file:///{tmp_path / 'a'}",
    )
    assert isinstance(core.store, PostgresStore)  # from the URL; it opens on first use
    assert core.store.tier is DurabilityTier.DURABLE

    async def main() -> tuple[Any, Any, int | None]:
        provider = ScriptedProvider([Reply(text="one"), Reply(text="two")])

        def make() -> LashCore:
            return LashCore(
                provider=provider,
                model="m",
                store=PostgresStore(URL, schema=schema),
                attachments=f"file:///{tmp_path / 'b'}",
            )

        first = make()
        async with first.session("pg-chat") as session:
            a = await session.run("hi")
        await first.store.aclose()
        second = make()
        async with second.session("pg-chat") as session:
            b = await session.run("again")
            revision = session.revision
            history = [m.parts[0].content for m in session.messages]
        await second.store.aclose()
        return (a.text, b.text), history, revision

    texts_, history, revision = run(main())
    assert texts_ == ("one", "two")
    assert history == ["hi", "one", "again", "two"]
    assert revision == 2
