"""bridge.signalling over real SIP and MSRP stacks on loopback (the embedded default).

One bridge, two users: every request loops back to the bridge's own SIP
listener, MSRP flows between its own sessions. A recording sink plays the
chat service and answers invitations as each test asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from bridge.chat.model import Composing, ComposingState, Disposition, LegId, ReportKind
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingInvitation,
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
    ReportReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
    SignallingEvent,
)
from bridge.config import Settings
from bridge.ids import MessageId, UserUri
from bridge.signalling.legs import LegState
from bridge.signalling.wiring import SignallingSide, start_signalling
from sip import cpim

A = UserUri("tel:+15555550001")
B = UserUri("tel:+15555550002")
E = TypeVar("E")
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


class Sink:
    """Records events; ``on_invite`` decides what happens to an invitation."""

    def __init__(self) -> None:
        self.events: list[SignallingEvent] = []
        self.port: SignallingSide | None = None
        self.on_invite: Callable[[IncomingInvitation], str] = lambda inv: "accept"
        self.changed = asyncio.Event()

    async def handle_event(self, event: SignallingEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if isinstance(event, IncomingInvitation):
            action = self.on_invite(event)
            assert self.port is not None
            if action == "accept":
                await self.port.signalling.accept_session(event.leg)
            elif action == "reject":
                await self.port.signalling.reject_session(event.leg, 486)
            elif action == "refuse":
                raise EventRejected("no subscription", 480)
        if isinstance(event, MessageReceived) and event.message.text == "refuse me":
            raise EventRejected("nobody listens", 480)

    async def wait_for(self, kind: type[E], pred: Callable[[E], bool] = lambda e: True) -> E:
        async def look() -> E:
            while True:
                for event in self.events:
                    if isinstance(event, kind) and pred(event):
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(look(), 10)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def side() -> AsyncIterator[tuple[SignallingSide, Sink]]:
    settings = Settings(sip_port=0, sip_transports=["tcp"], chat_invite_timeout=5.0)
    running = await start_signalling(settings)
    sink = Sink()
    sink.port = running
    running.signalling.bind(sink)
    try:
        yield running, sink
    finally:
        await running.close()


def message(text: str, mid: str = "m1", **kw: object) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=MessageId(mid),
        user=A,
        peer=B,
        text=text,
        date_time=NOW,
        dispositions=frozenset({Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY}),
        **kw,  # type: ignore[arg-type]
    )


async def connect(side: SignallingSide, sink: Sink, first: OutgoingMessage | None = None) -> LegId:
    leg = LegId("leg-a")
    await side.signalling.start_session(leg, A, B, subject="hi", first=first)
    await sink.wait_for(SessionAccepted, lambda e: e.leg == leg)
    inv = await sink.wait_for(IncomingInvitation)
    assert isinstance(inv, IncomingInvitation)
    await sink.wait_for(SessionAccepted, lambda e: e.leg == inv.leg)
    return leg


async def test_session_with_first_message_reports_and_composing(
    side: tuple[SignallingSide, Sink],
) -> None:
    running, sink = side
    leg_a = await connect(running, sink, first=message("hello", "m0"))
    inv = sink.of(IncomingInvitation)[0]
    assert isinstance(inv, IncomingInvitation)
    assert (inv.user, inv.peer, inv.subject) == (B, A, "hi")
    assert inv.first_message is not None and inv.first_message.text == "hello"
    assert inv.first_message.message_id == "m0"
    assert inv.first_message.dispositions == {Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY}
    assert inv.ids.call_id and inv.ids.contribution_id and inv.ids.conversation_id
    accepted = [e for e in sink.of(SessionAccepted) if e.leg == leg_a]
    ids = accepted[0].ids
    assert ids is not None and ids.msrp_local_uri is not None
    assert ids.call_id == inv.ids.call_id and ids.contribution_id == inv.ids.contribution_id
    assert ids.msrp_local_uri.startswith("msrp://127.0.0.1:") and ids.msrp_remote_path
    first_result = await sink.wait_for(MessageSendResult, lambda e: e.message_id == "m0")
    assert first_result.ok

    await running.signalling.send_message(leg_a, message("héllo wörld", "m1"))
    got = await sink.wait_for(MessageReceived, lambda e: e.message.message_id == "m1")
    assert isinstance(got, MessageReceived) and got.leg == inv.leg and got.user == B
    assert got.message.text == "héllo wörld" and got.message.sender == A
    sent = await sink.wait_for(MessageSendResult, lambda e: e.message_id == "m1")
    assert sent.ok

    report = OutgoingReport(MessageId("m1"), B, A, ReportKind.DISPLAYED, NOW)
    await running.signalling.send_report(inv.leg, report)
    rep = await sink.wait_for(ReportReceived)
    assert isinstance(rep, ReportReceived)
    assert (rep.leg, rep.user, rep.peer, rep.message_id, rep.kind) == (
        leg_a,
        A,
        B,
        "m1",
        ReportKind.DISPLAYED,
    )

    await running.signalling.send_composing(
        inv.leg, B, Composing(ComposingState.ACTIVE, refresh=60)
    )
    comp = await sink.wait_for(ComposingReceived)
    assert isinstance(comp, ComposingReceived)
    assert comp.leg == leg_a and comp.composing.state is ComposingState.ACTIVE
    assert comp.composing.refresh == 60

    await running.signalling.end_session(leg_a)
    ended = await sink.wait_for(SessionEnded)
    assert ended.leg == inv.leg
    assert not [e for e in sink.of(SessionEnded) if e.leg == leg_a]
    with pytest.raises(SignallingError) as err:
        await running.signalling.send_message(leg_a, message("late", "m9"))
    assert err.value.status == 481


async def test_decline_is_session_failed_486(side: tuple[SignallingSide, Sink]) -> None:
    running, sink = side
    sink.on_invite = lambda inv: "reject"
    await running.signalling.start_session(LegId("leg-a"), A, B)
    failed = await sink.wait_for(SessionFailed)
    assert failed.status == 486
    assert running.signalling.leg_count == 0


async def test_no_subscription_is_480(side: tuple[SignallingSide, Sink]) -> None:
    running, sink = side
    sink.on_invite = lambda inv: "refuse"
    await running.signalling.start_session(LegId("leg-a"), A, B)
    failed = await sink.wait_for(SessionFailed)
    assert failed.status == 480


async def test_cancel_while_ringing(side: tuple[SignallingSide, Sink]) -> None:
    running, sink = side
    sink.on_invite = lambda inv: "wait"
    await running.signalling.start_session(LegId("leg-a"), A, B)
    inv = await sink.wait_for(IncomingInvitation)
    assert running.signalling.leg_state(inv.leg) is LegState.RINGING
    await running.signalling.cancel_session(LegId("leg-a"))
    cancelled = await sink.wait_for(SessionCancelled)
    assert cancelled.leg == inv.leg
    await asyncio.sleep(0.2)
    assert not sink.of(SessionFailed)  # our own CANCEL gives no event
    assert running.signalling.leg_count == 0


async def test_pager_message_report_and_refusal(side: tuple[SignallingSide, Sink]) -> None:
    running, sink = side
    await running.signalling.send_pager(message("by pager", "p1"))
    got = await sink.wait_for(MessageReceived)
    assert isinstance(got, MessageReceived) and got.leg is None
    assert (got.user, got.message.sender, got.message.text) == (B, A, "by pager")
    result = await sink.wait_for(MessageSendResult)
    assert result.ok and result.status == 200

    await running.signalling.send_report(
        None, OutgoingReport(MessageId("p1"), B, A, ReportKind.DELIVERED, NOW)
    )
    rep = await sink.wait_for(ReportReceived)
    assert isinstance(rep, ReportReceived) and rep.leg is None
    assert (rep.user, rep.peer, rep.kind) == (A, B, ReportKind.DELIVERED)

    await running.signalling.send_pager(message("refuse me", "p2"))
    refused = await sink.wait_for(MessageSendResult, lambda e: e.message_id == "p2")
    assert not refused.ok and refused.status == 480


async def test_unknown_legs(side: tuple[SignallingSide, Sink]) -> None:
    running, _sink = side
    await running.signalling.end_session(LegId("nope"))  # after a restart: no-op
    await running.signalling.cancel_session(LegId("nope"))
    with pytest.raises(SignallingError):
        await running.signalling.accept_session(LegId("nope"))
    with pytest.raises(SignallingError):
        await running.signalling.send_composing(LegId("nope"), A, Composing(ComposingState.IDLE))
    await running.signalling.start_session(LegId("dup"), A, B)
    with pytest.raises(SignallingError):
        await running.signalling.start_session(LegId("dup"), A, B)


async def test_peer_hangs_up_mid_session(side: tuple[SignallingSide, Sink]) -> None:
    running, sink = side
    leg_a = await connect(running, sink)
    inv = sink.of(IncomingInvitation)[0]
    await running.signalling.end_session(inv.leg)
    ended = await sink.wait_for(SessionEnded)
    assert ended.leg == leg_a
    assert cpim.CONTENT_TYPE == "message/cpim"


async def test_simple_im_profile_takes_the_sender_from_the_asserted_identity() -> None:
    settings = Settings(sip_port=0, sip_transports=["udp"], profile="SIMPLE-IM")
    running = await start_signalling(settings)
    sink = Sink()
    sink.port = running
    running.signalling.bind(sink)
    try:
        assert running.sip.user_agent == "IM-client/OMA1.0"
        assert running.sip.contact_params == "+g.oma.sip-im"
        leg = await connect(running, sink, first=message("anonymous CPIM", "s0"))
        inv = sink.of(IncomingInvitation)[0]
        assert inv.first_message is not None and inv.first_message.sender == A
        assert inv.ids.contribution_id and inv.ids.conversation_id is None
        await running.signalling.send_message(leg, message("second", "s1"))
        got = await sink.wait_for(MessageReceived, lambda e: e.message.message_id == "s1")
        assert got.message.sender == A and got.user == B
    finally:
        await running.close()
