"""The asyncio handle of one MSRP session (RFC 4975 §5): paths, bind, send, receive, close.

Public API (sessions come from ``MSRPStack.create_session``)::

    session.local_path / .path_attribute (SDP a=path) / .session_id / .status
    session.fingerprint (SDP a=fingerprint of an msrps session, else None) / .port (m= line)
    await session.start(remote_path, active, timeout=None, accept_types=("*",), max_size=None,
                        fingerprint=None)   # the peer's a=fingerprint, checked on msrps
    await session.send(content_type, body, success_report=False, failure_report="yes")
        -> SendResult  (raises MSRPError: the peer's status, a local 408/481, or a local
           415/413 for a type or size the peer's SDP excludes)
    await session.receive(timeout=None) -> MessageReceived | ReportReceived ; session.messages()
    session.on_event = callback(event)   # instead of receive(): every session event
    session.on_path_change = callback(local_path)   # a relay refresh changed our a=path
    await session.close()
"""

# Design notes
# ------------
# The session's protocol state is the sans-I/O MSRPSessionState (sip.msrp.session); this
# handle adds the futures the application awaits (one per message sent with
# Failure-Report: yes, one for the binding) and the queue of received messages, and
# reaches its connection through the stack (``stack._engines``), since a session may move
# to another connection (a relay refresh). Closing fails every unfinished send with a
# local 481.

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sip.errors import MSRPError
from sip.msrp.events import (
    Event,
    MessageFailed,
    MessageReceived,
    MessageSent,
    ReportReceived,
    SessionStatus,
    StateChanged,
)
from sip.msrp.link import Link
from sip.msrp.message import MSRPMessageId
from sip.msrp.session import MSRPSessionState, SessionInput
from sip.msrp.uri import MSRPURI, SessionId, parse_path, serialize_path

if TYPE_CHECKING:
    from sip.msrp.transport import MSRPStack

__all__ = ["Incoming", "MSRPSession", "SendResult"]

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
        self._relay_link: Link | None = None

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
    def fingerprint(self) -> str | None:
        """Our SDP ``a=fingerprint`` when this session's URI is ``msrps`` (RFC 4975 §14)."""
        tls = self.stack.tls
        if tls is None or self.state.local_uri.scheme != "msrps":
            return None
        return tls.fingerprint

    @property
    def port(self) -> int:
        """The port of our URI (the SDP ``m=`` line's)."""
        return self.state.local_uri.effective_port

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
        fingerprint: str | None = None,
    ) -> None:
        """Connect and bind (active) or wait for the peer's first frame (passive).

        ``remote_path``, ``accept_types``, ``max_size`` and ``fingerprint`` come from the
        peer's SDP (a=path, a=accept-types, a=max-size, a=fingerprint; RFC 4975 §8, RFC 8122);
        an ``msrps`` peer we dial must match the fingerprint (sip.msrp.tls).
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
        link = self._relay_link or await self.stack._link_to(path[0], fingerprint)
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

    def _link(self) -> Link:
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
