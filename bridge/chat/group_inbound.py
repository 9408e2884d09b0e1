"""The group side of the signalling events: the events of group legs (docs/group-chat.md).

:class:`GroupInbound` applies what the SIP/MSRP side reports about a user's
group leg (docs/protocol-mapping.md N2, N12, N13; ``bridge.chat.ports`` "Group legs") over the
shared runtime (``bridge.chat.core.ChatCore``): an invitation from a focus,
the answer to the user's own INVITE, its end, member changes from the
conference NOTIFYs, messages and isComposing relayed by the focus.
``bridge.chat.events.SignallingRouter`` hands them over; the REST use cases
of the same sessions are ``bridge.chat.groups.GroupChat``. Built by
``bridge.chat.assembly.build_chat``.

Choices written down here:

* An invitation needs any active subscription of the invitee (the 1-1 flags
  do not apply), else 480; it rings for ``chat_ringing_timeout``, then 603.
* Messages queued while JOINING/ACCEPTING are sent on MEDIA_UP, addressed to
  the conference URI the focus answered with.
* A received group message is stored with ``peer`` = its real sender, so
  reports go back to the sender through the focus (RFC 5438 §7.1.1.3).
* The focus never reports the subscriber's own entry (``ParticipantsChanged``):
  it is left out; a name the focus omits keeps the one it sent before.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.chat import group, group_notifications, notifications
from bridge.chat.core import (
    NO_SESSION,
    NO_SUBSCRIPTION,
    ChatCore,
    Coro,
    confirmed_key,
    is_terminal,
    message_key,
    received,
)
from bridge.chat.delivery import OutgoingEvent, OutgoingStatus
from bridge.chat.group import GroupEvent as V
from bridge.chat.group import GroupState as G
from bridge.chat.groups import quietly
from bridge.chat.model import (
    ChatSession,
    Direction,
    Participant,
    ParticipantStatus,
    SessionKind,
    evolve,
    new_group_id,
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
)
from bridge.ids import UserUri

log = logging.getLogger(__name__)


class GroupInbound:
    """The events of group legs over a shared ``ChatCore`` (module docstring)."""

    def __init__(self, core: ChatCore) -> None:
        self.core = core

    async def invitation(self, inv: IncomingGroupInvitation) -> None:
        """A focus invites ``inv.user`` (N2): store, notify, ring; 480 without listener."""
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
                await quietly(self.core.signalling, "reject_session", cs.leg, group.DECLINE)

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
                await quietly(self.core.signalling, "leave_group", cs.leg)
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
                    if before is not None and (  # a focus may omit a name it sent before
                        (p.name is None and before.name is not None)
                        or (before.is_originator and not p.is_originator)
                    ):  # else ``p`` itself: the signalling side shares equal participants
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
                    received(
                        incoming,
                        user=cs.user,
                        peer=incoming.sender,
                        session_id=cs.id,
                        rest_session=cs.id,
                        now=work.now,
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
