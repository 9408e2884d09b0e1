"""state.writer: the synchronous SQLite writer that runs on the event loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.errors import StoreError
from bridge.ids import SubscriptionId, UserUri
from bridge.subscriptions import NewSubscription
from state import outbox, repository
from state.db import Database
from state.writer import SQLiteWriter, run_now

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await db.migrate()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def writer(database: Database) -> AsyncIterator[SQLiteWriter]:
    w = SQLiteWriter(database.url, outbox.writer_lock(database), name="test-writer")
    try:
        yield w
    finally:
        await w.close()


def _new(user: str, correlator: str | None = None) -> NewSubscription:
    return NewSubscription(
        user=UserUri(user), notify_url="http://127.0.0.1:1/n", client_correlator=correlator
    )


async def _count(database: Database) -> int:
    async with database.sessions() as session:
        return len(await repository.list_subscriptions(session, UserUri("tel:+1"), NOW))


async def test_a_query_that_suspends_fails_loudly() -> None:
    async def suspends() -> int:
        await asyncio.sleep(0)
        return 1

    async def immediate() -> int:
        return 2

    with pytest.raises(StoreError, match="suspended"):
        run_now(suspends())
    assert run_now(immediate()) == 2


async def test_transaction_commits_what_the_repository_functions_write(
    database: Database, writer: SQLiteWriter
) -> None:
    async with writer.transaction() as session:
        created, new = await repository.create_subscription(session, _new("tel:+1", "c1"), NOW)
        assert new
        again, new = await repository.create_subscription(session, _new("tel:+1", "c1"), NOW)
        assert not new and again.id == created.id  # the correlator is found in the open batch
    assert await _count(database) == 1  # seen by another connection: committed
    assert not writer.in_transaction


async def test_a_raising_block_leaves_no_trace_and_frees_the_lock(
    database: Database, writer: SQLiteWriter
) -> None:
    with pytest.raises(RuntimeError):
        async with writer.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1"), NOW)
            raise RuntimeError("boom")
    assert await _count(database) == 0
    lock = outbox.writer_lock(database)
    assert lock is not None and not lock.locked()
    async with writer.transaction() as session:  # usable again
        await repository.create_subscription(session, _new("tel:+1"), NOW)
    assert await _count(database) == 1


async def test_concurrent_transactions_queue_instead_of_nesting(
    database: Database, writer: SQLiteWriter
) -> None:
    order: list[str] = []

    async def one(name: str) -> None:
        async with writer.transaction() as session:
            order.append(f"{name} in")
            await repository.create_subscription(session, _new("tel:+1"), NOW)
            await asyncio.sleep(0.01)  # the other one must wait for this commit
            order.append(f"{name} out")

    await asyncio.gather(one("a"), one("b"))
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert await _count(database) == 2


async def test_two_writers_of_one_file_share_the_lock(database: Database) -> None:
    lock = outbox.writer_lock(database)
    first = SQLiteWriter(database.url, lock)
    second = SQLiteWriter(database.url, lock)
    try:
        async with first.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1"), NOW)
            blocked = asyncio.ensure_future(second.call(lambda conn, db: conn.commit()))
            await asyncio.sleep(0.02)
            assert not blocked.done()  # queued on the shared lock, not in SQLite
        await asyncio.wait_for(blocked, 2)
        assert first.waited == second.waited == 0
    finally:
        await first.close()
        await second.close()


async def test_a_begin_that_finds_another_process_writing_waits_off_the_loop(
    database: Database, writer: SQLiteWriter, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, other.execute, "COMMIT")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick = asyncio.create_task(ticker())
    try:
        async with writer.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1"), NOW)
    finally:
        tick.cancel()
        other.close()
    assert writer.waited == 1
    assert ticks >= 5  # the loop kept running while the begin waited
    assert await _count(database) == 1


async def test_outbox_statements_run_unchanged_on_the_writer(
    database: Database, writer: SQLiteWriter
) -> None:
    async with writer.transaction() as session:
        n = await outbox.enqueue(
            session,
            user=UserUri("tel:+1"),
            subscription_id=SubscriptionId("s1"),
            notify_url="http://127.0.0.1:1/n",
            root="chatEventNotification",
            body={"eventType": "Accepted"},
            now=NOW,
        )
        assert await outbox.claim_if_alone(session, n.id, owner="me", until=NOW)
    async with database.sessions() as session:
        assert await outbox.count_pending(session) == 1
        left = await session.execute(sa.text("SELECT claimed_by FROM notification_outbox"))
        assert [r[0] for r in left] == ["me"]


async def _hammer(database: Database, writer: SQLiteWriter, session_of: object) -> list[str]:
    """64 read-then-write subscription creates while the writer commits in a loop."""
    errors: list[str] = []
    stop = asyncio.Event()

    async def churn() -> None:
        while not stop.is_set():
            async with writer.transaction() as session:
                await repository.create_subscription(session, _new("tel:+2"), NOW)
            await asyncio.sleep(0)

    async def create(i: int) -> None:
        try:
            async with session_of(database) as session:  # type: ignore[operator]
                await repository.list_subscriptions(session, UserUri("tel:+1"), NOW)
                await asyncio.sleep(0.001)  # the churn commits between the read and the write
                await repository.create_subscription(session, _new("tel:+1", f"c{i}"), NOW)
        except sa.exc.OperationalError as exc:
            errors.append(str(exc.orig))

    churner = asyncio.create_task(churn())
    await asyncio.gather(*(create(i) for i in range(64)))
    stop.set()
    await churner
    return errors


async def test_write_sessions_never_meet_database_is_locked(
    database: Database, writer: SQLiteWriter
) -> None:
    assert await _hammer(database, writer, outbox.write_session) == []
    assert await _count(database) == 64


async def test_checkpoints_never_share_the_connection_with_the_next_transaction(
    database: Database, writer: SQLiteWriter
) -> None:
    writer.CHECKPOINT_EVERY = 1  # a checkpoint after every commit, on the thread

    async def one(i: int) -> None:
        async with writer.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1", f"k{i}"), NOW)

    await asyncio.gather(*(one(i) for i in range(60)))
    assert await _count(database) == 60


async def test_the_wal_starts_over_under_continuous_writes(
    database: Database, writer: SQLiteWriter, tmp_path: Path
) -> None:
    """Two writers commit back to back without a pause; checkpoints still empty the WAL.

    A passive checkpoint running beside such writers never copies the frames
    committed while it ran, so SQLite never started the WAL over and the file
    grew with every commit (660 MB in 45 s of chat load).
    """
    other = SQLiteWriter(database.url, outbox.writer_lock(database), name="test-writer-2")
    writer.CHECKPOINT_EVERY = other.CHECKPOINT_EVERY = 20
    wal = tmp_path / "w.db-wal"
    biggest = 0
    payload = "x" * 3000  # most of a page per commit

    async def commits(w: SQLiteWriter, tag: str) -> None:
        nonlocal biggest
        for i in range(300):
            async with w.transaction() as session:
                sub = NewSubscription(
                    user=UserUri("tel:+1"),
                    notify_url=f"http://127.0.0.1:1/{payload}",
                    client_correlator=f"{tag}{i}",
                )
                await repository.create_subscription(session, sub, NOW)
            biggest = max(biggest, wal.stat().st_size)
            await asyncio.sleep(0)  # the loop runs other work (the checkpoints) between commits

    try:
        await asyncio.gather(commits(writer, "a"), commits(other, "b"))
    finally:
        await other.close()
    assert await _count(database) == 600
    assert writer.checkpoints + other.checkpoints >= 3
    # 600 commits of four pages or so each: about 10 MB without a restart
    assert biggest < 4_000_000, biggest


async def test_a_reader_that_pins_the_wal_is_reported(
    database: Database, writer: SQLiteWriter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints that cannot copy the whole WAL (a reader on an old snapshot) warn."""
    writer.CHECKPOINT_EVERY = 1
    writer.SHORT_WARNING = 3
    reader = sqlite3.connect(tmp_path / "w.db")
    reader.isolation_level = None
    try:
        async with writer.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1", "r0"), NOW)
        await _settle(writer)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM chat_subscriptions").fetchall()  # snapshot held
        with caplog.at_level(logging.WARNING, logger="state.writer"):
            for i in range(1, 4):
                async with writer.transaction() as session:
                    await repository.create_subscription(session, _new("tel:+1", f"r{i}"), NOW)
                await _settle(writer)
        assert [r.message for r in caplog.records if "not copied whole" in r.message]
        before = writer.checkpoints
        reader.execute("COMMIT")  # the snapshot is gone: the next checkpoint copies it all
        async with writer.transaction() as session:
            await repository.create_subscription(session, _new("tel:+1", "r9"), NOW)
        await _settle(writer)
        assert writer.checkpoints == before + 1
    finally:
        reader.close()


async def _settle(writer: SQLiteWriter) -> None:
    """Wait for the background checkpoint, if one is running."""
    task = writer._checkpointing
    if task is not None:
        await task
