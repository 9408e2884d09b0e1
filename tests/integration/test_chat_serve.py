"""``chat-bridge serve`` as a subprocess: the embedded default, and kill -9 mid-conversation.

* Embedded default: no outbound proxy; two REST users of one bridge chat over
  real SIP and MSRP on loopback (the bridge's own listener is its proxy).
* Kill -9: two users chat through Kamailio, the bridge is killed with SIGKILL
  right after the app got its 201s, then restarted on the same store. Every
  accepted message ends up notified to B or reported Failed to A; the session
  that was up is reported ended to both; the users can chat again.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.serve_process import ServeProcess, serve_env
from tests.testbed_fixture import Testbed, free_port_block
from tests.unit.test_delivery_support import Receiver

pytestmark = pytest.mark.integration

A = "tel:+15555550201"
B = "tel:+15555550202"


def q(user: str) -> str:
    return quote(user, safe="")


@dataclass
class Serve(ServeProcess):
    """A ``chat-bridge serve`` subprocess with its REST client side and its callback receiver."""

    receiver: Receiver

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.root + path, json=body) as resp:
                text = await resp.text()
                assert resp.status == status, f"{method} {path}: {resp.status} {text}"
                return await resp.json() if text else None

    async def subscribe(self, user: str, **flags: bool) -> None:
        callback = {"notifyURL": self.receiver.url(f"/{user}"), "callbackData": user}
        body = {"chatNotificationSubscription": {"callbackReference": callback, **flags}}
        await self.call("POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)

    def got(self, user: str, root: str) -> list[dict[str, Any]]:
        return [
            r.document[root]
            for r in self.receiver.received
            if r.path == f"/{user}" and root in r.document
        ]

    async def notes(
        self, user: str, root: str, count: int = 1, wait: float = 15.0
    ) -> list[dict[str, Any]]:
        for _ in range(int(wait / 0.05)):
            found = self.got(user, root)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{user}: {len(self.got(user, root))} of {count} {root}\n{self.log.read_text()[-3000:]}"
        )

    def local(self, url: str) -> str:
        return url.removeprefix(self.root)


async def settled(serve: Serve, session: str, ids: list[str]) -> dict[str, str]:
    """The REST status of each of ``ids`` sent on ``session``."""
    out: dict[str, str] = {}
    for mid in ids:
        got = await serve.call("GET", f"{session}/messages/{mid}/status")
        out[mid] = got["messageStatusReport"]["status"]
    return out


@contextmanager
def serving(tmp_path: Path, receiver: Receiver, **env: str) -> Iterator[Serve]:
    base = free_port_block(size=4)
    clean = serve_env(
        tmp_path / "bridge.db",
        http_port=base,
        sip_port=base + 1,
        **{
            "CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL": "0.1",
            "CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX": "0.3",
            "CHAT_BRIDGE_NOTIFICATION_HTTP_TIMEOUT": "2",
            "CHAT_BRIDGE_CHAT_INVITE_TIMEOUT": "8",
            "CHAT_BRIDGE_LOG_LEVEL": "INFO",
            **env,
        },
    )
    serve = Serve(clean, tmp_path / "bridge.log", base, receiver)
    try:
        yield serve
    finally:
        serve.stop()


async def test_embedded_default_two_users_chat_over_loopback(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serving(tmp_path, receiver) as serve:
        assert "CHAT_BRIDGE_SIP_OUTBOUND_PROXY" not in serve.env
        await serve.start()
        await serve.subscribe(A)
        await serve.subscribe(B)
        created = await serve.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
        )
        a_session = serve.local(created["chatSessionInformation"]["resourceURL"])
        (invite,) = await serve.notes(B, "chatSessionInvitationNotification")
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
        (accepted,) = await serve.notes(A, "chatEventNotification")
        assert accepted["eventType"] == "Accepted"
        await serve.call(
            "POST",
            a_session + "/messages",
            {"chatMessage": {"text": "over loopback", "reportRequest": ["Delivered"]}},
            201,
        )
        (msg,) = await serve.notes(B, "chatMessageNotification")
        assert msg["chatMessage"] == {"text": "over loopback"} and msg["senderAddress"] == A
        (status,) = await serve.notes(A, "chatMessageStatusNotification")
        assert status["status"] == "Delivered"
        await serve.call("DELETE", a_session, status=204)
        events = await serve.notes(B, "chatEventNotification")
        assert events[-1]["eventType"] == "SessionEnded"
        log = serve.log.read_text()
        assert "requests loop back to sip:127.0.0.1:" in log and "(embedded default)" in log


async def test_kill_9_mid_conversation_through_kamailio(
    tmp_path: Path, receiver: Receiver, kamailio: Testbed
) -> None:
    with serving(
        tmp_path,
        receiver,
        CHAT_BRIDGE_SIP_PORT=str(kamailio.as_port),
        CHAT_BRIDGE_SIP_OUTBOUND_PROXY=f"sip:127.0.0.1:{kamailio.sip_port};transport=tcp",
    ) as serve:
        await serve.start()
        await serve.subscribe(A)
        await serve.subscribe(B)
        created = await serve.call(
            "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", {"chatSessionInformation": {}}, 201
        )
        a_session = serve.local(created["chatSessionInformation"]["resourceURL"])
        (invite,) = await serve.notes(B, "chatSessionInvitationNotification")
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        b_session = links["ChatSessionInformation"]
        await serve.call("PUT", links["ParticipantSessionStatus"], status=204)
        await serve.notes(A, "chatEventNotification")
        await serve.call("POST", a_session + "/messages", {"chatMessage": {"text": "before"}}, 201)
        await serve.notes(B, "chatMessageNotification")

        # a burst the app got 201s for, then SIGKILL at once
        burst = await asyncio.gather(
            *(
                serve.call(
                    "POST",
                    a_session + "/messages",
                    {"chatMessage": {"text": f"burst {i}", "reportRequest": ["Delivered"]}},
                    201,
                )
                for i in range(8)
            )
        )
        serve.kill()
        accepted = [sent["resourceReference"]["resourceURL"].split("/")[-2] for sent in burst]

        await serve.start()  # same store, same ports
        a_events = await serve.notes(A, "chatEventNotification", 2, wait=20)
        b_events = await serve.notes(B, "chatEventNotification", 1, wait=20)
        assert a_events[-1]["eventType"] == "SessionEnded"
        assert b_events[-1]["eventType"] == "SessionEnded"
        for path in (a_session, b_session):
            got = await serve.call("GET", path)
            assert got["chatSessionInformation"]["status"] == "Disconnected"

        # every accepted message reached B's app or is reported Failed to A
        received = set()
        for _ in range(200):
            received = {n["messageId"] for n in serve.got(B, "chatMessageNotification")}
            statuses = await settled(serve, a_session, accepted)
            if all(s == "Failed" or mid in received for mid, s in statuses.items()):
                break
            await asyncio.sleep(0.1)
        lost = [m for m, s in statuses.items() if s != "Failed" and m not in received]
        assert not lost, f"accepted but neither delivered nor failed: {lost} {statuses}"
        failed = [
            n["messageId"]
            for n in serve.got(A, "chatMessageStatusNotification")
            if n["status"] == "Failed"
        ]
        assert {m for m, s in statuses.items() if s == "Failed"} <= set(failed)

        # and the users chat again after the restart
        await serve.call(
            "POST",
            f"/chat/v1/{q(A)}/oneToOne/{q(B)}/adhoc/messages",
            {"chatMessage": {"text": "after restart"}},
            201,
        )
        for _ in range(200):
            texts = [
                n["chatMessage"]["text"]
                for n in serve.got(B, "chatMessageNotification")
                if "chatMessage" in n
            ]
            if "after restart" in texts:
                break
            await asyncio.sleep(0.05)
        assert "after restart" in texts, serve.log.read_text()[-3000:]


# --- XML and form-encoded bodies (issue 9; docs/rest-formats.md) ---------------------

XML = "application/xml"
XML_HEADERS = {"Content-Type": XML, "Accept": XML}


async def xml_call(
    serve: Serve,
    method: str,
    path: str,
    body: bytes | str | io.BytesIO | None,
    status: int,
    **headers: str,
) -> bytes:
    """A request answered in XML (JSON is never sent nor accepted here)."""
    sent = {**XML_HEADERS, **headers}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, serve.root + path, data=body, headers=sent) as resp:
            data = await resp.read()
            assert resp.status == status, f"{method} {path}: {resp.status} {data!r}"
            if data:
                assert resp.content_type == XML, resp.content_type
            return data


def chat_xml(root: str, inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><chat:{root} xmlns:chat='
        f'"urn:oma:xml:rest:netapi:chat:1">{inner}</chat:{root}>'
    ).encode()


async def xml_poll(serve: Serve, channel_url: str, root: str, wanted: int = 1) -> list[Any]:
    """Long-poll the channel in XML until ``wanted`` notifications ``root`` arrived."""
    from rest.models import NOTIFICATION_MODELS
    from rest.xmlbody import element_data, parse_xml, split_tag

    found: list[Any] = []
    for _ in range(40):
        data = await xml_call(serve, "POST", serve.local(channel_url), None, 200)
        element = parse_xml(data)
        assert split_tag(element.tag) == (
            "urn:oma:xml:rest:netapi:notificationchannel:1",
            "notificationList",
        )
        for item in element:
            ns, name = split_tag(item.tag)
            assert ns == "urn:oma:xml:rest:netapi:chat:1"
            model = NOTIFICATION_MODELS[name]
            if name == root:
                found.append(model.model_validate(element_data(item, model)))
        if len(found) >= wanted:
            return found
    raise AssertionError(f"{len(found)} of {wanted} {root}\n{serve.log.read_text()[-3000:]}")


async def test_embedded_default_in_xml_and_form_encoding(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A on a long-poll channel, B on an XML callback: subscribe, chat, reports in XML only;
    the message is sent form-encoded."""
    from rest import channel_models as cm
    from rest import models
    from rest.xmlbody import parse_model

    with serving(tmp_path, receiver) as serve:
        await serve.start()
        nc = (
            b'<nc:notificationChannel xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1">'
            b"<channelType>LongPolling</channelType><channelLifetime>1</channelLifetime>"
            b'<channelData xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            b' xsi:type="nc:LongPollingData"><maxNotifications>10</maxNotifications>'
            b"</channelData></nc:notificationChannel>"
        )
        data = await xml_call(serve, "POST", f"/notificationchannel/v1/{q(A)}/channels", nc, 201)
        channel = parse_model(data, cm.NotificationChannel)
        assert isinstance(channel, cm.NotificationChannel)
        assert channel.channel_lifetime is not None and channel.channel_lifetime >= 180
        assert channel.channel_data is not None and channel.channel_data.channel_url
        poll_url = channel.channel_data.channel_url
        # A subscribes with the channel's callbackURL, spelled decoded
        assert channel.callback_url is not None
        decoded = channel.callback_url.replace("%3A", ":").replace("%2B", "+")
        for user, url in ((A, decoded), (B, receiver.url(f"/{B}"))):
            body = chat_xml(
                "chatNotificationSubscription",
                f"<callbackReference><notifyURL>{url}</notifyURL>"
                "<notificationFormat>XML</notificationFormat></callbackReference>",
            )
            data = await xml_call(serve, "POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)
            sub = parse_model(data, models.ChatNotificationSubscription)
            assert isinstance(sub, models.ChatNotificationSubscription)
            assert sub.callback_reference.notification_format == models.NotificationFormat.XML
            if user == A:
                assert sub.callback_reference.notify_url == channel.callback_url

        session_body = chat_xml("chatSessionInformation", "<subject>xml</subject>")
        data = await xml_call(serve, "POST", f"/chat/v1/{q(A)}/oneToOne/{q(B)}", session_body, 201)
        created = parse_model(data, models.ChatSessionInformation)
        assert isinstance(created, models.ChatSessionInformation) and created.resource_url
        a_session = serve.local(created.resource_url)

        # B's invitation arrives as an XML POST (the receiver decodes it for the test)
        (invite,) = await serve.notes(B, "chatSessionInvitationNotification")
        assert receiver.received[-1].content_type == XML
        links = {link["rel"]: serve.local(link["href"]) for link in invite["link"]}
        accept = chat_xml("participantSessionStatus", "<status>Connected</status>")
        await xml_call(serve, "PUT", links["ParticipantSessionStatus"], accept, 204)
        (accepted,) = await xml_poll(serve, poll_url, "chatEventNotification")
        assert accepted.event_type == models.EventType.ACCEPTED

        # the message goes form-encoded; the answer is XML
        data = await xml_call(
            serve,
            "POST",
            a_session + "/messages",
            "text=form+%26+xml&reportRequest=Delivered&reportRequest=Displayed",
            201,
            **{"Content-Type": "application/x-www-form-urlencoded"},
        )
        ref = parse_model(data, models.ResourceReference)
        assert isinstance(ref, models.ResourceReference)
        (msg,) = await serve.notes(B, "chatMessageNotification")
        assert msg["chatMessage"]["text"] == "form & xml" and msg["senderAddress"] == A
        b_status = serve.local(
            next(link["href"] for link in msg["link"] if link["rel"] == "MessageStatusReport")
        )
        displayed = chat_xml("messageStatusReport", "<status>Displayed</status>")
        await xml_call(serve, "PUT", b_status, displayed, 204)
        reports = await xml_poll(serve, poll_url, "chatMessageStatusNotification", 2)
        assert [r.status.value for r in reports] == ["Delivered", "Displayed"]
        data = await xml_call(serve, "GET", serve.local(ref.resource_url), None, 200)
        report = parse_model(data, models.MessageStatusReport)
        assert isinstance(report, models.MessageStatusReport)
        assert report.status == models.MessageStatus.DISPLAYED

        # hostile XML: refused with an OMA fault, the process unharmed
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>&b;</text>'
            b"</chat:chatMessage>"
        )
        for hostile, status in (
            (laughs, 400),
            (b"<a>" * 2000 + b"</a>" * 2000, 400),
            (b"<a>" + b"x" * (10 * 1024 * 1024) + b"</a>", 413),
        ):
            data = await xml_call(
                serve, "POST", a_session + "/messages", io.BytesIO(hostile), status
            )
            assert b"<common:requestError" in data
        await xml_call(serve, "DELETE", a_session, None, 204)
        assert serve.proc is not None and serve.proc.poll() is None
