"""Notification Channel resources over HTTP (OMA NotificationChannel v1.0), via aiohttp_client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.ids import SubscriptionId, UserUri
from bridge.ports import Notification
from rest.app import make_app
from rest.handlers import channels as channels_handler
from rest.handlers.channels import DELIVERY, NOTIFIER
from state import channels, outbox
from state.db import Database
from tests.unit.test_delivery_support import fast_settings

ALICE = UserUri("tel:+15551230001")
ALICE_PATH = "/notificationchannel/v1/tel%3A%2B15551230001/channels"
BOB_PATH = "/notificationchannel/v1/sip%3Abob%40ims.test/channels"
SERVER_ROOT = "http://127.0.0.1:8080/exampleAPI"

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
    settings = fast_settings(
        str(db.url),
        server_root=SERVER_ROOT,
        channel_default_lifetime=600,
        channel_min_lifetime=1,  # the expiry tests need a short-lived channel
        channel_max_lifetime=3600,
        channel_max_notifications=5,
        channel_poll_timeout=0.4,
    )
    client: Client = await aiohttp_client(make_app(settings, db))
    return client


def path_of(url: str) -> str:
    """The request path of an absolute URL the API emitted (the test client talks to it)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}/exampleAPI" == SERVER_ROOT
    return parts.path.removeprefix("/exampleAPI")


async def create(client: Client, body: Doc, path: str = ALICE_PATH) -> Doc:
    resp = await client.post("/exampleAPI" + path, json={"notificationChannel": body})
    assert resp.status == 201, await resp.text()
    doc: Doc = await resp.json()
    assert resp.headers["Location"] == doc["notificationChannel"]["resourceURL"]
    channel: Doc = doc["notificationChannel"]
    return channel


async def queue(client: Client, channel: Doc, n: int, sub: str = "sub-1") -> list[Notification]:
    notifier = client.app[NOTIFIER]
    return [
        await notifier.publish(
            user=ALICE,
            subscription_id=SubscriptionId(sub),
            notify_url=channel["callbackURL"],
            root="chatMessageNotification",
            body={"seq": i},
        )
        for i in range(n)
    ]


async def poll(client: Client, channel: Doc, **kw) -> tuple[int, Doc]:
    resp = await client.post("/exampleAPI" + path_of(channel["channelData"]["channelURL"]), **kw)
    return resp.status, await resp.json()


def assert_fault(doc: Doc, message_id: str) -> None:
    exc = doc["requestError"].get("serviceException") or doc["requestError"]["policyException"]
    assert exc["messageId"] == message_id, doc


async def test_create_answers_the_full_channel(client) -> None:
    ch = await create(
        client,
        {
            "applicationTag": "myApp",
            "channelData": {"maxNotifications": "3", "type": "nc:LongPollingData"},
            "channelLifetime": "1200",
            "channelType": "LongPolling",
            "clientCorrelator": "c-1",
        },
    )
    assert ch["channelType"] == "LongPolling" and ch["applicationTag"] == "myApp"
    assert ch["clientCorrelator"] == "c-1"
    assert ch["channelData"]["type"] == "nc:LongPollingData"
    assert ch["channelData"]["maxNotifications"] == 3  # quoted in, native out
    assert ch["channelLifetime"] == 1200
    base = SERVER_ROOT + ALICE_PATH + "/"
    for url in (ch["resourceURL"], ch["callbackURL"], ch["channelData"]["channelURL"]):
        assert url.startswith(base) and "15551230001" in url
    assert len({ch["resourceURL"], ch["callbackURL"], ch["channelData"]["channelURL"]}) == 3


async def test_minimal_request_gets_defaults_and_caps(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    assert ch["channelLifetime"] == 600 and ch["channelData"]["maxNotifications"] == 5
    assert "clientCorrelator" not in ch and "applicationTag" not in ch
    capped = await create(
        client,
        {
            "channelType": "LongPolling",
            "channelLifetime": 99999,
            "channelData": {"maxNotifications": 50},
        },
    )
    assert capped["channelLifetime"] == 3600 and capped["channelData"]["maxNotifications"] == 5


async def test_repeated_correlator_returns_the_existing_channel(client) -> None:
    first = await create(client, {"channelType": "LongPolling", "clientCorrelator": "same"})
    resp = await client.post(
        "/exampleAPI" + ALICE_PATH,
        json={"notificationChannel": {"channelType": "LongPolling", "clientCorrelator": "same"}},
    )
    assert resp.status == 200
    again = (await resp.json())["notificationChannel"]
    assert again["resourceURL"] == first["resourceURL"]
    assert resp.headers["Location"] == first["resourceURL"]
    other = await create(
        client, {"channelType": "LongPolling", "clientCorrelator": "same"}, BOB_PATH
    )
    assert other["resourceURL"] != first["resourceURL"]  # correlators are per user


@pytest.mark.parametrize(
    ("body", "message_id"),
    [
        ({"channelType": "WebSockets"}, "SVC0003"),
        ({}, "SVC0002"),
        ({"channelType": "LongPolling", "channelLifetime": "soon"}, "SVC0002"),
        ({"channelType": "LongPolling", "channelLifetime": 0}, "SVC0002"),
        ({"channelType": "LongPolling", "channelData": {"maxNotifications": 0}}, "SVC0002"),
        ({"channelType": "LongPolling", "channelData": {"type": "nc:WebhookData"}}, "SVC0003"),
        ({"channelType": "LongPolling", "colour": "blue"}, "SVC0002"),
    ],
)
async def test_bad_create_requests_are_faults(client, body, message_id) -> None:
    resp = await client.post("/exampleAPI" + ALICE_PATH, json={"notificationChannel": body})
    assert resp.status == 400
    assert_fault(await resp.json(), message_id)


async def test_malformed_bodies_and_bad_user(client) -> None:
    resp = await client.post(
        "/exampleAPI" + ALICE_PATH, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    resp = await client.post("/exampleAPI" + ALICE_PATH, json={"channel": {}})
    assert resp.status == 400
    resp = await client.post(
        "/exampleAPI/notificationchannel/v1/mailto%3Ax/channels",
        json={"notificationChannel": {"channelType": "LongPolling"}},
    )
    assert resp.status == 400


async def test_list_read_delete(client) -> None:
    resp = await client.get("/exampleAPI" + ALICE_PATH)
    assert resp.status == 200
    assert await resp.json() == {
        "notificationChannelList": {
            "notificationChannel": [],
            "resourceURL": SERVER_ROOT + ALICE_PATH,
        }
    }
    a = await create(client, {"channelType": "LongPolling", "applicationTag": "a"})
    b = await create(client, {"channelType": "LongPolling", "applicationTag": "b"})
    await create(client, {"channelType": "LongPolling"}, BOB_PATH)
    doc = await (await client.get("/exampleAPI" + ALICE_PATH)).json()
    listed = doc["notificationChannelList"]["notificationChannel"]
    assert [c["resourceURL"] for c in listed] == [a["resourceURL"], b["resourceURL"]]
    resp = await client.get("/exampleAPI" + path_of(a["resourceURL"]))
    assert resp.status == 200 and (await resp.json())["notificationChannel"] == a
    # another user's channel is not visible
    other = path_of(a["resourceURL"]).replace(ALICE_PATH, BOB_PATH)
    assert (await client.get("/exampleAPI" + other)).status == 404
    assert (await client.delete("/exampleAPI" + other)).status == 404
    resp = await client.delete("/exampleAPI" + path_of(a["resourceURL"]))
    assert resp.status == 204
    assert (await client.get("/exampleAPI" + path_of(a["resourceURL"]))).status == 404
    resp = await client.delete("/exampleAPI" + path_of(a["resourceURL"]))
    assert resp.status == 404
    assert_fault(await resp.json(), "SVC0001")


async def test_unsupported_verbs_are_405_with_allow(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    resp = await client.put("/exampleAPI" + ALICE_PATH, json={})
    assert resp.status == 405 and set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}
    resp = await client.post("/exampleAPI" + path_of(ch["resourceURL"]), json={})
    assert resp.status == 405 and "DELETE" in resp.headers["Allow"]
    resp = await client.get("/exampleAPI" + path_of(ch["channelData"]["channelURL"]))
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert_fault(await resp.json(), "SVC0001")


async def test_callback_url_refuses_outside_posts(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    resp = await client.post(
        "/exampleAPI" + path_of(ch["callbackURL"]),
        json={"chatMessageNotification": {"seq": 1}},
    )
    assert resp.status == 403
    assert_fault(await resp.json(), "POL0001")
    status, doc = await poll(client, ch)
    assert (status, doc) == (200, {"notificationList": []})  # nothing was queued


async def test_long_poll_returns_queued_notifications_oldest_first(client) -> None:
    ch = await create(
        client, {"channelType": "LongPolling", "channelData": {"maxNotifications": 2}}
    )
    await queue(client, ch, 3)
    status, doc = await poll(client, ch)
    assert status == 200
    assert doc == {
        "notificationList": [
            {"chatMessageNotification": {"seq": 0}},
            {"chatMessageNotification": {"seq": 1}},
        ]
    }
    status, doc = await poll(client, ch, json={})
    assert doc == {"notificationList": [{"chatMessageNotification": {"seq": 2}}]}
    # the queue lets go of an item just after its answer is written
    for _ in range(100):
        if client.app[DELIVERY].stats.handed_out == 3:
            break
        await asyncio.sleep(0.02)
    assert client.app[DELIVERY].stats.handed_out == 3


async def test_long_poll_answers_as_soon_as_something_arrives(db, aiohttp_client) -> None:
    settings = fast_settings(str(db.url), server_root=SERVER_ROOT, channel_poll_timeout=5.0)
    client = await aiohttp_client(make_app(settings, db))
    ch = await create(client, {"channelType": "LongPolling"})
    waiting = asyncio.create_task(poll(client, ch))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    loop = asyncio.get_running_loop()
    queued_at = loop.time()
    await queue(client, ch, 1)
    status, doc = await asyncio.wait_for(waiting, 4)
    assert loop.time() - queued_at < 2.0  # answered on arrival, not at the 5 s poll timeout
    assert doc == {"notificationList": [{"chatMessageNotification": {"seq": 0}}]}


async def test_long_poll_times_out_empty(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, doc = await poll(client, ch)
    assert (status, doc) == (200, {"notificationList": []})
    assert 0.35 <= loop.time() - started < 2.0


async def test_a_new_poll_ends_the_previous_one_empty(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    first = asyncio.create_task(poll(client, ch))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(poll(client, ch))
    assert await asyncio.wait_for(first, 1) == (200, {"notificationList": []})
    await queue(client, ch, 1)
    status, doc = await asyncio.wait_for(second, 2)
    assert doc["notificationList"] == [{"chatMessageNotification": {"seq": 0}}]


async def test_poll_on_deleted_channel_is_404_even_while_waiting(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    waiting = asyncio.create_task(poll(client, ch))
    await asyncio.sleep(0.1)
    assert (await client.delete("/exampleAPI" + path_of(ch["resourceURL"]))).status == 204
    status, doc = await asyncio.wait_for(waiting, 2)
    assert status == 404
    assert_fault(doc, "SVC0001")
    status, _ = await poll(client, ch)
    assert status == 404


async def test_poll_rejects_malformed_json(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    status, doc = await poll(
        client, ch, data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert_fault(doc, "SVC0002")


async def test_deleting_a_channel_drops_its_queue(client, db) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    await queue(client, ch, 2)
    async with db.sessions() as s:
        assert await outbox.count_pending(s, channels=True) == 2
    assert (await client.delete("/exampleAPI" + path_of(ch["resourceURL"]))).status == 204
    async with db.sessions() as s:
        assert await outbox.count_pending(s, channels=True) == 0


async def test_hand_out_reaches_delivery_listeners(client) -> None:
    ch = await create(client, {"channelType": "LongPolling"})
    seen: list[Notification] = []
    got = asyncio.Event()

    async def listener(n: Notification) -> None:
        seen.append(n)
        got.set()

    client.app[NOTIFIER].add_listener(listener)
    sent = await queue(client, ch, 1)
    await poll(client, ch)
    await asyncio.wait_for(got.wait(), 2)
    assert [n.id for n in seen] == [sent[0].id] and seen[0].channel_id is not None


async def test_expired_channels_404_and_are_swept(client, db) -> None:
    ch = await create(client, {"channelType": "LongPolling", "channelLifetime": 1})
    await queue(client, ch, 1)
    resource = "/exampleAPI" + path_of(ch["resourceURL"])
    await asyncio.sleep(1.1)
    assert (await client.get(resource)).status == 404
    status, _ = await poll(client, ch)
    assert status == 404
    doc = await (await client.get("/exampleAPI" + ALICE_PATH)).json()
    assert doc["notificationChannelList"]["notificationChannel"] == []
    for _ in range(100):  # the worker's sweep removes the row and its queue
        async with db.sessions() as s:
            if await outbox.count_pending(s, channels=True) == 0:
                break
        await asyncio.sleep(0.05)
    async with db.sessions() as s:
        assert await outbox.count_pending(s, channels=True) == 0
        assert await channels.expire_channels(s, now=outbox.utcnow() + timedelta(days=1)) == []


async def test_a_channel_never_expires_under_an_open_poll(db, aiohttp_client) -> None:
    # a poll timeout longer than the channel's life: the poll answers [] while the
    # channel is still alive (POLL_EXPIRY_MARGIN before its expiry); the next poll 404s
    settings = fast_settings(
        str(db.url), server_root=SERVER_ROOT, channel_poll_timeout=10.0, channel_min_lifetime=2
    )
    client = await aiohttp_client(make_app(settings, db))
    ch = await create(client, {"channelType": "LongPolling", "channelLifetime": 2})
    assert ch["channelLifetime"] == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, doc = await asyncio.wait_for(poll(client, ch), 5)
    assert status == 200 and doc == {"notificationList": []}
    assert loop.time() - started < 2
    resource = "/exampleAPI" + path_of(ch["resourceURL"])
    assert (await client.get(resource)).status == 200  # answered before the expiry
    await asyncio.sleep(max(0.0, started + 2.1 - loop.time()))
    status, doc = await asyncio.wait_for(poll(client, ch), 5)
    assert status == 404
    assert_fault(doc, "SVC0001")


@asynccontextmanager
async def served(db: Database) -> AsyncIterator[tuple[web.Application, str]]:
    """The app on a real TCP port, as bridge.app serves it; (app, base URL)."""
    settings = fast_settings(str(db.url), server_root=SERVER_ROOT, channel_poll_timeout=3.0)
    app = make_app(settings, db)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield app, f"http://127.0.0.1:{runner.addresses[0][1]}/exampleAPI"
    finally:
        await runner.cleanup()


async def poll_hung_up_then_publish(
    app: web.Application, http: aiohttp.ClientSession, base: str
) -> str:
    """Creates a channel, hangs up on a poll of it, then publishes one item; the channel URL."""
    async with http.post(
        base + ALICE_PATH, json={"notificationChannel": {"channelType": "LongPolling"}}
    ) as resp:
        ch = (await resp.json())["notificationChannel"]
    url = base + path_of(ch["channelData"]["channelURL"])
    with pytest.raises(TimeoutError):
        await http.post(url, timeout=aiohttp.ClientTimeout(total=0.2))
    await asyncio.sleep(0.1)
    await app[NOTIFIER].publish(
        user=ALICE,
        subscription_id=SubscriptionId("sub-1"),
        notify_url=ch["callbackURL"],
        root="chatMessageNotification",
        body={"seq": 0},
    )  # wakes the abandoned poll
    return url


async def test_a_poller_that_hung_up_takes_nothing(db) -> None:
    # served like bridge.app serves it: aiohttp does not cancel handlers on hang-up
    async with served(db) as (app, base), aiohttp.ClientSession() as http:
        url = await poll_hung_up_then_publish(app, http, base)
        await asyncio.sleep(0.2)  # the woken, abandoned poll must leave the item queued
        async with http.post(url) as resp:
            doc = await resp.json()
    assert doc == {"notificationList": [{"chatMessageNotification": {"seq": 0}}]}


async def test_items_lent_to_a_poller_that_hung_up_stay_queued(db, monkeypatch) -> None:
    # the poll does not notice the hang-up in time: it takes the item, its write
    # fails, and the item goes back to the queue for the next poll (at least once)
    monkeypatch.setattr(channels_handler, "client_gone", lambda _request: lambda: False)
    seen: list[Notification] = []

    async def listener(n: Notification) -> None:
        seen.append(n)

    async with served(db) as (app, base):
        app[NOTIFIER].add_listener(listener)
        async with aiohttp.ClientSession() as http:
            url = await poll_hung_up_then_publish(app, http, base)
            await asyncio.sleep(0.3)
            assert app[DELIVERY].stats.handed_out == 0 and seen == []
            async with db.sessions() as s:
                assert await outbox.count_pending(s, channels=True) == 1
            async with http.post(url) as resp:
                doc = await resp.json()
        assert doc == {"notificationList": [{"chatMessageNotification": {"seq": 0}}]}
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert len(seen) == 1 and app[DELIVERY].stats.handed_out == 1


async def test_channels_per_user_are_limited(client, monkeypatch) -> None:
    monkeypatch.setattr(channels_handler, "MAX_CHANNELS_PER_USER", 2)
    await create(client, {"channelType": "LongPolling", "clientCorrelator": "one"})
    await create(client, {"channelType": "LongPolling"})
    body = {"notificationChannel": {"channelType": "LongPolling"}}
    resp = await client.post("/exampleAPI" + ALICE_PATH, json=body)
    assert resp.status == 403
    assert_fault(await resp.json(), "POL0001")
    replay = {"notificationChannel": {"channelType": "LongPolling", "clientCorrelator": "one"}}
    assert (await client.post("/exampleAPI" + ALICE_PATH, json=replay)).status == 200
    await create(client, {"channelType": "LongPolling"}, BOB_PATH)  # per user
