"""Builds the SIP stack, the MSRP stack and the signalling adapter from ``Settings``.

Usage (``bridge.app.serve``)::

    side = await start_signalling(settings)    # stacks listening, adapter attached
                                               # (SIP stack from build_sip_stack(settings))
    install_chat(app, side.signalling)         # rest.chat_service: binds the chat service
    ...
    await side.close()                         # BYE live legs, close MSRP, stop SIP

The embedded default (issue 4 item 6): with no ``sip_outbound_proxy``, every
request the bridge sends goes to its own SIP listener on loopback (over TCP
when it listens on TCP), so a request for a user the bridge serves comes back
to it over real SIP, and the media flows over real MSRP between its own
sessions: two REST users of one bridge can chat with no IMS core at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.config import Settings
from bridge.signalling.adapter import SipSignalling
from sip import rcs
from sip.msrp import MSRPStack, RelayConfig
from sip.stack import SipStack
from sip.uri import parse_uri

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
MSRP_KEEPALIVE = 30.0
"""Seconds of silence on an MSRP connection before an empty SEND probes it (mapping §1.5):
a peer that died without closing TCP then fails the probe's transaction, the
connection closes and its sessions end (SessionEnded)."""


@dataclass
class SignallingSide:
    """The running SIP and MSRP stacks and the adapter over them."""

    sip: SipStack
    msrp: MSRPStack
    signalling: SipSignalling

    async def close(self) -> None:
        """End the live legs, then close MSRP and SIP."""
        await self.signalling.close()
        await self.msrp.close()
        await self.sip.stop()


def profile_of(settings: Settings) -> rcs.Profile:
    """The ``sip.rcs`` profile named by ``settings.profile``."""
    return rcs.Profile(settings.profile.value)


def build_sip_stack(settings: Settings) -> SipStack:
    """A SipStack per ``Settings.sip_*``, with the profile's Contact feature tags and User-Agent."""
    profile = profile_of(settings)
    return SipStack(
        host=settings.sip_host,
        port=settings.sip_port,
        transports=settings.sip_transports,
        outbound_proxy=settings.sip_outbound_proxy,
        domain=settings.sip_domain,
        contact_params=rcs.feature_tags(profile),
        user_agent=rcs.user_agent(profile),
    )


def loopback_proxy(sip: SipStack) -> str:
    """The URI of our own listener, used as outbound proxy in the embedded default."""
    host = "127.0.0.1" if sip.host in _WILDCARDS else sip.host
    transport = "tcp" if "tcp" in sip.transports else "udp"
    return f"sip:{host}:{sip.port};transport={transport}"


async def start_signalling(settings: Settings) -> SignallingSide:
    """Start SIP and MSRP per ``settings`` and attach the 1-1 chat adapter to them."""
    profile = profile_of(settings)
    sip = build_sip_stack(settings)
    addresses = await sip.start()
    if not settings.sip_outbound_proxy:
        proxy = loopback_proxy(sip)
        sip.outbound_proxy = proxy
        sip.transport.outbound_proxy = parse_uri(proxy)  # type: ignore[assignment]
        log.info("no IMS core configured: requests loop back to %s (embedded default)", proxy)
    relay = RelayConfig.from_string(settings.msrp_relay) if settings.msrp_relay else None
    msrp = MSRPStack(
        settings.msrp_host, settings.msrp_port, relay=relay, keepalive_interval=MSRP_KEEPALIVE
    )
    try:
        await msrp.start()
    except OSError:
        await sip.stop()
        raise
    signalling = SipSignalling(
        sip, msrp, profile=profile, invite_timeout=settings.chat_invite_timeout
    )
    signalling.attach()
    log.info(
        "SIP on %s, MSRP on %s:%d%s, profile %s",
        ", ".join(f"{t}:{h}:{p}" for t, h, p in addresses),
        settings.msrp_host,
        msrp.port,
        f" via relay {settings.msrp_relay}" if relay else "",
        profile.value,
    )
    return SignallingSide(sip, msrp, signalling)
