"""What every effect host relies on: its errors pickle, and every envelope has an outcome type."""

from __future__ import annotations

import pickle

import pytest

from lash.hosts import JournalError
from lash.hosts.dbos import DbosHostError
from lash.hosts.restate import RestateHostError
from lash.runtime.effects import (
    OUTCOME_TYPES,
    EffectEnvelope,
    EffectHostError,
    EffectKind,
    InvocationScope,
    RuntimeInvocation,
    SyncSurfaceCommand,
)

ERRORS = [
    EffectHostError("host_x", "what went wrong"),
    JournalError("journal_x", "what went wrong", path="j.sqlite3", replay_key="k"),
    RestateHostError("restate_x", "what went wrong", replay_key="k"),
    DbosHostError("dbos_x", "what went wrong", replay_key="k", workflow_id="w"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_host_errors_pickle_with_their_attributes(error: EffectHostError) -> None:
    """Durable engines (DBOS) pickle the error a turn ends with."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.args == error.args
    assert vars(back) == vars(error)
    assert (back.code, back.message) == (error.code, error.message)


def test_a_pickled_host_error_keeps_added_notes() -> None:
    error = JournalError("journal_x", "what went wrong", path="j.sqlite3")
    error.add_note("while replaying turn t1")
    back = pickle.loads(pickle.dumps(error))
    assert back.__notes__ == ["while replaying turn t1"]
    assert back.path == "j.sqlite3"
    assert back.replay_key is None


def test_every_kind_an_envelope_can_carry_has_an_outcome_type() -> None:
    """Hosts decode outcomes by ``OUTCOME_TYPES[kind]`` with no fallback: an envelope of
    any other kind cannot be built."""
    missing = [kind for kind in EffectKind if kind not in OUTCOME_TYPES]
    assert missing == [EffectKind.EXEC_CODE]
    for kind in missing:
        with pytest.raises(ValueError, match="does not match command"):
            EffectEnvelope(
                invocation=RuntimeInvocation(
                    scope=InvocationScope(session_id="s", turn_id="t", turn_index=1, iteration=0),
                    effect_id="1",
                    kind=kind,
                    replay_key=f"s:t:1:0:{kind.value}:1",
                ),
                command=SyncSurfaceCommand(effect_id=1, refresh=False),
            )
