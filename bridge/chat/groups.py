"""The group chat use cases (OMA REST Chat v1.0 R8-R15; docs/group-chat.md).

:class:`GroupChat` serves the REST operations on group sessions over the
shared runtime (``bridge.chat.core.ChatCore``: units, transitions, locks,
timers, sending); promotion ends the 1-1 session through
``bridge.chat.confirmed.ConfirmedChat``; reports on received messages go
through ``bridge.chat.messages.Messages``. The events of group legs are
``bridge.chat.group_inbound.GroupInbound``. Both are built by
``bridge.chat.assembly.build_chat``. One user's group session is a
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
  (the adapter mints a new Contribution-ID, docs/protocol-mapping.md "Promotion"). A confirmed 1-1
  session must be connected (409 otherwise) and is ended *at once* (BYE)
  after the group INVITE is handed to the stack, so the two conversations
  never run side by side; if the group then fails the app gets ``Failed``
  and may open a new 1-1. From ``adhoc`` nothing is ended: the implicit
  session closes when idle.
* Messages: queued while JOINING/ACCEPTING and sent on MEDIA_UP; 409 once
  the participation is over or before the invitation is accepted.
  isComposing is dropped unless connected. Received messages:
  ``bridge.chat.group_inbound``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from bridge.chat import group
from bridge.chat.confirmed import ConfirmedChat
from bridge.chat.core import ChatCore, Coro, confirmed_key, is_connected, is_terminal
from bridge.chat.delivery import OutgoingStatus
from bridge.chat.group import GroupEvent as V
from bridge.chat.group import GroupState as G
from bridge.chat.messages import Messages, report_event, rest_status
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
    new_group_id,
    new_leg_id,
    new_message_id,
)
from bridge.chat.ports import (
    SignallingError,
    SignallingPort,
)
from bridge.errors import Conflict, NotFound, PolicyViolation
from bridge.ids import UserUri

log = logging.getLogger(__name__)

LIVE_MEMBER = frozenset({ParticipantStatus.INVITED, ParticipantStatus.CONNECTED})
"""Statuses of a member who counts toward the group size and is not invited again."""


class GroupChat:
    """Group chat use cases over a shared ``ChatCore`` (module docstring)."""

    def __init__(self, core: ChatCore, confirmed: ConfirmedChat, messages: Messages) -> None:
        self.core = core
        self.confirmed = confirmed
        self.messages = messages

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
            await quietly(self.core.signalling, "cancel_session", cs.leg)

        return expire

    async def promote(
        self, user: UserUri, other: UserUri, session_id: str, new: NewGroup
    ) -> tuple[ChatSession, bool]:
        """Extend a 1-1 chat (or ``adhoc``) to a group with ``other`` plus ``new`` (R8)."""
        confirmed = session_id != "adhoc"
        if confirmed:
            cs = await self.confirmed.get_session(user, other, session_id)
            if not is_connected(cs):
                raise Conflict(f"chat session {session_id} is not connected ({cs.state})")
        invitees = [Invitee(other)] + [i for i in new.invitees if i.address not in (user, other)]
        grp, created = await self.create(user, replace(new, invitees=tuple(invitees)))
        if created and confirmed and not is_terminal(grp):
            log.info(
                "- 1-1 session %s of %s promoted to group %s: ending it", session_id, user, grp.id
            )
            await self.confirmed.end_session(user, other, session_id)
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
                await quietly(core.signalling, "reject_session", cs.leg, group.DECLINE)
            elif before is G.JOINING:
                await quietly(core.signalling, "cancel_session", cs.leg)
            else:
                await quietly(core.signalling, "leave_group", cs.leg)

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
        return rest_status(await self.get_message(user, session_id, message_id))

    async def report_message(
        self, user: UserUri, session_id: str, message_id: str, status: RestStatus
    ) -> None:
        """Report Delivered/Displayed for a received group message (R15 PUT)."""
        async with self.core.unit() as work:
            msg = await work.tx.get_message(user, message_id, Direction.INCOMING)
        if msg is None or msg.rest_session != session_id:
            await self.get_message(user, session_id, message_id)  # 404 if unknown
            raise Conflict(f"message {message_id} was sent by {user}: nothing to report")
        await self.messages.mark_received(user, msg.id, report_event(status))


async def quietly(signalling: SignallingPort, method: str, leg: LegId, *args: int) -> None:
    """Call ``signalling.<method>(leg, *args)``, logging a failure instead of raising it."""
    try:
        await getattr(signalling, method)(leg, *args)
    except SignallingError as exc:
        log.warning("x %s on %s failed: %s", method, leg, exc)
