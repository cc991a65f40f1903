"""Which representation for the kernel's hot types? Measured, not assumed.

Times construction, JSON encoding and typed JSON decoding of one assistant
message with three parts (prose and two tool calls) under three candidates:
msgspec structs, frozen slotted dataclasses with a hand-written codec, and
pydantic v2 models. The kernel uses msgspec structs because of these figures.

    python benchmarks/codec_candidates.py
"""

from __future__ import annotations

import dataclasses
import json
import timeit
from collections.abc import Callable
from typing import Any

import msgspec
import pydantic

N = 20_000


class MPart(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    kind: str
    content: str = ""
    tool_call_id: str | None = None
    tool_name: str | None = None


class MMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    role: str
    parts: tuple[MPart, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DPart:
    id: str
    kind: str
    content: str = ""
    tool_call_id: str | None = None
    tool_name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DMessage:
    id: str
    role: str
    parts: tuple[DPart, ...] = ()


class PPart(pydantic.BaseModel, frozen=True):
    id: str
    kind: str
    content: str = ""
    tool_call_id: str | None = None
    tool_name: str | None = None


class PMessage(pydantic.BaseModel, frozen=True):
    id: str
    role: str
    parts: tuple[PPart, ...] = ()


def dc_encode(m: DMessage) -> bytes:
    def part(p: DPart) -> dict[str, Any]:
        d: dict[str, Any] = {"id": p.id, "kind": p.kind}
        if p.content:
            d["content"] = p.content
        if p.tool_call_id is not None:
            d["tool_call_id"] = p.tool_call_id
        if p.tool_name is not None:
            d["tool_name"] = p.tool_name
        return d

    doc = {"id": m.id, "role": m.role, "parts": [part(p) for p in m.parts]}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def dc_decode(b: bytes) -> DMessage:
    d = json.loads(b)
    return DMessage(id=d["id"], role=d["role"], parts=tuple(DPart(**p) for p in d["parts"]))


def build(part: Callable[..., Any], message: Callable[..., Any]) -> Any:
    return message(
        id="m1",
        role="assistant",
        parts=(
            part(id="m1.p0", kind="prose", content="Let me add those."),
            part(
                id="m1.p1", kind="tool_call", content='{"a":1}', tool_call_id="c1", tool_name="add"
            ),
            part(
                id="m1.p2", kind="tool_call", content='{"a":2}', tool_call_id="c2", tool_name="add"
            ),
        ),
    )  # fmt: skip


def micros(fn: Callable[[], object]) -> float:
    return min(timeit.repeat(fn, number=N, repeat=5)) / N * 1e6


def main() -> None:
    encoder = msgspec.json.Encoder(order="sorted")
    decoder = msgspec.json.Decoder(MMessage)
    m, d, p = build(MPart, MMessage), build(DPart, DMessage), build(PPart, PMessage)
    mb, db, pb = encoder.encode(m), dc_encode(d), p.model_dump_json().encode()
    assert decoder.decode(mb) == m
    assert dc_decode(db) == d
    assert PMessage.model_validate_json(pb) == p
    rows = [
        ("construct", lambda: build(MPart, MMessage), lambda: build(DPart, DMessage),
         lambda: build(PPart, PMessage)),
        ("encode", lambda: encoder.encode(m), lambda: dc_encode(d), p.model_dump_json),
        ("decode", lambda: decoder.decode(mb), lambda: dc_decode(db),
         lambda: PMessage.model_validate_json(pb)),
    ]  # fmt: skip
    header = f"{'us per op':<10} {'msgspec':>9} {'dataclass':>10} {'pydantic':>9}"
    print(f"{header}   dataclass/msgspec  pydantic/msgspec")
    for name, *fns in rows:
        ms, dc, pd = (micros(fn) for fn in fns)
        print(f"{name:<10} {ms:>9.2f} {dc:>10.2f} {pd:>9.2f}   {dc / ms:>16.1f}x {pd / ms:>16.1f}x")


if __name__ == "__main__":
    main()
