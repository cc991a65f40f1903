"""Child process of the crash-atomicity test: dies (SIGKILL) inside a commit's transaction.

Run as ``python store_crash_child.py <store-dir>``. It makes one huge commit and, once
the transaction has appended every message, prints ``in-transaction`` and
waits to be killed. The pause is found by wrapping the usage-row decoder that
the commit calls *after* inserting the messages (a white-box seam: the store
itself carries no test hook).
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from typing import Any

import msgspec

from lash.kernel.llm import LlmUsage
from lash.kernel.messages import user_message
from lash.store.base import RuntimeCommit, TurnStamp, UsageRow, commit_hash

HUGE = 12_000
"""Messages in the huge commit: megabytes, more than SQLite's page cache, so
uncommitted pages spill into the WAL before the kill."""

HEAD_USAGE = UsageRow(source="model", model="m", usage=LlmUsage(input_tokens=1))


def _noise(i: int) -> str:
    """Deterministic text that compresses poorly, so the commit stays megabytes big."""
    return "".join(hashlib.sha256(f"{i}:{k}".encode()).hexdigest() for k in range(3))


def huge_commit(expected_revision: int) -> RuntimeCommit:
    """The huge stamped commit, identical in parent and child."""
    commit = RuntimeCommit(
        session_id="crash",
        expected_revision=expected_revision,
        messages=tuple(user_message(f"big-{i}", _noise(i)) for i in range(HUGE)),
        turn_index=2,
        usage=(UsageRow(source="model", model="m", usage=LlmUsage(input_tokens=5)),),
    )
    stamp = TurnStamp(session_id="crash", turn_id="turn-2", commit_hash=commit_hash(commit))
    return msgspec.structs.replace(commit, stamp=stamp)


def main(path: str) -> None:
    import lash.store.sqlite as sqlite_module
    from lash.store.sqlite import SqliteStore

    real = sqlite_module._decode_row

    def pause(*args: Any, **kwargs: Any) -> Any:
        print("in-transaction", flush=True)
        time.sleep(60)
        return real(*args, **kwargs)

    sqlite_module._decode_row = pause

    async def run() -> None:
        store = SqliteStore(path)
        await store.commit(huge_commit(expected_revision=1))
        print("committed", flush=True)  # never reached when the test kills us

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
