"""SipStack end to end between two stacks on 127.0.0.1 (no proxy): every usage once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sip import sipfrag
from sip.dialog import DialogState
from sip.errors import SIPError, TransactionTimeout
from sip.message import Request, Response
from sip.stack import SipStack
from sip.subscription import NotifierState, SubscriberState
from sip.timers import Timers
from sip.usage import IncomingInvite, IncomingRefer, IncomingRequest, IncomingSubscribe

FAST = Timers(t1=0.05, t2=0.4, t4=0.5, d_unreliable=0.5)
QUICK = Timers(t1=0.02, t2=0.16, t4=0.2, d_unreliable=0.2)  # 64*T1 = 1.28 s
ALICE = "sip:+15555550001@ims.test"
BOB = "sip:+15555550002@ims.test"


@pytest.fixture(params=["udp", "tcp"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SipStack, SipStack, str]]:
    transport = request.param
    a = SipStack(port=0, transports=[transport], timers=FAST)
    b = SipStack(port=0, transports=[transport], timers=FAST)
    await a.start()
    await b.start()
    suffix = "" if transport == "udp" else ";transport=tcp"
    target = f"sip:+15555550002@127.0.0.1:{b.port}{suffix}"
    try:
        yield a, b, target
    finally:
        await a.stop()
        await b.stop()


async def test_message_and_options(pair: tuple[SipStack, SipStack, str]) -> None:
    a, b, target = pair
    got: list[IncomingRequest] = []

    def on_message(req: IncomingRequest) -> None:
        got.append(req)
        req.respond(202)

    b.on_request("MESSAGE", on_message)
    resp = await a.send_request(
        "MESSAGE", target, sender=ALICE, body=b"hi", content_type="text/plain"
    )
    assert resp.status == 202
    msg = got[0].request
    assert msg.body == b"hi"
    assert msg.get("P-Asserted-Identity") == f"<{ALICE}>"
    assert msg.from_.uri.user == "+15555550001"  # type: ignore[union-attr]

    opt = await a.send_request("OPTIONS", target, sender=ALICE)
    assert opt.status == 200
    assert "MESSAGE" in (opt.get("Allow") or "")
    assert "message/cpim" in (opt.get("Accept") or "")
    assert opt.get("Supported") == "norefersub"

    assert (await a.send_request("FOO", target, sender=ALICE)).status == 501
    assert (await a.send_request("PUBLISH", target, sender=ALICE)).status == 405
    assert (await a.send_request("INVITE", target, sender=ALICE)).status == 480
    bad = await a.send_request("MESSAGE", target, sender=ALICE, headers=[("Require", "100rel")])
    assert bad.status == 420 and bad.get("Unsupported") == "100rel"
    norefersub = [("Require", "norefersub")]
    fine = await a.send_request("MESSAGE", target, sender=ALICE, headers=norefersub)
    assert fine.status == 202


async def test_invite_bye_and_in_dialog_requests(pair: tuple[SipStack, SipStack, str]) -> None:
    a, b, target = pair
    sessions = []
    infos: list[bytes] = []

    async def on_invite(inv: IncomingInvite) -> None:
        inv.ring()
        session = await inv.accept(b"v=0 answer\r\n")

        def on_info(r: IncomingRequest) -> None:
            infos.append(r.request.body)
            r.respond(200)

        session.on_request("INFO", on_info)
        sessions.append(session)

    b.on_request("INVITE", on_invite)
    provisional: list[Response] = []
    call = a.invite(target, sender=ALICE, body=b"v=0 offer\r\n", on_provisional=provisional.append)
    resp = await call.response()
    assert resp.status == 200 and resp.body == b"v=0 answer\r\n"
    assert [p.status for p in provisional if p.status > 100] == [180]
    session = call.session
    assert session is not None and session.dialog.state is DialogState.CONFIRMED
    remote = sessions[0]
    await asyncio.wait_for(remote.confirmed.wait(), 2)  # the ACK arrived

    info = await session.request("INFO", body=b"x", content_type="application/x")
    assert info.status == 200 and infos == [b"x"]
    refresh = await session.reinvite()
    assert refresh.status == 200 and refresh.body == b"v=0 answer\r\n"
    upd = await session.request("UPDATE")
    assert upd.status == 200
    assert (await session.request("SUBSCRIBE")).status == 405

    bye = await remote.bye()
    assert bye is not None and bye.status == 200
    await asyncio.wait_for(session.ended.wait(), 2)
    assert session.end_reason == "remote BYE"
    assert a.dialog_count() == 0 and b.dialog_count() == 0
    # a request in the gone dialog gets 481
    stale = session.dialog._build("INFO", 99, [], b"", None)
    assert (await a._request(stale)).status == 481


async def test_cancel(pair: tuple[SipStack, SipStack, str]) -> None:
    a, b, target = pair
    pending: list[IncomingInvite] = []

    def on_invite(inv: IncomingInvite) -> None:
        inv.ring()
        pending.append(inv)

    b.on_request("INVITE", on_invite)
    call = a.invite(target, sender=ALICE, body=b"v=0\r\n")
    while not call.provisional or call.provisional[-1].status != 180:
        await asyncio.sleep(0.01)
    await call.cancel()
    resp = await asyncio.wait_for(call.response(), 3)
    assert resp.status == 487
    assert pending[0].cancelled.is_set()
    with pytest.raises(SIPError):
        await pending[0].accept(b"")


async def test_no_ack_ends_with_bye() -> None:
    b = SipStack(port=0, transports=["udp"], timers=QUICK)
    await b.start()
    sessions = []

    async def on_invite(inv: IncomingInvite) -> None:
        sessions.append(await inv.accept(b"v=0\r\n"))

    b.on_request("INVITE", on_invite)
    # a raw UAC that never ACKs: it counts the 200s and answers the BYE
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    bye_seen = asyncio.Event()

    class Peer(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append(data)
            if data.startswith(b"BYE"):
                bye_seen.set()

    transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    invite = (
        f"INVITE sip:bob@127.0.0.1:{b.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKnoack1\r\n"
        "From: <sip:raw@127.0.0.1>;tag=r1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        "Call-ID: noack@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:raw@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    try:
        transport.sendto(invite, ("127.0.0.1", b.port))
        await asyncio.wait_for(bye_seen.wait(), 64 * FAST.t1 + 2)
        oks = [d for d in received if d.startswith(b"SIP/2.0 200")]
        assert len(oks) >= 4  # T1, 2T1, 4T1, ... retransmissions
        assert sessions[0].ended.is_set()
    finally:
        transport.close()
        await b.stop()


async def test_subscribe_notify_refresh_unsubscribe(pair: tuple[SipStack, SipStack, str]) -> None:
    a, b, target = pair
    served = []

    async def on_subscribe(req: IncomingSubscribe) -> None:
        sub = req.accept(expires=2)
        served.append(sub)
        await sub.notify(b"<conference-info/>", "application/conference-info+xml")

    b.on_request("SUBSCRIBE", on_subscribe)
    notes: list[Request] = []
    sub = await a.subscribe(
        target,
        "conference",
        sender=ALICE,
        accept="application/conference-info+xml",
        expires=600,
        on_notify=notes.append,
    )
    await sub.wait_notify(2)
    assert sub.state is SubscriberState.ACTIVE and sub.expires == 2
    assert notes[0].body == b"<conference-info/>"
    refreshed = asyncio.Event()
    served[0].on_refresh = lambda exp: refreshed.set()
    await asyncio.wait_for(refreshed.wait(), 3)  # refresh before the 2 s expiry
    assert served[0].state is NotifierState.ACTIVE
    await sub.unsubscribe()
    assert sub.state.value == "terminated"
    assert (notes[-1].get("Subscription-State") or "").startswith("terminated")
    await asyncio.wait_for(served[0].terminated.wait(), 2)
    assert a.dialog_count() == 0 and b.dialog_count() == 0


async def test_refer_with_sipfrag_notifies(pair: tuple[SipStack, SipStack, str]) -> None:
    a, b, target = pair
    targets = []

    async def on_refer(req: IncomingRefer) -> None:
        targets.append(req.refer_to)
        sub = req.accept()
        assert sub is not None
        await req.progress(sub, 100, "Trying")
        await req.progress(sub, 200, "OK")

    b.on_request("REFER", on_refer)
    notes: list[Request] = []
    sub = await a.refer(target, BOB, sender=ALICE, on_notify=notes.append)
    assert sub is not None
    await asyncio.wait_for(sub.terminated.wait(), 3)
    assert targets == [f"<{BOB}>"]
    frags = [sipfrag.parse(n.body).status for n in notes]
    assert frags == [100, 200]
    assert all(n.get("Event") == "refer" for n in notes)
    # Refer-Sub: false: no subscription
    assert await a.refer(target, BOB, sender=ALICE, refer_sub=False) is None


async def test_timeout_is_408() -> None:
    a = SipStack(port=0, transports=["udp"], timers=QUICK)
    await a.start()
    # a bound socket that never answers
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = sink.get_extra_info("sockname")[1]
    try:
        with pytest.raises(TransactionTimeout) as info:
            await a.send_request("MESSAGE", f"sip:x@127.0.0.1:{port}", sender=ALICE, body=b"x")
        assert info.value.status == 408
    finally:
        sink.close()
        await a.stop()


@pytest.mark.parametrize("status", [401, 407])
async def test_digest_retry(pair: tuple[SipStack, SipStack, str], status: int) -> None:
    from sip import auth

    a, b, target = pair
    challenge = auth.make_challenge("ims.test", algorithm="SHA-256")
    challenge_name, credentials_name = auth.challenge_header(status)
    seen: list[str | None] = []

    def on_message(req: IncomingRequest) -> None:
        value = req.request.get(credentials_name)
        seen.append(value)
        if value is None:
            req.respond(status, headers=[(challenge_name, str(challenge))])
            return
        creds = auth.parse_credentials(value)
        ok = auth.verify(creds, "MESSAGE", "secret", req.request.body)
        req.respond(200 if ok else 403)

    b.on_request("MESSAGE", on_message)
    # no credentials: the challenge comes back to the caller
    resp = await a.send_request("MESSAGE", target, sender=ALICE, body=b"x")
    assert resp.status == status
    a.credentials = lambda realm: ("alice", "secret") if realm == "ims.test" else None
    resp = await a.send_request("MESSAGE", target, sender=ALICE, body=b"y")
    assert resp.status == 200
    assert seen[-2] is None and seen[-1] is not None and "SHA-256" in seen[-1]


class RawPeer(asyncio.DatagramProtocol):
    """A hand-driven UDP SIP peer: keeps what it receives, sends what the test writes."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    async def next(self, start: bytes) -> Request:
        from sip.message import parse_message

        while True:
            data = await asyncio.wait_for(self.received.get(), 5)
            if data.startswith(start):
                msg = parse_message(data)
                assert isinstance(msg, Request)
                return msg


async def raw_peer() -> tuple[RawPeer, int]:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    assert peer.transport is not None
    return peer, peer.transport.get_extra_info("sockname")[1]


async def test_notify_before_2xx_creates_the_dialog() -> None:
    a = SipStack(port=0, transports=["udp"], timers=FAST)
    await a.start()
    peer, port = await raw_peer()
    assert peer.transport is not None
    try:
        task = asyncio.create_task(
            a.subscribe(f"sip:conf@127.0.0.1:{port}", "conference", sender=ALICE, expires=60)
        )
        sub_req = await peer.next(b"SUBSCRIBE")
        notify = (
            f"NOTIFY {sub_req.contacts[0].uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKn1\r\n"
            f"From: <sip:conf@127.0.0.1:{port}>;tag=peer1\r\nTo: {sub_req.get('From')}\r\n"
            f"Call-ID: {sub_req.call_id}\r\nCSeq: 1 NOTIFY\r\n"
            f"Contact: <sip:conf@127.0.0.1:{port}>\r\nEvent: conference\r\n"
            "Subscription-State: active;expires=60\r\nContent-Length: 0\r\n\r\n"
        )
        peer.transport.sendto(notify.encode(), ("127.0.0.1", a.port))
        ok = await asyncio.wait_for(peer.received.get(), 5)
        assert ok.startswith(b"SIP/2.0 200")  # the NOTIFY was accepted before any 2xx
        ok_sub = (
            f"SIP/2.0 200 OK\r\nVia: {sub_req.get('Via')}\r\nFrom: {sub_req.get('From')}\r\n"
            f"To: {sub_req.get('To')};tag=peer1\r\nCall-ID: {sub_req.call_id}\r\n"
            f"CSeq: {sub_req.get('CSeq')}\r\nContact: <sip:conf@127.0.0.1:{port}>\r\n"
            "Expires: 60\r\nContent-Length: 0\r\n\r\n"
        )
        peer.transport.sendto(ok_sub.encode(), ("127.0.0.1", a.port))
        sub = await asyncio.wait_for(task, 5)
        assert sub.state is SubscriberState.ACTIVE and len(sub.notifies) == 1
        assert sub.dialog is not None and sub.dialog.id.remote_tag == "peer1"
        assert a.dialog_count() == 1
        sub.close()
    finally:
        peer.transport.close()
        await a.stop()


async def test_no_notify_after_2xx_ends_with_timer_n() -> None:
    a = SipStack(port=0, transports=["udp"], timers=QUICK)
    await a.start()
    peer, port = await raw_peer()
    assert peer.transport is not None
    try:
        task = asyncio.create_task(
            a.subscribe(f"sip:conf@127.0.0.1:{port}", "conference", sender=ALICE, expires=60)
        )
        sub_req = await peer.next(b"SUBSCRIBE")
        ok_sub = (
            f"SIP/2.0 200 OK\r\nVia: {sub_req.get('Via')}\r\nFrom: {sub_req.get('From')}\r\n"
            f"To: {sub_req.get('To')};tag=peer2\r\nCall-ID: {sub_req.call_id}\r\n"
            f"CSeq: {sub_req.get('CSeq')}\r\nContact: <sip:conf@127.0.0.1:{port}>\r\n"
            "Expires: 60\r\nContent-Length: 0\r\n\r\n"
        )
        peer.transport.sendto(ok_sub.encode(), ("127.0.0.1", a.port))
        sub = await asyncio.wait_for(task, 5)
        assert sub.state is SubscriberState.ACCEPTED
        await asyncio.wait_for(sub.terminated.wait(), 64 * QUICK.t1 + 2)
        assert sub.reason == "timeout" and a.dialog_count() == 0
    finally:
        peer.transport.close()
        await a.stop()


async def test_idle_timeout_spares_a_connection_carrying_a_live_dialog() -> None:
    # a peer that is no proxy reached us over TCP and set up a session: its connection
    # must outlive the idle timeout as long as the dialog lives (issue 13), then go
    a = SipStack(port=0, transports=["tcp"], timers=FAST)
    b = SipStack(port=0, transports=["tcp"], timers=FAST)
    await a.start()
    await b.start()
    idle = 0.3
    for stack in (a, b):
        stack.transport.limits = replace(stack.transport.limits, idle_timeout=idle)
    sessions = []

    async def on_invite(inv: IncomingInvite) -> None:
        sessions.append(await inv.accept(b"v=0 answer\r\n"))

    b.on_request("INVITE", on_invite)
    try:
        target = f"sip:+15555550002@127.0.0.1:{b.port};transport=tcp"
        call = a.invite(target, sender=ALICE)
        assert (await call.response()).status == 200
        assert call.session is not None
        (inbound,) = b.transport._connections.values()
        (outbound,) = a.transport._connections.values()
        assert inbound.dialogs == 1 and outbound.dialogs == 1
        await asyncio.sleep(idle * 4)  # idle well past the timeout
        assert not inbound.closed.done() and not outbound.closed.done()
        bye = await sessions[0].bye()  # on the connection the INVITE came on
        assert bye is not None and bye.status == 200
        assert inbound.dialogs == 0 and outbound.dialogs == 0
        await asyncio.wait_for(asyncio.gather(inbound.closed, outbound.closed), idle * 4)
        # a connection that carried only an OPTIONS is closed when idle, as before
        assert (await a.send_request("OPTIONS", target, sender=ALICE)).status == 200
        (plain,) = [c for c in b.transport._connections.values() if not c.outgoing]
        assert plain is not inbound and plain.dialogs == 0
        await asyncio.wait_for(plain.closed, idle * 4)
    finally:
        await a.stop()
        await b.stop()
