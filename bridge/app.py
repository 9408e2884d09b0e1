"""Composition root: builds the store, the SIP stack and the REST app, and runs them."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bridge.config import Settings
from bridge.signalling.wiring import start_signalling
from rest.app import make_app
from rest.chat_service import install_chat
from state.db import Database

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run the bridge until SIGINT/SIGTERM (or cancellation)."""
    database = Database(settings.database_url)
    version = await database.migrate()
    log.info("store %s at schema version %d", database.url.render_as_string(), version)
    if settings.trace_sip:
        logging.getLogger("bridge.trace.sip").setLevel(logging.DEBUG)
    if settings.trace_msrp:
        logging.getLogger("bridge.trace.msrp").setLevel(logging.DEBUG)
    try:
        side = await start_signalling(settings)  # SIP (UDP+TCP) and MSRP listeners
    except OSError:
        await database.close()
        raise
    for transport, host, port in side.sip.addresses:
        log.info("SIP listening on %s %s:%d", transport, host, port)
    log.info("SIP outbound proxy %s", side.sip.outbound_proxy)
    app = make_app(settings, database)
    install_chat(app, side.signalling)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        await side.close()
        await database.close()
        raise
    log.info(
        "REST API on http://%s:%d, serverRoot %s",
        settings.http_host,
        settings.http_port,
        settings.server_root,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()
        await side.close()
        await database.close()
