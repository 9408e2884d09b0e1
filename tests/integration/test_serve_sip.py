"""``chat-bridge serve`` as a subprocess: its SIP listener answers OPTIONS 200 and unknown
methods 501 (RFC 3261 §11, §8.2.1), over UDP and TCP, probed by SIPp."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess, serve_env
from tests.sipp import runner
from tests.testbed_fixture import free_port_block

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[int]:
    base = free_port_block(10)
    sip_port, http_port = base, base + 1
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=http_port,
        sip_port=sip_port,
        CHAT_BRIDGE_SIP_HOST="127.0.0.1",
        CHAT_BRIDGE_MSRP_PORT="0",
    )
    serve = ServeProcess(env, tmp_path / "bridge.log", http_port)
    try:
        await serve.start(timeout=30)
        log = serve.log.read_text()
        assert f"SIP listening on udp 127.0.0.1:{sip_port}" in log, log
        assert f"SIP listening on tcp 127.0.0.1:{sip_port}" in log, log
        yield sip_port
    finally:
        code = serve.stop(timeout=15)
    assert code == 0, serve.log.read_text()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_serve_answers_options_and_501(bridge: int, tmp_path: Path, transport: str) -> None:
    local = free_port_block(4, start=31000)
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
