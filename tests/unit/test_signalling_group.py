"""bridge.signalling group legs against a focus stand-in, over real SIP and MSRP on loopback.

The stand-in (:class:`Focus`) is built from ``sip/`` only: a SipStack whose
Contact carries ``isfocus`` and an MSRPStack. It answers the factory INVITE,
takes SUBSCRIBE / REFER / BYE, NOTIFYs what each test asks, relays nothing by
itself (the test plays the other members on its MSRP session) and dials out to
the bridge's users. The bridge's outbound proxy is the stand-in, so every
request the bridge sends reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from bridge.chat.model import (
    Composing,
    ComposingState,
    Invitee,
    LegId,
    Participant,
    ParticipantStatus,
    ReportKind,
)
from bridge.chat.ports import (
    ComposingReceived,
    IncomingGroupInvitation,
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
    ParticipantsChanged,
    ReportReceived,
    SessionAccepted,
    SessionEnded,
    SessionFailed,
)
from bridge.config import Settings
from bridge.ids import MessageId, UserUri
from bridge.signalling import payload
from bridge.signalling.conference import ConferenceWatch
from bridge.signalling.wiring import SignallingSide, start_signalling
from sip import conference, cpim, imdn, iscomposing, multipart, resource_lists, sdp
from sip.conference import ConferenceInfo, ElementState, Endpoint, EndpointStatus, User
from sip.message import Request
from sip.msrp import MSRPSession, MSRPStack
from sip.msrp.events import MessageReceived as MSRPReceived
from sip.stack import SipStack
from sip.subscription import ServerSubscription
from sip.usage import IncomingInvite, IncomingRequest, IncomingSubscribe, InviteSession
from tests.unit.test_signalling import Sink

A = UserUri("tel:+15555550001")
B = UserUri("tel:+15555550002")
C = UserUri("tel:+15555550003")
D = UserUri("tel:+15555550004")
FACTORY = "sip:conference-factory@ims.test"
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


class Focus:
    """A minimal conference focus from sip/ only (docs/group-chat.md wire contract)."""

    def __init__(self) -> None:
        self.sip = SipStack(port=0, transports=("udp",), contact_params="isfocus")
        self.msrp = MSRPStack("127.0.0.1", 0)
        self.invites: list[Request] = []
        self.sessions: list[InviteSession] = []
        self.media: list[MSRPSession] = []
        self.subs: list[ServerSubscription] = []
        self.subscribes: list[Request] = []
        self.refers: list[Request] = []
        self.refer_status = 202
        self.changed = asyncio.Event()

    async def start(self) -> None:
        await self.sip.start()
        await self.msrp.start()
        self.sip.on_request("INVITE", self._on_invite)
        self.sip.on_request("SUBSCRIBE", self._on_subscribe)

    async def stop(self) -> None:
        await self.msrp.close()
        await self.sip.stop()

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip.port}"

    def _refer(self, incoming: IncomingRequest) -> None:
        self.refers.append(incoming.request)
        self.changed.set()
        incoming.respond(self.refer_status)

    async def _on_invite(self, invite: IncomingInvite) -> None:
        self.invites.append(invite.request)
        offer = payload.split_invite_body(invite.request.body, invite.request.get("Content-Type"))
        media = await self.msrp.create_session(accept_types=("message/cpim",))
        answer = payload.answer(
            offer.description, "127.0.0.1", self.msrp.port, media.path_attribute
        )
        session = await invite.accept(answer, sdp.CONTENT_TYPE, handlers={"REFER": self._refer})
        self.sessions.append(session)
        self.media.append(media)
        await media.start(" ".join(offer.media.path), True, timeout=5)
        self.changed.set()

    def _on_subscribe(self, incoming: IncomingSubscribe) -> None:
        self.subscribes.append(incoming.request)
        self.subs.append(incoming.accept())
        self.changed.set()

    async def wait(self, what: str, count: int = 1) -> None:
        async def look() -> None:
            while len(getattr(self, what)) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(look(), 10)

    async def notify(self, doc: ConferenceInfo, sub: int = -1) -> None:
        response = await self.subs[sub].notify(conference.serialize(doc), conference.CONTENT_TYPE)
        assert response.status == 200

    async def dial_out(self, user: str, port: int, members: list[str]) -> InviteSession | int:
        """INVITE ``user`` at the bridge (port) as a focus: SDP offer + the member list."""
        media = await self.msrp.create_session(accept_types=("message/cpim",))
        offer = payload.offer("127.0.0.1", self.msrp.port, media.path_attribute)
        entries = tuple(resource_lists.Entry(m) for m in members)
        rl = resource_lists.serialize(
            resource_lists.ResourceLists((resource_lists.ResourceList(entries),))
        )
        parts = (
            multipart.Part.build(sdp.CONTENT_TYPE, offer),
            multipart.Part.build(
                resource_lists.CONTENT_TYPE, rl, disposition="recipient-list-history"
            ),
        )
        body = multipart.Multipart("b-focus", parts)
        call = self.sip.invite(
            f"sip:{user.removeprefix('tel:')}@127.0.0.1:{port}",
            sender="sip:conf-1@127.0.0.1",
            body=multipart.serialize(body),
            content_type=body.content_type,
            headers=[
                ("Referred-By", f'"Alice" <{A}>'),
                ("Subject", "the group"),
                ("Contribution-ID", "contrib-1"),
            ],
        )
        response = await call.response()
        if not response.is_success:
            return response.status
        assert call.session is not None
        answered = sdp.msrp_media(sdp.parse(response.body))
        self.media.append(media)
        self.sessions.append(call.session)
        await media.start(" ".join(answered.path), False, timeout=5)
        return call.session


def user(entity: str, status: EndpointStatus | None, **kw: object) -> User:
    endpoint = Endpoint(entity=entity, status=status)
    return User(entity=entity, endpoints=(endpoint,) if status else (), **kw)  # type: ignore[arg-type]


def info(version: int, *users: User, full: bool = False) -> ConferenceInfo:
    return ConferenceInfo(
        entity="sip:conf-1@127.0.0.1",
        state=ElementState.FULL if full else ElementState.PARTIAL,
        version=version,
        users=users,
    )


async def received(media: MSRPSession) -> cpim.CPIMMessage:
    while True:
        event = await media.receive(timeout=5)
        if isinstance(event, MSRPReceived) and event.body:
            return cpim.parse(event.body)


@pytest.fixture
async def world() -> AsyncIterator[tuple[SignallingSide, Sink, Focus]]:
    focus = Focus()
    await focus.start()
    settings = Settings(
        sip_port=0, sip_transports=["udp"], sip_outbound_proxy=focus.uri, chat_invite_timeout=5.0
    )
    running = await start_signalling(settings)
    sink = Sink()
    sink.port = running
    running.signalling.bind(sink)
    try:
        yield running, sink, focus
    finally:
        await running.close()
        await focus.stop()


async def create(side: SignallingSide, sink: Sink, focus: Focus) -> tuple[LegId, str]:
    leg = LegId("leg-g")
    invitees = (Invitee(B, "Bob"), Invitee(C))
    await side.signalling.start_group(leg, A, FACTORY, invitees, subject="lunch")
    accepted = await sink.wait_for(SessionAccepted, lambda e: e.leg == leg)
    assert accepted.conference is not None
    await focus.wait("subs")
    return leg, accepted.conference


async def test_create_subscribe_notify_message_refer_leave(
    world: tuple[SignallingSide, Sink, Focus],
) -> None:
    side, sink, focus = world
    leg, conf = await create(side, sink, focus)
    invite = focus.invites[0]
    assert invite.uri.user == "conference-factory"  # type: ignore[union-attr]
    assert invite.get("Require") == "recipient-list-invite"
    assert invite.get("Subject") == "lunch" and invite.get("Contribution-ID")
    parts = multipart.parse(invite.body, invite.get("Content-Type") or "")
    listed = parts.find(resource_lists.CONTENT_TYPE)
    assert listed is not None and listed.disposition == "recipient-list"
    entries = resource_lists.parse(listed.body).entries()
    assert [(e.uri, e.display_name, e.copy_control) for e in entries] == [
        (B, "Bob", resource_lists.CopyControl.TO),
        (C, None, resource_lists.CopyControl.TO),
    ]
    assert conf == f"sip:conference-factory@127.0.0.1:{focus.sip.port}"  # the isfocus Contact
    accepted = sink.of(SessionAccepted)[0]
    assert accepted.ids is not None and accepted.ids.remote_target is not None
    assert accepted.ids.remote_target.startswith(conf) and accepted.ids.contribution_id
    sub = focus.subscribes[0]
    assert sub.get("Event") == "conference"
    assert sub.get("Accept") == conference.CONTENT_TYPE

    # full state: the user's own entry is left out, the chairman is the originator
    await focus.notify(
        info(
            1,
            user(A, EndpointStatus.CONNECTED, roles=("chairman",)),
            user(B, EndpointStatus.DIALING_OUT, display_text="Bob"),
            user(C, EndpointStatus.DIALING_OUT),
            full=True,
        )
    )
    first = await sink.wait_for(ParticipantsChanged)
    assert first.full and {p.address: p.status for p in first.participants} == {
        B: ParticipantStatus.INVITED,
        C: ParticipantStatus.INVITED,
    }
    # partial: only what changed
    await focus.notify(info(2, user(B, EndpointStatus.CONNECTED, state=ElementState.PARTIAL)))
    second = await sink.wait_for(ParticipantsChanged, lambda e: e is not first)
    assert second.participants == (Participant(B, ParticipantStatus.CONNECTED, "Bob"),)
    assert not second.full

    # messages: CPIM From = the user, To = the conference; inbound sender = CPIM From
    media = focus.media[0]
    out = OutgoingMessage(MessageId("g1"), A, UserUri(conf), "hello all", NOW)
    await side.signalling.send_message(leg, out)
    got = await received(media)
    assert (got.sender.uri, got.to[0].uri) == (A, conf)  # type: ignore[union-attr]
    assert (await sink.wait_for(MessageSendResult)).ok
    await side.signalling.send_composing(leg, A, Composing(ComposingState.ACTIVE))
    composing = await received(media)
    assert composing.media_type == iscomposing.CONTENT_TYPE
    assert composing.sender is not None and composing.sender.uri == A
    relayed = cpim.build_chat_message(
        sender=cpim.NameAddr(f"sip:{B.removeprefix('tel:')}@ims.test;user=phone", "Bob"),
        recipient=cpim.NameAddr(conf),
        message_id="from-b",
        timestamp=NOW,
        body=b"hi from bob",
    )
    await media.send("message/cpim", cpim.serialize(relayed))
    msg = await sink.wait_for(MessageReceived)
    assert (msg.message.sender, msg.message.sender_name, msg.message.text) == (
        B,
        "Bob",
        "hi from bob",
    )
    typing = cpim.build_iscomposing_message(
        sender=cpim.NameAddr(str(C)),
        recipient=cpim.NameAddr(conf),
        timestamp=NOW,
        iscomposing_xml=payload.composing(Composing(ComposingState.ACTIVE)),
    )
    await media.send("message/cpim", cpim.serialize(typing))
    assert (await sink.wait_for(ComposingReceived)).peer == C
    delivered = cpim.build_imdn_message(
        sender=cpim.NameAddr(str(B)),
        recipient=cpim.NameAddr(str(A)),
        message_id="r1",
        timestamp=NOW,
        imdn_xml=imdn.serialize(
            imdn.build_imdn(
                message_id="g1",
                original_datetime=NOW,
                notification=imdn.NotificationType.DELIVERY,
                status=imdn.Status.DELIVERED,
            )
        ),
    )
    await media.send("message/cpim", cpim.serialize(delivered))
    report = await sink.wait_for(ReportReceived)
    assert (report.peer, report.message_id, report.kind) == (B, "g1", ReportKind.DELIVERED)
    # our report goes to the original sender (CPIM To), through the focus
    await side.signalling.send_report(
        leg, OutgoingReport(MessageId("from-b"), A, B, ReportKind.DISPLAYED, NOW)
    )
    ours = await received(media)
    assert ours.is_imdn and ours.to[0].uri == B

    # add (REFER Refer-To <uri>) and remove (method=BYE); a refused one is Failed
    await side.signalling.invite_participants(leg, (Invitee(D, "Dan"),))
    added = await sink.wait_for(
        ParticipantsChanged,
        lambda e: e.participants[:1] == (Participant(D, ParticipantStatus.INVITED, "Dan"),),
    )
    assert added is not None
    refer = focus.refers[0]
    assert refer.get("Refer-To") == f"<{D}>" and refer.get("Refer-Sub") == "false"
    assert refer.get("Referred-By") is not None and A.removeprefix("tel:") in (
        refer.get("Referred-By") or ""
    )
    await side.signalling.remove_participant(leg, C)
    await focus.wait("refers", 2)
    assert focus.refers[1].get("Refer-To") == f"<{C};method=BYE>"
    focus.refer_status = 403
    await side.signalling.invite_participants(leg, (Invitee(UserUri("tel:+15555550009")),))
    failed = await sink.wait_for(
        ParticipantsChanged,
        lambda e: any(p.status is ParticipantStatus.FAILED for p in e.participants),
    )
    assert failed.participants[0].address == "tel:+15555550009"

    # leave: BYE with Reason cause=200, un-SUBSCRIBE; no event
    events = len(sink.events)
    await side.signalling.leave_group(leg)
    session = focus.sessions[0]
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.bye_reason == 'SIP;cause=200;text="Call completed"'
    await focus.wait("subscribes", 1)
    await asyncio.wait_for(focus.subs[0].terminated.wait(), 5)
    await asyncio.sleep(0.05)
    assert len(sink.events) == events and side.signalling.leg_count == 0


async def test_version_gap_and_terminated_resubscribe(
    world: tuple[SignallingSide, Sink, Focus],
) -> None:
    side, sink, focus = world
    leg, _ = await create(side, sink, focus)
    await focus.notify(info(1, user(B, EndpointStatus.DIALING_OUT), full=True))
    await sink.wait_for(ParticipantsChanged)
    await focus.notify(info(3, user(B, EndpointStatus.CONNECTED)))  # a gap: version 2 lost
    await focus.wait("subs", 2)  # a new SUBSCRIBE
    assert len(sink.of(ParticipantsChanged)) == 1  # the gapped document was not applied
    # the new subscription's full state: only B's change is reported
    await focus.notify(
        info(1, user(B, EndpointStatus.CONNECTED), user(C, EndpointStatus.DIALING_OUT), full=True)
    )
    while len(sink.of(ParticipantsChanged)) < 2:
        await asyncio.wait_for(sink.changed.wait(), 5)
        sink.changed.clear()
    changed = sink.of(ParticipantsChanged)[1]
    assert {p.address: p.status for p in changed.participants} == {
        B: ParticipantStatus.CONNECTED,
        C: ParticipantStatus.INVITED,
    }
    # the focus ends the subscription (not noresource): the bridge subscribes again
    await focus.subs[-1].terminate("deactivated")
    await focus.wait("subs", 3)
    # a BYE from the focus ends the leg with its Reason
    await focus.sessions[0].bye([("Reason", 'SIP;cause=410;text="Gone"')])
    ended = await sink.wait_for(SessionEnded)
    assert ended.leg == leg and "cause=410" in ended.reason


async def test_invited_by_a_focus_accept(world: tuple[SignallingSide, Sink, Focus]) -> None:
    side, sink, focus = world
    dial = asyncio.ensure_future(focus.dial_out(B, side.sip.port, [str(A), str(B), str(C)]))
    inv = await sink.wait_for(IncomingGroupInvitation)
    assert inv.user == B and inv.inviter == A and inv.inviter_name == "Alice"
    assert inv.conference.startswith("sip:conf-1@127.0.0.1:") and ";" not in inv.conference
    assert inv.subject == "the group" and inv.ids.contribution_id == "contrib-1"
    assert [(p.address, p.status) for p in inv.participants] == [
        (A, ParticipantStatus.INVITED),
        (C, ParticipantStatus.INVITED),
    ]
    await side.signalling.accept_session(inv.leg)
    session = await asyncio.wait_for(dial, 10)
    assert isinstance(session, InviteSession)
    accepted = await sink.wait_for(SessionAccepted)
    assert accepted.conference == inv.conference
    await focus.wait("subs")
    assert focus.subscribes[0].uri.user == "conf-1"  # type: ignore[union-attr]
    out = OutgoingMessage(MessageId("b1"), B, UserUri(inv.conference), "hello", NOW)
    await side.signalling.send_message(inv.leg, out)
    got = await received(focus.media[-1])
    assert got.sender is not None and got.sender.uri == B


async def test_invited_by_a_focus_decline_603(world: tuple[SignallingSide, Sink, Focus]) -> None:
    side, sink, focus = world
    dial = asyncio.ensure_future(focus.dial_out(C, side.sip.port, [str(A), str(C)]))
    inv = await sink.wait_for(IncomingGroupInvitation)
    await side.signalling.reject_session(inv.leg, 603)
    assert await asyncio.wait_for(dial, 10) == 603
    assert side.signalling.leg_count == 0


async def test_refused_subscribe_is_retried_and_the_leg_stays_up(
    world: tuple[SignallingSide, Sink, Focus], monkeypatch: pytest.MonkeyPatch
) -> None:
    side, sink, focus = world
    monkeypatch.setattr("bridge.signalling.conference.RETRY_FIRST", 0.05)
    refused: list[Request] = []

    def refuse_once(incoming: IncomingSubscribe) -> None:
        if not refused:
            refused.append(incoming.request)
            incoming.reject(403)
            return
        focus._on_subscribe(incoming)

    focus.sip.on_request("SUBSCRIBE", refuse_once)
    leg, _ = await create(side, sink, focus)
    assert len(refused) == 1 and len(focus.subs) == 1
    assert not sink.of(SessionEnded) and not sink.of(SessionFailed)
    watch = side.signalling._legs[leg].watch
    assert isinstance(watch, ConferenceWatch)
    for _ in range(100):
        if watch.subscribes:
            break
        await asyncio.sleep(0.01)
    assert watch.subscribes == 1


async def test_factory_refusal_is_session_failed(world: tuple[SignallingSide, Sink, Focus]) -> None:
    side, sink, focus = world

    def busy(invite: IncomingInvite) -> None:
        invite.reject(403, [("Warning", '399 focus "Too many participants"')])

    focus.sip.on_request("INVITE", busy)
    await side.signalling.start_group(LegId("leg-x"), A, FACTORY, (Invitee(B),))
    failed = await sink.wait_for(SessionFailed)
    assert (failed.leg, failed.status) == ("leg-x", 403)


class FakeFocus:
    """A focus for the router: owns Request-URIs whose user starts with ``conf-``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def owns(self, request: Request) -> bool:
        return str(request.uri).startswith("sip:conf-")

    async def on_invite(self, invite: IncomingInvite) -> None:
        self.seen.append("INVITE")
        invite.reject(488)

    async def on_subscribe(self, subscribe: IncomingSubscribe) -> None:
        self.seen.append("SUBSCRIBE")
        subscribe.reject(489)

    async def on_refer(self, refer: IncomingRequest) -> None:
        self.seen.append("REFER")
        refer.respond(403)


async def test_router_sends_what_the_focus_owns_to_the_focus() -> None:
    focus = FakeFocus()
    settings = Settings(sip_port=0, sip_transports=["udp"])
    side = await start_signalling(settings, focus_factory=lambda sip, msrp: focus)
    client = SipStack(port=0, transports=("udp",))
    await client.start()
    here = f"127.0.0.1:{side.sip.port}"
    try:
        call = client.invite(f"sip:conf-1@{here}", sender=str(A), body=b"", content_type=None)
        assert (await call.response()).status == 488
        sub = await client.send_request(
            "SUBSCRIBE", f"sip:conf-1@{here}", sender=str(A), headers=[("Event", "conference")]
        )
        assert sub.status == 489
        other = await client.send_request(
            "SUBSCRIBE",
            f"sip:+15555550002@{here}",
            sender=str(A),
            headers=[("Event", "conference")],
        )
        assert other.status == 480  # not the focus's, and the adapter takes no SUBSCRIBE
        refer = await client.send_request(
            "REFER", f"sip:conf-1@{here}", sender=str(A), headers=[("Refer-To", f"<{B}>")]
        )
        assert refer.status == 403
        assert focus.seen == ["INVITE", "SUBSCRIBE", "REFER"]
        assert side.focus is focus and side.router is not None
    finally:
        await client.stop()
        await side.close()
