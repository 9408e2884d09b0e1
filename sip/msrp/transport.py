"""asyncio MSRP transport: listener, connector, shared connections, relay AUTH (RFC 4975, 4976).

# Why this shape
#
# This is the only MSRP module that does I/O. Each TCP connection is an
# ``asyncio.Protocol`` wrapping one sans-I/O ``MSRPConnection``: received bytes
# go in, events come out and are dispatched to the ``MSRPSession`` objects by
# session-id; bytes the engine produces are written back. One timer per
# connection follows ``next_deadline()``, so idle sessions cost no task and no
# timer (10,000 of them are cheap; see bench/msrp_bench.py).
#
# Connections are shared: every outbound connection is keyed by the peer's
# (host, port) and carries all sessions toward it; inbound connections bind to
# sessions by the To-Path session-id of their first frame. The active side
# sends an empty SEND right after connecting and waits for its 200 (mapping
# §1.0.2). A transaction timeout (default 30 s) fails every pending message on
# that connection with ``MSRPError(408, local=True)`` and closes it (mapping
# §2.2). With a relay (RFC 4976) each session AUTHs on the one connection to
# the relay, gets Use-Path/Expires, sends everything through it and re-AUTHs
# before expiry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from sip.auth import DigestClient
from sip.errors import CodecError, MSRPError
from sip.msrp.events import (
    AuthResponse,
    ConnectionBroken,
    Event,
    MessageFailed,
    MessageReceived,
    MessageSent,
    ReportReceived,
    RequestRejected,
    SessionStatus,
    StateChanged,
)
from sip.msrp.message import MSRPMessageId
from sip.msrp.relay import (
    RelayBinding,
    RelayConfig,
    authorization_for,
    binding_from,
    retry_expires,
)
from sip.msrp.session import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
    DEFAULT_WINDOW,
    MSRPConnection,
    MSRPSessionState,
    SessionInput,
    new_ident,
)
from sip.msrp.uri import MSRPURI, SessionId, parse_path, serialize_path

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.msrp")

Incoming = MessageReceived | ReportReceived


@dataclass(frozen=True, slots=True)
class SendResult:
    """An outgoing message that every hop accepted (last chunk answered 200)."""

    message_id: MSRPMessageId


async def _bounded(fut: asyncio.Future[SendResult], wait: float) -> SendResult:
    """Await a bind/keep-alive result; the caller's own limit becomes a local 408."""
    try:
        return await asyncio.wait_for(fut, wait + 0.5)  # the engine's own 408 comes first
    except TimeoutError:
        raise MSRPError(408, "no response to the binding SEND", local=True) from None


class _Link(asyncio.Protocol):
    """One TCP connection and its sans-I/O engine."""

    def __init__(self, stack: MSRPStack, key: tuple[str, int] | None) -> None:
        self.stack = stack
        self.key = key
        self.engine = stack._new_engine()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = stack._loop.create_future()
        self.auth_waiters: dict[str, asyncio.Future[AuthResponse]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._silence: asyncio.TimerHandle | None = None
        self._heard = True
        self._spoke = False
        self.peer = "?"

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.stack._links.add(self)
        self.stack._engines[self.engine] = self
        trace.debug("- %s connected", self.peer)
        if self.key is None:  # inbound: a peer that never sends a frame is dropped
            self._silence = self.stack._loop.call_later(self.stack.timeout, self._on_silence)
        if self.stack.keepalive_interval:
            self._keepalive = self.stack._loop.call_later(
                self.stack.keepalive_interval, self._on_keepalive
            )

    def data_received(self, data: bytes) -> None:
        self._heard = self._spoke = True
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("< %s %d bytes: %r", self.peer, len(data), data[:200])
        try:
            events = self.engine.receive_data(data, self.stack._loop.time())
        except CodecError as err:
            trace.debug("x %s framing error: %s", self.peer, err)
            log.warning("MSRP connection %s: %s; closing it", self.peer, err)
            self.close()
            return
        self.flush()
        self.dispatch(events)
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        trace.debug("- %s closed (%s)", self.peer, exc)
        for handle in (self._timer, self._keepalive, self._silence):
            if handle is not None:
                handle.cancel()
        self.stack._forget(self)
        for fut in self.auth_waiters.values():
            if not fut.done():
                fut.set_exception(MSRPError(408, "Connection lost", local=True))
        events = self.engine.connection_lost("connection lost")
        self.dispatch([e for e in events if not isinstance(e, ConnectionBroken)])
        if not self.closed.done():
            self.closed.set_result(None)

    # helpers
    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.transport is None or self.transport.is_closing():
            raise MSRPError(408, "Connection closed", local=True)
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("> %s %d bytes: %r", self.peer, len(data), data[:200])
        self.transport.write(data)

    def flush(self) -> None:
        data = self.engine.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.write(data)

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def arm(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None:
            return
        if self._timer is not None and not self._timer.cancelled():
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self.stack._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        events = self.engine.handle_timeout(self.stack._loop.time())
        self.dispatch(events)
        if not events:
            self.arm()

    def _on_silence(self) -> None:
        self._silence = None
        if not self._spoke:
            log.info(
                "MSRP connection %s sent nothing for %.0f s; closing it",
                self.peer,
                self.stack.timeout,
            )
            self.close()

    def _on_keepalive(self) -> None:
        interval = self.stack.keepalive_interval
        if not self._heard and interval and self.usable:
            for state in list(self.engine.sessions.values()):
                if state.status is SessionStatus.BOUND and state.remote_path:
                    _mid, data = self.engine.send_keepalive(state, self.stack._loop.time())
                    self.write(data)
                    self.arm()
                    break
        self._heard = False
        if interval:
            self._keepalive = self.stack._loop.call_later(interval, self._on_keepalive)

    def dispatch(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, AuthResponse):
                fut = self.auth_waiters.pop(ev.transaction_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif isinstance(ev, ConnectionBroken):
                trace.debug("x %s %s", self.peer, ev.reason)
                log.warning("MSRP connection %s broken: %s", self.peer, ev.reason)
                self.close()
            elif isinstance(ev, RequestRejected):
                trace.debug(
                    "x %s rejected %s: %d %s", self.peer, ev.transaction_id, ev.status, ev.reason
                )
            elif isinstance(ev, StateChanged):
                session = self.stack._sessions.get(ev.session_id)
                if session is not None:
                    session._state_changed(ev)
            else:
                session = self.stack._sessions.get(ev.session_id)
                if session is not None:
                    session._event(ev)


class MSRPSession:
    """One MSRP session as the bridge sees it (RFC 4975 §5): paths, send, receive, close."""

    __slots__ = (
        "stack",
        "state",
        "on_event",
        "on_path_change",
        "_queue",
        "_waiters",
        "_bound",
        "_refresh",
        "_relay_link",
    )

    def __init__(self, stack: MSRPStack, state: MSRPSessionState) -> None:
        self.stack = stack
        self.state = state
        self.on_event: Callable[[Event], None] | None = None
        """Called for every session event (messages, reports, chunk progress); when set,
        nothing is queued for ``receive``/``messages``."""
        self.on_path_change: Callable[[tuple[MSRPURI, ...]], None] | None = None
        """Called when a relay refresh changed our a=path (re-INVITE needed)."""
        self._queue: asyncio.Queue[Incoming | None] | None = None
        self._waiters: dict[MSRPMessageId, asyncio.Future[SendResult]] | None = None
        self._bound: asyncio.Future[None] | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._relay_link: _Link | None = None

    @property
    def session_id(self) -> SessionId:
        """Our session-id (the last segment of our MSRP URI)."""
        return self.state.session_id

    @property
    def local_path(self) -> tuple[MSRPURI, ...]:
        """Our a=path: relay Use-Path (if any) then our URI (RFC 4976 §5.1)."""
        return self.state.local_path

    @property
    def path_attribute(self) -> str:
        """The SDP ``a=path:`` value."""
        return serialize_path(self.state.local_path)

    @property
    def status(self) -> SessionStatus:
        """NEW, BINDING, BOUND or CLOSED."""
        return self.state.status

    async def start(
        self,
        remote_path: Sequence[MSRPURI] | str,
        active: bool,
        *,
        timeout: float | None = None,
        accept_types: Sequence[str] = ("*",),
        max_size: int | None = None,
    ) -> None:
        """Connect and bind (active) or wait for the peer's first frame (passive).

        ``remote_path``, ``accept_types`` and ``max_size`` come from the peer's SDP
        (a=path, a=accept-types, a=max-size; mapping §1.0.2).
        """
        path = parse_path(remote_path) if isinstance(remote_path, str) else tuple(remote_path)
        if not path:
            raise ValueError("empty remote path")
        if self.state.status is SessionStatus.CLOSED:
            raise MSRPError(481, "Session closed", local=True)
        self.state.remote_path = path
        self.state.peer_accept_types = tuple(accept_types)
        self.state.peer_max_size = max_size
        wait = timeout if timeout is not None else self.stack.timeout
        if not active or self.state.status is SessionStatus.BOUND:
            if self.state.status is not SessionStatus.BOUND:
                if self._bound is None:
                    self._bound = self.stack._loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(self._bound), wait)
                except TimeoutError:
                    raise MSRPError(408, "peer did not connect", local=True) from None
            # an empty SEND back, as rcsjta does on both roles: it proves the path
            # and makes a relay open its connection toward the peer before traffic
            link = self._link()
            if not link.usable:
                raise MSRPError(408, "Connection closed", local=True)
            mid, data = link.engine.send_keepalive(self.state, self.stack._loop.time())
            fut = self._waiter(mid)
            link.write(data)
            link.arm()
            await _bounded(fut, wait)
            self._bound = None
            return
        link = self._relay_link or await self.stack._link_to(path[0])
        if not link.usable:
            raise MSRPError(408, "Connection closed", local=True)
        link.engine.attach(self.state)
        mid, data = link.engine.send_bind(self.state, self.stack._loop.time())
        fut = self._waiter(mid)
        link.write(data)
        link.arm()
        await _bounded(fut, wait)

    async def send(
        self,
        content_type: str,
        body: bytes,
        *,
        message_id: str | None = None,
        success_report: bool = False,
        failure_report: str = "yes",
    ) -> SendResult:
        """Send one message, chunked; returns when the last chunk got 200 (RFC 4975 §7.1).

        With ``failure_report`` "no" or "partial" it returns once written; a later
        error (partial) arrives as a MessageFailed event on ``on_event``.
        """
        link = self._link()
        if not link.usable:
            raise MSRPError(408, "Connection closed", local=True)
        mid, data = link.engine.send_message(
            self.state,
            content_type,
            body,
            self.stack._loop.time(),
            message_id=message_id,
            success_report=success_report,
            failure_report=failure_report,
        )
        if failure_report != "yes":
            link.write(data)
            return SendResult(mid)
        fut = self._waiter(mid)
        link.write(data)
        link.arm()
        return await fut

    async def receive(self, timeout: float | None = None) -> Incoming:
        """The next incoming message or REPORT; raises MSRPError(481) once closed."""
        queue = self._incoming_queue()
        try:
            item = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            raise MSRPError(408, "nothing received", local=True) from None
        if item is None:
            queue.put_nowait(None)
            raise MSRPError(481, "Session closed", local=True)
        return item

    async def messages(self) -> AsyncIterator[Incoming]:
        """Incoming messages and REPORTs until the session closes."""
        while True:
            try:
                yield await self.receive()
            except MSRPError:
                return

    async def close(self) -> None:
        """End the session: fail unfinished sends, drop the connection if it was the last."""
        if self.stack._sessions.get(self.session_id) is not self:
            return
        engine = self.state.connection
        events: list[Event] = []
        if engine is not None:
            events = engine.detach(self.state)
        changed = self.state.transition(SessionInput.CLOSE)
        if changed is not None:
            self._state_changed(changed)
        for ev in events:
            self._event(ev)
        self._shutdown()
        self.stack._release(self, engine)

    # -- internals --------------------------------------------------------------

    def _link(self) -> _Link:
        engine = self.state.connection
        link = self.stack._engines.get(engine) if engine is not None else None
        if link is None:
            raise MSRPError(481, "session is not connected", local=True)
        return link

    def _waiter(self, mid: MSRPMessageId) -> asyncio.Future[SendResult]:
        if self._waiters is None:
            self._waiters = {}
        fut: asyncio.Future[SendResult] = self.stack._loop.create_future()
        self._waiters[mid] = fut
        return fut

    def _incoming_queue(self) -> asyncio.Queue[Incoming | None]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            if self.state.status is SessionStatus.CLOSED:
                self._queue.put_nowait(None)
        return self._queue

    def _event(self, ev: Event) -> None:
        if isinstance(ev, MessageSent | MessageFailed):
            fut = self._waiters.pop(ev.message_id, None) if self._waiters else None
            if not self._waiters:
                self._waiters = None
            if fut is not None and not fut.done():
                if isinstance(ev, MessageSent):
                    fut.set_result(SendResult(ev.message_id))
                else:
                    fut.set_exception(MSRPError(ev.status, ev.reason, local=ev.local))
        if self.on_event is not None:
            self._notify(ev)  # a callback takes every event; nothing is queued then
        elif isinstance(ev, MessageReceived | ReportReceived):
            self._incoming_queue().put_nowait(ev)

    def _notify(self, ev: Event) -> None:
        callback = self.on_event
        if callback is None:
            return
        try:
            callback(ev)
        except Exception:  # a faulty callback must not break the shared connection
            log.exception("MSRP session %s: on_event callback failed", self.session_id)

    def _state_changed(self, ev: StateChanged) -> None:
        trace.debug("- session %s %s -> %s", ev.session_id, ev.old.value, ev.new.value)
        if ev.new is SessionStatus.BOUND and self._bound is not None and not self._bound.done():
            self._bound.set_result(None)
        if ev.new is SessionStatus.CLOSED:
            self._shutdown()
            if self.on_event is not None:
                self._notify(ev)

    def _shutdown(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        err = MSRPError(481, "Session closed", local=True)
        for fut in (self._waiters or {}).values():
            if not fut.done():
                fut.set_exception(err)
        self._waiters = None
        if self._bound is not None and not self._bound.done():
            self._bound.set_exception(err)
            self._bound.exception()  # retrieved: nobody may be waiting
        if self._queue is not None:
            self._queue.put_nowait(None)


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
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        sessmatch: bool = True,
        keepalive_interval: float | None = None,
        advertised_host: str | None = None,
    ) -> None:
        self.host = host
        self.advertised_host = advertised_host or host
        self._port = port
        self.relay = relay
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.chunk_size = chunk_size
        self.window = window
        self.max_message_size = max_message_size
        self.sessmatch = sessmatch
        self.keepalive_interval = keepalive_interval
        self._loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sessions: dict[SessionId, MSRPSession] = {}
        self._links: set[_Link] = set()
        self._engines: dict[MSRPConnection, _Link] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        self._digest = DigestClient()
        self._outbound: dict[tuple[str, int], _Link] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[_Link]] = {}

    @property
    def port(self) -> int:
        """The listening port (after ``start``)."""
        return self._port

    async def start(self) -> None:
        """Open the listener (passive side)."""
        self._server = await self._loop.create_server(
            lambda: _Link(self, None), self.host, self._port
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("MSRP listening on %s:%d", self.host, self._port)

    async def close(self) -> None:
        """Close every session, connection and the listener."""
        for task in list(self._refreshing):
            task.cancel()
        for session in list(self._sessions.values()):
            await session.close()
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.closed for link in links], timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def create_session(
        self, *, session_id: str | None = None, accept_types: Sequence[str] = ("*",)
    ) -> MSRPSession:
        """A new session with its local path (AUTH at the relay first if configured)."""
        sid = SessionId(session_id or new_ident())
        if sid in self._sessions:
            raise ValueError(f"MSRP session {sid} exists")
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

    def _forget(self, link: _Link) -> None:
        self._links.discard(link)
        self._engines.pop(link.engine, None)
        if link.key is not None and self._outbound.get(link.key) is link:
            del self._outbound[link.key]

    async def _link_to(self, uri: MSRPURI) -> _Link:
        if uri.scheme != "msrp" or uri.transport.lower() != "tcp":
            raise MSRPError(400, f"unsupported MSRP transport: {uri}", local=True)
        key = uri.authority
        known = self._outbound.get(key)
        if known is not None and known.usable:
            return known
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Link] = self._loop.create_future()
        self._connecting[key] = fut
        try:
            _t, link = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Link(self, key), key[0], key[1]),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as err:
            exc = MSRPError(408, f"cannot connect to {key[0]}:{key[1]}: {err}", local=True)
            fut.set_exception(exc)
            fut.exception()
            raise exc from err
        finally:
            del self._connecting[key]
        self._outbound[key] = link
        fut.set_result(link)
        return link

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

    def _relay_in_use(self, link: _Link) -> bool:
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
