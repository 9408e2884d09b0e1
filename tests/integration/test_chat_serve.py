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
