"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), sans-I/O.

Public API::

    parse_uri(text) -> SipURI | TelURI | AbsoluteURI    raises CodecError
    str(uri)                                           serializes (round-trips canonical input)
    Params                                             ordered ;name[=value] list, case-insensitive
    SipURI(scheme, user, password, host, port, params, headers)
        .transport  .host_port  .param(name)  .with_params(**)  .without_params(*)  .replace(**)
    TelURI(number, params)  .param(name)
    AbsoluteURI(scheme, rest)                        any other scheme (urn:, http:, mailto:, ...)
    uri_equal(a, b)                                  comparison per RFC 3261 §19.1.4 (simplified)
    format_host(host)                                adds [] around IPv6 literals

Design notes
------------
Fields hold the text as it appears on the wire (percent escapes are kept), so that
``str(parse_uri(x)) == x`` for canonical input and no information is lost; ``unquote``
is left to the caller (``urllib.parse.unquote``). A host that is an IPv6 reference is
stored without brackets and ``format_host`` adds them back. ``parse_uri`` is memoised:
URIs repeat across messages (Request-URI, From, To, Contact) and the results are frozen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sip.errors import CodecError
from sip.limits import read_uint, short_cache

__all__ = [
    "AbsoluteURI",
    "Params",
    "SipURI",
    "TelURI",
    "URI",
    "format_host",
    "parse_params",
    "parse_uri",
    "uri_equal",
]

# RFC 3261 §25.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
# hostname / IPv4 (loose: token characters RFC 3261 allows in a host)
_HOSTNAME = re.compile(r"[A-Za-z0-9\-.]+\Z")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+\Z")
# characters we accept in user/password/param/header text (unreserved, escaped, marks)
_URI_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/:%\[\]]*\Z")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]*\Z")
_PARAMS_FAST = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+)?"
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$%]+)?)*\Z"
)


@dataclass(frozen=True, slots=True)
class Params:
    """An ordered list of ``;name[=value]`` parameters; names compare case-insensitively."""

    items: tuple[tuple[str, str | None], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name`` (None for a flag parameter or when absent: see ``has``)."""
        low = name.lower()
        for key, value in self.items:
            if key.lower() == low:
                return value
        return default

    def has(self, name: str) -> bool:
        """True if ``name`` is present (with or without a value)."""
        low = name.lower()
        return any(key.lower() == low for key, _ in self.items)

    def with_param(self, name: str, value: str | None = None) -> Params:
        """A copy with ``name`` set (replaced in place if present, else appended)."""
        low = name.lower()
        out: list[tuple[str, str | None]] = []
        done = False
        for key, old in self.items:
            if key.lower() == low:
                if not done:
                    out.append((key, value))
                    done = True
            else:
                out.append((key, old))
        if not done:
            out.append((name, value))
        return Params(tuple(out))

    def without(self, *names: str) -> Params:
        """A copy without the named parameters."""
        lows = {n.lower() for n in names}
        return Params(tuple(kv for kv in self.items if kv[0].lower() not in lows))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __str__(self) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.items)


EMPTY_PARAMS = Params()


def parse_params(text: str, *, quoted: bool = False) -> Params:
    """Parses ``;a=1;b`` (leading ``;`` optional) into ``Params`` (RFC 3261 §25.1 generic-param).

    With ``quoted`` the values may be quoted strings (header parameters); quotes are kept.
    """
    text = text.strip()
    if not text:
        return EMPTY_PARAMS
    if text[0] == ";":
        text = text[1:]
    if _PARAMS_FAST.match(text):  # canonical: no spaces, no quotes; one regex for all
        return Params(
            tuple(
                (name, value if eq else None)
                for name, eq, value in (part.partition("=") for part in text.split(";"))
            )
        )
    parts = _split_semicolons(text) if quoted and '"' in text else text.split(";")
    items: list[tuple[str, str | None]] = []
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name or not _TOKEN.match(name):
            raise CodecError(f"invalid parameter name: {part.strip()!r}")
        if eq:
            value = value.strip()
            if value.startswith('"'):
                if not quoted or len(value) < 2 or not value.endswith('"'):
                    raise CodecError(f"invalid parameter value: {part.strip()!r}")
            elif not value or not _PARAM_VALUE.match(value):
                raise CodecError(f"invalid parameter value: {part.strip()!r}")
            items.append((name, value))
        else:
            items.append((name, None))
    return Params(tuple(items))


def _split_semicolons(text: str) -> list[str]:
    """Splits at ``;`` outside quoted strings."""
    parts: list[str] = []
    start = 0
    in_quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quote:
        raise CodecError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def format_host(host: str) -> str:
    """``host`` as it goes into a URI or Via: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1); text fields keep their escapes."""

    host: str
    user: str | None = None
    port: int | None = None
    params: Params = EMPTY_PARAMS
    headers: tuple[tuple[str, str], ...] = ()
    password: str | None = None
    scheme: str = "sip"

    @property
    def transport(self) -> str:
        """The ``transport`` parameter lower-cased ('udp' if absent, 'tls' for sips)."""
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_port(self) -> str:
        """``host[:port]`` as written in a URI."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` (None when absent or a flag)."""
        return self.params.get(name)

    def with_params(self, **values: str | None) -> SipURI:
        """A copy with the given URI parameters set (``lr=None`` sets a flag)."""
        params = self.params
        for name, value in values.items():
            params = params.with_param(name, value)
        return replace(self, params=params)

    def without_params(self, *names: str) -> SipURI:
        """A copy without the given URI parameters."""
        return replace(self, params=self.params.without(*names))

    def replace(self, **changes: object) -> SipURI:
        """A copy with fields replaced (``dataclasses.replace``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host_port)
        if self.params.items:
            out.append(str(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class TelURI:
    """A ``tel:`` URI (RFC 3966): the number (global ``+…`` or local) and its parameters."""

    number: str
    params: Params = EMPTY_PARAMS

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (e.g. ``phone-context``)."""
        return self.params.get(name)

    @property
    def is_global(self) -> bool:
        """True for a global number (``+`` followed by digits)."""
        return self.number.startswith("+")

    def __str__(self) -> str:
        return f"tel:{self.number}{self.params}"


@dataclass(frozen=True, slots=True)
class AbsoluteURI:
    """Any other URI scheme, kept verbatim (RFC 3261 §25.1 absoluteURI)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI = SipURI | TelURI | AbsoluteURI

_TEL_NUMBER = re.compile(r"(\+[0-9\-.()]*[0-9][0-9\-.()]*|[0-9A-Fa-f*#\-.()]+)\Z")


@short_cache(4096)
def parse_uri(text: str) -> URI:
    """Parses a URI (RFC 3261 §19.1.1, §25.1; RFC 3966 §3). Raises ``CodecError``."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise CodecError(f"invalid URI: {text!r}")
    low = scheme.lower()
    if low in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if low == "tel":
        number, _, params = rest.partition(";")
        if not _TEL_NUMBER.match(number):
            raise CodecError(f"invalid tel URI: {text!r}")
        return TelURI(number, parse_params(params) if params else EMPTY_PARAMS)
    if not rest or any(c in rest for c in ' \t\r\n<>"'):
        raise CodecError(f"invalid URI: {text!r}")
    return AbsoluteURI(scheme, rest)


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
        if not user or not _URI_TEXT.match(userinfo):
            raise CodecError(f"invalid SIP URI user part: {text!r}")
    rest, qmark, header_text = rest.partition("?")
    hostport, semi, param_text = rest.partition(";")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise CodecError(f"invalid SIP URI host: {text!r}")
        host = hostport[1:end]
        if not host or not _IPV6.match(host):
            raise CodecError(f"invalid SIP URI host: {text!r}")
        port_text = hostport[end + 1 :]
        if port_text and not port_text.startswith(":"):
            raise CodecError(f"invalid SIP URI host: {text!r}")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(hostport[end + 1 :])
    else:
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
        if not host or not _HOSTNAME.match(host):
            raise CodecError(f"invalid SIP URI host: {text!r}")
    port: int | None = None
    if has_port:
        port = read_uint(port_text, 5)
        if port is None or port > 65535:
            raise CodecError(f"invalid SIP URI port: {text!r}")
    params = parse_params(param_text) if semi else EMPTY_PARAMS
    headers: tuple[tuple[str, str], ...] = ()
    if qmark:
        pairs: list[tuple[str, str]] = []
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq or not _URI_TEXT.match(item):
                raise CodecError(f"invalid SIP URI header: {text!r}")
            pairs.append((name, value))
        headers = tuple(pairs)
    return SipURI(
        host=host,
        user=user,
        port=port,
        params=params,
        headers=headers,
        password=password,
        scheme=scheme,
    )


def uri_equal(a: URI, b: URI) -> bool:
    """Compares two URIs per RFC 3261 §19.1.4 (user/password case-sensitive, host not;
    transport, user, method, ttl and maddr parameters must match when either has them)."""
    if isinstance(a, SipURI) and isinstance(b, SipURI):
        if (a.scheme.lower(), a.user, a.password, a.host.lower(), a.port) != (
            b.scheme.lower(),
            b.user,
            b.password,
            b.host.lower(),
            b.port,
        ):
            return False
        for name in ("transport", "user", "method", "ttl", "maddr"):
            if a.params.has(name) or b.params.has(name):
                va, vb = a.params.get(name), b.params.get(name)
                if va is None or vb is None or va.lower() != vb.lower():
                    return False
        return sorted(a.headers) == sorted(b.headers)
    if isinstance(a, TelURI) and isinstance(b, TelURI):
        return _tel_digits(a.number) == _tel_digits(b.number) and {
            k.lower(): v for k, v in a.params.items
        } == {k.lower(): v for k, v in b.params.items}
    return str(a) == str(b)


def _tel_digits(number: str) -> str:
    return "".join(c for c in number if c not in "-.()").lower()
