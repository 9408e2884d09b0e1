"""The SIP side of the graceful shutdown: new INVITEs refused with 503 + Retry-After while
in-dialog BYEs and pager MESSAGEs still go through; ``settle`` waits for the BYEs (loopback)."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.chat.ports import IncomingInvitation, MessageReceived, SessionEnded
from bridge.signalling import payload
from bridge.signalling.wiring import SignallingSide
from sip import cpim
from sip.stack import SipStack
from tests.unit.test_signalling import A, B, Sink, connect, side  # noqa: F401


async def client(running: SignallingSide) -> SipStack:
    """A foreign client over TCP, the loopback bridge's transport."""
    stack = SipStack(
        port=0,
        transports=("tcp",),
        outbound_proxy=f"sip:127.0.0.1:{running.sip.port};transport=tcp",
    )
    await stack.start()
    return stack


async def test_drained_router_refuses_new_invites_but_not_dialogs_or_messages(
    side: tuple[SignallingSide, Sink],  # noqa: F811
) -> None:
    running, sink = side
    leg_a = await connect(running, sink)
    inv = sink.of(IncomingInvitation)[0]
    assert set(running.signalling.live_legs()) == {leg_a, inv.leg}
    assert running.router is not None
    running.router.drain(retry_after=9)

    stack = await client(running)
    try:
        offer = payload.offer("127.0.0.1", 4000, "msrp://127.0.0.1:4000/x;tcp")
        call = stack.invite(str(B), sender=str(A), body=offer, content_type="application/sdp")
        refused = await call.response()
        assert refused.status == 503
        assert refused.get("Retry-After") == "9"
        envelope = cpim.build_chat_message(
            sender=cpim.NameAddr(str(A)),
            recipient=cpim.NameAddr(str(B)),
            message_id="pager-during-drain",
            timestamp=datetime.now(UTC),
            body=b"still taken",
        )
        taken = await stack.send_request(
            "MESSAGE",
            str(B),
            sender=str(A),
            body=cpim.serialize(envelope),
            content_type=cpim.CONTENT_TYPE,
        )
        assert taken.status == 200
        await sink.wait_for(MessageReceived, lambda e: e.message.message_id == "pager-during-drain")
    finally:
        await stack.stop()

    # the established dialog still ends cleanly: BYE through, answered, the other leg told
    await running.signalling.end_session(leg_a)
    assert await running.signalling.settle(5.0) == 0
    await sink.wait_for(SessionEnded, lambda e: e.leg == inv.leg)
    assert running.signalling.live_legs() == []
