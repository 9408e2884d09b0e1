"""sip.transport on loopback: UDP, TCP framing, keep-alives, rport, reuse, 400s (RFC 3261 §18)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from sip import transport as transport_module
from sip.errors import SIPError
from sip.message import Message, Request, Response, make_response, parse_message, serialize
from sip.transport import Source, Target, TransportLayer
from sip.uri import parse_uri


def raw_request(
    port: int, *, transport: str = "UDP", call_id: str = "c1", body: bytes = b"hi", extra: str = ""
) -> bytes:
    head = (
        f"MESSAGE sip:b@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 192.0.2.1:{port};branch=z9hG4bK{call_id};rport\r\n"
        f"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Inbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Message, Source]] = asyncio.Queue()

    def __call__(self, msg: Message, source: Source) -> None:
        self.queue.put_nowait((msg, source))

    async def get(self) -> tuple[Message, Source]:
        return await asyncio.wait_for(self.queue.get(), 5)


class UDPPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    async def get(self, timeout: float = 5) -> bytes:
        return await asyncio.wait_for(self.queue.get(), timeout)


@pytest.fixture
async def layer() -> AsyncIterator[tuple[TransportLayer, Inbox]]:
    inbox = Inbox()
    tl = TransportLayer(inbox, idle_timeout=5)
    await tl.listen("udp")
    await tl.listen("tcp")
    yield tl, inbox
    await tl.close()


@pytest.fixture
async def udp_peer() -> AsyncIterator[tuple[UDPPeer, int]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(UDPPeer, local_addr=("127.0.0.1", 0))
    yield peer, transport.get_extra_info("sockname")[1]
    transport.close()


async def test_udp_receive_stamps_rport_and_routes_response(layer, udp_peer) -> None:
    tl, inbox = layer
    peer, peer_port = udp_peer
    _, port = tl.sent_by("udp")
    assert peer.transport is not None
    peer.transport.sendto(raw_request(5999), ("127.0.0.1", port))
    msg, source = await inbox.get()
    assert isinstance(msg, Request) and source.transport == "udp"
    assert (source.host, source.port) == ("127.0.0.1", peer_port)
    via = msg.top_via
    assert via.received == "127.0.0.1" and via.rport == peer_port  # RFC 3581 §4
    await tl.send_response(make_response(msg, 200), source)
    reply = parse_message(await peer.get())
    assert isinstance(reply, Response) and reply.status == 200
    # keep-alive datagrams are ignored silently
    peer.transport.sendto(b"\r\n\r\n", ("127.0.0.1", port))
    peer.transport.sendto(raw_request(5999, call_id="c2"), ("127.0.0.1", port))
    msg2, _ = await inbox.get()
    assert msg2.call_id == "c2"


async def test_udp_without_rport_gets_received_only(layer, udp_peer) -> None:
    tl, inbox = layer
    peer, peer_port = udp_peer
    data = raw_request(peer_port).replace(b";rport", b"")
    assert peer.transport is not None
    peer.transport.sendto(data, ("127.0.0.1", tl.sent_by("udp")[1]))
    msg, source = await inbox.get()
    assert msg.top_via.received == "127.0.0.1" and not msg.top_via.wants_rport
    await tl.send_response(make_response(msg, 202), source)  # to received + sent-by port
    assert parse_message(await peer.get()).status == 202  # type: ignore[union-attr]


async def test_udp_malformed(layer, udp_peer) -> None:
    tl, inbox = layer
    peer, peer_port = udp_peer
    port = tl.sent_by("udp")[1]
    assert peer.transport is not None
    peer.transport.sendto(b"garbage\r\n\r\n", ("127.0.0.1", port))
    bad_cseq = raw_request(peer_port).replace(b"1 MESSAGE", b"1 INVITE")
    peer.transport.sendto(bad_cseq, ("127.0.0.1", port))
    reply = parse_message(await peer.get())
    assert isinstance(reply, Response) and reply.status == 400
    assert reply.get("Warning") == '399 127.0.0.1 "CSeq method does not match request method"'
    assert reply.to_tag
    # a broken ACK and a request without Call-ID get no answer
    peer.transport.sendto(bad_cseq.replace(b"MESSAGE sip", b"ACK sip"), ("127.0.0.1", port))
    no_callid = raw_request(peer_port).replace(b"Call-ID: c1\r\n", b"")
    peer.transport.sendto(no_callid, ("127.0.0.1", port))
    with pytest.raises(TimeoutError):
        await peer.get(timeout=0.3)
    assert inbox.queue.empty()


async def test_tcp_framing_keepalive_and_reuse(layer) -> None:
    tl, inbox = layer
    port = tl.sent_by("tcp")[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stream = (
        b"\r\n\r\n"
        + raw_request(5, transport="TCP", call_id="t1")
        + raw_request(5, transport="TCP", call_id="t2", body=b"x" * 3000)
    )
    for i in range(0, len(stream), 7):
        writer.write(stream[i : i + 7])
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # pong
    first, source = await inbox.get()
    second, _ = await inbox.get()
    assert (first.call_id, second.call_id, len(second.body)) == ("t1", "t2", 3000)
    assert source.connection is not None and source.transport == "tcp"
    # the response goes back on the same connection
    await tl.send_response(make_response(first, 200), source)
    # and a new request to that peer's address reuses the accepted connection
    req = first.replace(method="OPTIONS").replace_header("CSeq", "2 OPTIONS")
    await tl.send(req, Target("tcp", source.host, source.port))
    data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    data = await asyncio.wait_for(reader.readuntil(b"OPTIONS\r\n"), 5)
    assert b"OPTIONS sip:b@127.0.0.1 SIP/2.0" in data
    writer.close()
    await writer.wait_closed()


async def test_tcp_bad_stream_closes_connection(layer) -> None:
    tl, inbox = layer
    reader, writer = await asyncio.open_connection("127.0.0.1", tl.sent_by("tcp")[1])
    writer.write(
        raw_request(5, transport="TCP").replace(b"Content-Length: 2", b"Content-Length: x")
    )
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    assert inbox.queue.empty()


async def test_idle_connection_closed() -> None:
    inbox = Inbox()
    tl = TransportLayer(inbox, idle_timeout=0.2)
    _, port = await tl.listen("tcp")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the idle timer
    writer.close()
    await writer.wait_closed()
    await tl.close()


async def test_outgoing_tcp_reuse_and_keepalive() -> None:
    server_inbox, client_inbox = Inbox(), Inbox()
    server = TransportLayer(server_inbox)
    client = TransportLayer(client_inbox, keepalive_interval=0.05)
    _, sport = await server.listen("tcp")
    await client.listen("tcp")
    target = Target("tcp", "127.0.0.1", sport)
    for n in range(3):
        req = parse_message(raw_request(5, transport="TCP", call_id=f"k{n}"))
        await client.send(req, target)
        await server_inbox.get()
    assert len(client._connections) == 1 and len(server._connections) == 1
    conn = next(iter(client._connections.values()))
    await asyncio.sleep(0.3)  # several ping/pong rounds; a missing pong would close it
    assert not conn.closed.done() and list(client._connections.values()) == [conn]
    await client.close()
    await server.close()


async def test_keepalive_without_pong_closes() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    client = TransportLayer(keepalive_interval=0.05)
    await client.listen("tcp")
    await client.send(
        parse_message(raw_request(5, transport="TCP")), Target("tcp", "127.0.0.1", port)
    )
    conn = next(iter(client._connections.values()))
    await asyncio.wait_for(conn.closed, 5)
    await client.close()
    srv.close()
    await srv.wait_closed()


async def test_connect_failure_is_503() -> None:
    tl = TransportLayer()
    await tl.listen("udp")
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(SIPError) as info:
        await tl.send(parse_message(raw_request(5)), Target("tcp", "127.0.0.1", port))
    assert info.value.status == 503 and info.value.local
    await tl.close()
    with pytest.raises(SIPError):
        await tl.send(parse_message(raw_request(5)), Target("udp", "127.0.0.1", port))


async def test_target_selection() -> None:
    tl = TransportLayer(outbound_proxy="sip:127.0.0.1:5999;transport=tcp;lr")
    base = parse_message(raw_request(5))
    assert isinstance(base, Request)
    assert await tl.target_for(base) == Target("tcp", "127.0.0.1", 5999)
    in_dialog = base.replace_header("To", "<sip:b@h>;tag=x")
    assert await tl.target_for(in_dialog) == Target("udp", "127.0.0.1", 5060)
    routed = in_dialog.with_header("Route", "<sip:127.0.0.2:5070;lr>, <sip:other;lr>")
    assert await tl.target_for(routed) == Target("udp", "127.0.0.2", 5070)
    assert await tl.resolve(parse_uri("sips:localhost")) in (
        Target("tls", "127.0.0.1", 5061),
        Target("tls", "::1", 5061),
    )
    assert await tl.resolve(parse_uri("sip:x;maddr=127.0.0.3")) == Target("udp", "127.0.0.3", 5060)
    assert await tl.resolve(parse_uri("tel:+1555")) == Target("tcp", "127.0.0.1", 5999)
    bare = TransportLayer()
    with pytest.raises(SIPError) as info:
        await bare.resolve(parse_uri("tel:+1555"))
    assert info.value.status == 416
    with pytest.raises(SIPError) as info:
        await bare.resolve(parse_uri("sip:no-such-host.invalid"))
    assert info.value.status == 503
    with pytest.raises(ValueError):
        TransportLayer(outbound_proxy="tel:+1")
    with pytest.raises(ValueError):
        await bare.listen("sctp")
    with pytest.raises(ValueError):
        await bare.listen("tls")
    assert bare.sent_by("tcp") == ("127.0.0.1", 5060)
    assert "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx;rport" == bare.via_for("tcp", "z9hG4bKx")


async def test_response_to_closed_connection_reconnects(layer) -> None:
    tl, inbox = layer
    # the peer listens on a port named in its Via; its connection goes away before the answer
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def peer_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    srv = await asyncio.start_server(peer_server, "127.0.0.1", 0)
    peer_port = srv.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", tl.sent_by("tcp")[1])
    writer.write(
        raw_request(peer_port, transport="TCP")
        .replace(b";rport", b"")
        .replace(b"192.0.2.1", b"127.0.0.1")
    )
    await writer.drain()
    msg, source = await inbox.get()
    writer.close()
    await writer.wait_closed()
    assert source.connection is not None
    await asyncio.wait_for(source.connection.closed, 5)
    await tl.send_response(make_response(msg, 200), source)
    assert (await asyncio.wait_for(got.get(), 5)).startswith(b"SIP/2.0 200 OK")
    srv.close()
    await srv.wait_closed()
    assert serialize(msg)


async def test_tls_round_trip(tmp_path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    inbox = Inbox()
    server = TransportLayer(inbox)
    _, port = await server.listen("tls", ssl=server_ctx)
    client_inbox = Inbox()
    client = TransportLayer(client_inbox, tls_client=client_ctx)
    await client.listen("udp")
    req = parse_message(raw_request(5, transport="TLS"))
    await client.send(req, Target("tls", "127.0.0.1", port))
    msg, source = await inbox.get()
    assert source.transport == "tls" and msg.body == b"hi"
    await server.send_response(make_response(msg, 200), source)  # type: ignore[arg-type]
    reply, _ = await client_inbox.get()
    assert isinstance(reply, Response) and reply.status == 200
    await client.close()
    await server.close()


async def test_oversized_datagram_and_failing_handler(udp_peer) -> None:
    def boom(msg: Message, source: Source) -> None:
        raise RuntimeError("TU bug")

    tl = TransportLayer(boom)
    _, port = await tl.listen("udp")
    peer, peer_port = udp_peer
    big = parse_message(raw_request(5, body=b"x" * 70000))
    with pytest.raises(SIPError) as info:
        await tl.send(big, Target("udp", "127.0.0.1", peer_port))
    assert info.value.status == 513
    with pytest.raises(SIPError):
        tl.try_send(big, Target("udp", "127.0.0.1", peer_port))
    assert peer.transport is not None
    peer.transport.sendto(raw_request(5), ("127.0.0.1", port))  # handler raises: logged
    peer.transport.sendto(b"\r\n\r\n", ("127.0.0.1", port))
    await asyncio.sleep(0.1)
    assert tl.try_send(parse_message(raw_request(5)), Target("udp", "127.0.0.1", peer_port))
    assert await peer.get()
    await tl.close()


# --- hostile input (issue 13): a bad message is answered 400, the connection survives ----

TWO_TO = b"To: <sip:b@h>\r\nTo: <sip:b@h;x=\r\n"


async def test_two_to_headers_answered_400_over_udp(layer) -> None:
    tl, inbox = layer
    peer = UDPPeer()
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    assert peer.transport is not None
    data = raw_request(5, call_id="u2").replace(b"To: <sip:b@h>\r\n", TWO_TO)
    peer.transport.sendto(data, ("127.0.0.1", tl.sent_by("udp")[1]))
    resp = parse_message(await peer.get())
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.get_all("To") == ["<sip:b@h>;tag=" + (resp.to_tag or "")]
    assert "duplicate header: To" in (resp.get("Warning") or "")
    assert inbox.queue.empty()
    peer.transport.close()


async def test_tcp_bad_message_answered_400_and_connection_kept(layer) -> None:
    tl, inbox = layer
    reader, writer = await asyncio.open_connection("127.0.0.1", tl.sent_by("tcp")[1])
    bad = [
        raw_request(5, transport="TCP", call_id="b1").replace(b"To: <sip:b@h>\r\n", TWO_TO),
        raw_request(5, transport="TCP", call_id="b2").replace(
            b"CSeq: 1 ", b"CSeq: " + b"9" * 5000 + b" "
        ),
        # the response carries no Request-URI: one that does not parse is set aside
        raw_request(5, transport="TCP", call_id="b3").replace(
            b"MESSAGE sip:b@127.0.0.1", b"MESSAGE sip:b@127.0.0.1:" + b"9" * 5000
        ),
        # a Via that does not parse: answered on the connection (RFC 3261 §18.2.2)
        raw_request(5, transport="TCP", call_id="b5").replace(
            b"192.0.2.1:5;", b"192.0.2.1:" + b"9" * 5000 + b";"
        ),
        # no 400 can be built with a header line that does not parse, but the stream goes on
        raw_request(5, transport="TCP", call_id="b4", extra="Bad Header: x\r\n"),
    ]
    writer.write(b"".join(bad) + raw_request(5, transport="TCP", call_id="ok"))
    await writer.drain()
    answered = set()
    for _ in range(4):  # in any order: b5's is written at once, the others from a task
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        resp = parse_message(data, validate=False)  # b2's copied CSeq is still bad
        assert isinstance(resp, Response) and resp.status == 400
        answered.add(resp.call_id)
    assert answered == {"b1", "b2", "b3", "b5"}
    msg, _ = await inbox.get()
    assert msg.call_id == "ok" and inbox.queue.empty()
    writer.close()
    await writer.wait_closed()


async def test_unparseable_uri_via_or_length_over_udp_answered_400(layer, udp_peer) -> None:
    # numbers beyond any port or length (issue 13 defect 4): the Request-URI is not in the
    # response, a datagram is not framed by its Content-Length (RFC 3261 §18.3), and a Via
    # that does not parse leaves the datagram's source address to answer to
    tl, inbox = layer
    peer, peer_port = udp_peer
    port = tl.sent_by("udp")[1]
    assert peer.transport is not None
    digits = b"9" * 5000
    for call_id, data in [
        ("u1", raw_request(peer_port, call_id="u1").replace(b"b@127.0.0.1", b"b@h:" + digits)),
        ("u2", raw_request(peer_port, call_id="u2").replace(b"Length: 2", b"Length: " + digits)),
        (
            "u3",
            raw_request(peer_port, call_id="u3").replace(b":%d;" % peer_port, b":" + digits + b";"),
        ),
    ]:
        peer.transport.sendto(data, ("127.0.0.1", port))
        reply = parse_message(await peer.get(), validate=False)
        assert isinstance(reply, Response) and (reply.status, reply.call_id) == (400, call_id)
        assert len(reply.get("Warning") or "") < 300  # the error text is cut (CodecError)
    assert inbox.queue.empty()


async def test_malformed_messages_logged_once_per_peer_then_counted(
    layer, udp_peer, caplog: pytest.LogCaptureFixture
) -> None:
    tl, _ = layer
    peer, peer_port = udp_peer
    assert peer.transport is not None
    transport_module._malformed_log.flush()  # a fresh window
    caplog.set_level(logging.WARNING, logger="sip.transport")
    caplog.clear()
    bad = raw_request(peer_port).replace(b"1 MESSAGE", b"1 INVITE")
    for _ in range(40):
        peer.transport.sendto(bad, ("127.0.0.1", tl.sent_by("udp")[1]))
        await peer.get()
    lines = [r.getMessage() for r in caplog.records if r.name == "sip.transport"]
    assert len(lines) == 1 and "malformed SIP message from 127.0.0.1" in lines[0]  # one peer
    transport_module._malformed_log.flush()  # the window's end: one line with the count
    last = caplog.records[-1].getMessage()
    assert last == "x 39 more malformed SIP messages in the last 10 s (not logged one by one)"
