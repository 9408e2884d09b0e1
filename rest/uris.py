"""User URIs in REST paths and bodies, and the absolute URLs the API emits.

DECISIONS.md "REST surface": ``{userId}``, ``{otherUserId}`` and ``{participantId}``
arrive as ``tel:+1555…``, ``sip:…@…`` or a bare ``+1555…``, raw or percent-encoded.
They are compared in one canonical form (:func:`canonical_user`) and emitted
percent-encoded (:func:`quote_segment`). ``acr:auth`` / ``acr:Authorization``
stand for the caller's own user and are resolved by ``rest.auth``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, unquote

from bridge.ids import UserUri

ACR_AUTH = frozenset({"acr:auth", "acr:authorization"})

_TEL_VISUAL = re.compile(r"[-.() ]")
_E164 = re.compile(r"^\+[0-9]{1,20}$")
_LOCAL_NUMBER = re.compile(r"^[0-9*#]{1,32}$")
_SIP_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:[0-9]{1,5})?$")


class InvalidUserUri(ValueError):
    """The text is not a user URI the bridge can serve."""


def is_acr_auth(text: str) -> bool:
    """True for the pseudo user ids that mean "the caller's own user"."""
    return unquote(text).strip().lower() in ACR_AUTH


def canonical_user(text: str) -> UserUri:
    """Return the canonical form of a user URI given raw or percent-encoded.

    ``+15551230001`` / ``tel:+1-555-123-0001`` → ``tel:+15551230001``;
    ``sip:+15551230001@ims.test;user=phone`` → ``tel:+15551230001``;
    ``sip:Alice@IMS.test;transport=tcp`` → ``sip:Alice@ims.test``.
    Raises :class:`InvalidUserUri` for anything else.
    """
    raw = unquote(text).strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1].strip()
    if not raw:
        raise InvalidUserUri("empty user URI")
    lower = raw.lower()
    if lower.startswith("tel:"):
        number = _TEL_VISUAL.sub("", raw[4:].split(";", 1)[0])
        if _E164.match(number) or _LOCAL_NUMBER.match(number):
            return UserUri("tel:" + number)
        raise InvalidUserUri(f"invalid tel URI: {text!r}")
    if lower.startswith(("sip:", "sips:")):
        scheme, rest = raw.split(":", 1)
        addr, _, params = rest.partition(";")
        addr = addr.split("?", 1)[0]
        if "@" not in addr:
            raise InvalidUserUri(f"SIP URI without user part: {text!r}")
        user, host = addr.rsplit("@", 1)
        user = user.split(":", 1)[0]  # drop a password
        if not user or not _SIP_USER.match(user) or not _HOST.match(host):
            raise InvalidUserUri(f"invalid SIP URI: {text!r}")
        host = host.lower()
        param_names = {p.split("=", 1)[0].strip().lower(): p for p in params.split(";") if p}
        number = _TEL_VISUAL.sub("", user)
        if "user" in param_names and param_names["user"].lower().endswith("=phone"):
            if _E164.match(number):
                return UserUri("tel:" + number)
        if _E164.match(number) and user == number:
            return UserUri("tel:" + number)
        return UserUri(f"{scheme.lower()}:{user}@{host}")
    number = _TEL_VISUAL.sub("", raw)
    if _E164.match(number):
        return UserUri("tel:" + number)
    raise InvalidUserUri(f"not a tel: or sip: URI: {text!r}")


_SAFE_SEGMENT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


@lru_cache(maxsize=16384)
def _quote_cached(text: str) -> str:
    return quote(text, safe="")


def quote_segment(text: str) -> str:
    """Percent-encode one path segment (``tel:+1`` → ``tel%3A%2B1``)."""
    if _SAFE_SEGMENT.issuperset(text):  # ids and literals: nothing to encode
        return text
    if len(text) > 256:  # not worth a cache entry (and the cache must stay small)
        return quote(text, safe="")
    return _quote_cached(text)  # user URIs repeat: each is encoded once


class ServerRoot:
    """Builds the absolute URLs of every resource from ``{serverRoot}``."""

    CHAT_VERSION = "v1"
    CHANNEL_VERSION = "v1"

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _join(self, *segments: str) -> str:
        return self.root + "/" + "/".join(quote_segment(s) for s in segments)

    def chat(self, user: str, *segments: str) -> str:
        """``{serverRoot}/chat/v1/{user}/{segments…}``, each segment percent-encoded."""
        return self._join("chat", self.CHAT_VERSION, user, *segments)

    def channels(self, user: str, *segments: str) -> str:
        """``{serverRoot}/notificationchannel/v1/{user}/channels/{segments…}``."""
        return self._join("notificationchannel", self.CHANNEL_VERSION, user, "channels", *segments)

    @property
    def path_prefix(self) -> str:
        """The path part of ``{serverRoot}`` (``""`` or ``/exampleAPI``)."""
        after_scheme = self.root.split("://", 1)[1]
        slash = after_scheme.find("/")
        return "" if slash < 0 else after_scheme[slash:]
