"""The SSE framer: line endings, fields, EOF flush, bad bytes, and re-chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from provider_support import FIXTURES, split_at

from lash.providers.sse import SseDecoder, SseError, SseEvent, iter_sse_events


def decode_pieces(pieces: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def test_basic_fields_and_multiline_data() -> None:
    body = b": comment\nevent: update\nid: 7\nretry: 150\ndata: a\ndata:b\ndata:  c\n\ndata: x\n\n"
    assert iter_sse_events(body) == [
        SseEvent(data="a\nb\n c", event="update", id="7", retry=150),
        SseEvent(data="x", event="message", id="7", retry=150),
    ]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    body = eol.join([b"data: one", b"data: two", b"", b"data: three", b"", b""])
    assert [e.data for e in iter_sse_events(body)] == ["one\ntwo", "three"]


def test_crlf_split_between_cr_and_lf_is_one_line_ending() -> None:
    events = decode_pieces([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"])
    assert [e.data for e in events] == ["a", "b"]


def test_eof_flushes_an_unterminated_event() -> None:
    assert [e.data for e in iter_sse_events(b"data: last")] == ["last"]
    assert [e.data for e in iter_sse_events(b"data: last\n")] == ["last"]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert iter_sse_events(b"\n\n: ping\n\nevent: x\n\n") == []


def test_utf8_split_across_chunks() -> None:
    body = "data: héllo 🌍 wörld\n\n".encode()
    for cut in range(1, len(body)):
        assert decode_pieces([body[:cut], body[cut:]])[0].data == "héllo 🌍 wörld"


def test_bom_is_skipped() -> None:
    assert iter_sse_events(b"\xef\xbb\xbfdata: x\n\n")[0].data == "x"


def test_invalid_utf8_is_a_clear_error() -> None:
    with pytest.raises(SseError, match="invalid UTF-8 in SSE stream at byte 8"):
        iter_sse_events(b"data: a\n\xff\xfe\n\n")


def test_oversized_line_is_an_error() -> None:
    decoder = SseDecoder(max_pending_bytes=10)
    with pytest.raises(SseError, match="longer than 10 bytes"):
        decoder.feed(b"data: 0123456789")


def test_id_with_nul_is_ignored() -> None:
    assert iter_sse_events(b"id: a\0b\ndata: x\n\n")[0].id is None


def _stream_bodies() -> list[bytes]:
    bodies = [p.read_bytes() for p in sorted(FIXTURES.glob("*/*.body"))]
    return [b for b in bodies if b"data:" in b]


BODIES = _stream_bodies()


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(BODIES) - 1),
    offsets=st.lists(st.integers(0, 1 << 20), max_size=40),
    eol=st.sampled_from([None, b"\r\n", b"\r"]),
)
def test_any_rechunking_yields_the_same_events(
    index: int, offsets: list[int], eol: bytes | None
) -> None:
    body = BODIES[index]
    if eol is not None:
        body = body.replace(b"\r\n", b"\n").replace(b"\n", eol)
    expected = iter_sse_events(body)
    assert expected
    offsets = [o % (len(body) + 1) for o in offsets]
    assert decode_pieces(split_at(body, offsets)) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=5), st.data())
def test_arbitrary_payloads_roundtrip(payloads: list[str], data: st.DataObject) -> None:
    clean = [p.replace("\r", "").replace("\n", "") for p in payloads]
    body = "".join(f"data: {p}\n\n" for p in clean).encode()
    offsets = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    events = decode_pieces(split_at(body, offsets))
    assert [e.data for e in events] == clean


def test_one_byte_feeding_of_every_stream_fixture() -> None:
    for body in BODIES:
        assert decode_pieces([body[i : i + 1] for i in range(len(body))]) == iter_sse_events(body)
