"""Queued work: input that arrives while a session is busy (or for later).

Delivery ``earliest_safe_boundary`` joins the running turn at its next
checkpoint (the model sees it as a transient user message); with no turn
running it becomes a turn of its own. Delivery ``after_current_turn`` always
becomes a full turn. A ``source_key`` makes enqueueing idempotent: the same key
returns the item already queued. Items are taken in order; a checkpoint takes
only the ``earliest_safe_boundary`` items at the head of the queue (an
``after_current_turn`` item at the head blocks those behind it).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

import msgspec

from ..kernel.messages import InjectedMessage, PluginOrigin, Role


class Delivery(StrEnum):
    """When queued input reaches the model."""

    EARLIEST_SAFE_BOUNDARY = "earliest_safe_boundary"
    AFTER_CURRENT_TURN = "after_current_turn"


class QueuedInput(msgspec.Struct, frozen=True, kw_only=True):
    """One queued input."""

    id: str
    text: str
    delivery: Delivery
    source_key: str | None = None


class WorkQueue:
    """A session's queued input (in memory; durable stores keep their own)."""

    __slots__ = ("_by_key", "_items", "_seq")

    def __init__(self) -> None:
        self._items: deque[QueuedInput] = deque()
        self._by_key: dict[str, QueuedInput] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending(self) -> tuple[QueuedInput, ...]:
        """Queued items, oldest first."""
        return tuple(self._items)

    def enqueue(self, text: str, delivery: Delivery, source_key: str | None) -> QueuedInput:
        """Queue ``text``; a known ``source_key`` returns its existing item."""
        if not isinstance(text, str):
            raise TypeError(f"queued input must be a string, got {type(text).__name__}")
        if source_key is not None:
            if not source_key.strip():
                raise ValueError("source_key must not be blank")
            known = self._by_key.get(source_key)
            if known is not None:
                return known
        self._seq += 1
        item = QueuedInput(
            id=f"q{self._seq}", text=text, delivery=Delivery(delivery), source_key=source_key
        )
        self._items.append(item)
        if source_key is not None:
            self._by_key[source_key] = item
        return item

    def take_for_checkpoint(self) -> list[QueuedInput]:
        """The ``earliest_safe_boundary`` items at the head of the queue, removed."""
        taken = []
        while self._items and self._items[0].delivery is Delivery.EARLIEST_SAFE_BOUNDARY:
            taken.append(self._items.popleft())
        return taken

    def take_next_turn(self) -> QueuedInput | None:
        """The oldest item, removed, to run as a turn of its own."""
        return self._items.popleft() if self._items else None


def as_injected(item: QueuedInput) -> InjectedMessage:
    """A queued item as a transient user message for a checkpoint."""
    return InjectedMessage(
        role=Role.USER,
        content=item.text,
        origin=PluginOrigin(plugin_id=f"queue:{item.id}", transient=True),
    )
