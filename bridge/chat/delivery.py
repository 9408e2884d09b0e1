"""Message status machines and the IMDN decisions (RFC 5438; docs/protocol-mapping.md "Reports").

Sent messages (``OutgoingStatus``)::

    QUEUED ─DISPATCH─▶ SENDING ─SEND_OK─▶ SENT ─IMDN_DELIVERED─▶ DELIVERED
       │                  │                 └──IMDN_DISPLAYED──▶ DISPLAYED
       └──SEND_ERROR──────┴──SEND_ERROR / IMDN_FAILED──▶ FAILED

* QUEUED: accepted by the bridge, waiting for its session to come up;
  SENDING: handed to MSRP (or SIP MESSAGE), no answer yet. Neither has a REST
  status yet: ``GET …/status`` answers 409 until the MSRP 200.
* ``Sent`` = MSRP 200 / 2xx to MESSAGE; ``Delivered``/``Displayed`` only from
  IMDNs; errors ``Failed`` (docs/decisions.md "Message ids and status").
* Monotonic: ``Displayed`` never goes back to ``Delivered``; a report that
  arrives out of order (display before delivery, an IMDN before the MSRP 200)
  moves forward or is a no-op. A peer's delivery report beats a local
  failure (FAILED → DELIVERED/DISPLAYED): the peer is the authority.
* REQUEUE (SENDING/QUEUED → QUEUED): an implicit session was lost before the
  MSRP 200 (or the bridge restarted); the message is sent again on a new one
  (the peer deduplicates on imdn.Message-ID). The peer may have had it all
  along: its delivery report then moves the requeued message on
  (QUEUED → DELIVERED/DISPLAYED) and it is not sent again. Refusing that report
  lost it for good (issue 13, defect 9): the peer ignores the resent duplicate
  and reports nothing more.

Received messages (``IncomingStatus``): RECEIVED → DELIVERED once the
notification reached the app (or on ``PUT Delivered``) → DISPLAYED on ``PUT
Displayed``; every event is legal in every state, later states absorb earlier
ones. :func:`reports_due` says which IMDNs go on the wire for a change: only
the dispositions the sender asked for, each at most once.

``next == state`` in a table means a legal no-op (no notification, nothing
persisted); a missing entry raises ``IllegalTransition``.
"""

from __future__ import annotations

import enum

from bridge.chat.machine import lookup
from bridge.chat.model import Disposition, ReportKind, RestStatus


class OutgoingStatus(str, enum.Enum):
    """Status of a message the user sent."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    FAILED = "failed"


class OutgoingEvent(enum.Enum):
    """What can happen to a sent message."""

    DISPATCH = enum.auto()
    SEND_OK = enum.auto()
    SEND_ERROR = enum.auto()
    IMDN_DELIVERED = enum.auto()
    IMDN_DISPLAYED = enum.auto()
    IMDN_FAILED = enum.auto()
    REQUEUE = enum.auto()


O = OutgoingStatus  # noqa: E741
X = OutgoingEvent

OUTGOING: dict[tuple[OutgoingStatus, OutgoingEvent], OutgoingStatus] = {
    (O.QUEUED, X.DISPATCH): O.SENDING,
    (O.QUEUED, X.SEND_ERROR): O.FAILED,
    (O.QUEUED, X.REQUEUE): O.QUEUED,
    (O.QUEUED, X.IMDN_DELIVERED): O.DELIVERED,
    (O.QUEUED, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.SENDING, X.SEND_OK): O.SENT,
    (O.SENDING, X.SEND_ERROR): O.FAILED,
    (O.SENDING, X.IMDN_DELIVERED): O.DELIVERED,
    (O.SENDING, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.SENDING, X.IMDN_FAILED): O.FAILED,
    (O.SENDING, X.REQUEUE): O.QUEUED,
    (O.SENT, X.IMDN_DELIVERED): O.DELIVERED,
    (O.SENT, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.SENT, X.IMDN_FAILED): O.FAILED,
    (O.DELIVERED, X.SEND_OK): O.DELIVERED,
    (O.DELIVERED, X.SEND_ERROR): O.DELIVERED,
    (O.DELIVERED, X.IMDN_DELIVERED): O.DELIVERED,
    (O.DELIVERED, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.DELIVERED, X.IMDN_FAILED): O.DELIVERED,
    (O.DISPLAYED, X.SEND_OK): O.DISPLAYED,
    (O.DISPLAYED, X.SEND_ERROR): O.DISPLAYED,
    (O.DISPLAYED, X.IMDN_DELIVERED): O.DISPLAYED,
    (O.DISPLAYED, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.DISPLAYED, X.IMDN_FAILED): O.DISPLAYED,
    (O.FAILED, X.SEND_OK): O.SENT,
    (O.FAILED, X.SEND_ERROR): O.FAILED,
    (O.FAILED, X.IMDN_DELIVERED): O.DELIVERED,
    (O.FAILED, X.IMDN_DISPLAYED): O.DISPLAYED,
    (O.FAILED, X.IMDN_FAILED): O.FAILED,
}
"""Every legal ``(status, event)`` of a sent message."""

OUTGOING_REST: dict[OutgoingStatus, RestStatus | None] = {
    O.QUEUED: None,
    O.SENDING: None,
    O.SENT: RestStatus.SENT,
    O.DELIVERED: RestStatus.DELIVERED,
    O.DISPLAYED: RestStatus.DISPLAYED,
    O.FAILED: RestStatus.FAILED,
}
"""REST MessageStatus per status (None: no status yet)."""

UNSENT = frozenset({O.QUEUED, O.SENDING})
"""Statuses of a message that has not been acknowledged by the next hop."""

REPORT_EVENTS: dict[ReportKind, OutgoingEvent] = {
    ReportKind.DELIVERED: X.IMDN_DELIVERED,
    ReportKind.DISPLAYED: X.IMDN_DISPLAYED,
    ReportKind.FAILED: X.IMDN_FAILED,
}


def next_outgoing(status: OutgoingStatus, event: OutgoingEvent) -> OutgoingStatus:
    """The status after ``event``; raises ``IllegalTransition``."""
    return lookup("sent message", OUTGOING, status, event)


def accepts_outgoing(status: OutgoingStatus, event: OutgoingEvent) -> bool:
    """True when ``event`` is legal for a sent message in ``status``."""
    return (status, event) in OUTGOING


def notify_outgoing(
    old: OutgoingStatus, new: OutgoingStatus, reports: frozenset[RestStatus]
) -> RestStatus | None:
    """The chatMessageStatusNotification status to emit on moving ``old`` → ``new`` (or None).

    Only what the app asked for in ``reportRequest`` (OMA REST Chat v1.0 ChatMessage), except
    Failed, which is always notified: an app must learn that its message was lost. A
    display report that arrives before (or instead of) the delivery report is notified as
    Delivered to an app that asked for Delivered only. A peer may send IMDNs nobody asked
    for (a receiver treats a message with an imdn.Message-ID as asking positive-delivery,
    RFC 5438); they still move the status that ``GET …/status`` shows,
    without a notification.
    """
    rest = OUTGOING_REST[new]
    if rest is None or rest is RestStatus.FAILED or rest in reports:
        return rest
    if (
        rest is RestStatus.DISPLAYED
        and RestStatus.DELIVERED in reports
        and OUTGOING_REST[old] is not RestStatus.DELIVERED
    ):
        return RestStatus.DELIVERED
    return None


class IncomingStatus(str, enum.Enum):
    """Status of a message the user received (what has been reported back)."""

    RECEIVED = "received"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"


class IncomingEvent(enum.Enum):
    """What can happen to a received message."""

    NOTIFIED = enum.auto()
    """The notification reached the app, or the app PUT ``Delivered``."""
    APP_DISPLAYED = enum.auto()
    """The app PUT ``Displayed``."""


I = IncomingStatus  # noqa: E741
N = IncomingEvent

INCOMING: dict[tuple[IncomingStatus, IncomingEvent], IncomingStatus] = {
    (I.RECEIVED, N.NOTIFIED): I.DELIVERED,
    (I.RECEIVED, N.APP_DISPLAYED): I.DISPLAYED,
    (I.DELIVERED, N.NOTIFIED): I.DELIVERED,
    (I.DELIVERED, N.APP_DISPLAYED): I.DISPLAYED,
    (I.DISPLAYED, N.NOTIFIED): I.DISPLAYED,
    (I.DISPLAYED, N.APP_DISPLAYED): I.DISPLAYED,
}
"""Every ``(status, event)`` of a received message (all legal, monotonic)."""

INCOMING_REST: dict[IncomingStatus, RestStatus] = {
    I.RECEIVED: RestStatus.SENT,
    I.DELIVERED: RestStatus.DELIVERED,
    I.DISPLAYED: RestStatus.DISPLAYED,
}
"""REST MessageStatus of a received message: Sent until the app has it."""


def next_incoming(status: IncomingStatus, event: IncomingEvent) -> IncomingStatus:
    """The status after ``event``; raises ``IllegalTransition``."""
    return lookup("received message", INCOMING, status, event)


def reports_due(
    requested: frozenset[Disposition], old: IncomingStatus, new: IncomingStatus
) -> list[ReportKind]:
    """The IMDNs to send when a received message goes from ``old`` to ``new`` (RFC 5438 §7).

    A delivery report only if ``positive-delivery`` was requested and none was
    sent before; a display report only if ``display`` was requested.
    """
    due: list[ReportKind] = []
    if old is new:
        return due
    if old is I.RECEIVED and Disposition.POSITIVE_DELIVERY in requested:
        due.append(ReportKind.DELIVERED)
    if new is I.DISPLAYED and Disposition.DISPLAY in requested:
        due.append(ReportKind.DISPLAYED)
    return due
