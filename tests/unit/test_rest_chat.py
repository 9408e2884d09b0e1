"""REST: the chat route table (verbs, 405 + Allow), body validation, and the ChatService port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bridge.config import Settings
from bridge.errors import NotFound
from bridge.ids import UserUri
from rest import app as rest_app
from rest.handlers.chat import CHAT_SERVICE, ChatService, ChatTarget, Created, route_table
from rest.models import (
    ChatMessage,
    ChatSessionInformation,
    ExtensionParameters,
    GroupChatSessionInformation,
    IsComposing,
    MessageStatus,
    MessageStatusReport,
    ParticipantInformation,
    ParticipantList,
    ParticipantSessionStatus,
    ParticipantStatus,
)
from state.db import Database

SERVER = "http://api.test"
A = "tel%3A%2B15551230001"
B = "tel%3A%2B15551230002"
ONE = f"/chat/v1/{A}/oneToOne/{B}"
GROUP = f"/chat/v1/{A}/group"

R_PATHS = {
    ONE: {"POST"},
    ONE + "/s1": {"GET", "DELETE"},
    ONE + "/s1/status": {"GET", "PUT"},
    ONE + "/s1/messages": {"POST"},
    ONE + "/s1/messages/m1": {"GET"},
    ONE + "/s1/messages/m1/status": {"GET", "PUT"},
    ONE + "/s1/extend": {"POST"},
    GROUP: {"POST"},
    GROUP + "/g1": {"GET", "DELETE"},
    GROUP + "/g1/participants": {"GET", "POST"},
    GROUP + f"/g1/participants/{B}": {"GET", "DELETE"},
    GROUP + f"/g1/participants/{B}/status": {"GET", "PUT"},
    GROUP + "/g1/messages": {"POST"},
    GROUP + "/g1/messages/m1": {"GET"},
    GROUP + "/g1/messages/m1/status": {"GET", "PUT"},
}
VERBS = ("GET", "PUT", "POST", "DELETE", "PATCH")


def fault(body: dict[str, Any]) -> tuple[str, list[str]]:
    ((_, detail),) = body["requestError"].items()
    return detail["messageId"], detail["variables"]


@pytest.fixture
async def database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'chat.db'}")
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
async def client(database, aiohttp_client):
    # `database` is requested first so that it is closed after the app (whose
    # background tasks still use the store while they stop)
    return await aiohttp_client(rest_app.make_app(Settings(server_root=SERVER), database))


class FakeChat:
    """An in-memory ChatService recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def create_session(self, user, other, info):
        self.calls.append(("create_session", user, other, info))
        return Created(info.model_copy(update={"status": ParticipantStatus.INVITED}), "s-9")

    async def get_session(self, user, other, session_id):
        if session_id != "s-9":
            raise NotFound("session", session_id)
        return ChatSessionInformation(
            originator_address=user, t_participant_address=other, status=ParticipantStatus.CONNECTED
        )

    async def end_session(self, user, other, session_id):
        self.calls.append(("end_session", user, other, session_id))

    async def get_session_status(self, user, other, session_id):
        return ParticipantSessionStatus(status=ParticipantStatus.INVITED)

    async def accept_session(self, user, other, session_id):
        self.calls.append(("accept_session", user, other, session_id))

    async def send_message(self, target: ChatTarget, message: ChatMessage):
        self.calls.append(("send_message", target, message))
        return Created(message, "m-1", created=message.client_correlator != "dup")

    async def send_composing(self, target, composing: IsComposing):
        self.calls.append(("send_composing", target, composing))

    async def get_message(self, target, message_id):
        return ChatMessage(text="hi")

    async def get_message_status(self, target, message_id):
        return MessageStatusReport(status=MessageStatus.DELIVERED)

    async def report_message(self, target, message_id, status):
        self.calls.append(("report_message", target, message_id, status))

    async def extend_session(self, user, other, session_id, params: ExtensionParameters):
        self.calls.append(("extend_session", user, other, session_id, params))
        people = [ParticipantInformation(address=other), *params.participant]
        return Created(
            GroupChatSessionInformation(participant=people, subject=params.subject), "g-2"
        )

    async def create_group(self, user, info):
        self.calls.append(("create_group", user, info))
        return Created(info, "g-1")

    async def get_group(self, user, session_id):
        return GroupChatSessionInformation(
            participant=[ParticipantInformation(address="tel:+15551230002")]
        )

    async def leave_group(self, user, session_id):
        self.calls.append(("leave_group", user, session_id))

    async def list_participants(self, user, session_id):
        return ParticipantList(participant=[ParticipantInformation(address="sip:c@ims.test")])

    async def add_participants(self, user, session_id, participants: Sequence[Any]):
        self.calls.append(("add_participants", user, session_id, list(participants)))
        return Created(ParticipantList(participant=list(participants)), "")

    async def get_participant(self, user, session_id, participant):
        return ParticipantInformation(address=participant, status=ParticipantStatus.CONNECTED)

    async def remove_participant(self, user, session_id, participant):
        self.calls.append(("remove_participant", user, session_id, participant))

    async def get_participant_status(self, user, session_id, participant):
        return ParticipantSessionStatus(status=ParticipantStatus.CONNECTED)

    async def accept_group(self, user, session_id):
        self.calls.append(("accept_group", user, session_id))


@pytest.fixture
async def served(database, aiohttp_client):
    app = rest_app.make_app(Settings(server_root=SERVER), database)
    fake = FakeChat()
    service: ChatService = fake
    app[CHAT_SERVICE] = service
    return await aiohttp_client(app), fake


def test_route_table_covers_the_spec() -> None:
    table = route_table("")
    assert len(table) == len(R_PATHS) == 15
    assert sorted(sorted(v) for v in table.values()) == sorted(sorted(v) for v in R_PATHS.values())


@pytest.mark.parametrize("path", sorted(R_PATHS))
async def test_wrong_verbs_get_405_with_allow(client, path) -> None:
    allowed = R_PATHS[path]
    allow_header = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
    for verb in VERBS:
        if verb in allowed:
            continue
        resp = await client.request(verb, path)
        assert resp.status == 405, (verb, path)
        assert resp.headers["Allow"] == allow_header
        assert fault(await resp.json())[0] == "SVC0001"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", ONE + "/s1", None),
        ("DELETE", ONE + "/s1", None),
        ("GET", ONE + "/adhoc/messages/m1/status", None),
        ("PUT", ONE + "/s1/status", {"participantSessionStatus": {"status": "Connected"}}),
        ("PUT", ONE + "/s1/status", None),
        ("POST", ONE + "/s1/messages", {"chatMessage": {"text": "x"}}),
        ("PUT", ONE + "/s1/messages/m1/status", {"messageStatusReport": {"status": "Displayed"}}),
        ("POST", ONE + "/s1/extend", {"extensionParameters": {"participant": [{"address": "+1"}]}}),
        ("GET", GROUP + "/g1", None),
        ("GET", GROUP + "/g1/participants", None),
        ("POST", GROUP + "/g1/participants", {"participantInformation": {"address": "+12"}}),
        ("DELETE", GROUP + f"/g1/participants/{A}", None),
        ("POST", GROUP + "/g1/messages", {"isComposing": {"state": "idle"}}),
        ("GET", GROUP + "/g1/messages/m1/status", None),
    ],
)
async def test_without_service_sessions_do_not_exist(client, method, path, body) -> None:
    resp = await client.request(method, path, json=body)
    assert resp.status == 404
    assert fault(await resp.json())[0] == "SVC0001"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (ONE, {"chatSessionInformation": {"subject": "hi"}}),
        (ONE + "/adhoc/messages", {"chatMessage": {"text": "Hello", "reportRequest": "Displayed"}}),
        (ONE + "/adhoc/extend", {"extensionParameters": {"participant": [{"address": "+13"}]}}),
        (GROUP, {"groupChatSessionInformation": {"participant": [{"address": "+13"}]}}),
    ],
)
async def test_without_service_creation_is_501(client, path, body) -> None:
    resp = await client.post(path, json=body)
    assert resp.status == 501
    message_id, variables = fault(await resp.json())
    assert message_id == "SVC0001" and "no chat service is configured" in variables[0]
    assert "not available yet" not in variables[0]


@pytest.mark.parametrize(
    ("path", "body", "message_id", "part"),
    [
        (ONE + "/adhoc/messages", {"chatMessage": {}}, "SVC0002", "chatMessage.text"),
        (ONE + "/adhoc/messages", {"chatMessage": {"text": ""}}, "SVC0002", "chatMessage.text"),
        (
            ONE + "/adhoc/messages",
            {"chatMessage": {"text": "x", "reportRequest": ["Sent", "Read"]}},
            "SVC0003",
            "chatMessage.reportRequest.1",
        ),
        (
            ONE + "/adhoc/messages",
            {"isComposing": {"state": "typing"}},
            "SVC0003",
            "isComposing.state",
        ),
        (
            ONE + "/adhoc/messages",
            {"isComposing": {"state": "active", "lastActive": "yesterday"}},
            "SVC0002",
            "isComposing.lastActive",
        ),
        (ONE + "/adhoc/messages", {"fileTransfer": {}}, "SVC0002", "body"),
        (
            ONE,
            {"chatSessionInformation": {"tParticipantAddress": "tel:+19999"}},
            "SVC0002",
            "chatSessionInformation.tParticipantAddress",
        ),
        (
            ONE,
            {"chatSessionInformation": {"originatorAddress": "not-a-uri"}},
            "SVC0004",
            "chatSessionInformation.originatorAddress",
        ),
        (f"/chat/v1/{A}/oneToOne/bogus", {"chatSessionInformation": {}}, "SVC0004", "otherUserId"),
        (GROUP, {"groupChatSessionInformation": {"participant": []}}, "SVC0002", None),
        (
            GROUP,
            {"groupChatSessionInformation": {"participant": [{"address": "nobody"}]}},
            "SVC0004",
            "groupChatSessionInformation.participant.0.address",
        ),
        (GROUP + "/g1/participants", {"participantList": {"participant": []}}, "SVC0002", None),
        (ONE + "/s1/extend", {"extensionParameters": {"subject": "x"}}, "SVC0002", None),
    ],
)
async def test_bad_chat_bodies(client, path, body, message_id, part) -> None:
    resp = await client.post(path, json=body)
    assert resp.status == 400, await resp.text()
    got, variables = fault(await resp.json())
    assert got == message_id
    if part is not None:
        assert variables[0] == part


async def test_bad_status_values(client) -> None:
    resp = await client.put(
        ONE + "/s1/status", json={"participantSessionStatus": {"status": "Disconnected"}}
    )
    assert resp.status == 400
    assert fault(await resp.json()) == ("SVC0003", ["participantSessionStatus.status", "Connected"])
    resp = await client.put(
        ONE + "/s1/messages/m1/status", json={"messageStatusReport": {"status": "Sent"}}
    )
    assert fault(await resp.json()) == (
        "SVC0003",
        ["messageStatusReport.status", "Delivered, Displayed"],
    )


async def test_service_one_to_one_flow(served) -> None:
    client, fake = served
    resp = await client.post(ONE, json={"chatSessionInformation": {"subject": "Hi"}})
    assert resp.status == 201
    info = (await resp.json())["chatSessionInformation"]
    url = f"{SERVER}/chat/v1/{A}/oneToOne/{B}/s-9"
    assert resp.headers["Location"] == info["resourceURL"] == url
    assert info["status"] == "Invited"
    assert info["originatorAddress"] == "tel:+15551230001"
    assert info["tParticipantAddress"] == "tel:+15551230002"
    resp = await client.get(ONE + "/s-9")
    assert resp.status == 200
    assert (await resp.json())["chatSessionInformation"]["status"] == "Connected"
    assert (await client.get(ONE + "/nope")).status == 404
    assert (await client.put(ONE + "/s-9/status")).status == 204  # GSMA: PUT without a body
    resp = await client.get(ONE + "/s-9/status")
    assert (await resp.json())["participantSessionStatus"] == {
        "status": "Invited",
        "resourceURL": url + "/status",
    }
    assert (await client.delete(ONE + "/s-9")).status == 204
    assert [c[0] for c in fake.calls] == ["create_session", "accept_session", "end_session"]


async def test_service_messages(served) -> None:
    client, fake = served
    resp = await client.post(
        "/chat/v1/tel:+15551230001/oneToOne/+15551230002/adhoc/messages",
        json={"chatMessage": {"text": "Hello", "reportRequest": "Displayed"}},
    )
    assert resp.status == 201
    ref = f"{SERVER}/chat/v1/{A}/oneToOne/{B}/adhoc/messages/m-1/status"
    assert await resp.json() == {"resourceReference": {"resourceURL": ref}}
    assert resp.headers["Location"] == ref
    _, target, message = fake.calls[-1]
    assert target == ChatTarget(UserUri("tel:+15551230001"), "adhoc", UserUri("tel:+15551230002"))
    assert message.report_request == [MessageStatus.DISPLAYED]
    resp = await client.post(
        ONE + "/adhoc/messages", json={"chatMessage": {"text": "x", "clientCorrelator": "dup"}}
    )
    assert resp.status == 200  # correlator replay
    resp = await client.post(
        GROUP + "/g1/messages",
        json={
            "isComposing": {
                "state": "active",
                "refresh": "60",
                "lastActive": "2013-01-25T12:00:00+01:00",
            }
        },
    )
    assert resp.status == 204
    _, target, composing = fake.calls[-1]
    assert target.is_group and composing.refresh == 60
    assert composing.to_json()["lastActive"] == "2013-01-25T11:00:00Z"
    resp = await client.get(GROUP + "/g1/messages/m-1/status")
    assert (await resp.json())["messageStatusReport"]["status"] == "Delivered"
    resp = await client.get(ONE + "/adhoc/messages/m-1")
    assert (await resp.json())["chatMessage"] == {
        "text": "hi",
        "resourceURL": f"{SERVER}/chat/v1/{A}/oneToOne/{B}/adhoc/messages/m-1",
    }
    resp = await client.put(
        ONE + "/adhoc/messages/m-1/status", json={"messageStatusReport": {"status": "Displayed"}}
    )
    assert resp.status == 204
    assert fake.calls[-1][2:] == ("m-1", MessageStatus.DISPLAYED)


async def test_service_group_flow(served) -> None:
    client, fake = served
    resp = await client.post(
        GROUP,
        json={
            "groupChatSessionInformation": {
                "subject": "Trip",
                "clientCorrelator": 7,
                "participant": [{"address": "tel:+15551230002", "name": "Bob"}],
            }
        },
    )
    assert resp.status == 201
    info = (await resp.json())["groupChatSessionInformation"]
    assert resp.headers["Location"] == info["resourceURL"] == f"{SERVER}{GROUP}/g-1"
    assert info["clientCorrelator"] == "7"
    assert info["participant"][0]["resourceURL"] == f"{SERVER}{GROUP}/g-1/participants/{B}"
    resp = await client.get(GROUP + "/g-1")
    assert (await resp.json())["groupChatSessionInformation"]["resourceURL"].endswith("/g-1")
    resp = await client.get(GROUP + "/g-1/participants")
    plist = (await resp.json())["participantList"]
    assert plist["resourceURL"] == f"{SERVER}{GROUP}/g-1/participants"
    assert plist["participant"][0]["resourceURL"].endswith("/participants/sip%3Ac%40ims.test")
    resp = await client.post(
        GROUP + "/g-1/participants", json={"participantInformation": {"address": "+15551230003"}}
    )
    assert resp.status == 201
    assert resp.headers["Location"].endswith("/participants/tel%3A%2B15551230003")
    resp = await client.post(
        GROUP + "/g-1/participants",
        json={
            "participantList": {
                "participant": [{"address": "+15551230003"}, {"address": "+15551230004"}]
            }
        },
    )
    assert resp.headers["Location"] == f"{SERVER}{GROUP}/g-1/participants"
    resp = await client.get(GROUP + f"/g-1/participants/{B}")
    assert (await resp.json())["participantInformation"]["address"] == "tel:+15551230002"
    resp = await client.get(GROUP + f"/g-1/participants/{B}/status")
    assert (await resp.json())["participantSessionStatus"]["status"] == "Connected"
    # accepting is for one's own address only
    assert (await client.put(GROUP + f"/g-1/participants/{B}/status")).status == 403
    assert (await client.put(GROUP + f"/g-1/participants/{A}/status")).status == 204
    assert (await client.delete(GROUP + f"/g-1/participants/{A}")).status == 204
    assert (await client.delete(GROUP + "/g-1")).status == 204
    resp = await client.post(
        ONE + "/s-9/extend",
        json={
            "extensionParameters": {"participant": [{"address": "+15551230003"}], "subject": "3"}
        },
    )
    assert resp.status == 201
    group = (await resp.json())["groupChatSessionInformation"]
    assert resp.headers["Location"] == group["resourceURL"] == f"{SERVER}{GROUP}/g-2"
    assert [p["address"] for p in group["participant"]] == ["tel:+15551230002", "tel:+15551230003"]
