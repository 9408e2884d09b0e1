"""sip.transaction_machine: the four (state, event) tables of RFC 3261 §17 / RFC 6026."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.errors import TransactionStateError
from sip.timers import Timers
from sip.transaction_machine import (
    INITIAL,
    TABLES,
    TransactionKind,
    TransactionMachine,
    TxEvent,
    TxState,
)

K = TransactionKind
S = TxState
E = TxEvent
ALL = list(itertools.product(K, S, E))


@pytest.mark.parametrize(("kind", "state", "event"), ALL)
def test_every_state_event_pair(kind: TransactionKind, state: TxState, event: TxEvent) -> None:
    machine = TransactionMachine(kind)
    machine.state = state
    expected = TABLES[kind].get((state, event))
    if expected is None:
        with pytest.raises(TransactionStateError) as info:
            machine.handle(event)
        assert str(info.value) == (
            f"{kind.value} transaction: {event.value} not allowed in {state.value}"
        )
        assert machine.state is state
    else:
        assert machine.handle(event) is expected
        assert machine.state is expected


def test_terminated_is_final_everywhere() -> None:
    for kind, table in TABLES.items():
        assert not [key for key in table if key[0] is S.TERMINATED], kind


# The RFC 3261 figures, written out independently of the tables.
RFC_PATHS = {
    K.INVITE_CLIENT: [
        ([E.TIMER_A, E.TIMER_A, E.TIMER_B], S.TERMINATED),
        ([E.PROVISIONAL, E.PROVISIONAL, E.FINAL_ERROR, E.FINAL_ERROR, E.TIMER_D], S.TERMINATED),
        ([E.FINAL_2XX, E.FINAL_2XX, E.TIMER_M], S.TERMINATED),
        ([E.TRANSPORT_ERROR], S.TERMINATED),
    ],
    K.NON_INVITE_CLIENT: [
        ([E.TIMER_E, E.TIMER_E, E.TIMER_F], S.TERMINATED),
        ([E.PROVISIONAL, E.TIMER_E, E.FINAL_2XX, E.FINAL_2XX, E.TIMER_K], S.TERMINATED),
        ([E.FINAL_ERROR], S.COMPLETED),
    ],
    K.INVITE_SERVER: [
        (
            [
                E.REQUEST,
                E.PROVISIONAL,
                E.FINAL_ERROR,
                E.TIMER_G,
                E.REQUEST,
                E.ACK,
                E.ACK,
                E.TIMER_I,
            ],
            S.TERMINATED,
        ),
        ([E.FINAL_ERROR, E.TIMER_H], S.TERMINATED),
        ([E.FINAL_2XX, E.REQUEST, E.FINAL_2XX, E.ACK, E.TIMER_L], S.TERMINATED),
    ],
    K.NON_INVITE_SERVER: [
        ([E.REQUEST, E.PROVISIONAL, E.REQUEST, E.FINAL_2XX, E.REQUEST, E.TIMER_J], S.TERMINATED),
        ([E.TRANSPORT_ERROR], S.TERMINATED),
    ],
}


@pytest.mark.parametrize(
    ("kind", "events", "end"),
    [(k, ev, end) for k, paths in RFC_PATHS.items() for ev, end in paths],
)
def test_rfc_paths(kind: TransactionKind, events: list[TxEvent], end: TxState) -> None:
    machine = TransactionMachine(kind, "z9hG4bKtest")
    assert machine.state is INITIAL[kind]
    for event in events:
        machine.handle(event)
    assert machine.state is end


@pytest.mark.parametrize(
    ("kind", "state", "event"),
    [
        (K.INVITE_CLIENT, S.COMPLETED, E.FINAL_2XX),  # 2xx after non-2xx
        (K.INVITE_CLIENT, S.PROCEEDING, E.TIMER_A),  # no retransmission after 1xx
        (K.NON_INVITE_SERVER, S.COMPLETED, E.FINAL_2XX),  # a second final response
        (K.INVITE_SERVER, S.PROCEEDING, E.ACK),
        (K.INVITE_SERVER, S.COMPLETED, E.FINAL_2XX),
        (K.NON_INVITE_CLIENT, S.TRYING, E.ACK),
    ],
)
def test_notable_illegal_events(kind: TransactionKind, state: TxState, event: TxEvent) -> None:
    machine = TransactionMachine(kind)
    machine.state = state
    with pytest.raises(TransactionStateError):
        machine.handle(event)


@given(st.sampled_from(list(K)), st.lists(st.sampled_from(list(E)), max_size=40))
def test_random_event_sequences(kind: TransactionKind, events: list[TxEvent]) -> None:
    machine = TransactionMachine(kind)
    for event in events:
        before = machine.state
        try:
            after = machine.handle(event)
        except TransactionStateError:
            assert machine.state is before
            assert (before, event) not in TABLES[kind]
        else:
            assert after is TABLES[kind][(before, event)]


def test_timer_values() -> None:
    t = Timers()
    assert (t.a, t.b, t.e, t.f, t.g, t.h, t.l, t.m) == (0.5, 32, 0.5, 32, 0.5, 32, 32, 32)
    assert (t.d(False), t.d(True), t.i(False), t.i(True)) == (32.0, 0.0, 5.0, 0.0)
    assert (t.j(False), t.j(True), t.k(False), t.k(True)) == (32.0, 0.0, 5.0, 0.0)
    fast = Timers(t1=0.01, t2=0.04, t4=0.05)
    assert fast.b == pytest.approx(0.64) and fast.k(False) == 0.05
