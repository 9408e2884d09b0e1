"""REST round trips of group chat: make_app + install_chat + the loopback focus + real delivery.

Every route of R8-R15 on the real service, with the faults of the input and
state rules (400 SVC0002/SVC0004, 403 POL0001/POL0003, 404, 409); every JSON
answer and notification is validated against the models of ``rest.models``.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from rest.app import make_app
from rest.chat_service import CHAT_BRIDGE, install_chat
from rest.models import (
    GroupChatSessionInformation,
    MessageStatusReport,
    ParticipantInformation,
    ParticipantList,
    ParticipantSessionStatus,
    ResourceReference,
    parse_document,
)
from state.db import Database
from tests.chat_api import ROOT, ChatApi, local, q
from tests.fakes.signalling import LoopbackSignalling
from tests.unit.test_delivery_support import Receiver, fast_settings

A = "tel:+15551230001"
B = "tel:+15551230002"
C = "tel:+15551230003"
D = "tel:+15551230004"
GINVITE = "groupChatSessionInvitationNotification"
PSTATUS = "chatParticipantStatusNotification"
EVENT = "chatEventNotification"
MESSAGE = "chatMessageNotification"


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'rest-group.db'}")
    await database.migrate()
    yield database
    await database.close()


class Bridge(ChatApi):
    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        sip: LoopbackSignalling,
        receiver: Receiver,
    ) -> None:
        super().__init__(client, receiver, notes_timeout=5.0, poll_interval=0.02)
        self.sip = sip

    async def settle(self) -> None:
        await self.sip.settle(self.client.app[CHAT_BRIDGE].core)

    async def fault(self, method: str, path: str, body: Any, status: int) -> tuple[str, list[str]]:
        doc = await self.call(method, path, body, status)
        ((_, detail),) = doc["requestError"].items()
        return detail["messageId"], detail["variables"]


@pytest.fixture
async def bridge(db, receiver, aiohttp_client):
    settings = fast_settings(str(db.url), server_root=ROOT, chat_group_max_size=4)
    app = make_app(settings, db)
    sip = LoopbackSignalling()
    install_chat(app, sip)
    client = await aiohttp_client(app)
    return Bridge(client, sip, receiver)


def group_body(*people: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"groupChatSessionInformation": {"participant": list(people), **extra}}


async def create(bridge: Bridge) -> str:
    for user in (A, B, C, D):
        await bridge.subscribe(user)
    doc = await bridge.call(
        "POST",
        f"/chat/v1/{q(A)}/group",
        group_body(
            {"address": B, "name": "Bob"}, {"address": C}, subject="Trip", clientCorrelator="c1"
        ),
        201,
    )
    info = parse_document(doc, GroupChatSessionInformation)
    assert info.status is not None and info.subject == "Trip" and info.client_correlator == "c1"
    assert info.originator_address == A and info.resource_url is not None
    assert {p.address for p in info.participant} == {A, B, C}
    return local(info.resource_url)


async def test_create_read_accept_message_leave(bridge: Bridge) -> None:
    a_group = await create(bridge)
    replay = await bridge.call(
        "POST", f"/chat/v1/{q(A)}/group", group_body({"address": B}, clientCorrelator="c1"), 200
    )
    assert local(replay["groupChatSessionInformation"]["resourceURL"]) == a_group
    (ok,) = await bridge.notes(A, EVENT)
    assert ok["eventType"] == "Successful"
    info = parse_document(await bridge.call("GET", a_group), GroupChatSessionInformation)
    assert info.status is not None and info.status.value == "Connected"
    originator = next(p for p in info.participant if p.is_originator)
    assert originator.address == A and originator.resource_url is not None
    (invite,) = await bridge.notes(B, GINVITE)
    b_group = local(invite["link"][0]["href"])
    accept = local(invite["link"][1]["href"])
    await bridge.call("PUT", accept, {"participantSessionStatus": {"status": "Connected"}}, 204)
    (changed,) = await bridge.notes(A, PSTATUS)
    assert changed["participant"][0]["address"] == B
    own = parse_document(await bridge.call("GET", accept), ParticipantSessionStatus)
    assert own.status.value == "Connected"
    plist = parse_document(await bridge.call("GET", b_group + "/participants"), ParticipantList)
    assert {p.address for p in plist.participant} == {A, B, C}
    one = parse_document(
        await bridge.call("GET", f"{a_group}/participants/{q(B)}"), ParticipantInformation
    )
    assert one.status is not None and one.status.value == "Connected" and one.name == "Bob"
    # messages
    body = {"chatMessage": {"text": "hello", "reportRequest": ["Delivered"]}}
    ref = parse_document(
        await bridge.call("POST", a_group + "/messages", body, 201), ResourceReference
    )
    status_url = local(ref.resource_url)
    assert "/group/" in status_url
    (got,) = await bridge.notes(B, MESSAGE)
    assert got["senderAddress"] == A and got["chatMessage"]["text"] == "hello"
    report = parse_document(await bridge.call("GET", status_url), MessageStatusReport)
    assert report.status.value in ("Sent", "Delivered")
    b_msg = local(got["link"][1]["href"])
    assert (await bridge.call("GET", b_msg))["chatMessage"]["text"] == "hello"
    await bridge.call(
        "PUT", b_msg + "/status", {"messageStatusReport": {"status": "Displayed"}}, 204
    )
    composing = {"isComposing": {"state": "active"}}
    await bridge.call("POST", b_group + "/messages", composing, 204)
    # faults on participants
    assert await bridge.fault("GET", f"{a_group}/participants/{q(D)}", None, 404)
    code, _ = await bridge.fault("DELETE", f"{b_group}/participants/{q(C)}", None, 403)
    assert code == "POL0001"
    code, _ = await bridge.fault(
        "PUT",
        f"{b_group}/participants/{q(C)}/status",
        {"participantSessionStatus": {"status": "Connected"}},
        403,
    )
    assert code == "POL0001"
    # B leaves; its messages are refused afterwards
    await bridge.call("DELETE", f"{b_group}/participants/{q(B)}", None, 204)
    code, _ = await bridge.fault("POST", b_group + "/messages", body, 409)
    assert code == "POL0001"
    await bridge.fault("DELETE", b_group, None, 409)


async def test_input_faults(bridge: Bridge) -> None:
    await bridge.subscribe(A)
    path = f"/chat/v1/{q(A)}/group"
    code, _ = await bridge.fault("POST", path, group_body(), 400)
    assert code == "SVC0002"
    code, _ = await bridge.fault("POST", path, group_body({"address": B}, {"address": B}), 400)
    assert code == "SVC0002"
    code, _ = await bridge.fault("POST", path, group_body({"address": A, "name": "Me"}), 400)
    assert code == "SVC0004"
    many = [{"address": f"tel:+1555000000{i}"} for i in range(4)]
    code, variables = await bridge.fault("POST", path, group_body(*many), 403)
    assert code == "POL0003" and variables == ["groupChatSessionInformation.participant"]
    await bridge.fault("GET", f"{path}/g-nope", None, 404)
    await bridge.fault("GET", f"{path}/g-nope/participants", None, 404)
    await bridge.fault("DELETE", f"{path}/g-nope", None, 404)


async def test_add_remove_and_size(bridge: Bridge) -> None:
    a_group = await create(bridge)
    await bridge.notes(A, EVENT)
    await bridge.call(
        "POST", a_group + "/participants", {"participantInformation": {"address": D}}, 201
    )
    (d_invite,) = await bridge.notes(D, GINVITE)
    assert d_invite["originatorAddress"] == A
    code, _ = await bridge.fault(
        "POST",
        a_group + "/participants",
        {"participantList": {"participant": [{"address": "tel:+15551230009"}]}},
        403,
    )
    assert code == "POL0003"
    code, _ = await bridge.fault(
        "POST",
        a_group + "/participants",
        {"participantList": {"participant": [{"address": D}, {"address": D}]}},
        400,
    )
    assert code == "SVC0002"
    (c_invite,) = await bridge.notes(C, GINVITE)
    c_group = local(c_invite["link"][0]["href"])
    await bridge.call("PUT", local(c_invite["link"][1]["href"]), None, 204)
    await bridge.call("DELETE", f"{a_group}/participants/{q(C)}", None, 204)
    (ended,) = await bridge.notes(C, EVENT)
    assert ended["eventType"] == "SessionEnded"
    c_info = parse_document(await bridge.call("GET", c_group), GroupChatSessionInformation)
    assert c_info.status is not None and c_info.status.value == "Disconnected"
    # B declines with DELETE on the group
    (b_invite,) = await bridge.notes(B, GINVITE)
    await bridge.call("DELETE", local(b_invite["link"][0]["href"]), None, 204)
    b_info = await bridge.call("GET", local(b_invite["link"][0]["href"]))
    assert b_info["groupChatSessionInformation"]["status"] == "Declined"


async def test_extend_a_1_1_session(bridge: Bridge) -> None:
    for user in (A, B, C):
        await bridge.subscribe(user)
    created = await bridge.call(
        "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
    )
    one = local(created["chatSessionInformation"]["resourceURL"])
    (invite,) = await bridge.notes(B, "chatSessionInvitationNotification")
    await bridge.call("PUT", local(invite["link"][1]["href"]), None, 204)
    ext = {"extensionParameters": {"participant": [{"address": C}], "subject": "Three"}}
    doc = await bridge.call("POST", one + "/extend", ext, 201)
    info = parse_document(doc, GroupChatSessionInformation)
    assert {p.address for p in info.participant} == {A, B, C} and info.subject == "Three"
    assert (await bridge.call("GET", one))["chatSessionInformation"]["status"] == "Disconnected"
    code, _ = await bridge.fault("POST", one + "/extend", ext, 409)
    assert code == "POL0001"
    only_peer = {"extensionParameters": {"participant": [{"address": B}]}}
    code, _ = await bridge.fault(
        "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}/adhoc/extend", only_peer, 400
    )
    assert code == "SVC0004"
