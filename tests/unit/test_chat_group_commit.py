"""The group-commit chat store on SQLite: batching, durability, atomicity, order, failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.chat.model import (
    ChatSession,
    DialogIds,
    Direction,
    Disposition,
    LegId,
    RestStatus,
    SessionKind,
    StoredMessage,
)
from bridge.errors import StoreError
from bridge.ids import ChatSessionId, MessageId, SubscriptionId, UserUri
from bridge.subscriptions import NewSubscription
from state import chat_repository as repo
from state import repository
from state.chat_store import SQLChatStore
from state.db import Database

A = UserUri("tel:+15551230001")
B = UserUri("tel:+15551230002")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'group.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def store(db):
    s = SQLChatStore(db)
    assert s.grouped
    yield s
    await s.close()


def session(sid: str, **kw: Any) -> ChatSession:
    values: dict[str, Any] = dict(
        id=ChatSessionId(sid),
        user=A,
        peer=B,
        kind=SessionKind.CONFIRMED,
        direction=Direction.OUTGOING,
        state="inviting",
        leg=LegId("leg-" + sid),
        subject=None,
        originator_name=None,
        t_participant_name=None,
        client_correlator=None,
        created_at=T0,
        updated_at=T0,
    )
    values.update(kw)
    return ChatSession(**values)


def message(mid: str, **kw: Any) -> StoredMessage:
    values: dict[str, Any] = dict(
        id=MessageId(mid),
        user=A,
        peer=B,
        direction=Direction.OUTGOING,
        session_id=None,
        rest_session="adhoc",
        text="hello " + mid,
        content_type="text/plain",
        reports=frozenset(),
        dispositions=frozenset(),
        status="queued",
        date_time=T0,
        created_at=T0,
    )
    values.update(kw)
    return StoredMessage(**values)


async def committed_sessions(db: Database) -> set[str]:
    """Session ids visible to another connection (what is durable)."""
    async with db.sessions() as s:
        return set(await s.scalars(sa.text("SELECT id FROM chat_sessions")))


async def test_concurrent_units_share_commits_and_are_visible_when_they_return(
    store: SQLChatStore, db: Database
) -> None:
    async def unit(i: int) -> str:
        async with store.transaction() as tx:
            await tx.insert_session(session(f"s-{i}"))
            await asyncio.sleep(0)  # let the others queue behind this unit
        # returned: committed, so another connection sees it now
        assert f"s-{i}" in await committed_sessions(db)
        return f"s-{i}"

    done = await asyncio.gather(*(unit(i) for i in range(30)))
    assert set(done) == await committed_sessions(db)
    assert 1 <= store.batches < 30


async def test_rows_written_by_the_store_read_back_equal_through_the_orm(
    store: SQLChatStore, db: Database
) -> None:
    ids = DialogIds(call_id="c@h", local_tag="l", remote_tag="r", contribution_id="k")
    cs = session("s-1", ids=ids, subject="Hi ü", client_correlator="corr")
    msg = message(
        "m1",
        session_id=ChatSessionId("s-1"),
        reports=frozenset({RestStatus.DELIVERED, RestStatus.SENT}),
        dispositions=frozenset({Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY}),
        report_route=("sip:a@x", "sip:b@y"),
        sender_name="Bob",
        date_time=T0 + timedelta(microseconds=123456),
    )
    async with store.transaction() as tx:
        await tx.insert_session(cs)
        stored = await tx.insert_message(msg, expires_at=LATER)
    ended = replace(cs, state="ended", ended_at=LATER, end_reason="bye", updated_at=LATER)
    async with store.transaction() as tx:
        await tx.save_session(ended)
        sent = await tx.set_message_status(stored, "sending", now=LATER)
    async with db.sessions() as s:
        assert await repo.session_by_id(s, "s-1") == ended
        assert await repo.get_message(s, A, "m1", Direction.OUTGOING) == sent
        expires = await s.scalar(sa.text("SELECT expires_at FROM chat_messages"))
    assert str(expires).startswith("2026-01-03 03:04:05")


async def test_a_message_not_in_memory_is_read_from_the_database(store: SQLChatStore) -> None:
    """The look-up behind the duplicate check: absent, present, other direction, other user."""
    async with store.transaction() as tx:
        assert await tx.get_message(A, "m1", Direction.INCOMING) is None
        stored = await tx.insert_message(
            message("m1", direction=Direction.INCOMING, status="received"), expires_at=LATER
        )
    store.memory.clear()
    statements = store.raw_statements
    async with store.transaction() as tx:
        assert await tx.get_message(A, "m1", Direction.INCOMING) == stored
        assert await tx.get_message(A, "m1", Direction.OUTGOING) is None
        assert await tx.get_message(B, "m1", Direction.INCOMING) is None
    assert store.raw_statements == statements + 3  # each look-up probes first


async def test_detached_messages_come_from_unflushed_writes_and_the_database(
    store: SQLChatStore,
) -> None:
    """The adhoc queue look-up: pending writes (this unit's and earlier units') and rows."""

    async def detached() -> list[str]:
        async with store.transaction() as tx:
            return [m.id for m in await tx.detached_messages(A, B, "adhoc", "queued")]

    async def first() -> list[str]:
        async with store.transaction() as tx:
            await tx.insert_message(message("m1"), expires_at=LATER)
            await tx.insert_message(message("other", peer=A), expires_at=LATER)  # not B
            found = await tx.detached_messages(A, B, "adhoc", "queued")
            assert store._writer is not None and not store._writer.in_transaction  # no flush
            return [m.id for m in found]

    async def second() -> list[str]:  # runs after first() ended, in the same batch
        async with store.transaction() as tx:
            await tx.insert_message(message("m2"), expires_at=LATER)
            return [m.id for m in await tx.detached_messages(A, B, "adhoc", "queued")]

    assert list(await asyncio.gather(first(), second())) == [["m1"], ["m1", "m2"]]
    assert await detached() == ["m1", "m2"]  # committed: read from the database
    async with store.transaction() as tx:
        m1 = await tx.get_message(A, "m1", Direction.OUTGOING)
        assert m1 is not None
        await tx.insert_session(session("s-1"))
        await tx.set_message_status(m1, "sending", now=LATER, session_id=ChatSessionId("s-1"))
        assert [m.id for m in await tx.detached_messages(A, B, "adhoc", "queued")] == ["m2"]
    assert await detached() == ["m2"]
    async with store.transaction() as tx:  # requeued (detached again): in the queue, in order
        m1 = await tx.get_message(A, "m1", Direction.OUTGOING)
        assert m1 is not None
        await tx.set_message_status(m1, "queued", now=LATER, detach=True)
    assert await detached() == ["m1", "m2"]


async def test_a_failed_batch_fails_every_waiter_and_leaves_nothing(
    store: SQLChatStore, db: Database
) -> None:
    async with store.transaction() as tx:
        await tx.insert_message(message("m1"), expires_at=LATER)
    store.memory.messages.clear()  # the duplicate below must reach the database

    async def good() -> None:
        async with store.transaction() as tx:
            await tx.insert_session(session("s-good"))
            await asyncio.sleep(0)

    async def duplicate() -> None:
        async with store.transaction() as tx:
            await tx.insert_message(message("m1"), expires_at=LATER)  # same imdn id

    results = await asyncio.gather(good(), duplicate(), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    assert "IntegrityError" in str(results[0])
    assert await committed_sessions(db) == set()
    # the memory was reset from the database, and the store goes on
    async with store.transaction() as tx:
        assert await tx.session_by_id("s-good") is None
        assert len(await tx.find_messages(A, "m1")) == 1
        await tx.insert_session(session("s-after"))
    assert await committed_sessions(db) == {"s-after"}


async def test_a_unit_that_raises_leaves_no_trace_and_its_batch_commits(
    store: SQLChatStore, db: Database
) -> None:
    async def failing() -> None:
        async with store.transaction() as tx:
            await tx.insert_session(session("s-bad"))
            await tx.insert_message(message("m-bad"), expires_at=LATER)
            await asyncio.sleep(0)
            raise RuntimeError("app error")

    async def fine() -> None:
        async with store.transaction() as tx:
            await tx.insert_session(session("s-ok"))

    results = await asyncio.gather(failing(), fine(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert await committed_sessions(db) == {"s-ok"}
    async with store.transaction() as tx:
        assert await tx.session_by_id("s-bad") is None
        assert await tx.get_message(A, "m-bad", Direction.OUTGOING) is None


async def test_order_of_writes_and_notifications_within_a_batch(
    store: SQLChatStore, db: Database
) -> None:
    units: list[Any] = []

    async def step(i: int) -> None:
        async with store.transaction() as tx:
            units.append(tx)
            if i == 0:
                inserted = await tx.insert_message(message("m1"), expires_at=LATER)
                assert inserted.seq > 0
            else:
                current = await tx.get_message(A, "m1", Direction.OUTGOING)
                assert current is not None
                await tx.set_message_status(current, ["sending", "sent"][i - 1], now=T0)
            await tx.enqueue(
                user=A,
                subscription_id=SubscriptionId("sub-1"),
                notify_url="http://app.test/a",
                root="chatMessageStatusNotification",
                body={"step": i},
                now=T0,
            )
            await asyncio.sleep(0)

    await asyncio.gather(*(step(i) for i in range(3)))
    assert store.batches == 1
    async with db.sessions() as s:
        assert await repo.get_message(s, A, "m1", Direction.OUTGOING) is not None
        status = await s.scalar(sa.text("SELECT status FROM chat_messages"))
        bodies = list(await s.scalars(sa.text("SELECT body FROM notification_outbox ORDER BY id")))
    assert status == "sent"
    assert [n.body["step"] for u in units for n in u.notifications] == [0, 1, 2]
    ids = [n.id for u in units for n in u.notifications]
    assert ids == sorted(ids) and len(bodies) == 3


async def test_list_reads_see_earlier_units_and_own_buffered_writes(store: SQLChatStore) -> None:
    async def first() -> None:
        async with store.transaction() as tx:
            await tx.insert_message(message("m1"), expires_at=LATER)
            await asyncio.sleep(0)

    async def second() -> list[str]:
        async with store.transaction() as tx:
            mine = await tx.insert_message(message("m2"), expires_at=LATER)
            moved = await tx.set_message_status(mine, "queued", now=T0)
            assert moved.seq == mine.seq
            found = await tx.detached_messages(A, B, "adhoc", "queued")
            return [m.id for m in found]

    _, seen = await asyncio.gather(first(), second())
    assert seen == ["m1", "m2"]
    async with store.transaction() as tx:
        m1 = await tx.get_message(A, "m1", Direction.OUTGOING)
        assert m1 is not None
        await tx.set_message_status(m1, "sending", now=T0, session_id=ChatSessionId("s-x"))
        assert [m.id for m in await tx.detached_messages(A, B, "adhoc", "queued")] == ["m2"]
        await tx.insert_session(session("s-x"))  # the message's session, same unit


async def test_live_sessions_are_kept_in_memory_and_ended_ones_leave_it(
    store: SQLChatStore, db: Database
) -> None:
    adhoc = session("a-1", kind=SessionKind.ADHOC, state="connected")
    async with store.transaction() as tx:
        await tx.insert_session(adhoc)
    assert "a-1" in store.memory.sessions
    async with store.transaction() as tx:
        assert await tx.live_adhoc_session(A, B, ["connected"]) == adhoc
        assert await tx.session_by_leg("leg-a-1") == adhoc
        await tx.save_session(replace(adhoc, state="closed", ended_at=T0))
    assert "a-1" not in store.memory.sessions and "leg-a-1" not in store.memory.legs
    async with store.transaction() as tx:
        assert await tx.live_adhoc_session(A, B, ["connected"]) is None
        ended = await tx.session_by_leg("leg-a-1")  # now from the database
        assert ended is not None and ended.state == "closed"
    # a new store (a restart) loads what is not ended, and continues the seq
    async with store.transaction() as tx:
        await tx.insert_session(session("s-live"))
        last = await tx.insert_message(message("m9"), expires_at=LATER)
    await store.close()
    again = SQLChatStore(db)
    try:
        async with again.transaction() as tx:
            assert await tx.session_by_id("s-live") == session("s-live")
            nxt = await tx.insert_message(message("m10"), expires_at=LATER)
        assert set(again.memory.sessions) == {"s-live"}
        assert nxt.seq > last.seq
    finally:
        await again.close()


async def test_subscriptions_are_cached_until_one_changes(
    store: SQLChatStore, db: Database
) -> None:
    async def active() -> list[str]:
        async with store.transaction() as tx:
            return [s.id for s in await tx.active_subscriptions(A, datetime.now(UTC))]

    assert await active() == []
    async with db.sessions.begin() as s:
        sub, _ = await repository.create_subscription(
            s, NewSubscription(user=A, notify_url="http://app.test/a"), datetime.now(UTC)
        )
    assert await active() == [sub.id]
    assert await active() == [sub.id]  # from memory
    async with db.sessions.begin() as s:
        assert await repository.delete_subscription(s, A, sub.id, datetime.now(UTC))
    assert await active() == []


async def test_another_writer_makes_the_batch_wait_off_the_event_loop(
    store: SQLChatStore, db: Database
) -> None:
    async with store.transaction() as tx:  # open the store (its writer) first
        await tx.insert_session(session("s-0"))
    path = db.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock, held by another connection
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        async def unit() -> None:
            async with store.transaction() as tx:
                await tx.insert_session(session("s-1"))

        beat = asyncio.create_task(ticker())
        waiting = asyncio.create_task(unit())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert ticks >= 10  # the loop kept running while the store waited
        other.execute("COMMIT")
        await asyncio.wait_for(waiting, 5)
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    finally:
        other.close()
    assert store._writer is not None and store._writer.waited >= 1
    assert await committed_sessions(db) == {"s-0", "s-1"}


async def test_the_direct_store_keeps_the_same_contract(db: Database) -> None:
    """The path PostgreSQL takes: one database transaction per unit."""
    direct = SQLChatStore(db)
    direct.grouped = False
    try:
        async with direct.transaction() as tx:
            await tx.insert_session(session("s-1"))
            stored = await tx.insert_message(message("m1"), expires_at=LATER)
            await tx.enqueue(
                user=A,
                subscription_id=SubscriptionId("sub-1"),
                notify_url="http://app.test/a",
                root="chatMessageNotification",
                body={"n": 1},
                now=T0,
            )
        assert [n.body for n in tx.notifications] == [{"n": 1}]
        assert await committed_sessions(db) == {"s-1"}
        with pytest.raises(RuntimeError):
            async with direct.transaction() as tx:
                await tx.set_message_status(stored, "sending", now=T0)
                raise RuntimeError("rolled back")
        async with direct.transaction() as tx:
            found = await tx.get_message(A, "m1", Direction.OUTGOING)
            assert found is not None and found.status == "queued"
    finally:
        await direct.close()


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    sys.path.insert(0, sys.argv[2])
    from tests.unit.test_chat_group_commit import message, session
    from bridge.ids import ChatSessionId
    from state.chat_store import SQLChatStore
    from state.db import Database

    async def main():
        db = Database("sqlite:///" + sys.argv[1])
        store = SQLChatStore(db)
        later = datetime(2030, 1, 1, tzinfo=UTC)

        async def unit(i):
            async with store.transaction() as tx:
                await tx.insert_session(session(f"s-{i}"))
                await asyncio.sleep(0)
                await tx.insert_message(
                    message(f"m-{i}", session_id=ChatSessionId(f"s-{i}")), expires_at=later
                )
            print(i, flush=True)

        i = 0
        while True:
            await asyncio.gather(*(unit(i + k) for k in range(8)))
            i += 8

    asyncio.run(main())
    """
)


async def test_acknowledged_units_survive_kill_9_and_a_cut_batch_is_all_or_nothing(
    db: Database, tmp_path: Path
) -> None:
    path = db.url.database
    assert path is not None
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked: set[str] = set()
    try:
        assert child.stdout is not None
        loop = asyncio.get_running_loop()
        while len(acked) < 200:
            line = await asyncio.wait_for(loop.run_in_executor(None, child.stdout.readline), 20)
            if not line:
                _, err = child.communicate(timeout=5)
                pytest.fail(f"child ended early: {err[-2000:]}")
            acked.add(f"s-{int(line)}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    async with db.sessions() as s:
        sessions = set(await s.scalars(sa.text("SELECT id FROM chat_sessions")))
        messages = set(await s.scalars(sa.text("SELECT session_id FROM chat_messages")))
    assert acked <= sessions  # nothing acknowledged is lost
    assert sessions == messages  # no unit is half there


def test_only_a_sqlite_file_gets_the_group_commit_store(tmp_path: Path) -> None:
    assert SQLChatStore(Database(f"sqlite:///{tmp_path / 'x.db'}")).grouped
    assert not SQLChatStore(Database("sqlite://")).grouped


async def test_commits_are_paced_by_the_commit_interval(db: Database) -> None:
    paced = SQLChatStore(db, commit_interval=0.05)
    try:
        loop = asyncio.get_running_loop()
        async with paced.transaction() as tx:  # the first commit starts at once
            await tx.insert_session(session("p-0"))
        assert paced.batches == 1
        started = loop.time()

        async def unit(i: int) -> None:
            async with paced.transaction() as tx:
                await tx.insert_session(session(f"p-{i}"))
            assert f"p-{i}" in await committed_sessions(db)  # durable when it returns

        first = asyncio.ensure_future(unit(1))
        await asyncio.sleep(0.02)  # inside the interval: later units join the same batch
        await asyncio.gather(first, *(unit(i) for i in range(2, 10)))
        assert loop.time() - started >= 0.045  # the second commit waited for the interval
        assert paced.batches == 2
    finally:
        await paced.close()


async def test_close_commits_a_paced_batch_at_once(db: Database) -> None:
    paced = SQLChatStore(db, commit_interval=0.05)
    async with paced.transaction() as tx:
        await tx.insert_session(session("c-0"))

    async def unit() -> None:
        async with paced.transaction() as tx:
            await tx.insert_session(session("c-1"))

    waiting = asyncio.ensure_future(unit())
    await asyncio.sleep(0.001)
    await asyncio.wait_for(paced.close(), 0.04)  # does not sit out the interval
    await waiting
    assert {"c-0", "c-1"} <= await committed_sessions(db)


async def test_a_unit_queued_behind_close_fails_instead_of_hanging(db: Database) -> None:
    """A unit that waited for the store's lock while the store closed gets a StoreError.

    It used to run on a closed store: its commit task died on the missing writer
    ("Task exception was never retrieved") and the unit waited for that commit forever.
    """
    store = SQLChatStore(db)
    async with store.transaction() as tx:  # opened
        await tx.insert_session(session("q-0"))
    holder_in = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.transaction() as tx:
            await tx.insert_session(session("q-1"))
            holder_in.set()
            await release.wait()

    async def queued() -> None:
        async with store.transaction() as tx:
            await tx.insert_session(session("q-2"))

    first = asyncio.ensure_future(holder())
    await holder_in.wait()
    second = asyncio.ensure_future(queued())  # waits for the lock behind the holder
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.close())  # queues behind both
    await asyncio.sleep(0)
    release.set()
    await first
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(second, 5)
    await asyncio.wait_for(closing, 5)
    assert {"q-0", "q-1"} <= await committed_sessions(db)
    assert "q-2" not in await committed_sessions(db)
