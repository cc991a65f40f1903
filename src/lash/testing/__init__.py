"""Test doubles that speak the real interfaces: a scripted model provider."""

from .scripted import Reply, ScriptedProvider, ToolCall

__all__ = ["Reply", "ScriptedProvider", "ToolCall"]
