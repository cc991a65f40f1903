"""The Restate effect host against a real restate-server, a hypercorn endpoint and SQLite.

One restate-server serves the whole module. Each test runs
``restate_endpoint_child.py`` (the lash service behind hypercorn) on its own loopback
port and registers it. The crash matrix SIGKILLs that child at a boundary, starts a
fresh child on the same port, and lets Restate retry the invocation against it: every
step Restate journaled before the kill must not run again, the turn must end exactly as
an uninterrupted run, with exactly one turn commit and every message exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_support import ALL_STEPS, ALL_TAGS, log_lines, stored_steps
from crash_support import tag_of as key_tag
from restate_server import (
    RestateServer,
    RestateUnavailable,
    free_port,
    install_restate_server,
    wait_listening,
)
from restate_support import Endpoint, restate_server_binary

from lash import ConfigError, LashCore, tool
from lash.hosts import restate as restate_host
from lash.hosts.restate import (
    LashRestateService,
    RestateEffectHost,
    RestateHostError,
    restate_effect_name,
)
from lash.kernel.codec import encode_document, to_builtins
from lash.runtime.effects import DurabilityTier, TurnScope
from lash.store.sqlite import SqliteStore
from lash.testing import Reply, ScriptedProvider, ToolCall

pytestmark = pytest.mark.xdist_group("restate")

TURN = "turn-1"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "restate_service.py"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def server() -> Iterator[RestateServer]:
    restate = RestateServer(restate_server_binary())
    try:
        yield restate
    finally:
        restate.stop()


def tag_of(step_name: str) -> str | None:
    """The side-effect log tag of a journaled step (None: a step with no side effect)."""
    assert step_name.startswith("lash:"), step_name
    return key_tag(step_name.removeprefix("lash:"))  # None for the session head


def steps(server: RestateServer, invocation_id: str) -> dict[str, bool]:
    """Journaled step name -> whether Restate holds its completion, in journal order."""
    created: dict[int, str] = {}
    completed: set[int] = set()
    for row in server.journal(invocation_id):
        lite = row["entry_lite_json"]
        if row["entry_type"] == "Command: Run":
            created[_completion_id(row["entry_json"])] = row["name"]
        elif row["entry_type"] == "Notification: Run":
            completed.add(int(json.loads(lite)["Notification"]["id"]["CompletionId"]))
    return {name: cid in completed for cid, name in created.items()}


def _completion_id(entry_json: str) -> int:
    return int(json.loads(entry_json)["Command"]["Run"]["completion_id"])


def without_session(names: dict[str, bool], session: str) -> dict[str, bool]:
    prefix = f"lash:{session}:"
    assert all(n.startswith(prefix) for n in names), names
    return {"lash:" + n.removeprefix(prefix): done for n, done in names.items()}


def store_facts(home: Path) -> dict[str, Any]:
    with sqlite3.connect(home / "store" / "lash.sqlite3") as conn:
        stamps = conn.execute("SELECT turn_id, revision FROM turn_stamps").fetchall()
        sessions = conn.execute("SELECT revision, turn_index FROM sessions").fetchall()
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    return {"stamps": stamps, "sessions": sessions, "message_rows": messages}


def stored_messages(home: Path, session: str) -> list[Any]:
    return stored_session(home, session)[0]


def stored_session(home: Path, session: str) -> tuple[list[Any], list[int] | None]:
    """The session's committed messages (as plain JSON) and its ``STEPS`` state."""

    async def load() -> tuple[list[Any], list[int] | None]:
        async with SqliteStore(home / "store") as store:
            stored = await store.load(session)
        assert stored is not None
        return list(to_builtins(stored.messages)), stored_steps(stored.state)

    return asyncio.run(load())


def summary(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "session_id"}


@pytest.fixture(scope="module")
def reference(server: RestateServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted turn through the same service."""
    home = tmp_path_factory.mktemp("reference")
    endpoint = Endpoint(home, free_port())
    try:
        server.register(endpoint.uri)
        invocation = server.send("reference", {"turn_id": TURN, "input": "go"})
        reply = server.attach(invocation)
    finally:
        endpoint.stop()
    assert reply.status_code == 200, reply.text
    assert sorted(log_lines(home)) == sorted(ALL_TAGS)
    return {
        "reply": reply.json(),
        "steps": without_session(steps(server, invocation), "reference"),
        "store": store_facts(home),
        "messages": stored_messages(home, "reference"),
    }


# ---------------------------------------------------------------- end to end


def test_a_turn_with_tool_calls_runs_through_the_restate_ingress(
    server: RestateServer, tmp_path: Path
) -> None:
    endpoint = Endpoint(tmp_path, free_port())
    try:
        deployment = server.register(endpoint.uri)
        assert [s["name"] for s in deployment["services"]] == ["LashSession"]
        first = server.call("e2e", {"turn_id": TURN, "input": "go"})
        second = server.call("e2e", {"turn_id": "turn-2", "input": {"text": "again"}})
    finally:
        endpoint.stop()
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["session_id"] == "e2e"
    assert body["turn_id"] == TURN
    assert body["ok"] is True
    assert body["text"] == "done after 4 results"
    assert body["revision"] == 1
    assert [(c["call_id"], c["status"]) for c in body["tool_calls"]] == [
        ("c1", "success"),
        ("c2", "success"),
        ("c3", "success"),
        ("c4", "success"),
    ]
    # The second turn sees the first one's four tool results, so the model answers at once.
    assert second.status_code == 200, second.text
    assert second.json()["revision"] == 2
    assert second.json()["tool_calls"] == []
    assert second.json()["text"] == "done after 4 results"
    assert Counter(log_lines(tmp_path)) == Counter([*ALL_TAGS, "llm:3"])
    facts = store_facts(tmp_path)
    assert facts["stamps"] == [(TURN, 1), ("turn-2", 2)]
    assert facts["sessions"] == [(2, 2)]


def test_a_later_turn_starts_from_the_state_earlier_turns_committed(
    server: RestateServer, tmp_path: Path
) -> None:
    """Each turn's ``step`` appends to the session state; the handler must hand the
    second turn the state the first one committed, not an empty one."""
    endpoint = Endpoint(tmp_path, free_port(), scenario="state")
    try:
        server.register(endpoint.uri)
        replies = [server.call("stateful", {"turn_id": f"t{i}", "input": "go"}) for i in (1, 2)]
    finally:
        endpoint.stop()
    for reply in replies:
        assert reply.status_code == 200, reply.text + endpoint.log()
        assert reply.json()["text"] == "recorded"
    assert stored_session(tmp_path, "stateful")[1] == [1, 2]


def test_every_effect_is_a_named_step_journaling_hash_and_outcome(
    reference: dict[str, Any],
) -> None:
    names = list(reference["steps"])
    assert all(reference["steps"].values())
    assert names == [
        restate_effect_name(k)
        for k in [
            f"{TURN}:session_head",
            f"{TURN}:1:0:llm_call:1",
            f"{TURN}:1:0:tool_call:2:c1",
            f"{TURN}:1:0:tool_call:2:c2",
            f"{TURN}:1:1:checkpoint:3",
            f"{TURN}:1:1:llm_call:4",
            f"{TURN}:1:1:tool_call:5:c3",
            f"{TURN}:1:1:tool_call:5:c4",
            f"{TURN}:1:2:checkpoint:6",
            f"{TURN}:1:2:llm_call:7",
            f"{TURN}:1:2:checkpoint:8",
        ]
    ]


def test_a_bad_request_fails_terminally_with_a_clear_message(
    server: RestateServer, tmp_path: Path
) -> None:
    endpoint = Endpoint(tmp_path, free_port())
    try:
        server.register(endpoint.uri)
        missing = server.call("bad", {"input": "go"})
        wrong = server.call("bad", {"turn_id": "t", "input": 3})
    finally:
        endpoint.stop()
    assert missing.status_code == 400, missing.text
    assert "turn_id must be a non-blank string" in missing.text
    assert wrong.status_code == 400, wrong.text
    assert "input must be a string" in wrong.text
    assert log_lines(tmp_path) == []


def test_the_example_service_runs_a_turn_through_restate(
    server: RestateServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LASH_MODEL"} | {
        "LASH_RESTATE_BIND": f"127.0.0.1:{port}",
        "LASH_DATA": str(tmp_path / "data"),
    }
    with (tmp_path / "example.log").open("wb") as log:
        example = subprocess.Popen(
            [sys.executable, str(EXAMPLE)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_listening(port, 30, example)
        server.register(f"http://127.0.0.1:{port}")
        reply = server.call("chat-1", {"turn_id": "t1", "input": "Add 2 and 3"})
    finally:
        example.kill()
        example.wait(10)
    assert reply.status_code == 200, reply.text + (tmp_path / "example.log").read_text()
    body = reply.json()
    assert body["text"] == "The sum is 5."
    assert [(c["name"], c["status"]) for c in body["tool_calls"]] == [("add", "success")]
    assert (tmp_path / "data" / "lash.sqlite3").is_file()  # the store went under LASH_DATA


# ---------------------------------------------------------------- crash matrix

# kill point -> the tags the interrupted effect may log a second time
KILL_POINTS = {
    "llm:2": ["llm:2"],  # during a model call
    "after-llm:2": [],  # after a model reply was journaled, before the next effect
    "tool:c4": ["tool:c4"],  # during a tool batch, c3 already finished and journaled
    "commit:during": [],  # inside the final commit's transaction (rolled back)
    "commit:after": [],  # after the final commit landed: replayed, the commit hits its stamp
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
def test_a_killed_endpoint_resumes_without_repeating_journaled_steps(
    kill_at: str, server: RestateServer, tmp_path: Path, reference: dict[str, Any]
) -> None:
    session = "crash-" + kill_at.replace(":", "-")
    port = free_port()
    doomed = Endpoint(tmp_path, port, kill_at=kill_at)
    try:
        server.register(doomed.uri)
        invocation = server.send(session, {"turn_id": TURN, "input": "go"})
        assert doomed.wait_killed() == -signal.SIGKILL, doomed.log()
    finally:
        doomed.stop()
    before = log_lines(tmp_path)
    journaled = steps(server, invocation)
    done_before = {tag_of(n) for n, done in journaled.items() if done} - {None}
    assert done_before <= set(before)
    if kill_at == "commit:after":
        assert store_facts(tmp_path)["stamps"] == [(TURN, 1)]
    elif (tmp_path / "store" / "lash.sqlite3").exists():
        assert store_facts(tmp_path)["stamps"] == []

    # A fresh endpoint on the same address: Restate retries the invocation against it.
    survivor = Endpoint(tmp_path, port)
    try:
        reply = server.attach(invocation)
    finally:
        survivor.stop()
    assert reply.status_code == 200, reply.text + survivor.log()

    # No step journaled before the kill ran again; only the interrupted effect may.
    after = log_lines(tmp_path)
    counts = Counter(after)
    for tag in done_before:
        assert counts[tag] == 1, (tag, after)
    assert counts == Counter(ALL_TAGS + KILL_POINTS[kill_at]), after

    # The same outcome and committed messages as the uninterrupted run.
    expected = reference["reply"]
    got = reply.json()
    assert got["session_id"] == session
    assert summary(got) == summary(expected)
    assert stored_session(tmp_path, session) == (reference["messages"], ALL_STEPS)

    # Exactly one turn commit; every message exactly once.
    facts = store_facts(tmp_path)
    assert facts == reference["store"]
    assert facts["stamps"] == [(TURN, 1)]
    assert facts["message_rows"] == len(reference["messages"])

    # Restate's journal holds every step, completed, under the reference names.
    assert without_session(steps(server, invocation), session) == reference["steps"]


def test_concurrent_retries_replay_in_the_journaled_order(
    server: RestateServer, tmp_path: Path
) -> None:
    """c2's first attempt fails before c1's, yet the replay recreates every step in order.

    Both calls then wait on a durable timer and run a second attempt. Killed during the
    next model call, the replacement replays all of that from the journal (timers
    included) and must create the steps in exactly the journaled order, or Restate
    would refuse the replay as a journal mismatch.
    """
    port = free_port()
    doomed = Endpoint(tmp_path, port, kill_at="llm:2", scenario="retries")
    try:
        server.register(doomed.uri)
        invocation = server.send("retries", {"turn_id": TURN, "input": "go"})
        assert doomed.wait_killed() == -signal.SIGKILL, doomed.log()
    finally:
        doomed.stop()
    before = log_lines(tmp_path)
    assert before.index("flaky:c2") < before.index("flaky:c1")  # finished out of order
    survivor = Endpoint(tmp_path, port, scenario="retries")
    try:
        reply = server.attach(invocation, timeout=30)
    finally:
        survivor.stop()
    assert reply.status_code == 200, reply.text + survivor.log()
    body = reply.json()
    assert body["text"] == "retries done after 2 results"
    assert [(c["call_id"], c["status"]) for c in body["tool_calls"]] == [
        ("c1", "success"),
        ("c2", "success"),
    ]
    assert Counter(log_lines(tmp_path)) == Counter(
        {"llm:1": 1, "flaky:c1": 2, "flaky:c2": 2, "llm:2": 2}
    )
    rows = server.journal(invocation)
    sleeps = [r["name"] for r in rows if r["entry_type"] == "Command: Sleep"]
    assert sleeps == [
        f"lash:retries:{TURN}:1:0:tool_call:2:{c}:flaky:attempt:1:sleep" for c in ("c1", "c2")
    ]
    assert list(steps(server, invocation)) == [
        f"lash:retries:{TURN}:{k}"
        for k in (
            "session_head",
            "1:0:llm_call:1",
            "1:0:tool_call:2:c1",
            "1:0:tool_call:2:c2",
            "1:0:tool_call:2:c1:attempt:2",
            "1:0:tool_call:2:c2:attempt:2",
            "1:1:checkpoint:3",
            "1:1:llm_call:4",
            "1:1:checkpoint:5",
        )
    ]
    assert store_facts(tmp_path)["stamps"] == [(TURN, 1)]


def test_a_replay_that_diverges_fails_with_a_hash_mismatch(
    server: RestateServer, tmp_path: Path
) -> None:
    port = free_port()
    doomed = Endpoint(tmp_path, port, kill_at="after-llm:1")
    try:
        server.register(doomed.uri)
        invocation = server.send("diverge", {"turn_id": TURN, "input": "go"})
        assert doomed.wait_killed() == -signal.SIGKILL, doomed.log()
    finally:
        doomed.stop()
    # The replacement builds different model requests: the journaled step no longer fits.
    survivor = Endpoint(tmp_path, port, instructions="Answer in French.")
    try:
        reply = server.attach(invocation)
    finally:
        survivor.stop()
    assert reply.status_code == 500, reply.text
    assert "restate_effect_hash_mismatch" in reply.text
    assert f"[diverge:{TURN}:1:0:llm_call:1]" in reply.text
    assert log_lines(tmp_path) == ["llm:1"]  # the journaled reply was not re-requested
    assert store_facts(tmp_path)["stamps"] == []


def test_a_session_moved_by_another_writer_fails_the_replay_clearly(
    server: RestateServer, tmp_path: Path
) -> None:
    port = free_port()
    doomed = Endpoint(tmp_path, port, kill_at="after-llm:1")
    try:
        server.register(doomed.uri)
        invocation = server.send("moved", {"turn_id": TURN, "input": "go"})
        assert doomed.wait_killed() == -signal.SIGKILL, doomed.log()
    finally:
        doomed.stop()

    async def another_turn() -> None:  # a writer outside Restate commits first
        async with (
            LashCore(
                provider=ScriptedProvider([Reply(text="elsewhere")]),
                model="m",
                store=f"sqlite:///{tmp_path}/store",
            ) as core,
            core.session("moved") as session,
        ):
            await session.run("hi", turn_id="outside")

    asyncio.run(another_turn())
    # Journaled steps lie ahead, so Restate cannot end the invocation: it keeps failing
    # with the reason (and would pause after its attempts) until an operator kills it.
    survivor = Endpoint(tmp_path, port)
    try:
        failure = server.wait_failure(invocation, "restate_session_moved")
    finally:
        server.kill(invocation)
        survivor.stop()
    assert "started at revision None, but the store now holds revision 1" in failure
    assert store_facts(tmp_path)["stamps"] == [("outside", 1)]
    assert log_lines(tmp_path) == ["llm:1"]


# ---------------------------------------------------------------- wiring (no server)


def test_the_installer_reports_a_missing_npm_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scripts/restate-server`` exits 3 without npm; the tests skip and the benchmark
    reports "skipped" on that, and only on that."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool_name in ("bash", "uname", "sed", "head", "mkdir"):
        found = shutil.which(tool_name)
        assert found is not None, tool_name
        (bin_dir / tool_name).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("LASH_RESTATE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(RestateUnavailable, match="npm is not installed"):
        install_restate_server()


class _ReplayCtx:
    """A Restate context whose ``run_typed`` answers from a journal (or runs the step)."""

    def __init__(self, journaled: bytes | None) -> None:
        self.journaled = journaled

    def run_typed(self, name: str, step: Any, options: Any) -> Any:
        return step if self.journaled is None else self.journaled


class _Pump:
    async def submit(self, future: Any) -> Any:
        return await future() if callable(future) else future


def test_the_session_head_is_hashed_only_by_the_attempt_that_journals_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[object] = []
    real_hash = restate_host.canonical_hash

    def counting_hash(value: Any) -> str:
        hashed.append(value)
        return real_hash(value)

    monkeypatch.setattr(restate_host, "canonical_hash", counting_hash)

    def head(journaled: bytes | None) -> Any:
        invocation = type("Invocation", (), {})()
        invocation.session_id, invocation.pump = "s", _Pump()
        invocation.ctx = _ReplayCtx(journaled)
        return asyncio.run(restate_host._journal_head(invocation, "t", None))

    first = head(None)  # the first attempt runs the step
    assert (first.revision, first.message_count) == (None, 0)
    assert len(hashed) == 1
    recorded = encode_document(restate_host._HEAD_KIND, first)
    assert head(recorded) == first  # a replay reads the journal back
    assert len(hashed) == 1  # and hashes nothing


@tool
def noop() -> str:
    """Do nothing."""
    return "ok"


def test_the_restate_host_is_durable_and_refuses_an_inline_store() -> None:
    host = RestateEffectHost()
    assert host.tier is DurabilityTier.DURABLE
    with pytest.raises(ConfigError, match=r"durable_store_required:store"):
        LashCore(
            provider=ScriptedProvider([Reply(text="x")]),
            model="m",
            store="memory://",
            effect_host=host,
        )

    def inline(host: RestateEffectHost) -> LashCore:
        return LashCore(provider=ScriptedProvider([]), model="m", effect_host=host)

    service = LashRestateService(inline)
    with pytest.raises(ConfigError, match=r"durable_store_required:store"):
        asyncio.run(service.core())


def test_a_turn_outside_a_restate_handler_is_refused_by_name(tmp_path: Path) -> None:
    host = RestateEffectHost()
    with pytest.raises(RestateHostError) as caught:
        host.scoped(TurnScope(session_id="s", turn_id="t"))
    assert caught.value.code == "restate_effect_host_requires_handler"
    assert "session 's' turn 't'" in str(caught.value)

    async def outside() -> None:
        provider = ScriptedProvider([Reply(tool_calls=[ToolCall("noop", {})])])
        async with (
            LashCore(
                provider=provider,
                model="m",
                tools=[noop],
                store=f"sqlite:///{tmp_path}/store",
                effect_host=host,
            ) as core,
            core.session("s") as session,
        ):
            await session.run("go", turn_id="t")

    with pytest.raises(RestateHostError, match="restate_effect_host_requires_handler"):
        asyncio.run(outside())


def test_the_service_checks_its_factory_and_host(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="core_factory must be callable"):
        LashRestateService(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-blank"):
        LashRestateService(lambda host: None, name=" ")  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="max_attempts"):
        RestateEffectHost(max_attempts=0)

    other = RestateEffectHost()

    def wrong_host(host: RestateEffectHost) -> LashCore:
        return LashCore(
            provider=ScriptedProvider([Reply(text="x")]),
            model="m",
            store=f"sqlite:///{tmp_path}/store",
            effect_host=other,
        )

    service = LashRestateService(wrong_host)
    with pytest.raises(ConfigError, match="effect_host=<the host it was given>"):
        asyncio.run(service.core())
