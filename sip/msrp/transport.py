"""asyncio MSRP transport: listener, connector, shared connections, relay AUTH (RFC 4975, 4976).

# Why this shape
#
# The only MSRP I/O is here and in the two modules this one composes: sip.msrp.link
# (one TCP connection: an ``asyncio.Protocol`` around a sans-I/O ``MSRPConnection``,
# one timer per connection following ``next_deadline()``, so idle sessions cost no task
# and no timer; 10,000 of them are cheap, see bench/msrp_bench.py) and
# sip.msrp.session_handle (``MSRPSession``, what the application holds).
#
# Connections are shared: every outbound connection is keyed by the peer's
# (host, port) and carries all sessions toward it; inbound connections bind to
# sessions by the To-Path session-id of their first frame. The active side sends
# an empty SEND right after connecting and waits for its 200 (RFC 4975 §5.4). A
# transaction timeout (default 30 s) fails every pending message on that
# connection with ``MSRPError(408, local=True)`` and closes it
# (docs/protocol-mapping.md "MSRP errors"). With a relay (RFC 4976) each session
# AUTHs on the one connection to the relay, gets Use-Path/Expires, sends
# everything through it and re-AUTHs before expiry.
#
# MSRP over TLS (RFC 4975 §14): with ``tls`` (sip.msrp.tls.MSRPTLS) a second listener
# takes TLS on its own port; ``create_session(tls=True)`` gives an ``msrps://`` URI on it,
# and ``msrps`` URIs are dialled over TLS, the peer checked against the SDP fingerprint
# or the CAs (sip.msrp.tls) before any frame is sent. The TLS listener (sip.tlslistener)
# logs the handshakes it refuses: one warning line naming the peer and the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Sequence

from sip.auth import DigestClient
from sip.connlimits import Admission, ConnectionLimits, open_own
from sip.counters import MSRPCounters, NoMSRPCounters
from sip.errors import MSRPError
from sip.limits import current
from sip.msrp.connection import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TIMEOUT,
    DEFAULT_WINDOW,
    MSRPConnection,
)
from sip.msrp.events import (
    AuthResponse,
    SessionStatus,
)
from sip.msrp.link import Link
from sip.msrp.relay import (
    RelayBinding,
    RelayConfig,
    authorization_for,
    binding_from,
    retry_expires,
)
from sip.msrp.session import MSRPSessionState, new_session_id
from sip.msrp.session_handle import MSRPSession
from sip.msrp.tls import MSRPTLS
from sip.msrp.uri import MSRPURI, SessionId, serialize_path
from sip.tls import describe_refusal
from sip.tlslistener import TLSListener

__all__ = ["MSRPStack"]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.msrp")


class MSRPStack:
    """The MSRP endpoint: one listener, shared connections, sessions (RFC 4975, 4976).

    Build it inside a running event loop. ``advertised_host`` goes into our URIs
    (SDP a=path) when ``host`` is a wildcard such as 0.0.0.0.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        relay: RelayConfig | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 10.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window: int = DEFAULT_WINDOW,
        max_message_size: int | None = None,
        sessmatch: bool = True,
        keepalive_interval: float | None = None,
        advertised_host: str | None = None,
        limits: ConnectionLimits | None = None,
        tls: MSRPTLS | None = None,
        counters: MSRPCounters | None = None,
    ) -> None:
        self.host = host
        self.counters: MSRPCounters = counters or NoMSRPCounters()
        """Counts frames, bytes and errors of every connection (``sip.counters``)."""
        self.tls = tls
        self._tls_server: TLSListener | None = None
        self._tls_port = tls.port if tls is not None else 0
        self._tls_verified: dict[tuple[str, int], bool] = {}  # outbound msrps: chain checked
        self.advertised_host = advertised_host or host
        self._port = port
        self.relay = relay
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.chunk_size = chunk_size
        self.window = window
        self.max_message_size = (
            current().msrp_message_size if max_message_size is None else max_message_size
        )
        self.sessmatch = sessmatch
        self.keepalive_interval = keepalive_interval
        self._loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sessions: dict[SessionId, MSRPSession] = {}
        self._links: set[Link] = set()
        self._engines: dict[MSRPConnection, Link] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        self._digest = DigestClient()
        self._outbound: dict[tuple[str, int], Link] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[Link]] = {}
        self._admission = Admission("MSRP", limits or ConnectionLimits())
        self._own_ports: set[int] = set()  # local ports of the connections we opened
        self.deadline_closed = 0
        self.idle_closed = 0

    @property
    def limits(self) -> ConnectionLimits:
        """Frame deadline, idle timeout and caps of inbound connections (sip.connlimits)."""
        return self._admission.limits

    @property
    def refused(self) -> int:
        """Inbound connections refused over the caps so far."""
        return self._admission.refused

    def _exempt(self, link: Link, peer: tuple[str, int] | None) -> bool:
        """Our own connections (to the relay, or to our own listener in the embedded
        default) are never capped nor closed for idleness or slowness."""
        if link.key is not None:
            return self.relay is not None and link.key == self.relay.uri.authority
        if not peer:
            return False
        host, port = str(peer[0]), int(peer[1])
        local = host in (self.host, self.advertised_host) or ipaddress.ip_address(host).is_loopback
        return port in self._own_ports and local

    @property
    def port(self) -> int:
        """The listening port (after ``start``)."""
        return self._port

    @property
    def listening(self) -> bool:
        """The listener is open (readiness probe)."""
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        """Open the listener (passive side)."""
        self._server = await self._loop.create_server(
            lambda: Link(self, None), self.host, self._port
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("MSRP listening on %s:%d", self.host, self._port)
        if self.tls is not None:
            try:
                self._tls_server = await TLSListener.start(  # logs refused handshakes
                    lambda: Link(self, None),
                    self.host,
                    self._tls_port,
                    self.tls.server,
                    name="MSRP",
                    logger=log,
                )
            except BaseException:
                self._server.close()
                raise
            self._tls_port = self._tls_server.sockets[0].getsockname()[1]
            log.info("MSRP over TLS listening on %s:%d", self.host, self._tls_port)

    @property
    def tls_port(self) -> int | None:
        """The MSRP TLS listener's port (after ``start``), None without TLS."""
        return self._tls_port if self.tls is not None else None

    async def close(self) -> None:
        """Close every session, connection and the listener."""
        for task in list(self._refreshing):
            task.cancel()
        for session in list(self._sessions.values()):
            await session.close()
        if self._server is not None:
            self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        links = list(self._links)
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.closed for link in links], timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
            self._tls_server = None

    async def create_session(
        self,
        *,
        session_id: str | None = None,
        accept_types: Sequence[str] = ("*",),
        tls: bool = False,
    ) -> MSRPSession:
        """A new session with its local path (AUTH at the relay first if configured);
        ``tls``: an ``msrps://`` URI on the TLS listener (ValueError without TLS)."""
        sid = SessionId(sys.intern(session_id or new_session_id()))  # shared with the peer's
        # parsed path when both ends are in this process (sip.msrp.uri.parse_uri)
        if sid in self._sessions:
            raise ValueError(f"MSRP session {sid} exists")
        if tls and self.tls is None:
            raise ValueError("MSRP over TLS is not configured")
        if tls:
            uri = MSRPURI(self.advertised_host, self._tls_port, sid, "tcp", scheme="msrps")
        else:
            uri = MSRPURI(self.advertised_host, self._port, sid, "tcp")
        state = MSRPSessionState(
            uri, accept_types=tuple(accept_types), max_message_size=self.max_message_size
        )
        session = MSRPSession(self, state)
        self._sessions[sid] = session
        if self.relay is not None:
            try:
                await self._authenticate(session)
            except BaseException:
                session._shutdown()
                self._release(session, None)  # also drops an otherwise unused relay link
                raise
        return session

    def session(self, session_id: str) -> MSRPSession | None:
        """The live session with this id, or None."""
        return self._sessions.get(SessionId(session_id))

    # -- internals --------------------------------------------------------------

    def _new_engine(self) -> MSRPConnection:
        return MSRPConnection(
            resolver=self._resolve,
            sessmatch=self.sessmatch,
            chunk_size=self.chunk_size,
            window=self.window,
            timeout=self.timeout,
        )

    def _resolve(self, sid: SessionId) -> MSRPSessionState | None:
        session = self._sessions.get(sid)
        return session.state if session is not None else None

    def _forget(self, link: Link) -> None:
        self._links.discard(link)
        self._engines.pop(link.engine, None)
        if link.key is not None and self._outbound.get(link.key) is link:
            del self._outbound[link.key]

    async def _link_to(self, uri: MSRPURI, fingerprint: str | None = None) -> Link:
        """The connection toward ``uri`` (opened or shared); an ``msrps`` one is checked
        against ``fingerprint`` (the peer's SDP) first, whether new or shared."""
        link = await self._shared_link(uri, fingerprint)
        if self.tls is not None and uri.scheme == "msrps":
            verified = self._tls_verified.get(uri.authority, False)
            try:
                self.tls.check(link.transport, fingerprint, link.peer, verified=verified)
            except MSRPError:
                if not link.engine.sessions:
                    link.close()
                raise
        return link

    async def _shared_link(self, uri: MSRPURI, fingerprint: str | None) -> Link:
        tls = uri.scheme == "msrps"
        if uri.scheme not in ("msrp", "msrps") or uri.transport.lower() != "tcp":
            raise MSRPError(400, f"unsupported MSRP transport: {uri}", local=True)
        if tls and self.tls is None:
            raise MSRPError(400, f"unsupported MSRP transport (no TLS settings): {uri}", local=True)
        key = uri.authority
        known = self._outbound.get(key)
        if known is not None and known.usable:
            return known
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Link] = self._loop.create_future()
        self._connecting[key] = fut
        context = self.tls.context_for(fingerprint) if tls and self.tls is not None else None
        try:
            _t, link = await asyncio.wait_for(self._open(key, context), self.connect_timeout)
        except (OSError, TimeoutError) as err:
            if isinstance(err, ssl.SSLError):
                log.warning("MSRP TLS peer %s:%d refused: %s", *key, describe_refusal(err))
            exc = MSRPError(408, f"cannot connect to {key[0]}:{key[1]}: {err}", local=True)
            fut.set_exception(exc)
            fut.exception()
            raise exc from err
        finally:
            del self._connecting[key]
        if context is not None:
            self._tls_verified[key] = context.verify_mode == ssl.CERT_REQUIRED
            link.closed.add_done_callback(lambda _f: self._tls_verified.pop(key, None))
        self._outbound[key] = link
        fut.set_result(link)
        return link

    async def _open(
        self, key: tuple[str, int], context: ssl.SSLContext | None = None
    ) -> tuple[asyncio.BaseTransport, Link]:
        """Connects from a port bound first, so that our own listener knows the connection
        as ours the moment it accepts it (embedded default: we talk to ourselves)."""
        host = key[0]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            infos = await self._loop.getaddrinfo(host, key[1], type=socket.SOCK_STREAM)
            host = str(infos[0][4][0])
        return await open_own(
            host,
            key[1],
            lambda: Link(self, key),
            self._own_ports,
            ssl=context,
            server_hostname=key[0] if context is not None else None,
        )

    def _release(self, session: MSRPSession, engine: MSRPConnection | None) -> None:
        self._sessions.pop(session.session_id, None)
        relay_link = session._relay_link
        session._relay_link = None
        for link in (self._engines.get(engine) if engine else None, relay_link):
            if link is None or link.engine.sessions or link.auth_waiters:
                continue
            if link is relay_link and self._relay_in_use(link):
                continue
            link.close()

    def _relay_in_use(self, link: Link) -> bool:
        return any(s._relay_link is link for s in self._sessions.values())

    async def _authenticate(self, session: MSRPSession, *, refresh: bool = False) -> None:
        relay = self.relay
        assert relay is not None
        link = await self._link_to(relay.uri)
        session._relay_link = link
        expires = relay.expires
        authorization: str | None = None
        for _attempt in range(3):
            tid, data = link.engine.send_auth(
                relay.uri,
                session.state.local_uri,
                self._loop.time(),
                expires=expires,
                authorization=authorization,
            )
            fut: asyncio.Future[AuthResponse] = self._loop.create_future()
            link.auth_waiters[tid] = fut
            link.write(data)
            link.arm()
            resp = await fut
            retry = retry_expires(resp)
            if retry is not None and retry != expires:
                expires = retry  # 423: use the relay's bound
                continue
            if authorization is None:
                authorization = authorization_for(resp, relay, self._digest)
                if authorization is not None:
                    continue  # 401: answer the digest challenge once
            break
        binding = binding_from(resp, self._loop.time())
        self._bind_relay(session, binding, refresh)

    def _bind_relay(self, session: MSRPSession, binding: RelayBinding, refresh: bool) -> None:
        changed = binding.use_path != session.state.use_path
        session.state.use_path = binding.use_path
        log.debug(
            "MSRP relay AUTH for %s: Use-Path %s, Expires %d",
            session.session_id,
            serialize_path(binding.use_path),
            binding.expires,
        )
        if refresh and changed and session.on_path_change is not None:
            try:
                session.on_path_change(session.state.local_path)
            except Exception:
                log.exception("MSRP session %s: on_path_change failed", session.session_id)
        delay = binding.refresh_at - self._loop.time()
        session._refresh = self._loop.call_later(delay, self._start_refresh, session)

    def _start_refresh(self, session: MSRPSession) -> None:
        session._refresh = None
        if session.state.status is SessionStatus.CLOSED:
            return
        task = self._loop.create_task(self._refresh_auth(session))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _refresh_auth(self, session: MSRPSession) -> None:
        try:
            await self._authenticate(session, refresh=True)
        except MSRPError as err:
            log.warning("MSRP relay re-AUTH for %s failed: %s", session.session_id, err)
