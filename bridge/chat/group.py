"""The group chat participation machine (OMA REST Chat v1.0 R9-R13; docs/group-chat.md).

Each member holds its own group session (its own ``g-…`` sessionId) whose
state is the *user's own participation*: the group leg toward the focus
(docs/group-chat.md "Parts"). The other members are ``Participant`` rows kept
up to date from the focus's conference events, not states of this machine::

    creator:   JOINING ──MEDIA_UP──▶ CONNECTED ──APP_LEAVE──▶ LEFT
                  │ SETUP_FAILED, RESTART ▶ FAILED     PEER_END, SETUP_FAILED, RESTART ▶ ENDED
                  └ APP_LEAVE ▶ LEFT                   (focus BYE, conference over, removed)

    invitee:   INVITED ──APP_ACCEPT──▶ ACCEPTING ──MEDIA_UP──▶ CONNECTED ─▶ LEFT / ENDED
                  │ APP_DECLINE (603), RING_TIMEOUT (603) ▶ DECLINED
                  │ PEER_CANCEL, RESTART ▶ CANCELLED
               ACCEPTING: SETUP_FAILED ▶ FAILED; APP_LEAVE ▶ LEFT; PEER_END, RESTART ▶ ENDED

What each transition emits (``ChatCore.transition`` runs it) as a
chatEventNotification (link rel ``GroupChatSessionInformation``):

* creator: MEDIA_UP → ``Successful``; SETUP_FAILED/RESTART while JOINING →
  ``Failed`` (docs/group-chat.md "REST behaviour").
* invitee: RING_TIMEOUT, PEER_CANCEL, RESTART while INVITED →
  ``SessionCancelled`` (the invitation no longer stands); SETUP_FAILED after
  its accept → ``Failed``.
* anyone: PEER_END or RESTART once ACCEPTING/CONNECTED → ``SessionEnded``.
* the app's own accept, decline and leave emit nothing (the 204 answers them).

REST view (``groupChatSessionInformation.status``, the caller's own
``participantSessionStatus``): JOINING/INVITED/ACCEPTING → ``Invited``;
CONNECTED → ``Connected``; LEFT/ENDED/CANCELLED → ``Disconnected``; DECLINED →
``Declined``; FAILED → ``Failed``. Messages posted while JOINING or ACCEPTING
are queued and sent on MEDIA_UP; a terminal state fails them.
"""

from __future__ import annotations

import enum

from bridge.chat.machine import lookup
from bridge.chat.model import ChatEventType, ParticipantStatus


class GroupState(str, enum.Enum):
    """State of one user's participation in a group chat."""

    JOINING = "joining"
    INVITED = "invited"
    ACCEPTING = "accepting"
    CONNECTED = "connected"
    LEFT = "left"
    ENDED = "ended"
    DECLINED = "declined"
    FAILED = "failed"
    CANCELLED = "cancelled"


class GroupEvent(enum.Enum):
    """What can happen to one user's participation in a group chat."""

    MEDIA_UP = enum.auto()
    SETUP_FAILED = enum.auto()
    APP_ACCEPT = enum.auto()
    APP_DECLINE = enum.auto()
    APP_LEAVE = enum.auto()
    RING_TIMEOUT = enum.auto()
    PEER_CANCEL = enum.auto()
    PEER_END = enum.auto()
    RESTART = enum.auto()


G = GroupState
V = GroupEvent

TRANSITIONS: dict[tuple[GroupState, GroupEvent], GroupState] = {
    (G.JOINING, V.MEDIA_UP): G.CONNECTED,
    (G.JOINING, V.SETUP_FAILED): G.FAILED,
    (G.JOINING, V.APP_LEAVE): G.LEFT,
    (G.JOINING, V.RESTART): G.FAILED,
    (G.INVITED, V.APP_ACCEPT): G.ACCEPTING,
    (G.INVITED, V.APP_DECLINE): G.DECLINED,
    (G.INVITED, V.RING_TIMEOUT): G.DECLINED,
    (G.INVITED, V.PEER_CANCEL): G.CANCELLED,
    (G.INVITED, V.RESTART): G.CANCELLED,
    (G.ACCEPTING, V.MEDIA_UP): G.CONNECTED,
    (G.ACCEPTING, V.SETUP_FAILED): G.FAILED,
    (G.ACCEPTING, V.APP_LEAVE): G.LEFT,
    (G.ACCEPTING, V.PEER_END): G.ENDED,
    (G.ACCEPTING, V.RESTART): G.ENDED,
    (G.CONNECTED, V.APP_LEAVE): G.LEFT,
    (G.CONNECTED, V.PEER_END): G.ENDED,
    (G.CONNECTED, V.SETUP_FAILED): G.ENDED,
    (G.CONNECTED, V.RESTART): G.ENDED,
}
"""Every legal ``(state, event)``; anything else raises ``IllegalTransition``."""

TERMINAL = frozenset({G.LEFT, G.ENDED, G.DECLINED, G.FAILED, G.CANCELLED})
"""States without a way out: the participation is over (kept for GETs until retention ends)."""
PENDING = frozenset({G.JOINING, G.ACCEPTING})
"""States in which posted messages are queued."""
LIVE = frozenset({G.JOINING, G.INVITED, G.ACCEPTING, G.CONNECTED})


def next_state(state: GroupState, event: GroupEvent) -> GroupState:
    """The state after ``event``; raises ``IllegalTransition`` (a 409 ``Conflict``)."""
    return lookup("group session", TRANSITIONS, state, event)


def accepts(state: GroupState, event: GroupEvent) -> bool:
    """True when ``event`` is legal in ``state``."""
    return (state, event) in TRANSITIONS


REST_STATUS: dict[GroupState, ParticipantStatus] = {
    G.JOINING: ParticipantStatus.INVITED,
    G.INVITED: ParticipantStatus.INVITED,
    G.ACCEPTING: ParticipantStatus.INVITED,
    G.CONNECTED: ParticipantStatus.CONNECTED,
    G.LEFT: ParticipantStatus.DISCONNECTED,
    G.ENDED: ParticipantStatus.DISCONNECTED,
    G.CANCELLED: ParticipantStatus.DISCONNECTED,
    G.DECLINED: ParticipantStatus.DECLINED,
    G.FAILED: ParticipantStatus.FAILED,
}
"""The caller's own ParticipantStatus per state (module docstring)."""

DECLINE = 603
"""SIP status of a group decline and of an unanswered group invitation (docs/group-chat.md)."""


def event_for(creator: bool, old: GroupState, event: GroupEvent) -> ChatEventType | None:
    """The chatEventNotification eventType on ``event`` in ``old`` (or None: module docstring)."""
    if event in (V.APP_ACCEPT, V.APP_DECLINE, V.APP_LEAVE):
        return None
    new = next_state(old, event)
    if new is G.CONNECTED:
        return ChatEventType.SUCCESSFUL if creator else None
    if new is G.FAILED:
        return ChatEventType.FAILED
    if new in (G.CANCELLED, G.DECLINED):
        return ChatEventType.SESSION_CANCELLED
    if new is G.ENDED:
        return ChatEventType.SESSION_ENDED
    return None
