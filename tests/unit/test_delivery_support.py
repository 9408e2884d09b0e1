"""Shared pieces of the delivery, outbox and channel tests: a real local HTTP receiver.

:class:`Receiver` is an aiohttp server on 127.0.0.1 (port 0) that records every
POST and answers with the statuses it is told to (``fail_next``), so the
delivery worker is exercised over real sockets, never through mocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.config import Settings


def fast_settings(db_url: str, **overrides: object) -> Settings:
    """Settings with short timers for tests."""
    values: dict[str, object] = {
        "database_url": db_url,
        "notification_backoff_initial": 0.05,
        "notification_backoff_max": 0.2,
        "notification_http_timeout": 2.0,
        "notification_max_age": 60.0,
        "channel_poll_timeout": 0.5,
        "server_root": "http://127.0.0.1:8080",
        "notify_allow_loopback": True,  # the Receiver runs on 127.0.0.1 (docs/notify-policy.md)
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def xml_notification(data: bytes) -> dict[str, Any]:
    """The JSON document ``{root: {...}}`` of a notification POSTed in XML.

    (docs/rest-formats.md)
    """
    from rest.models import NOTIFICATION_MODELS
    from rest.xmlbody import read_document

    root, content = read_document(data, NOTIFICATION_MODELS)
    return {root: NOTIFICATION_MODELS[root].model_validate(content).to_json()}


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    content_type: str
    document: dict[str, dict[str, object]]


@dataclass
class Receiver:
    """A local notification receiver with programmable failures."""

    received: list[Received] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    """Statuses to answer (in order) before answering 204 again."""
    fail_when: Callable[[str], bool] = lambda _path: False
    """Paths for which every POST fails with 503."""
    delays: list[float] = field(default_factory=list)
    """Seconds to stall before answering (in order, one per request)."""
    requests: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _handle(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.requests += 1
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        if self.fail_when(request.path):
            return web.Response(status=503)
        if self.failures:
            return web.Response(status=self.failures.pop(0))
        if request.content_type == "application/xml":  # notificationFormat XML
            document = xml_notification(data)
        else:
            document = json.loads(data)
        self.received.append(Received(request.path, request.content_type, document))
        async with self._arrived:
            self._arrived.notify_all()
        return web.Response(status=204)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def seqs(self, path: str | None = None) -> list[object]:
        """The ``seq`` of every received notification (on ``path`` only, if given)."""
        return [
            next(iter(r.document.values()))["seq"]
            for r in self.received
            if path is None or r.path == path
        ]

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until ``count`` notifications arrived (AssertionError after ``timeout``)."""

        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received) >= count)

        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"only {len(self.received)} of {count} notifications arrived"
            ) from None
        return self.received
