"""Adapters that run the turn-overhead workload on lash and on peer frameworks.

Every adapter module exposes ``async def run_turns(n: int) -> list[float]``: it
opens ONE fresh session, runs ``n`` turns in it and returns each turn's wall
time in microseconds. In a turn the (fake) model asks for two tool calls,
``add(1, 2)`` and ``add(3, 4)``; the tools run; the model then answers with the
tool results joined as text, ``"3 and 7"``. The fake models do no sleeping and
build their answer from the tool results they were sent, so a correct answer
proves the tools really ran. Each turn is checked (outside the timed region):
both tool calls executed and the final text came back.

An adapter raises ``PeerUnavailable`` when its framework cannot be imported.
"""

from __future__ import annotations

PROMPT = "What are 1 + 2 and 3 + 4?"
"""The user message of every turn."""

CALLS = ((1, 2), (3, 4))
"""The arguments of the two ``add`` calls the fake model asks for in every turn."""

ANSWER = "3 and 7"
"""The final text each turn must produce."""


class PeerUnavailable(Exception):
    """The framework an adapter drives is not installed (or not importable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ToolCounter:
    """Counts real executions of the benchmark's ``add`` tool."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def add(self, a: int, b: int) -> int:
        self.calls += 1
        return a + b


def check(condition: object, message: str) -> None:
    """Fail the benchmark when a turn did not do the whole workload (kept under ``-O``)."""
    if not condition:
        raise AssertionError(message)


def check_turn(turn: int, counter: ToolCounter, text: object) -> None:
    """The per-turn checks shared by every adapter."""
    check(
        counter.calls == 2 * (turn + 1),
        f"turn {turn}: expected {2 * (turn + 1)} tool executions so far, got {counter.calls}",
    )
    check(text == ANSWER, f"turn {turn}: expected final text {ANSWER!r}, got {text!r}")
