"""The REST side of the graceful shutdown: refuse new requests, let those under way finish.

``bridge.app`` closes the gate as the first step of its shutdown (docs/configuration.md
"Shutdown"). From then on every new request is answered 503 ``SVC0001`` with
``Retry-After`` (an OMA fault, in the negotiated format: the middleware runs inside
``rest.errors.fault_middleware`` and ``rest.body.negotiation_middleware``), so an app or a
load balancer retries elsewhere; :meth:`RequestGate.wait_idle` waits, bounded, for the
requests that were already admitted. Open long polls among them are answered by the
delivery worker (``rest.delivery.DeliveryService.drain``), not waited out.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from rest.errors import Handler, unavailable

log = logging.getLogger(__name__)


PROBES = frozenset({"/health", "/ready", "/metrics"})
"""Answered during the drain too: liveness stays 200 until the process exits, ``/ready``
says 503 (:meth:`RequestGate.check`) in its own body, and the last scrape still works."""


class RequestGate:
    """Counts the requests under way and refuses new ones once closed (probes excepted)."""

    def __init__(self) -> None:
        self._open = True
        self._retry_after = 0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def open(self) -> bool:
        """False once :meth:`close` ran (readiness probes answer 503 then)."""
        return self._open

    @property
    def in_flight(self) -> int:
        """Requests admitted and not answered yet."""
        return self._in_flight

    def close(self, retry_after: int) -> None:
        """Refuse every request from now on with 503 and ``Retry-After: retry_after``."""
        self._open = False
        self._retry_after = retry_after

    async def check(self) -> str | None:
        """The readiness check: None while open, the reason once the shutdown began."""
        return None if self._open else "shutting down"

    async def wait_idle(self, timeout: float) -> int:
        """Wait until no admitted request is under way, ``timeout`` seconds at most.

        Returns how many are still under way (0 when all finished in time).
        """
        if self._in_flight:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=timeout)
            except TimeoutError:
                log.warning("x %d REST requests under way after %gs", self._in_flight, timeout)
        return self._in_flight

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Admit and count ``request``, or refuse it with 503 when the gate is closed."""
        if request.path in PROBES:
            return await handler(request)
        if not self._open:
            raise unavailable("the service is shutting down", self._retry_after)
        self._in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
