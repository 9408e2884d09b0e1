"""Batched delivery (claims of several rows per lane), settings, and subscriptions going away.

Real local receivers, real SQLite (PostgreSQL where marked) stores: the worker
claims a batch from each lane's head, POSTs it in order, deletes delivered rows
in batches, and hands back what it did not send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.ids import SubscriptionId, UserUri
from rest.app import make_app
from rest.delivery import DeliveryService
from rest.handlers import subscriptions as subscription_handlers
from rest.handlers.channels import DELIVERY
from state import outbox
from state.db import Database
from tests.unit.test_delivery import eventually, pending, publish, settings_for
from tests.unit.test_delivery_support import fast_settings

ALICE = UserUri("tel:+15551230001")
USER = "tel%3A%2B15551230001"

Client = TestClient[web.Request, web.Application]


async def enqueue(db: Database, url: str, count: int, lanes: int) -> None:
    async with db.sessions.begin() as s:
        for i in range(count):
            await outbox.enqueue(
                s,
                user=ALICE,
                subscription_id=SubscriptionId(f"sub-{i % lanes}"),
                notify_url=url + f"/s{i % lanes}",
                root="chatMessageNotification",
                body={"seq": i},
            )


async def test_settings_choose_poll_interval_and_concurrency(db) -> None:
    settings = settings_for(db, notification_poll_interval=0.25, notification_concurrency=3)
    svc = DeliveryService(settings, db)
    assert (svc.poll_interval, svc.concurrency) == (0.25, 3)
    assert DeliveryService(settings, db, poll_interval=0.5, concurrency=7).concurrency == 7


async def test_two_workers_with_small_batches_send_each_once_in_order(db, receiver) -> None:
    await enqueue(db, receiver.url(""), 120, 4)
    settings = settings_for(db)
    workers = [DeliveryService(settings, db, poll_interval=0.05, batch_size=5) for _ in range(2)]
    for w in workers:
        await w.start()
    try:
        await receiver.wait_for(120, timeout=10)
        await asyncio.sleep(0.2)
        assert len(receiver.received) == 120
        for lane in range(4):
            assert receiver.seqs(f"/s{lane}") == list(range(lane, 120, 4))
        await eventually(lambda: sum(w.stats.delivered for w in workers) == 120)
    finally:
        for w in workers:
            await w.stop()
    assert await pending(db) == 0


async def test_a_failure_mid_batch_hands_the_rest_back_in_order(db, receiver) -> None:
    await enqueue(db, receiver.url(""), 10, 1)
    receiver.fail_when = lambda _path: len(receiver.received) == 3 and receiver.requests <= 5
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05, batch_size=8)
    await svc.start()
    try:
        await receiver.wait_for(10)
        assert receiver.seqs() == list(range(10))
        assert svc.stats.failed_attempts >= 1
    finally:
        await svc.stop()
    assert await pending(db) == 0


async def test_a_published_row_waits_behind_a_lane_held_elsewhere(db, receiver) -> None:
    # the direct hand-off of a lone published row must not overtake an older row
    async with db.sessions.begin() as s:
        older = await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SubscriptionId("sub-a"),
            notify_url=receiver.url(),
            root="chatMessageNotification",
            body={"seq": 0},
        )
        now = outbox.utcnow()
        assert await outbox.claim(
            s, older.id, owner="other", now=now, until=now + timedelta(seconds=0.5)
        )
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05)
    await svc.start()
    try:
        await svc.publish(
            user=ALICE,
            subscription_id=SubscriptionId("sub-a"),
            notify_url=receiver.url(),
            root="chatMessageNotification",
            body={"seq": 1},
        )
        await asyncio.sleep(0.2)
        assert receiver.received == []
        await receiver.wait_for(2, timeout=3)
        assert receiver.seqs() == [0, 1]
    finally:
        await svc.stop()


async def test_published_rows_are_delivered_and_deleted(db, receiver) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=5.0)
    await svc.start()
    try:
        for lane in range(3):
            await publish(svc, receiver.url(f"/l{lane}"), 4, SubscriptionId(f"sub-{lane}"))
        await receiver.wait_for(12)
        for lane in range(3):
            assert receiver.seqs(f"/l{lane}") == [0, 1, 2, 3]
        for _ in range(100):  # deleted in batches shortly after (no 5 s poll needed)
            if await pending(db) == 0:
                break
            await asyncio.sleep(0.02)
        assert await pending(db) == 0
    finally:
        await svc.stop()


@pytest.fixture
async def app_client(tmp_path, aiohttp_client) -> AsyncIterator[tuple[Client, Database]]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    settings = fast_settings(str(database.url))
    client: Client = await aiohttp_client(make_app(settings, database))
    yield client, database
    await client.close()
    await database.close()


async def subscribe(client: Client, url: str, **extra: object) -> str:
    body: dict[str, object] = {"callbackReference": {"notifyURL": url}, **extra}
    resp = await client.post(
        f"/chat/v1/{USER}/subscriptions", json={"chatNotificationSubscription": body}
    )
    assert resp.status == 201, await resp.text()
    doc = await resp.json()
    return str(doc["chatNotificationSubscription"]["resourceURL"].rsplit("/", 1)[1])


async def test_deleting_a_subscription_drops_its_queue(app_client, receiver) -> None:
    client, database = app_client
    sub = await subscribe(client, receiver.url("/slow"))
    keep = await subscribe(client, receiver.url("/keep"))
    receiver.delays = [0.5]  # the first POST stalls; the rest of its batch is claimed
    delivery = client.app[DELIVERY]
    await publish(delivery, receiver.url("/slow"), 6, SubscriptionId(sub))
    await eventually(lambda: receiver.requests == 1)
    resp = await client.delete(f"/chat/v1/{USER}/subscriptions/{sub}")
    assert resp.status == 204
    async with database.sessions() as s:
        assert await outbox.pending_for(s, sub) == []
    await publish(delivery, receiver.url("/keep"), 1, SubscriptionId(keep))
    await receiver.wait_for(2)
    await asyncio.sleep(0.3)
    # the POST in flight completes; nothing else of the deleted subscription goes out
    assert receiver.seqs("/slow") == [0]
    assert receiver.seqs("/keep") == [0]


async def test_expired_subscriptions_are_swept_with_their_queue(app_client) -> None:
    client, database = app_client
    sub = await subscribe(client, "http://127.0.0.1:1/never", duration=1)
    async with database.sessions.begin() as s:
        await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SubscriptionId(sub),
            notify_url="http://127.0.0.1:1/never",
            root="chatMessageNotification",
            body={},
        )
    later = outbox.utcnow() + timedelta(seconds=2)
    assert await subscription_handlers.sweep_expired(database, later) == 1
    async with database.sessions() as s:
        assert await outbox.pending_for(s, sub) == []


async def test_concurrent_publishes_share_commits_and_keep_order(db, receiver) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05)
    with pytest.raises(ValueError):  # refused at once, never poisoning a shared commit
        await svc.publish(
            user=ALICE, subscription_id=SubscriptionId("x"), notify_url="u", root="", body={}
        )

    async def producer(lane: int) -> list[int]:
        sent = await publish(svc, receiver.url(f"/p{lane}"), 10, SubscriptionId(f"p{lane}"))
        return [n.id for n in sent]

    ids = await asyncio.gather(*(producer(lane) for lane in range(6)))
    async with db.sessions() as s:  # every publish that returned is in the store, in order
        for lane in range(6):
            assert [n.id for n in await outbox.pending_for(s, f"p{lane}")] == ids[lane]
    await svc.start()
    try:
        await receiver.wait_for(60)
        for lane in range(6):
            assert receiver.seqs(f"/p{lane}") == list(range(10))
    finally:
        await svc.stop()


async def test_woken_lanes_are_served_without_waiting_for_a_scan(db, receiver) -> None:
    # one lane task for four lanes and no periodic scan in sight: the lanes woken
    # while the only task was busy are served as soon as it is free again
    svc = DeliveryService(settings_for(db), db, poll_interval=30.0, concurrency=1)
    await svc.start()
    try:
        await asyncio.sleep(0.1)  # the first scan is over
        for lane in range(4):
            await publish(svc, receiver.url(f"/w{lane}"), 3, SubscriptionId(f"w{lane}"))
        await receiver.wait_for(12, timeout=5)
        for lane in range(4):
            assert receiver.seqs(f"/w{lane}") == [0, 1, 2]
    finally:
        await svc.stop()


async def test_enqueue_and_wake_beside_a_backlog_of_a_dead_receiver(db, receiver) -> None:
    receiver.fail_when = lambda path: path.startswith("/dead")
    await enqueue(db, receiver.url("/dead"), 300, 3)
    svc = DeliveryService(settings_for(db), db, poll_interval=30.0)
    await svc.start()
    try:
        await eventually(lambda: svc.stats.failed_attempts >= 3)
        async with db.sessions.begin() as s:
            n = await outbox.enqueue(
                s,
                user=ALICE,
                subscription_id=SubscriptionId("live"),
                notify_url=receiver.url("/live"),
                root="chatMessageNotification",
                body={"seq": 0},
            )
        svc.wake(n)
        await receiver.wait_for(1, timeout=2)
        assert receiver.seqs("/live") == [0]
    finally:
        await svc.stop()
