"""lash: a sans-IO turn machine and runtime kernel for durable LLM agents."""

__version__ = "0.1.0"
