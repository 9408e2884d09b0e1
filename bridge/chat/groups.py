"""The group chat use cases and the group side of the inbound events (oma-chat-api.md §6.6, §6.7).

:class:`GroupChat` is composed with the shared runtime (a ``ChatCore``: units,
transitions, locks, timers, sending) rather than derived from it; the REST
adapter calls its operations and ``bridge.chat.events.SignallingRouter``
hands it the events of group legs. One user's group session is a
``ChatSession`` of kind GROUP (machine: ``bridge.chat.group``); its members
are ``Participant`` rows; its messages are ordinary ``StoredMessage`` rows
with ``rest_session`` = the group sessionId, whose status machine, reports
and "delivered" IMDN on notification delivery are those of 1-1 chat.

Choices written down here:

* The user's own entry is stored with the members, but its status is always
  read from the participation state (``group.REST_STATUS``); the focus never
  reports the subscriber's own entry (``ParticipantsChanged``).
* Create: the creator is stored as originator; the invitees ``Invited``.
  More than ``chat_group_max_size`` members, the creator included → 403
  POL0003. An INVITE to the factory left unanswered for
  ``chat_invite_timeout`` is CANCELled and the group Fails.
* DELETE of the group or of one's own participant: decline (603) while
  invited, CANCEL while the creator's INVITE has no answer, leave (BYE
  cause=200) once accepted. A second DELETE answers 409 (the machine).
* Add: only a connected member adds (409 before). The user's own address
  and members already ``Invited`` or ``Connected`` are skipped (the focus
  answers such a REFER 202 and changes nothing, docs/group-chat.md "Add");
  a member who left, declined or failed is invited again. The live members
  plus the new ones may not exceed ``chat_group_max_size`` (403 POL0003).
  Nothing new: 201 and no REFER.
* Remove: one's own address is a leave; another member only by the creator
  (403 POL0001 otherwise, the focus would refuse it too: docs/group-chat.md
  "Remove"); an address not in the group → 404. The member's new status
  arrives from the focus (``ParticipantsChanged``).
* Promote (R8): a new group with the 1-1 peer and the new participants
  (the adapter mints a new Contribution-ID, mapping R18). A confirmed 1-1
  session must be connected (409 otherwise) and is ended *at once* (BYE)
  after the group INVITE is handed to the stack, so the two conversations
  never run side by side; if the group then fails the app gets ``Failed``
  and may open a new 1-1. From ``adhoc`` nothing is ended: the implicit
  session closes when idle.
* Messages: queued while JOINING/ACCEPTING and sent on MEDIA_UP; 409 once
  the participation is over or before the invitation is accepted.
  isComposing is dropped unless connected. A received group message is
  stored with ``peer`` = its real sender, so reports go back to the sender
  through the focus (RFC 5438 §7.1.1.3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, Protocol

from bridge.chat import delivery, group, group_notifications, notifications
from bridge.chat.core import ChatCore, confirmed_key, is_connected, is_terminal, message_key
from bridge.chat.delivery import IncomingEvent, IncomingStatus, OutgoingEvent, OutgoingStatus
from bridge.chat.group import GroupEvent as V
from bridge.chat.group import GroupState as G
from bridge.chat.model import (
    ChatSession,
    Composing,
    Direction,
    Invitee,
    LegId,
    NewGroup,
    OutgoingText,
    Participant,
    ParticipantStatus,
    RestStatus,
    SessionKind,
    StoredMessage,
    dispositions_for,
    evolve,
    new_group_id,
    new_leg_id,
    new_message_id,
)
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingGroupInvitation,
    MessageReceived,
    ParticipantsChanged,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
)
from bridge.errors import Conflict, NotFound, PolicyViolation
from bridge.ids import UserUri

log = logging.getLogger(__name__)

NO_SUBSCRIPTION = 480
"""SIP status for an invitation toward a user nobody listens for (mapping §2.1)."""
NO_SESSION = 481
"""Status for traffic on a leg the bridge does not know."""
Coro = Callable[[], Coroutine[Any, Any, None]]
LIVE_MEMBER = frozenset({ParticipantStatus.INVITED, ParticipantStatus.CONNECTED})
"""Statuses of a member who counts toward the group size and is not invited again."""


class OneToOne(Protocol):
    """What promotion asks of the 1-1 side (``bridge.chat.service.ChatService``)."""

    async def get_session(self, user: UserUri, other: UserUri, session_id: str) -> ChatSession:
        """``user``'s confirmed session with ``other`` (NotFound otherwise)."""
        ...

    async def end_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """End the confirmed session (BYE)."""
        ...


class GroupChat:
    """Group chat use cases and group-leg events over a shared ``ChatCore``."""

    def __init__(self, core: ChatCore, one2one: OneToOne) -> None:
        self.core = core
        self.one2one = one2one

    # --- reads ---------------------------------------------------------------------

    async def get(self, user: UserUri, session_id: str) -> tuple[ChatSession, list[Participant]]:
        """``user``'s group session and its members (R10); NotFound if not a group of theirs."""
        async with self.core.unit() as work:
            cs = await work.tx.get_session(user, session_id)
            if cs is None or cs.kind is not SessionKind.GROUP:
                raise NotFound("group chat session", session_id)
            people = await work.tx.participants(cs.id)
        return cs, [self._as_seen(cs, p) for p in people]

    @staticmethod
    def _as_seen(cs: ChatSession, p: Participant) -> Participant:
        if p.address != cs.user:
            return p
        return replace(p, status=group.REST_STATUS[G(cs.state)])

    async def participant(
        self, user: UserUri, session_id: str, address: UserUri
    ) -> tuple[ChatSession, Participant]:
        """One member (R12, R13); NotFound for an address not in the group."""
        cs, people = await self.get(user, session_id)
        for p in people:
            if p.address == address:
                return cs, p
        raise NotFound("participant", address)

    async def _locked(self, user: UserUri, session_id: str) -> ChatSession:
        """Re-read the session inside the caller's lock (caller opens no unit)."""
        async with self.core.unit() as work:
            cs = await work.tx.get_session(user, session_id)
        if cs is None or cs.kind is not SessionKind.GROUP:
            raise NotFound("group chat session", session_id)
        return cs

    # --- create and promote (R9, R8) ---------------------------------------------------

    def _check_size(self, count: int) -> None:
        limit = self.core.settings.chat_group_max_size
        if count > limit:
            raise PolicyViolation(
                "POL0003", f"a group chat has at most {limit} members", "participant"
            )

    async def create(self, user: UserUri, new: NewGroup) -> tuple[ChatSession, bool]:
        """Start a group chat (R9): INVITE the factory; False on a clientCorrelator replay."""
        core = self.core
        invitees = tuple(i for i in new.invitees if i.address != user)
        if not invitees:
            raise Conflict("a group chat needs at least one participant besides its creator")
        self._check_size(len(invitees) + 1)
        now = core.clock()
        cs = ChatSession(
            id=new_group_id(),
            user=user,
            peer=UserUri(core.settings.conference_factory_uri),
            kind=SessionKind.GROUP,
            direction=Direction.OUTGOING,
            state=G.JOINING.value,
            leg=new_leg_id(),
            subject=new.subject,
            originator_name=new.originator_name,
            t_participant_name=None,
            client_correlator=new.client_correlator,
            created_at=now,
            updated_at=now,
        )
        people = [Participant(user, ParticipantStatus.INVITED, new.originator_name, True)]
        people += [Participant(i.address, ParticipantStatus.INVITED, i.name) for i in invitees]
        async with core.locks.hold(confirmed_key(cs.id)):
            async with core.unit() as work:
                if new.client_correlator is not None:
                    old = await work.tx.session_by_correlator(user, new.client_correlator)
                    if old is not None:
                        if old.kind is not SessionKind.GROUP:
                            raise Conflict("clientCorrelator already used for another resource")
                        return old, False
                await work.tx.insert_session(cs)
                await work.tx.save_participants(cs.id, people, work.now)
            log.info("> group %s of %s: %d invitees (leg %s)", cs.id, user, len(invitees), cs.leg)
            assert cs.leg is not None
            try:
                await core.signalling.start_group(
                    cs.leg,
                    user,
                    core.settings.conference_factory_uri,
                    invitees,
                    subject=new.subject,
                )
            except SignallingError as exc:
                async with core.unit() as work:
                    cs = await core.transition(work, cs, V.SETUP_FAILED, reason=str(exc))
                return cs, True
            core.arm("invite:" + cs.id, core.settings.chat_invite_timeout, self._invite_out(cs))
        return cs, True

    def _invite_out(self, cs: ChatSession) -> Coro:
        async def expire() -> None:
            async with self.core.locks.hold(confirmed_key(cs.id)):
                async with self.core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != G.JOINING.value:
                        return
                    reason = "408 no answer (invite timeout)"
                    await self.core.transition(work, current, V.SETUP_FAILED, reason=reason)
            log.info("x group INVITE %s unanswered: cancelling", cs.leg)
            assert cs.leg is not None
            await self._quietly("cancel_session", cs.leg)

        return expire

    async def promote(
        self, user: UserUri, other: UserUri, session_id: str, new: NewGroup
    ) -> tuple[ChatSession, bool]:
        """Extend a 1-1 chat (or ``adhoc``) to a group with ``other`` plus ``new`` (R8)."""
        confirmed = session_id != "adhoc"
        if confirmed:
            cs = await self.one2one.get_session(user, other, session_id)
            if not is_connected(cs):
                raise Conflict(f"chat session {session_id} is not connected ({cs.state})")
        invitees = [Invitee(other)] + [i for i in new.invitees if i.address not in (user, other)]
        grp, created = await self.create(user, replace(new, invitees=tuple(invitees)))
        if created and confirmed and not is_terminal(grp):
            log.info(
                "- 1-1 session %s of %s promoted to group %s: ending it", session_id, user, grp.id
            )
            await self.one2one.end_session(user, other, session_id)
        return grp, created

    # --- own participation (R10 DELETE, R12 DELETE own, R13 PUT) -----------------------------

    async def accept(self, user: UserUri, session_id: str) -> None:
        """Accept a group invitation (R13 PUT Connected): 200 OK to the focus, then MSRP."""
        core = self.core
        async with core.locks.hold(confirmed_key(session_id)):
            cs = await self._locked(user, session_id)
            async with core.unit() as work:
                cs = await core.transition(work, cs, V.APP_ACCEPT)
            core.disarm("ring:" + cs.id)
            assert cs.leg is not None
            try:
                await core.signalling.accept_session(cs.leg)
            except SignallingError as exc:
                async with core.unit() as work:
                    await core.transition(work, cs, V.SETUP_FAILED, reason=str(exc))

    async def leave(self, user: UserUri, session_id: str) -> None:
        """Decline (603) while invited, CANCEL while joining, else leave (BYE cause=200)."""
        core = self.core
        async with core.locks.hold(confirmed_key(session_id)):
            cs = await self._locked(user, session_id)
            before = G(cs.state)
            event = V.APP_DECLINE if before is G.INVITED else V.APP_LEAVE
            async with core.unit() as work:
                cs = await core.transition(work, cs, event)
            assert cs.leg is not None
            if before is G.INVITED:
                core.disarm("ring:" + cs.id)
                await self._quietly("reject_session", cs.leg, group.DECLINE)
            elif before is G.JOINING:
                await self._quietly("cancel_session", cs.leg)
            else:
                await self._quietly("leave_group", cs.leg)

    async def _quietly(self, method: str, leg: LegId, *args: int) -> None:
        try:
            await getattr(self.core.signalling, method)(leg, *args)
        except SignallingError as exc:
            log.warning("x %s on %s failed: %s", method, leg, exc)

    # --- members (R11 POST, R12 DELETE) ----------------------------------------------------

    async def add(
        self, user: UserUri, session_id: str, invitees: Sequence[Invitee]
    ) -> list[Participant]:
        """Invite ``invitees`` (R11 POST, REFER); the members actually invited."""
        core = self.core
        async with core.locks.hold(confirmed_key(session_id)):
            cs = await self._locked(user, session_id)
            if not is_connected(cs):
                raise Conflict(f"group {session_id} is not connected ({cs.state})")
            async with core.unit() as work:
                people = {p.address: p for p in await work.tx.participants(cs.id)}
                live = sum(
                    1 for p in people.values() if p.address != user and p.status in LIVE_MEMBER
                )
                fresh: dict[UserUri, Invitee] = {}
                for i in invitees:
                    known = people.get(i.address)
                    if i.address == user or (known is not None and known.status in LIVE_MEMBER):
                        continue
                    fresh.setdefault(i.address, i)
                self._check_size(live + 1 + len(fresh))
                added = [
                    Participant(i.address, ParticipantStatus.INVITED, i.name)
                    for i in fresh.values()
                ]
                if added:
                    await work.tx.save_participants(cs.id, added, work.now)
            if added:
                assert cs.leg is not None
                log.info("> group %s of %s: REFER %d members", cs.id, user, len(added))
                try:
                    await core.signalling.invite_participants(cs.leg, tuple(fresh.values()))
                except SignallingError as exc:
                    async with core.unit() as work:
                        failed = [replace(p, status=ParticipantStatus.FAILED) for p in added]
                        await work.tx.save_participants(cs.id, failed, work.now)
                    log.warning("x REFER on %s failed: %s", cs.leg, exc)
        return added

    async def remove(self, user: UserUri, session_id: str, address: UserUri) -> None:
        """R12 DELETE: own address → decline or leave; another member → remove (creator only)."""
        if address == user:
            await self.leave(user, session_id)
            return
        cs, _member = await self.participant(user, session_id, address)
        if cs.direction is not Direction.OUTGOING:
            raise PolicyViolation("POL0001", "only the creator of the group removes members")
        if not is_connected(cs):
            raise Conflict(f"group {session_id} is not connected ({cs.state})")
        assert cs.leg is not None
        log.info("> group %s of %s: remove %s", cs.id, user, address)
        try:
            await self.core.signalling.remove_participant(cs.leg, address)
        except SignallingError as exc:
            log.warning("x removing %s from %s failed: %s", address, cs.id, exc)

    # --- messages (R14, R15, R15b) ----------------------------------------------------------

    async def send_message(
        self, user: UserUri, session_id: str, text: OutgoingText
    ) -> tuple[StoredMessage, bool]:
        """Send a chat message to the group; False on a clientCorrelator replay."""
        core = self.core
        now = core.clock()
        if text.client_correlator is not None:
            async with core.unit() as work:
                old = await work.tx.message_by_correlator(user, text.client_correlator)
            if old is not None:
                if old.rest_session != session_id:
                    raise Conflict("clientCorrelator already used for another message")
                return old, False
        async with core.locks.hold(confirmed_key(session_id)):
            cs = await self._locked(user, session_id)
            state = G(cs.state)
            if state in group.TERMINAL:
                raise Conflict(f"group {session_id} is over for {user} ({cs.state})")
            if state is G.INVITED:
                raise Conflict(f"group {session_id}: accept the invitation first")
            first = OutgoingStatus.SENDING if state is G.CONNECTED else OutgoingStatus.QUEUED
            async with core.unit() as work:
                msg = await work.tx.insert_message(
                    StoredMessage(
                        id=new_message_id(),
                        user=user,
                        peer=cs.peer,
                        direction=Direction.OUTGOING,
                        session_id=cs.id,
                        rest_session=cs.id,
                        text=text.text,
                        content_type="text/plain",
                        reports=text.reports,
                        dispositions=dispositions_for(text.reports),
                        status=first.value,
                        date_time=now,
                        created_at=now,
                        client_correlator=text.client_correlator,
                    ),
                    expires_at=core.retention(now),
                )
            if msg.status == OutgoingStatus.SENDING.value:
                assert cs.leg is not None
                await core.send_on_leg(cs.leg, [msg])
        log.debug("> group message %s from %s in %s (%s)", msg.id, user, session_id, msg.status)
        return msg, True

    async def send_composing(self, user: UserUri, session_id: str, composing: Composing) -> None:
        """Send a typing indication to the group if connected; drop it otherwise."""
        cs, _ = await self.get(user, session_id)
        if is_terminal(cs):
            raise Conflict(f"group {session_id} is over for {user} ({cs.state})")
        if not is_connected(cs) or cs.leg is None:
            log.debug("- composing from %s in %s dropped: not connected", user, session_id)
            return
        try:
            await self.core.signalling.send_composing(cs.leg, user, composing)
        except SignallingError as exc:
            log.warning("x composing on %s lost: %s", cs.leg, exc)

    async def get_message(self, user: UserUri, session_id: str, message_id: str) -> StoredMessage:
        """A sent or received message of this group session (R15b)."""
        async with self.core.unit() as work:
            found = await work.tx.find_messages(user, message_id)
        for msg in found:
            if msg.rest_session == session_id:
                return msg
        raise NotFound("chat message", message_id)

    async def get_message_status(
        self, user: UserUri, session_id: str, message_id: str
    ) -> RestStatus:
        """The REST status of a group message (R15 GET); 409 until the next hop acked it."""
        msg = await self.get_message(user, session_id, message_id)
        if msg.direction is Direction.INCOMING:
            return delivery.INCOMING_REST[IncomingStatus(msg.status)]
        status = delivery.OUTGOING_REST[OutgoingStatus(msg.status)]
        if status is None:
            raise Conflict(f"message {message_id} has no status yet (waiting to be sent)")
        return status

    async def report_message(
        self, user: UserUri, session_id: str, message_id: str, status: RestStatus
    ) -> None:
        """Report Delivered/Displayed for a received group message (R15 PUT)."""
        async with self.core.unit() as work:
            msg = await work.tx.get_message(user, message_id, Direction.INCOMING)
        if msg is None or msg.rest_session != session_id:
            await self.get_message(user, session_id, message_id)  # 404 if unknown
            raise Conflict(f"message {message_id} was sent by {user}: nothing to report")
        if status is RestStatus.DELIVERED:
            event = IncomingEvent.NOTIFIED
        elif status is RestStatus.DISPLAYED:
            event = IncomingEvent.APP_DISPLAYED
        else:
            raise Conflict(f"{status.value} cannot be reported")
        core = self.core
        async with core.locks.hold(message_key(user, message_id)):
            async with core.unit() as work:
                current = await work.tx.get_message(user, message_id, Direction.INCOMING)
                assert current is not None
                current, due = await core.incoming_transition(work, current, event)
                leg = await core.report_leg(work.tx, current) if due else None
            if due:
                await core.send_reports(current, due, leg)

    # --- inbound: the group legs -------------------------------------------------------------

    async def invitation(self, inv: IncomingGroupInvitation) -> None:
        """A focus invites ``inv.user`` (mapping N2): store, notify, ring; 480 without listener."""
        core = self.core
        now = core.clock()
        async with core.unit() as work:
            if await work.tx.session_by_leg(inv.leg) is not None:
                log.warning("x group invitation on known leg %s ignored", inv.leg)
                return
            subs = await work.tx.active_subscriptions(inv.user, now)
        if not subs:  # the 1-1 flags do not apply: any subscription hears group invitations
            log.info("x group invitation to %s: no subscription (480)", inv.user)
            raise EventRejected(f"no subscription for {inv.user}", NO_SUBSCRIPTION)
        cs = ChatSession(
            id=new_group_id(),
            user=inv.user,
            peer=UserUri(inv.conference),
            kind=SessionKind.GROUP,
            direction=Direction.INCOMING,
            state=G.INVITED.value,
            leg=inv.leg,
            subject=inv.subject,
            originator_name=inv.inviter_name,
            t_participant_name=None,
            client_correlator=None,
            created_at=now,
            updated_at=now,
            ids=inv.ids,
        )
        people = {p.address: p for p in inv.participants if p.address != inv.user}
        if inv.inviter is not None and inv.inviter not in people:
            people[inv.inviter] = Participant(
                inv.inviter, ParticipantStatus.CONNECTED, inv.inviter_name
            )
        listed = list(people.values())
        own = Participant(inv.user, ParticipantStatus.INVITED)
        log.info("< group invitation %s from %s to %s", inv.leg, inv.conference, inv.user)
        async with core.locks.hold(confirmed_key(cs.id)):
            async with core.unit() as work:
                await work.tx.insert_session(cs)
                await work.tx.save_participants(cs.id, [*listed, own], work.now)
                await work.notify(
                    cs.user,
                    lambda sub: group_notifications.group_invitation(
                        core.urls, sub, cs, inv.inviter, [*listed, own]
                    ),
                )
            core.arm("ring:" + cs.id, core.settings.chat_ringing_timeout, self._ring_out(cs))

    def _ring_out(self, cs: ChatSession) -> Coro:
        async def expire() -> None:
            async with self.core.locks.hold(confirmed_key(cs.id)):
                async with self.core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != G.INVITED.value:
                        return
                    await self.core.transition(work, current, V.RING_TIMEOUT)
                log.info("x group invitation %s to %s unanswered: 603", cs.leg, cs.user)
                assert cs.leg is not None
                await self._quietly("reject_session", cs.leg, group.DECLINE)

        return expire

    async def accepted(self, event: SessionAccepted, found: ChatSession) -> None:
        """The group leg is up: MEDIA_UP, the conference URI kept as ``peer``, queue flushed."""
        core = self.core
        async with core.locks.hold(confirmed_key(found.id)):
            async with core.unit() as work:
                cs = await work.tx.session_by_id(found.id)
                assert cs is not None
                stale = is_terminal(cs)
                if not stale:
                    if not group.accepts(G(cs.state), V.MEDIA_UP):
                        log.info("x SessionAccepted in group state %s ignored", cs.state)
                        return
                    if event.conference:
                        cs = replace(cs, peer=UserUri(event.conference))
                    cs = await core.transition(work, cs, V.MEDIA_UP, ids=event.ids)
                    core.disarm("invite:" + cs.id)
            assert cs.leg is not None
            if stale:
                log.info("x group leg %s answered after the session ended: leaving", event.leg)
                await self._quietly("leave_group", cs.leg)
                return
            async with core.unit() as work:
                queued = await work.tx.session_messages(
                    cs.id, Direction.OUTGOING, [OutgoingStatus.QUEUED.value]
                )
                sending = [
                    await core.outgoing_transition(work, m, OutgoingEvent.DISPATCH) for m in queued
                ]
            # queued before the focus answered: addressed to the conference URI now
            await core.send_on_leg(cs.leg, [evolve(m, peer=cs.peer) for m in sending])

    async def ended(
        self, event: SessionFailed | SessionEnded | SessionCancelled, found: ChatSession
    ) -> None:
        """The group leg failed, was ended by the focus, or the invitation was withdrawn."""
        core = self.core
        async with core.locks.hold(confirmed_key(found.id)):
            async with core.unit() as work:
                cs = await work.tx.session_by_id(found.id)
                assert cs is not None
                if is_terminal(cs):
                    log.info("x %s on finished group %s ignored", type(event).__name__, cs.id)
                    return
                state = G(cs.state)
                if isinstance(event, SessionCancelled):
                    chosen, reason = V.PEER_CANCEL, "CANCEL"
                elif isinstance(event, SessionFailed):
                    chosen = V.SETUP_FAILED
                    reason = f"{event.status} {event.reason}".strip()
                else:
                    chosen = V.SETUP_FAILED if state is G.JOINING else V.PEER_END
                    reason = event.reason or "BYE"
                if not group.accepts(state, chosen):
                    log.warning("x %s in group state %s ignored", type(event).__name__, cs.state)
                    return
                await core.transition(work, cs, chosen, reason=reason)

    async def participants_changed(self, event: ParticipantsChanged) -> None:
        """Members changed (conference NOTIFY, REFER outcome): upsert, notify what changed."""
        core = self.core
        found = await core.leg_session(event.leg)
        if found is None or found.kind is not SessionKind.GROUP:
            log.info("x participants of unknown group leg %s ignored", event.leg)
            return
        async with core.locks.hold(confirmed_key(found.id)):
            async with core.unit() as work:
                cs = await work.tx.session_by_id(found.id)
                if cs is None or is_terminal(cs):
                    return
                known = {p.address: p for p in await work.tx.participants(cs.id)}
                changed: list[Participant] = []
                for p in event.participants:
                    if p.address == cs.user:
                        continue
                    before = known.get(p.address)
                    merged = p
                    if before is not None:  # a focus may omit a name it sent before
                        merged = replace(
                            p,
                            name=p.name if p.name is not None else before.name,
                            is_originator=p.is_originator or before.is_originator,
                        )
                    if merged != before:
                        changed.append(merged)
                if not changed:
                    return
                await work.tx.save_participants(cs.id, changed, work.now)
                await work.notify(
                    cs.user,
                    lambda sub: group_notifications.participant_status(core.urls, sub, cs, changed),
                )

    async def message(self, event: MessageReceived, cs: ChatSession) -> None:
        """A message relayed by the focus: stored under the group id, sender = the real one."""
        core = self.core
        incoming = event.message
        if cs.user != event.user:
            raise EventRejected(f"no session on leg {event.leg}", NO_SESSION)
        async with core.locks.hold(message_key(cs.user, incoming.message_id)):
            async with core.unit() as work:
                if await work.tx.get_message(cs.user, incoming.message_id, Direction.INCOMING):
                    log.info("x duplicate group message %s ignored", incoming.message_id)
                    return
                stored = await work.tx.insert_message(
                    StoredMessage(
                        id=incoming.message_id,
                        user=cs.user,
                        peer=incoming.sender,
                        direction=Direction.INCOMING,
                        session_id=cs.id,
                        rest_session=cs.id,
                        text=incoming.text,
                        content_type=incoming.content_type,
                        reports=frozenset(),
                        dispositions=incoming.dispositions,
                        status=IncomingStatus.RECEIVED.value,
                        date_time=incoming.date_time or work.now,
                        created_at=work.now,
                        sender_name=incoming.sender_name,
                        report_route=incoming.route,
                    ),
                    expires_at=core.retention(work.now),
                )
                await work.notify(
                    cs.user, lambda sub: notifications.message(core.urls, sub, stored)
                )

    async def composing(self, event: ComposingReceived, cs: ChatSession) -> None:
        """A member is typing: chatMessageNotification under the group id."""
        core = self.core
        async with core.unit() as work:
            await work.notify(
                cs.user,
                lambda sub: notifications.composing(
                    core.urls, sub, cs.user, event.peer, cs.id, event.composing, work.now
                ),
            )
