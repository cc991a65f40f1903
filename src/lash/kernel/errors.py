"""Typed errors raised by the kernel."""

from __future__ import annotations


class KernelError(Exception):
    """Base class of every error the kernel raises."""


class ProtocolError(KernelError):
    """A response did not match the effect the machine is waiting for.

    The machine is left exactly as it was before the call.
    """


class DriverContractError(KernelError):
    """A protocol driver returned actions that break the driver contract."""


class CodecError(KernelError):
    """Bytes or JSON could not be decoded into a kernel type.

    ``path`` names where in the document the problem was found, when known.
    """

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class ToolDefinitionError(KernelError):
    """A tool definition or tool surface is malformed."""


class ToolValueError(KernelError):
    """A tool value could not be encoded or decoded."""
