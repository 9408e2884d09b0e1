"""End-to-end group chat: fan-out through the bridge's own focus, beside the 1-1 rate.

Everything on loopback, on the embedded default (README.md): one ``chat-bridge serve``
subprocess (REST, chat service, SIP/MSRP, its own conference focus, SQLite file) with no
outbound proxy, so a group INVITE to the conference factory loops back over real SIP to the
bridge's focus, which dials every member out over SIP again (docs/group-chat.md). In this
process: the apps' REST client and a local aiohttp receiver as every user's notifyURL; the
receiver accepts each ``groupChatSessionInvitationNotification`` at once (PUT ``Connected`` on
its ``ParticipantInformationStatus`` link, OMA REST Chat v1.0 R13).

Phases (each bounded by ``--timeout`` seconds):

1. 1-1: ``--pairs`` confirmed sessions, ``--count`` messages (bench/chat_bench.py's
   throughput phase on the same bridge): the end-to-end 1-1 msg/s of this run;
2. for each size of ``--sizes`` (10 and 100 members): one group (creator + size-1 invitees,
   all connected); ``--deliveries`` member deliveries' worth of messages POSTed by the creator
   with ``--concurrency`` workers: group messages/s (every member got it) and member
   deliveries/s (chatMessageNotifications that reached the members' notifyURLs);
3. latency at half the measured group rate (or ``--rate``) for ``--seconds``: p50/p99 from
   the POST to the LAST member's notification;
4. memory: up to ``--groups`` groups of ``--group-size`` opened within ``--group-time``
   seconds over a pool of ``--pool`` users (each user in several groups, one group session
   each): the bridge's RSS growth per group and per member.

Targets (printed beside the figures, never asserted): member deliveries/s at least the 1-1
msg/s of the same run; 1,000 open groups of 10 under 512 MiB of bridge RSS.

Usage::

    .venv/bin/python bench/group_bench.py [--sizes 10,100] [--groups 1000] [--pin]
    .venv/bin/python bench/group_bench.py --skip-group      # the 1-1 phase only

``--pin`` puts the bridge (all its threads) on the last CPU and this process on the others,
as bench/chat_bench.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.chat_bench import Apps, Bench, q, start_bridge, throughput, user  # noqa: E402

ACCEPT = {"participantSessionStatus": {"status": "Connected"}}
MEMORY_TARGET_MIB = 512
"""1,000 open groups of 10 under this much bridge RSS."""


class GroupUnavailable(RuntimeError):
    """The bridge answered a group request with 501: group chat is not there yet."""


class GroupApps(Apps):
    """Apps plus the group members: auto-accept, per-message delivery times, member states."""

    def __init__(self) -> None:
        super().__init__()
        self.members: set[str] = set()
        """Users whose notifications this class handles (the 1-1 users go to Apps)."""
        self.deliveries: dict[str, list[float]] = {}
        """messageId → arrival time at each member."""
        self.total = 0
        self.states: dict[str, dict[str, str]] = {}
        """Creator's sessionId → {address: status}, from chatParticipantStatusNotification."""
        self.group_events: dict[str, list[str]] = {}
        self.accepts = 0
        self.accept_errors: list[str] = []
        self.http: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        who = request.match_info["user"]
        if who not in self.members:
            return await super().handle(request)
        doc = await request.json()
        now = time.perf_counter()
        self.last = now
        if "chatMessageNotification" in doc:
            note = doc["chatMessageNotification"]
            if "chatMessage" in note and "messageId" in note:
                self.deliveries.setdefault(note["messageId"], []).append(now)
                self.total += 1
        elif "groupChatSessionInvitationNotification" in doc:
            note = doc["groupChatSessionInvitationNotification"]
            href = {link["rel"]: link["href"] for link in note["link"]}
            task = asyncio.create_task(self.accept(href["ParticipantInformationStatus"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif "chatParticipantStatusNotification" in doc:
            note = doc["chatParticipantStatusNotification"]
            known = self.states.setdefault(note["sessionId"], {})
            for p in note["participant"]:
                if "status" in p:
                    known[p["address"]] = p["status"]
        elif "chatEventNotification" in doc:
            note = doc["chatEventNotification"]
            self.group_events.setdefault(note["sessionId"], []).append(note["eventType"])
        return web.Response(status=204)

    async def accept(self, url: str) -> None:
        assert self.http is not None
        try:
            async with self.http.put(url, json=ACCEPT) as resp:
                if resp.status == 204:
                    self.accepts += 1
                else:
                    self.accept_errors.append(f"PUT {url}: {resp.status} {await resp.text()}")
        except aiohttp.ClientError as exc:
            self.accept_errors.append(f"PUT {url}: {exc!r}")

    def delivered(self, message_id: str, fan_out: int) -> bool:
        return len(self.deliveries.get(message_id, ())) >= fan_out


class GroupBench:
    """Group steps on top of chat_bench's :class:`Bench` (the same REST client and bridge)."""

    def __init__(self, bench: Bench, apps: GroupApps) -> None:
        self.bench = bench
        self.apps = apps

    async def subscribe_all(self, users: Sequence[str]) -> None:
        """Subscribe ``users`` (8 at a time, a 500 from a busy store retried)."""
        self.apps.members.update(users)
        gate = asyncio.Semaphore(8)

        async def one(who: str) -> None:
            for attempt in range(5):
                try:
                    async with gate:
                        await self.bench.subscribe(who)
                    return
                except RuntimeError:
                    self.bench.retries += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"cannot subscribe {who}")

        await asyncio.gather(*(one(who) for who in users))

    async def create(self, owner: str, others: Sequence[str], subject: str) -> tuple[str, str]:
        """R9 POST: the creator's group path and sessionId (GroupUnavailable on 501)."""
        body = {
            "groupChatSessionInformation": {
                "subject": subject,
                "participant": [{"address": o} for o in others],
            }
        }
        path = f"/chat/v1/{q(owner)}/group"
        async with self.bench.http.post(self.bench.root + path, json=body) as resp:
            text = await resp.text()
            if resp.status == 501:
                raise GroupUnavailable(f"POST {path}: 501 {text[:300]}")
            if resp.status != 201:
                raise RuntimeError(f"POST {path}: {resp.status} {text[:300]}")
            doc = await resp.json()
        url = doc["groupChatSessionInformation"]["resourceURL"]
        return self.bench.local(url), url.rsplit("/", 1)[1]

    def missing(self, session_id: str, others: Sequence[str]) -> list[str]:
        states = self.apps.states.get(session_id, {})
        return [o for o in others if states.get(o) != "Connected"]

    async def connected(self, groups: dict[str, Sequence[str]], timeout: float) -> int:
        """Wait until every member of ``groups`` (sessionId → invitees) is Connected."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.apps.accept_errors:
                raise RuntimeError(f"accept failed: {self.apps.accept_errors[:3]}")
            if not any(self.missing(sid, others) for sid, others in groups.items()):
                break
            await asyncio.sleep(0.05)
        return sum(1 for sid, others in groups.items() if not self.missing(sid, others))

    async def send(self, path: str, text: str) -> tuple[str, float]:
        return await self.bench.send(path, text)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


async def fan_out_throughput(
    gb: GroupBench, path: str, fan: int, count: int, workers: int, timeout: float
) -> tuple[float, float, int, int]:
    """``count`` messages to one group: (msgs/s, deliveries/s, complete msgs, deliveries)."""
    apps = gb.apps
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    sent: list[str] = []
    before = apps.total

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            mid, _ = await gb.send(path, f"g{i}")
            sent.append(mid)

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(apps.delivered(m, fan) for m in sent):
            break
        await asyncio.sleep(0.02)
    complete = sum(1 for m in sent if apps.delivered(m, fan))
    got = apps.total - before
    arrivals = [max(apps.deliveries[m]) for m in sent if m in apps.deliveries]
    elapsed = max((max(arrivals) if arrivals else time.perf_counter()) - t0, 1e-9)
    return complete / elapsed, got / elapsed, complete, got


async def fan_out_latency(
    gb: GroupBench, path: str, fan: int, rate: float, seconds: float, timeout: float
) -> tuple[list[float], int]:
    """Messages paced at ``rate``: ms from POST to the last member's notification."""
    interval = 1.0 / rate
    n = max(1, int(rate * seconds))
    tasks: list[asyncio.Task[tuple[str, float]]] = []
    start = time.perf_counter()
    for i in range(n):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(gb.send(path, f"l{i}")))
    sent = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(gb.apps.delivered(m, fan) for m, _ in sent):
            break
        await asyncio.sleep(0.05)
    return [
        (max(gb.apps.deliveries[m]) - t0) * 1000 for m, t0 in sent if gb.apps.delivered(m, fan)
    ], n


def row(name: str, value: str, target: str = "") -> None:
    print(f"{name:<62}  {value:>16}  {target}", flush=True)


async def one_to_one(bench: Bench, args: argparse.Namespace) -> float:
    paths = []
    for i in range(args.pairs):
        a, b = user(2 * i), user(2 * i + 1)
        await bench.subscribe(a)
        await bench.subscribe(b)
        paths.append(await bench.confirmed(a, b, 20.0))
    await throughput(bench, paths, 200, args.concurrency, args.timeout)  # warm-up
    await bench.apps.quiet(1.0, args.timeout)
    cpu0 = bench.cpu()
    rate, got = await throughput(bench, paths, args.count, args.concurrency, args.timeout)
    cpu_ms = (bench.cpu() - cpu0) * 1000 / max(got, 1)
    row(f"1-1 throughput ({got}/{args.count} msgs, {args.pairs} sessions)", f"{rate:,.0f} msg/s")
    row("bridge CPU per 1-1 message (both ends, reports included)", f"{cpu_ms:.2f} ms")
    await bench.apps.quiet(1.0, args.timeout)
    return rate


async def group_size(gb: GroupBench, size: int, first: int, args: argparse.Namespace) -> float:
    """Phases 2 and 3 for one group of ``size`` members; returns member deliveries/s."""
    owner, others = user(first), [user(first + i) for i in range(1, size)]
    fan = size - 1
    await asyncio.wait_for(gb.subscribe_all([owner, *others]), args.timeout)
    path, sid = await gb.create(owner, others, f"bench {size}")
    if await gb.connected({sid: others}, args.timeout) != 1:
        raise RuntimeError(f"group of {size}: not connected: {gb.missing(sid, others)[:5]}")
    await fan_out_throughput(gb, path, fan, 10, 8, args.timeout)  # warm-up
    await gb.apps.quiet(1.0, args.timeout)
    count = max(1, math.ceil(args.deliveries / fan))
    cpu0 = gb.bench.cpu()
    mps, dps, complete, got = await fan_out_throughput(
        gb, path, fan, count, args.concurrency, args.timeout
    )
    cpu_ms = (gb.bench.cpu() - cpu0) * 1000 / max(got, 1)
    row(f"group of {size}: messages to all members ({complete}/{count})", f"{mps:,.1f} msg/s")
    row(f"group of {size}: member deliveries ({got:,})", f"{dps:,.0f} /s", "target ≥ 1-1 msg/s")
    row(f"group of {size}: bridge CPU per member delivery", f"{cpu_ms:.2f} ms")
    await gb.apps.quiet(1.0, args.timeout)
    rate = args.rate or max(mps / 2, 0.5)
    lat, n = await fan_out_latency(gb, path, fan, rate, args.seconds, args.timeout)
    if lat:
        lat.sort()
        name = f"group of {size}: POST → last member at {rate:,.1f} msg/s ({len(lat)}/{n})"
        row(name + " p50", f"{statistics.median(lat):.1f} ms")
        row(name + " p99", f"{percentile(lat, 0.99):.1f} ms")
    else:
        row(f"group of {size}: latency at {rate:,.1f} msg/s", f"0/{n} complete")
    await gb.apps.quiet(1.0, args.timeout)
    return dps


async def memory(gb: GroupBench, first: int, args: argparse.Namespace) -> None:
    """Phase 4: RSS growth per open group and per member."""
    size, pool_size = args.group_size, max(args.pool, args.group_size)
    pool = [user(first + i) for i in range(pool_size)]
    await asyncio.wait_for(gb.subscribe_all(pool), args.timeout)
    await gb.apps.quiet(1.0, args.timeout)
    base = gb.bench.rss()
    deadline = time.perf_counter() + args.group_time
    groups: dict[str, Sequence[str]] = {}
    opened = 0

    async def open_one(g: int, wave: dict[str, Sequence[str]]) -> None:
        owner = pool[g % pool_size]
        others = [pool[(g + j) % pool_size] for j in range(1, size)]
        _, sid = await gb.create(owner, others, f"mem {g}")
        wave[sid] = others

    # Waves of --wave groups, each connected before the next: every join is told to every
    # member's app (n² participant notifications per group), and creating faster than the
    # apps are told only measures a queue of invitations that time out.
    t0 = time.perf_counter()
    for start in range(0, args.groups, args.wave):
        if time.perf_counter() > deadline:
            break
        wave: dict[str, Sequence[str]] = {}
        count = min(args.wave, args.groups - start)
        await asyncio.gather(*(open_one(g, wave) for g in range(start, start + count)))
        opened += await gb.connected(wave, args.timeout)
        groups.update(wave)
    elapsed = time.perf_counter() - t0
    await gb.apps.quiet(2.0, args.timeout)
    # a dialog's INVITE transactions stay 64*T1 (32 s) in the Accepted state (RFC 6026 §7.1):
    # measure the groups held open, not the last wave's transactions
    await asyncio.sleep(args.settle)
    growth = gb.bench.rss() - base
    per_group = growth / max(opened, 1)
    per_member = growth / max(opened * size, 1)
    projected = (base + per_group * 1000) / 1024
    row(f"groups of {size} open ({opened}/{len(groups)} connected in {elapsed:.0f} s)", f"{opened}")
    row("memory per open group (bridge RSS growth / groups)", f"{per_group:,.0f} KiB")
    row("memory per member (RSS growth / members)", f"{per_member:.1f} KiB")
    row(
        "projected bridge RSS with 1,000 groups of 10",
        f"{projected:,.0f} MiB",
        f"target < {MEMORY_TARGET_MIB} MiB",
    )
    row("bridge process RSS", f"{gb.bench.rss() / 1024:,.0f} MiB")


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100", help="group sizes (members, creator included)")
    ap.add_argument("--deliveries", type=int, default=10000, help="member deliveries per size")
    ap.add_argument("--count", type=int, default=3000, help="1-1 messages")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=0.0, help="latency phase rate (0: half)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--groups", type=int, default=1000, help="memory phase: groups to open")
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--pool", type=int, default=1000, help="memory phase: users (≥ group size)")
    ap.add_argument("--group-time", type=float, default=600.0)
    ap.add_argument("--wave", type=int, default=25, help="memory phase: groups opened at once")
    ap.add_argument(
        "--settle", type=float, default=35.0, help="memory phase: seconds before measuring"
    )
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--skip-group", action="store_true", help="the 1-1 phase only")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--keep-log", type=Path, help="copy the bridge's log there at the end")
    ap.add_argument("--pin", action="store_true", help="the bridge on the last CPU")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CHAT_BRIDGE_X=V",
        help="a setting of the bridge under test (repeatable)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    logging.basicConfig(level=logging.ERROR)
    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"{'group bench (embedded default: the bridge own focus, loopback)':<62}  {'value':>16}")
    print("-" * 100)

    status = 0
    with tempfile.TemporaryDirectory(prefix="group-bench-") as tmp:
        workdir = Path(tmp)
        bridge_cpu = None
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                raise SystemExit("--pin needs two CPUs or more")
            bridge_cpu = cpus[-1]
            os.sched_setaffinity(0, set(cpus[:-1]))
        apps = GroupApps()
        await apps.start()
        apps.http = http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        settings = {
            "CHAT_BRIDGE_CHAT_GROUP_MAX_SIZE": str(max([*sizes, args.group_size])),
            # the bridge subprocess imports from this checkout, whatever the venv points at
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        settings.update(item.split("=", 1) for item in args.set)
        bench = await start_bridge(workdir, apps, settings, bridge_cpu)
        try:
            one_rate = await one_to_one(bench, args)
            if not args.skip_group:
                gb = GroupBench(bench, apps)
                for i, size in enumerate(sizes):
                    dps = await group_size(gb, size, 1000 + 200 * i, args)
                    verdict = "met" if dps >= one_rate else "NOT met"
                    row(
                        f"group of {size}: deliveries/s vs 1-1 msg/s",
                        f"{dps / one_rate:.2f}x",
                        verdict,
                    )
                if not args.skip_memory:
                    await memory(gb, 3000, args)
            row("subscription POSTs retried after a 500 (store busy)", f"{bench.retries}")
        except GroupUnavailable as exc:
            print(f"group phases stopped: group chat is not available on this bridge ({exc})")
            status = 2
        except Exception as exc:
            log = (workdir / "bridge.log").read_text(errors="replace")[-3000:]
            print(f"bench stopped: {exc!r}\n--- bridge log tail ---\n{log}", file=sys.stderr)
            status = 1
        finally:
            await bench.close()
            if args.keep_log is not None:
                args.keep_log.write_bytes((workdir / "bridge.log").read_bytes())
            await http.close()
            if apps.runner is not None:
                await apps.runner.cleanup()
    return status


def run() -> Any:
    return asyncio.run(main())


if __name__ == "__main__":
    sys.exit(run())
