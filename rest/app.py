"""The aiohttp application: middlewares, shared resources and the route table.

Shared resources live in ``web.AppKey`` slots (below). Each handler module in
``rest.handlers`` exposes ``setup(app, prefix)``, which adds its routes under
``prefix`` (the path part of ``{serverRoot}``) and any ``cleanup_ctx`` it owns.
``rest.openapi`` documents the routes once they are all added (``GET /openapi.json``,
``GET /docs``).
"""

from __future__ import annotations

from aiohttp import web

from bridge.config import Settings
from bridge.observability.metrics import Metrics
from bridge.observability.readiness import Readiness, store_check
from rest.body import negotiation_middleware
from rest.errors import fault_middleware
from rest.gate import RequestGate
from rest.notify_policy import NotifyPolicy
from rest.uris import ServerRoot
from state.db import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
SERVER_ROOT = web.AppKey("server_root", ServerRoot)
NOTIFY_POLICY = web.AppKey("notify_policy", NotifyPolicy)
"""Where notifyURLs may point (docs/notify-policy.md); ``bridge.app`` adds the bound ports."""
REQUEST_GATE = web.AppKey("request_gate", RequestGate)
"""Admits REST requests until the shutdown closes it (``rest.gate``; ``bridge.app``)."""


async def health(request: web.Request) -> web.Response:
    """``GET /health``: 200 when the store answers, 503 otherwise."""
    ok = await request.app[DATABASE].ping()
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "store": ok}, status=200 if ok else 503
    )


def make_app(
    settings: Settings,
    database: Database,
    *,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
) -> web.Application:
    """Build the REST application over an already migrated ``database``.

    ``metrics`` and ``readiness`` come from ``bridge.app`` (docs/operations.md); without
    them the app gets its own registry and a readiness of the store alone.
    """
    from functools import partial

    from rest import auth, observability, openapi
    from rest.handlers import channels, chat, subscriptions
    from state import stats

    metrics = metrics or Metrics()
    metrics.read_store_with(
        partial(stats.live_sessions, database), partial(stats.outbox_backlog, database)
    )
    if readiness is None:
        readiness = Readiness()
        readiness.add("store", store_check(database.ping, settings.ready_store_timeout))
    gate = RequestGate()
    readiness.add("shutdown", gate.check)  # not ready once the graceful shutdown began
    app = web.Application(
        middlewares=[
            observability.observe_middleware(metrics, log_access=settings.access_log),
            fault_middleware,
            negotiation_middleware,
            gate.middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[REQUEST_GATE] = gate
    app[SETTINGS] = settings
    app[DATABASE] = database
    root = ServerRoot(settings.server_root)
    app[SERVER_ROOT] = root
    app[NOTIFY_POLICY] = NotifyPolicy.from_settings(settings)
    app.router.add_get("/health", health)
    observability.setup(app, metrics, readiness)
    auth.setup(app, settings)  # before any route module: every resource needs it
    prefix = root.path_prefix
    for module in (subscriptions, channels, chat):
        module.setup(app, prefix)
    openapi.add_routes(app)
    openapi.publish(app, root.root, app[auth.AUTHENTICATOR].enabled)  # every route is in
    return app
