"""MSRP URIs and paths (RFC 4975 §6, §9; RFC 4976 §5).

# Why this shape
#
# An MSRP URI names a hop: ``msrp://host:port/session-id;tcp``. Relay URIs
# (RFC 4976) have no session-id (``msrp://relay:2855;tcp``) or carry the
# relay's own one. Paths (To-Path, From-Path, SDP a=path) are space-separated
# URI lists. Equality follows RFC 4975 §6.1: scheme, host (case-insensitive),
# port, session-id (case-sensitive) and transport; userinfo and other
# parameters do not count. Session matching "sessmatch" (RFC 4975 §5.4 as
# relaxed by RFC 6714 and real SBCs) compares the session-id only, because
# media anchoring may rewrite the authority (docs/protocol-mapping.md "Interoperability rules").
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import NewType

from sip.errors import CodecError

SessionId = NewType("SessionId", str)
"""The session-id part of an MSRP URI (RFC 4975 §6)."""

MSRP_RELAY_PORT = 2855
"""Default port for URIs without one (RFC 4976 §12)."""

_SESSION_ID = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,=:@/]+")
_URI = re.compile(
    r"(?P<scheme>msrps?)://"
    r"(?:(?P<user>[^@/;\s]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:/(?P<session>[^;\s]+))?"
    r";(?P<params>[^\s]+)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class MSRPURI:
    """One MSRP URI (RFC 4975 §9): ``scheme://[user@]host[:port][/session];transport``."""

    host: str
    port: int | None = None
    session_id: SessionId | None = None
    transport: str = "tcp"
    scheme: str = "msrp"
    user: str | None = None
    params: tuple[str, ...] = ()

    @property
    def effective_port(self) -> int:
        """The port to connect to: the explicit one or 2855 (RFC 4976 §12)."""
        return self.port if self.port is not None else MSRP_RELAY_PORT

    @property
    def authority(self) -> tuple[str, int]:
        """``(host, port)`` for a TCP connection, host lower-cased and unbracketed."""
        return (self.host.strip("[]").lower(), self.effective_port)

    def same_hop(self, other: MSRPURI) -> bool:
        """RFC 4975 §6.1 equality: scheme, host, port, session-id, transport."""
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.host.lower() == other.host.lower()
            and self.effective_port == other.effective_port
            and self.session_id == other.session_id
            and self.transport.lower() == other.transport.lower()
        )

    def __str__(self) -> str:
        return serialize_uri(self)


def parse_uri(text: str) -> MSRPURI:
    """Parse one MSRP URI (RFC 4975 §9); raises CodecError."""
    m = _URI.fullmatch(text.strip())
    if m is None:
        raise CodecError(f"invalid MSRP URI: {text!r}")
    port: int | None = None
    if m.group("port") is not None:
        port = int(m.group("port"))
        if not 0 < port < 65536:
            raise CodecError(f"invalid MSRP URI port: {text!r}")
    session = m.group("session")
    if session is not None and _SESSION_ID.fullmatch(session) is None:
        raise CodecError(f"invalid MSRP session-id: {text!r}")
    params = m.group("params").split(";")
    transport = params[0]
    if not transport or not transport.replace("-", "").isalnum():
        raise CodecError(f"invalid MSRP URI transport: {text!r}")
    # interned: on the embedded default both ends of a member's session parse each
    # other's path in one process (docs/group-chat.md, "Memory")
    return MSRPURI(
        host=sys.intern(m.group("host")),
        port=port,
        session_id=SessionId(sys.intern(session)) if session is not None else None,
        transport=sys.intern(transport),
        scheme=m.group("scheme").lower(),
        user=m.group("user"),
        params=tuple(params[1:]),
    )


def serialize_uri(uri: MSRPURI) -> str:
    """Render an MSRP URI (RFC 4975 §9)."""
    user = "" if uri.user is None else f"{uri.user}@"
    port = "" if uri.port is None else f":{uri.port}"
    session = "" if uri.session_id is None else f"/{uri.session_id}"
    params = "".join(f";{p}" for p in uri.params) if uri.params else ""
    return f"{uri.scheme}://{user}{uri.host}{port}{session};{uri.transport}{params}"


def parse_path(text: str) -> tuple[MSRPURI, ...]:
    """Parse a space-separated URI list (To-Path, From-Path, Use-Path, a=path)."""
    # cached: a session repeats the same paths in every frame; only values of a sane
    # length, as the cache keeps its keys alive (a frame may be megabytes long)
    if len(text) <= _CACHED_LENGTH:
        return _cached_path(text)
    return _parse_path(text)


def _parse_path(text: str) -> tuple[MSRPURI, ...]:
    items = text.split()
    if not items:
        raise CodecError("empty MSRP path")
    return tuple(parse_uri(item) for item in items)


_CACHED_LENGTH = 1024
_cached_path = lru_cache(maxsize=4096)(_parse_path)


def serialize_path(path: tuple[MSRPURI, ...]) -> str:
    """Render a URI list with single spaces."""
    if len(path) == 1:
        return serialize_uri(path[0])
    return " ".join(serialize_uri(u) for u in path)
