"""sip.uri: SIP/SIPS/tel URIs (RFC 3261 §19.1, RFC 3966)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.errors import CodecError
from sip.uri import AbsoluteURI, Params, SipURI, TelURI, parse_params, parse_uri, uri_equal

CANONICAL = [
    "sip:alice@atlanta.com",
    "sip:alice:secretword@atlanta.com;transport=tcp",
    "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",
    "sips:1212@gateway.com",
    "sip:alice@192.0.2.4",
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
    "sip:alice;day=tuesday@atlanta.com",
    "sip:[2001:db8::10]:5061;transport=tls",
    "sip:127.0.0.1:5060;lr;ftag=as4d1c3b2a;did=9b2.1f41",
    "sip:+15555550011;phone-context=ims.test@ims.test;user=phone",
    "tel:+15555550011",
    "tel:7042;phone-context=example.com",
    "tel:+1-201-555-0123;ext=1234",
    "urn:service:sos",
    "http://example.test/icon.png",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_sip_fields() -> None:
    uri = parse_uri("sips:alice:pw@[2001:db8::1]:5061;transport=TLS;lr?h=v")
    assert isinstance(uri, SipURI)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "pw",
        "2001:db8::1",
        5061,
    )
    assert uri.transport == "tls"
    assert uri.params.has("lr") and uri.param("lr") is None
    assert uri.headers == (("h", "v"),)
    assert uri.host_port == "[2001:db8::1]:5061"


def test_defaults_and_helpers() -> None:
    uri = parse_uri("sip:bob@example.com")
    assert isinstance(uri, SipURI)
    assert uri.transport == "udp" and uri.port is None
    assert str(uri.with_params(transport="tcp", lr=None)) == "sip:bob@example.com;transport=tcp;lr"
    assert str(uri.with_params(lr=None).without_params("LR")) == "sip:bob@example.com"
    assert str(uri.replace(port=5080)) == "sip:bob@example.com:5080"
    assert parse_uri("sips:x@y").transport == "tls"  # type: ignore[union-attr]


def test_tel() -> None:
    uri = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert isinstance(uri, TelURI)
    assert uri.is_global and uri.param("ext") == "1234"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelURI) and not local.is_global


def test_absolute() -> None:
    assert parse_uri("urn:service:sos") == AbsoluteURI("urn", "service:sos")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice@atlanta.com", "invalid URI: 'alice@atlanta.com'"),
        ("sip:", "invalid SIP URI host: 'sip:'"),
        ("sip:@host", "invalid SIP URI user part: 'sip:@host'"),
        ("sip:a@host:99999", "invalid SIP URI port: 'sip:a@host:99999'"),
        ("sip:a@host:x", "invalid SIP URI port: 'sip:a@host:x'"),
        ("sip:a@[::1", "invalid SIP URI host: 'sip:a@[::1'"),
        ("sip:a@[::1]x", "invalid SIP URI host: 'sip:a@[::1]x'"),
        ("sip:a@[zz]", "invalid SIP URI host: 'sip:a@[zz]'"),
        ("sip:a@ho st", "invalid SIP URI host: 'sip:a@ho st'"),
        ("sip:a@host;=x", "invalid parameter name: '=x'"),
        ("sip:a@host;p=", "invalid parameter value: 'p='"),
        ("sip:a@host?novalue", "invalid SIP URI header: 'sip:a@host?novalue'"),
        ("tel:abc+", "invalid tel URI: 'tel:abc+'"),
        ("urn:a b", "invalid URI: 'urn:a b'"),
        ("1sip:a", "invalid URI: '1sip:a'"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(CodecError) as info:
        parse_uri(text)
    assert str(info.value) == message


def test_params() -> None:
    params = parse_params(';a=1;B;c="x;y"', quoted=True)
    assert params.get("b") is None and params.has("b")
    assert params.get("C") == '"x;y"'
    assert str(params) == ';a=1;B;c="x;y"'
    assert str(Params().with_param("x", "1").with_param("X", "2")) == ";x=2"
    assert not Params()
    with pytest.raises(CodecError, match="unterminated quoted string"):
        parse_params(';a="x', quoted=True)
    with pytest.raises(CodecError, match="invalid parameter value"):
        parse_params(';a="x"')


def test_equality() -> None:
    a = parse_uri("sip:alice@AtLanTa.CoM;Transport=udp")
    b = parse_uri("sip:alice@atlanta.com;transport=UDP")
    assert uri_equal(a, b)
    assert not uri_equal(parse_uri("sip:bob@h"), parse_uri("sip:bob@h;transport=tcp"))
    assert not uri_equal(parse_uri("sip:bob@h"), parse_uri("sip:BOB@h"))
    assert uri_equal(parse_uri("tel:+1-201-555-0123"), parse_uri("tel:+12015550123"))
    assert not uri_equal(parse_uri("tel:+1"), parse_uri("sip:+1@h"))
    assert uri_equal(parse_uri("urn:x:y"), parse_uri("urn:x:y"))


@given(st.text(max_size=60))
def test_any_text_raises_only_codec_error(text: str) -> None:
    try:
        str(parse_uri(text))
    except CodecError:
        pass


def test_params_edge_cases() -> None:
    assert parse_params("") == Params()
    assert parse_params("a=1").get("a") == "1"  # leading ';' optional
    dup = Params((("a", "1"), ("A", "2"))).with_param("a", "3")
    assert dup.items == (("a", "3"),)
    escaped = parse_params(';x="a\\";b";y', quoted=True)
    assert escaped.get("x") == '"a\\";b"' and escaped.has("y")
