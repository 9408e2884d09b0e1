"""Notification delivery throughput: outbox -> local HTTP receiver, and long-poll round trips.

Runs the bridge's pieces in-process on loopback only, over a temporary SQLite
file (or ``--database-url``):

1. outbox -> receiver: a backlog of ``--count`` notifications is drained by
   the worker to a local aiohttp receiver, once for a single subscription
   (strict order, one at a time) and once spread over ``--subscriptions``
   subscriptions (lanes in parallel); then ``Notifier.publish`` end to end
   (one durable transaction per notification); then ``--producers``
   concurrent producers, with ``publish`` and with ``enqueue`` + ``wake`` in
   transactions of their own (as the chat side does), over ``--subscriptions``;
2. long poll: through the real REST app, ``--polls`` round trips of "publish
   one notification to a channel's callbackURL, long poll it out";
3. channel drain: ``--count`` notifications queued in a channel, drained by
   long polls of up to ``maxNotifications`` items.

Every phase is bounded by ``--timeout`` seconds. Usage::

    .venv/bin/python bench/notify_bench.py [--count 2000] [--subscriptions 50] [--polls 500]
        [--producers 8] [--sink-process] [--shared-lock]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import Settings  # noqa: E402
from bridge.ids import SubscriptionId, UserUri  # noqa: E402
from rest.app import make_app  # noqa: E402
from rest.delivery import DeliveryService  # noqa: E402
from rest.handlers.channels import NOTIFIER  # noqa: E402
from state import outbox  # noqa: E402
from state.db import Database  # noqa: E402

USER = UserUri("tel:+15550000001")
USER_PATH = "tel%3A%2B15550000001"


_SINK_PROCESS = """
import asyncio, sys
from aiohttp import web
count = 0
async def post(request):
    global count
    await request.read()
    count += 1
    return web.Response(status=204)
async def get(request):
    return web.Response(text=str(count))
async def main():
    app = web.Application()
    app.router.add_post("/{tail:.*}", post)
    app.router.add_get("/count", get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
asyncio.run(main())
"""


class Sink:
    """A local receiver that counts notifications and signals when ``expected`` arrived.

    In-process by default (its CPU is the bridge's too); with ``remote`` it is a
    subprocess on 127.0.0.1, polled for its count, so only the bridge's side
    of the work is measured in this process.
    """

    remote = False

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.done = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        if self.count >= self.expected:
            self.done.set()
        return web.Response(status=204)

    async def start(self) -> None:
        if self.remote:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _SINK_PROCESS,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert self._proc.stdout is not None
            self.port = int(await asyncio.wait_for(self._proc.stdout.readline(), 30))
            self._watch = asyncio.create_task(self._follow())
            return
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def _follow(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{self.port}/count") as resp:
                    self.count = int(await resp.text())
                if self.expected and self.count >= self.expected:
                    self.done.set()
                    return
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self.runner is not None:
            await self.runner.cleanup()


async def bench_callbacks(
    settings: Settings, db: Database, count: int, subscriptions: int, timeout: float
) -> float:
    """Outbox -> receiver notifications/s for a backlog of ``count``; returns the rate.

    The backlog is written first (one transaction, like a burst of chat events
    committed while the worker was busy), then the worker starts and drains it.
    """
    sink = Sink()
    await sink.start()
    sink.expected = count
    async with db.sessions.begin() as session:
        for i in range(count):
            sub = i % subscriptions
            await outbox.enqueue(
                session,
                user=USER,
                subscription_id=SubscriptionId(f"bench-{subscriptions}-{sub}"),
                notify_url=f"http://127.0.0.1:{sink.port}/s{sub}",
                root="chatMessageNotification",
                body={"callbackData": "bench", "seq": i, "chatMessage": {"text": "x" * 64}},
            )
    service = DeliveryService(settings, db, concurrency=64)
    try:
        started = time.perf_counter()
        await service.start()
        await asyncio.wait_for(sink.done.wait(), timeout)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await sink.stop()
    rate = count / elapsed
    print(
        f"  outbox -> receiver, {subscriptions:>3} subscription(s): {count} notifications "
        f"in {elapsed:.2f} s = {rate:,.0f} notifications/s"
    )
    return rate


async def bench_publish(settings: Settings, db: Database, count: int, timeout: float) -> float:
    """``Notifier.publish`` (one durable transaction each) -> receiver, end to end."""
    sink = Sink()
    await sink.start()
    sink.expected = count
    service = DeliveryService(settings, db, concurrency=64)
    await service.start()
    try:
        started = time.perf_counter()
        for i in range(count):
            await service.publish(
                user=USER,
                subscription_id=SubscriptionId(f"bench-publish-{i % 10}"),
                notify_url=f"http://127.0.0.1:{sink.port}/p",
                root="chatMessageNotification",
                body={"callbackData": "bench", "seq": i},
            )
        published = time.perf_counter() - started
        await asyncio.wait_for(sink.done.wait(), timeout)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await sink.stop()
    rate = count / elapsed
    print(
        f"  publish -> receiver (one transaction each): {count} in {elapsed:.2f} s "
        f"= {rate:,.0f} notifications/s (publish calls alone {count / published:,.0f}/s)"
    )
    return rate


async def bench_producers(
    settings: Settings,
    db: Database,
    count: int,
    subscriptions: int,
    producers: int,
    timeout: float,
    *,
    own_transactions: bool,
    shared_lock: bool = False,
) -> float:
    """Concurrent producers -> receiver, end to end; returns notifications/s.

    With ``own_transactions`` each producer commits ``outbox.enqueue`` in a
    transaction of its own and then calls ``Notifier.wake`` (like the chat
    side's units of work, serialized on a lock of their own as
    ``SQLChatStore`` does on SQLite, or with ``shared_lock`` on the writer lock
    the delivery worker takes, ``state.outbox.writer_lock``); otherwise it
    calls ``Notifier.publish``.
    """
    sink = Sink()
    await sink.start()
    sink.expected = count
    service = DeliveryService(settings, db, concurrency=64)
    await service.start()
    lock = (outbox.writer_lock(db) if shared_lock else None) or asyncio.Lock()
    per_producer = count // producers

    async def produce(first: int) -> None:
        for i in range(first, first + per_producer):
            sub = SubscriptionId(f"bench-producers-{own_transactions}-{i % subscriptions}")
            url = f"http://127.0.0.1:{sink.port}/q{i % subscriptions}"
            body = {"callbackData": "bench", "seq": i}
            if not own_transactions:
                await service.publish(
                    user=USER, subscription_id=sub, notify_url=url, root="m", body=body
                )
                continue
            async with lock, db.sessions.begin() as session:
                n = await outbox.enqueue(
                    session, user=USER, subscription_id=sub, notify_url=url, root="m", body=body
                )
            service.wake(n)

    sink.expected = per_producer * producers
    try:
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(produce(p * per_producer) for p in range(producers))), timeout
        )
        await asyncio.wait_for(sink.done.wait(), timeout)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await sink.stop()
    rate = sink.expected / elapsed
    how = "publish"
    if own_transactions:
        how = "enqueue + wake (own transactions, {} lock)".format(
            "shared" if shared_lock else "own"
        )
    print(
        f"  {producers} concurrent producers, {how} -> receiver, {subscriptions} subscriptions: "
        f"{sink.expected} in {elapsed:.2f} s = {rate:,.0f} notifications/s"
    )
    return rate


async def bench_long_poll(
    settings: Settings, db: Database, polls: int, count: int, timeout: float
) -> tuple[float, float]:
    """Long-poll round trips/s and channel drain notifications/s through the REST app."""
    app = make_app(settings, db)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.http_port)
    await site.start()
    port = int(runner.addresses[0][1])
    base = f"http://127.0.0.1:{port}"
    notifier = app[NOTIFIER]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/notificationchannel/v1/{USER_PATH}/channels",
                json={"notificationChannel": {"channelType": "LongPolling"}},
            ) as resp:
                assert resp.status == 201, await resp.text()
                channel = (await resp.json())["notificationChannel"]
            callback = channel["callbackURL"]
            poll_path = channel["channelData"]["channelURL"].split("/", 3)[3]
            poll_url = f"{base}/{poll_path}"

            async def publish(seq: int) -> None:
                await notifier.publish(
                    user=USER,
                    subscription_id=SubscriptionId("bench-channel"),
                    notify_url=callback,
                    root="chatMessageNotification",
                    body={"callbackData": "bench", "seq": seq},
                )

            async def round_trips() -> float:
                started = time.perf_counter()
                for i in range(polls):
                    poll = asyncio.ensure_future(http.post(poll_url))
                    await publish(i)
                    async with await poll as resp:
                        doc = await resp.json()
                    assert len(doc["notificationList"]) >= 1, doc
                return time.perf_counter() - started

            elapsed = await asyncio.wait_for(round_trips(), timeout)
            rtt_rate = polls / elapsed
            print(
                f"  long poll: {polls} round trips (publish + poll answered) in {elapsed:.2f} s "
                f"= {rtt_rate:,.0f} round trips/s ({1000 * elapsed / polls:.2f} ms each)"
            )

            async def drain() -> tuple[float, int]:
                for i in range(count):
                    await publish(i)
                started = time.perf_counter()
                got = rounds = 0
                while got < count:
                    async with http.post(poll_url) as resp:
                        got += len((await resp.json())["notificationList"])
                    rounds += 1
                return time.perf_counter() - started, rounds

            elapsed, rounds = await asyncio.wait_for(drain(), timeout)
            drain_rate = count / elapsed
            print(
                f"  channel drain: {count} queued notifications in {rounds} polls "
                f"(maxNotifications {settings.channel_max_notifications}) in {elapsed:.2f} s "
                f"= {drain_rate:,.0f} notifications/s"
            )
            return rtt_rate, drain_rate
    finally:
        await runner.cleanup()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--subscriptions", type=int, default=50)
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--producers", type=int, default=8, help="concurrent producers")
    parser.add_argument(
        "--shared-lock",
        action="store_true",
        help="enqueue + wake producers take state.outbox.writer_lock (else a lock of their own)",
    )
    parser.add_argument(
        "--sink-process",
        action="store_true",
        help="run the callback receiver in a subprocess (measures the bridge side alone)",
    )
    parser.add_argument(
        "--destination-concurrency",
        type=int,
        help="notification_destination_concurrency (default: half of the concurrency; every "
        "subscription of this bench POSTs to one receiver, one destination)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each phase (s)")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    args = parser.parse_args(argv)
    Sink.remote = args.sink_process
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        settings = Settings(
            database_url=url,
            http_port=0,
            server_root="http://127.0.0.1:0",
            channel_poll_timeout=5.0,
            notification_backoff_initial=0.05,
            notify_allow_loopback=True,  # the receiver is on 127.0.0.1 (docs/notify-policy.md)
            notification_destination_concurrency=args.destination_concurrency,
        )
        db = Database(url)
        await db.migrate()
        where = "in a subprocess" if args.sink_process else "in this process"
        print(f"notification bench on {db.url.get_backend_name()}, loopback only, receiver {where}")
        try:
            await bench_callbacks(settings, db, args.count, 1, args.timeout)
            await bench_callbacks(settings, db, args.count, args.subscriptions, args.timeout)
            await bench_publish(settings, db, args.count, args.timeout)
            for own in (False, True):
                await bench_producers(
                    settings,
                    db,
                    args.count,
                    args.subscriptions,
                    args.producers,
                    args.timeout,
                    own_transactions=own,
                    shared_lock=args.shared_lock,
                )
            await bench_long_poll(settings, db, args.polls, args.count, args.timeout)
        except TimeoutError:
            print(f"bench phase exceeded {args.timeout} s", file=sys.stderr)
            return 1
        finally:
            await db.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
