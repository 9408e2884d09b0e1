"""Configuration hygiene of a real ``chat-bridge serve`` process (docs/configuration.md).

The embedded default (SQLite) runs with the ``asyncpg`` driver made unimportable, as
on an install without the ``postgres`` extra, reads its credentials from a file, and
reports a misspelt variable at start; ``--strict`` refuses to start with it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.serve_process import serve_env
from tests.testbed_fixture import free_port_block

pytestmark = pytest.mark.integration

WITHOUT_ASYNCPG = (
    "import sys; sys.modules['asyncpg'] = None; "
    "from bridge.cli import main; sys.exit(main(sys.argv[1:]))"
)
"""``chat-bridge`` with ``import asyncpg`` failing (an install without the extra)."""


def launch(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", WITHOUT_ASYNCPG, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_serve_without_asyncpg_secrets_from_files_and_a_misspelt_variable(
    tmp_path: Path,
) -> None:
    http = free_port_block(size=2)
    secrets = tmp_path / "credentials.json"
    secrets.write_text(
        json.dumps([{"kind": "basic", "username": "app", "password": "pw-file", "users": ["*"]}])
        + "\n"
    )
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=http,
        sip_port=http + 1,
        CHAT_BRIDGE_CREDENTIALS_FILE=str(secrets),
        CHAT_BRIDGE_HTTP_PROT="1",
    )
    log = tmp_path / "bridge.log"

    strict = launch(env, log, "serve", "--strict")
    assert strict.wait(timeout=30) == 2
    assert "error: unknown environment variable CHAT_BRIDGE_HTTP_PROT" in log.read_text()

    proc = launch(env, log, "serve")
    try:
        auth = "Basic " + base64.b64encode(b"app:pw-file").decode()
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                assert proc.poll() is None, log.read_text()
                try:
                    async with session.get(
                        f"http://127.0.0.1:{http}/chat/v1/tel%3A%2B15551230001/subscriptions",
                        headers={"Authorization": auth},
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(log.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    text = log.read_text()
    assert (
        "warning: unknown environment variable CHAT_BRIDGE_HTTP_PROT"
        " (did you mean CHAT_BRIDGE_HTTP_PORT?)" in text
    )
    assert "pw-file" not in text
