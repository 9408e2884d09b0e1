"""Composition root: builds the store, the REST app and (later) the SIP stack, and runs them."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bridge.config import Settings
from rest.app import make_app
from state.db import Database

log = logging.getLogger(__name__)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run the bridge until SIGINT/SIGTERM (or cancellation)."""
    database = Database(settings.database_url)
    version = await database.migrate()
    log.info("store %s at schema version %d", database.url.render_as_string(), version)
    app = make_app(settings, database)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
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
        await database.close()
