"""REST round trips of 1-1 chat: make_app + install_chat + loopback signalling + real delivery.

Two users of one bridge chat through the REST API; the signalling side is
:class:`tests.fakes.signalling.LoopbackSignalling` (what the embedded default
does over real SIP/MSRP), and notifications travel through the real
``rest.delivery.DeliveryService`` to a local HTTP receiver.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bridge.ids import UserUri
from rest.app import make_app
from rest.chat_service import CHAT_BRIDGE, install_chat
from state.db import Database
from tests.chat_api import ROOT, ChatApi, decline_and_no_subscription, local, q
from tests.fakes.signalling import LoopbackSignalling
from tests.unit.test_delivery_support import Receiver, fast_settings

A = "tel:+15551230001"
B = "tel:+15551230002"
C = "tel:+15551230003"


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'rest-chat.db'}")
    await database.migrate()
    yield database
    await database.close()


class Bridge(ChatApi):
    """One bridge under test on the loopback signalling fake."""

    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        sip: LoopbackSignalling,
        receiver: Receiver,
    ) -> None:
        super().__init__(client, receiver, notes_timeout=5.0, poll_interval=0.02)
        self.sip = sip

    @property
    def chat(self):
        return self.client.app[CHAT_BRIDGE]

    async def settle(self) -> None:
        """Runs the loopback signalling's pending work (what real SIP/MSRP would do)."""
        await self.sip.settle(self.chat.core)


@pytest.fixture
async def bridge(db, receiver, aiohttp_client):
    settings = fast_settings(str(db.url), server_root=ROOT, chat_idle_timeout=30.0)
    app = make_app(settings, db)
    sip = LoopbackSignalling()
    install_chat(app, sip)
    client = await aiohttp_client(app)
    return Bridge(client, sip, receiver)


async def test_confirmed_chat_both_ways(bridge: Bridge) -> None:
    await bridge.subscribe(A)
    await bridge.subscribe(B)
    created = await bridge.call(
        "POST",
        f"/chat/v1/{q(A)}/oneToOne/{q(B)}",
        {"chatSessionInformation": {"subject": "Hi", "originatorName": "Alice"}},
        status=201,
    )
    info = created["chatSessionInformation"]
    assert info["status"] == "Invited" and info["originatorAddress"] == A
    a_session = local(info["resourceURL"])
    (invite,) = await bridge.notes(B, "chatSessionInvitationNotification")
    assert invite["originatorAddress"] == A and invite["subject"] == "Hi"
    links = {link["rel"]: local(link["href"]) for link in invite["link"]}
    b_session = links["ChatSessionInformation"]
    assert b_session.split("/")[-1] != a_session.split("/")[-1]  # per-user ids
    got = await bridge.call("GET", b_session)
    assert got["chatSessionInformation"]["status"] == "Invited"
    await bridge.call("PUT", links["ParticipantSessionStatus"], status=204)
    (accepted,) = await bridge.notes(A, "chatEventNotification")
    assert accepted["eventType"] == "Accepted"
    got = await bridge.call("GET", a_session + "/status")
    assert got["participantSessionStatus"]["status"] == "Connected"

    sent = await bridge.call(
        "POST",
        a_session + "/messages",
        {"chatMessage": {"text": "hello B", "reportRequest": ["Delivered", "Displayed"]}},
        status=201,
    )
    status_url = local(sent["resourceReference"]["resourceURL"])
    (msg,) = await bridge.notes(B, "chatMessageNotification")
    assert msg["chatMessage"] == {"text": "hello B"} and msg["senderAddress"] == A
    report_url = local(msg["link"][0]["href"])
    assert report_url.startswith(b_session + "/messages/")
    # "Delivered" went out by itself once B's app had the notification
    (delivered,) = await bridge.notes(A, "chatMessageStatusNotification")
    assert delivered["status"] == "Delivered" and delivered["messageId"] == msg["messageId"]
    await bridge.call("PUT", report_url, {"messageStatusReport": {"status": "Delivered"}}, 204)
    await bridge.call("PUT", report_url, {"messageStatusReport": {"status": "Displayed"}}, 204)
    statuses = await bridge.notes(A, "chatMessageStatusNotification", 2)
    assert [s["status"] for s in statuses] == ["Delivered", "Displayed"]
    got = await bridge.call("GET", status_url)
    assert got["messageStatusReport"]["status"] == "Displayed"
    got = await bridge.call("GET", status_url.removesuffix("/status"))
    assert got["chatMessage"]["text"] == "hello B"

    await bridge.call(
        "POST", b_session + "/messages", {"isComposing": {"state": "active", "refresh": 60}}, 204
    )
    typing = [n for n in await bridge.notes(A, "chatMessageNotification") if "isComposing" in n]
    assert typing[0]["isComposing"]["state"] == "active"

    await bridge.call("DELETE", a_session, status=204)
    events = await bridge.notes(B, "chatEventNotification")
    assert events[-1]["eventType"] == "SessionEnded"
    got = await bridge.call("GET", a_session)
    assert got["chatSessionInformation"]["status"] == "Disconnected"
    fault = await bridge.call(
        "POST", a_session + "/messages", {"chatMessage": {"text": "late"}}, status=409
    )
    assert fault["requestError"]["policyException"]["messageId"] == "POL0001"


async def test_decline_and_no_subscription(bridge: Bridge) -> None:
    await decline_and_no_subscription(bridge, A, B, C)


async def test_adhoc_chat(bridge: Bridge) -> None:
    await bridge.subscribe(A)
    await bridge.subscribe(B, confirmedChatSupported=False, adhocChatSupported=True)
    base = f"/chat/v1/{q(A)}/oneToOne/{q(B)}/adhoc/messages"
    await bridge.call("POST", base, {"isComposing": {"state": "active"}}, status=204)
    assert not bridge.sip.named("start_session")  # no session just for typing
    first = await bridge.call(
        "POST", base, {"chatMessage": {"text": "one", "reportRequest": "Displayed"}}, 201
    )
    await bridge.call("POST", base, {"chatMessage": {"text": "two"}}, 201)
    notes = await bridge.notes(B, "chatMessageNotification", 2)
    assert [(n["sessionId"], n["chatMessage"]["text"]) for n in notes] == [
        ("adhoc", "one"),
        ("adhoc", "two"),
    ]
    assert not await bridge.notes(B, "chatEventNotification", 0)
    await bridge.call(
        "PUT",
        local(notes[0]["link"][0]["href"]),
        {"messageStatusReport": {"status": "Displayed"}},
        204,
    )
    # only what reportRequest asked for: the Delivered report moved the status silently
    statuses = await bridge.notes(A, "chatMessageStatusNotification", 1)
    assert [s["status"] for s in statuses] == ["Displayed"]
    got = await bridge.call("GET", local(first["resourceReference"]["resourceURL"]))
    assert got["messageStatusReport"]["status"] == "Displayed"
    assert len(bridge.sip.named("start_session")) == 1
    # B answers on the same implicit session
    await bridge.call(
        "POST",
        f"/chat/v1/{q(B)}/oneToOne/{q(A)}/adhoc/messages",
        {"chatMessage": {"text": "back"}},
        201,
    )
    (reply,) = await bridge.notes(A, "chatMessageNotification")
    assert reply["sessionId"] == "adhoc" and reply["chatMessage"]["text"] == "back"
    assert len(bridge.sip.named("start_session")) == 1


async def test_rest_faults(bridge: Bridge) -> None:
    one = f"/chat/v1/{q(A)}/oneToOne/{q(B)}"
    await bridge.call("GET", one + "/nope", status=404)
    await bridge.call("GET", one + "/adhoc/messages/nope/status", status=404)
    big = {"chatMessage": {"text": "x" * 9000}}
    fault = await bridge.call("POST", one + "/adhoc/messages", big, status=400)
    assert fault["requestError"]["serviceException"]["messageId"] == "SVC0002"
    # group chat is built (tests/unit/test_rest_group.py): a group needs someone besides A
    fault = await bridge.call(
        "POST",
        f"/chat/v1/{q(A)}/group",
        {"groupChatSessionInformation": {"participant": [{"address": A}]}},
        status=400,
    )
    assert fault["requestError"]["serviceException"]["messageId"] == "SVC0004"


async def test_restart_reports_ended_session(
    db: Database, receiver: Receiver, aiohttp_client
) -> None:
    settings = fast_settings(str(db.url), server_root=ROOT)
    first_app = make_app(settings, db)
    sip = LoopbackSignalling()
    install_chat(first_app, sip)
    first = Bridge(await aiohttp_client(first_app), sip, receiver)
    await first.subscribe(A)
    await first.subscribe(B)
    await first.call(
        "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
    )
    (invite,) = await first.notes(B, "chatSessionInvitationNotification")
    await first.call("PUT", local(invite["link"][1]["href"]), status=204)
    await first.notes(A, "chatEventNotification")
    await first.client.close()  # the first process is gone (its SIP legs with it)

    second_app = make_app(settings, db)
    second_sip = LoopbackSignalling()
    install_chat(second_app, second_sip)
    second = Bridge(await aiohttp_client(second_app), second_sip, receiver)
    a_events = await second.notes(A, "chatEventNotification", 2)
    b_events = await second.notes(B, "chatEventNotification", 1)
    assert a_events[-1]["eventType"] == "SessionEnded"
    assert b_events[-1]["eventType"] == "SessionEnded"
    got = await second.call("GET", local(invite["link"][0]["href"]))
    assert got["chatSessionInformation"]["status"] == "Disconnected"


async def test_adhoc_pager_fallback(bridge: Bridge) -> None:
    await bridge.subscribe(A)
    await bridge.subscribe(B, confirmedChatSupported=False, adhocChatSupported=True)
    bridge.sip.refuse[UserUri(B)] = 488  # B's client does not do MSRP sessions
    base = f"/chat/v1/{q(A)}/oneToOne/{q(B)}/adhoc/messages"
    sent = await bridge.call(
        "POST", base, {"chatMessage": {"text": "by pager", "reportRequest": ["Sent"]}}, 201
    )
    (note,) = await bridge.notes(B, "chatMessageNotification")
    assert note["sessionId"] == "adhoc" and note["chatMessage"]["text"] == "by pager"
    (status,) = await bridge.notes(A, "chatMessageStatusNotification")
    assert status["status"] == "Sent"
    got = await bridge.call("GET", local(sent["resourceReference"]["resourceURL"]))
    assert got["messageStatusReport"]["status"] == "Sent"
    assert [c.name for c in bridge.sip.calls].count("send_pager") == 1
