"""Delivered reports survive kill -9 (issue 13, defect 9): ``chat-bridge serve`` on the embedded
default (no outbound proxy: two REST users of one bridge chat over real SIP and MSRP on
loopback), A sending adhoc messages with ``reportRequest: Delivered`` to B.

Each round A sends a burst; once B's callback receiver has part of it, the bridge is killed
(-9) and started again on the same SQLite store. Then every message B's app received must end
``Delivered`` on A's side (``GET .../status``) and A's app must get its
``chatMessageStatusNotification`` Delivered (RFC 5438 §7; docs/decisions.md "Delivery
reports"). Three rounds on one store: the reports a round leaves owed, claimed or
half-forgotten are in the way of the next.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import free_port_block
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = "tel:+15555550301"
B = "tel:+15555550302"
BURST = 200
"""Messages A sends per round."""
KILL_AFTER = 70
"""Kill the bridge once B's app has this many of the round's messages."""
ROUNDS = 3
SETTLE = 15.0
"""Seconds after the restart for every report to arrive."""


def q(user: str) -> str:
    from urllib.parse import quote

    return quote(user, safe="")


def adhoc(sender: str, peer: str) -> str:
    return f"/chat/v1/{q(sender)}/oneToOne/{q(peer)}/adhoc/messages"


class Bridge(ServeProcess):
    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        async with http.request(method, self.root + path, json=body) as resp:
            text = await resp.text()
            return resp.status, (await resp.json() if text else None)


def received_ids(receiver: Receiver, user: str, root: str, **match: str) -> set[str]:
    found: set[str] = set()
    for r in receiver.received:
        body = r.document.get(root)
        if r.path != f"/{user}" or body is None:
            continue
        if all(body.get(k) == v for k, v in match.items()):
            found.add(body["messageId"])
    return found


async def send_burst(bridge: Bridge, http: aiohttp.ClientSession, tag: str) -> None:
    """POST the round's messages, 8 at a time, until done or the bridge is gone."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        body = {"chatMessage": {"text": f"{tag} {i}", "reportRequest": ["Delivered"]}}
        async with gate:
            try:
                await bridge.call(http, "POST", adhoc(A, B), body)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass  # killed under it

    await asyncio.gather(*(one(i) for i in range(BURST)))


async def test_every_received_message_ends_delivered_after_kill_9(
    tmp_path: Path, receiver: Receiver
) -> None:
    base = free_port_block(size=4)
    env = serve_env(
        tmp_path / "bridge.db",
        http_port=base,
        sip_port=base + 1,
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL="0.1",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX="0.3",
        CHAT_BRIDGE_NOTIFICATION_HTTP_TIMEOUT="2",
        CHAT_BRIDGE_CHAT_INVITE_TIMEOUT="8",
        CHAT_BRIDGE_LOG_LEVEL="INFO",
    )
    bridge = Bridge(env=env, log=tmp_path / "bridge.log", http_port=base)
    figures: list[tuple[int, int]] = []
    try:
        await bridge.start()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for user in (A, B):
                callback = {"notifyURL": receiver.url(f"/{user}"), "callbackData": user}
                # adhoc only: B's side accepts A's implicit session at once (N1)
                flags = {"adhocChatSupported": True, "confirmedChatSupported": False}
                body = {"chatNotificationSubscription": {"callbackReference": callback, **flags}}
                status, _ = await bridge.call(
                    http, "POST", f"/chat/v1/{q(user)}/subscriptions", body
                )
                assert status == 201
        for round_no in range(ROUNDS):
            before = received_ids(receiver, B, "chatMessageNotification")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                sender = asyncio.create_task(send_burst(bridge, http, f"round {round_no}"))
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    got = received_ids(receiver, B, "chatMessageNotification") - before
                    if len(got) >= KILL_AFTER:
                        break
                    await asyncio.sleep(0.01)
                bridge.kill()
                await sender
            at_kill = received_ids(receiver, B, "chatMessageNotification") - before
            await bridge.start()  # same store, same ports

            # every message B's app had (before the kill or after) ends Delivered for A
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                deadline = time.monotonic() + SETTLE
                while True:
                    wanted = received_ids(receiver, B, "chatMessageNotification") - before
                    notified = received_ids(
                        receiver, A, "chatMessageStatusNotification", status="Delivered"
                    )
                    missing = wanted - notified
                    if not missing or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                statuses: dict[str, str] = {}
                for mid in sorted(wanted):
                    status, got = await bridge.call(http, "GET", f"{adhoc(A, B)}/{mid}/status")
                    statuses[mid] = (
                        got["messageStatusReport"]["status"] if status == 200 else str(status)
                    )
            stuck = {m: s for m, s in statuses.items() if s != "Delivered"}
            figures.append((len(at_kill), len(wanted)))
            assert not missing and not stuck, (
                f"round {round_no}: B's app had {len(wanted)} ({len(at_kill)} at the kill);"
                f" {len(missing)} never reported Delivered to A's app, A's status not"
                f" Delivered for {len(stuck)}: {sorted(stuck.items())[:5]}\n"
                + bridge.log.read_text()[-3000:]
            )
    finally:
        bridge.kill()
        print("rounds (B's app had at the kill, in total):", figures)  # noqa: T201 (-s)
