"""One MSRP TCP connection: an asyncio.Protocol around a sans-I/O MSRPConnection (RFC 4975).

Public API (used by sip.msrp.transport.MSRPStack and sip.msrp.session_handle only)::

    link = Link(stack, key)    # key (host, port) for outbound, None for inbound
    link.write(data) ; link.flush() ; link.arm() ; link.close() ; link.usable ; link.closed
    link.dispatch(events)      # engine events -> the MSRPSession with that session-id
"""

# Design notes
# ------------
# Received bytes go into the engine, events come out and are dispatched to the sessions by
# session-id; bytes the engine produces are written back. One timer per connection follows
# ``next_deadline()``, so idle sessions cost no task and no timer. An inbound connection
# that sends nothing within the transaction timeout is closed; with a keep-alive interval
# a connection that heard nothing for that long probes the peer with an empty SEND
# (docs/protocol-mapping.md "SDP and MSRP"), whose failure closes it.

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from sip.errors import CodecError, MSRPError
from sip.msrp.events import (
    AuthResponse,
    ConnectionBroken,
    Event,
    MessageFailed,
    RequestRejected,
    SessionStatus,
    StateChanged,
)
from sip.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from sip.msrp.transport import MSRPStack

__all__ = ["Link"]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.msrp")

# One line per bad or idle connection would let a flood flood the log too (issue 13):
# the first few per 10 s, then a count (sip.ratelog); every one is still traced at DEBUG.
_malformed_log = RateLimitedLog(log, logging.WARNING, "malformed MSRP connections closed")
_broken_log = RateLimitedLog(log, logging.WARNING, "broken MSRP connections closed")
_idle_log = RateLimitedLog(log, logging.INFO, "silent MSRP connections closed")


class Link(asyncio.Protocol):
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
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last = stack._loop.time()
        self.exempt = False  # ours (loopback, relay): no caps, deadline or idle closing
        self.admitted: str | None = None  # the remote host counted by the stack's Admission
        self._frames_in = 0  # engine frame counts already reported to stack.counters
        self._frames_out = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.exempt = self.stack._exempt(self, peer)
        if self.key is None and not self.exempt:
            host = str(peer[0]) if peer else "?"
            if not self.stack._admission.admit(host):
                self.transport.abort()  # over the cap: refused at once (counted, logged)
                return
            self.admitted = host
            idle = self.stack.limits.idle_timeout
            self._idle = self.stack._loop.call_later(idle, self._on_idle)
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
        now = self._last = self.stack._loop.time()
        before = self.engine._parser.buffered
        try:
            events = self.engine.receive_data(data, now)
            self._follow_deadline(before + len(data) > self.engine._parser.buffered)
        except CodecError as err:
            self.stack.counters.error("framing")
            trace.debug("x %s framing error: %s", self.peer, err)
            _malformed_log.log("MSRP connection %s: %s; closing it", self.peer, err)
            self.close()
            return
        frames = self.engine.frames_received
        self.stack.counters.received(frames - self._frames_in, len(data))
        self._frames_in = frames
        self.flush()
        self.dispatch(events)
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        trace.debug("- %s closed (%s)", self.peer, exc)
        for handle in (self._timer, self._keepalive, self._silence, self._deadline, self._idle):
            if handle is not None:
                handle.cancel()
        if self.admitted is not None:
            self.stack._admission.release(self.admitted)
            self.admitted = None
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
        frames = self.engine.frames_sent
        self.stack.counters.sent(frames - self._frames_out, len(data))
        self._frames_out = frames

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

    def _follow_deadline(self, completed: bool) -> None:
        """A frame must be complete ``message_deadline`` s after its first byte arrived
        (RFC 4975 §7: a frame ends with its end-line); slowloris otherwise."""
        if self.exempt:
            return
        buffered = self.engine._parser.buffered
        if self._deadline is not None and (completed or not buffered):
            self._deadline.cancel()
            self._deadline = None
        if buffered and self._deadline is None:
            delay = self.stack.limits.message_deadline
            self._deadline = self.stack._loop.call_later(delay, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        trace.debug("x %s frame incomplete at the deadline, closing", self.peer)
        self.stack.deadline_closed += 1
        self.close()

    def _on_idle(self) -> None:
        """Closes an inbound connection no session uses and that carried nothing for
        ``idle_timeout`` s; one with bound sessions is kept (the MSRP keep-alive probes it)."""
        self._idle = None
        idle = self.stack.limits.idle_timeout
        quiet = self.stack._loop.time() - self._last
        if quiet >= idle and not self.engine.sessions and not self.auth_waiters:
            trace.debug("- %s idle, closing", self.peer)
            self.stack.idle_closed += 1
            self.close()
            return
        self._idle = self.stack._loop.call_later(max(idle - quiet, idle / 10), self._on_idle)

    def _on_timer(self) -> None:
        self._timer = None
        events = self.engine.handle_timeout(self.stack._loop.time())
        self.dispatch(events)
        if not events:
            self.arm()

    def _on_silence(self) -> None:
        self._silence = None
        if not self._spoke:
            trace.debug("x %s silent for %.0f s", self.peer, self.stack.timeout)
            _idle_log.log(
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
                self.stack.counters.error("broken")
                trace.debug("x %s %s", self.peer, ev.reason)
                _broken_log.log("MSRP connection %s broken: %s", self.peer, ev.reason)
                self.close()
            elif isinstance(ev, RequestRejected):
                self.stack.counters.error("rejected")
                trace.debug(
                    "x %s rejected %s: %d %s", self.peer, ev.transaction_id, ev.status, ev.reason
                )
            elif isinstance(ev, StateChanged):
                session = self.stack._sessions.get(ev.session_id)
                if session is not None:
                    session._state_changed(ev)
            else:
                if isinstance(ev, MessageFailed):
                    self.stack.counters.error("failed")
                session = self.stack._sessions.get(ev.session_id)
                if session is not None:
                    session._event(ev)
