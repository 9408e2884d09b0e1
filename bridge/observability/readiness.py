"""Readiness (``GET /ready``, docs/operations.md): may this bridge take traffic now?

``/health`` stays liveness (the process and its store answer). Ready asks more: the
store answers a ``SELECT 1`` within ``ready_store_timeout``, the SIP and MSRP listeners
are bound and, when an IMS core is configured (``sip_outbound_proxy``), the last OPTIONS
ping to it (:class:`ImsPinger`, every ``ims_ping_interval``) was answered. Each check is
a small coroutine returning None (fine) or the reason it is not; ``Readiness.reasons``
runs them all at once and collects the reasons by check name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bridge.observability.background import Background

__all__ = ["Check", "ImsPinger", "Readiness", "listener_check", "store_check"]

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]
"""None when the part is ready, else why it is not (a short phrase)."""


class Readiness:
    """Named readiness checks, run together."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Add (or replace) the check ``name``."""
        self._checks[name] = check

    @property
    def names(self) -> list[str]:
        """The checks, in the order added."""
        return list(self._checks)

    async def reasons(self) -> dict[str, str]:
        """Why the bridge is not ready, by check name (empty: ready)."""
        names = list(self._checks)
        results = await asyncio.gather(
            *(self._checks[name]() for name in names), return_exceptions=True
        )
        out: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                out[name] = f"check failed: {type(result).__name__}"
            elif result is not None:
                out[name] = result
        return out


def store_check(ping: Callable[[], Awaitable[bool]], timeout: float) -> Check:
    """The store answers ``ping`` (a ``SELECT 1``) with True within ``timeout`` seconds."""

    async def check() -> str | None:
        try:
            ok = await asyncio.wait_for(ping(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        return None if ok else "does not answer"

    return check


def listener_check(bound: Callable[[], bool]) -> Check:
    """``bound()`` says the listeners are open."""

    async def check() -> str | None:
        return None if bound() else "listener not bound"

    return check


class ImsPinger(Background):
    """Sends an OPTIONS to the IMS core every ``interval`` seconds (RFC 3261 §11).

    ``ping`` sends one and returns its final response (any status means the core
    answered); it is given ``timeout`` seconds. :meth:`check` is the readiness check:
    not ready before the first answer, after an unanswered ping, or when no ping was
    answered for ``interval + timeout`` seconds (the task stalled). ``on_change`` hears
    every change of reachability (the metrics gauge). The first ping goes at :meth:`start`.
    """

    task_name = "ims-ping"

    def __init__(
        self,
        ping: Callable[[], Awaitable[object]],
        *,
        target: str,
        interval: float,
        timeout: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.ping = ping
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self.answered_at: float | None = None
        self.failure: str | None = "no OPTIONS answered yet"
        self._down = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self.ping(), self.timeout)
            except TimeoutError:
                self._failed(f"no answer to OPTIONS within {self.timeout:g} s")
            except Exception as exc:  # SIPError (transport), TransactionTimeout, ...
                self._failed(f"OPTIONS failed: {exc}")
            else:
                first = self.answered_at is None
                self.answered_at = loop.time()
                self.failure = None
                if first or self._down:
                    log.info("- IMS core %s answers OPTIONS", self.target)
                    self._down = False
                    if self.on_change is not None:
                        self.on_change(True)
            await asyncio.sleep(self.interval)

    def _failed(self, why: str) -> None:
        self.failure = why
        if not self._down:
            log.warning("x IMS core %s unreachable: %s", self.target, why)
            self._down = True
            if self.on_change is not None:
                self.on_change(False)

    async def check(self) -> str | None:
        """The readiness check (class docstring)."""
        if self.failure is not None:
            return self.failure
        assert self.answered_at is not None
        age = asyncio.get_running_loop().time() - self.answered_at
        if age > self.interval + self.timeout:
            return f"no OPTIONS answered for {age:.0f} s"
        return None
