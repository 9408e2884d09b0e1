"""``chat-bridge serve`` as a subprocess: its SIP listener answers OPTIONS 200 and unknown
methods 501 (RFC 3261 §11, §8.2.1), over UDP and TCP, probed by SIPp."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sipp import runner
from tests.testbed_fixture import free_port_block

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[int]:
    base = free_port_block(10)
    sip_port, http_port = base, base + 1
    env = {
        **os.environ,
        "CHAT_BRIDGE_SIP_HOST": "127.0.0.1",
        "CHAT_BRIDGE_SIP_PORT": str(sip_port),
        "CHAT_BRIDGE_HTTP_PORT": str(http_port),
        "CHAT_BRIDGE_SERVER_ROOT": f"http://127.0.0.1:{http_port}",
        "CHAT_BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
        "CHAT_BRIDGE_MSRP_PORT": "0",
    }
    env.pop("CHAT_BRIDGE_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge.cli",
        "serve",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    pytest.fail("chat-bridge serve exited during start-up:\n" + "".join(log))
                log.append(line)
                if "REST API on" in line:
                    break
        assert any(f"SIP listening on udp 127.0.0.1:{sip_port}" in x for x in log), log
        assert any(f"SIP listening on tcp 127.0.0.1:{sip_port}" in x for x in log), log
        yield sip_port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.stderr.read()
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
    assert code == 0, "".join(log)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_serve_answers_options_and_501(bridge: int, tmp_path: Path, transport: str) -> None:
    local = free_port_block(4, start=41000)
    for scenario in ("uac-options.xml", "uac-unknown-method.xml"):
        cmd = runner.command(
            scenario,
            f"127.0.0.1:{bridge}",
            "-s",
            "+15555550011",
            local_port=local,
            transport=transport,
        )
        result = await (await runner.start(cmd, tmp_path / f"{scenario}-{transport}")).wait()
        assert result.ok, result.explain()
