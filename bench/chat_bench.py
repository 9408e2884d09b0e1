"""End-to-end 1-1 chat: messages per second, latency at half rate, concurrent sessions held.

Everything on loopback: a Kamailio test bed (tests/testbed) as the IMS core, the
bridge in-process (REST app + chat service + SIP/MSRP signalling, SQLite file),
its SIP listener as Kamailio's application server, Kamailio as its outbound
proxy, and a local aiohttp receiver as the apps' notifyURL. A message's path is
REST POST on user A → chat service → MSRP (via the SIP-negotiated session that
went through Kamailio) → the same bridge as user B → chatMessageNotification
POSTed to B's receiver; its time is POST start to the notification's arrival.

Phases (each bounded by ``--timeout`` seconds):

1. throughput: ``--pairs`` confirmed sessions (A_i → B_i, accepted over REST),
   ``--count`` messages POSTed by ``--concurrency`` workers; msg/s = count /
   (first POST → last notification);
2. latency: messages paced at half the measured rate (or ``--rate``) for
   ``--seconds``; p50/p99 of POST → notification;
3. sessions: as many pairs as fit in ``--session-time`` seconds (up to
   ``--sessions``) open implicit (adhoc) sessions (B users auto-accept); the
   process RSS growth per open session is reported (each pair = 2 REST
   sessions, 2 SIP dialogs, 2 MSRP sessions in the bridge).

Usage::

    .venv/bin/python bench/chat_bench.py [--count 3000] [--pairs 8] [--sessions 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config import Settings  # noqa: E402
from bridge.signalling.wiring import SignallingSide, start_signalling  # noqa: E402
from rest.app import make_app  # noqa: E402
from rest.chat_service import install_chat  # noqa: E402
from state.db import Database  # noqa: E402
from tests.testbed_fixture import Testbed, free_port_block, start_testbed, stop_testbed  # noqa: E402


def user(i: int) -> str:
    """The i-th user of the AS range (+1555555xxxx)."""
    return f"tel:+1555555{i:04d}"


def q(text: str) -> str:
    return quote(text, safe="")


def rss_kib() -> int:
    """Resident set size of this process (KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Apps:
    """The apps' notification receiver: arrival time of every notification by kind."""

    def __init__(self) -> None:
        self.messages: dict[str, float] = {}
        self.events: dict[str, list[str]] = {}
        self.invites: dict[str, dict[str, Any]] = {}
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.last = 0.0

    async def quiet(self, idle: float, timeout: float) -> None:
        """Wait until no notification arrived for ``idle`` seconds (reports drained)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and time.perf_counter() - self.last < idle:
            await asyncio.sleep(0.1)

    async def handle(self, request: web.Request) -> web.Response:
        doc = await request.json()
        now = time.perf_counter()
        self.last = now
        who = request.match_info["user"]
        if "chatMessageNotification" in doc:
            note = doc["chatMessageNotification"]
            if "messageId" in note and "chatMessage" in note:
                self.messages[note["messageId"]] = now
        elif "chatEventNotification" in doc:
            self.events.setdefault(who, []).append(doc["chatEventNotification"]["eventType"])
        elif "chatSessionInvitationNotification" in doc:
            self.invites[who] = doc["chatSessionInvitationNotification"]
        for count, fut in self.waiters:
            if len(self.messages) >= count and not fut.done():
                fut.set_result(None)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{user}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def until(self, count: int, timeout: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((count, fut))
        if len(self.messages) >= count:
            return
        await asyncio.wait_for(fut, timeout)

    def url(self, who: str) -> str:
        return f"http://127.0.0.1:{self.port}/{q(who)}"


class Bench:
    """The bridge under test and an HTTP client toward it."""

    def __init__(
        self,
        side: SignallingSide,
        runner: web.AppRunner,
        port: int,
        http: aiohttp.ClientSession,
        apps: Apps,
    ) -> None:
        self.side = side
        self.runner = runner
        self.root = f"http://127.0.0.1:{port}"
        self.http = http
        self.apps = apps

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, self.root + path, json=body) as resp:
            text = await resp.text()
            if resp.status != status:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return await resp.json() if text else None

    async def subscribe(self, who: str, **flags: bool) -> None:
        body = {
            "chatNotificationSubscription": {
                "callbackReference": {"notifyURL": self.apps.url(who), "callbackData": who},
                **flags,
            }
        }
        await self.call("POST", f"/chat/v1/{q(who)}/subscriptions", body, 201)

    def local(self, url: str) -> str:
        return url.removeprefix(self.root)

    async def confirmed(self, a: str, b: str, timeout: float) -> str:
        """Open an accepted confirmed session A → B; return A's session path."""
        created = await self.call(
            "POST", f"/chat/v1/{q(a)}/oneToOne/{q(b)}", {"chatSessionInformation": {}}, 201
        )
        path = self.local(created["chatSessionInformation"]["resourceURL"])
        deadline = time.perf_counter() + timeout
        while q(b) not in self.apps.invites and b not in self.apps.invites:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no invitation for {b}")
            await asyncio.sleep(0.01)
        invite = self.apps.invites.get(b) or self.apps.invites[q(b)]
        links = {link["rel"]: self.local(link["href"]) for link in invite["link"]}
        await self.call("PUT", links["ParticipantSessionStatus"], status=204)
        while "Accepted" not in self.apps.events.get(a, []):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{a}: no Accepted")
            await asyncio.sleep(0.01)
        return path

    async def send(self, path: str, text: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        sent = await self.call("POST", path + "/messages", {"chatMessage": {"text": text}}, 201)
        return sent["resourceReference"]["resourceURL"].split("/")[-2], t0


async def open_bench(tb: Testbed, workdir: Path, apps: Apps) -> Bench:
    port = free_port_block(size=2, start=31000)
    db_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = Settings(
        database_url=db_url,
        http_port=port,
        server_root=f"http://127.0.0.1:{port}",
        sip_port=tb.as_port,
        sip_outbound_proxy=f"sip:127.0.0.1:{tb.sip_port};transport=tcp",
        chat_invite_timeout=20.0,
        notification_backoff_initial=0.05,
        notification_backoff_max=0.5,
        log_level="WARNING",
    )
    database = Database(db_url)
    await database.migrate()
    side = await start_signalling(settings)
    app = make_app(settings, database)
    install_chat(app, side.signalling)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    bench = Bench(side, runner, port, http, apps)
    bench.database = database  # type: ignore[attr-defined]
    return bench


async def throughput(
    bench: Bench, paths: list[str], count: int, workers: int, timeout: float
) -> tuple[float, int]:
    before = len(bench.apps.messages)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await bench.send(paths[i % len(paths)], f"t{i}")

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout)
    try:
        await bench.apps.until(before + count, timeout)
    except TimeoutError:
        pass
    got = len(bench.apps.messages) - before
    return got / (time.perf_counter() - t0), got


async def latency(
    bench: Bench, paths: list[str], rate: float, seconds: float, timeout: float
) -> tuple[list[float], int]:
    sent: list[tuple[str, float]] = []
    tasks: list[asyncio.Task[tuple[str, float]]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(bench.send(paths[i % len(paths)], f"l{i}")))
    sent = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(mid in bench.apps.messages for mid, _ in sent):
            break
        await asyncio.sleep(0.05)
    lat = [(bench.apps.messages[mid] - t0) * 1000 for mid, t0 in sent if mid in bench.apps.messages]
    return lat, n


async def sessions(
    bench: Bench, first: int, limit: int, seconds: float
) -> tuple[int, int, float, float]:
    """Open implicit sessions A_i → B_i until ``limit`` pairs or ``seconds``; RSS growth (KiB)."""
    pairs = [(user(first + 2 * i), user(first + 2 * i + 1)) for i in range(limit)]
    sem = asyncio.Semaphore(64)

    async def subscribe(a: str, b: str) -> None:
        async with sem:
            await bench.subscribe(a, confirmedChatSupported=False, adhocChatSupported=True)
            await bench.subscribe(b, confirmedChatSupported=False, adhocChatSupported=True)

    await asyncio.gather(*(subscribe(a, b) for a, b in pairs))
    base_rss = rss_kib()
    base_msgs = len(bench.apps.messages)
    deadline = time.perf_counter() + seconds
    opened = 0

    async def open_one(a: str, b: str) -> None:
        nonlocal opened
        async with sem:
            if time.perf_counter() > deadline:
                return
            path = f"/chat/v1/{q(a)}/oneToOne/{q(b)}/adhoc/messages"
            await bench.call("POST", path, {"chatMessage": {"text": "open"}}, 201)
            opened += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(a, b) for a, b in pairs))
    # wait for the first messages to arrive: the sessions are then up on both ends
    end = time.perf_counter() + 60
    while len(bench.apps.messages) - base_msgs < opened and time.perf_counter() < end:
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    legs = bench.side.signalling.leg_count
    per_leg = (rss_kib() - base_rss) / legs if legs else 0.0
    return opened, legs, per_leg, elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0.0, help="latency phase rate (0: half)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, default=5000, help="pairs (2 sessions each)")
    ap.add_argument("--session-time", type=float, default=90.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        workdir = Path(tmp)
        tb = start_testbed(workdir / "kamailio", as_transport="tcp")
        apps = Apps()
        await apps.start()
        bench = await open_bench(tb, workdir, apps)
        rows: list[tuple[str, str]] = []
        try:
            paths = []
            for i in range(args.pairs):
                a, b = user(2 * i), user(2 * i + 1)
                await bench.subscribe(a)
                await bench.subscribe(b)
                paths.append(await bench.confirmed(a, b, 20.0))
            await throughput(bench, paths, 200, args.concurrency, args.timeout)  # warm-up
            await apps.quiet(1.0, args.timeout)
            rate, got = await throughput(bench, paths, args.count, args.concurrency, args.timeout)
            rows.append(
                (
                    f"throughput ({got}/{args.count} msgs, {args.pairs} sessions)",
                    f"{rate:,.0f} msg/s",
                )
            )
            await apps.quiet(1.0, args.timeout)  # the reports of phase 1 are through
            target = args.rate or max(rate / 2, 1.0)
            lat, n = await latency(bench, paths, target, args.seconds, args.timeout)
            if lat:
                lat.sort()
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                rows.append(
                    (
                        f"latency at {target:,.0f} msg/s ({len(lat)}/{n} msgs) p50",
                        f"{statistics.median(lat):.1f} ms",
                    )
                )
                rows.append((f"latency at {target:,.0f} msg/s p99", f"{p99:.1f} ms"))
            await apps.quiet(1.0, args.timeout)
            pairs = min(args.sessions, (10000 - 100) // 2)  # users stay in the AS range
            opened, legs, per, elapsed = await sessions(bench, 100, pairs, args.session_time)
            rows.append(
                (f"implicit sessions opened ({opened} pairs in {elapsed:.0f} s)", f"{legs:,} legs")
            )
            rows.append(("memory per open session (RSS growth / legs)", f"{per:.1f} KiB"))
            projected = f"{per * 10000 / 1024:.0f} MiB"
            rows.append(("projected RSS growth for 10,000 sessions", projected))
            rows.append(("process RSS", f"{rss_kib() / 1024:.0f} MiB"))
        finally:
            await bench.http.close()
            await bench.runner.cleanup()
            await bench.side.close()
            await bench.database.close()  # type: ignore[attr-defined]
            if apps.runner is not None:
                await apps.runner.cleanup()
            stop_testbed(tb)
        width = max(len(name) for name, _ in rows)
        print(f"{'chat bench (end to end through Kamailio, loopback)':<{width}}  value")
        print("-" * (width + 16))
        for name, value in rows:
            print(f"{name:<{width}}  {value:>14}")


if __name__ == "__main__":
    asyncio.run(main())
