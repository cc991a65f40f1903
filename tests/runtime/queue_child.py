"""A separate process that queues input through the facade, for ``test_durable_queue``.

``python queue_child.py sqlite <dir> <session> <text> [<source_key> [<delivery>]]``
or ``python queue_child.py postgres <url> <schema> <attachments-dir> <session> <text> [...]``
opens a ``LashCore`` on that store, calls ``session.enqueue`` and prints the
returned batch as one JSON line. It never runs a turn (its provider has no
replies), so anything it queued can only be run by another process.

With ``LASH_TEST_DRAIN_AND_DIE=<lease ms>`` in the environment it instead drains
the session with that queue lease, and SIGKILLs itself inside the first model
call: a worker that dies holding a drained claim.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lash import Delivery, LashCore
from lash.kernel.llm import LlmRequest
from lash.store.queue import QueuedTurnInput
from lash.testing import Reply, ScriptedProvider

DIE_ENV = "LASH_TEST_DRAIN_AND_DIE"


def die_in_model(request: LlmRequest) -> Reply:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


async def enqueue(kind: str, where: list[str], args: list[str]) -> dict[str, Any]:
    closing: Any = None
    lease = os.environ.get(DIE_ENV)
    options: dict[str, Any] = {}
    if lease is not None:
        options = {"queue_lease_ms": int(lease)}
    provider = ScriptedProvider(die_in_model if lease is not None else [])
    if kind == "sqlite":
        root = Path(where[0])
        core = LashCore(provider=provider, model="m", store=f"sqlite:///{root}", **options)
    else:
        from lash.store.postgres import PostgresStore

        closing = PostgresStore(where[0], schema=where[1], max_size=1)
        core = LashCore(
            provider=provider,
            model="m",
            store=closing,
            attachments=f"file:///{Path(where[2])}",
            **options,
        )
    if lease is not None:
        async with core, core.session(args[0]) as session:
            await session.drain()  # dies inside the drained turn's model call
        raise AssertionError("the drained turn should have killed this process")
    session_id, text, *rest = args
    source_key = rest[0] if rest and rest[0] else None
    delivery = Delivery(rest[1]) if len(rest) > 1 else Delivery.AFTER_CURRENT_TURN
    try:
        async with core, core.session(session_id) as session:
            batch = await session.enqueue(text, delivery=delivery, source_key=source_key)
    finally:
        if closing is not None:
            await closing.aclose()
    (item,) = batch.items
    assert isinstance(item.payload, QueuedTurnInput)
    return {"batch_id": batch.batch_id, "seq": batch.enqueue_seq, "text": item.payload.text}


def main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "sqlite":
        where, args = argv[1:2], argv[2:]
    elif kind == "postgres":
        where, args = argv[1:4], argv[4:]
    else:
        raise SystemExit(f"unknown store kind {kind!r}")
    print(json.dumps(asyncio.run(enqueue(kind, where, args))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
