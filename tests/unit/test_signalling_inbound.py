"""Inbound INVITEs and MESSAGEs the adapter refuses, and media that never binds (loopback).

A second SipStack plays a foreign client and sends crafted requests straight to
the adapter's SIP listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.chat.model import LegId
from bridge.chat.ports import IncomingInvitation, SessionAccepted, SessionEnded, SessionFailed
from bridge.config import Settings
from bridge.signalling import payload
from bridge.signalling.wiring import SignallingSide, start_signalling
from sip import sdp
from sip.message import Response, parse_message
from sip.msrp import MSRPStack
from sip.stack import SipStack
from tests.unit.test_signalling import A, B, Sink

OFFER_PASSIVE = sdp.serialize(
    sdp.msrp_offer(
        address="127.0.0.1",
        port=1,  # nothing listens there
        path=("msrp://127.0.0.1:1/dead;tcp",),
        accept_types=("message/cpim",),
        setup=sdp.Setup.PASSIVE,
        session_id="1",
    )
)


@pytest.fixture
async def world() -> AsyncIterator[tuple[SignallingSide, Sink]]:
    settings = Settings(sip_port=0, sip_transports=["udp"])
    running = await start_signalling(settings)
    running.signalling.bind_timeout = 1.0
    sink = Sink()
    sink.port = running
    running.signalling.bind(sink)
    try:
        yield running, sink
    finally:
        await running.close()


async def client(side: SignallingSide, contact_params: str = "") -> SipStack:
    stack = SipStack(
        port=0,
        transports=("udp",),
        outbound_proxy=f"sip:127.0.0.1:{side.sip.port}",
        contact_params=contact_params,
    )
    await stack.start()
    return stack


async def invite_status(
    side: SignallingSide, body: bytes, ctype: str, contact_params: str = ""
) -> int:
    stack = await client(side, contact_params)
    try:
        call = stack.invite(str(B), sender=str(A), body=body, content_type=ctype)
        return (await call.response()).status
    finally:
        await stack.stop()


async def test_refusals(world: tuple[SignallingSide, Sink]) -> None:
    side, sink = world
    offer = payload.offer("127.0.0.1", 4000, "msrp://127.0.0.1:4000/x;tcp")
    no_cpim = offer.replace(b"message/cpim ", b"")
    # a group invitation (Contact isfocus) is taken now (test_signalling_group); without
    # message/cpim it is refused like a 1-1 one
    assert await invite_status(side, no_cpim, "application/sdp", "isfocus") == 488
    assert await invite_status(side, b"hello", "text/plain") == 415
    audio = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    audio += b"m=audio 4000 RTP/AVP 0\r\n"
    assert await invite_status(side, audio, "application/sdp") == 488
    no_cpim = offer.replace(b"message/cpim ", b"")
    assert await invite_status(side, no_cpim, "application/sdp") == 488
    assert not sink.of(IncomingInvitation)


async def test_media_that_never_binds_fails_the_leg(world: tuple[SignallingSide, Sink]) -> None:
    side, sink = world
    stack = await client(side)
    try:
        call = stack.invite(str(B), sender=str(A), body=OFFER_PASSIVE)
        response = await call.response()
        assert response.status == 200  # accepted; we are active and connect to a dead port
        failed = await sink.wait_for(SessionFailed)
        assert failed.status == 0 and "MSRP" in failed.reason
        assert side.signalling.leg_count == 0
        assert call.session is not None
        await call.session.ended.wait()  # the bridge sent BYE
    finally:
        await stack.stop()


async def test_outgoing_invite_to_nobody_times_out_as_408() -> None:
    settings = Settings(
        sip_port=0, sip_transports=["udp"], sip_outbound_proxy="sip:127.0.0.1:9;transport=tcp"
    )
    running = await start_signalling(settings)
    sink = Sink()
    running.signalling.bind(sink)
    try:
        await running.signalling.start_session(LegId("l1"), A, B)
        failed = await sink.wait_for(SessionFailed)
        assert failed.status in (408, 503)  # connection refused: a local transport failure
        assert running.signalling.leg_count == 0
    finally:
        await running.close()


async def test_pager_errors(world: tuple[SignallingSide, Sink]) -> None:
    side, _sink = world
    stack = await client(side)
    try:
        unsupported = await stack.send_request(
            "MESSAGE", str(B), sender=str(A), body=b"x", content_type="image/png"
        )
        assert unsupported.status == 415 and "message/cpim" in (unsupported.get("Accept") or "")
        broken = await stack.send_request(
            "MESSAGE", str(B), sender=str(A), body=b"no blocks", content_type="message/cpim"
        )
        assert broken.status == 400
    finally:
        await stack.stop()


async def test_msrp_connection_loss_ends_the_session_with_bye(
    world: tuple[SignallingSide, Sink],
) -> None:
    side, sink = world
    peer = MSRPStack("127.0.0.1", 0)
    await peer.start()
    media = await peer.create_session(session_id="peer1", accept_types=("message/cpim",))
    offer = sdp.serialize(
        sdp.msrp_offer(
            address="127.0.0.1",
            port=peer.port,
            path=(media.path_attribute,),
            accept_types=("message/cpim",),
            session_id="2",
        )
    )
    stack = await client(side)
    try:
        call = stack.invite(str(B), sender=str(A), body=offer)
        assert (await call.response()).status == 200
        accepted = await sink.wait_for(SessionAccepted)
        await peer.close()  # the client's media vanishes
        ended = await sink.wait_for(SessionEnded)
        assert ended.leg == accepted.leg and "MSRP" in ended.reason
        assert call.session is not None
        await asyncio.wait_for(call.session.ended.wait(), 5)  # the bridge sent BYE
    finally:
        await stack.stop()


async def test_hostile_messages_over_one_tcp_connection_get_400() -> None:
    # issue 13 defects 4 and 5 on the wire: a CPIM body with a 5,000-digit Content-Length
    # (was 500) and two To headers (was no answer) get 400, and the connection stays open
    running = await start_signalling(Settings(sip_port=0, sip_transports=["tcp"]))
    running.signalling.bind(Sink())
    reader, writer = await asyncio.open_connection("127.0.0.1", running.sip.port)

    def request(
        call_id: str, body: bytes, to: bytes = b"To: <" + str(B).encode() + b">\r\n"
    ) -> bytes:
        return (
            b"MESSAGE " + str(B).encode() + b" SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK" + call_id.encode() + b"\r\n"
            b"From: <"
            + str(A).encode()
            + b">;tag=1\r\n"
            + to
            + b"Call-ID: "
            + call_id.encode()
            + b"\r\nCSeq: 1 MESSAGE\r\n"
            b"Content-Type: message/cpim\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )

    async def status() -> tuple[int, str]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        resp = parse_message(head, validate=False)
        assert isinstance(resp, Response)
        length = int(resp.get("Content-Length") or 0)
        if length:
            await reader.readexactly(length)
        return resp.status, resp.call_id

    cpim_body = b"From: <sip:a@b>\r\n\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nhi"
    two_to = b"To: <" + str(B).encode() + b">\r\nTo: <sip:b@h;x=\r\n"
    try:
        writer.write(request("w1", cpim_body))
        assert await status() == (400, "w1")
        writer.write(request("w2", b"hi", to=two_to))
        assert await status() == (400, "w2")
        writer.write(request("w3", cpim_body))  # the same connection still answers
        assert await status() == (400, "w3")
    finally:
        writer.close()
        await running.close()
