"""Owed IMDNs (issue 13, defect 9; migration 28; ``bridge.chat.core`` "Owed reports").

On both stores (the ``db`` fixture: a SQLite file, the group-commit store; PostgreSQL, the
direct one): the "delivered" report of a received message is recorded as owed in the unit
that marks the message Delivered, forgotten only after the peer took it and the grace
passed, and sent again by SIP MESSAGE by the next start when it was not. Two instances
never claim the same owed report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from bridge.chat import core as chat_core
from bridge.chat import recovery
from bridge.chat.core import utcnow
from bridge.chat.model import ADHOC, Disposition, LegId, ReportKind
from bridge.chat.ports import MessageReceived, OutgoingReport, ReportDelivery
from bridge.chat.store import OwedReport
from bridge.ids import MessageId, UserUri
from state import chat_repository
from state.db import Database
from tests.fakes.chat_world import A, B, World, make_world
from tests.fakes.signalling import FakeSignalling
from tests.unit.test_chat_service import MESSAGE, incoming


class AckSignalling(FakeSignalling):
    """Records ``deliver_report`` calls; each waits for ``gate`` and answers ``taken``."""

    def __init__(self, taken: bool = True) -> None:
        super().__init__()
        self.taken = taken
        self.gate = asyncio.Event()
        self.gate.set()
        self.delivered: list[tuple[LegId | None, OutgoingReport]] = []

    async def deliver_report(self, leg: LegId | None, report: OutgoingReport) -> bool:
        self.delivered.append((leg, report))
        await self.gate.wait()
        return self.taken


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_core, "REPORT_TAKEN_GRACE", 0.05)


async def owed_rows(db: Database) -> set[tuple[str, str, str]]:
    async with db.sessions() as s:
        rows = await s.execute(sa.text("SELECT user_uri, message_id, kind FROM chat_owed_reports"))
        return {(r[0], r[1], r[2]) for r in rows}


async def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[misc]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def receive(w: World, mid: str, *dispositions: Disposition) -> None:
    await w.chat.events.handle_event(MessageReceived(None, B, incoming(mid, *dispositions)))


async def deliver_notification(w: World, mid: str) -> None:
    (n,) = [n for n in w.notifier.of(B, MESSAGE) if n.body.get("messageId") == mid]
    await w.notifier.deliver(n)


def test_the_adapter_speaks_report_delivery() -> None:
    from bridge.signalling.adapter import SipSignalling

    assert issubclass(SipSignalling, ReportDelivery)
    assert isinstance(AckSignalling(), ReportDelivery)
    assert not isinstance(FakeSignalling(), ReportDelivery)


async def test_owed_with_the_delivered_status_and_forgotten_once_taken(db: Database) -> None:
    sip = AckSignalling()
    sip.gate.clear()  # the peer has not answered yet
    w = await make_world(db, sip)
    try:
        await w.subscribe(B)
        await receive(w, "m1", Disposition.POSITIVE_DELIVERY)
        await receive(w, "no-report")
        assert await owed_rows(db) == set()
        await deliver_notification(w, "m1")
        await deliver_notification(w, "no-report")
        # committed together: the status and the decision to report it
        assert (await w.chat.messages.get_message(B, A, ADHOC, "m1")).status == "delivered"
        assert await owed_rows(db) == {(B, "m1", "delivered")}
        await until(lambda: asyncio.sleep(0, len(sip.delivered) == 1))
        await asyncio.sleep(0.1)  # past the grace, but not taken: still owed
        assert await owed_rows(db) == {(B, "m1", "delivered")}
        sip.gate.set()
        await until(lambda: _empty(db))
        ((leg, report),) = sip.delivered
        assert (leg, report.message_id, report.kind, report.peer) == (
            None,
            "m1",
            ReportKind.DELIVERED,
            A,
        )
    finally:
        await w.chat.stop()


async def _empty(db: Database) -> bool:
    return not await owed_rows(db)


async def test_a_report_lost_or_cut_by_a_crash_is_sent_again_at_start(db: Database) -> None:
    lost = AckSignalling(taken=False)  # the peer never took it (or the process died first)
    w = await make_world(db, lost)
    await w.subscribe(B)
    for mid in ("owed", "gone"):
        await receive(w, mid, Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY)
        await deliver_notification(w, mid)
    await w.chat.messages.report_message(B, A, ADHOC, "owed", _displayed())
    await w.chat.core.drain()
    assert len(lost.delivered) == 3
    await w.chat.stop()
    assert await owed_rows(db) == {
        (B, "owed", "delivered"),
        (B, "owed", "displayed"),
        (B, "gone", "delivered"),
    }
    async with db.sessions.begin() as s:  # past retention: its report goes with it
        await s.execute(sa.text("DELETE FROM chat_messages WHERE message_id = 'gone'"))

    sip = AckSignalling()
    again = await make_world(db, sip)
    try:
        await until(lambda: asyncio.sleep(0, len(sip.delivered) == 2))
        sent = sorted((leg, r.message_id, r.kind.value, r.user, r.peer) for leg, r in sip.delivered)
        assert sent == [
            (None, "owed", "delivered", B, A),
            (None, "owed", "displayed", B, A),
        ]
        await until(lambda: _empty(db))
    finally:
        await again.chat.stop()


def _displayed():  # type: ignore[no-untyped-def]
    from bridge.chat.model import RestStatus

    return RestStatus.DISPLAYED


async def test_a_clean_stop_forgets_what_was_taken_within_the_grace(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_core, "REPORT_TAKEN_GRACE", 60.0)
    sip = AckSignalling()
    w = await make_world(db, sip)
    await w.subscribe(B)
    await receive(w, "m1", Disposition.POSITIVE_DELIVERY)
    await deliver_notification(w, "m1")
    await w.chat.core.drain()
    assert await owed_rows(db) == {(B, "m1", "delivered")}  # taken, within the grace
    await w.chat.stop()
    assert await owed_rows(db) == set()


async def test_two_instances_never_claim_the_same_owed_report(db: Database) -> None:
    now = utcnow()
    owed = [OwedReport(UserUri(B), MessageId(f"m{i}"), ReportKind.DELIVERED) for i in range(40)]
    async with db.sessions.begin() as s:
        await chat_repository.owe_reports(s, owed, now)
        await chat_repository.owe_reports(s, owed[:1], now)  # recorded twice: one row

    async def claim(owner: str) -> list[OwedReport]:
        async with db.sessions.begin() as s:
            return await chat_repository.claim_owed_reports(
                s, owner, now, now + timedelta(seconds=30)
            )

    if db.is_sqlite:  # one writer: the claims run one after the other
        first, second = await claim("one"), await claim("two")
    else:
        first, second = await asyncio.gather(claim("one"), claim("two"))
    assert not set(first) & set(second)
    assert set(first) | set(second) == set(owed)
    async with db.sessions.begin() as s:  # held: nobody else gets them
        assert await chat_repository.claim_owed_reports(s, "three", now, now) == []
        later = now + timedelta(seconds=31)  # the claims ran out: a restart takes them
        assert len(await chat_repository.claim_owed_reports(s, "three", later, later)) == 40
        await chat_repository.reports_taken(s, owed[:10])
    assert len(await owed_rows(db)) == 30


async def test_recovery_claims_so_a_second_instance_sends_nothing(db: Database) -> None:
    sip = AckSignalling(taken=False)
    w = await make_world(db, sip)
    await w.chat.core.drain()  # the start's own pass is over before anything is owed
    await w.subscribe(B)
    await receive(w, "m1", Disposition.POSITIVE_DELIVERY)
    await deliver_notification(w, "m1")
    await w.chat.core.drain()
    try:
        # the first start (make_world) claimed nothing: the report was owed after it
        first = await recovery.resend_owed_reports(w.chat.core, "instance-1")
        second = await recovery.resend_owed_reports(w.chat.core, "instance-2")
        assert first == (1, 0) and second == (0, 0)
    finally:
        await w.chat.stop()


def test_a_requeued_message_takes_its_peers_delivery_report() -> None:
    """After a restart a sent message is requeued although the peer may have it: its report
    moves it on (no resend); refusing it lost the report for good (the peer deduplicates)."""
    from bridge.chat import delivery
    from bridge.chat.delivery import OutgoingEvent as X
    from bridge.chat.delivery import OutgoingStatus as O

    assert delivery.next_outgoing(O.QUEUED, X.IMDN_DELIVERED) is O.DELIVERED
    assert delivery.next_outgoing(O.QUEUED, X.IMDN_DISPLAYED) is O.DISPLAYED


async def test_a_report_not_taken_is_sent_again_while_running(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the peer is away for a while (its MESSAGE timed out): the report stays owed and a
    # later pass sends it again, without a restart, until the peer takes it
    monkeypatch.setattr(recovery, "OWED_RETRY_INITIAL", 0.05)
    monkeypatch.setattr(recovery, "OWED_RETRY_MAX", 0.2)
    monkeypatch.setattr(recovery, "OWED_MIN_AGE", 0.0)
    monkeypatch.setattr(recovery, "OWED_CLAIM", 0.0)
    sip = AckSignalling(taken=False)
    w = await make_world(db, sip)
    try:
        await w.subscribe(B)
        await receive(w, "m1", Disposition.POSITIVE_DELIVERY)
        await deliver_notification(w, "m1")
        await until(lambda: asyncio.sleep(0, len(sip.delivered) >= 3))  # first + 2 passes
        assert await owed_rows(db) == {(B, "m1", "delivered")}
        sip.taken = True  # the peer is back
        await until(lambda: _empty(db))
        assert {(leg, r.message_id) for leg, r in sip.delivered} == {(None, "m1")}
    finally:
        await w.chat.stop()


async def test_owed_retry_backs_off_while_reports_are_not_taken(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "OWED_RETRY_INITIAL", 10.0)
    monkeypatch.setattr(recovery, "OWED_RETRY_MAX", 35.0)
    monkeypatch.setattr(recovery, "OWED_MIN_AGE", 0.0)
    monkeypatch.setattr(recovery, "OWED_CLAIM", 0.0)
    sip = AckSignalling(taken=False)
    w = await make_world(db, sip)
    try:
        await w.subscribe(B)
        await receive(w, "m1", Disposition.POSITIVE_DELIVERY)
        await deliver_notification(w, "m1")
        await w.chat.core.drain()
        retry = recovery.OwedRetry(w.chat.core)
        retry.start()
        intervals = []
        for _ in range(4):  # not taken: 20, 35 (the most), 35, 35
            await retry.run()
            intervals.append(retry.interval)
        sip.taken = True
        await retry.run()  # taken: back to the start
        intervals.append(retry.interval)
        await until(lambda: _empty(db))  # forgotten after the grace
        await retry.run()  # nothing owed: stays there
        intervals.append(retry.interval)
        assert intervals == [20.0, 35.0, 35.0, 35.0, 10.0, 10.0]
        assert len(sip.delivered) == 1 + 5
    finally:
        await w.chat.stop()


async def test_owed_reports_go_with_their_messages_at_the_retention_sweep(db: Database) -> None:
    now = utcnow()
    owed = [OwedReport(UserUri(B), MessageId(m), ReportKind.DELIVERED) for m in ("kept", "gone")]
    sip = AckSignalling(taken=False)
    w = await make_world(db, sip)
    try:
        await w.subscribe(B)
        await receive(w, "kept", Disposition.POSITIVE_DELIVERY)
        await w.chat.core.drain()
        async with w.chat.core.unit() as work:  # "gone" has no message (purged before)
            await work.tx.owe_reports(owed, now)
        async with w.chat.core.unit() as work:
            await work.tx.purge_expired(now=now, ended_before=now - timedelta(days=7))
        assert await owed_rows(db) == {(B, "kept", "delivered")}
    finally:
        await w.chat.stop()
