"""Issue 13 defect 11: floods of bad or idle connections give a bounded number of log lines."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sip.msrp import MSRPStack, link
from sip.ratelog import RateLimitedLog


def test_burst_then_one_summary_per_window(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    logger = logging.getLogger("test.ratelog")
    limited = RateLimitedLog(logger, logging.WARNING, "bad things", burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for i in range(1000):
            limited.log("bad thing %d", i)
        assert [r.getMessage() for r in caplog.records] == [f"bad thing {i}" for i in range(3)]
        now[0] += 10.0  # the next window: its first event brings the summary first
        limited.log("bad thing %d", 1000)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[3:] == [
        "x 997 more bad things in the last 10 s (not logged one by one)",
        "bad thing 1000",
    ]
    assert limited.total_suppressed == 997


def test_one_line_per_key_and_window(caplog: pytest.LogCaptureFixture) -> None:
    # one flooding peer takes one line of the window; the burst still bounds the keys
    now = [0.0]
    logger = logging.getLogger("test.ratelog.keys")
    limited = RateLimitedLog(logger, logging.WARNING, "bad things", burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog.keys"):
        for i in range(100):
            limited.log("from flooder %d", i, key="10.0.0.1")
        for peer in range(2, 10):
            limited.log("from %d", peer, key=f"10.0.0.{peer}")
        now[0] += 10.0
        limited.log("from flooder %d", 100, key="10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == [
        "from flooder 0",
        "from 2",
        "from 3",
        "x 105 more bad things in the last 10 s (not logged one by one)",
        "from flooder 100",
    ]


def test_nothing_logged_below_the_level(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelog.quiet"), logging.DEBUG, "x")
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            limited.log("x")
    assert not caplog.records and limited.suppressed == 0


async def test_summary_comes_by_timer_when_the_flood_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(
        logging.getLogger("test.ratelog.timer"), logging.INFO, "idle things", window=0.1, burst=1
    )
    with caplog.at_level(logging.INFO, logger="test.ratelog.timer"):
        for _ in range(5):
            limited.log("idle")
        await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records] == [
        "idle",
        "x 4 more idle things in the last 0 s (not logged one by one)",
    ]


async def test_malformed_msrp_connections_do_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted = link._malformed_log.total_suppressed + link._broken_log.total_suppressed
    stack = MSRPStack("127.0.0.1", 0)
    await stack.start()
    try:
        with caplog.at_level(logging.INFO, logger="sip.msrp"):
            for _ in range(100):
                reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
                writer.write(b"GARBAGE \x00\x01 not msrp at all\r\n" * 4)
                await writer.drain()
                await reader.read()  # the bridge closes it
                writer.close()
    finally:
        await stack.close()
    lines = [r for r in caplog.records if r.name.startswith("sip.msrp")]
    assert 1 <= len(lines) <= 12, [r.getMessage() for r in lines]
    now = link._malformed_log.total_suppressed + link._broken_log.total_suppressed
    assert now - counted >= 100 - 2 * link._malformed_log.burst  # counted, not logged
