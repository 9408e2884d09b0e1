"""The 1-1 chat core in-process: messages/s, store work per message, latency, session memory.

No HTTP and no SIP: the chat service (``bridge.chat.assembly.build_chat``) runs over
``tests.fakes.signalling.LoopbackSignalling`` (A's MSRP SEND becomes B's
received message in memory) with the real SQLite file store
(``state.chat_store.SQLChatStore``) and a notifier that records what is
woken and plays "the app got it" for every chatMessageNotification at once
(so the automatic "delivered" IMDN goes back to the sender, as the real
delivery side does after a 2xx). What it measures is the cost of the chat
core and its store, the part the end-to-end bench (``bench/chat_bench.py``)
cannot separate from HTTP, SIP and MSRP.

Phases:

1. sequential: one confirmed session A→B; ``--seq`` messages, each sent only
   after the previous one's ``Delivered`` status notification reached A
   (the full round trip: store, MSRP send result, B's notification, B's
   delivered IMDN, A's status notification);
2. concurrent: ``--pairs`` confirmed sessions, each sending ``--per-pair``
   messages back to back (every ``send_message`` awaited, not the round
   trip); msg/s = messages / (first send → last ``Delivered`` at A);
3. memory: ``--sessions`` idle confirmed 1-1 sessions (created, accepted,
   connected), measured with tracemalloc (Python heap held per session by
   the service and its caches; the store is on disk).

For phases 1 and 2 it prints the process CPU time per message (all threads:
the event loop and aiosqlite's), SQL statements and transactions (commits) per
message, counted with SQLAlchemy engine events, and p50/p99 of
``send_message`` (the part a REST POST waits for before its 201).

Usage::

    .venv/bin/python bench/chat_core_bench.py [--seq 300] [--pairs 10] [--per-pair 100]
        [--sessions 10000] [--profile seq|concurrent]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.chat.assembly import ChatBridge, build_chat  # noqa: E402
from bridge.chat.core import utcnow  # noqa: E402
from bridge.chat.model import NewSession, OutgoingText, RestStatus  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.ids import UserUri  # noqa: E402
from bridge.ports import Notification  # noqa: E402
from bridge.subscriptions import NewSubscription  # noqa: E402
from rest.uris import ServerRoot  # noqa: E402
from state import repository  # noqa: E402
from state.chat_store import SQLChatStore  # noqa: E402
from state.db import Database  # noqa: E402
from tests.fakes.notifier import RecordingNotifier  # noqa: E402
from tests.fakes.signalling import LoopbackSignalling  # noqa: E402

ROOT = "http://bench.test"


def user(side: str, i: int) -> UserUri:
    return UserUri(f"tel:+1555{'1' if side == 'a' else '2'}{i:06d}")


class AppNotifier(RecordingNotifier):
    """Records nothing; hands each chat message to the listeners at once; resolves waiters."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.delivered: dict[str, asyncio.Future[None]] = {}
        self.invitations: dict[UserUri, asyncio.Future[str]] = {}
        self.accepted: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self, *queued: Notification) -> None:
        for n in queued:
            if n.root == "chatMessageNotification" and "chatMessage" in n.body:
                task = asyncio.get_running_loop().create_task(self.deliver(n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif n.root == "chatMessageStatusNotification" and n.body.get("status") == "Delivered":
                fut = self.delivered.get(str(n.body["messageId"]))
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif n.root == "chatEventNotification" and n.body.get("eventType") == "Accepted":
                fut3 = self.accepted.get(str(n.body["sessionId"]))
                if fut3 is not None and not fut3.done():
                    fut3.set_result(None)
            elif n.root == "chatSessionInvitationNotification":
                fut2 = self.invitations.get(n.user)
                if fut2 is not None and not fut2.done():
                    fut2.set_result(str(n.body["sessionId"]))

    def expect(self, message_id: str) -> asyncio.Future[None]:
        fut = self.delivered.get(message_id)
        if fut is None:
            fut = self.delivered[message_id] = asyncio.get_running_loop().create_future()
        return fut


@dataclass
class Counter:
    """SQL statements and commits seen on an engine."""

    statements: int = 0
    commits: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    raw: Callable[[], int] = lambda: 0
    """Statements the store runs on the DBAPI cursor itself (no SQLAlchemy event)."""
    raw_base: int = 0

    def reset(self) -> None:
        self.statements = self.commits = 0
        self.kinds.clear()
        self.raw_base = self.raw()

    def settle(self) -> None:
        """Fold in the store's own (raw) statements since :meth:`reset`."""
        extra = self.raw() - self.raw_base
        if extra:
            # the store's own DBAPI statements: hot-write executemany, notification
            # inserts (state.outbox.SyncEnqueue), message look-up probes
            self.kinds["RAW"] = self.kinds.get("RAW", 0) + extra
            self.statements += extra
        self.raw_base = self.raw()


def count_sql(database: Database, store: SQLChatStore) -> Counter:
    counter = Counter(raw=lambda: int(getattr(store, "raw_statements", 0)))

    def on_execute(*args: Any) -> None:
        counter.statements += 1
        statement = str(args[2]).lstrip().split(None, 1)[0].upper()
        counter.kinds[statement] = counter.kinds.get(statement, 0) + 1

    def on_commit(*_args: Any) -> None:
        counter.commits += 1

    engines: dict[int, Engine] = {}
    for e in (database.engine, getattr(store, "engine", database.engine)):  # own on a file
        sync = e if isinstance(e, Engine) else e.sync_engine
        engines[id(sync)] = sync
    for engine in engines.values():
        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "commit", on_commit)
    return counter


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Bench:
    database: Database
    chat: ChatBridge
    notifier: AppNotifier
    sip: LoopbackSignalling
    counter: Counter

    async def subscribe(self, *users: UserUri) -> None:
        async with self.database.sessions.begin() as session:
            for u in users:
                await repository.create_subscription(
                    session,
                    NewSubscription(
                        user=u,
                        notify_url=f"http://app.test/{u}",
                        callback_data="cb",
                        confirmed_chat_supported=True,
                    ),
                    datetime.now(UTC),
                )

    async def open_pair(self, a: UserUri, b: UserUri) -> str:
        """A confirmed session A→B, accepted by B and connected; A's sessionId."""
        invited = asyncio.get_running_loop().create_future()
        self.notifier.invitations[b] = invited
        cs, _ = await self.chat.confirmed.create_session(a, b, NewSession(subject="bench"))
        b_id = await asyncio.wait_for(invited, 30)
        del self.notifier.invitations[b]
        connected = self.notifier.accepted[cs.id] = asyncio.get_running_loop().create_future()
        await self.chat.confirmed.accept_session(b, a, b_id)
        await asyncio.wait_for(connected, 30)  # A's chatEventNotification Accepted
        del self.notifier.accepted[cs.id]
        return cs.id

    async def send(self, a: UserUri, b: UserUri, sid: str, i: int) -> tuple[str, float]:
        t0 = time.perf_counter()
        msg, _ = await self.chat.messages.send_message(
            a, b, sid, OutgoingText(f"hello {i}", frozenset({RestStatus.DELIVERED}))
        )
        return msg.id, time.perf_counter() - t0


async def make_bench(path: Path) -> Bench:
    database = Database(f"sqlite:///{path}")
    await database.migrate()
    settings = Settings(
        server_root=ROOT,
        chat_ringing_timeout=600.0,
        chat_invite_timeout=600.0,
        chat_idle_timeout=600.0,
        notify_allow_loopback=True,
    )
    notifier = AppNotifier(database)
    sip = LoopbackSignalling()
    store = SQLChatStore(database)
    chat = build_chat(
        settings=settings,
        store=store,
        notifier=notifier,
        signalling=sip,
        urls=ServerRoot(ROOT),
        clock=utcnow,
    )
    await chat.start()
    return Bench(database, chat, notifier, sip, count_sql(database, store))


def report_store(label: str, counter: Counter, messages: int) -> None:
    counter.settle()
    kinds = ", ".join(f"{k} {v / messages:.2f}" for k, v in sorted(counter.kinds.items()))
    print(
        f"  {label}: {counter.statements / messages:.2f} statements/msg "
        f"({kinds}), {counter.commits / messages:.2f} transactions/msg"
    )


def show_profile(prof: cProfile.Profile | None) -> None:
    if prof is not None:
        stats = pstats.Stats(prof).strip_dirs()
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)


async def sequential(bench: Bench, count: int, profile: bool) -> None:
    a, b = user("a", 0), user("b", 0)
    await bench.subscribe(a, b)
    sid = await bench.open_pair(a, b)
    for i in range(20):  # warm-up
        mid, _ = await bench.send(a, b, sid, i)
        await asyncio.wait_for(bench.notifier.expect(mid), 30)
    bench.counter.reset()
    latencies: list[float] = []
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(count):
        mid, took = await bench.send(a, b, sid, i)
        latencies.append(took)
        await asyncio.wait_for(bench.notifier.expect(mid), 30)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof is not None:
        prof.disable()
    print(
        f"sequential (round trip to Delivered, 1 pair): {count / elapsed:.0f} msg/s, "
        f"CPU {cpu / count * 1000:.2f} ms/msg"
    )
    print(
        f"  send_message p50 {pct(latencies, 50) * 1000:.2f} ms, "
        f"p99 {pct(latencies, 99) * 1000:.2f} ms"
    )
    report_store("store", bench.counter, count)
    show_profile(prof)


async def concurrent(bench: Bench, pairs: int, per_pair: int, profile: bool) -> None:
    ends = [(user("a", 100 + i), user("b", 100 + i)) for i in range(pairs)]
    await bench.subscribe(*(u for pair in ends for u in pair))
    sids = [await bench.open_pair(a, b) for a, b in ends]
    latencies: list[float] = []
    waits: list[asyncio.Future[None]] = []

    async def run(k: int) -> None:
        a, b = ends[k]
        for i in range(per_pair):
            mid, took = await bench.send(a, b, sids[k], i)
            latencies.append(took)
            waits.append(bench.notifier.expect(mid))

    bench.counter.reset()
    prof = cProfile.Profile() if profile else None
    if prof is not None:
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.wait_for(asyncio.gather(*(run(k) for k in range(pairs))), 300)
    await asyncio.wait_for(asyncio.gather(*waits), 300)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof is not None:
        prof.disable()
    total = pairs * per_pair
    print(
        f"concurrent ({pairs} pairs x {per_pair}, until every Delivered): "
        f"{total / elapsed:.0f} msg/s, CPU {cpu / total * 1000:.2f} ms/msg"
    )
    print(
        f"  send_message p50 {pct(latencies, 50) * 1000:.2f} ms, "
        f"p99 {pct(latencies, 99) * 1000:.2f} ms"
    )
    report_store("store", bench.counter, total)
    show_profile(prof)


async def memory(bench: Bench, sessions: int, batch: int = 50) -> None:
    ends = [(user("a", 200_000 + i), user("b", 200_000 + i)) for i in range(sessions)]
    await bench.subscribe(*(u for pair in ends for u in pair))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    for start in range(0, sessions, batch):
        chunk = ends[start : start + batch]
        await asyncio.gather(*(bench.open_pair(a, b) for a, b in chunk))
    await bench.sip.settle(bench.chat.core)
    elapsed = time.perf_counter() - t0
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"memory: {sessions} idle 1-1 sessions (2 legs each) held {held / 2**20:.1f} MiB "
        f"= {held / sessions / 1024:.2f} KiB/session (tracemalloc); set up in {elapsed:.1f} s"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench = await make_bench(Path(tmp) / "chat.db")
        try:
            await sequential(bench, args.seq, args.profile == "seq")
            await concurrent(bench, args.pairs, args.per_pair, args.profile == "concurrent")
            if args.sessions:
                await memory(bench, args.sessions)
        finally:
            await bench.chat.stop()
            await bench.database.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, default=300, help="sequential round trips")
    p.add_argument("--pairs", type=int, default=10, help="concurrent sending pairs")
    p.add_argument("--per-pair", type=int, default=100, help="messages per pair")
    p.add_argument("--sessions", type=int, default=10_000, help="idle sessions (0: skip)")
    p.add_argument("--profile", choices=["seq", "concurrent"], help="cProfile one phase")
    return p.parse_args(argv)


run: Callable[[], None] = lambda: asyncio.run(main(parse()))  # noqa: E731

if __name__ == "__main__":
    run()
