"""SIP dialogs: identity, route set, CSeq, remote target and in-dialog requests (RFC 3261 §12-§15).

Public API::

    DialogId(call_id, local_tag, remote_tag)        the key of a dialog (§12)
    Dialog.from_uac(request, response, contact)     dialog created by our request and its
                                                    1xx/2xx with a To tag (§12.1.2)
    Dialog.from_uas(request, local_tag, contact)    dialog created by a request we answer (§12.1.1)
    Dialog.from_notify(subscribe, notify, contact)  subscription dialog created by a NOTIFY
                                                    that beat the 2xx (RFC 6665 §4.1.2.4)
    Dialog.restore(id, local=, remote=, remote_target=, route_set=, local_cseq=, is_uac=)
                                                    a confirmed dialog from stored state
                                                    (BYE after a restart)
        .id .state .usage .local .remote .remote_target .route_set .local_cseq .remote_cseq
        .create_request(method, headers=(), body=b"", content_type=None) -> Request  (§12.2.1.1)
        .create_ack(cseq, headers=(), body=b"", content_type=None) -> Request       (§13.2.2.4)
        .receive_request(request)       checks CSeq order (raises DialogError(500)), refreshes
                                        the remote target (§12.2.2)
        .receive_response(response)     target refresh from a 2xx to a target-refresh request
        .handle(DialogEvent) -> DialogState   the only place the state changes
    DialogState (EARLY, CONFIRMED, TERMINATED), DialogEvent, TRANSITIONS
    retransmit_intervals(timers) -> list[float]   2xx retransmission schedule (§13.3.1.4)
    TARGET_REFRESH_METHODS      INVITE, UPDATE, SUBSCRIBE, NOTIFY (§12.2, RFC 6665)
"""

# Design notes
# ------------
# A Dialog is a plain object with no I/O: sip/stack.py owns the transactions and timers and
# feeds the dialog what it sent and received. The route set is kept as the raw name-addr
# strings of the Record-Route values (reversed for the UAC, §12.1.2), because proxies put
# parameters there that must come back byte for byte (Kamailio's ;ftag=, ;r2=on).
# Loose routing is the norm; a first route without ;lr is handled as a strict router
# (§12.2.1.1: it becomes the Request-URI and the remote target goes last in Route).
# Remote CSeq: a request with a lower or equal CSeq is out of order and gets 500
# (§12.2.2); ACK and CANCEL carry the INVITE's number and are not checked here.
# The state table is small because one dialog serves any number of usages (RFC 5057):
# early on 1xx with a tag, confirmed on 2xx/ACK, terminated by BYE, a final error to the
# creating request, a failed refresh (481/408), or the end of the last usage.

from __future__ import annotations

import enum
import itertools
import logging
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from sip.errors import CodecError, SIPError
from sip.headers import NameAddr, parse_name_addr
from sip.message import Headers, Request, Response
from sip.timers import Timers
from sip.uri import URI, SipURI, parse_uri

__all__ = [
    "Dialog",
    "DialogError",
    "DialogEvent",
    "DialogId",
    "DialogState",
    "TARGET_REFRESH_METHODS",
    "TRANSITIONS",
    "retransmit_intervals",
]

log = logging.getLogger(__name__)
trace = logging.getLogger("bridge.trace.sip")

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
_NO_CSEQ_STEP = frozenset({"ACK", "CANCEL"})


class DialogError(SIPError):
    """A request does not fit its dialog (CSeq order, unknown dialog): ``status`` to answer."""


class DialogState(enum.Enum):
    """Dialog states (RFC 3261 §12)."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogEvent(enum.Enum):
    """What happens to a dialog."""

    PROVISIONAL = "1xx with To tag"
    CONFIRM = "2xx or ACK"
    REQUEST = "in-dialog request"
    TERMINATE = "BYE, error or last usage ended"


TRANSITIONS: dict[tuple[DialogState, DialogEvent], DialogState] = {
    (DialogState.EARLY, DialogEvent.PROVISIONAL): DialogState.EARLY,
    (DialogState.EARLY, DialogEvent.CONFIRM): DialogState.CONFIRMED,
    (DialogState.EARLY, DialogEvent.REQUEST): DialogState.EARLY,
    (DialogState.EARLY, DialogEvent.TERMINATE): DialogState.TERMINATED,
    (DialogState.CONFIRMED, DialogEvent.CONFIRM): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, DialogEvent.REQUEST): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, DialogEvent.TERMINATE): DialogState.TERMINATED,
    (DialogState.TERMINATED, DialogEvent.TERMINATE): DialogState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus local and remote tags (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


def _dialog_id(call_id: str, local_tag: str, remote_tag: str) -> DialogId:
    """A new dialog's id with interned strings: on the embedded default both ends of a
    group member's dialogs live in one process and share them (docs/group-chat.md)."""
    return DialogId(sys.intern(call_id), sys.intern(local_tag), sys.intern(remote_tag))


def retransmit_intervals(timers: Timers) -> list[float]:
    """Delays between 2xx retransmissions: T1 doubling up to T2, until 64*T1 (§13.3.1.4)."""
    out: list[float] = []
    interval, elapsed = timers.t1, 0.0
    while elapsed + interval < 64 * timers.t1:
        out.append(interval)
        elapsed += interval
        interval = min(interval * 2, timers.t2)
    return out


def _contact_uri(msg: Request | Response) -> URI | None:
    contacts = msg.contacts
    return contacts[0].uri if contacts else None


_counter = itertools.count(random.randrange(1, 1 << 20))


class Dialog:
    """The state of one dialog as RFC 3261 §12 defines it; no I/O."""

    __slots__ = (
        "id",
        "usage",
        "local",
        "remote",
        "remote_target",
        "route_set",
        "local_cseq",
        "remote_cseq",
        "contact",
        "state",
        "is_uac",
    )

    def __init__(
        self,
        id: DialogId,
        *,
        usage: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: URI,
        route_set: tuple[str, ...],
        local_cseq: int,
        remote_cseq: int | None,
        contact: str,
        state: DialogState,
        is_uac: bool,
    ) -> None:
        self.id = id
        self.usage = usage
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.contact = contact
        self.state = state
        self.is_uac = is_uac

    def __repr__(self) -> str:
        return f"<Dialog {self.usage} {self.id.call_id} {self.state.value}>"

    # -- creation ------------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response, contact: str) -> Dialog:
        """The dialog our ``request`` created with a 1xx/2xx carrying a To tag (§12.1.2)."""
        remote_tag = response.to_tag
        local_tag = request.from_tag
        if remote_tag is None or local_tag is None:
            raise DialogError(400, "Dialog needs From and To tags")
        target = _contact_uri(response) or request.uri
        routes = tuple(reversed(response.get_all("Record-Route")))
        state = DialogState.CONFIRMED if response.is_success else DialogState.EARLY
        return cls(
            _dialog_id(request.call_id, local_tag, remote_tag),
            usage=request.method,
            local=request.from_,
            remote=response.to,
            remote_target=target,
            route_set=routes,
            local_cseq=request.cseq.seq,
            remote_cseq=None,
            contact=contact,
            state=state,
            is_uac=True,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, contact: str) -> Dialog:
        """The dialog created when we answer ``request`` with a To tag (§12.1.1)."""
        remote_tag = request.from_tag
        if remote_tag is None:
            raise DialogError(400, "Missing From tag")
        target = _contact_uri(request)
        if target is None:
            raise DialogError(400, "Missing Contact")
        return cls(
            _dialog_id(request.call_id, local_tag, remote_tag),
            usage=request.method,
            local=request.to.with_tag(local_tag),
            remote=request.from_,
            remote_target=target,
            route_set=tuple(request.get_all("Record-Route")),
            local_cseq=next(_counter),
            remote_cseq=request.cseq.seq,
            contact=contact,
            state=DialogState.EARLY,
            is_uac=False,
        )

    @classmethod
    def from_notify(cls, subscribe: Request, notify: Request, contact: str) -> Dialog:
        """The dialog a NOTIFY creates for our SUBSCRIBE/REFER (RFC 6665 §4.1.2.4)."""
        local_tag = subscribe.from_tag
        remote_tag = notify.from_tag
        target = _contact_uri(notify)
        if local_tag is None or remote_tag is None or target is None:
            raise DialogError(400, "NOTIFY cannot create a dialog")
        return cls(
            _dialog_id(subscribe.call_id, local_tag, remote_tag),
            usage=subscribe.method,
            local=subscribe.from_,
            remote=notify.from_,
            remote_target=target,
            route_set=tuple(notify.get_all("Record-Route")),
            local_cseq=subscribe.cseq.seq,
            remote_cseq=notify.cseq.seq,
            contact=contact,
            state=DialogState.CONFIRMED,
            is_uac=True,
        )

    @classmethod
    def restore(
        cls,
        id: DialogId,
        *,
        local: str,
        remote: str,
        remote_target: str,
        route_set: Iterable[str],
        local_cseq: int,
        is_uac: bool,
        usage: str = "INVITE",
        contact: str = "",
    ) -> Dialog:
        """A confirmed dialog rebuilt from stored state, to send requests in it (§12.2.1.1).

        ``local``/``remote`` are the From/To name-addrs of our requests (their
        tags are set from ``id``), ``route_set`` the Route values in sending
        order; ``contact`` is needed only for requests that carry one (not
        BYE). Raises ``DialogError(400)`` when a stored value does not parse.
        """
        try:
            local_addr = parse_name_addr(local).with_tag(id.local_tag)
            remote_addr = parse_name_addr(remote).with_tag(id.remote_tag)
            target = parse_uri(remote_target)
            routes = tuple(route_set)
            for route in routes:
                parse_name_addr(route)
        except CodecError as exc:
            raise DialogError(400, f"Stored dialog unusable: {exc}", local=True) from exc
        return cls(
            id,
            usage=usage,
            local=local_addr,
            remote=remote_addr,
            remote_target=target,
            route_set=routes,
            local_cseq=local_cseq,
            remote_cseq=None,
            contact=contact,
            state=DialogState.CONFIRMED,
            is_uac=is_uac,
        )

    # -- state -----------------------------------------------------------------------------

    def handle(self, event: DialogEvent) -> DialogState:
        """Applies ``event`` per TRANSITIONS; raises DialogError(500) for an illegal one."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            trace.debug("x dialog %s: %s in %s", self.id.call_id, event.value, self.state.value)
            raise DialogError(500, f"{event.value} not allowed in {self.state.value} dialog")
        if new is not self.state:
            trace.debug("- dialog %s %s -> %s", self.id.call_id, self.state.value, new.value)
            self.state = new
        return new

    # -- requests we send ------------------------------------------------------------------

    def _target_and_routes(self) -> tuple[URI, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if isinstance(first, SipURI) and first.params.has("lr"):
            return self.remote_target, list(self.route_set)
        # strict router (RFC 2543): it becomes the Request-URI (§12.2.1.1)
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request inside this dialog with the next local CSeq (§12.2.1.1)."""
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise DialogError(481, "Dialog terminated", local=True)
        if method not in _NO_CSEQ_STEP:
            self.local_cseq += 1
        return self._build(method, self.local_cseq, headers, body, content_type)

    def create_ack(
        self,
        cseq: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to the INVITE with sequence number ``cseq`` (§13.2.2.4)."""
        return self._build("ACK", cseq, headers, body, content_type)

    def _build(
        self,
        method: str,
        cseq: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._target_and_routes()
        items: list[tuple[str, str]] = [(("Route"), r) for r in routes]
        items += [
            ("From", str(self.local)),
            ("To", str(self.remote)),
            ("Call-ID", self.id.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        if method not in ("ACK", "CANCEL", "BYE"):
            items.append(("Contact", self.contact))
        items.extend(headers)
        hdrs = Headers.of(items)
        if content_type is not None:
            hdrs = hdrs.replaced("Content-Type", content_type)
        return Request(method, uri, hdrs, body)

    # -- what we receive -----------------------------------------------------------------

    def receive_request(self, request: Request) -> None:
        """Checks the remote CSeq and refreshes the remote target (§12.2.2)."""
        method = request.method
        if method in _NO_CSEQ_STEP:
            return
        seq = request.cseq.seq
        if self.remote_cseq is not None and seq <= self.remote_cseq:
            raise DialogError(500, "CSeq out of order")
        self.remote_cseq = seq
        if method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)
        self.handle(DialogEvent.REQUEST)

    def receive_response(self, response: Response) -> None:
        """Refreshes the remote target from a 2xx to a target-refresh request (§12.2.1.2)."""
        if response.is_success and response.cseq.method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)

    def _refresh_target(self, msg: Request | Response) -> None:
        target = _contact_uri(msg)
        if target is not None and target != self.remote_target:
            trace.debug("- dialog %s remote target %s", self.id.call_id, target)
            self.remote_target = target
