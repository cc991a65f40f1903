"""Cancellation tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def _nothing() -> None:
    """The remover of a callback that already ran."""


class CancelToken:
    """A one-way switch that asks a turn (and its tools) to stop.

    ``cancel()`` may be called from any coroutine on the loop; tools can poll
    ``cancelled`` or ``await wait()``.
    """

    __slots__ = ("_callbacks", "_event", "reason")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._callbacks: dict[object, Callable[[], None]] = {}
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return bool(self.reason)

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask for cancellation (idempotent)."""
        if self.reason:
            return
        self.reason = reason or "cancelled"
        if self._event is not None:
            self._event.set()
        callbacks = list(self._callbacks.values())
        self._callbacks.clear()
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on cancellation (at once if already cancelled).

        Returns a function that unregisters the callback (idempotent); call it
        when the callback is no longer needed, so a token reused across many
        turns does not keep every finished turn alive.
        """
        if self.reason:
            callback()
            return _nothing
        handle = object()
        self._callbacks[handle] = callback

        def remove() -> None:
            self._callbacks.pop(handle, None)

        return remove

    async def wait(self) -> None:
        """Return once cancelled."""
        if self.reason:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()
