"""Notification POST cost: aiohttp.ClientSession against rest.http_client.NotifyClient.

Both clients POST the same JSON notification to a local aiohttp receiver that
runs in a *separate process* (so its CPU is not counted), configured as the
delivery worker configures them (keep-alive, ``limit`` connections per host,
total timeout, no redirects, body read). For each client two phases run:
``--count`` sequential POSTs, then ``--count`` POSTs from ``--concurrency``
concurrent workers. Reported per phase: POSTs per second (wall clock) and the
client process's CPU time per POST in microseconds (``time.process_time``).
Every phase is bounded by ``--timeout`` seconds. Usage::

    .venv/bin/python bench/http_client_bench.py [--count 3000] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rest.http_client import USER_AGENT, NotifyClient  # noqa: E402

_RECEIVER = """
import asyncio, sys
from aiohttp import web
async def post(request):
    await request.read()
    return web.Response(status=204)
async def main():
    app = web.Application()
    app.router.add_post("/notify/{user}", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
asyncio.run(main())
"""

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
BODY = json.dumps(
    {
        "chatMessageNotification": {
            "callbackData": "cd-1234",
            "link": [{"rel": "ChatMessage", "href": "http://bridge/chat/v1/x/messages/1"}],
            "chatMessage": {"text": "hello there, this is a benchmark message"},
            "messageId": "5f2b8a3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c",
            "senderAddress": "tel:+15550000002",
            "dateTime": "2026-11-25T05:00:00Z",
        }
    }
).encode()

Post = Callable[[str], Awaitable[int]]


async def phase(post: Post, url: str, count: int, concurrency: int, timeout: float) -> str:
    """Run ``count`` POSTs over ``concurrency`` workers; 'req/s, CPU µs/req'."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            status = await post(url)
            if status != 204:
                raise RuntimeError(f"unexpected status {status}")

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return f"{count / wall:8.0f} POST/s {cpu / count * 1e6:7.1f} µs CPU/POST"


async def run(args: argparse.Namespace, port: int) -> None:
    url = f"http://127.0.0.1:{port}/notify/tel%3A%2B15550000001?cb=1"
    connector = aiohttp.TCPConnector(
        limit=args.concurrency, limit_per_host=args.concurrency, keepalive_timeout=30.0
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=10.0),
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
    )
    client = NotifyClient(limit=args.concurrency, timeout=10.0)

    async def aiohttp_post(target: str) -> int:
        async with session.post(
            target, data=BODY, headers=HEADERS, allow_redirects=False
        ) as response:
            await response.read()
            return response.status

    async def notify_post(target: str) -> int:
        return await client.post(target, BODY, HEADERS)

    clients: list[tuple[str, Post]] = [("aiohttp", aiohttp_post), ("NotifyClient", notify_post)]
    try:
        for _, post in clients:  # warm up: connections, caches
            await phase(post, url, 200, args.concurrency, args.timeout)
        for round_ in range(1, args.rounds + 1):
            for name, post in clients:
                sequential = await phase(post, url, args.count, 1, args.timeout)
                concurrent = await phase(post, url, args.count, args.concurrency, args.timeout)
                print(f"round {round_} {name:>12}  sequential: {sequential}")
                print(f"round {round_} {name:>12}  {args.concurrency:2d} concurrent: {concurrent}")
    finally:
        await session.close()
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="POSTs per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent workers")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per client")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound per phase (s)")
    args = parser.parse_args()
    receiver = subprocess.Popen(
        [sys.executable, "-c", _RECEIVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        asyncio.run(run(args, port))
    finally:
        assert receiver.stdin is not None
        receiver.stdin.close()
        try:
            receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()


if __name__ == "__main__":
    main()
