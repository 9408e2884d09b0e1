"""The implicit (adhoc) 1-1 session machine (docs/protocol-mapping.md "Adhoc messages").

The app never sees these sessions: it posts to ``…/adhoc/messages`` and the
bridge opens an implicit MSRP session to the peer (the first message rides in
the INVITE), reuses it for every message in both directions, and closes it
after ``chat_idle_timeout`` seconds without traffic. One live implicit
session exists per (user, peer); incoming INVITEs auto-accepted for an
``adhocChatSupported`` subscription create one too::

    CONNECTING ──MEDIA_UP──▶ CONNECTED ──IDLE/PEER_END/RESTART──▶ CLOSED
         └──SETUP_FAILED/PEER_END/RESTART──▶ CLOSED

Nothing is notified for the session itself (docs/protocol-mapping.md N6): only its messages
matter. Messages posted while CONNECTING are queued; on CLOSED before
MEDIA_UP they fail, or go by SIP MESSAGE when the pager fallback applies
(INVITE refused with 403/405/415/488/606, docs/decisions.md "Adhoc mode").
"""

from __future__ import annotations

import enum

from bridge.chat.machine import lookup


class AdhocState(str, enum.Enum):
    """State of an implicit 1-1 session."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class AdhocEvent(enum.Enum):
    """What can happen to an implicit 1-1 session."""

    MEDIA_UP = enum.auto()
    SETUP_FAILED = enum.auto()
    PEER_END = enum.auto()
    IDLE = enum.auto()
    RESTART = enum.auto()


A = AdhocState
V = AdhocEvent

TRANSITIONS: dict[tuple[AdhocState, AdhocEvent], AdhocState] = {
    (A.CONNECTING, V.MEDIA_UP): A.CONNECTED,
    (A.CONNECTING, V.SETUP_FAILED): A.CLOSED,
    (A.CONNECTING, V.PEER_END): A.CLOSED,
    (A.CONNECTING, V.RESTART): A.CLOSED,
    (A.CONNECTED, V.IDLE): A.CLOSED,
    (A.CONNECTED, V.PEER_END): A.CLOSED,
    (A.CONNECTED, V.SETUP_FAILED): A.CLOSED,
    (A.CONNECTED, V.RESTART): A.CLOSED,
}
"""Every legal ``(state, event)``; anything else raises ``IllegalTransition``."""

LIVE = frozenset({A.CONNECTING, A.CONNECTED})

PAGER_FALLBACK_STATUSES = frozenset({403, 405, 415, 488, 606})
"""INVITE failures after which adhoc messages may go by SIP MESSAGE (pager fallback)."""


def next_state(state: AdhocState, event: AdhocEvent) -> AdhocState:
    """The state after ``event``; raises ``IllegalTransition``."""
    return lookup("adhoc session", TRANSITIONS, state, event)


def accepts(state: AdhocState, event: AdhocEvent) -> bool:
    """True when ``event`` is legal in ``state``."""
    return (state, event) in TRANSITIONS
