"""The 1-1 chat use cases the REST API calls (oma-chat-api.md §6.2-§6.5; mapping §1.1 R3-R9).

:class:`ChatService` adds the app's operations to the inbound side
(``bridge.chat.inbound``): it is at once the ``SignallingEvents`` sink and the
domain service behind ``rest.chat_service``. Errors are ``bridge.errors``:
``NotFound`` (404) for an unknown session or message, or one addressed under
the wrong peer or sessionId; ``Conflict`` (409 POL0001) for an operation the
state does not allow, e.g. any message, accept or DELETE on a session that is
over, a message on an invitation not yet accepted, or the status of a message
not yet acknowledged by the next hop (REST has no "pending" MessageStatus).

Choices written down here:

* The app's own DELETE emits no chatEventNotification (the 204 is its answer):
  before the answer it CANCELs (session ``Cancelled``, shown ``Disconnected``),
  while ringing it declines with 486, once connected it sends BYE.
* A confirmed session whose INVITE cannot even be started (stack down) is
  created and goes to Failed at once, with its ``Failed`` notification.
* An unanswered outgoing INVITE is CANCELled after ``chat_invite_timeout``
  and the session Fails, so a dead IMS core never leaves the app hanging.
* isComposing is dropped (204, nothing sent) unless the session is connected;
  on ``adhoc`` it uses the live implicit session only (mapping R8).
* ``PUT Delivered`` after the automatic delivery report is a no-op;
  ``PUT Displayed`` sends the display IMDN only when it was requested.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from bridge.chat import adhoc, delivery, one2one, recovery
from bridge.chat.core import confirmed_key, is_connected, is_terminal, pair_key, session_key
from bridge.chat.delivery import IncomingEvent, IncomingStatus, OutgoingEvent, OutgoingStatus
from bridge.chat.events import SignallingRouter
from bridge.chat.groups import GroupChat
from bridge.chat.inbound import DECLINE, ChatInbound, Coro
from bridge.chat.model import (
    ADHOC,
    ChatSession,
    Composing,
    Direction,
    LegId,
    NewSession,
    OutgoingText,
    RestStatus,
    SessionKind,
    StoredMessage,
    dispositions_for,
    new_leg_id,
    new_message_id,
    new_session_id,
)
from bridge.chat.ports import ChatTransaction, SessionFailed, SignallingError, SignallingEvent
from bridge.errors import Conflict, NotFound
from bridge.ids import ChatSessionId, MessageId, UserUri

log = logging.getLogger(__name__)

S = one2one.SessionState
E = one2one.SessionEvent

PURGE_INTERVAL = 3600.0
"""Seconds between two retention sweeps (one also runs at start, in recovery)."""


class ChatService(ChatInbound):
    """1-1 chat: REST use cases, signalling events, delivery listener, recovery.

    Group chat is a part of its own, composed here: :attr:`groups` (the use
    cases, ``bridge.chat.groups``) and :attr:`events` (the event router that
    :meth:`handle_event` hands every signalling event to).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = GroupChat(self, self)
        self.events = SignallingRouter(self, self.handle_one2one, self.groups)

    async def handle_event(self, event: SignallingEvent) -> None:
        """The ``SignallingEvents`` sink: route ``event`` (``bridge.chat.events``)."""
        await self.events.handle_event(event)

    # --- lifetime ---------------------------------------------------------------------

    async def start(
        self, backlog: recovery.NotificationBacklog | None = None
    ) -> recovery.RecoveryReport:
        """Recover from the previous run and listen for delivered notifications."""
        report = await recovery.recover(self, backlog)
        self.notifier.add_listener(self.on_delivered)
        self.arm("purge", PURGE_INTERVAL, self._purge)
        return report

    async def _purge(self) -> None:
        """Drop messages and ended sessions past their retention; run again later."""
        retention = timedelta(days=self.settings.chat_message_retention_days)
        async with self.unit() as work:
            count = await work.tx.purge_expired(now=work.now, ended_before=work.now - retention)
        if count:
            log.info("- purged %d chat messages and sessions past retention", count)
        self.arm("purge", PURGE_INTERVAL, self._purge)

    async def stop(self) -> None:
        """Stop listening, cancel every timer and background task, close the store."""
        self.notifier.remove_listener(self.on_delivered)
        await self.close()
        await self.store.close()

    # --- confirmed sessions (R3-R5) ---------------------------------------------------------

    async def create_session(
        self, user: UserUri, other: UserUri, new: NewSession
    ) -> tuple[ChatSession, bool]:
        """Invite ``other`` to a confirmed 1-1 session; False on a clientCorrelator replay."""
        now = self.clock()
        cs = ChatSession(
            id=new_session_id(),
            user=user,
            peer=other,
            kind=SessionKind.CONFIRMED,
            direction=Direction.OUTGOING,
            state=S.INVITING.value,
            leg=new_leg_id(),
            subject=new.subject,
            originator_name=new.originator_name,
            t_participant_name=new.t_participant_name,
            client_correlator=new.client_correlator,
            created_at=now,
            updated_at=now,
        )
        async with self.locks.hold(session_key(cs)):
            async with self.unit() as work:
                if new.client_correlator is not None:
                    old = await work.tx.session_by_correlator(user, new.client_correlator)
                    if old is not None:
                        if old.peer != other or old.kind is not SessionKind.CONFIRMED:
                            raise Conflict("clientCorrelator already used for another resource")
                        return old, False
                await work.tx.insert_session(cs)
            log.info("> invitation %s from %s to %s (session %s)", cs.leg, user, other, cs.id)
            assert cs.leg is not None
            try:
                await self.signalling.start_session(cs.leg, user, other, subject=new.subject)
            except SignallingError as exc:
                async with self.unit() as work:
                    cs = await self.transition(work, cs, E.SETUP_FAILED, reason=str(exc))
                return cs, True
            self.arm("invite:" + cs.id, self.settings.chat_invite_timeout, self._invite_out(cs))
        return cs, True

    def _invite_out(self, cs: ChatSession) -> Coro:
        async def expire() -> None:
            async with self.locks.hold(session_key(cs)):
                async with self.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != S.INVITING.value:
                        return
                    await self.transition(
                        work, current, E.SETUP_FAILED, reason="408 no answer (invite timeout)"
                    )
            assert cs.leg is not None
            log.info("x invitation %s unanswered: cancelling", cs.leg)
            try:
                await self.signalling.cancel_session(cs.leg)
            except SignallingError as exc:
                log.warning("x cannot cancel %s: %s", cs.leg, exc)

        return expire

    async def get_session(self, user: UserUri, other: UserUri, session_id: str) -> ChatSession:
        """The confirmed session ``session_id`` of ``user`` with ``other`` (404 otherwise)."""
        async with self.unit() as work:
            return await self._confirmed(work.tx, user, other, session_id)

    @staticmethod
    async def _confirmed(
        tx: ChatTransaction, user: UserUri, other: UserUri, session_id: str
    ) -> ChatSession:
        cs = await tx.get_session(user, session_id)
        if cs is None or cs.peer != other or cs.kind is not SessionKind.CONFIRMED:
            raise NotFound("chat session", session_id)
        return cs

    async def end_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Decline (486), cancel (CANCEL) or end (BYE) the session (R4 DELETE)."""
        async with self.locks.hold(confirmed_key(session_id)):
            async with self.unit() as work:
                cs = await self._confirmed(work.tx, user, other, session_id)
                before = S(cs.state)
                cs = await self.transition(work, cs, E.APP_END)
            assert cs.leg is not None
            try:
                if before is S.RINGING:
                    await self.signalling.reject_session(cs.leg, DECLINE)
                elif before is S.INVITING:
                    await self.signalling.cancel_session(cs.leg)
                else:
                    await self.signalling.end_session(cs.leg)
            except SignallingError as exc:
                log.warning("x ending %s on the wire failed: %s", cs.leg, exc)

    async def accept_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Accept an incoming invitation (R5 PUT Connected): 200 OK, then MSRP."""
        async with self.locks.hold(confirmed_key(session_id)):
            async with self.unit() as work:
                cs = await self._confirmed(work.tx, user, other, session_id)
                cs = await self.transition(work, cs, E.APP_ACCEPT)
            self.disarm("ring:" + cs.id)
            assert cs.leg is not None
            try:
                await self.signalling.accept_session(cs.leg)
            except SignallingError as exc:
                async with self.unit() as work:
                    await self.transition(work, cs, E.SETUP_FAILED, reason=str(exc))

    # --- messages (R6, R7, R7b) ---------------------------------------------------------------

    async def send_message(
        self, user: UserUri, other: UserUri, session_id: str, text: OutgoingText
    ) -> tuple[StoredMessage, bool]:
        """Send a chat message on a confirmed session or ``adhoc``; False on a replay."""
        now = self.clock()
        if text.client_correlator is not None:
            async with self.unit() as work:
                old = await work.tx.message_by_correlator(user, text.client_correlator)
            if old is not None:
                if old.peer != other or old.rest_session != session_id:
                    raise Conflict("clientCorrelator already used for another message")
                return old, False
        msg = StoredMessage(
            id=new_message_id(),
            user=user,
            peer=other,
            direction=Direction.OUTGOING,
            session_id=None,
            rest_session=session_id,
            text=text.text,
            content_type="text/plain",
            reports=text.reports,
            dispositions=dispositions_for(text.reports),
            status=OutgoingStatus.QUEUED.value,
            date_time=now,
            created_at=now,
            client_correlator=text.client_correlator,
        )
        if session_id == ADHOC:
            inserted = await self.pump_adhoc(user, other, msg)
            assert inserted is not None
            return inserted, True
        async with self.locks.hold(confirmed_key(session_id)):
            async with self.unit() as work:
                cs = await self._confirmed(work.tx, user, other, session_id)
                state = S(cs.state)
                if state in one2one.TERMINAL:
                    raise Conflict(f"chat session {session_id} is over ({cs.state})")
                if state is S.RINGING:
                    raise Conflict(f"chat session {session_id}: accept the invitation first")
                # born SENDING on a connected session, QUEUED until it connects
                first = OutgoingStatus.SENDING if state is S.CONNECTED else OutgoingStatus.QUEUED
                msg = await work.tx.insert_message(
                    replace(msg, session_id=cs.id, status=first.value),
                    expires_at=self.retention(now),
                )
            if msg.status == OutgoingStatus.SENDING.value:
                assert cs.leg is not None
                await self.send_on_leg(cs.leg, [msg])
        log.debug("> message %s from %s to %s (%s)", msg.id, user, other, msg.status)
        return msg, True

    async def pump_adhoc(
        self, user: UserUri, peer: UserUri, new: StoredMessage | None = None
    ) -> StoredMessage | None:
        """Send the pair's detached queued adhoc messages: pager, live session, or a new one.

        ``new`` (a QUEUED, detached message) is stored first, in the same unit;
        it is returned as stored.
        """
        async with self.locks.hold(pair_key(user, peer)):
            async with self.unit() as work:
                if new is not None:
                    new = await work.tx.insert_message(new, expires_at=self.retention(work.now))
                queued = await work.tx.detached_messages(
                    user, peer, ADHOC, OutgoingStatus.QUEUED.value
                )
                if not queued:
                    return new
                if self.settings.chat_adhoc_mode == "pager":
                    pager = [
                        await self.outgoing_transition(work, m, OutgoingEvent.DISPATCH)
                        for m in queued
                    ]
                    cs = None
                else:
                    pager = []
                    cs = await work.tx.live_adhoc_session(user, peer, [s.value for s in adhoc.LIVE])
                    opened = cs is None
                    if cs is None:
                        cs = await work.tx.insert_session(self._new_implicit(user, peer))
                    sending: list[StoredMessage] = []
                    for i, m in enumerate(queued):
                        go = is_connected(cs) or (opened and i == 0)
                        m = await self.outgoing_transition(
                            work,
                            m,
                            OutgoingEvent.DISPATCH if go else OutgoingEvent.REQUEUE,
                            session=cs,
                        )
                        if go:
                            sending.append(m)
            if pager:
                await self.send_by_pager(pager)
                return new
            assert cs is not None and cs.leg is not None
            if opened:
                log.info("> implicit session %s from %s to %s", cs.leg, user, peer)
                try:
                    await self.signalling.start_session(
                        cs.leg, user, peer, first=self.outgoing(sending[0])
                    )
                except SignallingError as exc:
                    async with self.unit() as work:
                        fallback = await self._close_adhoc(
                            work, cs, _local_failure(str(exc)), exc.status, str(exc)
                        )
                    await self.send_by_pager(fallback)
                    return new
                timeout = self.settings.chat_invite_timeout
                self.arm("invite:" + cs.id, timeout, self._adhoc_invite_out(cs))
                return new
            if is_connected(cs):
                self.touch(cs)
                await self.send_on_leg(cs.leg, sending)
        return new

    def _adhoc_invite_out(self, cs: ChatSession) -> Coro:
        async def expire() -> None:
            assert cs.leg is not None
            async with self.locks.hold(pair_key(cs.user, cs.peer)):
                async with self.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != adhoc.AdhocState.CONNECTING.value:
                        return
                    reason = "408 no answer (invite timeout)"
                    failed = SessionFailed(cs.leg, 408, reason)
                    await self._close_adhoc(work, current, failed, 408, reason)
            log.info("x implicit session %s unanswered: cancelling", cs.leg)
            try:
                await self.signalling.cancel_session(cs.leg)
            except SignallingError as exc:
                log.warning("x cannot cancel %s: %s", cs.leg, exc)

        return expire

    def _new_implicit(self, user: UserUri, peer: UserUri) -> ChatSession:
        now = self.clock()
        return ChatSession(
            id=new_session_id(),
            user=user,
            peer=peer,
            kind=SessionKind.ADHOC,
            direction=Direction.OUTGOING,
            state=adhoc.AdhocState.CONNECTING.value,
            leg=new_leg_id(),
            subject=None,
            originator_name=None,
            t_participant_name=None,
            client_correlator=None,
            created_at=now,
            updated_at=now,
        )

    async def send_composing(
        self, user: UserUri, other: UserUri, session_id: str, composing: Composing
    ) -> None:
        """Send a typing indication if the session is connected; otherwise drop it (R8)."""
        if session_id == ADHOC:
            async with self.unit() as work:
                cs = await work.tx.live_adhoc_session(
                    user, other, [adhoc.AdhocState.CONNECTED.value]
                )
        else:
            cs = await self.get_session(user, other, session_id)
            if is_terminal(cs):
                raise Conflict(f"chat session {session_id} is over ({cs.state})")
        if cs is None or not is_connected(cs) or cs.leg is None:
            log.debug("- composing from %s to %s dropped: no connected session", user, other)
            return
        if cs.kind is SessionKind.ADHOC:
            self.touch(cs)
        try:
            await self.signalling.send_composing(cs.leg, user, composing)
        except SignallingError as exc:
            log.warning("x composing on %s lost: %s", cs.leg, exc)

    async def get_message(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> StoredMessage:
        """A sent or received message addressed under this peer and sessionId (R7b)."""
        async with self.unit() as work:
            found = await work.tx.find_messages(user, message_id)
        for msg in found:
            if msg.peer == other and msg.rest_session == session_id:
                return msg
        raise NotFound("chat message", message_id)

    async def get_message_status(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> RestStatus:
        """The REST status of a message (R7 GET); 409 while a sent one awaits its ack."""
        msg = await self.get_message(user, other, session_id, message_id)
        if msg.direction is Direction.INCOMING:
            return delivery.INCOMING_REST[IncomingStatus(msg.status)]
        status = delivery.OUTGOING_REST[OutgoingStatus(msg.status)]
        if status is None:
            raise Conflict(f"message {message_id} has no status yet (waiting to be sent)")
        return status

    async def report_message(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str, status: RestStatus
    ) -> None:
        """Report Delivered/Displayed for a received message (R7 PUT; IMDN if requested)."""
        msg = await self.get_message(user, other, session_id, message_id)
        if msg.direction is Direction.OUTGOING:
            found = await self._received(user, other, session_id, message_id)
            if found is None:
                raise Conflict(f"message {message_id} was sent by {user}: nothing to report")
        if status is RestStatus.DELIVERED:
            event = IncomingEvent.NOTIFIED
        elif status is RestStatus.DISPLAYED:
            event = IncomingEvent.APP_DISPLAYED
        else:
            raise Conflict(f"{status.value} cannot be reported")
        await self.mark_received(user, MessageId(message_id), event)

    async def _received(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> StoredMessage | None:
        async with self.unit() as work:
            msg = await work.tx.get_message(user, message_id, Direction.INCOMING)
        if msg is None or msg.peer != other or msg.rest_session != session_id:
            return None
        return msg

    async def session_of(self, session_id: ChatSessionId) -> ChatSession | None:
        """Any session by internal id (tests, diagnostics)."""
        async with self.unit() as work:
            return await work.tx.session_by_id(session_id)


def _local_failure(reason: str) -> SessionFailed:
    return SessionFailed(leg=LegId(""), status=0, reason=reason)
