"""Shared pieces of the provider tests: a loopback replay server and call harnesses.

The server is written on ``asyncio.start_server`` so there is no server
dependency: each reply says how its body is split, whether to use chunked or
connection-close framing, how long to pause between pieces, and whether to drop
the connection mid-body. :class:`Harness` runs a provider through
``ProviderHandle`` against it; :func:`complete_fixture` serves a recorded body.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lash.kernel.llm import LlmRequest, LlmResponse
from lash.providers import ProviderError, RetryStatusEvent, StreamEvent
from lash.providers.http import ProviderHandle, RetryPolicy, Timeouts
from lash.testing.provider_conformance import one_byte_pieces

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "sk-test-PLANTED-SECRET-7f3a9c2e1b"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run ``coro`` on a fresh loop; a hang fails after ``timeout`` seconds."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


@dataclass
class Fixture:
    name: str
    meta: dict[str, Any]
    body: bytes

    @property
    def expected(self) -> dict[str, Any]:
        return self.meta["expected"]  # type: ignore[no-any-return]


def load_fixtures(api: str) -> list[Fixture]:
    folder = FIXTURES / api
    return [
        Fixture(p.stem, json.loads(p.read_text()), p.with_suffix(".body").read_bytes())
        for p in sorted(folder.glob("*.json"))
    ]


def split_at(body: bytes, offsets: Sequence[int]) -> list[bytes]:
    """``body`` cut at the given offsets (any order, duplicates allowed)."""
    cuts = sorted({o for o in offsets if 0 < o < len(body)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(body[start:cut])
        start = cut
    pieces.append(body[start:])
    return [p for p in pieces if p]


def one_byte_writes(body: bytes, limit: int = 3000) -> list[bytes]:
    """The first ``limit`` bytes of ``body`` one at a time, then the rest in one piece."""
    rest = [body[limit:]] if len(body) > limit else []
    return [*one_byte_pieces(body[:limit]), *rest]


@dataclass
class Reply:
    status: int = 200
    content_type: str = "application/json"
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = True
    delay: float = 0.0  # pause before each piece
    abort: bool = False  # drop the connection after the pieces, without terminating
    head_delay: float = 0.0  # pause before the status line
    hangup: bool = False  # drop the connection before sending anything


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ReplayServer:
    """Serves ``replies`` in order, one per request; the last one repeats."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = list(replies)
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(method, path, headers, body))
            reply = self.replies[min(len(self.received) - 1, len(self.replies) - 1)]
            await self._send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.hangup:
            writer.transport.abort()
            return
        if reply.head_delay:
            await asyncio.sleep(reply.head_delay)
        head = [f"HTTP/1.1 {reply.status} X", f"Content-Type: {reply.content_type}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        head.append("Connection: close")
        if reply.chunked:
            head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        for piece in reply.chunks:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.chunked:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        if reply.abort:
            transport = writer.transport
            transport.abort()
            return
        if reply.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()


@asynccontextmanager
async def serving(*replies: Reply) -> AsyncIterator[ReplayServer]:
    server = ReplayServer(replies)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def fixture_reply(fx: Fixture, chunks: list[bytes] | None = None, **kw: Any) -> Reply:
    return Reply(
        status=fx.meta["status"],
        content_type=fx.meta["content_type"],
        chunks=chunks if chunks is not None else [fx.body],
        **kw,
    )


# ---------------------------------------------------------------- calling a provider

ProviderFactory = Callable[..., Any]
"""A provider class: ``factory(api_key=..., base_url=..., **options)`` → async context manager."""


class Harness:
    """Runs one call of ``provider`` through ``ProviderHandle`` with a recording fake sleep.

    ``request`` is what :meth:`call` sends unless told otherwise. Errors are kept
    as their text, reprs and raw body, the request bodies the server received as
    JSON, so a test can check them for secrets or fields.
    """

    def __init__(self, provider: ProviderFactory, request: LlmRequest) -> None:
        self.provider = provider
        self.request = request
        self.sleeps: list[float] = []
        self.events: list[StreamEvent] = []
        self.errors: list[str] = []
        self.bodies: list[Any] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def on_event(self, event: StreamEvent) -> None:
        self.events.append(event)

    @property
    def retries(self) -> list[RetryStatusEvent]:
        return [e for e in self.events if isinstance(e, RetryStatusEvent)]

    async def call(
        self,
        *replies: Reply,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        stream: bool = True,
        request: LlmRequest | None = None,
        **options: Any,
    ) -> tuple[LlmResponse | ProviderError, int]:
        """Serve ``replies`` and make one call (``stream``: with an event callback)."""
        async with serving(*replies) as server:
            async with self.provider(
                api_key=API_KEY, base_url=server.base_url, timeouts=timeouts, **options
            ) as provider:
                handle = ProviderHandle(
                    provider, retry=retry or RetryPolicy(), sleep=self.sleep, rand=lambda: 0.5
                )
                try:
                    result: LlmResponse | ProviderError = await handle.complete(
                        self.request if request is None else request,
                        self.on_event if stream else None,
                    )
                except ProviderError as exc:
                    self.errors += [str(exc), repr(exc), repr(exc.error), str(exc.error.raw)]
                    result = exc
            self.bodies = [r.json() for r in server.received]
            return result, len(server.received)


def no_secret(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The planted API key is in no error, event or log line."""
    for sink in [*harness.errors, *(repr(e) for e in harness.events), caplog.text]:
        assert API_KEY not in sink
        assert "PLANTED" not in sink


def failed(result: LlmResponse | ProviderError) -> ProviderError:
    """``result`` as the error it must be."""
    assert isinstance(result, ProviderError), result
    return result


async def ignore_event(event: StreamEvent) -> None:
    """A stream callback that drops every event (to ask for a stream)."""
    return None


async def complete_fixture(
    provider: ProviderFactory,
    request: LlmRequest,
    fx: Fixture,
    chunks: list[bytes] | None = None,
    *,
    stream: bool = True,
    reply: Reply | None = None,
) -> tuple[LlmResponse, list[StreamEvent], str]:
    """Serve ``fx`` (in ``chunks``, or as ``reply``) and complete ``request`` once.

    Returns the response, the stream events (none unless ``stream``) and the
    request path the server saw.
    """
    events: list[StreamEvent] = []

    async def on_event(event: StreamEvent) -> None:
        events.append(event)

    async with serving(reply or fixture_reply(fx, chunks)) as server:
        async with provider(api_key=API_KEY, base_url=server.base_url) as client:
            response = await client.complete(request, on_event if stream else None)
        path = server.received[0].path
    return response, events, path
