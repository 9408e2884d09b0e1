"""One leg of the signalling adapter: an INVITE dialog, its MSRP session and its event queue.

A leg moves INVITING (ours, no final answer yet) or RINGING (theirs, not
answered) → CONNECTING (2xx exchanged, MSRP binding) → UP → ENDED; any state
may go to ENDED. Only :meth:`Leg.move` changes the state, through the table
below, and logs ``- OLD -> NEW`` on ``bridge.trace.sip`` (docs/architecture.md "State machines").
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import replace
from typing import Protocol

from bridge.chat.model import DialogIds, LegId
from bridge.chat.ports import SignallingEvent
from bridge.ids import MessageId, UserUri
from bridge.signalling.payload import InviteOffer
from sip import rcs, sdp
from sip.errors import CodecError
from sip.msrp import MSRPSession
from sip.usage import IncomingInvite, InviteSession, OutgoingInvite

trace = logging.getLogger("bridge.trace.sip")


class LegState(enum.Enum):
    """Where one leg stands."""

    INVITING = "inviting"
    RINGING = "ringing"
    CONNECTING = "connecting"
    UP = "up"
    ENDED = "ended"


_MOVES: dict[LegState, frozenset[LegState]] = {
    LegState.INVITING: frozenset({LegState.CONNECTING, LegState.ENDED}),
    LegState.RINGING: frozenset({LegState.CONNECTING, LegState.ENDED}),
    LegState.CONNECTING: frozenset({LegState.UP, LegState.ENDED}),
    LegState.UP: frozenset({LegState.ENDED}),
    LegState.ENDED: frozenset(),
}


class Watch(Protocol):
    """What a leg needs of its conference-event subscription."""

    def start(self, conference: str) -> None:
        """Subscribe to the conference at ``conference`` (in the background)."""
        ...

    def stop(self, unsubscribe: bool) -> None:
        """Stop watching; ``unsubscribe`` sends SUBSCRIBE Expires: 0 first."""
        ...


class LegStateError(RuntimeError):
    """A leg was asked to make a move its table does not allow."""


class Leg:
    """One INVITE dialog and its MSRP session, seen by the adapter."""

    __slots__ = (
        "id",
        "user",
        "peer",
        "outgoing",
        "state",
        "call",
        "incoming",
        "offer",
        "session",
        "msrp",
        "remote",
        "chat_ids",
        "first_id",
        "cancelled",
        "held",
        "events",
        "draining",
        "group",
        "conference",
        "watch",
    )

    def __init__(self, leg: LegId, user: UserUri, peer: UserUri, *, outgoing: bool) -> None:
        self.id = leg
        self.user = user
        self.peer = peer
        self.outgoing = outgoing
        self.state = LegState.INVITING if outgoing else LegState.RINGING
        self.call: OutgoingInvite | None = None
        """Our INVITE until its 2xx made ``session`` (then None: it held the request, the
        responses and the transaction)."""
        self.incoming: IncomingInvite | None = None
        """Their INVITE until we answered 2xx (then None, like ``offer``)."""
        self.offer: InviteOffer | None = None
        self.session: InviteSession | None = None
        self.msrp: MSRPSession | None = None
        self.remote: sdp.MSRPMedia | None = None
        self.chat_ids: rcs.ChatIds | None = None
        self.first_id: MessageId | None = None
        self.cancelled = False
        self.held: list[SignallingEvent] | None = []
        """Inbound MSRP events waiting for SessionAccepted (None once it is out)."""
        self.events: deque[SignallingEvent] | None = None
        """Events waiting for the drain task (a deque only while there are some)."""
        self.draining = False
        self.group = False
        """A group leg: the dialog is with a conference focus (docs/group-chat.md)."""
        self.conference: str | None = None
        """The conference URI of a group leg, once known (the focus's ``isfocus`` Contact)."""
        self.watch: Watch | None = None
        """The conference-event subscription of a group leg (``bridge.signalling.conference``)."""

    def __repr__(self) -> str:
        return f"<Leg {self.id} {self.state.value}>"

    @property
    def ended(self) -> bool:
        """True once the leg is over."""
        return self.state is LegState.ENDED

    def move(self, new: LegState) -> bool:
        """Go to ``new``; False (no change) when already ENDED; raises on an illegal move."""
        old = self.state
        if old is LegState.ENDED:
            return False
        if new not in _MOVES[old]:
            raise LegStateError(f"leg {self.id}: {old.value} -> {new.value} is not allowed")
        self.state = new
        trace.debug("- leg %s %s -> %s", self.id, old.value, new.value)
        return True

    def dialog_ids(self) -> DialogIds:
        """The correlation ids and dialog state known so far (RFC 3261 §12).

        Once the dialog exists (``session``) everything comes from it. An
        incoming INVITE not answered yet gives what its answer will create
        (§12.1.1: our To with our tag, the caller's From, Contact and
        Record-Route); our own INVITE without a final answer gives the
        Call-ID and our tag only.
        """
        dialog = self.session.dialog if self.session is not None else None
        state = DialogIds()
        if dialog is not None:
            state = DialogIds(
                call_id=dialog.id.call_id,
                local_tag=dialog.id.local_tag,
                remote_tag=dialog.id.remote_tag,
                local_uri=str(dialog.local),
                remote_uri=str(dialog.remote),
                remote_target=str(dialog.remote_target),
                route_set=dialog.route_set,
                local_cseq=dialog.local_cseq,
                uac=dialog.is_uac,
            )
        elif self.incoming is not None:
            request = self.incoming.request
            to_tag = self.incoming.tx.to_tag
            try:
                contacts = request.contacts
            except CodecError:
                contacts = []
            state = DialogIds(
                call_id=request.call_id,
                local_tag=to_tag,
                remote_tag=request.from_tag,
                local_uri=str(request.to.with_tag(to_tag)),
                remote_uri=str(request.from_),
                remote_target=str(contacts[0].uri) if contacts else None,
                route_set=tuple(request.get_all("Record-Route")),
                uac=False,
            )
        elif self.call is not None:
            request = self.call.request
            state = DialogIds(call_id=request.call_id, local_tag=request.from_tag, uac=True)
        return replace(
            state,
            contribution_id=self.chat_ids.contribution_id if self.chat_ids else None,
            conversation_id=self.chat_ids.conversation_id if self.chat_ids else None,
            msrp_local_uri=str(self.msrp.local_path[-1]) if self.msrp is not None else None,
            msrp_remote_path=" ".join(self.remote.path) if self.remote is not None else None,
        )
