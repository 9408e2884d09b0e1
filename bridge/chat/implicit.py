"""Implicit 1-1 sessions: the ``adhoc`` target of the REST API.

Wire behaviour: docs/protocol-mapping.md "Adhoc messages".

:class:`AdhocChat` sends the detached queued messages of a pair
(:meth:`AdhocChat.pump`): by SIP MESSAGE in ``pager`` mode, on the live
implicit session, or on a new one whose INVITE carries the first message. It
owns the implicit session's timers (INVITE timeout, idle timer) and its close,
which sends the unsent messages by pager when the peer refused the session
(403/405/415/488/606 and ``chat_pager_fallback``) and fails them
otherwise. Its callers: ``bridge.chat.messages.Messages`` (a new message),
``bridge.chat.inbound.OneToOneInbound`` (answer, end, traffic: the idle timer)
and ``bridge.chat.recovery`` (messages requeued after a restart). Built by
``bridge.chat.assembly.build_chat``.
"""

from __future__ import annotations

import logging

from bridge.chat import adhoc, delivery
from bridge.chat.core import ChatCore, Coro, Unit, is_connected, pair_key
from bridge.chat.delivery import OutgoingEvent, OutgoingStatus
from bridge.chat.model import (
    ADHOC,
    ChatSession,
    Direction,
    LegId,
    SessionKind,
    StoredMessage,
    new_leg_id,
    new_session_id,
)
from bridge.chat.ports import SessionCancelled, SessionEnded, SessionFailed, SignallingError
from bridge.ids import UserUri

log = logging.getLogger(__name__)


class AdhocChat:
    """Implicit sessions over a shared ``ChatCore`` (module docstring)."""

    def __init__(self, core: ChatCore) -> None:
        self.core = core

    async def pump(
        self, user: UserUri, peer: UserUri, new: StoredMessage | None = None
    ) -> StoredMessage | None:
        """Send the pair's detached queued adhoc messages: pager, live session, or a new one.

        ``new`` (a QUEUED, detached message) is stored first, in the same unit;
        it is returned as stored.
        """
        core = self.core
        async with core.locks.hold(pair_key(user, peer)):
            async with core.unit() as work:
                if new is not None:
                    new = await work.tx.insert_message(new, expires_at=core.retention(work.now))
                queued = await work.tx.detached_messages(
                    user, peer, ADHOC, OutgoingStatus.QUEUED.value
                )
                if not queued:
                    return new
                if core.settings.chat_adhoc_mode == "pager":
                    pager = [
                        await core.outgoing_transition(work, m, OutgoingEvent.DISPATCH)
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
                        m = await core.outgoing_transition(
                            work,
                            m,
                            OutgoingEvent.DISPATCH if go else OutgoingEvent.REQUEUE,
                            session=cs,
                        )
                        if go:
                            sending.append(m)
            if pager:
                await core.send_by_pager(pager)
                return new
            assert cs is not None and cs.leg is not None
            if opened:
                log.info("> implicit session %s from %s to %s", cs.leg, user, peer)
                try:
                    await core.signalling.start_session(
                        cs.leg, user, peer, first=core.outgoing(sending[0])
                    )
                except SignallingError as exc:
                    async with core.unit() as work:
                        fallback = await self.close(
                            work, cs, _local_failure(str(exc)), exc.status, str(exc)
                        )
                    await core.send_by_pager(fallback)
                    return new
                timeout = core.settings.chat_invite_timeout
                core.arm("invite:" + cs.id, timeout, self._invite_out(cs))
                return new
            if is_connected(cs):
                self.touch(cs)
                await core.send_on_leg(cs.leg, sending)
        return new

    def _invite_out(self, cs: ChatSession) -> Coro:
        core = self.core

        async def expire() -> None:
            assert cs.leg is not None
            async with core.locks.hold(pair_key(cs.user, cs.peer)):
                async with core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != adhoc.AdhocState.CONNECTING.value:
                        return
                    reason = "408 no answer (invite timeout)"
                    failed = SessionFailed(cs.leg, 408, reason)
                    await self.close(work, current, failed, 408, reason)
            log.info("x implicit session %s unanswered: cancelling", cs.leg)
            try:
                await core.signalling.cancel_session(cs.leg)
            except SignallingError as exc:
                log.warning("x cannot cancel %s: %s", cs.leg, exc)

        return expire

    def _new_implicit(self, user: UserUri, peer: UserUri) -> ChatSession:
        now = self.core.clock()
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

    async def close(
        self,
        work: Unit,
        cs: ChatSession,
        event: SessionFailed | SessionEnded | SessionCancelled,
        status: int,
        reason: str,
    ) -> list[StoredMessage]:
        """Close an implicit session; return the messages to send by pager instead."""
        core = self.core
        a_event = (
            adhoc.AdhocEvent.SETUP_FAILED
            if isinstance(event, SessionFailed)
            else adhoc.AdhocEvent.PEER_END
        )
        await core.transition(work, cs, a_event, reason=reason)
        unsent = await work.tx.session_messages(
            cs.id, Direction.OUTGOING, [s.value for s in delivery.UNSENT]
        )
        pager = (
            isinstance(event, SessionFailed)
            and status in adhoc.PAGER_FALLBACK_STATUSES
            and core.settings.chat_pager_fallback
            and cs.direction is Direction.OUTGOING
        )
        moved: list[StoredMessage] = []
        for msg in unsent:
            if not pager:
                await core.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)
                continue
            if msg.status == OutgoingStatus.QUEUED.value:
                msg = await core.outgoing_transition(work, msg, OutgoingEvent.DISPATCH, detach=True)
            else:
                msg = await core.outgoing_transition(work, msg, OutgoingEvent.REQUEUE, detach=True)
                msg = await core.outgoing_transition(work, msg, OutgoingEvent.DISPATCH)
            moved.append(msg)
        return moved

    def touch(self, cs: ChatSession) -> None:
        """Restart the idle timer of an implicit session (docs/protocol-mapping.md "Timers")."""
        core = self.core
        core.arm("idle:" + cs.id, core.settings.chat_idle_timeout, self._idle_out(cs))

    def _idle_out(self, cs: ChatSession) -> Coro:
        core = self.core

        async def expire() -> None:
            async with core.locks.hold(pair_key(cs.user, cs.peer)):
                async with core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != adhoc.AdhocState.CONNECTED.value:
                        return
                    await core.transition(work, current, adhoc.AdhocEvent.IDLE)
                    unsent = [s.value for s in delivery.UNSENT]
                    for msg in await work.tx.session_messages(cs.id, Direction.OUTGOING, unsent):
                        await core.outgoing_transition(work, msg, OutgoingEvent.SEND_ERROR)
                assert cs.leg is not None
                log.info("- implicit session %s to %s idle: closing", cs.id, cs.peer)
                await core.end_leg(cs.leg)

        return expire


def _local_failure(reason: str) -> SessionFailed:
    return SessionFailed(leg=LegId(""), status=0, reason=reason)
