"""MSRP URI and frame codec: fixtures round-trip, typed headers, exact errors (RFC 4975 §9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.errors import CodecError
from sip.msrp.message import (
    ByteRange,
    MSRPMessage,
    StatusHeader,
    TransactionId,
    parse_byte_range,
    parse_message,
    parse_status_header,
    serialize_message,
)
from sip.msrp.uri import MSRPURI, SessionId, parse_path, parse_uri, serialize_path, serialize_uri

FIXTURES = Path(__file__).parent.parent / "fixtures" / "msrp"
SAMPLES = sorted(FIXTURES.glob("*.msrp"))


def test_fixtures_present():
    assert len(SAMPLES) >= 14
    assert any(p.name.startswith("captured_") for p in SAMPLES)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_fixture_round_trip(path: Path):
    data = path.read_bytes()
    msg = parse_message(data)
    assert serialize_message(msg) == data
    assert parse_message(serialize_message(msg)) == msg
    if msg.body is not None and msg.byte_range is not None and msg.byte_range.end is not None:
        assert msg.byte_range.end - msg.byte_range.start + 1 == len(msg.body)


def test_send_fields():
    msg = parse_message((FIXTURES / "send_chunk_more.msrp").read_bytes())
    assert msg.method == "SEND" and msg.is_request
    assert msg.transaction_id == "we92100"
    assert [u.session_id for u in msg.to_path] == ["r5f3a", "b7xk2"]
    assert msg.from_path == (MSRPURI("127.0.0.1", 5100, SessionId("a93kd")),)
    assert msg.message_id == "m-88f1a0"
    assert msg.byte_range == ByteRange(1, 20, 45)
    assert msg.success_report is True
    assert msg.failure_report == "yes"
    assert msg.content_type == "message/cpim"
    assert msg.continuation == "+"


def test_body_keeps_fake_end_lines_and_utf8():
    msg = parse_message((FIXTURES / "send_cpim_unknown_headers.msrp").read_bytes())
    assert msg.body is not None
    assert b"-------0fz9q2abX" in msg.body
    assert "\u2603".encode() in msg.body
    assert msg.header("x-vendor-thing") == "some value"
    assert msg.failure_report == "partial"
    assert len(msg.from_path) == 2


def test_report_and_auth_fields():
    rep = parse_message((FIXTURES / "report_failure.msrp").read_bytes())
    assert rep.status_header == StatusHeader(413, "Message Too Large")
    assert rep.success_report is False
    auth = parse_message((FIXTURES / "auth_200.msrp").read_bytes())
    assert auth.status == 200 and auth.reason == "OK" and not auth.is_request
    assert auth.use_path[0].session_id == "r5fe1c2a0-1234-1"
    assert auth.expires == 600
    bare = parse_message((FIXTURES / "response_no_reason.msrp").read_bytes())
    assert bare.status == 481 and bare.reason is None


def test_empty_body_versus_no_body():
    empty = parse_message((FIXTURES / "send_empty_body.msrp").read_bytes())
    assert empty.body == b"" and empty.content_type == "text/plain"
    bind = parse_message((FIXTURES / "send_bind_empty.msrp").read_bytes())
    assert bind.body is None and bind.content_type is None


def test_serialize_puts_paths_first():
    msg = MSRPMessage(
        TransactionId("abcd1234"),
        "SEND",
        to_path=(MSRPURI("h", 1, SessionId("s")),),
        from_path=(MSRPURI("g", 2, SessionId("t")),),
        headers=(("Message-ID", "m1234"),),
        content_type="text/plain",
        body=b"x",
    )
    assert serialize_message(msg) == (
        b"MSRP abcd1234 SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
        b"Message-ID: m1234\r\nContent-Type: text/plain\r\n\r\nx\r\n-------abcd1234$\r\n"
    )


def test_headers_in_any_order_are_accepted():
    data = (
        b"MSRP abcd1234 SEND\r\nMessage-ID: m1234\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
        b"To-Path: msrp://h:1/s;tcp\r\n-------abcd1234$\r\n"
    )
    msg = parse_message(data)
    assert msg.to_path[0].host == "h" and msg.message_id == "m1234"


BASE = (
    b"MSRP abcd1234 SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
    b"Message-ID: m1234\r\nByte-Range: 1-2/2\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    b"-------abcd1234$\r\n"
)

BROKEN = [
    (b"MSRP abcd1234 SEND", "invalid MSRP frame: no CRLF after the start line"),
    (
        BASE.replace(b"MSRP abcd1234 SEND", b"MSRQ abcd1234 SEND"),
        "invalid MSRP start line: 'MSRQ abcd1234 SEND'",
    ),
    (BASE.replace(b"abcd1234", b"ab"), "invalid MSRP transaction id: 'ab'"),
    (BASE.replace(b" SEND\r\n", b" send\r\n"), "invalid MSRP start line: 'MSRP abcd1234 send'"),
    (BASE.replace(b"$\r\n", b"!\r\n"), "invalid MSRP frame: missing end-line"),
    (BASE[:-2], "invalid MSRP frame: missing end-line"),
    (BASE.replace(b"-------abcd1234", b"-------abcd9999"), "invalid MSRP frame: missing end-line"),
    (BASE.replace(b"To-Path: msrp://h:1/s;tcp\r\n", b""), "missing To-Path header"),
    (b"MSRP abcd1234 SEND\r\nX-------abcd1234$\r\n", "invalid MSRP frame: missing end-line"),
    (BASE.replace(b"From-Path: msrp://g:2/t;tcp\r\n", b""), "missing From-Path header"),
    (BASE.replace(b"msrp://h:1/s;tcp", b"http://h/"), "invalid MSRP URI: 'http://h/'"),
    (
        BASE.replace(b"msrp://h:1/s;tcp", b"msrp://h:99999/s;tcp"),
        "invalid MSRP URI port: 'msrp://h:99999/s;tcp'",
    ),
    (BASE.replace(b"msrp://h:1/s;tcp", b""), "empty MSRP path"),
    (BASE.replace(b"1-2/2", b"0-2/2"), "invalid Byte-Range: '0-2/2'"),
    (BASE.replace(b"1-2/2", b"4-2/2"), "invalid Byte-Range: '4-2/2'"),
    (BASE.replace(b"1-2/2", b"1-5/2"), "invalid Byte-Range: '1-5/2'"),
    (BASE.replace(b"1-2/2", b"x"), "invalid Byte-Range: 'x'"),
    (BASE.replace(b"Message-ID: m1234", b"Message-ID: m!"), "invalid Message-ID: 'm!'"),
    (
        BASE.replace(b"Message-ID: m1234", b"Failure-Report: maybe"),
        "invalid Failure-Report: 'maybe'",
    ),
    (BASE.replace(b"Message-ID: m1234", b"Success-Report: 1"), "invalid Success-Report: '1'"),
    (BASE.replace(b"Message-ID: m1234", b"Status: 200"), "invalid Status: '200'"),
    (BASE.replace(b"Message-ID: m1234", b"Expires: soon"), "invalid Expires: 'soon'"),
    (BASE.replace(b"Message-ID: m1234", b"Use-Path: x"), "invalid MSRP URI: 'x'"),
    (
        BASE.replace(b"Message-ID: m1234", b"No colon here"),
        "invalid MSRP header line: 'No colon here'",
    ),
    (BASE.replace(b"Message-ID: m1234", b"To-Path: msrp://h:1/s;tcp"), "duplicate To-Path header"),
    (BASE.replace(b"Content-Type: text/plain\r\n", b""), "body without Content-Type"),
    (BASE.replace(b"Message-ID: m1234", b"Message-ID: \xff"), "invalid MSRP header: not UTF-8"),
    (
        BASE.replace(b"MSRP abcd1234 SEND", b"MSRP abcd1234 \xc3\xa9"),
        "invalid MSRP start line: not ASCII",
    ),
]


@pytest.mark.parametrize(("data", "message"), BROKEN)
def test_broken_frames(data: bytes, message: str):
    with pytest.raises(CodecError) as info:
        parse_message(data)
    assert str(info.value) == message


def test_uri_parse_and_compare():
    uri = parse_uri("MSRP://alice@[2001:db8::1]:7777/iau39+soe=28/43z;TCP;foo=bar")
    assert uri.scheme == "msrp" and uri.user == "alice" and uri.host == "[2001:db8::1]"
    assert uri.session_id == "iau39+soe=28/43z" and uri.params == ("foo=bar",)
    assert uri.authority == ("2001:db8::1", 7777)
    assert serialize_uri(uri) == "msrp://alice@[2001:db8::1]:7777/iau39+soe=28/43z;TCP;foo=bar"
    same = parse_uri("msrp://[2001:DB8::1]:7777/iau39+soe=28/43z;tcp")
    assert uri.same_hop(same)
    assert not uri.same_hop(parse_uri("msrp://[2001:db8::1]:7777/IAU39+soe=28/43z;tcp"))
    relay = parse_uri("msrps://relay.example.net;tcp")
    assert relay.port is None and relay.effective_port == 2855 and relay.session_id is None
    assert str(relay) == "msrps://relay.example.net;tcp"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("msrp://h:1/s", "invalid MSRP URI: 'msrp://h:1/s'"),
        ("msrp://h:0/s;tcp", "invalid MSRP URI port: 'msrp://h:0/s;tcp'"),
        ("msrp://h:1/s;t_p", "invalid MSRP URI transport: 'msrp://h:1/s;t_p'"),
        ("msrp://h:1/s#x;tcp", "invalid MSRP session-id: 'msrp://h:1/s#x;tcp'"),
        ("sip:alice@h", "invalid MSRP URI: 'sip:alice@h'"),
    ],
)
def test_bad_uris(text: str, message: str):
    with pytest.raises(CodecError) as info:
        parse_uri(text)
    assert str(info.value) == message


def test_paths():
    path = parse_path(" msrp://a:1/x;tcp   msrp://b:2/y;tcp ")
    assert [u.host for u in path] == ["a", "b"]
    assert serialize_path(path) == "msrp://a:1/x;tcp msrp://b:2/y;tcp"


def test_byte_range_and_status_values():
    assert parse_byte_range("1-*/*") == ByteRange(1, None, None)
    assert str(ByteRange(1, None, None)) == "1-*/*"
    assert parse_byte_range("1-0/0") == ByteRange(1, 0, 0)
    assert str(parse_byte_range("5-9/100")) == "5-9/100"
    assert parse_status_header("000 200") == StatusHeader(200, "")
    assert str(StatusHeader(481, "Gone")) == "000 481 Gone"
    assert str(StatusHeader(200)) == "000 200"


def test_stray_empty_line_before_end_line_means_no_body():
    data = (
        b"MSRP abcd1234 SEND\r\nTo-Path: msrp://h:1/s;tcp\r\nFrom-Path: msrp://g:2/t;tcp\r\n"
        b"\r\n-------abcd1234$\r\n"
    )
    msg = parse_message(data)
    assert msg.body is None and msg.headers == ()
