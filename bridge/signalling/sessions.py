"""INVITE legs of the signalling adapter: outgoing sessions, incoming invitations (R3-R6, N1).

See ``bridge.signalling.adapter`` for the wire behaviour. Group legs (a dialog
with a conference focus, R10-R12, N2) run through the same INVITE code; what
is theirs lives in ``bridge.signalling.groups`` (``self.groups``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from bridge.chat.model import LegId
from bridge.chat.ports import (
    EventRejected,
    IncomingGroupInvitation,
    IncomingInvitation,
    IncomingMessage,
    OutgoingMessage,
    SessionCancelled,
    SessionFailed,
    SignallingError,
)
from bridge.ids import UserUri
from bridge.signalling import payload
from bridge.signalling.base import (
    SignallingBase,
    asserted_sender,
    fallback_message_id,
    malformed_log,
    status_of,
)
from bridge.signalling.groups import REQUIRE, GroupLegs
from bridge.signalling.legs import Leg, LegState
from sip import cpim, rcs, sdp
from sip.callback import Bound
from sip.errors import CodecError, MSRPError, SIPError
from sip.message import Request
from sip.usage import IncomingInvite

log = logging.getLogger(__name__)

CANCEL_GRACE = 32.0
"""Seconds beyond the INVITE timeout before an unanswered INVITE is given up (64*T1)."""
_INVITE_ACCEPT = "application/sdp, multipart/mixed"

_REFUSALS: dict[rcs.InviteKind, tuple[int, str]] = {
    rcs.InviteKind.SF_NOTIFICATIONS: (403, "Store-and-forward sessions are not supported"),
    rcs.InviteKind.FILE_TRANSFER: (488, "File transfer is not supported"),
}


class SessionLegs(SignallingBase):
    """Outgoing INVITEs and incoming invitations, each one leg."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = GroupLegs(self)

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
        self,
        leg: Leg,
        subject: str | None,
        first: OutgoingMessage | None,
        recipients: bytes | None = None,
    ) -> None:
        try:
            leg.msrp = await self.msrp.create_session(
                accept_types=payload.ACCEPT_TYPES, tls=self._offers_tls(leg)
            )
        except (MSRPError, OSError) as exc:
            self._failed(leg, 0, f"MSRP relay: {exc}")
            return
        if leg.ended:
            await leg.msrp.close()
            return
        offer = payload.offer(
            self.msrp.advertised_host,
            leg.msrp.port,
            leg.msrp.path_attribute,
            leg.msrp.fingerprint,
        )
        cpim_first = payload.chat_message(self.profile, first) if first is not None else None
        body, content_type = payload.invite_body(offer, cpim_first, recipients)
        assert leg.chat_ids is not None
        headers = list(rcs.session_headers(self.profile, leg.chat_ids))
        if recipients is not None:
            headers.append(("Require", REQUIRE))  # RFC 5366 §4
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
            self._failed(leg, status_of(exc) or 408, str(exc))
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
        leg.call = None  # the dialog is up: the INVITE, its answer and transaction can go
        if leg.group and not self.groups.answered(leg, response.contacts):
            await session.bye()
            self._failed(leg, 0, "the focus's 2xx has no Contact")
            return
        session.on_request("MESSAGE", Bound(self._on_dialog_message, leg))
        session.on_ended = Bound(self._on_session_ended, leg)
        try:
            answered = payload.split_invite_body(response.body, response.get("Content-Type"))
            leg.remote = answered.media
            active = sdp.offerer_active(answered.media)
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
        leg.msrp.on_event = Bound(self._on_msrp, leg)
        try:
            await leg.msrp.start(
                " ".join(leg.remote.path),
                active,
                timeout=self.bind_timeout,
                fingerprint=leg.remote.fingerprint,
            )
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

    def _offers_tls(self, leg: Leg) -> bool:
        """Whether our offer for ``leg`` is ``msrps`` (setting ``msrp_tls_offer``,
        docs/tls.md): always, never, or when the SIP leg is secure (``sips:`` peer or a TLS
        route), for 1-1 and group legs alike; legs through an RFC 4976 relay (reached over
        TCP) stay plain."""
        if self.msrp.tls is None or self.msrp.relay is not None:
            return False
        if self.tls_offer == "never":
            return False
        if self.tls_offer == "always":
            return True
        return str(leg.peer).lower().startswith("sips:") or self.sip.out_transport == "tls"

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

    async def _on_invite(self, invite: IncomingInvite) -> None:
        request = invite.request
        if self._closing:
            invite.reject(503)
            return
        try:
            user = UserUri(rcs.normalize_user(str(request.to.uri)))
            peer = asserted_sender(request)
        except (ValueError, CodecError) as exc:
            invite.respond(400, f"Bad identity: {exc}"[:120])
            return
        try:
            offer = payload.split_invite_body(request.body, request.get("Content-Type"))
        except payload.UnsupportedContent:
            invite.respond(415, headers=[("Accept", _INVITE_ACCEPT)])
            return
        except CodecError as exc:
            malformed_log.log("x INVITE %s: %s", request.call_id, exc, key=str(request.from_.uri))
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
        if kind is rcs.InviteKind.GROUP:
            if not offer.media.accepts(cpim.CONTENT_TYPE):
                invite.respond(488, "message/cpim not offered")
                return
            try:
                leg, group_event = self.groups.invitation(invite, offer, user)
            except CodecError as exc:
                invite.respond(400, str(exc)[:120])
                return
            await self._offer(leg, invite, group_event)
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
        if offer.media.tls and self.msrp.tls is None:
            log.info("x INVITE %s offers MSRP over TLS: not configured", request.call_id)
            invite.respond(488, "MSRP over TLS not configured")
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
        invitation = IncomingInvitation(
            leg=leg.id,
            user=user,
            peer=peer,
            peer_name=request.from_.display_name,
            subject=request.get("Subject"),
            first_message=first,
            ids=leg.dialog_ids(),
        )
        await self._offer(leg, invite, invitation)

    async def _offer(
        self,
        leg: Leg,
        invite: IncomingInvite,
        invitation: IncomingInvitation | IncomingGroupInvitation,
    ) -> None:
        """Ring and hand the invitation to the service (it may accept or refuse at once)."""
        self._legs[leg.id] = leg
        previous = invite.tx.on_cancel

        def cancelled(tx: Any) -> None:
            if previous is not None:
                previous(tx)
            self._peer_cancelled(leg)

        invite.tx.on_cancel = cancelled
        invite.ring(180)
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
                fallback_id=fallback_message_id(request.call_id, request.cseq.seq),
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
            record.msrp = await self.msrp.create_session(
                accept_types=payload.ACCEPT_TYPES, tls=record.remote.tls
            )
            answer = payload.answer(
                record.offer.description,
                self.msrp.advertised_host,
                record.msrp.port,
                record.msrp.path_attribute,
                record.msrp.fingerprint,
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
            record.session.on_request("MESSAGE", Bound(self._on_dialog_message, record))
            # the dialog is up (the session retransmits its 2xx until the ACK): the INVITE,
            # its transaction and the parsed offer can go
            record.incoming = record.offer = None
        except (MSRPError, SIPError, CodecError, OSError) as exc:
            record.move(LegState.ENDED)
            self._forget(record)
            if record.msrp is not None:
                await record.msrp.close()
            if not invite.answered:
                invite.reject(500 if not isinstance(exc, CodecError) else 488)
            raise SignallingError(f"cannot accept {leg}: {exc}", status_of(exc)) from exc
        record.session.on_ended = Bound(self._on_session_ended, record)
        self._spawn(self._bind(record, sdp.answerer_active(record.remote)))

    async def reject_session(self, leg: LegId, status: int) -> None:
        """Answer an incoming invitation with ``status`` (486 decline, 480, 603 ...)."""
        record = self._legs.get(leg)
        if record is None or record.outgoing:
            log.info("x reject of unknown leg %s ignored", leg)
            return
        if record.state is not LegState.RINGING or record.incoming is None:
            raise SignallingError(f"leg {leg} was answered already", 481)
        record.move(LegState.ENDED)
        self._forget(record)
        record.incoming.reject(status)
