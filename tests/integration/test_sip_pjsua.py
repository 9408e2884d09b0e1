"""pjsua2 (an independent SIP stack) exchanges pager-mode MESSAGEs with message/cpim bodies
with our stack through Kamailio, in both directions (RFC 3428, RFC 3862, RFC 5438).

pjsua2 runs in its own process (tests/peers/pjsua_peer.py) on Kamailio's default-peer
port as ``sip:bob@ims.test``; our stack is the AS for +1555555xxxx. Kamailio reaches pjsua
over UDP; our own leg is UDP or TCP.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sip import cpim
from sip.message import Request
from sip.stack import SipStack
from sip.usage import IncomingRequest
from tests.testbed_fixture import Testbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ME = "sip:+15555550011@ims.test"
BOB = "sip:bob@ims.test"


class PjsuaPeer:
    """The pjsua2 peer process and its JSON line protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def event(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError("pjsua peer exited")
                if line.startswith(b"{"):
                    return dict(json.loads(line))

    async def send(self, to: str, content_type: str, body: str) -> None:
        assert self.proc.stdin is not None
        cmd = {"cmd": "send", "to": to, "content_type": content_type, "body": body}
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def close(self) -> int:
        assert self.proc.stdin is not None
        if self.proc.returncode is None:
            self.proc.stdin.write(b'{"cmd": "quit"}\n')
            await self.proc.stdin.drain()
            try:
                async with asyncio.timeout(10):
                    await self.proc.communicate()
            except TimeoutError:
                self.proc.kill()
                await self.proc.communicate()
        return self.proc.returncode if self.proc.returncode is not None else -1


@pytest.fixture(params=["udp", "tcp"])
def bed(request: pytest.FixtureRequest) -> tuple[Testbed, str]:
    name = "kamailio" if request.param == "udp" else "kamailio_tcp"
    return request.getfixturevalue(name), request.param


@pytest.fixture
async def pjsua(bed: tuple[Testbed, str]) -> AsyncIterator[PjsuaPeer]:
    tb, _ = bed
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.peers.pjsua_peer",
        "--port",
        str(tb.peer_port),
        "--user",
        "bob",
        "--proxy",
        f"sip:127.0.0.1:{tb.sip_port}",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = PjsuaPeer(proc)
    try:
        ready = await peer.event(20)
        assert ready["event"] == "ready", ready
        yield peer
    finally:
        code = await peer.close()
    assert code == 0


@pytest.fixture
async def stack(bed: tuple[Testbed, str]) -> AsyncIterator[SipStack]:
    tb, transport = bed
    proxy = f"sip:127.0.0.1:{tb.sip_port}" + (";transport=tcp" if transport == "tcp" else "")
    s = SipStack(port=tb.as_port, transports=["udp", "tcp"], outbound_proxy=proxy)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def cpim_body(sender: str, recipient: str, text: str, message_id: str) -> bytes:
    return cpim.serialize(
        cpim.build_chat_message(
            sender=cpim.NameAddr(sender),
            recipient=cpim.NameAddr(recipient),
            message_id=message_id,
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            body=text.encode(),
        )
    )


async def test_message_cpim_to_pjsua(stack: SipStack, pjsua: PjsuaPeer) -> None:
    body = cpim_body(ME, BOB, "hello pjsua", "to-pj-1")
    resp = await stack.send_request(
        "MESSAGE", BOB, sender=ME, body=body, content_type=cpim.CONTENT_TYPE
    )
    assert resp.status == 200
    event = await pjsua.event()
    assert event["event"] == "message", event
    assert event["content_type"] == cpim.CONTENT_TYPE
    assert "+15555550011" in event["from"]
    received = cpim.parse(event["body"].encode())
    assert received.message_id == "to-pj-1"
    assert received.body == b"hello pjsua"


async def test_message_cpim_from_pjsua(stack: SipStack, pjsua: PjsuaPeer) -> None:
    got: list[Request] = []
    arrived = asyncio.Event()

    def on_message(req: IncomingRequest) -> None:
        got.append(req.request)
        req.respond(200)
        arrived.set()

    stack.on_request("MESSAGE", on_message)
    body = cpim_body(BOB, ME, "hello bridge", "from-pj-1")
    await pjsua.send(ME, cpim.CONTENT_TYPE, body.decode())
    status = await pjsua.event()
    assert status == {"event": "status", "code": 200, "reason": "OK", "to": ME}
    await asyncio.wait_for(arrived.wait(), 5)
    msg = got[0]
    assert msg.content_type == cpim.CONTENT_TYPE
    assert msg.from_.uri.user == "bob"  # type: ignore[union-attr]
    parsed = cpim.parse(msg.body)
    assert parsed.message_id == "from-pj-1" and parsed.body == b"hello bridge"
