"""The 1-1 side of what the signalling side reports, applied to chat state.

docs/protocol-mapping.md "Inbound events" and "Error mapping" list the events.

:meth:`OneToOneInbound.handle` applies the 1-1 events of ``bridge.chat.ports``
(``bridge.chat.events.SignallingRouter`` hands them over; group legs go to
``bridge.chat.group_inbound``), over the shared runtime
(``bridge.chat.core.ChatCore``); implicit sessions are closed and kept alive
through ``bridge.chat.implicit.AdhocChat``. Built by
``bridge.chat.assembly.build_chat``.

* invitation (N1): no active subscription taking invitations (neither flag)
  → :class:`EventRejected` 480; any
  subscription with ``confirmedChatSupported`` → a RINGING session,
  ``chatSessionInvitationNotification`` to those subscriptions and the
  ringing timer (486 when it fires); only ``adhocChatSupported`` → an
  implicit session, accepted at once. A first message in the INVITE is
  notified like any other message (under the new sessionId, or ``adhoc``).
* accepted / failed / ended / cancelled (N3, N5, N6): the session machine;
  an implicit session refused with 403/405/415/488/606 sends its messages by
  SIP MESSAGE when ``chat_pager_fallback`` is on (pager fallback); any other end
  of an implicit session fails its unacknowledged messages.
* message / composing (N8, N10, N11): stored (deduplicated on user, imdn id
  and direction) and notified to every active subscription; a pager MESSAGE
  or composing for a user without subscription is rejected 480.
* report (N9) and send result (N14): the sent message's status machine (for
  group messages too: it is found by user and message id).

The "delivered" IMDN on notification delivery is ``bridge.chat.messages.Messages``.
"""

from __future__ import annotations

import logging

from bridge.chat import adhoc, delivery, notifications, one2one
from bridge.chat.confirmed import DECLINE
from bridge.chat.core import (
    NO_SESSION,
    NO_SUBSCRIPTION,
    ChatCore,
    Coro,
    Unit,
    is_terminal,
    message_key,
    received,
    session_key,
)
from bridge.chat.delivery import OutgoingEvent, OutgoingStatus
from bridge.chat.implicit import AdhocChat
from bridge.chat.model import (
    ADHOC,
    ChatSession,
    Direction,
    LegId,
    SessionKind,
    StoredMessage,
    new_session_id,
)
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    ReportReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
    SignallingEvent,
)
from bridge.ids import UserUri

log = logging.getLogger(__name__)


class OneToOneInbound:
    """The 1-1 side of the signalling events, over a shared ``ChatCore`` (module docstring)."""

    def __init__(self, core: ChatCore, adhoc_chat: AdhocChat) -> None:
        self.core = core
        self.adhoc = adhoc_chat

    async def handle(self, event: SignallingEvent) -> None:
        """Apply one 1-1 signalling event; raises ``EventRejected`` to refuse its request."""
        match event:
            case IncomingInvitation():
                await self._invitation(event)
            case SessionAccepted():
                await self._accepted(event)
            case SessionFailed():
                await self._ended(event.leg, event, event.status, event.reason)
            case SessionEnded():
                await self._ended(event.leg, event, 0, event.reason or "BYE")
            case SessionCancelled():
                await self._ended(event.leg, event, 0, "CANCEL")
            case MessageReceived():
                await self._message(event.leg, event.user, event.message)
            case ReportReceived():
                await self._report(event)
            case ComposingReceived():
                await self._composing(event)
            case MessageSendResult():
                await self._send_result(event)

    # --- sessions --------------------------------------------------------------------------

    async def _invitation(self, inv: IncomingInvitation) -> None:
        now = self.core.clock()
        async with self.core.unit() as work:
            if await work.tx.session_by_leg(inv.leg) is not None:
                log.warning("x invitation on known leg %s ignored", inv.leg)
                return
            subs = await work.tx.active_subscriptions(inv.user, now)
        confirmed = any(s.confirmed_chat_supported for s in subs)
        if not confirmed and not any(s.adhoc_chat_supported for s in subs):
            # nobody would accept it: no subscription, or none taking 1-1 invitations
            log.info("x invitation from %s to %s: no subscription (480)", inv.peer, inv.user)
            raise EventRejected(f"no subscription for {inv.user}", NO_SUBSCRIPTION)
        cs = ChatSession(
            id=new_session_id(),
            user=inv.user,
            peer=inv.peer,
            kind=SessionKind.CONFIRMED if confirmed else SessionKind.ADHOC,
            direction=Direction.INCOMING,
            state=(
                one2one.SessionState.RINGING.value
                if confirmed
                else adhoc.AdhocState.CONNECTING.value
            ),
            leg=inv.leg,
            subject=inv.subject,
            originator_name=inv.peer_name,
            t_participant_name=None,
            client_correlator=None,
            created_at=now,
            updated_at=now,
            ids=inv.ids,
        )
        log.info("< invitation %s from %s to %s (%s)", inv.leg, inv.peer, inv.user, cs.kind.value)
        async with self.core.locks.hold(session_key(cs)):
            async with self.core.unit() as work:
                await work.tx.insert_session(cs)
                if confirmed:
                    await work.notify(
                        cs.user,
                        lambda sub: notifications.invitation(self.core.urls, sub, cs),
                        where=lambda sub: sub.confirmed_chat_supported,
                    )
                if inv.first_message is not None:
                    await self._store_received(work, cs, cs.rest_id, inv.first_message)
            if confirmed:
                self.core.arm(
                    "ring:" + cs.id, self.core.settings.chat_ringing_timeout, self._ring_out(cs)
                )
                return
            try:
                await self.core.signalling.accept_session(inv.leg)
            except SignallingError as exc:
                async with self.core.unit() as work:
                    await self.core.transition(
                        work, cs, adhoc.AdhocEvent.SETUP_FAILED, reason=str(exc)
                    )

    def _ring_out(self, cs: ChatSession) -> Coro:
        async def expire() -> None:
            async with self.core.locks.hold(session_key(cs)):
                async with self.core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != one2one.SessionState.RINGING.value:
                        return
                    await self.core.transition(work, current, one2one.SessionEvent.RING_TIMEOUT)
                log.info("x invitation %s to %s unanswered: %d", cs.leg, cs.user, DECLINE)
                assert cs.leg is not None
                try:
                    await self.core.signalling.reject_session(cs.leg, DECLINE)
                except SignallingError as exc:
                    log.warning("x cannot reject %s: %s", cs.leg, exc)

        return expire

    async def _accepted(self, event: SessionAccepted) -> None:
        found = await self.core.leg_session(event.leg)
        if found is None:
            log.warning("x accepted leg %s is unknown: ending it", event.leg)
            await self.core.end_leg(event.leg)
            return
        async with self.core.locks.hold(session_key(found)):
            async with self.core.unit() as work:
                cs = await work.tx.session_by_id(found.id)
                assert cs is not None
                stale = is_terminal(cs)
                if not stale:
                    if not self._accepts_media_up(cs):
                        log.info("x %s in state %s ignored", type(event).__name__, cs.state)
                        return
                    media_up: one2one.SessionEvent | adhoc.AdhocEvent = (
                        adhoc.AdhocEvent.MEDIA_UP
                        if cs.kind is SessionKind.ADHOC
                        else one2one.SessionEvent.MEDIA_UP
                    )
                    cs = await self.core.transition(work, cs, media_up, ids=event.ids)
            if stale:
                log.info("x leg %s answered after the session ended: ending it", event.leg)
                await self.core.end_leg(event.leg)
                return
            if cs.kind is SessionKind.ADHOC:
                self.adhoc.touch(cs)
            await self.core.flush(cs)

    @staticmethod
    def _accepts_media_up(cs: ChatSession) -> bool:
        if cs.kind is SessionKind.ADHOC:
            return adhoc.accepts(adhoc.AdhocState(cs.state), adhoc.AdhocEvent.MEDIA_UP)
        return one2one.accepts(one2one.SessionState(cs.state), one2one.SessionEvent.MEDIA_UP)

    async def _ended(
        self,
        leg: LegId,
        event: SessionFailed | SessionEnded | SessionCancelled,
        status: int,
        reason: str,
    ) -> None:
        found = await self.core.leg_session(leg)
        if found is None:
            log.info("x %s on unknown leg %s ignored", type(event).__name__, leg)
            return
        fallback: list[StoredMessage] = []
        async with self.core.locks.hold(session_key(found)):
            async with self.core.unit() as work:
                cs = await work.tx.session_by_id(found.id)
                assert cs is not None
                if is_terminal(cs):
                    log.info("x %s on finished session %s ignored", type(event).__name__, cs.id)
                    return
                text = f"{status} {reason}".strip() if status else reason
                if cs.kind is SessionKind.ADHOC:
                    fallback = await self.adhoc.close(work, cs, event, status, text)
                else:
                    c_event = self._confirmed_end_event(cs, event, status)
                    if c_event is None:
                        log.warning("x %s in state %s ignored", type(event).__name__, cs.state)
                        return
                    await self.core.transition(work, cs, c_event, reason=text)
        if fallback:
            log.info("- %d adhoc messages to %s fall back to pager", len(fallback), found.peer)
            await self.core.send_by_pager(fallback)

    @staticmethod
    def _confirmed_end_event(
        cs: ChatSession, event: SessionFailed | SessionEnded | SessionCancelled, status: int
    ) -> one2one.SessionEvent | None:
        state = one2one.SessionState(cs.state)
        if isinstance(event, SessionFailed):
            chosen = one2one.failure_event(status)
            if state is not one2one.SessionState.INVITING:
                chosen = one2one.SessionEvent.SETUP_FAILED
        elif isinstance(event, SessionCancelled):
            chosen = one2one.SessionEvent.PEER_CANCEL
        else:
            chosen = one2one.SessionEvent.PEER_END
            if state is one2one.SessionState.INVITING:
                chosen = one2one.SessionEvent.SETUP_FAILED
        return chosen if one2one.accepts(state, chosen) else None

    # --- messages ----------------------------------------------------------------------

    async def _message(self, leg: LegId | None, user: UserUri, incoming: IncomingMessage) -> None:
        cs: ChatSession | None = None
        if leg is not None:
            cs = await self.core.leg_session(leg)
            if cs is None or cs.user != user:
                raise EventRejected(f"no session on leg {leg}", NO_SESSION)
        async with self.core.locks.hold(message_key(user, incoming.message_id)):
            async with self.core.unit() as work:
                if cs is None:
                    if not await work.active_subscriptions(user):
                        raise EventRejected(f"no subscription for {user}", NO_SUBSCRIPTION)
                    await self._store_received(work, None, ADHOC, incoming, user=user)
                else:
                    await self._store_received(work, cs, cs.rest_id, incoming)
        if cs is not None and cs.kind is SessionKind.ADHOC:
            self.adhoc.touch(cs)

    async def _store_received(
        self,
        work: Unit,
        cs: ChatSession | None,
        rest_session: str,
        incoming: IncomingMessage,
        *,
        user: UserUri | None = None,
    ) -> StoredMessage | None:
        owner = cs.user if cs is not None else user
        assert owner is not None
        if await work.tx.get_message(owner, incoming.message_id, Direction.INCOMING) is not None:
            log.info("x duplicate message %s for %s ignored", incoming.message_id, owner)
            return None
        msg = received(
            incoming,
            user=owner,
            peer=cs.peer if cs is not None else incoming.sender,
            session_id=None if cs is None else cs.id,
            rest_session=rest_session,
            now=work.now,
        )
        stored = await work.tx.insert_message(msg, expires_at=self.core.retention(work.now))
        log.debug("< message %s from %s to %s", stored.id, stored.peer, owner)
        count = await work.notify(
            owner, lambda sub: notifications.message(self.core.urls, sub, stored)
        )
        if not count:
            log.warning("x message %s for %s: no subscription to notify", stored.id, owner)
        return stored

    async def _composing(self, event: ComposingReceived) -> None:
        rest_session = ADHOC
        cs = None if event.leg is None else await self.core.leg_session(event.leg)
        if cs is not None:
            rest_session = cs.rest_id
            if cs.kind is SessionKind.ADHOC:
                self.adhoc.touch(cs)
        async with self.core.unit() as work:
            count = await work.notify(
                event.user,
                lambda sub: notifications.composing(
                    self.core.urls,
                    sub,
                    event.user,
                    event.peer,
                    rest_session,
                    event.composing,
                    work.now,
                ),
            )
        if not count and event.leg is None:
            raise EventRejected(f"no subscription for {event.user}", NO_SUBSCRIPTION)

    async def _report(self, event: ReportReceived) -> None:
        async with self.core.locks.hold(message_key(event.user, event.message_id)):
            async with self.core.unit() as work:
                msg = await work.tx.get_message(event.user, event.message_id, Direction.OUTGOING)
                if msg is None:
                    log.warning(
                        "x %s report for unknown message %s of %s",
                        event.kind.value,
                        event.message_id,
                        event.user,
                    )
                    return
                log.debug("< %s report for %s of %s", event.kind.value, msg.id, msg.user)
                await self.core.outgoing_transition(work, msg, delivery.REPORT_EVENTS[event.kind])

    async def _send_result(self, event: MessageSendResult) -> None:
        result = OutgoingEvent.SEND_OK if event.ok else OutgoingEvent.SEND_ERROR
        async with self.core.locks.hold(message_key(event.user, event.message_id)):
            async with self.core.unit() as work:
                msg = await work.tx.get_message(event.user, event.message_id, Direction.OUTGOING)
                if msg is None:
                    log.warning("x send result for unknown message %s", event.message_id)
                    return
                status = OutgoingStatus(msg.status)
                if not delivery.accepts_outgoing(status, result):
                    log.info("x late %s for %s in %s ignored", result.name, msg.id, status.name)
                    return
                if not event.ok:
                    log.warning("x message %s: %d %s", msg.id, event.status, event.reason)
                await self.core.outgoing_transition(work, msg, result)
