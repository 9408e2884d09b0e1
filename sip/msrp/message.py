"""MSRP frames as frozen dataclasses, with their parse/serialize pair (RFC 4975 §7, §9).

# Why this shape
#
# One dataclass covers requests (``method`` set) and responses (``status``
# set): both share To-Path, From-Path, the other headers in wire order, an
# optional Content-Type and body, and the end-line's continuation flag.
# ``parse_message`` takes exactly one complete frame (the stream splitter in
# parser.py finds frame boundaries by searching the end-line bytes); it is
# strict about the grammar that matters (start line, end-line, paths, typed
# headers) and keeps unknown headers verbatim (docs/protocol-mapping.md "Interoperability rules").
# ``serialize_message`` always writes To-Path then From-Path first, as RFC 4975
# §9 and Kamailio's relay demand (testbed NOTES §5), with CRLF line ends.
# Typed headers (Byte-Range, Status, Success/Failure-Report, Expires, Use-Path)
# are validated in ``parse_message`` so their accessors never fail later.
# Limits: a header block of at most ``MAX_HEADER_SIZE`` bytes and ``MAX_HEADERS`` lines,
# numbers of bounded length (a frame may be 4 MiB, its headers need not be).
# Speed (four frames per chat message): the stream parser hands over the start
# line it already parsed (``parse_after_start_line``), the header block is decoded
# once, the usual header names skip the name regex, Byte-Range parses are cached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NewType

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current, read_uint
from sip.msrp.uri import MSRPURI, parse_path, serialize_path

TransactionId = NewType("TransactionId", str)
"""An MSRP transaction id (RFC 4975 §7.1: ``ident``, 4..32 characters)."""
MSRPMessageId = NewType("MSRPMessageId", str)
"""An MSRP Message-ID (RFC 4975 §7.1.1); not the IMDN Message-ID."""
StartLine = tuple[TransactionId, str | None, int | None, str | None]
"""A parsed start line: transaction id, method, status code, reason."""

MAX_HEADER_SIZE = DEFAULT_LIMITS.msrp_header_size
"""Largest header block of a frame by default, in bytes (a chat SEND's is about 200; paths
are short); ``sip.limits.current().msrp_header_size`` is the one in force."""
MAX_HEADERS = DEFAULT_LIMITS.msrp_headers
"""Most header lines in a frame by default (``current().msrp_headers``)."""
END_LINE_PREFIX = b"-------"
_END_LINE_TEXT = END_LINE_PREFIX.decode()
CONTINUATION_FLAGS = frozenset("$+#")
FLAG_END, FLAG_MORE, FLAG_ABORT = "$", "+", "#"

REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Message Too Large",
    415: "Unsupported Media Type",
    423: "Interval Out-of-Bounds",
    481: "Session Does Not Exist",
    501: "Not Implemented",
    506: "Session Already Bound",
}

IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}")
_METHOD = re.compile(r"[A-Z]+")
_HNAME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*")
_BYTE_RANGE = re.compile(r"([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)")
_STATUS = re.compile(r"([0-9]{3}) ([0-9]{3})(?: (.*))?")
_KNOWN_METHODS = frozenset({"SEND", "REPORT", "AUTH", "NICKNAME"})
_KNOWN_HEADERS = {
    name: name.lower()
    for name in (
        "To-Path",
        "From-Path",
        "Content-Type",
        "Message-ID",
        "Byte-Range",
        "Success-Report",
        "Failure-Report",
        "Status",
        "Expires",
        "Min-Expires",
        "Max-Expires",
        "Use-Path",
        "Authorization",
        "WWW-Authenticate",
        "Authentication-Info",
        "Use-Nickname",
    )
}
"""Header names as the bridge and common peers spell them, each matching ``_HNAME``."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``Byte-Range: start-end/total`` (RFC 4975 §7.1.1); ``None`` stands for ``*``."""

    start: int
    end: int | None
    total: int | None

    def __str__(self) -> str:
        end = "*" if self.end is None else str(self.end)
        total = "*" if self.total is None else str(self.total)
        return f"{self.start}-{end}/{total}"


@dataclass(frozen=True, slots=True)
class StatusHeader:
    """``Status: 000 code reason`` of a REPORT (RFC 4975 §7.1.2)."""

    code: int
    reason: str = ""
    namespace: int = 0

    def __str__(self) -> str:
        text = f"{self.namespace:03d} {self.code:03d}"
        return f"{text} {self.reason}" if self.reason else text


def parse_byte_range(value: str) -> ByteRange:
    """Parse a Byte-Range value (RFC 4975 §9); raises CodecError."""
    # cached: ByteRange is immutable and a chat repeats the same small ranges
    if len(value) <= _CACHED_LENGTH:
        return _cached_byte_range(value)
    return _parse_byte_range(value)


def _parse_byte_range(value: str) -> ByteRange:
    m = _BYTE_RANGE.fullmatch(value.strip())
    if m is None:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    first, last, size = m.groups()
    start = int(first)
    end = None if last == "*" else int(last)
    total = None if size == "*" else int(size)
    if start < 1:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    if end is not None and end < start - 1:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    if total is not None and end is not None and end > total:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    return ByteRange(start, end, total)


_CACHED_LENGTH = 64
"""Longest Byte-Range value whose parse is cached (a cache keeps its keys alive)."""
_cached_byte_range = lru_cache(maxsize=1024)(_parse_byte_range)


def parse_status_header(value: str) -> StatusHeader:
    """Parse a Status header value (RFC 4975 §9); raises CodecError."""
    m = _STATUS.fullmatch(value.strip())
    if m is None:
        raise CodecError(f"invalid Status: {value!r}")
    return StatusHeader(int(m.group(2)), m.group(3) or "", int(m.group(1)))


_VALIDATORS: dict[str, tuple[str, ...] | None] = {
    "byte-range": None,
    "status": None,
    "success-report": ("yes", "no"),
    "failure-report": ("yes", "no", "partial"),
    "expires": None,
    "min-expires": None,
    "max-expires": None,
    "use-path": None,
    "message-id": None,
}


def _validate(key: str, name: str, value: str) -> None:
    """Checks a typed header; ``key`` is ``name`` lower-cased."""
    if key not in _VALIDATORS:
        return
    allowed = _VALIDATORS[key]
    if allowed is not None:
        if value not in allowed:
            raise CodecError(f"invalid {name}: {value!r}")
    elif key == "byte-range":
        parse_byte_range(value)
    elif key == "status":
        parse_status_header(value)
    elif key == "use-path":
        parse_path(value)
    elif key == "message-id":
        if IDENT.fullmatch(value) is None:
            raise CodecError(f"invalid Message-ID: {value!r}")
    elif read_uint(value, 10) is None:
        raise CodecError(f"invalid {name}: {value[:80]!r}")


@dataclass(frozen=True, slots=True)
class MSRPMessage:
    """One MSRP frame: a request (``method``) or a response (``status``) (RFC 4975 §7)."""

    transaction_id: TransactionId
    method: str | None = None
    status: int | None = None
    reason: str | None = None
    to_path: tuple[MSRPURI, ...] = ()
    from_path: tuple[MSRPURI, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    body: bytes | None = None
    continuation: str = FLAG_END

    @property
    def is_request(self) -> bool:
        """True for requests (SEND, REPORT, AUTH, ...)."""
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = name.lower()
        for hname, value in self.headers:
            if hname == name or hname.lower() == key:
                return value
        return None

    @property
    def message_id(self) -> MSRPMessageId | None:
        """Message-ID (RFC 4975 §7.1.1)."""
        value = self.header("Message-ID")
        return MSRPMessageId(value) if value is not None else None

    @property
    def byte_range(self) -> ByteRange | None:
        """Byte-Range, or None when absent."""
        value = self.header("Byte-Range")
        return parse_byte_range(value) if value is not None else None

    @property
    def success_report(self) -> bool:
        """Success-Report; absent means no (RFC 4975 §7.1.2)."""
        return self.header("Success-Report") == "yes"

    @property
    def failure_report(self) -> str:
        """Failure-Report: ``yes`` (default), ``no`` or ``partial`` (RFC 4975 §7.1.2)."""
        return self.header("Failure-Report") or "yes"

    @property
    def status_header(self) -> StatusHeader | None:
        """The Status header of a REPORT, or None."""
        value = self.header("Status")
        return parse_status_header(value) if value is not None else None

    @property
    def use_path(self) -> tuple[MSRPURI, ...]:
        """Use-Path of an AUTH response (RFC 4976 §5.1), empty when absent."""
        value = self.header("Use-Path")
        return parse_path(value) if value is not None else ()

    @property
    def expires(self) -> int | None:
        """Expires in seconds (RFC 4976 §5.1), or None."""
        value = self.header("Expires")
        return int(value) if value is not None else None


def serialize_message(msg: MSRPMessage) -> bytes:
    """Render a frame with CRLF line ends, To-Path and From-Path first (RFC 4975 §9)."""
    tid = msg.transaction_id
    if msg.method is not None:
        first = f"MSRP {tid} {msg.method}\r\n"
    elif msg.reason:
        first = f"MSRP {tid} {msg.status:03d} {msg.reason}\r\n"
    else:
        first = f"MSRP {tid} {msg.status:03d}\r\n"
    parts = [
        first,
        "To-Path: ",
        serialize_path(msg.to_path),
        "\r\nFrom-Path: ",
        serialize_path(msg.from_path),
        "\r\n",
    ]
    for name, value in msg.headers:
        parts += (name, ": ", value, "\r\n")
    if msg.content_type is not None:
        parts += ("Content-Type: ", msg.content_type, "\r\n")
    tail = f"{_END_LINE_TEXT}{tid}{msg.continuation}\r\n"
    if msg.body is None:
        parts.append(tail)
        return "".join(parts).encode()
    parts.append("\r\n")
    return b"".join(("".join(parts).encode(), msg.body, b"\r\n", tail.encode()))


def parse_start_line(line: bytes) -> StartLine:
    """Parse ``MSRP tid METHOD`` or ``MSRP tid code [reason]``; raises CodecError."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise CodecError("invalid MSRP start line: not ASCII") from None
    parts = text.split(" ", 3)
    if len(parts) < 3 or parts[0] != "MSRP":
        raise CodecError(f"invalid MSRP start line: {text[:80]!r}")
    tid = parts[1]
    if IDENT.fullmatch(tid) is None:
        raise CodecError(f"invalid MSRP transaction id: {tid[:40]!r}")
    word = parts[2]
    if len(parts) == 3 and (word in _KNOWN_METHODS or _METHOD.fullmatch(word)):
        return TransactionId(tid), word, None, None
    if len(word) == 3 and word.isdigit():
        reason = parts[3] if len(parts) == 4 else None
        return TransactionId(tid), None, int(word), reason
    raise CodecError(f"invalid MSRP start line: {text[:80]!r}")


def parse_message(frame: bytes) -> MSRPMessage:
    """Parse one complete frame, end-line included (RFC 4975 §9); raises CodecError."""
    line_end = frame.find(b"\r\n")
    if line_end < 0:
        raise CodecError("invalid MSRP frame: no CRLF after the start line")
    return parse_after_start_line(frame, line_end, parse_start_line(frame[:line_end]))


def _header_lines(head: bytes) -> tuple[list[str], bool]:
    """The header lines decoded as UTF-8, up to the first that is not; and whether all were."""
    try:
        return head.decode("utf-8").split("\r\n"), True
    except UnicodeDecodeError as exc:
        cut = head.rfind(b"\r\n", 0, exc.start)  # the lines before the bad one are fine
        return (head[:cut].decode("utf-8").split("\r\n") if cut >= 0 else []), False


def parse_after_start_line(
    frame: bytes,
    line_end: int,
    start: StartLine,
) -> MSRPMessage:
    """``parse_message`` for a frame whose start line (ending at ``line_end``) is parsed."""
    tid, method, status, reason = start
    tail = END_LINE_PREFIX + tid.encode()
    size = len(frame)
    if not frame.endswith(b"\r\n") or size < line_end + 2 + len(tail) + 3:
        raise CodecError("invalid MSRP frame: missing end-line")
    flag = chr(frame[-3])
    end = size - 3 - len(tail)
    if not frame.startswith(tail, end) or flag not in CONTINUATION_FLAGS:
        raise CodecError("invalid MSRP frame: missing end-line")
    if end < line_end + 2 or frame[end - 2 : end] != b"\r\n":
        raise CodecError("invalid MSRP frame: missing end-line")
    region = frame[line_end + 2 : end - 2]
    sep = region.find(b"\r\n\r\n")
    body: bytes | None = None
    if sep >= 0:
        head, body = region[:sep], region[sep + 4 :]
    elif region.endswith(b"\r\n"):
        head = region[:-2]  # a stray empty line before the end-line: no body
    else:
        head = region
    limits = current()
    if len(head) > limits.msrp_header_size:
        raise CodecError(f"MSRP header block larger than {limits.msrp_header_size} bytes")
    to_path: tuple[MSRPURI, ...] | None = None
    from_path: tuple[MSRPURI, ...] | None = None
    content_type: str | None = None
    headers: list[tuple[str, str]] = []
    lines, complete = _header_lines(head) if head else ([], True)
    if len(lines) > limits.msrp_headers:
        raise CodecError(f"more than {limits.msrp_headers} MSRP header lines")
    for text in lines:
        name, colon, value = text.partition(":")
        key = _KNOWN_HEADERS.get(name) if colon else None
        if key is None:
            if not colon or _HNAME.fullmatch(name) is None:
                raise CodecError(f"invalid MSRP header line: {text[:80]!r}")
            key = name.lower()
        value = value.strip()
        if key == "to-path":
            if to_path is not None:
                raise CodecError(f"duplicate {name} header")
            to_path = parse_path(value)
        elif key == "from-path":
            if from_path is not None:
                raise CodecError(f"duplicate {name} header")
            from_path = parse_path(value)
        elif key == "content-type":
            if content_type is not None:
                raise CodecError(f"duplicate {name} header")
            content_type = value
        else:
            _validate(key, name, value)
            headers.append((name, value))
    if not complete:
        raise CodecError("invalid MSRP header: not UTF-8")
    if to_path is None:
        raise CodecError("missing To-Path header")
    if from_path is None:
        raise CodecError("missing From-Path header")
    if body is not None and body and content_type is None:
        raise CodecError("body without Content-Type")
    return MSRPMessage(
        transaction_id=tid,
        method=method,
        status=status,
        reason=reason,
        to_path=to_path,
        from_path=from_path,
        headers=tuple(headers),
        content_type=content_type,
        body=body,
        continuation=flag,
    )
