"""Cost of the operations hooks per call: what metrics and logs add to each message.

Prints, per call (best of ``--rounds`` rounds of ``--count`` calls each, in microseconds):

* the SIP hook for one request and one response (``SipMetrics.received``/``sent``: the
  work added to every SIP message on the wire);
* the MSRP hook for one write and one read (``MSRPMetrics``);
* the REST metrics of one request (``HttpMetrics.observe``);
* one access-log line through the bridge's handler (text, JSON, JSON with redaction),
  written to /dev/null;
* one ``/metrics`` scrape rendering (no store reads), in milliseconds.

The chat-efficiency budget is about 1 ms of bridge CPU per chat message; one confirmed
1-1 message passes a few MSRP writes and reads (the SEND, its 200, a REPORT), one REST
request (its metrics and access line) and one notification POST through these hooks.

Usage::

    .venv/bin/python bench/observability_bench.py [--count 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Callable

from bridge.config import Settings
from bridge.observability.logs import setup_logging
from bridge.observability.metrics import Metrics
from sip.message import parse_message

REQUEST = (
    b"MESSAGE sip:+15551230002@ims.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:+15551230001@ims.test>;tag=a\r\nTo: <sip:+15551230002@ims.test>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"From: <sip:+15551230001@ims.test>;tag=a\r\nTo: <sip:+15551230002@ims.test>;tag=b\r\n"
    b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
)


def per_call(fn: Callable[[], None], count: int, rounds: int) -> float:
    """Best per-call time in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, (time.perf_counter() - t0) / count)
    return best * 1e6


def access_line(settings: Settings, count: int, rounds: int) -> float:
    with open(os.devnull, "w") as sink:
        handler = setup_logging(settings, stream=sink)
        log = logging.getLogger("bridge.access")
        route = "/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}/messages"
        extra = {"request_id": "0123456789abcdef", "method": "POST", "route": route,
                 "status": 201, "duration_ms": 1.234}  # fmt: skip

        def line() -> None:
            log.info("%s %s %d %.1fms id=%s", "POST", route, 201, 1.234, "0123456789abcdef",
                     extra=extra)  # fmt: skip

        try:
            return per_call(line, count, rounds)
        finally:
            logging.getLogger().removeHandler(handler)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    count, rounds = args.count, args.rounds
    metrics = Metrics()
    request, response = parse_message(REQUEST), parse_message(RESPONSE)
    sip_in = per_call(lambda: metrics.sip.received(request), count, rounds)
    sip_out = per_call(lambda: metrics.sip.sent(response), count, rounds)
    msrp = per_call(lambda: metrics.msrp.sent(1, 400), count, rounds)
    http = per_call(
        lambda: metrics.http.observe("POST", "/chat/v1/{userId}/x", 201, 0.002), count, rounds
    )
    lines = count // 10
    text = access_line(Settings(), lines, rounds)
    json_line = access_line(Settings(log_format="json"), lines, rounds)
    redacted = access_line(Settings(log_format="json", log_redact=True), lines, rounds)
    t0 = time.perf_counter()
    for _ in range(100):
        await metrics.scrape()
    scrape_ms = (time.perf_counter() - t0) / 100 * 1000
    print(f"SIP hook, request in:        {sip_in:6.2f} us")
    print(f"SIP hook, response out:      {sip_out:6.2f} us")
    print(f"MSRP hook, one write:        {msrp:6.2f} us")
    print(f"REST metrics, one request:   {http:6.2f} us")
    print(f"access line, text:           {text:6.2f} us")
    print(f"access line, json:           {json_line:6.2f} us")
    print(f"access line, json+redact:    {redacted:6.2f} us")
    print(f"/metrics render (no store):  {scrape_ms:6.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
