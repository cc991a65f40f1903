"""A lash agent as a Restate service: durable turns, a SQLite store, loopback only.

Each session is a Restate virtual object keyed by its id; ``turn`` runs one turn.
Every model call and tool call is journaled by Restate, so a crash mid-turn resumes
where it stopped instead of calling the model or the tools again.

Run it (needs ``restate-sdk`` and ``hypercorn``; Restate itself comes from npm)::

    python examples/restate_service.py &                # the endpoint, 127.0.0.1:9080
    RESTATE_INGRESS__BIND_ADDRESS=127.0.0.1:8080 \\
    RESTATE_ADMIN__BIND_ADDRESS=127.0.0.1:9070 \\
    RESTATE_BIND_ADDRESS=127.0.0.1:5122 \\
        "$(scripts/restate-server)" &                   # the Restate server, loopback only
    curl -X POST 127.0.0.1:9070/deployments \\
        -H 'content-type: application/json' -d '{"uri": "http://127.0.0.1:9080"}'
    curl -X POST 127.0.0.1:8080/LashSession/chat-1/turn \\
        -H 'content-type: application/json' -d '{"turn_id": "t1", "input": "Add 2 and 3"}'

Environment:

* ``LASH_RESTATE_BIND`` — the endpoint's address (default ``127.0.0.1:9080``; keep it
  on loopback unless something in front authenticates Restate's requests);
* ``LASH_DATA`` — the SQLite store's directory (default ``./lash-data``);
* ``LASH_MODEL`` — a provider selection such as ``openai:gpt-4.1-mini`` (the key comes
  from ``OPENAI_API_KEY``); unset, a scripted model adds the numbers it is given.

Each request needs a fresh ``turn_id``. To retry a request safely, send it with an
``idempotency-key`` header: Restate then answers with the first invocation's result.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config

from lash import LashCore, tool
from lash.hosts.restate import LashRestateService, RestateEffectHost
from lash.kernel.llm import LlmRequest, TextBlock, ToolResultBlock
from lash.testing import Reply, ScriptedProvider, ToolCall


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def scripted_reply(request: LlmRequest) -> Reply:
    """A stand-in model: asks ``add`` for the numbers in the last user text, then answers."""
    last = request.messages[-1]
    results = [b for b in last.blocks if isinstance(b, ToolResultBlock)]
    if results:
        return Reply(text=f"The sum is {results[-1].content}.")
    text = " ".join(b.text for b in last.blocks if isinstance(b, TextBlock))
    numbers = [int(n) for n in re.findall(r"-?\d+", text)] or [0]
    a, b = [*numbers, 0][:2]
    call_id = f"add-{len(request.messages)}"
    return Reply(tool_calls=[ToolCall("add", {"a": a, "b": b}, id=call_id)])


def build_core(host: RestateEffectHost) -> LashCore:
    """The service's core: ``LASH_MODEL`` (or the scripted model), SQLite under ``LASH_DATA``."""
    data = Path(os.environ.get("LASH_DATA", "./lash-data")).resolve()
    model = os.environ.get("LASH_MODEL")
    store = f"sqlite:///{data}"
    if model:
        return LashCore(provider=model, tools=[add], store=store, effect_host=host)
    return LashCore(
        provider=ScriptedProvider(scripted_reply),
        model="scripted",
        tools=[add],
        store=store,
        effect_host=host,
    )


async def main() -> None:
    service = LashRestateService(build_core)
    await service.core()  # build now, so a wiring error stops us before we serve
    config = Config()
    config.bind = [os.environ.get("LASH_RESTATE_BIND", "127.0.0.1:9080")]
    try:
        await serve(service.app(), config)
    finally:
        await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
