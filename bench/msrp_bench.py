"""MSRP benchmark: throughput over one loopback connection and memory per idle session.

usage: python bench/msrp_bench.py [--sessions 10000] [--seconds 3] [--inflight 64] [--tls]

Prints one table:
  - SEND throughput, small (100 B) and 100 KiB messages (chunked at 10 KiB), one TCP
    connection between two MSRPStacks on 127.0.0.1, ``--inflight`` messages pipelined;
    a message counts when its last chunk got 200. Each run stops after ``--seconds``.
  - tracemalloc bytes per idle session: created only, and bound (create + bind, averaged
    over both ends, all sessions sharing one connection, after the empty-SEND handshakes);
    the time to bind ``--sessions`` pairs is measured in a separate run without tracemalloc.
  - with ``--tls``, the throughput rows again over MSRP over TLS (``msrps``, RFC 4975 §14:
    a self-signed certificate made at start, checked against its fingerprint; docs/tls.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip.msrp import MSRPTLS, MessageReceived, MSRPStack  # noqa: E402
from sip.msrp.events import Event  # noqa: E402
from sip.tls import TLSFiles  # noqa: E402


def self_signed(directory: Path) -> MSRPTLS:
    """MSRP TLS from a self-signed certificate made now (tests/tls_certs.py, cryptography)."""
    from tests.tls_certs import make_pki

    pair = make_pki(directory).rogue
    return MSRPTLS.from_files(TLSFiles(str(pair.cert), str(pair.key)))


async def throughput(
    size: int, seconds: float, inflight: int, tls: MSRPTLS | None = None
) -> tuple[float, float, int]:
    """(messages/s, MB/s, messages) for ``size``-byte messages over one connection."""
    a = MSRPStack(timeout=30.0, tls=tls)
    b = MSRPStack(timeout=30.0, tls=tls)
    await a.start()
    await b.start()
    try:
        sa = await a.create_session(tls=tls is not None)
        sb = await b.create_session(tls=tls is not None)
        await asyncio.gather(
            sb.start(sa.local_path, active=False),
            sa.start(sb.local_path, active=True, fingerprint=sb.fingerprint),
        )
        received = 0

        def count(ev: Event) -> None:
            nonlocal received
            if isinstance(ev, MessageReceived):
                received += 1

        sb.on_event = count
        body = b"m" * size
        sent = 0
        stop = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < stop:
                await sa.send("text/plain", body)
                sent += 1

        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - start
        assert received == sent, (received, sent)
        return sent / elapsed, sent * size / elapsed / 1e6, sent
    finally:
        await a.close()
        await b.close()


async def bind_pairs(a: MSRPStack, b: MSRPStack, n: int) -> float:
    """Create and bind ``n`` session pairs over one connection; returns seconds."""
    sessions_a = [await a.create_session() for _ in range(n)]
    sessions_b = [await b.create_session() for _ in range(n)]
    t0 = time.perf_counter()
    batch = 500
    for i in range(0, n, batch):
        pairs = zip(sessions_a[i : i + batch], sessions_b[i : i + batch], strict=True)
        await asyncio.gather(
            *(
                step
                for sa, sb in pairs
                for step in (
                    sb.start(sa.local_path, active=False),
                    sa.start(sb.local_path, active=True),
                )
            )
        )
    elapsed = time.perf_counter() - t0
    assert len(a._links) == 1, "all sessions share one connection"
    return elapsed


async def idle_memory(n: int, *, traced: bool) -> tuple[float, float]:
    """Traced: (bytes per created session, bytes per bound session); else (0, bind seconds)."""
    a = MSRPStack()
    b = MSRPStack()
    await a.start()
    await b.start()
    try:
        if not traced:
            return 0.0, await bind_pairs(a, b, n)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        probe = [await a.create_session() for _ in range(n)]
        created = (tracemalloc.get_traced_memory()[0] - base) / n
        for session in probe:
            await session.close()
        del probe
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        await bind_pairs(a, b, n)
        await asyncio.sleep(0.1)
        gc.collect()
        bound = (tracemalloc.get_traced_memory()[0] - base) / (2 * n)
        tracemalloc.stop()
        return created, bound
    finally:
        await a.close()
        await b.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--tls", action="store_true", help="also measure over msrps (TLS)")
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    modes: list[tuple[str, MSRPTLS | None]] = [("", None)]
    if args.tls:
        import tempfile

        modes.append((" TLS", self_signed(Path(tempfile.mkdtemp(prefix="msrp-bench-")))))
    for mode, tls in modes:
        for label, size, inflight in (
            ("100 B", 100, args.inflight),
            ("100 KiB", 100 * 1024, max(1, args.inflight // 8)),
        ):
            rate, mbs, count = await throughput(size, args.seconds, inflight, tls)
            rows.append((f"SEND{mode} {label} msgs/s ({inflight} in flight)", f"{rate:,.0f}"))
            rows.append((f"SEND{mode} {label} MB/s ({count} msgs)", f"{mbs:,.1f}"))
    _zero, bind_time = await idle_memory(args.sessions, traced=False)
    created, bound = await idle_memory(args.sessions, traced=True)
    rows.append((f"idle session, created ({args.sessions:,})", f"{created:,.0f} B"))
    rows.append(
        (f"idle session, bound, 1 shared connection ({args.sessions:,})", f"{bound:,.0f} B")
    )
    rows.append((f"bind {args.sessions:,} session pairs", f"{bind_time:.2f} s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'MSRP benchmark (Python ' + sys.version.split()[0] + ')':<{width}}  value")
    print("-" * (width + 14))
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12}")


if __name__ == "__main__":
    asyncio.run(main())
