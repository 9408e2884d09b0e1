"""Connection hygiene shared by the SIP and MSRP transports (RFC 3261 §18, RFC 4975 §7/§8).

Public API::

    ConnectionLimits(message_deadline=20.0, idle_timeout=120.0,
                     max_connections=2000, max_per_address=256)
    admission = Admission("SIP", limits)
        admission.admit(host) -> bool     False: over the cap, close the connection at once
        admission.release(host)           when an admitted connection closes
        admission.refused                 connections refused so far
    await open_own(host, port, factory, own_ports, ssl=None, server_hostname=None)
                                          connect from a port known as ours before it connects

Design notes
------------
A stream peer may hold memory in three ways: by opening many connections, by keeping
them open without sending anything, and by starting a message and never finishing it
(slowloris). The transports close an inbound connection whose message (SIP, framed by
Content-Length per RFC 3261 §18.3) or frame (MSRP, delimited by its end-line per
RFC 4975 §7) is not complete ``message_deadline`` seconds after its first byte; close
inbound connections that nobody uses for ``idle_timeout`` seconds; and refuse inbound
connections beyond ``max_connections`` in total or ``max_per_address`` from one remote
address. Connections we opened ourselves, those of the IMS proxy and those we made to
our own listener (the embedded default loops back to itself) are exempt: they carry
every user's traffic, and one peer's garbage must never close them. Refusals are
counted and logged once per ``LOG_INTERVAL``, not once per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl as ssl_module
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["LOG_INTERVAL", "Admission", "ConnectionLimits", "bound_socket"]

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
"""Seconds between two log lines about refused connections."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Deadlines (seconds) and caps for inbound stream connections; 0 disables a cap."""

    message_deadline: float = 20.0
    idle_timeout: float = 120.0
    max_connections: int = 2000
    max_per_address: int = 256


class Admission:
    """Counts admitted inbound connections per remote address and refuses those over a cap."""

    def __init__(self, protocol: str, limits: ConnectionLimits) -> None:
        self.protocol = protocol
        self.limits = limits
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.refused = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def admit(self, host: str) -> bool:
        """Counts a new inbound connection from ``host``; False when it must be refused."""
        limits = self.limits
        over_total = limits.max_connections and self.total >= limits.max_connections
        over_peer = limits.max_per_address and self.per_address[host] >= limits.max_per_address
        if over_total or over_peer:
            self.refused += 1
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged_at >= LOG_INTERVAL:
                log.warning(
                    "%s: refused %d inbound connection(s) over the cap (%d in total, %d per "
                    "address; last from %s)",
                    self.protocol,
                    self._unlogged,
                    limits.max_connections,
                    limits.max_per_address,
                    host,
                )
                self._unlogged = 0
                self._logged_at = now
            return False
        self.total += 1
        self.per_address[host] += 1
        return True

    def release(self, host: str) -> None:
        """Forgets an admitted connection from ``host``."""
        self.total -= 1
        left = self.per_address[host] - 1
        if left > 0:
            self.per_address[host] = left
        else:
            del self.per_address[host]


def bound_socket(host: str) -> socket.socket:
    """A non-blocking TCP socket for connecting to ``host`` (an IP address), already bound
    to a free local port: the caller knows its own connection before the peer accepts it."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    except BaseException:
        sock.close()
        raise
    return sock


class _Closing(Protocol):
    closed: asyncio.Future[None]


P = TypeVar("P", bound=_Closing)


async def open_own(
    host: str,
    port: int,
    factory: Callable[[], P],
    own_ports: set[int],
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.BaseTransport, P]:
    """Connects to ``host`` (an IP address) from a port bound first and kept in ``own_ports``
    while the connection lives, so that our own listener knows the connection as ours
    (exempt from the caps) the moment it accepts it (the embedded default talks to itself)."""
    loop = asyncio.get_running_loop()
    sock = bound_socket(host)
    local = int(sock.getsockname()[1])
    own_ports.add(local)
    try:
        await loop.sock_connect(sock, (host, port))
        # P is one of the transports' asyncio protocols, each with its ``closed`` future
        transport, proto = await loop.create_connection(  # type: ignore[type-var]
            factory,
            sock=sock,
            ssl=ssl,
            server_hostname=server_hostname,
        )
    except BaseException:
        own_ports.discard(local)
        sock.close()
        raise
    proto.closed.add_done_callback(lambda _f: own_ports.discard(local))
    return transport, proto
