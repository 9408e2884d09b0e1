"""MIME Content-Type values and multipart/mixed bodies (RFC 2045 §5.1, RFC 2046 §5.1).

Why it looks like this
----------------------
Group-chat INVITEs carry ``multipart/mixed`` with the SDP offer and an
``application/resource-lists+xml`` part (``Content-Disposition:
recipient-list``, RFC 5366); 1-1 INVITEs may carry the first message as a
``message/cpim`` part.  Parts keep their headers as an ordered list of
``(name, value)`` pairs, exactly as received, and ``Part.build`` writes the
usual set (Content-Type, Content-Disposition, Content-ID, Content-Length).

Parsing is liberal: LF-only line ends, a preamble and an epilogue, transport
padding after a delimiter and folded part headers are accepted.  Serializing
is canonical: no preamble, CRLF, and a CRLF after the close delimiter.  A
delimiter is recognised only at the start of a line, so a body that merely
contains the boundary text mid-line is not split; ``serialize`` refuses a
part whose body contains ``--boundary`` at a line start.

``ContentType`` parses ``type/subtype;param=value`` with quoted-string
parameters (RFC 2045 §5.1); the CPIM codec and the SIP layer use it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current

CONTENT_TYPE = "multipart/mixed"

MAX_HEADER_LINES = DEFAULT_LIMITS.mime_header_lines
"""Most lines in one MIME header block by default (a body part's, or CPIM's through
``sip.cpim``); ``sip.limits.current().mime_header_lines`` is the one in force."""
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass(frozen=True)
class ContentType:
    """A Content-Type value: lower-cased ``type/subtype`` and ordered parameters."""

    media_type: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Returns a parameter value (name compared case-insensitively), or None."""
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None

    def __str__(self) -> str:
        out = self.media_type
        for key, value in self.params:
            quoted = _TOKEN.fullmatch(value) is None
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out += f';{key}="{escaped}"' if quoted else f";{key}={value}"
        return out


def parse_content_type(value: str) -> ContentType:
    """Parses a Content-Type header value (RFC 2045 §5.1)."""
    # cached: ContentType is immutable and a few values make up nearly all traffic
    if len(value) <= _CACHED_LENGTH:
        return _cached_content_type(value)
    return _parse_content_type(value)


def _parse_content_type(value: str) -> ContentType:
    text = value.strip()
    head, _, rest = text.partition(";")
    kind, slash, sub = head.strip().partition("/")
    if not slash or _TOKEN.fullmatch(kind) is None or _TOKEN.fullmatch(sub.strip()) is None:
        raise CodecError(f"invalid Content-Type {text!r}")
    params: list[tuple[str, str]] = []
    pos = 0
    last = len(rest.rstrip())  # ``rest[pos:].strip()`` is non-empty while pos < last
    while pos < last:
        eq = rest.find("=", pos)
        name = rest[pos:eq].strip() if eq >= 0 else ""
        if _TOKEN.fullmatch(name) is None:
            raise CodecError(f"invalid Content-Type parameter in {text!r}")
        pos = eq + 1
        while pos < len(rest) and rest[pos] in " \t":
            pos += 1
        if rest[pos : pos + 1] == '"':
            chars: list[str] = []
            pos += 1
            while pos < len(rest) and rest[pos] != '"':
                if rest[pos] == "\\" and pos + 1 < len(rest):
                    pos += 1
                chars.append(rest[pos])
                pos += 1
            if pos >= len(rest):
                raise CodecError(f"unterminated quoted string in {text!r}")
            param_value = "".join(chars)
            pos += 1
            end = rest.find(";", pos)
            end = len(rest) if end < 0 else end
            if rest[pos:end].strip():
                raise CodecError(f"invalid Content-Type parameter in {text!r}")
        else:
            end = rest.find(";", pos)
            end = len(rest) if end < 0 else end
            param_value = rest[pos:end].strip()
        params.append((name, param_value))
        pos = end + 1
    return ContentType(f"{kind.lower()}/{sub.strip().lower()}", tuple(params))


_CACHED_LENGTH = 256
"""Longest value whose parse is cached (a cache keeps its keys alive)."""
_cached_content_type = lru_cache(maxsize=256)(_parse_content_type)


Headers = tuple[tuple[str, str], ...]


def header_value(headers: Headers, name: str) -> str | None:
    """Returns the first value of header ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key == name or key.lower() == wanted:
            return value
    return None


def parse_headers(block: bytes, what: str) -> Headers:
    """Parses a MIME header block (no final blank line); folded lines are joined."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError(f"{what}: headers are not UTF-8") from None
    lines = text.split("\n")
    max_lines = current().mime_header_lines
    if len(lines) > max_lines:
        raise CodecError(f"{what}: more than {max_lines} header lines")
    headers: list[tuple[str, str]] = []
    folded: dict[int, list[str]] = {}  # continuation lines, joined once at the end
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if "\r" in line:
            raise CodecError(f"{what}: malformed header line {number}")
        if line[:1] in (" ", "\t") and headers:
            folded.setdefault(len(headers) - 1, [headers[-1][1]]).append(line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name.strip()) is None:
            raise CodecError(f"{what}: malformed header line {number}")
        headers.append((name.strip(), value.strip()))
    for index, pieces in folded.items():
        headers[index] = (headers[index][0], " ".join(p for p in pieces if p))
    return tuple(headers)


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """Splits at the first blank line: (header block, rest), or None when there is none."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return data[:lf], data[lf + 2 :]
    if crlf >= 0:
        return data[:crlf], data[crlf + 4 :]
    return None


@dataclass(frozen=True)
class Part:
    """One body part: its headers in wire order and its body bytes."""

    headers: Headers
    body: bytes

    @property
    def content_type(self) -> ContentType | None:
        """The parsed Content-Type, or None when the part has none."""
        value = header_value(self.headers, "Content-Type")
        return None if value is None else parse_content_type(value)

    @property
    def disposition(self) -> str | None:
        """The Content-Disposition value without parameters, lower-cased."""
        value = header_value(self.headers, "Content-Disposition")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    @staticmethod
    def build(
        content_type: str,
        body: bytes,
        *,
        disposition: str | None = None,
        content_id: str | None = None,
        with_length: bool = True,
    ) -> Part:
        """Builds a part with the usual headers, in the order RCS clients send them."""
        headers: list[tuple[str, str]] = [("Content-Type", content_type)]
        if disposition is not None:
            headers.append(("Content-Disposition", disposition))
        if content_id is not None:
            headers.append(("Content-ID", content_id))
        if with_length:
            headers.append(("Content-Length", str(len(body))))
        return Part(tuple(headers), body)


@dataclass(frozen=True)
class Multipart:
    """A multipart body: its boundary and parts."""

    boundary: str
    parts: tuple[Part, ...]

    @property
    def content_type(self) -> str:
        """The Content-Type header value announcing this body."""
        return str(ContentType(CONTENT_TYPE, (("boundary", self.boundary),)))

    def find(self, media_type: str) -> Part | None:
        """Returns the first part whose Content-Type is ``media_type``, or None."""
        for part in self.parts:
            ctype = part.content_type
            if ctype is not None and ctype.media_type == media_type.lower():
                return part
        return None


def _delimiter_at(data: bytes, delim: bytes, start: int) -> int:
    """Index of ``delim`` at the start of a line at or after ``start``; -1 if none."""
    if start == 0 and data.startswith(delim):
        return 0
    pos = data.find(b"\n" + delim, max(start - 1, 0))
    return -1 if pos < 0 else pos + 1


def parse(data: bytes, content_type: str) -> Multipart:
    """Parses a multipart body given the Content-Type header value that announced it."""
    ctype = parse_content_type(content_type)
    if not ctype.media_type.startswith("multipart/"):
        raise CodecError(f"multipart: not a multipart type {ctype.media_type!r}")
    boundary = ctype.param("boundary")
    if boundary is None:
        raise CodecError("multipart: Content-Type has no boundary parameter")
    if _BCHARS.fullmatch(boundary) is None:
        raise CodecError("multipart: invalid boundary")
    delim = b"--" + boundary.encode("ascii")
    pos = _delimiter_at(data, delim, 0)
    if pos < 0:
        raise CodecError("multipart: no boundary delimiter found")
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if data[pos : pos + 2] == b"--":
            break
        eol = data.find(b"\n", pos)
        if eol < 0 or data[pos:eol].strip(b" \t\r"):
            raise CodecError("multipart: garbage after boundary delimiter")
        start = eol + 1
        nxt = _delimiter_at(data, delim, start)
        if nxt < 0:
            raise CodecError("multipart: missing close delimiter")
        end = nxt - 1
        if end > start and data[end - 1 : end] == b"\r":
            end -= 1
        parts.append(_parse_part(data[start : max(end, start)]))
        pos = nxt
    if not parts:
        raise CodecError("multipart: no body parts")
    return Multipart(boundary, tuple(parts))


def _parse_part(raw: bytes) -> Part:
    split = split_head(raw)
    if split is None:
        return Part(parse_headers(raw.rstrip(b"\r\n"), "multipart"), b"")
    head, body = split
    return Part(parse_headers(head, "multipart") if head else (), body)


def serialize(multipart: Multipart) -> bytes:
    """Serializes a multipart body with CRLF line ends and a CRLF after the close delimiter."""
    if _BCHARS.fullmatch(multipart.boundary) is None:
        raise CodecError("multipart: invalid boundary")
    if not multipart.parts:
        raise CodecError("multipart: no body parts")
    delim = b"--" + multipart.boundary.encode("ascii")
    out = bytearray()
    for part in multipart.parts:
        if _delimiter_at(part.body, delim, 0) >= 0:
            raise CodecError("multipart: boundary occurs inside a body part")
        out += delim + b"\r\n"
        for name, value in part.headers:
            if "\r" in value or "\n" in value or _TOKEN.fullmatch(name) is None:
                raise CodecError("multipart: invalid header in a body part")
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + part.body + b"\r\n"
    out += delim + b"--\r\n"
    return bytes(out)
