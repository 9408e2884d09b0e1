"""Builds the operational side of a running bridge (docs/operations.md): the /ready checks,
the IMS core's OPTIONS pinger and the event-loop lag sampler. Called by ``bridge.app``."""

from __future__ import annotations

from contextlib import AsyncExitStack

from bridge.config import Settings
from bridge.observability.looplag import LoopLag
from bridge.observability.metrics import Metrics
from bridge.observability.readiness import ImsPinger, Readiness, listener_check, store_check
from bridge.signalling.wiring import SignallingSide
from state.db import Database

__all__ = ["start_observability"]


def start_observability(
    settings: Settings,
    database: Database,
    side: SignallingSide,
    metrics: Metrics,
    running: AsyncExitStack,
) -> Readiness:
    """The readiness checks of /ready, the IMS core's OPTIONS pinger and the event-loop lag
    sampler (docs/operations.md); the tasks stop with ``running``."""
    readiness = Readiness()
    readiness.add("store", store_check(database.ping, settings.ready_store_timeout))
    readiness.add("sip", listener_check(lambda: side.sip.transport.listening))
    readiness.add("msrp", listener_check(lambda: side.msrp.listening))
    proxy = settings.sip_outbound_proxy
    if proxy and settings.ims_ping_interval > 0:
        sip = side.sip

        async def ping() -> object:
            return await sip.send_request("OPTIONS", proxy, sender=f"sip:{sip.domain}")

        pinger = ImsPinger(
            ping,
            target=proxy,
            interval=settings.ims_ping_interval,
            timeout=settings.ims_ping_timeout,
            on_change=lambda up: metrics.ims_reachable.set(1 if up else 0),
        )
        pinger.start()
        running.push_async_callback(pinger.stop)
        readiness.add("ims_core", pinger.check)
    lag = LoopLag(settings.loop_lag_interval, metrics.loop_lag)
    lag.start()
    running.push_async_callback(lag.stop)
    return readiness
