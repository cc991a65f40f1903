"""A real restate-server on loopback, without pytest (the tests and ``benchmarks/durable.py``).

``install_restate_server()`` runs ``scripts/restate-server``, which installs the
pinned ``@restatedev/restate-server`` with npm into the user's cache when it is
missing and prints the binary's path; it raises ``RestateUnavailable`` when npm is
not installed. ``RestateServer`` runs one server on free loopback ports with a
temporary base directory and a fast retry policy, so a killed endpoint is retried
within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "restate-server"
# The cache the installer uses (about 220 MB, shared by every checkout of the user).
CACHE = Path(
    os.environ.get("LASH_RESTATE_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lash" / "restate"
)
SERVICE = "LashSession"
_NO_NPM = 3
"""``scripts/restate-server``'s exit code when npm is not installed."""


class RestateUnavailable(RuntimeError):
    """restate-server cannot be installed on this machine (npm is missing)."""


def install_restate_server() -> Path:
    """The pinned restate-server binary, installed by ``scripts/restate-server`` if needed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test workers must not install at once
        done = subprocess.run(
            [str(INSTALLER)], capture_output=True, text=True, timeout=600, check=False
        )
    if done.returncode == _NO_NPM:
        raise RestateUnavailable("npm is not installed, so restate-server cannot be installed")
    if done.returncode != 0:
        raise RuntimeError(
            f"{INSTALLER.name} failed with exit code {done.returncode}: {done.stderr.strip()}"
        )
    binary = Path(done.stdout.strip())
    if not binary.is_file():
        raise RuntimeError(f"{INSTALLER.name} printed {binary}, which is not a file")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


_CONFIG = """\
cluster-name = "lash-test"
node-name = "lash-test"
base-dir = "{base}"
listen-mode = "tcp"
bind-address = "127.0.0.1:{fabric}"
advertised-address = "http://127.0.0.1:{fabric}/"
default-num-partitions = 1
disable-telemetry = true
log-format = "compact"
log-disable-ansi-codes = true
rocksdb-total-memory-size = "256 MiB"

[default-retry-policy]
initial-interval = "50ms"
exponentiation-factor = 1.5
max-interval = "250ms"
max-attempts = 1000
on-max-attempts = "pause"

[admin]
bind-address = "127.0.0.1:{admin}"
disable-web-ui = true

[ingress]
bind-address = "127.0.0.1:{ingress}"
"""


class RestateServer:
    """One restate-server on loopback ports, in a temporary base directory."""

    def __init__(self, binary: Path) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="lash-restate-"))
        self.ingress_port = free_port()
        self.admin_port = free_port()
        fabric = free_port()
        config = self._dir / "restate.toml"
        config.write_text(
            _CONFIG.format(
                base=self._dir / "data",
                fabric=fabric,
                admin=self.admin_port,
                ingress=self.ingress_port,
            )
        )
        self.log_path = self._dir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")}
        env["DO_NOT_TRACK"] = "1"
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(binary), "--config-file", str(config), "--no-logo"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._dir,
            )
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.client = httpx.Client(timeout=60)
        try:
            self._wait_healthy(60)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"restate-server exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    self.client.get(f"{self.admin}/health", timeout=1).status_code == 200
                    and self.client.get(f"{self.ingress}/restate/health", timeout=1).status_code
                    == 200
                ):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"restate-server not healthy after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def register(self, uri: str) -> dict[str, Any]:
        """Register the deployment at ``uri`` (POST /deployments)."""
        reply = self.client.post(f"{self.admin}/deployments", json={"uri": uri})
        if reply.status_code >= 300:
            raise RuntimeError(f"registering {uri}: {reply.status_code} {reply.text}")
        return dict(reply.json())

    def send(self, session: str, request: dict[str, Any]) -> str:
        """Start a turn without waiting; the invocation id."""
        reply = self.client.post(f"{self.ingress}/{SERVICE}/{session}/turn/send", json=request)
        if reply.status_code >= 300:
            raise RuntimeError(f"send: {reply.status_code} {reply.text}")
        return str(reply.json()["invocationId"])

    def attach(self, invocation_id: str, timeout: float = 60) -> httpx.Response:
        """Wait for the invocation to finish; its HTTP response."""
        return self.client.get(
            f"{self.ingress}/restate/invocation/{invocation_id}/attach", timeout=timeout
        )

    def call(self, session: str, request: dict[str, Any], timeout: float = 60) -> httpx.Response:
        """Run a turn and wait for its response."""
        return self.client.post(
            f"{self.ingress}/{SERVICE}/{session}/turn", json=request, timeout=timeout
        )

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows from the admin SQL introspection API."""
        reply = self.client.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        if reply.status_code >= 300:
            raise RuntimeError(f"query: {reply.status_code} {reply.text}")
        return list(reply.json()["rows"])

    def journal(self, invocation_id: str) -> list[dict[str, Any]]:
        """The invocation's journal entries, in order."""
        _check_id(invocation_id)
        return self.query(f"SELECT * FROM sys_journal WHERE id = '{invocation_id}' ORDER BY index")

    def wait_failure(self, invocation_id: str, needle: str, timeout: float = 30) -> str:
        """Wait until the invocation's last failure mentions ``needle``; that failure."""
        _check_id(invocation_id)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            rows = self.query(
                f"SELECT last_failure FROM sys_invocation WHERE id = '{invocation_id}'"
            )
            last = str(rows[0]["last_failure"] or "") if rows else ""
            if needle in last:
                return last
            time.sleep(0.1)
        raise TimeoutError(f"{invocation_id}: no failure with {needle!r}; last: {last!r}")

    def kill(self, invocation_id: str) -> None:
        """Kill a retrying invocation (PATCH /invocations/{id}/kill)."""
        _check_id(invocation_id)
        reply = self.client.patch(f"{self.admin}/invocations/{invocation_id}/kill")
        if reply.status_code >= 300:
            raise RuntimeError(f"kill: {reply.status_code} {reply.text}")

    def stop(self) -> None:
        self.client.close()
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        shutil.rmtree(self._dir, ignore_errors=True)


def _check_id(invocation_id: str) -> None:
    """Invocation ids go into SQL text: accept only their own alphabet."""
    if not invocation_id.replace("_", "").isalnum():
        raise ValueError(f"not an invocation id: {invocation_id!r}")
