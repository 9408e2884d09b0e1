"""Confirmed 1-1 chat sessions: the REST use cases (OMA REST Chat v1.0 1-1 sessions).

:class:`ConfirmedChat` creates, reads, accepts and ends the confirmed sessions
of the app, over the shared runtime (``bridge.chat.core.ChatCore``). The
incoming side of a confirmed session (invitation, ringing timer, answer, BYE)
is ``bridge.chat.inbound.OneToOneInbound``; its messages are
``bridge.chat.messages.Messages``. Built by ``bridge.chat.assembly.build_chat``.
Errors are ``bridge.errors``: ``NotFound`` (404) for an unknown session, or one
addressed under the wrong peer; ``Conflict`` (409 POL0001) for an operation the
state does not allow (the ``one2one`` machine).

Choices written down here:

* The app's own DELETE emits no chatEventNotification (the 204 is its answer):
  before the answer it CANCELs (session ``Cancelled``, shown ``Disconnected``),
  while ringing it declines with 486, once connected it sends BYE.
* A confirmed session whose INVITE cannot even be started (stack down) is
  created and goes to Failed at once, with its ``Failed`` notification.
* An unanswered outgoing INVITE is CANCELled after ``chat_invite_timeout``
  and the session Fails, so a dead IMS core never leaves the app hanging.
"""

from __future__ import annotations

import logging

from bridge.chat import one2one
from bridge.chat.core import ChatCore, Coro, confirmed_key, session_key
from bridge.chat.model import (
    ChatSession,
    Direction,
    NewSession,
    SessionKind,
    new_leg_id,
    new_session_id,
)
from bridge.chat.ports import SignallingError
from bridge.chat.store import ChatTransaction
from bridge.errors import Conflict, NotFound
from bridge.ids import UserUri

log = logging.getLogger(__name__)

S = one2one.SessionState
E = one2one.SessionEvent

DECLINE = 486
"""SIP status of a 1-1 decline and of an unanswered invitation.

docs/protocol-mapping.md "Confirmed 1-1 sessions".
"""


async def confirmed_session(
    tx: ChatTransaction, user: UserUri, other: UserUri, session_id: str
) -> ChatSession:
    """``user``'s confirmed session ``session_id`` with ``other`` (NotFound otherwise)."""
    cs = await tx.get_session(user, session_id)
    if cs is None or cs.peer != other or cs.kind is not SessionKind.CONFIRMED:
        raise NotFound("chat session", session_id)
    return cs


class ConfirmedChat:
    """Confirmed 1-1 sessions (R3-R5) over a shared ``ChatCore``."""

    def __init__(self, core: ChatCore) -> None:
        self.core = core

    async def create_session(
        self, user: UserUri, other: UserUri, new: NewSession
    ) -> tuple[ChatSession, bool]:
        """Invite ``other`` to a confirmed 1-1 session; False on a clientCorrelator replay."""
        core = self.core
        now = core.clock()
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
        async with core.locks.hold(session_key(cs)):
            async with core.unit() as work:
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
                await core.signalling.start_session(cs.leg, user, other, subject=new.subject)
            except SignallingError as exc:
                async with core.unit() as work:
                    cs = await core.transition(work, cs, E.SETUP_FAILED, reason=str(exc))
                return cs, True
            core.arm("invite:" + cs.id, core.settings.chat_invite_timeout, self._invite_out(cs))
        return cs, True

    def _invite_out(self, cs: ChatSession) -> Coro:
        core = self.core

        async def expire() -> None:
            async with core.locks.hold(session_key(cs)):
                async with core.unit() as work:
                    current = await work.tx.session_by_id(cs.id)
                    if current is None or current.state != S.INVITING.value:
                        return
                    await core.transition(
                        work, current, E.SETUP_FAILED, reason="408 no answer (invite timeout)"
                    )
            assert cs.leg is not None
            log.info("x invitation %s unanswered: cancelling", cs.leg)
            try:
                await core.signalling.cancel_session(cs.leg)
            except SignallingError as exc:
                log.warning("x cannot cancel %s: %s", cs.leg, exc)

        return expire

    async def get_session(self, user: UserUri, other: UserUri, session_id: str) -> ChatSession:
        """The confirmed session ``session_id`` of ``user`` with ``other`` (404 otherwise)."""
        async with self.core.unit() as work:
            return await confirmed_session(work.tx, user, other, session_id)

    async def end_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Decline (486), cancel (CANCEL) or end (BYE) the session (R4 DELETE)."""
        core = self.core
        async with core.locks.hold(confirmed_key(session_id)):
            async with core.unit() as work:
                cs = await confirmed_session(work.tx, user, other, session_id)
                before = S(cs.state)
                cs = await core.transition(work, cs, E.APP_END)
            assert cs.leg is not None
            try:
                if before is S.RINGING:
                    await core.signalling.reject_session(cs.leg, DECLINE)
                elif before is S.INVITING:
                    await core.signalling.cancel_session(cs.leg)
                else:
                    await core.signalling.end_session(cs.leg)
            except SignallingError as exc:
                log.warning("x ending %s on the wire failed: %s", cs.leg, exc)

    async def accept_session(self, user: UserUri, other: UserUri, session_id: str) -> None:
        """Accept an incoming invitation (R5 PUT Connected): 200 OK, then MSRP."""
        core = self.core
        async with core.locks.hold(confirmed_key(session_id)):
            async with core.unit() as work:
                cs = await confirmed_session(work.tx, user, other, session_id)
                cs = await core.transition(work, cs, E.APP_ACCEPT)
            core.disarm("ring:" + cs.id)
            assert cs.leg is not None
            try:
                await core.signalling.accept_session(cs.leg)
            except SignallingError as exc:
                async with core.unit() as work:
                    await core.transition(work, cs, E.SETUP_FAILED, reason=str(exc))
