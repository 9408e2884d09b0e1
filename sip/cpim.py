"""CPIM message/cpim (RFC 3862) with the IMDN headers (RFC 5438 §6).

Why it looks like this
----------------------
Every chat message, IMDN and group isComposing travels inside CPIM
(docs/protocol-mapping.md "CPIM, IMDN and isComposing bodies").  A CPIM body
is three blocks: the message headers (From, To, cc, DateTime, Subject, NS, Require and namespaced
extension headers such as ``imdn.Message-ID``), the MIME content headers
of the payload, then the payload.

* Namespaced headers are resolved through the ``NS`` declarations, so a
  peer that binds ``urn:ietf:params:imdn`` to another prefix is understood;
  on output the declared prefix is reused, and ``NS: imdn
  <urn:ietf:params:imdn>`` is added when IMDN headers are present but the
  namespace was not declared.
* Headers the codec does not model are kept, in order, in ``extra_headers``
  (e.g. ``cpm.Payload-Type`` from rustrcs) and ``content_extra``.
* Header names are matched case-insensitively (rcsjta sends
  ``Content-type``); output uses the canonical spelling.
* ``Content-Transfer-Encoding: base64`` (rustrcs on some networks) is
  decoded on parse and re-encoded on serialize; ``body`` is always the
  decoded payload.  ``Content-Length`` is emitted on output and, on input,
  bounds the payload (trailing CRLFs some clients append are dropped).
* ``DateTime`` is RFC 3339 with milliseconds on output.
* Every chat message costs two CPIM parses and serializations, so the header
  block is read in one pass, the usual header names skip the name regex, and
  ``parse_name_addr`` / Disposition-Notification results are cached (short
  values only: a cache keeps its keys alive).

Canonical output (what ``serialize`` writes, and what round-trips byte for
byte) follows the header order rcsjta uses: From, To, cc, NS, imdn.Message-ID,
DateTime, Subject, Require, imdn.Disposition-Notification,
imdn.IMDN-Record-Route, imdn.IMDN-Route, other headers; then Content-Type,
Content-Disposition, Content-ID, Content-Transfer-Encoding, other content
headers, Content-Length.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sip.errors import CodecError
from sip.limits import current, read_uint
from sip.multipart import Headers, split_head
from sip.xmlutil import format_datetime, parse_datetime

CONTENT_TYPE = "message/cpim"
IMDN_NAMESPACE = "urn:ietf:params:imdn"
IMDN_PREFIX = "imdn"
IMDN_CONTENT_TYPE = "message/imdn+xml"
ISCOMPOSING_CONTENT_TYPE = "application/im-iscomposing+xml"
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"
"""The CPIM From/To that SIMPLE-IM 1-1 clients use (protocol-mapping.md "Signalling profiles")."""


class Disposition(enum.StrEnum):
    """``imdn.Disposition-Notification`` values (RFC 5438 §6.2)."""

    POSITIVE_DELIVERY = "positive-delivery"
    NEGATIVE_DELIVERY = "negative-delivery"
    DISPLAY = "display"
    PROCESSING = "processing"


@dataclass(frozen=True)
class NameAddr:
    """A CPIM address: ``["display name"] <uri>`` (RFC 3862 §3.3.1)."""

    uri: str
    display_name: str | None = None

    def __str__(self) -> str:
        if self.display_name is None:
            return f"<{self.uri}>"
        name = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}" <{self.uri}>'


ANONYMOUS = NameAddr(ANONYMOUS_URI)

_UNQUOTE = re.compile(r"\\(.)")
_QUOTED = re.compile(r'"((?:[^"\\]++|\\.)*+)"')
"""A quoted display name; possessive, so it never backtracks."""
_NS = re.compile(r"\s*([^\s<]*)\s*<([^<>]*)>\s*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


_CACHED_LENGTH = 512
"""Longest value whose parse result is cached (a cache keeps its keys alive)."""


def parse_name_addr(value: str) -> NameAddr:
    """Parses ``["name"] <uri>``; a bare URI without brackets is accepted too."""
    # cached: NameAddr is immutable and a chat repeats the same few addresses
    if len(value) <= _CACHED_LENGTH:
        return _cached_name_addr(value)
    return _parse_name_addr(value)


def _split_name_addr(text: str) -> tuple[str | None, str | None, str] | None:
    """``(quoted, plain, uri)`` of a stripped ``["name"] <uri>``, or None; one pass, no
    backtracking (RFC 3862 §3.3.1; a regex here was quadratic in runs of whitespace)."""
    quoted: str | None = None
    plain: str | None = None
    if text.startswith('"'):
        match = _QUOTED.match(text)
        if match is None:
            return None
        quoted = match.group(1)
        rest = text[match.end() :].lstrip()
    else:
        lt = text.find("<")
        if lt < 0 or '"' in text[:lt]:
            return None
        plain = text[:lt].rstrip()
        rest = text[lt:]
    if not rest.startswith("<") or not rest.endswith(">") or len(rest) < 2:
        return None
    uri = rest[1:-1]
    if "<" in uri or ">" in uri:
        return None
    return quoted, plain, uri


def _parse_name_addr(value: str) -> NameAddr:
    bare = value.strip()
    parts = _split_name_addr(bare)
    if parts is None:
        if not bare or any(c in bare for c in ' <>"'):
            raise CodecError(f"cpim: invalid address {bare!r}")
        return NameAddr(bare)
    quoted, plain, uri = parts
    if not uri.strip():
        raise CodecError(f"cpim: invalid address {bare!r}")
    if quoted is not None:
        return NameAddr(uri.strip(), _UNQUOTE.sub(r"\1", quoted))
    return NameAddr(uri.strip(), plain or None)


_cached_name_addr = lru_cache(maxsize=1024)(_parse_name_addr)


@dataclass(frozen=True)
class CPIMMessage:
    """A parsed message/cpim body (RFC 3862 §3) with IMDN headers (RFC 5438 §6)."""

    content_type: str | None
    body: bytes = b""
    sender: NameAddr | None = None
    to: tuple[NameAddr, ...] = ()
    cc: tuple[NameAddr, ...] = ()
    namespaces: tuple[tuple[str, str], ...] = ()
    message_id: str | None = None
    datetime: datetime | None = None
    subject: str | None = None
    require: tuple[str, ...] = ()
    disposition_notification: tuple[Disposition, ...] = ()
    imdn_record_route: tuple[str, ...] = ()
    imdn_route: tuple[str, ...] = ()
    extra_headers: Headers = ()
    content_disposition: str | None = None
    content_id: str | None = None
    content_transfer_encoding: str | None = None
    content_extra: Headers = ()

    @property
    def media_type(self) -> str | None:
        """The payload's ``type/subtype``, lower-cased, without parameters."""
        if self.content_type is None:
            return None
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def is_imdn(self) -> bool:
        """Tells whether the payload is an IMDN (``message/imdn+xml``)."""
        return self.media_type == IMDN_CONTENT_TYPE

    def requested_dispositions(self) -> tuple[Disposition, ...]:
        """Returns what the sender asked for; an IMDN-id'd message without the header asks
        for positive-delivery (policy for networks that strip it)."""
        if self.disposition_notification:
            return self.disposition_notification
        if self.message_id is not None and not self.is_imdn:
            return (Disposition.POSITIVE_DELIVERY,)
        return ()


_KNOWN_NAMES = {
    name: name.lower()
    for name in (
        "From",
        "To",
        "cc",
        "CC",
        "NS",
        "DateTime",
        "Subject",
        "Require",
        "imdn.Message-ID",
        "imdn.Disposition-Notification",
        "imdn.IMDN-Record-Route",
        "imdn.IMDN-Route",
        "Content-Type",
        "Content-type",
        "Content-Disposition",
        "Content-ID",
        "Content-Transfer-Encoding",
        "Content-Length",
    )
}
"""Header names as usually spelled (each matches ``_HEADER_NAME``), lower-cased."""


def _headers(block: bytes) -> list[tuple[str, str, str]]:
    """``(name, lower-cased name, stripped value)`` of each non-blank header line."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("cpim: headers are not UTF-8") from None
    lines = text.split("\n")
    max_lines = current().mime_header_lines
    if len(lines) > max_lines:
        raise CodecError(f"cpim: more than {max_lines} header lines")
    out: list[tuple[str, str, str]] = []
    for number, line in enumerate(lines, start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        name, colon, value = line.partition(":")
        lname = _KNOWN_NAMES.get(name) if colon else None
        if lname is None:
            if not colon or _HEADER_NAME.fullmatch(name) is None:
                raise CodecError(f"cpim: malformed header line {number}")
            lname = name.lower()
        if "\r" in value:
            raise CodecError(f"cpim: malformed header line {number}")
        out.append((name, lname, value.strip()))
    return out


_DISPOSITIONS = frozenset(d.value for d in Disposition)


def _parse_dispositions(value: str) -> tuple[Disposition, ...]:
    if len(value) <= _CACHED_LENGTH:
        return _cached_dispositions(value)
    return _dispositions(value)


def _dispositions(value: str) -> tuple[Disposition, ...]:
    result: list[Disposition] = []
    for token in value.split(","):
        token = token.strip().lower()
        if token in _DISPOSITIONS and token not in result:
            result.append(Disposition(token))
    return tuple(result)


_cached_dispositions = lru_cache(maxsize=256)(_dispositions)


def _route_uri(value: str) -> str:
    return parse_name_addr(value).uri


def parse(data: bytes) -> CPIMMessage:
    """Parses a message/cpim body (RFC 3862 §3)."""
    split = split_head(data)
    if split is None:
        raise CodecError("cpim: missing blank line after message headers")
    head, rest = split
    raw = _headers(head)
    namespaces: list[tuple[str, str]] = []
    for _, lname, value in raw:
        if lname == "ns":
            match = _NS.fullmatch(value)
            if match is None:
                raise CodecError(f"cpim: invalid NS header {value!r}")
            namespaces.append((match.group(1), match.group(2).strip()))
    imdn_prefixes = {p.lower() for p, uri in namespaces if uri == IMDN_NAMESPACE}
    sender: NameAddr | None = None
    stamp: datetime | None = None
    subject: str | None = None
    message_id: str | None = None
    to: list[NameAddr] = []
    cc: list[NameAddr] = []
    require: list[str] = []
    record_route: list[str] = []
    route: list[str] = []
    dispositions: tuple[Disposition, ...] = ()
    extra: list[tuple[str, str]] = []
    for name, lname, value in raw:
        if lname == "from":
            sender = parse_name_addr(value)
        elif lname == "to":
            to.append(parse_name_addr(value))
        elif lname == "datetime":
            stamp = parse_datetime(value, "cpim: DateTime")
        elif lname == "ns":
            continue
        elif lname == "cc":
            cc.append(parse_name_addr(value))
        elif lname == "subject" and subject is None:
            subject = value
        elif lname == "require":
            require += [v.strip() for v in value.split(",") if v.strip()]
        else:
            prefix, dot, local = lname.rpartition(".")
            if not dot or prefix not in imdn_prefixes:
                extra.append((name, value))
            elif local == "message-id":
                message_id = value
            elif local == "disposition-notification":
                dispositions = _parse_dispositions(value)
            elif local == "imdn-record-route":
                record_route.append(_route_uri(value))
            elif local == "imdn-route":
                route.append(_route_uri(value))
            else:
                extra.append((name, value))
    content = split_head(rest)
    if content is None:
        raise CodecError("cpim: missing blank line after content headers")
    chead, payload = content
    cfields: dict[str, str] = {}
    cextra: list[tuple[str, str]] = []
    for name, lname, value in _headers(chead):
        if lname in _CONTENT_FIELDS and lname not in cfields:
            cfields[lname] = value
        else:
            cextra.append((name, value))
    length_text = cfields.get("content-length")
    if length_text is not None:
        length = read_uint(length_text)
        if length is None:
            raise CodecError(f"cpim: invalid Content-Length {length_text!r}")
        if length > len(payload):
            raise CodecError(
                f"cpim: body is shorter than Content-Length ({len(payload)} < {length})"
            )
        payload = payload[:length]
    encoding = cfields.get("content-transfer-encoding")
    if encoding is not None and encoding.lower() == "base64":
        try:
            payload = base64.b64decode(b"".join(payload.split()), validate=True)
        except binascii.Error:
            raise CodecError("cpim: invalid base64 body") from None
    return CPIMMessage(
        content_type=cfields.get("content-type"),
        body=payload,
        sender=sender,
        to=tuple(to),
        cc=tuple(cc),
        namespaces=tuple(namespaces),
        message_id=message_id,
        datetime=stamp,
        subject=subject,
        require=tuple(require),
        disposition_notification=dispositions,
        imdn_record_route=tuple(record_route),
        imdn_route=tuple(route),
        extra_headers=tuple(extra),
        content_disposition=cfields.get("content-disposition"),
        content_id=cfields.get("content-id"),
        content_transfer_encoding=encoding,
        content_extra=tuple(cextra),
    )


_CONTENT_FIELDS = frozenset(
    (
        "content-type",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-length",
    )
)


def _imdn_prefix(message: CPIMMessage) -> tuple[str, bool]:
    for prefix, uri in message.namespaces:
        if uri == IMDN_NAMESPACE:
            return prefix, False
    needed = bool(
        message.message_id is not None
        or message.disposition_notification
        or message.imdn_record_route
        or message.imdn_route
    )
    return IMDN_PREFIX, needed


def _line(name: str, value: str) -> str:
    if "\r" in value or "\n" in value or _HEADER_NAME.fullmatch(name) is None:
        raise CodecError(f"cpim: invalid header {name!r}")
    return f"{name}: {value}\r\n"


def _known_line(name: str, value: str) -> str:
    """``_line`` for a ``name`` known to be a valid header name."""
    if "\r" in value or "\n" in value:
        raise CodecError(f"cpim: invalid header {name!r}")
    return f"{name}: {value}\r\n"


def serialize(message: CPIMMessage) -> bytes:
    """Serializes a message/cpim body in the canonical header order."""
    prefix, add_ns = _imdn_prefix(message)
    # the usual prefix makes valid names; any other is checked with each line
    imdn_line = _known_line if prefix == IMDN_PREFIX else _line
    out: list[str] = []
    if message.sender is not None:
        out.append(_known_line("From", str(message.sender)))
    for addr in message.to:
        out.append(_known_line("To", str(addr)))
    for addr in message.cc:
        out.append(_known_line("cc", str(addr)))
    for p, uri in message.namespaces:
        out.append(_known_line("NS", f"{p} <{uri}>".lstrip()))
    if add_ns:
        out.append(f"NS: {IMDN_PREFIX} <{IMDN_NAMESPACE}>\r\n")
    if message.message_id is not None:
        out.append(imdn_line(f"{prefix}.Message-ID", message.message_id))
    if message.datetime is not None:
        out.append(f"DateTime: {format_datetime(message.datetime)}\r\n")
    if message.subject is not None:
        out.append(_known_line("Subject", message.subject))
    if message.require:
        out.append(_known_line("Require", ", ".join(message.require)))
    if message.disposition_notification:
        value = ", ".join(d.value for d in message.disposition_notification)
        out.append(imdn_line(f"{prefix}.Disposition-Notification", value))
    for u in message.imdn_record_route:
        out.append(imdn_line(f"{prefix}.IMDN-Record-Route", f"<{u}>"))
    for u in message.imdn_route:
        out.append(imdn_line(f"{prefix}.IMDN-Route", f"<{u}>"))
    for name, value in message.extra_headers:
        out.append(_line(name, value))
    out.append("\r\n")
    body = message.body
    encoding = message.content_transfer_encoding
    if encoding is not None and encoding.lower() == "base64":
        body = base64.b64encode(body)
    if message.content_type is not None:
        out.append(_known_line("Content-Type", message.content_type))
    if message.content_disposition is not None:
        out.append(_known_line("Content-Disposition", message.content_disposition))
    if message.content_id is not None:
        out.append(_known_line("Content-ID", message.content_id))
    if encoding is not None:
        out.append(_known_line("Content-Transfer-Encoding", encoding))
    for name, value in message.content_extra:
        out.append(_line(name, value))
    out.append(f"Content-Length: {len(body)}\r\n\r\n")
    return "".join(out).encode("utf-8") + body


def build_chat_message(
    *,
    sender: NameAddr,
    recipient: NameAddr,
    message_id: str,
    timestamp: datetime,
    body: bytes,
    content_type: str = "text/plain;charset=UTF-8",
    dispositions: tuple[Disposition, ...] = (Disposition.POSITIVE_DELIVERY, Disposition.DISPLAY),
    extra_headers: Headers = (),
) -> CPIMMessage:
    """Builds a chat message envelope (RFC 3862, RFC 5438 §6)."""
    return CPIMMessage(
        content_type=content_type,
        body=body,
        sender=sender,
        to=(recipient,),
        namespaces=((IMDN_PREFIX, IMDN_NAMESPACE),),
        message_id=message_id,
        datetime=timestamp,
        disposition_notification=dispositions,
        extra_headers=extra_headers,
    )


def build_imdn_message(
    *,
    sender: NameAddr,
    recipient: NameAddr,
    message_id: str,
    timestamp: datetime,
    imdn_xml: bytes,
) -> CPIMMessage:
    """Builds the CPIM envelope of an IMDN: its own Message-ID, no Disposition-Notification
    (RFC 5438 §7.1.2)."""
    return CPIMMessage(
        content_type=IMDN_CONTENT_TYPE,
        body=imdn_xml,
        sender=sender,
        to=(recipient,),
        namespaces=((IMDN_PREFIX, IMDN_NAMESPACE),),
        message_id=message_id,
        datetime=timestamp,
        content_disposition="notification",
    )


def build_iscomposing_message(
    *,
    sender: NameAddr,
    recipient: NameAddr,
    timestamp: datetime,
    iscomposing_xml: bytes,
) -> CPIMMessage:
    """Builds the CPIM envelope of a group isComposing: no IMDN headers (RFC 3862)."""
    return CPIMMessage(
        content_type=ISCOMPOSING_CONTENT_TYPE,
        body=iscomposing_xml,
        sender=sender,
        to=(recipient,),
        datetime=timestamp,
    )
