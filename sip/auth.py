"""HTTP Digest authentication for SIP and MSRP (RFC 3261 §22.4, RFC 7616, RFC 8760), pure.

Public API::

    parse_challenge(value) -> Challenge        WWW-Authenticate / Proxy-Authenticate value
    select_challenge(values) -> Challenge      strongest supported (SHA-256 before MD5)
    DigestClient().authorize(challenge, method, uri, username, password, body=b"",
                             cnonce=None) -> Credentials   counts nc per nonce
    challenge_header(status) -> (challenge header name, credentials header name)
    str(Credentials)                            the Authorization / Proxy-Authorization value
    parse_credentials(value) -> Credentials     server side
    make_challenge(realm, *, nonce=None, opaque=None, algorithm="MD5", qop=("auth",),
                   stale=False) -> Challenge    str(challenge) is the header value
    verify(credentials, method, password, body=b"", *, ha1=None) -> bool
    digest_response(...) -> str                 the request-digest itself (RFC 7616 §3.4.1)
    ALGORITHMS                                  MD5, MD5-sess, SHA-256, SHA-256-sess

Malformed header values raise ``sip.errors.CodecError``; an unsupported algorithm or qop
is a ``CodecError`` too (``unsupported digest algorithm: {}``, ``unsupported qop: {}``).

Design notes
------------
The MSRP relay AUTH (RFC 4976 §5) uses the same challenge/credentials syntax, so this
module knows nothing about SIP messages: callers pass the method and the digest-uri.
``verify`` compares in constant time; the nonce's freshness and replay (nc) policy belong
to the server that issued it. SHA-512-256 is not offered (no SIP peer we meet uses it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from sip.errors import CodecError

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "challenge_header",
    "digest_response",
    "make_challenge",
    "parse_challenge",
    "parse_credentials",
    "select_challenge",
    "verify",
]

ALGORITHMS = {
    "MD5": hashlib.md5,
    "MD5-sess": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-256-sess": hashlib.sha256,
}
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
_PREFERENCE = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_QUOTED_FIELDS = frozenset(
    {"realm", "nonce", "opaque", "domain", "qop", "username", "uri", "response", "cnonce"}
)


def _split_auth_params(text: str) -> dict[str, str]:
    """``a="x, y", b=tok`` -> {'a': 'x, y', 'b': 'tok'} (names lower-cased, values unquoted)."""
    out: dict[str, str] = {}
    i = 0
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise CodecError(f"invalid auth-param: {text[i:]!r}")
        name = text[i:eq].strip().lower()
        if not _TOKEN.match(name):
            raise CodecError(f"invalid auth-param: {text[i:]!r}")
        j = eq + 1
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == '"':
            chars: list[str] = []
            j += 1
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= n:
                raise CodecError(f"unterminated quoted string: {text!r}")
            value = "".join(chars)
            j += 1
        else:
            end = text.find(",", j)
            end = n if end < 0 else end
            value = text[j:end].strip()
            if not _TOKEN.match(value):
                raise CodecError(f"invalid auth-param: {text[i:end]!r}")
            j = end
        rest = text[j:].lstrip(" \t")
        if rest and not rest.startswith(","):
            raise CodecError(f"invalid auth-param: {text[i:]!r}")
        if name in out:
            raise CodecError(f"duplicate auth-param: {name}")
        out[name] = value
        i = j
    return out


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scheme_and_params(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise CodecError(f"unsupported authentication scheme: {scheme!r}")
    return _split_auth_params(rest)


def _algorithm(name: str | None) -> str:
    algorithm = _CANONICAL.get((name or "MD5").upper())
    if algorithm is None:
        raise CodecError(f"unsupported digest algorithm: {name}")
    return algorithm


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parses a WWW-Authenticate/Proxy-Authenticate Digest value (RFC 7616 §3.3)."""
    params = _scheme_and_params(value)
    if "realm" not in params or "nonce" not in params:
        raise CodecError("digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_algorithm(params.get("algorithm")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "false").lower() == "true",
        domain=params.get("domain"),
    )


def select_challenge(values: list[str]) -> Challenge:
    """The strongest supported challenge among header values (RFC 8760 §2.4). Raises
    ``CodecError`` if none is usable."""
    usable: list[Challenge] = []
    for value in values:
        try:
            usable.append(parse_challenge(value))
        except CodecError:
            continue
    if not usable:
        raise CodecError("no supported digest challenge")
    return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm))


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials (RFC 7616 §3.4): the Authorization/Proxy-Authorization value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    cnonce: str | None = None
    nc: str | None = None
    opaque: str | None = None

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}"]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """Parses an Authorization/Proxy-Authorization Digest value (RFC 7616 §3.4)."""
    params = _scheme_and_params(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise CodecError(f"digest credentials without {missing[0]}")
    qop = params.get("qop")
    if qop is not None and ("cnonce" not in params or "nc" not in params):
        raise CodecError("digest credentials with qop but without cnonce or nc")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=_algorithm(params.get("algorithm")),
        qop=qop.lower() if qop is not None else None,
        cnonce=params.get("cnonce"),
        nc=params.get("nc"),
        opaque=params.get("opaque"),
    )


def _hash(algorithm: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return ALGORITHMS[algorithm](data).hexdigest()


def digest_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the value a server may store instead of the password."""
    return _hash(_algorithm(algorithm), f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 §3.4.1-3.4.3; RFC 2069 form when ``qop`` is None)."""
    algorithm = _algorithm(algorithm)
    if algorithm.endswith("-sess"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == "auth-int":
        ha2 = _hash(algorithm, f"{method}:{uri}:{_hash(algorithm, body)}")
    elif qop in (None, "auth"):
        ha2 = _hash(algorithm, f"{method}:{uri}")
    else:
        raise CodecError(f"unsupported qop: {qop}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(slots=True)
class DigestClient:
    """Answers challenges, counting ``nc`` per nonce (RFC 7616 §3.4); one per account."""

    _counts: dict[str, int] = field(default_factory=dict)

    def authorize(
        self,
        challenge: Challenge,
        method: str,
        uri: str,
        username: str,
        password: str,
        body: bytes = b"",
        cnonce: str | None = None,
    ) -> Credentials:
        """Credentials for ``method uri`` answering ``challenge`` (qop auth-int only if it
        is the only offer, since it needs the body)."""
        qop: str | None = None
        if "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        elif challenge.qop:
            raise CodecError(f"unsupported qop: {','.join(challenge.qop)}")
        nc: str | None = None
        if qop is not None or challenge.algorithm.endswith("-sess"):
            cnonce = cnonce or secrets.token_hex(16)
        if qop is not None:
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            if len(self._counts) > 64:  # forget the oldest nonces
                del self._counts[next(iter(self._counts))]
            nc = f"{count:08x}"
        ha1 = digest_ha1(challenge.algorithm, username, challenge.realm, password)
        response = digest_response(
            algorithm=challenge.algorithm,
            ha1=ha1,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return Credentials(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            qop=qop,
            cnonce=cnonce,
            nc=nc,
            opaque=challenge.opaque,
        )


def challenge_header(status: int) -> tuple[str, str]:
    """(challenge header, credentials header) for a 401 or 407 (RFC 3261 §22.2, §22.3)."""
    if status == 401:
        return ("WWW-Authenticate", "Authorization")
    if status == 407:
        return ("Proxy-Authenticate", "Proxy-Authorization")
    raise ValueError(f"not an authentication challenge status: {status}")


def make_challenge(
    realm: str,
    *,
    nonce: str | None = None,
    opaque: str | None = None,
    algorithm: Literal["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"] = "MD5",
    qop: tuple[str, ...] = ("auth",),
    stale: bool = False,
) -> Challenge:
    """A server challenge with a fresh random nonce unless one is given (RFC 7616 §3.3)."""
    return Challenge(
        realm=realm,
        nonce=nonce or secrets.token_urlsafe(24),
        algorithm=_algorithm(algorithm),
        qop=qop,
        opaque=opaque,
        stale=stale,
    )


def verify(
    credentials: Credentials,
    method: str,
    password: str | None = None,
    body: bytes = b"",
    *,
    ha1: str | None = None,
) -> bool:
    """True if ``credentials`` answer correctly for ``method`` (password or stored HA1)."""
    if ha1 is None:
        if password is None:
            raise ValueError("verify needs a password or ha1")
        ha1 = digest_ha1(credentials.algorithm, credentials.username, credentials.realm, password)
    try:
        expected = digest_response(
            algorithm=credentials.algorithm,
            ha1=ha1,
            nonce=credentials.nonce,
            method=method,
            uri=credentials.uri,
            qop=credentials.qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            body=body,
        )
    except CodecError:
        return False
    return hmac.compare_digest(expected, credentials.response.lower())
