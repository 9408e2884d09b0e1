"""SIP stack bench: our stack vs SIPp through the Kamailio test bed, on loopback.

    .venv/bin/python -m bench.sip_bench [--messages 10000] [--invites 3000]
        [--concurrency 100] [--dialogs 10000] [--transports udp,tcp]

For each transport it prints, measured in the same run:
  * MESSAGE transactions/s: our UAC -> Kamailio -> our UAS, and sipp -> Kamailio -> sipp;
  * INVITE -> 200 -> ACK -> BYE -> 200 cycles/s: ours on both ends, and sipp on both ends;
each as wall-clock rate plus transactions per CPU-second of one side (UAC and UAS run in
separate processes, each on one core at most), and the ours/sipp ratio. Then the memory
per idle INVITE dialog with N dialogs established (tracemalloc, both ends of each dialog
in one process, divided by 2N). Every run is bounded by a count and a wall-clock limit.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

print = functools.partial(print, flush=True)  # noqa: A001 - progress lines as they come

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sip.stack import SipStack  # noqa: E402
from sip.timers import Timers  # noqa: E402
from sip.usage import IncomingInvite, IncomingRequest, InviteSession  # noqa: E402
from tests.sipp import runner  # noqa: E402
from tests.testbed_fixture import Testbed, start_testbed, stop_testbed  # noqa: E402

CPIM = (
    b"From: <sip:peer0011@ims.test>\r\nTo: <sip:+15555550011@ims.test>\r\n"
    b"DateTime: 2026-01-01T00:00:00.000Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
    b"imdn.Message-ID: L1\r\nimdn.Disposition-Notification: positive-delivery\r\n\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\n\r\nload message\r\n"
)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=message 7654 TCP/MSRP *\r\na=accept-types:message/cpim\r\n"
    b"a=path:msrp://127.0.0.1:7654/s1;tcp\r\na=setup:active\r\n"
)
ANSWER = SDP.replace(b"active", b"passive").replace(b"7654", b"7655")


@dataclass
class Result:
    """One measurement: count done, wall seconds, CPU seconds of the UAC and UAS sides."""

    count: int
    failed: int
    wall: float
    cpu_uac: float
    cpu_uas: float

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    def per_cpu(self) -> str:
        uac = self.count / self.cpu_uac if self.cpu_uac else 0.0
        uas = self.count / self.cpu_uas if self.cpu_uas else 0.0
        return f"{uac:7.0f} /UAC-cpu-s {uas:7.0f} /UAS-cpu-s"


# -- our UAS in a child process ----------------------------------------------------------


def _uas_main(port: int, transports: list[str], kind: str, conn: Connection) -> None:
    asyncio.run(_uas(port, transports, kind, conn))


async def _uas(port: int, transports: list[str], kind: str, conn: Connection) -> None:
    stack = SipStack(port=port, transports=transports)
    handled = 0

    def on_message(req: IncomingRequest) -> None:
        nonlocal handled
        handled += 1
        req.respond(200)

    async def on_invite(inv: IncomingInvite) -> None:
        nonlocal handled
        handled += 1
        await inv.accept(ANSWER)

    stack.on_request(
        "MESSAGE" if kind == "message" else "INVITE", on_message if kind == "message" else on_invite
    )
    await stack.start()
    cpu0 = time.process_time()
    conn.send("ready")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    await stop.wait()
    loop.remove_reader(conn.fileno())
    conn.recv()
    cpu = time.process_time() - cpu0
    await stack.stop()
    conn.send((handled, cpu))


class UASProcess:
    """Our UAS stack in its own process (its own core)."""

    def __init__(self, port: int, transport: str, kind: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_uas_main, args=(port, ["udp", "tcp"], kind, child))

    def start(self) -> None:
        self.proc.start()
        if not self.conn.poll(30) or self.conn.recv() != "ready":
            raise RuntimeError("UAS process did not start")

    def stop(self) -> tuple[int, float]:
        self.conn.send("stop")
        if not self.conn.poll(30):
            self.proc.kill()
            raise RuntimeError("UAS process did not stop")
        handled, cpu = self.conn.recv()
        self.proc.join(10)
        return int(handled), float(cpu)


# -- ours ------------------------------------------------------------------------------------


def _proxy(tb: Testbed, transport: str) -> str:
    return f"sip:127.0.0.1:{tb.sip_port}" + (";transport=tcp" if transport == "tcp" else "")


async def ours(tb: Testbed, transport: str, kind: str, total: int, concurrency: int) -> Result:
    uas = UASProcess(tb.as_port, transport, kind)
    uas.start()
    uac = SipStack(port=0, transports=[transport], outbound_proxy=_proxy(tb, transport))
    await uac.start()
    done = failed = 0
    issued = 0

    async def worker(index: int) -> None:
        nonlocal done, failed, issued
        while issued < total:
            issued += 1
            n = 11 + (issued % 89)
            target = f"sip:+155555500{n:02d}@ims.test"
            sender = f"sip:peer00{n:02d}@ims.test"
            try:
                if kind == "message":
                    resp = await uac.send_request(
                        "MESSAGE", target, sender=sender, body=CPIM, content_type="message/cpim"
                    )
                    ok = resp.status == 200
                else:
                    call = uac.invite(target, sender=sender, body=SDP)
                    resp = await call.response()
                    ok = resp.status == 200 and call.session is not None
                    if ok:
                        assert call.session is not None
                        bye = await call.session.bye()
                        ok = bye is not None and bye.status == 200
            except Exception:  # noqa: BLE001 - a bench counts failures, whatever they are
                ok = False
            if ok:
                done += 1
            else:
                failed += 1

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(i) for i in range(concurrency))), timeout=120
        )
    finally:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await uac.stop()
        _, uas_cpu = uas.stop()
    return Result(done, failed, wall, cpu, uas_cpu)


# -- sipp --------------------------------------------------------------------------------------


async def sipp(
    tb: Testbed, transport: str, kind: str, total: int, concurrency: int, work: Path
) -> Result:
    uas_sf, uac_sf = (
        ("uas-message-bench.xml", "uac-message-load.xml")
        if kind == "message"
        else ("uas-invite-bench.xml", "uac-invite-bench.xml")
    )
    keys = [] if kind == "message" else ["-key", "msrp_port", "7655"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    uas_cmd = runner.command(
        uas_sf, *keys, local_port=tb.as_port, calls=total, transport=transport, timeout="120s"
    )
    uas = await runner.start(uas_cmd, work / f"{kind}-{transport}-uas", limit=150)
    await runner.ready(tb.as_port, transport)
    uac_cmd = runner.command(
        uac_sf,
        f"127.0.0.1:{tb.sip_port}",
        "-inf",
        str(runner.USERS_CSV),
        "-users",
        str(concurrency),
        *(["-key", "msrp_port", "7654"] if kind != "message" else []),
        local_port=tb.uac_port(1),
        calls=total,
        transport=transport,
        timeout="120s",
    )
    t0 = time.perf_counter()
    uac = await runner.start(uac_cmd, work / f"{kind}-{transport}-uac", limit=150)
    uac_result = await uac.wait()
    wall = time.perf_counter() - t0
    mid = resource.getrusage(resource.RUSAGE_CHILDREN)
    uas_result = await uas.wait(limit=10)  # it waits for calls the UAC gave up on
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_uac = (mid.ru_utime + mid.ru_stime) - (before.ru_utime + before.ru_stime)
    cpu_uas = (after.ru_utime + after.ru_stime) - (mid.ru_utime + mid.ru_stime)
    if not uac_result.ok or not uas_result.ok:
        print(
            f"  sipp {kind} {transport}: uac rc={uac_result.returncode}"
            f" uas rc={uas_result.returncode}"
        )
    return Result(uac_result.successful, uac_result.failed, wall, cpu_uac, cpu_uas)


# -- memory per idle dialog ------------------------------------------------------------------


async def dialog_memory(count: int) -> float:
    """Bytes per idle INVITE dialog (one side) with ``count`` dialogs up (tracemalloc)."""
    fast = Timers(t1=0.05, t2=0.4, t4=0.5, d_unreliable=0.5)
    a = SipStack(port=0, transports=["tcp"], timers=fast)
    b = SipStack(port=0, transports=["tcp"], timers=fast)
    sessions: list[InviteSession] = []

    async def on_invite(inv: IncomingInvite) -> None:
        sessions.append(await inv.accept(ANSWER))

    b.on_request("INVITE", on_invite)
    await a.start()
    await b.start()
    target = f"sip:+15555550011@127.0.0.1:{b.port};transport=tcp"
    try:
        # warm up the caches (parsers, connection) before the baseline
        for _ in range(50):
            await a.invite(target, sender="sip:peer0011@ims.test", body=SDP).response()
        await asyncio.sleep(64 * fast.t1 + 1.0)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        calls = []
        for start in range(0, count, 200):
            batch = [
                a.invite(target, sender=f"sip:peer{i:05d}@ims.test", body=SDP)
                for i in range(start, min(start + 200, count))
            ]
            for call in batch:
                await call.response()
            calls.extend(batch)
        await asyncio.sleep(64 * fast.t1 + 1.0)  # transactions end (timers L/M) and are freed
        sessions_a = [c.session for c in calls]
        del calls
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert all(s is not None for s in sessions_a)
        if a.dialog_count() < count or b.dialog_count() < count:
            raise RuntimeError(f"dialogs up: {a.dialog_count()} / {b.dialog_count()} of {count}")
        return used / (2 * count)
    finally:
        await a.stop()
        await b.stop()


# -- main --------------------------------------------------------------------------------------


def line(label: str, mine: Result, theirs: Result, unit: str) -> None:
    ratio = mine.rate / theirs.rate if theirs.rate else 0.0
    print(
        f"  {label:<22} ours {mine.rate:8.0f} {unit} ({mine.count} ok, {mine.failed} failed, "
        f"{mine.per_cpu()})"
    )
    print(
        f"  {'':<22} sipp {theirs.rate:8.0f} {unit} ({theirs.count} ok, {theirs.failed} failed, "
        f"{theirs.per_cpu()})"
    )
    print(f"  {'':<22} ratio ours/sipp = {ratio:.2f}")


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sip-bench-"))
    print(f"SIP bench on 127.0.0.1, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    for transport in args.transports.split(","):
        tb = start_testbed(
            work / f"kamailio-{transport}", as_transport=transport, KTB_SHM_MB=str(args.shm_mb)
        )
        try:
            print(
                f"[{transport}] Kamailio on {tb.sip_port}, AS on {tb.as_port},"
                f" concurrency {args.concurrency}"
            )
            # Kamailio keeps finished transactions ~5 s: let them drain between phases
            m_ours = await ours(tb, transport, "message", args.messages, args.concurrency)
            await asyncio.sleep(args.drain)
            m_sipp = await sipp(tb, transport, "message", args.messages, args.concurrency, work)
            line("MESSAGE tx/s", m_ours, m_sipp, "tx/s")
            await asyncio.sleep(args.drain)
            i_ours = await ours(tb, transport, "invite", args.invites, args.concurrency)
            await asyncio.sleep(args.drain)
            i_sipp = await sipp(tb, transport, "invite", args.invites, args.concurrency, work)
            line("INVITE..BYE cycles/s", i_ours, i_sipp, "cyc/s")
        finally:
            stop_testbed(tb)
    if args.dialogs:
        per = await dialog_memory(args.dialogs)
        print(
            f"[memory] {args.dialogs} idle INVITE dialogs:"
            f" {per / 1024:.1f} KiB per dialog (one side)"
        )
    print(f"work dir {work}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--invites", type=int, default=3000)
    parser.add_argument("--shm-mb", type=int, default=1024, help="Kamailio shared memory")
    parser.add_argument("--drain", type=float, default=7.0, help="seconds between phases")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--dialogs", type=int, default=10000)
    parser.add_argument("--transports", default="udp,tcp")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
