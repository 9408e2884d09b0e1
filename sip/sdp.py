"""SDP (RFC 4566) parse/serialize plus the MSRP media helpers (RFC 4975, RFC 6135, RFC 6714).

Why it looks like this
----------------------
The bridge only ever negotiates one kind of media: ``m=message <port>
TCP/MSRP *`` (or ``TCP/TLS/MSRP``).  The generic part keeps every line of a
session description so that a re-INVITE can echo the original offer, and
so that unknown attributes survive a parse/serialize cycle.  Parsing is
liberal (LF line ends, blank lines, session lines in any order before the
first ``m=``) but refuses unknown line types; serializing is canonical
(CRLF, RFC 4566 order), so ``serialize(parse(x)) == x`` for canonical input.

MSRP rules (docs/protocol-mapping.md "SDP and MSRP"):

* ``a=accept-types`` and ``a=path`` are mandatory on an MSRP media line;
* connection roles follow RFC 6135: without ``a=setup`` the offerer is
  active; an ``actpass`` offer is answered ``active`` (or ``passive`` when the
  caller prefers), ``active`` with ``passive`` and ``passive`` with ``active``:
  never both passive;
* the active side advertises port 9 (RFC 4145, discard port) in ``m=``;
* ``a=connection`` is never emitted (RFC 6135 forbids it for MSRP);
* ``a=msrp-cema`` (RFC 6714) tells the active side to connect to ``c=``/``m=``
  instead of the last URI of ``a=path``.

``a=path`` URIs stay strings here; ``sip.msrp.uri`` parses them.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field, replace

from sip.errors import CodecError
from sip.limits import DEFAULT_LIMITS, current, read_uint

CONTENT_TYPE = "application/sdp"
MSRP_PROTOCOLS = ("TCP/MSRP", "TCP/TLS/MSRP")
DISCARD_PORT = 9
"""Port an active MSRP endpoint advertises (RFC 4145 §4)."""

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_LINES = DEFAULT_LIMITS.sdp_lines
"""Most lines in one session description by default (an MSRP offer has about 15);
``sip.limits.current().sdp_lines`` is the one in force."""


class Setup(enum.StrEnum):
    """``a=setup`` values (RFC 4145 §4, used for MSRP by RFC 6135)."""

    ACTPASS = "actpass"
    ACTIVE = "active"
    PASSIVE = "passive"
    HOLDCONN = "holdconn"


@dataclass(frozen=True)
class Origin:
    """The ``o=`` line (RFC 4566 §5.2)."""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True)
class Connection:
    """A ``c=`` line (RFC 4566 §5.7)."""

    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True)
class Attribute:
    """An ``a=`` line: ``a=name`` (flag, value None) or ``a=name:value``."""

    name: str
    value: str | None = None


@dataclass(frozen=True)
class Timing:
    """A ``t=`` line with its ``r=`` lines (RFC 4566 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Media:
    """An ``m=`` section (RFC 4566 §5.14)."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[str, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    def attribute(self, name: str) -> str | None:
        """Returns the value of the first ``a=name`` ('' for a flag), or None."""
        return _first(self.attributes, name)

    def attribute_values(self, name: str) -> tuple[str, ...]:
        """Returns the values of every ``a=name`` line, in order."""
        return tuple(a.value or "" for a in self.attributes if a.name == name)


@dataclass(frozen=True)
class SessionDescription:
    """A whole SDP body (RFC 4566 §5)."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[str, ...] = ()
    timings: tuple[Timing, ...] = (Timing(),)
    zone: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[Media, ...] = field(default=())

    def attribute(self, name: str) -> str | None:
        """Returns the value of the first session-level ``a=name``, or None."""
        return _first(self.attributes, name)


def _first(attributes: tuple[Attribute, ...], name: str) -> str | None:
    for attr in attributes:
        if attr.name == name:
            return attr.value if attr.value is not None else ""
    return None


def _parse_int(text: str, what: str) -> int:
    value = read_uint(text)
    if value is None:
        raise CodecError(f"sdp: invalid {what} {text[:40]!r}")
    return value


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise CodecError(f"sdp: invalid c= line {value!r}")
    return Connection(parts[0], parts[1], parts[2])


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name:
        raise CodecError(f"sdp: invalid a= line {value!r}")
    return Attribute(name, rest if sep else None)


def _parse_media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise CodecError(f"sdp: invalid m= line {value!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _parse_int(port_text, "port")
    count = _parse_int(count_text, "port count") if count_text else None
    if port > 65535:
        raise CodecError(f"sdp: invalid port {port_text!r}")
    return Media(parts[0], port, parts[2], tuple(parts[3:]), port_count=count)


def _lines(data: bytes) -> list[tuple[str, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError("sdp: body is not UTF-8") from None
    max_lines = current().sdp_lines
    if text.count("\n") >= max_lines:
        raise CodecError(f"sdp: more than {max_lines} lines")
    result: list[tuple[str, str]] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        if "\r" in line:
            raise CodecError(f"sdp: stray CR in line {line!r}")
        if len(line) < 2 or line[1] != "=" or not line[0].isascii() or not line[0].isalpha():
            raise CodecError(f"sdp: invalid line {line!r}")
        result.append((line[0], line[2:]))
    return result


def parse(data: bytes) -> SessionDescription:
    """Parses an SDP body (RFC 4566 §5)."""
    lines = _lines(data)
    if not lines or lines[0][0] != "v":
        raise CodecError("sdp: first line is not v=")
    if lines[0][1].strip() != "0":
        raise CodecError(f"sdp: unsupported version {lines[0][1]!r}")
    origin: Origin | None = None
    connection: Connection | None = None
    single: dict[str, str] = {}  # i= u= z= k= at session level (last one wins)
    s_name: str | None = None
    s_attrs: list[Attribute] = []
    s_bw: list[str] = []
    emails: list[str] = []
    phones: list[str] = []
    timings: list[Timing] = []
    repeats: list[list[str]] = []  # r= lines of each t=
    # each m= section's a=, c= and b= lines are collected in lists and set once at the
    # end: appending to the tuples line by line was quadratic in the number of lines
    media: list[Media] = []
    sections: list[tuple[list[Attribute], list[Connection], list[str]]] = []
    for kind, value in lines[1:]:
        if kind == "m":
            media.append(_parse_media(value))
            sections.append(([], [], []))
        elif media:
            if kind == "a":
                sections[-1][0].append(_parse_attribute(value))
            elif kind == "c":
                sections[-1][1].append(_parse_connection(value))
            elif kind == "b":
                sections[-1][2].append(value)
            elif kind == "i":
                media[-1] = replace(media[-1], information=value)
            elif kind == "k":
                media[-1] = replace(media[-1], key=value)
            else:
                raise CodecError(f"sdp: {kind}= line not allowed in a media section")
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise CodecError(f"sdp: invalid o= line {value!r}")
            origin = Origin(*parts)
        elif kind == "s":
            s_name = value
        elif kind == "a":
            s_attrs.append(_parse_attribute(value))
        elif kind == "c":
            connection = _parse_connection(value)
        elif kind == "b":
            s_bw.append(value)
        elif kind == "t":
            parts = value.split()
            if len(parts) != 2:
                raise CodecError(f"sdp: invalid t= line {value!r}")
            timings.append(Timing(_parse_int(parts[0], "time"), _parse_int(parts[1], "time")))
            repeats.append([])
        elif kind == "r":
            if not timings:
                raise CodecError("sdp: r= line before any t= line")
            repeats[-1].append(value)
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind in ("i", "u", "z", "k"):
            single[kind] = value
        else:
            raise CodecError(f"sdp: unknown line type {kind}=")
    if origin is None:
        raise CodecError("sdp: missing o= line")
    if s_name is None:
        raise CodecError("sdp: missing s= line")
    return SessionDescription(
        origin=origin,
        session_name=s_name,
        information=single.get("i"),
        uri=single.get("u"),
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(s_bw),
        timings=tuple(
            replace(t, repeats=tuple(r)) if r else t for t, r in zip(timings, repeats, strict=True)
        )
        or (Timing(),),
        zone=single.get("z"),
        key=single.get("k"),
        attributes=tuple(s_attrs),
        media=tuple(
            replace(m, attributes=tuple(a), connections=tuple(c), bandwidths=tuple(b))
            if a or c or b
            else m
            for m, (a, c, b) in zip(media, sections, strict=True)
        ),
    )


def _attribute_line(attr: Attribute) -> str:
    return f"a={attr.name}" if attr.value is None else f"a={attr.name}:{attr.value}"


def _connection_line(conn: Connection) -> str:
    return f"c={conn.nettype} {conn.addrtype} {conn.address}"


def serialize(sdp: SessionDescription) -> bytes:
    """Serializes an SDP body in RFC 4566 order with CRLF line ends."""
    o = sdp.origin
    out = [
        f"v={sdp.version}",
        f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} {o.address}",
        f"s={sdp.session_name}",
    ]
    out += [f"i={sdp.information}"] if sdp.information is not None else []
    out += [f"u={sdp.uri}"] if sdp.uri is not None else []
    out += [f"e={e}" for e in sdp.emails] + [f"p={p}" for p in sdp.phones]
    out += [_connection_line(sdp.connection)] if sdp.connection is not None else []
    out += [f"b={b}" for b in sdp.bandwidths]
    for timing in sdp.timings:
        out.append(f"t={timing.start} {timing.stop}")
        out += [f"r={r}" for r in timing.repeats]
    out += [f"z={sdp.zone}"] if sdp.zone is not None else []
    out += [f"k={sdp.key}"] if sdp.key is not None else []
    out += [_attribute_line(a) for a in sdp.attributes]
    for m in sdp.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        out.append(" ".join((f"m={m.media}", port, m.proto, *m.formats)))
        out += [f"i={m.information}"] if m.information is not None else []
        out += [_connection_line(c) for c in m.connections]
        out += [f"b={b}" for b in m.bandwidths]
        out += [f"k={m.key}"] if m.key is not None else []
        out += [_attribute_line(a) for a in m.attributes]
    if any("\r" in line or "\n" in line for line in out):
        raise CodecError("sdp: a field contains a line break")
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


# --------------------------------------------------------------------------- MSRP


@dataclass(frozen=True)
class MSRPMedia:
    """What the bridge needs from an MSRP media line (RFC 4975 §8, RFC 6135, RFC 6714)."""

    address: str
    port: int
    tls: bool
    path: tuple[str, ...]
    accept_types: tuple[str, ...]
    accept_wrapped_types: tuple[str, ...] = ()
    setup: Setup | None = None
    max_size: int | None = None
    chatroom: tuple[str, ...] = ()
    cema: bool = False
    fingerprint: str | None = None
    direction: str = "sendrecv"

    def accepts(self, content_type: str, *, wrapped: bool = False) -> bool:
        """Tells whether the peer listed ``content_type`` (``*`` and ``type/*`` honoured)."""
        wanted = content_type.split(";", 1)[0].strip().lower()
        listed = self.accept_wrapped_types if wrapped else self.accept_types
        for item in listed:
            item = item.lower()
            if item in ("*", wanted) or (item.endswith("/*") and wanted.startswith(item[:-1])):
                return True
        return False


def find_msrp_media(sdp: SessionDescription) -> Media:
    """Returns the first ``m=message`` section with an MSRP protocol."""
    for m in sdp.media:
        if m.media == "message" and m.proto.upper() in MSRP_PROTOCOLS:
            return m
    raise CodecError("sdp: no MSRP media line")


def msrp_media(sdp: SessionDescription) -> MSRPMedia:
    """Extracts the MSRP media parameters from an offer or answer."""
    m = find_msrp_media(sdp)
    if m.port == 0:
        raise CodecError("sdp: MSRP media line was rejected (port 0)")
    conn = m.connections[0] if m.connections else sdp.connection
    if conn is None:
        raise CodecError("sdp: MSRP media without c= line")
    path = m.attribute("path")
    if not path or not path.split():
        raise CodecError("sdp: MSRP media without a=path")
    accept = m.attribute("accept-types")
    if not accept or not accept.split():
        raise CodecError("sdp: MSRP media without a=accept-types")
    setup_text = m.attribute("setup")
    setup: Setup | None = None
    if setup_text is not None:
        try:
            setup = Setup(setup_text.strip().lower())
        except ValueError:
            raise CodecError(f"sdp: invalid a=setup value {setup_text!r}") from None
    max_size_text = m.attribute("max-size")
    max_size = None if max_size_text is None else _parse_int(max_size_text.strip(), "max-size")
    direction = "sendrecv"
    for attr in m.attributes:
        if attr.name in DIRECTIONS:
            direction = attr.name
    return MSRPMedia(
        address=conn.address,
        port=m.port,
        tls=m.proto.upper() == "TCP/TLS/MSRP",
        path=tuple(path.split()),
        accept_types=tuple(accept.split()),
        accept_wrapped_types=tuple((m.attribute("accept-wrapped-types") or "").split()),
        setup=setup,
        max_size=max_size,
        chatroom=tuple((m.attribute("chatroom") or "").split()),
        cema=m.attribute("msrp-cema") is not None,
        fingerprint=m.attribute("fingerprint") or sdp.attribute("fingerprint"),
        direction=direction,
    )


def answer_setup(offer: Setup | None, *, prefer_active: bool = True) -> Setup:
    """Picks the answerer's role for an offered ``a=setup`` (RFC 6135 §4.2;
    docs/protocol-mapping.md "SDP and MSRP")."""
    if offer is None or offer is Setup.ACTIVE:
        return Setup.PASSIVE
    if offer is Setup.PASSIVE:
        return Setup.ACTIVE
    if offer is Setup.ACTPASS:
        return Setup.ACTIVE if prefer_active else Setup.PASSIVE
    raise CodecError("sdp: a=setup:holdconn offer cannot be answered")


def is_active(local: Setup | None, *, offerer: bool) -> bool:
    """Tells whether the local side opens the MSRP connection (RFC 4975 §5.4, RFC 6135)."""
    if local is None:
        return offerer
    if local is Setup.ACTPASS:
        raise CodecError("sdp: actpass is not a negotiated role")
    return local is Setup.ACTIVE


def answerer_active(offered: MSRPMedia) -> bool:
    """Tells whether we, answering ``offered``, open the MSRP connection (RFC 6135 §4.2:
    active to ``actpass``)."""
    return answer_setup(offered.setup) is Setup.ACTIVE


def offerer_active(answered: MSRPMedia) -> bool:
    """Tells whether we, having offered ``actpass``, open the MSRP connection (RFC 6135 §4.2).

    An answer without ``a=setup`` leaves the offerer active (RFC 4975 §5.4); an answer that
    still says ``actpass`` or ``holdconn`` raises CodecError.
    """
    if answered.setup in (Setup.ACTPASS, Setup.HOLDCONN):
        raise CodecError(f"sdp: the answer says {answered.setup.value}")
    return answered.setup is not Setup.ACTIVE


def new_origin_id() -> str:
    """A fresh numeric ``o=`` session id (RFC 8866 §5.2)."""
    return str(secrets.randbelow(10**12) + 1)


def _msrp_section(
    *,
    port: int,
    tls: bool,
    path: tuple[str, ...],
    accept_types: tuple[str, ...],
    accept_wrapped_types: tuple[str, ...],
    setup: Setup | None,
    max_size: int | None,
    chatroom: tuple[str, ...],
    cema: bool,
    fingerprint: str | None,
) -> Media:
    if not path:
        raise CodecError("sdp: MSRP media needs at least one path URI")
    if not accept_types:
        raise CodecError("sdp: MSRP media needs accept-types")
    attrs = [Attribute("accept-types", " ".join(accept_types))]
    if accept_wrapped_types:
        attrs.append(Attribute("accept-wrapped-types", " ".join(accept_wrapped_types)))
    if setup is not None:
        attrs.append(Attribute("setup", setup.value))
    attrs.append(Attribute("path", " ".join(path)))
    if max_size is not None:
        attrs.append(Attribute("max-size", str(max_size)))
    if chatroom:
        attrs.append(Attribute("chatroom", " ".join(chatroom)))
    if cema:
        attrs.append(Attribute("msrp-cema"))
    if fingerprint is not None:
        attrs.append(Attribute("fingerprint", fingerprint))
    attrs.append(Attribute("sendrecv"))
    return Media(
        media="message",
        port=DISCARD_PORT if setup is Setup.ACTIVE else port,
        proto="TCP/TLS/MSRP" if tls else "TCP/MSRP",
        formats=("*",),
        attributes=tuple(attrs),
    )


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def msrp_offer(
    *,
    address: str,
    port: int,
    path: tuple[str, ...],
    accept_types: tuple[str, ...],
    accept_wrapped_types: tuple[str, ...] = (),
    setup: Setup | None = Setup.ACTPASS,
    session_id: str,
    session_version: int = 1,
    username: str = "-",
    max_size: int | None = None,
    chatroom: tuple[str, ...] = (),
    cema: bool = False,
    tls: bool = False,
    fingerprint: str | None = None,
) -> SessionDescription:
    """Builds an MSRP offer (RFC 4975 §8, RFC 6135): ``actpass`` by default, port 9 when ``active``.

    ``setup=None`` leaves ``a=setup`` out (pre-RFC 6135 peers: the offerer is active).
    """
    if tls and fingerprint is None:
        raise CodecError("sdp: TCP/TLS/MSRP needs a fingerprint")
    conn = Connection("IN", _addrtype(address), address)
    media = _msrp_section(
        port=port,
        tls=tls,
        path=path,
        accept_types=accept_types,
        accept_wrapped_types=accept_wrapped_types,
        setup=setup,
        max_size=max_size,
        chatroom=chatroom,
        cema=cema,
        fingerprint=fingerprint,
    )
    origin = Origin(username, session_id, str(session_version), "IN", conn.addrtype, address)
    return SessionDescription(origin=origin, connection=conn, media=(media,))


def msrp_answer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    path: tuple[str, ...],
    accept_types: tuple[str, ...],
    accept_wrapped_types: tuple[str, ...] = (),
    session_id: str,
    session_version: int = 1,
    username: str = "-",
    prefer_active: bool = True,
    max_size: int | None = None,
    fingerprint: str | None = None,
) -> SessionDescription:
    """Builds the answer to an MSRP offer with the RFC 6135 role (see ``answer_setup``).

    The answer mirrors the offer's transport (TLS or not) and CEMA support;
    when the answerer becomes active its ``m=`` port is 9.
    """
    offered = msrp_media(offer)
    setup = answer_setup(offered.setup, prefer_active=prefer_active)
    if offered.tls and fingerprint is None:
        raise CodecError("sdp: TCP/TLS/MSRP needs a fingerprint")
    conn = Connection("IN", _addrtype(address), address)
    media = _msrp_section(
        port=port,
        tls=offered.tls,
        path=path,
        accept_types=accept_types,
        accept_wrapped_types=accept_wrapped_types,
        setup=setup,
        max_size=max_size,
        chatroom=(),
        cema=offered.cema,
        fingerprint=fingerprint if offered.tls else None,
    )
    origin = Origin(username, session_id, str(session_version), "IN", conn.addrtype, address)
    return SessionDescription(origin=origin, connection=conn, media=(media,))
