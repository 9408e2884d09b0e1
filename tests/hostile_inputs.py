"""Benign and worst-known hostile inputs of every parser, by size (issue 13).

``CASES`` lists, per parser, a call that parses bytes, a benign input of about ``n`` bytes
(the realistic shape that costs the parser most per byte) and the hostile shapes found so
far (quadratic backtracking, repeated concatenation, namespace amplification, numbers
beyond ``int()``'s digit limit, counts beyond the limits).  Used by
tests/unit/test_parser_limits.py (only ``CodecError``, linear time) and by
bench/parser_cost.py (microseconds per KB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip import conference, cpim, iscomposing, multipart, resource_lists, sdp, sipfrag
from sip.message import StreamParser, parse_message
from sip.msrp.message import parse_message as parse_msrp
from sip.msrp.parser import MSRPParser

Make = Callable[[int], bytes]


@dataclass(frozen=True)
class Case:
    """One parser: ``parse(data)`` and its inputs of about ``n`` bytes."""

    parse: Callable[[bytes], object]
    benign: Make
    hostile: dict[str, Make] = field(default_factory=dict)


def _fill(unit: bytes, n: int) -> bytes:
    return unit * max(1, n // len(unit))


# -- SIP --------------------------------------------------------------------------------

_SIP_HEAD = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 MESSAGE\r\n"
)


def _sip(extra: bytes = b"", body: bytes = b"", head: bytes = _SIP_HEAD) -> bytes:
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _sip_benign(n: int) -> bytes:
    # up to 200 ordinary header fields of up to 256 bytes, the rest as body
    count = min(200, max(1, n // 300))
    width = min(256, max(8, n // count - 16))
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * width) for i in range(count))
    return _sip(headers, b"x" * max(0, n - len(headers) - len(_SIP_HEAD)))


SIP_HOSTILE: dict[str, Make] = {
    "folded lines": lambda n: _sip(b"Subject: x\r\n" + _fill(b" " * 60 + b"y\r\n", min(n, 60000))),
    "header count": lambda n: _sip(_fill(b"a:b\r\n", min(n, 60000))),
    "digits in CSeq": lambda n: _sip(head=_SIP_HEAD.replace(b"314159", b"9" * n)),
    "digits in port": lambda n: _sip(
        head=_SIP_HEAD.replace(b"bob@example.com SIP", b"b@h:" + b"9" * n + b" SIP")
    ),
    "spaces in To": lambda n: _sip(
        head=_SIP_HEAD.replace(b"To: <", b"To: a" + b" " * min(n, 60000) + b"b <")
    ),
    "two To": lambda n: _sip(b"To: <sip:x@h;" + b"a" * n + b"\r\n"),
}


def _stream(data: bytes) -> object:
    return StreamParser().feed(data)


# -- CPIM -------------------------------------------------------------------------------

_CPIM_HEAD = (
    b"From: <sip:anonymous@anonymous.invalid>\r\nTo: <sip:anonymous@anonymous.invalid>\r\n"
    b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: Oxi0ISKPG\r\n"
    b"DateTime: 2024-03-01T10:20:30.000Z\r\n"
)


def _cpim_benign(n: int) -> bytes:
    count = min(200, max(1, n // 300))
    width = min(256, max(8, n // count - 24))
    headers = b"".join(b"x.H%d: <sip:%s@h>\r\n" % (i, b"u" * width) for i in range(count))
    body = b"b" * max(0, n - len(headers))
    return _CPIM_HEAD + headers + b"\r\nContent-Type: text/plain\r\n\r\n" + body


CPIM_HOSTILE: dict[str, Make] = {
    "spaces in To (issue)": lambda n: (
        b"From: <sip:a@b>\r\nTo: a" + b" " * n + b"b\r\n\r\nContent-Type: text/plain\r\n\r\nhi"
    ),
    "spaces before <": lambda n: b"From: a" + b" " * n + b"<sip:a@b\r\n\r\n\r\n",
    "escapes in name": lambda n: b'From: "' + b"\\a" * (n // 2) + b" <sip:a@b>\r\n\r\n\r\n",
    "digits in Content-Length": lambda n: (
        _CPIM_HEAD + b"\r\nContent-Length: " + b"9" * n + b"\r\n\r\n"
    ),
    "header count": lambda n: _fill(b"a:b\r\n", n) + b"\r\n\r\n",
}


# -- SDP --------------------------------------------------------------------------------

_SDP_HEAD = (
    b"v=0\r\no=- 3915446731 3915446731 IN IP4 10.0.2.15\r\ns=-\r\nc=IN IP4 10.0.2.15\r\n"
    b"t=0 0\r\nm=message 20000 TCP/MSRP *\r\n"
)


def _sdp_benign(n: int) -> bytes:
    count = min(200, max(1, n // 300))
    width = max(8, n // count - 20)
    return _SDP_HEAD + b"".join(b"a=x-attr%d:%s\r\n" % (i, b"v" * width) for i in range(count))


SDP_HOSTILE: dict[str, Make] = {
    "a= lines (issue)": lambda n: _SDP_HEAD + _fill(b"a=x\r\n", n),
    "a= lines below the limit": lambda n: _SDP_HEAD + b"a=x\r\n" * min(4000, n // 5),
    "r= lines": lambda n: _SDP_HEAD.replace(
        b"t=0 0\r\n", b"t=0 0\r\n" + b"r=1\r\n" * min(4000, n // 5)
    ),
    "digits in port": lambda n: _SDP_HEAD.replace(b"20000", b"9" * n),
}


# -- XML (resource-lists, isComposing, conference-info share sip.xmlutil) ----------------

_RL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>%s</list>'
    b"</resource-lists>"
)


def _xml_benign(n: int) -> bytes:
    entry = b'<entry uri="sip:+4915100000000@ims.example.com;user=phone"/>\n'
    return _RL % _fill(entry, min(n, 18000 * len(entry)))


def _xml_parse(data: bytes) -> object:
    return resource_lists.parse(data)


XML_HOSTILE: dict[str, Make] = {
    "long namespace (issue)": lambda n: (
        b'<?xml version="1.0"?><isComposing xmlns="%s">' % (b"x" * (n // 2))
        + _fill(b"<a/>", n // 2)
        + b"</isComposing>"
    ),
    "namespace just below the limit": lambda n: (
        b'<r xmlns="%s">' % (b"x" * 500) + _fill(b"<a/>", min(n, 80000)) + b"</r>"
    ),
    "element count": lambda n: b"<r>" + _fill(b"<a/>", n) + b"</r>",
    "attributes": lambda n: b"<r " + b" ".join(b"a%d='1'" % i for i in range(n // 8)) + b"/>",
    "long attribute": lambda n: b"<r a='" + b"v" * n + b"'/>",
    "namespace declarations": lambda n: (
        b"<r>" + b"".join(b"<a xmlns:p%d='u'/>" % i for i in range(n // 20)) + b"</r>"
    ),
    "deep nesting": lambda n: _fill(b"<a>", n // 2) + _fill(b"</a>", n // 2),
    "unsupported encoding": lambda n: (
        b'<?xml version="1.0" encoding="euc-jp"?><a>' + b"x" * n + b"</a>"
    ),
}


def _iscomposing_refresh(n: int) -> bytes:
    return (
        b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        b"<state>active</state><refresh>" + b"9" * n + b"</refresh></isComposing>"
    )


def _conference_version(n: int) -> bytes:
    return (
        b'<?xml version="1.0"?><conference-info xmlns="urn:ietf:params:xml:ns:conference-info"'
        b' entity="sip:f@h" state="full" version="' + b"9" * min(n, 8000) + b'"/>'
    )


# -- multipart, sipfrag -------------------------------------------------------------------

_MULTIPART_TYPE = "multipart/mixed;boundary=b1"


def _multipart_benign(n: int) -> bytes:
    part = b"--b1\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 200 + b"\r\n"
    return _fill(part, n) + b"--b1--\r\n"


def _multipart_parse(data: bytes) -> object:
    return multipart.parse(data, _MULTIPART_TYPE)


MULTIPART_HOSTILE: dict[str, Make] = {
    "folded header": lambda n: (
        b"--b1\r\nContent-Type: text/plain\r\n"
        + _fill(b" y\r\n", min(n, 1000))
        + b"\r\nx\r\n--b1--"
    ),
    "header count": lambda n: b"--b1\r\n" + _fill(b"a:b\r\n", n) + b"\r\nx\r\n--b1--",
    "empty parts": lambda n: _fill(b"--b1\r\n\r\n", n) + b"--b1--",
    "boundary lookalikes": lambda n: b"--b1\r\n\r\n" + _fill(b"\n--b", n) + b"\r\n--b1--",
}


def _sipfrag_benign(n: int) -> bytes:
    count = min(200, max(1, n // 300))
    width = max(8, n // count - 12)
    return b"SIP/2.0 200 OK\r\n" + b"".join(
        b"X-H%d: %s\r\n" % (i, b"v" * width) for i in range(count)
    )


SIPFRAG_HOSTILE: dict[str, Make] = {
    "folded lines": lambda n: b"SIP/2.0 200 OK\r\nSubject: x\r\n" + _fill(b" y\r\n", n),
    "digits in version": lambda n: b"SIP/" + b"9" * n + b".0 200 OK\r\n",
    "spaces in header": lambda n: b"SIP/2.0 200 OK\r\nA" + b" " * n + b"x\r\n",
}


# -- MSRP -----------------------------------------------------------------------------------

_MSRP_HEAD = (
    b"MSRP a786hjs2 SEND\r\nTo-Path: msrp://10.0.0.1:7394/2s93i93idj;tcp\r\n"
    b"From-Path: msrp://10.0.0.2:8888/9di4eae923wzd;tcp\r\nMessage-ID: 87652491\r\n"
    b"Byte-Range: 1-*/*\r\n"
)


def _msrp(extra: bytes = b"", body: bytes = b"hi", head: bytes = _MSRP_HEAD) -> bytes:
    return head + extra + b"Content-Type: text/plain\r\n\r\n" + body + b"\r\n-------a786hjs2$\r\n"


def _msrp_benign(n: int) -> bytes:
    return _msrp(body=b"x" * n)


MSRP_HOSTILE: dict[str, Make] = {
    "digits in Byte-Range": lambda n: _msrp(head=_MSRP_HEAD.replace(b"1-*/*", b"1-*/" + b"9" * n)),
    "digits in Expires": lambda n: _msrp(b"Expires: " + b"9" * n + b"\r\n"),
    "header count": lambda n: _msrp(_fill(b"X-A: b\r\n", n)),
    "end-line lookalikes": lambda n: _msrp(body=_fill(b"\r\n-------a786hjs2", n)),
    "long path": lambda n: _msrp(
        head=_MSRP_HEAD.replace(b"To-Path: ", b"To-Path: " + _fill(b"msrp://h:1/s;tcp ", n))
    ),
}


def _msrp_stream(data: bytes) -> object:
    return MSRPParser().feed(data)


CASES: dict[str, Case] = {
    "sip.message": Case(parse_message, _sip_benign, SIP_HOSTILE),
    "sip.StreamParser": Case(_stream, _sip_benign, SIP_HOSTILE),
    "cpim": Case(cpim.parse, _cpim_benign, CPIM_HOSTILE),
    "sdp": Case(sdp.parse, _sdp_benign, SDP_HOSTILE),
    "xml (resource-lists)": Case(_xml_parse, _xml_benign, XML_HOSTILE),
    "xml (isComposing)": Case(
        iscomposing.parse, _xml_benign, {"digits in refresh": _iscomposing_refresh}
    ),
    "xml (conference-info)": Case(
        conference.parse, _xml_benign, {"digits in version": _conference_version}
    ),
    "multipart": Case(_multipart_parse, _multipart_benign, MULTIPART_HOSTILE),
    "sipfrag": Case(sipfrag.parse, _sipfrag_benign, SIPFRAG_HOSTILE),
    "msrp.parse_message": Case(parse_msrp, _msrp_benign, MSRP_HOSTILE),
    "msrp.MSRPParser": Case(_msrp_stream, _msrp_benign, MSRP_HOSTILE),
}
