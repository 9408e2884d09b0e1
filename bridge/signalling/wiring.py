"""Builds the SIP stack, the MSRP stack and the signalling adapter from ``Settings``.

Usage (``bridge.app.serve``)::

    side = await start_signalling(settings)    # stacks listening, adapter attached
                                               # (SIP stack from build_sip_stack(settings))
    side = await start_signalling(settings, focus_factory=make_focus)
                                               # + a conference focus: make_focus(sip, msrp)
                                               # -> Focus (the Protocol below)
    install_chat(app, side.signalling)         # rest.chat_service: binds the chat service
    ...
    await side.close()                         # BYE live legs, close MSRP, stop SIP

The embedded default (issue 4 item 6): with no ``sip_outbound_proxy``, every
request the bridge sends goes to its own SIP listener on loopback (over TCP
when it listens on TCP), so a request for a user the bridge serves comes back
to it over real SIP, and the media flows over real MSRP between its own
sessions: two REST users of one bridge can chat with no IMS core at all.

Routing (docs/group-chat.md "Parts"): one SIP stack serves the participant
adapter and, when there is one, the bridge's own conference focus. The stack
takes one handler per method, so a :class:`Router` sits in front: an
out-of-dialog INVITE, SUBSCRIBE or REFER whose Request-URI the focus
:meth:`Focus.owns` (the factory URI, its conference URIs) goes to the focus,
everything else to the adapter (INVITE, MESSAGE) or is answered 480 as the
stack would with no handler. In-dialog requests never reach the router: the
stack hands them to the dialog's own usage.

Trust (docs/deployment.md "Identity and trust"): the stack's ``trust`` domain (sip.trust)
is ``sip_trusted_peers``, else the outbound proxy's addresses, else loopback and the SIP
listener (the embedded default sends to itself); it refuses every request until set.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from bridge.config import Settings
from bridge.signalling.adapter import SipSignalling
from bridge.signalling.tls import msrp_tls, sip_tls
from sip import rcs
from sip.connlimits import ConnectionLimits
from sip.counters import MSRPCounters, SipCounters
from sip.limits import Limits
from sip.message import Request
from sip.msrp import MSRPStack, RelayConfig
from sip.stack import SipStack
from sip.trust import LOOPBACK, TrustDomain
from sip.uri import SipURI, parse_uri
from sip.usage import Handler, IncomingInvite, IncomingRefer, IncomingRequest, IncomingSubscribe

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
MSRP_KEEPALIVE = 30.0
"""Seconds of silence on an MSRP connection before an empty SEND probes it
(docs/protocol-mapping.md "SDP and MSRP"): a peer that died without closing TCP then
fails the probe's transaction, the connection closes and its sessions end
(SessionEnded)."""


class Focus(Protocol):
    """What the router needs of a conference focus (the bridge's own, ``bridge.focus``)."""

    def owns(self, request: Request) -> bool:
        """True when ``request``'s Request-URI is the focus's factory or one of its conferences."""
        ...

    async def on_invite(self, invite: IncomingInvite) -> None:
        """An INVITE to the factory (create) or to a conference URI (join)."""
        ...

    def on_subscribe(self, subscribe: IncomingSubscribe) -> Awaitable[None] | None:
        """An out-of-dialog SUBSCRIBE ``Event: conference`` (answered before it returns)."""
        ...

    def on_refer(self, refer: IncomingRefer) -> Awaitable[None] | None:
        """An out-of-dialog REFER to a conference URI (answered before it returns)."""
        ...


DRAINED_METHODS = ("INVITE", "SUBSCRIBE", "REFER")
"""Out-of-dialog requests that start new work, refused while the bridge shuts down (a
MESSAGE is still taken: it is stored at once, and IMDNs for our sent messages arrive so)."""

FocusFactory = Callable[[SipStack, MSRPStack], Focus]
Owns = Callable[[Request], bool]


class Router:
    """Out-of-dialog requests of one SIP stack, by method and by who owns the Request-URI."""

    def __init__(self, sip: SipStack) -> None:
        self.sip = sip
        self._routes: dict[str, list[tuple[Owns, Handler]]] = {}
        self._defaults: dict[str, Handler] = {}
        self._refused: frozenset[str] = frozenset()
        self._retry_after = 0

    def drain(self, retry_after: int, methods: Iterable[str] = DRAINED_METHODS) -> None:
        """Answer new out-of-dialog ``methods`` requests 503 with ``Retry-After`` from now on
        (the graceful shutdown, docs/configuration.md "Shutdown"; RFC 3261 §21.5.4). In-dialog
        requests (BYE, MSRP-carrying sessions) are not affected: they never reach the router."""
        self._refused = frozenset(m.upper() for m in methods)
        self._retry_after = retry_after

    def route(self, method: str, owns: Owns, handler: Handler) -> None:
        """Send ``method`` requests for which ``owns(request)`` holds to ``handler`` (first
        route that matches wins, in the order given)."""
        method = method.upper()
        self._routes.setdefault(method, []).append((owns, handler))
        self._install(method)

    def default(self, method: str, handler: Handler) -> None:
        """The handler of ``method`` requests no route owns (the participant adapter)."""
        method = method.upper()
        self._defaults[method] = handler
        self._install(method)

    def handler_for(self, request: Request) -> Handler | None:
        """The handler ``request`` goes to (None: answered 480)."""
        for owns, handler in self._routes.get(request.method, ()):
            if owns(request):
                return handler
        return self._defaults.get(request.method)

    def _install(self, method: str) -> None:
        self.sip.on_request(method, self._dispatch)

    async def _dispatch(self, incoming: IncomingRequest) -> None:
        if incoming.request.method in self._refused:
            incoming.respond(503, headers=[("Retry-After", str(self._retry_after))])
            return
        handler = self.handler_for(incoming.request)
        if handler is None:
            incoming.respond(480, "Temporarily Unavailable")
            return
        result = handler(incoming)
        if inspect.isawaitable(result):
            await result


@dataclass
class SignallingSide:
    """The running SIP and MSRP stacks, the router and the adapter (and focus) over them."""

    sip: SipStack
    msrp: MSRPStack
    signalling: SipSignalling
    router: Router | None = None
    focus: Focus | None = field(default=None)

    async def close(self) -> None:
        """End the live legs (and the focus's conferences), then close MSRP and SIP."""
        await self.signalling.close()
        closer = getattr(self.focus, "close", None)
        if closer is not None:
            outcome = closer()
            if inspect.isawaitable(outcome):
                await outcome
        await self.msrp.close()
        await self.sip.stop()


def profile_of(settings: Settings) -> rcs.Profile:
    """The ``sip.rcs`` profile named by ``settings.profile``."""
    return rcs.Profile(settings.profile.value)


def build_sip_stack(settings: Settings, counters: SipCounters | None = None) -> SipStack:
    """A SipStack per ``Settings.sip_*``, with the profile's Contact feature tags and User-Agent
    (and the TLS contexts of ``bridge.signalling.tls``, the metrics' counting hooks of
    ``sip.counters``)."""
    profile = profile_of(settings)
    tls_server, tls_client = sip_tls(settings)
    return SipStack(
        host=settings.sip_host,
        port=settings.sip_port,
        transports=settings.sip_transports,
        outbound_proxy=settings.sip_outbound_proxy,
        domain=settings.sip_domain,
        contact_params=rcs.feature_tags(profile),
        user_agent=rcs.user_agent(profile),
        tls_server=tls_server,
        tls_client=tls_client,
        tls_port=settings.sip_tls_port,
        counters=counters,
    )


def parser_limits(settings: Settings) -> Limits:
    """The parsers' limits (sip.limits) per ``Settings.limit_*``; ``bridge.app`` hands them
    to ``sip.limits.configure`` before any listener starts."""
    return Limits(
        digits=settings.limit_digits,
        sip_header_size=settings.limit_sip_header_size,
        sip_header_fields=settings.limit_sip_header_fields,
        sip_body_size=settings.limit_sip_body_size,
        sdp_lines=settings.limit_sdp_lines,
        mime_header_lines=settings.limit_mime_header_lines,
        xml_depth=settings.limit_xml_depth,
        xml_elements=settings.limit_xml_elements,
        xml_attributes=settings.limit_xml_attributes,
        xml_attribute_length=settings.limit_xml_attribute_length,
        xml_namespaces=settings.limit_xml_namespaces,
        xml_namespace_length=settings.limit_xml_namespace_length,
        msrp_header_size=settings.limit_msrp_header_size,
        msrp_headers=settings.limit_msrp_headers,
        msrp_frame_size=settings.limit_msrp_frame_size,
        msrp_message_size=settings.limit_msrp_message_size,
    )


def loopback_proxy(sip: SipStack) -> str:
    """The URI of our own listener, used as outbound proxy in the embedded default."""
    host = "127.0.0.1" if sip.host in _WILDCARDS else sip.host
    if "tcp" not in sip.transports and "udp" not in sip.transports and "tls" in sip.transports:
        return f"sip:{host}:{sip.tls_port};transport=tls"  # TLS only (docs/tls.md)
    transport = "tcp" if "tcp" in sip.transports else "udp"
    return f"sip:{host}:{sip.port};transport={transport}"


async def trust_domain(settings: Settings, sip: SipStack) -> TrustDomain:
    """The SIP trust domain (sip.trust): ``sip_trusted_peers``, else every address the
    outbound proxy resolves to, else (embedded default: the bridge sends to itself)
    loopback and the SIP listener's address."""
    policy = settings.sip_untrusted_policy
    if settings.sip_trusted_peers is not None:
        return TrustDomain.of(settings.sip_trusted_peers, policy)
    if not settings.sip_outbound_proxy:
        own = [sip.host] if sip.host not in _WILDCARDS else []
        return TrustDomain.of([*LOOPBACK, *own], policy)
    proxy = parse_uri(settings.sip_outbound_proxy)
    if not isinstance(proxy, SipURI):
        raise ValueError("sip_outbound_proxy must be a sip: or sips: URI")
    host = (proxy.param("maddr") or proxy.host).strip("[]")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError as exc:
        log.error(
            "outbound proxy %s does not resolve (%s): no SIP peer is trusted; "
            "set sip_trusted_peers",
            host,
            exc,
        )
        return TrustDomain((), policy)
    return TrustDomain.of(sorted({str(info[4][0]) for info in infos}), policy)


async def start_signalling(
    settings: Settings,
    focus_factory: FocusFactory | None = None,
    *,
    sip_counters: SipCounters | None = None,
    msrp_counters: MSRPCounters | None = None,
) -> SignallingSide:
    """Start SIP and MSRP per ``settings`` and attach the chat adapter to them.

    With ``focus_factory`` the focus it builds over the same stacks gets the
    INVITE, SUBSCRIBE and REFER requests it owns (module docstring: routing).
    """
    profile = profile_of(settings)
    sip = build_sip_stack(settings, sip_counters)
    sip.trust = TrustDomain((), settings.sip_untrusted_policy)  # nobody until known
    addresses = await sip.start()
    sip.trust = await trust_domain(settings, sip)
    log.info("SIP trust domain (RFC 3325): %s", sip.trust.describe())
    sip.transport.limits = ConnectionLimits(  # before any connection is accepted
        message_deadline=settings.sip_message_deadline,
        idle_timeout=settings.sip_idle_timeout,
        max_connections=settings.sip_max_connections,
        max_per_address=settings.sip_max_connections_per_address,
    )
    if not settings.sip_outbound_proxy:
        proxy = loopback_proxy(sip)
        sip.outbound_proxy = proxy
        sip.transport.outbound_proxy = parse_uri(proxy)  # type: ignore[assignment]
        log.info("no IMS core configured: requests loop back to %s (embedded default)", proxy)
    relay = RelayConfig.from_string(settings.msrp_relay) if settings.msrp_relay else None
    msrp = MSRPStack(
        settings.msrp_host,
        settings.msrp_port,
        relay=relay,
        keepalive_interval=MSRP_KEEPALIVE,
        limits=ConnectionLimits(
            message_deadline=settings.msrp_frame_deadline,
            idle_timeout=settings.msrp_idle_timeout,
            max_connections=settings.msrp_max_connections,
            max_per_address=settings.msrp_max_connections_per_address,
        ),
        tls=msrp_tls(settings),
        counters=msrp_counters,
    )
    try:
        await msrp.start()
    except OSError:
        await sip.stop()
        raise
    signalling = SipSignalling(
        sip,
        msrp,
        profile=profile,
        invite_timeout=settings.chat_invite_timeout,
        tls_offer=settings.msrp_tls_offer,
    )
    router = Router(sip)
    focus = focus_factory(sip, msrp) if focus_factory is not None else None
    if focus is not None:
        router.route("INVITE", focus.owns, focus.on_invite)
        router.route("SUBSCRIBE", focus.owns, focus.on_subscribe)
        router.route("REFER", focus.owns, focus.on_refer)
    signalling.attach(router.default)
    log.info(
        "SIP on %s, MSRP on %s:%d%s%s, profile %s",
        ", ".join(f"{t}:{h}:{p}" for t, h, p in addresses),
        settings.msrp_host,
        msrp.port,
        f" (TLS on {msrp.tls_port})" if msrp.tls_port is not None else "",
        f" via relay {settings.msrp_relay}" if relay else "",
        profile.value,
    )
    return SignallingSide(sip, msrp, signalling, router, focus)
