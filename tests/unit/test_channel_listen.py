"""Long polls across instances (issue 10 item 3, docs/several-instances.md).

On PostgreSQL a channel's long poll on one instance is woken by ``NOTIFY`` when
another instance queues for it (``state.listen``); an idle poll writes nothing
on either engine; the listening connection comes back after being killed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.ids import SubscriptionId, UserUri
from rest.delivery import DeliveryService
from state import channels, outbox
from state.db import Database
from tests.db_fixtures import postgres_database
from tests.unit.test_delivery_support import fast_settings

log = logging.getLogger(__name__)
ALICE = UserUri("tel:+15550001")


def _settings(db: Database) -> Any:
    return fast_settings(db.url.render_as_string(hide_password=False))


@asynccontextmanager
async def _service(db: Database, **kw: Any) -> AsyncIterator[DeliveryService]:
    svc = DeliveryService(_settings(db), db, **kw)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


async def _channel(db: Database) -> channels.Channel:
    cid = channels.new_channel_id()
    new = channels.NewChannel(
        id=cid,
        user=ALICE,
        channel_type="LongPolling",
        client_correlator=None,
        application_tag=None,
        max_notifications=10,
        lifetime=600,
        callback_url=f"http://bridge.test/notificationchannel/v1/x/channels/{cid}/callback",
    )
    async with db.sessions.begin() as s:
        ch, _ = await channels.create_channel(s, new, now=channels.utcnow())
    return ch


async def _publish(svc: DeliveryService, ch: channels.Channel, text: str) -> None:
    await svc.publish(
        user=ALICE,
        subscription_id=SubscriptionId("sub-1"),
        notify_url=ch.callback_url,
        root="chatMessageNotification",
        body={"text": text},
    )


async def _answered_after_publish(
    a: DeliveryService, b: DeliveryService, ch: channels.Channel, *, before: float = 0.3
) -> float:
    """Open a long poll on ``a``, publish on ``b``; seconds from publish to answer."""
    poll = asyncio.create_task(a.long_poll(ch, 20.0))
    await asyncio.sleep(before)  # the poll waits
    assert not poll.done()
    sent = time.perf_counter()
    await _publish(b, ch, "hello")
    items = await asyncio.wait_for(poll, 15.0)
    took = time.perf_counter() - sent
    assert items is not None and [n.body["text"] for n in items] == ["hello"]
    return took


@asynccontextmanager
async def _two_instances(
    server: str, **kw: Any
) -> AsyncIterator[tuple[Database, DeliveryService, DeliveryService]]:
    async with postgres_database(server) as db:
        other = Database(db.url.render_as_string(hide_password=False))
        try:
            async with _service(db, **kw) as a, _service(other, **kw) as b:
                yield db, a, b
        finally:
            await other.close()


@pytest.mark.integration
async def test_a_poll_wakes_when_another_instance_queues(postgres_server: str) -> None:
    # unwoken, the poll would look again only after 30 s (1 s with the listener down)
    async with _two_instances(postgres_server, poll_interval=5.0, recheck_interval=30.0) as (
        db,
        a,
        b,
    ):
        ch = await _channel(db)
        took = [await _answered_after_publish(a, b, ch) for _ in range(3)]
        log.info("poll answered after the other instance's publish (s): %s", took)
        assert max(took) < 0.5


@pytest.mark.integration
async def test_the_listener_comes_back_after_its_backend_is_killed(postgres_server: str) -> None:
    async with _two_instances(postgres_server, poll_interval=5.0, recheck_interval=30.0) as (
        db,
        a,
        b,
    ):
        ch = await _channel(db)
        listener = a._listener
        assert listener is not None and listener.listening
        pid = listener.backend_pid
        # killed while a poll waits, and a publish right after: missed notifications are
        # made up for by the wake-up of every poll once the connection is back
        poll = asyncio.create_task(a.long_poll(ch, 20.0))
        await asyncio.sleep(0.2)
        async with db.sessions.begin() as s:
            assert await s.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
        started = time.perf_counter()
        await _publish(b, ch, "meanwhile")
        items = await asyncio.wait_for(poll, 15.0)
        assert items is not None and [n.body["text"] for n in items] == ["meanwhile"]
        assert time.perf_counter() - started < 4.0  # not the 30 s re-check
        for _ in range(100):
            if listener.reconnects and listener.listening:
                break
            await asyncio.sleep(0.05)
        assert listener.reconnects == 1 and listener.listening
        assert listener.backend_pid != pid
        # and NOTIFY wakes the polls again
        took = await _answered_after_publish(a, b, ch)
        assert took < 0.5


async def _count_poll_writes(
    svc: DeliveryService, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], int]:
    """Count the write transactions the calling task (the poll) opens."""
    me = asyncio.current_task()
    writes = 0
    inner = svc._write

    @asynccontextmanager
    async def counting() -> AsyncIterator[Any]:
        nonlocal writes
        if asyncio.current_task() is me:
            writes += 1
        async with inner() as session:
            yield session

    monkeypatch.setattr(svc, "_write", counting)
    return lambda: writes


async def test_an_idle_poll_writes_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # before issue 10 item 3 every look of the poll was a write: one per poll_interval
    async with _service(db, poll_interval=0.2) as svc:
        ch = await _channel(db)
        writes = await _count_poll_writes(svc, monkeypatch)
        started = time.perf_counter()
        assert await svc.long_poll(ch, 3.0) == []
        assert time.perf_counter() - started >= 2.9
        assert writes() == 0
        # a publish in this process still answers at once, with one write (the claim)
        poll = asyncio.create_task(svc.long_poll(ch, 10.0))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await _publish(svc, ch, "here")
        items = await asyncio.wait_for(poll, 5.0)
        assert items is not None and len(items) == 1
        assert time.perf_counter() - started < 0.5


async def test_an_item_queued_without_a_wake_is_found(db: Database) -> None:
    # a plain store transaction, no wake(): the read-only re-check finds it on SQLite,
    # the NOTIFY of its transaction wakes the poll on PostgreSQL
    async with _service(db, poll_interval=0.2, recheck_interval=0.5) as svc:
        ch = await _channel(db)
        poll = asyncio.create_task(svc.long_poll(ch, 10.0))
        await asyncio.sleep(0.1)
        async with db.sessions.begin() as s:
            await outbox.enqueue(
                s,
                user=ALICE,
                subscription_id=SubscriptionId("sub-1"),
                notify_url=ch.callback_url,
                root="chatMessageNotification",
                body={"text": "quiet"},
            )
        items = await asyncio.wait_for(poll, 5.0)
        assert items is not None and [n.body["text"] for n in items] == ["quiet"]
