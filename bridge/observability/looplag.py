"""Event-loop lag: how late the loop runs a sleep that should end now (docs/operations.md).

A small task sleeps ``interval`` seconds, then reports how much later than asked it woke:
the time callbacks queued ahead of it kept the loop busy. Under a healthy load that is
well below a millisecond; tens of milliseconds mean every SIP, MSRP and REST answer waits
as long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.observability.background import Background

__all__ = ["LoopLag"]


class LoopLag(Background):
    """Samples the running loop's lag every ``interval`` seconds into ``report``."""

    task_name = "loop-lag"

    def __init__(self, interval: float, report: Callable[[float], None]) -> None:
        self.interval = interval
        self.report = report

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.report(max(0.0, loop.time() - due))
