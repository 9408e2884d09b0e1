"""The chat state machines: every (state, event) is legal per the table or raises."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.chat import adhoc, delivery, one2one
from bridge.chat.delivery import IncomingStatus as I
from bridge.chat.delivery import OutgoingEvent as X
from bridge.chat.delivery import OutgoingStatus as O
from bridge.chat.machine import IllegalTransition
from bridge.chat.model import ChatEventType, Disposition, ReportKind, RestStatus, dispositions_for
from bridge.errors import Conflict

MACHINES = [
    ("1-1", one2one.SessionState, one2one.SessionEvent, one2one.TRANSITIONS, one2one.next_state),
    ("adhoc", adhoc.AdhocState, adhoc.AdhocEvent, adhoc.TRANSITIONS, adhoc.next_state),
    (
        "out",
        delivery.OutgoingStatus,
        delivery.OutgoingEvent,
        delivery.OUTGOING,
        delivery.next_outgoing,
    ),
    (
        "in",
        delivery.IncomingStatus,
        delivery.IncomingEvent,
        delivery.INCOMING,
        delivery.next_incoming,
    ),
]


@pytest.mark.parametrize(("name", "states", "events", "table", "step"), MACHINES)
def test_every_pair_is_legal_or_raises(name, states, events, table, step) -> None:
    for state, event in itertools.product(states, events):
        if (state, event) in table:
            assert step(state, event) is table[(state, event)]
        else:
            with pytest.raises(IllegalTransition) as info:
                step(state, event)
            assert isinstance(info.value, Conflict)
            assert info.value.state is state and info.value.event is event


@given(st.lists(st.sampled_from(list(one2one.SessionEvent)), max_size=12))
def test_one2one_terminal_states_absorb(events) -> None:
    for start in (one2one.SessionState.INVITING, one2one.SessionState.RINGING):
        state = start
        for event in events:
            if not one2one.accepts(state, event):
                with pytest.raises(IllegalTransition):
                    one2one.next_state(state, event)
                continue
            assert state not in one2one.TERMINAL
            state = one2one.next_state(state, event)
        assert state in one2one.LIVE or state in one2one.TERMINAL


RANK = {O.QUEUED: 0, O.SENDING: 1, O.SENT: 2, O.FAILED: 2, O.DELIVERED: 3, O.DISPLAYED: 4}


@given(st.lists(st.sampled_from(list(delivery.OutgoingEvent)), max_size=15))
def test_outgoing_never_goes_back_from_a_report(events) -> None:
    state = O.QUEUED
    for event in events:
        if not delivery.accepts_outgoing(state, event):
            continue
        new = delivery.next_outgoing(state, event)
        if state in (O.DELIVERED, O.DISPLAYED):
            assert RANK[new] >= RANK[state]
        state = new


def test_outgoing_out_of_order_reports() -> None:
    assert delivery.next_outgoing(O.SENDING, X.IMDN_DISPLAYED) is O.DISPLAYED
    assert delivery.next_outgoing(O.DISPLAYED, X.IMDN_DELIVERED) is O.DISPLAYED
    assert delivery.next_outgoing(O.DELIVERED, X.SEND_OK) is O.DELIVERED
    assert delivery.next_outgoing(O.FAILED, X.IMDN_DELIVERED) is O.DELIVERED
    with pytest.raises(IllegalTransition):
        delivery.next_outgoing(O.SENT, X.DISPATCH)


def test_notify_outgoing_only_what_was_asked_and_failures() -> None:
    assert delivery.notify_outgoing(O.QUEUED, O.SENT, frozenset()) is None
    sent = frozenset({RestStatus.SENT})
    assert delivery.notify_outgoing(O.QUEUED, O.SENT, sent) is RestStatus.SENT
    assert delivery.notify_outgoing(O.QUEUED, O.FAILED, frozenset()) is RestStatus.FAILED
    assert delivery.notify_outgoing(O.QUEUED, O.DELIVERED, frozenset()) is None
    only_delivered = frozenset({RestStatus.DELIVERED})
    assert delivery.notify_outgoing(O.SENT, O.DISPLAYED, only_delivered) is RestStatus.DELIVERED
    assert delivery.notify_outgoing(O.DELIVERED, O.DISPLAYED, only_delivered) is None
    delivered = frozenset({RestStatus.DELIVERED, RestStatus.DISPLAYED})
    assert delivery.notify_outgoing(O.QUEUED, O.DELIVERED, delivered) is RestStatus.DELIVERED
    assert delivery.notify_outgoing(O.QUEUED, O.DISPLAYED, delivered) is RestStatus.DISPLAYED
    assert delivery.notify_outgoing(O.QUEUED, O.SENDING, frozenset({RestStatus.SENT})) is None


@pytest.mark.parametrize(
    ("requested", "old", "new", "due"),
    [
        ({Disposition.POSITIVE_DELIVERY}, I.RECEIVED, I.DELIVERED, [ReportKind.DELIVERED]),
        (set(), I.RECEIVED, I.DELIVERED, []),
        ({Disposition.POSITIVE_DELIVERY}, I.DELIVERED, I.DELIVERED, []),
        (
            {Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY},
            I.RECEIVED,
            I.DISPLAYED,
            [ReportKind.DELIVERED, ReportKind.DISPLAYED],
        ),
        ({Disposition.POSITIVE_DELIVERY}, I.DELIVERED, I.DISPLAYED, []),
        ({Disposition.DISPLAY}, I.DELIVERED, I.DISPLAYED, [ReportKind.DISPLAYED]),
        ({Disposition.DISPLAY}, I.DISPLAYED, I.DISPLAYED, []),
    ],
)
def test_reports_due(requested, old, new, due) -> None:
    assert delivery.reports_due(frozenset(requested), old, new) == due


def test_incoming_is_monotonic() -> None:
    assert delivery.next_incoming(I.DISPLAYED, delivery.IncomingEvent.NOTIFIED) is I.DISPLAYED


@pytest.mark.parametrize(
    ("reports", "dispositions"),
    [
        (set(), set()),
        ({RestStatus.SENT}, set()),
        ({RestStatus.DELIVERED}, {Disposition.POSITIVE_DELIVERY, Disposition.NEGATIVE_DELIVERY}),
        (
            {RestStatus.DISPLAYED},
            {Disposition.POSITIVE_DELIVERY, Disposition.NEGATIVE_DELIVERY, Disposition.DISPLAY},
        ),
        ({RestStatus.FAILED}, {Disposition.NEGATIVE_DELIVERY}),
    ],
)
def test_dispositions_for(reports, dispositions) -> None:
    assert dispositions_for(frozenset(reports)) == frozenset(dispositions)


S = one2one.SessionState
E = one2one.SessionEvent


@pytest.mark.parametrize(
    ("outgoing", "new", "event", "kind"),
    [
        (True, S.CONNECTED, E.MEDIA_UP, ChatEventType.ACCEPTED),
        (False, S.CONNECTED, E.MEDIA_UP, None),
        (True, S.DECLINED, E.PEER_DECLINED, ChatEventType.DECLINED),
        (False, S.DECLINED, E.RING_TIMEOUT, ChatEventType.SESSION_CANCELLED),
        (False, S.DECLINED, E.APP_END, None),
        (True, S.FAILED, E.SETUP_FAILED, ChatEventType.FAILED),
        (True, S.FAILED, E.RESTART, ChatEventType.FAILED),
        (True, S.CANCELLED, E.APP_END, None),
        (False, S.CANCELLED, E.PEER_CANCEL, ChatEventType.SESSION_CANCELLED),
        (False, S.ENDED, E.PEER_END, ChatEventType.SESSION_ENDED),
        (True, S.ENDED, E.RESTART, ChatEventType.SESSION_ENDED),
        (True, S.ENDED, E.APP_END, None),
        (False, S.ACCEPTING, E.APP_ACCEPT, None),
    ],
)
def test_event_for(outgoing, new, event, kind) -> None:
    assert one2one.event_for(outgoing, new, event) is kind


@pytest.mark.parametrize(
    ("status", "event"),
    [(486, E.PEER_DECLINED), (603, E.PEER_DECLINED), (480, E.SETUP_FAILED), (408, E.SETUP_FAILED)],
)
def test_failure_event(status, event) -> None:
    assert one2one.failure_event(status) is event
