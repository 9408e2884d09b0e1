"""Fakes of ``bridge.chat.ports.SignallingPort``.

:class:`FakeSignalling` records every call (and can be told to fail one);
tests feed events to the service themselves. :class:`LoopbackSignalling`
plays the whole SIP/MSRP side between users of the same bridge, like the
embedded default does over real sockets: an INVITE from A becomes an
invitation for B, B's accept becomes A's ``SessionAccepted``, an MSRP SEND
becomes a ``MessageSendResult`` for the sender and a ``MessageReceived`` for
the peer, and so on. Events are delivered from tasks, never from inside the
port call (the real adapter is asynchronous too, and the service holds its
session lock while it calls the port); :meth:`FakeSignalling.settle` waits
until every event has been handled.

For group chat :class:`LoopbackSignalling` also plays the conference focus
(docs/group-chat.md "Wire contract"): ``start_group`` answers the creator at
once (``SessionAccepted`` with the conference URI) and dials every invitee out
(``IncomingGroupInvitation``); accepts, declines, leaves, REFER adds and
removes become ``ParticipantsChanged`` for the members whose leg is up (the
changed entry only, never the member's own); messages and isComposing are
relayed to every other connected member with the real sender, reports to the
original sender only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bridge.chat.model import Composing, Invitee, LegId, Participant, ParticipantStatus
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingGroupInvitation,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
    ParticipantsChanged,
    ReportReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
    SignallingEvent,
    SignallingEvents,
)
from bridge.ids import UserUri


@dataclass
class Call:
    """One recorded port call."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeSignalling:
    """Records every call; ``fail[name]`` makes that method raise once."""

    def __init__(self) -> None:
        self.sink: SignallingEvents | None = None
        self.calls: list[Call] = []
        self.fail: dict[str, SignallingError] = {}
        self.rejected: list[tuple[SignallingEvent, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, sink: SignallingEvents) -> None:
        self.sink = sink

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs))
        error = self.fail.pop(name, None)
        if error is not None:
            raise error

    def named(self, name: str) -> list[Call]:
        """The calls of one method, in order."""
        return [c for c in self.calls if c.name == name]

    def emit(self, event: SignallingEvent) -> None:
        """Hand ``event`` to the sink from a task (see the module docstring)."""
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: SignallingEvent) -> None:
        assert self.sink is not None
        try:
            await self.sink.handle_event(event)
        except EventRejected as exc:
            self.rejected.append((event, exc.status))
            await self.on_rejected(event, exc.status)

    async def on_rejected(self, event: SignallingEvent, status: int) -> None:
        """What the SIP side does with a refused request (nothing here)."""

    async def settle(self, core: Any = None, rounds: int = 50) -> None:
        """Wait until no event task (and no ``ChatCore`` background task) is running."""
        for _ in range(rounds):
            await asyncio.sleep(0)
            if self._tasks:
                await asyncio.gather(*list(self._tasks))
                continue
            if core is not None and core._tasks:
                await core.drain()
                continue
            await asyncio.sleep(0)
            if not self._tasks:
                return
        raise AssertionError("signalling did not settle")

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        self._record("start_session", leg, user, peer, subject=subject, first=first)

    async def accept_session(self, leg: LegId) -> None:
        self._record("accept_session", leg)

    async def reject_session(self, leg: LegId, status: int) -> None:
        self._record("reject_session", leg, status)

    async def cancel_session(self, leg: LegId) -> None:
        self._record("cancel_session", leg)

    async def end_session(self, leg: LegId) -> None:
        self._record("end_session", leg)

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        self._record("send_message", leg, message)

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        self._record("send_composing", leg, user, composing)

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        self._record("send_report", leg, report)

    async def send_pager(self, message: OutgoingMessage) -> None:
        self._record("send_pager", message)

    async def start_group(
        self,
        leg: LegId,
        user: UserUri,
        factory: str,
        invitees: tuple[Invitee, ...],
        *,
        subject: str | None = None,
    ) -> None:
        self._record("start_group", leg, user, factory, invitees, subject=subject)

    async def invite_participants(self, leg: LegId, invitees: tuple[Invitee, ...]) -> None:
        self._record("invite_participants", leg, invitees)

    async def remove_participant(self, leg: LegId, participant: UserUri) -> None:
        self._record("remove_participant", leg, participant)

    async def leave_group(self, leg: LegId) -> None:
        self._record("leave_group", leg)


def _incoming(message: OutgoingMessage) -> IncomingMessage:
    return IncomingMessage(
        message_id=message.message_id,
        sender=message.user,
        text=message.text,
        date_time=message.date_time,
        dispositions=message.dispositions,
        content_type=message.content_type,
    )


@dataclass
class Member:
    """One member of a loopback conference."""

    user: UserUri
    leg: LegId | None
    status: ParticipantStatus
    name: str | None = None
    chair: bool = False

    def entry(self) -> Participant:
        return Participant(self.user, self.status, self.name, self.chair)


@dataclass
class Conference:
    """A loopback conference: its URI, subject and members by address."""

    uri: str
    subject: str | None
    members: dict[UserUri, Member] = field(default_factory=dict)


class LoopbackSignalling(FakeSignalling):
    """Connects users of one bridge to each other, in memory (module docstring).

    ``answer_invites`` = False leaves outgoing INVITEs unanswered;
    ``refuse[peer] = status`` makes INVITEs to ``peer`` fail with ``status``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pair: dict[LegId, LegId] = {}
        self.owner: dict[LegId, UserUri] = {}
        self.first: dict[LegId, OutgoingMessage] = {}
        self.refuse: dict[UserUri, int] = {}
        self.answer_invites = True
        self.conferences: dict[str, Conference] = {}
        self.conf_of: dict[LegId, Conference] = {}
        self._dialled = 0

    # --- the focus (module docstring) -------------------------------------------------

    def _leg_member(self, leg: LegId) -> tuple[Conference, Member] | None:
        conf = self.conf_of.get(leg)
        if conf is None:
            return None
        for m in conf.members.values():
            if m.leg == leg:
                return conf, m
        return None

    def _broadcast(self, conf: Conference, *changed: Member) -> None:
        for m in conf.members.values():
            if m.leg is None or m.status is not ParticipantStatus.CONNECTED:
                continue
            entries = tuple(c.entry() for c in changed if c.user != m.user)
            if entries:
                self.emit(ParticipantsChanged(m.leg, entries))

    def _dial_out(self, conf: Conference, invitee: Invitee, inviter: UserUri) -> Member:
        self._dialled += 1
        leg = LegId(f"gin-{self._dialled}")
        member = Member(invitee.address, leg, ParticipantStatus.INVITED, invitee.name)
        conf.members[invitee.address] = member
        self.conf_of[leg] = conf
        self.owner[leg] = invitee.address
        if invitee.address in self.refuse:
            member.status, member.leg = ParticipantStatus.FAILED, None
            return member
        people = tuple(m.entry() for m in conf.members.values() if m.user != invitee.address)
        self.emit(
            IncomingGroupInvitation(
                leg=leg,
                user=invitee.address,
                conference=conf.uri,
                inviter=inviter,
                inviter_name=conf.members[inviter].name if inviter in conf.members else None,
                subject=conf.subject,
                participants=people,
            )
        )
        return member

    async def start_group(
        self,
        leg: LegId,
        user: UserUri,
        factory: str,
        invitees: tuple[Invitee, ...],
        *,
        subject: str | None = None,
    ) -> None:
        await super().start_group(leg, user, factory, invitees, subject=subject)
        if not self.answer_invites:
            return
        conf = Conference(f"sip:conf-{len(self.conferences) + 1}@loopback.test", subject)
        self.conferences[conf.uri] = conf
        creator = Member(user, leg, ParticipantStatus.CONNECTED, None, chair=True)
        conf.members[user] = creator
        self.conf_of[leg] = conf
        self.owner[leg] = user
        self.emit(SessionAccepted(leg, conference=conf.uri))
        for invitee in invitees:  # the whole list first: each invitation carries it
            conf.members[invitee.address] = Member(
                invitee.address, None, ParticipantStatus.INVITED, invitee.name
            )
        for invitee in invitees:
            self._dial_out(conf, invitee, user)
        others = tuple(m.entry() for m in conf.members.values() if m.user != user)
        self.emit(ParticipantsChanged(leg, others, full=True))

    def _group_answer(self, leg: LegId, status: ParticipantStatus) -> bool:
        found = self._leg_member(leg)
        if found is None:
            return False
        conf, member = found
        member.status = status
        if status is ParticipantStatus.CONNECTED:
            self.emit(SessionAccepted(leg, conference=conf.uri))
            others = tuple(m.entry() for m in conf.members.values() if m.user != member.user)
            self.emit(ParticipantsChanged(leg, others, full=True))
        else:
            member.leg = None
        self._broadcast(conf, member)
        return True

    async def invite_participants(self, leg: LegId, invitees: tuple[Invitee, ...]) -> None:
        await super().invite_participants(leg, invitees)
        conf, referrer = self._leg_member(leg) or (None, None)
        if conf is None or referrer is None:
            raise SignallingError("no such group leg", 481)
        added = []
        for invitee in invitees:
            known = conf.members.get(invitee.address)
            if known is not None and known.status in (
                ParticipantStatus.INVITED,
                ParticipantStatus.CONNECTED,
            ):
                continue
            added.append(self._dial_out(conf, invitee, referrer.user))
        self._broadcast(conf, *added)

    async def remove_participant(self, leg: LegId, participant: UserUri) -> None:
        await super().remove_participant(leg, participant)
        conf, chair = self._leg_member(leg) or (None, None)
        if conf is None or chair is None:
            raise SignallingError("no such group leg", 481)
        member = conf.members.get(participant)
        if not chair.chair or member is None:
            self.emit(ParticipantsChanged(leg, ()))  # REFER refused (403): nobody changed
            return
        if member.leg is not None:
            if member.status is ParticipantStatus.CONNECTED:
                self.emit(SessionEnded(member.leg, "SIP;cause=200"))
            else:
                self.emit(SessionCancelled(member.leg))
        member.status, member.leg = ParticipantStatus.DISCONNECTED, None
        self._broadcast(conf, member)

    async def leave_group(self, leg: LegId) -> None:
        await super().leave_group(leg)
        found = self._leg_member(leg)
        if found is None:
            return
        conf, member = found
        member.status, member.leg = ParticipantStatus.DISCONNECTED, None
        self._broadcast(conf, member)
        self._maybe_end(conf)

    def _maybe_end(self, conf: Conference) -> None:
        """No member connected and none invited: the conference is over (BYE cause=410)."""
        live = [
            m
            for m in conf.members.values()
            if m.status in (ParticipantStatus.CONNECTED, ParticipantStatus.INVITED)
        ]
        if any(m.status is ParticipantStatus.INVITED for m in live) or len(live) > 1:
            return
        for m in live:
            if m.leg is not None:
                self.emit(SessionEnded(m.leg, "SIP;cause=410;text=Gone"))
                m.status, m.leg = ParticipantStatus.DISCONNECTED, None

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        await super().start_session(leg, user, peer, subject=subject, first=first)
        if peer in self.refuse:
            self.emit(SessionFailed(leg, self.refuse[peer], "refused"))
            return
        if not self.answer_invites:
            return
        other = LegId("in-" + leg)
        self.pair[leg], self.pair[other] = other, leg
        self.owner[leg], self.owner[other] = user, peer
        if first is not None:
            self.first[leg] = first
        self.emit(
            IncomingInvitation(
                leg=other,
                user=peer,
                peer=user,
                subject=subject,
                first_message=None if first is None else _incoming(first),
            )
        )

    async def on_rejected(self, event: SignallingEvent, status: int) -> None:
        if isinstance(event, IncomingInvitation):
            await self._fail_invite(event.leg, status)
        elif isinstance(event, MessageReceived) and event.leg is None:
            pass  # the pager sender already had its result

    async def _fail_invite(self, incoming: LegId, status: int) -> None:
        outgoing = self.pair.get(incoming)
        if outgoing is None:
            return
        self.first.pop(outgoing, None)
        self.emit(SessionFailed(outgoing, status, "rejected"))

    async def accept_session(self, leg: LegId) -> None:
        await super().accept_session(leg)
        if self._group_answer(leg, ParticipantStatus.CONNECTED):
            return
        outgoing = self.pair[leg]
        self.emit(SessionAccepted(leg))
        self.emit(SessionAccepted(outgoing))
        first = self.first.pop(outgoing, None)
        if first is not None:
            self.emit(MessageSendResult(first.user, first.message_id, True))

    async def reject_session(self, leg: LegId, status: int) -> None:
        await super().reject_session(leg, status)
        declined = ParticipantStatus.DECLINED if status == 603 else ParticipantStatus.FAILED
        found = self._leg_member(leg)
        if found is not None:
            self._group_answer(leg, declined)
            self._maybe_end(found[0])
            return
        await self._fail_invite(leg, status)

    async def cancel_session(self, leg: LegId) -> None:
        await super().cancel_session(leg)
        if leg in self.pair:
            self.emit(SessionCancelled(self.pair[leg]))

    async def end_session(self, leg: LegId) -> None:
        await super().end_session(leg)
        if leg in self.pair:
            self.emit(SessionEnded(self.pair[leg], "BYE"))

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        await super().send_message(leg, message)
        self.emit(MessageSendResult(message.user, message.message_id, True))
        found = self._leg_member(leg)
        if found is None:
            self.emit(MessageReceived(self.pair[leg], message.peer, _incoming(message)))
            return
        for m in self._others(*found):
            assert m.leg is not None
            self.emit(MessageReceived(m.leg, m.user, _incoming(message)))

    def _others(self, conf: Conference, sender: Member) -> list[Member]:
        return [
            m
            for m in conf.members.values()
            if m.user != sender.user
            and m.leg is not None
            and m.status is ParticipantStatus.CONNECTED
        ]

    async def send_pager(self, message: OutgoingMessage) -> None:
        await super().send_pager(message)
        self.emit(MessageSendResult(message.user, message.message_id, True))
        self.emit(MessageReceived(None, message.peer, _incoming(message)))

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        await super().send_composing(leg, user, composing)
        found = self._leg_member(leg)
        if found is not None:
            for m in self._others(*found):
                assert m.leg is not None
                self.emit(ComposingReceived(m.leg, m.user, user, composing))
            return
        self.emit(ComposingReceived(self.pair[leg], self.owner[self.pair[leg]], user, composing))

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        await super().send_report(leg, report)
        found = None if leg is None else self._leg_member(leg)
        if found is not None:  # to the original sender only (RFC 5438 §7.1.1.3)
            sender = found[0].members.get(report.peer)
            back = None if sender is None else sender.leg
            self.emit(
                ReportReceived(back, report.peer, report.user, report.message_id, report.kind)
            )
            return
        back = None if leg is None else self.pair[leg]
        self.emit(ReportReceived(back, report.peer, report.user, report.message_id, report.kind))
