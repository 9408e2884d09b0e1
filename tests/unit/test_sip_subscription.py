"""Subscription state tables and headers (RFC 6665 §4, §8.2; RFC 3515 §2.4.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.errors import CodecError
from sip.subscription import (
    NOTIFIER_TRANSITIONS,
    SUBSCRIBER_TRANSITIONS,
    NotifierEvent,
    NotifierState,
    StateMachine,
    SubscriberEvent,
    SubscriberState,
    SubscriptionError,
    SubscriptionState,
    parse_event,
    parse_subscription_state,
    refer_progress,
    refresh_delay,
)


@pytest.mark.parametrize(
    ("value", "parsed", "text"),
    [
        ("active;expires=600", SubscriptionState("active", 600), "active;expires=600"),
        ("pending", SubscriptionState("pending"), "pending"),
        (
            "terminated;reason=noresource",
            SubscriptionState("terminated", reason="noresource"),
            "terminated;reason=noresource",
        ),
        (
            "Terminated ; Reason=Timeout ; retry-after=30",
            SubscriptionState("terminated", reason="timeout", retry_after=30),
            "terminated;reason=timeout;retry-after=30",
        ),
    ],
)
def test_subscription_state_header(value: str, parsed: SubscriptionState, text: str) -> None:
    assert parse_subscription_state(value) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize("value", ["", "active;expires=soon", "act ive"])
def test_bad_subscription_state(value: str) -> None:
    with pytest.raises(CodecError, match="invalid Subscription-State"):
        parse_subscription_state(value)


def test_event_header() -> None:
    assert parse_event("conference") == ("conference", None)
    assert parse_event("refer;id=93809824") == ("refer", "93809824")
    with pytest.raises(CodecError, match="invalid Event header"):
        parse_event(";id=1")


def test_refresh_before_expiry() -> None:
    assert refresh_delay(600) == 570
    assert refresh_delay(3) == 1.5
    assert 0 < refresh_delay(1) < 1


def test_refer_progress_sipfrag() -> None:
    assert refer_progress(b"SIP/2.0 180 Ringing\r\n").status == 180
    with pytest.raises(CodecError):
        refer_progress(b"garbage line\r\n")


def test_subscriber_lifecycle() -> None:
    m = StateMachine(SUBSCRIBER_TRANSITIONS, SubscriberState.SUBSCRIBING, "c1")
    assert m.handle(SubscriberEvent.ACCEPTED) is SubscriberState.ACCEPTED
    assert m.handle(SubscriberEvent.NOTIFY_PENDING) is SubscriberState.PENDING
    assert m.handle(SubscriberEvent.NOTIFY_ACTIVE) is SubscriberState.ACTIVE
    assert m.handle(SubscriberEvent.REFRESHED) is SubscriberState.ACTIVE
    assert m.handle(SubscriberEvent.UNSUBSCRIBE) is SubscriberState.UNSUBSCRIBING
    assert m.handle(SubscriberEvent.NOTIFY_TERMINATED) is SubscriberState.TERMINATED
    with pytest.raises(SubscriptionError):
        m.handle(SubscriberEvent.NOTIFY_ACTIVE)  # a NOTIFY after the end gets 481


def test_notify_before_2xx_is_allowed() -> None:
    m = StateMachine(SUBSCRIBER_TRANSITIONS, SubscriberState.SUBSCRIBING, "c2")
    assert m.handle(SubscriberEvent.NOTIFY_ACTIVE) is SubscriberState.ACTIVE
    assert m.handle(SubscriberEvent.ACCEPTED) is SubscriberState.ACTIVE


@pytest.mark.parametrize("state", list(SubscriberState))
@pytest.mark.parametrize("event", list(SubscriberEvent))
def test_every_subscriber_pair(state: SubscriberState, event: SubscriberEvent) -> None:
    m = StateMachine(SUBSCRIBER_TRANSITIONS, state, "x")
    expected = SUBSCRIBER_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(SubscriptionError):
            m.handle(event)
        assert m.state is state
    else:
        assert m.handle(event) is expected


@pytest.mark.parametrize("state", list(NotifierState))
@pytest.mark.parametrize("event", list(NotifierEvent))
def test_every_notifier_pair(state: NotifierState, event: NotifierEvent) -> None:
    m = StateMachine(NOTIFIER_TRANSITIONS, state, "x")
    expected = NOTIFIER_TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(SubscriptionError):
            m.handle(event)
    else:
        assert m.handle(event) is expected
    # whatever happened, every path can still end the subscription
    assert m.handle(NotifierEvent.TERMINATE) is NotifierState.TERMINATED


@given(st.lists(st.sampled_from(list(SubscriberEvent)), max_size=12))
def test_any_event_sequence_follows_the_table(events: list[SubscriberEvent]) -> None:
    m = StateMachine(SUBSCRIBER_TRANSITIONS, SubscriberState.SUBSCRIBING, "h")
    for event in events:
        before = m.state
        expected = SUBSCRIBER_TRANSITIONS.get((before, event))
        if expected is None:
            with pytest.raises(SubscriptionError):
                m.handle(event)
            assert m.state is before
        else:
            assert m.handle(event) is expected
        if before is SubscriberState.TERMINATED:
            assert m.state is SubscriberState.TERMINATED  # absorbing
