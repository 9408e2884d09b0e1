"""Issue 9 defects of the Notification Channel side (OMA NotificationChannel v1.0), over HTTP.

1. a channel's callbackURL given in another spelling is still that channel;
2. a notifyURL in the bridge's channel space naming no live channel of the
   user (or another user's channel) is refused at subscription time;
3. ``channelLifetime`` is granted within the configured bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.config import Settings
from bridge.ids import SubscriptionId, UserUri
from rest.app import make_app
from rest.handlers.channels import NOTIFIER
from state.db import Database

ROOT = "http://127.0.0.1:8080/exampleAPI"
ALICE = UserUri("tel:+15555550032")
CHANNELS = "/exampleAPI/notificationchannel/v1/tel%3A%2B15555550032/channels"
SUBS = "/exampleAPI/chat/v1/tel%3A%2B15555550032/subscriptions"
BOB_CHANNELS = "/exampleAPI/notificationchannel/v1/tel%3A%2B15555550033/channels"

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
    settings = Settings(database_url=str(db.url), server_root=ROOT, channel_poll_timeout=0.5)
    c: Client = await aiohttp_client(make_app(settings, db))
    return c


def local(url: str) -> str:
    return urlsplit(url).path


async def channel(client: Client, path: str = CHANNELS, **body: Any) -> Doc:
    resp = await client.post(
        path, json={"notificationChannel": {"channelType": "LongPolling", **body}}
    )
    assert resp.status == 201, await resp.text()
    doc: Doc = (await resp.json())["notificationChannel"]
    return doc


async def subscribe(client: Client, notify_url: str) -> tuple[int, Doc]:
    resp = await client.post(
        SUBS,
        json={"chatNotificationSubscription": {"callbackReference": {"notifyURL": notify_url}}},
    )
    return resp.status, await resp.json()


def spellings(callback_url: str) -> list[str]:
    """Equivalent spellings of a callbackURL of tel:+15555550032."""
    decoded = callback_url.replace("%3A", ":").replace("%2B", "+")
    return [
        decoded,  # the reproduction
        callback_url.replace("%3A", "%3a").replace("%2B", "%2b"),  # lower-case hex
        callback_url.replace("tel%3A%2B", "%2B"),  # bare +1…, encoded
        callback_url.replace("tel%3A%2B", "+"),  # bare +1…, raw
        callback_url.replace("http://127.0.0.1:8080", "HTTP://127.0.0.1:8080"),
    ]


@pytest.mark.parametrize("index", range(5))
async def test_callback_url_in_another_spelling_is_the_channel(client, index) -> None:
    ch = await channel(client)
    other = spellings(ch["callbackURL"])[index]
    assert other != ch["callbackURL"]
    status, doc = await subscribe(client, other)
    assert status == 201, doc
    sub = doc["chatNotificationSubscription"]
    stored = sub["callbackReference"]["notifyURL"]
    assert stored == ch["callbackURL"]  # stored (and echoed) as the channel's own URL
    # a notification for the subscription queues into the channel
    await client.app[NOTIFIER].publish(
        user=ALICE,
        subscription_id=SubscriptionId(sub["resourceURL"].rsplit("/", 1)[1]),
        notify_url=stored,
        root="chatMessageNotification",
        body={"seq": 1},
    )
    resp = await client.post(local(ch["channelData"]["channelURL"]))
    assert resp.status == 200
    assert (await resp.json())["notificationList"] == [{"chatMessageNotification": {"seq": 1}}]
    # deleting the channel takes the subscription with it
    assert (await client.delete(local(ch["resourceURL"]))).status == 204
    assert (await client.get(local(sub["resourceURL"]))).status == 404


async def test_notify_url_naming_no_live_channel_is_refused(client) -> None:
    ch = await channel(client)
    dead = ch["callbackURL"].replace(ch["resourceURL"].rsplit("/", 1)[1], "ch-0000000000000000")
    status, doc = await subscribe(client, dead)
    assert status == 400
    detail = doc["requestError"]["serviceException"]
    assert detail["messageId"] == "SVC0002"
    assert detail["variables"][0] == "chatNotificationSubscription.callbackReference.notifyURL"
    assert "no live notification channel" in detail["variables"][1]
    # a deleted channel's callbackURL likewise
    assert (await client.delete(local(ch["resourceURL"]))).status == 204
    status, doc = await subscribe(client, ch["callbackURL"])
    assert status == 400 and "no live notification channel" in str(doc)
    # the channelURL (poll) and the channel resource are not callbackURLs
    ch = await channel(client)
    for url in (ch["channelData"]["channelURL"], ch["resourceURL"]):
        status, doc = await subscribe(client, url)
        assert status == 400 and "must be a channel's callbackURL" in str(doc)


async def test_notify_url_of_another_users_channel_is_refused(client) -> None:
    bobs = await channel(client, BOB_CHANNELS)
    status, doc = await subscribe(client, bobs["callbackURL"])
    assert status == 400
    assert "another user" in doc["requestError"]["serviceException"]["variables"][1]


async def test_channel_lifetime_is_clamped_to_the_configured_bounds(client) -> None:
    defaults = Settings()  # the fixture leaves the lifetime settings at their defaults
    ch = await channel(client, channelLifetime="1")
    assert ch["channelLifetime"] == defaults.channel_min_lifetime >= 180
    # the granted channel lives: a read and a poll find it
    assert (await client.get(local(ch["resourceURL"]))).status == 200
    assert (await client.post(local(ch["channelData"]["channelURL"]))).status == 200
    ch = await channel(client, channelLifetime=10**9)
    assert ch["channelLifetime"] == defaults.channel_max_lifetime
    ch = await channel(client, channelLifetime=3600)
    assert ch["channelLifetime"] == 3600
    ch = await channel(client)
    assert ch["channelLifetime"] == defaults.channel_default_lifetime


def test_channel_lifetime_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="channel_min_lifetime"):
        Settings(channel_min_lifetime=100, channel_max_lifetime=50)
