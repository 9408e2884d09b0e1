"""End to end over REST: a channel callbackURL as a subscription notifyURL (§10).

The subscription is created through ``POST /chat/v1/{userId}/subscriptions``;
notifications for it queue into the channel (no HTTP POST), come out of a long
poll, reach the delivery listeners, and deleting the channel removes the
subscription. A second subscription with an ordinary notifyURL gets POSTs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.ids import SubscriptionId, UserUri
from bridge.ports import Notification
from rest.app import make_app
from rest.handlers.channels import NOTIFIER
from state.db import Database
from tests.unit.test_delivery_support import Receiver, fast_settings

ALICE = UserUri("tel:+15551230001")
USER = "tel%3A%2B15551230001"

Client = TestClient[web.Request, web.Application]
Doc = dict[str, Any]


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def client(db, aiohttp_client) -> Client:
    settings = fast_settings(str(db.url), channel_poll_timeout=1.0)
    c: Client = await aiohttp_client(make_app(settings, db))
    return c


def local(url: str) -> str:
    return url.removeprefix("http://127.0.0.1:8080")


async def subscribe(client: Client, notify_url: str, data: str) -> Doc:
    resp = await client.post(
        f"/chat/v1/{USER}/subscriptions",
        json={
            "chatNotificationSubscription": {
                "callbackReference": {"notifyURL": notify_url, "callbackData": data}
            }
        },
    )
    assert resp.status == 201, await resp.text()
    sub: Doc = (await resp.json())["chatNotificationSubscription"]
    return sub


async def notify(client: Client, sub: Doc, text: str) -> Notification:
    ref = sub["callbackReference"]
    return await client.app[NOTIFIER].publish(
        user=ALICE,
        subscription_id=SubscriptionId(sub["resourceURL"].rsplit("/", 1)[1]),
        notify_url=ref["notifyURL"],
        root="chatMessageNotification",
        body={"callbackData": ref["callbackData"], "chatMessage": {"text": text}},
    )


async def test_channel_subscription_long_poll_and_delete(client: Client) -> None:
    resp = await client.post(
        f"/notificationchannel/v1/{USER}/channels",
        json={"notificationChannel": {"channelType": "LongPolling"}},
    )
    assert resp.status == 201
    channel = (await resp.json())["notificationChannel"]
    via_channel = await subscribe(client, channel["callbackURL"], "ch")
    receiver = Receiver()
    await receiver.start()
    delivered: list[Notification] = []
    both = asyncio.Event()

    async def listener(n: Notification) -> None:
        delivered.append(n)
        if len(delivered) == 2:
            both.set()

    client.app[NOTIFIER].add_listener(listener)
    try:
        via_callback = await subscribe(client, receiver.url("/app"), "cb")
        queued = await notify(client, via_channel, "to the channel")
        posted = await notify(client, via_callback, "to the callback")
        assert queued.channel_id is not None and posted.channel_id is None
        resp = await client.post(local(channel["channelData"]["channelURL"]))
        assert await resp.json() == {
            "notificationList": [
                {
                    "chatMessageNotification": {
                        "callbackData": "ch",
                        "chatMessage": {"text": "to the channel"},
                    }
                }
            ]
        }
        got = await receiver.wait_for(1)
        assert got[0].document["chatMessageNotification"]["callbackData"] == "cb"
        await asyncio.wait_for(both.wait(), 5)
        assert {n.id for n in delivered} == {queued.id, posted.id}
    finally:
        await receiver.stop()
    assert (await client.delete(local(channel["resourceURL"]))).status == 204
    assert (await client.get(local(via_channel["resourceURL"]))).status == 404
    assert (await client.get(local(via_callback["resourceURL"]))).status == 200
