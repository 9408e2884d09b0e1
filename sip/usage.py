"""Dialog usages of the SipStack: incoming requests, INVITE sessions, subscriptions
(RFC 3261 §12-15, RFC 3515, RFC 6665 §4).

Public API (objects the stack hands to the application; built by sip.stack.SipStack)::

    InviteSession (an INVITE dialog, either side)
      .dialog .local_body .ended .confirmed (sip.flag.Flag) .end_reason
      .bye_reason (the Reason header of the peer's BYE, RFC 3326; None without one)
      await .bye(headers=()) ; await .request(method, headers=(), body=b"", content_type=None)
      await .refer(refer_to, headers=(), refer_sub=False) ; await .reinvite(body=None)
      .on_request(method, handler(IncomingRequest))   in-dialog MESSAGE, INFO, NOTIFY, REFER
      .on_ended = callback(session)
    OutgoingInvite (returned by SipStack.invite)
      await .response() -> Response ; .session -> InviteSession after a 2xx ; await .cancel()
    IncomingRequest.respond(status, ...)   (handlers of SipStack.on_request get one of these)
      IncomingInvite: .ring(180) ; await .accept(body, content_type, handlers=) -> InviteSession ;
                      .reject(486) ; .cancelled (sip.flag.Flag: is_set/set/wait as asyncio.Event)
      IncomingSubscribe: .accept(expires=None, active=True) -> ServerSubscription ; .reject()
      IncomingRefer: .accept() -> ServerSubscription | None ; await .progress(sub, 200, "OK")
"""

# Design notes
# ------------
# A usage is what a dialog is used for (RFC 5057): an INVITE session or a subscription.
# The stack keeps one usage per DialogId and hands it every in-dialog request and ACK;
# the dialog state itself is sans-I/O (sip.dialog, sip.subscription), and only the asyncio
# parts live here: the UAC ACK for 2xx (a new transaction-less request, re-sent for each
# 2xx retransmission, RFC 3261 §13.2.2.4) and the UAS 2xx retransmission until the ACK
# (T1 doubling to T2, then a BYE after 64*T1, §13.3.1.4). A re-INVITE or UPDATE without a
# new offer is a session refresh (docs/protocol-mapping.md "Timers"): we answer with the same SDP,
# so the MSRP session and its TCP connection stay.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Union

from sip import sipfrag
from sip.dialog import Dialog, DialogError, DialogEvent, DialogState
from sip.dialog import retransmit_intervals as _retransmit_intervals
from sip.errors import SIPError
from sip.flag import Flag
from sip.message import Request, Response
from sip.subscription import ClientSubscription, ServerSubscription, SubscriptionError
from sip.transaction import ClientTransaction, ServerTransaction
from sip.transport import Source

if TYPE_CHECKING:
    from sip.stack import SipStack

__all__ = [
    "ALLOW",
    "SUPPORTED",
    "DialogUsage",
    "Handler",
    "IncomingInvite",
    "IncomingRefer",
    "IncomingRequest",
    "IncomingSubscribe",
    "InviteSession",
    "OutgoingInvite",
    "SubscriptionUsage",
    "angle_addr",
]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE"
SUPPORTED = "norefersub"

Handler = Callable[..., Union[None, Awaitable[None]]]


def angle_addr(uri: str) -> str:
    """Returns ``uri`` in angle brackets unless it already is a name-addr (RFC 3261 §20.10)."""
    uri = uri.strip()
    return uri if uri.startswith("<") or " " in uri else f"<{uri}>"


# -- incoming requests ---------------------------------------------------------------------


class IncomingRequest:
    """A request delivered to an application handler; answer it with ``respond``."""

    def __init__(self, stack: SipStack, tx: ServerTransaction) -> None:
        self.stack = stack
        self.tx = tx
        self.request = tx.request
        self.method = tx.request.method
        self.source: Source = tx.source

    @property
    def answered(self) -> bool:
        """True once a final response went out."""
        return self.tx.has_final

    def respond(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        """Sends a response (RFC 3261 §8.2.6); a final one only once."""
        if self.tx.has_final:
            return
        self.tx.respond(status, reason, list(headers), body, content_type)


class IncomingInvite(IncomingRequest):
    """An initial INVITE waiting for the application's ring/accept/reject (RFC 3261 §13.3)."""

    def __init__(self, stack: SipStack, tx: ServerTransaction) -> None:
        super().__init__(stack, tx)
        self.cancelled = Flag()
        tx.on_cancel = lambda _tx: self.cancelled.set()

    def ring(self, status: int = 180, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Sends a provisional response with our To tag and Contact."""
        if not self.tx.has_final and not self.cancelled.is_set():
            contact = self.stack.contact_for(self.request.to.uri, self.source.transport)
            self.tx.respond(status, headers=[("Contact", contact), *headers])

    def reject(self, status: int = 486, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Declines the INVITE (486 Busy Here, 603 Decline, 488 ...)."""
        self.respond(status, headers=headers)

    async def accept(
        self,
        body: bytes = b"",
        content_type: str | None = "application/sdp",
        headers: Iterable[tuple[str, str]] = (),
        handlers: dict[str, Handler] | None = None,
        contact: str | None = None,
    ) -> InviteSession:
        """Sends 200 with the answer and returns the session; the 2xx is retransmitted
        until the ACK (RFC 3261 §13.3.1.4). Raises SIPError(487) when already cancelled.
        ``contact`` replaces our usual Contact (a conference focus: ``;isfocus``, RFC 4579)."""
        if self.cancelled.is_set() or self.tx.has_final:
            raise SIPError(487, "Request Terminated", local=True)
        stack = self.stack
        contact = contact or stack.contact_for(self.request.to.uri, self.source.transport)
        dialog = Dialog.from_uas(self.request, self.tx.to_tag, contact)
        extra = [("Contact", contact), ("Allow", ALLOW), ("Supported", SUPPORTED), *headers]
        response = self.tx.response(200, headers=extra, body=body, content_type=content_type)
        session = InviteSession(stack, dialog, local_body=body, content_type=content_type)
        for method, handler in (handlers or {}).items():
            session.on_request(method, handler)
        stack._register(dialog.id, session, self.source.connection)
        self.tx.respond(response)
        session._start_2xx_retransmission(response, self.source)
        return session


class IncomingSubscribe(IncomingRequest):
    """An initial SUBSCRIBE (RFC 6665 §4.2.1)."""

    @property
    def event(self) -> str:
        """The Event header value."""
        return self.request.get("Event") or ""

    def accept(
        self, expires: int | None = None, active: bool = True, max_expires: int = 3600
    ) -> ServerSubscription:
        """Answers 200 and returns the notifier side; send the first NOTIFY at once."""
        requested = self.request.get("Expires")
        value = int(requested) if requested and requested.isdigit() else 3600
        granted = min(expires if expires is not None else value, value, max_expires)
        contact = self.stack.contact_for(self.request.to.uri, self.source.transport)
        dialog = Dialog.from_uas(self.request, self.tx.to_tag, contact)
        dialog.handle(DialogEvent.CONFIRM)
        sub = ServerSubscription(self.stack, dialog, self.event, max(granted, 1), active)
        usage = SubscriptionUsage(self.stack, dialog, server=sub)
        self.stack._register(dialog.id, usage, self.source.connection)
        self.respond(200, headers=[("Contact", contact), ("Expires", str(granted))])
        return sub

    def reject(self, status: int = 489) -> None:
        """Rejects the subscription (489 Bad Event, 403, ...)."""
        self.respond(status)


class IncomingRefer(IncomingRequest):
    """An out-of-dialog REFER (RFC 3515 §2.4.2)."""

    @property
    def refer_to(self) -> str:
        """The Refer-To value."""
        return self.request.get("Refer-To") or ""

    def accept(self, expires: int = 60) -> ServerSubscription | None:
        """Answers 202; returns the implicit subscription (None with Refer-Sub: false)."""
        contact = self.stack.contact_for(self.request.to.uri, self.source.transport)
        if (self.request.get("Refer-Sub") or "").strip().lower() == "false":
            self.respond(202, headers=[("Contact", contact), ("Refer-Sub", "false")])
            return None
        dialog = Dialog.from_uas(self.request, self.tx.to_tag, contact)
        dialog.handle(DialogEvent.CONFIRM)
        sub = ServerSubscription(self.stack, dialog, "refer", expires, True)
        usage = SubscriptionUsage(self.stack, dialog, server=sub)
        self.stack._register(dialog.id, usage, self.source.connection)
        self.respond(202, headers=[("Contact", contact)])
        return sub

    async def progress(self, sub: ServerSubscription, status: int, reason: str) -> Response:
        """Reports the referred request's status in a sipfrag NOTIFY (RFC 3515 §2.4.5)."""
        body = sipfrag.serialize(sipfrag.status_fragment(status, reason))
        if status >= 200:
            await sub.terminate("noresource", body, sipfrag.REFER_CONTENT_TYPE)
            return Response(200, "OK")
        return await sub.notify(body, sipfrag.REFER_CONTENT_TYPE, state="active")


# -- usages of a dialog ----------------------------------------------------------------------


class DialogUsage:
    """Something a dialog is used for; receives the in-dialog requests."""

    __slots__ = ()
    dialog: Dialog

    def handle_request(self, tx: ServerTransaction) -> None:
        raise NotImplementedError

    def ack_received(self, request: Request) -> None:
        trace.debug("x ACK %s outside an INVITE usage", request.call_id)

    def close(self) -> None:
        """Stops timers (stack shutdown)."""


class SubscriptionUsage(DialogUsage):
    """A SUBSCRIBE/REFER dialog: NOTIFYs (subscriber) or SUBSCRIBEs (notifier)."""

    __slots__ = ("stack", "dialog", "client", "server")

    def __init__(
        self,
        stack: SipStack,
        dialog: Dialog,
        *,
        client: ClientSubscription | None = None,
        server: ServerSubscription | None = None,
    ) -> None:
        self.stack = stack
        self.dialog = dialog
        self.client = client
        self.server = server

    def handle_request(self, tx: ServerTransaction) -> None:
        req = tx.request
        try:
            self.dialog.receive_request(req)
        except DialogError as exc:
            tx.respond(exc.status, exc.reason)
            return
        if req.method == "NOTIFY" and self.client is not None:
            self.stack._deliver_notify(self.client, tx)
        elif req.method == "SUBSCRIBE" and self.server is not None:
            value = req.get("Expires")
            expires = int(value) if value and value.isdigit() else self.server.expires
            tx.respond(200, headers=[("Contact", self.dialog.contact), ("Expires", str(expires))])
            try:
                self.server.receive_subscribe(expires)
            except SubscriptionError as exc:
                log.info("SUBSCRIBE refresh ignored: %s", exc)
        elif req.method == "BYE":
            tx.respond(200)
        else:
            tx.respond(405, headers=[("Allow", "SUBSCRIBE, NOTIFY")])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.close()


class InviteSession(DialogUsage):
    """An INVITE dialog (either side): in-dialog requests, refresh, BYE (RFC 3261 §14-15).

    Slotted and without the peer's body: every group member holds two of these on the
    embedded default (docs/group-chat.md, "Memory"); the application parses the peer's
    SDP when the offer or answer arrives and keeps what it needs."""

    __slots__ = (
        "stack",
        "dialog",
        "local_body",
        "content_type",
        "ended",
        "confirmed",
        "end_reason",
        "bye_reason",
        "on_ended",
        "_handlers",
        "_timer",
        "_invite_cseq",
        "_ack",
    )

    def __init__(
        self,
        stack: SipStack,
        dialog: Dialog,
        *,
        local_body: bytes = b"",
        content_type: str | None = "application/sdp",
    ) -> None:
        self.stack = stack
        self.dialog = dialog
        self.local_body = local_body
        self.content_type = content_type
        self.ended = Flag()
        self.confirmed = Flag()
        self.end_reason = ""
        self.bye_reason: str | None = None
        """The Reason header of the peer's BYE (RFC 3326), when it sent one."""
        self.on_ended: Callable[[InviteSession], None] | None = None
        self._handlers: dict[str, Handler] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._invite_cseq = 0
        self._ack: Request | None = None

    def __repr__(self) -> str:
        return f"<InviteSession {self.dialog.id.call_id} {self.dialog.state.value}>"

    def on_request(self, method: str, handler: Handler) -> None:
        """Handles in-dialog ``method`` requests (MESSAGE, INFO, NOTIFY, REFER, ...)."""
        self._handlers[method.upper()] = handler

    # -- UAS: 2xx retransmission until ACK (§13.3.1.4) --------------------------------------

    def _start_2xx_retransmission(self, response: Response, source: Source) -> None:
        self._invite_cseq = response.cseq.seq
        intervals = _retransmit_intervals(self.stack.timers)
        self._schedule(response, source, intervals, 0)

    def _schedule(
        self, response: Response, source: Source, intervals: list[float], index: int
    ) -> None:
        loop = asyncio.get_running_loop()
        if index >= len(intervals):
            remaining = 64 * self.stack.timers.t1 - sum(intervals)
            self._timer = loop.call_later(max(remaining, 0.0), self._no_ack)
            return
        self._timer = loop.call_later(
            intervals[index], self._retransmit, response, source, intervals, index
        )

    def _retransmit(
        self, response: Response, source: Source, intervals: list[float], index: int
    ) -> None:
        if self.confirmed.is_set() or self.ended.is_set():
            return
        self.stack._spawn(self.stack.transport.send_response(response, source))
        self._schedule(response, source, intervals, index + 1)

    def _no_ack(self) -> None:
        self._timer = None
        if self.confirmed.is_set() or self.ended.is_set():
            return
        log.info("no ACK for 2xx in %s: ending the session", self.dialog.id.call_id)
        self.dialog.handle(DialogEvent.CONFIRM)
        self.stack._spawn(self._bye_quietly("no ACK"))

    def ack_received(self, request: Request) -> None:
        if request.cseq.seq != self._invite_cseq:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.confirmed.is_set():
            self.dialog.handle(DialogEvent.CONFIRM)
            self.confirmed.set()

    # -- UAC: ACK for 2xx (§13.2.2.4) -------------------------------------------------------

    def _send_ack(self, response: Response) -> None:
        if self._ack is None:
            self._ack = self.dialog.create_ack(response.cseq.seq)
            # 2xx retransmissions reach us while the INVITE client transaction lives
            # (Timer M = 64*T1, RFC 6026 §8.4); after that the ACK is not needed again
            loop = asyncio.get_running_loop()
            loop.call_later(64 * self.stack.timers.t1, self._forget_ack)
        self.stack._spawn(self.stack.layer.send_stateless(self._ack))
        self.confirmed.set()

    def _forget_ack(self) -> None:
        self._ack = None

    # -- requests we send ---------------------------------------------------------------

    async def request(
        self,
        method: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Sends an in-dialog request (MESSAGE, INFO, UPDATE, NOTIFY, REFER) and returns the
        final response; 481/408 end the session (RFC 5057)."""
        response = await self.stack.send_in_dialog(
            self.dialog, method, list(headers), body, content_type
        )
        if response.status in (481, 408) and method != "BYE":
            self._end(f"{response.status} to {method}")
        return response

    async def reinvite(self, body: bytes | None = None) -> Response:
        """Sends a re-INVITE (session refresh with the same SDP by default) and ACKs a 2xx."""
        offer = self.local_body if body is None else body
        req = self.dialog.create_request("INVITE", body=offer, content_type=self.content_type)
        response = await self.stack._request(req)
        if response.is_success:
            self.dialog.receive_response(response)
            self.local_body = offer
            ack = self.dialog.create_ack(req.cseq.seq)
            await self.stack.layer.send_stateless(ack)
        elif response.status in (481, 408):
            self._end(f"{response.status} to re-INVITE")
        return response

    async def refer(
        self, refer_to: str, headers: Iterable[tuple[str, str]] = (), refer_sub: bool = False
    ) -> Response:
        """Sends REFER in this dialog (add a participant, RFC 3515 §2.4.1; Refer-Sub RFC 4488)."""
        extra = [
            ("Refer-To", angle_addr(refer_to)),
            ("Referred-By", angle_addr(str(self.dialog.local.uri))),
        ]
        if not refer_sub:
            extra += [("Refer-Sub", "false"), ("Require", "norefersub")]
        return await self.request("REFER", [*extra, *headers])

    async def bye(self, headers: Iterable[tuple[str, str]] = ()) -> Response | None:
        """Ends the session with BYE (RFC 3261 §15.1.1); None when already ended."""
        if self.ended.is_set():
            return None
        if self.dialog.state is DialogState.EARLY:
            self.dialog.handle(DialogEvent.CONFIRM)
        self._end("local BYE")
        try:
            return await self.stack.send_in_dialog(self.dialog, "BYE", list(headers), force=True)
        except SIPError as exc:
            log.info("BYE in %s failed: %s", self.dialog.id.call_id, exc)
            return None

    async def _bye_quietly(self, reason: str) -> None:
        await self.bye()
        self.end_reason = reason

    # -- requests we receive ------------------------------------------------------------

    def handle_request(self, tx: ServerTransaction) -> None:
        req = tx.request
        try:
            self.dialog.receive_request(req)
        except DialogError as exc:
            tx.respond(exc.status, exc.reason)
            return
        method = req.method
        if method == "BYE":
            tx.respond(200)
            self.bye_reason = req.get("Reason")
            self._end("remote BYE")
            return
        if method in ("INVITE", "UPDATE") and method not in self._handlers:
            # session refresh (docs/protocol-mapping.md "Timers"): same SDP, no renegotiation
            tx.respond(
                200,
                headers=[("Contact", self.dialog.contact)],
                body=self.local_body,
                content_type=self.content_type if self.local_body else None,
            )
            if method == "INVITE":
                self.confirmed.clear()
                self._start_2xx_retransmission(tx.last_response or tx.response(200), tx.source)
            return
        handler = self._handlers.get(method)
        if handler is None:
            if method in ("INFO", "MESSAGE", "NOTIFY"):
                tx.respond(200)
            else:
                tx.respond(405, headers=[("Allow", ALLOW)])
            return
        self.stack._call(handler, IncomingRequest(self.stack, tx), tx)

    def _end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.dialog.handle(DialogEvent.TERMINATE)
        self.ended.set()
        self.stack._unregister(self.dialog.id, self)
        if self.on_ended is not None:
            try:
                self.on_ended(self)
            except Exception:
                log.exception("on_ended callback failed")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.ended.is_set():
            self.end_reason = "shutdown"
            self.ended.set()


class OutgoingInvite:
    """Our INVITE in progress (RFC 3261 §13.2): provisional callbacks, final, cancel."""

    def __init__(self, stack: SipStack, request: Request) -> None:
        self.stack = stack
        self.request = request
        self.session: InviteSession | None = None
        self.provisional: list[Response] = []
        self._task: asyncio.Task[Response] | None = None
        self._tx_ready = Flag()
        self._tx: ClientTransaction | None = None

    def _first_2xx_tag(self) -> str | None:
        tx = self._tx
        if tx is not None and tx.final.done() and not tx.final.cancelled():
            if tx.final.exception() is None:
                return tx.final.result().to_tag
        return None

    async def response(self) -> Response:
        """The final response (2xx already ACKed; ``session`` set). Raises SIPError on timeout."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def cancel(self) -> None:
        """Sends CANCEL (RFC 3261 §9.1); the INVITE then ends with 487."""
        await self._tx_ready.wait()
        if self._tx is not None:
            await self._tx.cancel()
