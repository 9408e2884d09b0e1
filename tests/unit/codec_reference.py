"""The chat codecs as they were before the speed work: the oracle of the equivalence tests.

test_codec_fastpath.py checks that the optimised codecs (fast paths, caches, single-pass
parsing) give exactly what these plain implementations give: the same values, the same
bytes, and the same CodecError messages.  The code below is the codecs of commit 928a895
unchanged (some functions renamed); keep it frozen, it is not product code.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta, timezone
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from sip.cpim import (
    IMDN_NAMESPACE,
    IMDN_PREFIX,
    CPIMMessage,
    Disposition,
    NameAddr,
)
from sip.errors import CodecError
from sip.imdn import ALLOWED_STATUSES, IMDN, NAMESPACE, NotificationType, Status
from sip.msrp.message import (
    CONTINUATION_FLAGS,
    END_LINE_PREFIX,
    IDENT,
    ByteRange,
    MSRPMessage,
    TransactionId,
    parse_status_header,
)
from sip.msrp.parser import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_START_LINE,
    MalformedFrame,
    _salvage,
)
from sip.msrp.uri import MSRPURI, parse_path
from sip.multipart import split_head
from sip.xmlutil import MAX_DEPTH, XMLNode, child, expect_root, render_xml, text_node, token_of

# -- sip/xmlutil.py ----------------------------------------------------------------------


def _qualify(name: str) -> str:
    uri, sep, local = name.rpartition("\x1f")
    return f"{{{uri}}}{local}" if sep else local


def parse_xml(data: bytes, what: str) -> Element:
    """Parses ``data`` into an element tree, refusing DTDs and deep nesting."""
    builder = TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="\x1f")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise CodecError(f"{what}: XML nesting deeper than {MAX_DEPTH} levels")
        builder.start(_qualify(name), {_qualify(k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_qualify(name))

    def doctype(*_args: object) -> None:
        raise CodecError(f"{what}: DOCTYPE is not allowed")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        raise CodecError(
            f"{what}: malformed XML: {message} at line {exc.lineno}, column {exc.offset}"
        ) from None
    except (LookupError, UnicodeError):
        raise CodecError(f"{what}: unsupported XML encoding") from None
    return builder.close()


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)


def parse_datetime(text: str, what: str) -> datetime:
    """Parses an RFC 3339 date-time; the result is always timezone-aware."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise CodecError(f"{what}: invalid date-time {text.strip()!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction = match.group(7) or "0"
    micro = int(fraction[:6].ljust(6, "0"))
    tz = timezone.utc
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        if offset >= timedelta(hours=24):
            raise CodecError(f"{what}: invalid date-time {text.strip()!r}")
        tz = timezone(-offset if match.group(9) == "-" else offset)
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError:
        raise CodecError(f"{what}: invalid date-time {text.strip()!r}") from None


def format_datetime(value: datetime) -> str:
    """Formats an aware datetime as RFC 3339 with milliseconds (``Z`` for UTC)."""
    offset = value.utcoffset()
    if offset is None:
        raise CodecError("date-time must be timezone-aware")
    stamp = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}"
    )
    if offset == timedelta(0):
        return stamp + "Z"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{stamp}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# -- sip/cpim.py -------------------------------------------------------------------------

_NAME_ADDR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<([^<>]*)>\s*')
_UNQUOTE = re.compile(r"\\(.)")
_NS = re.compile(r"\s*([^\s<]*)\s*<([^<>]*)>\s*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_name_addr(value: str) -> NameAddr:
    """Parses ``["name"] <uri>``; a bare URI without brackets is accepted too."""
    match = _NAME_ADDR.fullmatch(value)
    if match is None:
        bare = value.strip()
        if not bare or any(c in bare for c in ' <>"'):
            raise CodecError(f"cpim: invalid address {value.strip()!r}")
        return NameAddr(bare)
    quoted, plain, uri = match.groups()
    if not uri.strip():
        raise CodecError(f"cpim: invalid address {value.strip()!r}")
    if quoted is not None:
        return NameAddr(uri.strip(), _UNQUOTE.sub(r"\1", quoted))
    return NameAddr(uri.strip(), plain or None)


def _split_lines(block: bytes) -> list[str]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("cpim: headers are not UTF-8") from None
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _header(line: str, number: int) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon or _HEADER_NAME.fullmatch(name) is None or "\r" in value:
        raise CodecError(f"cpim: malformed header line {number}")
    return name, value.strip()


_DISPOSITIONS = frozenset(d.value for d in Disposition)


def _parse_dispositions(value: str) -> tuple[Disposition, ...]:
    result: list[Disposition] = []
    for token in value.split(","):
        token = token.strip().lower()
        if token in _DISPOSITIONS and token not in result:
            result.append(Disposition(token))
    return tuple(result)


def _route_uri(value: str) -> str:
    return parse_name_addr(value).uri


def cpim_parse(data: bytes) -> CPIMMessage:
    """Parses a message/cpim body (RFC 3862 §3)."""
    split = split_head(data)
    if split is None:
        raise CodecError("cpim: missing blank line after message headers")
    head, rest = split
    lines = [(n, line) for n, line in enumerate(_split_lines(head), start=1) if line.strip()]
    raw = [_header(line, n) for n, line in lines]
    namespaces: list[tuple[str, str]] = []
    for name, value in raw:
        if name.lower() == "ns":
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
    for name, value in raw:
        lname = name.lower()
        prefix, dot, local = lname.rpartition(".")
        imdn = dot and prefix in imdn_prefixes
        if lname == "from":
            sender = parse_name_addr(value)
        elif lname == "to":
            to.append(parse_name_addr(value))
        elif lname == "cc":
            cc.append(parse_name_addr(value))
        elif lname == "datetime":
            stamp = parse_datetime(value, "cpim: DateTime")
        elif lname == "subject" and subject is None:
            subject = value
        elif lname == "require":
            require += [v.strip() for v in value.split(",") if v.strip()]
        elif lname == "ns":
            continue
        elif imdn and local == "message-id":
            message_id = value
        elif imdn and local == "disposition-notification":
            dispositions = _parse_dispositions(value)
        elif imdn and local == "imdn-record-route":
            record_route.append(_route_uri(value))
        elif imdn and local == "imdn-route":
            route.append(_route_uri(value))
        else:
            extra.append((name, value))
    content = split_head(rest)
    if content is None:
        raise CodecError("cpim: missing blank line after content headers")
    chead, payload = content
    cheaders = [_header(line, n) for n, line in enumerate(_split_lines(chead), 1) if line.strip()]
    cfields: dict[str, str] = {}
    cextra: list[tuple[str, str]] = []
    for name, value in cheaders:
        lname = name.lower()
        if lname in _CONTENT_FIELDS and lname not in cfields:
            cfields[lname] = value
        else:
            cextra.append((name, value))
    length_text = cfields.get("content-length")
    if length_text is not None:
        if not length_text.isascii() or not length_text.isdigit():
            raise CodecError(f"cpim: invalid Content-Length {length_text!r}")
        length = int(length_text)
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


_CONTENT_FIELDS = (
    "content-type",
    "content-disposition",
    "content-id",
    "content-transfer-encoding",
    "content-length",
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


def cpim_serialize(message: CPIMMessage) -> bytes:
    """Serializes a message/cpim body in the canonical header order."""
    prefix, add_ns = _imdn_prefix(message)
    out: list[str] = []
    if message.sender is not None:
        out.append(_line("From", str(message.sender)))
    out += [_line("To", str(addr)) for addr in message.to]
    out += [_line("cc", str(addr)) for addr in message.cc]
    out += [_line("NS", f"{p} <{uri}>".lstrip()) for p, uri in message.namespaces]
    if add_ns:
        out.append(_line("NS", f"{IMDN_PREFIX} <{IMDN_NAMESPACE}>"))
    if message.message_id is not None:
        out.append(_line(f"{prefix}.Message-ID", message.message_id))
    if message.datetime is not None:
        out.append(_line("DateTime", format_datetime(message.datetime)))
    if message.subject is not None:
        out.append(_line("Subject", message.subject))
    if message.require:
        out.append(_line("Require", ", ".join(message.require)))
    if message.disposition_notification:
        value = ", ".join(d.value for d in message.disposition_notification)
        out.append(_line(f"{prefix}.Disposition-Notification", value))
    out += [_line(f"{prefix}.IMDN-Record-Route", f"<{u}>") for u in message.imdn_record_route]
    out += [_line(f"{prefix}.IMDN-Route", f"<{u}>") for u in message.imdn_route]
    out += [_line(name, value) for name, value in message.extra_headers]
    out.append("\r\n")
    body = message.body
    encoding = message.content_transfer_encoding
    if encoding is not None and encoding.lower() == "base64":
        body = base64.b64encode(body)
    if message.content_type is not None:
        out.append(_line("Content-Type", message.content_type))
    if message.content_disposition is not None:
        out.append(_line("Content-Disposition", message.content_disposition))
    if message.content_id is not None:
        out.append(_line("Content-ID", message.content_id))
    if encoding is not None:
        out.append(_line("Content-Transfer-Encoding", encoding))
    out += [_line(name, value) for name, value in message.content_extra]
    out.append(_line("Content-Length", str(len(body))))
    out.append("\r\n")
    return "".join(out).encode("utf-8") + body


# -- sip/msrp/uri.py, sip/msrp/message.py ----------------------------------------------------


def serialize_uri(uri: MSRPURI) -> str:
    """Render an MSRP URI (RFC 4975 §9)."""
    parts = [uri.scheme, "://"]
    if uri.user is not None:
        parts += [uri.user, "@"]
    parts.append(uri.host)
    if uri.port is not None:
        parts += [":", str(uri.port)]
    if uri.session_id is not None:
        parts += ["/", uri.session_id]
    parts += [";", uri.transport]
    for p in uri.params:
        parts += [";", p]
    return "".join(parts)


def serialize_path(path: tuple[MSRPURI, ...]) -> str:
    """Render a URI list with single spaces."""
    return " ".join(serialize_uri(u) for u in path)


_METHOD = re.compile(r"[A-Z]+")
_HNAME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*")
_BYTE_RANGE = re.compile(r"([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)")


def parse_byte_range(value: str) -> ByteRange:
    """Parse a Byte-Range value (RFC 4975 §9); raises CodecError."""
    m = _BYTE_RANGE.fullmatch(value.strip())
    if m is None:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    start = int(m.group(1))
    end = None if m.group(2) == "*" else int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if start < 1:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    if end is not None and end < start - 1:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    if total is not None and end is not None and end > total:
        raise CodecError(f"invalid Byte-Range: {value!r}")
    return ByteRange(start, end, total)


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


def _validate_header(name: str, value: str) -> None:
    key = name.lower()
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
    elif not value.isdigit() or len(value) > 10:
        raise CodecError(f"invalid {name}: {value!r}")


def serialize_message(msg: MSRPMessage) -> bytes:
    """Render a frame with CRLF line ends, To-Path and From-Path first (RFC 4975 §9)."""
    tid = msg.transaction_id
    if msg.method is not None:
        first = f"MSRP {tid} {msg.method}"
    else:
        first = f"MSRP {tid} {msg.status:03d}"
        if msg.reason:
            first += f" {msg.reason}"
    lines = [
        first,
        "To-Path: " + serialize_path(msg.to_path),
        "From-Path: " + serialize_path(msg.from_path),
    ]
    lines += [f"{name}: {value}" for name, value in msg.headers]
    if msg.content_type is not None:
        lines.append("Content-Type: " + msg.content_type)
    head = ("\r\n".join(lines) + "\r\n").encode()
    tail = f"{END_LINE_PREFIX.decode()}{tid}{msg.continuation}\r\n".encode()
    if msg.body is None:
        return head + tail
    return b"".join((head, b"\r\n", msg.body, b"\r\n", tail))


def parse_start_line(line: bytes) -> tuple[TransactionId, str | None, int | None, str | None]:
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
    if len(parts) == 3 and _METHOD.fullmatch(word):
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
    tid, method, status, reason = parse_start_line(frame[:line_end])
    tail = END_LINE_PREFIX + tid.encode()
    if not frame.endswith(b"\r\n") or len(frame) < line_end + 2 + len(tail) + 3:
        raise CodecError("invalid MSRP frame: missing end-line")
    flag = chr(frame[-3])
    end = len(frame) - 3 - len(tail)
    if frame[end : end + len(tail)] != tail or flag not in CONTINUATION_FLAGS:
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
    to_path: tuple[MSRPURI, ...] | None = None
    from_path: tuple[MSRPURI, ...] | None = None
    content_type: str | None = None
    headers: list[tuple[str, str]] = []
    for raw in head.split(b"\r\n") if head else ():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("invalid MSRP header: not UTF-8") from None
        name, colon, value = text.partition(":")
        if not colon or _HNAME.fullmatch(name) is None:
            raise CodecError(f"invalid MSRP header line: {text[:80]!r}")
        value = value.strip()
        key = name.lower()
        if key in ("to-path", "from-path", "content-type"):
            already = {"to-path": to_path, "from-path": from_path, "content-type": content_type}
            if already[key] is not None:
                raise CodecError(f"duplicate {name} header")
            if key == "to-path":
                to_path = parse_path(value)
            elif key == "from-path":
                from_path = parse_path(value)
            else:
                content_type = value
            continue
        _validate_header(name, value)
        headers.append((name, value))
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


# -- sip/msrp/parser.py ------------------------------------------------------------------

_FLAGS = frozenset(ord(c) for c in CONTINUATION_FLAGS)
_MSRP = b"MSRP "


class MSRPParser:
    """Splits an MSRP byte stream into frames (RFC 4975 §9); ``feed`` raises CodecError."""

    __slots__ = ("_buf", "_offset", "_tid", "_method", "_tail", "_search", "_failed", "max_frame")

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buf = bytearray()
        self._offset = 0
        self._tid: TransactionId | None = None
        self._method: str | None = None
        self._tail = b""
        self._search = 0
        self._failed = False
        self.max_frame = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf) - self._offset

    def feed(self, data: bytes) -> list[MSRPMessage | MalformedFrame]:
        """Add received bytes; return the frames they complete, in order."""
        if self._failed:
            raise CodecError("MSRP stream unusable after an earlier framing error")
        try:
            return self._feed(data)
        except CodecError:
            self._failed = True
            raise

    def _feed(self, data: bytes) -> list[MSRPMessage | MalformedFrame]:
        buf = self._buf
        buf += data
        out: list[MSRPMessage | MalformedFrame] = []
        while True:
            start = self._offset
            if self._tid is None:
                avail = len(buf) - start
                if avail == 0:
                    break
                probe = bytes(buf[start : start + len(_MSRP)])
                if not _MSRP.startswith(probe):
                    raise CodecError("invalid MSRP frame start")
                line_end = buf.find(b"\r\n", start, start + MAX_START_LINE)
                if line_end < 0:
                    if avail >= MAX_START_LINE:
                        raise CodecError("MSRP start line too long")
                    break
                tid, method, _, _ = parse_start_line(bytes(buf[start:line_end]))
                self._tid, self._method = tid, method
                self._tail = b"\r\n" + END_LINE_PREFIX + tid.encode()
                self._search = line_end
            tail = self._tail
            idx = buf.find(tail, self._search)
            if idx < 0:
                self._search = max(self._search, len(buf) - len(tail) + 1)
                if len(buf) - start > self.max_frame:
                    raise CodecError("MSRP frame too large")
                break
            stop = idx + len(tail) + 3
            if stop > len(buf):
                self._search = idx
                break
            if buf[idx + len(tail)] not in _FLAGS or buf[stop - 2 : stop] != b"\r\n":
                self._search = idx + 1
                continue
            if stop - start > self.max_frame:
                raise CodecError("MSRP frame too large")
            frame = bytes(buf[start:stop])
            tid = self._tid
            method = self._method
            self._offset = stop
            self._tid = None
            try:
                out.append(parse_message(frame))
            except CodecError as err:
                out.append(_salvage(frame, tid, method, err))
        if self._offset and (self._offset > 65536 or self._offset == len(buf)):
            del buf[: self._offset]
            self._search -= self._offset
            self._offset = 0
        return out


# -- sip/imdn.py -------------------------------------------------------------------------

_WHAT = "imdn"


def _optional_text(parent: Element, local: str) -> str | None:
    found = child(parent, NAMESPACE, local)
    return None if found is None else token_of(found)


def imdn_parse(data: bytes) -> IMDN:
    """Parses a ``message/imdn+xml`` body (RFC 5438 §7.2.1)."""
    root = parse_xml(data, _WHAT)
    expect_root(root, NAMESPACE, "imdn", _WHAT)
    message_id = _optional_text(root, "message-id")
    if not message_id:
        raise CodecError("imdn: missing message-id")
    stamp = _optional_text(root, "datetime")
    if not stamp:
        raise CodecError("imdn: missing datetime")
    found: list[tuple[NotificationType, Status]] = []
    for kind in NotificationType:
        element = child(root, NAMESPACE, kind.value)
        if element is None:
            continue
        status_elem = child(element, NAMESPACE, "status")
        statuses = [] if status_elem is None else list(status_elem)
        known = [s.tag for s in statuses if s.tag.startswith(f"{{{NAMESPACE}}}")]
        if len(known) != 1:
            raise CodecError(f"imdn: {kind.value} needs exactly one status")
        local = known[0].split("}", 1)[1]
        try:
            status = Status(local)
        except ValueError:
            raise CodecError(f"imdn: unknown status {local!r}") from None
        if status not in ALLOWED_STATUSES[kind]:
            raise CodecError(f"imdn: status {local!r} is not valid in {kind.value}")
        found.append((kind, status))
    if len(found) != 1:
        raise CodecError("imdn: expected exactly one notification element")
    kind, status = found[0]
    subject_elem = child(root, NAMESPACE, "subject")
    return IMDN(
        message_id=message_id,
        datetime=stamp,
        notification=kind,
        status=status,
        recipient_uri=_optional_text(root, "recipient-uri"),
        original_recipient_uri=_optional_text(root, "original-recipient-uri"),
        subject=None if subject_elem is None else subject_elem.text or "",
    )


def imdn_serialize(imdn: IMDN) -> bytes:
    """Serializes an IMDN document in the canonical layout."""
    if imdn.status not in ALLOWED_STATUSES[imdn.notification]:
        raise CodecError(
            f"imdn: status {imdn.status.value!r} is not valid in {imdn.notification.value}"
        )
    if (imdn.recipient_uri is None) != (imdn.original_recipient_uri is None):
        raise CodecError("imdn: recipient-uri and original-recipient-uri go together")
    if imdn.subject is not None and imdn.recipient_uri is None:
        raise CodecError("imdn: subject needs recipient-uri")
    nodes = (
        *text_node("message-id", imdn.message_id),
        *text_node("datetime", imdn.datetime),
        *text_node("recipient-uri", imdn.recipient_uri),
        *text_node("original-recipient-uri", imdn.original_recipient_uri),
        *text_node("subject", imdn.subject),
        XMLNode(
            imdn.notification.value,
            children=(XMLNode("status", children=(XMLNode(imdn.status.value),)),),
        ),
    )
    return render_xml(XMLNode("imdn", (("xmlns", NAMESPACE),), nodes), _WHAT)
