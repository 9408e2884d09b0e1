"""SIP event subscriptions (RFC 6665) and REFER's implicit subscription (RFC 3515, RFC 4488).

Public API::

    SubscriptionState(state, expires=None, reason=None, retry_after=None)
        parse_subscription_state(value) / str(state)        the Subscription-State header
    parse_event(value) -> (package, id)                      the Event header (RFC 6665 §8.2.1)
    SubscriberState / SubscriberEvent / SUBSCRIBER_TRANSITIONS   subscriber side (§4.1.2)
    NotifierState / NotifierEvent / NOTIFIER_TRANSITIONS         notifier side (§4.2.2)
    StateMachine(table, initial, name).handle(event) -> state    the only place state changes;
                                                                  raises SubscriptionError
    refresh_delay(expires) -> seconds    when a subscriber refreshes (before expiry, §4.1.2.2)
    refer_progress(notify_body) -> SipFrag   the sipfrag of a REFER NOTIFY (RFC 3515 §2.4.5)

    ClientSubscription   (returned by SipStack.subscribe / SipStack.refer)
        .event .state .dialog .expires .terminated (sip.flag.Flag) .reason .notify_count
        .notifies (list[Request]: kept only for a subscription without an on_notify callback)
        .request (the SUBSCRIBE/REFER; None once the dialog exists: .method .call_id .from_tag
        and .accept stay)   await .wait_notify(timeout)   await .refresh(expires=None)
        await .unsubscribe()   .close()
        on_notify(request) callback given to SipStack.subscribe: every NOTIFY, in order
    ServerSubscription   (returned by IncomingSubscribe.accept in sip/stack.py)
        .event .state .dialog .expires .terminated
        await .notify(body=b"", content_type=None, state="active", reason=None) -> Response
        await .terminate(reason="noresource", body=b"", content_type=None)
        on_refresh / on_unsubscribe callbacks
"""

# Design notes
# ------------
# The two state tables are sans-I/O; the handle classes below are the asyncio side: they
# arm the refresh timer (subscriber), the expiry timer (both sides) and send in-dialog
# requests through a ``DialogChannel`` (sip/stack.py). A subscriber refreshes at
# max(expires - 30 s, expires / 2): early enough for a retransmitted SUBSCRIBE over UDP and
# never in the last second. A NOTIFY may arrive before the 2xx to the SUBSCRIBE (the 2xx
# can be lost or overtaken): the stack then creates the dialog from the NOTIFY
# (RFC 6665 §4.1.2.4). Subscription-State: terminated ends the subscription whatever the
# previous state; a refresh that fails with 481 or 408 ends it too (§4.1.2.2). A
# "terminated" NOTIFY with reason deactivated/timeout invites an immediate re-subscribe
# (§4.1.3) — that decision is the caller's (docs/protocol-mapping.md N12), we only report it.
# A subscription of a group member lives as long as the group: it keeps only the few
# values of its SUBSCRIBE it needs later (Call-ID and From tag, method, Accept) and the
# NOTIFYs only when nobody takes them through on_notify.
# REFER (RFC 3515 §2.4.4) creates the same kind of subscription with event "refer" and
# message/sipfrag bodies; with Refer-Sub: false (RFC 4488) there is no subscription at all.

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sip import sipfrag
from sip.dialog import Dialog
from sip.errors import CodecError, ProtocolError, SIPError
from sip.flag import Flag
from sip.message import Request, Response

__all__ = [
    "ClientSubscription",
    "DialogChannel",
    "NOTIFIER_TRANSITIONS",
    "NotifierEvent",
    "NotifierState",
    "SUBSCRIBER_TRANSITIONS",
    "ServerSubscription",
    "StateMachine",
    "SubscriberEvent",
    "SubscriberState",
    "SubscriptionError",
    "SubscriptionState",
    "parse_event",
    "parse_subscription_state",
    "refer_progress",
    "refresh_delay",
]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
SUB_STATES = ("active", "pending", "terminated")


class SubscriptionError(ProtocolError):
    """An event the subscription's (state, event) table does not allow."""


# -- headers -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """The Subscription-State header (RFC 6665 §8.2.3)."""

    state: str
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def __str__(self) -> str:
        out = self.state
        if self.reason is not None:
            out += f";reason={self.reason}"
        if self.expires is not None:
            out += f";expires={self.expires}"
        if self.retry_after is not None:
            out += f";retry-after={self.retry_after}"
        return out


def parse_subscription_state(value: str) -> SubscriptionState:
    """Parses a Subscription-State value; raises CodecError (RFC 6665 §8.2.3)."""
    parts = [p.strip() for p in value.split(";")]
    state = parts[0].lower()
    if not _TOKEN.match(state):
        raise CodecError(f"invalid Subscription-State: {value!r}")
    expires = reason = retry = None
    for part in parts[1:]:
        name, _, val = part.partition("=")
        name = name.strip().lower()
        val = val.strip()
        try:
            if name == "expires":
                expires = int(val)
            elif name == "retry-after":
                retry = int(val)
            elif name == "reason":
                reason = val.lower()
        except ValueError:
            raise CodecError(f"invalid Subscription-State: {value!r}") from None
    return SubscriptionState(state, expires, reason, retry)


def parse_event(value: str) -> tuple[str, str | None]:
    """The package and ``id`` parameter of an Event header (RFC 6665 §8.2.1)."""
    parts = [p.strip() for p in value.split(";")]
    package = parts[0].lower()
    if not package or not _TOKEN.match(package):
        raise CodecError(f"invalid Event header: {value!r}")
    ident = None
    for part in parts[1:]:
        name, _, val = part.partition("=")
        if name.strip().lower() == "id":
            ident = val.strip()
    return package, ident


def refresh_delay(expires: int) -> float:
    """Seconds after a 2xx at which a subscriber refreshes (RFC 6665 §4.1.2.2)."""
    return float(max(expires - 30, expires / 2))


def refer_progress(body: bytes) -> sipfrag.SipFrag:
    """The sipfrag of a REFER NOTIFY; raises CodecError (RFC 3515 §2.4.5)."""
    return sipfrag.parse(body)


# -- state machines ------------------------------------------------------------------------


class SubscriberState(enum.Enum):
    """Subscriber states (RFC 6665 §4.1.2, with the 2xx-but-no-NOTIFY-yet wait)."""

    SUBSCRIBING = "subscribing"
    ACCEPTED = "accepted"
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBING = "unsubscribing"
    TERMINATED = "terminated"


class SubscriberEvent(enum.Enum):
    """Inputs of a subscriber."""

    ACCEPTED = "2xx"
    REJECTED = "non-2xx"
    NOTIFY_PENDING = "NOTIFY pending"
    NOTIFY_ACTIVE = "NOTIFY active"
    NOTIFY_TERMINATED = "NOTIFY terminated"
    REFRESHED = "refresh 2xx"
    REFRESH_FAILED = "refresh failed"
    UNSUBSCRIBE = "unsubscribe"
    EXPIRED = "expired"


class NotifierState(enum.Enum):
    """Notifier states (RFC 6665 §4.2.2)."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class NotifierEvent(enum.Enum):
    """Inputs of a notifier."""

    AUTHORIZE = "authorize"
    REFRESH = "refresh"
    UNSUBSCRIBE = "unsubscribe"
    EXPIRED = "expired"
    TERMINATE = "terminate"
    NOTIFY_FAILED = "NOTIFY failed"


_S, _E = SubscriberState, SubscriberEvent
SUBSCRIBER_TRANSITIONS: dict[tuple[enum.Enum, enum.Enum], enum.Enum] = {}
for _live in (_S.SUBSCRIBING, _S.ACCEPTED, _S.PENDING, _S.ACTIVE):
    SUBSCRIBER_TRANSITIONS.update(
        {
            (_live, _E.NOTIFY_PENDING): _S.PENDING,
            (_live, _E.NOTIFY_ACTIVE): _S.ACTIVE,
            (_live, _E.NOTIFY_TERMINATED): _S.TERMINATED,
            (_live, _E.UNSUBSCRIBE): _S.UNSUBSCRIBING,
            (_live, _E.EXPIRED): _S.TERMINATED,
            (_live, _E.REFRESH_FAILED): _S.TERMINATED,
            (_live, _E.ACCEPTED): _S.ACCEPTED if _live is _S.SUBSCRIBING else _live,
            (_live, _E.REFRESHED): _live,
        }
    )
SUBSCRIBER_TRANSITIONS[(_S.SUBSCRIBING, _E.REJECTED)] = _S.TERMINATED
SUBSCRIBER_TRANSITIONS.update(
    {
        (_S.UNSUBSCRIBING, _E.NOTIFY_PENDING): _S.UNSUBSCRIBING,
        (_S.UNSUBSCRIBING, _E.NOTIFY_ACTIVE): _S.UNSUBSCRIBING,
        (_S.UNSUBSCRIBING, _E.NOTIFY_TERMINATED): _S.TERMINATED,
        (_S.UNSUBSCRIBING, _E.REFRESHED): _S.UNSUBSCRIBING,
        (_S.UNSUBSCRIBING, _E.REFRESH_FAILED): _S.TERMINATED,
        (_S.UNSUBSCRIBING, _E.EXPIRED): _S.TERMINATED,
        (_S.UNSUBSCRIBING, _E.ACCEPTED): _S.UNSUBSCRIBING,
        (_S.TERMINATED, _E.NOTIFY_TERMINATED): _S.TERMINATED,
        (_S.TERMINATED, _E.EXPIRED): _S.TERMINATED,
        (_S.TERMINATED, _E.REFRESH_FAILED): _S.TERMINATED,
    }
)

_N, _NE = NotifierState, NotifierEvent
NOTIFIER_TRANSITIONS: dict[tuple[enum.Enum, enum.Enum], enum.Enum] = {
    (_N.PENDING, _NE.AUTHORIZE): _N.ACTIVE,
    (_N.PENDING, _NE.REFRESH): _N.PENDING,
    (_N.ACTIVE, _NE.AUTHORIZE): _N.ACTIVE,
    (_N.ACTIVE, _NE.REFRESH): _N.ACTIVE,
}
for _nlive in (_N.PENDING, _N.ACTIVE, _N.TERMINATED):
    for _ev in (_NE.UNSUBSCRIBE, _NE.EXPIRED, _NE.TERMINATE, _NE.NOTIFY_FAILED):
        NOTIFIER_TRANSITIONS[(_nlive, _ev)] = _N.TERMINATED


class StateMachine:
    """A (state, event) table and its current state; ``handle`` is the only mutator."""

    __slots__ = ("table", "state", "name")

    def __init__(
        self, table: dict[tuple[enum.Enum, enum.Enum], enum.Enum], initial: enum.Enum, name: str
    ) -> None:
        self.table = table
        self.state = initial
        self.name = name

    def handle(self, event: enum.Enum) -> enum.Enum:
        """Moves to the table's next state; raises SubscriptionError when not allowed."""
        new = self.table.get((self.state, event))
        if new is None:
            trace.debug("x subscription %s: %s in %s", self.name, event.value, self.state.value)
            raise SubscriptionError(f"{event.value} not allowed in state {self.state.value}")
        if new is not self.state:
            trace.debug("- subscription %s %s -> %s", self.name, self.state.value, new.value)
            self.state = new
        return new


# -- asyncio handles ---------------------------------------------------------------------


class DialogChannel(Protocol):
    """What a subscription needs from the stack: in-dialog requests and forgetting it."""

    async def send_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response: ...

    def release(self, subscription: ClientSubscription | ServerSubscription) -> None: ...


NotifyCallback = Callable[[Request], None]


class ClientSubscription:
    """Our subscription (SUBSCRIBE or REFER) to a notifier (RFC 6665 §4.1, RFC 3515 §2.4.4)."""

    __slots__ = (
        "channel",
        "timer_n",
        "_timer_n",
        "request",
        "method",
        "call_id",
        "from_tag",
        "accept",
        "event",
        "event_id",
        "on_notify",
        "dialog",
        "expires",
        "reason",
        "notifies",
        "notify_count",
        "terminated",
        "machine",
        "_timer",
        "_tasks",
        "_first_notify",
    )

    def __init__(
        self,
        channel: DialogChannel,
        request: Request,
        event: str,
        on_notify: NotifyCallback | None = None,
        timer_n: float = 32.0,
    ) -> None:
        self.channel = channel
        self.timer_n = timer_n
        self._timer_n: asyncio.TimerHandle | None = None
        # the SUBSCRIBE/REFER until the dialog exists (a NOTIFY before the 2xx needs it,
        # RFC 6665 §4.1.2.4); the values kept below are all that later requests use
        self.request: Request | None = request
        self.method = request.method
        self.call_id = request.call_id
        self.from_tag = request.from_tag or ""
        self.accept = request.get("Accept")
        self.event = event
        self.event_id = parse_event(event)[1]
        self.on_notify = on_notify
        self.dialog: Dialog | None = None
        self.expires = 0
        self.reason: str | None = None
        self.notifies: list[Request] = []
        self.notify_count = 0
        self.terminated = Flag()
        self.machine = StateMachine(SUBSCRIBER_TRANSITIONS, _S.SUBSCRIBING, request.call_id)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] | None = None
        self._first_notify = Flag()

    @property
    def state(self) -> SubscriberState:
        """The subscriber state."""
        return SubscriberState(self.machine.state.value)

    def accepted(self, response: Response, dialog: Dialog) -> None:
        """The 2xx to the SUBSCRIBE/REFER arrived (stack side)."""
        self.dialog = dialog
        self.request = None  # the dialog has what later requests need
        value = response.get("Expires")
        if value is not None and value.isdigit():
            self.expires = int(value)
        elif self.method == "REFER":
            self.expires = 60
        self.machine.handle(_E.ACCEPTED)
        self._arm()
        if self.machine.state is _S.ACCEPTED:  # no NOTIFY yet: timer N (RFC 6665 §4.1.2.4)
            self._timer_n = asyncio.get_running_loop().call_later(self.timer_n, self._no_notify)

    def _no_notify(self) -> None:
        self._timer_n = None
        if self.machine.state is _S.ACCEPTED:
            log.info("no NOTIFY for %s within timer N", self.event)
            self.machine.handle(_E.EXPIRED)
            self.reason = "timeout"
            self._finish()

    async def wait_notify(self, timeout: float) -> None:
        """Waits for the first NOTIFY (RFC 6665 §4.1.2.4 timer N); raises TimeoutError.
        The NOTIFY itself went to ``on_notify`` (or is ``notifies[0]`` without one)."""
        await asyncio.wait_for(self._first_notify.wait(), timeout)

    def receive_notify(self, request: Request) -> None:
        """Applies a NOTIFY's Subscription-State; raises SubscriptionError or CodecError."""
        header = request.get("Subscription-State")
        if header is None:
            raise CodecError("missing Subscription-State")
        sub_state = parse_subscription_state(header)
        event = {
            "active": _E.NOTIFY_ACTIVE,
            "pending": _E.NOTIFY_PENDING,
            "terminated": _E.NOTIFY_TERMINATED,
        }.get(sub_state.state, _E.NOTIFY_ACTIVE)  # unknown states count as active (§8.2.3)
        self.machine.handle(event)
        self.notify_count += 1
        if self.on_notify is None:
            self.notifies.append(request)
        self._first_notify.set()
        if self._timer_n is not None:
            self._timer_n.cancel()
            self._timer_n = None
        if sub_state.expires is not None and event is not _E.NOTIFY_TERMINATED:
            if sub_state.expires < self.expires or not self.expires:
                self.expires = sub_state.expires
                self._arm()
        if self.on_notify is not None:
            try:
                self.on_notify(request)
            except Exception:  # the application's callback must not break the stack
                log.exception("NOTIFY callback failed")
        if event is _E.NOTIFY_TERMINATED:
            self.reason = sub_state.reason
            self._finish()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.expires <= 0 or self.machine.state in (_S.UNSUBSCRIBING, _S.TERMINATED):
            return
        loop = asyncio.get_running_loop()
        if self.method == "REFER":  # no refresh for REFER: the notifier ends it
            self._timer = loop.call_later(self.expires, self._expired)
        else:
            self._timer = loop.call_later(refresh_delay(self.expires), self._spawn_refresh)

    def _spawn_refresh(self) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh_quietly())
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except ProtocolError as exc:
            log.info("subscription %s refresh failed: %s", self.event, exc)

    def _expired(self) -> None:
        if self.machine.state is not _S.TERMINATED:
            self.machine.handle(_E.EXPIRED)
            self.reason = "timeout"
            self._finish()

    async def refresh(self, expires: int | None = None) -> None:
        """Sends a refresh SUBSCRIBE in the dialog (RFC 6665 §4.1.2.2)."""
        if self.dialog is None:
            raise SubscriptionError("subscription not established")
        value = expires if expires is not None else (self.expires or 600)
        try:
            response = await self._send_subscribe(value)
        except SIPError:
            self.machine.handle(_E.REFRESH_FAILED)
            self.reason = "timeout"
            self._finish()
            raise
        if response.is_success:
            granted = response.get("Expires")
            if granted is not None and granted.isdigit():
                self.expires = int(granted)
            self.machine.handle(_E.REFRESHED)
            self._arm()
            return
        self.machine.handle(_E.REFRESH_FAILED)
        self.reason = "rejected"
        self._finish()
        raise SIPError(response.status, response.reason)

    async def _send_subscribe(self, expires: int) -> Response:
        assert self.dialog is not None
        headers = [("Event", self.event), ("Expires", str(expires))]
        if self.accept is not None:
            headers.append(("Accept", self.accept))
        return await self.channel.send_in_dialog(self.dialog, "SUBSCRIBE", headers)

    async def unsubscribe(self, notify_timeout: float = 5.0) -> None:
        """Sends SUBSCRIBE Expires: 0 and waits for the final NOTIFY (RFC 6665 §4.1.2.3)."""
        if self.machine.state is _S.TERMINATED:
            return
        if self.dialog is None:
            raise SubscriptionError("subscription not established")
        self.machine.handle(_E.UNSUBSCRIBE)
        self._arm()
        try:
            response = await self._send_subscribe(0)
        except SIPError:
            self.machine.handle(_E.REFRESH_FAILED)
            self._finish()
            return
        if not response.is_success:
            self.machine.handle(_E.REFRESH_FAILED)
            self._finish()
            return
        self.machine.handle(_E.REFRESHED)
        try:
            await asyncio.wait_for(self.terminated.wait(), notify_timeout)
        except TimeoutError:
            self.machine.handle(_E.EXPIRED)
            self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._timer_n is not None:
            self._timer_n.cancel()
            self._timer_n = None
        if not self.terminated.is_set():
            self.terminated.set()
            self._first_notify.set()
            self.channel.release(self)

    def close(self) -> None:
        """Forgets the subscription without signalling (stack shutdown)."""
        if self.machine.state is not _S.TERMINATED:
            self.machine.state = _S.TERMINATED
        self._finish()
        for task in list(self._tasks or ()):
            task.cancel()


class ServerSubscription:
    """A subscription we serve as notifier (RFC 6665 §4.2) or REFER recipient (RFC 3515)."""

    __slots__ = (
        "channel",
        "dialog",
        "event",
        "expires",
        "machine",
        "terminated",
        "on_refresh",
        "on_unsubscribe",
        "_timer",
        "_deadline",
        "_tasks",
    )

    def __init__(
        self, channel: DialogChannel, dialog: Dialog, event: str, expires: int, active: bool
    ) -> None:
        self.channel = channel
        self.dialog = dialog
        self.event = event
        self.expires = expires
        self.machine = StateMachine(
            NOTIFIER_TRANSITIONS, _N.ACTIVE if active else _N.PENDING, dialog.id.call_id
        )
        self.terminated = Flag()
        self.on_refresh: Callable[[int], None] | None = None
        self.on_unsubscribe: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._tasks: set[asyncio.Task[None]] | None = None
        self._arm()

    @property
    def state(self) -> NotifierState:
        """The notifier state."""
        return NotifierState(self.machine.state.value)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.expires
        self._timer = loop.call_later(self.expires, self._expired)

    def remaining(self) -> int:
        """Seconds left before the subscription expires (for Subscription-State)."""
        left = self._deadline - asyncio.get_running_loop().time()
        return max(int(left + 0.5), 0)

    def _expired(self) -> None:
        self._timer = None
        if self.machine.state is _N.TERMINATED:
            return
        self._track(asyncio.get_running_loop().create_task(self._final("timeout")))

    def _track(self, task: asyncio.Task[None]) -> None:
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _final(self, reason: str) -> None:
        try:
            await self.terminate(reason)
        except ProtocolError as exc:
            log.info("final NOTIFY for %s failed: %s", self.event, exc)

    def receive_subscribe(self, expires: int) -> None:
        """A refresh or un-SUBSCRIBE arrived in the dialog (stack side, already answered)."""
        if expires == 0:
            if self.on_unsubscribe is not None:
                self.on_unsubscribe()
            self._track(asyncio.get_running_loop().create_task(self._final("timeout")))
            return
        self.machine.handle(_NE.REFRESH)
        self.expires = expires
        self._arm()
        if self.on_refresh is not None:
            self.on_refresh(expires)

    def authorize(self) -> None:
        """Moves a pending subscription to active (send a NOTIFY afterwards)."""
        self.machine.handle(_NE.AUTHORIZE)

    async def notify(
        self,
        body: bytes = b"",
        content_type: str | None = None,
        state: str | None = None,
        reason: str | None = None,
    ) -> Response:
        """Sends a NOTIFY with Subscription-State and the body (RFC 6665 §4.2.2)."""
        if self.machine.state is _N.TERMINATED and state != "terminated":
            raise SubscriptionError("subscription terminated")
        value = state or self.machine.state.value
        if value == "terminated":
            sub = SubscriptionState("terminated", reason=reason or "noresource")
        else:
            sub = SubscriptionState(value, expires=self.remaining())
        headers = [("Event", self.event), ("Subscription-State", str(sub))]
        try:
            response = await self.channel.send_in_dialog(
                self.dialog, "NOTIFY", headers, body, content_type
            )
        except SIPError:
            self._end(_NE.NOTIFY_FAILED)
            raise
        if response.status in (481, 408) or (response.status >= 300 and value != "terminated"):
            self._end(_NE.NOTIFY_FAILED)
        return response

    async def terminate(
        self, reason: str = "noresource", body: bytes = b"", content_type: str | None = None
    ) -> None:
        """Sends the final NOTIFY (terminated) and ends the subscription (RFC 6665 §4.2.2)."""
        if self.terminated.is_set():
            return
        self.machine.handle(_NE.TERMINATE)
        try:
            await self.notify(body, content_type, state="terminated", reason=reason)
        finally:
            self._end(_NE.TERMINATE)

    def _end(self, event: NotifierEvent) -> None:
        self.machine.handle(event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.terminated.is_set():
            self.terminated.set()
            self.channel.release(self)

    def close(self) -> None:
        """Forgets the subscription without signalling (stack shutdown)."""
        self._end(_NE.TERMINATE)
        for task in list(self._tasks or ()):
            task.cancel()
