"""The async-context-manager shape every closeable part shares."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncClosing:
    """``async with thing:`` closes ``thing`` with its ``aclose()`` on the way out."""

    __slots__ = ()

    async def aclose(self) -> None:
        """Release what this object holds."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
