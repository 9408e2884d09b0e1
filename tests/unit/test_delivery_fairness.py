"""Issue 13 defect 8: one tenant's slow webhook does not delay everyone's (rest.delivery).

A POST still unanswered after ``notification_slow_after`` stops holding a
delivery slot, a destination runs at most ``notification_destination_concurrency``
lanes, and a destination failing ``notification_breaker_failures`` times in a
row is paused (circuit breaker), its lanes skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from bridge.ids import SubscriptionId, UserUri
from rest.delivery import DeliveryService
from state.db import Database
from tests.unit.test_delivery_support import Receiver, fast_settings

USER = UserUri("tel:+15555550099")


class Hanging:
    """A receiver that accepts connections, reads the requests and never answers."""

    def __init__(self) -> None:
        self.open = 0
        self.most = 0
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.open += 1
        self.connections += 1
        self.most = max(self.most, self.open)
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    def url(self, path: str = "/hang") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'fair.db'}")
    await database.migrate()
    yield database
    await database.close()


async def publish(service: DeliveryService, sub: str, url: str, n: int = 0) -> None:
    await service.publish(
        user=USER, subscription_id=SubscriptionId(sub), notify_url=url, root="m", body={"n": n}
    )


async def test_forty_hanging_receivers_do_not_delay_a_fast_one(
    db: Database, receiver: Receiver
) -> None:
    hanging = [Hanging() for _ in range(40)]
    for h in hanging:
        await h.start()
    settings = fast_settings(str(db.url), notification_http_timeout=30.0)
    service = DeliveryService(settings, db)
    await service.start()
    waits: list[float] = []
    try:
        for i, h in enumerate(hanging):
            await publish(service, f"hang-{i}", h.url())
        await asyncio.sleep(0.2)  # every slot taken by a hanging POST
        for n in range(10):
            began = time.monotonic()
            await publish(service, "fast", receiver.url("/fast"), n)
            await receiver.wait_for(n + 1, timeout=10.0)
            waits.append(time.monotonic() - began)
        opened = sum(1 for h in hanging if h.connections)
    finally:
        await service.stop()
        for h in hanging:
            await h.stop()
    logging.getLogger(__name__).warning(
        "fast receiver waits: %s s; hanging receivers hit: %d",
        ", ".join(f"{w:.3f}" for w in waits),
        opened,
    )
    # the first waits for the hanging POSTs to be set aside (slow_after 1 s); later ones at once
    assert waits[0] < settings.notification_slow_after + 1.5
    assert max(waits[1:]) < 1.0
    assert opened == 40  # every hanging receiver got its POST: set aside, not starved
    assert service.stats.slow >= 32


async def test_one_destination_holds_at_most_its_share(db: Database, receiver: Receiver) -> None:
    hang = Hanging()
    await hang.start()
    settings = fast_settings(
        str(db.url),
        notification_http_timeout=30.0,
        notification_destination_concurrency=4,
        notification_slow_after=0.2,
    )
    service = DeliveryService(settings, db)
    await service.start()
    try:
        for i in range(30):
            await publish(service, f"tenant-{i}", hang.url(f"/s{i}"))
        await asyncio.sleep(1.0)
        assert hang.most <= 4
        began = time.monotonic()
        await publish(service, "other", receiver.url("/other"))
        await receiver.wait_for(1, timeout=10.0)
        assert time.monotonic() - began < 1.0
        assert hang.connections <= 4  # the other lanes wait in the outbox, unclaimed
    finally:
        await service.stop()
        await hang.stop()
    assert hang.most <= 4


async def test_failing_destination_is_paused_then_retried(db: Database, receiver: Receiver) -> None:
    receiver.fail_when = lambda path: path.startswith("/bad")
    settings = fast_settings(
        str(db.url),
        notification_backoff_initial=0.01,
        notification_backoff_max=1.0,
        notification_breaker_failures=3,
        notification_breaker_pause=0.6,
    )
    service = DeliveryService(settings, db)
    await service.start()
    try:
        for i in range(6):
            await publish(service, f"bad-{i}", receiver.url(f"/bad{i}"))
        for _ in range(300):
            if service.stats.paused:
                break
            await asyncio.sleep(0.01)
        assert service.stats.paused == 1
        during = receiver.requests
        await asyncio.sleep(0.4)  # paused: nothing is POSTed there
        assert receiver.requests - during <= 6  # at most the POSTs already under way
        paused_at = receiver.requests
        receiver.fail_when = lambda path: False  # it recovers
        await receiver.wait_for(6, timeout=10.0)
        assert receiver.requests > paused_at
    finally:
        await service.stop()


async def test_publishing_to_a_full_destination_claims_nothing_inline(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lanes of a destination at its limit wait for it to free up: publish must not
    # try to claim them in its transaction (each try was one more UPDATE for nothing;
    # bench/notify_bench.py's 8 producers over 50 subscriptions of one receiver made
    # 752 of those claims instead of 50)
    from state import outbox

    hang = Hanging()
    await hang.start()
    tries: list[int] = []
    claim = outbox.claim_if_alone

    async def counted(*args: object, **kwargs: object) -> bool:
        tries.append(1)
        return await claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "claim_if_alone", counted)
    settings = fast_settings(
        str(db.url), notification_http_timeout=30.0, notification_destination_concurrency=2
    )
    service = DeliveryService(settings, db)
    await service.start()
    try:
        for i in range(2):
            await publish(service, f"tenant-{i}", hang.url(f"/s{i}"))
        for _ in range(100):  # both lanes run: the destination is full
            if hang.open == 2:
                break
            await asyncio.sleep(0.02)
        assert hang.open == 2 and len(tries) == 2
        for i in range(2, 12):
            await publish(service, f"tenant-{i}", hang.url(f"/s{i}"))
        assert len(tries) == 2  # the held lanes wait in the outbox
        assert hang.connections == 2
    finally:
        await service.stop()
        await hang.stop()
