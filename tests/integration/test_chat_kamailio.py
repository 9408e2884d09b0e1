"""Two users of one bridge chatting through Kamailio: REST A → bridge → Kamailio → bridge → REST B.

The bridge runs in-process (make_app + install_chat + the real signalling
adapter): its SIP listener is Kamailio's application server
(``kamailio.as_port``), Kamailio is its outbound proxy, MSRP flows between its
own sessions over TCP (or through Kamailio's MSRP relay), and notifications
reach a local HTTP receiver (callback) or a Notification Channel (long poll).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.signalling.wiring import SignallingSide, start_signalling
from rest.app import make_app
from rest.chat_service import install_chat
from state.db import Database
from tests.chat_api import ROOT, ChatApi, decline_and_no_subscription, local, q
from tests.testbed_fixture import Testbed
from tests.unit.test_delivery_support import Receiver, fast_settings

pytestmark = pytest.mark.integration

A = "tel:+15555550101"
B = "tel:+15555550102"
C = "tel:+15555550103"


class Bridge(ChatApi):
    """One in-process bridge (its app and its SIP side) and its REST helpers."""

    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        side: SignallingSide,
        receiver: Receiver,
    ) -> None:
        super().__init__(client, receiver, notes_timeout=9.0)
        self.side = side


async def open_bridge(
    tmp_path: Any, kamailio: Testbed, receiver: Receiver, aiohttp_client: Any, **extra: object
) -> tuple[Bridge, Database]:
    db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await db.migrate()
    values: dict[str, object] = {
        "server_root": ROOT,
        "sip_port": kamailio.as_port,
        "sip_outbound_proxy": f"sip:127.0.0.1:{kamailio.sip_port};transport=tcp",
        "chat_invite_timeout": 8.0,
    }
    values.update(extra)
    settings = fast_settings(str(db.url), **values)
    side = await start_signalling(settings)
    app = make_app(settings, db)
    install_chat(app, side.signalling)
    client = await aiohttp_client(app)
    return Bridge(client, side, receiver), db


@pytest.fixture
async def bridge(tmp_path, kamailio: Testbed, receiver, aiohttp_client) -> AsyncIterator[Bridge]:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    try:
        yield b
    finally:
        await b.client.close()
        await b.side.close()
        await db.close()


async def confirmed_chat(bridge: Bridge) -> None:
    await bridge.subscribe(A)
    await bridge.subscribe(B)
    created = await bridge.call(
        "POST",
        f"/chat/v1/{q(A)}/oneToOne/{q(B)}",
        {"chatSessionInformation": {"subject": "Hi", "originatorName": "Alice"}},
        201,
    )
    a_session = local(created["chatSessionInformation"]["resourceURL"])
    (invite,) = await bridge.notes(B, "chatSessionInvitationNotification")
    assert invite["originatorAddress"] == A and invite["subject"] == "Hi"
    links = {link["rel"]: local(link["href"]) for link in invite["link"]}
    b_session = links["ChatSessionInformation"]
    await bridge.call("PUT", links["ParticipantSessionStatus"], status=204)
    (accepted,) = await bridge.notes(A, "chatEventNotification")
    assert accepted["eventType"] == "Accepted"
    got = await bridge.call("GET", b_session + "/status")
    assert got["participantSessionStatus"]["status"] == "Connected"

    sent = await bridge.call(
        "POST",
        a_session + "/messages",
        {"chatMessage": {"text": "hello B ☺", "reportRequest": ["Delivered", "Displayed"]}},
        201,
    )
    status_url = local(sent["resourceReference"]["resourceURL"])
    (msg,) = await bridge.notes(B, "chatMessageNotification")
    assert msg["chatMessage"] == {"text": "hello B ☺"} and msg["senderAddress"] == A
    (delivered,) = await bridge.notes(A, "chatMessageStatusNotification")
    assert delivered["status"] == "Delivered" and delivered["messageId"] == msg["messageId"]
    await bridge.call(
        "PUT", local(msg["link"][0]["href"]), {"messageStatusReport": {"status": "Displayed"}}, 204
    )
    statuses = await bridge.notes(A, "chatMessageStatusNotification", 2)
    assert [s["status"] for s in statuses] == ["Delivered", "Displayed"]
    got = await bridge.call("GET", status_url)
    assert got["messageStatusReport"]["status"] == "Displayed"

    await bridge.call(
        "POST", b_session + "/messages", {"isComposing": {"state": "active", "refresh": 60}}, 204
    )
    typing = [n for n in await bridge.notes(A, "chatMessageNotification") if "isComposing" in n]
    assert typing[0]["isComposing"]["state"] == "active"
    await bridge.call("POST", b_session + "/messages", {"chatMessage": {"text": "hi A"}}, 201)
    notes = await bridge.notes(A, "chatMessageNotification", 2)
    assert notes[-1]["chatMessage"] == {"text": "hi A"} and notes[-1]["senderAddress"] == B

    await bridge.call("DELETE", a_session, status=204)
    events = await bridge.notes(B, "chatEventNotification")
    assert events[-1]["eventType"] == "SessionEnded"
    got = await bridge.call("GET", a_session)
    assert got["chatSessionInformation"]["status"] == "Disconnected"
    assert bridge.side.signalling.leg_count == 0


async def test_confirmed_chat_through_kamailio(
    tmp_path, kamailio: Testbed, receiver, aiohttp_client
) -> None:
    b, db = await open_bridge(tmp_path, kamailio, receiver, aiohttp_client)
    try:
        await confirmed_chat(b)
        # the SIP/MSRP ids of both ends are in the store (docs/protocol-mapping.md "Identifiers")
        columns = (
            "user_uri, call_id, local_tag, remote_tag, contribution_id, conversation_id, "
            "msrp_local_uri, msrp_remote_path"
        )
        async with db.sessions() as s:
            rows = (await s.execute(sa.text(f"SELECT {columns} FROM chat_sessions"))).all()
        ends = {row[0]: row for row in rows}
        a, bb = ends[A], ends[B]
        assert a[1] and a[1] == bb[1]  # one Call-ID (through Kamailio)
        assert (a[2], a[3]) == (bb[3], bb[2]) and a[2] and a[3]  # tags mirrored
        assert a[4] and a[4] == bb[4] and a[5] and a[5] == bb[5]  # Contribution/Conversation
        assert a[6] and bb[6] and a[7] == bb[6] and bb[7] == a[6]  # MSRP URIs crossed
    finally:
        await b.client.close()
        await b.side.close()
        await db.close()


async def test_confirmed_chat_through_the_msrp_relay(
    tmp_path, kamailio: Testbed, receiver, aiohttp_client
) -> None:
    b, db = await open_bridge(
        tmp_path,
        kamailio,
        receiver,
        aiohttp_client,
        msrp_relay=f"msrp://127.0.0.1:{kamailio.msrp_port};tcp",
    )
    try:
        await confirmed_chat(b)
    finally:
        await b.client.close()
        await b.side.close()
        await db.close()


async def test_decline_and_no_subscription(bridge: Bridge) -> None:
    await decline_and_no_subscription(bridge, A, B, C)


async def test_adhoc_chat_with_a_notification_channel(bridge: Bridge) -> None:
    channel = (
        await bridge.call(
            "POST",
            f"/notificationchannel/v1/{q(B)}/channels",
            {"notificationChannel": {"channelType": "LongPolling"}},
            201,
        )
    )["notificationChannel"]
    await bridge.subscribe(A)
    await bridge.subscribe(
        B, channel["callbackURL"], confirmedChatSupported=False, adhocChatSupported=True
    )
    base = f"/chat/v1/{q(A)}/oneToOne/{q(B)}/adhoc/messages"
    first = await bridge.call(
        "POST", base, {"chatMessage": {"text": "one", "reportRequest": "Displayed"}}, 201
    )
    await bridge.call("POST", base, {"chatMessage": {"text": "two"}}, 201)
    got: list[dict[str, Any]] = []
    for _ in range(20):
        resp = await bridge.call("POST", local(channel["channelData"]["channelURL"]))
        got += [
            n["chatMessageNotification"]
            for n in resp["notificationList"]
            if "chatMessageNotification" in n
        ]
        if len(got) >= 2:
            break
    assert [(n["sessionId"], n["chatMessage"]["text"]) for n in got] == [
        ("adhoc", "one"),
        ("adhoc", "two"),
    ]
    # handed out by the long poll = reached the app: "Delivered" goes back by itself
    await bridge.call(
        "PUT",
        local(got[0]["link"][0]["href"]),
        {"messageStatusReport": {"status": "Displayed"}},
        204,
    )
    first_id = first["resourceReference"]["resourceURL"].split("/")[-2]
    for _ in range(100):
        statuses = await bridge.notes(A, "chatMessageStatusNotification", 1)
        mine = [s["status"] for s in statuses if s["messageId"] == first_id]
        if "Displayed" in mine:
            break
        await asyncio.sleep(0.05)
    # reportRequest asked for Displayed only: the Delivered IMDN is not notified
    assert mine == ["Displayed"]
    got_status = await bridge.call("GET", local(first["resourceReference"]["resourceURL"]))
    assert got_status["messageStatusReport"]["status"] == "Displayed"
    # B answers on the same implicit session
    await bridge.call(
        "POST",
        f"/chat/v1/{q(B)}/oneToOne/{q(A)}/adhoc/messages",
        {"chatMessage": {"text": "back"}},
        201,
    )
    (reply,) = await bridge.notes(A, "chatMessageNotification")
    assert reply["sessionId"] == "adhoc" and reply["chatMessage"]["text"] == "back"
    assert bridge.side.signalling.leg_count == 2  # one implicit session, two ends
