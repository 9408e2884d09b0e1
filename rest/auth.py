"""Authentication and authorization of REST callers (DECISIONS.md "Authentication").

STUB laid down by the skeleton: canonicalizes ``{userId}`` only. The REST-core
work completes it (Basic/Bearer credentials, acr:auth, 401/403).
"""

from __future__ import annotations

from aiohttp import web

from bridge.ids import UserUri
from rest.errors import invalid_input
from rest.uris import InvalidUserUri, canonical_user


def acting_user(request: web.Request) -> UserUri:
    """The canonical user the request acts for (``{userId}`` after authorization)."""
    try:
        return canonical_user(request.match_info["userId"])
    except InvalidUserUri as exc:
        raise invalid_input("userId", str(exc)) from exc
