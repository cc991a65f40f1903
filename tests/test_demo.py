"""The main job: ``lash demo`` runs end to end and reports what it showed."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

from lash.cli.demo import run_demo
from lash.kernel.outcome import Finished


def test_demo_runs_two_committed_turns() -> None:
    out = io.StringIO()
    results = asyncio.run(run_demo(out))
    text = out.getvalue()
    assert all(isinstance(r.outcome, Finished) for r in results)
    assert len(results) == 3
    assert results[0].text == "12 x 7 + 5 = 89. In Oslo today: light snow, -3 °C."
    assert results[1].text == "89 + 2 = 91."
    assert [r.revision for r in results] == [1, 2, 3]
    assert results[2].text == "You first asked for 12 x 7 + 5 and the weather in Oslo."
    assert [t.name for t in results[0].tool_calls] == ["multiply", "weather", "add"]
    assert results[1].tool_calls[0].output.status == "failure"
    assert "ran concurrently (yes" in text
    assert "refused before any tool code ran (invalid_tool_args)" in text
    assert "committed atomically to SQLite: 12 messages at revision 2" in text
    assert "reopened the session from disk (12 messages, revision 2)" in text


def test_lash_demo_command_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lash", "demo"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "What this demonstrated:" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lash", "nope"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr


def test_next_turn_can_start_right_after_a_stream_ends() -> None:
    from lash import LashCore
    from lash.testing import Reply, ScriptedProvider

    async def main() -> list[str]:
        core = LashCore(provider=ScriptedProvider([Reply(text="a"), Reply(text="b")]), model="m")
        async with core.session("s") as session:
            async with session.turn("one").stream() as first:
                async for _ in first:
                    pass
            second = await session.run("two")  # no loop step in between
            return [first.result.text, second.text]

    assert asyncio.run(main()) == ["a", "b"]
