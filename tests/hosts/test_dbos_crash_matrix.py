"""DBOS crash matrix: a turn workflow SIGKILLed at each boundary, then recovered by a fresh process.

``dbos_child.py`` runs one turn (model -> 2 tools -> model -> 2 tools -> model answer)
as a DBOS workflow over a SQLite system database and a SQLite lash store, logging
every real model call and tool run to a file outside the process. For each kill point
the child dies; a fresh child launches DBOS, which recovers the pending workflow, and
asks for the same turn. Every effect DBOS checkpointed before the kill must not run
again; the turn must end exactly as an uninterrupted run, with exactly one turn commit
and every message and attachment exactly once.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from crash_support import ALL_STEPS, ALL_TAGS, final_text, log_lines, spawn
from crash_support import tag_of as key_tag
from dbos import DBOSClient

CHILD = Path(__file__).with_name("dbos_child.py")
WORKFLOW_ID = "lash-turn:crash-matrix:crash-session:turn-1"


def checkpoints(home: Path) -> list[tuple[str, str]]:
    """(step name, recorded output) of every step DBOS checkpointed for the turn."""
    client = DBOSClient(system_database_url=f"sqlite:///{home / 'dbos.sqlite3'}")
    try:
        steps = client.list_workflow_steps(WORKFLOW_ID)
    finally:
        client.destroy()
    return [(s["function_name"], s["output"]) for s in steps]


def effect_hashes(recorded: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(step name, envelope hash) of every effect step, sorted; each name at most once."""
    pairs = sorted(
        (name, json.loads(output)["data"]["envelope_hash"])
        for name, output in recorded
        if name.startswith("lash:")
    )
    assert len({name for name, _ in pairs}) == len(pairs)
    return pairs


def tag_of(step_name: str) -> str | None:
    """The side-effect log tag of a checkpointed step (None: no side effect)."""
    if not step_name.startswith("lash:"):
        return None
    return key_tag(step_name.removeprefix("lash:"))


def blobs(home: Path) -> list[str]:
    return sorted(
        p.name
        for p in (home / "store" / "attachments").rglob("*")
        if p.is_file() and not p.name.endswith(".json")
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("reference")
    done = spawn(CHILD, home, None)
    assert done.returncode == 0, done.stderr
    assert Counter(log_lines(home)) == Counter(ALL_TAGS)  # tool calls run concurrently
    return {
        "result": json.loads((home / "result.json").read_text()),
        "checkpoints": checkpoints(home),
        "blobs": blobs(home),
    }


# kill point -> the tags the interrupted effect may log a second time
KILL_POINTS = {
    "llm:1": ["llm:1"],  # during the first model call
    "llm:2": ["llm:2"],  # during a later model call
    "after-llm:2": [],  # after a model reply was checkpointed, before the next effect
    "tool:c4": ["tool:c4"],  # during a tool batch, c3 already finished
    "commit:during": [],  # inside the final commit's transaction
    "commit:after": [],  # after the final commit landed, before the workflow ended
}


def test_the_reference_run_checkpoints_every_effect_by_replay_key(
    reference: dict[str, Any],
) -> None:
    names = [name for name, _ in reference["checkpoints"]]
    assert names[-1] == "lash.journal-end"
    effect_tags = [tag_of(n) for n in names if tag_of(n) is not None]
    assert sorted(effect_tags) == sorted(ALL_TAGS)
    assert all(n.startswith("lash:crash-session:turn-1:") for n in names[:-1])


@pytest.mark.parametrize("kill_at", list(KILL_POINTS))
def test_a_killed_turn_workflow_recovers_without_repeating_completed_effects(
    kill_at: str, tmp_path: Path, reference: dict[str, Any]
) -> None:
    killed = spawn(CHILD, tmp_path, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "result.json").exists()
    before = log_lines(tmp_path)
    completed_before = {tag_of(name) for name, _ in checkpoints(tmp_path)} - {None}
    assert completed_before <= set(before)
    if kill_at.startswith("after-llm:"):
        assert f"llm:{kill_at.split(':')[1]}" in completed_before
    if kill_at == "tool:c4":
        assert "tool:c3" in completed_before

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
    assert result["text"] == expected["text"] == final_text(result["messages"])

    # Exactly one turn commit; every message and the attachment exactly once.
    assert (result["revision"], result["turn_index"]) == (1, 1)
    ids = [m["id"] for m in result["messages"]]
    assert len(ids) == len(set(ids))
    assert len(blobs(tmp_path)) == len(reference["blobs"]) == 1

    # DBOS holds every effect once, with the reference run's envelope hashes, and one
    # end marker for the journal.
    recorded = checkpoints(tmp_path)
    assert effect_hashes(recorded) == effect_hashes(reference["checkpoints"])
    assert [n for n, _ in recorded].count("lash.journal-end") == 1
