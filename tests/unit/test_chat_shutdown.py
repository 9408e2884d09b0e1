"""Graceful shutdown of chat (bridge.chat.shutdown): apps told, then the wire per state.

The chat service runs over SQLite with the recording notifier and the signalling fake;
``ChatBridge.shutdown`` gets the legs a real adapter would hold (``live_legs``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bridge.chat.model import ADHOC, Invitee, LegId, NewGroup, NewSession, RestStatus
from bridge.chat.ports import SessionAccepted
from bridge.chat.shutdown import RINGING_STATUS, SHUTDOWN_REASON
from state.db import Database
from tests.fakes.chat_world import A, B, C, World, make_world
from tests.unit.test_chat_service import EVENT, STATUS, incoming_session, text


@pytest.fixture
async def db(tmp_path: Any) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def world(db: Database) -> Any:
    w = await make_world(db)
    yield w
    await w.chat.stop()


def legs(w: World, name: str) -> list[LegId]:
    return [c.args[0] for c in w.sip.named(name)]


async def test_each_state_gets_its_event_and_its_wire_effect(world: World) -> None:
    for user in (A, B):
        await world.subscribe(user)
    # A -> B connected, A -> C still inviting (with a message queued), B ringing from A
    up, _ = await world.chat.confirmed.create_session(A, B, NewSession(subject="up"))
    assert up.leg is not None
    await world.chat.events.handle_event(SessionAccepted(up.leg))
    calling, _ = await world.chat.confirmed.create_session(A, C, NewSession(subject="calling"))
    assert calling.leg is not None
    await world.chat.messages.send_message(A, C, calling.id, text("queued", RestStatus.DELIVERED))
    ringing = await incoming_session(world)
    assert ringing.leg is not None
    before = len(world.notes(A, EVENT))

    report = await world.chat.shutdown([up.leg, calling.leg, ringing.leg, LegId("leg-unknown")])
    await world.settle()

    assert report.sessions_ended == 3 and report.wire_failures == 0
    assert legs(world, "end_session") == [up.leg]
    assert legs(world, "cancel_session") == [calling.leg]
    assert [c.args for c in world.sip.named("reject_session")] == [(ringing.leg, RINGING_STATUS)]
    told = {(n["sessionId"], n["eventType"]) for n in world.notes(A, EVENT)[before:]}
    assert told == {(up.id, "SessionEnded"), (calling.id, "Failed")}
    assert [n["eventType"] for n in world.notes(B, EVENT)] == ["SessionCancelled"]
    assert [n["status"] for n in world.notes(A, STATUS)] == ["Failed"]  # the queued message
    for user, other, cs in ((A, B, up), (A, C, calling), (B, A, ringing)):
        ended = await world.chat.confirmed.get_session(user, other, cs.id)
        assert ended.end_reason == SHUTDOWN_REASON and ended.ended_at is not None

    # a second pass (or a peer's BYE that crossed ours) finds nothing left to end
    again = await world.chat.shutdown([up.leg, calling.leg, ringing.leg])
    assert again.sessions_ended == 0
    assert len(world.sip.named("end_session")) == 1


async def test_group_and_implicit_sessions(world: World) -> None:
    await world.subscribe(A, adhoc=True)
    group, _ = await world.chat.groups.create(A, NewGroup((Invitee(B), Invitee(C)), "team"))
    (start,) = world.sip.named("start_group")
    await world.chat.messages.send_message(A, B, ADHOC, text("adhoc one"))
    (adhoc_start,) = world.sip.named("start_session")
    before = len(world.notes(A, EVENT))

    report = await world.chat.shutdown([start.args[0], adhoc_start.args[0]])
    await world.settle()

    assert report.sessions_ended == 2
    # the group leg never joined: CANCEL, Failed; the implicit one: CANCEL, nothing told
    assert legs(world, "cancel_session") == [start.args[0], adhoc_start.args[0]]
    events = world.notes(A, EVENT)[before:]
    assert [(n["sessionId"], n["eventType"]) for n in events] == [(group.id, "Failed")]
    # the adhoc message is not failed: the next start sends it again (bridge.chat.recovery)
    assert [n for n in world.notes(A, STATUS) if n["status"] == "Failed"] == []


async def test_a_connected_group_member_leaves(world: World) -> None:
    await world.subscribe(A)
    await world.chat.groups.create(A, NewGroup((Invitee(B),), "pair"))
    (start,) = world.sip.named("start_group")
    await world.chat.events.handle_event(SessionAccepted(start.args[0]))
    before = len(world.notes(A, EVENT))
    await world.chat.shutdown([start.args[0]])
    await world.settle()
    assert legs(world, "leave_group") == [start.args[0]]
    assert [n["eventType"] for n in world.notes(A, EVENT)[before:]] == ["SessionEnded"]
