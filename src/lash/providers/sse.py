"""An incremental, sans-IO Server-Sent Events framer.

Feed it bytes as they arrive and it returns the complete events. It follows the
WHATWG event-stream rules: CRLF, LF or a lone CR end a line (a CR at the end of a
chunk is held until the next byte shows whether an LF follows); a line is decoded
as UTF-8 only once it is complete, so a code point split across chunks survives;
``:`` lines are comments; several ``data:`` lines join with ``\\n``; a blank line
dispatches. Unlike a browser, :meth:`SseDecoder.close` also dispatches an event
whose final blank line never arrived (vendors do send such bodies).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseDecoder", "SseError", "SseEvent", "iter_sse_events"]

_DEFAULT_MAX_PENDING = 16 * 1024 * 1024


class SseError(ValueError):
    """The byte stream is not a valid event stream (bad UTF-8, an oversized line)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event; ``event`` defaults to ``"message"``."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SseDecoder:
    """Turns event-stream bytes into :class:`SseEvent` values, chunk by chunk."""

    __slots__ = (
        "_closed",
        "_consumed",
        "_data",
        "_event",
        "_has_data",
        "_last_id",
        "_max_pending",
        "_pending",
        "_retry",
        "_started",
    )

    def __init__(self, *, max_pending_bytes: int = _DEFAULT_MAX_PENDING) -> None:
        self._pending = b""
        self._consumed = 0
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._started = False
        self._closed = False
        self._max_pending = max_pending_bytes

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add ``chunk`` and return every event it completes."""
        if self._closed:
            raise SseError("SSE decoder is closed")
        if not chunk:
            return []
        buf = self._pending + chunk if self._pending else bytes(chunk)
        # A trailing CR may be the first half of CRLF: keep it until the next byte.
        end = len(buf) - 1 if buf[-1] == 0x0D else len(buf)
        cut = max(buf.rfind(b"\n", 0, end), buf.rfind(b"\r", 0, end))
        if cut < 0:
            if len(buf) > self._max_pending:
                raise SseError(
                    f"SSE line longer than {self._max_pending} bytes "
                    f"(at stream byte {self._consumed})"
                )
            self._pending = buf
            return []
        self._pending = buf[cut + 1 :]
        return self._process(self._decode(buf[: cut + 1]), terminated=True)

    def close(self) -> list[SseEvent]:
        """Signal end of stream: flush an unterminated last line and pending event."""
        if self._closed:
            return []
        self._closed = True
        rest, self._pending = self._pending, b""
        events = self._process(self._decode(rest), terminated=False) if rest else []
        if self._has_data:
            events.append(self._dispatch_event())
        return events

    # ------------------------------------------------------------ internals

    def _decode(self, block: bytes) -> str:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SseError(
                f"invalid UTF-8 in SSE stream at byte {self._consumed + exc.start}: "
                f"{block[exc.start : exc.start + 4]!r}"
            ) from None
        self._consumed += len(block)
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        return text

    def _process(self, text: str, *, terminated: bool) -> list[SseEvent]:
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if terminated:
            lines.pop()  # the text ends with a terminator: the last piece is empty
        events: list[SseEvent] = []
        for line in lines:
            if not line:
                if self._has_data:
                    events.append(self._dispatch_event())
                else:
                    self._event = ""
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                self._data.append(value)
                self._has_data = True
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self._last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)
        return events

    def _dispatch_event(self) -> SseEvent:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = SseEvent(
            data=data, event=self._event or "message", id=self._last_id, retry=self._retry
        )
        self._data = []
        self._has_data = False
        self._event = ""
        return event


def iter_sse_events(body: bytes) -> list[SseEvent]:
    """All events of a complete body (convenience for buffered responses and tests)."""
    decoder = SseDecoder()
    return [*decoder.feed(body), *decoder.close()]
