"""The SIP/MSRP side of 1-1 chat: ``bridge.chat.ports.SignallingPort`` over SipStack and MSRPStack.

Public API::

    signalling = SipSignalling(sip_stack, msrp_stack, profile=rcs.Profile.CPM)
    signalling.attach()            # installs the INVITE and MESSAGE handlers on the stack
    signalling.bind(chat_service)  # done by build_chat_service
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

Wire behaviour (sip-msrp-mapping.md §1.0-§1.3, §2):

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
  (BYE, SessionEnded), per mapping §2.2 (408/481).
* SIP MESSAGE: pager-mode chat (``P-Preferred-Service ...cpm.msg``) and IMDNs
  with no live leg; inbound MESSAGEs with CPIM (text, IMDN, isComposing) or a
  bare text/isComposing body are answered 200 once the service took them, or
  with the status of its EventRejected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bridge.chat.model import Composing, LegId
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    OutgoingMessage,
    OutgoingReport,
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
from bridge.signalling import payload
from bridge.signalling.legs import Leg, LegState
from sip import cpim, iscomposing, rcs, sdp
from sip.errors import CodecError, MSRPError, ProtocolError, SIPError
from sip.message import Request
from sip.msrp import MSRPStack
from sip.msrp.events import Event as MSRPEvent
from sip.msrp.events import MessageReceived as MSRPMessageReceived
from sip.msrp.events import SessionStatus, StateChanged
from sip.stack import IncomingInvite, IncomingRequest, InviteSession, SipStack

log = logging.getLogger(__name__)

BYE_GRACE = 2.0
"""Seconds ``close`` waits for the BYEs of live legs."""
CANCEL_GRACE = 32.0
"""Seconds beyond the INVITE timeout before an unanswered INVITE is given up (64*T1)."""
BIND_TIMEOUT = 10.0
"""Seconds the MSRP bind may take after the 2xx (mapping N3: then Failed + BYE)."""
_INVITE_ACCEPT = "application/sdp, multipart/mixed"
_MESSAGE_ACCEPT = "message/cpim, text/plain, application/im-iscomposing+xml"


def _now() -> datetime:
    return datetime.now(UTC)


def _fallback_id(call_id: str, cseq: int) -> str:
    """A stable message id for a MESSAGE without imdn.Message-ID (retransmissions dedupe)."""
    return "sip-" + hashlib.sha1(f"{call_id}:{cseq}".encode()).hexdigest()[:24]  # noqa: S324


def _asserted(request: Request) -> UserUri:
    """The sender of a request: P-Asserted-Identity (trusted core), else From."""
    pai = request.get_all("P-Asserted-Identity")
    for value in pai:
        try:
            return UserUri(rcs.normalize_user(value))
        except ValueError:
            continue
    return UserUri(rcs.normalize_user(str(request.from_.uri)))


class SipSignalling:
    """``SignallingPort`` over our SIP and MSRP stacks (module docstring: the behaviour)."""

    def __init__(
        self,
        sip_stack: SipStack,
        msrp_stack: MSRPStack,
        *,
        profile: rcs.Profile = rcs.Profile.CPM,
        invite_timeout: float = 40.0,
        bind_timeout: float = BIND_TIMEOUT,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.sip = sip_stack
        self.msrp = msrp_stack
        self.profile = profile
        self.invite_timeout = invite_timeout
        self.bind_timeout = bind_timeout
        self.clock = clock
        self._sink: SignallingEvents | None = None
        self._legs: dict[LegId, Leg] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._closing = False

    # --- lifetime ------------------------------------------------------------------------

    def bind(self, sink: SignallingEvents) -> None:
        """Set the receiver of every inbound event (``build_chat_service`` calls it)."""
        self._sink = sink

    def attach(self) -> None:
        """Route the SIP stack's out-of-dialog INVITE and MESSAGE requests here."""
        self.sip.on_request("INVITE", self._on_invite)
        self.sip.on_request("MESSAGE", self._on_message)

    @property
    def leg_count(self) -> int:
        """Number of legs held."""
        return len(self._legs)

    def leg_state(self, leg: LegId) -> LegState | None:
        """The state of ``leg``, or None when unknown (tests, diagnostics)."""
        found = self._legs.get(leg)
        return None if found is None else found.state

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

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("signalling task failed", exc_info=task.exception())

    def _check_running(self) -> None:
        if self._closing:
            raise SignallingError("signalling is shutting down", 503)
        try:
            self.sip.transport  # noqa: B018 - raises while the stack is not started
        except ProtocolError as exc:
            raise SignallingError(str(exc), 503) from None

    def _up(self, leg_id: LegId) -> Leg:
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is not LegState.UP or leg.msrp is None:
            state = "unknown" if leg is None else leg.state.value
            raise SignallingError(f"leg {leg_id} is not connected ({state})", 481)
        return leg

    def _forget(self, leg: Leg) -> None:
        if self._legs.get(leg.id) is leg:
            del self._legs[leg.id]

    # --- events ---------------------------------------------------------------------------

    def _post(self, leg: Leg, event: SignallingEvent) -> None:
        """Queue ``event`` behind the leg's earlier events (one drain task while non-empty)."""
        leg.events.append(event)
        if not leg.draining:
            leg.draining = True
            self._spawn(self._drain(leg))

    def _post_inbound(self, leg: Leg, event: SignallingEvent) -> None:
        if leg.held is not None:
            leg.held.append(event)
        else:
            self._post(leg, event)

    async def _drain(self, leg: Leg) -> None:
        try:
            while leg.events:
                await self._deliver(leg.events.popleft())
        finally:
            leg.draining = False

    async def _deliver(self, event: SignallingEvent) -> None:
        if self._closing:
            # shutdown: the chat service stopped first; restart recovery settles these legs
            log.debug("x %s during shutdown: not delivered", type(event).__name__)
            return
        if self._sink is None:
            log.error("x %s with no chat service bound: dropped", type(event).__name__)
            return
        try:
            await self._sink.handle_event(event)
        except EventRejected as exc:
            log.info("x %s refused by the chat service: %s", type(event).__name__, exc)
        except Exception:
            log.exception("chat service failed on %s", type(event).__name__)

    def _accepted(self, leg: Leg) -> None:
        if not leg.move(LegState.UP):
            return
        log.info("- leg %s up (%s -> %s)", leg.id, leg.user, leg.peer)
        self._post(leg, SessionAccepted(leg.id, leg.dialog_ids()))
        if leg.first_id is not None:
            self._post(leg, MessageSendResult(leg.user, leg.first_id, True))
        held, leg.held = leg.held or [], None
        for event in held:
            self._post(leg, event)

    def _failed(self, leg: Leg, status: int, reason: str) -> None:
        """End a leg that never came up and report SessionFailed (unless we cancelled it)."""
        cancelled = leg.cancelled
        leg.move(LegState.ENDED)
        self._forget(leg)
        if leg.msrp is not None:
            self._spawn(leg.msrp.close())
        if not cancelled:
            log.info("x leg %s failed: %s %s", leg.id, status, reason)
            self._post(leg, SessionFailed(leg.id, status, reason))

    def _ended(self, leg: Leg, reason: str) -> None:
        """The peer or the network ended a leg: report SessionEnded and clean up."""
        was = leg.state
        if not leg.move(LegState.ENDED):
            return
        self._forget(leg)
        log.info("- leg %s ended: %s", leg.id, reason)
        if leg.session is not None and not leg.session.ended.is_set():
            self._spawn(leg.session.bye())
        if leg.msrp is not None:
            self._spawn(leg.msrp.close())
        if was is LegState.CONNECTING and leg.outgoing:
            self._post(leg, SessionFailed(leg.id, 0, reason))
        else:
            self._post(leg, SessionEnded(leg.id, reason))

    # --- outgoing sessions (R3, R4) --------------------------------------------------------

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        """Send an INVITE with our MSRP offer (and ``first`` in CPIM) from ``user`` to ``peer``."""
        self._check_running()
        if leg in self._legs:
            raise SignallingError(f"leg {leg} exists")
        record = Leg(leg, user, peer, outgoing=True)
        record.chat_ids = rcs.new_chat_ids(self.profile)
        record.first_id = first.message_id if first is not None else None
        self._legs[leg] = record
        self._spawn(self._run_outgoing(record, subject, first))

    async def _run_outgoing(
        self, leg: Leg, subject: str | None, first: OutgoingMessage | None
    ) -> None:
        try:
            leg.msrp = await self.msrp.create_session(accept_types=payload.ACCEPT_TYPES)
        except (MSRPError, OSError) as exc:
            self._failed(leg, 0, f"MSRP relay: {exc}")
            return
        if leg.ended:
            await leg.msrp.close()
            return
        offer = payload.offer(self.msrp.advertised_host, self.msrp.port, leg.msrp.path_attribute)
        cpim_first = payload.chat_message(self.profile, first) if first is not None else None
        body, content_type = payload.invite_body(offer, cpim_first)
        assert leg.chat_ids is not None
        headers = list(rcs.session_headers(self.profile, leg.chat_ids))
        if subject:
            headers.append(("Subject", subject))
        try:
            leg.call = self.sip.invite(
                str(leg.peer),
                sender=str(leg.user),
                body=body,
                content_type=content_type,
                headers=headers,
            )
            response = await asyncio.wait_for(
                leg.call.response(), self.invite_timeout + CANCEL_GRACE
            )
        except TimeoutError:
            if leg.call is not None and not leg.cancelled:
                self._spawn(leg.call.cancel())
            self._failed(leg, 408, "no final answer to the INVITE")
            return
        except (SIPError, CodecError) as exc:
            self._failed(leg, _status_of(exc) or 408, str(exc))
            return
        if leg.cancelled or leg.ended:
            if response.is_success and leg.call.session is not None:
                log.info("x 2xx crossed the CANCEL of %s: BYE", leg.id)
                await leg.call.session.bye()
            if leg.msrp is not None:
                await leg.msrp.close()
            return
        if not response.is_success:
            self._failed(leg, response.status, response.reason)
            return
        session = leg.call.session
        assert session is not None
        leg.session = session
        session.on_request("MESSAGE", partial(self._on_dialog_message, leg))
        session.on_ended = partial(self._on_session_ended, leg)
        try:
            answered = payload.split_invite_body(response.body, response.get("Content-Type"))
            leg.remote = answered.media
            active = payload.offerer_role(answered.media)
        except CodecError as exc:
            log.warning("x unusable SDP answer on %s: %s", leg.id, exc)
            await session.bye()
            self._failed(leg, 0, f"unusable SDP answer: {exc}")
            return
        leg.move(LegState.CONNECTING)
        await self._bind(leg, active)

    async def _bind(self, leg: Leg, active: bool) -> None:
        """Bind MSRP (active: connect + empty SEND; passive: wait for the peer), then report."""
        assert leg.msrp is not None and leg.remote is not None
        leg.msrp.on_event = partial(self._on_msrp, leg)
        try:
            await leg.msrp.start(" ".join(leg.remote.path), active, timeout=self.bind_timeout)
        except (MSRPError, OSError, ValueError) as exc:
            if leg.ended:
                return
            log.info("x MSRP bind of %s failed: %s", leg.id, exc)
            leg.move(LegState.ENDED)
            self._forget(leg)
            if leg.session is not None:
                await leg.session.bye()
            await leg.msrp.close()
            self._post(leg, SessionFailed(leg.id, 0, f"MSRP: {exc}"))
            return
        if not leg.ended:
            self._accepted(leg)

    async def cancel_session(self, leg: LegId) -> None:
        """CANCEL our INVITE that has no final answer yet; no event follows."""
        record = self._legs.get(leg)
        if record is None:
            log.info("x cancel of unknown leg %s ignored", leg)
            return
        if record.state is not LegState.INVITING:
            await self.end_session(leg)
            return
        self._cancel(record)

    def _cancel(self, leg: Leg) -> None:
        leg.cancelled = True
        leg.move(LegState.ENDED)
        self._forget(leg)
        if leg.call is not None:
            self._spawn(leg.call.cancel())
        # else: the runner sees ``cancelled`` before it sends the INVITE

    async def end_session(self, leg: LegId) -> None:
        """BYE an established leg and close its MSRP session; no event follows."""
        record = self._legs.get(leg)
        if record is None:
            log.info("x end of unknown leg %s ignored", leg)
            return
        if record.state is LegState.INVITING:
            self._cancel(record)
        elif record.state is LegState.RINGING:
            await self.reject_session(leg, 486)
        else:
            self._spawn(self._hang_up(record))

    async def _hang_up(self, leg: Leg) -> None:
        leg.move(LegState.ENDED)
        self._forget(leg)
        if leg.session is not None:
            await leg.session.bye()
        if leg.msrp is not None:
            await leg.msrp.close()

    def _on_session_ended(self, leg: Leg, session: InviteSession) -> None:
        self._ended(leg, session.end_reason or "BYE")

    # --- incoming sessions (N1, R5, R6) -------------------------------------------------------

    async def _on_invite(self, invite: IncomingInvite) -> None:
        request = invite.request
        if self._closing:
            invite.reject(503)
            return
        try:
            user = UserUri(rcs.normalize_user(str(request.to.uri)))
            peer = _asserted(request)
        except (ValueError, CodecError) as exc:
            invite.respond(400, f"Bad identity: {exc}"[:120])
            return
        try:
            offer = payload.split_invite_body(request.body, request.get("Content-Type"))
        except payload.UnsupportedContent:
            invite.respond(415, headers=[("Accept", _INVITE_ACCEPT)])
            return
        except CodecError as exc:
            log.info("x INVITE %s: %s", request.call_id, exc)
            invite.reject(488)
            return
        kind = rcs.classify_invite(
            contact=request.get("Contact") or "",
            asserted_identity=request.get("P-Asserted-Identity") or "",
            referred_by=request.get("Referred-By"),
            accept_contact=", ".join(request.get_all("Accept-Contact")),
            multipart=offer.first is not None,
        )
        refusal = _REFUSALS.get(kind)
        if refusal is not None:
            log.info("x INVITE %s from %s: %s", request.call_id, peer, refusal[1])
            invite.respond(*refusal)
            return
        if kind is rcs.InviteKind.SF_PUSH:
            try:
                peer = UserUri(rcs.normalize_user(request.get("Referred-By") or ""))
            except ValueError:
                invite.respond(400, "Bad Referred-By")
                return
        if not offer.media.accepts(cpim.CONTENT_TYPE):
            invite.respond(488, "message/cpim not offered")
            return
        leg = Leg(LegId("in-" + secrets.token_hex(10)), user, peer, outgoing=False)
        leg.incoming, leg.offer, leg.remote = invite, offer, offer.media
        leg.chat_ids = rcs.chat_ids_of(
            {
                "contribution-id": request.get("Contribution-ID"),
                "conversation-id": request.get("Conversation-ID"),
            }
        )
        first = self._first_message(offer, peer, request)
        self._legs[leg.id] = leg
        previous = invite.tx.on_cancel

        def cancelled(tx: Any) -> None:
            if previous is not None:
                previous(tx)
            self._peer_cancelled(leg)

        invite.tx.on_cancel = cancelled
        invite.ring(180)
        invitation = IncomingInvitation(
            leg=leg.id,
            user=user,
            peer=peer,
            peer_name=request.from_.display_name,
            subject=request.get("Subject"),
            first_message=first,
            ids=leg.dialog_ids(),
        )
        leg.draining = True  # later events of this leg wait for the invitation
        try:
            assert self._sink is not None, "no chat service bound"
            await self._sink.handle_event(invitation)
        except EventRejected as exc:
            self._refused(leg, exc.status, str(exc))
        except Exception:
            log.exception("chat service failed on the invitation %s", leg.id)
            self._refused(leg, 500, "internal error")
        finally:
            leg.draining = False
            if leg.events:
                leg.draining = True
                self._spawn(self._drain(leg))

    def _first_message(
        self, offer: payload.InviteOffer, peer: UserUri, request: Request
    ) -> IncomingMessage | None:
        if offer.first is None:
            return None
        try:
            decoded = payload.decode(
                cpim.CONTENT_TYPE,
                offer.first,
                sender=peer,
                fallback_id=_fallback_id(request.call_id, request.cseq.seq),
            )
        except CodecError as exc:
            log.warning("x first message of INVITE %s dropped: %s", request.call_id, exc)
            return None
        if not isinstance(decoded, IncomingMessage):
            log.warning("x INVITE %s carried a %s, not a message", request.call_id, decoded)
            return None
        return decoded

    def _refused(self, leg: Leg, status: int, reason: str) -> None:
        if leg.state is LegState.RINGING and leg.incoming is not None:
            log.info("x invitation %s refused %d: %s", leg.id, status, reason)
            leg.move(LegState.ENDED)
            self._forget(leg)
            leg.incoming.reject(status)

    def _peer_cancelled(self, leg: Leg) -> None:
        if leg.state is not LegState.RINGING:
            return
        leg.move(LegState.ENDED)
        self._forget(leg)
        log.info("- invitation %s cancelled by the peer", leg.id)
        self._post(leg, SessionCancelled(leg.id))

    async def accept_session(self, leg: LegId) -> None:
        """Answer an incoming invitation 200 OK with our SDP answer, then bind MSRP."""
        record = self._legs.get(leg)
        if record is None or record.state is not LegState.RINGING or record.incoming is None:
            raise SignallingError(f"leg {leg} is not a ringing invitation", 481)
        invite = record.incoming
        assert record.offer is not None and record.remote is not None
        record.move(LegState.CONNECTING)
        try:
            record.msrp = await self.msrp.create_session(accept_types=payload.ACCEPT_TYPES)
            answer = payload.answer(
                record.offer.description,
                self.msrp.advertised_host,
                self.msrp.port,
                record.msrp.path_attribute,
            )
            headers = [
                *rcs.answer_headers(self.profile, record.chat_ids),
                ("Server", rcs.user_agent(self.profile)),
            ]
            record.session = await invite.accept(
                answer,
                sdp.CONTENT_TYPE,
                headers=headers,
            )
            record.session.on_request("MESSAGE", partial(self._on_dialog_message, record))
        except (MSRPError, SIPError, CodecError, OSError) as exc:
            record.move(LegState.ENDED)
            self._forget(record)
            if record.msrp is not None:
                await record.msrp.close()
            if not invite.answered:
                invite.reject(500 if not isinstance(exc, CodecError) else 488)
            raise SignallingError(f"cannot accept {leg}: {exc}", _status_of(exc)) from exc
        record.session.on_ended = partial(self._on_session_ended, record)
        self._spawn(self._bind(record, payload.answer_role(record.remote)))

    async def reject_session(self, leg: LegId, status: int) -> None:
        """Answer an incoming invitation with ``status`` (486 decline, 480, 603 ...)."""
        record = self._legs.get(leg)
        if record is None or record.incoming is None:
            log.info("x reject of unknown leg %s ignored", leg)
            return
        if record.state is not LegState.RINGING:
            raise SignallingError(f"leg {leg} was answered already", 481)
        record.move(LegState.ENDED)
        self._forget(record)
        record.incoming.reject(status)

    # --- MSRP traffic (R7, R8, R9; N8-N10, N14) ------------------------------------------------

    def _on_msrp(self, leg: Leg, event: MSRPEvent) -> None:
        if isinstance(event, MSRPMessageReceived):
            if not event.body:
                return  # bind or keep-alive SEND
            decoded = self._decode(leg, event.content_type, event.body, str(event.message_id))
            if decoded is not None:
                self._post_inbound(leg, decoded)
        elif isinstance(event, StateChanged) and event.new is SessionStatus.CLOSED:
            if not leg.ended:
                self._ended(leg, "MSRP connection lost")

    def _decode(
        self, leg: Leg, content_type: str | None, body: bytes, fallback: str
    ) -> SignallingEvent | None:
        try:
            decoded = payload.decode(content_type, body, sender=leg.peer, fallback_id=fallback)
        except CodecError as exc:
            log.warning("x leg %s: received body dropped: %s", leg.id, exc)
            return None
        return _event_for(leg.id, leg.user, leg.peer, decoded)

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        """MSRP SEND of the CPIM chat message; its MessageSendResult follows."""
        record = self._up(leg)
        assert record.remote is not None
        if not record.remote.accepts(cpim.CONTENT_TYPE):
            raise SignallingError("the peer does not accept message/cpim", 415)
        body = payload.chat_message(self.profile, message)
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
        if record.remote.accepts(iscomposing.CONTENT_TYPE):
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
        """Send the IMDN on the live leg, else by SIP MESSAGE (mapping §0 decision 5)."""
        self._check_running()
        body = payload.report(self.profile, report, self.clock())
        record = self._legs.get(leg) if leg is not None else None
        if record is not None and record.state is LegState.UP and record.msrp is not None:
            self._spawn(self._report_on_leg(record, report, body))
        else:
            self._spawn(self._report_by_message(report, body))

    async def _report_on_leg(self, leg: Leg, report: OutgoingReport, body: bytes) -> None:
        assert leg.msrp is not None
        try:
            await leg.msrp.send(cpim.CONTENT_TYPE, body)
        except MSRPError as exc:
            log.info("x report on leg %s failed (%s): by SIP MESSAGE", leg.id, exc)
            await self._report_by_message(report, body)

    async def _report_by_message(self, report: OutgoingReport, body: bytes) -> None:
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
            return
        if not response.is_success:
            log.warning(
                "x %s report for %s refused: %d %s",
                report.kind.value,
                report.message_id,
                response.status,
                response.reason,
            )

    async def send_pager(self, message: OutgoingMessage) -> None:
        """Send a chat message by SIP MESSAGE (CPIM; mapping §1.3); its result follows."""
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
            status = _status_of(exc) or 408
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

    # --- SIP MESSAGE (N9-N11) -------------------------------------------------------------------

    async def _on_message(self, incoming: IncomingRequest) -> None:
        await self._take_message(incoming, None)

    async def _on_dialog_message(self, leg: Leg, incoming: IncomingRequest) -> None:
        await self._take_message(incoming, leg)

    async def _take_message(self, incoming: IncomingRequest, leg: Leg | None) -> None:
        request = incoming.request
        try:
            user = leg.user if leg is not None else UserUri(rcs.normalize_user(str(request.to.uri)))
            sender = leg.peer if leg is not None else _asserted(request)
        except (ValueError, CodecError) as exc:
            incoming.respond(400, f"Bad identity: {exc}"[:120])
            return
        try:
            decoded = payload.decode(
                request.get("Content-Type"),
                request.body,
                sender=sender,
                fallback_id=_fallback_id(request.call_id, request.cseq.seq),
            )
        except payload.UnsupportedContent as exc:
            log.info("x MESSAGE %s: %s", request.call_id, exc)
            incoming.respond(415, headers=[("Accept", _MESSAGE_ACCEPT)])
            return
        except CodecError as exc:
            log.info("x MESSAGE %s: %s", request.call_id, exc)
            incoming.respond(400, str(exc)[:120])
            return
        event = _event_for(leg.id if leg is not None else None, user, sender, decoded)
        if self._sink is None:
            incoming.respond(503)
            return
        try:
            await self._sink.handle_event(event)
        except EventRejected as exc:
            incoming.respond(exc.status)
            return
        except Exception:
            log.exception("chat service failed on MESSAGE %s", request.call_id)
            incoming.respond(500)
            return
        incoming.respond(200)


_REFUSALS: dict[rcs.InviteKind, tuple[int, str]] = {
    rcs.InviteKind.GROUP: (403, "Group chat invitations are not supported"),
    rcs.InviteKind.SF_NOTIFICATIONS: (403, "Store-and-forward sessions are not supported"),
    rcs.InviteKind.FILE_TRANSFER: (488, "File transfer is not supported"),
}


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, SIPError | MSRPError):
        return exc.status
    return 0


def _event_for(
    leg: LegId | None, user: UserUri, peer: UserUri, decoded: payload.Decoded
) -> SignallingEvent:
    if isinstance(decoded, IncomingMessage):
        return MessageReceived(leg, user, decoded)
    if isinstance(decoded, payload.ReceivedReport):
        return ReportReceived(leg, user, peer, decoded.message_id, decoded.kind)
    return ComposingReceived(leg, user, peer, decoded)
