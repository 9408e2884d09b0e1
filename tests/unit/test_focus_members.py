"""The member status machine of the focus and what each status maps to (docs/group-chat.md
item 3; sip.conference_view.participant_status)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.focus.members import TRANSITIONS, IllegalTransition, Member, MemberEvent, MemberStatus
from sip import conference
from sip.conference import ConferenceInfo, ElementState
from sip.conference_view import ConferenceView, ParticipantStatus, participant_status

EXPECTED = {
    MemberStatus.DIALING_OUT: ParticipantStatus.INVITED,
    MemberStatus.CONNECTED: ParticipantStatus.CONNECTED,
    MemberStatus.DEPARTED: ParticipantStatus.DISCONNECTED,
    MemberStatus.BOOTED: ParticipantStatus.DISCONNECTED,
    MemberStatus.DECLINED: ParticipantStatus.DECLINED,
    MemberStatus.FAILED: ParticipantStatus.FAILED,
}
URIS = ("sip:a@h", "sip:b@h", "sip:c@h")


def test_every_status_maps_to_its_rest_status() -> None:
    for (_, event), status in TRANSITIONS.items():
        member = Member("sip:x@h", "sip:x@h", status=status)
        member.cause = 603 if status is MemberStatus.DECLINED else 486
        doc = conference.parse(
            conference.serialize(ConferenceInfo("sip:conf@h", users=(member.user(),)))
        )
        assert doc.users is not None
        assert participant_status(doc.users[0]) is EXPECTED[status], (event, status)


def test_illegal_event_raises() -> None:
    member = Member("sip:x@h", "sip:x@h")
    with pytest.raises(IllegalTransition):
        member.handle(MemberEvent.LEAVE)
    assert member.status is MemberStatus.DIALING_OUT


@given(
    st.lists(
        st.tuples(
            st.sampled_from(URIS),
            st.sampled_from(list(MemberEvent)),
            st.sampled_from([None, 408, 486, 500]),
        ),
        max_size=40,
    )
)
def test_any_event_sequence_keeps_the_table_legal(
    events: list[tuple[str, MemberEvent, int | None]],
) -> None:
    members = {uri: Member(uri, uri) for uri in URIS}
    version = 1
    view, update = ConferenceView().apply(
        ConferenceInfo(
            "sip:conf@h", version=version, users=tuple(m.user() for m in members.values())
        )
    )
    assert update.applied
    for uri, event, cause in events:
        member = members[uri]
        before = member.status
        if (before, event) not in TRANSITIONS:
            with pytest.raises(IllegalTransition):
                member.handle(event, cause=cause)
            assert member.status is before
            continue
        member.handle(event, cause=cause)
        assert member.status is TRANSITIONS[(before, event)]
        version += 1
        doc = ConferenceInfo(
            "sip:conf@h", state=ElementState.PARTIAL, version=version, users=(member.user(),)
        )
        view, update = view.apply(conference.parse(conference.serialize(doc)))
        assert update.applied and not update.stale and not update.resync_needed
        assert view.version == version
        for key, m in members.items():
            assert participant_status(view.users[key]) is EXPECTED[m.status]
