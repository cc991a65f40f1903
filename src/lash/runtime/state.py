"""Session state: typed, named values that plugins and tools keep per session.

A ``StateKey`` names a slot and its type. Values are encoded with msgpack and
committed in the same store transaction as the turn that changed them, so a
crash never leaves state ahead of (or behind) the history that explains it.

Inside a turn, writes are buffered and land with the turn's commit:

* before-turn hooks see a plain ``StateView``;
* a tool call sees a ``ToolStateView``. Reads in one batch of tool calls behave
  as if the calls ran one after another in the order the model gave them: the
  first read of call *i* waits until calls ``0..i-1`` have finished and then
  sees their writes. Calls that never read state keep running concurrently.
  A call's writes are recorded with its outcome, so a durable replay
  re-applies them without running the tool again; a failed call's writes are
  dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast

import msgspec
import msgspec.inspect

from ..store.base import MAX_STATE_NAME, check_text

T = TypeVar("T")

_MISSING: Any = object()

StateWrites = dict[str, "bytes | None"]
"""State changes by name; ``None`` deletes."""


class StateError(Exception):
    """A state value does not fit its key's type, or a stored value no longer decodes."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"state {name!r}: {message}")
        self.name = name


class StateKey(Generic[T]):
    """A named, typed slot of session state.

    ``type`` is anything msgspec can encode and decode (built-in containers,
    dataclasses, ``msgspec.Struct``...). ``get`` returns ``default`` (or a fresh
    ``default_factory()``) while the slot is unset. Define keys once, at module
    level; the name is what the store keeps, so keep it stable.
    """

    __slots__ = ("_decoder", "_default", "_factory", "name", "type")

    def __init__(
        self,
        name: str,
        type: Any,
        *,
        default: T | None = None,
        default_factory: Callable[[], T] | None = None,
    ) -> None:
        check_text("state name", name)
        if len(name) > MAX_STATE_NAME:
            raise ValueError(f"state name {name[:40]!r}... is longer than {MAX_STATE_NAME}")
        if default is not None and default_factory is not None:
            raise ValueError(f"state {name!r}: give default or default_factory, not both")
        self.name = name
        self.type = type
        self._default = default
        self._factory = default_factory
        try:
            self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(type)
            custom = _custom_class(msgspec.inspect.type_info(type))
        except TypeError as exc:
            raise ValueError(f"state {name!r}: {type!r} is not a supported type: {exc}") from None
        if custom is not None:
            raise ValueError(
                f"state {name!r}: {type!r} is not a supported type: it holds "
                f"{custom.__qualname__}, which msgspec cannot encode (use a msgspec.Struct, "
                "a dataclass, or built-in types)"
            )

    def default(self) -> T:
        """The value of an unset slot."""
        return self._factory() if self._factory is not None else cast(T, self._default)

    def encode(self, value: T) -> bytes:
        """``value`` as stored; ``StateError`` when it is not a ``type``."""
        try:
            data = msgspec.msgpack.encode(value)
            self._decoder.decode(data)  # the value must come back as this key's type
        except (TypeError, msgspec.MsgspecError) as exc:
            raise StateError(
                self.name, f"{type(value).__name__} value does not fit {self.type!r}: {exc}"
            ) from None
        return data

    def decode(self, data: bytes) -> T:
        """A stored value back; ``StateError`` when it does not decode as ``type``."""
        try:
            return cast(T, self._decoder.decode(data))
        except msgspec.MsgspecError as exc:
            raise StateError(
                self.name, f"the stored value does not decode as {self.type!r}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"StateKey({self.name!r}, {self.type!r})"


def _custom_class(node: msgspec.inspect.Type) -> type | None:
    """The first class in a type tree that msgspec would need a hook for, if any."""
    seen: set[int] = set()
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, msgspec.inspect.CustomType):
            return item.cls
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif isinstance(item, msgspec.inspect.Field):
            stack.append(item.type)
        elif isinstance(item, msgspec.inspect.Type):
            stack.extend(getattr(item, f) for f in item.__struct_fields__)
    return None


class _Writer:
    """Buffered writes, shared by both views."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes: StateWrites = {}

    def set(self, key: StateKey[T], value: T) -> None:
        """Set the slot (``StateError`` if ``value`` does not fit the key's type); it lands
        with the turn's commit (for a tool call: if the call succeeds)."""
        self._writes[key.name] = key.encode(value)

    def delete(self, key: StateKey[Any]) -> None:
        """Unset the slot."""
        self._writes[key.name] = None

    def writes(self) -> StateWrites:
        """This reader's buffered changes, by name."""
        return dict(self._writes)


class StateView(_Writer):
    """Session state as committed, plus this reader's buffered writes.

    ``get`` decodes afresh each time: change a value by ``set``-ing it again,
    not by mutating what ``get`` returned.
    """

    __slots__ = ("_base",)

    def __init__(self, base: Mapping[str, bytes]) -> None:
        super().__init__()
        self._base = base

    def get(self, key: StateKey[T]) -> T:
        """The slot's value, or its default while unset."""
        data = self.raw(key.name)
        return key.default() if data is None else key.decode(data)

    def raw(self, name: str) -> bytes | None:
        """The slot's stored bytes, or None while unset."""
        if name in self._writes:
            return self._writes[name]
        return self._base.get(name)

    def __contains__(self, key: StateKey[Any]) -> bool:
        return self.raw(key.name) is not None


def net_changes(base: Mapping[str, bytes], writes: Mapping[str, bytes | None]) -> StateWrites:
    """``writes`` without the ones that leave ``base`` as it is (sorted by name)."""
    return {name: value for name, value in sorted(writes.items()) if base.get(name) != value}


class CallSlots:
    """The state ordering of one batch of tool calls (see the module docs)."""

    __slots__ = ("_base", "_done", "_writes")

    def __init__(self, base: Callable[[], Awaitable[StateWrites]], size: int) -> None:
        self._base = base
        self._done = [asyncio.Event() for _ in range(size)]
        self._writes: list[StateWrites] = [{} for _ in range(size)]

    def finish(self, index: int, writes: StateWrites) -> None:
        """Call ``index`` is done with these writes (empty if it failed or never ran)."""
        if not self._done[index].is_set():
            self._writes[index] = writes
            self._done[index].set()

    async def before(self, index: int) -> StateWrites:
        """The batch's state changes as call ``index`` sees them: the base, then calls before it."""
        changes = dict(await self._base())
        for j in range(index):
            await self._done[j].wait()
            changes.update(self._writes[j])
        return changes

    def folded(self) -> StateWrites:
        """Every call's writes applied in call order."""
        changes: StateWrites = {}
        for writes in self._writes:
            changes.update(writes)
        return changes


class ToolStateView(_Writer):
    """Session state as one tool call sees it (see the module docs)."""

    __slots__ = ("_base", "_index", "_seen", "_slots")

    def __init__(self, base: Mapping[str, bytes], slots: CallSlots, index: int) -> None:
        super().__init__()
        self._base = base
        self._slots = slots
        self._index = index
        self._seen: StateWrites | None = None

    async def get(self, key: StateKey[T]) -> T:
        """The slot's value after the calls before this one, or its default while unset."""
        data = await self.raw(key.name)
        return key.default() if data is None else key.decode(data)

    async def raw(self, name: str) -> bytes | None:
        """The slot's bytes after the calls before this one, or None while unset."""
        if name in self._writes:
            return self._writes[name]
        if self._seen is None:
            self._seen = await self._slots.before(self._index)
        if name in self._seen:
            return self._seen[name]
        return self._base.get(name)
