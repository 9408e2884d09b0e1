"""Rate-limited logging: the first few lines of a kind, then one summary per window.

A flood of hostile connections (issue 13: thousands of malformed or idle MSRP
connections) must not turn into thousands of log lines. A
:class:`RateLimitedLog` logs the first ``burst`` events of its kind in each
``window`` seconds one by one, counts the rest, and logs one summary when the
window ends (with a ``key``, such as the peer's address, one line per key and window)::

    x 123 more malformed MSRP connections in the last 10 s (not logged one by one)

The summary is written by a timer on the running event loop (or, without one,
with the next event after the window), so a flood that stops is still
accounted for. No lock: asyncio code calls it from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs up to ``burst`` events per ``window`` seconds on ``logger``, then a count."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        what: str,
        *,
        window: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or burst < 0:
            raise ValueError("window > 0 and burst >= 0 required")
        self.logger = logger
        self.level = level
        self.what = what
        """Plural noun phrase of the summary: ``malformed MSRP connections``."""
        self.window = window
        self.burst = burst
        self.clock = clock
        self.logged = 0
        """Events logged one by one in the current window."""
        self.suppressed = 0
        """Events counted, not logged, in the current window."""
        self.total_suppressed = 0
        self._started: float | None = None
        self._keys: set[Hashable] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def log(self, msg: str, *args: object, key: Hashable | None = None) -> None:
        """One event: logged as ``msg % args`` unless past the window's burst. With a
        ``key`` (the peer's address) only the first event of that key in the window is
        logged: one flooding peer takes one line, and the others still show."""
        if not self.logger.isEnabledFor(self.level):
            return
        now = self.clock()
        if self._started is not None and now - self._started >= self.window:
            self.flush()
        if self._started is None:
            self._started = now
        if self.logged < self.burst and (key is None or key not in self._keys):
            if key is not None:
                self._keys.add(key)  # at most ``burst`` keys: bounded
            self.logged += 1
            self.logger.log(self.level, msg, *args)
            return
        self.suppressed += 1
        self.total_suppressed += 1
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: summarised with the next event after the window
            return
        if self._timer is None or self._timer_loop is not loop:  # none yet, or a finished loop's
            self._timer_loop = loop
            self._timer = loop.call_later(max(0.0, self._started + self.window - now), self.flush)

    def flush(self) -> None:
        """End the current window: log the summary of what was not logged, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.suppressed:
            self.logger.log(
                self.level,
                "x %d more %s in the last %.0f s (not logged one by one)",
                self.suppressed,
                self.what,
                self.window,
            )
        self._started = None
        self._keys.clear()
        self.logged = self.suppressed = 0
