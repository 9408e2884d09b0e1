"""The SipStack facade: the one async SIP port the bridge uses (RFC 3261, 3428, 3515, 6665).

Public API::

    stack = SipStack(host="127.0.0.1", port=5070, transports=("udp", "tcp"),
                     outbound_proxy="sip:127.0.0.1:5060", domain="ims.test",
                     contact_params="", timers=Timers(), credentials=None,
                     tls_server=None, tls_client=None, tls_port=0)   # "tls" in transports:
                     # listens on tls_port with tls_server (sip.tls), dials with tls_client
    (bridge.signalling.wiring.build_sip_stack(settings) builds one from Settings.sip_*)
    await stack.start() -> [(transport, host, port), ...];  await stack.stop()

    Sending (``sender`` = the user the bridge acts for: From and P-Asserted-Identity)
      await stack.send_request("MESSAGE", uri, sender=, headers=(), body=, content_type=)
            -> Response (any final status; raises TransactionTimeout/SIPError on no answer)
      call = stack.invite(uri, sender=, body=, content_type=, headers=(), on_provisional=cb,
                          handlers={"NOTIFY": cb})   # in-dialog handlers, set before the ACK
            -> OutgoingInvite (sip.usage): await call.response(), call.session, call.cancel()
      await stack.subscribe(uri, "conference", sender=, accept=, expires=600, on_notify=cb)
            -> ClientSubscription (sip.subscription)  raises SIPError on a non-2xx
      await stack.refer(uri, refer_to, sender=, refer_sub=True, on_notify=cb)
            -> ClientSubscription | None (None with Refer-Sub: false, RFC 4488)
    Receiving out-of-dialog requests
      stack.on_request("INVITE" | "MESSAGE" | "SUBSCRIBE" | "REFER" | "OPTIONS" ..., handler)
      handler(IncomingRequest | IncomingInvite | IncomingSubscribe | IncomingRefer) may be
      sync or async and must answer (else 500); these and InviteSession are in sip.usage.
    Built in: OPTIONS -> 200 (Allow, Accept, Supported, Allow-Events); unknown method -> 501;
    Require with an option tag outside EXTENSIONS -> 420 + Unsupported (RFC 3261 §8.2.2.3);
    known but unsupported (PUBLISH, REGISTER, PRACK) -> 405 + Allow; a supported method with
    no handler -> 480; in-dialog request for an unknown dialog -> 481; 401/407 -> one retry
    with digest credentials from ``credentials(realm) -> (user, password) | None``.
    ``stack.trust = TrustDomain`` (sip.trust): P-Asserted-Identity removed from requests of
    peers outside it, their out-of-dialog MESSAGE/INVITE/SUBSCRIBE/REFER -> 403 (policy
    ``refuse``).
"""

# Design notes
# ------------
# Layers: sip.transport (bytes) -> sip.transaction (retransmissions, timers A-M) -> this
# module (identity, routing of requests to handlers and of in-dialog requests by DialogId)
# -> sip.usage (what each dialog is used for: INVITE sessions, subscriptions; the 2xx/ACK
# exchange of RFC 3261 §13). The dialog state itself is sans-I/O (sip.dialog,
# sip.subscription).
# Identity follows the trusted application server model (docs/decisions.md "Trusted
# application server"): the request carries From and P-Asserted-Identity of the user the
# bridge acts for; the Contact user part is that user too, so the IMS core can route back.

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable

from sip.auth import DigestClient, challenge_header, select_challenge
from sip.counters import SipCounters
from sip.dialog import Dialog, DialogError, DialogEvent, DialogId, DialogState
from sip.errors import CodecError, ProtocolError, SIPError
from sip.message import Request, Response, make_request
from sip.ratelog import RateLimitedLog
from sip.subscription import (
    ClientSubscription,
    ServerSubscription,
    SubscriberEvent,
    SubscriptionError,
    parse_event,
)
from sip.timers import Timers
from sip.transaction import ServerTransaction, TransactionLayer
from sip.transport import Connection, Source, TransportLayer
from sip.trust import FORBIDDEN_REASON, TrustDomain, Verdict
from sip.uri import SipURI, TelURI, parse_uri
from sip.usage import (
    ALLOW,
    SUPPORTED,
    DialogUsage,
    Handler,
    IncomingInvite,
    IncomingRefer,
    IncomingRequest,
    IncomingSubscribe,
    InviteSession,
    OutgoingInvite,
    SubscriptionUsage,
    angle_addr,
)

__all__ = ["ACCEPT", "ALLOW_EVENTS", "EXTENSIONS", "USER_AGENT", "SipStack"]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")
untrusted_log = RateLimitedLog(log, logging.WARNING, "requests from untrusted peers refused")
"""403s to peers outside the trust domain: one line per peer and window (sip.ratelog)."""

_SUPPORTED_METHODS = frozenset(m.strip() for m in ALLOW.split(","))
_KNOWN_UNSUPPORTED = frozenset({"PUBLISH", "REGISTER", "PRACK"})
ACCEPT = (
    "application/sdp, message/cpim, text/plain, message/imdn+xml, "
    "application/im-iscomposing+xml, application/conference-info+xml, "
    "application/resource-lists+xml, multipart/mixed, message/sipfrag"
)
EXTENSIONS = frozenset({"norefersub", "recipient-list-invite", "multiple-refer"})
"""Option tags a peer may Require of us (RFC 3261 §8.2.2.3): the stack handles norefersub;
the other two only shape bodies the application (a conference focus) reads."""
ALLOW_EVENTS = "conference, refer"
USER_AGENT = "chat-bridge"


def _user_of(uri: str) -> str | None:
    try:
        parsed = parse_uri(uri.strip("<>"))
    except CodecError:
        return None
    if isinstance(parsed, SipURI):
        return parsed.user
    if isinstance(parsed, TelURI):
        return parsed.number
    return None


def _retrieve(task: asyncio.Task[Response]) -> None:
    """Marks a task's exception as seen: the caller gets it from ``response()``."""
    if not task.cancelled():
        task.exception()


# -- the stack -------------------------------------------------------------------------------


class SipStack:
    """Transports, transactions, dialogs and handlers behind one small async API."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5070,
        transports: Iterable[str] = ("udp", "tcp"),
        outbound_proxy: str | None = None,
        domain: str = "ims.test",
        advertised_host: str | None = None,
        contact_params: str = "",
        timers: Timers | None = None,
        credentials: Callable[[str], tuple[str, str] | None] | None = None,
        user_agent: str = USER_AGENT,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        tls_port: int = 0,
        counters: SipCounters | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.transports = [t.lower() for t in transports]
        self.outbound_proxy = outbound_proxy
        self.domain = domain
        self.advertised_host = advertised_host or host
        self.contact_params = contact_params
        self.timers = timers or Timers()
        self.credentials = credentials
        self.user_agent = user_agent
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.tls_port = tls_port
        self.counters = counters
        """Counting hooks handed to the transport layer (``sip.counters``; None: none)."""
        self.addresses: list[tuple[str, str, int]] = []
        self.trust: TrustDomain | None = None
        """Whose P-Asserted-Identity counts (sip.trust); None: everyone's (tests)."""
        self._handlers: dict[str, Handler] = {}
        self._usages: dict[DialogId, DialogUsage] = {}
        self._bound: dict[DialogId, Connection] = {}  # dialogs the idle timeout spares
        self._pending: dict[tuple[str, str], ClientSubscription] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._digest = DigestClient()
        self._transport: TransportLayer | None = None
        self._layer: TransactionLayer | None = None

    # -- lifetime --------------------------------------------------------------------------

    @property
    def transport(self) -> TransportLayer:
        """The transport layer (after start)."""
        if self._transport is None:
            raise ProtocolError("SIP stack not started")
        return self._transport

    @property
    def layer(self) -> TransactionLayer:
        """The transaction layer (after start)."""
        if self._layer is None:
            raise ProtocolError("SIP stack not started")
        return self._layer

    async def start(self) -> list[tuple[str, str, int]]:
        """Listens on every configured transport (same port for all when ``port`` != 0)."""
        transport = TransportLayer(
            host=self.host,
            advertised_host=self.advertised_host,
            outbound_proxy=self.outbound_proxy,
            tls_client=self.tls_client,
            counters=self.counters,
        )
        self._transport = transport
        self._layer = TransactionLayer(
            transport, timers=self.timers, on_request=self._on_request, on_ack=self._on_ack
        )
        port = self.port
        try:
            for name in self.transports:
                if name == "tls":  # a port of its own (TCP holds ``port``), sip.tls contexts
                    host, bound = await transport.listen(name, self.tls_port, ssl=self.tls_server)
                    self.tls_port = bound
                else:
                    host, bound = await transport.listen(name, port)
                    if port == 0:
                        port = bound  # TCP on the port UDP got
                self.addresses.append((name, host, bound))
        except OSError:
            await self.stop()
            raise
        self.port = port
        return list(self.addresses)

    async def stop(self) -> None:
        """Stops timers, usages, transactions and sockets."""
        for usage in list(self._usages.values()):
            usage.close()
        self._usages.clear()
        for dialog_id in list(self._bound):
            self._unbind(dialog_id)
        for sub in list(self._pending.values()):
            sub.close()
        self._pending.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._layer is not None:
            await self._layer.close()
        if self._transport is not None:
            await self._transport.close()
        self._layer = None
        self._transport = None
        self.addresses = []

    def _spawn(self, coro: Awaitable[object]) -> None:
        async def run() -> object:
            try:
                return await coro
            except ProtocolError as exc:
                trace.debug("x background SIP task: %s", exc)
                return None

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- identities and contacts --------------------------------------------------------------

    def contact_for(self, user_uri: object, transport: str, *, secure: bool = False) -> str:
        """Our Contact for ``user_uri`` on ``transport`` (with the profile's feature tags);
        ``secure``: a ``sips:`` Contact on our TLS listener, as a request to a ``sips:`` URI
        needs (RFC 3261 §8.1.1.8)."""
        user = _user_of(str(user_uri))
        host, port = self.transport.sent_by("tls" if secure else transport)
        userpart = f"{user}@" if user else ""
        params = f";{self.contact_params}" if self.contact_params else ""
        # interned: every dialog of a user keeps this string (docs/group-chat.md, "Memory")
        if secure:
            return sys.intern(f"<sips:{userpart}{host}:{port}>{params}")
        tport = "" if transport == "udp" else f";transport={transport}"
        return sys.intern(f"<sip:{userpart}{host}:{port}{tport}>{params}")

    @property
    def out_transport(self) -> str:
        """The transport of out-of-dialog requests (the outbound proxy's, 'tls' for sips)."""
        return self._out_transport()

    def _out_transport(self) -> str:
        if self.outbound_proxy:
            proxy = parse_uri(self.outbound_proxy)
            if isinstance(proxy, SipURI):
                return proxy.transport
        return self.transports[0] if self.transports else "udp"

    def _new_request(
        self,
        method: str,
        uri: str,
        sender: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        to: str | None = None,
        contact: str | None = None,
    ) -> Request:
        items: list[tuple[str, str]] = [
            ("From", f"{angle_addr(sender)};tag={secrets.token_hex(6)}"),
            ("To", angle_addr(to or uri)),
            ("Call-ID", f"{secrets.token_hex(10)}@{self.advertised_host}"),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
            ("P-Asserted-Identity", angle_addr(sender)),
        ]
        if method in ("INVITE", "SUBSCRIBE", "REFER", "OPTIONS"):
            secure = uri.lower().startswith("sips:")
            items.append(
                (
                    "Contact",
                    contact
                    or self.contact_for(sender.strip("<>"), self._out_transport(), secure=secure),
                )
            )
        items.append(("User-Agent", self.user_agent))
        items.extend(headers)
        return make_request(method, uri, items, body, content_type)

    # -- sending ----------------------------------------------------------------------------

    async def _request(
        self, request: Request, on_provisional: Callable[[Response], None] | None = None
    ) -> Response:
        """One client transaction, with one digest retry on 401/407 (RFC 3261 §22.2)."""
        response = await self.layer.request(request, on_provisional=on_provisional)
        if response.status not in (401, 407) or self.credentials is None:
            return response
        retry = self._authorized(request, response)
        if retry is None:
            return response
        return await self.layer.request(retry, on_provisional=on_provisional)

    def _authorized(self, request: Request, response: Response) -> Request | None:
        assert self.credentials is not None
        challenge_name, credentials_name = challenge_header(response.status)
        try:
            challenge = select_challenge(response.get_all(challenge_name))
        except CodecError as exc:
            log.info("unusable %s challenge: %s", response.status, exc)
            return None
        secret = self.credentials(challenge.realm)
        if secret is None:
            return None
        creds = self._digest.authorize(
            challenge, request.method, str(request.uri), secret[0], secret[1], request.body
        )
        cseq = request.cseq
        return (
            request.without_header("Via")
            .replace_header("CSeq", f"{cseq.seq + 1} {cseq.method}")
            .with_header(credentials_name, str(creds))
        )

    async def send_request(
        self,
        method: str,
        uri: str,
        *,
        sender: str,
        to: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Sends an out-of-dialog request (MESSAGE, OPTIONS) and returns its final response."""
        request = self._new_request(method, uri, sender, headers, body, content_type, to)
        return await self._request(request)

    async def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        content_type: str | None = None,
        *,
        force: bool = False,
    ) -> Response:
        """Sends ``method`` inside ``dialog`` (RFC 3261 §12.2.1.1) and returns the response."""
        if force and dialog.state is DialogState.TERMINATED:
            dialog.local_cseq += 1
            request = dialog._build(method, dialog.local_cseq, headers, body, content_type)
        else:
            request = dialog.create_request(method, headers, body, content_type)
        response = await self._request(request)
        dialog.receive_response(response)
        return response

    def invite(
        self,
        uri: str,
        *,
        sender: str,
        body: bytes = b"",
        content_type: str | None = "application/sdp",
        headers: Iterable[tuple[str, str]] = (),
        on_provisional: Callable[[Response], None] | None = None,
        handlers: dict[str, Handler] | None = None,
        contact: str | None = None,
    ) -> OutgoingInvite:
        """Starts an INVITE; await ``.response()`` for the final answer (RFC 3261 §13.2).

        ``contact`` replaces our usual Contact (a conference focus: ``;isfocus``, RFC 4579)."""
        extra = [("Allow", ALLOW), ("Supported", SUPPORTED), *headers]
        request = self._new_request(
            "INVITE", uri, sender, extra, body, content_type, contact=contact
        )
        call = OutgoingInvite(self, request)
        call._task = asyncio.get_running_loop().create_task(
            self._run_invite(call, body, content_type, on_provisional, handlers or {})
        )
        call._task.add_done_callback(_retrieve)
        return call

    async def _run_invite(
        self,
        call: OutgoingInvite,
        body: bytes,
        content_type: str | None,
        on_provisional: Callable[[Response], None] | None,
        handlers: dict[str, Handler],
    ) -> Response:
        request = call.request
        for attempt in (1, 2):

            def provisional(resp: Response) -> None:
                call.provisional.append(resp)
                if on_provisional is not None:
                    on_provisional(resp)

            def on_2xx(resp: Response, request: Request = request) -> None:
                session = call.session
                if session is not None and resp.to_tag == session.dialog.id.remote_tag:
                    session._send_ack(resp)  # 2xx retransmission: same ACK again
                    return
                first = call._first_2xx_tag()
                if session is None and first == resp.to_tag:
                    return  # retransmission before the session exists: its ACK is coming
                self._spawn(self._ack_and_bye(request, resp))  # another fork answered

            tx = self.layer.client(request, on_provisional=provisional, on_2xx=on_2xx)
            call._tx = tx
            call._tx_ready.set()
            response = await tx.wait()
            if response.status in (401, 407) and self.credentials is not None and attempt == 1:
                retry = self._authorized(request, response)
                if retry is not None:
                    request = call.request = retry
                    continue
            break
        if response.is_success:
            contact = request.get("Contact") or self.contact_for(
                request.from_.uri, self._out_transport()
            )
            dialog = Dialog.from_uac(request, response, contact)
            session = InviteSession(self, dialog, local_body=body, content_type=content_type)
            for method, handler in handlers.items():
                session.on_request(method, handler)
            call.session = session
            self._register(dialog.id, session, self.transport.connection_to(tx.target))
            session._send_ack(response)
        return response

    async def _ack_and_bye(self, request: Request, response: Response) -> None:
        contact = self.contact_for(request.from_.uri, self._out_transport())
        dialog = Dialog.from_uac(request, response, contact)
        await self.layer.send_stateless(dialog.create_ack(response.cseq.seq))
        await self.send_in_dialog(dialog, "BYE", [])

    async def subscribe(
        self,
        uri: str,
        event: str,
        *,
        sender: str,
        accept: str | None = None,
        expires: int = 600,
        headers: Iterable[tuple[str, str]] = (),
        on_notify: Callable[[Request], None] | None = None,
    ) -> ClientSubscription:
        """Subscribes to ``event`` at ``uri`` (RFC 6665 §4.1.2.1); raises SIPError on non-2xx."""
        extra = [("Event", event), ("Expires", str(expires))]
        if accept:
            extra.append(("Accept", accept))
        request = self._new_request("SUBSCRIBE", uri, sender, [*extra, *headers], b"", None)
        return await self._start_subscription(request, event, on_notify)

    async def refer(
        self,
        uri: str,
        refer_to: str,
        *,
        sender: str,
        refer_sub: bool = True,
        headers: Iterable[tuple[str, str]] = (),
        on_notify: Callable[[Request], None] | None = None,
    ) -> ClientSubscription | None:
        """Sends an out-of-dialog REFER (RFC 3515 §2.4.1); the implicit subscription gets
        sipfrag NOTIFYs. With ``refer_sub=False`` (RFC 4488) returns None after the 2xx."""
        extra = [("Refer-To", angle_addr(refer_to)), ("Referred-By", angle_addr(sender))]
        if not refer_sub:
            extra += [("Refer-Sub", "false"), ("Require", "norefersub")]
        request = self._new_request("REFER", uri, sender, [*extra, *headers], b"", None)
        if not refer_sub:
            response = await self._request(request)
            if not response.is_success:
                raise SIPError(response.status, response.reason)
            return None
        return await self._start_subscription(request, "refer", on_notify)

    async def _start_subscription(
        self, request: Request, event: str, on_notify: Callable[[Request], None] | None
    ) -> ClientSubscription:
        sub = ClientSubscription(self, request, event, on_notify, timer_n=64 * self.timers.t1)
        key = (request.call_id, request.from_tag or "")
        self._pending[key] = sub
        try:
            response = await self._request(request)
        except SIPError:
            self._pending.pop(key, None)
            raise
        if not response.is_success:
            self._pending.pop(key, None)
            sub.machine.handle(SubscriberEvent.REJECTED)
            sub.terminated.set()
            raise SIPError(response.status, response.reason)
        if sub.dialog is None:
            contact = self.contact_for(request.from_.uri, self._out_transport())
            dialog = Dialog.from_uac(request, response, contact)
            self._register(dialog.id, SubscriptionUsage(self, dialog, client=sub))
            sub.accepted(response, dialog)
        else:
            sub.dialog.receive_response(response)
            sub.accepted(response, sub.dialog)
        return sub

    def _deliver_notify(self, sub: ClientSubscription, tx: ServerTransaction) -> None:
        try:
            sub.receive_notify(tx.request)
        except CodecError as exc:
            tx.respond(400, str(exc))
            return
        except SubscriptionError:
            tx.respond(481)
            return
        tx.respond(200)

    def release(self, subscription: ClientSubscription | ServerSubscription) -> None:
        """Forgets a terminated subscription (sip.subscription.DialogChannel)."""
        dialog = subscription.dialog
        if isinstance(subscription, ClientSubscription):
            self._pending.pop((subscription.call_id, subscription.from_tag), None)
        if dialog is not None:
            usage = self._usages.get(dialog.id)
            if isinstance(usage, SubscriptionUsage):
                del self._usages[dialog.id]
                self._unbind(dialog.id)
                if dialog.state is not DialogState.TERMINATED:
                    dialog.handle(DialogEvent.TERMINATE)

    # -- receiving --------------------------------------------------------------------------

    def on_request(self, method: str, handler: Handler) -> None:
        """Routes out-of-dialog ``method`` requests to ``handler`` (sync or async)."""
        self._handlers[method.upper()] = handler

    def _register(
        self, dialog_id: DialogId, usage: DialogUsage, connection: Connection | None = None
    ) -> None:
        """Routes ``dialog_id``'s requests to ``usage``; a stream ``connection`` the dialog
        was set up on is spared by the idle timeout until the dialog goes."""
        self._usages[dialog_id] = usage
        if connection is not None and dialog_id not in self._bound:
            connection.dialogs += 1
            self._bound[dialog_id] = connection

    def _unregister(self, dialog_id: DialogId, usage: DialogUsage) -> None:
        if self._usages.get(dialog_id) is usage:
            del self._usages[dialog_id]
            self._unbind(dialog_id)

    def _unbind(self, dialog_id: DialogId) -> None:
        connection = self._bound.pop(dialog_id, None)
        if connection is not None:
            connection.dialogs -= 1

    def dialog_count(self) -> int:
        """Number of dialogs the stack holds."""
        return len(self._usages)

    def _on_ack(self, request: Request, source: Source) -> None:
        key = DialogId(request.call_id, request.to_tag or "", request.from_tag or "")
        usage = self._usages.get(key)
        if usage is None:
            trace.debug("x ACK for unknown dialog %s", request.call_id)
            return
        usage.ack_received(request)

    def _on_request(self, tx: ServerTransaction) -> None:
        req = tx.request
        method = req.method
        required = {tag.strip().lower() for tag in req.get_all("Require") if tag.strip()}
        unknown = sorted(required - EXTENSIONS)
        if unknown:
            tx.respond(420, headers=[("Unsupported", ", ".join(unknown))])
            return
        to_tag = req.to_tag
        if self.trust is not None:
            verdict = self.trust.verdict(method, tx.source.host, in_dialog=to_tag is not None)
            if verdict is Verdict.REFUSE:
                untrusted_log.log(
                    "x %s from %s refused: not in the trust domain (sip_trusted_peers)",
                    method,
                    tx.source.host,
                    key=tx.source.host,
                )
                tx.respond(403, FORBIDDEN_REASON)
                return
            if verdict is Verdict.STRIP and "P-Asserted-Identity" in req.headers:
                tx.request = req = req.without_header("P-Asserted-Identity")  # RFC 3325 §5
        if to_tag is not None:
            key = DialogId(req.call_id, to_tag, req.from_tag or "")
            usage = self._usages.get(key)
            if usage is not None:
                usage.handle_request(tx)
                return
            if method == "NOTIFY" and self._notify_creates_dialog(tx):
                return
            tx.respond(481)
            return
        if method == "OPTIONS" and "OPTIONS" not in self._handlers:
            tx.respond(
                200,
                headers=[
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Supported", SUPPORTED),
                    ("Allow-Events", ALLOW_EVENTS),
                    ("Contact", self.contact_for(req.to.uri, tx.source.transport)),
                ],
            )
            return
        if method in ("BYE", "NOTIFY", "INFO", "UPDATE"):
            tx.respond(481)  # these only exist inside a dialog
            return
        handler = self._handlers.get(method)
        if handler is None:
            if method in _SUPPORTED_METHODS:
                tx.respond(480, "Temporarily Unavailable")
            elif method in _KNOWN_UNSUPPORTED:
                tx.respond(405, headers=[("Allow", ALLOW)])
            else:
                tx.respond(501)
            return
        incoming: IncomingRequest
        if method == "INVITE":
            incoming = IncomingInvite(self, tx)
        elif method == "SUBSCRIBE":
            try:
                parse_event(req.get("Event") or "")
            except CodecError:
                tx.respond(400, "Missing or bad Event header")
                return
            incoming = IncomingSubscribe(self, tx)
        elif method == "REFER":
            if req.get("Refer-To") is None:
                tx.respond(400, "Missing Refer-To")
                return
            incoming = IncomingRefer(self, tx)
        else:
            incoming = IncomingRequest(self, tx)
        self._call(handler, incoming, tx)

    def _notify_creates_dialog(self, tx: ServerTransaction) -> bool:
        req = tx.request
        sub = self._pending.get((req.call_id, req.to_tag or ""))
        if sub is None or sub.dialog is not None or sub.request is None:
            return False
        contact = self.contact_for(req.to.uri, tx.source.transport)
        try:
            dialog = Dialog.from_notify(sub.request, req, contact)
        except DialogError as exc:
            tx.respond(exc.status, exc.reason)
            return True
        sub.dialog = dialog
        usage = SubscriptionUsage(self, dialog, client=sub)
        self._register(dialog.id, usage, tx.source.connection)
        self._deliver_notify(sub, tx)
        return True

    def _call(self, handler: Handler, incoming: IncomingRequest, tx: ServerTransaction) -> None:
        try:
            result = handler(incoming)
        except Exception:
            log.exception("SIP handler for %s failed", tx.method)
            if not tx.has_final:
                tx.respond(500)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_handler(result, incoming, tx))
        elif not tx.has_final and tx.method != "INVITE":
            log.error("SIP handler for %s returned without answering", tx.method)
            tx.respond(500)

    async def _await_handler(
        self, result: Awaitable[None], incoming: IncomingRequest, tx: ServerTransaction
    ) -> None:
        try:
            await result
        except Exception:
            log.exception("SIP handler for %s failed", tx.method)
            if not tx.has_final:
                tx.respond(500)
            return
        if not tx.has_final and not (
            isinstance(incoming, IncomingInvite) and not incoming.cancelled.is_set()
        ):
            log.error("SIP handler for %s returned without answering", tx.method)
            tx.respond(500)
