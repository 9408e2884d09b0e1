"""SIP requests and responses: parse, serialize, build (RFC 3261 §7, §8.2.6, §18.3, §20), sans-I/O.

Public API::

    parse_message(data: bytes, *, validate=True) -> Request | Response   one datagram
    serialize(msg) -> bytes            also ``bytes(msg)``; Content-Length is always written
    StreamParser(max_header_size=, max_body_size=).feed(data) -> list[Message | KeepAlive]
    make_request(method, uri, headers=(), body=b"", content_type=None) -> Request
    make_response(request, status, reason=None, *, to_tag=None, headers=(), body=b"",
                  content_type=None) -> Response
    Headers: ordered (name, value) pairs keeping the names as written
        .get(name) -> str | None         first value; compact and long names are equivalent
        .get_all(name) -> list[str]      every value; list headers split at commas
        name in headers / iter -> (name, value) / .added(name, value) / .prepended(..)
        .replaced(name, value) / .removed(name)
    Request(method, uri, headers, body) and Response(status, reason, headers, body) share:
        .get(name) .get_all(name) .vias .top_via .branch .cseq .call_id .from_ .to
        .from_tag .to_tag .contacts .content_type
        .with_header(name, value) .prepend_header(..) .replace_header(..) .without_header(name)
        .with_body(body, content_type=None) .replace(**fields)
    Response: .is_provisional .is_success .is_final;  REASON_PHRASES

Every failure is ``sip.errors.CodecError`` with one of these messages (``{}`` = detail)::

    empty message                           no end of headers
    SIP header section is not UTF-8         bare CR or LF in header section
    invalid start line: {}                  unsupported SIP version: {}
    invalid status code: {}                 invalid header line: {}
    invalid header name: {}                 invalid Content-Length: {}
    conflicting Content-Length headers      body shorter than Content-Length
    missing mandatory header: {}            CSeq method does not match request method
    SIP header section too large            Content-Length exceeds limit
    Content-Length missing on a stream      too many header fields
    duplicate header: {}
  plus the messages of ``sip.uri`` and ``sip.headers`` for Request-URI, Via, CSeq, From, To.

Design notes
------------
Messages are frozen dataclasses whose headers stay raw strings in wire order, so
``serialize(parse_message(x)) == x`` for canonical input (``Name: value`` lines, matching
Content-Length); typed views (Via, CSeq, NameAddr) are parsed on access through memoised
parsers, which keeps the hot path (a MESSAGE and its 200) to one split per line.
Header folding (a line starting with SP/HT) is joined with one space (RFC 3261 §7.3.1).
Datagram bodies (RFC 3261 §18.3): no Content-Length means "the rest"; a smaller value
truncates; a bigger one is an error. On a stream Content-Length frames the message and is
mandatory; CRLFs between messages are keep-alives (RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong).
``validate`` (default) checks what every later layer relies on: Via, From, To, Call-ID,
CSeq present, each of the last four once (RFC 3261 §7.3.1: not list headers), parseable
and, for a request, the CSeq method equal to the method.

Limits (hostile input, each refused with ``CodecError``): a header section of at most
``MAX_HEADER_SIZE`` bytes (a datagram; ``StreamParser(max_header_size=)`` on a stream),
``MAX_HEADER_FIELDS`` fields, Content-Length of at most 10 digits; every step is linear in
the input (folded lines are joined once). On a stream, a message whose framing is sound
but whose contents are not (bad start line, bad header) is returned as ``BadMessage`` and
the stream carries on, so one peer's bad request does not close a shared connection.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeAlias

from sip.errors import CodecError
from sip.headers import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    header_key,
    new_tag,
    parse_contact,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from sip.limits import DEFAULT_LIMITS, current
from sip.uri import URI, parse_uri

__all__ = [
    "Headers",
    "KeepAlive",
    "Message",
    "REASON_PHRASES",
    "BadMessage",
    "Request",
    "Response",
    "StreamParser",
    "make_request",
    "make_response",
    "parse_message",
    "serialize",
]

SIP_VERSION = "SIP/2.0"
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_SINGLE = ("from", "to", "call-id", "cseq")
MAX_HEADER_SIZE = DEFAULT_LIMITS.sip_header_size
"""Largest header section by default (``sip.limits.current().sip_header_size`` is in force)."""
MAX_HEADER_FIELDS = DEFAULT_LIMITS.sip_header_fields
"""Most header fields in one message by default (``current().sip_header_fields``)."""

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields in wire order: ``(key, name, value)`` with key = canonical lower name."""

    items: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """Builds from ``(name, value)`` pairs."""
        return cls(tuple((header_key(n), n, v) for n, v in pairs))

    def get(self, name: str) -> str | None:
        """The first field's value of ``name`` (compact/long names equivalent), or None."""
        key = header_key(name)
        for k, _, value in self.items:
            if k == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers (Via, Route, Contact, ...) split at commas."""
        key = header_key(name)
        out: list[str] = []
        split = key in LIST_HEADERS
        for k, _, value in self.items:
            if k == key:
                if split:
                    out.extend(split_list(value))
                else:
                    out.append(value)
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self.items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def added(self, name: str, value: str) -> Headers:
        """A copy with ``name: value`` appended."""
        return Headers((*self.items, (header_key(name), name, value)))

    def prepended(self, name: str, value: str) -> Headers:
        """A copy with ``name: value`` first among the fields (a new top Via or Route)."""
        return Headers(((header_key(name), name, value), *self.items))

    def replaced(self, name: str, value: str) -> Headers:
        """A copy where ``name`` occurs once, with ``value``, where it first was (else last)."""
        key = header_key(name)
        out: list[tuple[str, str, str]] = []
        done = False
        for item in self.items:
            if item[0] == key:
                if not done:
                    out.append((key, item[1], value))
                    done = True
            else:
                out.append(item)
        if not done:
            out.append((key, name, value))
        return Headers(tuple(out))

    def removed(self, name: str) -> Headers:
        """A copy without any field called ``name``."""
        key = header_key(name)
        return Headers(tuple(item for item in self.items if item[0] != key))


class _MessageMixin:
    """Accessors shared by Request and Response (read typed views of the raw headers)."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def get(self, name: str) -> str | None:
        """The first value of header ``name``."""
        return self.headers.get(name)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (list headers split)."""
        return self.headers.get_all(name)

    def _require(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise CodecError(f"missing mandatory header: {name}")
        return value

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first."""
        return [parse_via(v) for v in self.headers.get_all("via")]

    @property
    def top_via(self) -> Via:
        """The topmost Via (RFC 3261 §8.1.1.7)."""
        first = self._require("Via")
        comma = first.find(",")
        return parse_via(first if comma < 0 else split_list(first)[0])

    @property
    def branch(self) -> str | None:
        """The branch of the top Via."""
        return self.top_via.branch

    @property
    def cseq(self) -> CSeq:
        """The CSeq header."""
        return parse_cseq(self._require("CSeq"))

    @property
    def call_id(self) -> str:
        """The Call-ID header."""
        return self._require("Call-ID")

    @property
    def from_(self) -> NameAddr:
        """The From header."""
        return parse_name_addr(self._require("From"))

    @property
    def to(self) -> NameAddr:
        """The To header."""
        return parse_name_addr(self._require("To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag."""
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag (None outside a dialog)."""
        return self.to.tag

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact except the ``*`` wildcard."""
        out = [parse_contact(v) for v in self.headers.get_all("contact")]
        return [c for c in out if c is not None]

    @property
    def content_type(self) -> str | None:
        """The Content-Type value as written (media type and parameters)."""
        return self.headers.get("content-type")

    def __bytes__(self) -> bytes:
        return serialize(self)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Request(_MessageMixin):
    """A SIP request (RFC 3261 §7.1)."""

    method: str
    uri: URI
    headers: Headers = Headers()
    body: bytes = b""
    version: str = SIP_VERSION

    def with_header(self, name: str, value: str) -> Request:
        """A copy with ``name: value`` appended."""
        return replace(self, headers=self.headers.added(name, value))

    def prepend_header(self, name: str, value: str) -> Request:
        """A copy with ``name: value`` before every other field."""
        return replace(self, headers=self.headers.prepended(name, value))

    def replace_header(self, name: str, value: str) -> Request:
        """A copy with ``name`` set to the single ``value``."""
        return replace(self, headers=self.headers.replaced(name, value))

    def without_header(self, name: str) -> Request:
        """A copy without ``name``."""
        return replace(self, headers=self.headers.removed(name))

    def with_body(self, body: bytes, content_type: str | None = None) -> Request:
        """A copy with ``body`` (and Content-Type, when given)."""
        headers = (
            self.headers
            if content_type is None
            else self.headers.replaced("Content-Type", content_type)
        )
        return replace(self, body=body, headers=headers)

    def replace(self, **changes: object) -> Request:
        """A copy with fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Response(_MessageMixin):
    """A SIP response (RFC 3261 §7.2)."""

    status: int
    reason: str
    headers: Headers = Headers()
    body: bytes = b""
    version: str = SIP_VERSION

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        """200-699."""
        return self.status >= 200

    def with_header(self, name: str, value: str) -> Response:
        """A copy with ``name: value`` appended."""
        return replace(self, headers=self.headers.added(name, value))

    def prepend_header(self, name: str, value: str) -> Response:
        """A copy with ``name: value`` before every other field."""
        return replace(self, headers=self.headers.prepended(name, value))

    def replace_header(self, name: str, value: str) -> Response:
        """A copy with ``name`` set to the single ``value``."""
        return replace(self, headers=self.headers.replaced(name, value))

    def without_header(self, name: str) -> Response:
        """A copy without ``name``."""
        return replace(self, headers=self.headers.removed(name))

    def with_body(self, body: bytes, content_type: str | None = None) -> Response:
        """A copy with ``body`` (and Content-Type, when given)."""
        headers = (
            self.headers
            if content_type is None
            else self.headers.replaced("Content-Type", content_type)
        )
        return replace(self, body=body, headers=headers)

    def replace(self, **changes: object) -> Response:
        """A copy with fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


Message: TypeAlias = Request | Response


class KeepAlive(enum.Enum):
    """Stream keep-alives between messages (RFC 5626 §4.4.1)."""

    PING = "ping"  # CRLFCRLF: answer with a pong
    PONG = "pong"  # a single CRLF


# ---------------------------------------------------------------------------------------
# serialize


def serialize(msg: Message) -> bytes:
    """The wire form of ``msg``; Content-Length is set to ``len(body)`` (RFC 3261 §20.14)."""
    if isinstance(msg, Request):
        lines = [f"{msg.method} {msg.uri} {msg.version}"]
    else:
        lines = [f"{msg.version} {msg.status} {msg.reason}"]
    length = str(len(msg.body))
    seen_length = False
    for key, name, value in msg.headers.items:
        if key == "content-length":
            if seen_length:
                continue
            seen_length = True
            value = length
        lines.append(f"{name}: {value}")
    if not seen_length:
        lines.append(f"Content-Length: {length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode() + msg.body


# ---------------------------------------------------------------------------------------
# parse


_Fields: TypeAlias = list[tuple[str, str, str]]
_Head: TypeAlias = tuple[bool, list[str], _Fields]


def _parse_head(head: bytes) -> _Head:
    """Splits the header section into the start line parts and (key, name, value) fields."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("SIP header section is not UTF-8") from None
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise CodecError("bare CR or LF in header section")
    start = lines[0]
    is_response = start[:8].upper() == "SIP/2.0 "
    if is_response:
        parts = start.split(" ", 2)
        if len(parts) == 2:
            parts.append("")
    else:
        parts = start.split(" ")
        if len(parts) != 3 or not parts[0] or not _TOKEN.match(parts[0]):
            raise CodecError(f"invalid start line: {start!r}")
    if len(lines) > current().sip_header_fields + 1:
        raise CodecError("too many header fields")
    fields: list[tuple[str, str, str]] = []
    folded: dict[int, list[str]] = {}  # continuation lines by field, joined once at the end
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not fields:
                raise CodecError(f"invalid header line: {line!r}")
            stripped = line.strip()
            folded.setdefault(len(fields) - 1, [fields[-1][2]]).append(stripped)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise CodecError(f"invalid header line: {line!r}")
        name = name.rstrip(" \t")
        if not _TOKEN.match(name):
            raise CodecError(f"invalid header name: {name!r}")
        # one copy of each header name: fewer small blocks held by messages in flight, which
        # fragment the allocator's pools (docs/group-chat.md, "Memory")
        name = sys.intern(name)
        fields.append((header_key(name), name, value.strip(" \t")))
    for index, pieces in folded.items():
        key, name, _ = fields[index]
        first = next((i for i, piece in enumerate(pieces) if piece), len(pieces))
        fields[index] = (key, name, " ".join(pieces[first:]))
    return is_response, parts, fields


def _content_length(fields: _Fields) -> int | None:
    found: int | None = None
    for key, _, value in fields:
        if key == "content-length":
            if not value.isdigit() or not value.isascii() or len(value) > 10:
                raise CodecError(f"invalid Content-Length: {value!r}")
            length = int(value)
            if found is not None and found != length:
                raise CodecError("conflicting Content-Length headers")
            found = length
    return found


def _build(is_response: bool, parts: list[str], fields: _Fields, body: bytes) -> Message:
    headers = Headers(tuple(fields))
    if is_response:
        code = parts[1]
        if (
            len(code) != 3
            or not code.isdigit()
            or not code.isascii()
            or not 100 <= int(code) <= 699
        ):
            raise CodecError(f"invalid status code: {code!r}")
        return Response(int(code), parts[2], headers, body, parts[0])
    if parts[2].upper() != SIP_VERSION:
        raise CodecError(f"unsupported SIP version: {parts[2]!r}")
    return Request(parts[0], parse_uri(parts[1]), headers, body, parts[2])


def _validate(msg: Message) -> None:
    """RFC 3261 §8.2.2 / §8.1.3.3 minimum: the fields the transaction layer relies on."""
    keys = [item[0] for item in msg.headers.items]
    for key in _MANDATORY:
        if key not in keys:
            raise CodecError(f"missing mandatory header: {_DISPLAY[key]}")
    for key in _SINGLE:
        if keys.count(key) > 1:
            raise CodecError(f"duplicate header: {_DISPLAY[key]}")
    msg.top_via  # noqa: B018 - parses
    cseq = msg.cseq
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    if isinstance(msg, Request) and cseq.method != msg.method:
        raise CodecError("CSeq method does not match request method")


_DISPLAY = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def parse_message(data: bytes, *, validate: bool = True) -> Message:
    """Parses one datagram (RFC 3261 §7, §18.3). Raises ``CodecError``."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start >= len(data):
        raise CodecError("empty message")
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise CodecError("no end of headers")
    if end - start > current().sip_header_size:
        raise CodecError("SIP header section too large")
    is_response, parts, fields = _parse_head(data[start:end])
    body = data[end + 4 :]
    length = _content_length(fields)
    if length is not None:
        if length > len(body):
            raise CodecError("body shorter than Content-Length")
        body = body[:length]
    msg = _build(is_response, parts, fields, bytes(body))
    if validate:
        _validate(msg)
    return msg


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A stream message that was framed (its Content-Length read) but did not parse:
    ``data`` is the whole message, to answer 400 from (RFC 3261 §21.4.1)."""

    data: bytes
    error: CodecError


def _framing_length(head: bytes) -> int | None:
    """Content-Length of a header section that did not parse, when it is unambiguous."""
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            value = value.strip()
            if not value.isdigit() or len(value) > 10 or found not in (None, int(value)):
                return None
            found = int(value)
    return found


class StreamParser:
    """Frames messages on a TCP/TLS byte stream by Content-Length (RFC 3261 §18.3), sans-I/O.

    ``feed`` returns complete messages, keep-alives and ``BadMessage`` (framed but not
    parseable: the stream goes on) in order; after it raised ``CodecError`` (the framing
    itself is lost) the stream is unusable and the connection must be closed.
    """

    __slots__ = ("_buf", "_scan", "_pending", "max_header_size", "max_body_size", "validate")

    def __init__(
        self,
        *,
        max_header_size: int | None = None,
        max_body_size: int | None = None,
        validate: bool = True,
    ) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._pending: tuple[bytes, _Head | CodecError, int, int] | None = None
        limits = current()  # the defaults: sip.limits
        self.max_header_size = (
            limits.sip_header_size if max_header_size is None else max_header_size
        )
        self.max_body_size = limits.sip_body_size if max_body_size is None else max_body_size
        self.validate = validate

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message | KeepAlive | BadMessage]:
        """Adds received bytes; returns the messages and keep-alives now complete."""
        buf = self._buf
        buf += data
        events: list[Message | KeepAlive | BadMessage] = []
        while buf:
            if self._pending is None:
                if buf[0] == 0x0D:  # CR: keep-alive or the start of one
                    if buf[:4] == b"\r\n\r\n":
                        del buf[:4]
                        events.append(KeepAlive.PING)
                        continue
                    if len(buf) < 2 or (len(buf) == 3 and buf[2] == 0x0D):
                        break
                    if buf[1] != 0x0A:
                        raise CodecError("invalid start line: '\\r'")
                    del buf[:2]
                    events.append(KeepAlive.PONG)
                    continue
                end = buf.find(b"\r\n\r\n", self._scan)
                if end < 0:
                    if len(buf) > self.max_header_size:
                        raise CodecError("SIP header section too large")
                    self._scan = max(0, len(buf) - 3)
                    break
                if end > self.max_header_size:
                    raise CodecError("SIP header section too large")
                raw = bytes(buf[:end])
                head: _Head | CodecError
                try:
                    head = _parse_head(raw)
                    length = _content_length(head[2])
                except CodecError as exc:
                    # the message is bad; the stream is not if its length is still clear
                    head, length = exc, _framing_length(raw)
                    if length is None:
                        raise
                if length is None:
                    raise CodecError("Content-Length missing on a stream")
                if length > self.max_body_size:
                    raise CodecError("Content-Length exceeds limit")
                self._pending = (raw, head, end + 4, length)
                self._scan = 0
            raw, head, offset, length = self._pending
            if len(buf) < offset + length:
                break
            body = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            self._pending = None
            try:
                if isinstance(head, CodecError):
                    raise head
                msg = _build(head[0], head[1], head[2], body)
                if self.validate:
                    _validate(msg)
            except CodecError as exc:
                events.append(BadMessage(raw + b"\r\n\r\n" + body, exc))
                continue
            events.append(msg)
        return events


# ---------------------------------------------------------------------------------------
# build


def make_request(
    method: str,
    uri: URI | str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A request with the given fields in order (RFC 3261 §8.1.1); Via is added by the
    transaction layer when absent."""
    if not _TOKEN.match(method):
        raise CodecError(f"invalid start line: {method!r}")
    target = parse_uri(uri) if isinstance(uri, str) else uri
    hdrs = Headers.of(headers)
    if content_type is not None:
        hdrs = hdrs.replaced("Content-Type", content_type)
    return Request(method, target, hdrs, body)


_COPIED = frozenset({"via", "from", "call-id", "cseq"})
_COPIED_100 = _COPIED | {"timestamp"}  # RFC 3261 §8.2.6.1


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, Call-ID, CSeq (and Timestamp
    on a 100) copied; To copied with ``to_tag`` added when it has none (a fresh tag for
    non-100 responses when ``to_tag`` is None); Record-Route copied on 101-299 (§12.1.1)."""
    if not 100 <= status <= 699:
        raise CodecError(f"invalid status code: {status!r}")
    out: list[tuple[str, str, str]] = []
    keep_rr = 100 < status < 300
    copied = _COPIED_100 if status == 100 else _COPIED
    has_to = False
    for item in request.headers.items:
        key = item[0]
        if key in copied or (keep_rr and key == "record-route"):
            out.append(item)
        elif key == "to" and not has_to:  # one To, even when the request had more
            has_to = True
            value = item[2]
            to = parse_name_addr(value)
            if to.tag is None and status != 100:
                value = f"{value};tag={to_tag or new_tag()}"
            out.append((key, item[1], value))
    for name, value in headers:
        out.append((header_key(name), name, value))
    resp = Response(
        status,
        reason if reason is not None else REASON_PHRASES.get(status, "Unknown"),
        Headers(tuple(out)),
        body,
    )
    if content_type is not None:
        resp = resp.replace_header("Content-Type", content_type)
    return resp
