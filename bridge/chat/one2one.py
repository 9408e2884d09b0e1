"""The confirmed 1-1 session state machine (docs/protocol-mapping.md "Confirmed 1-1 sessions").

One machine serves both sides of a confirmed session; each user holds its own
copy (its own sessionId) with ``direction`` telling which side it is::

    outgoing:  INVITING ──MEDIA_UP──▶ CONNECTED ──APP_END/PEER_END/RESTART──▶ ENDED
                  │ PEER_DECLINED ▶ DECLINED        (486/603)
                  │ SETUP_FAILED  ▶ FAILED          (408/480/404/5xx/488, timeout)
                  │ APP_END       ▶ CANCELLED       (CANCEL sent)
                  └ RESTART       ▶ FAILED

    incoming:  RINGING ──APP_ACCEPT──▶ ACCEPTING ──MEDIA_UP──▶ CONNECTED ─▶ ENDED
                  │ APP_END (decline, 486), RING_TIMEOUT (486) ▶ DECLINED
                  │ PEER_CANCEL, RESTART ▶ CANCELLED
               ACCEPTING: SETUP_FAILED ▶ FAILED; APP_END/PEER_END/RESTART ▶ ENDED

What each transition emits (``ChatCore.transition`` runs the effects):

* to the originator: MEDIA_UP → ``Accepted``; PEER_DECLINED → ``Declined``;
  SETUP_FAILED/RESTART while inviting → ``Failed``; PEER_END/RESTART when
  connected → ``SessionEnded``. Its own DELETE emits nothing (the 204 is the
  answer), before the answer that is a CANCEL and the session ends
  ``Cancelled``.
* to the invitee: PEER_CANCEL, RING_TIMEOUT and RESTART while ringing →
  ``SessionCancelled`` (the invitation no longer stands); SETUP_FAILED after
  its accept → ``Failed``; PEER_END/RESTART → ``SessionEnded``.

REST view (chatSessionInformation.status): INVITING/RINGING/ACCEPTING →
``Invited``; CONNECTED → ``Connected``; ENDED/CANCELLED → ``Disconnected``;
DECLINED → ``Declined``; FAILED → ``Failed``. Messages posted while INVITING or
ACCEPTING are queued and sent on MEDIA_UP; a terminal state fails them.
"""

from __future__ import annotations

import enum

from bridge.chat.machine import lookup
from bridge.chat.model import ChatEventType


class SessionState(str, enum.Enum):
    """State of one user's confirmed 1-1 session."""

    INVITING = "inviting"
    RINGING = "ringing"
    ACCEPTING = "accepting"
    CONNECTED = "connected"
    ENDED = "ended"
    DECLINED = "declined"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SessionEvent(enum.Enum):
    """What can happen to a confirmed 1-1 session."""

    MEDIA_UP = enum.auto()
    PEER_DECLINED = enum.auto()
    SETUP_FAILED = enum.auto()
    APP_ACCEPT = enum.auto()
    APP_END = enum.auto()
    PEER_END = enum.auto()
    PEER_CANCEL = enum.auto()
    RING_TIMEOUT = enum.auto()
    RESTART = enum.auto()


S = SessionState
E = SessionEvent

TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (S.INVITING, E.MEDIA_UP): S.CONNECTED,
    (S.INVITING, E.PEER_DECLINED): S.DECLINED,
    (S.INVITING, E.SETUP_FAILED): S.FAILED,
    (S.INVITING, E.APP_END): S.CANCELLED,
    (S.INVITING, E.RESTART): S.FAILED,
    (S.RINGING, E.APP_ACCEPT): S.ACCEPTING,
    (S.RINGING, E.APP_END): S.DECLINED,
    (S.RINGING, E.RING_TIMEOUT): S.DECLINED,
    (S.RINGING, E.PEER_CANCEL): S.CANCELLED,
    (S.RINGING, E.RESTART): S.CANCELLED,
    (S.ACCEPTING, E.MEDIA_UP): S.CONNECTED,
    (S.ACCEPTING, E.SETUP_FAILED): S.FAILED,
    (S.ACCEPTING, E.APP_END): S.ENDED,
    (S.ACCEPTING, E.PEER_END): S.ENDED,
    (S.ACCEPTING, E.RESTART): S.ENDED,
    (S.CONNECTED, E.APP_END): S.ENDED,
    (S.CONNECTED, E.PEER_END): S.ENDED,
    (S.CONNECTED, E.SETUP_FAILED): S.ENDED,
    (S.CONNECTED, E.RESTART): S.ENDED,
}
"""Every legal ``(state, event)``; anything else raises ``IllegalTransition``."""

TERMINAL = frozenset({S.ENDED, S.DECLINED, S.FAILED, S.CANCELLED})
"""States without a way out: the session is over (kept for GETs until retention ends)."""
PENDING = frozenset({S.INVITING, S.ACCEPTING})
"""States in which posted messages are queued."""
LIVE = frozenset({S.INVITING, S.RINGING, S.ACCEPTING, S.CONNECTED})


def next_state(state: SessionState, event: SessionEvent) -> SessionState:
    """The state after ``event``; raises ``IllegalTransition`` (a 409 ``Conflict``)."""
    return lookup("1-1 session", TRANSITIONS, state, event)


def accepts(state: SessionState, event: SessionEvent) -> bool:
    """True when ``event`` is legal in ``state``."""
    return (state, event) in TRANSITIONS


REST_STATUS: dict[SessionState, str] = {
    S.INVITING: "Invited",
    S.RINGING: "Invited",
    S.ACCEPTING: "Invited",
    S.CONNECTED: "Connected",
    S.ENDED: "Disconnected",
    S.CANCELLED: "Disconnected",
    S.DECLINED: "Declined",
    S.FAILED: "Failed",
}
"""``chatSessionInformation.status`` / ``participantSessionStatus.status`` per state."""

DECLINE_STATUSES = frozenset({486, 603})
"""Final INVITE responses that mean the peer declined; others fail.

docs/protocol-mapping.md "Error mapping".
"""


def failure_event(status: int) -> SessionEvent:
    """The event for an INVITE failure ``status`` (docs/protocol-mapping.md "Error mapping")."""
    return E.PEER_DECLINED if status in DECLINE_STATUSES else E.SETUP_FAILED


def event_for(outgoing: bool, new: SessionState, event: SessionEvent) -> ChatEventType | None:
    """The chatEventNotification eventType the user gets on entering ``new`` (or None).

    The table of this module's docstring: the app's own accept, decline or end
    emits nothing; the originator hears Accepted/Declined/Failed/SessionEnded,
    the invitee SessionCancelled/Failed/SessionEnded.
    """
    if event in (E.APP_END, E.APP_ACCEPT):
        return None
    if new is S.CONNECTED:
        return ChatEventType.ACCEPTED if outgoing else None
    if new is S.DECLINED:
        return ChatEventType.DECLINED if outgoing else ChatEventType.SESSION_CANCELLED
    if new is S.FAILED:
        return ChatEventType.FAILED
    if new is S.CANCELLED:
        return None if outgoing else ChatEventType.SESSION_CANCELLED
    if new is S.ENDED:
        return ChatEventType.SESSION_ENDED
    return None
