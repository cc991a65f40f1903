"""Real Restate for the tests: the server binary (or a skip) and endpoint children.

``restate_server_binary()`` is ``install_restate_server()`` that skips the calling
test, with the reason, when npm is not installed. ``Endpoint`` runs
``restate_endpoint_child.py`` (hypercorn serving the lash service) as a child
process on a fixed port, so a replacement can take over the same address. The
server itself is ``restate_server.RestateServer``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from restate_server import RestateUnavailable, install_restate_server, wait_listening

CHILD = Path(__file__).with_name("restate_endpoint_child.py")


def restate_server_binary() -> Path:
    """The pinned restate-server binary; skips the calling test when npm is missing."""
    try:
        return install_restate_server()
    except RestateUnavailable as exc:
        print(f"SKIP: {exc}", file=sys.stderr)
        pytest.skip(str(exc))


class Endpoint:
    """``restate_endpoint_child.py`` serving the lash service on ``127.0.0.1:port``."""

    def __init__(self, home: Path, port: int, *, kill_at: str | None = None, **env: str) -> None:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("LASH_TEST_")} | {
            f"LASH_TEST_{k.upper()}": v for k, v in env.items()
        }
        if kill_at is not None:
            child_env["LASH_TEST_KILL_AT"] = kill_at
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        self.log_path = home / f"endpoint-{port}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), str(home), str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
            )
        try:
            wait_listening(port, 30, self.proc)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_killed(self, timeout: float = 60) -> int:
        """Wait for the child to die at its kill point; its return code."""
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill the child (a lash endpoint keeps nothing that needs a graceful stop)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
