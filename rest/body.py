"""Request and response bodies: the OMA conventions (OMA REST_NetAPI_Common, docs/rest-formats.md).

* One root element per body: ``{"chatMessage": {...}}``.
* Repeated elements are always arrays on output; numbers and booleans are
  accepted native or quoted on input (pydantic lax mode) and emitted native.
* Content negotiation: a request body is ``application/json``, XML
  (``application/xml``, :mod:`rest.xmlbody`) or, for the creating POSTs,
  ``application/x-www-form-urlencoded`` (:mod:`rest.formbody`); anything else
  is 415. Responses are JSON unless the client's ``Accept`` prefers XML
  (:func:`preferred_format`); 406 when it admits neither. :func:`respond` is
  the one place a handler's answer is encoded: JSON is serialised by
  pydantic-core straight to bytes, XML from the same JSON-shaped dump.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from rest import formbody, xmlbody
from rest.errors import FORMAT_KEY, Handler, OMAFault, fault_from_validation, invalid_input
from rest.xmlbody import XML

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
UNNEGOTIATED_PATHS = frozenset({"/openapi.json", "/docs"})
"""Fixed formats (the OpenAPI document, its HTML page): ``Accept`` is not checked."""


class OMAModel(BaseModel):
    """Base of every OMA data structure: camelCase names, unknown elements refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The structure as JSON-ready data with OMA names, absent elements left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


M = TypeVar("M", bound=BaseModel)


def _is_json(content_type: str) -> bool:
    return content_type == JSON or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _read_document(
    request: web.Request,
    models: Mapping[str, type[BaseModel]],
    allow_empty: bool,
    form: bool,
) -> tuple[str, dict[str, Any]] | None:
    """The (root, content) of a single-root body whose root is a key of ``models``.

    JSON and XML always; form-encoded when ``form`` (the creating POSTs).
    """
    roots = tuple(models)
    data = await request.read()  # raises 413 past client_max_size
    if not data.strip():
        if allow_empty:
            return None
        raise invalid_input(" or ".join(roots), "missing request body")
    content_type = request.content_type
    if not _is_json(content_type):
        if xmlbody.is_xml(content_type):
            try:
                return xmlbody.read_document(data, models)
            except xmlbody.XMLBodyError as exc:
                raise invalid_input("body", str(exc)) from None
        if form and content_type == FORM:
            try:
                return formbody.read_form(data, models)
            except formbody.FormError as exc:
                raise invalid_input("body", str(exc)) from None
        raise OMAFault(415, "SVC0001", [f"unsupported media type {content_type!r}"])
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_input("body", f"malformed JSON: {exc}") from exc
    if not isinstance(doc, dict) or len(doc) != 1 or next(iter(doc)) not in roots:
        found = ", ".join(doc) if isinstance(doc, dict) else type(doc).__name__
        expected = " or ".join(repr(r) for r in roots)
        found = found or "none"
        raise invalid_input("body", f"expected one root element {expected}, found {found}")
    root = next(iter(doc))
    if not isinstance(doc[root], dict):
        raise invalid_input(root, "must be an object")
    return root, doc[root]


def _validate(model: type[M], root: str, content: dict[str, Any]) -> M:
    try:
        return model.model_validate(content)
    except ValidationError as exc:
        raise fault_from_validation(exc, root) from exc


async def parse_body(
    request: web.Request,
    model: type[M],
    root: str,
    *,
    allow_empty: bool = False,
    form: bool = False,
) -> M | None:
    """Read the request body as ``{root: model}``; raise the right OMA fault if it is not.

    Returns None for an empty body when ``allow_empty`` is set; ``form`` also
    accepts ``application/x-www-form-urlencoded`` (docs/rest-formats.md).
    """
    found = await _read_document(request, {root: model}, allow_empty, form)
    return None if found is None else _validate(model, root, found[1])


async def parse_body_choice(
    request: web.Request,
    models: Mapping[str, type[BaseModel]],
    *,
    allow_empty: bool = False,
    form: bool = False,
) -> BaseModel | None:
    """Read a body whose single root is any key of ``models`` (e.g. chatMessage|isComposing)."""
    found = await _read_document(request, models, allow_empty, form)
    if found is None:
        return None
    root, content = found
    return _validate(models[root], root, content)


def json_response(
    root: str,
    body: OMAModel | dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A response whose body is ``{root: body}``."""
    if isinstance(body, OMAModel):  # serialised by pydantic-core, no dict in between
        inner = body.model_dump_json(by_alias=True, exclude_none=True).encode()
        data = b"{" + json.dumps(root).encode() + b": " + inner + b"}"
    else:
        data = json.dumps({root: body}).encode()
    return web.Response(status=status, body=data, content_type=JSON, headers=headers)


def respond(
    request: web.Request,
    root: str,
    body: OMAModel | dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The answer ``{root: body}`` in the format the client asked for (JSON by default)."""
    if request.get(FORMAT_KEY) != XML:
        return json_response(root, body, status=status, headers=headers)
    if isinstance(body, OMAModel):
        data = xmlbody.render_model(root, body)
    else:
        data = xmlbody.render(root, body)
    return web.Response(status=status, body=data, content_type=XML, headers=headers)


def _accept_items(accept: str) -> list[tuple[str, float]]:
    items: list[tuple[str, float]] = []
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        items.append((media.lower(), q))
    return items


def _quality(items: list[tuple[str, float]], exact: set[str], suffix: str) -> float:
    """The q the client gives a format: exact type, ``+suffix``, else the wildcards."""
    specific = [q for m, q in items if m in exact or m.endswith(suffix)]
    if specific:
        return max(specific)
    wild = [q for m, q in items if m in {"*/*", "application/*"}]
    return max(wild) if wild else 0.0


def preferred_format(accept: str) -> str | None:
    """``application/json`` or ``application/xml`` as ``Accept`` prefers (JSON on ties), or None."""
    if not accept.strip():
        return JSON
    items = _accept_items(accept)
    q_json = _quality(items, {JSON}, "+json")
    q_xml = _quality(items, {XML, "text/xml"}, "+xml")
    if q_json <= 0 and q_xml <= 0:
        return None
    return XML if q_xml > q_json else JSON


@web.middleware
async def negotiation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Choose the response format (JSON or XML) from ``Accept``; 406 when neither fits."""
    accept = request.headers.get("Accept", "")
    if accept and request.path not in UNNEGOTIATED_PATHS:
        chosen = preferred_format(accept)
        if chosen is None:
            raise OMAFault(406, "SVC0001", [f"cannot produce {accept!r}"])
        if chosen == XML:
            request[FORMAT_KEY] = XML
    return await handler(request)
