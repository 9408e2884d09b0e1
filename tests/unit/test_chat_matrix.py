"""Every REST operation and signalling event in every state of a confirmed session.

REST operations either succeed or raise ``Conflict`` (409); signalling events
never raise; the resulting state is the one the ``one2one`` table gives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bridge.chat import one2one
from bridge.chat.model import (
    Composing,
    ComposingState,
    LegId,
    NewSession,
    OutgoingText,
)
from bridge.chat.ports import (
    ComposingReceived,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingEvent,
)
from bridge.errors import Conflict
from bridge.ids import MessageId
from state.db import Database
from tests.fakes.chat_world import A, B, World, make_world

S = one2one.SessionState


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'matrix.db'}")
    await database.migrate()
    yield database
    await database.close()


async def reach(w: World, target: str):
    """A session of the right side in state ``target``; returns (user, peer, session)."""
    if target.startswith("out-"):
        cs, _ = await w.chat.confirmed.create_session(A, B, NewSession())
        assert cs.leg is not None
        user, peer, leg = A, B, cs.leg
        steps: dict[str, list[SignallingEvent]] = {
            "out-inviting": [],
            "out-connected": [SessionAccepted(leg)],
            "out-declined": [SessionFailed(leg, 486)],
            "out-failed": [SessionFailed(leg, 480)],
            "out-ended": [SessionAccepted(leg), SessionEnded(leg)],
        }
        if target == "out-cancelled":
            await w.chat.confirmed.end_session(A, B, cs.id)
        for event in steps.get(target, []):
            await w.chat.events.handle_event(event)
    else:
        leg = LegId(f"in-{target}")
        await w.chat.events.handle_event(IncomingInvitation(leg, B, A))
        note = w.notifier.of(B, "chatSessionInvitationNotification")[-1]
        sid = str(note.body["sessionId"])
        user, peer = B, A
        if target in ("in-accepting", "in-connected", "in-failed"):
            await w.chat.confirmed.accept_session(B, A, sid)
        if target == "in-connected":
            await w.chat.events.handle_event(SessionAccepted(leg))
        if target == "in-failed":
            await w.chat.events.handle_event(SessionFailed(leg, 0, "MSRP"))
        if target == "in-declined":
            await w.chat.confirmed.end_session(B, A, sid)
        if target == "in-cancelled":
            await w.chat.events.handle_event(SessionCancelled(leg))
        cs = await w.chat.confirmed.get_session(B, A, sid)
    cs = await w.chat.confirmed.get_session(user, peer, cs.id)
    expected = target.split("-", 1)[1]
    assert cs.state == expected, (target, cs.state)
    return user, peer, cs


TARGETS = [
    "out-inviting",
    "out-connected",
    "out-declined",
    "out-failed",
    "out-cancelled",
    "out-ended",
    "in-ringing",
    "in-accepting",
    "in-connected",
    "in-declined",
    "in-failed",
    "in-cancelled",
]
REST_OPS = {
    "end": one2one.SessionEvent.APP_END,
    "accept": one2one.SessionEvent.APP_ACCEPT,
    "send": None,
    "compose": None,
}
EVENTS = ["accepted", "declined", "ended", "cancelled", "message", "composing"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", list(REST_OPS))
async def test_rest_operation(db: Database, target: str, op: str) -> None:
    w = await make_world(db)
    try:
        await w.subscribe(A)
        await w.subscribe(B)
        user, peer, cs = await reach(w, target)
        state = S(cs.state)
        call: Callable[[], Awaitable[object]] = {
            "end": lambda: w.chat.confirmed.end_session(user, peer, cs.id),
            "accept": lambda: w.chat.confirmed.accept_session(user, peer, cs.id),
            "send": lambda: w.chat.messages.send_message(user, peer, cs.id, OutgoingText("x")),
            "compose": lambda: w.chat.messages.send_composing(
                user, peer, cs.id, Composing(ComposingState.ACTIVE)
            ),
        }[op]
        event = REST_OPS[op]
        if event is not None:
            allowed = one2one.accepts(state, event)
        elif op == "send":
            allowed = state not in one2one.TERMINAL and state is not S.RINGING
        else:
            allowed = state not in one2one.TERMINAL
        if allowed:
            await call()
        else:
            with pytest.raises(Conflict):
                await call()
        after = S((await w.chat.confirmed.get_session(user, peer, cs.id)).state)
        if event is not None and allowed:
            assert after is one2one.next_state(state, event)
        else:
            assert after is state
    finally:
        await w.chat.stop()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", EVENTS)
async def test_signalling_event(db: Database, target: str, kind: str) -> None:
    w = await make_world(db)
    try:
        await w.subscribe(A)
        await w.subscribe(B)
        user, peer, cs = await reach(w, target)
        assert cs.leg is not None
        leg = cs.leg
        event: SignallingEvent = {  # type: ignore[assignment]
            "accepted": SessionAccepted(leg),
            "declined": SessionFailed(leg, 603, "Decline"),
            "ended": SessionEnded(leg),
            "cancelled": SessionCancelled(leg),
            "message": MessageReceived(
                leg, user, IncomingMessage(MessageId("mx"), peer, "late or not")
            ),
            "composing": ComposingReceived(leg, user, peer, Composing(ComposingState.IDLE)),
        }[kind]
        await w.chat.events.handle_event(event)  # never raises
        after = await w.chat.confirmed.get_session(user, peer, cs.id)
        if S(cs.state) in one2one.TERMINAL:
            assert after.state == cs.state
    finally:
        await w.chat.stop()


ADHOC_TARGETS = ["out-connecting", "out-connected", "out-closed", "in-connecting", "in-connected"]


async def reach_adhoc(w: World, target: str) -> LegId:
    """An implicit session between A (user) and B in ``target``; returns its leg."""
    if target.startswith("out-"):
        await w.chat.messages.send_message(A, B, "adhoc", OutgoingText("first"))
        leg = LegId(w.sip.named("start_session")[-1].args[0])
    else:
        leg = LegId("in-adhoc")
        await w.chat.events.handle_event(IncomingInvitation(leg, A, B))
    if target.endswith(("connected", "closed")):
        await w.chat.events.handle_event(SessionAccepted(leg))
    if target.endswith("closed"):
        await w.chat.events.handle_event(SessionEnded(leg))
    session = await w.chat.core.leg_session(leg)
    assert session is not None
    assert (await w.chat.core.session_of(session.id)).state == target.split("-")[1]  # type: ignore[union-attr]
    return leg


@pytest.mark.parametrize("target", ADHOC_TARGETS)
@pytest.mark.parametrize(
    "kind", ["accepted", "refused", "declined", "ended", "cancelled", "message", "send", "compose"]
)
async def test_adhoc_matrix(db: Database, target: str, kind: str) -> None:
    w = await make_world(db)
    try:
        await w.subscribe(A, confirmed=False, adhoc=True)
        leg = await reach_adhoc(w, target)
        if kind == "send":
            msg, _ = await w.chat.messages.send_message(A, B, "adhoc", OutgoingText("x"))
            await w.chat.messages.get_message(A, B, "adhoc", msg.id)
        elif kind == "compose":
            await w.chat.messages.send_composing(A, B, "adhoc", Composing(ComposingState.ACTIVE))
        else:
            event: SignallingEvent = {  # type: ignore[assignment]
                "accepted": SessionAccepted(leg),
                "refused": SessionFailed(leg, 488),
                "declined": SessionFailed(leg, 486),
                "ended": SessionEnded(leg),
                "cancelled": SessionCancelled(leg),
                "message": MessageReceived(leg, A, IncomingMessage(MessageId("my"), B, "m")),
            }[kind]
            await w.chat.events.handle_event(event)  # never raises
        await w.settle()
    finally:
        await w.chat.stop()
