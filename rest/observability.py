"""REST side of operations (docs/operations.md): ``/metrics``, ``/ready``, request ids,
the access log and the REST metrics.

:func:`observe_middleware` runs first (outermost), so it sees the status the fault
middleware rendered. Per request it takes the id from a sane ``X-Request-Id`` (1-128
characters of ``A-Za-z0-9._:-``) or makes one, keeps it in ``bridge.observability.logs
.REQUEST_ID`` for every log line of the request, returns it in the ``X-Request-Id``
response header (also on long-poll answers written early, through
``on_response_prepare``), counts the request in ``chat_bridge_http_requests_total`` and
``chat_bridge_http_request_duration_seconds`` by route *template* (never the path: it
holds user ids), and writes one access line on ``bridge.access``.

``GET /metrics`` (Prometheus text format) and ``GET /ready`` need no credentials, like
``/health``; with ``metrics_require_auth`` ``/metrics`` asks the REST credentials.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from bridge.observability.logs import REQUEST_ID
from bridge.observability.metrics import CONTENT_TYPE, UNMATCHED, Metrics
from bridge.observability.readiness import Readiness
from rest.app import SETTINGS
from rest.auth import AUTHENTICATOR
from rest.errors import Handler

__all__ = [
    "METRICS",
    "READINESS",
    "REQUEST_ID_HEADER",
    "observe_middleware",
    "request_id",
    "route_of",
    "setup",
]

access_log = logging.getLogger("bridge.access")

METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
REQUEST_KEY = web.RequestKey("request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
METRICS_PATH = "/metrics"
READY_PATH = "/ready"
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
CLIENT_GONE = 499
"""The status counted (and logged) for a request whose client left before the answer."""


def request_id(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when sane, else a new random one."""
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return secrets.token_hex(8)


def route_of(request: web.Request) -> str:
    """The route template the request matched (``/chat/v1/{userId}/...``), or ``unmatched``."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


def observe_middleware(metrics: Metrics, *, log_access: bool = True) -> Middleware:
    """The outermost middleware (module docstring)."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_KEY] = rid
        token = REQUEST_ID.set(rid)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            seconds = time.perf_counter() - started
            route = route_of(request)
            metrics.http.observe(request.method, route, status, seconds)
            if log_access:
                access_log.info(
                    "%s %s %d %.1fms id=%s",
                    request.method,
                    route,
                    status,
                    seconds * 1000,
                    rid,
                    extra={
                        "request_id": rid,
                        "method": request.method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                    },
                )
            REQUEST_ID.reset(token)

    return observe


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_KEY)
    if rid is not None and REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = rid


async def serve_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every instrument in the Prometheus text format."""
    if request.app[SETTINGS].metrics_require_auth:
        authn = request.app[AUTHENTICATOR]
        if authn.enabled:
            authn.authenticate(request.headers.get(hdrs.AUTHORIZATION))
    body = await request.app[METRICS].scrape()
    response = web.Response(body=body)
    response.headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE
    return response


async def serve_ready(request: web.Request) -> web.Response:
    """``GET /ready``: 200 when every readiness check passes, else 503 with the reasons."""
    reasons = await request.app[READINESS].reasons()
    if reasons:
        return web.json_response({"status": "unavailable", "reasons": reasons}, status=503)
    return web.json_response({"status": "ok", "reasons": {}})


def setup(app: web.Application, metrics: Metrics, readiness: Readiness) -> None:
    """Keep ``metrics`` and ``readiness`` on ``app``, add the routes and the header hook.
    The middleware is put first by ``rest.app.make_app``."""
    app[METRICS] = metrics
    app[READINESS] = readiness
    app.router.add_get(METRICS_PATH, serve_metrics)
    app.router.add_get(READY_PATH, serve_ready)
    app.on_response_prepare.append(_add_request_id)
