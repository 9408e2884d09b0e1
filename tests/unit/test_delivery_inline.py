"""Chat store batches claim their notifications' lanes inline (state.outbox.InlineClaims).

Real SQLite file store, real DeliveryService, real local receiver: the rows a
group-commit batch writes are claimed in that batch's transaction when they
are all their lane holds, and their lane tasks start right after the commit,
with no scheduler pass; every other row keeps the usual path, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ids import SubscriptionId, UserUri
from rest.delivery import DeliveryService
from state import outbox
from state.chat_store import SQLChatStore
from state.db import Database
from tests.unit.test_delivery import eventually, pending, settings_for
from tests.unit.test_delivery_support import Receiver

ALICE = UserUri("tel:+15551230001")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()


async def _unit(
    store: SQLChatStore, svc: DeliveryService, url: str, lane: str, seqs: list[int]
) -> None:
    """One chat unit that enqueues ``seqs`` on ``lane`` and wakes them after its commit."""
    async with store.transaction() as tx:
        for seq in seqs:
            await tx.enqueue(
                user=ALICE,
                subscription_id=SubscriptionId(lane),
                notify_url=url,
                root="chatMessageNotification",
                body={"seq": seq},
                now=outbox.utcnow(),
            )
    svc.wake(*tx.notifications)  # as bridge.chat.core does after every unit


async def test_batch_rows_are_claimed_inline_and_delivered_in_order(
    db: Database, receiver: Receiver
) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=30.0)
    store = SQLChatStore(db, claims=svc)
    passes = 0
    real_pass = svc._pass

    async def counting(lanes: set[str] | None) -> float:
        nonlocal passes
        passes += 1
        return await real_pass(lanes)

    svc._pass = counting  # type: ignore[method-assign]
    await svc.start()
    try:
        await eventually(lambda: passes >= 1)  # the start-up scan
        await asyncio.sleep(0.05)
        before = passes
        units = [
            _unit(store, svc, receiver.url(f"/l{lane}"), f"l{lane}", [3 * i, 3 * i + 1, 3 * i + 2])
            for i in range(5)
            for lane in range(3)
        ]
        for unit in units:  # one after the other: every batch finds its lane idle or busy
            await unit
        await receiver.wait_for(45, timeout=5)
        for lane in range(3):
            assert receiver.seqs(f"/l{lane}") == list(range(15))
        assert svc.stats.inline_lanes >= 3  # at least each lane's first batch went inline
        assert passes - before < 15  # most batches needed no pass of their own
        await eventually(lambda: not svc._lanes)
        assert not svc._inline  # every inline row's wake was seen
    finally:
        await svc.stop()
        await store.close()
    assert await pending(db) == 0  # delivered rows were settled (deleted)


async def test_a_lane_with_older_rows_is_not_claimed_inline(
    db: Database, receiver: Receiver
) -> None:
    svc = DeliveryService(
        settings_for(db, notification_backoff_initial=0.2, notification_backoff_max=0.2),
        db,
        poll_interval=30.0,
    )
    store = SQLChatStore(db, claims=svc)
    receiver.failures = [503]  # the first POST fails: its row stays at the lane's head
    await svc.start()
    try:
        await _unit(store, svc, receiver.url("/x"), "x", [0])
        await eventually(lambda: receiver.requests >= 1)
        await eventually(lambda: not svc._lanes)
        await _unit(store, svc, receiver.url("/x"), "x", [1, 2])  # behind the failed row
        assert not svc._lanes  # not claimed inline: row 0 still waits for its retry
        await receiver.wait_for(3, timeout=5)
        assert receiver.seqs("/x") == [0, 1, 2]
    finally:
        await svc.stop()
        await store.close()


async def test_a_failed_batch_claims_nothing_and_keeps_the_settled_rows(
    db: Database, receiver: Receiver
) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=30.0)
    await svc.start()
    try:
        svc._settled.extend([101, 102])
        claims = svc.claim_round()
        assert claims is not None
        claims.failed()
        assert svc._settled[:2] == [101, 102]
    finally:
        await svc.stop()


async def test_no_inline_claims_on_postgres_or_when_stopped(db: Database) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=30.0)
    assert svc.claim_round() is None  # not started: the scheduler path only
