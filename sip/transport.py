"""SIP transports over asyncio: UDP, TCP and (designed in) TLS (RFC 3261 §18, RFC 3581, RFC 5626).

Public API::

    Target(transport, host, port)            where a message goes ('udp' | 'tcp' | 'tls')
    Source(transport, host, port, connection, local)   where a message came from
    TransportLayer(on_message, *, host="127.0.0.1", advertised_host=None, outbound_proxy=None,
                   idle_timeout=120.0, keepalive_interval=None, connect_timeout=5.0,
                   max_body_size=1 MiB, tls_client=None)
        await .listen("udp" | "tcp" | "tls", port=0, ssl=None) -> (host, port)
        .sent_by(transport) -> (host, port)      for our Via (RFC 3261 §18.1.1)
        .is_reliable(transport) -> bool
        await .send(msg, target)                 requests, ACK, CANCEL; raises SIPError(503,
                                                 or 513 for a datagram above 65507 bytes)
        .try_send(msg, target) -> bool           the same without awaiting (False: use send)
        .send_on(connection, msg)                on an open stream connection
        .connection_to(target) -> Connection | None   the open stream connection to target
        .via_for(transport, branch) -> str       our Via value, with ;rport
        await .send_response(resp, source)       RFC 3261 §18.2.2 (+ RFC 3581 rport)
        await .target_for(request) -> Target    outbound proxy / first Route / Request-URI
        await .resolve(uri) -> Target           numeric hosts or an A/AAAA lookup
        await .close()
    on_message(msg: Request | Response, source: Source) is called for every parsed message.

Design notes
------------
Only bytes move here; framing is ``sip.message.StreamParser`` and everything stateful about
SIP lives in ``sip.transaction``. Each listening UDP socket also sends, so that replies
come back to the port in our Via. Stream connections are kept in one table keyed by the
remote ``(transport, host, port)``: an accepted connection is used again to send to that
peer and for responses to requests that came on it (RFC 3261 §18.2.2); outgoing ones are
reused by later requests to the same target. Connections idle for ``idle_timeout`` are
closed, unless a live dialog is bound to them (``Connection.dialogs``, kept by sip.stack).
A CRLFCRLF ping is answered with CRLF (RFC 5626 §4.4.1); with ``keepalive_interval``
outgoing connections send pings and are closed when the previous one got no pong.

Incoming requests get ``received``/``rport`` stamped on their top Via (RFC 3261 §18.2.1,
RFC 3581 §4). A datagram that does not parse is dropped with an ``x`` trace; when it is a
request whose Via, From, To, Call-ID and CSeq parse, a 400 goes back (RFC 3261 §21.4.1).
On a stream, a message that is framed but does not parse is answered the same way and
the connection stays open (it may be shared with the IMS proxy); only data whose framing
is lost (no Content-Length, oversized header section) closes it. Host names are resolved
with getaddrinfo only (RFC 3263 NAPTR/SRV are not used: the IMS core is configured by
address). TLS takes a
server ``ssl.SSLContext`` in ``listen("tls", ssl=...)`` and ``tls_client`` (default: the
system trust store) for outgoing connections (sip.tls builds both from the settings); the
name checked in the peer's certificate is the host of the URI we resolved (RFC 5922 §4).
A ``sips:`` URI, ``transport=tcp`` or not, is reached over TLS (RFC 3261 §26.2.2, RFC 5630
§3.1.3), and an out-of-dialog ``sips:`` request is refused (503) when the next hop is not
TLS. A peer whose certificate is refused gets one warning line: who and why; on the TLS
listener too (``sip.tlslistener``: a client refused by, or refusing, the handshake).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl as ssl_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

from sip.connlimits import Admission, ConnectionLimits, open_own
from sip.counters import NoSipCounters, SipCounters
from sip.errors import CodecError, SIPError
from sip.headers import parse_name_addr, split_list
from sip.limits import current
from sip.message import (
    BadMessage,
    KeepAlive,
    Message,
    Request,
    Response,
    StreamParser,
    make_response,
    parse_message,
    serialize,
)
from sip.ratelog import RateLimitedLog
from sip.tls import describe_refusal
from sip.tlslistener import TLSListener
from sip.uri import SipURI, TelURI, format_host, parse_uri

__all__ = ["Connection", "Source", "Target", "TransportLayer"]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")

_malformed_log = RateLimitedLog(log, logging.WARNING, "malformed SIP messages")
"""Malformed messages and lost framing: one line per peer address and window, five at most,
then a count (issue 13)."""

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
MAX_DATAGRAM = 65507  # IPv4 UDP payload limit; bigger messages need TCP (RFC 3261 §18.1.1)


@dataclass(frozen=True, slots=True)
class Target:
    """A destination: transport ('udp', 'tcp', 'tls'), IP address and port."""

    transport: str
    host: str
    port: int
    server_name: str = field(default="", compare=False)
    """The host name the address was resolved from (TLS: the name the certificate must
    carry); empty: ``host``."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from; ``connection`` is set for stream transports."""

    transport: str
    host: str
    port: int
    connection: Connection | None = field(default=None, compare=False)
    local: tuple[str, int] = ("", 0)


def _trace_message(direction: str, transport: str, host: str, port: int, data: bytes) -> None:
    if trace.isEnabledFor(logging.DEBUG):
        trace.debug(
            "%s %s %s:%s\n%s", direction, transport, host, port, data.decode("utf-8", "replace")
        )


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host, port = str(addr[0]), int(addr[1])
        self.layer._datagram_received(self, data, host, port)

    def error_received(self, exc: Exception) -> None:
        trace.debug("x udp error %s", exc)


class Connection(asyncio.Protocol):
    """One TCP/TLS connection with its stream framer."""

    def __init__(self, layer: TransportLayer, transport_name: str, outgoing: bool) -> None:
        self.layer = layer
        self.name = transport_name
        self.outgoing = outgoing
        self.parser = StreamParser(max_body_size=layer.max_body_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.last_activity = time.monotonic()
        self.awaiting_pong = False
        self.closed = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.exempt = False  # the IMS proxy's or our own: no caps, idle or deadline closing
        self.admitted = False  # counted by the layer's Admission
        self.dialogs = 0
        """Live dialog usages whose peer reached us on this connection, or that we reached
        on it (sip.stack binds them): while any is left the idle timeout spares it."""

    @property
    def key(self) -> tuple[str, str, int]:
        """The connection table key: (transport, remote host, remote port)."""
        return (self.name, self.peer[0], self.peer[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        sock = transport.get_extra_info("sockname")
        self.local = (str(sock[0]), int(sock[1]))
        self.exempt = self.layer._exempt(self)
        if not self.outgoing and not self.exempt:
            if not self.layer._admission.admit(self.peer[0]):
                self.transport.abort()  # over the cap: refused at once (counted, logged)
                return
            self.admitted = True
        self.layer._connections[self.key] = self
        trace.debug("- %s connection %s:%s open", self.name, *self.peer)
        if not self.exempt:
            self._arm_idle(self.layer.idle_timeout)
        if self.outgoing and self.layer.keepalive_interval:
            self._ping_timer = asyncio.get_running_loop().call_later(
                self.layer.keepalive_interval, self._ping
            )

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            events = self.parser.feed(data)
        except CodecError as exc:
            _malformed_log.log(
                "x SIP %s connection %s:%s: framing lost (%s), closing",
                self.name,
                *self.peer,
                exc,
                key=self.peer[0],
            )
            self.close()
            return
        self._follow_deadline(bool(events))
        for event in events:
            if event is KeepAlive.PING:
                self.write(b"\r\n")
            elif event is KeepAlive.PONG:
                self.awaiting_pong = False
            elif isinstance(event, BadMessage):  # answered 400; the connection stays open
                trace.debug("x %s %s:%s bad message: %s", self.name, *self.peer, event.error)
                self.layer._reject(event.data, self.source, event.error)
            else:
                assert not isinstance(event, KeepAlive)
                self.layer._message_received(event, self.source, self._raw(event))

    @staticmethod
    def _raw(msg: Message) -> bytes:
        return serialize(msg) if trace.isEnabledFor(logging.DEBUG) else b""

    @property
    def source(self) -> Source:
        """This connection as the Source of a message."""
        return Source(self.name, self.peer[0], self.peer[1], self, self.local)

    def write(self, data: bytes) -> None:
        """Queues ``data``; raises SIPError(503) if the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            raise SIPError(503, "Connection closed", local=True)
        self.last_activity = time.monotonic()
        self.transport.write(data)

    def _follow_deadline(self, completed: bool) -> None:
        """A message must be complete ``message_deadline`` s after its first byte arrived
        (slowloris; RFC 3261 §18.3 frames it by Content-Length)."""
        if self.exempt:
            return
        if completed and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.parser.buffered and self._deadline is None:
            delay = self.layer.limits.message_deadline
            self._deadline = asyncio.get_running_loop().call_later(delay, self._on_deadline)
        elif not self.parser.buffered and self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        trace.debug(
            "x %s connection %s:%s: message incomplete at the deadline, closing",
            self.name,
            *self.peer,
        )
        self.layer.deadline_closed += 1
        self.close()

    def _arm_idle(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self.last_activity
        timeout = self.layer.idle_timeout
        if idle < timeout:
            self._arm_idle(timeout - idle)
        elif self.dialogs > 0:  # a dialog's peer may send its next request on it any time
            self._arm_idle(timeout)
        else:
            trace.debug("- %s connection %s:%s idle, closing", self.name, *self.peer)
            self.close()

    def _ping(self) -> None:
        if self.awaiting_pong:
            trace.debug("x %s connection %s:%s: no pong, closing", self.name, *self.peer)
            self.close()
            return
        self.awaiting_pong = True
        try:
            self.write(b"\r\n\r\n")
        except SIPError:
            return
        interval = self.layer.keepalive_interval
        assert interval is not None
        self._ping_timer = asyncio.get_running_loop().call_later(interval, self._ping)

    def close(self) -> None:
        """Closes the connection (idempotent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._ping_timer, self._deadline):
            if timer is not None:
                timer.cancel()
        if self.admitted:
            self.admitted = False
            self.layer._admission.release(self.peer[0])
        self.parser = StreamParser(max_body_size=0)  # releases what a broken message held
        if self.layer._connections.get(self.key) is self:
            del self.layer._connections[self.key]
        trace.debug("- %s connection %s:%s closed", self.name, *self.peer)
        if not self.closed.done():
            self.closed.set_result(None)


class TransportLayer:
    """Listening sockets, the connection table and message I/O for the transaction layer."""

    def __init__(
        self,
        on_message: Callable[[Message, Source], None] | None = None,
        *,
        host: str = "127.0.0.1",
        advertised_host: str | None = None,
        outbound_proxy: SipURI | str | None = None,
        idle_timeout: float | None = None,
        keepalive_interval: float | None = None,
        connect_timeout: float = 5.0,
        max_body_size: int | None = None,  # sip.limits.current().sip_body_size
        tls_client: ssl_module.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
        counters: SipCounters | None = None,
    ) -> None:
        self.on_message: Callable[[Message, Source], None] = on_message or _drop
        self.counters: SipCounters = counters or NoSipCounters()
        """Counts every message received and sent (``sip.counters``)."""
        self.host = host
        self.advertised_host = advertised_host or host
        proxy = parse_uri(outbound_proxy) if isinstance(outbound_proxy, str) else outbound_proxy
        if proxy is not None and not isinstance(proxy, SipURI):
            raise ValueError("outbound proxy must be a sip: or sips: URI")
        self.outbound_proxy: SipURI | None = proxy
        limits = limits or ConnectionLimits()
        if idle_timeout is not None:
            limits = replace(limits, idle_timeout=idle_timeout)
        self._admission = Admission("SIP", limits)
        self._proxy_addresses: set[str] = set()  # the outbound proxy's name, resolved
        self._own_ports: set[int] = set()  # local ports of the connections we opened
        self.deadline_closed = 0
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        self.max_body_size = current().sip_body_size if max_body_size is None else max_body_size
        self._udp: _UDPProtocol | None = None
        self._servers: dict[str, asyncio.Server | TLSListener] = {}
        self._ports: dict[str, int] = {}
        self.tls_client = tls_client
        self._connections: dict[tuple[str, str, int], Connection] = {}
        self._connecting: dict[tuple[str, str, int], asyncio.Future[Connection]] = {}

    # -- connection hygiene ------------------------------------------------------------------

    @property
    def limits(self) -> ConnectionLimits:
        """Deadline, idle timeout and caps of inbound connections (sip.connlimits)."""
        return self._admission.limits

    @limits.setter
    def limits(self, limits: ConnectionLimits) -> None:
        self._admission.limits = limits

    @property
    def idle_timeout(self) -> float:
        """Seconds after which an unused connection (not exempt) is closed."""
        return self._admission.limits.idle_timeout

    @property
    def refused(self) -> int:
        """Inbound connections refused over the caps so far."""
        return self._admission.refused

    def _is_proxy(self, host: str, port: int | None) -> bool:
        proxy = self.outbound_proxy
        if proxy is None:
            return False
        if host != proxy.host and host not in self._proxy_addresses:
            return False
        return port is None or port == (proxy.port or DEFAULT_PORTS.get(proxy.transport, 5060))

    def _proxy_is_self(self) -> bool:
        """The embedded default: the outbound proxy is our own listener."""
        proxy = self.outbound_proxy
        if proxy is None:
            return False
        port = proxy.port or DEFAULT_PORTS.get(proxy.transport, 5060)
        local = {self.host, self.advertised_host, "127.0.0.1", "::1", "localhost"}
        return port in self._ports.values() and proxy.host in local

    def _exempt(self, conn: Connection) -> bool:
        """Connections to or from the IMS proxy, and ours to our own listener, are never
        capped or closed for idleness or slowness: they carry everyone's traffic."""
        host, port = conn.peer
        if conn.outgoing:
            return self._is_proxy(host, port)
        if port in self._own_ports and (
            ipaddress.ip_address(host).is_loopback
            or host
            in (
                self.host,
                self.advertised_host,
            )
        ):
            return True  # our own connection to our listener (embedded default)
        return not self._proxy_is_self() and self._is_proxy(host, None)

    # -- setup ---------------------------------------------------------------------------

    async def listen(
        self, transport: str, port: int = 0, ssl: ssl_module.SSLContext | None = None
    ) -> tuple[str, int]:
        """Starts listening on ``host:port`` (0 = any free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        transport = transport.lower()
        if transport == "udp":
            _, proto = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(self.host, port)
            )
            self._udp = proto
            bound = proto.local
        elif transport == "tcp":
            server = await loop.create_server(
                lambda: Connection(self, transport, outgoing=False), self.host, port
            )
            self._servers[transport] = server
            bound = server.sockets[0].getsockname()[:2]
        elif transport == "tls":
            if ssl is None:
                raise ValueError("TLS needs an ssl.SSLContext")
            listener = await TLSListener.start(  # logs refused handshakes (sip.tlslistener)
                lambda: Connection(self, "tls", outgoing=False),
                self.host,
                port,
                ssl,
                name="SIP",
                logger=log,
            )
            self._servers[transport] = listener
            bound = listener.sockets[0].getsockname()[:2]
        else:
            raise ValueError(f"unknown transport: {transport}")
        self._ports[transport] = int(bound[1])
        log.info("SIP listening on %s %s:%s", transport, bound[0], bound[1])
        return (str(bound[0]), int(bound[1]))

    @property
    def listening(self) -> bool:
        """Every listener opened by ``listen`` is still open (readiness probe)."""
        if not self._ports:
            return False
        for name in self._ports:
            if name == "udp":
                udp = self._udp
                if udp is None or udp.transport is None or udp.transport.is_closing():
                    return False
            else:
                server = self._servers.get(name)
                if server is None or not server.is_serving():
                    return False
        return True

    def sent_by(self, transport: str) -> tuple[str, int]:
        """(host, port) to put in our Via for ``transport`` (RFC 3261 §18.1.1)."""
        transport = transport.lower()
        port = self._ports.get(transport) or self._ports.get("udp") or 5060
        return (self.advertised_host, port)

    @staticmethod
    def is_reliable(transport: str) -> bool:
        """True for stream transports (no retransmissions, RFC 3261 §17)."""
        return transport.lower() != "udp"

    async def close(self) -> None:
        """Closes listeners and connections."""
        for server in self._servers.values():
            server.close()
        conns = list(self._connections.values())
        for conn in conns:
            conn.close()
        for server in self._servers.values():
            await server.wait_closed()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=2.0)
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._servers.clear()
        self._udp = None

    # -- receiving -------------------------------------------------------------------------

    def _datagram_received(self, proto: _UDPProtocol, data: bytes, host: str, port: int) -> None:
        if data in (b"\r\n", b"\r\n\r\n"):  # keep-alive on UDP (RFC 5626 §4.4.2 is STUN)
            return
        source = Source("udp", host, port, None, proto.local)
        try:
            msg = parse_message(data)
        except CodecError as exc:
            _trace_message("<", "udp", host, port, data)
            trace.debug("x udp %s:%s dropped: %s", host, port, exc)
            self._reject(data, source, exc)
            return
        self._message_received(msg, source, data)

    def _reject(self, data: bytes, source: Source, exc: CodecError) -> None:
        """Answers 400 to a broken request when enough of it parsed (RFC 3261 §21.4.1): its
        Via, From, To, Call-ID and CSeq are there and its To parses. A Request-URI that does
        not parse is set aside (the response does not carry it); with a top Via that does not
        parse the answer goes back on the request's connection (RFC 3261 §18.2.2) or to the
        datagram's source address."""
        _malformed_log.log(
            "x malformed SIP message from %s:%s (%s): %s",
            source.host,
            source.port,
            source.transport,
            exc,
            key=source.host,
        )
        try:
            msg = _lenient_request(data)
            if msg is None or msg.method == "ACK":
                return
            for name in ("Via", "From", "To", "Call-ID", "CSeq"):
                if msg.get(name) is None:
                    return
            parse_name_addr(msg.get("To") or "")
            warning = [("Warning", _warning(self.host, exc))]
            try:
                msg.top_via  # noqa: B018 - must parse to route the response
            except CodecError:  # back where it came from, as rport would (RFC 3581 §4)
                resp = make_response(msg, 400, headers=warning)
                if source.connection is not None:
                    self.send_on(source.connection, resp)
                elif self._udp is not None and self._udp.transport is not None:
                    self._sendto(serialize(resp), Target("udp", source.host, source.port))
                return
            resp = make_response(self._stamp(msg, source), 400, headers=warning)
        except (CodecError, SIPError):
            return
        asyncio.get_running_loop().create_task(self._send_reject(resp, source))

    async def _send_reject(self, resp: Response, source: Source) -> None:
        try:
            await self.send_response(resp, source)
        except SIPError as exc:
            trace.debug("x could not send 400: %s", exc)

    def _message_received(self, msg: Message, source: Source, raw: bytes) -> None:
        if raw:
            _trace_message("<", source.transport, source.host, source.port, raw)
        self.counters.received(msg)
        if isinstance(msg, Request):
            try:
                msg = self._stamp(msg, source)
            except CodecError as exc:  # pragma: no cover - validated by the parser
                trace.debug("x %s", exc)
                return
        try:
            self.on_message(msg, source)
        except Exception:  # a TU bug must not kill the socket or the connection
            log.exception(
                "SIP message handler failed for a message from %s:%s", source.host, source.port
            )

    @staticmethod
    def _stamp(request: Request, source: Source) -> Request:
        """Adds received/rport to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
        via = request.top_via
        new = via
        if via.wants_rport:
            new = new.with_param("received", source.host).with_param("rport", str(source.port))
        elif via.host != source.host:
            new = new.with_param("received", source.host)
        if new is via:
            return request
        items = list(request.headers.items)
        for i, (key, name, value) in enumerate(items):
            if key == "via":
                rest = split_list(value)[1:]
                items[i] = (key, name, ", ".join([str(new), *rest]))
                break
        return request.replace(headers=type(request.headers)(tuple(items)))

    # -- sending ---------------------------------------------------------------------------

    def try_send(self, msg: Message, target: Target) -> bool:
        """Sends at once when no connect or lookup is needed (UDP, or an open connection);
        False when ``send`` must be awaited instead. Raises SIPError(503) on a dead socket."""
        if target.transport == "udp":
            if self._udp is None or self._udp.transport is None:
                raise SIPError(503, "No UDP transport", local=True)
            data = serialize(msg)
            _trace_message(">", "udp", target.host, target.port, data)
            self._sendto(data, target)
            self.counters.sent(msg)
            return True
        conn = self._connections.get((target.transport, target.host, target.port))
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        data = serialize(msg)
        _trace_message(">", target.transport, target.host, target.port, data)
        conn.write(data)
        self.counters.sent(msg)
        return True

    async def send(self, msg: Message, target: Target) -> None:
        """Sends ``msg`` to ``target``, opening or reusing a connection. Raises SIPError(503)."""
        data = serialize(msg)
        _trace_message(">", target.transport, target.host, target.port, data)
        if target.transport == "udp":
            if self._udp is None or self._udp.transport is None:
                raise SIPError(503, "No UDP transport", local=True)
            self._sendto(data, target)
            self.counters.sent(msg)
            return
        conn = await self._connection(target)
        conn.write(data)
        self.counters.sent(msg)

    def connection_to(self, target: Target) -> Connection | None:
        """The open stream connection to ``target``, if there is one."""
        conn = self._connections.get((target.transport, target.host, target.port))
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return None
        return conn

    def send_on(self, conn: Connection, msg: Message) -> None:
        """Writes ``msg`` on an open stream connection. Raises SIPError(503) if it closed."""
        data = serialize(msg)
        _trace_message(">", conn.name, conn.peer[0], conn.peer[1], data)
        conn.write(data)
        self.counters.sent(msg)

    def _sendto(self, data: bytes, target: Target) -> None:
        if len(data) > MAX_DATAGRAM:
            raise SIPError(513, "Message Too Large", local=True)
        assert self._udp is not None and self._udp.transport is not None
        self._udp.transport.sendto(data, (target.host, target.port))

    async def _connection(self, target: Target) -> Connection:
        key = (target.transport, target.host, target.port)
        conn = self._connections.get(key)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Connection] = loop.create_future()
        self._connecting[key] = future
        try:
            ssl = None
            if target.transport == "tls":
                ssl = self.tls_client or ssl_module.create_default_context()
            _, proto = await asyncio.wait_for(self._open(target, ssl), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, ssl_module.SSLError):
                log.warning(
                    "SIP TLS peer %s (%s:%s) refused: %s",
                    target.server_name or target.host,
                    target.host,
                    target.port,
                    describe_refusal(exc),
                )
            error = SIPError(503, f"Cannot connect to {target.host}:{target.port}", local=True)
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it through shield
            trace.debug(
                "x %s connect %s:%s failed: %s", target.transport, target.host, target.port, exc
            )
            raise error from exc
        finally:
            del self._connecting[key]
        future.set_result(proto)
        return proto

    async def _open(
        self, target: Target, ssl: ssl_module.SSLContext | None
    ) -> tuple[asyncio.BaseTransport, Connection]:
        """Connects from a port bound first, so that our own listener knows the connection
        as ours (exempt from caps) the moment it accepts it."""
        return await open_own(
            target.host,
            target.port,
            lambda: Connection(self, target.transport, outgoing=True),
            self._own_ports,
            ssl=ssl,
            server_hostname=(target.server_name or target.host) if ssl is not None else None,
        )

    async def send_response(self, response: Response, source: Source | None = None) -> None:
        """Sends a response where RFC 3261 §18.2.2 / RFC 3581 §4 say: the request's
        connection if still open, else received/rport or sent-by of the top Via."""
        via = response.top_via
        transport = via.transport.lower()
        if source is not None and source.connection is not None:
            conn = source.connection
            if conn.transport is not None and not conn.transport.is_closing():
                self.send_on(conn, response)
                return
        host = via.received or via.host
        if transport == "udp" and via.maddr:
            host = via.maddr
        port = via.rport or via.port or DEFAULT_PORTS.get(transport, 5060)
        await self.send(response, Target(transport, await self._resolve_host(host), port))

    # -- target selection -------------------------------------------------------------------

    async def target_for(self, request: Request) -> Target:
        """Next hop: the outbound proxy for out-of-dialog requests, else the first Route
        (loose routing), else the Request-URI (RFC 3261 §8.1.2)."""
        routes = request.get_all("Route")
        if self.outbound_proxy is not None and request.to_tag is None and not routes:
            target = await self.resolve(self.outbound_proxy)
            if target.transport != "tls" and _is_sips(request.uri):
                raise SIPError(503, "No TLS route for a sips: URI", local=True)
            return target
        if routes:
            return await self.resolve(parse_name_addr(routes[0]).uri)
        return await self.resolve(request.uri)

    async def resolve(self, uri: object) -> Target:
        """The Target for a SIP URI (maddr, transport and port params honoured)."""
        if isinstance(uri, TelURI) or not isinstance(uri, SipURI):
            if self.outbound_proxy is None:
                raise SIPError(416, "No route for a non-SIP URI", local=True)
            uri = self.outbound_proxy
        transport = uri.transport
        if uri.scheme.lower() == "sips" and transport == "tcp":
            transport = "tls"  # sips: is TLS on every hop (RFC 5630 §3.1.3)
        host = uri.param("maddr") or uri.host
        port = uri.port or DEFAULT_PORTS.get(transport, 5060)
        address = await self._resolve_host(host)
        if uri is self.outbound_proxy:
            self._proxy_addresses.add(address)
        return Target(transport, address, port, host.strip("[]") if transport == "tls" else "")

    async def _resolve_host(self, host: str) -> str:
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as exc:
            raise SIPError(503, f"Cannot resolve {host}", local=True) from exc
        return str(infos[0][4][0])

    def via_for(self, transport: str, branch: str) -> str:
        """A Via value for a request we send over ``transport`` (with rport, RFC 3581)."""
        host, port = self.sent_by(transport)
        return f"SIP/2.0/{transport.upper()} {format_host(host)}:{port};branch={branch};rport"


def _is_sips(uri: object) -> bool:
    return isinstance(uri, SipURI) and uri.scheme.lower() == "sips"


def _drop(msg: Message, source: Source) -> None:
    trace.debug("x no handler for a message from %s:%s", source.host, source.port)


_RESPONSE_FIELDS = frozenset((b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"))
"""Header fields a response copies from its request (long and compact forms)."""


def _lenient_request(data: bytes) -> Request | None:
    """``data`` as a request without validation, for a 400; when it does not parse, its
    header section again with a stand-in Request-URI and only the fields a response
    copies (RFC 3261 §8.2.6.2: so that one over the field limit is answered too); None
    when it is no request or still does not parse."""
    try:
        msg = parse_message(data, validate=False)
    except CodecError:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        line, _, rest = data[:end].partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or parts[0].startswith(b"SIP/"):
            return None
        kept = [
            field
            for field in rest.split(b"\r\n")
            if field.partition(b":")[0].strip().lower() in _RESPONSE_FIELDS
        ]
        stand_in = b"\r\n".join([b"%s sip:invalid.invalid %s" % (parts[0], parts[2]), *kept])
        try:
            msg = parse_message(stand_in + b"\r\n\r\n", validate=False)
        except CodecError:
            return None
    return msg if isinstance(msg, Request) else None


def _warning(host: str, exc: CodecError) -> str:
    text = str(exc)[:200].replace("\\", "\\\\").replace('"', '\\"')
    return f'399 {format_host(host)} "{text}"'
