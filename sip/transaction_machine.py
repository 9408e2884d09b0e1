"""The sans-I/O SIP transaction machines: (state, event) tables (RFC 3261 §17, RFC 6026).

Public API::

    TransactionMachine(kind, name="")   one transaction's state; ``handle(event)`` moves it
                                        per ``TABLES[kind]`` or raises TransactionStateError
    TABLES[kind][(state, event)] -> state ;  INITIAL[kind] -> state
    TransactionKind (INVITE/non-INVITE x client/server), TxState, TxEvent
    response_event(response) -> TxEvent.PROVISIONAL | FINAL_2XX | FINAL_ERROR
"""

# Design notes
# ------------
# Each transaction kind is a table ``(state, event) -> state``; ``TransactionMachine.handle``
# is the only place a state changes. RFC 6026 adds Accepted to both INVITE machines: a 2xx
# ends the transaction for the TU but it stays to absorb retransmissions (client: 2xx
# forks to the TU until timer M; server: the TU's own 2xx retransmissions until timer L).
# The asyncio side (sip.transaction) turns network input, timer expiry and TU calls into
# events and runs the on-enter effects; it never sets a state itself.

from __future__ import annotations

import enum
import logging

from sip.errors import TransactionStateError
from sip.message import Response

__all__ = [
    "INITIAL",
    "TABLES",
    "TransactionKind",
    "TransactionMachine",
    "TxEvent",
    "TxState",
    "response_event",
]

trace = logging.getLogger("bridge.trace.sip")


class TxState(enum.Enum):
    """Transaction states (RFC 3261 Figures 5-8, RFC 6026 Accepted)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TxEvent(enum.Enum):
    """Inputs: responses received (client) or sent (server), requests, timers, errors."""

    PROVISIONAL = "1xx"
    FINAL_2XX = "2xx"
    FINAL_ERROR = "3xx-6xx"
    REQUEST = "request retransmission"
    ACK = "ACK"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


class TransactionKind(enum.Enum):
    """The four machines of RFC 3261 §17."""

    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


S, E = TxState, TxEvent
_Table = dict[tuple[TxState, TxEvent], TxState]

_INVITE_CLIENT: _Table = {
    (S.CALLING, E.TIMER_A): S.CALLING,
    (S.CALLING, E.TIMER_B): S.TERMINATED,
    (S.CALLING, E.PROVISIONAL): S.PROCEEDING,
    (S.CALLING, E.FINAL_2XX): S.ACCEPTED,
    (S.CALLING, E.FINAL_ERROR): S.COMPLETED,
    (S.CALLING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.PROCEEDING, E.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, E.FINAL_2XX): S.ACCEPTED,
    (S.PROCEEDING, E.FINAL_ERROR): S.COMPLETED,
    (S.PROCEEDING, E.TIMER_B): S.TERMINATED,  # armed again after CANCEL (§9.1)
    (S.PROCEEDING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, E.FINAL_ERROR): S.COMPLETED,  # ACK again
    (S.COMPLETED, E.TIMER_D): S.TERMINATED,
    (S.COMPLETED, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.ACCEPTED, E.FINAL_2XX): S.ACCEPTED,  # to the TU (RFC 6026 §8.4)
    (S.ACCEPTED, E.TIMER_M): S.TERMINATED,
}
_NON_INVITE_CLIENT: _Table = {
    (S.TRYING, E.TIMER_E): S.TRYING,
    (S.TRYING, E.TIMER_F): S.TERMINATED,
    (S.TRYING, E.PROVISIONAL): S.PROCEEDING,
    (S.TRYING, E.FINAL_2XX): S.COMPLETED,
    (S.TRYING, E.FINAL_ERROR): S.COMPLETED,
    (S.TRYING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.PROCEEDING, E.TIMER_E): S.PROCEEDING,
    (S.PROCEEDING, E.TIMER_F): S.TERMINATED,
    (S.PROCEEDING, E.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, E.FINAL_2XX): S.COMPLETED,
    (S.PROCEEDING, E.FINAL_ERROR): S.COMPLETED,
    (S.PROCEEDING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, E.PROVISIONAL): S.COMPLETED,  # absorbed
    (S.COMPLETED, E.FINAL_2XX): S.COMPLETED,
    (S.COMPLETED, E.FINAL_ERROR): S.COMPLETED,
    (S.COMPLETED, E.TIMER_K): S.TERMINATED,
}
_INVITE_SERVER: _Table = {
    (S.PROCEEDING, E.REQUEST): S.PROCEEDING,  # resend the last provisional
    (S.PROCEEDING, E.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, E.FINAL_2XX): S.ACCEPTED,
    (S.PROCEEDING, E.FINAL_ERROR): S.COMPLETED,
    (S.PROCEEDING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, E.REQUEST): S.COMPLETED,  # resend the final response
    (S.COMPLETED, E.TIMER_G): S.COMPLETED,
    (S.COMPLETED, E.ACK): S.CONFIRMED,
    (S.COMPLETED, E.TIMER_H): S.TERMINATED,
    (S.COMPLETED, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.CONFIRMED, E.ACK): S.CONFIRMED,  # absorbed
    (S.CONFIRMED, E.REQUEST): S.CONFIRMED,  # absorbed
    (S.CONFIRMED, E.TIMER_I): S.TERMINATED,
    (S.ACCEPTED, E.REQUEST): S.ACCEPTED,  # absorbed (RFC 6026 §8.7)
    (S.ACCEPTED, E.ACK): S.ACCEPTED,  # passed to the TU
    (S.ACCEPTED, E.FINAL_2XX): S.ACCEPTED,  # the TU retransmits its 2xx
    (S.ACCEPTED, E.TIMER_L): S.TERMINATED,
    (S.ACCEPTED, E.TRANSPORT_ERROR): S.ACCEPTED,  # the TU's 2xx retransmit failed
}
_NON_INVITE_SERVER: _Table = {
    (S.TRYING, E.REQUEST): S.TRYING,  # discarded
    (S.TRYING, E.PROVISIONAL): S.PROCEEDING,
    (S.TRYING, E.FINAL_2XX): S.COMPLETED,
    (S.TRYING, E.FINAL_ERROR): S.COMPLETED,
    (S.TRYING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.PROCEEDING, E.REQUEST): S.PROCEEDING,  # resend the last provisional
    (S.PROCEEDING, E.PROVISIONAL): S.PROCEEDING,
    (S.PROCEEDING, E.FINAL_2XX): S.COMPLETED,
    (S.PROCEEDING, E.FINAL_ERROR): S.COMPLETED,
    (S.PROCEEDING, E.TRANSPORT_ERROR): S.TERMINATED,
    (S.COMPLETED, E.REQUEST): S.COMPLETED,  # resend the final response
    (S.COMPLETED, E.TIMER_J): S.TERMINATED,
    (S.COMPLETED, E.TRANSPORT_ERROR): S.TERMINATED,
}
TABLES: dict[TransactionKind, _Table] = {
    TransactionKind.INVITE_CLIENT: _INVITE_CLIENT,
    TransactionKind.NON_INVITE_CLIENT: _NON_INVITE_CLIENT,
    TransactionKind.INVITE_SERVER: _INVITE_SERVER,
    TransactionKind.NON_INVITE_SERVER: _NON_INVITE_SERVER,
}
INITIAL: dict[TransactionKind, TxState] = {
    TransactionKind.INVITE_CLIENT: S.CALLING,
    TransactionKind.NON_INVITE_CLIENT: S.TRYING,
    TransactionKind.INVITE_SERVER: S.PROCEEDING,
    TransactionKind.NON_INVITE_SERVER: S.TRYING,
}


class TransactionMachine:
    """The sans-I/O state of one transaction: ``handle(event)`` is the only state change."""

    __slots__ = ("kind", "state", "name")

    def __init__(self, kind: TransactionKind, name: str = "") -> None:
        self.kind = kind
        self.state = INITIAL[kind]
        self.name = name

    def handle(self, event: TxEvent) -> TxState:
        """Moves to the table's next state for ``event``; raises TransactionStateError."""
        old = self.state
        new = TABLES[self.kind].get((old, event))
        if new is None:
            raise TransactionStateError(
                f"{self.kind.value} transaction: {event.value} not allowed in {old.value}"
            )
        if new is not old:
            trace.debug(
                "- %s %s %s -> %s (%s)",
                self.kind.value,
                self.name,
                old.value,
                new.value,
                event.value,
            )
        self.state = new
        return new


def response_event(response: Response) -> TxEvent:
    """The event a response stands for: 1xx, 2xx or 3xx-6xx (RFC 3261 §17)."""
    if response.status < 200:
        return E.PROVISIONAL
    return E.FINAL_2XX if response.status < 300 else E.FINAL_ERROR
