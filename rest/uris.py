"""User URIs in REST paths and bodies, and the absolute URLs the API emits.

docs/decisions.md "URLs and user ids": ``{userId}``, ``{otherUserId}`` and ``{participantId}``
arrive as ``tel:+1555…``, ``sip:…@…`` or a bare ``+1555…``, raw or percent-encoded.
They are compared in one canonical form (:func:`canonical_user`) and emitted
percent-encoded (:func:`quote_segment`). ``acr:auth`` / ``acr:Authorization``
stand for the caller's own user and are resolved by ``rest.auth``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit

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


@dataclass(frozen=True)
class ChannelPath:
    """What a URL inside the bridge's own Notification Channel space designates.

    ``user`` is None when the ``{userId}`` segment is not a user URI;
    ``channel_id`` is None (and ``callback`` False) for the channel list;
    ``callback`` is True only for ``…/channels/{channelId}/callback`` exactly.
    """

    user: UserUri | None
    channel_id: str | None
    callback: bool


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


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

    def channel_path(self, url: str) -> ChannelPath | None:
        """What ``url`` designates in ``{serverRoot}/notificationchannel/``, or None if outside.

        Every equivalent spelling designates the same thing (docs/decisions.md
        "URLs and user ids"): scheme and host in any case, the default port written or
        not, each path segment percent-encoded or not (either hex case), and
        the user compared by :func:`canonical_user` (``tel:+1…`` = ``+1…``).
        """
        try:
            parts = urlsplit(url.strip())
            root = urlsplit(self.root)
            if _origin(parts.scheme, parts.hostname, parts.port) != _origin(
                root.scheme, root.hostname, root.port
            ):
                return None
        except ValueError:  # a bad port
            return None
        prefix = [unquote(s) for s in root.path.split("/") if s]
        segments = [unquote(s) for s in parts.path.split("/")][1:]
        if segments[: len(prefix)] != prefix:
            return None
        rest = segments[len(prefix) :]
        if not rest or rest[0] != "notificationchannel":
            return None
        if len(rest) < 3:
            return ChannelPath(None, None, False)
        try:
            user: UserUri | None = canonical_user(rest[2])
        except InvalidUserUri:
            user = None
        channel_id = rest[4] if len(rest) > 4 and rest[3] == "channels" and rest[4] else None
        callback = (
            channel_id is not None
            and rest[1] == self.CHANNEL_VERSION
            and rest[5:] == ["callback"]
            and not parts.query
            and not parts.fragment
        )
        return ChannelPath(user, channel_id, callback)

    @property
    def path_prefix(self) -> str:
        """The path part of ``{serverRoot}`` (``""`` or ``/exampleAPI``)."""
        after_scheme = self.root.split("://", 1)[1]
        slash = after_scheme.find("/")
        return "" if slash < 0 else after_scheme[slash:]
