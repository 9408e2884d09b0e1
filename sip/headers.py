"""SIP header grammar: names, compact forms, lists, name-addr, Via, CSeq (RFC 3261 §7.3, §20, §25).

Public API::

    header_key(name) -> str            canonical lower-case long name ('v' -> 'via')
    canonical_name(name) -> str        display form ('call-id' -> 'Call-ID', 'v' -> 'Via')
    is_list_header(name) -> bool       True if the grammar allows comma-separated values
    split_list(value) -> list[str]     splits at commas outside quotes and <...>
    NameAddr(uri, display_name, params)   From/To/Contact/Route/Refer-To/P-Asserted-Identity
        .tag  .with_tag(tag)  .param(name)  str()          parse_name_addr(text)
    Contact wildcard: parse_contact(text) -> NameAddr | None   (None for '*')
    Via(transport, host, port, params, protocol)
        .branch .rport .received .maddr .ttl .sent_by  str()   parse_via(text)
    CSeq(seq, method)  str()                                    parse_cseq(text)
    BRANCH_MAGIC = 'z9hG4bK' (RFC 3261 §8.1.1.7), new_branch(), new_tag()

Every parser raises only ``sip.errors.CodecError``; parsers are memoised (values repeat
on retransmissions and across a dialog) and return frozen dataclasses.

Design notes
------------
Header values are kept as raw strings in ``sip.message.Headers``; these typed views are
built on demand. ``split_list`` only splits headers whose ABNF is ``x *(COMMA x)``: it is
never applied to WWW-Authenticate/Authorization (commas inside the credentials), Date,
Subject, Call-ID and the like.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace

from sip.errors import CodecError
from sip.limits import read_uint, short_cache
from sip.uri import EMPTY_PARAMS, URI, Params, format_host, parse_params, parse_uri

__all__ = [
    "BRANCH_MAGIC",
    "CSeq",
    "NameAddr",
    "Via",
    "canonical_name",
    "header_key",
    "is_list_header",
    "new_branch",
    "new_tag",
    "parse_contact",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
    "split_list",
]

BRANCH_MAGIC = "z9hG4bK"

# RFC 3261 §7.3.3 and the extensions' compact forms (IANA SIP parameters registry).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",  # RFC 3841
    "b": "referred-by",  # RFC 3892
    "c": "content-type",
    "d": "request-disposition",  # RFC 3841
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",  # RFC 3841
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",  # RFC 4474
    "o": "event",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "s": "subject",
    "t": "to",
    "u": "allow-events",  # RFC 6665
    "v": "via",
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 8224
}

# Display forms that are not plain Title-Case.
_SPECIAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "p-preferred-service": "P-Preferred-Service",
    "p-asserted-service": "P-Asserted-Service",
    "contribution-id": "Contribution-ID",
    "conversation-id": "Conversation-ID",
    "inreplyto-contribution-id": "InReplyTo-Contribution-ID",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1 and extensions).
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-associated-uri",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


@short_cache(512)
def header_key(name: str) -> str:
    """The canonical lower-case long form of a header name (compact forms expanded)."""
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low)


@short_cache(512)
def canonical_name(name: str) -> str:
    """The usual display form of a header name: ``'v'`` -> ``'Via'``, ``'cseq'`` -> ``'CSeq'``."""
    key = header_key(name)
    special = _SPECIAL_NAMES.get(key)
    if special is not None:
        return special
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def is_list_header(name: str) -> bool:
    """True if the header's grammar allows several comma-separated values."""
    return header_key(name) in LIST_HEADERS


def split_list(value: str) -> list[str]:
    """Splits a list header value at commas outside quoted strings and ``<...>``."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == "<":
            in_angle = True
        elif ch == ",":
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise CodecError(f"unterminated quoted string: {value!r}")
    if in_angle:
        raise CodecError(f"unterminated <: {value!r}")
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def new_branch() -> str:
    """A fresh RFC 3261 branch (``z9hG4bK`` + 96 random bits)."""
    return BRANCH_MAGIC + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits, RFC 3261 §19.3)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``["display"] <uri>;params`` or ``uri;params`` (RFC 3261 §20.10, §25.1 name-addr)."""

    uri: URI
    display_name: str | None = None
    params: Params = EMPTY_PARAMS

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To)."""
        return self.params.get("tag")

    def param(self, name: str) -> str | None:
        """The value of header parameter ``name``."""
        return self.params.get(name)

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with ``;tag=`` set."""
        return replace(self, params=self.params.with_param("tag", tag))

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """A copy with header parameter ``name`` set."""
        return replace(self, params=self.params.with_param(name, value))

    def __str__(self) -> str:
        if self.display_name is not None:
            return f"{self.display_name} <{self.uri}>{self.params}"
        return f"<{self.uri}>{self.params}"


@short_cache(4096)
def parse_name_addr(text: str) -> NameAddr:
    """Parses a name-addr or addr-spec with header parameters. Raises ``CodecError``."""
    text = text.strip()
    if not text:
        raise CodecError("empty name-addr")
    display: str | None = None
    if text[0] == '"':
        end = _quoted_end(text, 0)
        display = text[: end + 1]
        rest = text[end + 1 :].lstrip()
        if not rest.startswith("<"):
            raise CodecError(f"invalid name-addr: {text!r}")
    else:
        rest = text
    lt = rest.find("<")
    semi = rest.find(";")
    if lt >= 0 and (display is not None or semi < 0 or lt < semi):
        if display is None and lt > 0:
            display = rest[:lt].strip()
            if not all(_TOKEN.match(word) for word in display.split()):
                raise CodecError(f"invalid display name: {text!r}")
        gt = rest.find(">", lt)
        if gt < 0:
            raise CodecError(f"invalid name-addr: {text!r}")
        uri = parse_uri(rest[lt + 1 : gt].strip())
        param_text = rest[gt + 1 :]
        if param_text.strip() and not param_text.lstrip().startswith(";"):
            raise CodecError(f"invalid name-addr: {text!r}")
    else:
        # addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10)
        uri_text, _, param_text = rest.partition(";")
        if " " in uri_text.strip() or "?" in uri_text:
            raise CodecError(f"invalid addr-spec: {text!r}")
        uri = parse_uri(uri_text.strip())
        param_text = ";" + param_text if param_text else ""
    params = parse_params(param_text, quoted=True) if param_text.strip() else EMPTY_PARAMS
    return NameAddr(uri=uri, display_name=display, params=params)


def parse_contact(text: str) -> NameAddr | None:
    """Parses one Contact value; ``None`` for the ``*`` wildcard (RFC 3261 §20.10)."""
    stripped = text.strip()
    if stripped == "*":
        return None
    return parse_name_addr(stripped)


def _quoted_end(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise CodecError(f"unterminated quoted string: {text!r}")


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = EMPTY_PARAMS
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value when filled in (RFC 3581); see ``wants_rport`` for the flag."""
        value = self.params.get("rport")
        return None if value is None else read_uint(value, 5)

    @property
    def wants_rport(self) -> bool:
        """True if the ``rport`` parameter is present (with or without a value)."""
        return self.params.has("rport")

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter."""
        value = self.params.get("ttl")
        return None if value is None else read_uint(value, 3)

    @property
    def sent_by(self) -> tuple[str, int]:
        """``(host, port)`` with the transport's default port filled in (5060, 5061 for TLS)."""
        if self.port is not None:
            return (self.host.lower(), self.port)
        return (self.host.lower(), 5061 if self.transport.upper() == "TLS" else 5060)

    def with_param(self, name: str, value: str | None = None) -> Via:
        """A copy with parameter ``name`` set."""
        return replace(self, params=self.params.with_param(name, value))

    def __str__(self) -> str:
        host = format_host(self.host)
        hostport = host if self.port is None else f"{host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hostport}{self.params}"


# The canonical form (no LWS inside sent-protocol or sent-by): one regex, no loops.
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?(;.*)?\Z"
)


@short_cache(4096)
def parse_via(text: str) -> Via:
    """Parses one Via value (not a comma list). Raises ``CodecError``."""
    text = text.strip()
    fast = _VIA_FAST.match(text)
    if fast is not None:
        transport, host, port_digits, param_text = fast.groups()
        if port_digits is None or int(port_digits) <= 65535:
            return Via(
                transport=transport,
                host=host[1:-1] if host[0] == "[" else host,
                port=int(port_digits) if port_digits is not None else None,
                params=parse_params(param_text) if param_text else EMPTY_PARAMS,
            )
    proto, sep, rest = _split_sent_protocol(text)
    if not sep:
        raise CodecError(f"invalid Via: {text!r}")
    parts = [p.strip() for p in proto.split("/")]
    if len(parts) != 3 or not all(_TOKEN.match(p) for p in parts):
        raise CodecError(f"invalid Via: {text!r}")
    hostport, _, param_text = rest.partition(";")
    hostport = hostport.strip()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise CodecError(f"invalid Via sent-by: {text!r}")
        host = hostport[1:end]
        tail = hostport[end + 1 :].strip()
        port_text = tail[1:].strip() if tail.startswith(":") else None
        if tail and port_text is None:
            raise CodecError(f"invalid Via sent-by: {text!r}")
    else:
        host, colon, port_text_raw = hostport.partition(":")
        host = host.strip()
        port_text = port_text_raw.strip() if colon else None
    if not host or any(c in host for c in ' \t,<>"/'):
        raise CodecError(f"invalid Via sent-by: {text!r}")
    port: int | None = None
    if port_text is not None:
        port = read_uint(port_text, 5)
        if port is None or port > 65535:
            raise CodecError(f"invalid Via port: {text!r}")
    params = parse_params(param_text) if param_text else EMPTY_PARAMS
    return Via(
        transport=parts[2],
        host=host,
        port=port,
        params=params,
        protocol=f"{parts[0]}/{parts[1]}",
    )


def _split_sent_protocol(text: str) -> tuple[str, str, str]:
    """Splits ``SIP / 2.0 / UDP host`` into the protocol and the rest (LWS allowed at '/')."""
    slashes = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "/":
            slashes += 1
        elif ch in " \t" and slashes == 2:
            # the transport token ends at the first space after it has started
            j = text.rfind("/", 0, i)
            if text[j + 1 : i].strip():
                return text[:i], " ", text[i + 1 :]
        i += 1
    return text, "", ""


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: 42 INVITE`` (RFC 3261 §20.16)."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@short_cache(4096)
def parse_cseq(text: str) -> CSeq:
    """Parses a CSeq value (sequence < 2**31, method token). Raises ``CodecError``."""
    parts = text.split()
    if (
        len(parts) != 2
        or not parts[0].isdigit()
        or not parts[0].isascii()
        or len(parts[0]) > 10
        or int(parts[0]) >= 2**31
        or not _TOKEN.match(parts[1])
    ):
        raise CodecError(f"invalid CSeq: {text!r}")
    return CSeq(int(parts[0]), parts[1])
