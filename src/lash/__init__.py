"""lash: a sans-IO turn machine and runtime kernel for durable LLM agents.

    from lash import LashCore, tool
    from lash.testing import ScriptedProvider, Reply, ToolCall

Names are loaded on first use, so ``import lash.kernel`` (the pure kernel)
never pulls in asyncio or the runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "UnsupportedQueuedWork": "lash.runtime.queue",
    "AgentFrame": "lash.core",
    "AgentFrameSwitch": "lash.kernel.outcome",
    "Availability": "lash.kernel.tools.definition",
    "CancelToken": "lash.runtime.cancel",
    "ConfigError": "lash.core",
    "Delivery": "lash.runtime.queue",
    "DurabilityTier": "lash.runtime.effects",
    "EffectHost": "lash.runtime.effects",
    "Finished": "lash.kernel.outcome",
    "Image": "lash.core",
    "InlineEffectHost": "lash.runtime.effects",
    "LashCore": "lash.core",
    "LashError": "lash.core",
    "Scheduling": "lash.kernel.tools.definition",
    "Session": "lash.core",
    "SessionBusyError": "lash.core",
    "SessionMeta": "lash.store.base",
    "SessionRelation": "lash.store.base",
    "StateError": "lash.runtime.state",
    "StateKey": "lash.runtime.state",
    "StopReason": "lash.kernel.outcome",
    "Stopped": "lash.kernel.outcome",
    "Tool": "lash.runtime.tools",
    "ToolContext": "lash.runtime.tools",
    "ToolError": "lash.runtime.tools",
    "Turn": "lash.core",
    "TurnActivity": "lash.runtime.activity",
    "TurnInput": "lash.core",
    "TurnOutcome": "lash.kernel.outcome",
    "TurnResult": "lash.core",
    "TurnStream": "lash.core",
    "tool": "lash.runtime.tools",
}

__all__ = [
    "UnsupportedQueuedWork",
    "AgentFrame",
    "AgentFrameSwitch",
    "Availability",
    "CancelToken",
    "ConfigError",
    "Delivery",
    "DurabilityTier",
    "EffectHost",
    "Finished",
    "Image",
    "InlineEffectHost",
    "LashCore",
    "LashError",
    "Scheduling",
    "Session",
    "SessionBusyError",
    "SessionMeta",
    "SessionRelation",
    "StateError",
    "StateKey",
    "StopReason",
    "Stopped",
    "Tool",
    "ToolContext",
    "ToolError",
    "Turn",
    "TurnActivity",
    "TurnInput",
    "TurnOutcome",
    "TurnResult",
    "TurnStream",
    "tool",
]

if TYPE_CHECKING:
    from .core import (
        AgentFrame,
        ConfigError,
        Image,
        LashCore,
        LashError,
        Session,
        SessionBusyError,
        Turn,
        TurnInput,
        TurnResult,
        TurnStream,
    )
    from .kernel.outcome import AgentFrameSwitch, Finished, Stopped, StopReason, TurnOutcome
    from .kernel.tools.definition import Availability, Scheduling
    from .runtime.activity import TurnActivity
    from .runtime.cancel import CancelToken
    from .runtime.effects import DurabilityTier, EffectHost, InlineEffectHost
    from .runtime.queue import Delivery
    from .runtime.state import StateError, StateKey
    from .runtime.tools import Tool, ToolContext, ToolError, tool
    from .store.base import SessionMeta, SessionRelation


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lash' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
