"""The SIP trust domain: whose P-Asserted-Identity counts, who may act for a user.

The bridge learns who sent an out-of-dialog request (MESSAGE, INVITE, SUBSCRIBE, REFER)
from its P-Asserted-Identity, else its From (``bridge.signalling.base.asserted_sender``,
the focus). Both are mere text: any host that reaches the SIP port could claim any user.
RFC 3325 §5 trusts a P-Asserted-Identity only from a node of the trust domain; here the
trust domain is a set of peer addresses (``Settings.sip_trusted_peers``: the IMS proxy's
addresses by default, the bridge's own and loopback on the embedded default; the
defaults are built in ``bridge.signalling.wiring``)::

    domain = TrustDomain.of(["10.0.0.0/24", "127.0.0.1"], policy="refuse")
    domain.trusts("10.0.0.7") -> True
    domain.verdict("MESSAGE", "192.0.2.1", in_dialog=False) -> Verdict.REFUSE

From a peer outside the trust domain, the stack (``sip.stack``):

* removes every P-Asserted-Identity (RFC 3325 §5), whatever the request;
* answers an out-of-dialog request that acts for an identity (``IDENTITY_METHODS``)
  ``403 Forbidden (Untrusted Peer)`` under the policy ``refuse`` (the default), or lets
  it through with what it claims (From, and Referred-By where it is read) under
  ``from-header`` (a closed lab network where every host that reaches the port is
  trusted anyway).

In-dialog requests are matched by Call-ID and both tags (random, RFC 3261 §19.3) and pass
from any address (a NAT or a Record-Route proxy may stand between); their PAI is removed
all the same. OPTIONS and the other out-of-dialog methods act for nobody and pass.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FORBIDDEN_REASON",
    "IDENTITY_METHODS",
    "LOOPBACK",
    "Network",
    "TrustDomain",
    "UntrustedPolicy",
    "Verdict",
    "parse_network",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UntrustedPolicy = Literal["refuse", "from-header"]

IDENTITY_METHODS = frozenset({"MESSAGE", "INVITE", "SUBSCRIBE", "REFER"})
"""Out-of-dialog requests whose sender the bridge acts on (toward users and the focus)."""
FORBIDDEN_REASON = "Forbidden (Untrusted Peer)"
"""Reason phrase of the 403 for a request from outside the trust domain."""
LOOPBACK = ("127.0.0.0/8", "::1/128")
"""Where the bridge's requests to itself come from on the embedded default."""


class Verdict(enum.Enum):
    """What the stack does with a request (``TrustDomain.verdict``)."""

    TRUSTED = "trusted"
    """From the trust domain: its P-Asserted-Identity counts."""
    STRIP = "strip"
    """From outside: P-Asserted-Identity removed, the request goes on."""
    REFUSE = "refuse"
    """From outside, acting for an identity, policy ``refuse``: 403."""


def parse_network(entry: str) -> Network:
    """An address or CIDR network (``10.0.0.0/8``, ``::1``); ValueError when neither."""
    return ipaddress.ip_network(entry.strip(), strict=False)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener sees ::ffff:a.b.c.d
    return address


@dataclass(frozen=True, slots=True)
class TrustDomain:
    """The peer networks whose identity assertions count, and the policy for the others."""

    networks: tuple[Network, ...]
    policy: UntrustedPolicy = "refuse"

    @classmethod
    def of(cls, entries: Iterable[str], policy: UntrustedPolicy = "refuse") -> TrustDomain:
        """From addresses and CIDR networks (ValueError on one that is neither)."""
        return cls(tuple(dict.fromkeys(parse_network(e) for e in entries)), policy)

    def trusts(self, host: str) -> bool:
        """True when ``host`` (a source address) lies in one of the networks."""
        address = _address(host)
        return address is not None and any(address in net for net in self.networks)

    def verdict(self, method: str, host: str, *, in_dialog: bool) -> Verdict:
        """What to do with a ``method`` request from ``host`` (module docstring)."""
        if self.trusts(host):
            return Verdict.TRUSTED
        if self.policy == "refuse" and not in_dialog and method in IDENTITY_METHODS:
            return Verdict.REFUSE
        return Verdict.STRIP

    def describe(self) -> str:
        """The networks, for the start-up log."""
        return ", ".join(str(net) for net in self.networks) or "nobody"
