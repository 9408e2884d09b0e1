"""1-1 chat messages: send, read, status, report (OMA REST Chat v1.0 messages, RFC 5438).

:class:`Messages` serves the message resources of a 1-1 target: a confirmed
session's sessionId or ``adhoc`` (handed to ``bridge.chat.implicit.AdhocChat``).
It is also the ``Notifier`` delivery listener (:meth:`Messages.on_delivered`):
once a chatMessageNotification reached the app, the "delivered" IMDN goes out
if the sender asked for it (once the notification reached the app); :meth:`Messages.mark_received`
applies that and the app's own reports to a received message (1-1 or group) and
sends the IMDNs it makes due. Built by ``bridge.chat.assembly.build_chat``;
recovery (``bridge.chat.recovery``) sends the reports a crash left owed through it.
Errors are ``bridge.errors``: ``NotFound`` (404) for an unknown message, or one
addressed under the wrong peer or sessionId; ``Conflict`` (409 POL0001) for a
message on a session that is over or an invitation not yet accepted, or the
status of a message not yet acknowledged by the next hop (REST has no
"pending" MessageStatus).

Choices written down here:

* isComposing is dropped (204, nothing sent) unless the session is connected;
  on ``adhoc`` it uses the live implicit session only (docs/protocol-mapping.md "isComposing").
* ``PUT Delivered`` after the automatic delivery report is a no-op;
  ``PUT Displayed`` sends the display IMDN only when it was requested.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from bridge.chat import adhoc, delivery, notifications, one2one
from bridge.chat.confirmed import confirmed_session
from bridge.chat.core import ChatCore, confirmed_key, is_connected, is_terminal, message_key
from bridge.chat.delivery import IncomingEvent, IncomingStatus, OutgoingStatus
from bridge.chat.implicit import AdhocChat
from bridge.chat.model import (
    ADHOC,
    Composing,
    Direction,
    OutgoingText,
    RestStatus,
    SessionKind,
    StoredMessage,
    dispositions_for,
    new_message_id,
)
from bridge.chat.ports import SignallingError
from bridge.errors import Conflict, NotFound
from bridge.ids import MessageId, UserUri
from bridge.ports import Notification

log = logging.getLogger(__name__)

S = one2one.SessionState


def rest_status(msg: StoredMessage) -> RestStatus:
    """The REST status of a sent or received message; 409 while a sent one awaits its ack."""
    if msg.direction is Direction.INCOMING:
        return delivery.INCOMING_REST[IncomingStatus(msg.status)]
    status = delivery.OUTGOING_REST[OutgoingStatus(msg.status)]
    if status is None:
        raise Conflict(f"message {msg.id} has no status yet (waiting to be sent)")
    return status


def report_event(status: RestStatus) -> IncomingEvent:
    """The received message's event for the app's ``PUT`` of ``status`` (409 if not one)."""
    if status is RestStatus.DELIVERED:
        return IncomingEvent.NOTIFIED
    if status is RestStatus.DISPLAYED:
        return IncomingEvent.APP_DISPLAYED
    raise Conflict(f"{status.value} cannot be reported")


class Messages:
    """1-1 message use cases and the delivery listener, over a shared ``ChatCore``."""

    def __init__(self, core: ChatCore, adhoc_chat: AdhocChat) -> None:
        self.core = core
        self.adhoc = adhoc_chat

    async def send_message(
        self, user: UserUri, other: UserUri, session_id: str, text: OutgoingText
    ) -> tuple[StoredMessage, bool]:
        """Send a chat message on a confirmed session or ``adhoc``; False on a replay."""
        core = self.core
        now = core.clock()
        if text.client_correlator is not None:
            async with core.unit() as work:
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
            inserted = await self.adhoc.pump(user, other, msg)
            assert inserted is not None
            return inserted, True
        async with core.locks.hold(confirmed_key(session_id)):
            async with core.unit() as work:
                cs = await confirmed_session(work.tx, user, other, session_id)
                state = S(cs.state)
                if state in one2one.TERMINAL:
                    raise Conflict(f"chat session {session_id} is over ({cs.state})")
                if state is S.RINGING:
                    raise Conflict(f"chat session {session_id}: accept the invitation first")
                # born SENDING on a connected session, QUEUED until it connects
                first = OutgoingStatus.SENDING if state is S.CONNECTED else OutgoingStatus.QUEUED
                msg = await work.tx.insert_message(
                    replace(msg, session_id=cs.id, status=first.value),
                    expires_at=core.retention(now),
                )
            if msg.status == OutgoingStatus.SENDING.value:
                assert cs.leg is not None
                await core.send_on_leg(cs.leg, [msg])
        log.debug("> message %s from %s to %s (%s)", msg.id, user, other, msg.status)
        return msg, True

    async def send_composing(
        self, user: UserUri, other: UserUri, session_id: str, composing: Composing
    ) -> None:
        """Send a typing indication if the session is connected; otherwise drop it (R8)."""
        core = self.core
        async with core.unit() as work:
            if session_id == ADHOC:
                cs = await work.tx.live_adhoc_session(
                    user, other, [adhoc.AdhocState.CONNECTED.value]
                )
            else:
                cs = await confirmed_session(work.tx, user, other, session_id)
        if session_id != ADHOC and cs is not None and is_terminal(cs):
            raise Conflict(f"chat session {session_id} is over ({cs.state})")
        if cs is None or not is_connected(cs) or cs.leg is None:
            log.debug("- composing from %s to %s dropped: no connected session", user, other)
            return
        if cs.kind is SessionKind.ADHOC:
            self.adhoc.touch(cs)
        try:
            await core.signalling.send_composing(cs.leg, user, composing)
        except SignallingError as exc:
            log.warning("x composing on %s lost: %s", cs.leg, exc)

    async def get_message(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> StoredMessage:
        """A sent or received message addressed under this peer and sessionId (R7b)."""
        async with self.core.unit() as work:
            found = await work.tx.find_messages(user, message_id)
        for msg in found:
            if msg.peer == other and msg.rest_session == session_id:
                return msg
        raise NotFound("chat message", message_id)

    async def get_message_status(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> RestStatus:
        """The REST status of a message (R7 GET); 409 while a sent one awaits its ack."""
        return rest_status(await self.get_message(user, other, session_id, message_id))

    async def report_message(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str, status: RestStatus
    ) -> None:
        """Report Delivered/Displayed for a received message (R7 PUT; IMDN if requested)."""
        msg = await self.get_message(user, other, session_id, message_id)
        if msg.direction is Direction.OUTGOING:
            found = await self._received(user, other, session_id, message_id)
            if found is None:
                raise Conflict(f"message {message_id} was sent by {user}: nothing to report")
        await self.mark_received(user, MessageId(message_id), report_event(status))

    async def _received(
        self, user: UserUri, other: UserUri, session_id: str, message_id: str
    ) -> StoredMessage | None:
        async with self.core.unit() as work:
            msg = await work.tx.get_message(user, message_id, Direction.INCOMING)
        if msg is None or msg.peer != other or msg.rest_session != session_id:
            return None
        return msg

    # --- the delivery listener ---------------------------------------------------------------

    async def on_delivered(self, n: Notification) -> None:
        """Notifier listener: a chatMessageNotification reached the app → "delivered" IMDN."""
        if n.root != notifications.CHAT_MESSAGE or "chatMessage" not in n.body:
            return
        message_id = n.body.get("messageId")
        if isinstance(message_id, str):
            await self.mark_received(n.user, MessageId(message_id), IncomingEvent.NOTIFIED)

    async def mark_received(
        self, user: UserUri, message_id: MessageId, event: IncomingEvent
    ) -> StoredMessage | None:
        """Apply ``event`` to a received message and send the IMDNs it makes due."""
        core = self.core
        async with core.locks.hold(message_key(user, message_id)):
            async with core.unit() as work:
                msg = await work.tx.get_message(user, message_id, Direction.INCOMING)
                if msg is None:
                    return None
                msg, due = await core.incoming_transition(work, msg, event)
                leg = await core.report_leg(work.tx, msg) if due else None
            if due:
                await core.send_reports(msg, due, leg)
        return msg
