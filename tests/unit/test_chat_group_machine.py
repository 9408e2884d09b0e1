"""The group participation machine: every (state, event), terminal states, emissions, REST view."""

from __future__ import annotations

import itertools

import pytest

from bridge.chat import group
from bridge.chat.group import GroupEvent as V
from bridge.chat.group import GroupState as G
from bridge.chat.machine import IllegalTransition
from bridge.chat.model import ChatEventType, ParticipantStatus
from bridge.errors import Conflict

EXPECTED = {
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


@pytest.mark.parametrize(("state", "event"), list(itertools.product(G, V)))
def test_every_pair_is_legal_or_raises(state: G, event: V) -> None:
    want = EXPECTED.get((state, event))
    if want is None:
        assert not group.accepts(state, event)
        with pytest.raises(IllegalTransition) as info:
            group.next_state(state, event)
        assert isinstance(info.value, Conflict)
        assert info.value.state is state and info.value.event is event
    else:
        assert group.accepts(state, event)
        assert group.next_state(state, event) is want


def test_table_is_exactly_the_documented_one() -> None:
    assert group.TRANSITIONS == EXPECTED


@pytest.mark.parametrize("state", sorted(group.TERMINAL, key=lambda s: s.value))
def test_terminal_states_have_no_way_out(state: G) -> None:
    assert not any(group.accepts(state, e) for e in V)


def test_every_state_has_a_rest_status() -> None:
    assert set(group.REST_STATUS) == set(G)
    assert group.REST_STATUS[G.CONNECTED] is ParticipantStatus.CONNECTED
    assert group.REST_STATUS[G.DECLINED] is ParticipantStatus.DECLINED
    assert group.REST_STATUS[G.LEFT] is ParticipantStatus.DISCONNECTED
    assert group.LIVE | group.TERMINAL == set(G) and not group.LIVE & group.TERMINAL


@pytest.mark.parametrize(
    ("creator", "old", "event", "kind"),
    [
        (True, G.JOINING, V.MEDIA_UP, ChatEventType.SUCCESSFUL),
        (True, G.JOINING, V.SETUP_FAILED, ChatEventType.FAILED),
        (True, G.JOINING, V.RESTART, ChatEventType.FAILED),
        (True, G.JOINING, V.APP_LEAVE, None),
        (False, G.ACCEPTING, V.MEDIA_UP, None),
        (False, G.INVITED, V.APP_ACCEPT, None),
        (False, G.INVITED, V.APP_DECLINE, None),
        (False, G.INVITED, V.RING_TIMEOUT, ChatEventType.SESSION_CANCELLED),
        (False, G.INVITED, V.PEER_CANCEL, ChatEventType.SESSION_CANCELLED),
        (False, G.INVITED, V.RESTART, ChatEventType.SESSION_CANCELLED),
        (False, G.ACCEPTING, V.SETUP_FAILED, ChatEventType.FAILED),
        (False, G.ACCEPTING, V.PEER_END, ChatEventType.SESSION_ENDED),
        (True, G.CONNECTED, V.PEER_END, ChatEventType.SESSION_ENDED),
        (False, G.CONNECTED, V.RESTART, ChatEventType.SESSION_ENDED),
        (True, G.CONNECTED, V.APP_LEAVE, None),
    ],
)
def test_event_for(creator: bool, old: G, event: V, kind: ChatEventType | None) -> None:
    assert group.event_for(creator, old, event) is kind
