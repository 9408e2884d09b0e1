"""End-to-end 1-1 chat: messages per second, latency at half rate, concurrent sessions held.

Everything on loopback: a Kamailio test bed (tests/testbed) as the IMS core; the
bridge as a ``chat-bridge serve`` subprocess (REST, chat service, SIP/MSRP, SQLite
file), its SIP listener as Kamailio's application server and Kamailio as its
outbound proxy; in this process, the apps' REST client and a local aiohttp
receiver as their notifyURL. A message's path is
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
   bridge process's RSS growth per open session is reported (each pair = 2 REST
   sessions, 2 SIP dialogs, 2 MSRP sessions in the bridge);
4. adhoc throughput: ``--count`` messages over the first ``--pairs`` implicit
   sessions of phase 3 (the adhoc message path: queue, dispatch on the live
   session), msg/s and bridge CPU per message as in phase 1.

Usage::

    .venv/bin/python bench/chat_bench.py [--count 3000] [--pairs 8] [--sessions 5000] [--pin]

``--pin`` puts the bridge (all its threads) on the last CPU and this process and
Kamailio on the others, so the two do not share a core by chance; on the
2-core dev VM that narrows the run-to-run spread of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.testbed_fixture import Testbed, free_port_block, start_testbed, stop_testbed  # noqa: E402

BRIDGE = Path(sys.executable).with_name("chat-bridge")


ADHOC_ONLY = {"confirmedChatSupported": False, "adhocChatSupported": True}


def user(i: int) -> str:
    """The i-th user of the AS range (+1555555xxxx)."""
    return f"tel:+1555555{i:04d}"


def q(text: str) -> str:
    return quote(text, safe="")


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of process ``pid`` (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def own_cpu() -> float:
    """CPU seconds (user + system) of this process: the apps' REST client and receiver."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def kamailio_cpu(tb: Testbed) -> float:
    """CPU seconds of the test bed's Kamailio, its main process and its workers."""
    pid = int((tb.run_dir / "kamailio.pid").read_text())
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid or stat.parent.name == str(pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


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
    """The bridge under test (a ``chat-bridge serve`` subprocess) and a client toward it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, http: aiohttp.ClientSession, apps: Apps
    ) -> None:
        self.proc = proc
        self.root = f"http://127.0.0.1:{port}"
        self.http = http
        self.apps = apps
        self.retries = 0

    def cpu(self) -> float:
        """CPU seconds (user + system) the bridge process has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        """The bridge's resident set size (KiB)."""
        return rss_kib(self.proc.pid)

    async def close(self) -> None:
        await self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

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


async def open_bench(
    tb: Testbed,
    workdir: Path,
    apps: Apps,
    extra: dict[str, str] | None = None,
    cpu: int | None = None,
) -> Bench:
    """Start ``chat-bridge serve`` with Kamailio as its IMS core and wait for /health."""
    settings = {
        "CHAT_BRIDGE_SIP_PORT": str(tb.as_port),
        "CHAT_BRIDGE_SIP_OUTBOUND_PROXY": f"sip:127.0.0.1:{tb.sip_port};transport=tcp",
    }
    return await start_bridge(workdir, apps, {**settings, **(extra or {})}, cpu)


async def start_bridge(
    workdir: Path, apps: Apps, settings: dict[str, str], cpu: int | None = None
) -> Bench:
    """Start ``chat-bridge serve`` on ``workdir/bench.db`` with ``settings``; wait for /health.

    Without ``CHAT_BRIDGE_SIP_PORT`` / ``CHAT_BRIDGE_SIP_OUTBOUND_PROXY`` in ``settings`` the
    bridge runs on its embedded default (SIP loops back to its own listener, README.md).
    """
    port = free_port_block(size=2, start=31000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_BRIDGE_")}
    env.update(
        CHAT_BRIDGE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        CHAT_BRIDGE_HTTP_PORT=str(port),
        CHAT_BRIDGE_SERVER_ROOT=f"http://127.0.0.1:{port}",
        CHAT_BRIDGE_SIP_PORT=str(port + 1),
        CHAT_BRIDGE_CHAT_INVITE_TIMEOUT="20",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_INITIAL="0.05",
        CHAT_BRIDGE_NOTIFICATION_BACKOFF_MAX="0.5",
        CHAT_BRIDGE_LOG_LEVEL="WARNING",
        CHAT_BRIDGE_NOTIFY_ALLOW_LOOPBACK="true",  # receivers on 127.0.0.1
    )
    env.update(settings)
    with (workdir / "bridge.log").open("ab") as out:
        proc = subprocess.Popen([str(BRIDGE), "serve"], env=env, stdout=out, stderr=out)
    if cpu is not None:  # before the bridge starts its threads: they inherit it
        os.sched_setaffinity(proc.pid, {cpu})
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    bench = Bench(proc, port, http, apps)
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError((workdir / "bridge.log").read_text()[-3000:])
        try:
            async with http.get(bench.root + "/health") as resp:
                if resp.status == 200:
                    return bench
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    await bench.close()
    raise RuntimeError("the bridge did not answer /health in 20 s")


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

    subscribing = asyncio.Semaphore(8)

    async def subscribe(who: str) -> None:
        # a busy SQLite store answers 500 ("database is locked") under concurrent
        # subscription writes: counted and retried, so the phase measures sessions
        for attempt in range(5):
            try:
                async with subscribing:
                    await bench.subscribe(
                        who, confirmedChatSupported=False, adhocChatSupported=True
                    )
                return
            except RuntimeError:
                bench.retries += 1
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"cannot subscribe {who}")

    await asyncio.gather(*(subscribe(who) for pair in pairs for who in pair))
    base_rss = bench.rss()
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
    legs = 2 * opened  # each implicit session has two ends in the bridge
    per_leg = (bench.rss() - base_rss) / legs if legs else 0.0
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
    ap.add_argument("--keep-log", type=Path, help="copy the bridge's log there at the end")
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the bridge on the last CPU, this process and Kamailio on the others",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CHAT_BRIDGE_X=V",
        help="a setting of the bridge under test (repeatable)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    print(f"{'chat bench (end to end through Kamailio, loopback)':<64}  value")
    print("-" * 80)

    def row(name: str, value: str) -> None:
        print(f"{name:<64}  {value:>14}", flush=True)

    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        workdir = Path(tmp)
        bridge_cpu = None
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise SystemExit("--pin needs two CPUs or more")
            bridge_cpu = cpus[-1]
            os.sched_setaffinity(0, set(cpus[:-1]))  # Kamailio, started next, inherits it
        tb = start_testbed(workdir / "kamailio", as_transport="tcp")
        apps = Apps()
        await apps.start()
        extra = dict(item.split("=", 1) for item in args.set)
        bench = await open_bench(tb, workdir, apps, extra, bridge_cpu)
        try:
            paths = []
            for i in range(args.pairs):
                a, b = user(2 * i), user(2 * i + 1)
                await bench.subscribe(a)
                await bench.subscribe(b)
                paths.append(await bench.confirmed(a, b, 20.0))
            await throughput(bench, paths, 200, args.concurrency, args.timeout)  # warm-up
            await apps.quiet(1.0, args.timeout)
            cpu0, own0, kam0 = bench.cpu(), own_cpu(), kamailio_cpu(tb)
            rate, got = await throughput(bench, paths, args.count, args.concurrency, args.timeout)
            cpu_ms = (bench.cpu() - cpu0) * 1000 / max(got, 1)
            own_ms = (own_cpu() - own0) * 1000 / max(got, 1)
            kam_ms = (kamailio_cpu(tb) - kam0) * 1000 / max(got, 1)
            row(
                f"throughput ({got}/{args.count} msgs, {args.pairs} sessions)", f"{rate:,.0f} msg/s"
            )
            row("bridge CPU per message (both ends, reports included)", f"{cpu_ms:.2f} ms")
            row("apps' CPU per message (this process: REST client, notifyURL)", f"{own_ms:.2f} ms")
            row("Kamailio CPU per message", f"{kam_ms:.2f} ms")
            await apps.quiet(1.0, args.timeout)  # the reports of phase 1 are through
            target = args.rate or max(rate / 2, 1.0)
            cpu0 = bench.cpu()
            lat, n = await latency(bench, paths, target, args.seconds, args.timeout)
            cpu_ms = (bench.cpu() - cpu0) * 1000 / max(n, 1)
            if lat:
                lat.sort()
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                name = f"latency at {target:,.0f} msg/s ({len(lat)}/{n} msgs)"
                row(name + " p50", f"{statistics.median(lat):.1f} ms")
                row(name + " p99", f"{p99:.1f} ms")
                row("bridge CPU per message at that rate", f"{cpu_ms:.2f} ms")
            await apps.quiet(1.0, args.timeout)
            pairs = min(args.sessions, (10000 - 100) // 2)  # users stay in the AS range
            opened, legs, per, elapsed = await sessions(bench, 100, pairs, args.session_time)
            row(f"implicit sessions open ({opened} pairs in {elapsed:.0f} s)", f"{legs:,}")
            row("memory per open session (bridge RSS growth / sessions)", f"{per:.1f} KiB")
            row("projected RSS growth for 10,000 sessions", f"{per * 10000 / 1024:.0f} MiB")
            row("bridge process RSS", f"{bench.rss() / 1024:.0f} MiB")
            if opened:  # the implicit sessions just opened carry a throughput run too
                adhoc = [
                    f"/chat/v1/{q(user(100 + 2 * i))}/oneToOne/{q(user(101 + 2 * i))}/adhoc"
                    for i in range(min(args.pairs, opened))
                ]
                await apps.quiet(1.0, args.timeout)
                cpu0 = bench.cpu()
                rate, got = await throughput(
                    bench, adhoc, args.count, args.concurrency, args.timeout
                )
                cpu_ms = (bench.cpu() - cpu0) * 1000 / max(got, 1)
                row(
                    f"adhoc throughput ({got}/{args.count} msgs, {len(adhoc)} pairs)",
                    f"{rate:,.0f} msg/s",
                )
                row(
                    "bridge CPU per adhoc message (both ends, reports included)", f"{cpu_ms:.2f} ms"
                )
            row("subscription POSTs retried after a 500 (store busy)", f"{bench.retries}")
            wal = workdir / "bench.db-wal"
            size = wal.stat().st_size if wal.exists() else 0
            row("SQLite WAL file at the end (checkpoints start it over)", f"{size / 2**20:.1f} MiB")
        except Exception as exc:
            log = (workdir / "bridge.log").read_text(errors="replace")[-3000:]
            print(f"bench stopped: {exc}\n--- bridge log tail ---\n{log}", file=sys.stderr)
            raise
        finally:
            await bench.close()
            if args.keep_log is not None:
                args.keep_log.write_bytes((workdir / "bridge.log").read_bytes())
            if apps.runner is not None:
                await apps.runner.cleanup()
            stop_testbed(tb)


if __name__ == "__main__":
    asyncio.run(main())
