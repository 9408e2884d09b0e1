"""``chat-bridge serve`` as a real subprocess, for the integration tests.

``serve_env`` builds a hermetic environment: every ``CHAT_BRIDGE_*`` variable of the
calling shell is dropped, so only the settings a test names reach the bridge, with a
SQLite store in the test's directory and the ports it picked from ``free_port_block``.
``ServeProcess`` starts the entry point with its output appended to a log file (one file
across restarts, so a failure shows every run), waits for ``/health``, and stops it with
SIGTERM or SIGKILL; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl as ssl_module
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

BRIDGE = Path(sys.executable).with_name("chat-bridge")


def serve_env(db_file: Path, http_port: int, sip_port: int, **settings: str) -> dict[str, str]:
    """Return os.environ without CHAT_BRIDGE_* plus the store, the ports and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BRIDGE_")}
    env.update(
        CHAT_BRIDGE_DATABASE_URL=f"sqlite+aiosqlite:///{db_file}",
        CHAT_BRIDGE_HTTP_PORT=str(http_port),
        CHAT_BRIDGE_SERVER_ROOT=f"http://127.0.0.1:{http_port}",
        CHAT_BRIDGE_SIP_PORT=str(sip_port),
        # the tests' notification receivers run on 127.0.0.1 (docs/notify-policy.md)
        CHAT_BRIDGE_NOTIFY_ALLOW_LOOPBACK="true",
    )
    env.update(settings)
    return env


def owns_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the TCP socket listening on 127.0.0.1:``port``.

    A /health 200 alone can come from another program that took the port between
    ``free_port_block`` and our bind (another test session on the machine): then our
    bridge is still starting, fails to bind, and exits with the reason in its log.
    Without /proc (not Linux) every listener counts as ours.
    """
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return True
    suffix = f":{port:04X}"  # local address:port in hex; 0A is LISTEN
    inodes = {
        f"socket:[{f[9]}]" for f in map(str.split, table) if f[1].endswith(suffix) and f[3] == "0A"
    }
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


@dataclass
class ServeProcess:
    """One ``chat-bridge serve`` subprocess, its environment and its log file."""

    env: dict[str, str]
    log: Path
    http_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ssl: ssl_module.SSLContext | None = field(default=None, kw_only=True)
    """Set when the bridge serves HTTPS (``http_tls_cert_file``): the client context."""

    @property
    def root(self) -> str:
        """The REST base URL, ``http://127.0.0.1:<http_port>`` (``https`` with ``ssl``)."""
        scheme = "https" if self.ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    async def start(self, timeout: float = 15.0) -> None:
        """Start the bridge and wait (``timeout`` s at most) until ``/health`` answers 200."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BRIDGE), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        connector = aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(round(timeout / 0.1)):
                if self.proc.poll() is not None:
                    pytest.fail(f"bridge exited {self.proc.returncode}:\n{self.log.read_text()}")
                try:
                    async with http.get(self.root + "/health") as resp:
                        if resp.status == 200 and owns_listener(self.proc.pid, self.http_port):
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"bridge did not answer /health in {timeout:g} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL the bridge if it runs, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the bridge (SIGKILL after ``timeout`` s); return its exit code, if it ran."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
        self.proc = None
        return code
