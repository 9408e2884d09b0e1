"""The delivery worker against a real local HTTP receiver.

docs/decisions.md "Notification delivery" is what it must do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bridge.config import Settings
from bridge.ids import SubscriptionId, UserUri
from bridge.ports import Notification, Notifier
from rest.delivery import DeliveryService, backoff_delay
from state import outbox
from state.db import Database
from tests.unit.test_delivery_support import Receiver, fast_settings

ALICE = UserUri("tel:+15551230001")
SUB_A = SubscriptionId("sub-a")
SUB_B = SubscriptionId("sub-b")


@pytest.fixture
async def service(db, tmp_path) -> AsyncIterator[DeliveryService]:
    svc = DeliveryService(settings_for(db), db, poll_interval=0.1)
    await svc.start()
    yield svc
    await svc.stop()


async def publish(
    svc: Notifier, url: str, n: int, sub: SubscriptionId = SUB_A
) -> list[Notification]:
    return [
        await svc.publish(
            user=ALICE,
            subscription_id=sub,
            notify_url=url,
            root="chatMessageNotification",
            body={"callbackData": "cd", "seq": i},
        )
        for i in range(n)
    ]


def settings_for(db: Database, **overrides: object) -> Settings:
    return fast_settings(db.url.render_as_string(hide_password=False), **overrides)


async def eventually(check, timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true (AssertionError after ``timeout``)."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def drained(db: Database, timeout: float = 5.0) -> None:
    """Wait until the outbox holds no callback row (counters move just before the delete)."""
    for _ in range(int(timeout / 0.02)):
        if await pending(db) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{await pending(db)} notifications still pending")


async def pending(db: Database) -> int:
    async with db.sessions() as s:
        return await outbox.count_pending(s)


def test_backoff_delay_is_capped_exponential_with_jitter() -> None:
    assert backoff_delay(1, 1.0, 300.0, lambda: 0.0) == 0.5
    assert backoff_delay(1, 1.0, 300.0, lambda: 1.0) == 1.0
    assert backoff_delay(4, 1.0, 300.0, lambda: 1.0) == 8.0
    assert backoff_delay(20, 1.0, 300.0, lambda: 1.0) == 300.0
    assert backoff_delay(20, 1.0, 300.0, lambda: 0.0) == 150.0
    for attempt in range(1, 30):
        assert 0 < backoff_delay(attempt, 0.1, 5.0) <= 5.0


async def test_one_post_per_notification_in_order(service, receiver, db) -> None:
    sent = await publish(service, receiver.url(), 5)
    got = await receiver.wait_for(5)
    assert [r.document for r in got] == [
        {"chatMessageNotification": {"callbackData": "cd", "seq": i}} for i in range(5)
    ]
    assert all(r.content_type == "application/json" and r.path == "/cb" for r in got)
    assert [n.id for n in sent] == sorted(n.id for n in sent)
    await eventually(lambda: service.stats.delivered == 5)
    await drained(db)


async def test_failing_receiver_is_retried_until_it_recovers(service, receiver, db) -> None:
    receiver.failures = [500, 503, 404]
    await publish(service, receiver.url(), 3)
    await receiver.wait_for(3)
    assert receiver.seqs() == [0, 1, 2]
    await eventually(lambda: service.stats.delivered == 3)
    assert service.stats.failed_attempts == 3


async def test_connection_refused_then_receiver_comes_up(db, tmp_path) -> None:
    probe = Receiver()
    await probe.start()
    port = probe.port
    await probe.stop()  # nothing listens on port now
    svc = DeliveryService(settings_for(db), db, poll_interval=0.1)
    await svc.start()
    try:
        await publish(svc, f"http://127.0.0.1:{port}/late", 2)
        await eventually(lambda: svc.stats.failed_attempts >= 2)
        assert svc.stats.delivered == 0
        late = Receiver()
        await late.start(port)
        try:
            got = await late.wait_for(2)
            assert [r.path for r in got] == ["/late", "/late"]
        finally:
            await late.stop()
    finally:
        await svc.stop()


async def test_a_failing_subscription_blocks_only_itself(service, receiver) -> None:
    receiver.fail_when = lambda path: path == "/dead"
    await publish(service, receiver.url("/dead"), 3, SUB_A)
    await publish(service, receiver.url("/live"), 3, SUB_B)
    got = await receiver.wait_for(3)
    assert {r.path for r in got} == {"/live"}
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 3 and service.stats.failed_attempts >= 1
    receiver.fail_when = lambda _path: False
    got = await receiver.wait_for(6)
    assert receiver.seqs("/dead") == [0, 1, 2]


async def test_too_old_notifications_are_dropped(db, receiver, caplog) -> None:
    settings = settings_for(db, notification_max_age=0.3)
    svc = DeliveryService(settings, db, poll_interval=0.05)
    receiver.fail_when = lambda _path: True
    await svc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="rest.delivery"):
            await publish(svc, receiver.url(), 2)
            await eventually(lambda: svc.stats.dropped == 2)
        await drained(db)
        assert any("dropped" in r.getMessage() for r in caplog.records)
        assert svc.stats.failed_attempts >= 3  # retried until the maximum age
    finally:
        await svc.stop()


async def test_listeners_learn_of_delivery(service, receiver) -> None:
    seen: list[Notification] = []
    done = asyncio.Event()

    async def listener(n: Notification) -> None:
        seen.append(n)
        if len(seen) == 2:
            done.set()

    async def broken(n: Notification) -> None:
        raise RuntimeError("listener bug")

    service.add_listener(broken)
    service.add_listener(listener)
    sent = await publish(service, receiver.url(), 2)
    await asyncio.wait_for(done.wait(), 5)
    assert [n.id for n in seen] == [n.id for n in sent]
    assert seen[0].user == ALICE and seen[0].subscription_id == SUB_A
    assert seen[0].root == "chatMessageNotification" and seen[0].body["callbackData"] == "cd"
    assert service.stats.listener_errors == 2
    service.remove_listener(listener)
    service.remove_listener(listener)  # absent: no error


async def test_enqueue_in_caller_transaction_then_wake(service, receiver, db) -> None:
    async with db.sessions.begin() as s:
        n = await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SUB_A,
            notify_url=receiver.url(),
            root="chatEventNotification",
            body={"eventType": "Accepted"},
        )
    service.wake(n)
    got = await receiver.wait_for(1)
    assert got[0].document == {"chatEventNotification": {"eventType": "Accepted"}}


async def test_rolled_back_enqueue_sends_nothing(service, receiver, db) -> None:
    with pytest.raises(RuntimeError):
        async with db.sessions.begin() as s:
            await outbox.enqueue(
                s,
                user=ALICE,
                subscription_id=SUB_A,
                notify_url=receiver.url(),
                root="chatEventNotification",
                body={},
            )
            raise RuntimeError("chat state failed")
    service.wake()
    await asyncio.sleep(0.3)
    assert receiver.received == [] and await pending(db) == 0


async def test_rows_written_elsewhere_are_found_by_polling(service, receiver, db) -> None:
    # another process writes and cannot wake us: the periodic look-up finds it
    async with db.sessions.begin() as s:
        await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SUB_A,
            notify_url=receiver.url(),
            root="chatEventNotification",
            body={"n": 1},
        )
    await receiver.wait_for(1)


async def test_pending_notifications_survive_a_worker_restart(db, receiver) -> None:
    settings = settings_for(db)
    first = DeliveryService(settings, db, poll_interval=0.1)
    await first.start()
    receiver.fail_when = lambda _path: True
    await publish(first, receiver.url(), 3)
    await eventually(lambda: first.stats.failed_attempts > 0)
    await first.stop()
    assert await pending(db) == 3
    receiver.fail_when = lambda _path: False
    second = DeliveryService(settings, db, poll_interval=0.1)
    await second.start()
    try:
        await receiver.wait_for(3)
        assert receiver.seqs() == [0, 1, 2]
    finally:
        await second.stop()


async def test_two_workers_on_one_store_send_each_notification_once(db, receiver) -> None:
    settings = settings_for(db)
    workers = [DeliveryService(settings, db, poll_interval=0.05) for _ in range(2)]
    async with db.sessions.begin() as s:
        for i in range(30):
            await outbox.enqueue(
                s,
                user=ALICE,
                subscription_id=SubscriptionId(f"sub-{i % 3}"),
                notify_url=receiver.url(f"/s{i % 3}"),
                root="chatMessageNotification",
                body={"seq": i},
            )
    for w in workers:
        await w.start()
    try:
        await receiver.wait_for(30)
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 30
        for lane in range(3):
            assert receiver.seqs(f"/s{lane}") == list(range(lane, 30, 3))
    finally:
        for w in workers:
            await w.stop()


async def test_a_claim_held_elsewhere_is_respected_until_it_runs_out(db, receiver) -> None:
    n = await publish_direct(db, receiver.url())
    now = outbox.utcnow()
    async with db.sessions.begin() as s:
        assert await outbox.claim(
            s, n.id, owner="other", now=now, until=now + timedelta(seconds=0.5)
        )
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05)
    await svc.start()
    try:
        await asyncio.sleep(0.3)
        assert receiver.received == []
        await receiver.wait_for(1, timeout=3)
    finally:
        await svc.stop()


async def publish_direct(db: Database, url: str) -> Notification:
    async with db.sessions.begin() as s:
        return await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SUB_A,
            notify_url=url,
            root="chatEventNotification",
            body={},
        )


async def test_notification_to_a_vanished_channel_is_dropped(db, receiver) -> None:
    svc = DeliveryService(
        settings_for(db),
        db,
        poll_interval=0.05,
        own_channel_prefix=receiver.url("/notificationchannel/"),
    )
    await svc.start()
    try:
        await publish(svc, receiver.url("/notificationchannel/v1/x/channels/gone/callback"), 1)
        await publish(svc, receiver.url("/other"), 1, SUB_B)
        await receiver.wait_for(1)
        await eventually(lambda: svc.stats.dropped == 1)
        assert [r.path for r in receiver.received] == ["/other"]
    finally:
        await svc.stop()


async def test_a_slow_receiver_times_out_and_is_retried(db, receiver) -> None:
    svc = DeliveryService(
        settings_for(db, notification_http_timeout=0.3),
        db,
        poll_interval=0.05,
    )
    receiver.delays = [1.0]
    await svc.start()
    try:
        await publish(svc, receiver.url(), 1)
        await receiver.wait_for(1)
        assert svc.stats.failed_attempts == 1 and receiver.requests == 2
    finally:
        await svc.stop()


async def test_stop_hands_an_in_flight_notification_back(db, receiver) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05)
    receiver.delays = [1.5]
    await svc.start()
    await publish(svc, receiver.url(), 1)
    await eventually(lambda: receiver.requests == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await svc.stop()
    assert loop.time() - started < 1.0  # the request was cancelled, not waited for
    assert svc.stats.failed_attempts == 0
    async with db.sessions() as s:
        head = await outbox.lane_head(s, SUB_A)
        heads = await outbox.lane_heads(s, now=outbox.utcnow(), limit=5)
    assert head is not None and head.attempts == 0
    assert [h.notification.id for h in heads] == [head.notification.id]  # claim released


async def test_bounded_concurrency_still_serves_every_lane(db, receiver) -> None:
    svc = DeliveryService(settings_for(db), db, poll_interval=0.05, concurrency=1)
    await svc.start()
    try:
        for lane in range(4):
            await publish(svc, receiver.url(f"/l{lane}"), 3, SubscriptionId(f"sub-{lane}"))
        await receiver.wait_for(12)
        for lane in range(4):
            assert receiver.seqs(f"/l{lane}") == [0, 1, 2]
    finally:
        await svc.stop()
