"""The asyncio runtime around the kernel."""
