"""``chat-bridge serve`` refuses to start with a clear message, not a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.serve_process import BRIDGE, serve_env
from tests.testbed_fixture import free_port_block

pytestmark = pytest.mark.integration


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BRIDGE), "serve"], env=env, capture_output=True, text=True, timeout=60
    )


def test_public_listener_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    base = free_port_block(4)
    env = serve_env(tmp_path / "b.db", base, base + 1, CHAT_BRIDGE_HTTP_HOST="0.0.0.0")
    done = run_serve(env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chat-bridge: configuration error: no credentials configured")
    assert "Traceback" not in done.stderr


def test_rest_port_in_use_is_reported(tmp_path: Path) -> None:
    base = free_port_block(4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen()
        done = run_serve(serve_env(tmp_path / "b.db", base, base + 1))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("chat-bridge: cannot start:")
    assert "Traceback" not in done.stderr
