"""message/sipfrag bodies (RFC 3420), as carried by REFER NOTIFYs (RFC 3515 §2.4.5).

A sipfrag is a well-formed part of a SIP message: an optional start line
(status line or request line), zero or more header fields, and an optional
body after an empty line. REFER progress reports use the smallest form, a
bare status line such as ``SIP/2.0 200 OK``.
"""

# Why a codec of its own rather than sip/message.py: a fragment may lack every
# mandatory header (Via, CSeq, ...) and even the start line, which the full
# message parser rightly rejects. The grammar (RFC 3420 §2):
#
#     sipfrag = [ start-line ] *message-header [ CRLF [ message-body ] ]
#
# serialize() writes CRLF line ends and "Name: value" headers; parse() accepts
# LF-only line ends, header folding (RFC 3261 §7.3.1) and a missing final CRLF,
# so serialize(parse(x)) == x holds for every canonical fragment.

from __future__ import annotations

import re
from dataclasses import dataclass

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current

CONTENT_TYPE = "message/sipfrag"
"""Media type of the body (RFC 3420 §3); REFER NOTIFYs add ``;version=2.0``."""
REFER_CONTENT_TYPE = "message/sipfrag;version=2.0"
"""Content-Type of a REFER NOTIFY body (RFC 3515 §2.4.5)."""
SIP_VERSION = "SIP/2.0"

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
MAX_LINES = DEFAULT_LIMITS.mime_header_lines
"""Most lines in a fragment's start line and headers by default (RFC 3515 NOTIFYs carry
one); ``sip.limits.current().mime_header_lines`` is the one in force."""
_STATUS_LINE = re.compile(r"^SIP/(\d+\.\d+) (\d{3}) ?(.*)$")
_REQUEST_LINE = re.compile(rf"^({_TOKEN}) (\S+) SIP/(\d+\.\d+)$")
_HEADER = re.compile(rf"^({_TOKEN})[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True, slots=True)
class StatusLine:
    """``SIP/2.0 <status> <reason>`` (RFC 3261 §7.2)."""

    status: int
    reason: str
    version: str = SIP_VERSION

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 699:
            raise CodecError(f"sipfrag status code out of range: {self.status}")
        if "\r" in self.reason or "\n" in self.reason:
            raise CodecError("sipfrag reason phrase holds a line break")

    def __str__(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


@dataclass(frozen=True, slots=True)
class RequestLine:
    """``<METHOD> <Request-URI> SIP/2.0`` (RFC 3261 §7.1)."""

    method: str
    uri: str
    version: str = SIP_VERSION

    def __post_init__(self) -> None:
        if not re.fullmatch(_TOKEN, self.method):
            raise CodecError(f"sipfrag method is not a token: {self.method!r}")
        if not self.uri or any(c in self.uri for c in " \r\n"):
            raise CodecError(f"sipfrag request URI is invalid: {self.uri!r}")

    def __str__(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass(frozen=True, slots=True)
class SipFrag:
    """A parsed message/sipfrag body (RFC 3420 §2)."""

    start_line: StatusLine | RequestLine | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def status(self) -> int | None:
        """The status code when the fragment starts with a status line."""
        return self.start_line.status if isinstance(self.start_line, StatusLine) else None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


def status_fragment(status: int, reason: str) -> SipFrag:
    """The fragment a REFER NOTIFY carries for a response (RFC 3515 §2.4.5)."""
    return SipFrag(StatusLine(status, reason))


def _split_head_body(data: bytes) -> tuple[str, bytes | None]:
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return _decode(data), None
    if lf < 0 or 0 <= crlf < lf:
        return _decode(data[:crlf]), data[crlf + 4 :]
    return _decode(data[:lf]), data[lf + 2 :]


def _decode(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"sipfrag start line or headers are not UTF-8: {exc.reason}") from None


def parse(data: bytes) -> SipFrag:
    """Parse a message/sipfrag body (RFC 3420 §2); raise CodecError when malformed."""
    if data.startswith((b"\r\n", b"\n")):
        # no start line and no headers: the whole thing is a body
        return SipFrag(body=data[2:] if data.startswith(b"\r\n") else data[1:])
    head, body = _split_head_body(data)
    lines = head.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    max_lines = current().mime_header_lines
    if len(lines) > max_lines:
        raise CodecError(f"sipfrag has more than {max_lines} lines")
    start: StatusLine | RequestLine | None = None
    headers: list[tuple[str, str]] = []
    folded: dict[int, list[str]] = {}  # continuation lines, joined once at the end
    for index, line in enumerate(lines):
        if index == 0 and (m := _STATUS_LINE.match(line)):
            start = StatusLine(int(m.group(2)), m.group(3), f"SIP/{m.group(1)}")
            continue
        if index == 0 and (m := _REQUEST_LINE.match(line)):
            start = RequestLine(m.group(1), m.group(2), f"SIP/{m.group(3)}")
            continue
        if line[:1] in (" ", "\t"):
            if not headers:
                raise CodecError("sipfrag continuation line without a header")
            folded.setdefault(len(headers) - 1, [headers[-1][1]]).append(line.strip())
            continue
        m = _HEADER.match(line)
        if m is None:
            raise CodecError(f"sipfrag line is neither a start line nor a header: {line!r}")
        headers.append((m.group(1), m.group(2).rstrip()))
    for i, pieces in folded.items():
        headers[i] = (headers[i][0], " ".join(pieces))
    return SipFrag(start, tuple(headers), body or b"")


def serialize(frag: SipFrag) -> bytes:
    """Serialize a fragment with CRLF line ends (RFC 3420 §2)."""
    lines: list[str] = []
    if frag.start_line is not None:
        lines.append(str(frag.start_line))
    for name, value in frag.headers:
        if not re.fullmatch(_TOKEN, name) or "\r" in value or "\n" in value:
            raise CodecError(f"sipfrag header cannot be serialized: {name!r}")
        lines.append(f"{name}: {value}")
    out = "".join(line + "\r\n" for line in lines).encode("utf-8")
    if frag.body:
        out += b"\r\n" + frag.body
    return out
