"""The chat REST API of one bridge under test, in the app's own words (unit and integration).

:class:`ChatApi` wraps an aiohttp test client of ``make_app`` + ``install_chat`` and the
local callback :class:`~tests.unit.test_delivery_support.Receiver`: ``call`` checks the
HTTP status, ``subscribe`` registers a callback for a user, ``notes`` waits (bounded)
for that user's callback notifications and validates each against its OMA model.
Test modules subclass it with their signalling side; :meth:`ChatApi.settle` is the hook
a loopback signalling fake uses to finish what a request started before the test looks.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient

from rest.models import NOTIFICATION_MODELS, parse_document
from tests.unit.test_delivery_support import Receiver

ROOT = "http://api.test"
"""The server root the bridges under test are configured with (resource URLs start with it)."""


def q(user: str) -> str:
    """``user`` as one path segment (``tel:+1555...`` -> ``tel%3A%2B1555...``)."""
    return quote(user, safe="")


def local(url: str) -> str:
    """The request path of a resource URL the API emitted under :data:`ROOT`."""
    return url.removeprefix(ROOT)


class ChatApi:
    """REST calls and callback notifications of one bridge under test."""

    def __init__(
        self,
        client: TestClient[web.Request, web.Application],
        receiver: Receiver,
        *,
        notes_timeout: float,
        poll_interval: float = 0.03,
    ) -> None:
        self.client = client
        self.receiver = receiver
        self.notes_timeout = notes_timeout
        self.poll_interval = poll_interval

    async def settle(self) -> None:
        """Let the bridge finish what the last request started (nothing to do by default)."""

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """One request; asserts the status and returns the JSON body (None when empty)."""
        resp = await self.client.request(method, path, json=body)
        text = await resp.text()
        assert resp.status == status, f"{method} {path}: {resp.status} {text}"
        await self.settle()
        return await resp.json() if text else None

    async def subscribe(self, user: str, notify_url: str | None = None, **flags: bool) -> None:
        """Subscribes ``user`` to chat notifications at ``notify_url`` (default: the receiver)."""
        url = notify_url or self.receiver.url(f"/{user}")
        callback = {"notifyURL": url, "callbackData": user}
        body = {"chatNotificationSubscription": {"callbackReference": callback, **flags}}
        await self.call("POST", f"/chat/v1/{q(user)}/subscriptions", body, 201)

    async def notes(self, user: str, root: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait (bounded) for ``count`` callback notifications ``root`` for ``user``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.notes_timeout
        path = f"/{user}"
        while True:
            await self.settle()
            found = [
                r.document for r in self.receiver.received if r.path == path and root in r.document
            ]
            if len(found) >= count:
                for doc in found:
                    parse_document(doc, NOTIFICATION_MODELS[root])
                return [doc[root] for doc in found]
            if loop.time() >= deadline:
                raise AssertionError(
                    f"{user}: {len(found)} of {count} {root}: {self.receiver.received}"
                )
            await asyncio.sleep(self.poll_interval)


async def decline_and_no_subscription(api: ChatApi, a: str, b: str, c: str) -> None:
    """``b`` declines ``a``'s chat (Declined); ``c`` has no subscription (Failed: 480)."""
    await api.subscribe(a)
    await api.subscribe(b)
    await api.call("POST", f"/chat/v1/{q(a)}/oneToOne/{q(b)}", {"chatSessionInformation": {}}, 201)
    (invite,) = await api.notes(b, "chatSessionInvitationNotification")
    await api.call("DELETE", local(invite["link"][0]["href"]), status=204)
    (declined,) = await api.notes(a, "chatEventNotification")
    assert declined["eventType"] == "Declined"
    await api.call("POST", f"/chat/v1/{q(a)}/oneToOne/{q(c)}", {"chatSessionInformation": {}}, 201)
    events = await api.notes(a, "chatEventNotification", 2)
    assert events[1]["eventType"] == "Failed"
