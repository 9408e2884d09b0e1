"""Our transaction layer against Kamailio and SIPp (tests/testbed), over UDP and TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip.message import Request, make_request
from sip.timers import Timers
from sip.transaction import ServerTransaction, TransactionLayer
from sip.transport import Target, TransportLayer
from tests.testbed_fixture import Testbed, sipp_command

pytestmark = pytest.mark.integration

TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0)


async def run(cmd: list[str], timeout: float = 25) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def start(cmd: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 25) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


class Stack:
    def __init__(self, transport: TransportLayer, layer: TransactionLayer) -> None:
        self.transport = transport
        self.layer = layer
        self.requests: asyncio.Queue[ServerTransaction] = asyncio.Queue()


@pytest.fixture
async def stack_factory() -> AsyncIterator[object]:
    made: list[Stack] = []

    async def factory(*, port: int = 0, transports: tuple[str, ...] = ("udp", "tcp")) -> Stack:
        transport = TransportLayer()
        queue: asyncio.Queue[ServerTransaction] = asyncio.Queue()

        def handler(tx: ServerTransaction) -> None:
            queue.put_nowait(tx)
            tx.respond(200)

        layer = TransactionLayer(transport, timers=TIMERS, on_request=handler)
        for name in transports:
            await transport.listen(name, port)
        stack = Stack(transport, layer)
        stack.requests = queue
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        await stack.layer.close()
        await stack.transport.close()


def cpim_message(tb: Testbed) -> Request:
    return make_request(
        "MESSAGE",
        "sip:bob@ims.test",
        [
            ("From", "<sip:+15555550011@ims.test>;tag=ours1"),
            ("To", "<sip:bob@ims.test>"),
            ("Call-ID", f"h5-{tb.base}-{id(tb)}"),
            ("CSeq", "1 MESSAGE"),
            ("P-Asserted-Identity", "<sip:+15555550011@ims.test>"),
        ],
        b"From: <sip:+15555550011@ims.test>\r\nTo: <sip:bob@ims.test>\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: h5m1\r\n\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n\r\nhello from our stack\r\n",
        content_type="message/cpim",
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_message_client_through_kamailio_to_sipp(
    kamailio: Testbed, stack_factory, transport: str
) -> None:
    uas = await start(
        sipp_command(kamailio, "message_uas.xml", "-m", "1", local_port=kamailio.peer_port)
    )
    try:
        stack = await stack_factory()
        await asyncio.sleep(0.5)  # sipp binds its socket
        request = cpim_message(kamailio)
        request = request.replace_header("Call-ID", f"h5-client-{transport}")
        target = Target(transport, "127.0.0.1", kamailio.sip_port)
        response = await asyncio.wait_for(stack.layer.request(request, target), 20)
        assert response.status == 200, kamailio.log_tail()
        assert response.to_tag and response.call_id == f"h5-client-{transport}"
        code, out = await finish(uas)
        assert code == 0, out
    finally:
        if uas.returncode is None:
            uas.kill()
            await uas.communicate()


async def _sipp_to_our_server(tb: Testbed, stack_factory, transport: str, n: int) -> None:
    stack = await stack_factory(port=tb.as_port, transports=(transport,))
    cmd = sipp_command(
        tb,
        "message_cpim_uac.xml",
        f"127.0.0.1:{tb.sip_port}",
        "-s",
        "+15555550011",
        "-key",
        "from",
        "+15555550099",
        "-m",
        str(n),
        "-r",
        "20",
        local_port=tb.uac_port(3 if transport == "udp" else 4),
    )
    code, out = await run(cmd)
    assert code == 0, out + tb.log_tail()
    received = [stack.requests.get_nowait() for _ in range(stack.requests.qsize())]
    assert len(received) == n  # retransmissions (if any) were absorbed
    tx = received[0]
    assert tx.method == "MESSAGE" and tx.source.transport == transport
    assert tx.request.content_type == "message/cpim" and b"imdn.Message-ID" in tx.request.body
    assert len(tx.request.vias) == 2  # Kamailio's and sipp's


async def test_sipp_message_through_kamailio_to_our_server_udp(
    kamailio: Testbed, stack_factory
) -> None:
    await _sipp_to_our_server(kamailio, stack_factory, "udp", 5)


async def test_sipp_message_through_kamailio_to_our_server_tcp(
    kamailio_tcp: Testbed, stack_factory
) -> None:
    await _sipp_to_our_server(kamailio_tcp, stack_factory, "tcp", 5)
