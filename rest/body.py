"""JSON bodies: the OMA conventions for requests and responses (oma-chat-api.md §7).

* One root element per body: ``{"chatMessage": {...}}``.
* Repeated elements are always arrays on output; numbers and booleans are
  accepted native or quoted on input (pydantic lax mode) and emitted native.
* Content negotiation: requests must be ``application/json`` (415 otherwise;
  XML and form encoding come later), responses are JSON (406 if the client's
  ``Accept`` excludes it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from rest.errors import Handler, OMAFault, fault_from_validation, invalid_input

JSON = "application/json"


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
    request: web.Request, roots: Sequence[str], allow_empty: bool
) -> tuple[str, dict[str, Any]] | None:
    """The (root, content) of a single-root JSON body whose root is one of ``roots``."""
    data = await request.read()  # raises 413 past client_max_size
    if not data.strip():
        if allow_empty:
            return None
        raise invalid_input(" or ".join(roots), "missing request body")
    if not _is_json(request.content_type):
        raise OMAFault(415, "SVC0001", [f"unsupported media type {request.content_type!r}"])
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
    request: web.Request, model: type[M], root: str, *, allow_empty: bool = False
) -> M | None:
    """Read the request body as ``{root: model}``; raise the right OMA fault if it is not.

    Returns None for an empty body when ``allow_empty`` is set.
    """
    found = await _read_document(request, (root,), allow_empty)
    return None if found is None else _validate(model, root, found[1])


async def parse_body_choice(
    request: web.Request, models: Mapping[str, type[BaseModel]], *, allow_empty: bool = False
) -> BaseModel | None:
    """Read a body whose single root is any key of ``models`` (e.g. chatMessage|isComposing)."""
    found = await _read_document(request, tuple(models), allow_empty)
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


def accepts_json(accept: str) -> bool:
    """True if an ``Accept`` header value admits ``application/json``."""
    if not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and (media in {"*/*", "application/*", JSON} or media.endswith("+json")):
            return True
    return False


@web.middleware
async def negotiation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """406 when the client accepts no JSON (checked before the handler runs)."""
    if not accepts_json(request.headers.get("Accept", "")):
        raise OMAFault(406, "SVC0001", [f"cannot produce {request.headers['Accept']!r}"])
    return await handler(request)
