"""SIP transactions: INVITE/non-INVITE client and server (RFC 3261 §17, §9, RFC 6026).

Public API (what the dialog layer, H6's ``SipStack``, uses)::

    layer = TransactionLayer(transport, timers=Timers(), on_request=handler,
                             on_ack=None, on_stray_response=None)
        # sets transport.on_message; ``transport`` is a started sip.transport.TransportLayer

    Sending a request (client transaction)
        tx = layer.client(request, target=None, on_provisional=cb, on_2xx=cb2)
        response = await tx.wait()       # first final response, any status (2xx-6xx)
        response = await layer.request(request, target=None, on_provisional=cb)  # both steps
      - ``request`` needs Request-URI, From, To, Call-ID, CSeq (build it with
        sip.message.make_request); when it has no Via the layer prepends ours with a fresh
        branch and ``rport``; Max-Forwards: 70 is added when absent.
      - ``target`` defaults to ``transport.target_for(request)``: the outbound proxy for
        out-of-dialog requests, else the first Route, else the Request-URI.
      - ``on_provisional(resp)`` gets every 1xx. ``wait()`` raises TransactionTimeout (408,
        timer B/F) or SIPError(503, local=True) for transport failures.
      - INVITE: a non-2xx final is ACKed inside the transaction (same branch, §17.1.1.3).
        A 2xx ends the transaction for the TU (it moves to Accepted, RFC 6026): the dialog
        layer sends the ACK for 2xx itself with ``await layer.send_stateless(ack, target)``
        (new branch) and gets 2xx retransmissions/forks through ``on_2xx(resp)``.
      - ``await tx.cancel()`` sends CANCEL (§9.1) once a provisional has arrived (queued
        until then; nothing is sent if a final arrives first); the INVITE then normally
        completes with 487, which ``wait()`` returns.

    Receiving requests (server transactions)
        handler(tx: ServerTransaction) -> None | Awaitable[None]   called once per request
        tx.request, tx.source, tx.method, tx.state, tx.to_tag
        tx.response(status, reason=None, headers=(), body=b"", content_type=None) -> Response
        tx.respond(status_or_response, ...)          sends (sync); retransmissions absorbed
        tx.on_cancel = callback(tx)                  INVITE only: CANCEL received; the layer
                                                     has already answered 200 to the CANCEL
                                                     and 487 to the INVITE
        tx.failure                                   TransactionTimeout (no ACK, timer H) or
                                                     SIPError(503) once terminated badly
      - A handler that raises or returns without a final response gets a 500 sent for it
        (after the awaitable finished).
      - INVITE: 100 Trying goes out after ``timers.trying_delay`` if the TU was silent. A 2xx
        moves the transaction to Accepted (RFC 6026): the TU retransmits the 2xx (calling
        ``tx.respond(resp)`` again is allowed there) until the ACK for 2xx, which has its own
        branch and arrives through ``on_ack(request, source)``. Optional help:
        ``ack = await tx.respond_until_ack(resp)`` sends the 2xx, retransmits it per §13.3.1.4
        and returns the ACK (matched by Call-ID, CSeq, tags) or raises TransactionTimeout.
      - After a CANCEL the layer has sent 487 (``tx.cancelled`` is True); a later respond()
        raises TransactionStateError, so check ``tx.cancelled``/``tx.has_final`` first.
      - ACK that matches no transaction -> ``on_ack``; a response that matches none ->
        ``on_stray_response(resp, source)``; both default to a trace and a drop.

    ``tx.state`` is a sip.transaction_machine.TxState; TransactionStateError is in sip.errors.

Design notes
------------
The states live in sip.transaction_machine: each transaction kind is a table ``(state,
event) -> state`` and ``TransactionMachine.handle`` is the only place a state changes
(it raises TransactionStateError for an event the table does not allow). The asyncio
objects below translate network input, timer
expiry and TU calls into events and run the on-enter effects (send, arm/cancel timers,
resolve futures). Stray network input that the table rejects (a 1xx after a final, an ACK
in Proceeding...) is dropped with an ``x`` trace; a TU call the table rejects (a second
final response) raises TransactionStateError. Matching follows RFC 3261 §17.1.3 (branch
+ CSeq method) and §17.2.3 (branch + sent-by + method, ACK -> INVITE); requests whose
branch lacks the magic cookie match on Call-ID, CSeq, From tag and top Via (RFC 2543).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable

from sip.errors import SIPError, TransactionStateError, TransactionTimeout
from sip.headers import BRANCH_MAGIC, new_branch, new_tag
from sip.message import Headers, Message, Request, Response, make_response
from sip.timers import Timers
from sip.transaction_machine import (
    TransactionKind,
    TransactionMachine,
    TxEvent,
    TxState,
    response_event,
)
from sip.transport import Source, Target, TransportLayer

__all__ = ["ClientTransaction", "ServerTransaction", "TransactionLayer"]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")

S, E = TxState, TxEvent

ClientKey = tuple[str, str]  # (branch, method)
ServerKey = tuple[str, str, int, str] | tuple[str, str, str, str, str]


class _Base:
    __slots__ = ("layer", "machine", "reliable", "_timers", "_interval")

    def __init__(self, layer: TransactionLayer, kind: TransactionKind, name: str, reliable: bool):
        self.layer = layer
        self.machine = TransactionMachine(kind, name)
        self.reliable = reliable
        self._timers: dict[TxEvent, asyncio.TimerHandle] = {}
        self._interval = layer.timers.t1

    @property
    def state(self) -> TxState:
        """The current state."""
        return self.machine.state

    def _arm(self, event: TxEvent, delay: float) -> None:
        old = self._timers.pop(event, None)
        if old is not None:
            old.cancel()
        self._timers[event] = self.layer.loop.call_later(delay, self._fire, event)

    def _disarm(self, *events: TxEvent) -> None:
        for event in events:
            handle = self._timers.pop(event, None)
            if handle is not None:
                handle.cancel()

    def _fire(self, event: TxEvent) -> None:
        self._timers.pop(event, None)
        self._on_event(event, None)

    def _on_event(self, event: TxEvent, msg: Message | None) -> None:
        raise NotImplementedError

    def _terminate(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class ClientTransaction(_Base):
    """A client transaction (RFC 3261 §17.1); ``await tx.wait()`` gives the final response."""

    __slots__ = (
        "request",
        "target",
        "key",
        "on_provisional",
        "on_2xx",
        "final",
        "provisional",
        "_cancel",
        "_cancel_task",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        target: Target,
        on_provisional: Callable[[Response], None] | None,
        on_2xx: Callable[[Response], None] | None,
    ) -> None:
        invite = request.method == "INVITE"
        kind = TransactionKind.INVITE_CLIENT if invite else TransactionKind.NON_INVITE_CLIENT
        branch = (request.branch or "") if "Via" in request.headers else ""
        super().__init__(layer, kind, branch, layer.transport.is_reliable(target.transport))
        self.request = request
        self.target = target
        self.key: ClientKey = (branch, request.method)
        self.on_provisional = on_provisional
        self.on_2xx = on_2xx
        self.final: asyncio.Future[Response] = layer.loop.create_future()
        self.provisional: Response | None = None
        self._cancel: asyncio.Future[None] | None = None
        self._cancel_task: asyncio.Task[None] | None = None

    async def wait(self) -> Response:
        """The first final response; raises TransactionTimeout or SIPError(503)."""
        return await asyncio.shield(self.final)

    def _start(self) -> None:
        timers = self.layer.timers
        invite = self.machine.kind is TransactionKind.INVITE_CLIENT
        if not self.reliable:
            self._interval = timers.t1
            self._arm(E.TIMER_A if invite else E.TIMER_E, timers.t1)
        self._arm(E.TIMER_B if invite else E.TIMER_F, timers.b if invite else timers.f)
        self.layer._send(self, self.request, self.target)

    def _on_event(self, event: TxEvent, msg: Message | None) -> None:
        machine = self.machine
        old = machine.state
        new = machine.handle(event)
        timers = self.layer.timers
        if event in (E.TIMER_A, E.TIMER_E):
            if event is E.TIMER_A:
                self._interval *= 2
            else:
                interval = self._interval * 2 if new is S.TRYING else timers.t2
                self._interval = min(interval, timers.t2)
            self._arm(event, self._interval)
            self.layer._send(self, self.request, self.target)
            self.layer.transport.counters.retransmitted(self.request.method)
            return
        if isinstance(msg, Response):
            if event is E.PROVISIONAL:
                self._on_provisional(old, msg)
            elif new is S.COMPLETED and machine.kind is TransactionKind.INVITE_CLIENT:
                self.layer._send(self, self._ack(msg), self.target)  # §17.1.1.3
                if old is not S.COMPLETED:
                    self._disarm(E.TIMER_A, E.TIMER_B)
                    self._finish(msg)
                    self._arm(E.TIMER_D, timers.d(self.reliable))
            elif new is S.COMPLETED:
                if old is not S.COMPLETED:
                    self._disarm(E.TIMER_E, E.TIMER_F)
                    self._finish(msg)
                    self._arm(E.TIMER_K, timers.k(self.reliable))
            elif new is S.ACCEPTED:
                if old is S.ACCEPTED:
                    callback = self.on_2xx or self.layer._stray_callback
                    callback(msg)
                else:
                    self._disarm(E.TIMER_A, E.TIMER_B)
                    self._finish(msg)
                    self._arm(E.TIMER_M, timers.m)
            return
        if new is S.TERMINATED:
            if event in (E.TIMER_B, E.TIMER_F):
                self.layer.transport.counters.timed_out(self.request.method)
                self._fail(TransactionTimeout())
            elif event is E.TRANSPORT_ERROR:
                self._fail(SIPError(503, "Service Unavailable", local=True))
            self.layer._forget_client(self)

    def _on_provisional(self, old: TxState, response: Response) -> None:
        if old is S.CALLING:
            self._disarm(E.TIMER_A, E.TIMER_B)
        if self.machine.state is S.COMPLETED:
            return  # late 1xx of a non-INVITE: absorbed
        self.provisional = response
        if self.on_provisional is not None:
            self.on_provisional(response)
        if self._cancel is not None and self._cancel_task is None:
            self._cancel_task = self.layer.loop.create_task(self._send_cancel())

    def _finish(self, response: Response) -> None:
        if not self.final.done():
            self.final.set_result(response)
        if self._cancel is not None and not self._cancel.done() and self._cancel_task is None:
            self._cancel.set_result(None)  # final before any 1xx: nothing to cancel

    def _fail(self, error: SIPError) -> None:
        if not self.final.done():
            self.final.set_exception(error)
            self.final.exception()  # mark retrieved: wait() re-raises it
        if self._cancel is not None and not self._cancel.done():
            self._cancel.set_result(None)

    def _ack(self, response: Response) -> Request:
        """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3)."""
        req = self.request
        headers: list[tuple[str, str]] = [("Via", req.get_all("Via")[0])]
        for route in req.get_all("Route"):
            headers.append(("Route", route))
        headers += [
            ("Max-Forwards", "70"),
            ("From", req.get("From") or ""),
            ("To", response.get("To") or ""),
            ("Call-ID", req.call_id),
            ("CSeq", f"{req.cseq.seq} ACK"),
        ]
        return Request("ACK", req.uri, Headers.of(headers))

    def make_cancel(self) -> Request:
        """The CANCEL for this INVITE (RFC 3261 §9.1): same branch, R-URI, From, To, Call-ID,
        CSeq number and Route set."""
        req = self.request
        headers: list[tuple[str, str]] = [("Via", req.get_all("Via")[0])]
        for route in req.get_all("Route"):
            headers.append(("Route", route))
        headers += [
            ("Max-Forwards", "70"),
            ("From", req.get("From") or ""),
            ("To", req.get("To") or ""),
            ("Call-ID", req.call_id),
            ("CSeq", f"{req.cseq.seq} CANCEL"),
        ]
        return Request("CANCEL", req.uri, Headers.of(headers))

    async def cancel(self) -> None:
        """Cancels a pending INVITE (RFC 3261 §9.1); returns when the CANCEL was answered
        (or is moot because a final response came first)."""
        if self.machine.kind is not TransactionKind.INVITE_CLIENT:
            raise TransactionStateError("only an INVITE can be cancelled")
        if self._cancel is None:
            self._cancel = self.layer.loop.create_future()
            if self.final.done():
                self._cancel.set_result(None)
            elif self.provisional is not None:
                self._cancel_task = self.layer.loop.create_task(self._send_cancel())
        await asyncio.shield(self._cancel)

    async def _send_cancel(self) -> None:
        assert self._cancel is not None
        try:
            if self.final.done():
                return
            cancel_tx = self.layer.client(self.make_cancel(), self.target)
            self._arm(E.TIMER_B, self.layer.timers.b)  # §9.1: give up 64*T1 after CANCEL
            try:
                await cancel_tx.wait()
            except SIPError as exc:
                trace.debug("x CANCEL %s failed: %s", self.key[0], exc)
        finally:
            if not self._cancel.done():
                self._cancel.set_result(None)


class ServerTransaction(_Base):
    """A server transaction (RFC 3261 §17.2); the TU answers with ``respond``."""

    __slots__ = (
        "request",
        "source",
        "key",
        "to_tag",
        "last_response",
        "on_cancel",
        "cancelled",
        "failure",
    )

    def __init__(
        self, layer: TransactionLayer, request: Request, source: Source, key: ServerKey
    ) -> None:
        invite = request.method == "INVITE"
        kind = TransactionKind.INVITE_SERVER if invite else TransactionKind.NON_INVITE_SERVER
        super().__init__(
            layer, kind, request.branch or "", layer.transport.is_reliable(source.transport)
        )
        self.request = request
        self.source = source
        self.key = key
        self.to_tag = request.to_tag or new_tag()
        self.last_response: Response | None = None
        self.on_cancel: Callable[[ServerTransaction], None] | None = None
        self.cancelled = False
        self.failure: SIPError | None = None

    @property
    def method(self) -> str:
        """The request method."""
        return self.request.method

    def response(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """A response to this request with this transaction's To tag (RFC 3261 §8.2.6)."""
        return make_response(
            self.request,
            status,
            reason,
            to_tag=self.to_tag,
            headers=headers,
            body=body,
            content_type=content_type,
        )

    def respond(
        self,
        response: Response | int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        """Sends a response (built with ``response()`` when given a status code)."""
        if isinstance(response, int):
            response = self.response(response, reason, headers, body, content_type)
        self._on_event(response_event(response), response)

    def respond_until_ack(self, response: Response) -> asyncio.Future[Request]:
        """Sends a 2xx to this INVITE and retransmits it (T1 doubling to T2 on UDP) until its
        ACK arrives or 64*T1 pass (RFC 3261 §13.3.1.4): an optional help for the dialog
        layer. The future gives the ACK (also passed to ``on_ack``) or raises
        TransactionTimeout; the TU should then send BYE."""
        if (
            self.machine.kind is not TransactionKind.INVITE_SERVER
            or not 200 <= response.status < 300
        ):
            raise TransactionStateError("respond_until_ack is for a 2xx to INVITE")
        self.respond(response)
        return self.layer._await_ack(self, response)

    @property
    def has_final(self) -> bool:
        """True once a final response was sent."""
        return self.last_response is not None and self.last_response.status >= 200

    def _start(self) -> None:
        if self.machine.kind is TransactionKind.INVITE_SERVER:
            self._arm(E.PROVISIONAL, self.layer.timers.trying_delay)

    def _fire(self, event: TxEvent) -> None:
        if event is E.PROVISIONAL:  # the automatic 100 Trying
            self._timers.pop(event, None)
            if self.last_response is None:
                self.respond(100)
            return
        super()._fire(event)

    def _on_event(self, event: TxEvent, msg: Message | None) -> None:
        machine = self.machine
        old = machine.state
        new = machine.handle(event)
        timers = self.layer.timers
        if isinstance(msg, Response):
            self._disarm(E.PROVISIONAL)
            self.last_response = msg
            self.layer._send_response(self, msg)
            if new is S.COMPLETED and old is not S.COMPLETED:
                if machine.kind is TransactionKind.INVITE_SERVER:
                    if not self.reliable:
                        self._interval = timers.t1
                        self._arm(E.TIMER_G, timers.g)
                    self._arm(E.TIMER_H, timers.h)
                else:
                    self._arm(E.TIMER_J, timers.j(self.reliable))
            elif new is S.ACCEPTED and old is not S.ACCEPTED:
                self._arm(E.TIMER_L, timers.l)
            return
        if event is E.REQUEST:
            if new in (S.PROCEEDING, S.COMPLETED) and self.last_response is not None:
                self.layer._send_response(self, self.last_response)
                self.layer.transport.counters.retransmitted(self.request.method)
        elif event is E.TIMER_G:
            self._interval = min(self._interval * 2, timers.t2)
            self._arm(E.TIMER_G, self._interval)
            if self.last_response is not None:
                self.layer._send_response(self, self.last_response)
                self.layer.transport.counters.retransmitted(self.request.method)
        elif event is E.ACK and old is S.COMPLETED:
            self._disarm(E.TIMER_G, E.TIMER_H)
            self._arm(E.TIMER_I, timers.i(self.reliable))
        elif event is E.TIMER_H:
            self.failure = TransactionTimeout("No ACK")
            self.layer.transport.counters.timed_out("INVITE")
        if new is S.TERMINATED:
            self.layer._forget_server(self)


class _AckWaiter:
    """Retransmits a 2xx to INVITE until the ACK (RFC 3261 §13.3.1.4)."""

    __slots__ = ("layer", "tx", "response", "future", "interval", "deadline", "handle")

    def __init__(self, layer: TransactionLayer, tx: ServerTransaction, response: Response):
        self.layer = layer
        self.tx = tx
        self.response = response
        self.future: asyncio.Future[Request] = layer.loop.create_future()
        timers = layer.timers
        self.interval = timers.t1
        self.deadline = layer.loop.time() + 64 * timers.t1
        delay = 64 * timers.t1 if tx.reliable else timers.t1
        self.handle = layer.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        loop = self.layer.loop
        if loop.time() >= self.deadline - 1e-3:
            if not self.future.done():
                self.future.set_exception(TransactionTimeout("No ACK for 2xx"))
                self.layer.transport.counters.timed_out("INVITE")
            return
        self.layer._send_response(self.tx, self.response)
        self.layer.transport.counters.retransmitted("INVITE")
        self.interval = min(self.interval * 2, self.layer.timers.t2)
        self.handle = loop.call_later(min(self.interval, self.deadline - loop.time()), self._tick)

    def acked(self, ack: Request) -> None:
        self.handle.cancel()
        if not self.future.done():
            self.future.set_result(ack)

    def stop(self) -> None:
        self.handle.cancel()
        if not self.future.done():
            self.future.cancel()


RequestHandler = Callable[[ServerTransaction], Awaitable[None] | None]


class TransactionLayer:
    """Matches messages to transactions and drives their timers (RFC 3261 §17)."""

    def __init__(
        self,
        transport: TransportLayer,
        *,
        timers: Timers | None = None,
        on_request: RequestHandler | None = None,
        on_ack: Callable[[Request, Source], None] | None = None,
        on_stray_response: Callable[[Response, Source], None] | None = None,
    ) -> None:
        self.transport = transport
        transport.on_message = self.receive
        self.timers = timers or Timers()
        self.loop = asyncio.get_running_loop()
        self.on_request = on_request
        self.on_ack = on_ack
        self.on_stray_response = on_stray_response
        self.clients: dict[ClientKey, ClientTransaction] = {}
        self.servers: dict[ServerKey, ServerTransaction] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ack_waiters: dict[tuple[str, int, str, str], _AckWaiter] = {}

    # -- client side -----------------------------------------------------------------------

    def client(
        self,
        request: Request,
        target: Target | None = None,
        on_provisional: Callable[[Response], None] | None = None,
        on_2xx: Callable[[Response], None] | None = None,
    ) -> ClientTransaction:
        """Starts a client transaction for ``request`` (not ACK: use send_stateless)."""
        if request.method == "ACK":
            raise TransactionStateError("ACK has no client transaction: use send_stateless")
        if target is None:
            tx = self._new_client(request, Target("udp", "0.0.0.0", 0), on_provisional, on_2xx)
            self._spawn(self._resolve_and_start(tx))
            return tx
        tx = self._new_client(request, target, on_provisional, on_2xx)
        tx._start()
        return tx

    def _new_client(
        self,
        request: Request,
        target: Target,
        on_provisional: Callable[[Response], None] | None,
        on_2xx: Callable[[Response], None] | None,
    ) -> ClientTransaction:
        if request.get("Max-Forwards") is None:
            request = request.with_header("Max-Forwards", "70")
        tx = ClientTransaction(self, request, target, on_provisional, on_2xx)
        return tx

    async def _resolve_and_start(self, tx: ClientTransaction) -> None:
        try:
            tx.target = await self.transport.target_for(tx.request)
        except SIPError as exc:
            tx._fail(exc)
            return
        tx.reliable = self.transport.is_reliable(tx.target.transport)
        tx._start()

    async def request(
        self,
        request: Request,
        target: Target | None = None,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response:
        """Sends ``request`` in a client transaction and returns its final response."""
        return await self.client(request, target, on_provisional).wait()

    async def send_stateless(self, request: Request, target: Target | None = None) -> None:
        """Sends a request outside any transaction (the ACK for a 2xx, RFC 3261 §13.2.2.4)."""
        if target is None:
            target = await self.transport.target_for(request)
        if request.get("Via") is None:
            request = request.prepend_header(
                "Via", self.transport.via_for(target.transport, new_branch())
            )
        if request.get("Max-Forwards") is None:
            request = request.with_header("Max-Forwards", "70")
        if not self.transport.try_send(request, target):
            await self.transport.send(request, target)

    # -- I/O glue --------------------------------------------------------------------------

    def _send(self, tx: ClientTransaction, request: Request, target: Target) -> None:
        if request.get("Via") is None:  # first transmission: our Via with a fresh branch
            branch = new_branch()
            request = request.prepend_header(
                "Via", self.transport.via_for(target.transport, branch)
            )
            tx.request = request
            tx.key = (branch, request.method)
            tx.machine.name = branch
        if tx.key not in self.clients and tx.state is not S.TERMINATED:
            self.clients[tx.key] = tx
        try:
            if self.transport.try_send(request, target):
                return
        except SIPError as exc:
            self._transport_error(tx, exc)
            return
        self._spawn(self._send_async(tx, request, target))

    async def _send_async(self, tx: _Base, msg: Message, target: Target) -> None:
        try:
            await self.transport.send(msg, target)
        except SIPError as exc:
            self._transport_error(tx, exc)

    def _send_response(self, tx: ServerTransaction, response: Response) -> None:
        source = tx.source
        conn = source.connection
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            self.transport.send_on(conn, response)
            return
        if conn is None and source.transport == "udp":
            via = response.top_via
            target = Target("udp", via.received or source.host, via.rport or via.port or 5060)
            try:
                self.transport.try_send(response, target)
            except SIPError as exc:
                self._transport_error(tx, exc)
            return
        self._spawn(self._send_response_async(tx, response))

    async def _send_response_async(self, tx: ServerTransaction, response: Response) -> None:
        try:
            await self.transport.send_response(response, tx.source)
        except SIPError as exc:
            self._transport_error(tx, exc)

    def _transport_error(self, tx: _Base, error: SIPError) -> None:
        if isinstance(tx, ServerTransaction) and tx.failure is None:
            tx.failure = error
        elif isinstance(tx, ClientTransaction):
            tx._fail(error)
        if tx.state is S.TERMINATED:  # e.g. timer J/K were zero on a stream
            return
        try:
            tx._on_event(E.TRANSPORT_ERROR, None)
        except TransactionStateError as exc:
            trace.debug("x %s", exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP request handler failed", exc_info=task.exception())

    def _forget_client(self, tx: ClientTransaction) -> None:
        tx._terminate()
        if self.clients.get(tx.key) is tx:
            del self.clients[tx.key]

    def _forget_server(self, tx: ServerTransaction) -> None:
        tx._terminate()
        if self.servers.get(tx.key) is tx:
            del self.servers[tx.key]

    def _stray_callback(self, response: Response) -> None:
        if self.on_stray_response is not None:
            self.on_stray_response(response, Source("", "", 0))
        else:
            trace.debug("x stray %s %s dropped", response.status, response.reason)

    # -- receiving -------------------------------------------------------------------------

    def receive(self, msg: Message, source: Source) -> None:
        """Entry point for the transport: matches ``msg`` to a transaction or creates one."""
        if isinstance(msg, Response):
            self._receive_response(msg, source)
        else:
            self._receive_request(msg, source)

    def _receive_response(self, response: Response, source: Source) -> None:
        key = (response.branch or "", response.cseq.method)
        tx = self.clients.get(key)
        if tx is None:
            if self.on_stray_response is not None:
                self.on_stray_response(response, source)
            else:
                trace.debug("x stray response %s %s dropped", response.status, response.reason)
            return
        try:
            tx._on_event(response_event(response), response)
        except TransactionStateError as exc:
            trace.debug("x %s", exc)

    @staticmethod
    def server_key(request: Request) -> ServerKey:
        """The §17.2.3 matching key: (branch, sent-by host, port, method; ACK -> INVITE)."""
        via = request.top_via
        method = "INVITE" if request.method == "ACK" else request.method
        branch = via.branch
        if branch is not None and branch.startswith(BRANCH_MAGIC):
            host, port = via.sent_by
            return (branch, host, port, method)
        return (  # RFC 2543 peers (§17.2.3, simplified)
            request.call_id,
            str(request.cseq.seq),
            request.from_tag or "",
            str(via),
            method,
        )

    def _receive_request(self, request: Request, source: Source) -> None:
        key = self.server_key(request)
        method = request.method
        if method == "CANCEL":
            self._receive_cancel(request, source, key)
            return
        tx = self.servers.get(key)
        if tx is not None:
            event = E.ACK if method == "ACK" else E.REQUEST
            try:
                tx._on_event(event, request)
            except TransactionStateError as exc:
                trace.debug("x %s", exc)
                return
            if event is E.ACK and tx.state is S.ACCEPTED:
                self._deliver_ack(request, source)
            return
        if method == "ACK":
            self._deliver_ack(request, source)
            return
        tx = ServerTransaction(self, request, source, key)
        self.servers[key] = tx
        tx._start()
        self._dispatch(tx)

    def _await_ack(self, tx: ServerTransaction, response: Response) -> asyncio.Future[Request]:
        key = (response.call_id, response.cseq.seq, response.from_tag or "", tx.to_tag)
        waiter = _AckWaiter(self, tx, response)
        old = self._ack_waiters.pop(key, None)
        if old is not None:
            old.stop()
        self._ack_waiters[key] = waiter
        waiter.future.add_done_callback(lambda _: self._ack_waiters.pop(key, None))
        return waiter.future

    def _deliver_ack(self, request: Request, source: Source) -> None:
        if self._ack_waiters:
            key = (request.call_id, request.cseq.seq, request.from_tag or "", request.to_tag or "")
            waiter = self._ack_waiters.get(key)
            if waiter is not None:
                waiter.acked(request)
        if self.on_ack is not None:
            self.on_ack(request, source)
        else:
            trace.debug("x ACK %s dropped (no handler)", request.call_id)

    def _receive_cancel(self, request: Request, source: Source, key: ServerKey) -> None:
        existing = self.servers.get(key)
        if existing is not None:  # a retransmitted CANCEL
            try:
                existing._on_event(E.REQUEST, request)
            except TransactionStateError as exc:
                trace.debug("x %s", exc)
            return
        cancel_tx = ServerTransaction(self, request, source, key)
        self.servers[key] = cancel_tx
        invite_key: ServerKey = (*key[:-1], "INVITE")
        invite = self.servers.get(invite_key)
        if invite is None:
            cancel_tx.respond(481)
            return
        cancel_tx.respond(200)
        if invite.state is S.PROCEEDING:
            invite.cancelled = True
            invite.respond(487)
            if invite.on_cancel is not None:
                invite.on_cancel(invite)

    def _dispatch(self, tx: ServerTransaction) -> None:
        handler = self.on_request
        if handler is None:
            tx.respond(501 if tx.method != "OPTIONS" else 200)
            return
        try:
            result = handler(tx)
        except Exception:
            log.exception("SIP request handler failed for %s", tx.method)
            self._fallback_500(tx)
            return
        if inspect.isawaitable(result):  # else a sync handler may answer later
            self._spawn(self._await_handler(tx, result))

    async def _await_handler(self, tx: ServerTransaction, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("SIP request handler failed for %s", tx.method)
            self._fallback_500(tx)
            return
        if not tx.has_final and tx.state in (S.TRYING, S.PROCEEDING):
            log.error("SIP handler returned without a final response to %s", tx.method)
            self._fallback_500(tx)

    @staticmethod
    def _fallback_500(tx: ServerTransaction) -> None:
        if not tx.has_final and tx.state in (S.TRYING, S.PROCEEDING):
            tx.respond(500)

    async def close(self) -> None:
        """Stops every timer and task (pending client transactions fail with 503)."""
        for waiter in list(self._ack_waiters.values()):
            waiter.stop()
        for tx in list(self.clients.values()):
            tx._fail(SIPError(503, "Shutting down", local=True))
            self._forget_client(tx)
        for stx in list(self.servers.values()):
            self._forget_server(stx)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
