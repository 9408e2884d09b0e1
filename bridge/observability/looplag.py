"""Event-loop lag: how late the loop runs a sleep that should end now (docs/operations.md).

A small task sleeps ``interval`` seconds, then reports how much later than asked it woke:
the time callbacks queued ahead of it kept the loop busy. Under a healthy load that is
well below a millisecond; tens of milliseconds mean every SIP, MSRP and REST answer waits
as long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["LoopLag"]


class LoopLag:
    """Samples the running loop's lag every ``interval`` seconds into ``report``."""

    def __init__(self, interval: float, report: Callable[[float], None]) -> None:
        self.interval = interval
        self.report = report
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling (inside the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.report(max(0.0, loop.time() - due))
