"""sip.auth: Digest (RFC 7616 test vectors, RFC 2617, SIP challenges)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.auth import (
    Challenge,
    DigestClient,
    challenge_header,
    digest_ha1,
    digest_response,
    make_challenge,
    parse_challenge,
    parse_credentials,
    select_challenge,
    verify,
)
from sip.errors import CodecError
from sip.message import parse_message

# RFC 7616 §3.9.1
RFC7616 = dict(
    username="Mufasa",
    password="Circle of Life",
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    uri="/dir/index.html",
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    v = RFC7616
    challenge = parse_challenge(
        f'Digest realm="{v["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{v["nonce"]}", opaque="{v["opaque"]}"'
    )
    creds = DigestClient().authorize(
        challenge, "GET", v["uri"], v["username"], v["password"], cnonce=v["cnonce"]
    )
    assert creds.response == expected and creds.nc == "00000001" and creds.qop == "auth"
    assert creds.opaque == v["opaque"]
    parsed = parse_credentials(str(creds))
    assert parsed == creds
    assert verify(parsed, "GET", v["password"])
    assert not verify(parsed, "POST", v["password"])
    assert not verify(parsed, "GET", "wrong")


def test_rfc2617_vector() -> None:
    ha1 = digest_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        algorithm="MD5",
        ha1=ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_sip_401_fixture_and_selection() -> None:
    msg = parse_message(
        (Path(__file__).parent.parent / "fixtures/sip/register_401.sip").read_bytes()
    )
    name, creds_name = challenge_header(msg.status)  # type: ignore[union-attr]
    assert (name, creds_name) == ("WWW-Authenticate", "Authorization")
    challenge = select_challenge(msg.get_all(name))
    assert challenge.algorithm == "SHA-256" and challenge.qop == ("auth",)
    first = parse_challenge(msg.get_all(name)[0])
    assert first.qop == ("auth", "auth-int") and first.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert challenge_header(407) == ("Proxy-Authenticate", "Proxy-Authorization")
    with pytest.raises(ValueError):
        challenge_header(403)


def test_nc_counts_per_nonce() -> None:
    client = DigestClient()
    ch = make_challenge("ims.test", nonce="n1")
    assert [client.authorize(ch, "MESSAGE", "sip:x", "u", "p").nc for _ in range(3)] == [
        "00000001",
        "00000002",
        "00000003",
    ]
    assert (
        client.authorize(make_challenge("ims.test", nonce="n2"), "MESSAGE", "sip:x", "u", "p").nc
        == "00000001"
    )


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
@pytest.mark.parametrize("qop", [(), ("auth",), ("auth-int",)])
def test_server_round_trip(algorithm: str, qop: tuple[str, ...]) -> None:
    challenge = make_challenge("ims.test", algorithm=algorithm, qop=qop, opaque="op", stale=True)  # type: ignore[arg-type]
    parsed = parse_challenge(str(challenge))
    assert parsed == challenge and parsed.stale
    creds = DigestClient().authorize(parsed, "INVITE", "sip:b@ims.test", "alice", "s3cret", b"body")
    wire = parse_credentials(str(creds))
    assert verify(wire, "INVITE", "s3cret", b"body")
    ha1 = digest_ha1(algorithm, "alice", "ims.test", "s3cret")
    assert verify(wire, "INVITE", ha1=ha1, body=b"body")
    if qop == ("auth-int",):
        assert not verify(wire, "INVITE", "s3cret", b"other body")


def test_errors() -> None:
    for bad, message in [
        ("Basic realm=x", "unsupported authentication scheme: 'Basic'"),
        ('Digest realm="x"', "digest challenge without realm or nonce"),
        ('Digest realm="x", nonce="y", algorithm=SHA-512', "unsupported digest algorithm: SHA-512"),
        ('Digest nonce="y", realm="x', 'unterminated quoted string: \'nonce="y", realm="x\''),
        ("Digest realm", "invalid auth-param: 'realm'"),
        ('Digest realm="a" junk, nonce="b"', 'invalid auth-param: \'realm="a" junk, nonce="b"\''),
        ('Digest realm="a", realm="b"', "duplicate auth-param: realm"),
    ]:
        with pytest.raises(CodecError) as info:
            parse_challenge(bad)
        assert str(info.value) == message
    with pytest.raises(CodecError, match="^digest credentials without uri$"):
        parse_credentials('Digest username="a", realm="r", nonce="n", response="x"')
    with pytest.raises(CodecError, match="without cnonce or nc"):
        parse_credentials(
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth'
        )
    with pytest.raises(CodecError, match="no supported digest challenge"):
        select_challenge(["Basic realm=x"])
    with pytest.raises(CodecError, match="unsupported qop: auth-conf"):
        DigestClient().authorize(Challenge("r", "n", qop=("auth-conf",)), "M", "u", "a", "p")
    creds = parse_credentials(
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", '
        'qop=weird, nc=1, cnonce="c"'
    )
    assert not verify(creds, "M", "p")
    with pytest.raises(ValueError):
        verify(creds, "M")


def test_quoting_round_trip() -> None:
    ch = Challenge(realm='we "quote"\\', nonce="n", domain="sip:ims.test")
    assert parse_challenge(str(ch)) == ch


@given(st.text(max_size=80))
def test_fuzz_only_codec_error(text: str) -> None:
    for fn in (parse_challenge, parse_credentials):
        try:
            fn("Digest " + text)
        except CodecError:
            pass


def test_param_edge_cases() -> None:
    for bad, message in [
        ("Digest =x", "invalid auth-param: '=x'"),
        ("Digest realm=a b", "invalid auth-param: 'realm=a b'"),
    ]:
        with pytest.raises(CodecError) as info:
            parse_challenge(bad)
        assert str(info.value) == message
    ch = parse_challenge('Digest realm="r", nonce= "n",  , algorithm=MD5,')
    assert (ch.realm, ch.nonce) == ("r", "n")
    creds = DigestClient().authorize(Challenge("r", "n"), "MESSAGE", "sip:x", "u", "p")
    assert creds.opaque is None and creds.cnonce is None and creds.qop is None
    assert "opaque" not in str(creds) and verify(parse_credentials(str(creds)), "MESSAGE", "p")


def test_nonce_memory_is_bounded() -> None:
    client = DigestClient()
    for n in range(70):
        client.authorize(make_challenge("r", nonce=f"n{n}"), "M", "u", "a", "p")
    assert len(client._counts) == 64
    assert "n0" not in client._counts and "n69" in client._counts
