"""Where the bridge may POST notifications: the ``notifyURL`` policy (docs/notify-policy.md).

An app names the URL its notifications go to (OMA REST Chat v1.0 notifications); without a
rule the bridge would POST wherever it is told, its own listeners and the
operator's internal services included (server-side request forgery). The rule:

* the scheme is ``http`` or ``https``; the URL carries no user-info
  (credentials are never taken from a URL, RFC 9110 §4.2.4);
* a host given as a number is written in canonical form (``127.0.0.1``, not
  ``2130706433`` or ``0x7f.1``);
* every address the host stands for is globally routable: no unspecified
  (``0.0.0.0``, ``::``) or multicast address, ever; no loopback, link-local
  (169.254.0.0/16 holds cloud metadata services), private-use (RFC 1918,
  RFC 4193), shared (RFC 6598) or other special-purpose address (RFC 6890),
  unless the operator allows it: ``notify_allowed_networks`` (addresses and
  CIDR networks), ``notify_allowed_hosts`` (host names trusted whatever they
  resolve to) and ``notify_allow_loopback`` (loopback receivers; on by
  default only for the local development set-up, a loopback listener without
  credentials). IPv4-mapped, 6to4, Teredo and NAT64 addresses are judged by
  the IPv4 address they carry as well;
* never one of the bridge's own listeners (REST, SIP, MSRP ports on a
  loopback, wildcard or listening address, or on any address of this host,
  seen at connect time). Notification Channel ``callbackURL``\\ s are not
  notify targets at all: they are recognised by
  ``rest.uris.ServerRoot.channel_path`` and queue notifications internally.

It is applied twice: to the URL when a subscription is created (400 SVC0002
with the reason, ``rest.handlers.subscriptions``), and to the addresses the
host resolves to when the delivery client connects (``rest.http_client``):
every address is checked and the connection goes to a checked address, so a
name that resolves differently later (DNS rebinding) is caught too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bridge.config import Settings

__all__ = ["Address", "NotifyPolicy", "PolicyError", "address_problem"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
RESOLVE_TIMEOUT = 3.0
"""Seconds a subscription-time look-up of the notifyURL's host may take (then: not judged)."""

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
_NUMERIC_HOST = frozenset("0123456789abcdefx.")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


class PolicyError(ValueError):
    """A notifyURL (or an address it resolves to) the policy refuses; the text says why."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: Address) -> str | None:
    """Why ``ip`` is not a public unicast address (RFC 6890 registries), or None if it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            problem = address_problem(inner)
            if problem is not None:
                return f"{problem} (carried in {ip})"
            if ip.ipv4_mapped is not None:
                return None
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private-use or special-purpose address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _parse_ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


class NotifyPolicy:
    """The notifyURL rule of one bridge: operator allowances and the bridge's own listeners."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allowed_networks: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.allow_loopback = allow_loopback
        self.allowed_networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allowed_networks
        )
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)
        self.own_ports: set[int] = set()
        self.own_addresses: set[Address] = set()
        """Specific addresses the bridge listens on (loopback and wildcard are implied)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyPolicy:
        """The policy ``settings`` describe (``notify_*``), with the configured listener ports."""
        policy = cls(
            allow_loopback=settings.notify_loopback_allowed,
            allowed_networks=settings.notify_allowed_networks,
            allowed_hosts=settings.notify_allowed_hosts,
        )
        policy.add_listener(settings.http_host, settings.http_port)
        policy.add_listener(settings.sip_host, settings.sip_port)
        policy.add_listener(settings.msrp_host, settings.msrp_port)
        return policy

    def add_listener(self, host: str, port: int) -> None:
        """Record a listener of this bridge (called again once ports picked as 0 are known)."""
        if port:
            self.own_ports.add(port)
        ip = _parse_ip(host)
        if ip is not None and not ip.is_loopback and not ip.is_unspecified:
            self.own_addresses.add(ip)

    # --- the URL --------------------------------------------------------------

    def check_url(self, url: str) -> tuple[str, int, Address | None]:
        """Host, port and literal address (if the host is one) of an acceptable ``url``.

        Raises :class:`PolicyError` for a scheme other than http(s), user-info,
        a missing or malformed host or port, a non-canonical numeric host, or an
        address literal the policy refuses. A host name is not resolved here
        (:meth:`check_resolved`).
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise PolicyError(f"is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise PolicyError("must be an http or https URL")
        if "@" in parts.netloc:
            raise PolicyError("must not carry user-info (credentials are never taken from a URL)")
        host = (parts.hostname or "").rstrip(".") if parts.hostname != "." else ""
        if not host:
            raise PolicyError("has no host")
        if port is None:
            port = 443 if scheme == "https" else 80
        if port == 0:
            raise PolicyError("has port 0")
        ip = _parse_ip(host)
        if ip is None:
            if set(host) <= _NUMERIC_HOST and any(c.isdigit() for c in host):
                try:
                    socket.inet_aton(host)
                except OSError:
                    pass
                else:  # 2130706433, 0x7f.1, 127.1: what getaddrinfo would make of them
                    raise PolicyError(
                        "names an IPv4 address in a non-canonical form: write it dotted-decimal"
                    )
            return host, port, None
        self.check_address(host, ip, port)
        return host, port, ip

    async def check_resolved(self, url: str, *, timeout: float = RESOLVE_TIMEOUT) -> None:
        """:meth:`check_url`, then every address the host resolves to now.

        A host that does not resolve (or not within ``timeout``) is accepted:
        delivery checks again when it connects.
        """
        host, port, ip = self.check_url(url)
        if ip is not None or host in self.allowed_hosts:
            return
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.resolve(host, port)
        except (OSError, TimeoutError):
            return
        for address in addresses:
            self.check_address(host, address, port)

    # --- addresses ------------------------------------------------------------

    @staticmethod
    async def resolve(host: str, port: int) -> list[Address]:
        """The addresses of ``host`` for a TCP connection, in resolver order (OSError if none)."""
        ip = _parse_ip(host)
        if ip is not None:
            return [ip]
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        seen: list[Address] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = _parse_ip(str(sockaddr[0]))
            if address is not None and address not in seen:
                seen.append(address)
        if not seen:
            raise OSError(f"no address for {host}")
        return seen

    def allowed(self, ip: Address) -> bool:
        """True if ``ip`` lies in ``notify_allowed_networks``."""
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return any(
            ip in net or (inner is not None and inner in net) for net in self.allowed_networks
        )

    def _is_loopback(self, ip: Address) -> bool:
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_loopback or (inner is not None and inner.is_loopback)

    def _is_unspecified(self, ip: Address) -> bool:
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return ip.is_unspecified or (inner is not None and inner.is_unspecified)

    def is_own_listener(self, ip: Address, port: int) -> bool:
        """True if ``ip:port`` is (or may be) one of this bridge's own listeners."""
        if port not in self.own_ports:
            return False
        return self._is_loopback(ip) or self._is_unspecified(ip) or ip in self.own_addresses

    def check_address(self, host: str, ip: Address, port: int) -> None:
        """Raise :class:`PolicyError` unless ``host`` at ``ip:port`` may receive notifications."""
        where = host if host == str(ip) else f"{host} ({ip})"
        if self.is_own_listener(ip, port):
            raise PolicyError(f"{where} port {port} is a listener of this bridge")
        problem = address_problem(ip)
        if problem is None:
            return
        if self._is_unspecified(ip) or ip.is_multicast:
            raise PolicyError(f"{where} is {problem}")
        if host.lower().rstrip(".") in self.allowed_hosts or self.allowed(ip):
            return
        if self.allow_loopback and self._is_loopback(ip):
            return
        raise PolicyError(f"{where} is {problem}, not allowed as a notification target")

    def check_connected(self, host: str, local: Address, peer: Address, port: int) -> None:
        """After connecting: refuse a connection that came back to this very host.

        A peer address equal to the local address of the connection is one of
        this host's own addresses (RFC 1122 §3.3.4.2 local delivery): it stands
        for the bridge's own listeners on that port, and otherwise counts as
        loopback (allowed only where loopback receivers are, or by an explicit
        allowance).
        """
        if local != peer or self._is_loopback(peer):
            return
        if port in self.own_ports:
            raise PolicyError(f"{host} port {port} is a listener of this bridge (this host)")
        if not (
            self.allow_loopback
            or self.allowed(peer)
            or host.lower().rstrip(".") in self.allowed_hosts
        ):
            raise PolicyError(f"{host} ({peer}) is an address of this host, not allowed")
