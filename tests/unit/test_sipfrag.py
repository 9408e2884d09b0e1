"""message/sipfrag codec (RFC 3420): round trips, tolerant parsing, exact errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import sipfrag
from sip.errors import CodecError
from sip.sipfrag import RequestLine, SipFrag, StatusLine

# RFC 3515 §2.4.5 / sipp refer_uas.xml
NOTIFY_BODY = b"SIP/2.0 200 OK\r\n"
# RFC 3420 §2 example shapes
WITH_HEADERS = (
    b"INVITE sip:alice@atlanta.example.com SIP/2.0\r\n"
    b"From: <sip:bob@biloxi.example.com>;tag=a73kszlfl\r\n"
    b"To: <sip:alice@atlanta.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
)
WITH_BODY = b"SIP/2.0 603 Declined\r\nContent-Type: text/plain\r\n\r\nnot now\r\n"
HEADERS_ONLY = b"Subject: lunch\r\nPriority: urgent\r\n"


@pytest.mark.parametrize("raw", [NOTIFY_BODY, WITH_HEADERS, WITH_BODY, HEADERS_ONLY])
def test_round_trip(raw: bytes) -> None:
    assert sipfrag.serialize(sipfrag.parse(raw)) == raw


def test_status_line_fields() -> None:
    frag = sipfrag.parse(NOTIFY_BODY)
    assert frag.start_line == StatusLine(200, "OK")
    assert frag.status == 200
    assert frag.headers == ()


def test_request_line_and_headers() -> None:
    frag = sipfrag.parse(WITH_HEADERS)
    assert frag.start_line == RequestLine("INVITE", "sip:alice@atlanta.example.com")
    assert frag.status is None
    assert frag.header("call-id") == "3848276298220188511@atlanta.example.com"
    assert frag.header("Via") is None


def test_body_is_kept() -> None:
    frag = sipfrag.parse(WITH_BODY)
    assert frag.status == 603
    assert frag.body == b"not now\r\n"


def test_lenient_forms() -> None:
    assert sipfrag.parse(b"SIP/2.0 100 Trying").status == 100
    assert sipfrag.parse(b"SIP/2.0 180 Ringing\n").status == 180
    frag = sipfrag.parse(b"SIP/2.0 200 OK\nSubject: a\n  b\n\nxyz")
    assert frag.header("subject") == "a b"
    assert frag.body == b"xyz"
    assert sipfrag.parse(b"SIP/2.0 200 \r\n").start_line == StatusLine(200, "")
    assert sipfrag.parse(b"\r\nonly body") == SipFrag(body=b"only body")
    assert sipfrag.parse(b"") == SipFrag()


def test_status_fragment() -> None:
    assert sipfrag.serialize(sipfrag.status_fragment(100, "Trying")) == b"SIP/2.0 100 Trying\r\n"
    assert sipfrag.REFER_CONTENT_TYPE == "message/sipfrag;version=2.0"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SIP/2.0 700 Odd\r\n", "sipfrag status code out of range: 700"),
        (b"hello world\r\n", "sipfrag line is neither a start line nor a header: 'hello world'"),
        (b" folded\r\n", "sipfrag continuation line without a header"),
        (
            b"SIP/2.0 200 OK\r\nBad Header: x\r\n",
            "sipfrag line is neither a start line nor a header: 'Bad Header: x'",
        ),
        (
            b"SIP/2.0 200 \xff\r\n",
            "sipfrag start line or headers are not UTF-8: invalid start byte",
        ),
    ],
)
def test_errors(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError) as info:
        sipfrag.parse(raw)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_serialize_rejects_bad_header() -> None:
    with pytest.raises(CodecError, match="cannot be serialized"):
        sipfrag.serialize(SipFrag(headers=(("X", "a\r\nb"),)))
    with pytest.raises(CodecError, match="method is not a token"):
        RequestLine("IN VITE", "sip:a@b")
    with pytest.raises(CodecError, match="request URI is invalid"):
        RequestLine("INVITE", "")
    with pytest.raises(CodecError, match="line break"):
        StatusLine(200, "O\nK")


_token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
)


@given(
    status=st.integers(100, 699),
    reason=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abc", max_size=20).map(str.strip),
    headers=st.lists(st.tuples(_token, _value), max_size=4),
    body=st.binary(max_size=40),
)
def test_any_fragment_round_trips(
    status: int, reason: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    frag = SipFrag(StatusLine(status, reason), tuple(headers), body)
    assert sipfrag.parse(sipfrag.serialize(frag)) == frag
