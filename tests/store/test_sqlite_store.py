"""SQLite-specific behaviour: durability, schema gate, corruption, concurrency, crashes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import zlib
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from lash.kernel.codec import encode
from lash.kernel.llm import LlmUsage
from lash.kernel.messages import Message, Part, PartKind, user_message
from lash.runtime.effects import DurabilityTier
from lash.store.base import (
    CommitResult,
    GraphError,
    HeadRevisionConflict,
    RuntimeCommit,
    SessionMeta,
    StoredSession,
    StoreError,
    UsageRow,
)
from lash.store.sqlite import (
    DB_FILENAME,
    SCHEMA_VERSION,
    SqliteStore,
    StoreCorruptError,
    StoreSchemaError,
)
from lash.testing.store_conformance import rich_messages, stamped

T = TypeVar("T")
HERE = Path(__file__).parent


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def texts(prefix: str, n: int) -> tuple[Any, ...]:
    return tuple(user_message(f"{prefix}-{i}", f"{prefix} {i}") for i in range(n))


def usage(source: str, model: str, tokens: int) -> UsageRow:
    return UsageRow(source=source, model=model, usage=LlmUsage(input_tokens=tokens))


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / DB_FILENAME, isolation_level=None)


# ---------------------------------------------------------------- basics


def test_tier_is_durable_and_the_directory_is_created(tmp_path: Path) -> None:
    root = tmp_path / "nested" / "data"
    with SqliteStore(root) as store:
        assert store.tier is DurabilityTier.DURABLE
        assert store.path == root / DB_FILENAME
    assert (root / DB_FILENAME).is_file()
    conn = raw(root)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "sessions", "messages", "usage", "turn_stamps"} <= tables
    assert {"state", "session_meta"} <= tables
    conn.close()


def test_large_messages_are_compressed_and_small_ones_stay_text(tmp_path: Path) -> None:
    small = user_message("s", "hi")
    big = user_message("b", "tool output line\n" * 200)

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=(small, big))
            )
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.messages == (small, big)

    run(body())
    conn = raw(tmp_path)
    rows = conn.execute(
        "SELECT typeof(message_json), length(message_json) FROM messages ORDER BY seq"
    ).fetchall()
    stored = conn.execute("SELECT message_json FROM messages ORDER BY seq").fetchone()[0]
    conn.close()
    # Derivable part ids ("s.p0") are left out of the stored JSON and restored on load.
    # The message id lives in its own column (node_id), so the JSON leaves it out too.
    assert rows[0] == ("text", len(encode(small)) - len(b'"id":"s",') - len(b'"id":"s.p0",'))
    assert '"s.p0"' not in stored
    assert rows[1][0] == "blob"
    assert rows[1][1] < len(encode(big)) // 10


def test_a_file_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        SqliteStore(tmp_path / "file")


def test_session_ids_must_be_non_blank_strings(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            for bad in ("", "   ", None, 7):
                with pytest.raises(ValueError, match="session id"):
                    await store.load(bad)  # type: ignore[arg-type]
                with pytest.raises(ValueError, match="session id"):
                    await store.commit(
                        RuntimeCommit(session_id=bad, expected_revision=None)  # type: ignore[arg-type]
                    )

    run(body())


def test_a_stamp_for_another_session_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            commit = stamped(RuntimeCommit(session_id="a", expected_revision=None), "t1")
            assert commit.stamp is not None
            moved = msgspec.structs.replace(
                commit, stamp=msgspec.structs.replace(commit.stamp, session_id="b")
            )
            with pytest.raises(ValueError, match="stamp names session 'b'"):
                await store.commit(moved)
            assert await store.load("a") is None

    run(body())


def test_closed_store_refuses_work_and_close_is_idempotent(tmp_path: Path) -> None:
    async def body() -> None:
        store = SqliteStore(tmp_path)
        await store.commit(RuntimeCommit(session_id="s", expected_revision=None))
        await store.aclose()
        await store.aclose()
        store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.load("s")
        assert "closed" in repr(store)

    run(body())


def test_the_event_loop_keeps_running_during_a_commit(tmp_path: Path) -> None:
    async def body() -> None:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0)
                ticks += 1

        async with SqliteStore(tmp_path) as store:
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = ticks
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=texts("m", 5000))
            )
            done = True
            await task
            assert ticks > before, "the loop ran while the worker thread committed"

    run(body())


# ---------------------------------------------------------------- durability


def test_a_reopened_store_sees_everything(tmp_path: Path) -> None:
    turn = stamped(
        RuntimeCommit(
            session_id="s",
            expected_revision=1,
            messages=rich_messages("t2"),
            turn_index=2,
            iteration=4,
            usage=(usage("model", "gpt", 7), usage("tool", "mini", 1)),
        ),
        "turn-2",
    )

    async def first() -> StoredSession | None:
        async with SqliteStore(tmp_path) as store:
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
        async with SqliteStore(tmp_path) as store:
            assert await store.load("s") == expected
            assert expected is not None
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


def test_two_open_stores_see_each_others_commits(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as a, SqliteStore(tmp_path) as b:
            await a.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=texts("a", 2))
            )
            seen = await b.load("s")
            assert seen is not None
            assert seen.messages == texts("a", 2)
            await b.commit(RuntimeCommit(session_id="s", expected_revision=1))
            loaded = await a.load("s")
            assert loaded is not None
            assert loaded.revision == 2

    run(body())


def test_concurrent_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    barrier = threading.Barrier(4)

    def open_store(_: int) -> SqliteStore:
        barrier.wait()
        return SqliteStore(tmp_path)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, range(4)))
    for store in stores:
        store.close()
    conn = raw(tmp_path)
    assert conn.execute("SELECT key, value FROM meta").fetchall() == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    conn.close()


# ---------------------------------------------------------------- schema gate


def test_an_unknown_schema_version_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    conn = raw(tmp_path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    db = tmp_path / DB_FILENAME
    before = db.read_bytes()
    with pytest.raises(StoreSchemaError) as info:
        SqliteStore(tmp_path)
    assert "'99'" in str(info.value)
    assert f"version {SCHEMA_VERSION}" in str(info.value)
    assert (info.value.found, info.value.expected) == ("99", SCHEMA_VERSION)
    assert db.read_bytes() == before


def test_a_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    conn = raw(tmp_path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    db = tmp_path / DB_FILENAME
    before = db.read_bytes()
    with pytest.raises(StoreSchemaError, match="no lash schema version"):
        SqliteStore(tmp_path)
    assert db.read_bytes() == before
    conn = raw(tmp_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    db.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(StoreSchemaError, match="not a usable lash store"):
        SqliteStore(tmp_path)
    assert db.read_bytes() == b"definitely not sqlite " * 100


# ---------------------------------------------------------------- corrupt rows


def _seed(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
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
        ("{not json", "$", "malformed"),
        (b"\x78\x9cnot zlib", "$", "not zlib-compressed JSON"),
        (zlib.compress(b'{"parts": []}'), "$", "missing required field `role`"),
        ('{"role": "user", "parts": 5}', "$.parts", "Expected `array`"),
        ('{"id": "m-1", "role": "user"}', "$.id", "repeats the message id"),
        (
            '{"role": "user", "parts": [{"id": "p", "kind": "nope"}]}',
            "$.parts[0].kind",
            "Invalid enum",
        ),
    ],
)
def test_a_corrupt_message_row_is_a_typed_error(
    tmp_path: Path, payload: str | bytes, path: str, reason: str
) -> None:
    _seed(tmp_path)
    conn = raw(tmp_path)
    conn.execute("UPDATE messages SET message_json = ? WHERE seq = 1", (payload,))
    conn.close()

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load("s")
            err = info.value
            assert (err.session_id, err.table, err.row, err.path) == ("s", "messages", "m-1", path)
            assert reason.lower() in err.reason.lower()
            assert "'s'" in str(err)
            assert "'messages'" in str(err)
            assert "row m-1" in str(err)
            assert path in str(err)

    run(body())


def test_a_corrupt_usage_row_fails_load_and_rolls_back_a_commit(tmp_path: Path) -> None:
    _seed(tmp_path)
    conn = raw(tmp_path)
    conn.execute('UPDATE usage SET usage_json = \'{"input_tokens": "many"}\'')
    conn.close()

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
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

    run(body())
    conn = raw(tmp_path)
    assert conn.execute("SELECT revision FROM sessions").fetchall() == [(1,)]
    assert conn.execute("SELECT count(*) FROM messages").fetchone() == (3,)
    conn.close()


# ---------------------------------------------------------------- concurrency


def test_two_connections_racing_on_one_session_have_one_winner_per_revision(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as a, SqliteStore(tmp_path) as b:
            await a.commit(RuntimeCommit(session_id="s", expected_revision=None))
            for revision in range(1, 21):
                results = await asyncio.gather(
                    *(
                        store.commit(
                            RuntimeCommit(
                                session_id="s",
                                expected_revision=revision,
                                messages=texts(f"{name}{revision}", 2),
                            )
                        )
                        for name, store in (("a", a), ("b", b))
                    ),
                    return_exceptions=True,
                )
                wins = [r for r in results if isinstance(r, CommitResult)]
                losses = [r for r in results if isinstance(r, HeadRevisionConflict)]
                assert wins == [CommitResult(revision=revision + 1)]
                assert len(losses) == 1
                assert (losses[0].expected, losses[0].actual) == (revision, revision + 1)
            loaded = await b.load("s")
            assert loaded is not None
            assert (loaded.revision, len(loaded.messages)) == (21, 40)
            seqs_ok = [m.id.rsplit("-", 1)[1] for m in loaded.messages]
            assert seqs_ok == ["0", "1"] * 20

    run(body())


# ---------------------------------------------------------------- crash atomicity


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_a_commit_killed_mid_transaction_leaves_the_previous_head(tmp_path: Path) -> None:
    from store_crash_child import HEAD_USAGE, HUGE, huge_commit

    head_messages = texts("head", 3)

    async def seed() -> StoredSession | None:
        async with SqliteStore(tmp_path) as store:
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

    head = run(seed())
    child = subprocess.Popen(
        [sys.executable, str(HERE / "store_crash_child.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else ""
        assert line.strip() == "in-transaction", f"child said {line!r}; stderr: {child.stderr}"
        wal = tmp_path / f"{DB_FILENAME}-wal"
        assert wal.stat().st_size > 0, "uncommitted pages should have spilled into the WAL"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    retry = huge_commit(expected_revision=1)

    async def after_crash() -> None:
        async with SqliteStore(tmp_path) as store:
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


def test_sql_in_identifiers_is_just_data(tmp_path: Path) -> None:
    evil = "x'); DROP TABLE messages;--"
    evil_turn = "t'; DELETE FROM sessions; --"

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(session_id="victim", expected_revision=None, messages=texts("v", 1))
            )
            commit = RuntimeCommit(
                session_id=evil,
                expected_revision=None,
                messages=(user_message(evil, evil),),
                usage=(usage(evil, '"; DROP TABLE usage; --', 2),),
            )
            assert await store.commit(stamped(commit, evil_turn)) == CommitResult(revision=1)
            assert (await store.commit(stamped(commit, evil_turn))).replayed
            loaded = await store.load(evil)
            assert loaded is not None
            assert loaded.messages == (user_message(evil, evil),)
            assert loaded.usage == (usage(evil, '"; DROP TABLE usage; --', 2),)
            victim = await store.load("victim")
            assert victim is not None
            assert victim.messages == texts("v", 1)
            assert await store.load("x") is None

    run(body())
    conn = raw(tmp_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "sessions", "messages", "usage", "turn_stamps"} <= tables
    assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (2,)
    conn.close()


def test_part_ids_that_break_the_convention_are_kept(tmp_path: Path) -> None:
    odd = msgspec.structs.replace(
        user_message("m", "x"),
        parts=(Part(id="custom-id", kind=PartKind.TEXT, content="x"),),
    )

    async def body() -> tuple[Message, ...]:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, messages=(odd,))
            )
            loaded = await store.load("s")
            assert loaded is not None
            return loaded.messages

    assert run(body()) == (odd,)


@pytest.mark.parametrize(
    ("sql", "row", "reason"),
    [
        ("UPDATE sessions SET leaf = 'nope'", "s", "leaf 'nope' is no node"),
        # m-1 now names a parent that does not exist: the active path breaks there
        ("UPDATE messages SET parent = 'ghost' WHERE node_id = 'm-1'", "ghost", "missing parent"),
    ],
)
def test_a_broken_graph_is_a_typed_error(tmp_path: Path, sql: str, row: str, reason: str) -> None:
    _seed(tmp_path)
    conn = raw(tmp_path)
    conn.execute(sql)
    conn.commit()
    conn.close()

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load("s")
            assert info.value.row == row
            assert reason in info.value.reason

    run(body())


def test_a_version_1_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Files from before the session graph (schema 1) are refused, not rewritten."""
    _seed(tmp_path)
    conn = raw(tmp_path)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = (tmp_path / "lash.sqlite3").read_bytes()

    async def body() -> None:
        with pytest.raises(StoreSchemaError) as info:
            async with SqliteStore(tmp_path) as store:
                await store.load("s")
        assert (info.value.found, info.value.expected) == ("1", 2)

    run(body())
    assert (tmp_path / "lash.sqlite3").read_bytes() == before


# ---------------------------------------------------------------- session state and metadata

NEW_TABLES = {"state", "session_meta", "session_meta_created"}
BIG_STATE = b"plugin state line, much like the one before it\n" * 200


def meta(session_id: str, created_at_ms: int, name: str | None = None) -> SessionMeta:
    return SessionMeta(session_id=session_id, created_at_ms=created_at_ms, name=name)


def schema_names(path: Path) -> set[str]:
    conn = raw(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return names


def _make_old_file(tmp_path: Path) -> StoredSession:
    """A store file as the schema before session state and metadata left it."""

    async def body() -> StoredSession:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=rich_messages("t1"),
                    usage=(usage("model", "gpt", 3),),
                )
            )
            await store.commit(stamped(RuntimeCommit(session_id="s", expected_revision=1), "t2"))
            loaded = await store.load("s")
            assert loaded is not None
            return loaded

    loaded = run(body())
    conn = raw(tmp_path)
    conn.execute("DROP INDEX session_meta_created")
    conn.execute("DROP TABLE session_meta")
    conn.execute("DROP TABLE state")
    conn.close()
    assert not schema_names(tmp_path) & NEW_TABLES
    return loaded


def test_a_file_from_before_state_and_metadata_gains_the_tables(tmp_path: Path) -> None:
    before = _make_old_file(tmp_path)

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            assert await store.load("s") == before
            assert await store.list_sessions() == ()
            assert await store.save_session_meta(meta("s", 5)) == meta("s", 5)
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=2, state={"plugin": b"on"})
            )
            loaded = await store.load("s")
            assert loaded is not None
            assert (loaded.revision, loaded.messages, loaded.state) == (
                3,
                before.messages,
                {"plugin": b"on"},
            )
            # the old stamp still replays
            replay = stamped(RuntimeCommit(session_id="s", expected_revision=1), "t2")
            assert await store.commit(replay) == CommitResult(revision=2, replayed=True)

    run(body())
    assert schema_names(tmp_path) >= NEW_TABLES


def test_concurrent_opens_of_an_old_file_all_succeed(tmp_path: Path) -> None:
    _make_old_file(tmp_path)
    barrier = threading.Barrier(4)

    def open_store(_: int) -> SqliteStore:
        barrier.wait()
        return SqliteStore(tmp_path)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, range(4)))

    async def body() -> None:
        await asyncio.gather(
            *(store.save_session_meta(meta(f"s{i}", i)) for i, store in enumerate(stores))
        )
        assert [m.session_id for m in await stores[0].list_sessions()] == ["s0", "s1", "s2", "s3"]
        for store in stores:
            await store.aclose()

    run(body())


def test_an_old_file_of_an_unknown_version_is_refused_before_gaining_tables(
    tmp_path: Path,
) -> None:
    _make_old_file(tmp_path)
    conn = raw(tmp_path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    db = tmp_path / DB_FILENAME
    before = db.read_bytes()
    with pytest.raises(StoreSchemaError) as info:
        SqliteStore(tmp_path)
    assert info.value.found == "99"
    assert db.read_bytes() == before
    assert not schema_names(tmp_path) & NEW_TABLES


def test_opening_an_up_to_date_file_takes_no_write_lock(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    holder = raw(tmp_path)
    holder.execute("BEGIN IMMEDIATE")  # any writer would now wait out the busy timeout
    try:
        with SqliteStore(tmp_path) as store:
            assert run(store.list_sessions()) == ()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _seed_state_and_meta(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    messages=texts("m", 2),
                    state={"small": b"tiny", "big": BIG_STATE},
                    meta=meta("s", 10, "first"),
                )
            )

    run(body())


@pytest.mark.parametrize(
    ("sql", "row", "reason"),
    [
        (
            "UPDATE state SET digest = zeroblob(32) WHERE name = 'small'",
            "small",
            "does not match its SHA-256 digest",
        ),
        ("UPDATE state SET compressed = 1 WHERE name = 'small'", "small", "not zlib-compressed"),
        ("UPDATE state SET compressed = 0 WHERE name = 'big'", "big", "does not match"),
        (
            "UPDATE state SET data = substr(data, 1, length(data) - 4) WHERE name = 'big'",
            "big",
            "not zlib-compressed",
        ),
        ("UPDATE state SET data = 'text' WHERE name = 'small'", "small", "not bytes"),
    ],
)
def test_a_corrupt_state_row_is_a_typed_error_and_changes_nothing(
    tmp_path: Path, sql: str, row: str, reason: str
) -> None:
    _seed_state_and_meta(tmp_path)
    conn = raw(tmp_path)
    conn.execute(sql)
    conn.close()
    db = tmp_path / DB_FILENAME
    before = db.read_bytes()

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            with pytest.raises(StoreCorruptError) as info:
                await store.load("s")
            err = info.value
            assert (err.session_id, err.table, err.row) == ("s", "state", row)
            assert reason in err.reason
            assert "'state'" in str(err)
            assert f"row {row}" in str(err)

    run(body())
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("sql", "path", "reason"),
    [
        ("UPDATE session_meta SET meta_json = '{not json'", "$", "malformed"),
        ("UPDATE session_meta SET meta_json = '[1, 2]'", "$", "Expected `object`"),
        (
            """UPDATE session_meta SET meta_json = '{"created_at_ms": "soon"}'""",
            "$.created_at_ms",
            "Expected `int`",
        ),
        (
            """UPDATE session_meta SET meta_json = '{"created_at_ms": 10, "session_id": "x"}'""",
            "$",
            "repeats the session id",
        ),
        ("UPDATE session_meta SET created_at_ms = 11", "$.created_at_ms", "in its column"),
    ],
)
def test_a_corrupt_meta_row_is_a_typed_error_and_changes_nothing(
    tmp_path: Path, sql: str, path: str, reason: str
) -> None:
    _seed_state_and_meta(tmp_path)
    conn = raw(tmp_path)
    conn.execute(sql)
    conn.close()
    db = tmp_path / DB_FILENAME
    before = db.read_bytes()

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            for attempt in (
                store.load_session_meta("s"),
                store.list_sessions(),
                store.save_session_meta(meta("s", 99), replace=False),
            ):
                with pytest.raises(StoreCorruptError) as info:
                    await attempt
                err = info.value
                assert (err.session_id, err.table, err.row, err.path) == (
                    "s",
                    "session_meta",
                    "s",
                    path,
                )
                assert reason in err.reason
                assert "'session_meta'" in str(err)
            # the session itself still loads: its metadata is a row apart
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state["small"] == b"tiny"

    run(body())
    assert db.read_bytes() == before

    async def repair() -> None:
        async with SqliteStore(tmp_path) as store:
            assert await store.save_session_meta(meta("s", 12)) == meta("s", 12)
            assert await store.load_session_meta("s") == meta("s", 12)

    run(repair())


def test_large_state_is_compressed_and_unchanged_state_is_not_rewritten(tmp_path: Path) -> None:
    noise = os.urandom(4096)  # large but incompressible: stored as it is

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(
                    session_id="s",
                    expected_revision=None,
                    state={"big": BIG_STATE, "small": b"tiny", "noise": noise, "gone": None},
                )
            )
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state == {"big": BIG_STATE, "small": b"tiny", "noise": noise}

            async def cost(state: dict[str, bytes | None]) -> int:
                before = store.rows_written
                loaded = await store.load("s")
                assert loaded is not None
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=loaded.revision, state=state)
                )
                return store.rows_written - before

            baseline = await cost({})  # the head row
            assert baseline == 1
            assert await cost({"big": BIG_STATE, "small": b"tiny", "noise": noise}) == baseline
            assert await cost({"absent": None}) == baseline
            assert await cost({"small": b"tiny!"}) == baseline + 1
            assert await cost({"big": BIG_STATE + b"more", "noise": None}) == baseline + 2
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state == {"big": BIG_STATE + b"more", "small": b"tiny!"}

    run(body())
    conn = raw(tmp_path)
    rows = {
        name: (bytes(digest), compressed, bytes(data))
        for name, digest, compressed, data in conn.execute(
            "SELECT name, digest, compressed, data FROM state"
        )
    }
    conn.close()
    assert set(rows) == {"big", "small"}
    digest, compressed, data = rows["big"]
    assert compressed == 1
    assert len(data) < len(BIG_STATE) // 10
    assert zlib.decompress(data) == BIG_STATE + b"more"
    assert digest == hashlib.sha256(BIG_STATE + b"more").digest()
    assert rows["small"] == (hashlib.sha256(b"tiny!").digest(), 0, b"tiny!")


def test_incompressible_large_state_is_stored_raw(tmp_path: Path) -> None:
    noise = os.urandom(4096)

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=None, state={"noise": noise})
            )

    run(body())
    conn = raw(tmp_path)
    assert conn.execute("SELECT compressed, data FROM state").fetchall() == [(0, noise)]
    conn.close()


def test_a_failed_commit_leaves_state_and_meta_alone(tmp_path: Path) -> None:
    _seed_state_and_meta(tmp_path)

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            with pytest.raises(GraphError):  # m-0 is taken
                await store.commit(
                    RuntimeCommit(
                        session_id="s",
                        expected_revision=1,
                        messages=texts("m", 1),
                        state={"small": None, "new": b"x"},
                    )
                )
            with pytest.raises(HeadRevisionConflict):
                await store.commit(
                    RuntimeCommit(session_id="s", expected_revision=7, state={"new": b"x"})
                )
            await store.save_session_meta(meta("t", 1))
            # commit meta is insert-or-ignore; session "t" already has a row
            await store.commit(
                RuntimeCommit(session_id="t", expected_revision=None, meta=meta("t", 2, "late"))
            )
            assert await store.load_session_meta("t") == meta("t", 1)

    run(body())
    conn = raw(tmp_path)
    assert conn.execute("SELECT name FROM state ORDER BY name").fetchall() == [
        ("big",),
        ("small",),
    ]
    assert conn.execute("SELECT revision FROM sessions WHERE session_id = 's'").fetchone() == (1,)
    conn.close()


def test_state_and_meta_survive_a_reopen(tmp_path: Path) -> None:
    _seed_state_and_meta(tmp_path)

    async def body() -> None:
        async with SqliteStore(tmp_path) as store:
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state == {"small": b"tiny", "big": BIG_STATE}
            assert await store.load_session_meta("s") == meta("s", 10, "first")
            await store.save_session_meta(meta("early", 1))
            await store.commit(
                RuntimeCommit(session_id="s", expected_revision=1, state={"small": None})
            )

    async def again() -> None:
        async with SqliteStore(tmp_path) as store:
            loaded = await store.load("s")
            assert loaded is not None
            assert loaded.state == {"big": BIG_STATE}
            assert await store.list_sessions() == (meta("early", 1), meta("s", 10, "first"))
            assert await store.list_sessions(limit=1) == (meta("early", 1),)

    run(body())
    run(again())


def test_two_open_stores_see_each_others_meta(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStore(tmp_path) as a, SqliteStore(tmp_path) as b:
            assert await a.save_session_meta(meta("s", 3, "from a")) == meta("s", 3, "from a")
            assert await b.load_session_meta("s") == meta("s", 3, "from a")
            # b keeps a's row when asked not to replace it, and returns it
            assert await b.save_session_meta(meta("s", 4), replace=False) == meta("s", 3, "from a")
            await b.commit(
                RuntimeCommit(
                    session_id="u",
                    expected_revision=None,
                    meta=meta("u", 2),
                    state={"k": b"v"},
                )
            )
            assert await a.list_sessions() == (meta("u", 2), meta("s", 3, "from a"))
            loaded = await a.load("u")
            assert loaded is not None
            assert loaded.state == {"k": b"v"}
            await b.save_session_meta(meta("s", 1, "renamed"))
            assert await a.load_session_meta("s") == meta("s", 1, "renamed")

    run(body())
