"""The SIP/MSRP side of 1-1 chat: ``bridge.chat.ports.SignallingPort`` over SipStack and MSRPStack.

Public API::

    signalling = SipSignalling(sip_stack, msrp_stack, profile=rcs.Profile.CPM)
    signalling.attach()            # installs the INVITE and MESSAGE handlers on the stack
    signalling.bind(chat.events)   # done by bridge.chat.assembly.build_chat
    ...                            # the SignallingPort methods (bridge/chat/ports.py)
    await signalling.close()       # BYE every live leg (bounded), stop background tasks

Why it looks like this
----------------------
The contract (``bridge/chat/ports.py``) asks every method to return once the
request is handed to the stack; outcomes come back as events. So each leg
(one INVITE dialog and its MSRP session) is a small record here, its SIP/MSRP
work runs in background tasks, and its events go through a per-leg serial
queue: the chat service sees them in wire order (SessionAccepted before the
messages of that leg; MSRP traffic that arrives while the session is still
binding is held until SessionAccepted is out). A drain task exists only while
a leg has events waiting, so 10,000 idle sessions own no task.

Wire behaviour (docs/protocol-mapping.md; its "Error mapping" for failures):

* Outgoing: INVITE to the peer URI with our ``actpass`` offer (multipart/mixed
  with the first message in CPIM when there is one), the profile's headers
  (``sip.rcs``), From/P-Asserted-Identity of the user (the stack). On 2xx the
  answer's ``a=setup`` decides who connects; the active side sends the empty
  bind SEND (sip.msrp). SessionAccepted follows the bind; a final failure is
  SessionFailed with its status; no final answer (timer B) is 408; a failing
  MSRP bind is status 0 after a BYE. A 2xx that crosses our CANCEL is ACKed
  and BYEd without an event.
* Incoming: an INVITE with an MSRP offer is classified (N1, ``rcs.classify_invite``):
  1-1 goes to the service as IncomingInvitation after a 180; group (403),
  store-and-forward notification sessions (403) and file transfer (488) are
  refused here with a reason phrase saying so. A store-and-forward push
  (Referred-By) is a 1-1 session whose sender is the Referred-By identity.
  A body we cannot use is 488 (SDP) or 415 (type); a malformed one 400.
* MSRP: chat messages and IMDNs go CPIM-wrapped with Failure-Report yes (the
  transaction 200 is "Sent"), isComposing bare (or CPIM when the peer only
  wraps it) with Failure-Report no. A closed MSRP connection ends the leg
  (BYE, SessionEnded): docs/protocol-mapping.md "MSRP errors".
* Group legs (docs/group-chat.md; ``bridge.signalling.groups``, ``.conference``):
  the bridge as a participant of a conference focus. Messages, isComposing and
  reports go CPIM-wrapped with the real From (the user) and To (the conference
  URI, or the original sender for a report); inbound, the CPIM From is the sender.
* SIP MESSAGE: pager-mode chat (``P-Preferred-Service ...cpm.msg``) and IMDNs
  with no live leg; inbound MESSAGEs with CPIM (text, IMDN, isComposing) or a
  bare text/isComposing body are answered 200 once the service took them, or
  with the status of its EventRejected.

The code is split by concern: ``base`` (legs, ordered events, inbound MSRP and
MESSAGE), ``sessions`` (INVITE legs), this module (the sending side).

* After a restart: :meth:`SipSignalling.end_stale_dialog` sends a BYE in a
  dialog of the previous run, rebuilt from the state the chat store kept
  (``DialogIds``: From/To with tags, remote target, route set, last CSeq).
  Its CSeq is the stored one plus :data:`STALE_CSEQ_STEP` (RFC 3261 §12.2.1.1
  wants it above every CSeq used before in the dialog; the store keeps the
  value of the time the leg came up, and the bridge sends no in-dialog
  request but the final BYE, so the step is a wide safety margin). The answer
  (200, 481, 408 or none within the bound) is only reported back.

Not handled yet: SIP session timers (no ``Session-Expires``; a peer's refresh
re-INVITE is answered with the same SDP by the stack), a new ``a=path`` after a
relay re-AUTH (``MSRPSession.on_path_change``) and RFC 6714 CEMA (we connect to
``a=path``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.chat.model import Composing, DialogIds, Invitee, LegId
from bridge.chat.ports import (
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
    SignallingError,
)
from bridge.ids import UserUri
from bridge.signalling import payload
from bridge.signalling.base import status_of
from bridge.signalling.legs import Leg, LegState
from bridge.signalling.sessions import SessionLegs
from sip import cpim, iscomposing, rcs
from sip.dialog import Dialog, DialogError, DialogId
from sip.errors import MSRPError, ProtocolError
from sip.usage import Handler

log = logging.getLogger(__name__)

BYE_GRACE = 2.0
"""Seconds ``close`` waits for the BYEs of live legs."""
STALE_CSEQ_STEP = 1000
"""Added to the stored local CSeq of a dialog from an earlier run (module docstring)."""
STALE_BYE_TIMEOUT = 10.0
"""Seconds :meth:`SipSignalling.end_stale_dialog` waits for the answer to its BYE."""
_MAX_CSEQ = 2**31 - 1


class SipSignalling(SessionLegs):
    """``SignallingPort`` over our SIP and MSRP stacks (module docstring: the behaviour)."""

    def attach(self, register: Callable[[str, Handler], None] | None = None) -> None:
        """Route the SIP stack's out-of-dialog INVITE and MESSAGE requests here.

        ``register`` (default: ``self.sip.on_request``) installs a handler; the
        composition root passes its router's fallback (``wiring.Router.default``)
        so that requests for a conference focus go to the focus instead.
        """
        install = register if register is not None else self.sip.on_request
        install("INVITE", self._on_invite)
        install("MESSAGE", self._on_message)

    async def close(self) -> None:
        """End every leg (BYE, CANCEL or 480, bounded by ``BYE_GRACE``); stop background work."""
        self._closing = True
        ends = [self._shutdown_leg(leg) for leg in list(self._legs.values())]
        if ends:
            await asyncio.wait([asyncio.ensure_future(e) for e in ends], timeout=BYE_GRACE)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._legs.clear()

    async def _shutdown_leg(self, leg: Leg) -> None:
        if leg.state is LegState.RINGING and leg.incoming is not None:
            leg.move(LegState.ENDED)
            leg.incoming.reject(480)
            return
        if leg.state is LegState.INVITING:
            self._cancel(leg)
            return
        await self._hang_up(leg)

    async def end_stale_dialog(self, ids: DialogIds, timeout: float = STALE_BYE_TIMEOUT) -> int:
        """BYE a dialog a previous run left established (RFC 3261 §15.1.1); its answer.

        Returns the final status of the BYE (200, 481 ...), or 408 when none
        came within ``timeout`` seconds (the transaction then ends on its own
        timer). Raises ``SignallingError`` when ``ids`` cannot make a dialog
        or the stack is down.
        """
        self._check_running()
        dialog = stale_dialog(ids)
        try:
            response = await asyncio.wait_for(
                self.sip.send_in_dialog(dialog, "BYE", []), timeout=timeout
            )
        except TimeoutError:
            return 408
        except ProtocolError as exc:
            return status_of(exc) or 408
        return response.status

    # -- group legs (bridge.signalling.groups) ---------------------------------------

    async def start_group(
        self,
        leg: LegId,
        user: UserUri,
        factory: str,
        invitees: tuple[Invitee, ...],
        *,
        subject: str | None = None,
    ) -> None:
        """INVITE the conference factory with the recipient list (R9)."""
        await self.groups.start(leg, user, factory, invitees, subject)

    async def invite_participants(self, leg: LegId, invitees: tuple[Invitee, ...]) -> None:
        """One in-dialog REFER per invitee (R11 POST, N13)."""
        await self.groups.invite(leg, invitees)

    async def remove_participant(self, leg: LegId, participant: UserUri) -> None:
        """REFER ``Refer-To: <participant;method=BYE>`` (R12 DELETE)."""
        await self.groups.remove(leg, participant)

    async def leave_group(self, leg: LegId) -> None:
        """BYE with ``Reason: SIP;cause=200``, un-SUBSCRIBE, close MSRP (R10 DELETE)."""
        await self.groups.leave(leg)

    # -- sending -------------------------------------------------------------------

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        """MSRP SEND of the CPIM chat message; its MessageSendResult follows."""
        record = self._up(leg)
        assert record.remote is not None
        if not record.remote.accepts(cpim.CONTENT_TYPE):
            raise SignallingError("the peer does not accept message/cpim", 415)
        body = payload.chat_message(self.profile, message, group=record.group)
        self._spawn(self._send_chat(record, message, body))

    async def _send_chat(self, leg: Leg, message: OutgoingMessage, body: bytes) -> None:
        assert leg.msrp is not None
        try:
            await leg.msrp.send(cpim.CONTENT_TYPE, body)
        except MSRPError as exc:
            result = MessageSendResult(
                message.user, message.message_id, False, exc.status, exc.reason
            )
        else:
            result = MessageSendResult(message.user, message.message_id, True)
        self._post(leg, result)

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        """MSRP SEND of an isComposing document (bare for 1-1; CPIM if the peer only wraps it)."""
        record = self._up(leg)
        assert record.remote is not None and record.msrp is not None
        body = payload.composing(composing)
        if record.group:  # always wrapped: the focus relays it with our From (contract 4)
            content_type = cpim.CONTENT_TYPE
            body = payload.wrapped_composing(
                self.profile, user, record.peer, body, self.clock(), group=True
            )
        elif record.remote.accepts(iscomposing.CONTENT_TYPE):
            content_type = iscomposing.CONTENT_TYPE
        elif record.remote.accepts(iscomposing.CONTENT_TYPE, wrapped=True):
            content_type = cpim.CONTENT_TYPE
            body = payload.wrapped_composing(self.profile, user, record.peer, body, self.clock())
        else:
            log.info("x leg %s: the peer takes no isComposing; not sent", leg)
            return
        self._spawn(self._send_quietly(record, content_type, body, "isComposing"))

    async def _send_quietly(self, leg: Leg, content_type: str, body: bytes, what: str) -> None:
        assert leg.msrp is not None
        try:
            await leg.msrp.send(content_type, body, failure_report="no")
        except MSRPError as exc:
            log.info("x %s on leg %s not sent: %s", what, leg.id, exc)

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        """Send the IMDN on the live leg, else by MESSAGE (docs/protocol-mapping.md "Reports")."""
        self._spawn(self.deliver_report(leg, report))

    async def deliver_report(self, leg: LegId | None, report: OutgoingReport) -> bool:
        """:meth:`send_report`, awaited (``bridge.chat.ports.ReportDelivery``): True once the
        peer took the IMDN (MSRP 200 on the leg, or a 2xx to the MESSAGE), False if lost.
        """
        self._check_running()
        record = self._legs.get(leg) if leg is not None else None
        group = record is not None and record.group
        body = payload.report(self.profile, report, self.clock(), group=group)
        if record is not None and record.state is LegState.UP and record.msrp is not None:
            return await self._report_on_leg(record, report, body)
        return await self._report_by_message(report, body)

    async def _report_on_leg(self, leg: Leg, report: OutgoingReport, body: bytes) -> bool:
        assert leg.msrp is not None
        try:
            await leg.msrp.send(cpim.CONTENT_TYPE, body)
        except MSRPError as exc:
            log.info("x report on leg %s failed (%s): by SIP MESSAGE", leg.id, exc)
            return await self._report_by_message(report, body)
        return True

    async def _report_by_message(self, report: OutgoingReport, body: bytes) -> bool:
        target = report.route[0] if report.route else report.peer
        try:
            response = await self.sip.send_request(
                "MESSAGE",
                target,
                sender=report.user,
                to=report.peer,
                headers=rcs.pager_headers(self.profile),
                body=body,
                content_type=cpim.CONTENT_TYPE,
            )
        except ProtocolError as exc:
            log.warning("x %s report for %s lost: %s", report.kind.value, report.message_id, exc)
            return False
        if not response.is_success:
            log.warning(
                "x %s report for %s refused: %d %s",
                report.kind.value,
                report.message_id,
                response.status,
                response.reason,
            )
            return False
        return True

    async def send_pager(self, message: OutgoingMessage) -> None:
        """Send a chat message by SIP MESSAGE (CPIM; adhoc pager mode); its result follows."""
        self._check_running()
        body = payload.chat_message(self.profile, message)
        self._spawn(self._pager(message, body))

    async def _pager(self, message: OutgoingMessage, body: bytes) -> None:
        try:
            response = await self.sip.send_request(
                "MESSAGE",
                message.peer,
                sender=message.user,
                headers=rcs.pager_headers(self.profile),
                body=body,
                content_type=cpim.CONTENT_TYPE,
            )
        except ProtocolError as exc:
            status = status_of(exc) or 408
            result = MessageSendResult(message.user, message.message_id, False, status, str(exc))
        else:
            result = MessageSendResult(
                message.user,
                message.message_id,
                response.is_success,
                response.status,
                "" if response.is_success else response.reason,
            )
        await self._deliver(result)


def stale_dialog(ids: DialogIds) -> Dialog:
    """The dialog ``ids`` describes, with its local CSeq moved past the stored one.

    Raises ``SignallingError`` when a field the request needs is missing or
    does not parse.
    """
    if not ids.can_bye:
        raise SignallingError("the stored dialog state is incomplete", 0)
    assert ids.call_id and ids.local_tag and ids.remote_tag
    assert ids.local_uri and ids.remote_uri and ids.remote_target
    try:
        return Dialog.restore(
            DialogId(ids.call_id, ids.local_tag, ids.remote_tag),
            local=ids.local_uri,
            remote=ids.remote_uri,
            remote_target=ids.remote_target,
            route_set=ids.route_set,
            local_cseq=min((ids.local_cseq or 0) + STALE_CSEQ_STEP, _MAX_CSEQ - 1),
            is_uac=bool(ids.uac),
        )
    except DialogError as exc:
        raise SignallingError(str(exc), 0) from exc
