"""One leg of the signalling adapter: an INVITE dialog, its MSRP session and its event queue.

A leg moves INVITING (ours, no final answer yet) or RINGING (theirs, not
answered) → CONNECTING (2xx exchanged, MSRP binding) → UP → ENDED; any state
may go to ENDED. Only :meth:`Leg.move` changes the state, through the table
below, and logs ``- OLD -> NEW`` on ``bridge.trace.sip`` (STYLE.md §3).
"""

from __future__ import annotations

import enum
import logging
from collections import deque

from bridge.chat.model import DialogIds, LegId
from bridge.chat.ports import SignallingEvent
from bridge.ids import MessageId, UserUri
from bridge.signalling.payload import InviteOffer
from sip import rcs, sdp
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
    )

    def __init__(self, leg: LegId, user: UserUri, peer: UserUri, *, outgoing: bool) -> None:
        self.id = leg
        self.user = user
        self.peer = peer
        self.outgoing = outgoing
        self.state = LegState.INVITING if outgoing else LegState.RINGING
        self.call: OutgoingInvite | None = None
        self.incoming: IncomingInvite | None = None
        self.offer: InviteOffer | None = None
        self.session: InviteSession | None = None
        self.msrp: MSRPSession | None = None
        self.remote: sdp.MSRPMedia | None = None
        self.chat_ids: rcs.ChatIds | None = None
        self.first_id: MessageId | None = None
        self.cancelled = False
        self.held: list[SignallingEvent] | None = []
        """Inbound MSRP events waiting for SessionAccepted (None once it is out)."""
        self.events: deque[SignallingEvent] = deque()
        self.draining = False

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
        """The correlation ids known so far (mapping §3.1)."""
        call_id = local_tag = remote_tag = None
        if self.session is not None:
            dialog = self.session.dialog.id
            call_id, local_tag, remote_tag = dialog.call_id, dialog.local_tag, dialog.remote_tag
        elif self.incoming is not None:
            request = self.incoming.request
            call_id, local_tag, remote_tag = (
                request.call_id,
                self.incoming.tx.to_tag,
                request.from_tag,
            )
        elif self.call is not None:
            call_id, local_tag = self.call.request.call_id, self.call.request.from_tag
        return DialogIds(
            call_id=call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            contribution_id=self.chat_ids.contribution_id if self.chat_ids else None,
            conversation_id=self.chat_ids.conversation_id if self.chat_ids else None,
            msrp_local_uri=str(self.msrp.local_path[-1]) if self.msrp is not None else None,
            msrp_remote_path=" ".join(self.remote.path) if self.remote is not None else None,
        )
