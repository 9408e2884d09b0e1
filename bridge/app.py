"""Composition root: builds the store, the SIP stack and the REST app, and runs them."""

# Start-up order: store (migrated) -> SIP/MSRP listeners (and the conference focus over
# them, with its restart recovery) -> REST app with the chat
# service -> REST listener. Everything started is registered on one AsyncExitStack,
# so a failure at any step (a port in use, a ConfigError from make_app) releases
# what was already running, and shutdown runs in the reverse order.
#
# Shutdown (docs/configuration.md "Shutdown"): the first SIGTERM or SIGINT runs
# :func:`shut_down`, an ordered sequence over methods of the parts, bounded in all by
# ``shutdown_timeout``: drain (the REST gate answers 503 + Retry-After, open long polls
# answer ``[]``, new INVITEs get 503 + Retry-After, requests under way get
# ``shutdown_request_timeout`` to finish) -> end sessions (the chat service ends every live
# leg after telling its app, then the focus ends its conferences) -> flush (callback
# notifications due now) -> close (the exit stack, as before). A second signal, or the
# bound running out, exits at once: what was committed stays in the store for the restart.
#
# Garbage collection: the bridge allocates many short-lived objects per message
# (parsed SIP/MSRP frames, JSON bodies) and few long-lived cycles. Once start-up is
# complete, the objects alive then (modules, the app, caches) are frozen out of the
# collector's view and the generation-0 threshold is raised. Measured with
# `bench/chat_bench.py --count 3000 --sessions 2 --session-time 2 --seconds 8`:
# 451-495 msg/s and 1.98-2.18 ms of bridge CPU per message, against 425 msg/s and
# 2.31 ms without (confirmed sessions; the adhoc phase moved within its noise).

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from contextlib import AsyncExitStack

from aiohttp import web

from bridge.chat.assembly import ChatBridge
from bridge.config import Settings
from bridge.focus import ConferenceFocus, build_focus
from bridge.observability.metrics import Metrics
from bridge.observability.wiring import start_observability
from bridge.signalling.tls import http_tls
from bridge.signalling.wiring import SignallingSide, parser_limits, profile_of, start_signalling
from bridge.takeover import Takeover
from rest.app import NOTIFY_POLICY, REQUEST_GATE, make_app
from rest.chat_service import install_chat
from rest.handlers.channels import DELIVERY
from sip import limits
from sip.msrp import MSRPStack
from sip.stack import SipStack
from state.db import Database
from state.focus_store import SQLConferenceStore
from state.instances import Instances

log = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 50)
"""gc.set_threshold values once the bridge runs (CPython's defaults are 700, 10, 10)."""
CLOSE_RESERVE = 2.0
"""Seconds of ``shutdown_timeout`` kept for the close step (at most a quarter of it)."""
CLOSE_REQUEST_GRACE = 0.5
"""Seconds the REST listener's close waits for requests still running (then cancelled)."""


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run the bridge until SIGINT/SIGTERM (then shut down gracefully), or cancellation."""
    if settings.trace_sip:
        logging.getLogger("bridge.trace.sip").setLevel(logging.DEBUG)
    if settings.trace_msrp:
        logging.getLogger("bridge.trace.msrp").setLevel(logging.DEBUG)
    https = http_tls(settings)  # a bad certificate file stops the start before anything runs
    limits.configure(parser_limits(settings))  # before any parser meets a peer's input
    async with AsyncExitStack() as running:
        database = Database(settings.database_url)
        running.push_async_callback(database.close)
        version = await database.migrate()
        log.info("store %s at schema version %d", database.url.render_as_string(), version)
        # several instances (issue 10, docs/several-instances.md): this one's id and liveness
        # lock; recovery below ends only its own and provably dead instances' sessions
        instances = Instances(database, settings.instance_id, heartbeat=settings.instance_heartbeat)
        await instances.start()
        running.push_async_callback(instances.close)
        settings = settings.model_copy(update={"instance_id": instances.id})
        recover = await instances.recoverable()
        conferences = SQLConferenceStore(database, owner=instances.id, recover=recover)

        focus_factory = None
        if settings.focus_enabled:

            def focus_factory(sip: SipStack, msrp: MSRPStack) -> ConferenceFocus:
                return build_focus(
                    sip,
                    msrp,
                    factory_uri=settings.conference_factory_uri,
                    profile=profile_of(settings),
                    store=conferences,
                    max_size=settings.chat_group_max_size,
                    invite_timeout=settings.chat_invite_timeout,
                )

        # SIP (UDP+TCP) and MSRP listeners; the focus, if any, gets the requests it owns
        metrics = Metrics()
        side = await start_signalling(
            settings, focus_factory, sip_counters=metrics.sip, msrp_counters=metrics.msrp
        )
        running.push_async_callback(side.close)
        readiness = start_observability(settings, database, side, metrics, running)
        if isinstance(side.focus, ConferenceFocus):
            await side.focus.start()  # ends the conferences a crashed run left live
            log.info("conference focus at %s", settings.conference_factory_uri)
        for transport, host, port in side.sip.addresses:
            log.info("SIP listening on %s %s:%d", transport, host, port)
        log.info("SIP outbound proxy %s", side.sip.outbound_proxy)

        app = make_app(settings, database, metrics=metrics, readiness=readiness)
        chat = install_chat(app, side.signalling, recover=recover)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_REQUEST_GRACE)
        await runner.setup()
        running.push_async_callback(runner.cleanup)
        await instances.release_dead()  # their recovery is committed
        if instances.shared:  # a survivor recovers dead peers (docs/several-instances.md)
            takeover = Takeover.assemble(instances, chat, database, side.focus, conferences)
            takeover.start(settings.instance_takeover_interval)
            running.push_async_callback(takeover.stop)
        await web.TCPSite(runner, settings.http_host, settings.http_port, ssl_context=https).start()
        # the notify policy refuses the bridge's own listeners, ports picked as 0 included
        policy = app[NOTIFY_POLICY]
        for _transport, host, port in side.sip.addresses:
            policy.add_listener(host, port)
        policy.add_listener(settings.msrp_host, side.msrp.port)
        if side.msrp.tls_port is not None:
            policy.add_listener(settings.msrp_host, side.msrp.tls_port)
        for address in runner.addresses:
            policy.add_listener(str(address[0]), int(address[1]))
        log.info(
            "REST API on %s://%s:%d, serverRoot %s",
            "https" if settings.http_tls_cert_file else "http",
            settings.http_host,
            settings.http_port,
            settings.server_root,
        )
        if settings.http_host in {"0.0.0.0", "::"} and "//127.0.0.1:" in settings.server_root:
            log.warning("serverRoot is loopback on a wildcard listener: set server_root")

        stop = asyncio.Event()
        instances.on_lost = stop.set
        _handle_signals(stop, settings.shutdown_timeout)
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if ready is not None:
            ready.set()
        await stop.wait()
        await shut_down(settings, app, side, chat)
        log.info("closing")


def _handle_signals(stop: asyncio.Event, bound: float) -> None:
    """SIGINT/SIGTERM: the first sets ``stop`` and arms the bound; a second exits at once."""
    loop = asyncio.get_running_loop()

    def received(sig: signal.Signals) -> None:
        if stop.is_set():
            _exit_now(f"second {sig.name}: exiting at once", 128 + sig.value)
        log.info("%s: shutting down within %gs (send it again to exit at once)", sig.name, bound)
        stop.set()
        loop.call_later(bound, _exit_now, f"shutdown not done after {bound:g}s: exiting", 1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, received, sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass


def _exit_now(why: str, code: int) -> None:
    """Leave the process now (what is committed stays in the store for the restart)."""
    log.warning("x %s", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def shut_down(
    settings: Settings, app: web.Application, side: SignallingSide, chat: ChatBridge
) -> None:
    """The graceful shutdown's ordered steps before the close (module comment), within
    ``shutdown_timeout`` less the close step's reserve."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + settings.shutdown_timeout - min(CLOSE_RESERVE, settings.shutdown_timeout / 4)

    def left() -> float:
        return max(0.0, deadline - loop.time())

    # 1. drain: no new work; open long polls answered; requests under way finish
    gate, delivery = app[REQUEST_GATE], app[DELIVERY]
    gate.close(settings.shutdown_retry_after)
    delivery.drain()
    if side.router is not None:
        side.router.drain(settings.shutdown_retry_after)
    running = await gate.wait_idle(min(settings.shutdown_request_timeout, left()))
    # 2. end sessions: apps told, then BYE / CANCEL / 480 on the wire; the focus's conferences
    report = await chat.shutdown(side.signalling.live_legs())
    pending = await side.signalling.settle(left())
    if isinstance(side.focus, ConferenceFocus):
        await asyncio.wait([asyncio.ensure_future(side.focus.close())], timeout=left())
    unfinished = await chat.settle(left())
    # 3. flush: the notifications due now (SessionEnded among them) are tried once more
    queued = await delivery.flush(left())
    log.info(
        "- shutdown after %.2fs: %d requests cut short, %d sessions ended, %d SIP and %d chat"
        " tasks unfinished, %d notifications left queued",
        loop.time() - began,
        running,
        report.sessions_ended,
        pending,
        unfinished,
        queued,
    )
