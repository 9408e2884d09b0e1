"""The REST side of the graceful shutdown: the request gate (rest.gate), the long polls
answered at once and the outbox flush (rest.delivery.DeliveryService.drain/.flush)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.ids import SubscriptionId, UserUri
from rest.app import REQUEST_GATE, make_app
from rest.delivery import DeliveryService
from rest.handlers.channels import DELIVERY
from state import outbox
from state.db import Database
from tests.unit.test_delivery_support import Receiver, fast_settings

ALICE = UserUri("tel:+15551230001")
CHANNELS = "/notificationchannel/v1/tel%3A%2B15551230001/channels"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def db(tmp_path: Any) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def client(db: Database, aiohttp_client: Any) -> Client:
    settings = fast_settings(str(db.url), channel_poll_timeout=30.0)
    made: Client = await aiohttp_client(make_app(settings, db))
    return made


async def open_channel(client: Client) -> dict[str, Any]:
    resp = await client.post(CHANNELS, json={"notificationChannel": {"channelType": "LongPolling"}})
    assert resp.status == 201
    channel: dict[str, Any] = (await resp.json())["notificationChannel"]
    return channel


def poll_path(channel: dict[str, Any]) -> str:
    return str(channel["channelData"]["channelURL"]).removeprefix("http://127.0.0.1:8080")


async def test_a_closed_gate_answers_503_with_retry_after_in_the_negotiated_format(
    client: Client,
) -> None:
    gate = client.app[REQUEST_GATE]
    assert gate.open
    gate.close(retry_after=7)
    assert not gate.open
    resp = await client.post(CHANNELS, json={"notificationChannel": {"channelType": "LongPolling"}})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "7"
    fault = (await resp.json())["requestError"]["serviceException"]
    assert fault["messageId"] == "SVC0001"
    assert fault["variables"] == ["the service is shutting down"]
    resp = await client.get(CHANNELS, headers={"Accept": "application/xml"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "7"
    assert resp.content_type == "application/xml"
    assert "SVC0001" in await resp.text()


async def test_an_open_long_poll_is_answered_empty_at_once_and_takes_nothing(
    client: Client,
) -> None:
    channel = await open_channel(client)
    gate, delivery = client.app[REQUEST_GATE], client.app[DELIVERY]
    poll = asyncio.ensure_future(client.post(poll_path(channel)))
    await asyncio.sleep(0.2)
    assert not poll.done() and gate.in_flight == 1

    gate.close(retry_after=5)
    assert await gate.wait_idle(0.2) == 1  # the poll would wait its 30 s out
    began = time.monotonic()
    delivery.drain()
    resp = await asyncio.wait_for(poll, 2)
    assert time.monotonic() - began < 0.5
    assert resp.status == 200 and await resp.json() == {"notificationList": []}
    assert await gate.wait_idle(1.0) == 0

    # queued after the drain: it stays for the next poll (after the restart)
    await delivery.publish(
        user=ALICE,
        subscription_id=SubscriptionId("sub-1"),
        notify_url=channel["callbackURL"],
        root="chatMessageNotification",
        body={"seq": 1},
    )
    async with client.app[DELIVERY].database.sessions() as session:
        assert await outbox.count_pending(session, channels=True) == 1


async def publish(svc: DeliveryService, url: str, sub: str, seq: int) -> None:
    await svc.publish(
        user=ALICE,
        subscription_id=SubscriptionId(sub),
        notify_url=url,
        root="chatMessageNotification",
        body={"seq": seq},
    )


async def test_flush_tries_what_is_due_and_leaves_the_rest_queued(db: Database) -> None:
    receiver = Receiver()
    await receiver.start()
    settings = fast_settings(
        str(db.url), notification_backoff_initial=30.0, notification_backoff_max=60.0
    )
    svc = DeliveryService(settings, db, poll_interval=30.0)
    await svc.start()
    try:
        receiver.fail_when = lambda path: path == "/down"
        for i in range(3):
            await publish(svc, receiver.url("/up"), "sub-up", i)
        await publish(svc, receiver.url("/down"), "sub-down", 9)
        began = time.monotonic()
        left = await svc.flush(5.0)
        took = time.monotonic() - began
        # every notification was tried; the failed one waits out its backoff in the outbox
        assert receiver.seqs("/up") == [0, 1, 2]
        assert left == 1
        assert took < 2.0, f"flush waited {took:.2f}s for a lane in backoff"
    finally:
        await svc.stop()
        await receiver.stop()


async def test_the_probes_answer_during_the_drain_and_ready_says_why(client: Client) -> None:
    assert (await client.get("/ready")).status == 200
    client.app[REQUEST_GATE].close(retry_after=5)
    health = await client.get("/health")
    assert health.status == 200
    ready = await client.get("/ready")
    assert ready.status == 503
    assert "shutdown" in await ready.text()
    assert (await client.get("/metrics")).status == 200
    refused = await client.get(CHANNELS)
    assert refused.status == 503
