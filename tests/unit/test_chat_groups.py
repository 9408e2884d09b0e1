"""Group chat use cases end to end: three users of one bridge over the loopback focus."""

from __future__ import annotations

import asyncio

import pytest

from bridge.chat import recovery
from bridge.chat.model import (
    Invitee,
    LegId,
    NewGroup,
    NewSession,
    OutgoingText,
    ParticipantStatus,
    RestStatus,
)
from bridge.chat.ports import IncomingGroupInvitation, SignallingError
from bridge.errors import Conflict, NotFound, PolicyViolation
from bridge.ids import UserUri
from state.db import Database
from tests.fakes.chat_world import A, B, C, World, make_world
from tests.fakes.signalling import LoopbackSignalling

EVENT = "chatEventNotification"
GINVITE = "groupChatSessionInvitationNotification"
PSTATUS = "chatParticipantStatusNotification"
MESSAGE = "chatMessageNotification"
STATUS = "chatMessageStatusNotification"
D = UserUri("tel:+15551230004")
P = ParticipantStatus


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def world(db):
    w = await make_world(db, LoopbackSignalling(), chat_group_max_size=4)
    for user in (A, B, C, D):
        await w.subscribe(user)
    yield w
    await w.chat.stop()


def text(body: str = "hi all", *reports: RestStatus) -> OutgoingText:
    return OutgoingText(body, frozenset(reports))


async def started(w: World, subject: str = "Trip"):
    new = NewGroup((Invitee(B, "Bob"), Invitee(C, "Carol")), subject, "g1", "Alice")
    cs, created = await w.chat.groups.create(A, new)
    assert created
    await w.settle()
    return cs


def invitation(w: World, user: UserUri) -> dict:
    (note,) = w.notes(user, GINVITE)
    return note


async def test_create_invites_and_succeeds(world: World) -> None:
    cs = await started(world)
    assert cs.id.startswith("g-")
    (call,) = world.sip.named("start_group")
    assert call.args[2] == world.settings.conference_factory_uri
    assert [i.address for i in call.args[3]] == [B, C] and call.kwargs["subject"] == "Trip"
    (ok,) = world.notes(A, EVENT)
    assert ok["eventType"] == "Successful" and ok["sessionId"] == cs.id
    assert ok["link"][0]["rel"] == "GroupChatSessionInformation"
    got, people = await world.chat.groups.get(A, cs.id)
    assert got.state == "connected" and got.peer.startswith("sip:conf-")
    assert [(p.address, p.status, p.is_originator) for p in people] == [
        (A, P.CONNECTED, True),
        (C, P.INVITED, False),
        (B, P.INVITED, False),
    ]
    note = invitation(world, B)
    assert note["subject"] == "Trip" and note["originatorAddress"] == A
    assert note["sessionId"].startswith("g-")
    rels = [link["rel"] for link in note["link"]]
    assert rels == [
        "GroupChatSessionInformation",
        "ParticipantInformationStatus",
        "ParticipantInformation",
    ]
    assert note["link"][1]["href"].endswith("/participants/tel%3A%2B15551230002/status")
    # the whole group as the invitee sees it, its own entry Invited
    assert {p["address"]: p["status"] for p in note["participant"]} == {
        A: "Connected",
        C: "Invited",
        B: "Invited",
    }
    # replayed correlator
    again, created = await world.chat.groups.create(
        A, NewGroup((Invitee(B),), client_correlator="g1")
    )
    assert not created and again.id == cs.id


async def test_accept_messages_reports_and_participant_status(world: World) -> None:
    cs = await started(world)
    b_id = invitation(world, B)["sessionId"]
    c_id = invitation(world, C)["sessionId"]
    with pytest.raises(Conflict):
        await world.chat.groups.send_message(B, b_id, text())
    await world.chat.groups.accept(B, b_id)
    await world.settle()
    (changed,) = world.notes(A, PSTATUS)
    assert changed["participant"] == [
        {
            "address": B,
            "name": "Bob",
            "status": "Connected",
            "link": changed["participant"][0]["link"],
        }
    ]
    assert [link["rel"] for link in changed["participant"][0]["link"]] == [
        "ParticipantInformation",
        "ParticipantInformationStatus",
    ]
    b_cs, _ = await world.chat.groups.get(B, b_id)
    assert b_cs.state == "connected"
    msg, _ = await world.chat.groups.send_message(
        A, cs.id, text("hello", RestStatus.DELIVERED, RestStatus.DISPLAYED)
    )
    await world.settle()
    (got,) = world.notes(B, MESSAGE)
    assert got["senderAddress"] == A and got["sessionId"] == b_id
    assert got["link"][0]["href"].endswith(f"/group/{b_id}/messages/{msg.id}/status")
    assert not world.notes(C, MESSAGE)  # not yet accepted: nothing relayed
    # "delivered" IMDN when the notification reaches B's app, back to A through the focus
    (n,) = world.notifier.of(B, MESSAGE)
    await world.notifier.deliver(n)
    await world.settle()
    assert await world.chat.groups.get_message_status(A, cs.id, msg.id) is RestStatus.DELIVERED
    await world.chat.groups.report_message(B, b_id, msg.id, RestStatus.DISPLAYED)
    await world.settle()
    assert await world.chat.groups.get_message_status(A, cs.id, msg.id) is RestStatus.DISPLAYED
    statuses = [s["status"] for s in world.notes(A, STATUS)]
    assert statuses == ["Delivered", "Displayed"]
    assert world.notes(A, STATUS)[0]["link"][0]["href"].endswith(
        f"/group/{cs.id}/messages/{msg.id}"
    )
    got_msg = await world.chat.groups.get_message(B, b_id, msg.id)
    assert got_msg.peer == A and got_msg.text == "hello"
    with pytest.raises(NotFound):
        await world.chat.groups.get_message(B, c_id, msg.id)
    # C declines: A and B hear it
    await world.chat.groups.leave(C, c_id)
    await world.settle()
    assert world.notes(B, PSTATUS)[-1]["participant"][0]["status"] == "Declined"
    assert world.notes(A, PSTATUS)[-1]["participant"][0]["address"] == C
    c_cs, _ = await world.chat.groups.get(C, c_id)
    assert c_cs.state == "declined"
    assert world.sip.named("reject_session")[-1].args[1] == 603
    with pytest.raises(Conflict):
        await world.chat.groups.send_message(C, c_id, text())


async def test_leave_remove_and_conference_end(world: World) -> None:
    cs = await started(world)
    b_id = invitation(world, B)["sessionId"]
    c_id = invitation(world, C)["sessionId"]
    await world.chat.groups.accept(B, b_id)
    await world.chat.groups.accept(C, c_id)
    await world.settle()
    with pytest.raises(PolicyViolation) as info:
        await world.chat.groups.remove(B, b_id, C)
    assert info.value.message_id == "POL0001"
    with pytest.raises(NotFound):
        await world.chat.groups.remove(A, cs.id, D)
    await world.chat.groups.remove(A, cs.id, C)
    await world.settle()
    (ended,) = world.notes(C, EVENT)
    assert ended["eventType"] == "SessionEnded" and ended["sessionId"] == c_id
    assert world.notes(B, PSTATUS)[-1]["participant"][0]["status"] == "Disconnected"
    await world.chat.groups.leave(B, b_id)
    await world.settle()
    assert (
        world.sip.named("leave_group")[-1].args[0] == (await world.chat.groups.get(B, b_id))[0].leg
    )
    # A alone: the focus ends the conference
    (a_end,) = world.notes(A, EVENT)[1:]
    assert a_end["eventType"] == "SessionEnded"
    with pytest.raises(Conflict):
        await world.chat.groups.leave(B, b_id)


async def test_add_members_and_size_limit(world: World) -> None:
    cs = await started(world)
    added = await world.chat.groups.add(A, cs.id, [Invitee(B), Invitee(A), Invitee(D, "Dan")])
    assert [p.address for p in added] == [D]  # B already invited, A is the caller
    await world.settle()
    assert invitation(world, D)["originatorAddress"] == A
    (call,) = world.sip.named("invite_participants")
    assert [i.address for i in call.args[1]] == [D]
    with pytest.raises(PolicyViolation) as info:
        await world.chat.groups.add(A, cs.id, [Invitee(UserUri("tel:+15551230005"))])
    assert info.value.message_id == "POL0003"
    with pytest.raises(PolicyViolation):
        await world.chat.groups.create(
            A, NewGroup(tuple(Invitee(UserUri(f"tel:+1555000000{i}")) for i in range(4)))
        )
    assert await world.chat.groups.add(A, cs.id, [Invitee(B)]) == []


async def test_invitation_without_subscription_and_ring_timeout(db) -> None:
    w = await make_world(db, LoopbackSignalling(), chat_ringing_timeout=0.05)
    try:
        await w.subscribe(A)
        await w.subscribe(B, confirmed=False, adhoc=False)  # 1-1 flags do not matter
        await w.chat.groups.create(A, NewGroup((Invitee(B), Invitee(C))))
        await w.settle()
        assert [status for _, status in w.sip.rejected] == [480]  # C: no subscription
        b_id = invitation(w, B)["sessionId"]
        await asyncio.sleep(0.1)
        await w.settle()
        cs, _ = await w.chat.groups.get(B, b_id)
        assert cs.state == "declined"
        (cancelled,) = w.notes(B, EVENT)
        assert cancelled["eventType"] == "SessionCancelled"
        assert w.sip.named("reject_session")[-1].args[1] == 603
    finally:
        await w.chat.stop()


async def test_start_failure_fails_the_group(world: World) -> None:
    world.sip.fail["start_group"] = SignallingError("stack down")
    cs, _ = await world.chat.groups.create(A, NewGroup((Invitee(B),)))
    assert cs.state == "failed"
    (failed,) = world.notes(A, EVENT)
    assert failed["eventType"] == "Failed"


async def test_promote_a_connected_session(world: World) -> None:
    one, _ = await world.chat.confirmed.create_session(A, B, NewSession())
    await world.settle()
    (inv,) = world.notes(B, "chatSessionInvitationNotification")
    await world.chat.confirmed.accept_session(B, A, inv["sessionId"])
    await world.settle()
    grp, created = await world.chat.groups.promote(
        A, B, one.id, NewGroup((Invitee(C), Invitee(B)), "Now three")
    )
    await world.settle()
    assert created and grp.id.startswith("g-")
    (call,) = world.sip.named("start_group")
    assert [i.address for i in call.args[3]] == [B, C]
    assert (await world.chat.confirmed.get_session(A, B, one.id)).state == "ended"
    assert invitation(world, B)["subject"] == "Now three"
    with pytest.raises(Conflict):
        await world.chat.groups.promote(A, B, one.id, NewGroup((Invitee(C),)))


async def test_recovery_ends_live_groups(db) -> None:
    w = await make_world(db, LoopbackSignalling())
    await w.subscribe(A)
    await w.subscribe(B)
    cs = await started(w)
    b_id = invitation(w, B)["sessionId"]
    w.sip.answer_invites = False
    queued_group, _ = await w.chat.groups.create(A, NewGroup((Invitee(C),)))
    msg, _ = await w.chat.groups.send_message(A, queued_group.id, text("early"))
    await w.chat.core.close()  # crash: no orderly end
    w2 = await make_world(db, LoopbackSignalling())
    try:
        a_events = [n["eventType"] for n in w2.notes(A, EVENT)]
        assert sorted(a_events) == ["Failed", "SessionEnded"]
        assert [n["eventType"] for n in w2.notes(B, EVENT)] == ["SessionCancelled"]
        assert (await w2.chat.groups.get(A, cs.id))[0].state == "ended"
        assert (await w2.chat.groups.get(B, b_id))[0].state == "cancelled"
        status = await w2.chat.groups.get_message_status(A, queued_group.id, msg.id)
        assert status is RestStatus.FAILED
        report = await recovery.recover(w2.chat.core, w2.chat.adhoc, w2.chat.messages)
        assert report.sessions_closed == 0
    finally:
        await w2.chat.stop()


async def test_group_events_on_unknown_legs(world: World) -> None:
    await world.chat.events.handle_event(
        IncomingGroupInvitation(LegId("x-1"), B, "sip:conf-x@ims.test", inviter=C)
    )
    note = invitation(world, B)
    assert note["originatorAddress"] == C
    cs, people = await world.chat.groups.get(B, note["sessionId"])
    assert cs.state == "invited" and cs.peer == "sip:conf-x@ims.test"
    # the inviter (not in any list) is stored as a member, plus the user's own entry
    assert {(p.address, p.status) for p in people} == {(B, P.INVITED), (C, P.CONNECTED)}
