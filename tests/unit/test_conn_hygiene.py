"""Connection hygiene on SIP and MSRP (issue 13, defect 6; sip.connlimits): deadlines for
a started message or frame, idle timeouts, caps, and the exemption of the IMS proxy's and
our own connections. Real sockets on 127.0.0.1, small timeouts."""

from __future__ import annotations

import asyncio

from sip.connlimits import ConnectionLimits
from sip.msrp import MSRPStack
from sip.msrp.uri import MSRPURI, SessionId
from sip.transport import Target, TransportLayer
from sip.uri import parse_uri


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the peer closed the connection within ``seconds`` (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"\r\n\r\n")
    return await asyncio.wait_for(reader.readexactly(2), 2.0) == b"\r\n"


async def sip_layer(**limits: float) -> tuple[TransportLayer, int]:
    layer = TransportLayer(limits=ConnectionLimits(**limits))  # type: ignore[arg-type]
    _, port = await layer.listen("tcp")
    return layer, port


async def test_sip_dripping_headers_closed_at_deadline() -> None:
    layer, port = await sip_layer(message_deadline=0.4)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(20):  # one header line every 100 ms, never the end of the header
            writer.write(f"X-Drip-{i}: y\r\n".encode())
            if await closed_within(reader, 0.1):
                break
        assert 0.3 < loop.time() - start < 1.0
        assert layer.deadline_closed == 1
        assert not layer._connections
        writer.close()
    finally:
        await layer.close()


async def test_sip_complete_messages_rearm_the_deadline() -> None:
    layer, port = await sip_layer(message_deadline=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(6):  # 0.6 s of keep-alives: each is complete, none is late
            assert await pong(reader, writer)
            await asyncio.sleep(0.1)
        assert layer.deadline_closed == 0
        writer.close()
    finally:
        await layer.close()


async def test_sip_idle_inbound_closed() -> None:
    layer, port = await sip_layer(idle_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_within(reader, 1.0)
        assert not layer._connections
        writer.close()
    finally:
        await layer.close()


async def test_sip_cap_per_address_refuses_the_extra_one_only() -> None:
    layer, port = await sip_layer(max_per_address=2)
    try:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        assert await closed_within(conns[2][0], 1.0)
        assert layer.refused == 1
        for reader, writer in conns[:2]:
            assert await pong(reader, writer)
        conns[0][1].close()
        await asyncio.sleep(0.1)
        again = await asyncio.open_connection("127.0.0.1", port)  # a slot is free again
        assert await pong(*again)
        for _, writer in [*conns, again]:
            writer.close()
    finally:
        await layer.close()


async def test_sip_total_cap() -> None:
    layer, port = await sip_layer(max_connections=1)
    try:
        first = await asyncio.open_connection("127.0.0.1", port)
        second = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_within(second[0], 1.0)
        assert await pong(*first)
        first[1].close()
        second[1].close()
    finally:
        await layer.close()


async def test_sip_outbound_proxy_connections_exempt() -> None:
    """Neither our connection to the IMS proxy nor the proxy's to us is closed for idleness,
    slowness or the caps, although other peers' are."""
    accepted: list[asyncio.StreamWriter] = []

    async def on_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()

    proxy = await asyncio.start_server(on_proxy, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    layer = TransportLayer(
        outbound_proxy=f"sip:127.0.0.1:{proxy_port};transport=tcp",
        limits=ConnectionLimits(message_deadline=0.2, idle_timeout=0.2, max_per_address=1),
    )
    _, port = await layer.listen("tcp")
    try:
        ours = await layer._connection(Target("tcp", "127.0.0.1", proxy_port))
        # the proxy's host connects to us: exempt by address, even beyond the cap
        inbound = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        inbound[0][1].write(b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: ")  # never finished
        await asyncio.sleep(0.7)
        assert ours.transport is not None and not ours.transport.is_closing()
        for reader, writer in inbound[1:]:
            assert await pong(reader, writer)
        assert layer.refused == 0 and layer.deadline_closed == 0
        for _, writer in inbound:
            writer.close()
    finally:
        await layer.close()
        for writer in accepted:
            writer.close()
        proxy.close()


async def test_sip_own_loopback_exempt_from_cap() -> None:
    """Embedded default: the outbound proxy is our own listener; another peer on the same
    address filling the cap does not keep us from reaching ourselves."""
    layer = TransportLayer(limits=ConnectionLimits(idle_timeout=0.3, max_per_address=1))
    _, port = await layer.listen("tcp")
    layer.outbound_proxy = parse_uri(f"sip:127.0.0.1:{port};transport=tcp")  # type: ignore[assignment]
    try:
        stranger = await asyncio.open_connection("127.0.0.1", port)
        ours = await layer._connection(Target("tcp", "127.0.0.1", port))
        await asyncio.sleep(0.6)  # the stranger is idle-closed; ours both ways stay
        assert await closed_within(stranger[0], 0.1)
        assert ours.transport is not None and not ours.transport.is_closing()
        assert len(layer._connections) == 2  # our outgoing one and its accepted end
        assert layer.refused == 0
        stranger[1].close()
    finally:
        await layer.close()


async def msrp_stack(**limits: float) -> MSRPStack:
    stack = MSRPStack(limits=ConnectionLimits(**limits))  # type: ignore[arg-type]
    await stack.start()
    return stack


async def test_msrp_connection_stopping_mid_frame_closed_and_released() -> None:
    stack = await msrp_stack(message_deadline=0.4)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        writer.write(
            b"MSRP tx12345678 SEND\r\nTo-Path: msrp://127.0.0.1:1/x;tcp\r\n"
            b"From-Path: msrp://127.0.0.1:2/y;tcp\r\nMessage-ID: m\r\nByte-Range: 1-*/*\r\n"
            b"Content-Type: text/plain\r\n\r\n" + b"x" * 500_000
        )
        await asyncio.sleep(0.1)
        (link,) = stack._links
        assert link.engine._parser.buffered > 400_000
        assert await closed_within(reader, 1.5)
        assert stack.deadline_closed == 1
        assert not stack._links and not stack._engines  # the buffer goes with the link
        writer.close()
    finally:
        await stack.close()


async def test_msrp_idle_inbound_closed_bound_one_kept() -> None:
    stack = await msrp_stack(idle_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        # a second connection that binds a session: not idle while the session lives
        session = await stack.create_session()
        peer = MSRPStack(keepalive_interval=None)
        await peer.start()
        try:
            remote = await peer.create_session()
            await asyncio.gather(
                session.start(remote.local_path, active=False, timeout=5),
                remote.start(session.local_path, active=True, timeout=5),
            )
            await asyncio.sleep(0.8)
            assert await closed_within(reader, 0.1)
            assert stack.idle_closed == 1
            assert any(link.engine.sessions for link in stack._links)
        finally:
            await peer.close()
        writer.close()
    finally:
        await stack.close()


async def test_msrp_cap_per_address_and_own_loopback_exempt() -> None:
    stack = await msrp_stack(max_per_address=1)
    try:
        first = await asyncio.open_connection("127.0.0.1", stack.port)
        second = await asyncio.open_connection("127.0.0.1", stack.port)
        assert await closed_within(second[0], 1.0)
        assert stack.refused == 1
        # our own connection to our listener (embedded default) is admitted beyond the cap
        uri = MSRPURI("127.0.0.1", stack.port, SessionId("own"), "tcp")
        await stack._link_to(uri)
        await asyncio.sleep(0.1)
        assert stack.refused == 1
        assert len(stack._links) == 3  # the first stranger, our link and its accepted end
        assert not await closed_within(first[0], 0.2)
        first[1].close()
        second[1].close()
    finally:
        await stack.close()
