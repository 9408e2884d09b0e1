"""The signalling port: what chat asks of the SIP/MSRP side, and what it hears back.

The chat parts (``bridge.chat.assembly``) drive SIP and MSRP only through
:class:`SignallingPort`, and the SIP/MSRP adapter reports everything that
happens on the wire as one of the :data:`SignallingEvent` dataclasses, passed to
:meth:`SignallingEvents.handle_event`. Both sides speak domain terms only
(user and peer URIs, text, message ids, disposition sets, statuses); the
adapter owns every SIP, SDP, MSRP, CPIM and IMDN detail (docs/protocol-mapping.md).

Legs
----
A *leg* is one SIP INVITE dialog with its MSRP session. The bridge names the
legs it starts (:meth:`SignallingPort.start_session`); the adapter names the
legs of incoming INVITEs (:class:`IncomingInvitation`). Every later call and
event carries that :data:`LegId`.

Contract for the adapter (H8)
-----------------------------
* Methods return once the request is handed to the stack; outcomes arrive as
  events, from the adapter's own tasks: never call ``handle_event`` from
  inside a port method (the service may hold that session's lock while it
  calls the port; ``loop.call_soon``/a task is enough). They raise
  :class:`SignallingError` (``.status`` a SIP code or 0) only when the
  request cannot even be started (stack down, unknown leg);
  the service then fails the session or message at once.
* ``start_session``: INVITE with the MSRP SDP offer, a multipart body when
  ``first`` is given (the adhoc first message), profile headers per config. Report
  :class:`SessionAccepted` after 200/ACK *and* the MSRP bind, or
  :class:`SessionFailed` with the final SIP status (408 for no answer / timer
  B, 0 for a local or MSRP connect failure). When ``first`` was carried in
  the INVITE, report ``MessageSendResult(ok=True)`` for it once accepted; on
  a failure report nothing for it (the service fails it, or sends it by
  pager, from the :class:`SessionFailed`).
* ``accept_session`` / ``reject_session``: answer an incoming INVITE (200 with
  the SDP answer, or ``status``: 486 decline, 480 no subscription). After an
  accept report :class:`SessionAccepted` when MSRP is bound, or
  :class:`SessionFailed`. Either may be called from inside
  :meth:`SignallingEvents.handle_event` for the invitation itself.
* ``cancel_session`` (CANCEL of our pending INVITE) and ``end_session`` (BYE,
  close MSRP): no event follows; a 200 that crosses a CANCEL is answered by
  the adapter with ACK + BYE (or reported and the service ends it).
* ``send_message`` / ``send_composing`` / ``send_report``: MSRP SEND on the
  leg (message and report CPIM-wrapped, composing bare for 1-1). With
  ``leg=None``, ``send_report`` uses a SIP MESSAGE to ``report.peer`` (or the
  top of ``report.route``). ``send_pager`` sends a chat message by SIP MESSAGE.
  Every chat message sent gets exactly one :class:`MessageSendResult`
  (MSRP 200 / 2xx to MESSAGE → ok; MSRP error, REPORT failure, timeout →
  not ok).
* Incoming traffic: :class:`MessageReceived`, :class:`ReportReceived`,
  :class:`ComposingReceived` with the leg they came on (None for SIP
  MESSAGE). ``handle_event`` raises :class:`EventRejected` when the request
  that carried the event must be refused with ``.status`` (a pager MESSAGE or
  an INVITE for a user without subscription: 480); the adapter answers it.
* Peer BYE / MSRP loss → :class:`SessionEnded`; CANCEL of an incoming INVITE
  not yet answered → :class:`SessionCancelled`.
* Deliver the events of one leg in order (one queue per leg). Traffic on a
  leg must name the leg's own user, else 481. Any other exception out of
  ``handle_event`` (a store failure) is the bridge's fault: answer 500.

Group legs (docs/group-chat.md; docs/protocol-mapping.md N2, N12, N13)
--------------------------------------------------------------
A group leg is the user's INVITE dialog with a conference focus plus its MSRP
session and its conference-event subscription.

* ``start_group``: INVITE to ``factory`` with ``Require: recipient-list-invite``
  and a multipart body (SDP offer + ``application/resource-lists+xml``,
  ``Content-Disposition: recipient-list``). After the 200 (Contact
  ``;isfocus`` = the conference URI), the ACK and the MSRP bind, report
  :class:`SessionAccepted` with ``conference`` set, then SUBSCRIBE
  ``Event: conference`` at the conference URI; failures as for 1-1
  (:class:`SessionFailed`).
* An incoming INVITE whose Contact has ``isfocus`` is an
  :class:`IncomingGroupInvitation` (inviter = Referred-By, else nobody;
  participants from the resource-list part, if any). ``accept_session``
  answers 200, binds MSRP, reports :class:`SessionAccepted` (``conference``
  = the focus Contact) and subscribes; ``reject_session(leg, 603)`` declines.
* Conference NOTIFYs (full or partial, applied by version; a gap or a
  ``terminated`` state re-subscribes) become :class:`ParticipantsChanged`
  with the entries that changed, the subscriber's own entry left out. A
  refused SUBSCRIBE is logged and retried; the leg stays up (docs/protocol-mapping.md N15).
* ``invite_participants``: in-dialog REFER to the focus (one ``Refer-To`` per
  participant, ``Refer-Sub: false``); a 2xx reports ParticipantsChanged with
  them ``Invited``, a failure with them ``Failed``. ``remove_participant``:
  REFER ``Refer-To: <uri;method=BYE>``; a failure raises nothing and is
  reported as ParticipantsChanged of nobody (logged).
* ``leave_group``: BYE with ``Reason: SIP;cause=200;text="Call completed"``,
  un-SUBSCRIBE, close MSRP; no event follows (like ``end_session``).
* On a group leg messages go CPIM-wrapped with From = the user and To = the
  conference URI (``message.peer``); isComposing goes CPIM-wrapped too; a
  report goes with CPIM To = ``report.peer`` (the original sender). Inbound,
  the sender of a :class:`MessageReceived` / :class:`ComposingReceived` /
  :class:`ReportReceived` is the CPIM From (normalized), never the focus.
* A BYE from the focus is :class:`SessionEnded` (``reason`` carries its
  Reason header text, e.g. ``cause=410`` when the conference is over).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from bridge.chat.model import (
    Composing,
    DialogIds,
    Disposition,
    Invitee,
    LegId,
    Participant,
    ReportKind,
)
from bridge.errors import BridgeError
from bridge.ids import MessageId, UserUri


class SignallingError(BridgeError):
    """A signalling request could not be started (``status``: SIP code, or 0 if local)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


class EventRejected(BridgeError):
    """The request behind an event is refused; the adapter answers it with ``status``."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


# --- what the bridge sends ------------------------------------------------------


@dataclass(frozen=True)
class OutgoingMessage:
    """A chat message to send (CPIM with imdn.Message-ID, DateTime, Disposition-Notification)."""

    message_id: MessageId
    user: UserUri
    peer: UserUri
    text: str
    date_time: datetime
    dispositions: frozenset[Disposition] = frozenset()
    content_type: str = "text/plain"


@dataclass(frozen=True)
class OutgoingReport:
    """An IMDN for a received message (RFC 5438 §7), from ``user`` to ``peer``."""

    message_id: MessageId
    """The ``imdn.Message-ID`` of the message being reported on."""
    user: UserUri
    peer: UserUri
    kind: ReportKind
    original_date_time: datetime
    route: tuple[str, ...] = ()
    """``imdn.IMDN-Record-Route`` values of the original message (top first)."""


@runtime_checkable
class ReportDelivery(Protocol):
    """An optional part of the signalling port: an IMDN sent and awaited until taken.

    ``ChatCore.send_reports`` uses it when the adapter has it, to forget an
    owed report (migration 28) only once the peer took it: MSRP 200 for the
    SEND on ``leg`` (RFC 4975 §7.1), or a 2xx to the SIP MESSAGE (RFC 3428 §7).
    """

    async def deliver_report(self, leg: LegId | None, report: OutgoingReport) -> bool:
        """Send like ``send_report``; True once taken, False once lost.

        Raises ``SignallingError`` when the request cannot even be started.
        """
        ...


class SignallingPort(Protocol):
    """The SIP/MSRP side as 1-1 chat uses it (module docstring: the contract)."""

    def bind(self, sink: SignallingEvents) -> None:
        """Set the receiver of every inbound event (``bridge.chat.assembly.build_chat``)."""
        ...

    async def start_session(
        self,
        leg: LegId,
        user: UserUri,
        peer: UserUri,
        *,
        subject: str | None = None,
        first: OutgoingMessage | None = None,
    ) -> None:
        """Send an INVITE for a 1-1 MSRP session from ``user`` to ``peer`` (R3, adhoc R6)."""
        ...

    async def accept_session(self, leg: LegId) -> None:
        """Answer an incoming invitation 200 OK and bind MSRP (R5)."""
        ...

    async def reject_session(self, leg: LegId, status: int) -> None:
        """Answer an incoming invitation with a final failure (486 decline, 480; R4 DELETE)."""
        ...

    async def cancel_session(self, leg: LegId) -> None:
        """CANCEL our INVITE that has no final answer yet (R4 DELETE)."""
        ...

    async def end_session(self, leg: LegId) -> None:
        """BYE an established session and close its MSRP session (R4 DELETE)."""
        ...

    async def send_message(self, leg: LegId, message: OutgoingMessage) -> None:
        """MSRP SEND of a CPIM chat message on a connected leg (R6)."""
        ...

    async def send_composing(self, leg: LegId, user: UserUri, composing: Composing) -> None:
        """MSRP SEND of an isComposing document on a connected leg (R6 isComposing)."""
        ...

    async def send_report(self, leg: LegId | None, report: OutgoingReport) -> None:
        """Send an IMDN on ``leg``, or by SIP MESSAGE when ``leg`` is None (R7 PUT)."""
        ...

    async def send_pager(self, message: OutgoingMessage) -> None:
        """Send a chat message by SIP MESSAGE, CPIM-wrapped (adhoc pager mode)."""
        ...

    async def start_group(
        self,
        leg: LegId,
        user: UserUri,
        factory: str,
        invitees: tuple[Invitee, ...],
        *,
        subject: str | None = None,
    ) -> None:
        """INVITE the conference factory with a recipient-list (R9)."""
        ...

    async def invite_participants(self, leg: LegId, invitees: tuple[Invitee, ...]) -> None:
        """REFER the focus to invite ``invitees`` into the group of ``leg`` (R11 POST)."""
        ...

    async def remove_participant(self, leg: LegId, participant: UserUri) -> None:
        """REFER the focus to remove ``participant`` (``method=BYE``, R12 DELETE)."""
        ...

    async def leave_group(self, leg: LegId) -> None:
        """BYE the focus with ``Reason: SIP;cause=200``, un-SUBSCRIBE (R10 DELETE)."""
        ...


# --- what the bridge hears --------------------------------------------------------


@dataclass(frozen=True)
class IncomingMessage:
    """A received chat message, decoded from CPIM (or bare text/plain)."""

    message_id: MessageId
    """imdn.Message-ID, else the MSRP Message-ID (docs/decisions.md "Message ids and status")."""
    sender: UserUri
    """The session peer (PAI), or Referred-By / CPIM From for pager and S&F (N8)."""
    text: str
    date_time: datetime | None = None
    """CPIM DateTime; None when absent (the bridge uses the receive time)."""
    dispositions: frozenset[Disposition] = frozenset()
    sender_name: str | None = None
    content_type: str = "text/plain"
    route: tuple[str, ...] = ()
    """``imdn.IMDN-Record-Route`` values, kept for the reports."""


@dataclass(frozen=True)
class IncomingInvitation:
    """An INVITE for a new 1-1 chat session toward ``user`` (N1)."""

    leg: LegId
    user: UserUri
    peer: UserUri
    peer_name: str | None = None
    subject: str | None = None
    first_message: IncomingMessage | None = None
    ids: DialogIds = field(default_factory=DialogIds)


@dataclass(frozen=True)
class IncomingGroupInvitation:
    """An INVITE from a conference focus (Contact ``isfocus``) toward ``user`` (N2)."""

    leg: LegId
    user: UserUri
    conference: str
    """The focus Contact URI: the conference URI (no parameters)."""
    inviter: UserUri | None = None
    """Referred-By, normalized; None when the focus did not say who invited."""
    inviter_name: str | None = None
    subject: str | None = None
    participants: tuple[Participant, ...] = ()
    """From the INVITE's resource-list part, if any (status Invited), the user left out."""
    ids: DialogIds = field(default_factory=DialogIds)


@dataclass(frozen=True)
class SessionAccepted:
    """The leg is up: 200/ACK exchanged and MSRP bound (N3)."""

    leg: LegId
    ids: DialogIds | None = None
    conference: str | None = None
    """For a group leg: the conference URI (the focus's ``isfocus`` Contact)."""


@dataclass(frozen=True)
class SessionFailed:
    """Our INVITE got a final failure, timed out, or MSRP could not bind (N5)."""

    leg: LegId
    status: int
    """SIP status (408 for no answer); 0 for a local or MSRP failure."""
    reason: str = ""


@dataclass(frozen=True)
class SessionEnded:
    """BYE received, or the MSRP connection was lost (N6)."""

    leg: LegId
    reason: str = ""


@dataclass(frozen=True)
class SessionCancelled:
    """The peer CANCELled its INVITE before we answered (N6)."""

    leg: LegId


@dataclass(frozen=True)
class MessageReceived:
    """A chat message for ``user`` on ``leg``, or by SIP MESSAGE when ``leg`` is None (N8, N11)."""

    leg: LegId | None
    user: UserUri
    message: IncomingMessage


@dataclass(frozen=True)
class ReportReceived:
    """An IMDN for a message ``user`` sent (N9)."""

    leg: LegId | None
    user: UserUri
    peer: UserUri
    message_id: MessageId
    kind: ReportKind


@dataclass(frozen=True)
class ComposingReceived:
    """An isComposing indication from ``peer`` to ``user`` (N10)."""

    leg: LegId | None
    user: UserUri
    peer: UserUri
    composing: Composing


@dataclass(frozen=True)
class ParticipantsChanged:
    """Members of the group of ``leg`` changed (conference NOTIFY or REFER outcome, N12, N13).

    ``participants`` holds only the entries that changed (all of them when
    ``full``), never the leg's own user.
    """

    leg: LegId
    participants: tuple[Participant, ...]
    full: bool = False


@dataclass(frozen=True)
class MessageSendResult:
    """The outcome of sending one chat message (MSRP 200 / MESSAGE 2xx or a failure, N14)."""

    user: UserUri
    message_id: MessageId
    ok: bool
    status: int = 200
    reason: str = ""


SignallingEvent = (
    IncomingInvitation
    | IncomingGroupInvitation
    | ParticipantsChanged
    | SessionAccepted
    | SessionFailed
    | SessionEnded
    | SessionCancelled
    | MessageReceived
    | ReportReceived
    | ComposingReceived
    | MessageSendResult
)
"""Everything the signalling side reports to the chat service."""


class SignallingEvents(Protocol):
    """The inbound event sink (implemented by ``bridge.chat.events.SignallingRouter``)."""

    async def handle_event(self, event: SignallingEvent) -> None:
        """Apply one event; raises :class:`EventRejected` when its request must be refused."""
        ...
