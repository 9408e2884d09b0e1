"""sip.transaction over loopback sockets with short timers (RFC 3261 §17, §9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip.errors import SIPError, TransactionStateError, TransactionTimeout
from sip.headers import new_branch
from sip.message import Request, Response, make_request, parse_message, serialize
from sip.timers import Timers
from sip.transaction import ServerTransaction, TransactionLayer
from sip.transaction_machine import TxState
from sip.transport import Source, Target, TransportLayer

FAST = Timers(t1=0.02, t2=0.08, t4=0.1, trying_delay=0.05, d_unreliable=0.1)


class UDPPeer(asyncio.DatagramProtocol):
    """A scripted peer: records every datagram and its address."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    async def get(self, timeout: float = 5) -> tuple[Request | Response, tuple[str, int]]:
        data, addr = await asyncio.wait_for(self.queue.get(), timeout)
        return parse_message(data), addr

    def send(self, msg: Request | Response | bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(msg if isinstance(msg, bytes) else serialize(msg), addr)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[UDPPeer, int]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(UDPPeer, local_addr=("127.0.0.1", 0))
    yield proto, transport.get_extra_info("sockname")[1]
    transport.close()


class Stack:
    def __init__(self, transport: TransportLayer, layer: TransactionLayer) -> None:
        self.transport = transport
        self.layer = layer
        self.requests: asyncio.Queue[ServerTransaction] = asyncio.Queue()
        self.acks: asyncio.Queue[Request] = asyncio.Queue()

    @property
    def udp(self) -> int:
        return self.transport.sent_by("udp")[1]

    @property
    def tcp(self) -> int:
        return self.transport.sent_by("tcp")[1]


@pytest.fixture
async def make_stack() -> AsyncIterator[object]:
    stacks: list[Stack] = []

    async def factory(handler=None) -> Stack:
        transport = TransportLayer()
        stack = Stack(transport, None)  # type: ignore[arg-type]

        def default(tx: ServerTransaction) -> None:
            stack.requests.put_nowait(tx)

        stack.layer = TransactionLayer(
            transport,
            timers=FAST,
            on_request=handler or default,
            on_ack=lambda req, src: stack.acks.put_nowait(req),
        )
        await transport.listen("udp")
        await transport.listen("tcp")
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        await stack.layer.close()
        await stack.transport.close()


def message(port: int, method: str = "MESSAGE", call_id: str = "c1") -> Request:
    return make_request(
        method,
        f"sip:b@127.0.0.1:{port}",
        [
            ("From", "<sip:a@h>;tag=fa"),
            ("To", "<sip:b@h>"),
            ("Call-ID", call_id),
            ("CSeq", f"1 {method}"),
        ],
        b"hello",
        content_type="text/plain",
    )


def answer(req: Request, status: int, to_tag: str = "tt") -> Response:
    from sip.message import make_response

    return make_response(req, status, to_tag=to_tag)


async def test_retransmits_when_first_request_is_lost(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    tx = stack.layer.client(message(port), Target("udp", "127.0.0.1", port))
    first, _ = await udp.get()  # dropped by the peer
    second, addr = await udp.get(timeout=1)
    assert serialize(first) == serialize(second)
    assert addr == ("127.0.0.1", stack.udp)  # sent from the listening socket
    assert first.top_via.wants_rport and first.get("Max-Forwards") == "70"
    udp.send(answer(second, 100), addr)
    udp.send(answer(second, 200), addr)
    response = await tx.wait()
    assert response.status == 200 and tx.state is TxState.COMPLETED
    udp.send(answer(second, 200), addr)  # retransmitted final: absorbed
    await asyncio.sleep(FAST.k(False) + 0.1)
    assert tx.machine.state.name == "TERMINATED" and not stack.layer.clients


async def test_timeout_408_and_retransmit_schedule(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TransactionTimeout) as info:
        await stack.layer.request(message(port), Target("udp", "127.0.0.1", port))
    assert info.value.status == 408 and info.value.local
    assert loop.time() - start == pytest.approx(FAST.f, abs=0.6)
    count = udp.queue.qsize()
    # E: 20, 40, 80, 80, ... ms inside F = 1.28 s -> about 17 copies
    assert 8 <= count <= 20
    assert not stack.layer.clients


async def test_server_absorbs_retransmissions(make_stack, peer) -> None:
    calls: list[ServerTransaction] = []

    def handler(tx: ServerTransaction) -> None:
        calls.append(tx)
        tx.respond(200, headers=[("X-Count", str(len(calls)))])

    stack = await make_stack(handler)
    udp, port = peer
    req = message(port).prepend_header("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}")
    udp.send(req, ("127.0.0.1", stack.udp))
    first, _ = await udp.get()
    udp.send(req, ("127.0.0.1", stack.udp))
    again, _ = await udp.get()
    assert serialize(first) == serialize(again) and len(calls) == 1
    assert first.to_tag == calls[0].to_tag
    await asyncio.sleep(FAST.j(False) + 0.2)
    assert calls[0].state is TxState.TERMINATED and not stack.layer.servers


async def test_invite_non2xx_ack_in_transaction(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    invite = message(port, "INVITE")
    provisional: list[Response] = []
    tx = stack.layer.client(invite, Target("udp", "127.0.0.1", port), provisional.append)
    req, addr = await udp.get()
    udp.send(answer(req, 180), addr)
    busy = answer(req, 486)
    udp.send(busy, addr)
    assert (await tx.wait()).status == 486 and [r.status for r in provisional] == [180]
    # drain retransmissions of the INVITE (if any came before the 180)
    while True:
        ack, _ = await udp.get()
        if ack.method == "ACK":
            break
    assert isinstance(ack, Request) and ack.branch == req.branch
    assert ack.to_tag == "tt" and ack.cseq.method == "ACK" and ack.cseq.seq == 1
    assert len(ack.vias) == 1 and str(ack.uri) == str(req.uri)
    udp.send(busy, addr)  # retransmitted final -> ACK again
    ack2, _ = await udp.get()
    assert serialize(ack2) == serialize(ack)
    assert tx.state is TxState.COMPLETED


async def test_invite_2xx_accepted_and_ack_by_tu(make_stack) -> None:
    server = await make_stack()
    client = await make_stack()
    extra: list[Response] = []
    tx = client.layer.client(
        message(server.udp, "INVITE"), Target("udp", "127.0.0.1", server.udp), on_2xx=extra.append
    )
    stx = await asyncio.wait_for(server.requests.get(), 5)
    await asyncio.sleep(FAST.trying_delay + 0.05)  # automatic 100 Trying
    assert stx.last_response is not None and stx.last_response.status == 100
    ok = stx.response(200, headers=[("Contact", f"<sip:b@127.0.0.1:{server.udp}>")])
    stx.respond(ok)
    response = await tx.wait()
    assert response.status == 200 and tx.state is TxState.ACCEPTED
    assert stx.state is TxState.ACCEPTED
    stx.respond(ok)  # the TU retransmits its 2xx
    await asyncio.sleep(0.1)
    assert [r.status for r in extra] == [200]
    ack = make_request(
        "ACK",
        f"sip:b@127.0.0.1:{server.udp}",
        [
            ("From", "<sip:a@h>;tag=fa"),
            ("To", response.get("To") or ""),
            ("Call-ID", "c1"),
            ("CSeq", "1 ACK"),
        ],
    )
    await client.layer.send_stateless(ack, Target("udp", "127.0.0.1", server.udp))
    got = await asyncio.wait_for(server.acks.get(), 5)
    assert got.branch != tx.request.branch and got.to_tag == stx.to_tag
    with pytest.raises(TransactionStateError):
        client.layer.client(ack)


async def test_cancel_gives_487(make_stack) -> None:
    server = await make_stack()
    client = await make_stack()
    tx = client.layer.client(message(server.udp, "INVITE"), Target("udp", "127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    told: list[ServerTransaction] = []
    stx.on_cancel = told.append
    cancel_task = asyncio.create_task(tx.cancel())  # waits for a provisional
    await asyncio.sleep(0.05)
    assert not cancel_task.done()
    stx.respond(180)
    await asyncio.wait_for(cancel_task, 5)
    final = await tx.wait()
    assert final.status == 487 and told == [stx] and stx.cancelled
    await asyncio.sleep(0.1)
    assert stx.state in (TxState.CONFIRMED, TxState.TERMINATED)  # the ACK arrived
    with pytest.raises(TransactionStateError):
        stx.respond(200)
    await tx.cancel()  # again: no effect


async def test_cancel_after_final_is_noop_and_unknown_cancel_481(make_stack, peer) -> None:
    server = await make_stack()
    client = await make_stack()
    tx = client.layer.client(message(server.udp, "INVITE"), Target("udp", "127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    stx.respond(603)
    assert (await tx.wait()).status == 603
    await asyncio.wait_for(tx.cancel(), 1)
    # a CANCEL for nothing
    udp, port = peer
    cancel = message(port, "CANCEL").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"
    )
    udp.send(cancel, ("127.0.0.1", server.udp))
    resp, _ = await udp.get()
    assert resp.status == 481
    udp.send(cancel, ("127.0.0.1", server.udp))  # retransmitted CANCEL: same answer
    resp2, _ = await udp.get()
    assert serialize(resp2) == serialize(resp)
    with pytest.raises(TransactionStateError):
        await client.layer.client(message(1), Target("udp", "127.0.0.1", 1)).cancel()


async def test_invite_final_retransmitted_until_ack_then_timer_h(make_stack, peer) -> None:
    server = await make_stack()
    udp, port = peer
    invite = message(port, "INVITE").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()};rport"
    )
    udp.send(invite, ("127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    stx.respond(486)
    copies = [await udp.get() for _ in range(3)]  # G: 20, 40 ms ...
    assert all(c[0].status == 486 for c in copies)
    await asyncio.sleep(FAST.h + 0.2)
    assert stx.state is TxState.TERMINATED
    assert isinstance(stx.failure, TransactionTimeout)


async def test_handler_failures_answer_500(make_stack, peer) -> None:
    def broken(tx: ServerTransaction) -> None:
        raise RuntimeError("boom")

    async def silent(tx: ServerTransaction) -> None:
        await asyncio.sleep(0)

    udp, port = peer
    for handler in (broken, silent):
        stack = await make_stack(handler)
        req = message(port).prepend_header(
            "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"
        )
        udp.send(req, ("127.0.0.1", stack.udp))
        resp, _ = await udp.get()
        assert resp.status == 500
    bare_transport = TransportLayer()
    bare = TransactionLayer(bare_transport, timers=FAST)
    await bare_transport.listen("udp")
    for method, status in (("MESSAGE", 501), ("OPTIONS", 200)):
        req = message(port, method).prepend_header(
            "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"
        )
        udp.send(req, ("127.0.0.1", bare_transport.sent_by("udp")[1]))
        resp, _ = await udp.get()
        assert resp.status == status
    await bare.close()
    await bare_transport.close()


async def test_tcp_message_and_transport_error(make_stack) -> None:
    server = await make_stack()
    client = await make_stack()
    tx = client.layer.client(message(server.tcp), Target("tcp", "127.0.0.1", server.tcp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    assert stx.source.transport == "tcp" and stx.request.top_via.transport == "TCP"
    stx.respond(202)
    assert (await tx.wait()).status == 202
    await asyncio.sleep(0.05)  # reliable: timers J and K are zero
    assert not server.layer.servers and not client.layer.clients
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(SIPError) as info:
        await client.layer.request(message(dead), Target("tcp", "127.0.0.1", dead))
    assert info.value.status == 503 and info.value.local


async def test_default_target_and_stray_responses(make_stack, peer) -> None:
    server = await make_stack()
    client = await make_stack()
    stray: list[tuple[Response, Source]] = []
    client.layer.on_stray_response = lambda r, s: stray.append((r, s))
    tx = client.layer.client(message(server.udp))  # target from the Request-URI
    stx = await asyncio.wait_for(server.requests.get(), 5)
    stx.respond(200)
    assert (await tx.wait()).status == 200
    udp, _ = peer
    udp.send(
        answer(stx.request, 200).replace_header("Via", "SIP/2.0/UDP x;branch=z9hG4bKnone"),
        ("127.0.0.1", client.udp),
    )
    await asyncio.sleep(0.1)
    assert len(stray) == 1
    bad = client.layer.client(message(1).replace(uri=__import__("sip.uri").uri.parse_uri("tel:+1")))
    with pytest.raises(SIPError) as info:
        await bad.wait()
    assert info.value.status == 416


async def test_respond_until_ack_retransmits_2xx(make_stack, peer) -> None:
    server = await make_stack()
    udp, port = peer
    invite = message(port, "INVITE").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()};rport"
    )
    udp.send(invite, ("127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    acked = stx.respond_until_ack(stx.response(200))
    copies = [(await udp.get())[0] for _ in range(3)]
    assert [c.status for c in copies] == [200, 200, 200]
    ok = copies[0]
    ack = make_request(
        "ACK",
        invite.uri,
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"),
            ("From", invite.get("From") or ""),
            ("To", ok.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", "1 ACK"),
        ],
    )
    udp.send(ack, ("127.0.0.1", server.udp))
    got = await asyncio.wait_for(acked, 5)
    assert got.method == "ACK" and (await server.acks.get()).method == "ACK"
    while not udp.queue.empty():
        udp.queue.get_nowait()
    await asyncio.sleep(0.2)
    assert udp.queue.empty()  # retransmissions stopped
    with pytest.raises(TransactionStateError):
        stx.respond_until_ack(stx.response(486))


async def test_respond_until_ack_times_out(make_stack, peer) -> None:
    server = await make_stack()
    udp, port = peer
    invite = message(port, "INVITE").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"
    )
    udp.send(invite, ("127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    with pytest.raises(TransactionTimeout):
        await asyncio.wait_for(stx.respond_until_ack(stx.response(200)), 5)
    # 64*T1 = 1.28 s with G-like doubling capped at T2 = 80 ms: about 17 copies
    assert 7 <= udp.queue.qsize() <= 20


async def test_invite_client_timer_b(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    tx = stack.layer.client(message(port, "INVITE"), Target("udp", "127.0.0.1", port))
    with pytest.raises(TransactionTimeout):
        await tx.wait()
    # A doubles without cap: 20, 40, 80, 160, 320, 640 ms inside B = 1.28 s -> 7 copies
    assert 5 <= udp.queue.qsize() <= 7
    assert tx.machine.state.name == "TERMINATED"


async def test_cancel_without_487_gives_up_after_64_t1(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    tx = stack.layer.client(message(port, "INVITE"), Target("udp", "127.0.0.1", port))
    invite, addr = await udp.get()
    udp.send(answer(invite, 180), addr)
    cancel_task = asyncio.create_task(tx.cancel())
    while True:
        cancel, _ = await udp.get()
        if cancel.method == "CANCEL":
            break
    assert cancel.branch == invite.branch and cancel.cseq.method == "CANCEL"
    assert cancel.get("To") == invite.get("To") and cancel.cseq.seq == invite.cseq.seq
    udp.send(answer(cancel, 200), addr)
    await asyncio.wait_for(cancel_task, 5)
    with pytest.raises(TransactionTimeout):  # no 487 ever came
        await asyncio.wait_for(tx.wait(), 5)


async def test_tcp_invite_server_and_client(make_stack) -> None:
    server = await make_stack()
    client = await make_stack()
    seen: list[int] = []
    tx = client.layer.client(
        message(server.tcp, "INVITE"),
        Target("tcp", "127.0.0.1", server.tcp),
        on_provisional=lambda r: seen.append(r.status),
    )
    stx = await asyncio.wait_for(server.requests.get(), 5)
    stx.respond(180)
    stx.respond(404)
    assert (await tx.wait()).status == 404 and seen == [180]
    await asyncio.sleep(0.1)  # ACK over TCP; timers D and I are zero
    assert not client.layer.clients and not server.layer.servers


async def test_close_fails_pending_clients(make_stack, peer) -> None:
    stack = await make_stack()
    _, port = peer
    tx = stack.layer.client(message(port), Target("udp", "127.0.0.1", port))
    await stack.layer.close()
    with pytest.raises(SIPError) as info:
        await tx.wait()
    assert info.value.status == 503


async def test_routes_copied_to_ack_and_cancel(make_stack, peer) -> None:
    stack = await make_stack()
    udp, port = peer
    invite = message(port, "INVITE").with_header("Route", f"<sip:127.0.0.1:{port};lr>")
    tx = stack.layer.client(invite)  # target from the Route
    sent, addr = await udp.get()
    assert sent.get_all("Route") == [f"<sip:127.0.0.1:{port};lr>"]
    udp.send(answer(sent, 183), addr)
    await asyncio.sleep(0.05)
    cancel_task = asyncio.create_task(tx.cancel())  # a provisional is there: sent at once
    while True:
        cancel, _ = await udp.get()
        if cancel.method == "CANCEL":
            break
    assert cancel.get_all("Route") == sent.get_all("Route")
    udp.send(answer(cancel, 200), addr)
    udp.send(answer(sent, 487), addr)
    await asyncio.wait_for(cancel_task, 5)
    assert (await tx.wait()).status == 487
    while True:
        ack, _ = await udp.get()
        if ack.method == "ACK":
            break
    assert ack.get_all("Route") == sent.get_all("Route")


async def test_late_provisional_absorbed_and_rfc2543_matching(make_stack, peer) -> None:
    calls: list[ServerTransaction] = []

    def handler(tx: ServerTransaction) -> None:
        calls.append(tx)
        tx.respond(200)

    stack = await make_stack(handler)
    udp, port = peer
    # client side: a 1xx after the final response is absorbed in Completed
    tx = stack.layer.client(message(port, call_id="late"), Target("udp", "127.0.0.1", port))
    req, addr = await udp.get()
    udp.send(answer(req, 200), addr)
    udp.send(answer(req, 180), addr)
    assert (await tx.wait()).status == 200
    await asyncio.sleep(0.05)
    # server side: a branch without the magic cookie matches on Call-ID/CSeq/From tag/Via
    old = message(port, call_id="old").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=1234"
    )
    udp.send(old, ("127.0.0.1", stack.udp))
    udp.send(old, ("127.0.0.1", stack.udp))
    first = await udp.get()
    second = await udp.get()
    assert first[0].status == second[0].status == 200 and len(calls) == 1


async def test_ack_with_invite_branch_in_accepted_and_default_drops(make_stack, peer) -> None:
    server = await make_stack()
    udp, port = peer
    branch = new_branch()
    invite = message(port, "INVITE").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch}"
    )
    udp.send(invite, ("127.0.0.1", server.udp))
    stx = await asyncio.wait_for(server.requests.get(), 5)
    stx.respond(200)
    ok, _ = await udp.get()
    # a (non-conforming) ACK for the 2xx that reuses the INVITE branch reaches the TU too
    ack = make_request(
        "ACK",
        invite.uri,
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch}"),
            ("From", invite.get("From") or ""),
            ("To", ok.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", "1 ACK"),
        ],
    )
    udp.send(ack, ("127.0.0.1", server.udp))
    assert (await asyncio.wait_for(server.acks.get(), 5)).method == "ACK"
    # without handlers, stray ACKs and responses are dropped quietly
    server.layer.on_ack = None
    udp.send(
        ack.replace_header("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"),
        ("127.0.0.1", server.udp),
    )
    udp.send(answer(invite, 200), ("127.0.0.1", server.udp))
    await asyncio.sleep(0.1)
    assert server.acks.empty() and udp.queue.empty()


async def test_send_stateless_resolves_and_connects(make_stack) -> None:
    server = await make_stack()
    client = await make_stack()
    ack = make_request(
        "ACK",
        f"sip:b@127.0.0.1:{server.tcp};transport=tcp",
        [
            ("From", "<sip:a@h>;tag=1"),
            ("To", "<sip:b@h>;tag=2"),
            ("Call-ID", "s1"),
            ("CSeq", "1 ACK"),
        ],
    )
    await client.layer.send_stateless(ack)
    got = await asyncio.wait_for(server.acks.get(), 5)
    assert got.top_via.transport == "TCP" and got.get("Max-Forwards") == "70"


async def test_async_handler_exception_and_close_with_pending_work(make_stack, peer) -> None:
    gate = asyncio.Event()

    async def failing(tx: ServerTransaction) -> None:
        raise RuntimeError("boom")

    async def slow(tx: ServerTransaction) -> None:
        await gate.wait()

    udp, port = peer
    stack = await make_stack(failing)
    req = message(port).prepend_header("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}")
    udp.send(req, ("127.0.0.1", stack.udp))
    resp, _ = await udp.get()
    assert resp.status == 500
    slow_stack = await make_stack(slow)
    invite = message(port, "INVITE").prepend_header(
        "Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={new_branch()}"
    )
    udp.send(invite, ("127.0.0.1", slow_stack.udp))
    await asyncio.sleep(0.1)
    stx = next(iter(slow_stack.layer.servers.values()))
    waiter = stx.respond_until_ack(stx.response(200))
    await slow_stack.layer.close()  # cancels the handler task and the 2xx retransmissions
    assert waiter.cancelled() and not slow_stack.layer._tasks


async def test_server_response_transport_error(make_stack) -> None:
    server = await make_stack()
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp)
    req = message(server.tcp).prepend_header(
        "Via", f"SIP/2.0/TCP 127.0.0.1:{dead};branch={new_branch()}"
    )
    writer.write(serialize(req))
    await writer.drain()
    stx = await asyncio.wait_for(server.requests.get(), 5)
    writer.close()
    await writer.wait_closed()
    assert stx.source.connection is not None
    await asyncio.wait_for(stx.source.connection.closed, 5)
    stx.respond(200)  # the connection is gone and the Via's port refuses: 503
    for _ in range(50):
        if stx.failure is not None:
            break
        await asyncio.sleep(0.02)
    assert isinstance(stx.failure, SIPError) and stx.failure.status == 503
    assert stx.machine.state.name == "TERMINATED"


async def test_forked_2xx_goes_to_stray_handler_without_on_2xx(make_stack, peer) -> None:
    stack = await make_stack()
    stray: list[Response] = []
    stack.layer.on_stray_response = lambda r, s: stray.append(r)
    udp, port = peer
    tx = stack.layer.client(message(port, "INVITE"), Target("udp", "127.0.0.1", port))
    req, addr = await udp.get()
    udp.send(answer(req, 200, "one"), addr)
    assert (await tx.wait()).to_tag == "one"
    udp.send(answer(req, 200, "two"), addr)
    await asyncio.sleep(0.1)
    assert [r.to_tag for r in stray] == ["two"]


async def test_oversized_udp_request_fails_with_513(make_stack, peer) -> None:
    stack = await make_stack()
    _, port = peer
    big = message(port).with_body(b"x" * 70000)
    with pytest.raises(SIPError) as info:
        await stack.layer.request(big, Target("udp", "127.0.0.1", port))
    assert info.value.status == 513 and info.value.local
