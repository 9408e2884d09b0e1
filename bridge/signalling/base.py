"""Shared core of the signalling adapter: legs, ordered event delivery, inbound traffic.

:class:`SignallingBase` holds the legs (``bridge.signalling.legs``), posts each
leg's events to the chat service through a per-leg serial queue, ends legs, and
turns inbound MSRP SENDs and SIP MESSAGEs into ``bridge.chat.ports`` events.
``bridge.signalling.sessions`` adds INVITE handling, ``bridge.signalling.adapter``
the sending side; the module docstring of the latter describes the behaviour.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.chat.model import LegId
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    ReportReceived,
    SessionAccepted,
    SessionEnded,
    SessionFailed,
    SignallingError,
    SignallingEvent,
    SignallingEvents,
)
from bridge.ids import UserUri
from bridge.signalling import payload
from bridge.signalling.legs import Leg, LegState
from sip import rcs
from sip.errors import CodecError, MSRPError, ProtocolError, SIPError
from sip.message import Request
from sip.msrp import MSRPStack
from sip.msrp.events import Event as MSRPEvent
from sip.msrp.events import MessageReceived as MSRPMessageReceived
from sip.msrp.events import SessionStatus, StateChanged
from sip.ratelog import RateLimitedLog
from sip.stack import SipStack
from sip.usage import IncomingRequest, InviteSession

log = logging.getLogger(__name__)
malformed_log = RateLimitedLog(log, logging.INFO, "SIP requests with a malformed body refused")
"""Malformed bodies: one line per sender and window, five at most, then a count (issue 13)."""

BIND_TIMEOUT = 10.0
"""Seconds the MSRP bind may take after the 2xx (then Failed + BYE; protocol-mapping.md N3)."""
_MESSAGE_ACCEPT = "message/cpim, text/plain, application/im-iscomposing+xml"


def _now() -> datetime:
    return datetime.now(UTC)


def fallback_message_id(call_id: str, cseq: int) -> str:
    """A stable message id for a MESSAGE without imdn.Message-ID (retransmissions dedupe)."""
    return "sip-" + hashlib.sha1(f"{call_id}:{cseq}".encode()).hexdigest()[:24]  # noqa: S324


def asserted_sender(request: Request) -> UserUri:
    """The sender of a request: P-Asserted-Identity (trusted core), else From."""
    pai = request.get_all("P-Asserted-Identity")
    for value in pai:
        try:
            return UserUri(rcs.normalize_user(value))
        except ValueError:
            continue
    return UserUri(rcs.normalize_user(str(request.from_.uri)))


def status_of(exc: BaseException) -> int:
    """The SIP/MSRP status an error carries (0 for a local failure without one)."""
    if isinstance(exc, SIPError | MSRPError):
        return exc.status
    return 0


def _event_for(
    leg: LegId | None, user: UserUri, peer: UserUri, decoded: payload.Decoded
) -> SignallingEvent:
    if isinstance(decoded, IncomingMessage):
        return MessageReceived(leg, user, decoded)
    if isinstance(decoded, payload.ReceivedReport):
        return ReportReceived(leg, user, peer, decoded.message_id, decoded.kind)
    return ComposingReceived(leg, user, peer, decoded)


class SignallingBase:
    """Legs, their ordered events and the inbound traffic (the adapter's shared core)."""

    def __init__(
        self,
        sip_stack: SipStack,
        msrp_stack: MSRPStack,
        *,
        profile: rcs.Profile = rcs.Profile.CPM,
        invite_timeout: float = 40.0,
        bind_timeout: float = BIND_TIMEOUT,
        clock: Callable[[], datetime] = _now,
        tls_offer: Literal["always", "sips", "never"] = "never",
    ) -> None:
        self.sip = sip_stack
        self.msrp = msrp_stack
        self.profile = profile
        self.invite_timeout = invite_timeout
        self.bind_timeout = bind_timeout
        self.clock = clock
        self.tls_offer = tls_offer
        """When 1-1 offers are msrps (Settings.msrp_tls_offer, docs/tls.md)."""
        self._sink: SignallingEvents | None = None
        self._legs: dict[LegId, Leg] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._closing = False

    def bind(self, sink: SignallingEvents) -> None:
        """Set the receiver of every inbound event (``bridge.chat.assembly.build_chat``)."""
        self._sink = sink

    @property
    def leg_count(self) -> int:
        """Number of legs held."""
        return len(self._legs)

    def live_legs(self) -> list[LegId]:
        """Every leg held now: inviting, ringing, connecting or up (the shutdown ends them)."""
        return list(self._legs)

    async def settle(self, timeout: float) -> int:
        """Wait, ``timeout`` seconds at most, until the background work is done: the BYEs,
        CANCELs and answers of ended legs, the events on their way to the chat service.

        Returns how many tasks are still running (0: all done in time).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - loop.time())
        return len(self._tasks)

    def leg_state(self, leg: LegId) -> LegState | None:
        """The state of ``leg``, or None when unknown (tests, diagnostics)."""
        found = self._legs.get(leg)
        return None if found is None else found.state

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("signalling task failed", exc_info=task.exception())

    def _check_running(self) -> None:
        if self._closing:
            raise SignallingError("signalling is shutting down", 503)
        try:
            self.sip.transport  # noqa: B018 - raises while the stack is not started
        except ProtocolError as exc:
            raise SignallingError(str(exc), 503) from None

    def _up(self, leg_id: LegId) -> Leg:
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is not LegState.UP or leg.msrp is None:
            state = "unknown" if leg is None else leg.state.value
            raise SignallingError(f"leg {leg_id} is not connected ({state})", 481)
        return leg

    def _forget(self, leg: Leg) -> None:
        if self._legs.get(leg.id) is leg:
            del self._legs[leg.id]

    def _post(self, leg: Leg, event: SignallingEvent) -> None:
        """Queue ``event`` behind the leg's earlier events (one drain task while non-empty)."""
        if leg.events is None:
            leg.events = deque()
        leg.events.append(event)
        if not leg.draining:
            leg.draining = True
            self._spawn(self._drain(leg))

    def _post_inbound(self, leg: Leg, event: SignallingEvent) -> None:
        if leg.held is not None:
            leg.held.append(event)
        else:
            self._post(leg, event)

    async def _drain(self, leg: Leg) -> None:
        try:
            while leg.events:
                await self._deliver(leg.events.popleft())
        finally:
            leg.draining = False
            if not leg.events:
                leg.events = None  # an idle leg holds no deque (about 600 bytes)

    async def _deliver(self, event: SignallingEvent) -> None:
        if self._closing:
            # shutdown: the chat service stopped first; restart recovery settles these legs
            log.debug("x %s during shutdown: not delivered", type(event).__name__)
            return
        if self._sink is None:
            log.error("x %s with no chat service bound: dropped", type(event).__name__)
            return
        try:
            await self._sink.handle_event(event)
        except EventRejected as exc:
            log.info("x %s refused by the chat service: %s", type(event).__name__, exc)
        except Exception:
            log.exception("chat service failed on %s", type(event).__name__)

    def _accepted(self, leg: Leg) -> None:
        if not leg.move(LegState.UP):
            return
        log.info("- leg %s up (%s -> %s)", leg.id, leg.user, leg.peer)
        self._post(leg, SessionAccepted(leg.id, leg.dialog_ids(), conference=leg.conference))
        if leg.first_id is not None:
            self._post(leg, MessageSendResult(leg.user, leg.first_id, True))
        held, leg.held = leg.held or [], None
        for event in held:
            self._post(leg, event)
        if leg.watch is not None and leg.conference is not None:
            leg.watch.start(leg.conference)  # SUBSCRIBE Event: conference (N12)

    def _failed(self, leg: Leg, status: int, reason: str) -> None:
        """End a leg that never came up and report SessionFailed (unless we cancelled it)."""
        cancelled = leg.cancelled
        leg.move(LegState.ENDED)
        self._forget(leg)
        if leg.watch is not None:
            leg.watch.stop(unsubscribe=False)
        if leg.msrp is not None:
            self._spawn(leg.msrp.close())
        if not cancelled:
            log.info("x leg %s failed: %s %s", leg.id, status, reason)
            self._post(leg, SessionFailed(leg.id, status, reason))

    def _ended(self, leg: Leg, reason: str) -> None:
        """The peer or the network ended a leg: report SessionEnded and clean up."""
        was = leg.state
        if not leg.move(LegState.ENDED):
            return
        self._forget(leg)
        log.info("- leg %s ended: %s", leg.id, reason)
        if leg.watch is not None:
            leg.watch.stop(unsubscribe=True)
        if leg.session is not None and not leg.session.ended.is_set():
            self._spawn(leg.session.bye())
        if leg.msrp is not None:
            self._spawn(leg.msrp.close())
        if was is LegState.CONNECTING and leg.outgoing:
            self._post(leg, SessionFailed(leg.id, 0, reason))
        else:
            self._post(leg, SessionEnded(leg.id, reason))

    async def _hang_up(self, leg: Leg, headers: tuple[tuple[str, str], ...] = ()) -> None:
        leg.move(LegState.ENDED)
        self._forget(leg)
        if leg.watch is not None:
            leg.watch.stop(unsubscribe=True)
        if leg.session is not None:
            await leg.session.bye(headers)
        if leg.msrp is not None:
            await leg.msrp.close()

    def _on_session_ended(self, leg: Leg, session: InviteSession) -> None:
        if leg.group and session.bye_reason:
            # the focus says why (docs/group-chat.md contract 9: cause=410 at the end)
            self._ended(leg, session.bye_reason)
            return
        self._ended(leg, session.end_reason or "BYE")

    def _on_msrp(self, leg: Leg, event: MSRPEvent) -> None:
        if isinstance(event, MSRPMessageReceived):
            if not event.body:
                return  # bind or keep-alive SEND
            decoded = self._decode(leg, event.content_type, event.body, str(event.message_id))
            if decoded is not None:
                self._post_inbound(leg, decoded)
        elif isinstance(event, StateChanged) and event.new is SessionStatus.CLOSED:
            if not leg.ended:
                self._ended(leg, "MSRP connection lost")

    def _decode(
        self, leg: Leg, content_type: str | None, body: bytes, fallback: str
    ) -> SignallingEvent | None:
        sender = leg.peer
        try:
            if leg.group:  # the sender is the CPIM From, never the focus (contract 4)
                sender, decoded = payload.decode_group(
                    content_type, body, focus=leg.peer, fallback_id=fallback
                )
            else:
                decoded = payload.decode(content_type, body, sender=sender, fallback_id=fallback)
        except CodecError as exc:
            log.warning("x leg %s: received body dropped: %s", leg.id, exc)
            return None
        return _event_for(leg.id, leg.user, sender, decoded)

    async def _on_message(self, incoming: IncomingRequest) -> None:
        await self._take_message(incoming, None)

    async def _on_dialog_message(self, leg: Leg, incoming: IncomingRequest) -> None:
        await self._take_message(incoming, leg)

    async def _take_message(self, incoming: IncomingRequest, leg: Leg | None) -> None:
        request = incoming.request
        try:
            user = leg.user if leg is not None else UserUri(rcs.normalize_user(str(request.to.uri)))
            sender = leg.peer if leg is not None else asserted_sender(request)
        except (ValueError, CodecError) as exc:
            incoming.respond(400, f"Bad identity: {exc}"[:120])
            return
        try:
            decoded = payload.decode(
                request.get("Content-Type"),
                request.body,
                sender=sender,
                fallback_id=fallback_message_id(request.call_id, request.cseq.seq),
            )
        except payload.UnsupportedContent as exc:
            malformed_log.log("x MESSAGE %s: %s", request.call_id, exc, key=str(request.from_.uri))
            incoming.respond(415, headers=[("Accept", _MESSAGE_ACCEPT)])
            return
        except CodecError as exc:
            malformed_log.log("x MESSAGE %s: %s", request.call_id, exc, key=str(request.from_.uri))
            incoming.respond(400, str(exc)[:120])
            return
        event = _event_for(leg.id if leg is not None else None, user, sender, decoded)
        if self._sink is None:
            incoming.respond(503)
            return
        try:
            await self._sink.handle_event(event)
        except EventRejected as exc:
            incoming.respond(exc.status)
            return
        except Exception:
            log.exception("chat service failed on MESSAGE %s", request.call_id)
            incoming.respond(500)
            return
        incoming.respond(200)
