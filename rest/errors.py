"""OMA faults (OMA REST_NetAPI_Common) and the one middleware that renders them.

Which fault for what: docs/protocol-mapping.md "REST faults".

Every 4xx/5xx answer carries ``{"requestError":
{"serviceException"|"policyException": {"messageId", "text", "variables"}}}``,
in XML (``common:requestError``, docs/rest-formats.md) when the request's
``Accept`` chose XML. Handlers raise :class:`OMAFault` (or a ``bridge.errors``
class, mapped in :data:`BRIDGE_ERROR_MAP`); aiohttp's own HTTP errors (unknown
route, wrong verb, oversize body) are turned into faults here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bridge import errors as berr
from rest import xmlbody

log = logging.getLogger(__name__)

FORMAT_KEY = web.RequestKey("oma_response_format", str)
"""Request slot set by ``rest.body.negotiation_middleware`` to ``application/xml`` when the
client prefers XML (absent: JSON)."""

SERVICE = "serviceException"
POLICY = "policyException"

# OMA REST_NetAPI_Common texts of the service and policy exceptions
TEXTS: dict[str, str] = {
    "SVC0001": "A service error occurred. Error code is %1",
    "SVC0002": "Invalid input value for message part %1",
    "SVC0003": "Invalid input value for message part %1, valid values are %2",
    "SVC0004": "No valid addresses provided in message part %1",
    "SVC0005": "Correlator %1 specified in message part %2 is a duplicate",
    "POL0001": "A policy error occurred. Error code is %1",
    "POL0002": "Privacy verification failed for address %1, request is refused",
    "POL0003": "Too many addresses specified in message part %1",
    "POL0004": "Unlimited notification request not supported",
    "POL0005": "Too many notification requests",
    "POL0008": "Charging is not supported",
    "POL0010": "Retention time interval expired",
    "POL0011": "Media type not supported",
}


class OMAFault(Exception):
    """An OMA ``requestError`` with its HTTP status; raise it from any handler."""

    def __init__(
        self,
        status: int,
        message_id: str,
        variables: Sequence[str] = (),
        *,
        text: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message_id = message_id
        self.kind = POLICY if message_id.startswith("POL") else SERVICE
        self.text = text if text is not None else TEXTS.get(message_id, "%1")
        self.variables = [str(v) for v in variables]
        self.headers = dict(headers or {})
        super().__init__(f"{status} {message_id} {self.variables}")

    def body(self) -> dict[str, Any]:
        """The JSON body ``{"requestError": {...}}``."""
        return {
            "requestError": {
                self.kind: {
                    "messageId": self.message_id,
                    "text": self.text,
                    "variables": self.variables,
                }
            }
        }

    def response(self, xml: bool = False) -> web.Response:
        """The aiohttp response carrying this fault (JSON, or XML when ``xml``)."""
        if xml:
            ((root, content),) = self.body().items()
            return web.Response(
                status=self.status,
                body=xmlbody.render(root, content),
                content_type=xmlbody.XML,
                headers=self.headers,
            )
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
            headers=self.headers,
        )


# --- constructors for the common cases ---------------------------------------


def invalid_input(part: str, detail: str | None = None) -> OMAFault:
    """400 SVC0002: a value in the request is invalid (``part`` names it)."""
    variables = [part] if detail is None else [part, detail]
    return OMAFault(400, "SVC0002", variables)


def invalid_enum(part: str, valid: Sequence[str]) -> OMAFault:
    """400 SVC0003: an enumeration value is not one of ``valid``."""
    return OMAFault(400, "SVC0003", [part, ", ".join(valid)])


def no_valid_address(part: str) -> OMAFault:
    """400 SVC0004: no valid address in ``part``."""
    return OMAFault(400, "SVC0004", [part])


def not_found(path: str) -> OMAFault:
    """404 SVC0001: no resource at ``path`` (never existed, deleted or expired)."""
    return OMAFault(404, "SVC0001", [f"resource not found: {path}"])


def method_not_allowed(method: str, allowed: Sequence[str]) -> OMAFault:
    """405 SVC0001 with the ``Allow`` header."""
    allow = ", ".join(sorted(set(allowed)))
    return OMAFault(
        405, "SVC0001", [f"method {method} not allowed; allowed: {allow}"], headers={"Allow": allow}
    )


def unauthorized(detail: str) -> OMAFault:
    """401 SVC0001: missing or wrong credentials."""
    return OMAFault(
        401,
        "SVC0001",
        [f"unauthorized: {detail}"],
        headers={"WWW-Authenticate": 'Basic realm="chat-bridge", Bearer realm="chat-bridge"'},
    )


def forbidden(detail: str) -> OMAFault:
    """403 POL0001: the caller may not act on this resource or user."""
    return OMAFault(403, "POL0001", [detail])


def unavailable(detail: str, retry_after: int) -> OMAFault:
    """503 SVC0001 with ``Retry-After``."""
    return OMAFault(503, "SVC0001", [detail], headers={"Retry-After": str(retry_after)})


def fault_from_bridge_error(exc: berr.BridgeError) -> OMAFault:
    """Map a ``bridge.errors`` exception to its OMA fault."""
    if isinstance(exc, berr.NotFound):
        return OMAFault(404, "SVC0001", [str(exc)])
    if isinstance(exc, berr.PolicyViolation):
        return OMAFault(403, exc.message_id, exc.variables or [exc.text])
    if isinstance(exc, berr.Conflict):
        return OMAFault(409, "POL0001", [str(exc)])
    if isinstance(exc, berr.Unavailable):
        return unavailable(str(exc), exc.retry_after)
    return OMAFault(500, "SVC0001", [type(exc).__name__])


def fault_from_validation(exc: ValidationError, root: str) -> OMAFault:
    """400 SVC0002/SVC0003 naming the first bad element of a pydantic validation."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in (root, *err["loc"]))
    if err["type"] in {"enum", "literal_error"}:
        expected = err.get("ctx", {}).get("expected", "")
        valid = [v.strip(" '") for v in str(expected).replace(" or ", ",").split(",") if v.strip()]
        return invalid_enum(loc, valid)
    if err["type"] == "user_uri":
        return no_valid_address(loc)
    if err["type"] == "extra_forbidden":
        return invalid_input(loc, "unknown element")
    if err["type"] == "missing":
        return invalid_input(loc, "missing mandatory element")
    return invalid_input(loc, err["msg"])


_HTTP_STATUS_FAULTS: dict[int, tuple[str, str]] = {
    400: ("SVC0001", "bad request"),
    404: ("SVC0001", "resource not found"),
    406: ("SVC0001", "not acceptable: only application/json or application/xml can be produced"),
    411: ("SVC0001", "length required"),
    413: ("SVC0001", "request entity too large"),
    415: ("SVC0001", "unsupported media type: send application/json or application/xml"),
}

_KEPT_HEADERS = {"Allow", "Retry-After", "WWW-Authenticate"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error on the way out into an OMA fault response (in the negotiated format)."""
    try:
        return await handler(request)
    except OMAFault as fault:
        return fault.response(_xml(request))
    except berr.BridgeError as exc:
        log.debug("x %s %s: %s", request.method, request.path, exc)
        return fault_from_bridge_error(exc).response(_xml(request))
    except web.HTTPMethodNotAllowed as exc:
        refused = method_not_allowed(request.method, sorted(exc.allowed_methods))
        return refused.response(_xml(request))
    except web.HTTPRequestEntityTooLarge:
        return OMAFault(413, "SVC0001", ["request entity too large"]).response(_xml(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message_id, detail = _HTTP_STATUS_FAULTS.get(exc.status, ("SVC0001", exc.reason))
        if exc.status == 404:
            detail = f"resource not found: {request.path}"
        keep = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}
        return OMAFault(exc.status, message_id, [detail], headers=keep).response(_xml(request))
    except Exception:
        log.exception("x unhandled error on %s %s", request.method, request.path)
        return OMAFault(500, "SVC0001", ["internal server error"]).response(_xml(request))


def _xml(request: web.Request) -> bool:
    return request.get(FORMAT_KEY) == xmlbody.XML
