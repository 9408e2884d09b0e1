"""conference-info (RFC 4575) codec, participant mapping (docs/group-chat.md) and ConferenceView."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from sip import conference
from sip.conference import (
    ConferenceDescription,
    ConferenceInfo,
    ConferenceState,
    DisconnectionMethod,
    ElementState,
    Endpoint,
    EndpointStatus,
    Execution,
    JoiningMethod,
    Media,
    MediaStatus,
    User,
)
from sip.conference_view import (
    ChangeKind,
    ConferenceView,
    ParticipantStatus,
    ViewUpdate,
    participant_status,
)
from sip.errors import CodecError
from tests.strategies import mutated

DM = DisconnectionMethod
PS = ParticipantStatus
DISC = EndpointStatus.DISCONNECTED
FIXTURES = Path(__file__).parent.parent / "fixtures" / "codecs" / "conference"
SCHEMA = etree.XMLSchema(
    etree.parse(str(Path(__file__).parent.parent / "fixtures/xsd/conference-info.xsd"))
)
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)
UTC = timezone.utc
CONF = "sip:chat-7f3a@conf.ims.example.net"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def doc(name: str) -> ConferenceInfo:
    return conference.parse(load(name))


def assert_valid(data: bytes) -> None:
    SCHEMA.assertValid(etree.fromstring(data, SAFE))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_samples_and_their_reserialization_are_schema_valid(name: str) -> None:
    if "nonstandard" not in name:  # that one carries the RCS deviations on purpose
        assert_valid(load(name))
        assert_valid(conference.serialize(doc(name)))
    assert conference.parse(conference.serialize(doc(name))) == doc(name)


def test_canonical_round_trip() -> None:
    data = load("focus_full_canonical.xml")
    info = conference.parse(data)
    assert conference.serialize(info) == data
    alice, bob = info.users or ()
    assert alice.roles == ("chairman", "participant")
    assert alice.endpoints[0].media == (
        Media("msrp1", "chat", "message", "1", "0", MediaStatus.SENDRECV),
    )
    assert bob.endpoints[0].referred == Execution(
        datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC), "invited by chairman", "tel:+15551230001"
    )
    assert info.conference_state == ConferenceState(2, True, False)
    assert info.description == ConferenceDescription(
        "Project X", "Kick-off & planning", "bring slides", 20
    )


def test_kamailio_full_state() -> None:
    info = doc("kamailio_full.xml")
    assert info.entity == CONF and info.state is ElementState.FULL and info.version == 1
    assert info.description == ConferenceDescription(subject="Team lunch", maximum_user_count=10)
    assert info.users_state is None
    users = info.users or ()
    assert [u.entity for u in users] == [
        "sip:+15551230001@ims.example.net;user=phone",
        "tel:+15551230002",
        "tel:+15551230003",
    ]
    assert users[0].endpoints[0].joining_method is JoiningMethod.DIALED_OUT
    assert [participant_status(u) for u in users] == [
        PS.CONNECTED,
        PS.INVITED,
        PS.INVITED,
    ]


def test_partial_with_603_reason() -> None:
    info = doc("rcs_partial_v3_declined_603.xml")
    (user,) = info.users or ()
    endpoint = user.endpoints[0]
    assert endpoint.state is ElementState.PARTIAL
    assert endpoint.disconnection_method is DM.FAILED
    assert endpoint.disconnection_info == Execution(
        datetime(2024, 5, 1, 8, 0, 9, 500000, tzinfo=UTC), 'SIP;cause=603;text="Decline"'
    )
    assert participant_status(user) is PS.DECLINED


def test_nonstandard_statuses_yourown_and_misplaced_count() -> None:
    info = doc("rcs_nonstandard_yourown.xml")
    assert info.state is ElementState.FULL
    assert info.description == ConferenceDescription(subject="weekend", maximum_user_count=100)
    assert info.conference_state == ConferenceState(user_count=3)
    own, declined, busy, anonymous = info.users or ()
    assert own.yourown and not declined.yourown
    assert declined.endpoints[0].status is EndpointStatus.DECLINED
    assert busy.endpoints[0].status is EndpointStatus.BUSY
    assert anonymous.entity is None and anonymous.display_text == "no entity"
    assert participant_status(declined) is PS.DECLINED
    assert participant_status(busy) is PS.DISCONNECTED
    assert participant_status(anonymous) is None
    assert b'yourown="true"' in conference.serialize(info)


def _user(
    status: EndpointStatus, method: DisconnectionMethod | None = None, reason: str | None = None
) -> User:  # noqa: E501
    info = None if reason is None else Execution(reason=reason)
    return User(
        "tel:+1",
        endpoints=(
            Endpoint("tel:+1", status=status, disconnection_method=method, disconnection_info=info),
        ),
    )  # noqa: E501


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (_user(EndpointStatus.ON_HOLD), PS.CONNECTED),
        (_user(EndpointStatus.MUTED_VIA_FOCUS), PS.CONNECTED),
        (_user(EndpointStatus.ALERTING), PS.INVITED),
        (_user(EndpointStatus.DIALING_IN), PS.INVITED),
        (_user(DISC, DM.DEPARTED), PS.DISCONNECTED),
        (_user(DISC, DM.BOOTED), PS.DISCONNECTED),
        (_user(DISC, DM.BUSY), PS.DISCONNECTED),
        (_user(DISC, DM.FAILED), PS.FAILED),
        (_user(DISC, DM.FAILED, "SIP;cause=486"), PS.FAILED),
        (_user(DISC, DM.FAILED, "603 Decline"), PS.DECLINED),
        (_user(DISC, DM.FAILED), PS.FAILED),
        (_user(EndpointStatus.DISCONNECTING), PS.DISCONNECTED),
        (_user(EndpointStatus.DISCONNECTED), PS.DISCONNECTED),
        (User("tel:+1", ElementState.DELETED), PS.DISCONNECTED),
        (User("tel:+1", endpoints=(Endpoint("a"), Endpoint("b", status=EndpointStatus.CONNECTED))), PS.CONNECTED),  # noqa: E501
    ],
)  # fmt: skip
def test_participant_status_table(user: User, expected: ParticipantStatus) -> None:
    assert participant_status(user) is expected


ROOT = b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:c@x"'
USERS = ROOT + b"><users><user entity='a'><endpoint>"
BROKEN = [
    (b"<conference-info/>", "conference-info: root element is not conference-info in urn:ietf:params:xml:ns:conference-info"),  # noqa: E501
    (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info"/>', "conference-info: missing entity"),  # noqa: E501
    (ROOT + b' state="half"/>', "conference-info: unknown state 'half'"),
    (ROOT + b' version="-1"/>', "conference-info: version is not an unsigned integer"),
    (ROOT + b"><conference-description><maximum-user-count>many</maximum-user-count></conference-description></conference-info>", "conference-info: maximum-user-count is not an unsigned integer"),  # noqa: E501
    (ROOT + b"><conference-state><active>yes</active></conference-state></conference-info>", "conference-info: active is not a boolean"),  # noqa: E501
    (USERS + b"<status>sleeping</status></endpoint></user></users></conference-info>", "conference-info: unknown endpoint status 'sleeping'"),  # noqa: E501
    (USERS + b"<joining-method>teleported</joining-method></endpoint></user></users></conference-info>", "conference-info: unknown joining-method 'teleported'"),  # noqa: E501
    (USERS + b"<disconnection-method>vanished</disconnection-method></endpoint></user></users></conference-info>", "conference-info: unknown disconnection-method 'vanished'"),  # noqa: E501
    (USERS + b"<media/></endpoint></user></users></conference-info>", "conference-info: media without id"),  # noqa: E501
    (USERS + b"<media id='1'><status>loud</status></media></endpoint></user></users></conference-info>", "conference-info: unknown media status 'loud'"),  # noqa: E501
    (USERS + b"<joining-info><when>soon</when></joining-info></endpoint></user></users></conference-info>", "conference-info: joining-info: invalid date-time 'soon'"),  # noqa: E501
    (ROOT + b"><users><user entity='a' yourown='maybe'/></users></conference-info>", "conference-info: yourown is not a boolean"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        conference.parse(data)
    assert str(info.value) == message


def test_yourown_in_a_namespace() -> None:
    data = (
        ROOT
        + b' xmlns:o="urn:oma:x"><users><user entity="a" o:yourown="1"/></users></conference-info>'
    )  # noqa: E501
    (user,) = conference.parse(data).users or ()
    assert user.yourown


# ------------------------------------------------------------------ view


def test_view_follows_full_then_partial_sequence() -> None:
    view = ConferenceView()
    view, update = view.apply(doc("kamailio_full.xml"))
    assert update.applied and not update.resync_needed
    assert [(c.kind, c.entity) for c in update.changes] == [
        (ChangeKind.ADDED, "sip:+15551230001@ims.example.net;user=phone"),
        (ChangeKind.ADDED, "tel:+15551230002"),
        (ChangeKind.ADDED, "tel:+15551230003"),
    ]
    assert view.version == 1
    assert view.description is not None and view.description.subject == "Team lunch"

    view, update = view.apply(doc("rcs_partial_v2_joined.xml"))
    (change,) = update.changes
    assert change.kind is ChangeKind.CHANGED and change.entity == "tel:+15551230002"
    bob = change.user
    assert bob.display_text == "Bob" and bob.state is ElementState.FULL
    assert participant_status(bob) is PS.CONNECTED
    assert bob.endpoints[0].joining_info == Execution(datetime(2024, 5, 1, 10, 0, 3, tzinfo=UTC))
    assert view.description is not None and view.description.subject == "Team lunch"

    view, update = view.apply(doc("rcs_partial_v3_declined_603.xml"))
    (change,) = update.changes
    assert participant_status(change.user) is PS.DECLINED

    view, update = view.apply(doc("rcs_partial_v4_deleted.xml"))
    assert [(c.kind, c.entity) for c in update.changes] == [
        (ChangeKind.ADDED, "sip:+15551230004@ims.example.net;user=phone"),
        (ChangeKind.DELETED, "tel:+15551230003"),
    ]
    assert update.changes[1].user.state is ElementState.DELETED
    assert view.version == 4 and len(view.users) == 3


def test_views_of_one_conference_share_equal_users() -> None:
    # every member's view holds the same <user>s: one copy of each, keys interned
    first, _ = ConferenceView().apply(doc("kamailio_full.xml"))
    second, _ = ConferenceView().apply(doc("kamailio_full.xml"))
    first, _ = first.apply(doc("rcs_partial_v2_joined.xml"))
    second, _ = second.apply(doc("rcs_partial_v2_joined.xml"))
    assert first.users == second.users
    for key, user in first.users.items():
        assert second.users[key] is user
        (other_key,) = (k for k in second.users if k == key)
        assert other_key is key


def test_view_stale_and_gap() -> None:
    view, _ = ConferenceView().apply(doc("kamailio_full.xml"))
    same, update = view.apply(doc("kamailio_full.xml"))
    assert same is view and update == ViewUpdate(applied=False, stale=True)
    same, update = view.apply(doc("rcs_partial_v3_declined_603.xml"))
    assert same is view and update == ViewUpdate(applied=False, resync_needed=True)


def test_view_partial_before_any_full_needs_resync() -> None:
    view = ConferenceView()
    same, update = view.apply(doc("rcs_partial_v2_joined.xml"))
    assert same is view and update.resync_needed and not update.applied


def test_view_reset_diffs_against_known_users() -> None:
    view, _ = ConferenceView().apply(doc("kamailio_full.xml"))
    view, _ = view.apply(doc("rcs_partial_v2_joined.xml"))
    restarted = view.reset()
    assert restarted.version is None
    view2, update = restarted.apply(doc("kamailio_full.xml"))  # new subscription, version 1 again
    (change,) = update.changes
    assert change.kind is ChangeKind.CHANGED and change.entity == "tel:+15551230002"
    assert view2.version == 1


def test_view_normalize_and_skips() -> None:
    def e164(entity: str) -> str:
        return entity.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]

    view, update = ConferenceView(normalize=e164).apply(doc("rcs_nonstandard_yourown.xml"))
    assert sorted(view.users) == ["+15551230001", "+15551230005", "+15551230006"]
    partial = ConferenceInfo(
        entity=CONF,
        state=ElementState.PARTIAL,
        version=8,
        users=(
            User("tel:+15551230005", ElementState.PARTIAL, roles=("participant",)),
            User(None, ElementState.PARTIAL),
            User("tel:+19999999999", ElementState.DELETED),
        ),
        description=ConferenceDescription(display_text="renamed"),
    )
    view, update = view.apply(partial)
    (change,) = update.changes
    assert change.entity == "+15551230005" and change.user.roles == ("participant",)
    assert change.user.endpoints[0].status is EndpointStatus.DECLINED
    assert view.description == ConferenceDescription("renamed", "weekend", None, 100)


def test_view_partial_users_full_list_and_deleted_conference() -> None:
    view, _ = ConferenceView().apply(doc("kamailio_full.xml"))
    replace_all = ConferenceInfo(
        entity=CONF,
        state=ElementState.PARTIAL,
        version=2,
        users=(User("tel:+15551230002"), User("tel:+1000", ElementState.DELETED)),
        users_state=ElementState.FULL,
    )
    view, update = view.apply(replace_all)
    assert {c.kind for c in update.changes} == {ChangeKind.CHANGED, ChangeKind.DELETED}
    assert list(view.users) == ["tel:+15551230002"]
    gone = ConferenceInfo(entity=CONF, state=ElementState.DELETED, version=3)
    view, update = view.apply(gone)
    assert [c.kind for c in update.changes] == [ChangeKind.DELETED] and view.users == {}


def test_view_partial_without_version_and_endpoint_merging() -> None:
    base = ConferenceInfo(
        entity=CONF,
        users=(
            User(
                "tel:+1",
                endpoints=(
                    Endpoint(
                        "e1",
                        status=EndpointStatus.CONNECTED,
                        joining_info=Execution(reason="r"),
                        media=(Media("m1", type="message"),),
                    ),
                    Endpoint("e2", status=EndpointStatus.CONNECTED),
                ),
            ),
        ),
    )
    view, _ = ConferenceView().apply(base)
    assert view.version is None
    delta = ConferenceInfo(
        entity=CONF,
        state=ElementState.PARTIAL,
        users=(
            User(
                "tel:+1",
                ElementState.PARTIAL,
                endpoints=(
                    Endpoint(
                        "e1",
                        ElementState.PARTIAL,
                        display_text="phone",
                        joining_info=Execution(by="sip:x"),
                        disconnection_info=Execution(reason="bye"),
                        media=(Media("m2"),),
                    ),
                    Endpoint("e2", ElementState.DELETED),
                    Endpoint("e3", ElementState.PARTIAL, status=EndpointStatus.PENDING),
                ),
            ),
        ),
    )
    view, update = view.apply(delta)
    (change,) = update.changes
    e1, e3 = change.user.endpoints
    assert e1.display_text == "phone" and e1.status is EndpointStatus.CONNECTED
    assert e1.joining_info == Execution(reason="r", by="sip:x")
    assert e1.disconnection_info == Execution(reason="bye")
    assert [m.id for m in e1.media] == ["m1", "m2"]
    assert e3 == Endpoint("e3", status=EndpointStatus.PENDING)
    view, update = view.apply(delta)
    assert update.changes == ()  # idempotent delta


# ------------------------------------------------------------------ hypothesis

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
TOKEN = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9+@.;=_-]{0,15}", fullmatch=True)
URI = st.from_regex(r"(sip|tel):[A-Za-z0-9+@.;=_-]{1,15}", fullmatch=True)
STAMP = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1))]),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
EXEC = st.none() | st.builds(Execution, st.none() | STAMP, st.none() | TEXT, st.none() | URI)
STANDARD: list[EndpointStatus] = [
    s for s in EndpointStatus if s not in (EndpointStatus.DECLINED, EndpointStatus.BUSY)
]


def infos(
    statuses: list[EndpointStatus], yourown: st.SearchStrategy[bool]
) -> st.SearchStrategy[ConferenceInfo]:  # noqa: E501
    media = st.builds(
        Media,
        TOKEN,
        st.none() | TEXT,
        st.none() | TOKEN,
        st.none() | TOKEN,
        st.none() | TOKEN,
        st.none() | st.sampled_from(list(MediaStatus)),
    )
    endpoint = st.builds(
        Endpoint,
        entity=st.none() | TOKEN,
        state=st.sampled_from(list(ElementState)),
        display_text=st.none() | TEXT,
        referred=EXEC,
        status=st.none() | st.sampled_from(statuses),
        joining_method=st.none() | st.sampled_from(list(JoiningMethod)),
        joining_info=EXEC,
        disconnection_method=st.none() | st.sampled_from(list(DisconnectionMethod)),
        disconnection_info=EXEC,
        media=st.lists(media, max_size=2).map(tuple),
    )
    user = st.builds(
        User,
        entity=st.none() | URI,
        state=st.sampled_from(list(ElementState)),
        display_text=st.none() | TEXT,
        roles=st.lists(TOKEN, max_size=2).map(tuple),
        endpoints=st.lists(endpoint, max_size=2).map(tuple),
        yourown=yourown,
    )
    return st.builds(
        ConferenceInfo,
        entity=URI,
        state=st.sampled_from(list(ElementState)),
        version=st.none() | st.integers(0, 2**32 - 1),
        description=st.none()
        | st.builds(
            ConferenceDescription,
            st.none() | TEXT,
            st.none() | TEXT,
            st.none() | TEXT,
            st.none() | st.integers(0, 2**32 - 1),
        ),
        conference_state=st.none()
        | st.builds(
            ConferenceState,
            st.none() | st.integers(0, 2**32 - 1),
            st.none() | st.booleans(),
            st.none() | st.booleans(),
        ),
        users=st.none() | st.lists(user, max_size=3).map(tuple),
        users_state=st.none() | st.sampled_from(list(ElementState)),
    ).filter(lambda info: info.users is not None or info.users_state is None)


@given(infos(list(EndpointStatus), st.booleans()))
def test_model_round_trip(info: ConferenceInfo) -> None:
    assert conference.parse(conference.serialize(info)) == info


@given(infos(STANDARD, st.just(False)))
def test_serialized_documents_are_schema_valid(info: ConferenceInfo) -> None:
    assert_valid(conference.serialize(info))


@given(st.lists(infos(list(EndpointStatus), st.booleans()), max_size=4))
def test_view_never_raises_and_tracks_versions(docs: list[ConferenceInfo]) -> None:
    view = ConferenceView()
    for info in docs:
        before = view
        view, update = view.apply(info)
        if not update.applied:
            assert view is before and update.changes == ()
        keys = set(view.users)
        assert all(u.state is ElementState.FULL for u in view.users.values())
        assert {c.entity for c in update.changes if c.kind is not ChangeKind.DELETED} <= keys


SAMPLES = [load(n) for n in sorted(p.name for p in FIXTURES.iterdir())]


@given(st.sampled_from(SAMPLES).flatmap(mutated))
def test_mutations_raise_only_codec_error(data: bytes) -> None:
    try:
        info = conference.parse(data)
    except CodecError:
        return
    ConferenceView().apply(info)
    try:
        assert conference.parse(conference.serialize(info)) == info
    except CodecError as exc:
        assert str(exc) == "conference-info: text contains a character not allowed in XML"
