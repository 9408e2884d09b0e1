"""sip.message / sip.headers: parse, serialize, build, stream framing (RFC 3261 §7, §18.3, §20)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import CodecError
from sip.headers import (
    CSeq,
    canonical_name,
    header_key,
    is_list_header,
    new_branch,
    parse_contact,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from sip.message import (
    BadMessage,
    Headers,
    KeepAlive,
    Request,
    Response,
    StreamParser,
    make_request,
    make_response,
    parse_message,
    serialize,
)
from sip.uri import SipURI, TelURI

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sip"
CANONICAL = [
    "rcs_invite_multipart.sip",
    "kamailio_200_record_route.sip",
    "refer.sip",
    "notify_conference.sip",
    "compact_message.sip",
    "ipv6_message.sip",
    "register_401.sip",
]


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", CANONICAL)
def test_fixture_round_trip(name: str) -> None:
    data = load(name)
    msg = parse_message(data)
    assert serialize(msg) == data
    assert bytes(msg) == data
    assert parse_message(serialize(msg)) == msg


def test_rcs_invite() -> None:
    msg = parse_message(load("rcs_invite_multipart.sip"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE" and isinstance(msg.uri, TelURI)
    assert msg.top_via.transport == "TCP" and msg.top_via.wants_rport
    assert msg.branch == "z9hG4bK-524287-1---a1b2c3d4e5f6"
    assert msg.from_.display_name == '"Bob"' and msg.from_tag == "9fxced76sl"
    assert msg.to_tag is None
    contact = msg.contacts[0]
    assert contact.param("+sip.instance") == '"<urn:gsma:imei:35123456-789012-0>"'
    assert contact.param("expires") == "600"
    assert msg.get_all("Allow")[:3] == ["INVITE", "ACK", "CANCEL"]
    assert msg.content_type == "multipart/mixed;boundary=boundary1"
    assert msg.body.startswith(b"--boundary1\r\n") and msg.body.endswith(b"--boundary1--\r\n")
    assert msg.cseq == CSeq(1, "INVITE")


def test_kamailio_200_record_route() -> None:
    msg = parse_message(load("kamailio_200_record_route.sip"))
    assert isinstance(msg, Response)
    assert msg.status == 200 and msg.reason == "OK" and msg.is_success and msg.is_final
    assert len(msg.vias) == 2 and msg.vias[1].rport == 5071
    rr = [parse_name_addr(v) for v in msg.get_all("Record-Route")]
    assert len(rr) == 3
    assert isinstance(rr[0].uri, SipURI) and rr[0].uri.params.has("lr")
    assert rr[1].uri.transport == "tcp"  # type: ignore[union-attr]


def test_compact_forms() -> None:
    msg = parse_message(load("compact_message.sip"))
    assert msg.call_id == "compact-1@127.0.0.1"
    assert msg.get("Content-Type") == "text/plain" and msg.get("c") == "text/plain"
    assert msg.get_all("Supported") == ["path", "gruu"]
    assert msg.body == b"hello compact"
    assert "Via" in msg.headers and "v" in msg.headers and "X-Nope" not in msg.headers
    assert 3 not in msg.headers


def test_folded_headers() -> None:
    msg = parse_message(load("folded_options.sip"))
    assert msg.top_via.branch == "z9hG4bKfold1"
    assert msg.from_.display_name == '"Folded Name"'
    assert msg.get("Subject") == "first line, second line"
    assert msg.get_all("Accept") == ["application/sdp", "text/plain"]
    # serialize writes the unfolded form, which parses to the same message
    assert parse_message(serialize(msg)) == msg


def test_ipv6() -> None:
    msg = parse_message(load("ipv6_message.sip"))
    assert isinstance(msg, Request) and isinstance(msg.uri, SipURI)
    assert msg.uri.host == "2001:db8::10" and msg.uri.port == 5061
    via = msg.top_via
    assert via.host == "2001:db8::20" and via.received == "2001:db8::99" and via.rport == 40001
    assert via.sent_by == ("2001:db8::20", 5061)
    assert str(via) == msg.get("Via")


def test_refer_and_notify() -> None:
    refer = parse_message(load("refer.sip"))
    refer_to = parse_name_addr(refer.get("r") or "")
    assert refer_to.param("method") == "INVITE"
    assert isinstance(refer_to.uri, SipURI) and refer_to.uri.headers[0][0] == "Call-Info"
    assert refer.body == b"" and refer.get("Content-Length") == "0"
    notify = parse_message(load("notify_conference.sip"))
    assert notify.contacts[0].params.has("isfocus")
    assert notify.get("o") == "conference"
    assert b"conference-info" in notify.body


def test_register_401_keeps_challenges_whole() -> None:
    msg = parse_message(load("register_401.sip"))
    challenges = msg.get_all("WWW-Authenticate")
    assert len(challenges) == 2 and 'qop="auth,auth-int"' in challenges[0]


# --- datagram Content-Length rules (RFC 3261 §18.3) -------------------------------------

BASE = (
    b"MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n"
    b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n"
)


def test_datagram_body_rules() -> None:
    assert parse_message(BASE + b"\r\nrest of it").body == b"rest of it"
    assert parse_message(BASE + b"Content-Length: 4\r\n\r\nrest of it").body == b"rest"
    with pytest.raises(CodecError, match="^body shorter than Content-Length$"):
        parse_message(BASE + b"Content-Length: 40\r\n\r\nrest")
    # leading CRLFs are ignored
    assert parse_message(b"\r\n\r\n" + BASE + b"\r\n").method == "MESSAGE"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"MESSAGE sip:b@h SIP/2.0\r\nVia: x", "no end of headers"),
        (b"MESSAGE sip:b@h SIP/2.0\r\nX: \xff\r\n\r\n", "SIP header section is not UTF-8"),
        (b"MESSAGE sip:b@h SIP/2.0\nX: y\r\n\r\n", "bare CR or LF in header section"),
        (b"MESSAGE sip:b@h\r\n\r\n", "invalid start line: 'MESSAGE sip:b@h'"),
        (b"MESSAGE sip:b@h SIP/3.0\r\n\r\n", "unsupported SIP version: 'SIP/3.0'"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "invalid status code: '99'"),
        (b"SIP/2.0 700 Odd\r\n\r\n", "invalid status code: '700'"),
        (b"MESSAGE sip:b@h SIP/2.0\r\n folded\r\n\r\n", "invalid header line: ' folded'"),
        (b"MESSAGE sip:b@h SIP/2.0\r\nNoColon\r\n\r\n", "invalid header line: 'NoColon'"),
        (b"MESSAGE sip:b@h SIP/2.0\r\nBad Name: x\r\n\r\n", "invalid header name: 'Bad Name'"),
        (BASE + b"Content-Length: -1\r\n\r\n", "invalid Content-Length: '-1'"),
        (BASE + b"l: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting Content-Length headers"),
        (BASE.replace(b"Call-ID: c\r\n", b"") + b"\r\n", "missing mandatory header: Call-ID"),
        (
            BASE.replace(b"1 MESSAGE", b"1 INVITE") + b"\r\n",
            "CSeq method does not match request method",
        ),
        (BASE.replace(b"1 MESSAGE", b"x MESSAGE") + b"\r\n", "invalid CSeq: 'x MESSAGE'"),
        (
            BASE.replace(b"SIP/2.0/UDP h", b"SIP/2.0 h") + b"\r\n",
            "invalid Via: 'SIP/2.0 h;branch=z9hG4bKx'",
        ),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        parse_message(data)
    assert str(info.value) == message


def test_validate_off_accepts_partial_requests() -> None:
    msg = parse_message(b"OPTIONS sip:b@h SIP/2.0\r\n\r\n", validate=False)
    assert isinstance(msg, Request) and msg.get("Via") is None
    with pytest.raises(CodecError, match="^missing mandatory header: Via$"):
        msg.top_via  # noqa: B018


def test_response_without_reason() -> None:
    msg = parse_message(b"SIP/2.0 200\r\n\r\n", validate=False)
    assert isinstance(msg, Response) and msg.reason == ""


# --- header grammar -------------------------------------------------------------------


def test_header_names() -> None:
    assert header_key("v") == "via" and header_key("CALL-ID") == "call-id"
    assert canonical_name("i") == "Call-ID" and canonical_name("www-authenticate") == (
        "WWW-Authenticate"
    )
    assert canonical_name("x-custom-thing") == "X-Custom-Thing"
    assert canonical_name("o") == "Event" and canonical_name("r") == "Refer-To"
    assert is_list_header("m") and not is_list_header("WWW-Authenticate")


def test_split_list() -> None:
    value = '"Doe, J" <sip:j@h;x=1,2>;q=0.5, <sip:k@h>, sip:l@h'
    assert split_list(value) == ['"Doe, J" <sip:j@h;x=1,2>;q=0.5', "<sip:k@h>", "sip:l@h"]
    assert split_list("  ") == []
    with pytest.raises(CodecError, match="unterminated quoted string"):
        split_list('"a, b')
    with pytest.raises(CodecError, match="unterminated <"):
        split_list("<sip:a, b")


def test_name_addr_forms() -> None:
    na = parse_name_addr("Alice Smith <sip:alice@h>;tag=a1")
    assert na.display_name == "Alice Smith" and na.tag == "a1"
    assert str(na) == "Alice Smith <sip:alice@h>;tag=a1"
    spec = parse_name_addr("sip:alice@h;tag=9")
    assert spec.tag == "9" and isinstance(spec.uri, SipURI) and not spec.uri.params
    assert str(spec.with_tag("10")) == "<sip:alice@h>;tag=10"
    quoted = parse_name_addr('"A \\"q\\" <x>" <tel:+1>')
    assert quoted.display_name == '"A \\"q\\" <x>"'
    assert parse_contact("*") is None
    assert str(parse_name_addr("<sip:a@h>").with_param("expires", "0")) == "<sip:a@h>;expires=0"
    for bad in [
        "",
        "<sip:a@h",
        '"unterminated <sip:a@h>',
        '"x" sip:a@h',
        "<sip:a@h> junk",
        "sip:a@h?x=y",
        "a@b <sip:a@h>",
    ]:
        with pytest.raises(CodecError):
            parse_name_addr(bad)


def test_via_forms() -> None:
    via = parse_via(
        "SIP / 2.0 / UDP  host.test : 5062 ;branch=z9hG4bKa;rport;ttl=3;maddr=224.0.0.1"
    )
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "host.test", 5062, "z9hG4bKa")
    assert via.wants_rport and via.rport is None and via.ttl == 3 and via.maddr == "224.0.0.1"
    assert str(via.with_param("rport", "5000")).endswith(";rport=5000;ttl=3;maddr=224.0.0.1")
    assert parse_via("SIP/2.0/TLS h").sent_by == ("h", 5061)
    spaced = parse_via("SIP/2.0/TCP [::1] ;branch=z9hG4bKs")  # slow path, IPv6 without port
    assert (spaced.host, spaced.port, spaced.branch) == ("::1", None, "z9hG4bKs")
    assert parse_via("SIP/2.0/UDP  h ; rport").port is None
    for bad in [
        "SIP/2.0/UDP",
        "SIP/UDP h",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP h:x",
        "SIP/2.0/UDP [::1]x",
        "SIP/2.0/UDP h:70000",
        "SIP/2.0/UDP <h>",
    ]:
        with pytest.raises(CodecError):
            parse_via(bad)


def test_cseq_and_branch() -> None:
    assert parse_cseq("  42   INVITE ") == CSeq(42, "INVITE") and str(CSeq(1, "BYE")) == "1 BYE"
    with pytest.raises(CodecError):
        parse_cseq(str(2**31) + " INVITE")
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()


# --- building -------------------------------------------------------------------------


def test_make_request_and_headers_api() -> None:
    req = make_request(
        "MESSAGE",
        "sip:+15555550011@ims.test",
        [
            ("From", "<sip:a@h>;tag=1"),
            ("To", "<sip:b@h>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 MESSAGE"),
        ],
        b"hi",
        content_type="text/plain",
    )
    req = req.prepend_header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKq;rport")
    data = serialize(req)
    assert data.endswith(b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
    assert data.startswith(b"MESSAGE sip:+15555550011@ims.test SIP/2.0\r\nVia: ")
    parsed = parse_message(data)
    assert parsed.body == b"hi" and parsed.branch == "z9hG4bKq"
    assert req.replace_header("CSeq", "2 MESSAGE").cseq.seq == 2
    assert "To" not in req.without_header("t").headers
    assert req.with_header("X-A", "1").get("x-a") == "1"
    assert req.with_body(b"x", "text/x").content_type == "text/x"
    assert req.with_body(b"x").body == b"x"
    assert req.replace(method="OPTIONS").method == "OPTIONS"
    assert list(Headers.of([("A", "1")]).added("B", "2")) == [("A", "1"), ("B", "2")]
    assert len(Headers.of([("A", "1"), ("a", "2")]).replaced("A", "3")) == 1
    with pytest.raises(CodecError):
        make_request("BAD METHOD", "sip:a@h")


def test_make_response() -> None:
    req = parse_message(load("rcs_invite_multipart.sip"))
    assert isinstance(req, Request)
    trying = make_response(req.with_header("Timestamp", "54"), 100)
    assert (
        trying.get("Timestamp") == "54"
        and make_response(req.with_header("Timestamp", "54"), 180).get("Timestamp") is None
    )
    assert trying.to_tag is None and trying.reason == "Trying" and trying.body == b""
    assert "Contact" not in trying.headers and "Record-Route" not in trying.headers
    ok = make_response(
        req,
        200,
        to_tag="t1",
        headers=[("Contact", "<sip:bridge@127.0.0.1>")],
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    assert ok.to_tag == "t1" and ok.call_id == req.call_id and ok.cseq == req.cseq
    assert ok.vias == req.vias and ok.content_type == "application/sdp"
    assert parse_message(serialize(ok)) == ok.replace_header("Content-Length", "5")
    resp = make_response(req, 486)
    assert resp.to_tag and resp.reason == "Busy Here" and not resp.is_success
    assert make_response(req, 499).reason == "Unknown"
    assert make_response(req, 199).is_provisional
    rr = req.with_header("Record-Route", "<sip:p;lr>")
    assert "Record-Route" in make_response(rr, 200).headers
    assert "Record-Route" not in make_response(rr, 404).headers
    with pytest.raises(CodecError):
        make_response(req, 700)
    resp2 = make_response(req, 200, to_tag="t1")
    assert resp2.replace(status=202).status == 202
    assert resp2.with_header("A", "1").prepend_header("B", "2").get_all("b") == ["2"]
    assert resp2.replace_header("A", "3").without_header("A").with_body(b"z", "x/y").body == b"z"
    assert resp2.with_body(b"q").body == b"q"


# --- stream framing -------------------------------------------------------------------

STREAM_MESSAGES = [load(n) for n in CANONICAL]
STREAM = b"".join(STREAM_MESSAGES)


def test_stream_whole() -> None:
    parser = StreamParser()
    events = parser.feed(b"\r\n\r\n" + STREAM + b"\r\n")
    assert events[0] is KeepAlive.PING and events[-1] is KeepAlive.PONG
    assert [serialize(m) for m in events[1:-1]] == STREAM_MESSAGES  # type: ignore[arg-type]
    assert parser.buffered == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_stream_any_split_gives_same_messages(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    parser = StreamParser()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(serialize(m) for m in parser.feed(chunk) if not isinstance(m, KeepAlive))
    assert out == STREAM_MESSAGES
    assert parser.buffered == 0


def test_stream_partial_crlf_waits() -> None:
    parser = StreamParser()
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.feed(b"\n") == [KeepAlive.PING]


@pytest.mark.parametrize(
    ("data", "message", "limits"),
    [
        (b"\rX", "invalid start line: '\\r'", {}),
        (BASE + b"\r\n", "Content-Length missing on a stream", {}),
        (
            BASE + b"Content-Length: 100\r\n\r\n",
            "Content-Length exceeds limit",
            {"max_body_size": 10},
        ),
        (b"X" * 100, "SIP header section too large", {"max_header_size": 50}),
        (BASE + b"\r\n", "SIP header section too large", {"max_header_size": 50}),
        (b"bad\r\nContent-Length: 2\r\nl: 3\r\n\r\n", "invalid start line: 'bad'", {}),
        (b"bad\r\nX: 1\r\n\r\n", "invalid start line: 'bad'", {}),
    ],
)
def test_stream_errors(data: bytes, message: str, limits: dict[str, int]) -> None:
    with pytest.raises(CodecError) as info:
        StreamParser(**limits).feed(data)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "missing mandatory header: Via"),
        (b"bad\r\nl: 2\r\n\r\nok", "invalid start line: 'bad'"),
        (b"OPTIONS sip:a SIP/2.0\r\nX\r\nContent-Length: 2\r\n\r\nok", "invalid header line: 'X'"),
    ],
)
def test_stream_bad_message_keeps_the_stream(message: bytes, error: str) -> None:
    # framed by its Content-Length, a bad message is reported and the next one still parses
    good = load(CANONICAL[0])
    parser = StreamParser()
    events = parser.feed(message + good)
    assert isinstance(events[0], BadMessage)
    assert (events[0].data, str(events[0].error)) == (message, error)
    assert [serialize(m) for m in events[1:]] == [good]  # type: ignore[arg-type]


def test_stream_without_validation() -> None:
    events = StreamParser(validate=False).feed(b"SIP/2.0 200 OK\r\nl: 2\r\n\r\nok")
    assert isinstance(events[0], Response) and events[0].body == b"ok"


# --- mutations raise only CodecError --------------------------------------------------

SEEDS = [load(n) for n in [*CANONICAL, "folded_options.sip"]]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "delete", "insert", "dup"]),
            st.integers(min_value=0, max_value=2000),
            st.binary(min_size=1, max_size=4)
            | st.sampled_from(
                [b":", b"<", b">", b'"', b";", b",", b"\r\n", b" ", b"@", b"[", b"]"]
            ),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutations_raise_only_codec_error(seed: bytes, edits: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(seed)
    for op, pos, blob in edits:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= blob[0] or 1
        elif op == "delete":
            del data[pos : pos + len(blob)]
        elif op == "insert":
            data[pos:pos] = blob
        else:
            data[pos:pos] = data[pos : pos + 16]
    raw = bytes(data)
    try:
        msg = parse_message(raw)
    except CodecError:
        pass
    else:
        # every typed view either parses or raises the documented error
        for view in ("vias", "contacts", "top_via", "cseq", "from_", "to"):
            try:
                getattr(msg, view)
            except CodecError:
                pass
        assert parse_message(serialize(msg)).headers == msg.headers.replaced(
            "Content-Length", str(len(msg.body))
        ) or "content-length" not in {k for k, _, _ in msg.headers.items}
    try:
        StreamParser().feed(raw)
    except CodecError:
        pass


def test_serialize_collapses_duplicate_content_length() -> None:
    msg = parse_message(BASE + b"l: 2\r\nContent-Length: 2\r\n\r\nab")
    assert serialize(msg).count(b"2\r\n") == 1
    assert serialize(msg.with_body(b"abc")).endswith(b"l: 3\r\n\r\nabc")
    assert split_list('"a\\", b", c') == ['"a\\", b"', "c"]


def test_make_request_with_uri_object_and_no_body() -> None:
    req = make_request("OPTIONS", SipURI(host="127.0.0.1", port=5070))
    assert serialize(req) == b"OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
