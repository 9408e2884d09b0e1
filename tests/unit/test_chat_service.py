"""The 1-1 chat service over SQLite, a recording notifier and a fake signalling port."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bridge.chat.model import (
    ADHOC,
    Composing,
    ComposingState,
    DialogIds,
    Disposition,
    LegId,
    NewSession,
    OutgoingText,
    ReportKind,
    RestStatus,
)
from bridge.chat.ports import (
    ComposingReceived,
    EventRejected,
    IncomingInvitation,
    IncomingMessage,
    MessageReceived,
    MessageSendResult,
    ReportReceived,
    SessionAccepted,
    SessionCancelled,
    SessionEnded,
    SessionFailed,
    SignallingError,
)
from bridge.errors import Conflict, NotFound
from bridge.ids import MessageId
from state.db import Database
from tests.fakes.chat_world import A, B, C, World, make_world

EVENT = "chatEventNotification"
INVITE = "chatSessionInvitationNotification"
MESSAGE = "chatMessageNotification"
STATUS = "chatMessageStatusNotification"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def world(db):
    w = await make_world(db)
    yield w
    await w.chat.stop()


def text(body: str = "hello", *reports: RestStatus, corr: str | None = None) -> OutgoingText:
    return OutgoingText(body, frozenset(reports), corr)


def incoming(mid: str = "imdn-1", *dispositions: Disposition, sender=A) -> IncomingMessage:
    return IncomingMessage(
        message_id=MessageId(mid),
        sender=sender,
        text="hi there",
        date_time=T0,
        dispositions=frozenset(dispositions),
    )


async def outgoing_session(w: World):
    cs, created = await w.chat.confirmed.create_session(A, B, NewSession(subject="Hi"))
    assert created
    (call,) = w.sip.named("start_session")
    assert call.args == (cs.leg, A, B) and call.kwargs["subject"] == "Hi"
    return cs


async def incoming_session(w: World, first: IncomingMessage | None = None, leg: str = "in-1"):
    await w.chat.events.handle_event(
        IncomingInvitation(LegId(leg), B, A, peer_name="Alice", subject="S", first_message=first)
    )
    (note,) = w.notes(B, INVITE)
    return await w.chat.confirmed.get_session(B, A, note["sessionId"])


# --- outgoing confirmed sessions -------------------------------------------------------


async def test_outgoing_accepted_then_messages(world: World) -> None:
    await world.subscribe(A)
    cs = await outgoing_session(world)
    assert cs.state == "inviting" and cs.rest_id == cs.id
    queued, _ = await world.chat.messages.send_message(A, B, cs.id, text("early", RestStatus.SENT))
    assert not world.sip.named("send_message")
    with pytest.raises(Conflict):
        await world.chat.messages.get_message_status(A, B, cs.id, queued.id)
    ids = DialogIds(call_id="c1", contribution_id="k1")
    await world.chat.events.handle_event(SessionAccepted(cs.leg, ids))
    (accepted,) = world.notes(A, EVENT)
    assert accepted["eventType"] == "Accepted" and accepted["sessionId"] == cs.id
    assert accepted["callbackData"] == f"cb-{A}"
    assert accepted["link"][0]["href"].endswith(f"/oneToOne/tel%3A%2B15551230002/{cs.id}")
    (sent,) = world.sip.named("send_message")
    assert sent.args[0] == cs.leg and sent.args[1].message_id == queued.id
    assert sent.args[1].text == "early"
    now = await world.chat.confirmed.get_session(A, B, cs.id)
    assert now.state == "connected" and now.ids.call_id == "c1"
    await world.chat.events.handle_event(MessageSendResult(A, queued.id, True))
    assert await world.chat.messages.get_message_status(A, B, cs.id, queued.id) is RestStatus.SENT
    (status,) = world.notes(A, STATUS)
    assert status["status"] == "Sent" and status["messageId"] == queued.id
    second, _ = await world.chat.messages.send_message(A, B, cs.id, text("later"))
    assert world.sip.named("send_message")[-1].args[1].message_id == second.id
    await world.chat.events.handle_event(MessageSendResult(A, second.id, True))
    assert len(world.notes(A, STATUS)) == 1  # Sent not requested for the second


@pytest.mark.parametrize(
    ("status", "event_type"),
    [(486, "Declined"), (603, "Declined"), (480, "Failed"), (408, "Failed")],
)
async def test_outgoing_failures(world: World, status: int, event_type: str) -> None:
    await world.subscribe(A)
    cs = await outgoing_session(world)
    msg, _ = await world.chat.messages.send_message(A, B, cs.id, text())
    await world.chat.events.handle_event(SessionFailed(cs.leg, status, "no"))
    kinds = [n.root for n in world.notifier.of(A)]
    assert kinds == [STATUS, EVENT]
    assert world.notes(A, STATUS)[0]["status"] == "Failed"
    assert world.notes(A, EVENT)[0]["eventType"] == event_type
    assert await world.chat.messages.get_message_status(A, B, cs.id, msg.id) is RestStatus.FAILED
    ended = await world.chat.confirmed.get_session(A, B, cs.id)
    assert ended.end_reason == f"{status} no" and ended.ended_at is not None
    with pytest.raises(Conflict):
        await world.chat.messages.send_message(A, B, cs.id, text())
    with pytest.raises(Conflict):
        await world.chat.confirmed.end_session(A, B, cs.id)


async def test_delete_before_answer_cancels(world: World) -> None:
    await world.subscribe(A)
    cs = await outgoing_session(world)
    await world.chat.confirmed.end_session(A, B, cs.id)
    assert world.sip.named("cancel_session")[0].args == (cs.leg,)
    assert (await world.chat.confirmed.get_session(A, B, cs.id)).state == "cancelled"
    assert world.notes(A, EVENT) == []
    # the 200 crossed the CANCEL: the leg is ended, nothing changes
    await world.chat.events.handle_event(SessionAccepted(cs.leg))
    assert world.sip.named("end_session")[0].args == (cs.leg,)
    assert (await world.chat.confirmed.get_session(A, B, cs.id)).state == "cancelled"


async def test_delete_connected_sends_bye_and_peer_bye_ends(world: World) -> None:
    await world.subscribe(A)
    cs = await outgoing_session(world)
    await world.chat.events.handle_event(SessionAccepted(cs.leg))
    await world.chat.confirmed.end_session(A, B, cs.id)
    assert world.sip.named("end_session")[0].args == (cs.leg,)
    assert [n["eventType"] for n in world.notes(A, EVENT)] == ["Accepted"]
    cs2, _ = await world.chat.confirmed.create_session(A, B, NewSession())
    assert cs2.leg is not None
    await world.chat.events.handle_event(SessionAccepted(cs2.leg))
    await world.chat.events.handle_event(SessionEnded(cs2.leg, "BYE"))
    assert world.notes(A, EVENT)[-1]["eventType"] == "SessionEnded"
    await world.chat.events.handle_event(SessionEnded(cs2.leg, "BYE"))  # late duplicate: ignored


async def test_invite_timeout_cancels_and_fails(db: Database) -> None:
    w = await make_world(db, chat_invite_timeout=0.05)
    try:
        await w.subscribe(A)
        cs = await outgoing_session(w)
        await asyncio.sleep(0.1)
        await w.settle()
        assert w.sip.named("cancel_session")[0].args == (cs.leg,)
        assert w.notes(A, EVENT)[0]["eventType"] == "Failed"
    finally:
        await w.chat.stop()


async def test_start_failure_fails_at_once(world: World) -> None:
    await world.subscribe(A)
    world.sip.fail["start_session"] = SignallingError("stack down")
    cs, created = await world.chat.confirmed.create_session(A, B, NewSession())
    assert created and cs.state == "failed"
    assert world.notes(A, EVENT)[0]["eventType"] == "Failed"


async def test_create_correlator_replay(world: World) -> None:
    first, created = await world.chat.confirmed.create_session(
        A, B, NewSession(client_correlator="c")
    )
    again, created2 = await world.chat.confirmed.create_session(
        A, B, NewSession(client_correlator="c")
    )
    assert created and not created2 and again.id == first.id
    assert len(world.sip.named("start_session")) == 1
    with pytest.raises(Conflict):
        await world.chat.confirmed.create_session(A, C, NewSession(client_correlator="c"))


async def test_unknown_and_foreign_sessions_are_404(world: World) -> None:
    cs = await outgoing_session(world)
    for user, other, sid in [(A, B, "nope"), (A, C, cs.id), (B, A, cs.id)]:
        with pytest.raises(NotFound):
            await world.chat.confirmed.get_session(user, other, sid)
    with pytest.raises(NotFound):
        await world.chat.messages.get_message(A, B, cs.id, "m-unknown")


# --- incoming confirmed sessions ----------------------------------------------------------


async def test_incoming_invitation_accept(world: World) -> None:
    await world.subscribe(B)
    first = incoming("imdn-1", Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY)
    cs = await incoming_session(world, first)
    (invite,) = world.notes(B, INVITE)
    assert invite["originatorAddress"] == A and invite["tParticipantAddress"] == B
    assert invite["originatorName"] == "Alice" and invite["subject"] == "S"
    rels = {link["rel"]: link["href"] for link in invite["link"]}
    assert rels["ParticipantSessionStatus"] == rels["ChatSessionInformation"] + "/status"
    (note,) = world.notes(B, MESSAGE)
    assert note["sessionId"] == cs.id and note["messageId"] == "imdn-1"
    assert note["senderAddress"] == A and note["dateTime"] == "2026-01-02T03:04:05Z"
    assert note["chatMessage"] == {"text": "hi there"}
    assert cs.state == "ringing" and cs.direction.value == "in"
    with pytest.raises(Conflict):
        await world.chat.messages.send_message(B, A, cs.id, text())
    # the notification reached the app before the accept: delivered IMDN by pager
    await world.notifier.deliver(world.notifier.of(B, MESSAGE)[0])
    (report,) = world.sip.named("send_report")
    assert report.args[0] is None and report.args[1].kind is ReportKind.DELIVERED
    assert report.args[1].peer == A and report.args[1].original_date_time == T0
    await world.chat.confirmed.accept_session(B, A, cs.id)
    assert world.sip.named("accept_session")[0].args == (cs.leg,)
    with pytest.raises(Conflict):
        await world.chat.confirmed.accept_session(B, A, cs.id)
    await world.chat.events.handle_event(SessionAccepted(cs.leg))
    assert (await world.chat.confirmed.get_session(B, A, cs.id)).state == "connected"
    assert world.notes(B, EVENT) == []
    # displayed goes on the live session, delivered is not repeated
    await world.chat.messages.report_message(B, A, cs.id, "imdn-1", RestStatus.DELIVERED)
    await world.chat.messages.report_message(B, A, cs.id, "imdn-1", RestStatus.DISPLAYED)
    reports = world.sip.named("send_report")
    assert [r.args[1].kind for r in reports] == [ReportKind.DELIVERED, ReportKind.DISPLAYED]
    assert reports[1].args[0] == cs.leg
    status = await world.chat.messages.get_message_status(B, A, cs.id, "imdn-1")
    assert status is RestStatus.DISPLAYED


async def test_incoming_decline_and_timeout_and_cancel(db: Database) -> None:
    w = await make_world(db, chat_ringing_timeout=0.05)
    try:
        await w.subscribe(B)
        cs = await incoming_session(w, leg="in-1")
        await w.chat.confirmed.end_session(B, A, cs.id)
        assert w.sip.named("reject_session")[0].args == (cs.leg, 486)
        assert (await w.chat.confirmed.get_session(B, A, cs.id)).state == "declined"
        assert w.notes(B, EVENT) == []
        w.notifier.take()
        cs2 = await incoming_session(w, leg="in-2")
        await asyncio.sleep(0.1)
        await w.settle()
        assert w.sip.named("reject_session")[1].args == (cs2.leg, 486)
        assert w.notes(B, EVENT)[0]["eventType"] == "SessionCancelled"
        w.notifier.take()
        cs3 = await incoming_session(w, leg="in-3")
        await w.chat.events.handle_event(SessionCancelled(cs3.leg))
        assert w.notes(B, EVENT)[0]["eventType"] == "SessionCancelled"
        assert (await w.chat.confirmed.get_session(B, A, cs3.id)).state == "cancelled"
    finally:
        await w.chat.stop()


async def test_invitation_without_subscription_is_480(world: World) -> None:
    with pytest.raises(EventRejected) as info:
        await world.chat.events.handle_event(IncomingInvitation(LegId("in-x"), B, A))
    assert info.value.status == 480
    with pytest.raises(EventRejected) as info:
        await world.chat.events.handle_event(MessageReceived(None, B, incoming()))
    assert info.value.status == 480
    await world.subscribe(B, confirmed=False, adhoc=False)
    with pytest.raises(EventRejected) as info:
        await world.chat.events.handle_event(IncomingInvitation(LegId("in-y"), B, A))
    assert info.value.status == 480
    assert world.notifier.woken == []


async def test_invitation_goes_to_confirmed_subscriptions_only(world: World) -> None:
    await world.subscribe(B, confirmed=True, path="one")
    await world.subscribe(B, confirmed=False, adhoc=True, path="two")
    await incoming_session(world)
    assert [n.notify_url for n in world.notifier.of(B, INVITE)] == ["http://app.test/one"]


# --- implicit (adhoc) sessions ---------------------------------------------------------------


async def test_incoming_adhoc_auto_accept_and_idle(db: Database) -> None:
    w = await make_world(db, chat_idle_timeout=0.1)
    try:
        await w.subscribe(B, confirmed=False, adhoc=True)
        await w.chat.events.handle_event(
            IncomingInvitation(LegId("in-a"), B, A, first_message=incoming("m1"))
        )
        assert w.sip.named("accept_session")[0].args == ("in-a",)
        assert w.notes(B, INVITE) == []
        (note,) = w.notes(B, MESSAGE)
        assert note["sessionId"] == ADHOC and "/adhoc/messages/m1/status" in note["link"][0]["href"]
        await w.chat.events.handle_event(SessionAccepted(LegId("in-a")))
        await w.chat.events.handle_event(MessageReceived(LegId("in-a"), B, incoming("m2")))
        await w.chat.events.handle_event(MessageReceived(LegId("in-a"), B, incoming("m2")))  # dup
        assert [n["messageId"] for n in w.notes(B, MESSAGE)] == ["m1", "m2"]
        # B answers on the same implicit session
        reply, _ = await w.chat.messages.send_message(B, A, ADHOC, text("yo"))
        assert w.sip.named("send_message")[0].args[0] == "in-a"
        assert not w.sip.named("start_session")
        await asyncio.sleep(0.2)
        await w.settle()
        assert w.sip.named("end_session")[0].args == ("in-a",)
        assert w.notes(B, EVENT) == []
        assert (await w.chat.messages.get_message(B, A, ADHOC, reply.id)).text == "yo"
    finally:
        await w.chat.stop()


async def test_outgoing_adhoc_queues_until_up(world: World) -> None:
    await world.subscribe(A)
    m1, _ = await world.chat.messages.send_message(A, B, ADHOC, text("one", RestStatus.DELIVERED))
    m2, _ = await world.chat.messages.send_message(A, B, ADHOC, text("two"))
    (start,) = world.sip.named("start_session")
    leg = start.args[0]
    assert start.kwargs["first"].message_id == m1.id and start.kwargs["first"].text == "one"
    assert start.kwargs["first"].dispositions == {
        Disposition.POSITIVE_DELIVERY,
        Disposition.NEGATIVE_DELIVERY,
    }
    assert not world.sip.named("send_message")
    await world.chat.events.handle_event(SessionAccepted(leg))
    (sent,) = world.sip.named("send_message")
    assert sent.args == (leg, sent.args[1]) and sent.args[1].message_id == m2.id
    await world.chat.events.handle_event(MessageSendResult(A, m1.id, True))
    await world.chat.events.handle_event(ReportReceived(leg, A, B, m1.id, ReportKind.DISPLAYED))
    await world.chat.events.handle_event(ReportReceived(leg, A, B, m1.id, ReportKind.DELIVERED))
    # asked for Delivered only: the display report that came first is notified as Delivered
    assert [n["status"] for n in world.notes(A, STATUS)] == ["Delivered"]
    assert await world.chat.messages.get_message_status(A, B, ADHOC, m1.id) is RestStatus.DISPLAYED
    link = world.notes(A, STATUS)[0]["link"][0]
    assert link["rel"] == "ChatMessage" and link["href"].endswith(f"/adhoc/messages/{m1.id}")
    assert world.notes(A, EVENT) == []
    m3, _ = await world.chat.messages.send_message(A, B, ADHOC, text("three"))
    assert world.sip.named("send_message")[-1].args[1].message_id == m3.id
    # peer BYE: nothing notified for the session; the next message opens a new one
    await world.chat.events.handle_event(SessionEnded(leg))
    await world.chat.messages.send_message(A, B, ADHOC, text("four"))
    assert len(world.sip.named("start_session")) == 2
    # m2 and m3 had no MSRP 200 when the session ended: Failed
    assert [n["status"] for n in world.notes(A, STATUS)] == ["Delivered", "Failed", "Failed"]


@pytest.mark.parametrize(("status", "pager"), [(488, True), (606, True), (486, False)])
async def test_adhoc_pager_fallback(world: World, status: int, pager: bool) -> None:
    await world.subscribe(A)
    m1, _ = await world.chat.messages.send_message(A, B, ADHOC, text("one"))
    m2, _ = await world.chat.messages.send_message(A, B, ADHOC, text("two"))
    leg = world.sip.named("start_session")[0].args[0]
    await world.chat.events.handle_event(SessionFailed(leg, status, "nope"))
    sent = [c.args[0].message_id for c in world.sip.named("send_pager")]
    if pager:
        assert sent == [m1.id, m2.id]
        await world.chat.events.handle_event(MessageSendResult(A, m1.id, True))
        assert await world.chat.messages.get_message_status(A, B, ADHOC, m1.id) is RestStatus.SENT
    else:
        assert sent == []
        assert [n["status"] for n in world.notes(A, STATUS)] == ["Failed", "Failed"]


async def test_pager_mode(db: Database) -> None:
    w = await make_world(db, chat_adhoc_mode="pager")
    try:
        await w.subscribe(A)
        m1, _ = await w.chat.messages.send_message(A, B, ADHOC, text("p", RestStatus.SENT))
        (call,) = w.sip.named("send_pager")
        assert call.args[0].message_id == m1.id and not w.sip.named("start_session")
        await w.chat.events.handle_event(MessageSendResult(A, m1.id, False, 404, "Not Found"))
        assert w.notes(A, STATUS)[0]["status"] == "Failed"
        await w.subscribe(B)
        await w.chat.events.handle_event(MessageReceived(None, B, incoming("pg1")))
        assert w.notes(B, MESSAGE)[0]["sessionId"] == ADHOC
    finally:
        await w.chat.stop()


async def test_message_correlator_replay(world: World) -> None:
    m1, created = await world.chat.messages.send_message(A, B, ADHOC, text(corr="k"))
    m2, created2 = await world.chat.messages.send_message(A, B, ADHOC, text(corr="k"))
    assert created and not created2 and m1.id == m2.id
    assert len(world.sip.named("start_session")) == 1


# --- composing and reports --------------------------------------------------------------


async def test_composing(world: World) -> None:
    await world.subscribe(B)
    typing = Composing(ComposingState.ACTIVE, T0, "text/plain", 60)
    await world.chat.messages.send_composing(A, B, ADHOC, typing)
    assert not world.sip.named("send_composing") and not world.sip.named("start_session")
    cs = await outgoing_session(world)
    await world.chat.messages.send_composing(A, B, cs.id, typing)
    assert not world.sip.named("send_composing")
    await world.chat.events.handle_event(SessionAccepted(cs.leg))
    await world.chat.messages.send_composing(A, B, cs.id, typing)
    assert world.sip.named("send_composing")[0].args == (cs.leg, A, typing)
    await world.chat.events.handle_event(ComposingReceived(None, B, A, typing))
    (note,) = world.notes(B, MESSAGE)
    assert note["isComposing"] == {
        "state": "active",
        "lastActive": "2026-01-02T03:04:05Z",
        "contentType": "text/plain",
        "refresh": 60,
    }
    assert note["sessionId"] == ADHOC and "messageId" not in note and "link" not in note


async def test_display_not_requested_sends_nothing(world: World) -> None:
    await world.subscribe(B)
    await world.chat.events.handle_event(MessageReceived(None, B, incoming("q1")))
    await world.chat.messages.report_message(B, A, ADHOC, "q1", RestStatus.DISPLAYED)
    assert world.sip.named("send_report") == []
    assert await world.chat.messages.get_message_status(B, A, ADHOC, "q1") is RestStatus.DISPLAYED
    with pytest.raises(NotFound):
        await world.chat.messages.report_message(B, C, ADHOC, "q1", RestStatus.DISPLAYED)
    m, _ = await world.chat.messages.send_message(B, A, ADHOC, text())
    with pytest.raises(Conflict):
        await world.chat.messages.report_message(B, A, ADHOC, m.id, RestStatus.DISPLAYED)


async def test_report_for_unknown_message_is_logged(world: World) -> None:
    await world.chat.events.handle_event(
        ReportReceived(None, A, B, MessageId("zz"), ReportKind.DELIVERED)
    )
    await world.chat.events.handle_event(MessageSendResult(A, MessageId("zz"), True))
    assert world.notifier.woken == []


async def test_message_on_unknown_leg_is_481(world: World) -> None:
    with pytest.raises(EventRejected) as info:
        await world.chat.events.handle_event(MessageReceived(LegId("nope"), B, incoming()))
    assert info.value.status == 481


# --- restart -------------------------------------------------------------------------------


async def test_restart_reports_and_resends(db: Database) -> None:
    w = await make_world(db)
    await w.subscribe(A)
    await w.subscribe(B)
    up = await outgoing_session(w)
    await w.chat.events.handle_event(SessionAccepted(up.leg))
    inviting, _ = await w.chat.confirmed.create_session(A, C, NewSession())
    queued, _ = await w.chat.messages.send_message(A, C, inviting.id, text("q"))
    ringing = await incoming_session(w, leg="in-r")
    adhoc_msg, _ = await w.chat.messages.send_message(A, C, ADHOC, text("later"))
    await w.chat.stop()  # the process dies: nothing on the wire is closed

    again = await make_world(db)
    try:
        assert [n["eventType"] for n in again.notes(A, EVENT)] == ["SessionEnded", "Failed"]
        assert [n["eventType"] for n in again.notes(B, EVENT)] == ["SessionCancelled"]
        assert [(n["messageId"], n["status"]) for n in again.notes(A, STATUS)] == [
            (queued.id, "Failed")
        ]
        assert (await again.chat.confirmed.get_session(B, A, ringing.id)).state == "cancelled"
        (start,) = again.sip.named("start_session")
        assert start.args[1:] == (A, C) and start.kwargs["first"].message_id == adhoc_msg.id
        await again.chat.events.handle_event(SessionAccepted(start.args[0]))
        await again.chat.events.handle_event(MessageSendResult(A, adhoc_msg.id, True))
        status = await again.chat.messages.get_message_status(A, C, ADHOC, adhoc_msg.id)
        assert status is RestStatus.SENT
    finally:
        await again.chat.stop()


async def test_adhoc_invite_timeout_fails_messages(db: Database) -> None:
    w = await make_world(db, chat_invite_timeout=0.05)
    try:
        await w.subscribe(A)
        m1, _ = await w.chat.messages.send_message(A, B, ADHOC, text("lost"))
        leg = w.sip.named("start_session")[0].args[0]
        await asyncio.sleep(0.1)
        await w.settle()
        assert w.sip.named("cancel_session")[0].args == (leg,)
        assert await w.chat.messages.get_message_status(A, B, ADHOC, m1.id) is RestStatus.FAILED
        assert [n["status"] for n in w.notes(A, STATUS)] == ["Failed"]
        await w.chat.events.handle_event(SessionAccepted(leg))  # too late: ended at once
        assert w.sip.named("end_session")[0].args == (leg,)
    finally:
        await w.chat.stop()


async def test_concurrent_adhoc_sends_keep_order(world: World) -> None:
    sent = await asyncio.gather(
        *(world.chat.messages.send_message(A, B, ADHOC, text(f"n{i}")) for i in range(8))
    )
    (start,) = world.sip.named("start_session")
    await world.chat.events.handle_event(SessionAccepted(start.args[0]))
    on_wire = [start.kwargs["first"].message_id] + [
        c.args[1].message_id for c in world.sip.named("send_message")
    ]
    # concurrent requests have no order of their own: the store order (seq) is kept on the wire
    assert on_wire == [m.id for m, _ in sorted(sent, key=lambda r: r[0].seq)]
    assert len(world.chat.core.locks) == 0


async def test_idle_close_fails_unacknowledged(db: Database) -> None:
    w = await make_world(db, chat_idle_timeout=0.05)
    try:
        m1, _ = await w.chat.messages.send_message(A, B, ADHOC, text("one"))
        leg = w.sip.named("start_session")[0].args[0]
        await w.chat.events.handle_event(SessionAccepted(leg))
        m2, _ = await w.chat.messages.send_message(A, B, ADHOC, text("two"))
        await w.chat.events.handle_event(MessageSendResult(A, m1.id, True))
        await asyncio.sleep(0.1)
        await w.settle()
        assert w.sip.named("end_session")[0].args == (leg,)
        assert await w.chat.messages.get_message_status(A, B, ADHOC, m1.id) is RestStatus.SENT
        assert await w.chat.messages.get_message_status(A, B, ADHOC, m2.id) is RestStatus.FAILED
    finally:
        await w.chat.stop()


async def test_concurrent_duplicates_notify_once(world: World) -> None:
    await world.subscribe(B)
    same = MessageReceived(None, B, incoming("dup"))
    await asyncio.gather(*(world.chat.events.handle_event(same) for _ in range(5)))
    assert [n["messageId"] for n in world.notes(B, MESSAGE)] == ["dup"]
