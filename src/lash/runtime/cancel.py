"""Cancellation tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CancelToken:
    """A one-way switch that asks a turn (and its tools) to stop.

    ``cancel()`` may be called from any coroutine on the loop; tools can poll
    ``cancelled`` or ``await wait()``.
    """

    __slots__ = ("_callbacks", "_event", "reason")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._callbacks: list[Callable[[], None]] = []
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
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on cancellation (at once if already cancelled)."""
        if self.reason:
            callback()
        else:
            self._callbacks.append(callback)

    async def wait(self) -> None:
        """Return once cancelled."""
        if self.reason:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()
