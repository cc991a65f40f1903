"""lash: a sans-IO turn machine and runtime kernel for durable LLM agents.

from lash import LashCore, tool
from lash.testing import ScriptedProvider, Reply, ToolCall
"""

from .core import (
    ConfigError,
    LashCore,
    LashError,
    Session,
    SessionBusyError,
    Turn,
    TurnResult,
    TurnStream,
)
from .kernel.outcome import AgentFrameSwitch, Finished, Stopped, StopReason, TurnOutcome
from .kernel.tools.definition import Availability, Scheduling
from .runtime.activity import TurnActivity
from .runtime.cancel import CancelToken
from .runtime.effects import DurabilityTier, EffectHost, InlineEffectHost
from .runtime.tools import Tool, ToolContext, ToolError, tool

TurnInput = str
"""What a turn takes: the user's text (images arrive with the attachment store)."""

__version__ = "0.1.0"

__all__ = [
    "AgentFrameSwitch",
    "Availability",
    "CancelToken",
    "ConfigError",
    "DurabilityTier",
    "EffectHost",
    "Finished",
    "InlineEffectHost",
    "LashCore",
    "LashError",
    "Scheduling",
    "Session",
    "SessionBusyError",
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
