"""Restart recovery (bridge.chat.recovery): BYE for the dialogs left up, owed "delivered" IMDNs.

The chat service runs over SQLite with the recording notifier; the signalling
fake below also implements ``recovery.StaleDialogs`` (it records the BYEs and
answers them as each test asks). A first service builds sessions and messages
and stops without touching the wire (the process died); a second one on the same
database is the restarted bridge.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.chat import recovery
from bridge.chat.assembly import build_chat
from bridge.chat.core import utcnow
from bridge.chat.model import (
    ADHOC,
    ChatSession,
    DialogIds,
    Direction,
    Disposition,
    LegId,
    ReportKind,
    SessionKind,
)
from bridge.chat.ports import (
    IncomingInvitation,
    MessageReceived,
    SessionAccepted,
    SignallingError,
)
from bridge.ids import MessageId, UserUri
from rest.uris import ServerRoot
from state import outbox
from state.chat_backlog import OutboxBacklog
from state.chat_store import SQLChatStore
from state.db import Database
from tests.fakes.chat_world import ROOT, A, B, C, World, chat_settings
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.signalling import FakeSignalling
from tests.unit.test_chat_service import EVENT, INVITE, MESSAGE, incoming, text

D = UserUri("tel:+15551230004")
E = UserUri("tel:+15551230005")


class ByeSignalling(FakeSignalling):
    """FakeSignalling that also ends stale dialogs (``recovery.StaleDialogs``)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, int | SignallingError] = {}
        """Call-ID → the status to answer (default 200), or the error to raise."""
        self.gate: asyncio.Event | None = None
        """When set, every BYE waits for it (a slow network)."""
        self.byes: list[DialogIds] = []

    async def end_stale_dialog(self, ids: DialogIds) -> int:
        self.byes.append(ids)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.get(ids.call_id or "", 200)
        if isinstance(answer, SignallingError):
            raise answer
        return answer


async def world(
    db: Database,
    sip: FakeSignalling | None = None,
    backlog: recovery.NotificationBacklog | None = None,
    **overrides: Any,
) -> tuple[World, recovery.RecoveryReport]:
    settings = chat_settings(**overrides)
    notifier = RecordingNotifier(db)
    fake = sip or ByeSignalling()
    chat = build_chat(
        settings=settings,
        store=SQLChatStore(db),
        notifier=notifier,
        signalling=fake,
        urls=ServerRoot(ROOT),
        clock=utcnow,
    )
    report = await chat.start(backlog)
    return World(db, settings, chat, notifier, fake), report


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await database.migrate()
    yield database
    await database.close()


def dialog(call_id: str, *, uac: bool, cseq: int | None = 1) -> DialogIds:
    return DialogIds(
        call_id=call_id,
        local_tag="lt-" + call_id,
        remote_tag="rt-" + call_id,
        contribution_id="contrib-" + call_id,
        conversation_id="conv-" + call_id,
        local_uri=f"<tel:+1>;tag=lt-{call_id}",
        remote_uri=f"<tel:+2>;tag=rt-{call_id}",
        remote_target="sip:peer@127.0.0.1:5999;transport=tcp",
        route_set=("<sip:127.0.0.1:5060;lr;ftag=x>",),
        local_cseq=cseq,
        uac=uac,
    )


async def up_outgoing(w: World, peer: UserUri, call_id: str) -> ChatSession:
    cs, _ = await w.chat.confirmed.create_session(A, peer, recovery_session())
    await w.chat.events.handle_event(SessionAccepted(cs.leg, dialog(call_id, uac=True)))  # type: ignore[arg-type]
    return await w.chat.confirmed.get_session(A, peer, cs.id)


def recovery_session() -> Any:
    from bridge.chat.model import NewSession

    return NewSession(subject="before the crash")


async def invited(w: World, leg: str, call_id: str, user: UserUri = B) -> ChatSession:
    await w.chat.events.handle_event(
        IncomingInvitation(LegId(leg), user, A, ids=dialog(call_id, uac=False, cseq=None))
    )
    note = w.notes(user, INVITE)[-1]
    return await w.chat.confirmed.get_session(user, A, note["sessionId"])


async def test_restart_byes_every_established_dialog_and_reports_the_end(db) -> None:
    w, _ = await world(db)
    for user in (A, B, C, D):
        await w.subscribe(user, adhoc=True)
    connected = await up_outgoing(w, B, "c-out")  # UAC, connected
    accepting = await invited(w, "in-acc", "c-acc")  # UAS, accepted, MSRP not bound yet
    await w.chat.confirmed.accept_session(B, A, accepting.id)
    ringing = await invited(w, "in-ring", "c-ring", user=C)  # no 200 sent: no dialog
    inviting, _ = await w.chat.confirmed.create_session(A, D, recovery_session())  # no answer yet
    # an implicit session we opened (UAC) and one we answered (UAS, auto-accepted)
    await w.chat.messages.send_message(A, C, ADHOC, text("adhoc out"))
    (start,) = [c for c in w.sip.named("start_session") if c.args[2] == C]
    await w.chat.events.handle_event(
        SessionAccepted(start.args[0], dialog("c-adhoc-out", uac=True))
    )
    await w.subscribe(E, confirmed=False, adhoc=True)
    await w.chat.events.handle_event(
        IncomingInvitation(LegId("in-adhoc"), E, B, ids=dialog("c-adhoc-in", uac=False, cseq=None))
    )
    await w.chat.stop()  # killed: nothing on the wire was closed

    again, report = await world(db)
    try:
        assert report.sessions_closed == 6 and report.dialogs_to_end == 4
        await again.settle()
        assert isinstance(again.sip, ByeSignalling)
        byed = {ids.call_id: ids for ids in again.sip.byes}
        assert set(byed) == {"c-out", "c-acc", "c-adhoc-out", "c-adhoc-in"}
        # the whole dialog state travels, as stored (correlation ids included)
        assert byed["c-out"] == dialog("c-out", uac=True)
        assert byed["c-acc"] == dialog("c-acc", uac=False, cseq=None)
        # the app hears what it heard before dialogs were stored
        assert [n["eventType"] for n in again.notes(A, EVENT)] == ["SessionEnded", "Failed"]
        assert [n["eventType"] for n in again.notes(B, EVENT)] == ["SessionEnded"]
        assert [n["eventType"] for n in again.notes(C, EVENT)] == ["SessionCancelled"]
        for user, peer, cs, state in (
            (A, B, connected, "ended"),
            (B, A, accepting, "ended"),
            (C, A, ringing, "cancelled"),
            (A, D, inviting, "failed"),
        ):
            now = await again.chat.confirmed.get_session(user, peer, cs.id)
            assert now.state == state and now.end_reason == "restart"
            assert now.ids.call_id == cs.ids.call_id  # correlation ids kept
        assert (await again.chat.confirmed.get_session(A, B, connected.id)).ids.contribution_id == (
            "contrib-c-out"
        )
    finally:
        await again.chat.stop()


async def test_bye_failures_are_logged_and_never_block_start(db, caplog) -> None:
    w, _ = await world(db)
    await w.subscribe(A)
    for call_id in ("c-ok", "c-481", "c-408", "c-broken"):
        await up_outgoing(w, UserUri(f"tel:+1555000{len(call_id)}{call_id[-1]}"), call_id)
    await w.chat.stop()

    sip = ByeSignalling()
    sip.gate = asyncio.Event()  # the network is slow: no BYE is answered yet
    sip.answers = {"c-481": 481, "c-408": 408, "c-broken": SignallingError("bad state")}
    caplog.set_level(logging.INFO, logger="bridge.chat.recovery")
    again, report = await asyncio.wait_for(world(db, sip), 5)
    try:
        # start-up is done and the app is told, while every BYE is still out
        assert report.dialogs_to_end == 4
        assert [n["eventType"] for n in again.notes(A, EVENT)] == ["SessionEnded"] * 4
        await asyncio.sleep(0.01)
        assert len(sip.byes) == 4
        sip.gate.set()
        await again.settle()
        logged = caplog.text
        assert "c-ok) after restart: 200" in logged
        assert "c-481) after restart answered 481" in logged
        assert "c-408) after restart answered 408" in logged
        assert "no BYE for session" in logged and "bad state" in logged
        assert "1 of 4 dialogs ended with a 2xx" in logged
    finally:
        await again.chat.stop()


async def test_signalling_without_stale_dialogs_only_logs(db, caplog) -> None:
    w, _ = await world(db)
    await w.subscribe(A)
    await up_outgoing(w, B, "c-1")
    await w.chat.stop()
    again, report = await world(db, FakeSignalling())
    try:
        await again.settle()
        assert report.dialogs_to_end == 1
        assert "signalling cannot end them" in caplog.text
        assert [n["eventType"] for n in again.notes(A, EVENT)] == ["SessionEnded"]
    finally:
        await again.chat.stop()


async def test_at_most_bye_concurrency_byes_are_in_flight(db) -> None:
    w, _ = await world(db)
    await w.subscribe(A)
    total = recovery.BYE_CONCURRENCY + 4
    for n in range(total):
        await up_outgoing(w, UserUri(f"tel:+1555777{n:04d}"), f"c-{n}")
    await w.chat.stop()

    sip = ByeSignalling()
    sip.gate = asyncio.Event()
    again, report = await world(db, sip)
    try:
        assert report.dialogs_to_end == total
        for _ in range(200):
            if len(sip.byes) >= recovery.BYE_CONCURRENCY:
                break
            await asyncio.sleep(0)
        for _ in range(20):  # give the others every chance to (wrongly) start
            await asyncio.sleep(0)
        assert len(sip.byes) == recovery.BYE_CONCURRENCY  # the rest wait for a free slot
        sip.gate.set()
        await again.settle()
        assert len({ids.call_id for ids in sip.byes}) == total
    finally:
        await again.chat.stop()


@pytest.mark.parametrize(
    ("kind", "direction", "state", "ids", "expected"),
    [
        (SessionKind.CONFIRMED, Direction.OUTGOING, "connected", True, True),
        (SessionKind.CONFIRMED, Direction.INCOMING, "accepting", True, True),
        (SessionKind.CONFIRMED, Direction.INCOMING, "ringing", True, False),
        (SessionKind.CONFIRMED, Direction.OUTGOING, "inviting", True, False),
        (SessionKind.CONFIRMED, Direction.OUTGOING, "ended", True, False),
        (SessionKind.CONFIRMED, Direction.OUTGOING, "connected", False, False),
        (SessionKind.ADHOC, Direction.OUTGOING, "connected", True, True),
        (SessionKind.ADHOC, Direction.INCOMING, "connecting", True, True),
        (SessionKind.ADHOC, Direction.OUTGOING, "connecting", True, False),
        (SessionKind.ADHOC, Direction.INCOMING, "closed", True, False),
    ],
)
def test_dialog_established(kind, direction, state, ids, expected) -> None:
    from datetime import UTC, datetime

    from bridge.ids import ChatSessionId

    now = datetime.now(UTC)
    cs = ChatSession(
        id=ChatSessionId("s-1"),
        user=A,
        peer=B,
        kind=kind,
        direction=direction,
        state=state,
        leg=LegId("l"),
        subject=None,
        originator_name=None,
        t_participant_name=None,
        client_correlator=None,
        created_at=now,
        updated_at=now,
        ids=dialog("c", uac=True) if ids else DialogIds(call_id="c", local_tag="l"),
    )
    assert recovery.dialog_established(cs) is expected


# --- owed "delivered" reports ----------------------------------------------------------------


async def forget_notification(db: Database, user: UserUri, message_id: str) -> None:
    """What a crash leaves: the row delivered and settled, the listener never ran."""
    query = sa.select(outbox.OutboxRow).where(outbox.OutboxRow.user_uri == user)
    async with db.sessions.begin() as s:
        for row in list((await s.execute(query)).scalars()):
            if row.root == MESSAGE and row.body.get("messageId") == message_id:
                await s.delete(row)


async def received(
    w: World, mid: str, *dispositions: Disposition, leg: LegId | None = None
) -> None:
    await w.chat.events.handle_event(MessageReceived(leg, B, incoming(mid, *dispositions)))


async def test_owed_delivered_reports_go_by_pager_after_restart(db) -> None:
    w, _ = await world(db)
    await w.subscribe(B)
    await received(w, "owed", Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY)
    await received(w, "still-queued", Disposition.POSITIVE_DELIVERY)
    await received(w, "not-asked", Disposition.DISPLAY)
    await received(w, "done", Disposition.POSITIVE_DELIVERY)
    done = w.notifier.of(B, MESSAGE)[-1]
    await w.notifier.deliver(done)  # delivered and reported before the crash
    assert [c.args[1].message_id for c in w.sip.named("send_report")] == ["done"]
    for mid in ("owed", "not-asked", "done"):
        await forget_notification(db, B, mid)
    await w.chat.stop()

    again, _ = await world(db, backlog=OutboxBacklog(db))
    try:
        await again.settle()
        (report,) = again.sip.named("send_report")
        leg, sent = report.args
        assert leg is None  # no session survives a restart: SIP MESSAGE
        assert (sent.message_id, sent.user, sent.peer, sent.kind) == (
            "owed",
            B,
            A,
            ReportKind.DELIVERED,
        )
        msg = await again.chat.messages.get_message(B, A, ADHOC, "owed")
        assert msg.status == "delivered"
        assert (
            await again.chat.messages.get_message(B, A, ADHOC, "still-queued")
        ).status == "received"
        # the queued one is reported when its notification is delivered, as before
        async with db.sessions() as s:
            pending = await outbox.pending_for(s, done.subscription_id)
        (queued,) = [n for n in pending if n.body.get("messageId") == "still-queued"]
        await again.notifier.deliver(queued)
        assert [c.args[1].message_id for c in again.sip.named("send_report")] == [
            "owed",
            "still-queued",
        ]
    finally:
        await again.chat.stop()


async def test_no_owed_report_for_a_user_nobody_listens_for(db) -> None:
    w, _ = await world(db)
    await w.subscribe(B)
    await w.subscribe(C)
    await received(w, "listened", Disposition.POSITIVE_DELIVERY)
    await w.chat.events.handle_event(
        MessageReceived(None, C, incoming("unsubscribed", Disposition.POSITIVE_DELIVERY))
    )
    for user, mid in ((B, "listened"), (C, "unsubscribed")):
        await forget_notification(db, user, mid)
    async with db.sessions.begin() as s:  # C's app went away (its rows went with it)
        await s.execute(sa.text("DELETE FROM chat_subscriptions WHERE user_uri = :u"), {"u": C})
    await w.chat.stop()

    again, _ = await world(db, backlog=OutboxBacklog(db))
    try:
        await again.settle()
        assert [c.args[1].message_id for c in again.sip.named("send_report")] == ["listened"]
    finally:
        await again.chat.stop()


async def test_no_owed_report_past_the_notification_max_age(db) -> None:
    w, _ = await world(db)
    await w.subscribe(B)
    await received(w, "old", Disposition.POSITIVE_DELIVERY)
    await forget_notification(db, B, "old")
    await w.chat.stop()
    await asyncio.sleep(0.05)

    # past notification_max_age the row may have been dropped undelivered: no claim it arrived
    again, _ = await world(db, backlog=OutboxBacklog(db), notification_max_age=0.01)
    try:
        await again.settle()
        assert again.sip.named("send_report") == []
        assert (await again.chat.messages.get_message(B, A, ADHOC, "old")).status == "received"
    finally:
        await again.chat.stop()


async def test_outbox_backlog_reads_queued_message_notifications(db) -> None:
    w, _ = await world(db)
    await w.subscribe(B)
    await w.subscribe(C)
    await received(w, "b1", Disposition.POSITIVE_DELIVERY)
    await w.chat.events.handle_event(MessageReceived(None, C, incoming("c1")))
    await w.chat.stop()
    backlog = OutboxBacklog(db)
    assert await backlog.queued_message_notifications([B, C, A]) == {
        (B, MessageId("b1")),
        (C, MessageId("c1")),
    }
    assert await backlog.queued_message_notifications([A]) == set()
    assert await backlog.queued_message_notifications([]) == set()
