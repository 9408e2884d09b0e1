"""XML and form-encoded bodies (OMA REST_NetAPI_Common, docs/rest-formats.md).

Every model to XML and back; the same resource read as JSON and as XML says
the same thing; form-encoded creates; content negotiation; hostile XML.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any
from xml.etree.ElementTree import fromstring

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from bridge.config import Settings
from rest import channel_models as cm
from rest import formbody, models, xmlbody
from rest.app import make_app
from rest.body import preferred_format
from state.db import Database

ROOT = "http://127.0.0.1:8080/exampleAPI"
ALICE = "tel%3A%2B15551230001"
SUBS = f"/exampleAPI/chat/v1/{ALICE}/subscriptions"
CHANNELS = f"/exampleAPI/notificationchannel/v1/{ALICE}/channels"
XML_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

Client = TestClient[web.Request, web.Application]

LINK = {"rel": "ChatSessionInformation", "href": "http://h/x"}
PARTICIPANT = {
    "address": "tel:+15551230002",
    "name": "Bob",
    "isOriginator": False,
    "status": "Connected",
    "resourceURL": "http://h/p",
    "link": [LINK, LINK],
}
SAMPLES: dict[type[BaseModel], dict[str, Any]] = {
    models.ResourceReference: {"resourceURL": "http://h/r"},
    models.RequestError: {
        "serviceException": {"messageId": "SVC0002", "text": "t %1", "variables": ["a", "b"]}
    },
    models.ChatNotificationSubscription: {
        "callbackReference": {
            "notifyURL": "http://app/cb",
            "callbackData": "d & <x>",
            "notificationFormat": "XML",
        },
        "duration": 3600,
        "clientCorrelator": "c1",
        "confirmedChatSupported": True,
        "adhocChatSupported": False,
        "resourceURL": "http://h/s",
        "link": [LINK],
    },
    models.ChatSubscriptionList: {
        "chatNotificationSubscription": [
            {"callbackReference": {"notifyURL": "http://app/1"}, "duration": 5},
            {"callbackReference": {"notifyURL": "http://app/2"}},
        ],
        "resourceURL": "http://h/s",
    },
    models.ChatMessage: {
        "text": "Hello <world> & ünïcode",
        "reportRequest": ["Delivered", "Displayed"],
        "clientCorrelator": "m1",
        "resourceURL": "http://h/m",
    },
    models.IsComposing: {
        "state": "active",
        "lastActive": "2012-11-09T15:36:13Z",
        "contentType": "text/plain",
        "refresh": 60,
    },
    models.ChatSessionInformation: {
        "subject": "s",
        "originatorAddress": "tel:+15551230001",
        "originatorName": "A",
        "tParticipantAddress": "tel:+15551230002",
        "tParticipantName": "B",
        "status": "Invited",
        "clientCorrelator": "c",
        "resourceURL": "http://h/s",
        "link": [LINK],
    },
    models.MessageStatusReport: {"status": "Delivered", "resourceURL": "http://h/x"},
    models.ParticipantSessionStatus: {"status": "Connected", "resourceURL": "http://h/x"},
    models.ParticipantInformation: PARTICIPANT,
    models.GroupChatSessionInformation: {
        "subject": "g",
        "participant": [PARTICIPANT, {"address": "sip:carol@ims.test"}],
        "originatorAddress": "tel:+15551230001",
        "status": "Connected",
        "resourceURL": "http://h/g",
    },
    models.ParticipantList: {"participant": [PARTICIPANT], "resourceURL": "http://h/l"},
    models.ExtensionParameters: {
        "participant": [{"address": "tel:+15551230003"}],
        "subject": "more",
        "clientCorrelator": "e",
    },
    models.ChatEventNotification: {
        "callbackData": "cd",
        "link": [LINK],
        "eventType": "SessionEnded",
        "sessionId": "s1",
        "reason": {"messageId": "SVC0001", "text": "t", "variables": ["v"]},
    },
    models.ChatSessionInvitationNotification: {
        "originatorAddress": "tel:+15551230002",
        "tParticipantAddress": "tel:+15551230001",
        "subject": "hi",
        "sessionId": "s1",
        "link": [LINK],
    },
    models.ChatMessageNotification: {
        "link": [LINK],
        "dateTime": "2012-11-09T15:36:13Z",
        "chatMessage": {"text": "hi", "reportRequest": ["Displayed"]},
        "sessionId": "adhoc",
        "messageId": "m1",
        "senderAddress": "tel:+15551230002",
    },
    models.ChatMessageStatusNotification: {
        "link": [LINK],
        "status": "Displayed",
        "messageId": "m1",
    },
    models.GroupChatSessionInvitationNotification: {
        "participant": [PARTICIPANT],
        "sessionId": "g1",
        "link": [LINK],
    },
    models.ChatParticipantStatusNotification: {
        "link": [LINK],
        "participant": [PARTICIPANT],
        "sessionId": "g1",
    },
    cm.NotificationChannel: {
        "clientCorrelator": "c",
        "applicationTag": "myApp",
        "channelType": "LongPolling",
        "channelData": {
            "channelURL": "http://h/poll",
            "maxNotifications": 40,
            "type": "nc:LongPollingData",
        },
        "channelLifetime": 7200,
        "callbackURL": "http://h/cb",
        "resourceURL": "http://h/c",
        "link": [LINK],
    },
    cm.NotificationChannelList: {
        "notificationChannel": [{"channelType": "LongPolling", "channelLifetime": 300}],
        "resourceURL": "http://h/c",
    },
}


def root_of(model: type[BaseModel]) -> str:
    return str(model.ROOT)  # type: ignore[attr-defined]


def test_every_model_has_a_sample() -> None:
    every = {
        m
        for m in vars(models).values()
        if isinstance(m, type) and issubclass(m, models._Model) and m.ROOT
    }
    assert every <= set(SAMPLES), every - set(SAMPLES)


@pytest.mark.parametrize("model", list(SAMPLES), ids=lambda m: m.__name__)
def test_model_to_xml_and_back(model: type[BaseModel]) -> None:
    value = model.model_validate(SAMPLES[model])
    data = xmlbody.render_model(root_of(model), value)
    assert xmlbody.parse_model(data, model) == value
    # the root is in its API's namespace, children are unqualified
    element = fromstring(data)
    assert element.tag == f"{{{xmlbody.namespace_of(root_of(model))}}}{root_of(model)}"
    assert all(not child.tag.startswith("{") for child in element)


def test_xml_mapping_details() -> None:
    value = cm.NotificationChannel.model_validate(SAMPLES[cm.NotificationChannel])
    text = xmlbody.render_model("notificationChannel", value).decode()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<nc:notificationChannel ')
    assert '<channelData xsi:type="nc:LongPollingData">' in text
    assert "<maxNotifications>40</maxNotifications>" in text
    msg = models.ChatMessage.model_validate(SAMPLES[models.ChatMessage])
    text = xmlbody.render_model("chatMessage", msg).decode()
    assert (
        "<reportRequest>Delivered</reportRequest><reportRequest>Displayed</reportRequest>" in text
    )
    assert "&lt;world&gt; &amp;" in text
    err = models.RequestError.model_validate(SAMPLES[models.RequestError])
    assert xmlbody.render_model("requestError", err).decode().count("<common:requestError") == 1
    # another prefix for the channel namespace, and a bare type, are read too
    other = (
        '<x:notificationChannel xmlns:x="urn:oma:xml:rest:netapi:notificationchannel:1"'
        ' xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><channelType>LongPolling'
        '</channelType><channelData i:type="x:LongPollingData"><maxNotifications>3'
        "</maxNotifications></channelData></x:notificationChannel>"
    ).encode()
    parsed = xmlbody.parse_model(other, cm.NotificationChannel)
    assert isinstance(parsed, cm.NotificationChannel) and parsed.channel_data is not None
    assert parsed.channel_data.type == "nc:LongPollingData"
    assert parsed.channel_data.max_notifications == 3


def test_notification_list_items_are_qualified_roots() -> None:
    text = xmlbody.render(
        "notificationList",
        [{"chatMessageNotification": {"sessionId": "s", "link": [LINK]}}],
    ).decode()
    assert "<nc:notificationList " in text
    assert "<chat:chatMessageNotification><sessionId>s</sessionId><link>" in text


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/xml", "application/xml"),
        ("text/xml", "application/xml"),
        ("application/json;q=0.5, application/xml", "application/xml"),
        ("application/json, application/xml", "application/json"),
        ("application/xml;q=0.1, */*", "application/json"),
        ("application/*", "application/json"),
        ("text/plain", None),
        ("application/xml;q=0", None),
    ],
)
def test_preferred_format(accept: str, expected: str | None) -> None:
    assert preferred_format(accept) == expected


# --- form flattening -----------------------------------------------------------


def form(text: str, *roots: type[BaseModel]) -> tuple[str, dict[str, Any]]:
    return formbody.read_form(text.encode(), {root_of(m): m for m in roots})


def test_form_flat_leaves_and_arrays() -> None:
    root, data = form(
        "text=Hello&reportRequest=Delivered&reportRequest=Displayed",
        models.ChatMessage,
        models.IsComposing,
    )
    assert root == "chatMessage"
    assert data == {"text": "Hello", "reportRequest": ["Delivered", "Displayed"]}
    root, data = form("state=active&refresh=60", models.ChatMessage, models.IsComposing)
    assert (root, data) == ("isComposing", {"state": "active", "refresh": "60"})
    for text in (
        "notifyURL=http%3A%2F%2Fa%2Fb&callbackData=x&duration=60",
        "callbackReference.notifyURL=http%3A%2F%2Fa%2Fb&callbackData=x&duration=60",
    ):
        _, data = form(text, models.ChatNotificationSubscription)
        assert data == {
            "callbackReference": {"notifyURL": "http://a/b", "callbackData": "x"},
            "duration": "60",
        }


def test_form_participants_choice_and_items() -> None:
    one = (models.ParticipantInformation, models.ParticipantList)
    root, data = form("address=tel%3A%2B15551230002&name=Bob", *one)
    assert (root, data) == (
        "participantInformation",
        {"address": "tel:+15551230002", "name": "Bob"},
    )
    root, data = form("address=%2B1555&name=A&address=%2B1556&name=B", *one)
    assert root == "participantList"
    assert data == {
        "participant": [{"address": "+1555", "name": "A"}, {"address": "+1556", "name": "B"}]
    }
    _, data = form(
        "subject=s&participant.address=%2B1&participant.address=%2B2&clientCorrelator=c",
        models.GroupChatSessionInformation,
    )
    assert data == {
        "subject": "s",
        "participant": [{"address": "+1"}, {"address": "+2"}],
        "clientCorrelator": "c",
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("text=a&text=b", "must not repeat"),
        ("nope=1", "unknown field"),
        ("rel=x", "unknown field"),
    ],
)
def test_form_refusals(text: str, why: str) -> None:
    with pytest.raises(formbody.FormError, match=why):
        form(text, models.ChatMessage)


# --- over HTTP -------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    await database.migrate()
    yield database
    await database.close()


@pytest.fixture
async def client(db, aiohttp_client) -> Client:
    settings = Settings(
        database_url=str(db.url), server_root=ROOT, channel_poll_timeout=0.3, max_body_bytes=65536
    )
    c: Client = await aiohttp_client(make_app(settings, db))
    return c


SUB_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<chat:chatNotificationSubscription xmlns:chat="urn:oma:xml:rest:netapi:chat:1">'
    b"<callbackReference><notifyURL>http://app.example/cb</notifyURL>"
    b"<notificationFormat>XML</notificationFormat></callbackReference>"
    b"<duration>600</duration><clientCorrelator>x1</clientCorrelator>"
    b"</chat:chatNotificationSubscription>"
)


async def test_the_same_resource_as_json_and_as_xml(client) -> None:
    resp = await client.post(SUBS, data=SUB_XML, headers=XML_HEADERS)
    assert resp.status == 201, await resp.text()
    assert resp.content_type == "application/xml"
    created = xmlbody.parse_model(await resp.read(), models.ChatNotificationSubscription)
    url = resp.headers["Location"]
    path = url.removeprefix("http://127.0.0.1:8080")
    as_json = await (await client.get(path)).json()
    as_xml = await (await client.get(path, headers={"Accept": "application/xml"})).read()
    from_json = models.ChatNotificationSubscription.model_validate(
        as_json["chatNotificationSubscription"]
    )
    from_xml = xmlbody.parse_model(as_xml, models.ChatNotificationSubscription)
    assert from_json == from_xml
    assert isinstance(created, models.ChatNotificationSubscription)
    assert created.callback_reference == from_json.callback_reference
    assert from_json.callback_reference.notification_format == models.NotificationFormat.XML
    # the list, and a channel, likewise
    lists = [
        await client.get(SUBS, headers={"Accept": a})
        for a in ("application/json", "application/xml")
    ]
    assert models.ChatSubscriptionList.model_validate(
        (await lists[0].json())["chatSubscriptionList"]
    ) == xmlbody.parse_model(await lists[1].read(), models.ChatSubscriptionList)
    resp = await client.post(
        CHANNELS,
        data=b'<nc:notificationChannel xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1">'
        b"<channelType>LongPolling</channelType></nc:notificationChannel>",
        headers=XML_HEADERS,
    )
    assert resp.status == 201, await resp.text()
    channel = xmlbody.parse_model(await resp.read(), cm.NotificationChannel)
    assert isinstance(channel, cm.NotificationChannel) and channel.resource_url
    read = await client.get(channel.resource_url.removeprefix("http://127.0.0.1:8080"))
    from_json_ch = cm.NotificationChannel.model_validate((await read.json())["notificationChannel"])
    assert from_json_ch.channel_data == channel.channel_data
    assert from_json_ch.callback_url == channel.callback_url


async def test_faults_in_xml(client) -> None:
    resp = await client.post(
        SUBS, data=b"<chat:nope xmlns:chat='urn:oma:xml:rest:netapi:chat:1'/>", headers=XML_HEADERS
    )
    assert resp.status == 400 and resp.content_type == "application/xml"
    error = xmlbody.parse_model(await resp.read(), models.RequestError)
    assert isinstance(error, models.RequestError) and error.service_exception is not None
    assert error.service_exception.message_id == "SVC0002"
    resp = await client.get(SUBS + "/nope", headers={"Accept": "application/xml"})
    assert resp.status == 404 and resp.content_type == "application/xml"
    resp = await client.put(SUBS, headers={"Accept": "application/xml"})
    assert resp.status == 405 and b"<common:requestError" in await resp.read()
    # a bad value in XML names its element as JSON does
    bad = SUB_XML.replace(b"<duration>600</duration>", b"<duration>soon</duration>")
    resp = await client.post(SUBS, data=bad, headers=XML_HEADERS)
    assert resp.status == 400
    assert b"chatNotificationSubscription.duration" in await resp.read()
    # the wrong namespace on the root
    wrong = SUB_XML.replace(b"netapi:chat:1", b"netapi:other:1")
    resp = await client.post(SUBS, data=wrong, headers=XML_HEADERS)
    assert resp.status == 400 and b"namespace" in await resp.read()


async def test_form_encoded_subscription_and_channel(client) -> None:
    resp = await client.post(
        SUBS,
        data="notifyURL=http%3A%2F%2Fapp.example%2Fcb&callbackData=d&clientCorrelator=f1",
        headers={**FORM, "Accept": "application/json"},
    )
    assert resp.status == 201, await resp.text()
    sub = (await resp.json())["chatNotificationSubscription"]
    assert sub["callbackReference"] == {
        "notifyURL": "http://app.example/cb",
        "callbackData": "d",
        "notificationFormat": "JSON",
    }
    resp = await client.post(
        CHANNELS,
        data="channelType=LongPolling&maxNotifications=7&type=nc%3ALongPollingData",
        headers={**FORM, "Accept": "application/xml"},
    )
    assert resp.status == 201, await resp.text()
    channel = xmlbody.parse_model(await resp.read(), cm.NotificationChannel)
    assert isinstance(channel, cm.NotificationChannel) and channel.channel_data is not None
    assert channel.channel_data.max_notifications == 7
    resp = await client.post(SUBS, data="bogus=1", headers=FORM)
    assert resp.status == 400 and "unknown field" in json.dumps(await resp.json())
    # form encoding is for the creating POSTs only
    resp = await client.put(
        f"/exampleAPI/chat/v1/{ALICE}/oneToOne/tel%3A%2B2/s1/status",
        data="status=Connected",
        headers=FORM,
    )
    assert resp.status == 415


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<chat:chatNotificationSubscription xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><callbackReference>
<notifyURL>http://a/&lol3;</notifyURL></callbackReference></chat:chatNotificationSubscription>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<chat:chatNotificationSubscription xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><callbackReference>
<notifyURL>http://a/&xxe;</notifyURL></callbackReference></chat:chatNotificationSubscription>"""
UNDECLARED = (
    b'<chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1">'
    b"<text>&xxe;</text></chat:chatMessage>"
)
DEEP = b"<a>" * 5000 + b"</a>" * 5000


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL, "DOCTYPE"),
        (UNDECLARED, "undefined entity"),
        (DEEP, "nesting deeper"),
        (b"<chat:x", "malformed XML"),
    ],
    ids=["billion-laughs", "external-entity", "undeclared-entity", "deep", "truncated"],
)
async def test_hostile_xml_is_refused(client, body: bytes, why: str) -> None:
    resp = await client.post(SUBS, data=body, headers=XML_HEADERS)
    assert resp.status == 400
    text = (await resp.read()).decode()
    assert "<common:requestError" in text and why in text, text
    assert (await client.get(SUBS)).status == 200  # the process is unharmed


async def test_oversize_xml_is_413(client) -> None:
    body = SUB_XML.replace(b"x1", b"x" * (10 * 1024 * 1024))
    resp = await client.post(SUBS, data=io.BytesIO(body), headers=XML_HEADERS)
    assert resp.status == 413
    assert b"<common:requestError" in await resp.read()
    assert (await client.get(SUBS)).status == 200
