"""Restart survival: ``chat-bridge serve`` killed with SIGKILL loses no notification.

The bridge runs as a real subprocess on a SQLite file. Notifications are
written straight into the store with ``state.outbox.enqueue``, as the chat side
does, while the receiver is down; the bridge is killed (-9) and started again,
and the notifications still arrive: by callback POST to a local receiver that
now listens, and by long poll on a channel created before the kill.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from bridge.ids import SubscriptionId, UserUri
from state import outbox
from state.db import Database
from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import free_port_block
from tests.unit.test_delivery_support import Receiver

ALICE = UserUri("tel:+15551230001")
CHANNELS = "/notificationchannel/v1/tel%3A%2B15551230001/channels"


@dataclass
class Bridge(ServeProcess):
    """A ``chat-bridge serve`` subprocess and the port its test receiver listens on."""

    receiver_port: int


@pytest.fixture
def bridge(tmp_path) -> Iterator[Bridge]:
    base = free_port_block(size=4)
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=base,
        sip_port=base + 1,
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL="0.2",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX="0.5",
        CHAT_BRIDGE_NOTIFICATION_HTTP_TIMEOUT="2",
        CHAT_BRIDGE_CHANNEL_POLL_TIMEOUT="3",
        CHAT_BRIDGE_LOG_LEVEL="INFO",
    )
    b = Bridge(env=env, log=tmp_path / "bridge.log", http_port=base, receiver_port=base + 2)
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
async def store(bridge: Bridge) -> AsyncIterator[Database]:
    database = Database(bridge.env["CHAT_BRIDGE_DATABASE_URL"])
    await database.migrate()  # the same numbered migrations the bridge runs
    yield database
    await database.close()


async def enqueue(store: Database, url: str, seq: int) -> None:
    async with store.sessions.begin() as s:
        await outbox.enqueue(
            s,
            user=ALICE,
            subscription_id=SubscriptionId("sub-restart"),
            notify_url=url,
            root="chatMessageNotification",
            body={"callbackData": "restart", "seq": seq},
        )


async def attempts(store: Database) -> int:
    async with store.sessions() as s:
        head = await outbox.lane_head(s, "sub-restart")
    return -1 if head is None else head.attempts


async def test_callback_notifications_survive_kill_9(bridge: Bridge, store: Database) -> None:
    await bridge.start()
    receiver = Receiver()
    url = f"http://127.0.0.1:{bridge.receiver_port}/notify"
    await enqueue(store, url, 1)  # receiver down: the bridge finds it by polling and fails
    for _ in range(100):
        if await attempts(store) >= 1:
            break
        await asyncio.sleep(0.1)
    assert await attempts(store) >= 1, bridge.log.read_text()
    bridge.kill()
    await enqueue(store, url, 2)  # written while the bridge is dead
    await receiver.start(bridge.receiver_port)
    try:
        await asyncio.sleep(0.5)
        assert receiver.received == []  # nobody sends while the bridge is down
        await bridge.start()
        await receiver.wait_for(2, timeout=15)
        assert receiver.seqs() == [1, 2]
        assert [r.path for r in receiver.received] == ["/notify", "/notify"]
        assert receiver.received[0].document["chatMessageNotification"]["callbackData"] == "restart"
        for _ in range(50):
            if await attempts(store) == -1:
                break
            await asyncio.sleep(0.1)
        assert await attempts(store) == -1  # the outbox is empty once delivered
    finally:
        await receiver.stop()


async def test_channel_and_its_queue_survive_kill_9(bridge: Bridge, store: Database) -> None:
    await bridge.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            bridge.root + CHANNELS,
            json={"notificationChannel": {"channelType": "LongPolling", "clientCorrelator": "r1"}},
        ) as resp:
            assert resp.status == 201
            channel = (await resp.json())["notificationChannel"]
        await enqueue(store, channel["callbackURL"], 1)
        bridge.kill()
        await enqueue(store, channel["callbackURL"], 2)
        await bridge.start()
        async with http.get(channel["resourceURL"]) as resp:
            assert resp.status == 200
            assert (await resp.json())["notificationChannel"]["callbackURL"] == channel[
                "callbackURL"
            ]
        poll_url = channel["channelData"]["channelURL"]
        async with http.post(poll_url) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc == {
            "notificationList": [
                {"chatMessageNotification": {"callbackData": "restart", "seq": 1}},
                {"chatMessageNotification": {"callbackData": "restart", "seq": 2}},
            ]
        }
        async with http.post(poll_url, json={}) as resp:  # handed out: gone from the queue
            assert await resp.json() == {"notificationList": []}
