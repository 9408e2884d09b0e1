"""The bridge's own conference focus: factory URI, live conference URIs, restart recovery
(docs/group-chat.md "Parts" and "Wire contract"; RFC 4579 §3, RFC 5366 §4).

The composition root routes out-of-dialog INVITE, SUBSCRIBE and REFER whose Request-URI
``owns`` says belongs to the focus (the factory URI or a live ``conf-<hex>`` URI) to
``on_invite``/``on_subscribe``/``on_refer``. In-dialog requests (BYE, REFER, SUBSCRIBE in
a member's INVITE dialog) reach the conferences through the stack's dialog table.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime

from bridge.focus import wire
from bridge.focus.conference import Conference
from bridge.focus.dialout import GONE, FocusContext
from bridge.focus.members import Member
from bridge.focus.store import ConferenceStore, MemberRecord
from sip import rcs, sdp
from sip.dialog import Dialog, DialogError, DialogId
from sip.errors import CodecError, ProtocolError
from sip.message import Request
from sip.msrp import MSRPStack
from sip.stack import SipStack
from sip.uri import SipURI, TelURI, parse_uri
from sip.usage import IncomingInvite, IncomingRefer, IncomingSubscribe

log = logging.getLogger(__name__)

STALE_CSEQ_STEP = 1000
"""Added to a stored CSeq before the recovery BYE (RFC 3261 §12.2.1.1: above any used)."""
STALE_BYE_TIMEOUT = 5.0
CLOSE_GRACE = 3.0
CONFERENCE_PREFIX = "conf-"


def _user_part(uri: object) -> str | None:
    try:
        parsed = parse_uri(str(uri).strip("<>"))
    except CodecError:
        return None
    if isinstance(parsed, SipURI):
        return parsed.user
    if isinstance(parsed, TelURI):
        return parsed.number
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ConferenceFocus:
    """Creates conferences at the factory URI and keeps the live ones, by URI user part."""

    def __init__(
        self,
        sip_stack: SipStack,
        msrp_stack: MSRPStack,
        *,
        factory_uri: str,
        profile: rcs.Profile,
        store: ConferenceStore,
        max_size: int = 100,
        invite_timeout: float = 60.0,
        bind_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.factory_uri = factory_uri
        factory_user = _user_part(factory_uri)
        if not factory_user:
            raise ValueError(f"factory URI without user part: {factory_uri!r}")
        self.factory_user = factory_user
        self.ctx = FocusContext(
            sip=sip_stack,
            msrp=msrp_stack,
            profile=profile,
            store=store,
            clock=clock,
            max_size=max_size,
            invite_timeout=invite_timeout,
            bind_timeout=bind_timeout,
        )
        self.conferences: dict[str, Conference] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing = False

    # -- routing ----------------------------------------------------------------------------

    def owns(self, request: Request) -> bool:
        """True for the factory URI and the live conference URIs (by Request-URI user part)."""
        user = _user_part(request.uri)
        if user is None:
            return False
        return user == self.factory_user or user.startswith(CONFERENCE_PREFIX)

    def _conference_for(self, request: Request) -> Conference | None:
        user = _user_part(request.uri)
        return None if user is None else self.conferences.get(user)

    # -- out-of-dialog requests ---------------------------------------------------------------

    async def on_invite(self, incoming: IncomingInvite) -> None:
        """An INVITE to the factory creates a conference (docs/group-chat.md item 1)."""
        request = incoming.request
        if _user_part(request.uri) != self.factory_user:
            if self._conference_for(request) is None:
                incoming.reject(404)
            else:
                incoming.respond(403, "Rejoin not supported")
            return
        if self._closing:
            incoming.respond(503)
            return
        try:
            offer = wire.parse_offer(request.body, request.get("Content-Type"))
        except wire.BadOffer as exc:
            incoming.respond(exc.status, exc.reason)
            return
        except CodecError as exc:
            incoming.respond(400, f"Bad body: {exc}")
            return
        # Require: recipient-list-invite is not checked: the stack answers 420 for tags we
        # lack (RFC 3261 §8.2.2.3) and the list part says what the tag would (docs item 1)
        if offer.entries is None:
            incoming.respond(400, "Missing recipient-list")
            return
        creator_uri = request.get("P-Asserted-Identity") or str(request.from_.uri)
        creator_uri = creator_uri.strip().strip("<>")
        creator = Member(uri=creator_uri, key=wire.key_of(creator_uri), chairman=True)
        invitees: dict[str, tuple[str, str | None]] = {}
        for entry in offer.entries:
            key = wire.key_of(entry.uri)
            if key != creator.key and key not in invitees:
                invitees[key] = (entry.uri, entry.display_name)
        if not invitees:
            incoming.respond(400, "Empty recipient-list")
            return
        if len(invitees) + 1 > self.ctx.max_size:
            incoming.respond(403, "Too many participants")
            return
        await self._create(incoming, offer, creator, list(invitees.values()))

    async def _create(
        self,
        incoming: IncomingInvite,
        offer: wire.Offer,
        creator: Member,
        invitees: list[tuple[str, str | None]],
    ) -> None:
        ctx, request = self.ctx, incoming.request
        user = CONFERENCE_PREFIX + secrets.token_hex(8)
        transport = incoming.source.transport
        host, port = ctx.sip.transport.sent_by(transport)
        uri = f"sip:{user}@{host}:{port}"
        contact = wire.focus_contact(host, port, transport, user, ctx.profile)
        headers = {name: request.get(name) for name in ("Contribution-ID", "Conversation-ID")}
        ids = rcs.chat_ids_of(headers) or rcs.new_chat_ids(ctx.profile)
        if offer.media.tls and ctx.msrp.tls is None:
            incoming.respond(488, "MSRP over TLS not configured")
            return
        # an msrps offer is answered in kind (RFC 4975 §14; docs/tls.md)
        msrp = await ctx.msrp.create_session(accept_types=wire.ACCEPT_TYPES, tls=offer.media.tls)
        try:
            answer = wire.answer(
                offer.description,
                ctx.msrp.advertised_host,
                msrp.port,
                msrp.path_attribute,
                msrp.fingerprint,
            )
            active = sdp.answerer_active(offer.media)
        except CodecError as exc:
            await msrp.close()
            incoming.respond(488, f"Not acceptable: {exc}")
            return
        conf = Conference(
            ctx,
            uri=uri,
            contact=contact,
            ids=ids,
            subject=request.get("Subject"),
            on_end=self._forget,
        )
        self.conferences[user] = conf
        try:
            session = await incoming.accept(
                answer, headers=rcs.answer_headers(ctx.profile, ids), contact=contact
            )
        except ProtocolError as exc:
            log.info("x create INVITE gone before the answer: %s", exc)
            del self.conferences[user]
            await msrp.close()
            return
        log.info("- conference %s created by %s for %d", uri, creator.key, len(invitees))
        path = " ".join(offer.media.path)
        await conf.start(creator, session, msrp, active, path, invitees, offer.media.fingerprint)

    def _forget(self, conf: Conference) -> None:
        self.conferences.pop(_user_part(conf.uri) or "", None)

    def on_subscribe(self, incoming: IncomingSubscribe) -> None:
        """SUBSCRIBE ``Event: conference`` to a conference URI (RFC 4575 §3; docs item 3)."""
        conf = self._conference_for(incoming.request)
        if conf is None or conf.ended:
            incoming.reject(404)
            return
        if incoming.event.split(";")[0].strip().lower() != "conference":
            incoming.reject(489)
            return
        conf.subscribe(incoming.accept())

    def on_refer(self, incoming: IncomingRefer) -> None:
        """Out-of-dialog REFER to a conference URI, from one of its members (docs 6, 7)."""
        request = incoming.request
        conf = self._conference_for(request)
        if conf is None or conf.ended:
            incoming.respond(404)
            return
        referrer_uri = request.get("Referred-By") or request.get("P-Asserted-Identity")
        referrer = conf.member(referrer_uri or str(request.from_.uri))
        if referrer is None:
            incoming.respond(403)
            return
        status = conf.refer(referrer, request)
        if status != 202:
            incoming.respond(status)
            return
        sub = incoming.accept()
        if sub is not None:
            asyncio.get_running_loop().create_task(incoming.progress(sub, 200, "OK"))

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Ends the conferences a previous run left live: BYE (cause 410) each stored dialog."""
        stale = await self.ctx.store.live_conferences()
        byes: list[Coroutine[object, object, int]] = []
        for record, members in stale:
            log.info("- ending conference %s of a previous run", record.uri)
            byes.extend(self._stale_bye(m) for m in members if m.dialog is not None)
        results = await asyncio.gather(*byes) if byes else []
        for record, _ in stale:
            await self.ctx.store.end_conference(record.uri, self.ctx.clock())
        return len(results)

    async def _stale_bye(self, member: MemberRecord) -> int:
        ids = member.dialog
        assert ids is not None
        try:
            dialog = Dialog.restore(
                DialogId(ids.call_id, ids.local_tag, ids.remote_tag),
                local=ids.local_uri,
                remote=ids.remote_uri,
                remote_target=ids.remote_target,
                route_set=ids.route_set,
                local_cseq=ids.local_cseq + STALE_CSEQ_STEP,
                is_uac=ids.is_uac,
            )
        except DialogError as exc:
            log.info("x stale dialog of %s unusable: %s", member.uri, exc)
            return 400
        try:
            response = await asyncio.wait_for(
                self.ctx.sip.send_in_dialog(dialog, "BYE", [("Reason", GONE)]),
                STALE_BYE_TIMEOUT,
            )
        except TimeoutError:
            return 408
        except ProtocolError as exc:
            log.info("x stale BYE to %s failed: %s", member.uri, exc)
            return 408
        return response.status

    async def close(self) -> None:
        """Ends every conference (BYE with cause 410), bounded by CLOSE_GRACE seconds."""
        self._closing = True
        ends = [
            asyncio.ensure_future(c.end("focus shutdown")) for c in list(self.conferences.values())
        ]
        if ends:
            await asyncio.wait(ends, timeout=CLOSE_GRACE)
            for task in ends:
                task.cancel()
        self.conferences.clear()
