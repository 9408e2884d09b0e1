"""Authentication and authorization of REST callers (docs/decisions.md "Authentication").

Every credential in ``Settings.credentials`` is HTTP Basic (username and
password) or a Bearer token, and lists the user URIs it may act for:
canonical URIs or ``fnmatch`` patterns matched against the canonical form
(``tel:+1555*``, ``sip:*@ims.test``, ``*``). The first entry is the user that
``acr:auth`` / ``acr:Authorization`` resolve to (OMA REST Chat v1.0 Appendix G); when it is
a pattern, those pseudo users are refused (403).

One middleware runs after routing, for every route except ``/health``, ``/ready``,
``/metrics`` (docs/operations.md), ``/openapi.json`` and ``/docs``
(chat, subscriptions and notification channels alike):

* missing or wrong credentials → 401 SVC0001 with ``WWW-Authenticate``;
* a ``{userId}`` outside the credential's users → 403 POL0001;
* an invalid ``{userId}`` → 400 SVC0002.

The resolved user is kept on the request; handlers get it from
:func:`acting_user`. Secrets are compared in constant time, against every
configured credential, so the time taken does not tell which one nearly matched.

With no credential configured and a loopback-only listener, authentication is
off (logged once at start-up, INFO); without credentials on any other listener
the application refuses to start (``ConfigError``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aiohttp import hdrs, web

from bridge.config import Credential, Settings
from bridge.errors import ConfigError
from bridge.ids import UserUri
from rest.errors import Handler, forbidden, invalid_input, unauthorized
from rest.uris import InvalidUserUri, canonical_user, is_acr_auth

log = logging.getLogger(__name__)

_GLOB = frozenset("*?[")
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json", "/docs"})
"""Served without this middleware's check (``/metrics`` checks itself with
``metrics_require_auth``: rest.observability)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the users its credential may act for."""

    name: str
    patterns: tuple[str, ...]

    @property
    def auth_user(self) -> UserUri | None:
        """The user ``acr:auth`` stands for, or None when the first entry is a pattern."""
        first = self.patterns[0]
        return None if _GLOB & set(first) else UserUri(first)

    def may_act_for(self, user: UserUri) -> bool:
        """True if ``user`` (canonical) is one of this caller's users."""
        return any(fnmatchcase(user, p) for p in self.patterns)


@dataclass(frozen=True)
class _Entry:
    kind: str
    secret: bytes
    principal: Principal


def _normalize_pattern(entry: str) -> str:
    if _GLOB & set(entry):
        return entry
    try:
        return canonical_user(entry)
    except InvalidUserUri as exc:
        raise ConfigError(f"credential user {entry!r} is not a user URI or pattern") from exc


def _compile(index: int, cred: Credential) -> _Entry:
    patterns = tuple(_normalize_pattern(u) for u in cred.users)
    if cred.kind == "basic":
        if not cred.username or cred.password is None or ":" in cred.username:
            raise ConfigError(f"basic credential #{index} needs a username (no ':') and password")
        secret = f"{cred.username}:{cred.password.get_secret_value()}".encode()
        name = f"basic:{cred.username}"
    else:
        if cred.token is None or not cred.token.get_secret_value():
            raise ConfigError(f"bearer credential #{index} needs a token")
        secret = cred.token.get_secret_value().encode()
        name = f"bearer#{index}"
    return _Entry(cred.kind, secret, Principal(name, patterns))


class Authenticator:
    """Checks ``Authorization`` headers against the configured credentials."""

    def __init__(self, credentials: list[Credential]) -> None:
        self._entries = [_compile(i, c) for i, c in enumerate(credentials)]

    @property
    def enabled(self) -> bool:
        """False when no credential is configured (loopback-only embedded mode)."""
        return bool(self._entries)

    def authenticate(self, header: str | None) -> Principal:
        """The caller behind an ``Authorization`` value; raises 401 otherwise (RFC 7617/6750)."""
        if not header:
            raise unauthorized("credentials required")
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            try:
                secret = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise unauthorized("malformed Basic credentials") from exc
        elif scheme == "bearer":
            secret = value.encode()
        else:
            raise unauthorized(f"unsupported authorization scheme {scheme!r}")
        found: Principal | None = None
        for entry in self._entries:  # no early exit: same work whichever entry matches
            same = hmac.compare_digest(entry.secret, secret)
            if same and entry.kind == scheme and found is None:
                found = entry.principal
        if found is None:
            log.info("x %s credentials refused", scheme)
            raise unauthorized("wrong credentials")
        return found


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PRINCIPAL = web.RequestKey("principal", Principal)
ACTING_USER = web.RequestKey("acting_user", str)


def resolve_user(raw: str, principal: Principal | None) -> UserUri:
    """The canonical ``{userId}``, with ``acr:auth`` resolved and authorization checked."""
    if is_acr_auth(raw):
        if principal is None:
            raise forbidden("acr:auth needs an authenticated caller (authentication is off)")
        user = principal.auth_user
        if user is None:
            raise forbidden("acr:auth: the credential is not bound to one user")
        return user
    try:
        user = canonical_user(raw)
    except InvalidUserUri as exc:
        raise invalid_input("userId", str(exc)) from exc
    if principal is not None and not principal.may_act_for(user):
        raise forbidden(f"not allowed to act for {user}")
    return user


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate the caller and authorize ``{userId}`` before the handler runs."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    authn = request.app[AUTHENTICATOR]
    principal: Principal | None = None
    if authn.enabled:
        principal = authn.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        request[PRINCIPAL] = principal
    raw = request.match_info.get("userId")
    if raw is not None:
        request[ACTING_USER] = resolve_user(raw, principal)
    return await handler(request)


def acting_user(request: web.Request) -> UserUri:
    """The canonical user the request acts for (``{userId}`` after authorization)."""
    user = request.get(ACTING_USER)
    if user is None:
        if request.app.get(AUTHENTICATOR) is not None:
            raise RuntimeError("acting_user() on a route without {userId}")
        # auth middleware not installed (bare test apps): canonicalize only
        return resolve_user(request.match_info["userId"], None)
    return UserUri(user)


def principal(request: web.Request) -> Principal | None:
    """The authenticated caller, or None when authentication is off."""
    return request.get(PRINCIPAL)


def setup(app: web.Application, settings: Settings) -> None:
    """Install the authenticator and its middleware (once); refuse an open public listener."""
    if AUTHENTICATOR in app:
        return
    authn = Authenticator(settings.credentials)
    if not authn.enabled:
        if not settings.loopback_only:
            raise ConfigError(
                f"no credentials configured and the REST listener {settings.http_host!r} is not"
                " loopback-only: set CHAT_BRIDGE_CREDENTIALS"
            )
        log.info(
            "- authentication is OFF: no credentials configured, listening on loopback %s only",
            settings.http_host,
        )
    app[AUTHENTICATOR] = authn
    app.middlewares.append(auth_middleware)
