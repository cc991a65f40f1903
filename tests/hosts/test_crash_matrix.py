"""Crash matrix: a durable turn killed with SIGKILL at each boundary, then resumed.

``crash_child.py`` runs one turn (model -> 2 tools -> model -> 2 tools -> model
answer) over ``SqliteJournalHost`` and a SQLite store, logging every real model
call and tool run to a file outside the process. For each kill point the child
dies, then a fresh child resumes the same turn id. Every effect journaled before
the kill must not run again; the resumed turn must match an uninterrupted run;
exactly one turn commit must exist; no message or attachment may be lost or
duplicated.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from crash_support import ALL_STEPS, ALL_TAGS, final_text, log_lines, spawn, tag_of

CHILD = Path(__file__).with_name("crash_child.py")


def journal(home: Path) -> dict[str, tuple[str, str]]:
    """replay_key -> (status, envelope_hash)."""
    with sqlite3.connect(home / "journal.sqlite3") as conn:
        rows = conn.execute("SELECT replay_key, status, envelope_hash FROM effect_journal")
        return {key: (status, digest) for key, status, digest in rows.fetchall()}


def store_facts(home: Path) -> dict[str, Any]:
    with sqlite3.connect(home / "store" / "lash.sqlite3") as conn:
        stamps = conn.execute("SELECT turn_id, revision FROM turn_stamps").fetchall()
        sessions = conn.execute("SELECT session_id, revision, turn_index FROM sessions").fetchall()
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    with sqlite3.connect(home / "store" / "attachments-manifest.sqlite3") as conn:
        manifest = conn.execute(
            "SELECT session_id, attachment_id, committed_at IS NOT NULL FROM attachment_manifest"
        ).fetchall()
    blobs = sorted(
        p.name
        for p in (home / "store" / "attachments").rglob("*")
        if p.is_file() and not p.name.endswith(".json")
    )
    return {
        "stamps": stamps,
        "sessions": sessions,
        "message_rows": messages,
        "manifest": manifest,
        "blobs": blobs,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("reference")
    done = spawn(CHILD, home, None)
    assert done.returncode == 0, done.stderr
    assert log_lines(home) == ALL_TAGS
    return {
        "result": json.loads((home / "result.json").read_text()),
        "journal": journal(home),
        "store": store_facts(home),
    }


# kill point -> the tags the interrupted effect may log a second time
KILL_POINTS = {
    "llm:1": ["llm:1"],  # during the first model call
    "llm:2": ["llm:2"],  # during a model call
    "after-llm:2": [],  # after a model reply, before the next effect
    "tool:c4": ["tool:c4"],  # during a tool batch, c3 already finished
    "commit:during": [],  # inside the final commit's transaction
    "commit:after": [],  # after the final commit landed
}


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
def test_a_killed_turn_resumes_without_repeating_completed_effects(
    kill_at: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    killed = spawn(CHILD, tmp_path, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "result.json").exists()
    before = log_lines(tmp_path)
    completed_before = {
        tag_of(key) for key, (status, _) in journal(tmp_path).items() if status == "completed"
    } - {None}
    assert completed_before <= set(before)

    resumed = spawn(CHILD, tmp_path, None)
    assert resumed.returncode == 0, resumed.stderr
    after = log_lines(tmp_path)

    # No effect that completed before the kill ran again; only the interrupted one may.
    counts = Counter(after)
    for tag in completed_before:
        assert counts[tag] == 1, (tag, after)
    assert counts == Counter(ALL_TAGS + KILL_POINTS[kill_at]), after

    # The same outcome and the same committed messages as an uninterrupted run.
    result = json.loads((tmp_path / "result.json").read_text())
    expected = reference["result"]
    assert result["messages"] == expected["messages"]
    assert result["steps"] == expected["steps"] == ALL_STEPS  # each tool's state write, once
    assert final_text(result["messages"]) == expected["text"]
    if kill_at != "commit:after":
        assert result["text"] == expected["text"]
    assert (result["revision"], result["turn_index"]) == (1, 1)

    # Exactly one turn commit; every message and attachment exactly once.
    facts = store_facts(tmp_path)
    assert facts == reference["store"]
    assert facts["stamps"] == [("turn-1", 1)]
    assert facts["message_rows"] == len(expected["messages"])
    assert len(facts["blobs"]) == 1
    assert facts["manifest"] == [("crash-session", facts["blobs"][0], 1)]

    # The journal holds every effect, completed, with the reference envelope hashes.
    entries = journal(tmp_path)
    assert entries == reference["journal"]
    assert {status for status, _ in entries.values()} == {"completed"}
